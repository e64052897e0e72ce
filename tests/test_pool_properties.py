"""Invariants of the shared-ENI pool under random pod churn, clock advances and limit changes.

The expectations are computed here from the product document's words (`document_window`), not by the
pool's own `bounds()`: a property that asks the code under test what to expect cannot catch it.
"""
from __future__ import annotations

import itertools
import os

from hypothesis import example, given, settings
from hypothesis import strategies as st

from eni_core.ipamd import RetryPolicy
from eni_core.model import Tally
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


def document_window(c: Cluster, name: str) -> tuple[int, int, int]:
    """(low, high, max bindable) for a node, read from the product document: "the maximum number of
    bindable IPs of each node = the maximum number of bound ENIs * the number of bindable IPs of a single
    ENI"; bound IPs range from "the number of Pods + the minimum number of pre-bound IPs" to "the number
    of Pods + the maximum number of pre-bound IPs", and never above max bindable."""
    spec, pool = c.nodes[name].spec, c.spec.pool
    pods = sum(1 for p in c.pods.values() if p.node == name and p.phase == "Running")
    max_bindable = spec.max_enis * spec.ips_per_eni
    return min(pods + pool.min_prebound, max_bindable), min(pods + pool.max_prebound, max_bindable), max_bindable


def cloud_refused_the_clamp(c: Cluster, name: str) -> bool:
    """The node's last pool work was a release at once above max bindable, and then a back-off: the
    cloud said no. Only then may idle IPs stay above max bindable."""
    mine = [e for e in c.events.items if e.get("node") == name and e["kind"] in ("pool", "backoff")]
    return (len(mine) >= 2 and mine[-1]["kind"] == "backoff" and mine[-2]["action"] == "release"
            and "release at once" in mine[-2]["why"])


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
        assert ipamd.pods == node.running
        # the tally the ENIs keep as they change is what counting them afresh finds
        assert ipamd.store.tally == Tally.of(ipamd.enis)
        assert all(e.tally is ipamd.store.tally for e in ipamd.enis)
        low, _, max_bindable = document_window(c, name)
        if ipamd.bound > max(max_bindable, node.running):  # a pod's own IP is never taken away
            assert cloud_refused_the_clamp(c, name), "idle IPs above max bindable were not released at once"
        assert node.running <= ipamd.allocatable
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


@given(cfg=config, ops=st.lists(op, min_size=1, max_size=30))
# the cloud refuses the release at once after `set_node`: the excess stays until it heals (the case)
@example(cfg={"min_prebound": 1, "extra": 0, "release_interval": 120.0, "quick_release": False, "ips_per_eni": 4,
              "seed": 244, "faulty": True}, ops=[("create", "node-1", 8), ("set_node", "node-1", 1)])
# `set_node` while the ipamd backs off from an earlier failure: the excess still goes at once
@example(cfg={"min_prebound": 5, "extra": 0, "release_interval": 120.0, "quick_release": False, "ips_per_eni": 4,
              "seed": 17, "faulty": True}, ops=[("create", "node-1", 8), ("set_node", "node-1", 1)])
def test_pool_invariants_hold_under_random_churn(cfg, ops):
    c = build(cfg)
    for o in ops:
        apply_churn(c, o)
        check_invariants(c)
    check_release_pace(c)
    c.vpc.faults = FaultConfig()  # the cloud heals: once the back-off ends, every excess IP is gone
    c.advance(RetryPolicy().max_backoff + 1)
    for name, node in c.nodes.items():
        low, _, max_bindable = document_window(c, name)
        assert node.ipamd.bound <= max(max_bindable, node.running), "excess kept after the cloud healed"
        if node.ipamd.shortfall is None:
            assert node.ipamd.bound >= low


@given(cfg=config, creates=st.lists(st.integers(1, 10), min_size=1, max_size=6),
       deletes=st.integers(0, 40))
def test_pool_settles_inside_its_window_once_timers_have_run(cfg, creates, deletes):
    c = build(cfg)
    for n in creates:
        c.create_pods(n, "node-1")
    for name in c.newest_pods(deletes):
        c.delete_pod(name)
    c.advance(cfg["release_interval"] * 200 + 600)
    for name, node in c.nodes.items():
        low, high, _ = document_window(c, name)
        if node.ipamd.shortfall is None:
            assert low <= node.ipamd.bound <= high
    check_invariants(c)


@given(cfg=config, pods=st.integers(7, 30),
       churn=st.lists(st.tuples(st.floats(1, 200), st.integers(-2, 2)), min_size=5, max_size=40))
def test_releases_are_never_faster_than_one_per_interval_without_quick_release(cfg, pods, churn):
    """Delete every pod (an excess unless max bindable caps the pool), then let time pass with light churn."""
    c = build(cfg)
    c.create_pods(pods, "node-1")
    for name in c.newest_pods(pods):
        c.delete_pod(name)
    excess = c.nodes["node-1"].ipamd.bound > document_window(c, "node-1")[1]
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


def test_make_test_runs_hypothesis_derandomized():
    """CI must not pass or fail by luck: the `ci` profile (the default) tries the same examples each run."""
    if os.environ.get("ENILAB_HYPOTHESIS_PROFILE", "ci") == "ci":
        assert settings.default.derandomize and settings.default.database is None
