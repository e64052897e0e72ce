"""Policy routing for shared-ENI pods, as pure functions: node ENIs + pods -> desired kernel state,
and `reconcile(desired, observed)` -> the minimal operations (`eni_core.ops`, the domain's words; the
kernel adapter encodes them to netlink, `eni_core.fake_kernel` applies them without root).

Per pod (the seed's "Data Plane Principle for Multiple ENIs"):
- `ip rule from <podIP> lookup <ENI link index + 2000>` (priority 1536): egress leaves by the pod's ENI;
- `ip rule to <podIP> lookup main` (priority 512): pods on one node reach each other directly;
- main table `<podIP> dev <host veth>`: ingress from the ENI reaches the pod.
Per ENI: its table's `default via <subnet gateway> dev ethN onlink`; the link up; rp_filter 0.
Node: rp_filter 0 on `all`, `default`, `eth0` and every ENI; ip_forward 1.
Inside the pod: the /32 address, a link-local gateway with a permanent neighbour entry, default via it.

Only state this module owns is ever removed: rules at its two priorities, routes in ENI tables, and
main-table routes tagged `proto 77`.
"""
from __future__ import annotations

import hashlib
import heapq
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from itertools import count

from eni_core.datastore import Allocation
from eni_core.model import ROUTE_TABLE_OFFSET, Eni, eni_table
from eni_core.ops import (
    ANY_TABLE,
    DEFAULT,
    MAIN_TABLE,
    AddAddress,
    AddNeighbour,
    AddRoute,
    AddRule,
    DeleteRoute,
    DeleteRule,
    Kernel,
    Link,
    Neighbour,
    Op,
    Proto,
    Route,
    Rule,
    SetLinkState,
    SetSysctl,
)

__all__ = [
    "LINK_LOCAL_GATEWAY", "EniLink", "HostIndexes", "NodePlan", "PodLink", "Route", "Rule", "SyncReport",
    "eni_sysctls", "free_host_index", "host_veth_name", "node_input", "observe", "plan_node", "plan_pod",
    "pod_host_ops", "pod_host_state", "pod_routes", "pod_rule_deletes", "pod_veth_mac", "reconcile", "sync",
]

HOST_INDEX_BASE = 64  # pod veths' node-side link indexes start here; ENIs own the small ones
PRIO_TO_POD = 512
PRIO_FROM_POD = 1536
LINK_LOCAL_GATEWAY = IPv4Address("169.254.1.1")
# the table of every link index the kernel can give (a positive 32-bit int): on a busy node pod veths come
# and go, and an ENI attached later gets an index in the thousands
ENI_TABLES = range(ROUTE_TABLE_OFFSET + 1, ROUTE_TABLE_OFFSET + 2**31)


def host_veth_name(pod: str) -> str:
    """The node-side veth of a pod: `eni` + 11 hex digits of the pod key's hash (fits IFNAMSIZ)."""
    return "eni" + hashlib.sha1(pod.encode()).hexdigest()[:11]


def _local_mac(salt: bytes, pod: str) -> str:
    """A stable, locally administered unicast MAC (first octet 02) from the pod key's hash."""
    return "02:" + hashlib.sha1(salt + pod.encode()).digest()[:5].hex(":")


def host_veth_mac(pod: str) -> str:
    """A stable, locally administered MAC for the pod's host veth (the pod's gateway neighbour)."""
    return _local_mac(b"mac:", pod)


def pod_veth_mac(pod: str) -> str:
    """A stable, locally administered MAC for the pod's own end of its veth, given when the veth is made."""
    return _local_mac(b"pod-mac:", pod)


def _host(ip: IPv4Address) -> IPv4Network:
    return IPv4Network((int(ip), 32))  # from the int: an IPv4Address would be parsed again from its text


_GATEWAY_HOST = _host(LINK_LOCAL_GATEWAY)


@dataclass(frozen=True)
class EniLink:
    """A secondary ENI as seen on the node: found by its MAC among the node's links."""

    ifname: str
    ifindex: int
    mac: str
    gateway: IPv4Address
    up: bool = True


