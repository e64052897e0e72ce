"""The eni-ip scheduler: which node a pod goes to, and which of a node's Pending pods may start.

A pod runs on a node only while the node's pods are fewer than its `tke.cloud.tencent.com/eni-ip`
allocatable. A pod created without a node goes to the node with the most free eni-ip (ties to the node
added first). Settling a node runs its IPAM's reconcile and starts what fits until neither changes,
then arms the node's next timer. Every step costs what the nodes and pods it touches cost: nothing
scans the cluster.
"""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from eni_core.clock import Clock
from eni_core.ipamd import EniNode
from testbed.world.pods import Pod
from testbed.world.spec import NodeSpec
from testbed.world.timers import NodeTimers

__all__ = ["SETTLE_LIMIT", "Node", "Scheduler"]

SETTLE_LIMIT = 10_000
NO_PENDING: Mapping[str, bool] = MappingProxyType({})  # the queue of a node no pod waits on


@dataclass(eq=False, slots=True)
class Node:
    """A node as the cluster runs it: its spec, its IPAM (an Ipamd in shared-ENI mode, a StaticNode in
    static-IP mode), its Pending pods in the order they came, how many pods run on it, and each ENI's link
    index.

    Each Pending pod's value says whether its FailedScheduling is out, and `unannounced_count` counts those
    whose is not: one table per node for both, where a second one would be one more object for every pod
    created to read from memory (a pod enters the queue once, when it comes to the node)."""

    spec: NodeSpec
    ipamd: EniNode
    seq: int = 0  # the order nodes were added in: ties in scheduling go to the older node
    _pending: dict[str, bool] | None = None  # see `pending`; None while no pod waits, as nearly always
    # how many pods run here: the eni-ip check needs their number only, and a table of their names was two
    # cold objects read and written for every pod started or stopped (scale model, docs/performance.md:
    # 29.4 -> 26.3 misses per event); `Cluster.pods_on` names them
    running: int = 0
    ifindex: dict[str, int] = field(default_factory=dict)  # ENI id -> link index
    unannounced_count: int = 0
    name: str = field(init=False)  # the spec's (a changed spec keeps it), here so a lookup reads no other object

    def __post_init__(self) -> None:
        self.name = self.spec.name

    @property
    def pending(self) -> Mapping[str, bool]:
        """The Pending pods, in the order they came -> whether their FailedScheduling is out; `enqueue`
        and `withdraw` change it.

        A pod nearly always starts in the event that queues it, so the queue is made when a pod enters it
        and dropped when the last leaves: a table made then comes from memory just freed, in the cache,
        where one kept per node is a cache miss or two in a large cluster, every pod created."""
        return self._pending if self._pending is not None else NO_PENDING

    @property
    def room(self) -> int:
        """Free eni-ip: allocatable less the pods running or waiting here."""
        return self.ipamd.allocatable - self.running - len(self.pending)

    @property
    def unannounced(self) -> list[str]:
        """The Pending pods whose FailedScheduling is not out, in the order they came."""
        return [pod for pod, announced in self.pending.items() if not announced] if self.unannounced_count else []

    def enqueue(self, pod: str) -> None:
        if self._pending is None:
            self._pending = {}
        elif pod in self._pending:
            raise ValueError(f"pod {pod} is Pending on {self.name} already")
        self._pending[pod] = False
        self.unannounced_count += 1

    def withdraw(self, pod: str) -> None:
        """A Pending pod leaves the queue (deleted, or it could not start)."""
        queue = self._pending
        if queue is None or pod not in queue:
            raise KeyError(pod)
        if not queue.pop(pod):
            self.unannounced_count -= 1
        if not queue:
            self._pending = None

    def announced(self) -> None:
        """Every Pending pod's FailedScheduling is out."""
        if self.unannounced_count:
            for pod in self.unannounced:
                self._pending[pod] = True
            self.unannounced_count = 0


