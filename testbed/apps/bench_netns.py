"""Benchmarks on real namespaces (root): bring-up of a cluster and CNI ADD latency, each with its
baseline measured in the same run."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from eni_core import netns
from eni_core.model import PoolConfig, Subnet
from testbed.apps.measure import peak_rss_mb
from testbed.world.runs import Run
from testbed.world.spec import ClusterSpec, HostSpec, NodeSpec

__all__ = ["bench_bringup", "bench_cni"]


def _spec(nodes: int, pods_per_node: int, min_prebound: int = 5) -> ClusterSpec:
    per_eni = 15
    enis = max(2, -(-(pods_per_node + min_prebound) // per_eni))
    return ClusterSpec(subnets=(Subnet("subnet-a", IPv4Network("10.0.0.0/16")),),
                       hosts=(HostSpec("db-1", "subnet-a", IPv4Address("10.0.255.250")),),
                       nodes=tuple(NodeSpec(f"node-{i}", ("subnet-a",), enis, per_eni) for i in range(1, nodes + 1)),
                       pool=PoolConfig(min_prebound, min_prebound))


def _namespaces_alive() -> int | None:
    """Network namespaces the kernel still holds, dying ones included (slab objects), if readable."""
    try:
        for line in Path("/proc/slabinfo").read_text().splitlines():
            if line.startswith("net_namespace "):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _quiet(limit_s: float = 20.0) -> float:
    """Wait until the kernel has freed the namespaces of earlier runs (a worker does it seconds later,
    mostly waiting on RCU, so an idle CPU does not mean it is done) and the CPU is idle: a measurement
    should not pay for the previous one's teardown. Returns the seconds waited."""
    start = time.monotonic()
    last, still = _namespaces_alive(), 0
    while last is not None and time.monotonic() - start < limit_s and still < 4:
        time.sleep(0.25)
        now = _namespaces_alive()
        still = still + 1 if now is not None and now >= last else 0
        last = now

    def busy() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields) - fields[3] - fields[4], sum(fields)

    while time.monotonic() - start < limit_s:
        b0, t0 = busy()
        time.sleep(0.25)
        b1, t1 = busy()
        if (b1 - b0) / max(t1 - t0, 1) < 0.1:
            break
    return time.monotonic() - start


