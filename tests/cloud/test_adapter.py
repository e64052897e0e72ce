"""The ipamd's `VpcApi` over the official SDK: the port's semantics, its typed errors, ClientTokens, task
polling on the ipamd's clock, paging, and never a public endpoint."""
from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Network

import pytest

from eni_core.clock import SimClock
from eni_core.model import Subnet
from eni_core.ports import (
    InsufficientAddresses,
    InvalidParameter,
    NotFound,
    QuotaExceeded,
    RequestTimeout,
    Throttled,
    TransientError,
    VpcError,
)
from eni_core.tencent import TencentVpc, error_for, from_environment
from testbed.world.tencent_api import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY
from testbed.world.vpc import FaultConfig, SimVpc
from tests.cloud.helpers import REGION, error_code, request, serve


@pytest.fixture
def served():
    s = serve(nodes={"node-1": (3, 4), "node-2": (2, 4)})
    yield s
    s.server.close()


def adapter(served, clock=None, **kw) -> TencentVpc:
    return TencentVpc(served.server.endpoint, REGION, secret_id=DEFAULT_SECRET_ID, secret_key=DEFAULT_SECRET_KEY,
                      clock=clock or served.clock, protocol="http", **kw)


def test_the_port_through_the_sdk_does_what_the_vpc_does_in_process(served):
    """The same calls on a twin SimVpc, directly: the same records, IPs and errors."""
    twin = SimVpc(list(served.vpc.subnets.values()), now=served.clock.now)
    for name, inst in served.vpc.instances.items():
        twin.add_instance(name, inst.max_enis, inst.ips_per_eni)
    for vpc in (adapter(served), twin):
        assert vpc.describe_subnets(["subnet-a", "subnet-b"]) == {"subnet-a": 253, "subnet-b": 13}
        made = vpc.create_eni("node-1", "subnet-a")
        attached = vpc.attach_eni(made.id, "node-1")
        assert (attached.attached_to, attached.device_index, attached.mac) == ("node-1", 1, made.mac)
        assert vpc.assign_private_ips(made.id, 3) == [IPv4Address(f"10.0.1.{i}") for i in (3, 4, 5)]
        assert vpc.assign_private_ips(made.id, ips=[IPv4Address("10.0.1.40")]) == [IPv4Address("10.0.1.40")]
        with pytest.raises(QuotaExceeded):
            vpc.assign_private_ips(made.id, 1)
        vpc.unassign_private_ips(made.id, [IPv4Address("10.0.1.4")])
        with pytest.raises(NotFound):
            vpc.unassign_private_ips(made.id, [IPv4Address("10.0.1.4")])
        spare = vpc.create_eni("node-1", "subnet-b")
        (shown_spare,) = [r for r in vpc.describe_enis("node-1") if r.id == spare.id]
        assert shown_spare.attached_to is None and shown_spare.ips == ()
        vpc.detach_eni(made.id)
        with pytest.raises(NotFound):
            vpc.detach_eni(made.id)
        vpc.delete_eni(made.id)
        with pytest.raises(NotFound):
            vpc.delete_eni(made.id)
    assert [r.ips for r in adapter(served).describe_enis("node-1")] == [r.ips for r in twin.describe_enis("node-1")]
    assert served.vpc.available("subnet-a") == twin.available("subnet-a")


def test_more_than_ten_named_addresses_go_in_calls_of_ten_which_is_all_the_api_takes():
    s = serve(nodes={"node-big": (2, 30)})
    try:
        vpc = adapter(s)
        eni = vpc.attach_eni(vpc.create_eni("node-big", "subnet-a").id, "node-big")
        named = [IPv4Address(f"10.0.1.{n}") for n in range(100, 125)]
        assert vpc.assign_private_ips(eni.id, ips=named) == named  # 25 named: three calls
        vpc.unassign_private_ips(eni.id, named[:22])
        assert sorted(s.vpc.enis[eni.id].ips) == named[22:]
        eleven = [{"PrivateIpAddress": str(ip)} for ip in named[:11]]  # the API itself refuses eleven a call
        for action in ("AssignPrivateIpAddresses", "UnassignPrivateIpAddresses"):
            call = getattr(s.sdk(), action)
            assert error_code(call, request(action, NetworkInterfaceId=eni.id, PrivateIpAddresses=eleven)) \
                == "InvalidParameterValue.Range"
    finally:
        s.server.close()


