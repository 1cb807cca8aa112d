"""Soak test (issue 14; not part of the unit suite): N minutes of mixed load against ``tritonops serve``
while models are rolled out and back, and a client is SIGKILLed every minute.

    python perf/soak.py --minutes 30            # the full run
    python perf/soak.py --minutes 3             # a check that it works

Load: one HTTP client, one gRPC client and one HTTP client that passes tensors through system shared
memory, each a separate process sending to the served model in a loop (their counts are flushed to a
file every second, so a client killed mid-run keeps what it sent). Every ``--deploy-every`` seconds it
runs ``tritonops deploy NEXT --to SERVED`` and then ``tritonops deploy --rollback --to SERVED`` into the
served repository. Every minute one of the HTTP/gRPC clients is SIGKILLed and a new one started.

Reports: requests sent and failed (failures: any error answer while the server was up), deploy and
rollback exit codes, the tritonserver's RSS at start and end, and after the server stopped: leftover
tritonserver / Python backend stub processes and /dev/shm files the run created. Exit 0 only if nothing
failed and nothing was left.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, wide_mlp

from tritonops.tune.memory import rss_kb

MODEL = "soak_mlp"
WIDTH = 64


def _procs() -> dict[int, str]:
    found = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                found[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return found


def _ours(work: Path) -> dict[int, str]:
    """tritonserver and stub processes of this run: their command line or environment names ``work``
    (the stubs inherit TRITONOPS_MODEL_REPOSITORIES), so other servers on the machine do not count."""
    found = {}
    for pid, cmd in _procs().items():
        if "tritonserver" not in cmd and "triton_python_backend_stub" not in cmd:
            continue
        env = b""
        with contextlib.suppress(OSError):
            env = Path(f"/proc/{pid}/environ").read_bytes()
        if str(work) in cmd or str(work).encode() in env:
            found[pid] = cmd
    return found


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


# ------------------------------------------------------------------------------------------- clients
def worker(kind: str, http: str, grpc: str, counts: Path) -> None:
    """One client process: infer in a loop, flush (sent, failed, last error) to ``counts`` every second."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    x = np.random.default_rng(os.getpid()).standard_normal((1, WIDTH)).astype(np.float32)
    sent = failed = 0
    last_error = ""
    shm = None
    if kind == "grpc":
        client = grpcclient.InferenceServerClient(grpc)
        mod = grpcclient
    else:
        client = httpclient.InferenceServerClient(http)
        mod = httpclient
    if kind == "shm":
        import tritonclient.utils.shared_memory as shmlib

        key = f"/soak_{os.getpid()}"
        shm = shmlib.create_shared_memory_region(f"soak_in_{os.getpid()}", key, x.nbytes)
        shmlib.set_shared_memory_region(shm, [x])
        client.register_system_shared_memory(f"soak_in_{os.getpid()}", key, x.nbytes)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    flushed = time.monotonic()
    while not stop:
        inp = mod.InferInput("x", list(x.shape), "FP32")
        if shm is not None:
            inp.set_shared_memory(f"soak_in_{os.getpid()}", x.nbytes)
        else:
            inp.set_data_from_numpy(x)
        try:
            client.infer(MODEL, [inp])
        except Exception as e:
            failed += 1
            last_error = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        sent += 1
        if time.monotonic() - flushed >= 1:
            tmp = counts.with_suffix(".tmp")
            tmp.write_text(json.dumps({"sent": sent, "failed": failed, "last_error": last_error}))
            tmp.replace(counts)
            flushed = time.monotonic()
    if shm is not None:
        import tritonclient.utils.shared_memory as shmlib

        client.unregister_system_shared_memory(f"soak_in_{os.getpid()}")
        shmlib.destroy_shared_memory_region(shm)
    counts.with_suffix(".tmp").write_text(json.dumps({"sent": sent, "failed": failed, "last_error": last_error}))
    counts.with_suffix(".tmp").replace(counts)
    client.close()


def _start_worker(kind: str, http: str, grpc: str, work: Path, n: int) -> tuple[subprocess.Popen[bytes], Path]:
    counts = work / "counts" / f"{kind}-{n}.json"
    counts.parent.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, "--http", http, "--grpc", grpc,
                             "--counts", str(counts)])
    return proc, counts


# ------------------------------------------------------------------------------------------- the run
def _tritonops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tritonops", *args], capture_output=True, text=True, check=False)


