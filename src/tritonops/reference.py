"""In-process reference runners: run a served model's own artifact locally, with Triton's shapes.

One owner for "run this model the way the server would, without the server": onnxruntime on a
``model.onnx``, torch.jit on a ``model.pt``, a generated python step's function, and an ensemble's
steps wired by its ``ensemble_scheduling``. ``validate`` compares served outputs with them; ensemble
builds use them to feed python steps; deploy's canary compares against them.

Inputs and outputs use Triton's shapes (the batch dimension included when the model batches,
``dims`` rather than ``reshape``) and numpy types (BYTES as ``np.object_`` arrays of ``bytes``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from tritonops.convert.torch_export import flatten_outputs, import_torch, load_torchscript, to_numpy, to_torch
from tritonops.errors import ConversionError, MissingDependencyError, ModelError, UsageError
from tritonops.pbtxt import read_config
from tritonops.platforms import backend_of, default_file
from tritonops.pystep import as_array, call_step, load_module, step_function, wants_resources
from tritonops.repository import version_dirs
from tritonops.wiring import graph_from_configs, topological_order

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]  # a model run on named numpy arrays


def error_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


# ---------------------------------------------------------------- runners of model files and modules


def runner_onnxruntime(path: Path, outputs: Sequence[str] | None = None, threads: int | None = None) -> Runner:
    """Run an ONNX model on onnxruntime's CPU provider. ``path`` is the .onnx file, or Triton's
    ``model.onnx/`` directory holding ``model.onnx`` and its external data; ``outputs`` selects the
    outputs to compute (all by default); ``threads`` sets intra-op threads (onnxruntime's default
    otherwise). BYTES go in and come out as ``np.object_`` arrays of ``bytes``."""
    import onnxruntime as ort  # heavy: only when a model runs

    path = Path(path)
    if path.is_dir():
        path = path / "model.onnx"
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: a failed run raises; its native ERROR line would reach the terminal
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"onnxruntime cannot load '{path}': {error_line(e)}",
                         "check the model with: tritonops inspect MODEL") from e
    input_names = [i.name for i in session.get_inputs()]
    output_names = list(outputs) if outputs is not None else [o.name for o in session.get_outputs()]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ort_feed = {}
        for name in input_names:
            if name not in feed:
                continue  # optional input left out; onnxruntime names any required one
            arr = feed[name]
            if arr.dtype == np.object_:  # onnxruntime takes str for ONNX strings
                arr = np.vectorize(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v,
                                   otypes=[object])(arr) if arr.size else arr
            ort_feed[name] = arr
        results = session.run(output_names, ort_feed)
        return {n: _from_ort(r) for n, r in zip(output_names, results, strict=True)}

    return run


def _from_ort(arr: Any) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind in ("O", "U"):
        flat = [v.encode("utf-8") if isinstance(v, str) else v for v in arr.ravel()]
        out = np.empty(len(flat), dtype=np.object_)
        out[:] = flat
        return out.reshape(arr.shape)
    return arr


def _name_outputs(result: Any, output_names: Sequence[str]) -> dict[str, np.ndarray]:
    items = flatten_outputs(result)
    keys = [k for k, _ in items]
    if all(k is not None for k in keys) and set(output_names) <= set(keys):
        by_key = dict(items)
        return {n: to_numpy(by_key[n]) for n in output_names}
    if len(items) != len(output_names):
        raise ConversionError(
            f"the model returned {len(items)} output(s) but {len(output_names)} output name(s) were given "
            f"({', '.join(output_names)})",
            "give one --output per tensor the model returns",
        )
    return {n: to_numpy(v) for n, (_, v) in zip(output_names, items, strict=True)}


def runner_torch(module: Any, input_names: list[str], output_names: list[str]) -> Runner:
    """Run an in-memory PyTorch module (positional inputs in ``input_names`` order) under
    ``torch.inference_mode``; outputs are named in order, or by key for dict outputs."""
    torch = import_torch()
    names = list(input_names)
    outs = list(output_names)

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [to_torch(feed[n]) for n in names]
        with torch.inference_mode():
            result = module(*args)
        return _name_outputs(result, outs)

    return run


def runner_torchscript(path: Path, input_names: list[str]) -> Runner:
    """Run a TorchScript file as Triton's libtorch backend would: positional inputs in
    ``input_names`` order, outputs named ``OUTPUT__0``, ``OUTPUT__1``, ... in order."""
    torch = import_torch("running a TorchScript model")
    module = load_torchscript(path)
    names = list(input_names)

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [to_torch(feed[n]) for n in names]
        with torch.inference_mode():
            result = module(*args)
        items = flatten_outputs(result)
        return {f"OUTPUT__{i}": to_numpy(v) for i, (_, v) in enumerate(items)}

    return run


# ---------------------------------------------------------------- references of served models


@dataclass(frozen=True)
class ModelUnderTest:
    """What a reference factory needs: the served config and, when known, the artifact on disk."""

    name: str
    version: str
    config: mc.ModelConfig
    model_dir: Path | None  # <repository>/<name>, when a repository was given
    artifact: Path | None  # the model file the server loaded (or --reference)


@runtime_checkable
class ReferenceRunner(Protocol):
    """Runs a model locally. Inputs and outputs use Triton's shapes (batch dimension included when
    the model batches, ``dims`` rather than ``reshape``) and numpy types (BYTES as ``np.object_``
    arrays of ``bytes``); it returns every output named in the config."""

    description: str

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]: ...


ReferenceFactory = Callable[[ModelUnderTest], ReferenceRunner]


class OnnxRuntimeReference:
    """onnxruntime in-process on the same model.onnx (CPU provider, one thread), the config's outputs."""

    def __init__(self, model: ModelUnderTest) -> None:
        import onnxruntime as ort  # heavy: only when a model runs

        assert model.artifact is not None
        path = model.artifact / "model.onnx" if model.artifact.is_dir() else model.artifact
        self._config = model.config
        self._run = runner_onnxruntime(path, [o.name for o in model.config.output], threads=1)
        self.description = f"onnxruntime {ort.__version__} on {path}"

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cfg = self._config
        feed = {t.name: _to_model_shape(inputs[t.name], t, cfg.max_batch_size) for t in cfg.input if t.name in inputs}
        results = self._run(feed)
        return {o.name: _to_triton_shape(results[o.name], o, cfg.max_batch_size) for o in cfg.output}


