"""The containers backend end to end: the default topology with every pod a container (an engine of its own,
podman's API service, unless DOCKER_HOST names one), driven through the CLI as a user would."""
from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from tests.containers.helpers import enilab, need_engine, nothing_left
from tests.helpers import ROOT

pytestmark = pytest.mark.netns  # as root, and as nobody: podman runs in the user namespace of the run
DEFAULT = str(ROOT / "fixtures" / "topologies" / "default.yaml")


class Lab:
    def __init__(self) -> None:
        self.name = f"ctr-{secrets.token_hex(3)}"
        enilab("up", DEFAULT, "--name", self.name, "--backend", "containers")
        info = self.status()
        self.prefix = info["prefix"]

    def status(self) -> dict:
        return json.loads(enilab("status", "--name", self.name, "--json").stdout)

    def exec(self, pod: str, *argv: str, check: bool = False) -> subprocess.CompletedProcess:
        return enilab("exec", "--name", self.name, pod, "--", *argv, check=check)

    def close(self) -> None:
        enilab("down", "--name", self.name, check=False)


@pytest.fixture(scope="module")
def lab():
    need_engine()
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def test_exec_fetches_another_pods_name_over_http(lab):
    pods = lab.status()["state"]["pods"]
    out = lab.exec("pod-1", "wget", "-qO-", f"http://{pods['pod-7']['ip']}/", check=True)
    assert out.stdout == "pod-7\n"


def test_every_pod_serves_its_name_to_every_pod_and_to_the_vpc_hosts(lab):
    info = lab.status()
    pods = {name: p["ip"] for name, p in info["state"]["pods"].items()}
    assert len(pods) == 9
    loop = "; ".join(f"echo {name}=$(timeout 5 wget -qO- http://{ip}/)" for name, ip in pods.items())
    for src in pods:
        lines = lab.exec(src, "sh", "-c", loop, check=True).stdout.splitlines()
        assert lines == [f"{name}={name}" for name in pods], f"from {src}: {lines}"
    for i, host in enumerate(("db-1", "cache-1"), 1):
        for name, ip in pods.items():
            got = subprocess.run(["nsenter", f"--net=/run/netns/{lab.prefix}-h{i}", "busybox", "timeout", "5",
                                  "busybox", "wget", "-qO-", f"http://{ip}/"], capture_output=True, text=True)
            assert got.stdout == f"{name}\n", f"{host} -> {name}: {got.stderr}"


def test_the_state_names_each_pods_container_and_image(lab):
    info = lab.status()
    assert info["backend"] == "containers"
    for pod in info["state"]["pods"].values():
        assert len(pod["container"]) == 64 and pod["image"] == "enilab/busybox:latest"
        assert pod["container_state"] == "running"
    table = enilab("status", "--name", lab.name).stdout
    assert "pods as containers" in table and "enilab/busybox:latest" in table


def test_exec_passes_the_exit_code_through_and_refuses_what_it_cannot_run(lab):
    assert lab.exec("pod-2", "sh", "-c", "echo out; echo err >&2; exit 7").returncode == 7
    done = lab.exec("pod-2", "sh", "-c", "echo out; echo err >&2")
    assert (done.returncode, done.stdout, done.stderr) == (0, "out\n", "err\n")
    for argv, says in ((["pod-99", "--", "true"], "has no pod 'pod-99'"), (["pod-2"], "say what to run")):
        bad = enilab("exec", "--name", lab.name, *argv, check=False)
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr


def test_trace_works_unchanged_on_container_pods(lab):
    out = enilab("trace", "--name", lab.name, "pod-1", "db-1").stdout
    assert "delivered" in out
    assert enilab("audit", "--name", lab.name).returncode == 0


def test_a_container_killed_from_outside_is_reported_and_del_returns_its_ip(lab):
    import docker

    (pod,) = json.loads(enilab("pods", "add", "--name", lab.name, "--node", "node-2", "--count", "1", "--json").stdout)
    p = lab.status()["state"]["pods"][pod]
    assert lab.exec("pod-1", "wget", "-qO-", f"http://{p['ip']}/").stdout == f"{pod}\n"
    # another client of the same engine kills it, as a user or an OOM killer would
    client = docker.DockerClient(base_url=f"unix:///run/enilab/runs/{lab.prefix}/api.sock", version="1.41")
    client.containers.get(p["container"]).kill()
    client.close()
    assert lab.status()["state"]["pods"][pod]["container_state"].startswith("exited")
    assert "exited" in enilab("status", "--name", lab.name).stdout
    refused = lab.exec(pod, "true")
    assert refused.returncode == 2 and "container is exited" in refused.stderr
    enilab("pods", "del", "--name", lab.name, pod)
    node2 = lab.status()["state"]["nodes"]["node-2"]
    assert not any(p["ip"] in eni["allocated"] for eni in node2["enis"])
    assert any(p["ip"] in eni["ips"] for eni in node2["enis"])  # back in the node's pool
    assert enilab("audit", "--name", lab.name).returncode == 0


def test_down_leaves_no_container_process_mount_or_namespace():
    need_engine()
    lab = Lab()
    try:
        assert lab.exec("pod-1", "true").returncode == 0  # an exec session: podman leaves a conmon behind
        containers = tuple(p["container"] for p in lab.status()["state"]["pods"].values())
        assert len(nothing_left(lab.prefix, containers)["processes"]) > len(containers)  # the check sees them
    finally:
        lab.close()
    assert nothing_left(lab.prefix, containers) == {}


def test_run_json_on_containers_matches_the_state_schema_for_pods():
    import jsonschema

    need_engine()
    schema = json.loads((ROOT / "docs" / "schema" / "state.schema.json").read_text())
    out = json.loads(enilab("run", DEFAULT, "--backend", "containers", "--json").stdout)
    assert out["backend"] == "containers"
    jsonschema.validate(out["backend"], {**schema["properties"]["backend"]})
    pods = out["steps"][-1]["state"]["pods"]
    assert len(pods) == 9
    for pod in pods.values():
        jsonschema.validate(pod, {"$ref": "#/$defs/pod", "$defs": schema["$defs"]})
        assert pod["image"] == "enilab/busybox:latest" and pod["container_state"] == "running"
