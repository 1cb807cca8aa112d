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
import os
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
from tritonops.client import InferProtocol, TritonClient, grpc_request_bytes, http_request_body
from tritonops.errors import ExternalToolError, MissingDependencyError, ServerError, UsageError
from tritonops.external import run_tool
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
# The generator keeps its schedule when it sent this share of the arrivals, with send lag p99 under GENERATOR_LAG_MS.
GENERATOR_SENT = 0.99
GENERATOR_LAG_MS = 10.0
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


@dataclass(frozen=True)
class GeneratorCost:
    """The load generator's own cost in one cell, over all of its processes."""

    processes: int = 1
    cpu_ms_per_request: float | None = None  # user + system CPU of the generator processes / requests sent
    lag_p99_ms: float | None = None  # actual send - scheduled send
    sent_vs_scheduled: float | None = None
    saturated: bool = False  # it could not keep the schedule (sent < GENERATOR_SENT or lag p99 > GENERATOR_LAG_MS)


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
            headers = {"Content-Type": "application/octet-stream" if header_len else "application/json"}
            if header_len is not None:
                headers["Inference-Header-Content-Length"] = str(header_len)
            path = f"/v2/models/{io.name}" + (f"/versions/{version}" if version else "") + "/infer"
            req = urllib.request.Request(f"http://{target.http_url}{path}", data=body, headers=headers)
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


def run_locust(target: Target, io: ModelIO, samples: Samples, protocol: LoadProtocol, phases: Sequence[Phase],
               out_dir: Path, *, batch_size: int = 1, max_inflight: int = 256, model_version: str = "",
               drain_timeout_s: float = 30.0, pause_s: float = 0.5,
               payloads: dict[LoadProtocol, tuple[int, int]] | None = None,
               cell_timeout_s: float | None = None, processes: int | None = None,
               progress: Progress = lambda _: None) -> tuple[list[LoadtestResult], bool]:
    """One locust process running ``phases`` back to back (one process start for many rates).

    ``cell_timeout_s`` bounds each phase's wall time (its schedule plus the drain of what is in flight;
    default: the duration plus ``drain_timeout_s``); a phase that has not drained by then is marked
    ``fell_behind``. ``processes``: generator processes (None: as many as the schedule needs).

    Returns the results of the phases that ran and whether the run was interrupted (Ctrl-C); a
    phase cut short is marked ``interrupted`` and covers the time it ran."""
    _require_locust()
    if cell_timeout_s is not None:
        drain_timeout_s = max(0.0, cell_timeout_s - max(p.duration_s for p in phases))
    if batch_size > max(io.max_batch_size, 1):
        raise UsageError(f"--batch-size {batch_size} is above the model's max_batch_size {io.max_batch_size}",
                         f"use a batch size up to {max(io.max_batch_size, 1)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    data_file = write_input_data(samples, out_dir / "input_data.json")
    if payloads is None:
        first = {k: (np.stack([v] * batch_size) if io.batched else v) for k, v in samples.items[0].items()}
        payloads = measure_payloads(target, io, first, model_version)
    request_bytes, response_bytes = payloads[protocol]
    phase_dirs = [out_dir / p.subdir if p.subdir else out_dir for p in phases]
    for d in phase_dirs:
        d.mkdir(parents=True, exist_ok=True)
        (d / "records.json").unlink(missing_ok=True)
    config = {
        "model": io.name, "version": model_version, "http_url": target.http_url, "grpc_url": target.grpc_url,
        "max_inflight": max_inflight, "batch": batch_size, "batched": io.batched, "input_data": str(data_file),
        "inputs": [{"name": s.name, "datatype": s.dtype.name} for s in io.inputs if s.name in samples.items[0]],
        "outputs": [s.name for s in io.outputs], "drain_timeout_s": drain_timeout_s, "pause_s": pause_s,
        "response_bytes": {protocol: response_bytes},
        "phases": [{"rate": p.rate, "duration_s": p.duration_s, "seed": p.seed, "records_path": str(d / "records.json")}
                   for p, d in zip(phases, phase_dirs, strict=True)],
    }
    config_path = out_dir / "locust_config.json"
    config_path.write_text(json.dumps(config, indent=2))
    limit = int(sum(p.duration_s + drain_timeout_s + pause_s for p in phases) + 30)
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "1", "-r", "1",
           "-t", f"{limit}s", "--stop-timeout", "0", "--only-summary", "--exit-code-on-error", "0",
           "--csv", str(out_dir / "locust"), "--html", str(out_dir / "locust.html"), "--loglevel", "WARNING",
           USER_CLASS[protocol]]
    rates = ", ".join(f"{p.rate:g}" for p in phases)
    progress(f"locust: {protocol} at {rates} req/s, {phases[0].duration_s:g} s each")
    interrupted = False
    run = None
    try:
        run = run_tool(cmd, env=_child_env(config_path), timeout_s=limit + 60, check=False)
        (out_dir / "locust.log").write_text(run.output)
    except KeyboardInterrupt:
        interrupted = True
    results = []
    for phase, d in zip(phases, phase_dirs, strict=True):
        records_path = d / "records.json"
        if not records_path.exists():
            break
        doc = json.loads(records_path.read_text())
        meta = doc["meta"]
        cut = bool(meta.get("stopped_early"))
        window = float(meta["schedule_end_s"]) if cut else phase.duration_s
        s = summarize(doc["records"], max(window, 1e-9), phase.rate)
        result = LoadtestResult(
            model=io.name, protocol=protocol, offered_rate=phase.rate, duration_s=window, batch_size=batch_size,
            scheduled=s["scheduled"], sent=s["sent"], ok=s["ok"], errors=s["errors"],
            achieved_rate=s["achieved_rate"], scheduled_rate=s["scheduled_rate"], sent_rate=s["sent_rate"],
            latency_ms=s["latency_ms"], lag_ms=s["lag_ms"], send_gaps_ks=s["send_gaps_ks"],
            request_bytes=request_bytes, response_bytes=response_bytes, output_dir=d,
            files={"json": str(d / "loadtest.json"), "csv": str(d / "loadtest.csv"), "records": str(records_path),
                   "locust_html": str(out_dir / "locust.html"), "locust_csv": str(out_dir / "locust_stats.csv")},
            command=tuple(cmd), interrupted=cut, fell_behind=int(meta.get("unfinished", 0)) > 0,
            settings={"max_inflight": max_inflight, "seed": phase.seed, "unfinished": meta.get("unfinished", 0),
                      "input_source": samples.source},
        )
        write_summary_csv([result], d / "loadtest.csv")
        (d / "loadtest.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        results.append(result)
        interrupted = interrupted or cut
    if not results and not interrupted:
        if not target.alive():
            raise ServerError("the server stopped responding during the load test",
                              "see the server log below" if target.log_tail() else "check the server",
                              log_tail=target.log_tail())
        assert run is not None
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
        drain_timeout_s=o.drain_timeout_s, progress=progress)
    if not results:
        raise KeyboardInterrupt
    return results[0]


