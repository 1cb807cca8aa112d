"""tritonops deploy --to: roll-outs to a real tritonserver in explicit model-control mode.

A steady load (HTTP and gRPC threads, bounded in count and time, to 127.0.0.1 only) runs during a
good roll-out and during the roll-out of a version that loads but fails every inference. Every
response must succeed and carry the outputs of the version that answered (two MLPs with different
seeds, so each response tells which version computed it): the old version's until the switch, the
new version's after it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import onnx_models
from conftest import tree_digest
from deploy_repos import broken_mlp, mlp_repo, mlp_spec, write_model
from tritonops.client import TritonClient
from tritonops.deploy.rollout import DeployFailed, RolloutOptions, deploy_versions, rollback
from tritonops.errors import RepositoryError, UsageError
from tritonops.netaddr import free_port
from tritonops.server import ServerOptions, TritonServer

pytestmark = pytest.mark.server
SRC = Path(__file__).parent.parent / "src"
X = np.array([[0.5, -1.0, 2.0, 0.25]], dtype=np.float32)


def reference(onnx_file: Path) -> np.ndarray:
    return ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]


# ------------------------------------------------------------------------------ steady load
@dataclass
class Response:
    protocol: str
    start: float
    end: float
    version: str | None  # what the server says answered
    computed_by: str | None  # which known version's outputs these are
    error: str | None


class SteadyLoad:
    """``per_protocol`` HTTP and as many gRPC threads, each sending one request at a time (with a short
    pause) until stopped or ``max_seconds`` pass. Only to 127.0.0.1."""

    def __init__(self, server, model: str, expected: dict[str, np.ndarray], per_protocol: int = 2,
                 max_seconds: float = 120.0) -> None:
        assert server.http_url.startswith("127.0.0.1:")
        self.server, self.model, self.expected = server, model, expected
        self.max_seconds = max_seconds
        self.stop_event = threading.Event()
        self.responses: list[Response] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(p,), daemon=True)
                        for p in ("http", "grpc") for _ in range(per_protocol)]

    def _client(self, protocol: str):
        if protocol == "http":
            import tritonclient.http as mod

            return mod, mod.InferenceServerClient(self.server.http_url, network_timeout=30)
        import tritonclient.grpc as mod

        return mod, mod.InferenceServerClient(self.server.grpc_url)

    def _run(self, protocol: str) -> None:
        mod, client = self._client(protocol)
        deadline = time.monotonic() + self.max_seconds
        try:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                x = mod.InferInput("x", list(X.shape), "FP32")
                x.set_data_from_numpy(X)
                start = time.monotonic()
                try:
                    res = client.infer(self.model, [x], outputs=[mod.InferRequestedOutput("y")])
                    end = time.monotonic()
                    y = res.as_numpy("y")
                    resp = res.get_response()
                    version = resp["model_version"] if isinstance(resp, dict) else resp.model_version
                    by = next((v for v, want in self.expected.items() if np.allclose(y, want, atol=1e-5)), None)
                    r = Response(protocol, start, end, str(version), by, None)
                except Exception as e:
                    r = Response(protocol, start, time.monotonic(), None, None, str(e))
                with self.lock:
                    self.responses.append(r)
                time.sleep(0.005)
        finally:
            client.close()

    def __enter__(self) -> SteadyLoad:
        for t in self.threads:
            t.start()
        time.sleep(1.0)  # traffic before the roll-out starts
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(1.0)  # traffic after it ends
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=60)

    def check(self) -> None:
        """Zero failed requests; every output is one a known version computes, and that version answered."""
        assert self.responses
        failed = [r for r in self.responses if r.error]
        assert not failed, f"{len(failed)} of {len(self.responses)} requests failed, first: {failed[0].error}"
        wrong = [r for r in self.responses if r.computed_by is None or r.computed_by != r.version]
        assert not wrong, f"{len(wrong)} responses with outputs of no known version or another version: {wrong[0]}"
        assert {r.protocol for r in self.responses} == {"http", "grpc"}


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[float, str]] = []

    def __call__(self, message: str) -> None:
        self.items.append((time.monotonic(), message))

    def time_of(self, prefix: str) -> float:
        return next(t for t, m in self.items if m.startswith(prefix))


# ------------------------------------------------------------------------------ fixtures
@dataclass
class Setup:
    root: Path
    target: Path
    server: object
    expected: dict[str, np.ndarray]

    def source(self, name: str, onnx_file: Path, **spec_kw) -> Path:
        repo = self.root / name / "repo"
        write_model(repo, mlp_spec(**spec_kw), 1, onnx_file)
        return repo

    def options(self, source: Path | None, **kw) -> RolloutOptions:
        return RolloutOptions(target=self.target, source=source, http_url=self.server.http_url,
                              grpc_url=self.server.grpc_url, **kw)

    def cli_url(self) -> list[str]:
        return ["--url", "127.0.0.1", "--http-port", str(self.server.http_port), "--grpc-port",
                str(self.server.grpc_port)]


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One explicit-mode server for every test that only needs "a server serving the MLP at version 1";
    ``setup`` resets its target repository before each test. Not the session server: Triton's repository
    index keeps the versions a roll-out served after they are unloaded and their files removed, and on
    the session server a later module's own "mlp" was then listed UNAVAILABLE beside its READY version
    (tried: test_backends' "every model ready" failed after this module)."""
    root = tmp_path_factory.mktemp("rollout-target")
    target = mlp_repo(root, seed=0)
    with TritonServer(ServerOptions(repository=target, explicit=True)) as server:
        yield root, target, server


