from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

from served import SessionServer, session_server  # noqa: E402  (tests/ is on sys.path from here on)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and directory under root with a hash of its bytes: 'byte-for-byte unchanged'."""
    result: dict[str, str] = {}
    if not root.exists():
        return result
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        result[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return result


@pytest.fixture
def digest():
    return tree_digest


@pytest.fixture
def mlp_onnx(tmp_path: Path) -> Path:
    import onnx_models

    return onnx_models.mlp(tmp_path / "src" / "mlp.onnx")


@pytest.fixture
def cli(capsys):
    """Run the real CLI entry point in-process; returns (exit_code, stdout, stderr)."""
    from tritonops.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


# ---------------------------------------------------------------- the session server


SESSION_FIXTURE = "triton_session"
_LOG_DIR: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """The CLI writes a debug log per run: the tests keep theirs out of the user's state directory."""
    if "TRITONOPS_LOG_DIR" not in os.environ:
        _LOG_DIR.append(tempfile.mkdtemp(prefix="tritonops-test-logs-"))
        os.environ["TRITONOPS_LOG_DIR"] = _LOG_DIR[0]
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_WorkerStarts(), "tritonops-worker-starts")


def pytest_unconfigure(config: pytest.Config) -> None:
    for d in _LOG_DIR:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def triton_session(tmp_path_factory) -> Iterator[SessionServer]:
    """One real tritonserver (explicit model control) per test process (each xdist worker has its
    own) for every module that only needs "a server with model X"; a module lends it its models with
    ``triton_session.models(repo)``."""
    with session_server(tmp_path_factory.mktemp("session_repository")) as server:
        yield server


# ---------------------------------------------------------------- markers that gate


def _no_gpu_reason() -> str | None:
    """Why GPU tests cannot run here, or None when an NVIDIA GPU is present."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        gpus = Path("/proc/driver/nvidia/gpus")
        if gpus.is_dir() and any(gpus.iterdir()):
            return None
        return "no NVIDIA GPU on this machine (no nvidia-smi, no /proc/driver/nvidia/gpus)"
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"no usable NVIDIA GPU: nvidia-smi -L failed ({e})"
    if listed.returncode != 0 or not any(line.startswith("GPU ") for line in listed.stdout.splitlines()):
        return f"no NVIDIA GPU on this machine (nvidia-smi -L: {(listed.stdout + listed.stderr).strip()[:200]})"
    return None


def _no_torch_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "needs the torch extra (pip install 'tritonops[torch]'), torch is not installed"
    return None


@pytest.hookimpl(tryfirst=True)  # before -m deselects: it must see the server marks added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that uses the session server is a server test; gpu and torch tests skip, with the
    reason, where the machine cannot run them."""
    gated = [item for item in items if item.get_closest_marker("gpu") or item.get_closest_marker("torch")]
    no_gpu = _no_gpu_reason() if any(i.get_closest_marker("gpu") for i in gated) else None
    no_torch = _no_torch_reason() if any(i.get_closest_marker("torch") for i in gated) else None
    for item in items:
        if SESSION_FIXTURE in getattr(item, "fixturenames", ()) and not item.get_closest_marker("server"):
            item.add_marker(pytest.mark.server)
        if no_gpu and item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.skip(reason=no_gpu))
        if no_torch and item.get_closest_marker("torch"):
            item.add_marker(pytest.mark.skip(reason=no_torch))


# ---------------------------------------------------------------- how many servers a run starts


_server_starts: Counter[tuple[bool, str]] = Counter()  # (a lifecycle test, its file) -> starts
_current = [(False, "(outside tests)")]


def _count_tritonserver(event: str, args: tuple) -> None:
    # An audit hook sees every Popen of this process, the library's and the CLI's alike, without
    # patching anything. Servers started by child processes (a `tritonops serve` subprocess) are not seen.
    if event == "subprocess.Popen" and args and args[1]:
        argv = args[1]
        first = argv[0] if isinstance(argv, list | tuple) else argv
        if os.path.basename(os.fsdecode(first)) == "tritonserver":
            _server_starts[_current[0]] += 1


sys.addaudithook(_count_tritonserver)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    _current[0] = (item.get_closest_marker("lifecycle") is not None, item.nodeid.split("::", 1)[0])
    yield


class _WorkerStarts:
    """Under pytest-xdist (scripts/test.sh runs two workers) each worker counts its own starts; they
    reach the controller, which prints the summary, in the worker's ``workeroutput``."""

    @pytest.hookimpl
    def pytest_testnodedown(self, node, error) -> None:
        for lifecycle, path, n in getattr(node, "workeroutput", {}).get("tritonserver_starts", []):
            _server_starts[(bool(lifecycle), str(path))] += int(n)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    output = getattr(session.config, "workeroutput", None)  # set in an xdist worker only
    if output is not None:
        output["tritonserver_starts"] = [[lc, path, n] for (lc, path), n in _server_starts.items()]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """How many tritonservers the run started: by the lifecycle tests (whose subject is a server's
    start, stop or death, so they need their own) and by the rest (which should share the session's)."""
    total = sum(_server_starts.values())
    if not total:
        return
    parts = []
    for lifecycle, what in ((True, "by lifecycle tests"), (False, "by the other tests")):
        mine = {f: n for (lc, f), n in sorted(_server_starts.items()) if lc == lifecycle}
        if mine:
            per_file = ", ".join(f"{f}: {n}" for f, n in mine.items())
            parts.append(f"{sum(mine.values())} {what} ({per_file})")
    terminalreporter.write_line(f"tritonserver processes started by this run's test processes: {total}: "
                                f"{'; '.join(parts)}")
