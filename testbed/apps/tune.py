"""`enilab tune`: what-if for the warm pool: one workload replayed on the simulator under many pool settings.

Every setting runs the real pool policy and ipamd against the simulated VPC, and is measured from the
events the run emits:

- idle IPs held: secondary IPs bound in the VPC that no pod uses, summed over the nodes, weighted by
  time (mean, time-weighted p95, and IP-hours wasted = the area under that curve / 3600);
- pod start delay caused by the pool: from a pod's creation to the moment its IP is usable. The
  simulator carries each cloud call out at once and reports the latency it drew for it; a node's ipamd
  makes its calls one after another, so a call starts when the node's previous call ended and an IP is
  usable when the call that bound it ended; a starting pod takes the node's idle IP that was usable first
  (a freed IP is usable at once). A pod that never got an IP counts the time it waited (to its deletion
  or the end). Percentiles are nearest-rank;
- cloud API calls by action, throttling hits (calls answered `Throttled`), ENIs created and deleted,
  subnet addresses in use at peak (secondary and primary addresses, and VPC hosts).

Sweeps are a grid: every combination of the swept values, the other knobs as the scenario sets them
(the product defaults for a generated workload). A value that is invalid on its own (min_prebound 0, a
negative interval, a word where a number goes) is refused, naming the parameter; a combination whose
values are each fine but do not fit together (min_prebound above max_prebound) is skipped with a note,
so that `--sweep min_prebound=1,5 --sweep max_prebound=2,10` still runs its three valid settings.

Examples
--------
>>> w = generate_workload("burst", nodes=4, hours=1, seed=3)
>>> result = tune(w, sweep_settings({"min_prebound": [1, 5], "max_prebound": [5]}, w.spec.pool), workers=1)
>>> [(r["min_prebound"], r["pareto"]) for r in result.rows]
[(1, True), (5, True)]
>>> result.rows[0]["ip_hours_wasted"] < result.rows[1]["ip_hours_wasted"]
True
>>> print(recommend(result, "p95_delay<=60s").explanation.splitlines()[0])
Recommended: min_prebound=1 max_prebound=5 release_interval=120s quick_release=off.
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import signal
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eni_core.model import PoolConfig
from eni_core.names import counted, shorten, whole_number
from testbed.apps.outputs import DRAWINGS, check_output_file, replacing
from testbed.apps.runner import apply_steps, check_supported
from testbed.errors import UsageError, UserError
from testbed.world.churn import MEAN_LIFE_S, check_churn, churn_workload, churn_world
from testbed.world.cluster import Cluster
from testbed.world.faults import FaultConfig
from testbed.world.pods import Pod
from testbed.world.scenario import MAX_ADVANCE_S, MAX_PREBOUND, load_scenario
from testbed.world.spec import ClusterSpec, Mode

__all__ = [
    "GOAL_METRICS",
    "PARAMETERS",
    "Recommendation",
    "TuneResult",
    "Workload",
    "generate_workload",
    "label",
    "load_workload",
    "mark_pareto",
    "measure",
    "parse_goals",
    "parse_sweep",
    "print_table",
    "recommend",
    "replay",
    "sweep_settings",
    "tune",
]

WORKLOADS = ("steady", "diurnal", "burst")
#: The cloud of a generated workload: every call takes 0.5 to 2 s, and 2% of calls are throttled.
GENERATED_CLOUD = FaultConfig(latency=(0.5, 2.0), throttle=0.02)
PODS_PER_NODE_DAY = 50  # `enilab bench sim`'s churn: 50,000 pods on 1,000 nodes in 24 h
SAMPLES = 240  # points of the pool-over-time series
MAX_NODES, MAX_PODS = 10_000, 2_000_000  # about a minute of simulation per setting at most
MAX_SETTINGS = 1000  # settings one tune replays: some 40 minutes of the default churn on 2 cores


# -- parameters and sweeps ---------------------------------------------------------------------------
def _count(name: str, text: str) -> int:
    """A count, by the rule of every option's whole number (`whole_number`: ASCII digits only, where
    `int` also reads `3_0` and other scripts' digits), from 1 to MAX_PREBOUND."""
    try:
        value = whole_number(text)
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"{name}: {err}") from None
    if value < 1:
        raise UsageError(f"{name}: {value} is below 1; the pool needs at least one pre-bound IP "
                         "(Pending pods pull no IPs, so with 0 no pod would ever start)")
    if value > MAX_PREBOUND:
        raise UsageError(f"{name}: {value} is above {MAX_PREBOUND}, the most a scenario's pool takes")
    return value


_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}


def _duration(name: str, text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text)
    if not m or m.group(2) not in _UNITS:
        raise UsageError(f"{name}: {shorten(text)} is not a duration; write seconds (30, 30s) or 2m, 500ms")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if not value <= MAX_ADVANCE_S:  # 400 digits make inf, which a replay cannot schedule
        raise UsageError(f"{name}: {shorten(text)} is more than ten years; give at most {MAX_ADVANCE_S:,} s")
    return value


