"""tritonops tune's other loads, objectives and limits: request rates (Poisson arrivals), the lowest
latency at a throughput, a server-memory limit, and the instance kind (KIND_GPU per device).

Ranking rules are checked on hand-made measurements; the README's examples for each run against the
session's tritonserver (explicit model control) with real perf_analyzer runs, a one-candidate space
and short windows: the numbers are not asserted, only what the search does with them."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

import onnx_models
from served import served_config
from tritonops.build import BuildOptions, build
from tritonops.check import check_repository
from tritonops.errors import UsageError
from tritonops.pbtxt import config_to_json, dict_to_config, read_config
from tritonops.tune.measure import Measurement
from tritonops.tune.memory import listening_pid, memory_probe, tree_rss_mb
from tritonops.tune.objective import Objective, rank
from tritonops.tune.promote import RECORD_SCHEMA, promote
from tritonops.tune.space import apply_candidate, candidate_of, derive_space

README = Path(__file__).parents[1] / "README.md"
FAST = ("--measurement-interval", "300", "--stability-percentage", "100", "--max-trials", "4")
ONE = """models:
  mlp: {instances: [1], max_batch_sizes: [8], dynamic_batching: [true], queue_delays_us: [0], threads: [1]}
"""


def _m(setting: str, load: float, tput: float, p99: float, *, rate: bool = False, memory: float | None = None,
       round_: int = 0) -> Measurement:
    return Measurement(setting=setting, concurrency=0 if rate else int(load), round=round_, status="ok",
                       throughput=tput, p50_ms=p99 / 2, p95_ms=p99, p99_ms=p99,
                       request_rate=float(load) if rate else None, memory_mb=memory)


# ---------------------------------------------------------------- ranking, without a server


def test_at_request_rates_a_point_counts_only_where_the_server_kept_up():
    ms = [_m("a", 100, 99, 2, rate=True), _m("a", 400, 300, 3, rate=True),  # a fell behind at 400/s
          _m("b", 100, 100, 2, rate=True), _m("b", 200, 197, 4, rate=True)]
    r = rank(ms, Objective("throughput", "p99", 10.0, request_rate=True))
    assert r.winner is not None and r.winner.setting == "b" and r.winner.request_rate == 200
    assert r.winner.concurrency is None and "offered 200 requests/s" in r.summary()
    a = next(s for s in r.scores if s.setting == "a")
    assert a.value == 99 and a.request_rate == 100  # its 300/s at an offered 400/s is not a result
    behind = rank([_m("c", 400, 100, 1, rate=True)], Objective("throughput", "p99", 10.0, request_rate=True))
    assert not behind.met and behind.scores[0].why == "fell behind the offered rate at every load"


def test_at_request_rates_the_shortfall_allowed_covers_the_poisson_counting_noise():
    # 100/s over three 300 ms windows is 90 requests expected: their count alone varies by 1/sqrt(90) = 10.5%
    short = [_m("a", 100, 90.5, 2, rate=True)]
    assert rank([replace(short[0], window_ms=300)], Objective("throughput", "p99", 10.0, request_rate=True)).met
    # over three 10 s windows (3000 requests, 1.8%) the 3% rule holds: 90.5/s fell behind
    long = rank([replace(short[0], window_ms=10_000)], Objective("throughput", "p99", 10.0, request_rate=True))
    assert not long.met and long.scores[0].why == "fell behind the offered rate at every load"
    assert not rank([replace(short[0], throughput=50.0, window_ms=300)],
                    Objective("throughput", "p99", 10.0, request_rate=True)).met  # half is not noise


def test_min_latency_at_a_throughput_picks_the_lowest_latency_among_points_that_reach_it():
    ms = [_m("a", 1, 300, 1.0), _m("a", 4, 520, 6.0), _m("a", 8, 700, 9.0),
          _m("b", 1, 250, 0.8), _m("b", 4, 505, 5.0), _m("c", 1, 200, 0.5), _m("c", 4, 450, 3.0)]
    r = rank(ms, Objective("latency", "p99", at_throughput=500))
    assert [s.setting for s in r.scores[:2]] == ["b", "a"] and r.met
    assert r.winner is not None and (r.winner.value, r.winner.concurrency) == (5.0, 4)
    assert r.gap() == pytest.approx((6.0 - 5.0) / 5.0)
    c = next(s for s in r.scores if s.setting == "c")
    assert not c.met and c.why == "reached 450.0 of 500 infer/s"  # c's 0.5 ms is at a throughput it does not reach
    none = rank(ms, Objective("latency", "p99", at_throughput=10_000))
    assert not none.met and none.summary() == ("no candidate meets min p99 latency at >= 10000 infer/s; the closest "
                                               "is a with 700.0 infer/s")  # the most throughput
    # at request rates the target is reached at 97% of it
    rated = rank([_m("d", 500, 486, 4.0, rate=True), _m("e", 500, 484, 2.0, rate=True)],
                 Objective("latency", "p99", at_throughput=500, request_rate=True))
    assert rated.winner is not None and rated.winner.setting == "d" and rated.met
    assert not next(s for s in rated.scores if s.setting == "e").met


def test_a_finalist_whose_re_measured_point_went_over_the_budget_keeps_its_lower_loads():
    ms = [_m("a", 4, 400, 3), _m("a", 16, 900, 9), _m("a", 16, 950, 30, round_=1), _m("a", 16, 940, 28, round_=2)]
    r = rank(ms, Objective("throughput", "p99", 10.0))
    assert r.met and r.winner is not None and r.winner.final
    assert (r.winner.value, r.winner.concurrency) == (400, 4)  # not the search's 900/s at 16, which the finals refuted


def test_a_candidate_over_the_memory_limit_is_infeasible_whatever_its_numbers():
    ms = [_m("big", 4, 900, 2, memory=600), _m("big", 8, 950, 3, memory=640), _m("small", 4, 500, 2, memory=300)]
    r = rank(ms, Objective("throughput", "p99", 10.0, max_memory_mb=500))
    assert r.winner is not None and r.winner.setting == "small" and r.met
    assert "server memory 300 MB" in r.summary()
    big = next(s for s in r.scores if s.setting == "big")
    assert not big.met and big.over_memory and big.memory_mb == 640  # the peak over its measurements
    assert big.why == "server memory 640 MB > 500 MB"
    tight = rank(ms, Objective("throughput", "p99", 10.0, max_memory_mb=100))
    assert tight.summary() == ("no candidate meets max throughput with p99 <= 10 ms, server memory <= 100 MB; the "
                               "closest is small with server memory 300 MB")


@pytest.mark.parametrize(("args", "message"), [
    (("--at-throughput", "500"), "--at-throughput goes with --objective latency"),
    (("--at-throughput", "0", "--objective", "latency"), "--at-throughput"),
    (("--objective", "latency", "--request-rate", "100"), "--objective latency without --at-throughput"),
    (("--max-memory-mb", "-1"), "--max-memory-mb"),
    (("--request-rate", "0,100"), "--request-rate"),
    (("--request-rate", "fast"), "cannot parse --request-rate 'fast'"),
    (("--instance-kind", "tpu"), "--instance-kind 'tpu' is not cpu or gpu"),
    (("--request-rate", "100", "--concurrency", "1,4"), "give either --concurrency or --request-rate, not both"),
    (("--percentile", "p90"), "--percentile 'p90' is not p50, p95 or p99"),
    (("--percentile", "p95", "--p99-ms", "20"), "--percentile p95 and the budget --p99-ms disagree"),
])
def test_bad_options_are_refused_before_any_server_is_asked(cli, tmp_path, args, message):
    code, _, err = cli("tune", "mlp", "--url", "127.0.0.1:9", *args, "--output-dir", tmp_path / "out")
    assert code == 2, err
    assert message in err and "Traceback" not in err and "cannot reach" not in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- memory: real processes, no server


def test_the_memory_of_a_process_tree_counts_its_children():
    own = tree_rss_mb(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 << 20); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 30  # until the child has allocated its 64 MB
        while time.monotonic() < deadline:
            with_child = tree_rss_mb(os.getpid())
            if with_child is not None and own is not None and with_child > own + 50:
                break
            time.sleep(0.1)
        assert own is not None and with_child is not None and with_child > own + 50  # the child's 64 MB
    finally:
        child.kill()
        child.wait()
    assert tree_rss_mb(child.pid) is None  # gone


def test_the_server_behind_a_url_is_found_on_this_machine_and_refused_elsewhere():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listening_pid(port) == os.getpid()
        with pytest.raises(UsageError) as e:  # listening, but not a tritonserver
            memory_probe(f"127.0.0.1:{port}", None)
        assert f"no tritonserver process of this user listens on port {port}" in e.value.message
    with pytest.raises(UsageError) as e:
        memory_probe("10.1.2.3:8000", None)
    assert "cannot be measured: it is not on this machine" in e.value.message
    assert "nv_cpu_memory_used_bytes" in e.value.message and "--serve" in e.value.hint


# ---------------------------------------------------------------- the instance kind, as config text


def _gpu_served(cfg_path: Path):
    """The mlp's config as a GPU server reports it: one instance on each of GPUs 0 and 1."""
    cfg = read_config(cfg_path)
    d = json.loads(config_to_json(cfg))
    d["instance_group"] = [{"count": 1, "kind": "KIND_GPU", "gpus": [0]}, {"count": 1, "kind": "KIND_GPU",
                                                                             "gpus": [1]}]
    return dict_to_config(d, "the served config")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune_modes")
    build(BuildOptions(source=str(onnx_models.mlp(root / "src" / "mlp.onnx")), repository=root / "repo",
                       name="mlp", max_batch_size=8))
    return root / "repo"


