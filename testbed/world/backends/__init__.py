"""Data-plane backends: `sim` (no kernel; the routing plan is computed and kept) and `netns` (real
namespaces). The cluster calls the same hooks on both; the same eni_core code runs under both."""
from __future__ import annotations

from typing import Protocol

from eni_core.datastore import Allocation
from eni_core.model import Eni

__all__ = ["Backend", "eni_ifindex"]


def eni_ifindex(device_index: int) -> int:
    """The link index the testbed gives a node's ENI: eth1 is 3 (table 2003, as in the seed), eth2 4...

    >>> [eni_ifindex(device) for device in (1, 2)]
    [3, 4]
    """
    return 2 + device_index


class Backend(Protocol):
    name: str

    def bind(self, cluster) -> None:
        """Called once the cluster and its VPC exist."""

    def sync(self, node: str) -> object:
        """Run the node's routing agent (plan, observe, repair)."""

    def add_node(self, node: str) -> None: ...

    def remove_node(self, node: str) -> None: ...

    def eni_attached(self, node: str, eni: Eni) -> int:
        """Make the ENI's interface appear on the node; return its link index."""

    def eni_detached(self, node: str, eni: Eni) -> None: ...

    def pod_up(self, node: str, pod: str, alloc: Allocation) -> dict:
        """Wire a pod that has an IP; return what the state should show of it (netns, veth)."""

    def pod_down(self, node: str, pod: str) -> None: ...

    def node_state(self, node: str) -> dict:
        """Extra fields of the node in STATE (netns, routing)."""

    def close(self) -> None: ...
