"""Benchmark: tritonops tune (quick, brute) vs Model Analyzer 1.58 (quick, brute), one model, one p99 budget.

In one run on one machine, with the same model, p99 budget and search limits (instances, max batch,
max concurrency), in this order: tritonops brute (the ground truth) and quick on one tritonops-started
server (candidates are config overrides: no restart), then Model Analyzer quick and brute in local
launch mode (it starts and restarts the server itself; its server is tritonops' own, see
perf/ma_tritonserver.py). Then the winners of all four and the starting config are re-measured by the
same perf_analyzer settings on one fresh tritonops-started server with config overrides, in interleaved
rounds at equal load (the same concurrency set for all), so that neither tool's own numbers decide.

Printed per tool: best throughput within the budget (re-measured), perf_analyzer measurements, server
starts, wall time; then the ratios issue 12 targets. Everything (journals, MA's output, the per-round
points, summary.json) stays under --out.

    PYTHONPATH=src python perf/bench_tune.py --model mlp             # ~35 min on the 2 shared cores
    PYTHONPATH=src python perf/bench_tune.py --model text_embedding  # the shipped ensemble
    PYTHONPATH=src python perf/bench_tune.py --smoke                 # tiny limits: the plumbing in minutes
    PYTHONPATH=src python perf/bench_tune.py --model mlp --remeasure [--rerun-ma quick]  # final rounds again

Model Analyzer's quick search can stop measuring and walk the configs it has without end (seen here): a run
with no new measurement for 240 s is stopped, and its best so far is read from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, wide_mlp
from ma_peer import (
    DEFAULT_VENV,
    Limits,
    MARun,
    best_row,
    ensure_model_analyzer,
    failure_line,
    ma_config,
    read_checkpoint,
    read_inference_csv,
    run_model_analyzer,
    variant_candidates,
    write_wrappers,
)

from tritonops.build import BuildOptions, build
from tritonops.client import TritonClient
from tritonops.ensemble import build_ensemble_file
from tritonops.errors import TritonOpsError
from tritonops.pbtxt import ModelConfig
from tritonops.perf.target import Target, http_alive
from tritonops.server import ServerOptions, TritonServer
from tritonops.tune import Candidate, TuneOptions, TuneResult, run_tune
from tritonops.tune.apply import applied, discover
from tritonops.tune.measure import MeasureSettings, measure
from tritonops.tune.search import setting_key

ROOT = Path(__file__).resolve().parent.parent
Setting = dict[str, Candidate]


@dataclass(frozen=True)
class Bench:
    """What one model's benchmark searches: the same limits for both tools."""

    limits: Limits
    budget_ms: float
    space: str  # tritonops' space file (YAML) within the limits
    concurrency: tuple[int, ...]  # the final rounds' equal load


def mlp_bench(smoke: bool) -> Bench:
    if smoke:
        return Bench(Limits(1, 4, 4), 20.0, SPACE_HEAD + "  mlp: {instances: [1], max_batch_sizes: [4], "
                     "dynamic_batching: [true], queue_delays_us: [0], threads: [1]}\nconcurrency: [1, 4]\n", (1, 4))
    # tritonops' derived space for this model on 2 cores (space.derive_space: instances 1-2, max batch 4-64,
    # batching on/off, queue delay 0/500 us, intra-op threads 1-2), cut to the limits both tools share: max batch
    # 16: 36 configs. (The first runs in perf/RESULTS.md fixed threads at 1: 18 configs.)
    return Bench(Limits(2, 16, 16), 20.0, SPACE_HEAD + """  mlp:
    instances: [1, 2]
    max_batch_sizes: [4, 8, 16]
    dynamic_batching: [true, false]
    queue_delays_us: [0, 500]
    threads: [1, 2]
concurrency: [1, 4, 16]
""", (1, 4, 16))


