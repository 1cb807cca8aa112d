"""The ensemble wiring rules, as Triton applies them (TRITON_RULES §3): a graph of steps over named
tensors, every rule with step, tensor and fix, and the order the steps can run in. The one
implementation: ``ensemble`` runs it on specs before anything is written, ``check`` on hand-written
repositories, and the in-process ensemble reference orders its steps with it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tritonops.pbtxt import tensor_specs
from tritonops.spec import TensorSpec


@dataclass(frozen=True)
class Node:
    """One ensemble step as the wiring rules see it. ``inputs``/``outputs`` are the composing model's
    tensors (None while unknown); ``max_batch_size`` likewise."""

    step: str
    model: str
    input_map: tuple[tuple[str, str], ...]
    output_map: tuple[tuple[str, str], ...]
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None
    max_batch_size: int | None = None


@dataclass(frozen=True)
class Graph:
    name: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    output_specs: tuple[TensorSpec, ...] = ()  # declared ensemble outputs (checked against producers)
    nodes: tuple[Node, ...] = ()


@dataclass(frozen=True)
class WiringProblem:
    step: str | None
    tensor: str | None
    message: str
    fix: str
    index: int | None = None  # the step's position, for config field paths

    def __str__(self) -> str:
        return self.message


def _full(dims: Sequence[int], mbs: int) -> tuple[int, ...]:
    return ((-1,) if mbs > 0 else ()) + tuple(dims)


def compatible_dims(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(-1 in (x, y) or x == y for x, y in zip(a, b, strict=True))


def format_dims(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def wiring_problems(g: Graph) -> list[WiringProblem]:
    """Every ensemble wiring rule Triton enforces (TRITON_RULES §3), with step, tensor and fix."""
    out: list[WiringProblem] = []

    def add(i: int | None, tensor: str | None, message: str, fix: str) -> None:
        out.append(WiringProblem(g.nodes[i].step if i is not None else None, tensor, message, fix, i))

    ens_inputs = {t.name: t for t in g.inputs}
    producers: dict[str, list[int]] = {}
    consumers: dict[str, list[int]] = {}
    if not g.nodes:
        out.append(WiringProblem(None, None, f"ensemble '{g.name}' has no steps", "add at least one step"))
        return out
    for i, n in enumerate(g.nodes):
        if not n.input_map:
            add(i, None, f"step '{n.step}' maps no inputs", f"map the inputs of model '{n.model}'")
        if not n.output_map:
            add(i, None, f"step '{n.step}' maps no outputs", f"map at least one output of model '{n.model}'")
        seen_keys: set[str] = set()
        for key, tensor in n.input_map:
            if key in seen_keys:
                add(i, tensor, f"step '{n.step}': input '{key}' of model '{n.model}' is mapped twice",
                    f"map '{key}' once")
            seen_keys.add(key)
            consumers.setdefault(tensor, []).append(i)
        for _key, tensor in n.output_map:
            producers.setdefault(tensor, []).append(i)
        if n.inputs is not None:
            names = {t.name: t for t in n.inputs}
            for key, tensor in n.input_map:
                if key not in names:
                    add(i, tensor, f"step '{n.step}': model '{n.model}' has no input '{key}' "
                        f"(its inputs: {', '.join(names) or 'none'})",
                        f"map one of the model's inputs to '{tensor}'")
            for t in n.inputs:
                if t.name not in seen_keys and not t.optional:
                    add(i, t.name, f"step '{n.step}': input '{t.name}' of model '{n.model}' is not mapped",
                        f"map '{t.name}' to an ensemble input or to another step's output")
        if n.outputs is not None:
            names = {t.name: t for t in n.outputs}
            for key, tensor in n.output_map:
                if key not in names:
                    add(i, tensor, f"step '{n.step}': model '{n.model}' has no output '{key}' "
                        f"(its outputs: {', '.join(names) or 'none'})",
                        f"map one of the model's outputs to '{tensor}'")
    for tensor, ps in producers.items():
        if tensor in ens_inputs:
            add(ps[0], tensor, f"step '{g.nodes[ps[0]].step}' writes ensemble tensor '{tensor}', "
                "which is an ensemble input", f"give the step's output another name than '{tensor}'")
        elif len(ps) > 1:
            steps = " and ".join(f"'{g.nodes[p].step}'" for p in ps)
            add(ps[1], tensor, f"ensemble tensor '{tensor}' is written by more than one step ({steps})",
                f"give each step's output its own tensor name; only one step may write '{tensor}'")
    for name in g.outputs:
        if name not in producers:
            out.append(WiringProblem(None, name, f"ensemble output '{name}' is not written by any step",
                                     f"map a step output to '{name}', or remove it from the ensemble outputs"))
        elif name in consumers:
            pass  # an output may also feed a later step
    for name in ens_inputs:
        if name not in consumers:
            out.append(WiringProblem(None, name, f"ensemble input '{name}' is not used by any step",
                                     f"map '{name}' to a step input, or remove it from the ensemble inputs"))
    for tensor, ps in producers.items():
        if tensor not in consumers and tensor not in g.outputs and tensor not in ens_inputs:
            add(ps[0], tensor, f"step '{g.nodes[ps[0]].step}' writes tensor '{tensor}' but nothing uses it "
                "(Triton refuses unused ensemble tensors)",
                f"remove '{tensor}' from the step's outputs, or use it in a later step or as an ensemble output")
    for tensor, cs in consumers.items():
        if tensor not in producers and tensor not in ens_inputs:
            add(cs[0], tensor, f"step '{g.nodes[cs[0]].step}' reads tensor '{tensor}', which no step writes "
                "and is not an ensemble input",
                f"write '{tensor}' in an earlier step, declare it as an ensemble input, or fix the name")
    order = topological_order(g)
    if order is None:
        stuck = [i for i in range(len(g.nodes)) if not _reachable(g, i)]
        cyc = [i for i in stuck if all(t in producers or t in ens_inputs for _, t in g.nodes[i].input_map)]
        if cyc:
            cycle = ", ".join(f"'{g.nodes[i].step}'" for i in cyc)
            add(cyc[0], None, f"steps {cycle} form a cycle: each waits for a tensor another one writes",
                "break the cycle: every step must only read ensemble inputs or tensors of earlier steps")
    # types and shapes: producer vs consumer, and ensemble outputs
    specs: dict[str, tuple[TensorSpec, int, str]] = {t.name: (t, g.max_batch_size, "ensemble input")
                                                      for t in g.inputs}
    for n in g.nodes:
        if n.outputs is None or n.max_batch_size is None:
            continue
        by = {t.name: t for t in n.outputs}
        for key, tensor in n.output_map:
            if key in by and tensor not in specs:
                specs[tensor] = (by[key], n.max_batch_size, f"output '{key}' of step '{n.step}'")
    for i, n in enumerate(g.nodes):
        if n.inputs is None or n.max_batch_size is None:
            continue
        by = {t.name: t for t in n.inputs}
        for key, tensor in n.input_map:
            if key not in by or tensor not in specs:
                continue
            src, src_mbs, what = specs[tensor]
            want = by[key]
            if src.dtype != want.dtype:
                add(i, tensor, f"step '{n.step}': input '{key}' is {want.dtype.name} but tensor '{tensor}' "
                    f"({what}) is {src.dtype.name}",
                    f"make both {want.dtype.name} (cast in the producing step) or change the input's type")
                continue
            a, b = _full(src.dims, src_mbs), _full(want.dims, n.max_batch_size)
            if not compatible_dims(a, b):
                add(i, tensor, f"step '{n.step}': input '{key}' has shape {format_dims(b)} but tensor '{tensor}' "
                    f"({what}) has shape {format_dims(a)} (batch dimension included; -1 is variable)",
                    "make the shapes agree, e.g. reshape in the producing step or fix the declared dims")
    for t in g.output_specs:
        if t.name in specs and t.name in producers:
            src, src_mbs, what = specs[t.name]
            if src.dtype != t.dtype:
                out.append(WiringProblem(None, t.name, f"ensemble output '{t.name}' is declared "
                                         f"{t.dtype.name} but {what} is {src.dtype.name}",
                                         f"declare it as {src.dtype.name}, or cast in the step"))
            elif not compatible_dims(_full(src.dims, src_mbs), _full(t.dims, g.max_batch_size)):
                out.append(WiringProblem(None, t.name, f"ensemble output '{t.name}' is declared "
                                         f"{format_dims(_full(t.dims, g.max_batch_size))} but {what} has shape "
                                         f"{format_dims(_full(src.dims, src_mbs))}",
                                         "fix the declared dims (batch dimension excluded)"))
    for i, n in enumerate(g.nodes):
        if n.max_batch_size and g.max_batch_size > n.max_batch_size:
            add(i, None, f"ensemble max_batch_size {g.max_batch_size} is above the max_batch_size "
                f"{n.max_batch_size} of step '{n.step}' (model '{n.model}')",
                f"set the ensemble's max_batch_size to at most {n.max_batch_size}, or raise the model's")
    return out


def _reachable(g: Graph, i: int) -> bool:
    order = _order(g)
    return i in order


def _order(g: Graph) -> list[int]:
    available = {t.name for t in g.inputs}
    done: list[int] = []
    pending = list(range(len(g.nodes)))
    progress = True
    while pending and progress:
        progress = False
        for i in list(pending):
            if all(t in available for _, t in g.nodes[i].input_map):
                done.append(i)
                pending.remove(i)
                available.update(t for _, t in g.nodes[i].output_map)
                progress = True
    return done


def topological_order(g: Graph) -> list[int] | None:
    """Step indices in an order where every step's inputs exist; None if some step never can run."""
    order = _order(g)
    return order if len(order) == len(g.nodes) else None


def graph_from_configs(cfg: Any, members: Mapping[str, Any]) -> Graph:
    """The wiring of a hand-written ensemble config, with the composing models' configs (by name;
    a missing one leaves that step's tensors unknown)."""

    ins, outs = tensor_specs(cfg)
    nodes = []
    for i, s in enumerate(cfg.ensemble_scheduling.step):
        m = members.get(s.model_name)
        mi, mo = tensor_specs(m) if m is not None else (None, None)
        nodes.append(Node(step=f"step[{i}] {s.model_name}", model=s.model_name,
                          input_map=tuple(s.input_map.items()), output_map=tuple(s.output_map.items()),
                          inputs=mi, outputs=mo, max_batch_size=m.max_batch_size if m is not None else None))
    return Graph(cfg.name or "ensemble", cfg.max_batch_size, ins, tuple(t.name for t in outs), outs, tuple(nodes))
