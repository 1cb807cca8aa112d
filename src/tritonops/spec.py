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
