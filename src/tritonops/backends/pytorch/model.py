"""tritonops' Python-based ``pytorch`` backend (TorchScript ``model.pt``) for CPU-only servers
without Triton's native libtorch backend. As Triton's PyTorch backend: inputs map by ``forward``
argument name, else by the ``<name>__<index>`` convention, else in config order; outputs by
``<name>__<index>``, else in config order; TYPE_STRING inputs arrive as ``List[str]``; the model
runs under ``torch.inference_mode()``. Like tritonops' onnxruntime backend, the requests of a dynamic
batch run as ONE forward call (grouped by shape, or right-padded with ``tritonops.pad_ragged``) and
a bad request gets its own error response. Self-contained: runs inside the Python backend stub."""

import json
import os
import re
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

# _batching.py is put next to this file by tritonops' server launcher.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _batching import batch_groups, concatenate, split

# torch is imported in initialize(): Triton also starts a throw-away stub per model only to run
# auto_complete_config (this backend has none), and importing torch there costs seconds.
torch = None

_INDEX = re.compile(r"^.+__(\d+)$")


def _params(config):
    return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


def _response(outputs):
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, v) for n, v in outputs.items()])


def _error_response(e):
    text = str(e).strip()
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(f"pytorch: {text.splitlines()[0] if text else type(e).__name__}"))


def _indexed_order(names):
    matches = [(_INDEX.match(n), n) for n in names]
    if names and all(m for m, _ in matches):
        return [n for _, n in sorted(matches, key=lambda p: int(p[0].group(1)))]
    return None


class TritonPythonModel:
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
        self.input_order = self._input_order(list(self.inputs))
        self.output_order = _indexed_order(list(self.outputs)) or list(self.outputs)
        self.pad_ragged = params.get("tritonops.pad_ragged", "").lower() in ("1", "true", "yes")
        self.variable_dims = {n: [int(d) == -1 for d in t.get("dims", [])] for n, t in self.outputs.items()}

    def _input_order(self, names):
        try:
            forward_args = [a.name for a in self.module.forward.schema.arguments][1:]  # drop self
        except AttributeError:
            forward_args = []
        if names and set(names) == set(forward_args):
            return forward_args
        return _indexed_order(names) or names

    def _read(self, request):
        feed = {}
        for name, spec in self.inputs.items():
            t = pb_utils.get_input_tensor_by_name(request, name)
            if t is None:
                if spec.get("optional"):
                    continue
                raise ValueError(f"input '{name}' is missing")
            feed[name] = t.as_numpy()
        return feed

    def _to_torch(self, name, arr):
        spec = self.inputs[name]
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
        if len(result) < len(self.output_order):
            raise ValueError(f"the model returned {len(result)} outputs, the configuration expects "
                             f"{len(self.output_order)}")
        return {n: self._to_numpy(n, r, batch) for n, r in zip(self.output_order, result)}

    def _run_group(self, group):
        """One forward call for the whole group; returns one output dict per request."""
        if not self.batched:
            return [self._run(group[0][1])]
        batch, sizes, shapes = concatenate(group, self.pad_ragged)
        outputs = self._run(batch)
        padded = self.pad_ragged and len(group) > 1
        return split(outputs, sizes, shapes if padded else [None] * len(group), batch, self.variable_dims)

    def execute(self, requests):
        responses = [None] * len(requests)
        feeds = []
        for i, request in enumerate(requests):
            try:
                feeds.append((i, self._read(request)))
            except Exception as e:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
        groups = batch_groups(feeds, self.pad_ragged) if self.batched else [[f] for f in feeds]
        for group in groups:
            try:
                results = self._run_group(group)
            except Exception as e:
                if len(group) > 1:  # one bad request must not fail the others: run each on its own
                    for member in group:
                        self._respond_alone(responses, member)
                else:
                    responses[group[0][0]] = _error_response(e)
                continue
            for (i, _), out in zip(group, results):
                responses[i] = _response(out)
        return responses

    def _respond_alone(self, responses, member):
        try:
            (out,) = self._run_group([member])
            responses[member[0]] = _response(out)
        except Exception as e:
            responses[member[0]] = _error_response(e)

    def finalize(self):
        self.module = None
