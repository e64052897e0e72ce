"""Traces from real packets agree with the routing plan; released IPs are unreachable; the rp_filter
lesson; the connectivity matrix; the demo."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from eni_core import pool
from testbed.apps.runner import apply_step, run_scenario
from testbed.observe import traffic
from testbed.world.backends.netns import NetnsBackend
from testbed.world.cluster import Cluster
from testbed.world.scenario import load_scenario, parse_scenario
from tests.helpers import ROOT, SCENARIOS

pytestmark = pytest.mark.netns
DEFAULT = ROOT / "fixtures" / "topologies" / "default.yaml"


def up(doc_or_path) -> Cluster:
    s = load_scenario(doc_or_path) if not isinstance(doc_or_path, dict) else parse_scenario(doc_or_path)
    c = Cluster(s.cluster, backend=NetnsBackend())
    for step in s.steps:
        apply_step(c, step)
    return c


def three_subnets() -> dict:
    doc = yaml.safe_load(DEFAULT.read_text())
    doc["cluster"]["subnets"].append({"id": "subnet-c", "cidr": "10.0.3.0/24",
                                      "hosts": [{"name": "api-1", "ip": "10.0.3.50"}]})
    doc["cluster"]["nodes"] = [
        {"name": "node-1", "subnets": ["subnet-a", "subnet-b", "subnet-c"], "max_enis": 3, "ips_per_eni": 3},
        {"name": "node-2", "subnets": ["subnet-c", "subnet-a"], "max_enis": 2, "ips_per_eni": 5}]
    doc["steps"] = [{"op": "create_pods", "node": "node-1", "count": 7},
                    {"op": "create_pods", "node": "node-2", "count": 6}]
    return doc


@pytest.mark.parametrize("topology", ["default", "three-subnets"])
def test_every_trace_leaves_by_the_pods_eni_and_its_table_is_link_index_plus_2000(topology):
    c = up(DEFAULT if topology == "default" else three_subnets())
    try:
        hosts = list(c.backend.hosts)
        for pod in [p for p in c.pods.values() if p.phase == "Running"]:
            node = c.nodes[pod.node]
            eni = node.ipamd.store.enis[pod.eni_id]
            for dst in hosts:
                t = traffic.probe(c, pod.name, dst)
                t.assert_delivered().assert_egress(f"eth{eni.device_index}", table=node.ifindex[eni.id] + 2000)
                assert t.reply_via == f"eth{eni.device_index}"  # the reply comes back by the same ENI
    finally:
        c.close()


def test_pods_wired_through_the_cni_leave_each_pool_within_pods_plus_min_and_max_prebound():
    """The pool rule on the real backend: the runtime's ADD of a pod the controller placed asks the cloud
    nothing, so the scheduler's passes alone keep bound IPs within [pods + min, pods + max pre-bound],
    and the fabric delivers every one of them to its ENI."""
    doc = yaml.safe_load(DEFAULT.read_text())
    doc["steps"] = [{"op": "create_pods", "node": "node-1", "count": 9},
                    {"op": "create_pods", "node": "node-2", "count": 4}]
    c = up(doc)
    try:
        for node in c.nodes.values():
            ipamd = node.ipamd
            low, high = pool.bounds(ipamd.pods, ipamd.config, ipamd.limits)
            assert low <= ipamd.bound <= high, (node.name, ipamd.pods, ipamd.bound)
            for ip in (i for e in ipamd.enis for i in e.idle_ips()):  # bound, so the fabric sends it on
                t = traffic.probe(c, "db-1", str(ip))
                assert any(h["at"] == "fabric" and h["dir"] == "out" for h in t.hops), (node.name, str(ip))
    finally:
        c.close()


def test_hosts_reach_pods_and_pods_reach_pods_across_nodes():
    c = up(DEFAULT)
    try:
        traffic.probe(c, "db-1", "pod-1").assert_delivered()
        traffic.probe(c, "cache-1", "pod-8").assert_delivered()
        t = traffic.probe(c, "pod-1", "pod-8").assert_delivered()
        assert any(h["at"] == "fabric" and "node-2/" in h["what"] for h in t.hops)
        same = traffic.probe(c, "pod-1", "pod-2").assert_delivered()
        assert same.table == 254 and not any(h["at"] == "fabric" for h in same.hops)  # directly, on the node
    finally:
        c.close()


def test_a_released_ip_is_unreachable_at_the_fabric():
    c = up(DEFAULT)
    try:
        bound_before = set(c.vpc.owner)
        for name in c.newest_pods(9):
            c.delete_pod(name)
        c.advance(120 * 30)  # the pool releases down to pods + max pre-bound
        released = sorted(bound_before - set(c.vpc.owner))
        assert released, "the pool released nothing"
        ip = str(released[0])
        c.create_pods(1, "node-2", names=["probe-src"])
        traffic.probe(c, "probe-src", ip).assert_dropped("not bound to any ENI", at="fabric")
        idle = next(str(i) for e in c.nodes["node-1"].ipamd.enis for i, pod in e.ips.items() if pod is None)
        t = traffic.probe(c, "probe-src", idle)  # still bound: delivered to its ENI, but no pod is there
        assert not t.delivered and any(h["at"] == "fabric" and h["dir"] == "out" for h in t.hops)
    finally:
        c.close()


def test_rp_filter_strict_drops_the_asymmetric_path_and_zero_delivers_it():
    out = run_scenario(load_scenario(SCENARIOS / "rp-filter-lesson.yaml"), backend=NetnsBackend())
    probes = [s["probe"] for s in out["steps"] if "probe" in s]
    assert [p["as_expected"] for p in probes] == [True, True, True, True]
    strict = probes[1]
    assert strict["dropped_at"] == "node-1" and "reverse-path filter" in strict["reason"]
    assert "entered node-1 by eth0" in strict["reason"]
    sysctl = out["steps"][2]["state"]["nodes"]["node-1"]["routing"]["sysctl"]
    assert sysctl["net.ipv4.conf.all.rp_filter"] == 1  # set by hand, and the agent left it so


def _four_nodes(pods_each: int, max_enis: int, ips_per_eni: int):
    """The default scenario's VPC with four nodes of `pods_each` pods, up on namespaces."""
    doc = yaml.safe_load(DEFAULT.read_text())
    doc["cluster"]["nodes"] = [{"name": f"node-{i}", "subnets": ["subnet-a", "subnet-b"], "max_enis": max_enis,
                                "ips_per_eni": ips_per_eni} for i in range(1, 5)]
    doc["steps"] = [{"op": "create_pods", "node": f"node-{i}", "count": pods_each} for i in range(1, 5)]
    return up(doc)


