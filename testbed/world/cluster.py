"""The cluster facade: nodes with their ipamd, pods, a scheduler that honours eni-ip, and the clock."""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from itertools import islice

from eni_core.clock import SimClock
from eni_core.datastore import Datastore
from eni_core.ipamd import EniChange, EniNode, Ipamd
from eni_core.model import Eni, eni_table
from eni_core.ports import VpcApi
from eni_core.static import ClaimError, StaticIpam, StaticNode
from testbed.errors import UserError
from testbed.world.backends import Backend
from testbed.world.backends.sim import SimBackend
from testbed.world.spec import ClusterSpec, NodeSpec
from testbed.world.vpc import SimVpc

__all__ = ["Cluster", "ClusterError", "Pod", "newest_first", "next_auto_name"]

RUNNING, PENDING = "Running", "Pending"
SETTLE_LIMIT = 10_000


def next_auto_name(counter: int, taken: Container[str]) -> tuple[int, str]:
    """Automatic pod names are pod-1, pod-2, ... skipping names in use: (the new counter, the name)."""
    while True:
        counter += 1
        if f"pod-{counter}" not in taken:
            return counter, f"pod-{counter}"


def newest_first(pods: Mapping[str, object], count: int) -> list[str]:
    """The `count` newest pods of a mapping kept in creation order (a deleted pod made again is new)."""
    return list(islice(reversed(pods), count))


class ClusterError(UserError):
    """A request the cluster cannot carry out (unknown node, duplicate pod, ...): the caller's mistake."""


@dataclass
class Pod:
    name: str
    node: str | None
    seq: int
    static: bool = False
    owner: str | None = None
    phase: str = PENDING
    ip: IPv4Address | None = None
    eni_id: str | None = None
    extra: dict = field(default_factory=dict)  # what the backend shows of the pod (netns, veth)
    failed_scheduling_said: bool = False  # its FailedScheduling event is out; said once per pending spell


@dataclass
class Node:
    spec: NodeSpec
    ipamd: EniNode  # an Ipamd (shared ENI) or a StaticNode (static IPs)
    pending: deque[str] = field(default_factory=deque)
    running: set[str] = field(default_factory=set)
    ifindex: dict[str, int] = field(default_factory=dict)  # ENI id -> link index


