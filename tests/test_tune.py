"""tritonops tune: the search space and its YAML, ranking, and real searches against the session's
tritonserver (explicit model control) with real perf_analyzer runs.

Search spaces and measurement windows are tiny (the numbers are not asserted, only what the search
does with them): each server test stays well under a minute or two on two cores."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tritonclient.http as httpclient

import onnx_models
from report_check import render_check
from served import served_config
from tritonops.build import BuildOptions, build
from tritonops.check import check_repository
from tritonops.cli import main
from tritonops.errors import UsageError
from tritonops.pbtxt import read_config
from tritonops.server import ServerOptions, TritonServer
from tritonops.tune import TuneOptions, resume_options
from tritonops.tune.journal import new_journal
from tritonops.tune.measure import Measurement
from tritonops.tune.objective import Objective, rank
from tritonops.tune.promote import PREVIOUS_NAME, RECORD_NAME, RECORD_SCHEMA, promote
from tritonops.tune.report import pareto
from tritonops.tune.space import Candidate, apply_candidate, candidate_of, derive_space, read_space_file, space_for

SRC = Path(__file__).resolve().parents[1] / "src"
ENSEMBLE = Path(__file__).parent / "fixtures" / "ensembles" / "pipe" / "ensemble.yaml"
FAST = ("--measurement-interval", "300", "--stability-percentage", "100", "--max-trials", "4")
SPACE = """models:
  mlp:
    instances: [1, 2]
    max_batch_sizes: [4, 8]
    dynamic_batching: [true]
    queue_delays_us: [0]
    threads: [1]
concurrency: [1, 4]
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune")
    repo = root / "repo"
    build(BuildOptions(source=str(onnx_models.mlp(root / "src" / "mlp.onnx")), repository=repo, name="mlp",
                       max_batch_size=8))
    assert main(["build", "-f", str(ENSEMBLE), "--repo", str(repo)]) == 0  # 'pipe': two Python steps
    return repo


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("space") / "space.yaml"
    p.write_text(SPACE)
    return p


# ---------------------------------------------------------------- the space, without a server


def test_the_derived_space_follows_the_model_and_the_machine(repo):
    cfg = read_config(repo / "mlp" / "config.pbtxt")
    space = derive_space(cfg, cpus=4)
    assert space.instances == (1, 2, 3, 4)
    assert space.max_batch_sizes == (4, 8, 16, 32, 64)  # powers of two up to what an ONNX model allows
    assert space.dynamic_batching == (True, False)
    assert space.threads == (1, 2, 4)  # an ONNX Runtime model on CPU instances
    cands = space.grid()
    assert len({c.key for c in cands}) == len(cands)
    assert all(c.queue_delay_us == 0 for c in cands if not c.dynamic_batching)  # normalized: one key per config


def test_a_candidate_is_applied_through_protobuf_and_reads_back(repo):
    cfg = read_config(repo / "mlp" / "config.pbtxt")
    cand = Candidate(instances=2, max_batch_size=4, dynamic_batching=True, queue_delay_us=500, threads=1,
                     preferred=(4,))
    new = apply_candidate(cfg, cand)
    assert candidate_of(new) == cand
    assert new.instance_group[0].count == 2 and new.parameters["intra_op_thread_count"].string_value == "1"
    off = apply_candidate(cfg, Candidate(1, 8, False, 500))
    assert not off.HasField("dynamic_batching") and candidate_of(off).key == "i1_b8_nodb"


