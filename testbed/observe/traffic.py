"""Packet probes that prove where traffic goes, from what is seen on the wire (not from the plan).

A probe sends one UDP datagram with a unique token from a pod or VPC host, using a kernel socket opened in
its namespace, and echoes it back from the destination. Raw AF_PACKET sockets in the fabric and in the
nodes on the way record every frame that carries the token (decoded with scapy); the kernel's own route
lookup names the table the rule selected; the reverse-path-filter counters and ICMP errors say why a
packet was dropped. All traffic stays between the run's namespaces: the fabric has no way out.
"""
from __future__ import annotations

import contextlib
import secrets
import select
import selectors
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eni_core import netlink as nl
from eni_core import netns
from eni_core.ops import MAIN_TABLE
from testbed.errors import UsageError
from testbed.world.backends import packet_backend
from testbed.world.backends.netns import eni_port_name
from testbed.world.pods import PodPhase

if TYPE_CHECKING:
    from testbed.world.cluster import Cluster

__all__ = ["Endpoint", "Trace", "TraceError", "matrix", "probe", "resolve"]

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
PROBE_PORT = 30_999
SO_RCVBUFFORCE = 33
DRAIN_EVERY = 64  # matrix: sources whose datagrams a listener's default receive buffer surely holds


class TraceError(AssertionError):
    """A trace did not show what a test expected; the message has the whole trace."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    ip: IPv4Address
    ns: str | None  # None: an address with nobody behind it
    node: str | None = None
    veth: str | None = None
    kind: str = "ip"


@dataclass
class Trace:
    src: str
    dst: str
    src_ip: str
    dst_ip: str
    delivered: bool = False
    egress: str | None = None  # the ENI (ifname on the source node) the packet left by, seen at the fabric
    table: int | None = None  # the table the kernel's rule lookup selected on the source node
    reply: bool = False
    reply_via: str | None = None  # where the reply entered the source node
    dropped_at: str | None = None
    reason: str | None = None
    via: str | None = None
    hops: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _fail(self, what: str) -> None:
        raise TraceError(f"{what}\n{self.explain()}")

    def assert_delivered(self, *, reply: bool = True) -> Trace:
        if not self.delivered or (reply and not self.reply):
            self._fail(f"{self.src} -> {self.dst} was not {'answered' if self.delivered else 'delivered'}")
        return self

    def assert_egress(self, ifname: str, table: int | None = None) -> Trace:
        if self.egress != ifname or (table is not None and self.table != table):
            self._fail(f"expected egress {ifname} (table {table}), saw {self.egress} (table {self.table})")
        return self

    def assert_dropped(self, reason: str | None = None, at: str | None = None) -> Trace:
        if self.delivered or (reason and reason not in (self.reason or "")) or (at and self.dropped_at != at):
            self._fail(f"expected a drop ({reason or 'any reason'}{' at ' + at if at else ''})")
        return self

    def explain(self) -> str:
        verdict = "delivered" if self.delivered else f"DROPPED at {self.dropped_at}: {self.reason}"
        lines = [f"{self.src} ({self.src_ip}) -> {self.dst} ({self.dst_ip}): {verdict}"
                 + (f", reply {'via ' + self.reply_via if self.reply_via else 'seen'}" if self.reply else "")]
        if self.table is not None:
            how = "main: the pod rule sends it straight to the local pod" if self.table == MAIN_TABLE else (
                f"egress {self.egress or '?'}")
            lines.append(f"  rule lookup: table {self.table}, {how}")
        lines += [f"  {h['at']}: {h['dir']} {h['dev']} ({h['what']})" for h in self.hops]
        return "\n".join(lines)


def resolve(cluster: Cluster, target: str) -> Endpoint:
    """A pod name, a VPC host name, or an IP address (a pod's or host's IP resolves to it)."""
    backend = cluster.backend
    pod = cluster.pods.get(target)
    if pod is not None:
        if pod.phase != PodPhase.RUNNING:
            raise UsageError(f"pod {target} is {pod.phase}; it has no IP to probe with")
        return Endpoint(target, pod.ip, pod.extra.get("netns"), pod.node, pod.extra.get("veth"), "pod")
    hosts = backend.hosts
    if target in hosts:
        ns, ip = hosts[target]
        return Endpoint(target, ip, ns, kind="host")
    try:
        ip = IPv4Address(target)
    except ValueError:
        raise UsageError(f"{target!r} is no pod, VPC host or IP address of this cluster") from None
    for p in cluster.pods.values():
        if p.ip == ip and p.phase == PodPhase.RUNNING:
            return resolve(cluster, p.name)
    for name, (ns, hip) in hosts.items():
        if hip == ip:
            return Endpoint(name, ip, ns, kind="host")
    return Endpoint(str(ip), ip, None)


def _socket_in(ns: str, kind: int, proto: int = 0) -> socket.socket:
    with netns.entered(ns):
        return socket.socket(socket.AF_PACKET if kind == socket.SOCK_RAW else socket.AF_INET, kind, proto)


class _Capture:
    """Every frame seen in one namespace that carries the token or is an ICMP error, with its device."""

    def __init__(self, ns: str, label: str) -> None:
        self.label = label
        self.sock = _socket_in(ns, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.settimeout(0.02)
        self.frames: list[tuple[str, int, bytes]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.frames.append((addr[0], addr[2], data))

    def close(self) -> list[tuple[str, int, bytes]]:
        self.stop.set()
        self.thread.join()
        self.sock.close()
        return self.frames


def _rp_drops(ns: str) -> int:
    with netns.entered(ns):
        lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            fields = dict(zip(head.split()[1:], values.split()[1:], strict=False))
            return int(fields.get("IPReversePathFilter", 0))
    return 0


class _Via:
    """Steer the probe's packets at the fabric into a node's primary ENI (eth0), as a VPC route entry or
    a node-targeted load balancer would: the path on which the reverse-path filter bites."""

    TABLE, PRIORITY = 150, 100

    def __init__(self, backend, node: str, src: IPv4Address, dst: IPv4Address) -> None:
        n = backend.nodes[node]
        peer = next(link for link in backend.fabric.links() if link.ifname == f"n{n.index}p")
        mac = next(link.mac for link in n.kernel.links() if link.ifname == "eth0")
        self.fabric = backend.fabric
        self.reqs = [nl.route_msg(True, table=self.TABLE, dst=dst, dst_len=32, oif=peer.index, scope=nl.RT_SCOPE_LINK),
                     nl.neigh_add(peer.index, dst, mac),
                     nl.rule_msg(True, priority=self.PRIORITY, table=self.TABLE, src=src, src_len=32, dst=dst,
                                 dst_len=32)]
        self.undo = [nl.rule_msg(False, priority=self.PRIORITY, table=self.TABLE, src=src, src_len=32, dst=dst,
                                 dst_len=32),
                     nl.route_msg(False, table=self.TABLE, dst=dst, dst_len=32, oif=peer.index, scope=nl.RT_SCOPE_LINK),
                     nl.neigh_del(peer.index, dst)]
        # the neighbour entry for dst on that peer would shadow normal delivery; restore it afterwards
        self.restore = [e for e in self.fabric.neighbours() if e.index == peer.index and e.ip == dst]

    def __enter__(self) -> _Via:
        self.fabric.check(self.reqs)
        return self

    def __exit__(self, *exc) -> None:
        self.fabric.apply(self.undo)
        self.fabric.apply([nl.neigh_add(e.index, e.ip, e.mac) for e in self.restore if e.mac])


def probe(cluster: Cluster, src: str, dst: str, *, via: str | None = None, timeout: float = 0.5) -> Trace:
    """Send one traced datagram from `src` to `dst` (pods, hosts, IPs) and say what happened to it."""
    backend = packet_backend(cluster.backend, "a probe")
    a, b = resolve(cluster, src), resolve(cluster, dst)
    if a.ns is None:
        raise UsageError(f"a probe starts at a pod or a VPC host, not at {src}")
    if via is not None and via not in backend.nodes:
        raise UsageError(f"via: unknown node {via!r}")
    trace = Trace(a.name, b.name, str(a.ip), str(b.ip), via=via)
    token = b"enilab-probe-" + secrets.token_hex(8).encode()
    nodes = [n for n in dict.fromkeys([a.node, b.node, via]) if n]
    caps = {"fabric": _Capture(backend.fabric_ns, "fabric")}
    caps.update({n: _Capture(backend.nodes[n].ns, n) for n in nodes})
    rp_before = {n: _rp_drops(backend.nodes[n].ns) for n in nodes}
    if a.node:
        kernel = backend.nodes[a.node].kernel
        links = {link.ifname: link.index for link in kernel.links()}
        with contextlib.suppress(OSError):
            trace.table = kernel.route_get(b.ip, src=a.ip, iif=links.get(a.veth)).table
    try:
        sport = _exchange(backend, trace, a, b, via, token, timeout)
    finally:
        frames = {label: cap.close() for label, cap in caps.items()}
    icmp_errors = _read_frames(trace, frames, _device_names(cluster), a, token, sport)
    if not trace.delivered and trace.dropped_at is None:
        _explain_drop(cluster, trace, a, b, nodes, rp_before, icmp_errors)
    return trace


def _exchange(backend, trace: Trace, a: Endpoint, b: Endpoint, via: str | None, token: bytes,
              timeout: float) -> int:
    """Send `token` from `a` to `b` (steered into `via`'s eth0 if given); `b`, if it has a namespace,
    echoes it back. Marks the trace delivered, replied or not sent; returns the sender's port."""
    server = client = None
    try:
        if b.ns is not None:
            server = _socket_in(b.ns, socket.SOCK_DGRAM)
            server.bind((str(b.ip), PROBE_PORT))
        client = _socket_in(a.ns, socket.SOCK_DGRAM)
        client.bind((str(a.ip), 0))
        sport = client.getsockname()[1]
        with _Via(backend, via, a.ip, b.ip) if via else contextlib.nullcontext():
            try:
                client.sendto(token, (str(b.ip), PROBE_PORT))
            except OSError as err:
                trace.dropped_at, trace.reason = a.name, f"the source could not send: {err.strerror}"
            deadline = time.monotonic() + timeout
            if server is not None and trace.dropped_at is None:
                ready, _, _ = select.select([server], [], [], timeout)
                if ready:
                    data, peer = server.recvfrom(2048)
                    trace.delivered = data == token
                    server.sendto(token, peer)
            if trace.delivered:
                ready, _, _ = select.select([client], [], [], max(0.05, deadline - time.monotonic()))
                if ready:
                    trace.reply = client.recv(2048) == token
            time.sleep(0.02)  # let the capture threads read the last frames
        return sport
    finally:
        for sock in (client, server):
            if sock is not None:
                sock.close()


def _read_frames(trace: Trace, frames: dict[str, list[tuple[str, int, bytes]]], names: dict[tuple[str, str], str],
                 a: Endpoint, token: bytes, sport: int) -> list[tuple[str, str, int, int, str]]:
    """The captured frames that carry the token become the trace's hops (and its egress ENI and the
    reply's way in); ICMP errors about the probe are returned for `_explain_drop`."""
    from scapy.layers.inet import ICMP, IP, UDP, UDPerror
    from scapy.layers.l2 import Ether

    icmp_errors = []
    for label, seen in frames.items():
        for dev, pkttype, raw in seen:
            pkt = Ether(raw)
            if IP not in pkt:
                continue
            ip = pkt[IP]
            if ICMP in pkt and UDPerror in pkt and pkt[UDPerror].sport == sport and ip.dst == str(a.ip):
                icmp_errors.append((label, dev, pkt[ICMP].type, pkt[ICMP].code, ip.src))
                continue
            if UDP not in pkt or bytes(pkt[UDP].payload) != token:
                continue
            forward = ip.src == str(a.ip)
            direction = "out" if pkttype == PACKET_OUTGOING else "in"
            where = names.get((label, dev), dev)
            trace.hops.append({"at": label, "dir": direction, "dev": dev, "what": ("request" if forward else "reply")
                               + (f" {where}" if where != dev else "")})
            if label == "fabric" and forward and direction == "in" and a.node and where.startswith(f"{a.node}/"):
                trace.egress = where.split("/", 1)[1]
            if label == a.node and not forward and direction == "in" and dev.startswith("eth"):
                trace.reply_via = dev
    return icmp_errors


def _explain_drop(cluster, trace: Trace, a: Endpoint, b: Endpoint, nodes, rp_before, icmp_errors) -> None:
    backend = cluster.backend
    for n in nodes:
        if _rp_drops(backend.nodes[n].ns) > rp_before[n]:
            kernel = backend.nodes[n].kernel
            entered = next((h["dev"] for h in trace.hops if h["at"] == n and h["dir"] == "in"
                            and h["what"].startswith("request")), "?")
            reverse = "?"
            with contextlib.suppress(OSError, StopIteration):
                links = kernel.links()
                iif = next(link.index for link in links if link.ifname == b.veth) if b.veth else None
                back = kernel.route_get(a.ip, src=b.ip, iif=iif)  # the reply's way out, as the kernel routes it
                reverse = next((link.ifname for link in links if link.index == back.oif), str(back.oif))
            rp = kernel.read_sysctls(["net.ipv4.conf.all.rp_filter", f"net.ipv4.conf.{entered}.rp_filter"])
            trace.dropped_at = n
            trace.reason = (f"reverse-path filter: the packet entered {n} by {entered}, but the route back to "
                            f"{a.ip} leaves by {reverse} (rp_filter all={rp.get('net.ipv4.conf.all.rp_filter')}, "
                            f"{entered}={rp.get(f'net.ipv4.conf.{entered}.rp_filter')})")
            return
    for label, _dev, itype, code, origin in icmp_errors:
        if itype == 3:
            subnet = cluster.vpc.subnet_of(b.ip)
            trace.dropped_at = "fabric" if label == "fabric" else label
            if subnet and b.ip not in cluster.vpc.owner:
                trace.reason = (f"{b.ip} is not bound to any ENI in the VPC: the fabric answers unreachable "
                                f"(ICMP type 3 code {code} from {origin})")
            else:
                trace.reason = f"no route to {b.ip} (ICMP type 3 code {code} from {origin})"
            return
    at_fabric = [h for h in trace.hops if h["at"] == "fabric" and h["what"].startswith("request")]
    if not at_fabric:
        trace.dropped_at, trace.reason = a.node or a.name, "the request never reached the VPC fabric"
    elif not any(h["dir"] == "out" for h in at_fabric):
        trace.dropped_at, trace.reason = "fabric", f"no delivery for {b.ip} in the VPC"
    else:
        trace.dropped_at = b.node or b.name
        trace.reason = "nobody answered at the destination" if b.ns is None else "lost after the fabric"


def _device_names(cluster: Cluster) -> dict[tuple[str, str], str]:
    """Fabric peer names -> what they connect to (`node-1/eth1`, `node-2/eth0`, `db-1`)."""
    backend = cluster.backend
    out = {}
    for name, n in backend.nodes.items():
        out[("fabric", f"n{n.index}p")] = f"{name}/eth0"
        for eni in cluster.nodes[name].ipamd.enis:
            out[("fabric", eni_port_name(n.index, eni.device_index))] = f"{name}/eth{eni.device_index}"
    for i, host in enumerate(backend.hosts, 1):
        out[("fabric", f"h{i}")] = host
    return out


def matrix(cluster: Cluster, sources: list[str] | None = None, targets: list[str] | None = None,
           timeout: float = 1.0) -> dict[str, dict[str, bool]]:
    """Every source against every target, one datagram each, in parallel: {src: {dst: delivered}}.

    Sources default to every running pod; targets to every running pod and VPC host. Targets may also be
    IP addresses (released IPs, say): with nobody behind them they are expected to be False.
    """
    backend = packet_backend(cluster.backend, "the connectivity matrix")
    running = [p.name for p in cluster.pods.values() if p.phase == PodPhase.RUNNING]
    srcs = [resolve(cluster, s) for s in (sources or running)]
    dsts = [resolve(cluster, t) for t in (targets or [*running, *backend.hosts])]
    listeners: dict[socket.socket, str] = {}
    selector = selectors.DefaultSelector()  # epoll: listeners beyond select()'s 1,024 descriptors
    result = {s.name: {d.name: False for d in dsts} for s in srcs}

    def drain(wait: float) -> int:
        """Record what the listeners hold, waiting up to `wait` for the first of it; how many were new."""
        new = 0
        for key, _ in selector.select(wait):
            sock = key.fileobj
            while True:
                try:
                    data = sock.recv(512)
                except BlockingIOError:
                    break
                src, _, dst = data.decode().partition("\0")
                if dst == listeners[sock] and src in result and not result[src][dst]:
                    result[src][dst] = True
                    new += 1
        return new

    try:
        for d in dsts:
            if d.ns is not None:
                sock = _socket_in(d.ns, socket.SOCK_DGRAM)
                with contextlib.suppress(OSError):  # room for many sources' datagrams at once, where allowed
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 23)
                sock.bind((str(d.ip), PROBE_PORT))
                sock.setblocking(False)
                listeners[sock] = d.name
                selector.register(sock, selectors.EVENT_READ)
        got = 0
        for i, s in enumerate(srcs, 1):
            # closed once it has sent (its datagrams are on their way): a thousand sources hold no thousand files
            with _socket_in(s.ns, socket.SOCK_DGRAM) as sock:
                sock.bind((str(s.ip), 0))
                for d in dsts:
                    with contextlib.suppress(OSError):
                        sock.sendto(f"{s.name}\0{d.name}".encode(), (str(d.ip), PROBE_PORT))
            if i % DRAIN_EVERY == 0 and listeners:
                # a user namespace may not force a buffer: the default one holds about 200 datagrams
                got += drain(0.0)
        expected = sum(1 for d in dsts if d.ns is not None) * len(srcs)
        deadline = time.monotonic() + timeout
        while got < expected and time.monotonic() < deadline:
            got += drain(max(0.0, deadline - time.monotonic()))
    finally:
        selector.close()
        for sock in listeners:
            sock.close()
    return result
