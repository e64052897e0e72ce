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
from ipaddress import IPv4Address

from eni_core import netlink as nl
from eni_core import netns, routing
from eni_core.agent import NodeAgent
from eni_core.cni import CniRequest, Dataplane, handle
from eni_core.datastore import Allocation
from eni_core.kernel import NamespaceKernel, NetlinkPort
from eni_core.model import Eni
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


class _Node:
    def __init__(self, name: str, index: int, ns: str, kernel: NamespaceKernel) -> None:
        self.name, self.index, self.ns, self.kernel = name, index, ns, kernel
        self.agent: NodeAgent | None = None
        self.pinned: dict[str, int] = {}  # sysctls set by hand (set_sysctl): the agent leaves them be


class NetnsBackend:
    name = "netns"

    def __init__(self, run: Run | None = None) -> None:
        require_root()
        self.run = run or Run.new()
        self.lock = threading.RLock()
        self.cluster: BackendHost | None = None
        self.nodes: dict[str, _Node] = {}
        self.pods: dict[str, tuple[str, str]] = {}  # pod -> (node, netns name)
        self.hosts: dict[str, tuple[str, IPv4Address]] = {}  # VPC host -> (netns name, IP)
        self.eni_where: dict[str, tuple[_Node, int, str]] = {}  # ENI id -> (node, fabric peer index, MAC)
        self._node_seq = 0
        self._pod_seq = 0
        self._host_seq = 0
        self._fabric_index = 10
        self.fabric_ns = self.run.netns("fabric")
        self.fabric = NamespaceKernel(self.fabric_ns)
        self._fabric_fd = os.open(netns.path(self.fabric_ns), os.O_RDONLY)
        # a backend nobody closes (a notebook left running) still cleans up when the interpreter exits
        self._finalizer = weakref.finalize(self, self.run.remove)
        self.fabric.check([nl.link_set(FABRIC_LO, up=True)])
        self.fabric.write_sysctl("net.ipv4.ip_forward", 1)
        self.fabric.write_sysctl("net.ipv4.conf.all.rp_filter", 0)
        self.fabric.write_sysctl("net.ipv4.conf.default.rp_filter", 0)
        # like a VPC's virtual switch, the fabric answers ARP for every address it delivers
        self.fabric.write_sysctl("net.ipv4.conf.all.proxy_arp", 1)
        self.fabric.write_sysctl("net.ipv4.conf.default.proxy_arp", 1)

    # -- wiring to the cluster -----------------------------------------------------------------------
    def bind(self, cluster: BackendHost) -> None:
        """Serve the cluster's VPC: gateways, unreachable subnets, and IP delivery as bindings change."""
        self.cluster = cluster
        reqs = []
        for s in cluster.spec.subnets:
            reqs.append(nl.addr_add(FABRIC_LO, s.gateway, 32))
            reqs.append(nl.route_msg(True, table=nl.RT_TABLE_MAIN, dst=s.cidr.network_address,
                                     dst_len=s.cidr.prefixlen, rtype=nl.RTN_UNREACHABLE))
        self.fabric.check(reqs)
        cluster.vpc.listeners.append(self._on_binding)
        for host in cluster.spec.hosts:
            self._add_host(host.name, host.ip, cluster.vpc.subnets[host.subnet])

    def _add_host(self, name: str, ip: IPv4Address, subnet) -> None:
        """A VPC instance that is not a node: a namespace with one interface in its subnet."""
        self._host_seq += 1
        ns = self.run.netns(f"h{self._host_seq}")
        peer = self._fabric_peer()
        mac = f"52:54:fe:00:{(self._host_seq >> 8) & 0xFF:02x}:{self._host_seq & 0xFF:02x}"
        kernel = NamespaceKernel(ns)
        try:
            kernel.check([nl.link_set(1, up=True),
                          nl.veth_add("eth0", f"h{self._host_seq}", self._fabric_fd, index=2, mac=mac,
                                      peer_index=peer),
                          nl.addr_add(2, ip, subnet.cidr.prefixlen),
                          nl.route_msg(True, table=nl.RT_TABLE_MAIN, dst=None, dst_len=0, oif=2,
                                       gateway=subnet.gateway, proto=nl.RTPROT_STATIC)])
        finally:
            kernel.close()
        self._peer_up(f"h{self._host_seq}", peer)
        self._deliver(peer, mac, [ip], True)
        self.hosts[name] = (ns, ip)

    def _fabric_peer(self) -> int:
        self._fabric_index += 1
        return self._fabric_index

    def _peer_up(self, name: str, index: int) -> None:
        """Bring a fabric port up; it answers proxied ARP at once, as a VPC switch does (Linux waits up
        to 0.8 s by default, and a namespace has no `neigh.default` to change that for all ports)."""
        self.fabric.write_sysctl(f"net.ipv4.neigh.{name}.proxy_delay", 0)
        self.fabric.check([nl.link_set(index, up=True)])

    def _deliver(self, peer: int, mac: str, ips, add: bool) -> None:
        reqs = []
        for ip in ips:
            if add:
                reqs += [nl.route_msg(True, table=nl.RT_TABLE_MAIN, dst=ip, dst_len=32, oif=peer,
                                      scope=nl.RT_SCOPE_LINK), nl.neigh_add(peer, ip, mac)]
            else:
                reqs += [nl.route_msg(False, table=nl.RT_TABLE_MAIN, dst=ip, dst_len=32, oif=peer,
                                      scope=nl.RT_SCOPE_LINK), nl.neigh_del(peer, ip)]
        errors = self.fabric.apply(reqs)
        if errors:
            raise errors[0]

    def _on_binding(self, what: str, eni_id: str, ips: tuple[IPv4Address, ...]) -> None:
        if what not in ("bind", "unbind"):
            return
        where = self.eni_where.get(eni_id)
        if where is not None:
            self._deliver(where[1], where[2], ips, what == "bind")

    def redeliver(self) -> int:
        """The SDN is authoritative: re-assert delivery of every IP the VPC has bound (drift in the fabric
        is repaired). Returns how many addresses were re-asserted."""
        count = 0
        for eni_id, (_node, peer, mac) in self.eni_where.items():
            eni = self.cluster.vpc.enis.get(eni_id)
            if eni is not None:
                self._deliver(peer, mac, [eni.record.primary_ip, *eni.ips], True)
                count += 1 + len(eni.ips)
        return count

    # -- nodes ---------------------------------------------------------------------------------------
    def add_node(self, node: str) -> None:
        self._node_seq += 1
        ns = self.run.netns(f"n{self._node_seq}")
        kernel = NamespaceKernel(ns)
        n = _Node(node, self._node_seq, ns, kernel)
        peer = self._fabric_peer()
        mac = f"52:54:ff:00:{(n.index >> 8) & 0xFF:02x}:{n.index & 0xFF:02x}"
        kernel.check([nl.link_set(1, up=True),
                      nl.veth_add("eth0", f"n{n.index}p", self._fabric_fd, index=2, mac=mac, peer_index=peer)])
        self._peer_up(f"n{n.index}p", peer)
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
        index = eni_ifindex(eni.device_index)
        peer = self._fabric_peer()
        add = nl.veth_add(eni.ifname, f"n{n.index}e{eni.device_index}", self._fabric_fd,
                          index=index, mac=eni.mac, peer_index=peer, up=False)  # hot-plugged: down
        for attempt in range(5):
            try:
                n.kernel.check([add])
                break
            except OSError as err:  # a just-freed explicit index can be EBUSY once
                if err.errno != errno.EBUSY or attempt == 4:
                    raise
                time.sleep(0.001 * (attempt + 1))
        self._peer_up(f"n{n.index}e{eni.device_index}", peer)
        self.eni_where[eni.id] = (n, peer, eni.mac)
        self._deliver(peer, eni.mac, [eni.primary_ip, *eni.ips], True)
        self.sync(node)  # the agent sees the hot-plugged ENI: link up, its table, rp_filter
        return index

    def eni_detached(self, node: str, eni: Eni) -> None:
        n = self.nodes.get(node)
        self.eni_where.pop(eni.id, None)
        if n is not None:
            n.kernel.apply([nl.link_del(ifname=eni.ifname)])
            self.sync(node)

    # -- pods ----------------------------------------------------------------------------------------
    def _cni(self, command: str, node: str, pod: str, ns: str) -> dict | None:
        req = CniRequest(command, pod, str(netns.path(ns)), "eth0", {"K8S_POD_NAME": pod},
                         {"cniVersion": "1.1.0", "name": CONTROLLER_NETWORK}, pod_key=pod)
        agent = self.agent_for(node)
        dataplane = Dataplane(NetlinkPort(self.nodes[node].kernel))
        return handle(req, lambda method, **params: agent.handle(method, params), dataplane)

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
    def sync(self, node: str) -> routing.SyncReport | None:
        """Run the node's routing agent: plan from the node's datastore (every pod it holds, the
        controller's and the runtimes'), observe the kernel, repair. (When the node agents run as their own
        processes, they do this themselves.)"""
        local = self.cluster.local_node(node)
        if local is None:
            return None
        n = self.nodes[node]
        gateways = {s.id: s.gateway for s in self.cluster.spec.subnets}
        inputs = routing.node_input(local.ipamd.enis, local.ipamd.store.pods, gateways)
        return routing.sync(NetlinkPort(n.kernel), *inputs, leave=n.pinned)

    def set_sysctl(self, node: str, key: str, value: int) -> None:
        n = self.nodes[node]
        n.pinned[key] = value
        n.kernel.write_sysctl(key, value)

    def node_state(self, node: str) -> dict:
        n = self.nodes[node]
        names = {link.index: link.ifname for link in n.kernel.links()}
        rules = []
        def order(r: nl.RuleEntry) -> tuple[int, int]:
            return r.priority, int(r.src or r.dst or 0)

        for r in sorted(n.kernel.rules(), key=order):
            if r.priority in (routing.PRIO_TO_POD, routing.PRIO_FROM_POD):
                entry = {"priority": r.priority}
                if r.src is not None:
                    entry["from"] = f"{r.src}/{r.src_len}"
                if r.dst is not None:
                    entry["to"] = f"{r.dst}/{r.dst_len}"
                entry["table"] = r.table
                rules.append(entry)
        tables: dict[str, list[dict]] = {}
        for r in n.kernel.routes():
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
        for routes in tables.values():
            routes.sort(key=lambda r: (r["dst"] != "default", IPv4Address(r["dst"].split("/")[0]) if "/" in r["dst"]
                                       else IPv4Address(0)))
        keys = ["net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter",
                "net.ipv4.conf.eth0.rp_filter"]
        keys += [f"net.ipv4.conf.{name}.rp_filter" for name in sorted(names.values()) if name.startswith("eth")
                 and name != "eth0"]
        return {"netns": n.ns, "attachments": self.agent_for(node).attachments(),
                "routing": {"rules": rules, "tables": dict(sorted(tables.items())),
                                           "sysctl": n.kernel.read_sysctls(keys)}}

    def keep(self) -> None:
        """Leave the namespaces up when this process ends. The run record stays: once this process is gone,
        `enilab clean` removes exactly them."""
        self._finalizer.detach()

    def close(self) -> None:
        netns.delete_many([ns for _, ns in self.pods.values()] + [ns for ns, _ in self.hosts.values()])
        self.pods.clear()
        self.hosts.clear()
        for n in self.nodes.values():
            n.kernel.close()
            netns.delete(n.ns)
        self.nodes.clear()
        self.fabric.close()
        os.close(self._fabric_fd)
        netns.delete(self.fabric_ns)
        self._finalizer()
