"""Model repository layout: versions and staged, atomic writes.

A build writes everything into a staging directory first and then moves it into place with
renames, so a failure at any step leaves the repository byte-for-byte as it was.

Versions: ``parse_version`` is the one parser of a version number (``build --version``, version
directories, deploy records): Triton reads a version directory's name as an int64 and aborts on
one that does not fit (``std::out_of_range`` from ``stoll``), so 1..2**63-1 only.

Staging: beside the repository when the parent is on the same filesystem (one rename makes a new
model appear whole). A repository that is a mount point (or whose parent cannot be written) stages
*inside* it, but never as a top-level directory: Triton treats every top-level directory, hidden
or not, as a model (checked with the real server: a ``.tritonops-stage-*`` directory is listed as a
broken model, which fails start-up). A hidden directory inside a model directory is ignored ("ignore
version directory ... which fails to convert to integral number"), so the stage goes into the
model's directory, or another model's, and is renamed from there. Stage names carry the pid and a
host tag, so the next build removes those of builds that were killed (``remove_stale_stages``)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tritonops.errors import RepositoryError, UsageError
from tritonops.names import check_model_name
from tritonops.paths import shown

CopyFn = Callable[[Path, Path], object]

MAX_VERSION = (1 << 63) - 1  # Triton's versions are int64
VERSION_HINT = f"versions are whole numbers from 1 to {MAX_VERSION}: --version 1"
_DIGITS = re.compile(r"[0-9]+")


def parse_version(value: str | int, what: str = "version") -> int:
    """The version ``value`` names, if Triton can read it (1..2**63-1, no leading zero in text);
    a ``UsageError`` saying why not otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UsageError(f"{what} {value!r} is not a whole number", VERSION_HINT)
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            raise UsageError(f"{what} {shown(value)} is not a whole number", VERSION_HINT)
        if value.startswith("0"):
            raise UsageError(f"{what} '{value}' starts with 0 (Triton ignores such directories)", VERSION_HINT)
        number = int(value)
    else:
        number = value
    if number < 1:
        raise UsageError(f"{what} {number} is not valid", VERSION_HINT)
    if number > MAX_VERSION:
        raise UsageError(f"{what} {number} is too large: Triton reads versions as 64-bit integers", VERSION_HINT)
    return number


def is_version_name(name: str) -> bool:
    """A directory name Triton serves as a version (digits, no leading 0, within int64)."""
    return bool(_DIGITS.fullmatch(name)) and not name.startswith("0") and int(name) <= MAX_VERSION


