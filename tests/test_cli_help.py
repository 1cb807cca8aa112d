"""`--help` works for the app and every command and subcommand, found by walking the typer app (so a new
command is covered without editing this file). Help text is plain text: brackets in it are not markup."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from tritonops.cli import app


def command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command below a click group (typer may vendor its own click: groups are what has commands)."""
    paths = []
    for name, cmd in getattr(group, "commands", {}).items():
        paths.append((*prefix, name))
        paths.extend(command_paths(cmd, (*prefix, name)))
    return paths


PATHS = command_paths(typer.main.get_command(app))


def test_every_command_group_is_found():
    names = {" ".join(p) for p in PATHS}
    assert {"build", "check", "inspect", "doctor", "serve", "validate", "perf", "loadtest", "deploy", "study",
            "study protocols", "study config"} <= names


def test_app_help(cli):
    code, out, err = cli("--help")
    assert code == 0, err
    assert out.startswith("Usage: tritonops [OPTIONS] COMMAND [ARGS]...")
    for option in ("--debug", "--verbose", "--debug-log", "--version"):
        assert option in out


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_command_help(cli, path):
    code, out, err = cli(*path, "--help")
    assert code == 0, err
    assert out.startswith(f"Usage: tritonops {' '.join(path)} "), out[:200]
    assert "Traceback" not in err and "error" not in err


def test_brackets_in_help_are_text(cli):
    """deploy's --storage help says 'pvc:CLAIM[/dir]'; read as rich markup it crashed the help."""
    code, out, _ = cli("deploy", "--help")
    assert code == 0
    assert "pvc:CLAIM[/dir]" in out and "[default: a new PVC]" in out


def test_colon_words_in_help_are_text_not_emoji(cli):
    """study protocols' --rates help says 'START:END:STEP'; with rich's emoji codes on, ':END:' was printed as
    an emoji (issue 14, item 14)."""
    code, out, _ = cli("study", "protocols", "--help")
    assert code == 0
    assert "START:END:STEP" in out
    assert "\N{END WITH LEFTWARDS ARROW ABOVE}" not in out
