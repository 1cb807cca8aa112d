"""Broken repositories, one model per failure mode, each with the finding `check` must report.

Every case starts from a good, real ONNX model with a config rendered by tritonops and breaks one
thing, the way users do. The same repository is loaded by the real tritonserver in the oracle
test, which must refuse each bad model and load each good one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

import onnx_models
from tritonops.build import BuildOptions, build
from tritonops.pbtxt import config_to_text, read_config


@dataclass(frozen=True)
class Case:
    name: str
    field: str
    message: str  # exact finding message
    mutate: Callable[[mc.ModelConfig, Path], str | None]  # returns raw text to write instead, if any
    batch: bool = True


def _text(cfg: mc.ModelConfig) -> str:
    return config_to_text(cfg)


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
         "a model that does not batch must warm up with batch_size 1", _warmup_nonbatched),
]
GOOD = ["good_batched", "good_fixed"]


def make_repository(root: Path) -> Path:
    repo = root / "repo"
    src = onnx_models.mlp(root / "src" / "mlp.onnx")
    fixed = onnx_models.mlp(root / "src" / "fixed.onnx", batch=None)
    build(BuildOptions(source=str(src), repository=repo, name="good_batched", max_batch_size=8))
    build(BuildOptions(source=str(fixed), repository=repo, name="good_fixed"))
    for case in CASES:
        build(BuildOptions(source=str(src), repository=repo, name=case.name, max_batch_size=8))
        d = repo / case.name
        cfg = read_config(d / "config.pbtxt")
        raw = case.mutate(cfg, d)
        (d / "config.pbtxt").write_text(raw if isinstance(raw, str) else _text(cfg))
    return repo
