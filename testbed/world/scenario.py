"""Scenario files: parse and validate the whole timeline before anything runs, then run it.

The format and the JSON timeline are a public contract (docs/scenario-format.md). Validation is
table-driven: `OPS` says which fields each op takes and how each is checked, and `_Timeline.CHECKS` holds
one checker per op that checks names against the timeline (a node added in step 2 may be used from step
3 on; a deleted pod may not be deleted again). Every name that may later become part of a path or a
namespace name is checked here by `eni_core.names`, and every check is linear in the size of the file.
Hostile input (an alias bomb, deep nesting, a huge file) is refused by `testbed.world.yamlfile` and by
the limits below, each with a short message: quoted values are cut to 80 characters, lists to 5 items.
"""
from __future__ import annotations

import math
import os
import shlex
import stat
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.resources.abc import Traversable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, ClassVar

from eni_core import names
from eni_core.model import PoolConfig, Subnet
from eni_core.names import short_list, shorten
from eni_core.static import ClaimError, check_expiry
from testbed.errors import UserError
from testbed.world import yamlfile
from testbed.world.addresses import usable_range
from testbed.world.catalog import resolve
from testbed.world.faults import FaultConfig
from testbed.world.pods import newest_first, next_auto_name
from testbed.world.spec import ClusterSpec, HostSpec, Mode, NodeSpec

__all__ = ["LIMITS", "OPS", "SYSCTLS", "Scenario", "ScenarioError", "load_scenario", "parse_faults", "parse_scenario",
           "parse_step"]

MAX_ENIS_LIMIT = 32
IPS_PER_ENI_LIMIT = 1000
MAX_PREBOUND = 1000  # a pool's min_prebound and max_prebound (`enilab tune` sweeps within it too)
MAX_ADVANCE_S = 10 * 365 * 86400  # one `advance`: ten years (and the longest duration `enilab tune` sweeps)
PREFIX_RANGE = (16, 29)

# What a scenario may ask for; beyond it, exit 2 before anything runs (docs/scenario-format.md lists them).
MAX_FILE_BYTES = 1 << 20
MAX_STEPS = 10_000
MAX_PODS_PER_STEP = 10_000  # `count` or `names` of one create_pods or delete_pods
MAX_PODS_CREATED = 100_000  # in the whole scenario
MAX_NODES = 1_000  # at any step
MAX_SUBNETS = 64
MAX_HOSTS = 1_000  # in all subnets together
# What a run of it may make; beyond it, the run stops with exit 2 at the step that went over (testbed.apps.runner)
MAX_RUN_EVENTS = 500_000  # and as many timers fired; the timeline keeps every event, 1 to 5 KB each
MAX_RUN_CLOUD_CALLS = 50_000  # of those events, with --cloud tencent: a minute of HTTP requests through the SDK
MAX_RUN_STATE_ITEMS = 10_000_000  # nodes, ENIs, bound IPs, pods and claims, in all the states recorded
LIMITS = {"file size (bytes)": MAX_FILE_BYTES, "nesting depth": yamlfile.MAX_DEPTH,
          "values in the file": yamlfile.MAX_VALUES, "digits in a number": yamlfile.MAX_DIGITS, "steps": MAX_STEPS,
          "pods per step": MAX_PODS_PER_STEP, "pods created in all": MAX_PODS_CREATED, "nodes": MAX_NODES,
          "subnets": MAX_SUBNETS, "hosts": MAX_HOSTS, "events in a run": MAX_RUN_EVENTS,
          "cloud calls in a run": MAX_RUN_CLOUD_CALLS,
          "state items in a run": MAX_RUN_STATE_ITEMS}

# The sysctls `set_sysctl` may write: the ones the routing agent manages and `enilab status` reports.
# key -> (lowest value, highest value, what it does)
SYSCTLS: dict[str, tuple[int, int, str]] = {
    "net.ipv4.conf.all.rp_filter": (0, 2, "reverse-path filter on every interface (the kernel applies the "
                                          "larger of `all` and the interface's own)"),
    "net.ipv4.conf.default.rp_filter": (0, 2, "reverse-path filter of interfaces made later (new ENIs)"),
    "net.ipv4.conf.eth0.rp_filter": (0, 2, "reverse-path filter of the primary ENI"),
    "net.ipv4.ip_forward": (0, 1, "forwarding between the pods and the ENIs"),
}
SOURCE = "<scenario>"


