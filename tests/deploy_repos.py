"""Model repositories for the deploy tests, written through tritonops' own config renderer
(pbtxt.render_config) and real tiny ONNX models, without the build pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx_models
from tritonops.dtypes import BY_NAME
from tritonops.pbtxt import config_to_text, render_config
from tritonops.spec import DynamicBatching, InstanceGroup, ModelSpec, TensorSpec

FP32 = BY_NAME["FP32"]


def mlp_spec(name: str = "mlp", max_batch_size: int = 8, kind: str = "cpu", count: int = 1) -> ModelSpec:
    return ModelSpec(
        name=name, platform="onnxruntime_onnx", max_batch_size=max_batch_size,
        inputs=(TensorSpec("x", FP32, (4,)),), outputs=(TensorSpec("y", FP32, (3,)),),
        dynamic_batching=DynamicBatching() if max_batch_size else None,
        instance_groups=(InstanceGroup(count=count, kind=kind),),  # type: ignore[arg-type]
    )


def write_model(repo: Path, spec: ModelSpec, version: int, onnx_file: Path) -> Path:
    model_dir = repo / spec.name
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx_file, model_dir / str(version) / "model.onnx")
    (model_dir / "config.pbtxt").write_text(config_to_text(render_config(spec)))
    return model_dir


def mlp_repo(root: Path, name: str = "mlp", seed: int = 0, version: int = 1, **spec_kw) -> Path:
    """A repository with one MLP; ``seed`` picks its weights (distinguishable outputs)."""
    repo = root / "repo"
    onnx_file = onnx_models.mlp(root / "src" / f"{name}-{seed}.onnx", seed=seed)
    write_model(repo, mlp_spec(name, **spec_kw), version, onnx_file)
    return repo


def broken_mlp(path: Path) -> Path:
    """Same inputs and outputs as the MLP, loads fine, fails every inference: Gather reads columns 7-9
    of a 4-column input (ONNX shape inference does not check index values; onnxruntime does at run time)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    idx = numpy_helper.from_array(np.array([7, 8, 9], dtype=np.int64), "idx")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "idx"], ["y"], axis=1)], "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[idx],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_models.OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path
