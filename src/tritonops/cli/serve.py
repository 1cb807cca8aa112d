"""``tritonops serve``: the exact production repository on a real local tritonserver."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tritonops.cli.params import DAY_S, number, output_file, port
from tritonops.cli.params import log_verbose as log_verbose_check
from tritonops.cli.render import command, err, out
from tritonops.docker import docker_command, docker_command_line
from tritonops.server import ServerOptions, TritonServer
from tritonops.server import serve as run_server
from tritonops.units import parse_size

SERVE_HELP = """Serve a model repository with a real tritonserver on this machine (CPU-only is fine).

Binds 127.0.0.1 unless --host says otherwise; prints endpoints and model states; Ctrl-C stops it.

Examples:

  tritonops serve model_repository/

  tritonops serve model_repository/ --http-port 9000 --grpc-port 9001 --metrics-port 9002 --cache-size 64MB

  tritonops serve model_repository/ --explicit --load-model minilm

  tritonops serve model_repository/ --docker nvcr.io/nvidia/tritonserver:24.08-py3
"""


def register(app: typer.Typer) -> None:
    app.command("serve", help=SERVE_HELP)(serve)


@command("serve")
def serve(
    repository: Annotated[Path, typer.Argument(help="Model repository directory.")] = Path("model_repository"),
    host: Annotated[str, typer.Option(help="Address to bind (default loopback only).")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(callback=port, help="HTTP port (0: a free one).")] = 8000,
    grpc_port: Annotated[int, typer.Option(callback=port, help="gRPC port (0: a free one).")] = 8001,
    metrics_port: Annotated[int, typer.Option(callback=port, help="Prometheus metrics port (0: a free one).")] = 8002,
    explicit: Annotated[bool, typer.Option(help="Explicit model control (load/unload API).")] = False,
    load_model: Annotated[list[str] | None, typer.Option(
        "--load-model", help="With --explicit: a model to load at start (repeatable).")] = None,
    cache_size: Annotated[str | None, typer.Option(help="Response cache size, e.g. 64MB.")] = None,
    python_shm: Annotated[str | None, typer.Option(
        help="Python backend shared memory per model, e.g. 16MB.")] = None,
    log_verbose: Annotated[int, typer.Option(callback=log_verbose_check, help="Server log verbosity (0-2).")] = 0,
    log_file: Annotated[Path | None, typer.Option(callback=output_file, help="Write the server log here.")] = None,
    tritonserver: Annotated[Path | None, typer.Option(
        help="A tritonserver binary (default: $TRITONSERVER or the bundled one).")] = None,
    docker: Annotated[str | None, typer.Option(help="Print (and run, if Docker works) the docker command.")] = None,
    startup_timeout: Annotated[float, typer.Option(callback=number(0, DAY_S, low_open=True),
        help="Seconds to wait for readiness.")] = 180.0,
) -> None:
    options = ServerOptions(
        repository=repository, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
        explicit=explicit, load_models=tuple(load_model or ()),
        cache_size_bytes=parse_size(cache_size) if cache_size else None,
        python_shm_bytes=parse_size(python_shm) if python_shm else None,
        log_verbose=log_verbose, log_file=log_file, tritonserver=tritonserver, startup_timeout=startup_timeout,
        exit_on_error=False, strict_readiness=False,
    )
    if options.bind_warning:
        err.print(f"[bold red]warning:[/bold red] {escape(options.bind_warning)}")
    if docker:
        cmd = docker_command(options, docker)
        out.print(docker_command_line(options, docker), markup=False)
        if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True,
                                                      check=False).returncode == 0:
            raise typer.Exit(subprocess.run(cmd, check=False).returncode)
        err.print("[dim]no Docker engine answers here; printed the command only[/dim]")
        return

    run_server(options, _print_ready)
    out.print("tritonserver stopped")


def _print_ready(server: TritonServer) -> None:
    out.print(f"[green]tritonserver ready[/green] (pid {server.pid})")
    out.print(f"  HTTP     http://{server.http_url}", markup=False)
    out.print(f"  gRPC     {server.grpc_url}", markup=False)
    out.print(f"  metrics  http://{server.metrics_url}/metrics", markup=False)
    out.print(f"  log      {server.log_path}", markup=False)
    if server.fallback_backends:
        out.print(f"  backends {', '.join(server.fallback_backends)}: served by tritonops' Python-based CPU "
                  "backends (this server has no native ones)", markup=False)
    for s in server.model_states():
        color = "green" if s.state == "READY" else "red"
        reason = f"  {escape(s.reason.splitlines()[0])}" if s.reason else ""
        out.print(f"  [{color}]{s.state:11}[/{color}] {escape(s.name)} v{s.version}{reason}")
    out.print("Press Ctrl-C to stop.")
