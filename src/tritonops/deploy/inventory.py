"""What a model repository holds, as far as deploying it is concerned: models, versions, instance
kinds, backends, sizes, ensemble dependencies and content hashes. Manifests size their resources
from it; roll-outs take their load order and deploy record from it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from tritonops.errors import UsageError
from tritonops.names import check_model_name
from tritonops.paths import shown
from tritonops.pbtxt import ModelConfig, read_config
from tritonops.platforms import config_backend
from tritonops.repository import version_dirs


@dataclass(frozen=True)
class ModelInfo:
    name: str
    platform: str  # as configured ("" for backend-only configs)
    backend: str  # "" for ensembles
    versions: tuple[int, ...]  # version directories on disk
    served_versions: tuple[int, ...]  # the ones the config's version_policy selects
    cpu_instances: int
    gpu_instances: int
    gpus_needed: int  # GPUs the instance groups name explicitly (max id + 1), at least 1 with GPU instances
    auto_instances: int  # KIND_AUTO: GPU where there is one, CPU otherwise
    bytes: int
    composing: tuple[str, ...]  # models an ensemble calls
    config: ModelConfig = field(compare=False, repr=False)

    @property
    def is_ensemble(self) -> bool:
        return self.platform == "ensemble"

    @property
    def python_instances(self) -> int:
        """Instances that run in a Python backend stub process (each needs /dev/shm)."""
        return self.cpu_instances + self.gpu_instances + self.auto_instances if self.backend == "python" else 0


@dataclass(frozen=True)
class RepositoryInventory:
    path: Path
    models: tuple[ModelInfo, ...]

    @property
    def total_bytes(self) -> int:
        return sum(m.bytes for m in self.models)

    @property
    def needs_gpu(self) -> bool:
        return any(m.gpu_instances for m in self.models)

    @property
    def gpus_needed(self) -> int:
        return max((m.gpus_needed for m in self.models), default=0)

    @property
    def python_instances(self) -> int:
        return sum(m.python_instances for m in self.models)

    def model(self, name: str) -> ModelInfo:
        for m in self.models:
            if m.name == name:
                return m
        raise UsageError(f"model '{name}' is not in {self.path}",
                         f"models there: {', '.join(m.name for m in self.models) or '(none)'}")

    def load_order(self, names: Iterable[str] | None = None) -> list[str]:
        """``names`` (default: all) plus the models they call, composing models before ensembles."""
        by_name = {m.name: m for m in self.models}
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in order:
                return
            if name in visiting:
                raise UsageError(f"ensemble cycle: {' -> '.join((*chain, name))}", "remove the cycle from the steps")
            if name not in by_name:
                raise UsageError(f"model '{chain[-1]}' calls '{name}', which is not in {self.path}",
                                 f"add '{name}' to the repository")
            visiting.add(name)
            for dep in by_name[name].composing:
                visit(dep, (*chain, name))
            visiting.discard(name)
            order.append(name)

        for n in names if names is not None else sorted(by_name):
            visit(n, ())
        return order


def policy_versions(cfg: ModelConfig, versions: list[int]) -> list[int]:
    """The versions of ``versions`` that ``cfg.version_policy`` serves (Triton's rule)."""
    which = cfg.version_policy.WhichOneof("policy_choice") if cfg.HasField("version_policy") else None
    if which == "all":
        return list(versions)
    if which == "specific":
        wanted = set(cfg.version_policy.specific.versions)
        return [v for v in versions if v in wanted]
    n = cfg.version_policy.latest.num_versions if which == "latest" else 1
    return list(versions[-max(n, 1):])


def _instances(cfg: ModelConfig) -> tuple[int, int, int, int]:
    if cfg.platform == "ensemble":
        return 0, 0, 0, 0
    if not cfg.instance_group:
        # Triton's default: one instance per GPU where there are GPUs, else one CPU instance.
        return 0, 0, 0, 1
    cpu = gpu = auto = 0
    gpus_needed = 0
    for g in cfg.instance_group:
        count = g.count or 1
        kind = mc.ModelInstanceGroup.Kind.Name(g.kind)  # 0 is KIND_AUTO
        if kind == "KIND_GPU":
            ids = list(g.gpus)
            gpu += count * max(len(ids), 1)
            gpus_needed = max(gpus_needed, (max(ids) + 1) if ids else 1)
        elif kind == "KIND_AUTO":
            auto += count
        else:  # KIND_CPU, KIND_MODEL: no device of their own to ask the scheduler for
            cpu += count
    return cpu, gpu, auto, gpus_needed


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def read_inventory(repository: Path) -> RepositoryInventory:
    """Read every model of ``repository`` (config.pbtxt must parse; run ``tritonops check`` for the rest)."""
    if not repository.exists():
        raise UsageError(f"repository '{repository}' does not exist", "give the directory that holds the models")
    if not repository.is_dir():
        raise UsageError(f"repository '{repository}' is not a directory", "give the directory that holds the models")
    models = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            check_model_name(model_dir.name)
        except UsageError:
            raise UsageError(f"invalid model directory name {shown(model_dir.name)} in {repository}",
                             "rename the model directory: letters, digits, '_', '-' and '.' only") from None
        config_path = model_dir / "config.pbtxt"
        if not config_path.exists():
            raise UsageError(f"{model_dir.name}/config.pbtxt is missing in {repository}",
                             f"write one, e.g. with: tritonops build MODEL --name {model_dir.name}")
        cfg = read_config(config_path)
        versions = version_dirs(model_dir)
        cpu, gpu, auto, gpus_needed = _instances(cfg)
        composing = tuple(dict.fromkeys(s.model_name for s in cfg.ensemble_scheduling.step))
        backend = config_backend(cfg, [model_dir / str(v) for v in reversed(versions)])
        models.append(ModelInfo(
            name=model_dir.name, platform=cfg.platform, backend=backend,
            versions=tuple(versions), served_versions=tuple(policy_versions(cfg, versions)),
            cpu_instances=cpu, gpu_instances=gpu, gpus_needed=gpus_needed, auto_instances=auto,
            bytes=_dir_bytes(model_dir), composing=composing, config=cfg,
        ))
    if not models:
        raise UsageError(f"repository '{repository}' holds no models", "build one first: tritonops build MODEL")
    return RepositoryInventory(repository.absolute(), tuple(models))


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every regular file under ``root``, keyed by its path relative to ``root``."""
    result: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h = hashlib.sha256()
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            result[p.relative_to(root).as_posix()] = h.hexdigest()
    return result


def tree_sha256(hashes: dict[str, Any]) -> str:
    """One digest for a set of file hashes (stable: sorted by path)."""
    h = hashlib.sha256()
    for rel in sorted(hashes):
        h.update(f"{rel}\0{hashes[rel]}\n".encode())
    return h.hexdigest()