def text_embedding_bench(smoke: bool) -> Bench:
    # The ensemble's max_batch_size is 32 and no step may go below it (tritonops' space enforces that), so
    # both tools search max_batch_size 32 only: MA's min and max model batch size are 32.
    steps = ("text_embedding_tokenizer", "text_embedding_encoder", "text_embedding_pooling")
    if smoke:
        body = "".join(f"  {s}: {{instances: [1], max_batch_sizes: [32], dynamic_batching: [true], "
                       f"queue_delays_us: [0]{', threads: [1]' if s.endswith('encoder') else ''}}}\n" for s in steps)
        return Bench(Limits(1, 32, 4, min_batch=32), 500.0, SPACE_HEAD + body + "concurrency: [1, 4]\n", (1, 4))
    # Every step 1-2 instances, as MA's quick search varies them (the same limits for both tools), and the
    # encoder's intra-op threads 1-2: 16 configs. (The runs before 2026-12-02 evening kept pooling at one
    # instance: 8 configs, a smaller space than MA's.)
    instances = dict.fromkeys(steps, "[1, 2]")
    body = "".join(f"  {s}: {{instances: {instances[s]}, max_batch_sizes: [32], dynamic_batching: [true], "
                   f"queue_delays_us: [0]{', threads: [1, 2]' if s.endswith('encoder') else ''}}}\n" for s in steps)
    return Bench(Limits(2, 32, 16, min_batch=32), 500.0, SPACE_HEAD + body + "concurrency: [1, 4, 16]\n", (1, 4, 16))


SPACE_HEAD = "models:\n"
BENCHES = {"mlp": mlp_bench, "text_embedding": text_embedding_bench}


def build_repository(model: str, repo: Path, work: Path) -> None:
    if model == "mlp":  # the MLP Model Analyzer was measured on in TOOLCHAIN.md
        build(BuildOptions(source=str(wide_mlp(work / "mlp.onnx", width=256, hidden=1024)), repository=repo,
                           name="mlp", max_batch_size=16))
    else:
        build_ensemble_file(ROOT / "ensembles" / "text_embedding" / "ensemble.yaml", repo)


