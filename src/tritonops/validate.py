"""``tritonops validate``: prove a running Triton serves its models correctly over HTTP and gRPC.

For the server and for every model it checks: live/ready; model ready (with the server's reason when
not); metadata against the served config (and against the repository's ``config.pbtxt`` when a
repository is given); inference over HTTP JSON, HTTP binary and gRPC at batch 1 and a larger batch;
that the three paths return identical outputs; that the outputs equal a local reference run of the
same artifact (onnxruntime / torch.jit, in-process); response-cache hits when the model enables the
cache; and the first-request latency after warm-up.

Results are rows of (model, check, protocol) in a frozen :class:`ValidationReport`. Problems found in
the deployment are failed rows (the report is always complete); problems that stop validation
itself (server unreachable, unknown model, bad user inputs) raise a typed error with a hint.

Reference runs are pluggable per platform (:data:`REFERENCE_FACTORIES`) or per model (the
``references`` argument of :func:`validate`): anything satisfying :class:`ReferenceRunner`.
"""

from __future__ import annotations

import contextlib
import math
import re
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from tritonops.dtypes import from_config, from_numpy, str_to_bytes
from tritonops.errors import ServerError, TritonOpsError, UsageError, ValidationFailed
from tritonops.names import check_model_name
from tritonops.pbtxt import tensor_specs
from tritonops.progress import Progress
from tritonops.reference import (
    ModelUnderTest,
    ReferenceRunner,
    artifact_path,
    reference_factory,
)
from tritonops.samples import EXAMPLES_FILE, check_inputs, format_shape, generate_inputs, load_inputs
from tritonops.spec import TensorSpec

SCHEMA = "tritonops.validate/1"
PROTOCOLS: tuple[str, ...] = ("http-json", "http-binary", "grpc")
Status = Literal["pass", "fail", "skip"]
# Outputs that crossed the wire as JSON text must round-trip exactly for FP32/FP64 (the server
# prints shortest round-trip decimals); the allowance covers a last-ulp difference in FP16/other
# encoders. What was measured is reported as max_error on every "agree" row.
PATH_FLOAT_TOL = 1e-6
SERVER = ""  # the model column of server-wide rows


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class CheckResult:
    """One row: a check of one model (or of the server, model ``""``) over one protocol.

    ``protocol`` is one of :data:`PROTOCOLS`, ``"http"`` / ``"grpc"`` for checks that do not depend
    on the tensor encoding, or ``"-"`` for checks that involve no protocol (config.pbtxt, cache)."""

    model: str
    check: str
    protocol: str
    status: Status
    detail: str = ""
    max_error: float | None = None
    latency_ms: float | None = None
    hint: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def line(self) -> str:
        """The row as one sentence, used for the error line when it failed."""
        where = f"model '{self.model}'" if self.model else "server"
        if self.check == "ready":  # the detail reads "not ready (STATE): reason"
            return f"{where} is {self.detail}"
        over = f" over {self.protocol}" if self.protocol not in ("-", "") else ""
        return f"{where}: {self.check}{over}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "check": self.check, "protocol": self.protocol, "status": self.status,
            "passed": self.passed, "max_error": _json_float(self.max_error), "latency_ms": self.latency_ms,
            "detail": self.detail, "hint": self.hint,
        }


def _json_float(x: float | None) -> float | str | None:
    if x is None or math.isfinite(x):
        return x
    return str(x)  # inf/nan are not JSON


