"""The pytest plugin as CI users meet it: fixtures at every scope, cleanup on failure, the netns marker that
runs rootless where user namespaces allow, skips with a reason where nothing does and fails under
ENILAB_REQUIRE_NETNS=1, and the host_root marker."""
from __future__ import annotations

import os
import re

import pytest

from eni_core import userns
from testbed.apps import pytest_plugin
from tests.helpers import ROOT

pytest_plugins = ["pytester"]

EXAMPLE = """
import pytest

TOPO = {"cluster": {"subnets": [{"id": "a", "cidr": "10.0.1.0/24"}],
                    "nodes": [{"name": "node-1", "subnets": ["a"], "max_enis": 2, "ips_per_eni": 4}]}}

@pytest.fixture(scope="module")
def shared(enilab_module_cluster):
    return enilab_module_cluster(TOPO, backend="sim")

def test_function_scope(enilab_cluster):
    c = enilab_cluster(TOPO, backend="sim")
    c.create_pods(2, node="node-1")
    assert c.state()["nodes"]["node-1"]["pods"] == 2

def test_module_scope_is_shared_a(shared):
    shared.create_pods(1, node="node-1")

def test_module_scope_is_shared_b(shared):
    assert shared.state()["nodes"]["node-1"]["pods"] == 1

def test_session_scope(enilab_session_cluster):
    assert enilab_session_cluster(TOPO, backend="sim").backend == "sim"

@pytest.mark.netns
def test_needs_namespaces():
    pass
"""


def test_fixtures_at_every_scope(pytester):
    pytester.makepyfile(EXAMPLE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "not needs_namespaces")
    result.assert_outcomes(passed=4)


@pytest.fixture
def no_namespaces_at_all(monkeypatch):
    """A normal user on a kernel that refuses user namespaces: neither root nor rootless is possible."""
    def refuse() -> None:
        raise userns.RootlessError("user namespaces are not available to this user (Operation not permitted)")

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(userns, "inside", lambda: False)
    monkeypatch.setattr(userns, "enter", refuse)
    monkeypatch.setattr(pytest_plugin, "_entered", {})
    monkeypatch.setattr(pytest_plugin, "_process", {"xdist_worker": False})  # this test may run in one
    for variable in ("ENILAB_REQUIRE_ROOT", "ENILAB_REQUIRE_NETNS", "ENILAB_ROOTLESS", pytest_plugin.REFUSED_VARIABLE):
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize("marker", ["netns", "root"])
def test_a_netns_test_is_skipped_with_the_reason_only_without_root_and_user_namespaces(pytester, no_namespaces_at_all,
                                                                                       marker):
    pytester.makepyfile(EXAMPLE.replace("@pytest.mark.netns", f"@pytest.mark.{marker}"))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "needs_namespaces", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs network namespaces: no user namespace for the netns tests: user namespaces "
                                 "are not available to this user*"])
    if marker == "root":
        result.stdout.fnmatch_lines(["*the `root` marker is now `netns`*"])


@pytest.mark.parametrize("variable", ["ENILAB_REQUIRE_NETNS", "ENILAB_REQUIRE_ROOT"])
def test_a_netns_test_fails_instead_when_ci_requires_namespaces(pytester, no_namespaces_at_all, monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    pytester.makepyfile(EXAMPLE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "needs_namespaces")
    result.assert_outcomes(errors=1)  # failed in setup: reported, and the run exits non-zero
    assert result.ret != 0
    result.stdout.fnmatch_lines([f"*{variable}=1 but this test cannot have network namespaces: no user namespace*"])


def test_a_netns_cluster_without_the_marker_says_why_it_cannot_be(pytester, no_namespaces_at_all):
    pytester.makepyfile(EXAMPLE + """
def test_unmarked(enilab_cluster):
    enilab_cluster(TOPO, backend="netns")

def test_auto_falls_back_to_the_simulator(enilab_cluster):
    assert enilab_cluster(TOPO).backend == "sim"
""")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "unmarked or auto", "-rs")
    result.assert_outcomes(skipped=1, passed=1)
    result.stdout.fnmatch_lines(["*needs network namespaces: no user namespace*"])


HOST_ROOT = """
import pytest

@pytest.mark.host_root("it starts podman as root")
def test_podman():
    pass
"""


@pytest.mark.parametrize(("euid", "inside", "require", "outcome"), [
    (1000, False, "", "skipped"), (0, True, "", "skipped"), (0, True, "1", "errors"), (0, False, "1", "passed")])
