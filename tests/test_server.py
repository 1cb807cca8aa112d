"""The server lifecycle and tritonops' CPU backends, against a real tritonserver over HTTP and gRPC."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto

import onnx_models
from tritonops.build import BuildOptions, build
from tritonops.errors import ServerError
from tritonops.pbtxt import read_config
from tritonops.server import ServerOptions, TritonServer, docker_command, free_port
from tritonops.spec import TensorSpec

pytestmark = pytest.mark.server


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    repo = root / "repo"
    mlp = onnx_models.mlp(root / "src" / "mlp.onnx")
    build(BuildOptions(source=str(mlp), repository=repo, name="mlp", max_batch_size=16, max_queue_delay_us=50_000))
    s = onnx_models.identity(root / "src" / "s.onnx", TensorProto.STRING, ["batch", 2])
    build(BuildOptions(source=str(s), repository=repo, name="strings", max_batch_size=8))
    b = onnx_models.identity(root / "src" / "b.onnx", TensorProto.BOOL, ["batch", 3])
    build(BuildOptions(source=str(b), repository=repo, name="bools", max_batch_size=8))
    fixed = onnx_models.add_sub(root / "src" / "addsub.onnx", [4])
    build(BuildOptions(source=str(fixed), repository=repo, name="addsub"))
    # Variable feature dim in the config, fixed in the model: a bad request reaches onnxruntime.
    build(BuildOptions(source=str(mlp), repository=repo, name="strict", max_batch_size=4))
    cfg_path = repo / "strict" / "config.pbtxt"
    cfg_path.write_text(cfg_path.read_text().replace("dims: 4", "dims: -1", 1))
    # No config.pbtxt at all: Triton's ONNX autofill rules, through the fallback backend.
    (repo / "auto" / "1").mkdir(parents=True)
    (repo / "auto" / "1" / "model.onnx").write_bytes(mlp.read_bytes())
    with TritonServer(ServerOptions(repository=repo)) as server:
        yield server, root


def test_all_models_ready_and_fallbacks_reported(served):
    server, _ = served
    states = {s.name: s.state for s in server.model_states()}
    assert states == dict.fromkeys(["mlp", "strings", "bools", "addsub", "strict", "auto"], "READY")
    assert "onnxruntime" in server.fallback_backends


def test_mlp_equals_onnxruntime_over_http_and_grpc(served):
    server, root = served
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    expected = ort.InferenceSession(str(root / "src" / "mlp.onnx")).run(None, {"x": x})[0]
    h = httpclient.InferenceServerClient(server.http_url)
    i = httpclient.InferInput("x", [5, 4], "FP32")
    i.set_data_from_numpy(x)
    np.testing.assert_array_equal(h.infer("mlp", [i]).as_numpy("y"), expected)
    g = grpcclient.InferenceServerClient(server.grpc_url)
    gi = grpcclient.InferInput("x", [5, 4], "FP32")
    gi.set_data_from_numpy(x)
    np.testing.assert_array_equal(g.infer("mlp", [gi]).as_numpy("y"), expected)
    g.close()


def test_concurrent_requests_are_batched_into_one_runtime_call(served):
    server, root = served
    sess = ort.InferenceSession(str(root / "src" / "mlp.onnx"))
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(16)]
    results: dict[int, np.ndarray] = {}
    done = []

    def callback(k):
        def cb(result, error):
            assert error is None, error
            results[k] = result.as_numpy("y")
            done.append(k)
        return cb

    for k, x in enumerate(xs):
        inp = grpcclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        client.async_infer("mlp", [inp], callback(k))
    deadline = time.time() + 30
    while len(done) < 16 and time.time() < deadline:
        time.sleep(0.01)
    after = client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
    client.close()
    for k, x in enumerate(xs):
        np.testing.assert_allclose(results[k], sess.run(None, {"x": x})[0], rtol=1e-6, atol=1e-6)
    inferences = int(after["inference_count"]) - int(before.get("inference_count", 0))
    executions = int(after["execution_count"]) - int(before.get("execution_count", 0))
    assert inferences == 16
    assert executions < inferences  # the batcher formed batches and the backend ran them whole


def test_string_and_bool_models(served):
    server, _ = served
    client = httpclient.InferenceServerClient(server.http_url)
    words = np.array([[b"hello", "w\u00f6rld".encode()], [b"", b"x" * 300]], dtype=np.object_)
    i = httpclient.InferInput("INPUT", [2, 2], "BYTES")
    i.set_data_from_numpy(words)
    np.testing.assert_array_equal(client.infer("strings", [i]).as_numpy("OUTPUT"), words)
    flags = np.array([[True, False, True]], dtype=np.bool_)
    i = httpclient.InferInput("INPUT", [1, 3], "BOOL")
    i.set_data_from_numpy(flags)
    np.testing.assert_array_equal(client.infer("bools", [i]).as_numpy("OUTPUT"), flags)


def test_non_batched_model(served):
    server, _ = served
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.get_model_config("addsub", as_json=True)["config"].get("max_batch_size", 0) == 0
    a = np.arange(4, dtype=np.float32)
    b = np.ones(4, dtype=np.float32)
    ins = [grpcclient.InferInput("INPUT0", [4], "FP32"), grpcclient.InferInput("INPUT1", [4], "FP32")]
    ins[0].set_data_from_numpy(a)
    ins[1].set_data_from_numpy(b)
    r = client.infer("addsub", ins)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)
    client.close()


def test_autocomplete_without_config(served):
    server, _ = served
    cfg = httpclient.InferenceServerClient(server.http_url).get_model_config("auto")
    assert cfg["max_batch_size"] == 4
    assert cfg["input"][0]["name"] == "x" and cfg["input"][0]["dims"] == [4]
    assert cfg["output"][0]["dims"] == [3]
    assert "dynamic_batching" in cfg


def test_bad_request_gets_an_error_and_the_next_one_succeeds(served):
    server, _ = served
    client = httpclient.InferenceServerClient(server.http_url)
    bad = httpclient.InferInput("x", [1, 5], "FP32")
    bad.set_data_from_numpy(np.ones((1, 5), dtype=np.float32))
    with pytest.raises(Exception, match="onnxruntime"):
        client.infer("strict", [bad])
    good = httpclient.InferInput("x", [1, 4], "FP32")
    good.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    assert client.infer("strict", [good]).as_numpy("y").shape == (1, 3)


@pytest.mark.torch
def test_torchscript_through_the_pytorch_backend(tmp_path):
    torch = pytest.importorskip("torch", reason="needs the torch extra")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).eval()
    pt = tmp_path / "m.pt"
    torch.jit.trace(model, torch.zeros(1, 4)).save(str(pt))
    build(BuildOptions(source=str(pt), repository=tmp_path / "repo", name="ts",
                       inputs=(TensorSpec.parse("INPUT__0:FP32:4"),)))
    x = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    with TritonServer(ServerOptions(repository=tmp_path / "repo")) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        i = grpcclient.InferInput("INPUT__0", [3, 4], "FP32")
        i.set_data_from_numpy(x)
        y = client.infer("ts", [i]).as_numpy("OUTPUT__0")
        client.close()
    with torch.no_grad():
        np.testing.assert_allclose(y, model(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_busy_port_is_refused(tmp_path, mlp_onnx):
    build(BuildOptions(source=str(mlp_onnx), repository=tmp_path / "repo"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServerError) as info:
            TritonServer(ServerOptions(repository=tmp_path / "repo", http_port=port)).__enter__()
    assert info.value.message == f"port {port} on 127.0.0.1 is in use"
    assert "--http-port" in info.value.hint


def test_broken_model_fails_fast_with_the_log(tmp_path, mlp_onnx):
    build(BuildOptions(source=str(mlp_onnx), repository=tmp_path / "repo", name="broken"))
    (tmp_path / "repo" / "broken" / "1" / "model.onnx").write_bytes(b"not a model")
    started = time.monotonic()
    with pytest.raises(ServerError) as info, TritonServer(ServerOptions(repository=tmp_path / "repo")):
        pass
    assert "broken" in info.value.message and "failed to load" in info.value.message
    assert info.value.returncode is not None and info.value.log_tail
    assert time.monotonic() - started < 60


def test_server_stops_cleanly(tmp_path, mlp_onnx):
    build(BuildOptions(source=str(mlp_onnx), repository=tmp_path / "repo"))
    with TritonServer(ServerOptions(repository=tmp_path / "repo")) as server:
        pid = server.pid
        assert alive(pid)
    assert not alive(pid)


def test_killing_the_parent_takes_the_server_down(tmp_path, mlp_onnx):
    build(BuildOptions(source=str(mlp_onnx), repository=tmp_path / "repo"))
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from tritonops.server import ServerOptions, TritonServer
        with TritonServer(ServerOptions(repository=Path({str(tmp_path / 'repo')!r}))) as s:
            Path({str(pidfile)!r}).write_text(str(s.pid))
            time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while not pidfile.exists() and time.time() < deadline:
        time.sleep(0.1)
    server_pid = int(pidfile.read_text())
    assert alive(server_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    while alive(server_pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(server_pid)


def test_serve_command_prints_ready_and_stops_on_sigint(tmp_path, mlp_onnx):
    build(BuildOptions(source=str(mlp_onnx), repository=tmp_path / "repo", name="clf"))
    cli = Path(sys.executable).parent / "tritonops"
    proc = subprocess.Popen([str(cli), "serve", str(tmp_path / "repo"), "--http-port", str(free_port()),
                             "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "Press Ctrl-C" in line:
            break
    text = "".join(lines)
    assert "READY" in text and "clf" in text and "127.0.0.1" in text
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "tritonserver stopped" in rest


def test_serve_missing_repository(cli, tmp_path):
    code, _, err = cli("serve", tmp_path / "none")
    assert code == 2
    assert err.startswith(f"error: model repository '{tmp_path / 'none'}' does not exist or is not a directory")


def test_docker_command_is_loopback_and_read_only(tmp_path):
    cmd = docker_command(ServerOptions(repository=tmp_path, cache_size_bytes=1 << 20),
                         "nvcr.io/nvidia/tritonserver:24.08-py3")
    joined = " ".join(cmd)
    assert "-p 127.0.0.1:8000:8000" in joined and f"{tmp_path}:/models:ro" in joined
    assert "--shm-size=256m" in joined and "--cache-config=local,size=1048576" in joined


def test_written_configs_parse(served):
    _, root = served
    for cfg in (root / "repo").glob("*/config.pbtxt"):
        read_config(cfg)
