"""What the containers backend accepts, checked without root: image names, commands, the `backend` field,
the default image's file system, and what `clean` may touch of a run record."""
from __future__ import annotations

import io
import os
import tarfile

import pytest

from testbed.world.engine import PodmanService, busybox_tar, check_image_name, purge
from testbed.world.scenario import ScenarioError, parse_scenario
from tests.containers.helpers import SMALL, enilab


@pytest.mark.parametrize("name, canonical", [
    ("enilab/busybox", "enilab/busybox:latest"), ("team/app:1.2", "team/app:1.2"),
    ("registry.local:5000/team/app:v1", "registry.local:5000/team/app:v1"), ("busybox", "busybox:latest")])
def test_image_names_are_docker_references_with_latest_added(name, canonical):
    assert check_image_name(name) == canonical


@pytest.mark.parametrize("name", ["Bad Image!", "", "team//app", "UPPER/app", "../../etc", "app:", 7, "a" * 300])
def test_a_bad_image_name_is_refused(name):
    with pytest.raises(ValueError, match="is not an image name"):
        check_image_name(name)


def test_create_pods_takes_image_and_command_and_the_file_names_its_backend():
    doc = {**SMALL, "steps": [{"op": "create_pods", "count": 1, "image": "team/app", "command": "httpd -f -p 80"}]}
    s = parse_scenario(doc)
    assert s.backend == "containers"
    assert s.steps[0]["image"] == "team/app:latest" and s.steps[0]["command"] == ["httpd", "-f", "-p", "80"]


@pytest.mark.parametrize("step, says", [
    ({"image": "Bad Image!"}, "field 'image'"), ({"command": []}, "field 'command'"),
    ({"command": [1, 2]}, "field 'command'"), ({"command": "sh -c 'unclosed"}, "field 'command'")])
def test_bad_image_or_command_in_a_step_is_refused_naming_the_field(step, says):
    with pytest.raises(ScenarioError, match=says):
        parse_scenario({**SMALL, "steps": [{"op": "create_pods", "count": 1, **step}]})


