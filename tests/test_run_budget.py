"""A scenario within every limit of the file can still ask for unbounded work: years of timers on a pool that
never fills, or thousands of large states. A run stops at the step that goes over its budget
(`MAX_RUN_EVENTS`, `MAX_RUN_CLOUD_CALLS`, `MAX_RUN_STATE_ITEMS`), with exit 2 and a message naming the step,
in bounded time and memory; a kept run that stops is torn down all the same."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import closing

import pytest
import yaml

from testbed.apps import runner
from testbed.world.backends.sim import SimBackend
from testbed.world.cluster import Cluster
from testbed.world.events import EventLimitError, EventLog
from testbed.world.scenario import MAX_RUN_EVENTS, ScenarioError, parse_scenario
from testbed.world.state import cluster_state, state_items

# one node whose subnet cannot fill its pool: it polls for addresses every 30 s for as long as time moves
STARVED = """
name: starved
cluster:
  subnets: [{id: subnet-a, cidr: 10.0.1.0/29}]
  nodes: [{name: node-1, subnets: [subnet-a], max_enis: 2, ips_per_eni: 10}]
steps:
  - {op: create_pods, node: node-1, count: 2}
  - {op: advance, seconds: SECONDS}
"""


def starved(seconds: int) -> object:
    return parse_scenario(yaml.safe_load(STARVED.replace("SECONDS", str(seconds))), "starved.yaml")


def test_a_clean_stop_between_timers_once_the_log_is_past_its_limit():
    log = EventLog(limit=2)
    for _ in range(2):
        log({"kind": "pod"})
        log.check()
    log({"kind": "pod"})
    with pytest.raises(EventLimitError, match="more than 2 events"):
        log.check()
    EventLog(limit=None).check()  # no limit: the benchmark's and the live cluster's


def test_an_advance_that_would_poll_for_years_stops_at_the_limit_naming_the_step(monkeypatch):
    monkeypatch.setattr(runner, "MAX_RUN_EVENTS", 2_000)
    with pytest.raises(ScenarioError) as err:
        runner.run_scenario(starved(10 * 365 * 86400))
    assert str(err.value) == ("starved.yaml: step 2 (advance): the run made more than 2,000 events; the limit "
                              "keeps a run's time and memory bounded; shorten the advances, or use fewer nodes or pods")
    # the same scenario with three hours' advance is within it, and polls all the way (every 30 s)
    out = runner.run_scenario(starved(3 * 3600))
    assert out["steps"][-1]["t"] == 3 * 3600 and 3 * 120 < len(out["events"]) <= 2_000


def test_the_clock_stops_at_the_first_timer_past_the_limit():
    cluster = Cluster(starved(1).cluster)
    made = cluster.events.count  # the budget counts from here
    with pytest.raises(EventLimitError), cluster.events.budget(100):
        cluster.advance(10 * 365 * 86400)
    # counted from the same place, the timers go past first: the 101st is counted, and stops before its work
    assert (cluster.events.fired, cluster.events.count - made) == (101, 100)
    assert cluster.clock.now() < 86400  # an hour or so of polls, not ten years


def test_the_states_a_run_records_are_bounded_before_they_are_made(monkeypatch):
    scenario = starved(60)
    cluster = Cluster(scenario.cluster)
    state = cluster_state(cluster)
    node = state["nodes"]["node-1"]
    listed = len(state["nodes"]) + sum(len(e["ips"]) + 1 for e in node["enis"]) + len(state["pods"])
    assert state_items(cluster) == listed
    monkeypatch.setattr(runner, "MAX_RUN_STATE_ITEMS", 2 * listed)
    with pytest.raises(ScenarioError, match=r"starved.yaml: step 1: the run's states would list more than"):
        runner.run_scenario(scenario)
    monkeypatch.setattr(runner, "MAX_RUN_STATE_ITEMS", listed - 1)
    with pytest.raises(ScenarioError, match=r"starved.yaml: the initial state: .* use fewer steps"):
        runner.run_scenario(scenario)


class _KeptBackend(SimBackend):
    """A sim backend that says whether the run kept it or closed it."""

    def __init__(self) -> None:
        super().__init__()
        self.run = object()
        self.kept = self.closed = False

    def keep(self) -> None:
        self.kept = True

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("seconds, completes", [(60, True), (10 * 365 * 86400, False)])
def test_keep_keeps_only_a_run_that_completed(monkeypatch, seconds, completes):
    monkeypatch.setattr(runner, "MAX_RUN_EVENTS", 2_000)
    backend = _KeptBackend()
    with closing(runner.timeline(starved(seconds), backend=backend, keep=True)) as parts:
        if completes:
            assert [p.kind for p in parts][-1] == "events"
        else:
            with pytest.raises(ScenarioError):
                list(parts)
    assert (backend.kept, backend.closed) == (completes, not completes)


# runs the command in a child and reports the child's peak memory alone, last on stderr
MEASURED = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print('peak', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, end='', file=sys.stderr); "
            "sys.exit(code)")


def test_a_thousand_starved_nodes_for_ten_years_exit_2_in_bounded_time_and_memory(tmp_path):
    """The red team's file, in spirit: within every limit of the file (1,000 nodes, pools of 1,000, years of
    advances), and before the budget it ran past 180 s and 10 GB."""
    nodes = [{"name": f"n{i}", "subnets": ["s0"], "max_enis": 32, "ips_per_eni": 1000} for i in range(1000)]
    scenario = {"name": "hostile", "cluster": {
        "pool": {"min_prebound": 1000, "max_prebound": 1000, "release_interval": 1},
        "faults": {"throttle": 0.3, "transient": 0.3, "timeout": 0.1},
        "subnets": [{"id": "s0", "cidr": "10.0.0.0/16"}], "nodes": nodes},
        "steps": [{"op": "advance", "seconds": 10 * 365 * 86400}] * 3}
    path = tmp_path / "hostile.yaml"
    path.write_text(json.dumps(scenario))  # JSON is YAML
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MEASURED, sys.executable, "-m", "testbed.apps.cli", "simulate",
                           str(path), "--json", "--states", "final"], capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - start
    err, _, peak_kb = proc.stderr.rpartition("peak ")
    peak_mb = int(peak_kb) / 1024
    print(f"\nexit {proc.returncode} after {took:.1f} s, peak {peak_mb:.0f} MiB")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert err == (f"enilab: error: {path}: step 1 (advance): the run made more than {MAX_RUN_EVENTS:,} "
                   "events; the limit keeps a run's time and memory bounded; shorten the advances, or use fewer "
                   "nodes or pods\n")
    assert peak_mb < 1024


def test_the_pytest_plugins_topology_steps_are_bounded_and_the_tests_own_calls_are_not(monkeypatch):
    from testbed.apps.pytest_plugin import EnilabCluster

    monkeypatch.setattr(runner, "MAX_RUN_EVENTS", 2_000)
    with pytest.raises(ScenarioError, match=r"step 2 \(advance\): the run made more than 2,000 events"):
        EnilabCluster(yaml.safe_load(STARVED.replace("SECONDS", str(10 * 365 * 86400))), backend="sim")
    ours = EnilabCluster(yaml.safe_load(STARVED.replace("SECONDS", "60")), backend="sim")
    try:
        assert ours.cluster.events.limit is None
        ours.cluster.advance(86400)  # a test may run its cluster as long as it likes: its own code
        assert ours.cluster.events.count > 2_000
    finally:
        ours.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_tune_replays_a_scenario_within_the_runs_budget_and_says_so_as_a_users_mistake(monkeypatch, tmp_path,
                                                                                       workers):
    from eni_core.model import PoolConfig
    from testbed.apps import tune
    from testbed.errors import UserError

    monkeypatch.setattr(runner, "MAX_RUN_EVENTS", 2_000)  # the workers are forked: they see it too
    path = tmp_path / "starved.yaml"
    path.write_text(STARVED.replace("SECONDS", str(10 * 365 * 86400)))
    workload = tune.load_workload(path)
    with pytest.raises(UserError, match=r"step 2 \(advance\): the run made more than 2,000 events") as err:
        tune.tune(workload, [PoolConfig(), PoolConfig(2, 5)], workers=workers)
    assert str(err.value).startswith("replaying min_prebound=") and str(path) in str(err.value)
    assert "Error:" not in str(err.value)  # however many workers: the same message


def test_cloud_calls_in_process_cost_what_any_event_does_and_have_no_budget_of_their_own(monkeypatch):
    """Static-ip mode makes a call per pod: 100,000 static pods in-process are a legitimate run."""
    monkeypatch.setattr(runner, "MAX_RUN_CLOUD_CALLS", 300)
    out = runner.run_scenario(starved(4 * 3600))  # 480 polls
    assert sum(e["kind"] == "api" for e in out["events"]) > 300


def test_the_cloud_calls_over_http_are_bounded(monkeypatch):
    """Through the SDK (`--cloud tencent`) each call is an HTTP round trip, some thirty times an in-process
    event: 500,000 events of polls took ten minutes. Over HTTP the calls have a budget of their own."""
    from testbed.world.tencent_api import TencentCloud

    monkeypatch.setattr(runner, "MAX_RUN_CLOUD_CALLS", 100)
    cloud = TencentCloud()
    try:
        with pytest.raises(ScenarioError, match=r"step 2 \(advance\): the run made more than 100 cloud calls; the "
                                                r"limit keeps its time bounded"):
            runner.run_scenario(starved(10 * 365 * 86400), node_vpc=cloud)
    finally:
        cloud.close()


def test_timers_that_fire_and_say_nothing_are_bounded_too(monkeypatch):
    """A node shrunk below its running pods holds more IPs than it may bind: its release timer fires every
    release_interval with nothing to release and no event. With a millisecond's interval, ten years never
    ended (the red team's file)."""
    spin = yaml.safe_load("""
name: spin
cluster:
  pool: {release_interval: 0.001}
  subnets: [{id: a, cidr: 10.0.1.0/24}]
  nodes: [{name: n1, subnets: [a], max_enis: 2, ips_per_eni: 4}]
steps:
  - {op: create_pods, node: n1, count: 3}
  - {op: set_node, node: n1, max_enis: 1, ips_per_eni: 1}
  - {op: advance, seconds: 315360000}
""")
    monkeypatch.setattr(runner, "MAX_RUN_EVENTS", 5_000)
    cluster = Cluster(parse_scenario(spin, "spin.yaml").cluster)
    runner.apply_steps(cluster, parse_scenario(spin, "spin.yaml").steps[:2], "spin.yaml")
    made = cluster.events.count
    cluster.advance(1.0)  # a second: a thousand firings, and no event
    assert cluster.events.fired >= 900 and cluster.events.count == made
    with pytest.raises(ScenarioError, match=r"spin.yaml: step 3 \(advance\): the run's timers fired more than "
                                            r"5,000 times; the limit keeps its time bounded; shorten the advances"):
        runner.run_scenario(parse_scenario(spin, "spin.yaml"))


def test_a_step_that_is_no_advance_gets_advice_of_its_own(monkeypatch):
    monkeypatch.setattr(runner, "MAX_RUN_EVENTS", 1)  # counted from the cluster built: two pods started are two
    with pytest.raises(ScenarioError, match=r"step 1 \(create_pods\): the run made more than 1 event; the limit "
                                            r"keeps a run's time and memory bounded; use fewer nodes or pods$"):
        runner.run_scenario(starved(60))


@pytest.mark.parametrize("command", ["topology", "demo"])
def test_topology_and_the_demo_run_a_files_steps_within_the_budget(command, tmp_path, monkeypatch, capsys):
    """Both drew a user's file simulated to its end with the steps unbounded (4 GB in 90 s, still going)."""
    from testbed.apps.cli import main

    monkeypatch.setattr(runner, "MAX_RUN_EVENTS", 2_000)
    monkeypatch.setattr("os.geteuid", lambda: 1000)  # the demo's simulator path: no namespaces
    path = tmp_path / "starved.yaml"
    path.write_text(STARVED.replace("SECONDS", str(10 * 365 * 86400)))
    png = tmp_path / "t.png"
    argv = ["topology", str(path), "--png", str(png)] if command == "topology" else \
        ["demo", "--topology", str(path), "--png", str(png)]
    assert main(argv) == 2
    assert "step 2 (advance): the run made more than 2,000 events" in capsys.readouterr().err
    assert not png.exists()


def test_with_states_final_only_the_last_state_is_made_and_charged(monkeypatch):
    """`--states final` drops every state but the last: it was made, and charged to the budget, all the
    same (a file within the budget as one state was refused after 48 of them)."""
    scenario = starved(60)
    cluster = Cluster(scenario.cluster)
    one = state_items(cluster) + 2  # the last state lists the two pods too
    monkeypatch.setattr(runner, "MAX_RUN_STATE_ITEMS", one)
    parts = list(runner.timeline(scenario, final_only=True))
    assert "state" not in parts[0].value["initial"] and "state" not in parts[1].value
    assert parts[2].value["state"]["pods"]
    with pytest.raises(ScenarioError, match="the run's states would list more than"):
        list(runner.timeline(scenario))  # all of them: over
