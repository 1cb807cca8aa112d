"""The CI regression gate: ``tritonops perf ... --baseline tune-record.json``.

A perf run is compared with the record ``tune --promote`` wrote: the throughput within the record's
latency budget (its percentile, its budget) must not drop, and the latency at the winner's
concurrency must not rise, by more than the tolerance. Each check says by how much it moved."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonops.errors import UsageError
from tritonops.paths import read_text
from tritonops.perf.analyzer import PerfResult, PerfRow
from tritonops.tune.promote import RECORD_SCHEMA

RECORD_READ_LIMIT = 16 << 20  # a tune record is a few kB; its journal lives beside it

DEFAULT_TOLERANCE = 0.10


@dataclass(frozen=True)
class GateCheck:
    name: str
    baseline: float
    measured: float | None
    change: float | None  # signed fraction: +0.05 = 5% higher than the baseline
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class GateResult:
    baseline: Path
    tolerance: float
    checks: tuple[GateCheck, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[str]:
        return [c.message for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": str(self.baseline), "tolerance": self.tolerance, "ok": self.ok,
                "checks": [c.to_dict() for c in self.checks]}


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(read_text(path, "the baseline", RECORD_READ_LIMIT))
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}: not JSON ({e.msg})", "give a tune-record.json") from None
    if not isinstance(record, dict) or record.get("schema") != RECORD_SCHEMA or not record.get("winner"):
        raise UsageError(f"{path} is not a tune record with a winner", "give the tune-record.json of a promoted run")
    return record


def _latency_ms(row: PerfRow, percentile: str) -> float | None:
    us = {"p50": row.p50_us, "p95": row.p95_us, "p99": row.p99_us}.get(percentile)
    return None if us is None else us / 1000.0


def check_tolerance(tolerance: float) -> float:
    if not 0 <= tolerance < 1:  # nan and inf fail too
        raise UsageError(f"--tolerance {tolerance:g} is outside 0..1", "e.g. --tolerance 0.1 (10%)")
    return tolerance


def load_baseline(path: Path, model: str, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """The promoted record the gate compares with, checked before anything is measured."""
    check_tolerance(tolerance)
    record = read_record(path)
    if record.get("model") != model:
        raise UsageError(f"the baseline {path} is for model '{record.get('model')}', not '{model}'",
                         "give the record of the model being measured")
    return record


def check_baseline(result: PerfResult, path: Path, tolerance: float = DEFAULT_TOLERANCE,
                   record: dict[str, Any] | None = None) -> GateResult:
    """``result`` against the record at ``path`` (``record``: already loaded by :func:`load_baseline`)."""
    if record is None:
        record = load_baseline(path, result.model, tolerance)
    objective = record.get("objective", {})
    pct = str(objective.get("percentile", "p99"))
    budget = objective.get("budget_ms")
    winner = record["winner"]
    rows = [r for r in result.rows if r.status == "ok" and r.throughput is not None and r.batch_size == 1]
    checks = []
    base_tput = winner.get("throughput")
    if base_tput:
        within = [r.throughput or 0.0 for r in rows if budget is None
                  or ((lat := _latency_ms(r, pct)) is not None and lat <= float(budget))]
        now = max(within, default=0.0)
        change = (now - base_tput) / base_tput
        what = f"throughput within {pct} <= {budget:g} ms" if budget is not None else "throughput"
        ok = change >= -tolerance
        checks.append(GateCheck("throughput", float(base_tput), now, change, ok,
                                f"{what} {'dropped' if change < 0 else 'rose'} {abs(change) * 100:.1f}% "
                                f"({base_tput:.1f} -> {now:.1f} infer/s)"
                                + ("" if ok else f", more than the {tolerance * 100:g}% tolerance")))
    base_lat, conc, rate = winner.get("latency_ms"), winner.get("concurrency"), winner.get("request_rate")
    # the winner's load: a concurrency, or (a record of a --request-rate run) an offered rate
    at = [r for r in rows if (rate is None and conc is not None and r.mode == "concurrency"
                              and int(r.load) == int(conc))
          or (rate is not None and r.mode == "request_rate" and abs(r.load - float(rate)) < 1e-6)]
    where = f"concurrency {conc}" if rate is None else f"request rate {float(rate):g}/s"
    if base_lat and at:
        lat = _latency_ms(at[-1], pct)
        if lat is not None:
            change = (lat - base_lat) / base_lat
            ok = change <= tolerance
            checks.append(GateCheck(pct, float(base_lat), lat, change, ok,
                                    f"{pct} at {where} {'rose' if change > 0 else 'fell'} "
                                    f"{abs(change) * 100:.1f}% ({base_lat:.2f} -> {lat:.2f} ms)"
                                    + ("" if ok else f", more than the {tolerance * 100:g}% tolerance")))
    if not checks:
        flag = f"--concurrency {conc or 1}" if rate is None else f"--request-rate {float(rate):g}"
        raise UsageError(f"the perf run measured nothing comparable with {path}",
                         f"sweep the record's load ({flag}) at batch size 1")
    return GateResult(path, tolerance, tuple(checks))
