"""Hostile scenario files: each exits 2 from `enilab simulate`, at once, with a short message and no
traceback. Names that would become paths are refused; limits are enforced and documented; validation
does work in proportion to the file (names are compared a bounded number of times, never pairwise)."""
from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eni_core import names
from testbed.world import yamlfile
from testbed.world.addresses import AddressBook, usable_range
from testbed.world.cluster import Cluster
from testbed.world.scenario import (
    LIMITS,
    MAX_FILE_BYTES,
    MAX_HOSTS,
    MAX_PODS_PER_STEP,
    SYSCTLS,
    ScenarioError,
    _Timeline,
    load_scenario,
    parse_scenario,
)
from tests.helpers import ROOT, subnet

HEAD = """name: hostile
cluster:
  mode: MODE
  subnets: [{id: subnet-a, cidr: 10.0.0.0/16}]
  nodes: [{name: node-1, subnets: [subnet-a], max_enis: 2, ips_per_eni: 10}]
steps:
"""


def scenario(*steps: str, mode: str = "shared-eni", head: str = HEAD) -> str:
    return head.replace("MODE", mode, 1) + "".join(f"  - {s}\n" for s in steps)


def cluster_with(line: str) -> str:
    """HEAD with one more line in its cluster section."""
    return scenario(head=HEAD.replace("  subnets:", f"{line}\n  subnets:"))


BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


def many_names(count: int, last: str | None = None, prefix: str = "p") -> str:
    listed = [f"{prefix}-{i}" for i in range(count)]
    if last is not None:
        listed[-1] = last
    return f"{{op: create_pods, node: node-1, names: [{', '.join(listed)}]}}"


def many_hosts(count: int, duplicate_last: bool = False) -> str:
    hosts = [f"{{name: h-{i}, ip: 10.0.{i // 250 + 1}.{i % 250 + 1}}}" for i in range(count)]
    if duplicate_last:
        hosts[-1] = hosts[0]
    return scenario(head=HEAD.replace("cidr: 10.0.0.0/16}", f"cidr: 10.0.0.0/16, hosts: [{', '.join(hosts)}]}}"))


