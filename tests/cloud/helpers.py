"""A served VPC and clients for it: the official SDK, the SDK's generic client, and raw HTTP."""
from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Network

from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vpc.v20170312 import models, vpc_client

from eni_core.model import Subnet
from testbed.world.tencent_api import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, TencentVpcServer, tc3_signature
from testbed.world.vpc import FaultConfig, SimVpc

REGION = "ap-guangzhou"


class FakeClock:
    """A clock whose sleep moves it (so task polling can be watched without waiting)."""

    def __init__(self) -> None:
        self.t = 1_000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@dataclass
class Served:
    vpc: SimVpc
    server: TencentVpcServer
    clock: FakeClock

    def sdk(self, secret_id: str = DEFAULT_SECRET_ID, secret_key: str = DEFAULT_SECRET_KEY,
            keep_alive: bool = True) -> vpc_client.VpcClient:
        http = HttpProfile(endpoint=self.server.endpoint, protocol="http", reqMethod="POST", keepAlive=keep_alive)
        return vpc_client.VpcClient(credential.Credential(secret_id, secret_key), REGION,
                                    ClientProfile(httpProfile=http, disable_region_breaker=True))

    def common(self) -> CommonClient:
        """The SDK's generic client: any action name, any parameters (what a buggy caller can send)."""
        http = HttpProfile(endpoint=self.server.endpoint, protocol="http", reqMethod="POST")
        return CommonClient("vpc", "2017-03-12", credential.Credential(DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY),
                            REGION, ClientProfile(httpProfile=http, disable_region_breaker=True))

    def raw(self, body: bytes, *, action: str = "DescribeSubnets", headers: dict | None = None, sign: bool = True,
            timestamp: int | None = None, method: str = "POST") -> tuple[int, dict, dict]:
        """One hand-made request, its headers overridden by `headers` (None drops one), then signed with the
        server's own signer unless `sign` is False: (HTTP status, headers, JSON body)."""
        stamp = int(time.time()) if timestamp is None else timestamp
        h = {"Content-Type": "application/json", "Host": self.server.endpoint, "X-TC-Action": action,
             "X-TC-Version": "2017-03-12", "X-TC-Timestamp": str(stamp), "X-TC-Region": REGION}
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        if sign and "Authorization" not in h:
            h["Authorization"] = authorization(self.server.endpoint, body, stamp, h["Content-Type"])
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            conn.request(method, "/", body=body, headers=h)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), json.loads(resp.read())
        finally:
            conn.close()


def authorization(endpoint: str, body: bytes, stamp: int, content_type: str = "application/json") -> str:
    date = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")
    sig = tc3_signature(DEFAULT_SECRET_KEY, method="POST", headers={"content-type": content_type, "host": endpoint},
                        signed=["content-type", "host"], body=body, timestamp=str(stamp), date=date, service="vpc")
    return (f"TC3-HMAC-SHA256 Credential={DEFAULT_SECRET_ID}/{date}/vpc/tc3_request, "
            f"SignedHeaders=content-type;host, Signature={sig}")


def serve(*, nodes: dict[str, tuple[int, int]] | None = None, subnets: tuple[Subnet, ...] | None = None,
          faults: FaultConfig | None = None, **server: object) -> Served:
    clock = FakeClock()
    vpc = SimVpc(subnets or (Subnet("subnet-a", IPv4Network("10.0.1.0/24")),
                             Subnet("subnet-b", IPv4Network("10.0.2.0/28"))), faults=faults, now=clock.now)
    for name, (max_enis, ips) in (nodes or {"node-1": (3, 4)}).items():
        vpc.add_instance(name, max_enis, ips)
    return Served(vpc, TencentVpcServer(vpc, now=clock.now, **server).start(), clock)  # type: ignore[arg-type]


def request(kind: str, **params) -> object:
    """An SDK request model filled from keyword parameters."""
    req = getattr(models, f"{kind}Request")()
    req.from_json_string(json.dumps(params))
    return req


def error_code(fn, *args, **kw) -> str:
    try:
        fn(*args, **kw)
    except TencentCloudSDKException as err:
        return err.get_code()
    raise AssertionError("no error")
