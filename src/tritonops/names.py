"""Validation of user-given model names and paths (security: no path escapes from a repository)."""

from __future__ import annotations

import re
from pathlib import Path

from tritonops.errors import UsageError

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def check_model_name(name: str) -> str:
    """A model name becomes a directory name: letters, digits, '_', '-', '.' only, no '..'."""
    if not name:
        raise UsageError("model name is empty", "give one with --name NAME")
    if "/" in name or "\\" in name or ".." in name or not _NAME.match(name):
        raise UsageError(
            f"invalid model name '{name}': use letters, digits, '_', '-' and '.', without '/', '..' or spaces",
            "choose another name with --name, e.g. --name my_model",
        )
    return name


def inside(root: Path, relative: str, what: str) -> Path:
    """Resolve ``relative`` under ``root``, refusing absolute paths and escapes via '..' or symlinks."""
    if Path(relative).is_absolute():
        raise UsageError(f"{what} '{relative}' is an absolute path", f"give a path relative to {root}")
    target = (root / relative).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise UsageError(f"{what} '{relative}' points outside {root}", "remove '..' from the path")
    return target
