"""Stateful (sequence-batched) ONNX models served by tritonops' Python-based onnxruntime backend.

One real tritonserver for the module. Each model is the accumulator of ``stateful_models`` with a
production-style config (controls and implicit state under ``sequence_batching``); two sequences
run interleaved, their requests concurrent so that the batcher puts them in one execution, over
HTTP, gRPC and gRPC streaming, and every step is compared with the same sequence in numpy."""

from __future__ import annotations

import queue
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper

import stateful_models
from onnx_models import OPSET
from tritonops.check import check_repository
from tritonops.errors import UsageError
from tritonops.pbtxt import config_to_text
from tritonops.perf.analyzer import PerfOptions, sweep
from tritonops.perf.target import Target, http_alive
from tritonops.samples import EXAMPLES_FILE
from tritonops.validate import ValidateOptions, validate

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
    # For validate: saved example inputs beside one model, and a model whose state never moves.
    rng = np.random.default_rng(5)
    np.savez(repo / "acc_oldest" / EXAMPLES_FILE, IN=rng.integers(-9, 9, (5, stateful_models.WIDTH)).astype(np.float32))
    (repo / STUCK).mkdir()
    (repo / STUCK / "config.pbtxt").write_text(config_to_text(stuck_config()))
    stuck_accumulator(repo / STUCK / "1" / "model.onnx")
    # For perf: short queue delays, so that a short measurement window holds many requests.
    for name, strategy in PERF_MODELS.items():
        stateful_models.write_model(repo, stateful_models.stateful_config(name, strategy=strategy, queue_delay_us=500))
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


# ---------------------------------------------------------------- validate and perf of stateful models


STUCK = "acc_stuck"
PERF_MODELS = {"acc_perf_direct": "direct", "acc_perf_oldest": "oldest"}


def stuck_config():
    return stateful_models.stateful_config(STUCK, queue_delay_us=QUEUE_DELAY_US)


