"""A guard process that stops a tritonserver, its Python backend stubs and their shared memory when
the process that owns the server dies without stopping it (SIGKILL, OOM kill, a crash).

``PR_SET_PDEATHSIG`` alone is not enough: while models are still loading, tritonserver has no
signal handler yet, so the SIGTERM kills it at once, and the ``triton_python_backend_stub``
processes it already started (they ignore SIGTERM and only watch their parent once their model is
initialised) live on with PPID 1, holding ``/dev/shm`` regions nobody removes. This guard outlives
the owner: the owner holds the write end of a pipe that is the guard's stdin, and its end of file
(the kernel closes it however the owner dies) is the signal to act.

It runs as ``python -I -S watchdog.py --workdir DIR PREFIX...``, so it imports nothing but the
standard library (no tritonops, no site packages: fast, and independent of the environment).
Commands on stdin, one per line: ``pid N`` (a server now runs as the leader of process group N),
``stopped`` (the owner stopped it itself), ``done`` (exit without doing anything). On end of file
without ``done`` it gives the server a grace period to shut down on the SIGTERM it got, kills
whatever is left in its process group as soon as the server is gone (or the grace period is over),
then removes the shared memory regions named with the server's prefixes and the work directory."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

GRACE_S = 35.0  # tritonserver's own --exit-timeout-secs is 30: a graceful stop gets that much
SHM_DIR = Path("/dev/shm")


def alive(pid: int) -> bool:
    """Running, and not a zombie (a zombie whose parent died may never be reaped in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``: a server and the stubs it started."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def remove_shm_regions(prefixes: Iterable[str]) -> list[str]:
    """Remove the shared memory files whose names start with one of ``prefixes``; returns their names.

    Each server gets prefixes of its own (``--backend-config=B,shm-region-prefix-name=P``), so this
    never touches the regions of another server on the machine."""
    removed = []
    for prefix in prefixes:
        if not prefix or "/" in prefix:
            continue
        for f in SHM_DIR.glob(f"{prefix}*"):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                removed.append(f.name)
    return removed


def kill_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL every process of the group until none is left (stubs ignore SIGTERM)."""
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.05)


def stop_abandoned(pgid: int, grace: float = GRACE_S) -> None:
    """The owner died: the server got SIGTERM from its death signal. Let it stop gracefully (it then
    stops its stubs and removes their regions), but not a moment after it is gone itself: stubs it
    left behind are never told to stop."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pgid) and group_members(pgid):
        time.sleep(0.1)
    kill_group(pgid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="stop a tritonserver whose owner died")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--grace", type=float, default=GRACE_S)
    parser.add_argument("prefixes", nargs="*")
    args = parser.parse_args(argv)
    # Ctrl-C in the terminal reaches the owner; the owner's stop, not the guard, handles it.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    pgid = 0
    pending = b""
    while True:
        try:
            chunk = os.read(0, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            word, _, arg = line.decode("ascii", "replace").strip().partition(" ")
            if word == "done":
                return 0
            if word == "pid" and arg.isdigit():
                pgid = int(arg)
            elif word == "stopped":
                pgid = 0
    if pgid:
        stop_abandoned(pgid, args.grace)
    remove_shm_regions(args.prefixes)
    if args.workdir is not None:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
