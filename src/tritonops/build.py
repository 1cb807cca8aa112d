"""``tritonops build``: a model file or PyTorch factory -> a verified Triton model repository entry.

Flow: resolve the source, inspect or convert it (in a scratch directory), verify the result
numerically, derive the model config, then stage the version directory plus ``config.pbtxt`` and
move them into the repository. Any failure before the final renames leaves the repository as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import typing
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tritonops import reference

# torch_export, tensorrt and verify import torch, tensorrt and onnxruntime only inside the
# functions that need them, so these imports stay cheap for ONNX-only builds.
from tritonops.build_samples import Samples, keep_samples, read_samples, sample_feeds
from tritonops.check import check_spec
from tritonops.convert import tensorrt, torch_export, verify
from tritonops.convert.examples import make_inputs
from tritonops.convert.onnx_inspect import OnnxInfo, inspect_onnx
from tritonops.dtypes import from_numpy
from tritonops.errors import ModelError, RepositoryError, UsageError
from tritonops.names import check_model_name
from tritonops.pbtxt import ModelConfig, config_to_text, parse_config_text, render_config
from tritonops.progress import LOGGER_NAME, Progress, reporter
from tritonops.reference import Runner
from tritonops.repository import CopyFn, StagedModel, stage_model, write_text_file
from tritonops.spec import (
    Accelerator,
    DynamicBatching,
    InstanceGroup,
    ModelSpec,
    QueuePolicy,
    SequenceBatching,
    TensorSpec,
    VersionPolicy,
)
from tritonops.stateful import (
    SequenceOptions,
    control_kind,
    sequence_from_onnx,
    state_output_specs,
    with_sequence_feed,
    without_sequence_tensors,
)

SourceKind = Literal["onnx", "torchscript", "factory"]
Format = Literal["auto", "onnx", "torchscript", "tensorrt"]
DEFAULT_MAX_BATCH_SIZE = 32
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")
log = logging.getLogger(f"{LOGGER_NAME}.build")


def _literal_choices(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    for arg in typing.get_args(hint):  # Optional[Literal[...]]
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return ()


@dataclass(frozen=True)
class BuildOptions:
    """Everything a user can say about one model to build (CLI options or one YAML entry)."""

    source: str
    format: Format = "auto"
    name: str | None = None
    repository: Path = Path("model_repository")
    max_batch_size: int | None = None  # None: DEFAULT_MAX_BATCH_SIZE if the model can batch, else 0
    instances: int = 1
    kind: Literal["cpu", "gpu", "auto"] = "cpu"
    gpus: tuple[int, ...] = ()
    dynamic_batching: bool | None = None  # None: on, unless the model is sequence-batched
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    preserve_ordering: bool = False
    priority_levels: int = 0
    default_priority_level: int = 0
    max_queue_size: int = 0
    queue_timeout_us: int = 0
    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    allow_timeout_override: bool = False
    response_cache: bool = False
    warmup: bool = False
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[str, ...] = ()
    version: int | None = None
    version_policy: VersionPolicy | None = None
    atol: float = 1e-4
    rtol: float = 1e-3
    threads: int | None = None
    accelerator: Literal["tensorrt", "cuda"] | None = None
    precision: Literal["FP32", "FP16", "BF16", "INT8"] = "FP16"
    parameters: tuple[tuple[str, str], ...] = ()
    seed: int = 0
    # sequence batching (stateful models): strategy, control tensors (kind, model input), implicit
    # state (model input, model output); max_queue_delay_us and, for oldest, preferred_batch_sizes apply
    sequence: Literal["direct", "oldest"] | None = None
    controls: tuple[tuple[str, str], ...] = field(default=(), metadata={"example": "controls: {START: START}"})
    states: tuple[tuple[str, str], ...] = field(default=(), metadata={"example": "states: {STATE_IN: STATE_OUT}"})
    sequence_idle_us: int = 0
    max_candidate_sequences: int | None = None  # oldest: default max_batch_size
    samples: Path | None = None  # real inputs for the run check, verification and warm-up, saved as EXAMPLES_FILE

    def __post_init__(self) -> None:
        for fname, hint in typing.get_type_hints(BuildOptions).items():
            choices = _literal_choices(hint)
            value = getattr(self, fname)
            if choices and value not in choices and value is not None:
                flag = "--" + fname.replace("_", "-")
                raise UsageError(f"{flag} '{value}' is not one of: {', '.join(map(str, choices))}",
                                 f"use {flag} {choices[0]}")
        if self.name is not None:
            check_model_name(self.name)
        if self.max_batch_size is not None and self.max_batch_size < 0:
            raise UsageError(f"--max-batch-size {self.max_batch_size} is negative",
                             "use 0 for a model that does not batch, or a positive size")
        for p in self.preferred_batch_sizes:
            if self.max_batch_size is not None and p > self.max_batch_size:
                raise UsageError(
                    f"preferred batch size {p} is above max batch size {self.max_batch_size}",
                    f"use --preferred-batch-size values up to {self.max_batch_size}, or raise --max-batch-size",
                )
            if p < 1:
                raise UsageError(f"preferred batch size {p} is not positive", "use sizes >= 1")
        if self.preferred_batch_sizes and self.dynamic_batching is False:
            raise UsageError("--preferred-batch-size conflicts with --no-dynamic-batching",
                             "drop one of the two options")
        if self.priority_levels and not 1 <= self.default_priority_level <= self.priority_levels:
            raise UsageError(
                f"default priority level {self.default_priority_level} is outside 1..{self.priority_levels}",
                "set --default-priority-level between 1 and --priority-levels",
            )
        if self.preserve_ordering and self.priority_levels > 1:
            raise UsageError("--preserve-ordering allows only one priority level",
                             "drop --preserve-ordering or --priority-levels")
        if self.accelerator is not None and self.kind == "cpu":
            raise UsageError(f"--accelerator {self.accelerator} needs GPU instances, but --kind is cpu",
                             "add --kind gpu (execution accelerators apply to GPU instances only)")
        if self.atol < 0 or self.rtol < 0:
            raise UsageError("tolerances must be >= 0", "use e.g. --atol 1e-4 --rtol 1e-3")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads} is not positive", "use --threads N with N >= 1")
        _check_sequence_options(self)


def _check_sequence_options(o: BuildOptions) -> None:
    for kind, _ in o.controls:
        control_kind(kind)
    if o.sequence is None:
        if o.controls or o.states or o.sequence_idle_us or o.max_candidate_sequences is not None:
            raise UsageError("control, state and sequence options need sequence batching",
                             "add --sequence direct (or oldest)")
        return
    if o.dynamic_batching:
        raise UsageError("sequence batching and dynamic batching cannot both be enabled (Triton has one scheduler)",
                         "drop --dynamic-batching (a sequence-batched model batches through --sequence oldest)")
    dynamic_only = [flag for flag, used in (
        ("--preserve-ordering", o.preserve_ordering), ("--priority-levels", o.priority_levels),
        ("--max-queue-size", o.max_queue_size), ("--queue-timeout-us", o.queue_timeout_us),
        ("--timeout-action", o.timeout_action != "REJECT"), ("--allow-timeout-override", o.allow_timeout_override),
    ) if used]
    if dynamic_only:
        raise UsageError(f"{dynamic_only[0]} is a dynamic batching option, which a sequence-batched model has not",
                         f"drop {dynamic_only[0]}, or drop --sequence")
    if o.sequence == "direct" and (o.preferred_batch_sizes or o.max_candidate_sequences is not None):
        raise UsageError("--preferred-batch-size and --max-candidate-sequences belong to the oldest strategy",
                         "use --sequence oldest, or drop them")
    if o.response_cache:
        raise UsageError("the response cache cannot be used with sequence batching (a stateful model's outputs "
                         "depend on the sequence)", "drop --response-cache")
    if o.warmup:
        raise UsageError("--warmup cannot warm a sequence-batched model: warm-up requests bypass the sequence "
                         "batcher, so they carry no control or state tensors", "drop --warmup")
    if o.sequence_idle_us < 0 or (o.max_candidate_sequences is not None and o.max_candidate_sequences < 1):
        raise UsageError("--sequence-idle-us must be >= 0 and --max-candidate-sequences >= 1",
                         "e.g. --sequence-idle-us 5000000")


@dataclass(frozen=True)
class BuildResult:
    name: str
    repository: Path
    model_dir: Path
    version: int
    config_path: Path
    config_text: str
    config: ModelConfig  # config_text, parsed (what the reference runners take)
    spec: ModelSpec
    source_kind: SourceKind
    verification: Any = None  # convert.verify.VerificationReport, when a check ran
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repository": str(self.repository),
            "model_dir": str(self.model_dir),
            "version": self.version,
            "config": str(self.config_path),
            "platform": self.spec.platform,
            "max_batch_size": self.spec.max_batch_size,
            "inputs": [t.describe() for t in self.spec.inputs],
            "outputs": [t.describe() for t in self.spec.outputs],
            "source_kind": self.source_kind,
            "sequence_batching": _sequence_data(self.spec.sequence_batching),
            "verification": self.verification.to_dict() if self.verification is not None else None,
            "notes": list(self.notes),
        }


def _sequence_data(sb: SequenceBatching | None) -> dict[str, Any] | None:
    if sb is None:
        return None
    return {"strategy": sb.strategy, "controls": {c.kind: c.tensor for c in sb.controls},
            "states": [{"input": st.input_name, "output": st.output_name} for st in sb.states]}


# ---------------------------------------------------------------- source resolution


def source_kind(source: str) -> SourceKind:
    path = Path(source)
    if path.exists():
        if path.is_dir() or path.suffix == ".onnx":
            return "onnx"
        if path.suffix in TORCHSCRIPT_SUFFIXES or zipfile.is_zipfile(path):
            return "torchscript"
        return "onnx"
    if ":" in source and not source.endswith((".onnx", *TORCHSCRIPT_SUFFIXES)):
        return "factory"
    raise UsageError(f"model file '{source}' does not exist",
                     "check the path, or give a PyTorch factory as module:function")


def default_name(source: str, kind: SourceKind) -> str:
    if kind == "factory":
        module, _, func = source.rpartition(":")
        stem = Path(module).stem if module.endswith(".py") else module.rsplit(".", 1)[-1]
        base = stem if func in ("make_model", "model", "create_model", "build", "factory") else func
    else:
        p = Path(source)
        base = p.parent.name if p.name == "model.onnx" and p.parent.name not in ("", ".", "1") else p.stem
    cleaned = "".join(c if c.isalnum() or c in "_-." else "_" for c in base).strip("._-")
    return cleaned or "model"


# ---------------------------------------------------------------- spec derivation


def _merge_inputs(model_inputs: Sequence[TensorSpec], given: Sequence[TensorSpec], batched: bool,
                  model_desc: str) -> tuple[TensorSpec, ...]:
    """Apply user --input specs to the inputs read from the model, refusing disagreements."""
    by_name = {t.name: t for t in model_inputs}
    for g in given:
        if g.name not in by_name:
            raise UsageError(
                f"--input '{g.name}' does not match any input of {model_desc} "
                f"(its inputs: {', '.join(by_name) or 'none'})",
                "use the model's input names (see them with: tritonops inspect MODEL)",
            )
        m = by_name[g.name]
        if g.dtype != m.dtype:
            raise UsageError(
                f"--input '{g.name}' says {g.dtype.name} but {model_desc} takes {m.dtype.name}",
                f"write --input {g.name}:{m.dtype.name}:... or leave --input out",
            )
        if len(g.dims) != len(m.dims) or any(md not in (-1, gd) for gd, md in zip(g.dims, m.dims, strict=False)):
            shape = ",".join(str(d) for d in m.dims)
            batch_note = " (without the batch dimension)" if batched else ""
            raise UsageError(
                f"--input '{g.name}' has dims [{','.join(str(d) for d in g.dims)}] but {model_desc} "
                f"takes [{shape}]{batch_note}",
                f"write --input {g.name}:{m.dtype.name}:{shape}, or leave --input out",
            )
        by_name[g.name] = replace(m, dims=g.dims, value_range=g.value_range or m.value_range,
                                  optional=g.optional, allow_ragged_batch=g.allow_ragged_batch)
    return tuple(by_name[t.name] for t in model_inputs)


def _batching(opts: BuildOptions, max_batch_size: int) -> DynamicBatching | None:
    if opts.dynamic_batching is False or opts.sequence is not None or max_batch_size == 0:
        return None
    queue = None
    if opts.max_queue_size or opts.queue_timeout_us or opts.timeout_action != "REJECT" or opts.allow_timeout_override:
        queue = QueuePolicy(opts.max_queue_size, opts.queue_timeout_us, opts.timeout_action,
                            opts.allow_timeout_override)
    return DynamicBatching(
        preferred_batch_sizes=opts.preferred_batch_sizes,
        max_queue_delay_us=opts.max_queue_delay_us,
        preserve_ordering=opts.preserve_ordering,
        priority_levels=opts.priority_levels,
        default_priority_level=opts.default_priority_level,
        queue_policy=queue,
    )


def _parameters(opts: BuildOptions, platform: str) -> tuple[tuple[str, str], ...]:
    params = dict(opts.parameters)
    if opts.threads is not None:
        key = "intra_op_thread_count" if platform == "onnxruntime_onnx" else "INTRA_OP_THREAD_COUNT"
        params.setdefault(key, str(opts.threads))
    return tuple(sorted(params.items()))


def _accelerators(opts: BuildOptions) -> tuple[Accelerator, ...]:
    if opts.accelerator is None:
        return ()
    if opts.accelerator == "cuda":
        return (Accelerator("cuda"),)
    # sorted by key, like every parameter list of a spec (a config's map has no order)
    return (Accelerator("tensorrt", (("max_workspace_size_bytes", str(1 << 30)),
                                     ("precision_mode", opts.precision),
                                     ("trt_engine_cache_enable", "1"))),)


def sequence_options(opts: BuildOptions, max_batch_size: int) -> SequenceOptions:
    candidates = 0
    if opts.sequence == "oldest":
        candidates = opts.max_candidate_sequences or max(max_batch_size, 1)
    return SequenceOptions(opts.sequence or "direct", opts.controls, opts.states, opts.sequence_idle_us,
                           opts.max_queue_delay_us, opts.preferred_batch_sizes if opts.sequence == "oldest" else (),
                           candidates)


def make_spec(opts: BuildOptions, name: str, platform: str, max_batch_size: int,
              inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
              sequence: SequenceBatching | None = None) -> ModelSpec:
    if opts.preferred_batch_sizes and max_batch_size == 0:
        raise UsageError("--preferred-batch-size needs a batching model, but this one has max batch size 0",
                         "drop --preferred-batch-size")
    if sequence is not None:
        inputs = without_sequence_tensors(inputs, sequence.tensor_inputs)
        outputs = without_sequence_tensors(outputs, sequence.tensor_outputs)
    return ModelSpec(
        name=name,
        platform=platform,  # type: ignore[arg-type]
        max_batch_size=max_batch_size,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        dynamic_batching=_batching(opts, max_batch_size),
        instance_groups=(InstanceGroup(opts.instances, opts.kind, opts.gpus),),
        response_cache=opts.response_cache,
        warmup=opts.warmup,
        version_policy=opts.version_policy,
        parameters=_parameters(opts, platform),
        accelerators=_accelerators(opts) if platform == "onnxruntime_onnx" else (),
        sequence_batching=sequence,
    )


def resolve_batching(opts: BuildOptions, info: OnnxInfo, model_desc: str) -> int:
    if opts.max_batch_size == 0:
        return 0
    if not info.batchable:
        if opts.max_batch_size:
            fixed = next((t for t in info.inputs + info.outputs if not t.batch_dim_dynamic), None)
            detail = f": {fixed.name} has first dimension {fixed.shape[0] if fixed.shape else 'none'}" if fixed else ""
            raise UsageError(
                f"{model_desc} cannot batch{detail}",
                "use --max-batch-size 0, or export the model with a dynamic first (batch) dimension",
            )
        return 0
    return opts.max_batch_size or DEFAULT_MAX_BATCH_SIZE


def spec_from_onnx(opts: BuildOptions, name: str, info: OnnxInfo, model_desc: str) -> ModelSpec:
    mbs = resolve_batching(opts, info, model_desc)
    inputs, outputs = info.tensor_specs(batched=mbs > 0)
    inputs = _merge_inputs(inputs, opts.inputs, mbs > 0, model_desc)
    sequence = sequence_from_onnx(sequence_options(opts, mbs), info, mbs > 0) if opts.sequence else None
    return make_spec(opts, name, "onnxruntime_onnx", mbs, inputs, outputs, sequence)


# ---------------------------------------------------------------- the build


def build(opts: BuildOptions, progress: Progress | None = None, *, copy: CopyFn = shutil.copy2) -> BuildResult:
    """Build one model into ``opts.repository``. ``copy`` is how files reach the staged version
    directory (tests pass one that fails, to prove a failed build changes nothing)."""
    return build_many([opts], progress, copy=copy)[0]


def build_many(options: Sequence[BuildOptions], progress: Progress | None = None, *,
               copy: CopyFn = shutil.copy2) -> list[BuildResult]:
    """Build several models; every model is converted and verified before any is written."""
    say = reporter(progress)
    names: set[tuple[Path, str]] = set()
    with tempfile.TemporaryDirectory(prefix="tritonops-build-") as scratch, contextlib.ExitStack() as stack:
        results = []
        for i, opts in enumerate(options):
            name = opts.name or default_name(opts.source, source_kind(opts.source))
            check_model_name(name)
            key = (opts.repository.absolute(), name)
            if key in names:
                raise UsageError(f"model '{name}' is built twice", "give each model a distinct name")
            names.add(key)
            work = Path(scratch) / f"{i}-{name}"
            work.mkdir()
            staged = stack.enter_context(stage_model(opts.repository, name, opts.version, copy=copy))
            results.append(build_staged(replace(opts, name=name), staged, work, progress))
        say("writing the repository")
    return results


@dataclass(frozen=True)
class RenderedConfig:
    config: ModelConfig
    text: str


def render_checked(spec: ModelSpec) -> RenderedConfig:
    """A spec's config and its config.pbtxt text, refused unless the text parses back to the same
    config and Triton's rules accept it (``check_spec``)."""
    cfg = render_config(spec)
    text = config_to_text(cfg)
    if parse_config_text(text, "generated config") != cfg:
        raise RepositoryError(f"the generated config.pbtxt of '{spec.name}' does not parse back to the same config",
                              "this is a tritonops bug: please report it with the model")
    problems = check_spec(cfg)
    if problems:
        raise UsageError(f"the resulting config would be refused by Triton: {problems[0]}",
                         "change the build options named above")
    return RenderedConfig(cfg, text)