@pytest.mark.parametrize(("text", "message"), [
    ("models:\n  mlp:\n    instance: [1, 2]\n", "space.yaml: models.mlp: unknown field 'instance'"),
    ("models:\n  mlp:\n    instances: [0, 2]\n", "space.yaml:3: models.mlp.instances[0]: expected an integer >= 1"),
    ("models:\n  mlp:\n    max_batch_sizes: [128]\n",
     "space.yaml:2: models.mlp: max_batch_sizes 128 is above what 'mlp' allows (64)"),
    ("models:\n  mlp:\n    instances: []\n", "space.yaml:2: models.mlp: instances is empty"),
    ("models:\n  mlp:\n    max_batch_sizes: [2]\n",
     "space.yaml:2: models.mlp: max_batch_sizes 2 is below the calling ensemble's max_batch_size 4"),
    ("concurrency: [0]\n", "space.yaml:1: concurrency[0]: expected an integer >= 1"),
    ("model: {}\n", "space.yaml: unknown field 'model'"),
])
def test_a_bad_space_file_is_one_line_with_file_and_line(repo, tmp_path, text, message):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    cfg = read_config(repo / "mlp" / "config.pbtxt")
    with pytest.raises(UsageError) as e:
        space_for(cfg, read_space_file(p), ensemble_batch=4)
    assert message in e.value.message
    assert "\n" not in e.value.message and e.value.hint


def _m(setting: str, c: int, tput: float, p99: float, round_: int = 0) -> Measurement:
    return Measurement(setting=setting, concurrency=c, round=round_, status="ok", throughput=tput, p50_ms=p99 / 2,
                       p95_ms=p99, p99_ms=p99)


def test_ranking_names_the_winner_the_gap_and_the_closest_when_no_one_meets_the_budget():
    ms = [_m("a", 1, 100, 1), _m("a", 4, 300, 9), _m("b", 1, 120, 1), _m("b", 4, 250, 4), _m("c", 4, 50, 30)]
    r = rank(ms, Objective("throughput", "p99", 5.0))
    assert r.winner is not None and r.winner.setting == "b" and r.winner.throughput == 250
    assert r.runner_up is not None and r.runner_up.setting == "a"
    assert r.gap() == pytest.approx((250 - 100) / 250)  # a within the budget: 100/s at concurrency 1
    assert "runner-up a" in r.summary()
    none = rank(ms, Objective("throughput", "p99", 0.5))
    assert not none.met and none.winner is not None
    assert none.summary().startswith("no candidate meets max throughput with p99 <= 0.5 ms; the closest is")
    lat = rank(ms, Objective("latency", "p99"))
    assert lat.winner is not None and lat.winner.concurrency == 1
    # final rounds decide over the search's numbers
    final = rank([*ms, _m("a", 4, 200, 4, 1), _m("b", 4, 190, 4, 1)], Objective("throughput", "p99", 5.0))
    assert final.winner is not None and final.winner.setting == "a" and final.winner.final


def test_the_pareto_front_keeps_only_unbeaten_points():
    assert pareto([(1, 10), (2, 5), (3, 30), (4, 20), (5, 40)]) == [(1, 10), (3, 30), (5, 40)]


# ---------------------------------------------------------------- against the session server


@pytest.fixture(scope="module")
def server(repo, triton_session):
    with triton_session.models(repo):
        yield triton_session.server


def _url(server) -> tuple[str, ...]:
    return ("--url", server.http_url, "--grpc-url", server.grpc_url)


def _served_config(server) -> dict:
    return served_config(server.http_url, "mlp")


def _journal(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines() if x.strip()]
    return [x for x in lines if x.get("type") == "measurement"]


