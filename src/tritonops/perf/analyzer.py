"""``tritonops perf``: drive the real ``perf_analyzer`` over a sweep of concurrencies or request rates.

Each sweep point is its own perf_analyzer run with its own ``-f`` CSV, so progress can be shown per
point, Ctrl-C keeps every finished point, and a server that dies mid-sweep costs only the point it
died in. Results are parsed from perf_analyzer's CSV (never its stdout) into ``PerfRow``s.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from tritonops.client import host_of
from tritonops.errors import ExternalToolError, MissingDependencyError, ServerError, UsageError
from tritonops.external import run_tool
from tritonops.perf.inputs import (
    Samples,
    check_samples_path,
    generate_samples,
    load_samples,
    parse_shapes,
    shape_args,
    write_input_data,
)
from tritonops.perf.target import ModelIO, Protocol, Target, fetch_model_io, open_target, saved_samples
from tritonops.progress import Progress
from tritonops.units import parse_values

SCHEMA = "tritonops.perf/1"
UNSTABLE_RETURNCODE = 2  # perf_analyzer: "Failed to obtain stable measurement"
# An unstable point is measured again with a window twice as long, as Model Analyzer does with
# perf_analyzer_max_auto_adjusts, up to this many times and this long a window.
UNSTABLE_RETRIES = 2
MAX_RETRY_WINDOW_MS = 30_000
Mode = Literal["concurrency", "request_rate"]


# ------------------------------------------------------------------------------------------- the tool
def perf_analyzer_path() -> Path | None:
    candidate = Path(sys.executable).parent / "perf_analyzer"
    if candidate.exists():
        return candidate
    found = shutil.which("perf_analyzer")
    return Path(found) if found else None


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer from tritonclient 2.50 needs libcudart.so.12 (nvidia-cuda-runtime-cu12) even on CPU."""
    env = dict(os.environ)
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    dirs = []
    if spec is not None and spec.submodule_search_locations:
        dirs.append(str(Path(next(iter(spec.submodule_search_locations))) / "lib"))
    if env.get("LD_LIBRARY_PATH"):
        dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dirs)
    return env


def require_perf_analyzer() -> Path:
    pa = perf_analyzer_path()
    if pa is None:
        raise MissingDependencyError("tritonclient[all]==2.50.0", "perf", "tritonops perf (perf_analyzer)")
    return pa


def library_hint(output: str) -> str | None:
    if "libb64.so" in output:
        return "perf_analyzer needs libb64: apt-get install -y libb64-0d (scripts/setup.sh installs it)"
    if "libcudart.so" in output:
        return "perf_analyzer needs libcudart.so.12: pip install nvidia-cuda-runtime-cu12 (the [perf] extra)"
    return None


# ------------------------------------------------------------------------------------------- options
def parse_range(text: str, what: str, integer: bool) -> tuple[float, ...]:
    """``start[:end[:step]]`` (perf_analyzer's syntax) -> the explicit list of values, end included
    (the one sweep parser, ``units.parse_values``: positive, finite, at most 200 points)."""
    return parse_values(text, what, integer=integer, allow_list=False)


