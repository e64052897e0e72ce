"""The ipamd datastore: atomic checkpoints, rollback when a write fails, and a faithful round trip."""
from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eni_core.datastore import Attachment, Datastore, FileCheckpoint
from eni_core.model import Eni, Tally


def store(tmp_path) -> Datastore:
    ds = Datastore("node-1", FileCheckpoint(tmp_path / "node-1.json"))
    eni = Eni("eni-1", "subnet-a", "52:54:00:00:00:01", IPv4Address("10.0.1.2"), 1, 0)
    for i in range(3, 6):
        eni.bind(IPv4Address(f"10.0.1.{i}"))
    ds.add_eni(eni)
    ds.allocate("default/web-0", eni, IPv4Address("10.0.1.4"))
    ds.release_due = 120.0
    ds.commit()
    return ds


def test_checkpoint_round_trips_enis_allocations_and_timers(tmp_path):
    ds = store(tmp_path)
    again = Datastore("node-1", FileCheckpoint(tmp_path / "node-1.json"))
    assert again.restore()
    assert again.to_dict() == ds.to_dict()
    assert again.pods["default/web-0"].ip == IPv4Address("10.0.1.4")
    assert again.enis["eni-1"].allocated == 1


def test_checkpoint_leaves_no_temp_file(tmp_path):
    store(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["node-1.json"]


def test_failed_checkpoint_write_rolls_memory_back(tmp_path, monkeypatch):
    ds = store(tmp_path)
    before = ds.to_dict()

    def disk_full(data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ds.checkpoint, "save", disk_full)
    ds.allocate("default/web-1", ds.enis["eni-1"], IPv4Address("10.0.1.5"))
    with pytest.raises(OSError):
        ds.commit()
    assert ds.to_dict() == before and "default/web-1" not in ds.pods


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    (tmp_path / "node-1.json").write_text('{"version": 99}')
    with pytest.raises(ValueError, match="format 99"):
        Datastore("node-1", FileCheckpoint(tmp_path / "node-1.json")).restore()


class FailingDisk:
    """Makes `os.fsync` or `os.replace` of the checkpoint writer fail with ENOSPC on chosen calls."""

    def __init__(self, monkeypatch, what: str, failing: set[int]) -> None:
        import eni_core.datastore as module

        self.calls = 0
        self.failing = failing
        real = getattr(module.os, what)

        def flaky(*args):
            self.calls += 1
            if self.calls in self.failing:
                raise OSError(28, "No space left on device")
            return real(*args)

        monkeypatch.setattr(module.os, what, flaky)


def _fresh(tmp_path) -> tuple[Datastore, Eni]:
    ds = Datastore("node-1", FileCheckpoint(tmp_path / "node-1.json"))
    assert not ds.restore()
    eni = Eni("eni-1", "subnet-a", "52:54:00:00:00:01", IPv4Address("10.0.1.2"), 1, 0)
    eni.bind(IPv4Address("10.0.1.3"))
    ds.add_eni(eni)
    ds.allocate("default/web-0", eni, IPv4Address("10.0.1.3"))
    return ds, eni


def _on_disk(tmp_path) -> dict | None:
    again = Datastore("node-1", FileCheckpoint(tmp_path / "node-1.json"))
    return again.to_dict() if again.restore() else None


@pytest.mark.parametrize("what", ["fsync", "replace"])
def test_a_failed_first_ever_commit_leaves_memory_as_empty_as_the_disk(tmp_path, monkeypatch, what):
    ds, _ = _fresh(tmp_path)
    FailingDisk(monkeypatch, what, {1})
    with pytest.raises(OSError, match="No space"):
        ds.commit()
    assert ds.pods == {} and ds.enis == {} and ds.next_seq == 0
    assert _on_disk(tmp_path) is None  # a restart finds nothing either: memory and disk agree
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp file left behind


@pytest.mark.parametrize("what", ["fsync", "replace"])
def test_a_failed_later_commit_rolls_back_to_what_a_restart_reads(tmp_path, monkeypatch, what):
    ds, eni = _fresh(tmp_path)
    ds.commit()
    FailingDisk(monkeypatch, what, {1})
    eni.bind(IPv4Address("10.0.1.4"))
    ds.allocate("default/web-1", eni, IPv4Address("10.0.1.4"))
    with pytest.raises(OSError):
        ds.commit()
    assert "default/web-1" not in ds.pods and ds.to_dict() == _on_disk(tmp_path)


def test_an_add_retried_after_the_disk_was_full_is_persisted_and_survives_a_restart(tmp_path, monkeypatch):
    from eni_core.clock import SimClock
    from eni_core.ipamd import Ipamd
    from eni_core.model import NodeLimits, PoolConfig
    from testbed.world.vpc import SimVpc
    from tests.helpers import subnet

    vpc = SimVpc([subnet()])
    vpc.add_instance("node-1", 3, 10)

    def ipamd() -> Ipamd:
        return Ipamd("node-1", vpc=vpc, limits=NodeLimits(3, 10), subnets=["subnet-a"], clock=SimClock(),
                     config=PoolConfig(), store=Datastore("node-1", FileCheckpoint(tmp_path / "node-1.json")))

    first = ipamd()
    first.recover()
    disk = FailingDisk(monkeypatch, "replace", {1})  # the very first commit: the new ENI
    with pytest.raises(OSError):
        first.reconcile()
    assert first.enis == [] and _on_disk(tmp_path) is None
    disk.failing = set()  # space is back
    first.reconcile()  # the re-sync adopts the ENI the failed commit forgot; the pool fills up
    attached = {e.record.id for e in vpc.enis.values() if e.record.attached_to == "node-1"}
    assert set(first.store.enis) == attached and len(attached) == 1  # nothing created twice, nothing leaked
    disk.failing = {disk.calls + 1}  # full again, for the ADD's own commit
    with pytest.raises(OSError):
        first.assign("default/web-0")
    assert first.lookup("default/web-0") is None  # not answered from memory on the retry
    alloc = first.assign("default/web-0")
    assert alloc is not None
    assert first.assign("default/web-0") == alloc  # a retried ADD: the same answer ...
    restarted = ipamd()
    restarted.recover()
    assert restarted.lookup("default/web-0") == alloc  # ... and it is on disk: never given twice


def test_releasing_a_pod_drops_its_attachment_record_and_leaves_the_others(tmp_path):
    ds = store(tmp_path)
    ds.free("default/web-0")  # the controller's pod: no attachment record was ever made
    assert ds.to_dict()["attachments"] == {} and ds.attachments == {}
    eni = ds.enis["eni-1"]
    wired = [Attachment("net", f"ctr{i}", "eth0") for i in range(2)]
    for att, ip in zip(wired, ("10.0.1.3", "10.0.1.5"), strict=True):
        ds.attachments[att.key] = att
        ds.allocate(att.key, eni, IPv4Address(ip))
    ds.free(wired[0].key)
    assert ds.attachments == {wired[1].key: wired[1]} and list(ds.pods) == [wired[1].key]


# -- the tally: counts the ENIs keep as they change, against counting them afresh ---------------------------

IPS = [IPv4Address(f"10.0.9.{i}") for i in range(1, 13)]
tally_op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3), st.lists(st.integers(0, 11), max_size=4)),
    st.tuples(st.just("remove"), st.integers(0, 3)),
    st.tuples(st.just("bind"), st.integers(0, 3), st.integers(0, 11)),
    st.tuples(st.just("unbind"), st.integers(0, 3), st.integers(0, 11)),
    st.tuples(st.just("allocate"), st.integers(0, 3), st.integers(0, 11)),
    st.tuples(st.just("free"), st.integers(0, 5)),
    st.tuples(st.just("commit"), st.booleans()),
    st.tuples(st.just("restart")),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(tally_op, max_size=40))
