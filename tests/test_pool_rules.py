"""One test per rule of the seed's non-static IP mode (the pool policy and the eni-ip resource)."""
from __future__ import annotations

import random
from collections import Counter
from ipaddress import IPv4Address

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from eni_core import pool
from eni_core.ipamd import SEEN
from eni_core.model import Eni, NodeLimits, PoolConfig, Tally
from eni_core.static import EniChoice, choose_eni
from testbed.world.spec import NodeSpec
from tests.helpers import cluster, node_state, pool_events, subnet


def eni(id_: str, seq: int, bound: int, allocated: int, subnet_id: str = "subnet-a") -> Eni:
    e = Eni(id_, subnet_id, "52:54:00:00:00:01", IPv4Address("10.0.0.1"), seq + 1, seq)
    base = int(IPv4Address("10.0.1.0")) + 100 * (seq + 1)
    for i in range(bound):
        e.bind(IPv4Address(base + i))
    for ip in list(e.ips)[:allocated]:
        e.assign(ip, f"{id_}-pod-{ip}")
    return e


DEFAULT_LIMITS = NodeLimits(3, 10)
DEFAULT_CONFIG = PoolConfig()


def plan(enis, pods, *, limits=DEFAULT_LIMITS, config=DEFAULT_CONFIG, due=None, now=0.0, subnets=None,
         node_subnets=("subnet-a",)):
    return pool.plan(enis, pods=pods, node_subnets=list(node_subnets),
                     subnet_free=lambda: subnets or {s: 200 for s in node_subnets},
                     limits=limits, config=config, release_due=due, now=now)


# -- the bound window ---------------------------------------------------------------------------------
def test_defaults_are_five_and_five_prebound_and_two_minute_release():
    cfg = PoolConfig()
    assert (cfg.min_prebound, cfg.max_prebound, cfg.release_interval, cfg.quick_release) == (5, 5, 120.0, False)


def test_binds_at_once_up_to_pods_plus_min_prebound():
    p = plan([eni("eni-1", 0, 6, 4)], pods=4, config=PoolConfig(3, 8))
    assert p.actions == (pool.BindIps("eni-1", 1),)  # 6 bound < 4 + 3: bind exactly 1


def test_no_bind_and_no_release_inside_the_window():
    p = plan([eni("eni-1", 0, 9, 4)], pods=4, config=PoolConfig(3, 8))
    assert p.actions == () and p.release_due is None


def test_first_release_waits_a_full_release_interval():
    p = plan([eni("eni-1", 0, 10, 0)], pods=0, config=PoolConfig(2, 4, 120), now=50.0)
    assert p.actions == () and p.release_due == 170.0


def test_releases_one_idle_ip_per_release_interval_above_max_prebound():
    p = plan([eni("eni-1", 0, 10, 0)], pods=0, config=PoolConfig(2, 4, 120), due=170.0, now=170.0)
    released = [a for a in p.actions if isinstance(a, pool.ReleaseIps)]
    assert [len(a.ips) for a in released] == [1] and p.release_due == 290.0


def test_release_timer_stops_at_pods_plus_max_prebound():
    p = plan([eni("eni-1", 0, 5, 0)], pods=0, config=PoolConfig(2, 4, 120), due=100.0, now=100.0)
    assert sum(len(a.ips) for a in p.actions) == 1 and p.release_due is None  # now at 4: done


def test_quick_release_releases_all_the_excess_at_the_interval():
    p = plan([eni("eni-1", 0, 10, 0)], pods=0, config=PoolConfig(2, 4, 120, True), due=120.0, now=120.0)
    assert sum(len(a.ips) for a in p.actions if isinstance(a, pool.ReleaseIps)) == 6


def test_never_binds_more_than_max_bindable():
    p = plan([eni("eni-1", 0, 10, 10), eni("eni-2", 1, 8, 8)], pods=18, limits=NodeLimits(2, 10))
    assert p.actions == (pool.BindIps("eni-2", 2),)  # 18 + 5 = 23 capped at 2 x 10 = 20
    assert "max bindable" in p.actions[0].reason


