"""The response-cache dimension of the protocol study (issue 15): the same open-loop cells with Triton's
response cache off and on, with a chosen fraction of repeated payloads, and the server's own cache
statistics (hits, misses, time per hit and per miss) beside the client's latencies.

The workload of a cell: ``repeated_samples`` gives one *hot* payload at evenly spaced positions (a
``fraction`` of the requests, the first one included) and fresh, distinct payloads everywhere else,
new for every cell, so that the only payload that can hit the cache is the hot one. The load
generator sends request ``i`` with item ``i`` (cycling), and every cell has more items than
requests. Cache off and cache on run the same kind of workload; only the model's config differs.

The cache is switched on the served model without writing its repository: explicit model control,
the model loaded with a config override (``response_cache { enable: true }`` or ``false``), through
the tune's :class:`~tritonops.tune.apply.Applier`, which loads the original config back at the end,
however the run ends. The server must have a cache (``--cache-config local,size=N``): a model whose
config enables the cache on a server without one is served uncached and its cache statistics stay at
zero, which is how a server without a cache is told apart (one probe request)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import secrets
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonops.client import TritonClient, first_line, input_types
from tritonops.errors import ServerError, UsageError
from tritonops.pbtxt import ModelConfig
from tritonops.perf.inputs import Samples, serialize_bytes
from tritonops.perf.loadtest import (
    REQUESTS_FILE,
    LoadProtocol,
    LoadtestResult,
    Outcome,
    Phase,
    measure_payloads,
    run_locust,
)
from tritonops.perf.target import ModelIO, Target
from tritonops.progress import Progress
from tritonops.tune.apply import Applier, CandidateRefused, TunedModels, check_explicit

# The load generator holds every item of a cell (and its encoded request bodies): bound the tensor data.
MAX_PAYLOAD_BYTES = 256 << 20
DEFAULT_CACHE_BYTES = 64 << 20  # the cache tritonops gives a server it starts for the cache dimension
CHANGED_VALUES = 4  # values replaced per numeric tensor to make a fresh payload (the rest stays as sampled)
FRESH_TRIES = 20
NO_CACHE_HINT = ("start the server with a response cache and explicit model control: tritonops serve REPO "
                 f"--explicit --cache-size 64MB (tritonserver --cache-config "
                 f"local,size={DEFAULT_CACHE_BYTES} --model-control-mode explicit), or use --serve REPO")
EXPLICIT_HINT = ("the cache dimension switches the response cache with Triton's model control API: start the "
                 "server with --model-control-mode=explicit (tritonops serve REPO --explicit), or use --serve REPO")
OUTCOME_ORDER: tuple[Outcome, ...] = ("kept-up", "fell-behind", "generator-saturated", "interrupted")


@dataclass(frozen=True)
class CacheCell:
    """One (protocol, λ, cache off|on) over all repeats: medians and the min–max spread."""

    protocol: str
    rate: float
    cache: bool
    repeat_fraction: float  # share of requests whose payload repeats an earlier one
    runs: int
    achieved_rate: float
    p50_ms: float | None
    p99_ms: float | None
    p50_range: tuple[float, float] | None
    p99_range: tuple[float, float] | None
    outcome: Outcome  # the worst outcome over the repeats
    hits: int  # the server's cache statistics over the cell's runs (0 with the cache off)
    misses: int
    hit_ms: float | None  # server-side mean time of a request answered from the cache
    miss_ms: float | None  # server-side mean time of a request that missed (lookup + compute + insert)
    request_bytes: int
    sent: int = 0  # requests the generator sent over the cell's runs
    server_requests: int = 0  # successful requests the server counted over the cell's runs
    server_ms: float | None = None  # server-side mean time of any request (hits and computed ones)
    achieved_range: tuple[float, float] | None = None
    output_dirs: tuple[str, ...] = ()  # each run's files (records, locust report)

    @property
    def hit_ratio(self) -> float | None:
        """Hits / (hits + misses) as the server counted them; None with the cache off."""
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else None


# ------------------------------------------------------------------------------------------- the workload
def _size_text(n: float) -> str:
    """Decimal units, as payload sizes are usually quoted (an FP32 image: 602 KB)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def check_payload_memory(tensor_bytes: int, count: int, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
    """``count`` payloads of ``tensor_bytes`` each must fit in ``max_bytes``: a clear error otherwise."""
    need = count * tensor_bytes
    if need > max_bytes:
        raise UsageError(
            f"{count} payloads of {_size_text(tensor_bytes)} need {_size_text(need)} of request data, "
            f"above the {_size_text(max_bytes)} a cache cell may hold",
            "every request of a cache cell needs a payload of its own (about rate × duration of them): lower "
            "the rates or --duration, or use a smaller payload")


def hot_count(n: int, fraction: float) -> int:
    """How many of the first ``n`` items are the hot payload: ``ceil(n f)``. Item ``i`` is hot when
    ``ceil((i + 1) f) > ceil(i f)``: evenly spaced, starting with item 0, so any stretch of requests
    repeats it at the stated rate (and a generator's warm-up request, which sends item 0, primes it)."""
    return math.ceil(n * fraction - 1e-9)


def is_hot(i: int, fraction: float) -> bool:
    return hot_count(i + 1, fraction) > hot_count(i, fraction)


def _digest(item: dict[str, np.ndarray]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(item):
        arr = item[name]
        h.update(name.encode() + b"\0" + str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(serialize_bytes(arr) if arr.dtype == np.object_ else np.ascontiguousarray(arr).tobytes())
    return h.digest()


def _fresh_tensor(arr: np.ndarray, vocabulary: Sequence[bytes], rng: np.random.Generator) -> np.ndarray:
    """``arr`` with a few values changed: numbers drawn within the tensor's own range, words of
    strings swapped for words of the samples' vocabulary (so the payload stays realistic)."""
    out = arr.copy()
    flat = out.reshape(-1)
    if flat.size == 0:
        return out
    positions = rng.choice(flat.size, size=min(CHANGED_VALUES, flat.size), replace=False)
    if arr.dtype == np.object_:
        for p in positions[:1]:
            item = flat[p]
            words = (item if isinstance(item, bytes) else str(item).encode()).split(b" ")
            for w in rng.choice(len(words), size=min(2, len(words)), replace=False):
                words[w] = vocabulary[int(rng.integers(len(vocabulary)))]
            flat[p] = b" ".join(words)
    elif arr.dtype == np.bool_:
        flat[positions] = rng.random(len(positions)) < 0.5
    elif arr.dtype.kind in "iu":
        lo, hi = int(flat.min()), int(flat.max())
        flat[positions] = rng.integers(lo, hi, size=len(positions), endpoint=True).astype(arr.dtype)
    else:
        low, high = float(np.min(flat)), float(np.max(flat))
        flat[positions] = rng.uniform(low, high if high > low else low + 1.0, size=len(positions)).astype(arr.dtype)
    return out


def repeated_samples(base: Samples, fraction: float, count: int, seed: int = 0, *,
                     max_bytes: int = MAX_PAYLOAD_BYTES) -> Samples:
    """``count`` items: ``hot_count(count, fraction)`` of them one hot payload (at evenly spaced
    positions, see :func:`is_hot`), the others distinct. Every payload is fresh: made from a base
    sample with a few values changed (``seed`` decides which), and distinct from every base sample and
    from each other, so only repeats of the hot payload can hit a cache. ``max_bytes`` bounds the tensor data held."""
    if not 0.0 <= fraction <= 1.0:
        raise UsageError(f"repeat fraction {fraction:g} is outside [0, 1]",
                         "give the share of repeated payloads, e.g. --repeat-fraction 0.5")
    if count < 1:
        raise UsageError(f"payload count {count} is not positive", "ask for at least one payload")
    if not base.items:
        raise UsageError("no base samples to make payloads from", "give samples with at least one item")
    check_payload_memory(base.tensor_bytes(), count, max_bytes)
    rng = np.random.default_rng(abs(seed))
    vocabulary = sorted({w for item in base.items for arr in item.values() if arr.dtype == np.object_
                         for s in arr.reshape(-1) for w in (s if isinstance(s, bytes) else str(s).encode()).split()})
    vocabulary = vocabulary or [b"x"]
    seen = {_digest(item) for item in base.items}

    def fresh(j: int) -> dict[str, np.ndarray]:
        source = base.items[j % len(base.items)]
        for _ in range(FRESH_TRIES):
            item = {name: _fresh_tensor(arr, vocabulary, rng) for name, arr in source.items()}
            key = _digest(item)
            if key not in seen:
                seen.add(key)
                return item
        raise UsageError(f"cannot make {count} distinct payloads from the samples of {base.source}: their values "
                         "leave too little room", "give samples with more varied values, or a lower rate × duration")

    hot = fresh(int(rng.integers(len(base.items))))
    items = tuple(hot if is_hot(i, fraction) else fresh(i) for i in range(count))
    return Samples(items, f"{base.source} (repeat fraction {fraction:g}, seed {seed})")


def payloads_for(rate: float, duration_s: float) -> int:
    """Items a cell needs so that no request reuses a distinct payload: the Poisson count of arrivals
    over the duration with a wide margin (mean + 5 standard deviations + 10)."""
    mean = rate * duration_s
    return math.ceil(mean + 5 * math.sqrt(mean) + 10)


# ------------------------------------------------------------------------------------------- the server's view
@dataclass(frozen=True)
class CacheStats:
    """A model's cumulative statistics (counts and ns) that the cache dimension reads."""

    success: tuple[int, int] = (0, 0)
    hit: tuple[int, int] = (0, 0)
    miss: tuple[int, int] = (0, 0)

    @classmethod
    def read(cls, client: TritonClient, model: str) -> CacheStats:
        try:
            t = client.inference_totals(model)
        except (InferenceServerException, OSError) as e:
            raise ServerError(f"cannot read the statistics of '{model}': {e}",
                              "check that the server is up and has the statistics extension") from None
        return cls(t.get("success", (0, 0)), t.get("cache_hit", (0, 0)), t.get("cache_miss", (0, 0)))

    def minus(self, before: CacheStats) -> CacheStats:
        def sub(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
            return a[0] - b[0], a[1] - b[1]
        return CacheStats(sub(self.success, before.success), sub(self.hit, before.hit), sub(self.miss, before.miss))

    def plus(self, other: CacheStats) -> CacheStats:
        def add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
            return a[0] + b[0], a[1] + b[1]
        return CacheStats(add(self.success, other.success), add(self.hit, other.hit), add(self.miss, other.miss))

    @property
    def hit_ms(self) -> float | None:
        return self.hit[1] / self.hit[0] / 1e6 if self.hit[0] else None

    @property
    def computed_ms(self) -> float | None:
        """Mean time of the requests not answered from the cache (success includes the hits):
        queue + compute, plus the lookup and insert when the cache is on."""
        n, ns = self.success[0] - self.hit[0], self.success[1] - self.hit[1]
        return ns / n / 1e6 if n > 0 else None

    @property
    def server_ms(self) -> float | None:
        return self.success[1] / self.success[0] / 1e6 if self.success[0] else None


# ------------------------------------------------------------------------------------------- cache off / on
def cache_config(config: ModelConfig, enable: bool) -> ModelConfig:
    """``config`` with ``response_cache { enable }`` set (a copy)."""
    new = copy.deepcopy(config)
    new.response_cache.enable = enable
    return new


@dataclass
class CacheSwitch:
    """Loads the model with the cache off or on (config overrides) and, at the end, with the config
    it was served with."""

    client: TritonClient
    io: ModelIO
    applier: Applier
    original: ModelConfig
    current: bool | None = None  # None: the original config is loaded
    checked: bool = False  # a probe showed the server has a cache

    def set(self, enable: bool, probe: dict[str, np.ndarray], progress: Progress) -> None:
        """Serve the model with the cache on or off: the original config where it already is that
        (no reload; a changed model gets its original back), else an override."""
        if self.current is enable or (self.current is None and self.original.response_cache.enable is enable):
            pass
        elif self.original.response_cache.enable is enable:
            progress(f"loading the original config of '{self.io.name}' (response cache {'on' if enable else 'off'})")
            if self.applier.restore():
                raise ServerError(f"could not load the original config of '{self.io.name}' back",
                                  "check the server log")
        else:
            progress(f"loading '{self.io.name}' with the response cache {'on' if enable else 'off'}")
            self._load(cache_config(self.original, enable), enable)
        self.current = enable
        if enable and not self.checked:
            self._probe(probe)

    def _load(self, config: ModelConfig, enable: bool) -> None:
        try:
            self.applier.load_config(self.io.name, config)
        except CandidateRefused as e:
            # Not in explicit mode? tune's check says so with the fix (a reload only on this path).
            check_explicit(self.client, self.applier.models, EXPLICIT_HINT)
            raise UsageError(f"the server refused '{self.io.name}' with the response cache "
                             f"{'on' if enable else 'off'}: {e}",
                             "decoupled and sequence-batched models cannot use the response cache") from None
        except OSError as e:
            raise ServerError(f"the server went away while loading '{self.io.name}': {e}",
                              "check the server log") from None

    def _probe(self, probe: dict[str, np.ndarray]) -> None:
        """One request with a fresh payload: a server with a cache counts a lookup (a miss)."""
        before = CacheStats.read(self.client, self.io.name)
        try:
            self.client.infer_raw("http-binary", self.io.name, probe, [o.name for o in self.io.outputs],
                                  version=self.io.version, types=input_types(self.io.config))
        except (InferenceServerException, OSError) as e:
            raise ServerError(f"a test request to '{self.io.name}' failed: {first_line(str(e))}",
                              "check that the model serves requests (tritonops validate)") from None
        after = CacheStats.read(self.client, self.io.name).minus(before)
        if after.hit[0] + after.miss[0] == 0:
            raise UsageError(f"the server at {self.client.http_url} has no response cache: '{self.io.name}' with "
                             "response_cache enabled counted no cache lookups", NO_CACHE_HINT)
        self.checked = True


@contextlib.contextmanager
def cache_switch(target: Target, io: ModelIO, progress: Progress) -> Iterator[CacheSwitch]:
    """A CacheSwitch for the served model; its original config is loaded back when the block ends,
    however it ends (a failed restore is an error, unless another error is already on its way)."""
    with TritonClient(target.http_url, target.grpc_url, timeout_s=300) as client:
        try:
            original = client.model_config(io.name, io.version)
        except (InferenceServerException, OSError) as e:
            raise ServerError(f"cannot read the config of '{io.name}' at {target.http_url}: {first_line(str(e))}",
                              "check --url and that the model is loaded") from None
        applier = Applier(client, TunedModels(io.name, {io.name: original}), progress)
        switch = CacheSwitch(client, io, applier, original)
        ok = False
        try:
            yield switch
            ok = True
        finally:
            if applier.changed:
                progress(f"loading the original config of '{io.name}' back")
                failed = applier.restore()
                if failed and ok:
                    raise ServerError(f"could not load the original config of '{io.name}' back",
                                      "reload it by hand (the load API, or restart the server); see the server log")


# ------------------------------------------------------------------------------------------- the dimension
@dataclass
class CacheRun:
    """One cell's run: the load test's result and the model's statistics over it."""

    protocol: LoadProtocol
    rate: float
    cache: bool
    result: LoadtestResult
    stats: CacheStats = field(default_factory=CacheStats)


def median_or_none(values: Sequence[float]) -> float | None:
    """The median over repeats, None for none (the cache cells and the study's cells)."""
    return float(statistics.median(values)) if values else None


def value_range(values: Sequence[float]) -> tuple[float, float] | None:
    """(min, max) over repeats, None for none."""
    return (min(values), max(values)) if values else None


def aggregate_cache_runs(runs: Sequence[CacheRun], fraction: float) -> list[CacheCell]:
    """One cell per (protocol, λ, cache), in the order they first ran: medians and spreads of the
    client's numbers, the server's statistics summed over the repeats."""
    cells = []
    keys = list(dict.fromkeys((r.protocol, r.rate, r.cache) for r in runs))
    for protocol, rate, cache in keys:
        rs = [r for r in runs if (r.protocol, r.rate, r.cache) == (protocol, rate, cache)]
        p50 = [r.result.latency_ms["p50"] for r in rs if r.result.latency_ms]
        p99 = [r.result.latency_ms["p99"] for r in rs if r.result.latency_ms]
        achieved = [r.result.achieved_rate for r in rs]
        total = CacheStats()
        for r in rs:
            total = total.plus(r.stats)
        cells.append(CacheCell(
            protocol=protocol, rate=rate, cache=cache, repeat_fraction=fraction, runs=len(rs),
            achieved_rate=float(statistics.median(achieved)), p50_ms=median_or_none(p50), p99_ms=median_or_none(p99),
            p50_range=value_range(p50), p99_range=value_range(p99),
            outcome=max((r.result.outcome for r in rs), key=OUTCOME_ORDER.index),
            hits=total.hit[0], misses=total.miss[0], hit_ms=total.hit_ms, miss_ms=total.computed_ms,
            request_bytes=rs[0].result.request_bytes, sent=sum(r.result.sent for r in rs),
            server_requests=total.success[0], server_ms=total.server_ms, achieved_range=value_range(achieved),
            output_dirs=tuple(str(r.result.output_dir) for r in rs)))
    return cells


def _batch(item: dict[str, np.ndarray], io: ModelIO, batch_size: int) -> dict[str, np.ndarray]:
    return {k: (np.stack([v] * batch_size) if io.batched else v) for k, v in item.items()}


def run_cache_dimension(target: Target, io: ModelIO, samples: Samples, *, protocols: Sequence[LoadProtocol],
                        rates: Sequence[float], repeats: int, duration_s: float, repeat_fraction: float,
                        out_dir: Path, seed: int = 0, batch_size: int = 1, max_inflight: int = 256,
                        model_version: str = "", cell_timeout_s: float | None = None,
                        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
                        progress: Progress = lambda _: None) -> list[CacheCell]:
    """Open-loop cells with the response cache off and on, for each protocol and λ, ``repeats`` times.

    Repeats are interleaved (on then off, off then on in the next repeat, so drift does not favour
    one side); every cell gets fresh payloads (``repeated_samples`` with ``repeat_fraction``) and the
    model's statistics are read before and after it. The model's original config is loaded back at
    the end. Each cell's payload file is removed after it. A Ctrl-C ends the runs: the cell it cut
    is marked ``interrupted`` and what was measured is returned."""
    if repeats < 1:
        raise UsageError(f"--repeats {repeats} is not positive", "use --repeats 1 or more")
    if not protocols or not rates:
        raise UsageError("the cache dimension needs at least one protocol and one rate", "give --protocols and --rates")
    version = model_version or io.version
    check_payload_memory(samples.tensor_bytes() * batch_size, payloads_for(max(rates), duration_s),
                         max_payload_bytes)  # before anything is loaded: the largest cell decides
    out_dir.mkdir(parents=True, exist_ok=True)
    payloads = measure_payloads(target, io, _batch(samples.items[0], io, batch_size), version)
    # Fresh payloads in every run: the server's cache outlives a model reload and a previous run.
    run_id = secrets.randbits(31)

    def cell_seed(cell: int) -> int:
        return (abs(seed) << 64) | (run_id << 32) | cell

    probe = _batch(repeated_samples(samples, 0.0, 1, seed=cell_seed(0)).items[0], io, batch_size)
    runs: list[CacheRun] = []
    cell = 0
    with cache_switch(target, io, progress) as switch, \
            TritonClient(target.http_url, target.grpc_url, timeout_s=30) as client:
        for rep in range(repeats):
            for enable in ((True, False) if rep % 2 == 0 else (False, True)):
                switch.set(enable, probe, progress)
                for protocol in protocols:
                    for rate in rates:
                        cell += 1
                        cell_samples = repeated_samples(samples, repeat_fraction, payloads_for(rate, duration_s),
                                                        seed=cell_seed(cell), max_bytes=max_payload_bytes)
                        name = f"r{rep + 1}_cache-{'on' if enable else 'off'}_{protocol}_rate_{rate:g}"
                        progress(f"repeat {rep + 1}/{repeats}, cache {'on' if enable else 'off'}: "
                                 f"{protocol} at {rate:g} req/s")
                        before = CacheStats.read(client, io.name)
                        got, stopped = run_locust(
                            target, io, cell_samples, protocol, [Phase(rate, duration_s, seed=seed + cell)],
                            out_dir / name, batch_size=batch_size, max_inflight=max_inflight,
                            model_version=version, payloads=payloads, cell_timeout_s=cell_timeout_s,
                            progress=progress)
                        stats = CacheStats.read(client, io.name).minus(before)
                        # The cell's payloads (hundreds of MB for images; the seed in Samples.source
                        # makes them again): kept, a study's cells would fill the disk.
                        (out_dir / name / REQUESTS_FILE).unlink(missing_ok=True)
                        runs.extend(CacheRun(protocol, rate, enable, r, stats) for r in got)
                        if stopped:
                            return aggregate_cache_runs(runs, repeat_fraction)
    return aggregate_cache_runs(runs, repeat_fraction)
