"""``serve --docker IMAGE``: the ``docker run`` line of a real Triton image serving the same repository,
with the image reference validated and every argument quoted."""

from __future__ import annotations

import re
import shlex

from tritonops.errors import UsageError
from tritonops.paths import shown
from tritonops.server import ServerOptions

# The grammar of github.com/distribution/reference (what docker accepts): [domain[:port]/]path[:tag][@digest]
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_IMAGE_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?", re.ASCII)


def check_image_reference(image: str) -> str:
    """``image`` if it is a container image reference (``nvcr.io/nvidia/tritonserver:24.08-py3``,
    ``name@sha256:...``), else a ``UsageError``: no spaces, shell characters or options."""
    m = _IMAGE_REFERENCE.fullmatch(image)
    if m is None or len(m.group("name")) > 255:
        raise UsageError(f"--docker {shown(image)} is not a container image reference",
                         "give REGISTRY/NAME[:TAG][@sha256:DIGEST], e.g. nvcr.io/nvidia/tritonserver:24.08-py3")
    return image


def docker_command_line(options: ServerOptions, image: str) -> str:
    """``docker_command`` as one line to show or paste into a shell, every argument quoted."""
    return shlex.join(docker_command(options, image))


def docker_command(options: ServerOptions, image: str) -> list[str]:
    """The equivalent ``docker run`` of a real Triton image: ports published on ``options.host``
    only (loopback by default), the repository mounted read-only, shared memory the Python backend
    can live with (Docker's 64 MB default is too small for it). The image must be an image
    reference and ``--load-model`` names models of the repository."""
    check_image_reference(image)
    options.check_models()
    repo = options.repository.absolute()
    host = options.host
    hp, gp, mp = options.http_port or 8000, options.grpc_port or 8001, options.metrics_port or 8002
    cmd = ["docker", "run", "--rm", "--init", "--shm-size=256m",
           "-p", f"{host}:{hp}:8000", "-p", f"{host}:{gp}:8001", "-p", f"{host}:{mp}:8002",
           "-v", f"{repo}:/models:ro", image, "tritonserver", "--model-repository=/models"]
    if options.explicit:
        cmd.append("--model-control-mode=explicit")
        cmd.extend(f"--load-model={m}" for m in options.load_models)
    if options.cache_size_bytes:
        cmd.append(f"--cache-config=local,size={options.cache_size_bytes}")
    if options.python_shm_bytes:
        cmd.append(f"--backend-config=python,shm-default-byte-size={options.python_shm_bytes}")
    if not options.exit_on_error:
        cmd.append("--exit-on-error=false")
    if not options.strict_readiness:
        cmd.append("--strict-readiness=false")
    if options.log_verbose:
        cmd.append(f"--log-verbose={options.log_verbose}")
    cmd.extend(options.extra_args)
    return cmd
