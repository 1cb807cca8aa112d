"""Option checks that every command shares, attached as typer callbacks so that a bad value stops the
run before anything starts (no server, no file written), with one line naming the option:

- ``number(low, high)``: finite and in range (``units.check_number``), for every int and float option;
- ``port``: a TCP port number (``netaddr.check_port``), for every port option;
- ``output_dir`` / ``output_file``: where results go must be (or can become) a directory, or a file:
  a file where a directory belongs, a directory where a file belongs, a FIFO or a device are refused.

A failed check raises ``OptionError``, a click usage error that carries tritonops' message and hint;
``main`` prints it like any other usage error (one line and a hint, exit 2, an envelope with --json).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer._click import exceptions  # typer 0.29 vendors click: its UsageError lives here

from tritonops.client import normalize_url
from tritonops.errors import UsageError
from tritonops.netaddr import check_port
from tritonops.paths import check_writable_file, shown
from tritonops.repository import parse_version
from tritonops.server import check_log_verbose
from tritonops.units import check_number

T = TypeVar("T")
INT32_MAX = (1 << 31) - 1  # batch sizes, queue sizes, priority levels: int32 in model_config.proto
DAY_S = 24 * 3600  # timeouts and durations: longer is a typo


class OptionError(exceptions.UsageError):
    """A value the option's check refused: tritonops' own message and hint."""

    def __init__(self, error: UsageError, ctx: typer.Context | None) -> None:
        super().__init__(error.message, ctx)
        self.hint = error.hint


def flag_of(param: typer.CallbackParam) -> str:
    """The name the user knows the option by: its longest flag, or the argument's name."""
    opts = [o for o in param.opts if o.startswith("--")] or list(param.opts)
    if param.param_type_name == "argument" or not opts:
        return (param.name or "value").upper()
    return max(opts, key=len)


def _each(value: Any, check: Callable[[Any], object]) -> None:
    if value is None:
        return
    for v in value if isinstance(value, (list, tuple)) else (value,):
        if v is not None:
            check(v)


def _checked(check: Callable[[Any, str], object]) -> Callable[[typer.Context, typer.CallbackParam, T], T]:
    def callback(ctx: typer.Context, param: typer.CallbackParam, value: T) -> T:
        if ctx.resilient_parsing:  # completion or --help: nothing runs
            return value
        source = ctx.get_parameter_source(param.name) if param.name else None
        if source is not None and source.name in ("DEFAULT", "DEFAULT_MAP"):  # a default is not the user's
            return value
        try:
            _each(value, lambda v: check(v, flag_of(param)))
        except UsageError as e:
            raise OptionError(e, ctx) from None
        return value

    return callback


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           ) -> Callable[[typer.Context, typer.CallbackParam, Any], Any]:
    """The callback of a numeric option: finite, within [low, high] (``low_open``: above ``low``)."""

    def check(v: Any, flag: str) -> None:
        check_number(v, flag, low=low, high=high, low_open=low_open, integer=isinstance(v, int))

    return _checked(check)


port = _checked(check_port)
log_verbose = _checked(check_log_verbose)  # the words ServerOptions uses
model_version = _checked(lambda v, _flag: parse_version(v))  # the one version parser's words


def _blocking_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` that is not a directory (so nothing can be created
    below it), or None."""
    for parent in path.absolute().parents:
        if os.path.lexists(parent):
            return None if parent.is_dir() else parent
    return None


def check_output_dir(path: Path, flag: str) -> Path:
    """``path`` if results can be written under it: a directory, or nothing yet below a directory."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} '{path}' is not a directory", "give a directory (it is created if missing)")
    blocker = _blocking_ancestor(path)
    if blocker is not None:
        raise UsageError(f"{flag} '{path}' cannot be created: '{blocker}' is a file, not a directory",
                         "give a directory (it is created if missing)")
    return path


def check_output_file(path: Path, flag: str) -> Path:
    """``path`` if a file can be written there (the same rule and words as ``paths.open_for_writing``)."""
    return check_writable_file(path, flag)


output_dir = _checked(check_output_dir)
output_file = _checked(check_output_file)


def _url_port(text: str, port: str, flag: str) -> None:
    if port and port.isdigit():
        try:
            check_port(int(port), flag)
        except UsageError:
            raise UsageError(f"{flag} {shown(text)} has port {port}, which is not a port number",
                             f"use a port from 1 to 65535, e.g. {flag} 127.0.0.1:8000") from None


def _plain(text: str, flag: str) -> None:
    if any(c.isspace() or not c.isprintable() for c in text) or text.startswith("-"):
        raise UsageError(f"{flag} {shown(text)} is not a host address", f"write it like {flag} 127.0.0.1:8000")


def check_url(text: str, flag: str) -> str:
    """``HOST:PORT`` of a server (``http://`` or ``grpc://`` allowed), with a real port number."""
    _plain(text, flag)
    _url_port(text, normalize_url(text, flag).rpartition(":")[2], flag)
    return text


def check_host(text: str, flag: str) -> str:
    """``HOST[:PORT]`` of a server (validate, deploy: the ports may come from their own options)."""
    _plain(text.removeprefix("http://"), flag)
    if not text.endswith("]") and ":" in text.removeprefix("http://"):
        _url_port(text, text.rpartition(":")[2], flag)
    return text


url = _checked(check_url)
host = _checked(check_host)
