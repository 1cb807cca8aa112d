"""The typer application: global options, the command modules, and ``main``, which turns errors into
one red line plus a hint and an exit code (tracebacks only with --debug, and always in the debug log)."""

from __future__ import annotations

import sys
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Annotated

import typer

from tritonops import logs
from tritonops.cli import build, deploy, perf, render, serve, tune, validate
from tritonops.envelope import INTERNAL_ERROR_EXIT_CODE
from tritonops.errors import TritonOpsError

app = typer.Typer(
    name="tritonops",
    help="Take a trained model to a tuned, validated Triton Inference Server deployment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help is plain text: "[default: ...]" or "pvc:CLAIM[/dir]" in an option's help is not rich markup.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)


def _print_version(value: bool) -> None:
    if value:
        render.out.print(f"tritonops {installed_version('tritonops')}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show progress and INFO logs on stderr.")] = False,
    debug_log: Annotated[Path | None, typer.Option(
        "--debug-log", help=f"Write this run's DEBUG log, tracebacks included, to this file [default: a new file "
                            f"in ${logs.LOG_DIR_ENV}, else $XDG_STATE_HOME/tritonops/logs, else "
                            f"~/.local/state/tritonops/logs, keeping the last {logs.KEEP} runs].",
        show_default=False)] = None,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    render.state.debug = debug
    render.state.verbose = verbose
    run_log = logs.configure(verbose=verbose, debug_log=debug_log)
    render.state.debug_log = run_log.path
    ctx.call_on_close(run_log.close)


build.register(app)
deploy.register(app)
serve.register(app)
validate.register(app)
perf.register(app)
tune.register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (and exits with it when run as a script)."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    render.reset(args)
    try:
        app(args=args, prog_name="tritonops", standalone_mode=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except TritonOpsError as e:
        if render.state.debug:
            raise
        render.render_error(e)
        code = e.exit_code
    except KeyboardInterrupt:
        render.err.print("[red]interrupted[/red]")
        code = 130
    except Exception as e:  # a bug in tritonops, not a user error
        if render.state.debug:
            raise
        render.render_internal_error(e)
        code = INTERNAL_ERROR_EXIT_CODE
    if argv is None:
        sys.exit(code)
    return code
