"""JSON-lines RPC over a unix socket: one request per line, one answer per line.

Used between the CNI executable and the node agent, and between node agents and the cloud endpoint.
A request is `{"method": M, "params": {...}}`; an answer `{"result": R}` or
`{"error": {"type": T, "message": S}}`. A socket is 0600 whatever the umask: only its owner may call.
"""
from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eni_core.private import FILE_MODE

__all__ = ["NoAnswer", "RemoteError", "RpcClient", "RpcServer", "Unreachable"]

Handler = Callable[[str, dict[str, Any]], Any]


class RemoteError(Exception):
    """An error the other side answered with: `type` names its class there."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.message = message


class Unreachable(ConnectionError):
    """The server is not there, or went away before it answered (its process was killed, say)."""


class NoAnswer(TimeoutError):
    """The server took longer than the client's timeout to answer."""


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


class RpcServer:
    """Serve `handler(method, params)` on a unix socket, each connection in a thread."""

    def __init__(self, path: str | os.PathLike[str], handler: Handler) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        outer = handler

        class _Conn(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    for line in self.rfile:
                        try:
                            req = json.loads(line)
                            answer = {"result": outer(req["method"], req.get("params") or {})}
                        except Exception as err:  # every failure becomes an answer, never a dead connection
                            answer = {"error": {"type": type(err).__name__,
                                                "message": getattr(err, "message", str(err))}}
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
        line = json.dumps({"method": method, "params": params}).encode() + b"\n"
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
            raise RemoteError(answer["error"]["type"], answer["error"]["message"])
        return answer["result"]

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._file.close()
                self._sock.close()
            finally:
                self._sock = self._file = None
