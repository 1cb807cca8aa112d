"""The state of one validation run: options, clients, progress, references and the rows so far."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from tritonops.client import TritonClient, message_of, short
from tritonops.errors import TritonOpsError
from tritonops.progress import Progress
from tritonops.reference import ModelUnderTest, ReferenceRunner
from tritonops.validate.report import CheckResult, Status, ValidateOptions

T = TypeVar("T")


@dataclass
class ValidationRun:
    options: ValidateOptions
    clients: TritonClient
    say: Progress
    references: Mapping[str, ReferenceRunner]
    rows: list[CheckResult] = field(default_factory=list)

    def add(self, model: str, check: str, protocol: str, status: Status, detail: str = "", *,
            max_error: float | None = None, latency_ms: float | None = None, hint: str = "") -> CheckResult:
        row = CheckResult(model, check, protocol, status, detail, max_error, latency_ms, hint)
        self.rows.append(row)
        return row


def build_reference(run: ValidationRun, model: ModelUnderTest, factory: Callable[[ModelUnderTest], T] | None,
                    none_yet: str) -> T | str:
    """``factory(model)``, or why there is none (a string; prefixed '!' when that is a failure row):
    ``none_yet`` when there is no factory for the model's platform, or a missing artifact or repository."""
    if factory is None:
        return none_yet
    if model.artifact is None:
        if run.options.repository is None:
            return "no repository given: pass the repository (or --reference FILE) to compare with a local run"
        return f"no model file for version {model.version} in {run.options.repository / model.name}"
    try:
        return factory(model)
    except TritonOpsError as e:
        return f"!{e.message}"
    except Exception as e:
        return f"!cannot run {model.artifact} locally: {short(message_of(e))}"


def add_no_reference(run: ValidationRun, model: str, label: str, why: str) -> None:
    """The row for a model that has no reference runner: a failure when ``why`` (from
    :func:`build_reference`) starts with '!', else a skip."""
    if why.startswith("!"):
        run.add(model, f"reference {label}", "-", "fail", why[1:],
                hint="check the model file, or point --reference at the artifact the server serves")
    else:
        run.add(model, f"reference {label}", "-", "skip", why)
