"""``tritonops loadtest``: open-loop Poisson load at a fixed rate through locust, headless and bounded.

locust runs ``tritonops/perf/locustfile.py`` in a child process (its own gevent world); the child
writes one record per scheduled request, from which this module computes the offered, sent and
achieved rates, exact latency percentiles and errors by type. locust's own CSV and HTML report are
kept next to them.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import shutil
import sys
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonops.client import PROTOCOLS as CLIENT_PROTOCOLS
from tritonops.client import (
    InferProtocol,
    TritonClient,
    grpc_request_bytes,
    grpc_request_message,
    http_request_body,
    http_request_headers,
    infer_path,
)
from tritonops.errors import ExternalToolError, MissingDependencyError, ServerError, UsageError
from tritonops.external import run_tools
from tritonops.perf.analyzer import prepare_samples
from tritonops.perf.inputs import Samples, check_samples_path, write_input_data
from tritonops.perf.poisson import ks_exponential
from tritonops.perf.target import ModelIO, Target, fetch_model_io, open_target
from tritonops.progress import Progress
from tritonops.units import check_number

SCHEMA = "tritonops.loadtest/1"
LoadProtocol = InferProtocol
PROTOCOLS: tuple[LoadProtocol, ...] = CLIENT_PROTOCOLS
USER_CLASS = {"http-json": "HttpJsonUser", "http-binary": "HttpBinaryUser", "grpc": "GrpcUser"}
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# One locust dispatcher schedules every request: beyond this it only records ClientSaturated errors.
MAX_RATE = 10_000.0  # requests/s
# A cell "keeps up" when the server answered what the schedule offered (this share of it), without errors.
KEEPS_UP = 0.97
REQUESTS_FILE = "requests.bin"  # a run's request bodies, as the generator processes read them
# The generator keeps its schedule when it sent this share of the arrivals, with send lag p99 under GENERATOR_LAG_MS.
GENERATOR_SENT = 0.99
GENERATOR_LAG_MS = 10.0
# Late sends are the generator's own doing only when its processes were busy (CPU seconds per second of the cell,
# per process): a generator that idles while its sends run late was descheduled by something else on the machine,
# most often the server itself working through what it was sent (2.9 MB JSON bodies of an image-sized tensor), and
# then the cell says something about the protocol and the server, not about the generator.
GENERATOR_BUSY = 0.7
# What one generator process keeps its schedule at (req/s: sent/scheduled >= 0.99, send lag p99 <= 10 ms);
# ``processes=None`` starts ceil(λ / this) processes, up to the cores left after the server. The previous
# generator kept it up to 700/s at ≈0.4 ms CPU/request (perf/RESULTS.md (c)); the prepared bodies cost
# ≈0.25–0.35 ms (HTTP) per request in perf/bench_generator.py's runs, so 1000/s; re-measure on a quiet
# machine (the runs recorded so far were on two shared cores at load 2.6–17, where lag set the ceiling).
PROCESS_RATE: dict[LoadProtocol, float] = {"http-json": 1000.0, "http-binary": 1000.0, "grpc": 1000.0}
MAX_PROCESSES = 64
# What one (protocol, λ) cell came to: the server kept up; the server fell behind (achieved < KEEPS_UP of the
# schedule, errors, or the cell could not drain within its wall-time bound); the load generator itself could not
# keep the schedule (then the cell says nothing about the protocol); Ctrl-C.
Outcome = Literal["kept-up", "fell-behind", "generator-saturated", "interrupted"]


@dataclass(frozen=True)
class LoadtestOptions:
    model: str
    output_dir: Path
    rate: float  # offered requests/s (λ)
    protocol: LoadProtocol = "http-binary"
    duration_s: float = 10.0
    serve: Path | None = None
    url: str | None = None
    grpc_url: str | None = None
    model_version: str = ""
    batch_size: int = 1
    max_inflight: int = 256
    samples: Path | None = None
    shapes: tuple[str, ...] = ()
    seed: int = 0
    drain_timeout_s: float = 30.0
    processes: int | None = None  # generator processes (None: as many as the rate needs, up to the free cores)

    def __post_init__(self) -> None:
        if self.samples is not None:  # before any server is asked
            check_samples_path(self.samples)
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"--protocol '{self.protocol}' is not one of {', '.join(PROTOCOLS)}",
                             "use --protocol http-binary, http-json or grpc")
        check_number(self.rate, "--rate", low=0, low_open=True, high=MAX_RATE,
                     hint=f"give the offered load in requests/s, up to {MAX_RATE:g}")
        check_number(self.duration_s, "--duration", low=1, high=24 * 3600, hint="e.g. --duration 30 (seconds)")
        check_number(self.drain_timeout_s, "drain timeout", low=0, high=24 * 3600)
        check_number(self.batch_size, "--batch-size", low=1, integer=True)
        check_number(self.max_inflight, "--max-inflight", low=1, high=100_000, integer=True)
        if self.processes is not None:
            check_number(self.processes, "--processes", low=1, high=MAX_PROCESSES, integer=True,
                         hint="e.g. --processes 2 (load generator processes)")


@dataclass(frozen=True)
class GeneratorCost:
    """The load generator's own cost in one cell, over all of its processes."""

    processes: int = 1
    cpu_ms_per_request: float | None = None  # user + system CPU of the generator processes / requests sent
    lag_p99_ms: float | None = None  # actual send - scheduled send
    sent_vs_scheduled: float | None = None
    saturated: bool = False  # it could not keep the schedule: sent < GENERATOR_SENT, or lag p99 > GENERATOR_LAG_MS
    busy: float | None = None  # CPU seconds per second of the cell, per process (GENERATOR_BUSY: its own doing)


