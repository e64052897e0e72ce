"""The containers backend under abuse: images that are not there, commands that exit, two clusters at once,
a controller killed with -9 and `enilab clean` after it."""
from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from testbed.apps.controller import ClusterFolder, cluster_dir
from testbed.apps.pytest_plugin import EnilabCluster
from testbed.world import runs
from testbed.world.cluster import ClusterError
from tests.containers.helpers import SMALL, enilab, need_engine, nothing_left
from tests.helpers import ROOT

pytestmark = pytest.mark.netns  # as root, and as nobody: podman runs in the user namespace of the run


@pytest.fixture(autouse=True)
def _engine():
    need_engine()


def small(**step) -> dict:
    doc = copy.deepcopy(SMALL)
    doc["steps"][0].update(step)
    return doc


def test_an_image_the_engine_lacks_is_refused_and_leaves_nothing():
    with pytest.raises(ClusterError, match=r"image nosuch/app:1 is not in the engine.*no registry"):
        EnilabCluster(small(image="nosuch/app:1"), backend="containers")
    assert nothing_left(runs.CREATED[-1]) == {}


def test_a_container_that_exits_at_once_is_refused_and_its_ip_goes_back(enilab_cluster):
    c = enilab_cluster(SMALL, backend="containers")
    before = c.state()["nodes"]["node-1"]["bound"]
    exited = r"pod-3: its container \(enilab/busybox:latest\) exited at once with code 1"
    with pytest.raises(ClusterError, match=exited):
        c.step({"op": "create_pods", "node": "node-1", "count": 1, "command": ["false"]})
    state = c.state()
    assert "pod-3" not in state["pods"]
    assert sum(len(e["allocated"]) for e in state["nodes"]["node-1"]["enis"]) == 2
    assert state["nodes"]["node-1"]["bound"] >= before
    assert c.cluster.events.items[-1]["event"] == "Failed"
    assert c.http("pod-1", "pod-2") == "pod-2\n" and c.http("db-1", "pod-1") == "pod-1\n"
    assert c.audit()["ok"]


def test_two_clusters_with_containers_at_once_keep_to_their_own(enilab_cluster):
    a = enilab_cluster(SMALL, backend="containers")
    b = enilab_cluster(SMALL, backend="containers")
    assert a.cluster.backend.engine.endpoint != b.cluster.backend.engine.endpoint
    for c in (a, b):
        assert c.http("pod-1", "pod-2") == "pod-2\n"
        assert c.exec("pod-2", ["hostname"]).stdout == "pod-2\n"
    prefix = a.cluster.backend.run.prefix
    containers = tuple(p["container"] for p in a.state()["pods"].values())
    a.close()
    assert nothing_left(prefix, containers) == {}
    assert b.http("pod-2", "pod-1") == "pod-1\n"


def test_kill_9_of_the_controller_then_clean_removes_its_containers_service_and_namespaces(tmp_path):
    topology = tmp_path / "small.yaml"
    topology.write_text(yaml.safe_dump(SMALL))
    name = f"ctr-kill-{secrets.token_hex(3)}"
    enilab("up", str(topology), "--name", name)  # the file asks for the containers backend itself
    try:
        info = json.loads(enilab("status", "--name", name, "--json").stdout)
        assert info["backend"] == "containers"
        prefix = info["prefix"]
        containers = tuple(p["container"] for p in info["state"]["pods"].values())
        pid = ClusterFolder(name).owner()["pid"]
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.05)
        record = runs.RUN_DIR / "runs" / f"{prefix}.json"
        left = nothing_left(prefix, containers)
        # they outlive the controller, unless another test's `enilab clean` removed the dead run already
        assert len(left.get("processes", ())) > len(containers) or not record.exists()
        out = json.loads(enilab("clean", "--json").stdout)
        assert prefix in out["removed"] or not record.exists()  # the same code, run by another test first
        assert nothing_left(prefix, containers) == {}
    finally:
        enilab("down", "--name", name, check=False)  # a failure before the kill leaves a live controller
        shutil.rmtree(cluster_dir(name), ignore_errors=True)  # the dead controller's socket folder


def test_bench_bringup_reports_containers_beside_namespaces_in_the_same_run():
    from testbed.apps.bench_netns import bench_bringup_containers

    r = bench_bringup_containers(nodes=1, pods_per_node=2)
    assert r["verified_http"] == 2 and r["within_target"]
    assert r["containers"]["ms_per_pod"] > 0 and r["namespaces"]["ms_per_pod"] > 0
    print(f"per pod: containers {r['containers']['ms_per_pod']} ms, namespaces {r['namespaces']['ms_per_pod']} ms")


def test_an_engine_that_does_not_answer_is_a_clear_error_with_exit_2(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    name = f"ctr-nodock-{secrets.token_hex(3)}"
    try:
        out = enilab("up", str(ROOT / "fixtures" / "topologies" / "default.yaml"), "--name", name, "--backend",
                     "containers", check=False)
    finally:
        shutil.rmtree(cluster_dir(name), ignore_errors=True)
    assert out.returncode == 2 and "does not answer as a Docker engine" in out.stderr
    assert "Traceback" not in out.stderr


def test_clean_of_a_run_on_a_shared_engine_removes_its_labelled_containers_even_those_it_never_recorded():
    from testbed.world.engine import open_engine, purge

    need_engine()
    if os.environ.get("DOCKER_HOST"):
        pytest.skip("makes its own podman service as the shared engine; DOCKER_HOST names another")
    folder = Path(tempfile.mkdtemp(prefix="enl-engine-"))  # short: a unix socket's path has 107 bytes
    engine = open_engine(folder / "engine")  # stands in for a DOCKER_HOST engine the run shares
    try:
        image = engine.ensure_default_image()
        prefix = f"enl-{secrets.token_hex(3)}"
        made = [engine.client.containers.create(image, ["true"], name=name, labels={"enilab.run": label})
                for name, label in [(f"{prefix}-p0", prefix), (f"{prefix}-p1", prefix), (f"{prefix}-p2", "enl-000000"),
                                    (f"{prefix}-app", prefix)]]
        record = {"engine": {"kind": "docker-host", "endpoint": engine.endpoint}, "containers": [made[0].id]}
        assert sorted(purge(record, prefix)) == sorted(c.id for c in made[:2])  # the second was never recorded
        left = {c.id for c in engine.client.containers.list(all=True)}
        # another run's is left, and one with the run's label and a name the run never gives
        assert {made[2].id, made[3].id} <= left and not {c.id for c in made[:2]} & left
    finally:
        engine.close()
        shutil.rmtree(folder, ignore_errors=True)