@dataclass
class Row:
    tool: str
    winner: str
    own_view: str
    measurements: int
    perf_analyzer_runs: int | None
    server_starts: int
    wall_s: float
    note: str = ""
    remeasured: float = 0.0
    final_measurements: int = 0  # of ``measurements``, those of the interleaved final rounds


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", choices=sorted(BENCHES), default="mlp")
    ap.add_argument("--smoke", action="store_true", help="tiny limits and one final round: checks the plumbing")
    ap.add_argument("--budget-ms", type=float, default=None, help="p99 budget in ms (default per model)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved re-measurement rounds (default 3)")
    ap.add_argument("--interval-ms", type=int, default=1000, help="perf_analyzer measurement window")
    ap.add_argument("--stability", type=float, default=50.0,
                    help="perf_analyzer stability %% for both tools (the shared 2-core machines rarely hold 15%%)")
    ap.add_argument("--ma-venv", type=Path, default=DEFAULT_VENV, help="Model Analyzer's own virtualenv")
    ap.add_argument("--ma-timeout", type=float, default=1800.0, help="seconds per Model Analyzer run")
    ap.add_argument("--out", type=Path, default=None, help="default perf/results/tune_MODEL")
    ap.add_argument("--remeasure", action="store_true",
                    help="only the final rounds again, on the searches a previous run left under --out")
    ap.add_argument("--rerun-ma", choices=("quick", "brute"), action="append", default=[],
                    help="with --remeasure: run this Model Analyzer search again first (repeatable)")
    a = ap.parse_args()
    bench = BENCHES[a.model](a.smoke)
    budget = a.budget_ms if a.budget_ms is not None else bench.budget_ms
    rounds = a.rounds if a.rounds is not None else (1 if a.smoke else 3)
    out: Path = (a.out or ROOT / "perf" / "results" / f"tune_{a.model}{'_smoke' if a.smoke else ''}").absolute()
    t_all = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t_all:6.0f} s] {msg}", flush=True)

    repo = out / "repository"
    if a.remeasure:
        with TritonServer(ServerOptions(repository=repo, explicit=True, load_models=(a.model,))) as server, \
                TritonClient(server.http_url, server.grpc_url, timeout_s=60) as client:
            served = discover(client, a.model)
        originals = dict(served.originals)
        rows, winners, start = reload_searches(out, budget, originals)
        shutil.copy2(out / "summary.json", out / f"summary.before-remeasure-{int(time.time())}.json")
        say(f"machine: {machine()}")
        for mode in a.rerun_ma:
            winners.pop(f"MA {mode}", None)
            rows[f"MA {mode}"], setting = run_ma(a, ensure_model_analyzer(a.ma_venv, say), bench, budget, out, repo,
                                                 originals, served.ensemble_steps, mode, say)
            if setting:
                winners[f"MA {mode}"] = setting
    else:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        rows, winners, start = searches(a, bench, budget, out, repo, say)
        if not rows:
            return 130

    # ---- the final rounds: every winner and the starting config, same settings, same load
    contenders = {**winners, "start": start}
    with TritonServer(ServerOptions(repository=repo, explicit=True, load_models=(a.model,))) as server:
        settings = MeasureSettings(measurement_interval_ms=a.interval_ms, stability_percentage=a.stability)
        final_dir = out / ("final_again" if a.remeasure else "final")
        points = remeasure(server, a.model, contenders, bench.concurrency, rounds, settings, final_dir, say)
    best = best_within(points, budget)
    by_key = {name: best.get(setting_key(s), 0.0) for name, s in contenders.items()}
    for name, row in rows.items():
        row.remeasured = by_key.get(name, 0.0)
    report(a, bench, budget, rounds, rows, contenders, by_key, out, points)
    say(f"done in {time.monotonic() - t_all:.0f} s; everything is under {out}")
    return 0


def searches(a: argparse.Namespace, bench: Bench, budget: float, out: Path, repo: Path, say: Any
             ) -> tuple[dict[str, Row], dict[str, Setting], Setting]:
    """tritonops brute and quick on one server, then MA quick and brute: rows, winners, the start."""
    exe = ensure_model_analyzer(a.ma_venv, say)
    say(f"building {a.model} into {repo}")
    build_repository(a.model, repo, out)
    (out / "space.yaml").write_text(bench.space)
    say(f"machine: {machine()}")

    rows: dict[str, Row] = {}
    winners: dict[str, Setting] = {}
    start: Setting = {}
    # ---- tritonops: brute (ground truth) then quick, on one server
    with TritonServer(ServerOptions(repository=repo, explicit=True, load_models=(a.model,))) as server:
        with TritonClient(server.http_url, server.grpc_url, timeout_s=60) as client:
            served = discover(client, a.model)
        originals = dict(served.originals)  # what MA's variants map onto
        steps = served.ensemble_steps
        for strategy in ("brute", "quick"):
            say(f"tritonops {strategy}: starting")
            t0 = time.monotonic()
            r = run_tune(TuneOptions(
                model=a.model, output_dir=out / f"tritonops_{strategy}", url=server.http_url,
                grpc_url=server.grpc_url, budget_ms=budget, strategy=strategy,
                space_file=out / "space.yaml", measurement_interval_ms=a.interval_ms,
                stability_percentage=a.stability), progress=lambda m, s=strategy: say(f"tritonops {s}: {m}"))
            if r.interrupted:
                return {}, {}, {}
            wall = time.monotonic() - t0
            rows[f"tritonops {strategy}"] = tritonops_row(strategy, r, wall)
            winners[f"tritonops {strategy}"] = r.winner
            start = r.start
            say(f"tritonops {strategy}: {r.ranking.summary()} ({r.measured} measurements, {wall:.0f} s)")

    # ---- Model Analyzer: quick then brute, each launching its own servers
    for mode in ("quick", "brute"):
        row, setting = run_ma(a, exe, bench, budget, out, repo, originals, steps, mode, say)
        rows[f"MA {mode}"] = row
        if setting:
            winners[f"MA {mode}"] = setting
    return rows, winners, start


