"""Helpers for the Jupyter labs: a cluster on the best backend this kernel allows, the kernel's own `ip`
run in a node's namespace, pictures shown from memory, pool timelines to plot, and exercises and tasks
whose answers are read from the live cluster.

A lab builds namespaces when its Jupyter kernel runs as root, or as a normal user in the labs' own kernel,
"Python 3 (enilab)" (testbed/apps/lab_kernel.py: root of a user namespace of the user's own). Otherwise it
runs on the simulator and says why.

Everything here works inside a running event loop (a Jupyter kernel): enilab talks to the kernel with
its own blocking netlink sockets, not with an asyncio library, so nothing needs `await`.

`ENILAB_LAB_SOLUTIONS` is how the labs are checked headless: `1` makes every unanswered exercise take the
right answer and every unfinished task run its hidden solution; `wrong` makes every exercise take a
wrong answer and leaves every task undone (each must say "Not quite"). In both, a check that disagrees
raises, so the notebook run fails. Unset, nothing is filled in: the learner answers.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eni_core.names import shorten
from testbed.apps.lab_kernel import REFUSED, not_yet
from testbed.apps.pytest_plugin import EnilabCluster
from testbed.world.backends.netns import NetnsBackend
from testbed.world.cluster import Cluster, ClusterError

__all__ = ["KERNEL", "Exercise", "LabCluster", "Task", "can_use_namespaces", "console", "enilab", "figure_dir", "ip",
           "kernel_table_of", "node_subnet_add", "open_cluster", "plot_timeline", "pool_timeline", "print_audit",
           "show_topology", "why_no_namespaces"]

KERNEL = "Python 3 (enilab)"  # the labs' kernel: namespaces for a normal user too

# Tables fit a 1280 px JupyterLab window with its file browser open.
TABLE_WIDTH = 86


def why_no_namespaces() -> str | None:
    """None when this kernel may build namespaces: it runs as root, or as root of the user namespace the labs'
    kernel makes for a normal user. Otherwise why not, and what to do, in a few words."""
    if os.environ.get("ENILAB_LABS_BACKEND", "auto") == "sim":
        return "ENILAB_LABS_BACKEND=sim"
    if os.environ.get(REFUSED):  # also root that asked for the rootless path (ENILAB_ROOTLESS=1): never as root
        return f"the kernel {KERNEL!r} could not make a user namespace: {os.environ[REFUSED]}"
    if os.geteuid() == 0:
        return None
    return f"not root: open the lab with the kernel {KERNEL!r} (Kernel > Change Kernel)"


def can_use_namespaces() -> bool:
    """True when this kernel may build namespaces (see `why_no_namespaces`)."""
    return why_no_namespaces() is None


class LabCluster(EnilabCluster):
    """The plugin's cluster as a lab drives it. Run All ends with the lab's last cell, `c.close()`: every use
    after that (a cell above run again, a button clicked) says in one line what to do, instead of failing deep
    inside namespaces that are gone."""

    @property
    def cluster(self) -> Cluster:
        if getattr(self, "_closed", False):
            raise ClusterError("this lab's cluster is closed (the lab's last cell, c.close(), closed it): "
                               "run the lab again from its first cell")
        return self._cluster

    @cluster.setter
    def cluster(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def broke(self, what: str) -> None:
        """Record that a cell broke `what` on this cluster by hand (an operator's edit that no event records),
        for a Task's `broken` to read back with `has_broken`. A cluster made again has broken nothing."""
        self._breaks = getattr(self, "_breaks", frozenset()) | {what}

    def has_broken(self, what: str) -> bool:
        return what in getattr(self, "_breaks", frozenset())


_made_at: dict[tuple[str, int], weakref.ref[LabCluster]] = {}  # the cell that called open_cluster -> what it made


def open_cluster(topology: str | Path | dict, *, need_kernel: bool = False, containers: bool = False,
                 cannot_show: str = "") -> EnilabCluster:
    """The topology (a built-in name such as "default", found in the package wherever enilab is installed;
    a file; or a dict) as the pytest plugin's cluster. With `need_kernel`, on real namespaces when this
    kernel may build them (with `containers`, every pod a container); otherwise on the simulator, and
    `cannot_show` says in one line what the lab then cannot show, after why.

    A cell run again replaces the cluster it made the time before: that one is closed first. It would
    otherwise live on, unreachable, with its namespaces (and a lab 14's podman and containers), until the
    kernel ends; seven runs of a lab's first cell held 70 namespaces. A cluster made outside any cell (a
    widget's callback) or outside IPython replaces nothing."""
    site = _cell_site(sys._getframe(1))
    made_before = _made_at.pop(site, None) if site is not None else None
    if made_before is not None and (old := made_before()) is not None:
        old.close()
    need_kernel = need_kernel or containers
    why = why_no_namespaces() if need_kernel else None
    real = need_kernel and why is None
    if need_kernel and not real:
        print(f"Simulator ({why}): {cannot_show or 'no kernel state and no packets here.'}")
    cluster = LabCluster(topology, backend=("containers" if containers else "netns") if real else "sim")
    cluster.cluster.sync_dataplane()
    if site is not None:
        _made_at[site] = weakref.ref(cluster)
    return cluster


def _cell_site(frame) -> tuple[str, int] | None:
    """Which cell, and which line of it, is running the call: IPython names a cell's code after its text, so
    a cell run again is the same site. None when no cell is (a widget's callback, or no IPython at all)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    while shell is not None and frame is not None:
        if frame.f_code.co_name == "<module>" and shell.compile.format_code_name(frame.f_code.co_filename):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None


def _inner(cluster: EnilabCluster | Cluster) -> Cluster:
    """The cluster a lab helper works on, given the plugin's wrapper or the cluster itself."""
    return cluster.cluster if isinstance(cluster, EnilabCluster) else cluster


def ip(cluster, node: str, *args: Any, show: bool = True) -> str | None:
    """Run the kernel's own `ip` inside a node's namespace (`ip -n <namespace> ...`):
    `ip(c, "node-1", "rule")`, `ip(c, "node-1", "route", "show", "table", 2003)`. It prints what `ip` says
    (and returns nothing, so a notebook shows it once); with `show=False` it returns the text instead. On
    the simulator there is no kernel: it says so (the text is "")."""
    c = _inner(cluster)
    args = tuple(map(str, args))
    if not isinstance(c.backend, NetnsBackend):  # the containers backend is one too
        if show:
            why = why_no_namespaces()
            print(f"(simulator: no kernel to run `ip {shlex.join(args)}` in{f'; {why}' if why else ''})")
            return None
        return ""
    if node not in c.backend.nodes:
        raise ClusterError(f"unknown node {shorten(node)}; nodes: {', '.join(c.backend.nodes)}")
    binary = shutil.which("ip") or "/usr/sbin/ip"
    command = [binary, "-n", c.backend.nodes[node].ns, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    out = done.stdout + done.stderr
    if not show:
        return out
    print(f"$ ip {shlex.join(args)}    # on {node}\n{out}", end="" if out.endswith("\n") else "\n")
    return None


def kernel_table_of(cluster, pod: str) -> int | None:
    """The table the kernel's `ip rule` sends a pod's packets to (`from <pod IP> lookup N`), read from the
    node's namespace; None when there is no such rule (or no kernel)."""
    c = _inner(cluster)
    p = c.pods[pod]
    for line in ip(c, p.node, "rule", "show", show=False).splitlines():
        words = line.split()
        if "from" in words and "lookup" in words and words[words.index("from") + 1] == str(p.ip):
            table = words[words.index("lookup") + 1]
            return int(table) if table.isdigit() else None
    return None


def node_subnet_add(cluster, node: str, subnet: str) -> None:
    """What an operator does when a node's subnets run dry: give the node one more of the VPC's subnets
    for new ENIs (`Cluster.add_node_subnet`), then let the node settle."""
    _inner(cluster).add_node_subnet(node, subnet)


def console():
    """A rich console whose tables fit the notebook's width."""
    from rich.console import Console

    return Console(width=TABLE_WIDTH)


def print_audit(report: dict) -> None:
    """An audit report as `enilab audit` prints it."""
    from testbed.observe.audit import report_lines

    print("\n".join(report_lines(report)))


_figures: Path | None = None


def figure_dir() -> Path:
    """A private folder (mode 0700) for this kernel's pictures, removed when the kernel exits (a lab's own
    pictures go here too, not into a folder of their own left in /tmp)."""
    global _figures
    if _figures is None:
        import atexit

        _figures = Path(tempfile.mkdtemp(prefix="enilab-labs-"))
        atexit.register(shutil.rmtree, _figures, True)
    return _figures


def show_topology(cluster, trace=None, title: str = "") -> None:
    """Draw the cluster (and a trace's path) and display it in the notebook."""
    from IPython.display import Image, display

    from testbed.observe import topology

    c = _inner(cluster)
    trace = trace.to_dict() if hasattr(trace, "to_dict") else trace
    path = topology.draw(topology.build_graph(c), figure_dir() / "topology.png", trace, title)
    display(Image(data=path.read_bytes(), width=900))


@dataclass
class Timeline:
    t: list[float] = field(default_factory=list)
    pods: list[int] = field(default_factory=list)
    bound: list[int] = field(default_factory=list)
    allocatable: list[int] = field(default_factory=list)
    enis: list[int] = field(default_factory=list)

    def at(self, t: float, what: str = "bound") -> int:
        return getattr(self, what)[self.t.index(t)]


def pool_timeline(cluster, actions: list[tuple[float, Callable[[Any], Any]]], until: float,
                  node: str = "node-1", step: float = 10.0) -> Timeline:
    """Sample one node's pool every `step` simulated seconds while `actions` ((time, fn)) happen."""
    c = _inner(cluster)
    out = Timeline()
    pending = sorted(actions, key=lambda a: a[0])
    t = 0.0
    while t <= until:
        while pending and pending[0][0] <= t:
            c.run_until(pending[0][0])
            pending.pop(0)[1](c)
        c.run_until(t)
        n = c.state()["nodes"][node]
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


def _mode() -> str:
    return os.environ.get("ENILAB_LAB_SOLUTIONS", "")


def _enforce(what: str, passed: bool) -> None:
    """Under ENILAB_LAB_SOLUTIONS a headless run fails loudly: a solution the lab refuses, or a wrong answer
    (an untouched task) it accepts, is a broken lab."""
    if _mode() == "1" and not passed:
        raise AssertionError(f"ENILAB_LAB_SOLUTIONS=1: the solution of {what!r} was not accepted")
    if _mode() == "wrong" and passed:
        raise AssertionError(f"ENILAB_LAB_SOLUTIONS=wrong: {what!r} accepted a wrong answer (or needed no fix)")


_KINDS = {int: "a whole number (like 12)", str: "a word (like 'eth2')", bool: "True or False"}


def _normalise(answer: Any, kind: type) -> Any:
    """The answer as `kind`, or ValueError saying what was expected. Text is trimmed and case-folded;
    `"15"` is 15 for a number; a bool is never a number."""
    expected = _KINDS[kind]
    if kind is bool:
        if isinstance(answer, bool):
            return answer
        if isinstance(answer, str) and answer.strip().lower() in ("true", "false"):
            return answer.strip().lower() == "true"
    elif kind is int:
        if isinstance(answer, int) and not isinstance(answer, bool):
            return answer
        if isinstance(answer, float) and answer.is_integer():
            return int(answer)
        if isinstance(answer, str) and answer.strip().lstrip("-").isdigit():
            return int(answer.strip())
    elif isinstance(answer, str) and answer.strip():
        return answer.strip().casefold()
    raise ValueError(f"expected {expected}, got {shorten(answer)} ({type(answer).__name__})")


_UNSET: Any = object()


def _read(ask: Callable[[], Any], doing: str) -> tuple[bool, Any]:
    """(True, `ask()`), or (False, None) once it has said in one line that a cell above has not run yet: a
    name the cells make is missing (the kernel restarted, a cell run out of order). Any other error, a
    NameError's subclass too (UnboundLocalError: a mistake in the code), goes through."""
    try:
        return True, ask()
    except NameError as err:
        if type(err) is not NameError:
            raise
        print(f"Cannot {doing} yet: {not_yet(err)}")
        return False, None


@dataclass
class Exercise:
    """A question whose answer is read from the live cluster when it is checked, never written down.

    Predict first (`ex.predict(17)`, before the cell that reveals it), then `ex.check()` after it; or
    answer directly with `ex.check(answer)`. The answer stays hidden until a check."""

    question: str
    solution: Callable[[], Any]
    kind: type = int
    hint: str = ""
    choices: Sequence[Any] = ()
    needs_kernel: bool = False
    prediction: Any = None
    passed: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise TypeError(f"an exercise's kind is int, str or bool, not {self.kind!r}")

    def predict(self, answer: Any) -> None:
        if answer is None:
            print(f"Predict: {self.question}\n  (write your prediction in the parentheses, run this cell, then go on)")
            return
        try:
            self.prediction = _normalise(answer, self.kind)
        except ValueError as err:
            print(f"Cannot record that: {err}.")
            return
        print(f"Prediction recorded: {shorten(answer)}. Run the next cells, then check it.")

    def _wrong(self, right: Any) -> Any:
        if self.kind is bool:
            return not right
        if self.kind is int:
            return right + 1
        others = [c for c in self.choices if _normalise(c, str) != right]
        return others[0] if others else f"not-{right}"

    def check(self, answer: Any = _UNSET) -> None:
        if self.needs_kernel and not can_use_namespaces():
            print(f"Exercise skipped: {self.question!r} reads the kernel ({why_no_namespaces()}).")
            return
        answer = self.prediction if answer is _UNSET else answer
        ran, truth = _read(self.solution, "check")
        if not ran:
            return
        if truth is None:
            print(f"Cannot check yet: the cluster has no answer to {self.question!r} (did the cells above run?)")
            return
        right = _normalise(truth, self.kind)
        if answer is None and _mode() == "1":
            answer = right
        elif answer is None and _mode() == "wrong":
            answer = self._wrong(right)
        if answer is None:
            print(f"Exercise: {self.question}\n  (no answer yet: put yours in `check(...)`, or in `predict(...)` "
                  "above, and run the cell again)")
            return
        try:
            given = _normalise(answer, self.kind)
        except ValueError as err:
            print(f"Cannot check that: {err}.")
            return
        self.passed = given == right
        if self.passed:
            print(f"Correct: {shorten(answer)}, and the cluster agrees.")
        else:
            print(f"Not quite: you said {shorten(answer)}, the cluster says {right!r}."
                  + (f" Hint: {self.hint}" if self.hint else ""))
        _enforce(self.question, self.passed)


@dataclass
class Task:
    """Something the learner does to the live cluster (break it, fix it), checked by reading it back.

    `done()` returns None when the goal holds, else what is still wrong. `broken()`, if given, returns None
    once the cells above have broken what the task fixes, read back from the same cluster, else what has not
    happened yet: a goal that holds because nothing was ever broken is not a fix, and is not "Done".
    `solution()` is the hidden answer: it runs only under ENILAB_LAB_SOLUTIONS=1 or when the learner calls
    `task.solve()`."""

    goal: str
    done: Callable[[], str | None]
    solution: Callable[[], Any] | None = None
    hint: str = ""
    needs_kernel: bool = False
    passed: bool | None = None
    broken: Callable[[], str | None] | None = None

    def _solve(self) -> None:
        if self.solution is None:
            raise RuntimeError(f"the task {self.goal!r} has no solution to run")
        self.solution()

    def _not_broken_yet(self, doing: str) -> bool:
        """True (having said so in one line) if the break this task fixes has not happened on its cluster."""
        if self.broken is None:
            return False
        ran, missing = _read(self.broken, doing)
        if not ran:
            return True
        if missing is None:
            return False
        if _mode() in ("1", "wrong"):  # a headless run goes through every cell: its break must have happened
            raise AssertionError(f"ENILAB_LAB_SOLUTIONS={_mode()}: the break before {self.goal!r} never "
                                 f"happened: {missing}")
        print(f"Not yet: {missing}. This task fixes what the cells above break; run them first, then this one.")
        self.passed = None
        return True

    def _skipped(self) -> bool:
        """True (having said so) if the task changes a kernel and this machine gives none."""
        if self.needs_kernel and not can_use_namespaces():
            print(f"Task skipped: {self.goal!r} changes a kernel ({why_no_namespaces()}).")
            return True
        return False

    def solve(self) -> None:
        """Give up and let the hidden solution do it, then check; a goal that holds already is left as it is."""
        if self._skipped() or self._not_broken_yet("solve"):
            return
        ran, still = _read(self.done, "solve")
        if ran and still is None:
            print(f"Done already: {self.goal}. Nothing to solve.")
            self.passed = True
        elif ran and _read(self._solve, "solve")[0]:
            self.check()

    def check(self) -> None:
        if self._skipped() or self._not_broken_yet("check"):
            return
        ran, still = _read(self.done, "check")
        if not ran:
            return
        if still is not None and _mode() == "1":
            self._solve()
            still = self.done()
        self.passed = still is None
        if self.passed:
            print(f"Done: {self.goal}. Checked on the live cluster.")
        else:
            print(f"Not quite: {still}" + (f"\n  Hint: {self.hint}" if self.hint else "")
                  + "\n  (stuck? `task.solve()` shows one way)")
        _enforce(self.goal, self.passed)


def enilab(*argv: str) -> str:
    """Run the `enilab` command line with the notebook's interpreter, in the notebook's folder, and print
    what it says: `enilab("simulate", "subnet-exhausted")`."""
    done = subprocess.run([sys.executable, "-m", "testbed.apps.cli", *argv], capture_output=True, text=True,
                          timeout=60, check=False)
    out = done.stdout + done.stderr
    print(f"$ enilab {shlex.join(argv)}\n{out}", end="")
    return out
