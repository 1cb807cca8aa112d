"""The ``tritonops`` command line: ``app`` (the typer application) and ``main`` (the console script).

Layout: ``app`` holds the global options and the error handling, ``render`` what every command shows
(consoles, spinner, error lines, the --json envelope), and one module per command group registers its
commands on the app: ``build`` (build, check, inspect, doctor), ``serve``, ``validate``, ``perf`` (perf,
loadtest, study) and ``deploy``. Command modules import ``render`` and the library, never ``app``.
"""

from __future__ import annotations

from tritonops.cli.app import app, main

__all__ = ["app", "main"]
