"""Static-IP mode: one test per rule, and invariants under random churn."""
from __future__ import annotations

from ipaddress import IPv4Address

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from eni_core.model import Eni, NodeLimits, PoolConfig
from eni_core.ports import Throttled, TransientError
from eni_core.static import EniChoice, choose_eni
from testbed.apps.runner import run_scenario
from testbed.world.cluster import Cluster, ClusterError
from testbed.world.scenario import ScenarioError, load_scenario, parse_scenario
from testbed.world.spec import ClusterSpec, NodeSpec
from tests.helpers import SCENARIOS, subnet

WEB = "statefulset/default/web"


def static_cluster(expiry=None, nodes=None, subnets=None) -> Cluster:
    subnets = subnets or (subnet("subnet-a", "10.0.1.0/24"), subnet("subnet-b", "10.0.2.0/25"))
    nodes = nodes or (NodeSpec("node-1", ("subnet-a", "subnet-b"), 2, 4),
                      NodeSpec("node-2", ("subnet-a", "subnet-b"), 2, 4))
    return Cluster(ClusterSpec(subnets=subnets, nodes=nodes, mode="static-ip", pool=PoolConfig(),
                               claim_expired_duration=expiry))


def test_new_nodes_get_no_eni_and_no_ip_in_advance():
    c = static_cluster()
    assert all(n["bound"] == 0 and n["enis"] == [] for n in c.state()["nodes"].values())


def test_ips_are_bound_on_demand_on_the_eni_with_the_most_bound_ips_that_has_room():
    c = static_cluster()
    c.create_pods(5, "node-1")
    n = c.state()["nodes"]["node-1"]
    assert n["bound"] == 5 and [len(e["ips"]) for e in n["enis"]] == [4, 1]  # fills eth1, then eth2


def test_among_enis_with_room_the_one_with_the_most_bound_ips_gets_the_next_ip():
    c = static_cluster()
    c.create_pods(6, "node-1")  # eth1: 4, eth2: 2
    first = c.nodes["node-1"].ipamd.enis[0]
    c.delete_pod(next(p for p, pod in c.pods.items() if pod.eni_id == first.id))  # eth1: 3, eth2: 2
    c.create_pod("next", "node-1")
    assert c.pods["next"].eni_id == first.id


def test_a_new_eni_goes_to_the_node_subnet_with_the_most_available_addresses():
    c = static_cluster()
    c.create_pod("p", "node-1")
    assert c.state()["nodes"]["node-1"]["enis"][0]["subnet"] == "subnet-a"  # /24 beats /25


def test_no_subnet_can_serve_the_pod_stays_pending_with_a_clear_event():
    c = static_cluster(subnets=(subnet("subnet-a", "10.0.1.0/29"),),
                       nodes=(NodeSpec("node-1", ("subnet-a",), 2, 4),))
    c.create_pods(6, "node-1")  # 5 usable: ENI primary + 4 pods; a second ENI needs 2 more
    pods = c.state()["pods"]
    pending = [p for p, v in pods.items() if v["phase"] == "Pending"]
    assert pending and all(pods[p]["ip"] is None for p in pending)
    failed = [e for e in c.events.items if e["kind"] == "pod" and e["event"] == "FailedScheduling"]
    assert failed and "cannot get an IP here" in failed[0]["reason"] and "subnet-a" in failed[0]["reason"]


def test_a_pending_pod_starts_once_another_node_frees_addresses_in_the_subnet():
    c = static_cluster(subnets=(subnet("subnet-a", "10.0.1.0/29"),),
                       nodes=(NodeSpec("node-1", ("subnet-a",), 2, 4), NodeSpec("node-2", ("subnet-a",), 2, 4)))
    c.create_pods(4, "node-1")  # 5 usable: node-1's ENI primary + 4 pods
    c.create_pod("late", "node-2")
    assert c.pods["late"].phase == "Pending"
    for name in ["pod-1", "pod-2", "pod-3", "pod-4"]:
        c.delete_pod(name)  # node-1's ENI empties and goes: addresses come back to the subnet
    c.advance(60)  # node-2 polls again without anything happening on it
    assert c.pods["late"].phase == "Running"


