"""A model of the kernel's routing state, for tests without root: `FakeKernel` is one network namespace
(links, addresses, rules, routes, neighbours, sysctls) that applies `eni_core.ops` as Linux does for what
enilab uses, and `FakeHost` holds namespaces by path so a veth can reach into a pod's.

What it enforces, as the kernel does: a rule added twice is refused (EEXIST), a delete of what is not
there is refused (ENOENT for rules and neighbours, ESRCH for routes, ENODEV for links); a route replaces
the route to the same destination in its table; a route needs its link to exist and be up (ENODEV,
ENETDOWN); a gateway must be reachable on the route's link (a link-scope route or an address covering it)
unless the route says `onlink` (ENETUNREACH); a deleted link takes its routes, neighbours, addresses, its
sysctls and its veth peer with it; a new link's rp_filter starts from `conf.default`.

A link is operationally up when it is up with carrier (a veth end has carrier while its peer is up), as
the kernel's deferred link-watch work records it: when a veth end comes up while its peer is up, both ends
gain carrier, and a dump shows each not operationally up until `link()` reads it (the kernel runs a
link's pending work when asked for that link). The end that came up first cannot send until then; `lo`
never goes through that work and is never operationally up.

Examples
--------
>>> from ipaddress import IPv4Address
>>> from eni_core.ops import DEFAULT, AddRoute, Route
>>> k = FakeKernel()
>>> eth1 = k.add_link("eth1", index=3, up=True)
>>> gw = IPv4Address("10.0.1.1")
>>> [str(e) for e in k.apply([AddRoute(Route(2003, DEFAULT, 3, gw))], ignore=())]
['add route default via 10.0.1.1 dev 3 table 2003: Network is unreachable']
>>> k.apply([AddRoute(Route(2003, DEFAULT, 3, gw, onlink=True))])
[]
>>> [str(r) for r in k.routes() if r.table == 2003]
['default via 10.0.1.1 dev 3 onlink table 2003']
"""
from __future__ import annotations

import errno
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from ipaddress import IPv4Address

from eni_core.ops import (
    DEFAULT,
    IGNORE_ALL,
    MAIN_TABLE,
    AddAddress,
    AddNeighbour,
    Address,
    AddRoute,
    AddRule,
    AddVeth,
    DeleteLink,
    DeleteNeighbour,
    DeleteRoute,
    DeleteRule,
    KernelError,
    Link,
    Neighbour,
    Op,
    Route,
    Rule,
    SetLinkState,
    SetSysctl,
)

__all__ = ["FakeHost", "FakeKernel"]

BOOT_RULES = (Rule(0, 255), Rule(32766, MAIN_TABLE), Rule(32767, 253))  # local, main, default
BOOT_SYSCTLS = {"net.ipv4.ip_forward": 0, "net.ipv4.conf.all.rp_filter": 1, "net.ipv4.conf.default.rp_filter": 1}


class _Refused(Exception):
    def __init__(self, err: int) -> None:
        self.errno = err


