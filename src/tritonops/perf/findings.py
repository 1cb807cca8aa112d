"""What a protocol study's numbers say: cells (one payload × protocol × λ over its repeats), the
findings (plain sentences) and the verdicts against the claims the study tests.

Everything here is a pure function of measured numbers. Two cells are compared only when they were
measured in the same conditions (same model, same λ, same number of repeats) and both say something
about the protocol: a cell whose load generator could not keep its schedule, or that Ctrl-C cut
short, is never counted for or against a protocol. A comparison with one protocol is not a finding.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tritonops.perf.analyzer import PerfRow
from tritonops.perf.cache import CacheCell, median_or_none, value_range
from tritonops.perf.loadtest import KEEPS_UP, PROTOCOLS, LoadProtocol, LoadtestResult, Outcome

LABEL = {"http-json": "HTTP JSON", "http-binary": "HTTP binary", "grpc": "gRPC"}
# Best to worst: a cell's outcome is the worst over its repeats.
OUTCOMES: tuple[Outcome, ...] = ("kept-up", "fell-behind", "generator-saturated", "interrupted")
COMPARABLE: tuple[Outcome, ...] = ("kept-up", "fell-behind")  # what says something about the protocol

Verdict = Literal["supported", "not supported", "mixed", "inconclusive", "not measured"]
# model -> protocol -> rows (closed loop) / (request bytes, response bytes)
Concurrency = Mapping[str, Mapping[str, Sequence[PerfRow]]]
Payloads = Mapping[str, Mapping[str, tuple[int, int]]]


@dataclass(frozen=True)
class Cell:
    """One (model, protocol, λ) over all repeats: medians, the min–max spread, the outcome."""

    protocol: LoadProtocol
    rate: float
    runs: int
    achieved_rate: float
    achieved_ratio: float  # achieved / λ
    achieved_vs_scheduled: float
    errors: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p50_range: tuple[float, float] | None
    p99_range: tuple[float, float] | None
    achieved_range: tuple[float, float]
    request_bytes: int
    response_bytes: int
    model: str = ""
    outcome: Outcome = "kept-up"  # the worst over the repeats
    outcomes: dict[str, int] = field(default_factory=dict)  # repeats per outcome
    sent_rate: float = 0.0  # what the generator sent, per second (median)
    saturated_at: float | None = None  # median sent rate of the repeats whose generator was saturated
    generator_processes: int = 1
    generator_cpu_ms: float | None = None  # median CPU ms per request of the generator
    generator_lag_p99_ms: float | None = None  # median of the repeats' send lag p99

    @property
    def keeps_up(self) -> bool:
        return self.outcome == "kept-up"

    @property
    def comparable(self) -> bool:
        return self.outcome in COMPARABLE

    @property
    def generator_ceiling(self) -> float:
        """What the generator managed to send where it could not keep the schedule, per second."""
        return self.sent_rate if self.saturated_at is None else self.saturated_at

    @property
    def label(self) -> str:
        """What the cell came to, in the words of the tables."""
        text = {"kept-up": "kept up", "fell-behind": f"fell behind (achieved {self.achieved_rate:.0f}/s)",
                "generator-saturated": f"generator saturated at {self.generator_ceiling:.0f}/s",
                "interrupted": "interrupted (Ctrl-C)"}[self.outcome]
        if len(self.outcomes) > 1:
            text += " [" + ", ".join(f"{self.outcomes[o]}× {o}" for o in OUTCOMES if o in self.outcomes) + "]"
        return text


# ------------------------------------------------------------------------------------------- aggregation
def aggregate(runs: Sequence[LoadtestResult]) -> list[Cell]:
    """Cells in the order: model (as first run), protocol, λ."""
    models = list(dict.fromkeys(r.model for r in runs))
    keys = sorted({(r.model, r.protocol, r.offered_rate) for r in runs},
                  key=lambda k: (models.index(k[0]), PROTOCOLS.index(k[1]), k[2]))
    cells = []
    for model, proto, rate in keys:
        rs = [r for r in runs if (r.model, r.protocol, r.offered_rate) == (model, proto, rate)]
        p50 = [r.latency_ms["p50"] for r in rs if r.latency_ms]
        p90 = [r.latency_ms["p90"] for r in rs if r.latency_ms]
        p99 = [r.latency_ms["p99"] for r in rs if r.latency_ms]
        achieved = [r.achieved_rate for r in rs]
        counts: dict[str, int] = {o: n for o in OUTCOMES if (n := sum(r.outcome == o for r in rs))}
        cells.append(Cell(
            protocol=proto, rate=rate, runs=len(rs), achieved_rate=float(statistics.median(achieved)),
            achieved_ratio=float(statistics.median(r.achieved_ratio for r in rs)),
            achieved_vs_scheduled=float(statistics.median(r.achieved_vs_scheduled for r in rs)),
            errors=sum(r.error_count for r in rs), p50_ms=median_or_none(p50), p90_ms=median_or_none(p90),
            p99_ms=median_or_none(p99),
            p50_range=value_range(p50), p99_range=value_range(p99), achieved_range=(min(achieved), max(achieved)),
            request_bytes=rs[0].request_bytes, response_bytes=rs[0].response_bytes, model=model,
            outcome=max((r.outcome for r in rs), key=OUTCOMES.index), outcomes=counts,
            sent_rate=float(statistics.median(r.sent_rate for r in rs)),
            saturated_at=median_or_none([r.sent_rate for r in rs if r.outcome == "generator-saturated"]),
            generator_processes=max(r.generator.processes for r in rs),
            generator_cpu_ms=median_or_none([r.generator.cpu_ms_per_request for r in rs
                                             if r.generator.cpu_ms_per_request is not None]),
            generator_lag_p99_ms=median_or_none([r.generator.lag_p99_ms for r in rs
                                                 if r.generator.lag_p99_ms is not None]),
        ))
    return cells


# ------------------------------------------------------------------------------------------- wording
def ms_text(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}")


def rates_text(rates: Sequence[float]) -> str:
    rates = sorted(rates)
    if len(rates) == 1:
        return f"{rates[0]:g} req/s"
    return f"{rates[0]:g}–{rates[-1]:g} req/s"


def bytes_text(n: int) -> str:
    return f"{n:,} B"


def models_of(cells: Sequence[Cell]) -> list[str]:
    return list(dict.fromkeys(c.model for c in cells))


def payload_size(cells: Sequence[Cell], model: str) -> int:
    """A model's payload size: its HTTP binary request (the tensors plus a small JSON header), else the
    smallest request measured."""
    sizes = {c.protocol: c.request_bytes for c in cells if c.model == model}
    return sizes.get("http-binary", min(sizes.values(), default=0))


def _protocols(cells: Sequence[Cell]) -> list[LoadProtocol]:
    return [p for p in PROTOCOLS if any(c.protocol == p for c in cells)]


def same_conditions(cells: Sequence[Cell]) -> list[Cell]:
    """Of the cells of one model and λ, those that can be compared: outcomes that say something about
    the protocol, and the same number of repeats (the most common among them)."""
    ok = [c for c in cells if c.comparable]
    if not ok:
        return []
    runs = max(ok, key=lambda c: (sum(o.runs == c.runs for o in ok), c.runs)).runs
    return [c for c in ok if c.runs == runs]


def rate_list(rates: Sequence[float]) -> str:
    return ", ".join(f"{r:g}" for r in sorted(rates)) + " req/s"


def _excluded(cells: Sequence[Cell]) -> str:
    """Why cells are left out, e.g. ' (HTTP JSON at 100/s: generator saturated at 40/s)'."""
    many = len({c.rate for c in cells}) > 1
    out = [f"{LABEL[c.protocol]}{f' at {c.rate:g}/s' if many else ''}: {c.label}" for c in cells if not c.comparable]
    return f" ({'; '.join(out)})" if out else ""


def only_measured(cells: Sequence[Cell], rates: Sequence[float]) -> str:
    """'only X was measured at …' for one model's cells at ``rates``, rate by rate."""
    groups: dict[tuple[str, ...], list[float]] = {}
    for r in sorted(rates):
        groups.setdefault(tuple(_protocols([c for c in cells if c.rate == r and c.comparable])), []).append(r)
    parts = [f"{' and '.join(LABEL[p] for p in protos) or 'no protocol'}{' was measured' if i == 0 else ''} at "
             f"{rate_list(rs)}" for i, (protos, rs) in enumerate(groups.items())]
    return f"only {', '.join(parts)}{_excluded(cells)}"


