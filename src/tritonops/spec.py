"""Typed specifications: tensors, batching, instances and whole model configs. Validated at
construction, so an invalid spec never reaches the renderer or the repository."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from tritonops.dtypes import DType, parse_dtype
from tritonops.errors import UsageError
from tritonops.names import check_model_name
from tritonops.platforms import BACKEND_OF_PLATFORM, DEFAULT_FILE

Platform = Literal["onnxruntime_onnx", "pytorch_libtorch", "tensorrt_plan", "python", "ensemble"]
# platform of a spec -> (backend, default model file); "python" stands for a backend-only Python model
PLATFORMS: dict[str, tuple[str, str]] = {
    p: (b, DEFAULT_FILE.get(b, ""))
    for p, b in {**{k: v for k, v in BACKEND_OF_PLATFORM.items() if k in {"onnxruntime_onnx", "pytorch_libtorch",
                                                                           "tensorrt_plan", "ensemble"}},
                 "python": "python"}.items()
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``dims`` exclude the batch dimension when the model batches; -1 is a
    variable dimension (no dims: one value per batch item). ``value_range`` bounds generated example
    data (e.g. token ids); spec files write it as ``range: [low, high]``."""

    name: str
    dtype: DType
    dims: tuple[int, ...] = ()
    reshape: tuple[int, ...] | None = None
    optional: bool = False
    allow_ragged_batch: bool = False
    value_range: tuple[float, float] | None = field(default=None, metadata={"key": "range",
                                                                            "example": "range: [0, 30521]"})

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise UsageError(f"invalid tensor name '{self.name}'", "tensor names must be non-empty, no spaces")
        for d in self.dims:
            if d == 0 or d < -1:
                raise UsageError(
                    f"tensor '{self.name}' has dimension {d}",
                    "each dimension must be >= 1, or -1 for a variable size",
                )
        if self.value_range is not None and self.value_range[0] > self.value_range[1]:
            raise UsageError(f"tensor '{self.name}' has an empty value range {self.value_range}",
                             "write the range as [low, high] with low <= high")

    @classmethod
    def parse(cls, text: str) -> TensorSpec:
        """Parse ``NAME:DTYPE:D1,D2,...`` as written on the command line (``x:FP32:3,224,224``;
        ``-1`` for variable dims; an empty dims part for a scalar per batch item)."""
        parts = text.split(":")
        if len(parts) != 3:
            raise UsageError(
                f"cannot parse tensor spec '{text}'",
                "write it as NAME:DTYPE:DIMS, e.g. INPUT__0:FP32:3,224,224 (use -1 for a variable dim)",
            )
        name, dtype, dims_text = parts
        try:
            dims = tuple(int(d) for d in dims_text.split(",") if d.strip() != "")
        except ValueError:
            raise UsageError(
                f"cannot parse dims '{dims_text}' in tensor spec '{text}'",
                "dims are comma-separated integers, e.g. 3,224,224 or -1,128",
            ) from None
        return cls(name=name.strip(), dtype=parse_dtype(dtype), dims=dims)

    def describe(self) -> str:
        return f"{self.name}:{self.dtype.name}:[{','.join(str(d) for d in self.dims)}]"


@dataclass(frozen=True)
class QueuePolicy:
    max_queue_size: int = 0
    timeout_us: int = 0
    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    allow_timeout_override: bool = False


@dataclass(frozen=True)
class DynamicBatching:
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    preserve_ordering: bool = False
    priority_levels: int = 0
    default_priority_level: int = 0
    queue_policy: QueuePolicy | None = None


@dataclass(frozen=True)
class InstanceGroup:
    count: int = 1
    kind: Literal["cpu", "gpu", "auto"] = "cpu"
    gpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError(f"instance count {self.count} is not positive", "use --instances N with N >= 1")
        if self.gpus and self.kind == "cpu":
            raise UsageError("GPU ids were given for a CPU instance group", "use --kind gpu, or drop --gpu")


@dataclass(frozen=True)
class Accelerator:
    """ONNX Runtime's GPU execution accelerator block (config-only; applies to GPU instances)."""

    name: Literal["tensorrt", "cuda"]
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class VersionPolicy:
    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()