def stuck_accumulator(path):
    """The accumulator's interface, but its state never moves (STATE_OUT = STATE_IN): a served model
    whose state handling differs from the repository's."""
    w = stateful_models.WIDTH
    graph = helper.make_graph(
        [helper.make_node("Add", ["IN", "STATE_IN"], ["OUT"]),
         helper.make_node("Identity", ["STATE_IN"], ["STATE_OUT"])],
        "stuck", [helper.make_tensor_value_info(n, t, ["batch", d]) for n, t, d in (
            ("IN", TensorProto.FLOAT, w), ("STATE_IN", TensorProto.FLOAT, w), ("START", TensorProto.INT32, 1),
            ("READY", TensorProto.BOOL, 1))],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", w]) for n in ("OUT", "STATE_OUT")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """What the repository should hold for acc_stuck: the real accumulator with the same config."""
    repo = tmp_path_factory.mktemp("stateful_good")
    stateful_models.write_model(repo, stuck_config())
    return repo


def _options(server, repository, **kw):
    return ValidateOptions(http_url=server.http_url, grpc_url=server.grpc_url, metrics_url=None,
                           repository=repository, **kw)


def _by_protocol(report, model, check):
    return {r.protocol: r for r in report.rows_for(model, check)}


ALL = ("http-json", "http-binary", "grpc", "grpc-stream")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_validate_runs_two_interleaved_sequences_over_every_protocol(served, model):
    server, repo = served
    report = validate(_options(server, repo, models=(model,)))
    assert report.ok, [r.line() for r in report.failures]
    infer = _by_protocol(report, model, "infer seq")
    assert set(infer) == set(ALL)
    assert all(r.status == "pass" and "2 interleaved sequences of 4 and 3 steps" in r.detail for r in infer.values())
    ref = _by_protocol(report, model, "reference seq")
    assert set(ref) == set(ALL) and all(r.status == "pass" for r in ref.values())
    assert all("step by step with controls and state" in r.detail for r in ref.values())
    assert all(r.max_error == 0.0 for r in ref.values())  # sums of small integers: exact
    agree = _by_protocol(report, model, "agree seq")
    assert set(agree) == {"http-json", "grpc", "grpc-stream"} and all(r.status == "pass" for r in agree.values())
    assert not report.rows_for(model, "infer b=4")  # a sequence takes batch-1 requests only


def test_validate_uses_the_saved_samples_as_sequence_steps(served):
    server, repo = served
    report = validate(_options(server, repo, models=("acc_oldest",), protocols=("grpc",)))
    assert report.ok, [r.line() for r in report.failures]
    # The same steps run with generated data would give other sums: check the first step's output.
    samples = np.load(repo / "acc_oldest" / EXAMPLES_FILE)["IN"]
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        x = grpcclient.InferInput("IN", [1, stateful_models.WIDTH], "FP32")
        x.set_data_from_numpy(samples[:1])
        out = client.infer("acc_oldest", [x], sequence_id=4242, sequence_start=True, sequence_end=True)
    np.testing.assert_array_equal(out.as_numpy("OUT"), samples[:1])
    assert {r.protocol for r in report.rows_for("acc_oldest", "reference seq")} == {"grpc", "grpc-stream"}


def test_a_served_state_that_differs_from_the_repository_is_a_failed_row(served, good):
    server, _ = served
    report = validate(_options(server, good, models=(STUCK,)))
    assert not report.ok
    ref = _by_protocol(report, STUCK, "reference seq")
    assert set(ref) == set(ALL) and all(r.status == "fail" for r in ref.values())
    detail = ref["grpc"].detail
    # Step 1 starts from the initial state either way; step 2 is where the state should have moved.
    assert "sequence 1 step 2 of 4: output 'OUT'" in detail and "values outside tolerance" in detail, detail
    assert "(max error " in detail and ref["grpc"].max_error and ref["grpc"].max_error > 0
    assert "sequence_batching" in ref["grpc"].hint
    assert {r.check for r in report.failures} == {"reference seq"}


def test_cli_validate_of_a_stateful_model(served, cli):
    server, repo = served
    code, out, err = cli("validate", repo, "--url", server.http_url, "--grpc-port", server.grpc_url.rsplit(":", 1)[1],
                         "--model", "acc_corrid")
    assert code == 0, out + err
    assert "gRPC stream" in out and "reference seq" in out


def test_perf_passes_the_sequence_options(served, tmp_path):
    server, repo = served
    target = Target(http_url=server.http_url, grpc_url=server.grpc_url, alive=lambda: http_alive(server.http_url),
                    repository=repo)
    before = statistics(server.grpc_url, "acc_perf_direct")[0]
    res = sweep(PerfOptions(model="acc_perf_direct", output_dir=tmp_path / "out", protocol="grpc", concurrency=(1, 2),
                            measurement_interval_ms=300, stability_percentage=100.0, max_trials=4), target)
    assert [r.status for r in res.rows] == ["ok", "ok"]
    first, second = (list(c) for c in res.commands)
    assert first[first.index("--sequence-length") + 1] == "20"
    # each sweep point its own sequence ids
    assert first[first.index("--sequence-id-range") + 1] == "1:100000"
    assert second[second.index("--sequence-id-range") + 1] == "100001:200000"
    assert "--streaming" not in first
    assert statistics(server.grpc_url, "acc_perf_direct")[0] > before


def test_perf_sequence_options_can_be_given(served, tmp_path):
    server, _ = served
    target = Target(http_url=server.http_url, grpc_url=server.grpc_url, alive=lambda: http_alive(server.http_url))
    res = sweep(PerfOptions(model="acc_perf_oldest", output_dir=tmp_path / "out", protocol="grpc", concurrency=(2,),
                            sequence_length=5, sequence_id_range="7:20", streaming=True,
                            measurement_interval_ms=300, stability_percentage=100.0, max_trials=4), target)
    assert [r.status for r in res.rows] == ["ok"]
    cmd = list(res.commands[0])
    assert cmd[cmd.index("--sequence-length") + 1] == "5"
    assert cmd[cmd.index("--sequence-id-range") + 1] == "7:20"
    assert "--streaming" in cmd


@pytest.mark.parametrize(("kw", "message"), [
    ({"sequence_length": 0}, "--sequence-length 0 is below 1"),
    ({"sequence_id_range": "5:1"}, "cannot use --sequence-id-range '5:1'"),
    ({"sequence_id_range": "1:2", "concurrency": (4,)}, "holds 2 ids, fewer than concurrency 4"),
    ({"streaming": True}, "--streaming needs --protocol grpc"),
])
def test_perf_sequence_options_are_checked(kw, message, tmp_path):
    with pytest.raises(UsageError, match=re.escape(message)):
        PerfOptions(model="m", output_dir=tmp_path, **kw)
