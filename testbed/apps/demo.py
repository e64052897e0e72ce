"""`enilab demo`, the main job: bring up the default topology, show the pool and each node's policy
routing as the kernel has it, prove every pod's paths with real packets, draw the topology, tear down.

Without root there are no namespaces and no packets: the same topology runs on the simulator, the pool
and the planned routing are shown, and the demo says plainly what it could not show.
"""
from __future__ import annotations

import argparse
import os

from rich.console import Console
from rich.table import Table

from eni_core.model import eni_table
from eni_core.names import shorten
from eni_core.ops import MAIN_TABLE
from testbed.errors import UsageError
from testbed.observe.report import node_table
from testbed.world.pods import PodPhase

__all__ = ["run_demo"]

DEFAULT_TOPOLOGY = "default"  # the built-in topology (testbed.world.catalog)


def _routing_tables(console: Console, state: dict) -> None:
    for name, node in state["nodes"].items():
        routing = node.get("routing")
        if not routing:
            continue
        t = Table(title=f"{name} ({node['netns']}): ip rule / ip route, read back from the kernel",
                  title_justify="left")
        t.add_column("priority", justify="right")
        t.add_column("rule")
        for r in routing["rules"]:
            what = f"from {r['from']}" if "from" in r else f"to {r['to']}"
            t.add_row(str(r["priority"]), f"{what} lookup {'main' if r['table'] == MAIN_TABLE else r['table']}")
        console.print(t)
        for table, routes in routing["tables"].items():
            lines = ", ".join(f"{r['dst']}" + (f" via {r['gateway']}" if "gateway" in r else "") + f" dev {r['dev']}"
                              for r in routes)
            console.print(f"  table {table}: {lines}", highlight=False)
        console.print(f"  sysctl: {', '.join(f'{k}={v}' for k, v in routing['sysctl'].items())}", highlight=False)


def _verify_paths(console: Console, cluster, progress) -> tuple[list, int]:
    from testbed.observe.traffic import matrix, probe

    hosts = list(cluster.backend.hosts)
    pods = [p for p in cluster.pods.values() if p.phase == PodPhase.RUNNING]
    table = Table(title="a verified path for every pod (real packets, seen at the fabric)", title_justify="left")
    for col in ("pod", "ip", "node", "ENI", "rule table", "seen leaving by", "to", "reply", "result"):
        table.add_column(col)
    failures = 0
    traces = []
    task = progress.add_task("probing every pod", total=len(pods) * 2)
    for pod in pods:
        node = cluster.nodes[pod.node]
        eni = node.ipamd.store.enis[pod.eni_id]
        want_table = eni_table(node.ifindex[eni.id])
        others = [p for p in pods if p.node != pod.node] or [p for p in pods if p.name != pod.name]
        for dst in [hosts[pod.seq % len(hosts)] if hosts else others[0].name, others[0].name]:
            t = probe(cluster, pod.name, dst)
            traces.append(t)
            ok = t.delivered and t.reply and t.egress == eni.ifname and t.table == want_table
            failures += not ok
            table.add_row(pod.name, str(pod.ip), pod.node, eni.ifname, str(t.table), str(t.egress),
                          dst, t.reply_via or ("yes" if t.reply else "no"),
                          "[green]PASS[/green]" if ok else f"[red]FAIL[/red] {t.reason or ''}")
            progress.advance(task)
    console.print(table)
    task = progress.add_task("connectivity matrix", total=1)
    m = matrix(cluster)
    progress.advance(task)
    delivered = sum(v for row in m.values() for v in row.values())
    total = sum(len(row) for row in m.values())
    console.print(f"connectivity matrix: {delivered}/{total} pod->pod and pod->host pairs delivered")
    failures += total - delivered
    return traces, failures