ControlKind = Literal["START", "END", "READY", "CORRID"]
CONTROL_KINDS: tuple[str, ...] = ("START", "END", "READY", "CORRID")
# the value forms of a START/END/READY control, by the data type of the model's input
CONTROL_FORMS: dict[str, str] = {"INT32": "int32_false_true", "FP32": "fp32_false_true", "BOOL": "bool_false_true"}
CORRID_TYPES: tuple[str, ...] = ("UINT64", "INT64", "UINT32", "INT32", "BYTES")


@dataclass(frozen=True)
class SequenceControl:
    """One control tensor the sequence batcher creates (``CONTROL_SEQUENCE_<kind>``). ``dtype`` is
    the model input's type: it picks the value form of START/END/READY (false 0, true 1) and is
    CORRID's ``data_type``."""

    kind: ControlKind
    tensor: str
    dtype: DType

    def __post_init__(self) -> None:
        if self.kind not in CONTROL_KINDS:
            raise UsageError(f"unknown sequence control '{self.kind}'",
                             f"use one of {', '.join(CONTROL_KINDS)}, e.g. --control START=START")
        allowed = CORRID_TYPES if self.kind == "CORRID" else tuple(CONTROL_FORMS)
        if self.dtype.name not in allowed:
            raise UsageError(
                f"control {self.kind} tensor '{self.tensor}' is {self.dtype.name}; a {self.kind} control must be "
                f"{' or '.join(allowed)}", f"change the model's '{self.tensor}' input to {allowed[0]}")


@dataclass(frozen=True)
class SequenceState:
    """Implicit state: the backend feeds a sequence's last ``output_name`` back as ``input_name``,
    starting from zeros. ``dims`` exclude the batch dimension."""

    input_name: str
    output_name: str
    dtype: DType
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.dims or any(d == 0 or d < -1 for d in self.dims):
            raise UsageError(f"state '{self.input_name}' has dims {list(self.dims)}",
                             "a state needs dims (without the batch dimension), each >= 1 or -1")


@dataclass(frozen=True)
class SequenceBatching:
    """``sequence_batching``: the direct (a slot per sequence) or oldest (dynamic batching across
    sequences) strategy, control tensors and implicit state. 0 means Triton's default."""

    strategy: Literal["direct", "oldest"] = "direct"
    max_sequence_idle_us: int = 0
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()  # oldest only
    max_candidate_sequences: int = 0  # oldest only
    controls: tuple[SequenceControl, ...] = ()
    states: tuple[SequenceState, ...] = ()

    def __post_init__(self) -> None:
        if self.strategy not in ("direct", "oldest"):
            raise UsageError(f"sequence strategy '{self.strategy}' is not one of: direct, oldest",
                             "use --sequence direct or --sequence oldest")
        if self.strategy == "direct" and (self.preferred_batch_sizes or self.max_candidate_sequences):
            raise UsageError("preferred batch sizes and candidate sequences belong to the oldest strategy",
                             "use --sequence oldest, or drop --preferred-batch-size/--max-candidate-sequences")
        for what, value in (("max sequence idle", self.max_sequence_idle_us),
                            ("max queue delay", self.max_queue_delay_us),
                            ("max candidate sequences", self.max_candidate_sequences)):
            if value < 0:
                raise UsageError(f"{what} {value} is negative", "use 0 (Triton's default) or a positive value")
        kinds: dict[str, str] = {}
        for c in self.controls:
            if c.kind in kinds:
                raise UsageError(f"control {c.kind} is given twice ('{kinds[c.kind]}' and '{c.tensor}')",
                                 f"map {c.kind} to one input")
            kinds[c.kind] = c.tensor
        names = [c.tensor for c in self.controls] + [s.input_name for s in self.states]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise UsageError(f"tensor '{twice}' is used for two controls or states",
                             "give each control and state its own model input")
        outs = [s.output_name for s in self.states]
        twice = next((n for n in outs if outs.count(n) > 1), None)
        if twice is not None:
            raise UsageError(f"state output '{twice}' is used by two states", "give each state its own output")

    @property
    def tensor_inputs(self) -> tuple[str, ...]:
        """Model inputs the sequence batcher and the backend supply (not declared as config inputs)."""
        return tuple(c.tensor for c in self.controls) + tuple(s.input_name for s in self.states)

    @property
    def tensor_outputs(self) -> tuple[str, ...]:
        return tuple(s.output_name for s in self.states)


