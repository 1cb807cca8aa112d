"""tritonops' Python-based ``pytorch`` backend (TorchScript ``model.pt``) for CPU-only servers
without Triton's native libtorch backend. Dynamic batches run as ONE forward call. Inputs map by
``INPUT__i`` index or by ``forward`` argument name, outputs by ``OUTPUT__i`` index, as in Triton's
PyTorch backend. Self-contained: runs inside the Python backend stub."""

import json
import os
import re

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

_INDEX = re.compile(r"^.+__(\d+)$")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        count = sum(int(g.get("count", 1) or 1) for g in config.get("instance_group", [])) or 1
        torch.set_num_threads(int(params.get("INTRA_OP_THREAD_COUNT") or max(1, (os.cpu_count() or 1) // count)))
        if params.get("INTER_OP_THREAD_COUNT"):
            try:
                torch.set_num_interop_threads(int(params["INTER_OP_THREAD_COUNT"]))
            except RuntimeError:
                pass  # only settable once per process
        filename = config.get("default_model_filename") or "model.pt"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"unable to find model file '{path}' for model '{self.name}'")
        self.module = torch.jit.load(path, map_location="cpu").eval()
        self.batched = int(config.get("max_batch_size", 0) or 0) > 0
        self.inputs = [t["name"] for t in config.get("input", [])]
        self.outputs = [t["name"] for t in config.get("output", [])]
        self.input_order = self._order(self.inputs)
        self.output_order = self._order(self.outputs)

    @staticmethod
    def _order(names):
        indexed = [(_INDEX.match(n), n) for n in names]
        if all(m for m, _ in indexed):
            return [n for _, n in sorted(indexed, key=lambda p: int(p[0].group(1)))]
        return list(names)  # config order, as Triton does for mixed naming

    def _forward(self, feed):
        with torch.inference_mode():
            result = self.module(*[torch.from_numpy(np.ascontiguousarray(feed[n])) for n in self.input_order])
        if isinstance(result, torch.Tensor):
            result = (result,)
        if isinstance(result, dict):
            result = tuple(result.values())
        return {n: r.detach().cpu().numpy() for n, r in zip(self.output_order, result)}

    def execute(self, requests):
        responses = [None] * len(requests)
        feeds = []
        for i, request in enumerate(requests):
            try:
                feed = {}
                for n in self.inputs:
                    t = pb_utils.get_input_tensor_by_name(request, n)
                    if t is None:
                        raise ValueError(f"input '{n}' is missing")
                    feed[n] = t.as_numpy()
                feeds.append((i, feed))
            except Exception as e:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
        groups = {}
        for i, feed in feeds:
            key = tuple((n, v.shape[1:] if self.batched else v.shape) for n, v in feed.items())
            groups.setdefault(key if self.batched else (i,), []).append((i, feed))
        for group in groups.values():
            try:
                if self.batched:
                    sizes = [next(iter(f.values())).shape[0] for _, f in group]
                    out = self._forward({n: np.concatenate([f[n] for _, f in group]) for n in self.inputs})
                    offset = 0
                    for (i, _), size in zip(group, sizes):
                        responses[i] = pb_utils.InferenceResponse(
                            [pb_utils.Tensor(n, v[offset:offset + size]) for n, v in out.items()])
                        offset += size
                else:
                    i, f = group[0]
                    out = self._forward(f)
                    responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor(n, v) for n, v in out.items()])
            except Exception as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                for i, _ in group:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"pytorch: {msg}"))
        return responses
