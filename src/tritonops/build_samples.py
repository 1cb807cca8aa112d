"""``build --samples``: real inputs instead of generated ones for the run check and verification,
the warm-up request (``--warmup``), and ``EXAMPLES_FILE`` beside config.pbtxt, which ``validate`` and
``perf`` read: one data source for every test of a model.

A sample file means what it means to every command (samples.py): the first axis counts samples;
for a model that batches a sample is one row, for one that does not a whole request."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tritonops.errors import UsageError
from tritonops.perf.inputs import load_samples, serialize_bytes
from tritonops.repository import StagedModel
from tritonops.samples import EXAMPLES_FILE, check_inputs, load_inputs, stack_samples, write_examples
from tritonops.spec import ModelSpec, WarmupInput


@dataclass(frozen=True)
class Samples:
    """``--samples`` as client-shaped arrays (the first axis counts samples) and where they came from."""

    arrays: dict[str, np.ndarray]
    source: Path

    @property
    def count(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0]) if self.arrays else 0


def read_samples(path: Path | None, spec: ModelSpec) -> Samples | None:
    """Read ``path`` against the spec's inputs: npz, text lines and images through the one sample
    loader (perf.inputs), JSON in Triton's/KServe's request form through samples.load_inputs."""
    if path is None:
        return None
    mbs = spec.max_batch_size
    if path.suffix.lower() == ".json":
        given = check_inputs(spec.name, load_inputs(path), spec.inputs, mbs)
        arrays = given if mbs > 0 else {k: v[None] for k, v in given.items()}
    else:
        loaded = load_samples(path, spec.inputs, mbs > 0)
        arrays = stack_samples(loaded.items)
    if not arrays:
        raise UsageError(f"{path} holds no samples", "give at least one sample for each input")
    return Samples(arrays, path)


def sample_feeds(spec: ModelSpec, samples: Samples) -> tuple[tuple[int | None, ...], list[dict[str, np.ndarray]]]:
    """Batch sizes and requests for the checks: the first sample alone, then as many samples as
    fit in one batch (a model without batching: the first two samples, each a whole request)."""
    n = samples.count
    if spec.max_batch_size == 0:
        picks = [(None, i) for i in range(min(n, 2))]
        return tuple(b for b, _ in picks), [{k: v[i] for k, v in samples.arrays.items()} for _, i in picks]
    sizes = (1,) if n == 1 or spec.max_batch_size == 1 else (1, min(n, spec.max_batch_size))
    return sizes, [{k: v[:b] for k, v in samples.arrays.items()} for b in sizes]


def keep_samples(staged: StagedModel, work: Path, spec: ModelSpec, samples: Samples, notes: list[str]) -> ModelSpec:
    """Save the samples beside config.pbtxt (EXAMPLES_FILE: validate and perf read it) and, with
    --warmup, make the first sample the warm-up request (raw files under warmup/)."""
    arrays = samples.arrays
    if spec.max_batch_size > 0 and samples.count > spec.max_batch_size:
        arrays = {k: v[:spec.max_batch_size] for k, v in arrays.items()}
        notes.append(f"saved the first {spec.max_batch_size} of {samples.count} samples "
                     f"(validate sends them as one batch)")
    staged.add_model_file(write_examples(work / EXAMPLES_FILE, arrays), EXAMPLES_FILE)
    notes.append(f"samples from {samples.source} saved as {EXAMPLES_FILE}")
    if not spec.warmup:
        return spec
    warm = []
    (work / "warmup").mkdir(exist_ok=True)
    for t in spec.inputs:
        if t.name not in arrays:
            continue  # an optional input the samples leave out
        first = arrays[t.name][0]  # one row of a batch, or one whole request
        raw = work / "warmup" / t.name
        raw.write_bytes(serialize_bytes(first) if t.dtype.is_string else
                        np.ascontiguousarray(first, dtype=np.dtype(first.dtype).newbyteorder("<")).tobytes())
        staged.add_model_file(raw, f"warmup/{t.name}")
        warm.append(WarmupInput(t.name, t.dtype, tuple(first.shape) or (1,), t.name))
    return replace(spec, warmup_inputs=tuple(warm))