@dataclass(frozen=True)
class LoadtestResult:
    model: str
    protocol: LoadProtocol
    offered_rate: float
    duration_s: float
    batch_size: int
    scheduled: int
    sent: int
    ok: int
    errors: dict[str, int]
    achieved_rate: float  # successful responses completed within the window, per second
    scheduled_rate: float  # arrivals the Poisson schedule drew in the window, per second (≈ λ ± √(λT)/T)
    sent_rate: float
    latency_ms: dict[str, float]  # p50, p90, p95, p99, mean, max (from the actual send)
    lag_ms: dict[str, float]  # actual send - scheduled send: p50, p99, max
    send_gaps_ks: dict[str, Any]  # KS test of actual inter-send gaps vs Exponential(λ)
    request_bytes: int  # body of one request on the wire (HTTP body / gRPC message)
    response_bytes: int
    output_dir: Path
    files: dict[str, str]
    command: tuple[str, ...]
    interrupted: bool = False  # Ctrl-C only
    settings: dict[str, Any] = field(default_factory=dict)
    generator: GeneratorCost = field(default_factory=GeneratorCost)
    fell_behind: bool = False  # the cell reached its wall-time bound before its requests drained

    @property
    def outcome(self) -> Outcome:
        if self.interrupted:
            return "interrupted"
        if self.generator.saturated:
            return "generator-saturated"
        if self.fell_behind or self.error_count or self.achieved_vs_scheduled < KEEPS_UP:
            return "fell-behind"
        return "kept-up"

    @property
    def achieved_ratio(self) -> float:
        return self.achieved_rate / self.offered_rate if self.offered_rate else 0.0

    @property
    def achieved_vs_scheduled(self) -> float:
        """Achieved / the schedule's own rate: the generator's and server's delivery, without the
        Poisson count's sampling noise that achieved / λ includes."""
        return self.achieved_rate / self.scheduled_rate if self.scheduled_rate else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_dir"] = str(self.output_dir)
        d["command"] = list(self.command)
        d["achieved_ratio"] = self.achieved_ratio
        d["achieved_vs_scheduled"] = self.achieved_vs_scheduled
        d["outcome"] = self.outcome
        return {"schema": SCHEMA, **d}


