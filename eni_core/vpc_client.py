"""A `VpcApi` that talks to a cloud endpoint over the JSON-lines RPC (the testbed's VPC server)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address

from eni_core.ports import ERRORS, EniRecord, TransientError, record_from_json
from eni_core.rpc import VPC_ERROR, RemoteError, RpcClient

__all__ = ["VpcClient"]


class VpcClient:
    def __init__(self, socket_path: str) -> None:
        self.rpc = RpcClient(socket_path)

    def _call(self, method: str, **params):
        try:
            return self.rpc.call(method, **params)
        except RemoteError as err:
            kind = ERRORS.get(err.type, TransientError) if err.code == VPC_ERROR else TransientError
            raise kind(err.message) from None
        except OSError as err:
            raise TransientError(f"cloud endpoint unreachable: {err}") from None

    def describe_subnets(self, subnet_ids: Sequence[str]) -> dict[str, int]:
        return self._call("describe_subnets", subnet_ids=list(subnet_ids))

    def create_eni(self, node: str, subnet_id: str) -> EniRecord:
        return record_from_json(self._call("create_eni", node=node, subnet_id=subnet_id))

    def attach_eni(self, eni_id: str, node: str) -> EniRecord:
        return record_from_json(self._call("attach_eni", eni_id=eni_id, node=node))

    def detach_eni(self, eni_id: str) -> None:
        self._call("detach_eni", eni_id=eni_id)

    def delete_eni(self, eni_id: str) -> None:
        self._call("delete_eni", eni_id=eni_id)

    def assign_private_ips(self, eni_id: str, count: int = 0, ips: Iterable[IPv4Address] = ()) -> list[IPv4Address]:
        got = self._call("assign_private_ips", eni_id=eni_id, count=count, ips=[str(ip) for ip in ips])
        return [IPv4Address(ip) for ip in got]

    def unassign_private_ips(self, eni_id: str, ips: Iterable[IPv4Address], retain: bool = False) -> None:
        self._call("unassign_private_ips", eni_id=eni_id, ips=[str(ip) for ip in ips], retain=retain)

    def release_retained(self, ips: Iterable[IPv4Address]) -> None:
        self._call("release_retained", ips=[str(ip) for ip in ips])

    def describe_enis(self, node: str) -> list[EniRecord]:
        return [record_from_json(d) for d in self._call("describe_enis", node=node)]
