"""The `sim` backend: no kernel, no root. Interfaces and link indices are simulated."""
from __future__ import annotations

from eni_core.datastore import Allocation
from eni_core.model import Eni
from testbed.world.backends import eni_ifindex

__all__ = ["SimBackend"]


class SimBackend:
    name = "sim"

    def __init__(self) -> None:
        self.links: dict[str, dict[str, int]] = {}  # node -> ENI id -> link index

    def bind(self, cluster) -> None:
        return None

    def sync(self, node: str) -> None:
        return None

    def add_node(self, node: str) -> None:
        self.links[node] = {}

    def remove_node(self, node: str) -> None:
        self.links.pop(node, None)

    def eni_attached(self, node: str, eni: Eni) -> int:
        index = eni_ifindex(eni.device_index)
        self.links[node][eni.id] = index
        return index

    def eni_detached(self, node: str, eni: Eni) -> None:
        self.links[node].pop(eni.id, None)

    def pod_up(self, node: str, pod: str, alloc: Allocation) -> dict:
        return {}

    def pod_down(self, node: str, pod: str) -> None:
        return None

    def node_state(self, node: str) -> dict:
        return {}

    def close(self) -> None:
        return None
