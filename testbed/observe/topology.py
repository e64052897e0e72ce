"""The cluster as a networkx graph (VPC -> subnets -> ENIs -> pods; nodes and VPC hosts), drawn with
matplotlib with a trace overlaid, and exported to PNG/SVG, GraphML and JSON.

Building the graph and drawing it are apart: `build_graph` is pure data, `draw` only reads it.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from testbed.world.pods import PodPhase

if TYPE_CHECKING:
    from testbed.world.cluster import Cluster

__all__ = ["build_graph", "draw", "export", "trace_path"]

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def build_graph(cluster: Cluster) -> nx.Graph:
    """Nodes are keyed `vpc`, `subnet:<id>`, `eni:<id>`, `node:<name>`, `pod:<name>`, `host:<name>`,
    each with a `kind` and its addresses; edges say `contains`, `attached`, `ip-on`, `runs`. Containers a
    runtime wired through `enilab-cni` are pods too, keyed by their attachment (`pod:cni/<network>/
    <container id>/<ifname>`) and marked `runtime`, with their network, container id, ifname and netns.

    Examples
    --------
    >>> from testbed.world.cluster import Cluster
    >>> from testbed.world.scenario import load_scenario
    >>> c = Cluster(load_scenario("default").cluster)
    >>> _ = c.create_pods(2, "node-1")
    >>> g = build_graph(c)
    >>> sorted(k for k, d in g.nodes(data=True) if d["kind"] == "pod")
    ['pod:pod-1', 'pod:pod-2']
    >>> g.nodes["eni:" + c.pods["pod-1"].eni_id]["table"]
    2003
    """
    state = cluster.state()
    g = nx.Graph()
    g.add_node("vpc", kind="vpc", label="VPC")
    for sid, s in state["subnets"].items():
        g.add_node(f"subnet:{sid}", kind="subnet", label=sid, cidr=s["cidr"], available=s["available"], subnet=sid)
        g.add_edge("vpc", f"subnet:{sid}", rel="contains")
    for host in cluster.spec.hosts:
        g.add_node(f"host:{host.name}", kind="host", label=host.name, ip=str(host.ip), subnet=host.subnet)
        g.add_edge(f"subnet:{host.subnet}", f"host:{host.name}", rel="contains")
    for name, n in state["nodes"].items():
        g.add_node(f"node:{name}", kind="node", label=name, bound=n["bound"], capacity=n["capacity"],
                   netns=n.get("netns", ""))
        for eni in n["enis"]:
            key = f"eni:{eni['id']}"
            g.add_node(key, kind="eni", label=f"{name}/{eni['ifname']}", ifname=eni["ifname"],
                       ifindex=eni["ifindex"], mac=eni["mac"], table=eni["table"], subnet=eni["subnet"],
                       node=name, ips=len(eni["ips"]), allocated=len(eni["allocated"]))
            g.add_edge(f"subnet:{eni['subnet']}", key, rel="contains")
            g.add_edge(key, f"node:{name}", rel="attached")
    for name, p in state["pods"].items():
        if p["phase"] != PodPhase.RUNNING:
            continue
        key = f"pod:{name}"
        eni_subnet = g.nodes[f"eni:{p['eni']}"]["subnet"]
        g.add_node(key, kind="pod", label=name, ip=p["ip"], node=p["node"], subnet=eni_subnet,
                   netns=p.get("netns", ""))
        g.add_edge(f"eni:{p['eni']}", key, rel="ip-on")
    for name, n in state["nodes"].items():  # containers a runtime attached through enilab-cni
        for akey, a in n.get("attachments", {}).items():
            eni = f"eni:{a['eni']}"
            g.add_node(f"pod:{akey}", kind="pod", label=f"{a['container_id'][:12]}/{a['ifname']}", ip=a["ip"],
                       node=name, subnet=g.nodes[eni]["subnet"], netns=a["netns"], runtime=True,
                       network=a["network"], container_id=a["container_id"], ifname=a["ifname"])
            g.add_edge(eni, f"pod:{akey}", rel="ip-on")
    return g


def trace_path(g: nx.Graph, trace: dict[str, Any]) -> list[str]:
    """The graph nodes a trace went through: source, the ENI it left by, the fabric, the destination."""
    def key(name: str) -> str | None:
        for prefix in ("pod:", "host:"):
            if f"{prefix}{name}" in g:
                return f"{prefix}{name}"
        return None

    src, dst = key(trace["src"]), key(trace["dst"])
    if src is None:
        return []
    hops = [src]
    if trace.get("egress") and g.nodes[src]["kind"] == "pod":
        node = g.nodes[src]["node"]
        eni = next((k for k, d in g.nodes(data=True) if d["kind"] == "eni" and d["node"] == node
                    and d["ifname"] == trace["egress"]), None)
        if eni:
            hops.append(eni)
    target = dst if (dst and trace.get("delivered")) else None
    if target:
        hops += nx.shortest_path(g, hops[-1], target)[1:]
    return hops


def _layout(g: nx.Graph) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """Columns VPC | subnets and hosts | ENIs | pods. Pods are spaced evenly, grouped by node and ENI; an
    ENI sits level with its pods; subnets spread over the height. Also returns each node's band (y0, y1)."""
    pos: dict[str, tuple[float, float]] = {}
    bands: dict[str, tuple[float, float]] = {}
    y = 0.0
    for node in sorted(k for k, d in g.nodes(data=True) if d["kind"] == "node"):
        top = y
        for eni in sorted((k for k in g.neighbors(node) if g.nodes[k]["kind"] == "eni"),
                          key=lambda k: g.nodes[k]["ifindex"] or 0):
            pods = sorted((k for k in g.neighbors(eni) if g.nodes[k]["kind"] == "pod"),
                          key=lambda k: tuple(int(x) for x in g.nodes[k]["ip"].split(".")))
            first = y
            for pod in pods:
                pos[pod] = (9.0, -y)
                y += 1
            pos[eni] = (5.0, -(first + max(len(pods) - 1, 0) / 2))
            y = max(y, first + 2.5)  # room for the ENI's label even with no pod
        bands[node] = (-top + 0.6, -(y - 0.4))
        y += 1.5
    height = max(y, 1.0)
    side = sorted(k for k, d in g.nodes(data=True) if d["kind"] in ("subnet", "host"))
    side.sort(key=lambda k: (g.nodes[k]["subnet"], g.nodes[k]["kind"] != "subnet"))
    for i, key in enumerate(side):
        pos[key] = (1.8 if g.nodes[key]["kind"] == "subnet" else 2.6, -(i + 0.5) * height / max(len(side), 1))
    pos["vpc"] = (-1.0, -height / 2)
    for node, (y0, y1) in bands.items():
        pos[node] = (7.0, (y0 + y1) / 2)
    return pos, bands


