"""The tritonserver lifecycle against the real server: busy ports, fail-fast start-up with the log,
dev-server mode, explicit model control, clean stops, no orphans, ``tritonops serve``.

What the CPU backends compute is tested in test_backends.py."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import onnx_models
from tritonops.build import BuildOptions, build
from tritonops.docker import docker_command
from tritonops.errors import ServerError, UsageError
from tritonops.netaddr import free_port
from tritonops.server import ServerOptions, TritonServer, find_tritonserver

pytestmark = [pytest.mark.server, pytest.mark.lifecycle]


def alive(pid: int) -> bool:
    """Running, and not a zombie (dead for our purpose)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_members(pgid: int) -> list[int]:
    """Live processes in a process group: the server and its Python backend stubs."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def repo(tmp_path, mlp_onnx) -> Path:
    build(BuildOptions(source=str(mlp_onnx), repository=tmp_path / "repo", name="mlp"))
    return tmp_path / "repo"


def broken_repo(repo: Path, mlp_onnx: Path) -> Path:
    """mlp is fine; 'broken' has a file that is not a model; 'nobatch' asks for batching that its
    model (dim 0 fixed to 1) cannot do and has no inputs, so the ORT autofill refuses it."""
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="broken"))
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not a model")
    (repo / "nobatch" / "1").mkdir(parents=True)
    onnx_models.mlp(repo / "nobatch" / "1" / "model.onnx", batch=None)
    config = mc.ModelConfig(name="nobatch", backend="onnxruntime", max_batch_size=8)
    (repo / "nobatch" / "config.pbtxt").write_text(text_format.MessageToString(config))
    return repo


def test_busy_port_is_refused_before_starting(repo):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = TritonServer(ServerOptions(repository=repo, http_port=port))
        with pytest.raises(ServerError) as info:
            server.__enter__()
    assert info.value.message == f"port {port} on 127.0.0.1 is in use"
    assert info.value.hint == "stop the process using it, or choose another with --http-port"
    assert server.pid == -1  # nothing was started


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"http_port": 70000}, "--http-port 70000 is not a port number"),
    ({"http_port": 9000, "grpc_port": 9000}, "the HTTP, gRPC and metrics ports must differ"),
    ({"load_models": ("mlp",)}, "--load-model needs explicit model control"),
    ({"explicit": True, "load_models": ("*", "mlp")},
     "--load-model '*' loads every model and cannot be combined with names"),
    ({"host": ""}, "the host address is empty"),
    ({"startup_timeout": 0}, "start-up timeout 0 s is not positive"),
])
def test_options_are_checked_at_construction(tmp_path, kwargs, message):
    with pytest.raises(UsageError) as info:
        ServerOptions(repository=tmp_path, **kwargs)
    assert info.value.message == message and info.value.hint


def test_missing_binary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONSERVER", str(tmp_path / "no-such-tritonserver"))
    with pytest.raises(ServerError) as info:
        find_tritonserver()
    assert info.value.message == f"$TRITONSERVER '{tmp_path / 'no-such-tritonserver'}' is not an executable file"
    assert info.value.hint


def test_broken_model_fails_fast_naming_it_with_the_log(repo, mlp_onnx):
    broken_repo(repo, mlp_onnx)
    started = time.monotonic()
    with pytest.raises(ServerError) as info, TritonServer(ServerOptions(repository=repo)):
        pass
    e = info.value
    assert e.message.startswith("tritonserver exited with code 1 during start-up: model '")
    assert "'broken' failed to load" in e.message or "'nobatch' failed to load" in e.message
    assert e.returncode == 1
    assert 0 < len(e.log_tail) <= 50 and any("failed to load" in line for line in e.log_tail)
    assert e.hint and "server log" in e.hint
    log = Path(e.hint.rsplit(": ", 1)[1])
    assert log.is_file()  # kept on failure
    log.unlink()
    assert time.monotonic() - started < 90


def test_dev_server_keeps_running_and_reports_failed_models(repo, mlp_onnx):
    broken_repo(repo, mlp_onnx)
    options = ServerOptions(repository=repo, exit_on_error=False, strict_readiness=False)
    with TritonServer(options) as server:
        states = {s.name: s for s in server.model_states()}
        with httpclient.InferenceServerClient(server.http_url) as client:
            assert client.is_model_ready("mlp")
    assert states["mlp"].state == "READY"
    assert states["broken"].state == "UNAVAILABLE" and states["broken"].reason
    assert states["nobatch"].state == "UNAVAILABLE"
    assert "model does not support batching while non-zero max_batch_size is specified" in states["nobatch"].reason


def test_strict_readiness_names_the_model_that_will_never_be_ready(repo, mlp_onnx):
    broken_repo(repo, mlp_onnx)
    started = time.monotonic()
    with pytest.raises(ServerError) as info, TritonServer(ServerOptions(repository=repo, exit_on_error=False)):
        pass
    assert " failed to load: " in info.value.message and info.value.returncode is None
    Path(info.value.hint.rsplit(": ", 1)[1]).unlink()  # the log kept for the user
    assert time.monotonic() - started < 60  # not the 180 s start-up timeout


def test_explicit_mode_cache_metrics_and_a_clean_stop(repo, mlp_onnx):
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="other"))
    log = repo.parent / "server.log"
    options = ServerOptions(repository=repo, explicit=True, load_models=("mlp",), cache_size_bytes=1 << 20,
                            python_shm_bytes=2 << 20, log_file=log)
    with TritonServer(options) as server:
        pid = server.pid
        stubs = [p for p in group_members(pid) if p != pid]
        assert stubs  # the Python backend stubs run in the server's own process group
        states = {s.name: s for s in server.model_states()}
        with urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        with httpclient.InferenceServerClient(server.http_url) as client:
            x = httpclient.InferInput("x", [1, 4], "FP32")
            x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
            assert client.infer("mlp", [x]).as_numpy("y").shape == (1, 3)
            client.load_model("other")
            assert client.is_model_ready("other")
        assert server.http_url.startswith("127.0.0.1:") and server.grpc_url.startswith("127.0.0.1:")
        assert server.log_path == log and server.log_tail(5)
    assert {n: s.state for n, s in states.items()} == {"mlp": "READY", "other": "UNAVAILABLE"}
    assert states["other"].reason.startswith("not loaded (explicit model control)")  # Triton gives neither
    assert 'nv_inference_count{model="mlp"' in metrics
    text = log.read_text()
    assert re.search(r"cache_enabled\s*\|\s*1\s*\|", text)
    assert '"shm-default-byte-size":"2097152"' in text
    assert not alive(pid) and not group_members(pid)


def test_killing_the_parent_takes_the_server_and_its_stubs_down(repo, tmp_path):
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from tritonops.server import ServerOptions, TritonServer
        with TritonServer(ServerOptions(repository=Path({str(repo)!r}))) as s:
            Path({str(pidfile)!r}).write_text(str(s.pid))
            time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        assert wait_until(pidfile.exists, 120)
        server_pid = int(pidfile.read_text())
        assert alive(server_pid) and len(group_members(server_pid)) > 1
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert wait_until(lambda: not group_members(server_pid), 45), group_members(server_pid)
    for log in Path(tempfile.gettempdir()).glob(f"tritonserver-{parent.pid}-*.log"):
        log.unlink()  # a killed parent cannot remove its server's log


def test_serve_command_prints_ready_and_stops_on_sigint(repo):
    cli = Path(sys.executable).parent / "tritonops"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([str(cli), "serve", str(repo), "--http-port", str(free_port()),
                             "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "Press Ctrl-C" in line:
            break
    text = "".join(lines)
    assert "READY" in text and "mlp" in text and "127.0.0.1" in text
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "tritonserver stopped" in rest


def test_serve_missing_repository(cli, tmp_path):
    code, _, err = cli("serve", tmp_path / "none")
    assert code == 2
    assert err.startswith(f"error: model repository '{tmp_path / 'none'}' does not exist or is not a directory")


def test_docker_command_is_loopback_and_read_only(tmp_path):
    cmd = docker_command(ServerOptions(repository=tmp_path, cache_size_bytes=1 << 20, python_shm_bytes=1 << 24),
                         "nvcr.io/nvidia/tritonserver:24.08-py3")
    assert cmd[:5] == ["docker", "run", "--rm", "--init", "--shm-size=256m"]
    joined = " ".join(cmd)
    for part in ("-p 127.0.0.1:8000:8000", "-p 127.0.0.1:8001:8001", "-p 127.0.0.1:8002:8002",
                 f"-v {tmp_path}:/models:ro", "nvcr.io/nvidia/tritonserver:24.08-py3 tritonserver",
                 "--model-repository=/models", "--cache-config=local,size=1048576",
                 "--backend-config=python,shm-default-byte-size=16777216"):
        assert part in joined