def test_quota_subnet_and_state_errors_are_the_ports_typed_errors(served):
    vpc = adapter(served)
    enis = [vpc.create_eni("node-2", "subnet-b") for _ in range(3)]
    for eni in enis[:2]:
        vpc.attach_eni(eni.id, "node-2")
    with pytest.raises(QuotaExceeded):
        vpc.attach_eni(enis[2].id, "node-2")
    with pytest.raises(InvalidParameter):
        vpc.attach_eni(enis[0].id, "node-1")  # attached already
    with pytest.raises(InvalidParameter):
        vpc.delete_eni(enis[0].id)  # attached: detach first
    served.vpc.add_instance("node-2", 2, 50)
    vpc.assign_private_ips(enis[0].id, 10)
    with pytest.raises(InsufficientAddresses):
        vpc.assign_private_ips(enis[1].id, 1)
    with pytest.raises(NotFound):
        vpc.create_eni("node-9", "subnet-a")


@pytest.mark.parametrize(("code", "error"), [
    ("RequestLimitExceeded", Throttled), ("InternalError", TransientError),
    ("UnsupportedOperation.MutexOperationTaskRunning", TransientError),
    ("LimitExceeded.EniPrivateIpLimit", QuotaExceeded), ("LimitExceeded.NetworkInterfaceLimitExceeded", QuotaExceeded),
    ("ResourceInsufficient.Subnet", InsufficientAddresses), ("ResourceNotFound", NotFound),
    ("UnsupportedOperation.AttachmentNotFound", NotFound), ("InvalidParameterValue.Malformed", InvalidParameter),
    ("UnsupportedOperation.AttachmentAlreadyExists", InvalidParameter), ("MissingParameter", InvalidParameter),
])
def test_api_codes_map_to_the_ports_errors(code, error):
    assert type(error_for(code, "m")) is error


def test_unknown_codes_such_as_auth_failures_are_final_errors_that_keep_their_code():
    err = error_for("AuthFailure.SignatureFailure", "bad signature")
    assert type(err) is VpcError and not err.retryable and err.code == "AuthFailure.SignatureFailure"


def test_a_wrong_key_is_a_final_error_not_a_retry(served):
    vpc = TencentVpc(served.server.endpoint, REGION, secret_id=DEFAULT_SECRET_ID, secret_key="wrong",
                     clock=served.clock, protocol="http")
    with pytest.raises(VpcError) as err:
        vpc.describe_subnets(["subnet-a"])
    assert err.value.code == "AuthFailure.SignatureFailure" and not err.value.retryable


def test_a_create_retried_after_a_lost_answer_returns_the_same_eni(served):
    vpc = adapter(served)
    served.vpc.faults = FaultConfig(timeout=1.0)
    with pytest.raises(RequestTimeout):
        vpc.create_eni("node-1", "subnet-a")
    served.vpc.faults = FaultConfig()
    (first,) = served.vpc.enis
    assert vpc.create_eni("node-1", "subnet-a").id == first
    assert list(served.vpc.enis) == [first]
    assert vpc.create_eni("node-1", "subnet-a").id != first  # settled: the next create is a new operation


def test_an_assign_retried_after_a_lost_answer_binds_nothing_more(served):
    vpc = adapter(served)
    eni = vpc.create_eni("node-1", "subnet-a")
    vpc.attach_eni(eni.id, "node-1")
    served.vpc.faults = FaultConfig(timeout=1.0)
    with pytest.raises(RequestTimeout):
        vpc.assign_private_ips(eni.id, 2)
    served.vpc.faults = FaultConfig()
    got = vpc.assign_private_ips(eni.id, 2)
    assert sorted(served.vpc.enis[eni.id].ips) == got


def test_tasks_are_polled_on_the_clock_until_they_succeed():
    s = serve(faults=FaultConfig(consistency_delay=1.0))
    try:
        vpc = adapter(s, task_poll=0.25)
        eni = vpc.create_eni("node-1", "subnet-a")
        assert s.clock.slept == [0.25] * 4  # RUNNING for 1 s of the (fake) clock, then SUCCESS
        assert vpc.attach_eni(eni.id, "node-1").device_index == 1
    finally:
        s.server.close()


