"""Run names and the registry of live runs, so that cleanup only ever removes enilab's own leftovers.

Every namespace a run makes is named `<prefix>-<what>`, where the prefix is `enl-[<xdist worker>-]<6 hex>`.
The run registers its prefix with its pid and the pid's start time; `clean` removes the namespaces of
runs whose owner is gone (and, with force, of every enilab run) and never a name outside that pattern.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from eni_core import netns

__all__ = ["PREFIX_RE", "Run", "clean", "leftover_prefixes", "live_runs", "runs_of"]

RUN_DIR = Path(os.environ.get("ENILAB_RUN_DIR", "/run/enilab"))
CREATED: list[str] = []  # prefixes of the runs this process made (tests check what they leave behind)
PREFIX_RE = re.compile(r"^(enl-(?:[a-z0-9]{1,8}-)?[0-9a-f]{6})-[A-Za-z0-9_.-]+$")


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class Run:
    prefix: str

    @classmethod
    def new(cls) -> Run:
        worker = re.sub(r"[^a-z0-9]", "", os.environ.get("PYTEST_XDIST_WORKER", "").lower())[:8]
        prefix = f"enl-{worker + '-' if worker else ''}{secrets.token_hex(3)}"
        run = cls(prefix)
        run.register()
        CREATED.append(prefix)
        return run

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    @property
    def record(self) -> Path:
        return RUN_DIR / "runs" / f"{self.prefix}.json"

    def register(self, **extra) -> None:
        self.record.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"prefix": self.prefix, "pid": os.getpid(), "ppid": os.getppid(),
                                   "start": _start_time(os.getpid()), **extra}))
        os.replace(tmp, self.record)

    def unregister(self) -> None:
        self.record.unlink(missing_ok=True)

    def namespaces(self) -> list[str]:
        return [n for n in netns.list_names() if n.startswith(self.prefix + "-")]


def _alive(record: dict) -> bool:
    pid = record.get("pid")
    return isinstance(pid, int) and _start_time(pid) is not None and _start_time(pid) == record.get("start")


def runs_of(pid: int) -> set[str]:
    """Prefixes of the runs a process made, itself or through its children (live or dead)."""
    out = {p for p in CREATED} if pid == os.getpid() else set()
    for f in (RUN_DIR / "runs").glob("enl-*.json"):
        try:
            record = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if pid in (record.get("pid"), record.get("ppid")):
            out.add(record["prefix"])
    return out


def live_runs() -> dict[str, dict]:
    out = {}
    for f in (RUN_DIR / "runs").glob("enl-*.json"):
        try:
            record = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if _alive(record):
            out[record["prefix"]] = record
    return out


def leftover_prefixes(force: bool = False) -> set[str]:
    """Prefixes of enilab namespaces whose run is gone (all of them with `force`)."""
    live = set() if force else set(live_runs())
    found = set()
    for name in netns.list_names():
        m = PREFIX_RE.match(name)
        if m and m.group(1) not in live:
            found.add(m.group(1))
    for f in (RUN_DIR / "runs").glob("enl-*.json"):
        if f.stem not in live:
            found.add(f.stem)
    return found


def clean(force: bool = False) -> dict[str, list[str]]:
    """Remove the namespaces (and with them their links and routes) of dead enilab runs."""
    removed: dict[str, list[str]] = {}
    for prefix in sorted(leftover_prefixes(force)):
        run = Run(prefix)
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(run.record.read_text())
            if record.get("engine"):  # the containers backend: its containers and engine service first
                from testbed.world.engine import purge

                purge(record, prefix)
        names = run.namespaces()
        for name in names:
            netns.delete(name)
        run.unregister()
        removed[prefix] = names
    return removed
