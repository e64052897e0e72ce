"""The example from the README, as a user would copy it: the plugin's fixtures at work."""
import pytest

TOPOLOGY = "fixtures/topologies/default.yaml"


@pytest.mark.root
def test_every_pod_reaches_the_database_by_its_own_eni(enilab_cluster):
    cluster = enilab_cluster(TOPOLOGY, backend="netns")
    cluster.create_pods(3, node="node-2")
    for pod in cluster.running_pods():
        trace = cluster.trace(pod, "db-1").assert_delivered()
        eni = next(e for e in cluster.state()["nodes"][cluster.pod(pod)["node"]]["enis"]
                   if e["id"] == cluster.pod(pod)["eni"])
        trace.assert_egress(eni["ifname"], table=eni["table"])


def test_the_pool_keeps_five_spare_ips(enilab_cluster):
    cluster = enilab_cluster({"cluster": {
        "subnets": [{"id": "subnet-a", "cidr": "10.0.1.0/24"}],
        "nodes": [{"name": "node-1", "subnets": ["subnet-a"], "max_enis": 3, "ips_per_eni": 10}]}}, backend="sim")
    cluster.create_pods(12, node="node-1")
    node = cluster.state()["nodes"]["node-1"]
    assert (node["pods"], node["bound"]) == (12, 17)


def test_a_flaky_cloud_leaks_nothing(enilab_cluster):
    cluster = enilab_cluster("fixtures/topologies/default.yaml", backend="sim")
    cluster.faults(throttle=0.3, timeout=0.2, consistency_delay=5)
    cluster.create_pods(4, node="node-1")
    cluster.faults()  # the cloud heals
    cluster.advance(600)
    assert cluster.audit()["ok"]