def test_releases_idle_ips_at_once_when_max_bindable_falls_under_bound():
    enis = [eni("eni-1", 0, 10, 6), eni("eni-2", 1, 7, 0)]
    p = plan(enis, pods=6, limits=NodeLimits(1, 10), now=5.0)
    released = sum(len(a.ips) for a in p.actions if isinstance(a, pool.ReleaseIps))
    assert released == 7  # 17 bound -> 10, without waiting for any interval
    assert pool.DeleteEni("eni-2") in p.actions


# -- least ENIs ---------------------------------------------------------------------------------------
def test_pod_ip_comes_from_the_eni_with_the_most_allocated_ips():
    enis = [eni("eni-1", 0, 10, 2), eni("eni-2", 1, 10, 7), eni("eni-3", 2, 10, 5)]
    chosen, ip = pool.choose_pod_ip(enis, random.Random(1).getrandbits(64))
    assert chosen.id == "eni-2" and ip in enis[1].idle_ips()


def test_pod_ip_skips_a_full_eni_with_more_allocated():
    enis = [eni("eni-1", 0, 10, 10), eni("eni-2", 1, 10, 3)]
    assert pool.choose_pod_ip(enis, random.Random(1).getrandbits(64))[0].id == "eni-2"


def _picks(seed: str, count: int) -> list[IPv4Address]:
    """The IPs a node's draws (`pool.next_draw`, seeded as an ipamd seeds them) pick from one ENI of 30 idle IPs."""
    state, picks = pool.first_draws(seed), []
    for _ in range(count):
        state, draw = pool.next_draw(state)
        picks.append(pool.choose_pod_ip([eni("eni-1", 0, 30, 0)], draw)[1])
    return picks


def test_pod_ip_within_the_eni_is_random_and_reproducible_from_the_seed():
    picks = _picks("1:node-1", 300)
    assert picks == _picks("1:node-1", 300)  # the same seed and node: the same IPs
    assert picks != _picks("2:node-1", 300) and picks != _picks("1:node-2", 300)
    counts = Counter(picks)  # uniform over the 30: each about 10 times in 300
    assert len(counts) == 30 and max(counts.values()) <= 25


def test_an_assign_that_finds_no_idle_ip_uses_up_no_draw():
    # the picks after it are the ones an uninterrupted run makes (a runtime's ADD on an empty pool, say)
    c = cluster(max_enis=1, ips_per_eni=2, min_prebound=1, max_prebound=1)
    ipamd = c.nodes["node-1"].ipamd
    while ipamd.store.tally.idle:
        c.create_pod(node="node-1")
    before = ipamd.draws
    assert ipamd.assign("no-room") is None and ipamd.draws == before


def test_the_draws_are_splitmix64():
    # the first outputs of SplitMix64 from state 0, as its reference implementation prints them
    state, draws = 0, []
    for _ in range(3):
        state, draw = pool.next_draw(state)
        draws.append(draw)
    assert draws == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_ties_between_enis_go_to_the_older_eni():
    enis = [eni("eni-new", 5, 10, 4), eni("eni-old", 2, 10, 4)]
    assert pool.choose_pod_ip(enis, random.Random(0).getrandbits(64))[0].id == "eni-old"
    p = plan(enis, pods=8, config=PoolConfig(1, 1), due=0.0, now=0.0)
    assert p.actions[0].eni_id == "eni-old"


def test_release_prefers_the_eni_with_the_fewest_allocated_ips():
    enis = [eni("eni-1", 0, 10, 2), eni("eni-2", 1, 10, 6)]
    p = plan(enis, pods=8, config=PoolConfig(1, 2, quick_release=True), due=0.0, now=0.0)
    released = [(a.eni_id, len(a.ips)) for a in p.actions if isinstance(a, pool.ReleaseIps)]
    assert released == [("eni-1", 8), ("eni-2", 2)]  # excess 20 - (8 + 2): eni-1's idle IPs go first
    assert not any(isinstance(a, pool.DeleteEni) for a in p.actions)  # eni-1 still holds 2 pods' IPs


def test_binds_on_bound_enis_before_a_new_eni():
    p = plan([eni("eni-1", 0, 6, 6)], pods=6)
    assert p.actions == (pool.BindIps("eni-1", 4), pool.CreateEni("subnet-a", 1))