def soak(minutes: float, work: Path, deploy_every: float, port: int) -> dict[str, object]:
    from tritonops.build import BuildOptions, build

    served, nxt = work / "served", work / "next"
    build(BuildOptions(source=str(wide_mlp(work / "v1.onnx", WIDTH, 256, seed=0)), repository=served, name=MODEL,
                       max_batch_size=8))
    build(BuildOptions(source=str(wide_mlp(work / "v2.onnx", WIDTH, 256, seed=1)), repository=nxt, name=MODEL,
                       max_batch_size=8))
    shm_before = {p.name for p in Path("/dev/shm").iterdir()}
    procs_before = set(_procs())
    http, grpc = f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"
    log = (work / "serve.log").open("w")
    serve = subprocess.Popen([sys.executable, "-m", "tritonops", "serve", str(served), "--explicit", "--load-model",
                              MODEL, "--http-port", str(port), "--grpc-port", str(port + 1), "--metrics-port",
                              str(port + 2)], stdout=log, stderr=subprocess.STDOUT)
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if client.is_model_ready(MODEL):
                break
        except Exception:  # noqa: S110 - not up yet
            pass
        time.sleep(0.5)
    else:
        serve.kill()
        raise SystemExit("the server did not become ready; see " + str(work / "serve.log"))
    server_pid = next((c for c in _children(serve.pid) if "tritonserver" in _procs().get(c, "")), None)
    rss_start = rss_kb(server_pid) if server_pid else None
    workers = {}
    for n, kind in enumerate(("http", "grpc", "shm")):
        workers[kind] = _start_worker(kind, http, grpc, work, n)
    counts_files = [w[1] for w in workers.values()]
    deploys: list[dict[str, object]] = []
    kills = 0
    t0 = time.monotonic()
    next_deploy, next_kill = t0 + deploy_every, t0 + 60
    end = t0 + minutes * 60
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_kill:
            kind = ("http", "grpc")[kills % 2]
            proc, _ = workers[kind]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            workers[kind] = _start_worker(kind, http, grpc, work, 10 + kills)
            counts_files.append(workers[kind][1])
            next_kill += 60
        if now >= next_deploy:
            for args in ((str(nxt), "--to", str(served)), ("--rollback", "--to", str(served))):
                r = _tritonops("deploy", *args, "--url", "127.0.0.1", "--http-port", str(port),
                               "--grpc-port", str(port + 1))
                deploys.append({"action": "rollback" if "--rollback" in args else "deploy", "exit_code": r.returncode,
                                "error": r.stderr.strip().splitlines()[0] if r.returncode and r.stderr.strip() else ""})
            next_deploy += deploy_every
        time.sleep(0.5)
    rss_end = rss_kb(server_pid) if server_pid else None
    shm_names = {p.name for p in Path("/dev/shm").iterdir()}
    ours_running = _ours(work)
    our_shm = {w for cmd in ours_running.values() for w in cmd.split() if w.lstrip("/") in shm_names}
    for proc, _ in workers.values():
        proc.send_signal(signal.SIGTERM)
    for proc, _ in workers.values():
        proc.wait(timeout=60)
    serve.send_signal(signal.SIGINT)
    serve.wait(timeout=120)
    client.close()
    time.sleep(5)  # let the stubs the server stopped go
    sent = failed = 0
    errors = set()
    for f in counts_files:
        if f.exists():
            c = json.loads(f.read_text())
            sent += c["sent"]
            failed += c["failed"]
            if c["last_error"]:
                errors.add(c["last_error"])
    leftover_procs = {p: c for p, c in _ours(work).items() if p not in procs_before}
    now_shm = {p.name for p in Path("/dev/shm").iterdir()}
    leftover_shm = sorted({n.lstrip("/") for n in our_shm} & now_shm
                          | {n for n in now_shm - shm_before if n.startswith("soak_")})
    return {
        "minutes": minutes, "machine": machine(), "requests_sent": sent, "requests_failed": failed,
        "errors": sorted(errors), "clients_sigkilled": kills, "deploys": deploys,
        "deploys_ok": sum(1 for d in deploys if d["exit_code"] == 0), "server_rss_kb_start": rss_start,
        "server_rss_kb_end": rss_end, "server_processes_at_end": len(ours_running),
        "server_shm_regions_at_end": sorted(our_shm), "leftover_processes": leftover_procs,
        "leftover_shm_files": leftover_shm,
        "serve_exit_code": serve.returncode,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--deploy-every", type=float, default=30.0, help="seconds between deploy+rollback rounds")
    ap.add_argument("--port", type=int, default=18700, help="HTTP port; gRPC and metrics take the next two")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--worker", choices=("http", "grpc", "shm"), help=argparse.SUPPRESS)
    ap.add_argument("--http", help=argparse.SUPPRESS)
    ap.add_argument("--grpc", help=argparse.SUPPRESS)
    ap.add_argument("--counts", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.http, a.grpc, a.counts)
        return 0
    work = a.workdir or Path(tempfile.mkdtemp(prefix="tritonops-soak-"))
    report = soak(a.minutes, work, a.deploy_every, a.port)
    print(json.dumps(report, indent=2))
    ok = (report["requests_failed"] == 0 and not report["leftover_processes"] and not report["leftover_shm_files"]
          and report["deploys_ok"] == len(report["deploys"]))  # type: ignore[arg-type]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
