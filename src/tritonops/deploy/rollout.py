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
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tritonops.deploy.inventory import file_hashes, policy_versions, tree_sha256
from tritonops.deploy.record import append_record, read_records, record_path
from tritonops.errors import RepositoryError, ServerError, TritonOpsError, UsageError, ValidationFailed
from tritonops.names import check_model_name
from tritonops.pbtxt import ModelConfig, config_to_text, parse_config_text, read_config, tensor_specs
from tritonops.progress import Progress
from tritonops.repository import version_dirs

SCHEMA = "tritonops.deploy.rollout/1"
STATUS_SCHEMA = "tritonops.deploy.status/1"
CANDIDATE_SUFFIX = ".tritonops-candidate"
STAGE_PREFIX = ".tritonops-stage-"
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
        from tritonops.validate import ValidateOptions

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


# ------------------------------------------------------------------------------------------ server
class _Server:
    """The HTTP client for model control and the index; gRPC is only probed (validate uses both)."""

    def __init__(self, opts: RolloutOptions) -> None:
        import tritonclient.http as httpclient

        self.url = opts.http_url
        self.opts = opts
        self.http = httpclient.InferenceServerClient(opts.http_url, connection_timeout=10.0,
                                                     network_timeout=opts.timeout_s)
        self.headers = {"triton-admin-key": opts.admin_key} if opts.admin_key else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.http.close()

    def preflight(self) -> None:
        import tritonclient.grpc as grpcclient

        try:
            self.http.get_server_metadata()
        except Exception as e:
            raise ServerError(f"cannot reach the server at {self.url} over HTTP: {_first_line(e)}",
                              "check --url/--http-port and that tritonserver is running") from None
        grpc = grpcclient.InferenceServerClient(self.opts.grpc_url)
        try:
            grpc.get_server_metadata(client_timeout=10.0)
        except Exception as e:
            raise ServerError(f"cannot reach the server at {self.opts.grpc_url} over gRPC: {_first_line(e)}",
                              "check --grpc-port and that tritonserver is running") from None
        finally:
            with contextlib.suppress(Exception):
                grpc.close()
        # Unloading a model that does not exist succeeds in explicit mode and is refused otherwise.
        probe = f"tritonops-mode-probe-{uuid.uuid4().hex[:12]}"
        try:
            self.http.unload_model(probe, headers=self.headers)
        except Exception as e:
            text = _first_line(e)
            if "not allowed" in text:
                raise ServerError(f"the server at {self.url} is not in explicit model-control mode ({text})",
                                  "start tritonserver with --model-control-mode=explicit (tritonops deploy "
                                  "--target … --allow-model-control writes manifests that do)") from None
            if "restricted" in text:
                raise ServerError(f"the server at {self.url} restricts its model-repository API ({text})",
                                  "export TRITON_ADMIN_KEY with the server's key") from None
            raise ServerError(f"the server at {self.url} refused a model-control request: {text}",
                              "check the server log") from None

    def index(self) -> list[dict[str, Any]]:
        return list(self.http.get_model_repository_index(headers=self.headers))

    def ready_versions(self, name: str) -> list[int]:
        return sorted(int(e["version"]) for e in self.index()
                      if e.get("name") == name and e.get("state") == "READY" and str(e.get("version", "")).isdigit())

    def load(self, name: str, config: ModelConfig | None = None) -> None:
        from tritonops.pbtxt import config_to_json

        self.http.load_model(name, headers=self.headers,
                             config=config_to_json(config) if config is not None else None)

    def unload(self, name: str) -> None:
        self.http.unload_model(name, headers=self.headers)


def _first_line(e: BaseException) -> str:
    message = getattr(e, "message", None)  # tritonclient's InferenceServerException.message()
    text = str(message() if callable(message) else e) or type(e).__name__
    return (text.strip().splitlines() or [type(e).__name__])[0][:300]


