"""Every root test, wherever it lives, must leave no namespace of its own runs behind."""
from __future__ import annotations

import os
import re

import pytest

from eni_core import netns


def _mine() -> list[str]:
    worker = re.sub(r"[^a-z0-9]", "", os.environ.get("PYTEST_XDIST_WORKER", "").lower())[:8]
    pattern = re.compile(rf"^enl-{worker + '-' if worker else ''}[0-9a-f]{{6}}-")
    return [n for n in netns.list_names() if pattern.match(n)]


@pytest.fixture(autouse=True)
def no_namespace_left_behind(request):
    if request.node.get_closest_marker("root") is None or os.geteuid() != 0:
        yield
        return
    before = set(_mine())
    yield
    leaked = sorted(set(_mine()) - before)
    assert not leaked, f"the test left namespaces behind: {leaked}"