def test_a_pending_pod_that_cannot_get_an_ip_does_not_block_the_pods_behind_it():
    c = static_cluster(subnets=(subnet("subnet-a", "10.0.1.0/28"), subnet("subnet-b", "10.0.2.0/24")),
                       nodes=(NodeSpec("node-1", ("subnet-a", "subnet-b"), 1, 4),
                              NodeSpec("node-2", ("subnet-a",), 1, 4)))
    c.create_pod("default/web-0", "node-2", static=True, owner=WEB)
    c.delete_pod("default/web-0")  # its claim keeps a subnet-a address
    c.create_pod("first", "node-1")  # node-1's only ENI goes to subnet-b, which has the most addresses
    c.create_pods(0, "node-1", names=["default/web-0", "second", "third"])
    pods = c.state()["pods"]
    assert pods["default/web-0"]["phase"] == "Pending"  # its address is in subnet-a: no ENI slot for it
    assert pods["second"]["phase"] == pods["third"]["phase"] == "Running"  # tried anyway, in subnet-b
    assert [p for p in c.nodes["node-1"].pending] == ["default/web-0"]


def test_pending_pods_wait_out_the_back_off_of_a_failing_cloud_together_then_all_start():
    from testbed.world.vpc import FaultConfig

    c = static_cluster()
    c.vpc.faults = FaultConfig(transient=1.0)
    c.create_pods(3, "node-1")
    calls = [e for e in c.events.items if e["kind"] == "api"]
    assert len(calls) == 3  # the first pod's three tries; the others do not hammer the failing cloud
    assert all(p.phase == "Pending" for p in c.pods.values())
    c.vpc.faults = FaultConfig()  # the cloud heals
    c.advance(60)
    assert all(p.phase == "Running" for p in c.pods.values())


def test_a_non_static_pod_terminated_returns_its_ip_to_the_vpc_subnet():
    c = static_cluster()
    c.create_pod("p", "node-1")
    available = c.vpc.available("subnet-a")
    ip = c.pods["p"].ip
    c.delete_pod("p")
    assert "p" not in c.state()["claims"] and ip not in c.vpc.owner and ip not in c.vpc.retained
    assert c.vpc.available("subnet-a") == available + 2  # the IP, and the emptied ENI's primary


def test_a_static_pod_terminated_keeps_claim_and_ip_retained_in_the_vpc():
    c = static_cluster()
    c.create_pod("default/web-0", "node-1", static=True, owner=WEB)
    ip = c.pods["default/web-0"].ip
    c.delete_pod("default/web-0")
    claim = c.state()["claims"]["default/web-0"]
    assert claim == {**claim, "ip": str(ip), "pod_present": False, "expires_at": None}
    assert ip in c.vpc.retained and ip not in c.vpc.owner  # kept in the subnet, on no ENI


def test_a_pod_with_the_same_name_on_another_node_gets_the_same_ip():
    c = static_cluster()
    c.create_pod("default/web-0", "node-1", static=True, owner=WEB)
    ip = c.pods["default/web-0"].ip
    c.delete_pod("default/web-0")
    c.create_pods(3, "node-1")
    c.create_pod("default/web-0", "node-2", static=True, owner=WEB)
    pod = c.pods["default/web-0"]
    assert (pod.node, pod.ip) == ("node-2", ip)
    assert c.vpc.owner[ip] == pod.eni_id and c.nodes["node-2"].ipamd.store.enis[pod.eni_id].subnet_id == "subnet-a"


def test_a_different_name_never_gets_a_retained_ip():
    c = static_cluster(subnets=(subnet("subnet-a", "10.0.1.0/28"),), nodes=(NodeSpec("node-1", ("subnet-a",), 3, 4),))
    c.create_pod("default/web-0", "node-1", static=True)
    ip = c.pods["default/web-0"].ip
    c.delete_pod("default/web-0")
    c.create_pods(10, "node-1")  # the subnet fills up; the retained address is never handed out
    assert ip not in {p.ip for p in c.pods.values()}


