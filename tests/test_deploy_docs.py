"""Every `tritonops deploy` command in the README's deploy section runs: the manifest commands offline (their
Kubernetes output validated strictly), the roll-out commands against a real server in explicit mode,
with /srv/triton/models and localhost replaced by a scratch repository and the server's ports."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import onnx_models
from deploy_repos import mlp_spec, write_model
from test_deploy_manifests import kubernetes_validate
from tritonops.server import ServerOptions, TritonServer

README = Path(__file__).parent.parent / "README.md"


def deploy_section() -> str:
    return README.read_text().split("## deploy\n", 1)[1].split("\n## ", 1)[0]


def doc_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", deploy_section(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("tritonops deploy "):
                commands.append(line)
    return commands


def test_doc_has_the_commands():
    commands = doc_commands()
    assert sum("--target" in c for c in commands) >= 5
    assert sum("--to " in c for c in commands) >= 3


@pytest.mark.server
def test_every_deploy_command_in_the_doc_runs(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    write_model(tmp_path / "model_repository", mlp_spec("clf"), 1, onnx_models.mlp(tmp_path / "new.onnx", seed=1))
    target = tmp_path / "srv"
    write_model(target, mlp_spec("clf"), 1, onnx_models.mlp(tmp_path / "old.onnx", seed=0))
    ran = 0
    compose_written = False
    # A server of its own, not the session server: the roll-outs of clf leave versions in Triton's
    # repository index that a later module's own clf would find (see test_deploy_rollout.shared_server).
    with TritonServer(ServerOptions(repository=target, explicit=True, load_models=("*",))) as server:
        for command in doc_commands():
            args = shlex.split(command)[1:]
            if "--to" in args:
                args = [str(target) if a == "/srv/triton/models" else a for a in args]
                at = args.index("--url")
                args[at:at + 2] = ["--url", "127.0.0.1", "--http-port", str(server.http_port), "--grpc-port",
                                   str(server.grpc_port)]
            code, out, err = cli(*args)
            assert code == 0, f"{command}\n{out}\n{err}"
            ran += 1
            if "--target" in args and args[args.index("--target") + 1] == "compose":
                assert (tmp_path / "deploy" / "compose.yaml").exists()
                compose_written = True
            if "--target" in args and args[args.index("--target") + 1] == "k8s":
                out_dir = tmp_path / args[args.index("--out") + 1]
                kubernetes_validate(sorted(p for p in out_dir.glob("*.yaml")
                                           if not p.name.endswith("monitor.yaml") and p.name != "compose.yaml"))
    assert ran == len(doc_commands())
    assert compose_written
    # The later k8s runs into the same deploy/ with --force remove what the compose run wrote (issue 14 item 8:
    # no stale manifests of an earlier run beside the new ones).
    assert not (tmp_path / "deploy" / "compose.yaml").exists()
    assert (tmp_path / "kserve" / "inferenceservice.yaml").exists()
    assert sorted(p.name for p in (target / "clf").iterdir()) == ["1", "config.pbtxt"]  # deployed, then rolled back
