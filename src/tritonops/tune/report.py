"""The tune report: one self-contained HTML page in the perf reports' style (perf/report.py, perf/svg.py).

Throughput vs latency of the candidates with the Pareto front and the budget line, the effect of
each parameter (the best score reached with each value), and for an ensemble the per-step queue and
compute time of the winner against the starting config. Measured at request rates, achieved vs
offered throughput per candidate; with memory measurements, each candidate's server memory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tritonops.perf.report import Section, Table, render_report, write_report
from tritonops.perf.svg import Series, bar_chart, line_chart
from tritonops.tune.result import TuneResult

TOP_SERIES = 6


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(latency, throughput) points no other point beats on both, by latency."""
    front: list[tuple[float, float]] = []
    for lat, tput in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or tput > front[-1][1]:
            front.append((lat, tput))
    return front


def _scatter(r: TuneResult) -> str:
    o = r.ranking.objective
    pct = o.percentile
    series = []
    for s in [s for s in r.ranking.scores if s.points][:TOP_SERIES]:
        pts = sorted(s.points, key=lambda p: p.latency_ms)
        series.append(Series(s.setting, [p.latency_ms for p in pts], [p.throughput for p in pts]))
    allpts = [(m["p50_ms" if pct == "p50" else "p95_ms" if pct == "p95" else "p99_ms"], m["throughput"])
              for m in r.measurements if m["status"] == "ok" and m["throughput"] is not None]
    allpts = [(float(a), float(b)) for a, b in allpts if a is not None]
    front = pareto(allpts)
    if front:
        series.append(Series("Pareto front (every measurement)", [p[0] for p in front], [p[1] for p in front],
                             dashed=True, color="#444444"))
    if o.budget_ms is not None and allpts:
        top = max(p[1] for p in allpts)
        series.append(Series(f"budget {pct} = {o.budget_ms:g} ms", [o.budget_ms, o.budget_ms], [0.0, top],
                             dashed=True, color="#d62728"))
    over = "offered request rate" if o.request_rate else "concurrency"
    return line_chart(f"Throughput vs {pct} latency (one line per candidate, over {over})",
                      f"{pct} latency (ms)", "inferences/s", series, log_x=True)


def _offered(r: TuneResult) -> list[str]:
    """Request-rate mode: achieved vs offered throughput (on the diagonal: the server kept up)."""
    if not r.ranking.objective.request_rate:
        return []
    series = []
    for s in [s for s in r.ranking.scores if s.points][:TOP_SERIES]:
        pts = sorted(s.points, key=lambda p: p.load)
        series.append(Series(s.setting, [p.load for p in pts], [p.throughput for p in pts]))
    return [line_chart("Achieved vs offered throughput (Poisson arrivals; the diagonal: kept up)",
                       "offered requests/s", "achieved inferences/s", series, diagonal=True)]


def _load_of(m: dict[str, Any]) -> float:
    return float(m["request_rate"] if m.get("request_rate") is not None else m["concurrency"])


def _effects(r: TuneResult) -> list[str]:
    """Per parameter of the first tuned model with several values: the best score reached with each value."""
    figs: list[str] = []
    if not r.winner:
        return figs
    value_of = {s.setting: s.value for s in r.ranking.scores if s.value is not None}
    model = next(iter(r.winner))
    space = r.spaces[model].values()
    per_setting = r.candidates
    for dim, values in space.items():
        if len(values) < 2:
            continue
        labels, bars = [], []
        for v in values:
            best = [value_of[k] for k, c in per_setting.items() if k in value_of and model in c
                    and _dim_value(c[model], dim) == v]
            if best:
                labels.append(str(v))
                bars.append(max(best) if r.ranking.objective.kind == "throughput" else min(best))
        if len(labels) > 1:
            unit = "inferences/s" if r.ranking.objective.kind == "throughput" else "ms"
            figs.append(bar_chart(f"Effect of {dim} ({model}): best score with each value", unit, labels,
                                  [("best score", bars)]))
    return figs