def test_a_gpu_model_is_searched_per_device_and_promoted_as_kind_gpu_with_its_gpus(repo, tmp_path):
    served = _gpu_served(repo / "mlp" / "config.pbtxt")
    start = candidate_of(served)
    assert (start.kind, start.instances, start.gpus, start.key) == ("gpu", 1, (0, 1), "g1_gpu0-1_b8_db_d0")
    space = derive_space(served, cpus=16)
    assert space.instances == (1, 2) and space.threads == (0,)  # per device, not per core; no ORT threads
    assert {(c.kind, c.gpus) for c in space.grid()} == {("gpu", (0, 1))}
    local = tmp_path / "repo"
    shutil.copytree(repo / "mlp", local / "mlp")
    winner = replace(start, instances=2, dynamic_batching=True, queue_delay_us=100)
    promote(local, {"mlp": winner}, {"objective": {"budget_ms": 20}})
    text = (local / "mlp" / "config.pbtxt").read_text()
    group = re.search(r"instance_group \{(.*?)\}", text, re.S)
    assert group is not None
    assert re.findall(r"(\w+): (\w+)", group.group(1)) == [("count", "2"), ("gpus", "0"), ("gpus", "1"),
                                                           ("kind", "KIND_GPU")]
    assert candidate_of(read_config(local / "mlp" / "config.pbtxt")) == winner
    assert check_repository(local).ok


