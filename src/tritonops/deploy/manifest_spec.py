"""What ``tritonops deploy --target`` takes and gives: the manifest options (validated at
construction), the sizing of a deployment from its repository, and the result; the constants the
manifests share (ports, mount point, the admin-key variable)."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from tritonops.deploy.inventory import RepositoryInventory
from tritonops.errors import UsageError

SCHEMA = "tritonops.deploy.manifests/1"
Target = Literal["k8s", "kserve", "compose"]
Monitor = Literal["podmonitor", "servicemonitor", "none"]
TARGETS: tuple[str, ...] = get_args(Target)
MONITORS: tuple[str, ...] = get_args(Monitor)

TRITON_UID = 1000  # user `triton-server` in NVIDIA's tritonserver images
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
MODELS_MOUNT = "/models"
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
QUEUE_METRIC = "triton_avg_queue_time_us"  # what the metrics adapter rule (manifests.adapter_rules) publishes

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Docker's reference grammar (distribution/reference), without the parts nobody uses.
_IMAGE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_CPU = re.compile(r"^(?:[0-9]+(?:\.[0-9]{1,3})?|[0-9]+m)$")
_BYTES = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
_OBJECT_STORE = re.compile(r"^(s3|gs|as)://[^\s]+$")
MI, GI = 1 << 20, 1 << 30


def parse_bytes(value: str, what: str) -> int:
    m = _BYTES.fullmatch(value)
    if not m:
        raise UsageError(f"{what} '{printable(value)}' is not a size", "write it like 512Mi, 4Gi or 2G")
    return int(m.group(1)) * _UNITS[m.group(2)]


def mebibytes(n: int) -> str:
    return f"{max(1, math.ceil(n / MI))}Mi"


def gibibytes(n: int) -> str:
    return f"{max(1, math.ceil(n / GI))}Gi"


def millicores(cpu: str) -> int:
    return int(cpu[:-1]) if cpu.endswith("m") else round(float(cpu) * 1000)


def _check_dns(value: str, what: str, flag: str) -> None:
    if len(value) > 50 or not _DNS_LABEL.fullmatch(value):
        raise UsageError(
            f"{what} '{printable(value)}' is not a valid Kubernetes name",
            f"use lower-case letters, digits and '-', starting with a letter, at most 50 characters: {flag} triton",
        )


@dataclass(frozen=True)
class ManifestOptions:
    repository: Path
    target: Target
    image: str
    out: Path = Path("deploy")
    name: str = "triton"
    namespace: str | None = None
    storage: str | None = None  # None: a new PVC; "pvc:CLAIM[/sub/dir]"; "s3://…", "gs://…", "as://…"
    storage_secret: str | None = None  # Secret with object-storage credentials
    storage_size: str | None = None  # size of the new PVC (default: from the repository)
    storage_class: str | None = None
    gpus: int | None = None  # default: 1 when a model has KIND_GPU instances
    cpu: str | None = None  # CPU request (default: from the instance counts)
    memory: str | None = None  # memory request and limit (default: from the model sizes)
    shm_size: str | None = None  # /dev/shm (default: from the Python-backend instances)
    replicas: int = 1  # minimum replicas
    max_replicas: int = 3
    cpu_target_percent: int = 70
    queue_time_target_us: int | None = None  # also scale on average queue time (needs a metrics adapter)
    monitor: Monitor = "podmonitor"
    allow_model_control: bool = False
    bind_address: str = "127.0.0.1"  # compose: where the published ports listen
    writable_root: bool = False  # leave the container's root filesystem writable
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise UsageError(f"unknown target '{self.target}'", f"choose one of: {', '.join(TARGETS)}")
        if self.monitor not in MONITORS:
            raise UsageError(f"unknown monitor '{self.monitor}'", f"choose one of: {', '.join(MONITORS)}")
        if not _IMAGE.fullmatch(self.image):
            raise UsageError(f"image '{printable(self.image)}' is not a valid image reference",
                             "give one like nvcr.io/nvidia/tritonserver:24.08-py3")
        _check_dns(self.name, "name", "--name")
        if self.namespace is not None:
            _check_dns(self.namespace, "namespace", "--namespace")
        if self.storage_secret is not None:
            _check_dns(self.storage_secret, "storage secret", "--storage-secret")
        if self.storage is not None:
            self._check_storage(self.storage)
        if self.storage_size is not None:
            parse_bytes(self.storage_size, "--storage-size")
        if self.storage_class is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", self.storage_class):
            raise UsageError(f"storage class '{printable(self.storage_class)}' is not a valid name",
                             "give the name of a StorageClass in the cluster: kubectl get storageclass")
        if self.memory is not None:
            parse_bytes(self.memory, "--memory")
        if self.shm_size is not None:
            parse_bytes(self.shm_size, "--shm-size")
        if self.cpu is not None and (not _CPU.fullmatch(self.cpu) or millicores(self.cpu) <= 0):
            raise UsageError(f"--cpu '{printable(self.cpu)}' is not a CPU amount", "write it like 2, 1.5 or 500m")
        if self.gpus is not None and self.gpus < 0:
            raise UsageError("--gpus must be 0 or more", "give the number of GPUs per replica: --gpus 1")
        if not 1 <= self.replicas <= self.max_replicas:
            raise UsageError(f"replicas must satisfy 1 <= --replicas ({self.replicas}) <= --max-replicas "
                             f"({self.max_replicas})", "raise --max-replicas or lower --replicas")
        if not 1 <= self.cpu_target_percent <= 100:
            raise UsageError("--cpu-target must be a percentage between 1 and 100", "e.g. --cpu-target 70")
        if self.queue_time_target_us is not None and self.queue_time_target_us <= 0:
            raise UsageError("--hpa-queue-time-us must be positive", "e.g. --hpa-queue-time-us 50000")
        try:
            ipaddress.ip_address(self.bind_address)
        except ValueError:
            raise UsageError(f"bind address '{printable(self.bind_address)}' is not an IP address",
                             "give one like 127.0.0.1 (the default) or 0.0.0.0 to listen on every interface") from None
        if self.storage_secret and not (self.storage or "").startswith(("s3://", "gs://", "as://")):
            raise UsageError("--storage-secret is for object storage", "use it with --storage s3://…, gs://… or as://…")

    def _check_storage(self, storage: str) -> None:
        if storage.startswith("pvc:"):
            claim, _, sub = storage[4:].partition("/")
            _check_dns(claim, "claim name", "--storage pvc:")
            if sub and (not re.fullmatch(r"[A-Za-z0-9_.\-/]+", sub) or ".." in sub.split("/")):
                raise UsageError(f"sub-directory '{printable(sub)}' of --storage is not a plain relative path",
                                 "use letters, digits, '_', '-', '.' and '/' only, without '..'")
            return
        if not _OBJECT_STORE.fullmatch(storage) or any(ord(ch) < 32 or ord(ch) == 127 for ch in storage):
            raise UsageError(f"--storage '{printable(storage)}' is not a PVC or object-storage URL",
                             "give pvc:CLAIM, s3://bucket/path, gs://bucket/path or as://account/container/path")


def printable(value: str) -> str:
    return value.encode("unicode_escape").decode("ascii")


@dataclass(frozen=True)
class Sizing:
    cpu: str
    memory: str
    memory_bytes: int
    shm: str
    shm_bytes: int
    tmp: str
    gpus: int
    startup_seconds: int
    storage_size: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ManifestFile:
    path: Path
    kinds: tuple[str, ...]
    apply: bool  # part of `kubectl apply -f OUT/` (the loader pod is a separate step)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "kinds": list(self.kinds), "apply": self.apply}


@dataclass(frozen=True)
class ManifestResult:
    target: str
    out: Path
    files: tuple[ManifestFile, ...]
    sizing: Sizing
    repository_sha256: str
    notes: tuple[str, ...] = field(default=())
    schema: str = SCHEMA
    removed: tuple[Path, ...] = field(default=())  # files of an earlier run this one replaced by nothing

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "target": self.target, "out": str(self.out),
                "files": [f.to_dict() for f in self.files], "sizing": self.sizing.to_dict(),
                "repository_sha256": self.repository_sha256, "notes": list(self.notes),
                "removed": [str(p) for p in self.removed]}


# ------------------------------------------------------------------------------------------ sizing
def size_deployment(inv: RepositoryInventory, opts: ManifestOptions) -> Sizing:
    """Resources from the repository: documented rules, each overridable by an option."""
    python = inv.python_instances
    # The Python backend moves every tensor through /dev/shm: a region per instance (Triton grows
    # them from --backend-config=python,shm-default-byte-size); Docker's 64 MB default is too small.
    shm = parse_bytes(opts.shm_size, "--shm-size") if opts.shm_size else (
        256 * MI + 64 * MI * python if python else 64 * MI)
    # Weights are read into host memory (and staged there for GPUs); twice their size plus 1 GiB of
    # server overhead. A memory-backed /dev/shm counts against the same limit, so it is added.
    memory = parse_bytes(opts.memory, "--memory") if opts.memory else (
        math.ceil((GI + 2 * inv.total_bytes + shm) / GI) * GI)
    cpu_instances = sum(m.cpu_instances + m.auto_instances for m in inv.models)
    cpu = opts.cpu or str(max(1, min(16, cpu_instances)))
    gpus = opts.gpus if opts.gpus is not None else inv.gpus_needed
    object_store = bool(opts.storage and not opts.storage.startswith("pvc:"))
    gib = math.ceil(inv.total_bytes / GI)
    # Loading: a minute of start-up, 15 s per model, 30 s per GiB read (60 s when it is downloaded
    # from object storage first). The readiness probe takes over once the server is up.
    startup = 60 + 15 * len(inv.models) + (60 if object_store else 30) * gib
    # Object storage is downloaded into /tmp before loading.
    tmp = max(GI, 2 * inv.total_bytes) if object_store else 256 * MI
    storage = opts.storage_size or gibibytes(max(GI, 3 * inv.total_bytes))  # room for new versions beside the old
    return Sizing(cpu=cpu, memory=gibibytes(memory) if memory % GI == 0 else mebibytes(memory), memory_bytes=memory,
                  shm=mebibytes(shm), shm_bytes=shm, tmp=mebibytes(tmp), gpus=gpus, startup_seconds=startup,
                  storage_size=storage)