def test_new_eni_when_the_bound_enis_subnet_is_used_up():
    p = plan([eni("eni-1", 0, 6, 6, "subnet-a")], pods=6, node_subnets=("subnet-a", "subnet-b"),
             subnets={"subnet-a": 0, "subnet-b": 50})
    assert p.actions == (pool.CreateEni("subnet-b", 5),)


def test_new_eni_goes_to_the_subnet_with_the_most_available_addresses():
    p = plan([], pods=0, node_subnets=("subnet-a", "subnet-b", "subnet-c"),
             subnets={"subnet-a": 10, "subnet-b": 90, "subnet-c": 40})
    assert p.actions == (pool.CreateEni("subnet-b", 5),)


def test_subnet_tie_goes_to_the_subnet_listed_first():
    p = plan([], pods=0, node_subnets=("subnet-b", "subnet-a"), subnets={"subnet-a": 90, "subnet-b": 90})
    assert p.actions == (pool.CreateEni("subnet-b", 5),)


def test_eni_primary_address_comes_from_the_subnet_too():
    p = plan([], pods=0, subnets={"subnet-a": 4})
    assert p.actions == (pool.CreateEni("subnet-a", 3),)  # 1 primary + 3 secondary = 4
    assert plan([], pods=0, subnets={"subnet-a": 1}).actions == ()


def test_no_subnet_can_serve_is_a_shortfall_not_a_crash():
    p = plan([], pods=0, subnets={"subnet-a": 1})
    assert p.shortfall and "subnet-a (1 free)" in p.shortfall


def test_eni_with_no_secondary_ip_left_is_deleted_when_none_is_wanted():
    p = plan([eni("eni-1", 0, 10, 8), eni("eni-2", 1, 0, 0)], pods=8, config=PoolConfig(1, 2))
    assert pool.DeleteEni("eni-2") in p.actions


def test_an_eni_that_two_releases_of_one_plan_empty_is_deleted_in_that_plan():
    enis = [eni("eni-1", 0, 10, 6), eni("eni-2", 1, 3, 0)]  # 13 bound, max bindable 12
    p = plan(enis, pods=6, limits=NodeLimits(2, 6), config=PoolConfig(1, 1, quick_release=True), due=0.0)
    released = [(a.eni_id, len(a.ips)) for a in p.actions if isinstance(a, pool.ReleaseIps)]
    assert released == [("eni-2", 1), ("eni-2", 2), ("eni-1", 3)]  # at once above the cap, then the timed excess
    assert [a.eni_id for a in p.actions if isinstance(a, pool.DeleteEni)] == ["eni-2"]  # eni-1 keeps 7


def test_empty_eni_is_kept_when_ips_are_wanted_and_its_subnet_has_room():
    p = plan([eni("eni-1", 0, 10, 10), eni("eni-2", 1, 0, 0)], pods=10)
    assert p.actions == (pool.BindIps("eni-2", 5),)


def test_max_enis_counts_secondary_enis_only():
    p = plan([eni("eni-1", 0, 10, 10)], pods=10, limits=NodeLimits(1, 10))
    assert p.actions == () and p.shortfall is None  # capped at 1 x 10: nothing more to want


# -- the same rules, end to end through the ipamd and the simulated VPC -------------------------------
def test_twelve_pods_on_an_empty_node_settle_at_17_bound_on_two_enis():
    c = cluster(max_enis=3, ips_per_eni=10)
    c.create_pods(12, "node-1")
    n = node_state(c)
    assert (n["pods"], n["pending"], n["bound"]) == (12, 0, 17)
    assert [len(e["ips"]) for e in n["enis"]] == [10, 7]


def test_eni_ip_resource_allocatable_is_bound_and_capacity_is_max_bindable():
    c = cluster(max_enis=2, ips_per_eni=6)
    c.create_pods(3, "node-1")
    n = node_state(c)
    assert n["allocatable"] == n["bound"] == 8 and n["capacity"] == 12


def test_scheduler_keeps_pods_pending_while_eni_ip_is_used_up():
    c = cluster(max_enis=1, ips_per_eni=6)
    c.create_pods(8, "node-1")
    n = node_state(c)
    assert (n["pods"], n["pending"], n["allocatable"]) == (6, 2, 6)
    assert {p["phase"] for name, p in c.state()["pods"].items() if name in ("pod-7", "pod-8")} == {"Pending"}
    c.delete_pod("pod-1")
    assert c.pods["pod-7"].phase == "Running" and c.pods["pod-7"].ip is not None


