"""Run records: what each run created, so that cleanup removes enilab's own leftovers and nothing else.

A run names every namespace it makes `<prefix>-<what>` (the prefix is `enl-[<xdist worker>-]<6 hex>`) and
lists the name in its record *before* it makes the namespace. The record is two files under
`/run/enilab/runs/`: `<prefix>.json`, written atomically when the run starts (and on `update`), holds the
owner's pid and that process's start time, so a reused pid is never taken for the owner; `<prefix>.names`
is a journal each reservation appends one line to (`-<name>` when a name is given back), so recording
16,000 namespaces costs 16,000 small appends, not 16,000 rewrites of a growing list. A process killed at
any point leaves both readable: an append is one write(2) that completes before the namespace is made, and
a torn last line (one without its newline) names nothing that was made. No fsync: namespaces do not
outlive a reboot, and a killed process's writes are in the page cache already.

`clean` deletes, of the namespaces a record lists, those that still exist, once the record's owner is dead
(with `force`, a live owner's too). A namespace no record lists is never touched, whatever its name: a
prefix match alone is not enough.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eni_core import netns
from eni_core.private import (
    NotPrivate,
    atomic_temps,
    is_private_dir,
    open_private,
    private_dir,
    read_private,
    write_atomic,
)
from testbed.errors import UserError

__all__ = ["PREFIX_RE", "RUN_DIR", "CleanReport", "RecordError", "Run", "clean", "owner_alive", "process_start",
           "runs_of", "state_dir", "this_process", "worker_prefix"]

RUN_DIR = Path(os.environ.get("ENILAB_RUN_DIR", "/run/enilab"))
CREATED: list[str] = []  # prefixes of the runs this process made (tests check what they leave behind)
PREFIX_RE = re.compile(r"enl-(?:[a-z0-9]{1,8}-)?[0-9a-f]{6}")
JOURNAL = ".names"  # beside `<prefix>.json`: the names a run reserved, one a line
ORPHAN_TEMP_S = 600.0  # a temp file of a record never written is its killed writer's after this long
FORMAT = 2  # a header whose names are in the journal; it has no `namespaces` list, so a cleaner that
# knows only whole records (format 1) skips it instead of taking it for a run that made nothing


class RecordError(UserError):
    """A run's record cannot be written (a full disk, say): said in one line; nothing it would list was made."""


def state_dir(*parts: str) -> Path:
    """A folder under the run directory, private (0700) like the run directory itself; made if missing."""
    private_dir(RUN_DIR)
    return private_dir(RUN_DIR.joinpath(*parts)) if parts else RUN_DIR


