"""A real stateful ONNX model (an accumulator) and its sequence-batching config, shared by tests.

The model follows the pattern of Triton's stateful-model documentation: control inputs START and
READY from the sequence batcher, implicit state STATE_IN/STATE_OUT kept by the backend:

    OUT       = IN + STATE_IN * (1 - START)
    STATE_OUT = READY ? OUT : STATE_IN

``reference`` computes the same sequence in numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as mc

from onnx_models import OPSET
from tritonops.pbtxt import config_to_text

WIDTH = 3


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def accumulator(path: Path, start: bool = True, ready: bool = True, corrid: bool = False) -> Path:
    """IN/OUT/STATE_IN/STATE_OUT FP32 [batch, 3]; START INT32, READY BOOL, CORRID UINT64 [batch, 1].

    Without START the model adds the state unconditionally (the backend's initial state at a
    sequence's start is what resets it); CORRID is an input the model does not use."""
    nodes = []
    inputs = [helper.make_tensor_value_info("IN", TensorProto.FLOAT, ["batch", WIDTH]),
              helper.make_tensor_value_info("STATE_IN", TensorProto.FLOAT, ["batch", WIDTH])]
    init = []
    carried = "STATE_IN"
    if start:
        inputs.append(helper.make_tensor_value_info("START", TensorProto.INT32, ["batch", 1]))
        init.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"))
        nodes += [helper.make_node("Cast", ["START"], ["start_f"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", ["one", "start_f"], ["keep"]),
                  helper.make_node("Mul", ["STATE_IN", "keep"], ["carried"])]
        carried = "carried"
    nodes.append(helper.make_node("Add", ["IN", carried], ["OUT"]))
    if ready:
        inputs.append(helper.make_tensor_value_info("READY", TensorProto.BOOL, ["batch", 1]))
        nodes.append(helper.make_node("Where", ["READY", "OUT", "STATE_IN"], ["STATE_OUT"]))
    else:
        nodes.append(helper.make_node("Identity", ["OUT"], ["STATE_OUT"]))
    if corrid:
        inputs.append(helper.make_tensor_value_info("CORRID", TensorProto.UINT64, ["batch", 1]))
    graph = helper.make_graph(
        nodes, "accumulator", inputs,
        [helper.make_tensor_value_info("OUT", TensorProto.FLOAT, ["batch", WIDTH]),
         helper.make_tensor_value_info("STATE_OUT", TensorProto.FLOAT, ["batch", WIDTH])],
        initializer=init,
    )
    return _save(graph, path)


def stateful_config(name: str, strategy: str = "direct", start: bool = True, ready: bool = True,
                    corrid: bool = False, max_batch_size: int = 4, instances: int = 1,
                    queue_delay_us: int = 2000) -> mc.ModelConfig:
    """A production-style config for ``accumulator``: only IN/OUT are declared as I/O; controls
    and state live under sequence_batching."""
    cfg = mc.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    cfg.input.add(name="IN", data_type=mc.TYPE_FP32, dims=[WIDTH])
    cfg.output.add(name="OUT", data_type=mc.TYPE_FP32, dims=[WIDTH])
    sb = cfg.sequence_batching
    sb.max_sequence_idle_microseconds = 30_000_000
    if strategy == "direct":
        sb.direct.max_queue_delay_microseconds = queue_delay_us
        # Wait (up to the delay) for a second sequence's request before running a batch.
        sb.direct.minimum_slot_utilization = 2 / max(max_batch_size, 2)
    else:
        sb.oldest.max_candidate_sequences = 4
        sb.oldest.max_queue_delay_microseconds = queue_delay_us
    if start:
        sb.control_input.add(name="START").control.add(
            kind=mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START, int32_false_true=[0, 1])
    if ready:
        sb.control_input.add(name="READY").control.add(
            kind=mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY, bool_false_true=[False, True])
    if corrid:
        sb.control_input.add(name="CORRID").control.add(
            kind=mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID, data_type=mc.TYPE_UINT64)
    state = sb.state.add(input_name="STATE_IN", output_name="STATE_OUT", data_type=mc.TYPE_FP32, dims=[WIDTH])
    state.initial_state.add(name="zeros", data_type=mc.TYPE_FP32, dims=[WIDTH], zero_data=True)
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=instances)
    return cfg


def write_model(repo: Path, cfg: mc.ModelConfig, **model_kwargs) -> Path:
    """<repo>/<name>/{config.pbtxt, 1/model.onnx}; returns the model directory."""
    d = repo / cfg.name
    accumulator(d / "1" / "model.onnx", **model_kwargs)
    (d / "config.pbtxt").write_text(config_to_text(cfg))
    return d


def reference(steps: list[np.ndarray], start: bool = True) -> list[np.ndarray]:
    """The outputs of one sequence, step by step, computed in numpy (READY is true for real requests)."""
    state = np.zeros(WIDTH, np.float32)
    outs = []
    for k, x in enumerate(steps):
        keep = 0.0 if (start and k == 0) else 1.0
        out = (x + state * np.float32(keep)).astype(np.float32)
        state = out
        outs.append(out)
    return outs


# ---------------------------------------------------------------- the same accumulator as TorchScript


def torchscript_names(start: bool = True, ready: bool = True, corrid: bool = False) -> dict[str, str]:
    """Triton's libtorch naming for the accumulator's tensors: ``<name>__<index>``, the index being
    the ``forward`` argument (inputs, controls, state input) or the result's position (outputs)."""
    inputs = ["IN", *(n for n, on in (("START", start), ("READY", ready), ("CORRID", corrid)) if on), "STATE_IN"]
    names = {n: f"{'INPUT' if n == 'IN' else n}__{i}" for i, n in enumerate(inputs)}
    return {**names, "OUT": "OUTPUT__0", "STATE_OUT": "STATE_OUT__1"}


def torchscript_config(name: str, strategy: str = "direct", start: bool = True, ready: bool = True,
                       corrid: bool = False, **kwargs) -> mc.ModelConfig:
    """``stateful_config`` for a TorchScript accumulator (platform pytorch_libtorch): the tensors
    named as ``torchscript_names`` says, a CORRID of TYPE_INT64 (libtorch has no unsigned 64-bit type)."""
    cfg = stateful_config(name, strategy=strategy, start=start, ready=ready, corrid=corrid, **kwargs)
    cfg.platform = "pytorch_libtorch"
    names = torchscript_names(start, ready, corrid)
    for t in (*cfg.input, *cfg.output, *cfg.sequence_batching.control_input):
        t.name = names[t.name]
    for ci in cfg.sequence_batching.control_input:
        for c in ci.control:
            if c.kind == mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID:
                c.data_type = mc.TYPE_INT64
    for s in cfg.sequence_batching.state:
        s.input_name, s.output_name = names[s.input_name], names[s.output_name]
    return cfg
