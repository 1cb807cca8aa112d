"""Stateful (sequence-batched) models: two sequences interleaved over each protocol, every step
compared with the same sequence run in-process (controls and implicit state fed as the sequence
batcher and the backend would), and the protocols compared with each other step by step."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from tritonops.client import InferProtocol, infer_error, input_types, message_of, short
from tritonops.reference import ModelUnderTest, SequenceReference, sequence_reference_factory
from tritonops.samples import NpzSamples, check_inputs, format_shape, generate_inputs
from tritonops.spec import TensorSpec
from tritonops.validate.outputs import differences, output_problems
from tritonops.validate.report import PATH_FLOAT_TOL, STREAM_PROTOCOL
from tritonops.validate.run import ValidationRun, add_no_reference, build_reference

SEQUENCE_LENGTHS = (4, 3)  # two sequences of different lengths, their steps interleaved
LABEL = "seq"
Steps = list[list[dict[str, np.ndarray]]]  # per sequence, the inputs of each step
Outputs = list[list[dict[str, np.ndarray]]]  # per sequence, the outputs of each step


def sequence_steps(run: ValidationRun, model: ModelUnderTest, specs: Sequence[TensorSpec],
                   user_inputs: Mapping[str, np.ndarray] | None) -> Steps:
    """The inputs of each step of each sequence, batch 1 (the sequence batcher takes one request of a
    sequence at a time). Given samples are used in turn (the first axis counts samples); otherwise
    each step gets fresh generated data."""
    mbs = model.config.max_batch_size
    total = sum(SEQUENCE_LENGTHS)
    if user_inputs is not None:
        if isinstance(user_inputs, NpzSamples):
            rows = max(1, min((a.shape[0] for a in user_inputs.values() if a.ndim), default=1))
            picks = [{k: (a[i % rows][None] if mbs > 0 else a[i % rows]) if a.ndim else a
                      for k, a in user_inputs.items()} for i in range(total)]
        else:
            given = check_inputs(model.name, user_inputs, specs, mbs)
            rows = next(iter(given.values())).shape[0] if mbs > 0 and given else 1
            picks = [{k: a[i % rows][None] for k, a in given.items()} if mbs > 0 else dict(given) for i in range(total)]
        flat = [check_inputs(model.name, p, specs, mbs) for p in picks]
    else:
        rng = np.random.default_rng(run.options.seed)
        flat = [generate_inputs(specs, 1 if mbs > 0 else None, rng) for _ in range(total)]
    steps: Steps = []
    for n in SEQUENCE_LENGTHS:
        steps.append(flat[:n])
        flat = flat[n:]
    return steps


def sequence_ids(model: ModelUnderTest) -> list[int | str]:
    """Fresh ids for the sequences (a server may serve other clients' sequences at the same time);
    strings when the CORRID control is STRING; small enough for an INT32/UINT32 CORRID."""
    base = 1_000_000 + time.monotonic_ns() % 1_000_000_000
    corrid_string = any(c.kind == c.CONTROL_SEQUENCE_CORRID and c.data_type == mc.TYPE_STRING
                        for ci in model.config.sequence_batching.control_input for c in ci.control)
    return [f"tritonops-{base + i}" if corrid_string else base + i for i in range(len(SEQUENCE_LENGTHS))]


def _order(steps: Steps) -> list[tuple[int, int]]:
    """(sequence, step) in interleaved order: step k of every sequence that has one, then k + 1."""
    return [(s, k) for k in range(max(len(x) for x in steps)) for s in range(len(steps)) if k < len(steps[s])]


def _run_unary(run: ValidationRun, protocol: str, model: ModelUnderTest, steps: Steps,
               ids: Sequence[int | str]) -> Outputs:
    cfg = model.config
    got: Outputs = [[] for _ in steps]
    for s, k in _order(steps):
        got[s].append(run.clients.infer(
            cast(InferProtocol, protocol), model.name, steps[s][k], [o.name for o in cfg.output],
            version=model.version, types=input_types(cfg), sequence_id=ids[s], sequence_start=k == 0,
            sequence_end=k == len(steps[s]) - 1))
    return got


class _StreamError(Exception):
    pass


def _run_stream(run: ValidationRun, model: ModelUnderTest, steps: Steps, ids: Sequence[int | str]) -> Outputs:
    """Every request of both sequences sent at once over one stream, in interleaved order."""
    cfg = model.config
    order = _order(steps)
    by_request: dict[str, dict[str, np.ndarray]] = {}
    with run.clients.stream() as stream:
        for s, k in order:
            stream.send(model.name, steps[s][k], [o.name for o in cfg.output], request_id=f"{s}:{k}",
                        version=model.version, types=input_types(cfg), sequence_id=ids[s],
                        sequence_start=k == 0, sequence_end=k == len(steps[s]) - 1)
        for _ in order:
            r = stream.receive()
            if r.error is not None:
                raise _StreamError(r.error)
            by_request[r.request_id] = r.outputs
    missing = [rid for rid in (f"{s}:{k}" for s, k in order) if rid not in by_request]
    if missing:
        raise _StreamError(f"no response to request {missing[0]}")
    return [[by_request[f"{s}:{k}"] for k in range(len(seq))] for s, seq in enumerate(steps)]


def _where(s: int, k: int, ids: Sequence[int | str]) -> str:
    return f"sequence {s + 1} (id {ids[s]}) step {k + 1}"


def _reference(run: ValidationRun, model: ModelUnderTest) -> SequenceReference | str:
    """A sequence runner, or why there is none (a string; prefixed '!' when that is a failure)."""
    plugged = run.references.get(model.name)
    if plugged is not None:
        return plugged if isinstance(plugged, SequenceReference) else \
            "the reference given for this model runs single requests, not sequences"
    cfg = model.config
    return build_reference(run, model, sequence_reference_factory(cfg),
                           f"no in-process sequence runner for platform '{cfg.platform or cfg.backend}' yet")


def sequence_checks(run: ValidationRun, model: ModelUnderTest, out_specs: Sequence[TensorSpec], steps: Steps,
                    skipped: Mapping[str, str]) -> None:
    """Rows ``infer seq``, ``agree seq`` and ``reference seq`` per protocol (gRPC streaming as
    ``grpc-stream``, when gRPC is validated)."""
    name = model.name
    opts = run.options
    protocols = [p for p in opts.protocols if p != STREAM_PROTOCOL]
    if "grpc" in opts.protocols or STREAM_PROTOCOL in opts.protocols:
        protocols.append(STREAM_PROTOCOL)
    batch = 1 if model.config.max_batch_size > 0 else None
    lengths = " and ".join(str(len(s)) for s in steps)
    results: dict[str, tuple[list[int | str], Outputs]] = {}
    for proto in protocols:
        if proto in skipped:
            run.add(name, f"infer {LABEL}", proto, "skip", skipped[proto])
            continue
        ids = sequence_ids(model)
        try:
            t0 = time.perf_counter()
            got = _run_stream(run, model, steps, ids) if proto == STREAM_PROTOCOL else \
                _run_unary(run, proto, model, steps, ids)
            ms = (time.perf_counter() - t0) * 1e3
        except _StreamError as e:
            run.add(name, f"infer {LABEL}", proto, "fail", f"inference failed: {short(str(e), 300)}",
                    hint="the server's error is above; check the inputs and the server log")
            continue
        except Exception as e:
            detail, hint = infer_error(e)
            run.add(name, f"infer {LABEL}", proto, "fail", detail, hint=hint)
            continue
        problems = [f"{_where(s, k, ids)}: {p}" for s, seq in enumerate(got) for k, outs in enumerate(seq)
                    for p in output_problems(outs, out_specs, batch)]
        shapes = ", ".join(f"{n} {format_shape(a.shape)}" for n, a in got[0][0].items())
        run.add(name, f"infer {LABEL}", proto, "fail" if problems else "pass",
                "; ".join(problems[:3]) if problems else
                f"{len(steps)} interleaved sequences of {lengths} steps (ids {', '.join(map(str, ids))}): {shapes}",
                latency_ms=round(ms / sum(len(s) for s in steps), 3),
                hint="the outputs do not match the served config" if problems else "")
        results[proto] = (ids, got)
    _agreement(run, name, results, steps)
    _reference_check(run, model, results, steps)


def _agreement(run: ValidationRun, name: str, results: Mapping[str, tuple[list[int | str], Outputs]],
               steps: Steps) -> None:
    if len(results) < 2:
        return
    base = "http-binary" if "http-binary" in results else next(iter(results))
    for proto, (_, got) in results.items():
        if proto == base:
            continue
        worst, first = 0.0, ""
        for s, seq in enumerate(got):
            for k, outs in enumerate(seq):
                problems, err = differences(outs, results[base][1][s][k], PATH_FLOAT_TOL, PATH_FLOAT_TOL)
                worst = max(worst, err)
                if problems and not first:
                    first = f"sequence {s + 1} step {k + 1}: " + "; ".join(problems)
        run.add(name, f"agree {LABEL}", proto, "fail" if first else "pass",
                f"differs from {base}: {first}" if first else f"every step identical to {base}" if worst == 0
                else f"every step agrees with {base} within {PATH_FLOAT_TOL:g}", max_error=worst,
                hint="the protocols disagree on a sequence: report it with the inputs" if first else "")


def _reference_check(run: ValidationRun, model: ModelUnderTest,
                     results: Mapping[str, tuple[list[int | str], Outputs]], steps: Steps) -> None:
    name = model.name
    reference = _reference(run, model)
    if isinstance(reference, str):
        add_no_reference(run, name, LABEL, reference)
        return
    if not results:
        return
    o = run.options
    for proto, (ids, got) in results.items():
        try:  # with the ids the server saw: a model may read its CORRID control
            expected = [reference.sequence(seq, ids[s]) for s, seq in enumerate(steps)]
        except Exception as e:
            run.add(name, f"reference {LABEL}", "-", "fail", f"the local run failed: {short(message_of(e))}",
                    hint=f"reference: {reference.description}")
            return
        worst, fails = 0.0, []
        for s, seq in enumerate(got):
            for k, outs in enumerate(seq):
                problems, err = differences(outs, expected[s][k], o.atol, o.rtol)
                worst = max(worst, err)
                if problems:
                    fails.append(f"sequence {s + 1} step {k + 1} of {len(seq)}: " + "; ".join(problems))
        if fails:
            more = f" (and {len(fails) - 1} more steps)" if len(fails) > 1 else ""
            run.add(name, f"reference {LABEL}", proto, "fail",
                    f"differs from the same sequence run locally ({reference.description}): {fails[0]}{more}",
                    max_error=worst,
                    hint="the served model keeps or resets its state differently from its repository's model and "
                         f"config (tolerance atol={o.atol:g}, rtol={o.rtol:g}): reload the model, check "
                         "sequence_batching (controls, state, initial_state), or compare with --reference FILE")
        else:
            run.add(name, f"reference {LABEL}", proto, "pass",
                    f"every step of {len(steps)} sequences equal to {reference.description}", max_error=worst)
