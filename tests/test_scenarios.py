"""Every fixture scenario runs and prints the JSON contract of docs/json-contract.md; each shows its rule."""
from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from contextlib import closing
from itertools import pairwise

import pytest

from testbed.apps.runner import run_scenario, select_states, timeline, write_json
from testbed.world.scenario import NETNS_OPS, ScenarioError, load_scenario, parse_scenario
from tests.helpers import SCENARIOS

ALL_FIXTURES = sorted(SCENARIOS.glob("*.yaml"))
NETNS_ONLY = {p for p in ALL_FIXTURES if any(step["op"] in NETNS_OPS for step in load_scenario(p).steps)}
FIXTURES = [p for p in ALL_FIXTURES if p not in NETNS_ONLY]
NODE_KEYS = {"pods", "pending", "bound", "allocatable", "capacity", "enis"}
ENI_KEYS = {"id", "subnet", "ifname", "ifindex", "mac", "table", "ips", "allocated"}


def run(name: str) -> dict:
    return run_scenario(load_scenario(SCENARIOS / f"{name}.yaml"))


def nodes_at(out: dict, step: int, node: str = "node-1") -> dict:
    return out["steps"][step - 1]["state"]["nodes"][node]


def test_there_are_at_least_eight_scenarios():
    assert len(FIXTURES) >= 8


@pytest.mark.parametrize("path", sorted(NETNS_ONLY), ids=lambda p: p.stem)
def test_simulate_refuses_netns_only_scenarios_clearly(path):
    with pytest.raises(ScenarioError, match="needs real packets"):
        run_scenario(load_scenario(path))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_scenario_output_follows_the_json_contract(path):
    scenario = load_scenario(path)
    out = run_scenario(scenario)
    assert {"scenario", "steps", "events"} <= set(out)
    for i, step in enumerate(out["steps"], 1):
        assert step["index"] == i and "op" in step["op"] and isinstance(step["t"], int | float)
        state = step["state"]
        assert set(state) == {"nodes", "subnets", "pods", "claims"}
        for node in state["nodes"].values():
            assert set(node) >= NODE_KEYS
            assert node["bound"] == sum(len(e["ips"]) for e in node["enis"])
            if scenario.cluster.mode == "shared-eni":
                assert node["allocatable"] == node["bound"]  # eni-ip allocatable: the IPs bound
            else:
                assert node["allocatable"] == node["capacity"]  # static: bound on demand, up to capacity
            for eni in node["enis"]:
                assert set(eni) == ENI_KEYS
                assert eni["table"] == eni["ifindex"] + 2000
                assert set(eni["allocated"]) <= set(eni["ips"])
        for pod in state["pods"].values():
            assert {"node", "phase", "ip", "eni"} <= set(pod)
            assert (pod["ip"] is None) == (pod["phase"] == "Pending")
        for subnet in state["subnets"].values():
            assert set(subnet) == {"cidr", "available"}
    json.dumps(out)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_scenario_is_reproducible_from_its_seed(path):
    assert run_scenario(load_scenario(path)) == run_scenario(load_scenario(path))


def test_grow_and_shrink_shows_every_rule():
    out = run("grow-and-shrink")
    n = nodes_at(out, 1)
    assert (n["pods"], n["bound"], [len(e["ips"]) for e in n["enis"]]) == (12, 17, [10, 7])
    assert [e["table"] for e in n["enis"]] == [2003, 2004]
    assert nodes_at(out, 3)["bound"] == 17  # t=60: the first release waits 120 s
    assert nodes_at(out, 4)["bound"] == 16  # t=120: one IP, from eth2 (fewest allocated)
    assert [len(e["ips"]) for e in nodes_at(out, 4)["enis"]] == [10, 6]
    assert nodes_at(out, 5)["bound"] == 15
    final = nodes_at(out, 6)
    assert final["bound"] == 9 and len(final["enis"]) == 1  # eth2 emptied and deleted; 4 + 5
    assert nodes_at(out, 7)["bound"] == 12  # 7 pods + 5, at once