def run_ma(a: argparse.Namespace, exe: Path, bench: Bench, budget: float, out: Path, repo: Path,
           originals: dict[str, ModelConfig], steps: tuple[str, ...], mode: str, say: Any) -> tuple[Row, Setting]:
    """One Model Analyzer search (it starts and restarts its servers itself); its row and winner."""
    tritonserver, perf_analyzer = write_wrappers(out / "ma_wrappers")
    ma_out = out / f"ma_{mode}"
    shutil.rmtree(ma_out, ignore_errors=True)  # MA resumes from a checkpoint it finds
    cfg = ma_config(model=a.model, repository=repo, out=ma_out, mode=mode, budget_ms=budget, limits=bench.limits,
                    tritonserver=tritonserver, perf_analyzer=perf_analyzer, interval_ms=a.interval_ms,
                    stability=a.stability, composing=steps, input_data=tritonops_input_data(out))
    say(f"MA {mode}: starting (log {ma_out / 'model-analyzer.log'})")
    run = run_model_analyzer(exe, cfg, ma_out, out / "ma_wrappers", mode, a.ma_timeout, say)
    row, setting = ma_row(run, budget, originals)
    say(f"MA {mode}: rc {run.rc}, winner {row.winner} ({row.own_view}), {row.measurements} measurements, "
        f"{run.perf_analyzer_runs} perf_analyzer runs, {run.server_starts} server starts, {run.wall_s:.0f} s"
        + (f"; {row.note}" if row.note else ""))
    return row, setting


def tritonops_input_data(out: Path) -> Path | None:
    """The ``--input-data`` file tritonops' measurements sent (every measurement writes the same one),
    so MA measures the same requests (without it MA sends perf_analyzer's random data: for the ensemble's
    STRING input, 128-character random strings that tokenize far longer than the generated ones)."""
    return next(iter(sorted((out / "tritonops_quick").rglob("input_data.json"))), None)


def tritonops_row(strategy: str, r: TuneResult, wall: float) -> Row:
    attempts = sum(int(m.get("attempts", 1)) for m in r.measurements)
    w = r.ranking.winner
    own = (f"{w.throughput:.0f}/s at p99 {w.latency_ms:.1f} ms, c={w.concurrency}"
           if w is not None and w.throughput is not None and w.latency_ms is not None else r.ranking.summary())
    return Row(tool=f"tritonops {strategy}", winner=setting_key(r.winner) if r.winner else "-", own_view=own,
               measurements=r.measured, perf_analyzer_runs=attempts, server_starts=0, wall_s=wall,
               final_measurements=sum(1 for m in r.measurements if int(m.get("round", 0)) > 0),
               note="" if r.ranking.met else "its search met no config within the budget: the closest one")


def ma_row(run: MARun, budget: float, originals: dict[str, ModelConfig]) -> tuple[Row, Setting]:
    run_note = run.note or ("" if run.rc == 0 else f"exit code {run.rc}: {failure_line(run.log)}")
    row = Row(tool=f"MA {run.mode}", winner="-", own_view="-", measurements=0,
              perf_analyzer_runs=run.perf_analyzer_runs, server_starts=run.server_starts, wall_s=run.wall_s,
              note=run_note)
    return row, ma_winner(row, run.out, budget, originals)


