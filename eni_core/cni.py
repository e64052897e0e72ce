"""The CNI plugin's handler (spec 1.0.0 and 1.1.0): ADD, DEL, CHECK, VERSION, STATUS, GC, run by the node agent.

`handle(req, agent, dataplane)` is a function of one parsed request that returns the result document or
raises `CniError` (a spec error code and a message that says what to do). It runs where the node agent
runs: `serve` answers the `enilab-cni` executable (a thin client, `eni_core.cni_client`), and the testbed
calls `handle` in-process for the pods its controller creates. Attachments are keyed as the spec keys
them, (network name, container id, ifname); a failed ADD gives back what it took.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from eni_core import routing
from eni_core.agent import NoFreeIp
from eni_core.cni_client import (
    AGENT_FAILED,
    CHECK_FAILED,
    COMMANDS,
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENV,
    IO_FAILURE,
    SUPPORTED_VERSIONS,
    TRY_AGAIN,
    UNKNOWN_CONTAINER,
    request_version,
    version_refusal,
)
from eni_core.datastore import Attachment, attachment_key
from eni_core.ops import DEFAULT, IGNORE_EXISTS, MAIN_TABLE, AddVeth, DeleteLink, Kernel, raise_first, settle
from eni_core.private import NAME_MAX
from eni_core.routing import PodLink
from eni_core.rpc import NO_FREE_IP, RemoteError

__all__ = ["CniError", "CniRequest", "Dataplane", "conflist", "handle", "install_plugin", "parse_request", "serve"]

AgentCall = Callable[..., Any]
SPEC_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")  # network names and container ids (spec 1.0)
VALID_ATTACHMENTS = "cni.dev/valid-attachments"
POD_LINK_INDEX = 2  # the pod's end of its veth: the index a namespace holding only `lo` gives its next link


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
    pod_key: str | None = None  # the controller's pods are filed under their pod name
    opened: str = ""  # CNI_NETNS as the agent holds it open (/proc/self/fd/N), checked: what is entered

    @property
    def netns_path(self) -> str:
        """The path to enter: the namespace the agent checked and holds, else CNI_NETNS (the testbed's own
        calls)."""
        return self.opened or self.netns

    @property
    def version(self) -> str:
        return str(self.config.get("cniVersion", SUPPORTED_VERSIONS[-1]))

    @property
    def network(self) -> str:
        return str(self.config.get("name", ""))

    @property
    def key(self) -> str:
        """What the agent files the IP under."""
        return self.pod_key or attachment_key(self.network, self.container_id, self.ifname)

    @property
    def attachment(self) -> Attachment | None:
        return None if self.pod_key else Attachment(self.network, self.container_id, self.ifname, self.netns)


IFNAME_MAX = 15  # bytes: the kernel's IFNAMSIZ less its NUL


def valid_ifname(name: str) -> bool:
    """An interface name the kernel takes as it is: at most 15 bytes, no '/', ':' or white space, not '.'
    or '..' (its dev_valid_name), and no '%', which the kernel reads as a template (`net%d` becomes
    `net0`), so the interface made would not be the one named.

    >>> [valid_ifname(n) for n in ("eth0", "net%d", "éééééééé", "a" * 15, "a b")]
    [True, False, False, True, False]
    """
    return (len(name.encode(errors="surrogateescape")) <= IFNAME_MAX and name not in ("", ".", "..")
            and name.isprintable() and not any(c.isspace() or c in "/:%" for c in name))


def _quote(value: str) -> str:
    return repr(value[:80])


def parse_request(env: Mapping[str, str], stdin: bytes | str) -> CniRequest:
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENV, f"CNI_COMMAND is {_quote(command)}; expected one of {', '.join(COMMANDS)}")
    try:
        config = json.loads(stdin or "{}")
    except (ValueError, UnicodeDecodeError) as err:
        raise CniError(DECODE_FAILURE, f"the network configuration on stdin is not JSON: {err}") from None
    except RecursionError:
        raise CniError(DECODE_FAILURE, "the network configuration on stdin is nested too deeply") from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "the network configuration on stdin must be a JSON object")
    version = str(config.get("cniVersion", ""))
    if command != "VERSION" and version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion {_quote(version)} is not supported; use one of "
                       f"{', '.join(SUPPORTED_VERSIONS)}")
    refusal = version_refusal(command, version)
    if refusal:
        raise CniError(INCOMPATIBLE_VERSION, refusal)
    if command in ("ADD", "DEL", "CHECK"):
        missing = [k for k in ("CNI_CONTAINERID", "CNI_IFNAME") if not env.get(k)]
        if command != "DEL" and not env.get("CNI_NETNS"):
            missing.append("CNI_NETNS")
        if missing:
            raise CniError(INVALID_ENV, f"{command} needs {', '.join(missing)} in the environment")
        if not SPEC_NAME.fullmatch(env["CNI_CONTAINERID"]):
            raise CniError(INVALID_ENV, f"CNI_CONTAINERID {_quote(env['CNI_CONTAINERID'])} is not a container id "
                           "(letters, digits, '_', '.', '-')")
        ifname = env["CNI_IFNAME"]
        if not valid_ifname(ifname):
            raise CniError(INVALID_ENV, f"CNI_IFNAME {_quote(ifname)} is not a valid interface name (at most "
                           f"{IFNAME_MAX} bytes; no '/', ':', '%' or white space; not '.' or '..')")
    if command in ("ADD", "CHECK", "STATUS", "GC", "DEL"):
        name = config.get("name")
        if not name:
            raise CniError(INVALID_CONFIG, "the network configuration has no 'name'")
        if not isinstance(name, str) or not SPEC_NAME.fullmatch(name):
            raise CniError(INVALID_CONFIG, f"network name {_quote(str(name))} is not valid (letters, digits, '_', "
                           "'.', '-')")
    args = {}
    for part in filter(None, env.get("CNI_ARGS", "").split(";")):
        k, _, v = part.partition("=")
        args[k] = v
    return CniRequest(command, env.get("CNI_CONTAINERID", ""), env.get("CNI_NETNS", ""), env.get("CNI_IFNAME", ""),
                      args, config)


_GATEWAY = str(routing.LINK_LOCAL_GATEWAY)  # every result names it: formatted once


def _result(req: CniRequest, ip: str, host: tuple[str, str], pod_mac: str, routes: bool = True) -> dict:
    return {
        "cniVersion": req.version,
        "interfaces": [{"name": host[0], "mac": host[1]},
                       {"name": req.ifname, "mac": pod_mac, "sandbox": req.netns}],
        "ips": [{"address": f"{ip}/32", "gateway": _GATEWAY, "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": _GATEWAY}] if routes else [],
        "dns": {},
    }


NamespaceOpener = Callable[[str], Kernel]


def _open_real(path: str) -> Kernel:
    from eni_core.kernel import NetlinkPort

    return NetlinkPort.open(path)


class Dataplane:
    """The kernel work of ADD/DEL/CHECK on one node, through the `Kernel` port: `node` is the node
    namespace's kernel, `open_namespace(path)` opens the kernel of a container's namespace (a real one by
    default; `eni_core.fake_kernel.FakeHost.open` in tests). `key` is the attachment's datastore key (its
    host veth's name and MAC derive from it)."""

    def __init__(self, node: Kernel, open_namespace: NamespaceOpener = _open_real) -> None:
        self.node = node
        self.open_namespace = open_namespace

    def _enter(self, path: str) -> Kernel:
        try:
            return self.open_namespace(path)
        except OSError as err:
            if err.errno == errno.EINVAL:
                raise CniError(INVALID_ENV, f"CNI_NETNS {path} is not a network namespace") from None
            raise CniError(UNKNOWN_CONTAINER, f"cannot enter CNI_NETNS {path}: {err.strerror}") from None

    def add(self, req: CniRequest, key: str, ip: IPv4Address, eni_mac: str, eni_index: int | None = None,
            host_index: int | None = None) -> dict:
        """Wire the pod: one batch on the node (the veth, both ends' indexes and MACs given, its host route
        and rules), one in the pod. The agent's answer names the ENI's link and a free index for the veth;
        without them, one dump finds both. The pod's end asks for POD_LINK_INDEX, what a namespace with
        only `lo` would give it anyway, so nothing needs reading back; when that index is taken (another
        attachment), the kernel picks one and ADD reads it. Last, ADD reads the host end once: the kernel
        readies it then, so the pod is reachable when ADD returns."""
        veth, host_mac, pod_mac = routing.host_veth_name(key), routing.host_veth_mac(key), routing.pod_veth_mac(key)
        if eni_index is None or host_index is None:
            links = self.node.links()
            eni_index = next((lk.index for lk in links if lk.mac == eni_mac), None)
            if eni_index is None:
                raise CniError(TRY_AGAIN, f"the ENI with MAC {eni_mac} has not appeared on the node yet; retry")
            host_index = routing.free_host_index({lk.index for lk in links})
        pod = self._enter(req.netns_path)
        try:
            create = AddVeth(veth, req.ifname, req.netns_path, host_index, host_mac, POD_LINK_INDEX, pod_mac)
            errors = self.node.apply([create, *routing.pod_host_ops(PodLink(ip, eni_index, host_index))], ignore=())
            pod_index: int | None = POD_LINK_INDEX
            if any(e.op == create for e in errors):
                # ADD again for the same container (its veth exists), or an index was taken by a link the
                # agent did not know of: find or make the veth, then (re)write its routes and rules
                pod_index = None
                existing = self.node.link(veth)
                if existing is None:
                    host_index = max(lk.index for lk in self.node.links()) + 1
                    raise_first(self.node.apply([AddVeth(veth, req.ifname, req.netns_path, host_index, host_mac,
                                                         peer_mac=pod_mac)], ignore=()))
                else:
                    host_index = existing.index
                    _require_own_end(pod, req, key, pod_mac)
                raise_first(self.node.apply(routing.pod_host_ops(PodLink(ip, eni_index, host_index)),
                                            ignore=IGNORE_EXISTS))
            else:
                raise_first([e for e in errors if e.errno not in IGNORE_EXISTS])
            if pod_index is None:
                pod_link = pod.link(req.ifname)
                if pod_link is None:
                    raise CniError(IO_FAILURE, f"{req.ifname} did not appear in {req.netns}")
                pod_index, pod_mac = pod_link.index, pod_link.mac
            first = not any(r.dst == DEFAULT and r.oif != pod_index  # another attachment has the default route
                            for r in pod.routes(MAIN_TABLE))
            raise_first(pod.apply(routing.plan_pod(pod_index, ip, host_mac, default_route=first),
                                  ignore=IGNORE_EXISTS))
            # the host end came up first, without carrier: read it so the kernel readies it now, and the
            # node's first packet to the pod (an ARP request) is not dropped (`eni_core.ops.settle`)
            if settle(self.node, veth) is None:
                raise CniError(IO_FAILURE, f"host veth {veth} vanished from the node during ADD")
            return _result(req, str(ip), (veth, host_mac), pod_mac, routes=first)
        finally:
            pod.close()

    def delete(self, key: str, ip: IPv4Address | None) -> None:
        """Remove the attachment's node side: its veth (the pod's end and the host route go with it) and
        its two rules. Idempotent: what is gone already is fine."""
        ops = [DeleteLink(routing.host_veth_name(key)), *(routing.pod_rule_deletes(ip) if ip is not None else ())]
        raise_first(self.node.apply(ops))

    def check(self, req: CniRequest, key: str, ip: IPv4Address, eni_mac: str) -> None:
        """The live state against prevResult and against the node-side plan; CHECK_FAILED names every
        part that is missing."""
        prev = _prev_result(req)
        problems = _prev_result_problems(prev, req, key, ip)
        veth_name = routing.host_veth_name(key)
        links = {link.ifname: link for link in self.node.links()}
        veth = links.get(veth_name)
        eni = next((lk for lk in links.values() if lk.mac == eni_mac), None)
        if veth is None:
            problems.append(f"host veth {veth_name} is missing on the node")
        if eni is None:
            problems.append(f"the ENI with MAC {eni_mac} is missing on the node")
        if veth is not None and eni is not None:
            rules, routes = routing.pod_host_state(PodLink(ip, eni.index, veth.index))
            observed = routing.observe(self.node.rules(), self.node.routes(), [], {})
            problems += [f"rule '{r}' is missing on the node" for r in rules if r not in observed.rules]
            problems += [f"host route '{ip} dev {veth_name}' is missing on the node"
                         for r in routes if r not in observed.routes]
        pod = self._enter(req.netns_path)
        try:
            link = pod.link(req.ifname)
            if link is None:
                problems.append(f"interface {req.ifname} is missing in {req.netns}")
            else:
                prev_mac = next((i.get("mac") for i in prev.get("interfaces", [])
                                 if isinstance(i, dict) and i.get("name") == req.ifname and i.get("sandbox")), None)
                if prev_mac and str(prev_mac).lower() != link.mac:
                    problems.append(f"{req.ifname} has MAC {link.mac}, prevResult says {prev_mac}")
                if ip not in {a.ip.ip for a in pod.addresses() if a.index == link.index}:
                    problems.append(f"{ip} is not configured on {req.ifname} in {req.netns}")
                # only the attachment that wrote the default route answers for it: ADD writes none into a
                # namespace that has one of its own (another attachment's, or the container's), and says so
                routes = prev.get("routes")
                wrote_default = isinstance(routes, list) and any(  # ours: via the link-local gateway
                    isinstance(r, dict) and r.get("dst") == "0.0.0.0/0" and r.get("gw") == _GATEWAY for r in routes)
                if wrote_default and not any(r.dst == DEFAULT and r.table == MAIN_TABLE
                                             and r.gateway == routing.LINK_LOCAL_GATEWAY for r in pod.routes()):
                    problems.append(f"default route via {routing.LINK_LOCAL_GATEWAY} is missing in {req.netns}")
        finally:
            pod.close()
        if problems:
            raise CniError(CHECK_FAILED, "; ".join(problems))


