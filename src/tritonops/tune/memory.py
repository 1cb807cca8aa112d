"""The server's memory for ``tune --max-memory-mb``: the resident memory (RSS, from ``/proc``) of
tritonserver plus its child processes (the Python backend stubs, one per model instance), sampled
while a candidate is loaded and under load; a measurement records the peak.

A server tune started itself (``--serve``) is known by its pid. For ``--url`` on this machine (a
loopback address) the server is the process listening on the HTTP port. Triton's metrics endpoint
gives only the machine's memory (``nv_cpu_memory_used_bytes``, the same number for every process),
not the server's, so the memory of a server on another machine cannot be measured: that is refused
before anything is measured.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tritonops.client import host_of
from tritonops.errors import UsageError

SAMPLE_INTERVAL_S = 0.2
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
TCP_LISTEN = "0A"  # the st column of /proc/net/tcp


def rss_kb(pid: int) -> int | None:
    """VmRSS of one process, or None when it is gone (or not ours to read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def tree_rss_mb(pid: int) -> float | None:
    """RSS of ``pid`` and all its descendants in MB (shared pages count once per process, as RSS does)."""
    own = rss_kb(pid)
    if own is None:
        return None
    total, todo, seen = own, children(pid), {pid}
    while todo:
        child = todo.pop()
        if child in seen:
            continue
        seen.add(child)
        total += rss_kb(child) or 0
        todo.extend(children(child))
    return total / 1024.0


@dataclass(frozen=True)
class MemoryProbe:
    """The memory of the server process ``pid`` and its stubs."""

    pid: int
    source: str  # how the server was found, for the result

    def sample_mb(self) -> float | None:
        return tree_rss_mb(self.pid)


class PeakMemory:
    """Samples a probe in a thread while the block runs; ``mb`` is the highest sample (None without a probe)."""

    def __init__(self, probe: MemoryProbe | None) -> None:
        self.probe = probe
        self.mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        assert self.probe is not None
        v = self.probe.sample_mb()
        if v is not None:
            self.mb = v if self.mb is None else max(self.mb, v)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._sample()

    def __enter__(self) -> PeakMemory:
        if self.probe is not None:
            self._sample()
            self._thread = threading.Thread(target=self._run, name="tune-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()


def _socket_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (IPv4 and IPv6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == TCP_LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    found.add(cols[9])
    return found


def listening_pid(port: int) -> int | None:
    """The process (of this user: others' file descriptors cannot be read) listening on ``port``."""
    inodes = {f"socket:[{i}]" for i in _socket_inodes(port)}
    if not inodes:
        return None
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (d / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if str(fd.readlink()) in inodes:
                        return int(d.name)
    return None


def process_command(pid: int) -> str:
    """The command line of process ``pid`` as one string ("" when it is gone or not readable)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def memory_probe(http_url: str, server_pid: int | None) -> MemoryProbe:
    """How to measure the server's memory, or a UsageError saying why it cannot be measured."""
    if server_pid is not None:
        return MemoryProbe(server_pid, "the tritonserver process tune started, and its stubs")
    host = host_of(http_url)
    hint = "run tune on the server's machine (--url 127.0.0.1:PORT) or with --serve REPO, or drop --max-memory-mb"
    if host not in LOOPBACK:
        raise UsageError(f"--max-memory-mb: the memory of the server at {http_url} cannot be measured: it is not on "
                         "this machine, and Triton's metrics give only the machine's memory "
                         "(nv_cpu_memory_used_bytes), not the server's", hint)
    port = int(http_url.rpartition(":")[2])
    pid = listening_pid(port)
    if pid is None or "tritonserver" not in process_command(pid):
        raise UsageError(f"--max-memory-mb: no tritonserver process of this user listens on port {port}, so the "
                         "server's memory cannot be measured", hint)
    return MemoryProbe(pid, f"tritonserver pid {pid} (listening on port {port}), and its stubs")
