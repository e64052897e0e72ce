"""Run this checkout's Python as `nobody`: the one home of how the tests and `make test` do it.

`nobody` cannot read the project's own interpreter (it lives under /root here) and may not be able to enter
the checkout (a CI clone below a 0700 temporary folder). So a virtual environment is made from Debian's
/usr/bin/python3, which every user can run, and each command runs in a mount namespace of its own where
the checkout and the project's installed dependencies are bound on folders of a tree that user can enter
(nothing is mounted in the host's); a `.pth` file puts both on the path, so the entry points (the pytest
plugin) come along.

As a program (root only): `python -m tests.rootless.asnobody ARGS...` runs `python ARGS...` as nobody in
the bound checkout and exits with its code, e.g. `... -m pytest -m netns tests` for the rootless pass of
`make test`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

__all__ = ["DEBIAN_PYTHON", "ROOT", "argv", "missing", "prepared", "run"]

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = "/usr/bin/python3"
NOBODY = 65534


def missing() -> str | None:
    """What this machine lacks for running as nobody, in words; None when nothing is missing."""
    if os.geteuid() != 0:
        return "switching to another user (runuser) needs root"
    if not os.access(DEBIAN_PYTHON, os.X_OK) or shutil.which("runuser") is None or shutil.which("unshare") is None:
        return f"needs {DEBIAN_PYTHON}, runuser and unshare"
    return None


@contextmanager
def prepared(extra_env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """A venv nobody can run and a private folder of nobody's for HOME and XDG_RUNTIME_DIR: the environment
    `argv` and `run` take. Everything is removed afterwards."""
    top = Path(tempfile.mkdtemp(prefix="enilab-nobody-"))
    try:
        top.chmod(0o755)
        venv = top / "venv"
        subprocess.run([DEBIAN_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = next(venv.glob("lib/python3*/site-packages"))
        src, deps = top / "src", top / "deps"
        for folder in (src, deps):
            folder.mkdir(mode=0o755)
        # The checkout's entries one by one, not the checkout: its own folder may be 0700 (a clone made
        # straight into a mktemp folder), and a bind shows the folder's own mode.
        binds = {deps: Path(sysconfig.get_paths()["purelib"])}
        for entry in sorted(ROOT.iterdir()):
            if entry.name != ".venv":
                mountpoint = src / entry.name
                mountpoint.mkdir(mode=0o755) if entry.is_dir() else mountpoint.touch(mode=0o644)
                binds[mountpoint] = entry
        (site / "enilab-under-test.pth").write_text(f"{src}\n{deps}\n")
        _console_scripts(venv)
        home = top / "home"
        home.mkdir(mode=0o700)
        os.chown(home, NOBODY, NOBODY)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "XDG_RUNTIME_DIR": str(home),
               "LANG": "C.UTF-8", "COLUMNS": "200", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHON": str(venv / "bin" / "python"), "SRC": str(top / "src"), **(extra_env or {}),
               "ENILAB_TEST_BINDS": json.dumps({str(m): str(src) for m, src in binds.items()})}
        readable = run(env, "-c", "import testbed.apps.cli, scapy.all, pytest")
        if readable.returncode != 0:
            raise RuntimeError(f"nobody cannot import the checkout or its dependencies (check the permissions of "
                               f"{ROOT} and {sysconfig.get_paths()['purelib']}): {readable.stderr}")
        yield env
    finally:
        shutil.rmtree(top)


def _console_scripts(venv: Path) -> None:
    """enilab's commands in the venv's bin/, as pip would write them (the docs run `.venv/bin/enilab`)."""
    for entry in metadata.distribution("enilab").entry_points.select(group="console_scripts"):
        script = venv / "bin" / entry.name
        script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {entry.module} import {entry.attr}\n"
                          f"sys.exit({entry.attr}())\n")
        script.chmod(0o755)


def argv(env: dict[str, str], *args: str, user: str = "nobody", cwd: str | None = None) -> list[str]:
    """The command line that runs the venv's Python with `args` as `nobody` (or `user`), in a private mount
    namespace where the checkout and its dependencies are bound, from `cwd` (default: the user's HOME)."""
    binds = [x for mountpoint, src in json.loads(env["ENILAB_TEST_BINDS"]).items() for x in (src, mountpoint)]
    script = ('while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 97; shift 2; done; '
              'shift; cd "$1" || exit 97; shift; exec "$@"')
    user_env = [f"{k}={v}" for k, v in env.items() if k != "ENILAB_TEST_BINDS"]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *binds, "--",
            cwd or env["HOME"], "runuser", "-u", user, "--", "env", "-i", *user_env, env["PYTHON"], *args]


def run(env: dict[str, str], *args: str, timeout: float = 300, cwd: str | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """`argv`, run to its end with its output captured."""
    return subprocess.run(argv(env, *args, cwd=cwd), capture_output=True, text=True, timeout=timeout)


def main(args: Sequence[str]) -> int:
    why = missing()
    if why:
        print(f"asnobody: {why}", file=sys.stderr)
        return 2
    # enilab's switches go along, but not ENILAB_REQUIRE_ROOT: nobody is not root, whatever the caller demands
    passed = {k: v for k, v in os.environ.items()
              if k.startswith(("ENILAB_", "PYTEST_ADDOPTS")) and k != "ENILAB_REQUIRE_ROOT"}
    with prepared(passed) as env:
        return subprocess.run(argv(env, *args, cwd=env["SRC"])).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
