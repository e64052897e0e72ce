"""Runs a validated scenario on a cluster and records the JSON timeline of docs/json-contract.md."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testbed.world.backends import Backend
from testbed.world.cluster import Cluster
from testbed.world.scenario import NETNS_OPS, Scenario, ScenarioError
from testbed.world.spec import NodeSpec

__all__ = ["apply_step", "check_supported", "run_scenario", "seconds"]


def seconds(t: float) -> int | float:
    """A time for JSON: 240, not 240.0; 0.25 stays 0.25.

    >>> seconds(240.0), seconds(0.25), seconds(1 / 3)
    (240, 0.25, 0.333333)
    """
    return int(t) if float(t).is_integer() else round(t, 6)


def _delete_pods(c: Cluster, s: dict) -> None:
    for name in s.get("names") or c.newest_pods(s["count"]):
        c.delete_pod(name)


def _probe(c: Cluster, s: dict) -> dict:
    from testbed.observe.traffic import probe

    c.sync_dataplane()
    trace = probe(c, s["from"], s["to"], via=s.get("via"))
    out = {"probe": trace.to_dict()}
    if "expect" in s:
        out["probe"]["expected"] = s["expect"]
        out["probe"]["as_expected"] = trace.delivered == (s["expect"] == "delivered")
    return out


def _add_node(c: Cluster, s: dict) -> None:
    c.add_node(NodeSpec(s["name"], tuple(s["subnets"]), s["max_enis"], s["ips_per_eni"]))


STEPS: dict[str, Callable[[Cluster, dict], Any]] = {
    "create_pods": lambda c, s: c.create_pods(s.get("count", 0), s.get("node"), s.get("names")),
    "create_pod": lambda c, s: c.create_pod(s["name"], s.get("node"), static=s.get("static", False),
                                            owner=s.get("owner")),
    "reclaim_claim": lambda c, s: c.reclaim_claim(s["name"]),
    "delete_workload": lambda c, s: c.delete_workload(s["owner"]),
    "delete_pods": _delete_pods,
    "advance": lambda c, s: c.advance(s["seconds"]),
    "set_node": lambda c, s: c.set_node(s["node"], max_enis=s.get("max_enis"), ips_per_eni=s.get("ips_per_eni")),
    "add_node": _add_node,
    "delete_node": lambda c, s: c.delete_node(s["node"]),
    "set_sysctl": lambda c, s: c.backend.set_sysctl(s["node"], s["key"], s["value"]),
    "probe": _probe,
}


def check_supported(scenario: Scenario, backend: str) -> None:
    """Refuse, before anything runs, what this build or backend cannot do."""
    for i, step in enumerate(scenario.steps, 1):
        if step["op"] in NETNS_OPS:
            if backend == "sim":
                raise ScenarioError(f"{scenario.source}: step {i} ({step['op']}): needs real packets; run it "
                                    "with `enilab run` (netns backend, as root)")
            if step["op"] not in STEPS:
                raise ScenarioError(f"{scenario.source}: step {i} ({step['op']}): not supported yet")


def apply_step(cluster: Cluster, step: dict) -> Any:
    return STEPS[step["op"]](cluster, step)


def run_scenario(
    scenario: Scenario,
    *,
    backend: Backend | None = None,
    on_step: Callable[[dict], None] | None = None,
    keep: bool = False,
    node_vpc: Callable[[Cluster, str], Any] | None = None,
) -> dict:
    """Run every step and return the JSON timeline (docs/json-contract.md): `{"scenario", "seed", "backend",
    "initial", "steps", "events"}`. `node_vpc`: see `Cluster`.

    >>> from testbed.world.scenario import load_scenario
    >>> out = run_scenario(load_scenario("grow-and-shrink"))
    >>> [(step["t"], step["state"]["nodes"]["node-1"]["bound"]) for step in out["steps"]]
    [(0, 17), (0, 17), (60, 17), (120, 16), (240, 15), (960, 9), (960, 12)]
    """
    check_supported(scenario, backend.name if backend else "sim")
    cluster = Cluster(scenario.cluster, backend=backend, node_vpc=node_vpc)
    try:
        out: dict[str, Any] = {"scenario": scenario.name, "seed": scenario.cluster.seed,
                               "backend": cluster.backend.name,
                               "initial": {"t": 0, "state": cluster.state()}, "steps": []}
        for i, step in enumerate(scenario.steps, 1):
            cluster.events.step = i
            result = apply_step(cluster, step)
            cluster.sync_dataplane()
            record = {"index": i, "op": step, "t": seconds(cluster.clock.now()), "state": cluster.state()}
            if isinstance(result, dict):
                record.update(result)
            out["steps"].append(record)
            if on_step is not None:
                on_step(record)
        out["events"] = [{**e, "t": seconds(e["t"])} for e in cluster.events.items]
        return out
    finally:
        if keep:
            getattr(cluster.backend, "run", None) and cluster.backend.run.unregister()
        else:
            cluster.close()