@dataclass(frozen=True)
class ValidationReport:
    """Everything ``validate`` found. ``ok`` only if no row failed (skipped rows say why)."""

    http_url: str
    grpc_url: str
    server_version: str
    repository: str | None
    models: tuple[str, ...]
    rows: tuple[CheckResult, ...]
    atol: float
    rtol: float
    schema: str = SCHEMA

    @property
    def ok(self) -> bool:
        return all(r.status != "fail" for r in self.rows)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.rows if r.status == "fail")

    def rows_for(self, model: str, check: str | None = None) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.rows if r.model == model and (check is None or r.check == check))

    def error(self) -> ValidationFailed:
        """The error to raise when the report failed: the first failure, as one line, and its hint."""
        fails = self.failures
        if not fails:
            raise ValueError("the report has no failures")
        # A server that is not ready is usually the consequence of a model that failed: name that.
        first = min(fails, key=lambda r: r.model == SERVER)
        more = f" (and {len(fails) - 1} more failed check{'s' if len(fails) > 2 else ''})" if len(fails) > 1 else ""
        return ValidationFailed(first.line() + more, first.hint or "see the table above for every failed check")

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(1 for r in self.rows if r.status == s) for s in ("pass", "fail", "skip")}
        return {
            "schema": self.schema, "ok": self.ok, "http_url": self.http_url, "grpc_url": self.grpc_url,
            "server_version": self.server_version, "repository": self.repository, "models": list(self.models),
            "atol": self.atol, "rtol": self.rtol, "counts": counts, "rows": [r.to_dict() for r in self.rows],
        }


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class ValidateOptions:
    """What to validate and how. URLs are ``host:port`` without a scheme."""

    http_url: str = "localhost:8000"
    grpc_url: str = "localhost:8001"
    metrics_url: str | None = "localhost:8002"
    models: tuple[str, ...] = ()  # empty: every model in the server's repository index
    inputs: Path | None = None  # .npz or .json with one array per input (batch dim included)
    repository: Path | None = None  # compare against its config.pbtxt and run its artifacts locally
    reference: Path | None = None  # another artifact for the local reference run (one model only)
    batch_size: int | None = None  # the larger batch (default min(max_batch_size, 4))
    atol: float = 1e-4
    rtol: float = 1e-3
    protocols: tuple[str, ...] = PROTOCOLS
    grpc_max_message_bytes: int | None = None  # like a production client's limit; None: tritonclient's 2 GB
    timeout_s: float = 30.0
    latency_repeats: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for url, flag in ((self.http_url, "--http-port"), (self.grpc_url, "--grpc-port")):
            if "://" in url:
                raise UsageError(f"URL '{url}' includes a scheme", "give host:port, e.g. --url localhost")
            if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", url):
                raise UsageError(f"cannot parse endpoint '{url}'", f"give a host with --url and a port with {flag}")
        for m in self.models:
            check_model_name(m)
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise UsageError(f"unknown protocol '{bad[0] if bad else ''}'", f"use some of: {', '.join(PROTOCOLS)}")
        if self.batch_size is not None and self.batch_size < 2:
            raise UsageError(f"--batch-size {self.batch_size} is below 2",
                             "give the larger batch to test (batch 1 is always tested), e.g. --batch-size 4")
        if self.atol < 0 or self.rtol < 0:
            raise UsageError("tolerances must be >= 0", "use e.g. --atol 1e-4 --rtol 1e-3")
        if self.grpc_max_message_bytes is not None and self.grpc_max_message_bytes < 1:
            raise UsageError("the gRPC message size limit must be positive", "e.g. --grpc-max-message-size 4MB")
        if self.reference is not None and len(self.models) != 1:
            raise UsageError("--reference needs exactly one --model", "name the model it stands for: --model NAME")
        if self.reference is not None and not self.reference.exists():
            raise UsageError(f"reference model '{self.reference}' does not exist", "check the path")


# ---------------------------------------------------------------- clients and errors