@dataclass(frozen=True)
class PodLink:
    ip: IPv4Address
    eni_ifindex: int
    veth_ifindex: int


@dataclass(frozen=True)
class NodePlan:
    rules: frozenset[Rule]
    routes: frozenset[Route]
    links_up: frozenset[int] = frozenset()
    sysctls: Mapping[str, int] = field(default_factory=dict)


def pod_host_state(pod: PodLink) -> tuple[list[Rule], list[Route]]:
    """A pod's node-side routing: its 512 and 1536 rules, its main-table route to the host veth."""
    ip = _host(pod.ip)
    rules = [Rule(PRIO_TO_POD, MAIN_TABLE, dst=ip), Rule(PRIO_FROM_POD, eni_table(pod.eni_ifindex), src=ip)]
    return rules, [Route(MAIN_TABLE, ip, pod.veth_ifindex)]


def free_host_index(used: Container[int]) -> int:
    """The node-side link index for a new pod veth: the lowest from `HOST_INDEX_BASE` not in `used`."""
    return next(i for i in count(HOST_INDEX_BASE) if i not in used)


class HostIndexes:
    """The node-side link indexes handed to pods' veths, by pod: a new pod gets the lowest free one
    (`free_host_index`'s rule), found without reading the others (the indexes given back wait in a heap;
    above them, none was ever handed out).

    >>> h = HostIndexes()
    >>> [h.index(p) for p in ("a", "b", "c", "a")]
    [64, 65, 66, 64]
    >>> h.give_back("a"); h.give_back("x"); h.index("d")
    64
    """

    __slots__ = ("_by_pod", "_next", "_returned")

    def __init__(self) -> None:
        self._by_pod: dict[str, int] = {}
        self._returned: list[int] = []  # a heap
        self._next = HOST_INDEX_BASE

    def index(self, pod: str) -> int:
        """The pod's index: the one it has, else the lowest free."""
        index = self._by_pod.get(pod)
        if index is None:
            if self._returned:
                index = heapq.heappop(self._returned)
            else:
                index, self._next = self._next, self._next + 1
            self._by_pod[pod] = index
        return index

    def give_back(self, pod: str) -> None:
        """The pod is gone: its index is free again (a pod without one is fine)."""
        index = self._by_pod.pop(pod, None)
        if index is not None:
            heapq.heappush(self._returned, index)

    def __len__(self) -> int:
        return len(self._by_pod)


def node_input(enis: Sequence[Eni], allocations: Mapping[str, Allocation], gateways: Mapping[str, IPv4Address]
               ) -> tuple[list[tuple[str, IPv4Address]], list[tuple[IPv4Address, str, str]]]:
    """The routing agent's input from the node's datastore, for `sync`: (MAC, subnet gateway) of every ENI
    whose subnet's gateway is known, and (IP, ENI MAC, host veth name) of every pod it holds, whoever wired
    it (the controller or a runtime through `enilab-cni`). A pod whose veth does not exist (yet) is left
    out by `sync`."""
    macs = {e.id: e.mac for e in enis}
    return ([(e.mac, gateways[e.subnet_id]) for e in enis if e.subnet_id in gateways],
            [(a.ip, macs[a.eni_id], host_veth_name(key)) for key, a in allocations.items() if a.eni_id in macs])


def pod_host_ops(pod: PodLink) -> list[Op]:
    """A pod's node-side routing (main-table route, then its two rules), for the CNI ADD fast path."""
    (to_pod, from_pod), (route,) = pod_host_state(pod)
    return [AddRoute(route), AddRule(to_pod), AddRule(from_pod)]


def pod_rule_deletes(ip: IPv4Address) -> list[Op]:
    """Remove a pod's two rules (its main-table route goes with its veth). The from-rule is deleted in
    any table, so this works when the pod's ENI is already gone."""
    return [DeleteRule(Rule(PRIO_TO_POD, MAIN_TABLE, dst=_host(ip))),
            DeleteRule(Rule(PRIO_FROM_POD, ANY_TABLE, src=_host(ip)))]


