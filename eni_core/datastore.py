"""The ipamd's datastore: a node's ENIs, bound IPs and pod allocations, checkpointed atomically.

Like the AWS VPC CNI's datastore, every change is written (temp file, fsync, rename) before the ipamd
answers, and rolled back in memory when the write fails, so memory and disk never disagree.

It is the one truth of a node's pods, whoever wired them: a pod the controller created is filed under its
pod name; an attachment a container runtime made through `enilab-cni` under `attachment_key(network,
container id, ifname)`, the CNI spec's key (the AWS CNI's IPAMKey), with its `Attachment` record beside it.
Format 1 checkpoints (no attachment records) still load: their IPs are kept under their old keys.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

from eni_core.model import Eni, Tally
from eni_core.private import private_dir, write_atomic

__all__ = ["Allocation", "Attachment", "CheckpointError", "Datastore", "FileCheckpoint", "MemoryCheckpoint",
           "attachment_key"]

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before attachment records
NO_LEGACY: frozenset[str] = frozenset()  # the legacy keys of a datastore that never loaded a format 1 checkpoint


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    """The datastore key of a runtime's attachment. The CNI spec limits network names and container ids
    to letters, digits, `_.-` and interface names to no `/`, so the key is unambiguous, and no pod name
    (at most one `/`) can take it."""
    return f"cni/{network}/{container_id}/{ifname}"


class CheckpointError(ValueError):
    """A checkpoint whose content is not a datastore this version can read."""


@dataclass(frozen=True)
class Attachment:
    """What a container runtime attached through `enilab-cni`: the network (netconf `name`), the
    container, its interface and its namespace (CNI_NETNS)."""

    network: str
    container_id: str
    ifname: str
    netns: str = ""

    @property
    def key(self) -> str:
        return attachment_key(self.network, self.container_id, self.ifname)

    def to_dict(self) -> dict[str, str]:
        return {"network": self.network, "container_id": self.container_id, "ifname": self.ifname,
                "netns": self.netns}

    @classmethod
    def from_dict(cls, d: dict) -> Attachment:
        return cls(str(d["network"]), str(d["container_id"]), str(d["ifname"]), str(d.get("netns", "")))


@dataclass(frozen=True, slots=True)
class Allocation:
    pod: str
    ip: IPv4Address
    eni_id: str


class Checkpoint(Protocol):
    """Where a datastore is kept; `persistent` False: nowhere (commits cost nothing and restore nothing)."""

    persistent: bool

    def save(self, data: dict) -> None: ...

    def load(self) -> dict | None: ...


class MemoryCheckpoint:
    """No persistence (the simulator's many nodes live and die with the process)."""

    persistent = False

    def save(self, data: dict) -> None:
        return None

    def load(self) -> dict | None:
        return None


NO_CHECKPOINT = MemoryCheckpoint()  # stateless: every datastore without persistence shares it


class FileCheckpoint:
    """A JSON file replaced atomically (temp file beside it, fsync, rename, fsync the folder), in a private
    folder (0700) as a private file (0600)."""

    persistent = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def save(self, data: dict) -> None:
        private_dir(self.path.parent)
        write_atomic(self.path, json.dumps(data, separators=(",", ":")))

    def load(self) -> dict | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        data = json.loads(text)
        if data.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"{self.path}: checkpoint format {data.get('version')} is not one of "
                             f"{', '.join(map(str, READABLE_VERSIONS))}")
        return data


