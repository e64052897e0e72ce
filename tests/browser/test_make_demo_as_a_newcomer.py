"""`make demo` as a normal user on a fresh clone (tests/browser/conftest.py: a real user made for the session):
setup finds a Python the user can run and installs everything that needs no root; the demo proves every path
and the rp_filter lesson on real namespaces, inside a user namespace of the user's own, and leaves nothing.
Setup says in one line what it could not install without root, and refuses a venv the user cannot run. The
README's Rootless walkthrough works as written, as that user.
"""
from __future__ import annotations

import re
import stat
from pathlib import Path

from eni_core import netns
from tests.browser.conftest import Newcomer
from tests.test_docs import blocks


def test_make_demo_as_a_normal_user_proves_every_path_and_the_rp_filter_lesson_on_real_namespaces(newcomer):
    demo = newcomer.demo
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert "environment ready in .venv" in out
    assert "running the simulator" not in out and "netns backend" not in demo.stderr
    assert "ip rule / ip route" in out and "read back from the kernel" in out
    assert "a verified path for every pod (real packets, seen at the fabric)" in out
    rows = [line for line in out.splitlines() if re.match(r"^│ pod-\d+ ", line)]
    assert {row.split()[1] for row in rows} == {f"pod-{i}" for i in range(1, 10)}, out
    assert all(re.search(r"│\s*PASS\s*│$", row.rstrip()) for row in rows), "\n".join(rows)
    assert "connectivity matrix: 99/99" in out
    assert "rp_filter=0: delivered; rp_filter=1: dropped: reverse-path filter" in out
    assert "every check passed" in out and "FAIL" not in out


def test_setup_found_a_python_the_user_can_run_and_the_labs_kernel(newcomer):
    """The user's PATH offers a python3 it cannot run first (like a default Python under /root)."""
    config = (newcomer.clone / ".venv" / "pyvenv.cfg").read_text()
    assert "home = /usr/bin\n" in config, config
    assert newcomer.clone.joinpath(".venv").stat().st_uid == newcomer.uid
    spec = newcomer.clone / ".venv" / "share" / "jupyter" / "kernels" / "enilab" / "kernel.json"
    assert "testbed.apps.lab_kernel" in spec.read_text()


def test_the_demo_left_nothing_but_its_private_folder(newcomer):
    base = newcomer.home / ".cache" / "enilab"
    assert base.stat().st_uid == newcomer.uid and stat.S_IMODE(base.stat().st_mode) == 0o700
    assert newcomer.left == [], "make demo left files in the private folder (a record, a namespace's name)"


def _fake_dpkg(newcomer: Newcomer, folder: Path, missing: set[str]) -> dict[str, str]:
    """A PATH on which dpkg-query says `missing` are not installed (and the rest are)."""
    folder.mkdir(mode=0o755)
    cases = "|".join(sorted(missing))
    (folder / "dpkg-query").write_text(
        '#!/bin/sh\nfor last; do :; done\ncase "$last" in ' + cases + ") exit 1;; esac\n"
        "printf 'install ok installed'\n")
    (folder / "dpkg-query").chmod(0o755)
    env = newcomer.env()
    return {**env, "PATH": f"{folder}:{env['PATH']}"}


def test_setup_without_root_says_in_one_line_what_needs_root(newcomer):
    env = _fake_dpkg(newcomer, newcomer.scratch() / "bin", {"podman", "chromium"})
    done = newcomer.run(["bash", "ci/setup.sh", ".venv"], env=env)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("enilab:")]
    assert said == ["enilab: not root, so not installed: podman (pods as containers), chromium (the browser test); "
                    "as root, once: apt-get install -y podman chromium"], done.stderr
    assert "environment ready in .venv" in done.stdout


def test_setup_refuses_a_venv_the_user_cannot_run_and_changes_nothing(newcomer):
    venv = newcomer.scratch() / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(newcomer.tools / "python3")
    newcomer.give(venv)
    done = newcomer.run(["bash", "ci/setup.sh", str(venv)])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"enilab: {venv} exists but {newcomer.name} cannot run its Python (made by "
                                   "another user, or broken); remove it and run again")
    assert sorted(p.name for p in venv.rglob("*")) == ["bin", "python"]


def test_the_readmes_rootless_walkthrough_works_as_written_as_a_normal_user(newcomer):
    """Its first line, `make demo`, is the session's own (checked above); the rest runs here, in the clone."""
    section = (newcomer.clone / "README.md").read_text().split("\n## Rootless\n")[1].split("\n## ")[0]
    lines = next(b for b in blocks(section) if b.lang == "sh").body.splitlines()
    assert lines[0].startswith("make demo ") and "sudo" not in "\n".join(lines)
    try:
        done = newcomer.run(["bash", "-e", "-o", "pipefail", "-c", "\n".join(lines[1:])])
    finally:
        newcomer.run([".venv/bin/enilab", "down", "--name", "mine"])  # whatever failed, nothing stays up
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "cluster mine" in out and "pod-10" in out and "delivered" in out and "agree" in out, out
    prefix = out.split("namespaces ")[1].split("-*")[0]
    assert not any(name.startswith(prefix) for name in netns.list_names()), "the host's /run/netns shows them"


def test_a_newcomer_left_by_a_killed_session_is_removed_and_a_live_sessions_stays(newcomer):
    """A session killed before its `finally` leaves its user; the next session removes it, by the dead pid
    in its name. The user of a session still running (this one's) is left alone."""
    import subprocess
    import sys

    from tests.browser.conftest import NEWCOMER_PREFIX, _remove_users_of_dead_runs

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = f"{NEWCOMER_PREFIX}{gone.stdout.strip()}"
    subprocess.run(["useradd", stale], check=True, capture_output=True)
    try:
        _remove_users_of_dead_runs()
        assert subprocess.run(["id", stale], capture_output=True).returncode != 0
        assert subprocess.run(["id", newcomer.name], capture_output=True).returncode == 0
    finally:
        subprocess.run(["userdel", "--remove", "--force", stale], capture_output=True, check=False)
