"""The topology graph of a known scenario, its drawing and its exports (no root: the sim backend)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import networkx as nx
import pytest

from testbed.apps.runner import apply_step
from testbed.observe import topology
from testbed.world.cluster import Cluster
from testbed.world.scenario import load_scenario
from tests.helpers import ROOT, SCENARIOS


def simulated(path) -> Cluster:
    s = load_scenario(path)
    c = Cluster(s.cluster)
    for step in s.steps:
        apply_step(c, step)
    return c


def test_graph_of_subnet_choice_has_the_right_nodes_and_edges():
    c = simulated(SCENARIOS / "subnet-choice.yaml")
    g = topology.build_graph(c)
    kinds = {k: d["kind"] for k, d in g.nodes(data=True)}
    assert sum(v == "subnet" for v in kinds.values()) == 3 and sum(v == "pod" for v in kinds.values()) == 8
    enis = sorted((d["ifname"], d["subnet"], d["table"]) for _, d in g.nodes(data=True) if d["kind"] == "eni")
    assert enis == [("eth1", "subnet-big", 2003), ("eth2", "subnet-twin", 2004), ("eth3", "subnet-big", 2005)]
    for name, pod in c.pods.items():
        assert g.has_edge(f"eni:{pod.eni_id}", f"pod:{name}")
        assert g.nodes[f"pod:{name}"]["ip"] == str(pod.ip)
    assert all(g.has_edge(f"subnet:{d['subnet']}", k) for k, d in g.nodes(data=True) if d["kind"] == "eni")
    assert all(g.has_edge(k, "node:node-1") for k, d in g.nodes(data=True) if d["kind"] == "eni")


def test_hosts_hang_off_their_subnet():
    g = topology.build_graph(simulated(ROOT / "fixtures" / "topologies" / "default.yaml"))
    assert g.has_edge("subnet:subnet-a", "host:db-1") and g.nodes["host:db-1"]["ip"] == "10.0.1.200"


def test_trace_path_follows_the_egress_eni():
    c = simulated(ROOT / "fixtures" / "topologies" / "default.yaml")
    g = topology.build_graph(c)
    trace = {"src": "pod-5", "dst": "db-1", "delivered": True, "egress": "eth2", "table": 2004}
    path = topology.trace_path(g, trace)
    assert path[0] == "pod:pod-5" and g.nodes[path[1]]["ifname"] == "eth2" and path[-1] == "host:db-1"


def test_draw_and_export(tmp_path):
    g = topology.build_graph(simulated(SCENARIOS / "grow-and-shrink.yaml"))
    assert topology.draw(g, tmp_path / "t.png").stat().st_size > 10_000
    assert topology.draw(g, tmp_path / "t.svg").read_text().startswith("<?xml")
    again = nx.read_graphml(topology.export(g, tmp_path / "t.graphml"))
    assert set(again.nodes) == set(g.nodes)
    data = json.loads(topology.export(g, tmp_path / "t.json").read_text())
    assert {n["id"] for n in data["nodes"]} == set(g.nodes)


OUTPUT_BAD = [
    (["--png", "{d}/no/such/folder/t.png"], "does not exist"),
    (["--png", "{d}/t.txt"], "name a .png or .svg file"),
    (["--png", ""], "name a file"),
    (["--png", "{d}/" + "a" * 300 + ".png"], "the limit is 255"),
    (["--graphml", "{d}"], "name a .graphml file"),
    (["--graphml", "{d}/t.xml"], "name a .graphml file"),  # not node-link JSON under another name
    (["--graphml", "/dev/full"], "name a .graphml file"),
    (["--graphml", "{d}/ok.graphml", "--png", "{d}/t.txt"], "name a .png or .svg file"),  # nothing half written
]


@pytest.mark.parametrize(("extra", "message"), OUTPUT_BAD, ids=[" ".join(b[0]) for b in OUTPUT_BAD])
def test_an_output_file_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch, extra,
                                                                          message):
    from testbed.apps import cli
    from testbed.observe import topology

    monkeypatch.setattr(topology, "build_graph", lambda *a: pytest.fail("the work began"))
    assert cli.main(["topology", "default", *[e.format(d=tmp_path) for e in extra]]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("make", "message"), [(os.mkdir, "a folder; name a file in it"),
                                               (os.mkfifo, "not a regular file; name a file to write")],
                         ids=["folder", "fifo"])
def test_an_output_file_onto_a_folder_or_a_fifo_is_refused(tmp_path, capsys, make, message):
    from testbed.apps import cli

    for option, name in (("--png", "t.svg"), ("--graphml", "t.graphml")):
        make(tmp_path / name)
        assert cli.main(["topology", "default", option, str(tmp_path / name)]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.graphml", "t.svg"]


@pytest.mark.parametrize(("extra", "message"), [
    (["default", "--trace", "pod-1", "db-1"],
     "--trace traces on a running cluster, not a simulated file; leave out --trace, or the file 'default'"),
    (["default", "--name", "c"], "--name picks a running cluster, not a simulated file; leave out --name"),
    (["--name", "", "default"], "--name picks a running cluster"),
    ([""], "give a scenario"),  # not taken for the running cluster
], ids=["--trace", "--name", "--name ''", "empty file"])
def test_an_option_of_the_running_cluster_is_refused_with_a_file(capsys, monkeypatch, extra, message):
    from testbed.apps import cli, controller
    from testbed.observe import topology

    monkeypatch.setattr(topology, "build_graph", lambda *a: pytest.fail("the work began"))
    monkeypatch.setattr(controller, "connect", lambda *a: pytest.fail("a running cluster was asked"))
    assert cli.main(["topology", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_the_demo_refuses_a_drawing_it_cannot_write_before_its_cluster_comes_up(tmp_path, capsys, monkeypatch):
    from testbed.apps import cli, demo

    monkeypatch.setattr(demo, "run_demo", lambda *a: pytest.fail("the demo began"))
    assert cli.main(["demo", "--png", str(tmp_path / "x.txt")]) == 2
    assert "--png" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("uid", [0, 1000], ids=["root", "not root"])
def test_the_demo_refuses_a_scenario_whose_probes_it_would_not_report(tmp_path, capsys, monkeypatch, uid):
    """rp-filter-lesson's probes expect packets delivered and dropped: as root the demo ran them and read no
    result, without root it stopped at the first one, halfway. Refused before anything starts, either way."""
    from testbed.apps import cli
    from testbed.world import cluster
    from testbed.world.backends import netns

    monkeypatch.setattr("os.geteuid", lambda: uid)
    monkeypatch.setattr(netns, "NetnsBackend", lambda *a: pytest.fail("the demo began, on namespaces"))
    monkeypatch.setattr(cluster, "Cluster", lambda *a, **k: pytest.fail("the demo began"))
    assert cli.main(["demo", "--topology", "rp-filter-lesson", "--png", str(tmp_path / "t.png")]) == 2
    captured = capsys.readouterr()
    assert ("enilab: error: --topology 'rp-filter-lesson' is a scenario with checks (step 2, probe), which the "
            "demo would not report: give it to `enilab run` (root)") in captured.err
    assert captured.out == "" and list(tmp_path.iterdir()) == []


TOPOLOGY_ON = """
name: on-{backend}
backend: {backend}
cluster:
  subnets: [{{id: subnet-a, cidr: 10.0.1.0/24}}]
  nodes: [{{name: node-1, subnets: [subnet-a], max_enis: 2, ips_per_eni: 5}}]
