"""CLI of ``tritonops tune``: parse the options into TuneOptions, call run_tune, render the result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tritonops.cli.params import DAY_S, INT32_MAX, number
from tritonops.cli.params import output_dir as output_dir_check
from tritonops.cli.params import url as url_check
from tritonops.cli.render import command, emit_result, err, out, spinner
from tritonops.envelope import INTERRUPTED_EXIT_CODE, ErrorInfo
from tritonops.errors import UsageError
from tritonops.perf.loadtest import MAX_RATE
from tritonops.tune import TuneOptions, TuneResult, resume_options, run_tune
from tritonops.tune.result import SCHEMA
from tritonops.tune.run import DEFAULT_CONCURRENCY
from tritonops.units import parse_values

budget = number(0, DAY_S * 1000, low_open=True)  # a latency budget in ms
MAX_CONCURRENCY = 4096
MAX_THROUGHPUT = 1e9  # inferences/s: more is a typo
MAX_MEMORY_MB = float(1 << 30)  # a petabyte

BUDGET_NOT_MET_EXIT_CODE = 1

TUNE_HELP = """Find the best config of a served model under a latency budget (max throughput with p99 <= budget).

Candidates (instances, max_batch_size, dynamic batching, queue delay, preferred batch sizes, ONNX Runtime
threads) are loaded into the running server with Triton's config override (explicit model control): no
restart, no repository write; the original config is loaded back at the end. For an ensemble its composing
models are tuned jointly, the bottleneck step first. Every perf_analyzer measurement goes to
OUTPUT_DIR/journal.jsonl as it finishes; --resume continues from it. Writes tune.json and report.html.

Examples:

  tritonops tune mlp --serve model_repository/ --p99-ms 20

  tritonops tune text_embedding --serve model_repository/ --p99-ms 50

  tritonops tune mlp --url 127.0.0.1:8000 --objective latency

  tritonops tune mlp --serve model_repository/ --p99-ms 20 --promote

  tritonops tune mlp --serve model_repository/ --p99-ms 20 --request-rate 100,200,400

  tritonops tune mlp --serve model_repository/ --objective latency --at-throughput 500

  tritonops tune mlp --serve model_repository/ --p99-ms 20 --max-memory-mb 2048

  tritonops tune mlp --serve model_repository/ --p99-ms 20 --instance-kind gpu

  tritonops tune --resume out/tune/mlp