# name -> (file content, what the message must say)
HOSTILE: dict[str, tuple[str | bytes, str]] = {
    # YAML that expands, nests or repeats
    "alias bomb": (BOMB, "anchors and aliases (&, *) are not allowed"),
    "alias in a step": (scenario("&s {op: advance, seconds: 1}", "*s"), "anchors and aliases"),
    "5,000 nested [": ("[" * 5000, "line 1, column"),  # libyaml's own limit, or ours
    "5,000 nested {a:": ("{a: " * 5000, f"nested deeper than {yamlfile.MAX_DEPTH}"),
    "17 nested lists": ("steps: " + "[" * 17 + "]" * 17, f"nested deeper than {yamlfile.MAX_DEPTH}"),
    "duplicate key in a flow mapping": (scenario("{op: create_pods, node: node-1, count: 1, count: 2}"),
                                        "key 'count' is given twice"),
    "duplicate top-level key": (scenario() + "steps: []\n", "key 'steps' is given twice"),
    "a list as a key": (scenario("{[a, b]: 1, op: advance, seconds: 1}"), "a mapping key must be a plain value"),
    "a python tag": (scenario("{op: advance, seconds: !!python/object:os.getcwd 1}"), "could not determine"),
    "a set tag": (scenario("!!set {op, advance}"), "tag 'tag:yaml.org,2002:set' is not allowed"),
    "a merge key": (scenario("{<<: {op: advance}, seconds: 1}"), "merge keys (<<) are not allowed"),
    "two documents": (scenario() + "---\nname: again\n", "a second document"),
    # numbers too long for any field: the line, in enilab's words (not Python's "set_int_max_str_digits()")
    "an integer of 5,000 digits": (scenario("{op: advance, seconds: " + "9" * 5000 + "}"),
                                   "line 7, column 28: a number of 5,000 digits; no field takes more than 100"),
    "an integer of 500,000 digits": (scenario("{op: advance, seconds: " + "9" * 500_000 + "}"),
                                     "line 7, column 28: a number of 500,000 digits"),
    "an integer of 400 digits": (scenario("{op: advance, seconds: " + "9" * 400 + "}"), "a number of 400 digits"),
    "a hex integer of 5,000 digits": (scenario("{op: advance, seconds: 0x" + "f" * 5000 + "}"),
                                      "line 7, column 28: a number of 5,002 digits"),
    "a float of 400 digits": (scenario("{op: advance, seconds: " + "9" * 400 + ".5}"), "a number of 401 digits"),
    "a date with month 13": (scenario("{op: advance, seconds: 2024-13-45}"),
                             "line 7, column 28: a value cannot be read: month must be in 1..12"),
    "a NUL byte": (scenario("{op: advance, seconds: 1}") + "\x00", "control character"),
    "a binary file": (bytes(range(256)) * 4, "not a text file"),
    "1 MiB of numbers": ("steps: [" + ",".join(["1"] * 520_000) + "]\n", "more than 250,000 values"),
    "1 MiB of distinct numbers": ("steps: [" + ",".join(str(i) for i in range(150_000)) + "]\n",
                                  "field 'cluster' is required"),
    "over the file size limit": ("# " + "x" * MAX_FILE_BYTES + "\n", f"larger than {MAX_FILE_BYTES} bytes"),
    # sizes beyond the limits, and big ones within them
    "20,000 pod names in one step": (scenario(many_names(20_000)), f"the limit is {MAX_PODS_PER_STEP}"),
    "10,000 names, the last a duplicate": (scenario(many_names(10_000, last="p-0")), "names pod 'p-0' twice"),
    "2 x 10,000 names, the last existing": (scenario(many_names(10_000), many_names(10_000, last="p-9998", prefix="q")),
                                            "step 2 (create_pods): field 'names': pod p-9998 exists already"),
    "10,000 hosts": (many_hosts(10_000), f"the limit is {MAX_HOSTS}"),
    "1,000 hosts, the last a duplicate": (many_hosts(1_000, duplicate_last=True), "repeats a name or an address"),
    "10,001 steps": (scenario(*["{op: advance, seconds: 1}"] * 10_001), "10001 steps; the limit is 10000"),
    "65 subnets": (scenario(head=HEAD.replace("[{id: subnet-a, cidr: 10.0.0.0/16}]", "[" + ", ".join(
        f"{{id: s-{i}, cidr: 10.{i}.0.0/24}}" for i in range(65)) + "]")), "65 subnets; the limit is 64"),
    "1,001 nodes": (scenario(head=HEAD.replace("[{name: node-1, subnets: [subnet-a], max_enis: 2, ips_per_eni: 10}]",
                                               "[" + ", ".join(f"{{name: n-{i}, subnets: [subnet-a], max_enis: 1, "
                                                               "ips_per_eni: 1}" for i in range(1001)) + "]")),
                    "1001 nodes; the limit is 1000"),
    "100,001 pods in all": (scenario(*["{op: create_pods, count: 10000}"] * 11), "pods created in all"),
    "a 100,000-character op": (scenario("{op: " + "x" * 100_000 + "}"), "unknown op 'xxxxxxx"),
    "a 100,000-character value": (scenario("{op: advance, seconds: '" + "y" * 100_000 + "'}"),
                                  "field 'seconds' must be a number, not 'yyyy"),
    "a 100,000-character key": (scenario("op: advance\n    seconds: 1\n    ? " + "k" * 100_000 + "\n    : 1"),
                                "unknown field 'kkkk"),
    # names that would become paths
    "a cluster name that climbs": (scenario(head=HEAD.replace("name: hostile", "name: ../../../tmp/x")),
                                   "scenario: field 'name' '../../../tmp/x' is not a DNS label"),
    "a node name that climbs": (scenario(head=HEAD.replace("name: node-1", "name: ../node")),
                                "cluster.nodes[1]: field 'name' '../node' is not a DNS label"),
    "a node name in capitals": (scenario(head=HEAD.replace("name: node-1", "name: Node_1")),
                                "'Node_1' is not a DNS label"),
    "a subnet id with a slash": (scenario(head=HEAD.replace("id: subnet-a", "id: a/b")),
                                 "cluster.subnets[1]: field 'id' 'a/b' is not a DNS label"),
    "a host name that climbs": (scenario(head=HEAD.replace("cidr: 10.0.0.0/16}", "cidr: 10.0.0.0/16, hosts: "
                                                            "[{name: ../etc, ip: 10.0.0.9}]}")),
                                "cluster.subnets[1].hosts[1]: field 'name' '../etc' is not a DNS label"),
    "a pod named ../../etc/passwd": (scenario("{op: create_pods, node: node-1, names: [../../etc/passwd]}"),
                                     "step 1 (create_pods): field 'names' '../../etc/passwd' is not a pod name"),
    "a pod named ..": (scenario("{op: create_pod, name: '..', node: node-1}"),
                       "step 1 (create_pod): field 'name' '..' is not a pod name"),
    "a pod named a/b/c": (scenario("{op: create_pods, names: [a/b/c]}"), "'a/b/c' is not a pod name"),
    "a pod to delete named ../x": (scenario("{op: delete_pods, names: [../x]}"),
                                   "step 1 (delete_pods): field 'names' '../x' is not a pod name"),
    "an added node that climbs": (scenario("{op: add_node, name: ../n, subnets: [subnet-a], max_enis: 1, "
                                           "ips_per_eni: 1}"), "step 1 (add_node): field 'name' '../n'"),
    "an owner that climbs": (scenario("{op: create_pod, name: default/web-0, static: true, owner: ../../x}",
                                      mode="static-ip"), "step 1 (create_pod): field 'owner' '../../x' is not a "
                                                         "workload"),
    "a claim named ../x": (scenario("{op: reclaim_claim, name: ../x}", mode="static-ip"),
                           "step 1 (reclaim_claim): field 'name' '../x' is not a pod name"),
    # unknown nested keys
    "faults.latency.extra": (cluster_with("  faults: {latency: {min: 0, max: 1, extra: 2}}"),
                             "cluster.faults.latency: unknown field 'extra'"),
    "pool.extra": (cluster_with("  pool: {min_prebound: 1, extra: 2}"), "cluster.pool: unknown field 'extra'"),
    "static.extra": (cluster_with("  static: {extra: 2}"), "cluster.static: unknown field 'extra'"),
    "faults.extra": (cluster_with("  faults: {extra: 2}"), "cluster.faults: unknown field 'extra'"),
    "subnet extra": (scenario(head=HEAD.replace("cidr: 10.0.0.0/16}", "cidr: 10.0.0.0/16, extra: 1}")),
                     "cluster.subnets[1]: unknown field 'extra'"),
    "node extra": (scenario(head=HEAD.replace("ips_per_eni: 10}", "ips_per_eni: 10, extra: 1}")),
                   "cluster.nodes[1]: unknown field 'extra'"),
    "a pool that is a list": (cluster_with("  pool: []"), "cluster: field 'pool' must be a mapping, not list"),
    # sysctls
    "an unmanaged sysctl": (scenario("{op: set_sysctl, node: node-1, key: net.core.rmem_max, value: 1}"),
                            "'net.core.rmem_max' is not a sysctl enilab manages"),
    "a sysctl key with NUL": (scenario('{op: set_sysctl, node: node-1, key: "net.ipv4.conf.all.rp_filter\\0", '
                                       "value: 1}"), "is not a sysctl enilab manages"),
    "a sysctl key that climbs": (scenario("{op: set_sysctl, node: node-1, key: ../../../etc/passwd, value: 1}"),
                                 "is not a sysctl enilab manages"),
    "ip_forward 2": (scenario("{op: set_sysctl, node: node-1, key: net.ipv4.ip_forward, value: 2}"),
                     "net.ipv4.ip_forward takes 0 to 1, not 2"),
}


