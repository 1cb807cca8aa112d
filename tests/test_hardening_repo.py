"""Issue 14, the repository side: versions Triton can read, staging that works on a mount point and
leaves nothing behind (not even after SIGKILL), nothing from outside the repository, one safe reader
for every file a user points at, one name rule, messages that say what really happened.

Each test reproduces a reported case first, with the real CLI, real files and (where Triton's own
behaviour is the point) the real tritonserver."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tritonops.build import BuildOptions, build
from tritonops.check import check_repository
from tritonops.convert.onnx_inspect import inspect_onnx
from tritonops.errors import RepositoryError, UsageError
from tritonops.names import check_model_name
from tritonops.repository import MAX_VERSION, parse_version, stage_model, stale_stages, version_dirs
from tritonops.samples import read_npz
from tritonops.specfile import read_yaml_file

SRC = Path(__file__).parents[1] / "src"
TESTS = Path(__file__).parent


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")]))


def one_line_error(code: int, err: str, message: str, exit_code: int = 2) -> None:
    assert code == exit_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0] == f"error: {message}", lines[0]
    assert len(lines) == 2 and lines[1].startswith("hint: "), lines


# ---------------------------------------------------------------------------------- item 3: versions
@pytest.mark.parametrize(("value", "message"), [
    ("99999999999999999999", "version 99999999999999999999 is too large: Triton reads versions as 64-bit integers"),
    (MAX_VERSION + 1, f"version {MAX_VERSION + 1} is too large: Triton reads versions as 64-bit integers"),
    (0, "version 0 is not valid"),
    ("0", "version '0' starts with 0 (Triton ignores such directories)"),
    ("007", "version '007' starts with 0 (Triton ignores such directories)"),
    ("1\n2", "version '1\\n2' is not a whole number"),
    ("\u0661", "version '\u0661' is not a whole number"),  # an Arabic-Indic one: isdigit() says yes
])
def test_one_version_parser_refuses_what_triton_cannot_read(value, message):
    with pytest.raises(UsageError) as e:
        parse_version(value)
    assert e.value.message == message


def test_the_largest_version_triton_reads_is_accepted():
    assert parse_version(str(MAX_VERSION)) == MAX_VERSION == parse_version(MAX_VERSION)


def test_build_version_beyond_int64_is_refused_and_writes_nothing(cli, mlp_onnx, tmp_path):
    repo = tmp_path / "repo"
    code, _, err = cli("build", mlp_onnx, "--repo", repo, "--version", "99999999999999999999")
    one_line_error(code, err, "version 99999999999999999999 is too large: Triton reads versions as 64-bit integers")
    assert not repo.exists()
    assert not list(tmp_path.glob(".tritonops-stage-*"))


def test_version_directories_beyond_int64_are_not_versions_and_check_reports_them(tmp_path, mlp_onnx):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    shutil.copytree(repo / "m" / "1", repo / "m" / "99999999999999999999")
    assert version_dirs(repo / "m") == [1]
    [finding] = check_repository(repo).findings
    assert finding.field == "(versions)" and "99999999999999999999" in finding.message
    # the next build takes version 2, not 10**20
    assert build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8)).version == 2


# ------------------------------------------------------------------------ item 5: mount-point repository
def _can_mount() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare(1) to make a private mount namespace"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True,
                           check=False)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.decode()}"


MOUNTED = """
import sys
from pathlib import Path
from conftest import tree_digest
from tritonops.build import BuildOptions, build
from tritonops.errors import RepositoryError

repo, onnx = Path(sys.argv[1]), sys.argv[2]
assert repo.stat().st_dev != repo.parent.stat().st_dev, "not a mount point"

def stages():
    return sorted(str(p) for p in [*repo.parent.glob(".tritonops-stage-*"), *repo.rglob(".tritonops-stage-*")])

def fail(src, dst):
    raise OSError(28, "No space left on device")

# an empty mount point: the model directory is created to hold the stage, and removed on failure
before = tree_digest(repo)
try:
    build(BuildOptions(source=onnx, repository=repo, name="a", max_batch_size=8), copy=fail)
    raise SystemExit("the failing build succeeded")
