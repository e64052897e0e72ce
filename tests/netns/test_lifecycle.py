"""The lifecycle CLI (up, status, pods, down), `enilab clean` that removes only what dead enilab runs
recorded, and clear refusals without root. The hostile cases are in test_hardening_lifecycle.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from eni_core import netns
from testbed.apps import cli
from testbed.world import runs
from tests.helpers import SCENARIOS

ENILAB = [sys.executable, "-m", "testbed.apps.cli"]
TOPOLOGY = """
name: {name}
cluster:
  subnets: [{{id: subnet-a, cidr: 10.0.1.0/24}}]
  nodes: [{{name: node-1, subnets: [subnet-a], max_enis: 2, ips_per_eni: 4}}]
steps:
  - {{op: create_pods, node: node-1, count: 2}}
"""


def enilab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ENILAB, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.netns
def test_up_status_pods_down_from_separate_processes(tmp_path):
    name = f"lc-{uuid.uuid4().hex[:6]}"
    topo = tmp_path / "t.yaml"
    topo.write_text(TOPOLOGY.format(name=name))
    up = enilab("up", str(topo))
    assert up.returncode == 0, up.stderr
    try:
        status = json.loads(enilab("status", "--name", name, "--json").stdout)
        assert status["state"]["nodes"]["node-1"]["pods"] == 2
        prefix = status["prefix"]
        assert any(n.startswith(prefix) for n in netns.list_names())
        added = enilab("pods", "add", "--name", name, "--node", "node-1", "--count", "3", "--json")
        assert json.loads(added.stdout) == ["pod-3", "pod-4", "pod-5"]
        assert enilab("pods", "del", "--name", name, "pod-1").returncode == 0
        state = json.loads(enilab("status", "--name", name, "--json").stdout)["state"]
        assert state["nodes"]["node-1"]["pods"] == 4 and "pod-1" not in state["pods"]
        assert state["pods"]["pod-3"]["netns"].startswith(prefix)
        for bad in (["../x"], ["a/b/c"], ["UP"], [".x"], ["x" * 254], ["--count", "100000"], ["p", "p"]):
            refused = enilab("pods", "add", "--name", name, "--node", "node-1", *bad)
            assert refused.returncode == 2 and refused.stderr.count("\n") == 1, (bad, refused.stderr)
        state = json.loads(enilab("status", "--name", name, "--json").stdout)["state"]
        assert sorted(state["pods"]) == ["pod-2", "pod-3", "pod-4", "pod-5"]  # nothing made of them
        again = enilab("up", str(topo))
        assert again.returncode == 2 and "is up already" in again.stderr
    finally:
        down = enilab("down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert not any(n.startswith(prefix) for n in netns.list_names())
    gone = enilab("status", "--name", name)
    assert gone.returncode == 2 and "no cluster named" in gone.stderr


@pytest.mark.netns
def test_clean_removes_dead_runs_and_nothing_foreign(tmp_path):
    foreign = f"foreign-{uuid.uuid4().hex[:6]}"
    netns.create(foreign)
    subprocess.run(["ip", "-n", foreign, "link", "add", "enl-a1b2c3-x", "type", "veth", "peer", "name", "p0"],
                   check=True)
    lookalike = f"enlx-{uuid.uuid4().hex[:6]}-n1"  # almost our pattern, not ours
    netns.create(lookalike)
    dead = runs.Run(f"enl-{uuid.uuid4().hex[:6]}", pid=999_999_999, start="0")  # its owner is gone
    for what in ("fabric", "n1", "p1"):
        dead.netns(what)
    live = runs.Run.new()  # a live run (this process): never touched without --force
    live.netns("n1")
    try:
        out = enilab("clean", "--json")
        assert out.returncode == 0, out.stderr
        assert sorted(json.loads(out.stdout)["removed"].get(dead.prefix, [])) in (
            sorted(dead.name(w) for w in ("fabric", "n1", "p1")), [])  # [] if a parallel clean got it first
        assert not dead.namespaces() and not dead.record.exists()
        assert netns.exists(foreign) and netns.exists(lookalike) and netns.exists(live.name("n1"))
        links = subprocess.run(["ip", "-n", foreign, "-o", "link"], capture_output=True, text=True).stdout
        assert "enl-a1b2c3-x" in links
    finally:
        netns.delete(foreign)
        netns.delete(lookalike)
        netns.delete(live.name("n1"))
        live.unregister()


@pytest.mark.netns
def test_a_claim_deleted_twice_is_refused_the_second_time():
    name = f"cl-{uuid.uuid4().hex[:6]}"
    assert enilab("up", "static", "--name", name).returncode == 0
    try:
        assert enilab("pods", "del", "--name", name, "default/web-0").returncode == 0
        first = enilab("claims", "delete", "--name", name, "default/web-0")
        assert first.returncode == 0 and "reclaimed" in first.stdout, first.stderr
        again = enilab("claims", "delete", "--name", name, "default/web-0")
        assert again.returncode == 2 and again.stdout == "" and again.stderr.count("\n") == 1, again
        assert "is gone already" in again.stderr
    finally:
        enilab("down", "--name", name)


@pytest.mark.parametrize("argv", [["run", str(SCENARIOS / "grow-and-shrink.yaml")], ["clean"],
                                  ["up", str(SCENARIOS / "grow-and-shrink.yaml")]])
def test_without_root_the_netns_commands_say_so_and_exit_2(monkeypatch, capsys, argv):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "needs root" in err and "enilab simulate" in err


def test_run_refuses_a_bad_scenario_before_touching_the_kernel(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: {subnets: [{id: a, cidr: nope}]}")
    before = runs.runs_of(os.getpid())  # other sessions make and remove namespaces meanwhile: look at ours
    assert cli.main(["run", str(bad)]) == 2
    assert "field 'cidr'" in capsys.readouterr().err and runs.runs_of(os.getpid()) == before  # no run began
