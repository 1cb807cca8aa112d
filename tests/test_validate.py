"""tritonops validate against a real tritonserver over real HTTP and gRPC.

The session's server serves a repository built with tritonops.build for this module: a batched MLP with the
response cache, a STRING identity model, a non-batched MLP, an ensemble over the MLP, "broken"
(not an ONNX file: UNAVAILABLE), and "swapped", whose model.onnx is replaced on disk after the
server loaded it (the server keeps the loaded session), so the repository no longer holds what is
served. Errors are asserted by their exact first line."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

import onnx_models
import stateful_models
from tritonops.build import BuildOptions, build
from tritonops.dtypes import BY_NAME
from tritonops.errors import ServerError, UsageError, ValidationFailed
from tritonops.pbtxt import config_to_text, dict_to_config, read_config, tensor_specs
from tritonops.reference import ModelUnderTest, OnnxSequenceReference, control_tensors, initial_states
from tritonops.spec import TensorSpec
from tritonops.units import parse_size
from tritonops.validate import (
    CheckResult,
    ValidateOptions,
    ValidationReport,
    check_inputs,
    load_inputs,
    validate,
)


def assert_clean_error(code: int, err: str, message: str | re.Pattern[str], exit_code: int) -> None:
    assert code == exit_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    first = lines[0]
    if isinstance(message, re.Pattern):
        assert message.fullmatch(first), first
    else:
        assert first == f"error: {message}", first
    assert lines[1].startswith("hint: "), err


# ---------------------------------------------------------------- the server


@dataclass
class Served:
    repo: Path
    src: Path
    http_url: str
    grpc_url: str
    metrics_url: str
    http_port: int
    grpc_port: int
    metrics_port: int

    def options(self, **kw) -> ValidateOptions:
        base = ValidateOptions(http_url=self.http_url, grpc_url=self.grpc_url, metrics_url=self.metrics_url,
                               repository=self.repo)
        return replace(base, **kw)

    def ports(self) -> list[str]:
        return ["--url", "127.0.0.1", "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                "--metrics-port", str(self.metrics_port)]


def _build_repo(root: Path) -> tuple[Path, Path]:
    src = root / "src"
    repo = root / "repo"
    mlp = onnx_models.mlp(src / "mlp.onnx")
    build(BuildOptions(source=str(mlp), repository=repo, name="mlp", max_batch_size=8, response_cache=True))
    text = onnx_models.identity(src / "text.onnx", TensorProto.STRING, ["batch", 2])
    build(BuildOptions(source=str(text), repository=repo, name="text", max_batch_size=8))
    fixed = onnx_models.mlp(src / "fixed.onnx", batch=None, seed=3)
    build(BuildOptions(source=str(fixed), repository=repo, name="fixed"))
    build(BuildOptions(source=str(mlp), repository=repo, name="swapped", max_batch_size=8))
    onnx_models.mlp(src / "other.onnx", seed=1)  # same shapes, other weights
    # An ensemble over mlp (IN -> x, y -> OUT), written through the protobuf renderer.
    (repo / "pipe" / "1").mkdir(parents=True)
    (repo / "pipe" / "config.pbtxt").write_text(config_to_text(dict_to_config({
        "name": "pipe", "platform": "ensemble", "max_batch_size": 8,
        "input": [{"name": "IN", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "OUT", "data_type": "TYPE_FP32", "dims": [3]}],
        "ensemble_scheduling": {"step": [{"model_name": "mlp", "model_version": -1, "input_map": {"x": "IN"},
                                          "output_map": {"y": "OUT"}}]},
    }, "pipe")))
    # A model whose file is not ONNX: the server reports it UNAVAILABLE with onnxruntime's reason.
    build(BuildOptions(source=str(mlp), repository=repo, name="broken", max_batch_size=8))
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx model")
    return repo, src


@pytest.fixture(scope="module")
def served(tmp_path_factory, triton_session):
    repo, src = _build_repo(tmp_path_factory.mktemp("validate"))
    # "broken" fails to load, as with `validate --serve` (the session server is not strict about
    # readiness and has the response cache): its reason can be checked.
    with triton_session.models(repo, expect_failures=True) as loaded:
        assert set(loaded.failures) == {"broken"}, loaded.failures
        server = triton_session.server
        served_repo = triton_session.repository
        # The server has loaded "swapped"; now the repository's file changes under it.
        shutil.copy(src / "other.onnx", served_repo / "swapped" / "1" / "model.onnx")
        yield Served(served_repo, src, server.http_url, server.grpc_url, server.metrics_url,
                     int(server.http_url.rsplit(":", 1)[1]), int(server.grpc_url.rsplit(":", 1)[1]),
                     int(server.metrics_url.rsplit(":", 1)[1]))


def _rows(report: ValidationReport, model: str, check: str) -> dict[str, CheckResult]:
    return {r.protocol: r for r in report.rows if r.model == model and r.check == check}


# ---------------------------------------------------------------- passing validations


@pytest.mark.server
def test_batched_string_and_nonbatched_models_pass_over_all_paths(served):
    report = validate(served.options(models=("mlp", "text", "fixed")))
    assert report.ok, [r.line() for r in report.failures]
    assert report.schema == "tritonops.validate/1"
    for model, labels in (("mlp", ("b=1", "b=4")), ("text", ("b=1", "b=4")), ("fixed", ("b=-",))):
        assert set(_rows(report, model, "ready")) == {"http", "grpc"}
        assert {p: r.status for p, r in _rows(report, model, "metadata").items()} == {"http": "pass", "grpc": "pass"}
        assert _rows(report, model, "config.pbtxt")["-"].status == "pass"
        for label in labels:
            infer = _rows(report, model, f"infer {label}")
            assert {p: r.status for p, r in infer.items()} == dict.fromkeys(("http-json", "http-binary", "grpc"),
                                                                            "pass")
            assert all(r.latency_ms is not None and r.latency_ms > 0 for r in infer.values())
            agree = _rows(report, model, f"agree {label}")
            assert set(agree) == {"http-json", "grpc"}  # each compared with http-binary
            # Measured: FP32 through JSON text round-trips exactly, so the three paths are identical.
            assert all(r.status == "pass" and r.max_error == 0.0 for r in agree.values())
            ref = _rows(report, model, f"reference {label}")
            assert {p: r.status for p, r in ref.items()} == dict.fromkeys(("http-json", "http-binary", "grpc"), "pass")
            assert all(r.max_error is not None and r.max_error <= 1e-4 for r in ref.values())
        first = _rows(report, model, "first request")["grpc"]
        assert first.status == "pass" and first.latency_ms is not None
    assert "OUTPUT BYTES[4, 2]" in _rows(report, "text", "infer b=4")["http-json"].detail
    assert "y FP32[1, 3]" in _rows(report, "fixed", "infer b=-")["grpc"].detail
    assert {r.status for r in report.rows_for("")} == {"pass"}  # live, and ready (not strict) over both


@pytest.mark.server
def test_response_cache_hit_is_observed(served):
    report = validate(served.options(models=("mlp",), protocols=("http-binary", "grpc")))
    cache = _rows(report, "mlp", "response cache")["-"]
    assert cache.status == "pass", cache.detail
    assert re.fullmatch(r"\d+ hits, \d+ misses for repeated identical requests; "
                        r"metrics: nv_cache_num_hits_per_model \d+", cache.detail)
    assert int(cache.detail.split()[0]) > 0


@pytest.mark.server
def test_user_inputs_npz_and_json(served, tmp_path):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.savez(tmp_path / "in.npz", x=x)
    report = validate(served.options(models=("mlp",), inputs=tmp_path / "in.npz"))
    assert report.ok, [r.line() for r in report.failures]
    assert set(_rows(report, "mlp", "infer b=2")) == {"http-json", "http-binary", "grpc"}
    assert set(_rows(report, "mlp", "infer b=4")) == {"http-json", "http-binary", "grpc"}  # tiled to the larger batch
    (tmp_path / "in.json").write_text(json.dumps({"INPUT": [["héllo", ""], ["a b", "✓"]]}))
    report = validate(served.options(models=("text",), inputs=tmp_path / "in.json"))
    assert report.ok, [r.line() for r in report.failures]


class _PipeReference:
    """The ensemble's reference: the MLP's own file through onnxruntime, with the ensemble's names."""

    def __init__(self, served: Served, scale: float = 1.0) -> None:
        from tritonops.reference import ModelUnderTest, OnnxRuntimeReference

        cfg = read_config(served.repo / "mlp" / "config.pbtxt")
        self.mlp = OnnxRuntimeReference(ModelUnderTest("mlp", "1", cfg, None, served.src / "mlp.onnx"))
        self.scale = scale
        self.description = f"mlp step in onnxruntime, times {scale:g}"

    def __call__(self, inputs):
        return {"OUT": self.mlp({"x": inputs["IN"]})["y"] * self.scale}


