"""Manifests for the engines users scale Triton out on: Kubernetes, KServe and docker-compose.

Every manifest is built as plain dicts and written with ``yaml.safe_dump``: values the user gave
(paths, URLs, image names) are YAML scalars that the dumper quotes and escapes, never text spliced
into a template. Resources (memory, /dev/shm, GPUs, startup time) are sized from the repository."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tritonops.check import check_repository
from tritonops.deploy.control import ADMIN_HEADER
from tritonops.deploy.inventory import file_hashes, read_inventory, tree_sha256
from tritonops.deploy.manifest_spec import (
    ADMIN_KEY_ENV,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    MODELS_MOUNT,
    QUEUE_METRIC,
    TRITON_UID,
    ManifestFile,
    ManifestOptions,
    ManifestResult,
    Sizing,
    millicores,
    size_deployment,
)
from tritonops.errors import RepositoryError, UsageError
from tritonops.paths import check_name, read_bytes, read_text
from tritonops.repository import write_atomic


# ------------------------------------------------------------------------------------------ shared parts
def _labels(opts: ManifestOptions) -> dict[str, str]:
    return {"app.kubernetes.io/name": "triton-inference-server", "app.kubernetes.io/instance": opts.name,
            "app.kubernetes.io/managed-by": "tritonops"}


def _selector(opts: ManifestOptions) -> dict[str, str]:
    return {"app.kubernetes.io/name": "triton-inference-server", "app.kubernetes.io/instance": opts.name}


def _metadata(opts: ManifestOptions, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    meta["labels"] = _labels(opts)
    return meta


def _claim(opts: ManifestOptions) -> tuple[str, str]:
    """(claim name, sub-directory) of the repository volume."""
    if opts.storage and opts.storage.startswith("pvc:"):
        claim, _, sub = opts.storage[4:].partition("/")
        return claim, sub.strip("/")
    return f"{opts.name}-models", ""


def _object_store(opts: ManifestOptions) -> bool:
    return bool(opts.storage and not opts.storage.startswith("pvc:"))


def triton_args(repository: str, opts: ManifestOptions, sizing: Sizing, admin_key: str | None) -> list[str]:
    """tritonserver flags; ``admin_key`` is what unlocks the model-repository API (None: no model control)."""
    args = [f"--model-repository={repository}"]
    if opts.allow_model_control:
        args += ["--model-control-mode=explicit", "--load-model=*"]
    else:
        # Models load at start-up and the load/unload API refuses every request.
        args.append("--model-control-mode=none")
    args += [f"--http-port={HTTP_PORT}", f"--grpc-port={GRPC_PORT}", f"--metrics-port={METRICS_PORT}",
             "--strict-readiness=true", "--exit-on-error=true"]
    if sizing.gpus == 0:
        args.append("--allow-gpu-metrics=false")
    if opts.allow_model_control and admin_key is not None:
        args += [f"--http-restricted-api=model-repository:{ADMIN_HEADER}={admin_key}",
                 f"--grpc-restricted-protocol=model-repository:{ADMIN_HEADER}={admin_key}"]
    return args


def _container_security(opts: ManifestOptions) -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": not opts.writable_root,
            "runAsNonRoot": True, "runAsUser": TRITON_UID, "runAsGroup": TRITON_UID,
            "capabilities": {"drop": ["ALL"]}}


def _pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": TRITON_UID, "runAsGroup": TRITON_UID, "fsGroup": TRITON_UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _storage_env(opts: ManifestOptions) -> list[dict[str, Any]]:
    """Object-storage credentials as env vars from a Secret (keys named like the variables)."""
    if not opts.storage_secret or not opts.storage:
        return []

    def ref(var: str, optional: bool = False) -> dict[str, Any]:
        key: dict[str, Any] = {"name": opts.storage_secret, "key": var}
        if optional:
            key["optional"] = True
        return {"name": var, "valueFrom": {"secretKeyRef": key}}

    if opts.storage.startswith("s3://"):
        return [ref("AWS_ACCESS_KEY_ID"), ref("AWS_SECRET_ACCESS_KEY"), ref("AWS_DEFAULT_REGION", True),
                ref("AWS_SESSION_TOKEN", True)]
    if opts.storage.startswith("as://"):
        return [ref("AZURE_STORAGE_ACCOUNT"), ref("AZURE_STORAGE_KEY")]
    return [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/run/secrets/gcs/key.json"}]


def _probes(sizing: Sizing) -> dict[str, Any]:
    def get(path: str) -> dict[str, Any]:
        return {"path": path, "port": "http"}

    return {
        "livenessProbe": {"httpGet": get("/v2/health/live"), "periodSeconds": 10, "timeoutSeconds": 5,
                          "failureThreshold": 3},
        "readinessProbe": {"httpGet": get("/v2/health/ready"), "periodSeconds": 5, "timeoutSeconds": 5,
                           "failureThreshold": 3},
        # Triton opens its HTTP port only after loading the models; until then only this probe runs.
        "startupProbe": {"httpGet": get("/v2/health/ready"), "periodSeconds": 10, "timeoutSeconds": 5,
                         "failureThreshold": math.ceil(sizing.startup_seconds / 10)},
    }


def _resources(sizing: Sizing) -> dict[str, Any]:
    # No CPU limit: throttling a latency-bound server hurts more than it protects; the request
    # drives scheduling and the HPA's utilisation.
    limits: dict[str, Any] = {"memory": sizing.memory}
    if sizing.gpus:
        limits["nvidia.com/gpu"] = sizing.gpus
    return {"requests": {"cpu": sizing.cpu, "memory": sizing.memory}, "limits": limits}


def _scratch_volumes(opts: ManifestOptions, sizing: Sizing) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": sizing.shm}},
                                     {"name": "tmp", "emptyDir": {"sizeLimit": sizing.tmp}}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
    if opts.storage_secret and opts.storage and opts.storage.startswith("gs://"):
        volumes.append({"name": "gcs-credentials", "secret": {"secretName": opts.storage_secret,
                                                              "items": [{"key": "key.json", "path": "key.json"}]}})
        mounts.append({"name": "gcs-credentials", "mountPath": "/var/run/secrets/gcs", "readOnly": True})
    return volumes, mounts


def _admin_env(opts: ManifestOptions) -> list[dict[str, Any]]:
    if not opts.allow_model_control:
        return []
    return [{"name": ADMIN_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": f"{opts.name}-admin", "key": "key"}}}]


def _gpu_tolerations(sizing: Sizing) -> list[dict[str, Any]]:
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}] if sizing.gpus else []


# ------------------------------------------------------------------------------------------ kubernetes
def _pvc(opts: ManifestOptions, sizing: Sizing) -> dict[str, Any]:
    claim, _ = _claim(opts)
    # Replicas on several nodes need a volume many nodes can mount.
    mode = "ReadWriteMany" if opts.max_replicas > 1 else "ReadWriteOnce"
    spec: dict[str, Any] = {"accessModes": [mode], "resources": {"requests": {"storage": sizing.storage_size}}}
    if opts.storage_class:
        spec["storageClassName"] = opts.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _metadata(opts, claim), "spec": spec}


def _loader_pod(opts: ManifestOptions) -> dict[str, Any]:
    """A pod that mounts the new claim writable so ``kubectl cp`` can fill it (same image, same uid)."""
    claim, _ = _claim(opts)
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": _metadata(opts, f"{opts.name}-model-loader"),
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False, "securityContext": _pod_security(),
            "containers": [{
                "name": "loader", "image": opts.image, "command": ["sleep", "3600"],
                "securityContext": {**_container_security(opts), "readOnlyRootFilesystem": True},
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT}],
            }],
            "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def _deployment(opts: ManifestOptions, sizing: Sizing, digest: str) -> dict[str, Any]:
    volumes, mounts = _scratch_volumes(opts, sizing)
    if _object_store(opts):
        assert opts.storage is not None
        repository = opts.storage
    else:
        claim, sub = _claim(opts)
        volumes.insert(0, {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mount: dict[str, Any] = {"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True}
        if sub:
            mount["subPath"] = sub
        mounts.insert(0, mount)
        repository = MODELS_MOUNT
    admin = f"$({ADMIN_KEY_ENV})" if opts.allow_model_control else None  # expanded by the kubelet from env
    container: dict[str, Any] = {
        "name": "tritonserver", "image": opts.image, "imagePullPolicy": "IfNotPresent",
        "command": ["tritonserver"], "args": triton_args(repository, opts, sizing, admin),
    }
    env = _storage_env(opts) + _admin_env(opts)
    if env:
        container["env"] = env
    container["ports"] = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                          {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
    container.update(_probes(sizing))
    container["resources"] = _resources(sizing)
    container["securityContext"] = _container_security(opts)
    container["volumeMounts"] = mounts
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,  # Triton never talks to the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,  # Triton drains in-flight requests for up to 30 s
        "securityContext": _pod_security(),
    }
    if sizing.gpus:
        pod["tolerations"] = _gpu_tolerations(sizing)
    pod["containers"] = [container]
    pod["volumes"] = volumes
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(opts, opts.name),
        "spec": {
            "replicas": opts.replicas, "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(opts)},
            # A new pod must be ready before an old one goes: roll-outs never drop capacity.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": _labels(opts),
                             # Changing the models changes the pod template, so `kubectl apply` rolls.
                             "annotations": {"tritonops.dev/repository-sha256": digest}},
                "spec": pod,
            },
        },
    }


def _service(opts: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _metadata(opts, opts.name),
        "spec": {"type": "ClusterIP", "selector": _selector(opts), "ports": [
            {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
            {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
            {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
        ]},
    }


def _hpa(opts: ManifestOptions) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": opts.cpu_target_percent}}}]
    if opts.queue_time_target_us is not None:
        metrics.append({"type": "Pods", "pods": {
            "metric": {"name": QUEUE_METRIC},
            "target": {"type": "AverageValue", "averageValue": str(opts.queue_time_target_us)}}})
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _metadata(opts, opts.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": opts.name},
            "minReplicas": opts.replicas, "maxReplicas": opts.max_replicas, "metrics": metrics,
            # Model loading makes a new replica slow to help: scale up at once, down slowly.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def _pdb(opts: ManifestOptions) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _metadata(opts, opts.name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(opts)}}}


def _monitor(opts: ManifestOptions) -> dict[str, Any]:
    endpoint = {"port": "metrics", "path": "/metrics", "interval": "15s"}
    if opts.monitor == "podmonitor":
        spec: dict[str, Any] = {"selector": {"matchLabels": _selector(opts)}, "podMetricsEndpoints": [endpoint]}
        kind = "PodMonitor"
    else:
        spec = {"selector": {"matchLabels": _selector(opts)}, "endpoints": [endpoint]}
        kind = "ServiceMonitor"
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": kind, "metadata": _metadata(opts, opts.name),
            "spec": spec}


def adapter_rules() -> dict[str, Any]:
    """Helm values for prometheus-adapter: average queue time per request over the last minute,
    per pod, as the custom metric the HPA scales on."""
    return {"rules": {"custom": [{
        "seriesQuery": 'nv_inference_queue_duration_us{namespace!="",pod!=""}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "^nv_inference_queue_duration_us$", "as": QUEUE_METRIC},
        "metricsQuery": ("avg(delta(nv_inference_queue_duration_us{<<.LabelMatchers>>}[1m]) / "
                         "clamp_min(delta(nv_inference_request_success{<<.LabelMatchers>>}[1m]), 1)) "
                         "by (<<.GroupBy>>)"),
    }]}}


def _k8s(opts: ManifestOptions, sizing: Sizing, digest: str) -> list[tuple[str, list[dict[str, Any]], bool]]:
    files: list[tuple[str, list[dict[str, Any]], bool]] = []
    creates_claim = not opts.storage
    if creates_claim:
        files.append(("pvc.yaml", [_pvc(opts, sizing)], True))
    files.append(("deployment.yaml", [_deployment(opts, sizing, digest)], True))
    files.append(("service.yaml", [_service(opts)], True))
    files.append(("hpa.yaml", [_hpa(opts)], True))
    if opts.max_replicas > 1:
        files.append(("pdb.yaml", [_pdb(opts)], True))
    if opts.monitor != "none":
        files.append((f"{opts.monitor}.yaml", [_monitor(opts)], True))
    if opts.queue_time_target_us is not None:
        files.append(("extras/prometheus-adapter-values.yaml", [adapter_rules()], False))
    if creates_claim:
        files.append(("extras/model-loader-pod.yaml", [_loader_pod(opts)], False))
    return files


# ------------------------------------------------------------------------------------------ kserve
_NGC_TRITON = re.compile(r"^nvcr\.io/nvidia/tritonserver:([\w][\w.-]*)$")


def _kserve(opts: ManifestOptions, sizing: Sizing, digest: str) -> list[tuple[str, list[dict[str, Any]], bool]]:
    files: list[tuple[str, list[dict[str, Any]], bool]] = []
    volumes, mounts = _scratch_volumes(opts, sizing)
    if _object_store(opts):
        assert opts.storage is not None
        storage_uri = opts.storage
    else:
        claim, sub = _claim(opts)
        storage_uri = f"pvc://{claim}/{sub}" if sub else f"pvc://{claim}"
        if not opts.storage:
            files.append(("pvc.yaml", [_pvc(opts, sizing)], True))
    model: dict[str, Any] = {"modelFormat": {"name": "triton"}, "runtime": "kserve-tritonserver",
                             "protocolVersion": "v2", "storageUri": storage_uri}
    ngc = _NGC_TRITON.fullmatch(opts.image)
    if ngc:
        model["runtimeVersion"] = ngc.group(1)  # the runtime's image, at this tag
    else:
        model["image"] = opts.image
    # KServe appends these to the runtime's own flags (model store, ports).
    args = ["--strict-readiness=true"]
    if opts.allow_model_control:
        args += ["--model-control-mode=explicit", "--load-model=*",
                 f"--http-restricted-api=model-repository:{ADMIN_HEADER}=$({ADMIN_KEY_ENV})",
                 f"--grpc-restricted-protocol=model-repository:{ADMIN_HEADER}=$({ADMIN_KEY_ENV})"]
    if sizing.gpus == 0:
        args.append("--allow-gpu-metrics=false")
    model["args"] = args
    env = _admin_env(opts)
    if env:
        model["env"] = env
    model["resources"] = _resources(sizing)
    model["securityContext"] = _container_security(opts)
    model["volumeMounts"] = mounts
    predictor: dict[str, Any] = {"minReplicas": opts.replicas, "maxReplicas": opts.max_replicas,
                                 "scaleMetric": "cpu", "scaleTarget": opts.cpu_target_percent}
    if opts.storage_secret:
        # KServe's storage initializer takes credentials from the service account's secrets.
        predictor["serviceAccountName"] = f"{opts.name}-storage"
        files.append(("serviceaccount.yaml", [{
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(opts, f"{opts.name}-storage"),
            "secrets": [{"name": opts.storage_secret}]}], True))
    predictor["securityContext"] = _pod_security()
    if sizing.gpus:
        predictor["tolerations"] = _gpu_tolerations(sizing)
    predictor["volumes"] = volumes
    predictor["model"] = model
    meta = _metadata(opts, opts.name)
    meta["annotations"] = {"tritonops.dev/repository-sha256": digest,
                           "serving.kserve.io/enable-prometheus-scraping": "true"}
    files.append(("inferenceservice.yaml", [{"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                                             "metadata": meta, "spec": {"predictor": predictor}}], True))
    if not opts.storage:
        files.append(("extras/model-loader-pod.yaml", [_loader_pod(opts)], False))
    return files


# ------------------------------------------------------------------------------------------ compose
def _compose_escape(value: str) -> str:
    """Compose interpolates ``$VAR`` in every value; a user's literal '$' is written '$$'."""
    return value.replace("$", "$$")


