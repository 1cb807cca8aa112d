"""Stateful (sequence-batched) TorchScript models served by tritonops' Python-based pytorch backend.

The accumulator of ``stateful_models`` written as a scripted torch Module, with hand-written
production configs (platform pytorch_libtorch, controls and implicit state under
``sequence_batching``, tensors named ``<name>__<index>`` as Triton's libtorch backend requires),
served by the session server: two interleaved sequences, their requests concurrent so that the
batcher puts them in one execution, over HTTP and gRPC, every step compared with numpy. Configs
that Triton's libtorch backend refuses at load are refused with its messages."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import model_config_pb2 as mc

import stateful_models
from tritonops.pbtxt import config_to_text

try:
    import torch
except ImportError:  # the torch extra is optional
    torch = None  # type: ignore[assignment]

pytestmark = [pytest.mark.server, pytest.mark.torch]

WIDTH = stateful_models.WIDTH
QUEUE_DELAY_US = 100_000  # long enough that the concurrent steps of both sequences meet in one batch
LENGTHS = {2001: 5, 2002: 3}

# name -> (config options, model class name)
MODELS = {
    "ts_acc_direct": ({"strategy": "direct"}, "Accumulator"),
    "ts_acc_oldest": ({"strategy": "oldest"}, "Accumulator"),
    # No START control: only the backend's initial state at a sequence's start resets the sum; state
    # keyed by the CORRID control (INT64); two instances, so the sequences may land on either.
    "ts_acc_corrid": ({"strategy": "direct", "start": False, "corrid": True, "instances": 2}, "CorridAccumulator"),
}


def modules() -> dict[str, type]:
    assert torch is not None

    class Accumulator(torch.nn.Module):
        """OUTPUT__0 = x + state * (1 - start); STATE_OUT__1 = ready ? OUTPUT__0 : state."""

        def forward(self, x: torch.Tensor, start: torch.Tensor, ready: torch.Tensor,
                    state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = x + state * (1 - start.to(x.dtype))
            return out, torch.where(ready, out, state)

    class CorridAccumulator(torch.nn.Module):
        """No START: OUTPUT__0 = x + state; the CORRID input is not used."""

        def forward(self, x: torch.Tensor, ready: torch.Tensor, corrid: torch.Tensor,
                    state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = x + state
            return out, torch.where(ready, out, state)

    class StartFlag(torch.nn.Module):
        """No state; inputs named after forward()'s arguments, the START control by its index:
        y = x + 100 at a sequence's start, else x."""

        def forward(self, x: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
            return x + 100 * start.to(x.dtype)

    return {c.__name__: c for c in (Accumulator, CorridAccumulator, StartFlag)}


def write(repo: Path, cfg: mc.ModelConfig, module: type) -> None:
    assert torch is not None
    d = repo / cfg.name
    (d / "1").mkdir(parents=True)
    torch.jit.script(module()).save(str(d / "1" / "model.pt"))
    (d / "config.pbtxt").write_text(config_to_text(cfg))


def start_flag_config() -> mc.ModelConfig:
    cfg = mc.ModelConfig(name="ts_start_flag", platform="pytorch_libtorch", max_batch_size=4)
    cfg.input.add(name="x", data_type=mc.TYPE_FP32, dims=[WIDTH])
    cfg.output.add(name="y", data_type=mc.TYPE_FP32, dims=[WIDTH])
    sb = cfg.sequence_batching
    sb.direct.max_queue_delay_microseconds = 1000
    sb.control_input.add(name="START__1").control.add(
        kind=mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START, int32_false_true=[0, 1])
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    return cfg


def _refused_configs() -> dict[str, tuple[mc.ModelConfig, str, str]]:
    """name -> (config, model class, the load error Triton's libtorch backend gives)."""
    named_state = stateful_models.torchscript_config("ts_bad_named_state")
    named_state.input[0].name = "x"  # forward()'s argument name: not allowed with implicit state
    unindexed = stateful_models.torchscript_config("ts_bad_unindexed_control")
    unindexed.sequence_batching.control_input[0].name = "START"
    string_corrid = stateful_models.torchscript_config("ts_bad_string_corrid", start=False, corrid=True)
    string_corrid.sequence_batching.control_input[1].control[0].data_type = mc.TYPE_STRING
    too_few = stateful_models.torchscript_config("ts_bad_count")
    del too_few.sequence_batching.control_input[1]  # READY: forward() takes 4 arguments, the config gives 3
    return {
        "ts_bad_named_state": (named_state, "Accumulator",
                               "PyTorch model 'ts_bad_named_state' is using sequence batching with state but not "
                               "all inputs and outputs follow the <name>__<index> naming convention."),
        "ts_bad_unindexed_control": (unindexed, "Accumulator",
                                     "input 'START' does not follow <name>__<index> naming convention"),
        "ts_bad_string_corrid": (string_corrid, "CorridAccumulator",
                                 "input 'CORRID__2' type 'TYPE_STRING' is not supported by PyTorch."),
        "ts_bad_count": (too_few, "Accumulator",
                         "unable to load model 'ts_bad_count', configuration expects 3 inputs, model provides 4"),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory, triton_session):
    if torch is None:
        pytest.skip("needs the torch extra")
    repo = tmp_path_factory.mktemp("stateful_torch") / "repo"
    classes = modules()
    for name, (cfg_opts, cls) in MODELS.items():
        write(repo, stateful_models.torchscript_config(name, queue_delay_us=QUEUE_DELAY_US, **cfg_opts), classes[cls])
    write(repo, start_flag_config(), classes["StartFlag"])
    for cfg, cls, _ in _refused_configs().values():
        write(repo, cfg, classes[cls])
    with triton_session.models(repo, expect_failures=True) as loaded:
        yield triton_session.server, loaded.failures


def sequences(seed: int) -> dict[int, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {sid: [rng.integers(-5, 5, WIDTH).astype(np.float32) for _ in range(n)] for sid, n in LENGTHS.items()}


def statistics(url: str, model: str) -> tuple[int, int]:
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_only_the_configs_libtorch_refuses_fail_to_load(served):
    _, failures = served
    assert set(failures) == set(_refused_configs()), failures


@pytest.mark.parametrize("model", sorted(_refused_configs()))
def test_a_config_libtorch_refuses_is_refused_with_its_message(served, model):
    _, failures = served
    assert _refused_configs()[model][2] in failures[model], failures[model]


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_two_interleaved_sequences(served, model, protocol):
    server, _ = served
    names = stateful_models.torchscript_names(**{k: v for k, v in MODELS[model][0].items() if k in ("start", "corrid")})
    seqs = sequences(seed=len(model) + (0 if protocol == "http" else 7))
    lib = httpclient if protocol == "http" else grpcclient
    url = server.http_url if protocol == "http" else server.grpc_url

    def step(sid: int, k: int) -> np.ndarray:
        with lib.InferenceServerClient(url) as client:
            x = lib.InferInput(names["IN"], [1, WIDTH], "FP32")
            x.set_data_from_numpy(seqs[sid][k][None, :])
            result = client.infer(model, [x], sequence_id=sid, sequence_start=k == 0,
                                  sequence_end=k == len(seqs[sid]) - 1)
            assert result.as_numpy(names["STATE_OUT"]) is None  # state is not an output of the served model
            return result.as_numpy(names["OUT"])

    got: dict[int, list[np.ndarray]] = {sid: [] for sid in seqs}
    before = statistics(server.grpc_url, model)
    with ThreadPoolExecutor(len(seqs)) as pool:
        for k in range(max(LENGTHS.values())):
            futures = [(sid, pool.submit(step, sid, k)) for sid in seqs if k < len(seqs[sid])]
            for sid, f in futures:
                got[sid].append(f.result(timeout=60))
    after = statistics(server.grpc_url, model)
    start = MODELS[model][0].get("start", True)
    for sid, steps in seqs.items():
        want = stateful_models.reference(steps, start=start)
        assert len(got[sid]) == len(want)
        for k, (g, w) in enumerate(zip(got[sid], want, strict=True)):
            np.testing.assert_array_equal(g, w[None, :], err_msg=f"sequence {sid} step {k}")
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == sum(LENGTHS.values())
    if MODELS[model][0].get("instances", 1) == 1:
        # The two sequences shared executions (one forward call for both, each with its own state).
        assert executions < inferences, (inferences, executions)


def test_a_sequence_id_reused_after_its_end_starts_from_the_initial_state(served):
    """ts_acc_corrid has no START input: only the backend's reset of the state at a new sequence's
    start (the previous one was released at its END) makes the second run equal the first."""
    server, _ = served
    names = stateful_models.torchscript_names(start=False, corrid=True)
    steps = [np.full(WIDTH, v, np.float32) for v in (1, 2, 4)]
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for _ in range(2):
            outs = []
            for k, s in enumerate(steps):
                x = grpcclient.InferInput(names["IN"], [1, WIDTH], "FP32")
                x.set_data_from_numpy(s[None, :])
                outs.append(client.infer("ts_acc_corrid", [x], sequence_id=77, sequence_start=k == 0,
                                         sequence_end=k == len(steps) - 1).as_numpy(names["OUT"]))
            np.testing.assert_array_equal(np.concatenate(outs)[:, 0], [1, 3, 7])


def test_state_tensors_are_not_inputs_or_outputs_of_the_served_model(served):
    server, _ = served
    with httpclient.InferenceServerClient(server.http_url) as client:
        meta = client.get_model_metadata("ts_acc_direct")
    assert [t["name"] for t in meta["inputs"]] == ["INPUT__0"]
    assert [t["name"] for t in meta["outputs"]] == ["OUTPUT__0"]


def test_a_control_reaches_forward_at_its_index_with_forward_argument_names(served):
    server, _ = served
    x = np.array([[1, 2, 3]], np.float32)
    with httpclient.InferenceServerClient(server.http_url) as client:
        outs = []
        for k in range(3):
            i = httpclient.InferInput("x", [1, WIDTH], "FP32")
            i.set_data_from_numpy(x)
            outs.append(client.infer("ts_start_flag", [i], sequence_id=5, sequence_start=k == 0,
                                     sequence_end=k == 2).as_numpy("y"))
    np.testing.assert_array_equal(np.concatenate(outs), np.concatenate([x + 100, x, x]))
