"""Invalid scenarios: a clear message naming the step and field, exit 2, no traceback, nothing run."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from testbed.world.scenario import ScenarioError, parse_scenario
from tests.helpers import ROOT

BASE = """
name: t
cluster:
  subnets: [{id: subnet-a, cidr: 10.0.1.0/24}]
  nodes: [{name: node-1, subnets: [subnet-a], max_enis: 2, ips_per_eni: 10}]
steps: []
"""


def with_steps(*steps: str) -> str:
    return BASE.replace("steps: []", "steps:\n" + "\n".join(f"  - {s}" for s in steps))


CASES = [
    (with_steps("{op: explode}"), "step 1: unknown op 'explode'"),
    (with_steps("{op: create_pods, node: node-9, count: 1}"), "step 1 (create_pods): field 'node': unknown node"),
    (with_steps("{op: create_pods, node: node-1, count: -3}"), "field 'count' must be between 1"),
    (with_steps("{op: create_pods, node: node-1, count: 2, colour: red}"), "unknown field 'colour'"),
    (with_steps("{op: create_pods, node: node-1, count: 1}", "{op: delete_pods, names: [pod-7]}"),
     "step 2 (delete_pods): field 'names': unknown pod 'pod-7'"),
    (with_steps("{op: create_pods, node: node-1, count: 1}", "{op: delete_pods, count: 5}"),
     "step 2 (delete_pods): field 'count': 5 pods to delete but only 1 exist"),
    (with_steps("{op: advance, seconds: -1}"), "step 1 (advance): field 'seconds' must be above 0"),
    (with_steps("{op: advance}"), "field 'seconds' is required"),
    (with_steps("{op: delete_node, node: node-1}", "{op: create_pods, node: node-1, count: 1}"),
     "step 2 (create_pods): field 'node': unknown node 'node-1'"),
    (with_steps("{op: add_node, name: node-2, subnets: [subnet-z], max_enis: 1, ips_per_eni: 2}"),
     "unknown subnet subnet-z"),
    (with_steps("{op: set_node, node: node-1, max_enis: 0}"), "field 'max_enis' must be between 1"),
    (with_steps("{op: create_pod, name: web-0, node: node-1, static: true}"), "static IPs need cluster.mode"),
    (BASE.replace("10.0.1.0/24", "10.0.1.0/33"), "cluster.subnets[1]: field 'cidr' is not an IPv4 CIDR"),
    (BASE.replace("10.0.1.0/24", "10.0.0.0/8"), "has prefix /8"),
    (BASE.replace("[subnet-a], max", "[subnet-q], max"), "cluster.nodes[1]: field 'subnets': unknown subnet"),
    (BASE.replace("max_enis: 2", "max_enis: two"), "field 'max_enis' must be a whole number"),
    (BASE.replace("name: t", "name: t\ncolour: red"), "scenario: unknown field 'colour'"),
    (BASE.replace("subnets: [{id", "pool: {min_prebound: 6, max_prebound: 2}\n  subnets: [{id"),
     "min_prebound (6) is above max_prebound (2)"),
    (BASE.replace("subnets: [{id", "static: {claim_expired_duration: 60}\n  subnets: [{id"),
     "at least 300 seconds"),
    (BASE.replace("subnets: [{id", "faults: {throttle: 0.6, transient: 0.5}\n  subnets: [{id"), "add up to"),
    (BASE.replace("subnets: [{id", "faults: {latency: [1]}\n  subnets: [{id"), "cluster.faults.latency: give"),
    (BASE.replace("subnets: [{id", "faults: {latency: {min: 2, max: 1}}\n  subnets: [{id"), "min (2) is above max"),
    (BASE.replace("steps: []", "steps: {op: advance}"), "scenario: field 'steps' must be a list, not dict"),
    (BASE.replace("[{id: subnet-a, cidr: 10.0.1.0/24}]",
                  "[{id: subnet-a, cidr: 10.0.1.0/24}, {id: b, cidr: 10.0.2.0/24}, {id: c, cidr: 10.0.0.0/16}]"),
     "cluster.subnets[3]: field 'cidr': 10.0.0.0/16 overlaps subnet-a (10.0.1.0/24)"),
    (BASE.replace("[{id: subnet-a, cidr: 10.0.1.0/24}]",
                  "[{id: big, cidr: 10.0.0.0/16}, {id: subnet-a, cidr: 10.0.1.0/24}]"),
     "cluster.subnets[2]: field 'cidr': 10.0.1.0/24 overlaps big (10.0.0.0/16)"),
    (BASE.replace("cidr: 10.0.1.0/24}", "cidr: 10.0.1.0/24, hosts: [{name: db, ip: 10.0.1.255}]}"),
     "cluster.subnets[1].hosts[1]: field 'ip': 10.0.1.255 is not a usable address of subnet-a (10.0.1.0/24: "
     "10.0.1.2 to 10.0.1.254)"),
    (with_steps("{op: create_pods, node: node-1, count: 2}", "{op: create_pods, names: [pod-1]}"),
     "step 2 (create_pods): field 'names': pod pod-1 exists already"),
]


@pytest.mark.parametrize("text,message", CASES, ids=lambda v: str(v)[:40])
def test_invalid_scenario_names_the_place_and_field(text, message):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(yaml.safe_load(text), "s.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("s.yaml: ")


def test_automatic_names_skip_names_in_use():
    text = with_steps("{op: create_pods, node: node-1, names: [pod-2]}", "{op: create_pods, count: 2}",
                      "{op: delete_pods, names: [pod-1, pod-3]}", "{op: delete_pods, names: [pod-4]}")
    with pytest.raises(ScenarioError, match=r"step 4 .* unknown pod 'pod-4'"):
        parse_scenario(yaml.safe_load(text), "s.yaml")


@pytest.mark.parametrize("text,message", [
    ("cluster: [unclosed", "not valid YAML at line 2, column 1"),
    (with_steps("{op: explode}"), "unknown op 'explode'"),
    (with_steps("{op: probe, from: pod-1, to: db-1}"), "no pod, host or IP"),
])
def test_simulate_exits_2_with_a_message_and_no_traceback(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(textwrap.dedent(text))
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "simulate", str(f), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_simulate_missing_file_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "simulate", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "cannot read it" in proc.stderr and "Traceback" not in proc.stderr


def test_a_broken_link_that_no_built_in_is_named_after_says_what_is_wrong_with_it(tmp_path):
    """A bare word that is a broken link (a loop, or dangling) and no built-in's name: its own error says what
    is wrong, not "no such file, nor a built-in name". A broken link does not hide a built-in (a path that
    exists wins over a name; this one does not exist)."""
    os.symlink("loop", tmp_path / "loop")
    os.symlink("nowhere.yaml", tmp_path / "grow-and-shrink")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "simulate", "loop"], cwd=tmp_path,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "Too many levels of symbolic links" in proc.stderr, proc.stderr
    assert "built-in" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "simulate", "grow-and-shrink"], cwd=tmp_path,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def test_netns_only_ops_are_refused_by_simulate(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(with_steps("{op: create_pods, node: node-1, count: 1}",
                            "{op: set_sysctl, node: node-1, key: net.ipv4.conf.all.rp_filter, value: 1}"))
    argv = [sys.executable, "-m", "testbed.apps.cli", "simulate", str(f)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 2 and "step 2 (set_sysctl): needs real packets" in proc.stderr


@pytest.mark.parametrize("kind,message", [("fifo", "not a regular file"), ("folder", "a folder"),
                                          ("device", "not a regular file")])
def test_a_fifo_a_folder_or_a_device_is_refused_at_once(tmp_path, kind, message):
    """A FIFO would hold the command waiting for a writer for ever; a device is no scenario either."""
    path = tmp_path / "s.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "simulate", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and f"{path}: {message}; give a scenario's YAML file" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name,content,message", [
    ("bad\x00name.yaml", None, "is not a usable file name"),
    ("binary.yaml", bytes(range(256)), "not a text file"),
])
def test_unusable_files_are_clear_errors(tmp_path, capsys, name, content, message):
    from testbed.apps import cli

    path = tmp_path / name.replace("\x00", "") if content is not None else str(tmp_path / name)
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["simulate", str(path)]) == 2
    assert message in capsys.readouterr().err