def write_config(staged: StagedModel, spec: ModelSpec) -> RenderedConfig:
    """Render and check ``spec`` and write it as the staged model's config.pbtxt."""
    rendered = render_checked(spec)
    write_text_file(staged.model_root / "config.pbtxt", rendered.text)
    return rendered


def build_staged(opts: BuildOptions, staged: StagedModel, work: Path, progress: Progress | None = None,
                 ) -> BuildResult:
    """Build one model into a staged model directory (``repository.stage_model``): inspect or
    convert ``opts.source`` in the scratch directory ``work``, verify it, put the model file and
    config.pbtxt in ``staged``. The caller moves the staged directory into the repository."""
    say = reporter(progress)
    kind = source_kind(opts.source)
    name = opts.name or default_name(opts.source, kind)
    fmt = opts.format
    if fmt == "auto":
        fmt = "torchscript" if kind == "torchscript" else "onnx"
    notes: list[str] = []
    report = None
    if opts.sequence is not None and (kind == "torchscript" or fmt == "torchscript"):
        raise UsageError("sequence options are supported for ONNX models", "build the model as ONNX (--format onnx)")
    samples: Samples | None = None
    if kind == "onnx":
        if fmt == "torchscript":
            raise UsageError("an ONNX model cannot be converted to TorchScript",
                             "use --format onnx (or tensorrt), or build from the PyTorch model")
        say(f"inspecting {opts.source}")
        info = inspect_onnx(Path(opts.source))
        desc = f"model '{opts.source}'"
        spec = spec_from_onnx(opts, name, info, desc)
        samples = read_samples(opts.samples, spec)
        say("checking the model runs in onnxruntime" + (f" on the samples of {opts.samples}" if samples else ""))
        report = _smoke_onnx(info.path, spec, opts, samples)
        if fmt == "tensorrt":
            spec = _tensorrt(opts, info.path, spec, staged, say, notes)
        else:
            _add_onnx(staged, info)
    else:
        module = _load_torch(opts, kind, say)
        if not opts.inputs:
            flag = "--input" if kind == "torchscript" else "--example-shape"
            raise UsageError(
                f"building from {'a TorchScript file' if kind == 'torchscript' else 'a PyTorch factory'} "
                "needs the input names, types and shapes",
                f"give {flag} NAME:DTYPE:DIMS for each input, e.g. {flag} x:FP32:3,224,224",
            )
        mbs = DEFAULT_MAX_BATCH_SIZE if opts.max_batch_size is None else opts.max_batch_size
        if fmt in ("onnx", "tensorrt"):
            spec, report, onnx_path, samples = _torch_to_onnx(opts, module, name, mbs, work, say, notes)
            if fmt == "tensorrt":
                spec = _tensorrt(opts, onnx_path, spec, staged, say, notes)
            else:
                _add_onnx(staged, inspect_onnx(onnx_path))
        else:
            spec, report, pt_path, samples = _torch_to_torchscript(opts, module, name, mbs, work, say, kind)
            staged.add_file(pt_path, "model.pt")

    if report is not None:
        _raise_if_failed(report, samples)
    if samples is not None:
        spec = keep_samples(staged, work, spec, samples, notes)
    rendered = write_config(staged, spec)
    model_dir = opts.repository.absolute() / name
    return BuildResult(
        name=name, repository=opts.repository, model_dir=model_dir, version=staged.version,
        config_path=model_dir / "config.pbtxt", config_text=rendered.text, config=rendered.config, spec=spec,
        source_kind=kind, verification=report, notes=tuple(notes),
    )


