"""A flaky cloud: throttling, transient errors, timeouts whose operation did happen, and describes that lag
behind. The ipamd retries, backs off and re-syncs; once the faults stop it converges with nothing leaked,
nothing bound twice, and no running pod without its IP."""
from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from eni_core.model import PoolConfig
from testbed.world.cluster import Cluster
from testbed.world.spec import ClusterSpec, NodeSpec
from testbed.world.vpc import FaultConfig
from tests.helpers import apply_churn, subnet

FAULTS = FaultConfig(throttle=0.15, transient=0.1, insufficient_addresses=0.03, timeout=0.15, consistency_delay=5)


def flaky(mode: str, seed: int, faults: FaultConfig = FAULTS) -> Cluster:
    nodes = (NodeSpec("node-1", ("subnet-a", "subnet-b"), 3, 6), NodeSpec("node-2", ("subnet-b",), 2, 6))
    spec = ClusterSpec(subnets=(subnet("subnet-a", "10.0.1.0/26"), subnet("subnet-b", "10.0.2.0/26")), nodes=nodes,
                       mode=mode, pool=PoolConfig(2, 4, 60), faults=faults, seed=seed)
    return Cluster(spec)


def assert_converged(c: Cluster) -> None:
    running = [p for p in c.pods.values() if p.phase == "Running"]
    assert len({p.ip for p in running}) == len(running), "an IP is held by two pods"
    for name, node in c.nodes.items():
        ipamd = node.ipamd
        ours = {ip for e in ipamd.enis for ip in e.ips}
        vpc = {ip for e in c.vpc.enis.values() if e.record.attached_to == name for ip in e.ips}
        assert ours == vpc, f"{name}: datastore and VPC disagree: only ours {ours - vpc}, only VPC {vpc - ours}"
        attached = {e.record.id for e in c.vpc.enis.values() if e.record.attached_to == name}
        assert attached == set(ipamd.store.enis), f"{name}: ENIs the datastore does not know"
        for p in running:
            if p.node == name:
                assert ipamd.lookup(p.name).ip == p.ip and c.vpc.owner.get(p.ip) == p.eni_id
    leaked = [e.record.id for e in c.vpc.enis.values() if e.record.attached_to is None]
    assert not leaked, f"ENIs created and never attached: {leaked}"
    for s in c.spec.subnets:
        in_use = sum(1 for ip in [*c.vpc.owner, *c.vpc.retained] if ip in s.cidr)
        assert c.vpc.available(s.id) == s.size - s.reserved - in_use


op = st.one_of(st.tuples(st.just("create"), st.sampled_from(["node-1", "node-2"]), st.integers(1, 6)),
               st.tuples(st.just("delete"), st.integers(1, 6)), st.tuples(st.just("advance"), st.floats(1, 200)))


@given(mode=st.sampled_from(["shared-eni", "static-ip"]), seed=st.integers(0, 10_000),
       ops=st.lists(op, min_size=1, max_size=25))
# a detach that timed out did happen; the next pod's IP was bound on that detached ENI
@example(mode="static-ip", seed=6338, ops=[("create", "node-1", 1), ("create", "node-1", 2), ("delete", 3),
                                           ("create", "node-1", 1)])
def test_the_ipamd_converges_after_faults_stop_with_nothing_leaked(mode, seed, ops):
    c = flaky(mode, seed)
    for o in ops:
        apply_churn(c, o)
        running = [p for p in c.pods.values() if p.phase == "Running"]
        assert len({p.ip for p in running}) == len(running)  # never two pods on one IP, even mid-fault
    c.vpc.faults = FaultConfig()  # the cloud heals
    c.advance(1200)
    assert_converged(c)


def test_a_timed_out_assign_that_happened_is_adopted_not_leaked():
    c = flaky("shared-eni", 1, FaultConfig())
    c.vpc.faults = FaultConfig(timeout=0.99)  # every mutating call happens, then "times out"
    c.create_pods(3, "node-1")
    c.vpc.faults = FaultConfig()
    c.advance(600)
    assert_converged(c)
    assert any(e["kind"] == "resync" for e in c.events.items)


def test_describe_lags_behind_and_recovery_does_not_drop_what_it_cannot_see_yet():
    c = flaky("shared-eni", 2, FaultConfig())
    c.vpc.faults = FaultConfig(consistency_delay=30)
    c.create_pods(4, "node-1")
    ipamd = c.nodes["node-1"].ipamd
    bound = {ip for e in ipamd.enis for ip in e.ips}
    ipamd.resync_at = c.clock.now()  # force a re-sync while the VPC still hides the new IPs
    ipamd.reconcile()
    assert {ip for e in ipamd.enis for ip in e.ips} >= bound
    c.advance(600)
    assert_converged(c)


