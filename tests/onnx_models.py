"""Small real ONNX models built with onnx.helper, shared by the tests.

Each function writes a model file and returns its path. They are real models (onnxruntime runs them,
the server serves them), kept tiny so the suite stays fast on 2 cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path, **save_kwargs) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), **save_kwargs)
    return path


def mlp(path: Path, in_features: int = 4, hidden: int = 8, out_features: int = 3, batch="batch",
        seed: int = 0, input_name: str = "x", output_name: str = "y", **save_kwargs) -> Path:
    """x[batch, in] -> relu(x W1 + b1) W2 + b2 -> y[batch, out] (FP32). ``batch=None`` fixes dim 0 to 1."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((in_features, hidden)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, out_features)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(rng.standard_normal(out_features).astype(np.float32), "b2")
    nodes = [
        helper.make_node("MatMul", [input_name, "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], [output_name]),
    ]
    b = batch if batch is not None else 1
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [b, in_features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [b, out_features])],
        initializer=[w1, b1, w2, b2],
    )
    return _save(graph, path, **save_kwargs)


def identity(path: Path, elem_type: int, dims: list, name_in: str = "INPUT", name_out: str = "OUTPUT") -> Path:
    """OUTPUT = Identity(INPUT) for any ONNX element type (STRING, BOOL, INT8, ...)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [name_in], [name_out])], "identity",
        [helper.make_tensor_value_info(name_in, elem_type, dims)],
        [helper.make_tensor_value_info(name_out, elem_type, dims)],
    )
    return _save(graph, path)


def add_sub(path: Path, dims: list, elem_type: int = TensorProto.FLOAT) -> Path:
    """Triton's classic example: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
        "add_sub",
        [helper.make_tensor_value_info("INPUT0", elem_type, dims),
         helper.make_tensor_value_info("INPUT1", elem_type, dims)],
        [helper.make_tensor_value_info("OUTPUT0", elem_type, dims),
         helper.make_tensor_value_info("OUTPUT1", elem_type, dims)],
    )
    return _save(graph, path)


def scale_vector(path: Path) -> Path:
    """A rank-1 batched model: x[batch] FP32 -> y[batch] = 2x (exercises dims:[1] + reshape:[])."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        initializer=[two],
    )
    return _save(graph, path)
