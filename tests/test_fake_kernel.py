"""FakeKernel refuses and cascades as Linux does for the operations enilab uses: each case here is one the
root tests see the real kernel do (duplicate rules, deletes of what is gone, gateways off the link, a
deleted link taking its state with it)."""
from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from eni_core.fake_kernel import FakeHost, FakeKernel
from eni_core.ops import (
    ANY_TABLE,
    DEFAULT,
    IGNORE_ALL,
    MAIN_TABLE,
    AddAddress,
    AddNeighbour,
    AddRoute,
    AddRule,
    AddVeth,
    DeleteLink,
    DeleteNeighbour,
    DeleteRoute,
    DeleteRule,
    Neighbour,
    Route,
    Rule,
    SetLinkState,
    SetSysctl,
)

POD = IPv4Network("10.0.1.7/32")
GW = IPv4Address("10.0.1.1")


def kernel() -> FakeKernel:
    k = FakeKernel()
    k.add_link("eth1", index=3, up=True)
    k.add_link("down0", index=9)
    return k


REFUSALS = [
    ([AddRule(Rule(1536, 2003, src=POD))] * 2, errno.EEXIST),
    ([DeleteRule(Rule(1536, 2003, src=POD))], errno.ENOENT),
    ([DeleteRule(Rule(1536, ANY_TABLE, src=POD))], errno.ENOENT),
    ([DeleteRoute(Route(2003, DEFAULT, 3, GW, onlink=True))], errno.ESRCH),
    ([AddRoute(Route(2003, DEFAULT, 3, GW))], errno.ENETUNREACH),  # the gateway is not on eth1 without onlink
    ([AddRoute(Route(2003, DEFAULT, 42, GW, onlink=True))], errno.ENODEV),
    ([AddRoute(Route(2009, DEFAULT, 9, GW, onlink=True))], errno.ENETDOWN),
    ([SetLinkState(42, up=True)], errno.ENODEV),
    ([DeleteLink("eth7")], errno.ENODEV),
    ([DeleteNeighbour(3, GW)], errno.ENOENT),
    ([AddNeighbour(Neighbour(42, GW, "02:00:00:00:00:01"))], errno.ENODEV),
    ([SetSysctl("net.ipv4.conf.eth7.rp_filter", 0)], errno.ENOENT),
]


@pytest.mark.parametrize("ops, err", REFUSALS, ids=lambda v: str(v[-1]) if isinstance(v, list) else errno.errorcode[v])
def test_the_fake_refuses_what_the_kernel_refuses_and_names_the_operation(ops, err):
    k = kernel()
    errors = k.apply(ops, ignore=())
    assert [e.errno for e in errors] == [err]
    assert errors[0].op == ops[-1] and str(ops[-1]) in str(errors[0])


def test_idempotent_apply_drops_exists_and_gone_but_not_the_rest():
    k = kernel()
    ops = [AddRule(Rule(1536, 2003, src=POD))] * 2 + [DeleteLink("eth7"), AddRoute(Route(2003, DEFAULT, 3, GW))]
    assert [e.errno for e in k.apply(ops, ignore=IGNORE_ALL)] == [errno.ENETUNREACH]


def test_a_rule_delete_in_any_table_removes_the_rule_whatever_its_table():
    k = kernel()
    k.apply([AddRule(Rule(1536, 2004, src=POD))])
    assert k.apply([DeleteRule(Rule(1536, ANY_TABLE, src=POD))], ignore=()) == []
    assert all(r.priority != 1536 for r in k.rules())


def test_a_gateway_is_reachable_through_a_link_scope_route_or_a_covering_address():
    k = kernel()
    via_route = [AddRoute(Route(MAIN_TABLE, IPv4Network("169.254.1.1/32"), 3)),
                 AddRoute(Route(MAIN_TABLE, DEFAULT, 3, IPv4Address("169.254.1.1")))]
    assert k.apply(via_route, ignore=()) == []
    k.add_link("eth2", index=4, up=True)
    via_address = [AddAddress(4, IPv4Interface("10.0.2.5/24")),
                   AddRoute(Route(100, DEFAULT, 4, IPv4Address("10.0.2.1")))]
    assert k.apply(via_address, ignore=()) == []


