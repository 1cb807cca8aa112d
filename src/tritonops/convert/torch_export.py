"""PyTorch models in: load a module factory or a TorchScript file, export to ONNX or TorchScript.

torch is optional: it is imported inside the functions, and a missing torch raises
``MissingDependencyError`` naming the ``torch`` extra. Nothing here prints: exporter warnings,
log records and stdout are captured (a few become ``ExportResult.notes``)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tritonops.convert.examples import make_inputs
from tritonops.errors import ConversionError, MissingDependencyError, ModelError, UsageError
from tritonops.spec import TensorSpec

# Above this many bytes of weights the ONNX file is written with external data (protobuf's limit is 2 GiB).
EXTERNAL_DATA_BYTES = 1_800_000_000
LEGACY_OPSET = 17
# Size used for variable (-1) dims and the batch dim in the example inputs of a trace or export. Not
# 1: torch.export specializes sizes 0 and 1, which would make those dims static.
EXAMPLE_DIM = 3
EXAMPLE_BATCH = 2


@dataclass(frozen=True)
class ExportResult:
    """``path`` is the written model file (for ONNX with external data, the file inside Triton's
    ``model.onnx/`` directory); ``exporter`` names the exporter that produced it."""

    path: Path
    exporter: str
    notes: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    seconds: float = 0.0
    captured: tuple[str, ...] = field(default=(), repr=False)  # warnings and log lines, for --debug

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "exporter": self.exporter, "notes": list(self.notes),
                "output_names": list(self.output_names), "seconds": round(self.seconds, 3)}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else type(e).__name__


# ---------------------------------------------------------------- torch interop


def import_torch(purpose: str = "converting a PyTorch model") -> Any:
    """Import torch, or raise ``MissingDependencyError`` naming the extra to install."""
    try:
        import torch
    except ImportError as e:
        raise MissingDependencyError("torch", "torch", purpose) from e
    return torch


def to_torch(arr: np.ndarray) -> Any:
    torch = import_torch()
    if arr.dtype == np.object_:
        raise ConversionError("PyTorch models cannot take BYTES (string) inputs",
                              "tokenize or encode strings to numbers before the model, e.g. in an ensemble")
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(arr).view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(arr, copy=True, order="C"))


def to_numpy(t: Any) -> np.ndarray:
    torch = import_torch()
    if not isinstance(t, torch.Tensor):
        raise ConversionError(f"the model returned a {type(t).__name__}, not a tensor",
                              "make the model return tensors (a tensor, a tuple/list of tensors, or a dict of them)")
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.contiguous().numpy()


def flatten_outputs(result: Any) -> list[tuple[str | None, Any]]:
    """A model's result as ``[(key or None, tensor)]`` in order: a tensor, a tuple/list, or a dict."""
    if isinstance(result, dict):
        return [(str(k), v) for k, v in result.items()]
    if isinstance(result, (tuple, list)):
        return [(None, v) for v in result]
    return [(None, result)]



# ---------------------------------------------------------------- quiet


@contextlib.contextmanager
def _fd_captured(lines: list[str]) -> Iterator[None]:
    """Capture what C++ code writes straight to file descriptors 1 and 2 (the legacy ONNX
    exporter's log always goes there)."""
    import tempfile

    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    with tempfile.TemporaryFile() as tmp:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            lines.extend(line for line in tmp.read().decode("utf-8", "replace").splitlines() if line.strip())


@contextlib.contextmanager
def _captured(lines: list[str] | None = None, fds: bool = False) -> Iterator[list[str]]:
    """Capture everything an exporter says: ``warnings``, ``print`` to stdout/stderr, and log
    records written by stream handlers to the terminal (torch installs many); with ``fds``, also
    what native code writes to file descriptors 1 and 2. The lines are appended to ``lines``
    when the block exits."""
    lines = [] if lines is None else lines
    buf = io.StringIO()
    terminal = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) if s is not None}
    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and id(h.stream) in terminal:
                swapped.append((h, h.stream))
                h.setStream(buf)
    try:
        native = _fd_captured(lines) if fds else contextlib.nullcontext()
        with native, warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buf), \
                contextlib.redirect_stderr(buf):
            warnings.simplefilter("always")
            try:
                yield lines
            finally:
                lines.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    finally:
        for h, stream in swapped:
            h.setStream(stream)
        lines.extend(line for line in buf.getvalue().splitlines() if line.strip())