def process_start(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/PID/stat, clock ticks after boot); None if there is none,
    or if it has exited and waits to be reaped (a zombie: a killed daemon whose parent is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def this_process() -> dict[str, Any]:
    """This process as a record names its owner: pid and start time."""
    return {"pid": os.getpid(), "start": process_start(os.getpid())}


def owner_alive(record: Mapping[str, Any]) -> bool:
    """Whether the process a record names (pid and start time, see `this_process`) still runs."""
    pid = record.get("pid")
    return isinstance(pid, int) and pid > 0 and process_start(pid) is not None \
        and process_start(pid) == record.get("start")


class Run:
    """One run's prefix and record: the namespaces it made (or is about to make) and who owns it."""

    def __init__(self, prefix: str, namespaces: list[str] | None = None, **info: Any) -> None:
        if not PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"{prefix!r} is not a run prefix (enl-[worker-]<6 hex>)")
        self.prefix = prefix
        self.info = info
        self._names = dict.fromkeys(namespaces or [])  # ordered, and a lookup is O(1)
        self._lock = threading.Lock()
        self._journal: int | None = None  # the journal's fd, opened at the first reservation

    @classmethod
    def new(cls, **info: Any) -> Run:
        """A new run owned by this process, its record written before anything is made. Its prefix is one
        no record of this run directory holds and no namespace of the host carries (another run directory's
        runs share the host's namespaces): the record is claimed with O_EXCL before it is written."""
        names = netns.list_names()
        while True:
            prefix = f"{worker_prefix()}{secrets.token_hex(3)}"
            if any(name.startswith(f"{prefix}-") for name in names):
                continue
            run = cls(prefix, **this_process(), ppid=os.getppid(), **info)
            with run._recording():
                state_dir("runs")
                try:
                    os.close(os.open(run.record, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
                except FileExistsError:
                    continue
            break
        try:
            run.save()
        except BaseException:
            run.record.unlink(missing_ok=True)  # the claim: no run was made
            raise
        CREATED.append(prefix)
        return run

    @classmethod
    def load(cls, prefix: str) -> Run | None:
        """The run a record describes; None if there is no readable record of this version. Names in the
        record that are not under its prefix are dropped: a record cannot point clean at anyone else's."""
        if not PREFIX_RE.fullmatch(prefix):
            return None
        text = read_private(RUN_DIR / "runs" / f"{prefix}.json")  # this user's own file, not a link or FIFO
        try:
            record = json.loads(text) if text is not None else None
        except (ValueError, RecursionError):
            return None
        if not isinstance(record, dict) or record.get("prefix") != prefix:
            return None
        if record.get("format") == FORMAT:
            names: dict[str, None] = {}
        elif isinstance(record.get("namespaces"), list):  # a record written whole, before the journal
            names = dict.fromkeys(n for n in record.pop("namespaces") if isinstance(n, str))
        else:
            return None
        journal = read_private(RUN_DIR / "runs" / f"{prefix}{JOURNAL}") or ""
        for line in journal.split("\n")[:-1]:  # the part after the last newline is a torn append: nothing
            if line.startswith("-"):
                names.pop(line[1:], None)
            else:
                names[line] = None
        record.pop("prefix")
        record.pop("format", None)
        return cls(prefix, [n for n in names if n.startswith(prefix + "-")], **record)

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def reserve(self, what: str) -> str:
        """Record the namespace `<prefix>-<what>` before someone makes it (`ip netns add`, say); its name."""
        name = self.name(what)
        with self._lock:
            if name not in self._names:
                self._append(name)
                self._names[name] = None
        return name

    def netns(self, what: str) -> str:
        """Make the namespace `<prefix>-<what>`, recorded first; its name. If it cannot be made (one of that
        name exists already, say), the record forgets it again: it is not this run's."""
        name = self.reserve(what)
        try:
            netns.create(name)
        except BaseException:
            with self._lock:
                self._append(f"-{name}")
                del self._names[name]
            raise
        return name

    def update(self, **info: Any) -> None:
        """Add facts to the record (the containers backend's engine and containers, say) and save it."""
        with self._lock:
            self.info.update(info)
            self._save()

    @property
    def record(self) -> Path:
        return RUN_DIR / "runs" / f"{self.prefix}.json"

    @property
    def journal(self) -> Path:
        return RUN_DIR / "runs" / f"{self.prefix}{JOURNAL}"

    def recorded(self) -> list[str]:
        """Every name the record lists, made or about to be."""
        with self._lock:
            return list(self._names)

    def save(self) -> None:
        with self._lock:
            self._save()

    def _save(self) -> None:
        with self._recording():
            state_dir("runs")
            write_atomic(self.record, json.dumps({"prefix": self.prefix, "format": FORMAT, **self.info}))

    def _append(self, line: str) -> None:
        """One journal line, in one write(2) (the caller holds the lock). The header is written first if
        this run has none yet (a `Run` made by hand, not by `new`)."""
        with self._recording():
            if self._journal is None:
                if not self.record.exists():
                    self._save()
                self._journal = open_private(self.journal)
            os.write(self._journal, f"{line}\n".encode())

    @contextlib.contextmanager
    def _recording(self) -> Iterator[None]:
        """Writing the run's record: an OSError (a full disk, say) becomes a RecordError that says so in one
        line; a folder that is not this user's stays NotPrivate."""
        try:
            yield
        except NotPrivate:
            raise
        except OSError as err:
            raise self._unwritable(err) from None

    def _unwritable(self, err: OSError) -> RecordError:
        from eni_core import userns

        where = f"{RUN_DIR / 'runs'}" + (" (`run/runs` of your private folder, $XDG_RUNTIME_DIR/enilab else "
                                         "~/.cache/enilab)" if userns.inside() else "")
        return RecordError(f"cannot write the record of run {self.prefix} in {where}: {err.strerror or err}; "
                           "free some space there and try again")

    def unregister(self) -> None:
        with self._lock:
            if self._journal is not None:
                os.close(self._journal)
                self._journal = None
        self.journal.unlink(missing_ok=True)  # the journal first: `clean` finds a run by its header
        self.record.unlink(missing_ok=True)
        for temp in atomic_temps(self.record):  # a header's rewrite its killed owner never finished
            temp.unlink(missing_ok=True)

    def namespaces(self) -> list[str]:
        """The recorded namespaces that exist now."""
        with self._lock:
            names = list(self._names)
        return [n for n in names if netns.exists(n)]

    def remove(self) -> list[str]:
        """Delete the recorded namespaces that still exist (their links and routes go with them), then the
        record; the names deleted. A run of the containers backend has its containers and engine service
        purged first (they hold the pods' namespaces), and its state folder goes whether or not the record
        got to name its engine (a run killed as its podman service started)."""
        from testbed.world.engine import own_state, purge, purge_state

        if self.info.get("engine"):
            purge({"prefix": self.prefix, **self.info}, self.prefix)
        purge_state(own_state(self.prefix))
        gone = netns.delete_many(self.namespaces())
        self.unregister()
        return gone


def worker_prefix() -> str:
    """How the prefix of every run this process makes begins: `enl-`, and under pytest-xdist the worker's
    id (`enl-gw0-`), so that a test can tell its worker's runs from those of tests beside it."""
    worker = re.sub(r"[^a-z0-9]", "", os.environ.get("PYTEST_XDIST_WORKER", "").lower())[:8]
    return f"enl-{worker}-" if worker else "enl-"


def runs_of(pid: int) -> set[str]:
    """Prefixes of the runs a process made, itself or through its children (live or dead)."""
    out = set(CREATED) if pid == os.getpid() else set()
    for f in (RUN_DIR / "runs").glob("enl-*.json"):
        try:
            record = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and pid in (record.get("pid"), record.get("ppid")):
            out.add(record["prefix"])
    return out


@dataclass
class CleanReport:
    removed: dict[str, list[str]] = field(default_factory=dict)  # run prefix -> the namespaces deleted
    skipped: list[str] = field(default_factory=list)  # records that could not be read: left as they are


def _orphan_claim(path: Path) -> bool:
    """An empty record of a run prefix with no journal, older than `ORPHAN_TEMP_S`, this user's own file."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return (PREFIX_RE.fullmatch(path.stem) is not None and stat.S_ISREG(info.st_mode) and info.st_size == 0
            and info.st_uid == os.geteuid() and time.time() - info.st_mtime > ORPHAN_TEMP_S
            and not os.path.lexists(path.with_name(f"{path.stem}{JOURNAL}")))


def clean(force: bool = False) -> CleanReport:
    """Delete the recorded namespaces of runs whose owner is dead (with `force`, of live runs too), and
    their records. Nothing a record does not list is touched."""
    report = CleanReport()
    folder = RUN_DIR / "runs"
    for mine in (RUN_DIR, folder):  # records in a folder another user can write are not ours to act on
        if not os.path.lexists(mine):
            return report
        if not is_private_dir(mine):
            raise NotPrivate(f"{mine} is not a folder of this user (a symlink, a file, or another user's), so "
                             "its records are not trusted; remove it, or point ENILAB_RUN_DIR elsewhere")
    for path in sorted(folder.glob("*.json")):
        run = Run.load(path.stem)
        if run is None and _orphan_claim(path):  # claimed by `Run.new`, whose maker was killed before writing it
            path.unlink(missing_ok=True)
        elif run is None:
            report.skipped.append(path.name)
        elif force or not owner_alive(run.info):
            report.removed[run.prefix] = run.remove()
    for temp in folder.glob(".enl-*.json.*"):  # a first header its writer was killed writing: no record at all
        prefix = temp.name[1:].partition(".json.")[0]
        with contextlib.suppress(OSError):
            if PREFIX_RE.fullmatch(prefix) and not (folder / f"{prefix}.json").exists() \
                    and time.time() - temp.lstat().st_mtime > ORPHAN_TEMP_S:
                temp.unlink()
    return report
