"""``tritonops study protocols``: HTTP JSON vs HTTP binary vs gRPC on one model and one server.

The matrix {protocols} × {Poisson rates λ} runs open-loop through locust, repeated for a spread
(protocol order rotates between repeats so no protocol always runs first), plus a closed-loop
concurrency sweep per protocol through perf_analyzer (C++ client: the server's side of the
story). The result is a table, a self-contained HTML report with SVG plots, and findings derived
from the numbers: which protocol has the lowest tail latency where, which ones keep up with the
offered load, what each puts on the wire.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tritonops.errors import TritonOpsError, UsageError
from tritonops.perf.analyzer import PerfOptions, PerfRow, prepare_samples, require_perf_analyzer, sweep
from tritonops.perf.inputs import check_samples_path
from tritonops.perf.loadtest import (
    KEEPS_UP,
    MAX_RATE,
    PROTOCOLS,
    SUMMARY_FIELDS,
    LoadProtocol,
    LoadtestResult,
    Phase,
    measure_payloads,
    run_locust,
    summary_row,
)
from tritonops.perf.report import Section, Table, render_report, write_report
from tritonops.perf.svg import Series, bar_chart, line_chart
from tritonops.perf.target import fetch_model_io, open_target
from tritonops.progress import Progress
from tritonops.units import check_number

SCHEMA = "tritonops.study.protocols/1"
LABEL = {"http-json": "HTTP JSON", "http-binary": "HTTP binary", "grpc": "gRPC"}
COLOR = {"http-json": "#d62728", "http-binary": "#1f77b4", "grpc": "#2ca02c"}


@dataclass(frozen=True)
class ProtocolStudyOptions:
    model: str
    output_dir: Path
    rates: tuple[float, ...] = (25.0, 50.0, 100.0, 200.0)
    protocols: tuple[LoadProtocol, ...] = PROTOCOLS
    repeats: int = 3
    duration_s: float = 10.0
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    measurement_interval_ms: int = 2000
    stability_percentage: float = 10.0
    max_trials: int = 10
    serve: Path | None = None
    url: str | None = None
    grpc_url: str | None = None
    model_version: str = ""
    batch_size: int = 1
    max_inflight: int = 256
    samples: Path | None = None
    shapes: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples is not None:  # before any server is asked
            check_samples_path(self.samples)
        if not self.rates:
            raise UsageError("--rates needs positive request rates", "e.g. --rates 25,50,100,200")
        for r in self.rates:
            check_number(r, "--rates", low=0, low_open=True, high=MAX_RATE, hint="e.g. --rates 25,50,100,200")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise UsageError(f"unknown protocol(s): {', '.join(bad) or 'none given'}",
                             f"use some of: {', '.join(PROTOCOLS)}")
        check_number(self.repeats, "--repeats", low=1, high=100, integer=True, hint="use --repeats 3 for a spread")
        check_number(self.duration_s, "--duration", low=1, high=24 * 3600, hint="use at least 1 s per cell")


@dataclass(frozen=True)
class Cell:
    """One (protocol, λ) over all repeats: medians and the min–max spread."""

    protocol: LoadProtocol
    rate: float
    runs: int
    achieved_rate: float
    achieved_ratio: float  # achieved / λ
    achieved_vs_scheduled: float
    errors: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p50_range: tuple[float, float] | None
    p99_range: tuple[float, float] | None
    achieved_range: tuple[float, float]
    request_bytes: int
    response_bytes: int

    @property
    def keeps_up(self) -> bool:
        return self.errors == 0 and self.achieved_vs_scheduled >= KEEPS_UP


@dataclass(frozen=True)
class ProtocolStudyResult:
    model: str
    cells: tuple[Cell, ...]
    runs: tuple[LoadtestResult, ...]
    run_repeat: tuple[int, ...]
    concurrency: dict[str, tuple[PerfRow, ...]]
    payloads: dict[str, tuple[int, int]]
    findings: tuple[str, ...]
    output_dir: Path
    files: dict[str, str]
    interrupted: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "model": self.model, "interrupted": self.interrupted, "settings": self.settings,
            "findings": list(self.findings),
            "payload_bytes": {p: {"request": q, "response": r} for p, (q, r) in self.payloads.items()},
            "cells": [{**asdict(c), "keeps_up": c.keeps_up} for c in self.cells],
            "runs": [{"repeat": rep, **summary_row(r)} for r, rep in zip(self.runs, self.run_repeat, strict=True)],
            "concurrency": {p: [asdict(r) for r in rows] for p, rows in self.concurrency.items()},
            "files": self.files,
        }


# ------------------------------------------------------------------------------------------- aggregation
def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _range(values: Sequence[float]) -> tuple[float, float] | None:
    return (min(values), max(values)) if values else None


def aggregate(runs: Sequence[LoadtestResult]) -> list[Cell]:
    cells = []
    keys = sorted({(r.protocol, r.offered_rate) for r in runs}, key=lambda k: (PROTOCOLS.index(k[0]), k[1]))
    for proto, rate in keys:
        rs = [r for r in runs if r.protocol == proto and r.offered_rate == rate]
        p50 = [r.latency_ms["p50"] for r in rs if r.latency_ms]
        p90 = [r.latency_ms["p90"] for r in rs if r.latency_ms]
        p99 = [r.latency_ms["p99"] for r in rs if r.latency_ms]
        achieved = [r.achieved_rate for r in rs]
        cells.append(Cell(
            protocol=proto, rate=rate, runs=len(rs), achieved_rate=float(statistics.median(achieved)),
            achieved_ratio=float(statistics.median(r.achieved_ratio for r in rs)),
            achieved_vs_scheduled=float(statistics.median(r.achieved_vs_scheduled for r in rs)),
            errors=sum(r.error_count for r in rs), p50_ms=_median(p50), p90_ms=_median(p90), p99_ms=_median(p99),
            p50_range=_range(p50), p99_range=_range(p99), achieved_range=(min(achieved), max(achieved)),
            request_bytes=rs[0].request_bytes, response_bytes=rs[0].response_bytes,
        ))
    return cells


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}")


def _rates_text(rates: Sequence[float]) -> str:
    rates = sorted(rates)
    if len(rates) == 1:
        return f"{rates[0]:g} req/s"
    return f"{rates[0]:g}–{rates[-1]:g} req/s"


def derive_findings(cells: Sequence[Cell], concurrency: dict[str, tuple[PerfRow, ...]],
                    payloads: dict[str, tuple[int, int]], repeats: int) -> list[str]:
    """Plain sentences, each computed from the measured numbers (nothing here is a fixed claim)."""
    findings: list[str] = []
    rates = sorted({c.rate for c in cells})
    protos = [p for p in PROTOCOLS if any(c.protocol == p for c in cells)]
    by = {(c.protocol, c.rate): c for c in cells}

    # 1. tail latency winner per rate, grouped over consecutive rates with the same verdict
    verdicts: list[tuple[float, str, str]] = []
    for rate in rates:
        ok = [by[(p, rate)] for p in protos if (p, rate) in by and by[(p, rate)].keeps_up and by[(p, rate)].p99_ms]
        if not ok:
            verdicts.append((rate, "", "no protocol kept up"))
            continue
        ok.sort(key=lambda c: c.p99_ms or 0.0)
        best = ok[0]
        others = ok[1:]
        if not others:
            verdicts.append((rate, best.protocol, "only one kept up"))
            continue
        clear = repeats > 1 and best.p99_range is not None and all(
            o.p99_range is not None and best.p99_range[1] < o.p99_range[0] for o in others)
        verdicts.append((rate, best.protocol, "clear" if clear else "overlapping"))
    i = 0
    while i < len(verdicts):
        j = i
        while j + 1 < len(verdicts) and verdicts[j + 1][1:] == verdicts[i][1:]:
            j += 1
        group = [v[0] for v in verdicts[i:j + 1]]
        winner, how = verdicts[i][1], verdicts[i][2]
        if not winner:
            findings.append(f"At {_rates_text(group)} no protocol kept up with the offered load.")
        else:
            parts = []
            for rate in group:
                row = sorted((by[(p, rate)] for p in protos if (p, rate) in by and by[(p, rate)].keeps_up),
                             key=lambda c: c.p99_ms or 0.0)
                parts.append(f"{rate:g}/s: " + ", ".join(f"{LABEL[c.protocol]} {_ms(c.p99_ms)}" for c in row))
            detail = "; ".join(parts)
            if how == "clear":
                findings.append(f"At {_rates_text(group)}, {LABEL[winner]} has the lowest p99 latency, and its "
                                f"range over {repeats} repeats does not overlap the others' (p99 ms — {detail}).")
            elif how == "only one kept up":
                findings.append(f"At {_rates_text(group)}, only {LABEL[winner]} kept up (p99 ms — {detail}).")
            else:
                findings.append(f"At {_rates_text(group)}, {LABEL[winner]} has the lowest median p99, but the "
                                f"ranges over {repeats} repeat(s) overlap: no clear winner (p99 ms — {detail}).")
        i = j + 1

    # 2. who keeps up with the offered load
    for p in protos:
        behind = [by[(p, r)] for r in rates if (p, r) in by and not by[(p, r)].keeps_up]
        if behind:
            c = behind[0]
            errs = f", {c.errors} errors" if c.errors else ""
            findings.append(f"{LABEL[p]} fell behind from {c.rate:g} req/s: it achieved {c.achieved_rate:.0f}/s "
                            f"({c.achieved_vs_scheduled:.0%} of the schedule{errs}).")
    keep_all = [p for p in protos if all(by[(p, r)].keeps_up for r in rates if (p, r) in by)]
    if keep_all and len(keep_all) == len(protos):
        findings.append(f"Every protocol kept up with every offered rate up to {rates[-1]:g} req/s "
                        f"(achieved ≥ {KEEPS_UP:.0%} of the schedule, no errors).")

    # 3. wire size
    if payloads:
        req = {p: payloads[p][0] for p in protos if p in payloads}
        resp = {p: payloads[p][1] for p in protos if p in payloads}
        smallest = min(req, key=lambda p: req[p])
        text = ", ".join(f"{LABEL[p]} {req[p]} B" for p in protos if p in req)
        findings.append(f"Request size on the wire: {text}; responses: "
                        + ", ".join(f"{LABEL[p]} {resp[p]} B" for p in protos if p in resp)
                        + f". {LABEL[smallest]} is the most compact.")
        if "http-json" in req and "http-binary" in req and req["http-binary"]:
            findings.append(f"JSON tensors make HTTP requests {req['http-json'] / req['http-binary']:.2f}× the size "
                            "of the binary tensor extension.")

    # 4. closed-loop capacity (perf_analyzer)
    peaks: dict[str, PerfRow] = {}
    for proto, prows in concurrency.items():
        measured = [r for r in prows if r.status == "ok" and r.throughput]
        if measured:
            peaks[proto] = max(measured, key=lambda r: r.throughput or 0.0)
    if peaks:
        order = sorted(peaks, key=lambda p: -(peaks[p].throughput or 0.0))
        top = peaks[order[0]]
        text = ", ".join(f"{LABEL[p]} {peaks[p].throughput:.0f}/s (concurrency {peaks[p].load:g})" for p in order)
        findings.append(f"Closed-loop peak throughput with perf_analyzer's C++ client: {text}.")
        if len(order) > 1 and peaks[order[1]].throughput:
            gain = (top.throughput or 0.0) / (peaks[order[1]].throughput or 1.0) - 1
            findings.append(f"{LABEL[order[0]]} leads the next protocol by {gain:.0%} at peak; "
                            + ("under 5%, which one perf_analyzer sweep cannot tell apart from noise."
                               if gain < 0.05 else "client and server share the cores, so this includes "
                               "the client's cost of each protocol."))
    return findings


# ------------------------------------------------------------------------------------------- report
def _figures(cells: Sequence[Cell], concurrency: dict[str, tuple[PerfRow, ...]],
             payloads: dict[str, tuple[int, int]]) -> list[str]:
    protos = [p for p in PROTOCOLS if any(c.protocol == p for c in cells)]
    figs = []

    def series(metric: str, rng: str | None) -> list[Series]:
        out = []
        for p in protos:
            cs = sorted((c for c in cells if c.protocol == p), key=lambda c: c.rate)
            ranges = [getattr(c, rng) if rng else None for c in cs]
            out.append(Series(LABEL[p], [c.rate for c in cs], [getattr(c, metric) for c in cs],
                              lo=[r[0] if r else None for r in ranges] if rng else None,
                              hi=[r[1] if r else None for r in ranges] if rng else None, color=COLOR[p]))
        return out

    if cells:
        figs.append(line_chart("p99 latency vs offered load (median, min–max over repeats)", "offered λ (req/s)",
                               "p99 latency (ms)", series("p99_ms", "p99_range"), log_y=True))
        figs.append(line_chart("p50 latency vs offered load (median, min–max over repeats)", "offered λ (req/s)",
                               "p50 latency (ms)", series("p50_ms", "p50_range"), log_y=True))
        figs.append(line_chart("Throughput vs offered load (dashed: achieved = offered)", "offered λ (req/s)",
                               "achieved (req/s)", series("achieved_rate", "achieved_range"), diagonal=True))
    if payloads:
        ps = [p for p in protos if p in payloads]
        figs.append(bar_chart("Payload per request", "bytes", [LABEL[p] for p in ps],
                              [("request", [payloads[p][0] for p in ps]), ("response", [payloads[p][1] for p in ps])],
                              colors=("#7b5ea7", "#c9a227")))
    if concurrency:
        tput, p99 = [], []
        for p, rows in concurrency.items():
            ok = sorted((r for r in rows if r.status == "ok"), key=lambda r: r.load)
            if ok:
                tput.append(Series(LABEL[p], [r.load for r in ok], [r.throughput for r in ok], color=COLOR[p]))
                p99.append(Series(LABEL[p], [r.load for r in ok],
                                  [None if r.p99_us is None else r.p99_us / 1000 for r in ok], color=COLOR[p]))
        if tput:
            figs.append(line_chart("Closed loop: throughput vs concurrency (perf_analyzer)", "concurrency",
                                   "inferences/s", tput))
            figs.append(line_chart("Closed loop: p99 latency vs concurrency (perf_analyzer)", "concurrency",
                                   "p99 latency (ms)", p99))
    return figs


def _tables(cells: Sequence[Cell], concurrency: dict[str, tuple[PerfRow, ...]]) -> list[Table]:
    rows = tuple((LABEL[c.protocol], f"{c.rate:g}", str(c.runs), f"{c.achieved_rate:.1f}",
                  f"{c.achieved_vs_scheduled:.3f}", str(c.errors), _ms(c.p50_ms), _ms(c.p90_ms), _ms(c.p99_ms),
                  "-" if c.p99_range is None else f"{_ms(c.p99_range[0])}–{_ms(c.p99_range[1])}",
                  str(c.request_bytes), str(c.response_bytes), "yes" if c.keeps_up else "no") for c in cells)
    tables = [Table(("protocol", "λ req/s", "repeats", "achieved/s", "achieved/scheduled", "errors", "p50 ms",
                     "p90 ms", "p99 ms", "p99 range", "request B", "response B", "keeps up"), rows,
                    "Open loop (locust, Poisson arrivals): medians over repeats")]
    def ms(us: float | None) -> str:
        return _ms(None if us is None else us / 1000)

    crows = tuple((LABEL.get(p, p), f"{r.load:g}", r.status, "-" if r.throughput is None else f"{r.throughput:.1f}",
                   ms(r.p50_us), ms(r.p99_us), ms(r.server_queue_us), ms(r.server_compute_infer_us))
                  for p, rs in concurrency.items() for r in rs)
    if crows:
        tables.append(Table(("protocol", "concurrency", "status", "infer/s", "p50 ms", "p99 ms", "server queue ms",
                             "server infer ms"), crows, "Closed loop (perf_analyzer)"))
    return tables


def write_study_csv(runs: Sequence[LoadtestResult], repeats: Sequence[int], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["repeat", *SUMMARY_FIELDS])
        w.writeheader()
        for r, rep in zip(runs, repeats, strict=True):
            w.writerow({"repeat": rep, **summary_row(r)})
    return path


# ------------------------------------------------------------------------------------------- the study
def run_protocol_study(options: ProtocolStudyOptions, progress: Progress = lambda _: None) -> ProtocolStudyResult:
    o = options
    if o.concurrency:
        require_perf_analyzer()
    out = o.output_dir
    runs: list[LoadtestResult] = []
    run_repeat: list[int] = []
    concurrency: dict[str, tuple[PerfRow, ...]] = {}
    interrupted = False
    payloads: dict[str, tuple[int, int]] = {}
    with open_target(o.serve, o.url, o.grpc_url, progress) as target:
        io = fetch_model_io(target, o.model, o.model_version)
        samples = prepare_samples(io, o.samples, o.shapes, o.seed)
        out.mkdir(parents=True, exist_ok=True)  # not before: a bad model, server or --samples writes nothing
        first = {k: (np.stack([v] * o.batch_size) if io.batched else v) for k, v in samples.items[0].items()}
        measured = measure_payloads(target, io, first, o.model_version)
        payloads = {p: measured[p] for p in o.protocols}
        try:
            for p in o.protocols if o.concurrency else ():
                proto, fmt = ("grpc", "binary") if p == "grpc" else ("http", "json" if p == "http-json" else "binary")
                res = sweep(PerfOptions(
                    model=o.model, output_dir=out / "concurrency" / p, url=target.http_url, grpc_url=target.grpc_url,
                    model_version=o.model_version, protocol=proto, http_format=fmt,  # type: ignore[arg-type]
                    concurrency=o.concurrency, batch_sizes=(o.batch_size,), samples=o.samples, shapes=o.shapes,
                    measurement_interval_ms=o.measurement_interval_ms, stability_percentage=o.stability_percentage,
                    max_trials=o.max_trials), target, progress=progress)
                concurrency[p] = res.rows
                if res.interrupted:
                    raise KeyboardInterrupt
            for rep in range(o.repeats):
                k = rep % len(o.protocols)
                for p in (*o.protocols[k:], *o.protocols[:k]):  # rotate the order between repeats
                    phases = [Phase(rate, o.duration_s, seed=o.seed + 1000 * rep + i, subdir=f"rate_{rate:g}")
                              for i, rate in enumerate(o.rates)]
                    progress(f"repeat {rep + 1}/{o.repeats}")
                    got, stopped = run_locust(target, io, samples, p, phases, out / "runs" / f"r{rep + 1}_{p}",
                                              batch_size=o.batch_size, max_inflight=o.max_inflight,
                                              model_version=o.model_version, payloads=measured, progress=progress)
                    runs.extend(got)
                    run_repeat.extend([rep + 1] * len(got))
                    if stopped:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            interrupted = True
        except TritonOpsError as e:  # e.g. the server died: keep what was measured, then report the error
            _finish(o, runs, run_repeat, concurrency, payloads, True)
            e.hint = f"{e.hint + '; ' if e.hint else ''}the runs that finished are in {out / 'report.html'}"
            raise
    return _finish(o, runs, run_repeat, concurrency, payloads, interrupted)


def _finish(o: ProtocolStudyOptions, runs: list[LoadtestResult], run_repeat: list[int],
            concurrency: dict[str, tuple[PerfRow, ...]], payloads: dict[str, tuple[int, int]],
            interrupted: bool) -> ProtocolStudyResult:
    out = o.output_dir
    complete = [r for r in runs if not r.interrupted]
    cells = aggregate(complete)
    findings = derive_findings(cells, concurrency, payloads, o.repeats)
    if interrupted:
        findings.insert(0, "The study was interrupted: these numbers cover only the runs that finished.")
    files = {"html": str(out / "report.html"), "json": str(out / "study.json"), "csv": str(out / "study.csv")}
    settings = {"rates": list(o.rates), "protocols": list(o.protocols), "repeats": o.repeats,
                "duration_s": o.duration_s, "concurrency": list(o.concurrency), "batch_size": o.batch_size,
                "measurement_interval_ms": o.measurement_interval_ms, "max_inflight": o.max_inflight}
    result = ProtocolStudyResult(model=o.model, cells=tuple(cells), runs=tuple(runs), run_repeat=tuple(run_repeat),
                                 concurrency=concurrency, payloads=payloads, findings=tuple(findings),
                                 output_dir=out, files=files, interrupted=interrupted, settings=settings)
    write_study_csv(runs, run_repeat, out / "study.csv")
    (out / "study.json").write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    sections = [
        Section("Open loop: Poisson arrivals (locust)", (
            "Each cell sends requests at the arrival times of a Poisson process with rate λ, scheduled against a "
            "clock (open loop), through tritonclient's Python clients under gevent. Latency is measured from each "
            "request's actual send; achieved = successful responses within the window per second. A protocol "
            "keeps up when it achieved at least 97% of the arrivals its schedule drew, without errors.",),
            tuple(_figures(cells, {}, payloads)), tuple(_tables(cells, {}))),
    ]
    if concurrency:
        sections.append(Section("Closed loop: concurrency sweep (perf_analyzer)", (
            "perf_analyzer keeps N requests in flight per protocol (its C++ client is cheaper than Python's), "
            "so this shows what the server sustains per protocol.",),
            tuple(_figures([], concurrency, {})), tuple(_tables([], concurrency)[1:])))
    meta = {"model": o.model, "machine": f"{platform.node()} {platform.machine()}, {_cpus()} CPUs",
            "settings": json.dumps(settings), "raw results": str(out)}
    html = render_report(f"Protocol study: {o.model}", "HTTP JSON vs HTTP binary vs gRPC, same model, same server",
                         findings, sections, meta)
    write_report(out / "report.html", html)
    return result


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
