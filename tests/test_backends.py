"""tritonops' Python-based onnxruntime and pytorch backends, served by the real tritonserver.

The session's server serves the module: every model below is built into the module's repository and
loaded there, and every request goes through real tritonclient HTTP or gRPC calls. The references
are in-process onnxruntime / torch runs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

import onnx_models
from tritonops.build import BuildOptions, build

pytestmark = pytest.mark.server

try:
    import torch
except ImportError:  # the torch extra is optional
    torch = None  # type: ignore[assignment]

QUEUE_DELAY_US = 100_000  # long enough that concurrent requests always meet in one batch


def sequence_model(path: Path) -> Path:
    """x[batch, seq] FP32 -> y[batch, seq] = 2x and s[batch, 1] = sum(x over seq): zero padding
    leaves s unchanged, and y must be cut back to each request's own length."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"]),
         helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1)],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch", 1])],
        initializer=[two, axes],
    )
    return onnx_models._save(graph, path)


def tensor(name: str, dtype: int, dims: list[int], ragged: bool = False) -> mc.ModelInput:
    return mc.ModelInput(name=name, data_type=dtype, dims=dims, allow_ragged_batch=ragged)


def write_model(repo: Path, config: mc.ModelConfig, model_file: Path, filename: str) -> None:
    version = repo / config.name / "1"
    version.mkdir(parents=True)
    (version / filename).write_bytes(model_file.read_bytes())
    (repo / config.name / "config.pbtxt").write_text(text_format.MessageToString(config))


def batched_config(name: str, backend: str, max_batch_size: int = 8, **params: str) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, backend=backend, max_batch_size=max_batch_size)
    config.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    for key, value in params.items():
        config.parameters[key].string_value = value
    return config


def torch_models(src: Path, repo: Path) -> None:
    assert torch is not None

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.fc(x))

    class Named(torch.nn.Module):
        # Arguments in another order than the config lists them: mapped by name, as Triton does.
        def forward(self, b: torch.Tensor, a: torch.Tensor, words: list[str]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                         list[str]]:
            return a - b, a > b, [w.upper() for w in words]

    torch.manual_seed(0)
    linear = Linear().eval()
    torch.jit.script(linear).save(str(src / "linear.pt"))
    torch.jit.script(Named()).save(str(src / "named.pt"))

    config = batched_config("ts_linear", "pytorch", INTRA_OP_THREAD_COUNT="1")
    config.input.append(tensor("INPUT__0", mc.TYPE_FP32, [4]))
    config.output.add(name="OUTPUT__0", data_type=mc.TYPE_FP32, dims=[3])
    write_model(repo, config, src / "linear.pt", "model.pt")

    config = batched_config("ts_named", "pytorch")
    config.input.extend([tensor("a", mc.TYPE_INT64, [2]), tensor("b", mc.TYPE_INT64, [2]),
                         tensor("words", mc.TYPE_STRING, [1])])
    config.output.add(name="DIFF__0", data_type=mc.TYPE_INT64, dims=[2])
    config.output.add(name="GREATER__1", data_type=mc.TYPE_BOOL, dims=[2])
    config.output.add(name="UPPER__2", data_type=mc.TYPE_STRING, dims=[1])
    write_model(repo, config, src / "named.pt", "model.pt")


