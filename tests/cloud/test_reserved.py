"""Reserved addresses (CreateReserveIpAddresses, DescribeReserveIpAddresses, DeleteReserveIpAddresses) on the
served VPC through the official SDK: the documented shapes, Bind and UnBind, paging and filters, ClientTokens,
faults, and every hostile request answered with the API's error code, never a 500."""
from __future__ import annotations

import json
import warnings
from ipaddress import IPv4Address

import pytest

from testbed.world.vpc import FaultConfig
from tests.cloud.helpers import error_code, request, serve
from tests.cloud.test_server import create, fill


@pytest.fixture
def served():
    s = serve()
    yield s
    s.server.close()


def reserve(client, **params):
    return client.CreateReserveIpAddresses(request("CreateReserveIpAddresses", VpcId="vpc-enilab", **params))


def describe(client, **params):
    return client.DescribeReserveIpAddresses(request("DescribeReserveIpAddresses", **params))


def delete(client, *ids, vpc="vpc-enilab"):
    return client.DeleteReserveIpAddresses(request("DeleteReserveIpAddresses", VpcId=vpc, ReserveIpIds=list(ids)))


def assign(client, eni, *ips, count=None):
    params = {"SecondaryPrivateIpAddressCount": count} if count else {
        "PrivateIpAddresses": [{"PrivateIpAddress": ip} for ip in ips]}
    return [ip.PrivateIpAddress for ip in client.AssignPrivateIpAddresses(request(
        "AssignPrivateIpAddresses", NetworkInterfaceId=eni, **params)).PrivateIpAddressSet]


def unassign(client, eni, *ips):
    client.UnassignPrivateIpAddresses(request("UnassignPrivateIpAddresses", NetworkInterfaceId=eni,
                                              PrivateIpAddresses=[{"PrivateIpAddress": ip} for ip in ips]))


def free(client, subnet="subnet-a") -> int:
    return client.DescribeSubnets(request("DescribeSubnets", SubnetIds=[subnet])).SubnetSet[0].AvailableIpAddressCount


def test_reserve_describe_and_delete_answer_the_sdk_with_their_documented_shapes(served):
    client = served.sdk()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the SDK warns of fields its models do not know: the shapes are exact
        made = reserve(client, SubnetId="subnet-a", IpAddressCount=2, Name="db", Description="kept",
                       Tags=[{"Key": "team", "Value": "data"}], ClientToken="t-1").ReserveIpAddressSet
        assert [(r.ReserveIpAddress, r.SubnetId, r.VpcId, r.State, r.ResourceId, r.Name, r.Description, r.IpType)
                for r in made] == [("10.0.1.2", "subnet-a", "vpc-enilab", "UnBind", "", "db", "kept", 0),
                                   ("10.0.1.3", "subnet-a", "vpc-enilab", "UnBind", "", "db", "kept", 0)]
        assert all(r.ReserveIpId.startswith("rsvip-") and len(r.ReserveIpId) == 14 for r in made)
        assert [(t.Key, t.Value) for t in made[0].TagSet] == [("team", "data")]
        listed = describe(client)
        assert (listed.TotalCount, [r.ReserveIpId for r in listed.ReserveIpAddressSet]) == (
            2, [r.ReserveIpId for r in made])
        assert delete(client, made[0].ReserveIpId).RequestId
    assert free(client) == 253 - 1 and sorted(map(str, served.vpc.retained)) == ["10.0.1.3"]


def test_a_reserved_address_is_never_handed_out_and_binds_only_when_named(served):
    client = served.sdk()
    kept = reserve(client, IpAddresses=["10.0.2.5"]).ReserveIpAddressSet[0]
    eni = create(client, subnet="subnet-b").NetworkInterfaceId
    served.vpc.add_instance("node-1", 3, 100)
    got = assign(client, eni, count=11)  # every other free address of the /28
    assert "10.0.2.5" not in got
    assert error_code(assign, client, eni, count=1) == "ResourceInsufficient.Subnet"
    assert assign(client, eni, "10.0.2.5") == ["10.0.2.5"]
    bound = describe(client, ReserveIpIds=[kept.ReserveIpId]).ReserveIpAddressSet[0]
    assert (bound.State, bound.ResourceId) == ("Bind", eni)
    unassign(client, eni, "10.0.2.5")  # a reserved address stays reserved on no ENI
    assert describe(client, ReserveIpIds=[kept.ReserveIpId]).ReserveIpAddressSet[0].State == "UnBind"
    assert IPv4Address("10.0.2.5") in served.vpc.retained and free(client, "subnet-b") == 0


