"""Compile an ONNX model to a TensorRT plan for Triton's ``tensorrt_plan`` platform.

TensorRT is probed and run only in child processes: without a GPU its runtime calls can crash the
process, and a failed build must not take tritonops down with it. A plan is tied to the TensorRT
version and GPU it was built on, so every build returns a provenance record saying which."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from tritonops.errors import ConversionError
from tritonops.spec import TensorSpec

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]

# (min, opt, max) for variable (-1) dims other than the batch dim.
DEFAULT_VAR_DIM = (1, 128, 512)
DEFAULT_WORKSPACE_BYTES = 1 << 30
PROBE_TIMEOUT_S = 120
BUILD_TIMEOUT_S = 3600

UNAVAILABLE_HINT = ("build on a machine with TensorRT and a GPU, or serve the ONNX model with ONNX Runtime's "
                    "TensorRT accelerator: tritonops build model.onnx --kind gpu --accelerator tensorrt")


def profile_shapes(inputs: Sequence[TensorSpec], max_batch_size: int, opt_batch: int | None = None,
                   var_dim: tuple[int, int, int] = DEFAULT_VAR_DIM) -> Profile:
    """One optimization profile: ``{input: (min, opt, max)}`` shapes. The batch dim (when
    ``max_batch_size`` > 0) runs from 1 to ``max_batch_size`` with ``opt_batch`` (default: the
    maximum) as the tuned size; ``-1`` dims take ``var_dim``; fixed dims are fixed. Shapes are the
    model's own, so an input's ``reshape`` replaces its ``dims``."""
    lo_v, opt_v, hi_v = var_dim
    if not 1 <= lo_v <= opt_v <= hi_v:
        raise ValueError(f"var_dim must be 1 <= min <= opt <= max, got {var_dim}")
    if max_batch_size < 0:
        raise ValueError(f"max_batch_size must be >= 0, got {max_batch_size}")
    batched = max_batch_size > 0
    if batched:
        opt_b = max_batch_size if opt_batch is None else opt_batch
        if not 1 <= opt_b <= max_batch_size:
            raise ValueError(f"opt_batch must be within 1..{max_batch_size}, got {opt_b}")
    profile: Profile = {}
    for spec in inputs:
        dims = spec.reshape if spec.reshape is not None else spec.dims
        lo = [lo_v if d == -1 else d for d in dims]
        opt = [opt_v if d == -1 else d for d in dims]
        hi = [hi_v if d == -1 else d for d in dims]
        if batched:
            lo, opt, hi = [1, *lo], [opt_b, *opt], [max_batch_size, *hi]
        profile[spec.name] = (tuple(lo), tuple(opt), tuple(hi))
    return profile


def _child(args: list[str], stdin: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tritonops.convert._trt_build", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _died(proc: subprocess.CompletedProcess[str]) -> str:
    if proc.returncode < 0:
        return f"the TensorRT process was killed by signal {-proc.returncode}"
    tail = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()]
    return tail[-1] if tail else f"the TensorRT process exited with code {proc.returncode}"


@cache
def tensorrt_available() -> str | None:
    """None when TensorRT can build plans here; otherwise the reason it cannot (no tensorrt
    package, a runtime-only package without a Builder, no NVIDIA driver, no CUDA GPU). Probed
    once per process, in a child process."""
    try:
        proc = _child(["--probe"], None, PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"probing TensorRT did not finish within {PROBE_TIMEOUT_S} s"
    result = _last_json(proc.stdout)
    if result is None:
        return f"probing TensorRT failed: {_died(proc)}"
    reason = result.get("reason")
    return str(reason) if reason else None


def build_plan(onnx_path: Path, plan_path: Path, inputs: Sequence[TensorSpec], max_batch_size: int,
               fp16: bool = False, *, opt_batch: int | None = None,
               var_dim: tuple[int, int, int] = DEFAULT_VAR_DIM,
               workspace_bytes: int = DEFAULT_WORKSPACE_BYTES) -> dict[str, Any]:
    """Build ``plan_path`` from ``onnx_path`` with one optimization profile covering batch 1 to
    ``max_batch_size`` (see ``profile_shapes``), in a child process. Returns the provenance:
    TensorRT version, GPU name and compute capability, and the build arguments."""
    reason = tensorrt_available()
    if reason is not None:
        raise ConversionError(f"TensorRT is not available here: {reason}", UNAVAILABLE_HINT)
    profile = profile_shapes(inputs, max_batch_size, opt_batch, var_dim)
    request = {
        "onnx": str(Path(onnx_path).absolute()),
        "plan": str(Path(plan_path).absolute()),
        "profile": {k: [list(s) for s in v] for k, v in profile.items()},
        "fp16": fp16,
        "max_batch_size": max_batch_size,
        "workspace_bytes": workspace_bytes,
    }
    try:
        proc = _child(["--build"], json.dumps(request), BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise ConversionError(f"the TensorRT build did not finish within {BUILD_TIMEOUT_S} s",
                              "build a smaller profile (lower --max-batch-size) or build with trtexec") from e
    result = _last_json(proc.stdout)
    if proc.returncode != 0 or result is None or not result.get("ok"):
        why = str(result["error"]) if result and result.get("error") else _died(proc)
        raise ConversionError(f"TensorRT could not build the plan: {why}",
                              "check that TensorRT supports the model's operators and input shapes, or serve the "
                              "ONNX model with --accelerator tensorrt")
    provenance = result["provenance"]
    return dict(provenance)