def _require_own_end(pod: Kernel, req: CniRequest, key: str, pod_mac: str) -> None:
    """ADD again for an attachment whose veth exists: CNI_IFNAME in CNI_NETNS must be that veth's pod end
    (its MAC derives from the attachment's key). Anything else (the container's own interface of that
    name, or no such interface: the veth's pod end is in another namespace) is not this plugin's to
    configure, and the spec asks for an error when the name is taken."""
    link = pod.link(req.ifname)
    if link is None or link.mac != pod_mac:
        where = "has no interface of that name" if link is None else "has an interface of that name it did not make"
        raise CniError(IO_FAILURE, f"container {req.container_id}'s attachment {req.ifname} on network {req.network} "
                       f"is wired into another namespace, and {req.netns} {where}; DEL the attachment first")


def _prev_result(req: CniRequest) -> dict:
    prev = req.config.get("prevResult")
    if not isinstance(prev, dict):
        raise CniError(INVALID_CONFIG, "CHECK needs the ADD's result as 'prevResult' in the network configuration")
    return prev


def _prev_result_problems(prev: dict, req: CniRequest, key: str, ip: IPv4Address) -> list[str]:
    """What in prevResult disagrees with the attachment the agent holds."""
    host_veth_name = routing.host_veth_name
    problems = []
    addresses = []
    for entry in prev.get("ips") or []:
        try:
            addresses.append(IPv4Interface(entry["address"]).ip)
        except (TypeError, KeyError, ValueError):
            problems.append(f"prevResult has a malformed IP entry {str(entry)[:80]}")
    if ip not in addresses:
        problems.append(f"prevResult lists {', '.join(map(str, addresses)) or 'no IP'}, but the attachment holds {ip}")
    interfaces = [i for i in prev.get("interfaces") or [] if isinstance(i, dict)]
    if not any(i.get("name") == req.ifname and i.get("sandbox") == req.netns for i in interfaces):
        problems.append(f"prevResult has no interface {req.ifname} in {req.netns}")
    host = [i.get("name") for i in interfaces if not i.get("sandbox")]
    if host and host_veth_name(key) not in host:
        problems.append(f"prevResult names host interface {host[0]}, the attachment's is {host_veth_name(key)}")
    return problems


