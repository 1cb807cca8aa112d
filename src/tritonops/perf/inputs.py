"""Request data for load generators, written as perf_analyzer ``--input-data`` JSON.

Data come from the model's own interface (random data of each input's type; variable dims fixed to
one size, which is also passed as ``--shape``) or from user samples: an ``.npz`` with one array per
input (first axis: samples), image files (sent as encoded bytes to a BYTES input, or decoded to a
numeric input's shape with Pillow), or a text file with one sample per line for a BYTES input.

Numeric tensors are written as ``b64`` (raw little-endian bytes): perf_analyzer refuses explicit
``content`` for FP16/BF16. BYTES tensors are written as ``content`` strings when they are UTF-8,
otherwise as ``b64`` of Triton's serialized form (4-byte length + bytes per element).
"""

from __future__ import annotations

import base64
import json
import math
import stat
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tritonops.convert.examples import make_array
from tritonops.dtypes import BY_NAME, numpy_dtype
from tritonops.errors import MissingDependencyError, UsageError
from tritonops.samples import castable, read_npz
from tritonops.spec import TensorSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DEFAULT_VARIABLE_DIM = 4


@dataclass(frozen=True)
class Samples:
    """Request data: ``items[i][name]`` is one batch-1 sample (or a whole request for a model that
    does not batch) of input ``name``, with the exact shape sent."""

    items: tuple[dict[str, np.ndarray], ...]
    source: str  # "generated" or the sample file/directory

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.items[0].items()} if self.items else {}

    def tensor_bytes(self) -> int:
        """Bytes of tensor data in one batch-1 request (BYTES: serialized, with length prefixes)."""
        first = self.items[0]
        return sum(len(serialize_bytes(v)) if v.dtype == np.object_ else v.nbytes for v in first.values())


def serialize_bytes(arr: np.ndarray) -> bytes:
    """Triton's wire form of a BYTES tensor: each element as a 4-byte little-endian length + bytes."""
    parts = []
    for item in arr.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def parse_shapes(values: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``NAME:D1,D2`` (perf_analyzer's ``--shape`` syntax, dims without the batch dim)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for v in values:
        name, sep, dims = v.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d < 1 for d in shape):
            raise UsageError(f"cannot parse --shape '{v}'", "write it as NAME:D1,D2 with positive dims, e.g. x:16")
        shapes[name] = shape
    return shapes


def _fixed_dims(spec: TensorSpec, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    if spec.name in shapes:
        given = shapes[spec.name]
        if len(given) != len(spec.dims) or any(d not in (-1, g) for d, g in zip(spec.dims, given, strict=True)):
            raise UsageError(
                f"--shape {spec.name}:{','.join(map(str, given))} does not fit the input's dims "
                f"[{','.join(map(str, spec.dims))}]",
                "give one size per dim (without the batch dim); fixed dims must keep their size",
            )
        return given
    return tuple(DEFAULT_VARIABLE_DIM if d == -1 else d for d in spec.dims)


def generate_samples(inputs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]] | None = None,
                     count: int = 16, seed: int = 0) -> Samples:
    """Random data for every input, ``count`` distinct samples (variable dims: ``shapes`` or 4)."""
    rng = np.random.default_rng(seed)
    unknown = set(shapes or {}) - {t.name for t in inputs}
    if unknown:
        raise UsageError(f"--shape names unknown input(s): {', '.join(sorted(unknown))}",
                         f"the model's inputs are: {', '.join(t.name for t in inputs)}")
    fixed = {t.name: _fixed_dims(t, shapes or {}) for t in inputs}
    items = tuple({t.name: make_array(t, fixed[t.name], rng) for t in inputs if not t.optional}
                  for _ in range(count))
    return Samples(items, "generated")


# ------------------------------------------------------------------------------------------- user samples
def _required(inputs: Sequence[TensorSpec]) -> list[TensorSpec]:
    return [t for t in inputs if not t.optional]


def _fits(spec: TensorSpec, shape: tuple[int, ...]) -> bool:
    return len(shape) == len(spec.dims) and all(d in (-1, s) for d, s in zip(spec.dims, shape, strict=True))


