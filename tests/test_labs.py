"""The labs' helpers, and the notebooks as committed: their shape (a goal, predictions before the cell that
reveals them, a break-and-fix task with a hidden solution, outputs stripped). CI runs the notebooks
themselves with nbmake, once with the right answers and once with wrong ones (ci/test.sh)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from eni_core import netns
from testbed.apps import labs
from testbed.apps.lab_kernel import REFUSED
from testbed.apps.labs import Exercise, Task, ip, kernel_table_of, node_subnet_add, open_cluster
from testbed.world.cluster import ClusterError

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted((ROOT / "labs").glob("[0-9][0-9]-*.ipynb"))
SMALL = {"cluster": {"subnets": [{"id": "a", "cidr": "10.0.1.0/24"}],
                     "nodes": [{"name": "node-1", "subnets": ["a"], "max_enis": 2, "ips_per_eni": 4}]}}


@pytest.fixture(autouse=True)
def _learner_mode(monkeypatch):
    monkeypatch.delenv("ENILAB_LAB_SOLUTIONS", raising=False)


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


# -- the notebooks ------------------------------------------------------------------------------------
def test_twelve_labs_numbered_in_order_with_outputs_stripped():
    numbers = [int(p.name[:2]) for p in LABS]
    assert numbers[:12] == list(range(1, 13)), [p.name for p in LABS]
    for path in LABS:
        code = [c for c in cells(path) if c["cell_type"] == "code"]
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), path.name


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.name[:2])
def test_each_lab_has_a_goal_a_prediction_before_its_reveal_and_a_break_and_fix(path):
    all_cells = cells(path)
    text = [source(c) for c in all_cells]
    first = text[0]
    assert "**Goal:**" in first, f"{path.name}: no goal"
    assert re.search(r"[Ww]ithout\s+(them|namespaces)\s+this\s+lab\s|needs\s+no\s+namespaces", first), \
        f"{path.name}: does not say what it cannot show without namespaces"
    assert json.loads(path.read_text())["metadata"]["kernelspec"]["name"] == "enilab", \
        f"{path.name}: not opened with the labs' kernel, which builds namespaces for a normal user too"
    code = [(i, s) for i, s in enumerate(text) if all_cells[i]["cell_type"] == "code"]
    predictions = [(i, m.group(1)) for i, s in code for m in re.finditer(r"^(\w+)\.predict\(None\)", s, re.M)]
    assert predictions, f"{path.name}: no prediction"
    for i, name in predictions:
        checks = [j for j, s in code if re.search(rf"^{name}\.check\(\)", s, re.M)]
        assert checks and min(checks) > i, f"{path.name}: {name} is checked in or before the cell that predicts it"
    assert any("Task(" in s for _, s in code), f"{path.name}: no break-and-fix task"
    hidden = [c for c in all_cells if c["metadata"].get("jupyter", {}).get("source_hidden")]
    assert any(".solution" in source(c) for c in hidden), f"{path.name}: no hidden solution cell"
    assert all(source(c).startswith("# ") for c in hidden), f"{path.name}: a collapsed cell shows code, not a title"
    assert any(re.search(r"\bip\(|\benilab\(", s) for _, s in code), f"{path.name}: the learner runs no command"


def test_sliders_show_their_whole_label():
    for path in LABS:
        for s in map(source, cells(path)):
            for widget in re.findall(r"widgets\.(?:IntSlider|Dropdown|Checkbox)\([^)]*\)", s):
                assert "**slider" in widget or "**wide" in widget, f"{path.name}: {widget} may cut its label"


# -- exercises ----------------------------------------------------------------------------------------
def test_an_exercise_normalises_by_its_type_and_returns_nothing(capsys):
    ex = Exercise("15?", lambda: 15)
    assert ex.check("15 ") is None and ex.passed and "Correct" in capsys.readouterr().out
    ex.check(True)
    out = capsys.readouterr().out
    assert "expected a whole number" in out and "bool" in out and ex.passed is True  # unchanged: not checked
    ex.check(16.0)
    assert "Not quite: you said 16.0, the cluster says 15" in capsys.readouterr().out and ex.passed is False
    word = Exercise("which?", lambda: "eth2", kind=str)
    word.check("ETH2 ")
    assert word.passed
    word.check(2)
    assert "expected a word" in capsys.readouterr().out.splitlines()[-1]
    flag = Exercise("kept?", lambda: True, kind=bool)
    flag.check(1)
    assert "expected True or False" in capsys.readouterr().out
    flag.check("true")
    assert flag.passed


def test_a_prediction_is_checked_after_the_reveal_and_the_answer_stays_hidden_until_then(capsys):
    state = {"bound": None}
    ex = Exercise("bound?", lambda: state["bound"], hint="pods + 5")
    ex.predict(None)
    assert "Predict: bound?" in capsys.readouterr().out
    ex.predict(17)
    assert "17" in capsys.readouterr().out and ex.passed is None
    ex.check()
    assert "Cannot check yet" in capsys.readouterr().out   # nothing revealed yet
    state["bound"] = 12
    ex.check()
    assert "Not quite: you said 17, the cluster says 12. Hint: pods + 5" in capsys.readouterr().out


def test_a_check_or_a_solve_before_the_cells_it_reads_says_to_run_them_and_a_solved_task_is_left_alone(capsys):
    """Out of order (a check before the cell that reveals it, after a restart), the answer or the goal reads a
    name no cell has made yet: one line says what to do, no traceback. A task solved already is not solved
    again (its solution may not run twice)."""
    ex = Exercise("bound?", lambda: tl.at(100))  # noqa: F821 - `tl` comes from a cell not run yet
    ex.check(12)
    assert capsys.readouterr().out == ("Cannot check yet: name 'tl' is not defined: run the cells above this one "
                                       "first (after a kernel restart, from the top)\n") and ex.passed is None
    task = Task("rule back", lambda: None if table == before else "broken", lambda: None)  # noqa: F821
    task.check()
    task.solve()
    out = capsys.readouterr().out
    assert "Cannot check yet: name 'table' is not defined" in out and "Cannot solve yet: name 'table'" in out
    made = []
    fixed = Task("made once", lambda: None if made else "not made", lambda: made.append(1))
    fixed.solve()
    fixed.solve()
    assert made == [1] and fixed.passed and "Done already: made once. Nothing to solve." in capsys.readouterr().out


def test_the_hidden_solutions_mode_fills_right_and_wrong_answers_and_fails_loudly(monkeypatch, capsys):
    ex = Exercise("which?", lambda: "eth2", kind=str, choices=["eth1", "eth2"])
    monkeypatch.setenv("ENILAB_LAB_SOLUTIONS", "1")
    ex.check(None)
    assert ex.passed
    with pytest.raises(AssertionError, match="not accepted"):
        ex.check("eth1")   # a solution mode that meets a refusal: the lab is broken
    monkeypatch.setenv("ENILAB_LAB_SOLUTIONS", "wrong")
    with pytest.raises(AssertionError, match="accepted a wrong answer"):
        Exercise("n?", lambda: 3).check(3)
    ex.check(None)
    assert "Not quite: you said 'eth1'" in capsys.readouterr().out
    Exercise("kept?", lambda: True, kind=bool).check(None)
    assert "you said False" in capsys.readouterr().out


def test_an_exercise_of_an_unknown_kind_is_refused():
    with pytest.raises(TypeError, match="int, str or bool"):
        Exercise("?", lambda: 1.5, kind=float)


def test_a_task_reads_the_live_state_and_runs_its_solution_only_when_asked(monkeypatch, capsys):
    box = {"fixed": False}
    task = Task("fix it", lambda: None if box["fixed"] else "still broken", lambda: box.update(fixed=True), hint="h")
    task.check()
    assert task.passed is False and "Not quite: still broken" in capsys.readouterr().out and not box["fixed"]
    monkeypatch.setenv("ENILAB_LAB_SOLUTIONS", "wrong")
    task.check()   # an untouched task must not pass
    assert task.passed is False
    monkeypatch.setenv("ENILAB_LAB_SOLUTIONS", "1")
    task.check()
    assert task.passed and box["fixed"]
    with pytest.raises(AssertionError, match="needed no fix"):
        monkeypatch.setenv("ENILAB_LAB_SOLUTIONS", "wrong")
        task.check()
    monkeypatch.setenv("ENILAB_LAB_SOLUTIONS", "1")
    with pytest.raises(RuntimeError, match="no solution"):
        Task("nothing", lambda: "broken").check()


# -- fixtures, figures, clusters ------------------------------------------------------------------------
def test_a_task_says_first_that_it_changes_a_kernel_then_that_its_break_has_not_happened(monkeypatch, capsys):
    """Without namespaces a kernel task is skipped, on check and on solve alike; with them, one whose break
    has not happened is "Not yet", its solution not run."""
    ran = []
    task = Task("the goal", lambda: None, solution=lambda: ran.append(1), needs_kernel=True,
                broken=lambda: "nothing is broken yet")
    monkeypatch.setattr(labs, "can_use_namespaces", lambda: False)
    monkeypatch.setattr(labs, "why_no_namespaces", lambda: "no namespaces here")
    task.check()
    task.solve()
    assert capsys.readouterr().out.count("Task skipped: 'the goal' changes a kernel (no namespaces here).") == 2
    monkeypatch.setattr(labs, "can_use_namespaces", lambda: True)
    task.check()
    task.solve()
    out = capsys.readouterr().out
    assert out.count("Not yet: nothing is broken yet.") == 2 and "Done" not in out and not ran
    assert task.passed is None


def test_the_labs_name_their_topologies_and_scenarios_never_a_path():
    for path in LABS:
        text = "".join(source(c) for c in cells(path))
        assert "fixtures/" not in text and ".yaml" not in text, f"{path.name} names a file, not a built-in"


def test_a_non_editable_install_runs_a_lab_cluster_from_anywhere(tmp_path):
    """The package copied elsewhere (as `pip install .` does, the fixtures link followed), run from a folder
    with no fixtures: the labs' built-in names still resolve."""
    site = tmp_path / "site"
    for package in ("testbed", "eni_core"):
        shutil.copytree(ROOT / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys, testbed.apps.labs as l; assert l.__file__.startswith(sys.argv[1]), l.__file__; "
            "c = l.open_cluster('default'); print(len(c.running_pods()))")
    done = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site)}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "9"


