"""tritonops' Python-based ``onnxruntime`` backend for CPU-only servers without Triton's native one.

An unchanged production config (``platform: "onnxruntime_onnx"``) serves through it. It runs every
request of a dynamic batch in ONE onnxruntime call (splitting the results back), checks the config
against the model at load like Triton's ORT backend does, and fills in a missing config the way
Triton's ORT autofill would. Self-contained: runs inside the Python backend stub.

Stateful models (``sequence_batching``): control tensors reach the model as inputs and implicit
state is kept per sequence by _sequences.py (shared with the pytorch backend); this file adds the
native ORT backend's load checks of control and state tensors against the model."""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

# _batching.py and _sequences.py are put next to this file by tritonops' server launcher.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sequences import GroupedExecute, SequenceState, check_not_declared, sequence_controls, sequence_states

# onnxruntime is imported on first use: Triton also starts a throw-away stub per model only to
# run auto_complete_config, which for a model with a full config needs nothing from it.
ort = None


def _onnxruntime():
    global ort
    if ort is None:
        import onnxruntime

        ort = onnxruntime
    return ort

_ONNX_TO_CONFIG = {
    "tensor(bool)": "TYPE_BOOL", "tensor(uint8)": "TYPE_UINT8", "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32", "tensor(uint64)": "TYPE_UINT64", "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16", "tensor(int32)": "TYPE_INT32", "tensor(int64)": "TYPE_INT64",
    "tensor(float16)": "TYPE_FP16", "tensor(float)": "TYPE_FP32", "tensor(double)": "TYPE_FP64",
    "tensor(string)": "TYPE_STRING", "tensor(bfloat16)": "TYPE_BF16",
}


def _model_path(model_dir, version, config):
    name = config.get("default_model_filename") or "model.onnx"
    path = os.path.join(model_dir, str(version), name)
    if os.path.isdir(path):  # Triton's layout for external data: model.onnx/model.onnx
        path = os.path.join(path, "model.onnx")
    return path


def _latest_model_file(config):
    """For auto-complete, which gets no paths: the repositories come from the server launcher."""
    for repo in os.environ.get("TRITONOPS_MODEL_REPOSITORIES", "").split(os.pathsep):
        model_dir = os.path.join(repo, config.get("name", ""))
        if not repo or not os.path.isdir(model_dir):
            continue
        versions = sorted((int(v) for v in os.listdir(model_dir) if v.isdigit() and not v.startswith("0")),
                          reverse=True)
        for v in versions:
            path = _model_path(model_dir, v, config)
            if os.path.exists(path):
                return path
    return None


def _dynamic(d):
    return d is None or isinstance(d, str) or d < 0


def _session(path, config):
    _onnxruntime()
    params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    so = ort.SessionOptions()
    # Unset or 0: ONE intra-op thread per instance, unlike onnxruntime's all-cores default. Each
    # instance is its own stub process and the server, gRPC and the stubs' copies need CPU too.
    # Measured served (perf_analyzer gRPC, 2 cores, MLPs 4-8-3 / 256-1024-256 / 1024-4096-1024, one
    # instance): at concurrency 16, 1 thread gave 3482/2564/923 inf/s vs 2981/1821/621 with 2; at
    # concurrency 1 throughput was equal or better too, only the largest model's p50 was lower with
    # 2 threads (2.9-3.2 ms vs 3.8-4.0 ms). Latency-bound deployments set intra_op_thread_count.
    intra = int(params.get("intra_op_thread_count") or 0)
    so.intra_op_num_threads = intra if intra > 0 else 1
    # Pool threads sleep when idle instead of spinning (onnxruntime spins by default). Instances are
    # separate stub processes on the same few cores: a finished instance's spinning threads take
    # the CPU the next request's instance needs. Measured, text-embedding encoder with 2 threads,
    # perf_analyzer gRPC on 2 cores: 2 instances, concurrency 1, encoder compute 35-42 ms spinning
    # vs 19.6 ms p50 end to end without; 1 instance at concurrency 8: 38 vs 54 sentences/s.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if params.get("inter_op_thread_count"):
        so.inter_op_num_threads = int(params["inter_op_thread_count"])
    level = (config.get("optimization") or {}).get("graph", {}).get("level")
    if level is not None:
        so.graph_optimization_level = {-1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       1: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                       2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL}.get(int(level),
                                                                                          so.graph_optimization_level)
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _debatched(shape, batched):
    return list(shape[1:] if batched else shape)


