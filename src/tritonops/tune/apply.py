"""Candidates applied to a running server without restarting it and without writing its repository.

Explicit model control: ``load_model(name, config=<candidate>)`` (Triton's config override) swaps
the config in place; at the end every model that was changed is loaded back with the config the
server ran before the search (also after Ctrl-C and errors). That is
why ``--url`` works against a server whose files the user cannot write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from tritonclient.utils import InferenceServerException

from tritonops.client import TritonClient, first_line, message_of
from tritonops.errors import ServerError, UsageError
from tritonops.pbtxt import ModelConfig
from tritonops.progress import Progress
from tritonops.tune.space import Candidate, apply_candidate, candidate_of

LOAD_TIMEOUT_S = 300.0
EXPLICIT_HINT = ("tune swaps configs with Triton's model control API: start the server with "
                 "--model-control-mode=explicit (tritonops serve --explicit), or use --serve REPO")


class CandidateRefused(Exception):
    """The server would not load a candidate config (its reason): a measurement that failed, not a search that did."""


@dataclass(frozen=True)
class TunedModels:
    """The models a search changes, as the server ran them before: name -> served config."""

    top: str
    originals: Mapping[str, ModelConfig]
    ensemble_steps: tuple[str, ...] = ()
    ensemble_batch: int = 0  # the ensemble's max_batch_size: no step may go below it

    def start(self) -> dict[str, Candidate]:
        return {m: candidate_of(c) for m, c in self.originals.items()}


def _explicit_refusal(text: str) -> bool:
    low = text.lower()
    return "explicit model load / unload is not allowed" in low or ("model control" in low and "not" in low)


def discover(client: TritonClient, model: str) -> TunedModels:
    """The model (or, for an ensemble, its composing models) as the server runs them now."""
    try:
        entries = client.models()
    except Exception as e:
        raise ServerError(f"cannot read the repository index at {client.http_url}: {first_line(message_of(e))}",
                          "check --url and that the server is up") from None
    entry = entries.get(model)
    if entry is None:
        raise UsageError(f"model '{model}' is not in the server's repository",
                         f"served models: {', '.join(sorted(entries)) or 'none'}")
    if not entry.ready:
        raise UsageError(f"model '{model}' is not loaded ({entry.state or 'not loaded'}"
                         f"{': ' + first_line(entry.reason) if entry.reason else ''})",
                         f"load it first (tritonops serve REPO --explicit --load-model {model}) or use --serve REPO")
    top = client.model_config(model)
    if top.platform != "ensemble":
        return TunedModels(model, {model: top})
    steps: list[str] = []
    for s in top.ensemble_scheduling.step:
        if s.model_name not in steps:
            steps.append(s.model_name)
    originals: dict[str, ModelConfig] = {}
    for name in steps:
        cfg = client.model_config(name)
        if cfg.platform == "ensemble":
            raise UsageError(f"'{model}' calls the ensemble '{name}'; tune tunes the composing models of one ensemble",
                             f"tune '{name}' on its own")
        originals[name] = cfg
    return TunedModels(model, originals, tuple(steps), int(top.max_batch_size))


def check_explicit(client: TritonClient, models: TunedModels, hint: str = EXPLICIT_HINT) -> None:
    """Load the first model again with the config it runs now (a no-op for the server): refused when
    the server is not in explicit mode (a UsageError with ``hint``)."""
    name = next(iter(models.originals))
    try:
        client.load_model(name, config=models.originals[name])
    except InferenceServerException as e:
        text = e.message() or str(e)
        if _explicit_refusal(text):
            raise UsageError(f"the server at {client.http_url} is not in explicit model-control mode "
                             f"({first_line(text)})", hint) from None
        raise ServerError(f"the server refused to reload '{name}': {first_line(text)}",
                          "check the server log") from None
    except OSError as e:  # it went away (crashed, or was stopped) between the index and the reload
        raise ServerError(f"the server at {client.http_url} went away while '{name}' was reloaded: {e}",
                          "check the server log; nothing was measured or written") from None


class Applier:
    """Loads candidate configs; remembers what it changed and loads the originals back on close."""

    def __init__(self, client: TritonClient, models: TunedModels, progress: Progress) -> None:
        self.client = client
        self.models = models
        self.progress = progress
        self.current: dict[str, Candidate] = models.start()
        self.changed: set[str] = set()

    def apply(self, setting: Mapping[str, Candidate]) -> None:
        """Load every model whose candidate differs from what is loaded now."""
        for name, cand in setting.items():
            if self.current.get(name) == cand:
                continue
            try:
                self.load_config(name, apply_candidate(self.models.originals[name], cand))
            except OSError as e:
                raise ServerError(f"the server went away while loading a candidate of '{name}': {e}",
                                  "the journal keeps what was measured; --resume continues") from None
            self.current[name] = cand

    def load_config(self, name: str, cfg: ModelConfig) -> None:
        """Load ``name`` with ``cfg`` as a config override (any change, not only a candidate's);
        :meth:`restore` loads its original back. A refusal raises CandidateRefused (the server's
        reason); a server that went away, OSError."""
        self.changed.add(name)
        self.current.pop(name, None)  # unknown until the load answers
        try:
            self.client.load_model(name, config=cfg)
        except InferenceServerException as e:
            raise CandidateRefused(first_line(e.message() or str(e))) from None

    def restore(self) -> list[str]:
        """Load every changed model back with the config it was served with; the names that failed.

        (A plain ``load_model(name)`` after an override is not enough: Triton 2.51 then kept the
        override's ``parameters``.)"""
        failed = []
        for name in sorted(self.changed):
            try:
                self.client.load_model(name, config=self.models.originals[name])
                self.current[name] = candidate_of(self.models.originals[name])
            except Exception:  # restoring must try every model, and must not hide the error that ended the run
                failed.append(name)
        if not failed:
            self.changed.clear()
        return failed


@contextlib.contextmanager
def applied(client: TritonClient, models: TunedModels, progress: Progress, *,
            state_unknown: bool = False) -> Iterator[Applier]:
    """An Applier whose changes are undone when the block ends, however it ends. ``state_unknown``
    (a resumed run whose predecessor crashed may have left a candidate loaded): every model is
    loaded before its first measurement and loaded back at the end."""
    applier = Applier(client, models, progress)
    if state_unknown:
        applier.current.clear()
        applier.changed.update(models.originals)
    try:
        yield applier
    finally:
        if applier.changed:
            progress(f"loading the original config of {', '.join(sorted(applier.changed))} back")
            applier.restore()


@dataclass
class StepStats:
    """Cumulative statistics counters of one model: success count, queue and compute time (ns)."""

    count: int = 0
    queue_ns: int = 0
    compute_ns: int = 0
    executions: int = 0
    inferences: int = 0

    def minus(self, before: StepStats) -> StepStats:
        return StepStats(self.count - before.count, self.queue_ns - before.queue_ns,
                         self.compute_ns - before.compute_ns, self.executions - before.executions,
                         self.inferences - before.inferences)

    def to_dict(self) -> dict[str, float | None]:
        n = self.count
        return {"requests": n, "queue_us": self.queue_ns / n / 1000 if n else None,
                "compute_us": self.compute_ns / n / 1000 if n else None,
                "avg_batch": self.inferences / self.executions if self.executions else None}


@dataclass
class StatsProbe:
    """Per-model queue/compute deltas around a measurement (for an ensemble: which step is the bottleneck)."""

    client: TritonClient
    names: tuple[str, ...]
    before: dict[str, StepStats] = field(default_factory=dict)

    def snapshot(self) -> dict[str, StepStats]:
        out: dict[str, StepStats] = {}
        for name in self.names:
            total = StepStats()
            try:
                stats = self.client.statistics(name).get("model_stats", [])
            except Exception:  # statistics are advisory: a failed query leaves this step unknown
                stats = None
            if stats is None:
                continue
            for s in stats:
                inf = s.get("inference_stats", {})
                total.count += int(inf.get("success", {}).get("count", 0))
                total.queue_ns += int(inf.get("queue", {}).get("ns", 0))
                total.compute_ns += sum(int(inf.get(k, {}).get("ns", 0))
                                        for k in ("compute_input", "compute_infer", "compute_output"))
                total.executions += int(s.get("execution_count", 0))
                total.inferences += int(s.get("inference_count", 0))
            out[name] = total
        return out

    def start(self) -> None:
        self.before = self.snapshot()

    def delta(self) -> dict[str, dict[str, float | None]]:
        after = self.snapshot()
        return {n: after[n].minus(self.before[n]).to_dict() for n in after if n in self.before}
