"""Helpers for the Jupyter labs: a cluster on the best backend this kernel allows, pool timelines to
plot, and exercises that check a learner's answer.

Everything here works inside a running event loop (a Jupyter kernel): enilab talks to the kernel with
its own blocking netlink sockets, not with an asyncio library, so nothing needs `await`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.apps.runner import apply_step
from testbed.world.cluster import Cluster
from testbed.world.scenario import load_scenario, parse_scenario

__all__ = ["ROOT", "Exercise", "can_use_namespaces", "open_cluster", "plot_timeline", "pool_timeline"]

ROOT = Path(__file__).resolve().parents[2]


def can_use_namespaces() -> bool:
    return os.geteuid() == 0 and os.environ.get("ENILAB_LABS_BACKEND", "auto") != "sim"


def open_cluster(topology: str | Path | dict, *, need_kernel: bool = False) -> Cluster:
    """The topology (a built-in name such as "default", a file, or a dict); with `need_kernel`, on real
    namespaces when this kernel runs as root (else on the simulator, saying so). Labs about the pool alone
    always simulate: nothing to clean up."""
    scenario = parse_scenario(topology) if isinstance(topology, dict) else load_scenario(topology)
    backend = None
    if need_kernel and can_use_namespaces():
        from testbed.world.backends.netns import NetnsBackend

        backend = NetnsBackend()
        print(f"netns backend: namespaces {backend.run.prefix}-* (call cluster.close() when done)")
    elif need_kernel:
        print("simulator backend (not root): the pool and the routing plan are real; packets and kernel "
              "state are not shown here. Run Jupyter as root to see them.")
    cluster = Cluster(scenario.cluster, backend=backend)
    for step in scenario.steps:
        apply_step(cluster, step)
    cluster.sync_dataplane()
    return cluster


def figure_path(name: str) -> Path:
    """Where a lab writes a picture: a temporary folder, not the repository."""
    import tempfile

    folder = Path(tempfile.gettempdir()) / "enilab-labs"
    folder.mkdir(exist_ok=True)
    return folder / name


@dataclass
class Timeline:
    t: list[float] = field(default_factory=list)
    pods: list[int] = field(default_factory=list)
    bound: list[int] = field(default_factory=list)
    allocatable: list[int] = field(default_factory=list)
    enis: list[int] = field(default_factory=list)


def pool_timeline(cluster: Cluster, actions: list[tuple[float, Callable[[Cluster], Any]]], until: float,
                  node: str = "node-1", step: float = 10.0) -> Timeline:
    """Sample one node's pool every `step` simulated seconds while `actions` ((time, fn)) happen."""
    out = Timeline()
    pending = sorted(actions, key=lambda a: a[0])
    t = 0.0
    while t <= until:
        while pending and pending[0][0] <= t:
            cluster.run_until(pending[0][0])
            pending.pop(0)[1](cluster)
        cluster.run_until(t)
        n = cluster.state()["nodes"][node]
        out.t.append(t)
        out.pods.append(n["pods"])
        out.bound.append(n["bound"])
        out.allocatable.append(n["allocatable"])
        out.enis.append(len(n["enis"]))
        t += step
    return out


def plot_timeline(tl: Timeline, title: str = "", ax=None):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.5))
    ax.step(tl.t, tl.pods, where="post", label="pods (Running)")
    ax.step(tl.t, tl.bound, where="post", label="bound IPs (= eni-ip allocatable)")
    ax.step(tl.t, tl.enis, where="post", label="ENIs", linestyle=":")
    ax.set_xlabel("simulated seconds")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return ax


@dataclass
class Exercise:
    """A question whose answer is computed from the running cluster, so it is always right."""

    question: str
    solution: Callable[[], Any]
    hint: str = ""

    def check(self, answer: Any) -> bool | None:
        if answer is None:
            print(f"Exercise: {self.question}\n  (set `answer` in the cell above, then run this cell again)")
            return None
        right = self.solution()
        if answer == right:
            print(f"Correct: {answer}.")
            return True
        print(f"Not quite: {answer!r} is not it." + (f" Hint: {self.hint}" if self.hint else ""))
        return False
