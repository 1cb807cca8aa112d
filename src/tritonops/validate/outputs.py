"""What a response holds against what was expected: outputs against the served config's types and
shapes, and one tensor against another (by the one comparison, tritonops.compare)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tritonops.compare import compare_arrays
from tritonops.dtypes import from_numpy, str_to_bytes
from tritonops.samples import format_shape
from tritonops.spec import TensorSpec


def compare_tensors(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> tuple[bool, float | None, str]:
    """(equal within tolerance, max abs error, what differs)."""
    if b.dtype.kind == "U":
        b = str_to_bytes(b)
    d = compare_arrays(a, b, atol, rtol)
    if d.kind == "shape":
        return False, None, f"shape {format_shape(a.shape)} vs {format_shape(b.shape)}"
    if d.ok:
        return True, d.max_error, ""
    what = {"strings": "strings differ", "exact": "values differ"}.get(d.mode or "", "values outside tolerance")
    return False, d.max_error, f"{d.n_bad} of {d.size} {what}"


def output_problems(outputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], batch: int | None) -> list[str]:
    """Missing outputs, and types and shapes that differ from the config (``batch``: the leading
    dimension expected, None for a model that does not batch)."""
    problems = []
    for t in specs:
        a = outputs.get(t.name)
        if a is None:
            problems.append(f"output '{t.name}' is missing")
            continue
        got = from_numpy(a.dtype).name
        if t.dtype.name not in (got, "BF16"):
            problems.append(f"output '{t.name}' is {got}, the config says {t.dtype.name}")
        expected = ([batch] if batch is not None else []) + list(t.dims)
        if a.ndim != len(expected) or any(e not in (-1, s) for e, s in zip(expected, a.shape, strict=False)):
            problems.append(f"output '{t.name}' has shape {format_shape(a.shape)}, "
                            f"the config says {format_shape(expected)}")
    return problems


def differences(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], atol: float,
                rtol: float) -> tuple[list[str], float]:
    """Each output of ``got`` against ``want``: the problems (one per output) and the largest error
    (inf when a shape differs)."""
    worst = 0.0
    problems = []
    for name, a in got.items():
        if name not in want:
            problems.append(f"output '{name}' missing from the local run")
            continue
        ok, err, what = compare_tensors(a, np.asarray(want[name]), atol, rtol)
        worst = max(worst, err) if err is not None else float("inf")
        if not ok:
            problems.append(f"output '{name}': {what}" + (f" (max error {err:.3g})" if err else ""))
    return problems, worst
