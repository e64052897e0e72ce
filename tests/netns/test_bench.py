"""The benchmarks run and report the documented figures (tests never assert wall times)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from eni_core import netlink as nl
from eni_core.kernel import NamespaceKernel
from testbed.apps import bench_netns
from testbed.apps.bench_netns import bench_bringup, bench_cni

pytestmark = pytest.mark.netns


def test_bench_bringup_reports_every_builder_and_verifies_every_pod():
    """16 pods a node: the pool hot-plugs a second ENI on each (at the 11th pod: 11 + 5 prebound > 15), and
    the 16th pod's address is on it; every builder does the same, the slow ones on their first 17 pods."""
    r = bench_bringup(nodes=2, pods_per_node=16, slow_pods=17, settle_s=0.5)
    assert r["pods"] == r["running"] == r["verified"] == 32 and r["reachable"] == r["reach_sample"] == 32
    for name in ("floor", "ip_batch", "pyroute2", "ip"):
        b = r["builders"][name]
        assert b["verified"] == b["pods"] > 0 and b["cpu_ms_per_pod"] >= 0 and b["wall_ms_per_pod"] > 0
        assert r[f"{name}_ms_per_pod"] == b["cpu_ms_per_pod"]
    assert r["builders"]["pyroute2"]["pods"] == 17
    # the same kernel objects: each builder plugged the ENIs enilab's pool did (the slow ones for their pods)
    assert r["enis_plugged"] == r["builders"]["floor"]["enis_plugged"] == r["builders"]["ip_batch"]["enis_plugged"] == 2
    assert r["builders"]["pyroute2"]["enis_plugged"] == r["builders"]["ip"]["enis_plugged"] == 1
    assert {"cpu_ms_per_pod", "wire_ms_per_pod", "over_floor_cpu", "teardown_ms_per_pod", "slab_kb_per_pod",
            "peak_rss_mb", "within_target", "cpu_ms_per_pod_first_500", "over_first_500"} <= set(r)
    assert r["cores"] >= 1
    assert len(r["rounds"]) == bench_netns.ROUNDS  # the floor and enilab, turn about
    assert all(one["verified"] == one["reachable"] == 32 and one["floor_cpu_ms_per_pod"] >= 0
               for one in r["rounds"])


def test_the_builders_hot_plug_the_enis_the_pool_would():
    bed = bench_netns._testbed(2, 16, 32)
    try:
        assert [(p.eni.ifname, [eni.ifname for eni in p.plug]) for p in bed.pods[9:16]] == [
            ("eth1", []), ("eth1", ["eth2"]), *[("eth1", [])] * 4, ("eth2", [])]
        assert [eni.ifname for eni in bed.plugged()] == ["eth2", "eth2"]
        assert len(bed.enis) == 4 and len({eni.port for eni in bed.enis}) == 4
    finally:
        bench_netns._remove(bed.run)


def test_verification_names_what_a_builder_left_out():
    bed = bench_netns._testbed(1, 16, 16)
    try:
        bench_netns.BUILDERS["floor"](bed)()
        assert bench_netns._verify(bed.fabric, bed.pods, bed.enis) == 16
        victim = bed.pods[1]
        NamespaceKernel(victim.node_ns).check(
            [nl.rule_msg(False, priority=1536, table=victim.table, src=victim.ip, src_len=32)])
        with pytest.raises(RuntimeError, match=f"{victim.ns} .*rule from the pod"):
            bench_netns._verify(bed.fabric, bed.pods, bed.enis)
        eni = bed.plugged()[0]
        NamespaceKernel(eni.node_ns).check(
            [nl.route_msg(False, table=eni.table, dst=None, dst_len=0, oif=eni.index, gateway=eni.gateway)])
        with pytest.raises(RuntimeError, match=f"ENI eth2 of node namespace {eni.node_ns}: missing its table's "
                                               "default route"):
            bench_netns._verify(bed.fabric, bed.pods, bed.enis)
    finally:
        bench_netns._remove(bed.run)
    assert not bed.run.namespaces()


