"""tritonops build on real ONNX models: layout, configs, versions, and atomicity under failure."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
from onnx import TensorProto

import onnx_models
from tritonops.build import BuildOptions, build
from tritonops.errors import ConversionError, RepositoryError, UsageError
from tritonops.pbtxt import read_config


def test_onnx_build_writes_layout_and_config(tmp_path, mlp_onnx):
    repo = tmp_path / "repo"
    r = build(BuildOptions(source=str(mlp_onnx), repository=repo, name="clf", max_batch_size=16, instances=2,
                           preferred_batch_sizes=(4, 8), max_queue_delay_us=500, response_cache=True))
    assert (repo / "clf" / "1" / "model.onnx").read_bytes() == mlp_onnx.read_bytes()
    cfg = read_config(repo / "clf" / "config.pbtxt")
    assert cfg.name == "clf" and cfg.platform == "onnxruntime_onnx" and cfg.backend == "onnxruntime"
    assert cfg.max_batch_size == 16
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("x", [4])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("y", [3])]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.instance_group[0].count == 2 and cfg.response_cache.enable
    assert r.version == 1 and r.verification is not None and r.verification.ok


def test_default_name_and_batch_size(tmp_path, mlp_onnx):
    r = build(BuildOptions(source=str(mlp_onnx), repository=tmp_path / "repo"))
    assert r.name == "mlp" and r.spec.max_batch_size == 32
    assert read_config(tmp_path / "repo" / "mlp" / "config.pbtxt").HasField("dynamic_batching")


def test_next_version_keeps_older_and_explicit_version_conflict(tmp_path, mlp_onnx):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo))
    second = onnx_models.mlp(tmp_path / "v2" / "mlp.onnx", seed=1)
    r = build(BuildOptions(source=str(second), repository=repo))
    assert r.version == 2
    assert (repo / "mlp" / "1" / "model.onnx").read_bytes() == mlp_onnx.read_bytes()
    assert (repo / "mlp" / "2" / "model.onnx").read_bytes() == second.read_bytes()
    with pytest.raises(UsageError, match="version 2 of model 'mlp' already exists"):
        build(BuildOptions(source=str(second), repository=repo, version=2))
    r = build(BuildOptions(source=str(second), repository=repo, version=7))
    assert r.version == 7 and (repo / "mlp" / "7" / "model.onnx").exists()


def test_fixed_batch_model_is_not_batched(tmp_path):
    src = onnx_models.mlp(tmp_path / "fixed.onnx", batch=None)
    r = build(BuildOptions(source=str(src), repository=tmp_path / "repo"))
    cfg = read_config(r.config_path)
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, 4]
    assert not cfg.HasField("dynamic_batching")
    with pytest.raises(UsageError, match=r"cannot batch: x has first dimension 1"):
        build(BuildOptions(source=str(src), repository=tmp_path / "repo2", max_batch_size=8))


def test_rank1_batched_gets_autofill_reshape(tmp_path):
    src = onnx_models.scale_vector(tmp_path / "scale.onnx")
    cfg = read_config(build(BuildOptions(source=str(src), repository=tmp_path / "repo")).config_path)
    assert list(cfg.input[0].dims) == [1] and cfg.input[0].HasField("reshape")
    assert list(cfg.input[0].reshape.shape) == []


def test_external_data_uses_triton_directory_layout(tmp_path):
    src = onnx_models.mlp(tmp_path / "ext" / "big.onnx", save_as_external_data=True,
                          all_tensors_to_one_file=True, location="big.onnx.data", size_threshold=0)
    r = build(BuildOptions(source=str(src), repository=tmp_path / "repo", name="big"))
    vdir = r.model_dir / "1"
    assert (vdir / "model.onnx" / "model.onnx").is_file()
    assert (vdir / "model.onnx" / "big.onnx.data").is_file()


@pytest.mark.parametrize("elem,dtype", [(TensorProto.STRING, "TYPE_STRING"), (TensorProto.BOOL, "TYPE_BOOL"),
                                        (TensorProto.INT8, "TYPE_INT8"), (TensorProto.UINT8, "TYPE_UINT8"),
                                        (TensorProto.FLOAT16, "TYPE_FP16"), (TensorProto.INT64, "TYPE_INT64")])
def test_inspection_maps_every_dtype(tmp_path, elem, dtype):
    from tritonclient.grpc import model_config_pb2 as mc

    src = onnx_models.identity(tmp_path / "id.onnx", elem, ["batch", 3])
    cfg = read_config(build(BuildOptions(source=str(src), repository=tmp_path / "repo")).config_path)
    assert mc.DataType.Name(cfg.input[0].data_type) == dtype
    assert mc.DataType.Name(cfg.output[0].data_type) == dtype


def test_bf16_is_inspected(tmp_path):
    from tritonops.convert.onnx_inspect import inspect_onnx

    src = onnx_models.identity(tmp_path / "bf.onnx", TensorProto.BFLOAT16, ["batch", 2])
    assert inspect_onnx(src).inputs[0].dtype.name == "BF16"


def test_input_override_narrows_variable_dims(tmp_path):
    src = onnx_models.identity(tmp_path / "v.onnx", TensorProto.FLOAT, ["batch", "seq"])
    from tritonops.spec import TensorSpec

    r = build(BuildOptions(source=str(src), repository=tmp_path / "repo",
                           inputs=(TensorSpec.parse("INPUT:FP32:16"),)))
    assert list(read_config(r.config_path).input[0].dims) == [16]


# ---- atomicity: a failed build leaves the repository byte-for-byte unchanged -------------------

def _seed_repo(tmp_path, mlp_onnx) -> Path:
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="clf"))
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="other"))
    return repo


def test_disk_error_while_copying_leaves_repository_unchanged(tmp_path, mlp_onnx, digest):
    repo = _seed_repo(tmp_path, mlp_onnx)
    before = digest(repo)

    def failing_copy(src, dst):
        # Write half the file, then fail as a full disk would.
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RepositoryError, match="No space left on device; the repository was left unchanged"):
        build(BuildOptions(source=str(mlp_onnx), repository=repo, name="clf", max_batch_size=4), copy=failing_copy)
    assert digest(repo) == before
    assert not list(tmp_path.glob(".tritonops-stage-*"))


def test_disk_error_for_new_model_leaves_repository_unchanged(tmp_path, mlp_onnx, digest):
    repo = _seed_repo(tmp_path, mlp_onnx)
    before = digest(repo)

    def failing_copy(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(RepositoryError):
        build(BuildOptions(source=str(mlp_onnx), repository=repo, name="brand_new"), copy=failing_copy)
    assert digest(repo) == before


def test_bad_model_leaves_repository_unchanged(tmp_path, mlp_onnx, digest):
    repo = _seed_repo(tmp_path, mlp_onnx)
    before = digest(repo)
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(mlp_onnx.read_bytes()[:100])
    with pytest.raises(Exception, match="is not a valid ONNX model"):
        build(BuildOptions(source=str(bad), repository=repo, name="clf"))
    assert digest(repo) == before


def test_multi_model_build_writes_nothing_when_a_later_model_fails(tmp_path, mlp_onnx, digest):
    from tritonops.build import build_many

    repo = _seed_repo(tmp_path, mlp_onnx)
    before = digest(repo)
    with pytest.raises(UsageError, match="does not exist"):
        build_many([BuildOptions(source=str(mlp_onnx), repository=repo, name="fresh"),
                    BuildOptions(source=str(tmp_path / "missing.onnx"), repository=repo)])
    assert digest(repo) == before


def test_verification_failure_leaves_repository_unchanged(tmp_path, mlp_onnx, digest):
    """An ONNX model whose real output shape contradicts the declared one fails the build."""
    repo = _seed_repo(tmp_path, mlp_onnx)
    before = digest(repo)
    # Claims output [batch, 5] but computes [batch, 3].
    import onnx

    m = onnx.load(str(mlp_onnx))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    lying = tmp_path / "lying.onnx"
    onnx.save(m, str(lying))
    with pytest.raises(ConversionError):
        build(BuildOptions(source=str(lying), repository=repo, name="clf"))
    assert digest(repo) == before


def test_repository_path_that_is_a_file(tmp_path, mlp_onnx):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(UsageError, match="is not a directory"):
        build(BuildOptions(source=str(mlp_onnx), repository=f))


def test_stage_is_cleaned_after_success(tmp_path, mlp_onnx):
    build(BuildOptions(source=str(mlp_onnx), repository=tmp_path / "repo"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tritonops-stage")]
    shutil.rmtree(tmp_path / "repo")


def test_build_staged_builds_one_model_into_a_staged_directory(tmp_path, mlp_onnx):
    """The public step ensembles use: nothing reaches the repository until the stage is left."""
    from tritonops.build import build_staged
    from tritonops.pbtxt import spec_from_config
    from tritonops.repository import stage_model

    repo = tmp_path / "repo"
    work = tmp_path / "work"
    work.mkdir()
    with stage_model(repo, "clf") as staged:
        r = build_staged(BuildOptions(source=str(mlp_onnx), repository=repo, name="clf"), staged, work)
        assert not (repo / "clf").exists()
    assert read_config(repo / "clf" / "config.pbtxt") == r.config
    assert spec_from_config(r.config) == r.spec
