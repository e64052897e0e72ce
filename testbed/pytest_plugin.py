"""enilab's pytest plugin: the `root` marker, and fixtures that build clusters for CI users.

`@pytest.mark.root` marks a test that needs root and network namespaces. Without root it is skipped
with a reason, unless ENILAB_REQUIRE_ROOT=1 (set by CI when it runs as root), where it fails instead:
a CI run never skips a root test silently.
"""
from __future__ import annotations

import os

import pytest

__all__ = ["require_root"]


def _is_root() -> bool:
    return os.geteuid() == 0


def require_root() -> None:
    """Skip (or, under ENILAB_REQUIRE_ROOT=1, fail) the calling test unless running as root."""
    if _is_root():
        return
    why = "needs root and network namespaces (run as root, e.g. `sudo make test`)"
    if os.environ.get("ENILAB_REQUIRE_ROOT") == "1":
        pytest.fail(f"ENILAB_REQUIRE_ROOT=1 but not root: this test {why}", pytrace=False)
    pytest.skip(why)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root and network namespaces")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None:
        require_root()
