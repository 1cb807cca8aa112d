"""Commands that need no server: ``build``, ``check``, ``inspect`` and ``doctor``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tritonops.build import BuildOptions, BuildResult, build_many
from tritonops.buildfile import load_build_file
from tritonops.check import check_repository
from tritonops.cli.params import INT32_MAX, model_version, number
from tritonops.cli.render import command, emit_result, out, spinner
from tritonops.convert.onnx_inspect import inspect_model
from tritonops.convert.verify import format_table
from tritonops.doctor import run_doctor
from tritonops.ensemble import build_ensemble_file
from tritonops.ensemblefile import is_ensemble_file
from tritonops.envelope import build_data, onnx_data
from tritonops.errors import UsageError
from tritonops.spec import TensorSpec
from tritonops.stateful import parse_pair

BUILD_HELP = """Inspect or convert a model, verify it numerically, and write it into a Triton model repository.

SOURCE is an ONNX file, a TorchScript file, or a PyTorch factory (module:function or file.py:function).

Examples:

  tritonops build model.onnx

  tritonops build model.onnx --name clf --max-batch-size 32 --instances 2 --preferred-batch-size 8 --response-cache

  tritonops build traced.pt --input INPUT__0:FP32:3,224,224

  tritonops build mypkg.models:make_model --example-shape x:FP32:3,32,32 --format onnx

  tritonops build acc.onnx --sequence direct --control START=START --control READY=READY --state STATE_IN:STATE_OUT

  tritonops build parse.onnx --samples samples.txt --warmup   (real inputs for the checks, warm-up, validate, perf)

  tritonops build -f tritonops.yaml

  tritonops build -f ensembles/text_embedding/ensemble.yaml   (an ensemble: every step model + the ensemble)
"""

CHECK_HELP = """Check every model in a repository the way Triton would, without a server.

Examples:

  tritonops check model_repository/

  tritonops check model_repository/ --json
"""

INSPECT_HELP = """Show a model file's inputs and outputs as Triton would see them; with a config (--config,
or a model directory), which of them are control or state tensors.

Examples:

  tritonops inspect model.onnx

  tritonops inspect model.onnx --config config.pbtxt

  tritonops inspect model_repository/acc
"""

DOCTOR_HELP = """Check this machine's set-up: tritonserver, Python backend stub, perf_analyzer.

Example:

  tritonops doctor
