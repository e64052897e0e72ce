"""CNI ADD, DEL and CHECK without root: the real handler and agent, the node's and the pod's kernels faked
by `FakeKernel` (which refuses what Linux refuses). The root tests do the same against real namespaces."""
from __future__ import annotations

import errno
import json
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from eni_core import cni_client, ops, routing
from eni_core.agent import NodeAgent
from eni_core.cni import CniError, CniRequest, Dataplane, handle, parse_request
from eni_core.cni_client import (
    AGENT_FAILED,
    CHECK_FAILED,
    DECODE_FAILURE,
    INVALID_CONFIG,
    INVALID_ENV,
    IO_FAILURE,
    TRY_AGAIN,
    UNKNOWN_CONTAINER,
)
from eni_core.datastore import attachment_key
from eni_core.fake_kernel import FakeHost, FakeKernel
from eni_core.ipamd import EniChange
from eni_core.model import Eni
from eni_core.ops import (
    DEFAULT,
    MAIN_TABLE,
    AddNeighbour,
    AddRoute,
    DeleteLink,
    DeleteRoute,
    DeleteRule,
    Route,
    Rule,
    SetSysctl,
)
from tests.helpers import cluster

NETNS = "/var/run/netns/ctr-1"
CONFIG = {"cniVersion": "1.0.0", "name": "net"}


class World:
    """One node's agent over a sim cluster, its namespace a FakeKernel whose ENI links carry the ENIs' MACs."""

    def __init__(self, **pool) -> None:
        c = cluster(min_prebound=pool.pop("min_prebound", 3), max_prebound=3, **pool)
        c.sync_dataplane()
        self.cluster = c
        self.agent = NodeAgent(c.nodes["node-1"].ipamd)
        self.host = FakeHost()
        self.node = self.host.add_namespace("/proc/1/ns/net")
        self.node.add_link("eth0", index=2, up=True)
        ipamd = c.nodes["node-1"].ipamd
        for eni in ipamd.enis:
            self.eni_link(EniChange.ATTACHED, eni)
        ipamd.listeners.append(self.eni_link)  # ENIs the pool adds later appear as links, as on a node
        self.host.add_namespace(NETNS)
        self.dataplane = Dataplane(self.node, self.host.open)

    def eni_link(self, what: EniChange, eni: Eni) -> None:
        if what is EniChange.ATTACHED:
            self.node.add_link(f"eth{eni.device_index}", index=2 + eni.device_index, mac=eni.mac, up=True)

    @property
    def pod(self) -> FakeKernel:
        return self.host.namespace(NETNS)

    def call(self, command: str, container: str = "ctr-1", ifname: str = "eth0", netns: str = NETNS,
             config: dict | None = None):
        req = CniRequest(command, container, netns, ifname, {}, config or CONFIG)
        return handle(req, lambda method, **params: self.agent.handle(method, params), self.dataplane)

    def key(self, container: str = "ctr-1", ifname: str = "eth0") -> str:
        return attachment_key("net", container, ifname)

    def node_rules(self) -> set[str]:
        return {str(r) for r in self.node.rules() if r.priority in (512, 1536)}


def test_add_wires_the_node_and_the_pod_and_answers_a_result_naming_both_ends():
    w = World()
    result = w.call("ADD")
    ip = IPv4Interface(result["ips"][0]["address"]).ip
    alloc = w.agent.handle("get", {"pod": w.key()})
    eni_index = next(lk.index for lk in w.node.links() if lk.mac == alloc["mac"])
    veth = w.node.link(routing.host_veth_name(w.key()))
    assert veth is not None and veth.up
    assert w.node_rules() == {f"512: to {ip} lookup main", f"1536: from {ip} lookup {eni_index + 2000}"}
    assert Route(MAIN_TABLE, IPv4Network((ip, 32)), veth.index) in w.node.routes()
    eth0 = w.pod.link("eth0")
    assert eth0 is not None and eth0.up
    assert [a.ip for a in w.pod.addresses()] == [IPv4Interface((ip, 32))]
    assert {str(r) for r in w.pod.routes()} == {f"169.254.1.1 dev {eth0.index} table 254",
                                                f"default via 169.254.1.1 dev {eth0.index} table 254"}
    assert [(n.ip, n.mac) for n in w.pod.neighbours()] == [(routing.LINK_LOCAL_GATEWAY, veth.mac)]
    assert result["interfaces"] == [{"name": veth.ifname, "mac": veth.mac},
                                    {"name": "eth0", "mac": eth0.mac, "sandbox": NETNS}]
    assert w.call("CHECK", config={**CONFIG, "prevResult": result}) is None


