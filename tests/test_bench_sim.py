"""`enilab bench sim` when the process it measures the tenth in is killed: a clear error, never a hang; and
the sizes and options `enilab bench` refuses before it starts."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.apps import bench as bench_mod
from testbed.apps.cli import main
from testbed.world.churn import churn_world

BAD = [
    (["sim", "--hours", "-1"], "--hours -1: give a span above 0 and at most two weeks (336)"),
    (["sim", "--hours", "nan"], "--hours nan: give a span above 0"),
    (["sim", "--hours", "0"], "--hours 0: give a span above 0"),
    (["sim", "--hours", "400"], "--hours 400: give a span above 0 and at most two weeks"),
    (["sim", "--nodes", "0"], "--nodes 0: give 1 to 50,000 nodes"),
    (["sim", "--nodes", "-3"], "--nodes -3: give 1 to 50,000 nodes"),
    (["sim", "--nodes", "50001"], "--nodes 50001: give 1 to 50,000 nodes"),
    (["sim", "--pods", "0"], "--pods 0: give 1 to 2,500,000 pods"),
    (["sim", "--pods", "-5"], "--pods -5: give 1 to 2,500,000 pods"),
    (["bringup", "--nodes", "0"], "--nodes 0: give 1 or more"),
    (["bringup", "--pods-per-node", "-1"], "--pods-per-node -1: give 1 or more"),
    (["bringup", "--nodes", "1000", "--pods-per-node", "1000"], "1,000,000 pods; give at most 100,000"),
    (["bringup", "--nodes", "99999999999"], "4,999,999,999,950 pods; give at most 100,000"),
    (["bringup", "--pods-per-node", "200000"], "2,000,000 pods; give at most 100,000"),
    # a size not given counts at its default: 50 pods per node, 10 nodes; 2 and 10 for containers
    (["bringup", "--nodes", "2001"], "--nodes 2001 --pods-per-node default: 100,050 pods; give at most 100,000"),
    (["bringup", "--pods-per-node", "10001"], "100,010 pods; give at most 100,000"),
    (["bringup", "--backend", "containers", "--nodes", "10001"], "100,010 pods; give at most 100,000"),
    (["bringup", "--backend", "containers", "--pods-per-node", "50001"], "100,002 pods; give at most 100,000"),
    (["bringup", "--compare", ""], "--compare '': an empty name; name builders from floor, ip_batch, pyroute2"),
    (["bringup", "--compare", "floor,,ip"], "--compare 'floor,,ip': an empty name"),
    (["bringup", "--compare", "none,floor"], "none stands alone"),
    (["bringup", "--compare", "bogus"], "--compare 'bogus': no builder 'bogus'"),
    (["bringup", "--compare", "ip,ip"], "ip is listed twice"),
    # an option another kind of bench reads would be ignored: refused, naming the kind it is for
    (["sim", "--compare", "ip"], "--compare is an option of `bench bringup`, not of `bench sim`; leave it out"),
    (["sim", "--backend", "containers"], "--backend is an option of `bench bringup`, not of `bench sim`"),
    (["sim", "--pods-per-node", "5"], "--pods-per-node is an option of `bench bringup`, not of `bench sim`"),
    (["bringup", "--hours", "2"], "--hours is an option of `bench sim`, not of `bench bringup`"),
    (["bringup", "--pods", "10"], "--pods is an option of `bench sim`, not of `bench bringup`"),
    (["cni", "--nodes", "3"], "--nodes is an option of `bench sim` and `bench bringup`, not of `bench cni`"),
    (["cni", "--seed", "3"], "--seed is an option of `bench sim`, not of `bench cni`"),
    (["bringup", "--backend", "containers", "--compare", "none"], "containers against namespaces, no builders"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_a_size_no_bench_can_run_exits_2_naming_it_before_anything_starts(capsys, monkeypatch, args, message):
    called = []
    monkeypatch.setattr(bench_mod, "bench_sim", lambda *a: called.append(a))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # bringup's sizes are checked before it asks for root
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "needs root" not in err, err
    assert not called


def test_bench_sim_without_options_runs_its_default_size(capsys, monkeypatch):
    called = []
    monkeypatch.setattr(bench_mod, "bench_sim", lambda *a: called.append(a) or {"ran": True})
    assert main(["bench", "sim", "--json"]) == 0
    assert called == [(1000, 50_000, 24.0, 1)] and capsys.readouterr().out == '{"ran": true}\n'


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _is_pool_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return b"spawn_main" in cmdline and b"resource_tracker" not in cmdline


def test_bench_sim_says_so_and_exits_when_the_tenths_process_is_killed():
    bench = subprocess.Popen([sys.executable, "-m", "testbed.apps.cli", "bench", "sim", "--nodes", "300", "--pods",
                              "30000", "--hours", "24", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        worker = None
        while worker is None and time.monotonic() < deadline and bench.poll() is None:
            worker = next((c for c in _children(bench.pid) if _is_pool_worker(c)), None)
            time.sleep(0.02)
        assert worker is not None, "the tenth's process never appeared"
        os.kill(worker, signal.SIGKILL)
        out, err = bench.communicate(timeout=60)  # a Pool would wait here forever
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.communicate()
    assert bench.returncode == 1 and out == ""
    assert "a process it measures in died (killed, or out of memory)" in err and "Traceback" not in err, err


def test_the_tenths_process_dies_with_the_bench_when_the_bench_is_killed():
    bench = subprocess.Popen([sys.executable, "-m", "testbed.apps.cli", "bench", "sim", "--nodes", "300", "--pods",
                              "30000", "--hours", "24", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while worker is None and time.monotonic() < deadline and bench.poll() is None:
            worker = next((c for c in _children(bench.pid) if _is_pool_worker(c)), None)
            time.sleep(0.02)
        assert worker is not None, "the tenth's process never appeared"
        time.sleep(0.5)  # into its work
        os.kill(bench.pid, signal.SIGKILL)
        bench.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "the tenth's process outlived the bench"
    finally:
        if bench.poll() is None:
            bench.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that is gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_world_too_small_for_its_pools_is_reported_and_not_within_target(monkeypatch):
    """The bench measures churn; in a world whose subnets cannot hold the nodes' pre-bound IPs it measures
    nodes polling for addresses instead, and says so (50,000 nodes on four /16s did, for minutes)."""
    from dataclasses import replace
    from ipaddress import IPv4Network

    from eni_core.model import Subnet

    def starved(nodes, seed):
        world = churn_world(nodes, seed)
        tiny = tuple(Subnet(s.id, IPv4Network(f"10.{i}.0.0/27")) for i, s in enumerate(world.subnets))
        return replace(world, subnets=tiny)

    monkeypatch.setattr(bench_mod, "churn_world", starved)
    r = bench_mod.bench_sim(20, 40, 1.0, 1, baseline_events=40)
    assert r["nodes_short_of_addresses"] > 0 and not r["within_target"]
    monkeypatch.setattr(bench_mod, "churn_world", churn_world)
    r = bench_mod.bench_sim(20, 40, 1.0, 1, baseline_events=40)
    assert r["nodes_short_of_addresses"] == 0
