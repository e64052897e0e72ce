"""The Tencent Cloud VPC API 3.0 actions (version 2017-03-12) over a `SimVpc`: parameters, shapes, errors.

Each action checks its parameters against a table (unknown: `UnknownParameter`, missing:
`MissingParameter`, wrong type: `InvalidParameter`); the table's checks also say what type they take, so a
request sent as strings (a form, a query string) is typed by the same table (`from_form`) and then checked
as its JSON twin would be. Then the action makes exactly one call of the simulated VPC, so
the VPC's seeded faults roll once per call as they do in-process, and maps the VPC's typed errors to the
API's codes. What the VPC cannot know is kept here: names, extra tags, asynchronous tasks and ClientTokens.

- Mutating actions are asynchronous: their RequestId is a task that stays RUNNING for the scenario's
  `consistency_delay` on the VPC's clock (the simulated one in a scenario), then SUCCESS. Errors the API
  reports at once (quotas, parameters, throttling) come back at once.
- A ClientToken seen before returns the first answer, RequestId included (the same task), without
  touching the VPC; the same token with other parameters is `UnsupportedOperation.IdempotentParameterMismatch`.
- An injected timeout (the call happened, the caller hears nothing) drops the connection unanswered.
- DescribeNetworkInterfaces by `NetworkInterfaceIds` is a consistent lookup, outside the fault model
  (clients use it to finish a call they made, such as reading an attachment's device index); with
  `Filters` it is the VPC's lagging, fault-injected describe.
- Reserved addresses (`rsvip-...`, CreateReserveIpAddresses and its kin) are the VPC's retained ones: an
  address kept for someone on no ENI. A reservation holds its address whether an ENI has it or not: `Bind`
  while it is a secondary IP of an ENI (`ResourceId`), `UnBind` otherwise, and unassigning a reserved
  address keeps it reserved instead of freeing it. An address can be reserved in place, while an ENI holds
  it, so a client can keep an address it is about to unassign without ever letting it go free (reserve,
  then unassign: no other caller can take it in between). Naming a reserved address in
  AssignPrivateIpAddresses binds it (nothing else ever picks it); deleting an `UnBind` reservation frees
  its address, deleting a `Bind` one only ends the reservation. Reserving free addresses is one VPC call
  (faults included); what changes no address's availability (reserving in place, ending a `Bind`
  reservation, describing) is bookkeeping outside the fault model.
"""
from __future__ import annotations

import contextlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from ipaddress import AddressValueError, IPv4Address
from typing import TypeVar

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
from testbed.world.vpc import SimVpc

__all__ = ["ACTIONS", "NODE_TAG", "VERSION", "ApiError", "DropConnection", "VpcService", "from_form"]

VERSION = "2017-03-12"
NODE_TAG = "enilab-node"  # the instance an ENI was created for: its IP quota is that instance type's
TOKEN_MEMORY = 10_000
_ENI_ID = re.compile(r"^eni-[0-9a-z]{1,32}$")
_RSVIP_ID = re.compile(r"^rsvip-[0-9a-z]{8}$")