def test_reserving_in_place_then_unassigning_never_lets_the_address_go_free(served):
    """What a static IP's retention does: no instant at which another caller could take the address."""
    client = served.sdk()
    served.vpc.add_instance("node-2", 3, 1000)
    eni = create(client).NetworkInterfaceId
    other = create(client, "node-2").NetworkInterfaceId
    ip = assign(client, eni, count=1)[0]
    r = reserve(client, IpAddresses=[ip]).ReserveIpAddressSet[0]
    assert (r.State, r.ResourceId) == ("Bind", eni)
    before = free(client)
    unassign(client, eni, ip)
    assert free(client) == before  # still taken: reserved, on no ENI
    assert ip not in assign(client, other, count=before)  # everything free, and not it
    assert assign(client, eni, ip) == [ip]  # named, it comes back


def test_unassigning_reserved_and_other_addresses_is_all_or_nothing(served):
    client = served.sdk()
    eni = create(client).NetworkInterfaceId
    kept, plain = assign(client, eni, count=2)
    r = reserve(client, IpAddresses=[kept]).ReserveIpAddressSet[0].ReserveIpId
    before = free(client)
    assert error_code(unassign, client, eni, kept, "10.0.1.91") == "ResourceNotFound"  # 10.0.1.91: on no ENI
    assert sorted(map(str, served.vpc.enis[eni].ips)) == sorted([kept, plain]) and free(client) == before
    assert describe(client, ReserveIpIds=[r]).ReserveIpAddressSet[0].State == "Bind"
    unassign(client, eni, kept, plain)
    assert served.vpc.enis[eni].ips == {} and free(client) == before + 1  # the reserved one stays taken
    assert describe(client, ReserveIpIds=[r]).ReserveIpAddressSet[0].State == "UnBind"


def test_deleting_an_unbound_reservation_frees_it_a_bound_one_stays_on_its_eni(served):
    client = served.sdk()
    eni = create(client).NetworkInterfaceId
    ip = assign(client, eni, count=1)[0]
    bound = reserve(client, IpAddresses=[ip]).ReserveIpAddressSet[0].ReserveIpId
    loose = reserve(client, SubnetId="subnet-a", IpAddressCount=1).ReserveIpAddressSet[0]
    before = free(client)
    delete(client, bound, loose.ReserveIpId)
    assert free(client) == before + 1 and served.vpc.retained == set()
    assert [ip] == [str(i) for i in served.vpc.enis[eni].ips]
    unassign(client, eni, ip)  # no reservation left: it goes back to the subnet
    assert free(client) == before + 2


def test_a_reservation_outlives_the_eni_that_held_its_address(served):
    client = served.sdk()
    eni = create(client).NetworkInterfaceId
    ip = assign(client, eni, count=1)[0]
    r = reserve(client, IpAddresses=[ip]).ReserveIpAddressSet[0].ReserveIpId
    client.DeleteNetworkInterface(request("DeleteNetworkInterface", NetworkInterfaceId=eni))
    assert describe(client, ReserveIpIds=[r]).ReserveIpAddressSet[0].State == "UnBind"
    assert IPv4Address(ip) in served.vpc.retained


def test_describe_pages_and_filters_by_the_apis_names(served):
    client = served.sdk()
    eni = create(client).NetworkInterfaceId
    made = reserve(client, SubnetId="subnet-a", IpAddressCount=25, Tags=[{"Key": "k", "Value": "v"}])
    ids = [r.ReserveIpId for r in made.ReserveIpAddressSet]
    ip = assign(client, eni, made.ReserveIpAddressSet[0].ReserveIpAddress)[0]
    other = reserve(client, SubnetId="subnet-b", IpAddressCount=1, Name="b").ReserveIpAddressSet[0].ReserveIpId
    first, rest = describe(client), describe(client, Offset=20, Limit=100)
    assert (first.TotalCount, len(first.ReserveIpAddressSet), len(rest.ReserveIpAddressSet)) == (26, 20, 6)
    assert [r.ReserveIpId for r in first.ReserveIpAddressSet + rest.ReserveIpAddressSet] == [*ids, other]

    def ids_for(*filters):
        return [r.ReserveIpId for r in describe(client, Filters=[{"Name": n, "Values": v} for n, v in filters],
                                                Limit=100).ReserveIpAddressSet]

    assert ids_for(("subnet-id", ["subnet-b"])) == ids_for(("name", ["b"])) == [other]
    assert ids_for(("state", ["Bind"])) == ids_for(("resource-id", [eni])) == ids_for(("address-ip", [ip])) == ids[:1]
    assert ids_for(("tag:k", ["v"]), ("state", ["UnBind"])) == ids[1:]
    assert ids_for(("reserve-ip-id", [other, ids[3]])) == [ids[3], other]  # values OR, in creation order


