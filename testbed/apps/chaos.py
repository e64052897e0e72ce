"""`enilab chaos`: node agents as real processes, killed at random points, a flaky cloud, hand-edited
kernels; after every iteration the audit and a connectivity check must pass.

The ProcessCluster is the closest thing to real nodes enilab has: the VPC is served from this process
(the cloud), which also hot-plugs each attached ENI's interface into the node's namespace and delivers
bound IPs in the fabric; every node runs `python -m eni_core.agent --routing` inside its own namespace
(ipamd, datastore checkpoint, routing agent, CNI handler); pods are wired by asking that agent over
its socket, exactly as `enilab-cni` does.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from eni_core import netlink as nl
from eni_core import netns, routing
from eni_core.cni import CniError
from eni_core.datastore import attachment_key
from eni_core.model import Eni, PoolConfig, Subnet
from eni_core.private import private_dir
from eni_core.rpc import RpcClient, SocketPathTooLong, check_socket_path
from testbed.errors import UsageError
from testbed.observe.audit import audit
from testbed.world.backends.netns import NetnsBackend
from testbed.world.engine import own_state
from testbed.world.faults import FaultConfig
from testbed.world.pods import Pod, PodPhase, next_auto_name
from testbed.world.spec import ClusterSpec, HostSpec, NodeSpec
from testbed.world.tencent_actions import VpcService
from testbed.world.tencent_api import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, REGION, TencentVpcServer
from testbed.world.vpc import SimVpc
from testbed.world.vpc_server import serve_vpc

__all__ = ["ProcessCluster", "run_chaos"]

CONF = {"cniVersion": "1.1.0", "name": "enilab"}
LOOPBACK_INDEX = 1
STORMY = FaultConfig(throttle=0.15, transient=0.1, timeout=0.1, consistency_delay=0.5)


class ProcessCluster:
    """Nodes as agent processes in their namespaces, the VPC served from this process: a `BackendHost`
    for the netns backend, not a `Cluster` (no scheduler, no in-process IPAM)."""

    def __init__(self, spec: ClusterSpec, folder: Path | None = None, cloud: str = "rpc") -> None:
        """`folder` holds the sockets, logs and agents' state; by default the run's own state folder, which
        `enilab clean` purges (its processes too) should this process be killed."""
        self.spec, self.cloud = spec, cloud
        self.lock = threading.RLock()
        self.vpc = SimVpc(spec.subnets, seed=spec.seed, now=time.time)
        self.agents: dict[str, subprocess.Popen] = {}
        self.servers: list = []
        self.closed = False
        self.kills: dict[str, int] = {}  # node -> how many times `kill_agent` killed its agent
        self.backend = NetnsBackend()
        try:  # a cluster that cannot come up whole (a socket path too long, an agent that died) is taken down
            self.folder = folder = folder or private_dir(own_state(self.backend.run.prefix))
            for name in ["vpc", *(node.name for node in spec.nodes)]:  # before anything runs
                try:
                    check_socket_path(folder / f"{name}.sock")
                except SocketPathTooLong as err:
                    raise UsageError(str(err)) from None
            self.backend.bind(self)
            self.vpc.listeners.append(self._on_attach)
            self.api = VpcService(self.vpc, now=time.time, lock=self.lock)  # one API, its tasks and tokens
            self.endpoints: dict[str, str] = {}
            if cloud == "rpc":
                self.servers.append(serve_vpc(self.vpc, str(folder / "vpc.sock"), self.lock))
            self.pods: dict[str, Pod] = {}
            self.seq = 0
            self.half_added: list[tuple[str, str]] = []  # (node, pod): an ADD that failed; the runtime DELs it
            for node in spec.nodes:
                self.vpc.add_instance(node.name, node.max_enis, node.ips_per_eni)
                self.backend.add_node(node.name)
                self.start_agent(node.name)
        except BaseException:
            self.close()
            raise

    # the cloud's side of an attach: the interface appears in the node (hot-plug), down
    def _on_attach(self, what: str, eni_id: str, _ips) -> None:
        if what not in ("attach", "detach"):
            return
        rec = self.vpc.enis[eni_id].record
        eni = Eni(rec.id, rec.subnet_id, rec.mac, rec.primary_ip, rec.device_index or 0, 0,
                  dict.fromkeys(self.vpc.enis[eni_id].ips))
        if what == "attach":
            self.backend.eni_attached(rec.attached_to, eni)
        elif rec.attached_to in self.backend.nodes:
            self.backend.eni_detached(rec.attached_to, eni)

    @property
    def nodes(self) -> dict[str, NodeSpec]:
        return {n.name: n for n in self.spec.nodes}

    def local_node(self, node: str) -> None:
        """None for every node: its agent is a process of its own, which does its own routing."""
        return None

    def _sock(self, node: str) -> Path:
        return self.folder / f"{node}.sock"

    def start_agent(self, node: str) -> None:
        spec = self.nodes[node]
        pool = self.spec.pool
        args = [sys.executable, "-m", "eni_core.agent", "--node", node, *self._cloud_args(node),
                "--state", str(self.folder / "state"), "--listen", str(self._sock(node)), "--routing",
                "--max-enis", str(spec.max_enis), "--ips-per-eni", str(spec.ips_per_eni),
                "--min-prebound", str(pool.min_prebound), "--max-prebound", str(pool.max_prebound),
                "--resync-every", "1.0"]
        for s in spec.subnets:
            args += ["--subnet", s]
        for s in self.spec.subnets:
            args += ["--gateway", f"{s.id}={s.gateway}"]
        fd = os.open(netns.path(self.backend.nodes[node].ns), os.O_RDONLY)
        try:
            self._sock(node).unlink(missing_ok=True)
            self.agents[node] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(  # noqa: SIM115
                self.folder / f"{node}.log", "ab"), preexec_fn=lambda: netns.setns(fd), pass_fds=(fd,),
                start_new_session=True,  # not signalled with this process's group (Jupyter's Kernel > Interrupt)
                env={**os.environ, "TENCENTCLOUD_SECRET_ID": DEFAULT_SECRET_ID,
                     "TENCENTCLOUD_SECRET_KEY": DEFAULT_SECRET_KEY})
        finally:
            os.close(fd)
        self.agent(node, wait=20)

    def _cloud_args(self, node: str) -> list[str]:
        """How the node's agent reaches the cloud: the VPC's unix socket, or the Tencent Cloud API on the
        node's own 127.0.0.1 (served from this process on a socket made inside the node's namespace)."""
        if self.cloud == "rpc":
            return ["--vpc", str(self.folder / "vpc.sock")]
        if node not in self.endpoints:
            self.backend.nodes[node].kernel.apply([nl.link_set(LOOPBACK_INDEX, up=True)])
            with netns.entered(self.backend.nodes[node].ns):
                server = TencentVpcServer(self.vpc, now=time.time, lock=self.lock, service=self.api)
            self.servers.append(server.start())
            self.endpoints[node] = f"http://{server.endpoint}"
        return ["--cloud", "tencent", "--endpoint", self.endpoints[node], "--region", REGION]

    def agent(self, node: str, wait: float = 0) -> RpcClient:
        deadline = time.monotonic() + wait
        while True:
            try:
                client = RpcClient(self._sock(node), timeout=20)
                client.call("ping")
                return client
            except OSError:
                if time.monotonic() >= deadline:
                    raise
                if self.agents[node].poll() is not None:
                    raise RuntimeError(f"the agent of {node} died: see {self.folder / (node + '.log')}") from None
                time.sleep(0.02)

    def kill_agent(self, node: str) -> None:
        os.kill(self.agents[node].pid, signal.SIGKILL)
        self.agents[node].wait()
        self.kills[node] = self.kills.get(node, 0) + 1

    def _cni(self, command: str, node: str, pod: str, ns: str) -> dict | None:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": pod, "CNI_NETNS": str(netns.path(ns)), "CNI_IFNAME": "eth0"}
        answer = RpcClient(self._sock(node), timeout=20).call("cni", env=env, stdin=json.dumps(CONF))
        if "error" in answer:
            raise CniError(answer["error"]["code"], answer["error"]["msg"])
        return answer["result"]

    def add_pod(self, node: str) -> str | None:
        self.seq, name = next_auto_name(self.seq, self.pods)
        ns = self.backend.run.netns(f"p{self.seq}")
        try:
            result = self._cni("ADD", node, name, ns)
        except (CniError, OSError, RuntimeError):
            self.half_added.append((node, name))
            netns.delete(ns)
            return None
        ip = IPv4Address(result["ips"][0]["address"].split("/")[0])
        self.pods[name] = Pod(name, node, self.seq, phase=PodPhase.RUNNING, ip=ip,
                              extra={"netns": ns, "veth": result["interfaces"][0]["name"]})
        self.backend.pods[name] = (node, ns)
        return name

    def delete_pod(self, name: str) -> bool:
        pod = self.pods[name]
        try:
            self._cni("DEL", pod.node, name, pod.extra["netns"])
        except (CniError, OSError, RuntimeError):
            return False
        netns.delete(pod.extra["netns"])
        del self.pods[name]
        self.backend.pods.pop(name, None)
        return True

    def settle(self) -> None:
        """What a runtime and a cloud do after trouble: DEL the ADDs that failed, and re-assert."""
        for node, pod in list(self.half_added):
            try:
                self.agent(node).call("del", pod=attachment_key(CONF["name"], pod, "eth0"))
                self.half_added.remove((node, pod))
            except OSError:
                continue
        with self.lock:
            self.backend.redeliver()
        for node in self.nodes:
            self.agent(node).call("reconcile")

    def datastores(self) -> dict[str, dict[str, Any]]:
        out = {}
        for node in self.nodes:
            st = self.agent(node).call("state")
            out[node] = {"enis": {e["id"]: {"mac": e["mac"], "ips": e["ips"]} for e in st["enis"]}}
        return out

    def audit(self) -> dict:
        """The agents are asked first, without the cloud's lock (see the lock order in
        `testbed.world.vpc_server`); the VPC and the kernels are then read under it. A change between the
        two reads shows as a disagreement that the next audit no longer finds."""
        datastores = self.datastores()
        wired = {attachment_key(CONF["name"], p, "eth0") for p in self.pods}
        with self.lock:
            return audit(self.vpc, datastores, {n: self.backend.nodes[n].kernel for n in self.nodes},
                         wired=lambda node, key: key in wired)

    def close(self) -> None:
        """Stop the agents and the servers, then remove the namespaces; again is a no-op."""
        if self.closed:
            return
        self.closed = True
        for proc in self.agents.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.agents.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in self.servers:
            server.close()
        self.backend.close()


def _drift(pc: ProcessCluster, rng: random.Random) -> str:
    """One hand edit on a random node or the fabric: what an operator or a stray script does."""
    node = rng.choice(list(pc.nodes))
    kernel = pc.backend.nodes[node].kernel
    pods = [p for p in pc.pods.values() if p.node == node]
    choice = rng.choice(["rule", "table", "route", "sysctl", "neighbour"])
    if choice == "rule" and pods:
        ip = rng.choice(pods).ip
        kernel.apply([nl.rule_msg(False, priority=routing.PRIO_FROM_POD, table=0, src=ip, src_len=32)])
        return f"{node}: deleted rule from {ip}"
    if choice == "table":
        tables = sorted({r.table for r in kernel.routes() if r.table in routing.ENI_TABLES})
        if tables:
            t = rng.choice(tables)
            kernel.apply([nl.route_msg(False, table=t, dst=None, dst_len=0)])
            return f"{node}: deleted default route of table {t}"
    if choice == "route" and pods:
        pod = rng.choice(pods)
        kernel.apply([nl.route_msg(False, table=nl.RT_TABLE_MAIN, dst=pod.ip, dst_len=32)])
        return f"{node}: deleted main route to {pod.ip}"
    if choice == "sysctl":
        kernel.write_sysctl("net.ipv4.conf.all.rp_filter", 1)
        return f"{node}: rp_filter=1 on all"
    entries = [e for e in pc.backend.fabric.neighbours() if e.state & nl.NUD_PERMANENT]
    if entries:
        e = rng.choice(entries)
        pc.backend.fabric.apply([nl.neigh_del(e.index, e.ip)])
        return f"fabric: deleted delivery neighbour {e.ip}"
    return "nothing to drift"


def _disturb(pc: ProcessCluster, rng: random.Random, action: str, node: str, base_pods: int) -> str:
    """One iteration's trouble; returns what was done, as the log says it."""
    if action == "kill":  # SIGKILL while the agent is busy with pods
        worker = threading.Thread(target=lambda: [pc.add_pod(node) for _ in range(2)], daemon=True)
        worker.start()
        time.sleep(rng.uniform(0, 0.03))
        pc.kill_agent(node)
        worker.join()
        pc.start_agent(node)
    elif action == "faults":
        pc.vpc.faults = STORMY
        for _ in range(3):
            pc.add_pod(node)
        victims = [p for p in pc.pods if pc.pods[p].node == node]
        if victims:
            pc.delete_pod(rng.choice(victims))
        pc.vpc.faults = FaultConfig()
    elif action == "drift":
        return _drift(pc, rng)
    else:
        pods = list(pc.pods)
        if len(pods) > base_pods and rng.random() < 0.6:
            pc.delete_pod(rng.choice(pods))
        else:
            pc.add_pod(node)
    return action


