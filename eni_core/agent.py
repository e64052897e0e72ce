"""The node agent: a node's ipamd as a daemon, answering the CNI plugin on a unix socket.

It recovers its checkpoint and reconciles with the VPC at start, settles the pool after every change,
and fires the pool's timers (timed releases, retries) on the wall clock.

    python -m eni_core.agent --node node-1 --vpc /run/enilab/vpc.sock --state /var/lib/enilab \
        --listen /run/enilab/node-1.sock --subnet subnet-a --max-enis 3 --ips-per-eni 10
"""
from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eni_core.clock import WallClock
from eni_core.datastore import Attachment, CheckpointError, Datastore, FileCheckpoint
from eni_core.ipamd import EniNode, Ipamd
from eni_core.model import NodeLimits, PoolConfig
from eni_core.names import InvalidName, Parser, dns_label, whole_number
from eni_core.private import NotPrivate
from eni_core.routing import HostIndexes
from eni_core.rpc import NO_FREE_IP, MethodNotFound, RpcServer, SocketPathTooLong, check_socket_path

__all__ = ["NoFreeIp", "NodeAgent", "main"]

SETTLE_LIMIT = 1000


class NoFreeIp(Exception):
    """The node has no idle IP: the scheduler should not have placed the pod here (eni-ip)."""

    rpc_code = NO_FREE_IP


class NodeAgent:
    """Serialises every use of the ipamd; `on_change` runs after each settle (the routing agent), and
    after an ADD for a pod that holds its IP already (the pool has nothing to do then; the node's routing
    is repaired all the same).

    The lock is held while the ipamd calls the cloud, so it comes before any lock the cloud endpoint
    takes: whoever serves the cloud must never wait on this agent while holding its own lock.

    `dataplane` (an `eni_core.cni.Dataplane` over the node's kernel) wires the attachments `enilab-cni`
    asks for; `namespaces()` maps (st_dev, st_ino) of the namespaces the CNI must never wire (the node's
    own, and whatever else its owner runs) to what each one is.
    """

    def __init__(self, ipamd: EniNode, on_change: Callable[[], None] | None = None,
                 lock: threading.RLock | None = None, eni_link: Callable[[str], int | None] | None = None,
                 dataplane: Any = None, namespaces: Callable[[], dict[tuple[int, int], str]] | None = None) -> None:
        self.ipamd = ipamd
        self.on_change = on_change
        self.lock = lock or threading.RLock()
        self.eni_link = eni_link  # ENI id -> its link index on the node, when the agent knows it
        self.veth_index = HostIndexes()  # the node-side index handed to each pod's veth
        self.dataplane = dataplane
        self.namespaces = namespaces or dict

    def settle(self) -> None:
        with self.lock:
            for _ in range(SETTLE_LIMIT):
                if not self.ipamd.reconcile():
                    break
            if self.on_change is not None:
                self.on_change()

    def attachments(self) -> dict[str, dict[str, Any]]:
        """The runtime-wired attachments of this node: key -> IP, ENI and the attachment's record."""
        with self.lock:
            store = self.ipamd.store
            return {key: {"ip": str(store.pods[key].ip), "eni": store.pods[key].eni_id, **a.to_dict()}
                    for key, a in store.attachments.items() if key in store.pods}

    def state(self) -> dict[str, Any]:
        with self.lock:
            ipamd = self.ipamd
            return {
                "node": ipamd.node, "bound": ipamd.bound, "allocatable": ipamd.allocatable,
                "capacity": ipamd.capacity, "pods": {p: {"ip": str(a.ip), "eni": a.eni_id}
                                                     for p, a in ipamd.store.pods.items()},
                "attachments": self.attachments(),
                "enis": [{"id": e.id, "subnet": e.subnet_id, "mac": e.mac, "device_index": e.device_index,
                          "ips": {str(ip): pod for ip, pod in e.ips.items()}} for e in ipamd.enis],
                "shortfall": ipamd.shortfall, "release_due": ipamd.store.release_due,
            }

    def resolve(self, key: str, legacy: str | None = None) -> str:
        """The datastore key of a request: its own, or the container id a format 1 checkpoint used."""
        store = self.ipamd.store
        if key not in store.pods and legacy is not None and legacy in store.legacy:
            return legacy
        return key

    def _gc(self, network: str, valid: list[list[str]], release: bool = True,
            only: list[str] | None = None) -> dict[str, str]:
        """The attachments of `network` that are not in `valid` ((container id, ifname) pairs), key -> IP,
        released unless `release` is False (the plugin asks first, unwires them, then has them released,
        naming them in `only`: one added in between is not among them). Attachments of other networks and
        the controller's pods are never touched."""
        keep = {tuple(v) for v in valid}
        named = None if only is None else set(only)
        with self.lock:
            store = self.ipamd.store
            gone = {key: str(store.pods[key].ip) for key, a in store.attachments.items()
                    if a.network == network and (a.container_id, a.ifname) not in keep and key in store.pods
                    and (named is None or key in named)}
            if release:
                for key in gone:
                    self.veth_index.give_back(key)
                    self.ipamd.release(key)
                self.settle()
        return gone

    def handle(self, method: str, params: dict[str, Any]) -> Any:
        if method == "ping":
            return {"node": self.ipamd.node}
        if method == "state":
            return self.state()
        if method == "reconcile":
            self.settle()
            return self.state()
        if method == "gc":
            only = params.get("only")
            return self._gc(str(params.get("network") or ""), params.get("valid") or [],
                            release=params.get("release", True) is not False,
                            only=[str(k) for k in only] if isinstance(only, list) else None)
        if method == "cni":
            from eni_core.cni import serve

            return serve(self, params.get("env") or {}, params.get("stdin") or "", params.get("caller_netns"))
        pod = params.get("pod")
        if not isinstance(pod, str) or not pod:
            raise ValueError(f"{method}: give the pod's key (namespace/name or container id)")
        with self.lock:
            key = self.resolve(pod, params.get("legacy"))
            store = self.ipamd.store
            if method == "add":
                new = key not in store.pods
                if new and params.get("attachment"):
                    store.attachments[key] = Attachment.from_dict(params["attachment"])
                alloc = self.ipamd.assign(key)  # commits the attachment record with the IP
                if alloc is None:
                    store.attachments.pop(key, None)
                    raise NoFreeIp(f"node {self.ipamd.node} has no idle IP for {key} "
                                   f"(bound {self.ipamd.bound}, pods {self.ipamd.pods})")
                if new:  # this request took an idle IP: the pool refills now
                    self.settle()
                elif self.on_change is not None:  # a known pod's took none; the routing agent still repairs
                    self.on_change()
                eni = store.enis[alloc.eni_id]
                return {"key": key, "new": new, "ip": str(alloc.ip), "eni": eni.id, "mac": eni.mac,
                        "device_index": eni.device_index, "subnet": eni.subnet_id,
                        "eni_ifindex": self.eni_link(eni.id) if self.eni_link else None,
                        "host_ifindex": self.veth_index.index(key)}
            if method == "del":
                self.veth_index.give_back(key)
                alloc = self.ipamd.release(key)
                self.settle()
                return {"key": key, "released": str(alloc.ip) if alloc else None}
            if method == "get":
                alloc = self.ipamd.lookup(key)
                if alloc is None:
                    return None
                return {"key": key, "ip": str(alloc.ip), "eni": alloc.eni_id, "mac": store.enis[alloc.eni_id].mac}
        raise MethodNotFound(f"unknown method {method!r}")

    def run_timers(self, stop: threading.Event, tick: float = 0.05) -> None:
        """Fire the pool's timers until `stop` is set."""
        while not stop.wait(tick):
            deadline = self.ipamd.deadline()
            if deadline is not None and self.ipamd.clock.now() >= deadline:
                self.settle()


