"""System shared memory, a documented tritonclient feature, in the project's environment.

``tritonclient.utils.shared_memory`` (tritonclient 2.50) imports ``pkg_resources``, which the
setuptools a fresh venv gets no longer ships; the project pins one that does. Against a real
served model: register input and output regions, infer over HTTP and gRPC with the tensors in
shared memory, compare with onnxruntime, unregister, and leave /dev/shm as it was."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

import onnx_models
from tritonops.build import BuildOptions, build

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def served(tmp_path_factory, triton_session):
    root = tmp_path_factory.mktemp("shm")
    src = onnx_models.mlp(root / "src" / "mlp.onnx")
    build(BuildOptions(source=str(src), repository=root / "repo", name="mlp", max_batch_size=8))
    with triton_session.models(root / "repo"):
        yield triton_session.server, src


def _shm_files(prefix: str) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(prefix))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_system_shared_memory_inference(served, protocol):
    server, src = served
    lib = httpclient if protocol == "http" else grpcclient
    url = server.http_url if protocol == "http" else server.grpc_url
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    expected = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
    prefix = f"tritonops_test_{os.getpid()}_{protocol}"
    in_size, out_size = x.nbytes, expected.nbytes
    handles = [shm.create_shared_memory_region(f"{protocol}_in", f"/{prefix}_in", in_size),
               shm.create_shared_memory_region(f"{protocol}_out", f"/{prefix}_out", out_size)]
    client = lib.InferenceServerClient(url)
    try:
        assert _shm_files(prefix) == [f"{prefix}_in", f"{prefix}_out"]
        shm.set_shared_memory_region(handles[0], [x])
        # NaN until the server writes the output there: equal values below prove that it did.
        shm.set_shared_memory_region(handles[1], [np.full(expected.shape, np.nan, np.float32)])
        client.register_system_shared_memory(f"{protocol}_in", f"/{prefix}_in", in_size)
        client.register_system_shared_memory(f"{protocol}_out", f"/{prefix}_out", out_size)
        inp = lib.InferInput("x", list(x.shape), "FP32")
        inp.set_shared_memory(f"{protocol}_in", in_size)
        out = lib.InferRequestedOutput("y", binary_data=True) if protocol == "http" else lib.InferRequestedOutput("y")
        out.set_shared_memory(f"{protocol}_out", out_size)
        result = client.infer("mlp", [inp], outputs=[out])
        meta = result.get_output("y")
        shape = meta["shape"] if protocol == "http" else list(meta.shape)
        assert [int(d) for d in shape] == list(expected.shape)
        got = shm.get_contents_as_numpy(handles[1], np.float32, expected.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        client.unregister_system_shared_memory(f"{protocol}_in")
        client.unregister_system_shared_memory(f"{protocol}_out")
        status = client.get_system_shared_memory_status()
        regions = status if protocol == "http" else list(status.regions)
        assert not regions, regions
    finally:
        client.unregister_system_shared_memory()
        client.close()
        for h in handles:
            shm.destroy_shared_memory_region(h)
    assert _shm_files(prefix) == []
