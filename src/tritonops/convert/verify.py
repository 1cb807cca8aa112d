"""Numerical verification: run a reference and a candidate model on the same generated inputs and
compare every output, or (with no reference) check a model produces the outputs it declares.

A *runner* is any callable taking ``{input name: array}`` and returning ``{output name: array}``;
this module provides runners for onnxruntime, an in-memory ``torch.nn.Module`` and a TorchScript
file (torch interop comes from ``torch_export``, which imports nothing from here). torch is imported
only when a torch runner is made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tritonops.compare import compare_arrays, dtype_name, format_error, format_tolerance, shape_text
from tritonops.compare import format_table as compare_table
from tritonops.convert.examples import make_inputs
from tritonops.errors import ConversionError, TritonOpsError
from tritonops.reference import Runner, error_line
from tritonops.spec import TensorSpec

SCHEMA = "tritonops.verification/1"


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Row:
    """One output at one batch size. ``max_abs``/``max_rel`` are None when no numbers were compared
    (shape checks, mismatched shapes, failed runs); ``problem`` says why a failed row failed."""

    batch: int | None
    output: str
    ok: bool
    max_abs: float | None = None
    max_rel: float | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch, "output": self.output, "ok": self.ok, "max_abs": self.max_abs,
            "max_rel": self.max_rel, "shape": None if self.shape is None else list(self.shape),
            "dtype": self.dtype, "problem": self.problem,
        }


@dataclass(frozen=True)
class VerificationReport:
    """``kind`` is ``"compare"`` (candidate against a reference, with tolerances) or ``"shapes"``
    (one model against its declared outputs)."""

    rows: tuple[Row, ...]
    kind: Literal["compare", "shapes"] = "compare"
    atol: float | None = None
    rtol: float | None = None
    batch_sizes: tuple[int | None, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)

    @property
    def failures(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if not r.ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "kind": self.kind, "ok": self.ok, "atol": self.atol, "rtol": self.rtol,
            "batch_sizes": list(self.batch_sizes), "rows": [r.to_dict() for r in self.rows],
        }


class VerificationError(ConversionError):
    """The converted model does not match the original (or its own declaration). ``report`` is the
    full report; ``details`` its table, which the CLI prints under the error."""

    def __init__(self, message: str, hint: str | None, report: VerificationReport) -> None:
        super().__init__(message, hint)
        self.report = report
        self.details = format_table(report)


def _batch_text(batch: int | None) -> str:
    return "-" if batch is None else str(batch)


def format_table(report: VerificationReport) -> str:
    """Plain-text table: batch, output, max_abs, max_rel, status (with the problem, if any)."""
    rows = [(_batch_text(r.batch), r.output, format_error(r.max_abs), format_error(r.max_rel),
             "ok" if r.ok else f"FAIL: {r.problem}" if r.problem else "FAIL") for r in report.rows]
    return compare_table(rows, ("batch", "output", "max_abs", "max_rel", "status"))


def raise_if_failed(report: VerificationReport) -> None:
    """Raise ``VerificationError`` naming the first failure; do nothing when the report is ok."""
    if report.ok:
        return
    if not report.rows:
        raise VerificationError("nothing was verified: the model has no outputs to check",
                                "declare the model's outputs", report)
    first = report.failures[0]
    if report.kind == "shapes":
        raise VerificationError(
            f"the model does not produce the outputs it declares: {first.problem}",
            "fix the model's declared outputs (or the --output specs) to match what it computes",
            report,
        )
    raise VerificationError(
        f"converted model differs from the original: {first.problem}",
        "see the table below; loosen --atol/--rtol only if the difference is expected",
        report,
    )


# ---------------------------------------------------------------- comparison


def _at(batch: int | None) -> str:
    return "unbatched" if batch is None else f"batch {batch}"


def _compare(name: str, batch: int | None, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> Row:
    """One output at one batch size, through the one comparison (tritonops.compare), types included."""
    d = compare_arrays(got, want, atol, rtol, name=name, check_dtype=True)
    n = f"output '{name}'"
    if d.kind in ("shape", "dtype"):
        return Row(batch, name, False, shape=d.shape, dtype=d.dtype, problem=d.problem)
    if d.kind == "unequal":
        return Row(batch, name, False, shape=d.shape, dtype=d.dtype, problem=f"{d.problem} ({_at(batch)})")
    if d.kind == "nonfinite":
        return Row(batch, name, False, d.max_abs, d.max_rel, d.shape, d.dtype,
                   problem=f"{n} has {d.n_bad} non-finite values (nan/inf) where the original differs "
                           f"({_at(batch)})")
    if d.kind == "tolerance":
        return Row(batch, name, False, d.max_abs, d.max_rel, d.shape, d.dtype,
                   problem=f"{n} max abs error {format_error(d.max_abs)} > atol {format_tolerance(atol)} "
                           f"({_at(batch)})")
    return Row(batch, name, True, d.max_abs, d.max_rel, d.shape, d.dtype)


def model_feed(specs: Sequence[TensorSpec], batch: int | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs as the model receives them from Triton: generated as the client sends them, then
    reshaped to ``reshape`` where a spec has one (Triton applies it before the model)."""
    return as_model_feed(specs, make_inputs(specs, batch, rng), batch)


