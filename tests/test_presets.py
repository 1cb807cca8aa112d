"""Payload presets (issue 15): every preset builds through tritonops' build path, passes `tritonops check`,
and serves over HTTP JSON, HTTP binary and gRPC on the real server, with the request sizes that make
the JSON-vs-binary gap visible."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tritonops.client import PROTOCOLS, TritonClient
from tritonops.errors import UsageError
from tritonops.pbtxt import read_config
from tritonops.perf.loadtest import measure_payloads
from tritonops.perf.presets import PRESETS, preset_samples, write_preset_repository
from tritonops.perf.target import Target, fetch_model_io

NAMES = tuple(PRESETS)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("presets") / "repo"
    models = write_preset_repository(repo, NAMES)
    assert models == {name: PRESETS[name].model for name in NAMES}
    return repo


# ------------------------------------------------------------------------------------------- no server
def test_unknown_preset_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UsageError) as e:
        write_preset_repository(tmp_path / "repo", ["small", "video"])
    assert "unknown payload preset 'video'" in e.value.message
    assert all(name in e.value.hint for name in NAMES)
    assert not (tmp_path / "repo").exists()


def test_writing_twice_changes_nothing_and_another_model_of_that_name_is_refused(tmp_path, digest):
    repo = tmp_path / "repo"
    write_preset_repository(repo, ["small", "text"])
    before = digest(repo)
    assert write_preset_repository(repo, ["text", "small"]) == {"text": "preset_text", "small": "preset_small"}
    assert digest(repo) == before
    (repo / "preset_small" / "1" / "model.onnx").write_bytes(b"something else")
    with pytest.raises(UsageError, match="version 1 of model 'preset_small' already exists"):
        write_preset_repository(repo, ["small"])


@pytest.mark.parametrize("name", NAMES)
def test_preset_samples_are_distinct_and_shaped_like_the_input(name):
    p = PRESETS[name]
    s = preset_samples(name, 6, seed=3)
    assert len(s.items) == 6
    arrays = [item[p.input_name] for item in s.items]
    assert all(a.shape == p.shape for a in arrays)

    def raw(a: np.ndarray) -> bytes:
        return b"".join(a.reshape(-1)) if a.dtype == np.object_ else a.tobytes()

    assert len({raw(a) for a in arrays}) == 6
    again = preset_samples(name, 6, seed=3).items
    assert [raw(a) for a in arrays] == [raw(i[p.input_name]) for i in again]  # the seed decides
    assert raw(arrays[0]) != raw(preset_samples(name, 1, seed=4).items[0][p.input_name])

def test_preset_values_look_like_their_kind():
    image = preset_samples("image", 2).items[0]["image"]
    assert image.dtype == np.float32 and image.min() >= 0.0 and image.max() <= 1.0 and image.std() > 0.2
    pixels = preset_samples("image-u8", 2).items[0]["pixels"]
    assert pixels.dtype == np.uint8 and pixels.max() > 200 and pixels.min() < 50
    for item in preset_samples("text", 20, seed=1).items:
        text = item["text"].reshape(-1)[0]
        assert isinstance(text, bytes) and text.endswith(b".") and len(text.split()) >= 8


def test_the_repository_is_what_tritonops_check_accepts(repo, cli):
    code, out, err = cli("check", repo)
    assert code == 0, out + err
    for name in NAMES:
        config = read_config(repo / PRESETS[name].model / "config.pbtxt")
        assert config.max_batch_size == 8 and config.HasField("dynamic_batching")
        assert [i.name for i in config.input] == [PRESETS[name].input_name]


# ------------------------------------------------------------------------------------------- served
@pytest.fixture(scope="module")
def target(repo, triton_session):
    with triton_session.models(repo):
        yield Target(triton_session.server.http_url, triton_session.server.grpc_url)


def _expected(name: str, x: np.ndarray, model_file: Path) -> np.ndarray:
    """What the model computes, from the numbers themselves (the small preset's weights through onnxruntime)."""
    if name == "image":
        return x.mean(axis=(2, 3))
    if name == "image-u8":
        return x.astype(np.float64).mean(axis=(1, 2))
    if name == "text":
        return np.array([[len(s.split(b" ")) for s in row] for row in x])
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("name", NAMES)
def test_each_preset_serves_over_every_protocol(name, repo, target):
    p = PRESETS[name]
    io = fetch_model_io(target, p.model)
    batch = {p.input_name: np.stack([item[p.input_name] for item in preset_samples(name, 2, seed=7).items])}
    expected = _expected(name, batch[p.input_name], repo / p.model / "1" / "model.onnx")
    output = io.outputs[0].name
    with TritonClient(target.http_url, target.grpc_url) as client:
        for protocol in PROTOCOLS:
            got = client.infer(protocol, p.model, batch, [output])[output]
            np.testing.assert_allclose(got.astype(np.float64), expected, rtol=1e-5, atol=1e-5, err_msg=protocol)


@pytest.mark.parametrize("name", NAMES)
def test_request_sizes_show_the_json_binary_gap(name, target):
    p = PRESETS[name]
    io = fetch_model_io(target, p.model)
    sample = preset_samples(name, 1, seed=2)
    first = {k: v[np.newaxis] for k, v in sample.items[0].items()}
    sizes = measure_payloads(target, io, first)
    tensor = sample.tensor_bytes()
    for protocol in ("http-binary", "grpc"):  # the tensor's own bytes plus a small header
        request, response = sizes[protocol]
        assert tensor < request < tensor + 400, (protocol, request, tensor)
        assert response < 400  # the presets answer with a few values
    if p.dtype == "BYTES":
        assert abs(p.request_bytes - tensor) < 4 * p.request_bytes  # the estimate is of the right order
    else:
        assert p.request_bytes == tensor == math.prod(p.shape) * (4 if p.dtype == "FP32" else 1)
    json_request = sizes["http-json"][0]
    if name == "image":
        assert json_request > 4 * sizes["http-binary"][0]  # FP32 as decimal text: several times larger
    if name == "image-u8":
        assert json_request > 2 * sizes["http-binary"][0]  # up to 3 digits and a comma per byte
