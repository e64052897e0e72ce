"""Hostile lifecycle: names that try to be paths, foreign and look-alike namespaces, umask 000 and another
user, a controller killed with SIGKILL (before and during a request), and two `enilab up` of one name."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from eni_core import agent, netns
from eni_core.datastore import FileCheckpoint
from eni_core.names import InvalidName
from eni_core.private import NotPrivate, private_dir
from eni_core.rpc import RpcServer
from testbed.apps import controller
from testbed.world import runs
from tests.helpers import SCENARIOS

ENILAB = [sys.executable, "-m", "testbed.apps.cli"]
CONTROLLER = [sys.executable, "-m", "testbed.apps.controller"]
TOPOLOGY = """
name: {name}
cluster:
  subnets: [{{id: subnet-a, cidr: 10.0.1.0/24}}]
  nodes: [{{name: {node}, subnets: [subnet-a], max_enis: 2, ips_per_eni: 4}}]
steps:
  - {{op: create_pods, node: {node}, count: 2}}
"""


def enilab(*args: str, env: dict | None = None, umask: int = -1) -> subprocess.CompletedProcess:
    return subprocess.run([*ENILAB, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, umask=umask)


def topology(tmp_path: Path, name: str | None = None, node: str = "node-1") -> tuple[str, Path]:
    name = name or f"hl-{uuid.uuid4().hex[:6]}"
    path = tmp_path / f"{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(TOPOLOGY.format(name=json.dumps(name), node=json.dumps(node)))
    return name, path


def controller_pid(up_stdout: str) -> int:
    """The pid `enilab up` reports for its controller."""
    return int(re.search(r"controller pid (\d+)", up_stdout).group(1))


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 on, read here rather than through enilab; [] if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def running(pid: int) -> bool:
    """A zombie (killed, not reaped) does not run."""
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def controllers_named(name: str) -> list[int]:
    """Pids of running controller processes serving `name`, found in /proc."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"testbed.apps.controller" in argv and name.encode() in argv and running(int(proc.name)):
            pids.append(int(proc.name))
    return pids


def mine(prefix: str) -> list[str]:
    return [n for n in netns.list_names() if n.startswith(prefix + "-")]


def kill_hard(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    while running(pid):  # gone, or a zombie no one reaps
        time.sleep(0.01)


# -- names never become paths ---------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["--name", "topology"])
def test_up_refuses_a_cluster_name_that_is_a_path_before_making_anything(tmp_path, how):
    escape = Path(f"/tmp/enilab-escape-{uuid.uuid4().hex[:6]}")
    bad = f"../../../{escape.relative_to('/')}"
    if how == "--name":
        _, topo = topology(tmp_path)
        out = enilab("up", str(topo), "--name", bad)
    else:
        _, topo = topology(tmp_path, name=bad)
        out = enilab("up", str(topo))
    assert out.returncode == 2 and "is not a DNS label" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) == 1
    assert not escape.exists()


def test_the_controller_refuses_a_bad_name_on_its_own(tmp_path):
    out = subprocess.run([*CONTROLLER, str(topology(tmp_path)[1]), "--name", "../../etc"], capture_output=True,
                         text=True, env={**os.environ, "ENILAB_RUN_DIR": str(tmp_path / "run")})
    assert out.returncode == 2 and "is not a DNS label" in json.loads(out.stdout)["error"]
    assert not (tmp_path / "run").exists()


