"""The search strategies' decisions, followed exactly: quick and brute over a model of a server.

The tests against a real tritonserver (test_tune.py, test_tune_modes.py) show that the search runs
end to end; their numbers are noisy, so they cannot show *which* points a strategy chose to measure.
Here the one thing that takes a point (``SearchContext.measurer``, perf_analyzer against the server
in a run) is a deterministic model of a CPU server: throughput grows with concurrency up to a
capacity set by the candidate, and latency follows Little's law.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tritonops.tune.journal import new_journal
from tritonops.tune.measure import Load, Measurement, MeasureSettings
from tritonops.tune.objective import Objective, Score
from tritonops.tune.search import SearchContext, brute, finalists, quick
from tritonops.tune.space import Candidate, ModelSpace

START = Candidate(instances=1, max_batch_size=16, dynamic_batching=True, preferred=(16,))
SPACE = ModelSpace(instances=(1, 2), max_batch_sizes=(4, 8, 16), dynamic_batching=(True, False),
                   queue_delays_us=(0, 500))


def capacity(c: Candidate) -> float:
    """infer/s the model of the server can give this candidate (two instances help, batching helps)."""
    cap = 700.0 * c.instances ** 0.8
    if c.dynamic_batching:
        cap *= 1.1 + 0.2 * math.log2(c.max_batch_size / 4) + (0.05 if c.queue_delay_us else 0.0)
    return cap


class ModelServer:
    """Stands in for perf_analyzer + tritonserver: the candidate ``apply`` loaded, measured at a load."""

    def __init__(self) -> None:
        self.loaded: Candidate | None = None
        self.points: list[tuple[str, int]] = []

    def apply(self, setting: dict[str, Candidate]) -> None:
        self.loaded = setting["m"]

    def measure(self, target, model, key, load: Load, round_, settings, work_dir, probe, progress, memory=None):
        assert self.loaded is not None and self.loaded.key == key  # measured as loaded
        self.points.append((key, load.concurrency))
        c = load.concurrency
        tput = capacity(self.loaded) * c / (c + 2)  # saturates at the capacity
        p99 = 1.5 * 1000.0 * c / tput + self.loaded.queue_delay_us / 1000.0  # Little's law, with a tail
        return Measurement(setting=key, concurrency=c, round=round_, status="ok", throughput=tput, p50_ms=p99 / 2,
                           p95_ms=p99 * 0.9, p99_ms=p99, avg_ms=p99 / 2)


def context(tmp_path: Path, name: str, objective: Objective, space: ModelSpace = SPACE
            ) -> tuple[SearchContext, ModelServer]:
    server = ModelServer()
    ctx = SearchContext(target=None, model="m", applier=server, journal=new_journal(tmp_path / name, {"model": "m"}),
                        spaces={"m": space}, concurrency=(1, 4, 16), objective=objective,
                        settings=MeasureSettings(), work_dir=tmp_path / name / "runs", progress=lambda _: None,
                        measurer=server.measure)
    return ctx, server


def round0(ctx: SearchContext) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for m in ctx.journal:
        if m.round == 0:
            out.setdefault(m.setting, []).append(m.concurrency)
    return out


def test_quick_finds_brutes_winner_and_a_trial_that_loses_costs_one_measurement(tmp_path):
    objective = Objective(budget_ms=20.0)
    qctx, qserver = context(tmp_path, "quick", objective)
    bctx, _ = context(tmp_path, "brute", objective)
    q = quick(qctx, {"m": START})
    b = brute(bctx, {"m": START})
    # the same config and value (brute's grid has no preferred sizes; quick keeps the start's, which the model
    # of the server ignores)
    assert (q.setting, b.setting) == ("i2_b16_db_d500_p16", "i2_b16_db_d500") and q.value == b.value
    assert len(round0(bctx)) == len(SPACE.grid()) + 1  # brute swept every config and the start
    # Worked out by hand from capacity() (p99 at 16 is 27000/capacity ms, at 4 9000/capacity):
    assert qserver.points == [
        (START.key, 16), (START.key, 4),  # the start: over the budget at the highest load, bisected below: 4 meets it
        ("i2_b16_db_d0_p16", 4), ("i2_b16_db_d0_p16", 16),  # beats it at 4 (1219 > 700/s): on to 16, the new best
        ("i2_b4_db_d0", 16), ("i2_b4_db_d0", 4),  # over the budget at 16 (20.1 ms): one load lower, loses
        ("i2_b8_db_d0", 16),  # within the budget at 16 but slower (1408 < 1625/s): one measurement
        ("i2_b16_nodb", 16), ("i2_b16_nodb", 4),  # over at 16, loses at 4
        ("i2_b16_db_d500_p16", 16),  # beats it at 16 (1679/s), the highest load: the new best
        # the second pass, around the new best (i1 with the delay, then the two smaller batch sizes)
        ("i1_b16_db_d500_p16", 16), ("i1_b16_db_d500_p16", 4), ("i2_b4_db_d500", 16), ("i2_b8_db_d500", 16),
    ]  # (batching off and delay 0 in the second pass are configs already measured: reused)
    assert qctx.measured == 14 and qctx.reused > 0 and bctx.measured == 57


def test_the_start_is_measured_at_the_highest_load_first_then_bisected_below_it(tmp_path):
    """START's p99 at concurrency c is 1500 (c + 2) / 1050 ms: 8.6 at 4, 14.3 at 8, 25.7 at 16, 48.6 at 32."""
    ctx, server = context(tmp_path, "generous", Objective(budget_ms=50.0))
    assert ctx.descend({"m": START}).concurrency == 16 and server.points == [(START.key, 16)]  # met at the top: done
    ctx, server = context(tmp_path, "six", Objective(budget_ms=20.0))
    ctx.concurrency = (1, 2, 4, 8, 16, 32)
    s = ctx.descend({"m": START})
    # over at 32; bisection over 1..16: 4 meets it, 16 does not, 8 does
    assert [c for _, c in server.points] == [32, 4, 16, 8] and s.met and s.concurrency == 8
    ctx, server = context(tmp_path, "none", Objective(budget_ms=1.0))
    assert not ctx.descend({"m": START}).met and [c for _, c in server.points] == [16, 4, 1]
    ctx, server = context(tmp_path, "latency", Objective(kind="latency"))
    ctx.descend({"m": START})
    assert [c for _, c in server.points] == [1]  # min latency at concurrency 1: its own sweep


