"""The contract of --json: every command prints one envelope with the same keys (schema, command, status,
exit_code, data, errors), also when it fails. Commands that need no server run for real; those that need
one are checked on the envelope builder with their real result types. Errors are run for real for every
command: each stops on a usage error before it would reach a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from check_fixtures import make_repository
from tritonops.deploy.rollout import DeployFailed, ModelRollout, RolloutResult
from tritonops.envelope import SCHEMAS, Envelope, ErrorInfo, error_envelope, result_envelope
from tritonops.errors import UsageError, ValidationFailed
from tritonops.perf.analyzer import PerfResult
from tritonops.perf.config_study import ConfigStudyResult
from tritonops.perf.loadtest import LoadtestResult
from tritonops.perf.study import ProtocolStudyResult
from tritonops.validate import CheckResult, ValidationReport

KEYS = ["schema", "command", "status", "exit_code", "data", "errors"]
ERROR_KEYS = ["type", "message", "hint"]


def envelope_of(out: str, command: str, status: str, exit_code: int, schema: str | None = None) -> dict:
    """Parse stdout as exactly one envelope and check its keys and fixed fields."""
    payload = json.loads(out)  # one document: json.loads refuses trailing data
    assert list(payload) == KEYS
    assert payload["command"] == command
    assert payload["schema"] == (schema or SCHEMAS[command])
    assert payload["status"] == status and payload["exit_code"] == exit_code
    for error in payload["errors"]:
        assert list(error) == ERROR_KEYS
    if status == "error":
        assert payload["data"] is None and payload["errors"]
    else:
        assert isinstance(payload["data"], dict) and "schema" not in payload["data"]
    return payload


# ---------------------------------------------------------------------------- commands run for real
def test_build(cli, mlp_onnx, tmp_path):
    code, out, err = cli("build", mlp_onnx, "--repo", tmp_path / "repo", "--json")
    assert code == 0, err
    payload = envelope_of(out, "build", "ok", 0)
    assert payload["errors"] == []
    (model,) = payload["data"]["models"]
    assert model["name"] == "mlp" and model["verification"]["ok"] is True


def test_check_ok_and_failed(cli, mlp_onnx, tmp_path):
    code, _, err = cli("build", mlp_onnx, "--repo", tmp_path / "repo")
    assert code == 0, err
    code, out, _ = cli("check", tmp_path / "repo", "--json")
    assert code == 0
    assert envelope_of(out, "check", "ok", 0)["data"]["models"] == ["mlp"]
    code, out, _ = cli("check", make_repository(tmp_path / "bad"), "--json")
    assert code == 1
    payload = envelope_of(out, "check", "failed", 1)
    assert payload["data"]["ok"] is False and payload["data"]["findings"]
    assert payload["errors"] == []  # the findings say what is wrong, as on the terminal


def test_inspect(cli, mlp_onnx):
    code, out, err = cli("inspect", mlp_onnx, "--json")
    assert code == 0, err
    data = envelope_of(out, "inspect", "ok", 0)["data"]
    assert data["batchable"] is True
    assert data["inputs"] == [{"name": "x", "dtype": "FP32", "shape": ["batch", 4]}]


def test_doctor(cli):
    code, out, _ = cli("doctor", "--json")
    payload = envelope_of(out, "doctor", "ok" if code == 0 else "failed", code)
    assert {c["name"] for c in payload["data"]["checks"]} >= {"python", "tritonserver", "perf_analyzer"}
    assert all(list(c) == ["name", "ok", "detail", "optional"] for c in payload["data"]["checks"])


def test_deploy_manifests_and_status(cli, mlp_onnx, tmp_path):
    code, _, err = cli("build", mlp_onnx, "--repo", tmp_path / "repo")
    assert code == 0, err
    code, out, err = cli("deploy", tmp_path / "repo", "--target", "compose", "--image", "img:1",
                         "--out", tmp_path / "d", "--json")
    assert code == 0, err
    assert envelope_of(out, "deploy", "ok", 0, SCHEMAS["deploy --target"])["data"]["target"] == "compose"
    # no server listens on port 9 (discard): status still answers from the files and says so
    code, out, err = cli("deploy", "--status", "--to", tmp_path / "repo", "--url", "127.0.0.1:9", "--json")
    assert code == 0, err
    data = envelope_of(out, "deploy", "ok", 0, SCHEMAS["deploy --status"])["data"]
    assert data["models"][0]["name"] == "mlp" and data["server_error"]


# ------------------------------------------------------------------------------ errors, for real
@pytest.mark.parametrize(("args", "command", "schema", "message"), [
    (["build", "nope.onnx"], "build", None, "model file 'nope.onnx' does not exist"),
    (["check", "nope"], "check", None, "repository 'nope' does not exist"),
    (["inspect", "nope.onnx"], "inspect", None, None),
    (["validate", "--url", "https://h"], "validate", None, "https:// is not supported"),
    (["perf", "m", "--concurrency", "x"], "perf", None, None),
    (["loadtest", "m", "--rate", "-1"], "loadtest", None, None),
    (["study", "protocols", "m", "--rates", "0"], "study protocols", None, "--rates '0' needs positive values"),
    (["study", "config", "m", "--concurrency", "a,b"], "study config", None, "cannot parse --concurrency 'a,b'"),
    (["deploy", "repo"], "deploy", SCHEMAS["deploy --target"], "nothing to do"),
    (["deploy", "--status"], "deploy", SCHEMAS["deploy --status"], "--status needs --to"),
    (["deploy", "--rollback", "--url", "a://b", "--to", "t"], "deploy", SCHEMAS["deploy --rollback"],
     "--url 'a://b' includes a scheme"),
    (["deploy", "src", "--to", "t", "--url", "h:x"], "deploy", SCHEMAS["deploy --to"], "cannot parse --url 'h:x'"),
])
def test_error_is_an_envelope(cli, tmp_path, monkeypatch, args, command, schema, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*args, "--json")
    assert code != 0
    payload = envelope_of(out, command, "error", code, schema)
    (error,) = payload["errors"]
    assert error["hint"]
    if message is not None:
        assert error["message"] == message
    # stderr shows the same error as without --json
    assert err.splitlines()[0] == f"error: {error['message']}"
    assert err.splitlines()[1] == f"hint: {error['hint']}"


def test_internal_error_is_an_envelope_and_its_traceback_is_in_the_debug_log(cli, tmp_path, monkeypatch):
    import tritonops.cli.build as commands

    def broken(repository: Path) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(commands, "check_repository", broken)
    log = tmp_path / "debug.log"
    code, out, err = cli("--debug-log", log, "check", tmp_path, "--json")
    assert code == 70
    (error,) = envelope_of(out, "check", "error", 70)["errors"]
    assert error["type"] == "RuntimeError" and error["message"] == "internal error: RuntimeError: a bug"
    assert str(log) in error["hint"]
    assert err.splitlines()[0] == "error: internal error: RuntimeError: a bug"
    assert err.splitlines()[1] == f"hint: the traceback is in {log}; please report it (--debug prints it here)"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: a bug" in text


def test_without_json_stdout_has_no_envelope(cli, tmp_path):
    code, out, _ = cli("check", tmp_path / "nope")
    assert code == 2 and out == ""


# ------------------------------------------------------ server-backed results, on the envelope builder
def _validation_report(*rows: CheckResult) -> ValidationReport:
    return ValidationReport(http_url="h:8000", grpc_url="h:8001", server_version="2.51.0", repository=None,
                            models=("m",), rows=rows, atol=1e-4, rtol=1e-3)


def _rollout(ok: bool) -> RolloutResult:
    return RolloutResult(action="deploy", ok=ok, target=Path("t"), source=Path("s"), server="h:8000",
                         models=(ModelRollout("m", "deployed" if ok else "reverted", 1, 2),),
                         reason=None if ok else "it broke", validation=None, record=Path("t/r.jsonl"),
                         started="2024-01-01T00:00:00Z", seconds=1.0)


def _results() -> dict[str, object]:
    tmp = Path("out")
    return {
        "validate": _validation_report(CheckResult("m", "ready", "http", "pass")),
        "perf": PerfResult(model="m", protocol="http", http_format="binary", mode="concurrency", target="h:8000",
                           rows=(), output_dir=tmp, csv_path=tmp / "perf.csv", json_path=tmp / "perf.json",
                           input_source="random", request_tensor_bytes=16, commands=()),
        "loadtest": LoadtestResult(model="m", protocol="grpc", offered_rate=10.0, duration_s=1.0, batch_size=1,
                                   scheduled=10, sent=10, ok=10, errors={}, achieved_rate=10.0,
                                   scheduled_rate=10.0, sent_rate=10.0, latency_ms={}, lag_ms={},
                                   send_gaps_ks={}, request_bytes=43, response_bytes=40, output_dir=tmp,
                                   files={}, command=()),
        "study protocols": ProtocolStudyResult(model="m", cells=(), runs=(), run_repeat=(), concurrency={},
                                               payloads={}, findings=(), output_dir=tmp, files={}),
        "study config": ConfigStudyResult(model="m", variants=(), points=(), rows={}, peak={}, peak_ratio={},
                                          p99_ratio={}, budget_ms=None, budget_throughput={}, budget_ratio={},
                                          findings=(), output_dir=tmp, files={}),
        "deploy --to": _rollout(True),
        "deploy --rollback": _rollout(True),
    }


@pytest.mark.parametrize("key", list(_results()))
def test_result_envelope_of_server_backed_results(key):
    result = _results()[key]
    command = key.split(" --")[0]
    envelope = result_envelope(command, result)
    assert envelope.schema == SCHEMAS[key]
    payload = envelope_of(envelope.to_json(), command, "ok", 0, SCHEMAS[key])
    assert payload["data"] == {k: v for k, v in json.loads(json.dumps(result.to_dict(), default=str)).items()
                               if k != "schema"}


def test_failed_validation_carries_its_error():
    report = _validation_report(CheckResult("m", "infer b=1", "grpc", "fail", detail="wrong output", hint="fix it"))
    payload = envelope_of(result_envelope("validate", report, errors=(report.error(),)).to_json(),
                          "validate", "failed", ValidationFailed.exit_code)
    (error,) = payload["errors"]
    assert error["type"] == "ValidationFailed" and error["hint"] == "fix it"
    assert payload["data"]["ok"] is False


def test_failed_rollout_carries_its_result_and_error():
    result = _rollout(False)
    failed = DeployFailed("version 2 of 'm' failed to load", "see the server log", result)
    payload = envelope_of(result_envelope("deploy", result, errors=(failed,)).to_json(), "deploy", "failed", 7,
                          SCHEMAS["deploy --to"])
    assert payload["errors"] == [{"type": "DeployFailed", "message": "version 2 of 'm' failed to load",
                                  "hint": "see the server log"}]
    assert payload["data"]["models"][0]["status"] == "reverted"


def test_interrupted_result_is_failed_with_130():
    envelope = result_envelope("perf", _results()["perf"], exit_code=130,
                               errors=(ErrorInfo("Interrupted", "interrupted: 0 point(s) kept in out/perf.csv"),))
    payload = envelope_of(envelope.to_json(), "perf", "failed", 130)
    assert payload["errors"][0]["type"] == "Interrupted"


def test_error_envelope_and_its_invariants():
    payload = envelope_of(error_envelope("validate", UsageError("bad", "fix")).to_json(), "validate", "error", 2)
    assert payload["errors"] == [{"type": "UsageError", "message": "bad", "hint": "fix"}]
    with pytest.raises(ValueError, match="status 'ok' with exit code 1"):
        Envelope("s", "c", "ok", 1, {})
    with pytest.raises(ValueError, match="without data"):
        Envelope("s", "c", "failed", 1, None)
    with pytest.raises(ValueError, match="no JSON schema"):
        error_envelope("serve", UsageError("x"))


def test_every_schema_is_a_versioned_name():
    assert all(s.startswith("tritonops.") and s.rsplit("/", 1)[1].isdigit() for s in SCHEMAS.values())