def test_a_node_name_that_is_a_path_never_becomes_a_socket_or_checkpoint(tmp_path, capsys):
    with pytest.raises(InvalidName):
        controller.agent_socket_name("../../tmp/x")
    with pytest.raises(SystemExit) as exit_:
        agent.main(["--node", "../../etc/passwd", "--vpc", "v.sock", "--state", str(tmp_path), "--listen", "a.sock",
                    "--subnet", "subnet-a", "--max-enis", "2", "--ips-per-eni", "4"])
    assert exit_.value.code == 2 and "is not a DNS label" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_socket_path_longer_than_the_kernel_takes_is_refused_in_one_line_before_anything(tmp_path, capsys):
    """A unix socket's path has at most 107 bytes. A node's socket over that (a long ENILAB_RUN_DIR, cluster
    or node name) failed inside bind(), once the namespaces were made: the agent died with a traceback in
    its log. The controller and the agent now refuse it first, saying what to shorten."""
    run_dir = tmp_path / "r"  # the cluster's own socket fits; the node's does not
    node = "n" * 60
    name, topo = topology(tmp_path, node=node)
    out = subprocess.run([*CONTROLLER, str(topo), "--name", name], capture_output=True, text=True,
                         env={**os.environ, "ENILAB_RUN_DIR": str(run_dir)})
    error = json.loads(out.stdout)["error"]
    assert out.returncode == 2 and f"node {node}: the unix socket" in error and "at most 107" in error
    assert not any((run_dir / "runs").glob("*.json"))  # no run made
    long = tmp_path / ("s" * 120 + ".sock")
    assert agent.main(["--node", "node-1", "--vpc", "v.sock", "--state", str(tmp_path / "state"), "--listen",
                       str(long), "--subnet", "subnet-a", "--max-enis", "2", "--ips-per-eni", "4"]) == 2
    err = capsys.readouterr().err
    assert "--listen: the unix socket" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "state").exists()
    (tmp_path / "file").touch()  # a --state the agent cannot make: one line too
    assert agent.main(["--node", "node-1", "--vpc", "v.sock", "--state", str(tmp_path / "file" / "state"), "--listen",
                       str(tmp_path / "a.sock"), "--subnet", "subnet-a", "--max-enis", "2", "--ips-per-eni", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"enilab-agent: error: --state {tmp_path / 'file' / 'state'}: ") and err.count("\n") == 1


def test_the_clusters_own_socket_is_checked_with_the_nodes_before_anything(tmp_path):
    """`control.sock` is a byte longer than `node-1.sock`: a cluster folder where the nodes' sockets fit and the
    cluster's own does not was refused only once the cluster was up, naming an exception class."""
    name, topo = topology(tmp_path)
    folder_len = len(os.fsencode(tmp_path / "r" / "clusters" / name)) + 1
    run_dir = tmp_path / ("r" * (107 - len("node-1.sock") - folder_len + 1))  # node-1.sock: 107 bytes exactly
    out = subprocess.run([*CONTROLLER, str(topo), "--name", name], capture_output=True, text=True,
                         env={**os.environ, "ENILAB_RUN_DIR": str(run_dir)})
    error = json.loads(out.stdout)["error"]
    assert out.returncode == 2 and error.startswith(f"cluster {name}: the unix socket") and "108 bytes" in error
    assert not any((run_dir / "runs").glob("*.json"))


def test_the_controller_refuses_a_bad_node_name_before_making_anything(tmp_path):
    """The scenario check may refuse it first; the controller refuses it anyway, before any namespace."""
    run_dir = tmp_path / "run"
    name, topo = topology(tmp_path, node="../../x")
    out = subprocess.run([*CONTROLLER, str(topo), "--name", name], capture_output=True, text=True,
                         env={**os.environ, "ENILAB_RUN_DIR": str(run_dir)})
    assert out.returncode == 2 and "error" in json.loads(out.stdout)
    assert not list((run_dir / "clusters").iterdir()) and not (run_dir / "runs").exists()


@pytest.mark.netns
def test_the_controller_deletes_only_the_files_it_made(tmp_path):
    name, topo = topology(tmp_path)
    assert enilab("up", str(topo)).returncode == 0
    folder = controller.cluster_dir(name)
    planted = [folder / "notes.txt", folder / "node-9.sock"]  # the second looks like an agent socket
    for f in planted:
        f.write_text("not enilab's")
    try:
        down = enilab("down", "--name", name)
        assert down.returncode == 0, down.stderr
        assert sorted(p.name for p in folder.iterdir()) == ["node-9.sock", "notes.txt"]
    finally:
        for f in planted:
            f.unlink()
        folder.rmdir()


# -- clean removes what records list, and only once their owner is dead -----------------------------------
def test_a_run_records_each_namespace_before_it_is_made(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUN_DIR", tmp_path)
    made = []
    monkeypatch.setattr(netns, "create", lambda name: made.append((name, runs.Run.load(run.prefix).recorded())))
    run = runs.Run.new(cluster="c1")
    assert runs.Run.load(run.prefix).recorded() == []
    assert "namespaces" not in json.loads(run.record.read_text())  # an older cleaner skips it, takes nothing
    run.netns("fabric")
    run.netns("n1")
    assert [(n, r[-1]) for n, r in made] == [(run.name("fabric"),) * 2, (run.name("n1"),) * 2]
    record = json.loads(run.record.read_text())
    assert record["pid"] == os.getpid() and record["start"] == runs.process_start(os.getpid())
    assert record["cluster"] == "c1" and runs.Run.load(run.prefix).info["cluster"] == "c1"
    assert stat.S_IMODE(run.record.stat().st_mode) == 0o600 and stat.S_IMODE(run.journal.stat().st_mode) == 0o600
    run.unregister()
    assert not run.record.exists() and not run.journal.exists()


def test_a_reservation_appends_a_line_instead_of_rewriting_the_record(tmp_path, monkeypatch):
    """Linear in the number of namespaces: the header is written once, each name is one append."""
    monkeypatch.setattr(runs, "RUN_DIR", tmp_path)
    run = runs.Run.new()
    header = run.record.read_bytes()
    names = [run.reserve(f"p{i}") for i in range(2000)]
    assert run.record.read_bytes() == header
    assert run.journal.read_text() == "".join(f"{n}\n" for n in names)
    assert run.reserve("p7") == names[7] and runs.Run.load(run.prefix).recorded() == names  # once each


def test_a_torn_journal_line_names_nothing(tmp_path, monkeypatch):
    """A process killed inside its append leaves a line without its newline: the namespace it names was
    not made yet (the append comes first), so the line is ignored; the lines before it count."""
    monkeypatch.setattr(runs, "RUN_DIR", tmp_path)
    run = runs.Run.new()
    run.reserve("n1")
    with open(run.journal, "a") as f:
        f.write(f"{run.name('p1')[:-1]}")
    assert runs.Run.load(run.prefix).recorded() == [run.name("n1")]


def test_a_journal_cannot_point_clean_at_another_runs_namespace(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUN_DIR", tmp_path)
    run = runs.Run("enl-0a0b0c", pid=999_999_999, start="0")
    run.reserve("n1")
    with open(run.journal, "a") as f:
        f.write("enl-ffffff-n1\nforeign\n../../etc\n-enl-0a0b0c-n1x\n")
    deleted = []
    monkeypatch.setattr(netns, "exists", lambda name: True)
    monkeypatch.setattr(netns, "delete_many", lambda names: deleted.extend(names) or list(names))
    report = runs.clean()
    assert deleted == ["enl-0a0b0c-n1"] and report.removed == {"enl-0a0b0c": ["enl-0a0b0c-n1"]}
    assert not list(tmp_path.joinpath("runs").iterdir())


KILLED_RUN = """
from testbed.world import runs
run = runs.Run.new()
print(run.prefix, flush=True)
for i in range(100_000):
    run.netns(f"p{i}")
    if i == 30:
        print("going", flush=True)
"""


@pytest.mark.netns
@pytest.mark.parametrize("delay", [0.0, 0.013, 0.05])
def test_a_run_killed_at_any_point_leaves_a_record_clean_uses(tmp_path, delay):
    """kill -9 while a run makes namespaces as fast as it can: `enilab clean` then removes every one of
    them (the journal named each before it was made) and the record, and nothing else."""
    env = {**os.environ, "ENILAB_RUN_DIR": str(tmp_path / "run")}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN], stdout=subprocess.PIPE, text=True, env=env)
    try:
        prefix = proc.stdout.readline().strip()
        assert proc.stdout.readline().strip() == "going"
        time.sleep(delay)
    finally:
        proc.kill()
        proc.wait()
    made = mine(prefix)
    assert len(made) > 30
    out = enilab("clean", "--json", env={"ENILAB_RUN_DIR": str(tmp_path / "run")})
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["removed"][prefix]) == sorted(made)
    assert not mine(prefix) and not list((tmp_path / "run" / "runs").iterdir())


