"""``tritonops deploy``: manifests (--target) and roll-outs to a running server (--to)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tritonops.cli.params import DAY_S, host, number, output_dir, port
from tritonops.cli.render import command, emit_result, spinner
from tritonops.cli.render import out as console  # `out` is the --out option here
from tritonops.client import endpoints
from tritonops.deploy.manifest_spec import ManifestOptions
from tritonops.deploy.manifests import write_manifests
from tritonops.deploy.rollout import DeployFailed, RolloutOptions, RolloutResult, deploy_versions
from tritonops.deploy.rollout import rollback as roll_back
from tritonops.deploy.status import deploy_status
from tritonops.envelope import schema_of
from tritonops.errors import UsageError
from tritonops.progress import Progress

DEPLOY_HELP = """Write deployment manifests for a model repository, or roll new model versions out to a running Triton.

Manifests (Kubernetes, KServe or docker-compose), sized from the repository:

  tritonops deploy model_repository/ --target k8s --image nvcr.io/nvidia/tritonserver:24.08-py3 --out deploy/

  tritonops deploy model_repository/ --target kserve --image nvcr.io/nvidia/tritonserver:24.08-py3
  --storage s3://bucket/models --storage-secret s3-creds

  tritonops deploy model_repository/ --target compose --image nvcr.io/nvidia/tritonserver:24.08-py3 --out deploy/

Roll-out to a running server in explicit model-control mode (zero downtime; validated over HTTP and gRPC before
traffic moves; undone on any failure):

  tritonops deploy model_repository/ --to /srv/triton/models --url localhost --canary-requests 50

  tritonops deploy model_repository/ --to /srv/triton/models --url localhost --model clf

  tritonops deploy --rollback --to /srv/triton/models --url localhost

  tritonops deploy --status --to /srv/triton/models --url localhost