@pytest.mark.server
def test_ensemble_end_to_end_and_plugged_reference(served):
    report = validate(served.options(models=("pipe",)))
    assert report.ok, [r.line() for r in report.failures]
    for label in ("b=1", "b=4"):
        assert {r.status for r in _rows(report, "pipe", f"infer {label}").values()} == {"pass"}
        assert {r.status for r in _rows(report, "pipe", f"agree {label}").values()} == {"pass"}
        # the built-in ensemble reference runs every step's own reference in-process
        refs = _rows(report, "pipe", f"reference {label}")
        assert {r.status for r in refs.values()} == {"pass"}
        assert all("the ensemble's steps in-process" in r.detail for r in refs.values())
    # A runner plugged in per model is used: the right one passes, a wrong one fails.
    report = validate(served.options(models=("pipe",)), references={"pipe": _PipeReference(served)})
    assert report.ok and {r.status for r in _rows(report, "pipe", "reference b=4").values()} == {"pass"}
    report = validate(served.options(models=("pipe",), protocols=("grpc",)),
                      references={"pipe": _PipeReference(served, scale=2.0)})
    ref = _rows(report, "pipe", "reference b=1")["grpc"]
    assert ref.status == "fail" and "(mlp step in onnxruntime, times 2)" in ref.detail


