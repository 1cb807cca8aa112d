"""``tritonops tune``: the options, the run (search, final rounds, ranking, promote) and its result."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from tritonops.client import TritonClient, grpc_beside, normalize_url
from tritonops.errors import ServerError, UsageError
from tritonops.names import check_model_name
from tritonops.pbtxt import config_to_json, dict_to_config
from tritonops.perf.analyzer import require_perf_analyzer
from tritonops.perf.inputs import check_samples_path
from tritonops.perf.target import Target, http_alive
from tritonops.progress import Progress, reporter
from tritonops.server import ServerOptions, TritonServer
from tritonops.tune.apply import LOAD_TIMEOUT_S, StatsProbe, TunedModels, applied, check_explicit, discover
from tritonops.tune.journal import Journal, new_journal, read_header, resume_journal
from tritonops.tune.measure import MeasureSettings
from tritonops.tune.memory import MemoryProbe, memory_probe
from tritonops.tune.objective import Kind, Objective, Percentile, rank
from tritonops.tune.promote import promote
from tritonops.tune.report import write_tune_report
from tritonops.tune.result import TuneResult
from tritonops.tune.search import (
    SearchContext,
    Setting,
    Strategy,
    brute,
    final_rounds,
    finalists,
    quick,
    setting_key,
)
from tritonops.tune.space import Candidate, check_space_models, fingerprint, read_space_file, space_for

LoadMode = Literal["concurrency", "request_rate"]

DEFAULT_CONCURRENCY = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class TuneOptions:
    model: str
    output_dir: Path | None = None  # default: out/tune/MODEL
    serve: Path | None = None
    url: str | None = None
    grpc_url: str | None = None
    objective: Kind = "throughput"
    percentile: Percentile = "p99"
    budget_ms: float | None = None
    strategy: Strategy = "quick"
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    space_file: Path | None = None
    max_measurements: int | None = None
    final_candidates: int = 2
    final_rounds: int = 2
    protocol: Literal["http", "grpc"] = "grpc"
    measurement_interval_ms: int = 1000
    stability_percentage: float = 15.0
    max_trials: int = 6
    timeout_s: float = 120.0
    samples: Path | None = None
    shapes: tuple[str, ...] = ()
    promote: bool = False
    resume: bool = False
    request_rate: tuple[float, ...] = ()  # offered rates (Poisson arrivals) instead of the concurrency sweep
    at_throughput: float | None = None  # --objective latency: the lowest latency at this throughput
    max_memory_mb: float | None = None  # candidates whose server memory is above it are infeasible
    instance_kind: Literal["cpu", "gpu"] | None = None  # None: the kind each model is served with

    def __post_init__(self) -> None:
        if self.samples is not None:  # before any server is asked
            check_samples_path(self.samples)
        check_model_name(self.model)
        self.objective_spec  # noqa: B018 (constructing it checks the objective and its limits)
        if any(not r > 0 for r in self.request_rate):
            raise UsageError("--request-rate needs positive values", "e.g. --request-rate 100,200,400")
        if self.instance_kind not in (None, "cpu", "gpu"):
            raise UsageError(f"--instance-kind '{self.instance_kind}' is not cpu or gpu", "use --instance-kind gpu")
        if self.strategy not in ("quick", "brute"):
            raise UsageError(f"--strategy '{self.strategy}' is not quick or brute", "use --strategy quick")
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise UsageError("--concurrency needs positive values", "e.g. --concurrency 1,4,16")
        if self.max_measurements is not None and self.max_measurements < 1:
            raise UsageError("--max-measurements must be >= 1", "e.g. --max-measurements 20")
        if self.final_candidates < 1 or self.final_rounds < 0:
            raise UsageError("--final-candidates must be >= 1 and --final-rounds >= 0", "e.g. --final-rounds 2")
        if self.timeout_s <= 0:
            raise UsageError("--timeout must be positive", "e.g. --timeout 120 (seconds per measurement)")
        if self.serve is not None and self.url is not None:
            raise UsageError("give either --serve REPO or --url HOST:PORT, not both", "drop one of them")
        if self.serve is None and self.url is None:
            raise UsageError("no server to tune on", "give --serve model_repository/ or --url 127.0.0.1:8000")
        if self.promote and self.serve is None:
            raise UsageError("--promote writes into the repository, which tune only knows with --serve REPO",
                             "run with --serve REPO --promote on a copy of the server's repository")

    @property
    def out(self) -> Path:
        return self.output_dir or Path("out") / "tune" / self.model

    @property
    def load_mode(self) -> LoadMode:
        return "request_rate" if self.request_rate else "concurrency"

    @property
    def objective_spec(self) -> Objective:
        return Objective(self.objective, self.percentile, self.budget_ms, self.at_throughput, self.max_memory_mb,
                         bool(self.request_rate))

    def measure_settings(self) -> MeasureSettings:
        return MeasureSettings(protocol=self.protocol, measurement_interval_ms=self.measurement_interval_ms,
                               stability_percentage=self.stability_percentage, max_trials=self.max_trials,
                               timeout_s=self.timeout_s, samples=self.samples, shapes=self.shapes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (str(v.absolute()) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in d.items()}


PATH_FIELDS = ("output_dir", "serve", "space_file", "samples")
# What the journal fixes: a resumed run measures the same things the same way. Where the server is
# may change (a new --serve start, another --url).
SERVER_FIELDS = ("serve", "url", "grpc_url", "promote")


def resume_options(directory: Path, *, concurrency: tuple[int, ...] | None = None,
                   request_rate: tuple[float, ...] = (), **server: Any) -> TuneOptions:
    """The options of the run whose journal is in ``directory``, with the server given now (if any).
    Loads given now (``concurrency``, ``request_rate``) replace the saved ones, so that a journal
    measured at other loads, or in the other mode, is refused rather than silently continued."""
    saved = read_header(directory).get("options", {})
    kwargs: dict[str, Any] = {}
    names = {f.name for f in fields(TuneOptions)}
    for k, value in saved.items():
        if k not in names:
            continue
        if k in PATH_FIELDS and value is not None:
            kwargs[k] = Path(value)
        else:
            kwargs[k] = tuple(value) if isinstance(value, list) else value
    given = {k: v for k, v in server.items() if k in SERVER_FIELDS and v not in (None, False)}
    if "serve" in given or "url" in given:  # the server given now replaces the saved one
        kwargs.update(serve=None, url=None, grpc_url=None)
    kwargs.update(given)
    if request_rate:
        kwargs.update(request_rate=tuple(request_rate), concurrency=DEFAULT_CONCURRENCY)
    elif concurrency is not None:
        kwargs.update(concurrency=tuple(concurrency), request_rate=())
    kwargs["output_dir"] = directory
    kwargs["resume"] = True
    return TuneOptions(**kwargs)


@contextlib.contextmanager
def tune_target(options: TuneOptions, progress: Progress) -> Iterator[tuple[Target, int | None]]:
    """``--serve``: a local server in explicit mode with the model loaded; ``--url``: the running one.
    With the target comes the server's pid when tune started it (for its memory), else None."""
    if options.url is not None:
        http = normalize_url(options.url)
        grpc = normalize_url(options.grpc_url, "--grpc-url") if options.grpc_url else grpc_beside(http)
        yield Target(http_url=http, grpc_url=grpc, alive=lambda: http_alive(http)), None
        return
    repo = options.serve
    assert repo is not None
    if not repo.is_dir():
        raise UsageError(f"model repository '{repo}' is not a directory", "give --serve PATH/TO/model_repository")
    if not (repo / options.model / "config.pbtxt").is_file():
        raise UsageError(f"model '{options.model}' has no config.pbtxt in {repo}",
                         "build it first (tritonops build) or check the model name")
    progress(f"starting tritonserver on {repo} (explicit model control)")
    with TritonServer(ServerOptions(repository=repo, explicit=True, load_models=(options.model,))) as server:
        yield Target(http_url=server.http_url, grpc_url=server.grpc_url, metrics_url=server.metrics_url,
                     alive=lambda: server.running() and http_alive(server.http_url),
                     log_tail=lambda: server.log_tail(30), served_by_us=True), server.pid


