"""Differential: every fixture scenario, shared-ENI and static-IP, gives the same JSON timeline in-process and
with every ipamd (and, in static-IP mode, the cluster's pool of claims) going through the official SDK over
HTTP to the served VPC, faults included: each fixture as written and each under a storm of faults.

Nothing is normalised: the events (the VPC's API calls with their seeded faults and latencies, the pools'
decisions, the claims, the pods) are equal as they are, because each port call is one VPC call on the same
simulated clock (a static IP's reservation in place and the describes around it are bookkeeping of the API,
not VPC calls). The one designed difference: an injected timeout (the call happened, the answer was lost).
In-process the ipamd's retry makes a second ENI or binds more IPs, which the re-sync cleans up later;
through the SDK the retry carries the same ClientToken and gets the first answer back. So timeouts are
turned off for the comparison, and with them on `cloud-faults` is checked for what the token promises."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from testbed.apps.runner import run_scenario
from testbed.world.scenario import NETNS_OPS, load_scenario
from testbed.world.tencent_api import TencentCloud
from testbed.world.vpc import FaultConfig
from tests.helpers import ROOT, SCENARIOS

FIXTURES = [p for p in sorted(SCENARIOS.glob("*.yaml"))
            if not any(step["op"] in NETNS_OPS for step in load_scenario(p).steps)]
STATIC = [p for p in FIXTURES if load_scenario(p).cluster.mode == "static-ip"]
STORM = FaultConfig(throttle=0.25, transient=0.1, insufficient_addresses=0.05, consistency_delay=5)


def through_sdk(scenario) -> tuple[dict, TencentCloud]:
    cloud = TencentCloud()
    try:
        return run_scenario(scenario, node_vpc=cloud), cloud
    finally:
        cloud.close()


def without_timeouts(scenario):
    faults = dataclasses.replace(scenario.cluster.faults, timeout=0.0)
    return dataclasses.replace(scenario, cluster=dataclasses.replace(scenario.cluster, faults=faults))


def stormy(scenario):
    return dataclasses.replace(scenario, cluster=dataclasses.replace(scenario.cluster, faults=STORM))


@pytest.mark.parametrize("weather", [without_timeouts, stormy], ids=["as-written", "storm"])
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_the_timeline_through_the_sdk_equals_the_in_process_one(path, weather):
    scenario = weather(load_scenario(path))
    expected = run_scenario(scenario)
    got, cloud = through_sdk(scenario)
    assert got == expected
    assert cloud.calls >= sum(1 for e in expected["events"] if e["kind"] == "api")  # it really went over HTTP
    if weather is stormy:  # the storm did blow: some calls failed and were retried
        assert any(e.get("result") in ("Throttled", "TransientError") for e in expected["events"])


def test_the_fixtures_cover_faults_the_describe_lag_and_static_ips():
    faults = [load_scenario(p).cluster.faults for p in FIXTURES]
    assert any(f.throttle and f.transient and f.insufficient_addresses and f.consistency_delay for f in faults)
    assert STATIC


@pytest.mark.parametrize("path", STATIC, ids=lambda p: p.stem)
def test_static_ips_go_through_reserved_addresses(path):
    """Every claim kept on no ENI was a reservation of the served API; at the end the API's reservations are
    exactly the claims still retained, and nothing else is."""
    scenario = stormy(load_scenario(path))
    cloud = TencentCloud()
    try:
        out = run_scenario(scenario, node_vpc=cloud)
        service = cloud.server.service
        retained = {c["ip"] for c in out["steps"][-1]["state"]["claims"].values() if not c["pod_present"]}
        assert {str(ip) for ip in service.reserved if ip in service.vpc.retained} == retained
        assert {str(ip) for ip in service.vpc.retained} == retained
        calls = ("UnassignPrivateIpAddresses", "ReleaseRetainedAddresses")
        events = [e for e in out["events"] if e.get("call") in calls]
        assert any(e.get("retain") for e in events) and any(e["call"] == "ReleaseRetainedAddresses" for e in events)
    finally:
        cloud.close()


def test_with_lost_answers_the_client_token_makes_retries_exact_and_nothing_leaks():
    scenario = load_scenario(SCENARIOS / "cloud-faults.yaml")
    assert scenario.cluster.faults.timeout > 0
    in_process = run_scenario(scenario)
    cloud = TencentCloud()
    try:
        got = run_scenario(scenario, node_vpc=cloud)
        vpc = cloud.server.service.vpc
        # the VPC's truth and the ipamd's datastore agree at the end: no ENI or IP leaked
        node = got["steps"][-1]["state"]["nodes"]["node-1"]
        assert sorted(e["id"] for e in node["enis"]) == sorted(vpc.enis)
        assert sorted(ip for e in node["enis"] for ip in e["ips"]) == sorted(
            str(ip) for e in vpc.enis.values() for ip in e.ips)
    finally:
        cloud.close()

    def created(out):
        return sum(1 for e in out["events"] if e.get("call") == "CreateNetworkInterface"
                   and e["result"] in ("ok", "RequestTimeout"))

    assert created(got) < created(in_process)  # in-process, a lost create's retry made an orphan ENI
    for out in (in_process, got):
        assert [(n["pods"], n["pending"]) for s in out["steps"] for n in s["state"]["nodes"].values()] == [
            (0, 12), (12, 0), (0, 0), (0, 0)]  # backing off at first, then all Running, then all deleted
    # once the pods run, the bound IPs are exactly pods + 5 through the SDK; in-process a lost assign's
    # retry bound more than the pool asked for
    after, before = got["steps"][1]["state"]["nodes"]["node-1"], in_process["steps"][1]["state"]["nodes"]["node-1"]
    assert after["bound"] == after["pods"] + 5 < before["bound"]


@pytest.mark.parametrize("name", ["grow-and-shrink", "static-ip-retention"])
def test_enilab_simulate_with_cloud_tencent_prints_the_same_json(name):
    def simulate(*extra):
        done = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "simulate",
                               str(SCENARIOS / f"{name}.yaml"), "--json", *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
        return json.loads(done.stdout)

    assert simulate("--cloud", "tencent") == simulate()


@pytest.mark.netns
@pytest.mark.parametrize("name", ["grow-and-shrink", "static-ip-retention"])
def test_enilab_run_through_the_sdk_builds_the_same_namespaces_and_routes(name):
    """On real namespaces: the same timeline, kernel read-backs included; only the run's own name prefix
    (a fresh one per run, in namespace names) differs."""
    from testbed.world.backends.netns import NetnsBackend

    scenario = load_scenario(SCENARIOS / f"{name}.yaml")

    def run(node_vpc=None) -> str:
        backend = NetnsBackend()
        out = run_scenario(scenario, backend=backend, node_vpc=node_vpc)
        return json.dumps(out["steps"]).replace(backend.run.prefix, "PREFIX")

    cloud = TencentCloud()
    try:
        through = run(cloud)
    finally:
        cloud.close()
    assert through == run()