@pytest.fixture(scope="module")
def served(tmp_path_factory, triton_session):
    root = tmp_path_factory.mktemp("backends")
    src, repo = root / "src", root / "repo"
    src.mkdir()
    mlp = onnx_models.mlp(src / "mlp.onnx")
    build(BuildOptions(source=str(mlp), repository=repo, name="mlp", max_batch_size=16,
                       max_queue_delay_us=QUEUE_DELAY_US))
    strings = onnx_models.identity(src / "s.onnx", TensorProto.STRING, ["batch", 2])
    build(BuildOptions(source=str(strings), repository=repo, name="strings", max_batch_size=8))
    bools = onnx_models.identity(src / "b.onnx", TensorProto.BOOL, ["batch", 3])
    build(BuildOptions(source=str(bools), repository=repo, name="bools", max_batch_size=8))
    build(BuildOptions(source=str(onnx_models.add_sub(src / "addsub.onnx", [4])), repository=repo, name="addsub"))

    # The feature dim is variable in the config but fixed (4) in the model, so a request of
    # another width reaches onnxruntime and fails there; padding makes it share a batch with others.
    config = batched_config("strict", "onnxruntime", **{"tritonops.pad_ragged": "true"})
    config.input.append(tensor("x", mc.TYPE_FP32, [-1], ragged=True))
    config.output.add(name="y", data_type=mc.TYPE_FP32, dims=[3])
    write_model(repo, config, mlp, "model.onnx")

    # Variable sequence lengths in one batch: grouped by shape, or padded and cut back.
    seq = sequence_model(src / "seq.onnx")
    for name, params in (("ragged", {}), ("padded", {"tritonops.pad_ragged": "true"})):
        config = batched_config(name, "onnxruntime", max_batch_size=16, **params)
        config.input.append(tensor("x", mc.TYPE_FP32, [-1], ragged=True))
        config.output.add(name="y", data_type=mc.TYPE_FP32, dims=[-1])
        config.output.add(name="s", data_type=mc.TYPE_FP32, dims=[1])
        write_model(repo, config, seq, "model.onnx")

    # No config.pbtxt at all: Triton's ONNX autofill rules, through the fallback backend.
    for name, model in (("auto", mlp), ("auto_vector", onnx_models.scale_vector(src / "vec.onnx")),
                        ("auto_fixed", onnx_models.mlp(src / "fixed.onnx", batch=None))):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.onnx").write_bytes(model.read_bytes())

    # Triton's layout for ONNX external data: 1/model.onnx/ is a directory with the model inside.
    (repo / "external" / "1" / "model.onnx").mkdir(parents=True)
    onnx_models.mlp(repo / "external" / "1" / "model.onnx" / "model.onnx", seed=5, save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    config = mc.ModelConfig(name="external", platform="onnxruntime_onnx", max_batch_size=4)
    config.input.append(tensor("x", mc.TYPE_FP32, [4]))
    config.output.add(name="y", data_type=mc.TYPE_FP32, dims=[3])
    (repo / "external" / "config.pbtxt").write_text(text_format.MessageToString(config))

    if torch is not None:
        torch_models(src, repo)
    with triton_session.models(repo):
        yield triton_session.server, src


def infer_concurrently(url: str, model: str, requests: list[dict[str, np.ndarray]], outputs: list[str]):
    """Send every request at once (gRPC async); returns per request either {output: array} or the error."""
    client = grpcclient.InferenceServerClient(url)
    results: list = [None] * len(requests)
    done = threading.Semaphore(0)

    def callback(k):
        def cb(result, error):
            results[k] = error if error is not None else {o: result.as_numpy(o) for o in outputs}
            done.release()
        return cb

    dtypes = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.object_): "BYTES"}
    for k, arrays in enumerate(requests):
        inputs = []
        for name, arr in arrays.items():
            inp = grpcclient.InferInput(name, list(arr.shape), dtypes[arr.dtype])
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        client.async_infer(model, inputs, callback(k), outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
    for _ in requests:
        assert done.acquire(timeout=60)
    client.close()
    return results


def statistics(url: str, model: str) -> tuple[int, int]:
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_every_model_ready_and_fallbacks_reported(served):
    server, _ = served
    states = {s.name: s.state for s in server.model_states()}
    assert set(states.values()) == {"READY"}, {k: v for k, v in states.items() if v != "READY"}
    assert server.fallback_backends == ("onnxruntime", "pytorch")


def test_mlp_equals_onnxruntime_over_http_and_grpc(served):
    server, src = served
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    expected = ort.InferenceSession(str(src / "mlp.onnx")).run(None, {"x": x})[0]
    with httpclient.InferenceServerClient(server.http_url) as client:
        i = httpclient.InferInput("x", [5, 4], "FP32")
        i.set_data_from_numpy(x, binary_data=False)  # JSON tensor data
        np.testing.assert_array_equal(client.infer("mlp", [i]).as_numpy("y"), expected)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        i = grpcclient.InferInput("x", [5, 4], "FP32")
        i.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("mlp", [i]).as_numpy("y"), expected)


def test_concurrent_requests_run_as_one_batch_and_split_back(served):
    server, src = served
    session = ort.InferenceSession(str(src / "mlp.onnx"))
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(16)]
    before = statistics(server.grpc_url, "mlp")
    results = infer_concurrently(server.grpc_url, "mlp", [{"x": x} for x in xs], ["y"])
    after = statistics(server.grpc_url, "mlp")
    for x, result in zip(xs, results, strict=True):
        assert isinstance(result, dict), result
        np.testing.assert_allclose(result["y"], session.run(None, {"x": x})[0], rtol=1e-6, atol=1e-6)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == sum(len(x) for x in xs)
    assert executions < len(xs)  # the batcher formed batches and the backend ran them whole