def eni_default_route(eni: EniLink) -> Route:
    """The ENI table's one route: `default via <subnet gateway> dev ethN onlink` (the ENI has no address
    in the gateway's subnet, so the gateway is declared on the link)."""
    return Route(eni_table(eni.ifindex), DEFAULT, eni.ifindex, eni.gateway, onlink=True)


def plan_node(enis: Sequence[EniLink], pods: Iterable[PodLink], primary: str = "eth0") -> NodePlan:
    """The desired routing state of a node.

    Examples
    --------
    >>> from ipaddress import IPv4Address as ip
    >>> p = plan_node([EniLink("eth1", 3, "52:54:00:00:00:01", ip("10.0.1.1"))],
    ...               [PodLink(ip("10.0.1.7"), eni_ifindex=3, veth_ifindex=20)])
    >>> [str(r) for r in sorted(p.rules, key=lambda r: r.priority)]
    ['512: to 10.0.1.7 lookup main', '1536: from 10.0.1.7 lookup 2003']
    >>> sorted(str(r) for r in p.routes)
    ['10.0.1.7 dev 20 table 254', 'default via 10.0.1.1 dev 3 onlink table 2003']
    """
    by_index = {e.ifindex: e for e in enis}
    rules: set[Rule] = set()
    routes: set[Route] = {eni_default_route(e) for e in enis}
    for pod in pods:
        if pod.eni_ifindex not in by_index:
            continue  # the ENI's link has not appeared yet: the next reconcile adds the pod
        its_rules, its_routes = pod_host_state(pod)
        rules.update(its_rules)
        routes.update(its_routes)
    sysctls = {"net.ipv4.ip_forward": 1}
    for dev in ("all", "default", primary):
        sysctls[f"net.ipv4.conf.{dev}.rp_filter"] = 0
    for e in enis:
        sysctls.update(eni_sysctls(e.ifname))
    return NodePlan(frozenset(rules), frozenset(routes), frozenset(e.ifindex for e in enis), sysctls)


def eni_sysctls(ifname: str) -> dict[str, int]:
    """An ENI's own sysctls (the rest of `plan_node`'s are the node's): reverse-path filtering off, since
    replies leave by the pod's ENI whatever link the request came in by."""
    return {f"net.ipv4.conf.{ifname}.rp_filter": 0}


def _owned_rule(r: Rule) -> bool:
    return r.priority in (PRIO_TO_POD, PRIO_FROM_POD)


def _owned_route(r: Route) -> bool:
    """A route enilab wrote: `proto 77`, in an ENI's table or in main. Tables above 2000 are every link
    index's, so the table alone would claim other software's (wg-quick's 51820, say)."""
    return r.proto == Proto.ENILAB and (r.table in ENI_TABLES or r.table == MAIN_TABLE)


def observe(rules: Iterable[Rule], routes: Iterable[Route], links: Iterable[Link],
            sysctls: Mapping[str, int]) -> NodePlan:
    """The part of the kernel's state this module owns: rules at its two priorities, routes in ENI tables
    and main-table routes of `proto 77`. Everything else is foreign and never touched."""
    return NodePlan(frozenset(filter(_owned_rule, rules)), frozenset(filter(_owned_route, routes)),
                    frozenset(link.index for link in links if link.up), dict(sysctls))


def _order(x: Rule | Route) -> str:
    return str(x)


