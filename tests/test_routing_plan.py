"""The routing plan and its reconcile, without root: `plan_node` in the domain's words, and `sync` against a
`FakeKernel` that refuses what Linux refuses (stale rules go, foreign state stays, a second sync does nothing)."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eni_core import routing
from eni_core.fake_kernel import FakeKernel
from eni_core.ops import DEFAULT, MAIN_TABLE, AddRoute, AddRule, DeleteRoute, DeleteRule, Proto, Route, Rule, SetSysctl
from eni_core.routing import EniLink, PodLink, plan_node

GW = IPv4Address("10.0.1.1")
GW2 = IPv4Address("10.0.2.1")
ETH1_MAC, ETH2_MAC = "52:54:00:00:00:01", "52:54:00:00:00:02"


def ip(s: str) -> IPv4Address:
    return IPv4Address(s)


def host(s: str) -> IPv4Network:
    return IPv4Network(f"{s}/32")


def node(enis_up: bool = False) -> FakeKernel:
    """A node as the testbed builds one: eth0 (2), ENIs eth1 (3) and eth2 (4) not up yet."""
    k = FakeKernel()
    k.add_link("eth0", index=2, up=True)
    k.add_link("eth1", index=3, mac=ETH1_MAC, up=enis_up)
    k.add_link("eth2", index=4, mac=ETH2_MAC, up=enis_up)
    return k


def sync(k: FakeKernel, pods: list[tuple[str, str, str]], enis=((ETH1_MAC, GW), (ETH2_MAC, GW2)), **kw):
    return routing.sync(k, list(enis), [(ip(a), mac, veth) for a, mac, veth in pods], **kw)


def veth(k: FakeKernel, name: str, index: int) -> None:
    k.add_link(name, index=index, up=True)


# -- plan_node, table-driven -----------------------------------------------------------------------------
ETH1 = EniLink("eth1", 3, ETH1_MAC, GW)
ETH5 = EniLink("eth5", 7, "52:54:00:00:00:05", IPv4Address("10.0.5.1"))


@pytest.mark.parametrize("eni, pod, rules, routes", [
    (ETH1, PodLink(ip("10.0.1.7"), 3, 64),
     {Rule(512, MAIN_TABLE, dst=host("10.0.1.7")), Rule(1536, 2003, src=host("10.0.1.7"))},
     {Route(2003, DEFAULT, 3, GW, onlink=True), Route(MAIN_TABLE, host("10.0.1.7"), 64)}),
    (ETH5, PodLink(ip("10.0.5.9"), 7, 80),
     {Rule(512, MAIN_TABLE, dst=host("10.0.5.9")), Rule(1536, 2007, src=host("10.0.5.9"))},
     {Route(2007, DEFAULT, 7, IPv4Address("10.0.5.1"), onlink=True), Route(MAIN_TABLE, host("10.0.5.9"), 80)}),
])
def test_plan_gives_each_pod_a_512_to_rule_a_1536_from_rule_in_link_index_plus_2000_and_a_host_route(
        eni, pod, rules, routes):
    plan = plan_node([eni], [pod])
    assert plan.rules == rules
    assert plan.routes == routes
    assert plan.links_up == {eni.ifindex}


def test_plan_routes_each_eni_table_by_default_via_the_subnet_gateway_onlink_and_ours_by_proto():
    plan = plan_node([ETH1, ETH5], [])
    defaults = sorted((r for r in plan.routes if r.dst == DEFAULT), key=lambda r: r.table)
    assert [(r.table, r.oif, r.gateway, r.onlink, r.proto) for r in defaults] == [
        (2003, 3, GW, True, Proto.ENILAB), (2007, 7, IPv4Address("10.0.5.1"), True, Proto.ENILAB)]


def test_plan_sets_rp_filter_0_on_all_default_the_primary_and_every_eni_and_forwarding_on():
    plan = plan_node([ETH1, ETH5], [], primary="ens5")
    assert dict(plan.sysctls) == {"net.ipv4.ip_forward": 1, **{f"net.ipv4.conf.{d}.rp_filter": 0
                                                               for d in ("all", "default", "ens5", "eth1", "eth5")}}


def test_plan_leaves_out_a_pod_whose_eni_link_has_not_appeared():
    plan = plan_node([ETH1], [PodLink(ip("10.0.5.9"), 7, 80)])
    assert plan.rules == frozenset() and all(r.table != MAIN_TABLE for r in plan.routes)


# -- sync against the fake kernel --------------------------------------------------------------------------
def owned_rules(k: FakeKernel) -> set[str]:
    return {str(r) for r in k.rules() if r.priority in (512, 1536)}


def test_sync_brings_a_bare_node_to_the_plan_and_a_second_sync_does_nothing():
    k = node()
    veth(k, "veth-a", 64)
    report = sync(k, [("10.0.1.7", ETH1_MAC, "veth-a")])
    assert report.errors == []
    assert owned_rules(k) == {"512: to 10.0.1.7 lookup main", "1536: from 10.0.1.7 lookup 2003"}
    assert {str(r) for r in k.routes()} == {"default via 10.0.1.1 dev 3 onlink table 2003",
                                            "default via 10.0.2.1 dev 4 onlink table 2004",
                                            "10.0.1.7 dev 64 table 254"}
    assert {lk.ifname for lk in k.links() if lk.up} >= {"eth1", "eth2"}
    again = sync(k, [("10.0.1.7", ETH1_MAC, "veth-a")])
    assert (again.operations, again.sysctls, again.errors) == ([], {}, [])
    assert len(k.batches[-1]) == 0


def test_sync_sets_rp_filter_0_where_the_kernel_had_1_and_leaves_a_pinned_key_alone():
    k = node()
    report = sync(k, [], leave=["net.ipv4.conf.eth2.rp_filter"])
    assert report.sysctls == {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
                              "net.ipv4.conf.default.rp_filter": 0, "net.ipv4.conf.eth0.rp_filter": 0,
                              "net.ipv4.conf.eth1.rp_filter": 0}
    assert k.sysctls["net.ipv4.conf.eth2.rp_filter"] == 1
    assert k.read_sysctls(["net.ipv4.conf.all.rp_filter", "net.ipv4.conf.eth1.rp_filter"]) == {
        "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.eth1.rp_filter": 0}


def test_sync_deletes_the_rules_and_route_of_a_pod_that_is_gone():
    k = node()
    veth(k, "veth-a", 64)
    veth(k, "veth-b", 65)
    sync(k, [("10.0.1.7", ETH1_MAC, "veth-a"), ("10.0.2.8", ETH2_MAC, "veth-b")])
    report = sync(k, [("10.0.1.7", ETH1_MAC, "veth-a")])  # pod b's IP released, its veth still there
    assert sorted(report.operations) == ["delete route 10.0.2.8 dev 65 table 254",
                                         "delete rule 1536: from 10.0.2.8 lookup 2004",
                                         "delete rule 512: to 10.0.2.8 lookup main"]
    assert owned_rules(k) == {"512: to 10.0.1.7 lookup main", "1536: from 10.0.1.7 lookup 2003"}
    assert report.errors == []


def test_sync_moves_a_pods_from_rule_when_its_ip_is_now_on_another_eni():
    k = node()
    veth(k, "veth-a", 64)
    sync(k, [("10.0.1.7", ETH1_MAC, "veth-a")])
    sync(k, [("10.0.1.7", ETH2_MAC, "veth-a")])
    assert "1536: from 10.0.1.7 lookup 2004" in owned_rules(k)
    assert "1536: from 10.0.1.7 lookup 2003" not in owned_rules(k)


FOREIGN = [
    AddRule(Rule(100, MAIN_TABLE, src=host("192.0.2.9"))),  # another priority
    AddRule(Rule(1000, 3000, dst=IPv4Network("10.9.0.0/16"))),  # a table outside ours, another priority
    AddRoute(Route(MAIN_TABLE, IPv4Network("10.0.0.0/8"), 2, proto=Proto.STATIC)),  # main, not proto 77
    AddRoute(Route(100, DEFAULT, 2, proto=Proto.STATIC)),  # a table below every link index + 2000
    AddRoute(Route(51820, DEFAULT, 2, proto=Proto.STATIC)),  # wg-quick's table: a link index's number too
    AddRoute(Route(2005, DEFAULT, 2, proto=Proto.STATIC)),  # an ENI table's number, not written by enilab
]


@pytest.mark.parametrize("foreign", FOREIGN, ids=str)
def test_sync_leaves_rules_and_routes_it_does_not_own_alone(foreign):
    k = node()
    assert k.apply([foreign], ignore=()) == []
    report = sync(k, [])
    assert report.errors == []
    assert not any("delete" in op for op in report.operations)
    assert (foreign.rule in k.rules()) if isinstance(foreign, AddRule) else (foreign.route in k.routes())


@pytest.mark.parametrize("index", [999, 1000, 1500, 70_000])
def test_an_eni_at_any_link_index_has_its_table_kept_and_given_up_with_it(index):
    k = FakeKernel()
    k.add_link("eth1", index=index, mac=ETH1_MAC, up=True)
    enis = [(ETH1_MAC, IPv4Address("10.0.1.1"))]
    first = routing.sync(k, enis, [])
    assert first.errors == [] and {r.table for r in k.routes()} == {index + 2000}
    assert routing.sync(k, enis, []).operations == []  # a table past 2999 is seen as ours, not added again
    gone = routing.sync(k, [], [])
    assert gone.errors == [] and k.routes() == []


def test_sync_repairs_drift_a_deleted_eni_route_a_deleted_rule_and_a_stray_rule_at_our_priority():
    k = node()
    veth(k, "veth-a", 64)
    sync(k, [("10.0.1.7", ETH1_MAC, "veth-a")])
    k.apply([DeleteRule(Rule(1536, 2003, src=host("10.0.1.7"))),
             AddRule(Rule(1536, 2003, src=host("10.0.1.99")))], ignore=())
    k.apply([DeleteRoute(Route(2003, DEFAULT, 3, GW, onlink=True))], ignore=())
    report = sync(k, [("10.0.1.7", ETH1_MAC, "veth-a")])
    assert sorted(report.operations) == ["add route default via 10.0.1.1 dev 3 onlink table 2003",
                                         "add rule 1536: from 10.0.1.7 lookup 2003",
                                         "delete rule 1536: from 10.0.1.99 lookup 2003"]
    assert sync(k, [("10.0.1.7", ETH1_MAC, "veth-a")]).operations == []


def test_a_pod_whose_veth_is_missing_waits_for_the_next_sync():
    k = node()
    sync(k, [("10.0.1.7", ETH1_MAC, "veth-a")])
    assert owned_rules(k) == set()
    veth(k, "veth-a", 64)
    sync(k, [("10.0.1.7", ETH1_MAC, "veth-a")])
    assert len(owned_rules(k)) == 2


def test_reconcile_deletes_before_it_adds_and_brings_links_up_before_their_routes():
    plan = plan_node([ETH1], [PodLink(ip("10.0.1.7"), 3, 64)])
    observed = routing.observe([Rule(512, MAIN_TABLE, dst=host("10.0.1.99"))], [], [], plan.sysctls)
    kinds = [type(op).__name__ for op in routing.reconcile(plan, observed)]
    assert kinds == ["DeleteRule", "SetLinkState", "AddRoute", "AddRoute", "AddRule", "AddRule"]


def test_reconcile_writes_only_the_sysctls_that_differ():
    plan = plan_node([ETH1], [])
    observed = routing.observe([], list(plan.routes), [], {**plan.sysctls, "net.ipv4.conf.eth1.rp_filter": 2})
    ops = routing.reconcile(plan, routing.NodePlan(observed.rules, observed.routes, plan.links_up, observed.sysctls))
    assert ops == [SetSysctl("net.ipv4.conf.eth1.rp_filter", 0)]


@pytest.mark.parametrize("pods", [0, 1, 7, 30])
def test_sync_from_scratch_needs_one_batch_and_leaves_two_rules_per_pod(pods):
    k = node()
    entries = []
    for i in range(pods):
        veth(k, f"veth{i}", 64 + i)
        entries.append((f"10.0.{1 + i % 2}.{10 + i}", (ETH1_MAC, ETH2_MAC)[i % 2], f"veth{i}"))
    sync(k, entries)
    assert len(k.batches) == 1 and len(owned_rules(k)) == 2 * pods
    assert sync(k, entries).operations == []


# -- the routing agent's input, one home for the node agent and the netns backend ----------------------
def test_node_input_reads_the_datastore_enis_with_a_known_gateway_and_pods_on_known_enis():
    from eni_core.datastore import Allocation
    from eni_core.model import Eni

    eth1 = Eni("eni-1", "subnet-a", ETH1_MAC, ip("10.0.1.5"), 1, 0)
    eth2 = Eni("eni-2", "subnet-z", ETH2_MAC, ip("10.0.9.5"), 2, 1)  # no gateway known: no table for it
    pods = {"default/a": Allocation("default/a", ip("10.0.1.7"), "eni-1"),
            "default/b": Allocation("default/b", ip("10.0.9.7"), "eni-2"),
            "default/gone": Allocation("default/gone", ip("10.0.1.8"), "eni-9")}
    enis, pod_inputs = routing.node_input([eth1, eth2], pods, {"subnet-a": GW})
    assert enis == [(ETH1_MAC, GW)]
    assert pod_inputs == [(ip("10.0.1.7"), ETH1_MAC, routing.host_veth_name("default/a")),
                          (ip("10.0.9.7"), ETH2_MAC, routing.host_veth_name("default/b"))]


@pytest.mark.parametrize(("used", "expected"), [
    (set(), 64), ({1, 2, 3, 63}, 64), ({64}, 65), ({64, 65, 67}, 66), (set(range(64, 1000)), 1000),
])
def test_a_pod_veth_gets_the_lowest_free_index_from_the_host_index_base(used, expected):
    assert routing.HOST_INDEX_BASE == 64
    assert routing.free_host_index(used) == expected


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=200))
def test_host_indexes_hand_out_what_free_host_index_would_without_reading_the_others(steps):
    """Pods come (True) and go (False) in any order; each new pod's index is the lowest free one."""
    indexes, held = routing.HostIndexes(), {}
    for comes, n in steps:
        pod = f"pod-{n}"
        if comes:
            expected = held.get(pod, routing.free_host_index(set(held.values())))
            held[pod] = indexes.index(pod)
            assert held[pod] == expected
        else:
            indexes.give_back(pod)
            held.pop(pod, None)
        assert len(indexes) == len(held)


def test_a_pods_veth_macs_are_stable_locally_administered_unicast_and_differ_between_its_two_ends():
    for pod in ("pod-1", "default/web-0", "cni/net/0123456789ab/eth0"):
        host, own = routing.host_veth_mac(pod), routing.pod_veth_mac(pod)
        assert host == routing.host_veth_mac(pod) and own == routing.pod_veth_mac(pod)
        for mac in (host, own):
            octets = mac.split(":")
            assert len(octets) == 6 and all(len(o) == 2 for o in octets)
            assert int(octets[0], 16) & 0b11 == 0b10  # locally administered, not multicast
        assert host != own
    assert routing.host_veth_mac("pod-1") != routing.host_veth_mac("pod-2")
