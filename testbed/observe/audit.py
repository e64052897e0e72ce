"""`enilab audit`: the three truths compared, the VPC's bindings, each node's ipamd datastore, and each
node's kernel (rules, tables, routes). Every finding says what is wrong and where.

The datastore is read through a `Datastores` view so the same audit serves an in-process cluster and
node agents running as their own processes.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address
from typing import Any

from eni_core import netlink as nl
from eni_core import routing
from eni_core.model import eni_table
from testbed.world.backends.netns import NetnsBackend
from testbed.world.vpc import SimVpc

__all__ = ["KEYS", "audit", "audit_cluster", "datastore_view", "report_lines"]

KEYS = ("leaked_ips", "leaked_enis", "double_allocations", "missing_routes", "stale_routes")  # the findings, in order

# node -> {"enis": {eni id: {"mac": str, "ips": {ip str: pod or None}}}}
Datastores = Mapping[str, dict[str, Any]]


def report_lines(report: dict) -> list[str]:
    """A report as `enilab audit` prints it: the verdict, then one line per finding.

    >>> report_lines({"ok": False, **{k: [] for k in KEYS}, "leaked_ips": [{"what": "10.0.1.9 is ..."}]})
    ['audit: they disagree', '  leaked_ips: 10.0.1.9 is ...']
    """
    verdict = "audit: the VPC, the ipamd datastores and the kernels agree" if report["ok"] else "audit: they disagree"
    return [verdict] + [f"  {key}: {finding['what']}" for key in KEYS for finding in report[key]]


def datastore_view(ipamd) -> dict[str, Any]:
    """An in-process ipamd's datastore, in the shape the node agent's `state` call answers."""
    return {"enis": {e.id: {"mac": e.mac, "ips": {str(ip): pod for ip, pod in e.ips.items()}} for e in ipamd.enis}}


def audit(vpc: SimVpc, datastores: Datastores, kernels: Mapping[str, Any] | None = None,
          claims: Mapping[str, Any] | None = None, wired: Callable[[str, str], bool] | None = None) -> dict:
    """Compare. `kernels` maps a node to its `NamespaceKernel` (None: no kernel, the sim backend); `claims`
    are static-IP claims (their retained addresses are not leaks); `wired(node, pod)` says whether a
    pod's veth exists (routes are only expected for wired pods)."""
    found: dict[str, list[dict]] = {k: [] for k in KEYS}
    holders: dict[str, list[str]] = defaultdict(list)
    for node, ds in datastores.items():
        vpc_enis = {e.record.id: e for e in vpc.enis.values() if e.record.attached_to == node}
        for eni_id, eni in ds["enis"].items():
            for ip, pod in eni["ips"].items():
                if pod is not None:
                    holders[ip].append(f"{node}/{pod}")
            if eni_id not in vpc_enis:
                found["leaked_enis"].append({"node": node, "eni": eni_id,
                                             "what": f"the ipamd of {node} has {eni_id}, which the VPC does not "
                                                     f"attach to {node}"})
                continue
            in_vpc = {str(ip) for ip in vpc_enis[eni_id].ips}
            for ip in sorted(set(eni["ips"]) - in_vpc):
                found["leaked_ips"].append({"node": node, "eni": eni_id, "ip": ip,
                                            "what": f"the ipamd of {node} counts {ip} on {eni_id}; the VPC has "
                                                    "not bound it there"})
            for ip in sorted(in_vpc - set(eni["ips"])):
                found["leaked_ips"].append({"node": node, "eni": eni_id, "ip": ip,
                                            "what": f"{ip} is bound in the VPC to {eni_id} on {node}, but its "
                                                    "ipamd does not know it"})
        for eni_id in sorted(set(vpc_enis) - set(ds["enis"])):
            found["leaked_enis"].append({"node": node, "eni": eni_id,
                                         "what": f"{eni_id} is attached to {node} but its ipamd does not know it"})
    for e in vpc.enis.values():
        if e.record.attached_to is None:
            found["leaked_enis"].append({"node": e.record.node, "eni": e.record.id,
                                         "what": f"{e.record.id} was created for {e.record.node} and is attached "
                                                 "nowhere"})
    claimed = {str(c["ip"]) for c in (claims or {}).values()}
    for ip in sorted(str(i) for i in vpc.retained):
        if ip not in claimed:
            found["leaked_ips"].append({"ip": ip, "what": f"{ip} is retained in the VPC for no claim"})
    for ip, pods in sorted(holders.items()):
        if len(pods) > 1:
            found["double_allocations"].append({"ip": ip, "pods": pods,
                                                "what": f"{ip} is allocated to {len(pods)} pods: {', '.join(pods)}"})
    for node, kernel in (kernels or {}).items():
        _audit_kernel(node, kernel, datastores.get(node, {"enis": {}}), found, wired)
    return {"ok": not any(found.values()), **found}


