"""Kernel state and the operations that change it, in the domain's words: rules, routes, neighbours, links,
addresses and sysctls of one network namespace. No wire format here: `eni_core.kernel` encodes these to
netlink and decodes dumps back into them; `eni_core.fake_kernel` applies them to a model without root.

Examples
--------
>>> from ipaddress import ip_network
>>> str(AddRule(Rule(1536, 2003, src=ip_network("10.0.1.7/32"))))
'add rule 1536: from 10.0.1.7 lookup 2003'
>>> str(AddRoute(Route(2003, DEFAULT, 3, IPv4Address("10.0.1.1"), onlink=True)))
'add route default via 10.0.1.1 dev 3 onlink table 2003'
"""
from __future__ import annotations

import errno as errno_mod
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Protocol

__all__ = [
    "ANY_TABLE", "DEFAULT", "IGNORE_ALL", "IGNORE_EXISTS", "IGNORE_GONE", "MAIN_TABLE", "AddAddress",
    "AddNeighbour", "AddRoute", "AddRule", "AddVeth", "Address", "DeleteLink", "DeleteNeighbour", "DeleteRoute",
    "DeleteRule", "Kernel", "KernelError", "Link", "Neighbour", "Op", "Proto", "Route", "RouteType", "Rule",
    "Scope", "SetLinkState", "SetSysctl", "raise_first", "settle",
]

MAIN_TABLE = 254
ANY_TABLE = 0  # in a rule delete: whatever table the rule looks up
DEFAULT = IPv4Network("0.0.0.0/0")

IGNORE_EXISTS = (errno_mod.EEXIST,)
IGNORE_GONE = (errno_mod.ENOENT, errno_mod.ESRCH, errno_mod.ENODEV, errno_mod.EADDRNOTAVAIL)
IGNORE_ALL = IGNORE_EXISTS + IGNORE_GONE  # idempotent: adding what exists and deleting what is gone are fine


class Proto(IntEnum):
    """Who installed a route (`proto` in `ip route`): enilab only ever removes what carries ENILAB."""

    KERNEL = 2
    STATIC = 4
    ENILAB = 77


class Scope(IntEnum):
    UNIVERSE = 0
    LINK = 253
    HOST = 254


class RouteType(IntEnum):
    UNICAST = 1
    LOCAL = 2
    BROADCAST = 3
    UNREACHABLE = 7


@dataclass(frozen=True)
class Link:
    index: int
    ifname: str
    mac: str
    up: bool
    # its RFC 2863 operational state is "up": set by the kernel's deferred link-watch work once the link
    # has carrier, the work that also readies a link that came up before its carrier to send (lo never
    # goes through it and stays "unknown": False here)
    oper_up: bool = False


@dataclass(frozen=True)
class Address:
    index: int
    ip: IPv4Interface


def _net(net: IPv4Network) -> str:
    return str(net.network_address) if net.prefixlen == 32 else str(net)


@dataclass(frozen=True)
class Rule:
    """A policy rule: packets matching `src` / `dst` (None: any) look up `table` at `priority`."""

    priority: int
    table: int
    src: IPv4Network | None = None
    dst: IPv4Network | None = None

    def __str__(self) -> str:
        match = " ".join(f"{k} {_net(v)}" for k, v in (("from", self.src), ("to", self.dst)) if v is not None)
        table = "main" if self.table == MAIN_TABLE else str(self.table)
        return f"{self.priority}: {match or 'from all'} lookup {table}"

    def matches(self, other: Rule) -> bool:
        """Whether a delete of `self` removes `other`, as the kernel matches: unset fields match anything."""
        return (self.priority == other.priority and self.table in (ANY_TABLE, other.table)
                and self.src in (None, other.src) and self.dst in (None, other.dst))


@dataclass(frozen=True)
class Route:
    """A route: `dst` (DEFAULT for the default route) in `table`, out of link `oif`, maybe via `gateway`;
    `onlink` says the gateway is on the link even though no address of the link covers it."""

    table: int
    dst: IPv4Network
    oif: int | None
    gateway: IPv4Address | None = None
    onlink: bool = False
    proto: Proto = Proto.ENILAB
    scope: Scope | None = None  # None: LINK without a gateway, UNIVERSE with one (as `ip route` picks)
    type: RouteType = RouteType.UNICAST

    def __post_init__(self) -> None:
        if self.scope is None:
            object.__setattr__(self, "scope", Scope.UNIVERSE if self.gateway is not None else Scope.LINK)

    def __str__(self) -> str:
        dst = "default" if self.dst == DEFAULT else _net(self.dst)
        via = f" via {self.gateway}" if self.gateway is not None else ""
        dev = f" dev {self.oif}" if self.oif is not None else ""
        return f"{dst}{via}{dev}{' onlink' if self.onlink else ''} table {self.table}"


@dataclass(frozen=True)
class Neighbour:
    index: int
    ip: IPv4Address
    mac: str | None
    permanent: bool = True


@dataclass(frozen=True)
class AddRule:
    rule: Rule

    def __str__(self) -> str:
        return f"add rule {self.rule}"


@dataclass(frozen=True)
class DeleteRule:
    rule: Rule  # its table may be ANY_TABLE

    def __str__(self) -> str:
        return f"delete rule {self.rule}"


