"""The `sim` backend: no kernel, no root. Interfaces and link indices are simulated."""
from __future__ import annotations

from ipaddress import IPv4Address

from eni_core.datastore import Allocation
from eni_core.model import Eni
from testbed.errors import UsageError
from testbed.world.backends import BackendHost, eni_ifindex

__all__ = ["SimBackend"]


class SimBackend:
    """Links exist only as the link index an ENI's interface would have: the cluster keeps it (each node's
    `ifindex`), and this backend keeps nothing per node that a pod event would have to read."""

    name = "sim"
    run = None

    def __init__(self) -> None:
        self.hosts: dict[str, tuple[str, IPv4Address]] = {}  # VPC hosts need namespaces: none here
        self.pods: dict[str, tuple[str, str]] = {}  # and so does wiring a pod

    def bind(self, host: BackendHost) -> None:
        return None

    def sync(self, node: str) -> None:
        return None

    def add_node(self, node: str) -> None:
        return None

    def remove_node(self, node: str) -> None:
        return None

    def eni_attached(self, node: str, eni: Eni) -> int:
        return eni_ifindex(eni.device_index)

    def eni_detached(self, node: str, eni: Eni) -> None:
        return None

    def pod_up(self, node: str, pod: str, alloc: Allocation) -> dict:
        return {}

    def pod_down(self, node: str, pod: str) -> None:
        return None

    def set_sysctl(self, node: str, key: str, value: int) -> None:
        raise UsageError(f"setting {key} on {node} needs a kernel: run the cluster on the netns backend (root)")

    def node_state(self, node: str) -> dict:
        return {}

    def close(self) -> None:
        return None