def _valid_attachments(config: Mapping[str, Any]) -> set[tuple[str, str]]:
    raw = config.get(VALID_ATTACHMENTS)
    raw = [] if raw is None else raw  # libcni sends a Go nil slice, none valid, as null
    if not isinstance(raw, list) or not all(
            isinstance(a, dict) and isinstance(a.get("containerID"), str) and isinstance(a.get("ifname"), str)
            for a in raw):
        raise CniError(DECODE_FAILURE, f"'{VALID_ATTACHMENTS}' must be a list of {{\"containerID\", \"ifname\"}} "
                       f"objects; got {json.dumps(raw)[:80]}")
    return {(a["containerID"], a["ifname"]) for a in raw}


def handle(req: CniRequest, agent: AgentCall, dataplane: Dataplane | None) -> dict | None:
    """Run one CNI command. `agent(method, **params)` reaches the node agent (in-process)."""
    if req.command == "VERSION":
        asked = req.config.get("cniVersion")
        return {"cniVersion": asked if isinstance(asked, str) and asked else SUPPORTED_VERSIONS[-1],
                "supportedVersions": list(SUPPORTED_VERSIONS)}
    if req.command == "STATUS":
        agent("ping")
        return None
    legacy = None if req.pod_key else req.container_id  # a format 1 checkpoint filed it by container id
    # DEL and GC unwire first and free the IP after: stopped between the two (killed, or the kernel
    # refused), the IP is still held and the runtime's retry finishes the job. The other order freed
    # an IP whose rules were still on the node, for the next pod to be given.
    if req.command == "GC":
        valid = sorted(_valid_attachments(req.config))
        if dataplane is not None:
            stale = agent("gc", network=req.network, valid=valid, release=False)
            for key, ip in stale.items():
                dataplane.delete(key, IPv4Address(ip))
            agent("gc", network=req.network, valid=valid, only=sorted(stale))
        else:
            agent("gc", network=req.network, valid=valid)
        return None
    if req.command in ("ADD", "CHECK") and dataplane is None:
        raise CniError(AGENT_FAILED, f"this node agent does not wire pods (started without a dataplane); "
                       f"{req.command} needs one")
    if req.command == "ADD":
        prev = _chained_prev_result(req.config)  # checked before anything is taken
        attachment = req.attachment
        try:
            alloc = agent("add", pod=req.key, legacy=legacy,
                          attachment=attachment.to_dict() if attachment else None)
        except (NoFreeIp, RemoteError) as err:  # in-process, or an agent across the RPC says NO_FREE_IP
            if isinstance(err, RemoteError) and err.code != NO_FREE_IP:
                raise
            raise CniError(TRY_AGAIN, getattr(err, "message", None) or str(err)) from None
        ip = IPv4Address(alloc["ip"])
        try:
            result = dataplane.add(req, alloc["key"], ip, alloc["mac"], alloc.get("eni_ifindex"),
                                   alloc.get("host_ifindex"))
            return _after(prev, result) if prev is not None else result
        except BaseException as err:
            if alloc["new"]:  # roll back, as the reference plugins do: remove what was added, free the IP
                dataplane.delete(alloc["key"], ip)
                agent("del", pod=alloc["key"])
            elif isinstance(err, CniError) and err.code == UNKNOWN_CONTAINER:
                raise _still_held(err, IO_FAILURE) from None
            if isinstance(err, OSError):
                raise CniError(IO_FAILURE, f"wiring {req.ifname} in {req.netns} failed: {err}") from None
            raise
    if req.command == "DEL":
        if dataplane is not None:
            held = agent("get", pod=req.key, legacy=legacy)
            dataplane.delete(held["key"] if held else req.key, IPv4Address(held["ip"]) if held else None)
        agent("del", pod=req.key, legacy=legacy)
        return None
    # CHECK
    alloc = agent("get", pod=req.key, legacy=legacy)
    if alloc is None:
        raise CniError(UNKNOWN_CONTAINER, f"container {req.container_id} has no attachment {req.ifname} on "
                       f"network {req.network} on this node")
    try:
        dataplane.check(req, alloc["key"], IPv4Address(alloc["ip"]), alloc["mac"])
    except CniError as err:
        if err.code == UNKNOWN_CONTAINER:
            raise _still_held(err, CHECK_FAILED) from None
        raise
    return None