# ---------------------------------------------------------------- loading


def _import_file(file: Path, ref: str) -> Any:
    if not file.is_file():
        raise UsageError(f"model factory file '{file}' does not exist",
                         "give the factory as path/to/file.py:function or package.module:function")
    name = f"_tritonops_factory_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import '{file}' for model factory '{ref}'", "give a Python (.py) file")
    module = importlib.util.module_from_spec(spec)
    folder = str(file.resolve().parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # so the file can import its neighbours
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ConversionError(f"model factory '{ref}' raised {type(e).__name__}: {_first_line(e)}",
                              "importing the factory's file failed; run again with --debug for the traceback") from e
    finally:
        if added:
            sys.path.remove(folder)
    return module


def _import_module(mod: str, ref: str) -> Any:
    cwd = str(Path.cwd())
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)  # as `python -m` would: modules of the current project import
    try:
        return importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name is not None and (mod == e.name or mod.startswith(e.name + ".")):
            raise UsageError(f"cannot import module '{mod}' for model factory '{ref}'",
                             "check the module name and that it is importable from here (installed, or on "
                             "PYTHONPATH), or give a file: path/to/file.py:function") from e
        raise ConversionError(f"model factory '{ref}' raised ModuleNotFoundError: {_first_line(e)}",
                              "install what the model's module imports") from e
    except Exception as e:
        raise ConversionError(f"model factory '{ref}' raised {type(e).__name__}: {_first_line(e)}",
                              "importing the factory's module failed; run again with --debug for the traceback"
                              ) from e
    finally:
        if added:
            sys.path.remove(cwd)


def load_factory(ref: str) -> Any:
    """Call a model factory given as ``package.module:function`` or ``path/to/file.py:function``
    and return its ``torch.nn.Module`` in eval mode."""
    torch = import_torch()
    where, _, fn_name = ref.rpartition(":")
    if not where or not fn_name or not fn_name.isidentifier():
        raise UsageError(f"cannot parse model factory '{ref}'",
                         "write it as package.module:function or path/to/file.py:function")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(Path(where), ref)
    else:
        module = _import_module(where, ref)
    fn = getattr(module, fn_name, None)
    if fn is None:
        found = sorted(n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__)
        listing = f"it defines: {', '.join(found[:10])}" if found else "it defines no public functions"
        raise UsageError(f"'{where}' has no function '{fn_name}' (model factory '{ref}')",
                         f"check the name after ':'; {listing}")
    if not callable(fn):
        raise UsageError(f"'{fn_name}' in '{where}' is not a function (model factory '{ref}')",
                         "name a function that takes no arguments and returns the model")
    try:
        with _captured():
            model = fn()
    except Exception as e:
        raise ConversionError(f"model factory '{ref}' raised {type(e).__name__}: {_first_line(e)}",
                              "fix the factory so it returns the model; run again with --debug for the traceback"
                              ) from e
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"model factory '{ref}' returned {type(model).__name__}, not a torch.nn.Module",
                         "make the function return the model (an nn.Module instance)")
    return model.eval()


def load_torchscript(path: Path) -> Any:
    """Load a TorchScript file on the CPU, in eval mode."""
    torch = import_torch("loading a TorchScript model")
    try:
        with _captured():
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise ModelError(f"'{path}' is not a TorchScript model",
                         f"torch.jit.load said: {_first_line(e)}; save one with "
                         "torch.jit.save(torch.jit.trace(model, example_inputs), path)") from e
    return module.eval()


# ---------------------------------------------------------------- helpers


def _tuple_outputs(module: Any, keys: Sequence[str] | None) -> Any:
    """Wrap ``module`` so it returns a tuple of tensors in a fixed order (dict outputs by ``keys``)."""
    torch = import_torch()

    base: Any = torch.nn.Module

    class TupleOutputs(base):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *args: Any) -> Any:
            result = self.inner(*args)
            if isinstance(result, dict):
                return tuple(result[k] for k in (keys if keys is not None else result))
            if isinstance(result, (tuple, list)):
                return tuple(result)
            return (result,)

    return TupleOutputs().eval()


