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


# ---------------------------------------------------------------- issue 14: usage errors are one line too


def test_a_value_click_cannot_parse_is_one_line_with_a_hint(cli):
    code, out, err = cli("loadtest", "m", "--rate", "lots")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "error: Invalid value for '--rate': Input should be a valid number, unable to parse string as a number",
        "hint: see 'tritonops loadtest --help'"]


def test_unknown_command_and_option_are_one_line(cli):
    code, _, err = cli("nosuch")
    assert code == 2 and err.splitlines() == ["error: No such command 'nosuch'.", "hint: see 'tritonops --help'"]
    code, _, err = cli("study", "config", "m", "--nosuch")
    assert code == 2 and err.splitlines()[1] == "hint: see 'tritonops study config --help'"
    assert err.splitlines()[0].startswith("error: No such option: --nosuch")


def test_usage_error_with_json_is_an_envelope(cli):
    import json

    code, out, _ = cli("deploy", "--status", "--to", "x", "--http-port", "70000", "--json")
    payload = json.loads(out)
    assert code == 2 and payload["command"] == "deploy" and payload["schema"] == "tritonops.deploy.status/1"
    assert payload["errors"] == [{"type": "UsageError", "message": "--http-port 70000 is not a port number",
                                  "hint": "use --http-port N with 0 <= N <= 65535 (0: a free one)"}]


@pytest.mark.parametrize(("args", "message"), [
    (["validate", "--http-port", "70000"], "--http-port 70000 is not a port number"),
    (["validate", "--url", "localhost:70000"], "--url 'localhost:70000' has port 70000, which is not a port number"),
    (["perf", "m", "--url", "127.0.0.1:99999"], "--url '127.0.0.1:99999' has port 99999, which is not a port number"),
    (["serve", "--grpc-port", "-1"], "--grpc-port -1 is not a port number"),
    (["serve", "--log-verbose", "99"], "--log-verbose 99 is not a verbosity level"),  # ServerOptions' words
    (["build", "m.onnx", "--version", "99999999999999999999"],  # the one version parser's words
     "version 99999999999999999999 is too large: Triton reads versions as 64-bit integers"),
    (["validate", "--timeout", "nan"], "--timeout nan is not a finite number"),
    (["perf", "m", "--url", "h:1", "--request-rate", "inf"], "--request-rate inf is not a finite number"),
    (["study", "protocols", "m", "--rates", "10,1e9"], "--rates 1e+09 is above the maximum 10000"),
])
def test_numbers_and_ports_are_checked_before_anything_runs(cli, args, message):
    """Items 6 and 14: one check per kind of value, for every option of every command."""
    code, _, err = cli(*args)
    assert code == 2, err
    assert err.splitlines()[0] == f"error: {message}"
    assert len(err.splitlines()) == 2 and err.splitlines()[1].startswith("hint: ")


@pytest.mark.parametrize("flag", ["--output-dir", "--out", "--log-file", "--debug-log"])
def test_a_file_where_a_directory_belongs_and_back(cli, tmp_path, flag):
    """Item 10: output options refuse a file for a directory and a directory for a file."""
    a_file, a_dir = tmp_path / "f", tmp_path / "d"
    a_file.write_text("x")
    a_dir.mkdir()
    args = {"--output-dir": ["perf", "m", "--url", "127.0.0.1:1"], "--out": ["deploy", "r", "--target", "k8s"],
            "--log-file": ["serve", str(tmp_path)], "--debug-log": []}[flag]
    if flag in ("--output-dir", "--out"):
        # the wording deploy --out always had (tests/test_deploy_manifests.py)
        argv, message = [*args, flag, str(a_file)], f"{flag} '{a_file}' is not a directory"
    else:
        argv, message = [*args, flag, str(a_dir)], f"{flag} '{a_dir}' is a directory, not a regular file"
    if flag == "--debug-log":
        argv = [*argv, "doctor"]
    code, _, err = cli(*argv)
    assert code == 2 and err.splitlines()[0] == f"error: {message}", err
    assert a_file.read_text() == "x" and list(a_dir.iterdir()) == []


def test_a_newline_in_a_name_stays_on_one_line(cli, mlp_onnx, tmp_path):
    """Item 14: every error line is one line; control characters are escaped where they are printed."""
    code, _, err = cli("build", mlp_onnx, "--name", "evil\nerror: forged", "--repo", tmp_path / "repo")
    assert code == 2 and len(err.splitlines()) == 2, err
    assert "\\n" in err.splitlines()[0]
