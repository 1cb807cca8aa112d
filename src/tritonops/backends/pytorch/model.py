"""tritonops' Python-based ``pytorch`` backend (TorchScript ``model.pt``) for CPU-only servers
without Triton's native libtorch backend. As Triton's PyTorch backend: inputs map by ``forward``
argument name, else by the ``<name>__<index>`` convention, else in config order; outputs by
``<name>__<index>``, else in config order; TYPE_STRING inputs arrive as ``List[str]``; the model
runs under ``torch.inference_mode()``. Like tritonops' onnxruntime backend, the requests of a dynamic
batch run as ONE forward call (grouped by shape, or right-padded with ``tritonops.pad_ragged``) and
a bad request gets its own error response. Self-contained: runs inside the Python backend stub.

Stateful models (``sequence_batching``), as Triton's libtorch backend: each control tensor and
each state input is passed to ``forward`` at the index its ``<name>__<index>`` name gives, state
outputs are read back at theirs, and implicit state is kept per sequence by _sequences.py (shared
with the onnxruntime backend). The load checks are the native backend's: controls and state named
``<name>__<index>`` (with state, every input and output too), a CORRID type torch has, and as many
``forward`` arguments as inputs, controls and states together."""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

# _batching.py and _sequences.py are put next to this file by tritonops' server launcher.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sequences import GroupedExecute, SequenceState, check_not_declared, sequence_controls, sequence_states

# torch is imported in initialize(): Triton also starts a throw-away stub per model only to run
# auto_complete_config (this backend has none), and importing torch there costs seconds.
torch = None

# The data types Triton's libtorch backend maps to torch (ModelConfigDataTypeToTorchType); TYPE_STRING
# inputs are List[str], which a sequence control cannot be.
_TORCH_TYPES = {"TYPE_BOOL", "TYPE_UINT8", "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64",
                "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_BF16"}


def _params(config):
    return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


def _named_index(name):
    """The index of a ``<name>__<index>`` name (Triton: everything after the first ``__`` is
    digits), else None."""
    pos = name.find("__")
    tail = name[pos + 2:] if pos >= 0 else ""
    return int(tail) if tail.isdigit() else None


def _indexed_order(names):
    if names and all(_named_index(n) is not None for n in names):
        return sorted(names, key=_named_index)
    return None


def _sequence_positions(name, config, forward_args):
    """Triton libtorch's mapping of a stateful model's tensors to ``forward`` positions and result
    indices, with its load checks: ({input or control or state: argument index}, {output or state
    output: result index})."""
    check_not_declared(name, config)
    controls = sequence_controls(config)
    states = sequence_states(config)
    positions = {}
    for kind, (tensor, dtype, _) in controls.items():
        if _named_index(tensor) is None:
            raise pb_utils.TritonModelException(
                f"input '{tensor}' does not follow <name>__<index> naming convention (model '{name}': the "
                f"sequence control {kind} is passed to forward() at that index)")
        if kind == "CONTROL_SEQUENCE_CORRID" and dtype not in _TORCH_TYPES:
            raise pb_utils.TritonModelException(f"input '{tensor}' type '{dtype}' is not supported by PyTorch.")
        positions[tensor] = _named_index(tensor)
    inputs = [t["name"] for t in config.get("input", [])]
    outputs = [t["name"] for t in config.get("output", [])]
    named = all(_named_index(n) is not None for n in inputs)
    if inputs and all(n in forward_args for n in inputs):
        positions.update((n, forward_args.index(n)) for n in inputs)
        named = False  # Triton's forward-argument convention, which state does not allow
    elif named:
        positions.update((n, _named_index(n)) for n in inputs)
    else:
        positions.update((n, i) for i, n in enumerate(inputs))
    results = {n: i for i, n in enumerate(_indexed_order(outputs) or outputs)}
    if states:
        if not named or _indexed_order(outputs) is None:
            raise pb_utils.TritonModelException(
                f"PyTorch model '{name}' is using sequence batching with state but not all inputs and outputs "
                f"follow the <name>__<index> naming convention.")
        for state in states:
            for tensor in (state.get("input_name", ""), state.get("output_name", "")):
                if _named_index(tensor) is None:
                    raise pb_utils.TritonModelException(
                        f"PyTorch model '{name}' is using sequence batching with state but state '{tensor}' does "
                        f"not follow the <name>__<index> naming convention.")
            positions[state["input_name"]] = _named_index(state["input_name"])
        results = {n: _named_index(n) for n in outputs + [s["output_name"] for s in states]}
    expected = len(inputs) + len(controls) + len(states)
    if forward_args and len(forward_args) != expected:
        raise pb_utils.TritonModelException(
            f"unable to load model '{name}', configuration expects {expected} inputs, model provides "
            f"{len(forward_args)}")
    # Stricter at load than the native backend, which would hand forward() a wrong argument list.
    taken = {}
    for tensor, index in positions.items():
        if index in taken:
            raise pb_utils.TritonModelException(
                f"model '{name}': '{taken[index]}' and '{tensor}' both map to forward() argument {index}")
        if forward_args and index >= len(forward_args):
            raise pb_utils.TritonModelException(
                f"model '{name}': '{tensor}' maps to forward() argument {index}, but forward() takes "
                f"{len(forward_args)}")
        taken[index] = tensor
    return positions, results


