"""The one result envelope of every ``--json`` output.

Every command run with ``--json`` prints exactly one JSON document on stdout::

    {"schema": "tritonops.check/1", "command": "check", "status": "failed", "exit_code": 1,
     "data": {...the result...}, "errors": [{"type": "...", "message": "...", "hint": "..."}]}

- ``schema``: what ``data`` holds, with its version (``tritonops.X/N``; the names results always had).
- ``status``: ``ok`` (exit code 0), ``failed`` (the command produced a result and the result is a failure:
  findings, failed checks, a roll-out that was undone, an interrupted measurement; ``data`` holds it) or
  ``error`` (no result: ``data`` is null).
- ``errors``: the errors the command reports on stderr, each with its type, message and hint.

The envelope is built here, in the library; the CLI only prints it. Results that have a ``to_dict()``
give their own data; the few that have none (a list of built models, an ONNX file's description) are
turned into data by the functions below.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from tritonops.errors import TritonOpsError

if TYPE_CHECKING:
    from tritonops.convert.onnx_inspect import ModelInspection, OnnxInfo

Status = Literal["ok", "failed", "error"]

INTERNAL_ERROR_EXIT_CODE = 70  # EX_SOFTWARE: a bug in tritonops, not a user error
INTERRUPTED_EXIT_CODE = 130

# What ``data`` holds for each command's --json (deploy: one schema per action). The results carry
# their own schema; this table names it for the error envelopes, which have no result to ask.
SCHEMAS: Mapping[str, str] = {
    "build": "tritonops.build/1",
    "check": "tritonops.check/1",
    "inspect": "tritonops.inspect/1",
    "doctor": "tritonops.doctor/1",
    "validate": "tritonops.validate/1",
    "perf": "tritonops.perf/1",
    "loadtest": "tritonops.loadtest/1",
    "study protocols": "tritonops.study.protocols/2",
    "study config": "tritonops.study.config/1",
    "deploy --target": "tritonops.deploy.manifests/1",
    "deploy --to": "tritonops.deploy.rollout/1",
    "deploy --rollback": "tritonops.deploy.rollout/1",
    "deploy --status": "tritonops.deploy.status/1",
}


class SupportsToDict(Protocol):
    """A result that knows its own data (every result type of the library but the few below)."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ErrorInfo:
    """One error as the JSON shows it."""

    type: str
    message: str
    hint: str | None = None

    @classmethod
    def of(cls, error: BaseException, hint: str | None = None) -> ErrorInfo:
        """A TritonOpsError as it is (its class name, message, hint); anything else as an internal error,
        with ``hint`` (where the traceback went)."""
        if isinstance(error, TritonOpsError):
            return cls(type(error).__name__, error.message, error.hint)
        if isinstance(error, KeyboardInterrupt):
            return cls("Interrupted", "interrupted")
        return cls(type(error).__name__, f"internal error: {type(error).__name__}: {error}", hint)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class Envelope:
    schema: str
    command: str
    status: Status
    exit_code: int
    data: dict[str, Any] | None
    errors: tuple[ErrorInfo, ...] = field(default=())

    def __post_init__(self) -> None:
        if (self.status == "ok") != (self.exit_code == 0):
            raise ValueError(f"status {self.status!r} with exit code {self.exit_code}")
        if (self.status == "error") != (self.data is None):
            raise ValueError(f"status {self.status!r} {'without' if self.data is None else 'with'} data")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "command": self.command, "status": self.status, "exit_code": self.exit_code,
                "data": self.data, "errors": [e.to_dict() for e in self.errors]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def result_envelope(command: str, result: SupportsToDict | Mapping[str, Any], *, exit_code: int = 0,
                    errors: Sequence[ErrorInfo | BaseException] = ()) -> Envelope:
    """The envelope of a result: ``result`` is an object with ``to_dict()`` or a dict, either with a
    ``"schema"`` key (which moves to the envelope). A non-zero exit code makes it ``failed``; an error
    given without an exit code lends its own (a TritonOpsError's ``exit_code``)."""
    data = dict(result) if isinstance(result, Mapping) else result.to_dict()
    schema = data.pop("schema", None) or schema_of(command)
    infos = tuple(e if isinstance(e, ErrorInfo) else ErrorInfo.of(e) for e in errors)
    if exit_code == 0:
        exit_code = next((exit_code_of(e) for e in errors if not isinstance(e, ErrorInfo)), 0)
    return Envelope(schema, command, "ok" if exit_code == 0 else "failed", exit_code, data, infos)


def error_envelope(command: str, error: BaseException, *, schema: str | None = None,
                   hint: str | None = None) -> Envelope:
    """The envelope of a command that stopped with ``error`` before it had a result (``hint``: for an
    internal error, which has none of its own)."""
    return Envelope(schema or schema_of(command), command, "error", exit_code_of(error), None,
                    (ErrorInfo.of(error, hint),))


def exit_code_of(error: BaseException) -> int:
    """The exit code the CLI gives a run that ended with ``error``."""
    if isinstance(error, TritonOpsError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED_EXIT_CODE
    return INTERNAL_ERROR_EXIT_CODE


def schema_of(command: str) -> str:
    """The schema of a command's data; ``deploy`` and its actions are keyed as ``"deploy --status"``."""
    try:
        return SCHEMAS[command]
    except KeyError:
        raise ValueError(f"no JSON schema for command {command!r}") from None


# ------------------------------------------------------------------ data of results without to_dict()
def build_data(results: Sequence[SupportsToDict]) -> dict[str, Any]:
    """``tritonops build --json``: every model built (an ensemble file builds its steps and itself)."""
    return {"schema": SCHEMAS["build"], "models": [r.to_dict() for r in results]}


def onnx_data(info: OnnxInfo | ModelInspection) -> dict[str, Any]:
    """``tritonops inspect --json``: an ONNX file's inputs and outputs as Triton sees them; with a
    config (a ModelInspection that has one), each tensor's ``role`` and the config's path."""
    roles = getattr(info, "roles", None)
    config = getattr(info, "config", None)
    onnx = cast("OnnxInfo", getattr(info, "info", info))

    def tensor(t: Any) -> dict[str, Any]:
        d = {"name": t.name, "dtype": t.dtype.name, "shape": list(t.shape)}
        if roles is not None:
            d["role"] = roles.get(t.name)
        return d

    return {
        "schema": SCHEMAS["inspect"],
        "path": str(onnx.path), "opset": onnx.opset, "ir_version": onnx.ir_version, "producer": onnx.producer,
        "batchable": onnx.batchable, "external_data": list(onnx.external_data),
        "config": None if config is None else str(config),
        "inputs": [tensor(t) for t in onnx.inputs],
        "outputs": [tensor(t) for t in onnx.outputs],
    }