SHAPES = {"vpc": ("s", 1400), "subnet": ("h", 1100), "eni": ("D", 500), "host": ("s", 400), "pod": ("o", 200)}
LABELS: dict[str, Callable[[dict[str, Any]], str]] = {  # kind -> its label's text; other kinds: the label
    "subnet": lambda d: f"{d['label']}\n{d['cidr']}\n{d['available']} free",
    "eni": lambda d: f"{d['label']}\nidx {d['ifindex']} table {d['table']}\n{d['mac']}\n{d['allocated']}/{d['ips']}",
    "pod": lambda d: f"{d['label']}  {d['ip']}",
    "host": lambda d: f"{d['label']}  {d['ip']}",
}


def draw(g: nx.Graph, path: str | Path, trace: dict[str, Any] | None = None, title: str = "") -> Path:
    """Draw to PNG or SVG (by the file's suffix); a trace's path is drawn thick in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos, bands = _layout(g)
    subnets = sorted(d["subnet"] for _, d in g.nodes(data=True) if d["kind"] == "subnet")
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(subnets)}
    pods = sum(1 for _, d in g.nodes(data=True) if d["kind"] == "pod")
    fig, ax = plt.subplots(figsize=(14, max(6.0, 0.3 * max(pods, 14))))
    _draw_bands(ax, g, bands)
    edges = [(u, v) for u, v in g.edges() if u in pos and v in pos and "node" not in (g.nodes[u]["kind"],
                                                                                      g.nodes[v]["kind"])]
    nx.draw_networkx_edges(g, pos, edgelist=edges, ax=ax, edge_color="#BBBBBB", width=1.0)
    for kind, (marker, size) in SHAPES.items():
        keys = [k for k in g if g.nodes[k]["kind"] == kind]
        colours = [colour.get(g.nodes[k].get("subnet"), "#666666") if kind != "vpc" else "#333333" for k in keys]
        nx.draw_networkx_nodes(g, pos, nodelist=keys, node_shape=marker, node_size=size, node_color=colours, ax=ax)
    _draw_labels(ax, g, pos)
    if trace is not None:
        title = _draw_trace(ax, g, pos, trace, title)
    for s, c in colour.items():
        ax.plot([], [], "o", color=c, label=s)
    ax.legend(loc="upper left", fontsize=8, title="subnet")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _draw_bands(ax, g: nx.Graph, bands: dict[str, tuple[float, float]]) -> None:
    """Each node as a grey band behind its ENIs and pods, titled with its eni-ip bound/capacity."""
    from matplotlib.patches import Rectangle

    for node, (y0, y1) in bands.items():
        ax.add_patch(Rectangle((4.0, y1), 7.8, y0 - y1, facecolor="#F2F2F2", edgecolor="#CCCCCC", zorder=0))
        d = g.nodes[node]
        ax.text(4.1, y0 - 0.1, f"{d['label']}  eni-ip {d['bound']}/{d['capacity']}", fontsize=9, va="top",
                fontweight="bold")


def _draw_labels(ax, g: nx.Graph, pos: dict[str, tuple[float, float]]) -> None:
    """Pods, hosts and ENIs labelled on their right; the VPC and subnets under their marker."""
    for k in g:
        d = g.nodes[k]
        kind = d["kind"]
        if kind == "node":
            continue
        text = LABELS[kind](d) if kind in LABELS else d["label"]
        side = kind in ("pod", "host", "eni")
        below = -(SHAPES[kind][1] ** 0.5 / 2 + 4) if kind in SHAPES else -16  # under the marker, not on it
        ax.annotate(text, pos[k], xytext=(10 if side else 0, 0 if side else below), textcoords="offset points",
                    fontsize=7 if kind in ("pod", "eni") else 8, ha="left" if side else "center",
                    va="center" if side else "top")


def _draw_trace(ax, g: nx.Graph, pos: dict[str, tuple[float, float]], trace: dict[str, Any], title: str) -> str:
    """The trace's path drawn thick (red if delivered, grey if not); returns the title with its verdict."""
    hops = trace_path(g, trace)
    ok = trace.get("delivered")
    nx.draw_networkx_edges(g, pos, edgelist=list(itertools.pairwise(hops)), ax=ax,
                           edge_color="#D62728" if ok else "#7F7F7F", width=3.5)
    verdict = "delivered" if ok else f"dropped at {trace.get('dropped_at')}: {trace.get('reason')}"
    return (title + "\n" if title else "") + (f"trace {trace['src']} -> {trace['dst']}: {verdict}"
                                              + (f" (egress {trace['egress']}, table {trace['table']})"
                                                 if trace.get("egress") else ""))


def export(g: nx.Graph, path: str | Path) -> Path:
    """GraphML (`.graphml`) or node-link JSON (`.json`)."""
    out = Path(path)
    if out.suffix == ".graphml":
        nx.write_graphml(g, out)
    else:
        out.write_text(json.dumps(nx.node_link_data(g, edges="links"), indent=1))
    return out
