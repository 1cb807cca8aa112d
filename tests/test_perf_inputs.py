"""perf's request data, option parsing and perf_analyzer CSV parsing (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tritonops.dtypes import BY_NAME
from tritonops.errors import UsageError
from tritonops.perf.analyzer import PerfOptions, parse_perf_csv, parse_range
from tritonops.perf.inputs import (
    generate_samples,
    load_samples,
    serialize_bytes,
    shape_args,
    tensor_from_json,
    write_input_data,
)
from tritonops.spec import TensorSpec

FIXTURES = Path(__file__).parent / "fixtures" / "perf"


def spec(name: str, dtype: str, dims: tuple[int, ...]) -> TensorSpec:
    return TensorSpec(name=name, dtype=BY_NAME[dtype], dims=dims)


@pytest.mark.parametrize("dtype", list(BY_NAME))
def test_generated_data_round_trips_through_the_input_json_for_every_dtype(tmp_path, dtype):
    inputs = [spec("x", dtype, (2, -1))]
    samples = generate_samples(inputs, {"x": (2, 5)}, count=3, seed=1)
    assert samples.shapes == {"x": (2, 5)}
    path = write_input_data(samples, tmp_path / "d.json")
    doc = json.loads(path.read_text())
    assert len(doc["data"]) == 3
    entry = doc["data"][0]["x"]
    assert entry["shape"] == [2, 5]
    # perf_analyzer refuses explicit content for FP16/BF16: numeric data always go as b64
    assert ("content" in entry) == (dtype == "BYTES")
    back = tensor_from_json(entry, dtype)  # the locust users read the same file
    original = samples.items[0]["x"]
    assert back.shape == original.shape
    if dtype == "BYTES":
        assert list(back.reshape(-1)) == list(original.reshape(-1))
    else:
        assert back.dtype == original.dtype and np.array_equal(back, original)
    assert shape_args(samples, inputs) == ["x:2,5"]


def test_non_utf8_bytes_are_sent_as_serialized_b64(tmp_path):
    inputs = [spec("img", "BYTES", (1,))]
    (tmp_path / "a.png").write_bytes(b"\x89PNG\xff\x00data")
    samples = load_samples(tmp_path, inputs, batched=True)
    entry = json.loads(write_input_data(samples, tmp_path / "d.json").read_text())["data"][0]["img"]
    assert "b64" in entry and entry["shape"] == [1]
    assert list(tensor_from_json(entry, "BYTES").reshape(-1)) == [b"\x89PNG\xff\x00data"]
    assert samples.tensor_bytes() == len(serialize_bytes(np.array([b"\x89PNG\xff\x00data"], dtype=object)))


def test_npz_samples_are_checked_and_cast(tmp_path):
    inputs = [spec("x", "FP32", (4,)), spec("ids", "INT64", (-1,))]
    np.savez(tmp_path / "ok.npz", x=np.ones((5, 4), dtype=np.float16), ids=np.arange(15).reshape(5, 3))
    s = load_samples(tmp_path / "ok.npz", inputs, batched=True)
    assert len(s.items) == 5 and s.items[0]["x"].dtype == np.float32 and s.shapes == {"x": (4,), "ids": (3,)}
    np.savez(tmp_path / "missing.npz", x=np.ones((5, 4), dtype=np.float32))
    with pytest.raises(UsageError, match=r"^missing.npz has no array for input 'ids'$") as e:
        load_samples(tmp_path / "missing.npz", inputs, batched=True)
    assert e.value.hint == "name the arrays after the model's inputs: x, ids (first axis: samples)"
    np.savez(tmp_path / "shape.npz", x=np.ones((5, 3), dtype=np.float32), ids=np.ones((5, 2), dtype=np.int64))
    with pytest.raises(UsageError, match=r"samples have shape \[3\], but input 'x' takes \[4\]"):
        load_samples(tmp_path / "shape.npz", inputs, batched=True)
    np.savez(tmp_path / "type.npz", x=np.ones((5, 4), dtype=np.float32), ids=np.ones((5, 2), dtype=np.float64))
    with pytest.raises(UsageError, match=r"holds float64 data, but input 'ids' is INT64"):
        load_samples(tmp_path / "type.npz", inputs, batched=True)


def test_text_samples_need_one_bytes_input(tmp_path):
    (tmp_path / "s.txt").write_text("first sentence\n\nsecond one\n")
    s = load_samples(tmp_path / "s.txt", [spec("text", "BYTES", (1,))], batched=True)
    assert [it["text"].tolist() for it in s.items] == [[b"first sentence"], [b"second one"]]
    with pytest.raises(UsageError, match=r"^text samples need a BYTES input; 'x' is FP32$"):
        load_samples(tmp_path / "s.txt", [spec("x", "FP32", (1,))], batched=True)
    with pytest.raises(UsageError, match=r"^unknown sample format '.csv' \(s.csv\)$"):
        (tmp_path / "s.csv").write_text("a")
        load_samples(tmp_path / "s.csv", [spec("text", "BYTES", (1,))], batched=True)


def test_shape_overrides_must_fit_the_dims():
    with pytest.raises(UsageError, match=r"^--shape x:3,3 does not fit the input's dims \[2,-1\]$"):
        generate_samples([spec("x", "FP32", (2, -1))], {"x": (3, 3)})
    with pytest.raises(UsageError, match=r"^--shape names unknown input\(s\): y$"):
        generate_samples([spec("x", "FP32", (2, -1))], {"y": (3,)})


def test_ranges_and_options():
    assert parse_range("1:8:2", "--concurrency", True) == (1, 3, 5, 7)
    assert parse_range("4", "--concurrency", True) == (4,)
    assert parse_range("10:50:20", "--request-rate", False) == (10.0, 30.0, 50.0)
    with pytest.raises(UsageError, match=r"^cannot parse --concurrency '1:x'$"):
        parse_range("1:x", "--concurrency", True)
    with pytest.raises(UsageError, match=r"^--request-rate '50:10' is empty or not positive$"):
        parse_range("50:10", "--request-rate", False)
    with pytest.raises(UsageError, match=r"^give either --concurrency or --request-rate, not both$"):
        PerfOptions(model="m", output_dir=Path("o"), url="h:1", concurrency=(1,), request_rate=(1.0,))
    with pytest.raises(UsageError, match=r"^--shared-memory system needs the server on this machine$"):
        PerfOptions(model="m", output_dir=Path("o"), url="10.1.2.3:8000", shared_memory="system")


def test_perf_analyzer_csv_is_parsed_into_typed_rows():
    # Real files written by perf_analyzer (tritonclient 2.50) with -f: HTTP has "Avg latency",
    # gRPC does not (the average is then the sum of the parts).
    http = parse_perf_csv(FIXTURES / "concurrency_http.csv", "concurrency", 1, "http")
    assert len(http) == 1
    r = http[0]
    assert (r.load, r.throughput, r.p50_us, r.p99_us, r.avg_us) == (1.0, 2046.45, 464.0, 605.0, 485.0)
    assert (r.server_queue_us, r.server_compute_input_us, r.server_compute_infer_us,
            r.server_compute_output_us) == (34.0, 18.0, 193.0, 34.0)
    grpc = parse_perf_csv(FIXTURES / "request_rate_grpc.csv", "request_rate", 1, "grpc")
    assert [g.load for g in grpc] == [100.0, 300.0]
    assert grpc[0].avg_us == 10 + 396 + 117 + 33 + 385 + 165 + 3
    assert grpc[1].requests_per_s == pytest.approx(287.952)


def test_images_decode_to_a_numeric_input_of_the_model_shape(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="Pillow decodes image samples (the [perf] extra installs it)")
    rgb = np.zeros((10, 20, 3), dtype=np.uint8)
    rgb[:, :10, 0] = 255  # left half red
    pil.fromarray(rgb).save(tmp_path / "a.png")
    hwc = load_samples(tmp_path / "a.png", [spec("img", "FP32", (4, 8, 3))], batched=True)
    x = hwc.items[0]["img"]
    assert x.shape == (4, 8, 3) and x.dtype == np.float32
    assert x[:, 0, 0].tolist() == [1.0] * 4 and x[:, -1, 0].tolist() == [0.0] * 4  # scaled to [0, 1], resized
    chw = load_samples(tmp_path, [spec("img", "UINT8", (3, 4, 8))], batched=True)
    assert chw.items[0]["img"].shape == (3, 4, 8) and chw.items[0]["img"][0, 0, 0] == 255
    with pytest.raises(UsageError, match=r"^input 'img' has dims \[-1,-1,3\]; decoded images need fixed HWC"):
        load_samples(tmp_path / "a.png", [spec("img", "FP32", (-1, -1, 3))], batched=True)
