"""The simulated VPC served over HTTP as the Tencent Cloud VPC API 3.0, for the official SDK and any client.

Served in every shape the SDK sends:

- TC3-HMAC-SHA256 (its default): the `X-TC-*` headers and `Authorization`, with `POST /` and a JSON body, or
  with `GET /?...` and the parameters flattened into the query string (`Filters.0.Values.0=...`, Content-Type
  application/x-www-form-urlencoded), its canonical query string signed and its payload empty;
- signature v1 (`HmacSHA1`, `HmacSHA256`): every parameter flattened, with Action, Version, Region,
  Timestamp, Nonce, SecretId, SignatureMethod and Signature, in a form body (`POST /`) or the query string
  (`GET /?...`), signed over the method, host, path and the sorted `k=v` pairs.

A flattened request's strings are turned back into the objects and lists of its JSON twin and typed by the
action's own table (`tencent_actions.from_form`), so both get the same answers and the same errors; hostile
forms (gapped or huge indexes, thousands of keys, a key both a value and a parent, bad encodings) are
`InvalidParameter` (`tencent_form`). Every answer is HTTP 200 with `Content-Type: application/json` (the SDK
parses errors only then), errors as `{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`, what
http.server itself refuses (a request line past 64 KiB) included. Bodies and query strings are bounded,
connections kept alive
(HTTP/1.1), and nothing a client sends gets a 500 or a traceback. A connection that sends nothing for
`REQUEST_TIMEOUT` seconds (a stalled request, an idle keep-alive) is closed, so stalled clients cannot hold
the server's threads. Listens on 127.0.0.1 only.

The actions themselves are in `testbed.world.tencent_actions`.
"""
from __future__ import annotations

import base64
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
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from eni_core.ports import VpcApi
from testbed.errors import UsageError
from testbed.world.spec import ClusterSpec
from testbed.world.tencent_actions import VERSION, ApiError, DropConnection, VpcService
from testbed.world.tencent_form import nest, pairs
from testbed.world.vpc import SimVpc

if TYPE_CHECKING:
    from eni_core.tencent import TencentVpc
    from testbed.world.cluster import Cluster

__all__ = ["CLAIMS", "DEFAULT_SECRET_ID", "DEFAULT_SECRET_KEY", "MAX_BODY", "MAX_QUERY", "REGION",
           "REQUEST_TIMEOUT", "SIGNATURE_TTL", "TencentCloud", "TencentVpcServer", "serve_topology", "tc3_signature",
           "v1_signature"]

