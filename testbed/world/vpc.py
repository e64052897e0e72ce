"""The simulated VPC control plane: the VPC API (`eni_core.ports.VpcApi`) over its parts.

It is the truth of which IP is bound to which ENI. Quotas (ENIs per node, IPs per ENI, subnet addresses)
are enforced here, by the API, so the allocator cannot cheat. The parts live beside it: the addresses
(`addresses.py`), the ENIs (`eni_registry.py`), the instances' quotas (`quotas.py`) and the seeded faults
(`faults.py`).
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from ipaddress import IPv4Address

from eni_core.model import Subnet
from eni_core.ports import EniRecord, InvalidParameter, NotFound, VpcError
from testbed.world.addresses import AddressSpace
from testbed.world.alike import Alike
from testbed.world.eni_registry import EniEntry, EniRegistry
from testbed.world.faults import FaultConfig, FaultInjector
from testbed.world.quotas import Instance

# FaultConfig is named here too: a SimVpc is made with one.
__all__ = ["FaultConfig", "SimVpc"]

EventSink = Callable[[dict], None]


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
        self.addresses = AddressSpace(subnets)
        self.registry = EniRegistry(seed)
        self._faults = FaultInjector(faults or FaultConfig(), seed)
        self.instances: dict[str, Instance] = {}
        self._alike = Alike()  # instances of one type share one quota object
        # The parts' tables, by the names callers read them by.
        self.subnets = self.addresses.subnets
        self.books = self.addresses.books
        self.owner = self.addresses.owner  # secondary or primary IP -> ENI id (the SDN's truth)
        self.retained = self.addresses.retained  # kept for a claim (static IP): in use, on no ENI
        self.hosts = self.addresses.hosts
        self.enis = self.registry.enis
        self.calls = 0
        self._now = now
        self._events = events
        self._sleep = sleep
        self.listeners: list[Callable[[str, str, tuple[IPv4Address, ...]], None]] = []

    @property
    def faults(self) -> FaultConfig:
        return self._faults.config

    @faults.setter
    def faults(self, config: FaultConfig) -> None:
        self._faults.config = config

    # -- set-up, used by the testbed (not part of VpcApi) -------------------------------------------
    def add_instance(self, node: str, max_enis: int, ips_per_eni: int) -> None:
        self.instances[node] = self._alike.one(Instance(max_enis, ips_per_eni))

    def set_instance_limits(self, node: str, max_enis: int, ips_per_eni: int) -> None:
        self.instances[node] = self._alike.one(Instance(max_enis, ips_per_eni))

    def remove_instance(self, node: str) -> None:
        """Terminate an instance: its attached ENIs are detached (the ipamd deletes them first)."""
        for eni in self.registry.of_node(node):
            if eni.record.attached_to == node:
                self.registry.set_record(eni, replace(eni.record, attached_to=None, device_index=None))
        self.instances.pop(node, None)

    def add_host(self, name: str, subnet_id: str, ip: IPv4Address) -> None:
        self.addresses.add_host(name, subnet_id, ip)

    def available(self, subnet_id: str) -> int:
        return self.addresses.available(subnet_id)

    def subnet_of(self, ip: IPv4Address) -> str | None:
        return self.addresses.subnet_of(ip)

    # -- the API ------------------------------------------------------------------------------------
    def _call(self, call: str, node: str | None, eni: str | None, fn: Callable[[], object], **args) -> object:
        """One API call: counted, delayed and failed as the faults say, and told to the event sink."""
        self.calls += 1
        latency = self._faults.latency()
        if latency and self._sleep is not None:
            self._sleep(latency)
        event = {"t": self._now(), "kind": "api", "call": call, "node": node, "eni": eni, **args}
        if latency:
            event["latency_ms"] = round(latency * 1000, 3)
        try:
            result = self._faults.run(call, fn)
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

    def _get(self, eni_id: str) -> EniEntry:
        return self.registry.get(eni_id)

    def _instance(self, node: str) -> Instance:
        try:
            return self.instances[node]
        except KeyError:
            raise NotFound(f"instance {node} does not exist") from None

    def describe_subnets(self, subnet_ids: Sequence[str]) -> dict[str, int]:
        def run() -> dict[str, int]:
            return {s: self.addresses.book(s).available for s in subnet_ids}

        return self._call("DescribeSubnets", None, None, run)  # type: ignore[return-value]

    def create_eni(self, node: str, subnet_id: str) -> EniRecord:
        def run() -> EniRecord:
            self._instance(node)
            primary = self.addresses.book(subnet_id).take()
            record = self.registry.create(node, subnet_id, primary, self._now())
            self.addresses.hold(subnet_id, record.id, (primary,))
            return record

        return self._call("CreateNetworkInterface", node, None, run, subnet=subnet_id)  # type: ignore[return-value]

    def attach_eni(self, eni_id: str, node: str) -> EniRecord:
        def run() -> EniRecord:
            eni = self._get(eni_id)
            inst = self._instance(node)
            if eni.record.attached_to is not None:
                raise InvalidParameter(f"ENI {eni_id} is already attached to {eni.record.attached_to}")
            used = self.registry.device_indexes(node)
            inst.check_attach(node, len(used), eni_id, len(eni.ips))
            index = next(i for i in range(1, inst.max_enis + len(used) + 2) if i not in used)
            self.registry.set_record(eni, replace(eni.record, attached_to=node, device_index=index))
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
            self.registry.set_record(eni, replace(eni.record, attached_to=None, device_index=None))

        self._call("DetachNetworkInterface", None, eni_id, run)

    def delete_eni(self, eni_id: str) -> None:
        def run() -> None:
            eni = self._get(eni_id)
            if eni.record.attached_to is not None:
                raise InvalidParameter(f"ENI {eni_id} is attached to {eni.record.attached_to}; detach it first")
            self.addresses.give_back(eni.record.subnet_id, [*eni.ips, eni.record.primary_ip])
            self.registry.remove(eni_id)
            if eni.ips:
                self._notify("unbind", eni_id, tuple(eni.ips))

        self._call("DeleteNetworkInterface", None, eni_id, run)

    def assign_private_ips(
        self, eni_id: str, count: int = 0, ips: Iterable[IPv4Address] = ()
    ) -> list[IPv4Address]:
        wanted = list(ips)

        def run() -> list[IPv4Address]:
            eni = self._get(eni_id)
            inst = self._instance(eni.record.attached_to or eni.record.node)
            n = len(wanted) or count
            if n <= 0:
                raise InvalidParameter("assign at least one address")
            if len(set(wanted)) < len(wanted):
                raise InvalidParameter(f"an address is named twice: {_twice(wanted)}")
            inst.check_assign(eni_id, len(eni.ips), n)
            foreign = [ip for ip in wanted if ip not in self.retained and ip in eni.ips]
            if foreign:
                raise InvalidParameter(f"{foreign[0]} is already bound to {eni_id}")
            got = self.addresses.take(eni.record.subnet_id, n, wanted, for_eni=eni_id)
            now = self._now()
            for ip in got:
                eni.ips[ip] = now
            self.addresses.hold(eni.record.subnet_id, eni_id, got)
            self._notify("bind", eni_id, tuple(got))
            return got

        return self._call("AssignPrivateIpAddresses", None, eni_id, run, count=len(wanted) or count)  # type: ignore[return-value]

    def unassign_private_ips(self, eni_id: str, ips: Iterable[IPv4Address], retain: bool = False, *,
                             kept: Iterable[IPv4Address] = ()) -> None:
        """Unbind secondary IPs. With `retain`, the addresses stay taken in the subnet for a claim (a
        static IP) and can be bound again, on any ENI in that subnet, by naming them. `kept` names those of
        `ips` retained whatever `retain` says (one call for a mix, all or none)."""
        gone = list(ips)
        keep = set(kept)

        def run() -> None:
            eni = self._get(eni_id)
            if len(set(gone)) < len(gone):  # the second copy would find the address gone, half-way through
                raise InvalidParameter(f"an address is named twice: {_twice(gone)}")
            missing = [ip for ip in gone if ip not in eni.ips]
            if missing:
                raise NotFound(f"{missing[0]} is not bound to ENI {eni_id}")
            for ip in gone:
                del eni.ips[ip]
            self.addresses.give_back(eni.record.subnet_id, [ip for ip in gone if ip not in keep], retain)
            self.addresses.give_back(eni.record.subnet_id, [ip for ip in gone if ip in keep], True)
            self._notify("unbind", eni_id, tuple(gone))

        self._call("UnassignPrivateIpAddresses", None, eni_id, run, ips=[str(ip) for ip in gone],
                   **({"retain": True} if retain else {}), **({"kept": [str(ip) for ip in keep]} if keep else {}))

    def retain_free(self, subnet_id: str, count: int = 0, ips: Iterable[IPv4Address] = ()) -> list[IPv4Address]:
        """Take free addresses of a subnet (`count` of the VPC's choice, or exactly `ips`) straight into
        the retained set, on no ENI: a reserved address that was never bound (the Tencent Cloud API's
        CreateReserveIpAddresses). All or none."""
        wanted = list(ips)
        return self._call("CreateReserveIpAddresses", None, None,  # type: ignore[return-value]
                          lambda: self.addresses.reserve(subnet_id, count, wanted), subnet=subnet_id,
                          count=len(wanted) or count)

    def release_retained(self, ips: Iterable[IPv4Address]) -> None:
        """Give addresses kept for claims back to their subnets (a claim reclaimed or expired)."""
        gone = list(ips)
        self._call("ReleaseRetainedAddresses", None, None, lambda: self.addresses.release_retained(gone),
                   ips=[str(ip) for ip in gone])

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
            delay = self.faults.consistency_delay
            horizon = self._now() - delay
            out = []
            for e in self.registry.of_node(within) if within is not None else self.enis.values():
                if not match(e.record):
                    continue
                if delay and e.since > horizon:
                    out.append(replace(e.record, attached_to=None, device_index=None, ips=())
                               if e.record.attached_to else replace(e.record, ips=()))
                    continue
                ips = tuple(ip for ip, t in e.ips.items() if not delay or t <= horizon)
                out.append(replace(e.record, ips=ips))
            return out

        return self._call("DescribeNetworkInterfaces", node, None, run)  # type: ignore[return-value]

    def _describe(self, eni: EniEntry) -> EniRecord:
        return replace(eni.record, ips=tuple(eni.ips))

    def _notify(self, what: str, eni_id: str, ips: tuple[IPv4Address, ...]) -> None:
        for listener in self.listeners:
            listener(what, eni_id, ips)


def _twice(ips: Sequence[IPv4Address]) -> IPv4Address:
    """The first of the addresses named more than once."""
    return next(ip for ip, n in Counter(ips).items() if n > 1)
