"""A small rtnetlink client: the few message types VPC-CNI needs, packed with struct, sent in batches.

One socket per namespace (a socket stays in the namespace it was opened in), many messages per send,
one ack each. Dumps decode links, addresses, routes, rules and neighbours into plain tuples. Encoding a
message costs microseconds; a batch of a pod's dozen messages is one system call.
"""
from __future__ import annotations

import errno as errno_mod
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from eni_core.ops import Link  # a decoded link is the port's Link: the adapter hands it on as it is

__all__ = [
    "IGNORE_EXISTS", "IGNORE_GONE", "Link", "NeighEntry", "NetlinkError", "NetlinkSocket", "RouteEntry", "RuleEntry",
    "addr_add", "encode", "link_del", "link_get", "link_set", "neigh_add", "neigh_del", "route_msg", "rule_msg",
    "veth_add",
]

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
F_REQUEST, F_MULTI, F_ACK, F_DUMP = 0x1, 0x2, 0x4, 0x300
F_DUMP_INTR = 0x10  # the kernel's table changed while it was dumped: entries may be missing or doubled
DUMP_TRIES = 5
SEQ_MAX = 0xFFFF_FFFF  # nlmsg_seq is 32 bits
F_REPLACE, F_EXCL, F_CREATE = 0x100, 0x200, 0x400

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34

AF_UNSPEC, AF_INET = 0, 2
IFF_UP = 1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_NET_NS_FD, IFLA_EXT_MASK = 1, 3, 16, 18, 28, 29
IF_OPER_UP = 6
_OPER_UP = bytes((IF_OPER_UP,))  # IFLA_OPERSTATE is one byte
RTEXT_FILTER_SKIP_STATS = 1 << 3  # link answers without their counters: a third of the bytes, less to fill
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_SRC, RTA_IIF, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 2, 3, 4, 5, 15
FRA_DST, FRA_SRC, FRA_PRIORITY, FRA_TABLE = 1, 2, 6, 15
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT = 0x80
FR_ACT_TO_TBL = 1
RTN_UNICAST, RTN_LOCAL, RTN_UNREACHABLE = 1, 2, 7
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
RTPROT_KERNEL, RTPROT_STATIC = 2, 4
RTPROT_ENILAB = 77  # our routes say `proto 77`: reconcile only ever removes what carries it
RTNH_F_ONLINK = 4
RTM_F_LOOKUP_TABLE = 0x1000  # route get: report the table the FIB lookup used
RT_TABLE_MAIN = 254
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12

_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BBHiHBB")
_U32_ATTR = struct.Struct("=HHI")  # an attribute holding a u32
_IP_ATTR = struct.Struct("=HH4s")  # an attribute holding an IPv4 address
_I32 = struct.Struct("=i")
# the fixed heads of the messages made by the thousand, packed in one call each
_RTMSG_TABLE = struct.Struct("=BBBBBBBBIHHI")  # a route: rtmsg, RTA_TABLE
_RULE_HEAD = struct.Struct("=BBBBBBBBIHHIHHI")  # a rule: rtmsg, FRA_PRIORITY, FRA_TABLE
_MSG_TRUNC, _MSG_DONTWAIT = int(socket.MSG_TRUNC), int(socket.MSG_DONTWAIT)  # plain ints: a flag | is an enum call
_ATTR = struct.Struct("=HH")
_CHUNK = 60_000  # bytes per send, under the socket's buffer


class NetlinkError(OSError):
    """The kernel refused a request; `what` says which."""

    def __init__(self, err: int, what: str, position: int | None = None) -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.what = what
        self.position = position  # of the refused request in the batch `apply` was given


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _u32(kind: int, value: int) -> bytes:
    return _U32_ATTR.pack(8, kind, value)


def _ip(kind: int, ip: IPv4Address) -> bytes:
    return _IP_ATTR.pack(8, kind, ip.packed)


def _mac(value: str) -> bytes:
    return bytes.fromhex(value.replace(":", ""))


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