class ScenarioError(UserError):
    """An invalid scenario or topology: the message names the place, the field and what to do."""


@dataclass
class Scenario:
    name: str
    cluster: ClusterSpec
    steps: list[dict[str, Any]] = field(default_factory=list)
    source: str = SOURCE
    backend: str | None = None  # the data-plane backend the file asks for (`--backend` overrides it)


# -- field checkers: each returns the normalised value or raises ValueError(reason) ------------------
Check = Callable[[Any], Any]


def _int(lo: int, hi: int | None = None) -> Check:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be a whole number, not {shorten(v)}")
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"must be between {lo} and {hi}, not {shorten(v)}" if hi is not None
                             else f"must be {lo} or more, not {shorten(v)}")
        return v
    return check


def _finite(v: int | float) -> bool:
    """Whether `v` is a finite float or an integer a float can hold (10 ** 400 is neither: OverflowError)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _number(lo: float, *, strict: bool = False, hi: float | None = None) -> Check:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not math.isfinite(v)):
            raise ValueError(f"must be a number, not {shorten(v)}")
        if v < lo or (strict and v == lo) or (hi is not None and v > hi):  # exact, for integers of any size
            raise ValueError(f"must be {'above' if strict else 'at least'} {lo}"
                             + (f" and at most {hi}" if hi is not None else "") + f", not {shorten(v)}")
        if not _finite(v):  # an integer beyond any float, and no upper bound to name
            raise ValueError(f"must be a number a float can hold, not {shorten(v)}")
        return float(v)
    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, not {shorten(v)}")
    return v


def _choice(*choices: str) -> Check:
    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {shorten(v)}")
        return v
    return check


def _enum(kind: type[StrEnum]) -> Check:
    """One of an enum's values, as its member."""
    choice = _choice(*kind)

    def check(v: Any) -> StrEnum:
        return kind(choice(v))
    return check


def _mapping(v: Any) -> dict:
    if not isinstance(v, dict):
        raise ValueError(f"must be a mapping, not {type(v).__name__}")
    return v


def _sequence(v: Any) -> list:
    if not isinstance(v, list):
        raise ValueError(f"must be a list, not {type(v).__name__}")
    return v


def _rule(rule: Callable[[Any], str]) -> Check:
    """A name rule of eni_core.names as a field checker."""
    def check(v: Any) -> str:
        try:
            return rule(v)
        except names.InvalidName as err:
            raise ValueError(str(err)) from None
    return check


_label = _rule(names.dns_label)
_pod = _rule(names.pod_name)
_owner = _rule(names.owner_ref)


def _unique(item: Check, what: str, limit: int) -> Check:
    """A non-empty list of at most `limit` distinct items: checked in one pass, each item once."""
    def check(v: Any) -> list:
        if not isinstance(v, list) or not v:
            raise ValueError(f"must be a non-empty list of {what}s, not {shorten(v)}")
        if len(v) > limit:
            raise ValueError(f"lists {len(v)} {what}s; the limit is {limit}")
        seen: set[str] = set()
        for x in v:
            x = item(x)
            if x in seen:
                raise ValueError(f"names {what} {shorten(x)} twice")
            seen.add(x)
        return v
    return check


def _image(v: Any) -> str:
    from testbed.world.engine import check_image_name

    return check_image_name(v)


def _command(v: Any) -> list[str]:
    """A list of strings, or one string split as a shell would (no shell runs it)."""
    if isinstance(v, str):
        try:
            argv = shlex.split(v)
        except ValueError as err:
            raise ValueError(f"cannot split {shorten(v)}: {err}") from None
    elif isinstance(v, list) and all(isinstance(x, str) for x in v):
        argv = list(v)
    else:
        raise ValueError(f"must be a list of strings or one string, not {shorten(v)}")
    if not argv or not argv[0]:
        raise ValueError("must name a program to run")
    return argv