def test_tune_over_url_finds_a_winner_and_loads_the_original_back(cli, server, repo, space_file, tmp_path, digest):
    before_repo, before_cfg = digest(repo), _served_config(server)
    out = tmp_path / "out"
    code, stdout, stderr = cli("tune", "mlp", *_url(server), "--p99-ms", "200", "--space", space_file,
                               "--strategy", "brute", *FAST, "--output-dir", out, "--json")
    assert code == 0, stderr
    env = json.loads(stdout)
    assert env["schema"] == "tritonops.tune/1" and env["status"] == "ok"
    data = env["data"]
    assert data["met_budget"] and data["winner"]["mlp"]["key"] == data["ranking"]["winner"]["setting"]
    assert data["ranking"]["winner"]["throughput"] > 0 and data["ranking"]["runner_up"] is not None
    assert "runner-up" in data["summary"]
    searched = {m["setting"] for m in _journal(out) if m["round"] == 0}
    assert {"i1_b4_db_d0_t1", "i1_b8_db_d0_t1", "i2_b4_db_d0_t1", "i2_b8_db_d0_t1"} <= searched  # the grid
    finals = {m["setting"] for m in _journal(out) if m["round"] > 0}  # final interleaved rounds
    assert data["start_key"] in finals and len(finals) >= 2  # the starting config always among them
    keys = [(m["setting"], m["concurrency"], m["round"]) for m in _journal(out)]
    assert len(keys) == len(set(keys))
    assert _served_config(server) == before_cfg  # the original config is loaded back
    assert digest(repo) == before_repo  # and the repository was never written
    checks = render_check(out / "report.html", tmp_path)
    assert checks and all(c["drawn"] > 0 and c["colored"] > 0 for c in checks), checks


def test_a_budget_nobody_meets_says_so_and_shows_the_closest(cli, server, space_file, tmp_path):
    out = tmp_path / "out"
    code, _, stderr = cli("tune", "mlp", *_url(server), "--p99-ms", "0.001", "--space", space_file,
                               "--max-measurements", "2", "--final-rounds", "0", *FAST, "--output-dir", out)
    assert code == 1
    assert "no candidate meets max throughput with p99 <= 0.001 ms; the closest is" in stderr
    assert "Traceback" not in stderr


def test_a_hung_measurement_is_killed_retried_once_and_recorded_as_failed(cli, server, space_file, tmp_path):
    before = _served_config(server)
    out = tmp_path / "out"
    code, _, err = cli("tune", "mlp", *_url(server), "--p99-ms", "200", "--space", space_file, "--timeout", "0.2",
                       "--max-measurements", "2", "--final-rounds", "0", *FAST, "--output-dir", out)
    assert code == 1 and "no candidate was measured successfully" in err and "Traceback" not in err
    journal = _journal(out)
    assert len(journal) == 2  # the search went on after the first one failed
    assert all(m["status"] == "failed" and m["attempts"] == 2 for m in journal)
    assert all(m["note"] == "timed out after 0.2 s and was killed" for m in journal)
    assert _served_config(server) == before


def test_ctrl_c_stops_cleanly_keeps_the_journal_and_loads_the_original_back(server, space_file, tmp_path):
    before = _served_config(server)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tritonops", "tune", "mlp", *_url(server), "--p99-ms", "200",
           "--space", str(space_file), "--strategy", "brute", *FAST, "--output-dir", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "journal.jsonl").exists() and len(_journal(out)) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before Ctrl-C: {proc.communicate()[1]}"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and f"--resume {out}" in stderr and "Traceback" not in stderr
    assert len(_journal(out)) >= 3
    assert json.loads((out / "tune.json").read_text())["interrupted"] is True
    assert _served_config(server) == before


def test_bad_input_is_one_line_and_leaves_nothing_changed(cli, server, repo, space_file, tmp_path, digest):
    before = digest(repo)
    code, _, err = cli("tune", "nosuch", *_url(server), "--output-dir", tmp_path / "a")
    assert code == 2 and "model 'nosuch' is not in the server's repository" in err
    code, _, err = cli("tune", "mlp", *_url(server), "--promote", "--output-dir", tmp_path / "b")
    assert code == 2 and "--promote writes into the repository" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  mlp:\n    threds: [1]\n")
    code, _, err = cli("tune", "mlp", *_url(server), "--space", bad, "--output-dir", tmp_path / "c")
    assert code == 2 and "unknown field 'threds'" in err and "did you mean 'threads'" in err
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text("models:\n  mpl:\n    instances: [1]\n")
    code, _, err = cli("tune", "mlp", *_url(server), "--space", misspelt, "--output-dir", tmp_path / "d")
    assert code == 2 and "model 'mpl' is not tuned in this run" in err and "misspelt.yaml:2" in err, err
    assert "name one of: mlp" in err
    code, _, err = cli("tune", "--resume", tmp_path / "nothing")
    assert code == 2 and "no tune journal" in err
    assert "Traceback" not in err and digest(repo) == before