def test_a_namespace_that_existed_already_is_not_recorded_as_the_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUN_DIR", tmp_path)
    run = runs.Run.new()

    def exists_already(name):
        raise FileExistsError(name)

    monkeypatch.setattr(netns, "create", exists_already)
    with pytest.raises(FileExistsError):
        run.netns("n1")
    assert runs.Run.load(run.prefix).recorded() == [] and run.recorded() == []


def test_a_record_cannot_point_clean_at_another_runs_namespace(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUN_DIR", tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "enl-0a0b0c.json").write_text(json.dumps(
        {"prefix": "enl-0a0b0c", "pid": 999_999_999, "start": "0",
         "namespaces": ["enl-0a0b0c-n1", "enl-ffffff-n1", "foreign", "../../etc"]}))
    (tmp_path / "runs" / "enl-0d0e0f.json").write_text('{"prefix": "enl-0d0e0f", "pid": 1}')  # no list: not ours
    deleted = []
    monkeypatch.setattr(netns, "exists", lambda name: True)
    monkeypatch.setattr(netns, "delete_many", lambda names: deleted.extend(names) or list(names))
    report = runs.clean()
    assert deleted == ["enl-0a0b0c-n1"] and report.skipped == ["enl-0d0e0f.json"]


@pytest.mark.netns
def test_clean_never_deletes_a_namespace_no_record_lists(tmp_path):
    """`ip netns add enl-abcdef-mine; enilab clean` must leave it: a name that looks like ours is not ours."""
    lookalike = f"enl-{uuid.uuid4().hex[:6]}-mine"
    subprocess.run(["ip", "netns", "add", lookalike], check=True)
    prefix = f"enl-{uuid.uuid4().hex[:6]}"  # a dead run that recorded n1 and not n2
    record = runs.RUN_DIR / "runs" / f"{prefix}.json"
    record.write_text(json.dumps({"prefix": prefix, "pid": 999_999_999, "start": "0", "namespaces": [f"{prefix}-n1"]}))
    unrecorded = f"{prefix}-n2"
    for name in (f"{prefix}-n1", unrecorded):
        netns.create(name)
    try:
        out = enilab("clean", "--json")
        assert out.returncode == 0, out.stderr
        assert netns.exists(lookalike) and netns.exists(unrecorded)
        assert not netns.exists(f"{prefix}-n1") and not record.exists()
    finally:
        subprocess.run(["ip", "netns", "del", lookalike], check=True)
        netns.delete(unrecorded)


