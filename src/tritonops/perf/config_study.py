"""``tritonops study config``: the naive config vs tritonops' generated config vs a few variants.

Every variant is the model's own ``config.pbtxt`` with one thing changed, written (through the
protobuf, never text templates) into a scratch repository as ``MODEL__VARIANT`` whose version
directories link to the original files. One server serves them all; perf_analyzer sends the same
closed-loop load to each, variants interleaved and repeated. Reported: throughput and p99 per
concurrency, their ratios to the naive config, and throughput within a p99 budget.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tritonops.errors import TritonOpsError, UsageError
from tritonops.names import check_model_name
from tritonops.pbtxt import ModelConfig, config_to_text, read_config
from tritonops.perf.analyzer import PerfOptions, PerfRow, require_perf_analyzer, sweep
from tritonops.perf.inputs import check_samples_path
from tritonops.perf.report import Section, Table, render_report, write_report
from tritonops.perf.svg import Series, bar_chart, line_chart
from tritonops.perf.target import Target, http_alive
from tritonops.progress import Progress
from tritonops.server import ServerOptions, TritonServer
from tritonops.units import check_number

SCHEMA = "tritonops.study.config/1"
SEPARATOR = "__"


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    config: Any = field(repr=False, compare=False)  # model_config_pb2.ModelConfig


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _set_param(cfg: ModelConfig, key: str, value: str) -> None:
    cfg.parameters[key].string_value = value


def _instances(cfg: ModelConfig, count: int) -> None:
    kind = cfg.instance_group[0].kind if cfg.instance_group else 0
    del cfg.instance_group[:]
    g = cfg.instance_group.add()
    g.count = count
    g.kind = kind


def default_variants(cfg: ModelConfig, cpus: int | None = None) -> list[Variant]:
    """naive, generated (the config as it is) and variants that change batching or instances."""
    cpus = cpus or _cpus()
    batches = cfg.max_batch_size > 0
    naive = copy.deepcopy(cfg)
    naive.ClearField("dynamic_batching")
    _instances(naive, 1)
    variants = [Variant("naive", "no dynamic batching, 1 instance", naive),
                Variant("generated", "config.pbtxt as in the repository (tritonops build output)", copy.deepcopy(cfg))]
    onnx = cfg.platform == "onnxruntime_onnx" or cfg.backend == "onnxruntime"
    if batches:
        two = copy.deepcopy(cfg)
        if not two.HasField("dynamic_batching"):
            two.dynamic_batching.SetInParent()
        _instances(two, 2)
        if onnx:
            _set_param(two, "intra_op_thread_count", str(max(1, cpus // 2)))
        variants.append(Variant("batching_2x", f"dynamic batching, 2 instances × {max(1, cpus // 2)} thread(s)", two))
        delay = copy.deepcopy(cfg)
        delay.dynamic_batching.max_queue_delay_microseconds = 500
        variants.append(Variant("batching_delay500", "dynamic batching, max_queue_delay 500 µs", delay))
    nob = copy.deepcopy(naive)
    _instances(nob, 2)
    if onnx:
        _set_param(nob, "intra_op_thread_count", str(max(1, cpus // 2)))
    variants.append(Variant("instances_2x", f"no batching, 2 instances × {max(1, cpus // 2)} thread(s)", nob))
    return variants


def stage_variants(repository: Path, model: str, variants: Sequence[Variant], dest: Path) -> dict[str, str]:
    """Write ``dest/MODEL__VARIANT/`` for each variant (config via protobuf, versions linked); returns
    variant -> served model name."""
    src = repository / model
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    names = {}
    for v in variants:
        served = check_model_name(f"{model}{SEPARATOR}{v.name}")
        target = dest / served
        target.mkdir()
        for entry in src.iterdir():
            if entry.is_dir() and entry.name.isdigit():
                try:
                    (target / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
                except OSError:
                    shutil.copytree(entry, target / entry.name)
        cfg = copy.deepcopy(v.config)
        cfg.name = served
        (target / "config.pbtxt").write_text(config_to_text(cfg))
        names[v.name] = served
    return names


@dataclass(frozen=True)
class ConfigStudyOptions:
    model: str
    repository: Path
    output_dir: Path
    concurrency: tuple[int, ...] = (1, 4, 16)
    protocol: Literal["http", "grpc"] = "grpc"
    repeats: int = 2
    measurement_interval_ms: int = 2000
    stability_percentage: float = 25.0  # variants are interleaved and repeated; medians do the rest
    max_trials: int = 6
    p99_budget_ms: float | None = None
    variants: tuple[str, ...] = ()  # names to keep (default: all)
    samples: Path | None = None
    shapes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.samples is not None:  # before any server is asked
            check_samples_path(self.samples)
        check_model_name(self.model)
        check_number(self.repeats, "--repeats", low=1, high=100, integer=True, hint="use --repeats 2")
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise UsageError("--concurrency needs positive values", "e.g. --concurrency 1,4,16")
        if self.p99_budget_ms is not None:
            check_number(self.p99_budget_ms, "--p99-budget", low=0, low_open=True,
                         hint="e.g. --p99-budget 10 (milliseconds)")


@dataclass(frozen=True)
class VariantPoint:
    """One variant at one concurrency: medians over repeats (status ok only)."""

    variant: str
    concurrency: int
    runs: int
    throughput: float | None
    p50_ms: float | None
    p99_ms: float | None
    throughput_range: tuple[float, float] | None
    server_queue_ms: float | None
    server_infer_ms: float | None


@dataclass(frozen=True)
class ConfigStudyResult:
    model: str
    variants: tuple[Variant, ...]
    points: tuple[VariantPoint, ...]
    rows: dict[str, tuple[PerfRow, ...]]  # all perf_analyzer rows, per variant (all repeats)
    peak: dict[str, float]
    peak_ratio: dict[str, float]  # peak throughput / naive's peak
    p99_ratio: dict[str, dict[int, float]]  # per concurrency: p99 / naive's p99
    budget_ms: float | None
    budget_throughput: dict[str, float]
    budget_ratio: dict[str, float | None]
    findings: tuple[str, ...]
    output_dir: Path
    files: dict[str, str]
    interrupted: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "model": self.model, "interrupted": self.interrupted, "settings": self.settings,
            "variants": [{"name": v.name, "description": v.description, "config": config_to_text(v.config)}
                         for v in self.variants],
            "points": [asdict(p) for p in self.points], "peak_throughput": self.peak,
            "peak_ratio_vs_naive": self.peak_ratio,
            "p99_ratio_vs_naive": {k: {str(c): r for c, r in v.items()} for k, v in self.p99_ratio.items()},
            "p99_budget_ms": self.budget_ms, "throughput_within_budget": self.budget_throughput,
            "budget_ratio_vs_naive": self.budget_ratio, "findings": list(self.findings),
            "rows": {k: [asdict(r) for r in v] for k, v in self.rows.items()}, "files": self.files,
        }


def aggregate_points(rows: Mapping[str, Sequence[PerfRow]]) -> list[VariantPoint]:
    points = []
    for variant, rs in rows.items():
        for c in sorted({int(r.load) for r in rs}):
            ok = [r for r in rs if int(r.load) == c and r.status == "ok" and r.throughput is not None]
            tput = [r.throughput for r in ok if r.throughput is not None]

            def med(values: Sequence[float | None], scale: float = 1.0) -> float | None:
                vs = [v for v in values if v is not None]
                return float(statistics.median(vs)) / scale if vs else None

            points.append(VariantPoint(
                variant=variant, concurrency=c, runs=len(ok), throughput=med(tput),
                p50_ms=med([r.p50_us for r in ok], 1000), p99_ms=med([r.p99_us for r in ok], 1000),
                throughput_range=(min(tput), max(tput)) if tput else None,
                server_queue_ms=med([r.server_queue_us for r in ok], 1000),
                server_infer_ms=med([r.server_compute_infer_us for r in ok], 1000)))
    return points


def throughput_within(points: Sequence[VariantPoint], variant: str, budget_ms: float) -> float:
    """Highest median throughput among the variant's points whose median p99 is within the budget."""
    ok = [p.throughput for p in points if p.variant == variant and p.throughput is not None
          and p.p99_ms is not None and p.p99_ms <= budget_ms]
    return max(ok, default=0.0)


