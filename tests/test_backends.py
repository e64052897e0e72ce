"""The Backend protocol on the simulated backend, without root: what needs real packets or a kernel says
so as a usage error instead of being probed for by name."""
from __future__ import annotations

import pytest

from testbed.errors import UsageError
from testbed.observe import traffic
from testbed.observe.audit import audit_cluster
from tests.helpers import cluster


def test_probes_and_the_matrix_on_the_sim_backend_are_usage_errors_that_name_the_netns_backend():
    c = cluster()
    c.create_pods(2, "node-1")
    pods = sorted(c.pods)
    with pytest.raises(UsageError, match="a probe needs real packets: run the cluster on the netns backend"):
        traffic.probe(c, pods[0], pods[1])
    with pytest.raises(UsageError, match="the connectivity matrix needs real packets"):
        traffic.matrix(c)


def test_a_sysctl_on_the_sim_backend_is_a_usage_error_naming_the_key_and_the_node():
    with pytest.raises(UsageError, match=r"setting net\.ipv4\.conf\.all\.rp_filter on node-1 needs a kernel"):
        cluster().backend.set_sysctl("node-1", "net.ipv4.conf.all.rp_filter", 1)


def test_the_sim_backend_has_no_run_no_hosts_and_no_wired_pods_and_the_audit_reads_no_kernel():
    c = cluster()
    c.create_pods(3, "node-1")
    assert (c.backend.run, dict(c.backend.hosts), dict(c.backend.pods)) == (None, {}, {})
    assert c.local_node("node-1") is c.nodes["node-1"]
    assert audit_cluster(c)["ok"] is True  # nothing leaked, and no kernel to find routes missing in


def test_the_fabric_closed_twice_closes_its_file_once():
    """A second close must not close the fd number again: another file may have taken it in between."""
    import os

    from testbed.world.backends.netns import Fabric

    class Kernel:
        closed = 0

        def close(self) -> None:
            self.closed += 1

    fabric = object.__new__(Fabric)
    fabric.kernel, fabric.fd = Kernel(), os.open(os.devnull, os.O_RDONLY)
    number = fabric.fd
    fabric.close()
    other = os.open(os.devnull, os.O_RDONLY)  # takes the number the fabric gave back
    try:
        assert other == number
        fabric.close()
        os.fstat(other)  # still open
        assert fabric.kernel.closed == 1
    finally:
        os.close(other)
