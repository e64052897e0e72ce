"""Benchmarks on real namespaces (root): bring-up of a cluster and CNI ADD latency, each with its
baseline measured in the same run."""
from __future__ import annotations

import errno
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from eni_core import netlink as nl
from eni_core import netns, routing
from eni_core.kernel import NamespaceKernel, sysctl_path
from eni_core.kernel import encode as encode_op
from eni_core.model import PoolConfig, Subnet, eni_table
from testbed.apps.measure import peak_rss_mb
from testbed.errors import UsageError
from testbed.world.backends import eni_ifindex
from testbed.world.backends.netns import eni_port_name, proxy_delay_key
from testbed.world.pods import PodPhase
from testbed.world.runs import Run
from testbed.world.spec import ClusterSpec, HostSpec, NodeSpec

__all__ = ["bench_bringup", "bench_cni"]


def _spec(nodes: int, pods_per_node: int, min_prebound: int = 5) -> ClusterSpec:
    per_eni = 15
    enis = max(2, -(-(pods_per_node + min_prebound) // per_eni))
    return ClusterSpec(subnets=(Subnet("subnet-a", IPv4Network("10.0.0.0/16")),),
                       hosts=(HostSpec("db-1", "subnet-a", IPv4Address("10.0.255.250")),),
                       nodes=tuple(NodeSpec(f"node-{i}", ("subnet-a",), enis, per_eni) for i in range(1, nodes + 1)),
                       pool=PoolConfig(min_prebound, min_prebound))


def _namespaces_alive() -> int | None:
    """Network namespaces the kernel still holds, dying ones included (slab objects), if readable."""
    try:
        for line in Path("/proc/slabinfo").read_text().splitlines():
            if line.startswith("net_namespace "):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _quiet(limit_s: float = 20.0) -> float:
    """Wait until the kernel has freed the namespaces of earlier runs (a worker does it seconds later,
    mostly waiting on RCU, so an idle CPU does not mean it is done) and the CPU is idle: a measurement
    should not pay for the previous one's teardown. Returns the seconds waited."""
    start = time.monotonic()
    last, still = _namespaces_alive(), 0
    while last is not None and time.monotonic() - start < limit_s and still < 4:
        time.sleep(0.25)
        now = _namespaces_alive()
        still = still + 1 if now is not None and now >= last else 0
        last = now

    def busy() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields) - fields[3] - fields[4], sum(fields)

    while time.monotonic() - start < limit_s:
        b0, t0 = busy()
        time.sleep(0.25)
        b1, t1 = busy()
        if (b1 - b0) / max(t1 - t0, 1) < 0.1:
            break
    return time.monotonic() - start


# -- bring-up: the same kernel objects for every pod, built five ways ----------------------------------
# Per pod: a namespace; a veth (host end in the node, up, with a fixed MAC; `eth0` in the pod); in the pod
# lo and eth0 up, the /32, the link-local gateway's permanent neighbour, a route to it and the default
# route; on the node the /32 route to the veth and the two policy rules; in the fabric the /32 route to
# the node's ENI and a permanent neighbour entry with the ENI's MAC.
# Per ENI the pool hot-plugs while pods come up (it keeps pods + min_prebound addresses bound, so a node
# needs its k-th ENI once that count passes (k - 1) x the ENI's addresses): a veth (`eth<k>` in the node
# with the ENI's MAC and link index, its peer a fabric port), up, its table's default route; in the fabric
# the port up, answering ARP at once (`proxy_delay` 0), and the ENI's primary IP delivered.
# enilab builds them through its real allocator and CNI handler; the comparison builders build exactly
# these, in the same order, on a fabric and nodes with their first ENI made beforehand (untimed), and
# every builder's result is read back from the kernel.

POD_NET = int(IPv4Address("10.64.0.0"))  # node n's pod i: POD_NET + n * 1024 + i + 2
POD_NET_GATEWAY = IPv4Address(POD_NET + 1)  # every ENI table's default route
RTNH_F_ONLINK = 4
PRIMARY_NET = int(IPv4Address("10.72.0.0"))  # node n's k-th ENI's primary IP: PRIMARY_NET + n * 256 + k
SLOW_BUILDER_PODS = 100  # pyroute2 and `ip` per operation are measured on the first pods only
IP_BATCH_MAX_PODS = 2000
ROUNDS = 5  # the floor and enilab, turn about, up to IP_BATCH_MAX_PODS pods (three rounds of one run spanned 1.37-1.54)


@dataclass(frozen=True)
class _EniWiring:
    """One ENI's wiring as the kernel must hold it: the node's end, the fabric's port, its primary IP."""

    node_ns: str
    ifname: str  # in the node
    index: int  # its link index in the node; its table is this + 2000
    mac: str
    port_name: str  # its peer, in the fabric
    port: int  # the peer's link index
    primary: IPv4Address
    gateway: IPv4Address  # its subnet's: its table's default route goes there

    @property
    def table(self) -> int:
        return eni_table(self.index)


@dataclass(frozen=True)
class _PodWiring:
    """One pod's wiring as the kernel must hold it, wherever it was built."""

    ns: str
    node_ns: str
    ip: IPv4Address
    veth: str  # the host end, in the node
    veth_index: int
    mac: str  # the host end's MAC: the pod's gateway neighbour
    eni: _EniWiring  # `from <ip> lookup <its table>`; the fabric delivers the IP to its MAC behind its port
    plug: tuple[_EniWiring, ...] = ()  # the ENIs the pool hot-plugs before this pod comes up

    @property
    def table(self) -> int:
        return self.eni.table


@dataclass
class _Testbed:
    run: Run
    fabric: str
    nodes: list[str]
    pods: list[_PodWiring]
    enis: list[_EniWiring]  # every node's, the first ones (made beforehand) included

    def plugged(self) -> list[_EniWiring]:
        """The ENIs the builders hot-plug (those of the pods to wire), in order."""
        return [eni for p in self.pods for eni in p.plug]


def _cpu_s() -> float:
    """CPU seconds of this process and of its children that have been waited for (user + system)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _slab_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def _node_enis(n: int, ns: str, spec: NodeSpec, nodes: int) -> list[_EniWiring]:
    """Node number `n`'s ENIs as enilab's pool attaches them: `eth<k>` at link index 2 + k (table
    2002 + k), its fabric port numbered after every node's (k-1)-th."""
    return [_EniWiring(ns, f"eth{k}", eni_ifindex(k), f"52:54:00:{k:02x}:{n >> 8:02x}:{n & 0xFF:02x}",
                       eni_port_name(n, k), 10 + (k - 1) * nodes + n, IPv4Address(PRIMARY_NET + n * 256 + k),
                       POD_NET_GATEWAY)
            for k in range(1, spec.max_enis + 1)]


def _enis_needed(pods: int, spec: NodeSpec, pool: PoolConfig) -> int:
    """How many ENIs the pool holds with `pods` pods running on a node: enough for pods + min_prebound
    addresses."""
    return min(spec.max_enis, max(1, -(-(pods + pool.min_prebound) // spec.ips_per_eni)))


def _eni_ops(eni: _EniWiring, fabric_fd: int) -> list[nl.Request]:
    """The node's side of an ENI: the veth into the fabric (made down, as a new NIC is), up, its table's
    default route."""
    return [nl.veth_add(eni.ifname, eni.port_name, fabric_fd, index=eni.index, mac=eni.mac, peer_index=eni.port,
                        up=False),
            nl.link_set(eni.index, up=True),
            nl.route_msg(True, table=eni.table, dst=None, dst_len=0, oif=eni.index, gateway=eni.gateway,
                         onlink=True)]


def _eni_fabric_ops(eni: _EniWiring) -> list[nl.Request]:
    return [nl.link_set(eni.port, up=True),
            nl.route_msg(True, table=nl.RT_TABLE_MAIN, dst=eni.primary, dst_len=32, oif=eni.port,
                         scope=nl.RT_SCOPE_LINK),
            nl.neigh_add(eni.port, eni.primary, eni.mac)]


def _proxy_delay(eni: _EniWiring) -> str:
    return proxy_delay_key(eni.port_name)


def _testbed(nodes: int, pods_per_node: int, pods: int) -> _Testbed:
    """A fabric and `nodes` nodes with their first ENI (eth1, link index 3, table 2003), and the first
    `pods` pods to wire on them, node by node, each with the ENIs the pool hot-plugs before it."""
    spec = _spec(nodes, pods_per_node)
    node_spec = spec.nodes[0]
    run = Run.new()
    bed = _Testbed(run, run.reserve("fabric"), [], [], [])
    netns.create(bed.fabric)
    fabric_fd = os.open(netns.path(bed.fabric), os.O_RDONLY)
    fabric = NamespaceKernel(bed.fabric)
    try:
        for n in range(nodes):
            ns = run.reserve(f"n{n}")
            netns.create(ns)
            bed.nodes.append(ns)
            enis = _node_enis(n, ns, node_spec, nodes)
            node = NamespaceKernel(ns)
            try:
                node.check([nl.link_set(1, up=True), *_eni_ops(enis[0], fabric_fd)])
            finally:
                node.close()
            fabric.check(_eni_fabric_ops(enis[0]))
            fabric.write_sysctl(_proxy_delay(enis[0]), 0)
            held = 1
            for i in range(pods_per_node):
                if len(bed.pods) == pods:
                    break
                needed = _enis_needed(i + 1, node_spec, spec.pool)
                bed.pods.append(_PodWiring(
                    run.reserve(f"p{n}-{i}"), ns, IPv4Address(POD_NET + n * 1024 + i + 2), f"veth{i}",
                    routing.HOST_INDEX_BASE + i, f"02:00:{n >> 8:02x}:{n & 0xFF:02x}:{i >> 8:02x}:{i & 0xFF:02x}",
                    enis[i // node_spec.ips_per_eni], tuple(enis[held:needed])))
                held = max(held, needed)
            bed.enis += enis[:held]
    except BaseException:
        _remove(bed.run)
        raise
    finally:
        fabric.close()
        os.close(fabric_fd)
    return bed


def _remove(run: Run) -> None:
    netns.delete_many(run.namespaces())
    run.unregister()


def _fabric_requests(p: _PodWiring) -> list[nl.Request]:
    return [nl.route_msg(True, table=nl.RT_TABLE_MAIN, dst=p.ip, dst_len=32, oif=p.eni.port, scope=nl.RT_SCOPE_LINK),
            nl.neigh_add(p.eni.port, p.ip, p.eni.mac)]


READY_POD_END = nl.encode([nl.link_get("eth0")])


def _floor(bed: _Testbed) -> Callable[[], None]:
    """The floor: every message encoded beforehand, no acks asked for, one send per namespace and pod.
    The veth is made from inside the new pod namespace with its host end in the node's (one entry into
    the namespace, no descriptor to open for it). Like enilab's ADD, it leaves the pod ready to pass
    traffic: one more message asks for the pod's end, up before its peer, and the kernel readies it
    while answering (`eni_core.ops.settle`); the answer is not read. An ENI is one send to its node and
    one to the fabric, its port's sysctl, and the same readying message for its node end."""
    node_fds = {ns: os.open(netns.path(ns), os.O_RDONLY) for ns in bed.nodes}
    fabric_fd = os.open(netns.path(bed.fabric), os.O_RDONLY)
    blobs = [(p.ns,
              nl.encode([nl.veth_add("eth0", p.veth, node_fds[p.node_ns], index=2, peer_index=p.veth_index,
                                     peer_mac=p.mac), *map(encode_op, routing.plan_pod(2, p.ip, p.mac))]),
              p.node_ns, nl.encode([nl.link_set(p.veth_index, up=True), *map(encode_op, routing.pod_host_ops(
                  routing.PodLink(p.ip, p.eni.index, p.veth_index)))]),
              nl.encode(_fabric_requests(p)),
              [(nl.encode(_eni_ops(eni, fabric_fd)), _proxy_delay(eni), nl.encode(_eni_fabric_ops(eni)),
                nl.encode([nl.link_get(eni.ifname)])) for eni in p.plug]) for p in bed.pods]

    def build() -> None:
        kernels = {ns: NamespaceKernel(ns) for ns in [bed.fabric, *bed.nodes]}
        fabric = kernels[bed.fabric]
        try:
            for pod_ns, pod_blob, node_ns, node_blob, fabric_blob, plugs in blobs:
                for eni_blob, sysctl, eni_fabric_blob, ready_eni_blob in plugs:
                    kernels[node_ns].sock.sock.send(eni_blob)
                    fabric.write_sysctl(sysctl, 0)
                    fabric.sock.sock.send(eni_fabric_blob)
                    kernels[node_ns].sock.sock.send(ready_eni_blob)  # up before its port: readied now
                with netns.creating(pod_ns), nl.NetlinkSocket() as sock:
                    sock.sock.send(pod_blob)
                    errors = sock.queued_errors()
                    kernels[node_ns].sock.sock.send(node_blob)
                    sock.sock.send(READY_POD_END)
                fabric.sock.sock.send(fabric_blob)
                if errors:
                    raise errors[0]
            for kernel in kernels.values():
                errors = kernel.sock.queued_errors()
                if errors:
                    raise errors[0]
        finally:
            for kernel in kernels.values():
                kernel.close()
            for fd in [*node_fds.values(), fabric_fd]:
                os.close(fd)

    return build


def _ip_pod_lines(p: _PodWiring) -> list[str]:
    return ["link set lo up", "link set eth0 up", f"addr add {p.ip}/32 dev eth0",
            f"neigh add {routing.LINK_LOCAL_GATEWAY} lladdr {p.mac} dev eth0 nud permanent",
            f"route add {routing.LINK_LOCAL_GATEWAY} dev eth0 scope link",
            f"route add default via {routing.LINK_LOCAL_GATEWAY} dev eth0"]


def _ip_node_lines(p: _PodWiring) -> list[str]:
    return [f"link add {p.veth} index {p.veth_index} address {p.mac} type veth peer name eth0 netns {p.ns}",
            f"link set {p.veth} up", f"route add {p.ip} dev {p.veth} scope link",
            f"rule add to {p.ip} lookup main priority {routing.PRIO_TO_POD}",
            f"rule add from {p.ip} lookup {p.table} priority {routing.PRIO_FROM_POD}"]


def _ip_fabric_lines(p: _PodWiring) -> list[str]:
    return [f"route add {p.ip} dev {p.eni.port_name} scope link",
            f"neigh add {p.ip} lladdr {p.eni.mac} dev {p.eni.port_name} nud permanent"]


def _ip_eni_node_lines(eni: _EniWiring, fabric: str) -> list[str]:
    return [f"link add {eni.ifname} index {eni.index} address {eni.mac} type veth "
            f"peer name {eni.port_name} index {eni.port} netns {fabric}",
            f"link set {eni.ifname} up",
            f"route add default via {eni.gateway} dev {eni.ifname} onlink table {eni.table}"]


def _ip_eni_fabric_lines(eni: _EniWiring) -> list[str]:
    return [f"link set {eni.port_name} up", f"route add {eni.primary} dev {eni.port_name} scope link",
            f"neigh add {eni.primary} lladdr {eni.mac} dev {eni.port_name} nud permanent"]


def _shell_sysctls(enis: list[_EniWiring]) -> str:
    return "; ".join(f"echo 0 > {sysctl_path(_proxy_delay(eni))}" for eni in enis)


def _ip_batch(bed: _Testbed) -> Callable[[], None]:
    """iproute2 as a shell user would batch it: one `ip -batch` makes every namespace, then one
    `ip -n NS -batch` per node, per pod and for the fabric, and one shell in the fabric sets the new
    ports' sysctls."""
    def batch(ns: str | None, lines: list[str]) -> None:
        subprocess.run(["ip", *(["-n", ns] if ns else []), "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                       check=True, capture_output=True)

    by_node: dict[str, list[str]] = {}
    fabric: list[str] = []
    for p in bed.pods:
        for eni in p.plug:
            by_node.setdefault(p.node_ns, []).extend(_ip_eni_node_lines(eni, bed.fabric))
            fabric += _ip_eni_fabric_lines(eni)
        by_node.setdefault(p.node_ns, []).extend(_ip_node_lines(p))
        fabric += _ip_fabric_lines(p)
    plugged = bed.plugged()

    def build() -> None:
        batch(None, [f"netns add {p.ns}" for p in bed.pods])
        for ns, lines in by_node.items():
            batch(ns, lines)
        if plugged:
            subprocess.run(["ip", "netns", "exec", bed.fabric, "sh", "-ec", _shell_sysctls(plugged)], check=True,
                           capture_output=True)
        for p in bed.pods:
            batch(p.ns, _ip_pod_lines(p))
        batch(bed.fabric, fabric)

    return build


def _ip_per_operation(bed: _Testbed) -> Callable[[], None]:
    """One `ip` process per operation (the Mininet way)."""
    def ip(ns: str, lines: list[str]) -> None:
        for line in lines:
            subprocess.run(["ip", "-n", ns, *line.split()], check=True, capture_output=True)

    def build() -> None:
        for p in bed.pods:
            for eni in p.plug:
                ip(p.node_ns, _ip_eni_node_lines(eni, bed.fabric))
                subprocess.run(["ip", "netns", "exec", bed.fabric, "sh", "-ec", _shell_sysctls([eni])], check=True,
                               capture_output=True)
                ip(bed.fabric, _ip_eni_fabric_lines(eni))
            subprocess.run(["ip", "netns", "add", p.ns], check=True, capture_output=True)
            ip(p.node_ns, _ip_node_lines(p))
            ip(p.ns, _ip_pod_lines(p))
            ip(bed.fabric, _ip_fabric_lines(p))

    return build


def _pyroute2(bed: _Testbed) -> Callable[[], None]:
    """What a Python user would write with pyroute2: `netns.create`, one `IPRoute` kept open per node and
    for the fabric, one per pod while it is wired; `pushns` into the fabric for a new port's sysctl."""
    from pyroute2 import IPRoute
    from pyroute2 import netns as pnetns

    gateway = str(routing.LINK_LOCAL_GATEWAY)

    def build() -> None:
        handles = {ns: IPRoute(netns=ns, flags=0) for ns in [bed.fabric, *bed.nodes]}
        ports: dict[str, int] = {}  # the link index each hot-plugged ENI's fabric port got
        try:
            fabric = handles[bed.fabric]
            for p in bed.pods:
                node = handles[p.node_ns]
                for eni in p.plug:
                    node.link("add", ifname=eni.ifname, kind="veth", index=eni.index, address=eni.mac,
                              peer={"ifname": eni.port_name, "index": eni.port, "net_ns_fd": bed.fabric})
                    node.link("set", index=eni.index, state="up")
                    node.route("add", dst="0.0.0.0/0", gateway=str(eni.gateway), oif=eni.index, table=eni.table,
                               flags=RTNH_F_ONLINK)
                    pnetns.pushns(bed.fabric)
                    try:
                        Path(sysctl_path(_proxy_delay(eni))).write_text("0\n")
                    finally:
                        pnetns.popns()
                    (ports[eni.port_name],) = fabric.link_lookup(ifname=eni.port_name)  # no peer index here
                    port = ports[eni.port_name]
                    fabric.link("set", index=port, state="up")
                    fabric.route("add", dst=f"{eni.primary}/32", oif=port, scope="link")
                    fabric.neigh("add", dst=str(eni.primary), lladdr=eni.mac, ifindex=port, state=nl.NUD_PERMANENT)
                pnetns.create(p.ns)
                node.link("add", ifname=p.veth, kind="veth", index=p.veth_index, address=p.mac,
                          peer={"ifname": "eth0", "net_ns_fd": p.ns})
                (veth,) = node.link_lookup(ifname=p.veth)
                node.link("set", index=veth, state="up")
                node.route("add", dst=f"{p.ip}/32", oif=veth, scope="link")
                node.rule("add", dst=str(p.ip), dst_len=32, table=nl.RT_TABLE_MAIN, priority=routing.PRIO_TO_POD)
                node.rule("add", src=str(p.ip), src_len=32, table=p.table, priority=routing.PRIO_FROM_POD)
                with IPRoute(netns=p.ns, flags=0) as pod:
                    (eth0,) = pod.link_lookup(ifname="eth0")
                    pod.link("set", index=1, state="up")
                    pod.link("set", index=eth0, state="up")
                    pod.addr("add", index=eth0, address=str(p.ip), prefixlen=32)
                    pod.neigh("add", dst=gateway, lladdr=p.mac, ifindex=eth0, state=nl.NUD_PERMANENT)
                    pod.route("add", dst=f"{gateway}/32", oif=eth0, scope="link")
                    pod.route("add", dst="0.0.0.0/0", gateway=gateway, oif=eth0)
                port = ports.get(p.eni.port_name, p.eni.port)
                fabric.route("add", dst=f"{p.ip}/32", oif=port, scope="link")
                fabric.neigh("add", dst=str(p.ip), lladdr=p.eni.mac, ifindex=port, state=nl.NUD_PERMANENT)
        finally:
            for handle in handles.values():
                handle.close()

    return build


BUILDERS: dict[str, Callable[[_Testbed], Callable[[], None]]] = {
    "floor": _floor, "ip_batch": _ip_batch, "pyroute2": _pyroute2, "ip": _ip_per_operation}


def _verify(fabric: str, pods: list[_PodWiring], enis: list[_EniWiring]) -> int:
    """Read every pod's namespace, its node and the fabric back and check the wiring of every pod and
    ENI is all there. Returns the number of pods verified; raises naming the first pod or ENI whose
    wiring is wrong."""
    def read(ns: str, what: Callable[[NamespaceKernel], Any]) -> Any:
        kernel = NamespaceKernel(ns)
        try:
            return what(kernel)
        finally:
            kernel.close()

    # the fabric's ports by name: pyroute2 cannot choose a veth peer's link index
    fabric_links, fabric_routes, fabric_neigh, delays = read(fabric, lambda k: _fabric_view(k, enis))
    by_node: dict[str, tuple[list[_PodWiring], list[_EniWiring]]] = {}
    for p in pods:
        by_node.setdefault(p.node_ns, ([], []))[0].append(p)
    for eni in enis:
        by_node.setdefault(eni.node_ns, ([], []))[1].append(eni)
    verified = 0
    for node_ns, (group, node_enis) in by_node.items():
        links, routes, defaults, rules = read(node_ns, _node_view)
        for eni in node_enis:
            link, port = links.get(eni.ifname), fabric_links.get(eni.port_name)
            missing = [what for what, ok in (
                ("its link up with its MAC and index", link is not None and link.up and link.mac == eni.mac
                 and link.index == eni.index),
                ("its table's default route", (eni.table, eni.index, eni.gateway) in defaults),
                ("the fabric port up", port is not None and port.up),
                ("the fabric port's proxy_delay 0", delays.get(_proxy_delay(eni)) == 0),
                ("its primary IP's fabric route", (eni.primary, eni.port_name) in fabric_routes),
                ("its primary IP's fabric neighbour", fabric_neigh.get((eni.port_name, eni.primary)) == eni.mac),
            ) if not ok]
            if missing:
                raise RuntimeError(f"ENI {eni.ifname} of node namespace {node_ns}: missing {', '.join(missing)}")
        for p in group:
            host = links.get(p.veth)
            missing = [what for what, ok in (
                ("host veth up with its MAC", host is not None and host.up and host.mac == p.mac),
                ("node route", host is not None and (p.ip, host.index) in routes),
                ("rule to the pod", (routing.PRIO_TO_POD, nl.RT_TABLE_MAIN, None, p.ip) in rules),
                ("rule from the pod", (routing.PRIO_FROM_POD, p.table, p.ip, None) in rules),
                ("fabric route", (p.ip, p.eni.port_name) in fabric_routes),
                ("fabric neighbour", fabric_neigh.get((p.eni.port_name, p.ip)) == p.eni.mac),
            ) if not ok]
            missing += read(p.ns, lambda k, p=p: _pod_side_missing(k, p))
            if missing:
                raise RuntimeError(f"pod namespace {p.ns} ({p.ip}): missing {', '.join(missing)}")
            verified += 1
    return verified


def _fabric_view(kernel: NamespaceKernel, enis: list[_EniWiring]) -> tuple[dict[str, nl.Link], set, dict, dict]:
    """The fabric's links by name, its /32 routes and permanent neighbours by port name, the ports'
    proxy_delay."""
    links = {link.ifname: link for link in kernel.links()}
    names = {link.index: name for name, link in links.items()}
    return (links, {(r.dst, names.get(r.oif)) for r in kernel.routes() if r.dst_len == 32},
            {(names.get(n.index), n.ip): n.mac for n in kernel.neighbours() if n.state == nl.NUD_PERMANENT},
            kernel.read_sysctls(map(_proxy_delay, enis)))


def _node_view(kernel: NamespaceKernel) -> tuple[dict[str, nl.Link], set, set, set]:
    """A node's links by name, main-table /32 routes, default routes of every table and rules."""
    routes = kernel.routes()
    return ({link.ifname: link for link in kernel.links()},
            {(r.dst, r.oif) for r in routes if r.table == nl.RT_TABLE_MAIN and r.dst_len == 32},
            {(r.table, r.oif, r.gateway) for r in routes if r.dst_len == 0},
            {(r.priority, r.table, r.src, r.dst) for r in kernel.rules()})


def _pod_side_missing(kernel: NamespaceKernel, p: _PodWiring) -> list[str]:
    links = {link.ifname: link for link in kernel.links()}
    eth0, lo = links.get("eth0"), links.get("lo")
    if eth0 is None:
        return ["eth0"]
    gateway = routing.LINK_LOCAL_GATEWAY
    routes = {(r.dst, r.gateway, r.oif) for r in kernel.routes() if r.table == nl.RT_TABLE_MAIN}
    neighbour = kernel.neighbour(eth0.index, gateway)  # not a dump: the kernel's table holds every namespace's
    return [what for what, ok in (
        ("lo and eth0 up", eth0.up and lo is not None and lo.up),
        ("the pod's address", any(a.index == eth0.index and a.ip == p.ip and a.prefixlen == 32
                                  for a in kernel.addresses())),
        ("the gateway's neighbour", neighbour is not None and neighbour.mac == p.mac
         and neighbour.state == nl.NUD_PERMANENT),
        ("the gateway route", (gateway, None, eth0.index) in routes),
        ("the default route", (None, gateway, eth0.index) in routes),
    ) if not ok]


def _measure_builder(name: str, nodes: int, pods_per_node: int, pods: int, settle_s: float) -> dict[str, Any]:
    waited = _quiet(settle_s)
    bed = _testbed(nodes, pods_per_node, pods)
    try:
        build = BUILDERS[name](bed)
        c0, w0 = _cpu_s(), time.perf_counter()
        build()
        cpu, wall = _cpu_s() - c0, time.perf_counter() - w0
        verified = _verify(bed.fabric, bed.pods, bed.enis)
    finally:
        _remove(bed.run)
    return {"pods": pods, "cpu_ms_per_pod": round(cpu / pods * 1000, 3),
            "wall_ms_per_pod": round(wall / pods * 1000, 3), "verified": verified, "enis_plugged": len(bed.plugged()),
            "waited_for_kernel_s": round(waited, 1)}


def _enilab_wiring(cluster) -> tuple[list[_PodWiring], list[_EniWiring]]:
    """The wiring enilab's pods and ENIs must have, from the cluster's own records (the kernel is read
    later)."""
    backend = cluster.backend
    gateways = {subnet.id: subnet.gateway for subnet in cluster.spec.subnets}
    enis = {}
    for eni_id, (n, port, mac) in backend.eni_where.items():
        node = cluster.nodes[n.name]
        eni = node.ipamd.store.enis[eni_id]
        enis[eni_id] = _EniWiring(n.ns, eni.ifname, node.ifindex[eni_id], mac, eni_port_name(n.index, eni.device_index),
                                  port, IPv4Address(eni.primary_ip), gateways[eni.subnet_id])
    pods = []
    for pod in cluster.pods.values():
        if pod.phase != PodPhase.RUNNING:
            continue
        node_name, ns = backend.pods[pod.name]
        pods.append(_PodWiring(ns, backend.nodes[node_name].ns, IPv4Address(pod.ip), routing.host_veth_name(pod.name),
                               0, routing.host_veth_mac(pod.name), enis[pod.eni_id]))
    return pods, list(enis.values())


def _reach_sample(cluster, size: int, seed: int = 17) -> list[str]:
    """Every pod when there are at most `size`; otherwise each node's first and last pod (the first
    and the last ENI's) and a seeded random draw of the rest, `size` in all."""
    by_node: dict[str, list[str]] = {}
    for pod in cluster.pods.values():
        if pod.phase == PodPhase.RUNNING:
            by_node.setdefault(pod.node, []).append(pod.name)
    every = [p for names in by_node.values() for p in names]
    if len(every) <= size:
        return every
    chosen = {p for names in by_node.values() for p in (names[0], names[-1])}
    rest = [p for p in every if p not in chosen]
    chosen.update(random.Random(seed).sample(rest, max(0, size - len(chosen))))
    return sorted(chosen)


SCALE_REFERENCE_PODS = 500  # a large bring-up's per-pod CPU is compared with that of its first 500 pods


def _measure_enilab(nodes: int, pods_per_node: int, reach_sample: int) -> dict[str, Any]:
    """enilab's own bring-up through its allocator and CNI handler, node by node; every pod read back from
    the kernel, a sample of them sending a datagram to db-1; then the teardown."""
    from testbed.observe.traffic import matrix
    from testbed.world.backends.netns import NetnsBackend
    from testbed.world.cluster import Cluster

    pods = nodes * pods_per_node
    slab0 = _slab_kb()
    backend = NetnsBackend()
    try:
        t0 = time.perf_counter()
        cluster = Cluster(_spec(nodes, pods_per_node), backend=backend)
        setup = time.perf_counter() - t0
        enis = len(backend.eni_where)
        c0, t0 = _cpu_s(), time.perf_counter()
        first: tuple[int, float] | None = None  # (pods, CPU s) once SCALE_REFERENCE_PODS are up
        for i in range(1, nodes + 1):
            cluster.create_pods(pods_per_node, f"node-{i}")
            if first is None and (i * pods_per_node >= SCALE_REFERENCE_PODS or i == nodes):
                first = (i * pods_per_node, _cpu_s() - c0)
        cpu, wire = _cpu_s() - c0, time.perf_counter() - t0
        enis = len(backend.eni_where) - enis
        slab_kb = _slab_kb() - slab0
        running = sum(p.phase == PodPhase.RUNNING for p in cluster.pods.values())
        t0 = time.perf_counter()
        verified = _verify(cluster.backend.fabric_ns, *_enilab_wiring(cluster))
        sample = _reach_sample(cluster, reach_sample)
        reachable = sum(row["db-1"] for row in matrix(cluster, sources=sample, targets=["db-1"]).values())
        verify = time.perf_counter() - t0
        rss = peak_rss_mb()
    finally:
        c0, t0 = _cpu_s(), time.perf_counter()
        backend.close()
        teardown_cpu, teardown = _cpu_s() - c0, time.perf_counter() - t0
    first_ms = first[1] / first[0] * 1000
    cpu_ms = cpu / pods * 1000
    return {
        "nodes": nodes, "pods": pods, "running": running, "setup_s": round(setup, 3),
        "cpu_ms_per_pod": round(cpu_ms, 3), "wire_ms_per_pod": round(wire / pods * 1000, 3),
        "total_s": round(setup + wire, 3),
        f"cpu_ms_per_pod_first_{SCALE_REFERENCE_PODS}": round(first_ms, 3),
        f"over_first_{SCALE_REFERENCE_PODS}": round(cpu_ms / first_ms, 2) if first_ms else None,
        "verified": verified, "enis_plugged": enis, "reach_sample": len(sample), "reachable": reachable,
        "reach_sample_rule": "every pod up to the sample size; beyond it each node's first and last pod and a "
                             "seeded random draw of the rest",
        "verify_s": round(verify, 3), "teardown_s": round(teardown, 3),
        "teardown_ms_per_pod": round(teardown / pods * 1000, 4),
        "teardown_cpu_ms_per_pod": round(teardown_cpu / pods * 1000, 4),
        "slab_kb_per_pod": round(slab_kb / pods, 1), "peak_rss_mb": round(rss, 1),
    }


def bench_bringup(nodes: int = 10, pods_per_node: int = 50, compare: tuple[str, ...] = tuple(BUILDERS),
                  slow_pods: int = SLOW_BUILDER_PODS, reach_sample: int = 1000,
                  settle_s: float = 20.0, rounds: int | None = None) -> dict[str, Any]:
    """enilab brings `nodes` x `pods_per_node` pods up on namespaces; the same kernel objects are built by
    the floor (pre-encoded messages) and by what users would otherwise write, in the same run, each read
    back from the kernel. Figures are per pod: CPU (user + system, with children) and wall time. Before
    each phase the bench waits up to `settle_s` for the kernel to finish freeing earlier namespaces.

    The floor and enilab are measured `rounds` times, turn about (default: ROUNDS up to IP_BATCH_MAX_PODS
    pods, once above): on a shared machine one pair of figures moves by a fifth from run to run. Every
    round is reported (`rounds`); `over_floor_cpu` is the median of the rounds' ratios, the other figures
    are the first round's."""
    pods = nodes * pods_per_node
    sizes = {"floor": pods, "ip_batch": min(pods, IP_BATCH_MAX_PODS), "pyroute2": min(pods, slow_pods),
             "ip": min(pods, slow_pods)}
    if rounds is None:
        rounds = ROUNDS if pods <= IP_BATCH_MAX_PODS else 1
    if "floor" not in compare:
        rounds = 1
    try:
        builders = {name: _measure_builder(name, nodes, pods_per_node, sizes[name], settle_s) for name in compare}
        waited = _quiet(settle_s)
        result = _measure_enilab(nodes, pods_per_node, reach_sample)
        pairs = [(builders["floor"], result)] if "floor" in builders else []
        for turn in range(1, rounds):
            got: dict[str, dict[str, Any]] = {}
            # turn about: neither of the two always follows the other's teardown
            for what in ("enilab", "floor") if turn % 2 else ("floor", "enilab"):
                if what == "floor":
                    got[what] = _measure_builder("floor", nodes, pods_per_node, pods, settle_s)
                else:
                    waited += _quiet(settle_s)
                    got[what] = _measure_enilab(nodes, pods_per_node, reach_sample)
            pairs.append((got["floor"], got["enilab"]))
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.ENOMEM, errno.EMFILE, errno.ENFILE):
            raise UsageError(f"{pods} pods do not fit on this machine: {err.strerror or err} "
                             "(everything this bench made is removed)") from None
        raise
    result["builders"] = builders
    result["waited_for_kernel_s"] = round(waited + sum(b["waited_for_kernel_s"] for b in builders.values())
                                          + sum(f["waited_for_kernel_s"] for f, _ in pairs[1:]), 1)
    result["cores"] = os.cpu_count()
    for name, b in builders.items():
        result[f"{name}_ms_per_pod"] = b["cpu_ms_per_pod"]
    scaling = result[f"over_first_{SCALE_REFERENCE_PODS}"]
    every_round = [e for _, e in pairs] or [result]
    within = all(e["verified"] == pods and e["reachable"] == e["reach_sample"] for e in every_round) \
        and result["peak_rss_mb"] <= 300 and (scaling is None or scaling <= 1.5)
    if pairs:
        result["rounds"] = [_round(floor, e) for floor, e in pairs]
        ratios = [r["over_floor_cpu"] for r in result["rounds"]]
        # CPU time comes in clock ticks (10 ms): a tiny run can measure 0, and then there is no ratio
        result["over_floor_cpu"] = round(statistics.median(ratios), 2) if None not in ratios else None
        result["over_floor_wall"] = round(statistics.median(r["over_floor_wall"] for r in result["rounds"]), 2)
        within = within and result["over_floor_cpu"] is not None and result["over_floor_cpu"] <= 1.5
    result["targets"] = {"over_floor_cpu": 1.5, "peak_rss_mb": 300, f"over_first_{SCALE_REFERENCE_PODS}": 1.5}
    result["within_target"] = within
    return result


def _round(floor: dict[str, Any], enilab: dict[str, Any]) -> dict[str, Any]:
    """One round's pair of figures and their ratios."""
    return {"floor_cpu_ms_per_pod": floor["cpu_ms_per_pod"], "cpu_ms_per_pod": enilab["cpu_ms_per_pod"],
            "over_floor_cpu": round(enilab["cpu_ms_per_pod"] / floor["cpu_ms_per_pod"], 2)
            if floor["cpu_ms_per_pod"] else None,
            "over_floor_wall": round(enilab["wire_ms_per_pod"] / floor["wall_ms_per_pod"], 2),
            "verified": enilab["verified"], "reachable": enilab["reachable"]}


def _percentiles(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": round(q[49] * 1000, 3), "p99_ms": round(q[98] * 1000, 3), "n": len(samples)}


REFERENCE_PLUGINS = Path("/usr/lib/cni")  # Debian's containernetworking-plugins


def _timed(argv: list[str], env: dict[str, str], body: bytes, host_fd: int) -> float:
    """Run one CNI call as a runtime does (from the runtime's host namespace); its wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, input=body, env=env, capture_output=True, preexec_fn=lambda: netns.setns(host_fd),
                          pass_fds=(host_fd,))
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} ADD failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    return elapsed


class _CniBench:
    """A one-node cluster on namespaces with a warm pool, its agent served on a socket as a registered
    cluster's node would be, the `enilab-cni` executable installed, and Debian's reference plugins if
    present. Each ADD gets a fresh namespace, made before its clock starts; `close` removes everything."""

    def __init__(self, pool: int) -> None:
        from eni_core.cni import install_plugin
        from eni_core.rpc import RpcServer
        from testbed.world.backends.netns import NetnsBackend
        from testbed.world.cluster import Cluster

        self.cluster = Cluster(_spec(1, pool, min_prebound=pool + 5), backend=NetnsBackend())
        self.backend = self.cluster.backend
        self.agent = self.backend.agent_for("node-1")
        self.folder = Path(tempfile.mkdtemp(prefix="enilab-bench-"))
        self.servers: list[RpcServer] = []
        self.made: list[str] = []
        try:
            registered = self.folder / "run" / "clusters" / "bench"
            self.servers += [RpcServer(registered / "control.sock", lambda m, p: {"name": "bench"}).start(),
                             RpcServer(registered / "node-1.sock", self.agent.handle).start()]
            self.plugin = install_plugin(str(self.folder / "bin"), sys.executable)
            self.made.append(self.backend.run.netns("host"))
        except BaseException:
            self.close()
            raise
        reference = REFERENCE_PLUGINS / "ptp"
        self.reference = reference if reference.exists() and (REFERENCE_PLUGINS / "host-local").exists() else None

    def new_netns(self, what: str) -> str:
        name = self.backend.run.netns(what)
        self.made.append(name)
        return str(netns.path(name))

    def in_process(self, adds: int) -> list[float]:
        """ADD through the handler the agent runs, called in this process."""
        from eni_core.cni import CniRequest, handle

        conf = {"cniVersion": "1.0.0", "name": "enilab"}
        times = []
        for i in range(adds):
            req = CniRequest("ADD", f"bench-{i}", self.new_netns(f"b{i}"), "eth0", {}, conf)
            t0 = time.perf_counter()
            handle(req, lambda m, **p: self.agent.handle(m, p), self.agent.dataplane)
            times.append(time.perf_counter() - t0)
        return times

    def executables(self, adds: int) -> tuple[list[float], list[float]]:
        """ADD through `enilab-cni` and through the reference `ptp` (if present), turn about, each run as a
        runtime runs it from the host namespace: the wall times of each."""
        body = json.dumps({"cniVersion": "1.0.0", "name": "enilab", "type": "enilab-cni", "cluster": "bench",
                           "node": "node-1"}).encode()
        ref_conf = json.dumps({"cniVersion": "1.0.0", "name": "bench-ref", "type": "ptp", "ipMasq": False,
                               "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/16"}]],
                                        "dataDir": str(self.folder / "host-local")}}).encode()
        executable, ptp = [], []
        host_fd = os.open(netns.path(self.made[0]), os.O_RDONLY)
        try:
            for i in range(adds):
                env = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"exec-{i}",
                       "CNI_NETNS": self.new_netns(f"x{i}"), "CNI_IFNAME": "eth0", "CNI_PATH": str(self.folder / "bin"),
                       "ENILAB_RUN_DIR": str(self.folder / "run")}
                executable.append(_timed([self.plugin], env, body, host_fd))
                if self.reference is not None:
                    env = {**env, "CNI_CONTAINERID": f"ref-{i}", "CNI_NETNS": self.new_netns(f"r{i}"),
                           "CNI_PATH": str(REFERENCE_PLUGINS)}
                    ptp.append(_timed([str(self.reference)], env, ref_conf, host_fd))
        finally:
            os.close(host_fd)
        return executable, ptp

    def close(self) -> None:
        import shutil

        for server in self.servers:
            server.close()
        for ns in self.made:
            netns.delete(ns)
        self.cluster.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _python_start_s(times: int = 5) -> float:
    """The median start of a bare `python -IS -c pass`: the floor of any Python executable."""
    starts = []
    for _ in range(times):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-IS", "-c", "pass"], check=True)
        starts.append(time.perf_counter() - t0)
    return statistics.median(starts)


def bench_cni(adds: int = 300, exec_adds: int = 40) -> dict[str, Any]:
    """ADD latency on a warm pool: in-process (the handler the agent runs), and through the installed
    `enilab-cni` executable as a runtime runs it (env + stdin, from a scratch host namespace, the agent
    found by netconf `cluster`/`node`), against Debian's Go `ptp` + `host-local` run the same way in the
    same run, turn about. The namespace a runtime makes for the pod is made before the clock starts."""
    _quiet()
    bench = _CniBench(adds + exec_adds)
    try:
        in_process = bench.in_process(adds)
        executable, ptp = bench.executables(exec_adds)
        start = _python_start_s()
    finally:
        bench.close()
    inp, exe = _percentiles(in_process), _percentiles(executable)
    ref = {"plugin": "ptp + host-local (Debian containernetworking-plugins)", **_percentiles(ptp)} if ptp else None
    within = inp["p50_ms"] <= 5 and inp["p99_ms"] <= 20 and (ref is None or exe["p50_ms"] <= 2 * ref["p50_ms"])
    return {
        "in_process": inp, "executable": exe, "reference": ref,
        "executable_over_reference": round(exe["p50_ms"] / ref["p50_ms"], 2) if ref else None,
        "bare_python_start_ms": round(start * 1000, 1),
        "baseline": "the reference plugin's ADD, run the same way in the same run; a bare `python -IS -c pass` "
                    "start is the floor of any Python executable",
        "targets": {"in_process_p50_ms": 5, "in_process_p99_ms": 20, "executable_p50_over_reference": 2},
        "within_target": within,
        "cores": os.cpu_count(),
    }


def bench_bringup_containers(nodes: int = 2, pods_per_node: int = 10) -> dict[str, Any]:
    """Bring-up with every pod a container (the containers backend: engine start, image, `enilab-cni` per pod)
    beside the same cluster on the namespaces backend, in the same run; each pod's HTTP answer is checked
    from a VPC host."""
    from testbed.world.backends.containers import ContainersBackend
    from testbed.world.backends.netns import NetnsBackend
    from testbed.world.cluster import Cluster

    pods = nodes * pods_per_node
    figures: dict[str, dict[str, float]] = {}
    verified = 0
    for kind in ("netns", "containers"):
        _quiet()
        t0 = time.perf_counter()
        cluster = Cluster(_spec(nodes, pods_per_node), backend=ContainersBackend() if kind == "containers"
                          else NetnsBackend())
        setup = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            for i in range(1, nodes + 1):
                cluster.create_pods(pods_per_node, f"node-{i}")
            wire = time.perf_counter() - t0
            if kind == "containers":
                verified = sum(cluster.backend.http("db-1", str(p.ip)) == f"{p.name}\n" for p in cluster.pods.values())
        finally:
            t0 = time.perf_counter()
            cluster.close()
            teardown = time.perf_counter() - t0
        figures[kind] = {"setup_s": round(setup, 3), "ms_per_pod": round(wire / pods * 1000, 3),
                         "teardown_s": round(teardown, 3)}
    ratio = figures["containers"]["ms_per_pod"] / figures["netns"]["ms_per_pod"]
    return {"nodes": nodes, "pods": pods, "backend": "containers", "containers": figures["containers"],
            "namespaces": figures["netns"], "verified_http": verified, "containers_over_namespaces": round(ratio, 1),
            "within_target": verified == pods, "cores": os.cpu_count()}