def test_a_trial_over_the_budget_at_the_incumbents_load_is_tried_one_load_lower(tmp_path):
    """Half the capacity of the start at twice its latency: over the budget at 16, then measured at 4."""
    ctx, server = context(tmp_path, "over", Objective(budget_ms=20.0))
    incumbent = ctx.evaluate({"m": Candidate(instances=2, max_batch_size=16, dynamic_batching=True)})
    assert incumbent.concurrency == 16
    slow = Candidate(instances=1, max_batch_size=4, dynamic_batching=False)
    s = ctx.challenge({"m": slow}, incumbent)
    assert [c for k, c in server.points if k == slow.key] == [16, 4]
    assert s.met and s.concurrency == 4


def test_a_trial_that_beats_the_incumbent_sweeps_on_upward(tmp_path):
    ctx, server = context(tmp_path, "up", Objective(budget_ms=50.0), space=SPACE)
    weak = Candidate(instances=1, max_batch_size=4, dynamic_batching=False)
    incumbent = ctx.evaluate({"m": weak}, sweep=(Load(1), Load(4)))  # best so far at 4
    assert incumbent.concurrency == 4
    strong = Candidate(instances=2, max_batch_size=16, dynamic_batching=True)
    s = ctx.challenge({"m": strong}, incumbent)
    assert [c for k, c in server.points if k == strong.key] == [4, 16] and s.concurrency == 16


@pytest.mark.parametrize("objective, expected", [
    (Objective(kind="latency", at_throughput=900.0), [1, 4]),  # the sweep's own rule: 900/s reached at 4 (1056/s)
    (Objective(budget_ms=0.001), [1]),  # nobody meets it: over the budget at the first load
], ids=["at-throughput", "budget-nobody-meets"])
def test_other_objectives_and_an_incumbent_without_a_point_get_the_whole_sweep(tmp_path, objective, expected):
    """The sweep from the lowest load, with its own stopping rules, not one point at the incumbent's load."""
    ctx, server = context(tmp_path, "whole", objective)
    incumbent = ctx.evaluate({"m": START})
    assert incumbent.load == 16 if objective.kind == "latency" else not incumbent.met
    trial = Candidate(instances=2, max_batch_size=8, dynamic_batching=True)
    ctx.challenge({"m": trial}, incumbent)
    assert [c for k, c in server.points if k == trial.key] == expected


def _score(name: str, value: float | None) -> Score:
    return Score(setting=name, value=value, throughput=value, latency_ms=1.0, concurrency=16, met=value is not None,
                 closest_ms=None, points=(), final=False)


def test_finalists_are_the_best_those_within_five_percent_of_it_and_the_start():
    objective = Objective(budget_ms=20.0)
    # the MLP bench's quick search (2026-12-02): 6470/s was brute's winner, 1.8 % behind in one measurement
    scores = [_score("a", 6589), _score("b", 6566), _score("c", 6470), _score("d", 6356), _score("e", 6073),
              _score("start", 5961)]
    assert [s.setting for s in finalists(scores, 2, "start", objective)] == ["a", "b", "c", "d", "start"]
    # nothing close: the best two and the start (the text_embedding bench: 575 is 5.4 % behind 608)
    scores = [_score("start", 608), _score("b", 575), _score("c", 513)]
    assert [s.setting for s in finalists(scores, 2, "start", objective)] == ["start", "b"]
    many = [_score(str(k), 1000 - k) for k in range(10)]
    assert len(finalists(many, 2, "9", objective)) == 4 + 1  # at most four, and the start
    latency = Objective(kind="latency")
    scores = [_score("a", 2.0), _score("b", 2.09), _score("c", 2.2)]
    assert [s.setting for s in finalists(scores, 1, "x", latency)] == ["a", "b"]  # lower is better: within 5 %
