"""The error hierarchy. Every error a user can cause is a ``TritonOpsError`` with a one-line
message and a hint saying how to fix it; the CLI prints both and exits with ``exit_code``."""

from __future__ import annotations

from collections.abc import Sequence


class TritonOpsError(Exception):
    """Base class: a failure with a message for the user and a hint on how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(TritonOpsError):
    """Bad options, specs, names or files given by the user."""

    exit_code = 2


class ModelError(TritonOpsError):
    """A model file that cannot be read, parsed or inspected."""

    exit_code = 3


class ConversionError(TritonOpsError):
    """Exporting or compiling a model failed, or the result does not match the original."""

    exit_code = 4


class RepositoryError(TritonOpsError):
    """Reading or writing a model repository failed."""

    exit_code = 5


class ServerError(TritonOpsError):
    """A tritonserver could not be started, died, or could not be reached."""

    exit_code = 6

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        returncode: int | None = None,
        log_tail: Sequence[str] = (),
    ) -> None:
        super().__init__(message, hint)
        self.returncode = returncode
        self.log_tail = list(log_tail)


class ValidationFailed(TritonOpsError):
    """A deployment was reached but did not behave as its repository says it should."""

    exit_code = 7


class ExternalToolError(TritonOpsError):
    """An external program (perf_analyzer, locust, ...) failed."""

    exit_code = 8

    def __init__(self, cmd: Sequence[str], returncode: int, output_tail: str, hint: str | None = None):
        name = cmd[0] if cmd else "command"
        super().__init__(f"{name} exited with code {returncode}", hint)
        self.cmd = list(cmd)
        self.returncode = returncode
        self.output_tail = output_tail


class MissingDependencyError(TritonOpsError):
    """An optional dependency is not installed."""

    exit_code = 9

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed",
            f"install it with: pip install 'tritonops[{extra}]'",
        )
        self.package = package
        self.extra = extra
