"""The deployment under test: a server tritonops starts (``--serve repo/``) or one already running
(``--url``), and the served model's inputs and outputs as Triton reports them."""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tritonops.dtypes import from_config
from tritonops.errors import ServerError, UsageError
from tritonops.names import check_model_name
from tritonops.progress import Progress
from tritonops.spec import TensorSpec

Protocol = Literal["http", "grpc"]


def normalize_url(url: str, what: str = "--url") -> str:
    """``http://host:port/`` or ``host:port`` -> ``host:port`` (what perf_analyzer and tritonclient take)."""
    u = url.strip()
    for prefix in ("http://", "grpc://"):
        if u.startswith(prefix):
            u = u[len(prefix):]
    u = u.rstrip("/")
    if u.startswith("https://") or "/" in u or not u:
        raise UsageError(f"{what} '{url}' is not HOST:PORT", f"write it like {what} 127.0.0.1:8000")
    host, _, port = u.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"{what} '{url}' has no port", f"write it like {what} 127.0.0.1:8000")
    return u


@dataclass(frozen=True)
class ModelIO:
    """A served model's interface, from the server's own view of its config."""

    name: str
    version: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    config: dict[str, Any] = field(compare=False, repr=False)

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0


def _tensor_from_config(t: dict[str, Any]) -> TensorSpec:
    dims = tuple(int(d) for d in t.get("dims", []))
    return TensorSpec(name=t["name"], dtype=from_config(t.get("data_type", "TYPE_FP32")), dims=dims,
                      optional=bool(t.get("optional", False)))


def model_io_from_config(config: dict[str, Any], version: str = "") -> ModelIO:
    return ModelIO(
        name=config["name"], version=version,
        platform=config.get("platform") or config.get("backend", ""),
        max_batch_size=int(config.get("max_batch_size", 0)),
        inputs=tuple(_tensor_from_config(t) for t in config.get("input", [])),
        outputs=tuple(_tensor_from_config(t) for t in config.get("output", [])),
        config=config,
    )


@dataclass
class Target:
    """Where requests go. ``alive()`` tells a dead server from a failing tool."""

    http_url: str
    grpc_url: str
    metrics_url: str | None = None
    alive: Callable[[], bool] = lambda: True
    log_tail: Callable[[], list[str]] = list
    served_by_us: bool = False

    def url(self, protocol: Protocol) -> str:
        return self.http_url if protocol == "http" else self.grpc_url


def http_alive(http_url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/live", timeout=timeout_s) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def fetch_model_io(target: Target, model: str, version: str = "") -> ModelIO:
    """Ask the server for the model's config (HTTP), after checking that the model is ready."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    check_model_name(model)
    try:
        client = httpclient.InferenceServerClient(target.http_url, connection_timeout=10, network_timeout=30)
    except Exception as e:  # tritonclient raises plain Exceptions for bad URLs
        raise UsageError(f"cannot use server URL '{target.http_url}': {e}", "give --url HOST:PORT") from None
    try:
        try:
            if not client.is_server_live():
                raise ServerError(f"the server at {target.http_url} is not live",
                                  "check that tritonserver is running and its HTTP port is right")
            ready = client.is_model_ready(model, version)
            if not ready:
                names = sorted(m.get("name", "") for m in client.get_model_repository_index())
                raise UsageError(
                    f"model '{model}' is not ready on {target.http_url}",
                    f"served models: {', '.join(names) or 'none'}; check the name or the server log",
                )
            config = client.get_model_config(model, version)
        except InferenceServerException as e:
            raise ServerError(f"cannot query model '{model}' at {target.http_url}: {e.message()}",
                              "check the URL and that the model is loaded") from None
        except (OSError, ConnectionError) as e:
            raise ServerError(f"cannot reach the server at {target.http_url}: {e}",
                              "check that tritonserver is running and --url is its HTTP port") from None
    finally:
        with contextlib.suppress(Exception):
            client.close()
    return model_io_from_config(config, version)


@contextlib.contextmanager
def open_target(serve: Path | None, url: str | None, grpc_url: str | None, progress: Progress,
                models: tuple[str, ...] = ()) -> Iterator[Target]:
    """Start a server on ``serve`` (a model repository) or use the one at ``url``.

    ``grpc_url`` defaults to the HTTP port + 1, Triton's default layout (8000/8001)."""
    if serve is not None and url is not None:
        raise UsageError("give either --serve REPO or --url HOST:PORT, not both", "drop one of them")
    if serve is None:
        if url is None:
            raise UsageError("no server to measure", "give --serve model_repository/ or --url 127.0.0.1:8000")
        http = normalize_url(url)
        host, _, port = http.rpartition(":")
        grpc = normalize_url(grpc_url, "--grpc-url") if grpc_url else f"{host}:{int(port) + 1}"
        yield Target(http_url=http, grpc_url=grpc, metrics_url=None, alive=lambda: http_alive(http))
        return
    from tritonops.server import ServerOptions, TritonServer

    if not serve.is_dir():
        raise UsageError(f"model repository '{serve}' is not a directory", "give --serve PATH/TO/model_repository")
    progress(f"starting tritonserver on {serve}")
    options = ServerOptions(repository=serve)
    with TritonServer(options) as server:
        def alive() -> bool:
            return server.running() and http_alive(server.http_url)

        yield Target(http_url=server.http_url, grpc_url=server.grpc_url, metrics_url=server.metrics_url,
                     alive=alive, log_tail=lambda: server.log_tail(30), served_by_us=True)
