"""Static IPs on real namespaces: a static pod moved to another node keeps its IP, and traffic to that IP
now reaches the new node's ENI."""
from __future__ import annotations

import pytest

from testbed.apps.runner import apply_step
from testbed.observe import traffic
from testbed.world.backends.netns import NetnsBackend
from testbed.world.cluster import Cluster
from testbed.world.scenario import load_scenario
from tests.helpers import ROOT

pytestmark = pytest.mark.netns


def test_a_moved_static_pod_keeps_its_ip_and_traffic_follows_it_to_the_new_node():
    s = load_scenario(ROOT / "fixtures" / "topologies" / "static.yaml")
    c = Cluster(s.cluster, backend=NetnsBackend())
    try:
        for step in s.steps:
            apply_step(c, step)
        ip = c.pods["default/web-0"].ip
        before = traffic.probe(c, "db-1", "default/web-0").assert_delivered()
        assert any("node-1/" in h["what"] for h in before.hops if h["at"] == "fabric")
        c.delete_pod("default/web-0")
        traffic.probe(c, "db-1", str(ip)).assert_dropped("not bound to any ENI", at="fabric")  # retained, unbound
        c.create_pod("default/web-0", "node-2", static=True, owner="statefulset/default/web")
        assert c.pods["default/web-0"].ip == ip and c.pods["default/web-0"].node == "node-2"
        after = traffic.probe(c, "db-1", "default/web-0").assert_delivered()
        delivered_to = [h["what"] for h in after.hops if h["at"] == "fabric" and h["dir"] == "out"
                        and h["what"].startswith("request")]
        assert delivered_to and all("node-2/" in w for w in delivered_to)
        traffic.probe(c, "default/web-0", "db-1").assert_delivered()
    finally:
        c.close()


def test_static_scenario_runs_on_netns():
    from testbed.apps.runner import run_scenario
    from tests.helpers import SCENARIOS

    out = run_scenario(load_scenario(SCENARIOS / "static-ip-retention.yaml"), backend=NetnsBackend())
    web0 = out["steps"][4]["state"]["pods"]["default/web-0"]
    assert web0["node"] == "node-2" and web0["netns"].startswith("enl-")
    assert out["steps"][4]["state"]["claims"]["default/web-0"]["ip"] == web0["ip"]
