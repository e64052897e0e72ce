"""A newcomer: a real normal user, made for this session, with a fresh clone of this checkout in its home, who
has run `make demo` there (which sets everything up without root, then proves every path rootless). The
demo's output is kept for its test; the clone's venv later serves JupyterLab as that user.

The clone is of this checkout's HEAD, through a bundle (a checkout below a folder the user cannot enter
still clones). The user's PATH starts with a `python3` it cannot run, as when the machine's default Python
lives in root's home: setup must find one it can. The user is removed at the end, with its home.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE_DEMO_TIMEOUT_S = 1200  # a fresh venv: pip downloads JupyterLab, playwright and the rest


@dataclass
class Newcomer:
    name: str
    uid: int
    gid: int
    home: Path
    clone: Path
    tools: Path  # a folder of the test's own (root's) with the unusable python3 first on the user's PATH
    demo: subprocess.CompletedProcess[str] | None = None  # `make demo`, as the user
    left: list[str] = field(default_factory=list)  # the files of their private enilab folder right after it

    def env(self, **extra: str) -> dict[str, str]:
        """A login's environment (the user's own HOME and PATH), with this machine's way to reach PyPI."""
        passed = {k: v for k, v in os.environ.items()
                  if k.startswith("PIP_") or k.lower() in ("http_proxy", "https_proxy", "no_proxy")}
        return {**passed, "HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "SHELL": "/bin/bash",
                "PATH": f"{self.tools}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "COLUMNS": "200",
                **extra}

    def argv(self, argv: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
        """`argv` run as the user, in exactly `env` (default: `self.env()`)."""
        pairs = [f"{k}={v}" for k, v in (env or self.env()).items()]
        return ["runuser", "-u", self.name, "--", "env", "-i", *pairs, *argv]

    def run(self, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(argv, env), cwd=cwd or self.clone, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def scratch(self) -> Path:
        """A new folder of the user's, in their home (the test's own temp folders are root's alone)."""
        return self.give(Path(tempfile.mkdtemp(prefix="scratch-", dir=self.home)))

    def give(self, path: Path) -> Path:
        """Make `path` (made by the test) the user's, everything below it too."""
        for folder, _, files in os.walk(path):
            for each in (folder, *(os.path.join(folder, f) for f in files)):
                os.chown(each, self.uid, self.gid, follow_symlinks=False)
        return path


def _cannot() -> str | None:
    if os.geteuid() != 0:
        return "making a normal user needs root"
    for tool in ("useradd", "userdel", "runuser", "git", "make"):
        if shutil.which(tool) is None:
            return f"no {tool} here"
    if not (ROOT / ".git").exists():
        return f"{ROOT} is not a git checkout, so it cannot be cloned"
    return None


NEWCOMER_PREFIX = "enilab-nc"  # + the pid of the test session that made the user


def _remove_users_of_dead_runs() -> None:
    """Delete the newcomers a killed session left (the `finally` below never ran): users named by the
    prefix and a pid that is no longer alive. A live session's user, and every other user, stay."""
    for entry in pwd.getpwall():
        pid = entry.pw_name.removeprefix(NEWCOMER_PREFIX)
        if entry.pw_name.startswith(NEWCOMER_PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["userdel", "--remove", "--force", entry.pw_name], capture_output=True, check=False)


@pytest.fixture(scope="session")
def newcomer() -> Iterator[Newcomer]:
    why = _cannot()
    if why:
        if os.environ.get("ENILAB_REQUIRE_ROOT") == "1":
            pytest.fail(f"ENILAB_REQUIRE_ROOT=1 but the newcomer tests cannot run: {why}", pytrace=False)
        pytest.skip(why)
    _remove_users_of_dead_runs()
    name = f"{NEWCOMER_PREFIX}{os.getpid()}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True, capture_output=True)
    shared = Path(tempfile.mkdtemp(prefix="enilab-newcomer-"))
    try:
        info = pwd.getpwnam(name)
        home = Path(info.pw_dir)
        shared.chmod(0o755)
        bundle = shared / "enilab.bundle"
        subprocess.run(["git", "-C", str(ROOT), "bundle", "create", "-q", str(bundle), "HEAD"], check=True)
        bundle.chmod(0o644)
        hidden = shared / "root-only"  # like /root/.pyenv: the user cannot enter it
        hidden.mkdir(mode=0o700)
        tools = shared / "tools"
        tools.mkdir(mode=0o755)
        (tools / "python3").write_text(f"#!/bin/sh\nexec {hidden}/python3 \"$@\"\n")
        (tools / "python3").chmod(0o755)
        user = Newcomer(name, info.pw_uid, info.pw_gid, home, home / "enilab", tools)
        cloned = user.run(["git", "-c", "advice.detachedHead=false", "clone", "-q", str(bundle), str(user.clone)],
                          cwd=home)
        assert cloned.returncode == 0, cloned.stderr
        user.demo = user.run(["make", "demo"], timeout=MAKE_DEMO_TIMEOUT_S)
        private = home / ".cache" / "enilab"
        user.left = sorted(str(p.relative_to(private)) for p in private.rglob("*") if not p.is_dir())
        yield user
    finally:
        subprocess.run(["userdel", "--remove", "--force", name], capture_output=True, check=False)
        shutil.rmtree(shared, ignore_errors=True)