# ---------------------------------------------------------------- failures found in the deployment


@pytest.mark.server
def test_swapped_file_fails_reference(served):
    """The server still runs the model it loaded; the repository now holds another one."""
    report = validate(served.options(models=("swapped",)))
    assert not report.ok
    ref = _rows(report, "swapped", "reference b=1")
    assert {r.status for r in ref.values()} == {"fail"}
    assert all(r.max_error is not None and r.max_error > 1e-3 for r in ref.values())
    assert _rows(report, "swapped", "agree b=1")["grpc"].status == "pass"  # the paths agree with each other
    err = report.error()
    assert isinstance(err, ValidationFailed) and err.exit_code == 7
    model_file = served.repo / "swapped" / "1" / "model.onnx"
    assert re.fullmatch(
        r"model 'swapped': reference b=1 over http-json: outputs differ from the local run \(onnxruntime [\d.]+ on "
        + re.escape(str(model_file)) + r"\): output 'y': 3 of 3 values outside tolerance \(max error [\d.e+-]+\)"
        r" \(and \d+ more failed checks\)", err.message), err.message
    assert err.hint.startswith("the server is not serving what the repository holds")


@pytest.mark.server
def test_cli_reference_differs_exits_7_after_the_table(served, cli):
    other = served.src / "other.onnx"
    code, out, err = cli("validate", served.repo, *served.ports(), "--model", "mlp", "--reference", other)
    assert "reference b=1" in out and "validation failed:" in out  # the table is printed first
    assert_clean_error(code, err, re.compile(
        r"error: model 'mlp': reference b=1 over http-json: outputs differ from the local run \(onnxruntime "
        r"[\d.]+ on " + re.escape(str(other)) + r"\): output 'y': 3 of 3 values outside tolerance "
        r"\(max error [\d.e+-]+\) \(and \d+ more failed checks\)"), 7)


