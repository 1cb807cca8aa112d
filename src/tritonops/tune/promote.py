"""``--promote``: the winner written as the model's ``config.pbtxt``, with a provenance record.

The repository's own ``config.pbtxt`` (not the server's auto-completed view) gets the winner's
fields, through protobuf. The previous config is kept beside it as ``tune-previous.config.pbtxt``,
the record as ``tune-record.json`` (objective, budget, the winner's numbers, the journal, hardware,
Triton and tritonops versions, sha256 of every model file); config.pbtxt is replaced last, each file
with one atomic rename (repository.write_atomic). ``tritonops check`` runs on the result before the
old config is replaced: a promoted config that Triton would refuse is never written.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tritonops import __version__
from tritonops.check import check_spec
from tritonops.errors import RepositoryError, UsageError
from tritonops.pbtxt import config_to_text, read_config
from tritonops.repository import version_dirs, write_atomic
from tritonops.tune.space import Candidate, apply_candidate, machine_cpus

RECORD_NAME = "tune-record.json"
PREVIOUS_NAME = "tune-previous.config.pbtxt"
RECORD_SCHEMA = "tritonops.tune.record/1"


def model_file_digests(model_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in version_dirs(model_dir):
        for p in sorted((model_dir / str(v)).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(model_dir))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def hardware() -> dict[str, Any]:
    return {"machine": platform.machine(), "processor": platform.processor(), "cpus": machine_cpus(),
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def promote(repository: Path, winner: Mapping[str, Candidate], record: Mapping[str, Any]) -> dict[str, str]:
    """Write each model's winning config; returns model -> path of its record."""
    planned = []
    for name, cand in winner.items():
        model_dir = repository / name
        config_path = model_dir / "config.pbtxt"
        if not config_path.is_file():
            raise UsageError(f"cannot promote: {config_path} does not exist",
                             "promote into the repository the server was started with (--serve REPO)")
        old_text = config_path.read_text()
        new_cfg = apply_candidate(read_config(config_path), cand)
        findings = check_spec(new_cfg)
        if findings:
            raise RepositoryError(f"the winning config of '{name}' does not pass check: {findings[0]}",
                                  "the repository was left unchanged; report this as a tritonops bug")
        planned.append((name, model_dir, config_path, old_text, config_to_text(new_cfg), cand))
    paths = {}
    for name, model_dir, config_path, old_text, new_text, cand in planned:
        rec = {"schema": RECORD_SCHEMA, **record, "model": name, "candidate": cand.to_dict(),
               "model_files_sha256": model_file_digests(model_dir), "previous_config": PREVIOUS_NAME,
               "hardware": hardware(), "tritonops_version": __version__}
        try:
            write_atomic(model_dir / PREVIOUS_NAME, old_text)
            write_atomic(model_dir / RECORD_NAME, json.dumps(rec, indent=2, default=str) + "\n")
            write_atomic(config_path, new_text)  # last: the repository changes in this one rename
        except OSError as e:
            raise RepositoryError(f"cannot write the promoted config of '{name}': {e.strerror or e}",
                                  "check the repository's permissions") from None
        paths[name] = str((model_dir / RECORD_NAME).absolute())
    return paths
