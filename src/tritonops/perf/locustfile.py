"""Open-loop Poisson load on a Triton model, for locust (``tritonops loadtest`` runs it).

One user per locust process is the *dispatcher*: it walks a Poisson schedule of send times against a
monotonic clock and starts every request in its own greenlet at its time, whether or not earlier
requests have finished (open loop). Each record keeps the scheduled and the actual send time, so a
client that falls behind its schedule is visible (as schedule lag, and as arrivals it never sent).
Latency is measured from the actual send. Requests beyond ``max_inflight`` outstanding are not sent
and count as ``ClientSaturated`` errors.

The request bodies are built once, by the parent (``tritonops.perf.loadtest``), and arrive here as
bytes in ``requests_file``: this process never encodes a tensor, so every protocol and payload costs
the generator the same few steps. No client library sits in the send path: HTTP (JSON or binary) is
a prepared request written to a kept-alive socket, one request in flight per connection, its response
read by its length (``tritonops.perf.wire``); gRPC is HTTP/2 spoken here, many streams on one
connection, a request's HEADERS block and length-prefixed ``ModelInferRequest`` prepared and only
the response's headers decoded (HPACK). A response counts as a success on HTTP 200 / grpc-status 0;
its body is read in full (its size is counted) but decoded only when it carries an error, to keep the
server's message. (``grpc.experimental.gevent.init_gevent()`` is still called for the
``encode_per_request`` comparison, which sends through tritonclient.)

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
import urllib.parse
from pathlib import Path
from typing import Any

import gevent
import gevent.monkey
import gevent.socket
import grpc
import hpack
import numpy as np
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from gevent.pool import Pool
from locust import User, task
from locust.exception import StopUser

try:  # gRPC must cooperate with gevent before the first channel is created.
    import grpc.experimental.gevent as grpc_gevent

    grpc_gevent.init_gevent()
except ImportError:  # pragma: no cover - grpc is part of tritonclient[grpc]
    grpc_gevent = None

# Imported after init_gevent(): tritonops.client imports tritonclient.grpc (channels come later, per user).
from tritonops.client import GRPC_INFER_METHOD, TritonClient, message_of
from tritonops.perf import wire
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
    parsed. With geventhttpclient the generator took 0.180 ms of CPU a request at 2000/s, with this
    0.124 ms (perf/RESULTS.md, generator ceiling), and its ceiling rose from 2,000/s to 4,757/s."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.address = _host_port(cfg["http_url"])
        head = f"POST {cfg['path']} HTTP/1.1\r\nHost: {cfg['http_url']}\r\n"  # host:port, as Host wants it
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


GRPC_STATUS = {c.value[0]: c.name for c in grpc.StatusCode}


class _Stream:
    __slots__ = ("data", "done", "headers", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.data = 0  # message bytes received
        self.headers: list[tuple[bytes, bytes]] = []
        self.done: AsyncResult = AsyncResult()  # set to "" (OK) or the error


class H2Connection:
    """One HTTP/2 connection to the gRPC endpoint, many requests in flight on it: senders write
    prepared frames (under one lock), one reader greenlet takes the server's frames apart, keeps the
    HPACK table and the flow-control windows, and ends each stream with its ``grpc-status``."""

    def __init__(self, address: tuple[str, int], timeout_s: float) -> None:
        self.sock = gevent.socket.create_connection(address, timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)  # the reader waits as long as streams are open; each request has its timeout
        self.lock = Semaphore()
        self.decoder = hpack.Decoder()
        self.streams: dict[int, _Stream] = {}
        self.next_stream = 1
        self.send_window = wire.H2_DEFAULT_WINDOW  # the connection's, for our DATA
        self.initial_window = wire.H2_DEFAULT_WINDOW  # each new stream's (the server's SETTINGS change it)
        self.max_frame = wire.H2_DEFAULT_FRAME
        self.max_streams = 2**31
        self.window_changed = Event()
        self.unacked = 0  # DATA bytes received since our last connection WINDOW_UPDATE
        self.pending: tuple[int, int, bytes] | None = None  # a header block waiting for CONTINUATION frames
        self.closed: str | None = None
        self.sock.sendall(wire.H2_PREFACE + wire.h2_settings({
            wire.SETTINGS_ENABLE_PUSH: 0, wire.SETTINGS_INITIAL_WINDOW_SIZE: wire.H2_MAX_WINDOW})
            + wire.h2_window_update(0, wire.H2_MAX_WINDOW - wire.H2_DEFAULT_WINDOW))
        self.reader = gevent.spawn(self._read)

    @property
    def usable(self) -> bool:
        return self.closed is None and len(self.streams) < self.max_streams and self.next_stream < 2**31 - 1

    def request(self, header_block: bytes, payload: bytes, timeout_s: float) -> tuple[str, int]:
        sid = self.next_stream
        self.next_stream += 2
        st = self.streams[sid] = _Stream(self.initial_window)
        try:
            headers = wire.h2_frame(wire.HEADERS, wire.END_HEADERS, sid, header_block)
            n = len(payload)
            if n <= min(self.send_window, st.window, self.max_frame):  # the common case: one write
                self.send_window -= n
                st.window -= n
                self._write(headers + wire.h2_frame(wire.DATA, wire.END_STREAM, sid, payload))
            else:
                self._write(headers)
                self._send_data(sid, st, payload, timeout_s)
            error = st.done.get(timeout=timeout_s)
        except gevent.Timeout:
            self._cancel(sid)
            return "gRPC DEADLINE_EXCEEDED: no response within the request's timeout", 0
        except BaseException:  # GreenletExit at the end of a cell's time bound, or a broken connection
            self._cancel(sid)
            raise
        return error, st.data

    def _send_data(self, sid: int, st: _Stream, payload: bytes, timeout_s: float) -> None:
        offset = 0
        deadline = time.monotonic() + timeout_s
        while offset < len(payload):
            n = min(len(payload) - offset, self.max_frame, self.send_window, st.window)
            if n <= 0:  # wait for the server's WINDOW_UPDATE
                if self.closed is not None:
                    raise ConnectionError(self.closed)
                if not self.window_changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise gevent.Timeout()
                continue
            self.send_window -= n
            st.window -= n
            last = offset + n == len(payload)
            self._write(wire.h2_frame(wire.DATA, wire.END_STREAM if last else 0, sid, payload[offset:offset + n]))
            offset += n

    def _write(self, data: bytes) -> None:
        if self.closed is not None:
            raise ConnectionError(self.closed)
        with self.lock:
            self.sock.sendall(data)

    def _cancel(self, sid: int) -> None:
        if self.streams.pop(sid, None) is not None and self.closed is None:
            with contextlib.suppress(OSError):
                self._write(wire.h2_frame(wire.RST_STREAM, 0, sid, wire.CANCEL.to_bytes(4, "big")))

    def _finish(self, sid: int, error: str) -> None:
        st = self.streams.pop(sid, None)
        if st is not None:
            st.done.set(error)

    def _wake_senders(self) -> None:
        event, self.window_changed = self.window_changed, Event()
        event.set()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(262144)
                if not chunk:
                    raise ConnectionError("the server closed the gRPC connection")
                frames, buf = wire.split_frames(buf + chunk if buf else chunk)
                for frame in frames:
                    self._frame(*frame)
        except Exception as e:  # a broken connection or a frame it cannot read: its streams end with the reason
            self.close(f"gRPC connection lost: {type(e).__name__}: {message_of(e)}")

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == wire.DATA:
            self.unacked += len(payload)
            if self.unacked >= wire.H2_MAX_WINDOW // 2:
                self._write(wire.h2_window_update(0, self.unacked))
                self.unacked = 0
            st = self.streams.get(sid)
            if st is not None:
                st.data += len(wire.unpad(flags, payload))
                if flags & wire.END_STREAM:
                    self._finish(sid, "gRPC error: the stream ended without a status")
        elif kind in (wire.HEADERS, wire.CONTINUATION):
            if kind == wire.HEADERS:
                self.pending = (sid, flags, wire.unpad(flags, payload, headers=True))
            elif self.pending is not None:
                self.pending = (self.pending[0], self.pending[1], self.pending[2] + payload)
            if not flags & wire.END_HEADERS or self.pending is None:
                return
            sid, first_flags, block = self.pending
            self.pending = None
            headers = self.decoder.decode(block, raw=True)  # every block, in order: it updates the table
            st = self.streams.get(sid)
            if st is None:
                return
            st.headers.extend(headers)
            if first_flags & wire.END_STREAM:  # the trailers (or a trailers-only response)
                self._finish(sid, _grpc_error(st.headers))
        elif kind == wire.SETTINGS and not flags & wire.ACK:
            values = wire.parse_settings(payload)
            if wire.SETTINGS_INITIAL_WINDOW_SIZE in values:
                delta = values[wire.SETTINGS_INITIAL_WINDOW_SIZE] - self.initial_window
                self.initial_window += delta
                for st in self.streams.values():
                    st.window += delta
            self.max_frame = values.get(wire.SETTINGS_MAX_FRAME_SIZE, self.max_frame)
            self.max_streams = values.get(wire.SETTINGS_MAX_CONCURRENT_STREAMS, self.max_streams)
            self._write(wire.h2_frame(wire.SETTINGS, wire.ACK, 0))
            self._wake_senders()
        elif kind == wire.WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if sid == 0:
                self.send_window += increment
            elif sid in self.streams:
                self.streams[sid].window += increment
            self._wake_senders()
        elif kind == wire.PING and not flags & wire.ACK:
            self._write(wire.h2_frame(wire.PING, wire.ACK, 0, payload))
        elif kind == wire.RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            self._finish(sid, f"gRPC error: the server reset the stream (HTTP/2 error {code})")
        elif kind == wire.GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            self.closed = f"the server ended the gRPC connection (GOAWAY {int.from_bytes(payload[4:8], 'big')})"
            for other in [s for s in self.streams if s > last]:
                self._finish(other, f"gRPC UNAVAILABLE: {self.closed}")

    def close(self, why: str = "the connection was closed") -> None:
        self.closed = self.closed or why
        for sid in list(self.streams):
            self._finish(sid, f"gRPC UNAVAILABLE: {why}")
        self._wake_senders()
        with contextlib.suppress(OSError):
            self.sock.close()
        if gevent.getcurrent() is not self.reader:
            self.reader.kill(block=False)


def _grpc_error(headers: list[tuple[bytes, bytes]]) -> str:
    """"" for grpc-status 0, else the status's name and the server's message."""
    fields = dict(headers)
    status = fields.get(b"grpc-status")
    if status == b"0":
        return ""
    if status is None:
        http = fields.get(b":status", b"?").decode("latin-1")
        return f"gRPC error: a response without grpc-status (HTTP {http})"
    name = GRPC_STATUS.get(int(status), f"status {status.decode('latin-1')}") if status.isdigit() else "error"
    text = urllib.parse.unquote(fields.get(b"grpc-message", b"").decode("utf-8", "replace"))
    return f"gRPC {name}: {text[:ERROR_TEXT]}"


class GrpcSender:
    """Prepared ``ModelInferRequest`` messages as gRPC calls over HTTP/2 spoken here (``H2Connection``):
    the frames of a request are built at start-up apart from its stream id, the response's message is
    counted, not decoded. grpcio's client under gevent runs every call through gevent's thread pool: 0.324 ms
    of CPU a request at 2000/s, against 0.153 ms here; the gRPC ceiling rose from 1,542/s to 4,000/s."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.payloads = [wire.grpc_message(body) for body in load_bodies(cfg)]
        self.address = _host_port(cfg["grpc_url"])
        self.header_block = wire.grpc_header_block(GRPC_INFER_METHOD, cfg["grpc_url"])  # :authority is host:port
        self.connections: list[H2Connection] = []
        self.timeout_s = 60.0

    def _connection(self) -> H2Connection:
        self.connections = [c for c in self.connections if c.closed is None or c.streams]
        for c in self.connections:
            if c.usable:
                return c
        c = H2Connection(self.address, timeout_s=30.0)
        self.connections.append(c)
        return c

    def send(self, i: int) -> tuple[str, int]:
        error, size = self._connection().request(self.header_block, self.payloads[i], self.timeout_s)
        return error, max(0, size - 5)  # less the message's 5-byte prefix

    def close(self) -> None:
        connections, self.connections = self.connections, []
        for c in connections:
            c.close()


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
