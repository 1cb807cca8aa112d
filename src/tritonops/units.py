"""Sizes given on the command line or in files: one parser for every option that takes one."""

from __future__ import annotations

import re

from tritonops.errors import UsageError


def parse_size(text: str) -> int:
    """``4MB``, ``64MiB``, ``512k``, ``1048576`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*", text.lower())
    if not m:
        raise UsageError(f"cannot parse size '{text}'", "write it as bytes or with a unit, e.g. 4MB or 64MiB")
    unit = m.group(2).rstrip("b").rstrip("i")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    return int(float(m.group(1)) * scale)
