"""CNI conformance through the installed `enilab-cni` executable, exactly as a runtime calls it: CNI_*
environment, configuration on stdin, run from a scratch namespace that stands in for the runtime's host,
against the node agents of a cluster found by the netconf's `cluster` and `node`."""
from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import subprocess
import threading
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from eni_core import netlink as nl
from eni_core import netns
from eni_core.cni import install_plugin
from eni_core.datastore import attachment_key
from eni_core.kernel import NamespaceKernel
from eni_core.rpc import RpcServer
from testbed.observe.audit import audit_cluster
from tests.netns.helpers import kernel_view, netns_cluster

pytestmark = pytest.mark.netns
IP_TRANSPARENT = 19
CONF = {"cniVersion": "1.0.0", "name": "enilab", "type": "enilab-cni", "cluster": "lab", "node": "node-1"}
V11 = {"cniVersion": "1.1.0"}  # GC and STATUS came with 1.1.0


class Runtime:
    """A cluster registered like `enilab up` registers one (a control socket and one agent socket per
    node under a private run folder), the installed plugin, and a runtime's host namespace."""

    def __init__(self, cluster, tmp: Path) -> None:
        import sys

        self.c = cluster
        self.run_dir = tmp / "run"
        folder = self.run_dir / "clusters" / "lab"
        self.servers = [RpcServer(folder / "control.sock", lambda m, p: {"name": "lab"}).start()]
        self.servers += [RpcServer(folder / f"{n}.sock", cluster.backend.agent_for(n).handle).start()
                         for n in cluster.nodes]
        self.plugin = install_plugin(str(tmp / "bin"), sys.executable)
        # in the run's record, made after it: a test killed mid-way leaves them to the cluster's teardown
        # or to `enilab clean`, like every namespace of the run
        self.host = cluster.backend.run.netns("rthost")
        self.made = [self.host]

    def node_ns(self, node: str = "node-1") -> str:
        return self.c.backend.nodes[node].ns

    def new_netns(self) -> str:
        name = self.c.backend.run.netns(f"rt{len(self.made)}")
        self.made.append(name)
        return str(netns.path(name))

    def cni(self, command: str, container: str = "", netns_path: str = "", conf: dict | None = None,
            env: dict | None = None, stdin: bytes | None = None, ifname: str = "eth0") -> tuple[int, dict | None]:
        host_fd = os.open(netns.path(self.host), os.O_RDONLY)
        full_env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": container,
                    "CNI_NETNS": netns_path, "CNI_IFNAME": ifname, "CNI_PATH": "/opt/cni/bin",
                    "ENILAB_RUN_DIR": str(self.run_dir)}
        full_env.update(env or {})
        body = stdin if stdin is not None else json.dumps({**CONF, **(conf or {})}).encode()
        try:
            proc = subprocess.run([self.plugin], input=body, env=full_env, capture_output=True,
                                  preexec_fn=lambda: netns.setns(host_fd), pass_fds=(host_fd,), timeout=60)
        finally:
            os.close(host_fd)
        assert "Traceback" not in proc.stderr.decode(), proc.stderr.decode()
        return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None

    def add(self, container: str, ifname: str = "eth0", **kw) -> tuple[str, dict]:
        path = self.new_netns()
        rc, out = self.cni("ADD", container, path, ifname=ifname, **kw)
        assert rc == 0, out
        return path, out

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for name in self.made:
            netns.delete(name)


@pytest.fixture
def rt(tmp_path):
    with netns_cluster() as c:
        r = Runtime(c, tmp_path)
        try:
            yield r
        finally:
            r.close()


def ip_of(result: dict) -> str:
    return result["ips"][0]["address"].split("/")[0]


