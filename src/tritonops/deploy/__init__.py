"""``tritonops deploy``: manifests for Kubernetes, KServe and docker-compose, and safe roll-outs of
new model versions to a running Triton."""

from tritonops.deploy.inventory import ModelInfo, RepositoryInventory, read_inventory
from tritonops.deploy.manifests import ManifestOptions, ManifestResult, render_manifests, write_manifests

__all__ = [
    "ManifestOptions",
    "ManifestResult",
    "ModelInfo",
    "RepositoryInventory",
    "read_inventory",
    "render_manifests",
    "write_manifests",
]
