"""The `netns` backend: real namespaces. One VPC-fabric namespace (the cloud's SDN), one per node, one
per pod, all named with the run's prefix.

A node has `eth0` (its primary ENI) and `eth1`, `eth2`, ... for the secondary ENIs the simulated VPC
attaches: veth pairs whose node end carries the ENI's MAC and the link index the testbed chooses
(`eni_ifindex`), and whose peer sits in the fabric. The fabric delivers every IP the VPC has bound to an
ENI to that ENI (a /32 route and a permanent neighbour entry with the ENI's MAC), answers for every
subnet gateway, and refuses (`unreachable`) every other address of a subnet. Pods are wired by the real
CNI handler, and node routing by the real routing agent (`eni_core.routing.sync`).
"""
from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import weakref
from dataclasses import replace
from ipaddress import IPv4Address

from eni_core import netlink as nl
from eni_core import netns, routing
from eni_core.agent import NodeAgent
from eni_core.cni import CniRequest, Dataplane, handle
from eni_core.datastore import Allocation
from eni_core.kernel import NamespaceKernel, NetlinkPort
from eni_core.model import Eni
from eni_core.ops import SetSysctl, raise_first, settle
from testbed.errors import UsageError
from testbed.world.backends import BackendHost, eni_ifindex
from testbed.world.runs import Run

__all__ = ["NetnsBackend", "require_root"]

FABRIC_LO = 1
CONTROLLER_NETWORK = "enilab-controller"  # the CNI network name of the pods the controller creates


class NotRoot(Exception):
    pass


def require_root(what: str = "the netns backend") -> None:
    if os.geteuid() != 0:
        raise NotRoot(f"{what} needs root (network namespaces); run it as root, or use `enilab simulate`")


def eni_port_name(node_index: int, device_index: int) -> str:
    """The fabric's end of a node's ENI: `n<node>e<device>` (the node's own link is `n<node>p`)."""
    return f"n{node_index}e{device_index}"


def proxy_delay_key(port: str) -> str:
    """The fabric's sysctl that makes a port answer proxied ARP at once."""
    return f"net.ipv4.neigh.{port}.proxy_delay"