def test_add_again_for_the_same_container_keeps_its_ip_and_veth_and_rewires_what_drifted():
    w = World()
    first = w.call("ADD")
    w.node.apply([DeleteRule(Rule(1536, 0, src=IPv4Network(first["ips"][0]["address"])))])
    again = w.call("ADD")
    assert again["ips"] == first["ips"] and again["interfaces"] == first["interfaces"]
    assert len(w.node_rules()) == 2
    assert len([lk for lk in w.node.links() if lk.ifname.startswith("eni")]) == 1


@pytest.mark.parametrize("theirs", [True, False])
def test_add_again_into_another_namespace_configures_nothing_there_and_keeps_the_attachment(theirs):
    w = World()
    first = w.call("ADD")
    other = w.host.add_namespace("/var/run/netns/ctr-other")
    if theirs:  # the other namespace has an eth0 of its own (a veth made by someone else)
        other.add_link("eth0", index=2, mac="72:ee:be:15:54:b6", up=True)
    with pytest.raises(CniError) as err:
        w.call("ADD", netns="/var/run/netns/ctr-other")
    assert err.value.code == IO_FAILURE and "is wired into another namespace" in err.value.msg
    assert "DEL the attachment first" in err.value.msg
    assert other.addresses() == [] and other.routes() == []
    assert w.agent.handle("get", {"pod": w.key()})["ip"] == IPv4Interface(first["ips"][0]["address"]).ip.exploded
    assert w.call("ADD") == first


def test_an_add_that_takes_an_idle_ip_refills_the_pool_at_once_and_one_that_takes_none_asks_the_cloud_nothing():
    w = World()
    ipamd, vpc = w.cluster.nodes["node-1"].ipamd, w.cluster.vpc
    assert (ipamd.pods, ipamd.bound) == (0, 3)
    w.call("ADD")
    assert (ipamd.pods, ipamd.bound) == (1, 4)  # pods + min pre-bound, before ADD answered
    calls = vpc.calls
    w.call("ADD")  # again for the same container: its IP is the one it has
    # a pod whose IP the kubelet's side took before ADD (the testbed's controller does): the pool
    # changed then, and whoever took it settles the pool
    ipamd.assign(w.key("ctr-2", "net1"))
    w.call("ADD", container="ctr-2", ifname="net1")
    assert vpc.calls == calls and ipamd.pods == 2


def test_an_add_for_a_pod_that_holds_its_ip_still_runs_the_routing_agent():
    w = World()
    passes = []
    w.agent.on_change = lambda: passes.append(w.cluster.vpc.calls)
    w.call("ADD")
    w.call("ADD")  # a runtime's retry: the pool is left alone, the node's routing is repaired all the same
    assert len(passes) == 2 and passes[0] == passes[1]


def test_a_second_attachment_of_a_namespace_gets_no_default_route_of_its_own():
    w = World()
    w.call("ADD")
    second = w.call("ADD", ifname="net1")
    assert second["routes"] == []
    defaults = [r for r in w.pod.routes() if r.dst == DEFAULT]
    assert len(defaults) == 1 and defaults[0].oif == w.pod.link("eth0").index
    assert len(w.node_rules()) == 4
    # eth0 holds the index a fresh namespace gives; net1 got the kernel's choice, read back for its result
    net1 = w.pod.link("net1")
    assert w.pod.link("eth0").index == 2 and net1.index != 2 and net1.up
    assert second["interfaces"][1] == {"name": "net1", "mac": net1.mac, "sandbox": NETNS}
    assert IPv4Interface(second["ips"][0]["address"]) in {a.ip for a in w.pod.addresses() if a.index == net1.index}
    assert w.call("CHECK", ifname="net1", config={**CONFIG, "prevResult": second}) is None
    assert len([lk for lk in w.node.links() if lk.ifname.startswith("eni")]) == 2  # no veth left half-made


