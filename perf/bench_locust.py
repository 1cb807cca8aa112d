"""Benchmark (c): locust's achieved rate / offered rate at the highest Poisson rate λ it sustains.

A small MLP is served by a real tritonserver (so the server is not the bottleneck); one locust process
ramps λ through open-loop Poisson phases. λ counts as sustained when no request failed or was
dropped (ClientSaturated), nothing was left in flight, p99 latency stayed within 5× the lowest of
the first two phases' (at least 20 ms), and the generator stayed on schedule (p99 of send time minus
scheduled time ≤ --max-lag-ms). The highest sustained λ is then run ``--repeats`` more times, longer, and
the median achieved/offered is the result (achieved = successful responses within the window / s).

    PYTHONPATH=src python perf/bench_locust.py [--protocol http-binary] [--rates 100,200,...] [--hold-s 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import machine

from tritonops.build import BuildOptions, build
from tritonops.perf.analyzer import prepare_samples
from tritonops.perf.loadtest import Phase, run_locust
from tritonops.perf.target import Target, fetch_model_io, http_alive
from tritonops.server import ServerOptions, TritonServer


def sustained(r, baseline_p99: float, max_lag_ms: float) -> bool:
    return (r.error_count == 0 and r.settings.get("unfinished", 0) == 0 and bool(r.latency_ms)
            and r.latency_ms["p99"] <= max(5 * baseline_p99, 20.0) and r.lag_ms.get("p99", 0.0) <= max_lag_ms)


def main() -> int:
    import onnx_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="http-binary", choices=["http-binary", "http-json", "grpc"])
    ap.add_argument("--rates", default="100,200,300,400,500,600,700,800,1000,1200")
    ap.add_argument("--ramp-s", type=float, default=8.0, help="seconds per ramp phase")
    ap.add_argument("--hold-s", type=float, default=30.0, help="seconds per confirmation run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-lag-ms", type=float, default=10.0, help="p99 send lag that still counts as on time")
    ap.add_argument("--out", type=Path, default=Path("perf/results/locust"))
    a = ap.parse_args()
    rates = [float(x) for x in a.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        mlp = onnx_models.mlp(Path(tmp) / "src" / "mlp.onnx")
        build(BuildOptions(source=str(mlp), repository=Path(tmp) / "repo", name="mlp"))
        with TritonServer(ServerOptions(repository=Path(tmp) / "repo")) as s:
            target = Target(http_url=s.http_url, grpc_url=s.grpc_url, alive=lambda: http_alive(s.http_url))
            io = fetch_model_io(target, "mlp")
            samples = prepare_samples(io, None, ())
            ramp, _ = run_locust(target, io, samples, a.protocol,
                                 [Phase(r, a.ramp_s, seed=i, subdir=f"ramp_{r:g}") for i, r in enumerate(rates)],
                                 a.out / "ramp", progress=lambda m: print("  ..", m, flush=True))
            base = min(r.latency_ms["p99"] for r in ramp[:2] if r.latency_ms)
            print(f"machine: {machine()}")
            best = None
            for r in ramp:
                ok = sustained(r, base, a.max_lag_ms)
                print(f"  ramp λ={r.offered_rate:6g}  achieved {r.achieved_rate:7.1f}/s  ratio {r.achieved_ratio:.3f}"
                      f"  vs schedule {r.achieved_vs_scheduled:.3f}  p99 {r.latency_ms.get('p99', 0):7.2f} ms"
                      f"  lag p99 {r.lag_ms.get('p99', 0):6.2f} ms  errors {r.error_count}"
                      f"  {'sustained' if ok else '-'}")
                if ok and (best is None or r.offered_rate > best):
                    best = r.offered_rate
            if best is None:
                print("RESULT (c) no rate was sustained")
                return 1
            phases = [Phase(best, a.hold_s, seed=100 + i, subdir=f"hold_{i + 1}") for i in range(a.repeats)]
            hold, _ = run_locust(target, io, samples, a.protocol, phases, a.out / "hold",
                                 progress=lambda m: print("  ..", m, flush=True))
    for r in hold:
        print(f"  hold λ={r.offered_rate:g}: achieved {r.achieved_rate:.1f}/s = {r.achieved_ratio:.4f} of offered "
              f"({r.achieved_vs_scheduled:.4f} of the schedule's {r.scheduled_rate:.1f}/s), p99 "
              f"{r.latency_ms.get('p99', 0):.2f} ms, errors {r.error_count}, "
              f"send-gap KS D={r.send_gaps_ks.get('statistic', 0):.3f}")
    ratio = statistics.median(r.achieved_ratio for r in hold)
    vs_sched = statistics.median(r.achieved_vs_scheduled for r in hold)
    print(f"RESULT (c) locust achieved/offered at λ={best:g} req/s ({a.protocol}): {ratio:.4f} "
          f"(median of {len(hold)} x {a.hold_s:g} s; achieved/scheduled {vs_sched:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
