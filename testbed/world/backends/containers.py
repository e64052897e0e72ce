"""The `containers` backend: every pod is a real container of a Docker Engine API (docker-py); nodes, the
fabric and the VPC hosts stay namespaces, as on the `netns` backend it extends.

A pod's container is created with network mode `none`, then wired as a container runtime wires one: the
`enilab-cni` executable runs with CNI_COMMAND=ADD, CNI_CONTAINERID, CNI_NETNS=/proc/<pid>/ns/net,
CNI_IFNAME, CNI_PATH and CNI_ARGS (K8S_POD_NAME, as a kubelet passes it) in its environment and the
network configuration on stdin. It reaches the node agent on a socket this backend serves on the calling
thread for that one request (the cluster holds the agents' lock while it starts a pod), and the agent
files the address under the pod the scheduler placed. DEL runs the same way before the container goes.
The container's namespace is also named `<run prefix>-pN` (a bind mount), so traces, the matrix and
cleanup see it like any pod namespace, and DEL still finds it after the container has died.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

from eni_core import cni, netns
from eni_core.cni import CniError, Dataplane
from eni_core.datastore import Allocation
from eni_core.kernel import NetlinkPort
from eni_core.private import private_dir
from eni_core.routing import host_veth_name
from testbed.world.backends.netns import NetnsBackend
from testbed.world.cluster import ClusterError
from testbed.world.engine import DEFAULT_IMAGE, Engine, EngineError, open_engine, own_state
from testbed.world.runs import Run

__all__ = ["HTTPD", "ContainerError", "ContainersBackend", "Workload"]

NETWORK = "enilab-pods"
CNI_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 5  # busybox wget's own -T crashes the static busybox here: `timeout` bounds it
# the default image's command: busybox httpd on port 80, answering the pod's own name
HTTPD = ["sh", "-c", 'echo "$ENILAB_POD" > /www/index.html && exec httpd -f -p 80 -h /www']


class ContainerError(ClusterError):
    """A pod's container could not be made or wired (missing image, exited at once, CNI refused)."""


Workload = tuple[str, list[str] | None]  # (image, command or None for the image's own)


def _exited_at_once(container, pod: str, image: str) -> ContainerError:
    import docker
    import requests

    logs = ""
    with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
        container.wait(timeout=10)  # the exit code is known once it has been reaped
        container.reload()
        logs = container.logs(tail=3).decode(errors="replace").strip()
    return ContainerError(f"pod {pod}: its container ({image}) exited at once with code "
                          f"{container.attrs['State']['ExitCode']}" + (f": {logs}" if logs else "")
                          + "; check the image's command")


def _stop_engine(engine: Engine, created: list[str]) -> None:
    """Remove what the engine ran for this run: its containers (on a shared engine, by id) and the service."""
    if engine.service is None:
        for cid in created:
            with contextlib.suppress(Exception):
                engine.client.containers.get(cid).remove(force=True)
    engine.close()


