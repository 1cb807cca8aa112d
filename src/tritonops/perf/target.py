"""The deployment under test: a server tritonops starts (``--serve repo/``) or one already running
(``--url``), and the served model's inputs and outputs as Triton reports them."""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tritonclient.utils import InferenceServerException

from tritonops.client import TritonClient, grpc_beside, normalize_url
from tritonops.errors import ServerError, UsageError
from tritonops.names import check_model_name
from tritonops.pbtxt import ModelConfig, tensor_specs
from tritonops.progress import Progress
from tritonops.samples import EXAMPLES_FILE
from tritonops.server import ServerOptions, TritonServer
from tritonops.spec import TensorSpec

Protocol = Literal["http", "grpc"]


@dataclass(frozen=True)
class ModelIO:
    """A served model's interface, from the server's own view of its config."""

    name: str
    version: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    config: ModelConfig = field(compare=False, repr=False)

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0


def model_io_from_config(config: ModelConfig, version: str = "") -> ModelIO:
    """The served config as a ModelIO: tensors through the renderer's own ``tensor_specs`` (with ``reshape``)."""
    inputs, outputs = tensor_specs(config)
    return ModelIO(name=config.name, version=version, platform=config.platform or config.backend,
                   max_batch_size=int(config.max_batch_size), inputs=inputs, outputs=outputs, config=config)


@dataclass
class Target:
    """Where requests go. ``alive()`` tells a dead server from a failing tool."""

    http_url: str
    grpc_url: str
    metrics_url: str | None = None
    alive: Callable[[], bool] = lambda: True
    log_tail: Callable[[], list[str]] = list
    served_by_us: bool = False
    repository: Path | None = None  # the served repository, when known (its saved samples are used)

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
    check_model_name(model)
    with TritonClient(target.http_url, target.grpc_url, timeout_s=30, connect_timeout_s=10) as client:
        try:
            if not client.is_server_live():
                raise ServerError(f"the server at {target.http_url} is not live",
                                  "check that tritonserver is running and its HTTP port is right")
            if not client.is_model_ready(model, version):
                names = sorted(client.models())
                raise UsageError(
                    f"model '{model}' is not ready on {target.http_url}",
                    f"served models: {', '.join(names) or 'none'}; check the name or the server log",
                )
            config = client.model_config(model, version)
        except InferenceServerException as e:
            raise ServerError(f"cannot query model '{model}' at {target.http_url}: {e.message()}",
                              "check the URL and that the model is loaded") from None
        except (OSError, ConnectionError) as e:
            raise ServerError(f"cannot reach the server at {target.http_url}: {e}",
                              "check that tritonserver is running and --url is its HTTP port") from None
    return model_io_from_config(config, version)


@contextlib.contextmanager
def open_target(serve: Path | None, url: str | None, grpc_url: str | None, progress: Progress,
                models: tuple[str, ...] = (), *, cache_size_bytes: int | None = None,
                explicit: bool = False, extra_repositories: tuple[Path, ...] = ()) -> Iterator[Target]:
    """Start a server on ``serve`` (a model repository) or use the one at ``url``.

    ``grpc_url`` defaults to the HTTP port + 1, Triton's default layout (8000/8001). For ``serve``
    only: ``cache_size_bytes`` gives the server a response cache (``--cache-config local,size=N``),
    ``explicit`` model control with every model loaded at start (configs can then be swapped
    through the load API, as the cache dimension and tune do); ``extra_repositories`` are served
    beside ``serve`` (the protocol study's payload presets)."""
    if serve is not None and url is not None:
        raise UsageError("give either --serve REPO or --url HOST:PORT, not both", "drop one of them")
    if serve is None:
        if url is None:
            raise UsageError("no server to measure", "give --serve model_repository/ or --url 127.0.0.1:8000")
        http = normalize_url(url)
        grpc = normalize_url(grpc_url, "--grpc-url") if grpc_url else grpc_beside(http)
        yield Target(http_url=http, grpc_url=grpc, metrics_url=None, alive=lambda: http_alive(http))
        return
    if not serve.is_dir():
        raise UsageError(f"model repository '{serve}' is not a directory", "give --serve PATH/TO/model_repository")
    progress(f"starting tritonserver on {serve}")
    options = ServerOptions(repository=serve, cache_size_bytes=cache_size_bytes, explicit=explicit,
                            load_models=("*",) if explicit else (),
                            extra_args=tuple(f"--model-repository={r.absolute()}" for r in extra_repositories))
    with TritonServer(options) as server:
        def alive() -> bool:
            return server.running() and http_alive(server.http_url)

        yield Target(http_url=server.http_url, grpc_url=server.grpc_url, metrics_url=server.metrics_url,
                     alive=alive, log_tail=lambda: server.log_tail(30), served_by_us=True, repository=serve)


def saved_samples(target: Target, model: str) -> Path | None:
    """The example inputs a build saved beside the model's config.pbtxt, when the repository is known
    and holds them."""
    if target.repository is None:
        return None
    check_model_name(model)
    path = target.repository / model / EXAMPLES_FILE
    return path if path.is_file() else None