def ma_winner(row: Row, ma_out: Path, budget: float, originals: dict[str, ModelConfig]) -> Setting:
    """MA's winner from its results (the CSV, else its checkpoint); ``row`` gets its own view of it."""
    csv_path = ma_out / "export" / "results" / "metrics-model-inference.csv"
    checkpoint = ma_out / "checkpoints" / "0.ckpt"
    notes = [row.note] if row.note else []
    if csv_path.exists():
        rows = read_inference_csv(csv_path)
    elif checkpoint.exists():  # MA writes its tables only when it ends by itself
        rows = read_checkpoint(checkpoint, budget)
        if rows:
            notes.append("no results CSV: its winner is the best so far in its checkpoint")
    else:
        rows = []
    best = best_row(rows, budget)
    setting: Setting = {}
    if best is not None:
        try:
            setting = variant_candidates(ma_out / "output_repository", best.variant, originals)
        except (OSError, ValueError, TritonOpsError) as e:
            notes.append(f"its winner's config could not be read: {e}")
    else:
        notes.append("no results" if not rows else "no measured config within the budget")
    row.own_view = (f"{best.variant}: {best.throughput:.0f}/s at p99 {best.p99_ms:.1f} ms, c={best.concurrency}"
                    if best else "-")
    row.winner = setting_key(setting) if setting else "-"
    row.measurements = len(rows)
    row.note = "; ".join(notes)
    return setting


def reload_searches(out: Path, budget: float, originals: dict[str, ModelConfig]
                    ) -> tuple[dict[str, Row], dict[str, Setting], Setting]:
    """``--remeasure``: the rows and winners of the searches a previous run left under ``out``."""
    summary = json.loads((out / "summary.json").read_text())
    rows = {d["tool"]: Row(**d) for d in summary["rows"]}
    winners: dict[str, Setting] = {}
    start: Setting = {}
    for strategy in ("brute", "quick"):
        tune = json.loads((out / f"tritonops_{strategy}" / "tune.json").read_text())
        winners[f"tritonops {strategy}"] = {m: Candidate.from_dict(c) for m, c in tune["winner"].items()}
        start = {m: Candidate.from_dict(c) for m, c in tune["start"].items()}
    for mode in ("quick", "brute"):
        row = rows[f"MA {mode}"]
        row.note = row.note.split("; no results", 1)[0].split("; no measured", 1)[0]
        setting = ma_winner(row, out / f"ma_{mode}", budget, originals)
        if setting:
            winners[f"MA {mode}"] = setting
    return rows, winners, start


Points = dict[tuple[str, int], list[tuple[float, float]]]


def remeasure(server: TritonServer, model: str, contenders: dict[str, Setting], concurrency: tuple[int, ...],
              rounds: int, settings: MeasureSettings, out: Path, say: Any) -> Points:
    """Each distinct contender at every concurrency, rounds interleaved (round r starts at contender r)."""
    target = Target(http_url=server.http_url, grpc_url=server.grpc_url, alive=lambda: http_alive(server.http_url))
    distinct = {setting_key(s): s for s in contenders.values()}
    names = {k: ", ".join(n for n, s in contenders.items() if setting_key(s) == k) for k in distinct}
    keys = list(distinct)
    got: Points = {}
    with TritonClient(server.http_url, server.grpc_url, timeout_s=300) as client, \
            applied(client, discover(client, model), lambda m: None) as applier:
        for rnd in range(rounds):
            k = rnd % len(keys)
            for key in (*keys[k:], *keys[:k]):
                applier.apply(distinct[key])
                for c in concurrency:
                    m = measure(target, model, key, c, rnd + 1, settings, out / f"{len(got)}", None, lambda _: None)
                    if m.status == "ok" and m.throughput is not None and m.p99_ms is not None:
                        got.setdefault((key, c), []).append((m.throughput, m.p99_ms))
                        say(f"final round {rnd + 1} [{names[key]}] c={c}: {m.throughput:.1f} infer/s, "
                            f"p99 {m.p99_ms:.2f} ms")
                    else:
                        say(f"final round {rnd + 1} [{names[key]}] c={c}: failed ({m.note})")
    return got