SUMMARY_FIELDS = ("protocol", "offered_rate", "scheduled_rate", "achieved_rate", "achieved_ratio",
                  "achieved_vs_scheduled", "sent_rate", "duration_s",
                  "batch_size", "scheduled", "sent", "ok", "errors", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                  "mean_ms", "lag_p50_ms", "lag_p99_ms", "request_bytes", "response_bytes", "interrupted")


def summary_row(r: LoadtestResult) -> dict[str, Any]:
    lat, lag = r.latency_ms, r.lag_ms
    return {
        "protocol": r.protocol, "offered_rate": r.offered_rate, "achieved_rate": round(r.achieved_rate, 3),
        "achieved_ratio": round(r.achieved_ratio, 4), "scheduled_rate": round(r.scheduled_rate, 3),
        "achieved_vs_scheduled": round(r.achieved_vs_scheduled, 4), "sent_rate": round(r.sent_rate, 3),
        "duration_s": round(r.duration_s, 3), "batch_size": r.batch_size, "scheduled": r.scheduled,
        "sent": r.sent, "ok": r.ok, "errors": r.error_count,
        **{f"{k}_ms": round(lat[k], 3) if k in lat else "" for k in ("p50", "p90", "p95", "p99", "mean")},
        "lag_p50_ms": round(lag["p50"], 3) if lag else "", "lag_p99_ms": round(lag["p99"], 3) if lag else "",
        "request_bytes": r.request_bytes, "response_bytes": r.response_bytes, "interrupted": r.interrupted,
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
