"""PyTorch -> ONNX and TorchScript, with Triton's names and a dynamic batch dimension.

torch is optional: it is imported inside these functions, and a missing torch raises
``MissingDependencyError``. Exporters are noisy; their output is captured and returned in the
result's ``log`` (and the lines worth reading in ``notes``), never printed."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tritonops.convert._quiet import quiet, strip_ansi
from tritonops.convert.examples import make_inputs
from tritonops.convert.verify import import_torch, to_torch
from tritonops.errors import ConversionError, ModelError, UsageError
from tritonops.spec import TensorSpec

Progress = Callable[[str], None]

# Protobuf caps a single .onnx file at 2 GiB; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Size given to variable (-1) dims in the example inputs the exporters trace with. Not 0 or 1:
# torch.export specializes those sizes to constants.
EXAMPLE_DIM = 4
EXAMPLE_BATCH = 2


@dataclass(frozen=True)
class OnnxExport:
    """An exported ONNX model. ``path`` is the ``.onnx`` file, or Triton's ``model.onnx/``
    directory (``model.onnx`` + ``model.onnx.data``) for models too large for one file.
    Usable wherever a path is (``os.fspath``)."""

    path: Path
    exporter: Literal["dynamo", "legacy"]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    opset: int
    external_data: bool
    notes: tuple[str, ...] = ()
    log: str = ""  # everything the exporter printed, logged or warned

    def __fspath__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class TorchScriptExport:
    """A TorchScript file with Triton's libtorch naming: inputs ``INPUT__i`` in the order of the
    input specs, outputs ``OUTPUT__i`` in the order the model returns them."""

    path: Path
    method: Literal["trace", "script"]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    notes: tuple[str, ...] = ()
    log: str = ""

    def __fspath__(self) -> str:
        return str(self.path)


# ---------------------------------------------------------------- loading


def _cause_text(e: BaseException) -> str:
    text = strip_ansi(str(e)).strip()
    line = text.splitlines()[0].strip() if text else ""
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


@contextlib.contextmanager
def _on_sys_path(folder: Path | None) -> Iterator[None]:
    """A factory file may import modules beside it, at import time or when called."""
    if folder is None:
        yield
        return
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _import_factory_module(module_part: str, ref: str) -> tuple[Any, Path | None]:
    hint_form = "write it as package.module:function or path/to/file.py:function"
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        file = Path(module_part)
        if not file.is_file():
            raise UsageError(f"model factory file '{module_part}' does not exist (in '{ref}')",
                             f"check the path; {hint_form}")
        folder = file.resolve().parent
        digest = hashlib.sha1(str(file.resolve()).encode(), usedforsecurity=False).hexdigest()[:8]
        name = f"_tritonops_factory_{file.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot import '{module_part}' for model factory '{ref}'", hint_form)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        try:
            with _on_sys_path(folder):
                spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(name, None)
            raise ConversionError(f"importing model factory '{ref}' raised {_cause_text(e)}",
                                  "fix the error in the factory's file (run with --debug for the traceback)") from e
        return module, folder
    try:
        return importlib.import_module(module_part), None
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing == module_part or module_part.startswith(f"{missing}."):
            raise UsageError(
                f"cannot import module '{module_part}' for model factory '{ref}'",
                f"check the module name and that it is importable (installed, or on PYTHONPATH); {hint_form}",
            ) from e
        raise ConversionError(f"importing model factory '{ref}' raised {_cause_text(e)}",
                              f"install '{missing}', which the factory's module imports") from e
    except Exception as e:
        raise ConversionError(f"importing model factory '{ref}' raised {_cause_text(e)}",
                              "fix the error in the factory's module (run with --debug for the traceback)") from e


def load_factory(ref: str) -> Any:
    """Call a model factory given as ``package.module:function`` or ``path/to/file.py:function``
    and return its ``torch.nn.Module``, in eval mode. The attribute may also be a module class
    (constructed with no arguments) or a module instance."""
    torch = import_torch()
    module_part, sep, attr = ref.rpartition(":")
    if not sep or not module_part or not attr or not attr.isidentifier():
        raise UsageError(f"cannot parse model factory '{ref}'",
                         "write it as package.module:function or path/to/file.py:function")
    module, folder = _import_factory_module(module_part, ref)
    if not hasattr(module, attr):
        callables = sorted(n for n, v in vars(module).items()
                           if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__)
        known = f"; it defines: {', '.join(callables[:10])}" if callables else ""
        raise UsageError(f"model factory '{ref}': '{module_part}' has no attribute '{attr}'",
                         f"name a function that returns a torch.nn.Module{known}")
    factory = getattr(module, attr)
    if isinstance(factory, torch.nn.Module):
        model = factory
    elif not callable(factory):
        raise UsageError(f"model factory '{ref}' is a {type(factory).__name__}, not a function",
                         "name a function that returns a torch.nn.Module")
    else:
        try:
            with _on_sys_path(folder):
                model = factory()
        except Exception as e:
            raise ConversionError(f"model factory '{ref}' raised {_cause_text(e)}",
                                  "fix the factory so it runs without arguments (run with --debug for the traceback)"
                                  ) from e
    if not isinstance(model, torch.nn.Module):
        raise UsageError(
            f"model factory '{ref}' returned {type(model).__name__}, not a torch.nn.Module",
            "return the model itself, e.g. model = Net(); model.load_state_dict(state); return model",
        )
    return model.eval()


def load_torchscript(path: Path) -> Any:
    """Load a TorchScript file on the CPU, in eval mode."""
    torch = import_torch("loading a TorchScript model")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise ModelError(f"'{path}' is not a TorchScript model: {_cause_text(e)}",
                         "save the model with torch.jit.save(torch.jit.trace(model, example), path)") from e
    return module.eval()


# ---------------------------------------------------------------- shared export steps


def _check_specs(inputs: Sequence[TensorSpec]) -> None:
    if not inputs:
        raise UsageError("exporting a PyTorch model needs its inputs",
                         "give NAME:DTYPE:DIMS for each forward() argument, e.g. x:FP32:3,224,224")
    for s in inputs:
        if s.dtype.torch is None:
            raise ConversionError(f"input '{s.name}' is {s.dtype.name}, which PyTorch models cannot take",
                                  "tokenize or encode strings to numbers before the model, e.g. in an ensemble")


def _example_args(inputs: Sequence[TensorSpec], max_batch_size: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(0)
    batch = EXAMPLE_BATCH if max_batch_size > 0 else None
    feed = make_inputs(inputs, batch, rng, dim_default=EXAMPLE_DIM)
    return tuple(to_torch(feed[s.name]) for s in inputs)


def _shapes_text(args: Sequence[Any]) -> str:
    return ", ".join("[" + ",".join(str(d) for d in a.shape) + "]" for a in args)


def _example_hint(max_batch_size: int) -> str:
    batch = " (without the batch dimension)" if max_batch_size > 0 else ""
    return (f"check the input specs: one per forward() argument, in order, with the types and dims{batch} "
            "the model takes")


def _output_layout(result: Any, output_names: Sequence[str] | None) -> tuple[list[str | int], list[str]]:
    """How to turn the model's result into a tuple (``keys``: dict keys, or positions) and the
    names of the tuple's entries. Dict outputs are ordered by the given names when those are the
    dict's keys, else by the dict's order; the names default to the keys, else ``output__i``."""
    torch = import_torch()
    if isinstance(result, dict):
        keys: list[str | int] = [str(k) for k in result]
        values = list(result.values())
        if output_names is not None and set(output_names) == set(keys) and len(output_names) == len(keys):
            keys = list(output_names)
            values = [result[k] for k in keys]
        default_names = [str(k) for k in keys]
    elif isinstance(result, (tuple, list)):
        keys = list(range(len(result)))
        values = list(result)
        default_names = [f"output__{i}" for i in keys]
    else:
        keys = [-1]  # the result itself
        values = [result]
        default_names = ["output__0"]
    for k, v in zip(keys, values, strict=True):
        if not isinstance(v, torch.Tensor):
            where = "the model's result" if k == -1 else f"output {k!r}"
            raise ConversionError(
                f"{where} is a {type(v).__name__}, not a tensor",
                "make forward() return a tensor, a tuple/list of tensors, or a dict of tensors",
            )
    if not values:
        raise ConversionError("the model returned no outputs", "make forward() return at least one tensor")
    names = list(output_names) if output_names is not None else default_names
    if len(names) != len(values):
        raise ConversionError(
            f"the model returns {len(values)} output(s) but {len(names)} output name(s) were given "
            f"({', '.join(names)})",
            "give one output name per tensor the model returns",
        )
    if len(set(names)) != len(names):
        raise UsageError(f"output names repeat: {', '.join(names)}", "give each output a unique name")
    return keys, names


def _run_example(module: Any, args: tuple[Any, ...], max_batch_size: int) -> Any:
    torch = import_torch()
    try:
        with torch.no_grad(), quiet():
            return module(*args)
    except Exception as e:
        raise ConversionError(f"the model failed on example inputs of shape {_shapes_text(args)}: {_cause_text(e)}",
                              _example_hint(max_batch_size)) from e


def _tuple_module(module: Any, keys: Sequence[str | int]) -> Any:
    """Wrap ``module`` so forward returns a tuple in a fixed order (a bare tensor when the model
    returns one): exporters and Triton then see outputs by position."""
    torch = import_torch()
    keys = list(keys)

    class TupleOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module

        def forward(self, *args: Any) -> Any:
            result = self.model(*args)
            if keys == [-1]:
                return result
            return tuple(result[k] for k in keys)

    return TupleOutputs().eval()


@contextlib.contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    was_training = bool(getattr(module, "training", False))
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _model_bytes(module: Any) -> int:
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen:  # tied weights count once
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


# ---------------------------------------------------------------- ONNX


def export_onnx(module: Any, inputs: Sequence[TensorSpec], output_names: Sequence[str] | None, path: Path,
                max_batch_size: int, opset: int | None = None, progress: Progress | None = None,
                external_data: bool | None = None) -> OnnxExport:
    """Export ``module`` to ONNX at ``path`` with the input specs' names and types, output names
    (given; else a dict result's keys; else ``output__0``, ...), a dynamic batch dimension
    (1..``max_batch_size``) when ``max_batch_size > 0``, and ``-1`` dims dynamic.

    Uses torch's dynamo exporter, falling back to the legacy TorchScript-based exporter when it
    fails (``exporter`` says which ran). The model is one file unless it is larger than
    ``EXTERNAL_DATA_THRESHOLD`` (or ``external_data=True``): then ``path`` becomes a directory in
    Triton's layout, ``path/model.onnx`` + ``path/model.onnx.data``."""
    torch = import_torch()
    say = progress or (lambda _msg: None)
    _check_specs(inputs)
    path = Path(path)
    input_names = [s.name for s in inputs]
    args = _example_args(inputs, max_batch_size)
    with _eval_mode(module):
        result = _run_example(module, args, max_batch_size)
        keys, names = _output_layout(result, output_names)
        overlap = set(names) & set(input_names)
        if overlap:
            raise UsageError(f"'{sorted(overlap)[0]}' names both an input and an output",
                             "ONNX tensor names must be unique: rename the output")
        wrapped = _tuple_module(module, keys)
        if external_data is None:
            external_data = _model_bytes(module) > EXTERNAL_DATA_THRESHOLD
        target = path / "model.onnx" if external_data else path
        if path.is_dir() and not external_data:
            raise UsageError(f"'{path}' is a directory", "give the path of the .onnx file to write")
        target.parent.mkdir(parents=True, exist_ok=True)

        notes: list[str] = []
        logs: list[str] = []
        say("exporting to ONNX (torch.export)")
        dynamo_error: BaseException | None = None
        try:
            with torch.no_grad(), quiet() as captured:
                torch.onnx.export(
                    wrapped, args, str(target), input_names=input_names, output_names=names,
                    dynamic_shapes=(tuple(_dynamic_shapes(inputs, max_batch_size)),), opset_version=opset,
                    external_data=external_data, dynamo=True, verbose=False,
                )
            exporter: Literal["dynamo", "legacy"] = "dynamo"
        except Exception as e:
            dynamo_error = e
        finally:
            logs.append(captured.text)
        if dynamo_error is not None:
            reason = _root_cause(dynamo_error)
            say("the dynamo exporter failed; trying the legacy ONNX exporter")
            _remove_partial(target)
            try:
                with torch.no_grad(), quiet() as captured:
                    torch.onnx.export(
                        wrapped, args, str(target), input_names=input_names, output_names=names,
                        dynamic_axes=_dynamic_axes(inputs, names, max_batch_size), opset_version=opset,
                        dynamo=False, verbose=False,
                    )
            except Exception as e:
                _remove_partial(target)
                raise ConversionError(
                    f"exporting the model to ONNX failed: {reason}",
                    f"the legacy exporter failed too ({_root_cause(e)}); make forward() exportable with "
                    "torch.export (no data-dependent Python control flow), or use --format torchscript",
                ) from dynamo_error
            finally:
                logs.append(captured.text)
            exporter = "legacy"
            notes.append(f"exported with the legacy (TorchScript-based) ONNX exporter: torch.export failed with {reason}")
            notes.extend(_tracer_notes(captured.warnings))

    import onnx

    model = onnx.load(str(target), load_external_data=False)
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxExport(
        path=path, exporter=exporter, input_names=tuple(input_names), output_names=tuple(names),
        opset=opset_used, external_data=external_data, notes=tuple(notes),
        log="\n".join(text for text in logs if text),
    )


def _dynamic_shapes(inputs: Sequence[TensorSpec], max_batch_size: int) -> list[dict[int, Any] | None]:
    torch = import_torch()
    batched = max_batch_size > 0
    # One Dim object for every input's first axis: the batch is the same size in all of them. A
    # dynamic dim needs max >= 2, so a max batch size of 1 still exports with max 2.
    batch = torch.export.Dim("batch", min=1, max=max(max_batch_size, 2)) if batched else None
    shapes: list[dict[int, Any] | None] = []
    for s in inputs:
        axes: dict[int, Any] = {0: batch} if batched else {}
        offset = 1 if batched else 0
        for i, d in enumerate(s.dims):
            if d == -1:
                # AUTO, not a named Dim: variable dims that the model ties together (token ids and
                # their attention mask) must not be declared independent.
                axes[i + offset] = torch.export.Dim.AUTO
        shapes.append(axes or None)
    return shapes


def _dynamic_axes(inputs: Sequence[TensorSpec], output_names: Sequence[str],
                  max_batch_size: int) -> dict[str, dict[int, str]]:
    batched = max_batch_size > 0
    axes: dict[str, dict[int, str]] = {}
    for s in inputs:
        entry = {0: "batch"} if batched else {}
        offset = 1 if batched else 0
        entry.update({i + offset: f"{s.name}_dim{i + offset}" for i, d in enumerate(s.dims) if d == -1})
        if entry:
            axes[s.name] = entry
    if batched:
        axes.update({n: {0: "batch"} for n in output_names})
    return axes


def _root_cause(e: BaseException) -> str:
    """The innermost exception's first line: torch's exporter wraps the real cause in several
    layers of advice."""
    seen = set()
    while (e.__cause__ is not None or e.__context__ is not None) and id(e) not in seen:
        seen.add(id(e))
        nxt = e.__cause__ or e.__context__
        assert nxt is not None
        e = nxt
    return _cause_text(e)


def _remove_partial(target: Path) -> None:
    for p in (target, target.with_name(target.name + ".data")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _tracer_notes(warnings: Sequence[str]) -> list[str]:
    """Tracer warnings mean the trace may have baked in a value or a branch: worth a note."""
    return [f"tracing warned: {w.split(': ', 1)[1]}" for w in warnings if w.startswith("TracerWarning")]


# ---------------------------------------------------------------- TorchScript


def export_torchscript(module: Any, inputs: Sequence[TensorSpec], path: Path, max_batch_size: int,
                       progress: Progress | None = None) -> TorchScriptExport:
    """Save ``module`` as TorchScript for Triton's libtorch backend: ``torch.jit.trace`` on example
    inputs (falling back to ``torch.jit.script`` when tracing fails), outputs in a fixed order
    (dict results by key order) named ``OUTPUT__i``, inputs ``INPUT__i`` in spec order."""
    torch = import_torch()
    say = progress or (lambda _msg: None)
    _check_specs(inputs)
    path = Path(path)
    args = _example_args(inputs, max_batch_size)
    notes: list[str] = []
    with _eval_mode(module):
        result = _run_example(module, args, max_batch_size)
        keys, _ = _output_layout(result, None)
        wrapped = _tuple_module(module, keys)
        say("tracing the model (torch.jit.trace)")
        method: Literal["trace", "script"] = "trace"
        try:
            with torch.no_grad(), quiet() as captured:
                compiled = torch.jit.trace(wrapped, args, check_trace=False)
            notes.extend(_tracer_notes(captured.warnings))
        except Exception as trace_error:
            say("tracing failed; trying torch.jit.script")
            try:
                with quiet() as captured:
                    compiled = torch.jit.script(module)
            except Exception as e:
                raise ConversionError(
                    f"converting the model to TorchScript failed: {_root_cause(trace_error)}",
                    f"torch.jit.script failed too ({_root_cause(e)}); use --format onnx",
                ) from trace_error
            method = "script"
            notes.append(f"scripted with torch.jit.script: tracing failed with {_root_cause(trace_error)}")
            if isinstance(result, dict):
                notes.append("the scripted model returns a dict; Triton's libtorch backend expects tensors "
                             "or a tuple of them")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        compiled.save(str(path))
    except Exception as e:
        raise ConversionError(f"saving the TorchScript model failed: {_cause_text(e)}",
                              "check the output directory is writable") from e
    return TorchScriptExport(
        path=path, method=method, input_names=tuple(f"INPUT__{i}" for i in range(len(inputs))),
        output_names=tuple(f"OUTPUT__{i}" for i in range(len(keys))), notes=tuple(notes), log=captured.text,
    )
