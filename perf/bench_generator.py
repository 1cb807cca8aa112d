"""Benchmark (issue 15): the open-loop generator's ceiling / perf_analyzer's peak, per protocol.

A small MLP (``wide_mlp`` at a small width, built by ``tritonops build``: dynamic batching) is served
by one real tritonserver. Per protocol (HTTP binary, gRPC), on the same model and server:

- perf_analyzer's peak: the highest throughput of a concurrency sweep (its C++ client, closed loop);
- the generator's ceiling: the highest Poisson rate λ at which ``run_locust`` keeps its schedule,
  i.e. achieved/scheduled ≥ 0.99 and send lag p99 ≤ 10 ms, without errors: λ steps up geometrically
  (one locust run of short cells), then bisects (geometrically) between the last λ kept and the first
  missed, one short cell per step;
- perf_analyzer's own open-loop ceiling, for reference: its request-rate mode with Poisson arrivals
  (``--request-distribution poisson``, the C++ client's own schedule) at the same λs, kept while it
  reports under 1 % of its requests delayed and delivers ≥ 0.99 λ (its "delayed" counts any late
  send, a stricter rule than the generator's 10 ms);
- the same ceiling of the previous generator (``encode_per_request``: tritonclient encodes every
  request), so the improvement is measured on the same machine, with ``--old``.

Prints one line per cell (with the generator's own CPU per request, send lag and sent/scheduled)
and the side-by-side table of ceiling / peak.

    PYTHONPATH=src python perf/bench_generator.py [--protocols http-binary,grpc] [--cell-s 3] [--old]
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, wide_mlp

from tritonops.build import BuildOptions, build
from tritonops.perf.analyzer import PerfOptions, perf_analyzer_env, prepare_samples, require_perf_analyzer, sweep
from tritonops.perf.loadtest import GENERATOR_LAG_MS, GENERATOR_SENT, LoadtestResult, Phase, run_locust
from tritonops.perf.target import Target, fetch_model_io, http_alive
from tritonops.server import ServerOptions, TritonServer


def keeps(r: LoadtestResult) -> bool:
    """The issue's criterion: achieved/scheduled >= 0.99 and send lag p99 <= 10 ms, no errors."""
    lag = r.lag_ms.get("p99")
    return (r.error_count == 0 and r.achieved_vs_scheduled >= GENERATOR_SENT and lag is not None
            and lag <= GENERATOR_LAG_MS and not r.fell_behind)


def delivers(r: LoadtestResult) -> bool:
    """The criterion without its lag part: the arrivals were sent and answered (on a machine whose
    other load deschedules the generator for more than 10 ms, this is what is left to compare)."""
    return r.error_count == 0 and r.achieved_vs_scheduled >= GENERATOR_SENT and not r.fell_behind


def line(label: str, r: LoadtestResult) -> str:
    g = r.generator
    cpu = f"{g.cpu_ms_per_request:.3f}" if g.cpu_ms_per_request is not None else "-"
    return (f"  {label:<5} λ={r.offered_rate:7.0f}  achieved {r.achieved_rate:7.1f}/s  ach/sched "
            f"{r.achieved_vs_scheduled:.3f}  sent/sched {g.sent_vs_scheduled or 0:.3f}  lag p99 "
            f"{r.lag_ms.get('p99', 0):7.2f} ms  p99 {r.latency_ms.get('p99', 0):7.2f} ms  cpu {cpu} ms/req  "
            f"errors {r.error_count}  {r.outcome}  {'KEPT' if keeps(r) else '-'}")


def ceiling(target: Target, io, samples, protocol: str, out: Path, a: argparse.Namespace,
            old: bool) -> tuple[float, float]:
    """(the highest λ kept, the highest ramp λ delivered)."""
    label = "old" if old else "new"
    kw = {"cell_timeout_s": a.cell_s + 5.0, "processes": a.processes, "encode_per_request": old}
    ramp = [a.start * 2.0 ** i for i in range(a.steps)]
    results, _ = run_locust(target, io, samples, protocol,  # type: ignore[arg-type]
                            [Phase(r, a.cell_s, seed=i, subdir=f"ramp_{r:g}") for i, r in enumerate(ramp)],
                            out / f"{label}_ramp", **kw)
    for r in results:
        print(line(label, r), flush=True)
    delivered = max((r.offered_rate for r in results if delivers(r)), default=0.0)
    kept = [r.offered_rate for r in results if keeps(r)]
    if not kept:
        return 0.0, delivered
    lo = max(kept)  # a noisy miss below the highest λ kept does not end the search
    above = [r.offered_rate for r in results if r.offered_rate > lo]
    if not above:
        return lo, delivered  # kept up to the top of the ramp: the ceiling is at least this
    hi = min(above)
    for step in range(a.bisect):
        mid = math.sqrt(lo * hi)
        got, _ = run_locust(target, io, samples, protocol, [Phase(mid, a.cell_s, seed=100 + step)],  # type: ignore[arg-type]
                            out / f"{label}_bisect_{step}", **kw)
        print(line(label, got[0]), flush=True)
        lo, hi = (mid, hi) if keeps(got[0]) else (lo, mid)
    return lo, delivered