@dataclass(frozen=True)
class WarmupInput:
    """One input of a generated warm-up request read from ``warmup/<data_file>`` (raw bytes)."""

    name: str
    dtype: DType
    dims: tuple[int, ...]
    data_file: str


@dataclass(frozen=True)
class ModelSpec:
    """Everything that goes into one model's ``config.pbtxt``."""

    name: str
    platform: Platform
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic_batching: DynamicBatching | None = None
    instance_groups: tuple[InstanceGroup, ...] = (InstanceGroup(),)
    response_cache: bool = False
    warmup: bool = False
    version_policy: VersionPolicy | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    accelerators: tuple[Accelerator, ...] = ()
    default_model_filename: str | None = None
    sequence_batching: SequenceBatching | None = None
    warmup_inputs: tuple[WarmupInput, ...] = ()  # the warm-up request's data, when samples give it
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_model_name(self.name)
        if self.platform not in PLATFORMS:
            raise UsageError(f"unknown platform '{self.platform}'", f"use one of {', '.join(PLATFORMS)}")
        if self.max_batch_size < 0:
            raise UsageError(f"max batch size {self.max_batch_size} is negative",
                             "use --max-batch-size 0 for a model that does not batch")
        _unique(self.inputs, "input")
        _unique(self.outputs, "output")
        db = self.dynamic_batching
        if db is not None:
            for p in db.preferred_batch_sizes:
                if p < 1 or p > self.max_batch_size:
                    raise UsageError(
                        f"preferred batch size {p} is above max batch size {self.max_batch_size}"
                        if p > self.max_batch_size
                        else f"preferred batch size {p} is not positive",
                        f"use preferred batch sizes between 1 and {self.max_batch_size}, "
                        "or raise --max-batch-size",
                    )
            if self.max_batch_size == 0:
                raise UsageError("dynamic batching needs a model with max_batch_size > 0",
                                 "drop the batching options, or give --max-batch-size N")
        sb = self.sequence_batching
        if sb is not None:
            _check_sequence(self, sb)

    @property
    def backend(self) -> str:
        return PLATFORMS[self.platform][0]

    @property
    def model_filename(self) -> str:
        return self.default_model_filename or PLATFORMS[self.platform][1]


def _unique(tensors: Sequence[TensorSpec], what: str) -> None:
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise UsageError(f"{what} '{t.name}' is declared twice", f"give each {what} a unique name")
        seen.add(t.name)


def _check_sequence(spec: ModelSpec, sb: SequenceBatching) -> None:
    """Triton's rules for a sequence-batched config: one scheduler, no response cache, and the
    control/state tensors are not declared as inputs/outputs."""
    if spec.dynamic_batching is not None:
        raise UsageError("sequence batching and dynamic batching cannot both be enabled (Triton has one scheduler)",
                         "drop the dynamic batching options (or --dynamic-batching), or drop --sequence")
    if spec.response_cache:
        raise UsageError("the response cache cannot be used with sequence batching (a stateful model's answers "
                         "depend on the sequence)", "drop --response-cache")
    for p in sb.preferred_batch_sizes:
        if p < 1 or p > spec.max_batch_size:
            raise UsageError(f"preferred batch size {p} is outside 1..{spec.max_batch_size} (max batch size)",
                             "use preferred batch sizes between 1 and --max-batch-size")
    declared_in = {t.name for t in spec.inputs}
    declared_out = {t.name for t in spec.outputs}
    for name in sb.tensor_inputs:
        if name in declared_in:
            raise UsageError(f"'{name}' is a control or state tensor and also declared as an input",
                             "leave it out of the inputs: the sequence batcher supplies it")
    for name in sb.tensor_outputs:
        if name in declared_out:
            raise UsageError(f"'{name}' is a state output and also declared as an output",
                             "leave it out of the outputs: the backend keeps it as the sequence's state")