@pytest.mark.server
def test_cli_passes_with_json(served, cli):
    code, out, err = cli("validate", served.repo, *served.ports(), "--model", "text", "--json")
    assert code == 0, err
    payload = json.loads(out)
    data = payload["data"]
    assert payload["schema"] == "tritonops.validate/1" and data["ok"] is True and data["models"] == ["text"]
    assert data["counts"]["fail"] == 0 and data["counts"]["pass"] > 20
    assert {r["protocol"] for r in data["rows"] if r["check"] == "infer b=1"} == {"http-json", "http-binary", "grpc"}


@pytest.mark.server
def test_grpc_message_limit(served, cli):
    code, _, err = cli("validate", *served.ports(), "--model", "mlp", "--protocol", "grpc",
                       "--grpc-max-message-size", "64")
    # Batch 1 fits in 64 bytes, batch 4 does not: exactly the case for "use a smaller batch".
    assert_clean_error(code, err, re.compile(
        r"error: model 'mlp': infer b=4 over grpc: gRPC message size limit exceeded \(RESOURCE_EXHAUSTED: "
        r"CLIENT: Sent message larger than max \(\d+ vs\. 64\)\)"), 7)
    assert "smaller batch" in err and "HTTP" in err


# ---------------------------------------------------------------- errors users hit


@pytest.mark.server
def test_unknown_model(served, cli):
    code, _, err = cli("validate", *served.ports(), "--model", "nope")
    assert_clean_error(code, err, "model 'nope' is not in the server's repository "
                                  "(models there: broken, fixed, mlp, pipe, swapped, text)", 7)


@pytest.mark.server
def test_model_not_ready_gives_the_servers_reason(served, cli):
    code, out, err = cli("validate", *served.ports(), "--model", "broken", "--model", "text")
    assert "text" in out and "infer b=1" in out  # the other model is still validated
    assert_clean_error(code, err, re.compile(
        r"error: model 'broken' is not ready \(UNAVAILABLE\): .*INVALID_PROTOBUF.* \(and 1 more failed check\)"), 7)
    report = validate(served.options(models=("broken",)))
    rows = _rows(report, "broken", "ready")
    assert set(rows) == {"http", "grpc"} and {r.status for r in rows.values()} == {"fail"}
    assert [r.check for r in report.rows_for("broken")] == ["ready", "ready"]  # nothing else is attempted


def test_unreachable_server(cli):
    from tritonops.netaddr import free_port

    port = free_port()
    code, _, err = cli("validate", "--url", "127.0.0.1", "--http-port", str(port))
    assert_clean_error(code, err, f"cannot reach Triton's HTTP endpoint at 127.0.0.1:{port}: connection refused", 6)
    assert "tritonops serve" in err


@pytest.mark.server
def test_wrong_ports(served):
    with pytest.raises(ServerError) as e:
        validate(served.options(http_url=served.grpc_url))
    assert e.value.message.startswith(f"{served.grpc_url} answered, but not as Triton's HTTP endpoint (")
    assert "--http-port" in (e.value.hint or "")
    with pytest.raises(ServerError) as e:
        validate(served.options(grpc_url=served.http_url))
    assert e.value.message.startswith(f"{served.http_url} answered, but not as Triton's gRPC endpoint (")


