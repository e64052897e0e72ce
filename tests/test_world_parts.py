"""The world's parts on their own: the scheduler's choice of node, the nodes' timers, the address book,
pod phases and the churn workload."""
from __future__ import annotations

import gc
import heapq
import json
import re
from collections import Counter
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from eni_core.model import PoolConfig, Subnet
from eni_core.ports import InsufficientAddresses, InvalidParameter, TransientError
from testbed.apps import bench
from testbed.world.addresses import BLOCK, AddressBook, AddressSpace
from testbed.world.backends.sim import SimBackend
from testbed.world.churn import churn_workload, churn_world, replay_churn
from testbed.world.cluster import Cluster, ClusterError
from testbed.world.pods import NO_EXTRA, PodPhase
from testbed.world.spec import ClusterSpec, NodeSpec
from testbed.world.timers import NodeTimers
from tests import helpers

SUBNET = Subnet("subnet-a", IPv4Network("10.0.0.0/22"))


def _cluster(*nodes: tuple[str, int, int]) -> Cluster:
    spec = ClusterSpec(subnets=(SUBNET,), pool=PoolConfig(2, 4),
                       nodes=tuple(NodeSpec(n, ("subnet-a",), e, i) for n, e, i in nodes))
    return Cluster(spec, keep_events=False)


def _roomiest_by_scan(c: Cluster) -> str | None:
    """The rule written the obvious way: the most free eni-ip, ties to the node added first."""
    free = {n: node.ipamd.allocatable - node.running - len(node.pending) for n, node in c.nodes.items()}
    best = max(free, key=lambda n: free[n], default=None)
    return best if best is not None and free[best] > 0 else None


ops = st.lists(st.one_of(
    st.tuples(st.just("create"), st.integers(1, 6)),
    st.tuples(st.just("create_on"), st.sampled_from(["n1", "n2", "n3"]), st.integers(1, 4)),
    st.tuples(st.just("delete"), st.integers(0, 40)),
    st.tuples(st.just("set"), st.sampled_from(["n1", "n2", "n3"]), st.integers(1, 3)),
    st.tuples(st.just("add"), st.sampled_from(["n4", "n5"])),
    st.tuples(st.just("drop"), st.sampled_from(["n1", "n2", "n3", "n4", "n5"])),
    st.tuples(st.just("advance"), st.integers(1, 300)),
), max_size=25)


@given(ops)
def test_pods_without_a_node_go_where_the_scan_of_every_node_would_put_them(steps):
    c = _cluster(("n1", 2, 3), ("n2", 1, 5), ("n3", 2, 2))
    for op in steps:
        if op[0] == "create":
            for _ in range(op[1]):
                expected = _roomiest_by_scan(c)
                pod = c.create_pod()
                assert pod.node == expected  # None: no node has room, the pod waits
        elif op[0] == "create_on" and op[1] in c.nodes:
            c.create_pods(op[2], op[1])
        elif op[0] == "delete" and c.pods:
            c.delete_pod(list(c.pods)[op[1] % len(c.pods)])
        elif op[0] == "set" and op[1] in c.nodes:
            c.set_node(op[1], max_enis=op[2])
        elif op[0] == "add" and op[1] not in c.nodes:
            c.add_node(NodeSpec(op[1], ("subnet-a",), 2, 4))
        elif op[0] == "drop" and op[1] in c.nodes and len(c.nodes) > 1:
            c.delete_node(op[1])
        elif op[0] == "advance":
            c.advance(op[1])
        waiting = [p for p in c.pods.values() if p.node is None]
        assert not waiting or _roomiest_by_scan(c) is None, "a pod waits while a node has room"
        for name, node in c.nodes.items():  # a node's count and `pods_on` against a read of every pod
            on = [p.name for p in c.pods.values() if p.node == name]  # creation order
            assert c.pods_on(name) == on
            assert node.running == len(c.pods_on(name, PodPhase.RUNNING)) == sum(
                c.pods[p].phase == PodPhase.RUNNING for p in on)


