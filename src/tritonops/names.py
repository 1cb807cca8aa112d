"""The one rule for model names (security: a name becomes a directory, so it may not escape the
repository, and it is printed, so it may not forge lines of output).

``check_model_name`` is what build, check and deploy apply to a model's name; it is stricter than
``paths.check_name`` (which only asks for one plain path component): Triton and the manifests
also need a name without spaces, colons or quotes."""

from __future__ import annotations

import re

from tritonops.errors import UsageError
from tritonops.paths import shown

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
NAME_RULE = "use letters, digits, '_', '-' and '.', without '/', '..' or spaces"


def check_model_name(name: str) -> str:
    """A model name becomes a directory name: letters, digits, '_', '-', '.' only, no '..'."""
    if not name:
        raise UsageError("model name is empty", "give one with --name NAME")
    if "/" in name or "\\" in name or ".." in name or not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid model name {shown(name)}: {NAME_RULE}",
            "choose another name with --name, e.g. --name my_model",
        )
    return name
