"""Every netns test, wherever it lives, must leave no namespace of its own runs behind; and Hypothesis
runs the profile named by ENILAB_HYPOTHESIS_PROFILE:

- `ci` (the default, `make test`): derandomized, so every run tries the same examples and a failure is a
  regression, never luck; no example database, no deadline (2 shared cores make timings meaningless);
- `fuzz` (`make fuzz`): random exploration with many more examples; failures are kept in the example
  database and replayed by the next fuzz run.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from eni_core import netns

PROFILE_VARIABLE = "ENILAB_HYPOTHESIS_PROFILE"
PROFILES = {
    "ci": settings(derandomize=True, database=None, deadline=None, max_examples=50,
                   suppress_health_check=[HealthCheck.too_slow]),
    "fuzz": settings(deadline=None, max_examples=2000, print_blob=True,
                     suppress_health_check=[HealthCheck.too_slow]),
}
for _name, _profile in PROFILES.items():
    settings.register_profile(_name, _profile)


def pytest_configure(config: pytest.Config) -> None:
    """Load the Hypothesis profile before any test module is imported (its decorators read it)."""
    name = os.environ.get(PROFILE_VARIABLE, "ci")
    if name not in PROFILES:
        raise pytest.UsageError(f"{PROFILE_VARIABLE}={name!r} is not a Hypothesis profile of enilab; "
                                f"use one of: {', '.join(PROFILES)}")
    settings.load_profile(name)


def _mine() -> list[str]:
    """Namespaces of the runs this process or its children made (other sessions and workers may share our
    worker id, so the id alone would not do)."""
    from testbed.world.runs import runs_of

    prefixes = tuple(f"{p}-" for p in runs_of(os.getpid()))
    return [n for n in netns.list_names() if prefixes and n.startswith(prefixes)]


@pytest.fixture(autouse=True)
def no_namespace_left_behind(request):
    if request.node.get_closest_marker("netns") is None or os.geteuid() != 0:
        yield
        return
    before = set(_mine())
    yield
    leaked = sorted(set(_mine()) - before)
    assert not leaked, f"the test left namespaces behind: {leaked}"