def test_expiry_frees_a_claim_that_long_after_its_pod_went():
    c = static_cluster(expiry=600)
    c.create_pod("default/web-0", "node-1", static=True)
    ip = c.pods["default/web-0"].ip
    c.advance(100)
    c.delete_pod("default/web-0")
    assert c.state()["claims"]["default/web-0"]["expires_at"] == 700
    c.advance(599)
    assert "default/web-0" in c.state()["claims"]
    c.advance(1)
    assert "default/web-0" not in c.state()["claims"] and ip not in c.vpc.retained


def test_expiry_under_300_seconds_is_refused():
    with pytest.raises(ClusterError, match="at least 300"):
        static_cluster(expiry=120)
    doc = {"cluster": {"mode": "static-ip", "static": {"claim_expired_duration": 299},
                       "subnets": [{"id": "a", "cidr": "10.0.1.0/24"}]}}
    with pytest.raises(ScenarioError, match="at least 300"):
        parse_scenario(doc)


def test_claims_never_expire_by_default():
    c = static_cluster()
    c.create_pod("default/web-0", "node-1", static=True)
    c.delete_pod("default/web-0")
    c.advance(10 * 365 * 86400)
    assert "default/web-0" in c.state()["claims"]


def test_manual_reclaim_is_refused_while_the_pod_exists_and_frees_it_after():
    c = static_cluster()
    c.create_pod("default/web-0", "node-1", static=True)
    with pytest.raises(ClusterError, match="still exists"):
        c.reclaim_claim("default/web-0")
    ip = c.pods["default/web-0"].ip
    c.delete_pod("default/web-0")
    assert c.reclaim_claim("default/web-0") is True
    assert "default/web-0" not in c.state()["claims"] and ip not in c.vpc.retained
    assert c.reclaim_claim("default/web-0") is False  # again: nothing left, and the timeline says why
    again = [e for e in c.events.items if e.get("event") == "AlreadyReclaimed"]
    assert [e["why"] for e in again] == ["it went already (reclaimed by hand)"]
    from testbed.world.vpc import FaultConfig

    c.vpc.faults = FaultConfig(transient=1.0)  # the name again, refused an address: no claim this time
    c.create_pod("default/web-0", "node-1", static=True)
    c.delete_pod("default/web-0")
    assert c.reclaim_claim("default/web-0") is False
    again = [e for e in c.events.items if e.get("event") == "AlreadyReclaimed"]
    assert again[-1]["why"] == "its pod never kept an address"


def test_cascade_reclaim_frees_every_claim_of_the_workload():
    c = static_cluster()
    for i in range(3):
        c.create_pod(f"default/web-{i}", "node-1", static=True, owner=WEB)
    c.create_pod("default/db-0", "node-2", static=True, owner="statefulset/default/db")
    c.delete_pod("default/web-2")
    freed = c.delete_workload(WEB)
    assert sorted(freed) == ["default/web-0", "default/web-1", "default/web-2"]
    assert list(c.state()["claims"]) == ["default/db-0"]
    assert not any(p.owner == WEB for p in c.pods.values())


def test_node_deleted_releases_its_enis_and_static_claims_keep_their_addresses():
    c = static_cluster()
    c.create_pod("default/web-0", "node-1", static=True)
    c.create_pod("p", "node-1")
    ip = c.pods["default/web-0"].ip
    c.delete_node("node-1")
    assert not any(e.record.attached_to == "node-1" for e in c.vpc.enis.values())
    assert ip in c.vpc.retained and c.state()["claims"]["default/web-0"]["pod_present"] is False
    c.create_pod("default/web-0", "node-2", static=True)
    assert c.pods["default/web-0"].ip == ip


