"""Roll new model versions out to a running Triton (explicit model control) without failing a request.

Triton answers a request that names no version with the highest READY version of the model, whatever
the version policy says. Loading N+1 beside N would therefore move traffic to N+1 before anything
checked it. So a roll-out goes through a *candidate*:

1. plan (nothing written): which models changed, in dependency order (composing models before the
   ensembles that call them), their next version numbers, and every local check;
2. check the server: reachable over HTTP and gRPC, explicit model-control mode;
3. each changed model is staged as a separate model ``<name>.tritonops-candidate`` (ensembles point
   at the candidates of their changed steps), moved into the repository by one rename, and loaded;
4. the gate: ``validate`` over HTTP and gRPC with a reference comparison against the repository's
   artifact, plus ``--canary-requests`` more inferences; the candidates are then unloaded and removed;
5. the switch, per model in dependency order: the version directory N+1 is staged inside the model
   directory under a hidden non-numeric name (Triton ignores those) and renamed into place, the new
   config.pbtxt replaces the old one atomically, and the model is reloaded. Triton keeps serving N
   until N+1 is loaded, then swaps them without a gap (and keeps N if the reload fails);
6. a final validation of the live models at N+1.

On any failure the candidates are unloaded and removed, models already switched go back to N (config
restored, N+1 removed, reloaded), and the error says why. Every attempt is appended to the deploy
record. Earlier versions stay on disk, so ``--rollback`` can return to them."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from tritonops.check import LINK_FIX, check_repository
from tritonops.client import TritonClient
from tritonops.deploy.control import (
    check_target,
    cleanup_candidate,
    connect,
    copy_extras,
    copytree,
    first_line,
    preflight,
    remove_dir,
    stage,
)
from tritonops.deploy.gate import GateOptions, gate
from tritonops.deploy.inventory import file_hashes, read_inventory, tree_sha256
from tritonops.deploy.record import append_record, read_records, record_path
from tritonops.errors import TritonOpsError, UsageError, ValidationFailed
from tritonops.names import check_model_name
from tritonops.paths import escaping_symlinks, link_problem, shown
from tritonops.pbtxt import ModelConfig, config_to_text, parse_config_text, read_config_text
from tritonops.progress import Progress, reporter
from tritonops.repository import MAX_VERSION, check_writable, parse_version, version_dirs, write_atomic
from tritonops.validate import ValidateOptions

SCHEMA = "tritonops.deploy.rollout/1"
CANDIDATE_SUFFIX = ".tritonops-candidate"
ModelStatus = Literal["deployed", "unchanged", "failed", "reverted", "rolled-back", "not-attempted"]


class DeployFailed(ValidationFailed):
    """The roll-out did not happen; the previous versions keep serving. ``result`` says what was tried."""

    def __init__(self, message: str, hint: str, result: RolloutResult) -> None:
        super().__init__(message, hint)
        self.result = result


@dataclass(frozen=True)
class RolloutOptions:
    target: Path  # the server's model repository
    source: Path | None = None  # the repository with the new versions (None for a roll-back)
    http_url: str = "localhost:8000"
    grpc_url: str = "localhost:8001"
    models: tuple[str, ...] = ()  # empty: every model of the source
    canary_requests: int = 0
    timeout_s: float = 300.0  # for each load and for the validation calls
    atol: float = 1e-4
    rtol: float = 1e-3
    admin_key: str | None = None  # for servers that restrict the model-repository API (triton-admin-key)

    def __post_init__(self) -> None:
        ValidateOptions(http_url=self.http_url, grpc_url=self.grpc_url)  # same endpoint rules as validate
        for m in self.models:
            check_model_name(m)
        if self.canary_requests < 0:
            raise UsageError("--canary-requests must be 0 or more", "e.g. --canary-requests 50")
        if self.timeout_s <= 0:
            raise UsageError("--timeout must be positive", "e.g. --timeout 300")


@dataclass(frozen=True)
class ModelRollout:
    name: str
    status: ModelStatus
    from_version: int | None
    to_version: int | None
    sha256: str = ""  # digest of the new version's files
    files: Mapping[str, str] = field(default_factory=dict)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "from_version": self.from_version,
                "to_version": self.to_version, "sha256": self.sha256, "files": dict(self.files),
                "detail": self.detail}


@dataclass(frozen=True)
class RolloutResult:
    action: Literal["deploy", "rollback"]
    ok: bool
    target: Path
    source: Path | None
    server: str
    models: tuple[ModelRollout, ...]
    reason: str | None
    validation: Mapping[str, Any] | None
    record: Path
    started: str
    seconds: float
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "action": self.action, "ok": self.ok, "target": str(self.target),
                "source": str(self.source) if self.source else None, "server": self.server,
                "models": [m.to_dict() for m in self.models], "reason": self.reason,
                "validation": dict(self.validation) if self.validation else None, "record": str(self.record),
                "started": self.started, "seconds": round(self.seconds, 3)}


def _connect(opts: RolloutOptions) -> TritonClient:
    return connect(opts.http_url, opts.grpc_url, opts.timeout_s, opts.admin_key)


def _gate_options(opts: RolloutOptions) -> GateOptions:
    return GateOptions(opts.http_url, opts.grpc_url, opts.target, opts.atol, opts.rtol, opts.timeout_s,
                       opts.canary_requests)


# ------------------------------------------------------------------------------------------ planning
@dataclass
class _Plan:
    name: str
    source_dir: Path
    source_version: int
    config: ModelConfig  # what the target gets (name set, version policy cleared: the newest serves)
    config_text: str
    files: dict[str, str]
    new_model: bool
    from_version: int | None  # the version live now (None: a new model or nothing loaded)
    to_version: int
    previous_config_text: str | None
    composing: tuple[str, ...]
    changed: bool = True
    # filled in while running
    switched: bool = False

    @property
    def candidate(self) -> str:
        return f"{self.name}{CANDIDATE_SUFFIX}"


def _signature(cfg: ModelConfig) -> tuple[Any, ...]:
    def tensors(ts: Any) -> tuple[Any, ...]:
        return tuple((t.name, t.data_type, tuple(t.dims)) for t in ts)

    return cfg.max_batch_size, tensors(cfg.input), tensors(cfg.output)


def _recorded_versions(target: Path) -> dict[str, int]:
    """The highest version number each model was ever deployed as (numbers are never reused)."""
    highest: dict[str, int] = {}
    for entry in read_records(target):
        for m in entry.get("models", []):
            v = m.get("to_version")
            if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_VERSION \
                    and entry.get("action") == "deploy":
                highest[m["name"]] = max(highest.get(m["name"], 0), v)
    return highest


def _plan(opts: RolloutOptions, live: Mapping[str, list[int]]) -> list[_Plan]:
    assert opts.source is not None
    links = escaping_symlinks(opts.source)
    if links:  # deploy copies files: a link out of the repository would arrive as a copy of its target
        rel = links[0].relative_to(opts.source).as_posix()
        raise UsageError(f"{shown(rel)} in the source repository {link_problem(links[0], opts.source)}: "
                         "deploy copies only files inside the repository", LINK_FIX)
    report = check_repository(opts.source)
    if not report.ok:
        raise UsageError(f"the source repository has {len(report.findings)} problem(s), first: "
                         f"{report.findings[0]}", f"fix them first; see: tritonops check {opts.source}")
    inv = read_inventory(opts.source)
    for m in opts.models:
        inv.model(m)
    order = inv.load_order(opts.models or None)
    recorded = _recorded_versions(opts.target)
    plans: list[_Plan] = []
    for name in order:
        info = inv.model(name)
        if not info.served_versions:
            raise UsageError(f"model '{name}' in {opts.source} has no version to deploy",
                             f"put its files in {name}/1/")
        src_v = info.served_versions[-1]
        src_dir = opts.source / name
        files = file_hashes(src_dir / str(src_v))
        cfg = ModelConfig()
        cfg.CopyFrom(info.config)
        cfg.name = name
        cfg.ClearField("version_policy")
        text = config_to_text(cfg)
        tgt_dir = opts.target / name
        if tgt_dir.exists():
            if not (tgt_dir / "config.pbtxt").exists():
                raise UsageError(f"{tgt_dir} has no config.pbtxt", "fix the target repository first")
            prev_text = read_config_text(tgt_dir / "config.pbtxt")
            prev = parse_config_text(prev_text, str(tgt_dir / "config.pbtxt"))
            if _signature(prev) != _signature(cfg):
                raise UsageError(
                    f"the new '{name}' changes its inputs, outputs or max_batch_size: clients of the live "
                    "version would break", f"deploy it under a new model name (a copy of {src_dir} with "
                    "another directory name)")
            extras_src = {p.name for p in src_dir.iterdir() if not p.name.isdigit() and p.name != "config.pbtxt"
                          and not p.name.startswith(".")}
            for extra in sorted(extras_src):
                a, b = src_dir / extra, tgt_dir / extra
                same = b.exists() and (file_hashes(a) == file_hashes(b) if a.is_dir()
                                       else b.is_file() and a.read_bytes() == b.read_bytes())
                if not same:
                    raise UsageError(f"{name}/{extra} differs from the target's: files beside config.pbtxt are "
                                     "shared by every version", "deploy it under a new model name")
            disk = version_dirs(tgt_dir)
            served = live.get(name, [])
            current = served[-1] if served else None
            to_v = parse_version(max([*disk, *served, recorded.get(name, 0)]) + 1, f"the next version of '{name}'")
            unchanged = (current is not None and prev_text == text
                         and (tgt_dir / str(current)).is_dir() and file_hashes(tgt_dir / str(current)) == files)
            plans.append(_Plan(name, src_dir, src_v, cfg, text, files, False, current,
                               current if unchanged and current is not None else to_v, prev_text,
                               info.composing, changed=not unchanged))
        else:
            plans.append(_Plan(name, src_dir, src_v, cfg, text, files, True, None, recorded.get(name, 0) + 1, None,
                               info.composing))
    return plans


# ------------------------------------------------------------------------------------------ roll-out
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def deploy_versions(opts: RolloutOptions, progress: Progress | None = None) -> RolloutResult:
    """Roll the source's models out to the server; raise :class:`DeployFailed` (after undoing) on failure."""
    say = reporter(progress)
    if opts.source is None:
        raise UsageError("no source repository given", "tritonops deploy model_repository/ --to DIR --url HOST")
    check_target(opts.target)
    target = opts.target.absolute()
    check_writable(target)
    if not opts.source.is_dir():
        raise UsageError(f"source repository '{opts.source}' is not a directory",
                         "give the repository with the new versions, e.g. model_repository/")
    opts = replace(opts, target=target, source=opts.source.absolute())
    started, t0 = _now(), time.monotonic()
    server = _connect(opts)
    try:
        say(f"checking {opts.http_url}")
        preflight(server)
        live = server.live_versions()
        plans = _plan(opts, live)
        for p in plans:
            if p.changed and not p.new_model:
                check_writable(target / p.name)
        changed = [p for p in plans if p.changed]
        if not changed:
            result = _result("deploy", True, opts, plans, None, None, started, t0)
            append_record(target, _record(result, plans))
            return result
        try:
            reason, hint, validation = _run(server, opts, plans, changed, say)
        except TritonOpsError as e:  # e.g. the gate could not run; _run has undone its changes
            reason, hint, validation = f"{e.message}; {_keeps_all(changed)}", e.hint or "see the server log", None
        result = _result("deploy", reason is None, opts, plans, reason, validation, started, t0)
        append_record(target, _record(result, plans))
        if reason is not None:
            raise DeployFailed(reason, hint, result)
        return result
    finally:
        server.close()