def test_on_a_simulated_clock_a_running_task_counts_as_accepted():
    s = serve(faults=FaultConfig(consistency_delay=5.0))
    try:
        vpc = adapter(s, clock=SimClock(s.clock.t))
        eni = vpc.create_eni("node-1", "subnet-a")
        assert vpc.attach_eni(eni.id, "node-1").device_index == 1
    finally:
        s.server.close()


def test_a_task_running_past_its_timeout_is_an_ambiguous_answer():
    s = serve(faults=FaultConfig(consistency_delay=600.0))
    try:
        vpc = adapter(s, task_timeout=2.0, task_poll=0.5)
        with pytest.raises(RequestTimeout):
            vpc.create_eni("node-1", "subnet-a")
        assert len(s.vpc.enis) == 1
    finally:
        s.server.close()


def test_describes_page_through_more_than_a_hundred(served):
    served.vpc.add_instance("node-1", 120, 4)
    for _ in range(105):
        served.vpc.create_eni("node-1", "subnet-a")
    vpc = adapter(served)
    before = vpc.calls
    assert len(vpc.describe_enis("node-1")) == 105
    assert vpc.calls - before == 2


def test_subnets_page_as_strings(served):
    many = tuple(Subnet(f"subnet-{i:03d}", IPv4Network(f"10.1.{i}.0/24")) for i in range(130))
    s = serve(subnets=many)
    try:
        assert len(adapter(s).describe_subnets([m.id for m in many])) == 130
    finally:
        s.server.close()


def test_the_adapter_needs_an_explicit_endpoint_and_region():
    for endpoint, region in (("", REGION), (None, REGION), ("127.0.0.1:1", "")):
        with pytest.raises(ValueError, match=r"endpoint|region"):
            TencentVpc(endpoint, region, secret_id="a", secret_key="b", clock=SimClock())


def test_the_adapter_never_resolves_a_public_endpoint_and_keeps_the_region_breaker_off(served, monkeypatch):
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def spy(host, *args, **kw):
        looked_up.append(str(host))
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    vpc = adapter(served)
    assert vpc.client.profile.disable_region_breaker and vpc.client.circuit_breaker is None
    served.vpc.faults = FaultConfig(transient=1.0)  # failures are what would trip a breaker to a backup endpoint
    for _ in range(8):
        with pytest.raises(TransientError):
            vpc.describe_subnets(["subnet-a"])
    served.vpc.faults = FaultConfig()
    vpc.describe_subnets(["subnet-a"])
    assert looked_up and set(looked_up) == {"127.0.0.1"}
    assert not any("tencentcloudapi.com" in host for host in looked_up)


def test_from_environment_takes_the_sdks_credential_variables(served, monkeypatch):
    monkeypatch.delenv("TENCENTCLOUD_SECRET_ID", raising=False)
    monkeypatch.delenv("TENCENTCLOUD_SECRET_KEY", raising=False)
    url = f"http://{served.server.endpoint}"
    with pytest.raises(ValueError, match="TENCENTCLOUD_SECRET_ID"):
        from_environment(url, REGION, SimClock())
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", DEFAULT_SECRET_ID)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", DEFAULT_SECRET_KEY)
    for bad in (None, "ftp://x", "http://", "http://h:1/path"):
        with pytest.raises(ValueError, match="endpoint"):
            from_environment(bad, REGION, SimClock())
    assert from_environment(url, REGION, SimClock()).describe_subnets(["subnet-b"]) == {"subnet-b": 13}


def test_a_cloud_that_went_away_is_a_retryable_error_and_an_ambiguous_one_for_changes():
    s = serve()
    vpc = adapter(s)
    vpc.describe_subnets(["subnet-a"])  # a kept-alive connection, now to a server that is gone
    s.server.close()
    with pytest.raises(TransientError):
        vpc.describe_subnets(["subnet-a"])
    with pytest.raises(RequestTimeout):
        vpc.create_eni("node-1", "subnet-a")