def test_a_node_deleted_while_a_static_ip_waits_idle_on_its_eni_keeps_that_ip_for_its_claim():
    c = static_cluster()
    c.create_pod("default/web-0", "node-1", static=True)
    ip = c.pods["default/web-0"].ip
    unbind = c.vpc.unassign_private_ips

    def refuse(*args, **kwargs):
        raise Throttled("UnassignPrivateIpAddresses: throttled (injected)")

    c.vpc.unassign_private_ips = refuse
    c.delete_pod("default/web-0")  # the unbind is refused: the IP waits idle on node-1's ENI
    c.vpc.unassign_private_ips = unbind
    c.delete_node("node-1")  # before node-1 gives it back
    assert ip in c.vpc.retained and c.state()["claims"]["default/web-0"]["ip"] == str(ip)
    c.create_pod("other", "node-2")
    c.create_pod("default/web-0", "node-2", static=True)
    assert c.pods["other"].ip != ip and c.pods["default/web-0"].ip == ip


def test_a_claim_does_not_expire_while_a_pod_of_its_name_waits_and_its_clock_restarts_if_that_pod_goes():
    nodes = (NodeSpec("node-1", ("subnet-a",), 1, 2), NodeSpec("node-2", ("subnet-a",), 1, 2))
    c = static_cluster(expiry=300, nodes=nodes)
    c.create_pods(2, "node-1")  # node-1 is full
    c.create_pod("default/web-0", "node-2", static=True)
    ip = c.pods["default/web-0"].ip
    c.delete_pod("default/web-0")  # retained at t=0, due at t=300
    c.advance(60)
    c.create_pod("default/web-0", "node-1", static=True)  # Pending: node-1 has no room
    assert c.pods["default/web-0"].phase == "Pending" and c.state()["claims"]["default/web-0"]["expires_at"] is None
    c.advance(300)
    assert "default/web-0" in c.state()["claims"]
    c.delete_pod("pod-1")
    assert (c.pods["default/web-0"].phase, c.pods["default/web-0"].ip) == ("Running", ip)
    c.delete_pod("default/web-0")  # retained again
    c.create_pod("blocker", "node-1")  # node-1 is full again
    c.create_pod("default/web-0", "node-1", static=True)
    assert c.pods["default/web-0"].phase == "Pending"
    c.advance(200)
    c.delete_pod("default/web-0")  # never got its address: the claim is without its pod from now
    claim = c.state()["claims"]["default/web-0"]
    assert claim["expires_at"] == pytest.approx(c.clock.now() + 300)
    c.advance(299)
    assert "default/web-0" in c.state()["claims"]
    c.advance(2)
    assert "default/web-0" not in c.state()["claims"] and ip not in c.vpc.retained


def test_a_pod_without_the_annotation_that_took_its_names_static_ip_gives_it_to_the_subnet_when_it_goes():
    c = static_cluster()
    c.create_pod("default/db", "node-1", static=True)
    ip = c.pods["default/db"].ip
    c.delete_pod("default/db")
    c.create_pod("default/db", "node-1")  # no annotation: it may take its name's IP
    assert c.pods["default/db"].ip == ip
    c.delete_pod("default/db")
    assert "default/db" not in c.state()["claims"] and ip not in c.vpc.retained and ip not in c.vpc.owner


def test_the_scheduler_hands_a_pod_beyond_eni_ip_capacity_to_no_ipam_and_says_eni_ip_is_full():
    c = static_cluster(nodes=(NodeSpec("node-1", ("subnet-a",), 1, 2),))
    c.create_pods(2, "node-1")
    calls = c.vpc.calls
    c.create_pod("third", "node-1")
    assert c.pods["third"].phase == "Pending" and c.vpc.calls == calls  # not even a DescribeSubnets
    said = [e["reason"] for e in c.events.items if e.get("pod") == "third" and e.get("event") == "FailedScheduling"]
    assert said and "has no free tke.cloud.tencent.com/eni-ip (allocatable 2, pods 2)" in said[-1]
    c.delete_pod("pod-1")
    assert c.pods["third"].phase == "Running"


