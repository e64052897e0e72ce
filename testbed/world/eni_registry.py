"""The VPC's ENI registry: every ENI with its record and bound IPs, and the ENIs of each node."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from eni_core.ports import EniRecord, NotFound

__all__ = ["EniEntry", "EniRegistry"]


@dataclass(slots=True)
class EniEntry:
    """One ENI as the VPC knows it."""

    record: EniRecord
    ips: dict[IPv4Address, float] = field(default_factory=dict)  # IP -> when it was bound
    since: float = 0.0  # when it was created or last attached


class EniRegistry:
    """The ENIs by id (`enis`), and per node the ids of those it created or has attached, oldest first:
    every per-node question (device indexes, describe) reads a node's own ENIs, not the whole VPC."""

    def __init__(self, seed: int) -> None:
        self.enis: dict[str, EniEntry] = {}
        self._of_node: dict[str, dict[str, None]] = {}
        self._order: dict[str, int] = {}  # ENI id -> creation sequence
        self._ids = random.Random(f"vpc:{seed}")
        self._created = 0

    def get(self, eni_id: str) -> EniEntry:
        try:
            return self.enis[eni_id]
        except KeyError:
            raise NotFound(f"ENI {eni_id} does not exist") from None

    def create(self, node: str, subnet_id: str, primary: IPv4Address, now: float) -> EniRecord:
        """A new ENI of `node` in the subnet, detached, with a fresh id and MAC."""
        eni_id = f"eni-{self._ids.getrandbits(32):08x}"
        while eni_id in self.enis:
            eni_id = f"eni-{self._ids.getrandbits(32):08x}"
        self._created += 1
        n = self._created
        mac = f"52:54:{(n >> 24) & 0xFF:02x}:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"
        record = EniRecord(eni_id, subnet_id, mac, primary, node)
        self.enis[eni_id] = EniEntry(record, since=now)
        self._order[eni_id] = n
        self._file(node, eni_id)
        return record

    def remove(self, eni_id: str) -> EniEntry:
        eni = self.enis.pop(eni_id)
        for node in {eni.record.node, eni.record.attached_to} - {None}:
            self._of_node[node].pop(eni_id, None)
        del self._order[eni_id]
        return eni

    def of_node(self, node: str) -> list[EniEntry]:
        """The ENIs a node created or has attached, oldest first."""
        return [self.enis[i] for i in self._of_node.get(node, ())]

    def device_indexes(self, node: str) -> set[int | None]:
        """The device indexes of the ENIs attached to `node`."""
        return {e.record.device_index for e in self.of_node(node) if e.record.attached_to == node}

    def set_record(self, eni: EniEntry, record: EniRecord) -> None:
        """Change an ENI's record and keep the per-node index in step with its node and attachment."""
        old = eni.record
        eni.record = record
        for node in {old.node, old.attached_to} - {record.node, record.attached_to} - {None}:
            self._of_node[node].pop(record.id, None)
        for node in {record.node, record.attached_to} - {old.node, old.attached_to} - {None}:
            self._file(node, record.id)

    def _file(self, node: str, eni_id: str) -> None:
        ids = self._of_node.setdefault(node, {})
        newest = next(reversed(ids), None)
        ids[eni_id] = None
        if newest is not None and self._order[eni_id] < self._order[newest]:  # an older ENI moved here
            self._of_node[node] = dict.fromkeys(sorted(ids, key=self._order.__getitem__))