@pytest.mark.server
def test_user_input_mismatches(served, tmp_path, cli):
    np.savez(tmp_path / "int.npz", x=np.zeros((2, 4), np.int64))
    code, _, err = cli("validate", *served.ports(), "--model", "mlp", "--inputs", tmp_path / "int.npz")
    assert_clean_error(code, err, "input 'x' of model 'mlp': expected FP32, given INT64", 2)
    assert "hint: convert it before saving, e.g. arr.astype(np.float32)" in err
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 5), np.float32))
    with pytest.raises(UsageError) as e:
        validate(served.options(models=("mlp",), inputs=tmp_path / "shape.npz"))
    assert e.value.message == ("input 'x' of model 'mlp': expected shape [-1, 4] (the first dimension is the batch), "
                               "given [2, 5]")


# ---------------------------------------------------------------- without a server


def _mlp_specs() -> tuple[TensorSpec, ...]:
    return (TensorSpec("x", BY_NAME["FP32"], (4,)),)


def test_input_checks_name_the_input():
    specs = _mlp_specs()
    with pytest.raises(UsageError, match=r"^input 'z' given for model 'm' is not one of its inputs \(x\)$"):
        check_inputs("m", {"z": np.zeros((1, 4), np.float32)}, specs, 8)
    with pytest.raises(UsageError, match=r"^no data for input 'x' of model 'm'$"):
        check_inputs("m", {}, specs, 8)
    with pytest.raises(UsageError, match=r"^input 'x' of model 'm' has batch 9, but the model's max_batch_size is 8$"):
        check_inputs("m", {"x": np.zeros((9, 4), np.float32)}, specs, 8)
    with pytest.raises(UsageError, match=r"^input 'x' of model 'm': expected shape \[4\], given \[1, 4\]$"):
        check_inputs("m", {"x": np.zeros((1, 4), np.float32)}, specs, 0)
    ok = check_inputs("m", {"x": np.zeros((3, 4), np.float32)}, specs, 8)
    assert ok["x"].shape == (3, 4)


def test_json_inputs(tmp_path):
    specs = _mlp_specs()
    f = tmp_path / "a.json"
    f.write_text(json.dumps({"x": [[1, 2, 3, 4]]}))
    got = check_inputs("m", load_inputs(f), specs, 8)
    assert got["x"].dtype == np.float32 and got["x"].tolist() == [[1.0, 2.0, 3.0, 4.0]]
    f.write_text(json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}))
    with pytest.raises(UsageError, match=r"^input 'x' of model 'm': expected FP32, given INT32$"):
        check_inputs("m", load_inputs(f), specs, 8)
    f.write_text(json.dumps({"x": [["a", "b", "c", "d"]]}))
    with pytest.raises(UsageError, match=r"^input 'x' of model 'm': expected FP32, given strings$"):
        check_inputs("m", load_inputs(f), specs, 8)
    ints = (TensorSpec("ids", BY_NAME["INT64"], (-1,)),)
    f.write_text(json.dumps({"ids": [[1.5, 2]]}))
    with pytest.raises(UsageError, match=r"^input 'ids' of model 'm': expected INT64, given float64$"):
        check_inputs("m", load_inputs(f), ints, 8)
    with pytest.raises(UsageError, match=r"is neither \.npz nor \.json$"):
        load_inputs(Path(__file__))


def test_npz_with_pickled_strings_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", s=np.array([b"a"], dtype=object))
    with pytest.raises(UsageError, match=r"holds object arrays, which would need unpickling$"):
        load_inputs(tmp_path / "obj.npz")
    np.savez(tmp_path / "str.npz", s=np.array([["a", "é"]]))
    assert load_inputs(tmp_path / "str.npz")["s"].tolist() == [[b"a", "é".encode()]]


def test_sizes_and_options():
    assert parse_size("64") == 64 and parse_size("4MB") == 4 << 20 and parse_size("1.5k") == 1536
    assert parse_size("64MiB") == 64 << 20
    with pytest.raises(UsageError, match="cannot parse size 'lots'"):
        parse_size("lots")
    with pytest.raises(UsageError, match="--reference needs exactly one --model"):
        ValidateOptions(reference=Path(__file__))
    with pytest.raises(UsageError, match="URL 'http://x:1' includes a scheme"):
        ValidateOptions(http_url="http://x:1")


