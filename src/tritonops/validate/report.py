"""What validation returns and what it takes: result rows, the report, the options."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tritonops.errors import UsageError, ValidationFailed
from tritonops.names import check_model_name

SCHEMA = "tritonops.validate/1"
PROTOCOLS: tuple[str, ...] = ("http-json", "http-binary", "grpc")
# gRPC streaming: validated for stateful and decoupled models whenever gRPC is (or when named alone).
STREAM_PROTOCOL = "grpc-stream"
Status = Literal["pass", "fail", "skip"]
# Outputs that crossed the wire as JSON text must round-trip exactly for FP32/FP64 (the server
# prints shortest round-trip decimals); the allowance covers a last-ulp difference in FP16/other
# encoders. What was measured is reported as max_error on every "agree" row.
PATH_FLOAT_TOL = 1e-6
SERVER = ""  # the model column of server-wide rows




@dataclass(frozen=True)
class CheckResult:
    """One row: a check of one model (or of the server, model ``""``) over one protocol.

    ``protocol`` is one of :data:`PROTOCOLS`, :data:`STREAM_PROTOCOL`, ``"http"`` / ``"grpc"`` for
    checks that do not depend on the tensor encoding, or ``"-"`` for checks that involve no protocol
    (config.pbtxt, cache)."""

    model: str
    check: str
    protocol: str
    status: Status
    detail: str = ""
    max_error: float | None = None
    latency_ms: float | None = None
    hint: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def line(self) -> str:
        """The row as one sentence, used for the error line when it failed."""
        where = f"model '{self.model}'" if self.model else "server"
        if self.check == "ready":  # the detail reads "not ready (STATE): reason"
            return f"{where} is {self.detail}"
        over = f" over {self.protocol}" if self.protocol not in ("-", "") else ""
        return f"{where}: {self.check}{over}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "check": self.check, "protocol": self.protocol, "status": self.status,
            "passed": self.passed, "max_error": json_float(self.max_error), "latency_ms": self.latency_ms,
            "detail": self.detail, "hint": self.hint,
        }


def json_float(x: float | None) -> float | str | None:
    if x is None or math.isfinite(x):
        return x
    return str(x)  # inf/nan are not JSON


@dataclass(frozen=True)
class ValidationReport:
    """Everything ``validate`` found. ``ok`` only if no row failed (skipped rows say why)."""

    http_url: str
    grpc_url: str
    server_version: str
    repository: str | None
    models: tuple[str, ...]
    rows: tuple[CheckResult, ...]
    atol: float
    rtol: float
    schema: str = SCHEMA

    @property
    def ok(self) -> bool:
        return all(r.status != "fail" for r in self.rows)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.rows if r.status == "fail")

    def rows_for(self, model: str, check: str | None = None) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.rows if r.model == model and (check is None or r.check == check))

    def error(self) -> ValidationFailed:
        """The error to raise when the report failed: the first failure, as one line, and its hint."""
        fails = self.failures
        if not fails:
            raise ValueError("the report has no failures")
        # A server that is not ready is usually the consequence of a model that failed: name that.
        first = min(fails, key=lambda r: r.model == SERVER)
        more = f" (and {len(fails) - 1} more failed check{'s' if len(fails) > 2 else ''})" if len(fails) > 1 else ""
        return ValidationFailed(first.line() + more, first.hint or "see the table above for every failed check")

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(1 for r in self.rows if r.status == s) for s in ("pass", "fail", "skip")}
        return {
            "schema": self.schema, "ok": self.ok, "http_url": self.http_url, "grpc_url": self.grpc_url,
            "server_version": self.server_version, "repository": self.repository, "models": list(self.models),
            "atol": self.atol, "rtol": self.rtol, "counts": counts, "rows": [r.to_dict() for r in self.rows],
        }


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class ValidateOptions:
    """What to validate and how. URLs are ``host:port`` without a scheme."""

    http_url: str = "localhost:8000"
    grpc_url: str = "localhost:8001"
    metrics_url: str | None = "localhost:8002"
    models: tuple[str, ...] = ()  # empty: every model in the server's repository index
    inputs: Path | None = None  # .npz or .json with one array per input (batch dim included)
    repository: Path | None = None  # compare against its config.pbtxt and run its artifacts locally
    reference: Path | None = None  # another artifact for the local reference run (one model only)
    batch_size: int | None = None  # the larger batch (default min(max_batch_size, 4))
    atol: float = 1e-4
    rtol: float = 1e-3
    protocols: tuple[str, ...] = PROTOCOLS
    grpc_max_message_bytes: int | None = None  # like a production client's limit; None: tritonclient's 2 GB
    timeout_s: float = 30.0
    latency_repeats: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for url, flag in ((self.http_url, "--http-port"), (self.grpc_url, "--grpc-port")):
            if "://" in url:
                raise UsageError(f"URL '{url}' includes a scheme", "give host:port, e.g. --url localhost")
            if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", url):
                raise UsageError(f"cannot parse endpoint '{url}'", f"give a host with --url and a port with {flag}")
        for m in self.models:
            check_model_name(m)
        bad = [p for p in self.protocols if p not in (*PROTOCOLS, STREAM_PROTOCOL)]
        if bad or not self.protocols:
            raise UsageError(f"unknown protocol '{bad[0] if bad else ''}'",
                             f"use some of: {', '.join((*PROTOCOLS, STREAM_PROTOCOL))}")
        if self.batch_size is not None and self.batch_size < 2:
            raise UsageError(f"--batch-size {self.batch_size} is below 2",
                             "give the larger batch to test (batch 1 is always tested), e.g. --batch-size 4")
        if self.atol < 0 or self.rtol < 0:
            raise UsageError("tolerances must be >= 0", "use e.g. --atol 1e-4 --rtol 1e-3")
        if self.grpc_max_message_bytes is not None and self.grpc_max_message_bytes < 1:
            raise UsageError("the gRPC message size limit must be positive", "e.g. --grpc-max-message-size 4MB")
        if self.reference is not None and len(self.models) != 1:
            raise UsageError("--reference needs exactly one --model", "name the model it stands for: --model NAME")
        if self.reference is not None and not self.reference.exists():
            raise UsageError(f"reference model '{self.reference}' does not exist", "check the path")
