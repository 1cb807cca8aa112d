"""``tritonops check``: static validation of a model repository, agreeing with what Triton accepts.

Rules come from Triton's ``model_config_utils.cc`` (see shared/TRITON_RULES.md). Config-only rules
live in ``check_spec`` (also run by ``build`` before it writes); ``check_repository`` adds layout
and model-file rules."""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from tritonops.convert.onnx_inspect import inspect_onnx
from tritonops.dtypes import from_config
from tritonops.errors import TritonOpsError, UsageError
from tritonops.names import check_model_name
from tritonops.paths import escaped, escaping_symlinks, link_problem, shown
from tritonops.pbtxt import ModelConfig, parse_config_text, read_config, read_config_text
from tritonops.platforms import DEFAULT_FILE, PLATFORM_OF_BACKEND, VALID_PAIRS, config_backend
from tritonops.repository import MAX_VERSION, oversized_version_dirs, stale_stages, version_dirs
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
    if cfg.HasField("sequence_batching"):
        _check_sequence_batching(c, cfg)
    for i, g in enumerate(cfg.instance_group):
        kind = g.kind
        negative = [gpu for gpu in g.gpus if gpu < 0]
        if negative:
            c.add(f"instance_group[{i}].gpus", f"GPU id {negative[0]} is negative",
                  "list GPU ids from 0 (as nvidia-smi numbers them), or remove gpus")
        elif kind in (2, 3) and g.gpus:  # KIND_CPU=2, KIND_MODEL=3
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


_CORRID_TYPES = ("TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING")
_BOOL_FORMS = (("int32_false_true", "TYPE_INT32"), ("fp32_false_true", "TYPE_FP32"),
               ("bool_false_true", "TYPE_BOOL"))


def _control_kind(ctl: Any) -> str:
    return str(ctl.DESCRIPTOR.fields_by_name["kind"].enum_type.values_by_number[ctl.kind].name)


def sequence_controls(cfg: ModelConfig) -> dict[str, tuple[str, str]]:
    """{control kind: (tensor name, data type)} as the sequence batcher creates the control
    tensors: a START/END/READY control is typed by its value form, CORRID by its data_type."""
    out: dict[str, tuple[str, str]] = {}
    for ci in cfg.sequence_batching.control_input:
        for ctl in ci.control:
            kind = _control_kind(ctl)
            if kind == "CONTROL_SEQUENCE_CORRID":
                dtype = mc_type_name(ctl.data_type)
            else:
                dtype = next((t for form, t in _BOOL_FORMS if len(getattr(ctl, form))), "TYPE_INVALID")
            out.setdefault(kind, (ci.name, dtype))
    return out