# ------------------------------------------------------------------------------------------- findings
def _latency_findings(cells: Sequence[Cell], repeats: int, prefix: str) -> list[str]:
    rates = sorted({c.rate for c in cells})
    findings: list[str] = []
    verdicts: list[tuple[float, str, str]] = []
    for rate in rates:
        at = [c for c in cells if c.rate == rate]
        measured = same_conditions(at)
        if len(measured) < 2:
            verdicts.append((rate, "", "only"))
            continue
        ok = sorted((c for c in measured if c.keeps_up and c.p99_ms), key=lambda c: c.p99_ms or 0.0)
        if not ok:
            verdicts.append((rate, "", "no protocol kept up"))
        elif len(ok) == 1:
            verdicts.append((rate, ok[0].protocol, "only one kept up"))
        else:
            best, others = ok[0], ok[1:]
            clear = repeats > 1 and best.runs > 1 and best.p99_range is not None and all(
                o.p99_range is not None and best.p99_range[1] < o.p99_range[0] for o in others)
            verdicts.append((rate, best.protocol, "clear" if clear else "overlapping"))
    i = 0
    while i < len(verdicts):
        j = i
        while j + 1 < len(verdicts) and verdicts[j + 1][1:] == verdicts[i][1:]:
            j += 1
        group = [v[0] for v in verdicts[i:j + 1]]
        winner, how = verdicts[i][1], verdicts[i][2]
        i = j + 1
        if how == "only":
            text = only_measured([c for c in cells if c.rate in group], group)
            findings.append(f"{prefix}{text[0].upper()}{text[1:]}: no comparison.")
            continue
        if not winner:
            findings.append(f"{prefix}At {rates_text(group)} no protocol kept up with the offered load.")
            continue
        parts = []
        for rate in group:
            row = sorted((c for c in same_conditions([c for c in cells if c.rate == rate]) if c.keeps_up),
                         key=lambda c: c.p99_ms or 0.0)
            parts.append(f"{rate:g}/s: " + ", ".join(f"{LABEL[c.protocol]} {ms_text(c.p99_ms)}" for c in row))
        detail = "; ".join(parts)
        if how == "clear":
            findings.append(f"{prefix}At {rates_text(group)}, {LABEL[winner]} has the lowest p99 latency, and its "
                            f"range over {repeats} repeats does not overlap the others' (p99 ms — {detail}).")
        elif how == "only one kept up":
            findings.append(f"{prefix}At {rates_text(group)}, only {LABEL[winner]} kept up (p99 ms — {detail}).")
        elif repeats < 2:
            findings.append(f"{prefix}At {rates_text(group)}, {LABEL[winner]} has the lowest p99, but one repeat "
                            f"gives no spread: no clear winner (p99 ms — {detail}).")
        else:
            findings.append(f"{prefix}At {rates_text(group)}, {LABEL[winner]} has the lowest median p99, but the "
                            f"ranges over {repeats} repeat(s) overlap: no clear winner (p99 ms — {detail}).")
    return findings


