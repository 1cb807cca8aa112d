"""Model Analyzer 1.58 as the peer of ``tritonops tune`` in perf/bench_tune.py.

It runs from its own virtualenv (perf/setup_model_analyzer.sh: it pulls tritonclient 2.73 and numpy 2,
which must not enter the project's venv), in local launch mode, with two wrappers written here:

* ``perf_analyzer``: the project's perf_analyzer 2.50 (MA's own needs glibc 2.38) with the library
  path tritonops' perf driver gives it (``perf_analyzer_env``); every run is logged, so the bench counts
  perf_analyzer processes itself instead of trusting MA's report.
* ``tritonserver``: perf/ma_tritonserver.py, i.e. ``tritonops.server.serve`` with MA's arguments, so MA's
  server has the environment and backend directory of tritonops' own; every start is logged.

MA's winner is read back from its results (``metrics-model-inference.csv``: the best row that satisfies
the constraint) and the variant's ``config.pbtxt`` in the output model repository, and turned into the
tune library's ``Candidate`` per model (``candidate_of``), so the bench can load it as a config override.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tritonops.netaddr import free_port
from tritonops.pbtxt import ModelConfig, read_config
from tritonops.perf.analyzer import perf_analyzer_env, require_perf_analyzer
from tritonops.tune import Candidate
from tritonops.tune.space import candidate_of

PERF = Path(__file__).resolve().parent
SRC = PERF.parent / "src"
DEFAULT_VENV = Path(os.environ.get("MA_VENV", "/work/ma-venv"))
SERVER_STARTS = "server-starts.log"
PA_RUNS = "perf-analyzer-runs.log"


def ensure_model_analyzer(venv: Path = DEFAULT_VENV, say: Callable[[str], None] = print) -> Path:
    """The ``model-analyzer`` executable, installing it with perf/setup_model_analyzer.sh when missing."""
    exe = venv / "bin" / "model-analyzer"
    if not exe.exists():
        say(f"installing Model Analyzer 1.58.0 into {venv} (perf/setup_model_analyzer.sh)")
        subprocess.run(["bash", str(PERF / "setup_model_analyzer.sh"), str(venv)], check=True)
    return exe


def _script(path: Path, lines: list[str]) -> Path:
    path.write_text("#!/bin/sh\n" + "\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def write_wrappers(directory: Path) -> tuple[Path, Path]:
    """(tritonserver wrapper, perf_analyzer wrapper) in ``directory``; their logs go beside them."""
    directory.mkdir(parents=True, exist_ok=True)
    pa = require_perf_analyzer()
    lib = perf_analyzer_env()["LD_LIBRARY_PATH"]
    q = shlex.quote
    perf_analyzer = _script(directory / "perf_analyzer", [
        f'echo "$*" >> {q(str(directory / PA_RUNS))}',
        f"LD_LIBRARY_PATH={q(lib)} exec {q(str(pa))} \"$@\"",
    ])
    (directory / "server-logs").mkdir(exist_ok=True)
    tritonserver = _script(directory / "tritonserver", [
        f'echo "$*" >> {q(str(directory / SERVER_STARTS))}',
        # exec: MA's SIGTERM must reach the program that stops the server.
        f"BENCH_MA_SERVER_LOGS={q(str(directory / 'server-logs'))} PYTHONPATH={q(str(SRC))} "
        f"exec {q(sys.executable)} {q(str(PERF / 'ma_tritonserver.py'))} \"$@\"",
    ])
    return tritonserver, perf_analyzer


@dataclass(frozen=True)
class Limits:
    """The search limits both tools get."""

    max_instances: int
    max_batch: int
    max_concurrency: int
    min_batch: int = 1  # an ensemble's steps cannot go below the ensemble's own max_batch_size


def ma_config(*, model: str, repository: Path, out: Path, mode: str, budget_ms: float, limits: Limits,
              tritonserver: Path, perf_analyzer: Path, interval_ms: int, stability: float,
              composing: tuple[str, ...] = (), input_data: Path | None = None) -> dict[str, Any]:
    """The YAML TOOLCHAIN.md's working recipe describes, with the bench's budget and limits.
    ``input_data``: perf_analyzer's ``--input-data`` JSON for MA's measurements (the one tritonops'
    measurements sent), so that both tools search on the same requests.

    CPU-only is said explicitly: MA infers it for the profiled model without a GPU, but an ensemble's
    composing models get KIND_GPU variants unless they are listed in ``cpu_only_composing_models``."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    extra: dict[str, Any] = {"cpu_only_composing_models": list(composing)} if composing else {}
    return {
        "model_repository": str(repository.absolute()),
        "profile_models": {model: {"cpu_only": True}},
        **extra,
        "constraints": {"perf_latency_p99": {"max": budget_ms}},
        "objectives": ["perf_throughput"],
        "triton_launch_mode": "local",
        "triton_server_path": str(tritonserver),
        "perf_analyzer_path": str(perf_analyzer),
        "triton_http_endpoint": f"127.0.0.1:{http}",
        "triton_grpc_endpoint": f"127.0.0.1:{grpc}",
        "triton_metrics_url": f"http://127.0.0.1:{metrics}/metrics",
        "triton_output_path": str(out / "tritonserver-output.log"),
        "output_model_repository_path": str(out / "output_repository"),
        "override_output_model_repository": True,
        "export_path": str(out / "export"),
        "checkpoint_directory": str(out / "checkpoints"),
        "run_config_search_mode": mode,
        "run_config_search_max_instance_count": limits.max_instances,
        "run_config_search_min_model_batch_size": limits.min_batch,
        "run_config_search_max_model_batch_size": limits.max_batch,
        "run_config_search_max_concurrency": limits.max_concurrency,
        "perf_analyzer_timeout": 120,
        "perf_analyzer_flags": {"measurement-mode": "time_windows", "measurement-interval": interval_ms,
                                "stability-percentage": stability,
                                **({"input-data": str(input_data.absolute())} if input_data else {})},
        "inference_output_fields": ["model_name", "batch_size", "concurrency", "model_config_path",
                                    "instance_group", "max_batch_size", "satisfies_constraints",
                                    "perf_throughput", "perf_latency_p99"],
    }


