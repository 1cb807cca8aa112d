"""Environment checks: is everything the README's set-up installs actually usable here?"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    optional: bool = False


def _module(name: str, optional: bool = False, purpose: str = "") -> Check:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return Check(name, False, f"not installed{' (' + purpose + ')' if purpose else ''}", optional)
    from importlib.metadata import PackageNotFoundError, version

    dist = {"onnxruntime": "onnxruntime", "tritonclient": "tritonclient", "torch": "torch"}.get(name, name)
    try:
        return Check(name, True, version(dist), optional)
    except PackageNotFoundError:
        return Check(name, True, "installed", optional)


def perf_analyzer_path() -> Path | None:
    candidate = Path(sys.executable).parent / "perf_analyzer"
    if candidate.exists():
        return candidate
    found = shutil.which("perf_analyzer")
    return Path(found) if found else None


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer from tritonclient 2.50 needs libcudart.so.12 (nvidia-cuda-runtime-cu12)."""
    env = dict(os.environ)
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    dirs = []
    if spec is not None and spec.submodule_search_locations:
        dirs.append(str(Path(next(iter(spec.submodule_search_locations))) / "lib"))
    if env.get("LD_LIBRARY_PATH"):
        dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dirs)
    return env


def run_doctor() -> list[Check]:
    checks = [
        Check("python", True, f"{sys.version.split()[0]} at {sys.executable}"),
        _module("tritonclient"),
        _module("onnx"),
        _module("onnxruntime"),
        _module("torch", optional=True, purpose="PyTorch conversion: pip install 'tritonops[torch]'"),
    ]
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    libpython = Path(libdir) / ldlib
    checks.append(Check("libpython", (libpython.exists() and ldlib.endswith(".so")) or libpython.suffix == ".so",
                        str(libpython) if libpython.exists()
                        else f"{libpython} missing (the Python backend stub needs it)"))
    try:
        from tritonops.server import find_tritonserver

        binary = find_tritonserver()
        checks.append(Check("tritonserver", True, str(binary)))
    except Exception as e:
        checks.append(Check("tritonserver", False, str(e)))
    pa = perf_analyzer_path()
    if pa is None:
        checks.append(Check("perf_analyzer", False, "not found (pip install 'tritonops[perf]')", optional=True))
    else:
        try:
            proc = subprocess.run([str(pa), "--version"], capture_output=True, text=True, timeout=30,
                                  env=perf_analyzer_env(), check=False)
            text = (proc.stdout + proc.stderr).strip()
            missing = "error while loading shared libraries" in text
            checks.append(Check("perf_analyzer", not missing,
                                text.splitlines()[0] if missing else str(pa), optional=True))
        except (OSError, subprocess.TimeoutExpired) as e:
            checks.append(Check("perf_analyzer", False, str(e), optional=True))
    return checks