class EventLog:
    """Every event of a run, or only their count (the benchmark keeps no list)."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.items: list[dict] = []
        self.count = 0
        self.step = 0  # the scenario step being run; stamped on each event
        self.listeners: list[Callable[[dict], None]] = []  # see every event as it happens, kept or not

    def __call__(self, event: dict) -> None:
        self.count += 1
        if self.keep:
            self.items.append({"step": self.step, **event})
        for listener in self.listeners:
            listener(event)


class Cluster:
    """A VPC-CNI cluster in shared-ENI mode over a simulated VPC and a data-plane backend."""

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        backend: Backend | None = None,
        clock: SimClock | None = None,
        keep_events: bool = True,
        store_factory: Callable[[str], Datastore] | None = None,
        node_vpc: Callable[[Cluster, str], VpcApi] | None = None,
    ) -> None:
        """`node_vpc(cluster, node)` gives a node's ipamd its way to the VPC (default: `self.vpc` itself)."""
        if spec.mode not in ("shared-eni", "static-ip"):
            raise ClusterError(f"cluster mode {spec.mode!r} is unknown; use shared-eni or static-ip")
        self.spec = spec
        self.clock = clock or SimClock()
        self.events = EventLog(keep_events)
        self.backend: Backend = backend or SimBackend()
        self.vpc = SimVpc(spec.subnets, seed=spec.seed, faults=spec.faults, now=self.clock.now,
                          events=self.events)
        self._store_factory = store_factory or Datastore
        self._node_vpc = node_vpc
        self.static: StaticIpam | None = None
        if spec.mode == "static-ip":
            try:
                self.static = StaticIpam(self.vpc, self.clock, spec.claim_expired_duration, self.events)
            except ClaimError as err:
                raise ClusterError(str(err)) from None
        self.backend.bind(self)
        for host in spec.hosts:
            self.vpc.add_host(host.name, host.subnet, host.ip)
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self.unscheduled: deque[str] = deque()
        self._pod_seq = 0
        self._auto_name = 0
        self._timers: list[tuple[float, str]] = []
        for node in spec.nodes:
            self.add_node(node)

    # -- nodes --------------------------------------------------------------------------------------
    def add_node(self, spec: NodeSpec) -> None:
        if spec.name in self.nodes:
            raise ClusterError(f"node {spec.name} exists already")
        unknown = [s for s in spec.subnets if s not in self.vpc.subnets]
        if unknown:
            raise ClusterError(f"node {spec.name}: unknown subnet {unknown[0]}")
        self.vpc.add_instance(spec.name, spec.max_enis, spec.ips_per_eni)
        vpc = self._node_vpc(self, spec.name) if self._node_vpc else self.vpc
        common = {"vpc": vpc, "limits": spec.limits, "subnets": spec.subnets, "clock": self.clock,
                  "store": self._store_factory(spec.name), "seed": self.spec.seed, "events": self.events}
        ipamd = (StaticNode(spec.name, ipam=self.static, **common) if self.static
                 else Ipamd(spec.name, config=self.spec.pool, **common))
        node = Node(spec, ipamd)
        ipamd.listeners.append(lambda what, eni, n=node: self._on_eni(n, what, eni))
        self.nodes[spec.name] = node
        self.backend.add_node(spec.name)
        self._settle([spec.name])

    def set_node(self, name: str, *, max_enis: int | None = None, ips_per_eni: int | None = None) -> None:
        node = self._node(name)
        spec = replace(node.spec, max_enis=node.spec.max_enis if max_enis is None else max_enis,
                       ips_per_eni=node.spec.ips_per_eni if ips_per_eni is None else ips_per_eni)
        node.spec = spec
        node.ipamd.limits = spec.limits
        self.vpc.set_instance_limits(name, spec.max_enis, spec.ips_per_eni)
        self._settle([name])

    def add_node_subnet(self, name: str, subnet: str) -> None:
        """Give a node one more of the VPC's subnets for new ENIs (TKE: add it to the cluster's VPC-CNI
        subnets), end its back-off and let it settle: what an operator does when its subnets run dry."""
        node = self._node(name)
        if subnet not in self.vpc.subnets:
            raise ClusterError(f"unknown subnet {subnet!r}; the VPC has {', '.join(self.vpc.subnets)}")
        if subnet not in node.spec.subnets:
            node.spec = replace(node.spec, subnets=(*node.spec.subnets, subnet))
            node.ipamd.subnets.append(subnet)
        node.ipamd.backoff_until = None
        self._settle([name])

    def delete_node(self, name: str) -> None:
        """Delete a node: its pods are deleted, its IPs unbound and its ENIs deleted in the VPC."""
        node = self._node(name)
        for pod in [p for p in self.pods.values() if p.node == name]:
            self.delete_pod(pod.name, settle=False)
        node.ipamd.shutdown()
        self.vpc.remove_instance(name)
        self.backend.remove_node(name)
        del self.nodes[name]
        self._settle([])

    def _node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise ClusterError(f"unknown node {name!r}; nodes: {', '.join(self.nodes) or 'none'}") from None

    def _on_eni(self, node: Node, what: EniChange, eni: Eni) -> None:
        if what is EniChange.ATTACHED:
            node.ifindex[eni.id] = self.backend.eni_attached(node.spec.name, eni)
        else:
            self.backend.eni_detached(node.spec.name, eni)
            node.ifindex.pop(eni.id, None)

    # -- pods ---------------------------------------------------------------------------------------
    def local_node(self, node: str) -> Node:
        """The node, whose IPAM runs in this process (the backend's `BackendHost` view)."""
        return self.nodes[node]

    def next_pod_name(self) -> str:
        self._auto_name, name = next_auto_name(self._auto_name, self.pods)
        return name

    def create_pod(self, name: str | None = None, node: str | None = None, *, settle: bool = True,
                   static: bool = False, owner: str | None = None) -> Pod:
        name = name or self.next_pod_name()
        if name in self.pods:
            raise ClusterError(f"pod {name} exists already")
        if node is not None:
            self._node(node)
        if (static or owner) and self.static is None:
            raise ClusterError(f"pod {name}: static IPs need cluster mode static-ip")
        self._pod_seq += 1
        pod = Pod(name, node, self._pod_seq, static, owner)
        if self.static is not None:
            self.static.declare(name, static, owner)
        self.pods[name] = pod
        if node is None:
            self.unscheduled.append(name)
        else:
            self.nodes[node].pending.append(name)
        if settle:
            self._settle([node] if node else [])
        return pod

    def create_pods(self, count: int, node: str | None = None, names: Iterable[str] | None = None) -> list[Pod]:
        names = list(names) if names is not None else [self.next_pod_name() for _ in range(count)]
        pods = [self.create_pod(n, node, settle=False) for n in names]
        self._settle([node] if node else [])
        return pods

    def delete_pod(self, name: str, *, settle: bool = True) -> None:
        pod = self.pods.pop(name, None)
        if pod is None:
            raise ClusterError(f"unknown pod {name!r}")
        if pod.phase == RUNNING:
            node = self.nodes[pod.node]
            self.backend.pod_down(pod.node, name)
            node.running.discard(name)
            node.ipamd.release(name)
        elif pod.node is None:
            self.unscheduled.remove(name)
        else:
            self.nodes[pod.node].pending.remove(name)
        self.events({"t": self.clock.now(), "kind": "pod", "pod": name, "node": pod.node, "event": "Deleted",
                     "ip": str(pod.ip) if pod.ip else None})
        if settle and pod.node:
            self._settle([pod.node])

    def reclaim_claim(self, name: str) -> None:
        """Manual reclaim of a static pod's claim; refused while the pod exists."""
        if self.static is None:
            raise ClusterError("claims exist only in cluster mode static-ip")
        try:
            self.static.reclaim(name, name in self.pods)
        except ClaimError as err:
            raise ClusterError(str(err)) from None

    def delete_workload(self, owner: str) -> list[str]:
        """Cascade: delete the workload's pods, then free every claim it held."""
        if self.static is None:
            raise ClusterError("claims exist only in cluster mode static-ip")
        for pod in [p for p in self.pods.values() if p.owner == owner]:
            self.delete_pod(pod.name)
        return [c.name for c in self.static.delete_workload(owner)]

    def newest_pods(self, count: int) -> list[str]:
        return newest_first(self.pods, count)  # self.pods is in creation order: seq ascending

    # -- the controllers ----------------------------------------------------------------------------
    def _settle(self, names: Iterable[str]) -> None:
        todo = list(dict.fromkeys(names))
        for _ in range(SETTLE_LIMIT):
            for name in todo:
                if name in self.nodes:
                    self._settle_node(self.nodes[name])
            todo = self._schedule_unscheduled()
            if not todo:
                return
        raise RuntimeError("the cluster did not settle")

    def _settle_node(self, node: Node) -> None:
        for _ in range(SETTLE_LIMIT):
            changed = node.ipamd.reconcile()
            placed = self._place_pending(node)
            if not changed and not placed:
                break
        else:
            raise RuntimeError(f"node {node.spec.name} did not settle")
        deadline = node.ipamd.deadline()
        if deadline is not None and deadline > self.clock.now():
            heapq.heappush(self._timers, (deadline, node.spec.name))

    def _place_pending(self, node: Node) -> bool:
        """The scheduler's eni-ip check: a pod runs on the node only while its pods < allocatable. Each
        Pending pod is tried in turn: one that cannot get an IP (its static address's subnet has no room
        here) does not hold back the others."""
        placed = False
        for name in list(node.pending):
            if len(node.running) >= node.ipamd.allocatable:
                break
            if self._start(node, name):
                node.pending.remove(name)
                placed = True
        for name in node.pending:
            pod = self.pods[name]
            if not pod.failed_scheduling_said:
                pod.failed_scheduling_said = True
                self.events({"t": self.clock.now(), "kind": "pod", "pod": name, "node": node.spec.name,
                             "event": "FailedScheduling",
                             "reason": node.ipamd.shortfall if self.static and node.ipamd.shortfall else
                             f"node {node.spec.name} has no free tke.cloud.tencent.com/eni-ip "
                             f"(allocatable {node.ipamd.allocatable}, pods {len(node.running)})"})
        return placed

    def _start(self, node: Node, name: str) -> bool:
        pod = self.pods[name]
        alloc = node.ipamd.assign(name)
        if alloc is None:
            return False
        pod.node, pod.phase, pod.ip, pod.eni_id = node.spec.name, RUNNING, alloc.ip, alloc.eni_id
        pod.failed_scheduling_said = False
        try:
            pod.extra.update(self.backend.pod_up(node.spec.name, name, alloc))
        except Exception as err:  # the pod cannot run (its container exited at once): it is not created
            node.ipamd.release(name)
            node.pending.remove(name)
            del self.pods[name]
            self.events({"t": self.clock.now(), "kind": "pod", "pod": name, "node": node.spec.name,
                         "event": "Failed", "reason": str(err)})
            raise ClusterError(str(err)) from err
        node.running.add(name)
        self.events({"t": self.clock.now(), "kind": "pod", "pod": name, "node": node.spec.name,
                     "event": "Started", "ip": str(alloc.ip), "eni": alloc.eni_id})
        return True

    def _schedule_unscheduled(self) -> list[str]:
        touched = []
        while self.unscheduled:
            free = {n: node.ipamd.allocatable - len(node.running) - len(node.pending)
                    for n, node in self.nodes.items()}
            best = max(free, key=lambda n: free[n], default=None)
            if best is None or free[best] <= 0:
                break
            name = self.unscheduled.popleft()
            self.pods[name].node = best
            self.nodes[best].pending.append(name)
            touched.append(best)
        return list(dict.fromkeys(touched))

    # -- time ---------------------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        self.run_until(self.clock.now() + seconds)

    def run_until(self, target: float) -> None:
        """Move the clock to `target`, firing every node's timers (releases, retries) and the claims'
        expiry on the way."""
        while True:
            node_due = self._timers[0][0] if self._timers else None
            claim_due = self.static.deadline() if self.static else None
            due = min((t for t in (node_due, claim_due) if t is not None), default=None)
            if due is None or due > target:
                break
            self.clock.advance_to(max(due, self.clock.now()))
            if claim_due == due:
                self.static.expire()  # a freed address may let a Pending pod start
                self._settle([n for n, node in self.nodes.items() if node.pending])
                continue
            t, name = heapq.heappop(self._timers)
            node = self.nodes.get(name)
            if node is None or node.ipamd.deadline() != t:
                continue  # stale: the node went, or its deadline moved
            self._settle([name])
        self.clock.advance_to(target)

    def sync_dataplane(self) -> None:
        """Let every node's routing agent repair the kernel (a no-op on the sim backend)."""
        for name in self.nodes:
            self.backend.sync(name)

    # -- state --------------------------------------------------------------------------------------
    def state(self) -> dict:
        """The JSON contract's STATE (docs/json-contract.md)."""
        nodes = {}
        for name, node in self.nodes.items():
            ipamd = node.ipamd
            enis = []
            for eni in ipamd.enis:
                index = node.ifindex.get(eni.id)
                enis.append({
                    "id": eni.id, "subnet": eni.subnet_id, "ifname": f"eth{eni.device_index}",
                    "ifindex": index, "mac": eni.mac, "table": eni_table(index) if index else None,
                    "ips": [str(ip) for ip in sorted(eni.ips)],
                    "allocated": [str(ip) for ip in sorted(ip for ip, p in eni.ips.items() if p)],
                })
            nodes[name] = {
                "pods": len(node.running), "pending": len(node.pending), "bound": ipamd.bound,
                "allocatable": ipamd.allocatable, "capacity": ipamd.capacity, "enis": enis,
                "conditions": ([{"type": "IPPoolShortfall", "message": ipamd.shortfall}]
                               if ipamd.shortfall else []),
                **self.backend.node_state(name),
            }
        subnets = {s.id: {"cidr": str(s.cidr), "available": self.vpc.available(s.id)}
                   for s in self.spec.subnets}
        pods = {}
        for pod in sorted(self.pods.values(), key=lambda p: p.seq):
            pods[pod.name] = {"node": pod.node, "phase": pod.phase,
                              "ip": str(pod.ip) if pod.ip else None, "eni": pod.eni_id,
                              **pod.extra}
        claims = self.static.view() if self.static else {}
        for claim in claims.values():
            if claim["expires_at"] is not None:
                claim["expires_at"] = int(claim["expires_at"]) if float(claim["expires_at"]).is_integer() else \
                    claim["expires_at"]
        return {"nodes": nodes, "subnets": subnets, "pods": pods, "claims": claims}

    def close(self) -> None:
        self.backend.close()