def test_pending_pods_pull_no_ips(monkeypatch):
    """The pool's window counts the pods that hold an IP: every plan is asked with the node's running pods,
    never with those Pending beside them (the cap alone would hide a plan that counted them)."""
    asked = []
    plan = pool.plan

    def spy(*args, **kw):
        asked.append(kw["pods"])
        return plan(*args, **kw)

    monkeypatch.setattr(pool, "plan", spy)
    c = cluster(max_enis=1, ips_per_eni=6, min_prebound=1, max_prebound=1)
    c.create_pods(10, "node-1")
    assert node_state(c)["bound"] == 6  # capped: 4 Pending pods add nothing
    assert node_state(c)["pending"] == 4 and asked[-1] == 6 and max(asked) == 6


def test_deleted_pod_ip_goes_back_to_the_node_pool_not_to_the_vpc():
    c = cluster()
    c.create_pods(3, "node-1")
    ip = c.pods["pod-2"].ip
    available = c.vpc.available("subnet-a")
    c.delete_pod("pod-2")
    assert c.vpc.available("subnet-a") == available
    assert ip in c.nodes["node-1"].ipamd.store.enis[c.nodes["node-1"].ipamd.enis[0].id].ips
    assert c.vpc.owner[ip] is not None


def test_no_subnet_can_serve_sets_a_condition_and_event_and_pods_stay_pending():
    c = cluster(subnets=(subnet("subnet-tiny", "10.0.9.0/29"),), max_enis=3, ips_per_eni=3,
                min_prebound=2, max_prebound=2)
    c.create_pods(6, "node-1")
    n = node_state(c)
    assert n["pending"] == 3 and n["conditions"][0]["type"] == "IPPoolShortfall"
    assert any(e["kind"] == "condition" and e["status"] for e in c.events.items)
    calls = c.vpc.calls
    c.advance(600)
    assert c.vpc.calls - calls <= 600 / 30 + 2  # one subnet poll per 30 s, never a loop on the API


def test_node_recovers_from_subnet_shortfall_once_addresses_free_up():
    c = cluster(subnets=(subnet("subnet-a", "10.0.9.0/28"),), max_enis=2, ips_per_eni=10,
                nodes=(NodeSpec("node-1", ("subnet-a",), 2, 10), NodeSpec("node-2", ("subnet-a",), 2, 10)),
                min_prebound=2, max_prebound=2)
    c.create_pods(5, "node-1")
    c.create_pods(5, "node-2")
    assert node_state(c, "node-2")["pending"] > 0
    c.delete_node("node-1")
    c.advance(60)
    assert node_state(c, "node-2")["pending"] == 0 and node_state(c, "node-2")["conditions"] == []


def test_timed_releases_come_from_the_eni_with_fewest_allocated_and_then_delete_it():
    c = cluster(max_enis=3, ips_per_eni=10)
    c.create_pods(12, "node-1")
    for name in c.newest_pods(8):
        c.delete_pod(name)
    eth2 = c.nodes["node-1"].ipamd.enis[1].id
    c.advance(120 * 8)
    releases = pool_events(c, "release")
    assert [e["eni"] == eth2 for e in releases] == [True] * 7 + [False]  # eth2 emptied first, then eth1
    assert [e["eni"] for e in pool_events(c, "delete_eni")] == [eth2]
    assert node_state(c)["bound"] == 9


def test_delete_node_releases_its_ips_and_deletes_its_enis_in_the_vpc():
    c = cluster()
    full = c.vpc.available("subnet-a")
    c.create_pods(4, "node-1")
    c.delete_node("node-1")
    assert c.vpc.enis == {} and c.vpc.available("subnet-a") == full + 6  # 5 pre-bound + 1 primary


# -- boundaries (each pins a mutation that once survived the suite) ----------------------------------
def test_a_timed_release_gives_back_the_newest_bound_idle_ip_first():
    e = eni("eni-1", 0, 10, 3)  # bound in address order; the first three hold pods
    p = plan([e], pods=3, config=PoolConfig(2, 4, 120, True), due=120.0, now=120.0)
    newest_first = e.idle_ips()[::-1]
    assert p.actions == (pool.ReleaseIps("eni-1", tuple(newest_first[:3])),)  # 10 bound -> 3 + 4


