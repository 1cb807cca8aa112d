from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and directory under root with a hash of its bytes: 'byte-for-byte unchanged'."""
    result: dict[str, str] = {}
    if not root.exists():
        return result
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        result[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return result


@pytest.fixture
def digest():
    return tree_digest


@pytest.fixture
def mlp_onnx(tmp_path: Path) -> Path:
    import onnx_models

    return onnx_models.mlp(tmp_path / "src" / "mlp.onnx")


@pytest.fixture
def cli(capsys):
    """Run the real CLI entry point in-process; returns (exit_code, stdout, stderr)."""
    from tritonops.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
