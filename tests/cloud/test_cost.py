"""What an API call through the SDK costs against the served VPC, with and without keep-alive, and what a
scenario costs through it against in-process: figures printed (`pytest -s`), never asserted."""
from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time

import pytest
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


def wall_and_cpu_ms(fn) -> tuple[float, float, object]:
    """Wall and CPU time of one call, in ms; the CPU is the whole process's, so with the server on a thread
    of this process it is the client's and the server's work together."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, out


def test_cost_per_reserved_address_call_wall_and_cpu():
    """Client and server in one process: wall and CPU per call (p50 over CALLS), for each reserved-address
    action and, beside them, the ones a static IP's retention costs in the adapter."""
    s = serve(nodes={"node-1": (3, 10_000)})
    try:
        client = s.sdk()
        eni = client.CreateNetworkInterface(request(
            "CreateNetworkInterface", VpcId="vpc-enilab", SubnetId="subnet-a", NetworkInterfaceName="cost",
            Tags=[{"Key": "enilab-node", "Value": "node-1"}])).NetworkInterface.NetworkInterfaceId
        rows: dict[str, list[tuple[float, float]]] = {}

        def measure(name: str, fn):
            wall, cpu, out = wall_and_cpu_ms(fn)
            rows.setdefault(name, []).append((wall, cpu))
            return out

        client.DescribeReserveIpAddresses(request("DescribeReserveIpAddresses"))  # warm
        for _ in range(CALLS):
            ip = client.AssignPrivateIpAddresses(request("AssignPrivateIpAddresses", NetworkInterfaceId=eni,
                                                         SecondaryPrivateIpAddressCount=1)).PrivateIpAddressSet[0]
            ip = ip.PrivateIpAddress
            measure("CreateReserveIpAddresses in place", lambda ip=ip: client.CreateReserveIpAddresses(request(
                "CreateReserveIpAddresses", VpcId="vpc-enilab", IpAddresses=[ip])))
            found = measure("DescribeReserveIpAddresses by address", lambda ip=ip: client.DescribeReserveIpAddresses(
                request("DescribeReserveIpAddresses", Filters=[{"Name": "address-ip", "Values": [ip]}])))
            measure("UnassignPrivateIpAddresses of a reserved address", lambda ip=ip: client.UnassignPrivateIpAddresses(
                request("UnassignPrivateIpAddresses", NetworkInterfaceId=eni,
                        PrivateIpAddresses=[{"PrivateIpAddress": ip}])))
            measure("DeleteReserveIpAddresses (frees it)", lambda found=found: client.DeleteReserveIpAddresses(request(
                "DeleteReserveIpAddresses", VpcId="vpc-enilab",
                ReserveIpIds=[found.ReserveIpAddressSet[0].ReserveIpId])))
            measure("CreateReserveIpAddresses by count", lambda: client.CreateReserveIpAddresses(request(
                "CreateReserveIpAddresses", VpcId="vpc-enilab", SubnetId="subnet-a", IpAddressCount=1)))
    finally:
        s.server.close()
    print(f"\nreserved addresses through the SDK, client and server in one process, p50 over {CALLS} calls:")
    for name, figures in rows.items():
        print(f"  {name}: wall {statistics.median(w for w, _ in figures):.2f} ms, "
              f"CPU {statistics.median(c for _, c in figures):.2f} ms")
    assert all(len(figures) == CALLS for figures in rows.values())


@pytest.mark.parametrize("name", ["grow-and-shrink", "static-ip-retention"])
def test_cost_of_a_scenario_through_the_sdk_against_in_process(name):
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    in_wall, in_cpu, _ = wall_and_cpu_ms(lambda: run_scenario(scenario))
    cloud = TencentCloud()
    try:  # the server's start and each node's client included
        wall, cpu, out = wall_and_cpu_ms(lambda: run_scenario(scenario, node_vpc=cloud))
    finally:
        cloud.close()
    port_calls = sum(1 for e in out["events"] if e["kind"] == "api")
    print(f"\n{name}: in-process {in_wall:.0f} ms wall, {in_cpu:.0f} ms CPU; through the SDK {wall:.0f} ms wall, "
          f"{cpu:.0f} ms CPU for {port_calls} port calls = {cloud.calls} HTTP calls (task polls, lookups and "
          f"reservation describes included): {wall / cloud.calls:.2f} ms wall, {cpu / cloud.calls:.2f} ms CPU per "
          "HTTP call")
    assert cloud.calls >= port_calls