def test_the_release_at_once_above_max_bindable_also_takes_the_newest_idle_ips():
    e = eni("eni-1", 0, 8, 2)
    p = plan([e], pods=2, limits=NodeLimits(1, 5))
    assert p.actions[0] == pool.ReleaseIps("eni-1", tuple(e.idle_ips()[::-1][:3]))  # 8 -> 5


def test_a_subnet_with_exactly_two_free_addresses_serves_a_new_eni():
    # one for the ENI's own primary address, one for a secondary IP
    assert plan([], pods=0, subnets={"subnet-a": 2}).actions == (pool.CreateEni("subnet-a", 1),)


def test_an_empty_eni_in_a_subnet_with_exactly_zero_free_addresses_gives_its_slot_back():
    stuck = eni("eni-2", 1, 0, 0, "subnet-a")
    p = plan([eni("eni-1", 0, 10, 10, "subnet-b"), stuck], pods=10, limits=NodeLimits(2, 10),
             node_subnets=("subnet-a", "subnet-b"), subnets={"subnet-a": 0, "subnet-b": 50})
    assert p.actions[0] == pool.DeleteEni("eni-2")
    assert pool.CreateEni("subnet-b", 5) in p.actions and p.shortfall is None  # the slot serves again


def test_an_empty_eni_in_a_subnet_with_one_free_address_is_kept_and_bound():
    p = plan([eni("eni-1", 0, 10, 10, "subnet-b"), eni("eni-2", 1, 0, 0, "subnet-a")], pods=10,
             limits=NodeLimits(2, 10), node_subnets=("subnet-a", "subnet-b"), subnets={"subnet-a": 1, "subnet-b": 0})
    assert p.actions == (pool.BindIps("eni-2", 1),)


# -- one subnet rule for both modes ---------------------------------------------------------------------
# free addresses of subnet-a, -b, -c -> the subnet a new ENI goes in (the expectation is written out by
# hand: the most free addresses among those with 2 or more, ties to the one listed first)
SUBNET_CASES = [
    ((10, 40, 20), "subnet-b"),
    ((40, 40, 20), "subnet-a"),
    ((1, 1, 2), "subnet-c"),
    ((2, 1, 0), "subnet-a"),
    ((1, 1, 1), None),
    ((0, 0, 0), None),
    ((3, 0, 3), "subnet-a"),
]


@pytest.mark.parametrize(("free", "expected"), SUBNET_CASES)
def test_shared_eni_and_static_ip_modes_pick_a_new_enis_subnet_by_the_same_rule(free, expected):


    names = ("subnet-a", "subnet-b", "subnet-c")
    free_map = dict(zip(names, free, strict=True))
    shared = plan([], pods=0, node_subnets=names, subnets=free_map)
    static = choose_eni([], list(names), free_map, DEFAULT_LIMITS)
    if expected is None:
        assert shared.actions == () and shared.shortfall.startswith("no subnet can serve a new ENI: subnet-a (")
        assert static.new_subnet is None and static.reason == shared.shortfall
    else:
        assert shared.actions[0].subnet_id == expected
        assert static == EniChoice(new_subnet=expected)


@pytest.mark.parametrize(("free", "expected"), [(1, EniChoice(new_subnet="subnet-b")),
                                                 (0, EniChoice(reason="subnet-b has no address left for a new ENI"))])
def test_a_retained_ip_needs_only_the_new_enis_primary_address_free_in_its_subnet(free, expected):
    names = ["subnet-a", "subnet-b"]
    assert choose_eni([], names, {"subnet-a": 50, "subnet-b": free}, DEFAULT_LIMITS, subnet="subnet-b") == expected


def test_the_ipamd_forgets_what_it_learned_of_ips_and_enis_it_no_longer_holds():
    """What the ipamd remembers of when it saw an IP or ENI (for the describe lag) is bounded by what the node
    holds now, however long the churn: IPs released and ENIs deleted are forgotten."""
    c = cluster(release_interval=60)
    for _ in range(20):
        c.create_pods(25, "node-1")
        for name in [n for n in c.state()["pods"]]:
            c.delete_pod(name)
        c.advance(3600)  # the pool shrinks back: idle IPs go, ENIs with none left go
    ipamd = c.nodes["node-1"].ipamd
    held = {*ipamd.store.enis, *(ip for e in ipamd.store.enis.values() for ip in e.ips)}
    seen_ips = {IPv4Address(n) for n, _ in SEEN.iter_unpack(ipamd._ips_seen or b"")}
    assert set(ipamd._eni_seen_at) | seen_ips <= held


