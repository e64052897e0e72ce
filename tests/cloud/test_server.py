"""`enilab vpc serve`'s API through the official SDK: each action's documented shapes, paging, filters,
ClientTokens, tasks, and every kind of bad request answered with the API's error code, never a 500."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from eni_core.ports import InvalidParameter
from eni_core.tencent import error_for
from testbed.world.tencent_actions import ACTIONS
from testbed.world.tencent_api import MAX_BODY
from testbed.world.vpc import FaultConfig
from tests.cloud.helpers import authorization, error_code, request, serve


@pytest.fixture
def served():
    s = serve()
    yield s
    s.server.close()


def create(client, node="node-1", subnet="subnet-a", **extra):
    return client.CreateNetworkInterface(request(
        "CreateNetworkInterface", VpcId="vpc-enilab", SubnetId=subnet, NetworkInterfaceName=f"eni-of-{node}",
        Tags=[{"Key": "enilab-node", "Value": node}], **extra)).NetworkInterface


def fill(client, n: int, node="node-1") -> list[str]:
    ids = []
    for _ in range(n):
        eni = create(client, node)
        client.AttachNetworkInterface(request("AttachNetworkInterface", NetworkInterfaceId=eni.NetworkInterfaceId,
                                              InstanceId=node))
        ids.append(eni.NetworkInterfaceId)
    return ids


def test_every_served_action_answers_the_sdk_with_its_documented_shape(served):
    client = served.sdk()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the SDK warns of fields its models do not know: the shapes are exact
        subnets = client.DescribeSubnets(request("DescribeSubnets", SubnetIds=["subnet-a"]))
        assert (subnets.TotalCount, subnets.SubnetSet[0].SubnetId, subnets.SubnetSet[0].AvailableIpAddressCount,
                subnets.SubnetSet[0].CidrBlock, subnets.SubnetSet[0].VpcId) == (1, "subnet-a", 253, "10.0.1.0/24",
                                                                                "vpc-enilab")
        eni = create(client, SecondaryPrivateIpAddressCount=1)
        assert eni.NetworkInterfaceId.startswith("eni-") and eni.MacAddress and eni.SubnetId == "subnet-a"
        assert [(ip.PrivateIpAddress, ip.Primary) for ip in eni.PrivateIpAddressSet] == [("10.0.1.2", True),
                                                                                        ("10.0.1.3", False)]
        assert {(t.Key, t.Value) for t in eni.TagSet} == {("enilab-node", "node-1")}
        eni_id = eni.NetworkInterfaceId
        attach = client.AttachNetworkInterface(request("AttachNetworkInterface", NetworkInterfaceId=eni_id,
                                                       InstanceId="node-1"))
        task = client.DescribeVpcTaskResult(request("DescribeVpcTaskResult", TaskId=attach.RequestId))
        assert (task.Status, task.Result[0].ResourceId) == ("SUCCESS", eni_id)
        got = client.AssignPrivateIpAddresses(request("AssignPrivateIpAddresses", NetworkInterfaceId=eni_id,
                                                      SecondaryPrivateIpAddressCount=2))
        assert [ip.PrivateIpAddress for ip in got.PrivateIpAddressSet] == ["10.0.1.4", "10.0.1.5"]
        chosen = client.AssignPrivateIpAddresses(request("AssignPrivateIpAddresses", NetworkInterfaceId=eni_id,
                                                         PrivateIpAddresses=[{"PrivateIpAddress": "10.0.1.77"}]))
        assert [ip.PrivateIpAddress for ip in chosen.PrivateIpAddressSet] == ["10.0.1.77"]
        found = client.DescribeNetworkInterfaces(request("DescribeNetworkInterfaces", Filters=[
            {"Name": "attachment.instance-id", "Values": ["node-1"]}])).NetworkInterfaceSet
        assert [(e.NetworkInterfaceId, e.Attachment.InstanceId, e.Attachment.DeviceIndex) for e in found] == [
            (eni_id, "node-1", 1)]
        assert sorted(ip.PrivateIpAddress for ip in found[0].PrivateIpAddressSet if not ip.Primary) == [
            "10.0.1.3", "10.0.1.4", "10.0.1.5", "10.0.1.77"]
        client.UnassignPrivateIpAddresses(request("UnassignPrivateIpAddresses", NetworkInterfaceId=eni_id,
                                                  PrivateIpAddresses=[{"PrivateIpAddress": "10.0.1.4"}]))
        client.DetachNetworkInterface(request("DetachNetworkInterface", NetworkInterfaceId=eni_id,
                                              InstanceId="node-1"))
        client.DeleteNetworkInterface(request("DeleteNetworkInterface", NetworkInterfaceId=eni_id))
    assert served.vpc.enis == {} and served.vpc.available("subnet-a") == 253


def test_a_script_fills_enis_up_to_the_quotas_and_then_gets_the_quota_errors(served):
    client = served.sdk()
    ids = fill(client, 3)
    extra = create(client)
    assert error_code(client.AttachNetworkInterface, request(
        "AttachNetworkInterface", NetworkInterfaceId=extra.NetworkInterfaceId,
        InstanceId="node-1")) == "LimitExceeded.NetworkInterfaceLimitExceeded"
    for eni_id in ids:
        client.AssignPrivateIpAddresses(request("AssignPrivateIpAddresses", NetworkInterfaceId=eni_id,
                                                SecondaryPrivateIpAddressCount=4))
    assert error_code(client.AssignPrivateIpAddresses, request(
        "AssignPrivateIpAddresses", NetworkInterfaceId=ids[0],
        SecondaryPrivateIpAddressCount=1)) == "LimitExceeded.EniPrivateIpLimit"
    assert sum(len(e.ips) for e in served.vpc.enis.values()) == 12  # nothing was bound past the quota


def test_an_exhausted_subnet_is_resource_insufficient(served):
    client = served.sdk()
    eni = create(client, subnet="subnet-b")  # a /28: 13 usable addresses, one taken by the primary
    client.AttachNetworkInterface(request("AttachNetworkInterface", NetworkInterfaceId=eni.NetworkInterfaceId,
                                          InstanceId="node-1"))
    served.vpc.add_instance("node-1", 3, 50)
    client.AssignPrivateIpAddresses(request("AssignPrivateIpAddresses", NetworkInterfaceId=eni.NetworkInterfaceId,
                                            SecondaryPrivateIpAddressCount=12))
    assert error_code(client.AssignPrivateIpAddresses, request(
        "AssignPrivateIpAddresses", NetworkInterfaceId=eni.NetworkInterfaceId,
        SecondaryPrivateIpAddressCount=1)) == "ResourceInsufficient.Subnet"
    assert error_code(create, client, "node-1", "subnet-b") == "ResourceInsufficient.Subnet"


def test_state_errors_carry_the_apis_codes(served):
    client = served.sdk()
    eni_id = fill(client, 1)[0]
    assert error_code(client.DeleteNetworkInterface, request(
        "DeleteNetworkInterface", NetworkInterfaceId=eni_id)) == "UnsupportedOperation.InvalidState"
    assert error_code(client.AttachNetworkInterface, request(
        "AttachNetworkInterface", NetworkInterfaceId=eni_id,
        InstanceId="node-1")) == "UnsupportedOperation.AttachmentAlreadyExists"
    assert error_code(client.DetachNetworkInterface, request(
        "DetachNetworkInterface", NetworkInterfaceId=eni_id,
        InstanceId="node-9")) == "UnsupportedOperation.InstanceMismatch"
    assert error_code(client.DeleteNetworkInterface, request(
        "DeleteNetworkInterface", NetworkInterfaceId="eni-00000000")) == "ResourceNotFound"
    assert error_code(client.DeleteNetworkInterface, request(
        "DeleteNetworkInterface", NetworkInterfaceId="ENI/../x")) == "InvalidParameterValue.Malformed"
    assert error_code(client.DescribeSubnets, request("DescribeSubnets", SubnetIds=["subnet-z"])) == "ResourceNotFound"
    primary = served.vpc.enis[eni_id].record.primary_ip
    assert error_code(client.UnassignPrivateIpAddresses, request(
        "UnassignPrivateIpAddresses", NetworkInterfaceId=eni_id,
        PrivateIpAddresses=[{"PrivateIpAddress": str(primary)}])) == "UnsupportedOperation.PrimaryIp"
    assert error_code(client.UnassignPrivateIpAddresses, request(
        "UnassignPrivateIpAddresses", NetworkInterfaceId=eni_id,
        PrivateIpAddresses=[{"PrivateIpAddress": "10.0.1.99"}])) == "ResourceNotFound"
    client.DetachNetworkInterface(request("DetachNetworkInterface", NetworkInterfaceId=eni_id, InstanceId="node-1"))
    assert error_code(client.DetachNetworkInterface, request(
        "DetachNetworkInterface", NetworkInterfaceId=eni_id,
        InstanceId="node-1")) == "UnsupportedOperation.AttachmentNotFound"
    assert error_code(create, client, "node-7") == "ResourceNotFound"  # no such instance


def test_an_address_named_twice_is_a_duplicate_parameter_and_changes_nothing(served):
    client = served.sdk()
    eni_id = fill(client, 1)[0]
    bound = [ip.PrivateIpAddress for ip in client.AssignPrivateIpAddresses(request(
        "AssignPrivateIpAddresses", NetworkInterfaceId=eni_id, SecondaryPrivateIpAddressCount=2)).PrivateIpAddressSet]
    free = served.vpc.available("subnet-a")
    for action, ip in (("UnassignPrivateIpAddresses", bound[0]), ("AssignPrivateIpAddresses", "10.0.1.50")):
        code = error_code(getattr(client, action), request(action, NetworkInterfaceId=eni_id, PrivateIpAddresses=[
            {"PrivateIpAddress": ip}, {"PrivateIpAddress": ip}]))
        assert code == "InvalidParameterValue.DuplicatePara"
        assert isinstance(error_for(code, ""), InvalidParameter)  # the caller's mistake: no retry, no "subnet full"
    assert sorted(map(str, served.vpc.enis[eni_id].ips)) == bound and served.vpc.available("subnet-a") == free
    client.UnassignPrivateIpAddresses(request("UnassignPrivateIpAddresses", NetworkInterfaceId=eni_id,
                                              PrivateIpAddresses=[{"PrivateIpAddress": bound[0]}]))
    assert served.vpc.available("subnet-a") == free + 1


def test_describes_page_by_offset_and_limit_twenty_by_default_at_most_a_hundred(served):
    served.vpc.add_instance("node-1", 30, 4)
    client = served.sdk()
    ids = fill(client, 25)

    def page(**kw):
        return client.DescribeNetworkInterfaces(request("DescribeNetworkInterfaces", Filters=[
            {"Name": "tag:enilab-node", "Values": ["node-1"]}], **kw))

    first = page()
    assert (first.TotalCount, len(first.NetworkInterfaceSet)) == (25, 20)
    rest = page(Offset=20, Limit=100)
    assert [e.NetworkInterfaceId for e in first.NetworkInterfaceSet + rest.NetworkInterfaceSet] == ids
    assert error_code(page, Limit=101) == "InvalidParameterValue.Range"
    assert error_code(page, Limit="5") == "InvalidParameter"  # an Integer here
    subnets = client.DescribeSubnets(request("DescribeSubnets", Offset="1", Limit="1"))  # Strings there
    assert (subnets.TotalCount, [s.SubnetId for s in subnets.SubnetSet]) == (2, ["subnet-b"])
    assert error_code(client.DescribeSubnets, request("DescribeSubnets", Limit=1)) == "InvalidParameter"


def test_the_sdks_unsigned_payload_requests_are_served_and_a_changed_body_still_refused(served):
    client = served.sdk()
    client.profile.unsignedPayload = True  # the SDK signs the word UNSIGNED-PAYLOAD, not the body
    assert client.DescribeSubnets(request("DescribeSubnets")).TotalCount == 2
    client.profile.unsignedPayload = False
    assert client.DescribeSubnets(request("DescribeSubnets")).TotalCount == 2


def test_filters_follow_the_api_names_values_or_and_names_and(served):
    served.vpc.add_instance("node-2", 3, 4)
    client = served.sdk()
    a = fill(client, 1)[0]
    b = create(client, "node-2", "subnet-b").NetworkInterfaceId

    def ids(filters=None, **kw):
        return [e.NetworkInterfaceId for e in client.DescribeNetworkInterfaces(request(
            "DescribeNetworkInterfaces", **({"Filters": filters} if filters else {}), **kw)).NetworkInterfaceSet]

    assert ids([{"Name": "attachment.instance-id", "Values": ["node-1"]}]) == [a]
    assert ids([{"Name": "network-interface-id", "Values": [a, b]}]) == [a, b]
    assert ids([{"Name": "subnet-id", "Values": ["subnet-b"]}]) == [b]
    assert ids([{"Name": "tag:enilab-node", "Values": ["node-2"]}]) == [b]
    assert ids([{"Name": "tag-key", "Values": ["enilab-node"]}, {"Name": "subnet-id", "Values": ["subnet-a"]}]) == [a]
    assert ids(NetworkInterfaceIds=[b, "eni-00000000"]) == [b]
    assert error_code(ids, [{"Name": "colour", "Values": ["red"]}]) == "InvalidParameter.FilterInvalidKey"
    assert error_code(ids, [{"Name": "subnet-id", "Values": ["x"]}],
                      NetworkInterfaceIds=[a]) == "InvalidParameter.Coexist"
    # a boolean's value may be given as "TRUE" or "FALSE", as the Filter model says
    assert ids([{"Name": "is-primary", "Values": ["FALSE"]}]) == ids([{"Name": "is-primary", "Values": ["false"]}])
    assert ids([{"Name": "is-primary", "Values": ["FALSE"]}]) == [a, b]


def test_the_apis_own_bounds_on_subnet_ids_and_descriptions_hold(served):
    client = served.sdk()
    assert error_code(client.DescribeSubnets, request("DescribeSubnets", SubnetIds=["subnet-a"] * 101)) \
        == "InvalidParameterValue.Range"
    assert client.DescribeSubnets(request("DescribeSubnets", SubnetIds=["subnet-a"] * 100)).TotalCount == 1
    long = request("CreateNetworkInterface", VpcId=client.DescribeSubnets(request("DescribeSubnets")).SubnetSet[0]
                   .VpcId, SubnetId="subnet-a", NetworkInterfaceName="eni", NetworkInterfaceDescription="x" * 61,
                   Tags=[{"Key": "enilab-node", "Value": "node-1"}])
    assert error_code(client.CreateNetworkInterface, long) == "InvalidParameterValue.TooLong"


def test_the_address_ip_filter_finds_secondary_ips_once_the_describe_shows_them():
    s = serve(faults=FaultConfig(consistency_delay=5))
    try:
        client = s.sdk()
        eni = fill(client, 1)[0]
        s.clock.t += 10
        secondary = client.AssignPrivateIpAddresses(request("AssignPrivateIpAddresses", NetworkInterfaceId=eni,
                                                            SecondaryPrivateIpAddressCount=1)).PrivateIpAddressSet[0]

        def ids(ip):
            return [e.NetworkInterfaceId for e in client.DescribeNetworkInterfaces(request(
                "DescribeNetworkInterfaces", Filters=[{"Name": "address-ip", "Values": [ip]}])).NetworkInterfaceSet]

        primary = str(s.vpc.enis[eni].record.primary_ip)
        assert (ids(primary), ids(secondary.PrivateIpAddress)) == ([eni], [])  # bound, not shown yet
        s.clock.t += 5
        assert (ids(primary), ids(secondary.PrivateIpAddress), ids("10.0.1.99")) == ([eni], [eni], [])
    finally:
        s.server.close()


def test_a_subnet_tag_filter_matches_no_subnet_untagged_as_they_are(served):
    client = served.sdk()

    def ids(*filters):
        return [s.SubnetId for s in client.DescribeSubnets(request("DescribeSubnets", Filters=list(filters))).SubnetSet]

    assert ids({"Name": "tag:env", "Values": ["prod"]}) == []
    assert ids({"Name": "cidr-block", "Values": ["10.0.2.0/28"]}) == ["subnet-b"]
    assert error_code(ids, {"Name": "tag-value", "Values": ["x"]}) == "InvalidParameter.FilterInvalidKey"


def test_a_client_token_returns_the_first_answer_and_refuses_other_parameters(served):
    client = served.sdk()
    first = create(client, ClientToken="tok-1")
    again = create(client, ClientToken="tok-1")
    assert again.NetworkInterfaceId == first.NetworkInterfaceId and len(served.vpc.enis) == 1
    assert error_code(create, client, "node-1", "subnet-b", ClientToken="tok-1") == \
        "UnsupportedOperation.IdempotentParameterMismatch"


def test_a_task_is_running_for_the_consistency_delay_on_the_vpcs_clock():
    s = serve(faults=FaultConfig(consistency_delay=5))
    try:
        client = s.sdk()
        eni = create(client)
        task = client.AttachNetworkInterface(request("AttachNetworkInterface",
                                                     NetworkInterfaceId=eni.NetworkInterfaceId, InstanceId="node-1"))

        def status() -> str:
            return client.DescribeVpcTaskResult(request("DescribeVpcTaskResult", TaskId=task.RequestId)).Status

        assert status() == "RUNNING"
        s.clock.t += 4.9
        assert status() == "RUNNING"
        s.clock.t += 0.1
        assert status() == "SUCCESS"
        assert error_code(client.DescribeVpcTaskResult, request("DescribeVpcTaskResult",
                                                                TaskId="no-such-task")) == "ResourceNotFound"
    finally:
        s.server.close()


@pytest.mark.parametrize(("faults", "code"), [
    ({"throttle": 1.0}, "RequestLimitExceeded"),
    ({"transient": 1.0}, "InternalError"),
    ({"insufficient_addresses": 1.0}, "ResourceInsufficient.Subnet"),
])
def test_scenario_faults_come_back_as_the_apis_codes(faults, code):
    s = serve()
    try:
        client = s.sdk()
        s.vpc.faults = FaultConfig(**faults)
        assert error_code(create, client) == code
    finally:
        s.server.close()


def test_a_transient_fault_on_an_existing_eni_is_a_mutex_task_running(served):
    client = served.sdk()
    eni = create(client)
    served.vpc.faults = FaultConfig(transient=1.0)
    assert error_code(client.AttachNetworkInterface, request(
        "AttachNetworkInterface", NetworkInterfaceId=eni.NetworkInterfaceId,
        InstanceId="node-1")) == "UnsupportedOperation.MutexOperationTaskRunning"


def test_an_injected_timeout_drops_the_answer_and_the_token_retry_gets_what_happened(served):
    client = served.sdk()
    served.vpc.faults = FaultConfig(timeout=1.0)
    assert error_code(create, client, "node-1", "subnet-a", ClientToken="tok-9") == "ClientNetworkError"
    assert len(served.vpc.enis) == 1  # it happened
    served.vpc.faults = FaultConfig()
    again = create(client, ClientToken="tok-9")
    assert list(served.vpc.enis) == [again.NetworkInterfaceId]


# -- authentication -----------------------------------------------------------------------------------------
def test_a_wrong_key_an_unknown_id_and_a_stale_timestamp_are_refused(served):
    describe = request("DescribeSubnets")
    assert error_code(served.sdk(secret_key="wrong").DescribeSubnets, describe) == "AuthFailure.SignatureFailure"
    assert error_code(served.sdk(secret_id="AKIDnobody").DescribeSubnets, describe) == "AuthFailure.SecretIdNotFound"
    status, _, body = served.raw(b"{}", timestamp=int(time.time()) - 3600)
    assert (status, body["Response"]["Error"]["Code"]) == (200, "AuthFailure.SignatureExpire")
    _, _, body = served.raw(b"{}", sign=False, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert body["Response"]["Error"]["Code"] == "AuthFailure.InvalidAuthorization"
    _, _, body = served.raw(b"{}", sign=False)
    assert body["Response"]["Error"]["Code"] == "MissingParameter"


def test_a_body_or_timestamp_changed_after_signing_is_refused(served):
    status, _, body = served.raw(b"{}")
    assert status == 200 and "Error" not in body["Response"]
    stamp = int(time.time())
    signed_for_empty = authorization(served.server.endpoint, b"{}", stamp)
    _, _, body = served.raw(b'{"SubnetIds": ["subnet-a"]}', headers={"Authorization": signed_for_empty},
                            timestamp=stamp)
    assert body["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"
    _, _, body = served.raw(b"{}", headers={"Authorization": signed_for_empty}, timestamp=stamp - 1)
    assert body["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"


# -- bad requests: the API's codes, HTTP 200, application/json -------------------------------------------
@pytest.mark.parametrize(("action", "params", "code"), [
    ("NoSuchAction", {}, "InvalidAction"),
    ("DescribeSubnets", {"Colour": "red"}, "UnknownParameter"),
    ("DescribeSubnets", {"MaxResults": 5}, "UnsupportedOperation"),
    ("AttachNetworkInterface", {"NetworkInterfaceId": "eni-1", "InstanceId": "node-1", "ClientToken": "x" * 65},
     "InvalidParameterValue.TooLong"),
    ("AttachNetworkInterface", {"NetworkInterfaceId": "eni-1"}, "MissingParameter"),
    ("AttachNetworkInterface", {"NetworkInterfaceId": 7, "InstanceId": "node-1"}, "InvalidParameter"),
    ("DescribeNetworkInterfaces", {"Filters": {"Name": "x"}}, "InvalidParameter"),
    ("DescribeNetworkInterfaces", {"Filters": [{"Name": "subnet-id"}]}, "InvalidParameter.FilterMissParameter"),
    ("DescribeNetworkInterfaces", {"Limit": True}, "InvalidParameter"),
    ("AssignPrivateIpAddresses", {"NetworkInterfaceId": "eni-1", "PrivateIpAddresses": [{"PrivateIpAddress": "x"}]},
     "InvalidParameterValue.Malformed"),
    ("AssignPrivateIpAddresses", {"NetworkInterfaceId": "eni-1"}, "MissingParameter"),
    ("CreateNetworkInterface", {"VpcId": "vpc-enilab", "SubnetId": "subnet-a", "NetworkInterfaceName": "n"},
     "MissingParameter"),
    ("CreateNetworkInterface", {"VpcId": "vpc-other", "SubnetId": "subnet-a", "NetworkInterfaceName": "n"},
     "ResourceNotFound"),
])
def test_bad_parameters_get_the_apis_error_codes(served, action, params, code):
    assert error_code(served.common().call_json, action, params) == code


@pytest.mark.parametrize(("body", "headers", "code"), [
    (b"{not json", {}, "InvalidParameter"),
    (b"\xff\xfe\x00", {}, "InvalidParameter"),
    (b"[1, 2]", {}, "InvalidParameter"),
    (b"{}", {"Content-Type": "application/x-www-form-urlencoded"}, "InvalidParameter"),
    (b"{}", {"X-TC-Version": "2099-01-01"}, "NoSuchVersion"),
    (b"{}", {"X-TC-Region": None}, "MissingParameter"),
    (b'{"Filters": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, "InvalidParameter"),  # deeper than Python goes
    (b"{}", {"X-TC-Timestamp": "\u00b9"}, "InvalidParameter"),  # a digit to str.isdigit(), not to int()
    (b"{}", {"X-TC-Timestamp": "9" * 5000}, "InvalidParameter"),  # more digits than int() takes
    (b"", {"Content-Length": "\u00b2"}, "InvalidParameter"),
])
def test_malformed_requests_get_error_codes_as_json(served, body, headers, code):
    status, answer_headers, answer = served.raw(body, headers=headers)
    assert (status, answer_headers["Content-Type"]) == (200, "application/json")
    assert answer["Response"]["Error"]["Code"] == code and answer["Response"]["RequestId"]


def test_an_oversized_body_is_refused_unread(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
    conn.putrequest("POST", "/")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    answer = json.loads(conn.getresponse().read())
    conn.close()
    assert answer["Response"]["Error"]["Code"] == "RequestSizeLimitExceeded"


@pytest.mark.parametrize("sent", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n",  # headers never finished
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"Subnet",
    b"",  # nothing at all
])
def test_a_stalled_connection_is_closed_unanswered_and_the_server_goes_on(sent):
    s = serve(request_timeout=0.3)
    try:
        stalled = [socket.create_connection(("127.0.0.1", s.server.port), timeout=5) for _ in range(5)]
        for conn in stalled:
            conn.sendall(sent)
        started = time.monotonic()
        assert all(conn.recv(100) == b"" for conn in stalled)  # closed by the server, no answer
        assert time.monotonic() - started < 3
        for conn in stalled:
            conn.close()
        assert s.sdk().DescribeSubnets(request("DescribeSubnets")).TotalCount == 2
    finally:
        s.server.close()


def test_one_connection_carries_many_calls(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("POST", "/", body=b"{}", headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert json.loads(resp.read())["Response"]["Error"]["Code"] == "MissingParameter"
            assert resp.getheader("Connection") != "close"
    finally:
        conn.close()


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                    max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(action=st.sampled_from(sorted(ACTIONS)), params=st.dictionaries(
    st.sampled_from(["NetworkInterfaceId", "InstanceId", "SubnetId", "VpcId", "Filters", "Offset", "Limit",
                     "PrivateIpAddresses", "SecondaryPrivateIpAddressCount", "Tags", "TaskId", "ClientToken",
                     "NetworkInterfaceName", "SubnetIds", "NetworkInterfaceIds", "IpAddresses", "IpAddressCount",
                     "ReserveIpIds", "Name", "Other"]), JSONISH, max_size=5))
def test_any_parameters_get_an_answer_or_an_api_error_never_an_internal_one(served, action, params):
    status, headers, body = served.raw(json.dumps(params).encode(), action=action)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    error = body["Response"].get("Error")
    assert error is None or error["Code"] != "InternalError", error


def test_two_clients_at_once_share_the_quotas_and_never_an_address(served):
    served.vpc.add_instance("node-2", 3, 4)
    errors: list[str] = []

    def fill_node(node: str) -> None:
        client = served.sdk()
        for eni_id in fill(client, 3, node):
            for _ in range(5):  # one more than the quota allows
                try:
                    client.AssignPrivateIpAddresses(request("AssignPrivateIpAddresses", NetworkInterfaceId=eni_id,
                                                            SecondaryPrivateIpAddressCount=1))
                except TencentCloudSDKException as err:
                    errors.append(err.get_code())

    workers = [threading.Thread(target=fill_node, args=(n,)) for n in ("node-1", "node-2")]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    ips = [ip for e in served.vpc.enis.values() for ip in (e.record.primary_ip, *e.ips)]
    assert len(ips) == len(set(ips)) == 6 + 24
    assert errors == ["LimitExceeded.EniPrivateIpLimit"] * 6
