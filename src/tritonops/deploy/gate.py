"""The roll-out's gate: ``validate`` (HTTP + gRPC, reference comparison) on the candidate models,
then canary inferences checked against a local run of the repository's artifact."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tritonops.client import TritonClient, input_types, to_bytes_array
from tritonops.compare import compare_arrays
from tritonops.deploy.control import first_line
from tritonops.errors import TritonOpsError
from tritonops.pbtxt import tensor_specs
from tritonops.platforms import default_file
from tritonops.progress import Progress
from tritonops.reference import REFERENCE_FACTORIES, ModelUnderTest
from tritonops.repository import version_dirs
from tritonops.samples import generate_inputs
from tritonops.validate import ValidateOptions, validate


@dataclass(frozen=True)
class GateOptions:
    """What the gate needs of a roll-out's options."""

    http_url: str
    grpc_url: str
    target: Path
    atol: float
    rtol: float
    timeout_s: float
    canary_requests: int = 0


def gate(opts: GateOptions, names: Sequence[str], say: Progress) -> tuple[bool, str, Any]:
    """validate (HTTP + gRPC, reference comparison) on ``names``, then the canary requests."""
    report = validate(ValidateOptions(http_url=opts.http_url, grpc_url=opts.grpc_url, metrics_url=None,
                                      models=tuple(names), repository=opts.target, atol=opts.atol, rtol=opts.rtol,
                                      timeout_s=min(opts.timeout_s, 60.0), latency_repeats=1), say)
    # Rows of other models (or a server made unready by another broken model) are not this roll-out's.
    relevant = [r for r in report.rows if r.model in names or (r.model == "" and r.check == "live")]
    summary: dict[str, Any] = {"ok": all(r.status != "fail" for r in relevant), "models": list(names),
               "counts": {s: sum(1 for r in relevant if r.status == s) for s in ("pass", "fail", "skip")},
               "failures": [r.line() for r in relevant if r.status == "fail"]}
    if not summary["ok"]:
        return False, summary["failures"][0], summary
    if opts.canary_requests:
        for name in names:
            problem = canary(opts, name, opts.canary_requests, say)
            if problem:
                summary["ok"] = False
                summary["failures"].append(problem)
                return False, problem, summary
        summary["canary_requests"] = opts.canary_requests
    return True, "", summary


def _reference(opts: GateOptions, name: str, version: str, cfg: Any) -> Any:
    """The local run of the repository's artifact, or None (no runner for the platform, no file)."""
    factory = REFERENCE_FACTORIES.get(cfg.platform or cfg.backend)
    if factory is None:
        return None
    model_dir = opts.target / name
    filename = default_file(cfg, [model_dir / version])
    artifact = model_dir / version / filename
    if not filename or not artifact.exists():
        return None
    try:
        return factory(ModelUnderTest(name, version, cfg, model_dir, artifact))
    except TritonOpsError:
        return None  # e.g. a python model tritonops did not generate: the canary checks the requests only


def canary(opts: GateOptions, name: str, count: int, say: Progress) -> str:
    """``count`` inferences alternating HTTP and gRPC with fresh inputs; each must succeed and match the
    local reference run of the repository's artifact (when there is a runner for the platform)."""
    say(f"{count} canary requests to {name}")
    with TritonClient(opts.http_url, opts.grpc_url, timeout_s=60.0) as client:
        cfg = client.model_config(name)
        version = str(max(version_dirs(opts.target / name), default=1))
        in_specs, out_specs = tensor_specs(cfg)
        reference = _reference(opts, name, version, cfg)
        types = input_types(cfg)
        outputs = [o.name for o in out_specs]
        rng = np.random.default_rng(1234)
        for i in range(count):
            batch = 1 + i % max(1, min(cfg.max_batch_size, 4)) if cfg.max_batch_size > 0 else None
            inputs = generate_inputs(in_specs, batch, rng)
            feed = {t.name: inputs[t.name] for t in in_specs if t.name in inputs}
            try:
                got = client.infer("http-binary" if i % 2 == 0 else "grpc", name, feed, outputs, version=version,
                                   types=types)
            except Exception as e:
                return f"canary request {i + 1} of {count} to '{name}' failed: {first_line(e)}"
            if reference is None:
                continue
            want = reference(inputs)
            for o in outputs:
                expected = np.asarray(want[o])
                if expected.dtype.kind == "U":
                    expected = to_bytes_array(expected)
                if not compare_arrays(got[o], expected, opts.atol, opts.rtol, name=o).ok:
                    return (f"canary request {i + 1} of {count} to '{name}': output '{o}' differs from the "
                            "local reference run")
    return ""