def _findings(points: Sequence[VariantPoint], variants: Sequence[Variant], peak: dict[str, float],
              peak_ratio: dict[str, float], budget_ms: float | None, budget_tput: dict[str, float],
              budget_ratio: dict[str, float | None], p99_ratio: dict[str, dict[int, float]]) -> list[str]:
    f: list[str] = []
    desc = {v.name: v.description for v in variants}
    if "naive" in peak and "generated" in peak and peak["naive"]:
        f.append(f"The generated config reaches {peak_ratio['generated']:.2f}× the naive config's peak throughput "
                 f"({peak['generated']:.0f} vs {peak['naive']:.0f} infer/s).")
    ranked = sorted(peak, key=lambda v: -peak[v])
    if ranked:
        best = ranked[0]
        f.append(f"Highest peak throughput: {best} ({desc.get(best, '')}), {peak[best]:.0f} infer/s"
                 + (f", {peak_ratio[best]:.2f}× naive." if "naive" in peak else "."))
    if p99_ratio.get("generated"):
        top_c = max(p99_ratio["generated"])
        r = p99_ratio["generated"][top_c]
        f.append(f"At concurrency {top_c}, the generated config's p99 is {r:.2f}× the naive config's "
                 f"({'lower' if r < 1 else 'higher'} is {'better' if r < 1 else 'worse'}).")
    if budget_ms is not None:
        parts = ", ".join(f"{v} {budget_tput[v]:.0f}/s" for v in ranked)
        f.append(f"Within a p99 budget of {budget_ms:g} ms: {parts}.")
        g = budget_ratio.get("generated")
        if g is not None:
            f.append(f"Generated / naive throughput within that budget: {g:.2f}×.")
        elif "generated" in budget_ratio:
            f.append("The naive config never met that p99 budget, so no ratio within the budget exists.")
    for v in peak:
        no_gain = [p for p in points if p.variant == v and p.throughput is None]
        if no_gain:
            f.append(f"{v}: {len(no_gain)} point(s) without a stable measurement (see the table).")
    return f


