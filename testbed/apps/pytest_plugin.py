"""enilab's pytest plugin: clusters as fixtures for teams testing their CNI or network code.

Fixtures (each a factory: call it with a built-in topology's name such as "default", a topology file, or a
scenario-like dict, and optionally a backend):
- `enilab_cluster` (function scope), `enilab_module_cluster`, `enilab_session_cluster`;
  `backend="auto"` uses real namespaces as root and the simulator otherwise, `"netns"` insists on root,
  `"sim"` never needs it, `"containers"` makes every pod a container (root, and a Docker API engine:
  DOCKER_HOST, else a podman service of its own); there `exec(pod, argv)` and `http(src, dst)` work.
The `root` marker: a test that needs namespaces. Without root it is skipped with the reason, unless
ENILAB_REQUIRE_ROOT=1 (CI running as root sets it), where it fails: CI never skips a root test silently.
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

__all__ = ["EnilabCluster", "require_root"]


def _is_root() -> bool:
    return os.geteuid() == 0


def require_root() -> None:
    """Skip (or, under ENILAB_REQUIRE_ROOT=1, fail) the calling test unless running as root."""
    if _is_root():
        return
    why = "needs root and network namespaces (run as root, e.g. `sudo make test`)"
    if os.environ.get("ENILAB_REQUIRE_ROOT") == "1":
        pytest.fail(f"ENILAB_REQUIRE_ROOT=1 but not root: this test {why}", pytrace=False)
    pytest.skip(why)


class EnilabCluster:
    """A cluster under test: pods, traces and the JSON state of docs/json-contract.md."""

    def __init__(self, topology: str | Path | dict[str, Any], backend: str = "auto") -> None:
        from testbed.apps.runner import apply_step
        from testbed.world.cluster import Cluster
        from testbed.world.scenario import load_scenario, parse_scenario

        if backend not in ("auto", "netns", "sim", "containers"):
            raise ValueError(f"backend must be auto, netns, sim or containers, not {backend!r}")
        scenario = parse_scenario(topology) if isinstance(topology, dict) else load_scenario(topology)
        if backend == "auto":
            backend = "netns" if _is_root() else "sim"
        if backend == "sim":
            self.cluster = Cluster(scenario.cluster)
        else:
            require_root()
            from testbed.apps.controller import make_backend

            made = make_backend(backend)
            try:
                self.cluster = Cluster(scenario.cluster, backend=made)
            except BaseException:
                made.close()
                raise
        self._apply = apply_step
        self._closed = False
        try:
            for step in scenario.steps:
                self.step(step)
        except BaseException:
            self.close()
            raise

    @property
    def backend(self) -> str:
        return self.cluster.backend.name

    def step(self, step: dict[str, Any]) -> Any:
        """Apply one scenario step (`{"op": "create_pods", "node": "node-1", "count": 3}`, ...)."""
        result = self._apply(self.cluster, step)
        self.cluster.sync_dataplane()
        return result

    def create_pods(self, count: int, node: str | None = None) -> list[str]:
        pods = [p.name for p in self.cluster.create_pods(count, node)]
        self.cluster.sync_dataplane()
        return pods

    def delete_pod(self, name: str) -> None:
        self.cluster.delete_pod(name)

    def running_pods(self) -> list[str]:
        return [p.name for p in self.cluster.pods.values() if p.phase == "Running"]

    def pod(self, name: str) -> dict[str, Any]:
        return self.state()["pods"][name]

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
        self.cluster.advance(seconds)

    def faults(self, **rates: float) -> None:
        """Make the simulated cloud flaky (throttle, transient, insufficient_addresses, timeout, as rates;
        consistency_delay and latency in seconds); with no argument it heals."""
        from testbed.world.vpc import FaultConfig

        self.cluster.vpc.faults = FaultConfig(**rates)

    def audit(self) -> dict[str, Any]:
        """The VPC, the datastores and the kernels compared (see `enilab audit`)."""
        from testbed.observe.audit import audit_cluster

        return audit_cluster(self.cluster)

    def close(self) -> None:
        """Tear the cluster down (its namespaces, and its containers and engine); again is a no-op."""
        if not self._closed:
            self._closed = True
            self.cluster.close()


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root and network namespaces")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove what dead runs left behind (a worker killed mid-test), never a live run's."""
    if _is_root():
        from testbed.world import runs

        runs.clean(force=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None:
        require_root()
