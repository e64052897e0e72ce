"""Static IPs through the SDK adapter: a claim's address kept on no ENI is a reserved address, reserved in
place before it is unassigned (never free in between), bound again by name on any node, released by
deleting its reservation; the same port semantics as the VPC in-process, retries included."""
from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from eni_core.ports import InvalidParameter, NotFound, Throttled
from testbed.world.vpc import FaultConfig, SimVpc
from tests.cloud.helpers import request, serve
from tests.cloud.test_adapter import adapter


@pytest.fixture
def served():
    s = serve(nodes={"node-1": (3, 4), "node-2": (2, 4)})
    yield s
    s.server.close()


def node_eni(vpc, node: str, subnet: str = "subnet-a") -> str:
    eni = vpc.create_eni(node, subnet)
    vpc.attach_eni(eni.id, node)
    return eni.id


def reservations(served) -> dict[str, str]:
    """address -> State, as the API describes them."""
    return {r.ReserveIpAddress: r.State for r in served.sdk().DescribeReserveIpAddresses(request(
        "DescribeReserveIpAddresses", Limit=100)).ReserveIpAddressSet}


def test_the_static_port_through_the_sdk_does_what_the_vpc_does_in_process(served):
    twin = SimVpc(list(served.vpc.subnets.values()), now=served.clock.now)
    for name, inst in served.vpc.instances.items():
        twin.add_instance(name, inst.max_enis, inst.ips_per_eni)
    for vpc in (adapter(served, static_ips=True), twin):
        one, two = node_eni(vpc, "node-1"), node_eni(vpc, "node-2")
        kept, gone = vpc.assign_private_ips(one, 2)
        vpc.unassign_private_ips(one, [kept], retain=True)
        vpc.unassign_private_ips(one, [gone])
        assert vpc.describe_subnets(["subnet-a"]) == {"subnet-a": 253 - 2 - 1}  # two primaries, the kept one
        assert vpc.assign_private_ips(two, 1) != [kept]  # never handed out
        assert vpc.assign_private_ips(two, ips=[kept]) == [kept]  # named, on another node
        vpc.unassign_private_ips(two, [kept], retain=True)  # kept again: its reservation is reused
        with pytest.raises(NotFound):
            vpc.release_retained([gone])  # not kept
        vpc.release_retained([kept])
        with pytest.raises(NotFound):
            vpc.release_retained([kept])  # released already
        vpc.assign_private_ips(two, ips=[kept])  # an ordinary free address now
        vpc.unassign_private_ips(two, [kept])
    assert served.vpc.available("subnet-a") == twin.available("subnet-a")
    assert served.vpc.retained == twin.retained == set()
    assert reservations(served) == {}


def test_retention_reserves_in_place_before_it_unassigns(served):
    """The order that leaves no window: at the moment of the unassign the address is reserved already."""
    vpc = adapter(served, static_ips=True)
    eni = node_eni(vpc, "node-1")
    (ip,) = vpc.assign_private_ips(eni, 1)
    seen = []  # (what the VPC did, the addresses reserved at that moment), seen inside the VPC's call
    served.vpc.listeners.append(lambda what, _eni, ips: seen.append((what, set(served.server.service.reserved))))
    vpc.unassign_private_ips(eni, [ip], retain=True)
    assert seen == [("unbind", {ip})]
    assert reservations(served) == {str(ip): "UnBind"} and served.vpc.retained == {ip}


def test_a_rebound_claim_keeps_its_reservation_and_an_unassign_to_the_subnet_ends_it(served):
    vpc = adapter(served, static_ips=True)
    eni = node_eni(vpc, "node-1")
    (ip,) = vpc.assign_private_ips(eni, 1)
    vpc.unassign_private_ips(eni, [ip], retain=True)
    vpc.assign_private_ips(eni, ips=[ip])
    assert reservations(served) == {str(ip): "Bind"}
    with pytest.raises(NotFound):
        vpc.release_retained([ip])  # on an ENI: not retained, as in-process
    free = served.vpc.available("subnet-a")
    vpc.unassign_private_ips(eni, [ip])  # the claim went: the address goes back to the subnet
    assert reservations(served) == {} and served.vpc.available("subnet-a") == free + 1


def test_a_retention_retried_after_a_throttled_unassign_reserves_once(served):
    vpc = adapter(served, static_ips=True)
    eni = node_eni(vpc, "node-1")
    (ip,) = vpc.assign_private_ips(eni, 1)
    served.vpc.faults = FaultConfig(throttle=1.0)  # the reservation is bookkeeping; the unassign is refused
    with pytest.raises(Throttled):
        vpc.unassign_private_ips(eni, [ip], retain=True)
    assert reservations(served) == {str(ip): "Bind"} and ip in served.vpc.enis[eni].ips  # never let go of
    served.vpc.faults = FaultConfig()
    vpc.unassign_private_ips(eni, [ip], retain=True)
    assert reservations(served) == {str(ip): "UnBind"}


def test_the_cluster_pool_on_another_adapter_releases_what_a_node_reserved(served):
    node, claims = adapter(served, static_ips=True), adapter(served, static_ips=True)
    eni = node_eni(node, "node-1")
    ips = node.assign_private_ips(eni, 3)
    node.unassign_private_ips(eni, ips, retain=True)
    free = served.vpc.available("subnet-a")
    claims.release_retained(ips)
    assert served.vpc.available("subnet-a") == free + 3 and reservations(served) == {}


def test_without_static_ips_the_adapter_refuses_to_keep_an_address_and_never_asks_for_reservations(served):
    vpc = adapter(served)
    eni = node_eni(vpc, "node-1")
    (ip,) = vpc.assign_private_ips(eni, 1)
    with pytest.raises(InvalidParameter, match="static_ips=True"):
        vpc.unassign_private_ips(eni, [ip], retain=True)
    assert ip in served.vpc.enis[eni].ips
    before = vpc.calls
    vpc.unassign_private_ips(eni, [ip])
    assert vpc.calls - before == 2  # the unassign and its task: no describe of reservations (a shared-ENI node
    assert IPv4Address(ip) not in served.vpc.retained  # may not even be allowed to call it)
