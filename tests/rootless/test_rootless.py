"""Rootless enilab: `run` and `demo` on real namespaces as an unprivileged user, inside a user namespace.

As root, the tests run enilab as `nobody` (through `runuser`, with a virtual environment made from Debian's
/usr/bin/python3, which that user can read) and, with ENILAB_ROOTLESS=1, as root on the rootless path.
They skip only where user namespaces are unavailable, and fail instead under ENILAB_REQUIRE_ROOT=1.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from eni_core import netns, userns
from testbed.apps import bench_rootless, cli
from testbed.world import rootless, runs
from tests.helpers import SCENARIOS, build_wheel
from tests.rootless import asnobody
from tests.test_plugin_example import _readme_example

HOST_ROOT = pytest.mark.host_root("it switches to another user (runuser), which only the host's root may do")


def _need_user_namespaces() -> None:
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "--mount", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        reason = f"user namespaces are not available here: {probe.stderr.strip()}"
        if os.environ.get("ENILAB_REQUIRE_ROOT") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def nobody() -> Iterator[dict[str, str]]:
    """The environment to run enilab as `nobody` (tests/rootless/asnobody.py)."""
    why = asnobody.missing()
    if why:
        pytest.skip(why)
    _need_user_namespaces()
    with asnobody.prepared() as env:
        yield env


def _nobody_argv(env: dict[str, str], *args: str, user: str = "nobody") -> list[str]:
    return asnobody.argv(env, *args, user=user)


def _as_nobody(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return asnobody.run(env, *args, timeout=timeout)


def _host_namespaces() -> set[str]:
    return set(netns.list_names())


@pytest.mark.netns
@HOST_ROOT
def test_run_json_as_a_normal_user_is_real_namespaces(nobody):
    done = _as_nobody(nobody, "-m", "testbed.apps.cli", "run", "rp-filter-lesson", "--json")  # a built-in, by name
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["backend"] == "netns"
    assert [s["probe"]["as_expected"] for s in out["steps"] if "probe" in s] == [True, True, True, True]
    base = Path(nobody["HOME"]) / "enilab"
    assert base.stat().st_uid == 65534 and base.stat().st_mode & 0o777 == 0o700
    assert not list((base / "netns").iterdir()) and not list((base / "run" / "runs").iterdir())


@pytest.mark.netns
@HOST_ROOT
def test_demo_as_a_normal_user_proves_every_path_and_the_rp_filter_lesson(nobody):
    done = _as_nobody(nobody, "-m", "testbed.apps.cli", "demo", "--png", f"{nobody['HOME']}/t.png")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "netns backend" not in done.stderr and "running the simulator" not in done.stdout
    assert "a verified path for every pod" in done.stdout
    assert "rp_filter=1: dropped" in done.stdout and "every check passed" in done.stdout
    assert "FAIL" not in done.stdout


@pytest.mark.netns
@HOST_ROOT
def test_a_rootless_cluster_is_reached_by_the_users_other_commands_and_nobody_elses(nobody):
    """`up` as nobody; `status`, `pods add`, `trace`, `audit`, `exec`, `down` in new processes join its namespaces
    through the controller's pid. Another user (`daemon`), even pointed at nobody's folder, gets none of it."""
    cli_ = ("-m", "testbed.apps.cli")
    name = f"rl-{os.getpid()}"
    up = _as_nobody(nobody, *cli_, "up", "default", "--name", name)
    assert up.returncode == 0, up.stderr
    try:
        status = _as_nobody(nobody, *cli_, "status", "--name", name)
        assert status.returncode == 0 and f"cluster {name}" in status.stdout, status.stderr
        prefix = status.stdout.split("namespaces ")[1].split("-*")[0]
        assert not any(n.startswith(prefix) for n in _host_namespaces())
        added = _as_nobody(nobody, *cli_, "pods", "add", "--count", "1", "--name", name)
        assert added.returncode == 0 and "pod-10" in added.stdout, added.stderr
        trace = _as_nobody(nobody, *cli_, "trace", "pod-10", "cache-1", "--name", name)
        assert trace.returncode == 0 and "(reply)" in trace.stdout, trace.stderr
        audit = _as_nobody(nobody, *cli_, "audit", "--name", name)
        assert audit.returncode == 0 and "agree" in audit.stdout, audit.stdout + audit.stderr
        run = _as_nobody(nobody, *cli_, "exec", "--name", name, "pod-1", "--", "true")  # reaches the controller
        assert run.returncode == 2 and "needs `enilab up --backend containers`" in run.stderr, run.stderr
        own = Path(tempfile.mkdtemp(prefix="enilab-daemon-"))
        os.chown(own, 1, 1)
        for xdg in (nobody["HOME"], str(own)):
            # daemon runs the same code through the same binds (it must fail for want of rights, not of modules)
            daemon = {**nobody, "HOME": "/tmp", "XDG_RUNTIME_DIR": xdg}
            other = subprocess.run(_nobody_argv(daemon, *cli_, "status", "--name", name, user="daemon"),
                                   capture_output=True, text=True, timeout=120, cwd=own)
            assert other.returncode == 2 and f"cluster {name} ·" not in other.stdout, other.stdout + other.stderr
            assert "Traceback" not in other.stderr, other.stderr
        shutil.rmtree(own)
    finally:
        down = _as_nobody(nobody, *cli_, "down", "--name", name)
    assert down.returncode == 0 and "down" in down.stdout, down.stderr
    gone = _as_nobody(nobody, *cli_, "status", "--name", name)
    assert gone.returncode == 2 and "no cluster" in gone.stderr


@pytest.mark.netns
@HOST_ROOT
def test_bench_bringup_as_a_normal_user_verifies_every_pod(nobody):
    done = _as_nobody(nobody, "-m", "testbed.apps.cli", "bench", "bringup", "--nodes", "1", "--pods-per-node", "5",
                      "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["running"] == figures["verified"] == 5
    assert figures["namespaces"] == "rootless" and "rootless" not in figures  # no root figures without root


@pytest.mark.netns
def test_bench_bringup_reports_rootless_figures_beside_roots():
    """As root, the bring-up runs again in a child on the rootless path (ENILAB_ROOTLESS=1) and both are
    reported; a process already in a user namespace measures only the rootless path, and says so."""
    done = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "bench", "bringup", "--nodes", "1",
                           "--pods-per-node", "3", "--compare", "none", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["verified"] == 3
    if userns.inside():
        assert figures["namespaces"] == "rootless" and "rootless" not in figures
        return
    rootless = figures["rootless"]
    assert figures["namespaces"] == "root" and rootless["verified"] == rootless["reachable"] == 3
    assert set(bench_rootless.FIGURES) <= set(rootless) and rootless["teardown_ms_over_root"] > 0


@pytest.mark.parametrize(("child", "within"), [
    ({"unavailable": "user namespaces are not available to this user"}, True),
    ({"error": "Traceback: boom"}, False),
    ({"pods": 3, "verified": 2, "reachable": 3, "reach_sample": 3, "cpu_ms_per_pod": 4.0}, False),
    ({"pods": 3, "verified": 3, "reachable": 3, "reach_sample": 3, "cpu_ms_per_pod": 4.0}, True)])
def test_a_rootless_run_that_fails_misses_the_target_and_one_the_kernel_refuses_only_says_so(monkeypatch, child,
                                                                                             within):
    monkeypatch.setattr(userns, "inside", lambda: False)
    monkeypatch.setattr(bench_rootless, "rootless_bringup", lambda nodes, pods: dict(child))
    r = bench_rootless.beside({"cpu_ms_per_pod": 2.0, "within_target": True}, 1, 3)
    assert r["within_target"] is within and r["namespaces"] == "root"
    if "cpu_ms_per_pod" in child:
        assert r["rootless"]["cpu_ms_over_root"] == 2.0


@pytest.mark.netns
@pytest.mark.host_root("it checks that ENILAB_ROOTLESS=1 moves root out of the host's namespaces, which a "
                       "process already in a user namespace has left")
def test_kept_namespaces_live_in_the_users_folder_and_nowhere_else(tmp_path):
    """ENILAB_ROOTLESS=1 as root: the run's namespaces appear in the private folder standing in for
    /run/netns, its record in the one standing in for /run/enilab; the host's see neither."""
    _need_user_namespaces()
    before = _host_namespaces()
    env = {**os.environ, "ENILAB_ROOTLESS": "1", "XDG_RUNTIME_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "run", str(SCENARIOS / "quick-release.yaml"),
                           "--json", "--keep"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backend"] == "netns"
    base = tmp_path / "enilab"
    assert oct(base.stat().st_mode & 0o777) == "0o700"
    records = list((base / "run" / "runs").glob("enl-*.json"))
    assert len(records) == 1
    prefix = records[0].stem
    kept = [p.name for p in (base / "netns").iterdir()]
    assert kept and all(n.startswith(prefix + "-") for n in kept)
    assert not any(n.startswith(prefix) for n in _host_namespaces() - before)
    # the namespaces died with the process: the kept names are plain files now, and clean removes them
    cleaned = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "clean"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not list((base / "netns").iterdir()) and not list((base / "run" / "runs").glob("*.json"))


@pytest.mark.netns
@HOST_ROOT
def test_another_user_cannot_see_or_join_a_rootless_run(nobody):
    """While `nobody` holds namespaces of its own, a second user (`daemon`) can neither open the process's
    namespaces nor read its private folder; the host's /run/netns does not show them."""
    holder = subprocess.Popen(
        _nobody_argv(nobody, "-c", "from eni_core import netns, userns; userns.enter(); netns.create('enl-held'); "
                                   "print('ready', flush=True); input()"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=nobody["HOME"])
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert "enl-held" not in _host_namespaces()
        probe = ("import os, sys\n"
                 "for p in sys.argv[1:]:\n"
                 "    try:\n"
                 "        os.listdir(p) if os.path.isdir(p) else os.close(os.open(p, os.O_RDONLY))\n"
                 "        print('opened', p)\n"
                 "    except PermissionError:\n"
                 "        print('refused', p)\n")
        pid = holder.pid
        for _ in range(50):  # unshare execs sh, then runuser, which forks: the holder is its child
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if not children:
                break
            pid = int(children[0])
        targets = [f"/proc/{pid}/ns/user", f"/proc/{pid}/ns/net", f"/proc/{pid}/ns/mnt", nobody["HOME"] + "/enilab"]
        other = subprocess.run(["runuser", "-u", "daemon", "--", asnobody.DEBIAN_PYTHON, "-c", probe, *targets],
                               capture_output=True, text=True, timeout=60)
        assert other.stdout.split("\n")[:-1] == [f"refused {t}" for t in targets], other.stdout + other.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


class _RefusingLibc:
    """libc whose unshare(2) fails as a kernel without user namespaces would (EPERM)."""

    def unshare(self, flags: int) -> int:
        ctypes.set_errno(errno.EPERM)
        return -1


@pytest.mark.parametrize("euid", [1000, 0])
def test_without_user_namespaces_run_says_why_and_exits_2(monkeypatch, tmp_path, capsys, euid):
    """A normal user is told why there are no namespaces; root forcing ENILAB_ROOTLESS=1 is refused rather
    than run as root."""
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.setenv("ENILAB_ROOTLESS", "1")
    monkeypatch.setattr(userns, "inside", lambda: False)
    monkeypatch.setattr(userns, "state_base", lambda: tmp_path)
    monkeypatch.setattr(userns, "private_dir", lambda path: path)
    monkeypatch.setattr(userns, "_libc", _RefusingLibc())
    monkeypatch.setattr(sys, "argv", ["enilab", "run", str(SCENARIOS / "quick-release.yaml")])
    assert cli.main() == 2
    err = capsys.readouterr().err
    assert "user namespaces are not available to this user" in err and "Traceback" not in err
    assert ("ENILAB_ROOTLESS=1" in err) == (euid == 0)


def test_a_private_folder_that_cannot_be_made_is_said_in_one_line(monkeypatch, tmp_path, capsys):
    """The state folder exists but its `run/` cannot be made (a full disk, a home over quota): one line,
    exit 2, and the process never left its namespaces."""
    def full(path):
        if Path(path).name == "run":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return path

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(userns, "inside", lambda: False)
    monkeypatch.setattr(userns, "state_base", lambda: tmp_path)
    monkeypatch.setattr(userns, "private_dir", full)
    monkeypatch.setattr("threading.active_count", lambda: 1)
    monkeypatch.setattr(userns, "_libc", _RefusingLibc())  # were it reached, nothing would move
    monkeypatch.setattr(sys, "argv", ["enilab", "clean"])
    assert cli.main() == 2
    err = capsys.readouterr().err
    assert "cannot make the private folder" in err and "No space left on device" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_state_folder_refuses_a_symlink_and_a_missing_home(monkeypatch, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "enilab").symlink_to(elsewhere)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(PermissionError, match="not a folder of this user"):
        userns.state_base()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "missing"))
    with pytest.raises(userns.RootlessError, match="set XDG_RUNTIME_DIR"):
        userns.state_base()