def _audit_kernel(node: str, kernel, ds: dict[str, Any], found: dict[str, list[dict]],
                  wired: Callable[[str, str], bool] | None) -> None:
    links = kernel.links()
    by_mac = {link.mac: link for link in links}
    by_name = {link.ifname: link for link in links}
    rules = {(r.priority, r.table, r.src, r.dst) for r in kernel.rules()}
    routes = kernel.routes()
    # an ENI's table has its default route whoever wrote it (a hand repair's proto is not enilab's); only a
    # table enilab wrote (proto 77) is stale for want of an ENI: another program's (wg-quick's) is not ours
    tables = {r.table for r in routes if r.table in routing.ENI_TABLES and r.dst is None}
    ours = {r.table for r in routes if r.table in routing.ENI_TABLES and r.dst is None and r.proto == nl.RTPROT_ENILAB}
    main = {(r.dst, r.oif) for r in routes if r.table == nl.RT_TABLE_MAIN and r.proto == nl.RTPROT_ENILAB}

    def missing(what: str, **where) -> None:
        found["missing_routes"].append({"node": node, **where, "what": f"{node}: {what}"})

    expected_tables, expected_ips = set(), set()
    for eni_id, eni in ds["enis"].items():
        link = by_mac.get(eni["mac"])
        if link is None:
            missing(f"no interface with {eni_id}'s MAC {eni['mac']}", eni=eni_id)
            continue
        table = eni_table(link.index)
        expected_tables.add(table)
        if table not in tables:
            missing(f"table {table} of {link.ifname} has no default route", eni=eni_id)
        for ip_s, pod in eni["ips"].items():
            if pod is None:
                continue
            ip = IPv4Address(ip_s)
            expected_ips.add(ip)
            veth = by_name.get(routing.host_veth_name(pod))
            if veth is None:
                if wired is None or wired(node, pod):
                    missing(f"pod {pod} ({ip}) has no veth", pod=pod)
                continue
            if (routing.PRIO_FROM_POD, table, ip, None) not in rules:
                missing(f"ip rule from {ip} lookup {table}", pod=pod)
            if (routing.PRIO_TO_POD, nl.RT_TABLE_MAIN, None, ip) not in rules:
                missing(f"ip rule to {ip} lookup main", pod=pod)
            if (ip, veth.index) not in main:
                missing(f"route {ip} dev {veth.ifname} in the main table", pod=pod)
    for prio, table, src, dst in sorted(rules, key=lambda r: (r[0], str(r[2]), str(r[3]))):
        if prio in (routing.PRIO_TO_POD, routing.PRIO_FROM_POD) and (src or dst) not in expected_ips:
            found["stale_routes"].append({"node": node, "what": f"{node}: rule {prio} for {src or dst} (table "
                                                                 f"{table}), which no pod of it holds"})
    for dst, oif in sorted(main, key=lambda r: str(r[0])):
        if dst not in expected_ips:
            found["stale_routes"].append({"node": node, "what": f"{node}: main-table route to {dst} (link {oif}), "
                                                                 "which no pod of it holds"})
    for table in sorted(ours - expected_tables):
        found["stale_routes"].append({"node": node, "what": f"{node}: table {table} belongs to no ENI"})


def audit_cluster(cluster) -> dict:
    """Audit an in-process cluster (either backend). Pods are expected wired when the controller runs
    them or a runtime attached them through `enilab-cni`; a running pod whose IP its node's ipamd no
    longer holds (released under it, say by a GC) is a finding too."""
    backend = cluster.backend
    kernels = ({n: backend.nodes[n].kernel for n in cluster.nodes} if isinstance(backend, NetnsBackend) else None)
    pods = backend.pods

    def wired(node: str, pod: str) -> bool:
        return pod in pods or pod in cluster.nodes[node].ipamd.store.attachments

    report = audit(cluster.vpc, {n: datastore_view(node.ipamd) for n, node in cluster.nodes.items()}, kernels,
                   cluster.static.view() if cluster.static else None, wired=wired)
    for pod, (node, _ns) in sorted(pods.items()):
        if node in cluster.nodes and cluster.nodes[node].ipamd.lookup(pod) is None:
            report["missing_routes"].append({"node": node, "pod": pod, "what": f"{node}: pod {pod} runs, but the "
                                             f"ipamd of {node} holds no IP for it (released under it)"})
            report["ok"] = False
    return report
