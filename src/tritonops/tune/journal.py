"""The search journal: one JSON line per finished measurement, appended (and flushed) as it finishes.

The first line is the header: the options of the run and the fingerprint of its space and
objective. ``--resume DIR`` reads the header back (so it needs no other option), refuses a journal
of another model, space or load mode (concurrencies or request rates), and hands the search every
measurement already made, so none is repeated.
A line cut short by a crash is ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonops.errors import UsageError
from tritonops.tune.measure import Measurement

JOURNAL_NAME = "journal.jsonl"
SCHEMA = "tritonops.tune.journal/1"
LOAD_WORDS = {"concurrency": "concurrencies (--concurrency)", "request_rate": "request rates (--request-rate)"}


@dataclass
class Journal:
    path: Path
    header: dict[str, Any]
    measurements: dict[tuple[str, float, int], Measurement] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # setting key -> {model: candidate}

    def get(self, key: tuple[str, float, int]) -> Measurement | None:
        return self.measurements.get(key)

    def append(self, m: Measurement, candidates: Mapping[str, Any]) -> None:
        self.measurements[m.key] = m
        self.settings[m.setting] = dict(candidates)
        self._write({"type": "measurement", "candidates": dict(candidates), **m.to_dict()})

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def __iter__(self) -> Iterator[Measurement]:
        return iter(self.measurements.values())


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a run killed mid-write
        if isinstance(rec, dict):
            out.append(rec)
    return out


def read_header(directory: Path) -> dict[str, Any]:
    path = directory / JOURNAL_NAME
    if not path.is_file():
        raise UsageError(f"no tune journal in {directory} (no {JOURNAL_NAME})",
                         "give the output directory of an earlier tune run, e.g. --resume out/tune/mlp")
    recs = _records(path)
    if not recs or recs[0].get("type") != "header" or recs[0].get("schema") != SCHEMA:
        raise UsageError(f"{path} is not a tritonops tune journal", "give the output directory of a tune run")
    return recs[0]


def new_journal(directory: Path, header: dict[str, Any]) -> Journal:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / JOURNAL_NAME
    if path.exists():
        raise UsageError(f"{directory} already holds a tune journal",
                         f"continue it with --resume {directory}, or give another --output-dir")
    j = Journal(path, {"type": "header", "schema": SCHEMA, **header})
    j._write(j.header)
    return j


def resume_journal(directory: Path, header: dict[str, Any]) -> Journal:
    """The journal of ``directory``, checked against what this run would measure."""
    old = read_header(directory)
    if old.get("model") != header.get("model"):
        raise UsageError(f"the journal in {directory} is for model '{old.get('model')}', not '{header.get('model')}'",
                         "resume with the model it was started for, or start a new run in another --output-dir")
    old_mode, new_mode = old.get("load_mode", "concurrency"), header.get("load_mode", "concurrency")
    if old_mode != new_mode:
        raise UsageError(f"the journal in {directory} was measured at {LOAD_WORDS.get(old_mode, old_mode)}, not at "
                         f"{LOAD_WORDS.get(new_mode, new_mode)}",
                         f"resume without a load option (tritonops tune --resume {directory}: the journal names its "
                         "loads), or start a new run in another --output-dir")
    if old.get("fingerprint") != header.get("fingerprint"):
        raise UsageError(f"the journal in {directory} was measured over another search space or objective "
                         "(the model's config, the space file, the loads, the objective or its limits changed)",
                         "start a new run in another --output-dir")
    j = Journal(directory / JOURNAL_NAME, old)
    for rec in _records(j.path)[1:]:
        if rec.get("type") != "measurement":
            continue
        try:
            m = Measurement.from_dict(rec)
        except (TypeError, KeyError):
            continue
        j.measurements[m.key] = m
        j.settings[m.setting] = dict(rec.get("candidates", {}))
    return j
