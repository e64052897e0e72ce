"""`enilab clean` acts only on records this user wrote where only this user can write: a record that is a
symlink, a FIFO or another user's, a run folder another user owns, a dead cluster's owner record naming a
live run, and an engine record pointing at a folder that is not the run's are all refused (a red-team pass
found each one acted on)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from eni_core import netns
from eni_core.private import NotPrivate
from testbed.apps import cli, controller
from testbed.world import engine, runs
from tests.helpers import cmdline

DEAD = {"pid": 999_999_999, "start": "0"}


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUN_DIR", tmp_path)
    (tmp_path / "runs").mkdir()
    deleted: list[str] = []
    monkeypatch.setattr(netns, "exists", lambda name: True)
    monkeypatch.setattr(netns, "delete_many", lambda names: deleted.extend(names) or list(names))
    return tmp_path, deleted


def _record(folder, prefix: str, **owner) -> str:
    text = json.dumps({"prefix": prefix, **(owner or DEAD), "namespaces": [f"{prefix}-n1"]})
    (folder / f"{prefix}.json").write_text(text)
    return text


def test_clean_acts_on_no_record_that_is_a_symlink_a_fifo_or_another_users(run_dir, tmp_path_factory):
    top, deleted = run_dir
    records = top / "runs"
    _record(records, "enl-444444")  # a dead run's own record: removed
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (records / "enl-111111.json").symlink_to(elsewhere / "r.json")
    _record(elsewhere, "enl-111111")
    (elsewhere / "enl-111111.json").rename(elsewhere / "r.json")
    os.mkfifo(records / "enl-222222.json")  # read as a record, it would block clean for ever
    others = ["enl-111111.json", "enl-222222.json"]
    if os.geteuid() == 0:
        _record(records, "enl-333333")
        os.chown(records / "enl-333333.json", 65534, 65534)  # nobody's
        others.append("enl-333333.json")
    report = runs.clean()
    assert deleted == ["enl-444444-n1"] and sorted(report.skipped) == others


def test_clean_refuses_a_run_folder_another_user_owns(run_dir):
    top, deleted = run_dir
    _record(top / "runs", "enl-555555")
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder to another user; the rootless pass checks the next test")
    os.chown(top / "runs", 65534, 65534)
    with pytest.raises(NotPrivate, match="not a folder of this user"):
        runs.clean()
    assert deleted == []


def test_clean_refuses_a_run_folder_that_is_a_symlink(tmp_path, monkeypatch):
    real = tmp_path / "real"
    (real / "runs").mkdir(parents=True)
    _record(real / "runs", "enl-666666")
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setattr(runs, "RUN_DIR", tmp_path / "link")
    with pytest.raises(NotPrivate):
        runs.clean()


def test_a_dead_clusters_owner_record_naming_a_live_run_removes_nothing_of_it(run_dir, monkeypatch):
    top, deleted = run_dir
    _record(top / "runs", "enl-777777", **runs.this_process())  # alive: this process
    clusters = top / "clusters"
    (clusters / "ghost").mkdir(parents=True)
    (clusters / "ghost" / "owner.json").write_text(json.dumps({**DEAD, "prefix": "enl-777777", "files": []}))
    monkeypatch.setattr(controller, "CLUSTERS", clusters)
    notes = controller.clean_clusters()
    assert deleted == [] and (top / "runs" / "enl-777777.json").exists()
    assert "removed the 0 namespaces" in notes["ghost"]


def test_an_engine_record_pointing_outside_the_run_purges_nothing_and_no_look_alike_process_is_taken(
        run_dir, monkeypatch):
    top, _ = run_dir
    purged = []
    monkeypatch.setattr(engine, "purge_state", purged.append)
    victim = top / "victim" / "enl-888888"
    engine.purge({"engine": {"kind": "podman", "state": str(victim)}}, "enl-888888")
    assert purged == []
    own = engine.own_state("enl-888888")
    engine.purge({"engine": {"kind": "podman", "state": str(own)}}, "enl-888888")
    assert purged == [own]
    own.mkdir(parents=True, exist_ok=True)
    procs = {what: subprocess.Popen(["sh", "-c", "sleep 30", arg])
             for what, arg in [("reader", f"{own}.names"), ("look-alike", f"{own}-other"),
                               ("inside", f"--root={own}/root")]}
    try:
        deadline = time.monotonic() + 30
        for p in procs.values():  # until each has exec'd: a child just forked still shows its parent's cmdline
            while b"sleep 30" not in cmdline(p.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        found = set(engine._processes_naming(own))
        assert procs["inside"].pid in found and not {procs["reader"].pid, procs["look-alike"].pid} & found
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


@pytest.mark.netns
@pytest.mark.host_root("another user's process: only the host's root can start one")
def test_another_users_process_naming_the_runs_folder_is_never_taken(run_dir):
    """Anyone may put any path in their arguments: `clean`, run as root, kills only processes of the folder's
    owner that name it, never another user's."""
    own = engine.own_state("enl-777778")
    own.mkdir(parents=True, exist_ok=True)
    procs = {who: subprocess.Popen(["sh", "-c", "sleep 30", f"--root={own}/root"], user=uid)
             for who, uid in [("owner", own.stat().st_uid), ("other", 65534)]}
    try:
        deadline = time.monotonic() + 30
        for p in procs.values():
            while b"sleep 30" not in cmdline(p.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        found = set(engine._processes_naming(own))
        assert procs["owner"].pid in found and procs["other"].pid not in found
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_clean_removes_the_temp_files_a_killed_writer_left_and_no_live_writers(run_dir, monkeypatch):
    top, _ = run_dir
    records = top / "runs"
    _record(records, "enl-999999")
    (records / ".enl-999999.json.k1ll3d00").write_text("{")  # the dead run's header rewrite, half-done
    (records / ".enl-aaaaaa.json.k1ll3d00").write_text("{")  # a first header, never renamed: no record
    (records / ".enl-bbbbbb.json.wr1t1ng0").write_text("{")  # the same, being written right now
    hour_ago = time.time() - 3600
    os.utime(records / ".enl-aaaaaa.json.k1ll3d00", (hour_ago, hour_ago))
    runs.clean()
    assert sorted(p.name for p in records.iterdir()) == [".enl-bbbbbb.json.wr1t1ng0"]
    clusters = top / "clusters"
    (clusters / "dead").mkdir(parents=True)
    (clusters / "dead" / "owner.json").write_text(json.dumps({**DEAD, "files": []}))
    (clusters / "dead" / ".owner.json.k1ll3d00").write_text("{")
    monkeypatch.setattr(controller, "CLUSTERS", clusters)
    controller.clean_clusters()
    assert not (clusters / "dead").exists()  # the temp file kept the folder for ever before


def test_one_odd_cluster_folder_is_named_and_left_and_the_others_still_cleaned(run_dir, monkeypatch, tmp_path):
    top, _ = run_dir
    clusters = top / "clusters"
    for name in ("linked", "fifo", "dead"):
        (clusters / name).mkdir(parents=True)
    (clusters / "linked" / "owner.json").write_text(json.dumps({**DEAD, "files": []}))
    (clusters / "linked" / "lock").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(clusters / "fifo" / "owner.json")  # read as the owner record, it would block clean
    (clusters / "dead" / "owner.json").write_text(json.dumps({**DEAD, "files": []}))
    monkeypatch.setattr(controller, "CLUSTERS", clusters)
    notes = controller.clean_clusters()
    assert "left alone" in notes["linked"] and "fifo" not in notes and "had died" in notes["dead"]
    assert not (clusters / "dead").exists() and (clusters / "linked" / "lock").is_symlink()


def test_a_controller_names_its_run_in_the_owner_record_before_its_backend_makes_anything(run_dir, monkeypatch,
                                                                                          tmp_path):
    # a controller killed while its backend started (the containers backend's engine takes seconds) left a
    # run that `enilab down` did not know of: "removed the 0 namespaces", the podman service still running
    monkeypatch.setattr(controller, "CLUSTERS", tmp_path / "clusters")
    folder = controller.ClusterFolder("kd")
    assert folder.lock()
    folder.claim()
    seen = {}

    def backend(name, run):
        seen.update(owner=folder.owner()["prefix"], run=run.prefix)
        raise RuntimeError("the engine did not start")

    monkeypatch.setattr(controller, "make_backend", backend)
    with pytest.raises(RuntimeError):
        controller.Controller("default", folder)
    folder.release()
    assert seen["owner"] == seen["run"]
    assert not list((tmp_path / "runs").iterdir())  # a backend that failed leaves no record behind


def _full(path, data):
    """write_atomic onto a full disk: /dev/full fails every write with ENOSPC."""
    Path("/dev/full").write_text(data)


@pytest.mark.netns  # `enilab run` goes as far as the netns backend, which needs root (of a user namespace, at least)
def test_a_run_whose_record_cannot_be_written_says_so_in_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A full disk under the run records: the header cannot be written, or the journal line that comes before
    the first namespace cannot. `enilab run` says so in one line and exits 2; no record and no namespace is
    left (the header written before the journal failed went with the run)."""
    monkeypatch.setattr(runs, "RUN_DIR", tmp_path)
    with monkeypatch.context() as full:
        full.setattr(runs, "write_atomic", _full)
        with pytest.raises(runs.RecordError, match="No space left on device"):
            runs.Run.new()
    assert not list((tmp_path / "runs").iterdir())
    monkeypatch.setattr(runs, "open_private", lambda path: os.open("/dev/full", os.O_WRONLY | os.O_CLOEXEC))
    assert cli.main(["run", "rp-filter-lesson"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the record of run" in err and "No space left on device" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "runs").iterdir())
    assert not [n for n in netns.list_names() if n.startswith(runs.CREATED[-1] + "-")]


def test_a_controller_that_cannot_write_its_owner_record_says_so_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """`enilab up` on a full disk: the controller answers why in its one line (exit 2) and takes its lock and
    folder with it, instead of dying with a traceback and leaving both behind."""
    monkeypatch.setattr(controller, "CLUSTERS", tmp_path)
    monkeypatch.setattr(controller, "write_atomic", _full)
    assert controller.main(["default", "--name", "full"]) == 2
    answer = json.loads(capsys.readouterr().out.splitlines()[0])
    assert "No space left on device" in answer["error"], answer
    assert not list(tmp_path.iterdir())


def test_a_new_run_never_takes_a_prefix_a_record_or_a_namespace_holds(run_dir, monkeypatch):
    run_dir, _ = run_dir
    """Prefixes are six random hex digits: a draw that another run's record (of this run directory) or a
    namespace of the host (another run directory's run, made by root) holds is drawn again."""
    draws = iter(["aaaaaa", "bbbbbb", "cccccc"])
    first = runs.worker_prefix()  # `enl-`, or under xdist `enl-gw0-`
    monkeypatch.setattr(runs.secrets, "token_hex", lambda n: next(draws))
    monkeypatch.setattr(runs.netns, "list_names", lambda: [f"{first}bbbbbb-n1", f"{first}dddddd-n1"])
    os.chmod(run_dir, 0o700)
    os.chmod(run_dir / "runs", 0o700)
    (run_dir / "runs" / f"{first}aaaaaa.json").write_text("{}")  # a live run's, claimed a moment ago
    os.chmod(run_dir / "runs" / f"{first}aaaaaa.json", 0o600)
    run = runs.Run.new()
    assert run.prefix == f"{first}cccccc" and (run_dir / "runs" / f"{first}aaaaaa.json").read_text() == "{}"
    run.remove()


def test_clean_removes_a_claimed_record_its_maker_was_killed_before_writing_only_once_it_is_old(run_dir):
    run_dir, _ = run_dir
    claim = run_dir / "runs" / "enl-eeeeee.json"
    claim.touch(mode=0o600)
    assert runs.clean().skipped == ["enl-eeeeee.json"] and claim.exists()  # it may be a run starting now
    os.utime(claim, (time.time() - runs.ORPHAN_TEMP_S - 1,) * 2)
    assert runs.clean().skipped == [] and not claim.exists()