PREV_LISTS = ("interfaces", "ips", "routes")


def _chained_prev_result(config: Mapping[str, Any]) -> dict | None:
    """ADD's `prevResult`, what the plugins before this one in a chain made (None: none came first), or a
    configuration error if it is not a result."""
    prev = config.get("prevResult")
    if prev is None:
        return None
    if not isinstance(prev, dict) or not all(isinstance(prev.get(k, []), list) for k in PREV_LISTS) \
            or not all(isinstance(i, dict) for k in PREV_LISTS for i in prev.get(k, [])) \
            or not isinstance(prev.get("dns", {}), dict):
        raise CniError(INVALID_CONFIG, "prevResult is not a CNI result (an object whose interfaces, ips and routes "
                       f"are lists of objects); got {json.dumps(prev)[:80]}")
    return prev


def _after(prev: dict, result: dict) -> dict:
    """This plugin's result after the chain's earlier ones (the spec: a plugin given a prevResult passes it
    on with its own changes): their interfaces, IPs and routes first, ours after, each of our IPs' interface
    index moved past theirs; their DNS settings kept."""
    shift = len(prev.get("interfaces", []))
    ours = [{**ip, "interface": ip["interface"] + shift} for ip in result["ips"]]
    return {**prev, "cniVersion": result["cniVersion"],
            **{k: [*prev.get(k, []), *(ours if k == "ips" else result[k])] for k in PREV_LISTS},
            "dns": prev.get("dns", result["dns"])}


