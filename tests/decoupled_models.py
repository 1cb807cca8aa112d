"""A real decoupled Python-backend model for tests: for input N it sends N responses (OUT = 0, 1, ...,
N - 1, or ``offset`` more), then the final flag, through the request's response sender.

The model runs the function its config names (parameter ``tritonops.function``) from ``steps.py``
beside it, the way a tritonops python step does, so validate can run the same function in-process.
``write_model(..., step=False)`` leaves the parameter out: a plain decoupled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from tritonops.pbtxt import config_to_text
from tritonops.samples import EXAMPLES_FILE

MODEL_PY = '''\
import importlib.util
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = cfg.get("parameters", {})
        function = (params.get("tritonops.function") or params.get("function"))["string_value"]
        here = Path(args["model_repository"]) / args["model_version"]
        spec = importlib.util.spec_from_file_location("steps_" + cfg["name"], here / "steps.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.fn = getattr(module, function)

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                feed = {"N": pb_utils.get_input_tensor_by_name(request, "N").as_numpy()}
                for outputs in self.fn(feed):
                    sender.send(pb_utils.InferenceResponse(
                        output_tensors=[pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in outputs.items()]))
            except Exception as e:
                sender.send(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''

STEPS_PY = '''\
import numpy as np


def count(inputs):
    """One response per number below N (N clipped to 0..16)."""
    n = max(0, min(int(inputs["N"].reshape(-1)[0]), 16))
    for i in range(n):
        yield {"OUT": np.array([i + OFFSET], dtype=np.int32)}
'''


def config(name: str, step: bool = True) -> mc.ModelConfig:
    cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=0)
    cfg.input.add(name="N", data_type=mc.TYPE_INT32, dims=[1])
    cfg.output.add(name="OUT", data_type=mc.TYPE_INT32, dims=[1])
    cfg.model_transaction_policy.decoupled = True
    cfg.parameters["tritonops.function" if step else "function"].string_value = "count"
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    return cfg


def write_model(repo: Path, name: str, *, step: bool = True, offset: int = 0, examples: int | None = 3) -> Path:
    """<repo>/<name>/{config.pbtxt, 1/model.py, 1/steps.py} and, with ``examples``, the saved example
    input N (tritonops_examples.npz: one request, the first axis counting samples)."""
    d = repo / name
    (d / "1").mkdir(parents=True, exist_ok=True)
    (d / "1" / "model.py").write_text(MODEL_PY)
    (d / "1" / "steps.py").write_text(f"OFFSET = {offset}\n" + STEPS_PY)
    (d / "config.pbtxt").write_text(config_to_text(config(name, step)))
    if examples is not None:
        np.savez(d / EXAMPLES_FILE, N=np.array([[examples]], dtype=np.int32))
    return d
