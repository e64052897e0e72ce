"""Scenario files: parse and validate the whole timeline before anything runs, then run it.

The format and the JSON timeline are a public contract (docs/scenario-format.md). Validation is table-driven:
`OPS` says which fields each op takes and how each is checked; one walker checks names against the
timeline (a node added in step 2 may be used from step 3 on; a deleted pod may not be deleted again).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import yaml

from eni_core.model import PoolConfig, Subnet
from testbed.world.catalog import resolve
from testbed.world.spec import ClusterSpec, HostSpec, NodeSpec
from testbed.world.vpc import FaultConfig

__all__ = ["OPS", "Scenario", "ScenarioError", "load_scenario", "parse_scenario"]

MAX_ENIS_LIMIT = 32
IPS_PER_ENI_LIMIT = 1000
PREFIX_RANGE = (16, 29)


class ScenarioError(Exception):
    """An invalid scenario or topology: the message names the place, the field and what to do."""


@dataclass
class Scenario:
    name: str
    cluster: ClusterSpec
    steps: list[dict[str, Any]] = field(default_factory=list)
    source: str = "<scenario>"


# -- field checkers: each returns the normalised value or raises ValueError(reason) ------------------
def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be a whole number, not {v!r}")
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"must be between {lo} and {hi}, not {v}" if hi is not None
                             else f"must be {lo} or more, not {v}")
        return v
    return check


def _number(lo: float, *, strict: bool = False, hi: float | None = None) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"must be a number, not {v!r}")
        if v < lo or (strict and v == lo) or (hi is not None and v > hi):
            raise ValueError(f"must be {'above' if strict else 'at least'} {lo}"
                             + (f" and at most {hi}" if hi is not None else "") + f", not {v}")
        return float(v)
    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, not {v!r}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"must be a non-empty string, not {v!r}")
    return v


def _name(v: Any) -> str:
    v = _str(v)
    if len(v) > 253 or any(c.isspace() for c in v):
        raise ValueError(f"{v!r} is not a valid name (no spaces, at most 253 characters)")
    return v


def _names(v: Any) -> list[str]:
    if not isinstance(v, list) or not v:
        raise ValueError(f"must be a non-empty list of names, not {v!r}")
    names = [_name(x) for x in v]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"names a pod twice: {sorted(dup)[0]}")
    return names


def _target(v: Any) -> str:
    if isinstance(v, str) and v.strip():
        return v
    raise ValueError(f"must be a pod name, host name or IP address, not {v!r}")


def _choice(v: Any, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, not {v!r}")
    return v


def _sysctl_key(v: Any) -> str:
    v = _str(v)
    if not v.startswith("net.") or ".." in v or "/" in v:
        raise ValueError(f"{v!r} is not a network sysctl key (like net.ipv4.conf.all.rp_filter)")
    return v


# op -> {field: (checker, required)}
OPS: dict[str, dict[str, tuple[Callable[[Any], Any], bool]]] = {
    "create_pods": {"node": (_name, False), "count": (_int(1, 10_000), False), "names": (_names, False)},
    "create_pod": {"name": (_name, True), "node": (_name, False), "static": (_bool, False),
                   "owner": (_str, False)},
    "delete_pods": {"names": (_names, False), "count": (_int(1), False)},
    "advance": {"seconds": (_number(0, strict=True, hi=10 * 365 * 86400), True)},
    "set_node": {"node": (_name, True), "max_enis": (_int(1, MAX_ENIS_LIMIT), False),
                 "ips_per_eni": (_int(1, IPS_PER_ENI_LIMIT), False)},
    "add_node": {"name": (_name, True), "subnets": (_names, True),
                 "max_enis": (_int(1, MAX_ENIS_LIMIT), True), "ips_per_eni": (_int(1, IPS_PER_ENI_LIMIT), True)},
    "delete_node": {"node": (_name, True)},
    "reclaim_claim": {"name": (_name, True)},
    "delete_workload": {"owner": (_str, True)},
    "probe": {"from": (_target, True), "to": (_target, True), "via": (_name, False),
              "expect": (lambda v: _choice(v, ("delivered", "dropped")), False)},
    "set_sysctl": {"node": (_name, True), "key": (_sysctl_key, True), "value": (_int(0, 2), True)},
}
STATIC_OPS = {"reclaim_claim", "delete_workload"}
NETNS_OPS = {"probe", "set_sysctl"}


def _fields(where: str, data: Any, table: dict[str, tuple[Callable[[Any], Any], bool]]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: must be a mapping of fields, not {type(data).__name__}")
    unknown = [k for k in data if k not in table]
    if unknown:
        raise ScenarioError(f"{where}: unknown field {unknown[0]!r}; known fields: {', '.join(table)}")
    out = {}
    for key, (check, required) in table.items():
        if key not in data or data[key] is None:
            if required:
                raise ScenarioError(f"{where}: field {key!r} is required")
            continue
        try:
            out[key] = check(data[key])
        except ValueError as err:
            raise ScenarioError(f"{where}: field {key!r} {err}") from None
    return out


def _cidr(v: Any) -> IPv4Network:
    try:
        net = IPv4Network(_str(v))
    except ValueError as err:
        raise ValueError(f"is not an IPv4 CIDR ({err})") from None
    lo, hi = PREFIX_RANGE
    if not lo <= net.prefixlen <= hi:
        raise ValueError(f"{net} has prefix /{net.prefixlen}; a VPC subnet is /{lo} to /{hi}")
    return net


def _ip(v: Any) -> IPv4Address:
    try:
        return IPv4Address(_str(v))
    except ValueError:
        raise ValueError(f"is not an IPv4 address: {v!r}") from None


SUBNET_FIELDS = {"id": (_name, True), "cidr": (_cidr, True), "reserved": (_int(3), False),
                 "hosts": (lambda v: v, False)}
HOST_FIELDS = {"name": (_name, True), "ip": (_ip, True)}
NODE_FIELDS = {"name": (_name, True), "subnets": (_names, True), "max_enis": (_int(1, MAX_ENIS_LIMIT), True),
               "ips_per_eni": (_int(1, IPS_PER_ENI_LIMIT), True)}
POOL_FIELDS = {"min_prebound": (_int(1, 1000), False), "max_prebound": (_int(0, 1000), False),
               "release_interval": (_number(0, strict=True), False), "quick_release": (_bool, False)}
STATIC_FIELDS = {"claim_expired_duration": (_number(0), False)}
FAULT_FIELDS = {"throttle": (_number(0, hi=0.9), False), "transient": (_number(0, hi=0.9), False),
                "insufficient_addresses": (_number(0, hi=0.9), False), "timeout": (_number(0, hi=0.9), False),
                "consistency_delay": (_number(0, hi=3600), False), "latency": (lambda v: v, False),
                "seed": (_int(0), False)}
CLUSTER_FIELDS = {"mode": (_str, False), "pool": (lambda v: v, False), "static": (lambda v: v, False),
                  "subnets": (lambda v: v, True), "nodes": (lambda v: v, False), "faults": (lambda v: v, False)}
TOP_FIELDS = {"name": (_str, False), "seed": (_int(0), False), "cluster": (lambda v: v, True),
              "steps": (lambda v: v, False)}


def _list(where: str, v: Any) -> list:
    if not isinstance(v, list):
        raise ScenarioError(f"{where}: must be a list, not {type(v).__name__}")
    return v


def _parse_cluster(data: Any, seed: int) -> ClusterSpec:
    c = _fields("cluster", data, CLUSTER_FIELDS)
    mode = c.get("mode", "shared-eni")
    if mode not in ("shared-eni", "static-ip"):
        raise ScenarioError(f"cluster: field 'mode' must be shared-eni or static-ip, not {mode!r}")
    pool_fields = _fields("cluster.pool", c.get("pool") or {}, POOL_FIELDS)
    try:
        pool = PoolConfig(**pool_fields)
    except ValueError as err:
        raise ScenarioError(f"cluster.pool: {err}") from None
    static = _fields("cluster.static", c.get("static") or {}, STATIC_FIELDS)
    expiry = static.get("claim_expired_duration")
    if expiry is not None and expiry < 300:
        raise ScenarioError("cluster.static: field 'claim_expired_duration' must be at least 300 seconds "
                            f"(or null: never), not {expiry:g}")

    subnets: list[Subnet] = []
    hosts: list[HostSpec] = []
    for i, raw in enumerate(_list("cluster.subnets", c["subnets"]), 1):
        where = f"cluster.subnets[{i}]"
        s = _fields(where, raw, SUBNET_FIELDS)
        if any(x.id == s["id"] for x in subnets):
            raise ScenarioError(f"{where}: field 'id': subnet {s['id']} is defined twice")
        for other in subnets:
            if other.cidr.overlaps(s["cidr"]):
                raise ScenarioError(f"{where}: field 'cidr': {s['cidr']} overlaps {other.id} ({other.cidr})")
        reserved = s.get("reserved", 3)
        if reserved >= s["cidr"].num_addresses - 1:
            raise ScenarioError(f"{where}: field 'reserved': {reserved} leaves no usable address in {s['cidr']}")
        subnet = Subnet(s["id"], s["cidr"], reserved)
        subnets.append(subnet)
        first = int(subnet.cidr.network_address) + reserved - 1
        last = int(subnet.cidr.broadcast_address) - 1
        for j, hraw in enumerate(_list(f"{where}.hosts", s.get("hosts") or []), 1):
            hw = f"{where}.hosts[{j}]"
            h = _fields(hw, hraw, HOST_FIELDS)
            if not first <= int(h["ip"]) <= last:
                raise ScenarioError(f"{hw}: field 'ip': {h['ip']} is not a usable address of {subnet.id} "
                                    f"({subnet.cidr}, first {reserved - 1} and the last are reserved)")
            if any(x.name == h["name"] for x in hosts) or any(x.ip == h["ip"] for x in hosts):
                raise ScenarioError(f"{hw}: host {h['name']} ({h['ip']}) repeats a name or an address")
            hosts.append(HostSpec(h["name"], subnet.id, h["ip"]))
    if not subnets:
        raise ScenarioError("cluster.subnets: list at least one subnet")

    known = {s.id for s in subnets}
    nodes: list[NodeSpec] = []
    for i, raw in enumerate(_list("cluster.nodes", c.get("nodes") or []), 1):
        nodes.append(_node_spec(f"cluster.nodes[{i}]", raw, known, {n.name for n in nodes}))

    faults = FaultConfig()
    if c.get("faults"):
        f = _fields("cluster.faults", c["faults"], FAULT_FIELDS)
        latency = f.pop("latency", None)
        if latency is not None:
            if isinstance(latency, dict):
                latency = [latency.get("min", 0), latency.get("max", 0)]
            ok = (isinstance(latency, list) and len(latency) == 2
                  and all(isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= 10
                          for x in latency) and latency[0] <= latency[1])
            if not ok:
                raise ScenarioError("cluster.faults: field 'latency' must be {min: S, max: S} in seconds, "
                                    f"0 <= min <= max <= 10, not {latency!r}")
            f["latency"] = (float(latency[0]), float(latency[1]))
        rates = f.get("throttle", 0) + f.get("transient", 0) + f.get("insufficient_addresses", 0) + f.get("timeout", 0)
        if rates >= 1:
            raise ScenarioError(f"cluster.faults: the fault rates add up to {rates:g}; keep them under 1")
        faults = FaultConfig(**f)
    return ClusterSpec(subnets=tuple(subnets), nodes=tuple(nodes), hosts=tuple(hosts), mode=mode, pool=pool,
                       claim_expired_duration=expiry, faults=faults, seed=seed)


def _node_spec(where: str, raw: Any, subnets: set[str], taken: set[str]) -> NodeSpec:
    n = _fields(where, raw, NODE_FIELDS)
    if n["name"] in taken:
        raise ScenarioError(f"{where}: field 'name': node {n['name']} exists already")
    unknown = [s for s in n["subnets"] if s not in subnets]
    if unknown:
        raise ScenarioError(f"{where}: field 'subnets': unknown subnet {unknown[0]}; "
                            f"defined: {', '.join(sorted(subnets))}")
    return NodeSpec(n["name"], tuple(n["subnets"]), n["max_enis"], n["ips_per_eni"])


class _Timeline:
    """What exists at each step, to check names before anything runs."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.nodes = {n.name for n in spec.nodes}
        self.pods: dict[str, str | None] = {}
        self.owners: dict[str, str | None] = {}  # pod -> its workload
        self.claims: dict[str, str | None] = {}  # static claim -> its workload
        self.auto = 0
        self.hosts = {h.name for h in spec.hosts}

    def auto_name(self) -> str:
        while True:
            self.auto += 1
            if f"pod-{self.auto}" not in self.pods:
                return f"pod-{self.auto}"

    def check(self, where: str, op: str, f: dict[str, Any]) -> None:
        def need_node(key: str) -> None:
            if key in f and f[key] not in self.nodes:
                raise ScenarioError(f"{where}: field {key!r}: unknown node {f[key]!r}; nodes at this step: "
                                    f"{', '.join(sorted(self.nodes)) or 'none'}")

        static = op in STATIC_OPS or (op == "create_pod" and (f.get("static") or f.get("owner")))
        if static and self.spec.mode != "static-ip":
            raise ScenarioError(f"{where}: static IPs need cluster.mode: static-ip")
        if op == "create_pods":
            need_node("node")
            names = f.get("names")
            if names is not None and "count" in f and f["count"] != len(names):
                raise ScenarioError(f"{where}: field 'count' is {f['count']} but 'names' lists {len(names)}")
            if names is None and "count" not in f:
                raise ScenarioError(f"{where}: give 'count' or 'names'")
            for name in names or [self.auto_name() for _ in range(f["count"])]:
                if name in self.pods:
                    raise ScenarioError(f"{where}: field 'names': pod {name} exists already")
                self.pods[name] = f.get("node")
        elif op == "create_pod":
            need_node("node")
            if f["name"] in self.pods:
                raise ScenarioError(f"{where}: field 'name': pod {f['name']} exists already")
            self.pods[f["name"]] = f.get("node")
            self.owners[f["name"]] = f.get("owner")
            if f.get("static"):
                self.claims[f["name"]] = f.get("owner")
        elif op == "reclaim_claim":
            if f["name"] not in self.claims:
                raise ScenarioError(f"{where}: field 'name': no static pod named {f['name']!r} has a claim at "
                                    "this step")
            if f["name"] in self.pods:
                raise ScenarioError(f"{where}: field 'name': pod {f['name']} still exists; delete it first "
                                    "(a claim is reclaimed only once its pod is gone)")
            del self.claims[f["name"]]
        elif op == "delete_workload":
            known = set(self.owners.values()) | set(self.claims.values())
            if f["owner"] not in known:
                raise ScenarioError(f"{where}: field 'owner': no pod or claim belongs to {f['owner']!r}")
            self.pods = {p: n for p, n in self.pods.items() if self.owners.get(p) != f["owner"]}
            self.claims = {c: o for c, o in self.claims.items() if o != f["owner"]}
        elif op == "delete_pods":
            if ("names" in f) == ("count" in f):
                raise ScenarioError(f"{where}: give exactly one of 'names' and 'count'")
            if "count" in f:
                if f["count"] > len(self.pods):
                    raise ScenarioError(f"{where}: field 'count': {f['count']} pods to delete but only "
                                        f"{len(self.pods)} exist at this step")
                for name in list(self.pods)[::-1][: f["count"]]:
                    del self.pods[name]
            else:
                for name in f["names"]:
                    if name not in self.pods:
                        raise ScenarioError(f"{where}: field 'names': unknown pod {name!r}")
                    del self.pods[name]
        elif op in ("set_node", "delete_node", "set_sysctl"):
            need_node("node")
            if op == "delete_node":
                self.nodes.discard(f["node"])
                self.pods = {p: n for p, n in self.pods.items() if n != f["node"]}
        elif op == "add_node":
            spec = _node_spec(where, {k: f[k] for k in ("name", "subnets", "max_enis", "ips_per_eni")},
                              {s.id for s in self.spec.subnets}, self.nodes)
            self.nodes.add(spec.name)
        elif op == "probe":
            for key in ("from", "to"):
                target = f[key]
                if target in self.pods or target in self.hosts:
                    continue
                try:
                    IPv4Address(target)
                except ValueError:
                    raise ScenarioError(f"{where}: field {key!r}: {target!r} is no pod, host or IP address "
                                        "at this step") from None
            if f["from"] not in self.pods and f["from"] not in self.hosts:
                raise ScenarioError(f"{where}: field 'from': a probe starts at a pod or a host")
            need_node("via")


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate a whole scenario (already loaded from YAML); raise ScenarioError naming the place."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping with 'cluster' and 'steps'")
    try:
        top = _fields("scenario", data, TOP_FIELDS)
        spec = _parse_cluster(top["cluster"], top.get("seed", 0))
        timeline = _Timeline(spec)
        steps = []
        for i, raw in enumerate(_list("steps", top.get("steps") or []), 1):
            if not isinstance(raw, dict) or "op" not in raw:
                raise ScenarioError(f"step {i}: each step is a mapping with an 'op'")
            op = raw["op"]
            if not isinstance(op, str) or op not in OPS:
                raise ScenarioError(f"step {i}: unknown op {op!r}; known ops: {', '.join(OPS)}")
            where = f"step {i} ({op})"
            fields = _fields(where, {k: v for k, v in raw.items() if k != "op"}, OPS[op])
            timeline.check(where, op, fields)
            steps.append({"op": op, **fields})
    except ScenarioError as err:
        raise ScenarioError(f"{source}: {err}") from None
    return Scenario(top.get("name") or Path(source).stem, spec, steps, source)


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = resolve(path).read_text()  # a built-in's name stands for its shipped file
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read it ({err.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not a text file; a scenario is YAML") from None
    except ValueError as err:  # a NUL byte in the name, say
        raise ScenarioError(f"{str(path)!r} is not a usable file name ({err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ScenarioError(f"{path}: not valid YAML{at}: {problem}") from None
    return parse_scenario(data, str(path))