A server that restricts its model-repository API (--allow-model-control manifests) needs TRITON_ADMIN_KEY.
"""


def register(app: typer.Typer) -> None:
    app.command("deploy", help=DEPLOY_HELP)(deploy)


def _schema(options: Mapping[str, Any]) -> str:
    """What --json prints depends on the action the flags choose."""
    if options.get("status"):
        return schema_of("deploy --status")
    if options.get("rollback"):
        return schema_of("deploy --rollback")
    return schema_of("deploy --to" if options.get("to") is not None else "deploy --target")


def action_schema(args: list[str]) -> str:
    """The schema of a deploy command line that stopped before its options were parsed."""
    return _schema({"status": "--status" in args, "rollback": "--rollback" in args,
                    "to": "" if "--to" in args else None})


@command("deploy", schema=_schema)
def deploy(
    repository: Annotated[Path | None, typer.Argument(help="Model repository with the models to deploy.",
                                                      show_default=False)] = None,
    target: Annotated[str | None, typer.Option(help="Write manifests: k8s, kserve or compose.")] = None,
    image: Annotated[str | None, typer.Option(help="Triton image, e.g. nvcr.io/nvidia/tritonserver:24.08-py3.")
                     ] = None,
    out: Annotated[Path, typer.Option(callback=output_dir, help="Directory for the manifests.")] = Path("deploy"),
    name: Annotated[str, typer.Option(help="Name of the Kubernetes objects / compose project.")] = "triton",
    namespace: Annotated[str | None, typer.Option(help="Kubernetes namespace.")] = None,
    storage: Annotated[str | None, typer.Option(
        help="Where the cluster finds the repository: pvc:CLAIM[/dir], s3://…, gs://… or as://… "
             "[default: a new PVC].")] = None,
    storage_secret: Annotated[str | None, typer.Option(help="Secret with object-storage credentials.")] = None,
    storage_size: Annotated[str | None, typer.Option(help="Size of the new PVC, e.g. 20Gi.")] = None,
    storage_class: Annotated[str | None, typer.Option(help="StorageClass of the new PVC.")] = None,
    gpus: Annotated[int | None, typer.Option(callback=number(0, 64),
        help="GPUs per replica [default: 1 if a model has GPU instances].")
                    ] = None,
    cpu: Annotated[str | None, typer.Option(help="CPU request, e.g. 2 or 500m.")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory request and limit, e.g. 8Gi.")] = None,
    shm_size: Annotated[str | None, typer.Option(help="/dev/shm size, e.g. 1Gi.")] = None,
    replicas: Annotated[int, typer.Option(callback=number(1, 10000), help="Minimum replicas.")] = 1,
    max_replicas: Annotated[int, typer.Option(callback=number(1, 10000),
        help="Maximum replicas for the autoscaler.")] = 3,
    cpu_target: Annotated[int, typer.Option(callback=number(1, 100),
        help="Autoscaler target CPU utilisation in percent.")] = 70,
    hpa_queue_time_us: Annotated[int | None, typer.Option(callback=number(1),
        help="Also scale on the average queue time per request (µs), through a custom metrics adapter.")
    ] = None,
    monitor: Annotated[str, typer.Option(help="podmonitor, servicemonitor or none.")] = "podmonitor",
    allow_model_control: Annotated[bool, typer.Option(
        help="Start in explicit model-control mode, the repository API behind a key.")] = False,
    bind: Annotated[str, typer.Option(help="compose: address the ports listen on.")] = "127.0.0.1",
    writable_root: Annotated[bool, typer.Option(help="Leave the container's root filesystem writable.")
                             ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing manifests.")] = False,
    to: Annotated[Path | None, typer.Option(
        "--to", help="Roll out to this model repository of a running server.")] = None,
    url: Annotated[str, typer.Option("--url", callback=host,
        help="Server host (host or host:http_port).")] = "localhost",
    http_port: Annotated[int | None, typer.Option(callback=port,
        help="HTTP port (default 8000).", show_default=False)] = None,
    grpc_port: Annotated[int, typer.Option(callback=port, help="gRPC port.")] = 8001,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Roll out (or back) only this model and what it calls (repeatable).")] = None,
    canary_requests: Annotated[int, typer.Option(callback=number(0, 1_000_000),
        help="Inferences to the new version, checked against a local run, before traffic moves.")] = 0,
    timeout: Annotated[float, typer.Option(callback=number(0, DAY_S, low_open=True),
        help="Seconds allowed for each load and validation call.")] = 300.0,
    rollback: Annotated[bool, typer.Option("--rollback", help="Return to the versions the last roll-out replaced.")
                        ] = False,
    status: Annotated[bool, typer.Option("--status", help="Show what is live and the last deploys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    if sum([target is not None, to is not None and not (rollback or status), rollback, status]) > 1:
        raise UsageError("--target, --to, --rollback and --status are different actions",
                         "give one of them (--rollback and --status take --to)")
    if status or rollback or to is not None:
        if to is None:
            raise UsageError(f"--{'status' if status else 'rollback'} needs --to",
                             "give the server's model repository: --to /srv/triton/models")
        http_url, grpc_url = endpoints(url, http_port, grpc_port)
        if status:
            _status(to, http_url, as_json)
        elif rollback:
            _rollback(to, http_url, grpc_url, tuple(model or ()), timeout, as_json)
        else:
            if repository is None:
                raise UsageError("no model repository given",
                                 "tritonops deploy model_repository/ --to /srv/triton/models --url localhost")
            _rollout(repository, to, http_url, grpc_url, tuple(model or ()), canary_requests, timeout, as_json)
        return
    if target is None:
        raise UsageError("nothing to do", "give --target k8s|kserve|compose to write manifests, or --to DIR to "
                         "roll out to a running server")
    if repository is None:
        raise UsageError("no model repository given", f"tritonops deploy model_repository/ --target {target} …")
    if image is None:
        raise UsageError("--image is required with --target",
                         "give the Triton image, e.g. --image nvcr.io/nvidia/tritonserver:24.08-py3")
    result = write_manifests(ManifestOptions(
        repository=repository, target=target, image=image, out=out, name=name,  # type: ignore[arg-type]
        namespace=namespace, storage=storage, storage_secret=storage_secret, storage_size=storage_size,
        storage_class=storage_class, gpus=gpus, cpu=cpu, memory=memory, shm_size=shm_size, replicas=replicas,
        max_replicas=max_replicas, cpu_target_percent=cpu_target, queue_time_target_us=hpa_queue_time_us,
        monitor=monitor, allow_model_control=allow_model_control,  # type: ignore[arg-type]
        bind_address=bind, writable_root=writable_root, overwrite=force,
    ))
    if as_json:
        emit_result(result)
        return
    s = result.sizing
    console.print(f"[green]✓[/green] {result.target} manifests in {escape(str(result.out))} "
                  f"(cpu {s.cpu}, memory {s.memory}, /dev/shm {s.shm}, gpus {s.gpus}, "
                  f"startup up to {s.startup_seconds}s)")
    for f in result.files:
        console.print(f"    {escape(str(f.path))}  {', '.join(f.kinds)}" + ("" if f.apply else "  (extra)"))
    for note in result.notes:
        console.print(f"  note: {escape(note)}")


def _admin_key() -> str | None:
    return os.environ.get("TRITON_ADMIN_KEY") or None


def _run_rollout(run: Callable[[RolloutOptions, Progress], RolloutResult], opts: RolloutOptions, as_json: bool,
                 on_failure: Callable[[RolloutResult], None] | None = None) -> RolloutResult | None:
    """Run a roll-out or a roll-back with a spinner; with --json, emit the result (also a failed one, with
    its error) and return None; a failure is re-raised after its result is shown."""
    try:
        with spinner(not as_json) as progress:
            result = run(opts, progress)
    except DeployFailed as e:
        if as_json:
            emit_result(e.result, errors=(e,))
        elif on_failure is not None:
            on_failure(e.result)
        raise
    if as_json:
        emit_result(result)
        return None
    return result


def _rollout(source: Path, to: Path, http_url: str, grpc_url: str, models: tuple[str, ...], canary: int,
             timeout: float, as_json: bool) -> None:
    opts = RolloutOptions(target=to, source=source, http_url=http_url, grpc_url=grpc_url, models=models,
                          canary_requests=canary, timeout_s=timeout, admin_key=_admin_key())
    result = _run_rollout(deploy_versions, opts, as_json, on_failure=_print_models)
    if result is None:
        return
    _print_models(result)
    changed = [m for m in result.models if m.status == "deployed"]
    console.print(f"[green]✓[/green] deployed {len(changed)} model(s), {len(result.models) - len(changed)} "
                  f"unchanged, in {result.seconds:.1f}s; record: {escape(str(result.record))}")


def _print_models(result: RolloutResult) -> None:
    for m in result.models:
        versions = f"{m.from_version or '-'} → {m.to_version}" if m.status != "unchanged" else f"{m.to_version}"
        mark = {"deployed": "[green]✓[/green]", "unchanged": "[dim]=[/dim]", "rolled-back": "[green]↩[/green]"}.get(
            m.status, "[red]✗[/red]")
        console.print(f"  {mark} {escape(m.name)}  {m.status}  version {versions}  sha256 {m.sha256[:12]}")


def _rollback(to: Path, http_url: str, grpc_url: str, models: tuple[str, ...], timeout: float, as_json: bool) -> None:
    opts = RolloutOptions(target=to, http_url=http_url, grpc_url=grpc_url, models=models, timeout_s=timeout,
                          admin_key=_admin_key())
    result = _run_rollout(roll_back, opts, as_json)
    if result is None:
        return
    for m in result.models:
        console.print(f"[green]↩[/green] {escape(m.name)}: version {m.from_version} → {m.to_version} ({m.detail})")


def _status(to: Path, http_url: str, as_json: bool) -> None:
    st = deploy_status(to, http_url, _admin_key())
    if as_json:
        emit_result(st)
        return
    if st.server_error:
        console.print(f"[yellow]![/yellow] server {escape(http_url)} not reachable: {escape(st.server_error)}")
    width = max((len(m.name) for m in st.models), default=5)
    console.print(f"{'model':{width}}  live  on disk  last action", markup=False)
    for m in st.models:
        live = "?" if m.live is None else (",".join(map(str, m.live)) or "-")
        last = "-" if m.last_action is None else (
            f"{m.last_action} {m.last_time} sha256 {(m.sha256 or '-')[:12]} "
            f"validated {({True: 'yes', False: 'no', None: '-'}[m.validation_ok])}")
        console.print(f"{m.name:{width}}  {live:4}  {','.join(map(str, m.on_disk)) or '-':7}  {last}", markup=False)
