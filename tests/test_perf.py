"""perf, loadtest and the studies against a real tritonserver, with real perf_analyzer and locust runs.

Measurement windows are short (the numbers are not asserted, only their presence and consistency):
the file has to stay around two minutes on two cores."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

import onnx_models
from report_check import render_check
from tritonops.build import BuildOptions, build
from tritonops.errors import ServerError
from tritonops.perf.analyzer import PerfOptions, retry_windows, run_perf, sweep
from tritonops.perf.target import Target, http_alive
from tritonops.server import ServerOptions, TritonServer

pytestmark = pytest.mark.server
FAST = ("--measurement-interval", "300", "--stability-percentage", "100", "--max-trials", "4")
FAST_OPTS = {"measurement_interval_ms": 300, "stability_percentage": 100.0, "max_trials": 4}
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("perf")
    repo = root / "repo"
    mlp = onnx_models.mlp(root / "src" / "mlp.onnx")
    build(BuildOptions(source=str(mlp), repository=repo, name="mlp", max_batch_size=8))
    s = onnx_models.identity(root / "src" / "s.onnx", TensorProto.STRING, ["batch", 1])
    build(BuildOptions(source=str(s), repository=repo, name="strings", max_batch_size=8))
    h = onnx_models.identity(root / "src" / "h.onnx", TensorProto.FLOAT16, ["batch", "n"])
    build(BuildOptions(source=str(h), repository=repo, name="halfvar", max_batch_size=8))
    return repo


@pytest.fixture(scope="module")
def server(repo, triton_session):
    """The session's server with this module's models; the --serve tests start their own on repo."""
    with triton_session.models(repo):
        yield triton_session.server


def target_of(server: TritonServer) -> Target:
    return Target(http_url=server.http_url, grpc_url=server.grpc_url, alive=lambda: http_alive(server.http_url))


def served_requests(server: TritonServer, model: str) -> int:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = client.get_inference_statistics(model)["model_stats"][0]
        return int(stats["inference_stats"]["success"]["count"])
    finally:
        client.close()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.lifecycle
def test_perf_cli_starts_a_server_and_sweeps_concurrency_and_batch(cli, repo, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = cli("perf", "mlp", "--serve", repo, "--concurrency", "1:3:2", "--batch-size", "1",
                         "--batch-size", "4", *FAST, "--output-dir", out_dir)
    assert code == 0, err
    rows = read_csv(out_dir / "perf.csv")
    assert [(r["load"], r["batch_size"], r["status"]) for r in rows] == [
        ("1.0", "1", "ok"), ("3.0", "1", "ok"), ("1.0", "4", "ok"), ("3.0", "4", "ok")]
    for r in rows:
        assert float(r["throughput"]) > 0
        assert float(r["p50_us"]) <= float(r["p90_us"]) <= float(r["p99_us"])
        # Triton's own breakdown came through: the model ran and requests queued (>= 0)
        assert float(r["server_compute_infer_us"]) > 0 and float(r["server_queue_us"]) >= 0
    doc = json.loads((out_dir / "perf.json").read_text())
    assert doc["schema"] == "tritonops.perf/1" and doc["mode"] == "concurrency" and not doc["interrupted"]
    assert len(doc["commands"]) == 4 and all("-f" in c for c in doc["commands"])
    assert sorted(p.name for p in (out_dir / "raw").glob("*.csv")) == [
        "b1_c1.csv", "b1_c3.csv", "b4_c1.csv", "b4_c3.csv"]
    assert "mlp over http (binary)" in out and "results:" in out


def test_perf_request_rate_grpc_with_system_shared_memory(server, tmp_path):
    res = run_perf(PerfOptions(model="mlp", output_dir=tmp_path, url=server.http_url, grpc_url=server.grpc_url,
                               protocol="grpc", request_rate=(100.0, 200.0), distribution="poisson",
                               shared_memory="system", **FAST_OPTS))
    assert [(r.mode, r.load, r.protocol) for r in res.rows] == [("request_rate", 100.0, "grpc"),
                                                                ("request_rate", 200.0, "grpc")]
    assert all(r.status in ("ok", "unstable") for r in res.rows)
    assert any(r.status == "ok" and r.throughput for r in res.rows)
    cmd = res.commands[0]
    assert cmd[cmd.index("--request-distribution") + 1] == "poisson"
    assert cmd[cmd.index("--shared-memory") + 1] == "system"


def test_perf_with_text_samples_over_http_json(server, tmp_path):
    (tmp_path / "lines.txt").write_text("hello world\nan embedded sentence\nthird\n")
    res = sweep(PerfOptions(model="strings", output_dir=tmp_path / "o", url=server.http_url, http_format="json",
                            concurrency=(2,), samples=tmp_path / "lines.txt", **FAST_OPTS), target_of(server))
    assert res.rows[0].status == "ok" and res.input_source.endswith("lines.txt")
    data = json.loads((tmp_path / "o" / "input_data.json").read_text())
    assert [d["INPUT"]["content"] for d in data["data"]] == [["hello world"], ["an embedded sentence"], ["third"]]
    assert "--input-tensor-format" in res.commands[0]


def test_perf_variable_dims_become_fixed_shapes(server, tmp_path):
    res = sweep(PerfOptions(model="halfvar", output_dir=tmp_path, url=server.http_url, concurrency=(1,),
                            shapes=("INPUT:7",), batch_sizes=(2,), **FAST_OPTS), target_of(server))
    assert res.rows[0].status == "ok"
    cmd = res.commands[0]
    assert cmd[cmd.index("--shape") + 1] == "INPUT:7"
    assert res.request_tensor_bytes == 7 * 2  # FP16


def test_perf_ctrl_c_keeps_the_finished_points(server, tmp_path):
    def progress(msg: str) -> None:
        if msg.startswith("perf_analyzer 2/"):  # a real SIGINT while point 2 runs
            threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()

    res = sweep(PerfOptions(model="mlp", output_dir=tmp_path, url=server.http_url,
                            concurrency=(1, 2, 3), measurement_interval_ms=1000, stability_percentage=100,
                            max_trials=5), target_of(server), progress=progress)
    assert res.interrupted
    assert res.rows[0].status == "ok" and res.rows[0].load == 1.0
    assert len(res.rows) == 2 and res.rows[1].status in ("ok", "interrupted")
    assert len(read_csv(tmp_path / "perf.csv")) == 2
    assert json.loads((tmp_path / "perf.json").read_text())["interrupted"] is True


@pytest.mark.lifecycle
def test_perf_server_dying_mid_sweep_gives_a_clear_error_and_partial_results(repo, tmp_path):
    with TritonServer(ServerOptions(repository=repo)) as s:
        def progress(msg: str) -> None:
            if msg.startswith("perf_analyzer 2/"):
                os.kill(s.pid, signal.SIGKILL)

        target = Target(http_url=s.http_url, grpc_url=s.grpc_url, alive=lambda: s.running() and http_alive(s.http_url),
                        log_tail=lambda: s.log_tail(5))
        with pytest.raises(ServerError) as e:
            sweep(PerfOptions(model="mlp", output_dir=tmp_path, url=s.http_url, concurrency=(1, 2, 3), **FAST_OPTS),
                  target, progress=progress)
    assert e.value.message == "the server stopped responding during the perf run (1 of 3 points measured)"
    assert e.value.hint == f"partial results are in {tmp_path / 'perf.csv'}; see the server log below"
    rows = read_csv(tmp_path / "perf.csv")
    assert [(r["load"], r["status"]) for r in rows] == [("1.0", "ok"), ("2.0", "failed")]
    assert json.loads((tmp_path / "perf.json").read_text())["error"] == "the server died during point 2 of 3"


def test_perf_bad_model_name_is_one_line(cli, server):
    code, _, err = cli("perf", "nope", "--url", server.http_url)
    assert code == 2
    assert err.splitlines() == ["error: model 'nope' is not ready on " + server.http_url,
                                "hint: served models: halfvar, mlp, strings; check the name or the server log"]


@pytest.mark.parametrize("protocol", ["http-json", "http-binary", "grpc"])
def test_loadtest_open_loop_each_protocol(cli, server, tmp_path, protocol):
    code, out, err = cli("loadtest", "mlp", "--url", server.http_url, "--grpc-url", server.grpc_url,
                         "--rate", "80", "--duration", "2", "--protocol", protocol, "--output-dir", tmp_path, "--json")
    assert code == 0, err
    payload = json.loads(out)
    doc = payload["data"]
    assert payload["schema"] == "tritonops.loadtest/1" and doc["protocol"] == protocol
    assert doc["errors"] == {} and doc["ok"] == doc["scheduled"] > 50
    assert 0 < doc["achieved_rate"] <= doc["scheduled_rate"] * 1.001
    assert set(doc["latency_ms"]) == {"p50", "p90", "p95", "p99", "mean", "max"}
    assert doc["latency_ms"]["p50"] <= doc["latency_ms"]["p99"]
    # the encodings differ on the wire: JSON text > binary extension > protobuf for 4 floats
    sizes = {"http-json": 205, "http-binary": 169, "grpc": 43}
    assert doc["request_bytes"] == sizes[protocol]
    assert "locust" in (tmp_path / "locust.html").read_text().lower()
    summary = read_csv(tmp_path / "loadtest.csv")
    assert summary[0]["protocol"] == protocol and int(summary[0]["ok"]) == doc["ok"]
    assert (tmp_path / "locust_stats.csv").exists()
    records = json.loads((tmp_path / "records.json").read_text())["records"]
    assert len(records) == doc["scheduled"]
    sends = np.array([r[1] for r in records])
    assert np.all(sends >= 0) and sends.max() < 2.0 + 0.5  # sent within the bounded window


def test_loadtest_ctrl_c_keeps_partial_results(server, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    # SIGINT may be ignored when the test runner itself runs in the background: restore Python's handler.
    main = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "sys.argv[0] = 'tritonops'; runpy.run_module('tritonops', run_name='__main__')")
    proc = subprocess.Popen(
        [sys.executable, "-c", main, "loadtest", "mlp", "--url", server.http_url, "--grpc-url",
         server.grpc_url, "--rate", "50", "--duration", "60", "--output-dir", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Interrupt once the load has really started: the server has counted 50 more requests.
    start = served_requests(server, "mlp")
    for _ in range(600):
        if served_requests(server, "mlp") >= start + 50 or proc.poll() is not None:
            break
        threading.Event().wait(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    doc = json.loads((tmp_path / "loadtest.json").read_text())
    assert doc["interrupted"] is True and doc["ok"] > 0 and doc["duration_s"] < 30
    assert "interrupted:" in err and "requests measured" in err


@pytest.mark.lifecycle
def test_study_config_compares_naive_and_generated(cli, repo, tmp_path):
    out_dir = tmp_path / "cfg"
    code, out, err = cli("study", "config", "mlp", "--serve", repo, "--variant", "generated", "--concurrency", "1,4",
                         "--repeats", "1", "--measurement-interval", "300", "--stability-percentage", "100",
                         "--p99-budget", "1000", "--output-dir", out_dir, "--json")
    assert code == 0, err
    payload = json.loads(out)
    doc = payload["data"]
    assert payload["schema"] == "tritonops.study.config/1"
    assert [v["name"] for v in doc["variants"]] == ["naive", "generated"]
    naive_cfg, generated_cfg = (v["config"] for v in doc["variants"])
    assert "dynamic_batching" not in naive_cfg and "dynamic_batching" in generated_cfg
    # the variants were served under their own names, versions linked to the original model files
    staged = out_dir / "repository"
    assert sorted(p.name for p in staged.iterdir()) == ["mlp__generated", "mlp__naive"]
    assert (staged / "mlp__naive" / "1").resolve() == (repo / "mlp" / "1").resolve()
    assert 'name: "mlp__naive"' in (staged / "mlp__naive" / "config.pbtxt").read_text()
    assert sorted((p["variant"], p["concurrency"]) for p in doc["points"]) == [
        ("generated", 1), ("generated", 4), ("naive", 1), ("naive", 4)]
    assert doc["peak_ratio_vs_naive"]["naive"] == 1.0
    assert doc["peak_ratio_vs_naive"]["generated"] == pytest.approx(
        doc["peak_throughput"]["generated"] / doc["peak_throughput"]["naive"])
    assert set(doc["throughput_within_budget"]) == {"naive", "generated"}
    assert any(f.startswith("The generated config reaches") for f in doc["findings"])
    plots = render_check(out_dir / "report.html", tmp_path)
    assert len(plots) == 4 and all(p["marks"] > 0 and p["drawn"] == p["marks"] for p in plots)


# ---------------------------------------------------------------- issue 14, items 6 and 15


def test_unstable_point_is_measured_again_with_longer_windows(server, tmp_path):
    """Item 15: perf_analyzer's 'no stable measurement' (exit 2) is retried with a doubled window, up
    to a bound, before the point counts as unstable. A 0.001 % stability bound cannot be met, so every
    window is tried: the point's command is the last, longest one, the row says what was tried."""
    res = sweep(PerfOptions(model="mlp", output_dir=tmp_path, url=server.http_url, concurrency=(1,),
                            measurement_interval_ms=100, stability_percentage=0.001, max_trials=3),
                target_of(server))
    assert retry_windows(100) == (100, 200, 400)
    (cmd,) = res.commands
    assert cmd[cmd.index("--measurement-interval") + 1] == "400"
    (row,) = res.rows
    assert row.status == "unstable"
    assert row.note == ("no stable measurement, also with a 400 ms window; raise --stability-percentage "
                        "or lower the load")


