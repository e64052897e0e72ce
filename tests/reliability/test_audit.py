"""`enilab audit`: each kind of disagreement between the VPC, the ipamd datastores and the kernels is
found and said where it is."""
from __future__ import annotations

import subprocess

import pytest

from testbed.observe.audit import audit_cluster
from tests.helpers import cluster


def test_a_clean_cluster_audits_ok():
    c = cluster()
    c.create_pods(7, "node-1")
    assert audit_cluster(c) == {"ok": True, "leaked_ips": [], "leaked_enis": [], "double_allocations": [],
                                "missing_routes": [], "stale_routes": []}


def test_an_ip_bound_behind_the_ipamds_back_is_a_leak():
    c = cluster()
    eni = c.nodes["node-1"].ipamd.enis[0]
    ip = c.vpc.assign_private_ips(eni.id, 1)[0]
    r = audit_cluster(c)
    assert not r["ok"] and r["leaked_ips"][0]["ip"] == str(ip) and "does not know it" in r["leaked_ips"][0]["what"]


def test_an_ip_the_ipamd_counts_but_the_vpc_dropped_is_a_leak():
    c = cluster()
    eni = c.nodes["node-1"].ipamd.enis[0]
    ip = next(iter(eni.ips))
    c.vpc.unassign_private_ips(eni.id, [ip])
    assert "has not bound it there" in audit_cluster(c)["leaked_ips"][0]["what"]


def test_an_eni_created_and_never_attached_is_a_leaked_eni():
    c = cluster()
    orphan = c.vpc.create_eni("node-1", "subnet-a")
    r = audit_cluster(c)
    assert [f["eni"] for f in r["leaked_enis"]] == [orphan.id] and "attached nowhere" in r["leaked_enis"][0]["what"]


def test_an_ip_given_to_two_pods_is_a_double_allocation():
    from testbed.observe.audit import audit, datastore_view

    c = cluster()
    c.create_pods(1, "node-1")
    ip = str(c.pods["pod-1"].ip)
    views = {"node-1": datastore_view(c.nodes["node-1"].ipamd),
             "node-2": {"enis": {"eni-ghost": {"mac": "", "ips": {ip: "ghost"}}}}}
    r = audit(c.vpc, views)
    assert r["double_allocations"] == [{"ip": ip, "pods": ["node-1/pod-1", "node-2/ghost"],
                                        "what": f"{ip} is allocated to 2 pods: node-1/pod-1, node-2/ghost"}]


@pytest.mark.netns
def test_kernel_drift_shows_as_missing_and_stale_routes_until_the_agent_repairs_it():
    from testbed.world.backends.netns import NetnsBackend
    from tests.netns.helpers import netns_cluster

    assert NetnsBackend  # the root fixture below builds one
    with netns_cluster() as c:
        c.create_pods(3, "node-1")
        assert audit_cluster(c)["ok"]
        ns = c.backend.nodes["node-1"].ns
        ip = str(c.pods["pod-2"].ip)
        subprocess.run(["ip", "-n", ns, "rule", "del", "from", ip, "priority", "1536"], check=True)
        subprocess.run(["ip", "-n", ns, "route", "del", "default", "table", "2003"], check=True)
        subprocess.run(["ip", "-n", ns, "rule", "add", "to", "10.0.1.250", "lookup", "main", "priority", "512"],
                       check=True)
        r = audit_cluster(c)
        whats = [f["what"] for f in r["missing_routes"]]
        assert f"node-1: ip rule from {ip} lookup 2003" in whats
        assert "node-1: table 2003 of eth1 has no default route" in whats
        assert any("10.0.1.250" in f["what"] for f in r["stale_routes"])
        c.sync_dataplane()
        assert audit_cluster(c)["ok"]
        # another program's table (wg-quick's number) is not an ENI's: neither stale nor touched by a sync;
        # an ENI's default route put back by hand (proto boot) counts, and the next sync makes it enilab's
        subprocess.run(["ip", "-n", ns, "route", "add", "default", "dev", "eth1", "table", "51820"], check=True)
        subprocess.run(["ip", "-n", ns, "route", "del", "default", "table", "2003"], check=True)
        subprocess.run(["ip", "-n", ns, "route", "add", "default", "via", "10.0.1.1", "dev", "eth1", "table",
                        "2003", "onlink"], check=True)
        assert audit_cluster(c)["ok"]
        c.sync_dataplane()
        shown = subprocess.run(["ip", "-n", ns, "route", "show", "table", "51820"], capture_output=True, text=True)
        assert audit_cluster(c)["ok"] and shown.stdout.startswith("default dev eth1")