"""


def register(app: typer.Typer) -> None:
    app.command("build", help=BUILD_HELP)(build)
    app.command("check", help=CHECK_HELP)(check)
    app.command("inspect", help=INSPECT_HELP)(inspect)
    app.command("doctor", help=DOCTOR_HELP)(doctor)


# ------------------------------------------------------------------------------------------- build
@command("build")
def build(
    source: Annotated[str | None, typer.Argument(help="Model file or module:factory.", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="Build every model in a YAML build file.")] = None,
    repo: Annotated[Path | None, typer.Option(
        "--repo", help="Model repository directory [default: model_repository; with -f: the file's].")] = None,
    name: Annotated[str | None, typer.Option(help="Model name (default: from the file name).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, onnx, torchscript or tensorrt.")] = "auto",
    max_batch_size: Annotated[int | None, typer.Option(callback=number(0, INT32_MAX),
        help="Max batch size (default 32 if the model can batch, 0 if not).")] = None,
    instances: Annotated[int, typer.Option(callback=number(1, 1024), help="Model instances per device.")] = 1,
    kind: Annotated[str, typer.Option(help="Instance kind: cpu, gpu or auto.")] = "cpu",
    gpu: Annotated[list[int] | None, typer.Option("--gpu", callback=number(0, 1023),
        help="GPU id for the instances (repeatable).")] = None,
    dynamic_batching: Annotated[bool | None, typer.Option(
        help="Enable the dynamic batcher [default: on, unless --sequence].", show_default=False)] = None,
    preferred_batch_size: Annotated[list[int] | None, typer.Option(
        "--preferred-batch-size", callback=number(1, INT32_MAX), help="Preferred batch size (repeatable).")] = None,
    max_queue_delay_us: Annotated[int, typer.Option(callback=number(0),
        help="Max time a request waits to form a batch.")] = 0,
    preserve_ordering: Annotated[bool, typer.Option(help="Return responses in request order.")] = False,
    priority_levels: Annotated[int, typer.Option(callback=number(0, INT32_MAX),
        help="Number of request priority levels.")] = 0,
    default_priority_level: Annotated[int, typer.Option(callback=number(0, INT32_MAX),
        help="Priority of requests that set none.")] = 0,
    max_queue_size: Annotated[int, typer.Option(callback=number(0, INT32_MAX),
        help="Reject requests beyond this queue size (0: no limit).")] = 0,
    queue_timeout_us: Annotated[int, typer.Option(callback=number(0),
        help="Queue timeout in microseconds (0: none).")] = 0,
    timeout_action: Annotated[str, typer.Option(help="REJECT or DELAY requests that time out.")] = "REJECT",
    response_cache: Annotated[bool, typer.Option(help="Enable Triton's response cache for the model.")] = False,
    warmup: Annotated[bool, typer.Option(help="Add a model_warmup generated from the inputs.")] = False,
    input: Annotated[list[str] | None, typer.Option(
        "--input", help="Input NAME:DTYPE:DIMS (dims without batch; -1 variable). Repeatable.")] = None,
    example_shape: Annotated[list[str] | None, typer.Option(
        "--example-shape", help="Same as --input, for PyTorch factories.")] = None,
    output: Annotated[list[str] | None, typer.Option("--output", help="Output name (repeatable).")] = None,
    version: Annotated[int | None, typer.Option(callback=model_version,
        help="Version to write (default: the next free one).")] = None,
    atol: Annotated[float, typer.Option(callback=number(0, 1e3),
        help="Absolute tolerance of the verification.")] = 1e-4,
    rtol: Annotated[float, typer.Option(callback=number(0, 1e3),
        help="Relative tolerance of the verification.")] = 1e-3,
    threads: Annotated[int | None, typer.Option(callback=number(0, 1024),
        help="Intra-op threads per model instance.")] = None,
    accelerator: Annotated[str | None, typer.Option(
        help="ONNX Runtime GPU accelerator in the config: tensorrt or cuda.")] = None,
    precision: Annotated[str, typer.Option(help="Precision for the TensorRT accelerator/plan.")] = "FP16",
    sequence: Annotated[str | None, typer.Option(
        help="Sequence batching (stateful model): direct or oldest.", show_default=False)] = None,
    control: Annotated[list[str] | None, typer.Option(
        "--control", help="Control tensor KIND=INPUT, KIND one of START, END, READY, CORRID (repeatable).")] = None,
    state: Annotated[list[str] | None, typer.Option(
        "--state", help="Implicit state INPUT:OUTPUT of the model (repeatable).")] = None,
    sequence_idle_us: Annotated[int, typer.Option(
        help="max_sequence_idle_microseconds (0: Triton's default).")] = 0,
    max_candidate_sequences: Annotated[int | None, typer.Option(
        help="Oldest strategy: sequences batched together [default: max batch size].", show_default=False)] = None,
    samples: Annotated[Path | None, typer.Option(
        help="Real inputs (.npz, KServe .json, .txt lines, images) for the checks, --warmup and validate/perf.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    if file is not None and source is not None:
        raise UsageError("give either SOURCE or -f FILE, not both", "drop one of them")
    if file is None and source is None:
        raise UsageError("nothing to build", "give a model file, a module:factory, or -f tritonops.yaml")
    if input and example_shape:
        raise UsageError("--input and --example-shape mean the same thing", "use one of them")
    ensemble_file = file if file is not None and is_ensemble_file(file) else None
    options: list[BuildOptions] = []
    if file is not None and ensemble_file is None:
        options = load_build_file(file)
        if repo is not None:
            options = [dataclasses.replace(o, repository=repo) for o in options]
    elif source is not None:
        options = [BuildOptions(
            source=source, format=fmt, name=name,  # type: ignore[arg-type]
            repository=repo or Path("model_repository"), max_batch_size=max_batch_size,
            instances=instances, kind=kind, gpus=tuple(gpu or ()), dynamic_batching=dynamic_batching,  # type: ignore[arg-type]
            preferred_batch_sizes=tuple(preferred_batch_size or ()), max_queue_delay_us=max_queue_delay_us,
            preserve_ordering=preserve_ordering, priority_levels=priority_levels,
            default_priority_level=default_priority_level, max_queue_size=max_queue_size,
            queue_timeout_us=queue_timeout_us, timeout_action=timeout_action.upper(),  # type: ignore[arg-type]
            response_cache=response_cache, warmup=warmup,
            inputs=tuple(TensorSpec.parse(v) for v in input or example_shape or ()),
            outputs=tuple(output or ()), version=version, atol=atol, rtol=rtol, threads=threads,
            accelerator=accelerator, precision=precision.upper(),  # type: ignore[arg-type]
            sequence=sequence.lower() if sequence else None,  # type: ignore[arg-type]
            controls=tuple(parse_pair(v, "=", "--control", "KIND=INPUT, e.g. START=START") for v in control or ()),
            states=tuple(parse_pair(v, ":", "--state", "INPUT:OUTPUT, e.g. STATE_IN:STATE_OUT") for v in state or ()),
            sequence_idle_us=sequence_idle_us, max_candidate_sequences=max_candidate_sequences, samples=samples,
        )]
    with spinner(not as_json) as progress:
        results = build_ensemble_file(ensemble_file, repo, progress) if ensemble_file else build_many(options, progress)
    if as_json:
        emit_result(build_data(results))
        return
    for r in results:
        _print_built(r)


def _print_built(r: BuildResult) -> None:
    out.print(f"[green]✓[/green] built [bold]{r.name}[/bold] version {r.version} "
              f"({r.spec.platform}, max_batch_size {r.spec.max_batch_size}) → {r.model_dir}")
    for t in r.spec.inputs:
        out.print(f"    input  {t.describe()}", markup=False)
    for t in r.spec.outputs:
        out.print(f"    output {t.describe()}", markup=False)
    sb = r.spec.sequence_batching
    if sb is not None:
        controls = ", ".join(f"{c.kind}={c.tensor}" for c in sb.controls) or "none"
        states = ", ".join(f"{st.input_name}:{st.output_name}" for st in sb.states) or "none"
        out.print(f"    sequence batching {sb.strategy}: controls {controls}; state {states}", markup=False)
    if r.verification is not None:
        out.print("  " + format_table(r.verification).replace("\n", "\n  "), markup=False)
    for note in r.notes:
        out.print(f"  note: {note}")


# ------------------------------------------------------------------------------------------- check
@command("check")
def check(
    repository: Annotated[Path, typer.Argument(help="Model repository directory.")] = Path("model_repository"),
    as_json: Annotated[bool, typer.Option("--json", help="Print findings as JSON.")] = False,
) -> None:
    report = check_repository(repository)
    if as_json:
        emit_result(report, exit_code=0 if report.ok else 1)
    else:
        for f in report.findings:
            out.print(f"[red]✗[/red] {escape(f.file)}: [bold]{escape(f.field)}[/bold]: {escape(f.message)}\n"
                      f"    fix: {escape(f.fix)}")
        bad = {f.model for f in report.findings}
        for m in report.models:
            if m not in bad:
                out.print(f"[green]✓[/green] {m}")
        out.print(f"{len(report.models) - len(bad)} of {len(report.models)} models OK")
    if not report.ok:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------- inspect
@command("inspect")
def inspect(
    model: Annotated[Path, typer.Argument(help="ONNX model file, or a model directory with config.pbtxt.")],
    config: Annotated[Path | None, typer.Option(
        help="config.pbtxt that serves the model: show each tensor's role.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    found = inspect_model(model, config)
    if as_json:
        emit_result(onnx_data(found))
        return
    info = found.info
    out.print(f"{info.path}  opset {info.opset}  producer {info.producer or '-'}  "
              f"batchable: {'yes' if info.batchable else 'no'}", markup=False)
    if found.config is not None:
        out.print(f"  roles from {found.config}", markup=False)
    for kind, tensors in (("input", info.inputs), ("output", info.outputs)):
        for t in tensors:
            shape = ", ".join("?" if d is None else str(d) for d in t.shape)
            role = f"  ({found.roles[t.name]})" if found.roles is not None else ""
            out.print(f"  {kind:6} {t.name}: {t.dtype.name} [{shape}]{role}", markup=False)


# ------------------------------------------------------------------------------------------- doctor
@command("doctor")
def doctor(
    quiet: Annotated[bool, typer.Option("--quiet", help="Print only problems.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    with spinner(not as_json) as progress:
        report = run_doctor(progress)
    if as_json:
        emit_result(report, exit_code=0 if report.ok else 1)
    else:
        for c in report.checks:
            if c.ok and quiet:
                continue
            mark = "[green]✓[/green]" if c.ok else ("[yellow]![/yellow]" if c.optional else "[red]✗[/red]")
            out.print(f"{mark} {c.name}: {escape(c.detail)}")
    if not report.ok:
        raise typer.Exit(1)