def test_release_one_per_interval_scenario():
    out = run("release-one-per-interval")
    assert [nodes_at(out, i)["bound"] for i in range(1, 8)] == [12, 12, 12, 11, 11, 10, 4]


def test_quick_release_scenario():
    out = run("quick-release")
    assert [nodes_at(out, i)["bound"] for i in (3, 4)] == [12, 4]


def test_max_bindable_clamp_scenario():
    out = run("max-bindable-clamp")
    step3 = nodes_at(out, 3)
    assert (step3["bound"], step3["capacity"], out["steps"][2]["t"]) == (10, 10, 0)
    assert (nodes_at(out, 4)["pods"], nodes_at(out, 4)["pending"]) == (10, 4)


def test_subnet_choice_scenario():
    out = run("subnet-choice")
    assert [e["subnet"] for e in nodes_at(out, 2)["enis"]] == ["subnet-big", "subnet-twin", "subnet-big"]


def test_subnet_exhausted_scenario_reports_and_recovers():
    out = run("subnet-exhausted")
    n = nodes_at(out, 1)
    assert n["pending"] == 3 and n["conditions"][0]["type"] == "IPPoolShortfall"
    assert any(e["kind"] == "condition" and e["status"] for e in out["events"])
    assert nodes_at(out, 3)["conditions"] == []


def test_eni_ip_scheduling_scenario():
    out = run("eni-ip-scheduling")
    n2 = nodes_at(out, 2, "node-2")
    assert (n2["pods"], n2["pending"], n2["capacity"]) == (6, 2, 6)
    assert nodes_at(out, 3, "node-2")["pending"] == 0
    pods = out["steps"][3]["state"]["pods"]
    assert {pods[p]["node"] for p in ("pod-21", "pod-22", "pod-23")} == {"node-1"}  # the most free eni-ip


def test_every_api_call_is_an_event():
    out = run("cloud-faults")
    api = [e for e in out["events"] if e["kind"] == "api"]
    assert any(e["result"] != "ok" for e in api) and all("call" in e for e in api)
    final = out["steps"][-1]["state"]["nodes"]["node-1"]
    assert final["pods"] == 0 and final["bound"] == 5  # converged despite the faults


def test_simulate_cli_prints_the_json_contract():
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "simulate",
                           str(SCENARIOS / "grow-and-shrink.yaml"), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["scenario"] == "grow-and-shrink"


