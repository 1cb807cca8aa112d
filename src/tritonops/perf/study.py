"""``tritonops study protocols``: HTTP JSON vs HTTP binary vs gRPC on one server, for one or more payloads.

Each model given is a payload (its request size per protocol is measured with one real request).
Per model, the matrix {protocols} × {Poisson rates λ} runs open-loop through locust, repeated for
a spread (protocol order rotates between repeats so no protocol always runs first), plus a
closed-loop concurrency sweep per protocol through perf_analyzer (C++ client: the server's side of
the story). Every (model, protocol, λ) cell has its own wall-time bound: a cell that cannot drain
in time is recorded as fell behind with what it achieved, and the study goes on; only Ctrl-C
interrupts it. The result is a table, a self-contained HTML report with SVG plots, the findings
and the verdicts against the claims (``perf.findings``), study.json and study.csv.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonops.client import TritonClient
from tritonops.errors import ExternalToolError, TritonOpsError, UsageError
from tritonops.names import check_model_name
from tritonops.perf.analyzer import (
    PerfOptions,
    PerfRow,
    library_hint,
    prepare_samples,
    require_perf_analyzer,
    sweep,
)
from tritonops.perf.cache import DEFAULT_CACHE_BYTES, CacheCell, run_cache_dimension
from tritonops.perf.findings import (
    LABEL,
    Cell,
    Claim,
    aggregate,
    bytes_text,
    claims,
    derive_findings,
    ms_text,
    payload_size,
)
from tritonops.perf.inputs import Samples, check_samples_path
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
from tritonops.perf.presets import preset, preset_samples, write_preset_repository
from tritonops.perf.report import Section, Table, render_report, write_report
from tritonops.perf.svg import Series, bar_chart, line_chart
from tritonops.perf.target import ModelIO, Target, fetch_model_io, open_target
from tritonops.progress import Progress
from tritonops.units import check_number

SCHEMA = "tritonops.study.protocols/2"
PRESET_SAMPLES = 8  # distinct requests per preset payload (realistic values, perf/presets.py)
COLOR = {"http-json": "#d62728", "http-binary": "#1f77b4", "grpc": "#2ca02c"}
VERDICT_MARK = {"supported": "✔ supported", "not supported": "✘ not supported", "mixed": "± mixed",
                "inconclusive": "? inconclusive", "not measured": "– not measured"}


def default_cell_timeout(duration_s: float) -> float:
    """A cell's wall-time bound when none is given: its schedule plus as long again (at least 5 s) to
    drain what is in flight. Longer than that, the cell fell behind."""
    return duration_s + max(5.0, duration_s)


@dataclass(frozen=True)
class ProtocolStudyOptions:
    models: tuple[str, ...]  # each model is one payload
    output_dir: Path
    presets: tuple[str, ...] = ()  # payload presets (perf/presets.py): built and served beside the models
    cache: bool = False  # the response-cache dimension: cache off vs on with repeat_fraction repeated payloads
    repeat_fraction: float = 0.5
    cache_rates: tuple[float, ...] = ()  # λ of the cache cells; () = the lowest of ``rates``
    rates: tuple[float, ...] = (25.0, 50.0, 100.0, 200.0)
    protocols: tuple[LoadProtocol, ...] = PROTOCOLS
    repeats: int = 3
    duration_s: float = 10.0
    cell_timeout_s: float | None = None  # None: default_cell_timeout(duration_s)
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
        if not self.models and not self.presets:
            raise UsageError("study protocols needs a model or a payload preset",
                             "e.g. tritonops study protocols mlp --serve repo/, or --presets small,image")
        for m in self.models:
            check_model_name(m)
        for name in self.presets:
            preset(name)  # an unknown preset: the list of presets in the error
        if self.presets and self.url is not None:
            raise UsageError("--presets builds its models and serves them itself, so it cannot use --url",
                             "drop --url (with --serve REPO the presets are served beside REPO's models)")
        check_number(self.repeat_fraction, "--repeat-fraction", low=0, high=1,
                     hint="the share of repeated payloads in a cache cell, e.g. --repeat-fraction 0.5")
        for r in self.cache_rates:
            check_number(r, "--cache-rates", low=0, low_open=True, high=MAX_RATE, hint="e.g. --cache-rates 25")
        everything = self.all_models
        twice = sorted({m for m in everything if everything.count(m) > 1})
        if twice:
            raise UsageError(f"model(s) given twice: {', '.join(twice)}", "name each model (payload) once")
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
        if self.cell_timeout_s is not None:
            check_number(self.cell_timeout_s, "--cell-timeout", low=self.duration_s, high=2 * 24 * 3600,
                         hint=f"a cell needs its --duration ({self.duration_s:g} s) plus time to drain, "
                              f"e.g. --cell-timeout {default_cell_timeout(self.duration_s):g}")

    @property
    def all_models(self) -> tuple[str, ...]:
        """The models the study measures: the ones named, then the presets' models."""
        return (*self.models, *(preset(n).model for n in dict.fromkeys(self.presets)))

    @property
    def cell_timeout(self) -> float:
        return default_cell_timeout(self.duration_s) if self.cell_timeout_s is None else self.cell_timeout_s