def test_a_route_replaces_the_route_to_the_same_destination_in_its_table():
    k = kernel()
    k.add_link("eth2", index=4, up=True)
    k.apply([AddRoute(Route(MAIN_TABLE, POD, 3)), AddRoute(Route(MAIN_TABLE, POD, 4))], ignore=())
    assert [r.oif for r in k.routes() if r.dst == POD] == [4]


def test_a_link_taken_down_loses_its_routes_and_a_deleted_link_its_neighbours_addresses_and_sysctls():
    k = kernel()
    k.apply([AddRoute(Route(2003, DEFAULT, 3, GW, onlink=True)), AddNeighbour(Neighbour(3, GW, "02:00:00:00:00:01")),
             AddAddress(3, IPv4Interface("10.0.1.9/32"))], ignore=())
    k.apply([SetLinkState(3, up=False)])
    assert k.routes() == []
    k.apply([DeleteLink("eth1")], ignore=())
    assert k.neighbours() == [] and k.addresses() == []
    assert "net.ipv4.conf.eth1.rp_filter" not in k.sysctls


def test_a_new_links_rp_filter_starts_from_conf_default():
    k = FakeKernel()
    k.apply([SetSysctl("net.ipv4.conf.default.rp_filter", 2)])
    k.add_link("eth1")
    assert k.read_sysctls(["net.ipv4.conf.eth1.rp_filter", "net.ipv4.conf.eth9.rp_filter"]) == {
        "net.ipv4.conf.eth1.rp_filter": 2}


def test_a_veth_puts_its_peer_in_the_namespace_at_the_path_and_deleting_either_end_removes_both():
    host = FakeHost()
    node, pod = host.add_namespace("/n"), host.add_namespace("/p")
    add = AddVeth("veth0", "eth0", "/p", index=64, mac="02:00:00:00:00:40")
    assert node.apply([add], ignore=()) == []
    assert node.link("veth0").up and node.link("veth0").mac == "02:00:00:00:00:40"
    assert pod.link("eth0") is not None and not pod.link("eth0").up
    assert [e.errno for e in node.apply([add], ignore=())] == [errno.EEXIST]
    taken = AddVeth("veth1", "eth1", "/p", index=64)
    assert [e.errno for e in node.apply([taken], ignore=())] == [errno.EBUSY]
    pod.apply([DeleteLink("eth0")], ignore=())
    assert node.link("veth0") is None
    node.apply([AddVeth("veth0", "eth0", "/p", index=64)], ignore=())
    host.remove_namespace("/p")
    assert node.link("veth0") is None


def test_a_veth_end_up_before_its_peer_is_operationally_up_only_once_read_after_the_peer_comes_up():
    host = FakeHost()
    node, pod = host.add_namespace("/n"), host.add_namespace("/p")
    node.apply([AddVeth("veth0", "eth0", "/p", index=64)], ignore=())
    oper_up = lambda k, name: next(lk.oper_up for lk in k.links() if lk.ifname == name)  # noqa: E731
    node.apply([SetLinkState(1, up=True)], ignore=())
    assert not oper_up(node, "veth0")  # up, no carrier
    pod.apply([SetLinkState(2, up=True)], ignore=())
    assert not oper_up(pod, "eth0") and not oper_up(node, "veth0")  # a dump: the kernel has not got to them
    assert node.link("veth0").oper_up and oper_up(node, "veth0")  # asked for, it is readied
    assert not oper_up(pod, "eth0") and pod.link("eth0").oper_up  # each link by itself
    pod.apply([SetLinkState(2, up=False)], ignore=())
    assert not node.link("veth0").oper_up and node.link("veth0").up and not pod.link("eth0").oper_up
    assert not node.link("lo").oper_up  # lo stays "unknown", up or not


def test_opening_a_path_that_is_no_namespace_fails_as_the_kernel_would():
    host = FakeHost()
    host.files.add("/etc/hostname")
    with pytest.raises(OSError) as err:
        host.open("/etc/hostname")
    assert err.value.errno == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        host.open("/run/netns/none")


def test_an_injected_refusal_fails_that_operation_only():
    k = kernel()
    k.refuse = lambda op: errno.ENOBUFS if isinstance(op, AddRule) and op.rule.priority == 512 else None
    errors = k.apply([AddRule(Rule(512, MAIN_TABLE, dst=POD)), AddRule(Rule(1536, 2003, src=POD))], ignore=())
    assert [e.errno for e in errors] == [errno.ENOBUFS]
    assert Rule(1536, 2003, src=POD) in k.rules()