def reset_target(server, root: Path, target: Path) -> None:
    """Back to the start state: every model unloaded, the target repository rewritten (one MLP at
    version 1, no deploy record), the MLP loaded."""
    with TritonClient(server.http_url, server.grpc_url, timeout_s=120) as c:
        for e in c.repository_index():
            if e.state and not e.unloaded:
                c.unload_model(e.name)
        deadline = time.monotonic() + 120
        while any(e.state not in ("", "UNAVAILABLE") for e in c.repository_index()):
            assert time.monotonic() < deadline, f"models still loaded: {c.repository_index()}"
            time.sleep(0.05)
        shutil.rmtree(target)
        mlp_repo(root, seed=0)
        c.load_model("mlp")
        assert c.ready_versions("mlp") == [1]


@pytest.fixture
def setup(shared_server, tmp_path):
    root, target, server = shared_server
    reset_target(server, root, target)
    expected = {"1": reference(root / "src" / "mlp-0.onnx")}
    return Setup(tmp_path, target, server, expected)


def index(setup: Setup) -> list[tuple[str, str, str]]:
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(setup.server.http_url)
    try:
        return sorted((e["name"], e.get("version", ""), e.get("state", "")) for e in c.get_model_repository_index())
    finally:
        c.close()


def hidden_leftovers(target: Path) -> list[str]:
    return sorted(str(p.relative_to(target)) for p in target.rglob(".tritonops-*")
                  if p.name != ".tritonops-deploys.jsonl")