def _converge(pc: ProcessCluster, converge_s: float) -> dict | None:
    """Settle and audit until the audit passes or `converge_s` has passed; the last report."""
    deadline = time.monotonic() + converge_s
    report = None
    while time.monotonic() < deadline:
        pc.settle()
        report = pc.audit()
        if report["ok"]:
            break
        time.sleep(0.2)
    return report


ACTIONS = ("kill", "kill", "faults", "drift", "drift", "churn")  # drawn with equal odds: kills and drift twice
COUNTED = {"kill": "kills", "faults": "faults", "drift": "drifts"}


class _Tally:
    """The run's counts and failures; each failure names its iteration, seed and action."""

    def __init__(self, seed: int, log: Callable[[int, str, bool, list[str]], None] | None) -> None:
        self.seed, self.log = seed, log
        self.counts = {"iterations": 0, "kills": 0, "faults": 0, "drifts": 0, "audit_failures": 0,
                       "connectivity_failures": 0, "stuck_iterations": 0}
        self.failures: list[dict] = []

    def _fail(self, i: int, what: str, kind: str, **detail: Any) -> None:
        self.counts[kind] += 1
        self.failures.append({"iteration": i, "seed": self.seed, "action": what, **detail})

    def stuck(self, i: int, what: str, step: str, err: Exception) -> None:
        self.counts["iterations"] = i
        self._fail(i, what, "stuck_iterations", step=step, stuck=f"{type(err).__name__}: {err}")
        if self.log:
            self.log(i, f"{what}: stuck in {step} ({type(err).__name__}: {err})", False, [])

    def judge(self, i: int, what: str, report: dict | None, reach: dict[str, dict[str, bool]]) -> None:
        self.counts["iterations"] = i
        if not report or not report["ok"]:
            self._fail(i, what, "audit_failures", audit=report)
        lost = [p for p, row in reach.items() if not row["db-1"]]
        if lost:
            self._fail(i, what, "connectivity_failures", unreachable=lost)
        if self.log:
            self.log(i, what, report["ok"] if report else False, lost)

    @property
    def failed(self) -> int:
        return self.counts["audit_failures"] + self.counts["connectivity_failures"] + self.counts["stuck_iterations"]


