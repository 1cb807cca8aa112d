"""Benchmark: tritonops tune quick vs brute (the ground truth) on one server, one model, one p99 budget.

Builds the MLP Model Analyzer was measured on in TOOLCHAIN.md (256 -> 1024 -> 256), starts one
tritonserver in explicit mode, runs ``tune --strategy brute`` and ``tune --strategy quick`` against it
over the same space and budget, then re-measures both winners (and the starting config) with the
same perf_analyzer settings in interleaved rounds at equal load, so that neither search's own
numbers decide. Prints, per search: best throughput within the budget (re-measured), perf_analyzer
measurements, server restarts (none: candidates are loaded with config overrides), wall time.

Model Analyzer is not run by this script (see perf/RESULTS_tune.md for why and for its numbers
from TOOLCHAIN.md).

    PYTHONPATH=src python perf/bench_tune.py [--budget-ms 20] [--rounds 3] [--out perf/results/tune]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, wide_mlp

from tritonops.build import BuildOptions, build
from tritonops.client import TritonClient
from tritonops.perf.target import Target, http_alive
from tritonops.server import ServerOptions, TritonServer
from tritonops.tune import Candidate, TuneOptions, run_tune
from tritonops.tune.apply import applied, discover
from tritonops.tune.measure import MeasureSettings, measure

SPACE = """models:
  mlp:
    instances: [1, 2]
    max_batch_sizes: [4, 8, 16]
    dynamic_batching: [true, false]
    queue_delays_us: [0, 500]
    threads: [1]
concurrency: [1, 4, 16]
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--budget-ms", type=float, default=20.0, help="p99 budget in ms")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved re-measurement rounds")
    ap.add_argument("--interval-ms", type=int, default=1000, help="perf_analyzer measurement window")
    ap.add_argument("--stability", type=float, default=50.0,
                    help="perf_analyzer stability %% (the shared 2-core machines rarely hold 15%%)")
    ap.add_argument("--out", type=Path, default=Path("perf/results/tune"))
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    (a.out / "space.yaml").write_text(SPACE)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        build(BuildOptions(source=str(wide_mlp(Path(tmp) / "mlp.onnx", width=256, hidden=1024)), repository=repo,
                           name="mlp", max_batch_size=16))
        with TritonServer(ServerOptions(repository=repo, explicit=True, load_models=("mlp",))) as server:
            results = {}
            for strategy in ("brute", "quick"):
                t0 = time.monotonic()
                r = run_tune(TuneOptions(
                    model="mlp", output_dir=a.out / strategy, url=server.http_url, grpc_url=server.grpc_url,
                    budget_ms=a.budget_ms, strategy=strategy, space_file=a.out / "space.yaml",  # type: ignore[arg-type]
                    measurement_interval_ms=a.interval_ms, stability_percentage=a.stability),
                    progress=lambda m: print("  ..", m, flush=True))
                if r.interrupted:
                    return 130
                results[strategy] = (r, time.monotonic() - t0)
                print(f"{strategy}: {r.ranking.summary()} ({r.measured} measurements)", flush=True)
            target = Target(http_url=server.http_url, grpc_url=server.grpc_url,
                            alive=lambda: http_alive(server.http_url))
            contenders: dict[str, Candidate] = {name: r.winner["mlp"] for name, (r, _) in results.items()}
            contenders["start"] = results["quick"][0].start["mlp"]
            remeasured = remeasure(server.http_url, server.grpc_url, target, contenders, a, a.out / "final")
    print(f"machine: {machine()}")
    print(f"{'search':<8} {'winner':<22} {'best infer/s within p99 ' + format(a.budget_ms, 'g') + ' ms':>32} "
          f"{'measurements':>12} {'restarts':>8} {'wall s':>7}")
    for name, (r, wall) in results.items():
        print(f"{name:<8} {r.winner['mlp'].key:<22} {remeasured[name]:>32.1f} {r.measured:>12} {0:>8} {wall:>7.0f}")
    print(f"{'start':<8} {contenders['start'].key:<22} {remeasured['start']:>32.1f}")
    q, b = remeasured["quick"], remeasured["brute"]
    rq, rb = results["quick"][0], results["brute"][0]
    print(f"RESULT quick/brute best within budget {q / b if b else 0:.3f}x with {rq.measured}/{rb.measured} = "
          f"{rq.measured / max(rb.measured, 1):.2f} of brute's measurements; quick/start "
          f"{q / remeasured['start'] if remeasured['start'] else 0:.2f}x")
    return 0


def remeasure(http_url: str, grpc_url: str, target: Target, contenders: dict[str, Candidate],
              a: argparse.Namespace, out: Path) -> dict[str, float]:
    """Every contender at every concurrency, rounds interleaved; best median throughput within the budget."""
    settings = MeasureSettings(measurement_interval_ms=a.interval_ms, stability_percentage=a.stability)
    concurrency = (1, 4, 16)
    got: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with TritonClient(http_url, grpc_url, timeout_s=300) as client, \
            applied(client, discover(client, "mlp"), lambda m: None) as applier:
        names = list(contenders)
        for rnd in range(a.rounds):
            k = rnd % len(names)
            for name in (*names[k:], *names[:k]):
                applier.apply({"mlp": contenders[name]})
                for c in concurrency:
                    m = measure(target, "mlp", name, c, rnd + 1, settings, out / f"{name}_r{rnd}_c{c}", None,
                                lambda msg: None)
                    if m.status == "ok" and m.throughput is not None and m.p99_ms is not None:
                        got.setdefault((name, c), []).append((m.throughput, m.p99_ms))
                        print(f"  round {rnd + 1} {name:<6} c={c:<3} {m.throughput:8.1f} infer/s  p99 "
                              f"{m.p99_ms:6.2f} ms", flush=True)
    best = {}
    for name in contenders:
        within = []
        for c in concurrency:
            pts = got.get((name, c), [])
            if pts and statistics.median(p for _, p in pts) <= a.budget_ms:
                within.append(statistics.median(t for t, _ in pts))
        best[name] = max(within, default=0.0)
    return best


if __name__ == "__main__":
    raise SystemExit(main())