class TorchScriptReference:
    """torch.jit in-process on the same model.pt; inputs in config order, outputs in config order."""

    def __init__(self, model: ModelUnderTest) -> None:
        try:
            import torch
        except ImportError:
            raise MissingDependencyError("torch", "torch", "the reference run of a TorchScript model") from None
        assert model.artifact is not None
        self._torch = torch
        self._module = torch.jit.load(str(model.artifact), map_location="cpu").eval()
        self._config = model.config
        self.description = f"torch.jit {torch.__version__} on {model.artifact}"

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        cfg = self._config
        args = []
        for t in cfg.input:
            a = _to_model_shape(inputs[t.name], t, cfg.max_batch_size)
            if a.dtype == np.object_:
                args.append([b.decode("utf-8") for b in a.reshape(-1)])
            else:
                args.append(torch.from_numpy(np.ascontiguousarray(a)))
        with torch.inference_mode():
            result = self._module(*args)
        if isinstance(result, dict):
            values = [result[o.name] for o in cfg.output]
        elif isinstance(result, list | tuple):
            values = list(result)
        else:
            values = [result]
        out = {}
        for o, v in zip(cfg.output, values, strict=False):
            arr = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            out[o.name] = _to_triton_shape(arr, o, cfg.max_batch_size)
        return out



def _latest_version(model_dir: Path, wanted: int) -> str | None:
    versions = version_dirs(model_dir)
    if wanted > 0:
        return str(wanted) if wanted in versions else None
    return str(versions[-1]) if versions else None


class PythonStepReference:
    """A generated python step run in-process: the same steps.py function on the same resources."""

    def __init__(self, model: ModelUnderTest) -> None:
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

    def __init__(self, model: ModelUnderTest) -> None:
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
            factory = reference_factory(mcfg)
            if factory is None:
                raise UsageError(f"no reference runner for step model '{s.model_name}' "
                                 f"({mcfg.platform if mcfg.platform in REFERENCE_FACTORIES else mcfg.backend})",
                                 "only ONNX, TorchScript, python-step and ensemble members run locally")
            fname = default_file(mcfg)
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


# Keyed by platform (or backend, for configs that name only a backend). Ensembles compose the
# steps' runners; python models run in-process when tritonops generated them (ensemble steps).
REFERENCE_FACTORIES: dict[str, ReferenceFactory] = {
    "onnxruntime_onnx": OnnxRuntimeReference,
    "onnxruntime": OnnxRuntimeReference,
    "pytorch_libtorch": TorchScriptReference,
    "pytorch": TorchScriptReference,
    "ensemble": EnsembleReference,
    "python": PythonStepReference,
}

def _to_model_shape(a: np.ndarray, t: Any, max_batch_size: int) -> np.ndarray:
    if not t.HasField("reshape"):
        return a
    lead = (a.shape[0],) if max_batch_size > 0 else ()
    return a.reshape(lead + tuple(t.reshape.shape))


