"""Serves a `SimVpc` on a unix socket, so node agents in other processes share one cloud."""
from __future__ import annotations

import threading
from ipaddress import IPv4Address
from typing import Any

from eni_core.ports import EniRecord, record_to_json
from eni_core.rpc import RpcServer
from testbed.world.vpc import SimVpc

__all__ = ["serve_vpc"]

_METHODS = {"describe_subnets", "create_eni", "attach_eni", "detach_eni", "delete_eni", "assign_private_ips",
            "unassign_private_ips", "describe_enis", "release_retained"}


def _encode(value: Any) -> Any:
    if isinstance(value, EniRecord):
        return record_to_json(value)
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, IPv4Address):
        return str(value)
    return value


def serve_vpc(vpc: SimVpc, path: str, lock: threading.Lock | None = None) -> RpcServer:
    """Start serving; calls are serialised with `lock` (share it with in-process users of `vpc`)."""
    lock = lock or threading.Lock()

    def handle(method: str, params: dict[str, Any]) -> Any:
        if method not in _METHODS:
            raise ValueError(f"unknown VPC method {method!r}")
        if "ips" in params:
            params["ips"] = [IPv4Address(ip) for ip in params["ips"]]
        with lock:
            return _encode(getattr(vpc, method)(**params))

    return RpcServer(path, handle).start()
