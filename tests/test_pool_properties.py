"""Invariants of the shared-ENI pool under random pod churn, clock advances and limit changes."""
from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eni_core.pool import bounds
from testbed.world.cluster import Cluster
from testbed.world.spec import NodeSpec
from testbed.world.vpc import FaultConfig
from tests.helpers import apply_churn, cluster, subnet

op = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(["node-1", "node-2", None]), st.integers(1, 15)),
    st.tuples(st.just("delete"), st.integers(1, 15)),
    st.tuples(st.just("advance"), st.floats(1, 900)),
    st.tuples(st.just("set_node"), st.sampled_from(["node-1", "node-2"]), st.integers(1, 4)),
)

config = st.fixed_dictionaries({
    "min_prebound": st.integers(1, 6),
    "extra": st.integers(0, 6),
    "release_interval": st.sampled_from([30.0, 120.0]),
    "quick_release": st.booleans(),
    "ips_per_eni": st.integers(2, 12),
    "seed": st.integers(0, 1000),
    "faulty": st.booleans(),
})


def build(cfg: dict) -> Cluster:
    nodes = (NodeSpec("node-1", ("subnet-a", "subnet-b"), 3, cfg["ips_per_eni"]),
             NodeSpec("node-2", ("subnet-b",), 2, cfg["ips_per_eni"]))
    faults = FaultConfig(throttle=0.1, transient=0.05) if cfg["faulty"] else None
    return cluster(subnets=(subnet("subnet-a", "10.0.1.0/25"), subnet("subnet-b", "10.0.2.0/26")), nodes=nodes,
                   min_prebound=cfg["min_prebound"], max_prebound=cfg["min_prebound"] + cfg["extra"],
                   release_interval=cfg["release_interval"], quick_release=cfg["quick_release"],
                   faults=faults, seed=cfg["seed"])


def check_invariants(c: Cluster) -> None:
    running = [p for p in c.pods.values() if p.phase == "Running"]
    ips = [p.ip for p in running]
    assert len(ips) == len(set(ips)), "an IP is allocated to two pods"
    for name, node in c.nodes.items():
        ipamd = node.ipamd
        bound_here = {ip for e in ipamd.enis for ip in e.ips}
        # the ipamd's view is the VPC's truth, exactly
        vpc_bound = {ip for e in c.vpc.enis.values() if e.record.attached_to == name for ip in e.ips}
        assert bound_here == vpc_bound
        for p in running:
            if p.node == name:
                assert p.ip in bound_here and c.vpc.owner[p.ip] == p.eni_id, "a pod's IP is not bound to its ENI"
        assert ipamd.pods == len(node.running)
        assert ipamd.bound <= max(ipamd.capacity, ipamd.pods), "bound above max bindable"
        assert len(node.running) <= ipamd.allocatable
        low, _ = bounds(ipamd.pods, c.spec.pool, ipamd.limits)
        if ipamd.shortfall is None and ipamd.backoff_until is None:
            assert ipamd.bound >= low, "bound below pods + min pre-bound after settling"
    for s in c.spec.subnets:
        used = sum(1 for ip in c.vpc.owner if ip in s.cidr)
        assert c.vpc.available(s.id) == s.size - s.reserved - used


def check_release_pace(c: Cluster) -> None:
    """Timed releases (not the max-bindable clamp) are at most one per interval per node."""
    if c.spec.pool.quick_release:
        return
    interval = c.spec.pool.release_interval
    for name in c.nodes:
        times = [e["t"] for e in c.events.items if e["kind"] == "pool" and e["action"] == "release"
                 and e["node"] == name and "max pre-bound" in e["why"]]
        for e in c.events.items:
            if e["kind"] == "pool" and e["action"] == "release" and "max pre-bound" in e["why"]:
                assert len(e["ips"]) == 1
        assert all(b - a >= interval - 1e-9 for a, b in itertools.pairwise(times))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=config, ops=st.lists(op, min_size=1, max_size=30))
def test_pool_invariants_hold_under_random_churn(cfg, ops):
    c = build(cfg)
    for o in ops:
        apply_churn(c, o)
        check_invariants(c)
    check_release_pace(c)


@settings(max_examples=40, deadline=None)
@given(cfg=config, creates=st.lists(st.integers(1, 10), min_size=1, max_size=6),
       deletes=st.integers(0, 40))
def test_pool_settles_inside_its_window_once_timers_have_run(cfg, creates, deletes):
    c = build(cfg)
    for n in creates:
        c.create_pods(n, "node-1")
    for name in c.newest_pods(deletes):
        c.delete_pod(name)
    c.advance(cfg["release_interval"] * 200 + 600)
    for node in c.nodes.values():
        ipamd = node.ipamd
        low, high = bounds(ipamd.pods, c.spec.pool, ipamd.limits)
        if ipamd.shortfall is None:
            assert low <= ipamd.bound <= high
    check_invariants(c)


@settings(max_examples=60, deadline=None)
@given(cfg=config, pods=st.integers(7, 30),
       churn=st.lists(st.tuples(st.floats(1, 200), st.integers(-2, 2)), min_size=5, max_size=40))
def test_releases_are_never_faster_than_one_per_interval_without_quick_release(cfg, pods, churn):
    """Delete every pod (an excess unless max bindable caps the pool), then let time pass with light churn."""
    c = build(cfg)
    c.create_pods(pods, "node-1")
    for name in c.newest_pods(pods):
        c.delete_pod(name)
    ipamd = c.nodes["node-1"].ipamd
    excess = ipamd.bound > bounds(0, c.spec.pool, ipamd.limits)[1]
    for seconds, change in churn:
        c.advance(seconds)
        if change > 0:
            c.create_pods(change, "node-1")
        elif change < 0:
            for name in c.newest_pods(-change):
                c.delete_pod(name)
        check_invariants(c)
    check_release_pace(c)
    only_deletes = all(change <= 0 for _, change in churn)  # a created pod can take the excess away
    if excess and only_deletes and sum(s for s, _ in churn) >= cfg["release_interval"] and not cfg["faulty"]:
        assert any(e["kind"] == "pool" and e["action"] == "release" for e in c.events.items)
