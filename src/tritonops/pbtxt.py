"""The only place that turns specs into ``config.pbtxt`` and back, through Triton's own protobuf
(``tritonclient.grpc.model_config_pb2``) — never string templates.

spec -> config: ``render_config``; config -> spec: ``spec_from_config`` (round-trip tested on every
golden file). Both live here, not as ``ModelSpec`` methods, because spec.py is what this module
renders: a ``ModelSpec.from_config`` would have spec.py import the protobuf layer back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from tritonops.dtypes import BY_CONFIG, from_config
from tritonops.errors import TritonOpsError, UsageError
from tritonops.paths import read_text
from tritonops.platforms import PLATFORM_OF_BACKEND
from tritonops.spec import (
    CONTROL_FORMS,
    PLATFORMS,
    Accelerator,
    DynamicBatching,
    InstanceGroup,
    ModelSpec,
    QueuePolicy,
    SequenceBatching,
    SequenceControl,
    SequenceState,
    TensorSpec,
    VersionPolicy,
    WarmupInput,
)

ModelConfig = mc.ModelConfig
_KIND = {"cpu": "KIND_CPU", "gpu": "KIND_GPU", "auto": "KIND_AUTO"}
_KIND_OF = {v: k for k, v in _KIND.items()}


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
    inputs: dict[str, Any] = {}
    if spec.warmup_inputs:  # a real sample, read from the model's warmup/ directory
        inputs = {w.name: {"data_type": w.dtype.config, "dims": list(w.dims), "input_data_file": w.data_file}
                  for w in spec.warmup_inputs}
        return [{"name": f"{spec.name}_warmup", "batch_size": 1, "count": 1, "inputs": inputs}]
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


# control value forms: false, true (Triton's own examples write START/READY as int32 0/1)
_FALSE_TRUE: dict[str, list[Any]] = {"int32_false_true": [0, 1], "fp32_false_true": [0.0, 1.0],
                                     "bool_false_true": [False, True]}


def _control(c: SequenceControl) -> dict[str, Any]:
    ctl: dict[str, Any] = {"kind": f"CONTROL_SEQUENCE_{c.kind}"}
    if c.kind == "CORRID":
        ctl["data_type"] = c.dtype.config
    else:
        form = CONTROL_FORMS[c.dtype.name]
        ctl[form] = _FALSE_TRUE[form]
    return {"name": c.tensor, "control": [ctl]}


def _state(st: SequenceState) -> dict[str, Any]:
    zero = {"name": f"{st.input_name}_zero", "data_type": st.dtype.config, "dims": list(st.dims), "zero_data": True}
    return {"input_name": st.input_name, "output_name": st.output_name, "data_type": st.dtype.config,
            "dims": list(st.dims), "initial_state": [zero]}


def _sequence_dict(sb: SequenceBatching) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if sb.max_sequence_idle_us:
        d["max_sequence_idle_microseconds"] = sb.max_sequence_idle_us
    strategy: dict[str, Any] = {}
    if sb.max_queue_delay_us:
        strategy["max_queue_delay_microseconds"] = sb.max_queue_delay_us
    if sb.strategy == "oldest":
        if sb.max_candidate_sequences:
            strategy["max_candidate_sequences"] = sb.max_candidate_sequences
        if sb.preferred_batch_sizes:
            strategy["preferred_batch_size"] = list(sb.preferred_batch_sizes)
    d[sb.strategy] = strategy
    if sb.controls:
        d["control_input"] = [_control(c) for c in sb.controls]
    if sb.states:
        d["state"] = [_state(st) for st in sb.states]
    return d


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
    if spec.sequence_batching is not None:
        cfg["sequence_batching"] = _sequence_dict(spec.sequence_batching)
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


CONFIG_READ_LIMIT = 16 << 20  # far above any real config; a FIFO, /dev/zero or a huge file is refused


def read_config_text(path: Path) -> str:
    """The text of a ``config.pbtxt`` through the one safe reader: a regular file, at most 16 MiB,
    UTF-8; otherwise a ``UsageError`` that says so (not a syntax error)."""
    return read_text(path, "config", CONFIG_READ_LIMIT)


def read_config(path: Path) -> mc.ModelConfig:
    return parse_config_text(read_config_text(path), str(path))


def tensor_specs(config: mc.ModelConfig) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The served config's inputs and outputs as TensorSpecs (dims without the batch dimension)."""

    def conv(t: Any) -> TensorSpec:
        dtype = from_config(mc.DataType.Name(t.data_type))
        reshape = tuple(t.reshape.shape) if t.HasField("reshape") else None
        return TensorSpec(t.name, dtype, tuple(t.dims), reshape=reshape, optional=getattr(t, "optional", False),
                          allow_ragged_batch=getattr(t, "allow_ragged_batch", False))

    return tuple(conv(t) for t in config.input), tuple(conv(t) for t in config.output)


