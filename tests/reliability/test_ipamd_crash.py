"""The ipamd survives SIGKILL in the middle of a scale-up: nothing leaked, nothing given twice, no pod
loses its IP. The agent runs as a real process against the VPC served from this test process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from eni_core.rpc import RpcClient
from testbed.world.vpc import FaultConfig, SimVpc
from testbed.world.vpc_server import serve_vpc
from tests.helpers import subnet

NODE = "node-1"


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.lock = threading.Lock()
        self.vpc = SimVpc([subnet("subnet-a", "10.0.0.0/22")], faults=FaultConfig(latency=(0.01, 0.02)),
                          sleep=time.sleep)
        self.vpc.add_instance(NODE, max_enis=4, ips_per_eni=10)
        self.server = serve_vpc(self.vpc, str(tmp / "vpc.sock"), self.lock)
        self.proc: subprocess.Popen | None = None

    def start_agent(self, min_prebound: int) -> None:
        sock = self.tmp / "agent.sock"
        sock.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eni_core.agent", "--node", NODE, "--vpc", str(self.tmp / "vpc.sock"),
             "--state", str(self.tmp / "state"), "--listen", str(sock), "--subnet", "subnet-a",
             "--max-enis", "4", "--ips-per-eni", "10", "--min-prebound", str(min_prebound),
             "--max-prebound", str(min_prebound)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def agent(self) -> RpcClient:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (self.tmp / "agent.sock").exists():
                try:
                    client = RpcClient(self.tmp / "agent.sock")
                    client.call("ping")
                    return client
                except OSError:
                    pass
            assert self.proc.poll() is None, self.proc.stdout.read()
            time.sleep(0.02)
        raise AssertionError("the agent did not come up")

    def kill_after_calls(self, start: int, calls: int) -> None:
        """SIGKILL the agent once the VPC has answered `calls` calls since `start` (a call count)."""
        deadline = time.monotonic() + 20
        while self.vpc.calls - start < calls:
            assert time.monotonic() < deadline, "the scale-up never made that many calls"
            time.sleep(0.001)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def vpc_view(self) -> tuple[set[str], list[str]]:
        with self.lock:
            bound = {str(ip) for e in self.vpc.enis.values() if e.record.attached_to == NODE for ip in e.ips}
            leaked = [e.record.id for e in self.vpc.enis.values() if e.record.attached_to is None]
        return bound, leaked

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.server.close()


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


@pytest.mark.parametrize("kill_after", [1, 2, 3, 4, 5, 6, 7, 8])
def test_sigkill_during_scale_up_loses_nothing_and_gives_nothing_twice(world, kill_after):
    world.start_agent(min_prebound=5)
    agent = world.agent()
    pods = {f"default/app-{i}": agent.call("add", pod=f"default/app-{i}")["ip"] for i in range(6)}
    world.proc.terminate()
    world.proc.wait()

    before = world.vpc.calls
    world.start_agent(min_prebound=30)  # the scale-up: 6 + 30 IPs on up to 4 ENIs, from start-up on
    world.kill_after_calls(before, kill_after)

    world.start_agent(min_prebound=30)
    agent = world.agent()
    state = agent.call("reconcile")

    for pod, ip in pods.items():  # no running pod lost its IP
        assert agent.call("get", pod=pod)["ip"] == ip
    bound, leaked = world.vpc_view()
    ours = {ip for e in state["enis"] for ip in e["ips"]}
    assert ours == bound  # the VPC's truth and the datastore agree: nothing leaked or forgotten
    assert leaked == []  # no ENI left created but unattached
    assert state["bound"] == 36
    more = [agent.call("add", pod=f"default/new-{i}")["ip"] for i in range(20)]
    every = list(pods.values()) + more
    assert len(every) == len(set(every))  # no IP given to two pods


def test_a_second_agent_of_the_node_is_refused_and_the_first_keeps_its_socket_and_checkpoint(world):
    # a second agent of one node took over the first's socket, and each committed its own memory over the
    # other's checkpoint: the first's release timer wiped every IP the second had given out
    world.start_agent(min_prebound=3)
    agent = world.agent()
    ip = agent.call("add", pod="default/app-0")["ip"]
    second = subprocess.Popen([*world.proc.args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = second.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        second.kill()
        out, _ = second.communicate()
    assert second.returncode == 2 and "another enilab-agent serves node node-1" in out
    assert "Traceback" not in out
    assert RpcClient(world.tmp / "agent.sock").call("get", pod="default/app-0")["ip"] == ip