def _node_name(value: str) -> str:
    """A node name, which becomes the checkpoint's file name: a DNS label, or a usage error (exit 2)."""
    try:
        return dns_label(value)
    except InvalidName as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = Parser(prog="enilab-agent", description="a node's ipamd as a daemon")
    p.add_argument("--node", required=True, type=_node_name)
    p.add_argument("--vpc", help="the cloud endpoint's unix socket (--cloud rpc)")
    p.add_argument("--cloud", choices=["rpc", "tencent"], default="rpc",
                   help="rpc: enilab's VPC on the --vpc socket; tencent: the Tencent Cloud VPC API through the "
                        "official SDK at --endpoint, credentials from TENCENTCLOUD_SECRET_ID / TENCENTCLOUD_SECRET_KEY")
    p.add_argument("--endpoint", help="the Tencent Cloud API endpoint, http(s)://HOST[:PORT] (--cloud tencent)")
    p.add_argument("--region", help="the Tencent Cloud region, such as ap-guangzhou (--cloud tencent)")
    p.add_argument("--state", required=True, help="folder of the datastore checkpoint")
    p.add_argument("--listen", required=True, help="unix socket to serve the CNI plugin on")
    p.add_argument("--subnet", action="append", required=True, help="a subnet id for ENIs (repeat)")
    p.add_argument("--max-enis", type=whole_number, required=True)
    p.add_argument("--ips-per-eni", type=whole_number, required=True)
    p.add_argument("--min-prebound", type=whole_number, default=5)
    p.add_argument("--max-prebound", type=whole_number, default=5)
    p.add_argument("--release-interval", type=float, default=120.0)
    p.add_argument("--quick-release", action="store_true")
    p.add_argument("--seed", default="0")
    p.add_argument("--routing", action="store_true",
                   help="also run the routing agent on this namespace: ENI tables, pod rules, sysctls, drift repair")
    p.add_argument("--gateway", action="append", default=[], metavar="SUBNET=IP",
                   help="a subnet's gateway, for the ENI tables (repeat; needed with --routing)")
    p.add_argument("--resync-every", type=float, default=0.0,
                   help="re-sync with the VPC this often, in seconds (0: only after ambiguous answers)")
    return p.parse_args(argv)