def sustained(cells: Sequence[Cell], protocol: str) -> float | None:
    """The highest λ at which ``protocol`` kept up in every repeat (open loop), among ``cells``."""
    return max((c.rate for c in cells if c.protocol == protocol and c.keeps_up), default=None)


def _load_findings(cells: Sequence[Cell], prefix: str) -> list[str]:
    findings: list[str] = []
    protos = _protocols(cells)
    rates = sorted({c.rate for c in cells})
    by = {(c.protocol, c.rate): c for c in cells}
    for p in protos:
        behind = [by[(p, r)] for r in rates if (p, r) in by and by[(p, r)].outcome == "fell-behind"]
        if behind:
            c = behind[0]
            errs = f", {c.errors} errors" if c.errors else ""
            some = f" in {c.outcomes.get('fell-behind', 0)} of {c.runs} repeats" if len(c.outcomes) > 1 else ""
            findings.append(f"{prefix}{LABEL[p]} fell behind from {c.rate:g} req/s{some}: it achieved "
                            f"{c.achieved_rate:.0f}/s ({c.achieved_vs_scheduled:.0%} of the schedule{errs}"
                            f"{', median over the repeats' if some else ''}).")
        saturated = [by[(p, r)] for r in rates if (p, r) in by and by[(p, r)].outcome == "generator-saturated"]
        if saturated:
            findings.append(f"{prefix}The load generator could not keep the schedule for {LABEL[p]} at "
                            f"{', '.join(f'{c.rate:g}' for c in saturated)} req/s (generator saturated at "
                            f"{', '.join(f'{c.generator_ceiling:.0f}/s' for c in saturated)}): those cells say nothing "
                            f"about {LABEL[p]} and are left out of every comparison.")
    if all(c.keeps_up for c in cells):
        findings.append(f"{prefix}Every protocol kept up with every offered rate up to {rates[-1]:g} req/s "
                        f"(achieved ≥ {KEEPS_UP:.0%} of the schedule, no errors).")
    # The sustained load: the highest λ each protocol keeps up at, counted only where it was measured.
    parts = []
    for p in protos:
        mine = [c for c in cells if c.protocol == p and c.comparable]
        if not mine:
            continue
        top = sustained(mine, p)
        parts.append(f"{LABEL[p]} {top:g} req/s" if top is not None else
                     f"{LABEL[p]} none of {rates_text([c.rate for c in mine])}")
    if len(parts) > 1:
        findings.append(f"{prefix}Highest offered rate kept up (open loop): {', '.join(parts)}.")
    elif parts:
        findings.append(f"{prefix}Highest offered rate kept up (open loop): {parts[0]}; "
                        f"{only_measured(cells, rates)}, so this compares nothing.")
    return findings