steps:
  - {{op: create_pods, node: node-1, count: 2}}
"""


@pytest.mark.parametrize("uid", [0, 1000], ids=["root", "not root"])
def test_the_demo_refuses_a_topology_that_asks_for_containers(tmp_path, capsys, monkeypatch, uid):
    """The demo runs on namespaces or the simulator: a file's `backend: containers` was silently dropped."""
    from testbed.apps import cli
    from testbed.world import cluster
    from testbed.world.backends import netns

    path = tmp_path / "c.yaml"
    path.write_text(TOPOLOGY_ON.format(backend="containers"))
    monkeypatch.setattr("os.geteuid", lambda: uid)
    monkeypatch.setattr(netns, "NetnsBackend", lambda *a: pytest.fail("the demo began, on namespaces"))
    monkeypatch.setattr(cluster, "Cluster", lambda *a, **k: pytest.fail("the demo began"))
    assert cli.main(["demo", "--topology", str(path), "--png", str(tmp_path / "t.png")]) == 2
    captured = capsys.readouterr()
    assert "asks for backend: containers" in captured.err and "enilab up" in captured.err
    assert "Traceback" not in captured.err and list(tmp_path.iterdir()) == [path]


def test_the_demo_honours_a_topology_that_asks_for_the_simulator_even_as_root(tmp_path, capsys, monkeypatch):
    from testbed.apps import cli
    from testbed.world.backends import netns

    path = tmp_path / "s.yaml"
    path.write_text(TOPOLOGY_ON.format(backend="sim"))
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(netns, "NetnsBackend", lambda *a: pytest.fail("the demo made namespaces"))
    assert cli.main(["demo", "--topology", str(path), "--png", str(tmp_path / "t.png")]) == 0
    out = capsys.readouterr().out
    assert "the topology asks for backend: sim" in out and "node-1" in out and (tmp_path / "t.png").exists()