def _compose(opts: ManifestOptions, sizing: Sizing, digest: str) -> list[tuple[str, list[dict[str, Any]], bool]]:
    service: dict[str, Any] = {"image": _compose_escape(opts.image)}
    volumes: list[dict[str, Any]] = []
    environment: list[str] = []
    if _object_store(opts):
        assert opts.storage is not None
        repository = _compose_escape(opts.storage)
        if opts.storage.startswith("s3://"):
            environment = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"]
        elif opts.storage.startswith("as://"):
            environment = ["AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"]
        else:
            environment = ["GOOGLE_APPLICATION_CREDENTIALS"]
    else:
        repository = MODELS_MOUNT
        # The host directory itself, read-only: `tritonops deploy --to` updates it from the host.
        volumes.append({"type": "bind", "source": _compose_escape(str(opts.repository.absolute())),
                        "target": MODELS_MOUNT, "read_only": True})
    # Compose reads the key from the environment (or .env) when the stack starts.
    admin = f"${{{ADMIN_KEY_ENV}:?set {ADMIN_KEY_ENV} to the key for model control}}" \
        if opts.allow_model_control else None
    service["command"] = ["tritonserver", *triton_args(repository, opts, sizing, admin)]
    service["ports"] = [{"target": port, "published": str(port), "host_ip": opts.bind_address, "protocol": "tcp"}
                        for port in (HTTP_PORT, GRPC_PORT, METRICS_PORT)]
    service["shm_size"] = sizing.shm_bytes
    service["mem_limit"] = sizing.memory_bytes
    service["cpus"] = round(millicores(sizing.cpu) / 1000, 3)
    service["user"] = f"{TRITON_UID}:{TRITON_UID}"
    service["read_only"] = not opts.writable_root
    service["tmpfs"] = ["/tmp"]
    service["cap_drop"] = ["ALL"]
    service["security_opt"] = ["no-new-privileges:true"]
    if volumes:
        service["volumes"] = volumes
    if environment:
        service["environment"] = environment
    service["labels"] = {"tritonops.dev/repository-sha256": digest}
    service["healthcheck"] = {"test": ["CMD", "curl", "-fsS", f"http://127.0.0.1:{HTTP_PORT}/v2/health/ready"],
                              "interval": "10s", "timeout": "5s", "retries": 3,
                              "start_period": f"{sizing.startup_seconds}s"}
    service["restart"] = "unless-stopped"
    service["stop_grace_period"] = "60s"
    if sizing.gpus:
        service["deploy"] = {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "count": sizing.gpus, "capabilities": ["gpu"]}]}}}
    return [("compose.yaml", [{"name": opts.name, "services": {"triton": service}}], True)]


