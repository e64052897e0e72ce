"""The kernel of a real network namespace: `NamespaceKernel` holds one rtnetlink socket open in it (the
codec's requests and dumps, for the testbed's own wiring), and `NetlinkPort` is the `eni_core.ops.Kernel`
port over it (domain operations encoded to netlink, dumps decoded back)."""
from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable, Sequence
from enum import IntEnum
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from eni_core import netlink as nl
from eni_core import netns, ops

__all__ = ["NamespaceKernel", "NetlinkPort", "encode", "sysctl_path"]


def sysctl_path(key: str) -> str:
    """The /proc/sys file of a sysctl key, in the namespace of whoever opens it."""
    return "/proc/sys/" + key.replace(".", "/")


class NamespaceKernel:
    """A namespace's kernel. `where` is a netns name or path (None: the calling thread's own)."""

    def __init__(self, where: str | os.PathLike[str] | None = None) -> None:
        self.where = where
        if where is None:
            self.sock = nl.NetlinkSocket()
        else:
            self.sock = netns.run_in(where, nl.NetlinkSocket)

    def close(self) -> None:
        self.sock.close()

    def links(self) -> list[nl.Link]:
        return self.sock.links()

    def link(self, ifname: str) -> nl.Link | None:
        return self.sock.link(ifname)

    def oper_up(self, ifname: str) -> bool | None:
        return self.sock.oper_up(ifname)

    def rules(self) -> list[nl.RuleEntry]:
        return self.sock.rules()

    def routes(self, table: int | None = None) -> list[nl.RouteEntry]:
        return self.sock.routes(table)

    def neighbours(self) -> list[nl.NeighEntry]:
        return self.sock.neighbours()

    def neighbour(self, index: int, ip) -> nl.NeighEntry | None:
        return self.sock.neighbour(index, ip)

    def route_get(self, dst, src=None, iif=None) -> nl.RouteEntry:
        return self.sock.route_get(dst, src, iif)

    def addresses(self) -> list[nl.AddrEntry]:
        return self.sock.addresses()

    def apply(self, requests: Sequence[nl.Request], ignore: tuple[int, ...] = ops.IGNORE_ALL) -> list[nl.NetlinkError]:
        return self.sock.apply(requests, ignore=ignore)

    def check(self, requests: Sequence[nl.Request], ignore: tuple[int, ...] = ()) -> None:
        self.sock.check(requests, ignore=ignore)

    def _in_ns(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self.where is None else netns.entered(self.where)

    def read_sysctls(self, keys: Iterable[str]) -> dict[str, int]:
        out = {}
        with self._in_ns():
            for key in keys:
                try:
                    out[key] = int(Path(sysctl_path(key)).read_text())
                except FileNotFoundError:
                    continue  # the device is not there (yet)
        return out

    def write_sysctl(self, key: str, value: int) -> None:
        with self._in_ns():
            Path(sysctl_path(key)).write_text(f"{value}\n")


# -- the domain adapter: `eni_core.ops` to netlink and back ------------------------------------------
def _encode_route(add: bool, r: ops.Route) -> nl.Request:
    return nl.route_msg(add, table=r.table, dst=r.dst.network_address if r.dst.prefixlen else None,
                        dst_len=r.dst.prefixlen, oif=r.oif, gateway=r.gateway, scope=int(r.scope), onlink=r.onlink,
                        rtype=int(r.type), proto=int(r.proto))


def _encode_rule(add: bool, r: ops.Rule) -> nl.Request:
    return nl.rule_msg(add, priority=r.priority, table=r.table,
                       src=r.src.network_address if r.src else None, src_len=r.src.prefixlen if r.src else 0,
                       dst=r.dst.network_address if r.dst else None, dst_len=r.dst.prefixlen if r.dst else 0)


_ENCODERS: dict[type, Callable[[ops.Op], nl.Request]] = {
    ops.AddRule: lambda op: _encode_rule(True, op.rule),
    ops.DeleteRule: lambda op: _encode_rule(False, op.rule),
    ops.AddRoute: lambda op: _encode_route(True, op.route),
    ops.DeleteRoute: lambda op: _encode_route(False, op.route),
    ops.AddNeighbour: lambda op: nl.neigh_add(op.neighbour.index, op.neighbour.ip,
                                              op.neighbour.mac or "00:00:00:00:00:00"),
    ops.DeleteNeighbour: lambda op: nl.neigh_del(op.index, op.ip),
    ops.SetLinkState: lambda op: nl.link_set(op.index, up=op.up),
    ops.DeleteLink: lambda op: nl.link_del(ifname=op.ifname),
    ops.AddAddress: lambda op: nl.addr_add(op.index, op.ip.ip, op.ip.network.prefixlen),
}


def _encode_veth(op: ops.AddVeth, fds: dict[str, int]) -> nl.Request:
    return nl.veth_add(op.ifname, op.peer, fds[op.peer_netns], index=op.index, mac=op.mac,
                       peer_index=op.peer_index, peer_mac=op.peer_mac)


_WIRE = "_netlink_request"  # where an operation keeps its encoding (see `encode`)


def encode(op: ops.Op, peer_fds: dict[str, int] | None = None) -> nl.Request:
    """One operation as a netlink request (a table of encoders, one per operation type). An `AddVeth`
    needs the fd of its peer's namespace in `peer_fds`.

    Operations are immutable and their encoding is a function of their fields alone (but an `AddVeth`'s,
    which names an fd), so an operation keeps its request once encoded: the ones every pod's ADD sends
    (`lo` up, the pod's routes: `eni_core.routing.pod_routes`) are made once and encoded once. The memo
    is outside the dataclass's fields: equality, hashing and `repr` do not see it.

    Examples
    --------
    >>> from ipaddress import ip_network
    >>> encode(ops.AddRule(ops.Rule(1536, 2003, src=ip_network("10.0.1.7/32")))).what
    'add rule 1536: from 10.0.1.7 to all lookup 2003'
    """
    kind = type(op)
    if kind is ops.AddVeth:
        return _encode_veth(op, peer_fds or {})
    memo = getattr(op, "__dict__", None)
    request = memo.get(_WIRE) if memo is not None else None
    if request is None:
        encoder = _ENCODERS.get(kind)
        if encoder is None:
            raise TypeError(f"{op!r} is not a netlink operation")
        request = encoder(op)
        memo[_WIRE] = request
    return request


def _named(kind: type[IntEnum], value: int) -> int:
    """The enum member for a value we know (`proto 77`), the plain number for one we do not."""
    try:
        return kind(value)
    except ValueError:
        return value


def _decode_route(r: nl.RouteEntry) -> ops.Route:
    dst = ops.DEFAULT if r.dst is None else IPv4Network((int(r.dst), r.dst_len), strict=False)
    return ops.Route(r.table, dst, r.oif, r.gateway, r.onlink, _named(ops.Proto, r.proto),
                     _named(ops.Scope, r.scope), _named(ops.RouteType, r.type))


def _decode_rule(r: nl.RuleEntry) -> ops.Rule:
    return ops.Rule(r.priority, r.table,
                    IPv4Network((int(r.src), r.src_len), strict=False) if r.src is not None else None,
                    IPv4Network((int(r.dst), r.dst_len), strict=False) if r.dst is not None else None)


class NetlinkPort:
    """The `eni_core.ops.Kernel` port on a real namespace: operations encoded to one netlink batch, dumps
    decoded into the domain's types. Owns (and closes) its `NamespaceKernel`."""

    def __init__(self, kernel: NamespaceKernel) -> None:
        self.kernel = kernel

    @classmethod
    def open(cls, where: str | os.PathLike[str] | None = None) -> NetlinkPort:
        return cls(NamespaceKernel(where))

    def close(self) -> None:
        self.kernel.close()

    def links(self) -> list[ops.Link]:
        return self.kernel.links()

    def link(self, ifname: str) -> ops.Link | None:
        return self.kernel.link(ifname)

    def oper_up(self, ifname: str) -> bool | None:
        return self.kernel.oper_up(ifname)

    def addresses(self) -> list[ops.Address]:
        return [ops.Address(a.index, IPv4Interface((int(a.ip), a.prefixlen))) for a in self.kernel.addresses()]

    def rules(self) -> list[ops.Rule]:
        return [_decode_rule(r) for r in self.kernel.rules()]

    def routes(self, table: int | None = None) -> list[ops.Route]:
        return [_decode_route(r) for r in self.kernel.routes(table)]

    def neighbours(self) -> list[ops.Neighbour]:
        return [ops.Neighbour(n.index, n.ip, n.mac, bool(n.state & nl.NUD_PERMANENT)) for n in self.kernel.neighbours()]

    def read_sysctls(self, keys: Iterable[str]) -> dict[str, int]:
        return self.kernel.read_sysctls(keys)

    def apply(self, operations: Sequence[ops.Op], *, ignore: tuple[int, ...] = ops.IGNORE_ALL) -> list[ops.KernelError]:
        netlink: list[ops.Op] = []
        sysctls: list[ops.SetSysctl] = []
        fds: dict[str, int] = {}
        try:
            for op in operations:
                kind = type(op)
                if kind is ops.SetSysctl:
                    sysctls.append(op)
                    continue
                if kind is ops.AddVeth and op.peer_netns not in fds:
                    fds[op.peer_netns] = os.open(op.peer_netns, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
                netlink.append(op)
            errors = [ops.KernelError(e.errno, netlink[e.position] if e.position is not None else e.what)
                      for e in self.kernel.apply([encode(op, fds) for op in netlink], ignore)]
        finally:
            for fd in fds.values():
                os.close(fd)
        for op in sysctls:
            try:
                self.kernel.write_sysctl(op.key, op.value)
            except OSError as err:
                if err.errno not in ignore:
                    errors.append(ops.KernelError(err.errno or errno.EIO, op))
        return errors
