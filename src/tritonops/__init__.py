"""tritonops: take a trained model to a tuned, validated NVIDIA Triton Inference Server deployment.

The library behind the ``tritonops`` command. Every command is one function here; results are
frozen objects (``--json`` prints them in one envelope); errors are :class:`TritonOpsError`
subclasses carrying a ``hint``. Names listed in ``__all__`` are the public API; every other module
and name is private and may change.

Build a model repository
    BuildOptions, build, build_many, BuildResult   one model (ONNX / TorchScript / PyTorch factory)
    load_build_file                                 the models of a ``tritonops.yaml``
    load_ensemble_file, build_ensemble              an ensemble from ``ensemble.yaml`` + numpy steps
    inspect_onnx                                    what build sees in an ONNX file
Specs and configs
    ModelSpec, TensorSpec                           typed model specs, validated at construction
    render_config, config_to_text, read_config      spec -> ``config.pbtxt`` through Triton's protobuf
    tensor_specs                                    a config's inputs and outputs as TensorSpecs
Check
    check_repository, CheckReport                   Triton's config rules, statically
Serve
    ServerOptions, TritonServer                     a real ``tritonserver`` as a context manager
Validate
    ValidateOptions, validate, validate_repository, ValidationReport
Measure
    PerfOptions, run_perf                           perf_analyzer sweeps
    LoadtestOptions, run_loadtest                   open-loop Poisson load through locust
Deploy
    ManifestOptions, write_manifests                Kubernetes / KServe / compose manifests
    RolloutOptions, deploy_versions, rollback       gated roll-outs of new versions
Errors
    TritonOpsError, UsageError, ModelError, ConversionError, RepositoryError, ServerError,
    ValidationFailed, ExternalToolError, MissingDependencyError

Names are imported on first use, so ``import tritonops`` stays cheap (the CLI starts fast).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that owns it
_OWNERS: dict[str, str] = {
    "BuildOptions": "tritonops.build",
    "BuildResult": "tritonops.build",
    "build": "tritonops.build",
    "build_many": "tritonops.build",
    "load_build_file": "tritonops.buildfile",
    "load_ensemble_file": "tritonops.ensemblefile",
    "build_ensemble": "tritonops.ensemble",
    "inspect_onnx": "tritonops.convert.onnx_inspect",
    "ModelSpec": "tritonops.spec",
    "TensorSpec": "tritonops.spec",
    "render_config": "tritonops.pbtxt",
    "config_to_text": "tritonops.pbtxt",
    "read_config": "tritonops.pbtxt",
    "tensor_specs": "tritonops.pbtxt",
    "check_repository": "tritonops.check",
    "CheckReport": "tritonops.check",
    "ServerOptions": "tritonops.server",
    "TritonServer": "tritonops.server",
    "ValidateOptions": "tritonops.validate",
    "ValidationReport": "tritonops.validate",
    "validate": "tritonops.validate",
    "validate_repository": "tritonops.validate",
    "PerfOptions": "tritonops.perf.analyzer",
    "run_perf": "tritonops.perf.analyzer",
    "LoadtestOptions": "tritonops.perf.loadtest",
    "run_loadtest": "tritonops.perf.loadtest",
    "ManifestOptions": "tritonops.deploy.manifest_spec",
    "write_manifests": "tritonops.deploy.manifests",
    "RolloutOptions": "tritonops.deploy.rollout",
    "deploy_versions": "tritonops.deploy.rollout",
    "rollback": "tritonops.deploy.rollout",
    "TritonOpsError": "tritonops.errors",
    "UsageError": "tritonops.errors",
    "ModelError": "tritonops.errors",
    "ConversionError": "tritonops.errors",
    "RepositoryError": "tritonops.errors",
    "ServerError": "tritonops.errors",
    "ValidationFailed": "tritonops.errors",
    "ExternalToolError": "tritonops.errors",
    "MissingDependencyError": "tritonops.errors",
}

__all__ = ["__version__", *_OWNERS]  # noqa: PLE0604


def __getattr__(name: str) -> Any:
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'tritonops' has no attribute {name!r}")
    value = getattr(importlib.import_module(owner), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