def test_the_tally_is_the_count_of_the_enis_through_every_change_rollback_and_restart(tmp_path_factory, ops):
    path = tmp_path_factory.mktemp("tally") / "node-1.json"
    ds, gone, pods = Datastore("node-1", FileCheckpoint(path)), [], 0
    for o in ops:
        eni_id = f"eni-{o[1]}" if len(o) > 1 and not isinstance(o[1], bool) else None
        eni = ds.enis.get(eni_id) if eni_id else None
        if o[0] == "add" and eni is None:
            new = Eni(eni_id, "subnet-a", "52:54:00:00:00:01", IPv4Address("10.0.9.200"), 1, o[1])
            for i in o[2]:
                new.bind(IPS[i])
            ds.add_eni(new)
        elif o[0] == "add":
            with pytest.raises(ValueError, match="in the datastore already"):
                ds.add_eni(eni)
        elif o[0] == "remove" and eni is not None and not eni.allocated:
            gone.append(ds.remove_eni(eni_id))
        elif o[0] == "bind" and eni is not None:
            eni.bind(IPS[o[2]])
        elif o[0] == "unbind" and eni is not None and eni.ips.get(IPS[o[2]]) is None:
            eni.unbind(IPS[o[2]])
        elif o[0] == "allocate" and eni is not None and eni.ips.get(IPS[o[2]], "absent") is None:
            pods += 1
            ds.allocate(f"pod-{pods}", eni, IPS[o[2]])
        elif o[0] == "free":
            ds.free(f"pod-{o[1]}")
        elif o[0] == "commit" and o[1]:
            ds.commit()
        elif o[0] == "commit":  # the disk refuses: memory goes back to what the disk holds
            with pytest.MonkeyPatch.context() as m:
                m.setattr(ds.checkpoint, "save", lambda data: (_ for _ in ()).throw(OSError(28, "full")))
                with pytest.raises(OSError):
                    ds.commit()
        elif o[0] == "restart":
            ds = Datastore("node-1", FileCheckpoint(path))
            ds.restore()
        assert ds.tally == Tally.of(ds.enis.values())
        assert all(e.tally is ds.tally for e in ds.enis.values())
    # an ENI out of the datastore keeps no tally: changing it changes no count
    for eni in gone:
        assert eni.tally is None
        eni.bind(IPv4Address("10.0.9.250"))
    assert ds.tally == Tally.of(ds.enis.values())