except RepositoryError as e:
    assert "the repository was left unchanged" in e.message, e.message
assert tree_digest(repo) == before and not stages(), (tree_digest(repo), stages())
build(BuildOptions(source=onnx, repository=repo, name="a", max_batch_size=8))
# a new model beside it stages inside 'a' (a hidden non-version name Triton ignores), then one rename
before = tree_digest(repo)
try:
    build(BuildOptions(source=onnx, repository=repo, name="b", max_batch_size=8), copy=fail)
    raise SystemExit("the failing build succeeded")
except RepositoryError:
    pass
assert tree_digest(repo) == before and not stages(), stages()
build(BuildOptions(source=onnx, repository=repo, name="b", max_batch_size=8))
build(BuildOptions(source=onnx, repository=repo, name="b", max_batch_size=8))  # a second version
assert sorted(p.name for p in repo.iterdir()) == ["a", "b"], list(repo.iterdir())
assert sorted(p.name for p in (repo / "b").iterdir()) == ["1", "2", "config.pbtxt"], \\
    list((repo / "b").iterdir())
assert not stages(), stages()
print("MOUNTED-OK")
"""


@pytest.mark.skipif(_can_mount() is not None, reason=str(_can_mount()))
def test_a_repository_that_is_a_mount_point_can_be_built_into(tmp_path, mlp_onnx):
    repo = tmp_path / "repo"
    repo.mkdir()
    script = tmp_path / "mounted.py"
    script.write_text(MOUNTED)
    run = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs none "$1" && exec "{sys.executable}" "$2" "$1" "$3"', "sh",
         str(repo), str(script), str(mlp_onnx)],
        capture_output=True, text=True, env=env(), timeout=600, check=False)
    assert run.returncode == 0 and "MOUNTED-OK" in run.stdout, run.stdout + run.stderr
    assert not list(tmp_path.glob(".tritonops-stage-*"))


def test_a_stage_inside_a_model_directory_is_ignored_by_triton(tmp_path, mlp_onnx, triton_session):
    """Why a mount-point build stages inside a model directory and never at the top level: Triton
    takes every top-level directory for a model, hidden or not, but skips a version directory whose
    name is not a number. A complete model copy inside the stage must not be served or listed."""
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    shutil.copytree(repo / "m", tmp_path / "copy")
    shutil.copytree(tmp_path / "copy", repo / "m" / ".tritonops-stage-1-00000000-x-abcdefgh" / "x")
    with triton_session.models(repo) as loaded:
        index = {(e.name, e.version, e.state) for e in triton_session.server.model_states()}
    assert not loaded.failures
    assert index == {("m", "1", "READY")}, index


def test_triton_takes_a_hidden_top_level_directory_for_a_model(tmp_path, mlp_onnx, triton_session):
    """Why nothing is staged at the top level, and why check reports hidden directories there: the
    real server lists and serves them like any other model."""
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    (repo / "m").rename(repo / ".tritonops-stage-m")
    config = repo / ".tritonops-stage-m" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "m"', 'name: ".tritonops-stage-m"'))
    with triton_session.models(repo) as loaded:
        index = {(e.name, e.version, e.state) for e in triton_session.server.model_states()}
    assert not loaded.failures
    assert index == {(".tritonops-stage-m", "1", "READY")}, index


# ------------------------------------------------------------------------------ item 12: SIGKILL
HOLD_STAGE = """
import sys, time
from pathlib import Path
from tritonops.build import BuildOptions, build
from tritonops.deploy.control import stage

repo, onnx, where = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def slow(src, dst):
    Path(str(repo) + ".copying").write_text("1")
    time.sleep(600)
if where == "build":
    build(BuildOptions(source=onnx, repository=repo, name="m", max_batch_size=8), copy=slow)
else:  # the roll-out's staging inside a model directory (a mount-point build's, for "empty")
    host = repo / ("m" if where == "rollout" else "n")
    host.mkdir(exist_ok=True)
    with stage(host):
        Path(str(repo) + ".copying").write_text("1")
        time.sleep(600)
