"""Ensembles from ensemble.yaml: wiring errors (exact messages, refused by the real server too),
signature inference, generated Python-backend steps served by a real tritonserver."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import ensemble_fixtures as ef
from tritonops.errors import UsageError


@pytest.fixture(scope="module")
def pipe_repo(tmp_path_factory) -> Path:
    """The good 'pipe' ensemble built through the real CLI, plus the hand-broken copies."""
    from tritonops.cli import main

    repo = tmp_path_factory.mktemp("pipe") / "repo"
    assert main(["build", "-f", str(ef.FIXTURE), "--repo", str(repo)]) == 0
    ef.add_bad_ensembles(repo)
    return repo


# ---------------------------------------------------------------- check (hand-written repositories)


@pytest.mark.parametrize("case", ef.CASES, ids=lambda c: c.name)
def test_check_reports_each_wiring_error(pipe_repo, case):
    from tritonops.check import check_repository

    report = check_repository(pipe_repo)
    found = [(f.field, f.message) for f in report.findings if f.model == case.name]
    assert (case.field, case.message) in found, found


def test_generated_ensemble_passes_check(pipe_repo):
    from tritonops.check import check_repository

    report = check_repository(pipe_repo)
    assert {f.model for f in report.findings} == {c.name for c in ef.CASES}


def test_check_reports_missing_step_model(tmp_path, pipe_repo):
    from tritonops.check import check_repository

    shutil.copytree(pipe_repo / "pipe", tmp_path / "pipe")
    report = check_repository(tmp_path)
    messages = [f.message for f in report.findings]
    assert "step model 'pipe_double' is not in the repository (no pipe_double/config.pbtxt)" in messages


# ---------------------------------------------------------------- build: errors before anything is written


def _variant(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(ef.FIXTURE.read_text())
    change(data)
    shutil.copy(ef.FIXTURE.parent / "steps.py", tmp_path / "steps.py")
    path = tmp_path / "ensemble.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _steps(data):
    return {s["name"]: s for s in data["steps"]}


YAML_CASES = {
    "unknown_top_field": (lambda d: d.update(instance_group=[{"count": 2}]),
                          "{path}: unknown field 'instance_group'"),
    "unknown_step_field": (lambda d: _steps(d)["double"].update(inputz={"x": "x"}),
                           "{path}: steps[0] 'double': unknown field 'inputz'"),
    "reads_unknown_tensor": (lambda d: _steps(d)["total"]["inputs"].update(x="x_typo"),
                             "{path}: step 'total' reads tensor 'x_typo', which no step writes and is not an "
                             "ensemble input"),
    "unused_intermediate": (lambda d: d.update(outputs=["total"]),
                            "{path}: step 'double' writes tensor 'tripled' but nothing uses it (Triton refuses "
                            "unused ensemble tensors)"),
    "two_producers": (lambda d: _steps(d)["total"]["outputs"].update(s="tripled") or d.update(outputs=["tripled"]),
                      "{path}: ensemble tensor 'tripled' is written by more than one step ('double' and 'total')"),
    "output_not_written": (lambda d: d["outputs"].append("score"),
                           "{path}: ensemble output 'score' is not written by any step"),
    "cycle": (lambda d: _steps(d)["double"]["inputs"].update(x="total"),
              "{path}: steps 'double', 'total' form a cycle: each waits for a tensor another one writes"),
    "input_unused": (lambda d: d["inputs"].append({"name": "w", "dtype": "FP32", "dims": [-1]}),
                     "{path}: ensemble input 'w' is not used by any step"),
    "declared_dtype": (lambda d: d.update(outputs=[{"name": "total", "dtype": "INT32", "dims": [1]}, "tripled"]),
                       "{path}: ensemble output 'total' is declared INT32 but output 's' of step 'total' is FP32"),
    "max_batch_size": (lambda d: _steps(d)["total"].update(max_batch_size=4),
                       "{path}: ensemble max_batch_size 8 is above the max_batch_size 4 of step 'total' "
                       "(model 'pipe_total')"),
    "missing_function_output": (lambda d: _steps(d)["total"].update(outputs={"q": "total"}),
                                "{path}: step 'total': function 'total' returns no output 'q' (it returns: s)"),
    "declared_output_dims": (lambda d: _steps(d)["double"].update(
        output_specs=[{"name": "y", "dtype": "FP32", "dims": [3, 3]}]),
        "step 'double': output 'y' is declared [3,3] but the function returns [-1] (batch dimension excluded)"),
}


@pytest.mark.parametrize("key", list(YAML_CASES))
def test_build_refuses_bad_wiring_before_writing(tmp_path, key, cli):
    change, message = YAML_CASES[key]
    path = _variant(tmp_path, change)
    code, _out, err = cli("build", "-f", path)
    assert code == 2, err
    assert err.splitlines()[0] == "error: " + message.format(path=path)
    assert err.splitlines()[1].startswith("hint: ")
    assert not (tmp_path / "model_repository").exists() or not any((tmp_path / "model_repository").iterdir())


def test_signature_inference_marks_variable_dims():
    from tritonops.ensemble import infer_outputs

    runs = [{"ids": np.zeros((1, 5), np.int64), "v": np.zeros((1, 384), np.float32), "n": np.zeros(1, np.int32)},
            {"ids": np.zeros((2, 9), np.int64), "v": np.zeros((2, 384), np.float32), "n": np.zeros(2, np.int32)}]
    specs = {t.name: t for t in infer_outputs("s", "f", runs, [1, 2], batched=True)}
    assert specs["ids"].dims == (-1,) and specs["ids"].dtype.name == "INT64"
    assert specs["v"].dims == (384,) and specs["v"].dtype.name == "FP32"
    assert specs["n"].dims == (1,) and specs["n"].reshape == ()
    with pytest.raises(Exception, match=r"output 'v' of 'f' has shape \[3, 384\] for a batch of 2"):
        infer_outputs("s", "f", [runs[0], {**runs[1], "v": np.zeros((3, 384), np.float32)}], [1, 2], batched=True)


def test_unknown_resource_and_function_are_usage_errors(tmp_path):
    from tritonops.ensemblefile import load_ensemble_file

    path = _variant(tmp_path, lambda d: _steps(d)["double"].update(resources=["nope.txt"]))
    with pytest.raises(UsageError, match=r"resources\[0\]: resource '.*nope.txt' does not exist"):
        load_ensemble_file(path)


# ---------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def served_pipe(pipe_repo, triton_session):
    """The good and the broken ensembles lent to the session server, which refuses the broken ones."""
    with triton_session.models(pipe_repo, expect_failures=True) as loaded:
        assert set(loaded.failures) == {c.name for c in ef.CASES}, loaded.failures
        yield triton_session.server


@pytest.mark.server
def test_real_server_refuses_bad_ensembles_and_serves_the_good_one(served_pipe):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    server = served_pipe
    states = {s.name: s for s in server.model_states()}
    for case in ef.CASES:
        st = states.get(case.name)
        assert st is None or st.state != "READY", (case.name, st)
    assert states["pipe"].state == "READY"
    x = np.array([[1, 2, 3]], dtype=np.float32)
    for mod, url in ((httpclient, server.http_url), (grpcclient, server.grpc_url)):
        client = mod.InferenceServerClient(url)
        inp = mod.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = client.infer("pipe", [inp])
        assert res.as_numpy("total").tolist() == [[18.0]]
        assert res.as_numpy("tripled").tolist() == [[3.0, 6.0, 9.0]]
        # a user function that raises: an error response naming step, function and message ...
        bad = mod.InferInput("x", [1, 1], "FP32")
        bad.set_data_from_numpy(np.array([[2000]], dtype=np.float32))
        with pytest.raises(Exception, match=r"step 'double': double\(\) raised ValueError: input above 1000"):
            client.infer("pipe", [bad])
        # ... and the next request succeeds
        assert client.infer("pipe", [inp]).as_numpy("total").tolist() == [[18.0]]
    # requests of different lengths batched together (ragged 'group' mode) come back per request
    client = httpclient.InferenceServerClient(server.http_url, concurrency=5)
    pending = []
    for n in (1, 4, 2, 4, 7):
        inp = httpclient.InferInput("x", [1, n], "FP32")
        inp.set_data_from_numpy(np.arange(n, dtype=np.float32)[None])
        pending.append((n, client.async_infer("pipe", [inp])))
    for n, req in pending:
        assert req.get_result().as_numpy("total").tolist() == [[3.0 * sum(range(n))]]


def test_failing_step_at_build_time_leaves_repository_untouched(tmp_path, cli, digest):
    """Inference runs every step before the first rename: a step that raises on the examples
    (here: values above 1000) fails the build and no model of the ensemble is written."""
    path = _variant(tmp_path, lambda d: d.update(examples="steps.py:big"))
    with (tmp_path / "steps.py").open("a") as f:
        f.write("\n\ndef big(variant):\n    return {'x': np.full((1 + variant, 3), 5000, np.float32)}\n")
    repo = tmp_path / "model_repository"
    repo.mkdir()
    (repo / "keep.txt").write_text("unrelated")
    before = digest(repo)
    code, _out, err = cli("build", "-f", path)
    assert code == 3, err
    assert err.splitlines()[0] == "error: step function 'double' raised ValueError: input above 1000"
    assert digest(repo) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tritonops-stage")]


def test_cli_check_reports_ensemble_findings(pipe_repo, cli):
    code, out, _err = cli("check", pipe_repo)
    assert code != 0
    assert "bad_cycle/config.pbtxt: ensemble_scheduling.step[0]: steps 'step[0] pipe_double', " in out
    assert "✓ pipe\n" in out


def test_python_steps_use_the_one_batching_module(tmp_path):
    """A generated step imports backends/_batching.py (copied beside its model.py) rather than
    carrying its own copy; every result carries the config it wrote."""
    from tritonops.ensemble import BATCHING_MODULE, build_ensemble_file
    from tritonops.pbtxt import read_config

    results = build_ensemble_file(ef.FIXTURE, tmp_path / "repo")
    for r in results:
        assert read_config(r.config_path) == r.config
    for step in ("pipe_double", "pipe_total"):
        version = tmp_path / "repo" / step / "1"
        assert (version / "_batching.py").read_bytes() == BATCHING_MODULE.read_bytes()
        source = (version / "model.py").read_text()
        assert "from _batching import batch_groups, concatenate, split" in source
        assert "np.pad(" not in source and "def _unpad" not in source
