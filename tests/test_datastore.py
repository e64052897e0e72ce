"""The ipamd datastore: atomic checkpoints, rollback when a write fails, and a faithful round trip."""
from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from eni_core.datastore import Datastore, FileCheckpoint
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