def reconcile(desired: NodePlan, observed: NodePlan) -> list[Op]:
    """The minimal operations that turn observed into desired: deletes first, then links up (a route
    needs its link up), routes, rules, and the sysctls that differ.

    Examples
    --------
    >>> from ipaddress import IPv4Address as ip
    >>> plan = plan_node([EniLink("eth1", 3, "52:54:00:00:00:01", ip("10.0.1.1"))], [])
    >>> [str(op) for op in reconcile(plan, NodePlan(frozenset(), frozenset(), frozenset([3]), plan.sysctls))]
    ['add route default via 10.0.1.1 dev 3 onlink table 2003']
    """
    ops: list[Op] = [DeleteRule(r) for r in sorted(observed.rules - desired.rules, key=_order)]
    ops += [DeleteRoute(r) for r in sorted(observed.routes - desired.routes, key=_order)]
    ops += [SetLinkState(i, up=True) for i in sorted(desired.links_up - observed.links_up)]
    ops += [AddRoute(r) for r in sorted(desired.routes - observed.routes, key=_order)]
    ops += [AddRule(r) for r in sorted(desired.rules - observed.rules, key=_order)]
    ops += [SetSysctl(k, v) for k, v in desired.sysctls.items() if observed.sysctls.get(k) != v]
    return ops


_LO_UP = SetLinkState(1, up=True)


@lru_cache(maxsize=64)
def _link_up(ifindex: int) -> SetLinkState:
    return SetLinkState(ifindex, up=True)


@lru_cache(maxsize=64)
def pod_routes(ifindex: int) -> tuple[AddRoute, AddRoute]:
    """The routes of a namespace's first attachment: the link-local gateway on its link, the default
    route through it. Operations are immutable, so each link index's are made once."""
    return (AddRoute(Route(MAIN_TABLE, _GATEWAY_HOST, ifindex, proto=Proto.STATIC)),
            AddRoute(Route(MAIN_TABLE, DEFAULT, ifindex, LINK_LOCAL_GATEWAY, proto=Proto.STATIC)))


def plan_pod(ifindex: int, ip: IPv4Address, host_mac: str, default_route: bool = True) -> list[Op]:
    """Inside a fresh pod namespace: lo and eth0 up, the /32, the link-local gateway (a permanent
    neighbour with the host veth's MAC), and the default route through it (`pod_routes`). A second
    attachment of the namespace (`default_route=False`) gets its link, address and neighbour; the first
    keeps the routes."""
    ops: list[Op] = [_LO_UP, _link_up(ifindex), AddAddress(ifindex, IPv4Interface((int(ip), 32))),
                     AddNeighbour(Neighbour(ifindex, LINK_LOCAL_GATEWAY, host_mac))]
    if default_route:
        ops += pod_routes(ifindex)
    return ops


@dataclass
class SyncReport:
    operations: list[str] = field(default_factory=list)
    sysctls: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def sync(kernel: Kernel, enis: Sequence[tuple[str, IPv4Address]], pods: Sequence[tuple[IPv4Address, str, str]],
         primary: str = "eth0", leave: Iterable[str] = ()) -> SyncReport:
    """Observe the node, plan, and apply the difference through the `Kernel` port.

    `enis` are (MAC, subnet gateway) of the node's secondary ENIs; `pods` are (IP, ENI MAC, host veth
    name). Links are matched by MAC and by name, as on a real node. Sysctls named in `leave` were set by
    hand on purpose and are not repaired.
    """
    links = kernel.links()
    by_mac = {link.mac: link for link in links}
    by_name = {link.ifname: link for link in links}
    eni_links = [EniLink(by_mac[mac].ifname, by_mac[mac].index, mac, gw, by_mac[mac].up)
                 for mac, gw in enis if mac in by_mac]
    pod_links = [PodLink(ip, by_mac[mac].index, by_name[veth].index)
                 for ip, mac, veth in pods if mac in by_mac and veth in by_name]
    desired = plan_node(eni_links, pod_links, primary)
    observed = observe(kernel.rules(), kernel.routes(), links, kernel.read_sysctls(desired.sysctls))
    skip = set(leave)
    ops = [op for op in reconcile(desired, observed) if not (isinstance(op, SetSysctl) and op.key in skip)]
    report = SyncReport([str(op) for op in ops if not isinstance(op, SetSysctl)],
                        {op.key: op.value for op in ops if isinstance(op, SetSysctl)})
    report.errors = [str(e) for e in kernel.apply(ops)]
    return report