@dataclass(slots=True)
class Request:
    """One message to send: type, flags, body (without the netlink header), and what it does: a text, or
    a function that makes it, for the messages sent by the thousand (the text is wanted only for an error,
    and formatting addresses costs more than encoding the message). Not frozen: a frozen dataclass sets
    each field through `object.__setattr__`, and a pod's ADD makes a dozen of these."""

    type: int
    flags: int
    body: bytes
    describe: str | Callable[[], str] = field(compare=False)

    @property
    def what(self) -> str:
        return self.describe if isinstance(self.describe, str) else self.describe()


# -- builders ----------------------------------------------------------------------------------------
_MAC_ATTR = struct.Struct("=HH6s2x")  # an attribute holding an Ethernet MAC, padded to 12 bytes
_VETH_KIND = _str(IFLA_INFO_KIND, "veth")


def _mac_attr(kind: int, mac: str) -> bytes:
    """A link-layer address attribute: one pack for an Ethernet MAC, any other length as it is (the kernel
    judges it: the struct would pad or cut it without a word)."""
    raw = _mac(mac)
    return _MAC_ATTR.pack(10, kind, raw) if len(raw) == 6 else _attr(kind, raw)


def veth_add(ifname: str, peer: str, peer_netns_fd: int, *, index: int = 0, mac: str | None = None,
             peer_index: int = 0, peer_mac: str | None = None, up: bool = True) -> Request:
    """A veth pair: `ifname` here, `peer` in the namespace of the fd; indexes and MACs as given (0/None:
    the kernel's choice). Every part is a multiple of four bytes long, so each nest is its header and
    its parts, without padding: a pod's ADD sends one of these."""
    peer_part = _IFINFO.pack(AF_UNSPEC, 0, peer_index, 0, 0) + _str(IFLA_IFNAME, peer) + _U32_ATTR.pack(
        8, IFLA_NET_NS_FD, peer_netns_fd) + (_mac_attr(IFLA_ADDRESS, peer_mac) if peer_mac else b"")
    size = len(peer_part)  # the peer is nested three deep: LINKINFO > INFO_DATA > VETH_INFO_PEER
    info = _VETH_KIND + _ATTR.pack(size + 8, IFLA_INFO_DATA) + _ATTR.pack(size + 4, VETH_INFO_PEER) + peer_part
    flags = IFF_UP if up else 0
    body = (_IFINFO.pack(AF_UNSPEC, 0, index, flags, flags) + _str(IFLA_IFNAME, ifname)
            + _ATTR.pack(len(info) + 4, IFLA_LINKINFO) + info + (_mac_attr(IFLA_ADDRESS, mac) if mac else b""))
    return Request(RTM_NEWLINK, F_CREATE | F_EXCL, body, lambda: f"add veth {ifname} (peer {peer})")


def link_set(index: int, *, up: bool | None = None, mac: str | None = None) -> Request:
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    body = _IFINFO.pack(AF_UNSPEC, 0, index, flags, change)
    if mac:
        body += _attr(IFLA_ADDRESS, _mac(mac))
    return Request(RTM_NEWLINK, 0, body, lambda: f"set link {index}")


def link_get(ifname: str) -> Request:
    """Ask for one link by name (not a dump: the kernel also runs the link's pending link-watch work, see
    `eni_core.ops.settle`)."""
    body = _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + _str(IFLA_IFNAME, ifname)
    body += _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    return Request(RTM_GETLINK, 0, body, lambda: f"get link {ifname}")


def link_del(index: int = 0, ifname: str | None = None) -> Request:
    body = _IFINFO.pack(AF_UNSPEC, 0, index, 0, 0) + (_str(IFLA_IFNAME, ifname) if ifname else b"")
    return Request(RTM_DELLINK, 0, body, f"delete link {ifname or index}")


def addr_add(index: int, ip: IPv4Address, prefixlen: int = 32, scope: int = RT_SCOPE_UNIVERSE) -> Request:
    body = _IFADDR.pack(AF_INET, prefixlen, 0, scope, index) + _ip(IFA_LOCAL, ip) + _ip(IFA_ADDRESS, ip)
    return Request(RTM_NEWADDR, F_CREATE | F_REPLACE, body, lambda: f"add address {ip}/{prefixlen} on link {index}")