def _run(server: TritonClient, opts: RolloutOptions, plans: list[_Plan], changed: list[_Plan],
         say: Progress) -> tuple[str | None, str, Any]:
    target = opts.target
    created_dirs: list[Path] = []  # model directories this roll-out created (new models)
    candidates: list[_Plan] = []
    validation: Any = None
    try:
        # ---- candidates
        changed_names = {p.name for p in changed}
        for p in changed:
            model_dir = target / p.name
            if p.new_model:
                model_dir.mkdir()
                created_dirs.append(model_dir)
            cleanup_candidate(server, target / p.candidate, opts.timeout_s)
            cfg = ModelConfig()
            cfg.CopyFrom(p.config)
            cfg.name = p.candidate
            for step in cfg.ensemble_scheduling.step:
                if step.model_name in changed_names:
                    step.model_name = f"{step.model_name}{CANDIDATE_SUFFIX}"
            with stage(model_dir) as staged:
                root = staged / p.candidate
                copytree(p.source_dir / str(p.source_version), root / str(p.to_version))
                (root / "config.pbtxt").write_text(config_to_text(cfg))
                copy_extras(p.source_dir, root)
                os.replace(root, target / p.candidate)
            candidates.append(p)
        names_seen = {e.name for e in server.repository_index()}
        if changed[0].candidate not in names_seen:
            return (f"the server at {opts.http_url} does not serve {target}: a model put there does not appear in "
                    "its repository index", "give --to the directory the server was started with "
                    "(--model-repository)", None)
        for p in candidates:
            say(f"loading {p.candidate} (version {p.to_version})")
            try:
                server.load_model(p.candidate)
            except Exception as e:
                return (f"version {p.to_version} of '{p.name}' failed to load: {first_line(e)}; "
                        f"{_keeps_all(changed)}", "see the server log; `tritonops check` finds config mistakes",
                        None)
        # ---- the gate
        ok, why, validation = gate(_gate_options(opts), [p.candidate for p in candidates], say)
        if not ok:
            first = why.replace(CANDIDATE_SUFFIX, "")
            return (f"{_what(changed)} failed validation: {first}; {_keeps_all(changed)}",
                    "run `tritonops validate` on a server with the new repository to see every check", validation)
        for p in reversed(candidates):
            cleanup_candidate(server, target / p.candidate, opts.timeout_s)
        candidates.clear()
        # ---- the switch
        for p in changed:
            say(f"switching {p.name} to version {p.to_version}")
            model_dir = target / p.name
            with stage(model_dir) as staged:
                copytree(p.source_dir / str(p.source_version), staged / str(p.to_version))
                if p.new_model:
                    copy_extras(p.source_dir, model_dir)
                os.replace(staged / str(p.to_version), model_dir / str(p.to_version))
            write_atomic(model_dir / "config.pbtxt", p.config_text)
            p.switched = True
            try:
                server.load_model(p.name)
            except Exception as e:
                return (f"version {p.to_version} of '{p.name}' failed to load: {first_line(e)}; "
                        f"{_keeps_all(changed)}", "see the server log", validation)
            ready = server.ready_versions(p.name)
            if not ready or ready[-1] != p.to_version:
                return (f"'{p.name}' serves versions {ready} after the reload, expected [{p.to_version}]; "
                        f"{_keeps_all(changed)}", "see the server log", validation)
        # ---- the live models at N+1
        ok, why, after = gate(_gate_options(replace(opts, canary_requests=0)), [p.name for p in changed], say)
        validation = {**(validation or {}), "after_switch": after}
        if not ok:
            return (f"after the switch, {why}; {_keeps_all(changed)}", "see the server log", validation)
        return None, "", validation
    except OSError as e:
        return (f"writing to {target} failed: {e.strerror or e}; {_keeps_all(changed)}",
                "check the permissions and free space of the target repository", validation)
    finally:
        failed = validation is None or not (validation.get("after_switch") or {}).get("ok", False)
        for p in reversed(candidates):
            cleanup_candidate(server, target / p.candidate, opts.timeout_s)
        if failed:
            for p in reversed([q for q in changed if q.switched]):
                say(f"reverting {p.name}")
                with contextlib.suppress(Exception):
                    _revert(server, target, p)
            for d in created_dirs:
                with contextlib.suppress(Exception):
                    server.unload_model(d.name)
                remove_dir(d)


