"""tritonops build of stateful ONNX models: a generated sequence_batching block (direct and oldest,
controls typed from the model's inputs, implicit state), refused combinations, the build file, and
the result served by the real session tritonserver, sequence by sequence, against numpy."""

from __future__ import annotations

import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc

import stateful_models
from test_readme import readme_commands
from tritonops.build import BuildOptions, build
from tritonops.buildfile import load_build_file
from tritonops.check import check_repository
from tritonops.errors import UsageError
from tritonops.pbtxt import read_config, render_config, spec_from_config

CONTROLS = (("START", "START"), ("READY", "READY"))
STATES = (("STATE_IN", "STATE_OUT"),)
Control = mc.ModelSequenceBatching.Control


@pytest.fixture
def acc(tmp_path: Path) -> Path:
    return stateful_models.accumulator(tmp_path / "src" / "acc.onnx", corrid=True)


def _controls(cfg: mc.ModelConfig) -> dict[str, tuple[str, str, list]]:
    out = {}
    for ci in cfg.sequence_batching.control_input:
        (c,) = ci.control
        form = next((f for f in ("int32_false_true", "fp32_false_true", "bool_false_true") if len(getattr(c, f))),
                    "data_type")
        value = list(getattr(c, form)) if form != "data_type" else [mc.DataType.Name(c.data_type)]
        out[Control.Kind.Name(c.kind)] = (ci.name, form, value)
    return out


def test_direct_build_writes_controls_and_state_not_io(tmp_path, acc):
    r = build(BuildOptions(source=str(acc), repository=tmp_path / "repo", name="acc", sequence="direct",
                           controls=(*CONTROLS, ("CORRID", "CORRID")), states=STATES, sequence_idle_us=5_000_000,
                           max_queue_delay_us=100))
    cfg = read_config(r.config_path)
    assert [t.name for t in cfg.input] == ["IN"] and [t.name for t in cfg.output] == ["OUT"]
    assert not cfg.HasField("dynamic_batching")
    sb = cfg.sequence_batching
    assert sb.WhichOneof("strategy_choice") == "direct"
    assert sb.direct.max_queue_delay_microseconds == 100
    assert sb.max_sequence_idle_microseconds == 5_000_000
    # value forms from the ONNX inputs' types: START INT32, READY BOOL, CORRID UINT64
    assert _controls(cfg) == {
        "CONTROL_SEQUENCE_START": ("START", "int32_false_true", [0, 1]),
        "CONTROL_SEQUENCE_READY": ("READY", "bool_false_true", [False, True]),
        "CONTROL_SEQUENCE_CORRID": ("CORRID", "data_type", ["TYPE_UINT64"]),
    }
    (st,) = sb.state
    assert (st.input_name, st.output_name, mc.DataType.Name(st.data_type), list(st.dims)) == \
        ("STATE_IN", "STATE_OUT", "TYPE_FP32", [stateful_models.WIDTH])
    (init,) = st.initial_state
    assert init.zero_data and list(init.dims) == [stateful_models.WIDTH]
    # the run check fed the controls and the state, and checked the state output's shape too
    assert r.verification.ok
    assert {row.output for row in r.verification.rows} == {"OUT", "STATE_OUT"}
    assert check_repository(tmp_path / "repo").ok
    spec = spec_from_config(cfg)
    assert spec == r.spec and not spec.extra and render_config(spec) == cfg


def test_oldest_build_with_preferred_sizes(tmp_path, acc):
    r = build(BuildOptions(source=str(acc), repository=tmp_path / "repo", sequence="oldest", controls=CONTROLS,
                           states=STATES, max_batch_size=8, preferred_batch_sizes=(2, 4), max_queue_delay_us=300))
    sb = read_config(r.config_path).sequence_batching
    assert sb.WhichOneof("strategy_choice") == "oldest"
    assert list(sb.oldest.preferred_batch_size) == [2, 4]
    assert sb.oldest.max_candidate_sequences == 8 and sb.oldest.max_queue_delay_microseconds == 300
    # CORRID is a plain input when no control names it
    assert [t.name for t in read_config(r.config_path).input] == ["IN", "CORRID"]
    assert check_repository(tmp_path / "repo").ok
    assert spec_from_config(r.config) == r.spec