# ------------------------------------------------------------------------------------------ files
def _check_target(target: Path) -> None:
    if not target.exists():
        raise UsageError(f"target repository '{target}' does not exist",
                         "give the directory the server was started with (--model-repository)")
    if not target.is_dir():
        raise UsageError(f"target repository '{target}' is not a directory",
                         "give the directory the server was started with (--model-repository)")


def _check_writable(directory: Path) -> None:
    """Create and remove a file: the real permission check (os.access is wrong for root, ACLs, RO mounts)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tritonops-probe-", dir=directory)
        os.close(fd)
        Path(tmp).unlink()
    except OSError as e:
        raise RepositoryError(f"cannot write to {directory}: {e.strerror or e}",
                              "run as a user who may write the server's model repository") from None


def _copytree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=False, copy_function=shutil.copy2)


@contextlib.contextmanager
def _stage(model_dir: Path) -> Any:
    """A hidden, non-numeric directory inside the model directory: Triton ignores it as a version and
    the final rename stays on one filesystem."""
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=model_dir))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(0o644)  # mkstemp makes 0600; the server may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_dir(path: Path) -> None:
    """Rename out of Triton's sight first (hidden name), then delete."""
    if not path.exists():
        return
    hidden = path.with_name(f".tritonops-removed-{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


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
            if isinstance(m.get("to_version"), int) and entry.get("action") == "deploy":
                highest[m["name"]] = max(highest.get(m["name"], 0), m["to_version"])
    return highest


def _plan(opts: RolloutOptions, live: Mapping[str, list[int]]) -> list[_Plan]:
    from tritonops.check import check_repository
    from tritonops.deploy.inventory import read_inventory

    assert opts.source is not None
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
            prev_text = (tgt_dir / "config.pbtxt").read_text()
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
            to_v = max([*disk, *served, recorded.get(name, 0)]) + 1
            unchanged = (current is not None and prev_text == text
                         and (tgt_dir / str(current)).is_dir() and file_hashes(tgt_dir / str(current)) == files)
            plans.append(_Plan(name, src_dir, src_v, cfg, text, files, False, current,
                               current if unchanged and current is not None else to_v, prev_text,
                               info.composing, changed=not unchanged))
        else:
            plans.append(_Plan(name, src_dir, src_v, cfg, text, files, True, None, recorded.get(name, 0) + 1, None,
                               info.composing))
    return plans


# ------------------------------------------------------------------------------------------ the gate
def _gate(server: _Server, opts: RolloutOptions, names: Sequence[str], say: Progress) -> tuple[bool, str, Any]:
    """validate (HTTP + gRPC, reference comparison) on ``names``, then the canary requests."""
    from tritonops.validate import ValidateOptions, validate

    report = validate(ValidateOptions(http_url=opts.http_url, grpc_url=opts.grpc_url, metrics_url=None,
                                      models=tuple(names), repository=opts.target, atol=opts.atol, rtol=opts.rtol,
                                      timeout_s=min(opts.timeout_s, 60.0), latency_repeats=1), say)
    # Rows of other models (or a server made unready by another broken model) are not this roll-out's.
    relevant = [r for r in report.rows if r.model in names or (r.model == "" and r.check == "live")]
    summary: dict[str, Any] = {"ok": all(r.status != "fail" for r in relevant), "models": list(names),
               "counts": {s: sum(1 for r in relevant if r.status == s) for s in ("pass", "fail", "skip")},
               "failures": [r.line() for r in relevant if r.status == "fail"]}
    if not summary["ok"]:
        return False, summary["failures"][0], summary
    if opts.canary_requests:
        for name in names:
            problem = _canary(opts, name, opts.canary_requests, say)
            if problem:
                summary["ok"] = False
                summary["failures"].append(problem)
                return False, problem, summary
        summary["canary_requests"] = opts.canary_requests
    return True, "", summary


def _canary(opts: RolloutOptions, name: str, count: int, say: Progress) -> str:
    """``count`` inferences alternating HTTP and gRPC with fresh inputs; each must succeed and match the
    local reference run of the repository's artifact (when there is a runner for the platform)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from tritonops.reference import REFERENCE_FACTORIES, ModelUnderTest
    from tritonops.validate import generate_inputs

    say(f"{count} canary requests to {name}")
    http = httpclient.InferenceServerClient(opts.http_url, network_timeout=60.0)
    grpc = grpcclient.InferenceServerClient(opts.grpc_url)
    try:
        cfg_dict = http.get_model_config(name)
        from google.protobuf import json_format

        cfg = json_format.ParseDict(cfg_dict, ModelConfig(), ignore_unknown_fields=True)
        version = str(max(version_dirs(opts.target / name), default=1))
        in_specs, out_specs = tensor_specs(cfg)
        factory = REFERENCE_FACTORIES.get(cfg.platform or cfg.backend)
        reference = None
        if factory is not None:
            model_dir = opts.target / name
            filename = cfg.default_model_filename or ("model.onnx" if "onnx" in (cfg.platform + cfg.backend)
                                                      else "model.pt")
            artifact = model_dir / version / filename
            if artifact.exists():
                reference = factory(ModelUnderTest(name, version, cfg, model_dir, artifact))
        rng = np.random.default_rng(1234)
        for i in range(count):
            batch = 1 + i % max(1, min(cfg.max_batch_size, 4)) if cfg.max_batch_size > 0 else None
            inputs = generate_inputs(in_specs, batch, rng)
            mod: Any = httpclient if i % 2 == 0 else grpcclient
            client: Any = http if i % 2 == 0 else grpc
            ins = []
            for t in in_specs:
                if t.name not in inputs:
                    continue
                a = inputs[t.name]
                x = mod.InferInput(t.name, list(a.shape), t.dtype.name)
                x.set_data_from_numpy(a)
                ins.append(x)
            try:
                res = client.infer(name, ins, model_version=version,
                                   outputs=[mod.InferRequestedOutput(o.name) for o in out_specs])
            except Exception as e:
                return f"canary request {i + 1} of {count} to '{name}' failed: {_first_line(e)}"
            if reference is not None:
                want = reference(inputs)
                for o in out_specs:
                    got = res.as_numpy(o.name)
                    exp = np.asarray(want[o.name])
                    if got is None or got.shape != exp.shape or (
                            exp.dtype.kind in "fc" and not np.allclose(got, exp, atol=opts.atol, rtol=opts.rtol)) or (
                            exp.dtype.kind not in "fc" and not np.array_equal(got, exp)):
                        return (f"canary request {i + 1} of {count} to '{name}': output '{o.name}' differs from the "
                                "local reference run")
        return ""
    finally:
        for c in (http, grpc):
            with contextlib.suppress(Exception):
                c.close()


# ------------------------------------------------------------------------------------------ roll-out
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _live_versions(server: _Server) -> dict[str, list[int]]:
    live: dict[str, list[int]] = {}
    for e in server.index():
        v = str(e.get("version", ""))
        if e.get("state") == "READY" and v.isdigit():
            live.setdefault(str(e.get("name")), []).append(int(v))
    return {k: sorted(v) for k, v in live.items()}


def deploy_versions(opts: RolloutOptions, progress: Progress | None = None) -> RolloutResult:
    """Roll the source's models out to the server; raise :class:`DeployFailed` (after undoing) on failure."""
    say = progress or (lambda _m: None)
    if opts.source is None:
        raise UsageError("no source repository given", "tritonops deploy model_repository/ --to DIR --url HOST")
    _check_target(opts.target)
    target = opts.target.absolute()
    _check_writable(target)
    if not opts.source.is_dir():
        raise UsageError(f"source repository '{opts.source}' is not a directory",
                         "give the repository with the new versions, e.g. model_repository/")
    opts = replace(opts, target=target, source=opts.source.absolute())
    started, t0 = _now(), time.monotonic()
    server = _Server(opts)
    try:
        say(f"checking {opts.http_url}")
        server.preflight()
        live = _live_versions(server)
        plans = _plan(opts, live)
        for p in plans:
            if p.changed and not p.new_model:
                _check_writable(target / p.name)
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


def _run(server: _Server, opts: RolloutOptions, plans: list[_Plan], changed: list[_Plan],
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
            _cleanup_candidate(server, target / p.candidate)
            cfg = ModelConfig()
            cfg.CopyFrom(p.config)
            cfg.name = p.candidate
            for step in cfg.ensemble_scheduling.step:
                if step.model_name in changed_names:
                    step.model_name = f"{step.model_name}{CANDIDATE_SUFFIX}"
            with _stage(model_dir) as stage:
                root = stage / p.candidate
                _copytree(p.source_dir / str(p.source_version), root / str(p.to_version))
                (root / "config.pbtxt").write_text(config_to_text(cfg))
                for extra in p.source_dir.iterdir():
                    if not extra.name.isdigit() and extra.name != "config.pbtxt" and not extra.name.startswith("."):
                        (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, root / extra.name)
                os.replace(root, target / p.candidate)
            candidates.append(p)
        names_seen = {str(e.get("name")) for e in server.index()}
        if changed[0].candidate not in names_seen:
            return (f"the server at {opts.http_url} does not serve {target}: a model put there does not appear in "
                    "its repository index", "give --to the directory the server was started with "
                    "(--model-repository)", None)
        for p in candidates:
            say(f"loading {p.candidate} (version {p.to_version})")
            try:
                server.load(p.candidate)
            except Exception as e:
                return (f"version {p.to_version} of '{p.name}' failed to load: {_first_line(e)}; "
                        f"{_keeps_all(changed)}", "see the server log; `tritonops check` finds config mistakes",
                        None)
        # ---- the gate
        ok, why, validation = _gate(server, opts, [p.candidate for p in candidates], say)
        if not ok:
            first = why.replace(CANDIDATE_SUFFIX, "")
            return (f"{_what(changed)} failed validation: {first}; {_keeps_all(changed)}",
                    "run `tritonops validate` on a server with the new repository to see every check", validation)
        for p in reversed(candidates):
            _cleanup_candidate(server, target / p.candidate)
        candidates.clear()
        # ---- the switch
        for p in changed:
            say(f"switching {p.name} to version {p.to_version}")
            model_dir = target / p.name
            with _stage(model_dir) as stage:
                _copytree(p.source_dir / str(p.source_version), stage / str(p.to_version))
                if p.new_model:
                    for extra in p.source_dir.iterdir():
                        if not extra.name.isdigit() and extra.name != "config.pbtxt" and not extra.name.startswith("."):
                            (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, model_dir / extra.name)
                os.replace(stage / str(p.to_version), model_dir / str(p.to_version))
            _write_atomic(model_dir / "config.pbtxt", p.config_text)
            p.switched = True
            try:
                server.load(p.name)
            except Exception as e:
                return (f"version {p.to_version} of '{p.name}' failed to load: {_first_line(e)}; "
                        f"{_keeps_all(changed)}", "see the server log", validation)
            ready = server.ready_versions(p.name)
            if not ready or ready[-1] != p.to_version:
                return (f"'{p.name}' serves versions {ready} after the reload, expected [{p.to_version}]; "
                        f"{_keeps_all(changed)}", "see the server log", validation)
        # ---- the live models at N+1
        ok, why, after = _gate(server, replace(opts, canary_requests=0), [p.name for p in changed], say)
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
            _cleanup_candidate(server, target / p.candidate)
        if failed:
            for p in reversed([q for q in changed if q.switched]):
                say(f"reverting {p.name}")
                with contextlib.suppress(Exception):
                    _revert(server, target, p)
            for d in created_dirs:
                with contextlib.suppress(Exception):
                    server.unload(d.name)
                _remove_dir(d)


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


def _cleanup_candidate(server: _Server, path: Path) -> None:
    # After a timed-out load the server may still be loading it: wait (bounded) so the unload is not
    # overtaken by a load that completes afterwards, and the files are not pulled from under it.
    deadline = time.monotonic() + max(60.0, server.opts.timeout_s)
    with contextlib.suppress(Exception):
        while time.monotonic() < deadline and any(
                e.get("name") == path.name and e.get("state") == "LOADING" for e in server.index()):
            time.sleep(0.2)
    with contextlib.suppress(Exception):
        server.unload(path.name)
    _remove_dir(path)


def _revert(server: _Server, target: Path, p: _Plan) -> None:
    """Back to the version that served before: old config, N+1 out of sight, reload."""
    model_dir = target / p.name
    if p.new_model:
        return  # the whole directory goes
    if p.previous_config_text is not None:
        _write_atomic(model_dir / "config.pbtxt", p.previous_config_text)
    _remove_dir(model_dir / str(p.to_version))
    server.load(p.name)


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
    say = progress or (lambda _m: None)
    _check_target(opts.target)
    target = opts.target.absolute()
    opts = replace(opts, target=target)
    started, t0 = _now(), time.monotonic()
    records = list(read_records(target))
    server = _Server(opts)
    try:
        server.preflight()
        live = _live_versions(server)
        wanted = set(opts.models)
        steps: list[tuple[str, int, int, str | None]] = []  # (model, live version, previous version, config)
        for entry in reversed(records):
            if entry.get("action") != "deploy" or not entry.get("ok"):
                continue
            for m in reversed(entry.get("models", [])):
                name = m.get("name")
                if m.get("status") != "deployed" or (wanted and name not in wanted):
                    continue
                if any(s[0] == name for s in steps):
                    continue
                cur, prev = m.get("to_version"), m.get("from_version")
                if live.get(name, [])[-1:] != [cur]:
                    continue  # already moved on (or rolled back)
                if prev is None or not (target / name / str(prev)).is_dir():
                    raise UsageError(f"'{name}' cannot be rolled back: the version it replaced is not in {target}",
                                     "deploy the older version again instead")
                _check_writable(target / name)
                steps.append((name, int(cur), int(prev), m.get("previous_config")))
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
            old_text = (model_dir / "config.pbtxt").read_text()
            cfg = parse_config_text(config_text or old_text, str(model_dir / "config.pbtxt"))
            pinned = ModelConfig()
            pinned.CopyFrom(cfg)
            pinned.ClearField("version_policy")
            pinned.version_policy.specific.versions.append(prev)
            try:
                # Traffic moves to `prev` in one reload; only then does `cur` leave the disk.
                server.load(name, pinned)
            except Exception as e:
                reason = f"reloading '{name}' at version {prev} failed: {_first_line(e)}; version {cur} keeps serving"
                models.append(ModelRollout(name, "failed", cur, prev))
                break
            if config_text:
                _write_atomic(model_dir / "config.pbtxt", config_text)
            _remove_dir(model_dir / str(cur))
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


# ------------------------------------------------------------------------------------------ status
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


def deploy_status(target: Path, http_url: str | None = None, admin_key: str | None = None) -> DeployStatus:
    """What is on disk, what the server serves, and the last recorded action for each model."""
    _check_target(target)
    target = target.absolute()
    live: dict[str, list[int]] | None = None
    server_error = None
    if http_url is not None:
        server = _Server(RolloutOptions(target=target, http_url=http_url, admin_key=admin_key))
        try:
            live = _live_versions(server)
        except Exception as e:
            server_error = _first_line(e)
        finally:
            server.close()
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


__all__ = ["DeployFailed", "DeployStatus", "ModelRollout", "RolloutOptions", "RolloutResult", "deploy_status",
           "deploy_versions", "policy_versions", "read_config", "rollback"]