def test_up_refuses_a_scenario_whose_probes_it_would_not_report(monkeypatch, capsys):
    """`enilab up` runs a topology's steps in its controller and reports none of a probe's `expect`: a
    scenario with checks belongs to `enilab run`. Refused before root is asked for or a controller starts."""
    import subprocess

    from testbed.apps import cli

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a controller was started"))
    assert cli.main(["up", "rp-filter-lesson"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("enilab: error: 'rp-filter-lesson' is a scenario with checks (step 2, probe), "
                                   "which `enilab up` would not report: give it to `enilab run` (root)")


@pytest.mark.parametrize(("option", "writer", "name"),
                         [("--png", "draw", "t.svg"), ("--graphml", "export", "t.graphml")])
def test_an_output_file_interrupted_midway_is_left_as_it_was(tmp_path, capsys, monkeypatch, option, writer, name):
    """Ctrl-C while the file is written: the old file stays whole, and no half-written file is left."""
    from testbed.apps import cli
    from testbed.observe import topology

    def half_then_interrupted(graph, path, *args, **kwargs):
        Path(path).write_text("<half")
        raise KeyboardInterrupt

    out = tmp_path / name
    out.write_text("old")
    monkeypatch.setattr(topology, writer, half_then_interrupted)
    assert cli.main(["topology", "default", option, str(out)]) == 130
    assert out.read_text() == "old" and list(tmp_path.iterdir()) == [out]


def test_output_files_are_written_whole_with_the_mode_a_new_file_gets(tmp_path, capsys):
    from testbed.apps import cli

    umask = os.umask(0o022)
    try:
        assert cli.main(["topology", "default", "--png", str(tmp_path / "t.svg"),
                         "--graphml", str(tmp_path / "t.graphml")]) == 0
    finally:
        os.umask(umask)
    assert f"drew {tmp_path / 't.svg'}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.graphml", "t.svg"]
    assert (tmp_path / "t.svg").read_text().rstrip().endswith("</svg>")
    assert set(nx.read_graphml(tmp_path / "t.graphml").nodes) >= {"vpc", "host:db-1"}
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o644}


def test_an_output_file_through_a_link_replaces_the_links_target_and_an_old_file_keeps_its_mode(tmp_path, capsys):
    """`--png link.svg`, a link to drawings/t.svg of mode 0640: the drawing is written to the link's target,
    as a plain write would, the link stays a link, and the file keeps its 0640."""
    from testbed.apps import cli

    (tmp_path / "drawings").mkdir()
    target = tmp_path / "drawings" / "t.svg"
    target.write_text("old")
    target.chmod(0o640)
    (tmp_path / "link.svg").symlink_to(target)
    assert cli.main(["topology", "default", "--png", str(tmp_path / "link.svg")]) == 0
    assert (tmp_path / "link.svg").is_symlink() and target.read_text().rstrip().endswith("</svg>")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in (tmp_path / "drawings").iterdir()) == ["t.svg"]  # no temp file left



class Started(Exception):
    """Where a test stops a command: what it was handed is all the test looks at."""


def test_up_hands_a_file_named_like_an_option_to_its_controller_as_a_file(monkeypatch, tmp_path):
    """`enilab up -- -odd.yaml` read the file, then started a controller that took `-odd.yaml` for an option
    ("the following arguments are required: topology")."""
    import shutil
    import subprocess

    from testbed.apps import cli, controller

    started, parsed = [], []
    parse = controller._Parser.parse_args

    def popen(argv, **kwargs):
        started.append(argv)
        raise Started

    def parse_args(self, argv=None):
        parsed.append(parse(self, argv))
        raise Started

    shutil.copy(ROOT / "fixtures" / "topologies" / "default.yaml", tmp_path / "-odd.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(controller.ClusterFolder, "alive", lambda self: False)
    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(controller._Parser, "parse_args", parse_args)
    with pytest.raises(Started):
        cli.main(["up", "--name", "odd", "--", "-odd.yaml"])
    assert started[0][1:3] == ["-m", "testbed.apps.controller"]
    with pytest.raises(Started):
        controller.main(started[0][3:])
    assert (parsed[0].topology, parsed[0].name) == ("-odd.yaml", "odd")
