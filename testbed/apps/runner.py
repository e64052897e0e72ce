"""Runs a validated scenario on a cluster and records the JSON timeline of docs/json-contract.md."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from typing import Any, NamedTuple, TextIO

from testbed.errors import UsageError, UserError
from testbed.world.backends import Backend
from testbed.world.cluster import Cluster
from testbed.world.events import EventLimitError
from testbed.world.scenario import (
    MAX_RUN_CLOUD_CALLS,
    MAX_RUN_EVENTS,
    MAX_RUN_STATE_ITEMS,
    NETNS_OPS,
    Scenario,
    ScenarioError,
)
from testbed.world.spec import NodeSpec
from testbed.world.state import state_items

__all__ = ["STATES", "Part", "apply_step", "apply_steps", "check_step_supported", "check_supported", "refuse_checks",
           "run_scenario", "run_step", "seconds", "select_states", "state_changes", "timeline", "write_json"]


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


def _create_pods(c: Cluster, s: dict) -> Any:
    names = s.get("names") or [c.next_pod_name() for _ in range(s.get("count", 0))]
    if "image" in s or "command" in s:  # the containers backend (check_supported refused the others)
        c.backend.declare(names, s.get("image"), s.get("command"))
    return c.create_pods(len(names), s.get("node"), names)


STEPS: dict[str, Callable[[Cluster, dict], Any]] = {
    "create_pods": _create_pods,
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
        check_step_supported(f"{scenario.source}: step {i}", step, backend)


def check_step_supported(where: str, step: dict, backend: str) -> None:
    """Refuse one step this build or backend cannot do; `where` names it (`s.yaml: step 3`)."""
    where = f"{where} ({step['op']})"
    if backend != "containers" and ("image" in step or "command" in step):
        raise ScenarioError(f"{where}: 'image' and 'command' need pods that are containers: use `--backend "
                            "containers` (or `backend: containers`)")
    if step["op"] in NETNS_OPS:
        if backend == "sim":
            raise ScenarioError(f"{where}: needs real packets; run it with `enilab run` (netns backend, as root)")
        if step["op"] not in STEPS:
            raise ScenarioError(f"{where}: not supported yet")


def refuse_checks(scenario: Scenario, given: str, command: str) -> None:
    """UsageError if `scenario` has a probe step: `command` brings a topology up and reports nothing of a
    probe's `expect`, so its checks would pass unread. `given` names the file as the user gave it, quoted."""
    for i, step in enumerate(scenario.steps, 1):
        if step["op"] == "probe":
            raise UsageError(f"{given} is a scenario with checks (step {i}, probe), which {command} would "
                             f"not report: give it to `enilab run` (root); {command} takes a topology, such as "
                             "default or static")


def apply_step(cluster: Cluster, step: dict) -> Any:
    return STEPS[step["op"]](cluster, step)


def run_step(cluster: Cluster, source: str, index: int, step: dict) -> Any:
    """`apply_step`, within the event log's limits (`EventLog.budget`): past them, a ScenarioError that
    names the step and what to change."""
    try:
        result = apply_step(cluster, step)
        cluster.events.check()
    except EventLimitError as err:
        advice = "shorten the advances, or use fewer nodes or pods" if step["op"] == "advance" else \
            "use fewer nodes or pods"
        raise ScenarioError(f"{source}: step {index} ({step['op']}): {err}; {advice}") from None
    return result


def apply_steps(cluster: Cluster, steps: Iterable[dict], source: str,
                after_each: Callable[[], object] | None = None) -> None:
    """Every step of a scenario (read from `source`) on `cluster`, `after_each()` after each, within a run's
    budget: `MAX_RUN_EVENTS` more events than the cluster had made (its cloud is in-process). What the
    cluster does afterwards (a live cluster's timers, a test's own calls) is under its own limits again."""
    with cluster.events.budget(MAX_RUN_EVENTS):
        for i, step in enumerate(steps, 1):
            run_step(cluster, source, i, step)
            if after_each is not None:
                after_each()


