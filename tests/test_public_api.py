"""The public surface: ``tritonops.__all__`` resolves, ``__version__`` is the package's, and every module
of the package imports on its own (an import cycle shows up as an ImportError when the wrong module
is imported first)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tritonops

SRC = Path(tritonops.__file__).parent
ROOT = SRC.parent.parent


def _modules() -> list[str]:
    names = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC.parent)
        if rel.parts[1] in {"backends", "templates"} or p.name == "__main__.py":
            continue  # backends run inside Triton's Python stub, not in this interpreter
        names.append(".".join(rel.with_suffix("").parts).removesuffix(".__init__"))
    return names


def test_every_public_name_resolves():
    assert "validate" in tritonops.__all__ and "build" in tritonops.__all__
    for name in tritonops.__all__:
        assert getattr(tritonops, name) is not None, name
    assert set(tritonops.__all__) <= set(dir(tritonops))


def test_version_is_the_package_version():
    m = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert m is not None and tritonops.__version__ == m.group(1)


def test_every_module_imports_on_its_own():
    """Each module in a fresh set of tritonops modules (third-party imports stay cached, for speed)."""
    script = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m == "tritonops" or m.startswith("tritonops.")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    modules = _modules()
    assert len(modules) > 40
    proc = subprocess.run([sys.executable, "-c", script, *modules], check=False, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