def test_figures_go_to_a_private_folder_of_this_process():
    folder = labs.figure_dir()
    assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
    assert folder == labs.figure_dir()
    other = subprocess.run([sys.executable, "-c", "from testbed.apps import labs; print(labs.figure_dir())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other != str(folder)


def test_a_dry_node_recovers_when_it_is_given_a_subnet(capsys):
    c = open_cluster({"cluster": {"pool": {"min_prebound": 2, "max_prebound": 2},
                                  "subnets": [{"id": "a", "cidr": "10.0.9.0/28"}, {"id": "b", "cidr": "10.0.2.0/24"}],
                                  "nodes": [{"name": "node-1", "subnets": ["a"], "max_enis": 3, "ips_per_eni": 6}]}})
    c.create_pods(12, "node-1")
    node = c.state()["nodes"]["node-1"]
    assert node["pending"] > 0 and node["conditions"][0]["type"] == "IPPoolShortfall"
    with pytest.raises(ClusterError, match="unknown subnet 'c'; the VPC has a, b"):
        node_subnet_add(c, "node-1", "c")
    with pytest.raises(ClusterError, match="unknown node 'node-9'"):
        node_subnet_add(c, "node-9", "b")
    node_subnet_add(c, "node-1", "b")
    node = c.state()["nodes"]["node-1"]
    assert (node["pending"], node["conditions"]) == (0, []) and node["enis"][-1]["subnet"] == "b"
    node_subnet_add(c, "node-1", "b")  # twice: still one entry
    one = c.cluster.nodes["node-1"]
    assert one.spec.subnets == ("a", "b") and one.ipamd.subnets == ("a", "b")


def test_a_lab_cluster_used_after_the_last_cell_closed_it_says_so_in_one_line():
    """Run All ends with the lab's last cell, c.close(); a learner then runs a cell above again or clicks a
    button: each use of the closed cluster says in one line to run the lab from the top, not a KeyError traceback
    from the namespaces that are gone."""
    c = open_cluster(SMALL)
    c.create_pods(1, "node-1")
    c.close()
    for use in (c.state, lambda: c.create_pods(1, "node-1"), lambda: c.pod("pod-1"), lambda: c.backend,
                lambda: ip(c, "node-1", "rule"), lambda: c.cluster.pods):
        with pytest.raises(ClusterError, match=r"closed .*: run the lab again from its first cell") as err:
            use()
        assert len(err.value._render_traceback_()) == 1
    c.close()  # again: nothing to do


def test_ip_on_the_simulator_says_there_is_no_kernel(capsys):
    c = open_cluster(SMALL)
    assert ip(c, "node-1", "rule") is None and "simulator: no kernel" in capsys.readouterr().out
    assert ip(c, "node-1", "rule", show=False) == ""
    c.create_pods(1, "node-1")
    assert kernel_table_of(c, "pod-1") is None


@pytest.mark.netns
def test_the_table_is_read_from_the_kernels_rule_not_computed(capsys, monkeypatch):
    monkeypatch.delenv("ENILAB_LABS_BACKEND", raising=False)
    c = open_cluster(SMALL, need_kernel=True)
    try:
        c.create_pods(1, "node-1")
        pod_ip = c.pod("pod-1")["ip"]
        assert kernel_table_of(c, "pod-1") == c.state()["nodes"]["node-1"]["enis"][0]["table"]
        ip(c, "node-1", "rule", "del", "priority", 1536, "from", pod_ip)
        assert kernel_table_of(c, "pod-1") is None
        ip(c, "node-1", "rule", "add", "priority", 1536, "from", pod_ip, "lookup", 2042)
        assert kernel_table_of(c, "pod-1") == 2042
        assert f"from {pod_ip} lookup 2042" in ip(c, "node-1", "rule", "show", "priority", 1536, show=False)
        assert ip(c, "node-1", "rule", "show", "priority", 1536) is None
        shown = capsys.readouterr().out
        assert f"$ ip rule show priority 1536    # on node-1\n1536:\tfrom {pod_ip} lookup 2042" in shown
        with pytest.raises(ClusterError, match="unknown node 'node-9'"):
            ip(c, "node-9", "rule")
    finally:
        c.close()


def test_a_prediction_of_the_wrong_type_is_not_recorded(capsys):
    ex = Exercise("how many?", lambda: 3)
    ex.predict("three")
    assert "Cannot record that: expected a whole number (like 12), got 'three' (str)" in capsys.readouterr().out
    assert ex.prediction is None
    ex.predict(10 ** 5000)  # Python refuses to write out more than 4,300 digits: the answer is described
    ex.check(10 ** 5000)
    out = capsys.readouterr().out
    assert "Prediction recorded: a number of about 5,000 digits" in out
    assert "Not quite: you said a number of about 5,000 digits, the cluster says 3" in out


def test_without_namespaces_a_kernel_lab_says_what_it_cannot_show(monkeypatch, capsys):
    monkeypatch.setenv("ENILAB_LABS_BACKEND", "sim")
    c = open_cluster(SMALL, need_kernel=True, cannot_show="no packets here.")
    assert c.backend == "sim" and "Simulator (ENILAB_LABS_BACKEND=sim): no packets here." in capsys.readouterr().out
    boxes = open_cluster(SMALL, containers=True, cannot_show="no containers here.")
    assert boxes.backend == "sim" and "Simulator (ENILAB_LABS_BACKEND=sim): no containers here." \
        in capsys.readouterr().out
    with pytest.raises(ValueError, match="make it with backend='containers'"):
        boxes.exec("pod-1", ["true"])
    Exercise("table?", lambda: 2003, needs_kernel=True).check(2003)
    Task("fix", lambda: "broken", lambda: None, needs_kernel=True).check()
    out = capsys.readouterr().out
    assert "Exercise skipped: 'table?' reads the kernel" in out and "Task skipped: 'fix' changes a kernel" in out


def test_a_normal_users_kernel_is_told_which_kernel_builds_namespaces_or_why_it_could_not(monkeypatch, capsys):
    """Root (or root of the labs' kernel's user namespace) builds namespaces; a normal user's other kernel is
    pointed at the labs' kernel; a labs' kernel the system refused a user namespace says the reason."""
    monkeypatch.delenv("ENILAB_LABS_BACKEND", raising=False)
    monkeypatch.delenv(REFUSED, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert labs.why_no_namespaces() is None and labs.can_use_namespaces()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    hint = "not root: open the lab with the kernel 'Python 3 (enilab)' (Kernel > Change Kernel)"
    assert labs.why_no_namespaces() == hint
    c = open_cluster(SMALL, need_kernel=True, cannot_show="no packets here.")
    assert c.backend == "sim" and capsys.readouterr().out == f"Simulator ({hint}): no packets here.\n"
    monkeypatch.setenv(REFUSED, "user namespaces are not available to this user (Operation not permitted)")
    assert labs.why_no_namespaces() == ("the kernel 'Python 3 (enilab)' could not make a user namespace: user "
                                        "namespaces are not available to this user (Operation not permitted)")
    c.create_pods(1, "node-1")
    ip(c, "node-1", "rule")
    shown = capsys.readouterr().out
    assert "(simulator: no kernel to run `ip rule` in; the kernel 'Python 3 (enilab)' could not make" in shown


def test_the_command_line_runs_from_the_notebook_and_a_mistake_is_a_clear_error(capsys):
    out = labs.enilab("simulate", "quick-release")
    assert "scenario quick-release" in out and capsys.readouterr().out.startswith("$ enilab simulate ")
    out = labs.enilab("simulate", "no-such-file.yaml")
    assert "no-such-file.yaml" in out and "Traceback" not in out


def test_a_learners_mistake_is_one_line_in_the_notebook_and_a_bug_keeps_its_traceback(tmp_path):
    """A cluster operation refused (here a node deleted twice, as when its cell runs again) says why in one line,
    as the command line does; any other error keeps its traceback."""
    manager, client = _labs_kernel({"ENILAB_LABS_BACKEND": "sim"}, tmp_path)
    code = ("from testbed.apps.labs import open_cluster\n"
            f"c = open_cluster({SMALL!r})\n" + "c.step({'op': 'delete_node', 'node': 'node-1'})\n" * 2)
    errors: list[dict] = []
    try:
        for cell in (code, "{}['bug']"):
            client.execute_interactive(cell, timeout=60, output_hook=lambda msg: msg["msg_type"] == "error"
                                       and errors.append(msg["content"]))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert [e["traceback"] for e in errors[:1]] == [["ClusterError: unknown node 'node-1'; nodes: none"]]
    assert errors[1]["ename"] == "KeyError" and len(errors[1]["traceback"]) > 1


def test_a_cell_run_after_a_kernel_restart_says_in_one_line_to_run_the_cells_above(tmp_path):
    """Kernel > Restart, then a cell from the middle: what the cells above made is gone. A name the cell itself
    reads says what to do in one line; one missing deeper down (a bug in a module) keeps its traceback."""
    (tmp_path / "buggy.py").write_text("def f():\n    return missing\n")
    manager, client = _labs_kernel({"ENILAB_LABS_BACKEND": "sim"}, tmp_path)
    errors: list[dict] = []
    try:
        for cell in ("q_table.check()", f"import sys; sys.path.insert(0, {str(tmp_path)!r})\nimport buggy\nbuggy.f()",
                     "x = 1\ndef g():\n    x += 1\ng()"):
            client.execute_interactive(cell, timeout=60, output_hook=lambda msg: msg["msg_type"] == "error"
                                       and errors.append(msg["content"]))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert errors[0]["traceback"] == ["NameError: name 'q_table' is not defined: run the cells above this one first "
                                      "(after a kernel restart, from the top)"]
    assert errors[1]["ename"] == "NameError" and len(errors[1]["traceback"]) > 1
    assert errors[2]["ename"] == "UnboundLocalError" and len(errors[2]["traceback"]) > 1  # a mistake in code


def test_a_cell_run_again_closes_the_cluster_it_made_before_and_another_cells_stays_open(tmp_path):
    """Re-running a lab's first cell left the cluster it made before alive, unreachable, until the kernel ended
    (with its namespaces: 70 after seven runs). The same cell run again now closes it; a cluster another cell
    opened (lab 11 opens a second one while `c` is in use) is left as it is."""
    manager, client = _labs_kernel({"ENILAB_LABS_BACKEND": "sim"}, tmp_path)
    out: list[str] = []
    opening = f"from testbed.apps.labs import open_cluster\nc = open_cluster({SMALL!r})\n"
    try:
        for cell in (opening, "first = c", opening, f"other = open_cluster({SMALL!r})", opening,
                     "print(first._closed, other._closed, c._closed)"):
            client.execute_interactive(cell, timeout=60, output_hook=lambda msg: out.append(
                msg["content"].get("text") or msg["content"].get("evalue") or "")
                if msg["msg_type"] in ("stream", "error") else None)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert "".join(out) == "True False False\n"


def test_every_button_of_lab_02_changes_the_cluster_without_an_error(tmp_path):
    """Lab 2's buttons are clicked by hand, never by Run All: each (add a pod, delete the newest, let 60 s pass)
    must do what it says. Clicked here in the labs' kernel; an error inside the buttons' output shows only there."""
    code = [source(c) for c in cells(ROOT / "labs" / "02-least-eni.ipynb") if c["cell_type"] == "code"]
    manager, client = _labs_kernel({"ENILAB_LABS_BACKEND": "sim"}, tmp_path)
    errors: list[dict] = []
    pods: list[str] = []
    try:
        for cell in (*code[:2], "for b in buttons:\n    b.click()\n    print(len(c.state()['pods']))"):
            client.execute_interactive(cell, timeout=60, output_hook=lambda msg: (
                errors.append(msg["content"]) if msg["msg_type"] == "error"
                else pods.append(msg["content"]["text"]) if msg["msg_type"] == "stream" else None))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert [f"{e['ename']}: {e['evalue']}" for e in errors] == []
    assert "".join(pods).split()[-3:] == ["7", "6", "6"]  # one pod more, the newest gone, the time passed


ANSWER_CELL = re.compile(r"^\w+(\[\w+\])?\.(check|predict)\(", re.M)


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.name[:2])
def test_every_cell_can_be_run_again(path, monkeypatch):
    """A learner runs a cell twice: to put an answer in and run it again (the prompts say so), or by mistake (a
    break, a step, a close). Every cell runs a second time right after the first, in the same kernel, the hidden
    solutions on: every task is still solved, and a cell that cannot be done twice says why in one line (a
    learner's mistake), never with a traceback."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("ENILAB_LAB_SOLUTIONS", "1")
    nb = nbformat.read(path, as_version=4)
    again = [c for c in nb.cells if c.cell_type == "code" and ANSWER_CELL.search(c.source)]
    assert again, path.name
    assert not any("close()" in c.source for c in again), f"{path.name}: a check cell closes the lab"
    client = NotebookClient(nb, timeout=120, kernel_name="enilab", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            for run in (1, 2):
                client.execute_cell(cell, i)
                for out in cell.get("outputs", []):
                    if out.output_type == "error":
                        assert run == 2 and len(out.traceback) == 1, \
                            f"{path.name} cell {i} run {run}: {out.ename}: {out.evalue} ({len(out.traceback)} lines)"
                        assert "this cell again adds none" not in cell.source, \
                            f"{path.name} cell {i} says it can run again, but: {out.evalue}"


# A task's cells run without the cells that break what it fixes: (the lab, the cells run, what each must be)
SKIPPING_THE_BREAK = [
    pytest.param("04", [(1, "open_cluster("), (8, "task = Task("), (9, "task.solution"), (10, "task.check()")],
                 id="04", marks=pytest.mark.netns),
    pytest.param("07", [(1, "open_cluster("), (9, "task = Task("), (10, "task.solution"), (11, "task.check()")],
                 id="07"),
    pytest.param("10", [(1, "open_cluster("), (11, "task = Task("), (12, "task.solution"), (13, "task.check()")],
                 id="10"),
    pytest.param("10", [(1, "open_cluster("), (16, "ProcessCluster("), (23, "task2 = Task("),
                        (24, "task2.solution"), (25, "task2.check()")], id="10-agent", marks=pytest.mark.netns),
    pytest.param("11", [(1, "open_cluster("), (11, "task = Task("), (12, "task.solution"), (13, "task.check()")],
                 id="11"),
]


@pytest.mark.parametrize(("lab", "run"), SKIPPING_THE_BREAK)
def test_a_task_whose_break_has_not_run_is_not_done_and_says_to_run_the_cells_above(lab, run, tmp_path,
                                                                                    monkeypatch):
    """A learner who skips the cells that break the cluster (or runs the task's cells first) finds the goal
    holding: nothing is broken. That is not a fix: the check says what has not happened yet, never "Done";
    `task.solve()` does not run the solution either."""
    import nbformat
    from nbclient import NotebookClient

    # this checkout's labs' kernel, as `_labs_kernel` finds it: the rootless pass's user has none installed
    shutil.copytree(ROOT / "testbed" / "apps" / "kernelspec", tmp_path / "jupyter" / "kernels" / "enilab")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    path = next(p for p in LABS if p.name.startswith(lab))
    nb = nbformat.read(path, as_version=4)
    for i, marker in run:
        assert marker in nb.cells[i].source, f"{path.name} cell {i} is not the {marker} it was"
    client = NotebookClient(nb, timeout=120, kernel_name="enilab", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        for i, _ in run:
            client.execute_cell(nb.cells[i], i)
        task = run[-2][1].split(".")[0]
        solve = nbformat.v4.new_code_cell(f"{task}.solve()")
        nb.cells.append(solve)
        client.execute_cell(solve, len(nb.cells) - 1)
    said = "".join(o.get("text", "") for o in nb.cells[run[-1][0]].outputs + solve.outputs)
    errors = [o for o in nb.cells[run[-1][0]].outputs + solve.outputs if o.output_type == "error"]
    # what the cell goes on to show of the break may be missing: that is the one-line "run the cells above"
    assert all(e.ename == "NameError" and len(e.traceback) == 1 for e in errors), errors
    assert said.count("Not yet: ") == 2 and "Done" not in said, said


@pytest.mark.netns
def test_a_containers_lab_runs_ip_in_its_nodes_and_fetches_between_its_pods(monkeypatch):
    from tests.containers.helpers import SMALL as BOXES
    from tests.containers.helpers import need_engine

    need_engine()
    monkeypatch.delenv("ENILAB_LABS_BACKEND", raising=False)
    c = open_cluster(BOXES, containers=True)
    try:
        assert c.backend == "containers"
        pod_ip = c.pod("pod-2")["ip"]
        assert f"from {pod_ip} lookup" in ip(c, "node-1", "rule", show=False)
        assert kernel_table_of(c, "pod-2") == c.state()["nodes"]["node-1"]["enis"][0]["table"]
        assert c.exec("pod-1", ["timeout", "5", "wget", "-qO-", f"http://{pod_ip}/"]).stdout == "pod-2\n"
    finally:
        c.close()


def _labs_kernel(env: dict[str, str], tmp_path: Path):
    """This checkout's labs' kernel ("Python 3 (enilab)", from testbed/apps/kernelspec, so whichever venv runs
    the tests has it: the rootless pass's has no kernelspec installed) as Jupyter starts it, in `tmp_path`,
    with `env` on top of this process's (JUPYTER_PATH pointing at the same spec, for the kernels it starts
    in turn): its manager and client, ready."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernels = tmp_path / "jupyter" / "kernels"
    if not (kernels / "enilab").exists():
        shutil.copytree(ROOT / "testbed" / "apps" / "kernelspec", kernels / "enilab")
    manager = KernelManager(kernel_name="enilab", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    manager.start_kernel(env={**os.environ, "JUPYTER_PATH": str(tmp_path / "jupyter"), **env}, cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
    except BaseException:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        raise
    return manager, client


def _in_the_labs_kernel(code: str, env: dict[str, str], tmp_path: Path) -> str:
    """Run `code` in this checkout's labs' kernel (`_labs_kernel`) and return what it printed; an error in the
    kernel fails the test. Then the kernel is killed (SIGKILL, Jupyter's `shutdown_kernel(now=True)`),
    whatever it still holds."""
    manager, client = _labs_kernel(env, tmp_path)
    out: list[str] = []

    def keep(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append(f"ERROR {msg['content']['ename']}: {msg['content']['evalue']}\n")

    try:
        client.execute_interactive(code, timeout=180, output_hook=keep)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    text = "".join(out)
    assert "ERROR" not in text, text
    return text


@pytest.mark.netns
@pytest.mark.host_root("ENILAB_ROOTLESS=1 as the host's root: the kernel's user namespace maps root to root")
def test_the_labs_kernel_builds_real_namespaces_in_a_user_namespace_of_its_own(tmp_path):
    """ENILAB_ROOTLESS=1 takes the normal user's path as root: the kernel answers Jupyter on the host's
    loopback while its cells run as root of a user namespace, on real namespaces the host cannot see."""
    (tmp_path / "xdg").mkdir(mode=0o700)
    code = ("import os\nfrom eni_core import netns\nfrom testbed.apps.labs import ip, open_cluster\n"
            "print('uid_map', open('/proc/self/uid_map').read().split())\n"
            "c = open_cluster('default', need_kernel=True)\nprint('backend', c.backend)\n"
            "ip(c, 'node-1', 'rule')\nprint('pod-5 has', c.cluster.pods['pod-5'].ip)\n"
            "print(c.trace('pod-5', 'db-1').explain())\n"
            "print('prefix', c.cluster.backend.nodes['node-1'].ns.rsplit('-', 1)[0])\nc.close()\n")
    shown = _in_the_labs_kernel(code, {"ENILAB_ROOTLESS": "1", "XDG_RUNTIME_DIR": str(tmp_path / "xdg")}, tmp_path)
    assert "uid_map ['0', '0', '1']" in shown and "backend netns" in shown, shown
    pod_ip = re.search(r"pod-5 has (\S+)", shown).group(1)  # a random idle IP of its ENI, reproducible from the seed
    assert re.search(rf"(?m)^1536:\s+from {re.escape(pod_ip)} lookup 200\d$", shown), shown
    assert f"pod-5 ({pod_ip}) -> db-1 (10.0.1.200): delivered" in shown and "fabric: out h1 (request db-1)" in shown
    prefix = re.search(r"prefix (\S+)", shown).group(1)
    assert not any(name.startswith(prefix) for name in netns.list_names())
    assert not list((tmp_path / "xdg" / "enilab" / "netns").iterdir())


@pytest.mark.netns
@pytest.mark.host_root("ENILAB_ROOTLESS=1 as the host's root: the kernel's namespaces must be invisible to the host")
def test_a_lab_kernel_killed_with_its_cluster_up_leaves_only_what_enilab_clean_removes(tmp_path):
    """The namespaces end with the kernel; its run's record and names stay in the private folder until
    `enilab clean` (run by the same user, in a new process) removes them."""
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    env = {"ENILAB_ROOTLESS": "1", "XDG_RUNTIME_DIR": str(xdg)}
    code = "from testbed.apps.labs import open_cluster\nc = open_cluster('default', need_kernel=True)\nprint('up')\n"
    assert _in_the_labs_kernel(code, env, tmp_path) == "up\n"
    base = xdg / "enilab"
    records = list((base / "run" / "runs").glob("enl-*.json"))
    assert len(records) == 1 and list((base / "netns").iterdir())
    assert not any(name.startswith(records[0].stem) for name in netns.list_names())
    cleaned = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "clean"], env={**os.environ, **env},
                             capture_output=True, text=True, timeout=120, check=False)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not list((base / "netns").iterdir()) and not list((base / "run" / "runs").glob("*.json"))


def _lab_10_up(tmp_path: Path, env: dict[str, str]):
    """Lab 10's node agents up in a labs' kernel (its own cells): the kernel's manager and client, and the
    agents' pids."""
    import nbformat

    nb = nbformat.read(ROOT / "labs" / "10-failure-injection.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    code = [code[0], next(s for s in code if "ProcessCluster(" in s), "print(*(a.pid for a in pc.agents.values()))"]
    manager, client = _labs_kernel(env, tmp_path)
    out: list[str] = []
    for cell in code:
        out.clear()
        client.execute_interactive(cell, timeout=180, output_hook=lambda msg: msg["msg_type"] == "stream"
                                   and out.append(msg["content"]["text"]))
    return manager, client, [int(pid) for pid in "".join(out).split()]


@pytest.fixture
def short_run_dir():
    """A run directory with a short path: lab 10's agents serve unix sockets in it, whose paths may have 107
    bytes at most, which pytest's tmp_path under xdist (popen-gw1/test_.../run/runs/enl-gw1-.../) passes."""
    folder = Path(tempfile.mkdtemp(prefix="enl-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.netns
def test_the_agents_of_lab_10_do_not_outlive_its_kernel_and_enilab_clean(tmp_path, short_run_dir):
    """Lab 10 runs node agents as processes. Its kernel killed alone with them up (SIGKILL, as the OOM killer
    does), `enilab clean` removes the namespaces and the agents too: nothing is left running."""
    from testbed.world.runs import process_start

    env = {"ENILAB_RUN_DIR": str(short_run_dir), "ENILAB_LABS_BACKEND": "auto"}
    manager, client, agents = _lab_10_up(tmp_path, env)
    try:
        assert agents and all(process_start(pid) for pid in agents)
        os.kill(manager.provisioner.pid, signal.SIGKILL)
        manager.provisioner.process.wait()
        cleaned = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "clean"], env={**os.environ, **env},
                                 capture_output=True, text=True, timeout=120, check=False)
        assert cleaned.returncode == 0, cleaned.stderr
        left = [pid for pid in agents if process_start(pid) is not None]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert left == [], "the agents outlived the kernel and `enilab clean`"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


@pytest.mark.netns
def test_interrupting_lab_10s_kernel_leaves_its_node_agents_running(tmp_path, short_run_dir):
    """Kernel > Interrupt signals the kernel's whole process group: the node agents lab 10 started must not be
    in it, or an interrupted cell kills node-1's agent under the learner."""
    from testbed.world.runs import process_start

    manager, client, agents = _lab_10_up(tmp_path, {"ENILAB_RUN_DIR": str(short_run_dir)})
    try:
        assert agents
        manager.interrupt_kernel()
        time.sleep(1)
        assert all(process_start(pid) for pid in agents), "an interrupt killed the node agents"
    finally:
        client.execute_interactive("pc.close()", timeout=60)
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_the_labs_kernel_refused_a_user_namespace_starts_and_the_lab_says_why(tmp_path):
    """A private folder that is not the user's (here a symlink) stops the kernel going rootless: it starts
    anyway, and a lab that needs namespaces runs on the simulator and says why."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "xdg").mkdir(mode=0o700)
    (tmp_path / "xdg" / "enilab").symlink_to(tmp_path / "elsewhere")
    code = ("from testbed.apps.labs import open_cluster\n"
            "c = open_cluster('default', need_kernel=True, cannot_show='no packets here.')\n"
            "print('backend', c.backend)\n")
    shown = _in_the_labs_kernel(code, {"ENILAB_ROOTLESS": "1", "ENILAB_LABS_BACKEND": "auto",
                                       "XDG_RUNTIME_DIR": str(tmp_path / "xdg")}, tmp_path)
    assert shown.startswith("Simulator (the kernel 'Python 3 (enilab)' could not make a user namespace: ")
    assert "is not a folder of this user" in shown and "no packets here.\nbackend sim\n" in shown