@dataclass(frozen=True)
class PerfOptions:
    """One ``tritonops perf`` run: the model, where it is served, the sweep and the measurement."""

    model: str
    output_dir: Path
    serve: Path | None = None
    url: str | None = None
    grpc_url: str | None = None
    model_version: str = ""
    protocol: Protocol = "http"
    http_format: Literal["binary", "json"] = "binary"  # HTTP tensor encoding of inputs and outputs
    concurrency: tuple[int, ...] = ()
    request_rate: tuple[float, ...] = ()
    distribution: Literal["poisson", "constant"] = "poisson"
    batch_sizes: tuple[int, ...] = (1,)
    shared_memory: Literal["none", "system"] = "none"
    measurement_interval_ms: int = 5000
    stability_percentage: float = 10.0
    max_trials: int = 10
    percentile: int | None = None
    samples: Path | None = None
    shapes: tuple[str, ...] = ()
    point_timeout_s: float = 600.0
    # Stateful and decoupled models (see sequence_stream_args): None = from the served config.
    sequence_length: int | None = None
    sequence_id_range: str | None = None  # START:END
    streaming: bool | None = None

    def __post_init__(self) -> None:
        if self.samples is not None:  # before any server is asked
            check_samples_path(self.samples)
        check_sequence_options(self)
        if self.protocol not in ("http", "grpc"):
            raise UsageError(f"--protocol '{self.protocol}' is not http or grpc", "use --protocol http or grpc")
        if self.http_format not in ("binary", "json"):
            raise UsageError(f"--http-format '{self.http_format}' is not binary or json", "use binary or json")
        if self.distribution not in ("poisson", "constant"):
            raise UsageError(f"--distribution '{self.distribution}' is not poisson or constant",
                             "use --distribution poisson")
        if self.shared_memory not in ("none", "system"):
            raise UsageError(f"--shared-memory '{self.shared_memory}' is not none or system",
                             "use --shared-memory system (CUDA shared memory needs a GPU)")
        if self.concurrency and self.request_rate:
            raise UsageError("give either --concurrency or --request-rate, not both", "run two sweeps")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise UsageError("batch sizes must be >= 1", "use --batch-size 1 (repeatable)")
        if self.measurement_interval_ms < 100:
            raise UsageError(f"--measurement-interval {self.measurement_interval_ms} ms is too short",
                             "use at least 100 ms (perf_analyzer's default is 5000)")
        if self.stability_percentage <= 0 or self.max_trials < 1:
            raise UsageError("--stability-percentage must be > 0 and --max-trials >= 1",
                             "e.g. --stability-percentage 10 --max-trials 10")
        if self.percentile is not None and not 1 <= self.percentile <= 99:
            raise UsageError(f"--percentile {self.percentile} is outside 1..99", "e.g. --percentile 99")
        if self.shared_memory == "system" and self.serve is None and self.url is not None:
            host = host_of(self.url)
            if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
                raise UsageError("--shared-memory system needs the server on this machine",
                                 "use --url 127.0.0.1:PORT, or drop --shared-memory")
        parse_shapes(self.shapes)

    @property
    def mode(self) -> Mode:
        return "request_rate" if self.request_rate else "concurrency"

    @property
    def loads(self) -> tuple[float, ...]:
        return self.request_rate or self.concurrency or (1,)


# ------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class PerfRow:
    """One sweep point. Latencies in microseconds, as perf_analyzer reports them; the server-side
    columns are perf_analyzer's averages from Triton's statistics."""

    mode: Mode
    load: float  # concurrency or offered request rate (requests/s)
    batch_size: int
    protocol: str
    status: Literal["ok", "unstable", "failed", "interrupted"]
    throughput: float | None = None  # inferences/s
    p50_us: float | None = None
    p90_us: float | None = None
    p95_us: float | None = None
    p99_us: float | None = None
    avg_us: float | None = None
    client_send_us: float | None = None
    network_us: float | None = None  # network + server send/recv
    server_queue_us: float | None = None
    server_compute_input_us: float | None = None
    server_compute_infer_us: float | None = None
    server_compute_output_us: float | None = None
    client_recv_us: float | None = None
    note: str = ""

    @property
    def requests_per_s(self) -> float | None:
        return None if self.throughput is None else self.throughput / self.batch_size


ROW_FIELDS = tuple(f.name for f in fields(PerfRow))
# perf_analyzer CSV column -> PerfRow field
_CSV_COLUMNS = {
    "Inferences/Second": "throughput",
    "p50 latency": "p50_us", "p90 latency": "p90_us", "p95 latency": "p95_us", "p99 latency": "p99_us",
    "Avg latency": "avg_us", "Client Send": "client_send_us", "Network+Server Send/Recv": "network_us",
    "Server Queue": "server_queue_us", "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us", "Server Compute Output": "server_compute_output_us",
    "Client Recv": "client_recv_us",
}