def _still_held(err: CniError, code: int) -> CniError:
    """A container whose namespace is gone but whose attachment the agent holds is not "unknown" (code 3
    tells the runtime it need not DEL): the same message under `code`, asking for the DEL."""
    return CniError(code, f"{err.msg}; the agent still holds this attachment: DEL it")


def open_netns(path: str) -> int:
    """An fd of the network namespace at `path`, or a CNI error that says what the path is instead.

    What is not on nsfs, where namespaces live, is refused before it is opened, and the open does not
    block: a FIFO or a device given as CNI_NETNS would otherwise hold the agent until someone wrote to it.
    The open is checked again, in case the path changed in between."""
    nsfs = os.stat("/proc/self/ns/net").st_dev
    try:
        if os.stat(path).st_dev != nsfs:
            raise CniError(INVALID_ENV, f"CNI_NETNS {path} is not a network namespace")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as err:
        raise CniError(UNKNOWN_CONTAINER, f"cannot open CNI_NETNS {path}: {err.strerror}") from None
    if os.fstat(fd).st_dev != nsfs:
        os.close(fd)
        raise CniError(INVALID_ENV, f"CNI_NETNS {path} is not a network namespace")
    return fd


def _refuse_namespace(path: str, ident: tuple[int, int], caller: tuple[int, int] | None,
                      owned: Mapping[tuple[int, int], str]) -> None:
    """Refuse a CNI_NETNS that is the caller's own namespace, or one enilab owns (the node, the fabric,
    another node, a controller pod): wiring it would replace that namespace's default route."""
    if caller is not None and ident == tuple(caller):
        raise CniError(INVALID_ENV, f"CNI_NETNS {path} is the namespace the plugin was called from (the runtime's "
                       "host namespace); give the container's own namespace")
    if ident in owned:
        raise CniError(INVALID_ENV, f"CNI_NETNS {path} is {owned[ident]}, which enilab owns; give the container's "
                       "own namespace")