def test_pods_on_reads_every_pod_when_the_datastore_does_not_account_for_the_running_count():
    c = _cluster(("n1", 1, 3), ("n2", 1, 3))
    c.create_pods(2, "n1")
    c.create_pods(2, "n2")
    c.create_pod("late", "n1")
    del c.nodes["n1"].ipamd.store.pods["pod-1"]  # not expected to happen: the read of every pod still finds it
    assert c.pods_on("n1") == ["pod-1", "pod-2", "late"] and c.pods_on("n2") == ["pod-3", "pod-4"]
    with pytest.raises(ClusterError, match="unknown node 'n9'"):
        c.pods_on("n9")


def test_a_waiting_pod_deleted_is_skipped_and_one_made_again_under_its_name_waits_at_the_back():
    c = _cluster(("n1", 1, 3))  # room for 3 pods at most
    c.create_pods(3, "n1")
    c.create_pod("a")
    c.create_pod("b")
    c.delete_pod("a")
    c.create_pod("a")  # new: behind b
    c.delete_pod(c.newest_pods(4)[-1])  # one running pod of n1 goes: one place frees up
    assert c.pods["b"].node == "n1" and c.pods["a"].node is None


def test_deleting_many_pending_pods_costs_each_only_its_own_removal():
    c = _cluster(("n1", 1, 2))
    c.create_pods(5000, "n1")
    node = c.nodes["n1"]
    assert len(node.pending) == 4998 and not node.unannounced  # each told FailedScheduling once
    for name in list(node.pending)[::-1]:
        c.delete_pod(name, settle=False)
    assert not node.pending and node.running == 2


def test_a_node_holds_a_queue_only_while_a_pod_waits():
    c = _cluster(("n1", 1, 2))
    node = c.nodes["n1"]
    c.create_pod("pod-a", "n1")  # it starts in the event that queues it: no queue is left
    assert node._pending is None and dict(node.pending) == {}
    with pytest.raises(TypeError):
        node.pending["pod-x"] = False  # type: ignore[index]  # the empty queue all such nodes share
    c.create_pods(3, "n1")  # one more runs (eni-ip 2), two wait
    assert list(node.pending) == ["pod-2", "pod-3"]
    with pytest.raises(KeyError):
        node.withdraw("pod-x")
    assert list(node.pending) == ["pod-2", "pod-3"] and node.room == -2  # eni-ip 2, two running, two waiting
    for name in ("pod-3", "pod-2"):
        c.delete_pod(name)
    assert node._pending is None and node.room == 0 and not node.unannounced


def test_failed_scheduling_is_said_once_per_pending_spell():
    c = Cluster(ClusterSpec(subnets=(SUBNET,), pool=PoolConfig(1, 1),
                            nodes=(NodeSpec("n1", ("subnet-a",), 1, 2),)))
    c.create_pods(4, "n1")
    c.advance(600)
    c.delete_pod("pod-1")
    said = [e["pod"] for e in c.events.items if e.get("event") == "FailedScheduling"]
    assert said == ["pod-2", "pod-3", "pod-4"]  # pod-2 waited for the pool's second IP, once
    assert c.pods["pod-3"].phase == PodPhase.RUNNING and c.pods["pod-4"].phase == PodPhase.PENDING


class _ExitsAtOnce(SimBackend):
    """A backend whose `bad-*` pods cannot run (a container that exits at once)."""

    def pod_up(self, node, pod, alloc):
        if pod.startswith("bad-"):
            raise RuntimeError(f"{pod}: the container exited at once")
        return super().pod_up(node, pod, alloc)