@pytest.mark.lifecycle
def test_a_server_not_in_explicit_mode_is_refused_with_a_hint(cli, repo, tmp_path, digest):
    """Starting up is part of what is tested here (a server in the default model-control mode), so the
    test starts its own server instead of lending the session's (which is in explicit mode)."""
    only_mlp = tmp_path / "repo"
    shutil.copytree(repo / "mlp", only_mlp / "mlp")  # the Python steps would write __pycache__ when served
    before = digest(only_mlp)
    with TritonServer(ServerOptions(repository=only_mlp)) as plain:
        code, _, err = cli("tune", "mlp", "--url", plain.http_url, "--grpc-url", plain.grpc_url,
                           "--output-dir", tmp_path / "out")
    assert code == 2, err
    assert "is not in explicit model-control mode" in err and "--model-control-mode=explicit" in err
    assert "Traceback" not in err and digest(only_mlp) == before
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_killed_run_resumes_without_repeating_a_measurement(cli, server, space_file, tmp_path):
    before_cfg = _served_config(server)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tritonops", "tune", "mlp", *_url(server), "--p99-ms", "200",
           "--space", str(space_file), "--strategy", "brute", "--final-rounds", "0", *FAST, "--output-dir", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "journal.jsonl").exists() and len(_journal(out)) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[1]}"
        proc.send_signal(signal.SIGKILL)  # a crash: nothing is cleaned up by the run itself
    finally:
        proc.wait(timeout=60)
    first = _journal(out)
    assert 3 <= len(first) < 8  # 4 candidates x 2 concurrencies
    code, stdout, err = cli("tune", "--resume", out, *_url(server), "--json")
    assert code == 0, err
    data = json.loads(stdout)["data"]
    after = _journal(out)
    keys = [(m["setting"], m["concurrency"], m["round"]) for m in after]
    assert len(keys) == len(set(keys)), "a measurement was repeated"
    assert after[:len(first)] == first
    assert data["measurements"]["new"] == len(after) - len(first)
    assert data["measurements"]["reused"] >= len(first)
    assert {m["setting"] for m in after} >= {"i1_b4_db_d0_t1", "i1_b8_db_d0_t1", "i2_b4_db_d0_t1", "i2_b8_db_d0_t1"}
    assert _served_config(server) == before_cfg  # the kill left a candidate loaded; the resumed run undid it
    # another model's resume is refused
    code, _, err = cli("tune", "other", "--resume", out, "--url", server.http_url)
    assert code == 2 and "is for model 'mlp', not 'other'" in err


def _readme_tune() -> tuple[list[str], str]:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    body = text.split("## tune\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", body, re.S)[0].replace("\\\n", " ")
    commands = [ln.split("  #", 1)[0].strip() for ln in block.splitlines()]
    return [c for c in commands if c.startswith("tritonops ")], re.findall(r"```yaml\n(.*?)```", body, re.S)[0]