def _payload_findings(payloads: Mapping[str, tuple[int, int]], prefix: str) -> list[str]:
    protos = [p for p in PROTOCOLS if p in payloads]
    if not protos:
        return []
    req = {p: payloads[p][0] for p in protos}
    resp = {p: payloads[p][1] for p in protos}
    text = (f"{prefix}Request size on the wire: " + ", ".join(f"{LABEL[p]} {req[p]} B" for p in protos)
            + "; responses: " + ", ".join(f"{LABEL[p]} {resp[p]} B" for p in protos) + ".")
    if len(protos) > 1:
        text += f" {LABEL[min(req, key=lambda p: req[p])]} is the most compact."
    findings = [text]
    if "http-json" in req and "http-binary" in req and req["http-binary"]:
        findings.append(f"{prefix}JSON tensors make HTTP requests {req['http-json'] / req['http-binary']:.2f}× the "
                        "size of the binary tensor extension.")
    return findings


def peaks(rows: Mapping[str, Sequence[PerfRow]]) -> dict[str, PerfRow]:
    """The closed-loop peak (highest throughput of a stable point) per protocol."""
    out: dict[str, PerfRow] = {}
    for proto, prows in rows.items():
        measured = [r for r in prows if r.status == "ok" and r.throughput]
        if measured:
            out[proto] = max(measured, key=lambda r: r.throughput or 0.0)
    return out


def _closed_loop_findings(rows: Mapping[str, Sequence[PerfRow]], prefix: str) -> list[str]:
    findings = []
    for p, prows in rows.items():
        failed = [r for r in prows if r.status == "failed"]
        if failed:
            findings.append(f"{prefix}perf_analyzer could not measure {LABEL.get(p, p)} at concurrency "
                            f"{', '.join(f'{r.load:g}' for r in failed)}: {failed[0].note or 'it failed'}.")
    top = peaks(rows)
    if not top:
        return findings
    order = sorted(top, key=lambda p: -(top[p].throughput or 0.0))
    text = ", ".join(f"{LABEL.get(p, p)} {top[p].throughput:.0f}/s (concurrency {top[p].load:g})" for p in order)
    findings.append(f"{prefix}Closed-loop peak throughput with perf_analyzer's C++ client: {text}.")
    if len(order) > 1 and top[order[1]].throughput:
        gain = (top[order[0]].throughput or 0.0) / (top[order[1]].throughput or 1.0) - 1
        findings.append(f"{prefix}{LABEL.get(order[0], order[0])} leads the next protocol by {gain:.0%} at peak; "
                        + ("under 5%, which one perf_analyzer sweep cannot tell apart from noise."
                           if gain < 0.05 else "client and server share the cores, so this includes "
                           "the client's cost of each protocol."))
    return findings


