"""Inference checks: each protocol at two batch sizes, agreement between protocols, the in-process
reference, first-request latency and the response cache."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from tritonops.client import InferProtocol, infer_error, input_types, message_of, short
from tritonops.dtypes import from_numpy
from tritonops.pbtxt import tensor_specs
from tritonops.reference import (
    ModelUnderTest,
    ReferenceRunner,
    reference_factory,
)
from tritonops.samples import EXAMPLES_FILE, NpzSamples, check_inputs, format_shape, generate_inputs, npz_request
from tritonops.spec import TensorSpec
from tritonops.validate.cache import cache_check, cache_counts
from tritonops.validate.decoupled import decoupled_checks
from tritonops.validate.outputs import compare_tensors, output_problems
from tritonops.validate.report import PATH_FLOAT_TOL, STREAM_PROTOCOL
from tritonops.validate.run import ValidationRun, add_no_reference, build_reference
from tritonops.validate.sequences import sequence_checks, sequence_ids, sequence_steps


@dataclass(frozen=True)
class _Case:
    label: str  # "b=1", "b=4", "b=-" (non-batched)
    inputs: dict[str, np.ndarray]


def _cases(run: ValidationRun, model: ModelUnderTest, specs: Sequence[TensorSpec],
           user_inputs: Mapping[str, np.ndarray] | None) -> list[_Case]:
    mbs = model.config.max_batch_size
    rng = np.random.default_rng(run.options.seed)
    large = min(mbs, run.options.batch_size or 4)
    if user_inputs is not None:
        if isinstance(user_inputs, NpzSamples):  # the first axis counts samples, as for every command
            user_inputs = npz_request(user_inputs, mbs)
        given = check_inputs(model.name, user_inputs, specs, mbs)
        if mbs == 0:
            return [_Case("b=-", given)]
        b = next(iter(given.values())).shape[0] if given else 1
        cases = [_Case(f"b={b}", given)]
        if b < large:
            reps = -(-large // b)
            cases.append(_Case(f"b={large}", {k: np.concatenate([v] * reps)[:large] for k, v in given.items()}))
        return cases
    if mbs == 0:
        return [_Case("b=-", generate_inputs(specs, None, rng))]
    cases = [_Case("b=1", generate_inputs(specs, 1, rng))]
    if large > 1:
        cases.append(_Case(f"b={large}", generate_inputs(specs, large, rng)))
    return cases


def inference_checks(run: ValidationRun, model: ModelUnderTest, user_inputs: Mapping[str, np.ndarray] | None) -> None:
    cfg = model.config
    name = model.name
    in_specs, out_specs = tensor_specs(cfg)
    if cfg.model_transaction_policy.decoupled:
        cases = _cases(run, model, in_specs, user_inputs)
        decoupled_checks(run, model, out_specs, [(c.label, c.inputs) for c in cases])
        return
    protocols = [p for p in run.options.protocols if p != STREAM_PROTOCOL]
    if cfg.HasField("sequence_batching"):
        steps = sequence_steps(run, model, in_specs, user_inputs)
        skipped = _unsupported_protocols(in_specs, out_specs, [_Case("seq", x) for seq in steps for x in seq])
        _first_request_latency(run, model, _Case("one step", steps[0][0]), protocols, skipped,
                               cache_counts(run, name))
        sequence_checks(run, model, out_specs, steps, skipped)
        return
    cases = _cases(run, model, in_specs, user_inputs)
    skipped = _unsupported_protocols(in_specs, out_specs, cases)
    stats_before = cache_counts(run, name)
    _first_request_latency(run, model, cases[0], protocols, skipped, stats_before)
    stats_before = cache_counts(run, name)
    reference = _reference_runner(run, model)
    for case in cases:
        results: dict[str, dict[str, np.ndarray]] = {}
        for proto in protocols:
            if proto in skipped:
                run.add(name, f"infer {case.label}", proto, "skip", skipped[proto])
                continue
            try:
                t0 = time.perf_counter()
                outputs = _infer(run, proto, model, case.inputs)
                ms = (time.perf_counter() - t0) * 1e3
            except Exception as e:
                detail, hint = infer_error(e)
                run.add(name, f"infer {case.label}", proto, "fail", detail, hint=hint)
                continue
            batch = next(iter(case.inputs.values())).shape[0] if cfg.max_batch_size > 0 and case.inputs else None
            problems = output_problems(outputs, out_specs, batch)
            run.add(name, f"infer {case.label}", proto, "fail" if problems else "pass",
                    "; ".join(problems) if problems else _describe(outputs), latency_ms=round(ms, 3),
                    hint="the outputs do not match the served config" if problems else "")
            results[proto] = outputs
        _agreement(run, name, case, results, out_specs)
        _reference_check(run, model, case, results, reference)
    cache_check(run, model, stats_before)


def _unsupported_protocols(in_specs: Sequence[TensorSpec], out_specs: Sequence[TensorSpec],
                           cases: Sequence[_Case]) -> dict[str, str]:
    skipped: dict[str, str] = {}
    half = sorted({t.dtype.name for t in (*in_specs, *out_specs) if t.dtype.name in ("FP16", "BF16")})
    if half:
        # Triton's HTTP server refuses these as JSON ("receiving FP16 data via JSON is not supported").
        skipped["http-json"] = f"Triton's HTTP API carries {'/'.join(half)} as binary data only, not as JSON"
    for case in cases:
        for n, a in case.inputs.items():
            if a.dtype == np.object_:
                try:
                    for v in a.reshape(-1):
                        v.decode("utf-8")
                except (UnicodeDecodeError, AttributeError):
                    skipped["http-json"] = f"input '{n}' holds bytes that are not UTF-8, which JSON cannot carry"
    return skipped


def _infer(run: ValidationRun, protocol: str, model: ModelUnderTest, inputs: Mapping[str, np.ndarray],
           sequence_id: int = 0) -> dict[str, np.ndarray]:
    cfg = model.config
    seq: int | str | None = None
    if cfg.HasField("sequence_batching"):  # each request a whole one-request sequence
        seq = sequence_id or sequence_ids(model)[0]  # a string for a STRING CORRID
    return run.clients.infer(cast(InferProtocol, protocol), model.name, inputs, [o.name for o in cfg.output],
                             version=model.version, types=input_types(cfg), sequence_id=seq)


def _describe(outputs: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{n} {from_numpy(a.dtype).name}{format_shape(a.shape)}" for n, a in outputs.items())


def _agreement(run: ValidationRun, name: str, case: _Case, results: Mapping[str, dict[str, np.ndarray]],
               specs: Sequence[TensorSpec]) -> None:
    if len(results) < 2:
        return
    base = "http-binary" if "http-binary" in results else next(iter(results))
    for proto, outputs in results.items():
        if proto == base:
            continue
        worst = 0.0
        problems = []
        for t in specs:
            if t.name not in outputs or t.name not in results[base]:
                continue
            ok, err, what = compare_tensors(outputs[t.name], results[base][t.name], PATH_FLOAT_TOL, PATH_FLOAT_TOL)
            worst = max(worst, err or 0.0) if err is not None else math.inf
            if not ok:
                problems.append(f"output '{t.name}': {what}")
        run.add(name, f"agree {case.label}", proto, "fail" if problems else "pass",
                (f"differs from {base}: " + "; ".join(problems)) if problems else f"identical to {base}"
                if worst == 0 else f"agrees with {base} within {PATH_FLOAT_TOL:g}",
                max_error=worst, hint="the protocols encode the tensors differently: report it with the inputs"
                if problems else "")


def _reference_runner(run: ValidationRun, model: ModelUnderTest) -> ReferenceRunner | str:
    """A runner, or the reason there is none (a string) — or a failure row's detail prefixed '!'."""
    if model.name in run.references:
        return run.references[model.name]
    cfg = model.config
    return build_reference(run, model, reference_factory(cfg),
                           f"no reference runner for platform '{cfg.platform or cfg.backend}' yet")