# ---------------------------------------------------------------- config -> spec


def _spec_platform(cfg: mc.ModelConfig) -> str:
    platform = cfg.platform or PLATFORM_OF_BACKEND.get(cfg.backend) or cfg.backend
    if platform == "libtorch":
        platform = "pytorch_libtorch"
    if platform not in PLATFORMS:
        raise UsageError(f"model '{cfg.name}': a {platform or 'platform-less'} model has no ModelSpec",
                         f"ModelSpec platforms are {', '.join(PLATFORMS)}")
    return platform


def _dynamic_batching(cfg: mc.ModelConfig) -> DynamicBatching | None:
    if not cfg.HasField("dynamic_batching"):
        return None
    db = cfg.dynamic_batching
    queue = None
    if db.HasField("default_queue_policy"):
        qp = db.default_queue_policy
        queue = QueuePolicy(qp.max_queue_size, qp.default_timeout_microseconds,
                            mc.ModelQueuePolicy.TimeoutAction.Name(qp.timeout_action),
                            qp.allow_timeout_override)
    return DynamicBatching(tuple(db.preferred_batch_size), db.max_queue_delay_microseconds, db.preserve_ordering,
                           db.priority_levels, db.default_priority_level, queue)


def _sequence_control(ci: Any) -> SequenceControl | None:
    if len(ci.control) != 1:
        return None
    ctl = ci.control[0]
    kind = mc.ModelSequenceBatching.Control.Kind.Name(ctl.kind).removeprefix("CONTROL_SEQUENCE_")
    if kind == "CORRID":
        return SequenceControl("CORRID", ci.name, from_config(mc.DataType.Name(ctl.data_type)))
    for dtype, form in CONTROL_FORMS.items():
        if list(getattr(ctl, form)) == _FALSE_TRUE[form]:
            return SequenceControl(kind, ci.name, from_config(f"TYPE_{dtype}"))
    return None


def _sequence_batching(cfg: mc.ModelConfig) -> SequenceBatching | None:
    """The typed part of ``sequence_batching``; whatever it cannot hold (other control values, a
    minimum slot utilization, initial state from a file, ...) stays in ``extra`` (spec_from_config)."""
    if not cfg.HasField("sequence_batching"):
        return None
    try:
        return _typed_sequence_batching(cfg.sequence_batching)
    except (TritonOpsError, KeyError):  # a config Triton refuses (check says why): all of it in extra
        return None


def _typed_sequence_batching(sb: Any) -> SequenceBatching | None:
    controls = tuple(_sequence_control(ci) for ci in sb.control_input)
    if any(c is None for c in controls):
        return None
    states = tuple(SequenceState(st.input_name, st.output_name, BY_CONFIG[mc.DataType.Name(st.data_type)],
                                 tuple(st.dims)) for st in sb.state if mc.DataType.Name(st.data_type) in BY_CONFIG)
    oldest = sb.WhichOneof("strategy_choice") == "oldest"
    strategy = sb.oldest if oldest else sb.direct
    return SequenceBatching(
        strategy="oldest" if oldest else "direct", max_sequence_idle_us=sb.max_sequence_idle_microseconds,
        max_queue_delay_us=strategy.max_queue_delay_microseconds,
        preferred_batch_sizes=tuple(sb.oldest.preferred_batch_size) if oldest else (),
        max_candidate_sequences=sb.oldest.max_candidate_sequences if oldest else 0,
        controls=tuple(c for c in controls if c is not None), states=states,
    )