class RoutingSide:
    """The routing agent inside the node's namespace: plans from the ipamd's view, observes, repairs."""

    def __init__(self, ipamd: EniNode, gateways: dict[str, str]) -> None:
        from ipaddress import IPv4Address

        from eni_core.kernel import NetlinkPort

        self.ipamd = ipamd
        self.kernel = NetlinkPort.open()
        self.gateways = {k: IPv4Address(v) for k, v in gateways.items()}

    def sync(self) -> None:
        from eni_core import routing

        routing.sync(self.kernel, *routing.node_input(self.ipamd.enis, self.ipamd.store.pods, self.gateways))

    def eni_link(self, eni_id: str) -> int | None:
        eni = self.ipamd.store.enis.get(eni_id)
        if eni is None:
            return None
        return next((link.index for link in self.kernel.links() if link.mac == eni.mac), None)


def _hold_node(state: Path, node: str) -> int | None:
    """Take the node's lock (`<node>.lock` beside its checkpoint) for this process's life: its fd, or None
    if another agent of the node holds it. Two agents of one node would each commit their own memory over
    the other's checkpoint (and the second would take over the first's socket)."""
    from eni_core.private import open_private, private_dir

    private_dir(state)
    fd = open_private(state / f"{node}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        check_socket_path(args.listen)
    except SocketPathTooLong as err:
        print(f"enilab-agent: error: --listen: {err}", file=sys.stderr)
        return 2
    try:
        lock = _hold_node(Path(args.state), args.node)
    except (OSError, NotPrivate) as err:  # not a folder, another user's, no right to make it
        print(f"enilab-agent: error: --state {args.state}: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
        return 2
    if lock is None:
        print(f"enilab-agent: error: another enilab-agent serves node {args.node} with the checkpoint in "
              f"{args.state}; stop it first", file=sys.stderr)
        return 2
    try:
        return _serve(args)
    finally:
        os.close(lock)  # the node is free again (an agent called in-process, a test, may start it again)


def _serve(args: argparse.Namespace) -> int:
    """The agent of `args.node`, its lock held, until SIGTERM: its exit code."""
    from eni_core.cni import Dataplane
    from eni_core.kernel import NetlinkPort
    from eni_core.vpc_client import VpcClient

    if args.cloud == "tencent":
        from eni_core.tencent import from_environment

        try:
            vpc = from_environment(args.endpoint, args.region, WallClock())
        except ValueError as err:
            print(f"enilab-agent: error: {err}", file=sys.stderr)
            return 2
    elif args.vpc:
        vpc = VpcClient(args.vpc)
    else:
        print("enilab-agent: error: --cloud rpc needs --vpc SOCKET", file=sys.stderr)
        return 2
    store = Datastore(args.node, FileCheckpoint(Path(args.state) / f"{args.node}.json"))
    ipamd = Ipamd(args.node, vpc=vpc, limits=NodeLimits(args.max_enis, args.ips_per_eni),
                  subnets=args.subnet, clock=WallClock(), store=store, seed=args.seed,
                  config=PoolConfig(args.min_prebound, args.max_prebound, args.release_interval, args.quick_release))
    side = None
    if args.routing:
        side = RoutingSide(ipamd, dict(g.split("=", 1) for g in args.gateway))
    own = os.stat("/proc/self/ns/net")
    agent = NodeAgent(ipamd, on_change=side.sync if side else None, eni_link=side.eni_link if side else None,
                      dataplane=Dataplane(NetlinkPort.open()),
                      namespaces=lambda: {(own.st_dev, own.st_ino): f"node {args.node}'s namespace"})
    try:
        report = ipamd.recover()
    except CheckpointError as err:
        print(f"enilab-agent: error: checkpoint {store.checkpoint.path} is not a datastore enilab can read "
              f"({err}); move it aside to start empty: the re-sync with the VPC adopts "
              "the ENIs and IPs it held", file=sys.stderr)
        return 2
    print(f"enilab-agent {args.node}: recovered {report.to_dict()}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agent.settle()  # before serving: the socket appears once the pool is filled, so a first ADD finds an IP
    server = RpcServer(args.listen, agent.handle).start()
    print(f"enilab-agent {args.node}: ready, {ipamd.bound} IPs bound", flush=True)
    if args.resync_every > 0:
        def resync_loop() -> None:
            while not stop.wait(args.resync_every):
                with agent.lock:
                    ipamd.resync_at = ipamd.clock.now()
                agent.settle()  # adopts leaks, and with --routing repairs kernel drift

        threading.Thread(target=resync_loop, daemon=True).start()
    try:
        agent.run_timers(stop)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":  # run as the module itself, so the CNI handler and this agent share its classes
    from eni_core.agent import main as agent_main

    sys.exit(agent_main())
