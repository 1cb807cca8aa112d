"""The response-cache dimension of the protocol study (issue 15): the same open-loop cells with Triton's
response cache off and on, with a chosen fraction of repeated payloads, and the server's own cache
statistics (hits, misses, time per hit and per miss) beside the client's latencies."""

from __future__ import annotations

from dataclasses import dataclass

from tritonops.perf.loadtest import Outcome


@dataclass(frozen=True)
class CacheCell:
    """One (protocol, λ, cache off|on) over all repeats: medians and the min–max spread."""

    protocol: str
    rate: float
    cache: bool
    repeat_fraction: float  # share of requests whose payload repeats an earlier one
    runs: int
    achieved_rate: float
    p50_ms: float | None
    p99_ms: float | None
    p50_range: tuple[float, float] | None
    p99_range: tuple[float, float] | None
    outcome: Outcome  # the worst outcome over the repeats
    hits: int  # the server's cache statistics over the cell's runs (0 with the cache off)
    misses: int
    hit_ms: float | None  # server-side mean time of a request answered from the cache
    miss_ms: float | None  # server-side mean time of a request that missed (lookup + compute + insert)
    request_bytes: int