def _chaos_spec(nodes: int, seed: int) -> ClusterSpec:
    """One subnet with a VPC host to reach, `nodes` nodes of 3 ENIs x 6 IPs, a small pool (2, 4)."""
    return ClusterSpec(
        subnets=(Subnet("subnet-a", IPv4Network("10.0.1.0/24")),),
        hosts=(HostSpec("db-1", "subnet-a", IPv4Address("10.0.1.250")),),
        nodes=tuple(NodeSpec(f"node-{i}", ("subnet-a",), 3, 6) for i in range(1, nodes + 1)),
        pool=PoolConfig(2, 4), seed=seed)


def run_chaos(iterations: int = 200, seed: int = 1, nodes: int = 2, pods_per_node: int = 4,
              converge_s: float = 8.0, log=None, cloud: str = "rpc") -> dict[str, Any]:
    """Run the iterations; every failure is reported with its iteration, seed and action. An iteration
    that gets stuck (an agent or the cloud stops answering) is a failure too, and ends the run: what
    comes after it would not be the same experiment."""
    from testbed.observe.traffic import matrix

    rng = random.Random(seed)
    pc = ProcessCluster(_chaos_spec(nodes, seed), cloud=cloud)
    folder = pc.folder
    tally = _Tally(seed, log)
    start = time.monotonic()
    try:
        for node in pc.nodes:
            for _ in range(pods_per_node):
                pc.add_pod(node)
        for i in range(1, iterations + 1):
            action = rng.choice(ACTIONS)
            node = rng.choice(list(pc.nodes))
            what, step = action, "disturb"
            try:
                what = _disturb(pc, rng, action, node, nodes * pods_per_node)
                if action in COUNTED:
                    tally.counts[COUNTED[action]] += 1
                step = "audit"
                report = _converge(pc, converge_s)
                step = "connectivity"
                reach = matrix(pc, targets=["db-1"]) if pc.pods else {}
            except (OSError, RuntimeError) as err:  # TimeoutError is an OSError
                tally.stuck(i, what, step, err)
                break
            tally.judge(i, what, report, reach)
    finally:
        pc.close()
        shutil.rmtree(folder, ignore_errors=True)  # the run took its state folder with it, as a rule
    return {**tally.counts, "ok": tally.failed == 0, "cloud": cloud, "pods": len(pc.pods),
            "seconds": round(time.monotonic() - start, 1), "seed": seed, "failures": tally.failures[:10]}
