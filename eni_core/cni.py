"""The CNI plugin (spec 1.0.0 and 1.1.0): ADD, DEL, CHECK, VERSION, STATUS, GC.

`handle(env, stdin, ...)` is a function of the CNI_* environment and the network configuration that
returns the result document or raises `CniError` (a spec error code and a message that says what to do).
The `enilab-cni` executable wraps it for real runtimes and asks the node agent over its unix socket
(`agentSocket` in the configuration); the testbed calls the same handler in-process.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

__all__ = ["CniError", "CniRequest", "handle", "main", "parse_request"]

SUPPORTED_VERSIONS = ("1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
# spec error codes
INCOMPATIBLE_VERSION, UNSUPPORTED_FIELD, UNKNOWN_CONTAINER, INVALID_ENV, IO_FAILURE = 1, 2, 3, 4, 5
DECODE_FAILURE, INVALID_CONFIG, TRY_AGAIN, PLUGIN_NOT_AVAILABLE = 6, 7, 11, 50
CHECK_FAILED = 100  # plugin-specific codes start at 100

AgentCall = Callable[..., Any]


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def result(self, version: str) -> dict:
        return {"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details}


@dataclass(frozen=True)
class CniRequest:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: Mapping[str, str]
    config: Mapping[str, Any]

    @property
    def version(self) -> str:
        return str(self.config.get("cniVersion", SUPPORTED_VERSIONS[-1]))

    @property
    def key(self) -> str:
        """What the agent files the IP under: the container, as runtimes name it."""
        return self.container_id


def parse_request(env: Mapping[str, str], stdin: bytes | str) -> CniRequest:
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENV, f"CNI_COMMAND is {command!r}; expected one of {', '.join(COMMANDS)}")
    try:
        config = json.loads(stdin or "{}")
    except (ValueError, UnicodeDecodeError) as err:
        raise CniError(DECODE_FAILURE, f"the network configuration on stdin is not JSON: {err}") from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "the network configuration on stdin must be a JSON object")
    version = str(config.get("cniVersion", ""))
    if command != "VERSION" and version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported; use one of "
                       f"{', '.join(SUPPORTED_VERSIONS)}")
    if command in ("ADD", "DEL", "CHECK"):
        missing = [k for k in ("CNI_CONTAINERID", "CNI_IFNAME") if not env.get(k)]
        if command != "DEL" and not env.get("CNI_NETNS"):
            missing.append("CNI_NETNS")
        if missing:
            raise CniError(INVALID_ENV, f"{command} needs {', '.join(missing)} in the environment")
        if len(env["CNI_IFNAME"]) > 15 or "/" in env["CNI_IFNAME"]:
            raise CniError(INVALID_ENV, f"CNI_IFNAME {env['CNI_IFNAME']!r} is not a valid interface name")
    if command in ("ADD", "CHECK", "STATUS", "GC", "DEL") and not config.get("name"):
        raise CniError(INVALID_CONFIG, "the network configuration has no 'name'")
    args = {}
    for part in filter(None, env.get("CNI_ARGS", "").split(";")):
        k, _, v = part.partition("=")
        args[k] = v
    return CniRequest(command, env.get("CNI_CONTAINERID", ""), env.get("CNI_NETNS", ""), env.get("CNI_IFNAME", ""),
                      args, config)


def _agent_error(err: Exception) -> CniError:
    text = str(err)
    if "NoFreeIp" in text or type(err).__name__ == "NoFreeIp":
        return CniError(TRY_AGAIN, f"no free IP on this node yet: {text}")
    return CniError(TRY_AGAIN, f"the node agent failed: {text}")


def _result(req: CniRequest, ip: str, host: tuple[str, str], pod_mac: str) -> dict:
    from eni_core.routing import LINK_LOCAL_GATEWAY

    return {
        "cniVersion": req.version,
        "interfaces": [{"name": host[0], "mac": host[1]},
                       {"name": req.ifname, "mac": pod_mac, "sandbox": req.netns}],
        "ips": [{"address": f"{ip}/32", "gateway": str(LINK_LOCAL_GATEWAY), "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": str(LINK_LOCAL_GATEWAY)}],
        "dns": {},
    }


class Dataplane:
    """The kernel work of ADD/DEL/CHECK on one node. `node` is the node namespace's kernel."""

    def __init__(self, node) -> None:
        self.node = node

    def add(self, req: CniRequest, ip: IPv4Address, eni_mac: str, eni_index: int | None = None,
            host_index: int | None = None) -> dict:
        """Wire the pod: one batch on the node (veth, host route, rules), one in the pod. The agent's
        answer names the ENI's link and a free index for the veth; without them, one dump finds both."""
        from eni_core import netlink as nl
        from eni_core.kernel import NamespaceKernel
        from eni_core.routing import (
            HOST_INDEX_BASE,
            PodLink,
            host_veth_mac,
            host_veth_name,
            plan_pod,
            pod_host_requests,
        )

        veth, host_mac = host_veth_name(req.key), host_veth_mac(req.key)
        if eni_index is None or host_index is None:
            links = self.node.links()
            eni_index = next((lk.index for lk in links if lk.mac == eni_mac), None)
            if eni_index is None:
                raise CniError(TRY_AGAIN, f"the ENI with MAC {eni_mac} has not appeared on the node yet; retry")
            used = {lk.index for lk in links}
            host_index = next(i for i in range(HOST_INDEX_BASE, 1 << 20) if i not in used)
        try:
            fd = os.open(req.netns, os.O_RDONLY)
        except OSError as err:
            raise CniError(UNKNOWN_CONTAINER, f"cannot open CNI_NETNS {req.netns}: {err.strerror}") from None
        try:
            create = nl.veth_add(veth, req.ifname, fd, index=host_index, mac=host_mac)
            host = pod_host_requests(PodLink(ip, eni_index, host_index))
            errors = self.node.sock.apply([create, *host])
            if any(e.what == create.what for e in errors):
                # ADD again for the same container (its veth exists), or the index was taken by a link
                # the agent did not know of: find or make the veth, then (re)write its routes and rules
                existing = self.node.link(veth)
                if existing is None:
                    host_index = max(lk.index for lk in self.node.links()) + 1
                    self.node.check([nl.veth_add(veth, req.ifname, fd, index=host_index, mac=host_mac)])
                else:
                    host_index = existing.index
                self.node.check(pod_host_requests(PodLink(ip, eni_index, host_index)), ignore=nl.IGNORE_EXISTS)
            elif any(e.errno not in nl.IGNORE_EXISTS for e in errors):
                raise next(e for e in errors if e.errno not in nl.IGNORE_EXISTS)
        finally:
            os.close(fd)
        pod = NamespaceKernel(req.netns)
        try:
            pod_link = pod.link(req.ifname)
            if pod_link is None:
                raise CniError(IO_FAILURE, f"{req.ifname} did not appear in {req.netns}")
            pod.check(plan_pod(pod_link.index, ip, host_mac), ignore=nl.IGNORE_EXISTS)
            return _result(req, str(ip), (veth, host_mac), pod_link.mac)
        finally:
            pod.close()

    def delete(self, req: CniRequest, ip: IPv4Address | None) -> None:
        from eni_core import netlink as nl
        from eni_core.routing import host_veth_name, pod_rule_deletes

        reqs = [nl.link_del(ifname=host_veth_name(req.key))]
        if ip is not None:
            reqs += pod_rule_deletes(ip)
        self.node.apply(reqs)  # idempotent: what is gone already is fine

    def check(self, req: CniRequest, ip: IPv4Address, eni_mac: str) -> None:
        from eni_core.kernel import NamespaceKernel
        from eni_core.model import eni_table
        from eni_core.routing import host_veth_name

        veth = host_veth_name(req.key)
        links = {link.ifname: link for link in self.node.links()}
        eni = next((lk for lk in links.values() if lk.mac == eni_mac), None)
        if veth not in links or eni is None:
            raise CniError(CHECK_FAILED, f"host veth {veth} or the ENI {eni_mac} is missing on the node")
        rules = {(r.priority, r.table, r.src, r.dst) for r in self.node.rules()}
        if (1536, eni_table(eni.index), ip, None) not in rules:
            raise CniError(CHECK_FAILED, f"rule 'from {ip} lookup {eni_table(eni.index)}' is missing")
        try:
            pod = NamespaceKernel(req.netns)
        except OSError as err:
            raise CniError(UNKNOWN_CONTAINER, f"cannot enter CNI_NETNS {req.netns}: {err.strerror}") from None
        try:
            if ip not in {a.ip for a in pod.addresses()}:
                raise CniError(CHECK_FAILED, f"{ip} is not configured inside {req.netns}")
            if not any(r.dst is None and r.table == 254 for r in pod.routes()):
                raise CniError(CHECK_FAILED, f"no default route inside {req.netns}")
        finally:
            pod.close()