class TritonPythonModel(GroupedExecute):
    backend = "pytorch"

    def initialize(self, args):
        # args["model_repository"] is the model's own directory (<repository>/<model>) in Triton 2.51.
        global torch
        import torch

        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        params = _params(config)
        # Unset: one intra-op thread per instance, as tritonops' onnxruntime backend (measured there:
        # on 2 shared cores, one thread per instance served more than torch's all-cores default).
        torch.set_num_threads(int(params.get("INTRA_OP_THREAD_COUNT") or 0) or 1)
        if params.get("INTER_OP_THREAD_COUNT"):
            try:
                torch.set_num_interop_threads(int(params["INTER_OP_THREAD_COUNT"]))
            except RuntimeError:
                pass  # settable once per process, before any inter-op work
        filename = config.get("default_model_filename") or "model.pt"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"unable to find model file '{path}' for model '{self.name}'")
        self.module = torch.jit.load(path, map_location="cpu").eval()
        self.batched = int(config.get("max_batch_size", 0) or 0) > 0
        self.inputs = {t["name"]: t for t in config.get("input", [])}
        self.outputs = {t["name"]: t for t in config.get("output", [])}
        self.sequence = SequenceState(config, self.batched) if config.get("sequence_batching") else None
        if self.sequence is not None:
            positions, self.results = _sequence_positions(self.name, config, self._forward_args())
            self.input_order = sorted(positions, key=positions.get)
        else:
            self.input_order = self._input_order(list(self.inputs))
            self.results = {n: i for i, n in enumerate(_indexed_order(list(self.outputs)) or list(self.outputs))}
        # What clients get: the config's outputs; a state output only where it is declared as one too.
        self.response_names = [n for n in self.results if n in self.outputs]
        self.pad_ragged = params.get("tritonops.pad_ragged", "").lower() in ("1", "true", "yes")
        self.variable_dims = {n: [int(d) == -1 for d in t.get("dims", [])] for n, t in self.outputs.items()}

    def _forward_args(self):
        try:
            return [a.name for a in self.module.forward.schema.arguments][1:]  # drop self
        except AttributeError:
            return []

    def _input_order(self, names):
        forward_args = self._forward_args()
        if names and set(names) == set(forward_args):
            return forward_args
        return _indexed_order(names) or names

    def _to_torch(self, name, arr):
        spec = self.inputs.get(name, {})  # control and state tensors: no spec of their own
        if "reshape" in spec:
            shape = [int(d) for d in spec["reshape"].get("shape", [])]
            arr = arr.reshape(([arr.shape[0]] if self.batched else []) + shape)
        if arr.dtype == np.object_:
            return [b.decode("utf-8", "surrogateescape") if isinstance(b, bytes) else str(b) for b in arr.reshape(-1)]
        return torch.from_numpy(np.ascontiguousarray(arr))

    def _to_numpy(self, name, value, batch):
        spec = self.outputs.get(name, {})
        if isinstance(value, torch.Tensor):
            arr = value.detach().cpu().numpy()
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            arr = np.array([v.encode("utf-8", "surrogateescape") for v in value], dtype=np.object_)
            dims = [int(d) for d in spec.get("dims", [])]
            if self.batched and arr.shape[0] != batch and dims and all(d > 0 for d in dims):
                arr = arr.reshape([-1, *dims])
            elif self.batched and arr.ndim == 1 and dims == [1]:
                arr = arr.reshape(-1, 1)
        else:
            arr = np.asarray(value)
        if "reshape" in spec:
            dims = [int(d) for d in spec.get("dims", [])]
            arr = arr.reshape(([arr.shape[0]] if self.batched else []) + dims)
        return arr

    def _run(self, feed):
        batch = int(next(iter(feed.values())).shape[0]) if feed and self.batched else 1
        args = [self._to_torch(n, feed[n]) for n in self.input_order if n in feed]
        with torch.inference_mode():
            result = self.module(*args)
        if isinstance(result, dict):
            result = tuple(result.values())
        elif not isinstance(result, tuple):  # one tensor, or one List[str]
            result = (result,)
        if len(result) < len(self.results):
            raise ValueError(f"the model returned {len(result)} outputs, the configuration expects "
                             f"{len(self.results)}")
        for n, i in self.results.items():
            if i >= len(result):
                raise ValueError(f"the output {n} in the model configuration refers to an output index which "
                                 f"doesn't exist. This model has {len(result)} outputs")
        return {n: self._to_numpy(n, result[i], batch) for n, i in self.results.items()}

    def finalize(self):
        self.module = None
