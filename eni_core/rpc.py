"""JSON-RPC 2.0 over a unix socket, one message per line.

Used between the CNI executable and the node agent, between node agents and the cloud endpoint, and
between `enilab` and a cluster's controller. A request is `{"jsonrpc": "2.0", "id": N, "method": M,
"params": {...}}`; an answer `{"jsonrpc": "2.0", "id": N, "result": R}` or
`{"jsonrpc": "2.0", "id": N, "error": {"code": C, "message": S, "data": {"type": T}}}`. Codes below 0
are the specification's; the positive ones are enilab's (`REFUSED`, `NO_FREE_IP`, `VPC_ERROR`). An
exception says its own code with an `rpc_code` attribute; `data.type` names its class. A socket is 0600
whatever the umask: only its owner may call.

Examples
--------
>>> error_object(ValueError("count must be positive"))
{'code': -32602, 'message': 'count must be positive', 'data': {'type': 'ValueError'}}
>>> err = RemoteError.from_object({"code": 1, "message": "no such pod", "data": {"type": "UsageError"}})
>>> (err.code, err.type, err.refused)
(1, 'UsageError', True)
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eni_core.private import FILE_MODE

__all__ = [
    "INTERNAL_ERROR", "INVALID_PARAMS", "INVALID_REQUEST", "METHOD_NOT_FOUND", "NO_FREE_IP", "PARSE_ERROR",
    "REFUSED", "VPC_ERROR", "MethodNotFound", "NoAnswer", "RemoteError", "RpcClient", "RpcServer",
    "Unreachable", "error_object",
]

Handler = Callable[[str, dict[str, Any]], Any]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REFUSED = 1  # the request cannot be carried out as asked (the caller's mistake); the message says what to do
NO_FREE_IP = 2  # the node has no idle IP for a pod
VPC_ERROR = 3  # the cloud API refused; data.type names the VpcError


class MethodNotFound(Exception):
    rpc_code = METHOD_NOT_FOUND


def error_object(err: BaseException) -> dict[str, Any]:
    """The JSON-RPC error object of an exception: its `rpc_code`, else INVALID_PARAMS for a ValueError or
    TypeError (a parameter the handler refused), else INTERNAL_ERROR."""
    code = getattr(err, "rpc_code", None)
    if code is None:
        code = INVALID_PARAMS if isinstance(err, (ValueError, TypeError)) else INTERNAL_ERROR
    return {"code": int(code), "message": str(getattr(err, "message", None) or err),
            "data": {"type": type(err).__name__}}


class RemoteError(Exception):
    """An error the other side answered with: a JSON-RPC `code`, its `message`, and `type`, the name of
    its class there."""

    def __init__(self, code: int, message: str, type_: str = "") -> None:
        super().__init__(f"{type_ or 'error ' + str(code)}: {message}")
        self.code, self.message, self.type = code, message, type_

    @classmethod
    def from_object(cls, error: object) -> RemoteError:
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            return cls(INTERNAL_ERROR, f"a malformed error answer: {str(error)[:200]}")
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        return cls(error["code"], str(error.get("message", "")), str(data.get("type", "")))

    @property
    def refused(self) -> bool:
        """The other side refused the request as asked (a caller's mistake), rather than failing."""
        return self.code in (REFUSED, INVALID_PARAMS, METHOD_NOT_FOUND)


def _answer(line: bytes, handler: Handler) -> dict[str, Any]:
    """One request line to its answer; every failure becomes an error answer."""
    try:
        req = json.loads(line)
    except ValueError as err:
        return {"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": f"not JSON: {err}"}}
    ident = req.get("id") if isinstance(req, dict) else None
    if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(req.get("method"), str) \
            or not isinstance(req.get("params", {}), dict):
        return {"jsonrpc": "2.0", "id": ident, "error": {
            "code": INVALID_REQUEST, "message": "a request is {\"jsonrpc\": \"2.0\", \"id\": ..., \"method\": "
                                               "NAME, \"params\": {...}}"}}
    try:
        return {"jsonrpc": "2.0", "id": ident, "result": handler(req["method"], req.get("params") or {})}
    except Exception as err:  # every failure becomes an answer, never a dead connection
        return {"jsonrpc": "2.0", "id": ident, "error": error_object(err)}


