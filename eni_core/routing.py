"""Policy routing for shared-ENI pods, as pure functions: node ENIs + pods -> desired kernel state,
and `reconcile(desired, observed)` -> the minimal netlink operations.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from eni_core import netlink as nl
from eni_core.datastore import Allocation
from eni_core.model import Eni, eni_table
from eni_core.ports import Netlink

__all__ = [
    "LINK_LOCAL_GATEWAY", "EniLink", "NodePlan", "PodLink", "Route", "Rule", "describe_rule",
    "host_veth_name", "node_pods", "observe", "plan_node", "plan_pod", "pod_host_requests", "pod_host_state",
    "pod_rule_deletes", "reconcile", "sync",
]

HOST_INDEX_BASE = 64  # pod veths' node-side link indexes start here; ENIs own the small ones
PRIO_TO_POD = 512
PRIO_FROM_POD = 1536
LINK_LOCAL_GATEWAY = IPv4Address("169.254.1.1")
ENI_TABLES = range(2000, 3000)


def host_veth_name(pod: str) -> str:
    """The node-side veth of a pod: `eni` + 11 hex digits of the pod key's hash (fits IFNAMSIZ)."""
    return "eni" + hashlib.sha1(pod.encode()).hexdigest()[:11]


def host_veth_mac(pod: str) -> str:
    """A stable, locally administered MAC for the pod's host veth (the pod's gateway neighbour)."""
    h = hashlib.sha1(b"mac:" + pod.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in h[:5])


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


@dataclass(frozen=True, order=True)
class Rule:
    priority: int
    table: int
    src: IPv4Address | None = None
    dst: IPv4Address | None = None


@dataclass(frozen=True, order=True)
class Route:
    table: int
    dst: IPv4Address | None  # None: default
    oif: int
    gateway: IPv4Address | None = None
    onlink: bool = False

    @property
    def dst_len(self) -> int:
        return 0 if self.dst is None else 32


@dataclass(frozen=True)
class NodePlan:
    rules: frozenset[Rule]
    routes: frozenset[Route]
    links_up: frozenset[int] = frozenset()
    sysctls: Mapping[str, int] = field(default_factory=dict)


def pod_host_state(pod: PodLink) -> tuple[list[Rule], list[Route]]:
    """A pod's node-side routing in the plan's terms: its 512 and 1536 rules, its main-table route."""
    rules = [Rule(PRIO_TO_POD, nl.RT_TABLE_MAIN, dst=pod.ip),
             Rule(PRIO_FROM_POD, eni_table(pod.eni_ifindex), src=pod.ip)]
    return rules, [Route(nl.RT_TABLE_MAIN, pod.ip, pod.veth_ifindex)]


def describe_rule(rule: Rule) -> str:
    """A rule as `ip rule` shows it: `from 10.0.1.7 lookup 2003`."""
    match = f"from {rule.src}" if rule.src is not None else f"to {rule.dst}"
    return f"{match} lookup {'main' if rule.table == nl.RT_TABLE_MAIN else rule.table}"


def node_pods(allocations: Mapping[str, Allocation], enis: Iterable[Eni]) -> list[tuple[IPv4Address, str, str]]:
    """The routing agent's input from the node's datastore: (IP, ENI MAC, host veth name) of every pod
    it holds, whoever wired it (the controller or a runtime through `enilab-cni`). A pod whose veth does
    not exist (yet) is left out by `sync`."""
    macs = {e.id: e.mac for e in enis}
    return [(a.ip, macs[a.eni_id], host_veth_name(key)) for key, a in allocations.items() if a.eni_id in macs]


def pod_host_requests(pod: PodLink) -> list[nl.Request]:
    """A pod's node-side routing (main-table route, then its two rules), for the CNI ADD fast path."""
    rules, routes = pod_host_state(pod)
    return [_route(True, r) for r in routes] + [_rule(True, r) for r in rules]


def pod_rule_deletes(ip: IPv4Address) -> list[nl.Request]:
    """Remove a pod's two rules (its main-table route goes with its veth). Table 0 matches any table,
    so this works when the pod's ENI is already gone."""
    return [nl.rule_msg(False, priority=PRIO_TO_POD, table=nl.RT_TABLE_MAIN, dst=ip, dst_len=32),
            nl.rule_msg(False, priority=PRIO_FROM_POD, table=0, src=ip, src_len=32)]


