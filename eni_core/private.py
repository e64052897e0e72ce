"""Private state on disk: folders 0700, files and sockets 0600 whatever the umask, files replaced atomically.

Everything enilab keeps between processes (run records, a cluster's lock, sockets and log, datastore
checkpoints) lets its owner in and nobody else: a socket another user can open is a way to allocate IPs
or tear a cluster down. Modes are set with chmod/fchmod after creation, because a umask can only take
bits away and a caller's umask may be 000.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "NAME_MAX", "NotPrivate", "atomic_temps", "is_private_dir", "open_private",
           "private_dir", "read_private", "write_atomic"]

DIR_MODE = 0o700
FILE_MODE = 0o600
NAME_MAX = 255  # bytes in one name of a path, on Linux file systems: checked before anything is made


class NotPrivate(PermissionError):
    """A state path that is a symlink, not a folder, or another user's: refused, never used."""


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Make `path` a folder only this user can use (0700), with any missing parents (0700 too); return it.

    Existing parents are left as they are; `path` itself is set to 0700 even if it existed, and refused
    if it is a symlink, not a folder, or owned by another user.
    """
    path = Path(path)
    missing = []
    walk = path
    while not os.path.lexists(walk) and walk != walk.parent:
        missing.append(walk)
        walk = walk.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:  # made at the same moment by another process: checked below like any other
            continue
        os.chmod(folder, DIR_MODE)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise NotPrivate(f"{path} is not a folder of this user (a symlink, a file, or another user's); "
                         "remove it, or point ENILAB_RUN_DIR elsewhere")
    if stat.S_IMODE(info.st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def is_private_dir(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder of this user, itself no symlink (what `private_dir` makes)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


def read_private(path: str | os.PathLike[str], limit: int = 64 << 20) -> str | None:
    """The text of a file this user owns, as state is kept; None if it is missing, a symlink, not a regular
    file (a FIFO would block the reader), another user's, or over `limit` bytes. What another user could
    put in a state folder is never taken for enilab's own record."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode(errors="replace") if len(data) <= limit else None


def open_private(path: str | os.PathLike[str], flags: int = os.O_WRONLY | os.O_APPEND | os.O_CREAT) -> int:
    """Open (by default: create or append to) a file as 0600, never through a symlink; the descriptor."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def atomic_temps(path: str | os.PathLike[str]) -> list[Path]:
    """The temp files `write_atomic` made beside `path` and a killed writer left: its own to remove once no
    writer of `path` is alive."""
    path = Path(path)
    return [p for p in path.parent.glob(f".{path.name}.*") if p.is_file() and not p.is_symlink()]


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Replace `path` with `data` atomically (temp file beside it, fsync, rename, fsync the folder), 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
