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

Modules: ``report`` (result rows, the report, options), ``engine`` (the validation itself),
``inference`` (inference, agreement, reference and latency checks), ``sequences`` (stateful models),
``decoupled`` (decoupled models), ``outputs`` (responses against the config and the local run),
``cache`` (response-cache checks), ``run`` (the state of one run) and ``serve`` (``validate --serve``).
"""

from __future__ import annotations

from tritonops.reference import REFERENCE_FACTORIES, ModelUnderTest, ReferenceFactory, ReferenceRunner
from tritonops.samples import EXAMPLES_FILE, check_inputs, generate_inputs, load_inputs
from tritonops.validate.engine import validate
from tritonops.validate.report import (
    PROTOCOLS,
    SCHEMA,
    STREAM_PROTOCOL,
    CheckResult,
    ValidateOptions,
    ValidationReport,
)
from tritonops.validate.serve import DEFAULT_SERVE_CACHE_BYTES, validate_repository

__all__ = [
    "DEFAULT_SERVE_CACHE_BYTES",
    "EXAMPLES_FILE",
    "PROTOCOLS",
    "REFERENCE_FACTORIES",
    "SCHEMA",
    "STREAM_PROTOCOL",
    "CheckResult",
    "ModelUnderTest",
    "ReferenceFactory",
    "ReferenceRunner",
    "ValidateOptions",
    "ValidationReport",
    "check_inputs",
    "generate_inputs",
    "load_inputs",
    "validate",
    "validate_repository",
]