def _raise_if_failed(report: Any, samples: Samples | None) -> None:
    """A model that cannot run on generated data says so, and asks for real inputs."""
    failed_run = next((r for r in report.rows if not r.ok and r.output == "*"), None)
    if failed_run is not None and samples is None:
        log.debug("the run check failed on generated data: %s", failed_run.problem)
        raise verify.VerificationError(
            f"the model refused the generated example data: {failed_run.problem}",
            "give real inputs with --samples FILE (.npz with one array per input, a KServe .json request, "
            "a .txt file with one line per sample, or images)", report)
    verify.raise_if_failed(report)


def _add_onnx(staged: StagedModel, info: OnnxInfo) -> None:
    if info.external_data:
        # Triton's layout for external data: <version>/model.onnx/{model.onnx, <data files>}
        staged.add_file(info.path, "model.onnx/model.onnx")
        for loc in info.external_data:
            staged.add_file(info.path.parent / loc, f"model.onnx/{loc}")
    else:
        staged.add_file(info.path, "model.onnx")


def _stateful(run: Runner, spec: ModelSpec) -> Runner:
    """A runner fed the control and state tensors a sequence's first request gets."""
    sb = spec.sequence_batching
    return run if sb is None else with_sequence_feed(run, sb, spec.max_batch_size > 0)