@pytest.mark.netns
def test_clean_force_takes_live_runs_too_but_still_only_what_they_recorded(tmp_path):
    run_dir = tmp_path / "run"  # a run folder of our own: --force must not reach other sessions' live runs
    env = {"ENILAB_RUN_DIR": str(run_dir)}
    prefix = f"enl-{uuid.uuid4().hex[:6]}"
    record = json.dumps({"prefix": prefix, "pid": os.getpid(), "start": _stat(os.getpid())[19],
                         "namespaces": [f"{prefix}-n1"]})
    (run_dir / "runs").mkdir(parents=True)
    (run_dir / "runs" / f"{prefix}.json").write_text(record)
    # the same live run in the shared folder too, so that other sessions' cleanups see it and leave it be
    shared = runs.RUN_DIR / "runs" / f"{prefix}.json"
    shared.write_text(record)
    for what in ("n1", "n2"):
        netns.create(f"{prefix}-{what}")
    try:
        assert json.loads(enilab("clean", "--json", env=env).stdout)["removed"] == {}  # alive: kept
        assert netns.exists(f"{prefix}-n1")
        forced = json.loads(enilab("clean", "--force", "--json", env=env).stdout)
        assert forced["removed"] == {prefix: [f"{prefix}-n1"]}
        assert not netns.exists(f"{prefix}-n1") and netns.exists(f"{prefix}-n2")
    finally:
        for what in ("n1", "n2"):
            netns.delete(f"{prefix}-{what}")
        shared.unlink()


@pytest.mark.netns
def test_run_keep_leaves_its_namespaces_up_and_clean_removes_them_once_it_exited():
    out = enilab("run", str(SCENARIOS / "grow-and-shrink.yaml"), "--keep", "--json")
    assert out.returncode == 0, out.stderr
    prefix = re.search(r"kept namespaces (enl-[a-z0-9-]+)-\*", out.stderr).group(1)
    record = runs.RUN_DIR / "runs" / f"{prefix}.json"
    try:
        assert len(mine(prefix)) > 1 and record.exists()
    finally:
        assert enilab("clean").returncode == 0
    assert not mine(prefix) and not record.exists()


RUNAWAY = """
name: {name}
cluster:
  subnets: [{{id: subnet-a, cidr: 10.0.1.0/29}}]
  nodes: [{{name: {node}, subnets: [subnet-a], max_enis: 2, ips_per_eni: 10}}]
steps:
  - {{op: create_pods, node: {node}, count: 2}}
  - {{op: advance, seconds: 315360000}}
"""


def unrecorded_namespaces() -> list[str]:
    """enilab's namespaces no run record names: left behind. Other tests' runs come and go meanwhile; a run
    records itself before it makes a namespace and deletes its namespaces before its record, so one that
    starts or ends while we look is in the records read before or in those read after. Only this xdist
    worker's runs are looked at (a run's prefix names the worker that made it): tests on other workers
    keep their records in folders of their own (ENILAB_RUN_DIR) while their namespaces are up."""
    def prefixes() -> set[str]:
        return {f.name.removesuffix(".json") for f in (runs.RUN_DIR / "runs").glob("enl-*.json")}

    before = prefixes()
    names = [n for n in netns.list_names() if n.startswith(runs.worker_prefix())]
    recorded = before | prefixes()
    return [n for n in names if not any(n.startswith(p + "-") for p in recorded)]