def test_connectivity_matrix_on_100_pods():
    c = _four_nodes(25, max_enis=3, ips_per_eni=10)
    try:
        assert sum(p.phase == "Running" for p in c.pods.values()) == 100
        start = time.perf_counter()
        m = traffic.matrix(c, targets=[*[p for p in c.pods], *c.backend.hosts, "10.0.1.250"])
        took = time.perf_counter() - start
        assert len(m) == 100 and all(len(row) == 103 for row in m.values())
        assert all(row[t] for row in m.values() for t in row if t != "10.0.1.250")
        assert not any(row["10.0.1.250"] for row in m.values())  # nobody there: nothing delivered
        print(f"matrix of 100 x 103 took {took:.3f} s")
    finally:
        c.close()


def test_matrix_hears_every_source_with_the_default_receive_buffer_and_few_open_files(monkeypatch):
    """A user namespace may not force a socket's buffer; the default one holds about 200 datagrams, and 16,000
    pods' rootless bench once heard 256 of its 1,000 sources. The matrix drains its listeners as it sends, and
    closes each source's socket once it has sent: 400 sources fit under a limit of 150 open files."""
    import resource

    monkeypatch.setattr(traffic, "SO_RCVBUFFORCE", -1)  # an option no kernel has: the buffer stays default
    c = _four_nodes(100, max_enis=4, ips_per_eni=30)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        pods = [p.name for p in c.pods.values() if p.phase == "Running"]
        assert len(pods) == 400
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 150, hard))
        m = traffic.matrix(c, sources=pods, targets=["db-1", pods[0]])
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert sum(row["db-1"] for row in m.values()) == 400
        assert sum(row[pods[0]] for row in m.values()) == 400
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        c.close()


def test_trace_json_has_the_documented_fields():
    c = up(DEFAULT)
    try:
        d = traffic.probe(c, "pod-1", "db-1").to_dict()
        assert {"delivered", "egress", "table", "reply", "dropped_at", "reason", "hops"} <= set(d)
    finally:
        c.close()


def test_demo_exits_0_as_root_and_draws_the_topology(tmp_path):
    png = tmp_path / "topology.png"
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "demo", "--png", str(png)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "every check passed" in proc.stdout and png.stat().st_size > 10_000
    assert "FAIL" not in proc.stdout