def node_side(rt: Runtime, ip: str, node: str = "node-1") -> set[str]:
    """Which of a pod's node-side parts exist, read by pyroute2 (not our codec)."""
    view = kernel_view(rt.node_ns(node))
    have = set()
    for prio, table, src, dst in view["rules"]:
        if prio == 1536 and str(src) == ip and table >= 2000:
            have.add("rule 1536")
        if prio == 512 and str(dst) == ip and table == 254:
            have.add("rule 512")
    if any(r[0] == 254 and r[1] == ip and r[2] == 32 for r in view["routes"]):
        have.add("host route")
    return have


def allocated(rt: Runtime, node: str = "node-1") -> dict[str, IPv4Address]:
    return {k: a.ip for k, a in rt.c.nodes[node].ipamd.store.pods.items()}


# -- the basics ----------------------------------------------------------------------------------------
def test_version_is_answered_by_the_executable_alone(rt):
    rc, out = rt.cni("VERSION", stdin=b'{"cniVersion": "1.0.0"}', env={"ENILAB_RUN_DIR": "/nonexistent"})
    assert rc == 0 and out == {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.1.0"]}


def test_add_returns_the_spec_result_and_wires_the_pod_from_the_host_namespace(rt):
    before = kernel_view(rt.host)
    path, out = rt.add("ctr-1")
    assert out["cniVersion"] == "1.0.0"
    ip = ip_of(out)
    assert out["ips"][0] == {"address": f"{ip}/32", "gateway": "169.254.1.1", "interface": 1}
    assert out["interfaces"][1]["sandbox"] == path and out["interfaces"][1]["name"] == "eth0"
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    assert str(rt.c.nodes["node-1"].ipamd.lookup(attachment_key("enilab", "ctr-1", "eth0")).ip) == ip
    assert node_side(rt, ip) == {"rule 1536", "rule 512", "host route"}
    assert kernel_view(rt.host) == before  # the runtime's own namespace is untouched
    assert rt.cni("CHECK", "ctr-1", path, conf={"prevResult": out})[0] == 0


def test_add_twice_for_the_same_attachment_returns_the_same_ip(rt):
    path, first = rt.add("ctr-1")
    rc, second = rt.cni("ADD", "ctr-1", path)
    assert rc == 0 and second["ips"] == first["ips"]


def test_del_is_idempotent_and_works_when_the_namespace_is_gone(rt):
    path, out = rt.add("ctr-1")
    netns.delete(Path(path).name)
    assert rt.cni("DEL", "ctr-1", path) == (0, None)
    assert rt.cni("DEL", "ctr-1", path) == (0, None)
    assert rt.cni("DEL", "never-added", "") == (0, None)
    assert node_side(rt, ip_of(out)) == set()
    assert attachment_key("enilab", "ctr-1", "eth0") not in allocated(rt)


# -- 1. one truth: the controller's syncs keep runtime-wired pods --------------------------------------
def test_controller_syncs_keep_runtime_wired_pods_and_state_shows_them(rt):
    path, out = rt.add("ctr-1")
    ip = ip_of(out)
    rt.c.create_pods(1, "node-1")
    rt.c.sync_dataplane()
    rt.c.create_pods(1, "node-2")
    rt.c.sync_dataplane()
    assert node_side(rt, ip) == {"rule 1536", "rule 512", "host route"}
    assert rt.cni("CHECK", "ctr-1", path, conf={"prevResult": out})[0] == 0
    (attachment,) = rt.c.state()["nodes"]["node-1"]["attachments"].values()
    assert attachment == {"ip": ip, "eni": attachment["eni"], "network": "enilab", "container_id": "ctr-1",
                          "ifname": "eth0", "netns": path}
    assert audit_cluster(rt.c)["ok"]


# -- 2. GC: only its own network; malformed lists; the audit sees lost veths -------------------------
def test_gc_releases_only_attachments_of_its_network_missing_from_the_list(rt):
    rt.c.create_pods(3, "node-1")
    controller = {p: a for p, a in allocated(rt).items() if p.startswith("pod-")}
    rt.add("ctr-keep")
    _, drop = rt.add("ctr-drop")
    _, other = rt.add("ctr-other", conf={"name": "othernet"})
    keep_ip = allocated(rt)[attachment_key("enilab", "ctr-keep", "eth0")]
    valid = {"cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"containerID": "ctr-keep", "ifname": "eth0"}]}
    assert rt.cni("GC", conf=valid) == (0, None)
    now = allocated(rt)
    assert attachment_key("enilab", "ctr-drop", "eth0") not in now and node_side(rt, ip_of(drop)) == set()
    assert now[attachment_key("enilab", "ctr-keep", "eth0")] == keep_ip
    assert attachment_key("othernet", "ctr-other", "eth0") in now and node_side(rt, ip_of(other))
    assert {p: now[p] for p in controller} == controller
    assert audit_cluster(rt.c)["ok"]


@pytest.mark.parametrize("valid", ["abc", [{"containerID": "x"}], 7])
def test_gc_with_a_malformed_list_answers_the_decoding_failure_and_releases_nothing(rt, valid):
    rt.add("ctr-1")
    before = allocated(rt)
    rc, err = rt.cni("GC", conf={"cniVersion": "1.1.0", "cni.dev/valid-attachments": valid})
    assert rc == 1 and err["code"] == 6 and err["cniVersion"] == "1.1.0" and "valid-attachments" in err["msg"]
    assert allocated(rt) == before


def test_audit_catches_a_pod_whose_ip_was_released_under_it_and_a_lost_veth(rt):
    (pod,) = rt.c.create_pods(1, "node-1")
    _, out = rt.add("ctr-1")
    with rt.c.backend.lock:
        rt.c.nodes["node-1"].ipamd.release(pod.name)  # what GC of every network once did
    subprocess.run(["ip", "-n", rt.node_ns(), "link", "del", out["interfaces"][0]["name"]], check=True)
    report = audit_cluster(rt.c)
    found = " | ".join(f["what"] for f in report["missing_routes"])
    assert not report["ok"] and pod.name in found and "ctr-1" in found


# -- 3. several attachments per container -------------------------------------------------------------
def test_a_container_has_two_attachments_and_del_removes_only_its_own(rt):
    path = rt.new_netns()
    rc, eth0 = rt.cni("ADD", "ctr-1", path)
    rc2, net1 = rt.cni("ADD", "ctr-1", path, ifname="net1")
    assert rc == rc2 == 0 and ip_of(eth0) != ip_of(net1)
    assert rt.cni("DEL", "ctr-1", path, ifname="net1") == (0, None)
    assert node_side(rt, ip_of(net1)) == set()
    assert node_side(rt, ip_of(eth0)) == {"rule 1536", "rule 512", "host route"}
    checked = rt.cni("CHECK", "ctr-1", path, conf={"prevResult": eth0})
    assert checked == (0, None), checked


def test_a_namespace_with_a_default_route_of_its_own_at_any_metric_keeps_it_alone(rt):
    """A runtime's namespace may come with a default route (another network's, at a metric of its own).
    ADD leaves it the only one, gives the attachment no routes, and says so again on a second ADD; CHECK
    does not ask for the default route ADD did not write."""
    path = rt.new_netns()
    ns = os.path.basename(path)
    for argv in (["link", "add", "ext0", "type", "veth", "peer", "name", "ext1"], ["link", "set", "ext1", "up"],
                 ["link", "set", "ext0", "up"],
                 ["addr", "add", "192.0.2.5/24", "dev", "ext0"],
                 ["route", "add", "default", "via", "192.0.2.1", "dev", "ext0", "metric", "100"]):
        subprocess.run(["ip", "-n", ns, *argv], check=True)
    rc, out = rt.cni("ADD", "ctr-1", path)
    rc2, again = rt.cni("ADD", "ctr-1", path)
    assert rc == rc2 == 0 and out["routes"] == again["routes"] == [] and ip_of(out) == ip_of(again)
    routes = subprocess.run(["ip", "-n", ns, "-4", "route", "show", "table", "main"], capture_output=True,
                            text=True, check=True).stdout
    assert [line.split()[:5] for line in routes.splitlines() if line.startswith("default")] == [
        ["default", "via", "192.0.2.1", "dev", "ext0"]]
    assert "169.254.1.1" not in routes
    assert rt.cni("CHECK", "ctr-1", path, conf={"prevResult": out}) == (0, None)  # nothing it wrote is missing


# -- 4. CHECK -----------------------------------------------------------------------------------------
def edited(result: dict, **changes) -> dict:
    out = copy.deepcopy(result)
    if "ip" in changes:
        out["ips"][0]["address"] = f"{changes['ip']}/32"
    if "ifname" in changes:
        out["interfaces"][1]["name"] = changes["ifname"]
    if "mac" in changes:
        out["interfaces"][1]["mac"] = changes["mac"]
    return out


@pytest.mark.parametrize("change,says", [
    ({"ip": "10.0.1.250"}, "prevResult lists 10.0.1.250"),
    ({"ifname": "eth9"}, "prevResult has no interface eth0"),
    ({"mac": "02:00:00:00:00:01"}, "prevResult says 02:00:00:00:00:01"),
])
def test_check_compares_the_live_state_with_prev_result(rt, change, says):
    path, out = rt.add("ctr-1")
    rc, err = rt.cni("CHECK", "ctr-1", path, conf={"prevResult": edited(out, **change)})
    assert rc == 1 and err["code"] == 100 and says in err["msg"]


def test_check_needs_prev_result_and_honours_cni_ifname(rt):
    path, out = rt.add("ctr-1")
    rc, err = rt.cni("CHECK", "ctr-1", path)
    assert rc == 1 and err["code"] == 7 and "prevResult" in err["msg"]
    rc, err = rt.cni("CHECK", "ctr-1", path, ifname="net1", conf={"prevResult": out})
    assert rc == 1 and err["code"] == 3  # no such attachment
    subprocess.run(["ip", "-n", Path(path).name, "link", "set", "eth0", "name", "gone0"], check=True)
    rc, err = rt.cni("CHECK", "ctr-1", path, conf={"prevResult": out})
    assert rc == 1 and "interface eth0 is missing" in err["msg"]


@pytest.mark.parametrize("remove,says", [
    (["route", "del", "{ip}", "table", "main"], "host route '{ip} dev"),
    (["rule", "del", "to", "{ip}", "priority", "512"], "rule '512: to {ip} lookup main' is missing"),
    (["rule", "del", "from", "{ip}", "priority", "1536"], "rule '1536: from {ip} lookup 20"),
])
def test_check_fails_naming_the_missing_node_side_part(rt, remove, says):
    path, out = rt.add("ctr-1")
    ip = ip_of(out)
    subprocess.run(["ip", "-n", rt.node_ns(), *[a.format(ip=ip) for a in remove]], check=True)
    rc, err = rt.cni("CHECK", "ctr-1", path, conf={"prevResult": out})
    assert rc == 1 and err["code"] == 100 and says.format(ip=ip) in err["msg"]


# -- 5. a failed ADD rolls back -----------------------------------------------------------------------
def test_a_failed_add_gives_the_ip_back_and_leaves_no_rule(rt, tmp_path):
    regular = tmp_path / "not-a-netns"
    regular.write_text("")
    before, rules_before = allocated(rt), kernel_view(rt.node_ns())["rules"]
    for path, ifname, code in [(rt.new_netns(), "lo", 101), (str(regular), "eth0", 4),
                               ("/run/netns/enl-does-not-exist", "eth0", 3)]:
        rc, err = rt.cni("ADD", "ctr-bad", path, ifname=ifname)
        assert rc == 1 and err["code"] in (code, 5), err
        assert allocated(rt) == before and kernel_view(rt.node_ns())["rules"] == rules_before
    assert not [k for k in kernel_view(rt.node_ns())["links"].values() if k["ifname"].startswith("eni")]


def test_add_again_into_another_namespace_touches_nothing_there_and_check_without_the_namespace_asks_for_del(rt):
    path, first = rt.add("ctr-1")
    other = rt.new_netns()
    subprocess.run(["ip", "-n", Path(other).name, "link", "add", "eth0", "type", "veth", "peer", "name", "xpeer"],
                   check=True)
    rc, err = rt.cni("ADD", "ctr-1", other)
    assert rc == 1 and err["code"] == 5 and "is wired into another namespace" in err["msg"], err
    shown = subprocess.run(["ip", "-n", Path(other).name, "-j", "addr"], capture_output=True, check=True).stdout
    assert not [a for link in json.loads(shown) for a in link.get("addr_info", [])
                if a.get("family") == "inet" and a.get("local") != "127.0.0.1"]
    assert not [r for r in kernel_view(Path(other).name)["routes"] if r[0] == 254]
    assert rt.cni("ADD", "ctr-1", path) == (0, first)  # the attachment is as it was
    netns.delete(Path(path).name)
    rc, err = rt.cni("CHECK", "ctr-1", path, conf={"prevResult": first})
    assert rc == 1 and err["code"] == 100 and err["msg"].endswith("DEL it"), err  # not 3: that waives the DEL
    assert rt.cni("DEL", "ctr-1", path) == (0, None) and node_side(rt, ip_of(first)) == set()


def test_a_fifo_as_cni_netns_is_refused_at_once_and_holds_up_no_other_call(rt, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    before = allocated(rt)
    for command in ("ADD", "CHECK"):
        rc, err = rt.cni(command, "ctr-f", str(fifo), conf={"prevResult": {}})  # would block on open before
        assert rc == 1 and err["code"] == 4 and "is not a network namespace" in err["msg"], err
    assert rt.cni("STATUS", conf=V11) == (0, None) and allocated(rt) == before


def _inet(ns: str) -> set[str]:
    shown = subprocess.run(["ip", "-n", ns, "-j", "addr"], capture_output=True, check=True).stdout
    return {a["local"] for link in json.loads(shown) for a in link.get("addr_info", []) if a.get("family") == "inet"}


def test_the_namespace_checked_is_the_one_wired_whatever_its_path_names_meanwhile(rt, tmp_path, monkeypatch):
    pod, path = rt.new_netns(), tmp_path / "ns"
    path.symlink_to(pod)
    agent, node_2 = rt.c.backend.agent_for("node-1"), rt.node_ns("node-2")
    owned = agent.namespaces

    def repointed():  # the path is made to name node-2's namespace once the agent has checked it
        path.unlink()
        path.symlink_to(netns.path(node_2))
        return owned()

    monkeypatch.setattr(agent, "namespaces", repointed)
    before = _inet(node_2)
    rc, out = rt.cni("ADD", "ctr-s", str(path))
    assert rc == 0, out
    assert ip_of(out) in _inet(Path(pod).name) and _inet(node_2) == before
    assert out["interfaces"][1]["sandbox"] == str(path)  # the runtime's own words, in the result
    monkeypatch.setattr(agent, "namespaces", owned)
    assert rt.cni("DEL", "ctr-s", str(path)) == (0, None)


@pytest.mark.parametrize("ifname", ["net%d", "éééééééé"])
def test_an_interface_name_the_kernel_would_change_or_refuse_takes_no_ip(rt, ifname):
    before = allocated(rt)
    rc, err = rt.cni("ADD", "ctr-n", rt.new_netns(), ifname=ifname)
    assert rc == 1 and err["code"] == 4 and "is not a valid interface name" in err["msg"], err
    assert allocated(rt) == before


# -- 6. the host namespace, and namespaces the plugin must refuse -------------------------------------
def test_the_plugin_refuses_the_callers_own_namespace_and_enilabs(rt):
    before = allocated(rt)
    own = str(netns.path(rt.host))
    backend = rt.c.backend
    for path, says in [(own, "called from"), (str(netns.path(rt.node_ns())), "node node-1's namespace"),
                       (str(netns.path(rt.node_ns("node-2"))), "node node-2's namespace"),
                       (str(netns.path(backend.fabric_ns)), "the VPC fabric")]:
        rc, err = rt.cni("ADD", "ctr-x", path)
        assert rc == 1 and err["code"] == 4 and says in err["msg"], err
    assert allocated(rt) == before


@pytest.mark.parametrize("conf,says", [
    ({"cluster": "nope"}, "no enilab cluster named 'nope' is up; up: lab"),
    ({"node": "node-9"}, "cluster lab has no node 'node-9'; its nodes: node-1, node-2"),
    ({"node": None}, "no 'node'"),
    ({"node": "../../etc/passwd"}, "has no node"),
])
def test_unknown_cluster_or_node_is_a_clear_config_error(rt, conf, says):
    body = {**CONF, **conf}
    body = {k: v for k, v in body.items() if v is not None}
    rc, err = rt.cni("ADD", "ctr-x", rt.new_netns(), stdin=json.dumps(body).encode())
    assert rc == 1 and err["code"] == 7 and says in err["msg"]


def test_the_only_cluster_up_is_the_default_and_node_2_is_reachable(rt):
    body = {k: v for k, v in CONF.items() if k != "cluster"}
    rc, out = rt.cni("ADD", "ctr-2", rt.new_netns(), stdin=json.dumps({**body, "node": "node-2"}).encode())
    assert rc == 0 and IPv4Address(ip_of(out)) in rt.c.spec.subnets[1].cidr


# -- 8. errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("env,conf,stdin,code", [
    ({"CNI_COMMAND": "EXPLODE"}, None, None, 4),
    ({"CNI_CONTAINERID": ""}, None, None, 4),
    ({"CNI_CONTAINERID": "../x"}, None, None, 4),
    ({}, None, b"{not json", 6),
    ({}, {"cniVersion": "0.1.0"}, None, 1),
    ({}, {"name": None}, None, 7),
    ({}, {"name": "bad/name"}, None, 7),
    ({"CNI_IFNAME": "a-very-long-interface-name"}, None, None, 4),
])
def test_errors_use_spec_codes_and_echo_the_requests_version(rt, env, conf, stdin, code):
    body = {**CONF, "cniVersion": "1.1.0", **(conf or {})}
    body = stdin if stdin is not None else json.dumps({k: v for k, v in body.items() if v is not None}).encode()
    rc, err = rt.cni(env.pop("CNI_COMMAND", "ADD"), env.pop("CNI_CONTAINERID", "ctr-x"), rt.new_netns(), env=env,
                     stdin=body)
    assert rc == 1 and err["code"] == code and err["msg"]
    assert err["cniVersion"] == ("1.0.0" if stdin is not None else body and json.loads(body)["cniVersion"])


def test_an_unreachable_agent_is_said_once_and_status_reports_it(rt):
    assert rt.cni("STATUS", conf=V11) == (0, None)
    for command, code in [("STATUS", 50), ("ADD", 11)]:
        rc, err = rt.cni(command, "ctr-x", rt.new_netns(), conf={**V11, "agentSocket": "/nonexistent/agent.sock"})
        assert rc == 1 and err["code"] == code
        assert err["msg"].count("node agent") == 1 and "/nonexistent/agent.sock" in err["msg"]


def test_eight_runtimes_adding_at_once_get_eight_ips_and_each_del_frees_only_its_own(rt):
    from concurrent.futures import ThreadPoolExecutor

    paths = [rt.new_netns() for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: rt.cni("ADD", f"ctr-{i}", paths[i]), range(8)))
    assert all(rc == 0 for rc, _ in results), results
    ips = [ip_of(out) for _, out in results]
    assert len(set(ips)) == 8
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda i: rt.cni("DEL", f"ctr-{i}", paths[i]), range(0, 8, 2))) == {(0, None)}
    for i, ip in enumerate(ips):
        assert node_side(rt, ip) == (set() if i % 2 == 0 else {"rule 1536", "rule 512", "host route"})
    assert audit_cluster(rt.c)["ok"]