class _Clients:
    def __init__(self, options: ValidateOptions) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.http_mod = httpclient
        self.grpc_mod = grpcclient
        self.options = options
        self.http = httpclient.InferenceServerClient(
            options.http_url, connection_timeout=min(10.0, options.timeout_s), network_timeout=options.timeout_s)
        self.grpc = grpcclient.InferenceServerClient(options.grpc_url)
        # The message limit mimics a production client's, which matters for inference messages;
        # metadata and statistics go through the unlimited client.
        self.grpc_infer = self.grpc
        if options.grpc_max_message_bytes is not None:
            limit = options.grpc_max_message_bytes
            self.grpc_infer = grpcclient.InferenceServerClient(options.grpc_url, channel_args=[
                ("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)])

    def close(self) -> None:
        for c in {id(x): x for x in (self.http, self.grpc, self.grpc_infer)}.values():
            with contextlib.suppress(Exception):  # closing a broken connection must not hide the real error
                c.close()


def _status_of(e: BaseException) -> str:
    status = getattr(e, "status", None)
    return str(status() if callable(status) else "") or ""


def _message_of(e: BaseException) -> str:
    msg = getattr(e, "message", None)
    text = msg() if callable(msg) else str(e)
    return (text or type(e).__name__).strip().splitlines()[0] if (text or "").strip() else type(e).__name__


def _unreachable(protocol: str, url: str, e: BaseException) -> ServerError:
    """A clear error for a failed first contact: nothing listening, a non-Triton port, or no such host."""
    default = {"HTTP": 8000, "gRPC": 8001}[protocol]
    flag = "--http-port" if protocol == "HTTP" else "--grpc-port"
    text = f"{type(e).__name__}: {_message_of(e)}"
    refused = isinstance(e, ConnectionRefusedError) or "Connection refused" in text
    if refused:
        return ServerError(
            f"cannot reach Triton's {protocol} endpoint at {url}: connection refused",
            f"start a server (tritonops serve REPOSITORY) or check --url and {flag} (Triton's default is {default})",
        )
    if "Name or service not known" in text or "gaierror" in text or "DNS resolution failed" in text:
        return ServerError(f"cannot reach Triton's {protocol} endpoint at {url}: unknown host",
                           "check the host name given with --url")
    if "timed out" in text.lower() or "DEADLINE_EXCEEDED" in text:
        return ServerError(f"Triton's {protocol} endpoint at {url} did not answer in time",
                           "check that the server is up and the port is right; a firewall may drop the connection")
    other = "gRPC" if protocol == "HTTP" else "HTTP"
    return ServerError(
        f"{url} answered, but not as Triton's {protocol} endpoint ({_short(text)})",
        f"check {flag}: is {url} the {other} or metrics port? Triton's {protocol} default is {default}",
    )


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text and text.strip() else ""


_GRPC_LIMIT_HINT = ("send a smaller batch (--batch-size), use HTTP for large tensors, or raise the client's limit "
                    "(--grpc-max-message-size / the client's grpc.max_receive_message_length)")


def _infer_error(protocol: str, e: BaseException) -> tuple[str, str]:
    """(detail, hint) for a failed inference."""
    status = _status_of(e)
    msg = _short(_message_of(e), 300)
    if "RESOURCE_EXHAUSTED" in status:
        return f"gRPC message size limit exceeded (RESOURCE_EXHAUSTED: {msg})", _GRPC_LIMIT_HINT
    if "UNAVAILABLE" in status or isinstance(e, ConnectionError):
        return f"the server went away ({msg})", "check the server log; the server or the model may have crashed"
    return f"inference failed: {msg}", "the server's error is above; check the inputs and the server log"


# ---------------------------------------------------------------- the validation


@dataclass
class _Run:
    options: ValidateOptions
    clients: _Clients
    say: Progress
    references: Mapping[str, ReferenceRunner]
    rows: list[CheckResult] = field(default_factory=list)

    def add(self, model: str, check: str, protocol: str, status: Status, detail: str = "", *,
            max_error: float | None = None, latency_ms: float | None = None, hint: str = "") -> CheckResult:
        row = CheckResult(model, check, protocol, status, detail, max_error, latency_ms, hint)
        self.rows.append(row)
        return row


def validate(options: ValidateOptions, progress: Progress | None = None, *,
             references: Mapping[str, ReferenceRunner] | None = None) -> ValidationReport:
    """Validate the server at ``options.http_url`` / ``grpc_url`` and its models.

    ``references`` maps model names to reference runners, overriding :data:`REFERENCE_FACTORIES`
    (e.g. for an ensemble). Raises ServerError when the server cannot be reached, ValidationFailed
    for an unknown model, UsageError for bad inputs; every other problem is a failed row."""
    say = progress or (lambda _msg: None)
    user_inputs = load_inputs(options.inputs) if options.inputs is not None else None
    clients = _Clients(options)
    try:
        run = _Run(options, clients, say, references or {})
        version = _server_checks(run)
        index = _repository_index(run)
        _health_checks(run, index)
        models = _select_models(options, index)
        if user_inputs is not None and len(models) != 1:
            raise UsageError(f"--inputs applies to one model, but {len(models)} are being validated",
                             "name the model the inputs are for: --model NAME")
        for name in models:
            _validate_model(run, name, index[name], user_inputs)
        return ValidationReport(
            http_url=options.http_url, grpc_url=options.grpc_url, server_version=version,
            repository=str(options.repository) if options.repository else None, models=tuple(models),
            rows=tuple(run.rows), atol=options.atol, rtol=options.rtol,
        )
    finally:
        clients.close()


def _server_checks(run: _Run) -> str:
    c = run.clients
    run.say(f"contacting {run.options.http_url}")
    try:
        meta = c.http.get_server_metadata()
        if not isinstance(meta, dict) or "version" not in meta:
            raise ValueError(f"unexpected server metadata {str(meta)[:80]!r}")
    except Exception as e:
        raise _unreachable("HTTP", run.options.http_url, e) from None
    try:
        c.grpc.get_server_metadata(client_timeout=min(10.0, run.options.timeout_s))
    except Exception as e:
        raise _unreachable("gRPC", run.options.grpc_url, e) from None
    return str(meta.get("version", ""))


def _health_checks(run: _Run, index: Mapping[str, _IndexEntry]) -> None:
    c = run.clients
    not_ready = sorted(n for n, e in index.items() if e.state != "READY" and not _unloaded(e))
    for proto, client in (("http", c.http), ("grpc", c.grpc)):
        live = client.is_server_live()
        run.add(SERVER, "live", proto, "pass" if live else "fail", "live" if live else "not live",
                hint="" if live else "check the server log")
        ready = client.is_server_ready()
        because = f": models not ready: {', '.join(not_ready)}" if not_ready else ""
        run.add(SERVER, "ready", proto, "pass" if ready else "fail", "ready" if ready else f"not ready{because}",
                hint="" if ready else "with strict readiness (the default) a server is not ready while any model "
                                      "failed to load: see the models' rows and the server log")


@dataclass(frozen=True)
class _IndexEntry:
    version: str
    state: str
    reason: str


def _repository_index(run: _Run) -> dict[str, _IndexEntry]:
    entries: dict[str, _IndexEntry] = {}
    for item in run.clients.http.get_model_repository_index():
        name = item.get("name", "")
        ver = str(item.get("version", ""))
        entry = _IndexEntry(ver, str(item.get("state", "")), str(item.get("reason", "")))
        old = entries.get(name)
        # Several versions: keep a READY one, the highest.
        if old is None or (entry.state == "READY", _vkey(ver)) > (old.state == "READY", _vkey(old.version)):
            entries[name] = entry
    return entries


def _vkey(v: str) -> int:
    return int(v) if v.isdigit() else -1


def _unloaded(entry: _IndexEntry) -> bool:
    """Explicit model control: in the repository but not loaded (on purpose, until someone loads it)."""
    return not entry.state or (entry.state == "UNAVAILABLE" and entry.reason.strip() == "unloaded")


def _select_models(options: ValidateOptions, index: Mapping[str, _IndexEntry]) -> list[str]:
    if not options.models:
        loaded = sorted(n for n, e in index.items() if not _unloaded(e))
        if not loaded:
            there = f" (not loaded: {', '.join(sorted(index))})" if index else ""
            raise ValidationFailed(f"the server at {options.http_url} has no loaded models{there}",
                                   "check the repository the server was started with, or load models "
                                   "(explicit model control) before validating")
        return loaded
    for m in options.models:
        if m not in index:
            there = ", ".join(sorted(index)) or "none"
            raise ValidationFailed(f"model '{m}' is not in the server's repository (models there: {there})",
                                   "check the name, or leave --model out to validate every model")
    return list(dict.fromkeys(options.models))


def _get_config(run: _Run, name: str, protocol: str) -> mc.ModelConfig:
    if protocol == "http":
        d = run.clients.http.get_model_config(name)
        return json_format.ParseDict(d, mc.ModelConfig(), ignore_unknown_fields=True)
    resp = run.clients.grpc.get_model_config(name)
    cfg = mc.ModelConfig()
    cfg.CopyFrom(resp.config)
    return cfg


def _get_metadata(run: _Run, name: str, protocol: str) -> dict[str, Any]:
    if protocol == "http":
        return dict(run.clients.http.get_model_metadata(name))
    from google.protobuf.json_format import MessageToDict

    d = MessageToDict(run.clients.grpc.get_model_metadata(name), preserving_proto_field_name=True)
    for key in ("inputs", "outputs"):
        for t in d.get(key, []):
            t["shape"] = [int(s) for s in t.get("shape", [])]
    return d


def _validate_model(run: _Run, name: str, entry: _IndexEntry, user_inputs: Mapping[str, np.ndarray] | None) -> None:
    run.say(f"validating {name}")
    opts = run.options
    # ---- ready
    reason = _first_line(entry.reason) or "the server gives no reason"
    ready = {}
    for proto, client in (("http", run.clients.http), ("grpc", run.clients.grpc)):
        ready[proto] = ok = entry.state == "READY" and client.is_model_ready(name, entry.version)
        run.add(name, "ready", proto, "pass" if ok else "fail", f"version {entry.version} ready" if ok else
                f"not ready ({entry.state or 'UNKNOWN'}): {reason}",
                hint="" if ok else "see the server log for the whole error; `tritonops check REPOSITORY` "
                                   "finds config mistakes")
    if not all(ready.values()):
        return
    # ---- metadata and config
    configs = {}
    for proto in ("http", "grpc"):
        try:
            configs[proto] = cfg = _get_config(run, name, proto)
            problems = _metadata_vs_config(_get_metadata(run, name, proto), cfg)
        except Exception as e:
            run.add(name, "metadata", proto, "fail", f"cannot read metadata/config: {_message_of(e)}",
                    hint="check the server log")
            continue
        run.add(name, "metadata", proto, "fail" if problems else "pass",
                "; ".join(problems) if problems else "names, types and shapes agree with the served config",
                hint="the server's metadata disagrees with its own config: report it with both outputs"
                if problems else "")
    config = configs.get("http") or configs.get("grpc")
    if config is None:
        return
    model_dir = _model_dir(opts.repository, name)
    if model_dir is not None:
        _check_repository_config(run, name, model_dir, config)
    # ---- inference
    model = ModelUnderTest(name, entry.version, config, model_dir, _artifact(opts, model_dir, entry.version, config))
    if user_inputs is None and model_dir is not None and (model_dir / EXAMPLES_FILE).is_file():
        # Inputs random data cannot stand for (encoded images, text): saved by the ensemble build.
        user_inputs = load_inputs(model_dir / EXAMPLES_FILE)
    _inference_checks(run, model, user_inputs)


def _model_dir(repository: Path | None, name: str) -> Path | None:
    if repository is None:
        return None
    try:
        check_model_name(name)  # the name comes from the server: never let it walk out of the repository
    except UsageError:
        return None
    d = repository / name
    return d if d.is_dir() else None


def _artifact(opts: ValidateOptions, model_dir: Path | None, version: str, config: mc.ModelConfig) -> Path | None:
    if opts.reference is not None:
        return opts.reference
    return artifact_path(model_dir, version, config) if model_dir is not None else None


def _metadata_vs_config(meta: Mapping[str, Any], cfg: mc.ModelConfig) -> list[str]:
    problems = []
    batch = [-1] if cfg.max_batch_size > 0 else []
    for kind, declared in (("inputs", cfg.input), ("outputs", cfg.output)):
        seen = {t["name"]: t for t in meta.get(kind, [])}
        want = {t.name: t for t in declared}
        if set(seen) != set(want):
            problems.append(f"{kind} are {sorted(seen)} in the metadata but {sorted(want)} in the config")
            continue
        for tname, t in want.items():
            m = seen[tname]
            dtype = from_config(mc.DataType.Name(t.data_type)).name
            if m.get("datatype") != dtype:
                problems.append(f"{kind[:-1]} '{tname}' is {m.get('datatype')} in the metadata but {dtype} "
                                "in the config")
            shape = batch + list(t.dims)
            if list(m.get("shape", [])) != shape:
                problems.append(f"{kind[:-1]} '{tname}' has shape {format_shape(m.get('shape', []))} in the metadata "
                                f"but {format_shape(shape)} in the config")
    return problems


def _check_repository_config(run: _Run, name: str, model_dir: Path, served: mc.ModelConfig) -> None:
    from tritonops.errors import TritonOpsError
    from tritonops.pbtxt import read_config

    path = model_dir / "config.pbtxt"
    if not path.is_file():
        run.add(name, "config.pbtxt", "-", "skip", f"{path} does not exist (the server auto-completed the config)")
        return
    try:
        repo_cfg = read_config(path)
    except TritonOpsError as e:
        run.add(name, "config.pbtxt", "-", "fail", f"cannot parse {path}: {e.message}", hint=e.hint or "")
        return
    problems = []
    if repo_cfg.max_batch_size != served.max_batch_size and (repo_cfg.max_batch_size or repo_cfg.input):
        problems.append(f"max_batch_size is {repo_cfg.max_batch_size} in config.pbtxt but the server uses "
                        f"{served.max_batch_size}")
    for kind, mine, theirs in (("input", repo_cfg.input, served.input), ("output", repo_cfg.output, served.output)):
        if not mine:
            continue  # left to auto-complete
        served_by = {t.name: t for t in theirs}
        for t in mine:
            s = served_by.get(t.name)
            if s is None:
                problems.append(f"{kind} '{t.name}' of config.pbtxt is not served (served: {', '.join(served_by)})")
                continue
            if s.data_type != t.data_type:
                problems.append(f"{kind} '{t.name}' is {mc.DataType.Name(t.data_type)} in config.pbtxt but "
                                f"{mc.DataType.Name(s.data_type)} on the server")
            if list(s.dims) != list(t.dims):
                problems.append(f"{kind} '{t.name}' has dims {format_shape(t.dims)} in config.pbtxt but "
                                f"{format_shape(s.dims)} on the server")
        extra = set(served_by) - {t.name for t in mine}
        if extra:
            problems.append(f"the server has {kind}s not in config.pbtxt: {', '.join(sorted(extra))}")
    if problems:
        run.add(name, "config.pbtxt", "-", "fail", "; ".join(problems),
                hint="the server runs a different config than the repository holds: restart or reload the model")
    else:
        run.add(name, "config.pbtxt", "-", "pass", f"{path} agrees with the served config")


# ---------------------------------------------------------------- inference


@dataclass(frozen=True)
class _Case:
    label: str  # "b=1", "b=4", "b=-" (non-batched)
    inputs: dict[str, np.ndarray]


def _cases(run: _Run, model: ModelUnderTest, specs: Sequence[TensorSpec],
           user_inputs: Mapping[str, np.ndarray] | None) -> list[_Case]:
    mbs = model.config.max_batch_size
    rng = np.random.default_rng(run.options.seed)
    large = min(mbs, run.options.batch_size or 4)
    if user_inputs is not None:
        given = check_inputs(model.name, user_inputs, specs, mbs)
        if mbs == 0:
            return [_Case("b=-", given)]
        b = next(iter(given.values())).shape[0] if given else 1
        cases = [_Case(f"b={b}", given)]
        if b < large:
            reps = -(-large // b)
            cases.append(_Case(f"b={large}", {k: np.concatenate([v] * reps)[:large] for k, v in given.items()}))
        return cases
    if mbs == 0:
        return [_Case("b=-", generate_inputs(specs, None, rng))]
    cases = [_Case("b=1", generate_inputs(specs, 1, rng))]
    if large > 1:
        cases.append(_Case(f"b={large}", generate_inputs(specs, large, rng)))
    return cases


def _inference_checks(run: _Run, model: ModelUnderTest, user_inputs: Mapping[str, np.ndarray] | None) -> None:
    cfg = model.config
    name = model.name
    in_specs, out_specs = tensor_specs(cfg)
    if cfg.model_transaction_policy.decoupled:
        run.add(name, "infer", "-", "skip", "decoupled model: responses stream over gRPC; not validated yet")
        return
    cases = _cases(run, model, in_specs, user_inputs)
    protocols = list(run.options.protocols)
    skipped = _unsupported_protocols(in_specs, out_specs, cases)
    stats_before = _cache_counts(run, name)
    _first_request_latency(run, model, cases[0], protocols, skipped, stats_before)
    stats_before = _cache_counts(run, name)
    reference = _reference_runner(run, model)
    for case in cases:
        results: dict[str, dict[str, np.ndarray]] = {}
        for proto in protocols:
            if proto in skipped:
                run.add(name, f"infer {case.label}", proto, "skip", skipped[proto])
                continue
            try:
                t0 = time.perf_counter()
                outputs = _infer(run, proto, model, case.inputs)
                ms = (time.perf_counter() - t0) * 1e3
            except Exception as e:
                detail, hint = _infer_error(proto, e)
                run.add(name, f"infer {case.label}", proto, "fail", detail, hint=hint)
                continue
            problems = _output_problems(outputs, out_specs, case, cfg.max_batch_size)
            run.add(name, f"infer {case.label}", proto, "fail" if problems else "pass",
                    "; ".join(problems) if problems else _describe(outputs), latency_ms=round(ms, 3),
                    hint="the outputs do not match the served config" if problems else "")
            results[proto] = outputs
        _agreement(run, name, case, results, out_specs)
        _reference_check(run, model, case, results, reference)
    _cache_check(run, model, stats_before)


def _unsupported_protocols(in_specs: Sequence[TensorSpec], out_specs: Sequence[TensorSpec],
                           cases: Sequence[_Case]) -> dict[str, str]:
    skipped: dict[str, str] = {}
    half = sorted({t.dtype.name for t in (*in_specs, *out_specs) if t.dtype.name in ("FP16", "BF16")})
    if half:
        # Triton's HTTP server refuses these as JSON ("receiving FP16 data via JSON is not supported").
        skipped["http-json"] = f"Triton's HTTP API carries {'/'.join(half)} as binary data only, not as JSON"
    for case in cases:
        for n, a in case.inputs.items():
            if a.dtype == np.object_:
                try:
                    for v in a.reshape(-1):
                        v.decode("utf-8")
                except (UnicodeDecodeError, AttributeError):
                    skipped["http-json"] = f"input '{n}' holds bytes that are not UTF-8, which JSON cannot carry"
    return skipped


def _infer(run: _Run, protocol: str, model: ModelUnderTest, inputs: Mapping[str, np.ndarray],
           sequence_id: int = 0) -> dict[str, np.ndarray]:
    cfg = model.config
    c = run.clients
    out_names = [o.name for o in cfg.output]
    kwargs: dict[str, Any] = {}
    if cfg.HasField("sequence_batching"):
        kwargs = {"sequence_id": sequence_id or 1 + int(time.monotonic_ns() % 1_000_000_000),
                  "sequence_start": True, "sequence_end": True}
    if protocol == "grpc":
        mod: Any = c.grpc_mod
        ins = []
        for n, a in inputs.items():
            i = mod.InferInput(n, list(a.shape), _wire_dtype(cfg, n, a))
            i.set_data_from_numpy(a)
            ins.append(i)
        outs = [mod.InferRequestedOutput(n) for n in out_names]
        res = c.grpc_infer.infer(model.name, ins, model_version=model.version, outputs=outs,
                                 client_timeout=run.options.timeout_s, **kwargs)
    else:
        binary = protocol == "http-binary"
        mod = c.http_mod
        ins = []
        for n, a in inputs.items():
            i = mod.InferInput(n, list(a.shape), _wire_dtype(cfg, n, a))
            i.set_data_from_numpy(a, binary_data=binary)
            ins.append(i)
        outs = [mod.InferRequestedOutput(n, binary_data=binary) for n in out_names]
        res = c.http.infer(model.name, ins, model_version=model.version, outputs=outs, **kwargs)
    result = {}
    for n in out_names:
        arr = res.as_numpy(n)
        if arr is None:
            raise _MissingOutput(n)
        if arr.dtype == np.object_ or arr.dtype.kind == "U":
            arr = str_to_bytes(arr)  # HTTP JSON gives str, the binary paths give bytes
        result[n] = arr
    return result


class _MissingOutput(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"the response has no output '{name}'")


def _wire_dtype(cfg: mc.ModelConfig, name: str, a: np.ndarray) -> str:
    for t in cfg.input:
        if t.name == name:
            return from_config(mc.DataType.Name(t.data_type)).name
    return from_numpy(a.dtype).name


def _describe(outputs: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{n} {from_numpy(a.dtype).name}{format_shape(a.shape)}" for n, a in outputs.items())


def _output_problems(outputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], case: _Case,
                     max_batch_size: int) -> list[str]:
    problems = []
    batch = next(iter(case.inputs.values())).shape[0] if max_batch_size > 0 and case.inputs else None
    for t in specs:
        a = outputs.get(t.name)
        if a is None:
            problems.append(f"output '{t.name}' is missing")
            continue
        got = from_numpy(a.dtype).name
        if t.dtype.name not in (got, "BF16"):
            problems.append(f"output '{t.name}' is {got}, the config says {t.dtype.name}")
        expected = ([batch] if batch is not None else []) + list(t.dims)
        if a.ndim != len(expected) or any(e not in (-1, s) for e, s in zip(expected, a.shape, strict=False)):
            problems.append(f"output '{t.name}' has shape {format_shape(a.shape)}, "
                            f"the config says {format_shape(expected)}")
    return problems


def _compare(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> tuple[bool, float | None, str]:
    """(equal within tolerance, max abs error, what differs). BYTES, integers and BOOL compare exactly."""
    if a.shape != b.shape:
        return False, None, f"shape {format_shape(a.shape)} vs {format_shape(b.shape)}"
    if np.object_ in (a.dtype, b.dtype):
        n_diff = int(np.sum(a != b)) if a.size else 0
        return n_diff == 0, float(n_diff > 0), "" if n_diff == 0 else f"{n_diff} of {a.size} strings differ"
    if a.dtype.kind in "biu" and b.dtype.kind in "biu":
        err = float(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))) if a.size else 0.0
        return err == 0, err, "" if err == 0 else f"{int(np.sum(a != b))} of {a.size} values differ"
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    if x.size == 0:
        return True, 0.0, ""
    nan_mismatch = np.isnan(x) != np.isnan(y)
    finite = ~(np.isnan(x) | np.isnan(y))
    with np.errstate(invalid="ignore"):
        diff = np.where(finite, np.abs(x - y), 0.0)
    diff = np.where(np.isinf(x) & np.isinf(y) & (x == y), 0.0, diff)
    err = float(np.max(diff)) if diff.size else 0.0
    bad = (diff > atol + rtol * np.abs(np.where(finite, y, 0.0))) | nan_mismatch
    n_bad = int(np.sum(bad))
    return n_bad == 0, err, "" if n_bad == 0 else f"{n_bad} of {a.size} values outside tolerance"


def _agreement(run: _Run, name: str, case: _Case, results: Mapping[str, dict[str, np.ndarray]],
               specs: Sequence[TensorSpec]) -> None:
    if len(results) < 2:
        return
    base = "http-binary" if "http-binary" in results else next(iter(results))
    for proto, outputs in results.items():
        if proto == base:
            continue
        worst = 0.0
        problems = []
        for t in specs:
            if t.name not in outputs or t.name not in results[base]:
                continue
            ok, err, what = _compare(outputs[t.name], results[base][t.name], PATH_FLOAT_TOL, PATH_FLOAT_TOL)
            worst = max(worst, err or 0.0) if err is not None else math.inf
            if not ok:
                problems.append(f"output '{t.name}': {what}")
        run.add(name, f"agree {case.label}", proto, "fail" if problems else "pass",
                (f"differs from {base}: " + "; ".join(problems)) if problems else f"identical to {base}"
                if worst == 0 else f"agrees with {base} within {PATH_FLOAT_TOL:g}",
                max_error=worst, hint="the protocols encode the tensors differently: report it with the inputs"
                if problems else "")


def _reference_runner(run: _Run, model: ModelUnderTest) -> ReferenceRunner | str:
    """A runner, or the reason there is none (a string) — or a failure row's detail prefixed '!'."""
    if model.name in run.references:
        return run.references[model.name]
    cfg = model.config
    factory = reference_factory(cfg)
    if factory is None:
        return f"no reference runner for platform '{cfg.platform or cfg.backend}' yet"
    if model.artifact is None:
        if run.options.repository is None:
            return "no repository given: pass the repository (or --reference FILE) to compare with a local run"
        return f"no model file for version {model.version} in {run.options.repository / model.name}"
    try:
        return factory(model)
    except TritonOpsError as e:
        return f"!{e.message}"
    except Exception as e:
        return f"!cannot run {model.artifact} locally: {_short(_message_of(e))}"


def _reference_check(run: _Run, model: ModelUnderTest, case: _Case, results: Mapping[str, dict[str, np.ndarray]],
                     reference: ReferenceRunner | str) -> None:
    name = model.name
    if isinstance(reference, str):
        if reference.startswith("!"):
            run.add(name, f"reference {case.label}", "-", "fail", reference[1:],
                    hint="check the model file, or point --reference at the artifact the server serves")
        else:
            run.add(name, f"reference {case.label}", "-", "skip", reference)
        return
    if not results:
        return
    try:
        expected = reference(case.inputs)
    except Exception as e:
        run.add(name, f"reference {case.label}", "-", "fail", f"the local run failed: {_short(_message_of(e))}",
                hint=f"reference: {reference.description}")
        return
    o = run.options
    for proto, outputs in results.items():
        worst: float = 0.0
        problems = []
        for oname, got in outputs.items():
            if oname not in expected:
                problems.append(f"output '{oname}' missing from the local run")
                continue
            want = np.asarray(expected[oname])
            if want.dtype.kind == "U":
                want = str_to_bytes(want)
            ok, err, what = _compare(got, want, o.atol, o.rtol)
            worst = max(worst, err) if err is not None else math.inf
            if not ok:
                problems.append(f"output '{oname}': {what}" + (f" (max error {err:.3g})" if err else ""))
        if problems:
            run.add(name, f"reference {case.label}", proto, "fail",
                    f"outputs differ from the local run ({reference.description}): " + "; ".join(problems),
                    max_error=worst,
                    hint=f"the server is not serving what the repository holds (tolerance atol={o.atol:g}, "
                         f"rtol={o.rtol:g}): reload the model, or compare with --reference FILE")
        else:
            run.add(name, f"reference {case.label}", proto, "pass", f"equal to {reference.description}",
                    max_error=worst)


# ---------------------------------------------------------------- latency and cache


def _first_request_latency(run: _Run, model: ModelUnderTest, case: _Case, protocols: Sequence[str],
                           skipped: Mapping[str, str], stats_before: tuple[int, int, int] | None) -> None:
    usable = [p for p in ("grpc", "http-binary", "http-json") if p in protocols and p not in skipped]
    if not usable:
        return
    proto = usable[0]
    try:
        t0 = time.perf_counter()
        _infer(run, proto, model, case.inputs)
        first = (time.perf_counter() - t0) * 1e3
        times = []
        rng = np.random.default_rng(run.options.seed + 1)
        in_specs, _ = tensor_specs(model.config)
        batch = None if model.config.max_batch_size == 0 else next(iter(case.inputs.values())).shape[0]
        for _ in range(run.options.latency_repeats):
            # Fresh inputs so a response cache cannot answer the repeats.
            given = run.options.inputs is not None or (
                model.model_dir is not None and (model.model_dir / EXAMPLES_FILE).is_file())
            inputs = case.inputs if given else generate_inputs(in_specs, batch, rng)
            t0 = time.perf_counter()
            _infer(run, proto, model, inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    except Exception as e:
        detail, hint = _infer_error(proto, e)
        run.add(model.name, "first request", proto, "fail", detail, hint=hint)
        return
    served = stats_before[0] if stats_before else 0
    note = "" if served == 0 else f"; not the model's first request: it had served {served} before"
    median = statistics.median(times) if times else first
    run.add(model.name, "first request", proto, "pass",
            f"first request {first:.2f} ms ({case.label}), then median {median:.2f} ms over {len(times)}{note}",
            latency_ms=round(first, 3))


def _cache_counts(run: _Run, name: str) -> tuple[int, int, int] | None:
    """(inference successes, cache hits, cache misses) from the statistics extension."""
    try:
        stats = run.clients.http.get_inference_statistics(name)
        total = [0, 0, 0]
        for s in stats.get("model_stats", []):
            inf = s.get("inference_stats", {})
            total[0] += int(inf.get("success", {}).get("count", 0))
            total[1] += int(inf.get("cache_hit", {}).get("count", 0))
            total[2] += int(inf.get("cache_miss", {}).get("count", 0))
        return total[0], total[1], total[2]
    except Exception:
        return None


def _metric_hits(run: _Run, name: str) -> int | None:
    url = run.options.metrics_url
    if not url:
        return None
    try:
        with urllib.request.urlopen(f"http://{url}/metrics", timeout=5) as r:
            text = r.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    total = None
    pattern = re.compile(r'^nv_cache_num_hits_per_model\{([^}]*)\}\s+([0-9.eE+]+)$')
    for line in text.splitlines():
        m = pattern.match(line)
        if m and f'model="{name}"' in m.group(1):
            total = (total or 0) + int(float(m.group(2)))
    return total


def _cache_check(run: _Run, model: ModelUnderTest, before: tuple[int, int, int] | None) -> None:
    if not model.config.response_cache.enable:
        return
    name = model.name
    after = _cache_counts(run, name)
    if before is None or after is None:
        run.add(name, "response cache", "-", "skip", "the server's statistics are unavailable")
        return
    hits, misses = after[1] - before[1], after[2] - before[2]
    metric = _metric_hits(run, name)
    from_metrics = f"; metrics: nv_cache_num_hits_per_model {metric}" if metric is not None else ""
    if hits > 0:
        run.add(name, "response cache", "-", "pass",
                f"{hits} hits, {misses} misses for repeated identical requests{from_metrics}")
    elif misses == 0:
        run.add(name, "response cache", "-", "skip",
                "the model enables response_cache but the server has no cache (no hits or misses recorded)",
                hint="start the server with a cache: tritonops serve --cache-size 64MB (--cache-config local,size=N)")
    else:
        run.add(name, "response cache", "-", "fail",
                f"identical requests were never served from the cache ({misses} misses, 0 hits){from_metrics}",
                hint="check the cache size (entries larger than the cache are not stored) and the server log")


# ---------------------------------------------------------------- --serve


DEFAULT_SERVE_CACHE_BYTES = 16 << 20


def validate_repository(repository: Path, options: ValidateOptions, progress: Progress | None = None, *,
                        cache_size_bytes: int | None = None,
                        references: Mapping[str, ReferenceRunner] | None = None) -> ValidationReport:
    """Start a real server on ``repository`` (free ports, loopback), validate every model, stop it.

    The server starts even when some models fail to load, so those appear as failed rows with the
    server's reason instead of aborting the whole validation. A response cache is configured when
    any model enables ``response_cache`` (``cache_size_bytes``, default 16 MB)."""
    from dataclasses import replace

    from tritonops.server import ServerOptions, TritonServer

    say = progress or (lambda _msg: None)
    if not repository.is_dir():
        raise UsageError(f"model repository '{repository}' is not a directory", "check the path")
    if cache_size_bytes is None and _any_response_cache(repository):
        cache_size_bytes = DEFAULT_SERVE_CACHE_BYTES
    say(f"starting tritonserver on {repository}")
    server_options = ServerOptions(repository=repository, cache_size_bytes=cache_size_bytes,
                                   exit_on_error=False, strict_readiness=False)
    with TritonServer(server_options) as server:
        served = replace(options, http_url=server.http_url, grpc_url=server.grpc_url,
                         metrics_url=server.metrics_url, repository=options.repository or repository)
        return validate(served, progress, references=references)


def _any_response_cache(repository: Path) -> bool:
    from tritonops.pbtxt import read_config

    for path in sorted(repository.glob("*/config.pbtxt")):
        try:
            if read_config(path).response_cache.enable:
                return True
        except TritonOpsError:
            continue  # the server reports a broken config itself
    return False
