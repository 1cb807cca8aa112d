"""The deploy record: one JSON object per line, appended for every roll-out and roll-back, in a
hidden file at the root of the target repository (Triton only treats directories as models)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tritonops.errors import RepositoryError
from tritonops.paths import read_text

RECORD_NAME = ".tritonops-deploys.jsonl"
RECORD_SCHEMA = "tritonops.deploy.record/1"


def record_path(target: Path) -> Path:
    return target / RECORD_NAME


def append_record(target: Path, entry: dict[str, Any]) -> Path:
    path = record_path(target)
    line = json.dumps({"schema": RECORD_SCHEMA, **entry}, sort_keys=False, default=str)
    try:
        with path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise RepositoryError(f"cannot write the deploy record {path}: {e.strerror or e}",
                              "check that the target repository is writable") from None
    return path


def read_records(target: Path) -> Iterator[dict[str, Any]]:
    path = record_path(target)
    if not path.exists():
        return
    for number, line in enumerate(read_text(path, "deploy record").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise RepositoryError(f"{path}:{number} is not valid JSON",
                                  "the record is append-only: restore the line from a backup or remove it"
                                  ) from None
        if isinstance(entry, dict) and entry.get("schema") == RECORD_SCHEMA:
            yield entry
