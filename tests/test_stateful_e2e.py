"""Issue 13's promise end to end, through the command line: the same stateful ONNX model, once built by
``tritonops build`` with sequence options and once with a hand-written production config, passes
``check``, loads in the real server, passes ``validate`` with two interleaved sequences over HTTP, gRPC and
gRPC streaming (every step against the in-process run), and ``perf`` measures it with sequences."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import stateful_models

pytestmark = pytest.mark.server

PROTOCOLS = {"http-json", "http-binary", "grpc", "grpc-stream"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stateful_e2e")
    repo = root / "repo"
    # The hand-written production config (the pattern of Triton's documentation), beside its model file.
    stateful_models.write_model(repo, stateful_models.stateful_config("acc_handwritten", queue_delay_us=500))
    shutil.copy(repo / "acc_handwritten" / "1" / "model.onnx", root / "acc.onnx")
    return repo


def test_built_and_handwritten_stateful_models_check_serve_validate_and_perf(repo, triton_session, cli, tmp_path):
    source = repo.parent / "acc.onnx"
    code, _, err = cli("build", source, "--repo", repo, "--name", "acc_built", "--sequence", "direct",
                       "--control", "START=START", "--control", "READY=READY", "--state", "STATE_IN:STATE_OUT",
                       "--max-queue-delay-us", "500")
    assert code == 0, err
    code, out, err = cli("check", repo)
    assert code == 0, out + err
    assert "2 of 2 models OK" in out

    with triton_session.models(repo):
        server = triton_session.server
        grpc_port = server.grpc_url.rsplit(":", 1)[1]
        for model in ("acc_built", "acc_handwritten"):
            code, out, err = cli("validate", repo, "--url", server.http_url, "--grpc-port", grpc_port,
                                 "--model", model, "--json")
            assert code == 0, out + err
            rows = [r for r in json.loads(out)["data"]["rows"] if r["model"] == model]
            for check in ("infer seq", "reference seq"):
                passed = {r["protocol"] for r in rows if r["check"] == check and r["status"] == "pass"}
                assert passed == PROTOCOLS, (model, check, rows)
            infer = [r for r in rows if r["check"] == "infer seq"]
            assert all("2 interleaved sequences" in r["detail"] for r in infer), infer

            code, out, err = cli("perf", model, "--url", server.http_url, "--grpc-url", server.grpc_url,
                                 "--protocol", "grpc", "--concurrency", "2", "--output-dir", tmp_path / model,
                                 # that sequences run is the point here, not a precise number on busy cores
                                 "--measurement-interval", "1000", "--stability-percentage", "100", "--json")
            assert code == 0, out + err
            data = json.loads(out)["data"]
            assert [r["status"] for r in data["rows"]] == ["ok"], [(r["status"], r["note"]) for r in data["rows"]]
            assert "--sequence-length" in data["commands"][0], data["commands"][0]
