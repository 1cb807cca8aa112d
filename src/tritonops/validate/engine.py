"""The validation itself: reach the server, read its repository index, and check every selected model
(readiness, metadata against the served and the repository's config, then inference)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from tritonops.client import API_PROTOCOLS, IndexEntry, TritonClient, first_line, message_of
from tritonops.dtypes import from_config
from tritonops.errors import TritonOpsError, UsageError, ValidationFailed
from tritonops.names import check_model_name
from tritonops.pbtxt import read_config
from tritonops.progress import Progress, reporter
from tritonops.reference import (
    ModelUnderTest,
    ReferenceRunner,
    artifact_path,
)
from tritonops.samples import EXAMPLES_FILE, format_shape, load_inputs
from tritonops.validate.inference import inference_checks
from tritonops.validate.report import SERVER, ValidateOptions, ValidationReport
from tritonops.validate.run import ValidationRun


def validate(options: ValidateOptions, progress: Progress | None = None, *,
             references: Mapping[str, ReferenceRunner] | None = None) -> ValidationReport:
    """Validate the server at ``options.http_url`` / ``grpc_url`` and its models.

    ``references`` maps model names to reference runners, overriding :data:`REFERENCE_FACTORIES`
    (e.g. for an ensemble). Raises ServerError when the server cannot be reached, ValidationFailed
    for an unknown model, UsageError for bad inputs; every other problem is a failed row."""
    say = reporter(progress)
    user_inputs = load_inputs(options.inputs) if options.inputs is not None else None
    clients = TritonClient(options.http_url, options.grpc_url, timeout_s=options.timeout_s,
                           grpc_max_message_bytes=options.grpc_max_message_bytes)
    try:
        run = ValidationRun(options, clients, say, references or {})
        version = _server_checks(run)
        index = run.clients.models()
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


def _server_checks(run: ValidationRun) -> str:
    run.say(f"contacting {run.options.http_url}")
    return run.clients.check_reachable()


def _health_checks(run: ValidationRun, index: Mapping[str, IndexEntry]) -> None:
    not_ready = sorted(n for n, e in index.items() if e.state != "READY" and not e.unloaded)
    for proto in ("http", "grpc"):
        live = run.clients.is_server_live(proto)
        run.add(SERVER, "live", proto, "pass" if live else "fail", "live" if live else "not live",
                hint="" if live else "check the server log")
        ready = run.clients.is_server_ready(proto)
        because = f": models not ready: {', '.join(not_ready)}" if not_ready else ""
        run.add(SERVER, "ready", proto, "pass" if ready else "fail", "ready" if ready else f"not ready{because}",
                hint="" if ready else "with strict readiness (the default) a server is not ready while any model "
                                      "failed to load: see the models' rows and the server log")


def _select_models(options: ValidateOptions, index: Mapping[str, IndexEntry]) -> list[str]:
    if not options.models:
        loaded = sorted(n for n, e in index.items() if not e.unloaded)
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


def _validate_model(run: ValidationRun, name: str, entry: IndexEntry,
                    user_inputs: Mapping[str, np.ndarray] | None) -> None:
    run.say(f"validating {name}")
    opts = run.options
    # ---- ready
    reason = first_line(entry.reason) or "the server gives no reason"
    ready = {}
    for proto in ("http", "grpc"):
        ready[proto] = ok = entry.state == "READY" and run.clients.is_model_ready(name, entry.version, proto)
        run.add(name, "ready", proto, "pass" if ok else "fail", f"version {entry.version} ready" if ok else
                f"not ready ({entry.state or 'UNKNOWN'}): {reason}",
                hint="" if ok else "see the server log for the whole error; `tritonops check REPOSITORY` "
                                   "finds config mistakes")
    if not all(ready.values()):
        return
    # ---- metadata and config
    configs = {}
    for proto in API_PROTOCOLS:
        try:
            configs[proto] = cfg = run.clients.model_config(name, protocol=proto)
            problems = _metadata_vs_config(run.clients.model_metadata(name, protocol=proto), cfg)
        except Exception as e:
            run.add(name, "metadata", proto, "fail", f"cannot read metadata/config: {message_of(e)}",
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
    inference_checks(run, model, user_inputs)


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


def _check_repository_config(run: ValidationRun, name: str, model_dir: Path, served: mc.ModelConfig) -> None:
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
