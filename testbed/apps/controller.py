"""The controller of a long-lived cluster (`enilab up`): holds the cluster on the netns backend, moves
its clock with the wall clock, and serves a control socket plus one node-agent socket per node (for
`enilab-cni`). Other `enilab` commands, in other processes, find it through its folder under /run/enilab.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from eni_core.rpc import RpcClient, RpcServer
from testbed.world.runs import RUN_DIR

__all__ = ["Controller", "cluster_dir", "connect", "list_clusters", "make_backend"]

# ENILAB_CLUSTERS_DIR gives a private registry of clusters (the documentation's tests bring up clusters named
# like a newcomer's without meeting anyone else's); run records stay shared so cleanup sees every live run.
CLUSTERS = Path(os.environ.get("ENILAB_CLUSTERS_DIR") or RUN_DIR / "clusters")


def cluster_dir(name: str) -> Path:
    return CLUSTERS / name


def list_clusters() -> list[str]:
    return sorted(p.name for p in CLUSTERS.glob("*") if (p / "control.sock").exists())


def connect(name: str | None) -> tuple[str, RpcClient]:
    """The control client of the named cluster, or of the only one that is up."""
    from testbed.errors import UsageError

    names = list_clusters()
    if name is None:
        if not names:
            raise UsageError("no cluster is up; start one with `enilab up TOPOLOGY`")
        if len(names) > 1:
            raise UsageError(f"several clusters are up ({', '.join(names)}); pick one with --name")
        name = names[0]
    elif name not in names:
        raise UsageError(f"no cluster named {name!r} is up; up: {', '.join(names) or 'none'}")
    client = RpcClient(cluster_dir(name) / "control.sock", timeout=120)
    try:
        client.call("ping")
    except OSError:
        raise UsageError(f"cluster {name!r} does not answer (its controller died?); run `enilab clean`") from None
    return name, client


def make_backend(name: str):
    """The data-plane backend of a long-lived cluster: real namespaces, or pods as real containers."""
    if name == "containers":
        from testbed.world.backends.containers import ContainersBackend

        return ContainersBackend()
    from testbed.world.backends.netns import NetnsBackend

    return NetnsBackend()


class Controller:
    def __init__(self, topology: str, name: str, backend: str | None = None) -> None:
        from testbed.apps.runner import apply_step
        from testbed.world.cluster import Cluster
        from testbed.world.scenario import load_scenario

        self.name = name
        self.dir = cluster_dir(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        scenario = load_scenario(topology)
        self.backend = make_backend(backend or scenario.backend or "netns")
        self.lock = self.backend.lock
        self.cluster = Cluster(scenario.cluster, backend=self.backend)
        self.started = time.monotonic()
        with self.lock:
            for step in scenario.steps:
                apply_step(self.cluster, step)
            self.cluster.sync_dataplane()
        self.agents: dict[str, RpcServer] = {}
        self.stop = threading.Event()
        self.server = RpcServer(self.dir / "control.sock", self.handle)

    def _serve_agents(self) -> None:
        for node in list(self.cluster.nodes):
            if node not in self.agents:
                agent = self.backend.agent_for(node)
                self.agents[node] = RpcServer(self.dir / f"{node}.sock", agent.handle).start()
        for node in [n for n in self.agents if n not in self.cluster.nodes]:
            self.agents.pop(node).close()

    def handle(self, method: str, params: dict[str, Any]) -> Any:
        from testbed.apps.runner import seconds

        if method == "exec":  # outside the lock: a command may take its time
            return self._exec(params["pod"], params["argv"])
        with self.lock:
            c = self.cluster
            if method == "ping":
                return {"name": self.name, "pid": os.getpid()}
            if method == "state":
                return {"name": self.name, "backend": self.backend.name, "t": seconds(c.clock.now()),
                        "prefix": self.backend.run.prefix,
                        "agents": {n: str(self.dir / f"{n}.sock") for n in self.agents}, "state": c.state()}
            if method == "pods_add":
                names = params.get("names") or None
                pods = c.create_pods(params.get("count") or len(names or []), params.get("node"), names)
                c.sync_dataplane()
                return [p.name for p in pods]
            if method == "pods_del":
                names = params.get("names") or c.newest_pods(params.get("count") or 0)
                for n in names:
                    c.delete_pod(n)
                c.sync_dataplane()
                return names
            if method == "trace":
                from testbed.observe.traffic import probe

                c.sync_dataplane()
                return probe(c, params["src"], params["dst"], via=params.get("via")).to_dict()
            if method == "audit":
                from testbed.observe.audit import audit_cluster

                return audit_cluster(c)
            if method == "claims":
                return c.state()["claims"]
            if method == "claims_delete":
                c.reclaim_claim(params["claim"])
                return {"reclaimed": params["claim"]}
            if method == "graph":
                import networkx as nx

                from testbed.observe.topology import build_graph

                return nx.node_link_data(build_graph(c), edges="links")
            if method == "matrix":
                from testbed.observe.traffic import matrix

                return matrix(c, targets=params.get("targets"))
            if method == "sync":
                return {n: c.backend.sync(n).operations for n in c.nodes}
            if method == "down":
                self.stop.set()
                return {"stopping": self.name}
        raise ValueError(f"unknown method {method!r}")

    def _exec(self, pod: str, argv: list[str]) -> dict[str, Any]:
        from testbed.errors import UsageError

        if not hasattr(self.backend, "exec"):
            raise UsageError(f"cluster {self.name} runs pods as bare namespaces; `enilab exec` needs "
                             "`enilab up --backend containers`")
        with self.lock:
            if pod not in self.cluster.pods:
                raise UsageError(f"cluster {self.name} has no pod {pod!r}")
        code, out, err = self.backend.exec(pod, argv)
        return {"exit_code": code, "stdout": out.decode(errors="surrogateescape"),
                "stderr": err.decode(errors="surrogateescape")}

    def serve(self) -> None:
        self._serve_agents()
        self.server.start()
        (self.dir / "controller.pid").write_text(str(os.getpid()))
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        while not self.stop.wait(0.5):
            with self.lock:
                self.cluster.run_until(time.monotonic() - self.started)
                self._serve_agents()
        self.close()

    def close(self) -> None:
        self.server.close()
        for server in self.agents.values():
            server.close()
        with self.lock:
            self.cluster.close()
        for f in self.dir.glob("*"):
            f.unlink(missing_ok=True)
        self.dir.rmdir()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="enilab-controller")
    p.add_argument("topology")
    p.add_argument("--name", required=True)
    p.add_argument("--backend", choices=["netns", "containers"])
    args = p.parse_args(argv)
    try:
        controller = Controller(args.topology, args.name, args.backend)
    except Exception as err:  # reported to `enilab up`, which waits on our output
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
        return 2
    print(json.dumps({"ready": args.name}), flush=True)
    controller.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