def _examples(module: Any, inputs: Sequence[TensorSpec], max_batch_size: int) -> tuple[tuple[Any, ...], Any]:
    """Example inputs (as tensors) and the module's result on them."""
    torch = import_torch()
    if not inputs:
        raise UsageError("the model needs at least one input spec", "give --example-shape NAME:DTYPE:DIMS")
    rng = np.random.default_rng(0)
    batch = min(EXAMPLE_BATCH, max(max_batch_size, 1)) if max_batch_size > 0 else None
    if batch == 1:
        batch = EXAMPLE_BATCH  # still trace with 2, so batch is not taken as a constant
    arrays = make_inputs(inputs, batch, rng, dim_default=EXAMPLE_DIM)
    args = tuple(to_torch(arrays[s.name]) for s in inputs)
    try:
        with _captured(), torch.inference_mode():
            result = module(*args)
    except Exception as e:
        shapes = ", ".join(f"{s.name} {list(a.shape)}" for s, a in zip(inputs, args, strict=True))
        raise ConversionError(f"the model failed on example inputs ({shapes}): {type(e).__name__}: {_first_line(e)}",
                              "check the --example-shape specs match what the model's forward() takes") from e
    return args, result


def _output_names(result: Any, output_names: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """(names for the exported outputs, dict keys in that order or None)."""
    items = flatten_outputs(result)
    keys = [k for k, _ in items]
    is_dict = isinstance(result, dict)
    if output_names is None:
        if is_dict:
            return tuple(str(k) for k in keys), tuple(str(k) for k in keys)
        return tuple(f"output__{i}" for i in range(len(items))), None
    names = tuple(output_names)
    if is_dict and set(names) <= {str(k) for k in keys} and len(names) == len(items):
        return names, names  # dict keys named explicitly: export in the order given
    if len(names) != len(items):
        raise UsageError(f"the model returns {len(items)} output(s) but {len(names)} output name(s) were given",
                         "give one --output per tensor the model returns, in order")
    return names, (tuple(str(k) for k in keys) if is_dict else None)


def _weight_bytes(module: Any) -> int:
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        total += t.numel() * t.element_size()
    return total


def _export_cause(e: BaseException) -> str:
    """The most telling line of an exporter error: the innermost cause's first line."""
    inner: BaseException = e
    while inner.__cause__ is not None and inner.__cause__ is not inner:
        inner = inner.__cause__
    return f"{type(inner).__name__}: {_first_line(inner)}"


# ---------------------------------------------------------------- ONNX


def export_onnx(module: Any, inputs: Sequence[TensorSpec], output_names: Sequence[str] | None, path: Path,
                max_batch_size: int) -> ExportResult:
    """Export ``module`` to ONNX at ``path`` with named inputs/outputs, a dynamic batch dim (when
    ``max_batch_size`` > 0) and dynamic ``-1`` dims. Uses torch's dynamo exporter, falling back to
    the legacy TorchScript-based one (opset 17) when dynamo fails. Outputs default to
    ``output__0..`` (dict outputs: their keys). Weights over ~1.8 GB go to external data in
    Triton's ``model.onnx/`` directory layout, and ``path`` becomes the file inside it."""
    torch = import_torch()
    started = time.monotonic()
    module = module.eval()
    args, result = _examples(module, inputs, max_batch_size)
    names, keys = _output_names(result, output_names)
    wrapper = _tuple_outputs(module, keys)
    input_names = [s.name for s in inputs]
    path = Path(path)
    notes: list[str] = []
    external = _weight_bytes(module) > EXTERNAL_DATA_BYTES
    if external:
        path = path / "model.onnx"
        notes.append("weights over 1.8 GB: written as external data in Triton's model.onnx/ directory layout")
    path.parent.mkdir(parents=True, exist_ok=True)

    batched = max_batch_size > 0
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch_size)) if batched else None
    dynamic_shapes = []
    dynamic_axes: dict[str, dict[int, str]] = {}
    for spec in inputs:
        axes: dict[int, Any] = {}
        legacy: dict[int, str] = {}
        offset = 0
        if batched:
            axes[0], legacy[0], offset = batch, "batch", 1
        for i, d in enumerate(spec.dims):
            if d == -1:
                axes[i + offset] = torch.export.Dim.AUTO
                legacy[i + offset] = f"{spec.name}_dim{i + offset}"
        dynamic_shapes.append(axes or None)
        if legacy:
            dynamic_axes[spec.name] = legacy
    for n in names:
        if batched:
            dynamic_axes[n] = {0: "batch"}

    captured: list[str] = []
    try:
        with _captured(captured):
            torch.onnx.export(wrapper, args, str(path), input_names=input_names, output_names=list(names),
                              dynamic_shapes=(tuple(dynamic_shapes),), external_data=external, dynamo=True,
                              verbose=False)
        exporter = "torch.onnx (dynamo)"
    except Exception as dynamo_error:
        dynamo_cause = _export_cause(dynamo_error)
        _remove(path)
        try:
            with _captured(captured, fds=True):
                torch.onnx.export(wrapper, args, str(path), input_names=input_names, output_names=list(names),
                                  dynamic_axes=dynamic_axes, opset_version=LEGACY_OPSET, dynamo=False,
                                  verbose=False)
        except Exception as legacy_error:
            _remove(path)
            raise ConversionError(
                f"exporting to ONNX failed: {dynamo_cause}",
                f"the legacy exporter failed too ({_export_cause(legacy_error)}); make the model exportable "
                "with torch.export, or build with --format torchscript",
            ) from dynamo_error
        exporter = f"torch.onnx legacy (opset {LEGACY_OPSET})"
        notes.append(f"the dynamo ONNX exporter failed ({dynamo_cause}); used the legacy exporter")
    if not path.is_file():
        raise ConversionError(f"the ONNX exporter wrote no file at '{path}'",
                              "this is a tritonops bug: please report it")
    return ExportResult(path, exporter, tuple(notes), names, time.monotonic() - started, tuple(captured))


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".data")):
        if p.is_file():
            p.unlink()


