"""The response-cache dimension (issue 15): repeated payloads at a stated fraction, the cache switched
on a served model by config override and switched back, and the server's own hit/miss counts."""

from __future__ import annotations

import collections
import math
from pathlib import Path

import numpy as np
import pytest

from tritonops.client import TritonClient
from tritonops.errors import UsageError
from tritonops.perf.cache import hot_count, is_hot, repeated_samples, run_cache_dimension
from tritonops.perf.inputs import Samples
from tritonops.perf.presets import PRESETS, preset_samples, write_preset_repository
from tritonops.perf.target import Target, fetch_model_io, open_target

MODEL = PRESETS["small"].model


def _key(item: dict[str, np.ndarray]) -> bytes:
    return b"|".join(name.encode() + (b"".join(a.reshape(-1)) if a.dtype == np.object_ else a.tobytes())
                     for name, a in sorted(item.items()))


# ------------------------------------------------------------------------------------------- the workload
@pytest.mark.parametrize("fraction", [0.0, 0.25, 1 / 3, 0.5, 0.9, 1.0])
def test_hot_positions_are_evenly_spread_and_start_with_the_first_item(fraction):
    hot = [is_hot(i, fraction) for i in range(90)]
    for n in range(91):
        assert sum(hot[:n]) == hot_count(n, fraction) == math.ceil(round(n * fraction, 9))
    assert hot[0] is (fraction > 0)


@pytest.mark.parametrize(("preset", "fraction"), [("small", 0.5), ("small", 0.3), ("text", 0.5), ("image-u8", 0.2)])
def test_repeated_samples_hold_one_hot_payload_at_the_fraction_and_fresh_distinct_ones(preset, fraction):
    base = preset_samples(preset, 4, seed=0)
    count = 40
    s = repeated_samples(base, fraction, count, seed=11)
    keys = [_key(item) for item in s.items]
    counts = collections.Counter(keys)
    (hot, repeats), *others = counts.most_common()
    assert repeats == hot_count(count, fraction) == math.ceil(count * fraction)
    assert keys[0] == hot
    assert all(n == 1 for _, n in others) and len(others) == count - repeats
    assert not set(keys) & {_key(item) for item in base.items}  # nothing a base sample put in a cache
    other_seed = {_key(item) for item in repeated_samples(base, fraction, count, seed=12).items}
    assert not set(keys) & other_seed  # a new cell's payloads are new too
    first = base.items[0]
    assert all(item.keys() == first.keys() for item in s.items)
    assert all(item[k].shape == first[k].shape and item[k].dtype == first[k].dtype for item in s.items for k in first)


def test_fresh_text_payloads_stay_sentences_of_the_samples_words():
    base = preset_samples("text", 3, seed=0)
    words = {w for item in base.items for w in item["text"].reshape(-1)[0].split()}
    for item in repeated_samples(base, 0.0, 10, seed=1).items:
        text = item["text"].reshape(-1)[0]
        assert isinstance(text, bytes)
        assert set(text.split()) <= words
    assert len({item["text"].reshape(-1)[0] for item in repeated_samples(base, 0.0, 10, seed=1).items}) == 10


def test_all_repeated_and_none_repeated():
    base = preset_samples("small", 2)
    assert len({_key(i) for i in repeated_samples(base, 1.0, 12).items}) == 1
    assert len({_key(i) for i in repeated_samples(base, 0.0, 12).items}) == 12


def test_big_payloads_are_capped_with_a_clear_error():
    base = preset_samples("image", 1)
    with pytest.raises(UsageError) as e:
        repeated_samples(base, 0.5, 1000, max_bytes=256 << 20)
    assert e.value.message == ("1000 payloads of 602 KB need 602 MB of request data, above the 268 MB a cache "
                               "cell may hold")
    assert "lower the rates or --duration" in e.value.hint


def test_samples_with_no_room_for_distinct_payloads_are_refused():
    base = Samples(({"flag": np.array([True])},), "flags.npz")
    with pytest.raises(UsageError, match=r"cannot make 3 distinct payloads from the samples of flags\.npz"):
        repeated_samples(base, 0.0, 3)