@given(st.lists(st.tuples(st.sampled_from(["bind", "unbind", "ask", "wait", "wait", "back"]), st.integers(0, 7),
                          st.sampled_from([0.0, 0.5, 3.0, 9.99, 10.0, 25.0])), max_size=80))
@example([("bind", 1, 0.0), ("wait", 0, 3.0), ("unbind", 1, 0.0), ("ask", 1, 0.0), ("bind", 4, 0.0),
          ("wait", 0, 9.99), ("ask", 1, 0.0), ("ask", 4, 0.0), ("wait", 0, 0.5), ("ask", 4, 0.0)])
@example([("wait", 0, 25.0), ("bind", 0, 0.0), ("back", 0, 3.0), ("bind", 1, 0.0), ("wait", 0, 10.0),
          ("unbind", 1, 0.0), ("ask", 0, 0.0)])  # the newest time is not the last pair's when the clock stepped back
@example([("wait", 0, 25.0), ("bind", 0, 0.0), ("back", 0, 3.0), ("bind", 0, 0.0), ("wait", 0, 10.0),
          ("ask", 0, 0.0)])  # learned again at an earlier time: the later learning counts, as a table's would
@example([("bind", 1, 0.0), ("wait", 0, 10.0), ("bind", 0, 0.0), ("back", 0, 0.5), ("ask", 1, 0.0)])  # pairs
# dropped as stale at 10 s, then the clock back to 9.5 s: they are not young again (found by `make fuzz`)
def test_the_ipamd_knows_an_ip_for_the_describe_lag_exactly_as_a_table_of_every_ip_would(steps):
    """The ipamd keeps when it saw IPs bound only while the newest is younger than the describe lag. Against
    the plain rule (a table of every bound IP's time, an unbound IP dropped), over binds, unbinds, questions
    and waits of every length around the lag (10 s), and a clock that steps back, it answers the same. Both
    read the time as the ipamd's records do, never going back (`_lag_now`): a step back lengthens the lag."""
    c = cluster()
    ipamd = c.nodes["node-1"].ipamd
    window = ipamd.retry.resync_window
    ips = [IPv4Address(f"10.9.0.{i + 1}") for i in range(8)]
    table: dict[IPv4Address, float] = {}
    latest = float("-inf")
    for op, i, seconds in steps:
        latest = now = max(latest, c.clock.now())
        assert ipamd._lag_now() == now
        if op == "bind":
            ipamd._learn_ips((ips[i], ips[(i + 3) % 8]), now)
            table.update(dict.fromkeys((ips[i], ips[(i + 3) % 8]), now))
        elif op == "unbind":
            ipamd._forget_ips((ips[i],), now)
            table.pop(ips[i], None)
        elif op == "ask":
            assert ipamd._known_for(ips[i], now) == (now - table.get(ips[i], float("-inf")) >= window)
        elif op == "back":
            c.clock.t = c.clock.now() - seconds  # a wall clock can step back; the simulated one cannot
        else:
            c.clock.advance_to(c.clock.now() + seconds)
        if op in ("bind", "unbind") and ipamd._ips_seen is not None:  # what it keeps is younger than the lag
            assert now - max(t for _, t in SEEN.iter_unpack(ipamd._ips_seen)) < window


def test_a_resync_that_forgets_an_ip_judges_the_rest_at_its_own_time_not_the_clocks():
    """A re-sync asks whether each IP is older than the describe lag at the time it began; its calls take
    time on a real clock. Forgetting one ENI's IP must not drop, as stale at the clock's later time, the
    record that still makes another ENI's IP fresh at the re-sync's time (a red-team pass found it)."""
    c = cluster()
    ipamd = c.nodes["node-1"].ipamd
    window = ipamd.retry.resync_window
    fresh, gone = IPv4Address("10.9.0.1"), IPv4Address("10.9.0.2")
    ipamd._learn_ips((fresh,), 100.0)
    c.clock.advance_to(100.0 + window + 0.5)  # the clock, once the re-sync's calls are done
    resync_now = 100.0 + window - 0.2  # when the re-sync began: `fresh` was 9.8 s old
    ipamd._forget_ips((gone,), resync_now)
    assert not ipamd._known_for(fresh, resync_now)


