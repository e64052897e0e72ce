"""`enilab tune`: every metric against figures worked out by hand on a small scenario, determinism, the
recommendation, the picture, and the refusals of bad input."""
from __future__ import annotations

import doctest
import json
import os
import signal
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from eni_core.model import PoolConfig
from testbed.apps import tune as tune_mod
from testbed.apps.cli import main
from testbed.apps.tune import (
    TuneResult,
    Workload,
    generate_workload,
    mark_pareto,
    measure,
    parse_goals,
    recommend,
    sweep_settings,
    tune,
)
from testbed.errors import UsageError
from testbed.world.scenario import parse_scenario
from testbed.world.spec import ClusterSpec, NodeSpec
from testbed.world.vpc import FaultConfig
from tests.helpers import subnet


def workload(steps: list[dict], *, pool: dict, max_enis: int = 3, ips_per_eni: int = 10,
             latency: float | None = None) -> Workload:
    """One node in one /24, the steps as a scenario (validated), measured until the last `advance` ends."""
    cluster = {"pool": pool, "subnets": [{"id": "subnet-a", "cidr": "10.0.1.0/24"}],
               "nodes": [{"name": "node-1", "subnets": ["subnet-a"], "max_enis": max_enis,
                          "ips_per_eni": ips_per_eni}]}
    if latency is not None:
        cluster["faults"] = {"latency": {"min": latency, "max": latency}}
    scenario = parse_scenario({"name": "hand", "cluster": cluster, "steps": steps})
    end = sum(s["seconds"] for s in steps if s["op"] == "advance")
    return Workload("hand", scenario.cluster, float(end), steps=tuple(scenario.steps))


def run(w: Workload) -> dict:
    return measure(w, w.spec.pool)[0]


# -- each metric against a hand computation ------------------------------------------------------------
def test_idle_ips_are_weighted_by_time():
    # min 1, max 4: 1 idle IP for 1200 s; 3 pods come at 600 s (bound 4, idle still 1); they go at 1200 s,
    # leaving 4 idle (4 is within pods + max, so nothing is released) for 2400 s.
    w = workload([{"op": "advance", "seconds": 600}, {"op": "create_pods", "node": "node-1", "count": 3},
                  {"op": "advance", "seconds": 600}, {"op": "delete_pods", "count": 3},
                  {"op": "advance", "seconds": 2400}], pool={"min_prebound": 1, "max_prebound": 4})
    row = run(w)
    area = 1 * 1200 + 4 * 2400  # IP-seconds
    assert row["ip_hours_wasted"] == area / 3600 == 3.0
    assert row["idle_ips_mean"] == area / 3600 == 3.0  # over the 3600 s measured
    assert row["idle_ips_p95"] == 4  # 4 idle for 2/3 of the time: 95% of the time needs 4


def test_start_delay_waits_for_the_calls_that_bind_the_ip():
    # Every call takes 1 s. At 100 s three pods come to a node with one idle IP (bound long ago): the first
    # takes it at once; each next IP needs DescribeSubnets + AssignPrivateIpAddresses (2 s), one after the
    # other on the node's ipamd: usable at 102 s and 104 s.
    w = workload([{"op": "advance", "seconds": 100}, {"op": "create_pods", "node": "node-1", "count": 3},
                  {"op": "advance", "seconds": 100}], pool={"min_prebound": 1, "max_prebound": 1}, latency=1)
    row = run(w)
    delays = [0, 2, 4]
    assert row["delay_mean_s"] == sum(delays) / 3
    assert row["delay_p95_s"] == 4  # nearest rank: the ceil(0.95 x 3) = 3rd of 3
    assert row["delay_max_s"] == 4
    assert (row["pods"], row["pods_delayed"], row["pods_not_started"]) == (3, 2, 0)


def test_a_pod_that_never_gets_an_ip_counts_the_time_it_waited():
    # 1 ENI x 2 IPs: the third pod stays Pending from 10 s until it is deleted at 70 s.
    w = workload([{"op": "advance", "seconds": 10}, {"op": "create_pods", "node": "node-1", "count": 3},
                  {"op": "advance", "seconds": 60}, {"op": "delete_pods", "names": ["pod-3"]},
                  {"op": "advance", "seconds": 30}], pool={"min_prebound": 1, "max_prebound": 1},
                 max_enis=1, ips_per_eni=2)
    row = run(w)
    assert (row["pods"], row["pods_not_started"], row["delay_max_s"]) == (3, 1, 60)
    assert row["delay_mean_s"] == 20  # (0 + 0 + 60) / 3