"""


def _hold_stage(tmp_path: Path, repo: Path, onnx: Path, where: str) -> subprocess.Popen:
    script = tmp_path / "hold.py"
    script.write_text(HOLD_STAGE)
    proc = subprocess.Popen([sys.executable, str(script), str(repo), str(onnx), where], env=env())
    marker = Path(str(repo) + ".copying")
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the build never started copying"
        time.sleep(0.05)
    marker.unlink()
    return proc


def test_stages_of_a_sigkilled_build_are_removed_by_the_next_build(tmp_path, mlp_onnx):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    proc = _hold_stage(tmp_path, repo, mlp_onnx, "build")
    live = list(tmp_path.glob(".tritonops-stage-*"))
    assert len(live) == 1
    # a stage whose process is alive is a build in progress: left alone
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="other", max_batch_size=8))
    assert live[0].exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert live[0].exists() and stale_stages(repo) == live
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="other", max_batch_size=8))
    assert not list(tmp_path.glob(".tritonops-stage-*"))


def test_check_reports_a_stage_left_in_a_model_directory_and_a_build_removes_it(tmp_path, mlp_onnx, cli):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    proc = _hold_stage(tmp_path, repo, mlp_onnx, "rollout")
    assert check_repository(repo).ok  # in progress: nothing to report
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [left] = list((repo / "m").glob(".tritonops-stage-*"))
    [finding] = check_repository(repo).findings
    assert (finding.model, finding.file, finding.field) == ("m", f"m/{left.name}", "(staging)")
    assert finding.message == "left behind by a build or roll-out that was killed"
    code, out, _ = cli("check", repo)
    assert code == 1 and left.name in out
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    assert not left.exists() and check_repository(repo).ok


# --------------------------------------------------------------------- item 14: concurrent builds
def test_the_loser_of_two_concurrent_builds_is_told_another_build_wrote_the_model(tmp_path, mlp_onnx, digest):
    repo = tmp_path / "repo"
    won: list[Path] = []

    def race(src: Path, dst: Path) -> None:
        shutil.copy2(src, dst)
        if not won:  # the other build runs and finishes while this one is still copying
            won.append(build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8)).model_dir)

    with pytest.raises(RepositoryError) as e:
        build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8), copy=race)
    assert e.value.message == (f"another build wrote model 'm' in {repo} at the same time; this build left the "
                               "repository as that one wrote it")
    assert "disk" not in e.value.message + (e.value.hint or "")
    assert version_dirs(repo / "m") == [1] and check_repository(repo).ok
    assert not list(tmp_path.glob(".tritonops-stage-*"))


# --------------------------------------------------------------- item 2: nothing from outside
@pytest.fixture
def outside_secret(tmp_path) -> Path:
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("TOPSECRET-token { and more\n")
    return secret


def test_check_reports_links_out_of_the_repository_without_reading_them(tmp_path, mlp_onnx, outside_secret, cli):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="c", max_batch_size=8))
    (repo / "m" / "1" / "secret.txt").symlink_to(outside_secret)
    (repo / "c" / "config.pbtxt").unlink()
    (repo / "c" / "config.pbtxt").symlink_to(outside_secret)
    report = check_repository(repo)
    got = {(f.model, f.field, f.message) for f in report.findings}
    assert got == {
        ("c", "(files)", "'c/config.pbtxt' is a symbolic link that leads outside the repository"),
        ("m", "(files)", "'m/1/secret.txt' is a symbolic link that leads outside the repository"),
    }
    code, out, err = cli("check", repo, "--json")
    assert code == 1 and "TOPSECRET" not in out + err
    assert len(json.loads(out)["data"]["findings"]) == 2


def test_check_refuses_a_looping_config_symlink_as_triton_does(tmp_path, mlp_onnx):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    (repo / "m" / "config.pbtxt").unlink()
    (repo / "m" / "config.pbtxt").symlink_to("config.pbtxt")
    [finding] = check_repository(repo).findings
    assert (finding.field, finding.message) == ("(files)", "'m/config.pbtxt' is a symbolic link loop")


def test_links_that_stay_inside_the_repository_are_fine(tmp_path, mlp_onnx):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    (repo / "m" / "labels.txt").write_text("a\n")
    (repo / "m" / "1" / "labels.txt").symlink_to("../labels.txt")
    assert check_repository(repo).ok


# -------------------------------------------------------------------- item 13: one name rule
@pytest.mark.parametrize(("name", "shown"), [("a: b", "'a: b'"), ("a\nb", "'a\\nb'"), ("x\x1b[2J", "'x\\x1b[2J'")])
def test_check_applies_the_name_rule_build_and_deploy_use(tmp_path, mlp_onnx, cli, name, shown):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    (repo / "m").rename(repo / name)
    with pytest.raises(UsageError) as e:
        check_model_name(name)
    report = check_repository(repo)
    first = report.findings[0]
    assert (first.field, first.message) == ("name", f"the model directory's name: {e.value.message}")
    assert shown in first.message and "\n" not in first.message + first.file + first.model
    code, out, _ = cli("check", repo)
    assert code == 1
    assert "0 of 1 models OK" in out
    if name != shown.strip("'"):
        assert name not in out  # never printed raw


def test_a_newline_in_a_build_name_is_one_escaped_line(cli, mlp_onnx, tmp_path):
    code, _, err = cli("build", mlp_onnx, "--name", "evil\nerror: forged", "--repo", tmp_path / "repo")
    one_line_error(code, err, "invalid model name 'evil\\nerror: forged': use letters, digits, '_', '-' and '.', "
                   "without '/', '..' or spaces")


def test_hidden_directories_are_models_to_triton_so_check_reports_them(tmp_path, mlp_onnx):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    (repo / ".ipynb_checkpoints").mkdir()
    report = check_repository(repo)
    assert report.models == (".ipynb_checkpoints", "m")
    [finding] = report.findings
    assert finding.field == "(directory)" and "Triton loads every directory" in finding.message


# ---------------------------------------------------------------- items 7, 10, 14: one safe reader
def test_config_that_is_not_utf8_is_a_file_finding_and_check_json_stays_json(tmp_path, mlp_onnx, cli):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    config = repo / "m" / "config.pbtxt"
    config.write_bytes(b'name: "m\xff"\n')
    code, out, _ = cli("check", repo, "--json")
    assert code == 1
    [f] = json.loads(out)["data"]["findings"]
    assert f["field"] == "(file)"
    assert f["message"] == f"config '{config}' is not UTF-8 text (byte 0xff at offset 8)"


def test_a_config_that_is_a_fifo_or_a_device_is_a_finding_not_a_hang(tmp_path, mlp_onnx):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="fifo", max_batch_size=8))
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="zero", max_batch_size=8))
    (repo / "fifo" / "config.pbtxt").unlink()
    os.mkfifo(repo / "fifo" / "config.pbtxt")
    (repo / "zero" / "config.pbtxt").unlink()
    os.mknod(repo / "zero" / "config.pbtxt", 0o600 | 0o020000, os.makedev(1, 5))  # a /dev/zero inside it
    got = {f.model: (f.field, f.message) for f in check_repository(repo).findings}
    assert got == {
        "fifo": ("(file)", f"config '{repo / 'fifo' / 'config.pbtxt'}' is a named pipe (FIFO), not a regular file"),
        "zero": ("(file)", f"config '{repo / 'zero' / 'config.pbtxt'}' is a character device, not a regular file"),
    }


def test_unreadable_config_is_not_called_a_syntax_error(tmp_path, mlp_onnx):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    config = repo / "m" / "config.pbtxt"
    config.unlink()
    config.mkdir()
    [f] = check_repository(repo).findings
    assert (f.field, f.message) == ("(file)", f"config '{config}' is a directory, not a regular file")


@pytest.mark.parametrize("kind", ["fifo", "zero", "dir"])
def test_model_files_that_are_not_regular_files_are_one_line(cli, tmp_path, kind):
    model = tmp_path / "model.onnx"
    if kind == "fifo":
        os.mkfifo(model)
        message = f"model file '{model}' is a named pipe (FIFO), not a regular file"
    elif kind == "zero":
        model.symlink_to("/dev/zero")
        message = f"model file '{model}' is a character device, not a regular file"
    else:
        model.mkdir()
        message = f"'{model}' is a directory without a model.onnx file inside"
    with pytest.raises(UsageError) as e:
        inspect_onnx(model)
    assert e.value.message == message
    code, _, err = cli("build", model, "--repo", tmp_path / "repo")
    one_line_error(code, err, message)
    assert not (tmp_path / "repo").exists()


def test_external_data_must_lie_beside_the_model(tmp_path, mlp_onnx):
    import onnx

    m = onnx.load(str(mlp_onnx))
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    assert inspect_onnx(tmp_path / "ext.onnx").external_data == ("ext.onnx.data",)
    # a model whose weights are said to live at ../../etc/passwd
    for t in m.graph.initializer:
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        t.external_data.add(key="location", value="../../../../etc/passwd")
    (tmp_path / "evil.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(Exception) as e:
        inspect_onnx(tmp_path / "evil.onnx")
    assert "passwd" in str(getattr(e.value, "message", e.value)) and "root:" not in str(e.value)


def test_build_yaml_that_is_not_utf8_or_a_fifo_is_one_line(cli, tmp_path):
    bad = tmp_path / "tritonops.yaml"
    bad.write_bytes(b"models:\n  - source: m\xe9.onnx\n")
    code, _, err = cli("build", "-f", bad)
    one_line_error(code, err, f"build file '{bad}' is not UTF-8 text (byte 0xe9 at offset 21)")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    code, _, err = cli("build", "-f", fifo)
    one_line_error(code, err, f"build file '{fifo}' is a named pipe (FIFO), not a regular file")
    with pytest.raises(UsageError):
        read_yaml_file(fifo, "ensemble file")


def test_a_text_file_given_as_npz_is_not_an_npz(tmp_path):
    text = tmp_path / "inputs.npz"
    text.write_text("x = [1, 2, 3]\n")
    with pytest.raises(UsageError) as e:
        read_npz(text)
    assert e.value.message == f"cannot read '{text}': it is not an .npz (zip) file"
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with pytest.raises(UsageError) as e:
        read_npz(fifo)
    assert e.value.message == f"samples file '{fifo}' is a named pipe (FIFO), not a regular file"
    good = tmp_path / "good.npz"
    np.savez(good, x=np.ones((2, 4), np.float32))
    assert read_npz(good)["x"].shape == (2, 4)


def test_stage_model_refuses_versions_before_writing(tmp_path):
    with pytest.raises(UsageError), stage_model(tmp_path / "repo", "m", MAX_VERSION + 1):
        pass
    assert not (tmp_path / "repo").exists() and not list(tmp_path.iterdir())


def test_an_ensemble_step_cannot_name_a_config_outside_the_repository(tmp_path, mlp_onnx, outside_secret):
    from tritonclient.grpc import model_config_pb2 as mc

    from tritonops.pbtxt import config_to_text

    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    outside = outside_secret.parent / "model"
    outside.mkdir()
    (outside / "config.pbtxt").write_text('name: "TOPSECRET" platform: "ensemble"\n')
    cfg = mc.ModelConfig(name="e", platform="ensemble", max_batch_size=8)
    cfg.input.add(name="x", data_type=mc.TYPE_FP32, dims=[4])
    cfg.output.add(name="y", data_type=mc.TYPE_FP32, dims=[3])
    cfg.ensemble_scheduling.step.add(model_name="../elsewhere/model", model_version=-1,
                                     input_map={"x": "x"}, output_map={"y": "y"})
    (repo / "e" / "1").mkdir(parents=True)
    (repo / "e" / "config.pbtxt").write_text(config_to_text(cfg))
    findings = [f for f in check_repository(repo).findings if f.model == "e"]
    assert findings[0].field == "ensemble_scheduling.step[0].model_name"
    assert findings[0].message.startswith("step invalid model name '../elsewhere/model'")
    assert not any("TOPSECRET" in f.message for f in findings)


def test_a_model_directory_that_only_held_a_killed_stage_is_removed_with_it(tmp_path, mlp_onnx):
    repo = tmp_path / "repo"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    proc = _hold_stage(tmp_path, repo, mlp_onnx, "empty")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [left] = list((repo / "n").iterdir())
    assert left.name.startswith(".tritonops-stage-")
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="m", max_batch_size=8))
    assert sorted(p.name for p in repo.iterdir()) == ["m"]