def test_a_host_root_test_runs_only_as_root_of_the_host(pytester, monkeypatch, euid, inside, require, outcome):
    """Root inside a user namespace is not root of the host: a host_root test is skipped there with its reason,
    and fails instead under ENILAB_REQUIRE_ROOT=1 (ENILAB_REQUIRE_NETNS=1 alone, the rootless pass, skips it)."""
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.setattr(userns, "inside", lambda: inside)
    monkeypatch.setenv("ENILAB_REQUIRE_NETNS", "1")
    monkeypatch.setenv("ENILAB_REQUIRE_ROOT", require)
    pytester.makepyfile(HOST_ROOT)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(**{outcome: 1})
    if outcome != "passed":
        result.stdout.fnmatch_lines(["*needs root of the host (it starts podman as root)*"])


ROOTLESS_SESSION = """
import os
import re
import pytest
from eni_core import userns

@pytest.mark.netns
def test_a_cluster_in_the_sessions_user_namespace(enilab_cluster):
    c = enilab_cluster({topology!r}, backend="netns")
    c.create_pods(2, node="node-1")
    for pod in c.running_pods():
        c.trace(pod, "db-1").assert_delivered()
    assert userns.inside() and os.geteuid() == 0
    open(os.environ["PREFIXES"] + "/" + os.environ.get("PYTEST_XDIST_WORKER", "main"), "w").write(
        c.cluster.backend.run.prefix)

@pytest.mark.parametrize("n", range(3))
def test_the_others_run_inside_too(n):
    assert userns.inside()
"""


@pytest.mark.netns
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_rootless_session_builds_its_clusters_in_a_user_namespace_of_its_own(pytester, tmp_path, monkeypatch,
                                                                                xdist):
    """ENILAB_ROOTLESS=1 (as a normal user: by itself) moves the session, xdist workers included, into one
    user namespace before any test runs; the clusters' namespaces never appear in the host's /run/netns."""
    from eni_core import netns

    prefixes = tmp_path / "prefixes"
    prefixes.mkdir()
    monkeypatch.setenv("PREFIXES", str(prefixes))
    monkeypatch.setenv("ENILAB_ROOTLESS", "1")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    pytester.makepyfile(ROOTLESS_SESSION.format(topology=str(ROOT / "fixtures" / "topologies" / "default.yaml")))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *xdist)
    result.assert_outcomes(passed=4)
    (prefix,) = [p.read_text() for p in prefixes.iterdir()]
    assert not [n for n in netns.list_names() if n.startswith(prefix)]