def test_entering_needs_a_single_threaded_process(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr("threading.active_count", lambda: 2)
    with pytest.raises(userns.RootlessError, match="single-threaded"):
        userns.enter()
    assert not (tmp_path / "enilab").exists()


def test_only_a_single_live_controller_is_joined(monkeypatch, tmp_path):
    """A malformed or dead owner record, a name that is no DNS label, or two live clusters without a name:
    nothing to join (the command then says what is wrong, in the user's own namespaces)."""
    monkeypatch.setenv("ENILAB_CLUSTERS_DIR", str(tmp_path))
    me = runs.this_process()
    for name, record in {"live-a": me, "live-b": me, "dead": {"pid": me["pid"], "start": "1"}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "owner.json").write_text(json.dumps(record))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "owner.json").write_text("{not json")
    assert rootless.live_controller("live-a") == me
    assert rootless.live_controller(None) is None  # two live ones: the user must name one
    assert rootless.live_controller("dead") is None and rootless.live_controller("broken") is None
    assert rootless.live_controller("../live-a") is None and rootless.live_controller("missing") is None
    (tmp_path / "live-b" / "owner.json").unlink()
    assert rootless.live_controller(None) == me


CONTAINER = """
import ctypes, os, sys
from eni_core import userns
from testbed.world import rootless, runs
owner = rootless.live_controller(sys.argv[1])
userns.join(owner["pid"], lambda: runs.owner_alive(owner))
assert ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0  # the container's network namespace
print(os.getpid(), flush=True)
sys.stdin.read()
"""