@dataclass(frozen=True)
class AddRoute:
    """Add or replace the route to `route.dst` in its table."""

    route: Route

    def __str__(self) -> str:
        return f"add route {self.route}"


@dataclass(frozen=True)
class DeleteRoute:
    route: Route

    def __str__(self) -> str:
        return f"delete route {self.route}"


@dataclass(frozen=True)
class AddNeighbour:
    """Add or replace a permanent neighbour entry."""

    neighbour: Neighbour

    def __str__(self) -> str:
        n = self.neighbour
        return f"add neighbour {n.ip} lladdr {n.mac} on link {n.index}"


@dataclass(frozen=True)
class DeleteNeighbour:
    index: int
    ip: IPv4Address

    def __str__(self) -> str:
        return f"delete neighbour {self.ip} on link {self.index}"


@dataclass(frozen=True)
class SetLinkState:
    index: int
    up: bool

    def __str__(self) -> str:
        return f"set link {self.index} {'up' if self.up else 'down'}"


@dataclass(frozen=True)
class AddVeth:
    """A veth pair: `ifname` (with `index` and `mac`, 0/None: the kernel's choice) here, up; `peer` (with
    `peer_index` and `peer_mac`, likewise) in the network namespace at the path `peer_netns`, down."""

    ifname: str
    peer: str
    peer_netns: str
    index: int = 0
    mac: str | None = None
    peer_index: int = 0
    peer_mac: str | None = None

    def __str__(self) -> str:
        return f"add veth {self.ifname} (peer {self.peer})"


@dataclass(frozen=True)
class DeleteLink:
    """Delete a link by name; a veth's peer, and the routes, neighbours and addresses on it, go with it."""

    ifname: str

    def __str__(self) -> str:
        return f"delete link {self.ifname}"


@dataclass(frozen=True)
class AddAddress:
    """Add or replace an address on a link."""

    index: int
    ip: IPv4Interface

    def __str__(self) -> str:
        return f"add address {self.ip} on link {self.index}"


@dataclass(frozen=True)
class SetSysctl:
    """A write to /proc/sys in the namespace: `net.ipv4.conf.eth1.rp_filter` = 0."""

    key: str
    value: int

    def __str__(self) -> str:
        return f"set {self.key} = {self.value}"


Op = (AddRule | DeleteRule | AddRoute | DeleteRoute | AddNeighbour | DeleteNeighbour | SetLinkState | AddVeth
      | DeleteLink | AddAddress | SetSysctl)


class KernelError(OSError):
    """The kernel refused an operation: `errno` says why, `op` which one."""

    def __init__(self, err: int, op: Op | str) -> None:
        super().__init__(err, f"{op}: {os.strerror(err)}")
        self.op = op

    def __str__(self) -> str:
        return str(self.strerror)


def raise_first(errors: Sequence[KernelError]) -> None:
    if errors:
        raise errors[0]


SETTLE_S = 1.0


def settle(kernel: _LinkReader, ifname: str, bound: float | None = None) -> bool | None:
    """Read link `ifname` until it passes traffic, for at most `bound` seconds (SETTLE_S); whether it
    does at the last reading (None: there is no such link).

    A veth end brought up before its peer had no carrier then. When the peer comes up, the kernel readies
    the first end (attaches its transmit queue) from deferred link-watch work, which waits for the rtnl
    lock; another namespace's setup or teardown can hold that lock for a second. Until then, everything
    the end sends is dropped, a first ARP request included, and ARP retries only after a second. Reading
    the link runs that pending work at once on this machine's kernel (6.18 syncs it before answering
    RTM_GETLINK; a dump does not), so one read is the usual cost; a kernel that does not is polled."""
    ready = kernel.oper_up(ifname)
    if ready is not False:
        return ready
    deadline = time.monotonic() + (SETTLE_S if bound is None else bound)
    pause = 0.001
    while ready is False and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
        ready = kernel.oper_up(ifname)
    return ready


class _LinkReader(Protocol):
    def oper_up(self, ifname: str) -> bool | None: ...


class Kernel(Protocol):
    """The kernel of one network namespace, in the domain's words: dumps, a batch of operations, sysctls."""

    def links(self) -> list[Link]: ...

    def link(self, ifname: str) -> Link | None: ...

    def oper_up(self, ifname: str) -> bool | None:
        """Whether the link passes traffic (operationally up); None if there is no such link. Reading it
        readies a link whose carrier just came (see `settle`)."""

    def addresses(self) -> list[Address]: ...

    def rules(self) -> list[Rule]: ...

    def routes(self, table: int | None = None) -> list[Route]:
        """Every route, or only those of `table`."""

    def neighbours(self) -> list[Neighbour]: ...

    def read_sysctls(self, keys: Iterable[str]) -> dict[str, int]:
        """The values of the keys that exist (a device's keys exist once the device does)."""

    def apply(self, ops: Sequence[Op], *, ignore: tuple[int, ...] = IGNORE_ALL) -> list[KernelError]:
        """Run the operations in order, as one batch (sysctl writes after the netlink messages); return
        the refusals whose errno is not in `ignore`, each naming its operation."""

    def close(self) -> None: ...