class ApiError(Exception):
    """An error answer: `Response.Error.Code` and `.Message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class DropConnection(Exception):
    """The call was carried out but its answer is lost: close the connection without a response."""


# -- parameter tables ------------------------------------------------------------------------------------
# What each check takes, for requests whose values all come as strings (a form body, a query string): str,
# int or bool, or [item], a list of values each taken as `item` takes them (a check, or a dict of an object's
# fields and their checks). `from_form` converts by it, and leaves what does not convert for the check to
# refuse with the message a JSON value of the wrong type gets.
_TAKES: dict[Callable, object] = {}
_C = TypeVar("_C", bound=Callable)


def _takes(shape: object) -> Callable[[_C], _C]:
    def mark(check: _C) -> _C:
        _TAKES[check] = shape
        return check
    return mark


def _type_error(name: str, what: str) -> ApiError:
    return ApiError("InvalidParameter", f"The value type of parameter `{name}` must be {what}.")


@_takes(str)
def _str(name: str, v: object) -> str:
    if not isinstance(v, str):
        raise _type_error(name, "String")
    return v


@_takes(int)
def _int(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _type_error(name, "Integer")
    return v


@_takes(bool)
def _bool(name: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise _type_error(name, "Boolean")
    return v


@_takes(str)
def _digits(name: str, v: object) -> int:
    """DescribeSubnets pages with strings: "0", "20"."""
    if not isinstance(v, str) or not v.isdigit() or not v.isascii():
        raise _type_error(name, 'String of digits, such as "20"')
    return int(v)


@_takes(str)
def _client_token(name: str, v: object) -> str:
    token = _str(name, v)
    if not token or len(token) > 64 or not token.isascii():
        raise ApiError("InvalidParameterValue.TooLong" if len(token) > 64 else "InvalidParameterValue",
                       f"`{name}` must be 1 to 64 ASCII characters, unique per request.")
    return token


@_takes(str)
def _unserved(name: str, v: object) -> None:
    raise ApiError("UnsupportedOperation", f"`{name}` paging is not served here; page with Offset and Limit.")


@_takes([_str])
def _strs(name: str, v: object) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _type_error(name, "Array of String")
    return v


def _objects(name: str, v: object, fields: dict[str, Callable]) -> list[dict]:
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise _type_error(name, "Array of Object")
    for i, item in enumerate(v):
        for key, value in item.items():
            if key not in fields:
                raise ApiError("UnknownParameter", f"The parameter `{name}.{i}.{key}` is not recognized.")
            fields[key](f"{name}.{i}.{key}", value)
    return v


FILTER_FIELDS: dict[str, Callable] = {"Name": _str, "Values": _strs}
TAG_FIELDS: dict[str, Callable] = {"Key": _str, "Value": _str}
IP_SPEC_FIELDS: dict[str, Callable] = {
    "PrivateIpAddress": _str, "Primary": _bool, "PublicIpAddress": _str, "AddressId": _str, "Description": _str,
    "IsWanIpBlocked": _bool, "State": _str, "QosLevel": _str}


@_takes([FILTER_FIELDS])
def _filters(name: str, v: object) -> list[dict]:
    items = _objects(name, v, FILTER_FIELDS)
    for i, f in enumerate(items):
        if "Name" not in f or "Values" not in f:
            raise ApiError("InvalidParameter.FilterMissParameter", f"`{name}.{i}` needs Name and Values.")
    return items


@_takes([TAG_FIELDS])
def _tags(name: str, v: object) -> list[dict]:
    items = _objects(name, v, TAG_FIELDS)
    for i, t in enumerate(items):
        if not t.get("Key"):
            raise ApiError("InvalidParameterValue.InvalidTag", f"`{name}.{i}.Key` must not be empty.")
    return items


NAMED_IPS_PER_CALL = 10  # the API's own limit on PrivateIpAddresses (assign and unassign): "单次最多指定10个"
IDS_PER_CALL = 100  # SubnetIds of one DescribeSubnets: "每次请求的实例的上限为100"


@_takes([IP_SPEC_FIELDS])
def _ip_specs(name: str, v: object) -> list[dict]:
    items = _objects(name, v, IP_SPEC_FIELDS)
    for i, spec in enumerate(items):
        if "PrivateIpAddress" not in spec:
            raise ApiError("MissingParameter", f"The request is missing a required parameter `{name}.{i}."
                                               "PrivateIpAddress`.")
        try:
            IPv4Address(spec["PrivateIpAddress"])
        except AddressValueError:
            raise ApiError("InvalidParameterValue.Malformed",
                           f"`{name}.{i}.PrivateIpAddress` {spec['PrivateIpAddress']!r} is not an IPv4 "
                           "address.") from None
    if len(items) > NAMED_IPS_PER_CALL:
        raise ApiError("InvalidParameterValue.Range", f"`{name}` names {len(items)} addresses; at most "
                                                      f"{NAMED_IPS_PER_CALL} may be named in one call.")
    named = [IPv4Address(spec["PrivateIpAddress"]) for spec in items]
    if len(set(named)) < len(named):
        raise ApiError("InvalidParameterValue.DuplicatePara", f"`{name}` names an address more than once.")
    return items


@dataclass(frozen=True)
class P:
    """One parameter of an action: its check, and whether it must be given."""

    check: Callable[[str, object], object]
    required: bool = False


def validate(action: str, params: dict, table: dict[str, P]) -> dict:
    for key in params:
        if key not in table:
            raise ApiError("UnknownParameter", f"The parameter `{key}` is not recognized by {action}.")
    for key, p in table.items():
        if key in params:
            p.check(key, params[key])
        elif p.required:
            raise ApiError("MissingParameter", f"The request is missing a required parameter `{key}`.")
    return params


_INTEGER = re.compile(r"-?[0-9]+")


def from_form(table: dict[str, P], tree: dict[str, object]) -> dict[str, object]:
    """Parameters sent as strings, nested by their flattened keys (`Filters.0.Values.0`), typed as `table`'s
    checks take them in JSON: integers from digits, booleans from true and false in any case, lists from
    objects keyed 0 to n-1. Unknown names and values that do not convert are left for `validate` to refuse."""
    return {k: _typed(table[k].check, k, v) if k in table else v for k, v in tree.items()}


def _typed(check: Callable, name: str, v: object) -> object:
    shape = _TAKES.get(check)
    if isinstance(shape, list):
        return _listed(shape[0], name, v) if isinstance(v, dict) else v
    if not isinstance(v, str):
        return v
    if shape is int and _INTEGER.fullmatch(v):
        with contextlib.suppress(ValueError):  # more digits than int() takes: left a string, not an Integer
            return int(v)
    if shape is bool:
        return {"true": True, "false": False}.get(v.lower(), v)
    return v


def _listed(item: object, name: str, v: dict) -> list:
    """The values of `v`, keyed "0" to str(n - 1), in order; any other key is InvalidParameter. Nothing is
    allocated for an index beyond the keys given (`Filters.99999999.Name`)."""
    n = len(v)
    for key in v:
        if (not key.isascii() or not key.isdigit() or len(key) > len(str(n)) or (key != "0" and key[0] == "0")
                or int(key) >= n):
            raise ApiError("InvalidParameter", f"The parameter `{name}.{key}` is out of order: the indexes of a "
                                               f"list run 0, 1, 2... with no gap (here 0 to {n - 1}).")
    out = [v[str(i)] for i in range(n)]
    if isinstance(item, dict):
        return [{f: _typed(item[f], f"{name}.{i}.{f}", x) if f in item else x for f, x in obj.items()}
                if isinstance(obj, dict) else obj for i, obj in enumerate(out)]
    return [_typed(item, f"{name}.{i}", x) for i, x in enumerate(out)]  # type: ignore[arg-type]


# -- the service -----------------------------------------------------------------------------------------
@dataclass
class _Task:
    done_at: float
    resource: str | None


@dataclass
class _Reservation:
    id: str
    ip: IPv4Address
    subnet_id: str
    name: str
    description: str
    created: str
    tags: list[dict]


@dataclass
class _Meta:
    name: str
    description: str
    created: str
    tags: list[dict]


class VpcService:
    """The API's state around one `SimVpc`: call `handle(action, params)` with the lock free."""

    def __init__(self, vpc: SimVpc, *, now: Callable[[], float], lock: threading.RLock | None = None,
                 vpc_id: str = "vpc-enilab") -> None:
        self.vpc = vpc
        self.now = now
        self.lock = lock or threading.RLock()
        self.vpc_id = vpc_id
        self.tasks: dict[str, _Task] = {}
        self.tokens: OrderedDict[str, tuple[str, str, dict, str]] = OrderedDict()
        self.meta: dict[str, _Meta] = {}
        self.reserved: dict[IPv4Address, _Reservation] = {}  # address -> its reservation
        self._reserve_seq = 0

    def handle(self, action: str, params: dict, request_id: str, *, form: bool = False) -> tuple[dict, str]:
        """Answer one call: (the Response body without RequestId, the RequestId to send). `form`: the values are
        strings nested by their flattened keys (a form body, a query string), typed here by the action's table."""
        spec = ACTIONS.get(action)
        if spec is None:
            raise ApiError("InvalidAction", f"The action `{action}` is not served; the VPC actions served are "
                                            f"{', '.join(sorted(ACTIONS))}.")
        method, table, mutating = spec
        if form:
            params = from_form(table, params)
        validate(action, params, table)
        with self.lock:
            if self.reserved:
                self._live()
            if not mutating:
                return method(self, params), request_id
            token = params.get("ClientToken")
            fingerprint = json.dumps({k: v for k, v in params.items() if k != "ClientToken"}, sort_keys=True)
            if token is not None:
                seen = self.tokens.get(token)
                if seen is not None:
                    if seen[:2] != (action, fingerprint):
                        raise ApiError("UnsupportedOperation.IdempotentParameterMismatch",
                                       f"ClientToken {token} was used for another request; use a new token.")
                    return seen[2], seen[3]
            try:
                body, resource = method(self, params)
            except DropConnection as dropped:
                body, resource = dropped.args
                self._remember(token, action, fingerprint, body, request_id, resource)
                raise DropConnection() from None
            self._remember(token, action, fingerprint, body, request_id, resource)
            return body, request_id

    def _remember(self, token: str | None, action: str, fingerprint: str, body: dict, request_id: str,
                  resource: str | None) -> None:
        self.tasks[request_id] = _Task(self.now() + self.vpc.faults.consistency_delay, resource)
        if token is not None:
            self.tokens[token] = (action, fingerprint, body, request_id)
            while len(self.tokens) > TOKEN_MEMORY:
                self.tokens.popitem(last=False)

    # -- calling the VPC -----------------------------------------------------------------------------
    def _vpc(self, action: str, fn: Callable[[], object], eni_id: str | None = None,
             answer: Callable[[object], dict] | None = None) -> object:
        """One call of the simulated VPC, its errors as the API's. A timeout that happened drops the
        connection, carrying the answer the caller would have had (for its ClientToken)."""
        try:
            return fn()
        except RequestTimeout as err:
            body = answer(err.outcome) if answer is not None else {}
            raise DropConnection(body, eni_id) from None
        except VpcError as err:
            raise ApiError(self._code(action, err, eni_id), err.message) from None

    def _code(self, action: str, err: VpcError, eni_id: str | None) -> str:
        if isinstance(err, Throttled):
            return "RequestLimitExceeded"
        if isinstance(err, TransientError):
            # on an existing ENI the API's transient refusal is another task still running on it
            return "UnsupportedOperation.MutexOperationTaskRunning" if eni_id else "InternalError"
        if isinstance(err, InsufficientAddresses):
            return "ResourceInsufficient.Subnet"
        if isinstance(err, QuotaExceeded):
            return ("LimitExceeded.NetworkInterfaceLimitExceeded" if action == "AttachNetworkInterface"
                    else "LimitExceeded.EniPrivateIpLimit")
        if isinstance(err, NotFound):
            if action == "DetachNetworkInterface" and eni_id in self.vpc.enis:
                return "UnsupportedOperation.AttachmentNotFound"
            return "ResourceNotFound"
        if isinstance(err, InvalidParameter):
            if action == "AttachNetworkInterface":
                return "UnsupportedOperation.AttachmentAlreadyExists"
            if action == "DeleteNetworkInterface":
                return "UnsupportedOperation.InvalidState"
            return "InvalidParameterValue"
        return "InternalError"

    def _eni_id(self, params: dict) -> str:
        eni_id = params["NetworkInterfaceId"]
        if not _ENI_ID.match(eni_id):
            raise ApiError("InvalidParameterValue.Malformed",
                           f"NetworkInterfaceId {eni_id!r} is malformed; it looks like eni-5k56k7k7.")
        return eni_id

    # -- shapes ------------------------------------------------------------------------------------------
    def _eni_shape(self, rec: EniRecord) -> dict:
        meta = self.meta.get(rec.id) or _Meta(rec.id, "", _stamp(0), [])
        ips = [_ip_shape(rec.primary_ip, primary=True)] + [_ip_shape(ip) for ip in rec.ips]
        out = {
            "VpcId": self.vpc_id, "SubnetId": rec.subnet_id, "NetworkInterfaceId": rec.id,
            "NetworkInterfaceName": meta.name, "NetworkInterfaceDescription": meta.description, "GroupSet": [],
            "Primary": False, "MacAddress": rec.mac, "State": "AVAILABLE", "NetworkInterfaceState": "AVAILABLE",
            "PrivateIpAddressSet": ips, "Ipv6AddressSet": [], "Zone": "", "CreatedTime": meta.created,
            "TagSet": [{"Key": NODE_TAG, "Value": rec.node}, *meta.tags], "EniType": 0, "Business": "",
            "CdcId": "", "AttachType": 0, "ResourceId": "", "QosLevel": "DEFAULT",
        }
        if rec.attached_to is not None:
            out["Attachment"] = {"InstanceId": rec.attached_to, "DeviceIndex": rec.device_index,
                                 "InstanceAccountId": "", "AttachTime": meta.created}
        return out

    # -- actions ---------------------------------------------------------------------------------------
    def describe_subnets(self, params: dict) -> dict:
        if "SubnetIds" in params and "Filters" in params:
            raise ApiError("InvalidParameter.Coexist", "SubnetIds and Filters cannot be given together.")
        offset, limit = _page(params, _digits)
        ids = params.get("SubnetIds")
        if ids is not None and len(ids) > IDS_PER_CALL:
            raise ApiError("InvalidParameterValue.Range", f"SubnetIds names {len(ids)} subnets; at most "
                                                          f"{IDS_PER_CALL} in one call.")
        if ids is None:
            ids = [s for s in self.vpc.subnets
                   if _matches(params.get("Filters", []), self._subnet_field, s, SUBNET_FILTERS)]
        free = self._vpc("DescribeSubnets", lambda: self.vpc.describe_subnets(ids))
        shown = [self._subnet_shape(s, free[s]) for s in dict.fromkeys(ids)]
        return {"TotalCount": len(shown), "SubnetSet": shown[offset:offset + limit]}

    def _subnet_field(self, subnet_id: str, name: str) -> list[str]:
        if name.startswith("tag:"):
            return []  # the served subnets carry no tags (their TagSet is empty): a tag filter matches none
        s = self.vpc.subnets[subnet_id]
        return {"subnet-id": [s.id], "vpc-id": [self.vpc_id], "cidr-block": [str(s.cidr)],
                "subnet-name": [s.id]}[name]

    def _subnet_shape(self, subnet_id: str, available: int) -> dict:
        s = self.vpc.subnets[subnet_id]
        return {"VpcId": self.vpc_id, "SubnetId": s.id, "SubnetName": s.id, "CidrBlock": str(s.cidr),
                "Ipv6CidrBlock": "", "IsDefault": False, "EnableBroadcast": False, "Zone": "", "RouteTableId": "",
                "CreatedTime": _stamp(0), "AvailableIpAddressCount": available,
                "TotalIpAddressCount": s.size - s.reserved, "NetworkAclId": "", "IsRemoteVpcSnat": False,
                "TagSet": [], "CdcId": "", "IsCdcSubnet": 0}

    def describe_network_interfaces(self, params: dict) -> dict:
        if "NetworkInterfaceIds" in params and "Filters" in params:
            raise ApiError("InvalidParameter.Coexist", "NetworkInterfaceIds and Filters cannot be given together.")
        offset, limit = _page(params, _int)
        if "NetworkInterfaceIds" in params:
            ids = params["NetworkInterfaceIds"]
            if len(ids) > 100:
                raise ApiError("InvalidParameterValue.Range", "NetworkInterfaceIds: at most 100 per request.")
            found = [replace(self.vpc.enis[i].record, ips=tuple(self.vpc.enis[i].ips)) for i in dict.fromkeys(ids)
                     if i in self.vpc.enis]
        else:
            filters = params.get("Filters", [])
            for f in filters:
                if f["Name"] not in ENI_FILTERS and not f["Name"].startswith("tag:"):
                    raise ApiError("InvalidParameter.FilterInvalidKey",
                                   f"Filter {f['Name']!r} is not supported; use one of "
                                   f"{', '.join(sorted(ENI_FILTERS))} or tag:KEY.")
            caller = next((f["Values"][0] for f in filters if f["Name"] in (f"tag:{NODE_TAG}", "attachment.instance-id")
                           and len(f["Values"]) == 1), None)
            # the VPC matches an ENI's current record, which holds no secondary IPs; what the describe shows late
            # (the attachment, the bound IPs) is matched on the records as shown
            late = [f for f in filters if f["Name"] in SHOWN_LATE]
            lagging = self._vpc("DescribeNetworkInterfaces", lambda: self.vpc.describe_matching(
                lambda r: _matches([f for f in filters if f["Name"] not in SHOWN_LATE], self._eni_field, r,
                                   ENI_FILTERS), caller))
            found = [r for r in lagging if _matches(late, self._eni_field, r, ENI_FILTERS)]
        return {"TotalCount": len(found), "NetworkInterfaceSet": [self._eni_shape(r)
                                                                  for r in found[offset:offset + limit]]}

    def _eni_field(self, rec: EniRecord, name: str) -> list[str]:
        meta = self.meta.get(rec.id)
        tags = {NODE_TAG: rec.node, **{t["Key"]: t.get("Value", "") for t in (meta.tags if meta else [])}}
        if name.startswith("tag:"):
            return [tags[name[4:]]] if name[4:] in tags else []
        return {"vpc-id": [self.vpc_id], "subnet-id": [rec.subnet_id], "network-interface-id": [rec.id],
                "attachment.instance-id": [rec.attached_to] if rec.attached_to else [],
                "tag-key": list(tags), "network-interface-name": [meta.name] if meta else [],
                "address-ip": [str(rec.primary_ip), *map(str, rec.ips)], "is-primary": ["false"]}[name]

    def create_network_interface(self, params: dict) -> tuple[dict, str | None]:
        if params["VpcId"] != self.vpc_id:
            raise ApiError("ResourceNotFound", f"VPC {params['VpcId']} does not exist; this VPC is {self.vpc_id}.")
        for field in ("NetworkInterfaceName", "NetworkInterfaceDescription"):
            if len(params.get(field, "")) > 60:
                raise ApiError("InvalidParameterValue.TooLong", f"{field}: at most 60 characters.")
        tags = params.get("Tags", [])
        node = next((t.get("Value", "") for t in tags if t["Key"] == NODE_TAG), None)
        if not node:
            raise ApiError("MissingParameter", f"Tags: tag the ENI {NODE_TAG}=<instance id>; the served VPC takes "
                                               "an ENI's IP quota from the instance it is created for.")
        if params.get("PrivateIpAddresses"):
            raise ApiError("UnsupportedOperation", "PrivateIpAddresses at creation are not served; create the ENI, "
                                                   "then AssignPrivateIpAddresses with the addresses.")
        count = params.get("SecondaryPrivateIpAddressCount", 0)
        if count < 0:
            raise ApiError("InvalidParameterValue.Range", "SecondaryPrivateIpAddressCount must be 0 or more.")
        meta = _Meta(params["NetworkInterfaceName"], params.get("NetworkInterfaceDescription", ""),
                     _stamp(self.now()), [t for t in tags if t["Key"] != NODE_TAG])

        def answer(rec: object) -> dict:
            self.meta[rec.id] = meta  # type: ignore[attr-defined]
            return {"NetworkInterface": self._eni_shape(rec)}  # type: ignore[arg-type]

        rec = self._vpc("CreateNetworkInterface", lambda: self.vpc.create_eni(node, params["SubnetId"]),
                        answer=answer)
        if not count:
            return answer(rec), rec.id
        try:
            ips = self._vpc("AssignPrivateIpAddresses", lambda: self.vpc.assign_private_ips(rec.id, count), rec.id,
                            lambda ips: answer(replace(rec, ips=tuple(ips))))
        except ApiError:
            with contextlib.suppress(VpcError):  # the API creates both or neither
                self.vpc.delete_eni(rec.id)
            self.meta.pop(rec.id, None)
            raise
        return answer(replace(rec, ips=tuple(ips))), rec.id

    def attach_network_interface(self, params: dict) -> tuple[dict, str | None]:
        eni_id = self._eni_id(params)
        self._vpc("AttachNetworkInterface", lambda: self.vpc.attach_eni(eni_id, params["InstanceId"]), eni_id)
        return {}, eni_id

    def detach_network_interface(self, params: dict) -> tuple[dict, str | None]:
        eni_id = self._eni_id(params)
        eni = self.vpc.enis.get(eni_id)
        if eni is not None and eni.record.attached_to not in (None, params["InstanceId"]):
            raise ApiError("UnsupportedOperation.InstanceMismatch",
                           f"ENI {eni_id} is attached to {eni.record.attached_to}, not {params['InstanceId']}.")
        self._vpc("DetachNetworkInterface", lambda: self.vpc.detach_eni(eni_id), eni_id)
        return {}, eni_id

    def delete_network_interface(self, params: dict) -> tuple[dict, str | None]:
        eni_id = self._eni_id(params)
        eni = self.vpc.enis.get(eni_id)
        kept = [ip for ip in eni.ips if ip in self.reserved] if eni and eni.record.attached_to is None else []
        if kept:  # a reservation outlives the ENI that held its address: the address stays reserved, on no ENI
            self._vpc("DeleteNetworkInterface", lambda: self.vpc.unassign_private_ips(eni_id, kept, retain=True),
                      eni_id)
        self._vpc("DeleteNetworkInterface", lambda: self.vpc.delete_eni(eni_id), eni_id)
        self.meta.pop(eni_id, None)
        return {}, eni_id

    def assign_private_ip_addresses(self, params: dict) -> tuple[dict, str | None]:
        eni_id = self._eni_id(params)
        specs = params.get("PrivateIpAddresses")
        count = params.get("SecondaryPrivateIpAddressCount")
        if specs is None and count is None:
            raise ApiError("MissingParameter", "Give PrivateIpAddresses or SecondaryPrivateIpAddressCount.")
        if specs and count:
            raise ApiError("InvalidParameter.Coexist",
                           "PrivateIpAddresses and SecondaryPrivateIpAddressCount cannot be given together.")
        if specs and any(s.get("Primary") for s in specs):
            raise ApiError("UnsupportedOperation.PrimaryIp", "An ENI's primary address cannot be assigned again.")
        wanted = [IPv4Address(s["PrivateIpAddress"]) for s in specs or []]

        def answer(ips: object) -> dict:
            return {"PrivateIpAddressSet": [_ip_shape(ip) for ip in ips]}  # type: ignore[attr-defined]

        got = self._vpc("AssignPrivateIpAddresses",
                        lambda: self.vpc.assign_private_ips(eni_id, count or 0, wanted), eni_id, answer)
        return answer(got), eni_id

    def unassign_private_ip_addresses(self, params: dict) -> tuple[dict, str | None]:
        eni_id = self._eni_id(params)
        eni = self.vpc.enis.get(eni_id)
        gone = [IPv4Address(s["PrivateIpAddress"]) for s in params["PrivateIpAddresses"]]
        if eni is not None and eni.record.primary_ip in gone:
            raise ApiError("UnsupportedOperation.PrimaryIp", f"{eni.record.primary_ip} is the primary address of "
                                                             f"{eni_id}; delete the ENI to return it.")
        # a reserved address stays reserved (retained, on no ENI); any other goes back to its subnet. One call
        # for both, so an error (an address not on the ENI, a fault) leaves every address where it was.
        reserved = [ip for ip in gone if ip in self.reserved]
        every = len(reserved) == len(gone)  # all kept: the call an in-process caller makes, `retain`
        if gone:
            self._vpc("UnassignPrivateIpAddresses",
                      lambda: self.vpc.unassign_private_ips(eni_id, gone, every, kept=() if every else reserved),
                      eni_id)
        return {}, eni_id

    # -- reserved addresses ----------------------------------------------------------------------------
    def _holder(self, ip: IPv4Address) -> str | None:
        """The ENI that has `ip` as a secondary address, if one does."""
        eni_id = self.vpc.owner.get(ip)
        return eni_id if eni_id is not None and ip in self.vpc.enis[eni_id].ips else None

    def _live(self) -> dict[IPv4Address, _Reservation]:
        """The reservations whose address is still kept (retained on no ENI, or an ENI's secondary IP); one
        whose address a caller outside the API gave back to its subnet is gone."""
        for ip in [ip for ip in self.reserved if ip not in self.vpc.retained and self._holder(ip) is None]:
            del self.reserved[ip]
        return self.reserved

    def _reservation_shape(self, r: _Reservation) -> dict:
        holder = self._holder(r.ip)
        return {"ReserveIpId": r.id, "VpcId": self.vpc_id, "SubnetId": r.subnet_id, "ReserveIpAddress": str(r.ip),
                "ResourceId": holder or "", "IpType": 0, "State": "Bind" if holder else "UnBind", "Name": r.name,
                "Description": r.description, "CreatedTime": r.created, "TagSet": r.tags}

    def _reservation_field(self, r: _Reservation, name: str) -> list[str]:
        tags = {t["Key"]: t.get("Value", "") for t in r.tags}
        if name.startswith("tag:"):
            return [tags[name[4:]]] if name[4:] in tags else []
        holder = self._holder(r.ip)
        return {"reserve-ip-id": [r.id], "vpc-id": [self.vpc_id], "subnet-id": [r.subnet_id],
                "address-ip": [str(r.ip)], "reserve-address-ip": [str(r.ip)], "ip-type": ["0"], "name": [r.name],
                "state": ["Bind" if holder else "UnBind"], "resource-id": [holder] if holder else [],
                "tag-key": list(tags)}[name]

    def _reservation_ids(self, ids: list[str]) -> list[_Reservation]:
        if len(ids) > 100:
            raise ApiError("InvalidParameterValue.Range", "ReserveIpIds: at most 100 per request.")
        bad = next((i for i in ids if not _RSVIP_ID.match(i)), None)
        if bad is not None:
            raise ApiError("InvalidParameterValue.Malformed", f"ReserveIpId {bad!r} is malformed; it looks like "
                                                              "rsvip-pvqgv9vi.")
        by_id = {r.id: r for r in self.reserved.values()}
        unknown = next((i for i in ids if i not in by_id), None)
        if unknown is not None:
            raise ApiError("InvalidParameterValue.ResourceNotFound", f"Reserved address {unknown} does not exist.")
        return [by_id[i] for i in dict.fromkeys(ids)]

    def _reservable(self, wanted: list[IPv4Address], subnet_id: str | None) -> str:
        """The subnet of addresses that may be reserved, or the API's error for the first that may not."""
        subnets = set()
        for ip in wanted:
            s = self.vpc.subnet_of(ip)
            if s is None:
                raise ApiError("InvalidParameterValue.AddressIpNotInVpc", f"{ip} is in no subnet of {self.vpc_id}.")
            if subnet_id is not None and s != subnet_id:
                raise ApiError("InvalidParameterValue",
                               f"{ip} is not in {subnet_id} ({self.vpc.subnets[subnet_id].cidr}).")
            if not self.vpc.books[s].contains(ip):
                raise ApiError("InvalidParameterValue.Reserved", f"{ip} is kept by the subnet itself (its network, "
                                                                 "gateway or broadcast address).")
            if ip in self.reserved:
                raise ApiError("InvalidParameterValue.AddressIpNotAvailable",
                               f"{ip} is reserved already ({self.reserved[ip].id}).")
            owner = self.vpc.owner.get(ip)
            if owner is not None and self._holder(ip) is None:
                raise ApiError("InvalidParameterValue.AddressIpNotAvailable",
                               f"{ip} is the primary address of {owner}; it goes with its ENI.")
            if owner is None and int(ip) in self.vpc.books[s].used:
                raise ApiError("InvalidParameterValue.AddressIpNotAvailable", f"{ip} is in use.")
            subnets.add(s)
        if len(subnets) > 1:
            raise ApiError("InvalidParameterValue", "IpAddresses must all be in one subnet.")
        return subnet_id or subnets.pop()

    def create_reserve_ip_addresses(self, params: dict) -> tuple[dict, str | None]:
        if params["VpcId"] != self.vpc_id:
            raise ApiError("ResourceNotFound", f"VPC {params['VpcId']} does not exist; this VPC is {self.vpc_id}.")
        addresses, count, subnet_id = params.get("IpAddresses"), params.get("IpAddressCount"), params.get("SubnetId")
        if addresses is not None and count is not None:
            raise ApiError("InvalidParameter.Coexist", "IpAddresses and IpAddressCount cannot be given together.")
        if not addresses and not count:
            raise ApiError("MissingParameter", "Give IpAddresses, or IpAddressCount with SubnetId.")
        if subnet_id is not None and subnet_id not in self.vpc.subnets:
            raise ApiError("InvalidParameterValue.ResourceNotFound", f"Subnet {subnet_id} does not exist.")
        for key, most in (("Name", 60), ("Description", 100)):
            if len(params.get(key, "")) > most:
                raise ApiError("InvalidParameterValue.TooLong", f"{key}: at most {most} characters.")
        if count is not None:
            if subnet_id is None:
                raise ApiError("MissingParameter", "IpAddressCount needs SubnetId: the subnet to reserve in.")
            if not 1 <= count <= 100:
                raise ApiError("InvalidParameterValue.Range", "IpAddressCount must be 1 to 100.")
            wanted: list[IPv4Address] = []
        else:
            wanted = [_address(f"IpAddresses.{i}", a) for i, a in enumerate(addresses)]
            if len(wanted) > 100:
                raise ApiError("InvalidParameterValue.Range", "IpAddresses: at most 100 per request.")
            if len(set(wanted)) < len(wanted):
                raise ApiError("InvalidParameterValue.Duplicate", "IpAddresses names an address twice.")
            subnet_id = self._reservable(wanted, subnet_id)
        free = [ip for ip in wanted if self._holder(ip) is None]  # the others are reserved in place, on their ENI
        name, description = params.get("Name", ""), params.get("Description", "")
        tags, created = params.get("Tags", []), _stamp(self.now())

        def answer(got: object) -> dict:
            made = []
            for ip in wanted or got:  # type: ignore[attr-defined]
                self._reserve_seq += 1
                r = _Reservation(f"rsvip-{self._reserve_seq:08x}", ip, subnet_id, name, description, created, tags)
                self.reserved[ip] = r
                made.append(r)
            return {"ReserveIpAddressSet": [self._reservation_shape(r) for r in made]}

        got = (self._vpc("CreateReserveIpAddresses", lambda: self.vpc.retain_free(subnet_id, count or 0, free),
                         answer=answer) if count or free else [])
        return answer(got), None

    def delete_reserve_ip_addresses(self, params: dict) -> tuple[dict, str | None]:
        if params["VpcId"] != self.vpc_id:
            raise ApiError("InvalidParameterValue.ParameterMismatch",
                           f"VpcId {params['VpcId']} is not the VPC of these reservations ({self.vpc_id}).")
        if not params["ReserveIpIds"]:
            raise ApiError("MissingParameter", "ReserveIpIds: name at least one reserved address.")
        chosen = self._reservation_ids(params["ReserveIpIds"])
        unbound = [r.ip for r in chosen if self._holder(r.ip) is None]  # freed; a bound one stays on its ENI
        if unbound:
            self._vpc("DeleteReserveIpAddresses", lambda: self.vpc.release_retained(unbound))
        for r in chosen:
            del self.reserved[r.ip]
        return {}, None

    def describe_reserve_ip_addresses(self, params: dict) -> dict:
        if "ReserveIpIds" in params and "Filters" in params:
            raise ApiError("InvalidParameter.Coexist", "ReserveIpIds and Filters cannot be given together.")
        offset, limit = _page(params, _int)
        if "ReserveIpIds" in params:
            found = self._reservation_ids(params["ReserveIpIds"])
        else:
            found = [r for r in self.reserved.values()
                     if _matches(params.get("Filters", []), self._reservation_field, r, RESERVE_FILTERS)]
        return {"TotalCount": len(found),
                "ReserveIpAddressSet": [self._reservation_shape(r) for r in found[offset:offset + limit]]}

    def describe_vpc_task_result(self, params: dict) -> dict:
        task = self.tasks.get(params["TaskId"])
        if task is None:
            raise ApiError("ResourceNotFound", f"Task {params['TaskId']} does not exist.")
        status = "RUNNING" if self.now() < task.done_at else "SUCCESS"
        result = [{"ResourceId": task.resource, "Status": status}] if task.resource else []
        return {"Status": status, "Output": "", "Result": result}


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ip_shape(ip: IPv4Address, primary: bool = False) -> dict:
    return {"PrivateIpAddress": str(ip), "Primary": primary, "PublicIpAddress": "", "AddressId": "",
            "Description": "", "IsWanIpBlocked": False, "State": "AVAILABLE", "QosLevel": "DEFAULT"}


