"""End to end with a real container runtime: podman 4.3 (CNI backend, runc) runs a busybox container on an
`enilab up` cluster, wired by `enilab-cni` with the conflist of `enilab cni config`, called from a scratch
namespace that stands in for the host. Everything podman keeps lives under a private folder."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from eni_core import netns
from eni_core.datastore import attachment_key
from eni_core.routing import host_veth_name
from testbed.world.engine import busybox_rootfs, containers_conf
from tests.helpers import ROOT

pytestmark = [pytest.mark.netns, pytest.mark.host_root(
    "it runs podman as root; rootless podman (subordinate ids, its own user namespace) is not wired to enilab yet")]
ENILAB = [sys.executable, "-m", "testbed.apps.cli"]
TOOLS = {"podman": "podman", "runc": "runc", "busybox": "busybox-static"}
CNI_CACHE = Path("/var/lib/cni")  # libcni 1.1 keeps its result cache here; podman 4.3 cannot move it
# folders the runtime makes outside the private store (libcni's cache, runc's state root), innermost first
RUNTIME_FOLDERS = (CNI_CACHE / "results", CNI_CACHE, Path("/run/runc"))


def need_tools() -> None:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        why = f"podman end-to-end needs {', '.join(missing)}: run `bash ci/setup.sh` (apt-get install)"
        if os.environ.get("ENILAB_REQUIRE_ROOT") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


def enilab(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ENILAB, *args], capture_output=True, text=True, cwd=ROOT, timeout=180, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"enilab {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


class Lab:
    """An `enilab up` cluster registered in a private folder (so the conflist carries `clustersDir`, and
    podman's clean-up, which calls the plugin without our environment, still finds it), the plugin
    installed, a conflist for node-1, podman's private store and configuration, a busybox rootfs, and the
    runtime's host namespace."""

    def __init__(self, tmp: Path) -> None:
        self.name = f"cnipod-{secrets.token_hex(3)}"
        self.tmp = tmp
        self.env = {**os.environ, "ENILAB_CLUSTERS_DIR": str(tmp / "clusters")}
        self.containers: list[str] = []
        self.made_by_runtime = [f for f in RUNTIME_FOLDERS if not f.exists()]
        self.enilab("up", "default", "--name", self.name)
        self.up = True
        self.enilab("cni", "install", str(tmp / "bin"))
        (tmp / "net.d").mkdir()
        (tmp / "net.d" / "enilab.conflist").write_text(self.enilab("cni", "config", "--node", "node-1",
                                                                   "--name", self.name).stdout)
        busybox_rootfs(tmp / "rootfs")
        (tmp / "containers.conf").write_text(containers_conf(tmp / "net.d", cni_plugin_dirs=tmp / "bin"))
        self.host = f"{self.name}-host"
        netns.create(self.host)

    def enilab(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return enilab(*args, env=self.env, check=check)

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        t = self.tmp
        host_fd = os.open(netns.path(self.host), os.O_RDONLY)
        try:
            proc = subprocess.run(
                ["podman", "--root", str(t / "root"), "--runroot", str(t / "runroot"), "--tmpdir", str(t / "tmp"),
                 "--storage-driver", "vfs", "--events-backend", "file", *args],
                capture_output=True, text=True, timeout=120,
                env={**os.environ, "CONTAINERS_CONF": str(t / "containers.conf")},
                preexec_fn=lambda: netns.setns(host_fd), pass_fds=(host_fd,))
        finally:
            os.close(host_fd)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed: {proc.stderr}")
        return proc

    def state(self) -> dict:
        return json.loads(self.enilab("status", "--name", self.name, "--json").stdout)

    def reaches(self, container: str, ip: str) -> bool:
        return self.podman("exec", container, "ping", "-c", "1", "-W", "2", ip, check=False).returncode == 0

    def close(self) -> None:
        self.podman("rm", "--all", "--force", "--time", "0", check=False)
        for cid in self.containers:  # a failed test may leave libcni's cache of its containers: ours to remove
            (CNI_CACHE / "results" / f"enilab-{cid}-eth0").unlink(missing_ok=True)
        if self.up:
            self.enilab("down", "--name", self.name, check=False)
        netns.delete(self.host)
        for folder in self.made_by_runtime:  # made for us: leave the machine as it was, if nobody else uses it
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()


@pytest.fixture(scope="module")
def lab():
    need_tools()
    folder = Path(tempfile.mkdtemp(prefix="enilab-podman-"))  # podman wants its runroot under 50 characters
    try:
        lab = Lab(folder)
        try:
            yield lab
        finally:
            lab.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_podman_container_gets_a_vpc_ip_keeps_working_and_leaves_nothing(lab):
    cid = lab.podman("run", "-d", "--name", "web", "--network", "enilab", "--cap-add", "NET_RAW",
                     "--rootfs", str(lab.tmp / "rootfs"), "/bin/sleep", "600").stdout.strip()
    lab.containers.append(cid)
    addr = lab.podman("exec", "web", "ip", "-4", "-o", "addr", "show", "eth0").stdout.split()[3]
    ip = addr.split("/")[0]
    assert addr.endswith("/32")
    state = lab.state()["state"]
    node1 = state["nodes"]["node-1"]
    assert any(ip in eni["allocated"] for eni in node1["enis"])  # a VPC IP of the node's pool
    (att,) = node1["attachments"].values()
    assert att["container_id"] == cid and att["ifname"] == "eth0" and att["network"] == "enilab" and att["ip"] == ip
    pod_ip = state["pods"]["pod-1"]["ip"]
    assert lab.reaches("web", "10.0.1.200") and lab.reaches("web", pod_ip)

    lab.enilab("pods", "add", "--name", lab.name, "--node", "node-1", "--count", "1")
    lab.enilab("trace", "--name", lab.name, "pod-1", "db-1")
    assert lab.reaches("web", "10.0.1.200") and lab.reaches("web", pod_ip)
    assert lab.enilab("audit", "--name", lab.name).returncode == 0
    assert "1 runtime-wired pods" in lab.enilab("status", "--name", lab.name).stdout
    sandbox = att["netns"]
    assert Path(sandbox).exists()

    lab.podman("rm", "--force", "--time", "0", "web")
    node1 = lab.state()["state"]["nodes"]["node-1"]
    assert node1["attachments"] == {}
    assert not any(ip in eni["allocated"] for eni in node1["enis"])
    assert any(ip in eni["ips"] for eni in node1["enis"])  # back in the node's pool
    node_ns = node1["netns"]
    links = subprocess.run(["ip", "-n", node_ns, "-o", "link"], capture_output=True, text=True).stdout
    assert host_veth_name(attachment_key("enilab", cid, "eth0")) not in links
    for what in (["rule"], ["route", "show", "table", "all"]):
        out = subprocess.run(["ip", "-n", node_ns, *what], capture_output=True, text=True).stdout
        assert f"{ip} " not in out + " " and f"{ip}/" not in out, out
    assert not Path(sandbox).exists()
    assert not (CNI_CACHE / "results" / f"enilab-{cid}-eth0").exists()


def test_cni_config_refuses_an_unknown_node_and_version(lab):
    bad = lab.enilab("cni", "config", "--node", "node-9", "--name", lab.name, check=False)
    assert bad.returncode == 2 and "has no node 'node-9'" in bad.stderr and "Traceback" not in bad.stderr
    bad = lab.enilab("cni", "config", "--node", "node-1", "--name", lab.name, "--cni-version", "0.4.0",
                     check=False)
    assert bad.returncode == 2
    doc = json.loads(lab.enilab("cni", "config", "--node", "node-2", "--name", lab.name,
                                "--cni-version", "1.1.0").stdout)
    assert doc == {"cniVersion": "1.1.0", "name": "enilab",
                   "plugins": [{"type": "enilab-cni", "cluster": lab.name, "node": "node-2",
                                "clustersDir": str((lab.tmp / "clusters").resolve())}]}
