"""Broken repositories, one model per failure mode, each with the finding `check` must report.

Every case starts from a good, real ONNX model with a config rendered by tritonops and breaks one
thing, the way users do. The same repository is loaded by the real tritonserver in the oracle
test, which must refuse each bad model and load each good one."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

import onnx_models
import stateful_models
from tritonops.build import BuildOptions, build
from tritonops.pbtxt import config_to_text, read_config


@dataclass(frozen=True)
class Case:
    name: str
    field: str
    message: str  # exact finding message
    mutate: Callable[[mc.ModelConfig, Path], str | None]  # returns raw text to write instead, if any
    batch: bool = True
    # What the case starts from: "mlp" (built by tritonops), "stateful" (the accumulator of
    # stateful_models with its sequence-batching config) or "ensemble" (an empty config, 1/ only).
    base: str = "mlp"
    # Triton 2.51 itself sometimes dies (SIGSEGV) at start-up after this case's failed warm-up, taking the
    # other models with it (seen in 1 of 5-10 starts): the oracle test gives it a server of its own.
    own_server: bool = False


def _text(cfg: mc.ModelConfig) -> str:
    return config_to_text(cfg)


def _version_beyond_int64(_cfg, d):
    # Triton reads version directory names with stoll: this one aborts the whole server (issue 14).
    shutil.copytree(d / "1", d / "99999999999999999999")


def _pref(cfg, _d):
    cfg.dynamic_batching.preferred_batch_size.extend([64])


def _priority(cfg, _d):
    cfg.dynamic_batching.priority_levels = 2


def _ordering(cfg, _d):
    cfg.dynamic_batching.priority_levels = 2
    cfg.dynamic_batching.default_priority_level = 1
    cfg.dynamic_batching.preserve_ordering = True


def _cache_seq(cfg, _d):
    cfg.ClearField("dynamic_batching")
    cfg.sequence_batching.SetInParent()
    cfg.response_cache.enable = True


def _dim0(cfg, _d):
    cfg.input[0].dims[:] = [0]


def _reshape(cfg, _d):
    cfg.input[0].reshape.shape[:] = [5]


def _dtype(cfg, _d):
    cfg.input[0].data_type = mc.TYPE_FP64


def _input_name(cfg, _d):
    cfg.input[0].name = "z"


def _rank(cfg, _d):
    cfg.input[0].dims[:] = [4, 1]


def _dim_value(cfg, _d):
    cfg.output[0].dims[:] = [7]


def _pair(cfg, _d):
    cfg.backend = "pytorch"


def _cpu_gpus(cfg, _d):
    cfg.instance_group[0].gpus[:] = [0]


def _name(cfg, _d):
    cfg.name = "somebody_else"


def _syntax(cfg, _d):
    return _text(cfg).replace("max_batch_size: 8", "max_batch_size: eight")


def _unknown_field(cfg, _d):
    return _text(cfg).replace("max_batch_size: 8", "max_batch: 8")


def _no_version(_cfg, d):
    import shutil

    shutil.rmtree(d / "1")


def _missing_file(_cfg, d):
    (d / "1" / "model.onnx").unlink()


def _fixed_batch(cfg, d):
    onnx_models.mlp(d / "1" / "model.onnx", batch=None)


def _warmup_nonbatched(cfg, _d):
    cfg.max_batch_size = 0
    cfg.ClearField("dynamic_batching")
    cfg.input[0].dims[:] = [-1, 4]
    cfg.output[0].dims[:] = [-1, 3]
    w = cfg.model_warmup.add(name="w", batch_size=4, count=1)
    w.inputs["x"].data_type = mc.TYPE_FP32
    w.inputs["x"].dims[:] = [1, 4]
    w.inputs["x"].zero_data = True


def _negative_gpu(cfg, _d):
    cfg.instance_group[0].kind = mc.ModelInstanceGroup.KIND_GPU
    cfg.instance_group[0].gpus[:] = [-1]


_Control = mc.ModelSequenceBatching.Control


def _seq_kind_twice(cfg, _d):
    cfg.sequence_batching.control_input[1].control.add(kind=_Control.CONTROL_SEQUENCE_START, int32_false_true=[0, 1])


def _seq_no_value(cfg, _d):
    cfg.sequence_batching.control_input[0].control[0].ClearField("int32_false_true")


def _seq_corrid_bool(cfg, _d):
    cfg.sequence_batching.control_input.add(name="CORRID").control.add(
        kind=_Control.CONTROL_SEQUENCE_CORRID, bool_false_true=[False, True])


def _seq_control_declared(cfg, _d):
    cfg.input.add(name="START", data_type=mc.TYPE_INT32, dims=[1])


def _seq_control_not_in_model(cfg, _d):
    cfg.sequence_batching.control_input.add(name="END").control.add(
        kind=_Control.CONTROL_SEQUENCE_END, fp32_false_true=[0.0, 1.0])


def _seq_state_dtype(cfg, _d):
    cfg.sequence_batching.state[0].data_type = mc.TYPE_FP64
    cfg.sequence_batching.state[0].initial_state[0].data_type = mc.TYPE_FP64


def _seq_state_dims(cfg, _d):
    cfg.sequence_batching.state[0].dims[:] = [4]
    cfg.sequence_batching.state[0].initial_state[0].dims[:] = [4]


def _seq_oldest_preferred(cfg, _d):
    cfg.sequence_batching.oldest.preferred_batch_size.append(16)  # replaces direct (a oneof)


def _ensemble(cfg, name, steps, outputs=(("y", 3),)):
    """x FP32 [4] -> ... -> outputs; steps are (model, version, input_map, output_map)."""
    cfg.name, cfg.platform, cfg.max_batch_size = name, "ensemble", 8
    cfg.input.add(name="x", data_type=mc.TYPE_FP32, dims=[4])
    for out, width in outputs:
        cfg.output.add(name=out, data_type=mc.TYPE_FP32, dims=[width])
    for model, version, input_map, output_map in steps:
        step = cfg.ensemble_scheduling.step.add(model_name=model, model_version=version)
        step.input_map.update(input_map)
        step.output_map.update(output_map)


def _calls(model, version=-1):
    return lambda cfg, d: _ensemble(cfg, d.name, [(model, version, {"x": "x"}, {"y": "y"})])


def _decoupled_outputs(cfg, d):
    _ensemble(cfg, d.name, [("good_decoupled", -1, {"x": "x"}, {"x2": "t"}),
                            ("good_batched", -1, {"x": "x"}, {"y": "y"})], outputs=(("t", 4), ("y", 3)))


CASES = [
    Case("bad_syntax", "(syntax)", "", _syntax),
    Case("unknown_field", "(syntax)", "", _unknown_field),
    Case("name_mismatch", "name", "name 'somebody_else' does not match the directory name 'name_mismatch'", _name),
    Case("no_version", "(versions)", "no_version/ has no version directory", _no_version),
    Case("missing_file", "(model file)", "missing_file/1/model.onnx is missing", _missing_file),
    Case("preferred_too_big", "dynamic_batching.preferred_batch_size",
         "preferred batch size 64 is above max_batch_size 8", _pref),
    Case("priority_default_zero", "dynamic_batching.default_priority_level",
         "default_priority_level 0 is outside 1..2", _priority),
    Case("ordering_priorities", "dynamic_batching.preserve_ordering",
         "preserve_ordering allows only one priority level", _ordering),
    Case("cache_sequence", "response_cache", "response_cache cannot be combined with sequence_batching", _cache_seq),
    Case("zero_dim", "input[0] 'x'.dims", "dimension 0 is invalid", _dim0),
    Case("reshape_count", "input[0] 'x'.reshape",
         "reshape [5] does not have the same number of elements as dims [4]", _reshape),
    Case("wrong_dtype", "input[0] 'x'.data_type", "config says TYPE_FP64 but the ONNX model has TYPE_FP32", _dtype),
    Case("wrong_input_name", "input[0] 'z'.name", "the ONNX model has no input 'z' (it has: x)", _input_name),
    Case("wrong_rank", "input[0] 'x'.dims",
         "config gives rank 3 with the batch dimension but the ONNX model's input has rank 2", _rank),
    Case("wrong_dim", "output[0] 'y'.dims", "dimension 0 is 7 but the ONNX model has 3", _dim_value),
    Case("bad_pair", "platform/backend", "unexpected platform 'onnxruntime_onnx' and backend 'pytorch' pair", _pair),
    Case("cpu_with_gpus", "instance_group[0].gpus", "gpus is only valid for KIND_GPU or KIND_AUTO groups",
         _cpu_gpus),
    Case("fixed_batch_dim", "max_batch_size",
         "max_batch_size is 8 but ONNX input 'x' has a fixed first dimension 1", _fixed_batch),
    Case("warmup_batch_nonbatched", "model_warmup[0].batch_size",
         "a model that does not batch must warm up with batch_size 1", _warmup_nonbatched, own_server=True),
    Case("negative_gpu", "instance_group[0].gpus", "GPU id -1 is negative", _negative_gpu),
    # Sequence batching (Triton's core refuses the first four and the last; its ORT backend the others).
    Case("seq_kind_twice", "sequence_batching.control_input[1].control[1].kind",
         "CONTROL_SEQUENCE_START is given more than once ('START' and 'READY')", _seq_kind_twice, base="stateful"),
    Case("seq_no_value", "sequence_batching.control_input[0].control[0]",
         "CONTROL_SEQUENCE_START has no value form", _seq_no_value, base="stateful"),
    Case("seq_corrid_bool", "sequence_batching.control_input[2].control[0].bool_false_true",
         "CONTROL_SEQUENCE_CORRID takes data_type, not bool_false_true", _seq_corrid_bool, base="stateful"),
    Case("seq_control_declared", "sequence_batching.control_input[0].name",
         "'START' is a control tensor and also declared as an input", _seq_control_declared, base="stateful"),
    Case("seq_control_not_in_model", "sequence_batching.control_input 'END'",
         "CONTROL_SEQUENCE_END tensor 'END' is not an input of the ONNX model (it has: IN, STATE_IN, START, READY)",
         _seq_control_not_in_model, base="stateful"),
    Case("seq_state_dtype", "sequence_batching.state[0].data_type",
         "state data_type is TYPE_FP64 but the ONNX input 'STATE_IN' is TYPE_FP32", _seq_state_dtype,
         base="stateful"),
    Case("seq_state_dims", "sequence_batching.state[0].dims",
         "state dims [4] do not fit the ONNX input 'STATE_IN' of shape [-1, 3]", _seq_state_dims, base="stateful"),
    Case("seq_oldest_preferred", "sequence_batching.oldest.preferred_batch_size",
         "preferred batch size 16 is outside 1..max_batch_size (4)", _seq_oldest_preferred, base="stateful"),
    # Ensembles of ensembles, versions, decoupled branches (Triton's model repository manager and
    # ensemble_utils.cc refuse them).
    Case("ensemble_self", "ensemble_scheduling.step[0].model_name",
         "circular dependency between ensembles: ensemble_self -> ensemble_self (the ensemble calls itself)",
         _calls("ensemble_self"), base="ensemble"),
    Case("ensemble_cycle_a", "ensemble_scheduling.step[0].model_name",
         "circular dependency between ensembles: ensemble_cycle_a -> ensemble_cycle_b -> ensemble_cycle_a "
         "(the ensemble calls itself through other ensembles)", _calls("ensemble_cycle_b"), base="ensemble"),
    Case("ensemble_cycle_b", "ensemble_scheduling.step[0].model_name",
         "circular dependency between ensembles: ensemble_cycle_b -> ensemble_cycle_a -> ensemble_cycle_b "
         "(the ensemble calls itself through other ensembles)", _calls("ensemble_cycle_a"), base="ensemble"),
    Case("ensemble_step_version", "ensemble_scheduling.step[0].model_version",
         "step model 'good_batched' does not serve version 2 (its version policy and version directories "
         "give: [1])", _calls("good_batched", version=2), base="ensemble"),
    Case("version_beyond_int64", "(versions)",
         "version directory version_beyond_int64/99999999999999999999 is beyond the 64-bit range Triton reads "
         "versions in (the server aborts on it)", _version_beyond_int64, own_server=True),
    Case("ensemble_decoupled_outputs", "output",
         "the ensemble's outputs originate from different decoupled models, so no single response can carry "
         "them all", _decoupled_outputs, base="ensemble"),
]
GOOD = ["good_batched", "good_fixed", "good_stateful", "good_decoupled", "good_inner_ensemble",
        "good_ensemble_of_ensembles", "good_decoupled_chain"]

DECOUPLED_MODEL = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            sender = request.get_response_sender()
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("x2", x * 2)]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""


def _write_decoupled(repo: Path) -> None:
    """good_decoupled: a Python model sending its response through the decoupled sender."""
    cfg = mc.ModelConfig(name="good_decoupled", backend="python", max_batch_size=8)
    cfg.input.add(name="x", data_type=mc.TYPE_FP32, dims=[4])
    cfg.output.add(name="x2", data_type=mc.TYPE_FP32, dims=[4])
    cfg.model_transaction_policy.decoupled = True
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    (repo / cfg.name / "1").mkdir(parents=True)
    (repo / cfg.name / "1" / "model.py").write_text(DECOUPLED_MODEL)
    (repo / cfg.name / "config.pbtxt").write_text(_text(cfg))


def _write_ensemble(repo: Path, name: str, steps, outputs=(("y", 3),)) -> None:
    cfg = mc.ModelConfig()
    _ensemble(cfg, name, steps, outputs)
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(_text(cfg))


def make_repository(root: Path) -> Path:
    repo = root / "repo"
    src = onnx_models.mlp(root / "src" / "mlp.onnx")
    fixed = onnx_models.mlp(root / "src" / "fixed.onnx", batch=None)
    build(BuildOptions(source=str(src), repository=repo, name="good_batched", max_batch_size=8))
    build(BuildOptions(source=str(fixed), repository=repo, name="good_fixed"))
    stateful_models.write_model(repo, stateful_models.stateful_config("good_stateful"))
    _write_decoupled(repo)
    _write_ensemble(repo, "good_inner_ensemble", [("good_batched", 1, {"x": "x"}, {"y": "y"})])
    _write_ensemble(repo, "good_ensemble_of_ensembles", [("good_inner_ensemble", -1, {"x": "x"}, {"y": "y"})])
    # Every tensor after the decoupled step comes from its one stream: Triton accepts this.
    _write_ensemble(repo, "good_decoupled_chain", [("good_decoupled", -1, {"x": "x"}, {"x2": "t"}),
                                                   ("good_batched", -1, {"x": "t"}, {"y": "y"})])
    for case in CASES:
        d = repo / case.name
        if case.base == "mlp":
            build(BuildOptions(source=str(src), repository=repo, name=case.name, max_batch_size=8))
            cfg = read_config(d / "config.pbtxt")
        elif case.base == "stateful":
            stateful_models.write_model(repo, stateful_models.stateful_config(case.name))
            cfg = read_config(d / "config.pbtxt")
        else:
            (d / "1").mkdir(parents=True)
            cfg = mc.ModelConfig()
        raw = case.mutate(cfg, d)
        (d / "config.pbtxt").write_text(raw if isinstance(raw, str) else _text(cfg))
    return repo
