"""The ipamd datastore: atomic checkpoints, rollback when a write fails, and a faithful round trip."""
from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from eni_core.datastore import Attachment, Datastore, FileCheckpoint
from eni_core.model import Eni


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