@dataclass(frozen=True)
class ProtocolStudyResult:
    model: str  # the models, for display ("img, mlp")
    cells: tuple[Cell, ...]
    runs: tuple[LoadtestResult, ...]
    run_repeat: tuple[int, ...]
    concurrency: dict[str, dict[str, tuple[PerfRow, ...]]]  # model -> protocol -> closed-loop rows
    payloads: dict[str, dict[str, tuple[int, int]]]  # model -> protocol -> (request, response) bytes
    findings: tuple[str, ...]
    output_dir: Path
    files: dict[str, str]
    interrupted: bool = False  # Ctrl-C only
    settings: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    claims: tuple[Claim, ...] = ()
    cache_cells: tuple[CacheCell, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "model": self.model, "models": list(self.models), "interrupted": self.interrupted,
            "settings": self.settings, "claims": [asdict(c) for c in self.claims], "findings": list(self.findings),
            "payload_bytes": {m: {p: {"request": q, "response": r} for p, (q, r) in sizes.items()}
                              for m, sizes in self.payloads.items()},
            "cells": [{**asdict(c), "keeps_up": c.keeps_up, "label": c.label} for c in self.cells],
            "runs": [run_row(r, rep) for r, rep in zip(self.runs, self.run_repeat, strict=True)],
            "concurrency": {m: {p: [asdict(r) for r in rows] for p, rows in by.items()}
                            for m, by in self.concurrency.items()},
            "cache": [asdict(c) for c in self.cache_cells],
            "files": self.files,
        }


RUN_FIELDS = ("outcome", "generator_processes", "generator_cpu_ms_per_request", "generator_lag_p99_ms",
              "generator_sent_vs_scheduled", "generator_saturated")


def run_row(r: LoadtestResult, repeat: int) -> dict[str, Any]:
    """One open-loop run as a flat row (study.json's runs, study.csv)."""
    g = r.generator
    return {"model": r.model, "repeat": repeat, **summary_row(r), "outcome": r.outcome,
            "generator_processes": g.processes, "generator_cpu_ms_per_request": g.cpu_ms_per_request,
            "generator_lag_p99_ms": g.lag_p99_ms, "generator_sent_vs_scheduled": g.sent_vs_scheduled,
            "generator_saturated": g.saturated}


