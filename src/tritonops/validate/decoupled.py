"""Decoupled models (``model_transaction_policy { decoupled: true }``): zero or many responses per
request, served over gRPC streaming only. Each request's responses are collected up to the final
flag, each checked against the config's outputs and, for a tritonops python step, against the
responses of the same function run in-process."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tritonops.client import StreamResponse, infer_error, input_types, message_of, short
from tritonops.errors import TritonOpsError
from tritonops.reference import DecoupledReference, DecoupledStepReference, ModelUnderTest
from tritonops.samples import format_shape
from tritonops.spec import TensorSpec
from tritonops.validate.outputs import differences, output_problems
from tritonops.validate.report import STREAM_PROTOCOL
from tritonops.validate.run import ValidationRun

NOT_STREAMED = "Triton serves decoupled models over gRPC streaming only"


def _reference(run: ValidationRun, model: ModelUnderTest) -> DecoupledReference | str:
    plugged: Any = run.references.get(model.name)
    if plugged is not None:
        return plugged if isinstance(plugged, DecoupledReference) else \
            "the reference given for this model returns one response per request, not a decoupled model's"
    params = model.config.parameters
    if "tritonops.function" not in params:
        return "no in-process run: the model is not a tritonops python step"
    if model.model_dir is None:
        return "no repository given: pass the repository to compare with a local run"
    try:
        return DecoupledStepReference(model)
    except TritonOpsError as e:
        return f"!{e.message}"
    except Exception as e:
        return f"!cannot run {model.name} locally: {short(message_of(e))}"


def _collect(run: ValidationRun, model: ModelUnderTest, inputs: Mapping[str, np.ndarray],
             request_id: str) -> list[StreamResponse]:
    cfg = model.config
    with run.clients.stream() as stream:
        stream.send(model.name, inputs, [o.name for o in cfg.output], request_id=request_id, version=model.version,
                    types=input_types(cfg), decoupled=True)
        return stream.responses(request_id)


def decoupled_checks(run: ValidationRun, model: ModelUnderTest, out_specs: Sequence[TensorSpec],
                     cases: Sequence[tuple[str, dict[str, np.ndarray]]]) -> None:
    """Rows ``infer LABEL`` and ``reference LABEL`` over ``grpc-stream`` for each (label, inputs)
    case; the HTTP and unary gRPC paths skip with the reason."""
    name = model.name
    opts = run.options
    for proto in opts.protocols:
        if proto != STREAM_PROTOCOL:
            run.add(name, "infer", proto, "skip", f"decoupled model: {NOT_STREAMED}")
    if "grpc" not in opts.protocols and STREAM_PROTOCOL not in opts.protocols:
        return
    reference = _reference(run, model)
    for i, (label, inputs) in enumerate(cases):
        batch = next(iter(inputs.values())).shape[0] if model.config.max_batch_size > 0 and inputs else None
        try:
            t0 = time.perf_counter()
            got = _collect(run, model, inputs, f"tritonops-validate-{i}")
            ms = (time.perf_counter() - t0) * 1e3
        except Exception as e:
            detail, hint = infer_error(e)
            run.add(name, f"infer {label}", STREAM_PROTOCOL, "fail", detail, hint=hint)
            continue
        errors = [r.error for r in got if r.error is not None]
        if errors:
            run.add(name, f"infer {label}", STREAM_PROTOCOL, "fail", f"inference failed: {short(errors[0], 300)}",
                    hint="the server's error is above; check the inputs and the server log")
            continue
        data = [r.outputs for r in got if r.outputs]
        if not got or not got[-1].final:
            run.add(name, f"infer {label}", STREAM_PROTOCOL, "fail",
                    f"{len(data)} responses but no final flag", hint="the model must send the final flag "
                    "(pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL) after its last response")
            continue
        problems = [f"response {j + 1}: {p}" for j, outs in enumerate(data)
                    for p in output_problems(outs, out_specs, batch)]
        shapes = ", ".join(f"{n} {format_shape(a.shape)}" for n, a in data[0].items()) if data else ""
        run.add(name, f"infer {label}", STREAM_PROTOCOL, "fail" if problems else "pass",
                "; ".join(problems[:3]) if problems else
                f"{len(data)} response{'s' if len(data) != 1 else ''}{' (' + shapes + ')' if shapes else ''}, "
                "then the final flag", latency_ms=round(ms, 3),
                hint="the responses do not match the served config" if problems else "")
        _reference_check(run, model, label, inputs, data, reference)


def _reference_check(run: ValidationRun, model: ModelUnderTest, label: str, inputs: Mapping[str, np.ndarray],
                     data: Sequence[Mapping[str, np.ndarray]], reference: DecoupledReference | str) -> None:
    name = model.name
    check = f"reference {label}"
    if isinstance(reference, str):
        if reference.startswith("!"):
            run.add(name, check, "-", "fail", reference[1:], hint="check the model's steps.py")
        else:
            run.add(name, check, "-", "skip", reference)
        return
    try:
        expected = reference.responses(inputs)
    except Exception as e:
        run.add(name, check, "-", "fail", f"the local run failed: {short(message_of(e))}",
                hint=f"reference: {reference.description}")
        return
    o = run.options
    if len(expected) != len(data):
        run.add(name, check, STREAM_PROTOCOL, "fail",
                f"the server sent {len(data)} responses, the local run ({reference.description}) gives {len(expected)}",
                hint="the server is not serving what the repository holds: reload the model")
        return
    worst, fails = 0.0, []
    for j, (got, want) in enumerate(zip(data, expected, strict=True)):
        problems, err = differences(dict(got), want, o.atol, o.rtol)
        worst = max(worst, err)
        if problems:
            fails.append(f"response {j + 1} of {len(data)}: " + "; ".join(problems))
    if fails:
        run.add(name, check, STREAM_PROTOCOL, "fail",
                f"differs from the local run ({reference.description}): {fails[0]}", max_error=worst,
                hint=f"the server is not serving what the repository holds (tolerance atol={o.atol:g}, "
                     f"rtol={o.rtol:g}): reload the model")
    else:
        run.add(name, check, STREAM_PROTOCOL, "pass",
                f"{len(data)} responses equal to {reference.description}", max_error=worst)