@pytest.mark.parametrize("model", ["ragged", "padded"])
def test_requests_of_different_lengths_in_one_batch(served, model):
    server, _ = served
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, length)).astype(np.float32) for length in [3, 7, 5, 7, 1, 3, 6, 2]]
    before = statistics(server.grpc_url, model)
    results = infer_concurrently(server.grpc_url, model, [{"x": x} for x in xs], ["y", "s"])
    after = statistics(server.grpc_url, model)
    for x, result in zip(xs, results, strict=True):
        assert isinstance(result, dict), result
        np.testing.assert_array_equal(result["y"], 2 * x)
        np.testing.assert_allclose(result["s"], x.sum(axis=1, keepdims=True), rtol=1e-6)
    assert after[1] - before[1] < len(xs)


def test_a_bad_request_fails_alone_and_the_next_one_succeeds(served):
    server, src = served
    session = ort.InferenceSession(str(src / "mlp.onnx"))
    rng = np.random.default_rng(4)
    requests = [{"x": rng.standard_normal((1, 4)).astype(np.float32)} for _ in range(6)]
    requests.insert(3, {"x": np.ones((1, 5), dtype=np.float32)})  # the model needs 4 features
    results = infer_concurrently(server.grpc_url, "strict", requests, ["y"])
    for k, (request, result) in enumerate(zip(requests, results, strict=True)):
        if k == 3:
            assert isinstance(result, InferenceServerException)
            assert "onnxruntime" in result.message()
        else:
            assert isinstance(result, dict), result
            np.testing.assert_allclose(result["y"], session.run(None, request)[0], rtol=1e-6, atol=1e-6)
    with httpclient.InferenceServerClient(server.http_url) as client:
        bad = httpclient.InferInput("x", [1, 5], "FP32")
        bad.set_data_from_numpy(np.ones((1, 5), dtype=np.float32))
        with pytest.raises(InferenceServerException, match="onnxruntime"):
            client.infer("strict", [bad])
        good = httpclient.InferInput("x", [1, 4], "FP32")
        good.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        assert client.infer("strict", [good]).as_numpy("y").shape == (1, 3)


def test_string_and_bool_models(served):
    server, _ = served
    words = np.array([[b"hello", "w\u00f6rld".encode()], [b"", b"x" * 300]], dtype=np.object_)
    flags = np.array([[True, False, True]], dtype=np.bool_)
    with httpclient.InferenceServerClient(server.http_url) as client:
        i = httpclient.InferInput("INPUT", [2, 2], "BYTES")
        i.set_data_from_numpy(words)
        np.testing.assert_array_equal(client.infer("strings", [i]).as_numpy("OUTPUT"), words)
        i = httpclient.InferInput("INPUT", [1, 3], "BOOL")
        i.set_data_from_numpy(flags)
        np.testing.assert_array_equal(client.infer("bools", [i]).as_numpy("OUTPUT"), flags)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        i = grpcclient.InferInput("INPUT", [2, 2], "BYTES")
        i.set_data_from_numpy(words)
        np.testing.assert_array_equal(client.infer("strings", [i]).as_numpy("OUTPUT"), words)


def test_non_batched_model(served):
    server, _ = served
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert client.get_model_config("addsub", as_json=True)["config"].get("max_batch_size", 0) == 0
        a = np.arange(4, dtype=np.float32)
        b = np.ones(4, dtype=np.float32)
        ins = [grpcclient.InferInput("INPUT0", [4], "FP32"), grpcclient.InferInput("INPUT1", [4], "FP32")]
        ins[0].set_data_from_numpy(a)
        ins[1].set_data_from_numpy(b)
        r = client.infer("addsub", ins)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)


def test_autocomplete_without_config(served):
    server, _ = served
    with httpclient.InferenceServerClient(server.http_url) as client:
        auto = client.get_model_config("auto")
        vector = client.get_model_config("auto_vector")
        fixed = client.get_model_config("auto_fixed")
        x = httpclient.InferInput("x", [3, 1], "FP32")
        x.set_data_from_numpy(np.array([[1.0], [2.0], [-3.0]], dtype=np.float32))
        doubled = client.infer("auto_vector", [x]).as_numpy("y")
    assert auto["max_batch_size"] == 4 and "dynamic_batching" in auto
    assert [(t["name"], t["data_type"], t["dims"]) for t in auto["input"]] == [("x", "TYPE_FP32", [4])]
    assert [(t["name"], t["dims"]) for t in auto["output"]] == [("y", [3])]
    # A rank-1 batched tensor: dims [1] (the backend feeds the model [batch]; the Python backend's
    # auto-complete API cannot write the reshape [] Triton's native ORT autofill adds).
    assert vector["max_batch_size"] == 4
    assert vector["input"][0]["dims"] == [1] and vector["output"][0]["dims"] == [1]
    np.testing.assert_array_equal(doubled, [[2.0], [4.0], [-6.0]])
    # dim 0 fixed in the model: no batching, full shapes.
    assert fixed.get("max_batch_size", 0) == 0 and "dynamic_batching" not in fixed
    assert fixed["input"][0]["dims"] == [1, 4]