def _check_sequence_batching(c: _Collector, cfg: ModelConfig) -> None:
    """Triton's sequence-batching rules (model_config_utils.cc, GetBooleanSequenceControlProperties
    and friends) plus the backends' rule that control and state tensors are not declared as I/O."""
    sb = cfg.sequence_batching
    seen_names: set[str] = set()
    seen_kinds: dict[str, str] = {}
    inputs = {t.name for t in cfg.input}
    for i, ci in enumerate(sb.control_input):
        where = f"sequence_batching.control_input[{i}]"
        if not ci.name:
            c.add(f"{where}.name", "the control tensor has no name", "name it as the model's input, e.g. \"START\"")
        elif ci.name in seen_names:
            c.add(f"{where}.name", f"control tensor '{ci.name}' is listed twice",
                  "give each control tensor one control_input entry")
        seen_names.add(ci.name)
        if ci.name in inputs:
            c.add(f"{where}.name", f"'{ci.name}' is a control tensor and also declared as an input",
                  f"remove '{ci.name}' from input: the sequence batcher supplies control tensors")
        if not ci.control:
            c.add(f"{where}.control", f"control tensor '{ci.name}' has no control",
                  "add control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }] or similar")
        for j, ctl in enumerate(ci.control):
            kind = _control_kind(ctl)
            here = f"{where}.control[{j}]"
            if kind in seen_kinds:
                c.add(f"{here}.kind", f"{kind} is given more than once ('{seen_kinds[kind]}' and '{ci.name}')",
                      f"keep one {kind} control")
            seen_kinds.setdefault(kind, ci.name)
            forms = [form for form, _ in _BOOL_FORMS if len(getattr(ctl, form))]
            if kind == "CONTROL_SEQUENCE_CORRID":
                if forms:
                    c.add(f"{here}.{forms[0]}", f"{kind} takes data_type, not {forms[0]}",
                          f"remove {forms[0]} and set data_type (e.g. TYPE_UINT64)")
                elif mc_type_name(ctl.data_type) not in _CORRID_TYPES:
                    c.add(f"{here}.data_type",
                          f"{kind} has data_type {mc_type_name(ctl.data_type)}; it must be one of "
                          f"{', '.join(_CORRID_TYPES)}", "set data_type: TYPE_UINT64 (or INT64, UINT32, INT32, STRING)")
                continue
            if not forms:
                c.add(here, f"{kind} has no value form",
                      "give exactly one of int32_false_true, fp32_false_true or bool_false_true, e.g. "
                      "int32_false_true: [0, 1]")
            elif len(forms) > 1:
                c.add(f"{here}.{forms[1]}", f"{kind} gives both {forms[0]} and {forms[1]}", "keep only one of them")
            elif len(getattr(ctl, forms[0])) != 2:
                c.add(f"{here}.{forms[0]}", f"{forms[0]} must have exactly 2 entries (false, true), "
                      f"it has {len(getattr(ctl, forms[0]))}", f"write {forms[0]}: [false value, true value]")
    for i, st in enumerate(sb.state):
        where = f"sequence_batching.state[{i}]"
        for fld in ("input_name", "output_name"):
            if not getattr(st, fld):
                c.add(f"{where}.{fld}", f"the state has no {fld}", f"set {fld} to the model's state tensor")
        if st.input_name in inputs:
            c.add(f"{where}.input_name", f"'{st.input_name}' is a state input and also declared as an input",
                  f"remove '{st.input_name}' from input: the backend feeds state tensors")
        if st.input_name in seen_names:
            c.add(f"{where}.input_name", f"'{st.input_name}' is both a control tensor and a state input",
                  "give the state its own tensor")
        if st.data_type == 0:
            c.add(f"{where}.data_type", "the state's data_type is missing (TYPE_INVALID)",
                  "set data_type, e.g. TYPE_FP32")
        if not st.dims or any(d == 0 or d < -1 for d in st.dims):
            c.add(f"{where}.dims", f"state dims {list(st.dims)} are invalid",
                  "list the state's dimensions (without the batch dimension), each >= 1 or -1")
    if sb.HasField("oldest"):
        for p in sb.oldest.preferred_batch_size:
            if p < 1 or p > cfg.max_batch_size:
                c.add("sequence_batching.oldest.preferred_batch_size",
                      f"preferred batch size {p} is outside 1..max_batch_size ({cfg.max_batch_size})",
                      "use sizes between 1 and max_batch_size")
    if sb.HasField("direct") and not 0.0 <= sb.direct.minimum_slot_utilization <= 1.0:
        c.add("sequence_batching.direct.minimum_slot_utilization",
              f"minimum_slot_utilization {sb.direct.minimum_slot_utilization} is outside 0..1",
              "use a fraction between 0 and 1")


LINK_FIX = "copy the file into the repository instead of linking to it (nothing follows links out of it)"


