"""One meaning of an .npz for every command, one cast rule, one reader (tritonops.samples)."""

from __future__ import annotations

import numpy as np
import pytest

from tritonops.dtypes import parse_dtype
from tritonops.errors import UsageError
from tritonops.perf.inputs import load_samples
from tritonops.samples import NpzSamples, castable, check_inputs, load_inputs, npz_request, read_npz
from tritonops.spec import TensorSpec


def _spec(dtype: str, dims=(4,)) -> TensorSpec:
    return TensorSpec("x", parse_dtype(dtype), dims)


def test_first_axis_counts_samples_for_validate_and_perf(tmp_path):
    """The same file means the same samples to validate --inputs and perf --samples."""
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "s.npz", x=data)
    spec = _spec("FP32")
    perf_batched = load_samples(tmp_path / "s.npz", [spec], batched=True)
    perf_unbatched = load_samples(tmp_path / "s.npz", [spec], batched=False)
    given = load_inputs(tmp_path / "s.npz")
    assert isinstance(given, NpzSamples)
    # A batching model: validate sends the three samples as one batch; perf sends them one by one.
    batch = check_inputs("m", npz_request(given, 8), [spec], 8)["x"]
    assert batch.shape == (3, 4)
    assert [s["x"].tolist() for s in perf_batched.items] == batch.tolist()
    # A model without batching: each sample is a whole request; validate's request is the first one.
    request = check_inputs("m", npz_request(given, 0), [spec], 0)["x"]
    assert request.tolist() == perf_unbatched.items[0]["x"].tolist() == data[0].tolist()


@pytest.mark.parametrize(("given", "want", "ok"), [
    (np.float16, "FP32", True), (np.int32, "INT64", True), (np.uint8, "INT32", True), (np.float32, "FP32", True),
    (np.float64, "FP32", False), (np.int64, "FP32", False), (np.int32, "FP32", False), (np.float64, "INT64", False),
    (np.int64, "INT32", False), (np.bool_, "BOOL", True), (np.int8, "BOOL", False),
])
def test_one_cast_rule_is_lossless(given, want, ok):
    assert castable(np.zeros(2, dtype=given), _spec(want)) is ok


def test_cast_rule_for_strings():
    assert castable(np.array(["a"]), _spec("BYTES"))
    assert castable(np.array([b"a"], dtype=object), _spec("BYTES"))
    assert not castable(np.zeros(1, np.float32), _spec("BYTES"))
    assert not castable(np.array(["a"]), _spec("FP32"))


def test_validate_and_perf_apply_the_same_rule(tmp_path):
    spec = _spec("FP32")
    np.savez(tmp_path / "half.npz", x=np.ones((2, 4), np.float16))
    np.savez(tmp_path / "double.npz", x=np.ones((2, 4), np.float64))
    got = check_inputs("m", load_inputs(tmp_path / "half.npz"), [spec], 8)["x"]
    assert got.dtype == np.float32
    assert load_samples(tmp_path / "half.npz", [spec], batched=True).items[0]["x"].dtype == np.float32
    with pytest.raises(UsageError, match=r"^input 'x' of model 'm': expected FP32, given FP64$"):
        check_inputs("m", load_inputs(tmp_path / "double.npz"), [spec], 8)
    with pytest.raises(UsageError, match=r"holds float64 data, but input 'x' is FP32"):
        load_samples(tmp_path / "double.npz", [spec], batched=True)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not a zip", b"\x93NUMPY garbage"])
def test_corrupt_npz_is_a_usage_error(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=r"cannot read '.*bad.npz'") as e:
        read_npz(path)
    assert e.value.hint == "write it with numpy.savez"
    with pytest.raises(UsageError, match=r"cannot read"):
        load_samples(path, [_spec("FP32")], batched=True)