def test_simulate_cli_prints_a_readable_table():
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "simulate",
                           str(SCENARIOS / "grow-and-shrink.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "step 4" in proc.stdout and "release" in proc.stdout and "eth2[2004]" in proc.stdout


# -- the JSON document, streamed ------------------------------------------------------------------
STREAMED = FIXTURES + sorted((SCENARIOS.parent / "topologies").glob("*.yaml"))


def streamed(path, states: str = "all", indent: int | None = None) -> str:
    scenario = load_scenario(path)
    buffer = io.StringIO()
    with closing(timeline(scenario)) as parts:
        write_json(select_states(parts, states, len(scenario.steps)), buffer, indent=indent)
    return buffer.getvalue()


@pytest.mark.parametrize("path", STREAMED, ids=lambda p: p.stem)
def test_streamed_json_is_the_document_built_in_memory(path):
    built = run_scenario(load_scenario(path))
    for indent in (None, 1):
        assert streamed(path, indent=indent) == json.dumps(built, indent=indent)


@pytest.mark.parametrize("pretty", [False, True])
def test_simulate_json_prints_the_document_built_in_memory(capsys, pretty):
    from testbed.apps import cli

    for path in STREAMED:
        assert cli.main(["simulate", str(path), "--json", *(["--pretty"] if pretty else [])]) == 0
        built = json.dumps(run_scenario(load_scenario(path)), indent=1 if pretty else None)
        assert capsys.readouterr().out == built + "\n", path.stem


def test_an_empty_timeline_streams_as_valid_json():
    scenario = parse_scenario({"cluster": {"subnets": [{"id": "a", "cidr": "10.0.1.0/24"}]}})
    for indent in (None, 1):
        buffer = io.StringIO()
        with closing(timeline(scenario)) as parts:
            write_json(parts, buffer, indent=indent)
        assert buffer.getvalue() == json.dumps(run_scenario(scenario), indent=indent)


def test_json_is_written_while_the_scenario_runs():
    scenario = load_scenario(SCENARIOS / "grow-and-shrink.yaml")
    buffer = io.StringIO()
    written = []

    def watched(parts):
        for part in parts:
            written.append(len(buffer.getvalue()))  # what was out before this part was made
            yield part

    with closing(timeline(scenario)) as parts:
        write_json(watched(parts), buffer)
    assert written[0] == 0 and all(a < b for a, b in pairwise(written))  # each part follows what came out
    assert len(written) == len(scenario.steps) + 2


@pytest.mark.parametrize("indent", [None, 1])
def test_a_run_refused_midway_still_streams_one_json_document_naming_why(indent):
    """The steps that ran, then `error` instead of `events`: `jq` reads it, and the exit code says it failed."""
    from testbed.errors import UserError

    scenario = load_scenario(SCENARIOS / "grow-and-shrink.yaml")
    buffer = io.StringIO()

    def refused_at_step_two(parts):
        for part in parts:
            if part.kind == "step" and part.value["index"] == 2:
                raise UserError("node-9 is gone")
            yield part

    with closing(timeline(scenario)) as parts, pytest.raises(UserError):
        write_json(refused_at_step_two(parts), buffer, indent=indent)
    doc = json.loads(buffer.getvalue())
    assert doc["error"] == "node-9 is gone" and [s["index"] for s in doc["steps"]] == [1] and "events" not in doc


@pytest.mark.parametrize("path", STREAMED, ids=lambda p: p.stem)
def test_changed_states_rebuild_every_state(path):
    full = json.loads(streamed(path))
    changed = json.loads(streamed(path, "changed"))
    assert changed["states"] == "changed" and changed["initial"] == full["initial"]
    assert changed["events"] == full["events"]
    state = copy.deepcopy(changed["initial"]["state"])
    for step, whole in zip(changed["steps"], full["steps"], strict=True):
        assert "state" not in step and set(step["changes"]) == set(state)
        for section, entries in step["changes"].items():
            for key, entry in entries.items():
                assert entry is None or state[section].get(key) != entry  # only what changed
                if entry is None:
                    del state[section][key]
                else:
                    state[section][key] = entry
        assert state == whole["state"]
        assert {k: v for k, v in step.items() if k != "changes"} == {k: v for k, v in whole.items() if k != "state"}


@pytest.mark.parametrize("path", STREAMED, ids=lambda p: p.stem)
@pytest.mark.parametrize("states", ["final", "changed"])
def test_less_state_still_matches_the_state_schema(path, states):
    from tests.test_schema import STATE, problems

    doc = json.loads(streamed(path, states))
    assert problems(STATE, doc) == []
    wrong = copy.deepcopy(doc)
    if states == "changed":
        wrong["steps"][-1]["state"] = wrong["steps"][-1].pop("changes")
    else:
        del wrong["states"]  # a document without `states` must hold every state
    assert problems(STATE, wrong), "the schema accepted a document that mixes the modes"


@pytest.mark.parametrize("path", STREAMED, ids=lambda p: p.stem)
def test_final_states_keep_only_the_last(path):
    full = json.loads(streamed(path))
    final = json.loads(streamed(path, "final"))
    assert final["states"] == "final" and final["events"] == full["events"]
    assert [s for s in final["steps"] if "state" in s] == full["steps"][-1:]
    assert [{k: v for k, v in s.items() if k != "state"} for s in final["steps"]] == \
        [{k: v for k, v in s.items() if k != "state"} for s in full["steps"]]
    assert ("state" in final["initial"]) == (not full["steps"])


def test_states_without_json_is_a_usage_error(capsys):
    from testbed.apps import cli

    assert cli.main(["simulate", str(SCENARIOS / "grow-and-shrink.yaml"), "--states", "final"]) == 2
    assert "add --json" in capsys.readouterr().err
