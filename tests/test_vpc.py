"""The simulated VPC enforces its quotas itself, so the allocator cannot cheat."""
from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from eni_core.ports import InsufficientAddresses, InvalidParameter, NotFound, QuotaExceeded, Throttled
from testbed.world.vpc import FaultConfig, SimVpc
from tests.helpers import subnet


def vpc(cidr: str = "10.0.1.0/24", **kw) -> SimVpc:
    v = SimVpc([subnet("subnet-a", cidr)], **kw)
    v.add_instance("node-1", max_enis=2, ips_per_eni=3)
    return v


def test_attach_beyond_the_instance_eni_quota_is_refused():
    v = vpc()
    for _ in range(2):
        v.attach_eni(v.create_eni("node-1", "subnet-a").id, "node-1")
    extra = v.create_eni("node-1", "subnet-a")
    with pytest.raises(QuotaExceeded):
        v.attach_eni(extra.id, "node-1")


def test_assign_beyond_the_eni_ip_quota_is_refused():
    v = vpc()
    eni = v.attach_eni(v.create_eni("node-1", "subnet-a").id, "node-1")
    v.assign_private_ips(eni.id, 3)
    with pytest.raises(QuotaExceeded):
        v.assign_private_ips(eni.id, 1)


def test_an_eni_holding_more_ips_than_an_instances_quota_cannot_be_attached_to_it():
    v = vpc()
    v.add_instance("node-big", max_enis=2, ips_per_eni=10)
    eni = v.attach_eni(v.create_eni("node-big", "subnet-a").id, "node-big")
    v.assign_private_ips(eni.id, 5)
    v.detach_eni(eni.id)
    with pytest.raises(QuotaExceeded, match="5 secondary IPs, more than instance node-1's quota of 3"):
        v.attach_eni(eni.id, "node-1")
    assert v.enis[eni.id].record.attached_to is None
    assert v.attach_eni(eni.id, "node-big").attached_to == "node-big"


def test_assign_beyond_the_subnet_is_refused_and_nothing_is_taken():
    v = vpc("10.0.1.0/29")  # 8 - 3 reserved = 5
    eni = v.attach_eni(v.create_eni("node-1", "subnet-a").id, "node-1")
    v.add_instance("node-1", max_enis=2, ips_per_eni=10)
    v.assign_private_ips(eni.id, 3)
    with pytest.raises(InsufficientAddresses):
        v.assign_private_ips(eni.id, 2)
    assert v.available("subnet-a") == 1


def test_device_indexes_are_the_lowest_free_and_reused():
    v = vpc()
    a = v.attach_eni(v.create_eni("node-1", "subnet-a").id, "node-1")
    b = v.attach_eni(v.create_eni("node-1", "subnet-a").id, "node-1")
    assert (a.device_index, b.device_index) == (1, 2)
    v.detach_eni(a.id)
    c = v.attach_eni(v.create_eni("node-1", "subnet-a").id, "node-1")
    assert c.device_index == 1


def test_subnet_available_is_size_minus_reserved_minus_in_use():
    v = vpc()
    assert v.available("subnet-a") == 256 - 3
    eni = v.attach_eni(v.create_eni("node-1", "subnet-a").id, "node-1")
    ips = v.assign_private_ips(eni.id, 3)
    assert v.available("subnet-a") == 256 - 3 - 4
    assert IPv4Address("10.0.1.0") not in ips and IPv4Address("10.0.1.1") not in ips  # network, gateway
    v.unassign_private_ips(eni.id, ips)
    v.detach_eni(eni.id)
    v.delete_eni(eni.id)
    assert v.available("subnet-a") == 253 and v.owner == {}


def test_a_released_address_is_handed_out_again_lowest_first():
    v = vpc()
    eni = v.attach_eni(v.create_eni("node-1", "subnet-a").id, "node-1")
    first = v.assign_private_ips(eni.id, 3)
    v.unassign_private_ips(eni.id, first[:1])
    assert v.assign_private_ips(eni.id, 1) == first[:1]


def test_an_address_named_twice_is_refused_and_nothing_changes():
    v = vpc()
    eni = v.attach_eni(v.create_eni("node-1", "subnet-a").id, "node-1")
    bound = v.assign_private_ips(eni.id, 2)
    free = v.available("subnet-a")
    with pytest.raises(InvalidParameter):
        v.unassign_private_ips(eni.id, [bound[0], bound[0]])
    with pytest.raises(InvalidParameter):  # not InsufficientAddresses: the subnet is not full
        v.assign_private_ips(eni.id, ips=[IPv4Address("10.0.1.50")] * 2)
    assert sorted(v.enis[eni.id].ips) == bound and v.available("subnet-a") == free
    assert v.owner[bound[0]] == eni.id and IPv4Address("10.0.1.50") not in v.owner
    v.unassign_private_ips(eni.id, bound[:1])
    assert v.available("subnet-a") == free + 1


def test_deleting_an_attached_eni_is_refused():
    v = vpc()
    eni = v.attach_eni(v.create_eni("node-1", "subnet-a").id, "node-1")
    with pytest.raises(InvalidParameter):
        v.delete_eni(eni.id)
    with pytest.raises(NotFound):
        v.delete_eni("eni-nope")


def test_faults_are_seeded_and_reproducible():
    def outcomes(seed):
        v = vpc(faults=FaultConfig(throttle=0.5, seed=seed))
        got = []
        for _ in range(30):
            try:
                v.describe_subnets(["subnet-a"])
                got.append("ok")
            except Throttled:
                got.append("throttled")
        return got

    assert outcomes(3) == outcomes(3) and "throttled" in outcomes(3) and "ok" in outcomes(3)
    assert outcomes(3) != outcomes(4)


def test_every_api_call_is_recorded_with_its_result():
    events = []
    v = vpc(events=events.append)
    eni = v.create_eni("node-1", "subnet-a")
    with pytest.raises(NotFound):
        v.attach_eni("eni-missing", "node-1")
    assert [(e["call"], e["result"]) for e in events] == [
        ("CreateNetworkInterface", "ok"), ("AttachNetworkInterface", "NotFound")]
    assert events[0]["eni"] == eni.id
