"""The search space of ``tritonops tune``: which configs of a model are worth measuring.

The space is derived from the model (what it allows: batching, its max_batch_size, a TensorRT
profile's limit, its backend) and the machine (CPU cores), and can be narrowed or widened by a YAML
file read through specfile.py (unknown fields and impossible ranges are one line with file:line).

A :class:`Candidate` is one point of the space for one model; :func:`apply_candidate` turns it into a
``ModelConfig`` (the model's own config with the candidate's fields set, through protobuf).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from tritonops.errors import UsageError
from tritonops.pbtxt import ModelConfig
from tritonops.specfile import Where, check_keys, coerce, from_mapping, read_yaml_file, where_in

THREADS_PARAMETER = "intra_op_thread_count"
MAX_DEFAULT_BATCH = 64  # powers of two up to this when the model itself sets no smaller limit
DEFAULT_QUEUE_DELAYS_US = (0, 500)
GPU_INSTANCES_PER_DEVICE = 2  # more instances per GPU rarely pay for their memory


def machine_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def is_onnx(cfg: ModelConfig) -> bool:
    return cfg.platform == "onnxruntime_onnx" or cfg.backend == "onnxruntime"


# Candidate.kind: model_config.proto's instance kinds, lower case without KIND_.
INSTANCE_KINDS = ("auto", "gpu", "cpu", "model")
DEVICE_KINDS = ("gpu", "auto")  # the kinds whose groups may list gpus
KIND_TAG = {"cpu": "i", "gpu": "g", "auto": "a", "model": "m"}


def kind_name(kind: int) -> str:
    return mc.ModelInstanceGroup.Kind.Name(kind).removeprefix("KIND_").lower()


def powers_of_two(limit: int) -> tuple[int, ...]:
    out, v = [], 1
    while v <= limit:
        out.append(v)
        v *= 2
    return tuple(out)


@dataclass(frozen=True)
class Candidate:
    """One config of one model. ``max_batch_size`` 0 means the model does not batch; ``threads`` 0
    leaves ONNX Runtime's intra-op thread count as the config has it; ``preferred`` are the dynamic
    batcher's preferred batch sizes (empty: none). ``kind`` is the instance kind the model is served
    with (``gpu``: ``instances`` is the count per device, on ``gpus``; empty: every GPU the server sees);
    it is where the model runs, not a value the search varies."""

    instances: int
    max_batch_size: int
    dynamic_batching: bool
    queue_delay_us: int = 0
    threads: int = 0
    preferred: tuple[int, ...] = ()
    kind: str = "cpu"
    gpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in INSTANCE_KINDS:
            raise UsageError(f"instance kind '{self.kind}' is not one of {', '.join(INSTANCE_KINDS)}",
                             "use --instance-kind cpu or gpu")

    @property
    def key(self) -> str:
        """A short stable name: ``i2_b8_db_d500_t1`` (``nodb`` without dynamic batching; ``g2_gpu0-1``:
        two KIND_GPU instances on each of GPUs 0 and 1)."""
        parts = [f"{KIND_TAG[self.kind]}{self.instances}"]
        if self.gpus:
            parts.append("gpu" + "-".join(map(str, self.gpus)))
        parts.append(f"b{self.max_batch_size}")
        if self.dynamic_batching:
            parts += ["db", f"d{self.queue_delay_us}"]
            if self.preferred:
                parts.append("p" + "-".join(map(str, self.preferred)))
        else:
            parts.append("nodb")
        if self.threads:
            parts.append(f"t{self.threads}")
        return "_".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"preferred": list(self.preferred), "gpus": list(self.gpus), "key": self.key}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        return cls(instances=int(d["instances"]), max_batch_size=int(d["max_batch_size"]),
                   dynamic_batching=bool(d["dynamic_batching"]), queue_delay_us=int(d.get("queue_delay_us", 0)),
                   threads=int(d.get("threads", 0)), preferred=tuple(int(p) for p in d.get("preferred", ())),
                   kind=str(d.get("kind", "cpu")), gpus=tuple(int(g) for g in d.get("gpus", ())))

    def normalized(self) -> Candidate:
        """Fields that mean nothing for this combination dropped, so equal configs have one key."""
        c = self
        if not c.dynamic_batching:
            c = replace(c, queue_delay_us=0, preferred=())
        if c.max_batch_size == 0:
            c = replace(c, dynamic_batching=False, queue_delay_us=0, preferred=())
        if c.kind not in DEVICE_KINDS:
            c = replace(c, gpus=())
        return replace(c, preferred=tuple(p for p in c.preferred if p <= max(c.max_batch_size, 1)),
                       gpus=tuple(sorted(set(c.gpus))))

    def placed(self, kind: str | None) -> Candidate:
        """This candidate served as ``kind`` instances (``--instance-kind``; None: as it is)."""
        return self if kind is None or kind == self.kind else replace(self, kind=kind).normalized()


def _placement(cfg: ModelConfig) -> tuple[str, int, tuple[int, ...]]:
    """(kind, instances, gpus) of a config's instance groups. GPU groups place ``count`` instances on
    each device they list (a group without ``gpus``: on every GPU), so their count is per device: the
    most any listed device gets. A config without groups is KIND_AUTO with one instance."""
    groups = list(cfg.instance_group)
    if not groups:
        return "auto", 1, ()
    device = [g for g in groups if g.kind in (mc.ModelInstanceGroup.KIND_GPU, mc.ModelInstanceGroup.KIND_AUTO)
              and (g.kind == mc.ModelInstanceGroup.KIND_GPU or g.gpus)]
    if not device:
        return kind_name(groups[0].kind), sum(max(g.count, 1) for g in groups), ()
    everywhere = sum(max(g.count, 1) for g in device if not g.gpus)
    per: dict[int, int] = {}
    for g in device:
        for d in g.gpus:
            per[d] = per.get(d, 0) + max(g.count, 1)
    count = max((n + everywhere for n in per.values()), default=everywhere)
    return kind_name(device[0].kind), count, tuple(sorted(per))


def candidate_of(cfg: ModelConfig) -> Candidate:
    """The candidate a config already is (the starting point of the search)."""
    kind, count, gpus = _placement(cfg)
    threads = cfg.parameters[THREADS_PARAMETER].string_value if THREADS_PARAMETER in cfg.parameters else ""
    db = cfg.HasField("dynamic_batching")
    return Candidate(
        instances=count, max_batch_size=int(cfg.max_batch_size), dynamic_batching=db,
        queue_delay_us=int(cfg.dynamic_batching.max_queue_delay_microseconds) if db else 0,
        threads=int(threads) if threads.isdigit() else 0,
        preferred=tuple(int(p) for p in cfg.dynamic_batching.preferred_batch_size) if db else (),
        kind=kind, gpus=gpus,
    ).normalized()


def apply_candidate(cfg: ModelConfig, cand: Candidate) -> ModelConfig:
    """``cfg`` with the candidate's instances (of the candidate's kind, on its gpus), batching and
    threads (a copy; protobuf, no text). The first instance group's other fields (its name, rate
    limiter, host policy) are kept."""
    new = copy.deepcopy(cfg)
    new.max_batch_size = cand.max_batch_size
    g = mc.ModelInstanceGroup()
    if cfg.instance_group:
        g.CopyFrom(cfg.instance_group[0])
    del new.instance_group[:]
    g.count = cand.instances
    g.kind = mc.ModelInstanceGroup.Kind.Value(f"KIND_{cand.kind.upper()}")
    del g.gpus[:]
    g.gpus.extend(cand.gpus if cand.kind in DEVICE_KINDS else ())
    new.instance_group.append(g)
    if cand.dynamic_batching and cand.max_batch_size > 0:
        new.dynamic_batching.max_queue_delay_microseconds = cand.queue_delay_us
        del new.dynamic_batching.preferred_batch_size[:]
        new.dynamic_batching.preferred_batch_size.extend(cand.preferred)
    else:
        new.ClearField("dynamic_batching")
    if cand.threads:
        new.parameters[THREADS_PARAMETER].string_value = str(cand.threads)
    return new


@dataclass(frozen=True)
class ModelSpace:
    """The values to try for one model; the grid is their product (after normalization)."""

    instances: tuple[int, ...]
    max_batch_sizes: tuple[int, ...]
    dynamic_batching: tuple[bool, ...] = (True,)
    queue_delays_us: tuple[int, ...] = DEFAULT_QUEUE_DELAYS_US
    threads: tuple[int, ...] = (0,)
    preferred_batch_sizes: bool = False  # also try preferred = [max_batch_size]
    # Where every candidate runs (not searched): the model's instance kind, for GPUs its devices.
    kind: str = "cpu"
    gpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("instances", "max_batch_sizes", "dynamic_batching", "queue_delays_us", "threads"):
            if not getattr(self, name):
                raise UsageError(f"{name} is empty", f"give at least one value for {name}")
        if any(v < 1 for v in self.instances):
            raise UsageError("instances must be >= 1", "e.g. instances: [1, 2]")
        if any(v < 0 for v in self.max_batch_sizes):
            raise UsageError("max_batch_sizes must be >= 0", "e.g. max_batch_sizes: [4, 8, 16]")
        if any(v < 0 for v in self.queue_delays_us):
            raise UsageError("queue_delays_us must be >= 0", "e.g. queue_delays_us: [0, 500]")
        if any(v < 0 for v in self.threads):
            raise UsageError("threads must be >= 0 (0: as the config has it)", "e.g. threads: [1, 2]")

    def values(self) -> dict[str, tuple[Any, ...]]:
        """The dimensions coordinate descent walks, in the order it walks them."""
        pref: tuple[bool, ...] = (False, True) if self.preferred_batch_sizes else (False,)
        return {"instances": self.instances, "max_batch_size": self.max_batch_sizes,
                "dynamic_batching": self.dynamic_batching, "queue_delay_us": self.queue_delays_us,
                "threads": self.threads, "preferred": pref}

    def grid(self) -> list[Candidate]:
        seen: dict[str, Candidate] = {}
        for i in self.instances:
            for b in self.max_batch_sizes:
                for db in self.dynamic_batching:
                    for d in self.queue_delays_us:
                        for t in self.threads:
                            for p in self.values()["preferred"]:
                                c = Candidate(i, b, db, d, t, (b,) if p and b > 0 else (), self.kind,
                                              self.gpus).normalized()
                                seen.setdefault(c.key, c)
        return list(seen.values())

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def model_limit(cfg: ModelConfig) -> int:
    """The largest max_batch_size the model allows: a TensorRT plan's profile is fixed at build time
    (its config's max_batch_size), other batching models go up to MAX_DEFAULT_BATCH."""
    if cfg.max_batch_size == 0:
        return 0
    if cfg.platform == "tensorrt_plan" or cfg.backend == "tensorrt":
        return int(cfg.max_batch_size)
    return max(int(cfg.max_batch_size), MAX_DEFAULT_BATCH)


def derive_space(cfg: ModelConfig, cpus: int | None = None, kind: str | None = None) -> ModelSpace:
    """The default space of a model on this machine; ``kind`` (``--instance-kind``) replaces the
    model's instance kind. GPU instances are counted per device, on the devices the config lists."""
    cpus = cpus or machine_cpus()
    start = candidate_of(cfg).placed(kind)
    limit = model_limit(cfg)
    if limit == 0:
        batches: tuple[int, ...] = (0,)
    else:
        batches = tuple(sorted({*powers_of_two(limit), start.max_batch_size}))
        batches = tuple(b for b in batches if b >= min(4, batches[-1])) or batches  # tiny batches rarely win
    gpu = start.kind == "gpu"
    instances = tuple(range(1, (GPU_INSTANCES_PER_DEVICE if gpu else max(cpus, 1)) + 1))
    threads: tuple[int, ...] = (0,)
    if is_onnx(cfg) and not gpu:
        threads = tuple(sorted({1, *powers_of_two(cpus)}))
    return ModelSpace(instances=instances, max_batch_sizes=batches,
                      dynamic_batching=(True, False) if limit else (False,),
                      queue_delays_us=DEFAULT_QUEUE_DELAYS_US if limit else (0,), threads=threads,
                      kind=start.kind, gpus=start.gpus)


def check_space(space: ModelSpace, cfg: ModelConfig, where: str) -> None:
    """Values the model cannot take: batching on a model that does not batch, above a plan's profile."""
    limit = model_limit(cfg)
    if limit == 0 and any(b > 0 for b in space.max_batch_sizes):
        raise UsageError(f"{where}: max_batch_sizes {list(space.max_batch_sizes)}: model '{cfg.name}' does not "
                         "batch (max_batch_size 0)", "use max_batch_sizes: [0]")
    if limit and any(b == 0 for b in space.max_batch_sizes):
        raise UsageError(f"{where}: max_batch_sizes: 0 would turn batching off for '{cfg.name}', whose inputs "
                         "have a batch dimension", "use values >= 1")
    too_big = [b for b in space.max_batch_sizes if limit and b > limit]
    if too_big:
        raise UsageError(f"{where}: max_batch_sizes {too_big[0]} is above what '{cfg.name}' allows ({limit})",
                         f"use values up to {limit}")
    if space.threads != (0,) and not is_onnx(cfg):
        raise UsageError(f"{where}: threads: '{cfg.name}' is not an ONNX Runtime model",
                         "remove threads: (it sets intra_op_thread_count)")


# ---------------------------------------------------------------- the YAML file


@dataclass(frozen=True)
class SpaceOverride:
    """One model's entry in the space file; a field left out keeps the derived values."""

    instances: tuple[int, ...] | None = field(default=None, metadata={"example": "[1, 2]", "minimum": 1})
    max_batch_sizes: tuple[int, ...] | None = field(default=None, metadata={"example": "[4, 8, 16]", "minimum": 0})
    dynamic_batching: tuple[bool, ...] | None = field(default=None, metadata={"example": "[true, false]"})
    queue_delays_us: tuple[int, ...] | None = field(default=None, metadata={"example": "[0, 500]", "minimum": 0})
    threads: tuple[int, ...] | None = field(default=None, metadata={"example": "[1, 2]", "minimum": 0})
    preferred_batch_sizes: bool | None = None


SPACE_FILE_KEYS = ("models", "concurrency")


@dataclass(frozen=True)
class SpaceFile:
    path: Path
    overrides: Mapping[str, SpaceOverride]
    where: Mapping[str, Where]
    concurrency: tuple[int, ...] | None = None


def read_space_file(path: Path) -> SpaceFile:
    """``models: {NAME: {instances: [...], ...}}`` and an optional ``concurrency: [...]``."""
    data = read_yaml_file(path, "search-space file")
    top = where_in(path, data)
    if not isinstance(data, dict):
        raise top.error("expected a mapping with models:", "e.g. models: {mlp: {instances: [1, 2]}}")
    check_keys(top, data, SPACE_FILE_KEYS)
    overrides: dict[str, SpaceOverride] = {}
    wheres: dict[str, Where] = {}
    models = data.get("models", {})
    at = top.key("models", data)
    if not isinstance(models, dict):
        raise at.error("expected a mapping of model name -> fields", "e.g. models: {mlp: {instances: [1, 2]}}")
    for name, value in models.items():
        w = at.key(str(name), models)
        overrides[str(name)] = from_mapping(SpaceOverride, value, w)
        wheres[str(name)] = w
    concurrency = None
    if "concurrency" in data:
        w = top.key("concurrency", data)
        concurrency = coerce(data["concurrency"], tuple[int, ...], w, {"minimum": 1, "example": "[1, 4, 16]"})
        if not concurrency:
            raise w.error("concurrency is empty", "e.g. concurrency: [1, 4, 16]")
    return SpaceFile(path, overrides, wheres, concurrency)


def check_space_models(spaces: SpaceFile, tuned: Sequence[str]) -> None:
    """Every model the file names is one this run tunes: a misspelt name (``tokenizer`` for
    ``text_embedding_tokenizer``) would otherwise be ignored and the whole derived grid searched."""
    for name, where in spaces.where.items():
        if name not in tuned:
            raise where.error(f"model '{name}' is not tuned in this run",
                              f"name one of: {', '.join(tuned)} (an ensemble's composing models by their own names)")


def space_for(cfg: ModelConfig, spaces: SpaceFile | None, cpus: int | None = None, *,
              ensemble_batch: int = 0, kind: str | None = None) -> ModelSpace:
    """The derived space with the file's fields for this model laid over it, checked against the model.
    ``ensemble_batch``: the max_batch_size of the ensemble that calls this model, which no step may go below;
    ``kind``: the instance kind to tune it as (``--instance-kind``; None: the model's own)."""
    base = derive_space(cfg, cpus, kind)
    if ensemble_batch:
        kept = tuple(b for b in base.max_batch_sizes if b >= ensemble_batch) or (ensemble_batch,)
        base = replace(base, max_batch_sizes=kept)
    if spaces is None or cfg.name not in spaces.overrides:
        return base
    o = spaces.overrides[cfg.name]
    where = spaces.where[cfg.name]
    changes = {f.name: getattr(o, f.name) for f in fields(o) if getattr(o, f.name) is not None}
    try:
        space = replace(base, **changes)
    except UsageError as e:
        raise where.wrap(e) from None
    check_space(space, cfg, str(where))
    low = [b for b in space.max_batch_sizes if b < ensemble_batch]
    if low:
        raise UsageError(f"{where}: max_batch_sizes {low[0]} is below the calling ensemble's max_batch_size "
                         f"{ensemble_batch}", f"use values >= {ensemble_batch}")
    return space


def fingerprint(spaces: Mapping[str, ModelSpace], extra: Mapping[str, Any]) -> str:
    """What a journal was measured over: resuming with another space or objective is refused."""
    text = json.dumps({"spaces": {k: v.to_dict() for k, v in sorted(spaces.items())}, **extra}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