def test_instance_kind_gpu_tunes_a_cpu_model_as_gpu_instances_and_cpu_drops_the_devices(repo):
    cfg = read_config(repo / "mlp" / "config.pbtxt")
    space = derive_space(cfg, cpus=16, kind="gpu")
    assert space.kind == "gpu" and space.instances == (1, 2) and space.threads == (0,)
    as_gpu = candidate_of(cfg).placed("gpu")
    group = apply_candidate(cfg, as_gpu).instance_group
    assert len(group) == 1 and group[0].kind == group[0].KIND_GPU and list(group[0].gpus) == []  # every GPU
    back = candidate_of(_gpu_served(repo / "mlp" / "config.pbtxt")).placed("cpu")
    assert back.kind == "cpu" and back.gpus == () and back.key.startswith("i1_")
    cpu_group = apply_candidate(cfg, back).instance_group[0]
    assert cpu_group.kind == cpu_group.KIND_CPU and not cpu_group.gpus
    assert derive_space(cfg, cpus=4, kind="cpu").instances == (1, 2, 3, 4)


# ---------------------------------------------------------------- the README's examples, on the session server


@pytest.fixture(scope="module")
def server(repo, triton_session):
    with triton_session.models(repo):
        yield triton_session.server


def _readme_example(flag: str) -> list[str]:
    body = README.read_text().split("## tune\n", 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"```bash\n(.*?)```", body, re.S)[1:]  # the first block is the promote run
    lines = [ln.split("  #", 1)[0].strip() for b in examples for ln in b.replace("\\\n", " ").splitlines()]
    found = [ln for ln in lines if ln.startswith("tritonops tune ") and f" {flag} " in f"{ln} "]
    assert len(found) == 1, f"the README's tune section has no single example with {flag}: {found}"
    return shlex.split(found[0])[1:]