def serve(agent, env: Mapping[str, str], stdin: str, caller_netns: list[int] | None = None) -> dict:
    """The agent's side of `enilab-cni`: run the request, answer `{"result": document or None}` or
    `{"error": CNI error document}`. The thread that runs it enters CNI_NETNS itself."""
    version = request_version(_loads_or_none(stdin))
    call = lambda method, **params: agent.handle(method, params)  # noqa: E731
    try:
        req = parse_request(env, stdin)
        if req.command in ("VERSION", "STATUS"):  # nothing to wait on the lock for
            return {"result": handle(req, call, agent.dataplane)}
        if req.command not in ("ADD", "CHECK"):
            with agent.lock:
                return {"result": handle(req, call, agent.dataplane)}
        try:
            fd = open_netns(req.netns)  # outside the lock: a path can be slow to read
        except CniError as err:
            if err.code != UNKNOWN_CONTAINER:
                raise
            with agent.lock:
                held = call("get", pod=req.key, legacy=req.container_id) is not None
            if not held:
                raise
            raise _still_held(err, CHECK_FAILED if req.command == "CHECK" else IO_FAILURE) from None
        try:  # the namespace checked is the one entered: held open, whatever the path names meanwhile
            st = os.fstat(fd)
            req = replace(req, opened=f"/proc/self/fd/{fd}")
            with agent.lock:
                _refuse_namespace(req.netns, (st.st_dev, st.st_ino), tuple(caller_netns) if caller_netns else None,
                                  agent.namespaces())
                return {"result": handle(req, call, agent.dataplane)}
        finally:
            os.close(fd)
    except CniError as err:
        return {"error": err.result(version)}
    except Exception as err:  # a bug or a kernel refusal: still a CNI error the runtime can show
        return {"error": CniError(AGENT_FAILED, f"the node agent failed: {type(err).__name__}: {err}").result(version)}