def _to_triton_shape(a: np.ndarray, t: Any, max_batch_size: int) -> np.ndarray:
    if not t.HasField("reshape"):
        return a
    lead = (a.shape[0],) if max_batch_size > 0 else ()
    dims = tuple(a.size // max(1, math.prod(lead) * math.prod(d for d in t.dims if d > 0)) if d < 0 else d
                 for d in t.dims)
    return a.reshape(lead + dims)


def reference_factory(config: mc.ModelConfig) -> ReferenceFactory | None:
    """The reference factory for a config's platform (or backend), or None when there is none."""
    return REFERENCE_FACTORIES.get(config.platform) or REFERENCE_FACTORIES.get(
        backend_of(config.platform, config.backend))


def artifact_path(model_dir: Path, version: str, config: mc.ModelConfig) -> Path | None:
    """The file (or, for an ensemble, the version directory) a server loads for ``version``; None when absent."""
    if config.platform == "ensemble":  # the steps' artifacts: the reference reads them from the repository
        path = model_dir / version
        return path if path.is_dir() else None
    filename = default_file(config)
    if not filename:
        return None
    path = model_dir / version / filename
    return path if path.exists() else None


# ---------------------------------------------------------------- stateful (sequence-batched) models


@runtime_checkable
class SequenceReference(Protocol):
    """Runs whole sequences of a stateful model locally, step by step, as the sequence batcher and
    the backend would: each step's inputs (Triton's shapes, batch 1 when the model batches) in,
    each step's config outputs out."""

    description: str

    def sequence(self, steps: Sequence[Mapping[str, np.ndarray]],
                 sequence_id: int | str) -> list[dict[str, np.ndarray]]: ...


_CONTROL_FORMS = (("int32_false_true", np.int32), ("fp32_false_true", np.float32), ("bool_false_true", np.bool_))


def control_tensors(config: mc.ModelConfig, sequence_id: int | str, start: bool, end: bool) -> dict[str, np.ndarray]:
    """The control tensors the sequence batcher adds to a real request of a sequence: START on its
    first request, END on its last, READY always, CORRID its id; each in the value form the config
    declares (``int32_false_true``, ``fp32_false_true``, ``bool_false_true``, CORRID's ``data_type``),
    shaped ``[1, 1]`` when the model batches and ``[1]`` when it does not."""
    shape = (1, 1) if config.max_batch_size > 0 else (1,)
    kinds = mc.ModelSequenceBatching.Control
    flag = {kinds.CONTROL_SEQUENCE_START: start, kinds.CONTROL_SEQUENCE_END: end, kinds.CONTROL_SEQUENCE_READY: True}
    tensors: dict[str, np.ndarray] = {}
    for ci in config.sequence_batching.control_input:
        for c in ci.control:
            if c.kind == kinds.CONTROL_SEQUENCE_CORRID:
                if c.data_type == mc.TYPE_STRING:
                    value = np.empty(shape, dtype=np.object_)
                    value[...] = str(sequence_id).encode()
                else:
                    value = np.full(shape, int(sequence_id), dtype=_numpy_of(c.data_type))
                tensors[ci.name] = value
                continue
            for form, dtype in _CONTROL_FORMS:
                values = list(getattr(c, form))
                if len(values) == 2:
                    tensors[ci.name] = np.full(shape, values[1] if flag[c.kind] else values[0], dtype=dtype)
                    break
    return tensors


def _numpy_of(data_type: int) -> Any:
    return {mc.TYPE_UINT64: np.uint64, mc.TYPE_INT64: np.int64, mc.TYPE_UINT32: np.uint32,
            mc.TYPE_INT32: np.int32}.get(data_type, np.int64)


_STATE_TYPES = {mc.TYPE_BOOL: np.bool_, mc.TYPE_UINT8: np.uint8, mc.TYPE_UINT16: np.uint16, mc.TYPE_UINT32: np.uint32,
                mc.TYPE_UINT64: np.uint64, mc.TYPE_INT8: np.int8, mc.TYPE_INT16: np.int16, mc.TYPE_INT32: np.int32,
                mc.TYPE_INT64: np.int64, mc.TYPE_FP16: np.float16, mc.TYPE_FP32: np.float32, mc.TYPE_FP64: np.float64}


