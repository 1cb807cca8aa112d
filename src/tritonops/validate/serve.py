"""``validate --serve``: start a real server on a repository, validate every model, stop it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from tritonops.errors import TritonOpsError, UsageError
from tritonops.pbtxt import read_config
from tritonops.progress import Progress, reporter
from tritonops.reference import (
    ReferenceRunner,
)
from tritonops.server import ServerOptions, TritonServer
from tritonops.validate.engine import validate
from tritonops.validate.report import ValidateOptions, ValidationReport

DEFAULT_SERVE_CACHE_BYTES = 16 << 20


def validate_repository(repository: Path, options: ValidateOptions, progress: Progress | None = None, *,
                        cache_size_bytes: int | None = None,
                        references: Mapping[str, ReferenceRunner] | None = None) -> ValidationReport:
    """Start a real server on ``repository`` (free ports, loopback), validate every model, stop it.

    The server starts even when some models fail to load, so those appear as failed rows with the
    server's reason instead of aborting the whole validation. A response cache is configured when
    any model enables ``response_cache`` (``cache_size_bytes``, default 16 MB)."""
    say = reporter(progress)
    if not repository.is_dir():
        raise UsageError(f"model repository '{repository}' is not a directory", "check the path")
    if cache_size_bytes is None and _any_response_cache(repository):
        cache_size_bytes = DEFAULT_SERVE_CACHE_BYTES
    say(f"starting tritonserver on {repository}")
    server_options = ServerOptions(repository=repository, cache_size_bytes=cache_size_bytes,
                                   exit_on_error=False, strict_readiness=False)
    with TritonServer(server_options) as server:
        served = replace(options, http_url=server.http_url, grpc_url=server.grpc_url,
                         metrics_url=server.metrics_url, repository=options.repository or repository)
        return validate(served, progress, references=references)


def _any_response_cache(repository: Path) -> bool:
    for path in sorted(repository.glob("*/config.pbtxt")):
        try:
            if read_config(path).response_cache.enable:
                return True
        except TritonOpsError:
            continue  # the server reports a broken config itself
    return False