def _warmup_inputs(cfg: mc.ModelConfig) -> tuple[WarmupInput, ...]:
    if len(cfg.model_warmup) != 1:
        return ()
    inputs = cfg.model_warmup[0].inputs
    if not inputs or not all(i.WhichOneof("input_data_type") == "input_data_file" for i in inputs.values()):
        return ()
    return tuple(WarmupInput(name, BY_CONFIG[mc.DataType.Name(i.data_type)], tuple(i.dims), i.input_data_file)
                 for name, i in inputs.items() if mc.DataType.Name(i.data_type) in BY_CONFIG)


def _instance_groups(cfg: mc.ModelConfig) -> tuple[InstanceGroup, ...]:
    groups = []
    for g in cfg.instance_group:
        kind = _KIND_OF.get(mc.ModelInstanceGroup.Kind.Name(g.kind))
        if kind is None or g.count < 1:  # KIND_MODEL, or a count Triton defaults: kept verbatim in extra
            return ()
        groups.append(InstanceGroup(g.count, kind, tuple(g.gpus)))  # type: ignore[arg-type]
    return tuple(groups)


def _version_policy(cfg: mc.ModelConfig) -> VersionPolicy | None:
    if not cfg.HasField("version_policy"):
        return None
    vp = cfg.version_policy
    which = vp.WhichOneof("policy_choice")
    if which == "specific":
        return VersionPolicy("specific", versions=tuple(vp.specific.versions))
    if which == "all":
        return VersionPolicy("all")
    return VersionPolicy("latest", num_versions=vp.latest.num_versions)


def _accelerators(cfg: mc.ModelConfig) -> tuple[Accelerator, ...]:
    gpu = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    return tuple(Accelerator(a.name, tuple(sorted(a.parameters.items())))
                 for a in gpu if a.name in ("tensorrt", "cuda"))


def _as_dict(cfg: mc.ModelConfig) -> dict[str, Any]:
    return json_format.MessageToDict(cfg, preserving_proto_field_name=True)


def spec_from_config(cfg: mc.ModelConfig) -> ModelSpec:
    """A model config as a ModelSpec: the inverse of ``render_config``. What a ModelSpec has no field
    for (ensemble_scheduling, a tensor's format, a KIND_MODEL group, ...) is kept
    verbatim in ``extra``, field by field, so that ``render_config(spec_from_config(cfg)) == cfg``."""
    inputs, outputs = tensor_specs(cfg)
    try:
        spec = ModelSpec(
            name=cfg.name, platform=_spec_platform(cfg),  # type: ignore[arg-type]
            max_batch_size=cfg.max_batch_size, inputs=inputs, outputs=outputs,
            dynamic_batching=_dynamic_batching(cfg), instance_groups=_instance_groups(cfg),
            response_cache=cfg.response_cache.enable, warmup=len(cfg.model_warmup) > 0,
            version_policy=_version_policy(cfg),
            parameters=tuple(sorted((k, v.string_value) for k, v in cfg.parameters.items())),
            accelerators=_accelerators(cfg), default_model_filename=cfg.default_model_filename or None,
            sequence_batching=_sequence_batching(cfg), warmup_inputs=_warmup_inputs(cfg),
        )
    except TritonOpsError as e:
        raise UsageError(f"model '{cfg.name}': {e.message}", e.hint) from None
    original, rendered = _as_dict(cfg), _as_dict(render_config(spec))
    extra: dict[str, object] = {}
    for key in original.keys() | rendered.keys():
        if original.get(key) != rendered.get(key):
            if key not in original:  # the spec renders a field the config leaves out: only a scalar can be unset
                fd = mc.ModelConfig.DESCRIPTOR.fields_by_name[key]
                if fd.message_type is not None or fd.label == fd.LABEL_REPEATED:
                    raise UsageError(f"model '{cfg.name}': its {key} cannot be expressed as a ModelSpec",
                                     "this is a tritonops bug: please report it with the config")
                extra[key] = fd.default_value
            else:
                extra[key] = original[key]
    return replace(spec, extra=extra) if extra else spec
