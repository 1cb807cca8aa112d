"""``tritonops check``: static validation of a model repository, agreeing with what Triton accepts.

Rules come from Triton's ``model_config_utils.cc`` (see shared/TRITON_RULES.md). Config-only rules
live in ``check_spec`` (also run by ``build`` before it writes); ``check_repository`` adds layout
and model-file rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonops.errors import TritonOpsError, UsageError
from tritonops.pbtxt import ModelConfig, read_config
from tritonops.platforms import DEFAULT_FILE, PLATFORM_OF_BACKEND, VALID_PAIRS, config_backend
from tritonops.repository import version_dirs
from tritonops.wiring import graph_from_configs, wiring_problems


@dataclass(frozen=True)
class Finding:
    model: str
    file: str
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message} (fix: {self.fix})"

    def to_dict(self) -> dict[str, str]:
        return {"model": self.model, "file": self.file, "field": self.field, "message": self.message,
                "fix": self.fix}


@dataclass(frozen=True)
class CheckReport:
    repository: Path
    models: tuple[str, ...]
    findings: tuple[Finding, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "tritonops.check/1", "repository": str(self.repository), "ok": self.ok,
                "models": list(self.models), "findings": [f.to_dict() for f in self.findings]}


class _Collector:
    def __init__(self, model: str, file: str) -> None:
        self.model, self.file = model, file
        self.findings: list[Finding] = []

    def add(self, fld: str, message: str, fix: str) -> None:
        self.findings.append(Finding(self.model, self.file, fld, message, fix))


def _elements(shape: list[int]) -> tuple[int, int]:
    """(product of fixed dims, number of variable dims)."""
    fixed = math.prod(d for d in shape if d != -1)
    return fixed, sum(1 for d in shape if d == -1)


def _check_io(c: _Collector, cfg: ModelConfig, kind: str) -> None:
    tensors = cfg.input if kind == "input" else cfg.output
    seen: set[str] = set()
    for i, t in enumerate(tensors):
        where = f"{kind}[{i}] '{t.name}'"
        if not t.name:
            c.add(f"{kind}[{i}].name", "tensor has no name", "give every input and output a name")
        if t.name in seen:
            c.add(f"{where}.name", f"{kind} '{t.name}' is declared twice", "remove the duplicate")
        seen.add(t.name)
        if t.data_type == 0:
            c.add(f"{where}.data_type", "data_type is missing (TYPE_INVALID)", "set data_type, e.g. TYPE_FP32")
        dims = list(t.dims)
        if not dims and not (cfg.max_batch_size > 0 and t.HasField("reshape")):
            c.add(f"{where}.dims", "dims is empty",
                  "list the dimensions (without the batch dimension if max_batch_size > 0)")
        bad = [d for d in dims if d == 0 or d < -1]
        if bad:
            c.add(f"{where}.dims", f"dimension {bad[0]} is invalid", "each dimension must be >= 1 or -1 (variable)")
        if t.HasField("reshape"):
            shape = list(t.reshape.shape)
            if not shape and cfg.max_batch_size == 0:
                c.add(f"{where}.reshape", "reshape to a scalar ([]) is only allowed when the model batches",
                      "remove the reshape, or set max_batch_size > 0")
            elif _elements(dims) != _elements(shape) and not (dims == [1] and not shape):
                c.add(f"{where}.reshape",
                      f"reshape {shape} does not have the same number of elements as dims {dims}",
                      "make reshape's element count (and its -1 dims) match dims")


def check_spec(cfg: ModelConfig) -> list[Finding]:
    """Semantic rules Triton applies to a model config, independent of files on disk."""
    return _check_config(cfg, cfg.name or "model", "config.pbtxt")


def _check_config(cfg: ModelConfig, model: str, file: str) -> list[Finding]:
    c = _Collector(model, file)
    platform, backend = cfg.platform, cfg.backend
    if platform == "libtorch":
        platform = "pytorch_libtorch"
    if platform and backend and (platform, backend) not in VALID_PAIRS:
        c.add("platform/backend", f"unexpected platform '{platform}' and backend '{backend}' pair",
              f"use a valid pair, e.g. platform \"{PLATFORM_OF_BACKEND.get(backend, 'onnxruntime_onnx')}\" "
              f"with backend \"{backend}\"")
    if platform and not backend and platform not in {p for p, _ in VALID_PAIRS if p}:
        c.add("platform", f"unknown platform '{platform}'",
              "use onnxruntime_onnx, pytorch_libtorch, tensorrt_plan or ensemble")
    if cfg.max_batch_size < 0:
        c.add("max_batch_size", f"max_batch_size {cfg.max_batch_size} is negative", "use 0 (no batching) or more")
    is_ensemble = platform == "ensemble"
    if is_ensemble:
        if cfg.instance_group:
            c.add("instance_group", "an ensemble must not set instance_group",
                  "remove instance_group from the ensemble")
        if cfg.HasField("optimization"):
            c.add("optimization", "an ensemble must not set optimization", "remove optimization from the ensemble")
        if cfg.model_warmup:
            c.add("model_warmup", "an ensemble must not set model_warmup", "remove model_warmup from the ensemble")
        if cfg.HasField("dynamic_batching"):
            c.add("dynamic_batching", "an ensemble cannot use dynamic batching",
                  "enable dynamic_batching on the composing models instead")
    _check_io(c, cfg, "input")
    _check_io(c, cfg, "output")
    if cfg.HasField("dynamic_batching"):
        db = cfg.dynamic_batching
        for p in db.preferred_batch_size:
            if p < 1:
                c.add("dynamic_batching.preferred_batch_size", f"preferred batch size {p} is not positive",
                      "use sizes >= 1")
            elif cfg.max_batch_size > 0 and p > cfg.max_batch_size:
                c.add("dynamic_batching.preferred_batch_size",
                      f"preferred batch size {p} is above max_batch_size {cfg.max_batch_size}",
                      f"use preferred sizes up to {cfg.max_batch_size}, or raise max_batch_size")
        if db.priority_levels:
            if not 1 <= db.default_priority_level <= db.priority_levels:
                c.add("dynamic_batching.default_priority_level",
                      f"default_priority_level {db.default_priority_level} is outside 1..{db.priority_levels}",
                      f"set default_priority_level between 1 and {db.priority_levels}")
            for level in db.priority_queue_policy:
                if not 1 <= level <= db.priority_levels:
                    c.add("dynamic_batching.priority_queue_policy",
                          f"priority_queue_policy names level {level}, outside 1..{db.priority_levels}",
                          "use levels between 1 and priority_levels")
        elif db.default_priority_level or db.priority_queue_policy:
            c.add("dynamic_batching.priority_levels",
                  "default_priority_level/priority_queue_policy is set but priority_levels is 0",
                  "set priority_levels, or remove the priority settings")
        if db.preserve_ordering and db.priority_levels > 1:
            c.add("dynamic_batching.preserve_ordering", "preserve_ordering allows only one priority level",
                  "remove preserve_ordering or set priority_levels to 1")
    if cfg.HasField("response_cache") and cfg.response_cache.enable:
        if cfg.HasField("sequence_batching"):
            c.add("response_cache", "response_cache cannot be combined with sequence_batching",
                  "disable response_cache or use dynamic_batching")
        if cfg.model_transaction_policy.decoupled:
            c.add("response_cache", "response_cache cannot be used by a decoupled model",
                  "disable response_cache")
    for i, g in enumerate(cfg.instance_group):
        kind = g.kind
        if kind in (2, 3) and g.gpus:  # KIND_CPU=2, KIND_MODEL=3
            c.add(f"instance_group[{i}].gpus", "gpus is only valid for KIND_GPU or KIND_AUTO groups",
                  "remove gpus, or use kind KIND_GPU")
        if g.count < 0:
            c.add(f"instance_group[{i}].count", f"count {g.count} is negative", "use count >= 1")
    for i, w in enumerate(cfg.model_warmup):
        if w.batch_size < 1:
            c.add(f"model_warmup[{i}].batch_size", "warm-up batch_size must be >= 1", "set batch_size: 1")
        elif cfg.max_batch_size == 0 and w.batch_size != 1:
            c.add(f"model_warmup[{i}].batch_size", "a model that does not batch must warm up with batch_size 1",
                  "set batch_size: 1")
        elif cfg.max_batch_size and w.batch_size > cfg.max_batch_size:
            c.add(f"model_warmup[{i}].batch_size",
                  f"warm-up batch_size {w.batch_size} is above max_batch_size {cfg.max_batch_size}",
                  "lower the warm-up batch size")
        names = {t.name for t in cfg.input}
        for key in w.inputs:
            if cfg.input and key not in names:
                c.add(f"model_warmup[{i}].inputs", f"warm-up input '{key}' is not an input of the model",
                      "use the model's input names")
    return c.findings


def check_model(model_dir: Path) -> list[Finding]:
    name = model_dir.name
    config_path = model_dir / "config.pbtxt"
    rel = f"{name}/config.pbtxt"
    c = _Collector(name, rel)
    if not config_path.exists():
        onnx_versions = [v for v in version_dirs(model_dir) if (model_dir / str(v) / "model.onnx").exists()]
        if onnx_versions:
            return []  # Triton's ONNX Runtime auto-complete fills the config in
        c.add("config.pbtxt", "config.pbtxt is missing", f"write one, e.g. with: tritonops build MODEL --name {name}")
        return c.findings
    try:
        cfg = read_config(config_path)
    except UsageError as e:
        c.add("(syntax)", e.message.split(": ", 1)[-1], "fix the syntax; field names are those of model_config.proto")
        return c.findings
    if cfg.name and cfg.name != name:
        c.add("name", f"name '{cfg.name}' does not match the directory name '{name}'",
              f"set name: \"{name}\" or rename the directory")
    findings = _check_config(cfg, name, rel)
    if cfg.platform == "ensemble":
        findings.extend(_check_ensemble(cfg, model_dir, rel))
    versions = version_dirs(model_dir)
    available = _policy_versions(cfg, versions)
    if not versions:
        c.add("(versions)", f"{name}/ has no version directory", f"put the model files in {name}/1/")
    elif not available:
        c.add("version_policy", f"the version policy selects no existing version (present: {versions})",
              "list versions that exist, or use the default latest policy")
    version_paths = [model_dir / str(v) for v in available]
    backend = config_backend(cfg, version_paths)
    if not backend and cfg.platform != "ensemble":
        c.add("platform/backend", "no platform or backend is set and no known model file was found",
              "set platform (e.g. \"onnxruntime_onnx\") or backend (e.g. \"python\")")
    filename = cfg.default_model_filename or DEFAULT_FILE.get(backend, "")
    if filename:
        for v in version_paths:
            if not (v / filename).exists():
                c.add("(model file)", f"{name}/{v.name}/{filename} is missing",
                      f"put the model file at {name}/{v.name}/{filename} (or set default_model_filename)")
    if backend == "onnxruntime" and not findings and not c.findings:
        for v in version_paths:
            _check_onnx_io(c, cfg, v / filename, f"{name}/{v.name}/{filename}")
    return findings + c.findings


def _check_ensemble(cfg: ModelConfig, model_dir: Path, rel: str) -> list[Finding]:
    """The wiring rules of ``tritonops.ensemble`` (the same ones ``build`` applies to ensemble.yaml),
    against the composing models' configs found beside the ensemble."""

    c = _Collector(model_dir.name, rel)
    members: dict[str, ModelConfig] = {}
    for i, step in enumerate(cfg.ensemble_scheduling.step):
        member = model_dir.parent / step.model_name
        try:
            if not (member / "config.pbtxt").is_file():
                c.add(f"ensemble_scheduling.step[{i}].model_name",
                      f"step model '{step.model_name}' is not in the repository (no {step.model_name}/config.pbtxt)",
                      f"build '{step.model_name}' into this repository, or fix model_name")
                continue
            members[step.model_name] = read_config(member / "config.pbtxt")
        except UsageError:
            continue  # reported by that model's own check
    if not cfg.ensemble_scheduling.step:
        c.add("ensemble_scheduling", "the ensemble has no steps", "add ensemble_scheduling { step { ... } }")
        return c.findings
    for p in wiring_problems(graph_from_configs(cfg, members)):
        fld = f"ensemble_scheduling.step[{p.index}]" if p.index is not None else "ensemble_scheduling"
        c.add(fld, p.message, p.fix)
    return c.findings