def initial_states(config: mc.ModelConfig, model_dir: Path | None) -> dict[str, np.ndarray]:
    """Each implicit state's value at a sequence's start, keyed by its ``input_name``: the config's
    ``initial_state`` (``zero_data``, or ``data_file`` under ``<model>/initial_state/``), zeros of
    the state's dims when it declares none; with the batch dimension (1) when the model batches."""
    lead = (1,) if config.max_batch_size > 0 else ()
    states = {}
    for s in config.sequence_batching.state:
        dtype = _STATE_TYPES.get(s.data_type)
        if dtype is None:
            raise UsageError(f"state '{s.input_name}' is {mc.DataType.Name(s.data_type)}, which the local run "
                             "does not carry", "only numeric and BOOL states run in-process")
        init = s.initial_state[0] if s.initial_state else None
        dims = tuple(init.dims if init is not None else s.dims)
        if any(d < 0 for d in dims):
            raise UsageError(f"state '{s.input_name}' has variable dims and no initial_state with fixed dims",
                             "give the state an initial_state with fixed dims")
        if init is not None and init.HasField("data_file"):
            if model_dir is None:
                raise UsageError(f"state '{s.input_name}' starts from data_file '{init.data_file}'",
                                 "pass the repository so the local run can read it")
            path = model_dir / "initial_state" / init.data_file
            try:
                value = np.frombuffer(path.read_bytes(), dtype=dtype).reshape(dims)
            except (OSError, ValueError) as e:
                raise UsageError(f"cannot read initial state '{path}': {error_line(e)}",
                                 f"it must hold {math.prod(dims)} raw {np.dtype(dtype).name} values") from None
        else:
            value = np.zeros(dims, dtype=dtype)
        states[s.input_name] = value.reshape(lead + dims)
    return states


class OnnxSequenceReference:
    """A stateful ONNX model run in-process with onnxruntime, step by step: every step gets the
    control tensors its request would get from the sequence batcher and the implicit state (the
    initial state first, then the previous step's ``output_name`` tensor), so hand-written
    production configs run exactly as they are served."""

    def __init__(self, model: ModelUnderTest) -> None:
        import onnxruntime as ort  # heavy: only when a model runs

        assert model.artifact is not None
        cfg = model.config
        path = model.artifact / "model.onnx" if model.artifact.is_dir() else model.artifact
        self._config = cfg
        self._states = [(s.input_name, s.output_name) for s in cfg.sequence_batching.state]
        self._initial = initial_states(cfg, model.model_dir)
        outputs = [o.name for o in cfg.output] + [out for _, out in self._states]
        self._run = runner_onnxruntime(path, list(dict.fromkeys(outputs)), threads=1)
        self.description = f"onnxruntime {ort.__version__} on {path}, step by step with controls and state"

    def sequence(self, steps: Sequence[Mapping[str, np.ndarray]],
                 sequence_id: int | str) -> list[dict[str, np.ndarray]]:
        cfg = self._config
        state = dict(self._initial)
        results = []
        for k, step in enumerate(steps):
            feed = {t.name: _to_model_shape(step[t.name], t, cfg.max_batch_size) for t in cfg.input if t.name in step}
            feed.update(control_tensors(cfg, sequence_id, start=k == 0, end=k == len(steps) - 1))
            feed.update(state)
            out = self._run(feed)
            state = {name: np.asarray(out[output]) for name, output in self._states}
            results.append({o.name: _to_triton_shape(out[o.name], o, cfg.max_batch_size) for o in cfg.output})
        return results


SEQUENCE_REFERENCE_FACTORIES: dict[str, Callable[[ModelUnderTest], SequenceReference]] = {
    "onnxruntime_onnx": OnnxSequenceReference,
    "onnxruntime": OnnxSequenceReference,
}


def sequence_reference_factory(config: mc.ModelConfig) -> Callable[[ModelUnderTest], SequenceReference] | None:
    """The sequence reference for a stateful model's platform (or backend), or None when there is none."""
    return SEQUENCE_REFERENCE_FACTORIES.get(config.platform) or SEQUENCE_REFERENCE_FACTORIES.get(
        backend_of(config.platform, config.backend))


# ---------------------------------------------------------------- decoupled models


@runtime_checkable
class DecoupledReference(Protocol):
    """Runs a decoupled model locally: the responses (output dicts, possibly none) of one request."""

    description: str

    def responses(self, inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]: ...


class DecoupledStepReference(PythonStepReference):
    """A decoupled tritonops python step run in-process: its steps.py function returns the responses
    of one request, a list (or generator) of output dicts, possibly empty (a dict alone is one response).
    Loaded like any python step; ``responses`` replaces the single-response call."""

    def responses(self, inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        feed = {t.name: inputs[t.name] for t in self._config.input if t.name in inputs}
        try:
            result = self._fn(feed, resources=self._resources) if wants_resources(self._fn) else self._fn(feed)
            items = [result] if isinstance(result, dict) else list(result)
        except Exception as e:
            raise ModelError(f"step function '{self._function}' raised {type(e).__name__}: {e}",
                             "fix the function; it is called with a dict of numpy arrays") from None
        responses = []
        for item in items:
            if not isinstance(item, dict):
                raise ModelError(f"step function '{self._function}' gave a {type(item).__name__} response, not a dict",
                                 "yield (or return a list of) dicts of output name -> numpy array")
            responses.append({k: as_array(v) for k, v in item.items()})
        return responses