def _count_route_reads(kernel: FakeKernel) -> list[int | None]:
    reads, real = [], kernel.routes
    kernel.routes = lambda table=None: reads.append(table) or real(table)
    return reads


def test_a_namespace_with_a_default_route_of_its_own_keeps_it_and_gets_no_gateway_route_from_add():
    w = World()
    ext = w.pod.add_link("ext0", index=7, up=True)
    w.pod.apply([ops.AddAddress(7, IPv4Interface("192.0.2.5/24")),
                 AddRoute(Route(MAIN_TABLE, IPv4Network("192.0.2.0/24"), 7)),
                 AddRoute(Route(MAIN_TABLE, DEFAULT, 7, IPv4Address("192.0.2.1")))], ignore=())
    reads = _count_route_reads(w.pod)
    result = w.call("ADD")
    assert reads == [MAIN_TABLE] and result["routes"] == []
    # the namespace's routes are its own: no gateway route, no second default
    assert {str(r) for r in w.pod.routes()} == {"192.0.2.0/24 dev 7 table 254",
                                                "default via 192.0.2.1 dev 7 table 254"}
    assert ext.index == 7
    # CHECK holds the attachment to what its ADD said it wrote: no default route of ours is missing
    assert w.call("CHECK", config={**CONFIG, "prevResult": result}) is None


def test_add_again_writes_the_routes_it_owns_back_when_one_of_them_was_removed():
    w = World()
    first = w.call("ADD")
    eth0 = w.pod.link("eth0").index
    w.pod.apply([DeleteRoute(Route(MAIN_TABLE, DEFAULT, eth0, routing.LINK_LOCAL_GATEWAY))], ignore=())
    again = w.call("ADD")
    assert again["routes"] == first["routes"]
    assert {str(r) for r in w.pod.routes()} == {f"169.254.1.1 dev {eth0} table 254",
                                                f"default via 169.254.1.1 dev {eth0} table 254"}


def test_del_removes_the_veth_its_peer_and_both_rules_and_a_second_del_is_fine():
    w = World()
    w.call("ADD")
    w.call("DEL")
    assert w.node_rules() == set()
    assert not [lk for lk in w.node.links() if lk.ifname.startswith("eni")]
    assert w.pod.link("eth0") is None and w.pod.routes() == []
    assert w.call("DEL") is None
    assert w.agent.handle("get", {"pod": w.key()}) is None


def _refuse_rule_deletes(op):
    return errno.ENOBUFS if isinstance(op, DeleteRule) else None


def test_a_del_stopped_before_the_rules_are_gone_keeps_the_ip_held_and_its_retry_finishes():
    """The node refuses a rule's removal (as a kill between the two steps would leave it): the IP stays the
    pod's, so no other pod can be given an address whose rules still steer elsewhere, and the runtime's
    retried DEL removes the rules and frees it. The IP used to be freed first."""
    w = World()
    ip = w.call("ADD")["ips"][0]["address"].split("/")[0]
    w.node.refuse = _refuse_rule_deletes
    with pytest.raises((OSError, CniError)):
        w.call("DEL")
    assert w.agent.handle("get", {"pod": w.key()})["ip"] == ip
    assert w.node_rules(), "the refused rules are still there"
    w.node.refuse = lambda op: None
    assert w.call("DEL") is None
    assert w.node_rules() == set() and w.agent.handle("get", {"pod": w.key()}) is None


def _add_in_own_netns(w: World, *containers: str) -> None:
    for c in containers:
        w.host.add_namespace(f"/var/run/netns/{c}")
        w.call("ADD", container=c, netns=f"/var/run/netns/{c}")