def _eni_churn() -> Workload:
    # 2 IPs per ENI, min = max = 1, quick release after 60 s. Four pods: ENI-1 gets its 2nd IP, then ENI-2
    # (2 IPs) and ENI-3 (1 IP) are created: 5 bound = 4 pods + 1. The pods go: 4 IPs over the bound are
    # released together, from the ENIs with the fewest allocated IPs, older first (ENI-1 and ENI-2), which
    # are then deleted empty.
    return workload([{"op": "create_pods", "node": "node-1", "count": 4}, {"op": "advance", "seconds": 10},
                     {"op": "delete_pods", "count": 4}, {"op": "advance", "seconds": 120}],
                    pool={"min_prebound": 1, "max_prebound": 1, "release_interval": 60, "quick_release": True},
                    max_enis=3, ips_per_eni=2)


def test_enis_created_and_deleted_are_counted():
    row = run(_eni_churn())
    assert (row["enis_created"], row["enis_deleted"]) == (3, 2)


def test_subnet_peak_counts_primary_and_secondary_addresses():
    # At the peak: 3 ENI primary addresses + 5 secondary IPs.
    assert run(_eni_churn())["subnet_peak_used"] == 3 + 5


def test_api_calls_are_counted_by_action():
    row = run(_eni_churn())
    # Each IP wanted asks DescribeSubnets first (5 times: the node's first IP, then 4 more); a new ENI is
    # Create + Attach + Assign, an IP on a bound ENI one Assign; 2 releases; 2 ENIs detached and deleted.
    assert row["api_calls_by_action"] == {
        "AssignPrivateIpAddresses": 5, "AttachNetworkInterface": 3, "CreateNetworkInterface": 3,
        "DeleteNetworkInterface": 2, "DescribeSubnets": 5, "DetachNetworkInterface": 2,
        "UnassignPrivateIpAddresses": 2}
    assert row["api_calls"] == 22
    assert row["throttled"] == 0


def test_throttling_hits_follow_the_back_off():
    # A cloud that throttles every call: each reconcile tries DescribeSubnets 3 times, then backs off
    # 0.2 s, doubling (0.4, 0.8, ... at most 30 s). Reconciles at 0, 0.2, 0.6, 1.4, 3.0, 6.2, 12.6, 25.4 and
    # 51.0 s fall in the first 60 s; the next would be at 81 s.
    spec = ClusterSpec(subnets=(subnet(),), nodes=(NodeSpec("node-1", ("subnet-a",), 2, 10),),
                       faults=FaultConfig(throttle=1.0))
    row = measure(Workload("throttled", spec, 60.0, steps=({"op": "advance", "seconds": 60},)), PoolConfig())[0]
    assert row["throttled"] == row["api_calls"] == 9 * 3
    assert row["api_calls_by_action"] == {"DescribeSubnets": 27}


def test_the_pareto_front_keeps_the_settings_nothing_beats_on_all_three():
    rows = [{"ip_hours_wasted": 1, "delay_p95_s": 9, "api_calls": 5},   # cheapest
            {"ip_hours_wasted": 5, "delay_p95_s": 1, "api_calls": 5},   # fastest
            {"ip_hours_wasted": 5, "delay_p95_s": 2, "api_calls": 6},   # beaten by the one above
            {"ip_hours_wasted": 6, "delay_p95_s": 9, "api_calls": 1},   # fewest calls
            {"ip_hours_wasted": 1, "delay_p95_s": 9, "api_calls": 5}]   # a tie with the first: both stay
    mark_pareto(rows)
    assert [r["pareto"] for r in rows] == [True, True, False, True, True]


