"""`enilab`: run scenarios, benchmarks and the demo. Exit codes: 0 ok, 1 a check failed, 2 bad input."""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
from collections.abc import Iterator, Sequence

from eni_core.names import Parser, shorten, whole_number
from testbed.apps import heap
from testbed.errors import UsageError, UserError

__all__ = ["main"]


def _console():
    from rich.console import Console

    class PipedConsole(Console):
        def on_broken_pipe(self) -> None:
            """The reader went (`enilab simulate ... | head`): end as `main` ends on a closed pipe, exit 0
            (rich's own way is exit 1, as if enilab had failed)."""
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "the reader closed the pipe")

    console = PipedConsole()
    if not console.is_terminal:  # logs and pipes: wide enough for the tables
        console = PipedConsole(width=140)
    return console


def _print_timeline(args: argparse.Namespace, scenario, backend=None, node_vpc=None) -> None:
    """Run the scenario and print its timeline as it runs: JSON (with --states) or tables."""
    from contextlib import closing

    from testbed.apps.runner import select_states, timeline, write_json
    from testbed.observe.report import print_timeline

    with closing(timeline(scenario, backend=backend, keep=args.keep, node_vpc=node_vpc,
                          final_only=args.json and args.states == "final")) as parts:
        if args.json:
            write_json(select_states(parts, args.states, len(scenario.steps)), sys.stdout,
                       indent=1 if args.pretty else None)
            sys.stdout.write("\n")
        else:
            print_timeline(_console(), parts)


def _check_json_options(args: argparse.Namespace) -> None:
    """--states and --pretty shape the JSON: without --json they would be ignored."""
    if args.states != "all" and not args.json:
        raise UsageError(f"--states {args.states} chooses what the JSON holds; add --json")
    if args.pretty and not args.json:
        raise UsageError("--pretty indents the JSON; add --json")


def cmd_simulate(args: argparse.Namespace) -> int:
    from testbed.world.scenario import load_scenario

    _check_json_options(args)
    scenario = load_scenario(args.file)
    with _cloud(args.cloud, scenario) as node_vpc:
        _print_timeline(args, scenario, node_vpc=node_vpc)
    return 0