def _target(v: Any) -> str:
    if isinstance(v, str) and v.strip():
        return v
    raise ValueError(f"must be a pod name, host name or IP address, not {shorten(v)}")


def _sysctl_key(v: Any) -> str:
    if v not in SYSCTLS:
        raise ValueError(f"{shorten(v)} is not a sysctl enilab manages; use one of {', '.join(SYSCTLS)}")
    return v


def _cidr(v: Any) -> IPv4Network:
    try:
        net = IPv4Network(v if isinstance(v, str) else "")
    except ValueError:
        raise ValueError(f"is not an IPv4 CIDR: {shorten(v)}") from None
    lo, hi = PREFIX_RANGE
    if not lo <= net.prefixlen <= hi:
        raise ValueError(f"{net} has prefix /{net.prefixlen}; a VPC subnet is /{lo} to /{hi}")
    return net


def _ip(v: Any) -> IPv4Address:
    try:
        return IPv4Address(v if isinstance(v, str) else "")
    except ValueError:
        raise ValueError(f"is not an IPv4 address: {shorten(v)}") from None


Fields = dict[str, tuple[Check, bool]]  # field -> (checker, required)

# op -> its fields
OPS: dict[str, Fields] = {
    "create_pods": {"node": (_label, False), "count": (_int(1, MAX_PODS_PER_STEP), False),
                    "names": (_unique(_pod, "pod", MAX_PODS_PER_STEP), False), "image": (_image, False),
                    "command": (_command, False)},
    "create_pod": {"name": (_pod, True), "node": (_label, False), "static": (_bool, False),
                   "owner": (_owner, False)},
    "delete_pods": {"names": (_unique(_pod, "pod", MAX_PODS_PER_STEP), False),
                    "count": (_int(1, MAX_PODS_PER_STEP), False)},
    "advance": {"seconds": (_number(0, strict=True, hi=MAX_ADVANCE_S), True)},
    "set_node": {"node": (_label, True), "max_enis": (_int(1, MAX_ENIS_LIMIT), False),
                 "ips_per_eni": (_int(1, IPS_PER_ENI_LIMIT), False)},
    "add_node": {"name": (_label, True), "subnets": (_unique(_label, "subnet", MAX_SUBNETS), True),
                 "max_enis": (_int(1, MAX_ENIS_LIMIT), True), "ips_per_eni": (_int(1, IPS_PER_ENI_LIMIT), True)},
    "delete_node": {"node": (_label, True)},
    "reclaim_claim": {"name": (_pod, True)},
    "delete_workload": {"owner": (_owner, True)},
    "probe": {"from": (_target, True), "to": (_target, True), "via": (_label, False),
              "expect": (_choice("delivered", "dropped"), False)},
    "set_sysctl": {"node": (_label, True), "key": (_sysctl_key, True), "value": (_int(0, 2), True)},
}
STATIC_OPS = {"reclaim_claim", "delete_workload"}
NETNS_OPS = {"probe", "set_sysctl"}

BACKENDS = ("sim", "netns", "containers")
TOP_FIELDS: Fields = {"name": (_label, False), "seed": (_int(0, 2**63 - 1), False), "cluster": (_mapping, True),
                      "steps": (_sequence, False), "backend": (_choice(*BACKENDS), False)}
CLUSTER_FIELDS: Fields = {"mode": (_enum(Mode), False), "pool": (_mapping, False),
                          "static": (_mapping, False), "subnets": (_sequence, True), "nodes": (_sequence, False),
                          "faults": (_mapping, False)}
POOL_FIELDS: Fields = {"min_prebound": (_int(1, MAX_PREBOUND), False), "max_prebound": (_int(0, MAX_PREBOUND), False),
                       "release_interval": (_number(0, strict=True), False), "quick_release": (_bool, False)}
STATIC_FIELDS: Fields = {"claim_expired_duration": (_number(0), False)}
SUBNET_FIELDS: Fields = {"id": (_label, True), "cidr": (_cidr, True), "reserved": (_int(3), False),
                         "hosts": (_sequence, False)}