# -- sweeps, determinism, workers ------------------------------------------------------------------------
def test_sweeps_are_a_grid_and_skip_what_does_not_fit_together():
    ok, skipped = sweep_settings({"min_prebound": [1, 5], "max_prebound": [2, 10], "quick_release": [False, True]})
    assert [(c.min_prebound, c.max_prebound, c.quick_release) for c in ok] == [
        (1, 2, False), (1, 2, True), (1, 10, False), (1, 10, True), (5, 10, False), (5, 10, True)]
    assert len(skipped) == 2 and all(s["reason"] == "min_prebound (5) is above max_prebound (2)" for s in skipped)


ARGS = ["tune", "--workload", "burst", "--nodes", "6", "--hours", "2", "--seed", "4",
        "--sweep", "min_prebound=1,3", "--sweep", "max_prebound=3,8", "--json"]


def _json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_a_sweep_is_the_same_twice_and_with_one_or_two_workers(capsys):
    one = _json(capsys, [*ARGS, "--workers", "1"])
    again = _json(capsys, [*ARGS, "--workers", "1"])
    two = _json(capsys, [*ARGS, "--workers", "2"])
    assert one == again == two
    assert [(r["min_prebound"], r["max_prebound"]) for r in one["settings"]] == [(1, 3), (1, 8), (3, 3), (3, 8)]
    assert any(r["delay_p95_s"] > 0 for r in one["settings"])  # a burst outruns a small pool
    other_seed = _json(capsys, [*ARGS[:8], "5", *ARGS[9:], "--workers", "1"])
    assert other_seed != one


def test_a_combination_that_does_not_fit_is_skipped_with_a_note(capsys):
    out = _json(capsys, [*ARGS[:-5], "--sweep", "min_prebound=1,9", "--sweep", "max_prebound=8", "--json"])
    assert [r["min_prebound"] for r in out["settings"]] == [1]
    assert out["skipped"][0]["reason"] == "min_prebound (9) is above max_prebound (8)"
    assert main([*ARGS[:-5], "--sweep", "min_prebound=1,9", "--sweep", "max_prebound=8"]) == 0
    assert "skipped min_prebound=9 max_prebound=8" in capsys.readouterr().out


def test_generated_workloads_differ_in_shape():
    steady = generate_workload("steady", nodes=10, hours=24, seed=1)
    diurnal = generate_workload("diurnal", nodes=10, hours=24, seed=1)
    burst = generate_workload("burst", nodes=10, hours=24, seed=1)
    assert len(steady.arrivals) == len(diurnal.arrivals) == len(burst.arrivals) == 2 * 10 * 50

    def born(w):
        return [t for t, op, *_ in w.arrivals if op == "create"]

    def in_hours(ts, lo, hi):
        return sum(lo * 3600 <= t < hi * 3600 for t in ts)

    assert in_hours(born(diurnal), 13, 17) > 3 * in_hours(born(diurnal), 1, 5)  # afternoon over night
    assert len(set(born(burst))) < len(born(burst)) / 4  # replicas arrive together
    assert len(set(born(steady))) == len(born(steady))


# -- the recommendation --------------------------------------------------------------------------------
def _rows() -> TuneResult:
    base = {"release_interval": 120.0, "quick_release": False, "idle_ips_mean": 1.0, "api_calls": 100}
    rows = [{**base, "min_prebound": 1, "max_prebound": 5, "ip_hours_wasted": 10.0, "delay_p95_s": 6.0},
            {**base, "min_prebound": 2, "max_prebound": 5, "ip_hours_wasted": 20.0, "delay_p95_s": 1.5},
            {**base, "min_prebound": 5, "max_prebound": 5, "ip_hours_wasted": 50.0, "delay_p95_s": 0.2}]
    mark_pareto(rows)
    return TuneResult("hand", 3600.0, 1, rows)


def test_recommend_picks_the_cheapest_setting_that_meets_the_goal_and_says_why():
    advice = recommend(_rows(), "p95_delay<=2s")
    assert (advice.row["min_prebound"], advice.closest) == (2, None)
    assert "cheapest of the 2 of 3 settings" in advice.explanation
    assert "min_prebound=1 max_prebound=5" in advice.explanation and "6 s" in advice.explanation  # cheaper, too slow
    both = recommend(_rows(), "p95_delay<500ms, waste<=60")
    assert both.row["min_prebound"] == 5


