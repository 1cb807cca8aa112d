"""The open-loop generator of issue 15: prepared request bodies, several generator processes on one
clock, its own cost, a bounded cell, and the server's errors counted with its message.

The bodies are compared byte for byte with what tritonclient itself puts on the wire, captured by a
minimal HTTP and gRPC endpoint in this process (tritonclient is the reference, not our code). The
rest runs against the session's real tritonserver and real locust processes."""

from __future__ import annotations

import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import ClassVar

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2

import onnx_models
from python_models import write_slow_model
from tritonops.build import BuildOptions, build
from tritonops.client import (
    GRPC_INFER_METHOD,
    TritonClient,
    grpc_request_message,
    http_request_body,
    http_request_headers,
    infer_path,
)
from tritonops.perf.analyzer import prepare_samples
from tritonops.perf.inputs import Samples
from tritonops.perf.loadtest import (
    PROCESS_RATE,
    Phase,
    generator_cores,
    generator_cost,
    generator_processes,
    request_bodies,
    request_tensors,
    run_locust,
)
from tritonops.perf.poisson import ks_exponential
from tritonops.perf.target import ModelIO, Target, fetch_model_io, http_alive

INPUTS = {
    "IMAGE": np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4) / 7,
    "IDS": np.array([[1, -2, 3]], dtype=np.int64).repeat(2, axis=0),
    "TEXT": np.array([[b"hello"], ["wörld".encode()]], dtype=np.object_),
    "HALF": np.array([[0.5, -1.25]], dtype=np.float16).repeat(2, axis=0),
}
TYPES = {"IMAGE": "FP32", "IDS": "INT64", "TEXT": "BYTES", "HALF": "FP16"}
OUTPUTS = ["OUT0", "OUT1"]


