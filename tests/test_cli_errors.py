"""Bad input never crashes: each user error gets one clear line, a hint, a non-zero exit and no
traceback. Messages are asserted exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from onnx import TensorProto

import onnx_models

FIXTURES = Path(__file__).parent / "fixtures"


def assert_clean_error(code: int, err: str, message: str, exit_code: int) -> None:
    assert code == exit_code, err
    assert "Traceback" not in err
    first = err.strip().splitlines()[0]
    assert first == f"error: {message}", first
    assert err.strip().splitlines()[1].startswith("hint: ")


def test_missing_file(cli, tmp_path):
    code, _, err = cli("build", tmp_path / "nope.onnx")
    assert_clean_error(code, err, f"model file '{tmp_path / 'nope.onnx'}' does not exist", 2)


def test_not_an_onnx_file(cli, tmp_path):
    f = tmp_path / "notes.onnx"
    f.write_text("this is a text file, not a model\n")
    code, _, err = cli("build", f)
    assert_clean_error(code, err, f"'{f}' is not a valid ONNX model (Error parsing message)", 3)


def test_truncated_onnx(cli, tmp_path, mlp_onnx):
    f = tmp_path / "trunc.onnx"
    f.write_bytes(mlp_onnx.read_bytes()[:150])
    code, _, err = cli("build", f)
    assert code == 3 and "Traceback" not in err
    assert err.startswith(f"error: '{f}' is not a valid ONNX model")


def test_unsupported_onnx_dtype(cli, tmp_path):
    f = onnx_models.identity(tmp_path / "complex.onnx", TensorProto.COMPLEX64, ["batch", 2])
    code, _, err = cli("build", f)
    assert_clean_error(code, err, "input 'INPUT' has ONNX type COMPLEX64, which Triton cannot serve", 2)


def test_unsupported_dtype_in_input_spec(cli, mlp_onnx):
    code, _, err = cli("build", mlp_onnx, "--input", "x:FP128:4")
    assert_clean_error(code, err, "unknown data type 'FP128'", 2)


@pytest.mark.parametrize("name", ["a/b", "..", "../escape", "has space"])
def test_bad_model_names(cli, mlp_onnx, tmp_path, name):
    code, _, err = cli("build", mlp_onnx, "--name", name, "--repo", tmp_path / "repo")
    assert_clean_error(
        code, err,
        f"invalid model name '{name}': use letters, digits, '_', '-' and '.', without '/', '..' or spaces", 2)
    assert not (tmp_path / "repo").exists()


def test_preferred_batch_size_above_max(cli, mlp_onnx, tmp_path):
    code, _, err = cli("build", mlp_onnx, "--max-batch-size", "8", "--preferred-batch-size", "16",
                       "--repo", tmp_path / "repo")
    assert_clean_error(code, err, "preferred batch size 16 is above max batch size 8", 2)


def test_input_spec_disagrees_with_model(cli, mlp_onnx, tmp_path):
    code, _, err = cli("build", mlp_onnx, "--input", "x:FP32:5", "--repo", tmp_path / "repo")
    assert_clean_error(code, err, f"--input 'x' has dims [5] but model '{mlp_onnx}' takes [4] "
                                  "(without the batch dimension)", 2)
    code, _, err = cli("build", mlp_onnx, "--input", "x:INT64:4", "--repo", tmp_path / "repo")
    assert_clean_error(code, err, f"--input 'x' says INT64 but model '{mlp_onnx}' takes FP32", 2)
    code, _, err = cli("build", mlp_onnx, "--input", "pixels:FP32:4", "--repo", tmp_path / "repo")
    assert_clean_error(code, err, f"--input 'pixels' does not match any input of model '{mlp_onnx}' "
                                  "(its inputs: x)", 2)


def test_unknown_yaml_field(cli):
    f = FIXTURES / "bad_field.yaml"
    code, _, err = cli("build", "-f", f)
    assert_clean_error(code, err, f"{f}: models[0]: unknown field 'max_batchsize'", 2)
    assert "did you mean 'max_batch_size'?" in err


def test_bad_yaml_syntax(cli):
    f = FIXTURES / "bad_syntax.yaml"
    code, _, err = cli("build", "-f", f)
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {f}:3: invalid YAML:")


def test_conflicting_source_and_file(cli, mlp_onnx):
    code, _, err = cli("build", mlp_onnx, "-f", FIXTURES / "bad_field.yaml")
    assert_clean_error(code, err, "give either SOURCE or -f FILE, not both", 2)


def test_accelerator_needs_gpu_kind(cli, mlp_onnx):
    code, _, err = cli("build", mlp_onnx, "--accelerator", "tensorrt")
    assert_clean_error(code, err, "--accelerator tensorrt needs GPU instances, but --kind is cpu", 2)


def test_bad_choice(cli, mlp_onnx):
    code, _, err = cli("build", mlp_onnx, "--kind", "tpu")
    assert_clean_error(code, err, "--kind 'tpu' is not one of: cpu, gpu, auto", 2)


@pytest.mark.torch
def test_factory_that_raises(cli, tmp_path):
    ref = f"{FIXTURES / 'factories.py'}:make_broken"
    code, _, err = cli("build", ref, "--example-shape", "x:FP32:4", "--repo", tmp_path / "repo")
    assert_clean_error(code, err, f"model factory '{ref}' raised ValueError: weights file weights.bin not found", 4)
    assert not (tmp_path / "repo").exists()


def test_debug_shows_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tritonops", "--debug", "build", str(tmp_path / "nope.onnx")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([str(Path(sys.executable).parent / "tritonops"), "build", str(tmp_path / "x.onnx")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: model file")
    assert "Traceback" not in proc.stderr


def test_duplicate_yaml_key_in_build_file(cli, tmp_path, mlp_onnx):
    """PyYAML keeps the last of two equal keys; tritonops refuses the file instead."""
    f = tmp_path / "tritonops.yaml"
    f.write_text(f"models:\n  - source: {mlp_onnx}\n    max_batch_size: 8\n    max_batch_size: 16\n")
    code, _, err = cli("build", "-f", f, "--repo", tmp_path / "repo")
    assert_clean_error(code, err, f"{f}:4: invalid YAML: duplicate key 'max_batch_size' (first given on line 3)", 2)
    assert not (tmp_path / "repo").exists()


def test_duplicate_yaml_key_in_ensemble_spec(cli, tmp_path):
    import ensemble_fixtures as ef

    text = ef.FIXTURE.read_text()
    f = tmp_path / "ensemble.yaml"
    (tmp_path / "steps.py").write_text((ef.FIXTURE.parent / "steps.py").read_text())
    f.write_text(text.replace("    python: steps.py:double\n",
                              "    python: steps.py:double\n    inputs: {x: x}\n", 1))
    first = text.splitlines().index("    python: steps.py:double") + 2
    code, _, err = cli("build", "-f", f, "--repo", tmp_path / "repo")
    assert_clean_error(code, err, f"{f}:{first + 1}: invalid YAML: duplicate key 'inputs' "
                                  f"(first given on line {first})", 2)
    assert not (tmp_path / "repo").exists()


def test_yaml_merge_keys_may_be_overridden():
    """'<<: *anchor' followed by one of its keys is an override, not a duplicate."""
    from tritonops.specfile import load_yaml

    assert load_yaml("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n") == {"base": {"x": 1, "y": 2},
                                                                          "m": {"x": 1, "y": 3}}