def _reference_check(run: ValidationRun, model: ModelUnderTest, case: _Case,
                     results: Mapping[str, dict[str, np.ndarray]],
                     reference: ReferenceRunner | str) -> None:
    name = model.name
    if isinstance(reference, str):
        add_no_reference(run, name, case.label, reference)
        return
    if not results:
        return
    try:
        expected = reference(case.inputs)
    except Exception as e:
        run.add(name, f"reference {case.label}", "-", "fail", f"the local run failed: {short(message_of(e))}",
                hint=f"reference: {reference.description}")
        return
    o = run.options
    for proto, outputs in results.items():
        worst: float = 0.0
        problems = []
        for oname, got in outputs.items():
            if oname not in expected:
                problems.append(f"output '{oname}' missing from the local run")
                continue
            want = np.asarray(expected[oname])
            ok, err, what = compare_tensors(got, want, o.atol, o.rtol)
            worst = max(worst, err) if err is not None else math.inf
            if not ok:
                problems.append(f"output '{oname}': {what}" + (f" (max error {err:.3g})" if err else ""))
        if problems:
            run.add(name, f"reference {case.label}", proto, "fail",
                    f"outputs differ from the local run ({reference.description}): " + "; ".join(problems),
                    max_error=worst,
                    hint=f"the server is not serving what the repository holds (tolerance atol={o.atol:g}, "
                         f"rtol={o.rtol:g}): reload the model, or compare with --reference FILE")
        else:
            run.add(name, f"reference {case.label}", proto, "pass", f"equal to {reference.description}",
                    max_error=worst)






def _first_request_latency(run: ValidationRun, model: ModelUnderTest, case: _Case, protocols: Sequence[str],
                           skipped: Mapping[str, str], stats_before: tuple[int, int, int] | None) -> None:
    usable = [p for p in ("grpc", "http-binary", "http-json") if p in protocols and p not in skipped]
    if not usable:
        return
    proto = usable[0]
    try:
        t0 = time.perf_counter()
        _infer(run, proto, model, case.inputs)
        first = (time.perf_counter() - t0) * 1e3
        times = []
        rng = np.random.default_rng(run.options.seed + 1)
        in_specs, _ = tensor_specs(model.config)
        batch = None if model.config.max_batch_size == 0 else next(iter(case.inputs.values())).shape[0]
        for _ in range(run.options.latency_repeats):
            # Fresh inputs so a response cache cannot answer the repeats.
            given = run.options.inputs is not None or (
                model.model_dir is not None and (model.model_dir / EXAMPLES_FILE).is_file())
            inputs = case.inputs if given else generate_inputs(in_specs, batch, rng)
            t0 = time.perf_counter()
            _infer(run, proto, model, inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    except Exception as e:
        detail, hint = infer_error(e)
        run.add(model.name, "first request", proto, "fail", detail, hint=hint)
        return
    served = stats_before[0] if stats_before else 0
    note = "" if served == 0 else f"; not the model's first request: it had served {served} before"
    median = statistics.median(times) if times else first
    run.add(model.name, "first request", proto, "pass",
            f"first request {first:.2f} ms ({case.label}), then median {median:.2f} ms over {len(times)}{note}",
            latency_ms=round(first, 3))