def check_model(model_dir: Path) -> list[Finding]:
    name = escaped(model_dir.name)  # printed in one line, whatever the directory is called
    config_path = model_dir / "config.pbtxt"
    rel = f"{name}/config.pbtxt"
    c = _Collector(name, rel)
    try:
        check_model_name(model_dir.name)
    except UsageError as e:
        c.add("name", f"the model directory's name: {e.message}", "rename the model directory")
    links = escaping_symlinks(model_dir, model_dir.parent)
    for link in links:
        # Named, never followed: the target's contents must not reach a message.
        c.add("(files)", f"{shown(link.relative_to(model_dir.parent).as_posix())} "
              f"{link_problem(link, model_dir.parent)}", LINK_FIX)
    if links:
        return c.findings
    if not os.path.lexists(config_path):
        onnx_versions = [v for v in version_dirs(model_dir) if (model_dir / str(v) / "model.onnx").exists()]
        if onnx_versions and not c.findings:
            return []  # Triton's ONNX Runtime auto-complete fills the config in
        c.add("config.pbtxt", "config.pbtxt is missing", f"write one, e.g. with: tritonops build MODEL --name {name}")
        return c.findings
    try:
        text = read_config_text(config_path)
    except UsageError as e:  # not a regular file, too large, not UTF-8: not a syntax problem
        c.add("(file)", e.message, e.hint or "write config.pbtxt as a regular UTF-8 text file")
        return c.findings
    try:
        cfg = parse_config_text(text, str(config_path))
    except UsageError as e:
        c.add("(syntax)", e.message.split(": ", 1)[-1], "fix the syntax; field names are those of model_config.proto")
        return c.findings
    for big in oversized_version_dirs(model_dir):
        c.add("(versions)", f"version directory {name}/{big} is beyond the 64-bit range Triton reads versions in "
              "(the server aborts on it)", f"rename it to a version from 1 to {MAX_VERSION}")
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
    repo = model_dir.parent
    steps = list(cfg.ensemble_scheduling.step)
    cycle = _ensemble_cycle(model_dir.name, repo)
    if cycle:
        i = next(k for k, st in enumerate(steps) if st.model_name == cycle[1])
        what = "the ensemble calls itself" if len(cycle) == 2 else "the ensemble calls itself through other ensembles"
        c.add(f"ensemble_scheduling.step[{i}].model_name",
              f"circular dependency between ensembles: {' -> '.join(cycle)} ({what})",
              "point the step at a composing model; an ensemble cannot call itself, directly or through "
              "other ensembles")
    members: dict[str, ModelConfig] = {}
    for i, step in enumerate(cfg.ensemble_scheduling.step):
        try:
            check_model_name(step.model_name)
        except UsageError as e:
            c.add(f"ensemble_scheduling.step[{i}].model_name", f"step {e.message}",
                  "name a model directory of this repository")
            continue
        member = model_dir.parent / step.model_name
        if os.path.lexists(member) and escaping_symlinks(member, model_dir.parent):
            continue  # reported by that model's own check; never read through the link
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
    for i, step in enumerate(steps):
        if step.model_version != -1 and step.model_name in members:
            member_dir = repo / step.model_name
            served = _policy_versions(members[step.model_name], version_dirs(member_dir))
            if step.model_version not in served:
                c.add(f"ensemble_scheduling.step[{i}].model_version",
                      f"step model '{step.model_name}' does not serve version {step.model_version} "
                      f"(its version policy and version directories give: {served or 'none'})",
                      f"use model_version: -1 (the latest){f' or one of {served}' if served else ''}")
    for p in wiring_problems(graph_from_configs(cfg, members)):
        fld = f"ensemble_scheduling.step[{p.index}]" if p.index is not None else "ensemble_scheduling"
        c.add(fld, p.message, p.fix)
    _check_decoupled_branches(c, cfg, {n: _is_decoupled(n, repo, set()) for n in members})
    return c.findings


def _read_quietly(repo: Path, name: str) -> ModelConfig | None:
    """The config of model ``name`` of ``repo``, or None: a step's model_name is text from a config,
    so it must be a model name (not a path out of the repository) before it names a file."""
    try:
        check_model_name(name)
        path = repo / name / "config.pbtxt"
        return read_config(path) if path.is_file() and not escaping_symlinks(repo / name, repo) else None
    except UsageError:
        return None  # reported by that model's own check


def _ensemble_cycle(start: str, repo: Path) -> list[str] | None:
    """The shortest chain of ensemble steps from ``start`` back to itself, as Triton's dependency
    graph finds it ("circular dependency between ensembles"), or None."""
    def callees(name: str) -> list[str]:
        cfg = _read_quietly(repo, name)
        if cfg is None or cfg.platform != "ensemble":
            return []
        return list(dict.fromkeys(st.model_name for st in cfg.ensemble_scheduling.step))

    paths = deque([[start]])
    seen = {start}
    while paths:
        path = paths.popleft()
        for nxt in callees(path[-1]):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                paths.append([*path, nxt])
    return None