def best_within(points: Points, budget: float) -> dict[str, float]:
    """Per setting: the best median throughput among the concurrencies whose median p99 is within the budget."""
    best: dict[str, float] = {}
    for (key, _c), pts in points.items():
        if statistics.median(p for _, p in pts) <= budget:
            best[key] = max(best.get(key, 0.0), statistics.median(t for t, _ in pts))
    return best


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def report(a: argparse.Namespace, bench: Bench, budget: float, rounds: int, rows: dict[str, Row],
           contenders: dict[str, Setting], by_key: dict[str, float], out: Path, points: Points) -> None:
    print(f"\nmachine: {machine()}")
    lim = bench.limits
    low = f" (min {lim.min_batch})" if lim.min_batch > 1 else ""
    print(f"model {a.model}, p99 budget {budget:g} ms, limits: max instances {lim.max_instances}, max batch "
          f"{lim.max_batch}{low}, max concurrency {lim.max_concurrency}; final rounds: {rounds} at "
          f"concurrency {list(bench.concurrency)}, {a.interval_ms} ms windows, stability {a.stability:g} %")
    head = (f"{'tool':<16} {'re-measured best/s':>18} {'measurements':>12} {'pa runs':>7} {'starts':>6} "
            f"{'wall s':>7}  winner (the tool's own view)")
    print(head)
    for r in rows.values():
        pa = "-" if r.perf_analyzer_runs is None else str(r.perf_analyzer_runs)
        print(f"{r.tool:<16} {r.remeasured:>18.1f} {r.measurements:>12} {pa:>7} {r.server_starts:>6} "
              f"{r.wall_s:>7.0f}  {r.winner} ({r.own_view}){' [' + r.note + ']' if r.note else ''}")
    print(f"{'start':<16} {by_key.get('start', 0.0):>18.1f} {'':>12} {'':>7} {'':>6} {'':>7}  "
          f"{setting_key(contenders['start'])}")
    tq, tb = rows["tritonops quick"], rows["tritonops brute"]
    ma = [r for k, r in rows.items() if k.startswith("MA ")]
    ma_best = max((r.remeasured for r in ma), default=0.0)
    ma_quick = rows.get("MA quick")
    tops = max(tq.remeasured, tb.remeasured)
    lines = [
        f"tritonops quick / brute best within budget: {ratio(tq.remeasured, tb.remeasured)} (target >= 0.97)",
        f"tritonops quick / brute measurements: {tq.measurements}/{tb.measurements} = "
        f"{ratio(tq.measurements, tb.measurements)} (target <= 0.25); the searches alone (final rounds apart: "
        f"{tq.final_measurements} and {tb.final_measurements}): {tq.measurements - tq.final_measurements}/"
        f"{tb.measurements - tb.final_measurements} = "
        f"{ratio(tq.measurements - tq.final_measurements, tb.measurements - tb.final_measurements)}",
        f"tritonops best / MA best (either mode): {ratio(tops, ma_best)} (target >= 1.0); "
        f"tritonops quick / MA best: {ratio(tq.remeasured, ma_best)}",
        f"tritonops quick wall / MA quick wall: {ratio(tq.wall_s, ma_quick.wall_s if ma_quick else 0.0)} "
        f"(target <= 0.5); tritonops brute wall / MA quick wall: "
        f"{ratio(tb.wall_s, ma_quick.wall_s if ma_quick else 0.0)}",
    ]
    for line in lines:
        print("RESULT " + line)
    summary = {
        "command": " ".join(sys.argv), "machine": machine(), "model": a.model, "budget_ms": budget,
        "limits": asdict(bench.limits), "final_concurrency": list(bench.concurrency), "rounds": rounds,
        "rows": [asdict(r) for r in rows.values()], "start": setting_key(contenders["start"]),
        "start_remeasured": by_key.get("start", 0.0), "ratios": lines,
        "points": [{"setting": k, "concurrency": c, "throughput_p99": v} for (k, c), v in points.items()],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