def _policy_versions(cfg: ModelConfig, versions: list[int]) -> list[int]:
    which = cfg.version_policy.WhichOneof("policy_choice") if cfg.HasField("version_policy") else None
    if which == "all":
        return versions
    if which == "specific":
        return [v for v in versions if v in set(cfg.version_policy.specific.versions)]
    n = cfg.version_policy.latest.num_versions if which == "latest" else 1
    return versions[-max(n, 1):]


def _check_onnx_io(c: _Collector, cfg: ModelConfig, onnx_path: Path, shown: str) -> None:
    from tritonops.convert.onnx_inspect import inspect_onnx
    from tritonops.dtypes import from_config

    try:
        info = inspect_onnx(onnx_path)
    except TritonOpsError as e:
        c.add("(model file)", f"{shown}: {e.message}", e.hint or "export the model again")
        return
    batched = cfg.max_batch_size > 0
    for kind, declared, actual in (("input", cfg.input, info.inputs), ("output", cfg.output, info.outputs)):
        by_name = {t.name: t for t in actual}
        for i, t in enumerate(declared):
            where = f"{kind}[{i}] '{t.name}'"
            m = by_name.get(t.name)
            if m is None:
                c.add(f"{where}.name", f"the ONNX model has no {kind} '{t.name}' (it has: {', '.join(by_name)})",
                      f"use the model's {kind} names")
                continue
            if t.data_type and from_config(mc_type_name(t.data_type)) != m.dtype:
                c.add(f"{where}.data_type",
                      f"config says {mc_type_name(t.data_type)} but the ONNX model has {m.dtype.config}",
                      f"set data_type: {m.dtype.config}")
            shape = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            rank = len(shape) + (1 if batched else 0)
            if m.shape and rank != len(m.shape):
                c.add(f"{where}.dims",
                      f"config gives rank {rank}{' with the batch dimension' if batched else ''} "
                      f"but the ONNX model's {kind} has rank {len(m.shape)}",
                      f"set dims to {_suggest(m.shape, batched)}")
                continue
            if batched and m.shape and isinstance(m.shape[0], int) and m.shape[0] > 0:
                c.add("max_batch_size",
                      f"max_batch_size is {cfg.max_batch_size} but ONNX {kind} '{t.name}' has a fixed first "
                      f"dimension {m.shape[0]}",
                      "set max_batch_size: 0 and write the full shape in dims, "
                      "or export with a dynamic batch dimension")
                continue
            model_dims = m.shape[1:] if batched else m.shape
            for j, (cd, md) in enumerate(zip(shape, model_dims, strict=False)):
                if isinstance(md, int) and md > 0 and cd not in (-1, md):
                    c.add(f"{where}.dims", f"dimension {j} is {cd} but the ONNX model has {md}",
                          f"set dims to {_suggest(m.shape, batched)}")
                    break
        if kind == "input":
            missing = [n for n in by_name if n not in {t.name for t in declared}]
            if declared and missing:
                c.add("input", f"the ONNX model's input '{missing[0]}' is not in the config",
                      "declare every model input in the config")


def _suggest(shape: tuple[Any, ...], batched: bool) -> str:
    dims = shape[1:] if batched else shape
    return "[" + ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in dims) + "]"


def mc_type_name(value: int) -> str:
    from tritonclient.grpc import model_config_pb2 as mc

    return mc.DataType.Name(value)


def check_repository(repository: Path) -> CheckReport:
    if not repository.exists():
        raise UsageError(f"repository '{repository}' does not exist", "give the directory that holds the models")
    if not repository.is_dir():
        raise UsageError(f"repository '{repository}' is not a directory", "give the directory that holds the models")
    models = sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
    findings: list[Finding] = []
    for m in models:
        findings.extend(check_model(m))
    return CheckReport(repository, tuple(m.name for m in models), tuple(findings))