def test_a_pod_that_cannot_run_holds_back_no_other_pod_and_leaves_the_pool_refilled():
    c = Cluster(ClusterSpec(subnets=(SUBNET,), pool=PoolConfig(3, 3), nodes=(NodeSpec("n1", ("subnet-a",), 3, 10),)),
                backend=_ExitsAtOnce())
    with pytest.raises(ClusterError, match="bad-1: the container exited at once") as raised:
        c.create_pods(0, "n1", names=["good-1", "good-2", "bad-1", "good-3", "bad-2", "good-4"])
    assert raised.value.__notes__ == ["and: bad-2: the container exited at once"]
    ipamd = c.nodes["n1"].ipamd
    assert sorted(c.pods) == ["good-1", "good-2", "good-3", "good-4"]
    assert {p.phase for p in c.pods.values()} == {PodPhase.RUNNING}
    assert (ipamd.pods, ipamd.bound) == (4, 4 + 3)  # pods + min pre-bound, at once, not at the next event


def test_a_pod_that_cannot_run_holds_back_no_pod_of_another_node():
    spec = ClusterSpec(subnets=(SUBNET,), pool=PoolConfig(1, 1),
                       nodes=(NodeSpec("n1", ("subnet-a",), 3, 10), NodeSpec("n2", ("subnet-a",), 3, 10)))
    c = Cluster(spec, backend=_ExitsAtOnce())
    with pytest.raises(ClusterError, match="bad-1"):
        c.create_pods(0, names=["bad-1", "a", "b", "d", "e"])
    assert {n: p.phase for n, p in c.pods.items()} == dict.fromkeys("abde", PodPhase.RUNNING)
    assert sorted(p.node for p in c.pods.values()) == ["n1", "n1", "n2", "n2"]


def test_when_the_node_fails_after_a_pod_that_cannot_run_neither_failure_is_lost(monkeypatch):
    backend = _ExitsAtOnce()
    c = Cluster(ClusterSpec(subnets=(SUBNET,), pool=PoolConfig(3, 3), nodes=(NodeSpec("n1", ("subnet-a",), 3, 10),)),
                backend=backend)
    reconcile = type(c.nodes["n1"].ipamd).reconcile
    failed = []
    real_pod_up = backend.pod_up

    def pod_up(node, pod, alloc):
        try:
            return real_pod_up(node, pod, alloc)
        except RuntimeError:
            failed.append(pod)
            raise

    def reconcile_until_a_pod_failed(self):
        if failed:
            raise OSError("the node's link to the cloud is gone")
        return reconcile(self)

    monkeypatch.setattr(backend, "pod_up", pod_up)
    monkeypatch.setattr(type(c.nodes["n1"].ipamd), "reconcile", reconcile_until_a_pod_failed)
    with pytest.raises(OSError, match="the node's link to the cloud is gone") as raised:
        c.create_pods(0, "n1", names=["good-1", "bad-1", "good-2"])
    # the node's failure goes out (settling it again, to refill its pool, met it), the pod's is its note
    [note] = raised.value.__notes__
    assert note.startswith("after: bad-1: the container exited at once")
    assert c.pods["good-1"].phase == PodPhase.RUNNING and "bad-1" not in c.pods


def test_a_pending_pod_is_queued_once_and_told_failed_scheduling_again_only_when_it_comes_back():
    c = Cluster(ClusterSpec(subnets=(SUBNET,), pool=PoolConfig(1, 1),
                            nodes=(NodeSpec("n1", ("subnet-a",), 1, 1), NodeSpec("n2", ("subnet-a",), 1, 1))))
    c.create_pods(3, "n1")  # one runs; pod-2 and pod-3 wait, told once
    node = c.nodes["n1"]
    assert node.unannounced == [] and list(node.pending) == ["pod-2", "pod-3"]
    with pytest.raises(ValueError, match="Pending on n1 already"):
        node.enqueue("pod-2")
    assert node.unannounced_count == 0 and list(node.pending) == ["pod-2", "pod-3"]  # the refusal changed nothing
    c.delete_pod("pod-2")
    c.create_pod("pod-2", "n1")  # made again: a new spell, behind pod-3, told again
    said = [e["pod"] for e in c.events.items if e.get("event") == "FailedScheduling"]
    assert said == ["pod-2", "pod-3", "pod-2"] and list(node.pending) == ["pod-3", "pod-2"]


