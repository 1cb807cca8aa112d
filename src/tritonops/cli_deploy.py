"""``tritonops deploy``: manifests (--target) and roll-outs to a running server (--to)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

DEPLOY_HELP = """Write deployment manifests for a model repository, or roll new model versions out to a running Triton.

Manifests (Kubernetes, KServe or docker-compose), sized from the repository:

  tritonops deploy model_repository/ --target k8s --image nvcr.io/nvidia/tritonserver:24.08-py3 --out deploy/

  tritonops deploy model_repository/ --target kserve --image nvcr.io/nvidia/tritonserver:24.08-py3
  --storage s3://bucket/models --storage-secret s3-creds

  tritonops deploy model_repository/ --target compose --image nvcr.io/nvidia/tritonserver:24.08-py3 --out deploy/
"""


def register(app: typer.Typer) -> None:
    @app.command(help=DEPLOY_HELP)
    def deploy(
        repository: Annotated[Path | None, typer.Argument(help="Model repository with the models to deploy.",
                                                          show_default=False)] = None,
        target: Annotated[str | None, typer.Option(help="Write manifests: k8s, kserve or compose.")] = None,
        image: Annotated[str | None, typer.Option(help="Triton image, e.g. nvcr.io/nvidia/tritonserver:24.08-py3.")
                         ] = None,
        out: Annotated[Path, typer.Option(help="Directory for the manifests.")] = Path("deploy"),
        name: Annotated[str, typer.Option(help="Name of the Kubernetes objects / compose project.")] = "triton",
        namespace: Annotated[str | None, typer.Option(help="Kubernetes namespace.")] = None,
        storage: Annotated[str | None, typer.Option(
            help="Where the cluster finds the repository: pvc:CLAIM[/dir], s3://…, gs://… or as://… "
                 "[default: a new PVC].")] = None,
        storage_secret: Annotated[str | None, typer.Option(help="Secret with object-storage credentials.")] = None,
        storage_size: Annotated[str | None, typer.Option(help="Size of the new PVC, e.g. 20Gi.")] = None,
        storage_class: Annotated[str | None, typer.Option(help="StorageClass of the new PVC.")] = None,
        gpus: Annotated[int | None, typer.Option(help="GPUs per replica [default: 1 if a model has GPU instances].")
                        ] = None,
        cpu: Annotated[str | None, typer.Option(help="CPU request, e.g. 2 or 500m.")] = None,
        memory: Annotated[str | None, typer.Option(help="Memory request and limit, e.g. 8Gi.")] = None,
        shm_size: Annotated[str | None, typer.Option(help="/dev/shm size, e.g. 1Gi.")] = None,
        replicas: Annotated[int, typer.Option(help="Minimum replicas.")] = 1,
        max_replicas: Annotated[int, typer.Option(help="Maximum replicas for the autoscaler.")] = 3,
        cpu_target: Annotated[int, typer.Option(help="Autoscaler target CPU utilisation in percent.")] = 70,
        hpa_queue_time_us: Annotated[int | None, typer.Option(
            help="Also scale on the average queue time per request (µs), through a custom metrics adapter.")
        ] = None,
        monitor: Annotated[str, typer.Option(help="podmonitor, servicemonitor or none.")] = "podmonitor",
        allow_model_control: Annotated[bool, typer.Option(
            help="Start in explicit model-control mode, the repository API behind a key.")] = False,
        bind: Annotated[str, typer.Option(help="compose: address the ports listen on.")] = "127.0.0.1",
        writable_root: Annotated[bool, typer.Option(help="Leave the container's root filesystem writable.")
                                 ] = False,
        force: Annotated[bool, typer.Option("--force", help="Overwrite existing manifests.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        from tritonops.cli import _emit_json
        from tritonops.cli import out as console
        from tritonops.errors import UsageError

        if target is None:
            raise UsageError("nothing to do", "give --target k8s|kserve|compose to write manifests")
        if repository is None:
            raise UsageError("no model repository given", f"tritonops deploy model_repository/ --target {target} …")
        if image is None:
            raise UsageError("--image is required with --target",
                             "give the Triton image, e.g. --image nvcr.io/nvidia/tritonserver:24.08-py3")
        from tritonops.deploy.manifests import ManifestOptions, write_manifests

        result = write_manifests(ManifestOptions(
            repository=repository, target=target, image=image, out=out, name=name,  # type: ignore[arg-type]
            namespace=namespace, storage=storage, storage_secret=storage_secret, storage_size=storage_size,
            storage_class=storage_class, gpus=gpus, cpu=cpu, memory=memory, shm_size=shm_size, replicas=replicas,
            max_replicas=max_replicas, cpu_target_percent=cpu_target, queue_time_target_us=hpa_queue_time_us,
            monitor=monitor, allow_model_control=allow_model_control,  # type: ignore[arg-type]
            bind_address=bind, writable_root=writable_root, overwrite=force,
        ))
        if as_json:
            _emit_json(result.to_dict())
            return
        s = result.sizing
        console.print(f"[green]✓[/green] {result.target} manifests in {escape(str(result.out))} "
                      f"(cpu {s.cpu}, memory {s.memory}, /dev/shm {s.shm}, gpus {s.gpus}, "
                      f"startup up to {s.startup_seconds}s)")
        for f in result.files:
            console.print(f"    {escape(str(f.path))}  {', '.join(f.kinds)}" + ("" if f.apply else "  (extra)"))
        for note in result.notes:
            console.print(f"  note: {escape(note)}")
