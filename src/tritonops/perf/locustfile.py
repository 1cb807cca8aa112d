"""Open-loop Poisson load on a Triton model, for locust (``tritonops loadtest`` runs it).

One user per locust process is the *dispatcher*: it walks a Poisson schedule of send times against a
monotonic clock and starts every request in its own greenlet at its time, whether or not earlier
requests have finished (open loop). Each record keeps the scheduled and the actual send time, so a
client that falls behind its schedule is visible (as schedule lag, and as achieved < offered rate).
Latency is measured from the actual send. Requests beyond ``max_inflight`` outstanding are not sent
and count as ``ClientSaturated`` errors.

Users: ``HttpJsonUser`` (HTTP, JSON tensors), ``HttpBinaryUser`` (HTTP binary tensor extension),
``GrpcUser`` (gRPC; ``grpc.experimental.gevent.init_gevent()`` is called before any channel exists,
and the client is closed in ``on_stop``, or the process can hang at exit).

Configuration comes from the JSON file named by ``TRITONOPS_LOADTEST_CONFIG`` (written by
``tritonops.perf.loadtest``). Every request is also reported to locust (its CSV/HTML), and the raw
per-request records are written to ``records_path`` for exact percentiles.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.monkey
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
from tritonops.client import TritonClient, message_of
from tritonops.perf.inputs import tensor_from_json
from tritonops.perf.poisson import PoissonSchedule
from tritonops.repository import write_atomic

CONFIG_ENV = "TRITONOPS_LOADTEST_CONFIG"


def _config() -> dict[str, Any]:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} is not set; run this locustfile through `tritonops loadtest`")
    with open(path) as f:  # noqa: PTH123 - locust imports this module standalone
        return dict(json.load(f))


def load_requests(cfg: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """Request tensors: batch-1 samples stacked to ``batch`` (or whole requests for a non-batching model)."""
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


class _Records:
    """Per-request records: (scheduled offset s, send offset s, latency from send s, error or '')."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float, str]] = []

    def dump(self, path: str, meta: dict[str, Any]) -> None:
        # Atomic: the parent reads this file after locust exits, also after a Ctrl-C mid-write.
        write_atomic(Path(path), json.dumps({"meta": meta, "records": self.rows}), fsync=False)


class TritonOpenLoopUser(User):
    """Base dispatcher over one :class:`TritonClient`; subclasses name the protocol."""

    abstract = True
    protocol = ""

    def on_start(self) -> None:
        self.cfg = _config()
        self.requests = load_requests(self.cfg)
        self.types = {i["name"]: i["datatype"] for i in self.cfg["inputs"]}
        self.outputs = list(self.cfg["outputs"])
        self.client: TritonClient | None = self.make_client()
        self.response_bytes = int(self.cfg.get("response_bytes", {}).get(self.protocol, 0))

    def on_stop(self) -> None:
        client, self.client = getattr(self, "client", None), None
        if client is not None:
            self.close(client)

    def make_client(self) -> TritonClient:
        # One HTTP connection per request in flight; the gRPC channel opens on the first request.
        return TritonClient(self.cfg["http_url"], self.cfg["grpc_url"], timeout_s=60, connect_timeout_s=30,
                            http_concurrency=int(self.cfg.get("max_inflight", 256)))

    def infer(self, inputs: dict[str, np.ndarray]) -> None:
        assert self.client is not None
        # Undecoded: the load generator only needs the response to have arrived.
        self.client.infer_raw(self.protocol, self.cfg["model"], inputs, self.outputs,  # type: ignore[arg-type]
                              version=self.cfg.get("version", ""), types=self.types)

    def close(self, client: TritonClient) -> None:
        client.close()  # closing the gRPC channel in on_stop keeps the process from hanging at exit

    # -- the open loop
    def _one(self, inputs: dict[str, np.ndarray], scheduled: float, t0: float, records: _Records) -> None:
        sent = time.monotonic()
        error = ""
        exc: BaseException | None = None
        try:
            self.infer(inputs)
        except Exception as e:
            exc = e
            text = message_of(e)
            error = f"{type(e).__name__}: {text[:120]}" if text != type(e).__name__ else text
        latency = time.monotonic() - sent
        records.rows.append((scheduled, sent - t0, latency, error))
        self.environment.events.request.fire(
            request_type=self.protocol, name=self.cfg["model"], response_time=latency * 1000.0,
            response_length=0 if exc else self.response_bytes, exception=exc, context={})

    def _phase(self, phase: dict[str, Any]) -> None:
        """One Poisson schedule at one rate; its records go to the phase's own file, also when the
        run is stopped in the middle (locust stops users with GreenletExit on Ctrl-C)."""
        cfg = self.cfg
        rate = float(phase["rate"])
        duration = float(phase["duration_s"])
        pool = Pool(int(cfg.get("max_inflight", 256)))
        schedule = PoissonSchedule(rate, seed=phase.get("seed"))
        records = _Records()
        t0 = time.monotonic()
        scheduled = 0
        stopped_early = True
        schedule_end = 0.0
        try:
            for offset in schedule:
                if offset >= duration or time.monotonic() - t0 >= duration:  # a client behind its schedule
                    break
                _sleep_until(t0 + offset)
                inputs = self.requests[scheduled % len(self.requests)]
                scheduled += 1
                if pool.full():
                    records.rows.append((offset, -1.0, 0.0, "ClientSaturated"))
                    self.environment.events.request.fire(
                        request_type=self.protocol, name=cfg["model"], response_time=0.0, response_length=0,
                        exception=RuntimeError("ClientSaturated: max_inflight requests outstanding"), context={})
                    continue
                pool.spawn(self._one, inputs, offset, t0, records)
            schedule_end = time.monotonic() - t0
            pool.join(timeout=float(cfg.get("drain_timeout_s", 30)))
            stopped_early = False
        finally:
            unfinished = len(pool)
            pool.kill(block=False)
            elapsed = time.monotonic() - t0
            records.dump(phase["records_path"], {
                "protocol": self.protocol, "rate": rate, "duration_s": duration, "scheduled": scheduled,
                "unfinished": unfinished, "elapsed_s": elapsed, "stopped_early": stopped_early,
                "schedule_end_s": elapsed if stopped_early else schedule_end,
            })

    @task
    def dispatch(self) -> None:
        # Warm the connection outside the measurement (the first request pays connection set-up).
        for _ in range(int(self.cfg.get("warmup_requests", 2))):
            with contextlib.suppress(Exception):  # errors of the measured requests are what count
                self.infer(self.requests[0])
        for i, phase in enumerate(self.cfg["phases"]):
            if i:
                gevent.sleep(float(self.cfg.get("pause_s", 0.5)))  # let the server settle between rates
            self._phase(phase)
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

