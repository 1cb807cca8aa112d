"""What the command line shows, shared by every command module: the two consoles, the progress
spinner, error lines and the --json envelope. Command modules import this module, never the app."""

from __future__ import annotations

import functools
import logging
import platform
import sys
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tritonops import __version__
from tritonops.envelope import ErrorInfo, error_envelope, result_envelope
from tritonops.errors import TritonOpsError
from tritonops.progress import LOGGER_NAME, Progress

# Tables stay readable when output is piped or logged (rich assumes 80 columns off a terminal). No emoji
# codes: "START:END:STEP" in a hint must not print as "START🔚STEP".
out = Console(highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
log = logging.getLogger(LOGGER_NAME)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class RunState:
    """One run of the CLI: its global options and which command is running."""

    args: list[str] = field(default_factory=list)
    debug: bool = False
    verbose: bool = False
    debug_log: Path | None = None  # this run's debug log file, if one is written
    command: str | None = None
    as_json: bool = False
    schema: str | None = None
    json_emitted: bool = False
    traceback_logged: bool = False  # the debug log holds the traceback of the error that ended the run


state = RunState()


def reset(args: list[str]) -> None:
    """A new run (main() can run many times in one process, as the tests do)."""
    vars(state).update(vars(RunState(args=list(args), debug="--debug" in args)))


@contextmanager
def spinner(enabled: bool = True) -> Iterator[Progress]:
    """A spinner on stderr; yields the progress callback the library calls with each step. With --verbose
    the log lines on stderr take its place (the library logs every progress message)."""
    if not enabled or state.verbose or not err.is_terminal:
        yield lambda message: None
        return
    with err.status("starting") as status:
        yield status.update


def command(name: str, schema: str | Callable[[Mapping[str, Any]], str | None] | None = None,
            ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a function as the command ``name``: the debug log records the run, and when the command
    was given --json (its ``as_json`` parameter) and stops with an error before it printed a result,
    the error is printed as the envelope (status "error"). ``schema`` (default: the command's own)
    may depend on the options, for deploy's actions."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            state.command, state.as_json = name, bool(kwargs.get("as_json"))
            state.schema = schema(kwargs) if callable(schema) else schema
            state.json_emitted = state.traceback_logged = False
            log.debug("tritonops %s (Python %s) in %s: tritonops %s", __version__, platform.python_version(),
                      Path.cwd(), " ".join(state.args))
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort):  # how a command ends with its own exit code
                raise
            except (Exception, KeyboardInterrupt) as e:
                log.debug("tritonops %s stopped with %s", name, type(e).__name__, exc_info=True)
                state.traceback_logged = state.debug_log is not None
                if state.as_json and not state.json_emitted:
                    emit_json(error_envelope(name, e, schema=state.schema, hint=internal_error_hint()).to_json())
                raise

        return run

    return decorate


def emit_json(text: str) -> None:
    sys.stdout.write(text + "\n")
    state.json_emitted = True


def emit_result(result: Any, *, exit_code: int = 0, errors: tuple[ErrorInfo | BaseException, ...] = ()) -> None:
    """Print the envelope of the running command's result (``result``: an object with to_dict(), or a dict)."""
    assert state.command is not None, "emit_result outside a @command"
    emit_json(result_envelope(state.command, result, exit_code=exit_code, errors=errors).to_json())


def one_line(text: str) -> str:
    """``text`` as one line: control characters (a newline in a name the user gave) are escaped, so
    an error is always one line and cannot forge another."""
    if all(unicodedata.category(c) != "Cc" for c in text):
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) == "Cc" else c
                   for c in text)


def render_error(e: TritonOpsError) -> None:
    err.print(f"[red]error:[/red] {escape(one_line(e.message))}")
    if e.hint:
        err.print(f"[dim]hint:[/dim] {escape(one_line(e.hint))}")
    details = getattr(e, "details", None)
    if details:
        err.print(details, markup=False)
    log_tail = getattr(e, "log_tail", None)
    if log_tail:
        err.print("[dim]last server log lines:[/dim]")
        for line in log_tail:
            err.print("  " + line, markup=False)


def internal_error_hint() -> str:
    if state.traceback_logged:
        return f"the traceback is in {state.debug_log}; please report it (--debug prints it here)"
    return "run again with --debug for the traceback and report it"


def render_internal_error(e: BaseException) -> None:
    err.print(f"[red]error:[/red] internal error: {type(e).__name__}: {escape(one_line(str(e)))}")
    err.print(f"[dim]hint:[/dim] {escape(internal_error_hint())}")
