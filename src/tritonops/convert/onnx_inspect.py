"""Reading an ONNX model's interface: names, Triton data types, shapes, batchability and external
data — what ``build`` turns into a config and what ``check`` compares a config against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from tritonops.dtypes import DType, from_onnx
from tritonops.errors import ModelError, UsageError
from tritonops.paths import link_problem, read_bytes, shown
from tritonops.pbtxt import ModelConfig, read_config
from tritonops.spec import TensorSpec

ONNX_READ_LIMIT = 2 << 30  # protobuf's own limit: larger models keep their weights as external data
Dim = int | str | None  # a fixed size, a symbolic name, or unknown


@dataclass(frozen=True)
class OnnxTensor:
    name: str
    dtype: DType
    shape: tuple[Dim, ...]

    @property
    def batch_dim_dynamic(self) -> bool:
        return (len(self.shape) >= 1 and not isinstance(self.shape[0], int)) or (
            len(self.shape) >= 1 and self.shape[0] == -1
        )


@dataclass(frozen=True)
class OnnxInfo:
    path: Path  # the .onnx file itself (inside a model.onnx/ directory for external data)
    inputs: tuple[OnnxTensor, ...]
    outputs: tuple[OnnxTensor, ...]
    opset: int
    ir_version: int
    producer: str
    external_data: tuple[str, ...]  # relative locations of external data files

    @property
    def batchable(self) -> bool:
        """Triton's rule: batching only if every input and output has a dynamic first dim."""
        tensors = self.inputs + self.outputs
        return bool(tensors) and all(t.batch_dim_dynamic for t in tensors)

    def tensor_specs(self, batched: bool) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """Config tensors as Triton's ORT autofill would write them."""
        return (
            tuple(_to_spec(t, batched) for t in self.inputs),
            tuple(_to_spec(t, batched) for t in self.outputs),
        )


def _dim(d: Dim) -> int:
    return d if isinstance(d, int) and d > 0 else -1


def _to_spec(t: OnnxTensor, batched: bool) -> TensorSpec:
    shape = t.shape[1:] if batched else t.shape
    dims = tuple(_dim(d) for d in shape)
    if batched and not dims:
        # Rank-1 batched tensor: one scalar per batch item, written like Triton's autofill does.
        return TensorSpec(t.name, t.dtype, (1,), reshape=())
    if not dims:
        # A scalar in a non-batched model: Triton needs non-empty dims and forbids the reshape
        # trick without batching, so the nearest expressible shape is [1].
        return TensorSpec(t.name, t.dtype, (1,))
    return TensorSpec(t.name, t.dtype, dims)


def resolve_onnx_path(path: Path) -> Path:
    """``model.onnx`` may be a file, or Triton's directory layout holding ``model.onnx``."""
    if not path.exists():
        raise UsageError(f"model file '{path}' does not exist", "check the path")
    if path.is_dir():
        inner = path / "model.onnx"
        if inner.is_file():
            return inner
        onnx_files = sorted(path.glob("*.onnx"))
        if len(onnx_files) == 1:
            return onnx_files[0]
        raise UsageError(f"'{path}' is a directory without a model.onnx file inside",
                         "point at the .onnx file itself")
    return path


