"""Every command, every option that takes a path, a number, a name or a URL, with the classes of bad
values users and attackers give (issue 14): each run ends with one error line (and at most a hint),
a non-zero exit that is not 70 (an internal error), no traceback, and nothing changed on disk.

Commands and options are discovered from the typer app, so a new option is walked without editing this
file; only each command's *base* command line (valid apart from the value under test) is written here,
and a command without one fails ``test_every_command_has_a_base``. Nothing needs a server: the bases
point at closed ports and a tritonserver that does not exist, so a value that slipped through would
show as a different error (or as a change on disk), never as a hang.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import signal
import socket
import sys
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main

from tritonops.cli import app, main
from tritonops.envelope import INTERNAL_ERROR_EXIT_CODE

IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"
CASE_SECONDS = 30  # one case; a hang is killed and fails the case
CASE_MEMORY = 3 << 30  # address space one case may add: reading /dev/zero becomes a MemoryError, not an OOM kill


def _closed_port() -> tuple[socket.socket, int]:
    """A port nothing listens on for the whole run: bound here and never listened on, so connections are
    refused and no server started later in the session (the session server, a test's own) can take it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, int(s.getsockname()[1])


_CLOSED_SOCKET, CLOSED = _closed_port()
# The base command line of every command: valid apart from the value under test ("{onnx}": a real
# model file; paths relative to the case's directory).
BASES: dict[str, tuple[list[str], dict[str, str]]] = {
    "build": (["{onnx}"], {"--repo": "repo"}),
    "check": (["repo"], {}),
    "inspect": (["{onnx}"], {}),
    "doctor": ([], {}),
    "serve": (["repo"], {"--tritonserver": "no-tritonserver"}),
    "validate": ([], {"--url": "127.0.0.1", "--http-port": str(CLOSED), "--grpc-port": str(CLOSED)}),
    "perf": (["m"], {"--url": f"127.0.0.1:{CLOSED}", "--output-dir": "results"}),
    "loadtest": (["m"], {"--rate": "10", "--url": f"127.0.0.1:{CLOSED}", "--output-dir": "results"}),
    "study protocols": (["m"], {"--url": f"127.0.0.1:{CLOSED}", "--output-dir": "results"}),
    "study config": (["m"], {"--serve": "repo", "--output-dir": "results"}),
    "deploy": (["repo"], {"--target": "compose", "--image": IMAGE, "--out": "manifests"}),
    "tune": (["m"], {"--url": f"127.0.0.1:{CLOSED}", "--p99-ms": "20", "--output-dir": "results"}),
}

# What kind of value a parameter takes, from its type and name (not a list of options).
OUTPUT_DIRS = {"output_dir", "out", "repo"}  # build --repo is created when missing
OUTPUT_FILES = {"log_file", "debug_log"}
DIRECTORIES = {"repository", "serve", "to"}  # input paths that are directories
NAMES = {"name", "model", "load_model", "namespace", "variant", "storage_secret", "storage_class"}
URLS = {"url", "grpc_url"}

BAD_NUMBERS = ["nan", "inf", "-inf", "-1", "1e30", str(10**30)]
BAD_NAMES = ["a/b", "..", "../escape", "x\ny", "", "/etc"]
BAD_URLS = ["ftp://h:1", "127.0.0.1:70000", "127.0.0.1:abc", "a b:1", "h\n:1", "-h:1"]


@dataclass(frozen=True)
class Case:
    command: str
    flag: str | None  # None: the command's argument
    param: str
    value: str

    @property
    def id(self) -> str:
        return f"{self.command}:{self.flag or self.param.upper()}={self.value!r}"


def _commands() -> Iterator[tuple[str, typer.main.TyperCommand]]:
    root = typer.main.get_command(app)

    def walk(group, prefix: str):  # type: ignore[no-untyped-def]
        for name, cmd in group.commands.items():
            path = f"{prefix} {name}".strip()
            if hasattr(cmd, "commands"):
                yield from walk(cmd, path)
            else:
                yield path, cmd

    yield from walk(root, "")


def _kind(param) -> str | None:  # type: ignore[no-untyped-def]
    name, annotation = param.name, param.type_descriptor.annotation
    inner = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else annotation
    if inner in (int, float):
        return "number"
    if name in OUTPUT_DIRS:
        return "output-dir"
    if name in OUTPUT_FILES:
        return "output-file"
    if inner is Path:
        return "directory" if name in DIRECTORIES else "file"
    if name in URLS:
        return "url"
    if name in NAMES:
        return "name"
    return None


def _values(kind: str) -> list[str]:
    return {
        "number": BAD_NUMBERS,
        "name": BAD_NAMES,
        "url": BAD_URLS,
        "output-dir": ["{file}", "{file}/sub", "{fifo}", "/dev/zero"],
        "output-file": ["{dir}", "{fifo}", "/dev/zero", "{file}/sub"],
        "directory": ["{missing}", "{file}", "{fifo}", "/dev/zero"],
        "file": ["{missing}", "{fifo}", "/dev/zero", "{dir}", "{latin1}"],
    }[kind]


def _cases() -> list[Case]:
    cases = []
    for command, cmd in _commands():
        for param in cmd.params:
            if param.name in ("help", "as_json") or getattr(param, "is_flag", False):
                continue
            kind = _kind(param)
            if kind is None:
                continue
            flag = None if param.param_type_name == "argument" else max(param.opts, key=len)
            cases.extend(Case(command, flag, param.name, v) for v in _values(kind))
    # The global options belong to every command: walk them on one.
    root = typer.main.get_command(app)
    for param in root.params:
        kind = _kind(param)
        if kind is not None and not getattr(param, "is_flag", False):
            cases.extend(Case("doctor", max(param.opts, key=len), param.name, v) for v in _values(kind))
    return cases


CASES = _cases()


def test_every_command_has_a_base():
    assert {c for c, _ in _commands()} == set(BASES)


def test_the_walk_covers_every_kind_of_value():
    kinds = {(c.command, c.param) for c in CASES}
    assert ("loadtest", "rate") in kinds and ("validate", "http_port") in kinds
    assert ("perf", "output_dir") in kinds and ("serve", "log_file") in kinds
    assert len(CASES) > 300


def _digest(root: Path) -> dict[str, str]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in (*dirnames, *filenames):
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if p.is_symlink() or not p.is_file():
                found[rel] = "dir" if p.is_dir() else "special"
            else:
                found[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def _argv(case: Case, places: dict[str, str]) -> list[str]:
    args, opts = BASES[case.command]
    args, opts = list(args), dict(opts)
    value = case.value.format(**places)
    if case.flag is None:
        position = [p.name for p in dict(_commands())[case.command].params
                    if p.param_type_name == "argument"].index(case.param)
        args = args + ["x"] * (position + 1 - len(args))
        args[position] = value
        extra: list[str] = []
    elif case.command == "doctor" and case.flag in {o for p in typer.main.get_command(app).params
                                                    for o in p.opts}:
        return [case.flag, value, case.command]
    else:
        opts.pop(case.flag, None)
        extra = [case.flag, value]
    line = [a.format(**places) for a in args] + [x for k, v in opts.items() for x in (k, v.format(**places))]
    return case.command.split() + line + extra


def run_isolated(argv: list[str]) -> tuple[int, str, str]:
    """The CLI in a forked child with a memory limit and a deadline: a value that makes a reader block
    (a FIFO) or grow without bound (/dev/zero) fails its case instead of the whole walk."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, send (code, out, err) back, exit without running pytest's cleanup
        code, out, err = INTERNAL_ERROR_EXIT_CODE, "", ""
        try:
            os.close(read_fd)
            limits = resource.getrlimit(resource.RLIMIT_AS)
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * resource.getpagesize()
            resource.setrlimit(resource.RLIMIT_AS, (used + CASE_MEMORY, limits[1]))
            sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
            code = main(argv)
            out, err = sys.stdout.getvalue(), sys.stderr.getvalue()
        except BaseException as e:
            err = f"the walk's child failed: {type(e).__name__}: {e}"
        finally:
            with os.fdopen(write_fd, "w") as w:
                json.dump([code, out, err], w)
            os._exit(0)
    os.close(write_fd)
    deadline = time.monotonic() + CASE_SECONDS
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        return INTERNAL_ERROR_EXIT_CODE, "", f"error: no answer in {CASE_SECONDS} s (killed)"
    with os.fdopen(read_fd) as r:
        text = r.read()
    return tuple(json.loads(text)) if text else (INTERNAL_ERROR_EXIT_CODE, "", "error: the child died")  # type: ignore[return-value]


@pytest.fixture
def place(tmp_path, monkeypatch, mlp_onnx):
    (tmp_path / "repo").mkdir()
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "latin1.onnx").write_bytes("caf\xe9 \xff\xfe not UTF-8 and not a model".encode("latin-1"))
    os.mkfifo(tmp_path / "a-fifo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRITONSERVER", str(tmp_path / "no-tritonserver"))
    return tmp_path, {"onnx": str(mlp_onnx), "file": str(tmp_path / "a-file"), "dir": str(tmp_path / "a-dir"),
                      "fifo": str(tmp_path / "a-fifo"), "missing": str(tmp_path / "missing"),
                      "latin1": str(tmp_path / "latin1.onnx")}


def _params() -> list[object]:
    return [pytest.param(c, id=c.id) for c in CASES]


@pytest.mark.parametrize("case", _params())
def test_bad_value(place, case):
    root, places = place
    before = _digest(root)
    argv = _argv(case, places)
    code, out, err = run_isolated(argv)
    lines = err.strip().splitlines()
    assert code != 0, f"{argv} was accepted:\n{out}{err}"
    assert code != INTERNAL_ERROR_EXIT_CODE, f"{argv}: internal error\n{err}"
    assert "Traceback" not in err and "Traceback" not in out
    assert lines and lines[0].startswith("error: "), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), err
    assert _digest(root) == before, f"{argv} changed the files under {root}"