HOST_FIELDS: Fields = {"name": (_label, True), "ip": (_ip, True)}
NODE_FIELDS: Fields = {"name": (_label, True), "subnets": (_unique(_label, "subnet", MAX_SUBNETS), True),
                       "max_enis": (_int(1, MAX_ENIS_LIMIT), True), "ips_per_eni": (_int(1, IPS_PER_ENI_LIMIT), True)}
RATES = ("throttle", "transient", "insufficient_addresses", "timeout")
FAULT_FIELDS: Fields = {**dict.fromkeys(RATES, (_number(0, hi=0.9), False)),
                        "consistency_delay": (_number(0, hi=3600), False), "latency": (lambda v: v, False),
                        "seed": (_int(0, 2**63 - 1), False)}
# a cluster made flaky at run time (the pytest plugin's `faults`, the labs) may fail every call on purpose
EVERY_CALL_FAULT_FIELDS: Fields = {**FAULT_FIELDS, **dict.fromkeys(RATES, (_number(0, hi=1), False))}
LATENCY_FIELDS: Fields = {"min": (_number(0, hi=10), False), "max": (_number(0, hi=10), False)}


def _fields(where: str, data: Any, table: Fields) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: must be a mapping of fields, not {type(data).__name__}")
    unknown = [k for k in data if k not in table]
    if unknown:
        raise ScenarioError(f"{where}: unknown field {shorten(unknown[0])}; known fields: {', '.join(table)}")
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


def _at_most(where: str, items: list, limit: int, what: str) -> list:
    if len(items) > limit:
        raise ScenarioError(f"{where}: {len(items)} {what}; the limit is {limit}")
    return items


# -- the cluster: one small parser per section ------------------------------------------------------
def _parse_cluster(data: Any, seed: int) -> ClusterSpec:
    c = _fields("cluster", data, CLUSTER_FIELDS)
    subnets, hosts = _parse_subnets(c["subnets"])
    return ClusterSpec(subnets=subnets, nodes=_parse_nodes(c.get("nodes", []), subnets), hosts=hosts,
                       mode=c.get("mode", Mode.SHARED_ENI), pool=_parse_pool(c.get("pool", {})),
                       claim_expired_duration=_parse_expiry(c.get("static", {})),
                       faults=parse_faults(c.get("faults", {})), seed=seed)


def _parse_pool(data: dict) -> PoolConfig:
    try:
        return PoolConfig(**_fields("cluster.pool", data, POOL_FIELDS))
    except ValueError as err:
        raise ScenarioError(f"cluster.pool: {err}") from None


def _parse_expiry(data: dict) -> float | None:
    try:
        return check_expiry(_fields("cluster.static", data, STATIC_FIELDS).get("claim_expired_duration"))
    except ClaimError as err:
        raise ScenarioError(f"cluster.static: {err}") from None


def _parse_subnets(data: list) -> tuple[tuple[Subnet, ...], tuple[HostSpec, ...]]:
    if not data:
        raise ScenarioError("cluster.subnets: list at least one subnet")
    _at_most("cluster.subnets", data, MAX_SUBNETS, "subnets")
    subnets: dict[str, Subnet] = {}
    host_names: set[str] = set()
    host_ips: set[IPv4Address] = set()
    hosts: list[HostSpec] = []
    for i, raw in enumerate(data, 1):
        where = f"cluster.subnets[{i}]"
        s = _fields(where, raw, SUBNET_FIELDS)
        if s["id"] in subnets:
            raise ScenarioError(f"{where}: field 'id': subnet {s['id']} is defined twice")
        subnet = Subnet(s["id"], s["cidr"], s.get("reserved", Subnet.reserved))
        if subnet.reserved > subnet.size - 1:  # checked before its addresses are made: past 2**32 none can be
            raise ScenarioError(f"{where}: field 'reserved': {subnet.reserved} leaves no usable address "
                                f"in {subnet.cidr}")
        subnets[subnet.id] = subnet
        listed = s.get("hosts", [])
        if len(hosts) + len(listed) > MAX_HOSTS:
            raise ScenarioError(f"{where}.hosts: {len(hosts) + len(listed)} hosts in all; the limit is {MAX_HOSTS}")
        for j, raw_host in enumerate(listed, 1):
            hosts.append(_parse_host(f"{where}.hosts[{j}]", raw_host, subnet, host_names, host_ips))
    _refuse_overlaps(list(subnets.values()))
    return tuple(subnets.values()), tuple(hosts)


