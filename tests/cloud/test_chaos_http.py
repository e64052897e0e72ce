"""Chaos through HTTP: node agents (real processes in their namespaces) reach the VPC only through the
official SDK, on the API served on each node's loopback; killed agents recover through it, cloud storms
(throttling, errors, lost answers, lagging describes) come back as the API's codes and dropped connections,
and the audit and the connectivity check pass after every iteration."""
from __future__ import annotations

import os

import pytest

from testbed.apps.chaos import run_chaos

pytestmark = pytest.mark.netns
ITERATIONS = int(os.environ.get("ENILAB_CHAOS_ITERATIONS", "20"))


def test_chaos_through_the_tencent_api_ends_with_zero_failures():
    result = run_chaos(ITERATIONS, seed=int(os.environ.get("ENILAB_CHAOS_SEED", "5")), cloud="tencent")
    assert result["cloud"] == "tencent" and result["iterations"] == ITERATIONS
    assert result["kills"] > 0 and result["faults"] > 0
    assert result["audit_failures"] == 0 and result["connectivity_failures"] == 0, result["failures"]
