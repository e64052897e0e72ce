"""Which user namespace a rootless command runs in: a new one of its own, or its running cluster's.

Without root (eni_core/userns.py), a command that makes namespaces enters a new user namespace; a command
that talks to a running cluster joins the namespaces of that cluster's controller, found through the
owner record in the user's private folder (its pid and start time, as `enilab up` wrote them).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eni_core import userns
from eni_core.names import InvalidName, dns_label
from testbed.world import runs

__all__ = ["COMMANDS", "JOINING", "go", "live_controller"]

JOINING = {"status", "pods", "exec", "trace", "topology", "audit", "claims", "down", "cni"}
COMMANDS = {"run", "demo", "clean", "bench", "up", "chaos"} | JOINING


def _clusters() -> Path:
    """The registry of clusters as this process sees it before entering (the private folder's `run/`)."""
    return Path(os.environ.get("ENILAB_CLUSTERS_DIR") or userns.state_base() / "run" / "clusters")


def live_controller(name: str | None) -> dict[str, Any] | None:
    """The owner record of the named cluster's live controller, or of the only live one without a name;
    None if there is no such single controller (the command then says what is wrong, as it would as root)."""
    folder = _clusters()
    try:
        names = [dns_label(name)] if name is not None else sorted(p.name for p in folder.iterdir())
    except (InvalidName, OSError):
        return None
    live = []
    for each in names:
        try:
            record = json.loads((folder / each / "owner.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and runs.owner_alive(record):
            live.append(record)
    return live[0] if len(live) == 1 else None


def go(command: str, name: str | None) -> None:
    """Put this process where `command` runs rootless: its cluster's namespaces, else new ones of its own."""
    owner = live_controller(name) if command in JOINING else None
    if owner is not None:
        userns.join(owner["pid"], lambda: runs.owner_alive(owner))
    elif command in COMMANDS:
        userns.enter()
