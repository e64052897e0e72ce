"""`enilab run --json` on real namespaces: the streamed document, with --states, as `simulate` prints it."""
from __future__ import annotations

import json

import pytest

from testbed.apps import cli
from tests.helpers import SCENARIOS

pytestmark = pytest.mark.netns


def test_run_json_streams_only_the_changes_and_the_probes(capsys):
    assert cli.main(["run", str(SCENARIOS / "rp-filter-lesson.yaml"), "--json", "--states", "changed"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["states"] == "changed" and out["backend"] == "netns"
    assert all("changes" in s and "state" not in s for s in out["steps"])
    assert [s["probe"]["as_expected"] for s in out["steps"] if "probe" in s] == [True, True, True, True]
    sysctl = out["steps"][2]["changes"]["nodes"]["node-1"]["routing"]["sysctl"]
    assert sysctl["net.ipv4.conf.all.rp_filter"] == 1  # the step that set it changed the node's entry


def test_run_refuses_a_sysctl_enilab_does_not_manage_before_making_anything(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text((SCENARIOS / "rp-filter-lesson.yaml").read_text().replace(
        "key: net.ipv4.conf.all.rp_filter, value: 1", "key: net.core.rmem_max, value: 1"))
    assert cli.main(["run", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert "step 3 (set_sysctl): field 'key' 'net.core.rmem_max' is not a sysctl enilab manages" in captured.err
    assert captured.out == ""
