"""Example input data for every Triton data type, used to verify conversions and smoke-test models.

Data follow the tensor specs exactly as a client would send them: ``dims`` (``-1`` replaced by a
default size), a leading batch dimension when the model batches, and ``reshape`` ignored (Triton
applies it on the server side)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tritonops.dtypes import numpy_dtype
from tritonops.spec import TensorSpec

# Integers without a value range are drawn from [0, 10): small, non-negative values are safe as
# indices, counts and lengths for most models and fit every integer type.
DEFAULT_INT_RANGE = (0, 9)
_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789 ", dtype=np.uint8)


def shape_of(spec: TensorSpec, batch: int | None, dim_default: int = 4) -> tuple[int, ...]:
    """The shape a client sends: ``(batch, *dims)`` or just ``dims`` when ``batch`` is None."""
    dims = tuple(dim_default if d == -1 else d for d in spec.dims)
    return dims if batch is None else (batch, *dims)


def make_array(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random data of ``spec``'s type and ``shape``, within ``spec.value_range`` when given."""
    name = spec.dtype.name
    lo_hi = spec.value_range
    if name == "BYTES":
        count = math.prod(shape)
        lengths = rng.integers(1, 9, size=count)
        items = [bytes(rng.choice(_ALPHABET, size=int(n))) for n in lengths]
        arr = np.empty(count, dtype=np.object_)
        arr[:] = items
        return arr.reshape(shape)
    if name == "BOOL":
        return rng.random(shape) < 0.5
    target = np.dtype(numpy_dtype(spec.dtype))
    if name in ("FP16", "FP32", "FP64", "BF16"):
        values = rng.standard_normal(shape) if lo_hi is None else rng.uniform(lo_hi[0], lo_hi[1], size=shape)
        return values.astype(target)
    # integers: inclusive range, clipped to what the type can hold
    info = np.iinfo(target)
    lo, hi = (DEFAULT_INT_RANGE if lo_hi is None else (math.ceil(lo_hi[0]), math.floor(lo_hi[1])))
    lo = min(max(lo, int(info.min)), int(info.max))
    hi = max(min(hi, int(info.max)), lo)  # a range with no integer in it, e.g. [0.2, 0.8]: use one value
    return rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64 if target.kind == "i" else np.uint64
                        ).astype(target)


def make_inputs(specs: Sequence[TensorSpec], batch: int | None, rng: np.random.Generator,
                dim_default: int = 4) -> dict[str, np.ndarray]:
    """One request's inputs: a random array per spec, keyed by name.

    ``batch`` is the leading batch size for a batching model, or None for a non-batched model
    (``dims`` are then the full shape). ``-1`` dims become ``dim_default``."""
    return {s.name: make_array(s, shape_of(s, batch, dim_default), rng) for s in specs}
