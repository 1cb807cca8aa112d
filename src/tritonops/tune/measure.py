"""One measurement of ``tritonops tune``: one perf_analyzer point (a candidate at one concurrency,
or at one offered request rate with Poisson arrivals).

The point goes through perf/analyzer.py's ``sweep`` (the same command line, CSV parsing and
dead-server detection as ``tritonops perf``) under a timeout. A hung measurement is killed by the
timeout, an unstable one ends with perf_analyzer's own code; either is retried once and then
recorded as failed: it never aborts the search. A server that died, or a perf_analyzer that cannot
run at all, does abort it (with the journal kept). With a memory probe (``--max-memory-mb``) the
server's peak memory during the measurement is recorded with it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tritonops.errors import ExternalToolError
from tritonops.perf.analyzer import PerfOptions, PerfRow, library_hint, sweep
from tritonops.perf.target import Target
from tritonops.progress import Progress
from tritonops.tune.apply import StatsProbe
from tritonops.tune.memory import MemoryProbe, PeakMemory

Status = Literal["ok", "failed"]


@dataclass(frozen=True)
class MeasureSettings:
    """perf_analyzer's stability settings for every measurement, and the per-measurement timeout."""

    protocol: Literal["http", "grpc"] = "grpc"
    measurement_interval_ms: int = 1000
    stability_percentage: float = 15.0
    max_trials: int = 6
    timeout_s: float = 120.0
    retries: int = 1
    samples: Path | None = None
    shapes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Measurement:
    """What one measurement found. Latencies in ms; ``steps``: per-model queue/compute (µs per request).
    In request-rate mode ``request_rate`` is the offered rate (requests/s) and ``concurrency`` is 0;
    ``memory_mb``: the server's peak memory while it was measured (None: not measured)."""

    setting: str
    concurrency: int
    round: int  # 0: the search; 1..N: the final interleaved rounds
    status: Status
    throughput: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    avg_ms: float | None = None
    attempts: int = 1
    seconds: float = 0.0
    note: str = ""
    steps: dict[str, dict[str, float | None]] = field(default_factory=dict)
    request_rate: float | None = None
    memory_mb: float | None = None
    window_ms: int | None = None  # perf_analyzer's measurement window asked for (a retry may double it)

    @property
    def load(self) -> float:
        """The concurrency, or the offered request rate."""
        return float(self.request_rate if self.request_rate is not None else self.concurrency)

    @property
    def key(self) -> tuple[str, float, int]:
        return (self.setting, self.load, self.round)

    def latency_ms(self, percentile: str) -> float | None:
        return {"p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms}[percentile]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


@dataclass(frozen=True)
class Load:
    """Where one measurement is taken: a concurrency, or an offered request rate (Poisson arrivals)."""

    concurrency: int = 0
    request_rate: float | None = None

    @property
    def value(self) -> float:
        return float(self.request_rate if self.request_rate is not None else self.concurrency)

    def describe(self) -> str:
        return (f"concurrency {self.concurrency}" if self.request_rate is None
                else f"request rate {self.request_rate:g}/s")


def _from_row(row: PerfRow, setting: str, load: Load, round_: int, attempts: int, seconds: float,
              steps: dict[str, dict[str, float | None]], memory_mb: float | None, window_ms: int) -> Measurement:
    return Measurement(setting=setting, concurrency=load.concurrency, round=round_, status="ok",
                       throughput=row.throughput, p50_ms=_ms(row.p50_us), p95_ms=_ms(row.p95_us),
                       p99_ms=_ms(row.p99_us), avg_ms=_ms(row.avg_us), attempts=attempts,
                       seconds=round(seconds, 2), steps=steps, request_rate=load.request_rate,
                       memory_mb=memory_mb, window_ms=window_ms)


def measure(target: Target, model: str, setting: str, load: Load | int, round_: int, settings: MeasureSettings,
            work_dir: Path, probe: StatsProbe | None, progress: Progress,
            memory: MemoryProbe | None = None) -> Measurement:
    """Measure ``model`` (as loaded now) at ``load`` (a plain int: that concurrency); retried, never
    raising for a bad measurement.

    Raises KeyboardInterrupt on Ctrl-C, ServerError when the server died, ExternalToolError when
    perf_analyzer itself cannot run (a missing library)."""
    if isinstance(load, int):
        load = Load(load)
    note = ""
    start = time.monotonic()
    where = f"{setting} at {load.describe()}"
    for attempt in range(1, settings.retries + 2):
        out = work_dir / f"a{attempt}"
        shutil.rmtree(out, ignore_errors=True)
        rate = load.request_rate
        options = PerfOptions(
            model=model, output_dir=out, url=target.http_url, grpc_url=target.grpc_url, protocol=settings.protocol,
            concurrency=() if rate is not None else (load.concurrency,),
            request_rate=() if rate is None else (rate,), distribution="poisson",
            measurement_interval_ms=settings.measurement_interval_ms,
            stability_percentage=settings.stability_percentage, max_trials=settings.max_trials,
            percentile=None, samples=settings.samples, shapes=settings.shapes, point_timeout_s=settings.timeout_s)
        if probe is not None:
            probe.start()
        peak = PeakMemory(memory)
        try:
            with peak:
                res = sweep(options, target)
        except ExternalToolError as e:
            if library_hint(e.output_tail):
                raise
            note = ("timed out after " f"{settings.timeout_s:g} s and was killed" if e.returncode == 124
                    else f"perf_analyzer failed: {e.hint or e.message}")
            progress(f"{where}: {note}" + ("; retrying" if attempt <= settings.retries else ""))
            continue
        if res.interrupted:
            raise KeyboardInterrupt
        ok = [r for r in res.rows if r.status == "ok" and r.throughput is not None]
        if ok:
            steps = probe.delta() if probe is not None else {}
            return _from_row(ok[-1], setting, load, round_, attempt, time.monotonic() - start, steps, peak.mb,
                             settings.measurement_interval_ms)
        note = next((r.note for r in res.rows if r.note), "no stable measurement")
        progress(f"{where}: {note}" + ("; retrying" if attempt <= settings.retries else ""))
    return Measurement(setting=setting, concurrency=load.concurrency, round=round_, status="failed",
                       attempts=settings.retries + 1, seconds=round(time.monotonic() - start, 2), note=note,
                       request_rate=load.request_rate)
