"""Every root test, wherever it lives, must leave no namespace of its own runs behind."""
from __future__ import annotations

import os

import pytest

from eni_core import netns


def _mine() -> list[str]:
    """Namespaces of the runs this process or its children made (other sessions and workers may share our
    worker id, so the id alone would not do)."""
    from testbed.world.runs import runs_of

    prefixes = tuple(f"{p}-" for p in runs_of(os.getpid()))
    return [n for n in netns.list_names() if prefixes and n.startswith(prefixes)]


@pytest.fixture(autouse=True)
def no_namespace_left_behind(request):
    if request.node.get_closest_marker("root") is None or os.geteuid() != 0:
        yield
        return
    before = set(_mine())
    yield
    leaked = sorted(set(_mine()) - before)
    assert not leaked, f"the test left namespaces behind: {leaked}"