def _is_decoupled(name: str, repo: Path, seen: set[str]) -> bool:
    """Decoupled as an ensemble step: set in the model's config, or (Triton marks an ensemble so)
    an ensemble with a decoupled step."""
    cfg = _read_quietly(repo, name)
    if cfg is None or name in seen:
        return False
    if cfg.model_transaction_policy.decoupled:
        return True
    seen.add(name)
    return cfg.platform == "ensemble" and any(
        _is_decoupled(st.model_name, repo, seen) for st in cfg.ensemble_scheduling.step)


def _check_decoupled_branches(c: _Collector, cfg: ModelConfig, decoupled: dict[str, bool]) -> None:
    """Triton's rule (ensemble_utils.cc): every step, and the ensemble's outputs, take their
    tensors from one response stream. A decoupled step starts a new stream (any number of
    responses per request), so nothing may combine its outputs with tensors of another stream."""
    streams = {t.name: 0 for t in cfg.input}  # tensor -> stream label; 0: the ensemble's request
    steps = list(cfg.ensemble_scheduling.step)
    pending = list(range(len(steps)))
    label = 0
    while pending:
        ready = [i for i in pending if all(t in streams for t in steps[i].input_map.values())]
        if not ready:
            return  # unconnected steps: reported by the wiring rules
        for i in ready:
            pending.remove(i)
            step = steps[i]
            sources = sorted({streams[t] for t in step.input_map.values()})
            if len(sources) > 1:
                c.add(f"ensemble_scheduling.step[{i}].input_map",
                      f"step model '{step.model_name}' receives inputs originated from different decoupled "
                      "models (a decoupled model may send any number of responses, so its outputs cannot be "
                      "paired with other tensors)",
                      "feed this step from one decoupled branch only, or make the models non-decoupled")
                return
            own = sources[0] if sources else 0
            if decoupled.get(step.model_name):
                label += 1
                own = label
            for t in step.output_map.values():
                streams[t] = own
    outputs = sorted({streams[t.name] for t in cfg.output if t.name in streams})
    if len(outputs) > 1:
        c.add("output", "the ensemble's outputs originate from different decoupled models, so no single "
              "response can carry them all", "take every output from the same decoupled branch")


def _policy_versions(cfg: ModelConfig, versions: list[int]) -> list[int]:
    which = cfg.version_policy.WhichOneof("policy_choice") if cfg.HasField("version_policy") else None
    if which == "all":
        return versions
    if which == "specific":
        return [v for v in versions if v in set(cfg.version_policy.specific.versions)]
    n = cfg.version_policy.latest.num_versions if which == "latest" else 1
    return versions[-max(n, 1):]


def _check_onnx_io(c: _Collector, cfg: ModelConfig, onnx_path: Path, label: str) -> None:
    try:
        info = inspect_onnx(onnx_path)
    except TritonOpsError as e:
        c.add("(model file)", f"{label}: {e.message}", e.hint or "export the model again")
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
            # Control and state tensors are model inputs too; the config names them under sequence_batching.
            named = {t.name for t in declared} | {n for n, _ in sequence_controls(cfg).values()} | \
                {st.input_name for st in cfg.sequence_batching.state}
            missing = [n for n in by_name if n not in named]
            if declared and missing:
                c.add("input", f"the ONNX model's input '{missing[0]}' is not in the config",
                      "declare every model input in the config (control and state tensors under "
                      "sequence_batching)")
    if cfg.HasField("sequence_batching"):
        _check_onnx_sequence(c, cfg, info)


