"""A served VPC and clients for it: the official SDK, the SDK's generic client, and raw HTTP."""
from __future__ import annotations

import http.client
import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Network
from urllib.parse import urlencode

from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vpc.v20170312 import models, vpc_client

from eni_core.model import Subnet
from testbed.world.tencent_api import (
    DEFAULT_SECRET_ID,
    DEFAULT_SECRET_KEY,
    TencentVpcServer,
    tc3_signature,
    v1_signature,
)
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
            keep_alive: bool = True, sign: str | None = None, method: str = "POST") -> vpc_client.VpcClient:
        """The SDK's VPC client; `sign` (HmacSHA1, HmacSHA256; None: TC3-HMAC-SHA256) and `method` (POST, GET)
        pick the shape of its requests."""
        http = HttpProfile(endpoint=self.server.endpoint, protocol="http", reqMethod=method, keepAlive=keep_alive)
        return vpc_client.VpcClient(credential.Credential(secret_id, secret_key), REGION,
                                    ClientProfile(signMethod=sign, httpProfile=http, disable_region_breaker=True))

    def common(self, sign: str | None = None, method: str = "POST") -> CommonClient:
        """The SDK's generic client: any action name, any parameters (what a buggy caller can send)."""
        http = HttpProfile(endpoint=self.server.endpoint, protocol="http", reqMethod=method)
        return CommonClient("vpc", "2017-03-12", credential.Credential(DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY),
                            REGION, ClientProfile(signMethod=sign, httpProfile=http, disable_region_breaker=True))

    def raw(self, body: bytes, *, action: str = "DescribeSubnets", headers: dict | None = None, sign: bool = True,
            timestamp: int | None = None, method: str = "POST", query: str = "") -> tuple[int, dict, dict]:
        """One hand-made request, its headers overridden by `headers` (None drops one), then signed with the
        server's own signer unless `sign` is False: (HTTP status, headers, JSON body). A GET signs `query`."""
        stamp = int(time.time()) if timestamp is None else timestamp
        h = {"Content-Type": "application/json", "Host": self.server.endpoint, "X-TC-Action": action,
             "X-TC-Version": "2017-03-12", "X-TC-Timestamp": str(stamp), "X-TC-Region": REGION}
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        if sign and "Authorization" not in h:
            h["Authorization"] = authorization(self.server.endpoint, body, stamp, h["Content-Type"], method, query)
        return self.send(method, "/?" + query if query else "/", body, h)

    def v1(self, fields: list[tuple[str, str]], *, action: str = "DescribeSubnets", method: str = "POST",
           common: dict | None = None, secret_key: str = DEFAULT_SECRET_KEY) -> tuple[int, dict, dict]:
        """One hand-made request signed with signature v1 (HmacSHA256 unless `common` says otherwise): the
        action's flattened `fields` and the common parameters, overridden by `common` (None drops one), as a
        form body (POST) or a query string (GET)."""
        params = {"Action": action, "Version": "2017-03-12", "Region": REGION, "Timestamp": str(int(time.time())),
                  "Nonce": str(random.randint(1, 1 << 31)), "SecretId": DEFAULT_SECRET_ID,
                  "SignatureMethod": "HmacSHA256", **(common or {})}
        signed = [(k, v) for k, v in [*fields, *params.items()] if v is not None]
        if "Signature" not in params:
            signed.append(("Signature", v1_signature(secret_key, method=method, host=self.server.endpoint, path="/",
                                                     params=signed, signature_method=method_of(params))))
        form = urlencode([(k, v) for k, v in signed if v is not None])
        headers = {"Host": self.server.endpoint, "Content-Type": "application/x-www-form-urlencoded"}
        if method == "GET":
            return self.send("GET", f"/?{form}", b"", headers)
        return self.send("POST", "/", form.encode(), headers)

    def send(self, method: str, target: str, body: bytes, headers: dict) -> tuple[int, dict, dict]:
        """`method target` with `body` and `headers`, as they are: (HTTP status, headers, JSON body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            conn.request(method, target, body=body if body or method == "POST" else None, headers=headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), json.loads(resp.read())
        finally:
            conn.close()


def method_of(params: dict) -> str:
    """The HMAC a signature v1 is made with: HmacSHA1 unless SignatureMethod says HmacSHA256 (one the server
    does not serve is signed with HmacSHA256, for the server to refuse)."""
    return "HmacSHA1" if params.get("SignatureMethod") in (None, "HmacSHA1") else "HmacSHA256"


def authorization(endpoint: str, body: bytes, stamp: int, content_type: str = "application/json",
                  method: str = "POST", query: str = "") -> str:
    date = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")
    sig = tc3_signature(DEFAULT_SECRET_KEY, method=method, headers={"content-type": content_type, "host": endpoint},
                        signed=["content-type", "host"], body=body, timestamp=str(stamp), date=date, service="vpc",
                        query=query)
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
