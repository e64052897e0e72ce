"""The pytest plugin as CI users meet it: fixtures at every scope, cleanup on failure, and the root marker
that skips with a reason locally but fails under ENILAB_REQUIRE_ROOT=1."""
from __future__ import annotations

import os

import pytest

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

@pytest.mark.root
def test_needs_root():
    pass
"""


def test_fixtures_at_every_scope(pytester):
    pytester.makepyfile(EXAMPLE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "not needs_root")
    result.assert_outcomes(passed=4)


def test_root_marker_skips_with_a_reason_when_not_root(pytester, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("ENILAB_REQUIRE_ROOT", raising=False)
    pytester.makepyfile(EXAMPLE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "needs_root", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs root and network namespaces*"])


def test_root_marker_fails_under_enilab_require_root(pytester, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("ENILAB_REQUIRE_ROOT", "1")
    pytester.makepyfile(EXAMPLE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "needs_root")
    result.assert_outcomes(errors=1)  # failed in setup: reported, and the run exits non-zero
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*ENILAB_REQUIRE_ROOT=1 but not root*"])


@pytest.mark.root
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


@pytest.mark.root
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
