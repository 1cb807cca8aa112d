"""Benchmark (b): throughput of tritonops' generated config / the naive config at a fixed p99 budget.

Builds a wide MLP with ``tritonops build`` (its generated config: dynamic batching, max batch 32),
then ``tritonops study config`` serves the naive config (no dynamic batching, 1 instance) and the
generated one side by side on one server and sweeps both with perf_analyzer, interleaved and
repeated. Prints the ratio of the best throughput each reaches with p99 within the budget.

    PYTHONPATH=src python perf/bench_config.py [--budget-ms 50] [--repeats 3] [--out perf/results/config]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, wide_mlp

from tritonops.build import BuildOptions, build
from tritonops.perf.config_study import ConfigStudyOptions, run_config_study


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-ms", type=float, default=50.0, help="p99 budget in ms")
    ap.add_argument("--concurrency", default="1,4,8,16,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer measurement window")
    ap.add_argument("--all-variants", action="store_true", help="also the batching/instance variants")
    ap.add_argument("--out", type=Path, default=Path("perf/results/config"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = wide_mlp(Path(tmp) / "src" / "wide_mlp.onnx")
        repo = Path(tmp) / "repo"
        built = build(BuildOptions(source=str(onnx_path), repository=repo, name="wide_mlp"))
        print(f"built wide_mlp: generated config\n{built.config_text}")
        r = run_config_study(ConfigStudyOptions(
            model="wide_mlp", repository=repo, output_dir=a.out,
            concurrency=tuple(int(c) for c in a.concurrency.split(",")), repeats=a.repeats,
            measurement_interval_ms=a.interval_ms, p99_budget_ms=a.budget_ms,
            variants=() if a.all_variants else ("generated",)), progress=lambda m: print("  ..", m, flush=True))
    print(f"machine: {machine()}")
    for p in r.points:
        print(f"  {p.variant:<18} c={p.concurrency:<3} {p.throughput or 0:8.1f} infer/s  p99 {p.p99_ms or 0:7.2f} ms"
              f"  ({p.runs} runs)")
    for f in r.findings:
        print("  *", f)
    ratio = r.budget_ratio.get("generated")
    print(f"RESULT (b) generated/naive throughput at p99 <= {a.budget_ms:g} ms: "
          + (f"{ratio:.2f}x" if ratio is not None else "n/a (naive never met the budget)")
          + f"  [{r.budget_throughput.get('generated', 0):.1f} vs {r.budget_throughput.get('naive', 0):.1f} infer/s]"
          + f"; peak ratio {r.peak_ratio.get('generated', 0):.2f}x; report {r.files['html']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
