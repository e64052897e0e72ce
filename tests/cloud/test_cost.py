"""What an API call through the SDK costs against the served VPC, with and without keep-alive, and what a
scenario costs through it against in-process: figures printed (`pytest -s`), never asserted."""
from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time

from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vpc.v20170312 import vpc_client

from testbed.apps.runner import run_scenario
from testbed.world.scenario import load_scenario
from testbed.world.tencent_api import TencentCloud
from tests.cloud.helpers import request, serve
from tests.helpers import ROOT, SCENARIOS

CALLS = 200


def per_call_ms(fn) -> tuple[float, float]:
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def test_cost_per_api_call_with_and_without_keep_alive():
    s = serve()
    try:
        client = s.sdk()
        describe = request("DescribeSubnets", SubnetIds=["subnet-a"])
        client.DescribeSubnets(describe)  # warm
        kept = per_call_ms(lambda: client.DescribeSubnets(describe))
        fresh = request("DescribeSubnets", SubnetIds=["subnet-a"])
        fresh.headers = {"Connection": "close"}  # a new TCP connection for every call
        closed = per_call_ms(lambda: client.DescribeSubnets(fresh))
        eni = client.CreateNetworkInterface(request(
            "CreateNetworkInterface", VpcId="vpc-enilab", SubnetId="subnet-a", NetworkInterfaceName="cost",
            Tags=[{"Key": "enilab-node", "Value": "node-1"}])).NetworkInterface.NetworkInterfaceId
        s.vpc.add_instance("node-1", 3, 10_000)
        assign = per_call_ms(lambda: client.AssignPrivateIpAddresses(request(
            "AssignPrivateIpAddresses", NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=1)))
    finally:
        s.server.close()
    print(f"\nSDK call to the served VPC, p50/p99 ms over {CALLS}: DescribeSubnets keep-alive {kept[0]:.2f}/"
          f"{kept[1]:.2f}, new connection each call {closed[0]:.2f}/{closed[1]:.2f}; AssignPrivateIpAddresses "
          f"keep-alive {assign[0]:.2f}/{assign[1]:.2f}")
    assert kept[0] > 0 and closed[0] > 0


def test_cost_per_api_call_against_enilab_vpc_serve_in_its_own_process():
    proc = subprocess.Popen([sys.executable, "-m", "testbed.apps.cli", "vpc", "serve",
                             str(ROOT / "fixtures/topologies/default.yaml"), "--port", "0", "--json"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        info = json.loads(proc.stdout.readline())
        http = HttpProfile(endpoint=info["endpoint"], protocol="http", keepAlive=True)
        client = vpc_client.VpcClient(credential.Credential(info["secret_id"], info["secret_key"]), "ap-guangzhou",
                                      ClientProfile(httpProfile=http))
        kept = request("DescribeSubnets", SubnetIds=["subnet-a"])
        client.DescribeSubnets(kept)
        fresh = request("DescribeSubnets", SubnetIds=["subnet-a"])
        fresh.headers = {"Connection": "close"}
        figures = per_call_ms(lambda: client.DescribeSubnets(kept)), per_call_ms(lambda: client.DescribeSubnets(fresh))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    print(f"\nSDK call to `enilab vpc serve` (its own process), DescribeSubnets p50/p99 ms over {CALLS}: keep-alive "
          f"{figures[0][0]:.2f}/{figures[0][1]:.2f}, new connection each call {figures[1][0]:.2f}/{figures[1][1]:.2f}")
    assert proc.returncode == 0


def test_cost_of_a_scenario_through_the_sdk_against_in_process():
    scenario = load_scenario(SCENARIOS / "grow-and-shrink.yaml")
    start = time.perf_counter()
    run_scenario(scenario)
    in_process = time.perf_counter() - start
    cloud = TencentCloud()
    try:
        start = time.perf_counter()
        out = run_scenario(scenario, node_vpc=cloud)  # the server's start and each node's client included
        over_http = time.perf_counter() - start
    finally:
        cloud.close()
    port_calls = sum(1 for e in out["events"] if e["kind"] == "api")
    print(f"\ngrow-and-shrink: in-process {in_process * 1000:.0f} ms; through the SDK {over_http * 1000:.0f} ms for "
          f"{port_calls} port calls = {cloud.calls} HTTP calls (task polls and lookups included), "
          f"{over_http * 1000 / cloud.calls:.2f} ms per HTTP call")
    assert cloud.calls >= port_calls