class _RoomIndex:
    """The nodes by free eni-ip, most first, then oldest: a heap refreshed from the nodes marked as
    changed, whose stale entries are skipped when they come up (and dropped when they pile up)."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self._nodes = nodes
        self._heap: list[tuple[int, int, str]] | None = None  # built the first time it is asked
        self._changed: dict[str, None] = {}

    def changed(self, node: Node) -> None:
        if self._heap is not None:
            self._changed[node.name] = None

    def roomiest(self) -> Node | None:
        nodes = self._nodes
        if self._heap is None or len(self._heap) > 2 * len(nodes) + 64:
            self._heap = [(-n.room, n.seq, n.name) for n in nodes.values()]
            heapq.heapify(self._heap)
            self._changed.clear()
        heap = self._heap
        for name in self._changed:
            node = nodes.get(name)
            if node is not None:
                heapq.heappush(heap, (-node.room, node.seq, name))
        self._changed.clear()
        while heap:
            minus_room, seq, name = heap[0]
            node = nodes.get(name)
            if node is None or node.seq != seq:
                heapq.heappop(heap)  # a node deleted since (perhaps made again, with a new seq)
            elif node.room != -minus_room:
                heapq.heapreplace(heap, (-node.room, seq, name))  # it changed since: file it again
            else:
                return node
        return None


class Scheduler:
    """Places the cluster's pods and settles its nodes. `start(node, pod)` runs a pod on a node (an IP
    from the node's IPAM, the backend's wiring): True if it started, False if it cannot have an IP now;
    it raises if the pod can never run, after taking it out of the cluster."""

    def __init__(
        self,
        nodes: dict[str, Node],
        pods: dict[str, Pod],
        *,
        start: Callable[[Node, Pod], bool],
        clock: Clock,
        timers: NodeTimers,
        events: Callable[[dict], None],
        static: bool,
    ) -> None:
        self.nodes = nodes
        self.pods = pods
        self._start = start
        self._clock = clock
        self._timers = timers
        self._events = events
        self._static = static
        self._unscheduled: deque[Pod] = deque()  # a pod deleted meanwhile is skipped when it comes up
        self._rooms = _RoomIndex(nodes)

    # -- the queues ---------------------------------------------------------------------------------
    def submit(self, pod: Pod) -> None:
        """A new pod: Pending on its node, or waiting for one."""
        if pod.node is None:
            self._unscheduled.append(pod)
        else:
            node = self.nodes[pod.node]
            node.enqueue(pod.name)
            self._rooms.changed(node)

    def withdraw(self, pod: Pod) -> None:
        """A pod that is not running is deleted."""
        if pod.node is not None:
            node = self.nodes[pod.node]
            node.withdraw(pod.name)
            self._rooms.changed(node)

    def stopped(self, node: Node) -> None:
        """One of the node's running pods is deleted."""
        node.running -= 1
        self._rooms.changed(node)

    def forget(self, node: Node) -> None:
        """The node is gone."""
        self._timers.disarm(node.name)

    # -- settling -----------------------------------------------------------------------------------
    def settle(self, names: Iterable[str]) -> None:
        """Settle the named nodes, then the nodes that get the unscheduled pods, until nothing moves.

        A pod that can never run (its start failed, and the cluster deleted it) holds back no other pod:
        its node is settled again without it, the other nodes too, and its failure is raised once all is
        settled (the first one, with any others as its notes)."""
        todo = list(dict.fromkeys(names))
        failures: list[Exception] = []
        for _ in range(SETTLE_LIMIT):
            for name in todo:
                node = self.nodes.get(name)
                if node is not None:
                    self._settle_node_past_failures(node, failures)
            todo = self._bind_unscheduled()
            if not todo:
                break
        else:
            raise RuntimeError("the cluster did not settle")
        if failures:
            first, *others = failures
            for other in others:
                first.add_note(f"and: {other}")
            raise first

    def _settle_node_past_failures(self, node: Node, failures: list[Exception]) -> None:
        """`_settle_node`, again after each pod that could not start (it left the node's queue): the pass
        again refills the pool for the pods started before it, and starts those behind it. Any other error
        goes out at once, the failures before it as its notes."""
        while True:
            waiting = len(node.pending)
            try:
                self._settle_node(node)
                return
            except Exception as err:
                if len(node.pending) >= waiting:  # no pod left the queue: not a pod's failure
                    for earlier in failures:
                        err.add_note(f"after: {earlier}")
                    raise
                failures.append(err)

    def _settle_node(self, node: Node) -> None:
        for _ in range(SETTLE_LIMIT):
            changed = node.ipamd.reconcile()
            placed = self._place_pending(node)
            if not changed and not placed:
                break
        else:
            raise RuntimeError(f"node {node.name} did not settle")
        self._rooms.changed(node)
        deadline = node.ipamd.deadline()
        if deadline is not None and deadline > self._clock.now():
            self._timers.arm(node.name, deadline)

    def _place_pending(self, node: Node) -> bool:
        """The scheduler's eni-ip check: a pod runs on the node only while its pods < allocatable. Each
        Pending pod is tried in turn: one that cannot get an IP (its static address's subnet has no room
        here) does not hold back the others."""
        started: list[str] = []
        failed: tuple[str, Exception] | None = None
        for name in node.pending:  # the queue changes only once the loop is over
            if node.running >= node.ipamd.allocatable:
                break
            try:
                if self._start(node, self.pods[name]):
                    started.append(name)
            except Exception as err:  # the pod can never run: `start` took it out of the cluster
                failed = name, err
                break
        for name in started:
            node.withdraw(name)
        if failed is not None:
            node.withdraw(failed[0])
            self._rooms.changed(node)
            raise failed[1]
        self._announce_failed(node)
        return bool(started)

    def _announce_failed(self, node: Node) -> None:
        """FailedScheduling, once per pod and Pending spell."""
        if not node.unannounced_count:
            return
        if self._static and node.ipamd.shortfall:
            reason = node.ipamd.shortfall
        elif node.running >= node.ipamd.allocatable:
            reason = (f"node {node.name} has no free tke.cloud.tencent.com/eni-ip "
                      f"(allocatable {node.ipamd.allocatable}, pods {node.running})")
        else:  # eni-ip allows more pods: the wait is for the node's pool to bind an IP
            reason = node.ipamd.why_no_ip()
        for name in node.unannounced:
            self._events({"t": self._clock.now(), "kind": "pod", "pod": name, "node": node.name,
                          "event": "FailedScheduling", "reason": reason})
        node.announced()

    def _bind_unscheduled(self) -> list[str]:
        """Give waiting pods, oldest first, to the node with the most free eni-ip: the nodes that got one."""
        touched: dict[str, None] = {}
        queue = self._unscheduled
        while queue:
            pod = queue[0]
            if self.pods.get(pod.name) is not pod or pod.node is not None:
                queue.popleft()  # deleted while it waited
                continue
            best = self._rooms.roomiest()
            if best is None or best.room <= 0:
                break
            queue.popleft()
            pod.node = best.name
            best.enqueue(pod.name)
            self._rooms.changed(best)
            touched[best.name] = None
        return list(touched)