@contextlib.contextmanager
def _cloud(cloud: str, scenario) -> Iterator:
    """How the nodes' ipamds reach the VPC: in-process (None), or through the Tencent Cloud SDK over HTTP."""
    if cloud == "in-process":
        yield None
        return
    from testbed.world.tencent_api import TencentCloud

    node_vpc = TencentCloud()
    try:
        yield node_vpc
    finally:
        node_vpc.close()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def cmd_vpc_serve(args: argparse.Namespace) -> int:
    import signal

    from testbed.world.scenario import load_scenario
    from testbed.world.tencent_api import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, REGION, serve_topology

    if (args.secret_id is None) != (args.secret_key is None):
        raise UsageError("give both --secret-id and --secret-key, or neither")
    if args.secret_id is not None and not (args.secret_id.strip() and args.secret_key.strip()):
        raise UsageError("--secret-id and --secret-key: give non-empty values (an empty secret signs nothing)")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port; give 1-65535, or 0 for any free one")
    if args.secret_id is not None:
        secret_id, secret_key = args.secret_id, args.secret_key
    elif os.environ.get("TENCENTCLOUD_SECRET_ID") and os.environ.get("TENCENTCLOUD_SECRET_KEY"):
        secret_id, secret_key = os.environ["TENCENTCLOUD_SECRET_ID"], os.environ["TENCENTCLOUD_SECRET_KEY"]
    else:
        secret_id, secret_key = DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY
    scenario = load_scenario(args.topology)
    server = serve_topology(scenario.cluster, port=args.port, credentials={secret_id: secret_key})
    signal.signal(signal.SIGTERM, _interrupt)
    info = {"endpoint": server.endpoint, "url": f"http://{server.endpoint}", "region": REGION,
            "version": "2017-03-12", "secret_id": secret_id, "secret_key": secret_key}
    if args.json:
        print(json.dumps(info), flush=True)
    else:
        print(f"serving the VPC of {scenario.name} as the Tencent Cloud VPC API {info['version']} on {info['url']}\n"
              f"  HttpProfile(endpoint=\"{server.endpoint}\", protocol=\"http\"), any region (say {REGION})\n"
              f"  SecretId {secret_id}  SecretKey {secret_key}\n  Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _go_rootless(args: argparse.Namespace) -> None:
    """Before anything else (no thread may run yet): as a normal user, or with ENILAB_ROOTLESS=1, enter a
    user namespace where the same code makes the same namespaces, or join the running cluster's
    (testbed/world/rootless.py). If the kernel refuses, the reason is kept for the command to say."""
    from eni_core import userns
    from testbed.world import rootless

    if args.command in rootless.COMMANDS and userns.wanted():
        try:
            rootless.go(args.command, args.name)
        except userns.RootlessError as err:
            if os.geteuid() == 0:  # root asked for the rootless path: never fall back to root silently
                raise UsageError(f"ENILAB_ROOTLESS=1: {err}") from None
            args.rootless_error = str(err)


def _simulates_at_scale(args: argparse.Namespace) -> bool:
    """Whether the command's work is a simulation of a thousand nodes or more (its defaults), whose heap
    then gets huge pages (testbed/apps/heap.py). Not `simulate`: starting again costs a start of the
    program (0.14 s), more than most scenarios take."""
    return args.func is cmd_tune or (args.func is cmd_bench and args.what == "sim")


def _need_root(what: str, args: argparse.Namespace | None = None) -> None:
    if os.geteuid() != 0:
        why = args.rootless_error if args is not None else None
        raise UsageError(f"`enilab {what}` needs root (it makes network namespaces)"
                         + (f", and rootless: {why}" if why else "") + "; run it as root, or use "
                         "`enilab simulate` for the same scenario without a kernel")


def cmd_run(args: argparse.Namespace) -> int:
    from testbed.apps.runner import check_supported
    from testbed.world.scenario import load_scenario

    _check_json_options(args)
    scenario = load_scenario(args.file)
    kind = args.backend or scenario.backend or "netns"
    check_supported(scenario, kind)
    _need_root("run", args)
    from testbed.apps.controller import make_backend

    with _cloud(args.cloud, scenario) as node_vpc:
        backend = make_backend(kind)
        _print_timeline(args, scenario, backend, node_vpc=node_vpc)
    if args.keep:
        print(f"enilab: kept namespaces {backend.run.prefix}-*; remove them with `enilab clean`", file=sys.stderr)
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    _need_root("clean", args)
    from testbed.apps.controller import clean_clusters
    from testbed.world import runs

    clusters = clean_clusters()
    report = runs.clean(force=args.force)
    if args.json:
        print(json.dumps({"removed": report.removed, "clusters": clusters, "skipped": report.skipped}))
        return 0
    for note in clusters.values():
        print(note)
    for prefix, names in report.removed.items():
        print(f"removed run {prefix}: {len(names)} namespaces")
    for record in report.skipped:
        print(f"left {runs.RUN_DIR / 'runs' / record} alone: not a run record this enilab can read")
    if not (clusters or report.removed or report.skipped):
        print("nothing to clean")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    import subprocess

    from eni_core.names import InvalidName
    from testbed.apps.controller import ClusterFolder
    from testbed.apps.runner import check_supported, refuse_checks
    from testbed.world.scenario import load_scenario

    scenario = load_scenario(args.topology)  # bad input stops here, before anything exists
    backend = args.backend or scenario.backend or "netns"
    refuse_checks(scenario, shorten(args.topology), "`enilab up`")
    check_supported(scenario, backend)
    name = scenario.name if args.name is None else args.name  # an empty --name is refused, not ignored
    try:
        folder = ClusterFolder(name)  # the name becomes a folder's: only a DNS label will do
    except InvalidName as err:
        raise UsageError(f"--name: {err}" if args.name is not None else
                         f"the topology's name: {err}; pick a cluster name with --name") from None
    _need_root("up")
    if folder.alive():
        raise UsageError(f"cluster {name} is up already (controller pid {folder.owner()['pid']}); "
                         f"`enilab down --name {name}` first, or pick another --name")
    # the controller takes the cluster's lock (of two at once, one wins) and answers with one line
    proc = subprocess.Popen([sys.executable, "-m", "testbed.apps.controller", "--name", name, "--backend", backend,
                             "--", str(args.topology)],  # a file named `-odd.yaml` is a file, not an option
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    line = proc.stdout.readline().decode()
    proc.stdout.close()
    if not line.strip():
        last = proc.stderr.read().decode(errors="replace").strip().splitlines()
        proc.wait(10)
        raise UsageError(f"cluster {name} did not come up: its controller exited without a word"
                         + (f" ({last[-1][:200]})" if last else ""))
    proc.stderr.close()  # the controller writes to its log from now on
    answer = json.loads(line)
    if "error" in answer:
        proc.wait(10)
        why = answer["error"]
        raise UsageError(why if answer.get("busy") else f"cluster {name} did not come up: {why}")
    if answer.get("reclaimed"):
        print(answer["reclaimed"])
    print(f"cluster {name} is up (controller pid {proc.pid}); `enilab status`, `enilab pods add`, `enilab down`")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from testbed.apps.controller import connect
    from testbed.observe.report import node_table

    _, client = connect(args.name)
    info = client.call("state")
    if args.json:
        print(json.dumps(info))
        return 0
    console = _console()
    console.print(f"[bold]cluster {info['name']}[/bold] · t={info['t']}s · namespaces {info['prefix']}-*")
    console.print(node_table(info["state"]))
    runtime = 0
    for node, n in info["state"]["nodes"].items():
        routing = n.get("routing", {})
        attached = len(n.get("attachments", {}))
        runtime += attached
        console.print(f"[bold]{node}[/bold] ({n.get('netns')}): {n['pods']} controller pods, {attached} runtime-wired "
                      f"pods; {len(routing.get('rules', []))} rules, tables "
                      f"{', '.join(routing.get('tables', {})) or '-'}; agent socket {info['agents'].get(node)}")
    if runtime:
        console.print(_runtime_table(info["state"]))
    if info.get("backend") == "containers":
        console.print(_container_table(info["state"]))
    return 0


def _container_table(state: dict):
    """The pods' containers (the containers backend): id, image and what the engine says of each now."""
    from rich.table import Table

    table = Table(title="pods as containers", title_justify="left")
    for col in ("POD", "NODE", "IP", "CONTAINER", "IMAGE", "STATE"):
        table.add_column(col)
    for name, p in state["pods"].items():
        table.add_row(name, p["node"] or "-", p["ip"] or "-", (p.get("container") or "-")[:12], p.get("image", "-"),
                      p.get("container_state", "-"))
    return table


def cmd_exec(args: argparse.Namespace) -> int:
    from testbed.apps.controller import connect

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError(f"say what to run: `enilab exec {args.pod} -- wget -qO- http://IP/`")
    _, client = connect(args.name)
    done = client.call("exec", pod=args.pod, argv=argv)
    sys.stdout.buffer.write(done["stdout"].encode(errors="surrogateescape"))
    sys.stdout.flush()
    sys.stderr.buffer.write(done["stderr"].encode(errors="surrogateescape"))
    return done["exit_code"]


def cmd_cni(args: argparse.Namespace) -> int:
    from eni_core import cni

    if args.action == "install":
        if not args.dir:
            raise UsageError("say where: `enilab cni install DIR` (a folder in the runtime's CNI plugin path)")
        try:
            path = cni.install_plugin(args.dir, sys.executable)
        except (FileExistsError, NotADirectoryError, PermissionError) as err:
            raise UsageError(str(err)) from None
        except OSError as err:  # a name too long, a folder under /proc: nothing was made
            raise UsageError(f"cannot install into {shorten(args.dir)}: {err.strerror or err}; pick another "
                             "folder") from None
        print(f"installed {path}")
        return 0
    from testbed.apps.controller import connect

    if not args.node:
        raise UsageError("name the node the runtime's containers go on: `enilab cni config --node NODE`")
    name, client = connect(args.name)
    nodes = client.call("state")["state"]["nodes"]
    if args.node not in nodes:
        raise UsageError(f"cluster {name} has no node {args.node!r}; its nodes: {', '.join(nodes)}")
    from testbed.apps.controller import CLUSTERS

    # a registry the environment moved: the runtime may call the plugin without this environment
    moved = os.environ.get("ENILAB_CLUSTERS_DIR") or os.environ.get("ENILAB_RUN_DIR")
    registry = str(CLUSTERS.resolve()) if moved else None
    try:
        doc = cni.conflist(name, args.node, args.network, args.cni_version, registry)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(json.dumps(doc, indent=2))
    return 0


def _runtime_table(state: dict):
    """The attachments container runtimes made through `enilab-cni`, per node."""
    from rich.table import Table

    table = Table(title="runtime-wired pods (enilab-cni)", title_justify="left")
    for col in ("NODE", "NETWORK", "CONTAINER", "IFNAME", "IP", "ENI", "NETNS"):
        table.add_column(col)
    for node, n in state["nodes"].items():
        for a in n.get("attachments", {}).values():
            table.add_row(node, a["network"], a["container_id"][:12], a["ifname"], a["ip"], a["eni"], a["netns"])
    return table


def cmd_pods(args: argparse.Namespace) -> int:
    from testbed.apps.controller import connect

    if args.count is not None and args.count < 1:  # 0 and -1 alike, in the controller's own words, before all
        from testbed.world.scenario import MAX_PODS_PER_STEP

        raise UsageError(f"--count {shorten(args.count)}: give 1 to {MAX_PODS_PER_STEP:,} pods")
    _, client = connect(args.name)
    if args.action == "list":
        state = client.call("state")["state"]
        if args.json:
            print(json.dumps({"pods": state["pods"],
                              "runtime": {n: s.get("attachments", {}) for n, s in state["nodes"].items()}}))
            return 0
        from rich.table import Table

        table = Table(title="pods of the controller", title_justify="left")
        for col in ("POD", "NODE", "PHASE", "IP", "ENI", "NETNS"):
            table.add_column(col)
        for name, p in state["pods"].items():
            table.add_row(name, p["node"] or "-", p["phase"], p["ip"] or "-", p["eni"] or "-", p.get("netns", "-"))
        console = _console()
        console.print(table)
        console.print(_runtime_table(state))
        return 0
    if args.action == "add":
        if not args.count and not args.pods:
            raise UsageError("say how many pods (--count N) or name them")
        done = client.call("pods_add", node=args.node, count=args.count, names=args.pods)
    else:
        if not args.count and not args.pods:
            raise UsageError("name the pods to delete, or give --count N (newest first)")
        done = client.call("pods_del", names=args.pods, count=args.count)
    print(json.dumps(done) if args.json else f"{args.action}: {', '.join(done) or 'nothing'}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from testbed.apps.controller import connect
    from testbed.observe.traffic import Trace

    _, client = connect(args.name)
    result = client.call("trace", src=args.src, dst=args.dst, via=args.via)
    if args.json:
        print(json.dumps(result))
    else:
        print(Trace(**result).explain())
    return 0 if result["delivered"] else 1


def cmd_topology(args: argparse.Namespace) -> int:
    import networkx as nx

    from testbed.apps.outputs import DRAWINGS, check_output_file, replacing
    from testbed.observe import topology

    if args.file is not None:  # a file is simulated: what picks or probes a running cluster would be ignored
        for option, what, given in (("--trace", "traces on", args.trace), ("--name", "picks", args.name)):
            if given is not None:
                raise UsageError(f"{option} {what} a running cluster, not a simulated file; leave out {option}, "
                                 f"or the file {shorten(args.file)}")
    if args.png is not None:
        check_output_file("--png", args.png, DRAWINGS)
    if args.graphml is not None:
        check_output_file("--graphml", args.graphml, (".graphml",))  # another name would get node-link JSON
    trace = None
    if args.file is not None:  # a scenario or topology file, simulated to its end ('' too: load_scenario refuses it)
        from testbed.apps.runner import apply_steps, check_supported
        from testbed.world.cluster import Cluster
        from testbed.world.scenario import load_scenario

        scenario = load_scenario(args.file)
        check_supported(scenario, "sim")
        cluster = Cluster(scenario.cluster, keep_events=False)  # the drawing reads no event
        apply_steps(cluster, scenario.steps, scenario.source)
        graph = topology.build_graph(cluster)
        title = f"{scenario.name} (simulated)"
    else:
        from testbed.apps.controller import connect

        name, client = connect(args.name)
        graph = nx.node_link_graph(client.call("graph"), edges="links")
        if args.trace:
            trace = client.call("trace", src=args.trace[0], dst=args.trace[1], via=None)
        title = f"cluster {name}"
    if args.json:
        print(json.dumps(nx.node_link_data(graph, edges="links")))
    if args.graphml:
        with replacing(args.graphml) as temp:
            topology.export(graph, temp)
    if args.png:
        with replacing(args.png) as temp:
            topology.draw(graph, temp, trace, title=title)
        print(f"drew {args.png}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from testbed.apps.controller import connect

    _, client = connect(args.name)
    report = client.call("audit")
    if args.json:
        print(json.dumps(report))
    else:
        from testbed.observe.audit import report_lines

        console = _console()
        verdict, *findings = report_lines(report)
        console.print(verdict, style="green" if report["ok"] else "red", highlight=False)
        for line in findings:
            console.print(line, highlight=False)
    return 0 if report["ok"] else 1


CHAOS_MAX_ITERATIONS = 100_000  # some 14 hours at 0.5 s each: a bound, not a suggestion


def cmd_chaos(args: argparse.Namespace) -> int:
    if not 1 <= args.iterations <= CHAOS_MAX_ITERATIONS:
        raise UsageError(f"--iterations {args.iterations}: give 1 to {CHAOS_MAX_ITERATIONS:,}")
    _need_root("chaos")
    from testbed.apps.chaos import run_chaos

    console = _console()

    def log(i: int, what: str, ok: bool, lost: list[str]) -> None:
        if not args.json:
            mark = "[green]ok[/green]" if ok and not lost else "[red]FAIL[/red]"
            console.print(f"{i:4d} {mark} {what}" + (f" (unreachable: {', '.join(lost)})" if lost else ""),
                          highlight=False)

    result = run_chaos(args.iterations, args.seed, log=log, cloud=args.cloud)
    if args.json:
        print(json.dumps(result))
    else:
        console.print({k: v for k, v in result.items() if k != "failures"})
        for failure in result["failures"]:
            console.print(failure)
    return 0 if result["ok"] else 1


def cmd_claims(args: argparse.Namespace) -> int:
    from rich.table import Table

    from testbed.apps.controller import connect

    _, client = connect(args.name)
    if args.action == "delete":
        if not args.claim:
            raise UsageError("name the claim: `enilab claims delete NAMESPACE/NAME`")
        client.call("claims_delete", claim=args.claim)
        print(f"claim {args.claim} reclaimed; its address is back in its subnet")
        return 0
    claims = client.call("claims")
    if args.json:
        print(json.dumps(claims))
        return 0
    table = Table(title="VpcIPClaims (kubectl get vipc)", title_justify="left")
    for col in ("NAME", "IP", "SUBNET", "STATIC", "POD", "NODE", "EXPIRES AT"):
        table.add_column(col)
    for name, c in claims.items():
        table.add_row(name, c["ip"], c["subnet"], "yes" if c["static"] else "no",
                      "present" if c["pod_present"] else "gone", c["node"] or "-",
                      "-" if c["expires_at"] is None else f"t={c['expires_at']}s")
    _console().print(table)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    import time

    from testbed.apps.controller import connect, pick
    from testbed.world.runs import owner_alive

    folder = pick(args.name)
    owner = folder.owner() or {}
    if not owner_alive(owner):  # its controller died: remove what it left, under the cluster's lock
        _need_root("down")
        if not folder.lock():
            raise UsageError(f"cluster {folder.name} is busy (a controller of that name is coming up); try again")
        note = folder.reclaim()
        folder.release()
        print(f"{note}; it is down" if note else f"cluster {folder.name} is down")
        return 0
    name, client = connect(folder.name)
    client.call("down")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not owner_alive(owner):  # its process is gone, and with it the lock
            print(f"cluster {name} is down")
            return 0
        time.sleep(0.05)
    raise UsageError(f"cluster {name}'s controller (pid {owner['pid']}) did not stop in 60 s; `kill "
                     f"{owner['pid']}`, then `enilab down --name {name}` removes what it left")


def cmd_bench(args: argparse.Namespace) -> int:
    from concurrent.futures.process import BrokenProcessPool

    from testbed.apps import bench

    try:
        result = bench.run(args.what, args)
    except BrokenProcessPool:  # not the user's mistake, and nothing to clean: one line, exit 1
        print(f"enilab: error: bench {args.what}: a process it measures in died (killed, or out of memory); "
              "nothing is left behind, run it again", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        bench.print_result(_console(), args.what, result)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from testbed.apps.tune import run_cli

    return run_cli(args, _console())


def cmd_demo(args: argparse.Namespace) -> int:
    from testbed.apps.demo import run_demo
    from testbed.apps.outputs import DRAWINGS, check_output_file

    check_output_file("--png", args.png, DRAWINGS)  # before the cluster comes up
    return run_demo(_console(), args)


class _IntermixedSubcommands(argparse._SubParsersAction):
    """Subcommands whose options and positionals mix in any order (`pods del --name c pod-1 pod-2`).

    `parse_intermixed_args` refuses a parser that has subcommands, so each subcommand's parser runs it
    on the words after the command; an unknown word is that subcommand's usage error.
    """

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        command, *words = values
        if command not in self.choices:
            super().__call__(parser, namespace, values, option_string)  # argparse's own "invalid choice"
        setattr(namespace, self.dest, command)
        chosen = self.choices[command]
        nested = any(isinstance(a, argparse._SubParsersAction) for a in chosen._actions)
        # a subcommand with subcommands of its own (`vpc serve`) hands its words on to them
        vars(namespace).update(vars(chosen.parse_args(words) if nested else chosen.parse_intermixed_args(words)))


def _cloud_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cloud", choices=["in-process", "tencent"], default="in-process",
                   help="how the ipamds reach the VPC: in-process calls (default), or the official Tencent Cloud SDK "
                        "over HTTP to the same VPC served as the Tencent Cloud VPC API")


STATES_HELP = ("with --json: all (every step's whole state, the default), final (only the last step's), "
               "changed (per step, only the entries that changed)")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="enilab", description="A testbed for VPC-CNI pod networking (TKE shared-ENI and static-IP modes).",
        epilog="Exit codes: 0 success, 1 a check failed, 2 bad input (nothing was changed). "
               "Start with `enilab demo`, or `enilab simulate grow-and-shrink`. Wherever a file is asked for, "
               "a built-in topology or scenario can be named instead (a path that exists wins).")
    # what the steps around a command read, whichever command it is (no command: the help)
    p.set_defaults(func=None, name=None, keep=False, rootless_error=None)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", action=_IntermixedSubcommands)
    _add_scenario_commands(sub)
    _add_cluster_commands(sub)
    _add_cluster_views(sub)
    _add_tools(sub)
    return p


Subcommands = argparse._SubParsersAction


def _timeline_options(p: argparse.ArgumentParser) -> None:
    """The options of the commands that print a scenario's timeline."""
    from testbed.apps.runner import STATES

    p.add_argument("file", help="scenario YAML file, or a built-in name")
    p.add_argument("--json", action="store_true", help="print the JSON timeline (the public contract)")
    p.add_argument("--pretty", action="store_true", help="with --json: indent the JSON")
    p.add_argument("--states", choices=STATES, default="all", help=STATES_HELP)
    _cloud_option(p)


def _add_scenario_commands(sub: Subcommands) -> None:
    """A scenario or topology file, run once: simulate, run, and the VPC served on its own."""
    s = sub.add_parser("simulate", help="run a scenario on the sim backend (no root) and print its timeline")
    _timeline_options(s)
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("run", help="run a scenario on real namespaces (root) and print its timeline")
    _timeline_options(r)
    r.add_argument("--keep", action="store_true", help="leave the namespaces up (`enilab clean` removes them)")
    r.add_argument("--backend", choices=["netns", "containers"],
                   help="netns: pods are namespaces (default); containers: pods are containers of a Docker API engine")
    r.set_defaults(func=cmd_run)

    vp = sub.add_parser("vpc", help="the simulated VPC on its own")
    vsub = vp.add_subparsers(dest="vpc_command", metavar="ACTION", required=True, action=_IntermixedSubcommands)
    vs = vsub.add_parser("serve", help="serve a topology's VPC as the Tencent Cloud VPC API 3.0 on 127.0.0.1, "
                                       "for code written against the official SDK")
    vs.add_argument("topology", help="topology or scenario YAML file (its subnets, nodes as instances, faults)")
    vs.add_argument("--port", type=whole_number, default=8080,
                    help="TCP port on 127.0.0.1 (0: any free port; default 8080)")
    vs.add_argument("--secret-id", help="the SecretId clients sign with (default: $TENCENTCLOUD_SECRET_ID or a "
                                        "fixed local test key, printed)")
    vs.add_argument("--secret-key", help="its SecretKey")
    vs.add_argument("--json", action="store_true", help="print the endpoint and credentials as one JSON line")
    vs.set_defaults(func=cmd_vpc_serve)


def _add_cluster_commands(sub: Subcommands) -> None:
    """A cluster that stays up: bring it up, change it, take it down, clean after dead runs."""
    u = sub.add_parser("up", help="bring a topology up and keep it running (root)")
    u.add_argument("topology", help="topology YAML file, or a built-in name (default, static)")
    u.add_argument("--name", help="cluster name (default: the topology's name)")
    u.add_argument("--backend", choices=["netns", "containers"],
                   help="netns: pods are namespaces (default); containers: pods are containers of a Docker API engine "
                        "(DOCKER_HOST, else a podman service enilab starts)")
    u.set_defaults(func=cmd_up)
    ex = sub.add_parser("exec", help="run a command in a pod's container (--backend containers); exits with its code")
    ex.add_argument("pod")
    ex.add_argument("argv", nargs="*", metavar="-- CMD", help="the command and its arguments, after `--`")
    ex.add_argument("--name")
    ex.set_defaults(func=cmd_exec)
    pd = sub.add_parser("pods", help="list, add or delete pods on the running cluster")
    pd.add_argument("action", choices=["add", "del", "list"])
    pd.add_argument("pods", nargs="*", default=[], help="pod names")
    pd.add_argument("--node")
    pd.add_argument("--count", type=whole_number)
    pd.add_argument("--name")
    pd.add_argument("--json", action="store_true")
    pd.set_defaults(func=cmd_pods)
    cn = sub.add_parser("cni", help="the CNI plugin for real runtimes: print a conflist for a node, or install "
                                     "the plugin executable")
    cn.add_argument("action", choices=["config", "install"])
    cn.add_argument("dir", nargs="?", help="install: the folder to put `enilab-cni` in (a runtime's plugin dir)")
    cn.add_argument("--node", help="config: the node the runtime's containers go on")
    cn.add_argument("--name", help="config: the cluster (default: the only one up)")
    cn.add_argument("--network", default="enilab", help="config: the network name (default: enilab)")
    cn.add_argument("--cni-version", default="1.0.0", choices=["1.0.0", "1.1.0"],
                    help="config: 1.0.0 (default) for podman 4.3 / libcni 1.1, which cannot read 1.1.0 results")
    cn.set_defaults(func=cmd_cni)
    cm = sub.add_parser("claims", help="static-IP claims of the running cluster: list, or delete (reclaim)")
    cm.add_argument("action", choices=["list", "delete"])
    cm.add_argument("claim", nargs="?", help="NAMESPACE/NAME, to delete")
    cm.add_argument("--name")
    cm.add_argument("--json", action="store_true")
    cm.set_defaults(func=cmd_claims)
    dn = sub.add_parser("down", help="tear the running cluster down")
    dn.add_argument("--name")
    dn.set_defaults(func=cmd_down)
    cl = sub.add_parser("clean", help="remove what dead enilab runs left: the namespaces their run records list, "
                                      "dead controllers' folders; nothing else")
    cl.add_argument("--force", action="store_true",
                    help="also the recorded namespaces of runs whose owner is alive (a hung run); still only "
                         "namespaces a run record lists, and never a live controller's folder")
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=cmd_clean)


def _add_cluster_views(sub: Subcommands) -> None:
    """The running cluster looked at: its state, a traced packet, its graph, the three truths compared."""
    st = sub.add_parser("status", help="the running cluster's pool and routing")
    st.add_argument("--name")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    tr = sub.add_parser("trace", help="send one traced packet on the running cluster and say where it went")
    tr.add_argument("src", help="pod or VPC host")
    tr.add_argument("dst", help="pod, VPC host or IP address")
    tr.add_argument("--via", help="enter the destination's node by its primary ENI (eth0), as a VPC route would")
    tr.add_argument("--name")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_trace)
    tp = sub.add_parser("topology", help="the cluster as a graph: draw it (PNG/SVG), or export GraphML/JSON")
    tp.add_argument("file", nargs="?",
                    help="a scenario or topology (file or built-in name) to simulate; default: the running cluster")
    tp.add_argument("--png", help="draw to this file (.png or .svg)")
    tp.add_argument("--graphml", help="export GraphML to this file (.graphml)")
    tp.add_argument("--json", action="store_true", help="print the graph as node-link JSON")
    tp.add_argument("--trace", nargs=2, metavar=("SRC", "DST"), help="overlay a trace (running cluster only)")
    tp.add_argument("--name")
    tp.set_defaults(func=cmd_topology)
    au = sub.add_parser("audit", help="compare the VPC, the ipamd datastores and the kernels of the running cluster")
    au.add_argument("--name")
    au.add_argument("--json", action="store_true")
    au.set_defaults(func=cmd_audit)


def _add_tools(sub: Subcommands) -> None:
    """The chaos loop, the benchmarks, the pool tuner and the demo."""
    ch = sub.add_parser("chaos", help="kill agents, storm the cloud, edit kernels; audit and probe after each (root)")
    ch.add_argument("--iterations", type=whole_number, default=200)
    ch.add_argument("--seed", type=whole_number, default=1)
    ch.add_argument("--json", action="store_true")
    ch.add_argument("--cloud", choices=["rpc", "tencent"], default="rpc",
                    help="how the agents reach the VPC: enilab's unix-socket RPC (default), or the official Tencent "
                         "Cloud SDK over HTTP to the VPC served as the Tencent Cloud VPC API")
    ch.set_defaults(func=cmd_chaos)
    b = sub.add_parser("bench", help="benchmarks that print their figures and ratios")
    b.add_argument("what", choices=["sim", "bringup", "cni"],
                   help="sim: 1,000 nodes, 50,000 pods over 24 h; bringup: nodes x pods on namespaces (root); "
                        "cni: ADD latency in-process and through the executable (root)")
    b.add_argument("--nodes", type=whole_number, default=None, help="sim: 1000, bringup: 10")
    b.add_argument("--pods-per-node", type=whole_number, default=None, help="bringup: 50, with --backend containers 10")
    b.add_argument("--backend", choices=["netns", "containers"],
                   help="bringup: containers also measures pods as containers, beside namespaces, in the same run")
    b.add_argument("--compare", help="bringup: the builders measured beside enilab, comma-separated, or `none` "
                                      "(default: floor,ip_batch,pyroute2,ip)")
    b.add_argument("--pods", type=whole_number, help="sim: pod creations, each deleted later (50000)")
    b.add_argument("--hours", type=float, help="sim: simulated hours (24)")
    b.add_argument("--seed", type=whole_number, help="sim: the workload's seed (1)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    tu = sub.add_parser("tune", help="what-if for the warm pool: replay a workload under many pool settings",
                        description="Replay a scenario, or a generated churn, on the simulator under every "
                                    "combination of the swept pool settings; measure idle IPs, pod start delay, "
                                    "API calls; mark the Pareto front; recommend the cheapest setting meeting a "
                                    "goal (exit 1 when none does).")
    tu.add_argument("scenario", nargs="?", help="scenario YAML file (shared-eni mode)")
    tu.add_argument("--workload", help="a generated churn instead: diurnal, burst or steady")
    tu.add_argument("--nodes", type=whole_number, help="generated workload: nodes (1000)")
    tu.add_argument("--hours", type=float, help="generated workload: simulated hours (24)")
    tu.add_argument("--pods", type=whole_number, help="generated workload: pods created (50 per node per day)")
    tu.add_argument("--seed", type=whole_number, help="generated workload: seed (1)")
    tu.add_argument("--sweep", action="append", metavar="PARAM=V1,V2",
                    help="min_prebound, max_prebound, release_interval (30, 2m) or quick_release (false,true); "
                         "repeat for a grid")
    tu.add_argument("--latency", metavar="MIN-MAX",
                    help="seconds each cloud call takes (default: the scenario's faults, 0.5-2 for --workload)")
    tu.add_argument("--recommend", metavar="GOALS",
                    help='e.g. "p95_delay<=2s, api_calls<200000": the cheapest setting meeting them')
    tu.add_argument("--workers", type=whole_number,
                    help="processes (default: one per core); results do not depend on it")
    tu.add_argument("--json", action="store_true", help="one JSON document: a row per setting")
    tu.add_argument("--png", help="draw the trade-off and the pool over time to this file (.png or .svg)")
    tu.set_defaults(func=cmd_tune)

    d = sub.add_parser("demo", help="the main job: bring up the default topology and prove every path")
    d.add_argument("--topology", default=None, help="topology file or built-in name (default: default); a file's "
                   "`backend: sim` is honoured, `backend: containers` refused (use `enilab up`)")
    d.add_argument("--png", default="topology.png", help="where to draw the topology")
    d.set_defaults(func=cmd_demo)


def main(argv: Sequence[str] | None = None) -> int:
    from eni_core.private import NotPrivate
    from eni_core.rpc import NoAnswer, RemoteError, Unreachable

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func is None:
        parser.print_help()
        return 2
    try:
        if argv is None:  # only as the program itself: a caller's process (a test runner) is never moved
            if _simulates_at_scale(args):
                heap.reexec()
            _go_rootless(args)
        return args.func(args)
    except (UserError, NotPrivate) as err:
        print(f"enilab: error: {err}", file=sys.stderr)
        return 2
    except Unreachable as err:  # the controller died under us: one line, no traceback
        print(f"enilab: error: {err}; if it died, `enilab down` removes what it left", file=sys.stderr)
        return 1
    except NoAnswer as err:
        print(f"enilab: error: {err}", file=sys.stderr)
        return 1
    except RemoteError as err:  # the controller refused: a user's mistake, or its own failure
        if err.refused:
            print(f"enilab: error: {err.message}", file=sys.stderr)
            return 2
        print(f"enilab: the cluster's controller failed: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("enilab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
