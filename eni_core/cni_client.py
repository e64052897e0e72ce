"""`enilab-cni`, the CNI plugin executable: a thin client that hands each request to its node's agent.

A runtime runs it with the CNI_* environment and the network configuration on stdin, from wherever the
runtime lives (usually the host's namespace). It imports only os, sys and the C halves of json and
socket (`_json`, `_socket`: the pure-Python modules and what they pull in, `re` and `enum`, cost more to
import than the rest of the run), so that `python -IS` starts it in a few milliseconds. The node agent
(running in the node's namespace) parses the request, enters CNI_NETNS on its own thread and does the
netlink work. The agent is found by the netconf's `cluster` (default: the only cluster that is up) and
`node`, or by an explicit `agentSocket` (a standalone `enilab-agent`).

This file is also installed on its own (`enilab cni install DIR`): it must not import from the project.
"""
import _json
import _socket
import os
import sys

SUPPORTED_VERSIONS = ("1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
# the spec's error codes, and ours (from 100)
INCOMPATIBLE_VERSION, UNSUPPORTED_FIELD, UNKNOWN_CONTAINER, INVALID_ENV, IO_FAILURE = 1, 2, 3, 4, 5
DECODE_FAILURE, INVALID_CONFIG, TRY_AGAIN, PLUGIN_NOT_AVAILABLE = 6, 7, 11, 50
CHECK_FAILED, AGENT_FAILED = 100, 101
DEFAULT_ERROR_VERSION = SUPPORTED_VERSIONS[0]  # what libcni 1.1 (podman 4.3) can read
CNI_ENV = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
AGENT_TIMEOUT = 60.0


class _Scanning:
    """What `_json.make_scanner` reads: the settings of `json.loads` with no hooks."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float = parse_constant = float
    parse_int = int


_scan = _json.make_scanner(_Scanning())


def loads(text: str) -> object:
    """`json.loads` for one document, by the C scanner. Bad input is rare: then the json module (slow to
    import, and what the C scanner itself leans on for its messages) says what is wrong."""
    stripped = text.strip()
    try:
        document, end = _scan(stripped, 0)
        if not stripped[end:].strip():
            return document
    except (StopIteration, ValueError, SystemError):
        pass
    import json

    return json.loads(text)


def dumps(document: object) -> str:
    """`json.dumps` for the documents a plugin prints: objects, arrays, strings, numbers, booleans, null."""
    if isinstance(document, str):
        return _json.encode_basestring_ascii(document)
    if document is None or isinstance(document, bool):
        return {None: "null", True: "true", False: "false"}[document]
    if isinstance(document, int | float):
        return repr(document)
    if isinstance(document, dict):
        return "{" + ", ".join(f"{dumps(str(k))}: {dumps(v)}" for k, v in document.items()) + "}"
    return "[" + ", ".join(dumps(v) for v in document) + "]"


class PluginError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def request_version(config: object) -> str:
    """The cniVersion the request asked for (echoed in errors), or the oldest we speak."""
    version = config.get("cniVersion") if isinstance(config, dict) else None
    return version if isinstance(version, str) and version else DEFAULT_ERROR_VERSION


def clusters_dir() -> str:
    """Where `enilab up` registers its clusters (the controller's rule: ENILAB_CLUSTERS_DIR, else the
    `clusters` folder of ENILAB_RUN_DIR). A runtime may call the plugin without its caller's environment
    (podman's clean-up after a container exits does): a registry elsewhere goes into the netconf as
    `clustersDir`, which `enilab cni config` writes."""
    return os.environ.get("ENILAB_CLUSTERS_DIR") or os.path.join(os.environ.get("ENILAB_RUN_DIR", "/run/enilab"),
                                                                  "clusters")


def _listing(folder: str) -> list:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def find_agent(config: dict) -> str:
    """The agent's socket. Names are looked up among what exists, never joined into a path unchecked."""
    explicit = config.get("agentSocket")
    if explicit is not None:
        if not isinstance(explicit, str) or not explicit:
            raise PluginError(INVALID_CONFIG, "'agentSocket' must be the path of a node agent's unix socket")
        return explicit
    root = config.get("clustersDir") or clusters_dir()
    if not isinstance(root, str):
        raise PluginError(INVALID_CONFIG, "'clustersDir' must be the folder where `enilab up` registers clusters")
    up = [name for name in _listing(root) if os.path.exists(os.path.join(root, name, "control.sock"))]
    cluster = config.get("cluster")
    if cluster is None:
        if len(up) != 1:
            raise PluginError(INVALID_CONFIG, "no enilab cluster is up; start one with `enilab up TOPOLOGY`" if not up
                              else f"several enilab clusters are up ({', '.join(up)}); name one with 'cluster' "
                                   "in the network configuration")
        cluster = up[0]
    elif cluster not in up:
        raise PluginError(INVALID_CONFIG, f"no enilab cluster named {str(cluster)[:80]!r} is up; up: "
                          f"{', '.join(up) or 'none'}")
    node = config.get("node")
    nodes = [f[:-5] for f in _listing(os.path.join(root, cluster)) if f.endswith(".sock") and f != "control.sock"]
    if node is None:
        raise PluginError(INVALID_CONFIG, f"the network configuration has no 'node'; cluster {cluster} has "
                          f"{', '.join(nodes) or 'no nodes'} (`enilab cni config --node NODE` writes one)")
    if node not in nodes:
        raise PluginError(INVALID_CONFIG, f"cluster {cluster} has no node {str(node)[:80]!r}; its nodes: "
                          f"{', '.join(nodes) or 'none'}")
    return os.path.join(root, cluster, node + ".sock")


def ask_agent(path: str, params: dict, timeout: float = AGENT_TIMEOUT) -> dict:
    """One JSON-RPC 2.0 request to the agent (the project's RPC protocol); OSError if it cannot be reached."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(dumps({"jsonrpc": "2.0", "id": 1, "method": "cni", "params": params}).encode() + b"\n")
        chunks = []
        while not chunks or not chunks[-1].endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the agent closed the connection before it answered")
            chunks.append(chunk)
    finally:
        sock.close()
    return loads(b"".join(chunks).decode())


def run(env: dict, stdin: bytes) -> tuple:
    """(exit code, document to print or None)."""
    version = DEFAULT_ERROR_VERSION
    command = env.get("CNI_COMMAND", "")
    try:
        try:
            text = stdin.decode()
            config = loads(text or "{}")
        except ValueError as err:
            raise PluginError(DECODE_FAILURE, f"the network configuration on stdin is not JSON: {err}") from None
        if not isinstance(config, dict):
            raise PluginError(DECODE_FAILURE, "the network configuration on stdin must be a JSON object")
        version = request_version(config)
        if command not in COMMANDS:
            raise PluginError(INVALID_ENV, f"CNI_COMMAND is {command[:80]!r}; expected one of {', '.join(COMMANDS)}")
        if command == "VERSION":
            return 0, {"cniVersion": config.get("cniVersion") or SUPPORTED_VERSIONS[-1],
                       "supportedVersions": list(SUPPORTED_VERSIONS)}
        path = find_agent(config)
        own = os.stat("/proc/self/ns/net")
        params = {"env": {k: env[k] for k in CNI_ENV if k in env}, "stdin": text,
                  "caller_netns": [own.st_dev, own.st_ino]}
        try:
            answer = ask_agent(path, params)
        except (OSError, ValueError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise PluginError(PLUGIN_NOT_AVAILABLE if command == "STATUS" else TRY_AGAIN,
                              f"cannot reach the node agent at {path}: {reason}; is the cluster up?") from None
        if "error" in answer:  # the agent failed outside the CNI handler
            raise PluginError(AGENT_FAILED, f"the node agent failed: {answer['error'].get('message')}")
        outcome = answer["result"]
        if "error" in outcome:
            return 1, outcome["error"]
        return 0, outcome.get("result")
    except PluginError as err:
        return 1, {"cniVersion": version, "code": err.code, "msg": err.msg, "details": err.details}


def main() -> int:
    code, document = run(dict(os.environ), sys.stdin.buffer.read())
    if document is not None:
        sys.stdout.write(dumps(document) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