@dataclass(frozen=True)
class MARun:
    mode: str
    rc: int
    wall_s: float
    server_starts: int
    perf_analyzer_runs: int
    out: Path
    log: Path
    note: str = ""  # why the bench stopped it, if it did


def _count_lines(path: Path, must_contain: str = "") -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if must_contain in line)


STUCK_S = 240.0  # a real measurement, server restart included, takes well under a minute here
PROGRESS_WORDS = ("Profiling ", "Creating model config", "Saved checkpoint", "Found ", "error", "Error",
                  "refus", "not supported", "Exiting", "Done")


def run_model_analyzer(exe: Path, config: dict[str, Any], out: Path, wrappers: Path, mode: str,
                       timeout_s: float, say: Callable[[str], None]) -> MARun:
    """``model-analyzer profile -f config.yaml``; its output to a log, a few of its lines as progress."""
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = out / "model-analyzer.log"
    starts0 = _count_lines(wrappers / SERVER_STARTS)
    runs0 = _count_lines(wrappers / PA_RUNS, "-m ")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    t0 = time.monotonic()
    note = ""
    with log.open("w") as fh:
        proc = subprocess.Popen([str(exe), "profile", "-f", str(cfg_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, cwd=out, start_new_session=True)
        assert proc.stdout is not None
        last, measured_at = "", time.monotonic()
        try:
            for line in proc.stdout:
                fh.write(line)
                now = time.monotonic()
                if "Profiling " in line:
                    measured_at = now
                text = line.strip()
                if any(w in line for w in PROGRESS_WORDS) and text != last:
                    say(f"MA {mode}: {text[:160]}")
                    last = text
                if now - t0 > timeout_s:
                    note = f"stopped after {timeout_s:.0f} s (--ma-timeout)"
                elif now - measured_at > STUCK_S:
                    # Seen in --smoke (max_instance_count 1): quick search revisits its configs without end,
                    # printing 'Found existing model config' ~1000 times a second.
                    note = f"stopped: no new measurement for {STUCK_S:.0f} s (it kept revisiting the configs it has)"
                if note:
                    say(f"MA {mode}: {note}")
                    proc.send_signal(signal.SIGINT)
                    break
            rc = proc.wait(timeout=120)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    wall = time.monotonic() - t0
    return MARun(mode=mode, rc=rc, wall_s=wall,
                 server_starts=_count_lines(wrappers / SERVER_STARTS) - starts0,
                 perf_analyzer_runs=_count_lines(wrappers / PA_RUNS, "-m ") - runs0, out=out, log=log, note=note)


def failure_line(log: Path) -> str:
    """Why MA stopped: its last line that reads like an error."""
    if not log.exists():
        return ""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if any(w in ln for w in ("not supported", "Error", "error", "Exception", "Please use")):
            return ln[:200]
    return lines[-1][:200] if lines else ""


# ------------------------------------------------------------------------------------ its results
@dataclass(frozen=True)
class MARow:
    variant: str
    concurrency: int
    throughput: float
    p99_ms: float
    satisfies: bool


def _column(header: list[str], *words: str) -> int:
    for i, h in enumerate(header):
        if all(w.lower() in h.lower() for w in words):
            return i
    raise ValueError(f"no column with {' '.join(words)!r} in {header}")


def read_inference_csv(path: Path) -> list[MARow]:
    """The rows of MA's ``metrics-model-inference.csv`` (one per measured config and concurrency)."""
    with path.open(newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    header, body = rows[0], rows[1:]
    iv, ic, it, ip, isat = (_column(header, "model config path"), _column(header, "concurrency"),
                            _column(header, "throughput"), _column(header, "p99"),
                            _column(header, "satisfies"))
    out = []
    for r in body:
        try:
            out.append(MARow(variant=r[iv].strip(), concurrency=int(float(r[ic])), throughput=float(r[it]),
                             p99_ms=float(r[ip]), satisfies=r[isat].strip().lower() in ("yes", "true")))
        except ValueError:
            continue
    return out


def read_checkpoint(path: Path, budget_ms: float) -> list[MARow]:
    """The measurements in MA's checkpoint (``checkpoints/0.ckpt``), for a run that wrote no results CSV
    (stopped, or interrupted: MA writes its tables only at the end). ``satisfies``: p99 within the budget.

    Layout of MA 1.58: ``ResultManager.results._results[model][variant] = [run config, {key: measurement}]``."""
    data = json.loads(path.read_text())
    out: list[MARow] = []
    for variants in data.get("ResultManager.results", {}).get("_results", {}).values():
        for variant, (run_config, measurements) in variants.items():
            composing = [v.get("variant_name", "") for mrc in run_config.get("_model_run_configs", [])
                         for v in mrc.get("_composing_config_variants") or []]
            name = f"{variant}: {', '.join(composing)}" if composing else variant
            for m in measurements.values():
                for mc in m.get("_model_config_measurements", [])[:1]:
                    metrics = {k: v.get("_value") for k, v in mc.get("_non_gpu_data", [])}
                    c = mc.get("_model_specific_pa_params", {}).get("concurrency-range")
                    tp, p99 = metrics.get("perf_throughput"), metrics.get("perf_latency_p99")
                    if c is None or tp is None or p99 is None:
                        continue
                    out.append(MARow(variant=name, concurrency=int(c), throughput=float(tp), p99_ms=float(p99),
                                     satisfies=float(p99) <= budget_ms))
    return out


def best_row(rows: list[MARow], budget_ms: float) -> MARow | None:
    """MA's own pick: the highest throughput among rows within the budget (MA's 'satisfies' and the p99)."""
    within = [r for r in rows if r.satisfies and r.p99_ms <= budget_ms]
    return max(within, key=lambda r: r.throughput, default=None)


def variant_candidates(output_repository: Path, variant: str, originals: dict[str, ModelConfig]
                       ) -> dict[str, Candidate]:
    """The tune library's candidate per tuned model for the "Model Config Path" of an MA result row.

    A plain model: ``mlp_config_3``, the variant's config. An ensemble: ``ens_config_0: tok_config_1,
    enc_config_2`` (MA 1.58 lists the composing variants after the colon), each composing variant's config
    mapped back to the served model it varies; a composing model MA did not vary keeps the served config."""
    top, _, composing = variant.partition(":")
    if not composing.strip():
        cfg = read_config(output_repository / top.strip() / "config.pbtxt")
        if cfg.platform != "ensemble":
            (name,) = originals
            return {name: candidate_of(cfg)}
        names = [step.model_name for step in cfg.ensemble_scheduling.step]
    else:
        names = [n.strip() for n in composing.split(",") if n.strip()]
    got: dict[str, Candidate] = {}
    for name in names:
        base = base_name(name, originals)
        if base is None or base in got:
            continue
        path = output_repository / name / "config.pbtxt"
        got[base] = candidate_of(read_config(path)) if path.exists() else candidate_of(originals[base])
    for name, original in originals.items():
        got.setdefault(name, candidate_of(original))
    return got


def base_name(variant: str, originals: dict[str, ModelConfig]) -> str | None:
    """``encoder_config_3`` -> ``encoder`` (MA's variant naming), the name itself if it is a model."""
    if variant in originals:
        return variant
    for name in sorted(originals, key=len, reverse=True):
        if variant.startswith(f"{name}_config_"):
            return name
    return None