def pa_open_loop(target: Target, protocol: str, rates: list[float], a: argparse.Namespace) -> float:
    """perf_analyzer's own Poisson request-rate mode at ``rates``: the highest λ it kept (< 1 % of its
    requests delayed, throughput >= 0.99 λ)."""
    pa = str(require_perf_analyzer())
    url, kind = (target.grpc_url, "grpc") if protocol == "grpc" else (target.http_url, "http")
    kept = 0.0
    for rate in rates:
        p = subprocess.run([pa, "-m", "mlp", "-u", url, "-i", kind, "--request-rate-range", f"{rate:g}",
                            "--request-distribution", "poisson", "--max-threads", "16",
                            "--measurement-interval", str(int(a.cell_s * 1000)), "--stability-percentage", "999",
                            "--max-trials", "3"], capture_output=True, text=True, env=perf_analyzer_env(),
                           timeout=120, check=False)
        out = p.stdout + p.stderr
        tput = [float(x) for x in re.findall(r"Throughput: ([\d.]+) infer/sec", out)]
        delayed = [float(x) for x in re.findall(r"([\d.]+)% of the requests were delayed", out)]
        got, late = (tput[-1] if tput else 0.0), (delayed[-1] if delayed else 0.0)
        ok = p.returncode == 0 and late < 1.0 and got >= GENERATOR_SENT * rate
        print(f"  pa    λ={rate:7.0f}  achieved {got:7.1f}/s  delayed {late:5.1f} %  rc {p.returncode}  "
              f"{'KEPT' if ok else '-'}", flush=True)
        kept = max(kept, rate) if ok else kept
    return kept


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocols", default="http-binary,grpc")
    ap.add_argument("--width", type=int, default=64, help="MLP width (input/output features)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--concurrency", default="1,2,4,8,16,32")
    ap.add_argument("--interval-ms", type=int, default=2000, help="perf_analyzer measurement window")
    ap.add_argument("--cell-s", type=float, default=3.0, help="seconds of Poisson load per cell")
    ap.add_argument("--start", type=float, default=125.0, help="first λ of the geometric ramp")
    ap.add_argument("--steps", type=int, default=6, help="λ doublings in the ramp")
    ap.add_argument("--bisect", type=int, default=4, help="bisection steps after the ramp")
    ap.add_argument("--processes", type=int, default=None, help="generator processes [default: automatic]")
    ap.add_argument("--old", action="store_true", help="also the previous generator's ceiling")
    ap.add_argument("--out", type=Path, default=Path("perf/results/generator"))
    a = ap.parse_args()
    protocols = [p.strip() for p in a.protocols.split(",") if p.strip()]
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = wide_mlp(Path(tmp) / "src" / "mlp.onnx", width=a.width, hidden=a.hidden)
        repo = Path(tmp) / "repo"
        build(BuildOptions(source=str(onnx_path), repository=repo, name="mlp"))
        with TritonServer(ServerOptions(repository=repo)) as s:
            target = Target(http_url=s.http_url, grpc_url=s.grpc_url, alive=lambda: http_alive(s.http_url))
            io = fetch_model_io(target, "mlp")
            samples = prepare_samples(io, None, ())
            for p in protocols:
                proto, fmt = ("grpc", "binary") if p == "grpc" else ("http", "binary")
                res = sweep(PerfOptions(model="mlp", output_dir=a.out / "perf_analyzer" / p, url=s.http_url,
                                        grpc_url=s.grpc_url, protocol=proto, http_format=fmt,  # type: ignore[arg-type]
                                        concurrency=tuple(int(c) for c in a.concurrency.split(",")),
                                        measurement_interval_ms=a.interval_ms, stability_percentage=20.0,
                                        max_trials=5), target)
                for row in res.rows:
                    print(f"  perf_analyzer {p} c={row.load:g}: {row.throughput or 0:.1f}/s  {row.status}", flush=True)
                peak = max((row.throughput or 0.0) for row in res.rows)
                pa_kept = pa_open_loop(target, p, [a.start * 2.0 ** i for i in range(a.steps)], a)
                new = ceiling(target, io, samples, p, a.out / p, a, old=False)
                old = ceiling(target, io, samples, p, a.out / p, a, old=True) if a.old else None
                table.append((p, peak, new, old, pa_kept))
    print(f"machine: {machine()}")
    print(f"{'protocol':<12} {'pa peak/s':>10} {'ceiling/s':>10} {'ratio':>7} {'old ceiling/s':>14} {'old ratio':>10}"
          f" {'delivered/s':>12} {'old delivered/s':>16} {'pa open loop/s':>15}")
    for p, peak, (kept, kept_d), old, pa_kept in table:
        olds = f"{old[0]:14.0f} {old[0] / peak:10.3f}" if old is not None and peak else f"{'-':>14} {'-':>10}"
        print(f"{p:<12} {peak:10.1f} {kept:10.0f} {kept / peak if peak else 0:7.3f} {olds} {kept_d:12.0f} "
              f"{old[1] if old is not None else 0:16.0f} {pa_kept:15.0f}")
    for p, peak, (kept, _), _, pa_kept in table:
        print(f"RESULT generator ceiling / perf_analyzer peak ({p}): {kept / peak if peak else 0:.3f} "
              f"({kept:.0f} vs {peak:.1f} req/s); perf_analyzer's own open loop / its peak: "
              f"{pa_kept / peak if peak else 0:.3f} ({pa_kept:.0f} req/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