class FakeKernel:
    """One namespace's kernel, as data. `refuse(op)` may return an errno to inject a failure."""

    def __init__(self, host: FakeHost | None = None, sysctls: dict[str, int] | None = None) -> None:
        self.host = host
        self._links: dict[int, Link] = {}
        self._peers: dict[int, tuple[FakeKernel, int]] = {}  # veth index -> (namespace, peer's index)
        self._unready: set[int] = set()  # up, carrier just came: oper_up once read (link-watch work)
        self._addresses: list[Address] = []
        self._rules: list[Rule] = list(BOOT_RULES)
        self._routes: dict[tuple[int, object], Route] = {}
        self._neighbours: dict[tuple[int, IPv4Address], Neighbour] = {}
        self.sysctls: dict[str, int] = dict(BOOT_SYSCTLS if sysctls is None else sysctls)
        self.refuse: Callable[[Op], int | None] = lambda op: None
        self.batches: list[list[Op]] = []  # every batch applied, for tests that count round trips
        self.closed = False
        self.add_link("lo", index=1)

    # -- set-up, as the testbed's world builder would ----------------------------------------------------
    def add_link(self, ifname: str, *, index: int = 0, mac: str | None = None, up: bool = False) -> Link:
        if any(lk.ifname == ifname for lk in self._links.values()):
            raise KernelError(errno.EEXIST, f"add link {ifname}")
        if index in self._links:
            raise KernelError(errno.EBUSY, f"add link {ifname}")
        index = index or next(i for i in itertools.count(2) if i not in self._links)
        mac = mac or "02:fa:" + ":".join(f"{(index >> s) & 0xff:02x}" for s in (24, 16, 8, 0))
        self._links[index] = link = Link(index, ifname, mac, up, oper_up=up and ifname != "lo")
        self.sysctls.setdefault(f"net.ipv4.conf.{ifname}.rp_filter", self.sysctls.get(
            "net.ipv4.conf.default.rp_filter", 0))
        return link

    # -- the port ------------------------------------------------------------------------------------------
    def links(self) -> list[Link]:
        return sorted(self._links.values(), key=lambda lk: lk.index)

    def _named(self, ifname: str) -> Link | None:
        return next((lk for lk in self._links.values() if lk.ifname == ifname), None)

    def link(self, ifname: str) -> Link | None:
        link = self._named(ifname)
        if link is not None and link.index in self._unready:
            self._unready.discard(link.index)
            self._links[link.index] = link = replace(link, oper_up=True)
        return link

    def oper_up(self, ifname: str) -> bool | None:
        link = self.link(ifname)
        return None if link is None else link.oper_up

    def addresses(self) -> list[Address]:
        return list(self._addresses)

    def rules(self) -> list[Rule]:
        return sorted(self._rules, key=lambda r: r.priority)

    def routes(self, table: int | None = None) -> list[Route]:
        return [r for r in self._routes.values() if table is None or r.table == table]

    def neighbours(self) -> list[Neighbour]:
        return list(self._neighbours.values())

    def read_sysctls(self, keys: Iterable[str]) -> dict[str, int]:
        return {k: self.sysctls[k] for k in keys if k in self.sysctls}

    def close(self) -> None:
        self.closed = True

    def apply(self, ops: Sequence[Op], *, ignore: tuple[int, ...] = IGNORE_ALL) -> list[KernelError]:
        """Each operation on its own, in order, as the kernel acks each message of a batch; sysctl writes
        after the rest, as the real adapter makes them."""
        self.batches.append(list(ops))
        errors = []
        ordered = [op for op in ops if not isinstance(op, SetSysctl)] + [op for op in ops if isinstance(op, SetSysctl)]
        for op in ordered:
            try:
                injected = self.refuse(op)
                if injected:
                    raise _Refused(injected)
                self._do(op)
            except _Refused as refused:
                if refused.errno not in ignore:
                    errors.append(KernelError(refused.errno, op))
        return errors

    # -- semantics -------------------------------------------------------------------------------------------
    def _do(self, op: Op) -> None:
        match op:
            case AddRule(rule):
                if rule in self._rules:
                    raise _Refused(errno.EEXIST)  # rules are added with NLM_F_EXCL
                self._rules.append(rule)
            case DeleteRule(rule):
                found = next((r for r in self.rules() if rule.matches(r)), None)
                if found is None:
                    raise _Refused(errno.ENOENT)
                self._rules.remove(found)
            case AddRoute(route):
                self._check_route(route)
                self._routes[(route.table, route.dst)] = route  # NLM_F_REPLACE
            case DeleteRoute(route):
                found = self._routes.get((route.table, route.dst))
                if found is None or (route.oif is not None and found.oif != route.oif) or (
                        route.gateway is not None and found.gateway != route.gateway):
                    raise _Refused(errno.ESRCH)
                del self._routes[(route.table, route.dst)]
            case AddNeighbour(n):
                self._need_link(n.index)
                self._neighbours[(n.index, n.ip)] = n
            case DeleteNeighbour(index, ip):
                if self._neighbours.pop((index, ip), None) is None:
                    raise _Refused(errno.ENOENT)
            case SetLinkState(index, up):
                self._set_up(index, up)
                if not up:
                    self._drop_routes(lambda r: r.oif == index)  # IPv4 flushes a down link's routes
            case AddAddress(index, ip):
                self._need_link(index)
                self._addresses = [a for a in self._addresses if not (a.index == index and a.ip.ip == ip.ip)]
                self._addresses.append(Address(index, ip))
            case AddVeth(ifname, peer, peer_netns, index, mac, peer_index, peer_mac):
                self._add_veth(ifname, peer, peer_netns, (index, mac), (peer_index, peer_mac))
            case DeleteLink(ifname):
                link = self._named(ifname)
                if link is None:
                    raise _Refused(errno.ENODEV)
                self._remove_link(link.index)
                if link.index in self._peers:
                    other, peer_index = self._peers.pop(link.index)
                    other._peers.pop(peer_index, None)
                    other._remove_link(peer_index)
            case SetSysctl(key, value):
                if key not in self.sysctls:
                    raise _Refused(errno.ENOENT)
                self.sysctls[key] = value
            case _:
                raise TypeError(f"{op!r} is not a kernel operation")

    def _need_link(self, index: int | None) -> Link:
        if index not in self._links:
            raise _Refused(errno.ENODEV)
        return self._links[index]

    def _check_route(self, route: Route) -> None:
        link = self._need_link(route.oif)
        if not link.up:
            raise _Refused(errno.ENETDOWN)
        if route.gateway is None or route.onlink:
            return
        on_link = any(r.gateway is None and r.oif == route.oif and route.gateway in r.dst and r.dst != DEFAULT
                      for r in self._routes.values() if r.table in (route.table, MAIN_TABLE))
        covered = any(a.index == route.oif and route.gateway in a.ip.network and a.ip.network.prefixlen < 32
                      for a in self._addresses)
        if not (on_link or covered):
            raise _Refused(errno.ENETUNREACH)

    def _add_veth(self, ifname: str, peer: str, peer_netns: str, here_as: tuple[int, str | None],
                  there_as: tuple[int, str | None]) -> None:
        other = self.host.namespace(peer_netns) if self.host else None
        if other is None:
            raise _Refused(errno.EBADF)
        if self._named(ifname) is not None or (other is not self and other._named(peer) is not None):
            raise _Refused(errno.EEXIST)
        if here_as[0] in self._links or there_as[0] in other._links:
            raise _Refused(errno.EBUSY)
        here = self.add_link(ifname, index=here_as[0], mac=here_as[1], up=True)
        there = other.add_link(peer, index=there_as[0], mac=there_as[1])
        self._peers[here.index] = (other, there.index)
        other._peers[there.index] = (self, here.index)
        self._links[here.index] = replace(here, oper_up=False)  # up, but its peer is not: no carrier

    def _set_up(self, index: int, up: bool) -> None:
        """A link's flag, and its operational state with its veth peer's: an end coming up while its peer is
        up gives both ends carrier, which the kernel records later (`_unready`); going down, both lose it."""
        link = self._need_link(index)
        if up == link.up:
            return
        peer = self._peers.get(index)
        if peer is None:
            self._links[index] = replace(link, up=up, oper_up=up and link.ifname != "lo")
            return
        other, peer_index = peer
        self._links[index] = replace(link, up=up, oper_up=False)
        other._links[peer_index] = replace(other._links[peer_index], oper_up=False)
        carrier = up and other._links[peer_index].up
        for kernel, i in ((self, index), (other, peer_index)):
            if carrier:
                kernel._unready.add(i)
            else:
                kernel._unready.discard(i)

    def _remove_link(self, index: int) -> None:
        link = self._links.pop(index)
        self._unready.discard(index)
        self._drop_routes(lambda r: r.oif == index)
        self._neighbours = {k: n for k, n in self._neighbours.items() if n.index != index}
        self._addresses = [a for a in self._addresses if a.index != index]
        prefix = f"net.ipv4.conf.{link.ifname}."
        self.sysctls = {k: v for k, v in self.sysctls.items() if not k.startswith(prefix)}

    def _drop_routes(self, doomed: Callable[[Route], bool]) -> None:
        self._routes = {k: r for k, r in self._routes.items() if not doomed(r)}


class FakeHost:
    """Network namespaces by path, as /var/run/netns holds them; `open` is the `Kernel` opener a
    `cni.Dataplane` takes. A path that is not a namespace raises as opening a plain file would."""

    def __init__(self) -> None:
        self._namespaces: dict[str, FakeKernel] = {}
        self.files: set[str] = set()  # paths that exist but are not namespaces

    def add_namespace(self, path: str, **kwargs) -> FakeKernel:
        self._namespaces[path] = kernel = FakeKernel(self, **kwargs)
        return kernel

    def remove_namespace(self, path: str) -> None:
        kernel = self._namespaces.pop(path)
        for index in list(kernel._peers):
            other, peer_index = kernel._peers.pop(index)
            other._peers.pop(peer_index, None)
            other._remove_link(peer_index)

    def namespace(self, path: str) -> FakeKernel | None:
        return self._namespaces.get(path)

    def open(self, path: str) -> FakeKernel:
        if path in self.files:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        if path not in self._namespaces:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return self._namespaces[path]