def route_msg(add: bool, *, table: int, dst: IPv4Address | None, dst_len: int, oif: int | None = None,
              gateway: IPv4Address | None = None, scope: int = RT_SCOPE_UNIVERSE, onlink: bool = False,
              rtype: int = RTN_UNICAST, proto: int = RTPROT_ENILAB) -> Request:
    body = _RTMSG_TABLE.pack(AF_INET, dst_len, 0, 0, table if table < 256 else 252, proto, scope, rtype,
                             RTNH_F_ONLINK if onlink else 0, 8, RTA_TABLE, table)
    if dst is not None and dst_len:
        body += _IP_ATTR.pack(8, RTA_DST, dst.packed)
    if oif is not None:
        body += _U32_ATTR.pack(8, RTA_OIF, oif)
    if gateway is not None:
        body += _IP_ATTR.pack(8, RTA_GATEWAY, gateway.packed)
    def what() -> str:
        return f"{'add' if add else 'delete'} route {dst or 'default'}/{dst_len} table {table}"

    if add:
        return Request(RTM_NEWROUTE, F_CREATE | F_REPLACE, body, what)
    return Request(RTM_DELROUTE, 0, body, what)


def rule_msg(add: bool, *, priority: int, table: int, src: IPv4Address | None = None, src_len: int = 0,
             dst: IPv4Address | None = None, dst_len: int = 0) -> Request:
    body = _RULE_HEAD.pack(AF_INET, dst_len if dst else 0, src_len if src else 0, 0, table if table < 256 else 252,
                           0, 0, FR_ACT_TO_TBL, 0, 8, FRA_PRIORITY, priority, 8, FRA_TABLE, table)
    if src is not None:
        body += _IP_ATTR.pack(8, FRA_SRC, src.packed)
    if dst is not None:
        body += _IP_ATTR.pack(8, FRA_DST, dst.packed)
    def what() -> str:
        return f"{'add' if add else 'delete'} rule {priority}: from {src or 'all'} to {dst or 'all'} lookup {table}"

    return Request(RTM_NEWRULE if add else RTM_DELRULE, F_CREATE | F_EXCL if add else 0, body, what)


def neigh_add(index: int, ip: IPv4Address, mac: str) -> Request:
    body = (_NDMSG.pack(AF_INET, 0, 0, index, NUD_PERMANENT, 0, 0) + _IP_ATTR.pack(8, NDA_DST, ip.packed)
            + _mac_attr(NDA_LLADDR, mac))
    return Request(RTM_NEWNEIGH, F_CREATE | F_REPLACE, body,
                   lambda: f"add neighbour {ip} lladdr {mac} on link {index}")


def neigh_del(index: int, ip: IPv4Address) -> Request:
    body = _NDMSG.pack(AF_INET, 0, 0, index, 0, 0, 0) + _ip(NDA_DST, ip)
    return Request(RTM_DELNEIGH, 0, body, lambda: f"delete neighbour {ip} on link {index}")


def encode(requests: Iterable[Request]) -> bytes:
    """Requests framed for one send with no acks asked for (the kernel still answers a failure with an
    error message): the cheapest way to hand the kernel a batch, for callers that read errors later."""
    return b"".join(_HDR.pack(_HDR.size + len(r.body), r.type, F_REQUEST | r.flags, 0, 0) + r.body for r in requests)


# -- decoded dump entries ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteEntry:
    table: int
    dst: IPv4Address | None
    dst_len: int
    oif: int | None
    gateway: IPv4Address | None
    scope: int
    proto: int
    type: int
    onlink: bool


@dataclass(frozen=True)
class RuleEntry:
    priority: int
    table: int
    src: IPv4Address | None
    src_len: int
    dst: IPv4Address | None
    dst_len: int


@dataclass(frozen=True)
class NeighEntry:
    index: int
    ip: IPv4Address
    mac: str | None
    state: int


@dataclass(frozen=True)
class AddrEntry:
    index: int
    ip: IPv4Address
    prefixlen: int


def _attrs(data: bytes, offset: int) -> dict[int, bytes]:
    out = {}
    while offset + 4 <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4: offset + length]
        offset += (length + 3) & ~3
    return out


