"""The benchmarks run and report the documented figures (tests never assert wall times)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testbed.apps.bench_netns import bench_bringup, bench_cni

pytestmark = pytest.mark.root


def test_bench_bringup_reports_its_figures_and_verifies_every_pod():
    r = bench_bringup(nodes=2, pods_per_node=10, baseline_pods=3)
    assert {"pods", "wire_ms_per_pod", "total_s", "teardown_s", "verified", "baseline_wire_ms_per_pod", "speedup",
            "peak_rss_mb"} <= set(r)
    assert r["pods"] == r["running"] == r["verified"] == 20 and r["cores"] >= 1


def test_bench_cni_reports_percentiles_in_process_and_through_the_executable():
    r = bench_cni(adds=10, exec_adds=3)
    assert set(r["in_process"]) >= {"p50_ms", "p99_ms"} and set(r["executable"]) >= {"p50_ms", "p99_ms"}
    assert r["in_process"]["n"] == 10 and r["executable"]["n"] == 3
    assert r["reference"]["n"] == 3 and {"plugin", "p50_ms", "p99_ms"} <= set(r["reference"])
    assert r["executable_over_reference"] > 0


def test_bench_cli_prints_json():
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "bench", "sim", "--nodes", "20", "--pods", "500",
                           "--hours", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["events"] == 1000 and {"seconds", "events_per_s", "peak_rss_mb", "speedup"} <= set(r)
