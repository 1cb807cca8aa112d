"""The one table of Triton platforms and backends: which backend serves a platform, which file a
backend loads by default, and which backend Triton picks from the files present when a config names
neither. check, spec, the reference runners, deploy's inventory and rollout all read it here."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

# platform -> backend (Triton's core maps legacy platform names onto backends; "" for ensembles)
BACKEND_OF_PLATFORM: dict[str, str] = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
    "pytorch_libtorch": "pytorch",
    "libtorch": "pytorch",
    "torch_aoti": "pytorch",
    "ensemble": "",
}
# backend -> platform a config may name beside it (the valid (platform, backend) pairs are below)
PLATFORM_OF_BACKEND: dict[str, str] = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan",
                                       "pytorch": "pytorch_libtorch"}
VALID_PAIRS: frozenset[tuple[str, str]] = frozenset({
    ("onnxruntime_onnx", "onnxruntime"),
    ("tensorrt_plan", "tensorrt"),
    ("pytorch_libtorch", "pytorch"),
    ("torch_aoti", "pytorch"),
    ("ensemble", ""),
    ("", "python"),
})
# backend -> the model file it loads when default_model_filename is not set
DEFAULT_FILE: dict[str, str] = {
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
    "pytorch": "model.pt",
    "python": "model.py",
}
# Filled in by Triton from the files present when platform and backend are both absent.
FILE_TO_BACKEND: dict[str, str] = {f: b for b, f in DEFAULT_FILE.items()}


def backend_of(platform: str, backend: str = "") -> str:
    """The backend that serves a config with this platform/backend ("" when neither names one)."""
    return backend or BACKEND_OF_PLATFORM.get(platform, "")


def config_backend(cfg: Any, version_paths: Iterable[Path] = ()) -> str:
    """The backend of a ModelConfig, falling back to the model files in ``version_paths`` as Triton does."""
    named = backend_of(cfg.platform, cfg.backend)
    if named or cfg.platform:
        return named
    for v in version_paths:
        for f, b in FILE_TO_BACKEND.items():
            if (v / f).exists():
                return b
    return ""


def default_file(cfg: Any, version_paths: Iterable[Path] = ()) -> str:
    """The model file a ModelConfig's backend loads from a version directory ("" for ensembles)."""
    return cfg.default_model_filename or DEFAULT_FILE.get(config_backend(cfg, version_paths), "")