class Fabric:
    """The VPC's software-defined network, in a namespace of its own: a port (a veth end) for every node
    NIC, ENI and VPC host; it delivers each IP the VPC has bound to the ENI that holds it (a /32 route and a
    permanent neighbour with the ENI's MAC), answers for every subnet gateway and refuses (`unreachable`)
    every other address of a subnet."""

    def __init__(self, run: Run) -> None:
        self.ns = run.netns("fabric")
        self.kernel = NamespaceKernel(self.ns)
        self.fd = os.open(netns.path(self.ns), os.O_RDONLY | os.O_CLOEXEC)  # where new ports' peers go
        self._last_port = 10
        self.kernel.check([nl.link_set(FABRIC_LO, up=True)])
        self.kernel.write_sysctl("net.ipv4.ip_forward", 1)
        self.kernel.write_sysctl("net.ipv4.conf.all.rp_filter", 0)
        self.kernel.write_sysctl("net.ipv4.conf.default.rp_filter", 0)
        # like a VPC's virtual switch, the fabric answers ARP for every address it delivers
        self.kernel.write_sysctl("net.ipv4.conf.all.proxy_arp", 1)
        self.kernel.write_sysctl("net.ipv4.conf.default.proxy_arp", 1)

    def serve(self, subnets) -> None:
        """Answer for each subnet's gateway, refuse the subnet's other addresses until they are delivered."""
        reqs = []
        for s in subnets:
            reqs.append(nl.addr_add(FABRIC_LO, s.gateway, 32))
            reqs.append(nl.route_msg(True, table=nl.RT_TABLE_MAIN, dst=s.cidr.network_address,
                                     dst_len=s.cidr.prefixlen, rtype=nl.RTN_UNREACHABLE))
        self.kernel.check(reqs)

    def new_port(self) -> int:
        """The link index the next port takes in the fabric."""
        self._last_port += 1
        return self._last_port

    def port_up(self, name: str, index: int) -> None:
        """Bring a port up; it answers proxied ARP at once, as a VPC switch does (Linux waits up to 0.8 s by
        default, and a namespace has no `neigh.default` to change that for all ports)."""
        self.kernel.write_sysctl(proxy_delay_key(name), 0)
        self.kernel.check([nl.link_set(index, up=True)])

    def deliver(self, port: int, mac: str, ips, add: bool) -> None:
        """Deliver `ips` to the ENI with `mac` behind `port` (or stop delivering them)."""
        reqs = []
        for ip in ips:
            if add:
                reqs += [nl.route_msg(True, table=nl.RT_TABLE_MAIN, dst=ip, dst_len=32, oif=port,
                                      scope=nl.RT_SCOPE_LINK), nl.neigh_add(port, ip, mac)]
            else:
                reqs += [nl.route_msg(False, table=nl.RT_TABLE_MAIN, dst=ip, dst_len=32, oif=port,
                                      scope=nl.RT_SCOPE_LINK), nl.neigh_del(port, ip)]
        errors = self.kernel.apply(reqs)
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Close the fabric's socket and file; its namespace goes with the run's (`Run.remove`). Again is a no-op:
        closing the fd number twice could close whatever file took the number in between."""
        if self.fd < 0:
            return
        self.kernel.close()
        os.close(self.fd)
        self.fd = -1


class _Node:
    """A node's namespace: its kernel, its agent once asked for, and the node side of the routing agent."""

    def __init__(self, name: str, index: int, ns: str, kernel: NamespaceKernel) -> None:
        self.name, self.index, self.ns, self.kernel = name, index, ns, kernel
        self.agent: NodeAgent | None = None
        self.pinned: dict[str, int] = {}  # sysctls set by hand (set_sysctl): the agent leaves them be

    def plug_eni(self, fabric: Fabric, eni: Eni) -> tuple[int, int]:
        """Hot-plug the ENI: a veth (down, as a new NIC is) with the ENI's MAC and link index here, its peer
        a fabric port (up). Returns (link index, fabric port)."""
        index, port = eni_ifindex(eni.device_index), fabric.new_port()
        name = eni_port_name(self.index, eni.device_index)
        add = nl.veth_add(eni.ifname, name, fabric.fd,
                          index=index, mac=eni.mac, peer_index=port, up=False)
        for attempt in range(5):
            try:
                self.kernel.check([add])
                break
            except OSError as err:  # a just-freed explicit index can be EBUSY once
                if err.errno != errno.EBUSY or attempt == 4:
                    raise
                time.sleep(0.001 * (attempt + 1))
        fabric.port_up(name, port)
        return index, port

    def sync(self, enis: list[tuple[str, IPv4Address]], pods) -> routing.SyncReport:
        """The routing agent's pass over the whole node: observe, plan, repair."""
        return routing.sync(NetlinkPort(self.kernel), enis, pods, leave=self.pinned)

    def set_up_eni(self, eni: Eni, index: int, gateway: IPv4Address) -> None:
        """What the routing agent's pass does for a hot-plugged ENI that holds no pod yet, without reading
        the rest of the node: its link up, its table's default route, its rp_filter (the plan's, for this
        ENI alone; nothing is deleted, so no other state can be touched). The node-wide sysctls are the
        whole pass's to read and repair: each read of a sysctl file costs tens of microseconds here."""
        port = NetlinkPort(self.kernel)
        desired = replace(routing.plan_node([routing.EniLink(eni.ifname, index, eni.mac, gateway, False)], []),
                          sysctls=routing.eni_sysctls(eni.ifname))
        observed = routing.NodePlan(frozenset(), frozenset(), frozenset(), port.read_sysctls(desired.sysctls))
        ops = [op for op in routing.reconcile(desired, observed)
               if not (isinstance(op, SetSysctl) and op.key in self.pinned)]
        raise_first(port.apply(ops, ignore=()))

    def routing_state(self) -> dict:
        """The node's policy routing as `enilab state` shows it: enilab's rules, its tables, the sysctls."""
        names = {link.index: link.ifname for link in self.kernel.links()}
        return {"rules": [_rule_view(r) for r in sorted(self.kernel.rules(), key=_rule_order)
                          if r.priority in (routing.PRIO_TO_POD, routing.PRIO_FROM_POD)],
                "tables": _tables_view(self.kernel.routes(), names),
                "sysctl": self.kernel.read_sysctls(_STATE_SYSCTLS + [
                    f"net.ipv4.conf.{name}.rp_filter" for name in sorted(names.values())
                    if name.startswith("eth") and name != "eth0"])}


