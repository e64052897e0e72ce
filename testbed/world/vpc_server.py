"""Serves a `SimVpc` on a unix socket, so node agents in other processes share one cloud.

Lock order, wherever node agents and a served cloud meet (the one place it is written down):

1. a node agent's lock (`NodeAgent.lock`), held while its ipamd calls the cloud;
2. the cloud's lock (the `lock` given to `serve_vpc`, or to the Tencent API's `VpcService`), held while
   one VPC call runs.

A lock is only ever taken after the ones above it. So whoever holds the cloud's lock never waits on an
agent (no RPC to an agent, no wait for an agent's answer): an agent busy re-syncing holds its own lock
and waits for the cloud, and a cloud-lock holder waiting for that agent would wait for ever.
"""
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
    """Start serving; calls are serialised with `lock` (share it with in-process users of `vpc`; see the
    lock order above)."""
    lock = lock or threading.Lock()

    def handle(method: str, params: dict[str, Any]) -> Any:
        if method not in _METHODS:
            raise ValueError(f"unknown VPC method {method!r}")
        if "ips" in params:
            params["ips"] = [IPv4Address(ip) for ip in params["ips"]]
        with lock:
            return _encode(getattr(vpc, method)(**params))

    return RpcServer(path, handle).start()