def _keeps(p: _Plan) -> str:
    if p.from_version is None:
        return f"'{p.name}' stays as it was"
    return f"version {p.from_version} of '{p.name}' keeps serving"


def _keeps_all(plans: Sequence[_Plan]) -> str:
    return "; ".join(_keeps(p) for p in plans) + " and the new version was removed"


def _what(plans: Sequence[_Plan]) -> str:
    if len(plans) == 1:
        return f"version {plans[0].to_version} of '{plans[0].name}'"
    return "the new versions of " + ", ".join(f"'{p.name}'" for p in plans)


def _revert(server: TritonClient, target: Path, p: _Plan) -> None:
    """Back to the version that served before: old config, N+1 out of sight, reload."""
    model_dir = target / p.name
    if p.new_model:
        return  # the whole directory goes
    if p.previous_config_text is not None:
        write_atomic(model_dir / "config.pbtxt", p.previous_config_text)
    remove_dir(model_dir / str(p.to_version))
    server.load_model(p.name)


def _result(action: Literal["deploy", "rollback"], ok: bool, opts: RolloutOptions, plans: Sequence[_Plan],
            reason: str | None, validation: Any, started: str, t0: float) -> RolloutResult:
    models = []
    for p in plans:
        if not p.changed:
            status: ModelStatus = "unchanged"
        elif ok:
            status = "deployed"
        else:
            status = "reverted" if p.switched else "failed"
        models.append(ModelRollout(p.name, status, p.from_version, p.to_version, tree_sha256(p.files), p.files,
                                   f"from {p.source_dir}/{p.source_version}"))
    return RolloutResult(action, ok, opts.target, opts.source, opts.http_url, tuple(models), reason, validation,
                         record_path(opts.target), started, time.monotonic() - t0)