def run_config_study(options: ConfigStudyOptions, progress: Progress = lambda _: None) -> ConfigStudyResult:
    o = options
    require_perf_analyzer()
    config_path = o.repository / o.model / "config.pbtxt"
    if not config_path.is_file():
        raise UsageError(f"no config.pbtxt for model '{o.model}' in {o.repository}",
                         "build it first (tritonops build) or give the repository that holds it")
    cfg = read_config(config_path)
    if cfg.platform == "ensemble":
        raise UsageError(f"'{o.model}' is an ensemble; study config compares one model's batching and instances",
                         "run it on the ensemble's composing models")
    variants = default_variants(cfg)
    if o.variants:
        unknown = set(o.variants) - {v.name for v in variants}
        if unknown:
            raise UsageError(f"unknown variant(s): {', '.join(sorted(unknown))}",
                             f"choose from: {', '.join(v.name for v in variants)}")
        variants = [v for v in variants if v.name in o.variants or v.name == "naive"]
    out = o.output_dir
    out.mkdir(parents=True, exist_ok=True)
    names = stage_variants(o.repository, o.model, variants, out / "repository")
    rows: dict[str, list[PerfRow]] = {v.name: [] for v in variants}
    interrupted = False
    progress(f"starting tritonserver with {len(variants)} variants of {o.model}")
    try:
        with TritonServer(ServerOptions(repository=out / "repository")) as server:
            target = Target(http_url=server.http_url, grpc_url=server.grpc_url, metrics_url=server.metrics_url,
                            alive=lambda: server.running() and http_alive(server.http_url),
                            log_tail=lambda: server.log_tail(30), served_by_us=True)
            for rep in range(o.repeats):
                k = rep % len(variants)
                for v in (*variants[k:], *variants[:k]):
                    progress(f"repeat {rep + 1}/{o.repeats}: {v.name}")
                    res = sweep(PerfOptions(
                        model=names[v.name], output_dir=out / "runs" / f"r{rep + 1}_{v.name}",
                        url=server.http_url, grpc_url=server.grpc_url, protocol=o.protocol,
                        concurrency=o.concurrency, measurement_interval_ms=o.measurement_interval_ms,
                        stability_percentage=o.stability_percentage, max_trials=o.max_trials,
                        samples=o.samples, shapes=o.shapes), target, progress=progress)
                    rows[v.name].extend(r for r in res.rows if r.status != "interrupted")
                    if res.interrupted:
                        raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
    except TritonOpsError as e:
        _finish(o, variants, rows, True)
        e.hint = f"{e.hint + '; ' if e.hint else ''}the runs that finished are in {out / 'report.html'}"
        raise
    return _finish(o, variants, rows, interrupted)