class Datastore:
    """A node's ENIs (oldest first), which pod holds which IP, and the pool's timers."""

    __slots__ = ("_attachments", "_committed", "checkpoint", "enis", "legacy", "next_seq", "node", "pods",
                 "release_due", "tally")

    def __init__(self, node: str, checkpoint: Checkpoint | None = None) -> None:
        self.node = node
        self.checkpoint = checkpoint or NO_CHECKPOINT
        self.enis: dict[str, Eni] = {}  # add and remove them with `add_eni` and `remove_eni`: they keep `tally`
        self.tally = Tally()  # the IPs of `enis`, counted as they change
        self.pods: dict[str, Allocation] = {}
        self._attachments: dict[str, Attachment] | None = None  # see `attachments`
        # keys of a format 1 checkpoint (container ids, runtimes' or the controller's); a datastore that never
        # loaded one shares one empty set, which every pod's release reads instead of a set of its own
        self.legacy: set[str] | frozenset[str] = NO_LEGACY
        self.release_due: float | None = None
        self.next_seq = 0
        self._committed = self.to_dict()  # what the disk holds: nothing yet, which is this empty state

    @property
    def attachments(self) -> dict[str, Attachment]:
        """Key -> a runtime's attachment (its pod in `pods`). The table is made the first time it is asked
        for: a node whose pods no runtime wired has none, and releasing its pods reads none."""
        if self._attachments is None:
            self._attachments = {}
        return self._attachments

    @attachments.setter
    def attachments(self, table: dict[str, Attachment]) -> None:
        self._attachments = table

    # -- mutations (callers commit) -----------------------------------------------------------------
    def add_eni(self, eni: Eni) -> None:
        if eni.id in self.enis:
            raise ValueError(f"{eni.id} is in the datastore already")
        self.enis[eni.id] = eni
        eni.tally = self.tally
        self.tally.add(eni, 1)
        self.next_seq = max(self.next_seq, eni.seq + 1)

    def remove_eni(self, eni_id: str) -> Eni:
        eni = self.enis.pop(eni_id)
        self.tally.add(eni, -1)
        eni.tally = None
        return eni

    def allocate(self, pod: str, eni: Eni, ip: IPv4Address) -> Allocation:
        eni.assign(ip, pod)
        alloc = Allocation(pod, ip, eni.id)
        self.pods[pod] = alloc
        return alloc

    def free(self, pod: str) -> Allocation | None:
        alloc = self.pods.pop(pod, None)
        if self._attachments:
            self._attachments.pop(pod, None)
        if self.legacy:
            self.legacy.discard(pod)
        if alloc is not None:
            self.enis[alloc.eni_id].unassign(alloc.ip)
        return alloc

    # -- persistence ---------------------------------------------------------------------------------
    def commit(self) -> None:
        """Write the checkpoint; on failure restore the last committed state (the empty one if nothing
        was ever written or restored) and re-raise, so memory never holds what the disk does not."""
        if not self.checkpoint.persistent:
            return
        data = self.to_dict()
        try:
            self.checkpoint.save(data)
        except BaseException:
            self._load_dict(self._committed)
            raise
        self._committed = data

    def restore(self) -> bool:
        """Load the checkpoint, if there is one; CheckpointError if what it holds is not a datastore."""
        try:
            data = self.checkpoint.load()
            if data is None:
                return False
            self._load_dict(data)
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # not JSON, or JSON of another shape
            raise CheckpointError(f"{type(err).__name__}: {err}") from err
        self._committed = data
        return True

    def to_dict(self) -> dict:
        return {
            "version": FORMAT_VERSION,
            "node": self.node,
            "release_due": self.release_due,
            "next_seq": self.next_seq,
            "enis": [
                {"id": e.id, "subnet": e.subnet_id, "mac": e.mac, "primary_ip": str(e.primary_ip),
                 "device_index": e.device_index, "seq": e.seq,
                 "ips": [[str(ip), pod] for ip, pod in e.ips.items()]}
                for e in self.enis.values()
            ],
            "attachments": {key: a.to_dict() for key, a in (self._attachments or {}).items()},
            "legacy": sorted(self.legacy & self.pods.keys()),
        }

    def _load_dict(self, data: dict) -> None:
        for eni in self.enis.values():
            eni.tally = None  # the ENIs read back below are new objects with a new tally
        self.enis = {}
        self.tally = Tally()
        self.pods = {}
        self.attachments = {key: Attachment.from_dict(a) for key, a in data.get("attachments", {}).items()}
        self.release_due = data["release_due"]
        self.next_seq = data["next_seq"]
        for d in data["enis"]:
            eni = Eni(d["id"], d["subnet"], d["mac"], IPv4Address(d["primary_ip"]), d["device_index"], d["seq"])
            for ip_s, pod in d["ips"]:
                ip = IPv4Address(ip_s)
                eni.bind(ip)
                if pod is not None:
                    self.allocate(pod, eni, ip)
            self.add_eni(eni)
        self.attachments = {key: a for key, a in self.attachments.items() if key in self.pods}
        legacy = set(self.pods) if data["version"] == 1 else set(data.get("legacy", [])) & self.pods.keys()
        self.legacy = legacy or NO_LEGACY
