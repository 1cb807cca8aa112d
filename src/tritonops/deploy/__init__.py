"""``tritonops deploy``: manifests for Kubernetes, KServe and docker-compose, and safe roll-outs of
new model versions to a running Triton.

Modules: ``inventory`` (what a repository holds), ``manifest_spec`` (manifest options, sizing,
results) and ``manifests`` (rendering and writing them); ``rollout`` (deploy and roll back),
``gate`` (validation and canary), ``control`` (server preflight and the safe file moves),
``status`` (what is live) and ``record`` (the append-only deploy record)."""

from tritonops.deploy.inventory import ModelInfo, RepositoryInventory, read_inventory
from tritonops.deploy.manifest_spec import ManifestOptions, ManifestResult
from tritonops.deploy.manifests import render_manifests, write_manifests
from tritonops.deploy.rollout import DeployFailed, RolloutOptions, RolloutResult, deploy_versions, rollback
from tritonops.deploy.status import DeployStatus, deploy_status

__all__ = [
    "DeployFailed",
    "DeployStatus",
    "ManifestOptions",
    "ManifestResult",
    "ModelInfo",
    "RepositoryInventory",
    "RolloutOptions",
    "RolloutResult",
    "deploy_status",
    "deploy_versions",
    "read_inventory",
    "render_manifests",
    "rollback",
    "write_manifests",
]
