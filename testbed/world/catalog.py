"""The built-in topologies and scenarios, shipped inside the package and addressable by name.

The repository keeps them in its top-level `fixtures/` folder; `testbed/fixtures` links to it, so a
source checkout, an editable install and a wheel all find the same files. Wherever enilab accepts a
scenario or topology file it also accepts one of these names: `enilab simulate grow-and-shrink`,
`enilab up default`, `enilab_cluster("default")`. A path that exists always wins over a name.

>>> "default" in builtin_names()["topologies"]
True
>>> resolve("grow-and-shrink").name
'grow-and-shrink.yaml'
"""
from __future__ import annotations

import errno
import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["KINDS", "builtin", "builtin_names", "resolve"]

KINDS = ("topologies", "scenarios")


def _folder(kind: str) -> Traversable:
    return files("testbed") / "fixtures" / kind


def builtin_names() -> dict[str, list[str]]:
    """The built-in names by kind, sorted: `{"topologies": ["default", ...], "scenarios": [...]}`."""
    return {kind: sorted(f.name.removesuffix(".yaml") for f in _folder(kind).iterdir() if f.name.endswith(".yaml"))
            for kind in KINDS}


def builtin(name: str) -> Traversable | None:
    """The file of the built-in topology or scenario `name`, or None. A name is looked up among the
    shipped files, never joined to a path, so no string a user types can reach another file."""
    for kind, names in builtin_names().items():
        if name in names:
            return _folder(kind) / f"{name}.yaml"
    return None


def _looks_like_a_name(path: Path) -> bool:
    return len(path.parts) == 1 and not path.suffix


def resolve(ref: str | Path) -> Path | Traversable:
    """What `ref` names: an existing path as it is, else a built-in of that name.

    A bare word that is neither (no folder, no suffix) raises FileNotFoundError whose message lists the
    built-in names; anything else is returned as a path for the caller's own "cannot read it" error.
    """
    path = Path(ref)
    if path.exists() or not _looks_like_a_name(path):
        return path
    found = builtin(str(ref))
    if found is not None:
        return found
    if os.path.lexists(path):  # a broken link (a loop, say): its own error says what is wrong with it
        return path
    listing = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in builtin_names().items())
    raise FileNotFoundError(errno.ENOENT, f"no such file, nor a built-in name; built-in {listing}")
