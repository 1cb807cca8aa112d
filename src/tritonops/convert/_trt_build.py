"""Child process for TensorRT: ``--probe`` reports whether plans can be built here; ``--build``
reads a JSON request on stdin and writes a plan. Each prints one JSON object as its last stdout
line. Kept apart from tritonops so a TensorRT or CUDA crash kills only this process."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _cuda() -> tuple[Any | None, str | None]:
    """The CUDA driver library, or the reason it cannot be used."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return None, "no NVIDIA driver (libcuda not found)"
    rc = lib.cuInit(0)
    if rc != 0:
        return None, f"the CUDA driver failed to initialise (CUresult {rc})"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None, "no CUDA GPU found"
    return lib, None


def gpu_info(device: int = 0) -> dict[str, Any]:
    lib, reason = _cuda()
    if lib is None:
        return {"error": reason}
    dev = ctypes.c_int(0)
    lib.cuDeviceGet(ctypes.byref(dev), device)
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, 256, dev)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
    driver = ctypes.c_int(0)
    lib.cuDriverGetVersion(ctypes.byref(driver))
    return {"name": name.value.decode(errors="replace"), "compute_capability": f"{major.value}.{minor.value}",
            "cuda_driver": f"{driver.value // 1000}.{driver.value % 1000 // 10}"}


def probe() -> dict[str, Any]:
    try:
        import tensorrt as trt
    except ImportError:
        return {"reason": "the tensorrt Python package is not installed (pip install 'tritonops[tensorrt]')"}
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        return {"reason": f"importing tensorrt failed: {type(e).__name__}: {first}"}
    version = getattr(trt, "__version__", "?")
    if not hasattr(trt, "Builder") or not hasattr(trt, "OnnxParser"):
        return {"reason": f"the installed tensorrt {version} is a runtime without a Builder/OnnxParser"}
    _, reason = _cuda()
    if reason is not None:
        return {"reason": reason, "tensorrt": version}
    return {"reason": None, "tensorrt": version, "gpu": gpu_info()}


def build(request: dict[str, Any]) -> dict[str, Any]:
    import tensorrt as trt

    onnx_path, plan_path = Path(request["onnx"]), Path(request["plan"])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10+
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        return {"ok": False, "error": "cannot parse the ONNX model: " + (errors[0] if errors else "unknown error")}
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(request["workspace_bytes"]))
    notes: list[str] = []
    if request["fp16"]:
        if hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        else:
            return {"ok": False, "error": f"TensorRT {trt.__version__} has no FP16 builder flag (networks are "
                                          "strongly typed): convert the ONNX model to FP16 first, or build FP32"}
    profile = builder.create_optimization_profile()
    shapes = request["profile"]
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name in shapes:
            lo, opt, hi = (tuple(s) for s in shapes[tensor.name])
            if len(lo) != len(tensor.shape):
                return {"ok": False, "error": f"input '{tensor.name}' has rank {len(tensor.shape)} in the model "
                                              f"but {len(lo)} in the profile {list(lo)}"}
            profile.set_shape(tensor.name, lo, opt, hi)
        elif any(d == -1 for d in tensor.shape):
            return {"ok": False, "error": f"input '{tensor.name}' has dynamic shape {list(tensor.shape)} "
                                          "but no input spec"}
    config.add_optimization_profile(profile)
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        return {"ok": False, "error": "build_serialized_network failed (see TensorRT's log above)"}
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan_path.with_name(plan_path.name + ".tmp")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, plan_path)
    return {"ok": True, "provenance": {
        "schema": "tritonops.tensorrt-provenance/1",
        "tensorrt": trt.__version__,
        "gpu": gpu_info(),
        "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "build_seconds": round(time.monotonic() - started, 2),
        "args": {"fp16": bool(request["fp16"]), "max_batch_size": request["max_batch_size"],
                 "workspace_bytes": request["workspace_bytes"], "profile": shapes},
        "notes": notes,
    }}


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        print(json.dumps(probe()))
        return 0
    if argv == ["--build"]:
        try:
            result = build(json.loads(sys.stdin.read()))
        except Exception as e:
            lines = str(e).strip().splitlines()
            result = {"ok": False, "error": f"{type(e).__name__}: {lines[0] if lines else ''}"}
        print(json.dumps(result))
        return 0 if result.get("ok") else 1
    print("usage: python -m tritonops.convert._trt_build --probe | --build < request.json", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