def _smoke_onnx(path: Path, spec: ModelSpec, opts: BuildOptions, samples: Samples | None) -> Any:
    """No conversion happened, so verification means: onnxruntime loads the model and produces
    outputs of the declared shapes (state outputs included) at two batch sizes."""
    run = _stateful(reference.runner_onnxruntime(path), spec)
    outputs = spec.outputs
    if spec.sequence_batching is not None:
        outputs += state_output_specs(spec.sequence_batching, spec.max_batch_size > 0)
    sizes, feeds = sample_feeds(spec, samples) if samples is not None else (_batch_sizes(spec.max_batch_size), None)
    return verify.verify_shapes(run, spec.inputs, outputs, sizes, seed=opts.seed, feeds=feeds)


def _batch_sizes(max_batch_size: int) -> tuple[int | None, ...]:
    if max_batch_size == 0:
        return (None,)
    return (1, min(max_batch_size, 3)) if max_batch_size > 1 else (1,)


def _load_torch(opts: BuildOptions, kind: SourceKind, say: Progress) -> Any:
    if kind == "factory":
        say(f"calling {opts.source}")
        return torch_export.load_factory(opts.source)
    say(f"loading {opts.source}")
    return torch_export.load_torchscript(Path(opts.source))


def _torch_to_onnx(opts: BuildOptions, module: Any, name: str, mbs: int, work: Path, say: Progress,
                   notes: list[str]) -> tuple[ModelSpec, Any, Path, Samples | None]:
    say("exporting to ONNX")
    out = work / "onnx" / "model.onnx"
    out.parent.mkdir()
    exported = torch_export.export_onnx(module, opts.inputs, opts.outputs or None, out, max_batch_size=mbs)
    notes.extend(exported.notes)
    onnx_path = exported.path
    info = inspect_onnx(onnx_path)
    spec = spec_from_onnx(replace(opts, max_batch_size=mbs), name, info, f"the exported model '{name}'")
    samples = read_samples(opts.samples, spec)
    sizes, feeds = sample_feeds(spec, samples) if samples is not None else (_batch_sizes(spec.max_batch_size), None)
    say("verifying the ONNX model against PyTorch")
    report = verify.verify(
        # every output of the module, the state outputs too (the spec leaves those out)
        _stateful(reference.runner_torch(module, [t.name for t in opts.inputs], [t.name for t in info.outputs]),
                  spec),
        _stateful(reference.runner_onnxruntime(onnx_path), spec),
        spec.inputs, batch_sizes=sizes, atol=opts.atol, rtol=opts.rtol, seed=opts.seed, feeds=feeds,
    )
    return spec, report, onnx_path, samples


