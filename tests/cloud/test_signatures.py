"""The other shapes the official SDK sends, served as its default JSON one is: TC3-HMAC-SHA256 with GET (the
parameters flattened into the query string), and signature v1 (HmacSHA1, HmacSHA256) with a form body or a
query string. Same actions, same answers, same errors; hostile forms get the API's error form, never a 500."""
from __future__ import annotations

import json
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from testbed.world.tencent_api import MAX_QUERY
from testbed.world.tencent_form import MAX_PARAMS
from testbed.world.vpc import FaultConfig
from tests.cloud.helpers import authorization, error_code, request, serve

SHAPES = [("TC3-HMAC-SHA256", "GET"), ("HmacSHA1", "POST"), ("HmacSHA256", "POST"), ("HmacSHA256", "GET")]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def served():
    s = serve()
    yield s
    s.server.close()


def answers(client) -> list[dict]:
    """A create/attach/assign/describe/unassign/detach/delete cycle: every answer, RequestId aside. Lists,
    objects, integers, booleans and strings of digits go out; the describes bring them back."""
    out = []

    def call(action, **params):
        got = json.loads(getattr(client, action)(request(action, **params)).to_json_string())
        got.pop("RequestId")
        out.append(got)
        return got

    eni = call("CreateNetworkInterface", VpcId="vpc-enilab", SubnetId="subnet-a", NetworkInterfaceName="web one",
               NetworkInterfaceDescription="a&b=c%d+e ü", SecondaryPrivateIpAddressCount=1, IsRdma=False,
               Tags=[{"Key": "enilab-node", "Value": "node-1"}, {"Key": "team", "Value": "net"}],
               ClientToken="tok-cycle")["NetworkInterface"]["NetworkInterfaceId"]
    call("AttachNetworkInterface", NetworkInterfaceId=eni, InstanceId="node-1", AttachType=0)
    call("AssignPrivateIpAddresses", NetworkInterfaceId=eni, PrivateIpAddresses=[
        {"PrivateIpAddress": "10.0.1.50", "Primary": False}, {"PrivateIpAddress": "10.0.1.51"}])
    call("AssignPrivateIpAddresses", NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=1)
    call("DescribeNetworkInterfaces", Filters=[{"Name": "attachment.instance-id", "Values": ["node-1"]},
                                               {"Name": "tag:team", "Values": ["net", "other"]}], Offset=0, Limit=5)
    call("DescribeNetworkInterfaces", NetworkInterfaceIds=[eni])
    call("DescribeSubnets", Filters=[{"Name": "vpc-id", "Values": ["vpc-enilab"]}], Offset="1", Limit="1")
    call("DescribeSubnets", SubnetIds=["subnet-a", "subnet-b"])
    call("UnassignPrivateIpAddresses", NetworkInterfaceId=eni, PrivateIpAddresses=[
        {"PrivateIpAddress": "10.0.1.50"}, {"PrivateIpAddress": "10.0.1.51", "Primary": False}])
    call("DescribeNetworkInterfaces", NetworkInterfaceIds=[eni])
    call("DetachNetworkInterface", NetworkInterfaceId=eni, InstanceId="node-1")
    call("DeleteNetworkInterface", NetworkInterfaceId=eni)
    call("DescribeNetworkInterfaces", Filters=[{"Name": "tag-key", "Values": ["enilab-node"]}])
    return out


@pytest.mark.parametrize(("sign", "method"), SHAPES)
def test_each_shape_of_the_sdk_gets_the_answers_of_the_default_one(sign, method):
    default, shaped = serve(), serve()
    try:
        expected = answers(default.sdk())
        assert answers(shaped.sdk(sign=sign, method=method)) == expected
        assert expected[-1]["TotalCount"] == 0 and expected[4]["TotalCount"] == 1  # the cycle really ran
        assert {ip["PrivateIpAddress"] for ip in expected[5]["NetworkInterfaceSet"][0]["PrivateIpAddressSet"]} == {
            "10.0.1.2", "10.0.1.3", "10.0.1.50", "10.0.1.51", "10.0.1.4"}
        assert expected[0]["NetworkInterface"]["NetworkInterfaceDescription"] == "a&b=c%d+e ü"
    finally:
        default.server.close()
        shaped.server.close()


