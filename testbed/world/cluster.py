"""The cluster facade: nodes with their IPAM, pods, and the clock, over a simulated VPC and a backend.

The parts live beside it: the eni-ip scheduler and the settling of nodes (`scheduler.py`), the nodes'
timers (`timers.py`), the pods (`pods.py`), the event log (`events.py`) and the JSON STATE (`state.py`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from eni_core.clock import SimClock
from eni_core.datastore import Datastore
from eni_core.ipamd import EniChange, Ipamd
from eni_core.model import Eni, NodeLimits
from eni_core.ports import VpcApi
from eni_core.static import ClaimError, StaticIpam, StaticNode
from testbed.errors import UserError
from testbed.world.alike import Alike
from testbed.world.backends import Backend
from testbed.world.backends.sim import SimBackend
from testbed.world.events import EventLog
from testbed.world.pods import Pod, PodPhase, newest_first, next_auto_name
from testbed.world.scheduler import Node, Scheduler
from testbed.world.spec import ClusterSpec, NodeSpec
from testbed.world.state import cluster_state
from testbed.world.timers import NodeTimers
from testbed.world.vpc import SimVpc

__all__ = ["Cluster", "ClusterError", "Pod", "PodPhase"]


class ClusterError(UserError):
    """A request the cluster cannot carry out (unknown node, duplicate pod, ...): the caller's mistake."""


