"""tritonops.client against the session's real tritonserver (explicit model control):
every method over HTTP and gRPC, load with a config override, and error classification."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

import onnx_models
from deploy_repos import mlp_repo, mlp_spec, write_model
from tritonops.client import (
    PROTOCOLS,
    IndexEntry,
    MissingOutput,
    TritonClient,
    by_model,
    classify,
    endpoints,
    grpc_beside,
    grpc_request_bytes,
    host_of,
    http_request_body,
    infer_error,
    input_types,
    normalize_url,
    response_version,
    unreachable,
)
from tritonops.errors import ServerError, UsageError
from tritonops.netaddr import free_port
from tritonops.pbtxt import read_config
from tritonops.spec import ModelSpec, TensorSpec

pytestmark = pytest.mark.server
X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


@dataclass
class Served:
    http_url: str
    grpc_url: str
    repo: Path  # the served repository: mlp and words loaded, spare there but not loaded


@pytest.fixture(scope="module")
def server(tmp_path_factory, triton_session):
    root = tmp_path_factory.mktemp("client")
    repo = mlp_repo(root / "mlp")
    words = ModelSpec(name="words", platform="onnxruntime_onnx", max_batch_size=4,
                      inputs=(TensorSpec.parse("INPUT:BYTES:2"),), outputs=(TensorSpec.parse("OUTPUT:BYTES:2"),))
    write_model(repo, words, 1, onnx_models.identity(root / "words.onnx", TensorProto.STRING, ["batch", 2]))
    spare = root / "unloaded"
    write_model(spare, mlp_spec("spare"), 1, root / "mlp" / "src" / "mlp-0.onnx")
    with triton_session.models(repo):
        shutil.copytree(spare / "spare", triton_session.repository / "spare")  # in the repository, not loaded
        yield Served(triton_session.server.http_url, triton_session.server.grpc_url, triton_session.repository)


@pytest.fixture
def client(server):
    with TritonClient(server.http_url, server.grpc_url, timeout_s=30) as c:
        yield c


def want(x: np.ndarray, server) -> np.ndarray:
    import onnxruntime as ort

    model = server.repo / "mlp" / "1" / "model.onnx"
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def wait_unloaded(client: TritonClient, name: str) -> None:
    """Unloading is asynchronous (UNLOADING until the instances are gone)."""
    import time

    deadline = time.monotonic() + 30
    while client.models()[name].state == "UNLOADING" and time.monotonic() < deadline:
        time.sleep(0.05)


# ------------------------------------------------------------------------------ server and index
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_calls(client, protocol):
    assert client.is_server_live(protocol) and client.is_server_ready(protocol)
    meta = client.server_metadata(protocol)
    assert meta["name"] == "triton" and meta["version"].startswith("2.")
    assert client.is_model_ready("mlp", protocol=protocol) and client.is_model_ready("mlp", "1", protocol)
    assert not client.is_model_ready("spare", protocol=protocol)


def test_check_reachable_gives_the_version(client):
    assert client.check_reachable() == client.server_metadata()["version"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_repository_index(client, protocol):
    index = client.repository_index(protocol)
    states = {(e.name, e.version, e.state) for e in index}
    assert ("mlp", "1", "READY") in states and ("words", "1", "READY") in states
    spare = next(e for e in index if e.name == "spare")
    assert spare.unloaded and not spare.ready
    assert set(client.models(protocol)) == {"mlp", "spare", "words"}
    assert client.live_versions() == {"mlp": [1], "words": [1]}
    assert client.ready_versions("mlp") == [1] and client.ready_versions("spare") == []


def test_by_model_prefers_a_ready_version_then_the_highest():
    rows = [IndexEntry("m", "1", "READY", ""), IndexEntry("m", "3", "UNAVAILABLE", "boom"),
            IndexEntry("m", "2", "READY", ""), IndexEntry("n", "1", "UNAVAILABLE", "unloaded")]
    chosen = by_model(rows)
    assert chosen["m"].version == "2" and chosen["n"].unloaded


# ------------------------------------------------------------------------------ config and metadata
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_model_config_and_metadata(client, server, protocol):
    cfg = client.model_config("mlp", protocol=protocol)
    assert cfg.name == "mlp" and cfg.max_batch_size == 8 and cfg.platform == "onnxruntime_onnx"
    assert [t.name for t in cfg.input] == ["x"] and list(cfg.output[0].dims) == [3]
    assert input_types(cfg) == {"x": "FP32"}
    assert cfg.input[0].data_type == read_config(server.repo / "mlp" / "config.pbtxt").input[0].data_type
    meta = client.model_metadata("mlp", protocol=protocol)
    assert meta["name"] == "mlp" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]


# ------------------------------------------------------------------------------ inference
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_infer_every_protocol(client, server, protocol):
    out = client.infer(protocol, "mlp", {"x": X}, ["y"])
    np.testing.assert_allclose(out["y"], want(X, server), atol=1e-5)
    raw = client.infer_raw(protocol, "mlp", {"x": X[:1]}, ["y"], version="1", types={"x": "FP32"})
    assert response_version(raw) == "1" and raw.as_numpy("y").shape == (1, 3)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_infer_strings_come_back_as_bytes(client, protocol):
    words = np.array([["héllo", "a"], ["", "zz"]], dtype=np.object_)
    words = np.vectorize(lambda s: s.encode(), otypes=[object])(words)
    out = client.infer(protocol, "words", {"INPUT": words}, ["OUTPUT"])["OUTPUT"]
    assert out.dtype == np.object_ and out.tolist() == words.tolist()


def test_infer_missing_output_and_bad_protocol(client):
    class NoOutputs:
        def as_numpy(self, name):
            return None

    c = TritonClient(client.http_url, client.grpc_url)
    try:
        c.infer_raw = lambda *a, **k: NoOutputs()  # type: ignore[method-assign]
        with pytest.raises(MissingOutput, match="the response has no output 'y'"):
            c.infer("grpc", "mlp", {"x": X}, ["y"])
        with pytest.raises(ValueError, match="is not one of http-json, http-binary, grpc"):
            TritonClient.infer_raw(c, "http", "mlp", {"x": X}, ["y"])  # type: ignore[arg-type]
    finally:
        c.close()


def test_request_sizes(client):
    body, header_len = http_request_body({"x": X}, ["y"], binary=True, types={"x": "FP32"})
    assert header_len is not None and len(body) == header_len + X.nbytes
    json_body, none = http_request_body({"x": X}, ["y"], binary=False)
    assert none is None and b'"datatype":"FP32"' in json_body
    assert grpc_request_bytes("mlp", {"x": X}, ["y"]) > X.nbytes
    strings = np.array([[b"ab", b"c"]], dtype=np.object_)
    assert grpc_request_bytes("words", {"INPUT": strings}, ["OUTPUT"]) > 4 + 2 + 4 + 1


# ------------------------------------------------------------------------------ statistics
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_statistics(client, protocol):
    before = client.inference_counts("mlp")[0]
    client.infer("http-binary", "mlp", {"x": X}, ["y"])
    stats = client.statistics("mlp", protocol=protocol)
    (entry,) = stats["model_stats"]
    assert entry["name"] == "mlp" and entry["version"] == "1"
    assert int(entry["inference_stats"]["success"]["count"]) >= before + 1
    success, hits, misses = client.inference_counts("mlp")
    assert success >= before + 1 and hits == misses == 0  # no response cache on this server


# ------------------------------------------------------------------------------ load / unload
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_with_a_config_override_and_unload(client, server, protocol):
    cfg = read_config(server.repo / "spare" / "config.pbtxt")
    cfg.max_batch_size = 2
    client.load_model("spare", cfg, protocol=protocol)
    try:
        assert client.is_model_ready("spare", protocol=protocol)
        assert client.model_config("spare", protocol=protocol).max_batch_size == 2
        with pytest.raises(Exception) as too_big:
            client.infer("grpc", "spare", {"x": np.zeros((3, 4), np.float32)}, ["y"])
        assert "batch" in classify(too_big.value).message.lower()
    finally:
        client.unload_model("spare", protocol=protocol)
        wait_unloaded(client, "spare")
    assert not client.is_model_ready("spare") and client.models()["spare"].unloaded
    client.load_model("spare", protocol=protocol)  # no override, after an unload: config.pbtxt again
    try:
        assert client.model_config("spare", protocol=protocol).max_batch_size == 8
    finally:
        client.unload_model("spare", protocol=protocol)
        wait_unloaded(client, "spare")


def test_load_with_a_json_config(client, server):
    from tritonops.pbtxt import config_to_json

    cfg = read_config(server.repo / "spare" / "config.pbtxt")
    cfg.max_batch_size = 4
    client.load_model("spare", config_to_json(cfg))
    try:
        assert client.model_config("spare").max_batch_size == 4
    finally:
        client.unload_model("spare")
        wait_unloaded(client, "spare")


# ------------------------------------------------------------------------------ errors
def test_unreachable_port_is_classified(tmp_path):
    port = free_port()
    c = TritonClient(f"127.0.0.1:{port}", f"127.0.0.1:{port}", timeout_s=5)
    try:
        with pytest.raises(Exception) as http_e:
            c.server_metadata("http")
        info = classify(http_e.value)
        assert info.unreachable and not info.timed_out
        e = unreachable("HTTP", c.http_url, http_e.value)
        assert e.message == f"cannot reach Triton's HTTP endpoint at 127.0.0.1:{port}: connection refused"
        assert e.hint == ("start a server (tritonops serve REPOSITORY) or check --url and --http-port "
                          "(Triton's default is 8000)")
        with pytest.raises(Exception) as grpc_e:
            c.infer("grpc", "mlp", {"x": X}, ["y"])
        g = classify(grpc_e.value)
        assert g.unreachable and "UNAVAILABLE" in g.status
        detail, hint = infer_error(grpc_e.value)
        assert detail.startswith("the server went away (") and hint.startswith("check the server log")
        with pytest.raises(ServerError, match=f"cannot reach Triton's HTTP endpoint at 127.0.0.1:{port}"):
            c.check_reachable()
    finally:
        c.close()


def test_a_non_triton_port_answers_but_not_as_triton(server):
    c = TritonClient(server.http_url, server.http_url, timeout_s=5)  # gRPC pointed at the HTTP port
    try:
        with pytest.raises(ServerError) as e:
            c.check_reachable()
        assert e.value.message.startswith(f"{server.http_url} answered, but not as Triton's gRPC endpoint (")
        assert e.value.hint.startswith("check --grpc-port: is")
    finally:
        c.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_is_a_server_error_not_unreachable(client, protocol):
    with pytest.raises(Exception) as e:
        client.infer(protocol, "nope", {"x": X}, ["y"])
    info = classify(e.value)
    assert not info.unreachable and "nope" in info.message
    assert info.status  # HTTP 400 / gRPC NOT_FOUND or INVALID_ARGUMENT
    detail, hint = infer_error(e.value)
    assert detail.startswith("inference failed: ") and "nope" in detail
    assert hint == "the server's error is above; check the inputs and the server log"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unknown_model_config(client, protocol):
    with pytest.raises(Exception) as e:
        client.model_config("nope", protocol=protocol)
    assert "nope" in classify(e.value).message and not classify(e.value).unreachable


# ------------------------------------------------------------------------------ URLs (no server)
def test_normalize_url():
    assert normalize_url("http://127.0.0.1:8000/") == "127.0.0.1:8000"
    assert normalize_url(" grpc://h:8001") == "h:8001" and normalize_url("[::1]:8000") == "[::1]:8000"
    with pytest.raises(UsageError, match=r"^--url 'https://h:1' is not HOST:PORT$"):
        normalize_url("https://h:1")
    with pytest.raises(UsageError, match=r"^--grpc-url 'h' has no port$"):
        normalize_url("h", "--grpc-url")
    with pytest.raises(UsageError, match="is not HOST:PORT"):
        normalize_url("h:1/v2")


def test_endpoints():
    assert endpoints("localhost") == ("localhost:8000", "localhost:8001")
    assert endpoints("h:9000", None, 9001) == ("h:9000", "h:9001")
    assert endpoints("h", 7000, 7001) == ("h:7000", "h:7001")
    with pytest.raises(UsageError, match=r"^--url 'http://h' includes a scheme$"):
        endpoints("http://h")
    with pytest.raises(UsageError, match=r"^--url 'h:1' has a port and --http-port is given too$"):
        endpoints("h:1", 2)
    with pytest.raises(UsageError, match=r"^cannot parse --url 'h:x'$"):
        endpoints("h:x")
    assert grpc_beside("h:8000") == "h:8001"
    assert host_of("http://[::1]:8000/") == "[::1]" and host_of("127.0.0.1:8000") == "127.0.0.1"
    assert host_of("localhost") == "localhost"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # tritonclient's __del__
def test_bad_url_is_a_usage_error():
    with pytest.raises(UsageError, match="cannot use server URL"):
        TritonClient("x:notaport", "x:1")
