"""Sequence batching shared by tritonops' Python-based fallback backends (onnxruntime, pytorch).

The sequence batcher hands the control tensors (START/END/READY/CORRID of
``sequence_batching.control_input``) to every request as inputs; they go to the model as such.
Implicit state (``sequence_batching.state``) is kept here per sequence, as Triton's own backends
do: the Python backend has no API to hand a state back to the core, so the core's state input is
always the initial state; it is used at the start of a sequence, and from then on the model's last
``output_name`` tensor is fed back as ``input_name``.

The server launcher copies this file next to each backend's model.py, which loads it by path:
the backends run inside the Python backend stub, without tritonops installed there."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils
from _batching import batch_groups, concatenate, split

BOOL_FORMS = (("int32_false_true", "TYPE_INT32"), ("fp32_false_true", "TYPE_FP32"),
              ("bool_false_true", "TYPE_BOOL"))


def sequence_controls(config):
    """{kind: (tensor name, data type, value meaning true)} of sequence_batching.control_input: the
    tensors the sequence batcher adds to each request, typed by the control's value form
    (``int32_false_true: [0, 1]`` and so on; CORRID: its data_type, no true value)."""
    controls = {}
    for ci in (config.get("sequence_batching") or {}).get("control_input", []) or []:
        for c in ci.get("control", []) or []:
            kind = c.get("kind", "CONTROL_SEQUENCE_START")
            dtype, true = (c.get("data_type"), None) if kind == "CONTROL_SEQUENCE_CORRID" else \
                next(((t, c[form][-1]) for form, t in BOOL_FORMS if c.get(form)), (None, None))
            controls[kind] = (ci.get("name", ""), dtype, true)
    return controls


def sequence_states(config):
    return list((config.get("sequence_batching") or {}).get("state", []) or [])


def check_not_declared(name, config):
    """Control and state tensors are supplied by the sequence batcher and the backend: a config
    that also declares one under ``input`` is refused at load (Triton's backends count them twice)."""
    declared = {t["name"] for t in config.get("input", [])}
    for tensor, _, _ in sequence_controls(config).values():
        if tensor in declared:
            raise pb_utils.TritonModelException(
                f"model '{name}': '{tensor}' is declared as an input and as a sequence control; the sequence "
                f"batcher supplies control tensors, so they are not listed in 'input'")
    for state in sequence_states(config):
        if state.get("input_name", "") in declared:
            raise pb_utils.TritonModelException(
                f"model '{name}': '{state.get('input_name', '')}' is declared as an input and as a state input; "
                f"the backend feeds state tensors, so they are not listed in 'input'")


def _scalar(arr):
    # A STRING CORRID would be bytes, but Triton 2.51's core never lets such a request reach a
    # backend: its sequence batcher writes the control as a zero-padded 4+128-byte buffer that its
    # own input check then counts as 2 strings ("unexpected number of string elements 2 for
    # inference input 'CORRID', expecting 1"), with the plain Python backend too.
    v = arr.reshape(-1)[0]
    return v.item() if isinstance(v, np.generic) else v


class SequenceState:
    """Implicit state per sequence of one model instance, keyed by the CORRID control's value when
    the config has one, else by the request's correlation id. Under both strategies a sequence
    stays on one instance (direct: its slot; oldest: its instance's batcher), so per-instance
    state is the sequence's state."""

    def __init__(self, config, batched):
        self.controls = sequence_controls(config)
        self.states = sequence_states(config)
        self.batched = batched
        idle = int((config.get("sequence_batching") or {}).get("max_sequence_idle_microseconds") or 0)
        # Triton drops a sequence idle for longer than this (default 1 s); so do we, so that
        # sequences a client abandoned without END do not pile up.
        self.idle_s = (idle or 1_000_000) / 1e6
        self.by_key = {}  # key -> (last use, {state input name: array})

    @property
    def control_names(self):
        return [c[0] for c in self.controls.values()]

    @property
    def input_names(self):
        return [s["input_name"] for s in self.states]

    @property
    def output_names(self):
        return [s["output_name"] for s in self.states]

    def begin(self, request, feed):
        """Adds this request's control tensors and state to ``feed``; returns (key, flags), key None
        for a null request (the direct strategy pads a batch with them: READY false, correlation
        id 0, undefined data), which must not touch any sequence's state."""
        for name in self.control_names:
            t = pb_utils.get_input_tensor_by_name(request, name)
            if t is None:
                raise ValueError(f"sequence control '{name}' is missing (is the model served with sequence batching?)")
            feed[name] = t.as_numpy()
        ready = self.controls.get("CONTROL_SEQUENCE_READY")
        corrid = self.controls.get("CONTROL_SEQUENCE_CORRID")
        null = request.correlation_id() in (0, "") or \
            (ready is not None and feed[ready[0]].reshape(-1)[0] != ready[2])
        key = None if null else (_scalar(feed[corrid[0]]) if corrid else request.correlation_id())
        flags = request.flags()
        now = time.monotonic()
        for k in [k for k, (used, _) in self.by_key.items() if now - used > self.idle_s]:
            del self.by_key[k]
        kept = None
        if key is not None and not flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START:
            kept = self.by_key.get(key, (None, None))[1]
        for state in self.states:
            name = state["input_name"]
            if kept is not None and name in kept:
                feed[name] = kept[name]
                continue
            # The core's state input is Triton's initial state (zeros or initial_state data).
            t = pb_utils.get_input_tensor_by_name(request, name)
            if t is not None:
                feed[name] = t.as_numpy()
            else:
                dims = [int(d) for d in state.get("dims", [])]
                feed[name] = np.zeros(([1] if self.batched else []) + dims,
                                      dtype=pb_utils.triton_string_to_numpy(state["data_type"]))
        return key, flags

    def end(self, key, flags, outputs):
        """Keeps the request's state outputs for its sequence's next request, or releases the
        sequence's state at its END."""
        if key is None:
            return
        if flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END:
            self.by_key.pop(key, None)
            return
        self.by_key[key] = (time.monotonic(),
                            {s["input_name"]: np.array(outputs[s["output_name"]]) for s in self.states})


def null_response():
    """The response to a null (filler) request of the direct strategy: the core discards it."""
    return pb_utils.InferenceResponse(output_tensors=[])


def response(outputs):
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, v) for n, v in outputs.items()])