# ------------------------------------------------------------------------------------------- payload size
def measure_payloads(target: Target, io: ModelIO, inputs: dict[str, np.ndarray], version: str = ""
                     ) -> dict[LoadProtocol, tuple[int, int]]:
    """(request bytes, response bytes) of one real request per protocol, as encoded by tritonclient
    (the HTTP bodies are sent as :class:`TritonClient` builds them, to count the response's bytes)."""
    sizes: dict[LoadProtocol, tuple[int, int]] = {}
    types = {s.name: s.dtype.name for s in io.inputs}
    outputs = [o.name for o in io.outputs]
    try:
        http_protocols: tuple[tuple[LoadProtocol, bool], ...] = (("http-json", False), ("http-binary", True))
        for proto, binary in http_protocols:
            body, header_len = http_request_body(inputs, outputs, binary=binary, types=types)
            headers = {"Content-Type": "application/octet-stream" if header_len else "application/json",
                       **http_request_headers(header_len)}
            req = urllib.request.Request(f"http://{target.http_url}{infer_path(io.name, version)}", data=body,
                                         headers=headers)
            with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - URL built from HOST:PORT
                response = r.read()
            sizes[proto] = (len(body), len(response))
        with TritonClient(target.http_url, target.grpc_url, timeout_s=30) as client:
            result = client.infer_raw("grpc", io.name, inputs, outputs, version=version, types=types)
        sizes["grpc"] = (grpc_request_bytes(io.name, inputs, outputs, version=version, types=types),
                         int(result.get_response().ByteSize()))
    except (InferenceServerException, OSError) as e:
        raise ServerError(f"a test request to '{io.name}' failed: {e}",
                          "check that the model serves requests (tritonops validate) and the URLs") from None
    return sizes


# ------------------------------------------------------------------------------------------- the run
def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values) * 1000.0
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    return {"p50": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99),
            "mean": float(a.mean()), "max": float(a.max())}


def summarize(records: Sequence[Sequence[Any]], duration_s: float, rate: float) -> dict[str, Any]:
    """Rates, exact latency percentiles and error counts from the locustfile's records, and a KS test
    of the *actual* send gaps against Exponential(rate): did the generator keep the Poisson shape?"""
    sent = [r for r in records if r[1] >= 0]
    ok = [r for r in sent if not r[3]]
    within = [r for r in ok if r[1] + r[2] <= duration_s]
    errors = Counter(str(r[3]) for r in records if r[3])
    lags = [max(0.0, r[1] - r[0]) for r in sent]
    lag = _percentiles(lags)
    send_times = np.sort(np.asarray([r[1] for r in sent]))
    ks = ks_exponential(np.diff(send_times), rate) if len(send_times) > 10 else None
    return {
        "scheduled": len(records), "sent": len(sent), "ok": len(ok), "errors": dict(errors.most_common()),
        "achieved_rate": len(within) / duration_s, "sent_rate": len(sent) / duration_s,
        "scheduled_rate": len(records) / duration_s,
        "latency_ms": _percentiles([r[2] for r in ok]),
        "lag_ms": {k: lag[k] for k in ("p50", "p99", "max")} if lag else {},
        "send_gaps_ks": {} if ks is None else {"statistic": ks.statistic, "critical": ks.critical,
                                               "alpha": ks.alpha, "n": ks.n, "passed": ks.passed},
    }


def _require_locust() -> None:
    if importlib.util.find_spec("locust") is None:
        raise MissingDependencyError("locust", "perf", "tritonops loadtest")


