"""The one tritonserver lifecycle, used by ``serve``, ``validate --serve``, ``deploy``, perf and tests.

``TritonServer`` is a context manager: it refuses busy ports, starts the real server in its own
session with the log in a file, waits for readiness while watching the process, and on exit
terminates, waits and kills. The child gets ``PR_SET_PDEATHSIG`` so it dies with its parent even
when the parent is SIGKILLed, and a guard process (``tritonops.watchdog``) that outlives the parent
then kills the Python backend stubs such a server leaves behind while models are still loading, and
removes their shared memory: no orphaned servers or stubs, in any window.

Options are checked at construction: ports, the bind address (``check_bind_host``: an address of
this machine; all interfaces only with ``bind_warning``), log verbosity, and model names (one
containment check, ``tritonops.paths``)."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from tritonops import watchdog
from tritonops.errors import ServerError, UsageError
from tritonops.netaddr import (
    WILDCARD_HOSTS,
    check_bind_host,
    check_port,
    check_port_free,
    free_port,
)
from tritonops.paths import check_name, model_directory, open_for_writing, read_text

BACKENDS_DIR = Path(__file__).parent / "backends"
FALLBACK_BACKENDS = ("onnxruntime", "pytorch")
_PR_SET_PDEATHSIG = 1
LOG_VERBOSE_LEVELS = range(3)  # what --help promises; Triton itself takes any integer


def check_log_verbose(level: int, flag: str = "--log-verbose") -> int:
    """``level`` if it is a verbosity --help promises (0-2); Triton itself would take any integer."""
    if isinstance(level, bool) or level not in LOG_VERBOSE_LEVELS:
        raise UsageError(f"{flag} {level} is not a verbosity level", "use 0 (default), 1 or 2")
    return level


@dataclass(frozen=True)
class ServerOptions:
    repository: Path
    host: str = "127.0.0.1"
    http_port: int = 0  # 0 = a free port
    grpc_port: int = 0
    metrics_port: int = 0
    explicit: bool = False
    load_models: tuple[str, ...] = ()
    cache_size_bytes: int | None = None
    python_shm_bytes: int | None = None
    log_verbose: int = 0
    log_file: Path | None = None
    tritonserver: Path | None = None
    startup_timeout: float = 180.0
    strict_readiness: bool = True
    exit_on_error: bool = True  # False: start even when some models fail (see model_states())
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_bind_host(self.host)
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port, "--metrics-port": self.metrics_port}
        for flag, port in ports.items():
            check_port(port, flag)
        used = [p for p in ports.values() if p]
        if len(used) != len(set(used)):
            raise UsageError("the HTTP, gRPC and metrics ports must differ",
                             "give each its own port (or 0 for a free one)")
        if self.startup_timeout <= 0:
            raise UsageError(f"start-up timeout {self.startup_timeout} s is not positive",
                             "use a timeout in seconds > 0")
        if self.load_models and not self.explicit:
            raise UsageError("--load-model needs explicit model control", "add --explicit")
        if "*" in self.load_models and len(self.load_models) > 1:
            raise UsageError("--load-model '*' loads every model and cannot be combined with names",
                             "give either '*' or model names")
        for name in self.load_models:
            if name != "*":
                check_name(name, "--load-model", "give the name of a model directory in the repository")
        check_log_verbose(self.log_verbose)
        if self.cache_size_bytes is not None and self.cache_size_bytes < 1024:
            raise UsageError(f"cache size {self.cache_size_bytes} bytes is too small",
                             "Triton's local cache needs at least 1 KB, e.g. --cache-size 64MB")

    @property
    def bind_warning(self) -> str | None:
        """What to tell the user about ``host`` before serving: None on loopback."""
        return check_bind_host(self.host)

    def check_models(self) -> None:
        """Every ``load_models`` name is a model directory inside the repository (symlinks resolved):
        a name that is not there is an error, not a model Triton silently skips."""
        for name in self.load_models:
            if name != "*":
                model_directory(self.repository, name, "--load-model")


@dataclass(frozen=True)
class ModelState:
    name: str
    version: str
    state: str
    reason: str


@dataclass(frozen=True)
class _Pytriton:
    binary: Path
    libs: Path | None
    python_backend: Path | None
    stubs: Path | None
    caches: Path | None


def _site_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).parent


def _pytriton() -> _Pytriton | None:
    site = _site_root()
    if site is None:
        return None
    base = site / "pytriton" / "tritonserver"
    binary = base / "bin" / "tritonserver"
    if not binary.exists():
        return None
    return _Pytriton(binary, site / "nvidia_pytriton.libs", base / "backends" / "python",
                     base / "python_backend_stubs", base / "caches")


def find_tritonserver(explicit: Path | None = None) -> Path:
    """The server binary: explicit path, else $TRITONSERVER, else the nvidia-pytriton wheel's."""
    for candidate, what in ((explicit, "--tritonserver"), (os.environ.get("TRITONSERVER"), "$TRITONSERVER")):
        if candidate:
            p = Path(candidate)
            if not p.is_file() or not os.access(p, os.X_OK):
                raise ServerError(f"{what} '{p}' is not an executable file",
                                  "give the path of a tritonserver binary")
            return p
    pt = _pytriton()
    if pt is not None:
        return pt.binary
    found = shutil.which("tritonserver")
    if found:
        return Path(found)
    raise ServerError("no tritonserver binary found",
                      "run the README's set-up (it installs nvidia-pytriton), "
                      "or set TRITONSERVER=/path/to/tritonserver")


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when its parent dies, even by SIGKILL.

    libc is resolved here, in the parent: the child between fork and exec must only make the
    prctl call. The death signal follows the *thread* that forked, so the server must be started
    from a thread that outlives it (the ``with`` block's own thread does)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl: nobody would stop this server
            os._exit(1)

    return child


def _native_backend_dir(binary: Path) -> Path | None:
    """Where this binary's own backends live (a real installation: /opt/tritonserver/backends).

    The pytriton wheel's binary ships only the python backend; backends of some other Triton
    installation on the machine must not be mixed with it (their ABI follows their own server)."""
    real = binary.resolve()
    candidates = [real.parent.parent / "backends"]
    pt = _pytriton()
    if pt is None or real != pt.binary.resolve():
        candidates.append(Path("/opt/tritonserver/backends"))
    for d in candidates:
        if d.is_dir() and any((d / n / f"libtriton_{n}.so").exists() for n in (*FALLBACK_BACKENDS, "python")):
            return d
    return None


def _stub_for_running_python(pt: _Pytriton) -> Path | None:
    if pt.stubs is None:
        return None
    stub = pt.stubs / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    return stub if stub.exists() else None


def _link_or_copy(src: Path, dst: Path) -> None:
    # Triton refuses backend libraries whose real path escapes the backend directory, so no
    # symlinks: a hard link where possible (free), else a copy (a few MB).
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _assemble_backends(binary: Path, workdir: Path) -> tuple[Path, tuple[str, ...]]:
    """A backend directory: the Python backend plus tritonops' Python-based CPU backends for each
    backend the server does not ship (the pytriton build ships none but python)."""
    native = _native_backend_dir(binary)
    pt = _pytriton()
    target = workdir / "backends"
    target.mkdir()
    fallbacks: list[str] = []
    if native is not None:
        for d in native.iterdir():
            # A symlinked backend *directory* is accepted (only library files may not escape it).
            if not d.is_dir() or (d.name in FALLBACK_BACKENDS and not (d / f"libtriton_{d.name}.so").exists()):
                continue
            if d.name == "python" and not (d / "triton_python_backend_stub").exists():
                continue  # the pytriton wheel keeps its stubs apart, per Python version: assembled below
            (target / d.name).symlink_to(d)
    if not (target / "python").exists():
        if pt is None or pt.python_backend is None or not pt.python_backend.exists():
            raise ServerError("the Python backend was not found", "reinstall nvidia-pytriton (README set-up)")
        stub = _stub_for_running_python(pt)
        if stub is None:
            raise ServerError(f"no Python backend stub for Python {sys.version_info.major}.{sys.version_info.minor}",
                              "use Python 3.8-3.13")
        (target / "python").mkdir()
        for f in pt.python_backend.iterdir():
            if f.is_file():
                _link_or_copy(f, target / "python" / f.name)
        _link_or_copy(stub, target / "python" / "triton_python_backend_stub")
    stub_path = target / "python" / "triton_python_backend_stub"
    for name in FALLBACK_BACKENDS:
        if (target / name).exists():
            continue
        (target / name).mkdir()
        _link_or_copy(BACKENDS_DIR / name / "model.py", target / name / "model.py")
        for shared in ("_batching.py", "_sequences.py"):  # the modules model.py loads from beside itself
            _link_or_copy(BACKENDS_DIR / shared, target / name / shared)
        _link_or_copy(stub_path, target / name / "triton_python_backend_stub")
        fallbacks.append(name)
    return target, tuple(fallbacks)


_WORKDIR_PREFIX = "tritonops-server-"


def _remove_stale_workdirs() -> None:
    """Backend directories of servers whose parent was killed (it could not clean up)."""
    for d in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*-*"):
        pid = d.name[len(_WORKDIR_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not d.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _environment(repository: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The fallback ORT backend's auto-complete gets no paths from Triton; it finds models here.
    env["TRITONOPS_MODEL_REPOSITORIES"] = str(repository.absolute())
    libs = []
    pt = _pytriton()
    if pt is not None and pt.libs is not None:
        libs.append(str(pt.libs))
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        libs.append(libdir)
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    # The Python backend stub runs the first python3 on PATH: make it this environment's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


_FAILED_LOAD = re.compile(r"failed to load '([^']+)' version \d+: (.*)")
_FAILED_SERVICE = re.compile(r"failed to start (\w+) service: (.*?)\s*\"?$")
_POLL_FAILED = re.compile(r"Poll failed for model directory '([^']+)': (.*?)\s*\"?$")
_LOG_READ_LIMIT = 8 << 20  # the end of the log is what failure messages need
_CONFIG_READ_LIMIT = 16 << 20


class TritonServer:
    """A real tritonserver for the lifetime of a ``with`` block."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log_handle: BinaryIO | None = None
        self.fallback_backends: tuple[str, ...] = ()
        self.http_port = self.grpc_port = self.metrics_port = 0
        self.log_path = Path()
        self._temporary_log = False
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._guard_fd = -1
        self._shm_prefixes: dict[str, str] = {}  # backend -> this server's shm region prefix

    # ----------------------------------------------------------------- endpoints
    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"{self._client_host}:{self.metrics_port}"

    @property
    def _client_host(self) -> str:
        host = self.options.host
        if host in (*WILDCARD_HOSTS, ""):
            return "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else -1

    # ----------------------------------------------------------------- lifecycle
    def command(self, backend_dir: Path) -> list[str]:
        o = self.options
        cmd = [
            str(find_tritonserver(o.tritonserver)),
            f"--model-repository={o.repository.absolute()}",
            f"--backend-directory={backend_dir}",
            f"--http-address={o.host}", f"--grpc-address={o.host}",
            f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--exit-on-error={'true' if o.exit_on_error else 'false'}",
            f"--strict-readiness={'true' if o.strict_readiness else 'false'}",
            f"--log-verbose={o.log_verbose}",
        ]
        pt = _pytriton()
        if o.cache_size_bytes:
            if pt is not None and pt.caches is not None:
                cmd.append(f"--cache-directory={pt.caches}")
            cmd.append(f"--cache-config=local,size={o.cache_size_bytes}")
        if o.python_shm_bytes:
            cmd.append(f"--backend-config=python,shm-default-byte-size={o.python_shm_bytes}")
        # Regions named for this server only, so that after a crash exactly its own can be removed.
        cmd.extend(f"--backend-config={backend},shm-region-prefix-name={prefix}"
                   for backend, prefix in self._shm_prefixes.items())
        if o.explicit:
            cmd.append("--model-control-mode=explicit")
            cmd.extend(f"--load-model={m}" for m in o.load_models)
        cmd.extend(o.extra_args)
        return cmd

    def __enter__(self) -> TritonServer:
        o = self.options
        repo = o.repository
        if not repo.is_dir():
            raise UsageError(f"model repository '{repo}' does not exist or is not a directory",
                             "build a model first: tritonops build MODEL --repo DIR")
        o.check_models()
        for flag, port in (("--http-port", o.http_port), ("--grpc-port", o.grpc_port),
                           ("--metrics-port", o.metrics_port)):
            if port:
                check_port_free(o.host, port, flag)
        binary = find_tritonserver(o.tritonserver)
        _remove_stale_workdirs()
        self._workdir = Path(tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}-"))
        try:
            backend_dir, self.fallback_backends = _assemble_backends(binary, self._workdir)
            token = secrets.token_hex(6)
            self._shm_prefixes = {backend: f"tritonops_{token}_{backend}_shm_region_"
                                  for backend in ("python", *self.fallback_backends)}
            self._start_watchdog()
            if o.log_file is not None:
                self.log_path = o.log_file
                open_for_writing(self.log_path, "--log-file", create_parents=True).close()
            else:  # outside the work dir: a failure's message points at it, and it is kept then
                fd, name = tempfile.mkstemp(prefix=f"tritonserver-{os.getpid()}-", suffix=".log")
                os.close(fd)
                self.log_path = Path(name)
                self._temporary_log = True
            # A free port picked here can be taken by someone else before the server binds it:
            # then start again on other free ports (never for ports the user chose).
            auto_ports = not (o.http_port and o.grpc_port and o.metrics_port)
            for attempt in range(3):
                self.http_port, self.grpc_port, self.metrics_port = (
                    o.http_port or free_port(o.host), o.grpc_port or free_port(o.host),
                    o.metrics_port or free_port(o.host))
                try:
                    self._start(backend_dir)
                    break
                except ServerError as e:
                    retry = attempt < 2 and ((auto_ports and self._lost_port_race()) or self._upstream_abort(e))
                    if not retry:
                        raise
                    self._stop_process()
        except BaseException:
            self._stop(keep_log=True)
            raise
        return self

    def _start(self, backend_dir: Path) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
        log = open_for_writing(self.log_path, "--log-file")
        self._log_handle = log
        self._proc = subprocess.Popen(
            self.command(backend_dir), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_environment(self.options.repository), start_new_session=True,
            preexec_fn=_die_with_parent(),  # noqa: PLW1509 - it only calls prctl (see there)
        )
        self._tell_watchdog(f"pid {self._proc.pid}")
        self._wait_ready()

    def _start_watchdog(self) -> None:
        """The guard that stops this server if this process dies first (see tritonops.watchdog).

        Its stdin is a pipe whose only write end stays here (``os.pipe`` descriptors are not
        inherited by other children), so however this process dies the guard reads end of file."""
        read_end, write_end = os.pipe()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", watchdog.__file__, "--workdir", str(self._workdir), "--",
                 *self._shm_prefixes.values()],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._guard_fd = write_end

    def _tell_watchdog(self, command: str) -> None:
        if self._guard_fd >= 0:
            with contextlib.suppress(OSError):  # a guard that died cannot be told anything
                os.write(self._guard_fd, f"{command}\n".encode())

    def _release_watchdog(self) -> None:
        self._tell_watchdog("done")
        if self._guard_fd >= 0:
            os.close(self._guard_fd)
            self._guard_fd = -1
        guard, self._watchdog = self._watchdog, None
        if guard is not None:
            try:
                guard.wait(timeout=10)
            except subprocess.TimeoutExpired:
                guard.kill()
                guard.wait()

    def _upstream_abort(self, e: ServerError) -> bool:
        """The Python backend of Triton 2.5x can abort intermittently with boost::interprocess::lock_exception
        (triton-inference-server/server#8882, open); seen here at start-up under heavy CPU load. A fresh start
        is the known workaround, so start-up is retried for that crash only."""
        return e.returncode == -signal.SIGABRT and any("lock_exception" in line for line in e.log_tail)

    def _lost_port_race(self) -> bool:
        return any(_FAILED_SERVICE.search(line) and "in use" in line for line in self.log_tail(200))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop(keep_log=exc is not None)

    def _health(self, which: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/{which}", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, TimeoutError):
            return False

    def _wait_ready(self) -> None:
        assert self._proc is not None
        o = self.options
        deadline = time.monotonic() + o.startup_timeout
        while time.monotonic() < deadline:
            rc = self._proc.poll()
            if rc is not None:
                raise self._failure(f"tritonserver exited with code {rc} during start-up", rc)
            if self._health("ready"):
                if o.exit_on_error:
                    bad = self._failed_models()
                    if bad and not o.explicit:
                        raise self._failure(f"model '{bad[0].name}' failed to load: {bad[0].reason}", None)
                return
            if self._health("live") and self._loading_done():
                if not o.strict_readiness:
                    return
                # Strict readiness and every load finished, yet not ready: a model failed (a server
                # with --exit-on-error=false keeps running); it will never become ready.
                bad = self._failed_models()
                if bad:
                    raise self._failure(f"model '{bad[0].name}' failed to load: {bad[0].reason}", None)
            time.sleep(0.1)
        waiting = ""
        with contextlib.suppress(ServerError):
            loading = [s.name for s in self._index() if s.state != "READY"]
            waiting = f" (not ready: {', '.join(loading)})" if loading else ""
        raise self._failure(f"tritonserver was not ready after {o.startup_timeout:.0f} s{waiting}", None)

    def _failed_models(self) -> list[ModelState]:
        try:
            return [s for s in self._index() if s.state not in ("READY", "")]
        except ServerError:
            return []

    def _loading_done(self) -> bool:
        try:
            states = self._index()
        except ServerError:
            return False
        return all(s.state not in ("LOADING", "UNLOADING") for s in states)

    def _failure(self, message: str, rc: int | None) -> ServerError:
        tail = self.log_tail()
        if "model '" not in message:
            for line in self.log_tail(n=100_000):
                m = _FAILED_LOAD.search(line)
                if m:
                    reason = m.group(2).split("\\n")[0].strip().rstrip('"')
                    message = f"{message}: model '{m.group(1)}' failed to load: {reason}"
                    break
                m = _FAILED_SERVICE.search(line)
                if m:
                    message = f"{message}: the {m.group(1)} service did not start: {m.group(2)}"
                    break
        return ServerError(message, f"see the server log: {self.log_path}", returncode=rc, log_tail=tail)

    def _stop_process(self) -> None:
        """SIGTERM (Triton unloads its models and stops its stubs), wait, else SIGKILL the whole
        process group; then remove anything left in the group (stubs of a server that crashed)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # The server led its own session, so its group id is its pid and holds only its children.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        watchdog.kill_group(proc.pid)
        self._tell_watchdog("stopped")
        # Triton removes its stubs' regions when it stops them; not when it crashed or was killed.
        watchdog.remove_shm_regions(self._shm_prefixes.values())

    def _stop(self, keep_log: bool) -> None:
        self._stop_process()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._temporary_log and not keep_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
        self._temporary_log = False
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._release_watchdog()

    # ----------------------------------------------------------------- queries
    def log_tail(self, n: int = 50) -> list[str]:
        try:
            text = read_text(self.log_path, "server log", _LOG_READ_LIMIT, errors="replace", tail=True)
        except UsageError:
            return []
        return text.splitlines()[-n:]

    def model_states(self) -> list[ModelState]:
        """The repository index, where every model has a state and a reason: Triton leaves both
        empty for a model it never loaded (explicit model control) or could not even read (its
        ``config.pbtxt`` a symlink loop, say); those are UNAVAILABLE here, saying why."""
        states = self._index()
        unexplained = {s.name for s in states if not s.state}
        polls: dict[str, str] = {}
        if unexplained:
            for line in self.log_tail(n=100_000):
                m = _POLL_FAILED.search(line)
                if m and m.group(1) in unexplained:
                    polls[m.group(1)] = m.group(2)
        return [s if s.state else ModelState(s.name, s.version, "UNAVAILABLE", self._why_not_loaded(s.name, polls))
                for s in states]

    def _why_not_loaded(self, name: str, polls: dict[str, str]) -> str:
        try:
            directory = model_directory(self.options.repository, name)
            config = directory / "config.pbtxt"
            if os.path.lexists(config):
                read_text(config, "config.pbtxt", _CONFIG_READ_LIMIT)
        except UsageError as e:
            return f"not loaded: {e.message}"
        if name in polls:
            return f"not loaded: {polls[name]}"
        if self.options.explicit:
            return ("not loaded (explicit model control): load it at start with --load-model "
                    f"{name} or later with POST /v2/repository/models/{name}/load")
        return f"not loaded by the server: see the server log: {self.log_path}"

    def _index(self) -> list[ModelState]:
        """The repository index as Triton reports it (an empty state: never loaded)."""
        req = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
                entries = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ServerError(f"cannot read the model repository index: {e}", "is the server running?") from None
        return [ModelState(e.get("name", ""), str(e.get("version", "")), e.get("state", ""), e.get("reason", ""))
                for e in entries]

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, stop: Callable[[], bool]) -> int | None:
        """Block until ``stop()`` is true or the server exits; returns its exit code if it exited."""
        while not stop():
            if self._proc is None:
                return None
            rc = self._proc.poll()
            if rc is not None:
                return rc
            time.sleep(0.5)  # a signal interrupts it, runs its handler, and the loop checks stop()
        return None


def serve(options: ServerOptions, on_ready: Callable[[TritonServer], None]) -> int:
    """Run a server until SIGINT/SIGTERM; ``on_ready`` reports endpoints. Returns an exit code."""
    # A plain flag, no lock: threading.Event.set() in a signal handler deadlocked (seen in the
    # SIGINT test) when the signal landed while the main thread held the Event's lock in wait().
    stopped: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _: stopped.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with TritonServer(options) as server:
            on_ready(server)
            rc = server.wait(lambda: bool(stopped))
            if rc is not None:
                raise ServerError(f"tritonserver exited with code {rc}", f"see the server log: {server.log_path}",
                                  returncode=rc, log_tail=server.log_tail())
        return 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