MAX_BODY = 1 << 20
MAX_QUERY = 1 << 15  # characters of a query string; http.server refuses a request line past 64 KiB before us
REQUEST_TIMEOUT = 5.0  # seconds a connection may wait for a client's next bytes before it is closed
SIGNATURE_TTL = 300.0  # seconds a signed request stays valid, either side of the server's clock
UNSIGNED = b"UNSIGNED-PAYLOAD"  # X-TC-Content-SHA256 of a request whose body is not signed
DEFAULT_SECRET_ID = "AKIDenilabLocalTestKey000000000000"
DEFAULT_SECRET_KEY = "enilab-local-secret-key"
_AUTH = re.compile(r"^TC3-HMAC-SHA256 Credential=([^/,\s]+)/(\d{4}-\d{2}-\d{2})/([a-z0-9]+)/tc3_request, "
                   r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")
JSON, FORM = "application/json", "application/x-www-form-urlencoded"
V1_METHODS = {"HmacSHA1": hashlib.sha1, "HmacSHA256": hashlib.sha256}  # signature v1's SignatureMethod
V1_REQUIRED = ("Action", "Version", "Region", "Timestamp", "Nonce", "SecretId", "Signature")
V1_COMMON = {*V1_REQUIRED, "SignatureMethod", "Token", "Language", "RequestClient"}  # not the action's parameters
log = logging.getLogger(__name__)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def tc3_signature(secret_key: str, *, method: str, headers: dict[str, str], signed: list[str], body: bytes,
                  timestamp: str, date: str, service: str, query: str = "") -> str:
    """The TC3-HMAC-SHA256 signature of a request (the algorithm of the API's signature v3 documentation):
    `query` is a GET's query string as sent, `body` a POST's. A request whose `X-TC-Content-SHA256` is
    `UNSIGNED-PAYLOAD` (the SDK's `unsignedPayload`) signs that word in place of its body."""
    canonical_headers = "".join(f"{h}:{headers.get(h, '').strip().lower()}\n" for h in signed)
    payload = UNSIGNED if headers.get("x-tc-content-sha256") == UNSIGNED.decode() else body
    canonical = "\n".join([method, "/", query, canonical_headers, ";".join(signed),
                           hashlib.sha256(payload).hexdigest()])
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(["TC3-HMAC-SHA256", timestamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def v1_signature(secret_key: str, *, method: str, host: str, path: str, params: list[tuple[str, str]],
                 signature_method: str) -> str:
    """The signature v1 of a request (HmacSHA1 or HmacSHA256): the base64 HMAC of method, host, path, "?" and
    its parameters but `Signature` as `k=v` joined by `&`, sorted by key, values as they are (not URL-encoded),
    each `_` of a key read as `.`."""
    text = "&".join(f"{k}={v}" for k, v in sorted((k.replace("_", "."), v) for k, v in params))
    mac = hmac.new(secret_key.encode(), f"{method}{host}{path}?{text}".encode(), V1_METHODS[signature_method])
    return base64.b64encode(mac.digest()).decode()


def _digits(v: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "²", which int() refuses."""
    return v.isascii() and v.isdigit()


def _expired(timestamp: str, name: str) -> None:
    """Refuse a timestamp that is not Unix seconds (a few digits: int() refuses thousands) or is more than
    SIGNATURE_TTL from the server's clock."""
    if not _digits(timestamp) or len(timestamp) > 12:
        raise ApiError("InvalidParameter", f"{name} must be the Unix time in seconds.")
    if abs(time.time() - int(timestamp)) > SIGNATURE_TTL:
        raise ApiError("AuthFailure.SignatureExpire", "The signature expired: the timestamp and the server's "
                                                      "time differ by more than five minutes.")


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

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What http.server refuses before a handler runs (a request line past 64 KiB, headers too many or too
        long, a method not served, a malformed request line) is answered in the API's form too, then closed."""
        self.close_connection = True
        size = code in (HTTPStatus.REQUEST_URI_TOO_LONG, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        reason = message or self.responses.get(code, ("",))[0]
        self._error(ApiError("RequestSizeLimitExceeded" if size else "InvalidParameter",
                             f"{reason}. Send POST / or GET /?... with the parameters signed."), str(uuid.uuid4()))

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        request_id = str(uuid.uuid4())
        try:
            body = self._read_body(method)
            action, params, form = self._authenticate(method, body)
            response, request_id = self.server.service.handle(action, params, request_id, form=form)
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

    def _read_body(self, method: str) -> bytes:
        length = self.headers.get("Content-Length")
        if method == "GET" and length is None:
            if self.headers.get("Transfer-Encoding") is not None:
                self.close_connection = True  # a body we do not read: the connection cannot be reused
                raise ApiError("InvalidParameter", "A GET carries its parameters in the query string, no body.")
            return b""
        if length is None or not _digits(length):
            self.close_connection = True
            raise ApiError("InvalidParameter", "The request needs a Content-Length header.")
        if int(length) > MAX_BODY:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise ApiError("RequestSizeLimitExceeded", f"The request body is {length} bytes; at most {MAX_BODY}.")
        return self.rfile.read(int(length))

    def _authenticate(self, method: str, body: bytes) -> tuple[str, dict, bool]:
        """(action, parameters, whether they are a form's strings) of a request signed in any shape the SDK
        sends: TC3-HMAC-SHA256 headers with a JSON body (POST) or a query string (GET), or signature v1
        parameters in a form body (POST) or a query string (GET)."""
        h = {k.lower(): v for k, v in self.headers.items()}
        path, _, query = self.path.partition("?")
        if len(query) > MAX_QUERY:
            raise ApiError("RequestSizeLimitExceeded", f"The query string is {len(query)} characters; at most "
                                                       f"{MAX_QUERY}.")
        if method == "GET" and body:
            raise ApiError("InvalidParameter", "A GET carries its parameters in the query string, no body.")
        content_type = h.get("content-type", "").split(";")[0].strip()
        if "authorization" in h or "x-tc-action" in h or (method == "POST" and content_type != FORM):
            return self._authenticate_tc3(method, h, query, body, content_type)
        return self._authenticate_v1(method, h, path, query.encode("latin-1") if method == "GET" else body)

    def _authenticate_tc3(self, method: str, h: dict[str, str], query: str, body: bytes,
                          content_type: str) -> tuple[str, dict, bool]:
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
        _expired(h["x-tc-timestamp"], "X-TC-Timestamp")
        stamp = int(h["x-tc-timestamp"])
        names = signed.split(";")
        expected = tc3_signature(key, method=method, headers=h, signed=names, body=body, timestamp=h["x-tc-timestamp"],
                                 date=date, service=service, query=query if method == "GET" else "")
        if (service != "vpc" or "content-type" not in names or "host" not in names
                or date != datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")
                or not hmac.compare_digest(expected, signature)):
            raise ApiError("AuthFailure.SignatureFailure", "The provided credentials could not be validated. Please "
                                                           "check your signature is correct.")
        if h["x-tc-version"] != VERSION:
            raise ApiError("NoSuchVersion", f"Version {h['x-tc-version']} is not served; the VPC API is {VERSION}.")
        wanted = FORM if method == "GET" else JSON
        if content_type != wanted:
            raise ApiError("InvalidParameter", f"Content-Type must be {wanted} for a {method}.")
        if method == "GET":
            return h["x-tc-action"], nest(pairs(query.encode("latin-1"), "query string")), True
        try:
            params = json.loads(body) if body else {}
        except (ValueError, UnicodeDecodeError):
            raise ApiError("InvalidParameter", "The request body is not valid JSON.") from None
        except RecursionError:
            raise ApiError("InvalidParameter", "The request body is JSON nested too deeply.") from None
        if not isinstance(params, dict):
            raise ApiError("InvalidParameter", "The request body must be a JSON object of parameters.")
        return h["x-tc-action"], params, False

    def _authenticate_v1(self, method: str, h: dict[str, str], path: str, raw: bytes) -> tuple[str, dict, bool]:
        fields = pairs(raw, "query string" if method == "GET" else "request body")
        common = {k: v for k, v in fields if k in V1_COMMON}
        for name in V1_REQUIRED:
            if not common.get(name):
                raise ApiError("MissingParameter", f"The request is missing the parameter {name}. Sign it with "
                                                   "TC3-HMAC-SHA256 (the Authorization and X-TC-* headers) or with "
                                                   f"signature v1 (the parameters {', '.join(V1_REQUIRED)}).")
        signature_method = common.get("SignatureMethod", "HmacSHA1")
        if signature_method not in V1_METHODS:
            raise ApiError("InvalidParameterValue", f"SignatureMethod {signature_method!r} is not served: use "
                                                    "HmacSHA1 or HmacSHA256, or TC3-HMAC-SHA256 in the headers.")
        key = self.server.credentials.get(common["SecretId"])
        if key is None:
            raise ApiError("AuthFailure.SecretIdNotFound", f"The SecretId {common['SecretId']} is not found.")
        _expired(common["Timestamp"], "Timestamp")
        if not _digits(common["Nonce"]):
            raise ApiError("InvalidParameter", "Nonce must be a positive integer.")
        expected = v1_signature(key, method=method, host=h.get("host", ""), path=path,
                                params=[(k, v) for k, v in fields if k != "Signature"],
                                signature_method=signature_method)
        if not hmac.compare_digest(expected.encode(), common["Signature"].encode()):
            raise ApiError("AuthFailure.SignatureFailure", "The provided credentials could not be validated. Please "
                                                           "check your signature is correct.")
        if common["Version"] != VERSION:
            raise ApiError("NoSuchVersion", f"Version {common['Version']} is not served; the VPC API is {VERSION}.")
        return common["Action"], nest([(k, v) for k, v in fields if k not in V1_COMMON]), True


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