def test_external_data_directory_layout(served):
    server, _ = served
    x = np.ones((2, 4), dtype=np.float32)
    path = Path(server.options.repository) / "external" / "1" / "model.onnx" / "model.onnx"
    expected = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        i = grpcclient.InferInput("x", [2, 4], "FP32")
        i.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("external", [i]).as_numpy("y"), expected)


@pytest.mark.torch
def test_torchscript_batched_through_the_pytorch_backend(served):
    if torch is None:
        pytest.skip("needs the torch extra")
    server, src = served
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((int(rng.integers(1, 3)), 4)).astype(np.float32) for _ in range(8)]
    before = statistics(server.grpc_url, "ts_linear")
    results = infer_concurrently(server.grpc_url, "ts_linear", [{"INPUT__0": x} for x in xs], ["OUTPUT__0"])
    after = statistics(server.grpc_url, "ts_linear")
    model = torch.jit.load(str(src / "linear.pt")).eval()
    for x, result in zip(xs, results, strict=True):
        assert isinstance(result, dict), result
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(result["OUTPUT__0"], expected, rtol=1e-5, atol=1e-6)
    assert after[1] - before[1] < len(xs)


@pytest.mark.torch
def test_torchscript_forward_argument_names_bool_and_strings(served):
    if torch is None:
        pytest.skip("needs the torch extra")
    server, _ = served
    requests = [{"a": np.array([[5, 1]], dtype=np.int64), "b": np.array([[2, 3]], dtype=np.int64),
                 "words": np.array([[b"abc"]], dtype=np.object_)},
                {"a": np.array([[0, 9], [4, 4]], dtype=np.int64), "b": np.array([[1, 1], [4, 0]], dtype=np.int64),
                 "words": np.array([[b"Mixed case"], [b""]], dtype=np.object_)}]
    results = infer_concurrently(server.grpc_url, "ts_named", requests, ["DIFF__0", "GREATER__1", "UPPER__2"])
    for request, result in zip(requests, results, strict=True):
        assert isinstance(result, dict), result
        np.testing.assert_array_equal(result["DIFF__0"], request["a"] - request["b"])
        np.testing.assert_array_equal(result["GREATER__1"], request["a"] > request["b"])
        expected = np.array([[w.decode().upper().encode() for w in row] for row in request["words"]],
                            dtype=np.object_)
        np.testing.assert_array_equal(result["UPPER__2"], expected)


def _backend_module(tmp_path: Path):
    """The onnxruntime fallback backend's model.py, imported outside the stub from the backend
    directory the server launcher assembles (model.py, _batching.py and the Python backend's
    triton_python_backend_utils)."""
    import importlib.util
    import sys

    from tritonops.server import _assemble_backends, find_tritonserver

    backends, _ = _assemble_backends(find_tritonserver(), tmp_path)
    sys.path.insert(0, str(backends / "python"))
    try:
        spec = importlib.util.spec_from_file_location("_ort_fallback", backends / "onnxruntime" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:  # model.py puts its own directory on sys.path too
        for d in (backends / "python", backends / "onnxruntime"):
            while str(d) in sys.path:
                sys.path.remove(str(d))
    return module


@pytest.mark.parametrize("param, threads", [(None, 1), ("0", 1), ("2", 2)])
def test_session_threads_and_no_spinning(tmp_path, param, threads):
    """One intra-op thread unless the config asks; idle pool threads never spin (instances are
    separate processes on shared cores)."""
    backend = _backend_module(tmp_path)
    config = {"parameters": {"intra_op_thread_count": {"string_value": param}}} if param is not None else {}
    session = backend._session(str(onnx_models.mlp(tmp_path / "m.onnx")), config)
    options = session.get_session_options()
    assert options.intra_op_num_threads == threads
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
