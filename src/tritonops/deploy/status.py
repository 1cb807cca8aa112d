"""``tritonops deploy --status``: what is on disk, what the server serves, and the last recorded
action for each model of a target repository."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonops.deploy.control import check_target, connect, first_line
from tritonops.deploy.record import read_records, record_path
from tritonops.repository import version_dirs

STATUS_SCHEMA = "tritonops.deploy.status/1"


@dataclass(frozen=True)
class ModelStatusRow:
    name: str
    on_disk: tuple[int, ...]
    live: tuple[int, ...] | None  # None: the server was not asked or not reachable
    last_action: str | None
    last_time: str | None
    sha256: str | None
    validation_ok: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "on_disk": list(self.on_disk), "live": list(self.live) if self.live is not None
                else None, "last_action": self.last_action, "last_time": self.last_time, "sha256": self.sha256,
                "validation_ok": self.validation_ok}


@dataclass(frozen=True)
class DeployStatus:
    target: Path
    server: str | None
    server_error: str | None
    models: tuple[ModelStatusRow, ...]
    record: Path
    schema: str = STATUS_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "target": str(self.target), "server": self.server,
                "server_error": self.server_error, "record": str(self.record),
                "models": [m.to_dict() for m in self.models]}


def deploy_status(target: Path, http_url: str | None = None, admin_key: str | None = None,
                  grpc_url: str = "localhost:8001", timeout_s: float = 300.0) -> DeployStatus:
    """What is on disk, what the server serves, and the last recorded action for each model."""
    check_target(target)
    target = target.absolute()
    live: dict[str, list[int]] | None = None
    server_error = None
    if http_url is not None:
        client = connect(http_url, grpc_url, timeout_s, admin_key)
        try:
            live = client.live_versions()
        except Exception as e:
            server_error = first_line(e)
        finally:
            client.close()
    last: dict[str, dict[str, Any]] = {}
    for entry in read_records(target):
        for m in entry.get("models", []):
            if m.get("status") in ("deployed", "rolled-back"):
                last[m["name"]] = {"action": m["status"], "time": entry.get("started"), "sha256": m.get("sha256"),
                                   "validation_ok": (entry.get("validation") or {}).get("ok")}
    names = sorted({p.name for p in target.iterdir() if p.is_dir() and not p.name.startswith(".")} | set(last))
    rows = []
    for name in names:
        info = last.get(name, {})
        rows.append(ModelStatusRow(name, tuple(version_dirs(target / name)),
                                   tuple(live.get(name, [])) if live is not None else None,
                                   info.get("action"), info.get("time"), info.get("sha256"), info.get("validation_ok")))
    return DeployStatus(target, http_url, server_error, tuple(rows), record_path(target))
