"""The controller of a long-lived cluster (`enilab up`): holds the cluster on the netns backend, moves
its clock with the wall clock, and serves a control socket plus one node-agent socket per node (for
`enilab-cni`). Other `enilab` commands, in other processes, find it through its folder under /run/enilab.

A cluster's folder, `/run/enilab/clusters/<name>` (0700, the name a DNS label), holds:
- `lock`: the controller holds an exclusive flock on it for its whole life, so of two controllers of
  one name exactly one runs, and whoever takes the lock knows that no controller of that name is alive;
- `owner.json` (0600): the controller's pid and process start time, its run's prefix (which names its
  namespaces in the run record) and the files it made here; a command that finds the owner dead and
  takes the lock removes exactly those (and the run's namespaces), with one message;
- `control.sock`, `<node>.sock` (0600) and `controller.log` (0600).
The controller deletes only the files it made, by name, and the folder only when nothing else is in it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from eni_core.names import InvalidName, Parser, dns_label
from eni_core.private import atomic_temps, open_private, private_dir, read_private, write_atomic
from eni_core.rpc import RpcClient, RpcServer, SocketPathTooLong, check_socket_path
from testbed.errors import UsageError, UserError
from testbed.world import runs

__all__ = ["ClusterFolder", "Controller", "clean_clusters", "cluster_dir", "connect", "list_clusters",
           "make_backend", "pick"]

# ENILAB_CLUSTERS_DIR gives a private registry of clusters (the documentation's tests bring up clusters named
# like a newcomer's without meeting anyone else's); run records stay shared so cleanup sees every live run.
CLUSTERS = Path(os.environ.get("ENILAB_CLUSTERS_DIR") or runs.RUN_DIR / "clusters")
LOCK, OWNER, CONTROL, LOG = "lock", "owner.json", "control.sock", "controller.log"


def cluster_dir(name: str) -> Path:
    """The folder of the cluster `name`; `InvalidName` unless the name is a DNS label."""
    return CLUSTERS / dns_label(name)


def agent_socket_name(node: str) -> str:
    """The file name of a node agent's socket; `InvalidName` unless the node name is a DNS label."""
    return f"{dns_label(node)}.sock"


def _made_by_a_controller(file: object) -> bool:
    """Whether an owner record may name this file: only names a controller makes, never a path."""
    if file in (CONTROL, LOG):
        return True
    if not isinstance(file, str) or not file.endswith(".sock"):
        return False
    try:
        return agent_socket_name(file.removesuffix(".sock")) == file
    except InvalidName:
        return False