# ---------------------------------------------------------------- TorchScript


def export_torchscript(module: Any, inputs: Sequence[TensorSpec], path: Path, max_batch_size: int) -> ExportResult:
    """Save ``module`` as TorchScript for Triton's libtorch backend: traced (scripted when tracing
    fails) behind a wrapper that returns a tuple, so outputs are ``OUTPUT__0``, ``OUTPUT__1``, ...
    in a fixed order (dict outputs in key order); inputs are positional (``INPUT__0``, ...)."""
    torch = import_torch()
    started = time.monotonic()
    module = module.eval()
    args, result = _examples(module, inputs, max_batch_size)
    keys = tuple(str(k) for k in result) if isinstance(result, dict) else None
    wrapper = _tuple_outputs(module, keys)
    notes: list[str] = []
    captured: list[str] = []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _captured(captured), torch.no_grad():
            saved = torch.jit.trace(wrapper, args, check_trace=False)
        exporter = "torch.jit.trace"
    except Exception as trace_error:
        trace_cause = _export_cause(trace_error)
        try:
            with _captured(captured):
                saved = torch.jit.script(module)
        except Exception as script_error:
            raise ConversionError(
                f"converting to TorchScript failed: {trace_cause}",
                f"torch.jit.script failed too ({_export_cause(script_error)}); try --format onnx",
            ) from trace_error
        exporter = "torch.jit.script"
        notes.append(f"tracing failed ({trace_cause}); the model was scripted instead")
    if keys is not None:
        notes.append("dict outputs are served in key order as " +
                     ", ".join(f"OUTPUT__{i} ({k})" for i, k in enumerate(keys)))
    with _captured():
        torch.jit.save(saved, str(path))
    n = len(flatten_outputs(result))
    return ExportResult(path, exporter, tuple(notes), tuple(f"OUTPUT__{i}" for i in range(n)),
                        time.monotonic() - started, tuple(captured))
