"""A `VpcApi` over the official Tencent Cloud SDK (`tencentcloud-sdk-python-vpc`, API 2017-03-12).

The same ipamd then runs against the real cloud or against enilab's VPC served as the same API. The adapter
- talks only to the endpoint it is given: there is no default, and the SDK's region breaker (which falls
  back to public endpoints) stays off;
- maps the API's error codes to the port's typed errors (`CODES`), and a connection lost mid-call to
  `RequestTimeout` (the call may have happened);
- gives each logical operation one ClientToken: a call repeated with the same arguments after an ambiguous
  answer carries the same token, so a retried create returns the ENI the first one made;
- waits for each asynchronous task on the ipamd's clock (a simulated clock does not move within a step:
  a task still RUNNING then counts as accepted, as the in-process VPC's calls are);
- pages describes (`Offset`/`Limit`, at most 100 a page) and keeps its connection alive.

Static IPs (`static_ips=True`): a claim's address kept in the VPC on no ENI is a reserved address
(CreateReserveIpAddresses). The adapter reserves the address *in place*, while the pod's ENI still holds
it, and only then unassigns it; a reserved address stays reserved when it is unassigned. So there is no
instant at which the address is free: unassigning first and reserving after would leave a window in
which another node's AssignPrivateIpAddresses could take it. A claim's address is bound again by naming
it in AssignPrivateIpAddresses (the reservation stays, `Bind`, until the claim ends); `release_retained`
deletes the reservation, which frees the address; an unassign that gives an address back to its subnet
first ends any reservation left on it. What this assumes of the real cloud: a secondary IP of an ENI can
be reserved, and a reserved address can be assigned by name. If the cloud refuses the first, the unassign
fails with the cloud's code and the address stays on its ENI, idle: it is never let go of.

Needs the optional extra: `pip install 'enilab[tencent]'`.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address
from urllib.parse import urlsplit

from eni_core.clock import Clock
from eni_core.ports import (
    EniRecord,
    InsufficientAddresses,
    InvalidParameter,
    NotFound,
    QuotaExceeded,
    RequestTimeout,
    Throttled,
    TransientError,
    VpcError,
)

__all__ = ["CODES", "NODE_TAG", "TencentVpc", "error_for", "from_environment"]

NODE_TAG = "enilab-node"  # the tag that names the node (instance) an ENI was created for
PAGE = 100
NAMED_PER_CALL = 10  # PrivateIpAddresses in one Assign or Unassign: "单次最多指定10个"


def _in_tens(items: list[str]) -> list[list[str]]:
    """`items` in calls of at most NAMED_PER_CALL."""
    return [items[i:i + NAMED_PER_CALL] for i in range(0, len(items), NAMED_PER_CALL)]
FILTER_VALUES = 5  # values per filter in one describe (the API's usual bound)

# the API's codes (and code prefixes, longest first) -> the port's errors
CODES: dict[str, type[VpcError]] = {
    "RequestLimitExceeded": Throttled,
    "InternalError": TransientError,
    "ServiceUnavailable": TransientError,
    "UnsupportedOperation.MutexOperationTaskRunning": TransientError,
    "OperationDenied.MutexTaskRunning": TransientError,
    "UnsupportedOperation.IdempotentProcessing": TransientError,
    "LimitExceeded": QuotaExceeded,
    "ResourceInsufficient": InsufficientAddresses,
    "InvalidParameterValue.AddressIpNotAvailable": InsufficientAddresses,
    "ResourceNotFound": NotFound,
    "InvalidParameterValue.ResourceNotFound": NotFound,
    "UnsupportedOperation.AttachmentNotFound": NotFound,
    "InvalidParameter": InvalidParameter,
    "InvalidParameterValue": InvalidParameter,
    "MissingParameter": InvalidParameter,
    "UnknownParameter": InvalidParameter,
    "UnsupportedOperation": InvalidParameter,
}


def error_for(code: str, message: str) -> VpcError:
    """The port's error for an API error code: the longest known code that is the code or a prefix of it
    (`LimitExceeded.EniPrivateIpLimit` -> `LimitExceeded`); unknown codes are a plain, final `VpcError`."""
    parts = code.split(".")
    for n in range(len(parts), 0, -1):
        cls = CODES.get(".".join(parts[:n]))
        if cls is not None:
            return cls(message)
    err = VpcError(f"{code}: {message}")
    err.code = code
    return err


class TencentVpc:
    """The port over the SDK. `node` names are instance ids; ENIs are tagged `enilab-node=<node>` when
    created, and `describe_enis` lists the ENIs with that tag: an instance's own primary ENI, or one that
    someone else attached, is never adopted by the ipamd."""

    def __init__(self, endpoint: str, region: str, *, secret_id: str, secret_key: str, clock: Clock,
                 vpc_id: str | None = None, protocol: str = "https", timeout: int = 30, keep_alive: bool = True,
                 task_timeout: float = 60.0, task_poll: float = 0.2, static_ips: bool = False) -> None:
        """`static_ips`: keep claims' addresses as reserved addresses (static-IP mode; it needs the
        reserved-address actions, which a shared-ENI node never calls)."""
        if not endpoint or not isinstance(endpoint, str):
            raise ValueError("TencentVpc needs an explicit endpoint (host[:port], such as vpc.tencentcloudapi.com "
                             "or 127.0.0.1:8080); it never picks one by itself")
        if not region:
            raise ValueError("TencentVpc needs a region, such as ap-guangzhou")
        try:
            from tencentcloud.common import credential
            from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
            from tencentcloud.common.profile.client_profile import ClientProfile
            from tencentcloud.common.profile.http_profile import HttpProfile
            from tencentcloud.vpc.v20170312 import models, vpc_client
        except ImportError:
            raise ValueError("the Tencent Cloud SDK is not installed: pip install 'enilab[tencent]'") from None
        self.models = models
        self._sdk_error = TencentCloudSDKException
        http = HttpProfile(endpoint=endpoint, protocol=protocol, reqMethod="POST", reqTimeout=timeout,
                           keepAlive=keep_alive)
        profile = ClientProfile(httpProfile=http, disable_region_breaker=True)
        self.client = vpc_client.VpcClient(credential.Credential(secret_id, secret_key), region, profile)
        if not self.client.profile.disable_region_breaker or self.client.circuit_breaker is not None:
            raise RuntimeError("the SDK's region breaker is on: it would fall back to public endpoints")
        self.clock = clock
        self.vpc_id = vpc_id
        self.task_timeout, self.task_poll = task_timeout, task_poll
        self.static_ips = static_ips
        self._subnet_vpc: dict[str, str] = {}
        self._tokens: dict[tuple, str] = {}  # logical operation -> its ClientToken, kept while ambiguous
        self.calls = 0

    # -- the SDK ---------------------------------------------------------------------------------------
    def _send(self, action: str, params: dict, *, ambiguous: bool = False):
        request = getattr(self.models, f"{action}Request")()
        request.from_json_string(json.dumps(params))
        self.calls += 1
        try:
            return getattr(self.client, action)(request)
        except self._sdk_error as err:
            code, message = err.get_code() or "", err.get_message() or ""
            if code in ("ClientNetworkError", "ServerNetworkError"):
                lost = RequestTimeout if ambiguous else TransientError
                raise lost(f"{action}: no answer from the cloud ({message})") from None
            raise error_for(code, message) from None
        except ValueError as err:  # an answer that is not the API's JSON
            raise TransientError(f"{action}: unreadable answer from the cloud ({err})") from None

    def _mutate(self, action: str, key: tuple, params: dict, *, token: bool = True, task: bool = True):
        """One logical operation: the same token while its outcome is unknown, then its task (if the action
        is asynchronous) waited for."""
        if token:
            params = {**params, "ClientToken": self._tokens.setdefault(key, str(uuid.uuid4()))}
        try:
            response = self._send(action, params, ambiguous=True)
            if task:
                self._wait(response.RequestId, action)
        except RequestTimeout:
            raise
        except VpcError:
            self._tokens.pop(key, None)
            raise
        self._tokens.pop(key, None)
        return response

    def _wait(self, task_id: str, action: str) -> None:
        started = self.clock.now()
        while True:
            try:
                status = self._send("DescribeVpcTaskResult", {"TaskId": task_id}).Status
            except (Throttled, TransientError):
                status = "RUNNING"
            if status == "SUCCESS":
                return
            if status == "FAILED":
                raise TransientError(f"{action}: task {task_id} failed")
            before = self.clock.now()
            if before - started >= self.task_timeout:
                raise RequestTimeout(f"{action}: task {task_id} still running after {self.task_timeout:g} s")
            self.clock.sleep(self.task_poll)
            if self.clock.now() == before:  # simulated time: the step is one instant; the call was accepted
                return

    def _pages(self, action: str, params: dict, items: str, as_text: bool = False) -> list:
        out: list = []
        while True:
            offset, limit = (str(len(out)), str(PAGE)) if as_text else (len(out), PAGE)
            response = self._send(action, {**params, "Offset": offset, "Limit": limit})
            page = getattr(response, items) or []
            out += page
            if not page or len(out) >= response.TotalCount:
                return out

    def _record(self, eni) -> EniRecord:
        tags = {t.Key: t.Value for t in eni.TagSet or []}
        ips = eni.PrivateIpAddressSet or []
        primary = next(IPv4Address(ip.PrivateIpAddress) for ip in ips if ip.Primary)
        attachment = eni.Attachment
        attached = attachment.InstanceId if attachment is not None and attachment.InstanceId else None
        return EniRecord(eni.NetworkInterfaceId, eni.SubnetId, eni.MacAddress, primary, tags.get(NODE_TAG, ""),
                         attached, attachment.DeviceIndex if attached else None,
                         tuple(IPv4Address(ip.PrivateIpAddress) for ip in ips if not ip.Primary))

    def _lookup(self, eni_id: str) -> EniRecord | None:
        found = self._eni(eni_id)
        return self._record(found) if found else None

    def _eni(self, eni_id: str):
        found = self._send("DescribeNetworkInterfaces", {"NetworkInterfaceIds": [eni_id]}).NetworkInterfaceSet
        return found[0] if found else None

    def _reservations(self, ips: Sequence[IPv4Address]) -> dict[IPv4Address, object]:
        """The reserved addresses among `ips` (ReserveIpAddressInfo: ReserveIpId, VpcId, State, ResourceId)."""
        wanted = [str(ip) for ip in dict.fromkeys(ips)]
        out: dict[IPv4Address, object] = {}
        for i in range(0, len(wanted), FILTER_VALUES):
            found = self._pages("DescribeReserveIpAddresses", {
                "Filters": [{"Name": "address-ip", "Values": wanted[i:i + FILTER_VALUES]}]}, "ReserveIpAddressSet")
            out.update((IPv4Address(r.ReserveIpAddress), r) for r in found)
        return out

    def _end_reservations(self, infos: Iterable) -> None:
        """Delete reservations (one call per VPC): an `UnBind` one's address goes back to its subnet, a `Bind`
        one's stays on its ENI."""
        by_vpc: dict[str, list[str]] = {}
        for r in infos:
            by_vpc.setdefault(r.VpcId, []).append(r.ReserveIpId)
        for vpc_id, ids in by_vpc.items():
            self._mutate("DeleteReserveIpAddresses", ("unreserve", vpc_id, tuple(ids)),
                         {"VpcId": vpc_id, "ReserveIpIds": ids}, token=False, task=False)

    # -- the port -------------------------------------------------------------------------------------------
    def describe_subnets(self, subnet_ids: Sequence[str]) -> dict[str, int]:
        """The API takes 100 SubnetIds a call: more go in several, each paged."""
        ids = list(subnet_ids)
        subnets = [s for i in range(0, max(len(ids), 1), PAGE)
                   for s in self._pages("DescribeSubnets", {"SubnetIds": ids[i:i + PAGE]}, "SubnetSet", as_text=True)]
        for s in subnets:
            self._subnet_vpc[s.SubnetId] = s.VpcId
        return {s.SubnetId: s.AvailableIpAddressCount for s in subnets}

    def create_eni(self, node: str, subnet_id: str) -> EniRecord:
        vpc_id = self._subnet_vpc.get(subnet_id) or self.vpc_id
        if vpc_id is None:
            self.describe_subnets([subnet_id])
            vpc_id = self._subnet_vpc[subnet_id]
        response = self._mutate("CreateNetworkInterface", ("create", node, subnet_id), {
            "VpcId": vpc_id, "SubnetId": subnet_id, "NetworkInterfaceName": f"enilab-{node}"[:60],
            "Tags": [{"Key": NODE_TAG, "Value": node}]})
        return self._record(response.NetworkInterface)

    def attach_eni(self, eni_id: str, node: str) -> EniRecord:
        self._mutate("AttachNetworkInterface", ("attach", eni_id, node),
                     {"NetworkInterfaceId": eni_id, "InstanceId": node})
        record = self._lookup(eni_id)
        if record is None or record.attached_to != node:
            raise RequestTimeout(f"AttachNetworkInterface: {eni_id} does not show attached to {node} yet")
        return record

    def detach_eni(self, eni_id: str) -> None:
        record = self._lookup(eni_id)
        if record is None:
            raise NotFound(f"ENI {eni_id} does not exist")
        instance = record.attached_to or record.node
        self._mutate("DetachNetworkInterface", ("detach", eni_id),
                     {"NetworkInterfaceId": eni_id, "InstanceId": instance})

    def delete_eni(self, eni_id: str) -> None:
        self._mutate("DeleteNetworkInterface", ("delete", eni_id), {"NetworkInterfaceId": eni_id}, token=False)

    def assign_private_ips(self, eni_id: str, count: int = 0, ips: Iterable[IPv4Address] = ()) -> list[IPv4Address]:
        """Named addresses go ten to a call, the API's limit; a count goes in one."""
        wanted = [str(ip) for ip in ips]
        got: list[IPv4Address] = []
        for part in _in_tens(wanted) if wanted else [[]]:
            params: dict = {"NetworkInterfaceId": eni_id}
            if part:
                params["PrivateIpAddresses"] = [{"PrivateIpAddress": ip} for ip in part]
            else:
                params["SecondaryPrivateIpAddressCount"] = count
            response = self._mutate("AssignPrivateIpAddresses", ("assign", eni_id, count, tuple(part)), params)
            got += [IPv4Address(ip.PrivateIpAddress) for ip in response.PrivateIpAddressSet or []]
        return got

    def unassign_private_ips(self, eni_id: str, ips: Iterable[IPv4Address], retain: bool = False) -> None:
        """With `retain`, reserve first (in place, on the ENI), then unassign: the address is never free.
        Without, end any reservation left on the addresses first, so that they go back to the subnet."""
        gone = list(ips)
        if retain and not self.static_ips:
            raise InvalidParameter("keeping an address on no ENI needs TencentVpc(static_ips=True): it becomes a "
                                   "reserved address")
        if self.static_ips:
            reserved = self._reservations(gone)
            if retain:
                missing = [str(ip) for ip in gone if ip not in reserved]
                if missing:
                    self._mutate("CreateReserveIpAddresses", ("reserve", tuple(missing)), {
                        "VpcId": self._vpc_of(eni_id), "IpAddresses": missing, "Name": "enilab-static-ip"},
                        task=False)
            elif reserved:
                self._end_reservations(reserved.values())
        for part in _in_tens([str(ip) for ip in gone]):  # the API takes ten named addresses a call
            self._mutate("UnassignPrivateIpAddresses", ("unassign", eni_id), {
                "NetworkInterfaceId": eni_id, "PrivateIpAddresses": [{"PrivateIpAddress": ip} for ip in part]},
                token=False)

    def release_retained(self, ips: Iterable[IPv4Address]) -> None:
        """Delete the addresses' reservations, which frees them. Each must be reserved on no ENI."""
        wanted = list(ips)
        reserved = self._reservations(wanted)
        for ip in wanted:
            if ip not in reserved:
                raise NotFound(f"{ip} is not a reserved address")
            if reserved[ip].State != "UnBind":
                raise NotFound(f"{ip} is not retained on no ENI: {reserved[ip].ResourceId} holds it")
        self._end_reservations(reserved.values())

    def _vpc_of(self, eni_id: str) -> str:
        """The VPC to reserve in: the one given, else the ENI's (asked once)."""
        if self.vpc_id is None:
            eni = self._eni(eni_id)
            if eni is None:
                raise NotFound(f"ENI {eni_id} does not exist")
            self.vpc_id = eni.VpcId
        return self.vpc_id

    def describe_enis(self, node: str) -> list[EniRecord]:
        found = self._pages("DescribeNetworkInterfaces", {"Filters": [{"Name": f"tag:{NODE_TAG}", "Values": [node]}]},
                            "NetworkInterfaceSet")
        return [self._record(eni) for eni in found]



def from_environment(endpoint_url: str | None, region: str | None, clock: Clock, **options) -> TencentVpc:
    """The adapter for `enilab-agent --cloud tencent --endpoint URL --region R`: the credentials come from the
    SDK's usual environment variables, TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY."""
    if not endpoint_url:
        raise ValueError("--cloud tencent needs --endpoint (https://vpc.tencentcloudapi.com for the real cloud, "
                         "http://127.0.0.1:PORT for `enilab vpc serve`)")
    url = urlsplit(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
    if url.scheme not in ("http", "https") or not url.netloc or url.path not in ("", "/"):
        raise ValueError(f"--endpoint {endpoint_url!r} is not http(s)://HOST[:PORT]")
    secret_id, secret_key = os.environ.get("TENCENTCLOUD_SECRET_ID"), os.environ.get("TENCENTCLOUD_SECRET_KEY")
    if not secret_id or not secret_key:
        raise ValueError("set TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY (the SDK's credentials)")
    return TencentVpc(url.netloc, region or "", secret_id=secret_id, secret_key=secret_key, clock=clock,
                      protocol=url.scheme, **options)
