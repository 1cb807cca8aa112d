"""Data types in one place: Triton's names (``FP32``), config enums (``TYPE_FP32``), numpy,
ONNX ``TensorProto`` codes and torch dtypes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tritonops.errors import UsageError


@dataclass(frozen=True)
class DType:
    name: str  # Triton wire name: FP32, BYTES, ...
    config: str  # model_config.proto enum name: TYPE_FP32, TYPE_STRING, ...
    numpy: Any  # numpy dtype (np.object_ for BYTES; None for BF16, which numpy lacks)
    onnx: int  # onnx.TensorProto code
    torch: str | None  # torch dtype attribute name, None where torch has none

    @property
    def is_string(self) -> bool:
        return self.name == "BYTES"


# ONNX TensorProto codes (onnx.TensorProto.DataType), listed literally so importing this module
# does not need onnx.
_TABLE = [
    DType("BOOL", "TYPE_BOOL", np.bool_, 9, "bool"),
    DType("UINT8", "TYPE_UINT8", np.uint8, 2, "uint8"),
    DType("UINT16", "TYPE_UINT16", np.uint16, 4, "uint16"),
    DType("UINT32", "TYPE_UINT32", np.uint32, 12, "uint32"),
    DType("UINT64", "TYPE_UINT64", np.uint64, 13, "uint64"),
    DType("INT8", "TYPE_INT8", np.int8, 3, "int8"),
    DType("INT16", "TYPE_INT16", np.int16, 5, "int16"),
    DType("INT32", "TYPE_INT32", np.int32, 6, "int32"),
    DType("INT64", "TYPE_INT64", np.int64, 7, "int64"),
    DType("FP16", "TYPE_FP16", np.float16, 10, "float16"),
    DType("FP32", "TYPE_FP32", np.float32, 1, "float32"),
    DType("FP64", "TYPE_FP64", np.float64, 11, "float64"),
    DType("BYTES", "TYPE_STRING", np.object_, 8, None),
    DType("BF16", "TYPE_BF16", None, 16, "bfloat16"),
]
BY_NAME = {d.name: d for d in _TABLE}
BY_CONFIG = {d.config: d for d in _TABLE}
BY_ONNX = {d.onnx: d for d in _TABLE}
_ALIASES = {"STRING": "BYTES", "FLOAT32": "FP32", "FLOAT": "FP32", "FLOAT16": "FP16", "HALF": "FP16",
            "FLOAT64": "FP64", "DOUBLE": "FP64", "BFLOAT16": "BF16", "INT": "INT32", "LONG": "INT64"}
_ONNX_NAMES = {
    0: "UNDEFINED", 14: "COMPLEX64", 15: "COMPLEX128", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ",
    19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1",
}


def parse_dtype(text: str) -> DType:
    """Parse a user-written type: ``FP32``, ``TYPE_FP32``, ``float32``, ``STRING`` ..."""
    key = text.strip().upper()
    key = key.removeprefix("TYPE_")
    key = _ALIASES.get(key, key)
    if key in BY_NAME:
        return BY_NAME[key]
    known = ", ".join(d.name for d in _TABLE)
    raise UsageError(f"unknown data type '{text}'", f"use one of: {known} (STRING is an alias of BYTES)")


def from_config(enum_name: str) -> DType:
    return BY_CONFIG[enum_name]


def from_onnx(code: int, where: str) -> DType:
    if code in BY_ONNX:
        return BY_ONNX[code]
    name = _ONNX_NAMES.get(code, str(code))
    raise UsageError(
        f"{where} has ONNX type {name}, which Triton cannot serve",
        "cast it to a supported type (e.g. FP32 or INT64) in the model before exporting",
    )


def from_numpy(dtype: Any) -> DType:
    dt = np.dtype(dtype)
    if dt.kind in ("O", "S", "U"):
        return BY_NAME["BYTES"]
    for d in _TABLE:
        if d.numpy is not None and d.numpy is not np.object_ and np.dtype(d.numpy) == dt:
            return d
    if dt.name == "bfloat16":
        return BY_NAME["BF16"]
    raise UsageError(f"numpy type {dt} has no Triton equivalent", "use a numeric, bool or bytes array")


def numpy_dtype(d: DType) -> Any:
    """The numpy dtype for arrays of this type; BF16 uses ml_dtypes (shipped with tritonclient)."""
    if d.name == "BF16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return d.numpy


def bytes_to_str(a: np.ndarray) -> np.ndarray:
    """BYTES as Python str (what onnxruntime takes for ONNX strings)."""
    return np.vectorize(lambda b: b.decode("utf-8") if isinstance(b, bytes) else str(b), otypes=[object])(a)


def str_to_bytes(a: np.ndarray) -> np.ndarray:
    """str (or any) elements as ``bytes`` in an object array: Triton's BYTES."""
    if a.size == 0:
        return a.astype(np.object_)
    return np.vectorize(lambda s: s.encode("utf-8") if isinstance(s, str) else bytes(s), otypes=[object])(a)