def test_a_gc_stopped_before_the_rules_are_gone_keeps_the_ips_held_and_its_retry_finishes():
    w = World()
    _add_in_own_netns(w, "keep", "drop")
    gc = {**CONFIG, "cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    w.node.refuse = _refuse_rule_deletes
    with pytest.raises((OSError, CniError)):
        w.call("GC", config=gc)
    assert w.agent.handle("get", {"pod": w.key("drop")}) is not None
    w.node.refuse = lambda op: None
    assert w.call("GC", config=gc) is None
    assert w.agent.handle("get", {"pod": w.key("drop")}) is None
    assert w.agent.handle("get", {"pod": w.key("keep")}) is not None
    assert len(w.node_rules()) == 2  # the kept attachment's two rules, no others


def test_gc_releases_only_what_it_unwired_not_an_attachment_added_in_between():
    w = World()
    _add_in_own_netns(w, "old")
    valid = [["nobody", "eth0"]]
    stale = w.agent.handle("gc", {"network": "net", "valid": valid, "release": False})
    assert list(stale) == [w.key("old")] and w.agent.handle("get", {"pod": w.key("old")}) is not None
    _add_in_own_netns(w, "new")  # after the runtime listed what is valid
    gone = w.agent.handle("gc", {"network": "net", "valid": valid, "only": sorted(stale)})
    assert list(gone) == [w.key("old")] and w.agent.handle("get", {"pod": w.key("new")}) is not None


def test_del_of_a_pod_whose_eni_is_gone_still_removes_its_from_rule():
    w = World()
    result = w.call("ADD")
    eni = next(lk for lk in w.node.links() if lk.ifname == "eth1")
    w.node.apply([DeleteLink(eni.ifname)])  # its table's routes go with it; the rules stay
    assert any(r.startswith("1536") for r in w.node_rules())
    w.call("DEL")
    assert w.node_rules() == set(), result


@pytest.mark.parametrize("refused, where", [
    (lambda op: errno.EPERM if isinstance(op, AddNeighbour) else None, "pod"),
    (lambda op: errno.ENOBUFS if isinstance(op, AddRoute) and op.route.table == MAIN_TABLE else None, "node"),
])
def test_a_failed_add_rolls_back_the_veth_the_rules_and_the_ip(refused, where):
    w = World()
    (w.pod if where == "pod" else w.node).refuse = refused
    with pytest.raises(CniError) as err:
        w.call("ADD")
    assert err.value.code == IO_FAILURE and "wiring eth0 in" in err.value.msg
    assert w.node_rules() == set()
    assert not [lk for lk in w.node.links() if lk.ifname.startswith("eni")]
    assert w.pod.link("eth0") is None
    assert w.agent.handle("get", {"pod": w.key()}) is None


def test_add_returns_with_the_host_end_readied_so_the_nodes_first_packet_to_the_pod_is_not_dropped():
    w = World()
    w.call("ADD")
    veth = next(lk for lk in w.node.links() if lk.ifname == routing.host_veth_name(w.key()))  # a dump readies nothing
    assert veth.up and veth.oper_up


def reads_of_the_host_end(w: World, ready_from: int | None) -> list[int]:
    """Make the node a kernel that readies the host end on its own schedule: from its `ready_from`-th
    read (None: never). Returns the reads, counted as ADD makes them."""
    reads, real = [], w.node.link

    def link(ifname: str):
        found = real(ifname)
        if found is None or ifname != routing.host_veth_name(w.key()):
            return found
        reads.append(len(reads) + 1)
        return replace(found, oper_up=ready_from is not None and len(reads) >= ready_from)

    w.node.link = link
    return reads


def test_add_reads_the_host_end_until_a_kernel_that_readies_it_late_has_done_so():
    w = World()
    reads = reads_of_the_host_end(w, ready_from=3)
    w.call("ADD")
    assert len(reads) == 3


def test_add_waits_a_bounded_time_for_a_host_end_that_never_runs_then_answers(monkeypatch):
    monkeypatch.setattr(ops, "SETTLE_S", 0.05)
    w = World()
    reads = reads_of_the_host_end(w, ready_from=None)
    started = time.monotonic()
    result = w.call("ADD")
    assert result["ips"] and len(reads) > 1 and 0.05 <= time.monotonic() - started < 0.5


def test_a_host_end_that_vanishes_during_add_fails_it_and_rolls_it_back():
    w = World()
    real = w.node.link
    w.node.link = lambda ifname: None if ifname == routing.host_veth_name(w.key()) else real(ifname)
    with pytest.raises(CniError) as err:
        w.call("ADD")
    assert err.value.code == IO_FAILURE and "vanished" in err.value.msg
    assert w.node_rules() == set() and w.agent.handle("get", {"pod": w.key()}) is None
    assert routing.host_veth_name(w.key()) not in {lk.ifname for lk in w.node.links()}


def test_add_into_a_path_that_is_not_a_namespace_or_does_not_exist_says_so_and_keeps_nothing():
    w = World()
    w.host.files.add("/tmp/not-a-netns")
    with pytest.raises(CniError) as err:
        w.call("ADD", netns="/tmp/not-a-netns")
    assert err.value.code == INVALID_ENV and "is not a network namespace" in err.value.msg
    with pytest.raises(CniError) as err:
        w.call("ADD", netns="/var/run/netns/gone")
    assert err.value.code == UNKNOWN_CONTAINER and "cannot enter CNI_NETNS /var/run/netns/gone" in err.value.msg
    assert w.agent.ipamd.store.attachments == {} and w.node_rules() == set()


def test_add_before_the_enis_link_appeared_asks_the_runtime_to_try_again():
    w = World()
    for lk in w.node.links():
        if lk.ifname.startswith("eth") and lk.ifname != "eth0":
            w.node.apply([DeleteLink(lk.ifname)])
    with pytest.raises(CniError) as err:
        w.call("ADD")
    assert err.value.code == TRY_AGAIN and "has not appeared on the node yet" in err.value.msg
    assert w.agent.handle("get", {"pod": w.key()}) is None  # rolled back


def test_add_and_check_without_a_dataplane_is_an_agent_failure_not_an_assertion():
    w = World()
    w.dataplane = None
    for command in ("ADD", "CHECK"):
        with pytest.raises(CniError) as err:
            w.call(command, config={**CONFIG, "prevResult": {}})
        assert err.value.code == AGENT_FAILED and "without a dataplane" in err.value.msg


def drift_rule(w: World) -> str:
    ip = w.agent.handle("get", {"pod": w.key()})["ip"]
    w.node.apply([DeleteRule(Rule(1536, 0, src=IPv4Network(f"{ip}/32")))])
    return f"rule '1536: from {ip} lookup 2003' is missing on the node"


def drift_veth(w: World) -> str:
    w.node.apply([DeleteLink(routing.host_veth_name(w.key()))])
    return f"host veth {routing.host_veth_name(w.key())} is missing on the node"


def drift_host_route(w: World) -> str:
    ip = w.agent.handle("get", {"pod": w.key()})["ip"]
    veth = routing.host_veth_name(w.key())
    w.node.apply([DeleteRoute(Route(MAIN_TABLE, IPv4Network(f"{ip}/32"), w.node.link(veth).index))])
    return f"host route '{ip} dev {veth}' is missing on the node"


def drift_pod_default(w: World) -> str:
    w.pod.apply([DeleteRoute(Route(MAIN_TABLE, DEFAULT, w.pod.link("eth0").index, routing.LINK_LOCAL_GATEWAY))])
    return f"default route via 169.254.1.1 is missing in {NETNS}"


def drift_eni(w: World) -> str:
    mac = w.agent.handle("get", {"pod": w.key()})["mac"]
    w.node.apply([DeleteLink(next(lk.ifname for lk in w.node.links() if lk.mac == mac))])
    return f"the ENI with MAC {mac} is missing on the node"


@pytest.mark.parametrize("drift", [drift_rule, drift_veth, drift_host_route, drift_pod_default, drift_eni])
def test_check_names_exactly_what_drifted(drift):
    w = World()
    result = w.call("ADD")
    expected = drift(w)
    with pytest.raises(CniError) as err:
        w.call("CHECK", config={**CONFIG, "prevResult": result})
    assert err.value.code == CHECK_FAILED and expected in err.value.msg.split("; ")


def test_check_against_a_prev_result_of_another_ip_and_mac_names_both():
    w = World()
    result = w.call("ADD")
    forged = {**result, "ips": [{"address": "10.0.1.250/32"}],
              "interfaces": [result["interfaces"][0], {**result["interfaces"][1], "mac": "02:00:00:00:00:99"}]}
    with pytest.raises(CniError) as err:
        w.call("CHECK", config={**CONFIG, "prevResult": forged})
    assert "prevResult lists 10.0.1.250, but the attachment holds" in err.value.msg
    assert "prevResult says 02:00:00:00:00:99" in err.value.msg


def test_check_of_an_unknown_container_is_unknown_container():
    w = World()
    with pytest.raises(CniError) as err:
        w.call("CHECK", config={**CONFIG, "prevResult": {}})
    assert err.value.code == UNKNOWN_CONTAINER


def test_the_node_sysctls_are_the_routing_agents_not_the_cnis():
    w = World()
    w.call("ADD")
    assert not any(isinstance(op, SetSysctl) for batch in w.node.batches for op in batch)
    assert IPv4Address(w.agent.handle("get", {"pod": w.key()})["ip"]) in {
        r.src.network_address for r in w.node.rules() if r.src is not None}


def test_a_full_node_asks_the_runtime_to_try_again_whether_the_agent_is_in_process_or_across_the_rpc(tmp_path):
    from eni_core.rpc import RpcClient, RpcServer

    w = World(min_prebound=1)
    server = RpcServer(tmp_path / "agent.sock", w.agent.handle).start()
    client = RpcClient(tmp_path / "agent.sock")
    try:
        for caller in (lambda m, **p: w.agent.handle(m, p), client.call):
            while True:
                w.host.add_namespace(netns := f"/var/run/netns/ctr-{len(w.node_rules())}")
                req = CniRequest("ADD", f"c{len(w.node_rules())}", netns, "eth0", {}, CONFIG)
                try:
                    handle(req, caller, w.dataplane)
                except CniError as err:
                    assert err.code == TRY_AGAIN and "has no idle IP" in err.msg and "NoFreeIp" not in err.msg
                    break
    finally:
        client.close()
        server.close()


def test_check_and_add_again_for_a_container_whose_namespace_is_gone_do_not_say_unknown_while_its_ip_is_held():
    w = World()
    w.call("ADD")
    w.host.remove_namespace(NETNS)
    for command, code in [("CHECK", CHECK_FAILED), ("ADD", IO_FAILURE)]:
        config = {**CONFIG, "prevResult": {}} if command == "CHECK" else None
        with pytest.raises(CniError) as err:
            w.call(command, config=config)
        # code 3 would tell the runtime it need not DEL, and the IP would stay held for ever
        assert err.value.code == code and err.value.msg.endswith("the agent still holds this attachment: DEL it")
    assert w.agent.handle("get", {"pod": w.key()}) is not None
    assert w.call("DEL") is None and w.agent.handle("get", {"pod": w.key()}) is None


@pytest.mark.parametrize("ifname", ["net%d", "éééééééé", "eth 0", "eth\t0", "a:b", ".", "x" * 16])
def test_an_interface_name_the_kernel_would_not_make_as_named_is_refused_before_any_ip_is_taken(ifname):
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-1", "CNI_NETNS": NETNS, "CNI_IFNAME": ifname}
    with pytest.raises(CniError) as err:
        parse_request(env, json.dumps(CONFIG))
    assert err.value.code == INVALID_ENV and "is not a valid interface name" in err.value.msg


def test_a_configuration_nested_too_deeply_is_a_decoding_failure_in_the_client_and_in_the_agent():
    deep = '{"cniVersion": "1.0.0", "name": "net", "a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for command in ("VERSION", "ADD"):
        code, document = cni_client.run({"CNI_COMMAND": command}, deep.encode())
        assert code == 1 and document["code"] == DECODE_FAILURE and "nested too deeply" in document["msg"]
    with pytest.raises(CniError) as err:
        parse_request({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0"}, deep)
    assert err.value.code == DECODE_FAILURE


def test_version_echoes_only_a_version_string():
    code, document = cni_client.run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": [[1]]}')
    assert code == 0 and document["cniVersion"] == "1.1.0"


def test_gc_takes_a_null_list_of_valid_attachments_as_none_valid():
    w = World()
    w.call("ADD")
    w.call("GC", config={**CONFIG, "cniVersion": "1.1.0", "cni.dev/valid-attachments": None})  # libcni's nil slice
    assert w.agent.handle("get", {"pod": w.key()}) is None


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_under_cni_version_1_0_0_are_refused_as_libcni_refuses_them(command):
    body = json.dumps({**CONFIG, "cni.dev/valid-attachments": []})
    with pytest.raises(CniError) as err:
        parse_request({"CNI_COMMAND": command}, body)
    assert err.value.code == 1 and "came with 1.1.0" in err.value.msg
    assert parse_request({"CNI_COMMAND": command}, body.replace("1.0.0", "1.1.0")).command == command
    code, out = cni_client.run({"CNI_COMMAND": command, "ENILAB_RUN_DIR": "/nonexistent"}, body.encode())
    assert code == 1 and out["code"] == 1 and out["cniVersion"] == "1.0.0"


def test_add_passes_on_a_chains_prev_result_with_its_own_parts_after_and_refuses_one_that_is_not_a_result():
    w = World()
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "br0", "mac": "02:00:00:00:00:01"}],
            "ips": [{"address": "192.168.9.9/24", "interface": 0}], "routes": [{"dst": "192.168.0.0/16"}],
            "dns": {"nameservers": ["10.0.0.53"]}}
    chained = w.call("ADD", config={**CONFIG, "prevResult": prev})
    assert chained["interfaces"][0] == prev["interfaces"][0] and chained["interfaces"][1]["name"].startswith("eni")
    assert chained["ips"][0] == prev["ips"][0] and chained["ips"][1]["interface"] == 2  # the pod's end, past br0
    pod_end = chained["interfaces"][chained["ips"][1]["interface"]]
    assert pod_end["name"] == "eth0" and pod_end["sandbox"] == NETNS
    assert chained["routes"] == [*prev["routes"], {"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    assert chained["dns"] == prev["dns"]
    assert w.call("ADD", config={**CONFIG, "prevResult": prev}) == chained  # ADD again: the same answer
    assert w.call("CHECK", config={**CONFIG, "prevResult": chained}) is None  # the chain's result checks
    held = dict(w.agent.ipamd.store.pods)
    for bad in ([], {"ips": {}}, {"interfaces": ["br0"]}, {"dns": []}):
        with pytest.raises(CniError) as err:
            w.call("ADD", container="ctr-bad", config={**CONFIG, "prevResult": bad})
        assert err.value.code == INVALID_CONFIG and "prevResult is not a CNI result" in err.value.msg
    assert dict(w.agent.ipamd.store.pods) == held


def test_check_passes_a_chain_whose_earlier_plugin_wrote_the_default_route():
    w = World()
    w.pod.add_link("net0", index=9, up=True)  # the earlier plugin's interface and default route
    assert w.pod.apply([AddRoute(Route(MAIN_TABLE, DEFAULT, 9, IPv4Address("192.168.9.1"), onlink=True))],
                       ignore=()) == []
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "br0"}], "ips": [],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.9.1"}]}
    chained = w.call("ADD", config={**CONFIG, "prevResult": prev})
    assert chained["routes"] == prev["routes"]  # ADD wrote no default route of its own
    assert w.call("CHECK", config={**CONFIG, "prevResult": chained}) is None


def test_status_says_the_plugin_is_not_available_when_its_cluster_is_not_up_and_a_refused_socket_is_no_retry(
        tmp_path, monkeypatch):
    env = {"CNI_COMMAND": "STATUS"}
    for conf, code in [({}, 50), ({"cluster": "lab"}, 50), ({"agentSocket": str(tmp_path / "a.sock")}, 50)]:
        body = json.dumps({"cniVersion": "1.1.0", "name": "net", "clustersDir": str(tmp_path), **conf}).encode()
        assert cni_client.run(env, body)[1]["code"] == code
    body = json.dumps({"cniVersion": "1.1.0", "name": "net", "agentSocket": str(tmp_path / "a.sock")}).encode()

    def refused(path, params):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cni_client, "ask_agent", refused)
    add = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": NETNS, "CNI_IFNAME": "eth0"}
    code, err = cni_client.run(add, body)
    assert err["code"] == IO_FAILURE and "only for the user who started the cluster" in err["msg"]
