"""Environment checks: is everything the README's set-up installs actually usable here?"""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tritonops.errors import TritonOpsError
from tritonops.external import run_tool
from tritonops.perf.analyzer import library_hint, perf_analyzer_env, perf_analyzer_path
from tritonops.progress import Progress, reporter
from tritonops.server import find_tritonserver

SCHEMA = "tritonops.doctor/1"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    optional: bool = False


@dataclass(frozen=True)
class DoctorReport:
    """Every check; ``ok`` unless a required one failed (optional ones only warn)."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok or c.optional for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "checks": [c.__dict__ for c in self.checks]}


def _module(name: str, optional: bool = False, purpose: str = "") -> Check:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return Check(name, False, f"not installed{' (' + purpose + ')' if purpose else ''}", optional)
    dist = {"onnxruntime": "onnxruntime", "tritonclient": "tritonclient", "torch": "torch"}.get(name, name)
    try:
        return Check(name, True, version(dist), optional)
    except PackageNotFoundError:
        return Check(name, True, "installed", optional)


def run_doctor(progress: Progress | None = None) -> DoctorReport:
    say = reporter(progress)
    say("checking Python packages")
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
    say("looking for tritonserver")
    try:
        binary = find_tritonserver()
        checks.append(Check("tritonserver", True, str(binary)))
    except Exception as e:
        checks.append(Check("tritonserver", False, str(e)))
    say("looking for perf_analyzer")
    pa = perf_analyzer_path()
    if pa is None:
        checks.append(Check("perf_analyzer", False, "not found (pip install 'tritonops[perf]')", optional=True))
    else:
        try:
            run = run_tool([pa, "--version"], env=perf_analyzer_env(), timeout_s=30, check=False)
            missing = "error while loading shared libraries" in run.output
            detail = (run.output.strip().splitlines() or [""])[0]
            if missing:
                detail += f" ({library_hint(run.output)})"
            checks.append(Check("perf_analyzer", not missing, detail if missing else str(pa), optional=True))
        except TritonOpsError as e:
            checks.append(Check("perf_analyzer", False, str(e), optional=True))
    return DoctorReport(tuple(checks))