def _torch_to_torchscript(opts: BuildOptions, module: Any, name: str, mbs: int, work: Path,
                          say: Progress, kind: SourceKind) -> tuple[ModelSpec, Any, Path, Samples | None]:
    out = work / "model.pt"
    if kind == "torchscript":
        shutil.copy2(opts.source, out)
        ts_inputs = opts.inputs
    else:
        say("converting to TorchScript")
        exported = torch_export.export_torchscript(module, opts.inputs, out, max_batch_size=mbs)
        out = exported.path
        ts_inputs = tuple(replace(t, name=f"INPUT__{i}") for i, t in enumerate(opts.inputs))
    say("verifying the TorchScript model")
    candidate = reference.runner_torchscript(out, [t.name for t in ts_inputs])
    outputs = _observe_outputs(candidate, ts_inputs, mbs, opts.seed)
    spec = make_spec(opts, name, "pytorch_libtorch", mbs, ts_inputs, outputs)
    if kind == "factory":
        original = reference.runner_torch(module, [t.name for t in ts_inputs], [t.name for t in outputs])
    else:
        original = candidate  # nothing was converted: the check is that it runs at each batch size
    samples = read_samples(opts.samples, spec)
    sizes, feeds = sample_feeds(spec, samples) if samples is not None else (_batch_sizes(mbs), None)
    report = verify.verify(original, candidate, spec.inputs, batch_sizes=sizes,
                           atol=opts.atol, rtol=opts.rtol, seed=opts.seed, feeds=feeds)
    return spec, report, out, samples


