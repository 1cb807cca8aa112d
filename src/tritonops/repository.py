"""Model repository layout: versions and staged, atomic writes.

A build writes everything into a staging directory first and then moves it into place with
renames, so a failure at any step leaves the repository byte-for-byte as it was."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tritonops.errors import RepositoryError, UsageError
from tritonops.names import check_model_name

CopyFn = Callable[[Path, Path], object]


def version_dirs(model_dir: Path) -> list[int]:
    """Numeric version directories, as Triton sees them (names starting with '0' are ignored)."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and not p.name.startswith("0")
    )


def next_version(model_dir: Path) -> int:
    versions = version_dirs(model_dir)
    return versions[-1] + 1 if versions else 1


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


def _stage_parent(repository: Path) -> Path:
    # Beside the repository, so a server polling it never sees half-written directories; renames
    # stay on one filesystem in the common case (the fallback below handles the other).
    return repository.parent


def _replace(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as e:
        if e.errno == errno.EXDEV:
            raise RepositoryError(
                f"cannot move the staged model into {dst.parent}: it is on another filesystem",
                "set TMPDIR to a directory on the repository's filesystem",
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
    elif version < 1:
        raise UsageError(f"version {version} is not valid", "versions are positive integers: --version 1")
    elif (model_dir / str(version)).exists() and not replace_version:
        raise UsageError(
            f"version {version} of model '{name}' already exists in {repository}",
            f"choose another with --version, or leave --version out to write version {next_version(model_dir)}",
        )
    parent = _stage_parent(repository)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".tritonops-stage-{name}-", dir=parent))
    except OSError as e:
        raise RepositoryError(f"cannot create a staging directory in {parent}: {e.strerror}",
                              "check that the directory is writable and the disk has space") from None
    model_root = stage / name
    version_dir = model_root / str(version)
    version_dir.mkdir(parents=True)
    staged = StagedModel(name, repository, version, stage, model_root, version_dir, copy)
    try:
        yield staged
        _commit(staged, model_dir, replace_version)
    except OSError as e:
        raise RepositoryError(
            f"writing model '{name}' failed: {e.strerror or e}; the repository was left unchanged",
            "free disk space or fix permissions, then build again",
        ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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