def _interval(name: str, text: str) -> float:
    value = _duration(name, text)
    if value <= 0:
        raise UsageError(f"{name}: {shorten(text)} must be a positive number of seconds")
    return value


def _flag(name: str, text: str) -> bool:
    words = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}
    try:
        return words[text.strip().lower()]
    except KeyError:
        raise UsageError(f"{name}: {text!r} is not true or false") from None


#: The pool's knobs a sweep may vary, each with its parser (the PoolConfig fields).
PARAMETERS: dict[str, Callable[[str, str], Any]] = {
    "min_prebound": _count,
    "max_prebound": _count,
    "release_interval": _interval,
    "quick_release": _flag,
}


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """`name=v1,v2,...` -> (name, values). Bad syntax, an unknown name or a bad value: UsageError naming it.

    >>> parse_sweep("release_interval=30,2m")
    ('release_interval', [30.0, 120.0])
    """
    name, eq, values = text.partition("=")
    name = name.strip()
    if not eq or not name:
        raise UsageError(f"--sweep {text!r}: write PARAMETER=V1,V2,... (parameters: {', '.join(PARAMETERS)})")
    if name not in PARAMETERS:
        raise UsageError(f"--sweep {name}: unknown parameter; sweep one of {', '.join(PARAMETERS)}")
    items = [v.strip(" ") for v in values.split(",")]  # spaces after the commas; other blanks are refused
    if not values.strip() or any(not v for v in items):
        raise UsageError(f"--sweep {name}: list the values, comma-separated, none empty ({text!r})")
    parsed = [PARAMETERS[name](f"--sweep {name}", v) for v in items]
    for i, v in enumerate(parsed):
        if v in parsed[:i]:
            raise UsageError(f"--sweep {name}: {items[i]!r} is listed twice")
    return name, parsed


def sweep_settings(
    sweeps: Mapping[str, Sequence[Any]], base: PoolConfig | None = None
) -> tuple[list[PoolConfig], list[dict[str, Any]]]:
    """Every combination of the swept values over `base`, in the order given (the last varies fastest).

    Returns (settings, skipped): a combination whose values do not fit together (min_prebound above
    max_prebound) is skipped, with the reason.

    >>> ok, skipped = sweep_settings({"min_prebound": [1, 8], "max_prebound": [5, 10]})
    >>> [(c.min_prebound, c.max_prebound) for c in ok], skipped[0]["reason"]
    ([(1, 5), (1, 10), (8, 10)], 'min_prebound (8) is above max_prebound (5)')
    """
    base = base or PoolConfig()
    for name in sweeps:
        if name not in PARAMETERS:
            raise UsageError(f"--sweep {name}: unknown parameter; sweep one of {', '.join(PARAMETERS)}")
    names = list(sweeps)
    combinations = math.prod(len(sweeps[n]) for n in names)
    if combinations > MAX_SETTINGS:
        raise UsageError(f"--sweep: {combinations:,} combinations; give at most {MAX_SETTINGS:,} (each is a whole "
                         "replay): fewer values, or one parameter at a time")
    ok: list[PoolConfig] = []
    skipped: list[dict[str, Any]] = []
    for combo in itertools.product(*(sweeps[n] for n in names)):
        values = dict(zip(names, combo, strict=True))
        fields = {**setting_of(base), **values}
        if fields["min_prebound"] > fields["max_prebound"]:
            skipped.append({**fields, "reason": f"min_prebound ({fields['min_prebound']}) is above "
                                                f"max_prebound ({fields['max_prebound']})"})
            continue
        try:
            ok.append(PoolConfig(**fields))
        except ValueError as err:
            skipped.append({**fields, "reason": str(err)})
    return ok, skipped