def _memory(options: TuneOptions, target: Target, pid: int | None) -> MemoryProbe | None:
    """The server's memory is measured whenever it can be; with --max-memory-mb it must be."""
    try:
        return memory_probe(target.http_url, pid)
    except UsageError:
        if options.max_memory_mb is not None:
            raise
        return None


def _originals_from(header: dict[str, Any], models: TunedModels) -> TunedModels:
    saved = header.get("originals")
    if not isinstance(saved, dict) or set(saved) != set(models.originals):
        return models
    originals = {n: dict_to_config(d, f"the journal's original config of '{n}'") for n, d in saved.items()}
    return TunedModels(models.top, originals, models.ensemble_steps, models.ensemble_batch)


def _setting_of(journal: Journal, key: str) -> dict[str, Candidate]:
    return {m: Candidate.from_dict(d) for m, d in journal.settings.get(key, {}).items()}


def run_tune(options: TuneOptions, progress: Progress | None = None) -> TuneResult:
    """Search, re-measure the finalists, rank; promote when asked. Ctrl-C returns what was measured
    (``interrupted``); a server that dies raises ServerError with the journal kept."""
    say = reporter(progress)
    o = options
    started = time.monotonic()
    require_perf_analyzer()
    space_file = read_space_file(o.space_file) if o.space_file is not None else None
    out = o.out
    if space_file is not None and space_file.concurrency and o.request_rate:
        raise UsageError(f"{space_file.path} sets concurrency: and --request-rate was given",
                         "give one load: drop --request-rate, or concurrency: from the space file")
    with tune_target(o, say) as (target, pid), TritonClient(target.http_url, target.grpc_url,
                                                            timeout_s=LOAD_TIMEOUT_S) as client:
        memory = _memory(o, target, pid)  # refused before the server is asked anything
        version = client.check_reachable()
        models = discover(client, o.model)
        check_explicit(client, models)
        if o.resume:  # the configs served before the first run, which a crash may have left changed
            models = _originals_from(read_header(out), models)
        if space_file is not None:
            check_space_models(space_file, tuple(models.originals))
        spaces = {name: space_for(cfg, space_file, ensemble_batch=models.ensemble_batch, kind=o.instance_kind)
                  for name, cfg in models.originals.items()}
        concurrency = (space_file.concurrency if space_file and space_file.concurrency else None) or o.concurrency
        start: Setting = {m: c.placed(o.instance_kind) for m, c in models.start().items()}
        objective = o.objective_spec
        loads = {"load_mode": o.load_mode, "concurrency": [] if o.request_rate else list(concurrency),
                 "request_rate": list(o.request_rate)}
        fp = fingerprint(spaces, {"objective": objective.to_dict(), **loads,
                                  "start": {m: c.to_dict() for m, c in start.items()}, "strategy": o.strategy})
        header = {"model": o.model, "fingerprint": fp, "options": o.to_dict(), "load_mode": o.load_mode,
                  "originals": {n: json.loads(config_to_json(c)) for n, c in models.originals.items()}}
        journal = resume_journal(out, header) if o.resume else new_journal(out, header)
        say(f"tuning {o.model}: {objective.describe()}, {o.strategy} search over "
            f"{', '.join(f'{m} ({len(s.grid())} configs)' for m, s in spaces.items())}")
        interrupted = False
        probe = StatsProbe(client, tuple(models.originals)) if models.ensemble_steps else None
        ctx: SearchContext | None = None
        changed: set[str] = set()
        try:
            with applied(client, models, say, state_unknown=o.resume) as applier:
                changed = applier.changed
                ctx = SearchContext(target=target, model=o.model, applier=applier, journal=journal, spaces=spaces,
                                    concurrency=concurrency, objective=objective, settings=o.measure_settings(),
                                    work_dir=out / "runs", progress=say, probe=probe,
                                    max_measurements=o.max_measurements, request_rates=o.request_rate,
                                    memory=memory)
                try:
                    (quick if o.strategy == "quick" else brute)(ctx, start)
                    searched = rank([m for m in journal if m.round == 0], objective, ctx.evaluated)
                    chosen = [s for s in searched.scores if s.points and s.setting in journal.settings]
                    finals = finalists(chosen, o.final_candidates, setting_key(start), objective)
                    ctx.max_measurements = None
                    final_rounds(ctx, [(_setting_of(journal, s.setting), s) for s in finals], o.final_rounds)
                except KeyboardInterrupt:
                    interrupted = True
                    say("interrupted: loading the original configs back")
            restore_failed = tuple(sorted(changed))  # what applied() could not load back
        except ServerError as e:
            e.hint = (f"{e.hint + '; ' if e.hint else ''}the journal keeps {len(journal.measurements)} "
                      f"measurement(s): continue with tritonops tune --resume {out}")
            raise
        assert ctx is not None
        ranking = rank(list(journal), objective, list(dict.fromkeys([*ctx.evaluated, *journal.settings])))
        winner = _setting_of(journal, ranking.winner.setting) if ranking.winner else {}
    result = TuneResult(
        model=o.model, strategy=o.strategy, ranking=ranking, winner=winner, start=start, start_key=setting_key(start),
        spaces=spaces, measurements=tuple(m.to_dict() for m in journal), measured=ctx.measured, reused=ctx.reused,
        output_dir=out, files={"journal": str(journal.path), "json": str(out / "tune.json"),
                               "html": str(out / "report.html")},
        interrupted=interrupted, restore_failed=restore_failed, server_version=version,
        wall_s=time.monotonic() - started, ensemble_steps=models.ensemble_steps,
        settings={**loads, "measure": o.measure_settings().to_dict(),
                  "memory": memory.source if memory is not None else None, "instance_kind": o.instance_kind,
                  "final_candidates": o.final_candidates, "final_rounds": o.final_rounds,
                  "max_measurements": o.max_measurements, "target": target.http_url},
        candidates=dict(journal.settings))
    if o.promote and not interrupted and ranking.met and winner and o.serve is not None:
        record = {"objective": objective.to_dict(), "budget_ms": objective.budget_ms, "strategy": o.strategy,
                  "summary": ranking.summary(), "winner": ranking.winner.to_dict() if ranking.winner else None,
                  "journal": str(journal.path.resolve()), "triton_version": version,
                  "measurements": [m.to_dict() for m in journal]}
        to_write = {m: c for m, c in winner.items() if c != start.get(m)}  # the models the winner changes
        if to_write:
            result = _with(result, promoted=promote(o.serve, to_write, record))
        else:
            say("the starting config won: nothing to promote")
    _write_outputs(result)
    return result


def _with(result: TuneResult, **changes: Any) -> TuneResult:
    return TuneResult(**{**{f.name: getattr(result, f.name) for f in fields(result)}, **changes})


def _write_outputs(result: TuneResult) -> None:
    out = result.output_dir
    (out / "tune.json").write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    write_tune_report(result, out / "report.html")

