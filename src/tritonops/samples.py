"""Inputs a user gives for a model: read from a file, checked against the model's interface.

One reader for request data files: ``.npz`` (one array per input, no pickles; strings as ``U``/``S``
arrays) and ``.json`` (``{"name": nested list}`` or KServe ``{"inputs": [...]}``); the checks of names,
types, shapes and batch size against a served config; example data generated from the interface;
and the example inputs a build saves beside ``config.pbtxt`` (:data:`EXAMPLES_FILE`).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tritonops.convert.examples import make_inputs
from tritonops.dtypes import BY_NAME, from_numpy, numpy_dtype, str_to_bytes
from tritonops.errors import UsageError
from tritonops.paths import read_bytes
from tritonops.spec import TensorSpec


def generate_inputs(specs: Sequence[TensorSpec], batch: int | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Example data for the required inputs (convert.examples: every type; BYTES as short ASCII,
    which JSON can carry). Variable dims become 3, so a dims bug cannot hide behind a square shape."""
    return make_inputs([t for t in specs if not t.optional], batch, rng, dim_default=3)


NPZ_READ_LIMIT = 2 << 30  # request samples are read whole; a FIFO or /dev/zero is refused
EXAMPLES_FILE = "tritonops_examples.npz"  # beside config.pbtxt: example inputs validate uses by default


