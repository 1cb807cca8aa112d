"""CLI commands of the perf area: ``perf``, ``loadtest`` and ``study protocols|config``.
Each parses its options into one options object, calls one library function and renders the result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tritonops.cli.params import DAY_S, INT32_MAX, number, output_dir, url
from tritonops.cli.render import command, emit_result, err, out, spinner
from tritonops.envelope import INTERRUPTED_EXIT_CODE, ErrorInfo
from tritonops.errors import ValidationFailed
from tritonops.perf.analyzer import PerfOptions, run_perf
from tritonops.perf.config_study import ConfigStudyOptions, run_config_study
from tritonops.perf.loadtest import MAX_PROCESSES, MAX_RATE, LoadtestOptions, run_loadtest
from tritonops.perf.presets import PRESETS
from tritonops.perf.study import ProtocolStudyOptions, run_protocol_study
from tritonops.tune.gate import check_baseline, check_tolerance, load_baseline
from tritonops.units import parse_values

PERF_HELP = """Measure a served model with perf_analyzer over a sweep of concurrencies or request rates.

Each sweep point is one perf_analyzer run. Client latencies and Triton's server-side queue and compute
times go to OUTPUT_DIR/perf.csv and perf.json. Ctrl-C keeps the points measured so far.

Examples:

  tritonops perf mlp --serve model_repository/ --concurrency 1:8:2

  tritonops perf mlp --url 127.0.0.1:8000 --request-rate 10:50:10 --distribution poisson --protocol grpc

  tritonops perf clf --serve repo/ --concurrency 4 --batch-size 1 --batch-size 8 --shared-memory system

  tritonops perf embed --url 127.0.0.1:8000 --samples sentences.txt --concurrency 1:16:4
"""

LOADTEST_HELP = """Open-loop Poisson load with locust: offered vs achieved rate, latency percentiles, errors.

Requests go out at the times of a Poisson process (rate λ) against a clock, whether or not earlier
responses came back. Headless and bounded; writes loadtest.csv/.json and locust's CSV and HTML.

Examples:

  tritonops loadtest mlp --serve model_repository/ --rate 200 --duration 30

  tritonops loadtest mlp --url 127.0.0.1:8000 --rate 500 --protocol grpc

  tritonops loadtest embed --url 127.0.0.1:8000 --rate 50 --samples sentences.txt --protocol http-json
"""

STUDY_PROTOCOLS_HELP = """Compare HTTP JSON, HTTP binary and gRPC: open-loop Poisson load at several rates, per payload.

Each MODEL is one payload. Per model, runs {protocols} x {rates} through locust (repeated for a spread) plus a
perf_analyzer concurrency sweep per protocol, and writes a self-contained HTML report (latency and throughput vs
offered load, payload sizes, a concurrency sweep) with findings and verdicts on the claims (binary beats JSON, gRPC
sustains more load, a response cache pays off) derived from the numbers, plus study.json and study.csv. Every cell
has its own wall-time bound (--cell-timeout): a cell that cannot drain is reported as fell behind and the study
goes on; only Ctrl-C interrupts it.

--presets adds payload presets (small: FP32 [16]; image: FP32 [3,224,224]; image-u8: UINT8 [224,224,3]; text: a
sentence), built under the output directory and served by the study's own server (beside --serve's models, or
alone). --cache adds the response-cache dimension: the same cells with Triton's response cache off and on, with
--repeat-fraction of the payloads repeated, and the server's hits, misses and time per hit and per miss (with
--serve the study starts its server with a cache; a --url server needs one and explicit model control).

Examples:

  tritonops study protocols mlp --serve model_repository/

  tritonops study protocols mlp --url 127.0.0.1:8000 --rates 50:400:50 --repeats 5 --duration 20

  tritonops study protocols mlp img --serve model_repository/ --rates 25,50,100,200 --cell-timeout 20

  tritonops study protocols --presets small,image,image-u8,text --rates 25,100 --repeats 2 --cache
"""

STUDY_CONFIG_HELP = """Compare the naive config, tritonops' generated config and variants of it under the same load.

Variants (naive: no dynamic batching, 1 instance; generated: config.pbtxt as in the repository; batching with
2 instances; batching with a 500 us queue delay; 2 instances without batching) are served side by side by one
server and swept with perf_analyzer. Reports throughput and p99 ratios to the naive config in an HTML report.