def test_a_fraction_outside_0_1_is_refused():
    with pytest.raises(UsageError, match=r"repeat fraction 1.5 is outside \[0, 1\]"):
        repeated_samples(preset_samples("small", 1), 1.5, 4)


# ------------------------------------------------------------------------------------------- served
@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("cache") / "repo"
    write_preset_repository(repo, ["small"])
    return repo


@pytest.fixture(scope="module")
def target(repo, triton_session):
    with triton_session.models(repo):  # the session server has a 4 MB cache and explicit model control
        yield Target(triton_session.server.http_url, triton_session.server.grpc_url)


def _served_config(target: Target):
    with TritonClient(target.http_url, target.grpc_url) as client:
        return client.model_config(MODEL)


def test_cache_on_answers_the_repeated_half_from_the_cache_and_cache_off_never(target, tmp_path):
    before = _served_config(target)
    assert not before.response_cache.enable
    io = fetch_model_io(target, MODEL)
    cells = run_cache_dimension(target, io, preset_samples("small", 4), protocols=("grpc",), rates=(30,),
                                repeats=1, duration_s=2, repeat_fraction=0.5, out_dir=tmp_path)
    on, off = sorted(cells, key=lambda c: not c.cache)
    assert (on.cache, off.cache) == (True, False)
    assert on.runs == off.runs == 1 and on.repeat_fraction == 0.5
    assert on.sent > 20 and off.sent > 20
    # Every request the server took with the cache on was looked up once; the hot payload's repeats
    # hit (all but its first request; a generator's warm-up requests of item 0 may prime it), every
    # fresh payload missed.
    assert on.hits + on.misses == on.server_requests
    warmup = on.server_requests - on.sent
    assert hot_count(on.sent, 0.5) - 1 <= on.hits <= hot_count(on.sent, 0.5) + warmup
    assert on.misses >= on.sent - hot_count(on.sent, 0.5)
    assert on.hit_ratio is not None and abs(on.hit_ratio - 0.5) < 0.1
    assert on.hit_ms is not None and on.miss_ms is not None
    assert off.hits == off.misses == 0 and off.hit_ratio is None and off.hit_ms is None
    assert off.server_requests >= off.sent and off.miss_ms is not None
    assert all(Path(d, "loadtest.json").is_file() for c in cells for d in c.output_dirs)
    assert not any(Path(d, "input_data.json").exists() for c in cells for d in c.output_dirs)  # disk: removed
    assert _served_config(target) == before


def test_the_original_config_is_back_after_an_error(target, tmp_path):
    before = _served_config(target)
    seen = []

    def progress(message: str) -> None:
        if message.startswith("locust:"):  # the first cell starts: the cache is on now
            seen.append(_served_config(target).response_cache.enable)
            raise RuntimeError("stopped by the test")

    io = fetch_model_io(target, MODEL)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        run_cache_dimension(target, io, preset_samples("small", 2), protocols=("http-binary",), rates=(10,),
                            repeats=1, duration_s=1, repeat_fraction=0.5, out_dir=tmp_path, progress=progress)
    assert seen == [True]
    assert _served_config(target) == before


@pytest.mark.server  # a server of its own: the session server has a cache
def test_a_server_without_a_cache_is_refused_with_how_to_start_one(repo, tmp_path):
    with open_target(repo, None, None, lambda _: None, explicit=True) as served:  # no cache
        target = Target(served.http_url, served.grpc_url)  # what --url gives
        io = fetch_model_io(target, MODEL)
        before = _served_config(target)
        with pytest.raises(UsageError) as e:
            run_cache_dimension(target, io, preset_samples("small", 2), protocols=("grpc",), rates=(10,),
                                repeats=1, duration_s=1, repeat_fraction=0.5, out_dir=tmp_path)
        assert e.value.message == (f"the server at {target.http_url} has no response cache: '{MODEL}' with "
                                   "response_cache enabled counted no cache lookups")
        assert "--cache-size 64MB" in e.value.hint and "--cache-config local,size=" in e.value.hint
        assert _served_config(target) == before
