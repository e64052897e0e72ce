"""Files a command writes its results to (`--png`, `--graphml`): checked before any work, so that a name
that cannot be written costs nothing, and written whole or not at all (`replacing`), so that Ctrl-C or a
failure midway leaves nothing half written."""
from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from eni_core.private import NAME_MAX
from testbed.errors import UsageError

__all__ = ["DRAWINGS", "check_output_file", "replacing"]

DRAWINGS = (".png", ".svg")  # what the topology and the tune chart draw to, by the file's suffix


def check_output_file(option: str, path: str, suffixes: tuple[str, ...] = ()) -> Path:
    """The file `option` names, or UsageError saying what is wrong with it: no name, a suffix other than
    `suffixes` (when given), a folder that does not exist or cannot be written, a name too long, or
    something there already that is not a regular file (a folder, a device).

    >>> check_output_file("--png", "t.gif", (".png", ".svg"))
    Traceback (most recent call last):
    testbed.errors.UsageError: --png t.gif: name a .png or .svg file
    """
    p = Path(path)
    if not path or p.name in ("", ".", ".."):
        raise UsageError(f"{option} {path!r}: name a file")
    if suffixes and p.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: name a {' or '.join(suffixes)} file")
    if len(os.fsencode(p.name)) > NAME_MAX:
        raise UsageError(f"{option}: the file name is {len(os.fsencode(p.name))} bytes; the limit is {NAME_MAX}")
    folder = Path(os.path.abspath(p)).parent
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if p.is_dir():
        raise UsageError(f"{option} {path}: a folder; name a file in it")
    if p.exists() and not p.is_file():
        raise UsageError(f"{option} {path}: not a regular file; name a file to write")
    if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"{option} {path}: cannot be written here (permissions)")
    return p


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A new file beside `path`, with its suffix (a writer that picks the format by it still does), to write
    the result in; when the block ends it replaces `path` in one rename. If the block fails or is
    interrupted, the new file is removed and `path` is as it was: never half written, and of two writers
    at once one whole result wins. A link is written through (its target is replaced, as a plain write
    would), and a file that exists keeps its mode."""
    p = Path(os.path.realpath(path))
    temp = p.parent / f".enilab-{secrets.token_hex(4)}{p.suffix}"  # short: `path`'s name may be at NAME_MAX
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as to a new `path`
    try:
        with contextlib.suppress(FileNotFoundError):
            os.fchmod(fd, stat.S_IMODE(os.stat(p).st_mode))
    finally:
        os.close(fd)
    try:
        yield temp
        os.replace(temp, p)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
