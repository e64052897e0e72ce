"""The netns data plane: the kernel state of every pod matches the seed's policy routing, read back
independently with pyroute2; ENIs come and go as interfaces with the VPC's MACs; drift is repaired."""
from __future__ import annotations

import subprocess
import threading
from ipaddress import IPv4Address

import pytest

from testbed.apps.runner import run_scenario
from testbed.world.cluster import PodPhase
from testbed.world.scenario import load_scenario
from tests.helpers import SCENARIOS
from tests.netns.helpers import kernel_view, netns_cluster, sysctl

pytestmark = pytest.mark.netns


def assert_node_matches_plan(cluster, name: str) -> None:
    node = cluster.nodes[name]
    ns = cluster.backend.nodes[name].ns
    view = kernel_view(ns)
    by_mac = {v["mac"]: i for i, v in view["links"].items()}
    by_name = {v["ifname"]: i for i, v in view["links"].items()}
    gateways = {s.id: str(s.gateway) for s in cluster.spec.subnets}
    for eni in node.ipamd.enis:
        index = by_mac[eni.mac]  # the ENI is the interface with its MAC
        assert view["links"][index]["ifname"] == f"eth{eni.device_index}" and view["links"][index]["up"]
        table = index + 2000  # the seed: route table = link index + 2000
        assert (table, None, 0, index, gateways[eni.subnet_id]) in view["routes"]
        assert sysctl(ns, f"net.ipv4.conf.eth{eni.device_index}.rp_filter") == 0
    running = cluster.pods_on(node.name, PodPhase.RUNNING)
    for pod_name in running:
        pod = cluster.pods[pod_name]
        eni = node.ipamd.store.enis[pod.eni_id]
        table = by_mac[eni.mac] + 2000
        assert (1536, table, pod.ip, None) in view["rules"], f"no 'from {pod.ip} lookup {table}'"
        assert (512, 254, None, pod.ip) in view["rules"]
        veth = by_name[pod.extra["veth"]]
        assert (254, str(pod.ip), 32, veth, None) in view["routes"]
    ours = {cluster.pods[p].ip for p in running}
    stale = [r for r in view["rules"] if r[0] == 1536 and r[2] not in ours]
    assert not stale, f"rules for pods that are gone: {stale}"
    for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter", "net.ipv4.conf.eth0.rp_filter"):
        assert sysctl(ns, key) == 0
    assert sysctl(ns, "net.ipv4.ip_forward") == 1


@pytest.mark.parametrize("name", ["grow-and-shrink", "least-eni-allocation", "subnet-choice", "node-lifecycle",
                                  "max-bindable-clamp"])
def test_kernel_state_matches_the_plan_after_every_step(name):
    from testbed.world.backends.netns import NetnsBackend

    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    backend = NetnsBackend()
    checked = []

    def check(step):
        cluster = backend.cluster
        for node in cluster.nodes:
            assert_node_matches_plan(cluster, node)
            assert step["state"]["nodes"][node]["netns"] == backend.nodes[node].ns
        checked.append(step["index"])

    out = run_scenario(scenario, backend=backend, on_step=check)
    assert checked == [s["index"] for s in out["steps"]]


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_fixture_runs_on_real_namespaces_and_its_probes_meet_their_expectations(path):
    from testbed.world.backends.netns import NetnsBackend

    out = run_scenario(load_scenario(path), backend=NetnsBackend())
    assert len(out["steps"]) == len(load_scenario(path).steps)
    for step in out["steps"]:
        assert step.get("probe", {}).get("as_expected", True), step["probe"]
        for node in step["state"]["nodes"].values():
            assert node["netns"].startswith("enl-") and "routing" in node


def test_run_json_reports_routing_read_back_from_the_kernel():
    from testbed.world.backends.netns import NetnsBackend

    out = run_scenario(load_scenario(SCENARIOS / "grow-and-shrink.yaml"), backend=NetnsBackend())
    node = out["steps"][0]["state"]["nodes"]["node-1"]
    routing = node["routing"]
    pods = out["steps"][0]["state"]["pods"]
    assert {"priority": 1536, "from": f"{pods['pod-1']['ip']}/32", "table": 2003} in routing["rules"]
    assert routing["tables"]["2003"] == [{"dst": "default", "gateway": "10.0.1.1", "dev": "eth1"}]
    assert {"dst": f"{pods['pod-1']['ip']}/32", "dev": pods["pod-1"]["veth"]} in routing["tables"]["main"]
    assert routing["sysctl"]["net.ipv4.conf.all.rp_filter"] == 0 and routing["sysctl"]["net.ipv4.ip_forward"] == 1
    assert pods["pod-1"]["netns"].startswith("enl-")


