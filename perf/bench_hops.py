"""The served latency floor of an ensemble of Python-backend steps: what benchmark (a)'s
concurrency-1 target is up against.

A zero-work Python-backend model (returns its input; dynamic batching, like tritonops' generated
steps) served alone and as ensembles of 1, 2 and 3 such steps, on one real tritonserver;
perf_analyzer over gRPC at concurrency 1, rounds interleaved. The in-process equivalent of these
models costs microseconds, so every millisecond printed is serving overhead: gRPC, the ensemble
scheduler, and per step the dynamic batcher and the round trip to the Python stub process.

    PYTHONPATH=src python perf/bench_hops.py [--rounds 3] [--interval-ms 3000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tritonops.perf.analyzer import PerfOptions, sweep
from tritonops.perf.target import Target, http_alive
from tritonops.server import ServerOptions, TritonServer

IDENTITY = '''import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]) for r in requests]
'''


def write_repo(repo: Path, max_steps: int) -> None:
    io = {"input": [mc.ModelInput(name="x", data_type=mc.TYPE_FP32, dims=[384])],
              "output": [mc.ModelOutput(name="y", data_type=mc.TYPE_FP32, dims=[384])]}
    ident = mc.ModelConfig(name="ident", backend="python", max_batch_size=32,
                           instance_group=[mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)],
                           dynamic_batching=mc.ModelDynamicBatching(), **io)
    configs = [ident]
    for n in range(1, max_steps + 1):
        names = ["x"] + [f"t{i}" for i in range(1, n)] + ["y"]
        steps = [mc.ModelEnsembling.Step(model_name="ident", model_version=-1, input_map={"x": names[i]},
                                         output_map={"y": names[i + 1]}) for i in range(n)]
        configs.append(mc.ModelConfig(name=f"chain{n}", platform="ensemble", max_batch_size=32,
                                      ensemble_scheduling=mc.ModelEnsembling(step=steps), **io))
    for c in configs:
        (repo / c.name / "1").mkdir(parents=True)
        (repo / c.name / "config.pbtxt").write_text(text_format.MessageToString(c))
    (repo / "ident" / "1" / "model.py").write_text(IDENTITY)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="longest chain")
    ap.add_argument("--interval-ms", type=int, default=3000)
    a = ap.parse_args()
    models = ["ident"] + [f"chain{n}" for n in range(1, a.steps + 1)]
    p50: dict[str, list[float]] = {m: [] for m in models}
    with tempfile.TemporaryDirectory(prefix="bench-hops-") as tmp:
        repo = Path(tmp) / "repo"
        write_repo(repo, a.steps)
        with TritonServer(ServerOptions(repository=repo)) as s:
            target = Target(http_url=s.http_url, grpc_url=s.grpc_url, alive=lambda: http_alive(s.http_url))
            for rnd in range(a.rounds):
                for m in models:
                    res = sweep(PerfOptions(model=m, output_dir=Path(tmp) / f"{m}_r{rnd}", url=s.http_url,
                                            grpc_url=s.grpc_url, protocol="grpc", concurrency=(1,),
                                            measurement_interval_ms=a.interval_ms, stability_percentage=25), target)
                    ok = [r for r in res.rows if r.status == "ok" and r.p50_us]
                    if ok:
                        p50[m].append((ok[0].p50_us or 0) / 1000)
                print(f"round {rnd + 1}: " + ", ".join(f"{m} {v[-1]:.3f} ms" for m, v in p50.items() if v),
                      flush=True)
    print(f"machine: {machine()}")
    med = {m: statistics.median(v) for m, v in p50.items() if v}
    for m, v in med.items():
        print(f"RESULT hops concurrency-1 p50 {m}: {v:.3f} ms (median of {len(p50[m])})")
    chains = [med.get(f"chain{n}") for n in range(1, a.steps + 1)]
    if all(c is not None for c in chains) and len(chains) > 1:
        per_step = (chains[-1] - chains[0]) / (len(chains) - 1)  # type: ignore[operator]
        print(f"RESULT hops each further Python step adds {per_step:.3f} ms; a {a.steps}-step ensemble's floor "
              f"is {chains[-1]:.3f} ms before any work")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