def _cast(spec: TensorSpec, arr: np.ndarray, where: str) -> np.ndarray:
    if not castable(arr, spec):
        if spec.dtype.is_string:
            raise UsageError(f"{where} holds {arr.dtype} data, but input '{spec.name}' is BYTES",
                             "store strings or bytes for a BYTES input")
        target = np.dtype(numpy_dtype(spec.dtype))
        raise UsageError(f"{where} holds {arr.dtype} data, but input '{spec.name}' is {spec.dtype.name}",
                         f"save the array as {target} (numpy: arr.astype('{target}'))")
    if spec.dtype.is_string:
        flat = [x if isinstance(x, bytes) else str(x).encode() for x in arr.reshape(-1)]
        out = np.empty(len(flat), dtype=np.object_)
        out[:] = flat
        return out.reshape(arr.shape)
    return arr.astype(np.dtype(numpy_dtype(spec.dtype)), copy=False)


def _load_npz(path: Path, inputs: Sequence[TensorSpec], batched: bool) -> Samples:
    arrays = read_npz(path)
    required = _required(inputs)
    names = ", ".join(t.name for t in required)
    for t in required:
        if t.name not in arrays:
            raise UsageError(f"{path.name} has no array for input '{t.name}'",
                             f"name the arrays after the model's inputs: {names} (first axis: samples)")
    counts = {t.name: arrays[t.name].shape[0] if arrays[t.name].ndim else 0 for t in required}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise UsageError(f"{path.name}: arrays hold different sample counts {counts}",
                         "stack the same number of samples along the first axis of every array")
    count = next(iter(counts.values()))
    items = []
    for i in range(count):
        item = {}
        for t in required:
            arr = _cast(t, arrays[t.name][i], f"{path.name}['{t.name}']")
            if not _fits(t, tuple(arr.shape)):
                what = "one sample (without the batch dim)" if batched else "one request"
                raise UsageError(
                    f"{path.name}['{t.name}'] samples have shape {list(arr.shape)}, but input '{t.name}' "
                    f"takes [{','.join(map(str, t.dims))}]",
                    f"the first axis counts samples; each sample is {what}",
                )
            item[t.name] = arr
        items.append(item)
    shapes = {n: {tuple(it[n].shape) for it in items} for n in items[0]}
    if batched and any(len(s) > 1 for s in shapes.values()):
        raise UsageError(f"{path.name}: samples of one input differ in shape",
                         "use one shape per input, so samples can be batched together")
    return Samples(tuple(items), str(path))


def _single_input(inputs: Sequence[TensorSpec], what: str) -> TensorSpec:
    required = _required(inputs)
    if len(required) != 1:
        raise UsageError(f"{what} samples need a model with one input; this one has {len(required)}",
                         "write an .npz with one array per input instead")
    return required[0]


def _string_item(spec: TensorSpec, value: bytes, where: str) -> np.ndarray:
    dims = tuple(1 if d == -1 else d for d in spec.dims)
    if math.prod(dims) != 1:
        raise UsageError(f"input '{spec.name}' takes [{','.join(map(str, spec.dims))}] strings per sample; "
                         f"{where} gives one", "use an .npz for inputs holding several strings per sample")
    arr = np.empty(1, dtype=np.object_)
    arr[0] = value
    return arr.reshape(dims)


def _load_text(path: Path, inputs: Sequence[TensorSpec]) -> Samples:
    spec = _single_input(inputs, "text")
    if not spec.dtype.is_string:
        raise UsageError(f"text samples need a BYTES input; '{spec.name}' is {spec.dtype.name}",
                         "use an .npz for numeric inputs")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path} as UTF-8 text: {e}",
                         "give a text file with one sample per line") from None
    if not lines:
        raise UsageError(f"{path} has no non-empty lines", "write one sample per line")
    return Samples(tuple({spec.name: _string_item(spec, line.encode(), path.name)} for line in lines), str(path))


def _decode_image(path: Path, spec: TensorSpec) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError("pillow", "perf", "decoding image samples for a numeric input") from None
    dims = spec.dims
    if len(dims) != 3 or -1 in dims:
        raise UsageError(f"input '{spec.name}' has dims [{','.join(map(str, dims))}]; decoded images need "
                         "fixed HWC or CHW dims", "give an .npz of decoded arrays instead")
    chw = dims[0] in (1, 3) and dims[2] not in (1, 3)
    h, w, c = (dims[1], dims[2], dims[0]) if chw else dims
    if c not in (1, 3):
        raise UsageError(f"input '{spec.name}' has {c} channels", "images decode to 1 (L) or 3 (RGB) channels")
    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB" if c == 3 else "L").resize((w, h)))
    except OSError as e:
        raise UsageError(f"cannot decode image {path}: {e}", "give PNG or JPEG files") from None
    pixels = pixels.reshape(h, w, c)
    if chw:
        pixels = pixels.transpose(2, 0, 1)
    target = np.dtype(numpy_dtype(spec.dtype))
    if target.kind == "f":
        return (pixels.astype(np.float32) / 255.0).astype(target)  # the usual [0, 1] scaling
    return pixels.astype(target)