def handle(req: CniRequest, agent: AgentCall, dataplane: Dataplane | None) -> dict | None:
    """Run one CNI command. `agent(method, **params)` reaches the node agent."""
    if req.command == "VERSION":
        return {"cniVersion": req.config.get("cniVersion") or SUPPORTED_VERSIONS[-1],
                "supportedVersions": list(SUPPORTED_VERSIONS)}
    if req.command == "STATUS":
        try:
            agent("ping")
        except Exception as err:
            raise CniError(PLUGIN_NOT_AVAILABLE, f"the node agent is not reachable: {err}") from None
        return None
    if req.command == "GC":
        valid = [a.get("containerID") for a in req.config.get("cni.dev/valid-attachments", [])]
        try:
            released = agent("gc", valid=[v for v in valid if v])
        except Exception as err:
            raise _agent_error(err) from None
        if dataplane is not None:
            for key, ip in released.items():
                dataplane.delete(CniRequest("DEL", key, "", "eth0", {}, req.config), IPv4Address(ip))
        return None
    if req.command == "ADD":
        try:
            alloc = agent("add", pod=req.key)
        except Exception as err:
            raise _agent_error(err) from None
        assert dataplane is not None
        try:
            return dataplane.add(req, IPv4Address(alloc["ip"]), alloc["mac"], alloc.get("eni_ifindex"),
                                 alloc.get("host_ifindex"))
        except CniError:
            raise
        except OSError as err:
            raise CniError(IO_FAILURE, f"wiring {req.ifname} in {req.netns} failed: {err}") from None
    if req.command == "DEL":
        try:
            released = agent("del", pod=req.key)["released"]
        except Exception as err:
            raise _agent_error(err) from None
        if dataplane is not None:
            dataplane.delete(req, IPv4Address(released) if released else None)
        return None
    # CHECK
    try:
        alloc = agent("get", pod=req.key)
    except Exception as err:
        raise _agent_error(err) from None
    if alloc is None:
        raise CniError(UNKNOWN_CONTAINER, f"container {req.key} has no IP on this node")
    assert dataplane is not None
    eni = agent("state")["enis"]
    mac = next(e["mac"] for e in eni if e["id"] == alloc["eni"])
    dataplane.check(req, IPv4Address(alloc["ip"]), mac)
    return None


