"""The simulated VPC control plane: subnets, ENIs, secondary IPs, quotas, latency and seeded faults.

It implements `eni_core.ports.VpcApi` and is the truth of which IP is bound to which ENI. Quotas (ENIs
per node, IPs per ENI, subnet addresses) are enforced here, by the API, so the allocator cannot cheat.
"""
from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from eni_core.model import Subnet
from eni_core.ports import (
    EniRecord,
    InsufficientAddresses,
    InvalidParameter,
    NotFound,
    QuotaExceeded,
    RequestTimeout,
    Throttled,
    TransientError,
    VpcError,
)

__all__ = ["AddressBook", "FaultConfig", "SimVpc", "usable_range"]

EventSink = Callable[[dict], None]


def usable_range(subnet: Subnet) -> tuple[IPv4Address, IPv4Address]:
    """The first and last address anyone may bind: the network address and the gateway(s) (`reserved`
    minus one) are reserved at the start, the broadcast address at the end."""
    net = int(subnet.cidr.network_address)
    return IPv4Address(net + subnet.reserved - 1), IPv4Address(net + subnet.size - 2)


class AddressBook:
    """Free addresses of one subnet; hands out the lowest free address, or a chosen one."""

    def __init__(self, subnet: Subnet) -> None:
        self.subnet = subnet
        self._first, self._last = (int(ip) for ip in usable_range(subnet))
        self._next = self._first
        self._released: list[int] = []
        self.used: set[int] = set()

    @property
    def available(self) -> int:
        return self.subnet.size - self.subnet.reserved - len(self.used)

    def contains(self, ip: IPv4Address) -> bool:
        return self._first <= int(ip) <= self._last

    def take(self) -> IPv4Address:
        while self._released:
            n = heapq.heappop(self._released)
            if n not in self.used:
                self.used.add(n)
                return IPv4Address(n)
        while self._next <= self._last:
            n = self._next
            self._next += 1
            if n not in self.used:
                self.used.add(n)
                return IPv4Address(n)
        raise InsufficientAddresses(f"subnet {self.subnet.id} ({self.subnet.cidr}) has no free address")

    def take_exactly(self, ip: IPv4Address) -> None:
        n = int(ip)
        if not self.contains(ip):
            raise InvalidParameter(f"{ip} is not a usable address of {self.subnet.id} ({self.subnet.cidr})")
        if n in self.used:
            raise InsufficientAddresses(f"{ip} in {self.subnet.id} is already in use")
        self.used.add(n)

    def give_back(self, ip: IPv4Address) -> None:
        n = int(ip)
        self.used.discard(n)
        if n < self._next:
            heapq.heappush(self._released, n)


@dataclass(frozen=True)
class FaultConfig:
    """Seeded fault injection, as rates per API call (0..1) and a latency range in seconds."""

    throttle: float = 0.0
    transient: float = 0.0
    insufficient_addresses: float = 0.0
    timeout: float = 0.0  # the call happens, but the caller is told it timed out (ambiguous)
    consistency_delay: float = 0.0  # seconds before a new ENI or IP shows in DescribeNetworkInterfaces
    latency: tuple[float, float] = (0.0, 0.0)
    seed: int | None = None


@dataclass
class _Instance:
    max_enis: int
    ips_per_eni: int


@dataclass
class _Eni:
    record: EniRecord
    ips: dict[IPv4Address, float] = field(default_factory=dict)  # IP -> when it was bound
    since: float = 0.0  # when it was created or last attached


_MUTATING_FAULTS = {"CreateNetworkInterface", "AttachNetworkInterface", "AssignPrivateIpAddresses",
                    "CreateReserveIpAddresses"}
_RELEASING = {"UnassignPrivateIpAddresses", "DetachNetworkInterface", "DeleteNetworkInterface"}