def version_dirs(model_dir: Path) -> list[int]:
    """Numeric version directories, as Triton sees them (names starting with '0' are ignored)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and is_version_name(p.name))


def oversized_version_dirs(model_dir: Path) -> list[str]:
    """Version directories whose number is beyond int64: Triton aborts (the whole server) on them."""
    if not model_dir.is_dir():
        return []
    return sorted(p.name for p in model_dir.iterdir()
                  if _DIGITS.fullmatch(p.name) and not p.name.startswith("0") and int(p.name) > MAX_VERSION)


def next_version(model_dir: Path) -> int:
    versions = version_dirs(model_dir)
    return versions[-1] + 1 if versions else 1


# ------------------------------------------------------------------------------------------ stages
STAGE_PREFIX = ".tritonops-stage-"
_STAGE = re.compile(r"\.tritonops-stage-([0-9]+)-([0-9a-f]{8})-")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def stage_prefix(label: str = "") -> str:
    """The name prefix of a staging directory of this process: its pid and host tag let a later run
    tell a stage of a killed build from one in progress."""
    return f"{STAGE_PREFIX}{os.getpid()}-{_host_tag()}-{label + '-' if label else ''}"


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _started_after(pid: int, when: float) -> bool:
    """Whether process ``pid`` started after ``when`` (so the pid was reused); False if unknown."""
    boot = _boot_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") if boot is not None else None
    except (OSError, ValueError, IndexError):
        return False
    return started is not None and started > when + 1.0


def stage_is_stale(path: Path) -> bool:
    """A staging directory left by a tritonops process of this host that is gone (killed)."""
    m = _STAGE.match(path.name)
    if m is None or m.group(2) != _host_tag() or not path.is_dir() or path.is_symlink():
        return False
    pid = int(m.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    try:
        return _started_after(pid, path.stat().st_mtime)
    except OSError:
        return False


def stale_stages(repository: Path, *, beside: bool = True) -> list[Path]:
    """Stages of killed builds and roll-outs: beside the repository (unless ``beside`` is False), in
    it, and in its model directories."""
    places = [repository.parent, repository] if beside else [repository]
    with contextlib.suppress(OSError):
        places += [p for p in repository.iterdir() if p.is_dir() and not p.is_symlink()]
    found: list[Path] = []
    for place in places:
        with contextlib.suppress(OSError):
            found += [p for p in place.iterdir() if p.name.startswith(STAGE_PREFIX) and stage_is_stale(p)]
    return sorted(found)


def remove_stale_stages(repository: Path) -> list[Path]:
    """Remove the stages ``stale_stages`` finds; returns what was removed."""
    removed = []
    for p in stale_stages(repository):
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
            if p.parent.parent == repository:  # a model directory made only to hold the stage: gone too
                with contextlib.suppress(OSError):
                    p.parent.rmdir()
    return removed


@dataclass
class StagedModel:
    """A model directory being built: ``version_dir`` and ``model_root`` are inside the stage."""

    name: str
    repository: Path
    version: int
    stage: Path
    model_root: Path  # staged model directory (config.pbtxt goes here)
    version_dir: Path  # staged version directory (model files go here)
    copy: CopyFn

    def add_file(self, source: Path, relative: str) -> Path:
        target = self.version_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy(source, target)
        return target

    def add_model_file(self, source: Path, relative: str) -> Path:
        """A file beside config.pbtxt (label files, provenance, warm-up data)."""
        target = self.model_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy(source, target)
        return target


def _same_filesystem(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return False


def _make_stage(repository: Path, model_dir: Path, name: str) -> tuple[Path, bool]:
    """A new staging directory and whether ``model_dir`` was created to hold it (see the module doc)."""
    prefix = stage_prefix(name)
    parent = repository.parent
    errors: list[OSError] = []
    if not repository.exists() or _same_filesystem(repository, parent):
        try:
            parent.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=prefix, dir=parent)), False
        except OSError as e:
            if not repository.is_dir():
                raise RepositoryError(f"cannot create a staging directory in {parent}: {e.strerror}",
                                      "check that the directory is writable and the disk has space") from None
            errors.append(e)
    hosts = [model_dir] if model_dir.is_dir() else []
    hosts += sorted(p for p in repository.iterdir()
                    if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and p != model_dir)
    for host in hosts:
        try:
            return Path(tempfile.mkdtemp(prefix=prefix, dir=host)), False
        except OSError as e:
            errors.append(e)
    try:
        model_dir.mkdir()
    except FileExistsError:
        raise _busy(name, repository) from None
    except OSError as e:
        raise RepositoryError(f"cannot create a staging directory in {repository}: {e.strerror}",
                              "check that the repository is writable and the disk has space") from None
    try:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=model_dir)), True
    except OSError as e:
        with contextlib.suppress(OSError):
            model_dir.rmdir()
        raise RepositoryError(f"cannot create a staging directory in {model_dir}: {e.strerror}",
                              "check that the repository is writable and the disk has space") from None


def _busy(name: str, repository: Path) -> RepositoryError:
    return RepositoryError(
        f"another build wrote model {shown(name)} in {repository} at the same time; this build left "
        "the repository as that one wrote it",
        "build again once the other build is done (it takes the next free version)")


def _replace(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as e:
        if e.errno == errno.EXDEV:
            raise RepositoryError(
                f"cannot move the staged model into {dst.parent}: it is on another filesystem",
                "report this: the staging directory should be on the repository's filesystem",
            ) from None
        raise


@contextlib.contextmanager
def stage_model(repository: Path, name: str, version: int | None = None, *, replace_version: bool = False,
                copy: CopyFn = shutil.copy2) -> Iterator[StagedModel]:
    """Stage a new version of ``name``; on normal exit commit it, on any exception leave the
    repository untouched. Older versions are kept. ``config.pbtxt`` is written last."""
    check_model_name(name)
    repository = repository.absolute()
    if repository.exists() and not repository.is_dir():
        raise UsageError(f"repository '{repository}' is not a directory", "give a directory with --repo")
    model_dir = repository / name
    if version is None:
        version = next_version(model_dir)
    else:
        version = parse_version(version)
        if (model_dir / str(version)).exists() and not replace_version:
            raise UsageError(
                f"version {version} of model '{name}' already exists in {repository}",
                f"choose another with --version, or leave --version out to write version {next_version(model_dir)}",
            )
    if repository.is_dir():
        remove_stale_stages(repository)
    stage, created = _make_stage(repository, model_dir, name)
    model_root = stage / name
    version_dir = model_root / str(version)
    version_dir.mkdir(parents=True)
    staged = StagedModel(name, repository, version, stage, model_root, version_dir, copy)
    committed = False
    try:
        yield staged
        _commit(staged, model_dir, replace_version)
        committed = True
    except OSError as e:
        if e.errno in {errno.ENOTEMPTY, errno.EEXIST}:
            raise _busy(name, repository) from None
        raise RepositoryError(
            f"writing model '{name}' failed: {e.strerror or e}; the repository was left unchanged",
            "free disk space or fix permissions, then build again",
        ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not committed:
            shutil.rmtree(model_dir, ignore_errors=True)


def _commit(staged: StagedModel, model_dir: Path, replace_version: bool) -> None:
    staged.repository.mkdir(parents=True, exist_ok=True)
    if not model_dir.exists():
        # A new model: one rename makes the whole directory appear at once.
        _replace(staged.model_root, model_dir)
        return
    # An existing model: move in the new version directory (a fresh name, so atomic), then the
    # files beside config.pbtxt, then config.pbtxt last. Undo the version on any failure.
    target = model_dir / str(staged.version)
    old_version: Path | None = None
    if target.exists() and replace_version:
        old_version = model_dir / f".tritonops-old-{staged.version}"
        os.replace(target, old_version)
    moved: list[tuple[Path, Path | None]] = []
    try:
        _replace(staged.version_dir, target)
        moved.append((target, None))
        extras = sorted(p for p in staged.model_root.iterdir() if p.name != "config.pbtxt")
        for extra in extras:
            dst = model_dir / extra.name
            backup = None
            if dst.exists():
                backup = model_dir / f".tritonops-old-{extra.name}"
                os.replace(dst, backup)
            _replace(extra, dst)
            moved.append((dst, backup))
        config = staged.model_root / "config.pbtxt"
        if config.exists():
            _replace(config, model_dir / "config.pbtxt")
    except BaseException:
        for dst, backup in reversed(moved):
            _remove(dst)
            if backup is not None:
                os.replace(backup, dst)
        if old_version is not None:
            os.replace(old_version, target)
        raise
    for _dst, backup in moved:
        if backup is not None:
            _remove(backup)
    if old_version is not None:
        _remove(old_version)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_text_file(path: Path, text: str) -> None:
    with path.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: Path, text: str, *, mode: int | None = 0o644, fsync: bool = True) -> None:
    """Replace ``path`` with ``text`` in one rename: readers (a polling server, a report viewer) see the
    old file or the new one, never half of it. The temporary file sits beside the target (same
    filesystem) and is removed on any failure. ``mode`` (default 0644: mkstemp makes 0600, and the
    server may run as another user); None keeps mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            Path(tmp).chmod(mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(directory: Path) -> None:
    """Create and remove a file: the real permission check (os.access is wrong for root, ACLs, RO mounts)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tritonops-probe-", dir=directory)
        os.close(fd)
        Path(tmp).unlink()
    except OSError as e:
        raise RepositoryError(f"cannot write to {directory}: {e.strerror or e}",
                              "run as a user who may write the server's model repository") from None