@pytest.mark.netns
@HOST_ROOT
def test_the_cni_plugin_called_from_outside_joins_the_users_cluster_and_no_one_elses(nobody):
    """A rootless runtime of nobody's (a process that started its container in the cluster's user namespace)
    calls the installed `enilab-cni` from outside it: ADD, CHECK and DEL wire and unwire the container, the
    controller's status shows it. Another user gets a CNI error and no IP."""
    cli_ = ("-m", "testbed.apps.cli")
    name = f"rlcni-{os.getpid()}"
    home = nobody["HOME"]
    up = _as_nobody(nobody, *cli_, "up", "default", "--name", name)
    assert up.returncode == 0, up.stderr
    container = None
    try:
        assert _as_nobody(nobody, *cli_, "cni", "install", f"{home}/bin").returncode == 0
        conflist = _as_nobody(nobody, *cli_, "cni", "config", "--node", "node-1", "--name", name)
        assert conflist.returncode == 0, conflist.stderr
        doc = json.loads(conflist.stdout)
        conf = {"cniVersion": doc["cniVersion"], "name": doc["name"], **doc["plugins"][0]}
        container = subprocess.Popen(_nobody_argv(nobody, "-c", CONTAINER, name), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        netns_path = f"/proc/{container.stdout.readline().strip()}/ns/net"

        def plugin(command: str, config: dict, user: str = "nobody", env: dict | None = None, folder: str = home):
            cni_env = {**(env or nobody), "CNI_COMMAND": command, "CNI_CONTAINERID": "rl-1", "CNI_NETNS": netns_path,
                       "CNI_IFNAME": "eth0", "CNI_PATH": f"{folder}/bin"}
            done = subprocess.run(asnobody.argv(cni_env, "-IS", f"{folder}/bin/enilab-cni", user=user, cwd="/"),
                                  input=json.dumps(config), capture_output=True, text=True, timeout=60)
            return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done.stderr

        code, result, err = plugin("ADD", conf)
        assert code == 0, (result, err)
        ip = result["ips"][0]["address"].split("/")[0]
        status = _as_nobody(nobody, *cli_, "status", "--name", name, "--json")
        wired = json.loads(status.stdout)["state"]["nodes"]["node-1"]
        assert ip in json.dumps(wired) and "rl-1" in json.dumps(wired), status.stdout
        code, checked, err = plugin("CHECK", {**conf, "prevResult": result})
        assert code == 0 and checked is None, (checked, err)
        own = Path(tempfile.mkdtemp(prefix="enilab-daemon-"))
        (own / "bin").mkdir()
        shutil.copy2(f"{home}/bin/enilab-cni", own / "bin")
        for path in (own, own / "bin", own / "bin" / "enilab-cni"):
            os.chown(path, 1, 1)
        try:
            for xdg in (home, str(own)):  # daemon: nobody's folder, then its own
                code, refused, err = plugin("ADD", conf, user="daemon", folder=str(own),
                                            env={**nobody, "HOME": "/tmp", "XDG_RUNTIME_DIR": xdg})
                assert code == 1 and "is up" in refused["msg"] and "Traceback" not in err, (refused, err)
        finally:
            shutil.rmtree(own)
        code, deleted, err = plugin("DEL", conf)
        assert code == 0 and deleted is None, (deleted, err)
        status = _as_nobody(nobody, *cli_, "status", "--name", name, "--json")
        assert "rl-1" not in status.stdout
    finally:
        if container is not None:
            container.stdin.close()
            container.wait(timeout=60)
        down = _as_nobody(nobody, *cli_, "down", "--name", name)
    assert down.returncode == 0, down.stderr


@pytest.mark.parametrize("xdg", ["", "relative/run", "missing", "ok"])
def test_the_cni_client_finds_the_private_folder_by_the_same_rule_as_enilab(monkeypatch, tmp_path, xdg):
    """The standalone client may import nothing of the project, so it repeats userns.state_base's rule; the
    two must agree."""
    from eni_core import cni_client

    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "ok").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / xdg) if xdg in ("missing", "ok") else xdg)
    assert Path(cni_client.rootless_base()) == userns.state_base()