def _check_onnx_sequence(c: _Collector, cfg: ModelConfig, info: Any) -> None:
    """Control and state tensors against the ONNX file, as Triton's ORT backend checks them at load."""
    batched = cfg.max_batch_size > 0
    inputs = {t.name: t for t in info.inputs}
    outputs = {t.name: t for t in info.outputs}
    for kind, (name, dtype) in sequence_controls(cfg).items():
        fld = f"sequence_batching.control_input '{name}'"
        m = inputs.get(name)
        if m is None:
            c.add(fld, f"{kind} tensor '{name}' is not an input of the ONNX model (it has: {', '.join(inputs)})",
                  "name the control after the model's input, or remove it")
            continue
        dims = list(m.shape[1:] if batched else m.shape) if m.shape else [1]
        if len(dims) != 1 or (isinstance(dims[0], int) and dims[0] > 0 and dims[0] != 1):
            c.add(fld, f"the ONNX input '{name}' has dims {_suggest(m.shape, batched)} but a control tensor "
                  "has dims [1]", "give the model's control input the shape [batch, 1] ([1] without batching)")
        elif m.dtype.config != dtype:
            c.add(fld, f"the control gives {dtype} but the ONNX input '{name}' is {m.dtype.config}",
                  f"use the {m.dtype.config} value form for this control, or change the model's input type")
    for i, st in enumerate(cfg.sequence_batching.state):
        for fld, tensor, tensors, what in (("input_name", st.input_name, inputs, "input"),
                                           ("output_name", st.output_name, outputs, "output")):
            where = f"sequence_batching.state[{i}].{fld}"
            m = tensors.get(tensor)
            if m is None:
                c.add(where, f"state {what} '{tensor}' is not an {what} of the ONNX model "
                      f"(it has: {', '.join(tensors)})", f"set {fld} to the model's state {what}")
                continue
            if st.data_type and mc_type_name(st.data_type) != m.dtype.config:
                c.add(f"sequence_batching.state[{i}].data_type",
                      f"state data_type is {mc_type_name(st.data_type)} but the ONNX {what} '{tensor}' "
                      f"is {m.dtype.config}", f"set data_type: {m.dtype.config}")
                continue
            model_dims = list(m.shape[1:] if batched else m.shape)
            if m.shape and (len(model_dims) != len(st.dims) or any(
                    isinstance(md, int) and md > 0 and sd not in (-1, md)
                    for sd, md in zip(st.dims, model_dims, strict=False))):
                c.add(f"sequence_batching.state[{i}].dims",
                      f"state dims {list(st.dims)} do not fit the ONNX {what} '{tensor}' of shape "
                      f"{_suggest(m.shape, False)}", f"set dims to {_suggest(m.shape, batched)}")


def _suggest(shape: tuple[Any, ...], batched: bool) -> str:
    dims = shape[1:] if batched else shape
    return "[" + ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in dims) + "]"


def mc_type_name(value: int) -> str:
    return mc.DataType.Name(value)


def check_repository(repository: Path) -> CheckReport:
    if not repository.exists():
        raise UsageError(f"repository '{repository}' does not exist", "give the directory that holds the models")
    if not repository.is_dir():
        raise UsageError(f"repository '{repository}' is not a directory", "give the directory that holds the models")
    entries = sorted(p for p in repository.iterdir() if p.is_dir())
    models = [p for p in entries if not p.name.startswith(".")]
    hidden = [p for p in entries if p.name.startswith(".")]
    findings: list[Finding] = []
    for h in hidden:  # Triton lists these as models too (checked with the real server)
        findings.append(Finding(escaped(h.name), escaped(h.name), "(directory)",
                                f"{shown(h.name)} is a hidden directory: Triton loads every directory of the "
                                "repository as a model, hidden ones too", "move it out of the repository"))
    stale: dict[str, list[Path]] = {}
    for stage in stale_stages(repository, beside=False):
        stale.setdefault(stage.parent.name, []).append(stage)
    for m in models:
        for stage in stale.get(m.name, []):
            findings.append(Finding(escaped(m.name), f"{escaped(m.name)}/{escaped(stage.name)}", "(staging)",
                                    "left behind by a build or roll-out that was killed",
                                    "build again (a build removes it) or delete it"))
        findings.extend(check_model(m))
    return CheckReport(repository, tuple(escaped(p.name) for p in hidden + models), tuple(findings))