def _eni(eni_id: str, subnet_id: str, seq: int, ips: int) -> Eni:
    eni = Eni(eni_id, subnet_id, f"52:54:00:00:00:{seq:02x}", IPv4Address(f"10.9.{seq}.1"), seq + 1, seq)
    for n in range(ips):
        eni.bind(IPv4Address(f"10.9.{seq}.{n + 10}"))
    return eni


def test_a_static_ip_goes_on_the_older_of_two_enis_with_as_many_ips_and_never_on_one_whose_subnet_is_used_up():
    older, newer = _eni("eni-old", "subnet-a", 0, 2), _eni("eni-new", "subnet-a", 1, 2)
    free = {"subnet-a": 10, "subnet-b": 10}
    assert choose_eni([newer, older], ["subnet-a", "subnet-b"], free, NodeLimits(3, 4)).eni_id == "eni-old"
    fuller = _eni("eni-full", "subnet-a", 2, 3)
    assert choose_eni([older, fuller], ["subnet-a", "subnet-b"], free, NodeLimits(3, 4)).eni_id == "eni-full"
    # subnet-a has no address left: its ENIs' room is no use, a new ENI goes to subnet-b
    dry = {"subnet-a": 0, "subnet-b": 10}
    choice = choose_eni([older, newer], ["subnet-a", "subnet-b"], dry, NodeLimits(3, 4))
    assert choice == EniChoice(new_subnet="subnet-b")


def test_scenario_validation_knows_claims_along_the_timeline():
    base = {"cluster": {"mode": "static-ip", "subnets": [{"id": "a", "cidr": "10.0.1.0/24"}],
                        "nodes": [{"name": "n", "subnets": ["a"], "max_enis": 1, "ips_per_eni": 4}]}}
    with pytest.raises(ScenarioError, match=r"step 2 .* still exists"):
        parse_scenario({**base, "steps": [{"op": "create_pod", "name": "w", "node": "n", "static": True},
                                          {"op": "reclaim_claim", "name": "w"}]})
    with pytest.raises(ScenarioError, match="no static pod named 'x'"):
        parse_scenario({**base, "steps": [{"op": "reclaim_claim", "name": "x"}]})
    with pytest.raises(ScenarioError, match="no pod or claim belongs"):
        parse_scenario({**base, "steps": [{"op": "delete_workload", "owner": "statefulset/default/x"}]})


def test_static_ip_scenario_fixture():
    out = run_scenario(load_scenario(SCENARIOS / "static-ip-retention.yaml"))
    steps = out["steps"]
    ip = steps[0]["state"]["pods"]["default/web-0"]["ip"]
    assert steps[4]["state"]["pods"]["default/web-0"] == {**steps[4]["state"]["pods"]["default/web-0"],
                                                          "node": "node-2", "ip": ip}
    assert "default/web-0" not in steps[6]["state"]["claims"]
    assert "default/db-0" in steps[10]["state"]["claims"] and "default/db-0" not in steps[11]["state"]["claims"]


names = st.sampled_from([f"default/web-{i}" for i in range(4)] + [f"tmp-{i}" for i in range(4)])
op = st.one_of(
    st.tuples(st.just("create"), names, st.sampled_from(["node-1", "node-2"])),
    st.tuples(st.just("delete"), names),
    st.tuples(st.just("advance"), st.floats(1, 400)),
    st.tuples(st.just("reclaim"), names),
    st.tuples(st.just("delete_node_2"),),
)