def _naive(pods: int) -> tuple[float, float]:
    """The Mininet way: one `ip` process per operation, the same per-pod operations as enilab's.
    Returns (ms per pod, teardown seconds)."""
    run = Run.new()
    fab, node = run.reserve("fabric"), run.reserve("n1")

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        for ns in (fab, node):
            ip("netns", "add", ns)
        ip("-n", node, "link", "add", "eth1", "index", "3", "address", "52:54:00:aa:00:01", "type", "veth",
           "peer", "name", "n1e1", "netns", fab)
        ip("-n", node, "link", "set", "eth1", "up")
        ip("-n", fab, "link", "set", "n1e1", "up")
        ip("-n", node, "addr", "add", "10.9.255.5/32", "dev", "eth1")
        ip("-n", node, "route", "add", "default", "via", "10.9.0.1", "dev", "eth1", "onlink", "table", "2003")
        start = time.perf_counter()
        for i in range(pods):
            pod, veth, addr = run.reserve(f"p{i}"), f"veth{i}", f"10.9.{i // 250}.{i % 250 + 2}"
            ip("netns", "add", pod)
            ip("-n", node, "link", "add", veth, "index", str(64 + i), "address", "02:00:00:00:01:01", "type", "veth",
               "peer", "name", "eth0", "netns", pod)
            ip("-n", pod, "link", "set", "lo", "up")
            ip("-n", pod, "link", "set", "eth0", "up")
            ip("-n", pod, "addr", "add", f"{addr}/32", "dev", "eth0")
            ip("-n", pod, "neigh", "add", "169.254.1.1", "lladdr", "02:00:00:00:01:01", "dev", "eth0", "nud",
               "permanent")
            ip("-n", pod, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
            ip("-n", pod, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
            ip("-n", node, "link", "set", veth, "up")
            ip("-n", node, "route", "add", addr, "dev", veth, "scope", "link")
            ip("-n", node, "rule", "add", "to", addr, "lookup", "main", "priority", "512")
            ip("-n", node, "rule", "add", "from", addr, "lookup", "2003", "priority", "1536")
            ip("-n", fab, "route", "add", addr, "dev", "n1e1", "scope", "link")
            ip("-n", fab, "neigh", "add", addr, "lladdr", "52:54:00:aa:00:01", "dev", "n1e1", "nud", "permanent")
        per_pod = (time.perf_counter() - start) / pods * 1000
        start = time.perf_counter()
        for name in run.namespaces():
            ip("netns", "del", name)
        return per_pod, time.perf_counter() - start
    finally:
        run.remove()


def bench_bringup(nodes: int = 10, pods_per_node: int = 50, baseline_pods: int = 40) -> dict[str, Any]:
    from testbed.observe.traffic import matrix
    from testbed.world.backends.netns import NetnsBackend
    from testbed.world.cluster import Cluster

    pods = nodes * pods_per_node
    waited = _quiet()
    baseline, baseline_teardown = _naive(baseline_pods)  # first, so our teardown's aftermath cannot slow it
    waited += _quiet()
    t0 = time.perf_counter()
    cluster = Cluster(_spec(nodes, pods_per_node), backend=NetnsBackend())
    setup = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        for i in range(1, nodes + 1):
            cluster.create_pods(pods_per_node, f"node-{i}")
        wire = time.perf_counter() - t0
        running = sum(p.phase == "Running" for p in cluster.pods.values())
        t0 = time.perf_counter()
        reach = matrix(cluster, targets=["db-1"])
        verify = time.perf_counter() - t0
        verified = sum(row["db-1"] for row in reach.values())
        rss = peak_rss_mb()
    finally:
        t0 = time.perf_counter()
        cluster.close()
        teardown = time.perf_counter() - t0
    wire_ms = wire / pods * 1000
    return {
        "nodes": nodes, "pods": pods, "running": running, "setup_s": round(setup, 3),
        "wire_ms_per_pod": round(wire_ms, 3), "total_s": round(setup + wire, 3), "verify_s": round(verify, 3),
        "verified": verified, "teardown_s": round(teardown, 3), "peak_rss_mb": round(rss, 1),
        "baseline": "one `ip` process per operation (the Mininet way)", "baseline_pods": baseline_pods,
        "baseline_wire_ms_per_pod": round(baseline, 3), "baseline_teardown_s_per_pod": round(
            baseline_teardown / baseline_pods, 4), "speedup": round(baseline / wire_ms, 1),
        "targets": {"wire_ms_per_pod": 3.0, "teardown_s": 1.0, "speedup": 10, "peak_rss_mb": 300},
        "within_target": wire_ms <= 3.0 and teardown <= 1.0 and baseline / wire_ms >= 10 and rss <= 300
        and verified == pods,
        "waited_for_kernel_s": round(waited, 1), "cores": os.cpu_count(),
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": round(q[49] * 1000, 3), "p99_ms": round(q[98] * 1000, 3), "n": len(samples)}


REFERENCE_PLUGINS = Path("/usr/lib/cni")  # Debian's containernetworking-plugins


def _timed(argv: list[str], env: dict[str, str], body: bytes, host_fd: int) -> float:
    """Run one CNI call as a runtime does (from the runtime's host namespace); its wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, input=body, env=env, capture_output=True, preexec_fn=lambda: netns.setns(host_fd),
                          pass_fds=(host_fd,))
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} ADD failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    return elapsed


def bench_cni(adds: int = 300, exec_adds: int = 40) -> dict[str, Any]:
    """ADD latency on a warm pool: in-process (the handler the agent runs), and through the installed
    `enilab-cni` executable as a runtime runs it (env + stdin, from a scratch host namespace, the agent
    found by netconf `cluster`/`node`), against Debian's Go `ptp` + `host-local` run the same way in the
    same run, turn about. The namespace a runtime makes for the pod is made before the clock starts."""
    import shutil

    from eni_core.cni import CniRequest, handle, install_plugin
    from eni_core.rpc import RpcServer
    from testbed.world.backends.netns import NetnsBackend
    from testbed.world.cluster import Cluster

    total = adds + exec_adds
    _quiet()
    cluster = Cluster(_spec(1, total, min_prebound=total + 5), backend=NetnsBackend())
    backend = cluster.backend
    agent = backend.agent_for("node-1")
    conf = {"cniVersion": "1.0.0", "name": "enilab"}
    folder = Path(tempfile.mkdtemp(prefix="enilab-bench-"))
    registered = folder / "run" / "clusters" / "bench"
    servers = [RpcServer(registered / "control.sock", lambda m, p: {"name": "bench"}).start(),
               RpcServer(registered / "node-1.sock", agent.handle).start()]
    plugin = install_plugin(str(folder / "bin"), sys.executable)
    reference = REFERENCE_PLUGINS / "ptp"
    has_reference = reference.exists() and (REFERENCE_PLUGINS / "host-local").exists()
    ref_conf = json.dumps({"cniVersion": "1.0.0", "name": "bench-ref", "type": "ptp", "ipMasq": False,
                           "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/16"}]],
                                    "dataDir": str(folder / "host-local")}}).encode()
    host = backend.run.netns("host")
    made: list[str] = [host]

    def new_netns(what: str) -> str:
        name = backend.run.netns(what)
        made.append(name)
        return str(netns.path(name))

    try:
        in_process = []
        for i in range(adds):
            req = CniRequest("ADD", f"bench-{i}", new_netns(f"b{i}"), "eth0", {}, conf)
            t0 = time.perf_counter()
            handle(req, lambda m, **p: agent.handle(m, p), agent.dataplane)
            in_process.append(time.perf_counter() - t0)
        executable, ptp, starts = [], [], []
        host_fd = os.open(netns.path(host), os.O_RDONLY)
        try:
            body = json.dumps({**conf, "type": "enilab-cni", "cluster": "bench", "node": "node-1"}).encode()
            for i in range(exec_adds):
                env = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"exec-{i}",
                       "CNI_NETNS": new_netns(f"x{i}"), "CNI_IFNAME": "eth0", "CNI_PATH": str(folder / "bin"),
                       "ENILAB_RUN_DIR": str(folder / "run")}
                executable.append(_timed([plugin], env, body, host_fd))
                if has_reference:
                    env = {**env, "CNI_CONTAINERID": f"ref-{i}", "CNI_NETNS": new_netns(f"r{i}"),
                           "CNI_PATH": str(REFERENCE_PLUGINS)}
                    ptp.append(_timed([str(reference)], env, ref_conf, host_fd))
            for _ in range(5):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-IS", "-c", "pass"], check=True)
                starts.append(time.perf_counter() - t0)
        finally:
            os.close(host_fd)
    finally:
        for server in servers:
            server.close()
        for ns in made:
            netns.delete(ns)
        cluster.close()
        shutil.rmtree(folder, ignore_errors=True)
    inp, exe = _percentiles(in_process), _percentiles(executable)
    ref = {"plugin": "ptp + host-local (Debian containernetworking-plugins)", **_percentiles(ptp)} if ptp else None
    within = inp["p50_ms"] <= 5 and inp["p99_ms"] <= 20 and (ref is None or exe["p50_ms"] <= 2 * ref["p50_ms"])
    return {
        "in_process": inp, "executable": exe, "reference": ref,
        "executable_over_reference": round(exe["p50_ms"] / ref["p50_ms"], 2) if ref else None,
        "bare_python_start_ms": round(statistics.median(starts) * 1000, 1),
        "baseline": "the reference plugin's ADD, run the same way in the same run; a bare `python -IS -c pass` "
                    "start is the floor of any Python executable",
        "targets": {"in_process_p50_ms": 5, "in_process_p99_ms": 20, "executable_p50_over_reference": 2},
        "within_target": within,
        "cores": os.cpu_count(),
    }


def bench_bringup_containers(nodes: int = 2, pods_per_node: int = 10) -> dict[str, Any]:
    """Bring-up with every pod a container (the containers backend: engine start, image, `enilab-cni` per pod)
    beside the same cluster on the namespaces backend, in the same run; each pod's HTTP answer is checked
    from a VPC host."""
    from testbed.world.backends.containers import ContainersBackend
    from testbed.world.backends.netns import NetnsBackend
    from testbed.world.cluster import Cluster

    pods = nodes * pods_per_node
    figures: dict[str, dict[str, float]] = {}
    verified = 0
    for kind in ("netns", "containers"):
        _quiet()
        t0 = time.perf_counter()
        cluster = Cluster(_spec(nodes, pods_per_node), backend=ContainersBackend() if kind == "containers"
                          else NetnsBackend())
        setup = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            for i in range(1, nodes + 1):
                cluster.create_pods(pods_per_node, f"node-{i}")
            wire = time.perf_counter() - t0
            if kind == "containers":
                verified = sum(cluster.backend.http("db-1", str(p.ip)) == f"{p.name}\n" for p in cluster.pods.values())
        finally:
            t0 = time.perf_counter()
            cluster.close()
            teardown = time.perf_counter() - t0
        figures[kind] = {"setup_s": round(setup, 3), "ms_per_pod": round(wire / pods * 1000, 3),
                         "teardown_s": round(teardown, 3)}
    ratio = figures["containers"]["ms_per_pod"] / figures["netns"]["ms_per_pod"]
    return {"nodes": nodes, "pods": pods, "backend": "containers", "containers": figures["containers"],
            "namespaces": figures["netns"], "verified_http": verified, "containers_over_namespaces": round(ratio, 1),
            "within_target": verified == pods, "cores": os.cpu_count()}