def _check_sequence(name, config, session):
    """The native ORT backend's load checks of control and state tensors against the model."""
    batched = int(config.get("max_batch_size", 0) or 0) > 0
    model_inputs = {t.name: t for t in session.get_inputs()}
    model_outputs = {t.name: t for t in session.get_outputs()}
    check_not_declared(name, config)
    for tensor, dtype, _ in sequence_controls(config).values():
        m = model_inputs.get(tensor)
        if m is None:
            raise pb_utils.TritonModelException(
                f"configuration specified sequence control '{tensor}', but model does not provide that input")
        dims = _debatched(m.shape, batched)
        if len(dims) != 1 or (not _dynamic(dims[0]) and dims[0] != 1):
            raise pb_utils.TritonModelException(
                f"unable to load model '{name}', sequence control '{tensor}' in model has dims {dims} "
                f"but dims [1] is expected")
        expected = _ONNX_TO_CONFIG.get(m.type, m.type)
        if dtype != expected:
            raise pb_utils.TritonModelException(
                f"unable to load model '{name}', sequence control '{tensor}', the model expects data-type "
                f"{expected} but the model configuration specifies data-type {dtype}")
    for state in sequence_states(config):
        dims = [int(d) for d in state.get("dims", [])]
        for kind, tensor, tensors in (("input", state.get("input_name", ""), model_inputs),
                                      ("output", state.get("output_name", ""), model_outputs)):
            m = tensors.get(tensor)
            if m is None:
                raise pb_utils.TritonModelException(
                    f"model '{name}': state {kind} '{tensor}' is not an {kind} of the model "
                    f"(it has: {', '.join(tensors)})")
            expected = _ONNX_TO_CONFIG.get(m.type, m.type)
            if state.get("data_type") != expected:
                raise pb_utils.TritonModelException(
                    f"unable to load model '{name}', configuration expects datatype {state.get('data_type')} "
                    f"for {kind} state '{tensor}', model provides {expected}")
            # Stricter at load than the native backend (which fails every request instead): a state
            # whose shape the model cannot take can never run.
            model_dims = _debatched(m.shape, batched)
            if len(model_dims) != len(dims) or any(not _dynamic(md) and cd != -1 and cd != md
                                                   for cd, md in zip(dims, model_dims)):
                raise pb_utils.TritonModelException(
                    f"unable to load model '{name}', state {kind} '{tensor}' has dims {dims} in the "
                    f"configuration but the model's shape is {list(m.shape)}")
    expected_count = (sum(1 for t in config.get("input", []) if not t.get("optional"))
                      + len(sequence_controls(config)) + len(sequence_states(config)))
    if len(model_inputs) != expected_count:
        raise pb_utils.TritonModelException(
            f"unable to load model '{name}', configuration expects {expected_count} inputs, "
            f"model provides {len(model_inputs)}")


def _check_config(name, config, session):
    """Refuse configs the native ORT backend refuses (names, types, ranks, batch dimension,
    sequence controls and state)."""
    mbs = int(config.get("max_batch_size", 0) or 0)
    for kind, declared, actual in (("input", config.get("input", []), session.get_inputs()),
                                   ("output", config.get("output", []), session.get_outputs())):
        by_name = {t.name: t for t in actual}
        for t in declared:
            m = by_name.get(t["name"])
            if m is None:
                raise pb_utils.TritonModelException(
                    f"unexpected inference {kind} '{t['name']}', allowed {kind}s are: {', '.join(by_name)}")
            expected = _ONNX_TO_CONFIG.get(m.type, m.type)
            if t.get("data_type") != expected:
                raise pb_utils.TritonModelException(
                    f"unexpected datatype {t.get('data_type')} for inference {kind} '{t['name']}', expecting {expected}")
            dims = [int(d) for d in (t.get("reshape", {}).get("shape") if "reshape" in t else t.get("dims", []))]
            full = ([-1] if mbs > 0 else []) + dims
            if len(full) != len(m.shape):
                raise pb_utils.TritonModelException(
                    f"model '{name}', tensor '{t['name']}': the model expects {len(m.shape)} dimensions "
                    f"(shape {m.shape}) but the model configuration specifies {len(full)} dimensions")
            if mbs > 0 and not _dynamic(m.shape[0]):
                raise pb_utils.TritonModelException(
                    f"model '{name}', tensor '{t['name']}': for the model to support batching the shape should "
                    f"have at least 1 dimension and the first dimension must be -1; but shape expected by the "
                    f"model is {m.shape}")
            for cd, md in zip(full[1:] if mbs > 0 else full, m.shape[1:] if mbs > 0 else m.shape):
                if not _dynamic(md) and cd != -1 and cd != md:
                    raise pb_utils.TritonModelException(
                        f"model '{name}', tensor '{t['name']}': the model expects shape {m.shape} "
                        f"but the model configuration specifies shape {full}")
        if kind == "input":
            # Control and state tensors are model inputs that the config names under sequence_batching.
            names = {t["name"] for t in declared} | {c[0] for c in sequence_controls(config).values()} | \
                {s.get("input_name", "") for s in sequence_states(config)}
            missing = [n for n in by_name if n not in names]
            if missing:
                raise pb_utils.TritonModelException(
                    f"model '{name}': the model input '{missing[0]}' is not in the model configuration")
    _check_sequence(name, config, session)