def test_retry_windows_are_bounded():
    assert retry_windows(5000) == (5000, 10000, 20000)
    assert retry_windows(20000) == (20000,)  # 40 s is beyond the bound
    assert retry_windows(60000) == (60000,)


@pytest.mark.parametrize(("value", "message"), [
    ("nan", "--rate nan is not a finite number"),
    ("inf", "--rate inf is not a finite number"),
    ("1e9", "--rate 1e+09 is above the maximum 10000"),
    ("0", "--rate 0 is not above 0"),
])
def test_loadtest_rate_must_be_finite_and_bounded(cli, tmp_path, value, message):
    """Item 6: refused at parse time, before a server or locust starts and before anything is written."""
    code, out, err = cli("loadtest", "mlp", "--rate", value, "--url", "127.0.0.1:1",
                         "--output-dir", tmp_path / "out")
    assert code == 2 and out == ""
    assert err.splitlines() == [f"error: {message}", "hint: use --rate N with N > 0 and <= 10000"]
    assert not (tmp_path / "out").exists()


def test_loadtest_library_refuses_the_same_rates():
    from tritonops.errors import UsageError
    from tritonops.perf.loadtest import LoadtestOptions

    for rate in (float("nan"), float("inf"), 1e9, -1.0):
        with pytest.raises(UsageError, match=r"^--rate "):
            LoadtestOptions(model="m", output_dir=Path("o"), rate=rate, url="127.0.0.1:1")
    with pytest.raises(UsageError, match=r"^--duration nan is not a finite number$"):
        LoadtestOptions(model="m", output_dir=Path("o"), rate=10, duration_s=float("nan"), url="127.0.0.1:1")