@pytest.mark.lifecycle  # the README run starts its own server (tune --serve)
def test_the_readme_run_promotes_the_winner_with_its_record_and_check_passes(cli, tmp_path, monkeypatch):
    """The README's tune run, as written (plus short measurement windows): build, tune --promote, check."""
    commands, space = _readme_tune()
    assert [c.split()[1] for c in commands] == ["build", "tune", "check"]
    monkeypatch.chdir(tmp_path)
    onnx_models.mlp(tmp_path / "model.onnx")
    (tmp_path / "tune-space.yaml").write_text(space)
    local = tmp_path / "model_repository"
    code, _, err = cli(*shlex.split(commands[0])[1:])
    assert code == 0, err
    old_text = (local / "mlp" / "config.pbtxt").read_text()
    code, stdout, err = cli(*shlex.split(commands[1])[1:], *FAST, "--json")
    assert code == 0, err
    data = json.loads(stdout)["data"]
    winner = Candidate.from_dict(data["winner"]["mlp"])
    # --max-memory-mb with --serve: the pid of the server tune started, sampled under load, per candidate
    assert data["settings"]["memory"].startswith("the tritonserver process tune started")
    scored = [s for s in data["ranking"]["scores"] if s["points"]]
    assert scored and all(0 < s["memory_mb"] <= 4096 and not s["over_memory"] for s in scored)
    if data["winner"] == data["start"]:  # the served config won the final rounds: nothing to write
        assert data["promoted"] == {} and (local / "mlp" / "config.pbtxt").read_text() == old_text
    else:
        assert data["promoted"] == {"mlp": str((local / "mlp" / RECORD_NAME).absolute())}
        assert candidate_of(read_config(local / "mlp" / "config.pbtxt")) == winner
        assert (local / "mlp" / PREVIOUS_NAME).read_text() == old_text
        record = json.loads((local / "mlp" / RECORD_NAME).read_text())
        out = tmp_path / "out" / "tune" / "mlp"
        assert record["objective"]["budget_ms"] == 20 and record["journal"] == str((out / "journal.jsonl").resolve())
        assert record["winner"]["setting"] == winner.key and record["measurements"]
    code, _, err = cli(*shlex.split(commands[2])[1:])
    assert code == 0, err
    assert check_repository(local).ok


def test_promote_writes_the_config_beside_its_record_and_the_previous_one(repo, tmp_path, digest):
    local = tmp_path / "repo"
    shutil.copytree(repo / "mlp", local / "mlp")
    old_text = (local / "mlp" / "config.pbtxt").read_text()
    cand = Candidate(instances=2, max_batch_size=4, dynamic_batching=True, queue_delay_us=500, threads=1)
    paths = promote(local, {"mlp": cand}, {"objective": {"budget_ms": 20}, "triton_version": "2.51.0"})
    assert paths == {"mlp": str((local / "mlp" / RECORD_NAME).absolute())}
    assert candidate_of(read_config(local / "mlp" / "config.pbtxt")) == cand
    assert (local / "mlp" / PREVIOUS_NAME).read_text() == old_text
    record = json.loads((local / "mlp" / RECORD_NAME).read_text())
    assert record["schema"] == RECORD_SCHEMA and record["candidate"]["key"] == cand.key
    assert record["tritonops_version"] and record["hardware"]["cpus"] >= 1
    assert set(record["model_files_sha256"]) == {"1/model.onnx"}
    assert check_repository(local).ok
    before = digest(local)
    with pytest.raises(UsageError):  # a model the repository does not hold: nothing is written
        promote(local, {"mlp": cand, "other": cand}, {})
    assert digest(local) == before


# ---------------------------------------------------------------- an ensemble: its steps tuned jointly

STEP_SPACE = """models:
  pipe_double: {instances: [1, 2], max_batch_sizes: [8], dynamic_batching: [true], queue_delays_us: [0]}
  pipe_total: {instances: [1, 2], max_batch_sizes: [8], dynamic_batching: [true], queue_delays_us: [0]}
concurrency: [2]
"""


