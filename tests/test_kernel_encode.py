"""The netlink adapter's encoding of operations: an operation keeps its request once encoded, and that
memo changes nothing an operation's user can see."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eni_core import kernel, ops, routing
from eni_core import netlink as nl
from eni_core.kernel import encode


def _wire(request: nl.Request) -> tuple[int, int, bytes, str]:
    return request.type, request.flags, request.body, request.what


def test_an_operation_encoded_again_is_the_same_request_and_equals_a_twin_made_apart():
    op = ops.AddRoute(ops.Route(254, IPv4Network("10.0.1.7/32"), 20))
    twin = ops.AddRoute(ops.Route(254, IPv4Network("10.0.1.7/32"), 20))
    before = (repr(op), hash(op))
    first = encode(op)
    assert encode(op) is first
    assert _wire(encode(twin)) == _wire(first)
    assert op == twin and (repr(op), hash(op)) == before and {op: 1}[twin] == 1


def test_the_pods_shared_operations_are_encoded_once_for_every_pod(monkeypatch):
    made = []
    counted = {kind: (lambda op, f=f: made.append(op) or f(op)) for kind, f in kernel._ENCODERS.items()}
    monkeypatch.setattr(kernel, "_ENCODERS", counted)
    a = routing.plan_pod(2, IPv4Address("10.0.1.7"), "02:00:00:00:00:01")
    b = routing.plan_pod(2, IPv4Address("10.0.1.8"), "02:00:00:00:00:02")
    first = [encode(op) for op in a]
    assert a[2] in made and a[3] in made  # pod a's own (the shared ones may be encoded already, by any ADD)
    del made[:]
    second = [encode(op) for op in b]
    assert made == [b[2], b[3]]  # pod b's address and neighbour; lo up, eth0 up and both routes are a's
    assert [x is y for x, y in zip(first, second, strict=True)] == [True, True, False, False, True, True]
    assert first[2].body != second[2].body


def test_a_veth_is_encoded_with_the_fd_it_is_given_each_time():
    veth = ops.AddVeth("enia", "eth0", "/run/netns/p", 20, "02:00:00:00:00:01", 2, "02:00:00:00:00:02")
    assert encode(veth, {"/run/netns/p": 5}).body != encode(veth, {"/run/netns/p": 6}).body


def test_what_is_not_an_operation_is_refused_by_name():
    with pytest.raises(TypeError, match="not a netlink operation"):
        encode(ops.SetSysctl("net.ipv4.ip_forward", 1))
    with pytest.raises(TypeError, match="not a netlink operation"):
        encode("add route")  # type: ignore[arg-type]


def _veth_nested(ifname, peer, fd, index, mac, peer_index, peer_mac, up):
    """The veth request built the plain way, each nest an `_attr` of its parts: what `veth_add` must equal."""
    peer_attrs = nl._str(nl.IFLA_IFNAME, peer) + nl._u32(nl.IFLA_NET_NS_FD, fd)
    if peer_mac:
        peer_attrs += nl._attr(nl.IFLA_ADDRESS, nl._mac(peer_mac))
    info = nl._str(nl.IFLA_INFO_KIND, "veth") + nl._attr(nl.IFLA_INFO_DATA, nl._attr(
        nl.VETH_INFO_PEER, nl._IFINFO.pack(nl.AF_UNSPEC, 0, peer_index, 0, 0) + peer_attrs))
    flags = nl.IFF_UP if up else 0
    body = nl._IFINFO.pack(nl.AF_UNSPEC, 0, index, flags, flags) + nl._str(nl.IFLA_IFNAME, ifname)
    body += nl._attr(nl.IFLA_LINKINFO, info)
    if mac:
        body += nl._attr(nl.IFLA_ADDRESS, nl._mac(mac))
    return body


_names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=15)
_ethernet = st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":"))
_any_length = st.binary(min_size=1, max_size=20).map(lambda b: b.hex(":"))  # what the kernel must judge
_macs = st.none() | _ethernet | _any_length


@given(_names, _names, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), _macs, st.integers(0, 2**31 - 1),
       _macs, st.booleans())
def test_a_veth_request_is_byte_for_byte_the_plainly_nested_one(ifname, peer, fd, index, mac, peer_index, peer_mac,
                                                                up):
    made = nl.veth_add(ifname, peer, fd, index=index, mac=mac, peer_index=peer_index, peer_mac=peer_mac, up=up)
    assert made.body == _veth_nested(ifname, peer, fd, index, mac, peer_index, peer_mac, up)


@given(st.integers(0, 2**31 - 1), st.integers(0, 2**32 - 1).map(IPv4Address), _ethernet | _any_length)
def test_a_neighbour_request_is_byte_for_byte_the_plain_one(index, ip, mac):
    plain = (nl._NDMSG.pack(nl.AF_INET, 0, 0, index, nl.NUD_PERMANENT, 0, 0) + nl._ip(nl.NDA_DST, ip)
             + nl._attr(nl.NDA_LLADDR, nl._mac(mac)))
    assert nl.neigh_add(index, ip, mac).body == plain