def _write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "hostile.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_file_exits_2_with_a_short_message(tmp_path, case):
    content, message = HOSTILE[case]
    path = _write(tmp_path, content)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "simulate", str(path), "--json"],
                          capture_output=True)
    took = time.perf_counter() - start
    err = proc.stderr.decode()
    print(f"\n{case}: {len(content):,} bytes, exit {proc.returncode} in {took:.2f} s (with Python's start), "
          f"message {len(proc.stderr)} bytes")
    assert proc.returncode == 2, err
    assert message in err, err
    assert "Traceback" not in err and proc.stdout == b""
    assert len(proc.stderr) < 1024, err


@pytest.mark.parametrize("page", ["README.md", "docs/scenario-format.md"])
def test_the_limits_and_the_sysctl_keys_are_stated_where_users_read(page):
    text = (ROOT / page).read_text()
    for what, value in LIMITS.items():
        assert f"{value:,}" in text, f"{page} does not state the limit on {what} ({value:,})"
    for key in SYSCTLS:
        assert f"`{key}`" in text


BAD_NAMES = {
    "a cluster name that climbs": ("name", "../../../tmp/x"),
    "a node name in capitals": ("cluster.nodes.0.name", "Node_1"),
    "a subnet id with a slash": ("cluster.subnets.0.id", "a/b"),
    "a pod name that climbs": ("steps.0.names.0", "../../etc/passwd"),
    "a pod named ..": ("steps.0.names.0", ".."),
    "a pod name with two slashes": ("steps.0.names.0", "a/b/c"),
    "an unmanaged sysctl": ("steps.1", {"op": "set_sysctl", "node": "n1", "key": "net.core.rmem_max", "value": 1}),
}