def test_ensemble_steps_are_tuned_jointly_from_their_statistics(cli, server, tmp_path):
    clients = httpclient.InferenceServerClient(server.http_url)
    try:
        before = {n: dict(clients.get_model_config(n)) for n in ("pipe_double", "pipe_total")}
    finally:
        clients.close()
    space = tmp_path / "space.yaml"
    space.write_text(STEP_SPACE)
    out = tmp_path / "out"
    code, stdout, err = cli("tune", "pipe", *_url(server), "--p99-ms", "500", "--space", space, "--shape", "x:4",
                            "--final-rounds", "1", *FAST, "--output-dir", out, "--json")
    assert code == 0, err
    data = json.loads(stdout)["data"]
    assert data["ensemble_steps"] == ["pipe_double", "pipe_total"]
    assert set(data["winner"]) == {"pipe_double", "pipe_total"}
    journal = _journal(out)
    assert {tuple(sorted(m["candidates"])) for m in journal} == {("pipe_double", "pipe_total")}
    measured = [m for m in journal if m["status"] == "ok"]
    assert measured and all(m["steps"]["pipe_double"]["requests"] > 0
                            and m["steps"]["pipe_total"]["compute_us"] is not None for m in measured)
    assert len({m["setting"] for m in journal}) >= 3  # each step's instances tried, one after the other
    html = (out / "report.html").read_text()
    assert "Per-step queue and compute time per request: start vs winner" in html
    clients = httpclient.InferenceServerClient(server.http_url)
    try:
        assert {n: dict(clients.get_model_config(n)) for n in ("pipe_double", "pipe_total")} == before
    finally:
        clients.close()


# ---------------------------------------------------------------- the CI gate: perf --baseline


def _record(path: Path, throughput: float, latency_ms: float, concurrency: int = 1) -> Path:
    path.write_text(json.dumps({"schema": RECORD_SCHEMA, "model": "mlp",
                                "objective": {"kind": "throughput", "percentile": "p99", "budget_ms": 1000.0},
                                "winner": {"setting": "i1_b8_db_d0", "throughput": throughput,
                                           "latency_ms": latency_ms, "concurrency": concurrency}}))
    return path


def test_perf_baseline_gate_fails_on_a_regression_and_says_by_how_much(cli, server, tmp_path):
    args = ("perf", "mlp", *_url(server), "--concurrency", "1", *FAST, "--output-dir", tmp_path / "perf")
    high = _record(tmp_path / "high.json", 1e9, 1e-6)
    code, stdout, err = cli(*args, "--baseline", high, "--json")
    assert code == 7, err
    env = json.loads(stdout)
    assert env["status"] == "failed" and not env["data"]["baseline_gate"]["ok"]
    assert "throughput within p99 <= 1000 ms dropped" in err and "more than the 10% tolerance" in err
    assert "p99 at concurrency 1 rose" in err
    low = _record(tmp_path / "low.json", 1.0, 1000.0)
    code, stdout, err = cli(*args, "--baseline", low)
    assert code == 0, err
    assert "baseline ok: throughput within p99 <= 1000 ms rose" in stdout
    code, _, err = cli(*args, "--baseline", tmp_path / "high.json", "--tolerance", "2")
    assert code == 2 and "--tolerance 2 is outside 0..1" in err
    (tmp_path / "bad.json").write_text("{}")
    code, _, err = cli(*args, "--baseline", tmp_path / "bad.json")
    assert code == 2 and "is not a tune record with a winner" in err


def test_resume_takes_the_journal_options_and_the_server_given_now(tmp_path):
    saved = TuneOptions(model="mlp", serve=tmp_path / "repo", budget_ms=20, concurrency=(1, 4), strategy="brute")
    new_journal(tmp_path / "out", {"model": "mlp", "fingerprint": "x", "options": saved.to_dict()})
    same = resume_options(tmp_path / "out")
    assert (same.serve, same.budget_ms, same.concurrency, same.strategy) == (tmp_path / "repo", 20, (1, 4), "brute")
    assert same.resume and same.output_dir == tmp_path / "out"
    moved = resume_options(tmp_path / "out", url="127.0.0.1:9000", serve=None, promote=False)
    assert moved.serve is None and moved.url == "127.0.0.1:9000" and moved.budget_ms == 20
    promoting = resume_options(tmp_path / "out", promote=True)
    assert promoting.promote and promoting.serve == tmp_path / "repo"