def test_timers_fire_in_time_order_then_node_name_and_only_as_last_armed():
    timers = NodeTimers()
    for node, t in [("b", 5.0), ("a", 5.0), ("c", 1.0), ("c", 7.0), ("d", 3.0)]:
        timers.arm(node, t)
    timers.disarm("d")
    fired = []
    while timers.due() is not None:
        fired.append(timers.pop())
    assert fired == [(5.0, "a"), (5.0, "b"), (7.0, "c")]
    with pytest.raises(IndexError):
        timers.pop()


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 20)), max_size=40))
def test_timers_agree_with_a_plain_sorted_list_of_the_last_deadline_of_each_node(arms):
    timers = NodeTimers()
    last: dict[str, float] = {}
    for node, t in arms:
        timers.arm(node, float(t))
        last[node] = float(t)
    fired = []
    while timers.due() is not None:
        fired.append(timers.pop())
    assert fired == sorted((t, n) for n, t in last.items())


_TIMER_OPS = st.lists(st.tuples(st.sampled_from(["arm", "arm", "arm", "disarm", "pop"]), st.sampled_from("abcdef"),
                                st.integers(-5, 30)), max_size=80)


@given(_TIMER_OPS)
def test_timers_interleaved_with_pops_agree_with_the_earliest_of_a_plain_dict(ops):
    """Arms mostly in time order (the queue) and some before the queue's last (the heap), re-arms,
    disarms and pops in any order: every pop is the least (deadline, node) of what is armed."""
    timers, armed, now = NodeTimers(), {}, 0
    for op, node, delta in ops:
        if op == "arm":
            timers.arm(node, float(now + delta))
            armed[node] = float(now + delta)
            now += max(0, delta) // 3  # time moves on, so most later arms come after the earlier ones
        elif op == "disarm":
            timers.disarm(node)
            armed.pop(node, None)
        else:
            expected = min(((t, n) for n, t in armed.items()), default=None)
            assert timers.due() == (expected and expected[0])
            if expected is None:
                with pytest.raises(IndexError):
                    timers.pop()
            else:
                assert timers.pop() == expected
                del armed[expected[1]]
        assert len(timers) == len(armed)
    assert [timers.pop() for _ in range(len(armed))] == sorted((t, n) for n, t in armed.items())
    assert timers.due() is None


