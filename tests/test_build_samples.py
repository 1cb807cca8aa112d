"""tritonops build --samples: a real ONNX model that parses numbers out of STRING inputs cannot run on
generated data; with samples (text lines, .npz, KServe .json) it builds, warms up on the first
sample, saves the samples as EXAMPLES_FILE, and validate on the real session server uses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_models import OPSET
from tritonops.build import BuildOptions, build
from tritonops.cli import main
from tritonops.convert.verify import VerificationError
from tritonops.errors import UsageError
from tritonops.pbtxt import read_config
from tritonops.perf.inputs import serialize_bytes
from tritonops.samples import EXAMPLES_FILE, read_npz

NUMBERS = ["12", "7", "-3"]


def number_parser(path: Path) -> Path:
    """TEXT STRING [batch, 1] -> NUM = 2 * int64(TEXT): onnxruntime's Cast parses the strings and
    fails on anything that is not a number (which random strings are not)."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["TEXT"], ["parsed"], to=TensorProto.INT64),
         helper.make_node("Mul", ["parsed", "two"], ["NUM"])],
        "number_parser",
        [helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("NUM", TensorProto.INT64, ["batch", 1])],
        initializer=[numpy_helper.from_array(np.array(2, dtype=np.int64), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


@pytest.fixture
def parser(tmp_path: Path) -> Path:
    return number_parser(tmp_path / "src" / "parse.onnx")


@pytest.fixture
def lines(tmp_path: Path) -> Path:
    p = tmp_path / "numbers.txt"
    p.write_text("\n".join(NUMBERS) + "\n")
    return p


def test_generated_data_refused_names_samples_and_no_native_log(tmp_path, parser, capfd):
    code = main(["build", str(parser), "--repo", str(tmp_path / "repo")])
    out, err = capfd.readouterr()
    assert code == 4, err
    assert "the model refused the generated example data" in err
    assert "--samples FILE" in err
    assert "onnxruntime:" not in out + err and "sequential_executor" not in out + err  # no native log line
    assert "Traceback" not in err
    assert not (tmp_path / "repo").exists()
    with pytest.raises(VerificationError, match="refused the generated example data"):
        build(BuildOptions(source=str(parser), repository=tmp_path / "repo"))


def test_text_samples_drive_checks_warmup_and_examples(tmp_path, parser, lines):
    r = build(BuildOptions(source=str(parser), repository=tmp_path / "repo", samples=lines, warmup=True))
    assert r.verification.ok
    assert [row.batch for row in r.verification.rows] == [1, 3]
    saved = read_npz(r.model_dir / EXAMPLES_FILE)
    assert list(saved) == ["TEXT"] and saved["TEXT"].shape == (3, 1)
    assert [v.decode() for v in saved["TEXT"].reshape(-1)] == NUMBERS
    cfg = read_config(r.config_path)
    (warm,) = cfg.model_warmup
    assert warm.batch_size == 1 and warm.inputs["TEXT"].input_data_file == "TEXT"
    assert list(warm.inputs["TEXT"].dims) == [1]
    assert (r.model_dir / "warmup" / "TEXT").read_bytes() == serialize_bytes(np.array([b"12"], dtype=object))
    assert any(EXAMPLES_FILE in n for n in r.notes)


def test_npz_and_json_samples_mean_the_same(tmp_path, parser):
    npz = tmp_path / "numbers.npz"
    np.savez(npz, TEXT=np.array(NUMBERS).reshape(3, 1))
    kserve = tmp_path / "numbers.json"
    kserve.write_text(json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [3, 1],
                                              "data": NUMBERS}]}))
    saved = []
    for i, f in enumerate((npz, kserve)):
        r = build(BuildOptions(source=str(parser), repository=tmp_path / f"repo{i}", samples=f))
        assert r.verification.ok
        saved.append(read_npz(r.model_dir / EXAMPLES_FILE)["TEXT"])
    np.testing.assert_array_equal(saved[0].astype(bytes), saved[1].astype(bytes))


def test_bad_samples_are_one_clear_error(tmp_path, parser, cli):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, WORDS=np.array(NUMBERS).reshape(3, 1))
    repo = tmp_path / "repo"
    for f, message in [(wrong, "wrong.npz has no array for input 'TEXT'"),
                       (tmp_path / "missing.txt", "sample file"),
                       (tmp_path / "numbers.csv", "unknown sample format '.csv'")]:
        if f.suffix == ".csv":
            f.write_text("12\n")
        code, _, err = cli("build", parser, "--repo", repo, "--samples", f)
        assert code == 2, err
        assert message in err and "Traceback" not in err, err
    assert not repo.exists()
    with pytest.raises(UsageError, match="no array for input 'TEXT'"):
        build(BuildOptions(source=str(parser), repository=repo, samples=wrong))


def test_samples_in_a_build_file_are_relative_to_it(tmp_path, parser, lines):
    from tritonops.buildfile import load_build_file

    f = tmp_path / "tritonops.yaml"
    f.write_text("models:\n  - source: src/parse.onnx\n    samples: numbers.txt\n")
    (opts,) = load_build_file(f)
    assert opts.samples == lines


@pytest.mark.server
def test_validate_uses_the_saved_samples(tmp_path, parser, lines, triton_session, cli):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(parser), repository=repo, name="parse", samples=lines, warmup=True))
    with triton_session.models(repo):  # loads with the warm-up request read from warmup/TEXT
        server = triton_session.server
        code, out, err = cli("validate", triton_session.repository, "--url", "127.0.0.1",
                             "--http-port", server.http_port, "--grpc-port", server.grpc_port,
                             "--metrics-port", server.metrics_port, "--model", "parse", "--json")
    assert code == 0, out + err
    rows = json.loads(out)["data"]["rows"]
    assert rows and all(r["status"] in ("pass", "skip") for r in rows), rows
    # Generated strings are no numbers: only the saved samples make inference and the comparison
    # with the local run pass, over every protocol.
    reference = [r for r in rows if r["check"].startswith("reference")]
    assert {r["protocol"] for r in reference if r["status"] == "pass"} == {"http-json", "http-binary", "grpc"}
    assert any(r["check"] == "reference b=3" for r in reference)


def test_readme_samples_section_builds(tmp_path, monkeypatch, cli):
    """The section's build commands run as written (its `validate --serve` line is what
    test_validate_uses_the_saved_samples does on the session server)."""
    import shlex

    from test_readme import readme_commands

    monkeypatch.chdir(tmp_path)
    number_parser(tmp_path / "parse.onnx")
    (tmp_path / "numbers.txt").write_text("\n".join(NUMBERS) + "\n")
    commands = [c for c in readme_commands("Samples") if c.startswith("tritonops build")]
    assert commands
    for command in commands:
        code, out, err = cli(*shlex.split(command)[1:])
        assert code == 0, f"{command}\n{out}{err}"
    assert (tmp_path / "model_repository" / "parse" / EXAMPLES_FILE).is_file()
