"""Chaos: node agents killed at random points, a stormy cloud, hand-edited kernels; the audit and the
connectivity check pass after every iteration. CI runs a short chaos; `make chaos` runs 200 iterations."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from testbed.apps.chaos import run_chaos
from tests.helpers import cmdline

pytestmark = pytest.mark.netns
ITERATIONS = int(os.environ.get("ENILAB_CHAOS_ITERATIONS", "30"))


def test_chaos_ends_with_zero_audit_and_connectivity_failures():
    result = run_chaos(ITERATIONS, seed=int(os.environ.get("ENILAB_CHAOS_SEED", "11")))
    assert result["iterations"] == ITERATIONS and result["kills"] > 0 and result["drifts"] > 0
    assert result["audit_failures"] == 0 and result["connectivity_failures"] == 0, result["failures"]


def test_chaos_cli_reports_json():
    argv = [sys.executable, "-m", "testbed.apps.cli", "chaos", "--iterations", "3", "--seed", "2", "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {"iterations", "kills", "faults", "drifts", "audit_failures", "connectivity_failures"} <= set(result)


@pytest.fixture
def short_run_dir():
    """A run directory with a short path: the agents' unix sockets in it may have 107 bytes at most, which
    pytest's tmp_path under xdist passes (the agents then died at once, and only the VPC's socket showed)."""
    folder = Path(tempfile.mkdtemp(prefix="enl-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_chaos_killed_mid_run_leaves_nothing_clean_does_not_remove(short_run_dir):
    env = {**os.environ, "ENILAB_RUN_DIR": str(short_run_dir)}
    argv = [sys.executable, "-m", "testbed.apps.cli", "chaos", "--iterations", "50", "--seed", "2"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs_dir = short_run_dir / "runs"
    try:
        deadline = time.monotonic() + 60
        while not list(runs_dir.glob("enl-*/node-*.sock")) and time.monotonic() < deadline:  # its agents are up
            time.sleep(0.1)
        assert list(runs_dir.glob("enl-*/node-*.sock")), "chaos did not start its agents"
    finally:
        proc.kill()
        proc.wait()
    state = next(p for p in runs_dir.iterdir() if p.is_dir())
    clean = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "clean"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    assert list(runs_dir.iterdir()) == []  # its record, its namespaces' names and its folder of sockets and logs
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and str(state).encode() in cmdline(pid)]


def _one_node_cluster(folder):
    from ipaddress import IPv4Network

    from eni_core.model import PoolConfig, Subnet
    from testbed.apps.chaos import ProcessCluster
    from testbed.world.spec import ClusterSpec, NodeSpec

    spec = ClusterSpec(subnets=(Subnet("subnet-a", IPv4Network("10.0.1.0/24")),),
                       nodes=(NodeSpec("node-1", ("subnet-a",), 3, 6),), pool=PoolConfig(2, 4))
    return ProcessCluster(spec, folder)


def test_the_cloud_answers_agents_while_the_audit_asks_them(monkeypatch):
    """The lock order: nobody holding the cloud's lock waits on an agent (an agent re-syncing holds its
    own lock and waits on the cloud). Here an agent calls the cloud while the audit is asking agents."""
    import tempfile
    import threading
    from pathlib import Path

    from eni_core.vpc_client import VpcClient

    folder = Path(tempfile.mkdtemp(prefix="enilab-lock-"))
    pc = _one_node_cluster(folder)
    try:
        asked = pc.datastores
        answered: list[dict] = []

        def datastores_while_an_agent_calls_the_cloud():
            cloud = VpcClient(str(folder / "vpc.sock"))
            caller = threading.Thread(target=lambda: answered.append(cloud.describe_subnets(["subnet-a"])),
                                      daemon=True)
            caller.start()
            caller.join(5)
            return asked()

        monkeypatch.setattr(pc, "datastores", datastores_while_an_agent_calls_the_cloud)
        assert pc.audit()["ok"]
        assert answered, "the cloud did not answer while the audit was asking the agents"
    finally:
        pc.close()
        for f in folder.iterdir():
            if not f.is_dir():
                f.unlink()
        for sub in [d for d in folder.iterdir() if d.is_dir()]:
            for f in sub.iterdir():
                f.unlink()
            sub.rmdir()
        folder.rmdir()


def test_a_stuck_iteration_is_a_failure_with_its_seed_and_step_not_a_traceback(monkeypatch):
    from testbed.apps.chaos import ProcessCluster

    real_audit = ProcessCluster.audit
    seen = []

    def audit_that_hangs_from_the_second_iteration(self):
        if seen:  # the first iteration is logged: the agents stop answering
            raise TimeoutError("timed out")  # what an RPC to a deadlocked agent ends with
        return real_audit(self)

    monkeypatch.setattr(ProcessCluster, "audit", audit_that_hangs_from_the_second_iteration)
    result = run_chaos(5, seed=7, log=lambda i, what, ok, lost: seen.append((i, what, ok)))
    assert result["stuck_iterations"] == 1 and not result["ok"] and result["iterations"] == 2
    assert result["failures"] == [{"iteration": 2, "seed": 7, "action": result["failures"][0]["action"],
                                   "step": "audit", "stuck": "TimeoutError: timed out"}]
    assert seen[-1][0] == 2 and "stuck in audit" in seen[-1][1] and seen[-1][2] is False