_STATE_SYSCTLS = ["net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter",
                  "net.ipv4.conf.eth0.rp_filter"]


def _rule_order(r: nl.RuleEntry) -> tuple[int, int]:
    return r.priority, int(r.src or r.dst or 0)


def _rule_view(r: nl.RuleEntry) -> dict:
    entry: dict = {"priority": r.priority}
    if r.src is not None:
        entry["from"] = f"{r.src}/{r.src_len}"
    if r.dst is not None:
        entry["to"] = f"{r.dst}/{r.dst_len}"
    entry["table"] = r.table
    return entry


def _tables_view(routes: list[nl.RouteEntry], names: dict[int, str]) -> dict[str, list[dict]]:
    """enilab's routes by table (`main` holds the pods' /32s), the default first, then by address."""
    tables: dict[str, list[dict]] = {}
    for r in routes:
        if r.table == nl.RT_TABLE_MAIN and r.proto == nl.RTPROT_ENILAB:
            key = "main"
        elif r.table in routing.ENI_TABLES:
            key = str(r.table)
        else:
            continue
        route = {"dst": "default" if r.dst is None else f"{r.dst}/{r.dst_len}"}
        if r.gateway is not None:
            route["gateway"] = str(r.gateway)
        route["dev"] = names.get(r.oif, str(r.oif))
        tables.setdefault(key, []).append(route)
    for table in tables.values():
        table.sort(key=lambda r: (r["dst"] != "default", IPv4Address(r["dst"].split("/")[0]) if "/" in r["dst"]
                                  else IPv4Address(0)))
    return dict(sorted(tables.items()))


