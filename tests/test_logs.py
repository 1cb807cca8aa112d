"""Logging of a run: --verbose puts progress on stderr, every run writes a DEBUG log (a file it is given,
or a new one under the state directory, keeping the newest few), and a run leaves no handler behind."""

from __future__ import annotations

import logging

from tritonops import logs
from tritonops.progress import LOGGER_NAME


def test_verbose_shows_progress_on_stderr(cli):
    _, out, err = cli("--verbose", "doctor", "--json")
    assert "looking for tritonserver" in err.splitlines()
    assert out.startswith("{")  # stdout stays one JSON document
    _, out, err = cli("doctor", "--json")
    assert "looking for tritonserver" not in err


def test_debug_log_file_holds_the_run(cli, tmp_path):
    log = tmp_path / "logs" / "run.log"
    code, _, err = cli("--debug-log", log, "check", tmp_path / "nope")
    assert code == 2
    lines = log.read_text().splitlines()
    assert lines[0].endswith(f"tritonops --debug-log {log} check {tmp_path / 'nope'}")
    assert " DEBUG " in lines[0]
    assert any(line.startswith("tritonops.errors.UsageError: repository") for line in lines)
    # a user error names no log file: its message and hint are the whole story
    assert str(log) not in err


def test_debug_log_that_cannot_be_written(cli, tmp_path):
    (tmp_path / "file").write_text("")
    code, _, err = cli("--debug-log", tmp_path / "file" / "run.log", "doctor")
    assert code == 2
    assert err.splitlines()[0] == (f"error: --debug-log '{tmp_path / 'file' / 'run.log'}' cannot be written: "
                                   "a parent of it is not a directory")


def test_default_log_dir_keeps_the_newest(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(logs.LOG_DIR_ENV, str(tmp_path / "state"))
    for _ in range(logs.KEEP + 3):
        code, _, _ = cli("check", tmp_path / "nope")
        assert code == 2
    files = sorted((tmp_path / "state").glob("tritonops-*.log"))
    assert len(files) == logs.KEEP
    assert "check" in files[-1].read_text()


def test_default_log_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(logs.LOG_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert logs.default_log_dir() == tmp_path / "tritonops" / "logs"


def test_unwritable_default_dir_only_loses_the_file(tmp_path):
    (tmp_path / "file").write_text("")
    run = logs.configure(log_dir=tmp_path / "file" / "logs")
    try:
        assert run.path is None
    finally:
        run.close()


def test_a_run_leaves_no_handlers(cli, tmp_path):
    logger = logging.getLogger(LOGGER_NAME)
    before = list(logger.handlers), logger.level
    cli("--verbose", "--debug-log", tmp_path / "run.log", "check", tmp_path / "nope")
    assert (list(logger.handlers), logger.level) == before