def _dim_value(cand: dict[str, Any], dim: str) -> Any:
    if dim == "preferred":
        return bool(cand.get("preferred"))
    return cand.get(dim)


def _steps(r: TuneResult) -> tuple[list[str], list[Table]]:
    if not r.ensemble_steps:
        return [], []
    winner = r.ranking.winner

    def steps_of(setting: str) -> dict[str, dict[str, Any]]:
        ms = [m for m in r.measurements if m["setting"] == setting and m["status"] == "ok" and m.get("steps")]
        return max(ms, key=_load_of)["steps"] if ms else {}

    start = steps_of(r.start_key)
    best = steps_of(winner.setting) if winner else {}
    names = list(r.ensemble_steps)

    def val(d: dict[str, dict[str, Any]], n: str, k: str) -> float:
        return float(d.get(n, {}).get(k) or 0.0) / 1000.0

    fig = bar_chart("Per-step queue and compute time per request: start vs winner", "ms", names, [
        ("start queue", [val(start, n, "queue_us") for n in names]),
        ("start compute", [val(start, n, "compute_us") for n in names]),
        ("winner queue", [val(best, n, "queue_us") for n in names]),
        ("winner compute", [val(best, n, "compute_us") for n in names])])
    rows = tuple((n, _f(val(start, n, "queue_us")), _f(val(start, n, "compute_us")), _f(val(best, n, "queue_us")),
                  _f(val(best, n, "compute_us"))) for n in names)
    return [fig], [Table(("step", "start queue ms", "start compute ms", "winner queue ms", "winner compute ms"),
                         rows, "Triton's statistics around the highest-load measurement of each")]


def write_tune_report(r: TuneResult, path: Path) -> Path:
    o = r.ranking.objective
    findings = [r.ranking.summary()]
    if r.interrupted:
        findings.insert(0, "The search was interrupted: these numbers cover only the measurements that finished.")
    findings.append(f"{r.measured} perf_analyzer measurement(s) in this run, {r.reused} reused from the journal; "
                    f"{len(r.ranking.scores)} candidate(s) ranked.")
    start = next((s for s in r.ranking.scores if s.setting == r.start_key), None)
    w = r.ranking.winner
    if start and w and start.value and w.value and w.setting != start.setting and o.kind == "throughput":
        findings.append(f"The winner reaches {w.value / start.value:.2f}× the starting config's throughput "
                        "within the budget.")
    if r.promoted:
        findings.append(f"Promoted into the repository: {', '.join(sorted(r.promoted))}.")
    memory = any(s.memory_mb is not None for s in r.ranking.scores)
    rows = tuple((s.setting, "yes" if s.met else f"no: {s.why}" if s.why else "no", _f(s.throughput, 1),
                  _f(s.latency_ms), "-" if s.load is None else f"{s.load:g}",
                  *((_f(s.memory_mb, 0),) if memory else ()), "final" if s.final else "search")
                 for s in r.ranking.scores)
    load = "offered req/s" if o.request_rate else "concurrency"
    table = Table(("candidate", "meets objective", "infer/s", f"{o.percentile} ms", load,
                   *(("server memory MB",) if memory else ()), "scored from"), rows, o.describe())
    step_figs, step_tables = _steps(r)
    sections = [
        Section("Candidates", (f"Strategy {r.strategy}; objective: {o.describe()}.",),
                (_scatter(r), *_offered(r)), (table,)),
        Section("Effect of each parameter", (), tuple(_effects(r)), ()),
    ]
    if step_figs:
        sections.append(Section("Ensemble steps", ("The step with the most queue + compute time is tuned first.",),
                                tuple(step_figs), tuple(step_tables)))
    meta = {"model": r.model, "server": f"Triton {r.server_version}", "settings": json.dumps(r.settings),
            "journal": r.files.get("journal", ""), "wall time": f"{r.wall_s:.0f} s"}
    return write_report(path, render_report(f"Tune: {r.model}", o.describe(), findings, sections, meta))