class Part(NamedTuple):
    """One piece of the timeline, in the order of the JSON document."""

    kind: str  # "head" ({"scenario", "seed", "backend", "initial"}), "step" (a record) or "events" (all)
    value: Any
    events: list[dict]  # the events of this part alone (step 0: the cluster's start), for live views


def timeline(scenario: Scenario, *, backend: Backend | None = None, keep: bool = False,
             node_vpc: Callable[[Cluster, str], Any] | None = None, final_only: bool = False) -> Iterator[Part]:
    """Run every step, yielding the timeline as it happens: the head, each step's record, the events.

    Nothing is kept but the events, so a consumer that writes each part out runs in the memory of one
    state. Close the generator (or exhaust it) to tear the cluster down; `keep` leaves it up once every
    step has run (a run that stops on an error is torn down all the same).
    `node_vpc`: see `Cluster`. With `final_only` (`--states final`) only the last state is made (the
    initial one when there are no steps): the others would be dropped, after their time and budget.

    A run's work is bounded (`MAX_RUN_EVENTS`, `MAX_RUN_CLOUD_CALLS`, `MAX_RUN_STATE_ITEMS`): a file within
    every limit of its own can still ask for years of timers on a thousand nodes. Past any bound the run
    stops with a ScenarioError that names the step, where it can stop cleanly: between two timers, before a
    state is made.
    """
    check_supported(scenario, backend.name if backend else "sim")
    cluster = Cluster(scenario.cluster, backend=backend, node_vpc=node_vpc)
    # the steps' budget, as `apply_steps` gives it; cloud calls have one of their own only over HTTP
    # (`node_vpc`), where each costs a millisecond or more: in-process a call costs what any event does
    # (static-ip mode makes one per pod)
    budget = cluster.events.budget(MAX_RUN_EVENTS, MAX_RUN_CLOUD_CALLS if node_vpc is not None else None)
    states = _StateBudget(scenario.source, MAX_RUN_STATE_ITEMS)
    completed = False
    try:
        with budget:
            said = len(cluster.events.items)
            last = len(scenario.steps)
            initial: dict[str, Any] = {"t": 0}
            if not (final_only and last):
                states.charge(cluster, 0)
                initial["state"] = cluster.state()
            yield Part("head", {"scenario": scenario.name, "seed": scenario.cluster.seed,
                                "backend": cluster.backend.name, "initial": initial}, cluster.events.items[:said])
            for i, step in enumerate(scenario.steps, 1):
                cluster.events.step = i
                result = run_step(cluster, scenario.source, i, step)
                cluster.sync_dataplane()
                record = {"index": i, "op": step, "t": seconds(cluster.clock.now())}
                if not final_only or i == last:
                    states.charge(cluster, i)
                    record["state"] = cluster.state()
                if isinstance(result, dict):
                    record.update(result)
                fresh, said = cluster.events.items[said:], len(cluster.events.items)
                yield Part("step", record, fresh)
            events = cluster.events.items
            for event in events:  # in place: a copy of them all would double the run's peak memory
                event["t"] = seconds(event["t"])
            yield Part("events", events, [])
        completed = True
    finally:
        if keep and completed:
            if cluster.backend.run is not None:
                cluster.backend.keep()
        else:
            cluster.close()


class _StateBudget:
    """The state items (`state_items`) a run's states may list in all, charged before each is made."""

    def __init__(self, source: str, limit: int) -> None:
        self.source, self.limit, self.spent = source, limit, 0

    def charge(self, cluster: Cluster, step: int) -> None:
        self.spent += state_items(cluster)
        if self.spent > self.limit:
            where = f"step {step}" if step else "the initial state"
            raise ScenarioError(f"{self.source}: {where}: the run's states would list more than {self.limit:,} "
                                "items (nodes, ENIs, bound IPs, pods, claims), the limit that keeps its time and "
                                "output bounded; use fewer steps, nodes or pre-bound IPs")


