"""Progress reporting: the one protocol every long-running library function takes, backed by stdlib
logging. The library calls ``say(message)``; every message also goes to the ``tritonops`` logger (so
``--verbose`` and the per-run debug log see it) before it reaches the caller's callback, if any."""

from __future__ import annotations

import logging
from typing import Protocol

LOGGER_NAME = "tritonops"


class Progress(Protocol):
    """A callback that receives one short line of progress ("exporting to ONNX", "validating mlp")."""

    def __call__(self, message: str, /) -> None: ...


def reporter(progress: Progress | None, name: str = LOGGER_NAME) -> Progress:
    """A Progress that logs each message at INFO on logger ``name`` and forwards it to ``progress``."""
    log = logging.getLogger(name)

    def say(message: str, /) -> None:
        log.info("%s", message)
        if progress is not None:
            progress(message)

    return say