@given(ops=st.lists(op, min_size=1, max_size=40), expiry=st.sampled_from([None, 300.0, 900.0]))
def test_static_invariants_under_random_churn(ops, expiry):
    c = static_cluster(expiry=expiry, subnets=(subnet("subnet-a", "10.0.1.0/28"), subnet("subnet-b", "10.0.2.0/28")))
    first_ip: dict[str, object] = {}
    for o in ops:
        if o[0] == "create" and o[1] not in c.pods and o[2] in c.nodes:
            c.create_pod(o[1], o[2], static=o[1].startswith("default/"))
        elif o[0] == "delete" and o[1] in c.pods:
            c.delete_pod(o[1])
        elif o[0] == "advance":
            c.advance(o[1])
        elif o[0] == "reclaim" and o[1] in c.static.claims and o[1] not in c.pods:
            c.reclaim_claim(o[1])
        elif o[0] == "delete_node_2" and "node-2" in c.nodes:
            c.delete_node("node-2")
        running = [p for p in c.pods.values() if p.phase == "Running"]
        ips = [p.ip for p in running]
        assert len(ips) == len(set(ips)), "an address is held by two pods"
        claims = c.static.claims
        for p in running:
            claim = claims[p.name]
            assert claim.ip == p.ip and claim.node == p.node
            if p.name in first_ip and p.static:
                assert p.ip == first_ip[p.name], "a static pod came back with another IP"
            first_ip.setdefault(p.name, p.ip)
        for name, claim in claims.items():
            if claim.node is None:
                assert claim.ip in c.vpc.retained and claim.ip not in c.vpc.owner
                assert not any(p.ip == claim.ip and p.name != name for p in running), "retained IP handed out"
        for name in list(first_ip):
            if name not in claims:
                del first_ip[name]  # reclaimed or expired: it may come back with a new address
        # the indexes agree with a walk of every claim (what the deadline and reconcile did before them)
        retained = {claim.ip: id(claim) for claim in claims.values() if claim.node is None}
        assert {ip: id(claim) for ip, claim in c.static._retained.items()} == retained
        due = [t for claim in claims.values() if (t := claim.expires_at(c.static.expiry)) is not None]
        due += [c.static._release_at] if c.static._release_at is not None else []
        assert c.static.deadline() == (min(due) if due else None)
        for s in c.spec.subnets:
            in_use = sum(1 for ip in [*c.vpc.owner, *c.vpc.retained] if ip in s.cidr)
            assert c.vpc.available(s.id) == s.size - s.reserved - in_use


@pytest.mark.parametrize("mode", ["shared-eni", "static-ip"])
def test_the_back_off_starts_over_once_the_cloud_answers_again_in_either_mode(mode, monkeypatch):
    from eni_core.ports import InvalidParameter

    c = Cluster(ClusterSpec(subnets=(subnet("subnet-a", "10.0.1.0/24"),),
                            nodes=(NodeSpec("node-1", ("subnet-a",), 2, 4),), mode=mode, pool=PoolConfig(1, 1)))
    ipamd = c.nodes["node-1"].ipamd
    real = c.vpc.describe_subnets
    broken = [True]

    def describe(subnets):
        if broken[0]:
            raise InvalidParameter("the cloud refuses for now")
        return real(subnets)

    def work() -> list[float]:
        """One try of what each mode does with the cloud; the back-offs it started."""
        before = len(c.events.items)
        c.clock.advance_to(max(c.clock.now(), ipamd.backoff_until or 0.0) + 1)
        ipamd.reconcile()  # the timers fire first: static mode has nothing to do with the cloud here
        ipamd.assign(f"pod-{len(c.events.items)}")  # static mode binds its IP now: it asks for the subnets
        ipamd.reconcile()  # one more pod: the pool wants one more IP, and asks for the subnets
        return [e["seconds"] for e in c.events.items[before:] if e["kind"] == "backoff"]

    monkeypatch.setattr(c.vpc, "describe_subnets", describe)
    base = ipamd.retry.base
    assert work() == [base * 2] and work() == [base * 4]  # doubling while it keeps failing
    broken[0] = False
    assert work() == []
    broken[0] = True
    assert work() == [base * 2]  # a fresh failure: the first back-off again, not the third


def _addresses_accounted(state: dict) -> dict[str, int]:
    """Per subnet, the addresses out of its free pool: ENIs' primaries and bound IPs, claims kept on no ENI."""
    used = {name: 0 for name in state["subnets"]}
    for node in state["nodes"].values():
        for eni in node["enis"]:
            used[eni["subnet"]] += 1 + len(eni["ips"])
    for claim in state["claims"].values():
        if claim["node"] is None:
            used[claim["subnet"]] += 1
    return used