def _finish(o: ConfigStudyOptions, variants: Sequence[Variant], rows: dict[str, list[PerfRow]],
            interrupted: bool) -> ConfigStudyResult:
    out = o.output_dir
    points = aggregate_points(rows)
    peak = {v.name: max((p.throughput or 0.0 for p in points if p.variant == v.name), default=0.0)
            for v in variants}
    base = peak.get("naive") or 0.0
    peak_ratio = {v: (t / base if base else 0.0) for v, t in peak.items()}
    naive_p99 = {p.concurrency: p.p99_ms for p in points if p.variant == "naive" and p.p99_ms}
    p99_ratio = {v.name: {p.concurrency: p.p99_ms / naive_p99[p.concurrency] for p in points
                          if p.variant == v.name and p.p99_ms and naive_p99.get(p.concurrency)}
                 for v in variants}
    budget_tput: dict[str, float] = {}
    budget_ratio: dict[str, float | None] = {}
    if o.p99_budget_ms is not None:
        budget_tput = {v.name: throughput_within(points, v.name, o.p99_budget_ms) for v in variants}
        nb = budget_tput.get("naive", 0.0)
        budget_ratio = {v: (t / nb if nb else None) for v, t in budget_tput.items()}
    findings = _findings(points, variants, peak, peak_ratio, o.p99_budget_ms, budget_tput, budget_ratio, p99_ratio)
    if interrupted:
        findings.insert(0, "The study was interrupted: these numbers cover only the runs that finished.")
    files = {"html": str(out / "report.html"), "json": str(out / "study.json")}
    settings = {"concurrency": list(o.concurrency), "protocol": o.protocol, "repeats": o.repeats,
                "measurement_interval_ms": o.measurement_interval_ms, "stability_percentage": o.stability_percentage,
                "p99_budget_ms": o.p99_budget_ms, "cpus": _cpus()}
    result = ConfigStudyResult(
        model=o.model, variants=tuple(variants), points=tuple(points), rows={k: tuple(v) for k, v in rows.items()},
        peak=peak, peak_ratio=peak_ratio, p99_ratio=p99_ratio, budget_ms=o.p99_budget_ms,
        budget_throughput=budget_tput, budget_ratio=budget_ratio, findings=tuple(findings), output_dir=out,
        files=files, interrupted=interrupted, settings=settings)
    (out / "study.json").write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    write_report(out / "report.html", _report(o, result))
    return result


def _report(o: ConfigStudyOptions, r: ConfigStudyResult) -> str:
    names = [v.name for v in r.variants]
    tput, p99 = [], []
    for v in names:
        ps = sorted((p for p in r.points if p.variant == v), key=lambda p: p.concurrency)
        tput.append(Series(v, [p.concurrency for p in ps], [p.throughput for p in ps],
                           lo=[p.throughput_range[0] if p.throughput_range else None for p in ps],
                           hi=[p.throughput_range[1] if p.throughput_range else None for p in ps],
                           dashed=v == "naive"))
        p99.append(Series(v, [p.concurrency for p in ps], [p.p99_ms for p in ps], dashed=v == "naive"))
    figs = [
        line_chart("Throughput vs concurrency (median, min–max over repeats)", "concurrency", "inferences/s",
                   tput, log_x=True),
        line_chart("p99 latency vs concurrency (median over repeats)", "concurrency", "p99 latency (ms)", p99,
                   log_x=True, log_y=True),
        bar_chart("Peak throughput relative to the naive config", "× naive", names,
                  [("peak throughput", [r.peak_ratio.get(v, 0.0) for v in names])]),
    ]
    if r.budget_ms is not None:
        figs.append(bar_chart(f"Throughput within p99 ≤ {r.budget_ms:g} ms", "inferences/s", names,
                              [("throughput", [r.budget_throughput.get(v, 0.0) for v in names])]))

    def f(v: float | None, digits: int = 2) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    naive = {p.concurrency: p.throughput for p in r.points if p.variant == "naive"}
    rows = []
    for p in r.points:
        base = naive.get(p.concurrency)
        rows.append((p.variant, str(p.concurrency), str(p.runs), f(p.throughput, 1),
                     f(p.throughput / base if base and p.throughput else None), f(p.p50_ms), f(p.p99_ms),
                     f(r.p99_ratio.get(p.variant, {}).get(p.concurrency)), f(p.server_queue_ms),
                     f(p.server_infer_ms)))
    table = Table(("variant", "concurrency", "runs", "infer/s", "× naive", "p50 ms", "p99 ms", "p99 × naive",
                   "server queue ms", "server infer ms"), tuple(rows),
                  "perf_analyzer, closed loop: medians over repeats")
    variants_table = Table(("variant", "what changes"), tuple((v.name, v.description) for v in r.variants))
    configs = "; ".join(f"{v.name}: {' '.join(config_to_text(v.config).split())}" for v in r.variants)
    sections = [
        Section("Variants", ("Each variant is the model's config.pbtxt with one change, served side by side by one "
                             "server; perf_analyzer sends the same load to each, variants interleaved.",),
                (), (variants_table,)),
        Section("Throughput and latency", (), tuple(figs), (table,)),
    ]
    meta = {"model": r.model, "repository": str(o.repository), "settings": json.dumps(r.settings),
            "configs": configs, "raw results": str(r.output_dir)}
    return render_report(f"Config study: {r.model}", "naive vs generated vs variants, same load, same server",
                         r.findings, sections, meta)
