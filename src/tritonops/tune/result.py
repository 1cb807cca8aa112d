"""The result of ``tritonops tune`` (what ``--json`` prints and the report shows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonops.tune.objective import Ranking
from tritonops.tune.space import Candidate, ModelSpace

SCHEMA = "tritonops.tune/1"


@dataclass(frozen=True)
class TuneResult:
    model: str
    strategy: str
    ranking: Ranking
    winner: dict[str, Candidate]
    start: dict[str, Candidate]
    start_key: str
    spaces: dict[str, ModelSpace]
    measurements: tuple[dict[str, Any], ...]
    measured: int
    reused: int
    output_dir: Path
    files: dict[str, str]
    interrupted: bool = False
    restore_failed: tuple[str, ...] = ()
    promoted: dict[str, str] = field(default_factory=dict)
    server_version: str = ""
    wall_s: float = 0.0
    ensemble_steps: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)  # setting -> {model: candidate}

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.ranking.met and not self.restore_failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "model": self.model, "strategy": self.strategy, "interrupted": self.interrupted,
            "summary": self.ranking.summary(), "met_budget": self.ranking.met,
            "winner": {m: c.to_dict() for m, c in self.winner.items()},
            "start": {m: c.to_dict() for m, c in self.start.items()}, "start_key": self.start_key,
            "ranking": self.ranking.to_dict(), "ensemble_steps": list(self.ensemble_steps),
            "spaces": {m: s.to_dict() for m, s in self.spaces.items()},
            "measurements": {"new": self.measured, "reused": self.reused, "total": len(self.measurements)},
            "journal": list(self.measurements), "restore_failed": list(self.restore_failed),
            "promoted": self.promoted, "server_version": self.server_version, "wall_s": round(self.wall_s, 1),
            "settings": self.settings, "candidates": self.candidates, "files": self.files,
            "output_dir": str(self.output_dir),
        }


