"""Stateful (sequence-batched) ONNX models served by tritonops' Python-based onnxruntime backend.

One real tritonserver for the module. Each model is the accumulator of ``stateful_models`` with a
production-style config (controls and implicit state under ``sequence_batching``); two sequences
run interleaved, their requests concurrent so that the batcher puts them in one execution, over
HTTP, gRPC and gRPC streaming, and every step is compared with the same sequence in numpy."""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

import stateful_models
from tritonops.check import check_repository

pytestmark = pytest.mark.server

# name -> (config options, model options)
MODELS = {
    "acc_direct": ({"strategy": "direct"}, {}),
    "acc_oldest": ({"strategy": "oldest"}, {}),
    # No START control: only the backend's initial state at a sequence's start resets the sum;
    # state keyed by the CORRID control; two instances, so the sequences may land on either.
    "acc_corrid": ({"strategy": "direct", "start": False, "corrid": True, "instances": 2},
                   {"start": False, "corrid": True}),
}
LENGTHS = {1001: 5, 1002: 3}  # two sequences of different lengths
QUEUE_DELAY_US = 100_000  # long enough that the concurrent steps of both sequences meet in one batch


@pytest.fixture(scope="module")
def served(tmp_path_factory, triton_session):
    repo = tmp_path_factory.mktemp("stateful") / "repo"
    for name, (cfg_opts, model_opts) in MODELS.items():
        cfg = stateful_models.stateful_config(name, queue_delay_us=QUEUE_DELAY_US, **cfg_opts)
        stateful_models.write_model(repo, cfg, **model_opts)
    with triton_session.models(repo):
        yield triton_session.server, triton_session.repository


def sequences(seed: int) -> dict[int, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {sid: [rng.integers(-5, 5, stateful_models.WIDTH).astype(np.float32) for _ in range(n)]
            for sid, n in LENGTHS.items()}


def interleaved(seqs: dict[int, list[np.ndarray]]) -> list[list[tuple[int, int]]]:
    """Rounds of (sequence id, step): step k of every sequence that has one, sent together."""
    return [[(sid, k) for sid, steps in seqs.items() if k < len(steps)]
            for k in range(max(len(s) for s in seqs.values()))]


def expected(seqs: dict[int, list[np.ndarray]], model: str) -> dict[int, list[np.ndarray]]:
    start = MODELS[model][1].get("start", True)
    return {sid: stateful_models.reference(steps, start=start) for sid, steps in seqs.items()}


def statistics(url: str, model: str) -> tuple[int, int]:
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def assert_steps(got: dict[int, list[np.ndarray]], want: dict[int, list[np.ndarray]]) -> None:
    for sid, outs in want.items():
        assert len(got[sid]) == len(outs), sid
        for k, (g, w) in enumerate(zip(got[sid], outs, strict=True)):
            np.testing.assert_array_equal(g, w[None, :], err_msg=f"sequence {sid} step {k}")


def test_stateful_models_pass_check(served):
    _, repo = served
    report = check_repository(repo)
    assert report.ok, [str(f) for f in report.findings]


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_two_interleaved_sequences(served, model, protocol):
    server, _ = served
    seqs = sequences(seed=len(model) + (0 if protocol == "http" else 7))
    got: dict[int, list[np.ndarray]] = {sid: [] for sid in seqs}
    lib = httpclient if protocol == "http" else grpcclient
    url = server.http_url if protocol == "http" else server.grpc_url

    def step(sid: int, k: int) -> np.ndarray:
        with lib.InferenceServerClient(url) as client:
            x = lib.InferInput("IN", [1, stateful_models.WIDTH], "FP32")
            x.set_data_from_numpy(seqs[sid][k][None, :])
            result = client.infer(model, [x], sequence_id=sid, sequence_start=k == 0,
                                  sequence_end=k == len(seqs[sid]) - 1)
            return result.as_numpy("OUT")

    before = statistics(server.grpc_url, model)
    with ThreadPoolExecutor(len(seqs)) as pool:
        for round_ in interleaved(seqs):
            futures = [(sid, pool.submit(step, sid, k)) for sid, k in round_]
            for sid, f in futures:
                got[sid].append(f.result(timeout=60))
    after = statistics(server.grpc_url, model)
    assert_steps(got, expected(seqs, model))
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == sum(LENGTHS.values())
    if MODELS[model][0].get("instances", 1) == 1:
        # The two sequences shared executions (one run of the model for both, each with its own state).
        assert executions < inferences, (inferences, executions)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_two_interleaved_sequences_over_one_grpc_stream(served, model):
    server, _ = served
    seqs = sequences(seed=100 + len(model))
    responses: queue.Queue = queue.Queue()
    got: dict[int, list[np.ndarray]] = {sid: [] for sid in seqs}
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        order = [pair for round_ in interleaved(seqs) for pair in round_]
        for sid, k in order:
            x = grpcclient.InferInput("IN", [1, stateful_models.WIDTH], "FP32")
            x.set_data_from_numpy(seqs[sid][k][None, :])
            client.async_stream_infer(model, [x], request_id=f"{sid}:{k}", sequence_id=sid,
                                      sequence_start=k == 0, sequence_end=k == len(seqs[sid]) - 1)
        by_request = {}
        for _ in order:
            result, error = responses.get(timeout=60)
            assert error is None, error
            by_request[result.get_response().id] = result.as_numpy("OUT")
    finally:
        client.stop_stream()
        client.close()
    for sid, steps in seqs.items():
        got[sid] = [by_request[f"{sid}:{k}"] for k in range(len(steps))]
    assert_steps(got, expected(seqs, model))


def test_a_sequence_id_reused_after_its_end_starts_from_the_initial_state(served):
    """acc_corrid has no START input: only the backend's reset of the state at a new sequence's
    start (the previous one was released at its END) makes the second run equal the first."""
    server, _ = served
    steps = [np.full(stateful_models.WIDTH, v, np.float32) for v in (1, 2, 4)]
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for _ in range(2):
            outs = []
            for k, s in enumerate(steps):
                x = grpcclient.InferInput("IN", [1, stateful_models.WIDTH], "FP32")
                x.set_data_from_numpy(s[None, :])
                outs.append(client.infer("acc_corrid", [x], sequence_id=77, sequence_start=k == 0,
                                         sequence_end=k == len(steps) - 1).as_numpy("OUT"))
            np.testing.assert_array_equal(np.concatenate(outs)[:, 0], [1, 3, 7])


def test_state_tensors_are_not_outputs_of_the_served_model(served):
    server, _ = served
    with httpclient.InferenceServerClient(server.http_url) as client:
        meta = client.get_model_metadata("acc_direct")
    assert [t["name"] for t in meta["inputs"]] == ["IN"]
    assert [t["name"] for t in meta["outputs"]] == ["OUT"]
