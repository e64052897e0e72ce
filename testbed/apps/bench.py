"""Benchmarks that print their figures and the ratio against a baseline measured in the same run."""
from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import json
import multiprocessing
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from eni_core.names import counted, shorten
from testbed.apps import heap
from testbed.apps.measure import peak_rss_mb
from testbed.errors import UsageError
from testbed.world.churn import Arrival, check_churn, churn_workload, churn_world, replay_churn
from testbed.world.cluster import Cluster
from testbed.world.spec import ClusterSpec

__all__ = ["print_result", "run"]

SIM_TARGET_S = 10.0
SIM_TARGET_MB = 1024
SIM_TARGET_SCALING = 1.1  # cost per event at full size over a tenth's (#17: 10,000 nodes against 1,000)
# the largest `bench sim` takes: five times #17's 10,000 nodes and 500,000 pods, some 1.6 GiB and 10 minutes
SIM_MAX_NODES, SIM_MAX_PODS = 50_000, 2_500_000
SIM_PODS, SIM_HOURS = 50_000, 24.0  # `bench sim`'s defaults: 50,000 pod creations over 24 simulated hours
BRINGUP_DEFAULTS = {False: (10, 50), True: (2, 10)}  # (nodes, pods per node), by --backend containers or not
BRINGUP_MAX_PODS = 100_000  # namespaces; the kernel's limits say no earlier on most machines (a clear error too)


class NaiveCluster(Cluster):
    """The baseline: settle every node after every event, as a controller without dirty tracking would.
    It is built as the cluster is (settling every node per node added would take quadratic time to set
    up), then turned `naive`."""

    naive = False

    def _settle(self, names):
        super()._settle(list(self.nodes) if self.naive else names)