def _rp_filter_lesson(console: Console, cluster) -> int:
    from testbed.observe.traffic import probe

    hosts = list(cluster.backend.hosts)
    pod = next((p for p in cluster.pods.values() if p.phase == PodPhase.RUNNING), None)
    if pod is None or not hosts:
        return 0
    src = hosts[-1]
    console.print(f"[bold]the seed's rp_filter warning[/bold]: {src} reaches {pod.name} through {pod.node}'s "
                  "primary ENI (eth0); the way back leaves by the pod's own ENI")
    ok = probe(cluster, src, pod.name, via=pod.node).delivered
    cluster.backend.set_sysctl(pod.node, "net.ipv4.conf.all.rp_filter", 1)
    strict = probe(cluster, src, pod.name, via=pod.node)
    cluster.backend.set_sysctl(pod.node, "net.ipv4.conf.all.rp_filter", 0)
    back = probe(cluster, src, pod.name, via=pod.node).delivered
    good = ok and not strict.delivered and "reverse-path" in (strict.reason or "") and back
    console.print(f"  rp_filter=0: {'delivered' if ok else 'LOST'}; rp_filter=1: "
                  f"{'dropped: ' + str(strict.reason) if not strict.delivered else 'DELIVERED (unexpected)'}; "
                  f"back to 0: {'delivered' if back else 'LOST'}  "
                  + ("[green]PASS[/green]" if good else "[red]FAIL[/red]"), highlight=False)
    return 0 if good else 1


def _check_topology(scenario, given: str, root: bool) -> None:
    """Before anything starts: the demo brings a topology up and runs its own checks, so a scenario's probes
    would run with their `expect` unread (as root), or stop it halfway (without root): refused. So is a step
    the backend the demo uses cannot take."""
    from testbed.apps.runner import check_supported, refuse_checks

    refuse_checks(scenario, f"--topology {shorten(given)}", "the demo")
    if scenario.backend == "containers":
        raise UsageError(f"--topology {shorten(given)} asks for backend: containers, and the demo runs on network "
                         f"namespaces (as root) or the simulator: bring it up with `enilab up {shorten(given)}`, "
                         "which runs it on containers")
    check_supported(scenario, "netns" if root else "sim")


def run_demo(console: Console, args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from testbed.apps.outputs import replacing
    from testbed.apps.runner import apply_steps
    from testbed.observe import topology
    from testbed.world.cluster import Cluster
    from testbed.world.scenario import load_scenario

    scenario = load_scenario(args.topology or DEFAULT_TOPOLOGY)
    # the file's `backend: sim` is honoured as root too; `netns` needs root, as the message below says
    root = os.geteuid() == 0 and scenario.backend != "sim"
    _check_topology(scenario, args.topology or DEFAULT_TOPOLOGY, root)
    backend = None
    if root:
        from testbed.world.backends.netns import NetnsBackend

        backend = NetnsBackend()
    elif scenario.backend == "sim":
        console.print("[yellow]the topology asks for backend: sim: running the simulator. No packets: the pool "
                      "and the eni-ip resource are real; kernel rules, tables and verified paths need the netns "
                      "backend.[/yellow]")
    else:
        why = args.rootless_error or "not root"
        console.print(f"[yellow]no network namespaces ({why}): running the simulator. No packets: the pool and "
                      "the eni-ip resource are real, but kernel rules, tables and verified paths need network "
                      "namespaces (root, or user namespaces for a normal user).[/yellow]")
    failures = 0
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True) as progress:
        task = progress.add_task(f"bringing up {scenario.name} ({'netns' if root else 'sim'} backend)", total=1)
        cluster = Cluster(scenario.cluster, backend=backend, keep_events=False)  # the demo reads no event
        try:
            apply_steps(cluster, scenario.steps, scenario.source)
            cluster.sync_dataplane()
            progress.advance(task)
            state = cluster.state()
            progress.stop()
            console.print(node_table(state, title=f"the IP pool of {scenario.name}: eni-ip allocatable = bound, "
                                                  "capacity = max ENIs x IPs per ENI"))
            _routing_tables(console, state)
            trace = None
            if root:
                progress.start()
                traces, failures = _verify_paths(console, cluster, progress)
                progress.stop()
                failures += _rp_filter_lesson(console, cluster)
                trace = next((t.to_dict() for t in traces if t.delivered and t.egress), None)
            else:
                for name, node in cluster.nodes.items():
                    tables = ", ".join(f"{e.ifname}: table {eni_table(node.ifindex[e.id])}"
                                       for e in node.ipamd.enis)
                    console.print(f"{name}: planned ENI tables {tables} (not applied: no kernel)")
            with replacing(args.png) as temp:
                topology.draw(topology.build_graph(cluster), temp, trace, title=f"enilab demo: {scenario.name}")
            console.print(f"topology drawn to {args.png}")
        finally:
            cluster.close()
    if not root:
        console.print("[yellow]not shown without network namespaces: kernel state, packet traces, the rp_filter "
                      "lesson[/yellow]")
        return 0
    console.print("[bold green]every check passed[/bold green]" if failures == 0
                  else f"[bold red]{failures} check(s) failed[/bold red]")
    return 1 if failures else 0
