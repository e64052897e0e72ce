"""docs/schema/ holds: every fixture matches the scenario schema, every `--json` timeline the state schema,
the schema knows the same ops and fields as the parser, and broken documents are refused by both."""
from __future__ import annotations

import copy
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from testbed.apps.cli import main
from testbed.world.scenario import NETNS_OPS, OPS, ScenarioError, load_scenario, parse_scenario
from tests.helpers import ROOT

SCHEMAS = ROOT / "docs" / "schema"
FIXTURES = sorted((ROOT / "fixtures").glob("*/*.yaml"))
SIMULATED = [p for p in FIXTURES if not any(s["op"] in NETNS_OPS for s in load_scenario(p).steps)]


def _schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def _registry() -> Registry:
    """Both schemas, each reachable from the other by its file name (the state refers to scenario steps)."""
    return Registry().with_resources((s["$id"], Resource.from_contents(s))
                                     for s in (_schema("scenario"), _schema("state")))


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema(name), registry=_registry())


SCENARIO = _validator("scenario")
STATE = _validator("state")
# STATE alone, as `enilab status --json` and the pytest plugin's cluster.state() give it
ONE_STATE = jsonschema.Draft202012Validator({"$ref": f"{_schema('state')['$id']}#/$defs/state"}, registry=_registry())


def problems(validator: jsonschema.Draft202012Validator, doc: object) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in validator.iter_errors(doc)]