def _on(server, args: list[str], tmp_path: Path, *extra: str) -> tuple[str, ...]:
    """The README's command with the session server for --serve model_repository/, a one-candidate space,
    short windows, no final rounds and ``extra`` (an option given again replaces the README's value)."""
    i = args.index("--serve")
    space = tmp_path / "space.yaml"
    space.write_text(ONE)
    return (*args[:i], *args[i + 2:], "--url", server.http_url, "--grpc-url", server.grpc_url, "--space", str(space),
            "--final-rounds", "0", *FAST, *extra)


def _journal(out: Path) -> tuple[dict, list[dict]]:
    lines = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines() if x.strip()]
    return lines[0], [x for x in lines if x.get("type") == "measurement"]


def _served_config(server) -> dict:
    return served_config(server.http_url, "mlp")


def test_request_rates_are_offered_with_poisson_arrivals_and_resume_refuses_the_other_mode(cli, server, tmp_path):
    before = _served_config(server)
    out = tmp_path / "out"
    # a loose budget: Poisson bursts on two shared cores put p99 at 100/s anywhere from 2 to 100+ ms
    code, stdout, err = cli(*_on(server, _readme_example("--request-rate"), tmp_path, "--p99-ms", "1000",
                                 "--output-dir", out, "--json"))
    assert code == 0, err
    data = json.loads(stdout)["data"]
    header, journal = _journal(out)
    assert header["load_mode"] == "request_rate" and data["settings"]["request_rate"] == [100, 200, 400]
    assert journal and all(m["concurrency"] == 0 and m["request_rate"] in (100, 200, 400) for m in journal)
    # the start is measured at the highest rate first (bisected below it only if that one misses the budget)
    assert journal[0]["request_rate"] == 400
    commands = [c for p in (out / "runs").rglob("perf.json") for c in json.loads(p.read_text())["commands"]]
    assert commands and all("--request-rate-range" in c and c[c.index("--request-distribution") + 1] == "poisson"
                            and "--concurrency-range" not in c for c in commands)
    w = data["ranking"]["winner"]
    assert w["request_rate"] in (100, 200, 400) and w["concurrency"] is None
    expected = w["request_rate"] * 0.3 * 3  # requests in three 300 ms windows
    assert w["throughput"] >= (1 - max(0.03, 3 / expected ** 0.5)) * w["request_rate"]  # the server kept up
    assert "offered" in data["summary"] and w["memory_mb"] > 0  # a --url on this machine: its memory too
    assert "Achieved vs offered throughput" in (out / "report.html").read_text()
    assert _served_config(server) == before
    code, _, err = cli("tune", "--resume", out, "--url", server.http_url, "--grpc-url", server.grpc_url,
                       "--concurrency", "1,4")
    assert code == 2 and "was measured at request rates (--request-rate), not at concurrencies" in err
    code, stdout, err = cli("tune", "--resume", out, "--url", server.http_url, "--grpc-url", server.grpc_url, "--json")
    assert code == 0, err
    again = json.loads(stdout)["data"]
    assert again["measurements"]["new"] == 0 and again["winner"] == data["winner"]  # nothing measured twice