class ContainersBackend(NetnsBackend):
    name = "containers"

    def __init__(self, run: Run | None = None) -> None:
        super().__init__(run)
        self.state_dir = own_state(self.run.prefix)
        self.created: list[str] = []  # container ids, in the run record for `enilab clean`
        try:
            self.engine = open_engine(self.state_dir)
            self.default_image = self.engine.ensure_default_image()
            # private like the rest of the run's state, whatever the umask: the engine runs as this user
            self.plugin = Path(cni.install_plugin(private_dir(self.state_dir / "cni-bin"), sys.executable))
        except BaseException as err:
            if hasattr(self, "engine"):
                self.engine.close()
            NetnsBackend.close(self)
            if isinstance(err, Exception) and not isinstance(err, EngineError):
                raise EngineError(f"the container engine refused: {err}") from err
            raise
        self._engine_finalizer = weakref.finalize(self, _stop_engine, self.engine, self.created)
        self.workloads: dict[str, Workload] = {}
        self.containers: dict[str, dict[str, Any]] = {}  # pod -> id, pid, image, netns
        self._record()

    def _record(self) -> None:
        self.run.update(engine=self.engine.record(), containers=self.created)

    # -- what a pod runs -----------------------------------------------------------------------------
    def declare(self, pods: list[str], image: str | None, command: list[str] | None) -> None:
        """The image and command of pods about to be created; refused if the engine lacks the image
        (enilab pulls from no registry)."""
        image = image or self.default_image
        if not self.engine.has_image(image):
            raise ContainerError(f"image {image} is not in the engine ({self.engine.endpoint}); enilab pulls "
                                 "from no registry: load it into the engine first (docker load / podman load)")
        for pod in pods:
            self.workloads[pod] = (image, command)

    # -- pods ----------------------------------------------------------------------------------------
    def pod_up(self, node: str, pod: str, alloc: Allocation) -> dict:
        image, command = self.workloads.pop(pod, (self.default_image, None))
        if command is None and image == DEFAULT_IMAGE:
            command = HTTPD
        self._pod_seq += 1
        # recorded before it is pinned; the container's name too: pod names need not suit the engine
        ns = self.run.reserve(f"p{self._pod_seq}")
        try:
            container = self.engine.client.containers.run(
                image, command, name=ns, hostname=pod, detach=True, network_mode="none",
                environment={"ENILAB_POD": pod}, labels={"enilab.run": self.run.prefix, "enilab.pod": pod})
        except BaseException:  # made but refused to start (runc), say: not left in the engine
            with contextlib.suppress(Exception):
                made = self.engine.client.containers.get(ns)
                # only ours: on a shared engine the name may be another's, and that is why the run failed
                if made.labels.get("enilab.run") == self.run.prefix and made.labels.get("enilab.pod") == pod:
                    made.remove(force=True)
            raise
        self.created.append(container.id)
        self._record()
        try:
            container.reload()
            pid = container.attrs["State"]["Pid"]
            if not container.attrs["State"]["Running"] or not pid:
                raise _exited_at_once(container, pod, image)
            try:
                netns.pin(ns, f"/proc/{pid}/ns/net")
            except FileNotFoundError:  # it was running a moment ago
                container.reload()
                raise _exited_at_once(container, pod, image) from None
            try:
                result = self._cni("ADD", node, pod, container.id, f"/proc/{pid}/ns/net")
                wired = result["ips"][0]["address"].split("/")[0]
                if wired != str(alloc.ip):
                    raise ContainerError(f"pod {pod}: enilab-cni wired {wired}, the scheduler placed {alloc.ip}")
            except BaseException:
                with contextlib.suppress(Exception):
                    self._cni("DEL", node, pod, container.id, str(netns.path(ns)))
                netns.delete(ns)
                raise
        except BaseException:
            self._remove(container.id)
            raise
        self.pods[pod] = (node, ns)
        self.containers[pod] = {"id": container.id, "pid": pid, "image": image, "netns": ns}
        return {"netns": ns, "veth": host_veth_name(pod), "container": container.id, "image": image}

    def pod_down(self, node: str, pod: str) -> None:
        where = self.pods.pop(pod, None)
        info = self.containers.pop(pod, None)
        if where is None or info is None:
            return
        with contextlib.suppress(Exception):
            self._cni("DEL", node, pod, info["id"], str(netns.path(where[1])))
        self._remove(info["id"])
        netns.delete(where[1])

    def _remove(self, cid: str) -> None:
        import docker

        with contextlib.suppress(docker.errors.NotFound):
            self.engine.client.containers.get(cid).remove(force=True)
        if cid in self.created:
            self.created.remove(cid)
            self._record()

    def container_states(self) -> dict[str, str]:
        """pod -> its container's status as the engine reports it now (running, exited (137), gone)."""
        import docker

        seen = {}
        with contextlib.suppress(docker.errors.DockerException):
            for c in self.engine.client.containers.list(all=True, filters={"label": f"enilab.run={self.run.prefix}"}):
                code = c.attrs.get("State", {}).get("ExitCode")
                seen[c.id] = c.status if c.status == "running" else f"{c.status} ({code})"
        return {pod: seen.get(info["id"], "gone") for pod, info in self.containers.items()}

    def node_state(self, node: str) -> dict:
        """The node's fields; also refreshes `container_state` of the pods (a container killed from
        outside shows here, and in `enilab status`)."""
        if self.cluster is not None:
            states = self.container_states()
            for pod, state in states.items():
                p = self.cluster.pods.get(pod)
                if p is not None and p.node == node and p.extra.get("container_state") != state:
                    p.show({"container_state": state})
        return super().node_state(node)

    def exec(self, pod: str, argv: list[str]) -> tuple[int, bytes, bytes]:
        """Run `argv` in the pod's container: (exit code, stdout, stderr)."""
        info = self.containers.get(pod)
        if info is None:
            raise ContainerError(f"pod {pod} has no container (pods with one: {', '.join(self.containers) or 'none'})")
        container = self.engine.client.containers.get(info["id"])
        if container.status != "running":
            raise ContainerError(f"pod {pod}'s container is {container.status}; delete the pod (`enilab pods del "
                                 f"{pod}`) and create another")
        code, (out, err) = container.exec_run(argv, demux=True)
        return code, out or b"", err or b""

    def http(self, src: str, ip: str, timeout: int = HTTP_TIMEOUT_S) -> str | None:
        """GET http://IP/ from a pod (its container's busybox wget) or a VPC host (its namespace): the body,
        or None when nothing answered."""
        if src in self.hosts:
            import http.client

            conn = http.client.HTTPConnection(ip, 80, timeout=timeout)
            try:
                with netns.entered(self.hosts[src][0]):  # the socket is the host's; the thread goes back
                    conn.connect()
                conn.request("GET", "/")
                answer = conn.getresponse()
                return answer.read().decode(errors="replace") if answer.status == 200 else None
            except OSError:
                return None
            finally:
                conn.close()
        code, out, _ = self.exec(src, ["timeout", str(timeout), "wget", "-qO-", f"http://{ip}/"])
        return out.decode(errors="replace") if code == 0 else None

    # -- the CNI, through the executable -------------------------------------------------------------
    def _cni(self, command: str, node: str, pod: str, container_id: str, netns_path: str) -> dict | None:
        """Run `enilab-cni` as a runtime does, answering its one request to the node agent ourselves."""
        sock_path = self.state_dir / "agent.sock"
        sock_path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(str(sock_path))
            server.listen(1)
            conf = {"cniVersion": "1.0.0", "name": NETWORK, "type": cni.PLUGIN_NAME, "agentSocket": str(sock_path)}
            env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns_path,
                   "CNI_IFNAME": "eth0", "CNI_PATH": str(self.plugin.parent), "CNI_ARGS": f"K8S_POD_NAME={pod}",
                   "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            proc = subprocess.Popen([str(self.plugin)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env)
            try:
                proc.stdin.write(json.dumps(conf).encode())
                proc.stdin.close()
                self._answer_one(server, proc, node, pod)
                out, err = proc.stdout.read(), proc.stderr.read()  # a result and a message: small
                proc.wait(CNI_TIMEOUT_S)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        finally:
            server.close()
            sock_path.unlink(missing_ok=True)
        document = json.loads(out) if out.strip() else None
        if proc.returncode != 0:
            msg = document.get("msg") if isinstance(document, dict) else err.decode(errors="replace")
            raise ContainerError(f"pod {pod}: enilab-cni {command} failed: {msg}")
        return document

    def _answer_one(self, server: socket.socket, proc: subprocess.Popen, node: str, pod: str) -> None:
        """Accept the plugin's connection (unless it exits first) and answer it as the node agent would,
        filing the address under the pod."""
        deadline = time.monotonic() + CNI_TIMEOUT_S
        while not select.select([server], [], [], 0.05)[0]:
            if proc.poll() is not None:
                return
            if time.monotonic() > deadline:
                raise ContainerError(f"pod {pod}: enilab-cni did not reach the node agent in {CNI_TIMEOUT_S:.0f} s")
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as f:
            params = json.loads(f.readline())["params"]
            try:
                req = replace(cni.parse_request(params["env"], params["stdin"]), pod_key=pod)
                agent = self.agent_for(node)
                result = {"result": cni.handle(req, lambda method, **p: agent.handle(method, p),
                                               Dataplane(NetlinkPort(self.nodes[node].kernel)))}
            except CniError as err:
                result = {"error": err.result("1.0.0")}
            f.write(json.dumps({"result": result}).encode() + b"\n")
            f.flush()

    def close(self) -> None:
        self._engine_finalizer()  # the containers first: their namespaces are pinned below
        super().close()