@pytest.mark.netns
def test_a_failing_test_still_tears_its_cluster_down(pytester):
    from eni_core import netns

    pytester.makepyfile(f"""
def test_boom(enilab_cluster):
    c = enilab_cluster({str(ROOT / 'fixtures' / 'topologies' / 'default.yaml')!r}, backend="netns")
    open("prefix.txt", "w").write(c.cluster.backend.run.prefix)
    raise AssertionError("boom")
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    prefix = (pytester.path / "prefix.txt").read_text()
    assert not [n for n in netns.list_names() if n.startswith(prefix)]


@pytest.mark.netns
def test_leftovers_of_a_killed_worker_are_removed_by_the_next_session(pytester):
    import signal
    import subprocess
    import sys

    from eni_core import netns

    script = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from testbed.world.backends.netns import NetnsBackend
b = NetnsBackend()
print(b.run.prefix, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    prefix = proc.stdout.strip()
    assert any(n.startswith(prefix) for n in netns.list_names())  # the killed run left its fabric
    pytester.makepyfile("def test_nothing():\n    pass\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert not any(n.startswith(prefix) for n in netns.list_names())


SIM_TOPOLOGY = {"cluster": {"subnets": [{"id": "a", "cidr": "10.0.1.0/24"}],
                            "nodes": [{"name": "node-1", "subnets": ["a"], "max_enis": 2, "ips_per_eni": 4}]},
                "steps": [{"op": "create_pods", "count": 2}]}
STEP_BAD = [
    ({"op": "advance", "seconds": float("nan")}, "step (advance): field 'seconds' must be a number, not nan"),
    ({"op": "advance", "seconds": -5}, "field 'seconds' must be above 0"),
    ({"op": "create_pods", "count": 10 ** 9}, "field 'count' must be between 1 and 10000"),
    ({"op": "create_pods", "count": -3}, "field 'count' must be between 1 and 10000"),
    ({"op": "create_pods", "names": ["../../etc/x"]}, "'../../etc/x' is not a pod name"),
    ({"op": "add_node", "name": "../n", "subnets": ["a"], "max_enis": 1, "ips_per_eni": 1}, "is not a DNS label"),
    ({"op": "set_node", "node": "node-1", "max_enis": 10 ** 6}, "field 'max_enis' must be between 1 and 32"),
    ({"op": "create_pods", "count": 1, "bogus": 1}, "unknown field 'bogus'"),
    ({"op": "create_pods"}, "give 'count' or 'names'"),
    ({"op": "delete_pods"}, "give exactly one of 'names' and 'count'"),
    ({"op": "create_pods", "count": 1, "image": "alpine"}, "'image' and 'command' need pods that are containers"),
    ({"op": "nope"}, "step: unknown op 'nope'"),
]


@pytest.mark.parametrize(("step", "message"), STEP_BAD, ids=[str(s) for s, _ in STEP_BAD])
def test_a_step_is_checked_as_a_scenario_files_are_and_changes_nothing_when_refused(step, message):
    from testbed.world.scenario import ScenarioError

    c = pytest_plugin.EnilabCluster(SIM_TOPOLOGY, backend="sim")
    try:
        before = c.state()
        with pytest.raises(ScenarioError, match=re.escape(message)):
            c.step(step)
        assert c.state() == before
    finally:
        c.close()


def test_the_shortcuts_are_checked_as_their_steps_are():
    from testbed.world.scenario import ScenarioError

    c = pytest_plugin.EnilabCluster(SIM_TOPOLOGY, backend="sim")
    try:
        before = c.state()
        assert c.create_pods(0) == []  # none more: `create_pods(12 - len(pods))` once there are 12, as labs do
        for call in (lambda: c.advance(float("nan")), lambda: c.advance(float("inf")), lambda: c.create_pods(-1),
                     lambda: c.create_pods(0.0), lambda: c.create_pods(False),
                     lambda: c.create_pods(1, node="../n"), lambda: c.delete_pod("../x")):
            with pytest.raises(ScenarioError):
                call()
        assert c.state() == before and c.cluster.clock.now() == 0  # a NaN no longer stops the clock for good
        assert c.create_pods(1, node="node-1") == ["pod-3"]
        c.delete_pod("pod-1")
        c.advance(30)
        assert c.running_pods() == ["pod-2", "pod-3"] and c.cluster.clock.now() == 30
    finally:
        c.close()


def test_a_topology_its_backend_cannot_run_is_refused_before_anything_is_made(monkeypatch):
    from testbed.world import cluster
    from testbed.world.scenario import ScenarioError

    monkeypatch.setattr(cluster, "Cluster", lambda *a, **k: pytest.fail("a cluster was made"))
    steps = [{"op": "create_pods", "count": 1, "image": "alpine"}]
    with pytest.raises(ScenarioError, match="step 1 \\(create_pods\\): 'image' and 'command' need pods that are"):
        pytest_plugin.EnilabCluster({**SIM_TOPOLOGY, "steps": steps}, backend="sim")


def test_faults_are_checked_as_a_scenarios_are_but_may_fail_every_call_and_an_unknown_pod_is_a_cluster_error():
    from testbed.errors import UserError
    from testbed.world.scenario import ScenarioError

    c = pytest_plugin.EnilabCluster(SIM_TOPOLOGY, backend="sim")
    try:
        healthy = c.cluster.vpc.faults
        for rates, says in [({"latency": (0, 1e9)}, "must be at least 0 and at most 10"),
                            ({"throttle": float("nan")}, "must be a number, not nan"),
                            ({"throttle": 0.6, "timeout": 0.6}, "add up to 1.2"),
                            ({"thrttle": 0.5}, "unknown field 'thrttle'")]:
            with pytest.raises(ScenarioError, match=re.escape(says)):
                c.faults(**rates)
            assert c.cluster.vpc.faults is healthy  # a refused call changes nothing
        c.faults(insufficient_addresses=1.0, seed=3)  # every call: what lab 10 does on purpose
        assert c.cluster.vpc.faults.insufficient_addresses == 1.0
        c.faults(latency=[0.001, 0.002])
        assert c.cluster.vpc.faults.latency == (0.001, 0.002)
        with pytest.raises(UserError, match="unknown pod 'nope'; pods: pod-1, pod-2"):
            c.pod("nope")
    finally:
        c.close()