def stack_samples(items: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Samples one by one (perf.inputs.Samples.items) as one array per input whose first axis
    counts samples: the meaning of an ``.npz`` for every command."""
    if not items:
        return {}
    return {name: np.stack([item[name] for item in items]) for name in items[0]}


def write_examples(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write samples (first axis: samples) as an ``.npz`` that :func:`read_npz` reads back: no pickles,
    so BYTES are stored as a fixed-width bytes array."""
    plain = {k: (np.array([bytes(b) for b in v.reshape(-1)], dtype=np.bytes_).reshape(v.shape)
                 if v.dtype == np.object_ else v) for k, v in arrays.items()}
    with path.open("wb") as f:
        np.savez(f, **plain)
    return path


class NpzSamples(dict[str, np.ndarray]):
    """Arrays read from an ``.npz``: the first axis of each counts samples (see :func:`npz_request`)."""


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The one reader of ``.npz`` request data (``validate --inputs``, ``perf``/``loadtest --samples``, the
    examples a build saves): one array per input, no pickles, so strings as ``U``/``S`` arrays.

    Every command gives the file one meaning: **the first axis counts samples**. For a model that
    batches, a sample is one row of a batch; for a model without batching, a sample is one whole
    request (the input's full dims)."""
    data = read_bytes(path, "samples file", NPZ_READ_LIMIT)  # regular files only, bounded
    if not data.startswith(b"PK"):
        raise UsageError(f"cannot read '{path}': it is not an .npz (zip) file", "write it with numpy.savez")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise UsageError(f"'{path}' holds object arrays, which would need unpickling",
                             "save strings as a numpy str or bytes array (dtype 'U' or 'S')") from None
        raise UsageError(f"cannot read '{path}': {e}", "write it with numpy.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:  # a truncated or non-zip file
        raise UsageError(f"cannot read '{path}': {e}", "write it with numpy.savez") from None


def npz_request(samples: Mapping[str, np.ndarray], max_batch_size: int) -> dict[str, np.ndarray]:
    """One request from an ``.npz``'s samples: all of them as one batch when the model batches, the
    first sample when it does not (each sample is then a whole request)."""
    if max_batch_size > 0:
        return dict(samples)
    return {k: a[0] if a.ndim else a for k, a in samples.items()}


def castable(arr: np.ndarray, spec: TensorSpec) -> bool:
    """The one rule for numpy data given for an input: strings/bytes for BYTES, bool for BOOL, and
    otherwise numbers that convert to the input's type without loss (numpy's "safe" casting)."""
    if spec.dtype.is_string:
        return arr.dtype.kind in "OSU"
    if arr.dtype.kind in "OSUV":
        return False
    return bool(np.can_cast(arr.dtype, np.dtype(numpy_dtype(spec.dtype)), casting="safe"))


def load_inputs(path: Path) -> dict[str, np.ndarray]:
    """Read user inputs: ``.npz`` (one array per input; no pickles, so strings as ``U``/``S`` arrays)
    or ``.json`` (``{"name": nested list}`` or KServe ``{"inputs": [{name, datatype, shape, data}]}``)."""
    if not path.is_file():
        raise UsageError(f"inputs file '{path}' does not exist", "give an .npz or .json file with --inputs")
    if path.suffix == ".npz":
        return NpzSamples({k: (a.astype(np.object_) if a.dtype.kind == "S" else str_to_bytes(a) if a.dtype.kind == "U"
                               else a) for k, a in read_npz(path).items()})
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read '{path}' as JSON: {e}", "write {\"input_name\": [[...]]}") from None
        return _inputs_from_json(data, path)
    raise UsageError(f"inputs file '{path}' is neither .npz nor .json", "save the inputs with numpy.savez or as JSON")


def _inputs_from_json(data: Any, path: Path) -> dict[str, np.ndarray]:
    """JSON arrays keep no dtype: they become ``_JsonArray``s converted once the config is known."""
    result: dict[str, np.ndarray] = {}
    if isinstance(data, dict) and isinstance(data.get("inputs"), list):
        for item in data["inputs"]:
            if not isinstance(item, dict) or "name" not in item or "data" not in item:
                raise UsageError(f"{path}: each entry of \"inputs\" needs \"name\" and \"data\"",
                                 "follow the KServe v2 request format")
            arr = _JsonArray.make(item["data"], item.get("datatype"), item.get("shape"), path, item["name"])
            result[str(item["name"])] = arr
        return result
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected an object mapping input names to arrays", "write {\"x\": [[1.0, 2.0]]}")
    for name, value in data.items():
        result[str(name)] = _JsonArray.make(value, None, None, path, name)
    return result


class _JsonArray(np.ndarray):
    """An array read from JSON; ``declared`` is the datatype written in the file, if any."""

    declared: str | None = None

    @classmethod
    def make(cls, value: Any, datatype: str | None, shape: Any, path: Path, name: str) -> _JsonArray:
        try:
            arr = np.array(value, dtype=np.object_ if datatype == "BYTES" else None)
        except ValueError:
            raise UsageError(f"{path}: input '{name}' is not a rectangular array",
                             "give every row the same length") from None
        if shape is not None:
            try:
                arr = arr.reshape([int(s) for s in shape])
            except (ValueError, TypeError):
                raise UsageError(f"{path}: input '{name}' has {arr.size} values, which do not fill shape {shape}",
                                 "make \"shape\" match \"data\"") from None
        if arr.dtype.kind == "U" or (arr.dtype == np.object_ and arr.size and
                                     all(isinstance(v, str) for v in arr.reshape(-1))):
            arr = str_to_bytes(arr)
        view = arr.view(cls)
        view.declared = datatype.upper() if isinstance(datatype, str) else None
        return view


def check_inputs(model: str, given: Mapping[str, np.ndarray], specs: Sequence[TensorSpec],
                 max_batch_size: int) -> dict[str, np.ndarray]:
    """User inputs against the served config: names, types and shapes, each mismatch one clear error."""
    by_name = {t.name: t for t in specs}
    unknown = [n for n in given if n not in by_name]
    if unknown:
        raise UsageError(f"input '{unknown[0]}' given for model '{model}' is not one of its inputs "
                         f"({', '.join(by_name)})", "rename it to one of the model's inputs")
    missing = [t.name for t in specs if t.name not in given and not t.optional]
    if missing:
        raise UsageError(f"no data for input '{missing[0]}' of model '{model}'",
                         f"the inputs file needs an array for each of: {', '.join(t.name for t in specs)}")
    result: dict[str, np.ndarray] = {}
    batch_sizes = set()
    for name, raw in given.items():
        t = by_name[name]
        arr = _coerce(model, t, raw)
        expected = ([-1] if max_batch_size > 0 else []) + list(t.dims)
        shape_ok = arr.ndim == len(expected) and all(e in (-1, s) for e, s in zip(expected, arr.shape, strict=False))
        if not shape_ok:
            batch_note = " (the first dimension is the batch)" if max_batch_size > 0 else ""
            raise UsageError(
                f"input '{name}' of model '{model}': expected shape {format_shape(expected)}{batch_note}, "
                f"given {format_shape(arr.shape)}",
                f"reshape the array to {format_shape(expected)} (-1: any size)",
            )
        if max_batch_size > 0:
            if arr.shape[0] > max_batch_size or arr.shape[0] < 1:
                raise UsageError(f"input '{name}' of model '{model}' has batch {arr.shape[0]}, but the model's "
                                 f"max_batch_size is {max_batch_size}", f"give 1 to {max_batch_size} rows")
            batch_sizes.add(arr.shape[0])
        result[name] = arr
    if len(batch_sizes) > 1:
        raise UsageError(f"the inputs of model '{model}' have different batch sizes ({sorted(batch_sizes)})",
                         "give every input the same first dimension")
    return result


def _coerce(model: str, t: TensorSpec, arr: np.ndarray) -> np.ndarray:
    declared = getattr(arr, "declared", None)
    from_json = isinstance(arr, _JsonArray)
    arr = np.asarray(arr)
    if declared is not None and BY_NAME.get(declared) != t.dtype:
        raise UsageError(f"input '{t.name}' of model '{model}': expected {t.dtype.name}, given {declared}",
                         f"write \"datatype\": \"{t.dtype.name}\" and matching data")
    if from_json:
        # JSON numbers carry no width: convert them, refusing lossy conversions (1.5 -> INT64).
        try:
            if t.dtype.is_string:
                if arr.dtype != np.object_ or not all(isinstance(v, bytes) for v in arr.reshape(-1)):
                    raise ValueError
                return arr
            if t.dtype.name == "BOOL":
                if arr.dtype != np.bool_:
                    raise ValueError
                return arr
            converted = arr.astype(numpy_dtype(t.dtype))
            if arr.dtype.kind not in "biuf" or not np.array_equal(converted.astype(arr.dtype), arr):
                raise ValueError
            return converted
        except (ValueError, TypeError):
            kind = "strings" if arr.dtype.kind in "OU" else str(arr.dtype)
            raise UsageError(f"input '{t.name}' of model '{model}': expected {t.dtype.name}, given {kind}",
                             f"give {t.dtype.name} values for '{t.name}'") from None
    given = from_numpy(arr.dtype).name if arr.dtype.kind not in "V" else str(arr.dtype)
    if not castable(arr, t):
        conv = "np.str_ / bytes" if t.dtype.is_string else f"arr.astype(np.{np.dtype(numpy_dtype(t.dtype)).name})"
        raise UsageError(f"input '{t.name}' of model '{model}': expected {t.dtype.name}, given {given}",
                         f"convert it before saving, e.g. {conv}")
    if arr.dtype.kind in "SU":
        return arr.astype(np.object_) if arr.dtype.kind == "S" else str_to_bytes(arr)
    return arr if t.dtype.is_string else arr.astype(numpy_dtype(t.dtype), copy=False)


def format_shape(s: Sequence[int]) -> str:
    """A shape as written in messages: [2, 3]."""
    return "[" + ", ".join(str(d) for d in s) + "]"
