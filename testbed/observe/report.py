"""Human-readable views of the JSON timeline, with rich: one table per step and the rules at work."""
from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from eni_core.names import short_list

__all__ = ["print_step", "print_timeline"]

_POOL_STYLE = {"bind": "green", "create_eni": "bold green", "release": "yellow", "delete_eni": "bold yellow"}


def _eni_cell(eni: dict) -> str:
    return f"{eni['ifname']}[{eni['table']}] {len(eni['allocated'])}/{len(eni['ips'])}"


def node_table(state: dict, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False, pad_edge=False)
    for col in ("node", "pods", "pending", "bound", "eni-ip alloc/cap", "ENIs: ifname\\[table] allocated/bound"):
        table.add_column(col, justify="right" if col in ("pods", "pending", "bound") else "left")
    for name, n in state["nodes"].items():
        enis = "  ".join(_eni_cell(e) for e in n["enis"]) or "-"
        cond = "".join(f"\n[red]{c['type']}: {c['message']}[/red]" for c in n.get("conditions", []))
        table.add_row(name, str(n["pods"]), str(n["pending"]), str(n["bound"]),
                      f"{n['allocatable']}/{n['capacity']}", enis + cond)
    return table


def _event_line(e: dict) -> str | None:
    kind = e.get("kind")
    if kind == "pool":
        style = _POOL_STYLE.get(e["action"], "white")
        what = {"bind": f"bind {e.get('count')} IPs on {e.get('eni')}",
                "create_eni": f"new ENI in {e.get('subnet')} with {e.get('count')} IPs",
                "release": f"release {', '.join(e.get('ips', []))} from {e.get('eni')}",
                "delete_eni": f"delete ENI {e.get('eni')}"}[e["action"]]
        return f"  [{style}]{e['node']}: {what}[/{style}]  [dim]({e['why']})[/dim]"
    if kind == "condition":
        return f"  [bold red]{e['node']}: {e['type']}={e['status']}[/bold red] {e['message']}"
    if kind == "backoff":
        return f"  [magenta]{e['node']}: back off {e['seconds']:g} s[/magenta] ({e['reason']})"
    if kind == "api" and e.get("result") != "ok":
        return f"  [magenta]{e['call']} failed: {e['result']}[/magenta] [dim]{e.get('error', '')}[/dim]"
    return None


def _op_text(op: dict) -> str:
    """The step as `op key=value ...`, escaped for rich (a list's brackets are text, not markup)."""
    return escape(" ".join([op["op"], *(f"{k}=[{short_list(v)}]" if isinstance(v, list) else f"{k}={v}"
                                        for k, v in op.items() if k != "op")]))


def print_step(console: Console, step: dict, events: list[dict]) -> None:
    console.rule(f"[bold]step {step['index']}[/bold] · t={step['t']}s · {_op_text(step['op'])}", align="left")
    pending = [e for e in events if e.get("kind") == "pod" and e.get("event") == "FailedScheduling"]
    said_pending = False
    for e in events:
        if e.get("kind") == "pod" and e.get("event") == "FailedScheduling":
            if not said_pending:
                said_pending = True
                names = [p["pod"] for p in pending]
                who = names[0] if len(names) == 1 else f"{len(names)} pods ({names[0]} .. {names[-1]})"
                console.print(f"  [red]{who} Pending[/red]  [dim]({e['reason']})[/dim]", highlight=False)
            continue
        line = _event_line(e)
        if line:
            console.print(line, highlight=False)
    if "probe" in step:
        p = step["probe"]
        ok = p["delivered"] == (p.get("expected", "delivered") == "delivered")
        mark = "[green]PASS[/green]" if ok else "[red]FAIL[/red]"
        console.print(f"  probe {mark} {p['src']} -> {p['dst']}: "
                      + ("delivered" + (f" via {p['egress']} (table {p['table']})" if p["egress"] else "")
                         if p["delivered"] else f"dropped at {p['dropped_at']}: {p['reason']}"), highlight=False)
    console.print(node_table(step["state"]))
    subnets = "  ".join(f"{k} {v['cidr']}: {v['available']} free" for k, v in step["state"]["subnets"].items())
    console.print(f"[dim]subnets: {subnets}[/dim]", highlight=False)


def print_timeline(console: Console, parts: Iterable[tuple[str, dict | list, list[dict]]]) -> None:
    """Print a timeline as it runs: `parts` are (kind, value, events), as `testbed.apps.runner.timeline`
    yields them, so each step is on the screen as soon as it is done."""
    for kind, value, events in parts:
        if kind == "head":
            console.print(f"[bold]scenario {value['scenario']}[/bold] (seed {value['seed']}, "
                          f"{value['backend']} backend)")
            print_step(console, {"index": 0, "t": 0, "op": {"op": "start"}, "state": value["initial"]["state"]},
                       events)
        elif kind == "step":
            print_step(console, value, events)
