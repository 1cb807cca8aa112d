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
from tritonops.perf.analyzer import parse_range
from tritonops.tune import TuneOptions, TuneResult, resume_options, run_tune
from tritonops.tune.result import SCHEMA

budget = number(0, DAY_S * 1000, low_open=True)  # a latency budget in ms

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

  tritonops tune --resume out/tune/mlp
"""


def register(app: typer.Typer) -> None:
    app.command("tune", help=TUNE_HELP)(tune)


def _budget(p99: float | None, p95: float | None, p50: float | None) -> tuple[str, float | None]:
    given = [(name, v) for name, v in (("p99", p99), ("p95", p95), ("p50", p50)) if v is not None]
    if len(given) > 1:
        raise UsageError("give one latency budget (--p99-ms, --p95-ms or --p50-ms)", "drop the others")
    return given[0] if given else ("p99", None)


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
        help="throughput (max within the budget) or latency (min at concurrency 1).")] = "throughput",
    strategy: Annotated[str, typer.Option(help="quick (coordinate descent) or brute (full grid).")] = "quick",
    concurrency: Annotated[str, typer.Option(help="Concurrency sweep per candidate: list or START:END:STEP.")
                           ] = "1,2,4,8,16,32",
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
    if resume is not None:
        options = resume_options(resume, serve=serve, url=url, grpc_url=grpc_url, promote=promote)
        if model is not None and model != options.model:
            raise UsageError(f"the journal in {resume} is for model '{options.model}', not '{model}'",
                             f"run tritonops tune --resume {resume} (the journal names its model)")
    else:
        if model is None:
            raise UsageError("no model given", "e.g. tritonops tune mlp --serve model_repository/ --p99-ms 20")
        percentile, budget = _budget(p99_ms, p95_ms, p50_ms)
        options = TuneOptions(
            model=model, output_dir=output_dir, serve=serve, url=url, grpc_url=grpc_url,
            objective=objective,  # type: ignore[arg-type]
            percentile=percentile,  # type: ignore[arg-type]
            budget_ms=budget, strategy=strategy,  # type: ignore[arg-type]
            concurrency=_concurrency(concurrency), space_file=space, max_measurements=max_measurements,
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
    if ":" in text:
        return tuple(int(c) for c in parse_range(text, "--concurrency", True))
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"cannot parse --concurrency '{text}'", "e.g. --concurrency 1,4,16") from None
    if not values:
        raise UsageError("--concurrency is empty", "e.g. --concurrency 1,4,16")
    return values


def _problem(r: TuneResult) -> tuple[int, ErrorInfo] | None:
    if r.interrupted:
        return INTERRUPTED_EXIT_CODE, ErrorInfo(
            "Interrupted", f"interrupted: {len(r.measurements)} measurement(s) kept in {r.files['journal']}",
            f"continue with tritonops tune --resume {r.output_dir}")
    if r.restore_failed:
        return 6, ErrorInfo("ServerError", f"could not load the original config of {', '.join(r.restore_failed)} "
                            "back", "reload it by hand: the server's repository files were never changed")
    if not r.ranking.met:
        return BUDGET_NOT_MET_EXIT_CODE, ErrorInfo("BudgetNotMet", r.ranking.summary(),
                                                   "raise the budget, or widen the search space")
    return None


def _print(r: TuneResult) -> None:
    o = r.ranking.objective
    out.print(f"tune {r.model} ({r.strategy}): {o.describe()}; {r.measured} measurement(s), {r.reused} reused",
              markup=False)
    out.print(f"{'candidate':<40} {'budget':>6} {'infer/s':>9} {o.percentile + ' ms':>8} {'conc.':>5}  from",
              markup=False)
    for s in r.ranking.scores[:12]:
        tput = "-" if s.throughput is None else f"{s.throughput:.1f}"
        lat = "-" if s.latency_ms is None else f"{s.latency_ms:.2f}"
        out.print(f"{s.setting:<40} {'met' if s.met else 'no':>6} {tput:>9} {lat:>8} {s.concurrency or '-':>5}  "
                  f"{'final' if s.final else 'search'}", markup=False)
    out.print(r.ranking.summary(), markup=False)
    for name, path in r.promoted.items():
        out.print(f"promoted {name}: config.pbtxt written, record {path}", markup=False)
    out.print(f"report: {r.files['html']}  (data: {r.files['json']}, journal: {r.files['journal']})", markup=False)