# ------------------------------------------------------------------------------------------ writing
def dump_yaml(docs: Sequence[dict[str, Any]]) -> str:
    # safe_dump quotes and escapes every scalar it must (newlines, ': ', '{{', '#', leading '*'...).
    body = yaml.safe_dump_all(list(docs), sort_keys=False, default_flow_style=False, allow_unicode=False,
                              width=4096, explicit_start=True)
    return "# Generated by tritonops deploy. Regenerate instead of editing.\n" + body


_BUILDERS = {"k8s": _k8s, "kserve": _kserve, "compose": _compose}


@dataclass(frozen=True)
class Rendered:
    files: tuple[tuple[str, tuple[dict[str, Any], ...], bool], ...]  # (file name, documents, kubectl-apply it)
    sizing: Sizing
    repository_sha256: str
    notes: tuple[str, ...]

    def documents(self, name: str) -> tuple[dict[str, Any], ...]:
        return next(docs for n, docs, _ in self.files if n == name)


def render_manifests(opts: ManifestOptions) -> Rendered:
    """The manifests as documents per file name, without writing anything."""
    inv = read_inventory(opts.repository)
    report = check_repository(opts.repository)
    if not report.ok:
        first = report.findings[0]
        raise UsageError(f"the repository has {len(report.findings)} problem(s), first: {first}",
                         f"fix them first; see: tritonops check {opts.repository}")
    sizing = size_deployment(inv, opts)
    digest = tree_sha256(file_hashes(inv.path))
    files = _BUILDERS[opts.target](opts, sizing, digest)
    notes: list[str] = []
    if opts.gpus is None and any(m.auto_instances for m in inv.models) and not sizing.gpus:
        notes.append("models with KIND_AUTO (or no instance_group) run on CPU here; give --gpus N to give them GPUs")
    if _object_store(opts) and not opts.storage_secret:
        notes.append("no --storage-secret: the server must get object-storage access from the node or "
                     "workload identity")
    if opts.allow_model_control:
        notes.append(f"model control is on: requests to the repository API need the header '{ADMIN_HEADER}' "
                     f"with the key from Secret '{opts.name}-admin' (compose: ${ADMIN_KEY_ENV})")
    if opts.target == "compose" and opts.bind_address not in ("127.0.0.1", "::1"):
        notes.append(f"ports listen on {opts.bind_address}: Triton has no authentication, put a proxy in front")
    return Rendered(tuple((n, tuple(d), a) for n, d, a in files), sizing, digest, tuple(notes))