@pytest.mark.netns
@pytest.mark.parametrize("how", ["up", "run --keep"])
def test_a_run_past_its_event_limit_exits_2_and_leaves_nothing_up(tmp_path, how):
    """A subnet too small for the pool: the node polls every 30 s through ten years, far past the run's
    500,000 events. Whether kept (`up`, `run --keep`) or not, the run is torn down, its record too."""
    tag = uuid.uuid4().hex[:6]
    name, node = f"rw-{tag}", f"rw{tag}"
    topo = tmp_path / "t.yaml"
    topo.write_text(RUNAWAY.format(name=name, node=node))
    proc = subprocess.Popen([*ENILAB, *how.split()[:1], str(topo), *how.split()[1:]], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "step 2 (advance): the run made more than 500,000 events" in err
    assert "Traceback" not in err and len(err) < 1024
    assert not unrecorded_namespaces()
    # no record kept for `enilab clean` either: `run` owns its run, `up`'s controller names the cluster
    records = [json.loads(f.read_text()) for f in (runs.RUN_DIR / "runs").glob("enl-*.json")]
    assert not [r for r in records if r.get("pid") == proc.pid or r.get("cluster") == name]
    if how == "up":
        assert "no cluster named" in enilab("status", "--name", name).stderr


# -- private state whatever the umask -------------------------------------------------------------------
def _modes(top: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(top.lstat().st_mode)}
    for path in top.rglob("*"):
        out[str(path.relative_to(top))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def _connect_as_nobody(path: Path) -> str:
    """Fork; the child drops to `nobody` and tries the socket. What happened, as the child saw it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no Python-level cleanup, only the attempt and its report
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
            what = "connected"
        except OSError as err:
            what = type(err).__name__
        os.write(write, what.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        return f.read().decode()


@pytest.mark.netns
def test_under_umask_000_state_is_private_and_another_user_cannot_connect(tmp_path):
    run_dir = Path(f"/run/enilab-test-{uuid.uuid4().hex[:6]}")  # under /run (0755), as the real one
    env = {"ENILAB_RUN_DIR": str(run_dir)}
    name, topo = topology(tmp_path)
    up = enilab("up", str(topo), env=env, umask=0)
    assert up.returncode == 0, up.stderr
    try:
        folder = run_dir / "clusters" / name
        modes = _modes(run_dir)
        assert {p for p, m in modes.items() if (run_dir / p).is_dir() and m != 0o700} == set(), modes
        assert {p for p, m in modes.items() if not (run_dir / p).is_dir() and m != 0o600} == set(), modes
        assert {"clusters/" + name + "/" + f for f in ("control.sock", "node-1.sock", "controller.log", "lock",
                                                          "owner.json")} <= set(modes)
        assert any(p.startswith("runs/enl-") for p in modes)
        assert _connect_as_nobody(folder / "control.sock") == "PermissionError"
        assert _connect_as_nobody(folder / "node-1.sock") == "PermissionError"
    finally:
        down = enilab("down", "--name", name, env=env)
    assert down.returncode == 0, down.stderr
    for sub in ("clusters", "runs"):
        (run_dir / sub).rmdir()  # empty: the cluster's files and its run record went with it
    run_dir.rmdir()


def test_checkpoints_and_sockets_are_private_under_umask_000(tmp_path):
    old = os.umask(0)
    try:
        FileCheckpoint(tmp_path / "state" / "node-1.json").save({"version": 1})
        server = RpcServer(tmp_path / "sockets" / "a.sock", lambda m, p: None)
        server.close()
        server = RpcServer(tmp_path / "a.sock", lambda m, p: None)
        sock_mode = stat.S_IMODE((tmp_path / "a.sock").stat().st_mode)
        server.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "node-1.json").stat().st_mode) == 0o600
    assert sock_mode == 0o600


def test_a_state_folder_that_is_a_symlink_is_refused_and_left_alone(tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o755)
    os.chmod(tmp_path / "elsewhere", 0o755)
    (tmp_path / "run").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NotPrivate):
        private_dir(tmp_path / "run")
    assert stat.S_IMODE((tmp_path / "elsewhere").stat().st_mode) == 0o755


# -- a dead controller's name is reusable; a client whose controller dies says so in one line ------------
@pytest.mark.netns
@pytest.mark.parametrize("then", ["up", "down", "clean"])
def test_after_kill_9_up_down_and_clean_remove_what_the_dead_controller_left(tmp_path, then):
    env = {"ENILAB_CLUSTERS_DIR": str(tmp_path / "clusters")}  # a clean elsewhere would take our dead cluster
    name, topo = topology(tmp_path)
    up = enilab("up", str(topo), env=env)
    assert up.returncode == 0, up.stderr
    prefix = json.loads(enilab("status", "--name", name, "--json", env=env).stdout)["prefix"]
    pid = controller_pid(up.stdout)
    kill_hard(pid)
    status = enilab("status", "--name", name, env=env)
    assert status.returncode == 2 and "died" in status.stderr and "Traceback" not in status.stderr
    out = enilab(then, *([str(topo)] if then == "up" else [] if then == "clean" else ["--name", name]), env=env)
    try:
        assert out.returncode == 0, out.stderr
        assert f"its controller (pid {pid}) had died" in out.stdout
        assert not mine(prefix) and not (runs.RUN_DIR / "runs" / f"{prefix}.json").exists()
        if then == "up":
            assert controllers_named(name) == [controller_pid(out.stdout)] != [pid]
    finally:
        if then == "up":  # the new controller goes whatever failed above (it lives in this test's folder)
            assert enilab("down", "--name", name, env=env).returncode == 0
    assert not (tmp_path / "clusters" / name).exists()


FAKE_CONTROLLER = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    from eni_core.rpc import RpcServer

    folder = Path(os.environ["ENILAB_RUN_DIR"]) / "clusters" / sys.argv[1]
    folder.mkdir(parents=True)
    def handle(method, params):
        if method == "ping":
            return {"pid": os.getpid()}
        os.kill(os.getpid(), signal.SIGKILL)  # dies in the middle of the request
    RpcServer(folder / "control.sock", handle).start()
    start = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]
    (folder / "owner.json").write_text(json.dumps({"pid": os.getpid(), "start": start, "files": []}))
    print("ready", flush=True)
    time.sleep(60)
""")


def test_a_client_whose_controller_dies_mid_request_says_so_in_one_line(tmp_path):
    env = {**os.environ, "ENILAB_RUN_DIR": str(tmp_path / "run")}
    fake = subprocess.Popen([sys.executable, "-c", FAKE_CONTROLLER, "doomed"], stdout=subprocess.PIPE, env=env)
    try:
        assert fake.stdout.readline() == b"ready\n"
        out = subprocess.run([*ENILAB, "status", "--name", "doomed"], capture_output=True, text=True, env=env,
                             timeout=60)
    finally:
        fake.kill()
        fake.wait()
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "cluster doomed's controller went away before answering" in out.stderr


# -- two `enilab up` of one name at once: exactly one wins -----------------------------------------------
@pytest.mark.netns
def test_a_controller_whose_enilab_up_is_gone_before_the_ready_line_takes_its_cluster_down(tmp_path):
    name, topo = topology(tmp_path)
    proc = subprocess.Popen([*CONTROLLER, str(topo), "--name", name], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    proc.stdout.close()  # as `enilab up` killed while the cluster comes up: the ready line has no reader
    assert proc.wait(timeout=120) == 1
    assert list(controller.CLUSTERS.glob(f"{name}/*")) == []  # no lock, owner record or log left
    records = []
    for path in (runs.RUN_DIR / "runs").glob("enl-*.json"):
        with contextlib.suppress(OSError, ValueError):
            records.append(json.loads(path.read_text()))
    assert not [r for r in records if isinstance(r, dict) and r.get("cluster") == name]  # its run removed
    assert enilab("status", "--name", name).returncode == 2


@pytest.mark.netns
def test_two_ups_of_one_name_at_once_exactly_one_wins(tmp_path):
    name, topo = topology(tmp_path)
    procs = [subprocess.Popen([*ENILAB, "up", str(topo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    try:
        assert sorted(rc for rc, _, _ in results) == [0, 2], results
        loser = next(err for rc, _, err in results if rc == 2)
        assert "is up already" in loser and "Traceback" not in loser
        winner = next(out for rc, out, _ in results if rc == 0)
        assert controllers_named(name) == [controller_pid(winner)]
    finally:
        assert enilab("down", "--name", name).returncode == 0
    assert controllers_named(name) == []
