"""``tritonops validate``: the command. Parses options into ValidateOptions, calls the library,
prints the table (or --json), and exits 7 with the first failure when anything failed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tritonops.cli.params import DAY_S, INT32_MAX, host, number, port
from tritonops.cli.render import command, emit_result, out, spinner
from tritonops.client import endpoints, host_of
from tritonops.errors import UsageError
from tritonops.units import parse_size
from tritonops.validate import CheckResult, ValidateOptions, ValidationReport, validate, validate_repository

VALIDATE_HELP = """Prove a Triton deployment works: readiness, metadata vs config, inference over HTTP JSON,
HTTP binary and gRPC at batch 1 and a larger batch, identical outputs across the three, outputs equal
to a local run of the same model file, response-cache hits, first-request latency.

Exit code 0 only if every check passed (7 otherwise, after printing the table).

Examples:

  tritonops validate --url localhost

  tritonops validate --url localhost --http-port 8000 --grpc-port 8001 --model clf --inputs sample.npz

  tritonops validate model_repository/ --url localhost      (also compare with config.pbtxt and a local run)

  tritonops validate model_repository/ --serve              (start a server, validate everything, stop)

  tritonops validate --url localhost --json
"""

_PROTOCOL_COLUMNS = (("http-json", "HTTP JSON"), ("http-binary", "HTTP binary"), ("grpc", "gRPC"))
_COVERS = {"http": ("http-json", "http-binary"), "grpc": ("grpc",)}
_STREAM_COLUMN = ("grpc-stream", "gRPC stream")  # shown when a stateful or decoupled model streamed


def register(app: typer.Typer) -> None:
    app.command("validate", help=VALIDATE_HELP)(validate_command)


@command("validate")
def validate_command(
    repository: Annotated[Path | None, typer.Argument(
        help="Model repository: compare with its config.pbtxt and run its model files locally.",
        show_default=False)] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Start a server on REPOSITORY, validate, stop.")] = False,
    url: Annotated[str, typer.Option("--url", callback=host,
        help="Server host (host or host:http_port).")] = "localhost",
    http_port: Annotated[int | None, typer.Option(callback=port,
        help="HTTP port (default 8000).", show_default=False)] = None,
    grpc_port: Annotated[int, typer.Option(callback=port, help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(callback=port, help="Metrics port (for cache-hit metrics).")] = 8002,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Validate only this model (repeatable; default: all).")] = None,
    inputs: Annotated[Path | None, typer.Option(
        help="Inputs to send (.npz or .json, one array per input, batch dimension included).")] = None,
    reference: Annotated[Path | None, typer.Option(
        help="Model file for the local reference run, instead of the repository's (needs --model).")] = None,
    batch_size: Annotated[int | None, typer.Option(callback=number(1, INT32_MAX),
        help="The larger batch to test (default: min(max_batch_size, 4)).", show_default=False)] = None,
    atol: Annotated[float, typer.Option(callback=number(0, 1e3),
        help="Absolute tolerance against the local run.")] = 1e-4,
    rtol: Annotated[float, typer.Option(callback=number(0, 1e3),
        help="Relative tolerance against the local run.")] = 1e-3,
    protocol: Annotated[list[str] | None, typer.Option(
        "--protocol", help="http-json, http-binary, grpc (repeatable; default: all three) or grpc-stream "
        "(stateful and decoupled models stream whenever grpc is validated).")] = None,
    grpc_max_message_size: Annotated[str | None, typer.Option(
        help="Client gRPC message limit, like your production clients' (e.g. 4MB).", show_default=False)] = None,
    cache_size: Annotated[str | None, typer.Option(
        help="With --serve: response cache size (default 16MB when a model enables response_cache).",
        show_default=False)] = None,
    timeout: Annotated[float, typer.Option(callback=number(0, DAY_S, low_open=True),
        help="Seconds to wait for one request.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    if url.startswith("https://"):
        raise UsageError("https:// is not supported", "give the host, e.g. --url localhost")
    http_url, grpc_url = endpoints(url.removeprefix("http://"), http_port, grpc_port)
    if serve and repository is None:
        raise UsageError("--serve needs a model repository", "tritonops validate model_repository/ --serve")
    if repository is not None and not repository.is_dir():
        raise UsageError(f"model repository '{repository}' is not a directory", "check the path")
    if cache_size is not None and not serve:
        raise UsageError("--cache-size applies only with --serve",
                         "start the server with a cache yourself, or add --serve")
    options = ValidateOptions(
        http_url=http_url, grpc_url=grpc_url, metrics_url=f"{host_of(http_url)}:{metrics_port}",
        models=tuple(model or ()), inputs=inputs, repository=repository, reference=reference,
        batch_size=batch_size, atol=atol, rtol=rtol, protocols=tuple(protocol or ("http-json", "http-binary",
                                                                                    "grpc")),
        grpc_max_message_bytes=parse_size(grpc_max_message_size) if grpc_max_message_size else None,
        timeout_s=timeout,
    )
    with spinner(not as_json) as progress:
        if serve:
            assert repository is not None
            report = validate_repository(
                repository, options, progress,
                cache_size_bytes=parse_size(cache_size) if cache_size else None)
        else:
            report = validate(options, progress)
    if as_json:
        emit_result(report, errors=() if report.ok else (report.error(),))
    else:
        out.print(render_table(report))
        counts = report.to_dict()["counts"]
        verdict = "[green]all checks passed[/green]" if report.ok else "[red]validation failed[/red]"
        n = len(report.models)
        out.print(f"{verdict}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped "
                  f"({n} model{'s' if n != 1 else ''}, Triton {report.server_version} at {report.http_url})")
    if not report.ok:
        raise report.error()


def render_table(report: ValidationReport) -> Table:
    """model × check rows, one column per protocol (a check that is not per protocol spans them)."""
    table = Table(show_lines=False, header_style="bold", pad_edge=False)
    table.add_column("model", no_wrap=True)
    table.add_column("check", no_wrap=True)
    columns = _PROTOCOL_COLUMNS + (_STREAM_COLUMN,) * any(r.protocol == _STREAM_COLUMN[0] for r in report.rows)
    for _, title in columns:
        table.add_column(title, no_wrap=True)
    table.add_column("detail", overflow="fold")
    groups: dict[tuple[str, str], list[CheckResult]] = {}
    for row in report.rows:
        groups.setdefault((row.model, row.check), []).append(row)
    last_model = None
    for (model, check), rows in groups.items():
        cells = {p: "" for p, _ in columns}
        for row in rows:
            covered = _COVERS.get(row.protocol, (row.protocol,)) if row.protocol in PROTOCOL_KEYS else ()
            for p in covered:
                cells[p] = _cell(row)
            if not covered:  # not per protocol: shown once, under the first column
                cells["http-json"] = _cell(row)
        if check.startswith("agree") and not cells["http-binary"] and len(rows) > 1:
            cells["http-binary"] = "[dim]baseline[/dim]"
        worst = next((r for r in rows if r.status == "fail"), None) or next(
            (r for r in rows if r.status == "skip"), rows[0])
        table.add_row(
            escape(model or "(server)") if model != last_model else "",
            escape(check), *[cells[p] for p, _ in columns], escape(worst.detail),
        )
        last_model = model
    return table


PROTOCOL_KEYS = ("http", "grpc", "http-json", "http-binary", "grpc-stream")


def _cell(row: CheckResult) -> str:
    mark = {"pass": "[green]✓[/green]", "fail": "[red]✗[/red]", "skip": "[yellow]–[/yellow]"}[row.status]
    if row.latency_ms is not None:
        return f"{mark} {row.latency_ms:.2f} ms"
    if row.max_error is not None and row.status != "skip":
        return f"{mark} err {row.max_error:.2g}" if row.max_error else f"{mark} exact"
    return mark