def error_response(e, backend):
    text = str(e).strip()
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(f"{backend}: {text.splitlines()[0] if text else type(e).__name__}"))


class GroupedExecute:
    """The execute loop of both fallback backends: read every request (a bad one gets its own error
    response), start or continue its sequence, run the requests that fit together as ONE model call
    (``_batching.batch_groups``), split the results back, and when a group's call fails run its
    members one by one so that one bad request does not fail the others.

    A backend sets ``backend`` (the prefix of its error messages), ``batched``, ``pad_ragged``,
    ``variable_dims``, ``sequence`` (a SequenceState or None), ``inputs`` ({name: config input}) and
    ``response_names`` in initialize(), and defines ``_run(feed) -> {name: array}``."""

    backend = ""

    def _read(self, request):
        feed = {}
        for name, spec in self.inputs.items():
            t = pb_utils.get_input_tensor_by_name(request, name)
            if t is None:
                if spec.get("optional"):
                    continue
                raise ValueError(f"input '{name}' is missing")
            feed[name] = t.as_numpy()
        return feed

    def _run_group(self, group):
        """One model call for the whole group; returns one output dict per request."""
        if not self.batched:
            return [self._run(group[0][1])]
        batch, sizes, shapes = concatenate(group, self.pad_ragged)
        outputs = self._run(batch)
        padded = self.pad_ragged and len(group) > 1
        return split(outputs, sizes, shapes if padded else [None] * len(group), batch, self.variable_dims)

    def execute(self, requests):
        responses = [None] * len(requests)
        feeds = []
        sequence_of = {}  # request index -> (state key, flags)
        for i, request in enumerate(requests):
            try:
                feed = self._read(request)
                if self.sequence is not None:
                    sequence_of[i] = self.sequence.begin(request, feed)
                    if sequence_of[i][0] is None:
                        responses[i] = null_response()
                        continue
                feeds.append((i, feed))
            except Exception as e:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
        groups = batch_groups(feeds, self.pad_ragged) if self.batched else [[f] for f in feeds]
        for group in groups:
            try:
                results = self._run_group(group)
            except Exception as e:
                if len(group) > 1:  # one bad request must not fail the others: run each on its own
                    for member in group:
                        self._respond_alone(responses, member, sequence_of)
                else:
                    responses[group[0][0]] = error_response(e, self.backend)
                continue
            for (i, _), out in zip(group, results):
                responses[i] = self._respond(i, out, sequence_of)
        return responses

    def _respond(self, i, out, sequence_of):
        if i in sequence_of:
            self.sequence.end(*sequence_of[i], out)
        return response({n: out[n] for n in self.response_names})

    def _respond_alone(self, responses, member, sequence_of):
        try:
            (out,) = self._run_group([member])
            responses[member[0]] = self._respond(member[0], out, sequence_of)
        except Exception as e:
            responses[member[0]] = error_response(e, self.backend)