def _refuse_overlaps(subnets: list[Subnet]) -> None:
    """Sorted by first address, each subnet must start after every one before it ends (n log n)."""
    order = sorted(range(len(subnets)), key=lambda i: subnets[i].cidr.network_address)
    reach = None  # the index of the subnet that ends last among those seen
    for i in order:
        if reach is not None and subnets[i].cidr.network_address <= subnets[reach].cidr.broadcast_address:
            later, earlier = subnets[max(i, reach)], subnets[min(i, reach)]
            raise ScenarioError(f"cluster.subnets[{max(i, reach) + 1}]: field 'cidr': {later.cidr} "
                                f"overlaps {earlier.id} ({earlier.cidr})")
        if reach is None or subnets[i].cidr.broadcast_address > subnets[reach].cidr.broadcast_address:
            reach = i


def _parse_host(where: str, data: Any, subnet: Subnet, names_taken: set[str], ips_taken: set[IPv4Address]
                ) -> HostSpec:
    h = _fields(where, data, HOST_FIELDS)
    first, last = usable_range(subnet)
    if not first <= h["ip"] <= last:
        raise ScenarioError(f"{where}: field 'ip': {h['ip']} is not a usable address of {subnet.id} "
                            f"({subnet.cidr}: {first} to {last})")
    if h["name"] in names_taken or h["ip"] in ips_taken:
        raise ScenarioError(f"{where}: host {h['name']} ({h['ip']}) repeats a name or an address")
    names_taken.add(h["name"])
    ips_taken.add(h["ip"])
    return HostSpec(h["name"], subnet.id, h["ip"])


def _parse_nodes(data: list, subnets: tuple[Subnet, ...]) -> tuple[NodeSpec, ...]:
    _at_most("cluster.nodes", data, MAX_NODES, "nodes")
    known = {s.id for s in subnets}
    nodes: dict[str, NodeSpec] = {}
    for i, raw in enumerate(data, 1):
        spec = _node_spec(f"cluster.nodes[{i}]", raw, known, nodes)
        nodes[spec.name] = spec
    return tuple(nodes.values())


def _node_spec(where: str, raw: Any, subnets: set[str], taken: Iterable[str]) -> NodeSpec:
    n = _fields(where, raw, NODE_FIELDS)
    if n["name"] in taken:
        raise ScenarioError(f"{where}: field 'name': node {n['name']} exists already")
    unknown = [s for s in n["subnets"] if s not in subnets]
    if unknown:
        raise ScenarioError(f"{where}: field 'subnets': unknown subnet {unknown[0]}; "
                            f"defined: {short_list(sorted(subnets))}")
    return NodeSpec(n["name"], tuple(n["subnets"]), n["max_enis"], n["ips_per_eni"])


def parse_faults(data: Any, where: str = "cluster.faults", every_call: bool = False) -> FaultConfig:
    """A scenario's faults: rates of at most 0.9 that add up to less than 1, a consistency delay of at most an
    hour, a latency of at most 10 s. With `every_call` (a cluster made flaky on purpose at run time) a rate,
    and their sum, may be 1: every call fails."""
    f = _fields(where, data, EVERY_CALL_FAULT_FIELDS if every_call else FAULT_FIELDS)
    if "latency" in f:
        f["latency"] = _parse_latency(f["latency"], f"{where}.latency")
    rates = sum(f.get(rate, 0) for rate in RATES)
    if rates > 1 or (rates == 1 and not every_call):
        raise ScenarioError(f"{where}: the fault rates add up to {rates:g}; keep them under 1")
    return FaultConfig(**f)