def _ipv4(raw: bytes | None) -> IPv4Address | None:
    return IPv4Address(raw) if raw is not None and len(raw) == 4 else None


def _fmt_mac(raw: bytes | None) -> str:
    return raw.hex(":") if raw else ""


def _decode_link(p: bytes) -> Link:
    """A link from its message, reading the attributes up to the last of the three it needs (the kernel
    writes about 40; the name and operational state come first, the address about 30th)."""
    _fam, _type, index, flags, _ = _IFINFO.unpack_from(p)
    name, mac, oper = b"", b"", b""
    offset, end, unpack = _IFINFO.size, len(p), _ATTR.unpack_from
    while offset + 4 <= end:
        length, kind = unpack(p, offset)
        if length < 4:
            break
        kind &= 0x3FFF
        if kind == IFLA_IFNAME:
            name = p[offset + 4: offset + length]
        elif kind == IFLA_OPERSTATE:
            oper = p[offset + 4: offset + length]
        elif kind == IFLA_ADDRESS:
            mac = p[offset + 4: offset + length]
            if name and oper:
                break
        offset += (length + 3) & ~3
    return Link(index, name.rstrip(b"\0").decode(), _fmt_mac(mac), bool(flags & IFF_UP), oper == _OPER_UP)


def _decode_route(p: bytes) -> RouteEntry:
    _fam, dst_len, _sl, _tos, table, proto, scope, rtype, flags = _RTMSG.unpack_from(p)
    a = _attrs(p, _RTMSG.size)
    if RTA_TABLE in a:
        (table,) = struct.unpack("=I", a[RTA_TABLE])
    oif = struct.unpack("=I", a[RTA_OIF])[0] if RTA_OIF in a else None
    return RouteEntry(table, _ipv4(a.get(RTA_DST)), dst_len, oif, _ipv4(a.get(RTA_GATEWAY)), scope, proto, rtype,
                      bool(flags & RTNH_F_ONLINK))


def _decode_neigh(p: bytes) -> NeighEntry | None:
    _fam, _p1, _p2, index, state, _fl, _t = _NDMSG.unpack_from(p)
    a = _attrs(p, _NDMSG.size)
    ip = _ipv4(a.get(NDA_DST))
    return None if ip is None else NeighEntry(index, ip, _fmt_mac(a.get(NDA_LLADDR)) or None, state)


_threads = threading.local()


def _answer_buffer() -> bytearray:
    """The calling thread's buffer for the kernel's answers, shared by all its sockets. A fresh 64 KiB
    per socket (one per pod's namespace) was zeroed for every pod: 4% of a bring-up's user-space
    instructions, and 64 KiB of caches the kernel's work then found cold. Safe to share because every
    method reads a datagram's answers before it returns (`_messages` copies them out)."""
    buf = getattr(_threads, "buf", None)
    if buf is None:
        buf = _threads.buf = bytearray(1 << 16)  # the kernel's answers are at most 32 KiB each
    return buf