class NetnsBackend:
    """The backend's hooks over a `Fabric`, a `_Node` per node, and a namespace per pod and VPC host."""

    name = "netns"

    def __init__(self, run: Run | None = None) -> None:
        require_root()
        self.run = run or Run.new()
        self.lock = threading.RLock()
        self.cluster: BackendHost | None = None
        self.nodes: dict[str, _Node] = {}
        self.pods: dict[str, tuple[str, str]] = {}  # pod -> (node, netns name)
        self.hosts: dict[str, tuple[str, IPv4Address]] = {}  # VPC host -> (netns name, IP)
        self.eni_where: dict[str, tuple[_Node, int, str]] = {}  # ENI id -> (node, fabric port, MAC)
        self._node_seq = 0
        self._pod_seq = 0
        self._host_seq = 0
        try:
            self._fabric = Fabric(self.run)
        except BaseException:  # nothing half-built: the namespaces recorded so far, and the record, go
            self.run.remove()
            raise
        # a backend nobody closes (a notebook left running) still cleans up when the interpreter exits
        self._finalizer = weakref.finalize(self, self.run.remove)

    @property
    def fabric(self) -> NamespaceKernel:
        return self._fabric.kernel

    @property
    def fabric_ns(self) -> str:
        return self._fabric.ns

    # -- wiring to the cluster -----------------------------------------------------------------------
    def bind(self, cluster: BackendHost) -> None:
        """Serve the cluster's VPC: gateways, unreachable subnets, and IP delivery as bindings change."""
        self.cluster = cluster
        self._fabric.serve(cluster.spec.subnets)
        cluster.vpc.listeners.append(self._on_binding)
        for host in cluster.spec.hosts:
            self._add_host(host.name, host.ip, cluster.vpc.subnets[host.subnet])

    def _add_host(self, name: str, ip: IPv4Address, subnet) -> None:
        """A VPC instance that is not a node: a namespace with one interface in its subnet."""
        self._host_seq += 1
        ns = self.run.netns(f"h{self._host_seq}")
        port = self._fabric.new_port()
        mac = f"52:54:fe:00:{(self._host_seq >> 8) & 0xFF:02x}:{self._host_seq & 0xFF:02x}"
        kernel = NamespaceKernel(ns)
        try:
            kernel.check([nl.link_set(1, up=True),
                          nl.veth_add("eth0", f"h{self._host_seq}", self._fabric.fd, index=2, mac=mac,
                                      peer_index=port),
                          nl.addr_add(2, ip, subnet.cidr.prefixlen),
                          nl.route_msg(True, table=nl.RT_TABLE_MAIN, dst=None, dst_len=0, oif=2,
                                       gateway=subnet.gateway, proto=nl.RTPROT_STATIC)])
            self._fabric.port_up(f"h{self._host_seq}", port)
            settle(kernel, "eth0")  # up before its port: readied now, not when the kernel gets to it
        finally:
            kernel.close()
        self._fabric.deliver(port, mac, [ip], True)
        self.hosts[name] = (ns, ip)

    def _on_binding(self, what: str, eni_id: str, ips: tuple[IPv4Address, ...]) -> None:
        if what not in ("bind", "unbind"):
            return
        where = self.eni_where.get(eni_id)
        if where is not None:
            self._fabric.deliver(where[1], where[2], ips, what == "bind")

    def redeliver(self) -> int:
        """The SDN is authoritative: re-assert delivery of every IP the VPC has bound (drift in the fabric
        is repaired). Returns how many addresses were re-asserted."""
        count = 0
        for eni_id, (_node, port, mac) in self.eni_where.items():
            eni = self.cluster.vpc.enis.get(eni_id)
            if eni is not None:
                self._fabric.deliver(port, mac, [eni.record.primary_ip, *eni.ips], True)
                count += 1 + len(eni.ips)
        return count

    # -- nodes ---------------------------------------------------------------------------------------
    def add_node(self, node: str) -> None:
        self._node_seq += 1
        ns = self.run.netns(f"n{self._node_seq}")
        n = _Node(node, self._node_seq, ns, NamespaceKernel(ns))
        port = self._fabric.new_port()
        mac = f"52:54:ff:00:{(n.index >> 8) & 0xFF:02x}:{n.index & 0xFF:02x}"
        n.kernel.check([nl.link_set(1, up=True),
                        nl.veth_add("eth0", f"n{n.index}p", self._fabric.fd, index=2, mac=mac, peer_index=port)])
        self._fabric.port_up(f"n{n.index}p", port)
        settle(n.kernel, "eth0")  # up before its port: readied now, not when the kernel gets to it
        self.nodes[node] = n
        self.sync(node)

    def remove_node(self, node: str) -> None:
        n = self.nodes.pop(node, None)
        if n is None:
            return
        for eni_id in [e for e, w in self.eni_where.items() if w[0] is n]:
            del self.eni_where[eni_id]
        n.kernel.close()
        netns.delete(n.ns)

    def agent_for(self, node: str) -> NodeAgent:
        """The node's agent (in-process), which also knows the ENIs' link indexes."""
        n = self.nodes[node]
        if n.agent is None:
            local = self.cluster.local_node(node)
            if local is None:
                raise UsageError(f"node {node}'s agent is a process of its own; ask it over its socket")
            n.agent = NodeAgent(local.ipamd, lock=self.lock, eni_link=local.ifindex.get,
                                dataplane=Dataplane(NetlinkPort(n.kernel)), namespaces=self.owned_namespaces)
        return n.agent

    def owned_namespaces(self) -> dict[tuple[int, int], str]:
        """(st_dev, st_ino) of every namespace this run made, with what it is: a runtime's CNI request
        must never wire one of them."""
        named = {self.fabric_ns: "the VPC fabric"}
        named.update({n.ns: f"node {name}'s namespace" for name, n in self.nodes.items()})
        named.update({ns: f"VPC host {name}" for name, (ns, _) in self.hosts.items()})
        named.update({ns: f"pod {name} of the controller" for name, (_, ns) in self.pods.items()})
        owned = {}
        for ns, what in named.items():
            with contextlib.suppress(OSError):
                st = os.stat(netns.path(ns))
                owned[(st.st_dev, st.st_ino)] = what
        return owned

    def eni_attached(self, node: str, eni: Eni) -> int:
        n = self.nodes[node]
        index, port = n.plug_eni(self._fabric, eni)
        self.eni_where[eni.id] = (n, port, eni.mac)
        self._fabric.deliver(port, eni.mac, [eni.primary_ip, *eni.ips], True)
        # the agent sees the hot-plugged ENI: link up, its table, rp_filter; a pass over the whole node
        # only when pods already name the ENI (an agent restarted with them in its datastore)
        local = self.cluster.local_node(node)
        if local is not None and not any(a.eni_id == eni.id for a in local.ipamd.store.pods.values()):
            n.set_up_eni(eni, index, self._gateways()[eni.subnet_id])
        else:
            self.sync(node)
        if local is not None:  # the port was up before the ENI, now up: readied now, not when the kernel gets to it
            settle(self._fabric.kernel, eni_port_name(n.index, eni.device_index))
        return index

    def eni_detached(self, node: str, eni: Eni) -> None:
        n = self.nodes.get(node)
        self.eni_where.pop(eni.id, None)
        if n is not None:
            n.kernel.apply([nl.link_del(ifname=eni.ifname)])
            self.sync(node)

    # -- pods ----------------------------------------------------------------------------------------
    def _cni(self, command: str, node: str, pod: str, ns: str) -> dict | None:
        req = CniRequest(command, pod, netns.filename(ns), "eth0", {"K8S_POD_NAME": pod},
                         {"cniVersion": "1.1.0", "name": CONTROLLER_NETWORK}, pod_key=pod)
        agent = self.agent_for(node)
        return handle(req, lambda method, **params: agent.handle(method, params), agent.dataplane)

    def pod_up(self, node: str, pod: str, alloc: Allocation) -> dict:
        self._pod_seq += 1
        ns = self.run.netns(f"p{self._pod_seq}")
        try:
            self._cni("ADD", node, pod, ns)
        except BaseException:
            netns.delete(ns)
            raise
        self.pods[pod] = (node, ns)
        return {"netns": ns, "veth": routing.host_veth_name(pod)}

    def pod_down(self, node: str, pod: str) -> None:
        where = self.pods.pop(pod, None)
        if where is None:
            return
        with contextlib.suppress(Exception):
            self._cni("DEL", node, pod, where[1])
        netns.delete(where[1])

    # -- the routing agent ---------------------------------------------------------------------------
    def _gateways(self) -> dict[str, IPv4Address]:
        return {s.id: s.gateway for s in self.cluster.spec.subnets}

    def sync(self, node: str) -> routing.SyncReport | None:
        """Run the node's routing agent: plan from the node's datastore (every pod it holds, the
        controller's and the runtimes'), observe the kernel, repair. (When the node agents run as their own
        processes, they do this themselves.)"""
        local = self.cluster.local_node(node)
        if local is None:
            return None
        return self.nodes[node].sync(*routing.node_input(local.ipamd.enis, local.ipamd.store.pods, self._gateways()))

    def set_sysctl(self, node: str, key: str, value: int) -> None:
        n = self.nodes[node]
        n.pinned[key] = value
        n.kernel.write_sysctl(key, value)

    def node_state(self, node: str) -> dict:
        n = self.nodes[node]
        return {"netns": n.ns, "attachments": self.agent_for(node).attachments(), "routing": n.routing_state()}

    def keep(self) -> None:
        """Leave the namespaces up when this process ends. The run record stays: once this process is gone,
        `enilab clean` removes exactly them."""
        self._finalizer.detach()

    def close(self) -> None:
        """Let go of every socket, then delete every namespace the run recorded, all in one batch
        (`netns.delete_many`), and the run's record."""
        for n in self.nodes.values():
            n.kernel.close()
        self._fabric.close()
        self.pods.clear()
        self.hosts.clear()
        self.nodes.clear()
        self._finalizer()