@contextlib.contextmanager
def rtnl_contention(run, pairs: int = 300, threads: int = 2):
    """A thread that builds a namespace of `pairs` veth pairs and deletes it, over and over (each namespace
    recorded by `run`): the kernel holds the rtnl lock for each link made and through each teardown, as it
    would for another cluster set up or torn down beside this one."""
    stop = threading.Event()
    rounds: list[int] = []
    failures: list[BaseException] = []

    def churn(t: int) -> None:
        try:
            for k in itertools.count():
                if stop.is_set():
                    return
                name = run.netns(f"churn{t}-{k}")
                fd = os.open(netns.path(name), os.O_RDONLY | os.O_CLOEXEC)
                kernel = None
                try:
                    kernel = NamespaceKernel(name)
                    kernel.check([nl.veth_add(f"a{i}", f"b{i}", fd) for i in range(pairs)])
                finally:
                    if kernel is not None:
                        kernel.close()
                    os.close(fd)
                    netns.delete(name)
                rounds.append(t)
        except BaseException as err:  # the test fails on it: without contention it would prove nothing
            failures.append(err)

    workers = [threading.Thread(target=churn, args=(t,), daemon=True) for t in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    assert not failures, f"the contention threads failed: {failures}"
    assert len(set(rounds)) == threads, f"every contention thread must have churned; rounds: {rounds}"


def test_add_returns_with_the_host_veth_ready_and_the_nodes_first_datagram_reaches_the_pod():
    """The host end of a pod's veth comes up before the pod's end, so the kernel readies it late (deferred
    link-watch work, which waits for the rtnl lock); a packet the node sends before then is dropped. With
    another thread holding that lock often, ADD must still not return before the host end is ready: a dump
    right after ADD (a dump readies nothing) shows it operationally up, and one datagram from the node,
    with no ARP entry cached, reaches the pod."""
    import socket

    with netns_cluster() as c, rtnl_contention(c.backend.run):
        node = c.backend.nodes["node-1"]
        agent = c.backend.agent_for("node-1")
        with netns.entered(node.ns):
            reader = IPRoute()  # pyroute2, opened in the node: a dump of our codec's making is not the judge
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)  # the node has no IPv4 address to send from
        sender.bind(("10.0.1.250", 0))
        late = []
        try:
            for i in range(40):
                pod = f"default/ready-{i}"
                where = c.backend.pod_up("node-1", pod, None)
                veth = next(lk for lk in reader.get_links() if lk.get("ifname") == where["veth"])
                if veth.get_attr("IFLA_OPERSTATE") != "UP":
                    late.append(f"{where['veth']} {veth.get_attr('IFLA_OPERSTATE')}")
                ip = agent.handle("get", {"pod": pod})["ip"]
                with netns.entered(where["netns"]):
                    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    receiver.bind((ip, 7000))
                    receiver.settimeout(0.5)  # below ARP's 1 s retry: a lost first request fails this
                    sender.sendto(b"first", (ip, 7000))
                    try:
                        receiver.recv(16)
                    except TimeoutError:
                        late.append(f"{ip}: the datagram was lost")
                finally:
                    receiver.close()
                c.backend.pod_down("node-1", pod)
        finally:
            reader.close()
            sender.close()
        assert late == [], f"ADD returned before the host end was ready: {late}"
