"""The one numeric comparison of model outputs: a converted model against the original (build
verification), a served model against a local run (validate, the deploy canary), one protocol
against another (validate).

``compare_arrays(got, want, atol, rtol)`` compares one output and returns an :class:`OutputDiff`;
``compare_outputs`` does it for every output a reference produced and gives the per-output table.
The rules, in this order:

- shapes must be equal (nothing else is compared when they are not);
- with ``check_dtype``, the Triton types must be equal;
- strings/bytes (numpy object, ``S``, ``U``) and BOOL compare exactly, element by element;
- integers compare exactly (a tolerance makes no sense for token ids or class indices);
- floats: ``|got - want| <= atol + rtol * |want|`` at every position where both are finite, and
  nan/+inf/-inf must sit at the same positions with the same value.

``max_abs``/``max_rel`` are measured over the positions where both values are finite (None when
no numbers were compared: shapes or types differ, or strings)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tritonops.dtypes import from_numpy
from tritonops.errors import UsageError

Mode = Literal["strings", "exact", "float"]  # how the values were compared
Kind = Literal["match", "shape", "dtype", "missing", "unequal", "nonfinite", "tolerance"]


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def dtype_name(a: np.ndarray) -> str:
    """The Triton type name of an array (numpy's name for types Triton does not have)."""
    try:
        return from_numpy(a.dtype).name
    except UsageError:
        return str(a.dtype)


@dataclass(frozen=True)
class OutputDiff:
    """One output compared. ``kind`` says what failed ("match" when nothing did); ``n_bad`` counts the
    positions that differ (for "nonfinite": where nan/inf disagree, for "tolerance": values outside
    it, for "unequal": unequal elements)."""

    name: str
    ok: bool
    kind: Kind
    mode: Mode | None  # None when the values were not compared (shape, type, missing)
    shape: tuple[int, ...]
    want_shape: tuple[int, ...]
    dtype: str
    want_dtype: str
    size: int = 0
    n_bad: int = 0
    max_abs: float | None = None
    max_rel: float | None = None
    atol: float = 0.0
    rtol: float = 0.0

    @property
    def max_error(self) -> float | None:
        """One number per output for reports: ``max_abs``; for strings 0.0 (equal) or 1.0 (not); None
        when the shapes or types differ."""
        if self.mode == "strings":
            return float(self.n_bad > 0)
        return self.max_abs

    @property
    def problem(self) -> str:
        """What differs, as a sentence naming the output ("" when it matches)."""
        n = f"output '{self.name}'"
        if self.kind == "match":
            return ""
        if self.kind == "missing":
            return f"{n} is missing"
        if self.kind == "shape":
            return f"{n} has shape {shape_text(self.shape)}, expected {shape_text(self.want_shape)}"
        if self.kind == "dtype":
            return f"{n} has type {self.dtype}, expected {self.want_dtype}"
        if self.kind == "unequal":
            return f"{n} differs in {self.n_bad} of {self.size} values"
        if self.kind == "nonfinite":
            return f"{n} has {self.n_bad} non-finite values (nan/inf) where the expected output differs"
        return f"{n}: {self.n_bad} of {self.size} values outside tolerance"

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.name, "ok": self.ok, "kind": self.kind, "mode": self.mode, "shape": list(self.shape),
                "expected_shape": list(self.want_shape), "dtype": self.dtype, "expected_dtype": self.want_dtype,
                "size": self.size, "n_bad": self.n_bad, "max_abs": _json_float(self.max_abs),
                "max_rel": _json_float(self.max_rel), "atol": self.atol, "rtol": self.rtol}


def _json_float(x: float | None) -> float | str | None:
    return x if x is None or math.isfinite(x) else str(x)


def _is_text(a: np.ndarray) -> bool:
    return a.dtype.kind in "OSU"