def _part(events: list[Arrival], k: int, parts: int) -> list[Arrival]:
    """The `k`th of `parts` nearly equal parts of the workload, in order: the replay's slices and the ratio's alike."""
    return events[len(events) * k // parts:len(events) * (k + 1) // parts]


def _sim_once(spec: ClusterSpec, events: list[Arrival], hours: float, slices: int = 1,
              between: Callable[[], object] | None = None) -> tuple[Cluster, float, float, list[float], int, int]:
    """Build the cluster and replay the workload: (cluster, setup seconds, replay seconds, replay CPU
    seconds of each slice, events done, objects the garbage collector found unreachable after the replay). CPU time is
    what the scaling ratio uses: other processes on the machine stretch wall time, not the CPU time this
    process spends. With `slices`, the replay runs in that many parts with `between()` called before
    each and after the last, outside the clocks; the cluster waits meanwhile, so the replay is the same.

    What exists once the cluster is built (the workload, the nodes) lives for the whole replay, so it is
    frozen out of the garbage collector's sight: a full collection would otherwise walk all of it, a
    cost per event that grows with the cluster (cachegrind: 112 -> 89 last-level misses per event at
    1,250 nodes with a 4 MiB cache). The collector is off during the replay: each of its passes walks
    the objects the replay made, whose number grows with the cluster (at 10,000 nodes 1.5 s of 64, ten
    times the share at 1,000). The replay makes no reference cycle, so it frees all its garbage without
    the collector; the collection run after it proves it (the last figure, which must be 0)."""
    gc.collect()
    gc.freeze()  # the workload, before the set-up: a collection while nodes are made would walk it all
    seconds = 0.0
    cpu_s: list[float] = []
    done = 0
    try:
        t0 = time.perf_counter()
        cluster = Cluster(spec, keep_events=False)
        setup_s = time.perf_counter() - t0
        gc.collect()
        gc.freeze()
        gc.disable()
        for k in range(slices):
            part = _part(events, k, slices)
            if between is not None:
                between()
            t0, c0 = time.perf_counter(), time.process_time()
            done += replay_churn(cluster, part)
            if k == slices - 1:
                cluster.run_until(hours * 3600)
            seconds += time.perf_counter() - t0
            cpu_s.append(time.process_time() - c0)
        if between is not None:
            between()
    finally:
        gc.enable()
        gc.unfreeze()
    return cluster, setup_s, seconds, cpu_s, done, gc.collect()


SLICES = 10  # the full size's replay runs in 10 parts, with a run of the tenth before each and after the last
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """The tenth's process: killed by the kernel when the bench's process dies, however it dies (a
    `kill -9` gives the bench no chance to stop it, and a worker left waiting would live on). Linux
    only; elsewhere the worker ends when it finds its work queue closed."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc, as eni_core.netns opens it
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _tenth(nodes: int, pods: int, hours: float, seed: int) -> tuple[float, float, float, int, int, bool]:
    """One run of the workload at a tenth of the size: (setup s, replay s, replay CPU s, events, garbage,
    whether its heap asked for huge pages)."""
    _, setup_s, seconds, cpu_s, done, garbage = _sim_once(churn_world(nodes, seed),
                                                          churn_workload(nodes, pods, hours, seed), hours)
    return setup_s, seconds, sum(cpu_s), done, garbage, heap.in_effect()


def bench_sim(nodes: int, pods: int, hours: float, seed: int, baseline_events: int | None = None) -> dict[str, Any]:
    """Replay `pods` creations and deletions on `nodes` nodes; the same workload at a tenth of the size
    is measured in the same invocation, so that `scaling_ratio` (cost per event at full size over cost
    per event at a tenth) says whether the simulation stays linear: 1.0 is perfectly linear.

    The two sizes are measured in turns, so that both see the same machine. On a shared machine the
    speed changes from second to second with what the other tenants do: single runs of the tenth took
    5.1 to 8.0 s of CPU in one invocation, in two clusters (about 5.4 and about 7.5), and the full size's
    slices as much. So the full size's replay runs in `SLICES` parts, and a run of the tenth, in a process
    of its own, comes before each part and after the last (11 runs), and `scaling_ratio` weighs each
    part against the two runs beside it: the full size's CPU over what the tenth cost per event in
    those minutes, times the part's events. Both sizes then sample the same minutes in the same
    proportions. The tenth's median, which this used before, does not: it takes whichever speed most
    runs had, where the full size pays every minute's: two invocations of the same code read 1.19 (the
    tenth fast in 6 runs of 11) and 1.08 against the median, 1.10 and 1.12 against the neighbours.
    `scaling_ratio_median_tenth` gives the old figure still, and `scaling_ratio_runs` each part's own
    ratio (a part is a tenth of the run, not of the cluster: its ratio moves with the churn's phase,
    filling first and draining last).
    Each of the full size's parts starts on caches the tenth has just used, which costs it the refill
    of one last-level cache each time (some 50 ms, against it)."""
    small_nodes, small_pods = max(1, nodes // 10), max(1, pods // 10)
    tenths: list[tuple[float, float, float, int, int, bool]] = []
    spec = churn_world(nodes, seed)
    events = churn_workload(nodes, pods, hours, seed)
    # an executor, not a Pool: if the tenth's process dies (killed, out of memory), the result raises
    # BrokenProcessPool where a Pool would wait for it forever
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as worker:
        def run_tenth() -> None:
            tenths.append(worker.submit(_tenth, small_nodes, small_pods, hours, seed).result())

        cluster, setup_s, seconds, slice_cpu, done, garbage = _sim_once(spec, events, hours, SLICES, run_tenth)
    rss = peak_rss_mb()
    pages = heap.report()  # while the cluster is in memory: how much of it the kernel gave huge pages
    running = sum(n.running for n in cluster.nodes.values())
    # a node whose subnets cannot fill its pool polls every 30 s: a starved world measures polls, not churn
    short = sum(bool(n.ipamd.shortfall) for n in cluster.nodes.values())
    api_calls, all_events = cluster.vpc.calls, cluster.events.count
    del cluster

    small_setup, small_s, small_cpu = (statistics.median(t[i] for t in tenths) for i in range(3))
    small_done = tenths[0][3]
    cpu_s = sum(slice_cpu)
    # each slice against the tenth's runs just before and after it: what the tenth cost in those minutes
    beside = [(tenths[k][2] + tenths[k + 1][2]) / 2 * len(_part(events, k, SLICES)) / small_done
              for k in range(len(slice_cpu))]
    result = {
        "nodes": nodes, "events": done, "api_calls": api_calls, "all_events": all_events,
        "seconds": round(seconds, 3), "cpu_s": round(cpu_s, 3), "setup_s": round(setup_s, 3),
        "events_per_s": round(done / seconds), "peak_rss_mb": round(rss, 1),
        "pods_left_running": running, "nodes_short_of_addresses": short, "cores": os.cpu_count(),
        "cyclic_garbage": garbage + sum(t[4] for t in tenths), "heap": pages,
        "tenth": {"nodes": small_nodes, "events": small_done, "runs": len(tenths), "seconds": round(small_s, 3),
                  "cpu_s": round(small_cpu, 3), "cpu_s_runs": [round(t[2], 4) for t in tenths],
                  "setup_s": round(small_setup, 3),
                  # the tenth's process inherits the bench's environment, and with it the heap's pages
                  "huge_pages": all(t[5] for t in tenths)},
        "slice_cpu_s": [round(c, 4) for c in slice_cpu],
        "scaling_ratio": round(cpu_s / sum(beside), 2),
        # a part with no event (fewer than 10 in all) has no ratio of its own
        "scaling_ratio_runs": [round(c / b, 2) if b else None for c, b in zip(slice_cpu, beside, strict=True)],
        "scaling_ratio_median_tenth": round(cpu_s / done / (small_cpu / small_done), 2),
        "setup_scaling_ratio": round((setup_s / nodes) / (small_setup / small_nodes), 2) if small_setup else None,
    }
    # The baseline, on the first events only (it is far slower, the more so the more nodes), per event.
    naive = NaiveCluster(spec, keep_events=False)
    naive.naive = True
    t0 = time.perf_counter()
    n = replay_churn(naive, events[:baseline_events or max(40, 400_000 // nodes)])
    naive_per_event = (time.perf_counter() - t0) / n
    ours_per_event = seconds / done
    result.update({
        "baseline": "settle every node on every event",
        "baseline_ms_per_event": round(naive_per_event * 1000, 3),
        "ms_per_event": round(ours_per_event * 1000, 4),
        "speedup": round(naive_per_event / ours_per_event, 1),
        "target_s": SIM_TARGET_S * nodes / 1000, "target_mb": SIM_TARGET_MB,
        "within_target": (seconds + setup_s <= SIM_TARGET_S * nodes / 1000 and rss <= SIM_TARGET_MB
                          and result["cyclic_garbage"] == 0 and short == 0),
        # a target of its own: at the default size the tenth (100 nodes) fits in the second-level cache
        # and the full size does not, so the ratio there measures the caches more than the simulation
        "target_scaling_ratio": SIM_TARGET_SCALING, "linear": result["scaling_ratio"] <= SIM_TARGET_SCALING,
    })
    return result


#: The options each kind of bench reads, beside --json. Another kind's option would be ignored: it is refused.
OPTIONS = {"sim": ("--nodes", "--pods", "--hours", "--seed"),
           "bringup": ("--nodes", "--pods-per-node", "--backend", "--compare"), "cni": ()}


def _check_options(what: str, args: argparse.Namespace) -> None:
    """UsageError for an option given (not None) that `bench what` would not read, naming the kind it is for."""
    for option in dict.fromkeys(o for options in OPTIONS.values() for o in options):
        if option not in OPTIONS[what] and getattr(args, option[2:].replace("-", "_")) is not None:
            owners = " and ".join(f"`bench {kind}`" for kind, options in OPTIONS.items() if option in options)
            raise UsageError(f"{option} is an option of {owners}, not of `bench {what}`; leave it out")
    if what == "bringup" and args.backend == "containers" and args.compare is not None:
        raise UsageError("--compare picks the builders measured beside namespaces; `bench bringup --backend "
                         "containers` measures containers against namespaces, no builders: leave one out")


def run(what: str, args: argparse.Namespace) -> dict[str, Any]:
    _check_options(what, args)
    if what == "sim":
        nodes = 1000 if args.nodes is None else args.nodes
        pods = SIM_PODS if args.pods is None else args.pods
        hours = SIM_HOURS if args.hours is None else args.hours
        check_churn(nodes, pods, hours, max_nodes=SIM_MAX_NODES, max_pods=SIM_MAX_PODS, min_pods=1)
        return bench_sim(nodes, pods, hours, 1 if args.seed is None else args.seed)
    containers = what == "bringup" and args.backend == "containers"
    nodes, pods_per_node = _bringup_size(args.nodes, args.pods_per_node, BRINGUP_DEFAULTS[containers])
    compare = _compare(args.compare) if what == "bringup" and not containers else ()
    if os.geteuid() != 0:
        raise UsageError(f"`enilab bench {what}` needs root (it makes network namespaces)")
    from testbed.apps import bench_netns

    if containers:
        return bench_netns.bench_bringup_containers(nodes, pods_per_node)
    if what == "bringup":
        from testbed.apps.bench_rootless import beside

        return beside(bench_netns.bench_bringup(nodes, pods_per_node, compare), nodes, pods_per_node)
    return bench_netns.bench_cni()


def _compare(text: str | None) -> tuple[str, ...]:
    """The builders `--compare` names (None: all of them), `none` for none; UsageError for an empty, unknown
    or repeated name (an empty value is not taken for `none`), before root is asked for."""
    from testbed.apps.bench_netns import BUILDERS

    names = list(BUILDERS) if text is None else [name.strip() for name in text.split(",")]
    choices = f"name builders from {', '.join(BUILDERS)}, comma-separated, or none"
    if not all(names):
        raise UsageError(f"--compare {shorten(text)}: an empty name; {choices}")
    if names == ["none"]:
        return ()
    for i, name in enumerate(names):
        if name not in BUILDERS:
            why = "none stands alone" if name == "none" else f"no builder {shorten(name)}"
            raise UsageError(f"--compare {shorten(text)}: {why}; {choices}")
        if name in names[:i]:
            raise UsageError(f"--compare {shorten(text)}: {name} is listed twice")
    if "pyroute2" in names and importlib.util.find_spec("pyroute2") is None:
        raise UsageError("the pyroute2 builder needs pyroute2 (`pip install pyroute2`); or leave it out: "
                         "--compare floor,ip_batch,ip")
    return tuple(names)


def _bringup_size(nodes: int | None, pods_per_node: int | None, defaults: tuple[int, int]) -> tuple[int, int]:
    """The nodes and pods per node to bring up, `defaults` for those not given (None); UsageError unless
    each is at least 1 and their pods at most BRINGUP_MAX_PODS."""
    for option, value in (("--nodes", nodes), ("--pods-per-node", pods_per_node)):
        if value is not None and value < 1:
            raise UsageError(f"{option} {value}: give 1 or more")
    size = (nodes or defaults[0], pods_per_node or defaults[1])
    if size[0] * size[1] > BRINGUP_MAX_PODS:
        raise UsageError(f"--nodes {nodes or 'default'} --pods-per-node {pods_per_node or 'default'}: "
                         f"{size[0] * size[1]:,} pods; give at most {BRINGUP_MAX_PODS:,}")
    return size


def _rootless_line(r: dict[str, Any]) -> str:
    """What `enilab bench bringup` says of its rootless run (testbed/apps/bench_rootless.py)."""
    if r.get("namespaces") == "rootless":
        return "measured rootless (in a user namespace): the root figures need root"
    rl = r.get("rootless", {})
    if "verified" not in rl:
        return f"rootless: not measured: {rl.get('unavailable') or rl.get('error')}"
    return (f"rootless (ENILAB_ROOTLESS=1, a user namespace): {rl['cpu_ms_per_pod']} ms CPU per pod "
            f"({rl.get('cpu_ms_over_root', '-')}x root), teardown {rl['teardown_s']} s "
            f"({rl.get('teardown_ms_over_root', '-')}x root), {rl['verified']}/{rl['pods']} read back")


def print_result(console, what: str, r: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"enilab bench {what} ({r['cores']} cores)", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in r.items():
        if key != "cores":
            table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(table)
    verdict = "[green]within target[/green]" if r.get("within_target") else "[red]OVER TARGET[/red]"
    if what == "bringup" and r.get("backend") == "containers":
        console.print(f"{r['pods']} pods as containers at {r['containers']['ms_per_pod']} ms each against "
                      f"{r['namespaces']['ms_per_pod']} ms as namespaces ({r['containers_over_namespaces']}x); "
                      f"{r['verified_http']} answered HTTP: {verdict}")
    elif what == "bringup":
        others = ", ".join(f"{name} {b['cpu_ms_per_pod']} ({b['pods']} pods)" for name, b in r["builders"].items())
        console.print(f"{r['pods']} pods wired, and {r['enis_plugged']} ENIs hot-plugged for them, at "
                      f"{r['cpu_ms_per_pod']} ms CPU a pod ({r['wire_ms_per_pod']} ms wall), "
                      f"{r['verified']} read back, {r['reachable']}/{r['reach_sample']} sampled reachable; "
                      f"{r.get('over_floor_cpu', '-')}x the floor in CPU; teardown {r['teardown_s']} s; "
                      f"CPU ms per pod of the others: {others}: {verdict}")
        console.print(_rootless_line(r))
    if what == "cni":
        ref = r["reference"]
        against = (f"the reference {ref['plugin']} p50 {ref['p50_ms']} ms, {r['executable_over_reference']}x" if ref
                   else "no reference plugin installed (containernetworking-plugins)")
        console.print(f"ADD in-process p50 {r['in_process']['p50_ms']} ms, p99 {r['in_process']['p99_ms']} ms; "
                      f"executable p50 {r['executable']['p50_ms']} ms against {against} (a bare Python start: "
                      f"{r['bare_python_start_ms']} ms): {verdict}")
    if what == "sim":
        verdict = "[green]within target[/green]" if r["within_target"] else "[red]OVER TARGET[/red]"
        console.print(f"{r['events']} pod events in {r['seconds']} s (+{r['setup_s']} s setup), peak "
                      f"{r['peak_rss_mb']} MiB: {verdict} (<{r['target_s']:g} s, <{r['target_mb']} MiB); "
                      f"{r['speedup']}x the baseline ({r['baseline']}); cost per event {r['scaling_ratio']}x "
                      f"that of a tenth of the size, each of its {len(r['slice_cpu_s'])} parts against the "
                      f"tenth's runs beside it (CPU: parts {', '.join(map(str, r['slice_cpu_s']))} s, "
                      f"{r['cpu_s']} s in all; the tenth's {r['tenth']['runs']} runs of {r['tenth']['events']} "
                      f"events {', '.join(map(str, r['tenth']['cpu_s_runs']))} s; the parts' ratios "
                      f"{', '.join('-' if x is None else str(x) for x in r['scaling_ratio_runs'])}; against "
                      f"the tenth's median "
                      f"{r['scaling_ratio_median_tenth']}): "
                      + ("[green]linear[/green]" if r["linear"] else "[red]NOT LINEAR[/red]")
                      + f" (<= {r['target_scaling_ratio']})")
        h = r["heap"]
        console.print(f"heap: {'huge pages' if h['huge_pages'] else 'small pages (' + h['why_not'] + ')'}, "
                      f"{h['anon_huge_mib']} MiB of it in huge pages at the end (transparent huge pages: {h['thp']})")
        if r["nodes_short_of_addresses"]:
            console.print(f"[red]{counted(r['nodes_short_of_addresses'], 'node')} short of addresses at the end: the "
                          "world could not hold the pools, and the replay measured their polls[/red]")