class NetlinkSocket:
    """A NETLINK_ROUTE socket, opened in the calling thread's namespace (enter one first to aim it).
    Used from one thread at a time (the answers are read into that thread's buffer)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind((0, 0))
        self.seq = 0
        self._buf = _answer_buffer()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _seqs(self, count: int) -> int:
        """The last of `count` new sequence numbers in a row (the first is `count - 1` below it). They are 32
        bits: a socket that lives long enough (an agent up for months) starts again from 1 rather than fail
        to pack the next; the kernel only echoes them."""
        if self.seq + count > SEQ_MAX:
            self.seq = 0
        return self.seq + count

    def _frame(self, req: Request, extra_flags: int) -> tuple[int, bytes]:
        self.seq = self._seqs(1)
        return self.seq, _HDR.pack(_HDR.size + len(req.body), req.type, F_REQUEST | req.flags | extra_flags,
                                   self.seq, 0) + req.body

    def _heads(self, flags: int = 0) -> Iterator[tuple[int, int, int, int, int]]:
        """The messages of one datagram from the kernel, read into the thread's buffer (a fresh 1 MiB
        bytes object per read would cost an mmap and an munmap each): (type, flags, sequence, payload
        offset, payload end) each, the payload left in `self._buf`. The caller reads them before it does
        anything else with netlink: the next read, by any socket of the thread, overwrites them."""
        self._buf = buf = _answer_buffer()  # the thread's: a socket may be used by several in turn
        size = self.sock.recv_into(buf, 0, flags | _MSG_TRUNC)
        if size > len(buf):
            raise NetlinkError(errno_mod.EMSGSIZE, f"a netlink answer of {size} bytes")
        offset = 0
        while offset + _HDR.size <= size:
            length, mtype, mflags, seq, _ = _HDR.unpack_from(buf, offset)
            if length < _HDR.size:
                break
            yield mtype, mflags, seq, offset + _HDR.size, offset + length
            offset += (length + 3) & ~3

    def _messages(self, flags: int = 0) -> list[tuple[int, int, int, bytes]]:
        """The messages of one datagram, each with a copy of its payload (for dumps, decoded later), all
        copied out before the caller sees any."""
        heads = list(self._heads(flags))
        view = memoryview(self._buf)
        return [(mtype, mflags, seq, bytes(view[start:end])) for mtype, mflags, seq, start, end in heads]

    def apply(self, requests: Iterable[Request], *, ignore: tuple[int, ...] = ()) -> list[NetlinkError]:
        """Send every request in one batch and wait until the kernel has handled them all. Errors whose
        errno is in `ignore` (EEXIST for idempotent adds, ESRCH/ENOENT for deletes of what is gone) are
        dropped; the others are returned, each naming its request.

        Only the last request asks for an ack: the kernel handles a batch in order and answers every
        failure with an error message whether or not an ack was asked for, so when the last one is
        acknowledged every earlier failure is already queued. One answer per batch, not one per request.
        Requests are numbered in order, so an answer's sequence number says which request it is about."""
        reqs = requests if isinstance(requests, list) else list(requests)
        if not reqs:
            return []
        last = self.seq = self._seqs(len(reqs))
        first = last - len(reqs) + 1
        pack = _HDR.pack
        frames = [pack(_HDR.size + len(r.body), r.type, F_REQUEST | r.flags, seq, 0) + r.body
                  for seq, r in enumerate(reqs[:-1], first)]
        r = reqs[-1]
        frames.append(pack(_HDR.size + len(r.body), r.type, F_REQUEST | r.flags | F_ACK, last, 0) + r.body)
        self._send(frames)
        errors = []
        while True:
            try:
                for mtype, _flags, seq, start, _end in self._heads():
                    if mtype == NLMSG_ERROR and first <= seq <= last:
                        (code,) = _I32.unpack_from(self._buf, start)
                        if code and -code not in ignore:
                            errors.append(NetlinkError(-code, reqs[seq - first].what, seq - first))
                        if seq == last:
                            return errors
            except OSError as err:
                if err.errno != errno_mod.ENOBUFS:
                    raise
                # the kernel's answers overflowed the receive buffer and some were dropped: which requests
                # failed is unknown. What is still queued of the batch is read away (the kernel handled it
                # all inside the send), so that no later call takes it for its own.
                self._drain()
                raise NetlinkError(errno_mod.ENOBUFS, f"the answers to a batch of {len(reqs)} requests (the "
                                   f"first: {reqs[0].what}) overflowed the socket's buffer and some were lost; "
                                   "read the kernel's state back to see what was done") from None

    def _drain(self) -> None:
        """Read away every answer queued on the socket, without waiting."""
        while True:
            try:
                self._messages(_MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno != errno_mod.ENOBUFS:  # said once; what follows it is still to be read
                    raise

    def _send(self, frames: list[bytes]) -> None:
        """The frames in as few sends as the socket takes: the kernel reads one message per sendmsg chunk
        in order; chunks stay under the socket buffer."""
        data = b"".join(frames)
        if len(data) <= _CHUNK:
            self.sock.send(data)
            return
        chunk: list[bytes] = []
        size = 0
        for frame in frames:
            if size + len(frame) > _CHUNK and chunk:
                self.sock.send(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(frame)
            size += len(frame)
        self.sock.send(b"".join(chunk))

    def queued_errors(self) -> list[NetlinkError]:
        """The errors the kernel has queued for requests sent without acks (`encode`, which numbers them all
        0), without waiting: the kernel handles a request inside the send, so every answer is queued when the
        send returns."""
        errors = []
        while True:
            try:
                messages = self._messages(_MSG_DONTWAIT)
            except BlockingIOError:
                return errors
            for mtype, _flags, _seq, payload in messages:
                if mtype == NLMSG_ERROR:
                    (code,) = _I32.unpack_from(payload)
                    if code:
                        errors.append(NetlinkError(-code, "a request sent without an ack"))

    def check(self, requests: Iterable[Request], *, ignore: tuple[int, ...] = ()) -> None:
        """`apply`, raising the first error."""
        errors = self.apply(requests, ignore=ignore)
        if errors:
            raise errors[0]

    def _dump(self, mtype: int, body: bytes, absent_ok: bool = False) -> list[tuple[int, bytes]]:
        """The messages of one dump; with `absent_ok`, a dump the kernel refuses with ENOENT (a table the
        namespace does not have) is an empty one, without raising and catching an exception for it. A dump
        the kernel marks interrupted (NLM_F_DUMP_INTR: the table changed while it was read) is read again,
        as iproute2 and libmnl's users do: a plan made from it could miss a link or see one twice."""
        for _ in range(DUMP_TRIES):
            messages, interrupted = self._dump_once(mtype, body, absent_ok)
            if not interrupted:
                return messages
        raise NetlinkError(errno_mod.EAGAIN, f"dump {mtype}: interrupted by changes {DUMP_TRIES} times in a row")

    def _dump_once(self, mtype: int, body: bytes, absent_ok: bool) -> tuple[list[tuple[int, bytes]], bool]:
        seq, frame = self._frame(Request(mtype, F_DUMP, body, "dump"), 0)
        self.sock.send(frame)
        out: list[tuple[int, bytes]] = []
        interrupted = False
        while True:
            for rtype, flags, rseq, payload in self._messages():
                if rseq != seq:
                    continue
                interrupted = interrupted or bool(flags & F_DUMP_INTR)
                if rtype == NLMSG_DONE:
                    # a dump that failed on its way says so here (an int, the negative errno)
                    code = _I32.unpack_from(payload)[0] if len(payload) >= 4 else 0
                elif rtype == NLMSG_ERROR:
                    (code,) = _I32.unpack_from(payload)
                else:
                    out.append((rtype, payload))
                    continue
                if code < 0 and not (absent_ok and code == -errno_mod.ENOENT):
                    raise NetlinkError(-code, f"dump {mtype}")
                return out, interrupted

    def links(self) -> list[Link]:
        body = _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0) + _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        return [_decode_link(p) for _, p in self._dump(RTM_GETLINK, body)]

    def _ask(self, req: Request) -> bytes | None:
        """One request, one answer (not a dump): the answer's payload; None for ENODEV/ESRCH."""
        seq, frame = self._frame(req, 0)
        self.sock.send(frame)
        while True:
            for mtype, _flags, rseq, p in self._messages():
                if rseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    (code,) = _I32.unpack_from(p)
                    if -code in (errno_mod.ENODEV, errno_mod.ESRCH):
                        return None
                    raise NetlinkError(-code, req.what)
                return p

    def link(self, ifname: str) -> Link | None:
        """One link by name (a single request, not a dump); None if there is none."""
        p = self._ask(link_get(ifname))
        return None if p is None else _decode_link(p)

    def oper_up(self, ifname: str) -> bool | None:
        """Whether link `ifname` is operationally up; None if there is none. The same request as `link`
        (the kernel readies the link while answering), with the answer read only up to its operational
        state, the third of some forty attributes: the MAC comes about thirtieth."""
        p = self._ask(link_get(ifname))
        if p is None:
            return None
        offset, end, unpack = _IFINFO.size, len(p), _ATTR.unpack_from
        while offset + 4 <= end:
            length, kind = unpack(p, offset)
            if length < 4:
                break
            if kind & 0x3FFF == IFLA_OPERSTATE:
                return p[offset + 4: offset + length] == _OPER_UP
            offset += (length + 3) & ~3
        return False

    def addresses(self) -> list[AddrEntry]:
        out = []
        for _, p in self._dump(RTM_GETADDR, _IFADDR.pack(AF_INET, 0, 0, 0, 0)):
            _fam, plen, _f, _scope, index = _IFADDR.unpack_from(p)
            a = _attrs(p, _IFADDR.size)
            ip = _ipv4(a.get(IFA_LOCAL) or a.get(IFA_ADDRESS))
            if ip is not None:
                out.append(AddrEntry(index, ip, plen))
        return out

    def routes(self, table: int | None = None) -> list[RouteEntry]:
        """Every IPv4 route, or only those of `table` (none if the namespace has no such table, as a
        fresh pod's has no main table: its only routes are its local table's three for `lo`). The kernel
        filters when the socket asks for strict checking of dump requests, which it does for that request
        only; a kernel without strict checking (before 4.20) sends every route, filtered here."""
        every = _RTMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        if table is None:
            return [_decode_route(p) for _, p in self._dump(RTM_GETROUTE, every)]
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        except OSError:
            return [r for r in (_decode_route(p) for _, p in self._dump(RTM_GETROUTE, every)) if r.table == table]
        try:
            return [_decode_route(p) for _, p in self._dump(RTM_GETROUTE, every + _u32(RTA_TABLE, table),
                                                            absent_ok=True)]
        finally:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 0)

    def route_get(self, dst: IPv4Address, src: IPv4Address | None = None, iif: int | None = None) -> RouteEntry:
        """The kernel's own routing decision for a packet (`ip route get`): which table, which link."""
        body = _RTMSG.pack(AF_INET, 32, 32 if src else 0, 0, 0, 0, 0, 0, RTM_F_LOOKUP_TABLE) + _ip(RTA_DST, dst)
        if src is not None:
            body += _ip(RTA_SRC, src)
        if iif is not None:
            body += _u32(RTA_IIF, iif)
        p = self._ask(Request(RTM_GETROUTE, 0, body, f"route get {dst} from {src}"))
        if p is None:
            raise NetlinkError(errno_mod.ENODEV, f"route get {dst} from {src}: no such input link")
        return _decode_route(p)

    def rules(self) -> list[RuleEntry]:
        out = []
        for _, p in self._dump(RTM_GETRULE, _RTMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
            _fam, dst_len, src_len, _tos, table, _r1, _r2, _act, _fl = _RTMSG.unpack_from(p)
            a = _attrs(p, _RTMSG.size)
            if FRA_TABLE in a:
                (table,) = struct.unpack("=I", a[FRA_TABLE])
            prio = struct.unpack("=I", a[FRA_PRIORITY])[0] if FRA_PRIORITY in a else 0
            out.append(RuleEntry(prio, table, _ipv4(a.get(FRA_SRC)), src_len, _ipv4(a.get(FRA_DST)), dst_len))
        return out

    def neighbours(self) -> list[NeighEntry]:
        """Every IPv4 neighbour of this namespace. The kernel keeps one neighbour table for all namespaces
        and a dump walks all of it: with many namespaces, ask for one entry with `neighbour` instead."""
        return [n for n in map(_decode_neigh, (p for _, p in self._dump(
            RTM_GETNEIGH, _NDMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0)))) if n is not None]

    def neighbour(self, index: int, ip: IPv4Address) -> NeighEntry | None:
        """One neighbour entry (a hash lookup, `ip neigh get`); None if there is none."""
        body = _NDMSG.pack(AF_INET, 0, 0, index, 0, 0, 0) + _ip(NDA_DST, ip)
        try:
            p = self._ask(Request(RTM_GETNEIGH, 0, body, f"get neighbour {ip} on link {index}"))
        except NetlinkError as err:
            if err.errno == errno_mod.ENOENT:
                return None
            raise
        return None if p is None else _decode_neigh(p)


IGNORE_EXISTS = (errno_mod.EEXIST,)
IGNORE_GONE = (errno_mod.ENOENT, errno_mod.ESRCH, errno_mod.ENODEV, errno_mod.EADDRNOTAVAIL)
