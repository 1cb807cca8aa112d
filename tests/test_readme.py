"""The README's examples run: every `tritonops` command in its build and check sections is executed
against real files made here (model.onnx, traced.pt, a mypkg package), in a scratch directory."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import onnx_models

README = Path(__file__).parent.parent / "README.md"


def readme_commands(section: str) -> list[str]:
    text = README.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("tritonops "):
                commands.append(line)
    return commands


def test_readme_lists_the_two_commands():
    text = README.read_text()
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


@pytest.mark.torch
def test_build_section_examples_run(tmp_path, monkeypatch, cli):
    torch = pytest.importorskip("torch", reason="the TorchScript and factory examples need the torch extra")
    monkeypatch.chdir(tmp_path)
    onnx_models.mlp(tmp_path / "model.onnx")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    torch.jit.trace(Net().eval(), torch.zeros(1, 3, 224, 224)).save(str(tmp_path / "traced.pt"))
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "models.py").write_text(
        "import torch\n\n"
        "def make_model():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),\n"
        "                               torch.nn.Linear(8 * 30 * 30, 10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    commands = readme_commands("build")
    assert len(commands) >= 6
    ran = 0
    for command in commands:
        args = shlex.split(command)[1:]
        if "-f" in args:
            continue  # the MiniLM build file: built and served in test_example.py
        args = [str(tmp_path / "srv") if a == "/srv/models" else a for a in args]
        code, out, err = cli(*args)
        assert code == 0, f"{command}\n{err}"
        assert "built" in out
        ran += 1
    assert ran == len(commands) - 1
    assert (tmp_path / "model_repository" / "clf" / "config.pbtxt").exists()
    assert (tmp_path / "model_repository" / "traced" / "1" / "model.pt").exists()
    assert (tmp_path / "srv" / "model" / "1" / "model.onnx").exists()
    for command in readme_commands("check"):
        args = list(shlex.split(command)[1:])
        code, out, err = cli(*args)
        assert code == 0, f"{command}\n{out}{err}"
