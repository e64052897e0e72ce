"""Static IPs through the SDK in a storm: static pods of two StatefulSets come and go on random nodes while
the cloud throttles, fails, answers late and loses answers after doing the work (timeouts). Once it heals,
the audit finds nothing, every claim kept on no ENI is exactly one `UnBind` reservation, no other address is
retained, and no address was ever on two ENIs or handed to another pod. Figures printed (`pytest -s`)."""
from __future__ import annotations

import os
import random
import time
from ipaddress import IPv4Network

from eni_core.model import Subnet
from testbed.observe.audit import audit_cluster
from testbed.world.cluster import Cluster
from testbed.world.spec import ClusterSpec, NodeSpec
from testbed.world.tencent_api import TencentCloud
from testbed.world.vpc import FaultConfig

STORM = FaultConfig(throttle=0.2, transient=0.1, insufficient_addresses=0.05, timeout=0.1, consistency_delay=2)
STEPS = int(os.environ.get("ENILAB_STATIC_STORM_STEPS", "150"))


def faults_so_far(cluster: Cluster) -> int:
    return sum(1 for e in cluster.events.items if e.get("result") not in (None, "ok"))


def test_static_ips_through_the_sdk_survive_a_storm_and_settle_exactly():
    rng = random.Random(11)
    spec = ClusterSpec(mode="static-ip", subnets=(Subnet("subnet-a", IPv4Network("10.0.1.0/26")),),
                       nodes=tuple(NodeSpec(f"node-{i}", ("subnet-a",), 2, 4) for i in (1, 2, 3)), seed=11,
                       faults=STORM)
    cloud = TencentCloud()
    cluster = Cluster(spec, node_vpc=cloud)
    names = [f"default/{app}-{i}" for app in ("web", "db") for i in range(4)]
    first_ip: dict[str, str] = {}  # a static pod's address, the first time it ran: it must never change
    counts = {"created": 0, "deleted": 0, "moved": 0}  # moved: ran with its first address on another node
    first_node: dict[str, str] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        for _ in range(STEPS):
            name = rng.choice(names)
            if name in cluster.pods:
                cluster.delete_pod(name)
                counts["deleted"] += 1
            else:
                node = rng.choice(list(cluster.nodes))
                pod = cluster.create_pod(name, node, static=True, owner=f"statefulset/default/{name[8:-2]}")
                counts["created"] += 1
                if pod.ip is not None:
                    assert first_ip.setdefault(name, str(pod.ip)) == str(pod.ip), name
                    counts["moved"] += first_node.setdefault(name, node) != node
            cluster.advance(rng.choice([0, 1, 5, 30]))
            bound = [ip for eni in cluster.vpc.enis.values() for ip in eni.ips]
            assert len(bound) == len(set(bound))  # never an address on two ENIs
        assert counts["moved"] >= 10 and faults_so_far(cluster) >= 100  # the storm did blow, claims did move
        storm_wall, storm_cpu = time.perf_counter() - wall, time.process_time() - cpu
        faults = faults_so_far(cluster)
        cluster.vpc.faults = FaultConfig()  # the cloud heals; the nodes re-sync and the Pending pods start
        cluster.advance(300)
        for pod in cluster.pods.values():
            if pod.ip is not None:
                assert first_ip.setdefault(pod.name, str(pod.ip)) == str(pod.ip), pod.name
        report = audit_cluster(cluster)
        assert report["ok"], report
        service = cloud.server.service
        kept = {c.ip for c in cluster.static.claims.values() if c.node is None}
        assert cluster.vpc.retained == kept
        assert {ip for ip in service.reserved if ip in cluster.vpc.retained} == kept
        on_enis = {c.ip for c in cluster.static.claims.values() if c.node is not None}
        assert {ip for ip in service.reserved if ip not in cluster.vpc.retained} <= on_enis  # rebound claims
        for workload in ("web", "db"):  # reclaim by cascade: every kept address goes back to the subnet
            for name in [n for n in cluster.pods if n.startswith(f"default/{workload}-")]:
                cluster.delete_pod(name)
            cluster.delete_workload(f"statefulset/default/{workload}")
        assert cluster.vpc.retained == set()
        assert not [ip for ip in service.reserved if ip in cluster.vpc.retained or ip not in cluster.vpc.owner]
    finally:
        cloud.close()
    print(f"\nstatic IPs through the SDK in a storm, {STEPS} steps on 3 nodes: {counts['created']} creations "
          f"({counts['moved']} on another node than the name's first, with its first address), "
          f"{counts['deleted']} deletions, {faults} failed "
          f"VPC calls; {cloud.calls} HTTP calls, {storm_wall:.2f} s wall, {storm_cpu:.2f} s CPU "
          f"({storm_wall * 1000 / cloud.calls:.2f} ms, {storm_cpu * 1000 / cloud.calls:.2f} ms per HTTP call)")