def _implicit_reshapes(config, session):
    """dims [1] for a tensor the model has without dims (rank 0, or 1 with the batch dim) means
    reshape [], as Triton's ORT autofill writes it (and tritonops' own autofill cannot)."""
    batched = int(config.get("max_batch_size", 0) or 0) > 0
    ranks = {t.name: len(t.shape) for t in list(session.get_inputs()) + list(session.get_outputs())}
    for t in list(config.get("input", [])) + list(config.get("output", [])):
        if "reshape" not in t and [int(d) for d in t.get("dims", [])] == [1] and \
                ranks.get(t["name"]) == (1 if batched else 0):
            t["reshape"] = {"shape": []}


def _to_model(arr, spec, batched):
    if "reshape" in spec:
        shape = [int(d) for d in spec["reshape"].get("shape", [])]
        arr = arr.reshape(([arr.shape[0]] if batched else []) + shape)
    if arr.dtype == np.object_:
        arr = np.vectorize(lambda b: b.decode("utf-8", "surrogateescape") if isinstance(b, bytes) else b,
                           otypes=[object])(arr) if arr.size else arr
    return arr


def _to_triton(arr, spec, batched):
    if spec is not None and "reshape" in spec:
        dims = [int(d) for d in spec.get("dims", [])]
        arr = arr.reshape(([arr.shape[0]] if batched else []) + dims)
    if arr.dtype.kind == "U":
        arr = arr.astype(np.object_)
    return arr


def _params(config):
    return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


class TritonPythonModel(GroupedExecute):
    backend = "onnxruntime"

    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        config = auto_complete_model_config.as_dict()
        if config.get("input") and config.get("output"):
            return auto_complete_model_config  # as Triton's ORT backend: nothing to fill in
        path = _latest_model_file(config)
        if path is None:
            return auto_complete_model_config
        sess = _onnxruntime().InferenceSession(path, providers=["CPUExecutionProvider"])
        tensors = list(sess.get_inputs()) + list(sess.get_outputs())
        batching = bool(tensors) and all(len(t.shape) >= 1 and _dynamic(t.shape[0]) for t in tensors)
        mbs = int(config.get("max_batch_size", 0) or 0)
        if mbs > 0 and not batching:
            raise pb_utils.TritonModelException(
                f"autofill failed for model '{config.get('name', '')}': model does not support batching while "
                f"non-zero max_batch_size is specified")
        if batching and mbs == 0:
            mbs = 4  # Triton's default-max-batch-size
            auto_complete_model_config.set_max_batch_size(mbs)
        batched = batching and mbs > 0

        def entry(t):
            shape = list(t.shape[1:] if batched else t.shape)
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
            # Triton's ORT autofill gives a rank-0 (after the batch dim) tensor dims [1] + reshape [];
            # the Python backend's add_input/add_output take no reshape, so initialize() applies it.
            return {"name": t.name, "data_type": _ONNX_TO_CONFIG.get(t.type, "TYPE_INVALID"), "dims": dims or [1]}

        if not config.get("input"):
            for t in sess.get_inputs():
                auto_complete_model_config.add_input(entry(t))
        if not config.get("output"):
            for t in sess.get_outputs():
                auto_complete_model_config.add_output(entry(t))
        if mbs > 1 and not config.get("dynamic_batching") and not config.get("sequence_batching"):
            auto_complete_model_config.set_dynamic_batching()
        return auto_complete_model_config

    def initialize(self, args):
        # args["model_repository"] is the model's own directory (<repository>/<model>) in Triton 2.51.
        self.config = config = json.loads(args["model_config"])
        self.name = args["model_name"]
        path = _model_path(args["model_repository"], args["model_version"], config)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"unable to find model file '{path}' for model '{self.name}'")
        self.session = _session(path, config)
        _implicit_reshapes(config, self.session)
        _check_config(self.name, config, self.session)
        self.batched = int(config.get("max_batch_size", 0) or 0) > 0
        self.inputs = {t["name"]: t for t in config.get("input", [])}
        self.outputs = {t["name"]: t for t in config.get("output", [])}
        self.sequence = SequenceState(config, self.batched) if config.get("sequence_batching") else None
        state_outputs = self.sequence.output_names if self.sequence else []
        # What clients get: the config's outputs (all of the model's if none are declared), never state.
        self.response_names = [o.name for o in self.session.get_outputs()
                               if (not self.outputs or o.name in self.outputs) and o.name not in state_outputs]
        self.output_names = self.response_names + state_outputs
        self.pad_ragged = _params(config).get("tritonops.pad_ragged", "").lower() in ("1", "true", "yes")
        # Which output dims may be cut back after padding: the variable (-1) ones of the config.
        self.variable_dims = {n: [int(d) == -1 for d in t.get("dims", [])] for n, t in self.outputs.items()}

    def _run(self, feed):
        model_feed = {k: _to_model(v, self.inputs.get(k, {}), self.batched) for k, v in feed.items()}
        results = self.session.run(self.output_names, model_feed)
        return {n: _to_triton(np.asarray(r), self.outputs.get(n), self.batched) for n, r in zip(self.output_names, results)}

    def finalize(self):
        self.session = None
