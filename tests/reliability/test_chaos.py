"""Chaos: node agents killed at random points, a stormy cloud, hand-edited kernels; the audit and the
connectivity check pass after every iteration. CI runs a short chaos; `make chaos` runs 200 iterations."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from testbed.apps.chaos import run_chaos

pytestmark = pytest.mark.root
ITERATIONS = int(os.environ.get("ENILAB_CHAOS_ITERATIONS", "30"))


def test_chaos_ends_with_zero_audit_and_connectivity_failures():
    result = run_chaos(ITERATIONS, seed=int(os.environ.get("ENILAB_CHAOS_SEED", "11")))
    assert result["iterations"] == ITERATIONS and result["kills"] > 0 and result["drifts"] > 0
    assert result["audit_failures"] == 0 and result["connectivity_failures"] == 0, result["failures"]


def test_chaos_cli_reports_json():
    argv = [sys.executable, "-m", "testbed.apps.cli", "chaos", "--iterations", "3", "--seed", "2", "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {"iterations", "kills", "faults", "drifts", "audit_failures", "connectivity_failures"} <= set(result)