@given(st.lists(st.one_of(st.just(None), st.integers(0, 40)), max_size=120))
def test_the_address_book_hands_out_the_lowest_free_address_as_a_set_would(ops):
    book = AddressBook(Subnet("s", IPv4Network("10.0.0.0/26")))  # usable 10.0.0.2 .. 10.0.0.62
    taken: list[int] = []
    free = list(range(int(IPv4Address("10.0.0.2")), int(IPv4Address("10.0.0.62")) + 1))
    for op in ops:
        if op is None and taken:
            n = taken.pop(len(taken) // 2)
            book.give_back(IPv4Address(n))
            heapq.heappush(free, n)
        elif op is not None and free:
            ip = book.take()
            assert int(ip) == heapq.heappop(free)
            taken.append(int(ip))
        assert book.available == len(free)


@given(st.integers(0, 509), st.lists(st.tuples(st.sampled_from(["take", "exactly", "back"]), st.integers(0, 520),
                                               st.integers(1, 90)), max_size=60))
@example(200, [("back", 70, 8), ("exactly", 70, 2)])  # a gap in the second block, taken back by name
def test_the_address_book_finds_the_lowest_free_address_across_its_blocks(prefill, ops):
    """A /23 spans eight blocks of the book's table: runs of takes fill blocks, gaps given back open them
    again below and above the hint, addresses taken by name close them; the book hands out what a plain
    set's lowest free address is, and its table of open blocks says which blocks have a free address."""
    book = AddressBook(Subnet("s", IPv4Network("10.0.0.0/23")))  # usable 10.0.0.2 .. 10.0.1.254
    base = int(IPv4Address("10.0.0.0"))
    usable = set(range(base + 2, base + 511))
    free = set(usable)
    for op, offset, run in [("take", 0, prefill), *ops]:
        n = base + offset
        if op == "take":
            for _ in range(min(run, len(free))):
                assert int(book.take()) == min(free)
                free.remove(min(free))
        elif op == "exactly":
            for m in sorted(free & set(range(n, n + run))):
                book.take_exactly(IPv4Address(m))
                free.remove(m)
        elif op == "back":
            for m in range(n, min(n + run // 8 + 1, base + 511)):
                book.give_back(IPv4Address(m))
                if m in usable:
                    free.add(m)
        assert book.available == len(free)
        first = base + 2
        for k in range(len(book._open)):
            block = range(first + k * BLOCK, min(first + (k + 1) * BLOCK, book._next))
            assert book._open[k] == any(m in free for m in block), k


@given(st.lists(st.tuples(st.sampled_from(["take", "exactly", "back"]), st.integers(0, 70)), max_size=150))
def test_the_address_book_agrees_with_a_plain_set_whatever_is_taken_by_name_or_given_back(ops):
    """Taken by name below and beyond the cursor, given back twice, outside the subnet: the book hands out
    what the lowest free address of a plain set of free addresses is, and says the same of each address."""
    book = AddressBook(Subnet("s", IPv4Network("10.0.0.0/26")))  # usable 10.0.0.2 .. 10.0.0.62
    base = int(IPv4Address("10.0.0.0"))
    usable = set(range(base + 2, base + 63))
    free = set(usable)
    for op, offset in ops:
        n = base + offset
        if op == "take":
            if free:
                assert int(book.take()) == min(free)
                free.remove(min(free))
            else:
                with pytest.raises(InsufficientAddresses):
                    book.take()
        elif op == "exactly":
            if n not in usable:
                with pytest.raises(InvalidParameter):
                    book.take_exactly(IPv4Address(n))
            elif n not in free:
                with pytest.raises(InsufficientAddresses, match="already in use"):
                    book.take_exactly(IPv4Address(n))
            else:
                book.take_exactly(IPv4Address(n))
                free.remove(n)
        elif n in usable:
            book.give_back(IPv4Address(n))
            free.add(n)
        assert book.available == len(free)
        assert sorted(book.used) == sorted(usable - free) and len(book.used) == len(usable - free)
        assert (n in book.used) == (n in usable - free)


@given(st.lists(st.tuples(st.sampled_from(["bind", "exactly", "unbind", "retain"]), st.integers(0, 70),
                          st.sampled_from(["eni-1", "eni-2"])), max_size=120))
def test_the_vpcs_owner_table_agrees_with_a_plain_dict(ops):
    """Bound by the VPC's choice or by name (below and beyond the cursor), unbound, kept for a claim: the
    owner table says what a dict of every bound address would, looked up, iterated and compared."""
    space = AddressSpace([SUBNET, Subnet("s2", IPv4Network("10.0.8.0/26"))])
    base = int(IPv4Address("10.0.0.0"))
    model: dict[IPv4Address, str] = {}
    for op, offset, eni_id in ops:
        ip = IPv4Address(base + offset)
        if op == "bind" and space.available("subnet-a"):
            got = space.take("subnet-a", 1)
            space.hold("subnet-a", eni_id, got)
            model[got[0]] = eni_id
        elif op == "exactly" and ip not in model and ip not in space.retained and offset >= 2:
            got = space.take("subnet-a", 0, [ip])
            space.hold("subnet-a", eni_id, got)
            model[ip] = eni_id
        elif op in ("unbind", "retain") and ip in model:
            space.give_back("subnet-a", [ip], retain=op == "retain")
            del model[ip]
        assert space.owner == model and len(space.owner) == len(model) and sorted(space.owner) == sorted(model)
        assert space.owner.get(ip) == model.get(ip) and (ip in space.owner) == (ip in model)
    assert space.owner.get(IPv4Address("192.168.0.1")) is None and "10.0.0.2" not in space.owner


def test_an_address_space_takes_all_it_is_asked_for_or_nothing():
    space = AddressSpace([Subnet("s", IPv4Network("10.0.0.0/29"))])  # usable 10.0.0.2 .. 10.0.0.6
    space.retained.add(IPv4Address("10.0.0.9"))  # a claim's address, outside this subnet: refused
    before = space.available("s")
    with pytest.raises(InvalidParameter, match=re.escape("10.0.0.9 is not in s, the subnet of eni-x")):
        space.take("s", 0, [IPv4Address("10.0.0.2"), IPv4Address("10.0.0.9")], for_eni="eni-x")
    assert space.available("s") == before and IPv4Address("10.0.0.9") in space.retained
    with pytest.raises(InsufficientAddresses):
        space.take("s", before + 1)
    assert space.available("s") == before


def test_pod_phases_are_the_strings_of_the_json_contract():
    schema = json.loads((Path(__file__).parent.parent / "docs/schema/state.schema.json").read_text())
    phases = set()

    def find(node):
        if isinstance(node, dict):
            if "phase" in node.get("properties", {}):
                phases.update(node["properties"]["phase"]["enum"])
            for value in node.values():
                find(value)
        elif isinstance(node, list):
            for value in node:
                find(value)

    find(schema)
    assert phases == {p.value for p in PodPhase}
    assert json.dumps({"phase": PodPhase.RUNNING}) == '{"phase": "Running"}'


def test_a_pod_the_backend_shows_nothing_of_shares_one_read_only_empty_extra_and_others_have_their_own():
    c = _cluster(("n1", 2, 4))
    a, b = c.create_pods(2, "n1")
    assert a.extra is b.extra is NO_EXTRA and a.phase == PodPhase.RUNNING
    with pytest.raises(TypeError):
        a.extra["netns"] = "x"  # type: ignore[index]  # one pod's change would show on every pod

    class Shows(SimBackend):
        def pod_up(self, node, pod, alloc):
            return {"netns": f"ns-{pod}"}

    c = Cluster(_cluster(("n1", 2, 4)).spec, backend=Shows(), keep_events=False)
    a, b = c.create_pods(2, "n1")
    assert (a.extra, b.extra) == ({"netns": f"ns-{a.name}"}, {"netns": f"ns-{b.name}"})
    assert c.state()["pods"][a.name]["netns"] == f"ns-{a.name}"


def test_nodes_alike_share_one_limits_one_subnet_list_and_one_quota_object_and_others_have_their_own():
    c = Cluster(churn_world(8, seed=4), keep_events=False)  # node n sits in subnets n % 4 and (n + 1) % 4
    a, b, other = (c.nodes[f"node-{n}"] for n in (0, 4, 1))
    assert a.ipamd.limits is b.ipamd.limits is other.ipamd.limits  # all 4 ENIs x 10 IPs
    assert a.ipamd.subnets is b.ipamd.subnets and a.ipamd.subnets is not other.ipamd.subnets
    assert a.ipamd.subnets != other.ipamd.subnets
    assert c.vpc.instances["node-0"] is c.vpc.instances["node-5"]
    c.add_node(NodeSpec("odd", ("subnet-0",), 2, 5))
    assert c.vpc.instances["odd"] is not c.vpc.instances["node-0"]
    assert (c.vpc.instances["odd"].max_enis, c.nodes["odd"].ipamd.limits.max_enis) == (2, 2)


@pytest.mark.parametrize("nodes", [1, 3, 9_999, 10_000, 10_001, 12_345, 50_000])
def test_the_churn_world_gives_each_subnet_at_most_5000_nodes_whatever_its_size(nodes):
    """At 50,000 nodes four /16s could not hold the pre-bound IPs: the bench measured a day of polls."""
    world = churn_world(nodes, seed=4)
    served = Counter(s for node in world.nodes for s in node.subnets)
    assert max(served.values()) <= 5_000 and set(served) <= {s.id for s in world.subnets}
    assert len(world.subnets) == (4 if nodes <= 10_000 else -(-nodes // 2_500))  # the 10,000-node world as before


def test_the_largest_churn_world_leaves_no_node_short_of_addresses():
    c = Cluster(churn_world(bench.SIM_MAX_NODES, seed=4), keep_events=False)
    assert not [n for n, node in c.nodes.items() if node.ipamd.shortfall]
    assert all(node.ipamd.bound == 5 for node in c.nodes.values())


def test_the_churn_workload_names_the_worlds_own_node_objects():
    world, events = churn_world(20, seed=4), churn_workload(20, 300, 2, seed=4)
    names = {id(n.name) for n in world.nodes}
    assert all(id(node) in names for *_, node in events)  # a lookup finds its key by identity


def test_the_churn_workload_is_each_pods_life_in_time_order_with_its_own_time_and_one_name_per_pod():
    """Every pod is created, then deleted, on one node; the events come in time order (creations first at
    one instant). Each event's time is an object of its own, made in replay order, and a pod's two events
    share one name, made when its creation comes: what a replay reads lies in the order it reads it."""
    events = churn_workload(20, 300, 2, seed=4)
    assert len(events) == 600
    assert [e[:2] for e in events] == sorted(e[:2] for e in events)
    assert {op for _, order, op, _, _ in events if order == 0} == {"create"}
    assert {op for _, order, op, _, _ in events if order == 1} == {"delete"}
    created, deleted = {}, {}
    for t, _, op, pod, node in events:
        (created if op == "create" else deleted)[pod] = (t, node, pod)
    assert created.keys() == deleted.keys() == {f"pod-{i}" for i in range(300)}
    for name, (born, node, pod) in created.items():
        died, its_node, its_pod = deleted[name]
        assert born <= died <= 2 * 3600 and its_node is node and its_pod is pod
    times = [id(e[0]) for e in events]
    assert len(set(times)) == len(times)  # no two events share a time object, not even at one instant


def test_the_bench_replay_makes_no_garbage_cycle_and_gives_the_collector_back(monkeypatch):
    *_, done, garbage = bench._sim_once(churn_world(20, seed=4), churn_workload(20, 300, 2, seed=4), 2)
    assert (done, garbage) == (600, 0) and gc.isenabled()

    def replay_that_leaves_a_cycle(cluster, events):
        loop: list = []
        loop.append(loop)
        return len(events)

    monkeypatch.setattr(bench, "replay_churn", replay_that_leaves_a_cycle)
    *_, garbage = bench._sim_once(churn_world(2, seed=4), [], 1)
    assert garbage == 1 and gc.isenabled()


def test_the_bench_replay_in_slices_is_the_same_replay_with_the_tenth_between_each_part():
    whole, *_, done = bench._sim_once(churn_world(20, seed=4), churn_workload(20, 300, 2, seed=4), 2)[:5]
    calls: list[int] = []
    sliced, *_, sliced_done = bench._sim_once(churn_world(20, seed=4), churn_workload(20, 300, 2, seed=4), 2,
                                              slices=7, between=lambda: calls.append(len(calls)))[:5]
    assert sliced_done == done == 600 and calls == list(range(8))  # before each of 7 parts and after the last
    assert (sliced.vpc.calls, sliced.events.count, sliced.state()) == (whole.vpc.calls, whole.events.count,
                                                                         whole.state())


def test_the_churn_replays_to_an_empty_cluster_and_is_the_same_for_the_same_seed():
    assert churn_workload(20, 300, 2, seed=4) == churn_workload(20, 300, 2, seed=4)
    c = Cluster(churn_world(20, seed=4), keep_events=False)
    assert replay_churn(c, churn_workload(20, 300, 2, seed=4)) == 600
    c.run_until(2 * 3600)
    assert not c.pods and c.vpc.calls > 0


def test_a_node_whose_cloud_fails_for_days_backs_off_at_the_cap_and_tries_again_for_ever():
    """Thousands of failures in a row (2 ** failures outgrows a float after 1,024) keep the wait at the cap,
    and the node comes back once the cloud does."""
    from testbed.world.vpc import FaultConfig

    c = helpers.cluster(min_prebound=1, max_prebound=1)
    c.vpc.faults = FaultConfig(transient=1.0)
    c.create_pods(1, "node-1")
    c.advance(2 * 86400)  # a failure every 30 s at most: some 6,000
    ipamd = c.nodes["node-1"].ipamd
    assert ipamd._failures > 2000
    assert 0 < ipamd.backoff_until - c.clock.now() <= ipamd.retry.max_backoff
    c.vpc.faults = FaultConfig()
    c.advance(ipamd.retry.max_backoff)
    assert c.state()["pods"]["pod-1"]["phase"] == "Running"


def test_a_pod_pending_while_the_pool_backs_off_says_so_not_that_eni_ip_is_full(monkeypatch):
    """eni-ip allows the pod (allocatable 2, pods 1), yet the node hands out no IP (here: none it can give)
    while its pool backs off from a failing cloud: the FailedScheduling names the back-off, not eni-ip.
    Once eni-ip is full, it names eni-ip."""
    from testbed.world.vpc import FaultConfig

    c = helpers.cluster(min_prebound=1, max_prebound=1)
    c.create_pods(1, "node-1")
    ipamd = c.nodes["node-1"].ipamd
    assert ipamd.allocatable == 2 and c.nodes["node-1"].running == 1
    c.vpc.faults = FaultConfig(transient=1.0)
    monkeypatch.setattr(type(ipamd), "assign", lambda self, pod: None)  # the idle IP cannot be handed out now
    ipamd._back_off(TransientError("the cloud failed"))  # as a failed call in its reconcile does
    c.create_pods(1, "node-1")
    reasons = [e["reason"] for e in c.events.items if e.get("event") == "FailedScheduling"]
    assert len(reasons) == 1 and "IP pool is backing off after a failed cloud call" in reasons[0]
    monkeypatch.undo()
    c.vpc.faults = FaultConfig()
    c.advance(120)
    c.create_pods(5, "node-1")
    full = [e["reason"] for e in c.events.items if e.get("event") == "FailedScheduling"][len(reasons):]
    assert full and all("no free tke.cloud.tencent.com/eni-ip" in r for r in full)


def test_a_subnet_added_to_one_node_is_not_added_to_the_nodes_that_had_the_same_subnets():
    subnets = (SUBNET, Subnet("subnet-b", IPv4Network("10.0.8.0/22")))
    c = Cluster(ClusterSpec(subnets=subnets, nodes=tuple(NodeSpec(n, ("subnet-a",), 2, 10) for n in ("n1", "n2"))))
    assert c.nodes["n1"].ipamd.subnets is c.nodes["n2"].ipamd.subnets  # one shared tuple for nodes alike
    c.add_node_subnet("n1", "subnet-b")
    assert c.nodes["n1"].ipamd.subnets == ("subnet-a", "subnet-b") and c.nodes["n2"].ipamd.subnets == ("subnet-a",)
    assert c.nodes["n1"].spec.subnets == ("subnet-a", "subnet-b") and c.nodes["n2"].spec.subnets == ("subnet-a",)
