"""Hand-written broken ensembles, one per wiring-error class, each a copy of the good generated
'pipe' ensemble with one thing broken the way users do. ``check`` must report the exact message and
the real tritonserver must refuse to load each one."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from tritonops.pbtxt import config_to_text, read_config

FIXTURE = Path(__file__).parent / "fixtures" / "ensembles" / "pipe" / "ensemble.yaml"


@dataclass(frozen=True)
class Case:
    name: str
    field: str
    message: str  # exact finding message
    mutate: Callable[[mc.ModelConfig], None]


def _unmapped(cfg):
    del cfg.ensemble_scheduling.step[1].input_map["x"]


def _unknown_input(cfg):
    cfg.ensemble_scheduling.step[1].input_map["w"] = "x"


def _two_producers(cfg):
    cfg.ensemble_scheduling.step[1].output_map["s"] = "tripled"
    cfg.output[0].name = "tripled_again"  # keep the rest consistent-looking
    del cfg.output[0]


def _not_written(cfg):
    cfg.output.add(name="score", data_type=mc.TYPE_FP32, dims=[1])


def _unused(cfg):
    del cfg.output[1]  # 'tripled' is still written by step 0, nothing reads it


def _cycle(cfg):
    cfg.ensemble_scheduling.step[0].input_map["x"] = "total"
    cfg.ensemble_scheduling.step[1].input_map["x"] = "x"


def _unknown_tensor(cfg):
    cfg.ensemble_scheduling.step[1].input_map["x"] = "x_typo"


def _dtype(cfg):
    cfg.input[0].data_type = mc.TYPE_INT32


def _shape(cfg):
    del cfg.input[0].dims[:]
    cfg.input[0].dims.extend([4, -1])


def _mbs(cfg):
    cfg.max_batch_size = 16


def _instance_group(cfg):
    cfg.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)


def _input_unused(cfg):
    cfg.input.add(name="w", data_type=mc.TYPE_FP32, dims=[-1])


S0, S1 = "step 'step[0] pipe_double'", "step 'step[1] pipe_total'"
CASES = [
    Case("bad_unmapped_input", "ensemble_scheduling.step[1]",
         f"{S1}: input 'x' of model 'pipe_total' is not mapped", _unmapped),
    Case("bad_unknown_model_input", "ensemble_scheduling.step[1]",
         f"{S1}: model 'pipe_total' has no input 'w' (its inputs: y, x)", _unknown_input),
    Case("bad_two_producers", "ensemble_scheduling.step[1]",
         "ensemble tensor 'tripled' is written by more than one step ('step[0] pipe_double' and "
         "'step[1] pipe_total')", _two_producers),
    Case("bad_output_not_written", "ensemble_scheduling",
         "ensemble output 'score' is not written by any step", _not_written),
    Case("bad_unused_intermediate", "ensemble_scheduling.step[0]",
         "step 'step[0] pipe_double' writes tensor 'tripled' but nothing uses it (Triton refuses unused "
         "ensemble tensors)", _unused),
    Case("bad_cycle", "ensemble_scheduling.step[0]",
         "steps 'step[0] pipe_double', 'step[1] pipe_total' form a cycle: each waits for a tensor another one "
         "writes", _cycle),
    Case("bad_unknown_tensor", "ensemble_scheduling.step[1]",
         "step 'step[1] pipe_total' reads tensor 'x_typo', which no step writes and is not an ensemble input",
         _unknown_tensor),
    Case("bad_dtype", "ensemble_scheduling.step[0]",
         f"{S0}: input 'x' is FP32 but tensor 'x' (ensemble input) is INT32", _dtype),
    Case("bad_shape", "ensemble_scheduling.step[0]",
         f"{S0}: input 'x' has shape [-1,-1] but tensor 'x' (ensemble input) has shape [-1,4,-1] "
         "(batch dimension included; -1 is variable)", _shape),
    Case("bad_max_batch_size", "ensemble_scheduling.step[0]",
         "ensemble max_batch_size 16 is above the max_batch_size 8 of step 'step[0] pipe_double' "
         "(model 'pipe_double')", _mbs),
    Case("bad_instance_group", "instance_group", "an ensemble must not set instance_group", _instance_group),
    Case("bad_input_unused", "ensemble_scheduling", "ensemble input 'w' is not used by any step", _input_unused),
]


def add_bad_ensembles(repo: Path) -> None:
    """Next to the built good 'pipe' ensemble, one broken copy per case."""
    good = repo / "pipe"
    for case in CASES:
        cfg = read_config(good / "config.pbtxt")
        cfg.name = case.name
        case.mutate(cfg)
        d = repo / case.name
        shutil.copytree(good, d)
        (d / "config.pbtxt").write_text(config_to_text(cfg))