def test_pool_growth_adds_eni_interfaces_with_the_vpc_macs_and_deletion_removes_them():
    with netns_cluster() as c:
        ns = c.backend.nodes["node-1"].ns
        c.create_pods(6, "node-1")
        vpc_macs = {e.record.mac for e in c.vpc.enis.values() if e.record.attached_to == "node-1"}
        links = kernel_view(ns)["links"]
        assert len(vpc_macs) == 3
        assert vpc_macs == {v["mac"] for v in links.values() if v["ifname"].startswith("eth") and v["ifname"] != "eth0"}
        for name in c.newest_pods(6):
            c.delete_pod(name)
        c.advance(120 * 20)
        c.sync_dataplane()
        left = {e.mac for e in c.nodes["node-1"].ipamd.enis}
        now = {v["mac"] for v in kernel_view(ns)["links"].values()
               if v["ifname"].startswith("eth") and v["ifname"] != "eth0"}
        assert now == left and len(left) == 2  # ENIs emptied by releases were deleted, their links too
        assert_node_matches_plan(c, "node-1")


def test_a_hot_plugged_eni_gets_rp_filter_0_itself_and_leaves_the_node_wide_sysctls_alone():
    """A node whose new devices inherit rp_filter 1 (`default` set by hand, so pinned): an ENI the pool
    hot-plugs still gets its own 0 (replies leave by the pod's ENI), and the hand-set key stays as it is."""
    with netns_cluster() as c:
        ns = c.backend.nodes["node-1"].ns
        c.backend.set_sysctl("node-1", "net.ipv4.conf.default.rp_filter", 1)
        before = {e.ifname for e in c.nodes["node-1"].ipamd.enis}
        c.create_pods(6, "node-1")
        new = {e.ifname for e in c.nodes["node-1"].ipamd.enis} - before
        assert new, "the pool hot-plugged no ENI"
        for ifname in new:
            assert sysctl(ns, f"net.ipv4.conf.{ifname}.rp_filter") == 0
        assert sysctl(ns, "net.ipv4.conf.default.rp_filter") == 1


def test_drift_repair_restores_rules_routes_and_sysctls_deleted_by_hand_and_leaves_foreign_ones():
    with netns_cluster() as c:
        c.create_pods(3, "node-1")
        c.sync_dataplane()
        ns = c.backend.nodes["node-1"].ns
        pod = c.pods["pod-1"]
        subprocess.run(["ip", "-n", ns, "rule", "del", "from", str(pod.ip), "priority", "1536"], check=True)
        subprocess.run(["ip", "-n", ns, "route", "del", "default", "table", "2003"], check=True)
        subprocess.run(["ip", "-n", ns, "route", "del", str(pod.ip), "dev", pod.extra["veth"]], check=True)
        subprocess.run(["ip", "-n", ns, "rule", "add", "from", "192.0.2.9", "lookup", "main", "priority", "100"],
                       check=True)
        with pytest.raises(AssertionError):
            assert_node_matches_plan(c, "node-1")
        from eni_core import netns as n

        with n.entered(ns), open("/proc/sys/net/ipv4/conf/all/rp_filter", "w") as f:
            f.write("1")
        report = c.backend.sync("node-1")
        assert len(report.operations) == 3 and report.sysctls == {"net.ipv4.conf.all.rp_filter": 0}
        assert_node_matches_plan(c, "node-1")
        assert (100, 254, IPv4Address("192.0.2.9"), None) in kernel_view(ns)["rules"]  # not ours: untouched
        assert c.backend.sync("node-1").operations == []  # minimal: nothing left to do


def test_pods_reach_each_other_on_one_node_and_across_nodes_with_real_packets():
    import socket

    from eni_core import netns

    with netns_cluster() as c:
        c.create_pods(6, "node-1")
        c.create_pods(2, "node-2")

        def udp(src, dst):
            s, d = c.pods[src], c.pods[dst]
            with netns.entered(d.extra["netns"]):
                srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                srv.bind((str(d.ip), 9999))
                srv.settimeout(2)
            with netns.entered(s.extra["netns"]):
                cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                cli.settimeout(2)
            try:
                cli.sendto(b"ping", (str(d.ip), 9999))
                _, peer = srv.recvfrom(64)
                srv.sendto(b"pong", peer)
                return peer[0], cli.recvfrom(64)[0]
            finally:
                srv.close()
                cli.close()

        assert c.pods["pod-1"].eni_id != c.pods["pod-6"].eni_id
        for src, dst in [("pod-1", "pod-2"), ("pod-1", "pod-6"), ("pod-6", "pod-7"), ("pod-8", "pod-1")]:
            assert udp(src, dst) == (str(c.pods[src].ip), b"pong")


def test_two_clusters_built_in_parallel_never_collide():
    results, errors = {}, []

    def build(key):
        try:
            with netns_cluster() as c:
                c.create_pods(5, "node-1")
                results[key] = (c.backend.run.prefix, {n.ns for n in c.backend.nodes.values()},
                                {p.extra["netns"] for p in c.pods.values() if p.phase == "Running"})
                assert_node_matches_plan(c, "node-1")
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=build, args=(k,)) for k in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    (pa, na, qa), (pb, nb, qb) = results["a"], results["b"]
    assert pa != pb and not (na & nb) and not (qa & qb)