# ------------------------------------------------------------------------------------------- report
def _figures(cells: Sequence[Cell], concurrency: dict[str, tuple[PerfRow, ...]],
             payloads: dict[str, tuple[int, int]], prefix: str = "") -> list[str]:
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
        figs.append(line_chart(f"{prefix}p99 latency vs offered load (median, min–max over repeats)",
                               "offered λ (req/s)", "p99 latency (ms)", series("p99_ms", "p99_range"), log_y=True))
        figs.append(line_chart(f"{prefix}p50 latency vs offered load (median, min–max over repeats)",
                               "offered λ (req/s)", "p50 latency (ms)", series("p50_ms", "p50_range"), log_y=True))
        figs.append(line_chart(f"{prefix}Throughput vs offered load (dashed: achieved = offered)", "offered λ (req/s)",
                               "achieved (req/s)", series("achieved_rate", "achieved_range"), diagonal=True))
    if payloads:
        ps = [p for p in PROTOCOLS if p in payloads]
        figs.append(bar_chart(f"{prefix}Payload per request", "bytes", [LABEL[p] for p in ps],
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
            figs.append(line_chart(f"{prefix}Closed loop: throughput vs concurrency (perf_analyzer)", "concurrency",
                                   "inferences/s", tput))
            figs.append(line_chart(f"{prefix}Closed loop: p99 latency vs concurrency (perf_analyzer)", "concurrency",
                                   "p99 latency (ms)", p99))
    return figs


def _generator_text(c: Cell) -> str:
    if c.generator_cpu_ms is None and c.generator_lag_p99_ms is None:
        return f"{c.generator_processes} proc"
    cpu = "-" if c.generator_cpu_ms is None else f"{c.generator_cpu_ms:.2f}"
    lag = "-" if c.generator_lag_p99_ms is None else ms_text(c.generator_lag_p99_ms)
    return f"{c.generator_processes} proc, {cpu} CPU ms/req, lag p99 {lag} ms"


def cells_table(cells: Sequence[Cell], caption: str) -> Table:
    rows = tuple((LABEL[c.protocol], f"{c.rate:g}", str(c.runs), f"{c.achieved_rate:.1f}",
                  f"{c.achieved_vs_scheduled:.3f}", str(c.errors), ms_text(c.p50_ms), ms_text(c.p90_ms),
                  ms_text(c.p99_ms), "-" if c.p99_range is None else f"{ms_text(c.p99_range[0])}–"
                  f"{ms_text(c.p99_range[1])}", str(c.request_bytes), str(c.response_bytes), c.label,
                  _generator_text(c)) for c in cells)
    return Table(("protocol", "λ req/s", "repeats", "achieved/s", "achieved/scheduled", "errors", "p50 ms",
                  "p90 ms", "p99 ms", "p99 range", "request B", "response B", "outcome", "load generator"), rows,
                 caption)


def _closed_table(concurrency: dict[str, tuple[PerfRow, ...]], caption: str) -> Table | None:
    def ms(us: float | None) -> str:
        return ms_text(None if us is None else us / 1000)

    rows = tuple((LABEL.get(p, p), f"{r.load:g}", r.status, "-" if r.throughput is None else f"{r.throughput:.1f}",
                  ms(r.p50_us), ms(r.p99_us), ms(r.server_queue_us), ms(r.server_compute_infer_us))
                 for p, rs in concurrency.items() for r in rs)
    if not rows:
        return None
    return Table(("protocol", "concurrency", "status", "infer/s", "p50 ms", "p99 ms", "server queue ms",
                  "server infer ms"), rows, caption)


def claims_table(found: Sequence[Claim]) -> Table:
    """One row per claim and payload: the claim's verdict over all payloads, then each payload's and why."""
    rows: list[tuple[str, ...]] = []
    for c in found:
        head = (c.claim, VERDICT_MARK[c.verdict])
        if not c.evidence:
            rows.append((*head, "-", "", c.summary))
        for i, e in enumerate(c.evidence):
            rows.append((*(head if i == 0 else ("", "")), f"{e.payload} ({bytes_text(e.payload_bytes)})",
                         e.verdict, e.detail))
    return Table(("claim", "verdict", "payload", "at this payload", "by how much"), tuple(rows),
                 "The claims this study tests, against these measurements (spread: min–max over repeats)")


def write_study_csv(runs: Sequence[LoadtestResult], repeats: Sequence[int], path: Path) -> Path:
    rows = [run_row(r, rep) for r, rep in zip(runs, repeats, strict=True)]
    names = list(dict.fromkeys(["model", "repeat", *SUMMARY_FIELDS, *RUN_FIELDS, *(k for row in rows for k in row)]))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        w.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------- the study
@dataclass(frozen=True)
class _Payload:
    model: str
    io: ModelIO
    samples: Samples
    sizes: dict[LoadProtocol, tuple[int, int]]


def _closed_loop(o: ProtocolStudyOptions, m: _Payload, base: Path, target: Target, progress: Progress,
                 rows: dict[str, tuple[PerfRow, ...]]) -> None:
    """perf_analyzer's concurrency sweep per protocol, one point at a time: a point perf_analyzer fails
    (HTTP JSON of an image-sized tensor can) is recorded as failed with its reason and the sweep goes on;
    a missing library, a dead server and Ctrl-C still end it. The rows go into ``rows`` as they come."""
    for p in o.protocols:
        proto, fmt = ("grpc", "binary") if p == "grpc" else ("http", "json" if p == "http-json" else "binary")
        got: list[PerfRow] = []
        for c in o.concurrency:
            try:
                res = sweep(PerfOptions(
                    model=m.model, output_dir=base / "concurrency" / p / f"c{c}", url=target.http_url,
                    grpc_url=target.grpc_url, model_version=o.model_version, protocol=proto,  # type: ignore[arg-type]
                    http_format=fmt, concurrency=(c,), batch_sizes=(o.batch_size,), samples=o.samples,  # type: ignore[arg-type]
                    shapes=o.shapes, measurement_interval_ms=o.measurement_interval_ms,
                    stability_percentage=o.stability_percentage, max_trials=o.max_trials), target, progress=progress)
            except ExternalToolError as e:
                if library_hint(e.output_tail) is not None:
                    raise
                got.append(PerfRow("concurrency", float(c), o.batch_size, proto, "failed",
                                   note=f"{e.message}: {e.hint}" if e.hint else e.message))
                continue
            got.extend(res.rows)
            rows[p] = tuple(got)
            if res.interrupted:
                raise KeyboardInterrupt
        rows[p] = tuple(got)


SETTLE_POLL_S = 0.5


def wait_until_idle(target: Target, model: str, bound_s: float) -> float:
    """After a cell that did not keep up, the server may still be working through requests the generator
    gave up on, and the next cell would pay for them: wait (at most ``bound_s``) until the model's count of
    finished inferences stops moving. Returns the seconds waited."""
    t0 = time.monotonic()
    last = None
    with TritonClient(target.http_url, target.grpc_url, timeout_s=5) as client:
        while time.monotonic() - t0 < bound_s:
            try:
                now = client.inference_counts(model)
            except (InferenceServerException, OSError):
                break  # no statistics: nothing to wait on (a dead server is reported by the next cell)
            if now == last:
                break
            last = now
            time.sleep(SETTLE_POLL_S)
    return time.monotonic() - t0


def run_protocol_study(options: ProtocolStudyOptions, progress: Progress = lambda _: None) -> ProtocolStudyResult:
    """Run the study: per payload (a model named, or a preset's model), the closed loop, the open-loop
    matrix and, with ``cache``, the response-cache cells. Presets are built into a repository under the
    output directory and served by the server this study starts (beside ``serve``'s models, or alone)."""
    o = options
    if o.concurrency:
        require_perf_analyzer()
    out = o.output_dir
    runs: list[LoadtestResult] = []
    run_repeat: list[int] = []
    concurrency: dict[str, dict[str, tuple[PerfRow, ...]]] = {}
    interrupted = False
    payloads: dict[str, dict[str, tuple[int, int]]] = {}
    cache_cells: list[CacheCell] = []
    serve: Path | None = o.serve
    extra: tuple[Path, ...] = ()
    if o.presets:
        repo = out / "presets_repository"
        write_preset_repository(repo, o.presets, progress)
        if o.serve is None:
            serve = repo
        else:
            extra = (repo,)
    preset_of = {preset(n).model: n for n in o.presets}
    with open_target(serve, o.url, o.grpc_url, progress, cache_size_bytes=DEFAULT_CACHE_BYTES if o.cache else None,
                     explicit=o.cache, extra_repositories=extra) as target:
        plans = []
        for model in o.all_models:  # every model is checked before anything is measured
            io = fetch_model_io(target, model, o.model_version)
            samples = (preset_samples(preset_of[model], PRESET_SAMPLES, o.seed) if model in preset_of
                       else prepare_samples(io, o.samples, o.shapes, o.seed))
            plans.append((model, io, samples))
        out.mkdir(parents=True, exist_ok=True)  # not before: a bad model, server or --samples writes nothing
        payloaded = []
        for model, io, samples in plans:
            first = {k: (np.stack([v] * o.batch_size) if io.batched else v) for k, v in samples.items[0].items()}
            sizes = measure_payloads(target, io, first, o.model_version)
            payloaded.append(_Payload(model, io, samples, sizes))
            payloads[model] = {p: sizes[p] for p in o.protocols}
        try:
            for m in payloaded:
                base = out if len(o.all_models) == 1 else out / "models" / m.model
                if o.concurrency:
                    _closed_loop(o, m, base, target, progress, concurrency.setdefault(m.model, {}))
                for rep in range(o.repeats):
                    k = rep % len(o.protocols)
                    for p in (*o.protocols[k:], *o.protocols[:k]):  # rotate the order between repeats
                        phases = [Phase(rate, o.duration_s, seed=o.seed + 1000 * rep + i, subdir=f"rate_{rate:g}")
                                  for i, rate in enumerate(o.rates)]
                        progress(f"{m.model}: repeat {rep + 1}/{o.repeats}")
                        got, stopped = run_locust(target, m.io, m.samples, p, phases, base / "runs" / f"r{rep + 1}_{p}",
                                                  batch_size=o.batch_size, max_inflight=o.max_inflight,
                                                  model_version=o.model_version, payloads=m.sizes,
                                                  cell_timeout_s=o.cell_timeout, progress=progress)
                        runs.extend(got)
                        run_repeat.extend([rep + 1] * len(got))
                        if stopped:  # Ctrl-C (a slow cell is bounded by its timeout and recorded)
                            raise KeyboardInterrupt
                        if any(r.outcome != "kept-up" for r in got):
                            progress(f"{m.model}: waiting for the server to finish the requests left over")
                            wait_until_idle(target, m.model, o.cell_timeout)
                if o.cache:
                    got_cache = run_cache_dimension(
                        target, m.io, m.samples, protocols=o.protocols, rates=o.cache_rates or (min(o.rates),),
                        repeats=o.repeats, duration_s=o.duration_s, repeat_fraction=o.repeat_fraction,
                        out_dir=base / "cache", seed=o.seed, batch_size=o.batch_size, max_inflight=o.max_inflight,
                        model_version=o.model_version, cell_timeout_s=o.cell_timeout, progress=progress)
                    cache_cells.extend(got_cache)
                    if any(c.outcome == "interrupted" for c in got_cache):
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            interrupted = True
        except TritonOpsError as e:  # e.g. the server died: keep what was measured, then report the error
            _finish(o, runs, run_repeat, concurrency, payloads, cache_cells, True)
            e.hint = f"{e.hint + '; ' if e.hint else ''}the runs that finished are in {out / 'report.html'}"
            raise
    return _finish(o, runs, run_repeat, concurrency, payloads, cache_cells, interrupted)


def _missing(o: ProtocolStudyOptions, cells: Sequence[Cell]) -> list[str]:
    """Cells the study planned but has no run for (a locust run that ended before its last phases)."""
    have = {(c.model, c.protocol, c.rate) for c in cells}
    out = []
    for m in o.all_models:
        for p in o.protocols:
            rates = [r for r in o.rates if (m, p, r) not in have]
            if rates:
                out.append(f"{m}: {LABEL[p]} has no run at {', '.join(f'{r:g}' for r in rates)} req/s "
                           f"(see the locust.log files under {o.output_dir})")
    return out


def _finish(o: ProtocolStudyOptions, runs: list[LoadtestResult], run_repeat: list[int],
            concurrency: dict[str, dict[str, tuple[PerfRow, ...]]], payloads: dict[str, dict[str, tuple[int, int]]],
            cache_cells: Sequence[CacheCell], interrupted: bool) -> ProtocolStudyResult:
    out = o.output_dir
    cells = aggregate(runs)
    findings = derive_findings(cells, concurrency, payloads, o.repeats)
    found = claims(cells, concurrency, cache_cells, o.repeats)
    if interrupted:
        findings.insert(0, "The study was interrupted (Ctrl-C): these numbers cover only the runs that finished.")
    else:
        findings[:0] = _missing(o, cells)
    files = {"html": str(out / "report.html"), "json": str(out / "study.json"), "csv": str(out / "study.csv")}
    settings = {"models": list(o.all_models), "presets": list(o.presets), "cache": o.cache,
                "repeat_fraction": o.repeat_fraction if o.cache else None,
                "cache_rates": list(o.cache_rates or (min(o.rates),)) if o.cache else [],
                "rates": list(o.rates), "protocols": list(o.protocols),
                "repeats": o.repeats, "duration_s": o.duration_s, "cell_timeout_s": o.cell_timeout,
                "concurrency": list(o.concurrency), "batch_size": o.batch_size,
                "measurement_interval_ms": o.measurement_interval_ms, "max_inflight": o.max_inflight}
    result = ProtocolStudyResult(
        model=", ".join(o.all_models), cells=tuple(cells), runs=tuple(runs), run_repeat=tuple(run_repeat),
        concurrency=concurrency, payloads=payloads, findings=tuple(findings), output_dir=out,
        files=files, interrupted=interrupted, settings=settings, models=o.all_models, claims=tuple(found),
        cache_cells=tuple(cache_cells))
    write_study_csv(runs, run_repeat, out / "study.csv")
    (out / "study.json").write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    write_report(out / "report.html", _html(o, result))
    return result


def cache_table(cells: Sequence[CacheCell]) -> Table:
    rows = tuple((LABEL[c.protocol], f"{c.rate:g}", "on" if c.cache else "off", f"{c.repeat_fraction:g}",
                  bytes_text(c.request_bytes), str(c.runs), f"{c.achieved_rate:.1f}", ms_text(c.p50_ms),
                  ms_text(c.p99_ms), "-" if c.p99_range is None else f"{ms_text(c.p99_range[0])}–"
                  f"{ms_text(c.p99_range[1])}", f"{c.hits}/{c.misses}", ms_text(c.hit_ms), ms_text(c.miss_ms),
                  c.outcome) for c in cells)
    return Table(("protocol", "λ req/s", "cache", "repeated", "request", "repeats", "achieved/s", "p50 ms", "p99 ms",
                  "p99 range", "hits/misses (server)", "server ms per hit", "server ms per miss", "outcome"), rows,
                 "Response cache off vs on (client latency: medians over repeats; hits, misses and their times: "
                 "the server's model statistics)")


def _html(o: ProtocolStudyOptions, result: ProtocolStudyResult) -> str:
    models = o.all_models
    many = len(models) > 1
    sections = []
    for m in models:
        mine = [c for c in result.cells if c.model == m]
        prefix = f"{m}: " if many else ""
        size = f" — {m}, {bytes_text(payload_size(mine, m))} per HTTP binary request" if many else ""
        sections.append(Section(f"Open loop: Poisson arrivals (locust){size}", (
            "Each cell sends requests at the arrival times of a Poisson process with rate λ, scheduled against a "
            "clock (open loop). Latency is measured from each request's actual send; achieved = successful "
            f"responses within the window per second. A cell kept up when it achieved at least {KEEPS_UP:.0%} of the "
            "arrivals its schedule drew, without errors, and drained within its wall-time bound "
            f"({o.cell_timeout:g} s); it fell behind otherwise. When the load generator itself could not keep the "
            "schedule, the cell is marked generator saturated and says nothing about the protocol. A cell's "
            "outcome is the worst over its repeats.",),
            tuple(_figures(mine, {}, result.payloads.get(m, {}), prefix)),
            (cells_table(mine, f"{prefix}Open loop (locust, Poisson arrivals): medians over repeats"),)))
        closed = result.concurrency.get(m, {})
        table = _closed_table(closed, f"{prefix}Closed loop (perf_analyzer)")
        if table is not None:
            sections.append(Section(f"Closed loop: concurrency sweep (perf_analyzer){' — ' + m if many else ''}", (
                "perf_analyzer keeps N requests in flight per protocol (its C++ client is cheaper than Python's), "
                "so this shows what the server sustains per protocol.",),
                tuple(_figures([], closed, {}, prefix)), (table,)))
    if result.cache_cells:
        sections.append(Section("Response cache: off vs on", (
            f"The same open-loop cells with Triton's response cache off and on (switched with a config override "
            f"through the model-control API; the repository is not written). A share of "
            f"{o.repeat_fraction:g} of each cell's requests repeat one payload (hits after the first); the others "
            "are fresh payloads (misses). Latency is the client's; hits, misses and server time per hit and per "
            "miss come from the server's model statistics.",), (), (cache_table(result.cache_cells),)))
    meta = {"models": ", ".join(models), "machine": f"{platform.node()} {platform.machine()}, {_cpus()} CPUs",
            "settings": json.dumps(result.settings), "raw results": str(o.output_dir)}
    subtitle = f"HTTP JSON vs HTTP binary vs gRPC, same {'payloads' if many else 'model'}, same server"
    return render_report(f"Protocol study: {result.model}", subtitle, result.findings, sections, meta,
                         lead=(claims_table(result.claims),))


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