def test_an_unmeetable_goal_says_so_and_shows_the_closest():
    advice = recommend(_rows(), "p95_delay<=100ms")
    assert advice.row is None and advice.closest["min_prebound"] == 5
    assert advice.explanation.startswith("No setting meets p95_delay<=100ms. The closest is min_prebound=5")


def test_an_unmeetable_goal_exits_1_on_the_command_line(capsys):
    assert main([*ARGS[:-1], "--recommend", "p95_delay<=1ms,waste<1"]) == 1
    assert "No setting meets" in capsys.readouterr().out


def test_the_goal_grammar():
    goals = parse_goals("p95_delay<=2s, max_delay<1m,api_calls>=10,idle_p95 > 3")
    assert [(g.metric, g.op, g.value) for g in goals] == [
        ("p95_delay", "<=", 2.0), ("max_delay", "<", 60.0), ("api_calls", ">=", 10.0), ("idle_p95", ">", 3.0)]


# -- the picture ---------------------------------------------------------------------------------------
def test_png_is_a_valid_png_of_the_sweep(tmp_path, capsys):
    out = tmp_path / "tune.png"
    assert main([*ARGS[:-1], "--png", str(out), "--recommend", "p95_delay<=1h"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 1000 and height > 500
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[:2] == (height, width)


# -- refusals: exit 2, the parameter named, nothing done ------------------------------------------------
BAD = [
    (["--sweep", "min_prebound"], "PARAMETER=V1,V2"),
    (["--sweep", "=1,2"], "PARAMETER=V1,V2"),
    (["--sweep", "colour=1,2"], "--sweep colour: unknown parameter"),
    (["--sweep", "min_prebound=0,1"], "min_prebound: 0 is below 1"),
    (["--sweep", "min_prebound=-2"], "min_prebound: -2 is below 1"),
    # a count follows every option's whole-number rule: int() would take these as 3 and 30
    (["--sweep", "min_prebound=1,\u0663"], "--sweep min_prebound: '\u0663' is not a whole number (digits 0-9 only)"),
    (["--sweep", "max_prebound=3_0"], "--sweep max_prebound: '3_0' is not a whole number (digits 0-9 only)"),
    # a space after a comma is fine; another blank (a no-break space) is no digit
    (["--sweep", "max_prebound=\u00a03"], "--sweep max_prebound: '\\xa03' is not a whole number"),
    (["--sweep", "max_prebound=a,b"], "max_prebound: 'a' is not a whole number"),
    (["--sweep", "max_prebound=1001"], "--sweep max_prebound: 1001 is above 1000, the most a scenario's pool takes"),
    (["--sweep", "min_prebound=" + "9" * 400], "--sweep min_prebound: '99999"),
    (["--sweep", "max_prebound=" + "9" * 5000], "a number of 5,000 digits is far too large"),
    (["--sweep", "max_prebound=1,,2"], "--sweep max_prebound: list the values"),
    (["--sweep", "max_prebound=5,5"], "--sweep max_prebound: '5' is listed twice"),
    (["--sweep", "release_interval=soon"], "release_interval: 'soon' is not a duration"),
    (["--sweep", "release_interval=0"], "release_interval: '0' must be a positive number"),
    # a number too large to be a float is inf; one that is a float is still no interval a replay can use
    (["--sweep", "release_interval=30," + "9" * 400], "--sweep release_interval: '99999"),
    (["--sweep", "release_interval=" + "9" * 400 + "ms"], "is more than ten years; give at most 315,360,000 s"),
    (["--sweep", "release_interval=" + "9" * 308], "is more than ten years"),
    (["--sweep", "release_interval=315360001"], "--sweep release_interval: '315360001' is more than ten years"),
    (["--sweep", "release_interval=nan"], "--sweep release_interval: 'nan' is not a duration"),
    (["--sweep", "release_interval=inf"], "--sweep release_interval: 'inf' is not a duration"),
    (["--sweep", "release_interval=-inf"], "--sweep release_interval: '-inf' is not a duration"),
    (["--sweep", "release_interval=1e400"], "--sweep release_interval: '1e400' is not a duration"),
    (["--recommend", "p95_delay<=" + "9" * 400 + "s"], "the number is too large"),
    (["--recommend", "api_calls<" + "9" * 400], "the number is too large"),
    (["--sweep", "quick_release=maybe"], "quick_release: 'maybe' is not true or false"),
    (["--sweep", "min_prebound=1", "--sweep", "min_prebound=2"], "--sweep min_prebound: given twice"),
    (["--sweep", "min_prebound=9", "--sweep", "max_prebound=2"], "every combination was skipped"),
    (["--recommend", "p95_delay<=2 parsecs"], "p95_delay<=2 parsecs"),
    (["--recommend", "speed<=2s"], "unknown metric speed"),
    (["--recommend", "p95_delay=2s"], "write METRIC OP VALUE"),
    (["--recommend", "p95_delay<=2fortnights"], "unknown unit 'fortnights'"),
    (["--recommend", "waste<=5s"], "waste is a count and takes no unit"),
    (["--recommend", "p95_delay<=2s,"], "write METRIC OP VALUE"),
    (["--latency", "2-1"], "--latency '2-1'"),
    (["--workers", "0"], "--workers 0"),
    (["--workers", "1000"], "--workers 1000: give 1 to"),  # as many processes, each with its own simulation
    (["--png", "out.gif"], "--png out.gif"),
    (["--png", "no/such/folder/t.png"], "does not exist"),
    (["--nodes", "0"], "--nodes 0: give 1 to 10,000 nodes"),
    (["--hours", "0"], "--hours 0: give a span above 0"),
    (["--pods", "-1"], "--pods -1"),
    (["--sweep", "min_prebound=" + ",".join(map(str, range(1, 101))),
      "--sweep", "max_prebound=" + ",".join(map(str, range(1, 101)))],
     "--sweep: 10,000 combinations; give at most 1,000"),
]


@pytest.mark.parametrize(("extra", "message"), BAD, ids=[" ".join(b[0])[:60] for b in BAD])
def test_bad_input_exits_2_naming_what_is_wrong(capsys, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    called = []
    monkeypatch.setattr(tune_mod, "measure", lambda *a: called.append(a))
    assert main(["tune", "--workload", "steady", "--nodes", "2", "--hours", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err) < 300, err
    assert not called and list(tmp_path.iterdir()) == []


def test_a_scenario_and_a_workload_are_not_both_given(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ncluster:\n  subnets: [{id: a, cidr: 10.0.1.0/24}]\n"
                    "  nodes: [{name: n, subnets: [a], max_enis: 1, ips_per_eni: 2}]\nsteps: []\n")
    assert main(["tune", str(path), "--workload", "burst"]) == 2
    assert main(["tune"]) == 2
    assert main(["tune", str(path), "--nodes", "5"]) == 2
    assert "--nodes shapes a generated --workload" in capsys.readouterr().err


def test_a_static_ip_scenario_has_no_pool_to_tune(capsys):
    assert main(["tune", "fixtures/scenarios/static-ip-retention.yaml"]) == 2
    assert "static-ip has no warm pool to tune" in capsys.readouterr().err


def test_a_scenario_file_is_tuned_from_its_own_pool(capsys):
    out = _json(capsys, ["tune", "fixtures/scenarios/grow-and-shrink.yaml", "--sweep", "max_prebound=5,10",
                         "--latency", "1", "--json", "--workers", "1"])
    assert [(r["min_prebound"], r["max_prebound"]) for r in out["settings"]] == [(5, 5), (5, 10)]
    assert out["settings"][1]["ip_hours_wasted"] > out["settings"][0]["ip_hours_wasted"]


def test_the_python_api_examples_run():
    failures, tried = doctest.testmod(tune_mod, optionflags=doctest.ELLIPSIS)
    assert tried >= 6 and failures == 0


def test_tune_refuses_an_empty_sweep():
    with pytest.raises(UsageError, match="no setting to try"):
        tune(generate_workload("steady", nodes=1, hours=1), [], workers=1)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_ctrl_c_stops_the_sweep_and_its_workers_without_a_traceback():
    # Ctrl-C as a terminal gives it: SIGINT at its default in the child, as an interactive shell leaves it
    # (a job a non-interactive shell starts in the background inherits SIGINT ignored, and so would the sweep)
    proc = subprocess.Popen([sys.executable, "-m", "testbed.apps.cli", "tune", "--workload", "steady", "--nodes",
                             "300", "--sweep", "min_prebound=1,2,3,4", "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2, "the worker processes did not start"
        time.sleep(0.5)  # let them get into a replay
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole process group
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "enilab: interrupted" in err and "Traceback" not in err and out == ""
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)


def test_the_meter_agrees_with_the_vpc_on_a_flaky_cloud():
    # Throttled, failing calls and calls that time out after they happened (the ipamd learns of those IPs
    # only when it re-syncs): the running count of idle IPs must still equal the VPC's bound IPs less the
    # running pods, and the subnet peak can be no less than what is in use at the end.
    w = generate_workload("burst", nodes=8, hours=3, seed=9)
    flaky = FaultConfig(throttle=0.2, transient=0.1, timeout=0.1, consistency_delay=5, latency=(0.1, 1.0))
    w = replace(w, spec=replace(w.spec, faults=flaky))
    cluster = tune_mod.replay(w, PoolConfig(min_prebound=2, max_prebound=6))
    try:
        meter = cluster.meter
        bound = sum(len(e.ips) for e in cluster.vpc.enis.values())
        running = sum(n.running for n in cluster.nodes.values())
        assert (meter.idle, meter.running) == (bound - running, running)
        used = sum(len(b.used) for b in cluster.vpc.books.values())
        row = meter.finish(cluster.clock.now())
        assert row["subnet_peak_used"] >= used and row["throttled"] > 0
        assert row["pods"] == len(w.arrivals) // 2
    finally:
        cluster.close()


@pytest.mark.parametrize(("content", "message"), [
    (None, "no-such.yaml"),
    ("name: [unclosed", "no-such.yaml"),
    ("name: s\ncluster:\n  subnets: []\nsteps: []\n", "list at least one subnet"),
    ("name: s\ncluster:\n  subnets: [{id: a, cidr: 10.0.1.0/24}]\n"
     "  nodes: [{name: n, subnets: [a], max_enis: 1, ips_per_eni: 2}]\n"
     "steps:\n  - {op: create_pods, node: n, count: 1}\n  - {op: probe, from: pod-1, to: 10.0.1.1}\n",
     "needs real packets"),
])
def test_a_bad_scenario_file_exits_2(capsys, tmp_path, content, message):
    path = tmp_path / "no-such.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["tune", str(path), "--sweep", "max_prebound=5,10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("enilab: error:") and message in err and "Traceback" not in err


def test_the_json_carries_the_recommendation(capsys):
    out = _json(capsys, [*ARGS, "--workers", "1", "--recommend", "p95_delay<=1h"])
    rec = out["recommendation"]
    assert rec["meets"] and rec["goals"] == ["p95_delay<=1h"]
    cheapest = min(out["settings"], key=lambda r: (r["ip_hours_wasted"], r["api_calls"]))
    assert rec["setting"] == {k: cheapest[k] for k in ("min_prebound", "max_prebound", "release_interval",
                                                       "quick_release")}
    assert main([*ARGS, "--workers", "1", "--recommend", "p95_delay<=1ms"]) == 1
    missed = json.loads(capsys.readouterr().out)["recommendation"]
    assert not missed["meets"] and missed["explanation"].startswith("No setting meets p95_delay<=1ms")


def test_a_setting_that_fails_in_a_worker_is_named_and_nothing_hangs():
    spec = ClusterSpec(subnets=(subnet(),), nodes=(NodeSpec("node-1", ("subnet-a",), 2, 10),))
    broken = Workload("broken", spec, 10.0, steps=({"op": "create_pods", "node": "node-9", "count": 1},))
    # a user's mistake (a ClusterError) stays one, for exit 2; anything else is a RuntimeError naming its type
    with pytest.raises(UsageError, match=r"replaying min_prebound=[12] max_prebound=5 .* failed: "
                                         r"unknown node 'node-9'"):
        tune(broken, [PoolConfig(1, 5), PoolConfig(2, 5)], workers=2)
    bug = Workload("bug", spec, 10.0, steps=({"op": "no-such-op"},))  # what a scenario file cannot hold: our bug
    with pytest.raises(RuntimeError, match=r"replaying min_prebound=[12] max_prebound=5 .* failed: KeyError"):
        tune(bug, [PoolConfig(1, 5), PoolConfig(2, 5)], workers=2)
