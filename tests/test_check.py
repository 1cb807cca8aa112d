"""tritonops check: one finding per broken model, exact messages; the real server agrees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from check_fixtures import CASES, GOOD, make_repository
from tritonops.check import check_repository
from tritonops.errors import ServerError
from tritonops.server import ModelState, ServerOptions, TritonServer


@pytest.fixture(scope="module")
def bad_repo(tmp_path_factory):
    return make_repository(tmp_path_factory.mktemp("check"))


def test_each_case_gets_its_finding(bad_repo):
    report = check_repository(bad_repo)
    by_model: dict[str, list] = {}
    for f in report.findings:
        by_model.setdefault(f.model, []).append(f)
    for case in CASES:
        found = by_model.get(case.name)
        assert found, f"{case.name}: no finding"
        first = found[0]
        assert first.field == case.field, (case.name, first)
        if case.message:
            assert first.message == case.message, (case.name, first.message)
        assert first.file == f"{case.name}/config.pbtxt"
        assert first.fix
    for good in GOOD:
        assert good not in by_model, by_model.get(good)
    assert not report.ok


def test_syntax_findings_name_the_problem(bad_repo):
    report = check_repository(bad_repo)
    msgs = {f.model: f.message for f in report.findings}
    assert "eight" in msgs["bad_syntax"]
    assert "max_batch" in msgs["unknown_field"]


def test_cli_check_exit_code_and_json(bad_repo, cli):
    code, out, _ = cli("check", bad_repo, "--json")
    assert code == 1
    payload = json.loads(out)
    data = payload["data"]
    assert payload["schema"] == "tritonops.check/1" and data["ok"] is False
    assert {f["model"] for f in data["findings"]} == {c.name for c in CASES}


def test_cli_check_good_repo_passes(tmp_path, mlp_onnx, cli):
    code, out, err = cli("build", mlp_onnx, "--repo", tmp_path / "repo")
    assert code == 0, err
    code, out, _ = cli("check", tmp_path / "repo")
    assert code == 0 and "1 of 1 models OK" in out


def test_check_missing_repository(tmp_path, cli):
    code, _, err = cli("check", tmp_path / "nope")
    assert code == 2
    assert f"error: repository '{tmp_path / 'nope'}' does not exist" in err


def _served_states(repo: Path) -> dict[str, ModelState]:
    opts = ServerOptions(repository=repo, http_port=0, grpc_port=0, metrics_port=0, strict_readiness=False,
                         exit_on_error=False)
    with TritonServer(opts) as server:
        return {s.name: s for s in server.model_states()}


@pytest.mark.server
def test_real_tritonserver_agrees_with_check(bad_repo, tmp_path, triton_session):
    """The oracle: the bundled real tritonserver loads every good model and refuses every case.

    Config-level rules are enforced by Triton's core itself. The ONNX I/O agreement rules are
    enforced at load by the ONNX Runtime backend; on machines without Triton's native ORT backend
    that is tritonops' Python-based onnxruntime backend, which mirrors those load-time checks.
    The cases are loaded on the session server (explicit model control: each load that fails is
    UNAVAILABLE with the server's reason, as at a start over the repository); a case that can crash
    the server (``own_server``) is served alone, by the test after this one."""
    shared = tmp_path / "shared"
    shutil.copytree(bad_repo, shared, symlinks=True)
    for case in CASES:
        if case.own_server:
            shutil.rmtree(shared / case.name)
    with triton_session.models(shared, expect_failures=True):
        states = {s.name: s for s in triton_session.server.model_states()}
    for good in GOOD:
        assert states[good].state == "READY", states.get(good)
    refused: dict[str, str] = {}
    for case in CASES:
        if case.own_server:
            continue
        st = states.get(case.name)
        # Absent from the index (e.g. no version directory) also means Triton serves nothing.
        assert st is None or st.state != "READY", (case.name, st)
        refused[case.name] = st.reason if st else "not in the repository index"
    print("\n".join(f"{k}: {v}" for k, v in refused.items()))


@pytest.mark.server
@pytest.mark.lifecycle
def test_cases_that_can_crash_the_server_are_refused_each_by_a_server_of_its_own(bad_repo, tmp_path):
    """A server that dies on such a case serves it no more than one that refuses it, but must not take
    the other cases' answers (or the session server) along."""
    alone = [c for c in CASES if c.own_server]
    assert alone
    refused: dict[str, str] = {}
    for case in alone:
        repo = tmp_path / case.name
        shutil.copytree(bad_repo / case.name, repo / case.name, symlinks=True)
        try:
            st = _served_states(repo).get(case.name)
        except ServerError as e:
            assert e.returncode is not None and e.returncode < 0, e  # killed by a signal, not a clean refusal
            refused[case.name] = f"the server died with signal {-e.returncode} loading it"
            continue
        assert st is None or st.state != "READY", (case.name, st)
        refused[case.name] = st.reason if st else "not in the repository index"
    print("\n".join(f"{k}: {v}" for k, v in refused.items()))
