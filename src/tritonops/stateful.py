"""Stateful builds: a ``sequence_batching`` block derived from an ONNX model's interface, and the
control/state values that let the model run outside Triton (build's run check and verification).

The user names which model inputs are control tensors (``START=START``) and which input/output
pairs carry implicit state (``STATE_IN:STATE_OUT``); types and dims come from the ONNX file, as
Triton's sequence batcher and ORT backend will check them at load. Control and state tensors are
then left out of the config's ``input``/``output`` (Triton's rule)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tritonops.convert.onnx_inspect import OnnxInfo, OnnxTensor
from tritonops.dtypes import numpy_dtype
from tritonops.errors import UsageError
from tritonops.reference import Runner
from tritonops.spec import CONTROL_KINDS, SequenceBatching, SequenceControl, SequenceState, TensorSpec


@dataclass(frozen=True)
class SequenceOptions:
    """What a build says about sequence batching (BuildOptions' sequence fields)."""

    strategy: Literal["direct", "oldest"]
    controls: tuple[tuple[str, str], ...] = ()  # (kind, model input)
    states: tuple[tuple[str, str], ...] = ()  # (model input, model output)
    max_sequence_idle_us: int = 0
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_candidate_sequences: int = 0


def control_kind(text: str) -> str:
    """``START``, ``start`` or ``CONTROL_SEQUENCE_START`` -> ``START``; anything else is refused."""
    kind = text.strip().upper().removeprefix("CONTROL_SEQUENCE_")
    if kind not in CONTROL_KINDS:
        raise UsageError(f"unknown sequence control '{text}'",
                         f"use one of {', '.join(CONTROL_KINDS)}, e.g. --control START=START")
    return kind


def parse_pair(text: str, sep: str, flag: str, example: str) -> tuple[str, str]:
    """``A<sep>B`` as written on the command line (``--control START=START``, ``--state IN:OUT``)."""
    left, found, right = text.partition(sep)
    if not found or not left.strip() or not right.strip():
        raise UsageError(f"cannot parse {flag} '{text}'", f"write it as {example}")
    return left.strip(), right.strip()


def _shape_text(t: OnnxTensor) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in t.shape) + "]"


def _control(kind: str, tensor: str, inputs: Mapping[str, OnnxTensor], batched: bool) -> SequenceControl:
    m = inputs.get(tensor)
    if m is None:
        raise UsageError(f"control {kind} names '{tensor}', which is not an input of the model "
                         f"(its inputs: {', '.join(inputs)})", f"write --control {kind}=INPUT with one of them")
    dims = m.shape[1:] if batched else m.shape
    if len(dims) != 1 or (isinstance(dims[0], int) and dims[0] not in (1, -1)):
        want = "[batch, 1]" if batched else "[1]"
        raise UsageError(f"control input '{tensor}' has shape {_shape_text(m)}, but a control tensor is {want}",
                         f"give the model's '{tensor}' input the shape {want}")
    return SequenceControl(kind, tensor, m.dtype)  # type: ignore[arg-type]


def _state(pair: tuple[str, str], inputs: Mapping[str, OnnxTensor], outputs: Mapping[str, OnnxTensor],
           batched: bool) -> SequenceState:
    name_in, name_out = pair
    m_in, m_out = inputs.get(name_in), outputs.get(name_out)
    if m_in is None:
        raise UsageError(f"state input '{name_in}' is not an input of the model (its inputs: {', '.join(inputs)})",
                         "write --state INPUT:OUTPUT with the model's state input and output")
    if m_out is None:
        raise UsageError(f"state output '{name_out}' is not an output of the model "
                         f"(its outputs: {', '.join(outputs)})",
                         "write --state INPUT:OUTPUT with the model's state input and output")
    if m_in.dtype != m_out.dtype:
        raise UsageError(f"state '{name_in}' is {m_in.dtype.name} but '{name_out}' is {m_out.dtype.name}",
                         "a state's input and output must have the same type")
    shapes = [t.shape[1:] if batched else t.shape for t in (m_in, m_out)]
    fixed = [all(isinstance(d, int) and d > 0 for d in s) and len(s) > 0 for s in shapes]
    if not all(fixed) or shapes[0] != shapes[1]:
        raise UsageError(
            f"state '{name_in}' {_shape_text(m_in)} / '{name_out}' {_shape_text(m_out)} needs one fixed shape "
            f"{'after the batch dimension' if batched else ''}".rstrip(),
            "export the state tensors with fixed dims (the zero initial state needs them)")
    return SequenceState(name_in, name_out, m_in.dtype, tuple(int(d) for d in shapes[0]))  # type: ignore[arg-type]


def sequence_from_onnx(o: SequenceOptions, info: OnnxInfo, batched: bool) -> SequenceBatching:
    """The sequence_batching block for ``info``: control and state types and dims from the model."""
    inputs = {t.name: t for t in info.inputs}
    outputs = {t.name: t for t in info.outputs}
    controls = tuple(_control(control_kind(k), tensor, inputs, batched) for k, tensor in o.controls)
    states = tuple(_state(pair, inputs, outputs, batched) for pair in o.states)
    return SequenceBatching(
        strategy=o.strategy, max_sequence_idle_us=o.max_sequence_idle_us, max_queue_delay_us=o.max_queue_delay_us,
        preferred_batch_sizes=o.preferred_batch_sizes, max_candidate_sequences=o.max_candidate_sequences,
        controls=controls, states=states)


def without_sequence_tensors(tensors: Sequence[TensorSpec], names: Sequence[str]) -> tuple[TensorSpec, ...]:
    """Config inputs/outputs: the model's, less the control and state tensors."""
    skip = set(names)
    return tuple(t for t in tensors if t.name not in skip)


def state_output_specs(sb: SequenceBatching, batched: bool) -> tuple[TensorSpec, ...]:
    """The state outputs as specs, so a run check proves they have the state's type and dims."""
    return tuple(TensorSpec(st.output_name, st.dtype, st.dims) for st in sb.states)


def _true(c: SequenceControl, batch: int | None) -> np.ndarray:
    shape = (1,) if batch is None else (batch, 1)
    if c.kind == "CORRID":
        n = 1 if batch is None else batch
        ids = np.arange(1, n + 1).reshape(shape)
        if c.dtype.is_string:
            return np.array([str(i).encode() for i in ids.reshape(-1)], dtype=np.object_).reshape(shape)
        return ids.astype(numpy_dtype(c.dtype))
    return np.ones(shape, dtype=numpy_dtype(c.dtype))


def sequence_feed(sb: SequenceBatching, batch: int | None) -> dict[str, np.ndarray]:
    """What the sequence batcher and the backend give the model on the first request of a sequence
    (of one request): START, END and READY true, a correlation id per batch row, zero state."""
    feed = {c.tensor: _true(c, batch) for c in sb.controls}
    for st in sb.states:
        shape = st.dims if batch is None else (batch, *st.dims)
        feed[st.input_name] = (np.full(shape, b"", dtype=np.object_) if st.dtype.is_string
                               else np.zeros(shape, dtype=numpy_dtype(st.dtype)))
    return feed


def with_sequence_feed(run: Runner, sb: SequenceBatching, batched: bool) -> Runner:
    """A runner that adds the control and state tensors to each call's inputs."""

    def wrapped(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        first = next(iter(feed.values()), None)
        batch = (int(first.shape[0]) if first is not None and first.ndim else 1) if batched else None
        return run({**feed, **sequence_feed(sb, batch)})

    return wrapped