class ClusterFolder:
    """One cluster's folder: its lock, its owner record, and the files its controller made there."""

    def __init__(self, name: str) -> None:
        self.path = cluster_dir(name)
        self.name = name
        self.files: list[str] = []
        self.prefix: str | None = None
        self._fd: int | None = None

    # -- who owns it --------------------------------------------------------------------------------
    def owner(self) -> dict[str, Any] | None:
        """The owner record, or None if there is none (or it cannot be read)."""
        text = read_private(self.path / OWNER)  # this user's own file, not a link or FIFO
        try:
            record = json.loads(text) if text is not None else None
        except (ValueError, RecursionError):
            return None
        return record if isinstance(record, dict) else None

    def alive(self) -> bool:
        owner = self.owner()
        return owner is not None and runs.owner_alive(owner)

    def lock(self, wait: float = 0.0) -> bool:
        """Take the folder's exclusive lock (making the folder if needed), waiting up to `wait` seconds;
        False if another process holds it. Held until `release` or this process's end."""
        deadline = time.monotonic() + wait
        while True:
            private_dir(CLUSTERS)
            private_dir(self.path)
            try:
                fd = open_private(self.path / LOCK, os.O_RDWR | os.O_CREAT)
            except FileNotFoundError:  # the folder went away (its controller just stopped): make it again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
                continue
            # the holder may have removed the file between our open and our lock: then lock the new one
            try:
                same = os.stat(self.path / LOCK).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file and, if nothing else is left in it, the folder; then let the lock go."""
        (self.path / LOCK).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: someone put a file here; it stays, and so does the folder
            self.path.rmdir()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- what it holds ------------------------------------------------------------------------------
    def claim(self, prefix: str | None = None) -> None:
        """Write this process as the owner (with the lock held), with its run's prefix once it has one."""
        self.prefix = prefix
        self._save()

    def _save(self) -> None:
        write_atomic(self.path / OWNER, json.dumps({**runs.this_process(), "prefix": self.prefix, "files": self.files}))

    def add(self, file: str) -> Path:
        """Record a file this controller is about to make here; its path."""
        if not _made_by_a_controller(file):
            raise ValueError(f"{file!r} is not a file a controller makes")
        if file not in self.files:
            self.files.append(file)
            self._save()
        return self.path / file

    def remove_files(self, files: list[str]) -> None:
        """Delete these files (names a controller makes) and the owner record; nothing else."""
        for file in files:
            if _made_by_a_controller(file):
                (self.path / file).unlink(missing_ok=True)
        (self.path / OWNER).unlink(missing_ok=True)

    def reclaim(self) -> str | None:
        """With the lock held: remove what a dead controller left here (its run's namespaces and the files it
        recorded). A sentence saying what was removed, or None if no controller had been here."""
        owner = self.owner()
        if owner is None:
            return None
        prefix = owner.get("prefix")
        run = runs.Run.load(prefix) if isinstance(prefix, str) else None
        # only the dead controller's own run: its record names the same process, and that process is dead
        theirs = run is not None and not runs.owner_alive(run.info) and \
            (run.info.get("pid"), run.info.get("start")) == (owner.get("pid"), owner.get("start"))
        gone = run.remove() if theirs else []
        files = owner.get("files") if isinstance(owner.get("files"), list) else []
        self.remove_files(files)
        for temp in atomic_temps(self.path / OWNER):  # a rewrite of the owner record it was killed in
            temp.unlink(missing_ok=True)
        return (f"cluster {self.name}: its controller (pid {owner.get('pid')}) had died; removed the "
                f"{len(gone)} namespaces and {len(files)} files it left")


def _folders() -> list[ClusterFolder]:
    from testbed.errors import UsageError

    try:
        paths = sorted(CLUSTERS.iterdir())
    except FileNotFoundError:
        return []
    except PermissionError:
        raise UsageError(f"clusters are kept in {CLUSTERS}, which only their owner (root) may read; "
                         "run this as root") from None
    out = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(InvalidName):  # not a folder enilab makes
                out.append(ClusterFolder(path.name))
    return out


def list_clusters() -> dict[str, bool]:
    """Every cluster with an owner record: name -> whether its controller is alive."""
    return {f.name: f.alive() for f in _folders() if f.owner() is not None}


def clean_clusters() -> dict[str, str]:
    """Remove what dead controllers left (their namespaces, the files they recorded, their folders when
    empty); never a live controller's. Name -> what was removed."""
    out = {}
    for folder in _folders():
        try:
            if not folder.alive() and folder.lock():  # the lock: no controller of that name is coming up now
                note = folder.reclaim()
                folder.release()
                if note:
                    out[folder.name] = note
        except OSError as err:  # another user's folder, a lock that is a symlink: named, and left alone
            out[folder.name] = f"cluster {folder.name}: left alone: {err}"
    return out


def _dead(folder: ClusterFolder) -> str:
    pid = (folder.owner() or {}).get("pid")
    return (f"cluster {folder.name} is not running: its controller (pid {pid}) died; "
            f"`enilab down --name {folder.name}` removes what it left")


