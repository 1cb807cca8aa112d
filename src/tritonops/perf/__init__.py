"""Performance measurement: perf_analyzer sweeps, open-loop Poisson load with locust, and studies
(protocols, configs) rendered as self-contained HTML reports."""

from tritonops.perf.analyzer import PerfOptions, PerfResult, PerfRow, parse_perf_csv, run_perf, sweep
from tritonops.perf.target import ModelIO, Target, fetch_model_io, open_target

__all__ = [
    "ModelIO",
    "PerfOptions",
    "PerfResult",
    "PerfRow",
    "Target",
    "fetch_model_io",
    "open_target",
    "parse_perf_csv",
    "run_perf",
    "sweep",
]