def test_an_xdg_runtime_dir_of_another_user_or_shared_is_passed_over(monkeypatch, tmp_path):
    """XDG_RUNTIME_DIR left pointing at another user's folder (`su` keeps it) or at one anybody may write in:
    enilab's private folder there could be renamed away under it, and root's would stay where that user
    cannot remove it. Like an unset one, it is passed over for ~/.cache/enilab, by enilab and the CNI client."""
    from eni_core import cni_client

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    folders = [shared]
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 1, 1)
        folders.append(theirs)
    for xdg in folders:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
        assert userns.state_base() == home / ".cache" / "enilab"
        assert Path(cni_client.rootless_base()) == userns.state_base()
        assert not (xdg / "enilab").exists()


@pytest.mark.netns
@HOST_ROOT
def test_the_plugin_runs_the_readme_example_rootless_from_a_wheel_in_a_project_of_nobodys(tmp_path):
    """The README's pytest example in a project of its own, against enilab installed from its wheel into a
    venv nobody can run: as nobody its netns test runs in a user namespace (one process, and under xdist
    with ENILAB_ROOTLESS=1 or ENILAB_REQUIRE_NETNS=1); under xdist without either it is skipped, saying what
    to do."""
    why = asnobody.missing()
    if why:
        pytest.skip(why)
    _need_user_namespaces()
    wheel = build_wheel(tmp_path)
    top = Path(tempfile.mkdtemp(prefix="enilab-wheel-"))
    try:
        top.chmod(0o755)
        venv = top / "venv"
        subprocess.run([asnobody.DEBIAN_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
        install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                                  "-q", str(wheel), "pytest", "pytest-xdist"], capture_output=True, text=True,
                                 timeout=900)
        assert install.returncode == 0, install.stderr
        project = top / "project"
        project.mkdir()
        (project / "test_network.py").write_text(_readme_example())
        os.chown(project, asnobody.NOBODY, asnobody.NOBODY)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(project), "XDG_RUNTIME_DIR": str(project), "LANG": "C.UTF-8",
               "PYTHON": str(venv / "bin" / "python"), "ENILAB_TEST_BINDS": "{}"}

        def pytest_as_nobody(*args: str, **extra: str) -> str:
            done = subprocess.run(asnobody.argv({**env, **extra}, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                                "-rs", *args, cwd=str(project)),
                                  capture_output=True, text=True, timeout=600)
            return done.stdout + done.stderr

        assert "2 passed" in pytest_as_nobody()
        assert "2 passed" in pytest_as_nobody("-n", "2", ENILAB_ROOTLESS="1")
        skipped = pytest_as_nobody("-n", "2")
        assert "1 passed, 1 skipped" in skipped and "set ENILAB_ROOTLESS=1 so the session enters one" in skipped
        assert "2 passed" in pytest_as_nobody("-n", "2", ENILAB_REQUIRE_NETNS="1")  # CI's way: enter, never skip
    finally:
        shutil.rmtree(top)


def test_the_cni_client_joins_only_a_single_live_controller(tmp_path):
    """The client's own reading of the registry (it may not import runs): a dead or reused pid, a malformed
    record, or two live clusters without a name give nothing to join."""
    from eni_core import cni_client

    me = runs.this_process()
    for name, record in {"live-a": me, "live-b": me, "dead": {"pid": me["pid"], "start": "1"},
                         "gone": {"pid": 2 ** 22 + 1, "start": me["start"]}, "odd": {"pid": "1"}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "owner.json").write_text(json.dumps(record))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "owner.json").write_text("{not json")
    assert cni_client._live_controller(str(tmp_path), "live-a") == ("live-a", me["pid"], me["start"])
    assert cni_client._live_controller(str(tmp_path), None) == ()
    for name in ("dead", "gone", "odd", "broken", "missing", "../live-a"):
        assert cni_client._live_controller(str(tmp_path), name) == ()
    assert cni_client._live_controller(str(tmp_path / "nowhere"), None) == ()