def test_a_client_token_returns_the_first_reservation_and_refuses_other_parameters(served):
    client = served.sdk()
    first = reserve(client, SubnetId="subnet-a", IpAddressCount=1, ClientToken="same")
    again = reserve(client, SubnetId="subnet-a", IpAddressCount=1, ClientToken="same")
    assert again.ReserveIpAddressSet[0].ReserveIpId == first.ReserveIpAddressSet[0].ReserveIpId
    assert describe(client).TotalCount == 1
    assert error_code(reserve, client, SubnetId="subnet-a", IpAddressCount=2, ClientToken="same") == (
        "UnsupportedOperation.IdempotentParameterMismatch")


@pytest.mark.parametrize("faults, code", [
    (FaultConfig(throttle=1.0), "RequestLimitExceeded"),
    (FaultConfig(transient=1.0), "InternalError"),
])
def test_reserving_free_addresses_is_a_vpc_call_with_its_faults(faults, code):
    s = serve(faults=faults)
    try:
        assert error_code(reserve, s.sdk(), SubnetId="subnet-a", IpAddressCount=1) == code
        assert s.vpc.retained == set()
    finally:
        s.server.close()


def test_an_injected_timeout_drops_the_answer_and_the_token_retry_gets_the_same_reservation():
    s = serve(faults=FaultConfig(timeout=1.0))
    try:
        client = s.sdk()
        assert error_code(reserve, client, SubnetId="subnet-a", IpAddressCount=1, ClientToken="lost") == (
            "ClientNetworkError")
        s.vpc.faults = FaultConfig()
        again = reserve(client, SubnetId="subnet-a", IpAddressCount=1, ClientToken="lost").ReserveIpAddressSet
        assert [r.ReserveIpAddress for r in again] == [str(ip) for ip in s.vpc.retained] == ["10.0.1.2"]
    finally:
        s.server.close()


HOSTILE = [
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.1.2"]}, "InvalidParameterValue.AddressIpNotAvailable"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.1.3"]}, "InvalidParameterValue.AddressIpNotAvailable"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.1.250"]}, "InvalidParameterValue.AddressIpNotAvailable"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.2.3"], "SubnetId": "subnet-a"}, "InvalidParameterValue"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["192.168.0.9"]}, "InvalidParameterValue.AddressIpNotInVpc"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.1.1"]}, "InvalidParameterValue.Reserved"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.1.255"]}, "InvalidParameterValue.Reserved"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.1.9", "10.0.1.9"]}, "InvalidParameterValue.Duplicate"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.1.9", "10.0.2.9"]}, "InvalidParameterValue"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["ten"]}, "InvalidParameterValue.Malformed"),
    ("CreateReserveIpAddresses", {"IpAddressCount": 1}, "MissingParameter"),
    ("CreateReserveIpAddresses", {}, "MissingParameter"),
    ("CreateReserveIpAddresses", {"IpAddressCount": 0, "SubnetId": "subnet-a"}, "MissingParameter"),
    ("CreateReserveIpAddresses", {"IpAddressCount": 101, "SubnetId": "subnet-a"}, "InvalidParameterValue.Range"),
    ("CreateReserveIpAddresses", {"IpAddressCount": 14, "SubnetId": "subnet-b"}, "ResourceInsufficient.Subnet"),
    ("CreateReserveIpAddresses", {"IpAddressCount": 1, "SubnetId": "subnet-z"},
     "InvalidParameterValue.ResourceNotFound"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.1.9"], "IpAddressCount": 1}, "InvalidParameter.Coexist"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.1.9"], "VpcId": "vpc-other"}, "ResourceNotFound"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.1.9"], "Name": "n" * 61}, "InvalidParameterValue.TooLong"),
    ("CreateReserveIpAddresses", {"IpAddresses": "10.0.1.9"}, "InvalidParameter"),
    ("CreateReserveIpAddresses", {"IpAddresses": ["10.0.1.9"], "Primary": True}, "UnknownParameter"),
    ("DeleteReserveIpAddresses", {"ReserveIpIds": ["rsvip-00000099"]}, "InvalidParameterValue.ResourceNotFound"),
    ("DeleteReserveIpAddresses", {"ReserveIpIds": ["rsvip-0"]}, "InvalidParameterValue.Malformed"),
    ("DeleteReserveIpAddresses", {"ReserveIpIds": []}, "MissingParameter"),
    ("DeleteReserveIpAddresses", {}, "MissingParameter"),
    ("DeleteReserveIpAddresses", {"ReserveIpIds": ["rsvip-00000001"], "VpcId": "vpc-other"},
     "InvalidParameterValue.ParameterMismatch"),
    ("DeleteReserveIpAddresses", {"ReserveIpIds": ["rsvip-00000001"], "ClientToken": "x"}, "UnknownParameter"),
    ("DescribeReserveIpAddresses", {"ReserveIpIds": ["rsvip-00000099"]}, "InvalidParameterValue.ResourceNotFound"),
    ("DescribeReserveIpAddresses", {"ReserveIpIds": [], "Filters": []}, "InvalidParameter.Coexist"),
    ("DescribeReserveIpAddresses", {"Filters": [{"Name": "color", "Values": ["red"]}]},
     "InvalidParameter.FilterInvalidKey"),
    ("DescribeReserveIpAddresses", {"Limit": 101}, "InvalidParameterValue.Range"),
    ("DescribeReserveIpAddresses", {"Offset": "1"}, "InvalidParameter"),
]


