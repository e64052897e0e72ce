"""A generated churn of pods: the world and the workload `enilab bench sim` and `enilab tune` replay."""
from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from ipaddress import IPv4Network

from eni_core.model import PoolConfig, Subnet
from testbed.world.cluster import Cluster
from testbed.world.spec import ClusterSpec, NodeSpec

__all__ = ["MEAN_LIFE_S", "Arrival", "churn_workload", "churn_world", "replay_churn"]

MEAN_LIFE_S = 7200.0
Arrival = tuple[float, int, str, str, str]  # (time, order: creations first, "create" or "delete", pod, node)


def node_name(n: int) -> str:
    """The name of the world's node number `n`, one string for the world and its workload alike (interned):
    a lookup by it finds the node's own key by identity, without comparing characters."""
    return sys.intern(f"node-{n}")


def churn_world(nodes: int, seed: int) -> ClusterSpec:
    """`nodes` nodes of 4 ENIs x 10 IPs, each in two of four /16 subnets, the pool at its defaults."""
    subnets = tuple(Subnet(f"subnet-{i}", IPv4Network(f"10.{i}.0.0/16")) for i in range(4))
    specs = tuple(NodeSpec(node_name(n), (subnets[n % 4].id, subnets[(n + 1) % 4].id), 4, 10) for n in range(nodes))
    return ClusterSpec(subnets=subnets, nodes=specs, pool=PoolConfig(), seed=seed)


def churn_workload(nodes: int, pods: int, hours: float, seed: int) -> list[Arrival]:
    """`pods` creations at uniform times on random nodes, each deleted after an exponential life (2 h on
    average), in time order.

    The events are laid out in memory in the order they are replayed (each tuple made after the sort),
    as events that arrive one after another would be: a replay then reads its input in sequence rather
    than all over a list as large as the workload, a cost that would grow with the workload's size."""
    rng = random.Random(seed)
    span = hours * 3600
    names = [node_name(n) for n in range(nodes)]
    events = []
    for i in range(pods):
        born = rng.uniform(0, span * 0.9)
        died = min(span, born + rng.expovariate(1 / MEAN_LIFE_S))
        node = names[rng.randrange(nodes)]
        pod = f"pod-{i}"
        events.append((born, 0, "create", pod, node))
        events.append((died, 1, "delete", pod, node))
    events.sort()
    return [(t, order, op, pod, node) for t, order, op, pod, node in events]


def replay_churn(cluster: Cluster, events: Sequence[Arrival]) -> int:
    """Create and delete the pods at their times; the number of events replayed."""
    for t, _, op, pod, node in events:
        cluster.run_until(t)
        if op == "create":
            cluster.create_pod(pod, node)
        elif pod in cluster.pods:
            cluster.delete_pod(pod)
    return len(events)