def plan_node(enis: Sequence[EniLink], pods: Iterable[PodLink], primary: str = "eth0") -> NodePlan:
    """The desired routing state of a node.

    Examples
    --------
    >>> from ipaddress import IPv4Address as ip
    >>> p = plan_node([EniLink("eth1", 3, "52:54:00:00:00:01", ip("10.0.1.1"))],
    ...               [PodLink(ip("10.0.1.7"), eni_ifindex=3, veth_ifindex=20)])
    >>> [(r.priority, r.table, str(r.src or r.dst)) for r in sorted(p.rules)]
    [(512, 254, '10.0.1.7'), (1536, 2003, '10.0.1.7')]
    >>> sorted(r.table for r in p.routes)
    [254, 2003]
    """
    by_index = {e.ifindex: e for e in enis}
    rules: set[Rule] = set()
    routes: set[Route] = {Route(eni_table(e.ifindex), None, e.ifindex, e.gateway, True) for e in enis}
    for pod in pods:
        if pod.eni_ifindex not in by_index:
            continue  # the ENI's link has not appeared yet: the next reconcile adds the pod
        pod_rules, pod_routes = pod_host_state(pod)
        rules.update(pod_rules)
        routes.update(pod_routes)
    sysctls = {"net.ipv4.ip_forward": 1}
    for dev in ("all", "default", primary, *(e.ifname for e in enis)):
        sysctls[f"net.ipv4.conf.{dev}.rp_filter"] = 0
    return NodePlan(frozenset(rules), frozenset(routes), frozenset(e.ifindex for e in enis), sysctls)


def observe(rules: Iterable[nl.RuleEntry], routes: Iterable[nl.RouteEntry], links: Iterable[nl.Link],
            sysctls: Mapping[str, int]) -> NodePlan:
    """The part of the kernel's state this module owns, in the plan's terms."""
    owned_rules = frozenset(
        Rule(r.priority, r.table, r.src if r.src_len == 32 else None, r.dst if r.dst_len == 32 else None)
        for r in rules if r.priority in (PRIO_TO_POD, PRIO_FROM_POD))
    owned_routes = frozenset(
        Route(r.table, r.dst, r.oif or 0, r.gateway, r.onlink)
        for r in routes
        if (r.table in ENI_TABLES) or (r.table == nl.RT_TABLE_MAIN and r.proto == nl.RTPROT_ENILAB))
    return NodePlan(owned_rules, owned_routes, frozenset(link.index for link in links if link.up), dict(sysctls))


def _rule(add: bool, r: Rule) -> nl.Request:
    return nl.rule_msg(add, priority=r.priority, table=r.table, src=r.src, src_len=32 if r.src else 0,
                       dst=r.dst, dst_len=32 if r.dst else 0)


def _route(add: bool, r: Route) -> nl.Request:
    scope = nl.RT_SCOPE_LINK if r.gateway is None else nl.RT_SCOPE_UNIVERSE
    return nl.route_msg(add, table=r.table, dst=r.dst, dst_len=r.dst_len, oif=r.oif, gateway=r.gateway,
                        scope=scope, onlink=r.onlink)


def reconcile(desired: NodePlan, observed: NodePlan) -> tuple[list[nl.Request], dict[str, int]]:
    """The minimal netlink requests (deletes first) and sysctl writes that turn observed into desired."""
    ops = [_rule(False, r) for r in sorted(observed.rules - desired.rules)]
    ops += [_route(False, r) for r in sorted(observed.routes - desired.routes)]
    ops += [nl.link_set(i, up=True) for i in sorted(desired.links_up - observed.links_up)]
    ops += [_route(True, r) for r in sorted(desired.routes - observed.routes)]
    ops += [_rule(True, r) for r in sorted(desired.rules - observed.rules)]
    writes = {k: v for k, v in desired.sysctls.items() if observed.sysctls.get(k) != v}
    return ops, writes


def plan_pod(ifindex: int, ip: IPv4Address, host_mac: str, default_route: bool = True) -> list[nl.Request]:
    """Inside a fresh pod namespace: lo and eth0 up, the /32, the link-local gateway (a permanent
    neighbour with the host veth's MAC), and the default route through it. A second attachment of the
    namespace (`default_route=False`) gets its link, address and neighbour; the first keeps the routes."""
    requests = [
        nl.link_set(1, up=True),
        nl.link_set(ifindex, up=True),
        nl.addr_add(ifindex, ip, 32),
        nl.neigh_add(ifindex, LINK_LOCAL_GATEWAY, host_mac),
    ]
    if default_route:
        requests += [
            nl.route_msg(True, table=nl.RT_TABLE_MAIN, dst=LINK_LOCAL_GATEWAY, dst_len=32, oif=ifindex,
                         scope=nl.RT_SCOPE_LINK, proto=nl.RTPROT_STATIC),
            nl.route_msg(True, table=nl.RT_TABLE_MAIN, dst=None, dst_len=0, oif=ifindex,
                         gateway=LINK_LOCAL_GATEWAY, proto=nl.RTPROT_STATIC),
        ]
    return requests


@dataclass
class SyncReport:
    operations: list[str] = field(default_factory=list)
    sysctls: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def sync(kernel: Netlink, enis: Sequence[tuple[str, IPv4Address]], pods: Sequence[tuple[IPv4Address, str, str]],
         primary: str = "eth0", leave: Iterable[str] = ()) -> SyncReport:
    """Observe the node, plan, and apply the difference through the `Netlink` port.

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
    ops, writes = reconcile(desired, observed)
    writes = {k: v for k, v in writes.items() if k not in set(leave)}
    report = SyncReport([op.what for op in ops], writes)
    report.errors = [str(e) for e in kernel.apply(ops)]
    for key, value in writes.items():
        kernel.write_sysctl(key, value)
    return report