@pytest.mark.parametrize("kwargs,message", [
    ({"dynamic_batching": True}, "sequence batching and dynamic batching cannot both be enabled"),
    ({"response_cache": True}, "the response cache cannot be used with sequence batching"),
    ({"warmup": True}, "--warmup cannot warm a sequence-batched model"),
    ({"preferred_batch_sizes": (2,)}, "belong to the oldest strategy"),
    ({"priority_levels": 2, "default_priority_level": 1}, "--priority-levels is a dynamic batching option"),
    ({"controls": (("BEGIN", "START"),)}, "unknown sequence control 'BEGIN'"),
    ({"controls": (("START", "NOPE"),)}, "control START names 'NOPE', which is not an input of the model"),
    ({"controls": (("START", "IN"),)}, "control input 'IN' has shape [batch, 3], but a control tensor is [batch, 1]"),
    ({"controls": (("START", "START"), ("START", "READY"))}, "control START is given twice"),
    ({"controls": (("END", "IN"),), "states": ()}, "control input 'IN' has shape"),
    ({"controls": (("READY", "CORRID"),)}, "control READY tensor 'CORRID' is UINT64"),
    ({"states": (("STATE_IN", "OUT_NOPE"),)}, "state output 'OUT_NOPE' is not an output of the model"),
    ({"states": (("START", "STATE_OUT"),), "controls": ()}, "state 'START' is INT32 but 'STATE_OUT' is FP32"),
])
def test_refused_sequence_options(tmp_path, acc, kwargs, message):
    repo = tmp_path / "repo"
    opts = {"source": str(acc), "repository": repo, "sequence": "direct", "controls": CONTROLS, "states": STATES,
            **kwargs}
    with pytest.raises(UsageError) as e:
        build(BuildOptions(**opts))
    assert message in e.value.message
    assert not repo.exists()


def test_sequence_fields_need_sequence(tmp_path, acc):
    with pytest.raises(UsageError, match="need sequence batching") as e:
        BuildOptions(source=str(acc), controls=CONTROLS)
    assert "--sequence" in e.value.hint


def test_cli_sequence_build_and_errors(tmp_path, acc, cli, digest):
    repo = tmp_path / "repo"
    code, out, err = cli("build", acc, "--repo", repo, "--name", "acc", "--sequence", "oldest",
                         "--control", "START=START", "--control", "ready=READY", "--state", "STATE_IN:STATE_OUT",
                         "--max-candidate-sequences", "3", "--json")
    assert code == 0, err
    data = json.loads(out)["data"]["models"][0]
    assert [t.split(":")[0] for t in data["inputs"]] == ["IN", "CORRID"]
    assert read_config(repo / "acc" / "config.pbtxt").sequence_batching.oldest.max_candidate_sequences == 3
    before = digest(repo)
    for args, message in [
        (("--sequence", "direct", "--dynamic-batching"), "sequence batching and dynamic batching"),
        (("--sequence", "sideways"), "--sequence 'sideways' is not one of: direct, oldest"),
        (("--sequence", "direct", "--control", "START"), "cannot parse --control 'START'"),
        (("--sequence", "direct", "--state", "STATE_IN"), "cannot parse --state 'STATE_IN'"),
        (("--control", "START=START",), "need sequence batching"),
    ]:
        code, out, err = cli("build", acc, "--repo", repo, "--name", "acc", *args)
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err, err
    assert digest(repo) == before


def test_build_file_sequence_fields(tmp_path, acc):
    f = tmp_path / "tritonops.yaml"
    f.write_text(
        "models:\n"
        "  - source: src/acc.onnx\n"
        "    sequence: direct\n"
        "    controls: {START: START, READY: READY}\n"
        "    states: {STATE_IN: STATE_OUT}\n"
        "    sequence_idle_us: 1000000\n")
    (opts,) = load_build_file(f)
    assert opts.sequence == "direct" and opts.controls == CONTROLS and opts.states == STATES
    f.write_text("models:\n  - source: src/acc.onnx\n    sequence: direct\n    controls: {BEGIN: START}\n")
    with pytest.raises(UsageError, match=r"tritonops.yaml:2.*unknown sequence control 'BEGIN'"):
        load_build_file(f)
    f.write_text("models:\n  - source: src/acc.onnx\n    sequence: direct\n    sequence_idle_us: soon\n")
    with pytest.raises(UsageError, match=r"tritonops.yaml:4: models\[0\].sequence_idle_us: expected"):
        load_build_file(f)


def test_inspect_shows_control_and_state_tensors(tmp_path, acc, cli):
    build(BuildOptions(source=str(acc), repository=tmp_path / "repo", name="acc", sequence="direct",
                       controls=CONTROLS, states=STATES))
    code, out, err = cli("inspect", tmp_path / "repo" / "acc")
    assert code == 0, err
    assert "START: INT32 [batch, 1]  (control CONTROL_SEQUENCE_START)" in out
    assert "STATE_IN: FP32 [batch, 3]  (state input, fed from STATE_OUT)" in out
    assert "CORRID: UINT64 [batch, 1]  (input)" in out
    code, out, err = cli("inspect", acc, "--config", tmp_path / "repo" / "acc" / "config.pbtxt", "--json")
    assert code == 0, err
    data = json.loads(out)["data"]
    roles = {t["name"]: t["role"] for t in data["inputs"] + data["outputs"]}
    assert roles == {"IN": "input", "STATE_IN": "state input, fed from STATE_OUT",
                     "START": "control CONTROL_SEQUENCE_START", "READY": "control CONTROL_SEQUENCE_READY",
                     "CORRID": "input", "OUT": "output", "STATE_OUT": "state output, fed back as STATE_IN"}
    code, out, _ = cli("inspect", acc, "--json")
    assert "role" not in json.loads(out)["data"]["inputs"][0]