def test_enilab_up_refuses_a_bad_image_name_with_exit_2_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: {subnets: [{id: s, cidr: 10.0.1.0/24}], nodes: [{name: n, subnets: [s], max_enis: 1, "
                   "ips_per_eni: 2}]}\nsteps: [{op: create_pods, count: 1, image: 'Bad Image!'}]\n")
    for cmd in (["up", str(bad), "--backend", "containers"], ["run", str(bad), "--backend", "containers"]):
        out = enilab(*cmd, check=False)
        assert out.returncode == 2 and "'Bad Image!' is not an image name" in out.stderr
        assert "Traceback" not in out.stderr


def test_an_image_on_the_namespace_backend_is_refused_before_anything_runs(tmp_path):
    f = tmp_path / "img.yaml"
    f.write_text("cluster: {subnets: [{id: s, cidr: 10.0.1.0/24}], nodes: [{name: n, subnets: [s], max_enis: 1, "
                 "ips_per_eni: 2}]}\nsteps: [{op: create_pods, count: 1, image: team/app}]\n")
    out = enilab("up", str(f), "--backend", "netns", check=False)
    assert out.returncode == 2 and "need pods that are containers" in out.stderr


def test_an_unknown_backend_field_is_refused():
    with pytest.raises(ScenarioError, match="must be one of sim, netns, containers"):
        parse_scenario({**SMALL, "backend": "docker"})


def test_the_default_image_is_busybox_with_its_applets_and_a_folder_to_serve():
    with tarfile.open(fileobj=io.BytesIO(busybox_tar())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode & 0o111
    assert members["bin/httpd"].issym() and members["bin/httpd"].linkname == "busybox"
    assert members["www"].isdir() and members["tmp"].isdir()


def test_clean_never_removes_a_state_folder_not_named_after_the_run(tmp_path):
    folder = tmp_path / "precious"
    folder.mkdir()
    record = {"engine": {"kind": "podman", "state": str(folder), "pid": None}, "containers": []}
    purge(record, "enl-abcdef")
    assert folder.exists()
    purge({"engine": {"kind": "podman", "state": "relative/enl-abcdef"}}, "enl-abcdef")  # not absolute: ignored


FAKE_PODMAN = """#!/bin/sh
# a podman whose API service only listens on its socket (the last argument, unix://PATH), 0600 as podman's
for last; do :; done
case "$last" in unix://*) exec python3 -c 'import os, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o600); time.sleep(60)' \
    "${last#unix://}";; esac
"""


def test_a_podman_service_keeps_its_state_private_whatever_the_umask(tmp_path, monkeypatch):
    """The run's podman state (folders, containers.conf, the service's log) is 0700/0600 like every other
    piece of enilab's state, even under umask 000."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("podman", "runc"):
        (tools / tool).write_text(FAKE_PODMAN)
        (tools / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    state = tmp_path / "runs" / "enl-abcdef"
    service = PodmanService(state)
    old = os.umask(0)
    try:
        service.start()
    finally:
        os.umask(old)
    try:
        made = [state, *state.rglob("*")]
        assert {p.name for p in made} >= {"root", "runroot", "tmp", "net.d", "containers.conf", "service.log"}
        loose = {str(p.relative_to(tmp_path)): oct(p.lstat().st_mode & 0o777) for p in made
                 if p.lstat().st_mode & 0o077}
        assert not loose
    finally:
        service.stop()
    assert not state.exists()


@pytest.mark.parametrize("labels, removed", [({"enilab.run": "enl-abc123", "enilab.pod": "web"}, True),
                                             ({"enilab.run": "enl-other1", "enilab.pod": "web"}, False), ({}, False)])
def test_a_pod_whose_container_cannot_start_removes_only_a_container_of_its_own(labels, removed):
    """The engine refused the pod's container. The container by that name is removed only if it carries this
    run's and this pod's labels: on a shared engine the name may be someone else's, which is why it failed."""
    from testbed.world.backends.containers import ContainersBackend

    class Found:
        def __init__(self) -> None:
            self.labels, self.removed = labels, False

        def remove(self, force: bool) -> None:
            self.removed = True

    found = Found()

    class Containers:
        def run(self, *args, **kwargs):
            raise RuntimeError("409 Conflict: the name is in use")

        def get(self, name):
            return found

    class Run:
        prefix = "enl-abc123"

        def reserve(self, name: str) -> str:
            return f"{self.prefix}-{name}"

    backend = object.__new__(ContainersBackend)
    backend.workloads, backend.default_image, backend._pod_seq, backend.run = {}, "busybox:latest", 0, Run()
    backend.engine = type("Engine", (), {"client": type("Client", (), {"containers": Containers()})()})()
    with pytest.raises(RuntimeError, match="409"):
        backend.pod_up("node-1", "web", None)
    assert found.removed is removed


def test_the_runs_cni_plugin_folder_is_private_whatever_the_umask(tmp_path, monkeypatch):
    from testbed.world.backends import containers
    from testbed.world.backends.netns import NetnsBackend

    class Engine:
        def ensure_default_image(self) -> str:
            return "enilab/busybox:latest"

    def netns_init(self, run=None) -> None:
        self.run = run

    monkeypatch.setattr(NetnsBackend, "__init__", netns_init)
    monkeypatch.setattr(containers, "own_state", lambda prefix: tmp_path / "runs" / prefix)
    monkeypatch.setattr(containers, "open_engine", lambda state: Engine())
    monkeypatch.setattr(containers.ContainersBackend, "_record", lambda self: None)
    run = type("Run", (), {"prefix": "enl-abcdef"})()
    old = os.umask(0)
    try:
        backend = containers.ContainersBackend(run)
    finally:
        os.umask(old)
    backend._engine_finalizer.detach()
    folder = backend.plugin.parent
    assert folder == tmp_path / "runs" / "enl-abcdef" / "cni-bin" and folder.stat().st_mode & 0o777 == 0o700
