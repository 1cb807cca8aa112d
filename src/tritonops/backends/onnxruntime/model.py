"""tritonops' Python-based ``onnxruntime`` backend for CPU-only servers without Triton's native one.

An unchanged production config (``platform: "onnxruntime_onnx"``) serves through it. It runs every
request of a dynamic batch in ONE onnxruntime call (splitting the results back), checks the config
against the model at load like Triton's ORT backend does, and fills in a missing config the way
Triton's ORT autofill would. Self-contained: runs inside the Python backend stub."""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

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


def _session(path, config, instance_count=1):
    params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    so = ort.SessionOptions()
    intra = params.get("intra_op_thread_count")
    if intra:
        so.intra_op_num_threads = int(intra)
    else:
        # Instances run in parallel processes; share the cores instead of oversubscribing them.
        so.intra_op_num_threads = max(1, (os.cpu_count() or 1) // max(1, instance_count))
    if params.get("inter_op_thread_count"):
        so.inter_op_num_threads = int(params["inter_op_thread_count"])
    level = (config.get("optimization") or {}).get("graph", {}).get("level")
    if level is not None:
        so.graph_optimization_level = {-1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       1: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                       2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL}.get(int(level),
                                                                                          so.graph_optimization_level)
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _check_config(name, config, session):
    """Refuse configs the native ORT backend refuses (names, types, ranks, batch dimension)."""
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
            names = {t["name"] for t in declared}
            missing = [n for n in by_name if n not in names]
            if missing:
                raise pb_utils.TritonModelException(
                    f"model '{name}': the model input '{missing[0]}' is not in the model configuration")


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


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        config = auto_complete_model_config.as_dict()
        if config.get("input") and config.get("output"):
            return auto_complete_model_config
        path = _latest_model_file(config)
        if path is None:
            return auto_complete_model_config
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        tensors = list(sess.get_inputs()) + list(sess.get_outputs())
        batching = bool(tensors) and all(len(t.shape) >= 1 and _dynamic(t.shape[0]) for t in tensors)
        mbs = int(config.get("max_batch_size", 0) or 0)
        if batching and mbs == 0:
            mbs = 4  # Triton's default-max-batch-size
            auto_complete_model_config.set_max_batch_size(mbs)
        batched = batching and mbs > 0

        def entry(t):
            shape = list(t.shape[1:] if batched else t.shape)
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
            e = {"name": t.name, "data_type": _ONNX_TO_CONFIG.get(t.type, "TYPE_INVALID"), "dims": dims or [1]}
            if not dims and batched:
                e["reshape"] = {"shape": []}
            return e

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
        self.config = config = json.loads(args["model_config"])
        self.name = args["model_name"]
        path = _model_path(args["model_repository"], args["model_version"], config)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"unable to find model file '{path}' for model '{self.name}'")
        count = sum(int(g.get("count", 1) or 1) for g in config.get("instance_group", [])) or 1
        self.session = _session(path, config, count)
        _check_config(self.name, config, self.session)
        self.batched = int(config.get("max_batch_size", 0) or 0) > 0
        self.inputs = {t["name"]: t for t in config.get("input", [])}
        self.outputs = {t["name"]: t for t in config.get("output", [])}
        self.output_names = [o.name for o in self.session.get_outputs() if not self.outputs or o.name in self.outputs]
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        self.pad_ragged = params.get("tritonops.pad_ragged", "").lower() in ("1", "true", "yes")

    def _read(self, request):
        arrays = {}
        for name, spec in self.inputs.items():
            t = pb_utils.get_input_tensor_by_name(request, name)
            if t is None:
                if spec.get("optional"):
                    continue
                raise ValueError(f"input '{name}' is missing")
            arrays[name] = t.as_numpy()
        return arrays

    def _run(self, feed):
        model_feed = {k: _to_model(v, self.inputs[k], self.batched) for k, v in feed.items()}
        results = self.session.run(self.output_names, model_feed)
        return dict(zip(self.output_names, results))

    def _respond(self, outputs, requested=None):
        tensors = []
        for name, arr in outputs.items():
            if requested is not None and name not in requested:
                continue
            tensors.append(pb_utils.Tensor(name, _to_triton(np.asarray(arr), self.outputs.get(name), self.batched)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests):
        responses = [None] * len(requests)
        feeds = []
        for i, request in enumerate(requests):
            try:
                feeds.append((i, self._read(request)))
            except Exception as e:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
        if not self.batched:
            for i, feed in feeds:
                responses[i] = self._guarded(lambda f=feed: [self._run(f)], [i])[0]
            return responses
        for group in self._groups(feeds):
            idx = [i for i, _ in group]
            responses_group = self._guarded(lambda g=group: self._run_batch(g), idx)
            for i, r in zip(idx, responses_group):
                responses[i] = r
        return responses

    def _guarded(self, fn, idx):
        try:
            return [self._respond(o) for o in fn()]
        except Exception as e:
            err = pb_utils.TritonError(f"onnxruntime: {str(e).strip().splitlines()[0] if str(e).strip() else e}")
            return [pb_utils.InferenceResponse(error=err) for _ in idx]

    def _groups(self, feeds):
        """Requests whose tensors can be concatenated: same non-batch shape (or any, when padding)."""
        if self.pad_ragged:
            return [feeds] if feeds else []
        groups = {}
        for i, feed in feeds:
            key = tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(feed.items()))
            groups.setdefault(key, []).append((i, feed))
        return list(groups.values())

    def _run_batch(self, group):
        sizes = [next(iter(feed.values())).shape[0] if feed else 1 for _, feed in group]
        names = list(group[0][1])
        batch = {}
        orig_shapes = []
        for name in names:
            arrays = [feed[name] for _, feed in group]
            if self.pad_ragged:
                rank = arrays[0].ndim
                target = [max(a.shape[d] for a in arrays) for d in range(1, rank)]
                arrays = [np.pad(a, [(0, 0)] + [(0, t - s) for s, t in zip(a.shape[1:], target)]) for a in arrays]
            batch[name] = np.concatenate(arrays, axis=0)
        if self.pad_ragged:
            orig_shapes = [{n: feed[n].shape for n in names} for _, feed in group]
        outputs = self._run(batch)
        results = []
        offset = 0
        for k, size in enumerate(sizes):
            part = {n: v[offset:offset + size] for n, v in outputs.items()}
            if self.pad_ragged:
                part = {n: self._unpad(v, orig_shapes[k], batch) for n, v in part.items()}
            results.append(part)
            offset += size
        return results

    @staticmethod
    def _unpad(out, shapes, batch):
        """Slice padded variable dims back: a dim of the output that equals a padded input dim is
        cut to that request's own length (sequence models: [batch, seq, ...])."""
        sl = [slice(None)]
        for d in range(1, out.ndim):
            cut = None
            for name, shape in shapes.items():
                if d < len(shape) and batch[name].shape[d] == out.shape[d] and shape[d] != out.shape[d]:
                    cut = shape[d]
                    break
            sl.append(slice(0, cut) if cut is not None else slice(None))
        return out[tuple(sl)]

    def finalize(self):
        self.session = None