def setting_of(config: PoolConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The swept knobs of a pool config, or of a result row, as a dict."""
    return {name: config[name] if isinstance(config, Mapping) else getattr(config, name) for name in PARAMETERS}


def label(row: Mapping[str, Any]) -> str:
    """A setting in words: `min_prebound=2 max_prebound=10 release_interval=120s quick_release=off`."""
    return (f"min_prebound={row['min_prebound']} max_prebound={row['max_prebound']} "
            f"release_interval={row['release_interval']:g}s quick_release={'on' if row['quick_release'] else 'off'}")


# -- workloads -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """What is replayed under every setting: a cluster, and either scenario steps or timed pod arrivals
    `(t, "create"|"delete", pod, node)` sorted by time. `end` is when measuring stops (seconds); `source`
    names the scenario file the steps come from."""

    name: str
    spec: ClusterSpec
    end: float
    steps: tuple[dict, ...] = ()
    arrivals: tuple[tuple[float, str, str, str], ...] = ()
    source: str = ""

    def with_latency(self, low: float, high: float) -> Workload:
        """The same workload on a cloud whose calls take `low` to `high` seconds each."""
        return replace(self, spec=replace(self.spec, faults=replace(self.spec.faults, latency=(low, high))))


def load_workload(path: str | Path) -> Workload:
    """A scenario file as a workload (shared-ENI mode, steps the simulator can run)."""
    scenario = load_scenario(path)
    if scenario.cluster.mode != Mode.SHARED_ENI:
        raise UsageError(f"{path}: cluster mode {scenario.cluster.mode} has no warm pool to tune; "
                         "tune a shared-eni scenario")
    check_supported(scenario, "sim")
    end = sum(s["seconds"] for s in scenario.steps if s["op"] == "advance")
    return Workload(scenario.name, scenario.cluster, float(end), steps=tuple(scenario.steps), source=scenario.source)


def _diurnal_rate(t: float) -> float:
    """Relative arrival rate over the day: lowest at 03:00, highest at 15:00 (0.2 to 1.8)."""
    return 1.0 - 0.8 * math.cos(2 * math.pi * (t / 86400 - 3 / 24))


def generate_workload(kind: str, *, nodes: int = 1000, hours: float = 24.0, seed: int = 1,
                      pods: int | None = None) -> Workload:
    """A churn of pods on `nodes` nodes over `hours` (by default 50 pods per node per day, each living 2 h on
    average, exponentially):

    - steady: arrivals at uniform times (`enilab bench sim`'s workload);
    - diurnal: arrivals follow the day, 9 times as many at 15:00 as at 03:00;
    - burst: deployments: 5 to 20 pods at once on one node, deleted together later.

    The cloud's calls take 0.5 to 2 s each and 2% are throttled (`GENERATED_CLOUD`).
    """
    if kind not in WORKLOADS:
        raise UsageError(f"--workload {kind}: unknown workload; use one of {', '.join(WORKLOADS)}")
    check_churn(nodes, None, hours, max_nodes=MAX_NODES, max_pods=MAX_PODS)
    span = hours * 3600
    total = round(nodes * PODS_PER_NODE_DAY * hours / 24) if pods is None else pods
    check_churn(nodes, total, hours, max_nodes=MAX_NODES, max_pods=MAX_PODS)  # the pods, given or made from the hours
    rng = random.Random(f"{kind}:{seed}")
    out: list[tuple[float, int, str, str, str]] = []  # (t, order, op, pod, node), as `enilab bench sim` makes

    def pod(i: int, born: float, died: float, node: str) -> None:
        out.append((born, 0, "create", f"pod-{i}", node))
        out.append((min(died, span), 1, "delete", f"pod-{i}", node))

    if kind == "steady":
        out = churn_workload(nodes, total, hours, seed)
    elif kind == "burst":
        i = 0
        while i < total:
            size = min(rng.randint(5, 20), total - i)
            born = rng.uniform(0, span * 0.9)
            died = born + rng.expovariate(1 / MEAN_LIFE_S)
            node = f"node-{rng.randrange(nodes)}"
            for _ in range(size):
                pod(i, born, died, node)
                i += 1
    else:
        for i in range(total):
            born = rng.uniform(0, span * 0.9)
            while rng.uniform(0, 1.8) > _diurnal_rate(born):
                born = rng.uniform(0, span * 0.9)
            pod(i, born, born + rng.expovariate(1 / MEAN_LIFE_S), f"node-{rng.randrange(nodes)}")
    if kind != "steady":  # `churn_workload` gives them in order
        out.sort()
    arrivals = tuple((t, op, name, node) for t, _, op, name, node in out)
    world = replace(churn_world(nodes, seed), faults=GENERATED_CLOUD)  # 4 ENIs x 10 IPs, 4 /16 subnets
    return Workload(f"{kind} ({counted(nodes, 'node')}, {hours:g} h, seed {seed})", world, span, arrivals=arrivals)


# -- measuring one setting -----------------------------------------------------------------------------
class _Meter:
    """Listens to a cluster's events and its VPC's bindings and keeps the figures of one run."""

    def __init__(self, cluster: _MeteredCluster, end: float) -> None:
        self.clock = cluster.clock
        self.books = list(cluster.vpc.books.values())
        self.created: dict[str, float] = {}  # pods not started yet -> when they were created
        self.eni_node: dict[str, str] = {}
        self.busy: dict[str, float] = {}  # node -> when its last cloud call ends
        self.ready: dict[str, list[float]] = {}  # node -> when each of its idle IPs is usable, sorted
        self.carry, self.carry_t = 0.0, -1.0  # a DescribeSubnets' latency, charged to the next node's call
        self.idle = self.running = 0
        self.t = 0.0
        self.area = 0.0
        self.time_at: Counter[int] = Counter()
        self.calls: Counter[str] = Counter()
        self.throttled = self.enis_created = self.enis_deleted = 0
        self.peak_used = self._used()
        self.delays: list[float] = []
        self.not_started = 0
        self.every = end / SAMPLES if end > 0 else math.inf
        self.next_sample = 0.0
        self.series: dict[str, list[float]] = {"t": [], "idle": [], "running": []}
        self.late: list[float] = []  # creation times of the pods that waited
        cluster.events.listeners.append(self.on_event)
        cluster.vpc.listeners.append(self.on_vpc)

    def _used(self) -> int:
        return sum(len(b.used) for b in self.books)

    def _tick(self, t: float) -> None:
        while self.next_sample <= t:
            for key, value in (("t", self.next_sample), ("idle", self.idle), ("running", self.running)):
                self.series[key].append(value)
            self.next_sample += self.every
        if t > self.t:
            self.area += self.idle * (t - self.t)
            self.time_at[self.idle] += t - self.t
            self.t = t

    def on_vpc(self, what: str, eni: str, ips: tuple) -> None:
        if what in ("bind", "unbind"):
            self._tick(self.clock.now())
            self.idle += len(ips) if what == "bind" else -len(ips)

    def on_event(self, e: dict) -> None:
        kind = e["kind"]
        if kind == "api":
            self._api(e)
        elif kind == "pod":
            self._tick(e["t"])
            if e["event"] == "Started":
                created = self.created.pop(e["pod"])
                ready = self.ready.get(e["node"])
                self._waited(created, max(e["t"], ready.pop(0) if ready else e["t"]) - created)
                self.running += 1
                self.idle -= 1
            elif e["event"] == "Deleted":
                if e["ip"] is not None:
                    bisect.insort(self.ready.setdefault(e["node"], []), e["t"])
                    self.running -= 1
                    self.idle += 1
                elif e["pod"] in self.created:
                    created = self.created.pop(e["pod"])
                    self._waited(created, e["t"] - created)
                    self.not_started += 1

    def _waited(self, created: float, delay: float) -> None:
        self.delays.append(delay)
        if delay > 0:
            self.late.append(created)

    def _api(self, e: dict) -> None:
        t, call, result = e["t"], e["call"], e["result"]
        self.calls[call] += 1
        self.throttled += result == "Throttled"
        latency = e.get("latency_ms", 0.0) / 1000
        node = e["node"] or self.eni_node.get(e["eni"])
        if node is None:  # DescribeSubnets: asked on behalf of the node whose calls follow
            self.carry = (self.carry if self.carry_t == t else 0.0) + latency
            self.carry_t = t
            return
        carried = self.carry if self.carry_t == t else 0.0
        self.carry = 0.0
        done = max(self.busy.get(node, t), t) + carried + latency
        self.busy[node] = done
        if result != "ok":
            return
        if call == "CreateNetworkInterface":
            self.eni_node[e["eni"]] = node
            self.enis_created += 1
        elif call == "DeleteNetworkInterface":
            self.eni_node.pop(e["eni"], None)
            self.enis_deleted += 1
        elif call == "AssignPrivateIpAddresses":
            ready = self.ready.setdefault(node, [])
            for _ in e.get("ips", ()):
                bisect.insort(ready, done)
        elif call == "UnassignPrivateIpAddresses":  # the newest-bound idle IPs go first
            ready = self.ready.get(node, [])
            del ready[max(len(ready) - len(e["ips"]), 0):]
        if call in ("CreateNetworkInterface", "AssignPrivateIpAddresses"):
            self.peak_used = max(self.peak_used, self._used())

    def finish(self, end: float) -> dict[str, Any]:
        self._tick(end)
        for created in self.created.values():
            self._waited(created, end - created)
            self.not_started += 1
        if self.series["t"] and self.series["t"][-1] < end:
            for key, value in (("t", end), ("idle", self.idle), ("running", self.running)):
                self.series[key].append(value)
        delayed = [0] * len(self.series["t"])
        for created in self.late:  # pods that waited, by the sample interval they were created in
            delayed[max(bisect.bisect_right(self.series["t"], created) - 1, 0)] += 1
        self.series["delayed"] = delayed
        delays = sorted(self.delays)
        return {
            "idle_ips_mean": _r(self.area / end if end > 0 else self.idle),
            "idle_ips_p95": _weighted_p95(self.time_at) if end > 0 else self.idle,
            "ip_hours_wasted": _r(self.area / 3600),
            "delay_mean_s": _r(sum(delays) / len(delays)) if delays else 0.0,
            "delay_p95_s": _r(_p95(delays)) if delays else 0.0,
            "delay_max_s": _r(delays[-1]) if delays else 0.0,
            "pods": len(delays),
            "pods_delayed": sum(d > 0 for d in delays),
            "pods_not_started": self.not_started,
            "api_calls": sum(self.calls.values()),
            "api_calls_by_action": dict(sorted(self.calls.items())),
            "throttled": self.throttled,
            "enis_created": self.enis_created,
            "enis_deleted": self.enis_deleted,
            "subnet_peak_used": self.peak_used,
        }


def _r(x: float) -> float:
    return round(x, 3)


def _p95(ordered: Sequence[float]) -> float:
    """Nearest rank: the smallest value with at least 95% of the values at or below it."""
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def _weighted_p95(time_at: Mapping[int, float]) -> int:
    """The smallest value held, with the time it was held, for at least 95% of the time."""
    total = sum(time_at.values())
    seen = 0.0
    for value in sorted(time_at):
        seen += time_at[value]
        if seen >= 0.95 * total - 1e-9:
            return value
    return max(time_at, default=0)


class _MeteredCluster(Cluster):
    """A cluster that tells its meter when each pod was created."""

    meter: _Meter

    def create_pod(self, name: str | None = None, node: str | None = None, **kw: Any) -> Pod:
        name = name or self.next_pod_name()
        fresh = name not in self.pods
        if fresh:
            self.meter.created[name] = self.clock.now()
        try:
            return super().create_pod(name, node, **kw)
        except Exception:
            if fresh:
                self.meter.created.pop(name, None)
            raise


def replay(workload: Workload, config: PoolConfig) -> _MeteredCluster:
    """Run `workload` with the pool set to `config` to its end; the cluster's `meter` has listened
    throughout (its figures: `cluster.meter.finish(end)`). Close the cluster when done."""
    spec = replace(workload.spec, pool=config)
    cluster = _MeteredCluster(replace(spec, nodes=()), keep_events=False)
    cluster.meter = _Meter(cluster, workload.end)
    for node in spec.nodes:  # added after the meter listens: their first IPs count
        cluster.add_node(node)
    apply_steps(cluster, workload.steps, workload.source)  # within a run's budget, as `simulate` runs them
    # Pods that arrive at one instant on one node (a deployment's replicas) are created together.
    for (t, op, node), group in itertools.groupby(workload.arrivals, key=lambda a: (a[0], a[1], a[3])):
        cluster.run_until(t)
        names = [a[2] for a in group]
        if op == "create":
            cluster.create_pods(len(names), node, names)
        else:
            for pod in names:
                if pod in cluster.pods:
                    cluster.delete_pod(pod)
    cluster.run_until(max(workload.end, cluster.clock.now()))
    return cluster


def measure(workload: Workload, config: PoolConfig) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Replay `workload` with the pool set to `config`: (the figures, the pool over time).

    The series has `t` (seconds), `idle` (idle IPs held) and `running` (pods) sampled at 240 even points
    (plus the end), and `delayed`: how many pods created in each interval from one point to the next waited
    for an IP."""
    cluster = replay(workload, config)
    try:
        figures = cluster.meter.finish(cluster.clock.now())
    finally:
        cluster.close()
    return {**setting_of(config), **figures}, cluster.meter.series


# -- a sweep -------------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    """One row of figures per setting (in sweep order), the skipped combinations and each setting's pool
    over time (`series[i]` belongs to `rows[i]`)."""

    workload: str
    end: float
    nodes: int
    rows: list[dict[str, Any]]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    series: list[dict[str, list[float]]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"workload": self.workload, "seconds": self.end, "nodes": self.nodes,
                "settings": self.rows, "skipped": self.skipped}

    @property
    def front(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["pareto"]]


PARETO_AXES = ("ip_hours_wasted", "delay_p95_s", "api_calls")


def mark_pareto(rows: list[dict[str, Any]]) -> None:
    """`pareto` is True for a row that no other row beats on waste, p95 start delay and API calls at once."""
    for row in rows:
        row["pareto"] = not any(
            all(o[k] <= row[k] for k in PARETO_AXES) and any(o[k] < row[k] for k in PARETO_AXES)
            for o in rows if o is not row)


Outcome = tuple[dict[str, Any], dict[str, list[float]]]


def _replay_share(conn: Any, workload: Workload, share: list[tuple[int, PoolConfig]]) -> None:
    """A worker process: replay its share of the settings, sending `(index, outcome, error)` for each.
    Ctrl-C is the parent's to handle (it terminates the workers), so a worker prints no traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for index, config in share:
            try:
                conn.send((index, measure(workload, config), None))
            except Exception as err:  # the parent raises it, naming the setting
                users = isinstance(err, UserError)
                conn.send((index, None, (str(err) if users else f"{type(err).__name__}: {err}", users)))
                return
    finally:
        conn.close()


def _failed(config: PoolConfig, message: str, users: bool) -> Exception:
    """A setting's replay failed: a UsageError (exit 2) for a user's mistake, else a RuntimeError."""
    return (UsageError if users else RuntimeError)(f"replaying {label(setting_of(config))} failed: {message}")


def _in_this_process(workload: Workload, configs: list[PoolConfig]) -> Iterator[tuple[int, Outcome]]:
    """Each setting's outcome in turn; a user's mistake names the setting, as from the worker processes."""
    for index, config in enumerate(configs):
        try:
            yield index, measure(workload, config)
        except UserError as err:
            raise _failed(config, str(err), True) from None


def _in_processes(workload: Workload, configs: list[PoolConfig], workers: int) -> Iterator[tuple[int, Outcome]]:
    """Each setting's outcome as it arrives, from `workers` processes that share the settings round-robin.
    Each worker has its own pipe and no lock is shared, so terminating them (on leaving, also on Ctrl-C or
    an error) can never leave the parent waiting."""
    processes, pipes = [], []
    try:
        for w in range(workers):
            receive, send = multiprocessing.Pipe(duplex=False)
            share = [(i, c) for i, c in enumerate(configs) if i % workers == w]
            proc = multiprocessing.Process(target=_replay_share, args=(send, workload, share), daemon=True)
            proc.start()
            send.close()
            processes.append(proc)
            pipes.append(receive)
        open_pipes = list(pipes)
        while open_pipes:
            for conn in multiprocessing.connection.wait(open_pipes):
                try:
                    index, outcome, error = conn.recv()
                except EOFError:
                    open_pipes.remove(conn)
                    continue
                if error is not None:  # the others are stopped on the way out
                    raise _failed(configs[index], *error)
                yield index, outcome
    finally:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            proc.join()
        for conn in pipes:
            conn.close()


def tune(
    workload: Workload,
    settings: Iterable[PoolConfig] | tuple[list[PoolConfig], list[dict[str, Any]]],
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TuneResult:
    """Replay `workload` under each setting, `workers` at a time in separate processes (None: one per
    core; 1: in this process). The result does not depend on the number of workers. `settings` may be
    what `sweep_settings` returns (the skipped ones are then reported)."""
    skipped: list[dict[str, Any]] = []
    if isinstance(settings, tuple) and len(settings) == 2 and isinstance(settings[1], list):
        settings, skipped = settings
    configs = list(settings)
    if not configs:
        raise UsageError("no setting to try: every combination was skipped" +
                         (f" ({skipped[0]['reason']})" if skipped else ""))
    workers = min(workers or os.cpu_count() or 1, len(configs))
    done: dict[int, Outcome] = {}
    if progress:
        progress(0, len(configs))
    arriving = (_in_processes(workload, configs, workers) if workers > 1
                else _in_this_process(workload, configs))
    for index, outcome in arriving:
        done[index] = outcome
        if progress:
            progress(len(done), len(configs))
    if len(done) < len(configs):
        raise RuntimeError(f"a worker process ended with {len(configs) - len(done)} settings not replayed")
    outcomes = [done[i] for i in range(len(configs))]
    rows = [row for row, _ in outcomes]
    mark_pareto(rows)
    return TuneResult(workload.name, workload.end, len(workload.spec.nodes), rows, skipped,
                      [series for _, series in outcomes])


# -- goals and the recommendation ----------------------------------------------------------------------
#: Goal metric -> (row key, kind: "time" takes s/ms/m/h, "count" takes a plain number, words for people).
GOAL_METRICS: dict[str, tuple[str, str, str]] = {
    "p95_delay": ("delay_p95_s", "time", "p95 start delay"),
    "mean_delay": ("delay_mean_s", "time", "mean start delay"),
    "max_delay": ("delay_max_s", "time", "longest start delay"),
    "idle_mean": ("idle_ips_mean", "count", "mean idle IPs"),
    "idle_p95": ("idle_ips_p95", "count", "p95 idle IPs"),
    "waste": ("ip_hours_wasted", "count", "IP-hours wasted"),
    "api_calls": ("api_calls", "count", "API calls"),
    "throttled": ("throttled", "count", "throttled calls"),
    "enis_created": ("enis_created", "count", "ENIs created"),
    "subnet_peak": ("subnet_peak_used", "count", "subnet addresses used at peak"),
    "not_started": ("pods_not_started", "count", "pods that never started"),
}
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, ">": lambda a, b: a > b,
}


@dataclass(frozen=True)
class Goal:
    metric: str
    op: str
    value: float
    text: str

    @property
    def key(self) -> str:
        return GOAL_METRICS[self.metric][0]

    def met(self, row: Mapping[str, Any]) -> bool:
        return _OPS[self.op](row[self.key], self.value)

    def miss(self, row: Mapping[str, Any]) -> float:
        """How far `row` is from meeting the goal, relative to the goal's value (0 when met)."""
        if self.met(row):
            return 0.0
        return abs(row[self.key] - self.value) / max(abs(self.value), 1e-9)


def parse_goals(text: str) -> list[Goal]:
    """`metric op value[unit]`, several joined by `,`: `p95_delay<=2s, api_calls<50000`.

    >>> [(g.metric, g.op, g.value) for g in parse_goals("p95_delay<=500ms,waste<100")]
    [('p95_delay', '<=', 0.5), ('waste', '<', 100.0)]
    """
    goals = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"([a-z0-9_]+)\s*(<=|>=|<|>)\s*(\d+(?:\.\d+)?)\s*([a-z]*)", part)
        if not m:
            raise UsageError(f"--recommend {part!r}: write METRIC OP VALUE, e.g. p95_delay<=2s, with OP one of "
                             f"<= < >= > and goals joined by ','")
        metric, op, number, unit = m.groups()
        if not math.isfinite(float(number)):  # 400 digits make inf, which every setting meets or misses alike
            raise UsageError(f"--recommend {shorten(part)}: the number is too large; give one a setting can reach")
        if metric not in GOAL_METRICS:
            raise UsageError(f"--recommend {part!r}: unknown metric {metric}; use one of {', '.join(GOAL_METRICS)}")
        kind = GOAL_METRICS[metric][1]
        if kind == "time":
            if unit not in _UNITS:
                raise UsageError(f"--recommend {part!r}: unknown unit {unit!r}; use s, ms, m or h")
            value = float(number) * _UNITS[unit]
        else:
            if unit:
                raise UsageError(f"--recommend {part!r}: {metric} is a count and takes no unit")
            value = float(number)
        goals.append(Goal(metric, op, value, part))
    return goals


@dataclass(frozen=True)
class Recommendation:
    """`row` meets every goal at the least cost (None if no setting does); `closest` is the setting that
    comes nearest when none does; `explanation` says why, in words."""

    goals: tuple[Goal, ...]
    row: dict[str, Any] | None
    closest: dict[str, Any] | None
    explanation: str


def _cost(row: Mapping[str, Any]) -> tuple[float, ...]:
    """Cheapest: the least IP-hours wasted, then the fewest API calls, then the shortest p95 delay."""
    return (row["ip_hours_wasted"], row["api_calls"], row["delay_p95_s"], row["min_prebound"], row["max_prebound"])


def _show(goal: Goal, row: Mapping[str, Any]) -> str:
    value = row[goal.key]
    unit = " s" if GOAL_METRICS[goal.metric][1] == "time" else ""
    return f"{GOAL_METRICS[goal.metric][2]} {value:g}{unit}"


def recommend(result: TuneResult, goals: str | Sequence[Goal]) -> Recommendation:
    """The cheapest setting of `result` that meets every goal (see `parse_goals`), and why."""
    parsed = tuple(parse_goals(goals) if isinstance(goals, str) else goals)
    wanted = ", ".join(g.text for g in parsed)
    meeting = sorted((r for r in result.rows if all(g.met(r) for g in parsed)), key=_cost)
    if meeting:
        best = meeting[0]
        lines = [f"Recommended: {label(best)}.",
                 f"It meets {wanted} ({'; '.join(_show(g, best) for g in parsed)}) and is the cheapest of the "
                 f"{len(meeting)} of {len(result.rows)} settings that do: {best['ip_hours_wasted']:g} IP-hours "
                 f"wasted (mean {best['idle_ips_mean']:g} idle IPs), {best['api_calls']} API calls."]
        if len(meeting) > 1:
            nxt = meeting[1]
            lines.append(f"The next cheapest, {label(nxt)}, wastes {nxt['ip_hours_wasted']:g} IP-hours with "
                         f"{nxt['api_calls']} API calls.")
        cheaper = [r for r in result.rows if _cost(r) < _cost(best)]
        if cheaper:
            c = min(cheaper, key=_cost)
            failed = [g for g in parsed if not g.met(c)]
            lines.append(f"Cheaper settings miss the goal: {label(c)} wastes {c['ip_hours_wasted']:g} IP-hours but "
                         f"has {'; '.join(_show(g, c) for g in failed)}.")
        return Recommendation(parsed, best, None, "\n".join(lines))
    closest = min(result.rows, key=lambda r: (sum(g.miss(r) for g in parsed), _cost(r)))
    missed = [g for g in parsed if not g.met(closest)]
    text = (f"No setting meets {wanted}. The closest is {label(closest)}: "
            f"{'; '.join(_show(g, closest) for g in missed)} (goal {', '.join(g.text for g in missed)}). "
            "Sweep wider values (a larger min_prebound shortens start delays), or relax the goal.")
    return Recommendation(parsed, None, closest, text)


# -- the command line ----------------------------------------------------------------------------------
def parse_latency(text: str) -> tuple[float, float]:
    """`0.5-2` (seconds, a range) or `1` (every call): the cloud's latency per call."""
    low, _, high = text.partition("-")
    try:
        lo, hi = float(low), float(high or low)
    except ValueError:
        raise UsageError(f"--latency {shorten(text)}: write MIN-MAX in seconds, e.g. 0.5-2") from None
    if not 0 <= lo <= hi <= 10:
        raise UsageError(f"--latency {shorten(text)}: keep 0 <= MIN <= MAX <= 10 seconds")
    return lo, hi


def workload_from_args(args: Any) -> Workload:
    if bool(args.scenario) == bool(args.workload):
        raise UsageError("give a scenario file or --workload diurnal|burst|steady (one of the two)")
    if args.scenario:
        for flag in ("nodes", "hours", "pods", "seed"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} shapes a generated --workload; a scenario file brings its own")
        workload = load_workload(args.scenario)
    else:
        workload = generate_workload(args.workload, nodes=1000 if args.nodes is None else args.nodes,
                                     hours=24.0 if args.hours is None else args.hours,
                                     seed=1 if args.seed is None else args.seed, pods=args.pods)
    if args.latency:
        workload = workload.with_latency(*parse_latency(args.latency))
    return workload


def _progress():
    """A rich progress bar on stderr when it is a terminal, else nothing (a context of a callback)."""
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not (sys.stderr.isatty() and console.is_terminal):  # a pipe, even where FORCE_COLOR is set: no bar
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def bar():
        with Progress(TextColumn("replaying settings"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as p:
            task = p.add_task("tune", total=None)
            yield lambda done, total: p.update(task, completed=done, total=total)

    return bar()


def print_table(console: Any, result: TuneResult) -> None:
    from rich.table import Table

    table = Table(title=f"enilab tune: {result.workload}, {result.end / 3600:.3g} simulated h, "
                        f"{counted(result.nodes, 'node')}",
                  title_justify="left")
    for col, justify in (("#", "right"), ("front", "center"), ("min", "right"), ("max", "right"),
                         ("release", "right"), ("quick", "center"), ("idle\nmean", "right"), ("idle\np95", "right"),
                         ("IP-h\nwasted", "right"), ("delay\nmean", "right"), ("delay\np95", "right"),
                         ("delay\nmax", "right"), ("API\ncalls", "right"), ("throttled", "right"),
                         ("ENIs\n+/-", "right"), ("subnet\npeak", "right")):
        table.add_column(col, justify=justify, min_width=max(len(w) for w in col.split("\n")))
    for n, r in enumerate(result.rows, 1):
        table.add_row(str(n), "[bold red]*[/bold red]" if r["pareto"] else "", str(r["min_prebound"]),
                      str(r["max_prebound"]),
                      f"{r['release_interval']:g}s", "on" if r["quick_release"] else "off",
                      f"{r['idle_ips_mean']:.1f}", str(r["idle_ips_p95"]), f"{r['ip_hours_wasted']:.1f}",
                      f"{r['delay_mean_s']:.2f}s", f"{r['delay_p95_s']:.2f}s", f"{r['delay_max_s']:.2f}s",
                      str(r["api_calls"]), str(r["throttled"]), f"{r['enis_created']}/{r['enis_deleted']}",
                      str(r["subnet_peak_used"]))
    console.print(table)
    console.print("[bold red]*[/bold red] the Pareto front: no other setting is as good on IP-hours wasted, p95 "
                  "start delay and API calls and better on one of them.", highlight=False)
    for s in result.skipped:
        console.print(f"skipped {label(s)}: {s['reason']}", highlight=False)


def run_cli(args: Any, console: Any) -> int:
    """`enilab tune`: parse everything first (bad input changes nothing), replay, then report."""
    import json
    import sys

    sweeps: dict[str, list[Any]] = {}
    for text in args.sweep or []:
        name, values = parse_sweep(text)
        if name in sweeps:
            raise UsageError(f"--sweep {name}: given twice; list all its values in one --sweep")
        sweeps[name] = values
    goals = parse_goals(args.recommend) if args.recommend else None
    cores = os.cpu_count() or 1
    if args.workers is not None and not 1 <= args.workers <= cores:  # each process holds a whole simulation
        raise UsageError(f"--workers {args.workers}: give 1 to {cores} (this machine's cores); more processes "
                         "only take more memory")
    if args.png is not None:
        check_output_file("--png", args.png, DRAWINGS)
    workload = workload_from_args(args)
    settings = sweep_settings(sweeps, workload.spec.pool)
    with _progress() as progress:
        result = tune(workload, settings, workers=args.workers, progress=progress)
    advice = recommend(result, goals) if goals else None
    if args.json:
        out = result.to_json()
        if advice:
            out["recommendation"] = {"goals": [g.text for g in advice.goals], "meets": advice.row is not None,
                                     "setting": setting_of(advice.row or advice.closest),
                                     "explanation": advice.explanation}
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        print_table(console, result)
        if advice:
            console.print(advice.explanation, highlight=False)
    if args.png:
        from testbed.observe.tuning import draw_tuning

        pick = advice.row if advice and advice.row else None
        recommended = result.rows.index(pick) if pick else None
        chosen = ([recommended] if recommended is not None else []) + [
            i for i in sorted(range(len(result.rows)), key=lambda i: _cost(result.rows[i]))
            if result.rows[i]["pareto"] and i != recommended]
        with replacing(args.png) as temp:
            draw_tuning(result.rows, result.series, temp, chosen=chosen[:5], recommended=recommended,
                        title=f"warm-pool settings on {result.workload}",
                        over_time="pool over time: " + ("recommended + " if pick else "") + "cheapest of the front")
        print(f"drew {args.png}", file=sys.stderr if args.json else sys.stdout)
    return 1 if advice and advice.row is None else 0