@pytest.mark.parametrize("seed", range(1, 31))
def test_static_mode_under_a_failing_cloud_finishes_and_loses_no_address(seed):
    """Throttles, internal errors and timeouts on every call, reclaims and expiry among them: the scenario runs
    to its end (a refused release is tried again later, a reclaim of a claim whose pod never kept an address is
    moot), and once the cloud has had time every address is free, on an ENI, or kept for a claim."""
    data = yaml.safe_load((SCENARIOS / "static-ip-retention.yaml").read_text())
    data["cluster"]["faults"] = {"throttle": 0.2, "transient": 0.1, "timeout": 0.2, "seed": seed}
    data["steps"] = [{"op": "advance", "seconds": 1}, *data["steps"], {"op": "advance", "seconds": 3600}]
    out = run_scenario(parse_scenario(data))
    first, last = out["steps"][0]["state"], out["steps"][-1]["state"]
    taken = {s: first["subnets"][s]["available"] - last["subnets"][s]["available"] for s in first["subnets"]}
    assert taken == _addresses_accounted(last)


def test_a_release_the_cloud_refuses_is_tried_again_later_and_the_claim_goes_at_once():
    c = static_cluster(expiry=None)
    c.create_pod("default/web-0", "node-1", static=True, owner=WEB)
    c.delete_pod("default/web-0")
    ip = IPv4Address(c.state()["claims"]["default/web-0"]["ip"])
    refusals = iter([Throttled("busy"), TransientError("oops")])
    real = c.vpc.release_retained

    def flaky(ips):
        err = next(refusals, None)
        if err is not None:
            raise err
        real(ips)

    c.vpc.release_retained = flaky
    c.reclaim_claim("default/web-0")
    assert "default/web-0" not in c.state()["claims"] and ip in c.vpc.retained  # the claim went, not yet the IP
    c.advance(1)  # the first retry is refused too
    assert ip in c.vpc.retained
    c.advance(2)  # the second (after twice the wait) goes through
    assert ip not in c.vpc.retained and c.static.releasing == set()


def test_a_claim_retained_twice_at_one_instant_expires_once():
    c = static_cluster(expiry=600)
    for _ in range(2):  # retained, bound again, retained again: all at t=0
        c.create_pod("default/web-0", "node-1", static=True)
        c.delete_pod("default/web-0")
    c.create_pod("default/web-1", "node-2", static=True)
    c.delete_pod("default/web-1")
    c.advance(600)
    assert c.state()["claims"] == {}
    reclaimed = [e["claim"] for e in c.events.items if e.get("event") == "Reclaimed"]
    assert reclaimed == ["default/web-0", "default/web-1"]  # once each, in the order the claims were made


def test_a_claim_bound_again_before_it_expires_does_not_expire_at_its_old_time():
    c = static_cluster(expiry=600)
    c.create_pod("default/web-0", "node-1", static=True)
    c.delete_pod("default/web-0")
    c.advance(300)
    c.create_pod("default/web-0", "node-2", static=True)
    c.advance(600)
    assert "default/web-0" in c.state()["claims"]
    c.delete_pod("default/web-0")
    assert c.static.deadline() == 900 + 600


class _NoWalk(dict):
    """A table of claims that refuses to be walked whole."""

    def values(self):
        raise AssertionError("every claim walked")

    items = __iter__ = values


def test_no_timer_and_no_reconcile_walks_every_claim():
    """A cluster may hold 100,000 claims: the expiry's deadline and a static node's reconcile walked them
    all on every timer (60,000 claims: 12 minutes for one advance that polled)."""
    c = static_cluster(expiry=600)
    for i in range(3):
        c.create_pod(f"default/web-{i}", "node-1", static=True)
    c.delete_pod("default/web-0")
    c.static.claims = _NoWalk(c.static.claims)
    c.advance(300)
    assert c.static.deadline() == 600
    for node in c.nodes.values():
        node.ipamd.reconcile()
    c.advance(600)  # web-0 expires
    assert set(dict.keys(c.static.claims)) == {"default/web-1", "default/web-2"}