def inspect_onnx(path: Path) -> OnnxInfo:
    import onnx  # on first use: a slow import, which building a TorchScript model or checking a repository skips

    file = resolve_onnx_path(path)
    # The one safe reader: a FIFO would block onnx.load forever and /dev/zero would fill memory.
    data = read_bytes(file, "model file", ONNX_READ_LIMIT)
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeWarning, ValueError, UnicodeDecodeError) as e:
        raise ModelError(
            f"'{file}' is not a valid ONNX model ({_first_line(e) or 'cannot parse the protobuf'})",
            "export it again; check it is a complete .onnx file (not truncated, not another format)",
        ) from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(
            f"'{file}' is not a valid ONNX model (it has no graph)",
            "export it again; check it is a complete .onnx file (not truncated, not another format)",
        )
    try:
        onnx.checker.check_model(str(file))  # by path: it checks external data files beside it
    except (onnx.checker.ValidationError, OSError, ValueError) as e:
        raise ModelError(
            f"'{file}' is not a valid ONNX model: {_first_line(e)}",
            "export it again, or run onnx.checker.check_model on it to see the problem",
        ) from None

    initializers = {i.name for i in model.graph.initializer}
    inputs = tuple(_tensor(v, "input") for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_tensor(v, "output") for v in model.graph.output)
    external = sorted(
        {
            entry.value
            for init in model.graph.initializer
            if init.data_location == onnx.TensorProto.EXTERNAL
            for entry in init.external_data
            if entry.key == "location"
        }
    )
    for loc in external:
        if Path(loc).is_absolute() or ".." in Path(loc).parts or link_problem(file.parent / loc, file.parent):
            raise ModelError(
                f"'{file}' stores weights in {shown(loc)}, which is not a file beside it",
                "export it again: external data must lie in the model's directory",
            )
        if not (file.parent / loc).is_file():
            raise ModelError(
                f"'{file}' stores weights in '{loc}', which is missing beside it",
                f"put '{loc}' in {file.parent} (the exporter writes it next to the .onnx file)",
            )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxInfo(file, inputs, outputs, opset, model.ir_version, model.producer_name, tuple(external))


def _tensor(value: Any, kind: str) -> OnnxTensor:
    tt = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise ModelError(f"{kind} '{value.name}' is not a tensor (sequence/map types cannot be served)",
                         "change the model to take and return plain tensors")
    dtype = from_onnx(tt.elem_type, f"{kind} '{value.name}'")
    shape: tuple[Dim, ...] = ()
    if tt.HasField("shape"):
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
        )
    return OnnxTensor(value.name, dtype, shape)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---------------------------------------------------------------- a model file read with its config


@dataclass(frozen=True)
class ModelInspection:
    """An ONNX file's interface and, when a config is known, what each tensor is to Triton:
    ``roles[name]`` is "input"/"output" (declared), "control CONTROL_SEQUENCE_START" etc., "state
    input, fed from STATE_OUT"/"state output, fed back as STATE_IN", or "not in the config"."""

    info: OnnxInfo
    config: Path | None = None
    roles: dict[str, str] | None = None


def tensor_roles(info: OnnxInfo, cfg: ModelConfig) -> dict[str, str]:
    """Each of the model's inputs and outputs as the config uses it (control and state tensors
    are not declared as input/output but named under sequence_batching)."""
    roles: dict[str, str] = {}
    sb = cfg.sequence_batching
    for ci in sb.control_input:
        kinds = [type(c).Kind.Name(c.kind) for c in ci.control]
        roles[ci.name] = "control " + "/".join(kinds)
    for st in sb.state:
        roles.setdefault(st.input_name, f"state input, fed from {st.output_name}")
        roles.setdefault(st.output_name, f"state output, fed back as {st.input_name}")
    declared_in = {t.name for t in cfg.input}
    declared_out = {t.name for t in cfg.output}
    result = {}
    for t in info.inputs:
        result[t.name] = "input" if t.name in declared_in else roles.get(t.name, "not in the config")
    for t in info.outputs:
        result[t.name] = "output" if t.name in declared_out else roles.get(t.name, "not in the config")
    return result


def _served_file(model_dir: Path, cfg: ModelConfig) -> Path:
    versions = sorted((int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)
    name = cfg.default_model_filename or "model.onnx"
    for v in versions:
        if (model_dir / str(v) / name).exists():
            return model_dir / str(v) / name
    raise UsageError(f"model directory '{model_dir}' has no version directory holding {name}",
                     "give the .onnx file itself, with --config for its config.pbtxt")


def inspect_model(path: Path, config: Path | None = None) -> ModelInspection:
    """``path``: an ONNX file (or Triton's ``model.onnx/`` directory), or a model directory with
    config.pbtxt (its newest version's model file is read). ``config``: the config.pbtxt to read
    the tensors' roles from (default: the model directory's)."""
    if config is None and path.is_dir() and (path / "config.pbtxt").is_file() and not (path / "model.onnx").exists():
        config = path / "config.pbtxt"
    cfg = read_config(config) if config is not None else None
    model_file = _served_file(path, cfg) if cfg is not None and path.is_dir() and config == path / "config.pbtxt" \
        else path
    info = inspect_onnx(model_file)
    return ModelInspection(info, config, tensor_roles(info, cfg) if cfg is not None else None)
