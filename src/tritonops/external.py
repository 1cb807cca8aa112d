"""The one way tritonops runs external programs (perf_analyzer, locust, ...).

Output is captured (stdout and stderr together), optionally handed line by line to a callback, and a
failure becomes ``ExternalToolError(cmd, returncode, output_tail)``. The child runs in its own
session so a terminal's Ctrl-C reaches tritonops first; tritonops then forwards SIGINT to the child's
process group, waits for it to write what it has, and re-raises ``KeyboardInterrupt``. Nothing is
left running when this returns or raises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tritonops.errors import ExternalToolError, UsageError

TAIL_LINES = 40
TIMEOUT_RETURNCODE = 124


@dataclass(frozen=True)
class ToolRun:
    cmd: tuple[str, ...]
    returncode: int
    output: str
    seconds: float

    @property
    def tail(self) -> str:
        return output_tail(self.output)


def output_tail(output: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(output.rstrip().splitlines()[-lines:])


def _stop_group(proc: subprocess.Popen[str], first: int, grace_s: float) -> None:
    """Signal the child's process group, then escalate to SIGTERM and SIGKILL."""
    for sig, wait_s in ((first, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _spawn(argv: tuple[str, ...], env: Mapping[str, str] | None, cwd: Path | None, hint: str | None,
           on_line: Callable[[str], None] | None) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    """Start ``argv`` in its own session with a thread collecting its output lines."""
    try:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            errors="replace", env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )
    except OSError as e:
        raise UsageError(f"cannot run {argv[0]}: {e.strerror}",
                         hint or "check that it is installed (tritonops doctor)") from None
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))

    reader = threading.Thread(target=pump, name=f"output of {Path(argv[0]).name}", daemon=True)
    reader.start()
    return proc, lines, reader


def run_tool(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float | None = None,
    check: bool = True,
    hint: str | None = None,
    on_line: Callable[[str], None] | None = None,
    interrupt_grace_s: float = 15.0,
) -> ToolRun:
    """Run ``cmd`` to completion and return its output; raise ExternalToolError when it fails
    (``check``), runs past ``timeout_s`` (return code 124) or cannot be started."""
    argv = tuple(str(c) for c in cmd)
    start = time.monotonic()
    proc, lines, reader = _spawn(argv, env, cwd, hint, on_line)
    try:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc, signal.SIGTERM, 5.0)
            reader.join(timeout=5)
            out = "".join(lines)
            raise ExternalToolError(
                argv, TIMEOUT_RETURNCODE, output_tail(out),
                hint or f"it ran longer than {timeout_s:g} s and was stopped",
            ) from None
    except KeyboardInterrupt:
        # Let the tool finish its current report (perf_analyzer and locust both handle SIGINT).
        _stop_group(proc, signal.SIGINT, interrupt_grace_s)
        reader.join(timeout=5)
        raise
    finally:
        if proc.poll() is None:  # only on an unexpected exception above
            _stop_group(proc, signal.SIGKILL, 5.0)
    reader.join(timeout=10)
    out = "".join(lines)
    run = ToolRun(argv, proc.returncode, out, time.monotonic() - start)
    if check and proc.returncode != 0:
        raise ExternalToolError(argv, proc.returncode, run.tail, hint)
    return run


def run_tools(cmds: Sequence[Sequence[str | os.PathLike[str]]], envs: Sequence[Mapping[str, str] | None], *,
              timeout_s: float | None = None, interrupt_grace_s: float = 15.0) -> list[ToolRun]:
    """Run several programs at once (e.g. N load-generator processes) and wait for all of them, with
    run_tool's guarantees: a Ctrl-C is forwarded to every one (SIGINT, then SIGTERM and SIGKILL) before
    ``KeyboardInterrupt`` is re-raised, one running past ``timeout_s`` is stopped (return code 124), and
    nothing is left running. Return codes are not checked: the caller reads what they wrote."""
    start = time.monotonic()
    started: list[tuple[tuple[str, ...], subprocess.Popen[str], list[str], threading.Thread]] = []
    try:
        for cmd, env in zip(cmds, envs, strict=True):
            argv = tuple(str(c) for c in cmd)
            started.append((argv, *_spawn(argv, env, None, None, None)))
        timed_out: set[int] = set()
        for i, (_, proc, _, _) in enumerate(started):
            left = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - start))
            try:
                proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                _stop_group(proc, signal.SIGTERM, 5.0)
                timed_out.add(i)
    except KeyboardInterrupt:
        for _, proc, _, _ in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + interrupt_grace_s  # one grace period for all: they stop at once
        for _, proc, _, _ in started:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _stop_group(proc, signal.SIGTERM, 5.0)
        raise
    finally:
        for _, proc, _, _ in started:
            if proc.poll() is None:  # only on an unexpected exception above
                _stop_group(proc, signal.SIGKILL, 5.0)
    runs = []
    for i, (argv, proc, lines, reader) in enumerate(started):
        reader.join(timeout=10)
        code = TIMEOUT_RETURNCODE if i in timed_out else proc.returncode
        runs.append(ToolRun(argv, code, "".join(lines), time.monotonic() - start))
    return runs
