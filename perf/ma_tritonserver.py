"""The ``tritonserver`` Model Analyzer launches in local mode (perf/bench_tune.py): tritonops' own server.

Model Analyzer runs ``triton_server_path --model-repository=R --http-port=P ... --model-control-mode=explicit``
and stops it with SIGTERM. This program takes those arguments and serves through ``tritonops.server.serve``,
so the server Model Analyzer measures has exactly the environment, backend directory (the Python-based
onnxruntime backend) and bind address that tritonops' own runs get, with no second copy of that set-up.
Flags it does not know are passed on to tritonserver unchanged.

Started by the shell wrapper that perf/ma_peer.py writes (it sets PYTHONPATH and the interpreter).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tritonops.errors import TritonOpsError
from tritonops.server import ServerOptions, TritonServer, serve


def _stop_when_orphaned() -> None:
    """Model Analyzer killed with SIGKILL cannot send SIGTERM: then the new parent is init, and this stops."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ma_tritonserver", allow_abbrev=False)
    ap.add_argument("--model-repository", type=Path, required=True)
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--grpc-port", type=int, default=0)
    ap.add_argument("--metrics-port", type=int, default=0)
    ap.add_argument("--model-control-mode", default="explicit")
    known, rest = ap.parse_known_args(argv)
    if known.model_control_mode != "explicit":
        print(f"ma_tritonserver: model control mode '{known.model_control_mode}' is not supported", file=sys.stderr)
        return 2
    log_dir = os.environ.get("BENCH_MA_SERVER_LOGS")
    log_file = Path(log_dir) / f"tritonserver-{os.getpid()}.log" if log_dir else None
    options = ServerOptions(repository=known.model_repository, http_port=known.http_port,
                            grpc_port=known.grpc_port, metrics_port=known.metrics_port, explicit=True,
                            extra_args=tuple(rest), log_file=log_file)
    _stop_when_orphaned()

    def ready(server: TritonServer) -> None:
        print(f"ma_tritonserver: tritonserver pid {server.pid} ready on {server.http_url} (log {server.log_path}); "
              f"passed on: {' '.join(rest) or 'nothing'}", flush=True)

    try:
        return serve(options, ready)
    except TritonOpsError as e:
        print(f"ma_tritonserver: {e}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
