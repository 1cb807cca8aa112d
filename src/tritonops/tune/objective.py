"""What ``tune`` optimizes, and how a set of measurements is ranked.

- ``throughput`` (default): the highest throughput over the measured concurrencies whose latency
  percentile (p99, p95 or p50) is within the budget.
- ``latency``: the lowest latency percentile at concurrency 1.

A candidate's score comes from its final-round measurements when it has any (the median over the
interleaved rounds), else from the search's. When no candidate meets the budget, the ranking says so
and names the closest (the lowest latency at its best point).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tritonops.errors import UsageError
from tritonops.tune.measure import Measurement

Kind = Literal["throughput", "latency"]
Percentile = Literal["p50", "p95", "p99"]


@dataclass(frozen=True)
class Objective:
    kind: Kind = "throughput"
    percentile: Percentile = "p99"
    budget_ms: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("throughput", "latency"):
            raise UsageError(f"--objective '{self.kind}' is not throughput or latency", "use --objective throughput")
        if self.percentile not in ("p50", "p95", "p99"):
            raise UsageError(f"percentile '{self.percentile}' is not p50, p95 or p99", "use --p99-ms")
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise UsageError(f"the latency budget {self.budget_ms:g} ms is not positive", "e.g. --p99-ms 20")

    def describe(self) -> str:
        if self.kind == "latency":
            return f"min {self.percentile} latency at concurrency 1"
        if self.budget_ms is None:
            return "max throughput (no latency budget)"
        return f"max throughput with {self.percentile} <= {self.budget_ms:g} ms"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "percentile": self.percentile, "budget_ms": self.budget_ms,
                "description": self.describe()}


@dataclass(frozen=True)
class Point:
    """A candidate at one concurrency: the median over its measurements there."""

    concurrency: int
    throughput: float
    latency_ms: float
    runs: int


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

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "value": self.value, "throughput": self.throughput,
                "latency_ms": self.latency_ms, "concurrency": self.concurrency, "met_budget": self.met,
                "closest_ms": self.closest_ms, "from_final_rounds": self.final,
                "points": [p.__dict__ for p in self.points]}


def points_of(ms: Iterable[Measurement], percentile: Percentile) -> tuple[Point, ...]:
    by_c: dict[int, list[Measurement]] = {}
    for m in ms:
        lat = m.latency_ms(percentile)
        if m.status == "ok" and m.throughput is not None and lat is not None:
            by_c.setdefault(m.concurrency, []).append(m)
    pts = []
    for c, group in sorted(by_c.items()):
        pts.append(Point(c, float(statistics.median(m.throughput or 0.0 for m in group)),
                         float(statistics.median(m.latency_ms(percentile) or 0.0 for m in group)), len(group)))
    return tuple(pts)


def score(setting: str, ms: Sequence[Measurement], objective: Objective) -> Score:
    final = [m for m in ms if m.setting == setting and m.round > 0]
    use = final or [m for m in ms if m.setting == setting and m.round == 0]
    pts = points_of(use, objective.percentile)
    if not pts:
        return Score(setting, None, None, None, None, False, None, (), bool(final))
    closest = min(p.latency_ms for p in pts)
    if objective.kind == "latency":
        at1 = [p for p in pts if p.concurrency == 1] or [min(pts, key=lambda p: p.concurrency)]
        p = at1[0]
        met = objective.budget_ms is None or p.latency_ms <= objective.budget_ms
        return Score(setting, p.latency_ms if met else None, p.throughput, p.latency_ms, p.concurrency, met,
                     closest, pts, bool(final))
    within = [p for p in pts if objective.budget_ms is None or p.latency_ms <= objective.budget_ms]
    if not within:
        best = min(pts, key=lambda p: p.latency_ms)
        return Score(setting, None, best.throughput, best.latency_ms, best.concurrency, False, closest, pts,
                     bool(final))
    best = max(within, key=lambda p: p.throughput)
    return Score(setting, best.throughput, best.throughput, best.latency_ms, best.concurrency, True, closest, pts,
                 bool(final))


def better(a: Score, b: Score | None, objective: Objective) -> bool:
    """Whether ``a`` ranks above ``b`` (a met budget beats none; then the objective; then closeness)."""
    if b is None:
        return True
    return sort_key(a, objective) < sort_key(b, objective)


def sort_key(s: Score, objective: Objective) -> tuple[float, float]:
    if s.met and s.value is not None:
        return (0.0, -s.value if objective.kind == "throughput" else s.value)
    return (1.0, s.closest_ms if s.closest_ms is not None else float("inf"))


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
            return "no candidate was measured successfully"
        if not w.met:
            return (f"no candidate meets {o.describe()}; the closest is {w.setting} with {o.percentile} "
                    f"{w.closest_ms:.2f} ms")
        text = (f"winner {w.setting}: {w.throughput:.1f} infer/s at {o.percentile} {w.latency_ms:.2f} ms "
                f"(concurrency {w.concurrency})")
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