def parse_perf_csv(path: Path, mode: Mode, batch_size: int, protocol: str) -> list[PerfRow]:
    """Rows of a perf_analyzer ``-f`` CSV (the first column is Concurrency or Request Rate)."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = []
        for rec in reader:
            if not rec:
                continue
            load_key = "Request Rate" if "Request Rate" in rec else "Concurrency"
            if load_key not in rec or rec[load_key] in (None, ""):
                continue
            values: dict[str, Any] = {}
            for col, name in _CSV_COLUMNS.items():
                raw = rec.get(col)
                if raw not in (None, ""):
                    values[name] = float(raw)
            if values.get("avg_us") is None:
                parts = [values.get(k) for k in ("client_send_us", "network_us", "server_queue_us",
                                                  "server_compute_input_us", "server_compute_infer_us",
                                                  "server_compute_output_us", "client_recv_us")]
                if all(p is not None for p in parts):
                    values["avg_us"] = float(sum(p for p in parts if p is not None))
            rows.append(PerfRow(mode=mode, load=float(rec[load_key]), batch_size=batch_size, protocol=protocol,
                                status="ok", **values))
    return rows


@dataclass(frozen=True)
class PerfResult:
    model: str
    protocol: str
    http_format: str
    mode: Mode
    target: str
    rows: tuple[PerfRow, ...]
    output_dir: Path
    csv_path: Path
    json_path: Path
    input_source: str
    request_tensor_bytes: int
    commands: tuple[tuple[str, ...], ...]
    interrupted: bool = False
    error: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.interrupted and self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "model": self.model, "protocol": self.protocol, "http_format": self.http_format,
            "mode": self.mode, "target": self.target, "input_source": self.input_source,
            "request_tensor_bytes": self.request_tensor_bytes, "interrupted": self.interrupted,
            "error": self.error, "settings": self.settings,
            "rows": [asdict(r) for r in self.rows],
            "files": {"csv": str(self.csv_path), "json": str(self.json_path), "dir": str(self.output_dir)},
            "commands": [list(c) for c in self.commands],
        }


def write_rows_csv(rows: Sequence[PerfRow], path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    tmp.replace(path)
    return path


def _write_json(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------- the sweep
def _load_arg(value: float, integer: bool) -> str:
    return str(int(value)) if integer else f"{value:g}"


def perf_command(pa: Path, options: PerfOptions, target: Target, load: float, batch: int,
                 data_file: Path, shapes: Sequence[str], csv_path: Path) -> list[str]:
    o = options
    cmd = [str(pa), "-m", o.model, "-u", target.url(o.protocol), "-i", o.protocol, "-b", str(batch),
           "--measurement-interval", str(o.measurement_interval_ms),
           "--stability-percentage", f"{o.stability_percentage:g}", "--max-trials", str(o.max_trials),
           "--input-data", str(data_file), "-f", str(csv_path)]
    if o.model_version:
        cmd += ["-x", o.model_version]
    if o.mode == "request_rate":
        cmd += ["--request-rate-range", _load_arg(load, False), "--request-distribution", o.distribution]
    else:
        cmd += ["--concurrency-range", _load_arg(load, True)]
    for s in shapes:
        cmd += ["--shape", s]
    if o.percentile is not None:
        cmd += ["--percentile", str(o.percentile)]
    if o.shared_memory != "none":
        cmd += ["--shared-memory", o.shared_memory]
    if o.protocol == "http" and o.http_format == "json":
        cmd += ["--input-tensor-format", "json", "--output-tensor-format", "json"]
    return cmd


# ------------------------------------------------------------------------------------------- stateful / decoupled
DEFAULT_SEQUENCE_LENGTH = 20  # perf_analyzer's own default, passed explicitly so the run records it
SEQUENCE_ID_SPAN = 100_000  # ids per sweep point: a point never reuses a sequence id of the one before


def parse_id_range(text: str) -> tuple[int, int]:
    """``START:END`` of ``--sequence-id-range`` -> (start, end)."""
    parts = text.split(":")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        start, end = int(parts[0]), int(parts[1])
        if 1 <= start <= end:
            return start, end
    raise UsageError(f"cannot use --sequence-id-range '{text}'", "write START:END with 1 <= START <= END, e.g. 1:1000")


def check_sequence_options(o: PerfOptions) -> None:
    if o.sequence_length is not None and o.sequence_length < 1:
        raise UsageError(f"--sequence-length {o.sequence_length} is below 1", "e.g. --sequence-length 20")
    if o.sequence_id_range is not None:
        start, end = parse_id_range(o.sequence_id_range)
        most = int(max(o.loads)) if o.mode == "concurrency" else 1
        if end - start + 1 < most:
            raise UsageError(f"--sequence-id-range {o.sequence_id_range} holds {end - start + 1} ids, fewer than "
                             f"concurrency {most}", "give at least one id per concurrent sequence")
    if o.streaming and o.protocol != "grpc":
        raise UsageError("--streaming needs --protocol grpc", "Triton streams over gRPC only: add --protocol grpc")


def is_stateful(io: ModelIO) -> bool:
    return io.config.HasField("sequence_batching")


def is_decoupled(io: ModelIO) -> bool:
    return bool(io.config.model_transaction_policy.decoupled)


def check_streaming(o: PerfOptions, io: ModelIO) -> None:
    """Decoupled models answer over gRPC streaming only: refuse what cannot measure them."""
    if not is_decoupled(io):
        return
    if o.protocol != "grpc":
        raise UsageError(f"model '{io.name}' is decoupled: Triton serves it over gRPC streaming only, not HTTP",
                         "measure it with --protocol grpc (perf passes --streaming)")
    if o.streaming is False:
        raise UsageError(f"model '{io.name}' is decoupled and needs --streaming", "drop --no-streaming")


def sequence_stream_args(o: PerfOptions, io: ModelIO, point: int) -> list[str]:
    """perf_analyzer's flags for a stateful model (``--sequence-length``, ``--sequence-id-range``: by
    default ids of this sweep point only) and a decoupled one (``--streaming``)."""
    args = []
    if is_stateful(io) or o.sequence_length is not None or o.sequence_id_range is not None:
        args += ["--sequence-length", str(o.sequence_length or DEFAULT_SEQUENCE_LENGTH)]
        if o.sequence_id_range is not None:
            start, end = parse_id_range(o.sequence_id_range)
        else:
            start, end = 1 + point * SEQUENCE_ID_SPAN, (point + 1) * SEQUENCE_ID_SPAN
        args += ["--sequence-id-range", f"{start}:{end}"]
    if o.streaming or (o.streaming is None and is_decoupled(io)):
        args.append("--streaming")
    return args


def _check_batch(io: ModelIO, batch_sizes: Sequence[int]) -> None:
    too_big = [b for b in batch_sizes if b > max(io.max_batch_size, 1)]
    if too_big:
        if io.max_batch_size == 0:
            raise UsageError(f"model '{io.name}' does not batch (max_batch_size 0), but --batch-size "
                             f"{too_big[0]} was given", "use --batch-size 1")
        raise UsageError(f"--batch-size {too_big[0]} is above the model's max_batch_size {io.max_batch_size}",
                         f"use batch sizes up to {io.max_batch_size}")


def prepare_samples(io: ModelIO, samples: Path | None, shapes: Sequence[str], seed: int = 0,
                    saved: Path | None = None) -> Samples:
    """The user's samples; else those a build saved beside the model (``saved``, when present and
    no ``--shape`` asks for other sizes); else generated data."""
    if samples is not None:
        return load_samples(samples, io.inputs, io.batched)
    if saved is not None and saved.is_file() and not shapes:
        return load_samples(saved, io.inputs, io.batched)
    return generate_samples(io.inputs, parse_shapes(shapes), seed=seed)


def run_perf(options: PerfOptions, progress: Progress = lambda _: None) -> PerfResult:
    """Run the sweep; write ``perf.csv``/``perf.json`` (and per-point raw CSVs) under ``output_dir``.

    Ctrl-C returns the points measured so far (``interrupted``); a server that dies raises
    ServerError after writing the partial results."""
    pa = require_perf_analyzer()
    with open_target(options.serve, options.url, options.grpc_url, progress) as target:
        return sweep(options, target, pa, progress)


def sweep(options: PerfOptions, target: Target, pa: Path | None = None,
          progress: Progress = lambda _: None) -> PerfResult:
    """The sweep against a server that is already up (used by ``run_perf`` and the studies)."""
    pa = pa or require_perf_analyzer()
    o = options
    io = fetch_model_io(target, o.model, o.model_version)
    _check_batch(io, o.batch_sizes)
    check_streaming(o, io)
    out_dir = o.output_dir
    raw_dir = out_dir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    samples = prepare_samples(io, o.samples, o.shapes, saved=saved_samples(target, io.name))
    data_file = write_input_data(samples, out_dir / "input_data.json")
    shapes = shape_args(samples, io.inputs)
    env = perf_analyzer_env()
    rows: list[PerfRow] = []
    commands: list[tuple[str, ...]] = []
    points = [(b, load) for b in o.batch_sizes for load in o.loads]
    integer = o.mode == "concurrency"
    interrupted = False
    error: str | None = None
    label = "concurrency" if integer else "request rate"

    def result() -> PerfResult:
        res = PerfResult(
            model=o.model, protocol=o.protocol, http_format=o.http_format if o.protocol == "http" else "-",
            mode=o.mode, target=target.url(o.protocol), rows=tuple(rows), output_dir=out_dir,
            csv_path=out_dir / "perf.csv", json_path=out_dir / "perf.json", input_source=samples.source,
            request_tensor_bytes=samples.tensor_bytes(), commands=tuple(commands), interrupted=interrupted,
            error=error, settings={
                "measurement_interval_ms": o.measurement_interval_ms, "stability_percentage": o.stability_percentage,
                "max_trials": o.max_trials, "percentile": o.percentile, "distribution": o.distribution,
                "shared_memory": o.shared_memory, "shapes": shapes, "batch_sizes": list(o.batch_sizes),
            })
        write_rows_csv(res.rows, res.csv_path)
        _write_json(res.to_dict(), res.json_path)
        return res

    for i, (batch, load) in enumerate(points, 1):
        tag = f"b{batch}_{'c' if integer else 'r'}{_load_arg(load, integer)}"
        csv_path = raw_dir / f"{tag}.csv"
        csv_path.unlink(missing_ok=True)
        progress(f"perf_analyzer {i}/{len(points)}: {label} {_load_arg(load, integer)}, batch {batch}, {o.protocol}")
        base = PerfRow(mode=o.mode, load=float(load), batch_size=batch, protocol=o.protocol, status="ok")
        windows = retry_windows(o.measurement_interval_ms)
        try:
            for attempt, window in enumerate(windows):
                cmd = perf_command(pa, replace(o, measurement_interval_ms=window), target, load, batch, data_file,
                                   shapes, csv_path) + sequence_stream_args(o, io, i - 1)
                if attempt:  # the point's command is the run that gave its row
                    commands.pop()
                commands.append(tuple(cmd))
                if attempt:
                    progress(f"perf_analyzer {i}/{len(points)}: unstable, again with a {window} ms window")
                run = run_tool(cmd, env=env, timeout_s=o.point_timeout_s, check=False)
                if run.returncode != UNSTABLE_RETURNCODE or not target.alive():
                    break
                csv_path.unlink(missing_ok=True)
        except KeyboardInterrupt:
            interrupted = True
            got = parse_perf_csv(csv_path, o.mode, batch, o.protocol) if csv_path.exists() else []
            rows.extend(got or [replace(base, status="interrupted", note="stopped by Ctrl-C")])
            break
        (raw_dir / f"{tag}.log").write_text(run.output)
        if run.returncode == 0 and csv_path.exists():
            note = f"stable with a {window} ms window (retry {attempt})" if attempt else ""
            rows.extend(replace(r, note=note) for r in parse_perf_csv(csv_path, o.mode, batch, o.protocol))
            continue
        hint = library_hint(run.output)
        if hint:
            raise ExternalToolError(run.cmd, run.returncode, run.tail, hint)
        if not target.alive():
            rows.append(replace(base, status="failed", note="server died"))
            error = f"the server died during point {i} of {len(points)}"
            res = result()
            raise ServerError(
                f"the server stopped responding during the perf run ({i - 1} of {len(points)} points measured)",
                f"partial results are in {res.csv_path}; see the server log below"
                if target.log_tail() else f"partial results are in {res.csv_path}",
                log_tail=target.log_tail(),
            )
        if run.returncode == UNSTABLE_RETURNCODE:
            rows.append(replace(base, status="unstable", note=f"no stable measurement, also with a {window} ms "
                                "window; raise --stability-percentage or lower the load"))
            continue
        rows.append(replace(base, status="failed", note=_error_line(run.output)))
        error = f"perf_analyzer failed at point {i} of {len(points)}"
        res = result()
        raise ExternalToolError(run.cmd, run.returncode, run.tail,
                                f"{_error_line(run.output)} (log: {raw_dir / (tag + '.log')}; "
                                f"finished points are in {res.csv_path})")
    return result()


def retry_windows(interval_ms: int) -> tuple[int, ...]:
    """The measurement windows of one point: the one asked for, then doubled for each retry of an
    unstable measurement, while under ``MAX_RETRY_WINDOW_MS``."""
    windows = [interval_ms]
    while len(windows) <= UNSTABLE_RETRIES and windows[-1] * 2 <= max(MAX_RETRY_WINDOW_MS, interval_ms):
        windows.append(windows[-1] * 2)
    return tuple(windows)


def _error_line(output: str) -> str:
    """perf_analyzer's own error message (its last line mentioning an error), for the hint."""
    lines = [ln.strip() for ln in output.splitlines() if "error" in ln.lower() or "failed" in ln.lower()]
    return lines[-1] if lines else (output.strip().splitlines() or ["no output"])[-1]