def _observe_outputs(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                     inputs: Sequence[TensorSpec], mbs: int, seed: int) -> tuple[TensorSpec, ...]:
    """Output names, types and dims from two runs with different batch and variable sizes:
    dims that change between the runs are variable (-1)."""
    batched = mbs > 0
    rng = np.random.default_rng(seed)
    first = run(make_inputs(inputs, 1 if batched else None, rng, dim_default=3))
    second = run(make_inputs(inputs, min(2, mbs) if batched else None, rng, dim_default=5))
    specs = []
    for out_name, a in first.items():
        b = second[out_name]
        sa, sb = a.shape[1:] if batched else a.shape, b.shape[1:] if batched else b.shape
        if len(sa) != len(sb):
            raise ModelError(f"output '{out_name}' changes rank between runs",
                             "the model's outputs must have a fixed rank")
        dims = tuple(x if x == y else -1 for x, y in zip(sa, sb, strict=True))
        if not dims:
            specs.append(TensorSpec(out_name, from_numpy(a.dtype), (1,), reshape=() if batched else None))
        else:
            specs.append(TensorSpec(out_name, from_numpy(a.dtype), dims))
    return tuple(specs)


def _tensorrt(opts: BuildOptions, onnx_path: Path, spec: ModelSpec, staged: StagedModel, say: Progress,
              notes: list[str]) -> ModelSpec:
    say("building a TensorRT plan")
    plan = staged.version_dir / "model.plan"
    provenance = tensorrt.build_plan(onnx_path, plan, spec.inputs, spec.max_batch_size, fp16=opts.precision == "FP16")
    if provenance is not None:
        write_text_file(staged.model_root / "provenance.json", json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    notes.append("TensorRT plans are tied to the TensorRT version and GPU they were built on")
    return replace(spec, platform="tensorrt_plan", parameters=(), accelerators=())

