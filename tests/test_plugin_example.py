"""The pytest plugin and the built-in scenarios as an outside project meets them: the README's example,
copied as a user would, here and from a separate folder against a wheel install; names instead of paths."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from testbed.world import catalog
from testbed.world.scenario import ScenarioError, load_scenario
from tests.helpers import ROOT, build_wheel
from tests.test_schema import ONE_STATE, problems

TOPOLOGY = "default"


@pytest.mark.netns
def test_every_pod_reaches_the_database_by_its_own_eni(enilab_cluster):
    cluster = enilab_cluster(TOPOLOGY, backend="netns")
    cluster.create_pods(3, node="node-2")
    for pod in cluster.running_pods():
        trace = cluster.trace(pod, "db-1").assert_delivered()
        eni = next(e for e in cluster.state()["nodes"][cluster.pod(pod)["node"]]["enis"]
                   if e["id"] == cluster.pod(pod)["eni"])
        trace.assert_egress(eni["ifname"], table=eni["table"])


def test_the_pool_keeps_five_spare_ips(enilab_cluster):
    cluster = enilab_cluster({"cluster": {
        "subnets": [{"id": "subnet-a", "cidr": "10.0.1.0/24"}],
        "nodes": [{"name": "node-1", "subnets": ["subnet-a"], "max_enis": 3, "ips_per_eni": 10}]}}, backend="sim")
    cluster.create_pods(12, node="node-1")
    node = cluster.state()["nodes"]["node-1"]
    assert (node["pods"], node["bound"]) == (12, 17)


def test_a_flaky_cloud_leaks_nothing(enilab_cluster):
    cluster = enilab_cluster("default", backend="sim")
    cluster.faults(throttle=0.3, timeout=0.2, consistency_delay=5)
    cluster.create_pods(4, node="node-1")
    cluster.faults()  # the cloud heals
    cluster.advance(600)
    assert cluster.audit()["ok"]


# -- the built-in catalogue -------------------------------------------------------------------------------
def test_every_fixture_is_a_built_in_and_no_name_is_two_things():
    names = catalog.builtin_names()
    on_disk = {kind: sorted(p.stem for p in (ROOT / "fixtures" / kind).glob("*.yaml")) for kind in catalog.KINDS}
    assert names == on_disk
    assert not set(names["topologies"]) & set(names["scenarios"])


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "/etc/hostname", "topologies", "default.yaml", "",
                                     "scenarios/grow-and-shrink", "DEFAULT", "default\x00"])
def test_only_an_exact_built_in_name_is_looked_up(hostile):
    assert catalog.builtin(hostile) is None


def test_a_name_loads_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_scenario("grow-and-shrink").name == "grow-and-shrink"
    assert load_scenario("static").cluster.mode == "static-ip"


def test_a_path_that_exists_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").write_text("name: mine\ncluster: {subnets: [{id: s, cidr: 10.9.0.0/24}]}\n")
    assert load_scenario("default").name == "mine"


def test_an_unknown_name_is_refused_with_the_built_in_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScenarioError, match=r"grow-and-shrnk: cannot read it .*built-in topologies: default, static"):
        load_scenario("grow-and-shrnk")
    with pytest.raises(ScenarioError, match="cannot read it"):
        load_scenario("missing/grow-and-shrink.yaml")


def _enilab(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.apps.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_cli_takes_names_from_any_directory(tmp_path):
    out = _enilab("simulate", "grow-and-shrink", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["scenario"] == "grow-and-shrink"
    graph = _enilab("topology", "subnet-choice", "--json", cwd=tmp_path)
    assert graph.returncode == 0 and json.loads(graph.stdout)["nodes"]
    bad = _enilab("simulate", "grow-and-shrnk", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "grow-and-shrink" in bad.stderr and "default" in bad.stderr
    assert _enilab("up", "no-such-topology", cwd=tmp_path).returncode == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.netns
def test_enilab_up_takes_a_built_in_name(tmp_path):
    env = {**os.environ, "ENILAB_CLUSTERS_DIR": str(tmp_path / "clusters")}
    up = _enilab("up", "static", "--name", "named", cwd=tmp_path, env=env)
    assert up.returncode == 0, up.stderr
    try:
        claims = _enilab("claims", "list", "--json", cwd=tmp_path, env=env)
        assert claims.returncode == 0 and "default/web-0" in json.loads(claims.stdout)
        status = _enilab("status", "--json", cwd=tmp_path, env=env)
        assert problems(ONE_STATE, json.loads(status.stdout)["state"]) == []
    finally:
        assert _enilab("down", "--name", "named", cwd=tmp_path, env=env).returncode == 0


# -- the README's example, from a wheel, in a project of its own --------------------------------------------
def _readme_example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```$", (ROOT / "README.md").read_text(), re.M | re.S)
    example = [b for b in blocks if "enilab_cluster" in b]
    assert len(example) == 1, "the README should have one copyable pytest example"
    return example[0]


def test_the_readme_example_is_the_one_tested_here():
    example = _readme_example()
    assert f'TOPOLOGY = "{TOPOLOGY}"' in example
    for test in re.findall(r"^def (test_\w+)", example, re.M):
        assert test in globals(), f"{test} of the README is not tested here"


IMPORT_EVERY_MODULE = """
import importlib, importlib.util, pkgutil, sys
import eni_core, testbed
for package in (eni_core, testbed):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
assert "pyroute2" not in sys.modules, "enilab imported pyroute2"
print("pyroute2", "absent" if importlib.util.find_spec("pyroute2") is None else "installed")
"""


def test_the_readme_example_passes_against_a_wheel_in_a_separate_project(tmp_path):
    """Build the wheel, install it into a fresh venv with pytest, copy the README's example into an empty
    folder and run it there: nothing of this checkout is importable, only what the wheel ships. Every module
    imports there without the dev extra (pyroute2 is the tests' independent reader, not a dependency)."""
    wheel = build_wheel(tmp_path)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel), "pytest"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_network.py").write_text(_readme_example())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS")}
    where = subprocess.run([str(python), "-c", "import testbed; print(testbed.__file__)"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=60)
    assert where.stdout.startswith(str(env_dir)), f"testbed came from {where.stdout or where.stderr}"
    every_module = subprocess.run([str(python), "-c", IMPORT_EVERY_MODULE], cwd=project, env=env,
                                  capture_output=True, text=True, timeout=300)
    assert every_module.returncode == 0, every_module.stderr
    assert "pyroute2 absent" in every_module.stdout, "the wheel pulled in pyroute2, a test-only dependency"
    cli = subprocess.run([str(env_dir / "bin" / "enilab"), "simulate", "grow-and-shrink", "--json"], cwd=project,
                         env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and json.loads(cli.stdout)["scenario"] == "grow-and-shrink", cli.stderr
    run = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=600)
    rootless = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "true"], capture_output=True)
    expected = "2 passed" if os.geteuid() == 0 or rootless.returncode == 0 else "1 passed, 1 skipped"
    assert run.returncode == 0 and expected in run.stdout, run.stdout + run.stderr