def test_report_names_the_model_failure_before_server_readiness():
    rows = (
        CheckResult("", "ready", "http", "fail", "not ready: models not ready: broken", hint="h1"),
        CheckResult("broken", "ready", "http", "fail", "not ready (UNAVAILABLE): Internal: bad file", hint="h2"),
        CheckResult("ok", "infer b=1", "grpc", "pass", "y FP32[1, 3]", latency_ms=1.0),
    )
    report = ValidationReport("h:1", "h:2", "2.51.0", None, ("broken", "ok"), rows, 1e-4, 1e-3)
    err = report.error()
    assert err.message == "model 'broken' is not ready (UNAVAILABLE): Internal: bad file (and 1 more failed check)"
    assert err.hint == "h2"
    d = report.to_dict()
    assert d["ok"] is False and d["counts"] == {"pass": 1, "fail": 2, "skip": 0}
    json.dumps(d)


def test_tensor_specs_keep_reshape():
    from tritonops.pbtxt import dict_to_config

    cfg = dict_to_config({"name": "s", "max_batch_size": 4, "input": [
        {"name": "x", "data_type": "TYPE_FP32", "dims": [1], "reshape": {"shape": []}}],
        "output": [{"name": "y", "data_type": "TYPE_STRING", "dims": [-1]}]}, "test")
    ins, outs = tensor_specs(cfg)
    assert ins[0].reshape == () and ins[0].dims == (1,) and outs[0].dtype.name == "BYTES"


@pytest.mark.torch
def test_torchscript_reference_runner(tmp_path):
    torch = pytest.importorskip("torch", reason="needs the torch extra")
    from tritonops.pbtxt import dict_to_config
    from tritonops.reference import ModelUnderTest, TorchScriptReference

    torch.manual_seed(0)
    module = torch.nn.Linear(4, 2).eval()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    cfg = dict_to_config({"name": "lin", "platform": "pytorch_libtorch", "max_batch_size": 8,
                          "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [4]}],
                          "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [2]}]}, "test")
    runner = TorchScriptReference(ModelUnderTest("lin", "1", cfg, None, path))
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    got = runner({"INPUT__0": x})
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    assert list(got) == ["OUTPUT__0"] and np.array_equal(got["OUTPUT__0"], want)
    assert runner.description.startswith("torch.jit ")


@pytest.mark.lifecycle
@pytest.mark.server
def test_cli_serve_validates_and_stops(cli, tmp_path):
    """`validate REPO --serve`: a server of its own (here with the response cache turned on
    because the model asks for it), everything validated, then the server is gone."""
    import socket

    mlp = onnx_models.mlp(tmp_path / "src" / "mlp.onnx")
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp), repository=repo, name="clf", max_batch_size=4, response_cache=True))
    code, out, err = cli("validate", repo, "--serve")
    assert code == 0, err
    assert "clf" in out and "response cache" in out
    m = re.search(r"all checks passed: (\d+) passed, 0 failed, 0 skipped \(1 model, Triton 2\.51\.0 at "
                  r"127\.0\.0\.1:(\d+)\)", out)
    assert m, out
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", int(m.group(2))))


# ---------------------------------------------------------------- sequences run in-process (no server)


def _controls_config(max_batch_size: int):
    return dict_to_config({
        "name": "seq", "backend": "onnxruntime", "max_batch_size": max_batch_size,
        "sequence_batching": {"control_input": [
            {"name": "S", "control": [{"kind": "CONTROL_SEQUENCE_START", "int32_false_true": [0, 1]}]},
            {"name": "E", "control": [{"kind": "CONTROL_SEQUENCE_END", "fp32_false_true": [0.0, 1.0]}]},
            {"name": "R", "control": [{"kind": "CONTROL_SEQUENCE_READY", "bool_false_true": [False, True]}]},
            {"name": "C", "control": [{"kind": "CONTROL_SEQUENCE_CORRID", "data_type": "TYPE_STRING"}]}]}}, "test")


