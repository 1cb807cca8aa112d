"""The state of one validation run: options, clients, progress, references and the rows so far."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tritonops.client import TritonClient
from tritonops.progress import Progress
from tritonops.reference import (
    ReferenceRunner,
)
from tritonops.validate.report import CheckResult, Status, ValidateOptions


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
