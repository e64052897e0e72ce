"""Data-plane backends: `sim` (no kernel; the routing plan is computed and kept) and `netns` (real
namespaces). The cluster calls the same hooks on both; the same eni_core code runs under both.

`Backend` is everything a caller may use without knowing which backend it has; what only real packets
can do (probes, captures, the fabric) is reached through `packet_backend`, which says so when the
backend is the simulated one."""
from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Protocol

from eni_core.datastore import Allocation
from eni_core.ipamd import EniNode
from eni_core.model import Eni
from testbed.errors import UsageError

if TYPE_CHECKING:
    from testbed.world.backends.netns import NetnsBackend
    from testbed.world.runs import Run
    from testbed.world.spec import ClusterSpec
    from testbed.world.vpc import SimVpc

__all__ = ["Backend", "BackendHost", "LocalNode", "eni_ifindex", "packet_backend"]


def eni_ifindex(device_index: int) -> int:
    """The link index the testbed gives a node's ENI: eth1 is 3 (table 2003, as in the seed), eth2 4...

    >>> [eni_ifindex(device) for device in (1, 2)]
    [3, 4]
    """
    return 2 + device_index


class LocalNode(Protocol):
    """A node whose IPAM runs in this process: its ipamd, and the link index of each of its ENIs."""

    ipamd: EniNode
    ifindex: dict[str, int]


class BackendHost(Protocol):
    """What a backend is bound to: the cluster's spec and its VPC, and each node when its IPAM runs in
    this process. A `Cluster` is one; so is chaos's `ProcessCluster`, whose node agents are processes
    that do their own routing (`local_node` is None there)."""

    spec: ClusterSpec
    vpc: SimVpc

    def local_node(self, node: str) -> LocalNode | None: ...


class Backend(Protocol):
    name: str
    run: Run | None  # the namespaces' run (None: no kernel state to keep or remove)
    hosts: Mapping[str, tuple[str, IPv4Address]]  # VPC host -> (netns name, IP)
    pods: Mapping[str, tuple[str, str]]  # a wired pod -> (node, netns name)

    def bind(self, host: BackendHost) -> None:
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

    def set_sysctl(self, node: str, key: str, value: int) -> None:
        """Set a sysctl in the node's namespace by hand; the routing agent leaves it be from then on."""

    def node_state(self, node: str) -> dict:
        """Extra fields of the node in STATE (netns, routing)."""

    def close(self) -> None: ...


def packet_backend(backend: Backend, what: str) -> NetnsBackend:
    """The backend as the real-namespace one, for `what` needs real packets; a UsageError that says so
    on the simulated backend."""
    from testbed.world.backends.netns import NetnsBackend

    if not isinstance(backend, NetnsBackend):
        raise UsageError(f"{what} needs real packets: run the cluster on the netns backend (root)")
    return backend