def test_an_eni_outside_a_datastore_counts_nothing_and_an_unbind_of_a_pods_ip_changes_nothing():
    eni = Eni("eni-1", "subnet-a", "52:54:00:00:00:01", IPv4Address("10.0.1.2"), 1, 0)
    for i in range(3, 6):
        eni.bind(IPv4Address(f"10.0.1.{i}"))
    ds = Datastore("node-1")
    ds.add_eni(eni)
    ds.allocate("pod-a", eni, IPv4Address("10.0.1.4"))
    assert ds.tally == Tally(3, 1, 0)
    with pytest.raises(ValueError, match="held by pod pod-a"):
        eni.unbind(IPv4Address("10.0.1.4"))
    assert list(eni.ips) == [IPv4Address(f"10.0.1.{i}") for i in range(3, 6)] and ds.tally == Tally(3, 1, 0)
    eni.unbind(IPv4Address("10.0.1.9"))  # not bound: nothing to count
    for i in (3, 5):
        eni.unbind(IPv4Address(f"10.0.1.{i}"))
    ds.free("pod-a")
    eni.unbind(IPv4Address("10.0.1.4"))
    assert ds.tally == Tally(0, 0, 1)


@pytest.mark.parametrize("text", [
    "{not json",
    "[1, 2]",
    '{"version": 2, "node": "node-1"}',
    # two ENIs of one id: the second would have hidden the first's pods
    '{"version": 2, "node": "node-1", "release_due": null, "next_seq": 2, "enis": ['
    '{"id": "eni-1", "subnet": "subnet-a", "mac": "52:54:00:00:00:01", "primary_ip": "10.0.1.2", '
    '"device_index": 1, "seq": 0, "ips": [["10.0.1.3", "pod-a"]]}, '
    '{"id": "eni-1", "subnet": "subnet-a", "mac": "52:54:00:00:00:01", "primary_ip": "10.0.1.2", '
    '"device_index": 1, "seq": 1, "ips": []}]}',
])
def test_the_agent_refuses_a_checkpoint_it_cannot_read_in_one_line_and_leaves_it(tmp_path, capsys, text):
    from eni_core import agent

    checkpoint = tmp_path / "node-1.json"
    checkpoint.write_text(text)
    code = agent.main(["--node", "node-1", "--vpc", str(tmp_path / "v.sock"), "--state", str(tmp_path),
                       "--listen", str(tmp_path / "a.sock"), "--subnet", "subnet-a", "--max-enis", "2",
                       "--ips-per-eni", "4"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"checkpoint {checkpoint} is not a datastore enilab can read" in err and "move it aside" in err
    # the checkpoint as it was, and beside it only the node's lock (free again: a second try is refused the same)
    assert checkpoint.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node-1.json", "node-1.lock"]
    assert agent.main(["--node", "node-1", "--vpc", str(tmp_path / "v.sock"), "--state", str(tmp_path),
                       "--listen", str(tmp_path / "a.sock"), "--subnet", "subnet-a", "--max-enis", "2",
                       "--ips-per-eni", "4"]) == 2
    assert "is not a datastore enilab can read" in capsys.readouterr().err