def test_min_latency_at_a_throughput_stops_each_sweep_once_the_target_is_reached(cli, server, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli(*_on(server, _readme_example("--at-throughput"), tmp_path, "--concurrency", "1,2,4,8",
                                 "--output-dir", out, "--json"))
    assert code == 0, err
    data = json.loads(stdout)["data"]
    assert data["ranking"]["objective"]["description"] == "min p99 latency at >= 200 infer/s"
    for s in (s for s in data["ranking"]["scores"] if s["met_budget"]):
        reaching = [p for p in s["points"] if p["throughput"] >= 200]
        assert s["value"] == s["latency_ms"] == min(p["latency_ms"] for p in reaching)
    _, journal = _journal(out)
    for setting in {m["setting"] for m in journal}:  # no point measured past the first that reached 200/s
        ok = sorted((m for m in journal if m["setting"] == setting and m["status"] == "ok"),
                    key=lambda m: m["concurrency"])
        assert all(m["throughput"] < 200 for m in ok[:-1])
    code, _, err = cli(*_on(server, _readme_example("--at-throughput"), tmp_path, "--at-throughput", "1e8",
                            "--max-measurements", "2", "--output-dir", tmp_path / "none"))
    assert code == 1, err
    assert "no candidate meets min p99 latency at >= 1e+08 infer/s; the closest is" in err
    assert "lower --at-throughput" in err


def test_a_memory_limit_no_candidate_meets_names_the_closest_and_each_candidate_s_memory(cli, server, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli(*_on(server, _readme_example("--max-memory-mb"), tmp_path, "--max-memory-mb", "1",
                                 "--concurrency", "1", "--output-dir", out, "--json"))
    assert code == 1, err
    env = json.loads(stdout)
    scored = [s for s in env["data"]["ranking"]["scores"] if s["points"]]
    assert scored and all(s["over_memory"] and s["memory_mb"] > 1 and not s["met_budget"] for s in scored)
    assert re.search(r"server memory <= 1 MB; the closest is \S+ with server memory \d+ MB", env["data"]["summary"])
    _, journal = _journal(out)
    assert all(m["memory_mb"] > 1 for m in journal if m["status"] == "ok")
    html = (out / "report.html").read_text()
    assert "server memory MB" in html and "no: server memory" in html


def test_the_ci_gate_compares_a_request_rate_record_at_its_offered_rate(cli, server, tmp_path):
    record = tmp_path / "tune-record.json"
    record.write_text(json.dumps({"schema": RECORD_SCHEMA, "model": "mlp",
                                  "objective": {"kind": "throughput", "percentile": "p99", "budget_ms": 1000.0},
                                  "winner": {"setting": "i1_b8_db_d0", "throughput": 1e9, "latency_ms": 1e-6,
                                             "concurrency": None, "request_rate": 50.0}}))
    # windows long enough for a stable average latency under Poisson bursts on two shared cores
    args = ("perf", "mlp", "--url", server.http_url, "--grpc-url", server.grpc_url, "--measurement-interval", "1000",
            "--stability-percentage", "100", "--max-trials", "10", "--output-dir", tmp_path / "perf",
            "--baseline", record)
    code, _, err = cli(*args, "--request-rate", "50")
    assert code == 7, err
    assert "p99 at request rate 50/s rose" in err and "throughput within p99 <= 1000 ms dropped" in err
    code, _, err = cli(*args, "--concurrency", "1")  # a concurrency sweep has no point at the record's rate
    assert code == 7 and "p99 at" not in err, err


def test_a_memory_limit_for_a_server_elsewhere_is_refused_before_anything_runs(cli, tmp_path):
    code, _, err = cli("tune", "mlp", "--url", "10.255.255.1:8000", "--max-memory-mb", "100", "--output-dir",
                       tmp_path / "out")
    assert code == 2 and "cannot be measured: it is not on this machine" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU server loads KIND_GPU candidates")
def test_instance_kind_gpu_on_a_server_without_gpus_says_the_server_refused_it(cli, server, tmp_path):
    before = _served_config(server)
    code, _, err = cli(*_on(server, _readme_example("--instance-kind"), tmp_path, "--concurrency", "1",
                            "--output-dir", tmp_path / "out"))
    assert code == 1, err
    assert "no candidate was measured successfully (g1_b8_db_d0_p8: the server refused this config:" in err
    _, journal = _journal(tmp_path / "out")
    assert journal and all(c["kind"] == "gpu" for m in journal for c in m["candidates"].values())
    assert _served_config(server) == before  # the refused load left the original config serving


@pytest.mark.gpu
def test_instance_kind_gpu_loads_kind_gpu_candidates_on_a_gpu_server(cli, server, tmp_path):
    before = _served_config(server)
    out = tmp_path / "out"
    code, stdout, err = cli(*_on(server, _readme_example("--instance-kind"), tmp_path, "--concurrency", "1",
                                 "--output-dir", out, "--json"))
    assert code == 0, err
    data = json.loads(stdout)["data"]
    assert data["winner"]["mlp"]["kind"] == "gpu"
    _, journal = _journal(out)
    assert any(m["status"] == "ok" for m in journal)  # the server loaded and served a KIND_GPU candidate
    assert all(c["kind"] == "gpu" for m in journal for c in m["candidates"].values())
    assert _served_config(server) == before
