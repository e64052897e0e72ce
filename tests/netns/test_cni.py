"""CNI conformance: every command and error, through the executable exactly as a runtime calls it
(CNI_* environment, configuration on stdin, run in the node's namespace), against a live node agent."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eni_core import netns
from eni_core.agent import NodeAgent
from eni_core.cni import CniError, CniRequest, Dataplane, handle, parse_request
from eni_core.rpc import RpcServer
from tests.netns.helpers import kernel_view, netns_cluster

pytestmark = pytest.mark.root
CONF = {"cniVersion": "1.1.0", "name": "enilab", "type": "enilab-cni"}


class Node:
    """A cluster whose node-1 agent serves a socket, and pod namespaces made like a runtime makes them."""

    def __init__(self, cluster, tmp: Path) -> None:
        self.c = cluster
        self.ns = cluster.backend.nodes["node-1"].ns
        self.sock = tmp / "node-1.sock"
        self.server = RpcServer(self.sock, NodeAgent(cluster.nodes["node-1"].ipamd, lock=cluster.backend.lock).handle)
        self.server.start()
        self.pod_ns: list[str] = []

    def new_netns(self) -> str:
        name = self.c.backend.run.name(f"rt{len(self.pod_ns)}")
        netns.create(name)
        self.pod_ns.append(name)
        return str(netns.path(name))

    def cni(self, command: str, container: str = "", netns_path: str = "", conf: dict | None = None,
            env: dict | None = None, stdin: bytes | None = None) -> tuple[int, dict | None]:
        node_fd = os.open(netns.path(self.ns), os.O_RDONLY)
        full_env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": container,
                    "CNI_NETNS": netns_path, "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
                    "CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={container}"}
        full_env.update(env or {})
        body = stdin if stdin is not None else json.dumps({**CONF, "agentSocket": str(self.sock), **(conf or {})})
        try:
            proc = subprocess.run([sys.executable, "-m", "eni_core.cni"], input=body if isinstance(body, bytes)
                                  else body.encode(), env=full_env, capture_output=True,
                                  preexec_fn=lambda: netns._setns(node_fd), pass_fds=(node_fd,), timeout=60)
        finally:
            os.close(node_fd)
        assert "Traceback" not in proc.stderr.decode(), proc.stderr.decode()
        return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None

    def close(self) -> None:
        self.server.close()
        for name in self.pod_ns:
            netns.delete(name)


@pytest.fixture
def node(tmp_path):
    with netns_cluster() as c:
        n = Node(c, tmp_path)
        try:
            yield n
        finally:
            n.close()


def test_version_lists_supported_versions(node):
    rc, out = node.cni("VERSION", stdin=b'{"cniVersion": "1.0.0"}')
    assert rc == 0 and out == {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.1.0"]}


def test_add_returns_the_spec_result_and_wires_the_pod(node):
    path = node.new_netns()
    rc, out = node.cni("ADD", "ctr-1", path)
    assert rc == 0, out
    assert out["cniVersion"] == "1.1.0"
    ip = out["ips"][0]["address"].split("/")[0]
    assert out["ips"][0] == {"address": f"{ip}/32", "gateway": "169.254.1.1", "interface": 1}
    assert out["interfaces"][1]["sandbox"] == path and out["interfaces"][1]["name"] == "eth0"
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    alloc = node.c.nodes["node-1"].ipamd.lookup("ctr-1")
    assert str(alloc.ip) == ip
    view = kernel_view(node.ns)
    assert any(r[0] == 1536 and str(r[2]) == ip and r[1] >= 2003 for r in view["rules"])
    rc, _ = node.cni("CHECK", "ctr-1", path)
    assert rc == 0


def test_add_twice_for_the_same_container_returns_the_same_ip(node):
    path = node.new_netns()
    _, first = node.cni("ADD", "ctr-1", path)
    rc, second = node.cni("ADD", "ctr-1", path)
    assert rc == 0 and second["ips"] == first["ips"]


def test_del_is_idempotent_and_works_when_the_namespace_is_gone(node):
    path = node.new_netns()
    _, out = node.cni("ADD", "ctr-1", path)
    netns.delete(Path(path).name)
    assert node.cni("DEL", "ctr-1", path) == (0, None)
    assert node.cni("DEL", "ctr-1", path) == (0, None)
    assert node.cni("DEL", "never-added", "") == (0, None)
    ip = out["ips"][0]["address"].split("/")[0]
    assert not any(str(r[2]) == ip for r in kernel_view(node.ns)["rules"])
    assert node.c.nodes["node-1"].ipamd.lookup("ctr-1") is None


def test_check_fails_when_the_pods_rule_was_removed(node):
    path = node.new_netns()
    _, out = node.cni("ADD", "ctr-1", path)
    ip = out["ips"][0]["address"].split("/")[0]
    subprocess.run(["ip", "-n", node.ns, "rule", "del", "from", ip, "priority", "1536"], check=True)
    rc, err = node.cni("CHECK", "ctr-1", path)
    assert rc == 1 and err["code"] == 100 and f"from {ip}" in err["msg"]
    rc, err = node.cni("CHECK", "unknown-ctr", path)
    assert rc == 1 and err["code"] == 3


def test_status_reports_the_agent_and_fails_when_it_is_gone(node):
    assert node.cni("STATUS") == (0, None)
    rc, err = node.cni("STATUS", conf={"agentSocket": "/nonexistent/agent.sock"})
    assert rc == 1 and err["code"] == 50


def test_gc_releases_attachments_that_are_not_valid(node):
    keep, drop = node.new_netns(), node.new_netns()
    node.cni("ADD", "ctr-keep", keep)
    node.cni("ADD", "ctr-drop", drop)
    valid = {"cni.dev/valid-attachments": [{"containerID": "ctr-keep", "ifname": "eth0"}]}
    assert node.cni("GC", conf=valid) == (0, None)
    ipamd = node.c.nodes["node-1"].ipamd
    assert ipamd.lookup("ctr-keep") is not None and ipamd.lookup("ctr-drop") is None


@pytest.mark.parametrize("env,stdin,code", [
    ({"CNI_COMMAND": "EXPLODE"}, None, 4),
    ({"CNI_CONTAINERID": ""}, None, 4),
    ({}, b"{not json", 6),
    ({}, json.dumps({"cniVersion": "0.1.0", "name": "x"}).encode(), 1),
    ({}, json.dumps({"cniVersion": "1.0.0"}).encode(), 7),
    ({}, json.dumps({"cniVersion": "1.0.0", "name": "x"}).encode(), 7),  # no agentSocket
    ({"CNI_IFNAME": "a-very-long-interface-name"}, None, 4),
])
def test_errors_use_spec_codes_with_a_message(node, env, stdin, code):
    path = node.new_netns()
    rc, err = node.cni(env.pop("CNI_COMMAND", "ADD"), env.pop("CNI_CONTAINERID", "ctr-x"), path, env=env,
                       stdin=stdin)
    assert rc == 1 and err["code"] == code and err["msg"]


def test_add_into_a_missing_namespace_is_unknown_container(node):
    rc, err = node.cni("ADD", "ctr-ghost", "/run/netns/enl-does-not-exist")
    assert rc == 1 and err["code"] == 3 and "CNI_NETNS" in err["msg"]


def test_the_in_process_handler_is_the_same_code(node):
    path = node.new_netns()
    agent = NodeAgent(node.c.nodes["node-1"].ipamd, lock=node.c.backend.lock)
    req = parse_request({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-in", "CNI_NETNS": path, "CNI_IFNAME": "eth0"},
                        json.dumps(CONF))
    out = handle(req, lambda m, **p: agent.handle(m, p), Dataplane(node.c.backend.nodes["node-1"].kernel))
    _, again = node.cni("ADD", "ctr-in", path)
    assert again["ips"] == out["ips"]
    with pytest.raises(CniError) as err:
        handle(CniRequest("CHECK", "nobody", path, "eth0", {}, CONF), lambda m, **p: agent.handle(m, p),
               Dataplane(node.c.backend.nodes["node-1"].kernel))
    assert err.value.code == 3
