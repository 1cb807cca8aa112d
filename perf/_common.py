"""Shared by the benchmark scripts: a wide MLP as a real ONNX file, and machine facts for the record."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np


def wide_mlp(path: Path, width: int = 1024, hidden: int = 4096, seed: int = 0) -> Path:
    """x[batch, width] -> relu(x W1 + b1) W2 + b2 (FP32, ~32 MB of weights).

    Big enough that one request's work is real compute (two matmuls that stream every weight), so
    how requests are scheduled shows in throughput; tiny test models only measure overhead."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32), n)
             for n, s in (("w1", (width, hidden)), ("w2", (hidden, width)))]
    inits += [numpy_helper.from_array(np.zeros(n, dtype=np.float32), b) for b, n in (("b1", hidden), ("b2", width))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
             helper.make_node("Add", ["h3", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "wide_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def machine() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return (f"{platform.node()} {platform.machine()}, {cpus} CPUs, Python {platform.python_version()}, "
            f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (1/5/15 min)")