def pick(name: str | None) -> ClusterFolder:
    """The named cluster's folder (validated), or the only cluster's; `UsageError` if there is none."""
    from testbed.errors import UsageError

    if name is not None:
        try:
            folder = ClusterFolder(name)
        except InvalidName as err:
            raise UsageError(f"--name: {err}") from None
        if folder.owner() is None:
            up = [n for n, alive in list_clusters().items() if alive]
            raise UsageError(f"no cluster named {name!r} is up; up: {', '.join(up) or 'none'}")
        return folder
    clusters = list_clusters()
    if not clusters:
        raise UsageError("no cluster is up; start one with `enilab up TOPOLOGY`")
    live = [n for n, alive in clusters.items() if alive]
    if len(clusters) > 1 and len(live) != 1:
        raise UsageError(f"there are several clusters ({', '.join(clusters)}); pick one with --name")
    return ClusterFolder(live[0] if live else next(iter(clusters)))


def connect(name: str | None) -> tuple[str, RpcClient]:
    """The control client of the named cluster, or of the only one that is up."""
    from testbed.errors import UsageError

    folder = pick(name)
    if not folder.alive():
        raise UsageError(_dead(folder))
    client = RpcClient(folder.path / CONTROL, timeout=120, peer=f"cluster {folder.name}'s controller")
    try:
        client.call("ping")
    except OSError:
        pid = (folder.owner() or {}).get("pid")
        raise UsageError(f"cluster {folder.name}'s controller (pid {pid}) runs but does not answer; "
                         f"stop it (`kill {pid}`), then `enilab down --name {folder.name}`") from None
    return folder.name, client


def make_backend(name: str, run: runs.Run | None = None):
    """The data-plane backend of a long-lived cluster: real namespaces, or pods as real containers."""
    if name == "containers":
        from testbed.world.backends.containers import ContainersBackend

        return ContainersBackend(run)
    from testbed.world.backends.netns import NetnsBackend

    return NetnsBackend(run)


def _pods_asked(names: object, count: object) -> tuple[list[str] | None, int]:
    """The pods a client names (each a pod name, as a scenario's are) or counts, within a scenario step's
    bounds: (names or None, count). Refused with one line, before anything is made."""
    from eni_core.names import pod_name
    from testbed.errors import UsageError
    from testbed.world.scenario import MAX_PODS_PER_STEP

    if count is not None and (type(count) is not int or not 0 <= count <= MAX_PODS_PER_STEP):
        raise UsageError(f"--count {str(count)[:20]}: give 1 to {MAX_PODS_PER_STEP:,} pods")
    if not names:
        return None, count or 0
    if not isinstance(names, list) or len(names) > MAX_PODS_PER_STEP:
        raise UsageError(f"name at most {MAX_PODS_PER_STEP:,} pods at once")
    try:
        names = [pod_name(n) for n in names]
    except InvalidName as err:
        raise UsageError(f"{err}; a pod is named as in Kubernetes, e.g. web-0 or default/web-0") from None
    if len(set(names)) != len(names):
        raise UsageError("a pod is named twice")
    return names, 0