@pytest.mark.parametrize(("sign", "method"), SHAPES)
def test_a_wrong_secret_or_an_unknown_id_is_refused_in_each_shape(served, sign, method):
    describe = request("DescribeSubnets", SubnetIds=["subnet-a"])
    assert error_code(served.sdk(secret_key="wrong", sign=sign, method=method).DescribeSubnets,
                      describe) == "AuthFailure.SignatureFailure"
    assert error_code(served.sdk(secret_id="AKIDnobody", sign=sign, method=method).DescribeSubnets,
                      describe) == "AuthFailure.SecretIdNotFound"
    assert served.sdk(sign=sign, method=method).DescribeSubnets(describe).TotalCount == 1


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_an_expired_timestamp_a_changed_parameter_or_an_unserved_method_is_refused(served, method):
    def code(fields, **common):
        _, _, body = served.v1(fields, method=method, common=common)
        return body["Response"]["Error"]["Code"], body["Response"]["Error"]["Message"]

    assert served.v1([], method=method)[2]["Response"]["TotalCount"] == 2
    assert code([], Timestamp=str(int(time.time()) - 3600))[0] == "AuthFailure.SignatureExpire"
    assert code([], Timestamp=str(int(time.time()) + 3600))[0] == "AuthFailure.SignatureExpire"
    assert code([], Timestamp="soon") == ("InvalidParameter", "Timestamp must be the Unix time in seconds.")
    assert code([], Timestamp="9" * 5000)[0] == "InvalidParameter"  # more digits than int() takes
    got, message = code([], SignatureMethod="HmacMD5")
    assert got == "InvalidParameterValue" and "'HmacMD5'" in message and "HmacSHA256" in message
    assert code([], Signature="bm90IGl0")[0] == "AuthFailure.SignatureFailure"
    assert code([], Signature="ü")[0] == "AuthFailure.SignatureFailure"  # not even base64: refused, not a 500
    got, message = code([], Nonce=None)
    assert got == "MissingParameter" and "Nonce" in message
    assert code([], Version="2099-01-01")[0] == "NoSuchVersion"
    assert code([], Action="Nothing")[0] == "InvalidAction"
    # HmacSHA1 as well, and by default (no SignatureMethod: the API's own default)
    assert served.v1([], method=method, common={"SignatureMethod": "HmacSHA1"})[2]["Response"]["TotalCount"] == 2
    assert served.v1([], method=method, common={"SignatureMethod": None})[2]["Response"]["TotalCount"] == 2
    # a parameter changed after signing: the signature no longer matches
    _, _, body = served.v1([("SubnetIds.0", "subnet-a")], method=method, common={"Signature": "x"})
    assert body["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"


def test_a_tc3_get_signs_its_query_string_and_its_timestamp(served):
    ok = served.raw(b"", method="GET", query="SubnetIds.0=subnet-a", headers=FORM)[2]
    assert ok["Response"]["TotalCount"] == 1
    stale = served.raw(b"", method="GET", query="SubnetIds.0=subnet-a", headers=FORM,
                       timestamp=int(time.time()) - 3600)[2]
    assert stale["Response"]["Error"]["Code"] == "AuthFailure.SignatureExpire"
    stamp = int(time.time())
    signed_for_a = authorization(served.server.endpoint, b"", stamp, FORM["Content-Type"], "GET",
                                 "SubnetIds.0=subnet-a")
    changed = served.raw(b"", method="GET", query="SubnetIds.0=subnet-b", timestamp=stamp,
                         headers={**FORM, "Authorization": signed_for_a})[2]
    assert changed["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"
    as_json = served.raw(b"", method="GET", query="SubnetIds.0=subnet-a")[2]  # a GET's Content-Type is the form's
    assert as_json["Response"]["Error"]["Code"] == "InvalidParameter"
    assert "application/x-www-form-urlencoded" in as_json["Response"]["Error"]["Message"]


def test_a_get_signed_as_a_post_or_not_at_all_is_refused_in_the_apis_form(served):
    stamp = int(time.time())
    as_post = authorization(served.server.endpoint, b"", stamp, FORM["Content-Type"], "POST")
    status, headers, body = served.raw(b"", method="GET", headers={**FORM, "Authorization": as_post}, timestamp=stamp)
    assert (status, headers["Content-Type"], body["Response"]["Error"]["Code"]) == (
        200, "application/json", "AuthFailure.SignatureFailure")
    status, headers, body = served.send("GET", "/", b"", {})
    assert (status, headers["Content-Type"], body["Response"]["Error"]["Code"]) == (
        200, "application/json", "MissingParameter")
    assert "TC3-HMAC-SHA256" in body["Response"]["Error"]["Message"]


@pytest.mark.parametrize(("sign", "method"), SHAPES)
def test_a_client_token_replayed_in_another_shape_gets_the_first_answer(served, sign, method):
    def create(client, subnet="subnet-a"):
        return client.CreateNetworkInterface(request(
            "CreateNetworkInterface", VpcId="vpc-enilab", SubnetId=subnet, NetworkInterfaceName="n",
            SecondaryPrivateIpAddressCount=1, Tags=[{"Key": "enilab-node", "Value": "node-1"}], ClientToken="tok-7"))

    first = create(served.sdk())
    again = create(served.sdk(sign=sign, method=method))
    assert (again.RequestId, again.NetworkInterface.NetworkInterfaceId) == (
        first.RequestId, first.NetworkInterface.NetworkInterfaceId)
    assert len(served.vpc.enis) == 1
    assert error_code(create, served.sdk(sign=sign, method=method), "subnet-b") == \
        "UnsupportedOperation.IdempotentParameterMismatch"


@pytest.mark.parametrize(("sign", "method"), SHAPES)
def test_faults_reach_each_shape_as_they_reach_json(served, sign, method):
    client = served.sdk(sign=sign, method=method)

    def create():
        return client.CreateNetworkInterface(request(
            "CreateNetworkInterface", VpcId="vpc-enilab", SubnetId="subnet-a", NetworkInterfaceName="n",
            Tags=[{"Key": "enilab-node", "Value": "node-1"}], ClientToken="tok-f"))

    served.vpc.faults = FaultConfig(throttle=1.0)
    assert error_code(create) == "RequestLimitExceeded"
    served.vpc.faults = FaultConfig(timeout=1.0)
    assert error_code(create) == "ClientNetworkError" and len(served.vpc.enis) == 1  # it happened, unanswered
    served.vpc.faults = FaultConfig()
    assert [create().NetworkInterface.NetworkInterfaceId] == list(served.vpc.enis)


BAD = [
    ("DescribeSubnets", {"Colour": "red"}),
    ("DescribeSubnets", {"Filters": [{"Name": "vpc-id", "Values": ["x"], "Colour": "red"}]}),
    ("DescribeSubnets", {"Limit": "twenty"}),
    ("DescribeNetworkInterfaces", {"Limit": "5.0"}),
    ("DescribeNetworkInterfaces", {"Offset": "1e3"}),
    ("DescribeNetworkInterfaces", {"Filters": [{"Name": "subnet-id"}]}),
    ("DescribeNetworkInterfaces", {"Filters": [{"Name": "subnet-id", "Values": "subnet-a"}]}),
    ("DescribeNetworkInterfaces", {"Filters": "subnet-id"}),
    ("AttachNetworkInterface", {"NetworkInterfaceId": "eni-1"}),
    ("AttachNetworkInterface", {"NetworkInterfaceId": ["eni-1"], "InstanceId": "node-1"}),
    ("CreateNetworkInterface", {"VpcId": "vpc-enilab", "SubnetId": "subnet-a", "NetworkInterfaceName": "n",
                                "IsRdma": "maybe", "Tags": [{"Key": "enilab-node", "Value": "node-1"}]}),
    ("CreateNetworkInterface", {"VpcId": "vpc-enilab", "SubnetId": "subnet-a", "NetworkInterfaceName": "n",
                                "SecondaryPrivateIpAddressCount": "-1",
                                "Tags": [{"Key": "enilab-node", "Value": "node-1"}]}),
    ("AssignPrivateIpAddresses", {"NetworkInterfaceId": "eni-1", "PrivateIpAddresses": [
        {"PrivateIpAddress": "10.0.1.9", "Primary": "yes"}]}),
    ("AssignPrivateIpAddresses", {"NetworkInterfaceId": "eni-1", "SecondaryPrivateIpAddressCount": "1" * 5000}),
    ("NoSuchAction", {}),
]


@pytest.mark.parametrize(("action", "params"), BAD)
@pytest.mark.parametrize(("sign", "method"), [("TC3-HMAC-SHA256", "GET"), ("HmacSHA256", "POST")])
def test_bad_parameters_get_the_json_requests_errors_word_for_word(served, action, params, sign, method):
    def error(client, params):
        try:
            client.call_json(action, params)
        except TencentCloudSDKException as err:
            return err.get_code(), err.get_message()
        raise AssertionError("no error")

    # as JSON the strings are strings; typed as the form decoder types them, the same request must fail the same
    typed = json.loads(json.dumps(params).replace('"-1"', "-1"))
    assert error(served.common(sign, method), params) == error(served.common(), typed)


def test_booleans_in_any_case_and_integers_from_digits(served):
    fields = [("VpcId", "vpc-enilab"), ("SubnetId", "subnet-a"), ("NetworkInterfaceName", "n"),
              ("Tags.0.Key", "enilab-node"), ("Tags.0.Value", "node-1"), ("SecondaryPrivateIpAddressCount", "2")]
    for flag in ("true", "TRUE", "False", "fAlSe"):
        got = served.v1([*fields, ("IsRdma", flag)], action="CreateNetworkInterface")[2]["Response"]
        assert len(got["NetworkInterface"]["PrivateIpAddressSet"]) == 3, got
    body = served.v1([*fields, ("IsRdma", "1")], action="CreateNetworkInterface")[2]["Response"]
    assert body["Error"] == {"Code": "InvalidParameter",
                             "Message": "The value type of parameter `IsRdma` must be Boolean."}


def refused(answer: tuple[int, dict, dict], code: str, *fragments: str) -> None:
    status, headers, body = answer
    assert (status, headers["Content-Type"]) == (200, "application/json")
    error = body["Response"]["Error"]
    assert error["Code"] == code and body["Response"]["RequestId"], error
    for fragment in fragments:
        assert fragment in error["Message"], error


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize(("fields", "fragment"), [
    ([("Filters.0.Name", "vpc-id"), ("Filters.0.Values.0", "x"), ("Filters.2.Name", "subnet-id")], "`Filters.2`"),
    ([("Filters.1.Name", "vpc-id"), ("Filters.1.Values.0", "x")], "`Filters.1`"),
    ([("SubnetIds.0", "subnet-a"), ("SubnetIds.00", "subnet-b")], "`SubnetIds.00`"),
    ([("SubnetIds.01", "subnet-a")], "`SubnetIds.01`"),
    ([("SubnetIds.-1", "subnet-a")], "`SubnetIds.-1`"),
    ([("SubnetIds.x", "subnet-a")], "`SubnetIds.x`"),
    ([("Filters.99999999.Name", "vpc-id")], "`Filters.99999999`"),
    ([("Filters.0.Values." + "9" * 5000, "x"), ("Filters.0.Name", "vpc-id")], "`Filters.0.Values.999"),
    ([("SubnetIds", "subnet-a"), ("SubnetIds.0", "subnet-b")], "`SubnetIds`"),
    ([("SubnetIds.0", "subnet-b"), ("SubnetIds", "subnet-a")], "`SubnetIds`"),
    ([("SubnetIds.0", "subnet-a"), ("SubnetIds.0", "subnet-b")], "`SubnetIds.0` is given more than once"),
    ([("A." * 20 + "B", "1")], "nested deeper"),
    ([("SubnetIds..0", "subnet-a")], "empty part"),
])
def test_hostile_signed_forms_are_invalid_parameters_naming_the_key(served, method, fields, fragment):
    started = time.monotonic()
    refused(served.v1(fields, method=method), "InvalidParameter", fragment)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_thousands_of_keys_are_refused_before_any_is_decoded(served, method):
    fields = [(f"Key{i}", "1") for i in range(MAX_PARAMS + 10)]
    refused(served.v1(fields, method=method), "InvalidParameter", f"more than {MAX_PARAMS} parameters")
    # a thousand parameters are decoded, and the unknown one is named as a JSON request would name it
    refused(served.v1([("Colour", "red"), *((f"SubnetIds.{i}", "subnet-a") for i in range(980))]),
            "UnknownParameter", "`Colour`")


@pytest.mark.parametrize(("method", "target", "body", "code", "fragment"), [
    ("POST", "/", b"SubnetIds.0=%zz&Action=DescribeSubnets", "InvalidParameter", "%"),
    ("POST", "/", b"SubnetIds.0=abc%", "InvalidParameter", "%"),
    ("GET", "/?SubnetIds.0=%e2%82&Action=DescribeSubnets", b"", "InvalidParameter", "UTF-8"),
    ("POST", "/", b"SubnetIds.0=\xff\xfe&Action=DescribeSubnets", "InvalidParameter", "UTF-8"),
    ("POST", "/", b"%ff=1", "InvalidParameter", "UTF-8"),
    ("POST", "/", b"Action", "InvalidParameter", "`Action` has no value"),
    ("GET", "/?" + "a=1&" * (MAX_QUERY // 4 + 1), b"", "RequestSizeLimitExceeded", f"at most {MAX_QUERY}"),
    ("POST", "/", b"&" * 5000, "InvalidParameter", f"more than {MAX_PARAMS}"),
    ("POST", "/", b"Action=DescribeSubnets", "MissingParameter", "Version"),
])
def test_hostile_raw_forms_are_answered_in_the_apis_error_form(served, method, target, body, code, fragment):
    refused(served.send(method, target, body, FORM), code, fragment)


def test_a_request_line_too_long_for_http_server_is_answered_in_the_apis_form_too(served):
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=10) as conn:
        conn.sendall(b"GET /?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Type: application/json" in head
    assert json.loads(body)["Response"]["Error"]["Code"] == "RequestSizeLimitExceeded"
    assert served.sdk(method="GET").DescribeSubnets(request("DescribeSubnets")).TotalCount == 2


KEY = st.lists(st.sampled_from(["Filters", "SubnetIds", "Name", "Values", "Limit", "0", "1", "2", "00", "x", "A"]),
               min_size=1, max_size=5).map(".".join)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(action=st.sampled_from(["DescribeSubnets", "DescribeNetworkInterfaces", "AssignPrivateIpAddresses"]),
       fields=st.lists(st.tuples(KEY, st.sampled_from(["", "1", "-1", "true", "x", "subnet-a", "10.0.1.9"])),
                       max_size=6, unique_by=lambda kv: kv[0]),
       method=st.sampled_from(["POST", "GET"]))
def test_any_signed_form_gets_an_answer_or_an_api_error_never_an_internal_one(served, action, fields, method):
    status, headers, body = served.v1(fields, action=action, method=method)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    error = body["Response"].get("Error")
    assert error is None or error["Code"] != "InternalError", error
    assert error is None or "header" not in error["Message"], error  # read as signature v1, not as a bad TC3