class Cluster:
    """A VPC-CNI cluster in shared-ENI or static-IP mode over a simulated VPC and a data-plane backend."""

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
        """`node_vpc(cluster, node)` gives a node's ipamd its way to the VPC (default: `self.vpc` itself).
        Moving the clock checks the event log's limits between two timers (`EventLog.budget`)."""
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
        self.pods: dict[str, Pod] = {}  # in creation order
        self._owned: dict[str, dict[str, None]] = {}  # workload -> its pods, in creation order
        self._pod_seq = self._node_seq = self._auto_name = 0
        self.timers = NodeTimers()
        self._alike = Alike()  # nodes alike share their limits and subnet lists
        self.scheduler = Scheduler(self.nodes, self.pods, start=self._start, clock=self.clock, timers=self.timers,
                                   events=self.events, static=self.static is not None)
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
        common = {"vpc": vpc, "limits": self._shared_limits(spec), "subnets": self._alike.one(spec.subnets),
                  "clock": self.clock,
                  "store": self._store_factory(spec.name), "seed": self.spec.seed, "events": self.events}
        ipamd = (StaticNode(spec.name, ipam=self.static, **common) if self.static
                 else Ipamd(spec.name, config=self.spec.pool, **common))
        self._node_seq += 1
        node = Node(spec, ipamd, self._node_seq)
        ipamd.listeners.append(lambda what, eni, n=node: self._on_eni(n, what, eni))
        self.nodes[spec.name] = node
        self.backend.add_node(spec.name)
        self._settle([spec.name])

    def set_node(self, name: str, *, max_enis: int | None = None, ips_per_eni: int | None = None) -> None:
        node = self._node(name)
        spec = replace(node.spec, max_enis=node.spec.max_enis if max_enis is None else max_enis,
                       ips_per_eni=node.spec.ips_per_eni if ips_per_eni is None else ips_per_eni)
        node.spec = spec
        node.ipamd.limits = self._shared_limits(spec)
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
            node.ipamd.subnets = (*node.ipamd.subnets, subnet)
        node.ipamd.backoff_until = None
        self._settle([name])

    def delete_node(self, name: str) -> None:
        """Delete a node: its pods are deleted, its IPs unbound and its ENIs deleted in the VPC."""
        node = self._node(name)
        for pod in self.pods_on(name):
            self.delete_pod(pod, settle=False)
        node.ipamd.shutdown()
        self.vpc.remove_instance(name)
        self.backend.remove_node(name)
        del self.nodes[name]
        self.scheduler.forget(node)
        self._settle([])

    def _shared_limits(self, spec: NodeSpec) -> NodeLimits:
        """The node's limits, one object for all the nodes of one instance type: every event reads them,
        and one shared object stays in the cache where thousands of copies would not."""
        return self._alike.one(spec.limits)

    def _node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise ClusterError(f"unknown node {name!r}; nodes: {', '.join(self.nodes) or 'none'}") from None

    def _on_eni(self, node: Node, what: EniChange, eni: Eni) -> None:
        if what is EniChange.ATTACHED:
            node.ifindex[eni.id] = self.backend.eni_attached(node.name, eni)
        else:
            self.backend.eni_detached(node.name, eni)
            node.ifindex.pop(eni.id, None)

    def local_node(self, node: str) -> Node:
        """The node, whose IPAM runs in this process (the backend's `BackendHost` view)."""
        return self.nodes[node]

    # -- pods ---------------------------------------------------------------------------------------
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
        if owner is not None:
            self._owned.setdefault(owner, {})[name] = None
        self.scheduler.submit(pod)
        if settle:
            self._settle([node] if node else [])
        return pod

    def create_pods(self, count: int, node: str | None = None, names: Iterable[str] | None = None) -> list[Pod]:
        names = list(names) if names is not None else [self.next_pod_name() for _ in range(count)]
        pods = [self.create_pod(n, node, settle=False) for n in names]
        self._settle([node] if node else [])
        return pods

    def delete_pod(self, name: str, *, settle: bool = True) -> None:
        pod = self._forget_pod(name)
        if pod is None:
            raise ClusterError(f"unknown pod {name!r}")
        if pod.phase == PodPhase.RUNNING:
            node = self.nodes[pod.node]
            self.backend.pod_down(pod.node, name)
            self.scheduler.stopped(node)
            node.ipamd.release(name)
        else:
            self.scheduler.withdraw(pod)
            if self.static is not None:
                self.static.undeclare(name)
        self.events({"t": self.clock.now(), "kind": "pod", "pod": name, "node": pod.node, "event": "Deleted",
                     "ip": str(pod.ip) if pod.ip else None})
        if settle and pod.node:
            self._settle([pod.node])

    def _forget_pod(self, name: str) -> Pod | None:
        pod = self.pods.pop(name, None)
        if pod is not None and pod.owner is not None:
            owned = self._owned[pod.owner]
            del owned[name]
            if not owned:
                del self._owned[pod.owner]
        return pod

    def _start(self, node: Node, pod: Pod) -> bool:
        """The kubelet's part: an IP from the node's IPAM, then the backend wires the pod. False if the
        IPAM has no IP for it now; a pod the backend cannot run is deleted and ClusterError raised."""
        alloc = node.ipamd.assign(pod.name)
        if alloc is None:
            return False
        pod.node, pod.phase, pod.ip, pod.eni_id = node.name, PodPhase.RUNNING, alloc.ip, alloc.eni_id
        try:
            pod.show(self.backend.pod_up(node.name, pod.name, alloc))
        except Exception as err:  # the pod cannot run (its container exited at once): it is not created
            node.ipamd.release(pod.name)
            self._forget_pod(pod.name)
            self.events({"t": self.clock.now(), "kind": "pod", "pod": pod.name, "node": node.name,
                         "event": "Failed", "reason": str(err)})
            raise ClusterError(str(err)) from err
        node.running += 1
        self.events({"t": self.clock.now(), "kind": "pod", "pod": pod.name, "node": node.name,
                     "event": "Started", "ip": str(alloc.ip), "eni": alloc.eni_id})
        return True

    def pods_on(self, node: str, phase: PodPhase | None = None) -> list[str]:
        """The pods placed on `node` (those in `phase` only, if given), oldest first.

        A node keeps only the count of its running pods, which is what each event needs. Each of them
        holds an IP in the node's datastore under its name, so those names and the node's queue are read,
        not every pod of the cluster; should they not account for the count, every pod is read."""
        n = self._node(node)
        named = dict.fromkeys([*n.ipamd.store.pods, *n.pending])
        pods = [p for p in map(self.pods.get, named) if p is not None and p.node == node]
        if sum(p.phase == PodPhase.RUNNING for p in pods) != n.running:
            pods = [p for p in self.pods.values() if p.node == node]
        pods.sort(key=lambda p: p.seq)
        return [p.name for p in pods if phase in (None, p.phase)]

    def newest_pods(self, count: int) -> list[str]:
        return newest_first(self.pods, count)  # self.pods is in creation order: seq ascending

    # -- claims (static-IP mode) --------------------------------------------------------------------
    def reclaim_claim(self, name: str) -> bool:
        """Manual reclaim of a static pod's claim; refused while the pod exists. False if the claim had gone
        already (reclaimed or expired), which the timeline notes as AlreadyReclaimed."""
        if self.static is None:
            raise ClusterError("claims exist only in cluster mode static-ip")
        try:
            return self.static.reclaim(name, name in self.pods) is not None
        except ClaimError as err:
            raise ClusterError(str(err)) from None

    def delete_workload(self, owner: str) -> list[str]:
        """Cascade: delete the workload's pods, then free every claim it held."""
        if self.static is None:
            raise ClusterError("claims exist only in cluster mode static-ip")
        for name in list(self._owned.get(owner, ())):
            self.delete_pod(name)
        return [c.name for c in self.static.delete_workload(owner)]

    # -- time ---------------------------------------------------------------------------------------
    def _settle(self, names: Iterable[str]) -> None:
        self.scheduler.settle(names)

    def advance(self, seconds: float) -> None:
        self.run_until(self.clock.now() + seconds)

    def run_until(self, target: float) -> None:
        """Move the clock to `target`, firing every node's timers (releases, retries) and the claims'
        expiry on the way."""
        while True:
            node_due = self.timers.due()
            claim_due = self.static.deadline() if self.static else None
            due = min((t for t in (node_due, claim_due) if t is not None), default=None)
            if due is None or due > target:
                break
            self.events.fired += 1
            self.events.check()
            self.clock.advance_to(max(due, self.clock.now()))
            if claim_due == due:
                self.static.expire()  # a freed address may let a Pending pod start
                self._settle([n for n, node in self.nodes.items() if node.pending])
                continue
            t, name = self.timers.pop()
            if self.nodes[name].ipamd.deadline() == t:  # else its deadline moved: nothing is due
                self._settle([name])
        self.clock.advance_to(target)

    def sync_dataplane(self) -> None:
        """Let every node's routing agent repair the kernel (a no-op on the sim backend)."""
        for name in self.nodes:
            self.backend.sync(name)

    # -- state --------------------------------------------------------------------------------------
    def state(self) -> dict:
        """The JSON contract's STATE (docs/json-contract.md)."""
        return cluster_state(self)

    def close(self) -> None:
        self.backend.close()