@pytest.mark.parametrize("case", list(BAD_NAMES))
def test_the_schema_refuses_what_the_parser_refuses(case):
    from tests.test_schema import SCENARIO, problems

    where, value = BAD_NAMES[case]
    doc = {"name": "t", "cluster": {"subnets": [{"id": "subnet-a", "cidr": "10.0.1.0/24"}],
                                    "nodes": [{"name": "n1", "subnets": ["subnet-a"], "max_enis": 2,
                                               "ips_per_eni": 4}]},
           "steps": [{"op": "create_pods", "node": "n1", "names": ["web-0"]}, {"op": "advance", "seconds": 1}]}
    assert problems(SCENARIO, doc) == [] and parse_scenario(doc)
    *parents, last = where.split(".")
    here = doc
    for key in parents:
        here = here[int(key)] if isinstance(here, list) else here[key]
    here[int(last) if isinstance(here, list) else last] = value
    assert problems(SCENARIO, doc), "the schema accepted it"
    with pytest.raises(ScenarioError):
        parse_scenario(doc)


# -- validation is linear: each name is compared a bounded number of times ---------------------------
class CountingStr(str):
    """A name that counts how often it is compared for equality (pairwise checks compare n^2 times)."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        CountingStr.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def _compared(doc: dict) -> int:
    CountingStr.comparisons = 0
    with contextlib.suppress(ScenarioError):
        parse_scenario(doc, "big.yaml")
    return CountingStr.comparisons


def test_pod_names_are_not_compared_pairwise():
    count = 5_000
    doc = {"cluster": {"subnets": [{"id": "a", "cidr": "10.0.0.0/16"}],
                       "nodes": [{"name": "n", "subnets": ["a"], "max_enis": 1, "ips_per_eni": 1}]},
           "steps": [{"op": "create_pods", "node": "n", "names": [CountingStr(f"p-{i}") for i in range(count)]},
                     {"op": "delete_pods", "names": [CountingStr(f"p-{i}") for i in range(count)]}]}
    assert _compared(doc) <= 10 * count  # pairwise: 12,500,000


def test_hosts_are_not_compared_pairwise():
    count = MAX_HOSTS
    hosts = [{"name": CountingStr(f"h-{i}"), "ip": f"10.0.{i // 250 + 1}.{i % 250 + 1}"} for i in range(count)]
    doc = {"cluster": {"subnets": [{"id": "a", "cidr": "10.0.0.0/16", "hosts": hosts}]}}
    assert _compared(doc) <= 10 * count  # pairwise: 500,000


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,ok", [("statefulset/default/web", True), ("deployment/kube-system/a.b", True),
                                      ("statefulset/default", False), ("../../x", False), ("a/b/c/d", False),
                                      ("StatefulSet/default/web", False), ("a/b/" + "x" * 300, False), (7, False)])
def test_owner_is_kind_namespace_name(value, ok):
    if ok:
        assert names.owner_ref(value) == value
    else:
        with pytest.raises(names.InvalidName, match="is not a workload"):
            names.owner_ref(value)


def test_short_list_cuts_long_lists_and_long_values():
    assert names.short_list(["a", "b"]) == "a, b"
    text = names.short_list(["x" * 500] * 100)
    assert len(text) < 500 and text.endswith("and 95 more")


def test_every_fixture_still_loads():
    for path in sorted((ROOT / "fixtures").glob("*/*.yaml")):
        load_scenario(path)


def test_a_file_name_that_is_no_dns_label_needs_a_name_field(tmp_path):
    text = scenario().replace("name: hostile\n", "")
    (tmp_path / "My_Scenario.yaml").write_text(text)
    with pytest.raises(ScenarioError, match="no field 'name' and the file name 'My_Scenario' is not a DNS label"):
        load_scenario(tmp_path / "My_Scenario.yaml")
    (tmp_path / "my-scenario.yaml").write_text(text)
    assert load_scenario(tmp_path / "my-scenario.yaml").name == "my-scenario"


# -- YAML as safe_load reads it -------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted((ROOT / "fixtures").glob("*/*.yaml")), ids=lambda p: p.stem)
def test_the_strict_reader_reads_every_fixture_as_safe_load_does(path):
    text = path.read_text()
    assert yamlfile.load(text) == yaml.safe_load(text)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8) |
                    st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                max_size=4),
                    max_leaves=20), st.sampled_from([None, True]))
def test_the_strict_reader_agrees_with_safe_load_on_plain_data(value, flow):
    text = yaml.safe_dump(value, default_flow_style=flow)
    assert yamlfile.load(text) == yaml.safe_load(text)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(alphabet=st.sampled_from(list("{}[]:,-&*!|>'\"#\n\t ab01.<~?%@`\\\x00")), max_size=60))
def test_the_strict_reader_refuses_junk_with_a_short_message(text):
    try:
        yamlfile.load(text)
    except yamlfile.YamlRefused as err:
        assert len(str(err)) < 400


# -- policy in one home ---------------------------------------------------------------------------
def test_a_host_may_use_exactly_the_addresses_the_vpc_hands_out():
    s = subnet("s", "10.0.1.0/28", reserved=4)
    book = AddressBook(s)
    handed = []
    while book.available:
        handed.append(book.take())
    first, last = usable_range(s)
    assert (handed[0], handed[-1]) == (first, last)
    doc = {"cluster": {"subnets": [{"id": "s", "cidr": "10.0.1.0/28", "reserved": 4,
                                    "hosts": [{"name": "h", "ip": None}]}]}}
    for ip, ok in ((first, True), (last, True), (first - 1, False), (last + 1, False)):
        doc["cluster"]["subnets"][0]["hosts"][0]["ip"] = str(ip)
        if ok:
            parse_scenario(doc)
        else:
            with pytest.raises(ScenarioError, match="is not a usable address"):
                parse_scenario(doc)


def test_the_expiry_minimum_is_static_ip_modes():
    from eni_core.static import MIN_EXPIRY

    doc = {"cluster": {"mode": "static-ip", "subnets": [{"id": "s", "cidr": "10.0.1.0/24"}],
                       "static": {"claim_expired_duration": MIN_EXPIRY}}}
    assert parse_scenario(doc).cluster.claim_expired_duration == MIN_EXPIRY
    doc["cluster"]["static"]["claim_expired_duration"] = MIN_EXPIRY - 1
    with pytest.raises(ScenarioError, match=f"at least {MIN_EXPIRY:g} seconds"):
        parse_scenario(doc)


def _random_steps(rng: random.Random, nodes: list[str]) -> list[dict]:
    steps, live, made = [], set(), 0
    for _ in range(rng.randint(1, 25)):
        kind = rng.choice(["create_pods", "create_named", "create_pod", "delete_count", "delete_names", "advance"])
        node = rng.choice(nodes)
        if kind == "create_pods":
            steps.append({"op": "create_pods", "node": node, "count": rng.randint(1, 4)})
        elif kind == "create_named":  # names that auto-naming must skip, and names reused after a delete
            want = rng.sample([f"pod-{i}" for i in range(1, 15)], rng.randint(1, 3))
            fresh = [n for n in want if n not in live]
            if fresh:
                steps.append({"op": "create_pods", "node": node, "names": fresh})
        elif kind == "create_pod":
            steps.append({"op": "create_pod", "name": f"x-{made}", "node": node})
            made += 1
        elif kind == "delete_count" and live:
            steps.append({"op": "delete_pods", "count": rng.randint(1, len(live))})
        elif kind == "delete_names" and live:
            steps.append({"op": "delete_pods", "names": rng.sample(sorted(live), rng.randint(1, len(live)))})
        else:
            steps.append({"op": "advance", "seconds": 30})
        if steps and steps[-1]["op"] != "advance":
            live = _pods_after(steps)
    return steps


def _pods_after(steps: list[dict]) -> set[str]:
    spec = parse_scenario({"cluster": BASE_CLUSTER}).cluster
    timeline = _Timeline(spec)
    for i, step in enumerate(steps, 1):
        timeline.check(f"step {i}", step["op"], step)
    return set(timeline.pods)


BASE_CLUSTER = {"subnets": [{"id": "a", "cidr": "10.0.0.0/16"}],
                "nodes": [{"name": f"n-{i}", "subnets": ["a"], "max_enis": 4, "ips_per_eni": 10} for i in (1, 2)]}


@pytest.mark.parametrize("seed", range(40))
def test_validation_and_the_cluster_agree_on_names_and_on_newest_first(seed):
    """The timeline that validation keeps names and deletes exactly the pods the cluster does, in the
    same order: automatic names skip the same names, `delete_pods count` takes the same newest pods."""
    from testbed.apps.runner import apply_step

    rng = random.Random(seed)
    doc = {"cluster": BASE_CLUSTER, "steps": _random_steps(rng, ["n-1", "n-2"])}
    parsed = parse_scenario(doc)
    timeline = _Timeline(parsed.cluster)
    cluster = Cluster(parsed.cluster)
    for i, step in enumerate(parsed.steps, 1):
        timeline.check(f"step {i}", step["op"], step)
        apply_step(cluster, step)
        assert list(timeline.pods) == list(cluster.pods), (i, step)


@pytest.mark.parametrize("reserved", [15, 16, 17, 2**32, 99_999_999_999])  # past 2**32: no address can be made
def test_a_subnets_reserved_count_is_refused_exactly_when_the_vpc_would_have_no_address_to_hand_out(reserved):
    doc = {"cluster": {"subnets": [{"id": "s", "cidr": "10.0.1.0/28", "reserved": reserved}]}}  # 16 addresses
    if reserved == 15:  # the VPC hands out one address: the last before the broadcast
        s = parse_scenario(doc).cluster.subnets[0]
        book = AddressBook(s)
        assert book.take() == IPv4Address("10.0.1.14") and not book.available
    else:
        with pytest.raises(ScenarioError, match=f"field 'reserved': {reserved} leaves no usable address in"):
            parse_scenario(doc)


@pytest.mark.parametrize("where, value, said", [
    ("seconds", 10 ** 400, "field 'seconds' must be above 0 and at most 315360000, not a number of about 400 digits"),
    ("seconds", 10 ** 5000, "not a number of about 5,000 digits"),
    ("release_interval", 10 ** 400, "field 'release_interval' must be a number a float can hold, not a number of"),
    ("seed", -(10 ** 400), "field 'seed' must be between 0 and 9223372036854775807, not a number of about 400"),
], ids=["seconds-400", "seconds-5000", "release_interval-400", "seed-minus-400"])
def test_a_huge_integer_given_as_data_is_refused_in_a_short_message(where, value, said):
    """The pytest plugin takes a topology as a dict: an integer no YAML file can hold any more (100 digits at
    most) still comes this way. It overflowed float(), and past 4,300 digits Python refused to quote it."""
    data = yaml.safe_load(scenario("{op: advance, seconds: 60}"))
    if where == "seconds":
        data["steps"][0]["seconds"] = value
    elif where == "release_interval":
        data["cluster"]["pool"] = {"release_interval": value}
    else:
        data[where] = value
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "data")
    assert said in str(err.value) and len(str(err.value)) < 200, err.value