@pytest.mark.parametrize("action, params, code", HOSTILE, ids=lambda v: v if isinstance(v, str) else None)
def test_hostile_reservations_get_the_apis_error_codes_and_change_nothing(served, action, params, code):
    """Already taken (an ENI's secondary reserved already, its primary, a VPC host), outside the subnet or the
    VPC, the subnet's own addresses, unknown or malformed ids, wrong types: each its code, nothing changed."""
    client = served.sdk()
    served.vpc.add_host("db-1", "subnet-a", IPv4Address("10.0.1.250"))
    eni = create(client).NetworkInterfaceId  # primary 10.0.1.2
    assign(client, eni, "10.0.1.3")
    reserve(client, IpAddresses=["10.0.1.3"])  # rsvip-00000001, Bind
    def state():
        return set(served.vpc.retained), {k: v.id for k, v in served.server.service.reserved.items()}, free(client)

    before = state()
    body = {"VpcId": "vpc-enilab", **params} if action != "DescribeReserveIpAddresses" else params
    status, headers, answer = served.raw(json.dumps(body).encode(), action=action)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert answer["Response"]["Error"]["Code"] == code, answer
    assert state() == before


@pytest.mark.parametrize("action", ["CreateReserveIpAddresses", "DescribeReserveIpAddresses",
                                    "DeleteReserveIpAddresses"])
def test_a_wrong_key_is_refused_before_any_reservation_is_touched(served, action):
    params = {"CreateReserveIpAddresses": {"VpcId": "vpc-enilab", "IpAddresses": ["10.0.1.9"]},
              "DescribeReserveIpAddresses": {},
              "DeleteReserveIpAddresses": {"VpcId": "vpc-enilab", "ReserveIpIds": ["rsvip-00000001"]}}[action]
    reserve(served.sdk(), IpAddresses=["10.0.1.8"])
    wrong = served.sdk(secret_key="not-the-key")
    assert error_code(getattr(wrong, action), request(action, **params)) == "AuthFailure.SignatureFailure"
    assert sorted(map(str, served.vpc.retained)) == ["10.0.1.8"]


def test_filling_the_quota_with_reserved_addresses_named(served):
    """An ENI's IP quota counts a reserved address bound to it like any other."""
    client = served.sdk()
    eni = fill(client, 1)[0]
    kept = [r.ReserveIpAddress for r in reserve(client, SubnetId="subnet-a", IpAddressCount=5).ReserveIpAddressSet]
    assert assign(client, eni, *kept[:4]) == kept[:4]
    assert error_code(assign, client, eni, kept[4]) == "LimitExceeded.EniPrivateIpLimit"