class SimVpc:
    """A seeded, in-memory VPC. `sleep` is called with each call's injected latency (None: not at all)."""

    def __init__(
        self,
        subnets: Sequence[Subnet],
        *,
        seed: int = 0,
        faults: FaultConfig | None = None,
        now: Callable[[], float] = time.monotonic,
        events: EventSink | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.subnets = {s.id: s for s in subnets}
        self.books = {s.id: AddressBook(s) for s in subnets}
        self.instances: dict[str, _Instance] = {}
        self.enis: dict[str, _Eni] = {}
        # node -> ids of the ENIs it created or has attached, in creation order: every per-node question
        # (device indexes, describe) reads this instead of scanning the whole VPC.
        self._enis_of: dict[str, dict[str, None]] = {}
        self._order: dict[str, int] = {}  # ENI id -> creation sequence
        self.owner: dict[IPv4Address, str] = {}  # secondary or primary IP -> ENI id (the SDN's truth)
        self.retained: set[IPv4Address] = set()  # kept for a claim (static IP): in use, on no ENI
        self.hosts: dict[str, IPv4Address] = {}
        self.faults = faults or FaultConfig()
        self.calls = 0
        self._rng = random.Random(f"vpc:{seed}")
        self._fault_rng = random.Random(f"faults:{seed if self.faults.seed is None else self.faults.seed}")
        self._now = now
        self._events = events
        self._sleep = sleep
        self._mac_seq = 0
        self.listeners: list[Callable[[str, str, tuple[IPv4Address, ...]], None]] = []

    # -- set-up, used by the testbed (not part of VpcApi) -------------------------------------------
    def add_instance(self, node: str, max_enis: int, ips_per_eni: int) -> None:
        self.instances[node] = _Instance(max_enis, ips_per_eni)

    def set_instance_limits(self, node: str, max_enis: int, ips_per_eni: int) -> None:
        self.instances[node] = _Instance(max_enis, ips_per_eni)

    def remove_instance(self, node: str) -> None:
        """Terminate an instance: its attached ENIs are detached (the ipamd deletes them first)."""
        for eni in self._node_enis(node):
            if eni.record.attached_to == node:
                self._set_record(eni, replace(eni.record, attached_to=None, device_index=None))
        self.instances.pop(node, None)

    def add_host(self, name: str, subnet_id: str, ip: IPv4Address) -> None:
        self.books[subnet_id].take_exactly(ip)
        self.hosts[name] = ip

    def available(self, subnet_id: str) -> int:
        return self.books[subnet_id].available

    def subnet_of(self, ip: IPv4Address) -> str | None:
        for s in self.subnets.values():
            if ip in s.cidr:
                return s.id
        return None

    # -- the API ------------------------------------------------------------------------------------
    def _call(self, call: str, node: str | None, eni: str | None, fn: Callable[[], object], **args) -> object:
        self.calls += 1
        f = self.faults
        latency = self._fault_rng.uniform(*f.latency) if f.latency[1] > 0 else 0.0
        if latency and self._sleep is not None:
            self._sleep(latency)
        event = {"t": self._now(), "kind": "api", "call": call, "node": node, "eni": eni, **args}
        if latency:
            event["latency_ms"] = round(latency * 1000, 3)
        try:
            roll = (self._fault_rng.random() if (f.throttle or f.transient or f.insufficient_addresses or f.timeout)
                    else 1.0)
            if roll < f.throttle:
                raise Throttled(f"{call}: request rate limit exceeded, retry later")
            if roll < f.throttle + f.transient:
                raise TransientError(f"{call}: internal error, retry later")
            if call in _MUTATING_FAULTS and roll < f.throttle + f.transient + f.insufficient_addresses:
                raise InsufficientAddresses(f"{call}: the subnet has insufficient addresses (injected)")
            result = fn()
            if f.timeout and call in _MUTATING_FAULTS | _RELEASING and roll >= 1.0 - f.timeout:
                timeout = RequestTimeout(f"{call}: no answer in time (the request may have been carried out)")
                timeout.outcome = result
                raise timeout
        except VpcError as err:
            event["result"] = type(err).__name__
            event["error"] = err.message
            self._emit(event)
            raise
        event["result"] = "ok"
        if isinstance(result, list) and result and isinstance(result[0], IPv4Address):
            event["ips"] = [str(ip) for ip in result]
        elif isinstance(result, EniRecord):
            event["eni"] = result.id
        self._emit(event)
        return result

    def _emit(self, event: dict) -> None:
        if self._events is not None:
            self._events(event)

    def _get(self, eni_id: str) -> _Eni:
        try:
            return self.enis[eni_id]
        except KeyError:
            raise NotFound(f"ENI {eni_id} does not exist") from None

    def _node_enis(self, node: str) -> list[_Eni]:
        """The ENIs a node created or has attached, oldest first."""
        return [self.enis[i] for i in self._enis_of.get(node, ())]

    def _set_record(self, eni: _Eni, record: EniRecord) -> None:
        """Change an ENI's record and keep the per-node index in step with its node and attachment."""
        old = eni.record
        eni.record = record
        for node in {old.node, old.attached_to} - {record.node, record.attached_to} - {None}:
            self._enis_of[node].pop(record.id, None)
        for node in {record.node, record.attached_to} - {old.node, old.attached_to} - {None}:
            self._index(node, record.id)

    def _index(self, node: str, eni_id: str) -> None:
        ids = self._enis_of.setdefault(node, {})
        newest = next(reversed(ids), None)
        ids[eni_id] = None
        if newest is not None and self._order[eni_id] < self._order[newest]:  # an older ENI moved here
            self._enis_of[node] = dict.fromkeys(sorted(ids, key=self._order.__getitem__))

    def _instance(self, node: str) -> _Instance:
        try:
            return self.instances[node]
        except KeyError:
            raise NotFound(f"instance {node} does not exist") from None

    def describe_subnets(self, subnet_ids: Sequence[str]) -> dict[str, int]:
        def run() -> dict[str, int]:
            missing = [s for s in subnet_ids if s not in self.books]
            if missing:
                raise NotFound(f"subnet {missing[0]} does not exist")
            return {s: self.books[s].available for s in subnet_ids}

        return self._call("DescribeSubnets", None, None, run)  # type: ignore[return-value]

    def create_eni(self, node: str, subnet_id: str) -> EniRecord:
        def run() -> EniRecord:
            self._instance(node)
            if subnet_id not in self.books:
                raise NotFound(f"subnet {subnet_id} does not exist")
            primary = self.books[subnet_id].take()
            eni_id = f"eni-{self._rng.getrandbits(32):08x}"
            while eni_id in self.enis:
                eni_id = f"eni-{self._rng.getrandbits(32):08x}"
            self._mac_seq += 1
            n = self._mac_seq
            mac = f"52:54:{(n >> 24) & 0xFF:02x}:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"
            record = EniRecord(eni_id, subnet_id, mac, primary, node)
            self.enis[eni_id] = _Eni(record, since=self._now())
            self._order[eni_id] = n
            self._index(node, eni_id)
            self.owner[primary] = eni_id
            return record

        return self._call("CreateNetworkInterface", node, None, run, subnet=subnet_id)  # type: ignore[return-value]

    def attach_eni(self, eni_id: str, node: str) -> EniRecord:
        def run() -> EniRecord:
            eni = self._get(eni_id)
            inst = self._instance(node)
            if eni.record.attached_to is not None:
                raise InvalidParameter(f"ENI {eni_id} is already attached to {eni.record.attached_to}")
            used = {e.record.device_index for e in self._node_enis(node) if e.record.attached_to == node}
            if len(used) >= inst.max_enis:
                raise QuotaExceeded(f"instance {node} already has {len(used)} secondary ENIs (quota "
                                    f"{inst.max_enis})")
            index = next(i for i in range(1, inst.max_enis + len(used) + 2) if i not in used)
            self._set_record(eni, replace(eni.record, attached_to=node, device_index=index))
            eni.since = self._now()
            self._notify("attach", eni_id, ())
            return self._describe(eni)

        return self._call("AttachNetworkInterface", node, eni_id, run)  # type: ignore[return-value]

    def detach_eni(self, eni_id: str) -> None:
        def run() -> None:
            eni = self._get(eni_id)
            if eni.record.attached_to is None:
                raise NotFound(f"ENI {eni_id} is not attached")
            self._notify("detach", eni_id, ())
            self._set_record(eni, replace(eni.record, attached_to=None, device_index=None))

        self._call("DetachNetworkInterface", None, eni_id, run)

    def delete_eni(self, eni_id: str) -> None:
        def run() -> None:
            eni = self._get(eni_id)
            if eni.record.attached_to is not None:
                raise InvalidParameter(f"ENI {eni_id} is attached to {eni.record.attached_to}; detach it first")
            book = self.books[eni.record.subnet_id]
            for ip in [*eni.ips, eni.record.primary_ip]:
                book.give_back(ip)
                self.owner.pop(ip, None)
            del self.enis[eni_id]
            for node in {eni.record.node, eni.record.attached_to} - {None}:
                self._enis_of[node].pop(eni_id, None)
            del self._order[eni_id]
            if eni.ips:
                self._notify("unbind", eni_id, tuple(eni.ips))

        self._call("DeleteNetworkInterface", None, eni_id, run)

    def assign_private_ips(
        self, eni_id: str, count: int = 0, ips: Iterable[IPv4Address] = ()
    ) -> list[IPv4Address]:
        wanted = list(ips)
        wanted_retained = {ip for ip in wanted if ip in self.retained}

        def run() -> list[IPv4Address]:
            eni = self._get(eni_id)
            node = eni.record.attached_to or eni.record.node
            quota = self._instance(node).ips_per_eni
            n = len(wanted) or count
            if n <= 0:
                raise InvalidParameter("assign at least one address")
            if len(eni.ips) + n > quota:
                raise QuotaExceeded(f"ENI {eni_id} has {len(eni.ips)} secondary IPs; {n} more would pass "
                                    f"its quota of {quota}")
            book = self.books[eni.record.subnet_id]
            foreign = [ip for ip in wanted if ip not in self.retained and ip in eni.ips]
            if foreign:
                raise InvalidParameter(f"{foreign[0]} is already bound to {eni_id}")
            if not wanted and book.available < n:
                raise InsufficientAddresses(f"subnet {eni.record.subnet_id} has {book.available} free "
                                            f"addresses, {n} asked")
            got: list[IPv4Address] = []
            try:
                for ip in wanted:
                    if ip in self.retained:  # a claim's address comes back onto an ENI
                        if not book.contains(ip):
                            raise InvalidParameter(f"{ip} is not in {eni.record.subnet_id}, the subnet of {eni_id}")
                        self.retained.discard(ip)
                    else:
                        book.take_exactly(ip)
                    got.append(ip)
                while len(got) < n:
                    got.append(book.take())
            except VpcError:
                for ip in got:
                    if ip in wanted_retained:
                        self.retained.add(ip)
                    else:
                        book.give_back(ip)
                raise
            for ip in got:
                eni.ips[ip] = self._now()
                self.owner[ip] = eni_id
            self._notify("bind", eni_id, tuple(got))
            return got

        return self._call("AssignPrivateIpAddresses", None, eni_id, run, count=len(wanted) or count)  # type: ignore[return-value]

    def unassign_private_ips(self, eni_id: str, ips: Iterable[IPv4Address], retain: bool = False) -> None:
        """Unbind secondary IPs. With `retain`, the addresses stay taken in the subnet for a claim (a
        static IP) and can be bound again, on any ENI in that subnet, by naming them."""
        gone = list(ips)

        def run() -> None:
            eni = self._get(eni_id)
            missing = [ip for ip in gone if ip not in eni.ips]
            if missing:
                raise NotFound(f"{missing[0]} is not bound to ENI {eni_id}")
            book = self.books[eni.record.subnet_id]
            for ip in gone:
                del eni.ips[ip]
                self.owner.pop(ip, None)
                if retain:
                    self.retained.add(ip)
                else:
                    book.give_back(ip)
            self._notify("unbind", eni_id, tuple(gone))

        self._call("UnassignPrivateIpAddresses", None, eni_id, run, ips=[str(ip) for ip in gone],
                   **({"retain": True} if retain else {}))

    def retain_free(self, subnet_id: str, count: int = 0, ips: Iterable[IPv4Address] = ()) -> list[IPv4Address]:
        """Take free addresses of a subnet (`count` of the VPC's choice, or exactly `ips`) straight into
        the retained set, on no ENI: a reserved address that was never bound (the Tencent Cloud API's
        CreateReserveIpAddresses). All or none."""
        wanted = list(ips)

        def run() -> list[IPv4Address]:
            if subnet_id not in self.books:
                raise NotFound(f"subnet {subnet_id} does not exist")
            book = self.books[subnet_id]
            n = len(wanted) or count
            if n <= 0:
                raise InvalidParameter("reserve at least one address")
            if not wanted and book.available < n:
                raise InsufficientAddresses(f"subnet {subnet_id} has {book.available} free addresses, {n} asked")
            got: list[IPv4Address] = []
            try:
                for ip in wanted:
                    book.take_exactly(ip)
                    got.append(ip)
                while len(got) < n:
                    got.append(book.take())
            except VpcError:
                for ip in got:
                    book.give_back(ip)
                raise
            self.retained.update(got)
            return got

        return self._call("CreateReserveIpAddresses", None, None, run, subnet=subnet_id,  # type: ignore[return-value]
                          count=len(wanted) or count)

    def release_retained(self, ips: Iterable[IPv4Address]) -> None:
        """Give addresses kept for claims back to their subnets (a claim reclaimed or expired)."""
        gone = list(ips)

        def run() -> None:
            missing = [ip for ip in gone if ip not in self.retained]
            if missing:
                raise NotFound(f"{missing[0]} is not a retained address")
            for ip in gone:
                self.retained.discard(ip)
                self.books[self.subnet_of(ip)].give_back(ip)

        self._call("ReleaseRetainedAddresses", None, None, run, ips=[str(ip) for ip in gone])

    def describe_enis(self, node: str) -> list[EniRecord]:
        """Eventually consistent, as real clouds are: an ENI attached, or an IP bound, less than
        `consistency_delay` seconds ago may not show yet (ENIs gone are gone at once)."""
        return self.describe_matching(lambda r: node in (r.node, r.attached_to), node, within=node)

    def describe_matching(self, match: Callable[[EniRecord], bool], node: str | None = None,
                          within: str | None = None) -> list[EniRecord]:
        """One DescribeNetworkInterfaces call: the ENIs whose current record `match`es, as the lagging
        describe shows them (see `describe_enis`); `node` only names the caller in the event. `within`
        names a node whose ENIs alone can match, so the call reads that node's index, not the VPC."""
        def run() -> list[EniRecord]:
            horizon = self._now() - self.faults.consistency_delay
            out = []
            for e in self._node_enis(within) if within is not None else self.enis.values():
                if not match(e.record):
                    continue
                if self.faults.consistency_delay and e.since > horizon:
                    out.append(replace(e.record, attached_to=None, device_index=None, ips=())
                               if e.record.attached_to else replace(e.record, ips=()))
                    continue
                ips = tuple(ip for ip, t in e.ips.items() if not self.faults.consistency_delay or t <= horizon)
                out.append(replace(e.record, ips=ips))
            return out

        return self._call("DescribeNetworkInterfaces", node, None, run)  # type: ignore[return-value]

    def _describe(self, eni: _Eni) -> EniRecord:
        return replace(eni.record, ips=tuple(eni.ips))

    def _notify(self, what: str, eni_id: str, ips: tuple[IPv4Address, ...]) -> None:
        for listener in self.listeners:
            listener(what, eni_id, ips)