def _enilab_json(*argv: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([*argv, "--json"]) == 0
    return json.loads(out.getvalue())


@pytest.mark.parametrize("name", ["scenario", "state"])
def test_the_schemas_are_valid_draft_2020_12(name):
    schema = _schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_there_are_fixtures_to_check():
    assert len(FIXTURES) >= 10 and len(SIMULATED) >= 8


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_fixture_matches_the_scenario_schema(path: Path):
    assert problems(SCENARIO, yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", SIMULATED, ids=lambda p: p.stem)
def test_every_simulate_json_output_matches_the_state_schema(path: Path):
    out = _enilab_json("simulate", str(path))
    assert out["steps"], "a fixture with no steps checks nothing"
    assert problems(STATE, out) == []


@pytest.mark.netns
@pytest.mark.parametrize("name", ["grow-and-shrink", "rp-filter-lesson", "static-ip-retention"])
def test_run_json_output_on_namespaces_matches_the_state_schema(name: str):
    out = _enilab_json("run", name)
    assert out["backend"] == "netns"
    assert all("routing" in node for node in out["steps"][-1]["state"]["nodes"].values())
    assert problems(STATE, out) == []


def test_the_scenario_schema_knows_exactly_the_parsers_ops_and_fields():
    defs = _schema("scenario")["$defs"]
    assert defs["step"]["properties"]["op"]["enum"] == list(OPS)
    for op, fields in OPS.items():
        schema = defs[f"op_{op}"]
        assert set(schema["properties"]) == {"op", *fields}, op
        assert set(schema["required"]) == {"op", *(k for k, (_, required) in fields.items() if required)}, op


GOOD = {"name": "t", "cluster": {"subnets": [{"id": "subnet-a", "cidr": "10.0.1.0/24"}],
                                 "nodes": [{"name": "n1", "subnets": ["subnet-a"], "max_enis": 2, "ips_per_eni": 4}]},
        "steps": [{"op": "create_pods", "node": "n1", "count": 2}, {"op": "advance", "seconds": 60}]}


def _set(path: str, value: object) -> dict:
    doc = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    here = doc
    for key in parents:
        here = here[int(key)] if isinstance(here, list) else here[key]
    if isinstance(here, list):
        here[int(last)] = value
    else:
        here[last] = value
    return doc


BROKEN = {
    "unknown top-level field": _set("colour", "blue"),
    "unknown op": _set("steps.0", {"op": "explode"}),
    "unknown field of an op": _set("steps.0", {"op": "create_pods", "node": "n1", "count": 2, "size": 3}),
    "count of zero": _set("steps.0", {"op": "create_pods", "node": "n1", "count": 0}),
    "create_pods with neither count nor names": _set("steps.0", {"op": "create_pods", "node": "n1"}),
    "delete_pods with names and count": _set("steps.1", {"op": "delete_pods", "names": ["pod-1"], "count": 1}),
    "advance by zero seconds": _set("steps.1", {"op": "advance", "seconds": 0}),
    "a subnet of /30": _set("cluster.subnets.0.cidr", "10.0.1.0/30"),
    "a CIDR that is not one": _set("cluster.subnets.0.cidr", "10.0.1.0"),
    "too many ENIs": _set("cluster.nodes.0.max_enis", 33),
    "a node without limits": _set("cluster.nodes.0", {"name": "n1", "subnets": ["subnet-a"]}),
    "a name with a space": _set("cluster.nodes.0.name", "node one"),
    "no subnet": _set("cluster.subnets", []),
    "an unknown mode": _set("cluster.mode", "ipvlan"),
    "min_prebound of zero": _set("cluster.pool", {"min_prebound": 0}),
    "expiry under 300 s": _set("cluster.static", {"claim_expired_duration": 299}),
    "a fault rate over 0.9": _set("cluster.faults", {"throttle": 0.95}),
    "a sysctl outside net.": _set("steps.1", {"op": "set_sysctl", "node": "n1", "key": "kernel.panic", "value": 1}),
    "a seed that is text": _set("seed", "seven"),
}


def test_the_plugins_state_is_one_state_of_the_contract(enilab_cluster):
    cluster = enilab_cluster("static", backend="sim")
    assert problems(ONE_STATE, cluster.state()) == []
    assert problems(ONE_STATE, {**cluster.state(), "extra": {}}), "the schema accepted an unknown field"


def test_the_good_document_is_good():
    assert problems(SCENARIO, GOOD) == []
    parse_scenario(copy.deepcopy(GOOD))


@pytest.mark.parametrize("doc", BROKEN.values(), ids=BROKEN.keys())
def test_the_scenario_schema_and_the_parser_both_refuse_a_broken_document(doc):
    assert problems(SCENARIO, doc), "the schema accepted it"
    with pytest.raises(ScenarioError):
        parse_scenario(doc)


def _timeline() -> dict:
    return _enilab_json("simulate", "static-ip-retention")


def _break(path: str, change) -> dict:
    out = _timeline()
    *parents, last = path.split(".")
    here = out
    for key in parents:
        here = here[int(key)] if isinstance(here, list) else here[key]
    change(here, int(last) if isinstance(here, list) else last)
    return out


BROKEN_STATES = {
    "a node without bound": lambda: _break("steps.0.state.nodes.node-1.bound", lambda d, k: d.pop(k)),
    "a pod in an unknown phase": lambda: _break("steps.0.state.pods.default/web-0.phase",
                                                lambda d, k: d.__setitem__(k, "Unknown")),
    "an ENI with a field nobody documented": lambda: _break("steps.0.state.nodes.node-1.enis.0",
                                                            lambda d, k: d[k].__setitem__("colour", "blue")),
    "an address that is not one": lambda: _break("steps.0.state.claims.default/web-0.ip",
                                                 lambda d, k: d.__setitem__(k, "10.0.1")),
    "an event of an unknown kind": lambda: _break("events.0.kind", lambda d, k: d.__setitem__(k, "mystery")),
    "a step without its state": lambda: _break("steps.0.state", lambda d, k: d.pop(k)),
    "a negative time": lambda: _break("steps.0.t", lambda d, k: d.__setitem__(k, -1)),
}


@pytest.mark.parametrize("make", BROKEN_STATES.values(), ids=BROKEN_STATES.keys())
def test_the_state_schema_refuses_a_broken_timeline(make):
    assert problems(STATE, make()), "the schema accepted it"


def test_a_node_deleted_while_the_cloud_throttles_is_gone_and_says_what_it_left_in_the_vpc(tmp_path):
    """delete_node under throttling ended in a traceback (exit 1, the JSON cut off): the ipamd's shutdown
    raised the cloud's refusal. It is best effort now: the node goes, and an event names each ENI left."""
    path = tmp_path / "dn.yaml"
    path.write_text("""
name: dn
cluster:
  faults: {throttle: 0.9}
  subnets: [{id: a, cidr: 10.0.1.0/24}]
  nodes: [{name: n1, subnets: [a], max_enis: 2, ips_per_eni: 4}]
steps:
  - {op: advance, seconds: 600}
  - {op: delete_node, node: n1}
""")
    doc = _enilab_json("simulate", str(path))
    assert problems(_validator("state"), doc) == []
    left = [e for e in doc["events"] if e["kind"] == "shutdown"]
    assert left and all(e["node"] == "n1" and "rate limit" in e["error"] for e in left)
    assert doc["steps"][-1]["state"]["nodes"] == {}
