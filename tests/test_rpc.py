"""The RPC envelope (JSON-RPC 2.0 with enilab's codes) over a real unix socket, without root: typed errors
cross as codes, malformed requests get the specification's errors, and a plain-socket client written
here (not `RpcClient`) sees a compliant answer."""
from __future__ import annotations

import json
import socket

import pytest

from eni_core import rpc
from eni_core.agent import NoFreeIp
from eni_core.ports import InsufficientAddresses, Throttled, TransientError
from eni_core.rpc import RemoteError, RpcClient, RpcServer
from eni_core.vpc_client import VpcClient
from testbed.errors import UsageError
from testbed.world.cluster import ClusterError
from testbed.world.scenario import ScenarioError

RAISES = {
    "usage": UsageError("say how many pods (--count N)"),
    "cluster": ClusterError("unknown node 'node-9'"),
    "scenario": ScenarioError("step 3: unknown action"),
    "value": ValueError("count must be positive"),
    "nofree": NoFreeIp("node node-1 has no idle IP"),
    "quota": InsufficientAddresses("subnet-a has 0 free addresses"),
    "throttled": Throttled("slow down"),
    "bug": KeyError("eni-1"),
}


def handler(method: str, params: dict):
    if method == "echo":
        return params
    if method in RAISES:
        raise RAISES[method]
    raise rpc.MethodNotFound(f"unknown method {method!r}")


@pytest.fixture
def server(tmp_path):
    s = RpcServer(tmp_path / "rpc.sock", handler).start()
    yield s
    s.close()


def raw(server, line: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(server.path))
        sock.sendall(line + b"\n")
        return json.loads(sock.makefile("rb").readline())


@pytest.mark.parametrize("method, code, type_, refused", [
    ("usage", rpc.REFUSED, "UsageError", True),
    ("cluster", rpc.REFUSED, "ClusterError", True),
    ("scenario", rpc.REFUSED, "ScenarioError", True),
    ("value", rpc.INVALID_PARAMS, "ValueError", True),
    ("nofree", rpc.NO_FREE_IP, "NoFreeIp", False),
    ("quota", rpc.VPC_ERROR, "InsufficientAddresses", False),
    ("bug", rpc.INTERNAL_ERROR, "KeyError", False),
    ("nope", rpc.METHOD_NOT_FOUND, "MethodNotFound", True),
])
def test_an_exception_crosses_as_its_code_its_class_name_and_its_one_line_message(server, method, code, type_, refused):
    client = RpcClient(server.path)
    with pytest.raises(RemoteError) as err:
        client.call(method)
    client.close()
    assert (err.value.code, err.value.type, err.value.refused) == (code, type_, refused)
    assert "\n" not in err.value.message and err.value.message


def test_a_result_comes_back_with_the_requests_id(server):
    answer = raw(server, json.dumps({"jsonrpc": "2.0", "id": 41, "method": "echo", "params": {"a": [1]}}).encode())
    assert answer == {"jsonrpc": "2.0", "id": 41, "result": {"a": [1]}}


@pytest.mark.parametrize("line, code", [
    (b"{not json", rpc.PARSE_ERROR),
    (b'{"method": "echo", "params": {}}', rpc.INVALID_REQUEST),  # no "jsonrpc": "2.0"
    (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', rpc.INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "echo", "params": [1, 2]}', rpc.INVALID_REQUEST),
    (b'[1, 2]', rpc.INVALID_REQUEST),
])
def test_a_malformed_request_gets_the_specifications_error_and_the_connection_lives_on(server, line, code):
    answer = raw(server, line)
    assert answer["jsonrpc"] == "2.0" and answer["error"]["code"] == code and "result" not in answer
    assert raw(server, b'{"jsonrpc": "2.0", "id": 2, "method": "echo", "params": {}}')["result"] == {}


def test_the_vpc_client_turns_vpc_codes_back_into_its_error_classes_and_anything_else_into_transient(tmp_path):
    def cloud(method: str, params: dict):
        raise {"describe_subnets": Throttled("slow down"), "describe_enis": ValueError("bad node")}[method]

    s = RpcServer(tmp_path / "vpc.sock", cloud).start()
    try:
        vpc = VpcClient(str(tmp_path / "vpc.sock"))
        with pytest.raises(Throttled):
            vpc.describe_subnets(["subnet-a"])
        with pytest.raises(TransientError):
            vpc.describe_enis("node-1")
    finally:
        s.close()


def test_a_malformed_error_answer_is_a_remote_internal_error_not_a_crash():
    err = RemoteError.from_object({"message": "no code"})
    assert err.code == rpc.INTERNAL_ERROR and "malformed" in err.message
