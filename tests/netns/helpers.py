"""Builders for root tests: clusters on the netns backend, and an independent look at the kernel."""
from __future__ import annotations

import contextlib
from ipaddress import IPv4Address

from pyroute2 import IPRoute

from testbed.world.backends.netns import NetnsBackend
from testbed.world.cluster import Cluster
from testbed.world.spec import ClusterSpec, NodeSpec
from tests.helpers import subnet


@contextlib.contextmanager
def netns_cluster(spec: ClusterSpec | None = None, **kw):
    spec = spec or ClusterSpec(subnets=(subnet(), subnet("subnet-b", "10.0.2.0/24")),
                               nodes=(NodeSpec("node-1", ("subnet-a",), 3, kw.get("ips_per_eni", 4)),
                                      NodeSpec("node-2", ("subnet-b",), 2, kw.get("ips_per_eni", 4))))
    c = Cluster(spec, backend=NetnsBackend())
    try:
        yield c
    finally:
        c.close()


def kernel_view(ns: str) -> dict:
    """What pyroute2 (not our codec) reads from a namespace."""
    with IPRoute(netns=ns, flags=0) as ipr:
        links = {k["index"]: {"ifname": k.get("ifname"), "mac": k.get("address"), "up": bool(k["flags"] & 1)}
                 for k in ipr.get_links()}
        rules = [(r.get("FRA_PRIORITY") or 0, r.get("FRA_TABLE") or r["table"],
                  IPv4Address(r.get("FRA_SRC")) if r.get("FRA_SRC") else None,
                  IPv4Address(r.get("FRA_DST")) if r.get("FRA_DST") else None) for r in ipr.get_rules(family=2)]
        routes = [(r.get("RTA_TABLE") or r["table"], r.get("RTA_DST"), r["dst_len"], r.get("RTA_OIF"),
                   r.get("RTA_GATEWAY")) for r in ipr.route("dump", family=2)]
    return {"links": links, "rules": rules, "routes": routes}


def sysctl(ns: str, key: str) -> int:
    from eni_core import netns

    with netns.entered(ns), open("/proc/sys/" + key.replace(".", "/")) as f:
        return int(f.read())
