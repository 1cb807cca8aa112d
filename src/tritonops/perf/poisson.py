"""Open-loop Poisson arrivals, and the Kolmogorov–Smirnov test that checks them.

A Poisson process at rate λ has independent exponential inter-arrival gaps with mean 1/λ. Open-loop
load sends request *i* at ``start + t_i`` regardless of when earlier responses came back; sleeping an
exponential time *after* each response (locust's ``wait_time``) is closed-loop and lets a slow server
slow the offered load down. ``PoissonSchedule`` produces the absolute send times; the load generator
sleeps until each one against a monotonic clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


def arrival_times(rate: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival offsets (seconds from 0) of a Poisson process at ``rate``/s within ``[0, duration_s)``."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    times: list[float] = []
    t = 0.0
    # Draw gaps in chunks: cheap, and the sequence does not depend on the chunk size.
    while True:
        gaps = rng.exponential(1.0 / rate, size=max(16, int(rate * duration_s * 0.25) + 1))
        for g in gaps:
            t += float(g)
            if t >= duration_s:
                return np.asarray(times)
            times.append(t)


class PoissonSchedule:
    """An endless iterator of arrival offsets (seconds since the start of the load). ``seed`` may be a
    sequence (``(seed, stream)``): independent streams of one load each draw their own arrivals."""

    def __init__(self, rate: float, seed: int | Sequence[int] | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._rng = np.random.default_rng(seed)
        self._t = 0.0

    def __iter__(self) -> Iterator[float]:
        return self

    def __next__(self) -> float:
        self._t += float(self._rng.exponential(1.0 / self.rate))
        return self._t


@dataclass(frozen=True)
class KSResult:
    statistic: float  # D = sup |F_n(x) - F(x)|
    critical: float  # asymptotic critical value at alpha
    alpha: float
    n: int

    @property
    def passed(self) -> bool:
        """True when the sample is consistent with the distribution (D below the critical value)."""
        return self.statistic < self.critical


def ks_critical(n: int, alpha: float = 0.01) -> float:
    """Asymptotic one-sample KS critical value ``sqrt(-ln(alpha/2)/2) / sqrt(n)`` (1.358/√n at 5%)."""
    if n < 1 or not 0 < alpha < 1:
        raise ValueError("need n >= 1 and 0 < alpha < 1")
    return math.sqrt(-math.log(alpha / 2) / 2) / math.sqrt(n)


def ks_exponential(gaps: Sequence[float] | np.ndarray, rate: float, alpha: float = 0.01) -> KSResult:
    """One-sample KS test of ``gaps`` against Exponential(rate) with a *known* rate."""
    x = np.sort(np.asarray(gaps, dtype=np.float64))
    n = len(x)
    if n == 0:
        raise ValueError("no samples")
    cdf = 1.0 - np.exp(-rate * x)
    i = np.arange(1, n + 1)
    d_plus = float(np.max(i / n - cdf))
    d_minus = float(np.max(cdf - (i - 1) / n))
    return KSResult(statistic=max(d_plus, d_minus), critical=ks_critical(n, alpha), alpha=alpha, n=n)
