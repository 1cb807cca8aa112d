"""Open-loop Poisson load on a Triton model, for locust (``tritonops loadtest`` runs it).

One user per locust process is the *dispatcher*: it walks a Poisson schedule of send times against a
monotonic clock and starts every request in its own greenlet at its time, whether or not earlier
requests have finished (open loop). Each record keeps the scheduled and the actual send time, so a
client that falls behind its schedule is visible (as schedule lag, and as arrivals it never sent).
Latency is measured from the actual send. Requests beyond ``max_inflight`` outstanding are not sent
and count as ``ClientSaturated`` errors.

The request bodies are built once, by the parent (``tritonops.perf.loadtest``), and arrive here as
bytes in ``requests_file``: this process never encodes a tensor, so every protocol and payload costs
the generator the same few steps. HTTP (JSON or binary) goes out through geventhttpclient (what
locust's FastHttpUser and tritonclient.http use; one connection per request in flight); gRPC through
a channel's ``unary_unary(GRPC_INFER_METHOD)`` with identity serializers, so the serialized
``ModelInferRequest`` goes out as it is and the response comes back undecoded
(``grpc.experimental.gevent.init_gevent()`` is called before any channel exists). A response counts
as a success on HTTP 200 / gRPC OK; its body is read in full (its size is counted) but decoded only
when it carries an error, to keep the server's message.

Several processes can share one load: process ``stream`` of ``streams`` walks its own Poisson
schedule at λ/streams with its own seed (their superposition is Poisson λ) and sends the requests
``stream, stream + streams, ...`` of the request sequence; the processes agree on a common start of
every phase through files in ``sync_dir``, so their records merge on one clock.

Configuration comes from the JSON file named by ``TRITONOPS_LOADTEST_CONFIG`` (written by
``tritonops.perf.loadtest``). Every request is also reported to locust (its CSV/HTML), and the raw
per-request records are written to each phase's ``records_path`` for exact percentiles, with the
process's CPU time (user + system, all threads) over the phase.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.monkey
import gevent.socket
import grpc
import numpy as np
from gevent.pool import Pool
from locust import User, task
from locust.exception import StopUser

try:  # gRPC must cooperate with gevent before the first channel is created.
    import grpc.experimental.gevent as grpc_gevent

    grpc_gevent.init_gevent()
except ImportError:  # pragma: no cover - grpc is part of tritonclient[grpc]
    grpc_gevent = None

# Imported after init_gevent(): tritonops.client imports tritonclient.grpc (channels come later, per user).
from tritonops.client import GRPC_INFER_METHOD, GRPC_MAX_MESSAGE_BYTES, TritonClient, message_of
from tritonops.perf.inputs import tensor_from_json
from tritonops.perf.poisson import PoissonSchedule
from tritonops.perf.wire import ClosedBeforeResponse, read_http_response
from tritonops.repository import write_atomic

CONFIG_ENV = "TRITONOPS_LOADTEST_CONFIG"
ERROR_TEXT = 120  # characters of a server's message kept per error kind
UNFINISHED = "Unfinished: no response within the cell's time bound"
SYNC_POLL_S = 0.005
SYNC_MARGIN_S = 0.05  # the common start lies this far after the last process got ready


def _config() -> dict[str, Any]:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} is not set; run this locustfile through `tritonops loadtest`")
    with open(path) as f:  # noqa: PTH123 - locust imports this module standalone
        return dict(json.load(f))


def load_bodies(cfg: dict[str, Any]) -> list[bytes]:
    """The request bodies the parent built, one per distinct request, in request order."""
    data = Path(cfg["requests_file"]).read_bytes()
    return [data[offset:offset + length] for offset, length, _ in cfg["requests"]]


def load_requests(cfg: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """Request tensors (for ``encode_per_request``): batch-1 samples stacked to ``batch`` (or whole
    requests for a non-batching model), the same requests the parent built bodies of."""
    with open(cfg["input_data"]) as f:  # noqa: PTH123
        doc = json.load(f)
    types = {i["name"]: i["datatype"] for i in cfg["inputs"]}
    samples = [{n: tensor_from_json(e, types[n]) for n, e in item.items()} for item in doc["data"]]
    batch = int(cfg.get("batch", 1))
    if not cfg.get("batched", True):
        return samples
    requests = []
    for i in range(len(samples)):
        group = [samples[(i + k) % len(samples)] for k in range(batch)]
        requests.append({n: np.stack([g[n] for g in group]) for n in group[0]})
    return requests


def http_error_text(body: bytes) -> str:
    """The server's message in an HTTP error response (``{"error": "..."}``), else the body's start."""
    try:
        doc = json.loads(body)
        text = str(doc.get("error", "")) if isinstance(doc, dict) else ""
    except ValueError:
        text = ""
    return text or body[:ERROR_TEXT].decode("utf-8", "replace")


def _host_port(url: str) -> tuple[str, int]:
    host, _, port = url.rpartition(":")
    return host.strip("[]"), int(port)


class HttpSender:
    """Prepared HTTP requests on keep-alive connections, one request in flight per connection.

    Each request (request line, headers, body) is one bytes object built at start-up, written with one
    ``sendall``; the response is read to its ``Content-Length`` and only its status line and headers are
    parsed. An HTTP client library costs several times more per request than the request itself on a
    small payload (geventhttpclient: ~0.15 ms of CPU at 2000/s), and that cost is what limited the
    generator's ceiling, not the server."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        host, port = _host_port(cfg["http_url"])
        self.address = (host, port)
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        head = f"POST {cfg['path']} HTTP/1.1\r\nHost: {authority}\r\n"
        self.requests = [
            (head + ("" if n is None else f"Inference-Header-Content-Length: {n}\r\n")
             + f"Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body
            for body, (_, _, n) in zip(load_bodies(cfg), cfg["requests"], strict=True)]
        self.idle: list[Any] = []
        self.connect_timeout_s, self.network_timeout_s = 30.0, 60.0

    def _connect(self) -> Any:
        sock = gevent.socket.create_connection(self.address, timeout=self.connect_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.network_timeout_s)
        return sock

    def send(self, i: int) -> tuple[str, int]:
        """(error or "", response bytes) of request ``i``. A kept-alive connection the server has closed
        meanwhile is replaced once, before any of the response arrived."""
        reused = bool(self.idle)
        sock = self.idle.pop() if reused else self._connect()
        try:
            try:
                sock.sendall(self.requests[i])
                status, body, keep = read_http_response(sock)
            except ClosedBeforeResponse:
                if not reused:
                    raise
                sock.close()
                sock = self._connect()
                sock.sendall(self.requests[i])
                status, body, keep = read_http_response(sock)
        except BaseException:  # errors, and GreenletExit when a cell's time bound kills the request
            sock.close()
            raise
        if keep:
            self.idle.append(sock)
        else:
            sock.close()
        if status == 200:
            return "", len(body)
        return f"HTTP {status}: {http_error_text(body)[:ERROR_TEXT]}", len(body)

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for sock in idle:
            sock.close()


class GrpcSender:
    """Prepared ``ModelInferRequest`` messages through a channel's identity-serialized unary call."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.bodies = load_bodies(cfg)
        self.channel = grpc.insecure_channel(cfg["grpc_url"], options=[
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES)])
        self.call = self.channel.unary_unary(GRPC_INFER_METHOD)  # no serializers: bytes in, bytes out

    def send(self, i: int) -> tuple[str, int]:
        try:
            response = self.call(self.bodies[i], timeout=60)
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
            return f"gRPC {code.name if code else 'error'}: {(details or '')[:ERROR_TEXT]}", 0
        return "", len(response)

    def close(self) -> None:
        self.channel.close()


class TritonClientSender:
    """The generator before bodies were prepared: tritonclient encodes every request again (kept as
    ``encode_per_request`` so the benchmark can measure what preparing them saved)."""

    def __init__(self, cfg: dict[str, Any], protocol: str) -> None:
        self.cfg, self.protocol = cfg, protocol
        self.requests = load_requests(cfg)
        self.types = {i["name"]: i["datatype"] for i in cfg["inputs"]}
        self.client = TritonClient(cfg["http_url"], cfg["grpc_url"], timeout_s=60, connect_timeout_s=30,
                                   http_concurrency=int(cfg["max_inflight"]))

    def send(self, i: int) -> tuple[str, int]:
        self.client.infer_raw(self.protocol, self.cfg["model"], self.requests[i], self.cfg["outputs"],  # type: ignore[arg-type]
                              version=self.cfg.get("version", ""), types=self.types)
        return "", 0

    def close(self) -> None:
        self.client.close()  # closing the gRPC channel in on_stop keeps the process from hanging at exit


_blocking_sleep = gevent.monkey.get_original("time", "sleep")
TIMER_TICK_S = 0.0015  # the event loop's timers have millisecond resolution (and round up)


def _sleep_until(deadline: float) -> None:
    """Sleep until ``deadline`` (monotonic) with sub-millisecond accuracy: the event loop sleeps the
    coarse part, a short blocking sleep (< 1.5 ms, no CPU burnt) the rest. Without the second step
    every gap under ~1 ms is stretched to a timer tick and the sends stop being Poisson."""
    delay = deadline - time.monotonic()
    if delay > TIMER_TICK_S:
        gevent.sleep(delay - TIMER_TICK_S)
    gevent.sleep(0)  # let finished responses be processed before the blocking part
    delay = deadline - time.monotonic()
    if delay > 0:
        _blocking_sleep(delay)


def common_start(sync_dir: str, name: str, stream: int, streams: int, timeout_s: float) -> float:
    """The monotonic time at which all ``streams`` processes start the step ``name``: each writes
    when it is ready, all start SYNC_MARGIN_S after the last one (CLOCK_MONOTONIC is one clock for
    every process of the machine). A process that does not turn up within ``timeout_s`` is not
    waited for."""
    now = time.monotonic()
    if streams <= 1:
        return now
    directory = Path(sync_dir)
    write_atomic(directory / f"{name}.{stream}", repr(now), fsync=False)
    deadline = now + timeout_s
    while True:
        ready = [float(p.read_text()) for p in (directory / f"{name}.{k}" for k in range(streams)) if p.exists()]
        if len(ready) == streams or time.monotonic() >= deadline:
            return max(ready) + SYNC_MARGIN_S
        gevent.sleep(SYNC_POLL_S)


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class _Records:
    """Per-request records: (scheduled offset s, send offset s or -1 if not sent, latency from send s,
    error or ''), plus the responses' bytes."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float, str]] = []
        self.response_bytes = 0

    def dump(self, path: str, meta: dict[str, Any]) -> None:
        # Atomic: the parent reads this file after locust exits, also after a Ctrl-C mid-write.
        write_atomic(Path(path), json.dumps({"meta": meta, "records": self.rows}), fsync=False)


class TritonOpenLoopUser(User):
    """Base dispatcher over one sender; subclasses name the protocol."""

    abstract = True
    protocol = ""

    def on_start(self) -> None:
        self.cfg = _config()
        self.stream = int(self.cfg.get("stream", 0))
        self.streams = int(self.cfg.get("streams", 1))
        self.sender: Any = self.make_sender()
        self.count = len(self.cfg["requests"])
        self.report = bool(self.cfg.get("report_to_locust", True))

    def on_stop(self) -> None:
        sender, self.sender = getattr(self, "sender", None), None
        if sender is not None:
            sender.close()

    def make_sender(self) -> Any:
        if self.cfg.get("encode_per_request"):
            return TritonClientSender(self.cfg, self.protocol)
        return GrpcSender(self.cfg) if self.protocol == "grpc" else HttpSender(self.cfg)

    # -- the open loop
    def _one(self, i: int, scheduled: float, t0: float, records: _Records) -> None:
        sent = time.monotonic()
        error = ""
        size = 0
        try:
            error, size = self.sender.send(i)
        except Exception as e:
            text = message_of(e)
            error = f"{type(e).__name__}: {text[:ERROR_TEXT]}" if text != type(e).__name__ else text
        except gevent.GreenletExit:  # killed in flight at the end of the phase's time bound
            records.rows.append((scheduled, sent - t0, time.monotonic() - sent, UNFINISHED))
            raise
        latency = time.monotonic() - sent
        records.rows.append((scheduled, sent - t0, latency, error))
        if not error:
            records.response_bytes += size
        if self.report:
            self.environment.events.request.fire(
                request_type=self.protocol, name=self.cfg["model"], response_time=latency * 1000.0,
                response_length=size, exception=RuntimeError(error) if error else None, context={})

    def _phase(self, phase: dict[str, Any], t0: float) -> int:
        """One Poisson schedule at one rate, from ``t0`` (the processes' common start); its records go
        to the phase's own file, also when the run is stopped in the middle (locust stops users with
        GreenletExit on Ctrl-C). Returns how many requests were left unfinished."""
        cfg = self.cfg
        rate = float(phase["rate"])
        duration = float(phase["duration_s"])
        seed = phase.get("seed")
        pool = Pool(int(cfg.get("max_inflight", 256)))
        schedule = PoissonSchedule(rate, seed=seed if self.streams == 1 or seed is None else (seed, self.stream))
        records = _Records()
        scheduled = not_sent = 0
        stopped_early = True
        schedule_end = 0.0
        _sleep_until(t0)
        cpu0 = _cpu_s()
        try:
            for offset in schedule:
                if offset >= duration:
                    break
                if time.monotonic() - t0 >= duration:  # behind its schedule: the rest is never sent
                    records.rows.append((offset, -1.0, 0.0, ""))
                    not_sent += 1
                    continue
                _sleep_until(t0 + offset)
                i = (self.stream + self.streams * scheduled) % self.count
                scheduled += 1
                if pool.full():
                    records.rows.append((offset, -1.0, 0.0, "ClientSaturated"))
                    if self.report:
                        self.environment.events.request.fire(
                            request_type=self.protocol, name=cfg["model"], response_time=0.0, response_length=0,
                            exception=RuntimeError("ClientSaturated: max_inflight requests outstanding"),
                            context={})
                    continue
                pool.spawn(self._one, i, offset, t0, records)
            schedule_end = time.monotonic() - t0
            pool.join(timeout=float(cfg.get("drain_timeout_s", 30)))
            stopped_early = False
        finally:
            unfinished = len(pool)
            pool.kill(timeout=1.0)  # blocks until they have recorded themselves as unfinished
            elapsed = time.monotonic() - t0
            records.dump(phase["records_path"], {
                "protocol": self.protocol, "rate": rate, "duration_s": duration, "scheduled": scheduled + not_sent,
                "not_sent": not_sent, "unfinished": unfinished, "elapsed_s": elapsed,
                "stopped_early": stopped_early, "schedule_end_s": elapsed if stopped_early else schedule_end,
                "cpu_s": _cpu_s() - cpu0, "response_bytes": records.response_bytes,
                "stream": self.stream, "streams": self.streams,
            })
        return unfinished

    @task
    def dispatch(self) -> None:
        cfg = self.cfg
        # Warm the connection outside the measurement (the first request pays connection set-up).
        for _ in range(int(cfg.get("warmup_requests", 2))):
            with contextlib.suppress(Exception):  # errors of the measured requests are what count
                self.sender.send(0)
        sync = str(cfg.get("sync_dir", ""))
        for k, phase in enumerate(cfg["phases"]):
            if k:
                gevent.sleep(float(cfg.get("pause_s", 0.5)))  # let the server settle between rates
            wait = float(cfg.get("start_timeout_s", 60) if k == 0 else cfg.get("sync_timeout_s", 30))
            t0 = common_start(sync, f"phase{k}", self.stream, self.streams, wait)
            if self._phase(phase, t0):
                # Requests killed in flight may hold connections: the next phase starts on fresh ones.
                self.on_stop()
                self.sender = self.make_sender()
        self.on_stop()
        runner = self.environment.runner
        if runner is not None:  # the phases are the whole run: end it now
            gevent.spawn(runner.quit)
        raise StopUser()


class HttpJsonUser(TritonOpenLoopUser):
    protocol = "http-json"


class HttpBinaryUser(TritonOpenLoopUser):
    protocol = "http-binary"


class GrpcUser(TritonOpenLoopUser):
    protocol = "grpc"


USERS = {"http-json": HttpJsonUser, "http-binary": HttpBinaryUser, "grpc": GrpcUser}
