"""The roll-out's side of the server and of the target repository: connecting (HTTP and gRPC, the
admin key on every repository call), the explicit-mode preflight, and the file moves Triton must
never see half done (staging inside a model directory, removal out of sight, candidate clean-up)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tritonops.client import TritonClient, message_of
from tritonops.errors import ServerError, UsageError
from tritonops.repository import stage_prefix

ADMIN_HEADER = "triton-admin-key"  # the header that unlocks a restricted model-repository API


def first_line(e: BaseException) -> str:
    """What the server said, one line, bounded: for messages that quote it."""
    return message_of(e)[:300]


def connect(http_url: str, grpc_url: str, timeout_s: float, admin_key: str | None = None) -> TritonClient:
    """The client a roll-out uses: ``timeout_s`` for each load and validation call."""
    return TritonClient(http_url, grpc_url, timeout_s=timeout_s, connect_timeout_s=10.0,
                        headers={ADMIN_HEADER: admin_key} if admin_key else None)


def preflight(client: TritonClient) -> None:
    """Reachable over HTTP and gRPC, and in explicit model-control mode (with the right key)."""
    try:
        client.server_metadata("http")
    except Exception as e:
        raise ServerError(f"cannot reach the server at {client.http_url} over HTTP: {first_line(e)}",
                          "check --url/--http-port and that tritonserver is running") from None
    try:
        client.server_metadata("grpc")
    except Exception as e:
        raise ServerError(f"cannot reach the server at {client.grpc_url} over gRPC: {first_line(e)}",
                          "check --grpc-port and that tritonserver is running") from None
    # Unloading a model that does not exist succeeds in explicit mode and is refused otherwise.
    probe = f"tritonops-mode-probe-{uuid.uuid4().hex[:12]}"
    try:
        client.unload_model(probe)
    except Exception as e:
        text = first_line(e)
        url = client.http_url
        if "not allowed" in text:
            raise ServerError(f"the server at {url} is not in explicit model-control mode ({text})",
                              "start tritonserver with --model-control-mode=explicit (tritonops deploy "
                              "--target … --allow-model-control writes manifests that do)") from None
        if "restricted" in text:
            raise ServerError(f"the server at {url} restricts its model-repository API ({text})",
                              "export TRITON_ADMIN_KEY with the server's key") from None
        raise ServerError(f"the server at {url} refused a model-control request: {text}",
                          "check the server log") from None


def check_target(target: Path) -> None:
    if not target.exists():
        raise UsageError(f"target repository '{target}' does not exist",
                         "give the directory the server was started with (--model-repository)")
    if not target.is_dir():
        raise UsageError(f"target repository '{target}' is not a directory",
                         "give the directory the server was started with (--model-repository)")


def copytree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=False, copy_function=shutil.copy2)


def copy_extras(source_dir: Path, dest: Path) -> None:
    """The files beside config.pbtxt (labels, resources), shared by every version of a model."""
    for extra in source_dir.iterdir():
        if not extra.name.isdigit() and extra.name != "config.pbtxt" and not extra.name.startswith("."):
            (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, dest / extra.name)


@contextlib.contextmanager
def stage(model_dir: Path) -> Iterator[Path]:
    """A hidden, non-numeric directory inside the model directory: Triton ignores it as a version and
    the final rename stays on one filesystem. The name carries this process's pid, so a stage left
    by a killed roll-out is removed by the next build (``repository.remove_stale_stages``)."""
    staged = Path(tempfile.mkdtemp(prefix=stage_prefix(), dir=model_dir))
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def remove_dir(path: Path) -> None:
    """Rename out of Triton's sight first (hidden name), then delete."""
    if not path.exists():
        return
    hidden = path.with_name(f".tritonops-removed-{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def cleanup_candidate(client: TritonClient, path: Path, timeout_s: float) -> None:
    """Unload a candidate model and remove its directory.

    After a timed-out load the server may still be loading it: wait (bounded) so the unload is not
    overtaken by a load that completes afterwards, and the files are not pulled from under it."""
    deadline = time.monotonic() + max(60.0, timeout_s)
    with contextlib.suppress(Exception):
        while time.monotonic() < deadline and any(
                e.name == path.name and e.state == "LOADING" for e in client.repository_index()):
            time.sleep(0.2)
    with contextlib.suppress(Exception):
        client.unload_model(path.name)
    remove_dir(path)