def _address(name: str, v: str) -> IPv4Address:
    try:
        return IPv4Address(v)
    except AddressValueError:
        raise ApiError("InvalidParameterValue.Malformed", f"`{name}` {v!r} is not an IPv4 address.") from None


def _page(params: dict, kind: Callable) -> tuple[int, int]:
    offset = kind("Offset", params["Offset"]) if "Offset" in params else 0
    limit = kind("Limit", params["Limit"]) if "Limit" in params else 20
    if not 1 <= limit <= 100:
        raise ApiError("InvalidParameterValue.Range", f"Limit {limit} is out of range; give 1 to 100.")
    if offset < 0:
        raise ApiError("InvalidParameterValue.Range", f"Offset {offset} is out of range; give 0 or more.")
    return offset, limit


def _matches(filters: list[dict], field: Callable[[object, str], list[str]], item: object, known: set[str]) -> bool:
    """Filters AND together, the values of one filter OR."""
    for f in filters:
        if f["Name"] not in known and not f["Name"].startswith("tag:"):
            raise ApiError("InvalidParameter.FilterInvalidKey",
                           f"Filter {f['Name']!r} is not supported; use one of {', '.join(sorted(known))}.")
        values = set(f["Values"]) | {v.lower() for v in f["Values"] if v in ("TRUE", "FALSE")}  # booleans
        if not set(field(item, f["Name"])) & values:
            return False
    return True


