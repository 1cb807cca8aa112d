"""A Python-based 'onnxruntime' backend for the deploy tests (this machine has no C++ onnxruntime
backend, see shared/TOOLCHAIN.md): the unchanged production configs (platform onnxruntime_onnx)
load and serve through it. Requests in a batch run one by one; errors go back per request."""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"],
                            cfg.get("default_model_filename") or "model.onnx")
        if os.path.isdir(path):
            path = os.path.join(path, "model.onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.inputs = [t["name"] for t in cfg["input"]]
        self.outputs = [t["name"] for t in cfg["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feed = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
                results = self.session.run(self.outputs, feed)
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(r)) for n, r in zip(self.outputs, results)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as e:  # the request fails, the model stays up
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
        return responses
