"""Issue 14, the server's part and the shared mechanisms: no orphans while models load, nothing
from outside the repository, one safe file reader, one host/port check, docker images checked and
quoted, a state and a reason for every model in the index.

Each test reproduces a reported case first (with the real CLI or a real tritonserver)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tritonops.build import BuildOptions, build
from tritonops.docker import check_image_reference, docker_command, docker_command_line
from tritonops.errors import UsageError
from tritonops.netaddr import check_bind_host
from tritonops.paths import (
    check_name,
    escaping_symlinks,
    inside,
    model_directory,
    open_for_writing,
    read_bytes,
    read_text,
)
from tritonops.server import ServerOptions, TritonServer
from tritonops.tune.memory import process_command

SRC = Path(__file__).parents[1] / "src"


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[2])


def live_processes() -> dict[int, tuple[str, int, int]]:
    found = {}
    for d in Path("/proc").glob("[0-9]*"):
        st = proc_stat(int(d.name))
        if st is not None and st[0] != "Z":
            found[int(d.name)] = st
    return found


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def cli_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def two_models(tmp_path, mlp_onnx) -> Path:
    repo = tmp_path / "repo"
    for name in ("first", "second"):
        build(BuildOptions(source=str(mlp_onnx), repository=repo, name=name))
    return repo


# ------------------------------------------------------------------ item 1: orphans during start-up
@pytest.mark.lifecycle
@pytest.mark.server
def test_sigkill_while_models_load_leaves_no_stubs_and_no_shared_memory(two_models):
    """The issue's repro: serve two ONNX models, SIGKILL tritonops as soon as the first Python backend
    stub exists (models still loading), then look for stubs and their /dev/shm regions."""
    cli = Path(sys.executable).parent / "tritonops"
    parent = subprocess.Popen([str(cli), "serve", str(two_models), "--http-port", "0", "--grpc-port", "0",
                               "--metrics-port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=cli_env())
    server = 0
    stubs: list[int] = []
    regions: set[str] = set()
    guards: list[int] = []

    def first_stub() -> bool:
        nonlocal server, stubs, guards
        procs = live_processes()
        children = [p for p, (_, ppid, _) in procs.items() if ppid == parent.pid]
        server = next((p for p in children if "tritonserver" in process_command(p)), 0)
        guards = [p for p in children if "watchdog.py" in process_command(p)]
        # A stub is forked by the server (its command line then is the server's) and exec'd
        # through a shell: wait for the one that names its shared memory region.
        stubs = [p for p, (_, _, pgid) in procs.items()
                 if server and pgid == server and p != server and "triton_python_backend_stub" in process_command(p)]
        for p in stubs:
            regions.update(re.findall(r"[\w-]*shm_region_[\w-]+", process_command(p)))
        return bool(regions)

    try:
        assert wait_until(first_stub, 120, step=0.02), "no Python backend stub started"
        # Triton opens its endpoints only once every model is loaded: nobody listens yet.
        port = re.search(r"--http-port=(\d+)", process_command(server))
        assert port is not None
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/v2/health/live", timeout=1)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert regions, "the stubs' shared memory regions were not seen"
    prefixes = {re.sub(r"[0-9a-f-]{36}$", "", r) for r in regions}

    def group_gone() -> bool:
        return not [p for p, (_, _, pgid) in live_processes().items() if pgid == server]

    def shm_gone() -> bool:
        return not [f for f in os.listdir("/dev/shm") if any(f.startswith(prefix) for prefix in prefixes)]

    assert wait_until(group_gone, 30, step=0.2), {
        p: process_command(p) for p, (_, _, pgid) in live_processes().items() if pgid == server}
    assert wait_until(shm_gone, 10, step=0.2), sorted(os.listdir("/dev/shm"))
    assert wait_until(lambda: all(proc_stat(g) is None or proc_stat(g)[0] == "Z" for g in guards), 10)
    assert not list(Path(tempfile.gettempdir()).glob(f"tritonops-server-{parent.pid}-*"))  # the backend dir
    for log in Path(tempfile.gettempdir()).glob(f"tritonserver-{parent.pid}-*.log"):
        log.unlink()  # a killed parent cannot remove its server's log


@pytest.mark.lifecycle
@pytest.mark.server
def test_a_clean_stop_removes_the_servers_shared_memory_and_its_guard(two_models):
    def guards() -> set[int]:  # this process's guards: the session server's too, when it runs
        return {p for p, (_, ppid, _) in live_processes().items()
                if ppid == os.getpid() and "watchdog.py" in process_command(p)}

    before = guards()
    with TritonServer(ServerOptions(repository=two_models)) as server:
        pid = server.pid
        (guard,) = guards() - before
        stubs = [p for p, (_, _, pgid) in live_processes().items() if pgid == pid and p != pid]
        regions = {r for p in stubs for r in re.findall(r"[\w-]*shm_region_[\w-]+", process_command(p))}
        assert regions and all(r.startswith("tritonops_") for r in regions)
        assert all((Path("/dev/shm") / r).exists() for r in regions)
    assert not [r for r in regions if (Path("/dev/shm") / r).exists()]
    assert proc_stat(guard) is None  # reaped


# ------------------------------------------------------------------ item 2: containment
@pytest.mark.parametrize(("name", "message"), [
    ("../../elsewhere/evil", "--load-model '../../elsewhere/evil' is a path, not a name"),
    ("/etc", "--load-model '/etc' is an absolute path, not a name"),
    ("..", "--load-model '..' is not a name: it refers to a directory, not into one"),
    ("a\nb", "--load-model 'a\\nb' contains a control character"),
    ("", "--load-model is empty"),
])
def test_load_model_must_be_a_plain_name(tmp_path, name, message):
    with pytest.raises(UsageError) as info:
        ServerOptions(repository=tmp_path, explicit=True, load_models=(name,))
    assert info.value.message == message
    assert info.value.hint == "give the name of a model directory in the repository"


@pytest.fixture
def outside_model(tmp_path, mlp_onnx) -> Path:
    """A model outside the repository, two levels up from it as in the issue."""
    build(BuildOptions(source=str(mlp_onnx), repository=tmp_path / "elsewhere", name="evil"))
    return tmp_path / "elsewhere" / "evil"


@pytest.mark.lifecycle
def test_serve_refuses_a_model_from_outside_the_repository(cli, tmp_path, two_models, outside_model):
    (tmp_path / "deep" / "er").mkdir(parents=True)
    repo = tmp_path / "deep" / "er" / "repo"
    two_models.rename(repo)
    code, out, err = cli("serve", repo, "--explicit", "--load-model", "../../elsewhere/evil", "--http-port", "0",
                         "--grpc-port", "0", "--metrics-port", "0")
    assert code == 2, (out, err)
    assert err.splitlines()[0] == "error: --load-model '../../elsewhere/evil' is a path, not a name"
    assert "tritonserver ready" not in out


@pytest.mark.lifecycle
def test_serve_refuses_a_symlinked_model_that_leaves_the_repository(cli, two_models, outside_model):
    (two_models / "evil").symlink_to(outside_model, target_is_directory=True)
    code, out, err = cli("serve", two_models, "--explicit", "--load-model", "evil", "--http-port", "0",
                         "--grpc-port", "0", "--metrics-port", "0")
    assert code == 2, (out, err)
    assert err.splitlines()[0] == f"error: --load-model '{two_models / 'evil'}' leads outside the repository " \
                                  f"'{two_models}'"


@pytest.mark.lifecycle
def test_serve_load_model_that_does_not_exist_is_an_error(cli, two_models):
    """Item 13: it used to be silently ignored (Triton starts without it)."""
    code, out, err = cli("serve", two_models, "--explicit", "--load-model", "nosuch", "--http-port", "0",
                         "--grpc-port", "0", "--metrics-port", "0")
    assert code == 2, (out, err)
    assert err.splitlines()[0] == f"error: --load-model 'nosuch' is not in the repository '{two_models}'"
    assert err.splitlines()[1] == "hint: give the name of one of its model directories"


def test_containment_api(tmp_path):
    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "1" / "model.onnx").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("root:x:0:0")
    (repo / "m" / "1" / "secret.txt").symlink_to(tmp_path / "secret.txt")
    (repo / "m" / "1" / "inner").symlink_to("model.onnx")  # stays inside: fine
    (repo / "m" / "loop").symlink_to("loop")
    (repo / "m" / "dangling").symlink_to("/nonexistent/x")
    (repo / "file").write_text("")
    assert check_name("m") == "m"
    assert model_directory(repo, "m") == (repo / "m").resolve()
    assert inside(repo, "m/1/inner") == (repo / "m" / "1" / "model.onnx").resolve()
    with pytest.raises(UsageError, match=r"leads outside the repository"):
        inside(repo, "m/1/secret.txt")
    with pytest.raises(UsageError, match=r"leads outside the repository"):
        inside(repo, "../secret.txt")
    with pytest.raises(UsageError, match=r"is a symbolic link loop$"):
        inside(repo, "m/loop")
    with pytest.raises(UsageError) as info:
        model_directory(repo, "file")
    assert info.value.message == f"model 'file' in '{repo}' is not a directory"
    assert escaping_symlinks(repo / "m", repo) == sorted(
        [repo / "m" / "1" / "secret.txt", repo / "m" / "dangling", repo / "m" / "loop"])
    # the secret's content never appears in a message
    with pytest.raises(UsageError) as info:
        inside(repo, "m/1/secret.txt")
    assert "root:x" not in info.value.message


# ------------------------------------------------------------------ item 7 / 10: the safe reader
def test_reader_refuses_special_files_without_blocking(tmp_path):
    fifo = tmp_path / "config.pbtxt"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(UsageError) as info:
        read_text(fifo, "config.pbtxt")
    assert info.value.message == f"config.pbtxt '{fifo}' is a named pipe (FIFO), not a regular file"
    with pytest.raises(UsageError) as info:
        read_bytes(Path("/dev/zero"), "model file")
    assert info.value.message == "model file '/dev/zero' is a character device, not a regular file"
    with pytest.raises(UsageError) as info:
        read_bytes(tmp_path, "model file")
    assert info.value.message == f"model file '{tmp_path}' is a directory, not a regular file"
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        with pytest.raises(UsageError) as info:
            read_bytes(sock_path, "model file")
    assert info.value.message == f"model file '{sock_path}' is a socket, not a regular file"
    with pytest.raises(UsageError) as info:
        read_bytes(tmp_path / "none", "model file")
    assert info.value.message == f"model file '{tmp_path / 'none'}' does not exist"
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    with pytest.raises(UsageError) as info:
        read_bytes(loop, "config.pbtxt")
    assert info.value.message == f"config.pbtxt '{loop}' is a symbolic link loop"
    assert time.monotonic() - started < 5


def test_reader_limits_size_and_decodes_utf8_or_says_which_file(tmp_path):
    f = tmp_path / "config.pbtxt"
    f.write_bytes(b"x" * 2000)
    assert read_bytes(f, limit=2000) == b"x" * 2000
    with pytest.raises(UsageError) as info:
        read_bytes(f, "config.pbtxt", limit=1024)
    assert info.value.message == f"config.pbtxt '{f}' is 2000 bytes, more than the 1.0 KiB allowed"
    f.write_bytes(b"abc" + b"y" * 1500 + b"end")
    assert read_bytes(f, limit=3, tail=True) == b"end"
    f.write_bytes(b'name: "caf\xe9"')
    with pytest.raises(UsageError) as info:
        read_text(f, "config.pbtxt")
    assert info.value.message == f"config.pbtxt '{f}' is not UTF-8 text (byte 0xe9 at offset 10)"
    assert info.value.hint == "save it as UTF-8"
    assert read_text(f, errors="replace") == 'name: "caf\ufffd"'
    f.write_text('name: "café"', encoding="utf-8")
    assert read_text(f) == 'name: "café"'


def test_writer_refuses_directories_and_fifos(tmp_path):
    with pytest.raises(UsageError) as info:
        open_for_writing(tmp_path, "--log-file")
    assert info.value.message == f"--log-file '{tmp_path}' is a directory, not a regular file"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsageError) as info:
        open_for_writing(fifo, "--log-file")
    assert info.value.message == f"--log-file '{fifo}' is a named pipe (FIFO), not a regular file"
    (tmp_path / "file").write_text("old")
    with pytest.raises(UsageError) as info:
        open_for_writing(tmp_path / "file" / "log", "--log-file", create_parents=True)
    assert info.value.message == f"--log-file '{tmp_path / 'file' / 'log'}' cannot be written: " \
                                 "a parent of it is not a directory"
    with open_for_writing(tmp_path / "file", "--log-file") as out:
        out.write(b"new")
    assert (tmp_path / "file").read_text() == "new"


@pytest.mark.lifecycle
def test_serve_log_file_that_is_a_directory_is_a_usage_error(cli, two_models, tmp_path):
    """Item 10: it was an internal error (exit 70)."""
    def workdirs() -> set[Path]:  # this process's server directories: the session server's too, when it runs
        return set(Path(tempfile.gettempdir()).glob(f"tritonops-server-{os.getpid()}-*"))

    before = workdirs()
    code, out, err = cli("serve", two_models, "--log-file", tmp_path, "--http-port", "0", "--grpc-port", "0",
                         "--metrics-port", "0")
    assert code == 2, (out, err)
    assert err.splitlines()[0] == f"error: --log-file '{tmp_path}' is a directory, not a regular file"
    assert not workdirs() - before


# ------------------------------------------------------------------ item 4: host and port
def test_all_interfaces_is_allowed_with_a_loud_warning(tmp_path):
    for host in ("0.0.0.0", "::"):
        warning = ServerOptions(repository=tmp_path, host=host).bind_warning
        assert warning is not None and "EVERY network interface" in warning and "no authentication" in warning
    assert ServerOptions(repository=tmp_path).bind_warning is None
    assert check_bind_host("localhost") is None


@pytest.mark.parametrize(("host", "message"), [
    ("203.0.113.7", "--host 203.0.113.7 is not an address of this machine"),  # TEST-NET-3: never local
    ("no-such-host.invalid", "--host 'no-such-host.invalid' is neither an IP address nor a name that resolves"),
    ("127.0.0.1 --foo", "--host '127.0.0.1 --foo' is not an address"),
    ("-x", "--host '-x' is not an address"),
])
@pytest.mark.lifecycle
def test_a_host_that_is_not_local_is_refused_and_not_called_busy(cli, tmp_path, host, message):
    with pytest.raises(UsageError) as info:
        ServerOptions(repository=tmp_path, host=host)
    assert info.value.message == message
    code, _, err = cli("serve", tmp_path, "--host", host)
    assert code == 2 and err.splitlines()[0] == f"error: {message}"
    assert "in use" not in err


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--http-port", "70000", "--http-port 70000 is not a port number"),
    ("--grpc-port", "-1", "--grpc-port -1 is not a port number"),
    ("--log-verbose", "99", "--log-verbose 99 is not a verbosity level"),
    ("--log-verbose", "-1", "--log-verbose -1 is not a verbosity level"),
])
@pytest.mark.lifecycle
def test_serve_numbers_out_of_range_are_refused(cli, tmp_path, flag, value, message):
    code, _, err = cli("serve", tmp_path, flag, value)
    assert code == 2 and err.splitlines()[0] == f"error: {message}"


def test_log_verbose_levels_that_help_promises_are_accepted(tmp_path):
    for level in (0, 1, 2):
        assert ServerOptions(repository=tmp_path, log_verbose=level).log_verbose == level


# ------------------------------------------------------------------ item 9: docker image and quoting
@pytest.mark.parametrize("image", ["nvcr.io/x; rm -rf /", "--privileged", "nvcr.io/nvidia/tritonserver:24.08 -py3",
                                   "", "image:", "x@sha256:abc", "$(id)"])
def test_docker_image_must_be_an_image_reference(tmp_path, image):
    with pytest.raises(UsageError) as info:
        docker_command(ServerOptions(repository=tmp_path), image)
    assert info.value.message.startswith("--docker '") and info.value.message.endswith(
        "' is not a container image reference")


@pytest.mark.parametrize("image", ["nvcr.io/nvidia/tritonserver:24.08-py3", "tritonserver",
                                   "localhost:5000/team/triton:v1", "triton@sha256:" + "a" * 64])
def test_docker_image_references_are_accepted(image):
    assert check_image_reference(image) == image


def test_docker_command_line_quotes_every_argument(tmp_path, mlp_onnx):
    repo = tmp_path / "my models"
    build(BuildOptions(source=str(mlp_onnx), repository=repo, name="mlp"))
    options = ServerOptions(repository=repo, explicit=True, load_models=("mlp",))
    line = docker_command_line(options, "nvcr.io/nvidia/tritonserver:24.08-py3")
    assert shlex.split(line) == docker_command(options, "nvcr.io/nvidia/tritonserver:24.08-py3")
    assert f"'{repo}:/models:ro'" in line
    with pytest.raises(UsageError, match="'nosuch' is not in the repository"):
        docker_command(ServerOptions(repository=repo, explicit=True, load_models=("nosuch",)), "tritonserver")


# ------------------------------------------------------------------ item 13: a state and a reason
@pytest.fixture
def repo_with_loop(two_models) -> Path:
    config = two_models / "second" / "config.pbtxt"
    config.unlink()
    config.symlink_to("config.pbtxt")
    return two_models


@pytest.mark.lifecycle
@pytest.mark.server
def test_models_triton_could_not_read_get_a_state_and_a_reason(repo_with_loop):
    options = ServerOptions(repository=repo_with_loop, exit_on_error=False, strict_readiness=False)
    with TritonServer(options) as server:
        states = {s.name: s for s in server.model_states()}
    assert states["first"].state == "READY"
    assert states["second"].state == "UNAVAILABLE"
    assert states["second"].reason == (
        f"not loaded: config.pbtxt '{repo_with_loop / 'second' / 'config.pbtxt'}' is a symbolic link loop")


@pytest.mark.lifecycle
@pytest.mark.server
def test_models_not_loaded_in_explicit_mode_get_a_state_and_a_reason(repo_with_loop, mlp_onnx):
    build(BuildOptions(source=str(mlp_onnx), repository=repo_with_loop, name="third"))
    options = ServerOptions(repository=repo_with_loop, explicit=True, load_models=("first",))
    with TritonServer(options) as server:
        states = {s.name: s for s in server.model_states()}
    assert states["first"].state == "READY" and states["first"].reason == ""
    assert states["third"].state == "UNAVAILABLE"
    assert states["third"].reason == ("not loaded (explicit model control): load it at start with --load-model "
                                      "third or later with POST /v2/repository/models/third/load")
    assert states["second"].state == "UNAVAILABLE"
    assert states["second"].reason.endswith("is a symbolic link loop")