def records(target: Path) -> list[dict]:
    return [json.loads(line) for line in (target / ".tritonops-deploys.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ why a candidate model
def test_triton_serves_unversioned_requests_from_the_highest_ready_version(setup):
    """The fact the design rests on: with N and N+1 both loaded (version_policy specific [N, N+1]),
    requests that name no version go to N+1 at once, so N+1 must be validated before it is loaded
    under the served name."""
    import tritonclient.http as httpclient

    from tritonops.pbtxt import read_config

    shutil.copytree(setup.target / "mlp" / "1", setup.target / "mlp" / "2")
    cfg = read_config(setup.target / "mlp" / "config.pbtxt")
    cfg.version_policy.specific.versions.extend([1, 2])
    c = httpclient.InferenceServerClient(setup.server.http_url)
    try:
        from tritonops.pbtxt import config_to_json

        c.load_model("mlp", config=config_to_json(cfg))
        x = httpclient.InferInput("x", list(X.shape), "FP32")
        x.set_data_from_numpy(X)
        assert c.infer("mlp", [x]).get_response()["model_version"] == "2"
        assert c.infer("mlp", [x], model_version="1").get_response()["model_version"] == "1"
    finally:
        c.close()


# ------------------------------------------------------------------------------ the roll-outs under load
def test_rollout_under_steady_load_good_then_broken(setup):
    new = onnx_models.mlp(setup.root / "src" / "mlp-1.onnx", seed=1)
    setup.expected["2"] = reference(new)
    good = setup.source("good", new)
    bad = setup.source("bad", broken_mlp(setup.root / "src" / "broken.onnx"))

    # ---- a good version: old outputs until the switch, new ones after, no request fails
    events = Events()
    with SteadyLoad(setup.server, "mlp", setup.expected) as load:
        result = deploy_versions(setup.options(good, canary_requests=20), events)
        done = time.monotonic()
    load.check()
    switch = events.time_of("switching mlp to version 2")
    before = [r for r in load.responses if r.end < switch]
    after = [r for r in load.responses if r.start > done]
    assert before and after
    assert {r.version for r in before} == {"1"}, "traffic moved before the new version was validated"
    assert {r.version for r in after} == {"2"}
    assert result.ok
    assert [(m.name, m.status, m.from_version, m.to_version) for m in result.models] == [("mlp", "deployed", 1, 2)]
    assert result.validation["ok"] and result.validation["after_switch"]["ok"]
    assert result.validation["canary_requests"] == 20
    assert index(setup)[-1] == ("mlp", "2", "READY")
    assert sorted(p.name for p in (setup.target / "mlp").iterdir()) == ["1", "2", "config.pbtxt"]

    # ---- a version that loads but fails every inference: rejected, version 2 keeps serving
    events = Events()
    with SteadyLoad(setup.server, "mlp", setup.expected) as load, pytest.raises(DeployFailed) as failed:
        deploy_versions(setup.options(bad), events)
    load.check()
    assert {r.version for r in load.responses} == {"2"}
    message = failed.value.message
    assert message.startswith("version 3 of 'mlp' failed validation: model 'mlp': first request over grpc: "
                              "inference failed: ")
    assert message.endswith("; version 2 of 'mlp' keeps serving and the new version was removed")
    assert "indices element out of data bounds" in message
    assert not any(m.startswith("switching") for _, m in events.items)
    assert [(m.name, m.status) for m in failed.value.result.models] == [("mlp", "failed")]
    assert [e for e in index(setup) if e[2] == "READY"] == [("mlp", "2", "READY")]
    assert sorted(p.name for p in (setup.target / "mlp").iterdir()) == ["1", "2", "config.pbtxt"]
    assert sorted(p.name for p in setup.target.iterdir()) == [".tritonops-deploys.jsonl", "mlp"]
    assert hidden_leftovers(setup.target) == []
    last = records(setup.target)[-1]
    assert last["ok"] is False and last["reason"] == message
    assert last["validation"]["ok"] is False


def test_load_failure_rollback_status_and_unchanged_through_the_cli(setup, cli):
    new = onnx_models.mlp(setup.root / "src" / "mlp-1.onnx", seed=1)
    good = setup.source("good", new)
    code, out, err = cli("deploy", good, "--to", setup.target, *setup.cli_url(), "--json")
    assert code == 0, err
    payload = json.loads(out)
    data = payload["data"]
    assert payload["schema"] == "tritonops.deploy.rollout/1"
    assert data["models"][0]["status"] == "deployed"
    assert data["models"][0]["files"] == {"model.onnx": __import__("hashlib").sha256(new.read_bytes()).hexdigest()}

    # the same source again: nothing to do
    code, out, err = cli("deploy", good, "--to", setup.target, *setup.cli_url())
    assert code == 0, err
    assert "deployed 0 model(s), 1 unchanged" in out

    # a config this server cannot load (GPU instances on a CPU-only machine)
    gpu = setup.source("gpu", onnx_models.mlp(setup.root / "src" / "mlp-2.onnx", seed=2), kind="gpu")
    before = tree_digest(setup.target)
    code, out, err = cli("deploy", gpu, "--to", setup.target, *setup.cli_url())
    assert code == 7
    first = err.splitlines()[0]
    assert first.startswith("error: version 3 of 'mlp' failed to load: ")
    assert first.endswith("; version 2 of 'mlp' keeps serving and the new version was removed")
    assert err.splitlines()[1].startswith("hint: ")
    after = tree_digest(setup.target)
    assert {k: v for k, v in after.items() if k != ".tritonops-deploys.jsonl"} == \
           {k: v for k, v in before.items() if k != ".tritonops-deploys.jsonl"}
    assert [e for e in index(setup) if e[2] == "READY"] == [("mlp", "2", "READY")]

    # back to version 1
    code, out, err = cli("deploy", "--rollback", "--to", setup.target, *setup.cli_url())
    assert code == 0, err
    assert "mlp: version 2 → 1" in out
    assert [e for e in index(setup) if e[2] == "READY"] == [("mlp", "1", "READY")]
    assert sorted(p.name for p in (setup.target / "mlp").iterdir()) == ["1", "config.pbtxt"]
    code, out, err = cli("deploy", "--rollback", "--to", setup.target, *setup.cli_url())
    assert code == 2
    assert err.splitlines()[0] == "error: nothing to roll back: no deployed version in the record is live now"

    code, out, err = cli("deploy", "--status", "--to", setup.target, *setup.cli_url())
    assert code == 0, err
    assert out.splitlines()[1].split()[:5] == ["mlp", "1", "1", "rolled-back", records(setup.target)[-1]["started"]]
    assert out.splitlines()[0].split() == ["model", "live", "on", "disk", "last", "action"]
    code, out, err = cli("deploy", "--status", "--to", setup.target, *setup.cli_url(), "--json")
    assert code == 0, err
    payload = json.loads(out)
    status = payload["data"]
    assert payload["schema"] == "tritonops.deploy.status/1"
    (row,) = status["models"]
    assert (row["name"], row["live"], row["on_disk"], row["last_action"]) == ("mlp", [1], [1], "rolled-back")
    assert [r["action"] for r in records(setup.target)] == ["deploy", "deploy", "deploy", "rollback"]
    assert [r["ok"] for r in records(setup.target)] == [True, True, False, True]


def test_ensemble_and_its_composing_model_load_in_dependency_order(setup):
    source = setup.source("ens", onnx_models.mlp(setup.root / "src" / "mlp-1.onnx", seed=1))
    pipe = source / "pipe"
    (pipe / "1").mkdir(parents=True)
    (pipe / "config.pbtxt").write_text(
        'name: "pipe"\nplatform: "ensemble"\nmax_batch_size: 8\n'
        'input { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }\n'
        'output { name: "OUT" data_type: TYPE_FP32 dims: [ 3 ] }\n'
        'ensemble_scheduling { step { model_name: "mlp" model_version: -1 '
        'input_map { key: "x" value: "IN" } output_map { key: "y" value: "OUT" } } }\n')
    events = Events()
    result = deploy_versions(setup.options(source, models=("pipe",)), events)
    assert [(m.name, m.status, m.from_version, m.to_version) for m in result.models] == [
        ("mlp", "deployed", 1, 2), ("pipe", "deployed", None, 1)]
    loads = [m for _, m in events.items if m.startswith(("loading", "switching"))]
    assert loads == ["loading mlp.tritonops-candidate (version 2)", "loading pipe.tritonops-candidate (version 1)",
                     "switching mlp to version 2", "switching pipe to version 1"]
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(setup.server.grpc_url)
    x = grpcclient.InferInput("IN", list(X.shape), "FP32")
    x.set_data_from_numpy(X)
    out = c.infer("pipe", [x]).as_numpy("OUT")
    c.close()
    np.testing.assert_allclose(out, reference(setup.root / "src" / "mlp-1.onnx"), atol=1e-5)
    assert hidden_leftovers(setup.target) == []
    assert "pipe.tritonops-candidate" not in {e[0] for e in index(setup)}


# ------------------------------------------------------------------------------ bad inputs change nothing
def test_bad_targets_and_servers_change_nothing(setup, cli, tmp_path):
    good = setup.source("good", onnx_models.mlp(setup.root / "src" / "mlp-1.onnx", seed=1))
    before = tree_digest(setup.target)

    port = free_port()
    code, _out, err = cli("deploy", good, "--to", setup.target, "--url", f"127.0.0.1:{port}")
    assert code == 6
    assert err.splitlines()[0].startswith(f"error: cannot reach the server at 127.0.0.1:{port} over HTTP: ")
    assert err.splitlines()[1] == "hint: check --url/--http-port and that tritonserver is running"

    code, _out, err = cli("deploy", good, "--to", tmp_path / "missing", *setup.cli_url())
    assert code == 2
    assert err.splitlines()[0] == f"error: target repository '{tmp_path / 'missing'}' does not exist"

    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _out, err = cli("deploy", good, "--to", a_file, *setup.cli_url())
    assert code == 2
    assert err.splitlines()[0] == f"error: target repository '{a_file}' is not a directory"

    # a directory the server does not serve: the probe candidate never shows up in its index
    other = tmp_path / "other"
    other.mkdir()
    code, _out, err = cli("deploy", good, "--to", other, *setup.cli_url())
    assert code == 7
    assert err.splitlines()[0] == (f"error: the server at {setup.server.http_url} does not serve {other}: a model "
                                   "put there does not appear in its repository index")
    assert list(other.iterdir()) == [other / ".tritonops-deploys.jsonl"]

    # inputs/outputs that would break the live version's clients
    wide = setup.root / "wide" / "repo"
    spec = mlp_spec()
    from tritonops.spec import TensorSpec

    wide_spec = type(spec)(**{**spec.__dict__, "outputs": (TensorSpec("y", spec.outputs[0].dtype, (5,)),)})
    write_model(wide, wide_spec, 1, onnx_models.mlp(setup.root / "src" / "wide.onnx", out_features=5))
    with pytest.raises(UsageError) as e:
        deploy_versions(setup.options(wide))
    assert e.value.message == ("the new 'mlp' changes its inputs, outputs or max_batch_size: clients of the live "
                               "version would break")
    assert tree_digest(setup.target) == before


@pytest.mark.lifecycle
def test_server_not_in_explicit_mode(tmp_path, cli):
    target = mlp_repo(tmp_path / "target", seed=0)
    source = mlp_repo(tmp_path / "source", seed=1)
    before = tree_digest(target)
    with TritonServer(ServerOptions(repository=target)) as server:  # model control "none"
        code, _out, err = cli("deploy", source, "--to", target, "--url", "127.0.0.1", "--http-port",
                              server.http_port, "--grpc-port", server.grpc_port)
    assert code == 6
    assert err.splitlines()[0] == (f"error: the server at {server.http_url} is not in explicit model-control mode "
                                   "(explicit model load / unload is not allowed if polling is enabled)")
    assert err.splitlines()[1].startswith("hint: start tritonserver with --model-control-mode=explicit")
    assert tree_digest(target) == before


def test_permission_denied_changes_nothing(tmp_path):
    """The target repository is not writable for the deploying user. As root, the CLI runs without
    CAP_DAC_OVERRIDE (setpriv), so the directory's mode applies to it like to anyone else."""
    root = Path(tempfile.mkdtemp(prefix="tritonops-perm-"))
    try:
        root.chmod(0o755)
        target = mlp_repo(root / "target", seed=0)
        source = mlp_repo(root / "source", seed=1)
        for p in [root / "target", *sorted((root / "target").rglob("*"))]:
            if p.is_dir():
                p.chmod(0o555)
        before = tree_digest(target)
        cmd = [sys.executable, "-m", "tritonops", "deploy", str(source), "--to", str(target), "--url",
               f"127.0.0.1:{free_port()}"]
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop CAP_DAC_OVERRIDE")
            cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)},
                              check=False)
        assert proc.returncode == RepositoryError.exit_code, proc.stderr
        assert proc.stderr.splitlines()[0] == f"error: cannot write to {target}: Permission denied"
        assert proc.stderr.splitlines()[1] == "hint: run as a user who may write the server's model repository"
        assert tree_digest(target) == before
    finally:
        for p in root.rglob("*"):
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(root)