def main() -> int:
    """The executable: CNI_* environment and configuration on stdin in, result or error JSON out."""
    stdin = sys.stdin.buffer.read()
    version = SUPPORTED_VERSIONS[-1]
    try:
        req = parse_request(os.environ, stdin)
        version = req.version
        if req.command == "VERSION":
            out = handle(req, lambda *a, **k: None, None)
        else:
            from eni_core.rpc import RpcClient

            socket_path = req.config.get("agentSocket")
            if not socket_path:
                raise CniError(INVALID_CONFIG, "the network configuration has no 'agentSocket' (the node agent's "
                               "unix socket)")
            client = RpcClient(socket_path, timeout=30)

            def agent(method: str, **params: Any) -> Any:
                try:
                    return client.call(method, **params)
                except OSError as err:
                    raise CniError(TRY_AGAIN if req.command != "STATUS" else PLUGIN_NOT_AVAILABLE,
                                   f"cannot reach the node agent at {socket_path}: {err.strerror or err}") from None

            dataplane = None
            if req.command in ("ADD", "DEL", "CHECK", "GC"):
                from eni_core.kernel import NamespaceKernel

                dataplane = Dataplane(NamespaceKernel())
            out = handle(req, agent, dataplane)
    except CniError as err:
        sys.stdout.write(json.dumps(err.result(version)) + "\n")
        return 1
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
