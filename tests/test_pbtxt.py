"""config.pbtxt rendering through model_config_pb2: golden files (hand-written, and one ensemble config
built from a fixture spec), round trips."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import ensemble_fixtures as ef
from tritonops.build import BuildOptions, make_spec
from tritonops.dtypes import parse_dtype
from tritonops.pbtxt import config_to_json, config_to_text, parse_config_text, render_config
from tritonops.spec import DynamicBatching, ModelSpec, TensorSpec, VersionPolicy

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str) -> mc.ModelConfig:
    return text_format.Parse((GOLDEN / name).read_text(), mc.ModelConfig())


def t(name: str, dtype: str, *dims: int, reshape=None) -> TensorSpec:
    return TensorSpec(name, parse_dtype(dtype), tuple(dims), reshape=reshape)


def roundtrip(cfg: mc.ModelConfig) -> str:
    text = config_to_text(cfg)
    assert parse_config_text(text, "rendered") == cfg
    return text


def test_full_options_match_handwritten_config():
    opts = BuildOptions(
        source="unused.onnx", name="clf", max_batch_size=32, instances=2, preferred_batch_sizes=(8, 16),
        max_queue_delay_us=500, max_queue_size=64, queue_timeout_us=100_000, timeout_action="DELAY",
        response_cache=True, warmup=True, threads=1,
    )
    spec = make_spec(opts, "clf", "onnxruntime_onnx", 32, [t("x", "FP32", 4)], [t("y", "FP32", 3)])
    cfg = render_config(spec)
    assert cfg == golden("mlp_full.pbtxt")
    roundtrip(cfg)


def test_nonbatched_keeps_explicit_zero_and_no_batcher():
    spec = make_spec(BuildOptions(source="x.onnx"), "strings", "onnxruntime_onnx", 0,
                     [t("INPUT", "STRING", 2, -1)], [t("OUTPUT", "BOOL", 2, -1)])
    cfg = render_config(spec)
    assert cfg == golden("nonbatched_string.pbtxt")
    text = roundtrip(cfg)
    # proto3 would drop the zero; readers must see that the model does not batch.
    assert "max_batch_size: 0\n" in text
    assert "dynamic_batching" not in text


def test_gpu_accelerator_reshape_priorities_version_policy():
    opts = BuildOptions(source="x.onnx", kind="gpu", gpus=(0,), accelerator="tensorrt", priority_levels=2,
                        default_priority_level=1, version_policy=VersionPolicy("latest", 2))
    spec = make_spec(opts, "scale", "onnxruntime_onnx", 8,
                     [t("x", "FP32", 1, reshape=())], [t("y", "FP32", 1, reshape=())])
    cfg = render_config(spec)
    assert cfg == golden("gpu_trt_accelerator.pbtxt")
    roundtrip(cfg)


@pytest.mark.parametrize("dtype", ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                                   "INT64", "FP16", "FP32", "FP64", "STRING", "BF16"])
def test_every_dtype_renders_to_its_enum(dtype):
    spec = ModelSpec("m", "onnxruntime_onnx", 4, (t("a", dtype, 2),), (t("b", dtype, 2),))
    cfg = render_config(spec)
    expected = "TYPE_STRING" if dtype == "STRING" else f"TYPE_{dtype}"
    assert mc.DataType.Name(cfg.input[0].data_type) == expected
    roundtrip(cfg)


def test_python_and_ensemble_platform_fields():
    py = render_config(ModelSpec("pre", "python", 8, (t("a", "FP32", 2),), (t("b", "FP32", 2),)))
    assert py.backend == "python" and py.platform == ""
    ens = render_config(ModelSpec("e", "ensemble", 8, (t("a", "FP32", 2),), (t("b", "FP32", 2),),
                                  instance_groups=()))
    assert ens.platform == "ensemble" and ens.backend == "" and not ens.instance_group


def test_load_api_json_uses_proto_field_names():
    spec = ModelSpec("m", "onnxruntime_onnx", 4, (t("a", "FP32", 2),), (t("b", "FP32", 2),))
    js = config_to_json(render_config(spec))
    assert '"data_type": "TYPE_FP32"' in js and '"max_batch_size": 4' in js
    assert "dataType" not in js


def test_preferred_batch_size_above_max_is_refused_by_spec():
    from tritonops.errors import UsageError
    from tritonops.spec import DynamicBatching

    with pytest.raises(UsageError, match="preferred batch size 16 is above max batch size 8"):
        ModelSpec("m", "onnxruntime_onnx", 8, (t("a", "FP32", 2),), (t("b", "FP32", 2),),
                  dynamic_batching=DynamicBatching(preferred_batch_sizes=(16,)))


def test_tensor_spec_parsing():
    s = TensorSpec.parse("INPUT__0:FP32:3,224,224")
    assert (s.name, s.dtype.name, s.dims) == ("INPUT__0", "FP32", (3, 224, 224))
    assert TensorSpec.parse("ids:int64:-1").dims == (-1,)
    assert TensorSpec.parse("text:STRING:1").dtype.name == "BYTES"
    from tritonops.errors import UsageError

    with pytest.raises(UsageError, match="cannot parse tensor spec 'x:FP32'"):
        TensorSpec.parse("x:FP32")
    with pytest.raises(UsageError, match="unknown data type 'FP128'"):
        TensorSpec.parse("x:FP128:4")
    with pytest.raises(UsageError, match="tensor 'x' has dimension 0"):
        TensorSpec.parse("x:FP32:0")


# ---------------------------------------------------------------- golden ensemble config

REGENERATE = "TRITONOPS_REGENERATE_GOLDEN"


def assert_matches_golden(rendered: str, name: str) -> None:
    """Byte for byte. ``TRITONOPS_REGENERATE_GOLDEN=1`` rewrites the golden file (review its diff
    before committing); nothing else ever writes it."""
    path = GOLDEN / name
    if os.environ.get(REGENERATE) == "1":
        path.write_text(rendered)
        warnings.warn(f"{REGENERATE}=1: rewrote {path}", stacklevel=2)
    assert path.exists(), f"no golden file {path}: run once with {REGENERATE}=1 and review it"
    assert rendered == path.read_text(), f"{path} differs; if the change is intended: {REGENERATE}=1 pytest ..."


def test_ensemble_config_from_the_fixture_spec_matches_golden(tmp_path, cli):
    """The ensemble config.pbtxt built from tests/fixtures/ensembles/pipe/ensemble.yaml."""
    code, _out, err = cli("build", "-f", ef.FIXTURE, "--repo", tmp_path / "repo")
    assert code == 0, err
    rendered = (tmp_path / "repo" / "pipe" / "config.pbtxt").read_text()
    assert_matches_golden(rendered, "pipe_ensemble.pbtxt")
    cfg = golden("pipe_ensemble.pbtxt")
    assert cfg.platform == "ensemble" and [s.model_name for s in cfg.ensemble_scheduling.step] == [
        "pipe_double", "pipe_total"]
    assert roundtrip(cfg) == rendered


# ---------------------------------------------------------------- config -> spec -> config

ENSEMBLE_CONFIG = """
name: "pipe"
platform: "ensemble"
max_batch_size: 8
input [ { name: "x", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "total", data_type: TYPE_FP32, dims: [ 1 ] }, { name: "tripled", data_type: TYPE_FP32, dims: [ -1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "pipe_double", model_version: -1, input_map { key: "x" value: "x" }
      output_map { key: "y" value: "doubled" } output_map { key: "z" value: "tripled" } },
    { model_name: "pipe_total", model_version: -1, input_map { key: "y" value: "doubled" }
      input_map { key: "x" value: "x" } output_map { key: "s" value: "total" } }
  ]
}
"""

PYTHON_STEP_CONFIG = """
name: "pipe_double"
backend: "python"
max_batch_size: 8
input [ { name: "x", data_type: TYPE_FP32, dims: [ -1 ], allow_ragged_batch: true } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ -1 ] } ]
instance_group [ { count: 1, kind: KIND_CPU } ]
dynamic_batching { }
parameters { key: "tritonops.function" value: { string_value: "double" } }
parameters { key: "tritonops.ragged" value: { string_value: "group" } }
"""

# What a ModelSpec has no field for stays in extra, verbatim: sequence batching, KIND_MODEL, a format.
UNMODELLED_CONFIG = """
name: "seq"
backend: "onnxruntime"
max_batch_size: 4
input [ { name: "x", data_type: TYPE_FP32, format: FORMAT_NCHW, dims: [ 3, 8, 8 ] } ]
output [ { name: "y", data_type: TYPE_INT64, dims: [ 1 ], label_filename: "labels.txt" } ]
instance_group [ { count: 2, kind: KIND_MODEL } ]
sequence_batching { max_sequence_idle_microseconds: 5000000 }
model_warmup [ { name: "w", batch_size: 2,
                 inputs { key: "x" value: { data_type: TYPE_FP32, dims: [ 3, 8, 8 ], zero_data: true } } } ]