def _load_images(files: Sequence[Path], inputs: Sequence[TensorSpec], source: str) -> Samples:
    spec = _single_input(inputs, "image")
    items = []
    for f in files:
        if spec.dtype.is_string:
            items.append({spec.name: _string_item(spec, f.read_bytes(), f.name)})
        else:
            items.append({spec.name: _decode_image(f, spec)})
    return Samples(tuple(items), source)


def check_samples_path(path: Path, flag: str = "--samples") -> Path:
    """What can be told about a sample file before any server is asked: it exists, is a directory or a
    regular file (not a FIFO or a device), and has a format ``load_samples`` reads."""
    try:
        mode = path.stat().st_mode
    except OSError:
        raise UsageError(f"sample file '{path}' does not exist", f"check the path given to {flag}") from None
    if stat.S_ISDIR(mode):
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            raise UsageError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})",
                             "give a directory of images, an .npz or a .txt file")
        return path
    if not stat.S_ISREG(mode):
        raise UsageError(f"{flag} '{path}' is not a regular file", "give an .npz, a .txt, an image or a directory")
    if path.suffix.lower() not in (".npz", ".txt", ".text", ".lines", *IMAGE_SUFFIXES):
        raise UsageError(f"unknown sample format '{path.suffix}' ({path.name})",
                         "use .npz (arrays per input), .txt (one sample per line), or image files")
    return path


def load_samples(path: Path, inputs: Sequence[TensorSpec], batched: bool) -> Samples:
    """Samples from an .npz, a text file (one line per sample), an image file or a directory of images."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})",
                             "give a directory of images, an .npz or a .txt file")
        return _load_images(files, inputs, str(path))
    if not path.exists():
        raise UsageError(f"sample file '{path}' does not exist", "check the path given to --samples")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, inputs, batched)
    if suffix in IMAGE_SUFFIXES:
        return _load_images([path], inputs, str(path))
    if suffix in (".txt", ".text", ".lines"):
        return _load_text(path, inputs)
    raise UsageError(f"unknown sample format '{path.suffix}' ({path.name})",
                     "use .npz (arrays per input), .txt (one sample per line), or image files")


# ------------------------------------------------------------------------------------------- JSON
def _tensor_json(arr: np.ndarray) -> dict[str, Any]:
    shape = list(arr.shape)
    if arr.dtype == np.object_:
        try:
            return {"content": [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in arr.reshape(-1)],
                    "shape": shape}
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(serialize_bytes(arr)).decode("ascii"), "shape": shape}
    data = np.ascontiguousarray(arr)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    return {"b64": base64.b64encode(data.tobytes()).decode("ascii"), "shape": shape}


def _deserialize_bytes(raw: bytes) -> list[bytes]:
    items, i = [], 0
    while i < len(raw):
        (n,) = struct.unpack_from("<I", raw, i)
        items.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return items


def tensor_from_json(entry: dict[str, Any], datatype: str) -> np.ndarray:
    """One tensor of the ``--input-data`` JSON written here -> numpy (the locust users read it)."""
    shape = tuple(entry["shape"])
    if datatype == "BYTES":
        flat = ([s.encode() for s in entry["content"]] if "content" in entry
                else _deserialize_bytes(base64.b64decode(entry["b64"])))
        arr = np.empty(len(flat), dtype=np.object_)
        arr[:] = flat
        return arr.reshape(shape)
    return np.frombuffer(base64.b64decode(entry["b64"]), dtype=numpy_dtype(BY_NAME[datatype])).reshape(shape)


def write_input_data(samples: Samples, path: Path) -> Path:
    """perf_analyzer's ``--input-data`` JSON: one entry per sample."""
    doc = {"data": [{name: _tensor_json(arr) for name, arr in item.items()} for item in samples.items]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def shape_args(samples: Samples, inputs: Sequence[TensorSpec]) -> list[str]:
    """``--shape NAME:DIMS`` for every input with a variable dim (perf_analyzer needs them fixed)."""
    variable = {t.name for t in inputs if -1 in t.dims}
    return [f"{name}:{','.join(map(str, shape))}" for name, shape in samples.shapes.items() if name in variable]
