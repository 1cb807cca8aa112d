"""Ensembles from a spec: ``ensembles/<name>/ensemble.yaml`` + plain numpy functions in ``steps.py``.

The typed spec and its loading live in ``tritonops.ensemblefile``. A build (``build_ensemble``)
checks the wiring by name, converts and verifies every model step with ``tritonops.build``
(``build_staged``, as ``tritonops build`` does), generates a Python-backend model for every
python step, infers the python steps' signatures by running them on example inputs, checks the
full wiring (types, shapes, batch sizes), and only then moves every staged model into the
repository. The wiring rules live in ``tritonops.wiring`` (``check`` runs them on hand-written
repositories too); step functions are imported and called by ``tritonops.pystep``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from tritonops.build import BuildResult, RenderedConfig, build_staged, write_config
from tritonops.convert.examples import make_inputs
from tritonops.dtypes import from_numpy
from tritonops.ensemblefile import EnsembleSpec, ModelStep, PythonStep, load_ensemble_file
from tritonops.errors import ModelError, UsageError
from tritonops.progress import Progress, reporter
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

TEMPLATES = Path(__file__).parent / "templates"
# The dynamic-batching code shared with the fallback backends; copied beside each generated step's
# model.py, which imports it from its own directory (the stub has no tritonops installed).
BATCHING_MODULE = Path(__file__).parent / "backends" / "_batching.py"

SCHEMA = "tritonops.ensemble/1"


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
        module = load_module(spec.examples.path, "examples")
        fn = step_function(module, spec.examples.function, f"{spec.file}: examples")
        variants = []
        for v in (0, 1):
            try:
                got = fn(v)
            except Exception as e:
                raise ModelError(f"examples function '{spec.examples.function}' raised {type(e).__name__}: {e}",
                                 "it is called as f(variant) with variant 0 and 1") from None
            variants.append({k: as_array(x) for k, x in dict(got).items()})
        missing = [t.name for t in spec.inputs if t.name not in variants[0] or t.name not in variants[1]]
        if missing:
            raise UsageError(f"{spec.file}: examples function '{spec.examples.function}' gives no '{missing[0]}'",
                             "return every ensemble input")
        return variants
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


def build_ensemble(spec: EnsembleSpec, progress: Progress | None = None, *,
                   copy: Callable[[Path, Path], object] = shutil.copy2, seed: int = 0) -> EnsembleResult:
    """Build every composing model and the ensemble; nothing reaches the repository unless all
    of them convert, verify, infer and pass the wiring checks."""
    say = reporter(progress)
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
                r = build_staged(s.options, st, work, progress)
                results[s.model_name] = r
                known[s.model_name] = r.spec
                notes.extend(r.notes)
                _raise_first(spec, wiring_problems(_graph(spec, known)))
                run = _model_runner(r, st)  # the built model, in-process: its outputs feed the next steps
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
                rendered = _write_python_model(mspec, s, st, fn)
                results[s.model_name] = BuildResult(
                    name=s.model_name, repository=spec.repository, model_dir=spec.repository.absolute() / s.model_name,
                    version=st.version, config_path=spec.repository.absolute() / s.model_name / "config.pbtxt",
                    config_text=rendered.text, config=rendered.config, spec=mspec,
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
        rendered = write_config(ens_stage, ens)
        say("writing the repository")
        ens_result = BuildResult(
            name=spec.name, repository=spec.repository, model_dir=spec.repository.absolute() / spec.name,
            version=ens_stage.version, config_path=spec.repository.absolute() / spec.name / "config.pbtxt",
            config_text=rendered.text, config=rendered.config, spec=ens,
            source_kind="ensemble",  # type: ignore[arg-type]
        )
    return EnsembleResult(spec.name, spec.repository,
                          (*(results[s.model_name] for s in spec.steps), ens_result), tuple(notes))


def _save_examples(model_root: Path, feed: Mapping[str, np.ndarray]) -> None:
    """Real example inputs beside config.pbtxt, for ``validate`` (random bytes are no image or text).
    No pickles: byte strings are stored as a fixed-width bytes array."""
    arrays = {k: (np.array([bytes(b) for b in v.reshape(-1)], dtype=np.bytes_).reshape(v.shape)
                  if v.dtype == np.object_ else v) for k, v in feed.items()}
    np.savez(model_root / EXAMPLES_FILE, **arrays)


def _model_runner(r: BuildResult, st: StagedModel) -> Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]:
    artifact = st.version_dir / r.spec.model_filename
    factory = REFERENCE_FACTORIES.get(r.spec.platform)
    if factory is None:
        raise UsageError(f"model step '{r.name}': a {r.spec.platform} model cannot run on this machine to "
                         "infer the next steps' inputs", "use an ONNX or TorchScript model step")
    return factory(ModelUnderTest(r.name, str(st.version), r.config, st.model_root, artifact))


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


def _write_python_model(ms: ModelSpec, s: PythonStep, st: StagedModel, fn: Callable[..., Any]) -> RenderedConfig:
    """The generated model.py (from templates/python_step.py.j2), the batching module it imports,
    and config.pbtxt."""
    env = jinja2.Environment(autoescape=False,  # noqa: S701 - Python source, not HTML
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["pyrepr"] = repr
    source = env.from_string((TEMPLATES / "python_step.py.j2").read_text()).render(
        step=s.name, model=s.model_name, function=s.function, ragged=s.ragged, wants_resources=wants_resources(fn))
    compile(source, "model.py", "exec")  # a template bug must fail the build, not the server
    write_text_file(st.version_dir / "model.py", source)
    st.add_file(BATCHING_MODULE, BATCHING_MODULE.name)
    return write_config(st, ms)


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