Examples:

  tritonops study config mlp --serve model_repository/

  tritonops study config mlp --serve model_repository/ --concurrency 1,8,32 --p99-budget 20 --repeats 3
"""


def register(app: typer.Typer) -> None:
    app.command("perf", help=PERF_HELP)(perf)
    app.command("loadtest", help=LOADTEST_HELP)(loadtest)
    study_app = typer.Typer(help="Comparative studies with HTML reports: protocols, configs.", no_args_is_help=True,
                            rich_markup_mode=None)
    study_app.command("protocols", help=STUDY_PROTOCOLS_HELP)(study_protocols)
    study_app.command("config", help=STUDY_CONFIG_HELP)(study_config)
    app.add_typer(study_app, name="study")


# A run stopped by Ctrl-C keeps what it measured: it prints its result, then "interrupted: <stop>" on
# stderr, and exits 130. ``stop`` (None: not interrupted) says where the partial results are.
def _emit(result: Any, stop: str | None) -> None:
    if stop is None:
        emit_result(result)
    else:
        emit_result(result, exit_code=INTERRUPTED_EXIT_CODE, errors=(ErrorInfo("Interrupted", f"interrupted: {stop}"),))


def _exit_if_interrupted(stop: str | None) -> None:
    if stop is not None:
        err.print(f"[yellow]interrupted[/yellow]: {escape(stop)}")
        raise typer.Exit(INTERRUPTED_EXIT_CODE)


MAX_CONCURRENCY = 4096  # perf_analyzer client threads on one machine; more is a typo


def _values(text: str, what: str, integer: bool, *, allow_list: bool = True) -> tuple[float, ...]:
    """A comma list (1,2,4,8) or a range START:END:STEP of concurrencies or request rates."""
    return parse_values(text, what, integer=integer, high=MAX_CONCURRENCY if integer else MAX_RATE,
                        allow_list=allow_list)


def _ms2(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


@command("perf")
def perf(
    model: Annotated[str, typer.Argument(help="Model name, as served.")],
    serve: Annotated[Path | None, typer.Option(help="Start a server on this model repository.")] = None,
    url: Annotated[str | None, typer.Option(callback=url, help="HTTP HOST:PORT of a running server.")] = None,
    grpc_url: Annotated[str | None, typer.Option(callback=url, help="gRPC HOST:PORT [default: HTTP port + 1].")] = None,
    model_version: Annotated[str, typer.Option(help="Model version [default: latest].")] = "",
    concurrency: Annotated[str | None, typer.Option(help="Concurrency sweep START[:END[:STEP]].")] = None,
    request_rate: Annotated[str | None, typer.Option(
        help="Request-rate sweep START[:END[:STEP]] in requests/s.")] = None,
    distribution: Annotated[str, typer.Option(help="Arrivals for --request-rate: poisson or constant.")
                            ] = "poisson",
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "http",
    http_format: Annotated[str, typer.Option(help="HTTP tensor encoding: binary or json.")] = "binary",
    batch_size: Annotated[list[int] | None, typer.Option(callback=number(1, INT32_MAX),
        help="Batch size per request (repeatable).")] = None,
    shared_memory: Annotated[str, typer.Option(help="none or system (server on this machine).")] = "none",
    measurement_interval: Annotated[int, typer.Option(callback=number(100, 3_600_000),
        help="Measurement window in ms.")] = 5000,
    stability_percentage: Annotated[float, typer.Option(callback=number(0, 100, low_open=True),
        help="Allowed variation between windows, %.")
                                    ] = 10.0,
    max_trials: Annotated[int, typer.Option(callback=number(1, 1000),
        help="Windows tried before a point counts as unstable.")] = 10,
    percentile: Annotated[int | None, typer.Option(callback=number(1, 99),
        help="Stabilize on this latency percentile.")] = None,
    samples: Annotated[Path | None, typer.Option(
        help="Request data: .npz (array per input), .txt (line per sample), image file or directory.")] = None,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:DIMS for a variable-size input (repeatable).")
                     ] = None,
    output_dir: Annotated[Path | None, typer.Option(callback=output_dir,
        help="Where results go [default: perf_results/MODEL].")
                          ] = None,
    sequence_length: Annotated[int | None, typer.Option(callback=number(1, INT32_MAX),
        help="Stateful models: requests per sequence [default: 20].", show_default=False)] = None,
    sequence_id_range: Annotated[str | None, typer.Option(
        help="Stateful models: sequence ids START:END [default: fresh ids per point].", show_default=False)] = None,
    streaming: Annotated[bool | None, typer.Option(
        "--streaming/--no-streaming", help="gRPC streaming [default: for decoupled models].",
        show_default=False)] = None,
    baseline: Annotated[Path | None, typer.Option(
        help="Gate: exit 7 when throughput within the budget drops, or latency rises, against this "
             "tune-record.json by more than --tolerance.")] = None,
    tolerance: Annotated[float, typer.Option(help="Allowed change against --baseline (0.1 = 10%).")] = 0.1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    options = PerfOptions(
        model=model, output_dir=output_dir or Path("perf_results") / model, serve=serve, url=url,
        grpc_url=grpc_url, model_version=model_version, protocol=protocol,  # type: ignore[arg-type]
        http_format=http_format,  # type: ignore[arg-type]
        concurrency=tuple(int(c) for c in _values(concurrency, "--concurrency", True, allow_list=False))
        if concurrency else (),
        request_rate=_values(request_rate, "--request-rate", False, allow_list=False) if request_rate else (),
        distribution=distribution,  # type: ignore[arg-type]
        batch_sizes=tuple(batch_size or (1,)), shared_memory=shared_memory,  # type: ignore[arg-type]
        measurement_interval_ms=measurement_interval, stability_percentage=stability_percentage,
        max_trials=max_trials, percentile=percentile, samples=samples, shapes=tuple(shape or ()),
        sequence_length=sequence_length, sequence_id_range=sequence_id_range, streaming=streaming,
    )
    check_tolerance(tolerance)
    record = load_baseline(baseline, model, tolerance) if baseline is not None else None  # before measuring
    with spinner(not as_json) as progress:
        result = run_perf(options, progress)
    stop = f"{len(result.rows)} point(s) kept in {result.csv_path}" if result.interrupted else None
    gate = check_baseline(result, baseline, tolerance, record) if baseline is not None and stop is None else None
    if as_json and gate is not None:
        data = {**result.to_dict(), "baseline_gate": gate.to_dict()}
        emit_result(data, exit_code=0 if gate.ok else ValidationFailed.exit_code,
                    errors=() if gate.ok else (ErrorInfo("ValidationFailed", "; ".join(gate.failures())),))
    elif as_json:
        _emit(result, stop)
    else:
        load = "rate/s" if result.mode == "request_rate" else "conc."
        out.print(f"{result.model} over {result.protocol}"
                  f"{' (' + result.http_format + ')' if result.protocol == 'http' else ''} at {result.target}")
        out.print(f"{load:>7} {'batch':>5} {'infer/s':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
                  f"{'queue':>6} {'infer':>6}  status")
        for r in result.rows:
            tput = "-" if r.throughput is None else f"{r.throughput:.1f}"
            out.print(f"{r.load:>7g} {r.batch_size:>5} {tput:>9} {_ms(r.p50_us):>7} {_ms(r.p90_us):>7} "
                      f"{_ms(r.p99_us):>7} {_ms(r.server_queue_us):>6} {_ms(r.server_compute_infer_us):>6}  "
                      f"{r.status}{' (' + r.note + ')' if r.note else ''}", markup=False)
        out.print(f"results: {result.csv_path}, {result.json_path}", markup=False)
        for c in gate.checks if gate is not None else ():
            out.print(f"baseline {'ok' if c.ok else 'REGRESSION'}: {c.message}", markup=False)
    _exit_if_interrupted(stop)
    if gate is not None and not gate.ok:
        raise ValidationFailed(f"regression against {baseline}: {'; '.join(gate.failures())}",
                               "find the change that cost it, or tune and promote again")

@command("loadtest")
def loadtest(
    model: Annotated[str, typer.Argument(help="Model name, as served.")],
    rate: Annotated[float, typer.Option(callback=number(0, MAX_RATE, low_open=True),
        help="Offered load λ in requests/s (Poisson arrivals).")],
    duration: Annotated[float, typer.Option(callback=number(1, DAY_S),
        help="Seconds of load (bounded; in-flight requests drain after).")
                        ] = 10.0,
    protocol: Annotated[str, typer.Option(help="http-binary, http-json or grpc.")] = "http-binary",
    serve: Annotated[Path | None, typer.Option(help="Start a server on this model repository.")] = None,
    url: Annotated[str | None, typer.Option(callback=url, help="HTTP HOST:PORT of a running server.")] = None,
    grpc_url: Annotated[str | None, typer.Option(callback=url, help="gRPC HOST:PORT [default: HTTP port + 1].")] = None,
    model_version: Annotated[str, typer.Option(help="Model version [default: latest].")] = "",
    batch_size: Annotated[int, typer.Option(callback=number(1, INT32_MAX), help="Batch size per request.")] = 1,
    max_inflight: Annotated[int, typer.Option(callback=number(1, 100_000),
        help="Requests outstanding at most; arrivals beyond it count as ClientSaturated errors.")] = 256,
    samples: Annotated[Path | None, typer.Option(
        help="Request data: .npz (array per input), .txt (line per sample), image file or directory.")] = None,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:DIMS for a variable-size input (repeatable).")
                     ] = None,
    seed: Annotated[int, typer.Option(callback=number(0, 2**32 - 1),
        help="Seed of the arrival schedule and generated data.")] = 0,
    processes: Annotated[int | None, typer.Option(callback=number(1, MAX_PROCESSES),
        help="Load generator processes, each a Poisson stream at rate/N [default: as many as the rate needs, "
             "up to the cores left after the server].")] = None,
    output_dir: Annotated[Path | None, typer.Option(callback=output_dir,
        help="Where results go [default: loadtest_results/MODEL].")
                          ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    options = LoadtestOptions(
        model=model, output_dir=output_dir or Path("loadtest_results") / model, rate=rate,
        protocol=protocol, duration_s=duration, serve=serve, url=url, grpc_url=grpc_url,  # type: ignore[arg-type]
        model_version=model_version, batch_size=batch_size, max_inflight=max_inflight, samples=samples,
        shapes=tuple(shape or ()), seed=seed, processes=processes,
    )
    with spinner(not as_json) as progress:
        r = run_loadtest(options, progress)
    stop = f"{r.ok} requests measured, kept in {r.files['json']}" if r.interrupted else None
    if as_json:
        _emit(r, stop)
    else:
        lat = r.latency_ms
        out.print(f"{r.model} over {r.protocol}: offered {r.offered_rate:g} req/s (Poisson, schedule drew "
                  f"{r.scheduled_rate:.1f}/s), achieved {r.achieved_rate:.1f}/s = {r.achieved_ratio:.3f} of "
                  f"offered, over {r.duration_s:g} s", markup=False)
        if lat:
            out.print(f"latency ms: p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p95 {lat['p95']:.2f}  "
                      f"p99 {lat['p99']:.2f}  (send lag p99 {r.lag_ms.get('p99', 0):.2f})", markup=False)
        out.print(f"payload bytes: request {r.request_bytes}, response {r.response_bytes}")
        g = r.generator
        cpu = "-" if g.cpu_ms_per_request is None else f"{g.cpu_ms_per_request:.3f}"
        kept = "-" if g.sent_vs_scheduled is None else f"{g.sent_vs_scheduled:.3f}"
        state = (f"generator saturated at {r.sent_rate:.0f}/s" if g.saturated
                 else "fell behind" if r.outcome == "fell-behind" else r.outcome)
        out.print(f"generator: {g.processes} process{'es' if g.processes > 1 else ''}, {cpu} ms CPU/request, "
                  f"sent on time {kept} of scheduled, send lag p99 {r.lag_ms.get('p99', 0):.2f} ms; {state}",
                  markup=False)
        out.print(f"ok {r.ok} of {r.scheduled} scheduled; errors {r.error_count}")
        for kind, n in r.errors.items():
            out.print(f"  {n:>6}  {kind}", markup=False)
        out.print(f"results: {r.files['csv']}, {r.files['json']}, {r.files['locust_html']}", markup=False)
    _exit_if_interrupted(stop)

@command("study protocols")
def study_protocols(
    models: Annotated[list[str] | None, typer.Argument(
        help="Model name(s), as served; each model is one payload.")] = None,
    serve: Annotated[Path | None, typer.Option(help="Start a server on this model repository.")] = None,
    url: Annotated[str | None, typer.Option(callback=url, help="HTTP HOST:PORT of a running server.")] = None,
    grpc_url: Annotated[str | None, typer.Option(callback=url, help="gRPC HOST:PORT [default: HTTP port + 1].")] = None,
    rates: Annotated[str, typer.Option(help="Offered Poisson rates λ, req/s: list or START:END:STEP.")
                     ] = "25,50,100,200",
    protocols: Annotated[str, typer.Option(help="Comma list of http-json, http-binary, grpc.")
                         ] = "http-json,http-binary,grpc",
    repeats: Annotated[int, typer.Option(callback=number(1, 100),
        help="Repeats of the whole matrix, for a spread.")] = 3,
    duration: Annotated[float, typer.Option(callback=number(1, DAY_S), help="Seconds per (protocol, λ) cell.")] = 10.0,
    cell_timeout: Annotated[float | None, typer.Option(callback=number(1, 2 * DAY_S),
        help="Wall-time bound of one cell (schedule + drain); a cell that has not drained by then fell behind "
             "[default: duration + max(5 s, duration)].")] = None,
    concurrency: Annotated[str, typer.Option(
        help="perf_analyzer concurrency sweep per protocol: list, START:END:STEP, or none.")] = "1,2,4,8",
    measurement_interval: Annotated[int, typer.Option(callback=number(100, 3_600_000),
        help="perf_analyzer window in ms.")] = 2000,
    stability_percentage: Annotated[float, typer.Option(callback=number(0, 100, low_open=True),
        help="perf_analyzer stability, %.")] = 10.0,
    batch_size: Annotated[int, typer.Option(callback=number(1, INT32_MAX), help="Batch size per request.")] = 1,
    samples: Annotated[Path | None, typer.Option(help="Request data (.npz, .txt, images).")] = None,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:DIMS for a variable-size input.")] = None,
    output_dir: Annotated[Path | None, typer.Option(callback=output_dir,
        help="[default: study_results/MODEL-protocols]")] = None,
    presets: Annotated[str | None, typer.Option(
        help=f"Payload presets to study beside the models (built and served by the study): comma list of "
             f"{', '.join(PRESETS)}.")] = None,
    cache: Annotated[bool, typer.Option("--cache", help="Also run the response-cache dimension: cache off vs on.")
                     ] = False,
    repeat_fraction: Annotated[float, typer.Option(callback=number(0, 1),
        help="With --cache: the share of requests that repeat one payload.")] = 0.5,
    cache_rates: Annotated[str | None, typer.Option(
        help="With --cache: the λ of the cache cells [default: the lowest of --rates].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    conc = () if concurrency.strip().lower() in ("none", "0", "") else tuple(
        int(c) for c in _values(concurrency, "--concurrency", True))
    names = tuple(models or ())
    chosen = tuple(p.strip() for p in (presets or "").split(",") if p.strip())
    label = "-".join((*names, *chosen)) or "presets"
    options = ProtocolStudyOptions(
        models=names, presets=chosen, cache=cache, repeat_fraction=repeat_fraction,
        cache_rates=_values(cache_rates, "--cache-rates", False) if cache_rates else (),
        output_dir=output_dir or Path("study_results") / f"{label}-protocols",
        rates=_values(rates, "--rates", False), repeats=repeats, duration_s=duration, cell_timeout_s=cell_timeout,
        protocols=tuple(p.strip() for p in protocols.split(",") if p.strip()),  # type: ignore[misc]
        concurrency=conc, measurement_interval_ms=measurement_interval,
        stability_percentage=stability_percentage, serve=serve, url=url, grpc_url=grpc_url,
        batch_size=batch_size, samples=samples, shapes=tuple(shape or ()),
    )
    with spinner(not as_json) as progress:
        result = run_protocol_study(options, progress)
    stop = f"the report covers the runs that finished: {result.files['html']}" if result.interrupted else None
    if as_json:
        _emit(result, stop)
    else:
        many = len(result.models) > 1
        out.print(f"protocol study of {result.model}: {len(result.runs)} open-loop runs, "
                  f"{sum(len(r) for by in result.concurrency.values() for r in by.values())} perf_analyzer points")
        out.print(("model        " if many else "") + f"{'protocol':<12} {'λ/s':>6} {'achieved':>9} {'p50 ms':>7} "
                  f"{'p99 ms':>7} {'p99 range':>13}  outcome", markup=False)
        for c in result.cells:
            rng = "-" if c.p99_range is None else f"{c.p99_range[0]:.2f}–{c.p99_range[1]:.2f}"
            out.print((f"{c.model:<12} " if many else "") + f"{c.protocol:<12} {c.rate:>6g} {c.achieved_rate:>9.1f} "
                      f"{_ms2(c.p50_ms):>7} {_ms2(c.p99_ms):>7} {rng:>13}  {c.label}", markup=False)
        for cc in result.cache_cells:
            hits = "" if not cc.cache else f", server hits/misses {cc.hits}/{cc.misses}"
            out.print(f"cache {'on ' if cc.cache else 'off'} {cc.protocol:<12} {cc.rate:>6g} {cc.request_bytes:>9} B  "
                      f"p50 {_ms2(cc.p50_ms)} ms  p99 {_ms2(cc.p99_ms)} ms{hits}  {cc.outcome}", markup=False)
        for claim in result.claims:
            out.print(f"claim: {claim.claim}: {claim.verdict} ({claim.summary})", markup=False)
        for f in result.findings:
            out.print(f"• {f}", markup=False)
        out.print(f"report: {result.files['html']}  (data: {result.files['json']}, {result.files['csv']})",
                  markup=False)
    _exit_if_interrupted(stop)


@command("study config")
def study_config(
    model: Annotated[str, typer.Argument(help="Model name in the repository.")],
    repository: Annotated[Path, typer.Option(
        "--serve", "--repo", help="Model repository holding MODEL; the study serves variants of it.")
                          ] = Path("model_repository"),
    concurrency: Annotated[str, typer.Option(help="Concurrency sweep: list or START:END:STEP.")] = "1,4,16",
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "grpc",
    repeats: Annotated[int, typer.Option(callback=number(1, 100),
        help="Repeats of every variant's sweep, interleaved.")] = 2,
    p99_budget: Annotated[float | None, typer.Option(callback=number(0, 3_600_000, low_open=True),
        help="Also compare throughput within this p99, in ms.")
                          ] = None,
    variant: Annotated[list[str] | None, typer.Option(
        help="Only these variants (repeatable; naive is always kept): generated, batching_2x, "
             "batching_delay500, instances_2x.")] = None,
    measurement_interval: Annotated[int, typer.Option(callback=number(100, 3_600_000),
        help="perf_analyzer window in ms.")] = 2000,
    stability_percentage: Annotated[float, typer.Option(callback=number(0, 100, low_open=True),
        help="perf_analyzer stability, %.")] = 25.0,
    samples: Annotated[Path | None, typer.Option(help="Request data (.npz, .txt, images).")] = None,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:DIMS for a variable-size input.")] = None,
    output_dir: Annotated[Path | None, typer.Option(callback=output_dir,
        help="[default: study_results/MODEL-config]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    options = ConfigStudyOptions(
        model=model, repository=repository, output_dir=output_dir or Path("study_results") / f"{model}-config",
        concurrency=tuple(int(c) for c in _values(concurrency, "--concurrency", True)),
        protocol=protocol,  # type: ignore[arg-type]
        repeats=repeats, p99_budget_ms=p99_budget, variants=tuple(variant or ()),
        measurement_interval_ms=measurement_interval, stability_percentage=stability_percentage,
        samples=samples, shapes=tuple(shape or ()),
    )
    with spinner(not as_json) as progress:
        r = run_config_study(options, progress)
    stop = f"the report covers the runs that finished: {r.files['html']}" if r.interrupted else None
    if as_json:
        _emit(r, stop)
    else:
        out.print(f"config study of {r.model}: {len(r.variants)} variants x concurrency "
                  f"{','.join(str(c) for c in options.concurrency)} x {options.repeats} repeats")
        out.print(f"{'variant':<18} {'peak infer/s':>12} {'x naive':>8}"
                  + (f" {'within p99 ' + format(r.budget_ms, 'g') + ' ms':>18}" if r.budget_ms else ""))
        for v in r.variants:
            within = ""
            if r.budget_ms:
                within = f" {r.budget_throughput.get(v.name, 0.0):>18.1f}"
            out.print(f"{v.name:<18} {r.peak.get(v.name, 0.0):>12.1f} "
                      f"{r.peak_ratio.get(v.name, 0.0):>8.2f}{within}", markup=False)
        for f in r.findings:
            out.print(f"• {f}", markup=False)
        out.print(f"report: {r.files['html']}  (data: {r.files['json']})", markup=False)
    _exit_if_interrupted(stop)
