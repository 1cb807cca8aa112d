"""The open-loop arrival generator really draws a Poisson process, and the KS test can tell."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tritonops.perf.poisson import PoissonSchedule, arrival_times, ks_critical, ks_exponential


def test_arrival_gaps_pass_ks_against_exponential():
    rate = 200.0
    times = arrival_times(rate, duration_s=60.0, rng=np.random.default_rng(7))
    gaps = np.diff(np.concatenate([[0.0], times]))
    result = ks_exponential(gaps, rate, alpha=0.01)
    assert result.n > 10_000
    assert result.passed, f"D={result.statistic:.4f} >= {result.critical:.4f}"
    # the count in the window is Poisson(λT): within 4 standard deviations
    assert abs(len(times) - rate * 60) < 4 * math.sqrt(rate * 60)
    assert np.all(np.diff(times) > 0) and times[-1] < 60.0


def test_schedule_iterator_is_the_same_process():
    rate = 50.0
    sched = PoissonSchedule(rate, seed=3)
    offsets = np.array([next(sched) for _ in range(5000)])
    gaps = np.diff(np.concatenate([[0.0], offsets]))
    assert ks_exponential(gaps, rate).passed
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.05)
    # a wrong rate is rejected: the test has power
    assert not ks_exponential(gaps, rate * 1.2).passed


@pytest.mark.parametrize("name, make_gaps", [
    # closed loop: an exponential think time *after* a 10 ms response is not Poisson at the same mean
    ("closed-loop", lambda rng: 0.010 + rng.exponential(0.010, 5000)),
    ("uniform", lambda rng: rng.uniform(0, 0.040, 5000)),
    ("constant", lambda rng: np.full(5000, 0.020)),
])
def test_ks_rejects_non_poisson_arrivals_with_the_same_mean(name, make_gaps):
    gaps = make_gaps(np.random.default_rng(1))
    assert gaps.mean() == pytest.approx(0.020, rel=0.05)
    result = ks_exponential(gaps, rate=50.0)
    assert not result.passed, name


def test_ks_statistic_by_hand():
    # one sample at the median of Exp(1): F = 0.5, so D = max(1 - 0.5, 0.5 - 0) = 0.5
    r = ks_exponential([math.log(2)], rate=1.0)
    assert r.statistic == pytest.approx(0.5)
    # two samples at the 25% and 75% quantiles: D = max(0.5-0.25, 1-0.75, 0.25-0, 0.75-0.5) = 0.25
    q = [-math.log(0.75), -math.log(0.25)]
    assert ks_exponential(q, rate=1.0).statistic == pytest.approx(0.25)
    assert ks_critical(100, 0.05) == pytest.approx(0.1358, abs=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError):
        arrival_times(0, 1, np.random.default_rng())
    with pytest.raises(ValueError):
        PoissonSchedule(-1)
    with pytest.raises(ValueError):
        ks_exponential([], 1.0)
