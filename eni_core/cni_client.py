"""`enilab-cni`, the CNI plugin executable: a thin client that hands each request to its node's agent.

A runtime runs it with the CNI_* environment and the network configuration on stdin, from wherever the
runtime lives (usually the host's namespace). It imports only os, sys and the C halves of json and
socket (`_json`, `_socket`: the pure-Python modules and what they pull in, `re` and `enum`, cost more to
import than the rest of the run), so that `python -IS` starts it in a few milliseconds. The node agent
(running in the node's namespace) parses the request, enters CNI_NETNS on its own thread and does the
netlink work. The agent is found by the netconf's `cluster` (default: the only cluster that is up) and
`node`, or by an explicit `agentSocket` (a standalone `enilab-agent`).

A normal user's cluster lives in a user namespace of its own (eni_core/userns.py). Called by a process of
that user from outside it (a rootless runtime), the client first joins the user and mount namespaces of the
cluster's controller, found through the owner record in the user's private folder, so the registry and
CNI_NETNS read as they do inside; the container's namespace must belong to that user namespace (a runtime
started inside it made it), since no other can be entered from there.

This file is also installed on its own (`enilab cni install DIR`): it must not import from the project.
"""
import _json
import _socket
import os
import sys
from stat import S_ISDIR  # imported by os already: costs nothing

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
    except (StopIteration, ValueError, SystemError, RecursionError):
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


NEWER_VERBS = {"GC": "1.1.0", "STATUS": "1.1.0"}  # the spec version each command came with


def version_refusal(command: str, version: str) -> str | None:
    """Why a configuration of `version` cannot ask for `command` (libcni's own plugins refuse it the same
    way, with code 1), or None."""
    if command in NEWER_VERBS and version == "1.0.0":
        return (f"cniVersion 1.0.0 has no {command}; it came with {NEWER_VERBS[command]}: set cniVersion "
                f"{NEWER_VERBS[command]} in the network configuration")
    return None


def clusters_dir() -> str:
    """Where `enilab up` registers its clusters (the controller's rule: ENILAB_CLUSTERS_DIR, else the
    `clusters` folder of ENILAB_RUN_DIR). A runtime may call the plugin without its caller's environment
    (podman's clean-up after a container exits does): a registry elsewhere goes into the netconf as
    `clustersDir`, which `enilab cni config` writes."""
    return os.environ.get("ENILAB_CLUSTERS_DIR") or os.path.join(os.environ.get("ENILAB_RUN_DIR", "/run/enilab"),
                                                                  "clusters")


def _inside_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the host's (eni_core.userns.inside)."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.readline().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def own_runtime_dir(path: str | None) -> bool:
    """Whether `path` may serve as this user's XDG_RUNTIME_DIR: an absolute path to a folder of this user that
    nobody else may write in. One left pointing at another user's (`su` keeps it) or a shared one is passed
    over, as an unset one is: in it, enilab's folder could be renamed away under it by that user, or (as
    root) left where they cannot remove it. eni_core.userns.state_base applies the same rule."""
    try:
        info = os.stat(path) if path and os.path.isabs(path) else None
    except OSError:
        return False
    return info is not None and S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def rootless_base() -> str:
    """The user's private folder of rootless runs, eni_core.userns.state_base's rule (tested to agree):
    `$XDG_RUNTIME_DIR/enilab` when that is the user's own (`own_runtime_dir`), else `~/.cache/enilab`."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if own_runtime_dir(xdg):
        return os.path.join(xdg, "enilab")
    return os.path.join(os.path.expanduser("~"), ".cache", "enilab")


def _process_start(pid: int) -> str | None:
    """testbed.world.runs.process_start: field 22 of /proc/PID/stat, None for a zombie or no process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _live_controller(registry: str, cluster: object) -> tuple:
    """(name, pid, start) of the named cluster's live controller in `registry`, or of the only live one."""
    live = []
    for name in _listing(registry):
        if cluster is not None and name != cluster:
            continue
        try:
            with open(os.path.join(registry, name, "owner.json")) as f:
                record = loads(f.read())
        except (OSError, ValueError):
            continue
        pid = record.get("pid") if isinstance(record, dict) else None
        if isinstance(pid, int) and pid > 0 and _process_start(pid) is not None \
                and _process_start(pid) == record.get("start"):
            live.append((name, pid, record["start"]))
    return live[0] if len(live) == 1 else ()