def _parse_latency(data: Any, where: str) -> tuple[float, float]:
    if isinstance(data, list | tuple):  # [min, max]
        if len(data) != 2:
            raise ScenarioError(f"{where}: give {{min: S, max: S}} or [min, max] in seconds, not {shorten(data)}")
        data = dict(zip(("min", "max"), data, strict=True))
    f = _fields(where, data, LATENCY_FIELDS)
    low, high = f.get("min", 0.0), f.get("max", 0.0)
    if low > high:
        raise ScenarioError(f"{where}: min ({low:g}) is above max ({high:g})")
    return low, high


# -- the steps, against the timeline ----------------------------------------------------------------
class _Timeline:
    """What exists at each step, to check names before anything runs. Every check costs time in
    proportion to what its step names (indexes by node and by owner, no scan of every pod)."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.subnets = {s.id for s in spec.subnets}
        self.nodes = {n.name for n in spec.nodes}
        self.hosts = {h.name for h in spec.hosts}
        self.pods: dict[str, str | None] = {}  # pod -> its node (None: the scheduler's choice); creation order
        self.on_node: dict[str | None, set[str]] = defaultdict(set)
        self.owner: dict[str, str] = {}  # pod -> its workload
        self.owned: dict[str, set[str]] = defaultdict(set)  # workload -> its pods
        self.claims: dict[str, str | None] = {}  # static claim -> its workload
        self.claimed: dict[str, set[str]] = defaultdict(set)  # workload -> its claims
        self.auto = 0
        self.created = 0

    def check(self, where: str, op: str, f: dict[str, Any]) -> None:
        static = op in STATIC_OPS or (op == "create_pod" and (f.get("static") or f.get("owner")))
        if static and self.spec.mode != Mode.STATIC_IP:
            raise ScenarioError(f"{where}: static IPs need cluster.mode: static-ip")
        self.CHECKS[op](self, where, f)

    # -- helpers --
    def _need_node(self, where: str, f: dict[str, Any], key: str = "node") -> None:
        if key in f and f[key] not in self.nodes:
            raise ScenarioError(f"{where}: field {key!r}: unknown node {f[key]!r}; nodes at this step: "
                                f"{short_list(sorted(self.nodes)) or 'none'}")

    def _add_pod(self, where: str, key: str, name: str, node: str | None) -> None:
        if name in self.pods:
            raise ScenarioError(f"{where}: field {key!r}: pod {name} exists already")
        self.created += 1
        if self.created > MAX_PODS_CREATED:
            raise ScenarioError(f"{where}: more than {MAX_PODS_CREATED} pods created in all; that is the limit")
        self.pods[name] = node
        self.on_node[node].add(name)

    def _drop_claim(self, name: str) -> None:
        owner = self.claims.pop(name, None)
        if owner is not None:
            self.claimed[owner].discard(name)

    def _forget_pod(self, name: str) -> None:
        self.on_node[self.pods.pop(name)].discard(name)
        owner = self.owner.pop(name, None)
        if owner is not None:
            self.owned[owner].discard(name)

    # -- one checker per op --
    def create_pods(self, where: str, f: dict[str, Any]) -> None:
        self._need_node(where, f)
        names_given = f.get("names")
        if names_given is None:
            for _ in range(f["count"]):
                self.auto, name = next_auto_name(self.auto, self.pods)
                self._add_pod(where, "count", name, f.get("node"))
        else:
            for name in names_given:
                self._add_pod(where, "names", name, f.get("node"))

    def create_pod(self, where: str, f: dict[str, Any]) -> None:
        self._need_node(where, f)
        name = f["name"]
        self._add_pod(where, "name", name, f.get("node"))
        if f.get("owner"):
            self.owner[name] = f["owner"]
            self.owned[f["owner"]].add(name)
        if f.get("static"):
            self._drop_claim(name)  # a static pod made again: its claim may now have another owner
            self.claims[name] = f.get("owner")
            if f.get("owner"):
                self.claimed[f["owner"]].add(name)

    def reclaim_claim(self, where: str, f: dict[str, Any]) -> None:
        if f["name"] not in self.claims:
            raise ScenarioError(f"{where}: field 'name': no static pod named {f['name']!r} has a claim at this step")
        if f["name"] in self.pods:
            raise ScenarioError(f"{where}: field 'name': pod {f['name']} still exists; delete it first "
                                "(a claim is reclaimed only once its pod is gone)")
        self._drop_claim(f["name"])

    def delete_workload(self, where: str, f: dict[str, Any]) -> None:
        owner = f["owner"]
        if not self.owned.get(owner) and not self.claimed.get(owner):
            raise ScenarioError(f"{where}: field 'owner': no pod or claim belongs to {owner}")
        for name in list(self.owned.pop(owner, ())):
            self._forget_pod(name)
        for claim in list(self.claimed.pop(owner, ())):
            del self.claims[claim]

    def delete_pods(self, where: str, f: dict[str, Any]) -> None:
        if "count" in f:
            if f["count"] > len(self.pods):
                raise ScenarioError(f"{where}: field 'count': {f['count']} pods to delete but only "
                                    f"{len(self.pods)} exist at this step")
            doomed = newest_first(self.pods, f["count"])
        else:
            doomed = f["names"]
            unknown = next((name for name in doomed if name not in self.pods), None)
            if unknown is not None:
                raise ScenarioError(f"{where}: field 'names': unknown pod {shorten(unknown)}")
        for name in doomed:
            self._forget_pod(name)

    def set_node(self, where: str, f: dict[str, Any]) -> None:
        self._need_node(where, f)

    def delete_node(self, where: str, f: dict[str, Any]) -> None:
        self._need_node(where, f)
        self.nodes.discard(f["node"])
        for name in list(self.on_node.get(f["node"], ())):
            self._forget_pod(name)
        self.on_node.pop(f["node"], None)

    def add_node(self, where: str, f: dict[str, Any]) -> None:
        if len(self.nodes) >= MAX_NODES:
            raise ScenarioError(f"{where}: {MAX_NODES} nodes exist at this step; that is the limit")
        spec = _node_spec(where, {k: f[k] for k in ("name", "subnets", "max_enis", "ips_per_eni")},
                          self.subnets, self.nodes)
        self.nodes.add(spec.name)

    def set_sysctl(self, where: str, f: dict[str, Any]) -> None:
        self._need_node(where, f)
        low, high, _ = SYSCTLS[f["key"]]
        if not low <= f["value"] <= high:
            raise ScenarioError(f"{where}: field 'value': {f['key']} takes {low} to {high}, not {f['value']}")

    def probe(self, where: str, f: dict[str, Any]) -> None:
        for key in ("from", "to"):
            target = f[key]
            if target in self.pods or target in self.hosts:
                continue
            try:
                IPv4Address(target)
            except ValueError:
                raise ScenarioError(f"{where}: field {key!r}: {shorten(target)} is no pod, host or IP address "
                                    "at this step") from None
        if f["from"] not in self.pods and f["from"] not in self.hosts:
            raise ScenarioError(f"{where}: field 'from': a probe starts at a pod or a host")
        self._need_node(where, f, "via")

    def advance(self, where: str, f: dict[str, Any]) -> None:
        """Time passes; no name changes."""

    CHECKS: ClassVar[dict[str, Callable[[_Timeline, str, dict[str, Any]], None]]] = {
        "create_pods": create_pods, "create_pod": create_pod, "reclaim_claim": reclaim_claim,
        "delete_workload": delete_workload, "delete_pods": delete_pods, "advance": advance,
        "set_node": set_node, "add_node": add_node, "delete_node": delete_node, "set_sysctl": set_sysctl,
        "probe": probe,
    }


def _scenario_name(top: dict[str, Any], source: str) -> str:
    if "name" in top:
        return top["name"]
    if source == SOURCE:
        return "scenario"
    stem = Path(source).stem
    try:
        return names.dns_label(stem)
    except names.InvalidName:
        raise ScenarioError(f"scenario: no field 'name' and the file name {shorten(stem)} is not a DNS label "
                            "(lowercase letters, digits and '-'); add `name: ...`") from None


def parse_step(raw: Any, where: str = "step") -> dict[str, Any]:
    """One step checked on its own, as a scenario's steps are: its op, its fields' types, ranges and name
    rules; not against a timeline (whether the nodes and pods it names exist is the caller's to know).
    Raise ScenarioError naming `where`, the op and the field.

    >>> parse_step({"op": "advance", "seconds": float("nan")})
    Traceback (most recent call last):
    testbed.world.scenario.ScenarioError: step (advance): field 'seconds' must be a number, not nan
    """
    if not isinstance(raw, dict) or "op" not in raw:
        raise ScenarioError(f"{where}: each step is a mapping with an 'op'")
    op = raw["op"]
    if not isinstance(op, str) or op not in OPS:
        raise ScenarioError(f"{where}: unknown op {shorten(op)}; known ops: {', '.join(OPS)}")
    where = f"{where} ({op})"
    f = _fields(where, {k: v for k, v in raw.items() if k != "op"}, OPS[op])
    if op == "create_pods":
        if "names" in f and "count" in f and f["count"] != len(f["names"]):
            raise ScenarioError(f"{where}: field 'count' is {f['count']} but 'names' lists {len(f['names'])}")
        if "names" not in f and "count" not in f:
            raise ScenarioError(f"{where}: give 'count' or 'names'")
    if op == "delete_pods" and ("names" in f) == ("count" in f):
        raise ScenarioError(f"{where}: give exactly one of 'names' and 'count'")
    return {"op": op, **f}


def _parse_step(i: int, raw: Any, timeline: _Timeline) -> dict[str, Any]:
    step = parse_step(raw, f"step {i}")
    timeline.check(f"step {i} ({step['op']})", step["op"], step)
    return step


def parse_scenario(data: Any, source: str = SOURCE) -> Scenario:
    """Validate a whole scenario (already loaded from YAML); raise ScenarioError naming the place."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping with 'cluster' and 'steps'")
    try:
        top = _fields("scenario", data, TOP_FIELDS)
        name = _scenario_name(top, source)
        spec = _parse_cluster(top["cluster"], top.get("seed", 0))
        raw_steps = _at_most("steps", top.get("steps", []), MAX_STEPS, "steps")
        timeline = _Timeline(spec)
        steps = [_parse_step(i, raw, timeline) for i, raw in enumerate(raw_steps, 1)]
    except ScenarioError as err:
        raise ScenarioError(f"{source}: {err}") from None
    return Scenario(name, spec, steps, source, top.get("backend"))


