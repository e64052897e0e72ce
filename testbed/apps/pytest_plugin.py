"""enilab's pytest plugin: clusters as fixtures for teams testing their CNI or network code.

Fixtures (each a factory: call it with a built-in topology's name such as "default", a topology file, or a
scenario-like dict, and optionally a backend):
- `enilab_cluster` (function scope), `enilab_module_cluster`, `enilab_session_cluster`;
  `backend="auto"` uses real namespaces where this process can make them and the simulator otherwise,
  `"netns"` insists on namespaces, `"sim"` never needs them, `"containers"` makes every pod a container
  (root, and a Docker API engine: DOCKER_HOST, else a podman service of its own); there `exec(pod, argv)`
  and `http(src, dst)` work.

Markers:
- `netns`: the test needs network namespaces. As root they are the host's; as a normal user (or with
  ENILAB_ROOTLESS=1) the session moves into a user namespace of its own first (eni_core/userns.py), where
  the same code builds the same clusters: a single-process session once it has collected a netns test, an
  xdist session (`-n`) at its start when ENILAB_ROOTLESS=1 or ENILAB_REQUIRE_NETNS=1 asks for it (its
  workers run threads, and a threaded process cannot move into a user namespace). Inside, the session's
  tests see themselves as root and have a network of their own (loopback only). The test is skipped with
  the reason only when neither root nor user namespaces are available; under ENILAB_REQUIRE_NETNS=1 (or
  the older ENILAB_REQUIRE_ROOT=1) it fails instead: CI never skips a namespace test silently.
- `root`: the old name of `netns`, deprecated (it warns).
- `host_root(reason)`: the test needs root of the host itself, which no user namespace gives (it starts
  podman as root, or switches users): skipped with its reason otherwise, failed under ENILAB_REQUIRE_ROOT=1.
Names carry the xdist worker id; clusters are torn down even when the test fails; at session start the
leftovers of dead runs (a killed worker) are removed, never those of a live one.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eni_core import userns

__all__ = ["EnilabCluster", "netns_problem", "require_host_root", "require_netns", "require_root"]

REFUSED_VARIABLE = "_ENILAB_NETNS_REFUSED"  # why the xdist controller could not enter: its workers say so too
_entered: dict[str, str | None] = {}  # "why": the reason entering failed (None: it worked), once tried


def _required_by() -> str | None:
    """The variable by which CI demands that netns tests run (ENILAB_REQUIRE_NETNS=1, or the older
    ENILAB_REQUIRE_ROOT=1), or None."""
    return next((v for v in ("ENILAB_REQUIRE_NETNS", "ENILAB_REQUIRE_ROOT") if os.environ.get(v) == "1"), None)


_process = {"xdist_worker": False}  # set when this process is configured as an xdist worker


def _is_xdist_worker() -> bool:
    """Whether this process is an xdist worker (by its configuration: a pytest it starts inherits the
    environment, not the worker's threads)."""
    return _process["xdist_worker"]


def _is_xdist_controller(config: pytest.Config) -> bool:
    return getattr(config.option, "dist", "no") != "no" and bool(getattr(config.option, "tx", None))


def _enter(config: pytest.Config | None) -> str | None:
    """Move this process into a user namespace of its own (once); the reason if it could not."""
    if "why" in _entered:
        return _entered["why"]
    if config is not None:  # pytest's temporary folder is named after the user, who is root inside
        config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    try:
        userns.enter()
    except OSError as err:
        _entered["why"] = f"no user namespace for the netns tests: {err.strerror or err}"
        return _entered["why"]
    _entered["why"] = None
    return None


def netns_problem(*, enter: bool = True, config: pytest.Config | None = None) -> str | None:
    """Why this process cannot make network namespaces, or None when it can: as root, or inside a user
    namespace where it is root. With `enter`, a process that could move into one of its own does so."""
    if not userns.wanted():
        return None if os.geteuid() == 0 else "this process runs in a user namespace where it is not root"
    if os.environ.get(REFUSED_VARIABLE):
        return os.environ[REFUSED_VARIABLE]
    if _is_xdist_worker():
        return ("an xdist worker runs threads and cannot move into a user namespace; set ENILAB_ROOTLESS=1 so "
                "the session enters one before its workers start, or run without -n (or as root)")
    if not enter:
        return "not root, and this session has not entered a user namespace"
    why = _enter(config)
    if why is None:
        _clean_dead_runs()
    return why


def require_netns() -> None:
    """Skip (or, under ENILAB_REQUIRE_NETNS=1 or ENILAB_REQUIRE_ROOT=1, fail) the calling test unless this
    process can make network namespaces: as root, or in a user namespace of its own (entered if need be)."""
    why = netns_problem()
    if why is None:
        return
    required = _required_by()
    if required:
        pytest.fail(f"{required}=1 but this test cannot have network namespaces: {why}", pytrace=False)
    pytest.skip(f"needs network namespaces: {why}")


require_root = require_netns  # the old name


def require_host_root(reason: str) -> None:
    """Skip (or, under ENILAB_REQUIRE_ROOT=1, fail) the calling test unless it runs as root of the host
    itself, not of a user namespace; `reason` says why no user namespace will do."""
    if os.geteuid() == 0 and not userns.inside():
        return
    why = f"needs root of the host ({reason})"
    if os.environ.get("ENILAB_REQUIRE_ROOT") == "1":
        pytest.fail(f"ENILAB_REQUIRE_ROOT=1 but this test {why}", pytrace=False)
    pytest.skip(why)


class EnilabCluster:
    """A cluster under test: pods, traces and the JSON state of docs/json-contract.md."""

    def __init__(self, topology: str | Path | dict[str, Any], backend: str = "auto") -> None:
        from testbed.apps.runner import apply_steps, check_supported
        from testbed.world.cluster import Cluster
        from testbed.world.scenario import load_scenario, parse_scenario

        if backend not in ("auto", "netns", "sim", "containers"):
            raise ValueError(f"backend must be auto, netns, sim or containers, not {backend!r}")
        scenario = parse_scenario(topology) if isinstance(topology, dict) else load_scenario(topology)
        if backend == "auto":
            backend = "netns" if netns_problem(enter=False) is None else "sim"
        check_supported(scenario, backend)  # before anything is made
        if backend == "sim":
            self.cluster = Cluster(scenario.cluster)
        else:
            require_netns()
            from testbed.apps.controller import make_backend

            made = make_backend(backend)
            try:
                self.cluster = Cluster(scenario.cluster, backend=made)
            except BaseException:
                made.close()
                raise
        self._closed = False
        try:
            apply_steps(self.cluster, scenario.steps, scenario.source, self.cluster.sync_dataplane)
        except BaseException:
            self.close()
            raise

    @property
    def backend(self) -> str:
        return self.cluster.backend.name

    def step(self, step: dict[str, Any]) -> Any:
        """Apply one scenario step (`{"op": "create_pods", "node": "node-1", "count": 3}`, ...), checked as a
        scenario file's steps are: ScenarioError for a field of the wrong type, out of range or a bad name."""
        result = self._apply(step)
        self.cluster.sync_dataplane()
        return result

    def _apply(self, step: dict[str, Any]) -> Any:
        from testbed.apps.runner import apply_step, check_step_supported
        from testbed.world.scenario import parse_step

        step = parse_step(step)
        check_step_supported("step", step, self.backend)
        return apply_step(self.cluster, step)

    def create_pods(self, count: int, node: str | None = None) -> list[str]:
        """`count` new pods (on `node`, or where the scheduler puts them): their names; none for a count of 0
        (`create_pods(12 - len(pods))` once there are 12); any other count is checked as a step's is."""
        if type(count) is int and count == 0:
            return []
        return [p.name for p in self.step({"op": "create_pods", "count": count, "node": node})]

    def delete_pod(self, name: str) -> None:
        self._apply({"op": "delete_pods", "names": [name]})

    def running_pods(self) -> list[str]:
        from testbed.world.pods import PodPhase

        return [p.name for p in self.cluster.pods.values() if p.phase == PodPhase.RUNNING]

    def pod(self, name: str) -> dict[str, Any]:
        """The pod's part of the JSON state; ClusterError for a pod the cluster does not have."""
        from eni_core.names import short_list, shorten
        from testbed.world.cluster import ClusterError

        pods = self.state()["pods"]
        if name not in pods:
            raise ClusterError(f"unknown pod {shorten(name)}; pods: {short_list(pods, 10) or 'none'}")
        return pods[name]

    def state(self) -> dict[str, Any]:
        return self.cluster.state()

    def trace(self, src: str, dst: str, via: str | None = None):
        """One traced packet (needs the netns backend); see `testbed.observe.traffic.Trace` for its asserts."""
        from testbed.observe.traffic import probe

        return probe(self.cluster, src, dst, via=via)

    def matrix(self, targets: list[str] | None = None) -> dict[str, dict[str, bool]]:
        from testbed.observe.traffic import matrix

        return matrix(self.cluster, targets=targets)

    def exec(self, pod: str, argv: list[str]) -> subprocess.CompletedProcess:
        """Run `argv` in the pod's container (containers backend): its exit code, stdout and stderr as text."""
        code, out, err = self._containers().exec(pod, list(argv))
        return subprocess.CompletedProcess(list(argv), code, out.decode(errors="replace"), err.decode(errors="replace"))

    def http(self, src: str, dst: str) -> str | None:
        """GET http://DST/ from a pod or VPC host (containers backend): the body (a default pod answers its
        own name), or None when nothing answered. DST: a pod, a VPC host or an IP."""
        from testbed.observe.traffic import resolve

        return self._containers().http(src, str(resolve(self.cluster, dst).ip))

    def _containers(self):
        backend = self.cluster.backend
        if not hasattr(backend, "exec"):
            raise ValueError(f"exec and http need pods that are containers; this cluster runs on {backend.name}: "
                             "make it with backend='containers'")
        return backend

    def advance(self, seconds: float) -> None:
        self._apply({"op": "advance", "seconds": seconds})

    def faults(self, **rates: float) -> None:
        """Make the simulated cloud flaky (throttle, transient, insufficient_addresses, timeout, as rates;
        consistency_delay and latency in seconds); with no argument it heals. Checked as a scenario's faults
        are (ScenarioError), except that a rate may be 1: every call fails."""
        from testbed.world.scenario import parse_faults

        self.cluster.vpc.faults = parse_faults(rates, "faults()", every_call=True)

    def audit(self) -> dict[str, Any]:
        """The VPC, the datastores and the kernels compared (see `enilab audit`)."""
        from testbed.observe.audit import audit_cluster

        return audit_cluster(self.cluster)

    def close(self) -> None:
        """Tear the cluster down (its namespaces, and its containers and engine); again is a no-op."""
        if not self._closed:
            cluster = self.cluster  # before it is marked closed: a lab's cluster refuses to be used after
            self._closed = True
            cluster.close()


Factory = Callable[..., EnilabCluster]


def _factory() -> Iterator[Factory]:
    made: list[EnilabCluster] = []

    def make(topology: str | Path | dict[str, Any], backend: str = "auto") -> EnilabCluster:
        cluster = EnilabCluster(topology, backend)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in reversed(made):
            cluster.close()


@pytest.fixture
def enilab_cluster() -> Iterator[Factory]:
    """Build clusters for one test; they are torn down after it, pass or fail."""
    yield from _factory()


@pytest.fixture(scope="module")
def enilab_module_cluster() -> Iterator[Factory]:
    yield from _factory()


@pytest.fixture(scope="session")
def enilab_session_cluster() -> Iterator[Factory]:
    yield from _factory()


@pytest.hookimpl(trylast=True)  # pytest's temporary folder is set up by then
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: needs network namespaces (root, or a user namespace of the session's)")
    config.addinivalue_line("markers", "root: deprecated, the old name of the netns marker")
    config.addinivalue_line("markers", "host_root(reason): needs root of the host itself, which no user namespace "
                                       "gives; the reason says why")
    if hasattr(config, "workerinput"):
        _process["xdist_worker"] = True
    asked = os.environ.get("ENILAB_ROOTLESS") == "1" or _required_by() is not None
    if asked and userns.wanted() and _is_xdist_controller(config) and not _is_xdist_worker():
        why = _enter(config)
        if why is not None:
            os.environ[REFUSED_VARIABLE] = why  # before the workers start: they are born inside


def _clean_dead_runs() -> None:
    """Remove what dead runs left behind (a worker killed mid-test), never a live run's."""
    from testbed.world import runs

    runs.clean(force=False)


def pytest_sessionstart(session: pytest.Session) -> None:
    if netns_problem(enter=False) is None:
        _clean_dead_runs()


def _needs_netns(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) is not None for name in ("netns", "root"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("root") is not None and item.get_closest_marker("netns") is None:
            item.warn(pytest.PytestDeprecationWarning("the `root` marker is now `netns` (root, or a user namespace)"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """A single-process session of a normal user enters its user namespace once it knows a test needs one,
    before any test runs."""
    if userns.wanted() and not _is_xdist_worker() and any(map(_needs_netns, session.items)):
        netns_problem(config=session.config)


def pytest_runtest_setup(item: pytest.Item) -> None:
    host = item.get_closest_marker("host_root")
    if host is not None:
        require_host_root(host.kwargs.get("reason") or (host.args[0] if host.args else "it says so"))
    if _needs_netns(item):
        require_netns()