def _loads_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


PLUGIN_NAME = "enilab-cni"
INSTALL_MARK = "# installed by `enilab cni install`"


def install_plugin(folder: str | os.PathLike[str], python: str) -> str:
    """Write the thin client into `folder` as `enilab-cni`, started by `python -IS` (isolated, no site, no
    project imports: a few milliseconds). Refuses to replace a file it did not write. Returns its path."""
    import inspect
    import tempfile

    from eni_core import cni_client

    target = os.path.join(folder, PLUGIN_NAME)
    # refused before anything is made: makedirs would create the folders before a name too long
    if any(len(part) > NAME_MAX for part in os.fsencode(folder).split(b"/")):
        raise OSError(errno.ENAMETOOLONG, f"a folder name in it is longer than {NAME_MAX} bytes")
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder} is not a folder; give the folder to put {PLUGIN_NAME} in")
    if os.path.isdir(target):
        raise FileExistsError(f"{target} is a folder; remove it or pick another folder")
    if os.path.lexists(target):
        with open(target, "rb") as f:
            head = f.read(4096)
        if INSTALL_MARK.encode() not in head:
            raise FileExistsError(f"{target} exists and was not installed by enilab; remove it or pick another folder")
    os.makedirs(folder, exist_ok=True)
    body = f"#!{python} -IS\n{INSTALL_MARK}\n{inspect.getsource(cni_client)}"
    fd, tmp = tempfile.mkstemp(prefix=f".{PLUGIN_NAME}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def conflist(cluster: str, node: str, network: str = "enilab", version: str = "1.0.0",
             clusters_dir: str | None = None) -> dict:
    """A network configuration list a runtime can use as is. 1.0.0 by default: podman 4.3's libcni (1.1.2)
    cannot parse a 1.1.0 result. `clusters_dir`: where the cluster is registered, when not the default."""
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"cniVersion {version!r} is not supported; use one of {', '.join(SUPPORTED_VERSIONS)}")
    if not SPEC_NAME.fullmatch(network):
        raise ValueError(f"network name {_quote(network)} is not valid (letters, digits, '_', '.', '-')")
    plugin = {"type": PLUGIN_NAME, "cluster": cluster, "node": node}
    if clusters_dir is not None:
        plugin["clustersDir"] = clusters_dir
    return {"cniVersion": version, "name": network, "plugins": [plugin]}
