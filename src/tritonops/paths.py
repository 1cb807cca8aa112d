"""Paths and files that come from the user: one containment check and one safe reader and writer.

Every command that takes a name inside a repository, reads a file the user pointed at, or writes
where the user said uses these, so the same bad input gets the same one-line ``UsageError``:

- ``check_name`` / ``inside`` / ``model_directory``: a name is one path component (no separators,
  no ``.``/``..``, no control characters) and what it names, with symlinks resolved, stays inside
  the repository. ``escaping_symlinks`` finds links in a tree that leave it or loop (for copies and checks),
  ``link_problem`` says which.
- ``read_bytes`` / ``read_text``: regular files only (a FIFO would block forever, ``/dev/zero``
  never ends, a directory or a socket cannot be read), at most ``limit`` bytes, and text that is not
  UTF-8 is an error naming the file, not an internal one.
- ``open_for_writing``: the same rules for a file to be written (a log), which must be a regular
  file or not exist yet.
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from pathlib import Path
from typing import BinaryIO

from tritonops.errors import UsageError

DEFAULT_READ_LIMIT = 64 << 20  # configs, YAML, step files, logs; model files pass their own limit
NAME_HINT = "give the name of a directory directly inside the repository"


def escaped(text: str) -> str:
    """``text`` with control characters (a newline, an escape sequence) written as escapes, so it
    stays on one line of output; plain text is returned as it is."""
    if all(unicodedata.category(c)[0] != "C" for c in text):
        return text
    return text.encode("unicode_escape").decode("ascii")


def shown(text: str) -> str:
    """``text`` quoted for a one-line message: control characters (a newline) are escaped."""
    if all(unicodedata.category(c)[0] != "C" for c in text):
        return f"'{text}'"
    return "'" + escaped(text).replace("'", "\\'") + "'"


def check_name(name: str, what: str = "name", hint: str = NAME_HINT) -> str:
    """``name`` if it is one plain path component, else a ``UsageError`` saying why not.

    Refused: the empty string, ``.`` and ``..``, anything with ``/`` or ``\\`` (so no absolute
    paths and no way up), and control characters (a newline would forge a line of output)."""
    if not name:
        raise UsageError(f"{what} is empty", hint)
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise UsageError(f"{what} {shown(name)} contains a control character", hint)
    if name in {".", ".."}:
        raise UsageError(f"{what} '{name}' is not a name: it refers to a directory, not into one", hint)
    if "/" in name or "\\" in name:
        where = "an absolute path" if name.startswith(("/", "\\")) else "a path"
        raise UsageError(f"{what} {shown(name)} is {where}, not a name", hint)
    return name


def _real(path: Path, what: str) -> Path:
    """The path with every symlink resolved; it must exist."""
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        raise UsageError(f"{what} '{path}' does not exist", None) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UsageError(f"{what} '{path}' is a symbolic link loop", "point the link at a real file") from None
        raise UsageError(f"{what} '{path}' cannot be resolved: {e.strerror}", None) from None


def inside(root: Path, relative: str | Path, what: str = "path") -> Path:
    """``root / relative`` with symlinks resolved, which must exist and stay inside ``root``.

    ``relative`` may have several components (``model/1/model.onnx``); use ``check_name`` first
    where only a single name is allowed. Raises ``UsageError`` for a path that does not exist, a
    symlink loop, or one that leads out of ``root`` (by ``..``, an absolute path or a symlink)."""
    real_root = _real(root, "repository")
    candidate = root / relative
    real = _real(candidate, what)
    if not real.is_relative_to(real_root):
        raise UsageError(f"{what} '{candidate}' leads outside the repository '{root}'",
                         "only files inside the repository can be used; copy them in instead of linking")
    return real


def model_directory(repository: Path, name: str, what: str = "model") -> Path:
    """The directory of model ``name`` in ``repository``: a plain name, an existing directory,
    inside the repository after symlinks are resolved. ``UsageError`` otherwise, naming the model."""
    check_name(name, what)
    candidate = repository / name
    if not os.path.lexists(candidate):
        raise UsageError(f"{what} '{name}' is not in the repository '{repository}'",
                         "give the name of one of its model directories")
    real = inside(repository, name, what)
    if not real.is_dir():
        raise UsageError(f"{what} '{name}' in '{repository}' is not a directory", NAME_HINT)
    return real


def link_problem(link: Path, root: Path) -> str | None:
    """Why following the symlink ``link`` is not allowed under ``root``, or None when it stays inside:
    it loops (or cannot be resolved), or it leads (or dangles) outside ``root``. The words fit after
    the link's name in a message; nothing of the target's contents is read."""
    real_root = Path(os.path.realpath(root))
    try:
        target = Path(os.path.realpath(link, strict=True))
    except FileNotFoundError:
        target = Path(os.path.realpath(link))
    except OSError:
        return "is a symbolic link loop"
    if not target.is_relative_to(real_root):
        return "is a symbolic link that leads outside the repository"
    return None


def escaping_symlinks(top: Path, root: Path | None = None) -> list[Path]:
    """Symbolic links under ``top`` (``top`` included) that lead outside ``root`` (default ``top``),
    dangle outside it, or loop (``link_problem``). Symlinked directories are reported, not followed."""
    base = root if root is not None else top
    if top.is_symlink() and link_problem(top, base):
        return [top]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top):
        for entry in (*dirnames, *filenames):
            p = Path(dirpath) / entry
            if p.is_symlink() and link_problem(p, base):
                found.append(p)
    return sorted(found)


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def _not_regular(path: Path, what: str, mode: int) -> UsageError:
    kind = _kind(mode)
    return UsageError(f"{what} '{path}' is {kind}, not a regular file" if kind.startswith("a ")
                      else f"{what} '{path}' is not a regular file", "give the path of a regular file")


def _open_error(path: Path, what: str, e: OSError, doing: str) -> UsageError:
    if e.errno == errno.ENOENT:
        if doing == "written":
            return UsageError(f"{what} '{path}' cannot be written: its directory does not exist", None)
        return UsageError(f"{what} '{path}' does not exist", None)
    if e.errno == errno.ELOOP:
        return UsageError(f"{what} '{path}' is a symbolic link loop", "point the link at a real file")
    if e.errno in {errno.ENXIO, errno.EISDIR, errno.EOPNOTSUPP}:  # a socket, a directory, a FIFO nobody reads
        try:
            return _not_regular(path, what, path.stat().st_mode)
        except OSError:
            pass
    if e.errno in {errno.EACCES, errno.EPERM}:
        return UsageError(f"{what} '{path}' cannot be {doing}: permission denied", "check its permissions")
    return UsageError(f"{what} '{path}' cannot be {doing}: {e.strerror}", None)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def read_bytes(path: Path, what: str = "file", limit: int = DEFAULT_READ_LIMIT, *, tail: bool = False) -> bytes:
    """The bytes of the regular file ``path`` (symlinks followed), at most ``limit`` of them.

    A FIFO, a device, a directory or a socket is refused without blocking (the file is opened
    non-blocking and checked with ``fstat`` on the open descriptor, so it cannot be swapped in
    between). A file over ``limit`` is an error, or with ``tail=True`` its last ``limit`` bytes are
    returned (logs). Every failure is a ``UsageError`` naming ``what`` and the path."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise _open_error(path, what, e, "read") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, what, st.st_mode)
        if st.st_size > limit:
            if not tail:
                raise UsageError(f"{what} '{path}' is {st.st_size} bytes, more than the {_size(limit)} allowed",
                                 "is it the right file?")
            os.lseek(fd, st.st_size - limit, os.SEEK_SET)
        chunks: list[bytes] = []
        total = 0
        while True:  # st_size can lie (a file still growing, /proc): never read more than limit + 1
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                if not tail:
                    raise UsageError(f"{what} '{path}' is more than the {_size(limit)} allowed",
                                     "is it the right file?")
                data = b"".join(chunks)[-limit:]
                chunks, total = [data], len(data)
    except OSError as e:
        raise _open_error(path, what, e, "read") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_text(path: Path, what: str = "file", limit: int = DEFAULT_READ_LIMIT, *, errors: str = "strict",
              tail: bool = False) -> str:
    """``read_bytes`` decoded as UTF-8; bytes that are not UTF-8 are a ``UsageError`` naming the file
    and the offset (``errors="replace"`` for text that need not be, like a server log)."""
    data = read_bytes(path, what, limit, tail=tail)
    try:
        return data.decode("utf-8", errors)
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} '{path}' is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})",
                         "save it as UTF-8") from None


def check_writable_file(path: Path, what: str = "file") -> Path:
    """What ``open_for_writing`` would refuse, found without opening or creating anything: ``path`` is
    not a regular file, or a parent of it is not a directory (the same messages)."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError) as e:
        if isinstance(e, NotADirectoryError) or any(p.exists() and not p.is_dir() for p in path.parents):
            raise UsageError(f"{what} '{path}' cannot be written: a parent of it is not a directory", None) from None
        return path
    except OSError as e:
        raise _open_error(path, what, e, "written") from None
    if not stat.S_ISREG(mode):
        raise _not_regular(path, what, mode)
    return path


def open_for_writing(path: Path, what: str = "file", *, create_parents: bool = False) -> BinaryIO:
    """``path`` opened for writing from the start (truncated), as a binary file object.

    It must be a regular file or not exist yet: a directory, a FIFO (opening it would block until
    someone reads) or a device is a ``UsageError``, as is a parent that is not a directory."""
    try:
        if create_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise UsageError(f"{what} '{path}' cannot be written: a parent of it is not a directory", None) from None
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            raise UsageError(f"{what} '{path}' cannot be written: a parent of it is not a directory", None) from None
        raise _open_error(path, what, e, "written") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, what, st.st_mode)
        os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")
