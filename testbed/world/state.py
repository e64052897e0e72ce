"""The cluster's STATE as the JSON contract shows it (docs/json-contract.md, docs/schema/state.schema.json)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from eni_core.model import eni_table

if TYPE_CHECKING:
    from testbed.world.cluster import Cluster
    from testbed.world.scheduler import Node

__all__ = ["cluster_state", "state_items"]


def cluster_state(cluster: Cluster) -> dict:
    """Nodes, subnets, pods (in creation order) and claims, as plain JSON values."""
    nodes = {name: _node_state(cluster, node) for name, node in cluster.nodes.items()}
    subnets = {s.id: {"cidr": str(s.cidr), "available": cluster.vpc.available(s.id)} for s in cluster.spec.subnets}
    pods = {pod.name: {"node": pod.node, "phase": pod.phase.value, "ip": str(pod.ip) if pod.ip else None,
                       "eni": pod.eni_id, **pod.extra}
            for pod in sorted(cluster.pods.values(), key=lambda p: p.seq)}
    claims = cluster.static.view() if cluster.static else {}
    for claim in claims.values():
        expires = claim["expires_at"]
        if expires is not None and float(expires).is_integer():
            claim["expires_at"] = int(expires)
    return {"nodes": nodes, "subnets": subnets, "pods": pods, "claims": claims}


def state_items(cluster: Cluster) -> int:
    """How many items `cluster_state` would list (nodes, ENIs, bound IPs, pods, claims), counted without
    making it: what a state costs, in time and in the timeline's size."""
    claims = len(cluster.static.claims) if cluster.static else 0
    return (len(cluster.nodes) + len(cluster.pods) + claims
            + sum(len(node.ipamd.enis) + node.ipamd.bound for node in cluster.nodes.values()))


def _node_state(cluster: Cluster, node: Node) -> dict:
    ipamd = node.ipamd
    enis = []
    for eni in ipamd.enis:
        index = node.ifindex.get(eni.id)
        enis.append({
            "id": eni.id, "subnet": eni.subnet_id, "ifname": f"eth{eni.device_index}",
            "ifindex": index, "mac": eni.mac, "table": eni_table(index) if index else None,
            "ips": [str(ip) for ip in sorted(eni.ips)],
            "allocated": [str(ip) for ip in sorted(ip for ip, p in eni.ips.items() if p)],
        })
    return {
        "pods": node.running, "pending": len(node.pending), "bound": ipamd.bound,
        "allocatable": ipamd.allocatable, "capacity": ipamd.capacity, "enis": enis,
        "conditions": [{"type": "IPPoolShortfall", "message": ipamd.shortfall}] if ipamd.shortfall else [],
        **cluster.backend.node_state(node.name),
    }
