"""A real tritonserver (the one in the nvidia-pytriton wheel) in explicit model-control mode for the
deploy tests, bound to 127.0.0.1 on free ports.

Stop-gap until the `server` branch's TritonServer lands: the deploy tests need only start/stop,
the URLs and the log. Nothing here is mocked: real server, real HTTP and gRPC."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _backends(root: Path) -> Path:
    import pytriton

    pt = Path(pytriton.__file__).parent / "tritonserver"
    backends = root / "backends"
    shutil.copytree(pt / "backends" / "python", backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
    stub = pt / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub"
    shutil.copy2(stub, backends / "python" / stub.name)
    shutil.copytree(HERE / "deploy_backend" / "onnxruntime", backends / "onnxruntime",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, backends / "onnxruntime" / stub.name)
    return backends


@dataclass
class Server:
    http_url: str
    grpc_url: str
    http_port: int
    grpc_port: int
    log: Path
    proc: subprocess.Popen

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@contextlib.contextmanager
def triton(repository: Path, work: Path, *extra: str, mode: str = "explicit") -> Iterator[Server]:
    import pytriton

    pt = Path(pytriton.__file__).parent
    libs = [str(pt.parent / "nvidia_pytriton.libs"), str(sysconfig.get_config_var("LIBDIR"))]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")])
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "tritonserver.log"
    cmd = [str(pt / "tritonserver" / "bin" / "tritonserver"), f"--model-repository={repository}",
           f"--backend-directory={_backends(work)}", f"--model-control-mode={mode}",
           "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", f"--http-port={http}", f"--grpc-port={grpc}",
           f"--metrics-port={metrics}", "--allow-gpu-metrics=false", "--exit-on-error=false", *extra]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", http, grpc, log, proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {proc.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://{server.http_url}/v2/health/live", timeout=1) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"tritonserver did not come up:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