# ---------------------------------------------------------------- served by the real server

LENGTHS = {11: 4, 12: 3}


@pytest.fixture(scope="module")
def built_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("build_sequence")
    src = stateful_models.accumulator(root / "src" / "acc.onnx")
    repo = root / "repo"
    build(BuildOptions(source=str(src), repository=repo, name="built_direct", sequence="direct", max_batch_size=4,
                       controls=CONTROLS, states=STATES, max_queue_delay_us=50_000))
    build(BuildOptions(source=str(src), repository=repo, name="built_oldest", sequence="oldest", max_batch_size=4,
                       controls=CONTROLS, states=STATES, max_queue_delay_us=50_000))
    return repo


@pytest.mark.server
@pytest.mark.parametrize("model", ["built_direct", "built_oldest"])
def test_built_stateful_model_serves_two_interleaved_sequences(built_repo, triton_session, model):
    assert check_repository(built_repo).ok
    rng = np.random.default_rng(len(model))
    seqs = {sid: [rng.integers(-5, 5, stateful_models.WIDTH).astype(np.float32) for _ in range(n)]
            for sid, n in LENGTHS.items()}
    got: dict[int, list[np.ndarray]] = {sid: [] for sid in seqs}

    def step(url: str, sid: int, k: int) -> np.ndarray:
        with grpcclient.InferenceServerClient(url) as client:
            x = grpcclient.InferInput("IN", [1, stateful_models.WIDTH], "FP32")
            x.set_data_from_numpy(seqs[sid][k][None, :])
            return client.infer(model, [x], sequence_id=sid, sequence_start=k == 0,
                                sequence_end=k == len(seqs[sid]) - 1).as_numpy("OUT")

    with triton_session.models(built_repo):
        url = triton_session.server.grpc_url
        with ThreadPoolExecutor(len(seqs)) as pool:
            for k in range(max(LENGTHS.values())):
                futures = [(sid, pool.submit(step, url, sid, k)) for sid in seqs if k < len(seqs[sid])]
                for sid, f in futures:
                    got[sid].append(f.result(timeout=60))
    for sid, steps in seqs.items():
        want = stateful_models.reference(steps)
        for k, (g, w) in enumerate(zip(got[sid], want, strict=True)):
            np.testing.assert_array_equal(g, w[None, :], err_msg=f"{model} sequence {sid} step {k}")


# ---------------------------------------------------------------- the README's stateful section


def test_readme_stateful_section_runs(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    stateful_models.accumulator(tmp_path / "acc.onnx")
    commands = readme_commands("Stateful models")
    assert len(commands) >= 3
    for command in commands:
        code, out, err = cli(*shlex.split(command)[1:])
        assert code == 0, f"{command}\n{out}{err}"
    assert read_config(tmp_path / "model_repository" / "acc" / "config.pbtxt").HasField("sequence_batching")


@pytest.mark.torch
def test_pytorch_factory_exported_with_sequence_options(tmp_path):
    """A PyTorch module whose forward takes the control and state tensors: exported to ONNX, both
    runs fed the same controls and zero state, and the config written like the ONNX build's."""
    pytest.importorskip("torch", reason="the factory build needs the torch extra")
    from tritonops.spec import TensorSpec

    (tmp_path / "acc_module.py").write_text(
        "import torch\n\n"
        "class Acc(torch.nn.Module):\n"
        "    def forward(self, IN, STATE_IN, START):\n"
        "        out = IN + STATE_IN * (1 - START.float())\n"
        "        return out, out\n\n"
        "def make_model():\n"
        "    return Acc()\n")
    r = build(BuildOptions(
        source=f"{tmp_path / 'acc_module.py'}:make_model", format="onnx", repository=tmp_path / "repo", name="tacc",
        inputs=tuple(TensorSpec.parse(x) for x in ("IN:FP32:3", "STATE_IN:FP32:3", "START:INT32:1")),
        outputs=("OUT", "STATE_OUT"), sequence="direct", controls=(("START", "START"),), states=STATES))
    assert r.verification.ok and r.verification.kind == "compare"
    assert {row.output for row in r.verification.rows} == {"OUT", "STATE_OUT"}
    cfg = read_config(r.config_path)
    assert [t.name for t in cfg.input] == ["IN"] and [t.name for t in cfg.output] == ["OUT"]
    assert check_repository(tmp_path / "repo").ok