def test_a_load_that_times_out_is_undone(setup):
    """A new Python-backend model whose initialize() outlasts --timeout: the roll-out fails with the
    reason, and nothing of it stays on disk or loaded (the cleanup waits for the late load to end)."""
    source = setup.root / "slow" / "repo"
    (source / "slow" / "1").mkdir(parents=True)
    (source / "slow" / "1" / "model.py").write_text(
        "import time\n\nclass TritonPythonModel:\n    def initialize(self, args):\n        time.sleep(6)\n\n"
        "    def execute(self, requests):\n        return []\n")
    (source / "slow" / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\ninput { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] }\n'
        'output { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] }\ninstance_group { kind: KIND_CPU }\n')
    before = tree_digest(setup.target)
    with pytest.raises(DeployFailed) as e:
        deploy_versions(setup.options(source, timeout_s=2.0))
    assert e.value.message.startswith("version 1 of 'slow' failed to load: ")
    assert e.value.message.endswith("; 'slow' stays as it was and the new version was removed")
    after = tree_digest(setup.target)
    assert {k: v for k, v in after.items() if k != ".tritonops-deploys.jsonl"} == before
    assert [e for e in index(setup) if e[0].startswith("slow")] == []
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(setup.server.http_url)
    assert not c.is_model_ready("slow.tritonops-candidate")
    c.close()
    assert [e for e in index(setup) if e[2] == "READY"] == [("mlp", "1", "READY")]


