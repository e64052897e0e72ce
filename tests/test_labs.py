"""The labs' helpers, and the notebooks as committed (outputs stripped). CI runs the notebooks themselves
with nbmake (`make test`)."""
from __future__ import annotations

import json

from testbed.apps.labs import ROOT, Exercise, open_cluster, pool_timeline

LABS = sorted((ROOT / "labs").glob("*.ipynb"))


def test_there_are_six_labs_with_outputs_stripped():
    assert len(LABS) >= 6
    for path in LABS:
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), path.name
        assert any("Exercise" in "".join(c["source"]) for c in code), f"{path.name} has no exercise"


def test_an_exercise_accepts_the_right_answer_and_refuses_a_wrong_one(capsys):
    ex = Exercise("2 + 2?", lambda: 4, hint="count")
    assert ex.check(None) is None and "set `answer`" in capsys.readouterr().out
    assert ex.check(5) is False and "Hint: count" in capsys.readouterr().out
    assert ex.check(4) is True


def test_open_cluster_simulates_when_the_kernel_is_not_needed():
    c = open_cluster({"cluster": {"subnets": [{"id": "a", "cidr": "10.0.1.0/24"}],
                                  "nodes": [{"name": "node-1", "subnets": ["a"], "max_enis": 2, "ips_per_eni": 4}]}})
    assert c.backend.name == "sim"
    tl = pool_timeline(c, [(30, lambda c: c.create_pods(3, "node-1"))], until=60)
    assert tl.pods[0] == 0 and tl.pods[-1] == 3 and tl.bound[-1] == 8  # 3 + 5, capped at 2 x 4