"""


def register(app: typer.Typer) -> None:
    app.command("tune", help=TUNE_HELP)(tune)


def _budget(p99: float | None, p95: float | None, p50: float | None,
            percentile: str | None = None) -> tuple[str, float | None]:
    given = [(name, v) for name, v in (("p99", p99), ("p95", p95), ("p50", p50)) if v is not None]
    if len(given) > 1:
        raise UsageError("give one latency budget (--p99-ms, --p95-ms or --p50-ms)", "drop the others")
    if percentile is not None and given and given[0][0] != percentile:
        raise UsageError(f"--percentile {percentile} and the budget --{given[0][0]}-ms disagree",
                         f"drop --percentile (the budget's percentile is used), or give --{percentile}-ms")
    return given[0] if given else (percentile or "p99", None)


@command("tune", schema=SCHEMA)
def tune(
    model: Annotated[str | None, typer.Argument(help="Model (or ensemble) name, as served.")] = None,
    serve: Annotated[Path | None, typer.Option(help="Start a local server (explicit mode) on this repository.")
                     ] = None,
    url: Annotated[str | None, typer.Option(callback=url_check,
                                            help="HTTP HOST:PORT of a running server in explicit mode.")] = None,
    grpc_url: Annotated[str | None, typer.Option(callback=url_check,
                                                 help="gRPC HOST:PORT [default: HTTP port + 1].")] = None,
    p99_ms: Annotated[float | None, typer.Option(callback=budget, help="Latency budget: p99 in ms.")] = None,
    p95_ms: Annotated[float | None, typer.Option(callback=budget, help="Latency budget: p95 in ms.")] = None,
    p50_ms: Annotated[float | None, typer.Option(callback=budget, help="Latency budget: p50 in ms.")] = None,
    objective: Annotated[str, typer.Option(
        help="throughput (max within the budget) or latency (min at concurrency 1, or at --at-throughput).")
                         ] = "throughput",
    at_throughput: Annotated[float | None, typer.Option(
        callback=number(0, MAX_THROUGHPUT, low_open=True),
        help="With --objective latency: the lowest latency among points reaching this many infer/s.")] = None,
    percentile: Annotated[str | None, typer.Option(
        help="p50, p95 or p99 for --objective latency without a budget [default: the budget's, or p99].",
        show_default=False)] = None,
    max_memory_mb: Annotated[float | None, typer.Option(
        callback=number(0, MAX_MEMORY_MB, low_open=True),
        help="Candidates whose server memory (RSS of tritonserver + stubs, under load) is above this are "
             "infeasible.")] = None,
    strategy: Annotated[str, typer.Option(help="quick (coordinate descent) or brute (full grid).")] = "quick",
    concurrency: Annotated[str | None, typer.Option(
        help="Concurrency sweep per candidate: list or START:END:STEP [default: 1,2,4,8,16,32].",
        show_default=False)] = None,
    request_rate: Annotated[str | None, typer.Option(
        help="Measure at these offered request rates (Poisson arrivals) instead: list or START:END:STEP.")
                            ] = None,
    instance_kind: Annotated[str | None, typer.Option(
        help="cpu or gpu instances (gpu: instances per device) [default: the model's kind].",
        show_default=False)] = None,
    space: Annotated[Path | None, typer.Option(help="Search-space YAML (models: {NAME: {instances: [..]}}).")
                     ] = None,
    max_measurements: Annotated[int | None, typer.Option(callback=number(1, INT32_MAX),
                                                         help="Stop the search after this many measurements.")
                                ] = None,
    final_candidates: Annotated[int, typer.Option(callback=number(1, 100),
                                                  help="Candidates re-measured in the final rounds.")] = 2,
    final_rounds: Annotated[int, typer.Option(callback=number(0, 100), help="Interleaved final rounds (0: none).")] = 2,
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "grpc",
    measurement_interval: Annotated[int, typer.Option(callback=number(100, 3_600_000),
                                                      help="perf_analyzer window in ms.")] = 1000,
    stability_percentage: Annotated[float, typer.Option(callback=number(0, 100, low_open=True),
                                                        help="perf_analyzer stability, %.")] = 15.0,
    max_trials: Annotated[int, typer.Option(callback=number(1, 1000),
                                            help="perf_analyzer windows before a point counts as unstable.")] = 6,
    timeout: Annotated[float, typer.Option(callback=number(0, DAY_S, low_open=True),
                                           help="Seconds per measurement before it is killed (then retried once).")
                       ] = 120.0,
    samples: Annotated[Path | None, typer.Option(help="Request data (.npz, .txt, images).")] = None,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:DIMS for a variable-size input.")] = None,
    promote: Annotated[bool, typer.Option(help="Write the winner as config.pbtxt (with --serve REPO).")] = False,
    resume: Annotated[Path | None, typer.Option(help="Continue the run whose output directory this is.")] = None,
    output_dir: Annotated[Path | None, typer.Option(callback=output_dir_check,
                                                    help="[default: out/tune/MODEL]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    rates = _rates(request_rate)
    if rates and concurrency is not None:
        raise UsageError("give either --concurrency or --request-rate, not both", "one load mode per run")
    if percentile is not None and percentile not in ("p50", "p95", "p99"):
        raise UsageError(f"--percentile '{percentile}' is not p50, p95 or p99", "e.g. --percentile p95")
    if resume is not None:
        options = resume_options(resume, serve=serve, url=url, grpc_url=grpc_url, promote=promote,
                                 concurrency=_concurrency(concurrency) if concurrency is not None else None,
                                 request_rate=rates)
        if model is not None and model != options.model:
            raise UsageError(f"the journal in {resume} is for model '{options.model}', not '{model}'",
                             f"run tritonops tune --resume {resume} (the journal names its model)")
    else:
        if model is None:
            raise UsageError("no model given", "e.g. tritonops tune mlp --serve model_repository/ --p99-ms 20")
        pct, budget = _budget(p99_ms, p95_ms, p50_ms, percentile)
        options = TuneOptions(
            model=model, output_dir=output_dir, serve=serve, url=url, grpc_url=grpc_url,
            objective=objective,  # type: ignore[arg-type]
            percentile=pct,  # type: ignore[arg-type]
            budget_ms=budget, strategy=strategy,  # type: ignore[arg-type]
            concurrency=_concurrency(concurrency) if concurrency is not None else DEFAULT_CONCURRENCY,
            request_rate=rates, at_throughput=at_throughput, max_memory_mb=max_memory_mb,
            instance_kind=instance_kind,  # type: ignore[arg-type]
            space_file=space, max_measurements=max_measurements,
            final_candidates=final_candidates, final_rounds=final_rounds,
            protocol=protocol,  # type: ignore[arg-type]
            measurement_interval_ms=measurement_interval, stability_percentage=stability_percentage,
            max_trials=max_trials, timeout_s=timeout, samples=samples, shapes=tuple(shape or ()), promote=promote)
    with spinner(not as_json) as progress:
        result = run_tune(options, progress)
    problem = _problem(result)
    if as_json:
        if problem is None:
            emit_result(result)
        else:
            code, info = problem
            emit_result(result, exit_code=code, errors=(info,))
    else:
        _print(result)
    if problem is not None:
        code, info = problem
        if not as_json:
            err.print(f"[yellow]{'interrupted' if code == INTERRUPTED_EXIT_CODE else 'error'}[/yellow]: "
                      f"{escape(info.message)}")
            if info.hint:
                err.print(f"[dim]hint:[/dim] {escape(info.hint)}")
        raise typer.Exit(code)


def _concurrency(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in parse_values(text, "--concurrency", integer=True, high=MAX_CONCURRENCY))


def _rates(text: str | None) -> tuple[float, ...]:
    return parse_values(text, "--request-rate", integer=False, high=MAX_RATE) if text is not None else ()


def _problem(r: TuneResult) -> tuple[int, ErrorInfo] | None:
    if r.interrupted:
        return INTERRUPTED_EXIT_CODE, ErrorInfo(
            "Interrupted", f"interrupted: {len(r.measurements)} measurement(s) kept in {r.files['journal']}",
            f"continue with tritonops tune --resume {r.output_dir}")
    if r.restore_failed:
        return 6, ErrorInfo("ServerError", f"could not load the original config of {', '.join(r.restore_failed)} "
                            "back", "reload it by hand: the server's repository files were never changed")
    if not r.ranking.met:
        w, o = r.ranking.winner, r.ranking.objective
        hint = ("raise --max-memory-mb, or try fewer instances" if w is not None and w.over_memory
                else "lower --at-throughput, or widen the search space" if o.at_throughput is not None
                else "raise the budget, or widen the search space")
        return BUDGET_NOT_MET_EXIT_CODE, ErrorInfo("BudgetNotMet", r.ranking.summary(), hint)
    return None


def _print(r: TuneResult) -> None:
    o = r.ranking.objective
    out.print(f"tune {r.model} ({r.strategy}): {o.describe()}; {r.measured} measurement(s), {r.reused} reused",
              markup=False)
    memory = any(s.memory_mb is not None for s in r.ranking.scores)
    load = "rate/s" if o.request_rate else "conc."
    out.print(f"{'candidate':<40} {'met':>4} {'infer/s':>9} {o.percentile + ' ms':>8} {load:>6}"
              + (f" {'mem MB':>7}" if memory else "") + "  from", markup=False)
    for s in r.ranking.scores[:12]:
        tput = "-" if s.throughput is None else f"{s.throughput:.1f}"
        lat = "-" if s.latency_ms is None else f"{s.latency_ms:.2f}"
        at = "-" if s.load is None else f"{s.load:g}"
        mem = f" {'-' if s.memory_mb is None else f'{s.memory_mb:.0f}':>7}" if memory else ""
        out.print(f"{s.setting:<40} {'yes' if s.met else 'no':>4} {tput:>9} {lat:>8} {at:>6}{mem}  "
                  f"{'final' if s.final else 'search'}", markup=False)
    out.print(r.ranking.summary(), markup=False)
    for name, path in r.promoted.items():
        out.print(f"promoted {name}: config.pbtxt written, record {path}", markup=False)
    out.print(f"report: {r.files['html']}  (data: {r.files['json']}, journal: {r.files['journal']})", markup=False)