def as_model_feed(specs: Sequence[TensorSpec], given: dict[str, np.ndarray],
                  batch: int | None) -> dict[str, np.ndarray]:
    """Client-shaped inputs reshaped to ``reshape`` where a spec has one (Triton applies it before the model)."""
    feed = dict(given)
    for s in specs:
        if s.name not in feed:
            continue
        if s.reshape is not None:
            shape = tuple(s.reshape) if batch is None else (batch, *s.reshape)
            feed[s.name] = feed[s.name].reshape(shape)
    return feed


def _run(run: Runner, inputs: dict[str, np.ndarray], batch: int | None, which: str) -> dict[str, np.ndarray] | Row:
    """Call a runner on a private copy of the inputs; a failure becomes a failed row (typed
    tritonops errors, e.g. a missing dependency, propagate)."""
    try:
        return run({k: v.copy() for k, v in inputs.items()})
    except TritonOpsError:
        raise
    except Exception as e:
        return Row(batch, "*", False, problem=f"the {which} failed to run ({_at(batch)}): {error_line(e)}")


def _feed(inputs: Sequence[TensorSpec], batch: int | None, i: int, rng: np.random.Generator,
          feeds: Sequence[dict[str, np.ndarray]] | None) -> dict[str, np.ndarray]:
    return model_feed(inputs, batch, rng) if feeds is None else as_model_feed(inputs, feeds[i], batch)


def verify(reference: Runner, candidate: Runner, inputs: Sequence[TensorSpec], batch_sizes: Sequence[int | None],
           atol: float, rtol: float, seed: int = 0,
           feeds: Sequence[dict[str, np.ndarray]] | None = None) -> VerificationReport:
    """Run both models on the same random inputs at each batch size (None: one non-batched run) and
    compare every output of the reference: ``|candidate - reference| <= atol + rtol * |reference|``
    everywhere, shapes and types equal, nan/inf at the same positions. ``feeds``: the inputs (as a
    client sends them) for each batch size, instead of generated ones (build --samples)."""
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    for i, batch in enumerate(batch_sizes):
        feed = _feed(inputs, batch, i, rng, feeds)
        want = _run(reference, feed, batch, "original model")
        if isinstance(want, Row):
            rows.append(want)
            continue
        got = _run(candidate, feed, batch, "converted model")
        if isinstance(got, Row):
            rows.append(got)
            continue
        for name, ref in want.items():
            if name not in got:
                rows.append(Row(batch, name, False, problem=f"output '{name}' is missing from the converted model "
                                                            f"(it returned {', '.join(got) or 'nothing'})"))
                continue
            rows.append(_compare(name, batch, got[name], ref, atol, rtol))
    return VerificationReport(tuple(rows), "compare", atol, rtol, tuple(batch_sizes))


def _expected_shape(spec: TensorSpec, batch: int | None) -> tuple[int, ...]:
    dims = spec.reshape if spec.reshape is not None else spec.dims
    return tuple(dims) if batch is None else (batch, *dims)


def verify_shapes(run: Runner, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                  batch_sizes: Sequence[int | None], seed: int = 0,
                  feeds: Sequence[dict[str, np.ndarray]] | None = None) -> VerificationReport:
    """No reference: at each batch size the model must produce every declared output with the
    declared type and shape (``-1`` dims match any size; ``reshape``, when set, is the model's shape)."""
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    for i, batch in enumerate(batch_sizes):
        feed = _feed(inputs, batch, i, rng, feeds)
        got = _run(run, feed, batch, "model")
        if isinstance(got, Row):
            rows.append(got)
            continue
        for spec in outputs:
            if spec.name not in got:
                rows.append(Row(batch, spec.name, False,
                                problem=f"output '{spec.name}' is missing (the model returned "
                                        f"{', '.join(got) or 'nothing'})"))
                continue
            arr = np.asarray(got[spec.name])
            shape = tuple(int(d) for d in arr.shape)
            dtype = dtype_name(arr)
            want = _expected_shape(spec, batch)
            fits = len(shape) == len(want) and all(w in (-1, s) for s, w in zip(shape, want, strict=True))
            if not fits:
                expected = [s if w == -1 else w for s, w in zip(shape, want, strict=False)] \
                    if len(shape) == len(want) else list(want)
                rows.append(Row(batch, spec.name, False, shape=shape, dtype=dtype,
                                problem=f"output '{spec.name}' has shape {shape_text(shape)}, "
                                        f"expected {shape_text(expected)}"))
            elif dtype != spec.dtype.name:
                rows.append(Row(batch, spec.name, False, shape=shape, dtype=dtype,
                                problem=f"output '{spec.name}' has type {dtype}, expected {spec.dtype.name}"))
            else:
                rows.append(Row(batch, spec.name, True, shape=shape, dtype=dtype))
    return VerificationReport(tuple(rows), "shapes", None, None, tuple(batch_sizes))


# ---------------------------------------------------------------- runners


