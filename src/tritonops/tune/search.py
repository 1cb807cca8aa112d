"""Search strategies: ``quick`` (coordinate descent that reuses every measurement, with early stopping)
and ``brute`` (the full grid, the ground truth), then the final interleaved rounds.

A *setting* maps every tuned model to a candidate (one model, or an ensemble's composing models).
Evaluating a setting loads it (apply.py) and sweeps the concurrencies (or the offered request
rates); a point already in the journal is reused, never measured again, so ``--resume`` continues
where a run stopped. The sweep stops early once the latency budget is exceeded, throughput stops
growing (higher concurrencies only add queueing), the server falls behind an offered rate, or a
throughput target (``--at-throughput``) is reached (higher loads only add latency). Quick walks one
parameter at a time, keeping what improves the objective, and for the max-throughput objective stops
a trial early: measured first where the best config so far is best, a trial that loses there costs
one measurement (``SearchContext.challenge``); for an ensemble it walks the step with the
largest queue + compute time first (the bottleneck), taken from Triton's per-model statistics around
the last measurement.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from tritonops.perf.target import Target
from tritonops.progress import Progress
from tritonops.tune.apply import Applier, CandidateRefused, StatsProbe
from tritonops.tune.journal import Journal
from tritonops.tune.measure import Load, Measurement, MeasureSettings, measure
from tritonops.tune.memory import MemoryProbe
from tritonops.tune.objective import Objective, Score, better, kept_up, reaches, score
from tritonops.tune.space import Candidate, ModelSpace

Strategy = Literal["quick", "brute"]
Setting = dict[str, Candidate]
SATURATION_GAIN = 1.05  # a concurrency step that adds less throughput than this ends the sweep


def setting_key(setting: Mapping[str, Candidate]) -> str:
    if len(setting) == 1:
        return next(iter(setting.values())).key
    return ",".join(f"{m}={c.key}" for m, c in sorted(setting.items()))


def setting_dict(setting: Mapping[str, Candidate]) -> dict[str, Any]:
    return {m: c.to_dict() for m, c in setting.items()}


class BudgetReached(Exception):
    """The search used its --max-measurements."""


@dataclass
class SearchContext:
    target: Target
    model: str  # what perf_analyzer sends requests to (the ensemble itself)
    applier: Applier
    journal: Journal
    spaces: Mapping[str, ModelSpace]
    concurrency: tuple[int, ...]
    objective: Objective
    settings: MeasureSettings
    work_dir: Path
    progress: Progress
    probe: StatsProbe | None = None
    max_measurements: int | None = None
    request_rates: tuple[float, ...] = ()  # measure at these offered rates instead of the concurrencies
    memory: MemoryProbe | None = None
    # What takes one point (measure.measure: perf_analyzer against the server); the search's own tests give it
    # a model of a server's throughput instead, to follow the search's decisions exactly.
    measurer: Callable[..., Measurement] = measure
    measured: int = 0  # perf_analyzer measurements this run made (reused ones not counted)
    reused: int = 0
    evaluated: list[str] = field(default_factory=list)

    def sweep_points(self) -> tuple[Load, ...]:
        if self.request_rates:
            return tuple(Load(request_rate=r) for r in self.request_rates)
        if self.objective.kind == "latency" and self.objective.at_throughput is None:
            return (Load(1),)
        return tuple(Load(c) for c in self.concurrency)

    def _point(self, setting: Setting, key: str, load: Load, round_: int) -> Measurement:
        known = self.journal.get((key, load.value, round_))
        if known is not None:
            self.reused += 1
            return known
        if self.max_measurements is not None and self.measured >= self.max_measurements:
            raise BudgetReached
        try:
            self.applier.apply(setting)
        except CandidateRefused as e:
            m = Measurement(setting=key, concurrency=load.concurrency, round=round_, status="failed",
                            note=f"the server refused this config: {e}", request_rate=load.request_rate)
            self.journal.append(m, setting_dict(setting))
            return m
        self.progress(f"measuring {key} at {load.describe()}" + (f" (final round {round_})" if round_ else ""))
        tag = f"c{load.concurrency}" if load.request_rate is None else f"r{load.request_rate:g}"
        m = self.measurer(self.target, self.model, key, load, round_, self.settings,
                    self.work_dir / key.replace(",", "+").replace("=", "-") / f"r{round_}_{tag}", self.probe,
                    self.progress, self.memory)
        self.measured += 1
        self.journal.append(m, setting_dict(setting))
        return m

    def descend(self, setting: Setting) -> Score:
        """The starting config's sweep for the max-throughput objective: the highest load first (the
        best one when it meets the budget and keeps up: throughput grows with load), else a bisection
        below it for the highest load that still does. One measurement when the highest load is within
        the budget, 1 + ceil(log2 n) at most; brute's upward sweep of every config is the check on it.
        Other objectives get the whole sweep."""
        loads = self.sweep_points()
        o = self.objective
        if o.kind != "throughput" or len(loads) < 2:
            return self.evaluate(setting)
        key = setting_key(setting)
        if key not in self.evaluated:
            self.evaluated.append(key)
        refused = False

        def meets(i: int) -> bool:
            nonlocal refused
            m = self._point(setting, key, loads[i], 0)
            if m.status != "ok":
                refused = m.note.startswith("the server refused")
                return False
            lat = m.latency_ms(o.percentile)
            if o.budget_ms is not None and (lat is None or lat > o.budget_ms):
                return False
            return kept_up(m.throughput or 0.0, loads[i].request_rate, m.window_ms)

        if not meets(len(loads) - 1) and not refused:
            lo, hi = 0, len(loads) - 2  # the highest load that meets it lies in [lo, hi], if any does
            while lo <= hi and not refused:
                mid = (lo + hi + 1) // 2  # the upper middle: the budget is usually met close to the top
                if meets(mid):
                    lo = mid + 1
                else:
                    hi = mid - 1
        return score(key, list(self.journal), o)

    def challenge(self, setting: Setting, incumbent: Score) -> Score:
        """Quick's early stopping per candidate, for the max-throughput objective: a trial is measured
        first at the load where the incumbent is best. One that does not beat the incumbent there ends
        after that one measurement (a lower load only gives less throughput, and where the incumbent
        peaked a higher one rarely helps a config that is already behind); one that beats it sweeps on
        upward from there; one over the budget there is tried once one load lower. Other objectives,
        or an incumbent without a point within the objective, get the whole sweep."""
        loads = self.sweep_points()
        at = [i for i, load in enumerate(loads) if load.value == incumbent.load]
        o = self.objective
        if o.kind != "throughput" or not incumbent.met or incumbent.value is None or not at:
            return self.evaluate(setting)
        i = at[0]
        first = self.evaluate(setting, points=(loads[i],))
        point = next((p for p in first.points if p.load == loads[i].value), None)
        if point is None:  # failed or refused there
            return first
        if o.budget_ms is not None and point.latency_ms > o.budget_ms:
            return self.evaluate(setting, points=loads[i - 1:i]) if i > 0 else first
        if not point.kept_up or point.throughput <= incumbent.value:
            return first
        return self.evaluate(setting, sweep=loads[i + 1:], sweep_best=point.throughput) if i + 1 < len(loads) \
            else first

    def evaluate(self, setting: Setting, round_: int = 0, points: Sequence[Load] | None = None, *,
                 sweep: Sequence[Load] | None = None, sweep_best: float = 0.0) -> Score:
        """Measure ``setting`` at fixed ``points`` (the final rounds), or sweep ``sweep`` (default: every
        load) with the early-stopping rules; ``sweep_best``: the throughput already reached below it."""
        key = setting_key(setting)
        if key not in self.evaluated:
            self.evaluated.append(key)
        best_tput = sweep_best
        o = self.objective
        for load in points or (self.sweep_points() if sweep is None else sweep):
            m = self._point(setting, key, load, round_)
            if m.status != "ok":
                if m.note.startswith("the server refused"):
                    break
                continue
            lat = m.latency_ms(o.percentile)
            tput = m.throughput or 0.0
            if o.budget_ms is not None and lat is not None and lat > o.budget_ms:
                break  # higher loads only queue more
            if points is not None:
                continue
            if not kept_up(tput, load.request_rate, m.window_ms):
                break  # fell behind: a higher rate only falls further behind
            if o.at_throughput is not None and reaches(tput, o.at_throughput, load.request_rate, m.window_ms):
                break  # the target is reached: higher loads only add latency
            if load.request_rate is None and best_tput and tput < best_tput * SATURATION_GAIN:
                break  # saturated
            best_tput = max(best_tput, tput)
        return score(key, list(self.journal), self.objective)

    def bottleneck_order(self, best: Score) -> list[str]:
        """Tuned models, the one with the most queue + compute time per request at the best point first."""
        models = list(self.spaces)
        if len(models) < 2:
            return models
        ms = [m for m in self.journal if m.setting == best.setting and m.status == "ok" and m.steps]
        if not ms:
            return models
        last = max(ms, key=lambda m: m.load)

        def cost(name: str) -> float:
            s = last.steps.get(name, {})
            return float((s.get("queue_us") or 0.0) + (s.get("compute_us") or 0.0))

        return sorted(models, key=cost, reverse=True)


def _vary(c: Candidate, dim: str, value: Any) -> Candidate:
    if dim == "preferred":
        return replace(c, preferred=(c.max_batch_size,) if value and c.max_batch_size > 0 else ()).normalized()
    return replace(c, **{dim: value}).normalized()


def quick(ctx: SearchContext, start: Setting, max_passes: int = 2) -> Score:
    """Coordinate descent from ``start``: per model (bottleneck first), per parameter, keep the best value."""
    current = dict(start)
    best = score(setting_key(start), list(ctx.journal), ctx.objective)
    try:
        best = ctx.descend(current)  # --max-measurements may stop the search within the start's own sweep
        for _ in range(max_passes):
            improved = False
            for model in ctx.bottleneck_order(best):
                for dim, values in ctx.spaces[model].values().items():
                    if len(values) < 2 and dim != "max_batch_size":
                        continue
                    for v in values:
                        trial = dict(current)
                        trial[model] = _vary(current[model], dim, v)
                        if setting_key(trial) == setting_key(current):
                            continue
                        s = ctx.challenge(trial, best)
                        if better(s, best, ctx.objective):
                            best, current, improved = s, trial, True
            if not improved:
                break  # early stopping: a whole pass without a gain
    except BudgetReached:
        ctx.progress(f"stopped after {ctx.max_measurements} measurements (--max-measurements)")
    return best


def grid(spaces: Mapping[str, ModelSpace]) -> list[Setting]:
    names = list(spaces)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(spaces[n].grid() for n in names))]


def brute(ctx: SearchContext, start: Setting) -> Score:
    best = score(setting_key(start), list(ctx.journal), ctx.objective)
    try:
        best = ctx.evaluate(dict(start))
        for setting in grid(ctx.spaces):
            s = ctx.evaluate(setting)
            if better(s, best, ctx.objective):
                best = s
    except BudgetReached:
        ctx.progress(f"stopped after {ctx.max_measurements} measurements (--max-measurements)")
    return best


CLOSE = 0.05  # a search score within this fraction of the best one is not told apart from it by one measurement
MAX_FINALISTS = 4  # besides the starting config


def finalists(scores: Sequence[Score], count: int, start_key: str, objective: Objective) -> list[Score]:
    """What the final rounds re-measure: the best ``count`` scores of the search, every other one within
    CLOSE of the best (one measurement on these machines moves by ~5-7 %, so a close second may be the
    real best; up to MAX_FINALISTS in all), and the starting config, so that noise in the search cannot
    promote a config that is worse than the one served now. ``scores``: best first."""
    best = scores[0] if scores else None
    out = list(scores[:count])
    if best is not None and best.met and best.value:
        for s in scores[count:]:
            if len(out) >= max(count, MAX_FINALISTS):
                break
            if s.met and s.value is not None and (
                    s.value >= best.value * (1 - CLOSE) if objective.kind == "throughput"
                    else s.value <= best.value * (1 + CLOSE)):
                out.append(s)
    out += [s for s in scores if s.setting == start_key and s not in out]
    return out


def final_rounds(ctx: SearchContext, finalists: Sequence[tuple[Setting, Score]], rounds: int) -> None:
    """Re-measure the finalists at their best load, interleaved (round r starts at finalist r)."""
    if len(finalists) < 2 or rounds < 1:
        return
    for r in range(1, rounds + 1):
        k = (r - 1) % len(finalists)
        for setting, s in (*finalists[k:], *finalists[:k]):
            load = Load(request_rate=s.request_rate) if s.request_rate is not None else Load(s.concurrency or 1)
            ctx.evaluate(setting, round_=r, points=(load,))