def _read_at_most(source: Path | Traversable, limit: int, shown: str) -> bytes:
    """Up to `limit` bytes of a regular file (or of a built-in's shipped one). A FIFO, a device or a folder
    is refused at once: opening a FIFO would otherwise wait for a writer, for ever."""
    if not isinstance(source, Path):
        with source.open("rb") as file:
            return file.read(limit)
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise ScenarioError(f"{shown}: {kind}; give a scenario's YAML file")
        with open(fd, "rb", closefd=False) as file:
            return file.read(limit)
    finally:
        os.close(fd)


def load_scenario(path: str | Path) -> Scenario:
    """Read, parse and validate a scenario or topology file; raise ScenarioError with a short message."""
    if not str(path).strip():  # Path("") is the current folder
        raise ScenarioError("give a scenario: a file's path, or a built-in's name such as default or grow-and-shrink")
    path = Path(path)
    shown = str(path) if len(str(path)) <= 120 and str(path).isprintable() else shorten(str(path), 120)
    try:
        raw = _read_at_most(resolve(path), MAX_FILE_BYTES + 1, shown)  # a built-in's name stands for its shipped file
    except OSError as err:
        raise ScenarioError(f"{shown}: cannot read it ({err.strerror}); check the path") from None
    except ValueError as err:  # a NUL byte in the name, say
        raise ScenarioError(f"{shorten(str(path))} is not a usable file name ({err})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(f"{shown}: larger than {MAX_FILE_BYTES} bytes, the limit for a scenario")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ScenarioError(f"{shown}: not a text file; a scenario is YAML") from None
    try:
        data = yamlfile.load(text)
    except yamlfile.YamlRefused as err:
        raise ScenarioError(f"{shown}: {err}") from None
    return parse_scenario(data, shown)