def join_rootless_cluster(config: dict) -> None:
    """Without root (or with ENILAB_ROOTLESS=1), outside any user namespace: join the user and mount
    namespaces of this user's rootless cluster that the netconf names (or the only one up). Nothing to join
    (no such cluster, or a registry given explicitly): stay, and the registry says what is up."""
    if (os.geteuid() == 0 and os.environ.get("ENILAB_ROOTLESS") != "1") or _inside_user_namespace():
        return
    if config.get("agentSocket") is not None or config.get("clustersDir") is not None \
            or os.environ.get("ENILAB_CLUSTERS_DIR") or os.environ.get("ENILAB_RUN_DIR"):
        return
    found = _live_controller(os.path.join(rootless_base(), "run", "clusters"), config.get("cluster"))
    if not found:
        return
    name, pid, start = found
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fds = []
    try:
        try:
            fds = [(os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC), flag)
                   for kind, flag in (("user", 0x10000000), ("mnt", 0x00020000))]
        except OSError as err:
            raise PluginError(PLUGIN_NOT_AVAILABLE, f"cannot open the namespaces of cluster {name}'s controller "
                              f"(pid {pid}): {err.strerror}") from None
        if _process_start(pid) != start:
            raise PluginError(TRY_AGAIN, f"cluster {name}'s controller (pid {pid}) ended; is the cluster up?")
        for fd, flag in fds:
            if libc.setns(fd, flag) != 0:
                raise PluginError(PLUGIN_NOT_AVAILABLE, f"cannot join the user namespace of cluster {name}'s "
                                  f"controller (pid {pid}): {os.strerror(ctypes.get_errno())}")
    finally:
        for fd, _ in fds:
            os.close(fd)


def _listing(folder: str) -> list:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def find_agent(config: dict, not_up: int = INVALID_CONFIG) -> str:
    """The agent's socket. Names are looked up among what exists, never joined into a path unchecked.
    `not_up`: the error code when the cluster is not up (STATUS: the plugin is not available)."""
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
        if not up:
            raise PluginError(not_up, "no enilab cluster is up; start one with `enilab up TOPOLOGY`")
        if len(up) > 1:
            raise PluginError(INVALID_CONFIG, f"several enilab clusters are up ({', '.join(up)}); name one with "
                              "'cluster' in the network configuration")
        cluster = up[0]
    elif cluster not in up:
        raise PluginError(not_up, f"no enilab cluster named {str(cluster)[:80]!r} is up; up: "
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
        except RecursionError:
            raise PluginError(DECODE_FAILURE, "the network configuration on stdin is nested too deeply") from None
        if not isinstance(config, dict):
            raise PluginError(DECODE_FAILURE, "the network configuration on stdin must be a JSON object")
        version = request_version(config)
        if command not in COMMANDS:
            raise PluginError(INVALID_ENV, f"CNI_COMMAND is {command[:80]!r}; expected one of {', '.join(COMMANDS)}")
        if command == "VERSION":
            asked = config.get("cniVersion")
            return 0, {"cniVersion": asked if isinstance(asked, str) and asked else SUPPORTED_VERSIONS[-1],
                       "supportedVersions": list(SUPPORTED_VERSIONS)}
        refusal = version_refusal(command, version)
        if refusal:
            raise PluginError(INCOMPATIBLE_VERSION, refusal)
        own = os.stat("/proc/self/ns/net")  # the runtime's namespace, whatever the client joins
        join_rootless_cluster(config)
        path = find_agent(config, PLUGIN_NOT_AVAILABLE if command == "STATUS" else INVALID_CONFIG)
        params = {"env": {k: env[k] for k in CNI_ENV if k in env}, "stdin": text,
                  "caller_netns": [own.st_dev, own.st_ino]}
        try:
            answer = ask_agent(path, params)
        except PermissionError:  # trying again will not help
            raise PluginError(PLUGIN_NOT_AVAILABLE if command == "STATUS" else IO_FAILURE,
                              f"cannot reach the node agent at {path}: permission denied; its socket is only for "
                              "the user who started the cluster") from None
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