def derive_findings(cells: Sequence[Cell], concurrency: Concurrency, payloads: Payloads,
                    repeats: int) -> list[str]:
    """Plain sentences, each computed from the measured numbers (nothing here is a fixed claim); per
    payload (model), prefixed with the model and its size when the study has more than one."""
    models = list(dict.fromkeys([*models_of(cells), *payloads, *concurrency]))
    findings: list[str] = []
    for model in models:
        mine = [c for c in cells if c.model == model]
        prefix = "" if len(models) == 1 else f"{model} ({bytes_text(payload_size(mine, model))}): "
        if mine:
            findings += _latency_findings(mine, repeats, prefix)
            findings += _load_findings(mine, prefix)
        findings += _payload_findings(payloads.get(model, {}), prefix)
        findings += _closed_loop_findings(concurrency.get(model, {}), prefix)
    return findings


# ------------------------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Evidence:
    """A claim's verdict at one payload (a model, or a request size for the cache cells)."""

    payload: str
    payload_bytes: int
    verdict: Verdict
    detail: str


@dataclass(frozen=True)
class Claim:
    key: str
    claim: str
    verdict: Verdict
    summary: str  # by how much, at which payload size(s)
    evidence: tuple[Evidence, ...] = ()


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict from several (points of one payload, or payloads of one claim)."""
    got = set(verdicts) - {"not measured"}
    if not got:
        return "not measured"
    if "mixed" in got or {"supported", "not supported"} <= got:
        return "mixed"
    for v in ("supported", "not supported"):
        if v in got:
            return v
    return "inconclusive"


def _apart(a: tuple[float, float] | None, b: tuple[float, float] | None) -> int:
    """-1: range a lies wholly below b, 1: wholly above, 0: they overlap (or one is missing)."""
    if a is None or b is None:
        return 0
    return -1 if a[1] < b[0] else (1 if a[0] > b[1] else 0)


def _rng(r: tuple[float, float] | None, unit: str = "") -> str:
    return "-" if r is None else f"{ms_text(r[0])}–{ms_text(r[1])}{unit}"


def duel(a: Cell, b: Cell, repeats: int) -> tuple[int, str]:
    """Which of two cells measured in the same conditions did better: 1 (a), -1 (b), 0 (cannot tell),
    and why. Different outcomes decide by the achieved rate (its ranges over the repeats must not
    overlap); the same outcome needs more than one repeat: kept up by the p99 ranges, fell behind by
    the achieved ranges."""
    la, lb = LABEL[a.protocol], LABEL[b.protocol]
    if a.keeps_up != b.keeps_up:
        up, down = (a, b) if a.keeps_up else (b, a)
        side = _apart(up.achieved_range, down.achieved_range)
        text = (f"at {a.rate:g}/s {LABEL[up.protocol]} kept up and {LABEL[down.protocol]} fell behind"
                + (f" in {down.outcomes.get('fell-behind', 0)} of {down.runs} repeats" if len(down.outcomes) > 1
                   else "") + f": achieved {up.achieved_rate:.0f} vs {down.achieved_rate:.0f}/s")
        if side <= 0:
            return 0, text + ", but the achieved ranges over the repeats overlap"
        return (1 if up is a else -1), text
    if min(a.runs, repeats) < 2:
        return 0, f"at {a.rate:g}/s one repeat: no spread to tell {la} from {lb}"
    if a.keeps_up:
        side = _apart(b.p99_range, a.p99_range)  # a wins when b's p99 lies above
        ratio = (b.p99_ms or 0.0) / a.p99_ms if a.p99_ms else float("nan")
        text = (f"at {a.rate:g}/s p99 {la} {ms_text(a.p99_ms)} ms ({_rng(a.p99_range)}) vs {lb} "
                f"{ms_text(b.p99_ms)} ms ({_rng(b.p99_range)}): {lb}/{la} {ratio:.2f}×")
        return side, text + ("" if side else ", ranges overlap")
    side = _apart(a.achieved_range, b.achieved_range)
    text = (f"at {a.rate:g}/s both fell behind: achieved {la} {a.achieved_rate:.0f}/s vs {lb} "
            f"{b.achieved_rate:.0f}/s")
    return side, text + ("" if side else ", ranges overlap")


def _vote(side: int) -> Verdict:
    return "supported" if side > 0 else ("not supported" if side < 0 else "inconclusive")


def _pairs(cells: Sequence[Cell], model: str, first: str, second: str) -> tuple[list[tuple[Cell, Cell]], str]:
    """(first, second) cells of ``model`` measured in the same conditions, and where they were not."""
    mine = [c for c in cells if c.model == model]
    pairs, lonely = [], []
    for rate in sorted({c.rate for c in mine}):
        at = {c.protocol: c for c in same_conditions([c for c in mine if c.rate == rate])}
        if first in at and second in at:
            pairs.append((at[first], at[second]))
        elif first in at or second in at or any(c.rate == rate and c.protocol in (first, second) for c in mine):
            lonely.append(rate)
    absent = [LABEL[p] for p in (first, second) if not any(c.protocol == p for c in mine)]
    if absent:  # a protocol the study left out: nothing to compare, and nothing left out by the numbers
        return pairs, f"{' and '.join(absent)} {'was' if len(absent) == 1 else 'were'} not in the study"
    note = ""
    if lonely:
        note = only_measured([c for c in mine if c.rate in lonely and c.protocol in (first, second)], lonely)
    return pairs, note


def _evidence(model: str, size: int, points: list[tuple[int, str]], note: str) -> Evidence:
    if not points:
        return Evidence(model, size, "not measured", note or f"{model}: not measured")
    verdict = combine([_vote(s) for s, _ in points])
    detail = "; ".join(t for _, t in points) + (f"; {note}" if note else "")
    return Evidence(model, size, verdict, detail)


def _summary(evidence: Sequence[Evidence], what: Callable[[Evidence], str] = lambda e: "") -> str:
    if not evidence:
        return "not measured"
    return "; ".join(f"{e.verdict} at {bytes_text(e.payload_bytes)} ({e.payload}){what(e)}" for e in evidence)


def _binary_claim(cells: Sequence[Cell], repeats: int) -> Claim:
    evidence = []
    for model in models_of(cells):
        pairs, note = _pairs(cells, model, "http-binary", "http-json")
        size = payload_size(cells, model)
        ev = _evidence(model, size, [duel(b, j, repeats) for b, j in pairs], note)
        sizes = {c.protocol: c.request_bytes for c in cells if c.model == model}
        if "http-json" in sizes and sizes.get("http-binary"):
            ev = Evidence(ev.payload, ev.payload_bytes, ev.verdict,
                          f"JSON requests {sizes['http-json'] / sizes['http-binary']:.2f}× the binary ones "
                          f"({bytes_text(sizes['http-json'])} vs {bytes_text(sizes['http-binary'])}); {ev.detail}")
        evidence.append(ev)
    return Claim("binary-beats-json", "Binary tensors beat JSON (HTTP binary vs HTTP JSON)",
                 combine([e.verdict for e in evidence]), _summary(evidence), tuple(evidence))


def _grpc_claim(cells: Sequence[Cell], concurrency: Concurrency, repeats: int) -> Claim:
    evidence = []
    for model in models_of(cells):
        mine = [c for c in cells if c.model == model]
        size = payload_size(cells, model)
        rest = "http-binary" if any(c.protocol == "http-binary" for c in mine) else "http-json"
        pairs, note = _pairs(cells, model, "grpc", rest)
        support = ""
        top = peaks(concurrency.get(model, {}))
        if "grpc" in top and rest in top and top[rest].throughput:
            support = (f"; closed-loop peak (perf_analyzer, support only): gRPC {top['grpc'].throughput:.0f}/s vs "
                       f"{LABEL[rest]} {top[rest].throughput:.0f}/s "
                       f"({(top['grpc'].throughput or 0.0) / (top[rest].throughput or 1.0):.2f}×)")
        if not pairs:
            evidence.append(Evidence(model, size, "not measured", (note or f"{model}: not measured") + support))
            continue
        g = sustained([a for a, _ in pairs], "grpc")
        h = sustained([b for _, b in pairs], rest)
        head = (f"highest λ kept up: gRPC {'none' if g is None else f'{g:g}/s'}, {LABEL[rest]} "
                f"{'none' if h is None else f'{h:g}/s'} (of {rates_text([a.rate for a, _ in pairs])})")
        if g == h:
            above = [(a, b) for a, b in pairs if h is None or a.rate > h]
            if not above:
                side, why = 0, "both kept up at every rate measured: the rates do not reach their limits"
            else:
                side, why = duel(*above[0], repeats)
        else:
            # the rate where one kept up and the other did not: decided by that duel
            at = max(x for x in (g, h) if x is not None)
            side, why = duel(*next((a, b) for a, b in pairs if a.rate == at), repeats)
        detail = f"{head}; {why}" + (f"; {note}" if note else "") + support
        evidence.append(Evidence(model, size, _vote(side), detail))
    return Claim("grpc-sustains-more", "gRPC sustains a higher load than REST (highest λ kept up, open loop)",
                 combine([e.verdict for e in evidence]), _summary(evidence), tuple(evidence))


def _cache_claim(cache_cells: Sequence[CacheCell], repeats: int) -> Claim:
    text = "A response cache reduces latency for repeated requests"
    if not cache_cells:
        return Claim("cache-reduces-latency", text, "not measured", "not measured: the study ran no cache cells")
    evidence = []
    for size in sorted({c.request_bytes for c in cache_cells}):
        points: list[tuple[int, str]] = []
        notes = []
        group = [c for c in cache_cells if c.request_bytes == size]
        for key in sorted({(c.protocol, c.rate, c.repeat_fraction) for c in group}):
            pair = {c.cache: c for c in group if (c.protocol, c.rate, c.repeat_fraction) == key}
            where = f"{LABEL.get(key[0], key[0])} at {key[1]:g}/s, {key[2]:.0%} repeated"
            on, off = pair.get(True), pair.get(False)
            if on is None or off is None or on.outcome not in COMPARABLE or off.outcome not in COMPARABLE \
                    or on.runs != off.runs:
                notes.append(f"{where}: only cache {'on' if off is None or off.outcome not in COMPARABLE else 'off'}"
                             " was measured in the same conditions")
                continue
            server = (f"; server: hit {ms_text(on.hit_ms)} ms vs miss {ms_text(on.miss_ms)} ms, "
                      f"{on.hits} hits / {on.misses} misses")
            if on.hits == 0:
                points.append((0, f"{where}: no cache hits recorded with the cache on{server}"))
                continue
            if (on.outcome == "kept-up") != (off.outcome == "kept-up"):
                side = 1 if on.outcome == "kept-up" else -1
                points.append((side, f"{where}: with the cache {'on' if side > 0 else 'off'} it kept up, "
                                     f"achieved {on.achieved_rate:.0f} vs {off.achieved_rate:.0f}/s{server}"))
                continue
            spread = min(on.runs, repeats) > 1
            side = _apart(off.p50_range, on.p50_range) if spread else 0
            ratio = (off.p50_ms or 0.0) / on.p50_ms if on.p50_ms else float("nan")
            why = "" if side else (", ranges overlap" if spread else ", one repeat: no spread")
            points.append((side, f"{where}: p50 {ms_text(on.p50_ms)} ms ({_rng(on.p50_range)}) on vs "
                                 f"{ms_text(off.p50_ms)} ms ({_rng(off.p50_range)}) off, {ratio:.2f}×{why}{server}"))
        evidence.append(_evidence(f"{bytes_text(size)} requests", size, points, "; ".join(notes)))
    return Claim("cache-reduces-latency", text, combine([e.verdict for e in evidence]),
                 "; ".join(f"{e.verdict} at {bytes_text(e.payload_bytes)}" for e in evidence), tuple(evidence))


def claims(cells: Sequence[Cell], concurrency: Concurrency, cache_cells: Sequence[CacheCell],
           repeats: int) -> list[Claim]:
    """The study's verdict on each claim it tests, from the numbers alone. A comparison of two cells with
    the same outcome needs a spread: more than one repeat (``repeats``, and the cells' own runs)."""
    return [_binary_claim(cells, repeats), _grpc_claim(cells, concurrency, repeats),
            _cache_claim(cache_cells, repeats)]
