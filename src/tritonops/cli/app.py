"""The typer application: global options, the command modules, and ``main``, which turns errors into
one red line plus a hint and an exit code (tracebacks only with --debug, and always in the debug log)."""

from __future__ import annotations

import sys
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Annotated

import typer
from typer._click import exceptions as click  # typer 0.29 vendors click; its errors live here
from typer._click.core import Context as ClickContext

from tritonops import logs
from tritonops.cli import build, deploy, perf, render, serve, tune, validate
from tritonops.cli.params import OptionError, output_file
from tritonops.envelope import INTERNAL_ERROR_EXIT_CODE, SCHEMAS, error_envelope
from tritonops.errors import TritonOpsError, UsageError

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
        show_default=False, callback=output_file)] = None,
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


def _command_of(ctx: ClickContext | None) -> str | None:
    """``loadtest``, ``study config``: the command a usage error belongs to (None: the top level)."""
    if ctx is None:
        return None
    return " ".join(ctx.command_path.split()[1:]) or None


def _usage_error(e: click.UsageError) -> int:
    """A command line click or an option check refused: one line and a hint (an envelope with
    --json), exit 2, before the command ran."""
    if isinstance(e, click.NoArgsIsHelpError):  # `tritonops` or `tritonops study` alone
        e.show()
        return e.exit_code
    command = _command_of(e.ctx)
    hint = e.hint if isinstance(e, OptionError) else (
        f"see 'tritonops {command + ' ' if command else ''}--help'")
    error = UsageError(" ".join(e.format_message().split()), hint)
    if "--json" in render.state.args and command is not None:
        schema = deploy.action_schema(render.state.args) if command == "deploy" else SCHEMAS.get(command)
        if schema is not None:
            render.emit_json(error_envelope(command, error, schema=schema).to_json())
    render.render_error(error)
    return error.exit_code


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (and exits with it when run as a script)."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    render.reset(args)
    try:
        rv = app(args=args, prog_name="tritonops", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except click.UsageError as e:
        code = _usage_error(e)
    except click.ClickException as e:
        render.render_error(UsageError(" ".join(e.format_message().split()), None))
        code = e.exit_code
    except typer.Abort:
        render.err.print("[red]interrupted[/red]")
        code = 130
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
