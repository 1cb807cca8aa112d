"""Logging for one run of tritonops, on stdlib logging.

Everything the library reports goes to the ``tritonops`` logger (progress messages at INFO, through
:func:`tritonops.progress.reporter`). A run sends it to two places:

- stderr: warnings and errors always, progress and INFO too with ``verbose``;
- a debug log file: everything at DEBUG, with the traceback of any error. By default one file per run
  under the user's state directory (``$TRITONOPS_LOG_DIR``, else ``$XDG_STATE_HOME/tritonops/logs``, else
  ``~/.local/state/tritonops/logs``), keeping the newest :data:`KEEP`; a run that cannot write there runs
  without the file rather than failing.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tritonops.errors import UsageError
from tritonops.progress import LOGGER_NAME

LOG_DIR_ENV = "TRITONOPS_LOG_DIR"
KEEP = 20
PREFIX = "tritonops-"
FILE_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def default_log_dir() -> Path:
    if os.environ.get(LOG_DIR_ENV):
        return Path(os.environ[LOG_DIR_ENV])
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "tritonops" / "logs"


def new_log_path(directory: Path) -> Path:
    """A name that sorts by start time and does not collide with a concurrent run's."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1e6) % 1_000_000:06d}"
    return directory / f"{PREFIX}{stamp}-{os.getpid()}.log"


def prune(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` run logs in ``directory``."""
    logs = sorted(directory.glob(f"{PREFIX}*.log"))
    for old in logs[: max(len(logs) - keep, 0)]:
        old.unlink(missing_ok=True)


class _StderrFormatter(logging.Formatter):
    """Progress lines as they are; warnings and errors with their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record arrives (tests and rich swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


@dataclass
class RunLog:
    """What :func:`configure` installed; :meth:`close` removes it again (runs can share a process)."""

    path: Path | None
    logger: logging.Logger
    handlers: list[logging.Handler] = field(default_factory=list)
    previous_level: int = logging.NOTSET

    def close(self) -> None:
        for handler in self.handlers:
            self.logger.removeHandler(handler)
            handler.close()
        self.handlers.clear()
        self.logger.setLevel(self.previous_level)


def configure(*, verbose: bool = False, debug_log: Path | None = None, log_dir: Path | None = None,
              keep: int = KEEP) -> RunLog:
    """Install this run's handlers on the ``tritonops`` logger.

    ``debug_log`` is a file given by the user (a failure to open it is a UsageError); without it, a new file
    in ``log_dir`` (default :func:`default_log_dir`), keeping the newest ``keep`` there.
    """
    logger = logging.getLogger(LOGGER_NAME)
    run = RunLog(path=None, logger=logger, previous_level=logger.level)
    stderr = _StderrHandler()
    stderr.setLevel(logging.INFO if verbose else logging.WARNING)
    stderr.setFormatter(_StderrFormatter("%(message)s"))
    run.handlers.append(stderr)
    file_handler = _open_file(debug_log, log_dir or default_log_dir(), keep)
    if file_handler is not None:
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(FILE_FORMAT, DATE_FORMAT))
        run.handlers.append(file_handler)
        run.path = Path(file_handler.baseFilename)
    for handler in run.handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if file_handler is not None else (logging.INFO if verbose else logging.WARNING))
    return run


def _open_file(debug_log: Path | None, log_dir: Path, keep: int) -> logging.FileHandler | None:
    if debug_log is not None:
        try:
            debug_log.parent.mkdir(parents=True, exist_ok=True)
            return logging.FileHandler(debug_log, mode="w", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot write the debug log '{debug_log}': {e.strerror or e}",
                             "give a file in a writable directory, or leave --debug-log out") from None
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        prune(log_dir, keep - 1)
        return logging.FileHandler(new_log_path(log_dir), mode="w", encoding="utf-8")
    except OSError:
        return None  # a read-only home directory must not stop the run; it only loses the debug log