def test_bench_cni_reports_percentiles_in_process_and_through_the_executable():
    r = bench_cni(adds=10, exec_adds=3)
    assert set(r["in_process"]) >= {"p50_ms", "p99_ms"} and set(r["executable"]) >= {"p50_ms", "p99_ms"}
    assert r["in_process"]["n"] == 10 and r["executable"]["n"] == 3
    assert r["reference"]["n"] == 3 and {"plugin", "p50_ms", "p99_ms"} <= set(r["reference"])
    assert r["executable_over_reference"] > 0


def test_bench_bringup_refuses_an_unknown_builder_before_making_anything():
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "bench", "bringup", "--compare", "floor,mininet"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no builder 'mininet'" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_cli_prints_json():
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "bench", "sim", "--nodes", "20", "--pods", "500",
                           "--hours", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["events"] == 1000 and {"seconds", "events_per_s", "peak_rss_mb", "speedup"} <= set(r)
    # the tenth ran before each of the full size's 10 parts and after the last, in turns with it
    assert r["tenth"]["runs"] == len(r["tenth"]["cpu_s_runs"]) == 11
    assert len(r["slice_cpu_s"]) == len(r["scaling_ratio_runs"]) == 10
    # each part (100 events) weighed against the mean of the two runs of the tenth beside it
    # (the figures are rounded to 0.1 ms: the ratio is checked within what that rounding allows)
    runs, tenth_events, ms = r["tenth"]["cpu_s_runs"], r["tenth"]["events"], 0.00005

    def ratio(part_error: float, run_error: float) -> float:
        beside = [(runs[k] + runs[k + 1] + 2 * run_error) / 2 * 100 / tenth_events for k in range(10)]
        return (sum(r["slice_cpu_s"]) + 10 * part_error) / sum(beside)

    assert ratio(-ms, ms) - 0.005 <= r["scaling_ratio"] <= ratio(ms, -ms) + 0.005
    # two verdicts: time, memory and garbage; and, apart, the cost per event against a tenth of the size
    assert r["linear"] is (r["scaling_ratio"] <= r["target_scaling_ratio"] == 1.1)
    assert r["within_target"] is (r["seconds"] + r["setup_s"] <= r["target_s"] and r["peak_rss_mb"] <= r["target_mb"]
                                  and r["cyclic_garbage"] == 0)


def test_bench_sim_with_fewer_events_than_parts_gives_the_empty_parts_no_ratio():
    # one pod: two events for ten parts; eight parts replay nothing and have no ratio of their own
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "bench", "sim", "--nodes", "1", "--pods", "1",
                           "--hours", "0.01", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["events"] == 2 and r["scaling_ratio_runs"].count(None) == 8 and r["scaling_ratio"] > 0
    text = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "bench", "sim", "--nodes", "1", "--pods", "1",
                           "--hours", "0.01"], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and "the parts' ratios -, " in text.stdout.replace("\n", " "), text.stderr


LIMITED = """
mount -t tmpfs none /run/netns && echo {limit} > /proc/sys/user/max_net_namespaces || exit 99
{python} -c "$BENCH_CODE"
echo "rc=$? left=$(ls /run/netns | wc -l)"
"""


@pytest.mark.parametrize("code", [
    # the first builder's testbed runs out of namespaces among its pods
    "import sys; from testbed.apps.cli import main; sys.exit(main(['bench', 'bringup', '--nodes', '2', "
    "'--pods-per-node', '5']))",
    # enilab's own cluster runs out among its pods
    "import sys; from testbed.apps.cli import main; "
    "sys.exit(main(['bench', 'bringup', '--nodes', '2', '--pods-per-node', '5', '--compare', 'none']))",
])
def test_a_bench_too_big_for_the_namespace_limit_says_so_and_leaves_nothing(code):
    """In a user namespace of the test's own (never the host's sysctls), with room for 7 namespaces."""
    script = LIMITED.format(limit=8, python=sys.executable)
    proc = subprocess.run(["unshare", "-Urnm", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "BENCH_CODE": code})
    assert proc.stdout.strip().endswith("rc=2 left=0"), proc.stdout + proc.stderr
    assert "user.max_net_namespaces (8 here), is reached" in proc.stderr
    assert "Traceback" not in proc.stderr