"""


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.pbtxt")))
def test_every_golden_config_round_trips_through_a_spec(name):
    from tritonops.pbtxt import spec_from_config

    cfg = golden(name)
    spec = spec_from_config(cfg)
    assert render_config(spec) == cfg
    assert spec_from_config(render_config(spec)) == spec
    roundtrip(render_config(spec))


@pytest.mark.parametrize("text", [ENSEMBLE_CONFIG, PYTHON_STEP_CONFIG, UNMODELLED_CONFIG],
                         ids=["ensemble", "python_step", "unmodelled"])
def test_ensemble_python_and_unmodelled_configs_round_trip(text):
    from tritonops.pbtxt import spec_from_config

    cfg = parse_config_text(text, "test")
    spec = spec_from_config(cfg)
    assert render_config(spec) == cfg
    assert spec.name == cfg.name and [i.name for i in spec.inputs] == [i.name for i in cfg.input]


def test_spec_from_config_reads_the_fields_a_spec_has():
    """The three golden configs are what make_spec builds from these options: from_config gives the
    same specs back, with nothing left over in extra."""
    from tritonops.pbtxt import spec_from_config

    opts = BuildOptions(
        source="unused.onnx", name="clf", max_batch_size=32, instances=2, preferred_batch_sizes=(8, 16),
        max_queue_delay_us=500, max_queue_size=64, queue_timeout_us=100_000, timeout_action="DELAY",
        response_cache=True, warmup=True, threads=1,
    )
    full = make_spec(opts, "clf", "onnxruntime_onnx", 32, [t("x", "FP32", 4)], [t("y", "FP32", 3)])
    gpu = make_spec(BuildOptions(source="x.onnx", kind="gpu", gpus=(0,), accelerator="tensorrt", priority_levels=2,
                                 default_priority_level=1, version_policy=VersionPolicy("latest", 2)),
                    "scale", "onnxruntime_onnx", 8, [t("x", "FP32", 1, reshape=())], [t("y", "FP32", 1, reshape=())])
    for file, spec in (("mlp_full.pbtxt", full), ("gpu_trt_accelerator.pbtxt", gpu)):
        got = spec_from_config(golden(file))
        assert got == spec and got.extra == {}, file
    ens = spec_from_config(parse_config_text(ENSEMBLE_CONFIG, "test"))
    assert ens.platform == "ensemble" and ens.instance_groups == () and list(ens.extra) == ["ensemble_scheduling"]
    py = spec_from_config(parse_config_text(PYTHON_STEP_CONFIG, "test"))
    assert py.platform == "python" and py.inputs[0].allow_ragged_batch and py.extra == {}
    odd = spec_from_config(parse_config_text(UNMODELLED_CONFIG, "test"))
    assert odd.platform == "onnxruntime_onnx"
    assert set(odd.extra) == {"input", "output", "instance_group", "sequence_batching", "model_warmup", "platform"}


# ---------------------------------------------------------------- sequence batching and warm-up files


def _stateful_spec(**kw) -> ModelSpec:
    from tritonops.spec import SequenceBatching, SequenceControl, SequenceState

    sb = SequenceBatching(
        strategy="oldest", max_sequence_idle_us=2_000_000, max_queue_delay_us=100, preferred_batch_sizes=(2, 4),
        max_candidate_sequences=8,
        controls=(SequenceControl("START", "S", parse_dtype("FP32")),
                  SequenceControl("END", "E", parse_dtype("INT32")),
                  SequenceControl("READY", "R", parse_dtype("BOOL")),
                  SequenceControl("CORRID", "C", parse_dtype("BYTES"))),
        states=(SequenceState("h_in", "h_out", parse_dtype("FP16"), (2, 5)),))
    return ModelSpec(**{"name": "rnn", "platform": "onnxruntime_onnx", "max_batch_size": 4,
                        "inputs": (t("x", "FP32", 5),), "outputs": (t("y", "FP32", 5),), "sequence_batching": sb, **kw})


def test_sequence_spec_renders_and_reads_back():
    from tritonops.pbtxt import spec_from_config

    spec = _stateful_spec()
    cfg = render_config(spec)
    text = roundtrip(cfg)
    sb = cfg.sequence_batching
    assert not cfg.HasField("dynamic_batching") and sb.WhichOneof("strategy_choice") == "oldest"
    assert (sb.max_sequence_idle_microseconds, list(sb.oldest.preferred_batch_size),
            sb.oldest.max_candidate_sequences, sb.oldest.max_queue_delay_microseconds) == (2_000_000, [2, 4], 8, 100)
    controls = {ci.name: ci.control[0] for ci in sb.control_input}
    assert list(controls["S"].fp32_false_true) == [0.0, 1.0]
    assert list(controls["E"].int32_false_true) == [0, 1]
    assert list(controls["R"].bool_false_true) == [False, True]
    assert mc.DataType.Name(controls["C"].data_type) == "TYPE_STRING"
    (st,) = sb.state
    assert (st.input_name, st.output_name, mc.DataType.Name(st.data_type), list(st.dims)) == \
        ("h_in", "h_out", "TYPE_FP16", [2, 5])
    assert st.initial_state[0].zero_data and list(st.initial_state[0].dims) == [2, 5]
    assert "CONTROL_SEQUENCE_END" in text
    back = spec_from_config(cfg)
    assert back == spec and back.extra == {}


def test_handwritten_stateful_config_round_trips():
    """The production-style configs of the stateful tests: what a spec cannot hold (the direct
    strategy's minimum_slot_utilization, an initial state named "zeros") keeps the whole block
    verbatim in extra, and the typed fields still say what the block does."""
    import stateful_models
    from tritonops.pbtxt import spec_from_config

    for strategy in ("direct", "oldest"):
        cfg = stateful_models.stateful_config("acc", strategy=strategy, corrid=True)
        spec = spec_from_config(cfg)
        assert render_config(spec) == cfg
        assert spec.sequence_batching is not None and spec.sequence_batching.strategy == strategy
        assert [c.kind for c in spec.sequence_batching.controls] == ["START", "READY", "CORRID"]
        assert spec.sequence_batching.states[0].input_name == "STATE_IN"
        # (and the config names no backend, which a spec always renders)
        assert set(spec.extra) == {"backend", "sequence_batching"}


def test_warmup_from_data_files_round_trips():
    from tritonops.pbtxt import spec_from_config
    from tritonops.spec import WarmupInput

    spec = ModelSpec("clf", "onnxruntime_onnx", 8, (t("x", "FP32", 4),), (t("y", "FP32", 3),), warmup=True,
                     warmup_inputs=(WarmupInput("x", parse_dtype("FP32"), (4,), "x"),))
    cfg = render_config(spec)
    assert cfg.model_warmup[0].inputs["x"].input_data_file == "x"
    assert spec_from_config(cfg) == spec


@pytest.mark.parametrize("kw,message", [
    ({"dynamic_batching": DynamicBatching()}, "sequence batching and dynamic batching cannot both be enabled"),
    ({"response_cache": True}, "the response cache cannot be used with sequence batching"),
    ({"inputs": (t("x", "FP32", 5), t("S", "FP32", 1))}, "'S' is a control or state tensor and also declared"),
    ({"outputs": (t("y", "FP32", 5), t("h_out", "FP16", 2, 5))}, "'h_out' is a state output and also declared"),
])
def test_sequence_spec_refuses_what_triton_refuses(kw, message):
    from tritonops.errors import UsageError

    with pytest.raises(UsageError, match=message):
        _stateful_spec(**kw)