def run_scenario(
    scenario: Scenario,
    *,
    backend: Backend | None = None,
    on_step: Callable[[dict], None] | None = None,
    keep: bool = False,
    node_vpc: Callable[[Cluster, str], Any] | None = None,
) -> dict:
    """Run every step and return the JSON timeline (docs/json-contract.md): `{"scenario", "seed", "backend",
    "initial", "steps", "events"}`, built in memory (`write_json` streams the same document).

    >>> from testbed.world.scenario import load_scenario
    >>> out = run_scenario(load_scenario("grow-and-shrink"))
    >>> [(step["t"], step["state"]["nodes"]["node-1"]["bound"]) for step in out["steps"]]
    [(0, 17), (0, 17), (60, 17), (120, 16), (240, 15), (960, 9), (960, 12)]
    """
    out: dict[str, Any] = {}
    with closing(timeline(scenario, backend=backend, keep=keep, node_vpc=node_vpc)) as parts:
        for part in parts:
            if part.kind == "head":
                out.update(part.value, steps=[])
            elif part.kind == "step":
                out["steps"].append(part.value)
                if on_step is not None:
                    on_step(part.value)
            else:
                out["events"] = part.value
    return out


STATES = ("all", "final", "changed")
SECTIONS = ("nodes", "subnets", "pods", "claims")


def select_states(parts: Iterable[Part], states: str, steps: int) -> Iterator[Part]:
    """The timeline with only the states asked for (`steps`: how many step records will come).

    - all: every state, the contract as it always was;
    - final: the head says ``"states": "final"``; only the last step's record keeps its "state" (the
      initial one when there are no steps);
    - changed: the head says ``"states": "changed"``; the initial state is whole, and each step's
      record has "changes" instead of "state": for each of nodes, subnets, pods and claims, the entries
      that are new or differ from the step before, whole, and null for each entry that is gone.
    """
    if states not in STATES:
        raise ValueError(f"states must be one of {', '.join(STATES)}, not {states!r}")
    before: dict | None = None
    for part in parts:
        if states == "all" or part.kind == "events":
            yield part
            continue
        value = dict(part.value)
        if part.kind == "head":
            head = {k: v for k, v in value.items() if k != "initial"}
            initial = dict(value["initial"])
            before = initial.get("state")  # absent: a timeline made `final_only`
            if states == "final" and steps:
                initial.pop("state", None)
            yield part._replace(value={**head, "states": states, "initial": initial})
            continue
        state = value.pop("state", None)
        if states == "changed":
            value["changes"] = state_changes(before, state)
            before = state
        elif value["index"] == steps:
            value["state"] = state
        yield part._replace(value=value)


def state_changes(before: dict, after: dict) -> dict:
    """What `select_states(..., "changed")` records for one step (see there)."""
    changes = {}
    for section in SECTIONS:
        old, new = before[section], after[section]
        diff = {key: entry for key, entry in new.items() if old.get(key) != entry}
        diff.update((key, None) for key in old if key not in new)
        changes[section] = diff
    return changes


def write_json(parts: Iterable[Part], out: TextIO, *, indent: int | None = None) -> None:
    """Write the timeline as one JSON document while it runs: the same text, byte for byte, that
    ``json.dump(run_scenario(...), out, indent=indent)`` writes, but one step at a time."""
    newline = "" if indent is None else "\n"
    item = ", " if indent is None else ","

    def pad(depth: int) -> str:
        return newline + " " * ((indent or 0) * depth)

    def value(v: Any, depth: int) -> str:
        text = json.dumps(v, indent=indent)
        return text if indent is None else text.replace("\n", pad(depth))

    steps, opened = 0, False
    try:
        for part in parts:
            if part.kind == "head":
                out.write("{" + item.join(f"{pad(1)}{json.dumps(k)}: {value(v, 1)}" for k, v in part.value.items())
                          + f"{item}{pad(1)}\"steps\": [")
                opened = True
            elif part.kind == "step":
                out.write((item if steps else "") + pad(2) + value(part.value, 2))
                steps += 1
            else:
                out.write((pad(1) if steps else "") + f"]{item}{pad(1)}\"events\": {value(part.value, 1)}{pad(0)}}}")
    except UserError as err:  # refused mid-run: the steps so far and what stopped it, still one JSON document
        if opened:
            out.write((pad(1) if steps else "") + f"]{item}{pad(1)}\"error\": {json.dumps(str(err))}{pad(0)}}}")
        raise