def _child_env(config_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TRITONOPS_LOADTEST_CONFIG"] = str(config_path)
    # The child imports tritonops.perf.poisson: make this very tritonops importable there.
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([src, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


@dataclass(frozen=True)
class Phase:
    """One Poisson schedule of a locust run; its files go to ``subdir`` of the run's directory."""

    rate: float
    duration_s: float
    seed: int = 0
    subdir: str = ""


# ------------------------------------------------------------------------------------------- requests
def request_tensors(samples: Samples, io: ModelIO, batch_size: int = 1) -> list[dict[str, np.ndarray]]:
    """The distinct requests of a load, in order: request i stacks samples i, i+1, ... (cycling) to
    ``batch_size`` for a batching model, or is sample i of a model that does not batch. A load sends
    them cycling (its i-th request is ``requests[i % len]``), so the order of the samples is the
    order of repetition."""
    items = samples.items
    if not io.batched:
        return [dict(item) for item in items]
    return [{n: np.stack([items[(i + k) % len(items)][n] for k in range(batch_size)]) for n in items[i]}
            for i in range(len(items))]


def request_bodies(io: ModelIO, requests: Sequence[dict[str, np.ndarray]], protocol: LoadProtocol,
                   version: str = "") -> list[tuple[bytes, int | None]]:
    """Each request as it goes on the wire, built once: (HTTP body, its JSON header length when binary
    tensors follow) or (the serialized gRPC ``ModelInferRequest``, None). Byte for byte what
    tritonclient would send (:func:`http_request_body`, :func:`grpc_request_message`)."""
    types = {s.name: s.dtype.name for s in io.inputs}
    outputs = [o.name for o in io.outputs]
    if protocol == "grpc":
        return [(grpc_request_message(io.name, r, outputs, version=version, types=types), None) for r in requests]
    return [http_request_body(r, outputs, binary=protocol == "http-binary", types=types) for r in requests]


def _write_requests(bodies: Sequence[tuple[bytes, int | None]], path: Path) -> list[list[int | None]]:
    """All bodies into one file; their [offset, length, header length] index."""
    index: list[list[int | None]] = []
    offset = 0
    with path.open("wb") as f:
        for body, header_len in bodies:
            f.write(body)
            index.append([offset, len(body), header_len])
            offset += len(body)
    return index


# ------------------------------------------------------------------------------------------- processes
LOOPBACK_HOSTS = ("localhost", "[::1]", "::1")


def generator_cores(http_url: str) -> int:
    """The cores the load generator may use: this process's CPUs, less one for a server on this
    machine (a loopback URL), at least one."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    host = http_url.rpartition(":")[0]
    local = host in LOOPBACK_HOSTS or host.startswith("127.")
    return max(1, cpus - (1 if local else 0))


def generator_processes(rate: float, protocol: LoadProtocol, cores: int) -> int:
    """Processes for a load of ``rate`` req/s: as many as the schedule needs, at most ``cores``."""
    return max(1, min(cores, math.ceil(rate / PROCESS_RATE[protocol])))


def generator_cost(summary: dict[str, Any], cpu_s: float, processes: int, window_s: float) -> GeneratorCost:
    """The generator's cost and whether it kept its schedule. Arrivals refused at max_inflight
    (ClientSaturated: the server's backlog, not the generator's) count as handled on time; sends late
    beyond GENERATOR_LAG_MS count against the generator only when its processes were busy
    (GENERATOR_BUSY), else the machine's other work (the server's, first of all) made them late."""
    refused = int(summary["errors"].get("ClientSaturated", 0))
    scheduled = int(summary["scheduled"])
    sent = int(summary["sent"])
    on_time = (sent + refused) / scheduled if scheduled else None
    lag_p99 = summary["lag_ms"].get("p99")
    busy = cpu_s / (window_s * processes) if window_s > 0 and processes else None
    late = lag_p99 is not None and lag_p99 > GENERATOR_LAG_MS and (busy is None or busy >= GENERATOR_BUSY)
    saturated = (on_time is not None and on_time < GENERATOR_SENT) or late
    return GeneratorCost(processes=processes, cpu_ms_per_request=cpu_s * 1000.0 / sent if sent else None,
                         lag_p99_ms=lag_p99, sent_vs_scheduled=on_time, saturated=saturated,
                         busy=busy)


def _merged(parts: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], list[Any]]:
    """One phase's records of every process, on their common clock, in send order."""
    records = sorted((r for p in parts for r in p["records"]), key=lambda r: r[1] if r[1] >= 0 else r[0])
    metas = [p["meta"] for p in parts]
    meta = {"scheduled": sum(int(m["scheduled"]) for m in metas),
            "unfinished": sum(int(m.get("unfinished", 0)) for m in metas),
            "not_sent": sum(int(m.get("not_sent", 0)) for m in metas),
            "stopped_early": any(m.get("stopped_early") for m in metas),
            "schedule_end_s": max(float(m["schedule_end_s"]) for m in metas),
            "cpu_s": sum(float(m.get("cpu_s", 0.0)) for m in metas),
            "response_bytes": sum(int(m.get("response_bytes", 0)) for m in metas),
            "processes": len(metas)}
    return meta, records


def run_locust(target: Target, io: ModelIO, samples: Samples, protocol: LoadProtocol, phases: Sequence[Phase],
               out_dir: Path, *, batch_size: int = 1, max_inflight: int = 256, model_version: str = "",
               drain_timeout_s: float = 30.0, pause_s: float = 0.5,
               payloads: dict[LoadProtocol, tuple[int, int]] | None = None,
               cell_timeout_s: float | None = None, processes: int | None = None,
               encode_per_request: bool = False,
               progress: Progress = lambda _: None) -> tuple[list[LoadtestResult], bool]:
    """``processes`` locust processes running ``phases`` back to back (one start for many rates).

    The request bodies are built here once (:func:`request_bodies`) and sent as bytes by every
    process. ``processes``: generator processes, each a Poisson stream at λ/processes with its own
    seed (None: as many as the highest rate needs, up to :func:`generator_cores`).
    ``cell_timeout_s`` bounds each phase's wall time (its schedule plus the drain of what is in
    flight; default: the duration plus ``drain_timeout_s``); a phase that has not drained by then is
    marked ``fell_behind`` and the next one runs. ``encode_per_request``: the previous generator
    (tritonclient encodes every request), kept for perf/bench_generator.py to measure against.

    Returns the results of the phases that ran and whether the run was interrupted (Ctrl-C, the only
    thing that interrupts); a phase cut short by it is marked ``interrupted`` and covers the time it ran."""
    _require_locust()
    if cell_timeout_s is not None:
        drain_timeout_s = max(0.0, cell_timeout_s - max(p.duration_s for p in phases))
    if batch_size > max(io.max_batch_size, 1):
        raise UsageError(f"--batch-size {batch_size} is above the model's max_batch_size {io.max_batch_size}",
                         f"use a batch size up to {max(io.max_batch_size, 1)}")
    n = processes if processes is not None else generator_processes(
        max(p.rate for p in phases), protocol, generator_cores(target.http_url))
    out_dir.mkdir(parents=True, exist_ok=True)
    requests = request_tensors(samples, io, batch_size)
    bodies = request_bodies(io, requests, protocol, model_version)
    if payloads is None:
        payloads = measure_payloads(target, io, requests[0], model_version)
    request_bytes, response_bytes = payloads[protocol]
    phase_dirs = [out_dir / p.subdir if p.subdir else out_dir for p in phases]
    for d in phase_dirs:
        d.mkdir(parents=True, exist_ok=True)
        for old in (d / "records.json", *d.glob("records.*.json")):
            old.unlink(missing_ok=True)
    sync_dir = out_dir / "sync"
    shutil.rmtree(sync_dir, ignore_errors=True)
    sync_dir.mkdir()
    start_timeout_s, sync_timeout_s = 60.0, drain_timeout_s + 10.0
    config: dict[str, Any] = {
        "model": io.name, "version": model_version, "http_url": target.http_url, "grpc_url": target.grpc_url,
        "max_inflight": max_inflight, "outputs": [s.name for s in io.outputs],
        "drain_timeout_s": drain_timeout_s, "pause_s": pause_s,
        "requests_file": str(out_dir / REQUESTS_FILE), "requests": _write_requests(bodies, out_dir / REQUESTS_FILE),
        "path": infer_path(io.name, model_version), "streams": n, "sync_dir": str(sync_dir),
        "start_timeout_s": start_timeout_s, "sync_timeout_s": sync_timeout_s,
    }
    if encode_per_request:
        config.update(encode_per_request=True, batch=batch_size, batched=io.batched,
                      input_data=str(write_input_data(samples, out_dir / "input_data.json")),
                      inputs=[{"name": s.name, "datatype": s.dtype.name} for s in io.inputs
                              if s.name in samples.items[0]])
    # locust's own -t must never cut a phase: it is the sum of the phases' own bounds, with slack.
    limit = int(start_timeout_s + sum(p.duration_s + drain_timeout_s + pause_s + sync_timeout_s for p in phases) + 30)
    cmds, envs = [], []
    for k in range(n):
        cfg = {**config, "stream": k, "phases": [
            {"rate": p.rate / n, "duration_s": p.duration_s, "seed": p.seed,
             "records_path": str(d / ("records.json" if n == 1 else f"records.{k}.json"))}
            for p, d in zip(phases, phase_dirs, strict=True)]}
        config_path = out_dir / ("locust_config.json" if k == 0 else f"locust_config.{k}.json")
        config_path.write_text(json.dumps(cfg, indent=2))
        prefix = "locust" if k == 0 else f"locust.{k}"
        cmds.append([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "1", "-r", "1",
                     "-t", f"{limit}s", "--stop-timeout", "0", "--only-summary", "--exit-code-on-error", "0",
                     "--csv", str(out_dir / prefix), "--html", str(out_dir / f"{prefix}.html"),
                     "--loglevel", "WARNING", USER_CLASS[protocol]])
        envs.append(_child_env(config_path))
    rates = ", ".join(f"{p.rate:g}" for p in phases)
    progress(f"locust: {protocol} at {rates} req/s, {phases[0].duration_s:g} s each, "
             f"{n} generator process{'es' if n > 1 else ''}")
    interrupted = False
    runs = []
    try:
        runs = run_tools(cmds, envs, timeout_s=limit + 60)
        for k, run in enumerate(runs):
            (out_dir / ("locust.log" if k == 0 else f"locust.{k}.log")).write_text(run.output)
    except KeyboardInterrupt:
        interrupted = True
    results = []
    for phase, d in zip(phases, phase_dirs, strict=True):
        parts_paths = [d / "records.json"] if n == 1 else [d / f"records.{k}.json" for k in range(n)]
        if not all(p.exists() for p in parts_paths):
            break
        meta, records = _merged([json.loads(p.read_text()) for p in parts_paths])
        records_path = d / "records.json"
        if n > 1:
            records_path.write_text(json.dumps({"meta": meta, "records": records}))
            for p in parts_paths:
                p.unlink()
        cut = bool(meta["stopped_early"])
        window = float(meta["schedule_end_s"]) if cut else phase.duration_s
        s = summarize(records, max(window, 1e-9), phase.rate)
        result = LoadtestResult(
            model=io.name, protocol=protocol, offered_rate=phase.rate, duration_s=window, batch_size=batch_size,
            scheduled=s["scheduled"], sent=s["sent"], ok=s["ok"], errors=s["errors"],
            achieved_rate=s["achieved_rate"], scheduled_rate=s["scheduled_rate"], sent_rate=s["sent_rate"],
            latency_ms=s["latency_ms"], lag_ms=s["lag_ms"], send_gaps_ks=s["send_gaps_ks"],
            request_bytes=request_bytes, response_bytes=response_bytes, output_dir=d,
            files={"json": str(d / "loadtest.json"), "csv": str(d / "loadtest.csv"), "records": str(records_path),
                   "locust_html": str(out_dir / "locust.html"), "locust_csv": str(out_dir / "locust_stats.csv")},
            command=tuple(cmds[0]), interrupted=cut and interrupted,
            fell_behind=meta["unfinished"] > 0 or (cut and not interrupted),
            generator=generator_cost(s, meta["cpu_s"], n, window),
            settings={"max_inflight": max_inflight, "seed": phase.seed, "unfinished": meta["unfinished"],
                      "not_sent": meta["not_sent"], "input_source": samples.source, "processes": n,
                      "drain_timeout_s": drain_timeout_s, "encode_per_request": encode_per_request},
        )
        write_summary_csv([result], d / "loadtest.csv")
        (d / "loadtest.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        results.append(result)
    shutil.rmtree(sync_dir, ignore_errors=True)
    if not results and not interrupted:
        if not target.alive():
            raise ServerError("the server stopped responding during the load test",
                              "see the server log below" if target.log_tail() else "check the server",
                              log_tail=target.log_tail())
        run = next((r for r in runs if r.returncode), runs[0])
        raise ExternalToolError(run.cmd, run.returncode, run.tail,
                                f"locust wrote no records; its log is in {out_dir / 'locust.log'}")
    if not interrupted and not target.alive():
        ok = sum(r.ok for r in results)
        raise ServerError(f"the server stopped responding during the load test ({ok} requests succeeded)",
                          f"partial results are in {out_dir}", log_tail=target.log_tail())
    return results, interrupted


def loadtest_on(target: Target, io: ModelIO, samples: Samples, options: LoadtestOptions,
                progress: Progress = lambda _: None) -> LoadtestResult:
    """One rate, one locust run against a server that is up."""
    o = options
    results, _ = run_locust(
        target, io, samples, o.protocol, [Phase(o.rate, o.duration_s, o.seed)], o.output_dir,
        batch_size=o.batch_size, max_inflight=o.max_inflight, model_version=o.model_version,
        drain_timeout_s=o.drain_timeout_s, processes=o.processes, progress=progress)
    if not results:
        raise KeyboardInterrupt
    return results[0]


SUMMARY_FIELDS = ("protocol", "offered_rate", "scheduled_rate", "achieved_rate", "achieved_ratio",
                  "achieved_vs_scheduled", "sent_rate", "duration_s",
                  "batch_size", "scheduled", "sent", "ok", "errors", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                  "mean_ms", "lag_p50_ms", "lag_p99_ms", "request_bytes", "response_bytes", "interrupted",
                  "fell_behind", "outcome", "generator_processes", "generator_cpu_ms_per_request",
                  "generator_lag_p99_ms", "generator_sent_vs_scheduled", "generator_saturated")


def summary_row(r: LoadtestResult) -> dict[str, Any]:
    lat, lag, g = r.latency_ms, r.lag_ms, r.generator
    return {
        "protocol": r.protocol, "offered_rate": r.offered_rate, "achieved_rate": round(r.achieved_rate, 3),
        "achieved_ratio": round(r.achieved_ratio, 4), "scheduled_rate": round(r.scheduled_rate, 3),
        "achieved_vs_scheduled": round(r.achieved_vs_scheduled, 4), "sent_rate": round(r.sent_rate, 3),
        "duration_s": round(r.duration_s, 3), "batch_size": r.batch_size, "scheduled": r.scheduled,
        "sent": r.sent, "ok": r.ok, "errors": r.error_count,
        **{f"{k}_ms": round(lat[k], 3) if k in lat else "" for k in ("p50", "p90", "p95", "p99", "mean")},
        "lag_p50_ms": round(lag["p50"], 3) if lag else "", "lag_p99_ms": round(lag["p99"], 3) if lag else "",
        "request_bytes": r.request_bytes, "response_bytes": r.response_bytes, "interrupted": r.interrupted,
        "fell_behind": r.fell_behind, "outcome": r.outcome, "generator_processes": g.processes,
        "generator_cpu_ms_per_request": "" if g.cpu_ms_per_request is None else round(g.cpu_ms_per_request, 4),
        "generator_lag_p99_ms": "" if g.lag_p99_ms is None else round(g.lag_p99_ms, 3),
        "generator_sent_vs_scheduled": "" if g.sent_vs_scheduled is None else round(g.sent_vs_scheduled, 4),
        "generator_saturated": g.saturated,
    }


def write_summary_csv(results: Sequence[LoadtestResult], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        for r in results:
            w.writerow(summary_row(r))
    return path


def run_loadtest(options: LoadtestOptions, progress: Progress = lambda _: None) -> LoadtestResult:
    """Start (or connect to) the server, generate request data, run locust once."""
    _require_locust()
    with open_target(options.serve, options.url, options.grpc_url, progress) as target:
        io = fetch_model_io(target, options.model, options.model_version)
        samples = prepare_samples(io, options.samples, options.shapes, options.seed)
        return loadtest_on(target, io, samples, options, progress)