def compare_arrays(got: Any, want: Any, atol: float, rtol: float, *, name: str = "",
                   check_dtype: bool = False) -> OutputDiff:
    """Compare one output (``got``) with what it should be (``want``); see the module's rules."""
    got, want = np.asarray(got), np.asarray(want)
    base: dict[str, Any] = {"name": name, "shape": tuple(int(d) for d in got.shape),
                            "want_shape": tuple(int(d) for d in want.shape), "dtype": dtype_name(got),
                            "want_dtype": dtype_name(want), "atol": atol, "rtol": rtol}
    if got.shape != want.shape:
        return OutputDiff(ok=False, kind="shape", mode=None, **base)
    if check_dtype and base["dtype"] != base["want_dtype"]:
        return OutputDiff(ok=False, kind="dtype", mode=None, **base)
    size = int(got.size)
    if _is_text(got) or _is_text(want):
        equal = np.array([x == y for x, y in zip(got.ravel(), want.ravel(), strict=True)], dtype=bool)
        bad = int((~equal).sum())
        return OutputDiff(ok=bad == 0, kind="match" if bad == 0 else "unequal", mode="strings", size=size,
                          n_bad=bad, max_abs=0.0 if bad == 0 else None, max_rel=0.0 if bad == 0 else None, **base)
    if got.dtype.kind in "biu" and want.dtype.kind in "biu":
        if got.dtype.kind == "b" or want.dtype.kind == "b":
            diff = (got != want).astype(np.float64)
        else:
            diff = np.abs(got.astype(np.int64) - want.astype(np.int64)).astype(np.float64)
        bad = int(np.count_nonzero(got != want))
        denom = np.abs(want.astype(np.float64))
        rel = np.divide(diff, denom, where=denom > 0, out=np.zeros_like(diff))
        max_abs = float(diff.max()) if size else 0.0
        max_rel = float(rel.max()) if size else 0.0
        return OutputDiff(ok=bad == 0, kind="match" if bad == 0 else "unequal" if got.dtype.kind == "b"
                          else "tolerance", mode="exact", size=size, n_bad=bad, max_abs=max_abs, max_rel=max_rel,
                          **base)
    a = got.astype(np.float64)
    b = want.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        fin_a, fin_b = np.isfinite(a), np.isfinite(b)
        # non-finite values must sit at the same positions with the same value (nan, +inf, -inf)
        nonfinite_bad = (fin_a != fin_b) | (~fin_a & ~fin_b & ~((np.isnan(a) & np.isnan(b)) | (a == b)))
        both = fin_a & fin_b
        diff = np.abs(np.subtract(a, b, where=both, out=np.zeros_like(a)))
        max_abs = float(diff.max()) if diff.size else 0.0
        denom = np.where(both, np.abs(b), 0.0)
        rel = np.divide(diff, denom, where=denom > 0, out=np.zeros_like(a))
        max_rel = float(rel.max()) if rel.size else 0.0
        too_far = both & (diff > atol + rtol * denom)
    n_nonfinite = int(nonfinite_bad.sum())
    if n_nonfinite:
        return OutputDiff(ok=False, kind="nonfinite", mode="float", size=size, n_bad=n_nonfinite, max_abs=max_abs,
                          max_rel=max_rel, **base)
    n_far = int(too_far.sum())
    return OutputDiff(ok=n_far == 0, kind="match" if n_far == 0 else "tolerance", mode="float", size=size,
                      n_bad=n_far, max_abs=max_abs, max_rel=max_rel, **base)


def missing(name: str) -> OutputDiff:
    """The row for an output the reference has and the compared side lacks."""
    return OutputDiff(name=name, ok=False, kind="missing", mode=None, shape=(), want_shape=(), dtype="",
                      want_dtype="")


def compare_outputs(got: Mapping[str, Any], want: Mapping[str, Any], atol: float, rtol: float, *,
                    check_dtype: bool = False) -> tuple[OutputDiff, ...]:
    """Every output of ``want`` compared with the same output of ``got`` (a "missing" row when absent),
    in ``want``'s order: the per-output error table."""
    return tuple(compare_arrays(got[n], w, atol, rtol, name=n, check_dtype=check_dtype) if n in got else missing(n)
                 for n, w in want.items())


def format_error(x: float | None) -> str:
    """A max abs/rel error for a table: ``3.1e-02``, ``nan``, or ``-`` when nothing was measured."""
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    return f"{x:.1e}"


def format_tolerance(x: float | None) -> str:
    """``1e-04`` for round tolerances, ``2.5e-04`` otherwise."""
    if x is None:
        return "-"
    for digits in range(6):
        text = f"{x:.{digits}e}"
        if float(text) == x:
            return text
    return f"{x:.6e}"


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Plain-text columns: every column but the last padded to its widest cell."""
    lines = [tuple(header), *(tuple(r) for r in rows)]
    last = len(header) - 1
    widths = [max(len(line[i]) for line in lines) for i in range(last)]
    out = []
    for line in lines:
        cells = [line[i].ljust(widths[i]) for i in range(last)]
        out.append("  ".join([*cells, line[last]]).rstrip())
    return "\n".join(out)


def error_table(diffs: Sequence[OutputDiff]) -> str:
    """The per-output table: output, max_abs, max_rel, status (with what differs)."""
    rows = [(d.name, format_error(d.max_abs), format_error(d.max_rel), "ok" if d.ok else f"FAIL: {d.problem}")
            for d in diffs]
    return format_table(rows, ("output", "max_abs", "max_rel", "status"))
