"""The netlink adapter's encoding of operations: an operation keeps its request once encoded, and that
memo changes nothing an operation's user can see."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

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
