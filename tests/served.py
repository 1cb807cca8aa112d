"""One tritonserver per test process (scripts/test.sh runs two xdist workers), in explicit model-control mode.

Tests that only need "a server with model X" share it instead of starting their own (a start costs
seconds of two shared cores, and a suite used to start ~30). A test module builds its models into a
repository of its own, as before; ``SessionServer.models(repo)`` copies those model directories into
the session repository, loads them with tritonclient's ``load_model``, and on leaving unloads them,
waits until the server has let go of them, and removes the copies. So while a module runs, the
session repository holds that module's models only: server-wide answers (repository index, the list
of served models, statistics without a model name) are about the module's own models, exactly as
with the module's own server, and a model name used by two modules never meets itself.

The server is started the way the most demanding users need it, which the others do not notice:
- ``strict_readiness=False``: modules load models that must fail (a broken file, broken ensembles);
  with strict readiness one failed load would make the whole server "not ready" for everyone after.
- a 4 MB response cache: only models whose config enables ``response_cache`` use it.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tritonops.errors import TritonOpsError
from tritonops.pbtxt import read_config
from tritonops.server import ModelState, ServerOptions, TritonServer

LOAD_TIMEOUT_S = 600.0  # the MiniLM encoder with two instances on two busy cores takes a while
UNLOAD_TIMEOUT_S = 120.0
PARALLEL_LOADS = 4  # Triton's own default number of model-load threads


def session_options(repository: Path) -> ServerOptions:
    return ServerOptions(repository=repository, explicit=True, strict_readiness=False, exit_on_error=False,
                         cache_size_bytes=4 << 20)


@dataclass
class LoadedModels:
    """What one ``SessionServer.models`` call put on the server."""

    names: tuple[str, ...]
    failures: dict[str, str] = field(default_factory=dict)  # model -> the server's reason


class ModelLoadError(RuntimeError):
    pass


def _is_ensemble(model_dir: Path) -> bool:
    config = model_dir / "config.pbtxt"
    if not config.is_file():
        return False
    try:
        return read_config(config).platform == "ensemble"
    except TritonOpsError:  # a deliberately broken config: the server will say what is wrong with it
        return False


def _client(server: TritonServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url, connection_timeout=LOAD_TIMEOUT_S,
                                            network_timeout=LOAD_TIMEOUT_S)


def served_config(http_url: str, model: str) -> dict:
    """The config the server at ``http_url`` serves ``model`` with (to check that a run loaded it back)."""
    client = httpclient.InferenceServerClient(http_url)
    try:
        return dict(client.get_model_config(model))
    finally:
        client.close()


class SessionServer:
    """The session's server and its repository; ``models()`` lends it to one test module."""

    def __init__(self, server: TritonServer) -> None:
        self.server = server
        self.repository = Path(server.options.repository)

    def _load(self, name: str) -> str | None:
        """None when the model is READY, else the server's reason."""
        with contextlib.closing(_client(self.server)) as client:
            try:
                client.load_model(name)
            except InferenceServerException as e:
                return e.message() or str(e)
        return None

    def _states(self, names: tuple[str, ...]) -> dict[str, ModelState]:
        return {s.name: s for s in self.server.model_states() if s.name in names}

    def _unload(self, names: tuple[str, ...], ensembles: set[str]) -> None:
        with contextlib.closing(_client(self.server)) as client:
            # Ensembles first: a step unloaded under a loaded ensemble would only be polled back.
            for name in sorted(names, key=lambda n: n not in ensembles):
                # A directory that never was a model may be refused; a model that stays loaded is
                # caught by the wait below.
                with contextlib.suppress(InferenceServerException):
                    client.unload_model(name)
        # Unloading returns before the model is gone (its instances and Python stubs stop after);
        # its directory is removed, and its name may be reused, only once the server has let go.
        deadline = time.monotonic() + UNLOAD_TIMEOUT_S
        while True:
            busy = [s.name for s in self._states(names).values() if s.state in ("READY", "LOADING", "UNLOADING")]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise ModelLoadError(f"models still loaded {UNLOAD_TIMEOUT_S:.0f} s after unload: {busy}; "
                                     f"see {self.server.log_path}")
            time.sleep(0.1)

    @contextlib.contextmanager
    def models(self, source: Path | None = None, *, expect_failures: bool = False) -> Iterator[LoadedModels]:
        """Serve every model directory of ``source`` for the duration of the block.

        Steps and plain models load first (in parallel), ensembles after them. A model that fails
        to load raises, unless ``expect_failures``: then its reason is in ``failures`` and the
        server's index shows it UNAVAILABLE, as a server started over ``source`` would. Whatever is
        in the session repository when the block ends (the copies, and anything a test wrote there,
        such as a roll-out into ``repository``) is unloaded and removed: the next module finds the
        repository empty. Without ``source`` the block lends the server with an empty repository."""
        left = sorted(p.name for p in self.repository.iterdir())
        if left:
            raise ModelLoadError(f"the session repository still holds {left}: another module is still using the "
                                 "session server (it serves one module at a time)")
        dirs = sorted(d for d in source.iterdir() if d.is_dir()) if source is not None else []
        names = tuple(d.name for d in dirs)
        ensembles = {d.name for d in dirs if _is_ensemble(d)}
        try:
            for d in dirs:
                shutil.copytree(d, self.repository / d.name, symlinks=True)
            loaded = LoadedModels(names)
            with ThreadPoolExecutor(PARALLEL_LOADS) as pool:
                for group in ([n for n in names if n not in ensembles], [n for n in names if n in ensembles]):
                    for name, reason in zip(group, pool.map(self._load, group), strict=True):
                        if reason is not None:
                            loaded.failures[name] = reason
            if loaded.failures and not expect_failures:
                raise ModelLoadError(f"models failed to load on the session server: {loaded.failures}; "
                                     f"see {self.server.log_path}")
            yield loaded
        finally:
            self._clear()

    def _clear(self) -> None:
        entries = sorted(self.repository.iterdir())
        try:
            if self.server.running():
                models = tuple(p.name for p in entries if p.is_dir())
                self._unload(models, {p.name for p in entries if p.is_dir() and _is_ensemble(p)})
        finally:
            for p in entries:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


@contextlib.contextmanager
def session_server(repository: Path) -> Iterator[SessionServer]:
    repository.mkdir(parents=True, exist_ok=True)
    with TritonServer(session_options(repository)) as server:
        yield SessionServer(server)
