"""Files a command writes its results to (`--png`, `--graphml`): checked before any work, so that a name
that cannot be written costs nothing and leaves nothing half written."""
from __future__ import annotations

import os
from pathlib import Path

from eni_core.private import NAME_MAX
from testbed.errors import UsageError

__all__ = ["DRAWINGS", "check_output_file"]

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
