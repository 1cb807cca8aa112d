"""perf/ma_peer.py's reading of Model Analyzer's results: which row is MA's winner, and which config it is.

The inputs are written here by hand in the shapes MA 1.58 writes (its ``metrics-model-inference.csv``
header and a variant's ``config.pbtxt``); no Model Analyzer or server runs in the suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tritonops.pbtxt import parse_config_text
from tritonops.tune import Candidate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "perf"))
from ma_peer import base_name, best_row, read_checkpoint, read_inference_csv, variant_candidates

CSV = """Model,Batch,Concurrency,Model Config Path,Instance Group,Max Batch Size,Satisfies Constraints,\
Throughput (infer/sec),p99 Latency (ms)
mlp,1,16,mlp_config_3,2:CPU,8,Yes,5100.5,14.2
mlp,1,16,mlp_config_4,2:CPU,16,No,6200.0,25.0
mlp,1,8,mlp_config_1,1:CPU,4,Yes,5300.0,19.9
mlp,1,16,mlp_config_default,1:CPU,16,Yes,4900.0,12.0
"""


def test_best_row_is_the_fastest_within_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "metrics-model-inference.csv"
    path.write_text(CSV)
    rows = read_inference_csv(path)
    assert [(r.variant, r.concurrency, r.satisfies) for r in rows] == [
        ("mlp_config_3", 16, True), ("mlp_config_4", 16, False), ("mlp_config_1", 8, True),
        ("mlp_config_default", 16, True)]
    best = best_row(rows, 20.0)
    assert best is not None and (best.variant, best.throughput) == ("mlp_config_1", 5300.0)
    tighter = best_row(rows, 15.0)  # a tighter budget than MA was given: its 'Yes' is not enough
    assert tighter is not None and tighter.variant == "mlp_config_3"
    assert best_row(rows, 5.0) is None


MLP = """name: "mlp"
backend: "onnxruntime"
max_batch_size: 16
input [{name: "x" data_type: TYPE_FP32 dims: [256]}]
output [{name: "y" data_type: TYPE_FP32 dims: [256]}]
instance_group [{count: 1 kind: KIND_CPU}]
dynamic_batching {preferred_batch_size: [16]}
"""


def _model(repo: Path, directory: str, text: str) -> None:
    (repo / directory).mkdir(parents=True)
    (repo / directory / "config.pbtxt").write_text(text)


def test_a_plain_variant_becomes_its_candidate(tmp_path: Path) -> None:
    _model(tmp_path, "mlp_config_3", MLP.replace('name: "mlp"', 'name: "mlp_config_3"')
           .replace("max_batch_size: 16", "max_batch_size: 8").replace("count: 1", "count: 2")
           .replace("dynamic_batching {preferred_batch_size: [16]}", "dynamic_batching {}"))
    got = variant_candidates(tmp_path, "mlp_config_3", {"mlp": parse_config_text(MLP, "mlp")})
    assert got == {"mlp": Candidate(instances=2, max_batch_size=8, dynamic_batching=True)}


def test_an_ensemble_variant_maps_its_steps_back_to_the_served_models(tmp_path: Path) -> None:
    originals = {name: parse_config_text(MLP.replace('name: "mlp"', f'name: "{name}"'), name)
                 for name in ("tokenizer", "encoder", "encoder_big")}
    _model(tmp_path, "emb_config_2", """name: "emb_config_2"
platform: "ensemble"
max_batch_size: 16
ensemble_scheduling {
  step [{model_name: "tokenizer" model_version: -1},
        {model_name: "encoder_big_config_5" model_version: -1},
        {model_name: "encoder_config_1" model_version: -1}]
}
""")
    _model(tmp_path, "encoder_config_1", MLP.replace('name: "mlp"', 'name: "encoder_config_1"')
           .replace("count: 1", "count: 2"))
    _model(tmp_path, "encoder_big_config_5", MLP.replace('name: "mlp"', 'name: "encoder_big_config_5"')
           .replace("max_batch_size: 16", "max_batch_size: 32"))
    got = variant_candidates(tmp_path, "emb_config_2", originals)
    assert got["encoder"] == Candidate(2, 16, True, preferred=(16,))
    assert got["encoder_big"] == Candidate(1, 32, True, preferred=(16,))
    assert got["tokenizer"] == Candidate(1, 16, True, preferred=(16,))  # the step MA left as served
    listed = variant_candidates(tmp_path, "emb_config_2: encoder_config_1, encoder_big_config_5", originals)
    assert listed == got  # the CSV's form for ensembles names the composing variants itself
    assert base_name("encoder_big_config_5", originals) == "encoder_big"
    assert base_name("pooling_config_0", originals) is None


def _measurement(concurrency: int, throughput: float, p99: float) -> dict[str, object]:
    return {"_model_variants_name": "x", "_model_config_measurements": [{
        "_model_specific_pa_params": {"batch-size": 1, "concurrency-range": concurrency},
        "_non_gpu_data": [["perf_latency_p99", {"_value": p99, "_timestamp": 0}],
                          ["perf_throughput", {"_value": throughput, "_timestamp": 0}]]}]}


def test_a_stopped_run_is_read_from_its_checkpoint(tmp_path: Path) -> None:
    plain = {"_model_run_configs": [{"_model_name": "mlp", "_composing_config_variants": []}]}
    ensemble = {"_model_run_configs": [{"_model_name": "emb", "_composing_config_variants": [
        {"variant_name": "tok_config_0"}, {"variant_name": "enc_config_3"}]}]}
    data = {"ResultManager.results": {"_results": {
        "mlp": {"mlp_config_0": [plain, {"a": _measurement(2, 1194.5, 13.9), "b": _measurement(8, 3000.0, 25.0)}],
                "mlp_config_4": [plain, {"a": _measurement(8, 3134.9, 10.2)}]},
        "emb": {"emb_config_1": [ensemble, {"a": _measurement(4, 250.0, 90.0)}]}}}}
    path = tmp_path / "0.ckpt"
    path.write_text(json.dumps(data))
    rows = read_checkpoint(path, 20.0)
    assert [(r.variant, r.concurrency, r.satisfies) for r in rows] == [
        ("mlp_config_0", 2, True), ("mlp_config_0", 8, False), ("mlp_config_4", 8, True),
        ("emb_config_1: tok_config_0, enc_config_3", 4, False)]
    best = best_row(rows, 20.0)
    assert best is not None and (best.variant, best.throughput) == ("mlp_config_4", 3134.9)