class Controller:
    def __init__(self, topology: str, folder: ClusterFolder, backend: str | None = None) -> None:
        from testbed.apps.runner import apply_steps
        from testbed.world.cluster import Cluster
        from testbed.world.scenario import load_scenario

        self.name = folder.name
        self.folder = folder
        scenario = load_scenario(topology)
        try:
            check_socket_path(folder.path / CONTROL)  # the cluster's own, and below each node's
        except SocketPathTooLong as err:
            raise UsageError(f"cluster {self.name}: {err}") from None
        for node in scenario.cluster.nodes:  # a node's name becomes a socket's: refuse a bad one before anything
            try:
                check_socket_path(folder.path / agent_socket_name(node.name))
            except SocketPathTooLong as err:
                raise UsageError(f"node {node.name}: {err}") from None
        # the owner record names the run before the backend makes anything (the containers backend takes
        # seconds to start its engine): a controller killed meanwhile is reclaimed whole by `enilab down`
        run = runs.Run.new(cluster=self.name)
        folder.claim(run.prefix)
        try:
            self.backend = make_backend(backend or scenario.backend or "netns", run)
        except BaseException:
            run.remove()  # what the backend made before it failed, and the record
            raise
        self.lock = self.backend.lock
        try:
            # no event log kept: nothing reads it, and a cluster that lives for days would keep growing it
            self.cluster = Cluster(scenario.cluster, backend=self.backend, keep_events=False)
            self.started = time.monotonic()
            with self.lock:  # then its timers fire as the wall clock moves: bounded by it
                apply_steps(self.cluster, scenario.steps, scenario.source)
                self.cluster.sync_dataplane()
        except BaseException:
            self.backend.close()
            raise
        self.agents: dict[str, RpcServer] = {}
        self.stop = threading.Event()
        self.server = RpcServer(folder.add(CONTROL), self.handle)

    def _serve_agents(self) -> None:
        for node in list(self.cluster.nodes):
            if node not in self.agents:
                agent = self.backend.agent_for(node)
                self.agents[node] = RpcServer(self.folder.add(agent_socket_name(node)), agent.handle).start()
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
                        "agents": {n: str(s.path) for n, s in self.agents.items()}, "state": c.state()}
            if method == "pods_add":
                names, count = _pods_asked(params.get("names"), params.get("count"))
                pods = c.create_pods(count or len(names or []), params.get("node"), names)
                c.sync_dataplane()
                return [p.name for p in pods]
            if method == "pods_del":
                names, count = _pods_asked(params.get("names"), params.get("count"))
                names = names or c.newest_pods(count)
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
                if not c.reclaim_claim(params["claim"]):
                    raise UserError(f"claim {params['claim']} is gone already (reclaimed or expired); "
                                    "`enilab claims list` shows the claims")
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
        self.folder.remove_files(self.folder.files)
        self.folder.release()


def _answer(**what: Any) -> None:
    print(json.dumps(what), flush=True)


class _Parser(Parser):
    """A refused argument is answered on stdout too, as every other refusal is (`enilab up` waits on it)."""

    def error(self, message: str) -> NoReturn:
        _answer(error=self.tidy(message))
        super().error(message)


def main(argv: list[str] | None = None) -> int:
    """Run a controller; its first line on stdout is `{"ready": NAME}` (with `"reclaimed"` when it removed
    a dead controller's leftovers first) or `{"error": MESSAGE}` (exit 2; `"busy": true` when another
    controller of that name holds the lock)."""
    p = _Parser(prog="enilab-controller")
    p.add_argument("topology")
    p.add_argument("--name", required=True)
    p.add_argument("--backend", choices=["netns", "containers"])
    args = p.parse_args(argv)
    try:
        folder = ClusterFolder(args.name)
    except InvalidName as err:
        _answer(error=f"--name: {err}")
        return 2
    if not folder.lock(wait=2.0) or folder.alive():  # wait long enough for a `down` or `clean` that holds it
        _answer(busy=True, error=f"cluster {args.name} is up already, or coming up; `enilab down --name "
                                 f"{args.name}` first, or pick another --name")
        return 2
    try:
        reclaimed = folder.reclaim()
        folder.claim()
        log = open_private(folder.add(LOG))
    except OSError as err:  # a full disk, say: said in one line, and the folder goes as it came
        _answer(error=f"cannot keep cluster {args.name}'s state in {folder.path}: {err.strerror or err}")
        folder.remove_files(folder.files)
        folder.release()
        return 2
    os.dup2(log, sys.stderr.fileno())  # from here on, the log; what came before reached `enilab up` on its pipe
    os.close(log)
    try:
        controller = Controller(args.topology, folder, args.backend)
    except Exception as err:  # reported to `enilab up`, which waits on our output
        _answer(error=str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}")
        folder.remove_files(folder.files)
        folder.release()
        return 2
    try:
        _answer(ready=args.name, **({"reclaimed": reclaimed} if reclaimed else {}))
    except BrokenPipeError:  # `enilab up` is gone (killed): nobody was told the cluster is up, so it goes
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what is left to flush goes to the log
        print(f"enilab-controller: {args.name}: `enilab up` went before it heard the cluster was up; "
              "taking it down", file=sys.stderr)
        controller.close()
        return 1
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # `enilab up` stops reading after that line
    controller.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
