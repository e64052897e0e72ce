"""The cloud boundary of eni_core: the VPC API as a Protocol, its records and its errors. (The kernel
boundary is `eni_core.ops.Kernel`.)"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol

from eni_core.rpc import VPC_ERROR

__all__ = [
    "ERRORS",
    "EniRecord",
    "InsufficientAddresses",
    "NotFound",
    "QuotaExceeded",
    "RequestTimeout",
    "Throttled",
    "TransientError",
    "VpcApi",
    "VpcError",
    "record_from_json",
    "record_to_json",
]


class VpcError(Exception):
    """A failed VPC API call. `retryable` errors may succeed when tried again later; after an
    `ambiguous` one the caller cannot know whether the operation happened."""

    code = "InternalError"
    retryable = False
    ambiguous = False
    rpc_code = VPC_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class QuotaExceeded(VpcError):
    code = "LimitExceeded"


class InsufficientAddresses(VpcError):
    code = "InsufficientAddresses"


class NotFound(VpcError):
    code = "ResourceNotFound"


class InvalidParameter(VpcError):
    code = "InvalidParameter"


class Throttled(VpcError):
    code = "RequestLimitExceeded"
    retryable = True


class TransientError(VpcError):
    code = "InternalError"
    retryable = True


class RequestTimeout(VpcError):
    """No answer in time: the operation may or may not have happened (an ambiguous outcome)."""

    code = "RequestTimeout"
    retryable = True
    ambiguous = True
    outcome: object = None  # what did happen, known to a simulated cloud (a server replays it for a ClientToken)


ERRORS: dict[str, type[VpcError]] = {
    cls.__name__: cls
    for cls in (VpcError, QuotaExceeded, InsufficientAddresses, NotFound, InvalidParameter, Throttled,
                TransientError, RequestTimeout)
}


@dataclass(frozen=True, slots=True)
class EniRecord:
    """An ENI as the VPC describes it. `node` is the node it was created for (its tag); `attached_to`
    the node it is attached to now, with `device_index`; `ips` its secondary IPs. Slots: the simulated
    VPC reads the record of an ENI on every call about it, and a record with a separate attribute table
    is one more cache line to fetch."""

    id: str
    subnet_id: str
    mac: str
    primary_ip: IPv4Address
    node: str
    attached_to: str | None = None
    device_index: int | None = None
    ips: tuple[IPv4Address, ...] = ()


def record_to_json(r: EniRecord) -> dict:
    return {"id": r.id, "subnet_id": r.subnet_id, "mac": r.mac, "primary_ip": str(r.primary_ip), "node": r.node,
            "attached_to": r.attached_to, "device_index": r.device_index, "ips": [str(ip) for ip in r.ips]}


def record_from_json(d: dict) -> EniRecord:
    return EniRecord(d["id"], d["subnet_id"], d["mac"], IPv4Address(d["primary_ip"]), d["node"], d["attached_to"],
                     d["device_index"], tuple(IPv4Address(ip) for ip in d["ips"]))


class VpcApi(Protocol):
    """The cloud's ENI API, as a node's ipamd uses it. Every method may raise a `VpcError`."""

    def describe_subnets(self, subnet_ids: Sequence[str]) -> Mapping[str, int]:
        """Free addresses per subnet."""

    def create_eni(self, node: str, subnet_id: str) -> EniRecord:
        """Create an ENI tagged with `node`; its primary address is taken from the subnet."""

    def attach_eni(self, eni_id: str, node: str) -> EniRecord:
        """Attach to the node at the lowest free device index (eth1, eth2, ...)."""

    def detach_eni(self, eni_id: str) -> None: ...

    def delete_eni(self, eni_id: str) -> None: ...

    def assign_private_ips(
        self, eni_id: str, count: int = 0, ips: Iterable[IPv4Address] = ()
    ) -> list[IPv4Address]:
        """Bind `count` new secondary IPs chosen by the VPC, or exactly `ips`."""

    def unassign_private_ips(self, eni_id: str, ips: Iterable[IPv4Address], retain: bool = False) -> None:
        """Unbind; with `retain` the addresses stay taken in the subnet (static IPs) for a later bind."""

    def release_retained(self, ips: Iterable[IPv4Address]) -> None:
        """Return retained addresses to their subnets."""

    def describe_enis(self, node: str) -> list[EniRecord]:
        """ENIs tagged with `node` or attached to it."""