def _record(result: RolloutResult, plans: Sequence[_Plan]) -> dict[str, Any]:
    d = result.to_dict()
    d.pop("schema")
    by_name = {p.name: p for p in plans}
    for m in d["models"]:
        p = by_name.get(m["name"])
        if p is not None and p.changed:
            m["config"] = p.config_text
            m["previous_config"] = p.previous_config_text
    return d


# ------------------------------------------------------------------------------------------ roll-back
def rollback(opts: RolloutOptions, progress: Progress | None = None) -> RolloutResult:
    """Return each model of the last successful roll-out (or ``opts.models``) to the version it replaced."""
    say = reporter(progress)
    check_target(opts.target)
    target = opts.target.absolute()
    opts = replace(opts, target=target)
    started, t0 = _now(), time.monotonic()
    records = list(read_records(target))
    server = _connect(opts)
    try:
        preflight(server)
        live = server.live_versions()
        wanted = set(opts.models)
        steps: list[tuple[str, int, int, str | None]] = []  # (model, live version, previous version, config)
        for entry in reversed(records):
            if entry.get("action") != "deploy" or not entry.get("ok"):
                continue
            for m in reversed(entry.get("models", [])):
                if not isinstance(m, dict) or not isinstance(m.get("name"), str):
                    continue
                name = m["name"]
                if m.get("status") != "deployed" or (wanted and name not in wanted):
                    continue
                if any(s[0] == name for s in steps):
                    continue
                cur, prev = m.get("to_version"), m.get("from_version")
                if live.get(name, [])[-1:] != [cur]:
                    continue  # already moved on (or rolled back)
                # The record is a file anyone with access may edit: its names and versions name paths.
                check_model_name(name)
                previous = None if prev is None else parse_version(
                    prev, f"the version the deploy record gives for '{name}'")
                if previous is None or not (target / name / str(previous)).is_dir():
                    raise UsageError(f"'{name}' cannot be rolled back: the version it replaced is not in {target}",
                                     "deploy the older version again instead")
                check_writable(target / name)
                steps.append((name, live[name][-1], previous, m.get("previous_config")))  # == cur
            if steps and not wanted:
                break  # the last roll-out only
        if not steps:
            which = f" of {', '.join(sorted(wanted))}" if wanted else ""
            raise UsageError(f"nothing to roll back{which}: no deployed version in the record is live now",
                             "see what is live: tritonops deploy --status --to DIR")
        models: list[ModelRollout] = []
        reason = None
        for name, cur, prev, config_text in steps:
            say(f"rolling {name} back from version {cur} to {prev}")
            model_dir = target / name
            old_text = read_config_text(model_dir / "config.pbtxt")
            cfg = parse_config_text(config_text or old_text, str(model_dir / "config.pbtxt"))
            pinned = ModelConfig()
            pinned.CopyFrom(cfg)
            pinned.ClearField("version_policy")
            pinned.version_policy.specific.versions.append(prev)
            try:
                # Traffic moves to `prev` in one reload; only then does `cur` leave the disk.
                server.load_model(name, pinned)
            except Exception as e:
                reason = f"reloading '{name}' at version {prev} failed: {first_line(e)}; version {cur} keeps serving"
                models.append(ModelRollout(name, "failed", cur, prev))
                break
            if config_text:
                write_atomic(model_dir / "config.pbtxt", config_text)
            remove_dir(model_dir / str(cur))
            ready = server.ready_versions(name)
            models.append(ModelRollout(name, "rolled-back", cur, prev, tree_sha256(file_hashes(model_dir / str(prev))),
                                       file_hashes(model_dir / str(prev)), f"serving {ready}"))
        result = RolloutResult("rollback", reason is None, target, None, opts.http_url, tuple(models), reason, None,
                               record_path(target), started, time.monotonic() - t0)
        entry = result.to_dict()
        entry.pop("schema")
        append_record(target, entry)
        if reason is not None:
            raise DeployFailed(reason, "see the server log", result)
        return result
    finally:
        server.close()


