"""Decoupled Python models (zero or many responses per request) validated and measured against the
session server: over gRPC streaming every response up to the final flag is checked against the config
and against the same step function run in-process; HTTP and unary gRPC skip with Triton's reason."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import decoupled_models
from tritonops.check import check_repository
from tritonops.perf.analyzer import PerfOptions, sweep
from tritonops.perf.target import Target, http_alive
from tritonops.validate import ValidateOptions, ValidationReport, validate

pytestmark = pytest.mark.server
FAST_OPTS = {"measurement_interval_ms": 300, "stability_percentage": 100.0, "max_trials": 4}


@dataclass
class Served:
    repository: Path  # what the server serves
    good: Path  # what the repository should hold: "counter_wrong" differs from it
    http_url: str
    grpc_url: str

    def options(self, repository: Path | None = None, **kw) -> ValidateOptions:
        return ValidateOptions(http_url=self.http_url, grpc_url=self.grpc_url, metrics_url=None,
                               repository=repository or self.repository, **kw)


@pytest.fixture(scope="module")
def served(tmp_path_factory, triton_session):
    root = tmp_path_factory.mktemp("decoupled")
    repo = root / "repo"
    decoupled_models.write_model(repo, "counter")
    decoupled_models.write_model(repo, "counter_plain", step=False)
    decoupled_models.write_model(repo, "counter_wrong", offset=1)  # served off by one
    good = root / "good"
    decoupled_models.write_model(good, "counter_wrong")
    with triton_session.models(repo):
        server = triton_session.server
        yield Served(triton_session.repository, good, server.http_url, server.grpc_url)


def rows(report: ValidationReport, model: str, check: str) -> dict[str, tuple[str, str]]:
    return {r.protocol: (r.status, r.detail) for r in report.rows_for(model, check)}


def test_decoupled_models_pass_check(served):
    report = check_repository(served.repository)
    assert report.ok, [str(f) for f in report.findings]


def test_a_decoupled_step_validates_over_grpc_streaming_with_its_saved_inputs(served):
    report = validate(served.options(models=("counter",)))
    assert report.ok, [r.line() for r in report.failures]
    skips = rows(report, "counter", "infer")
    assert set(skips) == {"http-json", "http-binary", "grpc"}
    assert all(s == "skip" and "gRPC streaming only" in d for s, d in skips.values())
    # N = 3 from the tritonops_examples.npz beside config.pbtxt: three responses, then the final flag.
    assert rows(report, "counter", "infer b=-") == {
        "grpc-stream": ("pass", "3 responses (OUT [1]), then the final flag")}
    status, detail = rows(report, "counter", "reference b=-")["grpc-stream"]
    assert status == "pass" and detail.startswith("3 responses equal to count() from "), detail


def test_zero_responses_are_a_valid_answer(served, tmp_path):
    inputs = tmp_path / "zero.npz"
    np.savez(inputs, N=np.array([[0]], dtype=np.int32))
    report = validate(served.options(models=("counter",), inputs=inputs, protocols=("grpc",)))
    assert report.ok, [r.line() for r in report.failures]
    assert rows(report, "counter", "infer b=-")["grpc-stream"] == ("pass", "0 responses, then the final flag")
    assert rows(report, "counter", "reference b=-")["grpc-stream"][0] == "pass"


def test_a_plain_decoupled_model_is_checked_against_its_config_only(served):
    report = validate(served.options(models=("counter_plain",), protocols=("grpc-stream",)))
    assert report.ok, [r.line() for r in report.failures]
    assert rows(report, "counter_plain", "infer b=-")["grpc-stream"][0] == "pass"
    assert rows(report, "counter_plain", "reference b=-") == {
        "-": ("skip", "no in-process run: the model is not a tritonops python step")}


def test_a_served_model_that_differs_from_the_repository_is_a_failed_row(served):
    report = validate(served.options(repository=served.good, models=("counter_wrong",)))
    assert not report.ok
    status, detail = rows(report, "counter_wrong", "reference b=-")["grpc-stream"]
    assert status == "fail"
    assert "response 1 of 3: output 'OUT': 1 of 1 values differ" in detail, detail
    assert [r.check for r in report.failures] == ["reference b=-"]


def test_cli_validate_shows_the_stream_column(served, cli):
    code, out, err = cli("validate", served.repository, "--url", served.http_url, "--grpc-port",
                         served.grpc_url.rsplit(":", 1)[1], "--model", "counter")
    assert code == 0, out + err
    assert "gRPC stream" in out and "then the final flag" in out


def test_perf_streams_a_decoupled_model_with_its_saved_samples(served, tmp_path):
    target = Target(http_url=served.http_url, grpc_url=served.grpc_url, alive=lambda: http_alive(served.http_url),
                    repository=served.repository)
    res = sweep(PerfOptions(model="counter", output_dir=tmp_path / "out", protocol="grpc", concurrency=(1,),
                            **FAST_OPTS), target)
    assert [r.status for r in res.rows] == ["ok"]
    assert res.rows[0].throughput and res.rows[0].throughput > 0
    assert "--streaming" in res.commands[0]
    assert res.input_source.endswith("counter/tritonops_examples.npz")


def test_perf_refuses_http_for_a_decoupled_model_in_one_line(served, cli, tmp_path):
    code, _, err = cli("perf", "counter", "--url", served.http_url, "--output-dir", tmp_path / "out")
    assert code not in (0, 70), err
    assert "model 'counter' is decoupled: Triton serves it over gRPC streaming only, not HTTP" in err
    assert "--protocol grpc" in err
    assert "Traceback" not in err
    code, _, err = cli("perf", "counter", "--url", served.http_url, "--streaming", "--output-dir", tmp_path / "o2")
    assert code not in (0, 70) and "--streaming needs --protocol grpc" in err, err
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