def test_rollback_without_a_record_is_a_clear_error(setup):
    with pytest.raises(UsageError) as e:
        rollback(setup.options(None))
    assert e.value.message == "nothing to roll back: no deployed version in the record is live now"


def test_links_out_of_the_source_repository_are_refused_not_copied(setup, cli):
    """Issue 14 item 2: a ``1/secret.txt -> /etc/passwd`` in the source used to arrive in the live
    repository as a copy of /etc/passwd."""
    good = setup.source("linked", onnx_models.mlp(setup.root / "src" / "mlp-1.onnx", seed=1))
    secret = setup.root / "outside-secret.txt"
    secret.write_text("TOPSECRET\n")
    (good / "mlp" / "1" / "secret.txt").symlink_to(secret)
    before = tree_digest(setup.target)
    with pytest.raises(UsageError) as e:
        deploy_versions(setup.options(good))
    assert e.value.message == ("'mlp/1/secret.txt' in the source repository is a symbolic link that leads outside "
                               "the repository: deploy copies only files inside the repository")
    code, out, err = cli("deploy", good, "--to", setup.target, *setup.cli_url())
    assert code == 2 and err.splitlines()[0] == f"error: {e.value.message}" and "TOPSECRET" not in out + err
    assert tree_digest(setup.target) == before
    assert not list(setup.target.rglob("secret.txt"))


def test_a_tampered_deploy_record_cannot_steer_a_rollback(setup):
    """The record names model directories and versions that a roll-back removes and reloads: a name
    or a version Triton could not have served (a path, a number beyond int64) is refused."""
    good = setup.source("good", onnx_models.mlp(setup.root / "src" / "mlp-1.onnx", seed=1))
    deploy_versions(setup.options(good))
    path = setup.target / ".tritonops-deploys.jsonl"
    lines = path.read_text().splitlines()
    last = json.loads(lines[-1])
    before = tree_digest(setup.target)
    for bad, message in (("../../../etc", "the version the deploy record gives for 'mlp' '../../../etc' is not a "
                          "whole number"),
                         (10**20, f"the version the deploy record gives for 'mlp' {10**20} is too large: Triton "
                          "reads versions as 64-bit integers")):
        last["models"][0]["from_version"] = bad
        path.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
        with pytest.raises(UsageError) as e:
            rollback(setup.options(None))
        assert e.value.message == message
    assert {k: v for k, v in tree_digest(setup.target).items() if "deploys" not in k} == \
        {k: v for k, v in before.items() if "deploys" not in k}
