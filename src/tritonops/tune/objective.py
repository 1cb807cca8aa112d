"""What ``tune`` optimizes, and how a set of measurements is ranked.

- ``throughput`` (default): the highest throughput over the measured loads whose latency
  percentile (p99, p95 or p50) is within the budget.
- ``latency``: the lowest latency percentile at concurrency 1; with ``at_throughput``
  (``--at-throughput N``), the lowest latency among the points that reach N inferences/s.
- Measured at offered request rates (``--request-rate``), a point counts only where the server kept
  up (achieved >= 97% of the offered rate; beyond that its queue, and so its latency, only grows);
  there a throughput target is reached at 97% of it. Poisson arrivals make the count of requests in
  a measurement itself random (relative spread 1/sqrt(N) for N expected requests), so where a
  measurement holds too few requests for 3% to be told from chance the allowance is 3 of those
  spreads instead (100/s over three 300 ms windows: N = 90, 32%).
- ``max_memory_mb``: a candidate whose server memory (its peak over its measurements) is above it is
  infeasible, whatever its numbers.

A candidate's score comes from its final-round measurements at the loads they re-measured (the
median over the interleaved rounds), and from the search's at the others. When no candidate meets
the objective, the ranking says so and names the closest (for a budget: the lowest latency; for a
throughput target: the highest throughput; over the memory limit: the least memory).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tritonops.errors import UsageError
from tritonops.tune.measure import Measurement

Kind = Literal["throughput", "latency"]
Percentile = Literal["p50", "p95", "p99"]
KEPT_UP = 0.97  # request-rate mode: the share of the offered rate a point must achieve to count
REACHED = 0.97  # request-rate mode: the share of --at-throughput that reaches it
NOISE_SPREADS = 3.0  # Poisson counting noise allowed for, in relative standard deviations
STABLE_WINDOWS = 3  # perf_analyzer reports the average over its last three (stable) windows


def allowance(request_rate: float | None, window_ms: int | None, share: float = KEPT_UP) -> float:
    """The shortfall below an offered rate that still counts as keeping up: 1 - ``share``, or the
    Poisson counting noise of a measurement that holds few requests, whichever is larger."""
    if request_rate is None:
        return 0.0
    if not window_ms:
        return 1.0 - share
    expected = request_rate * window_ms / 1000.0 * STABLE_WINDOWS
    return max(1.0 - share, NOISE_SPREADS / math.sqrt(max(expected, 1.0)))


def kept_up(throughput: float, request_rate: float | None, window_ms: int | None = None) -> bool:
    """At an offered request rate: the server answered (nearly) as fast as requests were offered."""
    return request_rate is None or throughput >= (1.0 - allowance(request_rate, window_ms)) * request_rate


def reaches(throughput: float, target: float, request_rate: float | None, window_ms: int | None = None) -> bool:
    """Whether ``throughput`` reaches a ``--at-throughput`` target (at a request rate: 97% of it, or
    within the counting noise of the measurement)."""
    return throughput >= target * (1.0 - allowance(request_rate, window_ms, REACHED))


@dataclass(frozen=True)
class Objective:
    kind: Kind = "throughput"
    percentile: Percentile = "p99"
    budget_ms: float | None = None
    at_throughput: float | None = None  # latency: the throughput (infer/s) a point must reach
    max_memory_mb: float | None = None
    request_rate: bool = False  # measured at offered request rates instead of concurrencies

    def __post_init__(self) -> None:
        if self.kind not in ("throughput", "latency"):
            raise UsageError(f"--objective '{self.kind}' is not throughput or latency", "use --objective throughput")
        if self.percentile not in ("p50", "p95", "p99"):
            raise UsageError(f"percentile '{self.percentile}' is not p50, p95 or p99", "use --p99-ms")
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise UsageError(f"the latency budget {self.budget_ms:g} ms is not positive", "e.g. --p99-ms 20")
        if self.at_throughput is not None:
            if self.kind != "latency":
                raise UsageError("--at-throughput goes with --objective latency (min latency at that throughput)",
                                 f"add --objective latency, e.g. --objective latency --at-throughput "
                                 f"{self.at_throughput:g}")
            if not self.at_throughput > 0:
                raise UsageError(f"--at-throughput {self.at_throughput:g} is not positive", "e.g. --at-throughput 500")
        elif self.kind == "latency" and self.request_rate:
            raise UsageError("--objective latency without --at-throughput is the latency at concurrency 1, which "
                             "--request-rate does not measure", "add --at-throughput N, or drop --request-rate")
        if self.max_memory_mb is not None and not self.max_memory_mb > 0:
            raise UsageError(f"--max-memory-mb {self.max_memory_mb:g} is not positive", "e.g. --max-memory-mb 2048")

    def describe(self) -> str:
        if self.kind == "latency":
            text = (f"min {self.percentile} latency at concurrency 1" if self.at_throughput is None
                    else f"min {self.percentile} latency at >= {self.at_throughput:g} infer/s")
            if self.budget_ms is not None:
                text += f" with {self.percentile} <= {self.budget_ms:g} ms"
        elif self.budget_ms is None:
            text = "max throughput (no latency budget)"
        else:
            text = f"max throughput with {self.percentile} <= {self.budget_ms:g} ms"
        if self.request_rate:
            text += " (Poisson request rates)"
        if self.max_memory_mb is not None:
            text += f", server memory <= {self.max_memory_mb:g} MB"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "percentile": self.percentile, "budget_ms": self.budget_ms,
                "at_throughput": self.at_throughput, "max_memory_mb": self.max_memory_mb,
                "load_mode": "request_rate" if self.request_rate else "concurrency", "description": self.describe()}


@dataclass(frozen=True)
class Point:
    """A candidate at one load (a concurrency, or an offered request rate): the median over its measurements there."""

    concurrency: int
    throughput: float
    latency_ms: float
    runs: int
    request_rate: float | None = None
    memory_mb: float | None = None  # the peak over its measurements
    window_ms: int | None = None  # the shortest perf_analyzer window of its measurements

    @property
    def load(self) -> float:
        return float(self.request_rate if self.request_rate is not None else self.concurrency)

    @property
    def kept_up(self) -> bool:
        return kept_up(self.throughput, self.request_rate, self.window_ms)

    def reaches(self, target: float) -> bool:
        return reaches(self.throughput, target, self.request_rate, self.window_ms)


@dataclass(frozen=True)
class Score:
    setting: str
    value: float | None  # throughput (higher is better) or latency (lower is better); None: not met
    throughput: float | None
    latency_ms: float | None
    concurrency: int | None
    met: bool
    closest_ms: float | None  # for a budget nobody meets: the lowest latency this candidate reached
    points: tuple[Point, ...]
    final: bool  # scored from the final rounds
    request_rate: float | None = None  # the offered rate of the scored point (request-rate mode)
    memory_mb: float | None = None  # the server's peak memory over this candidate's measurements
    over_memory: bool = False
    why: str = ""  # why it does not meet the objective

    @property
    def load(self) -> float | None:
        return self.request_rate if self.request_rate is not None else self.concurrency

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "value": self.value, "throughput": self.throughput,
                "latency_ms": self.latency_ms, "concurrency": self.concurrency, "request_rate": self.request_rate,
                "met_budget": self.met, "closest_ms": self.closest_ms, "memory_mb": self.memory_mb,
                "over_memory": self.over_memory, "why": self.why, "from_final_rounds": self.final,
                "points": [p.__dict__ for p in self.points]}


def points_of(ms: Iterable[Measurement], percentile: Percentile) -> tuple[Point, ...]:
    by_load: dict[float, list[Measurement]] = {}
    for m in ms:
        lat = m.latency_ms(percentile)
        if m.status == "ok" and m.throughput is not None and lat is not None:
            by_load.setdefault(m.load, []).append(m)
    pts = []
    for _, group in sorted(by_load.items()):
        mem = [m.memory_mb for m in group if m.memory_mb is not None]
        windows = [m.window_ms for m in group if m.window_ms]
        pts.append(Point(group[0].concurrency, float(statistics.median(m.throughput or 0.0 for m in group)),
                         float(statistics.median(m.latency_ms(percentile) or 0.0 for m in group)), len(group),
                         group[0].request_rate, max(mem) if mem else None, min(windows) if windows else None))
    return tuple(pts)


def _at(setting: str, value: float | None, p: Point, met: bool, closest: float | None, pts: tuple[Point, ...],
        final: bool, memory: float | None, over: bool, why: str = "") -> Score:
    return Score(setting, value if met else None, p.throughput, p.latency_ms, p.concurrency if p.request_rate is None
                 else None, met, closest, pts, final, p.request_rate, memory, over, why)


def score(setting: str, ms: Sequence[Measurement], objective: Objective) -> Score:
    o = objective
    mine = [m for m in ms if m.setting == setting]
    final = [m for m in mine if m.round > 0]
    # At a load the final rounds re-measured, they decide; the search's points at other loads still
    # count (a finalist whose re-measured point went over the budget keeps its lower loads).
    again = {m.load for m in final}
    use = [*final, *(m for m in mine if m.round == 0 and m.load not in again)]
    pts = points_of(use, o.percentile)
    if not pts:  # why: the last failure's note (a refused config, a timeout)
        note = next((m.note for m in reversed(use) if m.note), "") or "nothing measured"
        return Score(setting, None, None, None, None, False, None, (), bool(final), why=note)
    sampled = [m.memory_mb for m in mine if m.status == "ok" and m.memory_mb is not None]
    memory = max(sampled) if sampled else None
    over = o.max_memory_mb is not None and (memory is None or memory > o.max_memory_mb)
    mem_why = "" if not over else ("server memory not measured" if memory is None else
                                   f"server memory {memory:.0f} MB > {o.max_memory_mb:g} MB")
    closest = min(p.latency_ms for p in pts)
    valid = [p for p in pts if p.kept_up]  # where the server fell behind, the latency is only queueing

    def within(p: Point) -> bool:
        return o.budget_ms is None or p.latency_ms <= o.budget_ms

    if o.kind == "latency" and o.at_throughput is None:
        p = ([p for p in pts if p.concurrency == 1] or [min(pts, key=lambda p: p.concurrency)])[0]
        met = within(p) and not over
        why = mem_why or ("" if within(p) else f"{o.percentile} {p.latency_ms:.2f} ms > {o.budget_ms:g} ms")
        return _at(setting, p.latency_ms, p, met, closest, pts, bool(final), memory, over, why)
    if o.kind == "latency":
        target = o.at_throughput or 0.0
        reaching = [p for p in valid if p.reaches(target) and within(p)]
        if reaching and not over:
            p = min(reaching, key=lambda p: p.latency_ms)
            return _at(setting, p.latency_ms, p, True, closest, pts, bool(final), memory, over)
        p = max(valid or pts, key=lambda p: p.throughput)
        why = mem_why or f"reached {p.throughput:.1f} of {o.at_throughput:g} infer/s" + (
            "" if not any(q.reaches(target) for q in valid) else " only over the budget")
        return _at(setting, None, p, False, closest, pts, bool(final), memory, over, why)
    ok = [p for p in valid if within(p)]
    if not ok or over:
        p = min(pts, key=lambda p: p.latency_ms)
        why = mem_why or (f"{o.percentile} {p.latency_ms:.2f} ms > {o.budget_ms:g} ms" if valid
                          else "fell behind the offered rate at every load")
        return _at(setting, None, p, False, closest, pts, bool(final), memory, over, why)
    p = max(ok, key=lambda p: p.throughput)
    return _at(setting, p.throughput, p, True, closest, pts, bool(final), memory, over)


def better(a: Score, b: Score | None, objective: Objective) -> bool:
    """Whether ``a`` ranks above ``b`` (a met budget beats none; then the objective; then closeness)."""
    if b is None:
        return True
    return sort_key(a, objective) < sort_key(b, objective)


def sort_key(s: Score, objective: Objective) -> tuple[float, float]:
    """Met first (by the objective); then the closest: within the memory limit first (by latency, or
    for a throughput target by throughput), then over it (by memory)."""
    inf = float("inf")
    if s.met and s.value is not None:
        return (0.0, -s.value if objective.kind == "throughput" else s.value)
    if s.over_memory:
        return (2.0, s.memory_mb if s.memory_mb is not None else inf)
    if objective.at_throughput is not None:
        return (1.0, -s.throughput if s.throughput is not None else inf)
    return (1.0, s.closest_ms if s.closest_ms is not None else inf)


@dataclass(frozen=True)
class Ranking:
    scores: tuple[Score, ...]  # best first
    objective: Objective

    @property
    def winner(self) -> Score | None:
        return self.scores[0] if self.scores and self.scores[0].points else None

    @property
    def runner_up(self) -> Score | None:
        return self.scores[1] if len(self.scores) > 1 and self.scores[1].points else None

    @property
    def met(self) -> bool:
        w = self.winner
        return bool(w and w.met)

    def gap(self) -> float | None:
        """How far the runner-up is behind the winner, as a fraction of the winner (0.05: 5% worse)."""
        w, r = self.winner, self.runner_up
        if not (w and r and w.met and r.met and w.value and r.value is not None):
            return None
        if self.objective.kind == "throughput":
            return (w.value - r.value) / w.value
        return (r.value - w.value) / w.value

    def summary(self) -> str:
        w = self.winner
        o = self.objective
        if w is None:
            first = next((s for s in self.scores if s.why), None)
            return "no candidate was measured successfully" + (f" ({first.setting}: {first.why})" if first else "")
        if not w.met:
            if w.over_memory:
                closeness = (f"server memory {w.memory_mb:.0f} MB" if w.memory_mb is not None
                             else "no memory measurement")
            elif o.at_throughput is not None:
                closeness = f"{w.throughput:.1f} infer/s"
            else:
                closeness = f"{o.percentile} {w.closest_ms:.2f} ms"
            return f"no candidate meets {o.describe()}; the closest is {w.setting} with {closeness}"
        where = (f"concurrency {w.concurrency}" if w.request_rate is None
                 else f"offered {w.request_rate:g} requests/s")
        text = f"winner {w.setting}: {w.throughput:.1f} infer/s at {o.percentile} {w.latency_ms:.2f} ms ({where}"
        text += ")" if w.memory_mb is None else f", server memory {w.memory_mb:.0f} MB)"
        g = self.gap()
        r = self.runner_up
        if r is not None and g is not None:
            text += f"; runner-up {r.setting} is {g * 100:.1f}% behind"
        return text

    def to_dict(self) -> dict[str, Any]:
        w, r = self.winner, self.runner_up
        return {"objective": self.objective.to_dict(), "met_budget": self.met, "summary": self.summary(),
                "winner": w.to_dict() if w else None, "runner_up": r.to_dict() if r else None, "gap": self.gap(),
                "scores": [s.to_dict() for s in self.scores]}


def rank(ms: Sequence[Measurement], objective: Objective, settings: Iterable[str] | None = None) -> Ranking:
    names = list(dict.fromkeys(settings if settings is not None else (m.setting for m in ms)))
    # Candidates re-measured in the final rounds rank first: the search's numbers only chose them.
    scores = sorted((score(s, ms, objective) for s in names), key=lambda s: (not s.final, *sort_key(s, objective)))
    return Ranking(tuple(scores), objective)