def test_the_ipamd_drops_its_record_of_ips_seen_once_the_newest_is_older_than_the_describe_lag():
    c = cluster()
    ipamd = c.nodes["node-1"].ipamd
    assert ipamd._ips_seen is not None  # the pool bound its first IPs just now
    c.advance(ipamd.retry.resync_window)
    c.create_pod("pod-a", "node-1")  # one more IP is bound: the record starts again with it alone
    assert ipamd._ips_seen is not None and len(ipamd._ips_seen) == SEEN.size
    c.advance(ipamd.retry.resync_window)
    c.delete_pod("pod-a")
    c.advance(3600)  # the pool releases idle IPs: the stale record goes, unread
    assert ipamd._ips_seen is None


# -- the tally: what a plan reads -------------------------------------------------------------------------
class Unread(list):
    """ENIs a plan must not read: iterating them fails the test."""

    def __iter__(self):
        raise AssertionError("the plan read every ENI where the tally answers")


@pytest.mark.parametrize(("bound", "pods", "due", "now", "expect_due"), [
    (7, 4, None, 0.0, None),       # inside the window (6 to 8): nothing to do
    (10, 0, None, 50.0, 170.0),    # above it: the release waits a full interval, no ENI read yet
    (10, 0, 170.0, 100.0, 170.0),  # still waiting
])
def test_a_plan_that_acts_on_no_eni_reads_the_tally_only(bound, pods, due, now, expect_due):
    real = [eni("eni-1", 0, bound, pods)]
    p = pool.plan(Unread(real), tally=Tally.of(real), pods=pods, node_subnets=["subnet-a"],
                  subnet_free=lambda: {"subnet-a": 200}, limits=DEFAULT_LIMITS, config=PoolConfig(2, 4, 120),
                  release_due=due, now=now)
    assert p.actions == () and p.release_due == expect_due
    assert pool.over_max_bindable(Unread(real), NodeLimits(1, 10), Tally.of(real)) == 0


@pytest.mark.parametrize("seed", range(40))
def test_a_plan_with_the_tally_is_the_plan_that_counts_the_enis(seed):
    rng = random.Random(seed)
    enis = []
    for i in range(rng.randint(0, 3)):
        bound = rng.randint(0, 10)
        enis.append(eni(f"eni-{i}", i, bound, rng.randint(0, bound)))
    pods = sum(e.allocated for e in enis)
    limits = NodeLimits(rng.randint(1, 3), rng.randint(2, 10))
    config = PoolConfig(rng.randint(1, 4), rng.randint(4, 8), 120, rng.random() < 0.5)
    due = rng.choice([None, 0.0, 500.0])
    args = {"pods": pods, "limits": limits, "config": config, "due": due, "now": 100.0}
    assert pool.plan(enis, tally=Tally.of(enis), pods=pods, node_subnets=["subnet-a"],
                     subnet_free=lambda: {"subnet-a": 200}, limits=limits, config=config, release_due=due,
                     now=100.0) == plan(enis, **{k: v for k, v in args.items() if k != "due"}, due=due)


def test_an_eni_with_no_secondary_ip_left_is_deleted_when_no_ip_is_wanted_reading_the_kept_tally():
    """The seed's rule, through the datastore's kept tally (what the ipamd passes): inside the window,
    nothing released, an empty ENI still goes."""
    from eni_core.datastore import Datastore

    store = Datastore("node-1")
    for e in (eni("eni-1", 0, 6, 4), eni("eni-2", 1, 0, 0)):
        store.add_eni(e)
    p = pool.plan(store.enis.values(), tally=store.tally, pods=4, node_subnets=["subnet-a"],
                  subnet_free=lambda: {"subnet-a": 200}, limits=DEFAULT_LIMITS, config=PoolConfig(2, 4, 120),
                  release_due=None, now=0.0)
    assert [a for a in p.actions if isinstance(a, pool.DeleteEni)] == [pool.DeleteEni("eni-2")]
