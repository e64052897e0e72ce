"""Bad input, fuzzed: scenario files, CNI environment and stdin, CLI arguments. Only clear errors and the
documented exit codes; no traceback; nothing changed; no namespace left behind.
ENILAB_FUZZ_EXAMPLES raises the count (a nightly run); CI runs a few thousand cases in all."""
from __future__ import annotations

import copy
import json
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eni_core import cni_client, netns
from eni_core.cni import CniError, handle, parse_request
from testbed.apps import cli
from testbed.apps.runner import run_scenario
from testbed.world.cluster import ClusterError
from testbed.world.scenario import ScenarioError, load_scenario, parse_scenario
from tests.helpers import SCENARIOS

EXAMPLES = int(os.environ.get("ENILAB_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
VALID = [yaml.safe_load(p.read_text()) for p in sorted(SCENARIOS.glob("*.yaml"))]

junk = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                 st.text(max_size=20), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                           st.integers(), max_size=2))


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated_scenarios(draw):
    doc = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        how = draw(st.sampled_from(["replace", "delete", "add-key"]))
        if how == "replace":
            parent[path[-1]] = draw(junk)
        elif how == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(junk)
    return doc


@FUZZ
@given(doc=mutated_scenarios())
def test_a_mutated_scenario_is_refused_clearly_or_runs(doc):
    try:
        scenario = parse_scenario(doc, "fuzz.yaml")
    except ScenarioError as err:
        assert str(err).startswith("fuzz.yaml: ") and "Traceback" not in str(err)
        assert len(str(err)) < 1024
        return
    try:
        run_scenario(scenario)
    except ScenarioError as err:  # a netns-only op on the simulator: refused before running
        assert "needs real packets" in str(err)
    except ClusterError:
        pytest.fail("a validated scenario failed while running: validation let it through")


yaml_text = st.text(alphabet=st.sampled_from(list("{}[]:,-&*!|>'\"#\n\t ab01.<~?%@`\\\x00")), max_size=80)


@FUZZ
@given(text=st.one_of(yaml_text, st.sampled_from(VALID).map(yaml.safe_dump)), cut=st.integers(0, 2000),
       insert=yaml_text)
def test_a_mangled_scenario_file_is_refused_clearly_or_loads(tmp_path_factory, text, cut, insert):
    """Text, not parsed data: what the strict YAML reader sees. Only ScenarioError, short, no traceback."""
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_text(text[:cut] + insert + text[cut:])
    try:
        load_scenario(path)
    except ScenarioError as err:
        assert len(str(err)) < 1024 and "Traceback" not in str(err)


cni_env = st.fixed_dictionaries({}, optional={
    "CNI_COMMAND": st.one_of(st.sampled_from(["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"]), st.text(max_size=8)),
    "CNI_CONTAINERID": st.text(max_size=20), "CNI_NETNS": st.text(max_size=30),
    "CNI_IFNAME": st.text(max_size=20), "CNI_ARGS": st.text(max_size=40), "CNI_PATH": st.text(max_size=10)})
cni_stdin = st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode),
                      st.fixed_dictionaries({}, optional={"cniVersion": junk, "name": junk, "agentSocket": junk,
                                                          "cni.dev/valid-attachments": junk})
                      .map(lambda d: json.dumps(d).encode()))


@FUZZ
@given(env=cni_env, stdin=cni_stdin)
def test_cni_input_gives_a_spec_error_or_a_result(env, stdin):
    # the executable, with no cluster up: VERSION answers, everything else is a spec error
    code, out = cni_client.run({**env, "ENILAB_RUN_DIR": "/nonexistent"}, stdin)
    assert out is None or "cniVersion" in out
    if code:
        assert out["code"] in (1, 2, 3, 4, 5, 6, 7, 11, 50, 100) and out["msg"]
    # the agent's side: parsing and GC's list
    try:
        req = parse_request(env, stdin)
        out = handle(req, lambda method, **params: {}, None) if req.command in ("VERSION", "GC") else None
    except CniError as err:
        assert err.code in (1, 2, 3, 4, 5, 6, 7, 11, 50, 100) and err.msg
        return
    if out is not None:
        assert "cniVersion" in out


commands = st.sampled_from(["simulate", "run", "up", "status", "pods", "down", "trace", "topology", "claims",
                            "audit", "clean", "nonsense", "--help-me"])
flags = st.sampled_from(["--json", "--name", "--node", "--count", "-1", "add", "del", "list", "delete",
                         "/nonexistent.yaml"])
tokens = st.lists(st.one_of(st.text(max_size=12), flags), max_size=5)


def _mine() -> list[str]:
    """Namespaces of the runs this process made (other workers and sessions make and remove theirs)."""
    from testbed.world.runs import runs_of

    prefixes = tuple(f"{p}-" for p in runs_of(os.getpid()))
    return [n for n in netns.list_names() if prefixes and n.startswith(prefixes)]


@settings(max_examples=max(EXAMPLES // 4, 50), deadline=None, suppress_health_check=list(HealthCheck))
@given(command=commands, rest=tokens)
def test_cli_arguments_exit_with_documented_codes_and_no_traceback(command, rest, capsys):
    before = _mine()
    try:
        code = cli.main([command, *rest])
    except SystemExit as exit_:  # argparse: usage errors exit 2, --help exits 0
        code = exit_.code
    out = capsys.readouterr()
    assert code in (0, 1, 2), (command, rest, code)
    assert "Traceback" not in out.err + out.out
    assert _mine() == before