def test_control_tensors_take_the_value_form_the_config_declares():
    first = control_tensors(_controls_config(4), "abc", start=True, end=False)
    assert {k: (v.dtype.name, v.shape) for k, v in first.items()} == {
        "S": ("int32", (1, 1)), "E": ("float32", (1, 1)), "R": ("bool", (1, 1)), "C": ("object", (1, 1))}
    assert (first["S"].item(), first["E"].item(), first["R"].item(), first["C"].item()) == (1, 0.0, True, b"abc")
    last = control_tensors(_controls_config(0), "abc", start=False, end=True)
    assert last["S"].shape == (1,) and (last["S"].item(), last["E"].item(), last["R"].item()) == (0, 1.0, True)


def test_initial_states_from_zero_data_and_data_file(tmp_path):
    cfg = dict_to_config({"name": "seq", "backend": "onnxruntime", "max_batch_size": 2, "sequence_batching": {
        "state": [
            {"input_name": "A", "output_name": "A_OUT", "data_type": "TYPE_FP32", "dims": [2],
             "initial_state": [{"name": "z", "data_type": "TYPE_FP32", "dims": [2], "zero_data": True}]},
            {"input_name": "B", "output_name": "B_OUT", "data_type": "TYPE_INT64", "dims": [3],
             "initial_state": [{"name": "f", "data_type": "TYPE_INT64", "dims": [3], "data_file": "b.bin"}]}]}}, "test")
    (tmp_path / "initial_state").mkdir()
    (tmp_path / "initial_state" / "b.bin").write_bytes(np.array([1, 2, 3], np.int64).tobytes())
    states = initial_states(cfg, tmp_path)
    np.testing.assert_array_equal(states["A"], np.zeros((1, 2), np.float32))
    np.testing.assert_array_equal(states["B"], [[1, 2, 3]])
    with pytest.raises(UsageError, match=re.escape("state 'B' starts from data_file 'b.bin'")):
        initial_states(cfg, None)
    (tmp_path / "initial_state" / "b.bin").write_bytes(b"xx")
    with pytest.raises(UsageError, match=r"cannot read initial state .*b\.bin"):
        initial_states(cfg, tmp_path)


@pytest.mark.parametrize(("start", "corrid"), [(True, False), (False, True)])
def test_sequence_reference_runs_a_production_config_step_by_step(tmp_path, start, corrid):
    cfg = stateful_models.stateful_config("acc", start=start, corrid=corrid)
    model_dir = stateful_models.write_model(tmp_path, cfg, start=start, corrid=corrid)
    ref = OnnxSequenceReference(ModelUnderTest("acc", "1", cfg, model_dir, model_dir / "1" / "model.onnx"))
    steps = [np.full(stateful_models.WIDTH, v, np.float32) for v in (1, 2, 4)]
    outs = ref.sequence([{"IN": x[None]} for x in steps], 9)
    want = stateful_models.reference(steps, start=start)
    for got, w in zip(outs, want, strict=True):
        assert set(got) == {"OUT"}  # state outputs stay inside
        np.testing.assert_array_equal(got["OUT"], w[None])
    # a second run starts from the initial state again
    np.testing.assert_array_equal(ref.sequence([{"IN": steps[0][None]}], 10)[0]["OUT"], steps[0][None])


def test_grpc_stream_is_a_protocol_to_choose():
    assert ValidateOptions(protocols=("grpc-stream",)).protocols == ("grpc-stream",)
    with pytest.raises(UsageError) as e:
        ValidateOptions(protocols=("grpc-streaming",))
    assert e.value.hint == "use some of: http-json, http-binary, grpc, grpc-stream"