SUBNET_FILTERS = {"subnet-id", "vpc-id", "cidr-block", "subnet-name"}
ENI_FILTERS = {"vpc-id", "subnet-id", "network-interface-id", "attachment.instance-id", "tag-key",
               "network-interface-name", "address-ip", "is-primary"}
SHOWN_LATE = {"attachment.instance-id", "address-ip"}  # ENI filters on what the lagging describe shows
RESERVE_FILTERS = {"reserve-ip-id", "vpc-id", "subnet-id", "address-ip", "reserve-address-ip", "ip-type", "name",
                   "state", "resource-id", "tag-key"}
_TOKEN = P(_client_token)
_ENI = P(_str, True)

ACTIONS: dict[str, tuple[Callable, dict[str, P], bool]] = {
    "DescribeSubnets": (VpcService.describe_subnets, {
        "SubnetIds": P(_strs), "Filters": P(_filters), "Offset": P(_digits), "Limit": P(_digits),
        "NextToken": P(_unserved), "MaxResults": P(_unserved)}, False),
    "DescribeNetworkInterfaces": (VpcService.describe_network_interfaces, {
        "NetworkInterfaceIds": P(_strs), "Filters": P(_filters), "Offset": P(_int), "Limit": P(_int)}, False),
    "CreateNetworkInterface": (VpcService.create_network_interface, {
        "VpcId": P(_str, True), "NetworkInterfaceName": P(_str, True), "SubnetId": P(_str, True),
        "NetworkInterfaceDescription": P(_str), "SecondaryPrivateIpAddressCount": P(_int), "QosLevel": P(_str),
        "SecurityGroupIds": P(_strs), "PrivateIpAddresses": P(_ip_specs), "Tags": P(_tags),
        "TrunkingFlag": P(_str), "IsRdma": P(_bool), "TerminationProtection": P(_str),
        "TrafficProtection": P(_str), "ClientToken": _TOKEN}, True),
    "AttachNetworkInterface": (VpcService.attach_network_interface, {
        "NetworkInterfaceId": _ENI, "InstanceId": P(_str, True), "AttachType": P(_int), "ClientToken": _TOKEN},
        True),
    "DetachNetworkInterface": (VpcService.detach_network_interface, {
        "NetworkInterfaceId": _ENI, "InstanceId": P(_str, True), "ClientToken": _TOKEN}, True),
    "DeleteNetworkInterface": (VpcService.delete_network_interface, {"NetworkInterfaceId": _ENI}, True),
    "AssignPrivateIpAddresses": (VpcService.assign_private_ip_addresses, {
        "NetworkInterfaceId": _ENI, "PrivateIpAddresses": P(_ip_specs), "SecondaryPrivateIpAddressCount": P(_int),
        "QosLevel": P(_str), "ClientToken": _TOKEN}, True),
    "UnassignPrivateIpAddresses": (VpcService.unassign_private_ip_addresses, {
        "NetworkInterfaceId": _ENI, "PrivateIpAddresses": P(_ip_specs, True), "InstanceId": P(_str)}, True),
    "DescribeVpcTaskResult": (VpcService.describe_vpc_task_result, {"TaskId": P(_str, True)}, False),
    "CreateReserveIpAddresses": (VpcService.create_reserve_ip_addresses, {
        "VpcId": P(_str, True), "IpAddresses": P(_strs), "IpAddressCount": P(_int), "SubnetId": P(_str),
        "Name": P(_str), "Description": P(_str), "Tags": P(_tags), "ClientToken": _TOKEN}, True),
    "DescribeReserveIpAddresses": (VpcService.describe_reserve_ip_addresses, {
        "ReserveIpIds": P(_strs), "Filters": P(_filters), "Offset": P(_int), "Limit": P(_int)}, False),
    "DeleteReserveIpAddresses": (VpcService.delete_reserve_ip_addresses, {
        "VpcId": P(_str, True), "ReserveIpIds": P(_strs, True)}, True),
}