class Unreachable(ConnectionError):
    """The server is not there, or went away before it answered (its process was killed, say)."""


class NoAnswer(TimeoutError):
    """The server took longer than the client's timeout to answer."""


SOCKET_PATH_MAX = 107  # bytes of a unix socket's path the kernel takes (sun_path, less its NUL)


class SocketPathTooLong(ValueError):
    """A unix socket's path longer than the kernel takes; the message says how long and what to do."""


def check_socket_path(path: str | os.PathLike[str]) -> None:
    """SocketPathTooLong unless the kernel can bind a unix socket at `path`. The check comes before anything
    is made: bind() would refuse it only once the server's folder and state exist."""
    size = len(os.fsencode(path))
    if size > SOCKET_PATH_MAX:
        raise SocketPathTooLong(f"the unix socket {os.fsdecode(path)[:60]}... would have a path of {size} bytes; "
                                f"the kernel takes at most {SOCKET_PATH_MAX}: use shorter names, or a shorter "
                                "ENILAB_RUN_DIR")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


class RpcServer:
    """Serve `handler(method, params)` on a unix socket, each connection in a thread."""

    def __init__(self, path: str | os.PathLike[str], handler: Handler) -> None:
        check_socket_path(path)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        outer = handler

        class _Conn(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    for line in self.rfile:
                        answer = _answer(line, outer)
                        self.wfile.write(json.dumps(answer).encode() + b"\n")
                        self.wfile.flush()
                except (ConnectionError, BrokenPipeError):
                    return  # the client went away (a killed agent, say): nothing to answer

        self._server = _Server(str(self.path), _Conn)
        os.chmod(self.path, FILE_MODE)  # bind() made it 0777 minus the umask, which may be 000
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"rpc:{self.path.name}", daemon=True)

    def start(self) -> RpcServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, forever if it never started
            self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)


class RpcClient:
    """A connection to an `RpcServer`; reconnects once if the server restarted. When the server cannot be
    reached or goes away before answering, `call` raises `Unreachable` naming `peer`; when it does not
    answer in `timeout` seconds, `NoAnswer`."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 30.0, peer: str | None = None) -> None:
        self.path = str(path)
        self.timeout = timeout
        self.peer = peer or f"the server at {self.path}"
        self._sock: socket.socket | None = None
        self._file = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self._sock, self._file = sock, sock.makefile("rwb")

    def call(self, method: str, **params: Any) -> Any:
        ident = next(self._ids)
        line = json.dumps({"jsonrpc": "2.0", "id": ident, "method": method, "params": params}).encode() + b"\n"
        with self._lock:
            sent = False  # once the request may have reached the server, a failure is "went away", not "cannot reach"
            for attempt in (1, 2):
                try:
                    if self._sock is None:
                        self._connect()
                    self._file.write(line)
                    self._file.flush()
                    sent = True
                    reply = self._file.readline()
                    if not reply:
                        raise ConnectionResetError("the connection closed")
                    break
                except TimeoutError:
                    self.close()
                    raise NoAnswer(f"{self.peer} did not answer in {self.timeout:g} s") from None
                except OSError as err:
                    self.close()
                    if attempt == 2:
                        why = err.strerror or str(err)
                        raise Unreachable(f"{self.peer} went away before answering ({why})" if sent
                                          else f"cannot reach {self.peer} ({why})") from None
        answer = json.loads(reply)
        if "error" in answer:
            raise RemoteError.from_object(answer["error"])
        if answer.get("id") != ident:
            raise RemoteError(INTERNAL_ERROR, f"the answer is to request {answer.get('id')!r}, not {ident}")
        return answer["result"]

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._file.close()
                self._sock.close()
            finally:
                self._sock = self._file = None
