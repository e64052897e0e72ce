"""The simulated VPC served over HTTP as the Tencent Cloud VPC API 3.0, for the official SDK and any client.

`POST /` with a JSON body and the `X-TC-*` headers, signed with TC3-HMAC-SHA256; every answer is HTTP 200
with `Content-Type: application/json` (the SDK parses errors only then), errors as
`{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`. Bodies are bounded, connections kept alive
(HTTP/1.1), and nothing a client sends gets a 500 or a traceback. A connection that sends nothing for
`REQUEST_TIMEOUT` seconds (a stalled request, an idle keep-alive) is closed, so stalled clients cannot hold
the server's threads. Listens on 127.0.0.1 only.

The actions themselves are in `testbed.world.tencent_actions`.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from eni_core.ports import VpcApi
from testbed.errors import UsageError
from testbed.world.spec import ClusterSpec
from testbed.world.tencent_actions import VERSION, ApiError, DropConnection, VpcService
from testbed.world.vpc import SimVpc

if TYPE_CHECKING:
    from eni_core.tencent import TencentVpc
    from testbed.world.cluster import Cluster

__all__ = ["CLAIMS", "DEFAULT_SECRET_ID", "DEFAULT_SECRET_KEY", "MAX_BODY", "REGION", "REQUEST_TIMEOUT",
           "SIGNATURE_TTL", "TencentCloud", "TencentVpcServer", "serve_topology", "tc3_signature"]

MAX_BODY = 1 << 20
REQUEST_TIMEOUT = 5.0  # seconds a connection may wait for a client's next bytes before it is closed
SIGNATURE_TTL = 300.0  # seconds a signed request stays valid, either side of the server's clock
UNSIGNED = b"UNSIGNED-PAYLOAD"  # X-TC-Content-SHA256 of a request whose body is not signed
DEFAULT_SECRET_ID = "AKIDenilabLocalTestKey000000000000"
DEFAULT_SECRET_KEY = "enilab-local-secret-key"
_AUTH = re.compile(r"^TC3-HMAC-SHA256 Credential=([^/,\s]+)/(\d{4}-\d{2}-\d{2})/([a-z0-9]+)/tc3_request, "
                   r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")
log = logging.getLogger(__name__)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def tc3_signature(secret_key: str, *, method: str, headers: dict[str, str], signed: list[str], body: bytes,
                  timestamp: str, date: str, service: str) -> str:
    """The TC3-HMAC-SHA256 signature of a request (the algorithm of the API's signature v3 documentation). A
    request whose `X-TC-Content-SHA256` is `UNSIGNED-PAYLOAD` (the SDK's `unsignedPayload`) signs that word in
    place of its body."""
    canonical_headers = "".join(f"{h}:{headers.get(h, '').strip().lower()}\n" for h in signed)
    payload = UNSIGNED if headers.get("x-tc-content-sha256") == UNSIGNED.decode() else body
    canonical = "\n".join([method, "/", "", canonical_headers, ";".join(signed), hashlib.sha256(payload).hexdigest()])
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(["TC3-HMAC-SHA256", timestamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _digits(v: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "²", which int() refuses."""
    return v.isascii() and v.isdigit()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says `Connection: close`
    disable_nagle_algorithm = True  # an answer is one small write: do not wait for the client's ACK
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return None

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # each read of the request; StreamRequestHandler applies it
        super().setup()
        with self.server.open_lock:
            self.server.open.add(self.connection)

    def finish(self) -> None:
        with self.server.open_lock:
            self.server.open.discard(self.connection)
        super().finish()

    def _answer(self, response: dict) -> None:
        data = json.dumps({"Response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: ApiError, request_id: str) -> None:
        self._answer({"Error": {"Code": err.code, "Message": err.message}, "RequestId": request_id})

    def do_GET(self) -> None:
        self.close_connection = True
        self._error(ApiError("InvalidParameter", "Send POST / with a JSON body (Content-Type: application/json) "
                                                 "and the X-TC-* headers; GET is not served."), str(uuid.uuid4()))

    def do_POST(self) -> None:
        request_id = str(uuid.uuid4())
        try:
            body = self._read_body()
            action, params = self._authenticate(body)
            response, request_id = self.server.service.handle(action, params, request_id)
        except (DropConnection, TimeoutError):  # an answer lost on purpose, or a body that stalled: none is sent
            self.close_connection = True
            return
        except ApiError as err:
            self._error(err, request_id)
            return
        except Exception:  # a bug of ours must still be an answer in the API's form, never a 500
            log.exception("tencent api: %s", self.headers.get("X-TC-Action"))
            self._error(ApiError("InternalError", "An internal error occurred; the request may be retried."),
                        request_id)
            return
        self._answer({**response, "RequestId": request_id})

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not _digits(length):
            self.close_connection = True
            raise ApiError("InvalidParameter", "The request needs a Content-Length header.")
        if int(length) > MAX_BODY:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise ApiError("RequestSizeLimitExceeded", f"The request body is {length} bytes; at most {MAX_BODY}.")
        return self.rfile.read(int(length))

    def _authenticate(self, body: bytes) -> tuple[str, dict]:
        h = {k.lower(): v for k, v in self.headers.items()}
        for name in ("x-tc-action", "x-tc-version", "x-tc-timestamp", "x-tc-region", "authorization"):
            if not h.get(name):
                raise ApiError("MissingParameter", f"The request is missing the header {name.title()}.")
        auth = _AUTH.match(h["authorization"])
        if auth is None:
            raise ApiError("AuthFailure.InvalidAuthorization",
                           "Authorization is not a TC3-HMAC-SHA256 Credential=.../SignedHeaders=.../Signature=...")
        secret_id, date, service, signed, signature = auth.groups()
        key = self.server.credentials.get(secret_id)
        if key is None:
            raise ApiError("AuthFailure.SecretIdNotFound", f"The SecretId {secret_id} is not found.")
        if not _digits(h["x-tc-timestamp"]):
            raise ApiError("InvalidParameter", "X-TC-Timestamp must be the Unix time in seconds.")
        stamp = int(h["x-tc-timestamp"])
        if abs(time.time() - stamp) > SIGNATURE_TTL:
            raise ApiError("AuthFailure.SignatureExpire", "The signature expired: the timestamp and the server's "
                                                          "time differ by more than five minutes.")
        names = signed.split(";")
        expected = tc3_signature(key, method="POST", headers=h, signed=names, body=body, timestamp=h["x-tc-timestamp"],
                                 date=date, service=service)
        if (service != "vpc" or "content-type" not in names or "host" not in names
                or date != datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")
                or not hmac.compare_digest(expected, signature)):
            raise ApiError("AuthFailure.SignatureFailure", "The provided credentials could not be validated. Please "
                                                           "check your signature is correct.")
        if h["x-tc-version"] != VERSION:
            raise ApiError("NoSuchVersion", f"Version {h['x-tc-version']} is not served; the VPC API is {VERSION}.")
        if h.get("content-type", "").split(";")[0].strip() != "application/json":
            raise ApiError("InvalidParameter", "Content-Type must be application/json.")
        try:
            params = json.loads(body) if body else {}
        except (ValueError, UnicodeDecodeError):
            raise ApiError("InvalidParameter", "The request body is not valid JSON.") from None
        except RecursionError:
            raise ApiError("InvalidParameter", "The request body is JSON nested too deeply.") from None
        if not isinstance(params, dict):
            raise ApiError("InvalidParameter", "The request body must be a JSON object of parameters.")
        return h["x-tc-action"], params


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    service: VpcService
    credentials: dict[str, str]
    request_timeout: float

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.open: set[socket.socket] = set()  # kept-alive connections, closed with the server
        self.open_lock = threading.Lock()

    def close_connections(self) -> None:
        with self.open_lock:
            for conn in self.open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (a killed agent) ends its connection quietly; anything else is logged."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.exception("tencent api: connection from %s", client_address)


class TencentVpcServer:
    """Serve `vpc` on 127.0.0.1:`port` (0: any free port) of the calling thread's network namespace. Calls
    are serialised with `lock` (share it with in-process users of `vpc`); tasks run on `now`, the VPC's
    clock. Servers given the same `service` are one API (its tasks and tokens) on several sockets. A connection
    silent for `request_timeout` seconds is closed."""

    def __init__(self, vpc: SimVpc, *, port: int = 0, now: Callable[[], float] = time.monotonic,
                 lock: threading.RLock | None = None, credentials: dict[str, str] | None = None,
                 service: VpcService | None = None, request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.service = service or VpcService(vpc, now=now, lock=lock)
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.service = self.service
        self._httpd.credentials = dict(credentials or {DEFAULT_SECRET_ID: DEFAULT_SECRET_KEY})
        self._httpd.request_timeout = request_timeout
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def endpoint(self) -> str:
        """host:port, as the SDK's HttpProfile(endpoint=...) wants it."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> TencentVpcServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="tencent-vpc-api",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        """Stop listening and end every open connection (a client sees the cloud go away)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()
        self._httpd.close_connections()


REGION = "ap-enilab"
CLAIMS = "claims"  # the adapter of the cluster-level static-IP pool (reclaim and expiry), beside the nodes'


class TencentCloud:
    """`Cluster(node_vpc=TencentCloud())`: the cluster's VPC served over HTTP on an ephemeral port (started
    with the first node), each node's ipamd talking to it through the official SDK. The server runs on the
    cluster's clock, so tasks and faults follow simulated time exactly as in-process. In static-IP mode the
    cluster-level pool of claims (reclaim by hand, by cascade, by expiry) goes through the SDK as well, as
    `adapters["claims"]`. `close()` stops the server."""

    def __init__(self) -> None:
        self.server: TencentVpcServer | None = None
        self.adapters: dict[str, TencentVpc] = {}

    def __call__(self, cluster: Cluster, node: str) -> VpcApi:
        if self.server is None:
            self.server = TencentVpcServer(cluster.vpc, now=cluster.clock.now).start()
            if cluster.static is not None:
                cluster.static.vpc = self._adapter(cluster, CLAIMS, self.server.endpoint)
        return self._adapter(cluster, node, self.server.endpoint)

    def _adapter(self, cluster: Cluster, name: str, endpoint: str) -> TencentVpc:
        from eni_core.tencent import TencentVpc

        self.adapters[name] = TencentVpc(endpoint, REGION, secret_id=DEFAULT_SECRET_ID,
                                         secret_key=DEFAULT_SECRET_KEY, clock=cluster.clock, protocol="http",
                                         static_ips=cluster.static is not None)
        return self.adapters[name]

    @property
    def calls(self) -> int:
        """HTTP calls the nodes made (task polls and lookups included)."""
        return sum(a.calls for a in self.adapters.values())

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def serve_topology(spec: ClusterSpec, *, port: int = 0, credentials: dict[str, str] | None = None) -> TencentVpcServer:
    """A topology's VPC (subnets, hosts, every node as an instance with its quotas, faults) served on the wall
    clock; not started."""
    vpc = SimVpc(spec.subnets, seed=spec.seed, faults=spec.faults, now=time.monotonic, sleep=time.sleep)
    for node in spec.nodes:
        vpc.add_instance(node.name, node.max_enis, node.ips_per_eni)
    for host in spec.hosts:
        vpc.add_host(host.name, host.subnet, host.ip)
    try:
        return TencentVpcServer(vpc, port=port, credentials=credentials)
    except OSError as err:
        raise UsageError(f"cannot listen on 127.0.0.1:{port} ({err.strerror}); pick another --port, or 0 for any "
                         "free one") from None