# ------------------------------------------------------------------------------ what tritonclient sends
class _Capture(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Capture.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        reply = json.dumps({"model_name": "m", "outputs": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_capture() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Capture.seen = []
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("binary", [False, True])
def test_http_body_and_headers_are_what_tritonclient_sends(http_capture, binary):
    client = httpclient.InferenceServerClient(http_capture)
    try:
        tensors = []
        for name, a in INPUTS.items():
            t = httpclient.InferInput(name, list(a.shape), TYPES[name])
            t.set_data_from_numpy(a, binary_data=binary)
            tensors.append(t)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS]
        client.infer("m", tensors, model_version="3", outputs=outs)
    finally:
        client.close()
    (path, headers, wire), = _Capture.seen
    body, header_len = http_request_body(INPUTS, OUTPUTS, binary=binary, types=TYPES)
    assert body == wire
    assert path == infer_path("m", "3") == "/v2/models/m/versions/3/infer"
    ours = {k.lower(): v for k, v in http_request_headers(header_len).items()}
    assert {k: v for k, v in headers.items() if k.startswith("inference-")} == ours
    assert (header_len is not None) == binary


def test_grpc_message_is_what_tritonclient_sends():
    seen: list[bytes] = []

    def handler(request: bytes, context: object) -> bytes:
        seen.append(request)
        return service_pb2.ModelInferResponse(model_name="m").SerializeToString()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    method = GRPC_INFER_METHOD.rsplit("/", 1)[1]
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {method: grpc.unary_unary_rpc_method_handler(handler)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        tensors = []
        for name, a in INPUTS.items():
            t = grpcclient.InferInput(name, list(a.shape), TYPES[name])
            t.set_data_from_numpy(a)
            tensors.append(t)
        client.infer("m", tensors, model_version="3", outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS])
        client.close()
    finally:
        server.stop(None)
    assert seen == [grpc_request_message("m", INPUTS, OUTPUTS, version="3", types=TYPES)]


# ------------------------------------------------------------------------------ against the real server
@pytest.fixture(scope="module")
def server(tmp_path_factory, triton_session):
    root = tmp_path_factory.mktemp("generator")
    repo = root / "repo"
    mlp = onnx_models.mlp(root / "src" / "mlp.onnx")
    build(BuildOptions(source=str(mlp), repository=repo, name="mlp", max_batch_size=8))
    build(BuildOptions(source=str(mlp), repository=repo, name="gone", max_batch_size=8))
    write_slow_model(repo, 0.1)  # 10 requests/s at most
    big = onnx_models.identity(root / "src" / "big.onnx", onnx_models.TensorProto.FLOAT, ["batch", 3, 64, 64])
    build(BuildOptions(source=str(big), repository=repo, name="big", max_batch_size=4))
    with triton_session.models(repo):
        yield triton_session.server


def target_of(server) -> Target:
    return Target(http_url=server.http_url, grpc_url=server.grpc_url, alive=lambda: http_alive(server.http_url))


def model_of(server, model: str) -> tuple[Target, ModelIO, Samples]:
    """The target, the served model's inputs and outputs, and generated samples for it."""
    target = target_of(server)
    io = fetch_model_io(target, model)
    return target, io, prepare_samples(io, None, ())


def served(server, model: str) -> int:
    with TritonClient(server.http_url, server.grpc_url) as c:
        return c.inference_counts(model)[0]


@pytest.mark.server
def test_prepared_bodies_are_answered_like_tritonclients_own_requests(server):
    """Request i stacks samples i, i+1 (cycling) for batch 2; its prepared body, sent as bytes the way
    the generator sends it, gets the answer tritonclient's own request for those tensors gets."""
    target = target_of(server)
    io = fetch_model_io(target, "mlp")
    name, out = io.inputs[0].name, io.outputs[0].name
    shape = prepare_samples(io, None, ()).items[0][name].shape
    samples = Samples(tuple({name: np.full(shape, float(k), np.float32)} for k in range(3)), "generated")
    requests = request_tensors(samples, io, batch_size=2)
    assert [r[name][:, 0].tolist() for r in requests] == [[0.0, 1.0], [1.0, 2.0], [2.0, 0.0]]
    with TritonClient(server.http_url, server.grpc_url) as c:
        expected = [c.infer("grpc", "mlp", r, [out])[out] for r in requests]
    for (body, header_len), want in zip(request_bodies(io, requests, "http-json"), expected, strict=True):
        req = urllib.request.Request(f"http://{server.http_url}{infer_path('mlp')}", data=body,
                                     headers=http_request_headers(header_len))
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc = json.loads(resp.read())
        got = np.asarray(doc["outputs"][0]["data"], np.float32).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    channel = grpc.insecure_channel(server.grpc_url)
    try:
        call = channel.unary_unary(GRPC_INFER_METHOD)
        for (body, _), want in zip(request_bodies(io, requests, "grpc"), expected, strict=True):
            reply = service_pb2.ModelInferResponse.FromString(call(body, timeout=30))
            got = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(want.shape)
            np.testing.assert_array_equal(got, want)
    finally:
        channel.close()
    binary = request_bodies(io, requests, "http-binary")
    assert all(h is not None for _, h in binary)


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http-binary", "grpc"])
def test_two_processes_merge_into_one_poisson_load(server, tmp_path, protocol):
    target, io, samples = model_of(server, "mlp")
    before = served(server, "mlp")
    (r,), interrupted = run_locust(target, io, samples, protocol, [Phase(120.0, 4.0, seed=3)], tmp_path,
                                   processes=2)
    assert not interrupted and r.outcome in ("kept-up", "generator-saturated")
    # every request the two processes sent reached the server; besides them: 2 warm-up requests per
    # process and the 3 that measure the payload sizes (one per protocol)
    assert r.errors == {} and r.ok == r.sent > 0.9 * r.scheduled > 300
    assert served(server, "mlp") - before == r.ok + 2 * 2 + 3
    doc = json.loads((tmp_path / "records.json").read_text())
    assert doc["meta"]["processes"] == 2 and len(doc["records"]) == r.scheduled
    sends = [rec[1] for rec in doc["records"] if rec[1] >= 0]
    assert sends == sorted(sends) and sends[0] >= 0 and sends[-1] < 4.0 + 0.5
    assert not list(tmp_path.glob("records.*.json")) and (tmp_path / "locust.1.log").exists()
    # the superposition of two independent Poisson streams at λ/2 is Poisson λ: the merged schedule's
    # gaps pass the KS test (two streams drawing the same arrivals would fail it), and so do the
    # actual sends whenever the generator kept that schedule
    scheduled = np.sort([rec[0] for rec in doc["records"]])
    assert ks_exponential(np.diff(scheduled), 120.0).passed
    g = r.generator
    if not g.saturated:
        assert r.send_gaps_ks["passed"], r.send_gaps_ks
    assert g.processes == 2 and r.settings["processes"] == 2
    assert g.cpu_ms_per_request is not None and 0 < g.cpu_ms_per_request < 1000 * 4 * 2 / r.sent
    assert g.lag_p99_ms == r.lag_ms["p99"] >= 0
    assert g.sent_vs_scheduled == r.sent / r.scheduled  # nothing was refused at max_inflight
    assert g.busy is not None and g.busy == pytest.approx(g.cpu_ms_per_request * r.sent / 1000 / (4.0 * 2))
    assert g.saturated == (g.sent_vs_scheduled < 0.99 or (g.lag_p99_ms > 10.0 and g.busy >= 0.7))
    row = (tmp_path / "loadtest.csv").read_text().splitlines()
    header, values = row[0].split(","), row[1].split(",")
    assert dict(zip(header, values, strict=True))["generator_processes"] == "2"


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http-binary", "grpc"])
def test_requests_and_responses_larger_than_a_read_and_an_http2_window_all_succeed(server, tmp_path, protocol):
    """49 KB each way per request (FP32 [1, 3, 64, 64] through Identity): the HTTP response spans reads;
    gRPC's request exceeds HTTP/2's default frame (16 KB) and, with a few in flight, the server's initial
    window (64 KB), so DATA goes out in frames the sender's flow control releases."""
    target, io, samples = model_of(server, "big")
    before = served(server, "big")
    (r,), interrupted = run_locust(target, io, samples, protocol, [Phase(40.0, 2.0, seed=5)], tmp_path,
                                   processes=1)
    assert not interrupted and r.errors == {} and r.ok == r.sent > 40
    assert served(server, "big") - before == r.ok + 2 + 3  # 2 warm-up requests, 3 measuring the payload sizes
    received = json.loads((tmp_path / "records.json").read_text())["meta"]["response_bytes"]
    assert received >= r.ok * 3 * 64 * 64 * 4  # every response's tensor arrived in full, counted by the sender


@pytest.mark.server
def test_a_cell_that_cannot_drain_in_time_fell_behind_and_the_next_runs(server, tmp_path):
    """30 req/s on a model that serves 10/s, with 1 s to drain: the first cell is left with
    requests in flight (fell behind, with what it achieved); the run goes on to the second."""
    target, io, samples = model_of(server, "slow")
    results, interrupted = run_locust(
        target, io, samples, "http-binary",
        [Phase(30.0, 2.0, seed=1, subdir="a"), Phase(2.0, 2.0, seed=2, subdir="b")], tmp_path,
        cell_timeout_s=3.0, processes=1)
    assert not interrupted
    first, second = results
    assert first.fell_behind and not first.interrupted
    # the server was slow, not the generator: blamed on it unless the generator itself lagged too
    assert first.outcome == ("generator-saturated" if first.generator.saturated else "fell-behind")
    assert first.settings["unfinished"] > 0 and first.settings["drain_timeout_s"] == pytest.approx(1.0)
    assert 0 < first.ok < first.sent and first.duration_s == 2.0
    # the requests left in flight are counted, as unanswered
    assert first.errors == {"Unfinished: no response within the cell's time bound": first.settings["unfinished"]}
    assert first.generator.sent_vs_scheduled == first.sent / first.scheduled
    assert second.offered_rate == 2.0 and second.scheduled > 0 and not second.interrupted
    assert json.loads((tmp_path / "b" / "loadtest.json").read_text())["outcome"] == second.outcome != "interrupted"


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http-json", "grpc"])
def test_a_model_unloaded_mid_run_is_counted_with_the_servers_message(server, tmp_path, protocol):
    target, io, samples = model_of(server, "gone")
    start = served(server, "gone")

    def unload_after_some() -> None:
        deadline = time.monotonic() + 60
        while served(server, "gone") < start + 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        with TritonClient(server.http_url, server.grpc_url) as c:
            c.unload_model("gone")

    unloader = threading.Thread(target=unload_after_some)
    unloader.start()
    try:
        (r,), _ = run_locust(target, io, samples, protocol, [Phase(50.0, 4.0, seed=4)], tmp_path, processes=1)
    finally:
        unloader.join()
        with TritonClient(server.http_url, server.grpc_url) as c:
            c.load_model("gone")
    # 40 served before the unload, 5 of them not measured (2 warm-up, 3 measuring the payload sizes)
    assert r.ok >= 35 and r.error_count > 0 and r.outcome in ("fell-behind", "generator-saturated")
    prefix = "HTTP 4" if protocol == "http-json" else "gRPC "
    # the server's own words, e.g. "Request for unknown model: 'gone' has no available versions"
    assert all(k.startswith(prefix) and "'gone'" in k for k in r.errors), r.errors


def test_request_tensors_of_a_model_that_does_not_batch_are_the_samples():
    io = ModelIO("m", "", "onnxruntime_onnx", 0, (), (), config=mc.ModelConfig())
    items = ({"X": np.ones((2, 2), np.float32)}, {"X": np.zeros((2, 2), np.float32)})
    requests = request_tensors(Samples(items, "generated"), io, batch_size=4)
    assert [r["X"].shape for r in requests] == [(2, 2), (2, 2)] and requests[1]["X"].sum() == 0


def test_process_count_follows_the_rate_up_to_the_cores_left_after_a_local_server():
    cpus = len(os.sched_getaffinity(0))
    assert generator_cores("127.0.0.1:8000") == generator_cores("localhost:8000") == max(1, cpus - 1)
    assert generator_cores("10.1.2.3:8000") == cpus
    assert generator_processes(10.0, "grpc", cores=4) == 1
    assert generator_processes(2500.0, "http-binary", cores=4) == math.ceil(2500 / PROCESS_RATE["http-binary"])
    assert generator_processes(9000.0, "grpc", cores=1) == 1


def test_generator_cost_counts_refusals_at_max_inflight_as_the_servers_backlog():
    # 100 arrivals: 90 sent, 8 refused because 256 requests were outstanding, 2 never sent in time
    summary = {"scheduled": 100, "sent": 90, "errors": {"ClientSaturated": 8}, "lag_ms": {"p99": 4.0}}
    g = generator_cost(summary, cpu_s=0.045, processes=2, window_s=10.0)
    assert (g.processes, g.sent_vs_scheduled, g.lag_p99_ms) == (2, 0.98, 4.0)
    assert g.cpu_ms_per_request == pytest.approx(0.5) and g.saturated  # 0.98 < 0.99
    assert g.busy == pytest.approx(0.045 / 20)
    kept = generator_cost({**summary, "sent": 92}, cpu_s=0.0, processes=1, window_s=10.0)
    assert not kept.saturated and kept.sent_vs_scheduled == 1.0


def test_late_sends_are_the_generators_own_only_when_it_was_busy():
    summary = {"scheduled": 100, "sent": 100, "errors": {}, "lag_ms": {"p99": 10.5}}
    busy = generator_cost(summary, cpu_s=8.0, processes=1, window_s=10.0)  # 0.8 of a core
    assert busy.saturated and busy.busy == pytest.approx(0.8)
    # the same lag with the generator mostly idle: the machine (the server) made the sends late
    idle = generator_cost(summary, cpu_s=3.0, processes=1, window_s=10.0)
    assert not idle.saturated and idle.busy == pytest.approx(0.3)
    # two processes at 0.8 of a core each are busy; at 0.4 each they are not
    assert generator_cost(summary, cpu_s=16.0, processes=2, window_s=10.0).saturated
    assert not generator_cost(summary, cpu_s=8.0, processes=2, window_s=10.0).saturated
    # sends that never went out are the generator's, busy or not
    assert generator_cost({**summary, "sent": 90}, cpu_s=0.0, processes=1, window_s=10.0).saturated


@pytest.mark.server
def test_ctrl_c_reaches_every_generator_process_and_keeps_what_they_measured(server, tmp_path):
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    main = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "sys.argv[0] = 'tritonops'; runpy.run_module('tritonops', run_name='__main__')")
    proc = subprocess.Popen(
        [sys.executable, "-c", main, "loadtest", "mlp", "--url", server.http_url, "--grpc-url", server.grpc_url,
         "--rate", "60", "--duration", "60", "--processes", "2", "--output-dir", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = served(server, "mlp")
    for _ in range(600):  # interrupt once the load has really started
        if served(server, "mlp") >= start + 60 or proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    doc = json.loads((tmp_path / "loadtest.json").read_text())
    assert doc["interrupted"] is True and doc["outcome"] == "interrupted" and doc["generator"]["processes"] == 2
    assert doc["ok"] > 0 and doc["duration_s"] < 30
    records = json.loads((tmp_path / "records.json").read_text())
    assert records["meta"]["processes"] == 2 and len(records["records"]) == doc["scheduled"]
