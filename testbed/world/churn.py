"""A generated churn of pods: the world and the workload `enilab bench sim` and `enilab tune` replay."""
from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from ipaddress import IPv4Network

from eni_core.model import PoolConfig, Subnet
from eni_core.names import shorten
from testbed.errors import UsageError
from testbed.world.cluster import Cluster
from testbed.world.spec import ClusterSpec, NodeSpec

__all__ = ["MAX_HOURS", "MEAN_LIFE_S", "Arrival", "check_churn", "churn_workload", "churn_world", "replay_churn"]

MEAN_LIFE_S = 7200.0
MAX_HOURS = 24 * 14  # two weeks of simulated time
Arrival = tuple[float, int, str, str, str]  # (time, order: creations first, "create" or "delete", pod, node)


def node_name(n: int) -> str:
    """The name of the world's node number `n`, one string for the world and its workload alike (interned):
    a lookup by it finds the node's own key by identity, without comparing characters."""
    return sys.intern(f"node-{n}")


NODES_PER_SUBNET = 2_500  # each node takes two subnets: 5,000 nodes draw on each /16


def churn_world(nodes: int, seed: int) -> ClusterSpec:
    """`nodes` nodes of 4 ENIs x 10 IPs, each in two of the world's /16 subnets, the pool at its defaults.

    Four subnets up to 10,000 nodes, then one more for every 2,500 nodes, so that a subnet serves at most
    5,000 nodes at any size: a node holds about 11 addresses (its pods, 5 pre-bound, its ENIs' own), 55,000
    of a /16's 65,533. With four subnets at any size, 50,000 nodes needed 300,000 addresses for their
    pre-bound IPs alone, and the bench measured 24 hours of nodes polling for addresses.

    >>> [len(churn_world(n, 0).subnets) for n in (1, 10_000, 10_001, 50_000)]
    [4, 4, 5, 20]
    """
    count = max(4, -(-nodes // NODES_PER_SUBNET))
    subnets = tuple(Subnet(f"subnet-{i}", IPv4Network(f"10.{i}.0.0/16")) for i in range(count))
    specs = tuple(NodeSpec(node_name(n), (subnets[n % count].id, subnets[(n + 1) % count].id), 4, 10)
                  for n in range(nodes))
    return ClusterSpec(subnets=subnets, nodes=specs, pool=PoolConfig(), seed=seed)


def check_churn(nodes: int, pods: int | None, hours: float, *, max_nodes: int, max_pods: int,
                min_pods: int = 0) -> None:
    """UsageError naming the first option, as the command line spells it, that no churn can be made of:
    `nodes` nodes (1 to `max_nodes`), a span of `hours` (above 0, at most `MAX_HOURS`; NaN is neither) and
    `pods` creations (`min_pods` to `max_pods`; None: not given). The limits keep a command's time and
    memory bounded.

    >>> check_churn(10, 100, float("nan"), max_nodes=100, max_pods=1000)
    Traceback (most recent call last):
    testbed.errors.UsageError: --hours nan: give a span above 0 and at most two weeks (336)
    """
    if not 1 <= nodes <= max_nodes:
        raise UsageError(f"--nodes {shorten(nodes)}: give 1 to {max_nodes:,} nodes")
    if not 0 < hours <= MAX_HOURS:
        raise UsageError(f"--hours {hours:g}: give a span above 0 and at most two weeks ({MAX_HOURS})")
    if pods is not None and not min_pods <= pods <= max_pods:
        raise UsageError(f"--pods {shorten(pods)}: give {min_pods:,} to {max_pods:,} pods")


def churn_workload(nodes: int, pods: int, hours: float, seed: int) -> list[Arrival]:
    """`pods` creations at uniform times on random nodes, each deleted after an exponential life (2 h on
    average), in time order.

    The events are laid out in memory in the order they are replayed, as events that arrive one after
    another would be: each tuple, its time and its pod's name are made after the sort, a pod's name
    when its creation comes. A replay then reads its input in sequence rather than all over a workload
    that grows with the cluster (pods are numbered before they are sorted by time, so names and times
    made in that order would lie at random places for the replay: a cache miss per event at 10,000
    nodes)."""
    rng = random.Random(seed)
    span = hours * 3600
    names = [node_name(n) for n in range(nodes)]
    order = []
    for i in range(pods):
        born = rng.uniform(0, span * 0.9)
        died = min(span, born + rng.expovariate(1 / MEAN_LIFE_S))
        node = names[rng.randrange(nodes)]
        order.append((born, 0, i, node))
        order.append((died, 1, i, node))
    order.sort()
    pod_names: dict[int, str] = {}
    events = []
    for t, delete, i, node in order:
        if delete:
            pod = pod_names.pop(i)
        else:
            pod_names[i] = pod = f"pod-{i}"
        events.append((t * 1.0, delete, "delete" if delete else "create", pod, node))  # t * 1.0: a float of its own
    return events


def replay_churn(cluster: Cluster, events: Sequence[Arrival]) -> int:
    """Create and delete the pods at their times; the number of events replayed."""
    for t, _, op, pod, node in events:
        cluster.run_until(t)
        if op == "create":
            cluster.create_pod(pod, node)
        elif pod in cluster.pods:
            cluster.delete_pod(pod)
    return len(events)
