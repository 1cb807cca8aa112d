"""Python-backend models the tests serve: a deliberately slow one (a fixed time per request, one request
at a time), for load that the server cannot keep up with."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from tritonops.pbtxt import config_to_text

SLOW_PY = '''\
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            time.sleep({seconds!r})
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", x)]))
        return out
'''


def write_slow_model(repo: Path, seconds: float, name: str = "slow") -> None:
    """``name``: FP32 [4] INPUT -> OUTPUT unchanged, ``seconds`` per request, one instance, no batching:
    it serves 1/seconds requests/s at most, whatever the protocol."""
    cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=0)
    cfg.input.add(name="INPUT", data_type=mc.TYPE_FP32, dims=[4])
    cfg.output.add(name="OUTPUT", data_type=mc.TYPE_FP32, dims=[4])
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.py").write_text(SLOW_PY.format(seconds=seconds))
    (repo / name / "config.pbtxt").write_text(config_to_text(cfg))
