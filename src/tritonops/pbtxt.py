"""The only place that turns specs into ``config.pbtxt`` and back, through Triton's own protobuf
(``tritonclient.grpc.model_config_pb2``) — never string templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from tritonops.dtypes import from_config
from tritonops.errors import UsageError
from tritonops.spec import ModelSpec, TensorSpec

ModelConfig = mc.ModelConfig
_KIND = {"cpu": "KIND_CPU", "gpu": "KIND_GPU", "auto": "KIND_AUTO"}


def _tensor(t: TensorSpec, output: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"name": t.name, "data_type": t.dtype.config, "dims": list(t.dims)}
    if t.reshape is not None:
        d["reshape"] = {"shape": list(t.reshape)}
    if not output:
        if t.optional:
            d["optional"] = True
        if t.allow_ragged_batch:
            d["allow_ragged_batch"] = True
    return d


def _warmup(spec: ModelSpec) -> list[dict[str, Any]]:
    inputs = {}
    for t in spec.inputs:
        if t.optional:
            continue
        dims = [1 if d == -1 else d for d in t.dims]
        # Triton's random_data falls back to zeros for STRING; say so explicitly. Integer inputs
        # (token ids, indices) are zero-filled too, since random values can be out of range.
        numeric_float = t.dtype.name in ("FP16", "FP32", "FP64", "BF16")
        data = {"random_data": True} if numeric_float else {"zero_data": True}
        inputs[t.name] = {"data_type": t.dtype.config, "dims": dims, **data}
    return [{"name": f"{spec.name}_warmup", "batch_size": 1, "count": 1, "inputs": inputs}]


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """The ModelConfig as a dict with proto field names (also what a load-with-config API takes)."""
    cfg: dict[str, Any] = {"name": spec.name}
    if spec.platform == "python":
        cfg["backend"] = "python"
    elif spec.platform == "ensemble":
        cfg["platform"] = "ensemble"
    else:
        cfg["platform"] = spec.platform
        cfg["backend"] = spec.backend
    cfg["max_batch_size"] = spec.max_batch_size
    if spec.default_model_filename:
        cfg["default_model_filename"] = spec.default_model_filename
    cfg["input"] = [_tensor(t, output=False) for t in spec.inputs]
    cfg["output"] = [_tensor(t, output=True) for t in spec.outputs]
    if spec.version_policy is not None:
        vp = spec.version_policy
        if vp.kind == "latest":
            cfg["version_policy"] = {"latest": {"num_versions": vp.num_versions}}
        elif vp.kind == "all":
            cfg["version_policy"] = {"all": {}}
        else:
            cfg["version_policy"] = {"specific": {"versions": list(vp.versions)}}
    db = spec.dynamic_batching
    if db is not None:
        dbd: dict[str, Any] = {}
        if db.preferred_batch_sizes:
            dbd["preferred_batch_size"] = list(db.preferred_batch_sizes)
        if db.max_queue_delay_us:
            dbd["max_queue_delay_microseconds"] = db.max_queue_delay_us
        if db.preserve_ordering:
            dbd["preserve_ordering"] = True
        if db.priority_levels:
            dbd["priority_levels"] = db.priority_levels
            dbd["default_priority_level"] = db.default_priority_level
        if db.queue_policy is not None:
            qp = db.queue_policy
            dbd["default_queue_policy"] = {
                "timeout_action": qp.timeout_action,
                "default_timeout_microseconds": qp.timeout_us,
                "allow_timeout_override": qp.allow_timeout_override,
                "max_queue_size": qp.max_queue_size,
            }
        cfg["dynamic_batching"] = dbd
    if spec.platform != "ensemble":
        cfg["instance_group"] = [
            {"count": g.count, "kind": _KIND[g.kind], **({"gpus": list(g.gpus)} if g.gpus else {})}
            for g in spec.instance_groups
        ]
    if spec.accelerators:
        cfg["optimization"] = {
            "execution_accelerators": {
                "gpu_execution_accelerator": [
                    {"name": a.name, "parameters": dict(a.parameters)} for a in spec.accelerators
                ]
            }
        }
    if spec.parameters:
        cfg["parameters"] = {k: {"string_value": v} for k, v in spec.parameters}
    if spec.response_cache:
        cfg["response_cache"] = {"enable": True}
    if spec.warmup and spec.platform != "ensemble":
        cfg["model_warmup"] = _warmup(spec)
    cfg.update(spec.extra)
    return cfg


def render_config(spec: ModelSpec) -> mc.ModelConfig:
    return dict_to_config(spec_to_dict(spec), where=f"model '{spec.name}'")


def dict_to_config(d: dict[str, Any], where: str) -> mc.ModelConfig:
    try:
        return json_format.ParseDict(d, mc.ModelConfig())
    except json_format.ParseError as e:
        raise UsageError(f"{where}: invalid model config: {e}", "check the field names and values") from None


def config_to_text(cfg: mc.ModelConfig) -> str:
    """Text format for config.pbtxt. proto3 drops zero values, so ``max_batch_size: 0`` is
    restored explicitly: readers should see that the model does not batch."""
    text = text_format.MessageToString(cfg)
    if cfg.max_batch_size == 0:
        lines = text.splitlines(keepends=True)
        at = next((i + 1 for i, line in enumerate(lines) if line.startswith(("backend:", "platform:"))), 1)
        lines.insert(at, "max_batch_size: 0\n")
        text = "".join(lines)
    return text


def config_to_json(cfg: mc.ModelConfig) -> str:
    """JSON with proto field names: what Triton's load API (``config=``) accepts."""
    return json_format.MessageToJson(cfg, preserving_proto_field_name=True)


def parse_config_text(text: str, where: str) -> mc.ModelConfig:
    cfg = mc.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise UsageError(f"{where}: {e}", "fix the syntax; field names are those of model_config.proto") from None
    return cfg


def read_config(path: Path) -> mc.ModelConfig:
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}", "check the path and its permissions") from None
    return parse_config_text(text, str(path))


def tensor_specs(config: mc.ModelConfig) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The served config's inputs and outputs as TensorSpecs (dims without the batch dimension)."""

    def conv(t: Any) -> TensorSpec:
        dtype = from_config(mc.DataType.Name(t.data_type))
        reshape = tuple(t.reshape.shape) if t.HasField("reshape") else None
        return TensorSpec(t.name, dtype, tuple(t.dims), reshape=reshape, optional=getattr(t, "optional", False))

    return tuple(conv(t) for t in config.input), tuple(conv(t) for t in config.output)