def test_a_restart_while_describes_lag_keeps_every_pod_and_gives_no_ip_twice(tmp_path):
    from eni_core.datastore import Datastore, FileCheckpoint
    from eni_core.ipamd import Ipamd

    def store(node: str) -> Datastore:
        return Datastore(node, FileCheckpoint(tmp_path / f"{node}.json"))

    nodes = (NodeSpec("node-1", ("subnet-a",), 3, 4),)
    c = Cluster(ClusterSpec(subnets=(subnet("subnet-a", "10.0.1.0/26"),), nodes=nodes, pool=PoolConfig(2, 4)),
                store_factory=store)
    c.vpc.faults = FaultConfig(consistency_delay=30)
    c.create_pods(7, "node-1")  # a second ENI attached just now: DescribeNetworkInterfaces does not show it
    running = {p.name: p.ip for p in c.pods.values() if p.phase == "Running"}
    old = c.nodes["node-1"].ipamd
    fresh = Ipamd("node-1", vpc=c.vpc, limits=old.limits, subnets=old.subnets, clock=c.clock, config=old.config,
                  store=store("node-1"))
    fresh.recover()
    assert {p: fresh.lookup(p).ip for p in running} == running  # no running pod lost its IP
    given = [fresh.assign(f"new-{i}") for i in range(3)]
    for _ in range(5):
        fresh.reconcile()
    given += [fresh.assign(f"more-{i}") for i in range(3)]
    new_ips = [a.ip for a in given if a is not None]
    assert new_ips and not set(new_ips) & set(running.values())  # nobody's IP handed out again
    c.advance(60)
    c.clock.advance_to(c.clock.now() + 60)
    fresh.reconcile()
    assert {ip for e in fresh.enis for ip in e.ips} == {ip for e in c.vpc.enis.values() for ip in e.ips}


def test_an_eni_detached_behind_the_ipamds_back_is_attached_again_with_its_pods_ips():
    c = flaky("shared-eni", 3, FaultConfig())
    c.create_pods(2, "node-1")
    ipamd = c.nodes["node-1"].ipamd
    eni = ipamd.enis[0]
    c.vpc.detach_eni(eni.id)  # a DetachNetworkInterface that timed out, yet happened
    ipamd._schedule_resync()
    c.create_pods(1, "node-1")  # the node settles: the re-sync runs, and goes on for its window
    assert c.vpc.enis[eni.id].record.attached_to is None  # describes lag: not judged yet
    c.advance(600)
    assert c.vpc.enis[eni.id].record.attached_to == "node-1"
    assert any(e.get("reattached_eni") == eni.id for e in c.events.items)
    assert eni.id in c.nodes["node-1"].ifindex  # the data plane was told: the ENI's link is back
    assert_converged(c)


def test_an_empty_eni_whose_detach_timed_out_yet_happened_is_forgotten_and_deleted(monkeypatch):
    from eni_core.ports import RequestTimeout, TransientError

    c = flaky("static-ip", 4, FaultConfig())
    c.create_pods(1, "node-1")
    ipamd = c.nodes["node-1"].ipamd
    eni = ipamd.enis[0]
    real_detach = c.vpc.detach_eni

    def detach_then_lose_every_answer(eni_id):
        if c.vpc.enis[eni_id].record.attached_to is not None:
            real_detach(eni_id)
            raise RequestTimeout("DetachNetworkInterface: no answer in time")
        raise TransientError("DetachNetworkInterface: internal error")

    monkeypatch.setattr(c.vpc, "detach_eni", detach_then_lose_every_answer)
    c.delete_pod("pod-1")  # its IP is unbound, then the ENI's detach "fails"
    assert eni.id in ipamd.store.enis and not eni.ips and c.vpc.enis[eni.id].record.attached_to is None
    c.clock.advance_to(c.clock.now() + ipamd.retry.resync_window)
    assert ipamd.resync() == (True, True)
    assert eni.id not in ipamd.store.enis and eni.id not in c.vpc.enis


def test_a_resync_keeps_fresh_idle_ips_a_lagging_describe_hides_and_drops_old_ones_the_vpc_lost():
    c = flaky("shared-eni", 5, FaultConfig())
    c.vpc.faults = FaultConfig(consistency_delay=30)
    c.create_pods(2, "node-1")
    c.advance(100)  # the ENI and its first IPs are old news: describes show them
    ipamd = c.nodes["node-1"].ipamd
    eni = ipamd.enis[0]
    c.create_pods(1, "node-1")  # takes an old idle IP; the pool binds a fresh one, hidden for 30 s
    shown = set(c.vpc.describe_enis("node-1")[0].ips)
    fresh = [ip for ip in eni.idle_ips() if ip not in shown]
    old_idle = next(ip for ip in eni.idle_ips() if ip in shown)
    c.vpc.unassign_private_ips(eni.id, [old_idle])  # gone behind the ipamd's back, long after it was bound
    assert fresh
    changed, _ = ipamd.resync()
    assert changed and old_idle not in eni.ips  # an old idle IP the VPC lost is dropped ...
    assert all(ip in eni.ips for ip in fresh)  # ... a fresh one the describe lags behind is kept