def _kind(doc: dict[str, Any]) -> str:
    if "kind" in doc:
        return str(doc["kind"])
    return "compose" if "services" in doc else "helm-values"


WRITTEN_RECORD = ".tritonops-manifests.json"  # what the last run wrote into --out, with sha256 per file
WRITTEN_SCHEMA = "tritonops.deploy.written/1"


def _sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def _previously_written(out: Path) -> dict[str, str]:
    """{file name: sha256} of what an earlier run wrote into ``out``; empty if there is no usable record.
    Only plain file names count, so a record cannot point a removal outside ``out``."""
    path = out / WRITTEN_RECORD
    if not path.is_file():
        return {}
    try:
        data = json.loads(read_text(path, "manifest record", 1 << 20))
    except (UsageError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("schema") == WRITTEN_SCHEMA else None
    if not isinstance(files, dict):
        return {}
    found = {}
    for name, digest in files.items():
        with contextlib.suppress(UsageError):
            if isinstance(name, str) and isinstance(digest, str) and name != WRITTEN_RECORD:
                for part in name.split("/"):  # "extras/x.yaml": each part a plain name, so never '..'
                    check_name(part)
                found[name] = digest
    return found


def _stale(out: Path, previous: dict[str, str], writing: set[str]) -> tuple[list[Path], list[Path]]:
    """Files of an earlier run this one does not write: (unchanged since, so ours to remove; edited since)."""
    ours: list[Path] = []
    edited: list[Path] = []
    for name, digest in sorted(previous.items()):
        path = out / name
        if name in writing or path.is_symlink() or not path.is_file():
            continue
        try:
            same = _sha256(read_bytes(path, "manifest", 64 << 20)) == digest
        except UsageError:
            same = False
        (ours if same else edited).append(path)
    return ours, edited


def write_manifests(opts: ManifestOptions) -> ManifestResult:
    """Render the manifests for ``opts.target`` and write them under ``opts.out``.

    The run records what it wrote (``.tritonops-manifests.json``). With ``--force``, files an earlier
    run wrote that this one does not (a ``pdb.yaml`` no longer wanted, k8s files beside a new
    ``compose.yaml``) are removed, since ``kubectl apply -f OUT/`` would apply them too; without it
    they are kept and named in a note. Files tritonops did not write, or that were edited since, are
    never removed (an edited one is named in a note)."""
    rendered = render_manifests(opts)
    out = opts.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' is not a directory", "give a directory for the manifests")
    existing = [name for name, _, _ in rendered.files if (out / name).exists()]
    if existing and not opts.overwrite:
        raise UsageError(f"{out / existing[0]} already exists", "give another --out, or --force to overwrite")
    writing = {name for name, _, _ in rendered.files}
    previous = _previously_written(out) if out.is_dir() else {}
    stale, edited = _stale(out, previous, writing)
    # Without --force nothing is removed: the files stay recorded, so a later --force still can.
    kept = [] if opts.overwrite else stale
    if kept:
        stale = []
    texts = [(name, dump_yaml(docs), docs, apply) for name, docs, apply in rendered.files]
    written: list[ManifestFile] = []
    notes = list(rendered.notes)
    try:
        for name, text, docs, apply in texts:
            write_atomic(out / name, text, mode=None, fsync=False)  # as before: 0600, no fsync
            written.append(ManifestFile(out / name, tuple(_kind(d) for d in docs), apply))
        for path in stale:
            path.unlink(missing_ok=True)
        recorded = {p.relative_to(out).as_posix(): previous[p.relative_to(out).as_posix()] for p in kept}
        record = {"schema": WRITTEN_SCHEMA, "target": opts.target,
                  "files": {**recorded, **{name: _sha256(text) for name, text, _, _ in texts}}}
        write_atomic(out / WRITTEN_RECORD, json.dumps(record, indent=2) + "\n", mode=None, fsync=False)
    except OSError as e:
        raise RepositoryError(f"cannot write the manifests to {out}: {e.strerror or e}",
                              "check that the directory is writable") from None
    notes += [f"removed {p.name}: an earlier run wrote it and this one does not" for p in stale]
    notes += [f"kept {p.name}: an earlier run wrote it and this one does not; --force removes it" for p in kept]
    notes += [f"kept {p.name}: an earlier run wrote it, it was edited since, and this run does not write it; "
              "remove it if kubectl should not apply it" for p in edited]
    return ManifestResult(opts.target, out, tuple(written), rendered.sizing, rendered.repository_sha256,
                          tuple(notes), removed=tuple(stale))
