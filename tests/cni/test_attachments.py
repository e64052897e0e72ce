"""Attachments in the node's datastore (no root): the spec's key, several per container, GC per network,
and checkpoints of the format before attachment records."""
from __future__ import annotations

import json
from ipaddress import IPv4Address

import pytest

from eni_core.agent import NodeAgent
from eni_core.cni import CniError, CniRequest, handle
from eni_core.datastore import Attachment, Datastore, FileCheckpoint, attachment_key
from eni_core.model import Eni
from tests.helpers import cluster


def agent() -> NodeAgent:
    c = cluster(min_prebound=6, max_prebound=6)
    c.sync_dataplane()
    return NodeAgent(c.nodes["node-1"].ipamd)


def add(a: NodeAgent, network: str, container: str, ifname: str = "eth0") -> dict:
    att = Attachment(network, container, ifname, f"/run/netns/{container}")
    return a.handle("add", {"pod": att.key, "attachment": att.to_dict()})


def test_two_attachments_of_one_container_get_two_ips_and_del_removes_only_its_own():
    a = agent()
    first, second = add(a, "net", "ctr"), add(a, "net", "ctr", "net1")
    assert first["ip"] != second["ip"] and first["new"] and second["new"]
    assert a.handle("del", {"pod": attachment_key("net", "ctr", "net1")})["released"] == second["ip"]
    assert a.handle("get", {"pod": attachment_key("net", "ctr", "eth0")})["ip"] == first["ip"]
    assert list(a.attachments()) == [attachment_key("net", "ctr", "eth0")]


def test_gc_releases_only_its_own_networks_attachments_missing_from_the_valid_list():
    a = agent()
    a.handle("add", {"pod": "default/web-0"})  # the controller's pod: never GC'd
    for network, container in [("net", "keep"), ("net", "drop"), ("other", "drop")]:
        add(a, network, container)
    gone = a.handle("gc", {"network": "net", "valid": [["keep", "eth0"]]})
    assert list(gone) == [attachment_key("net", "drop", "eth0")]
    assert set(a.ipamd.store.pods) == {"default/web-0", attachment_key("net", "keep", "eth0"),
                                       attachment_key("other", "drop", "eth0")}


@pytest.mark.parametrize("valid", ["abc", [{"containerID": 1, "ifname": "eth0"}], [["ctr", "eth0"]], {"a": 1}])
def test_gc_with_a_malformed_valid_attachments_list_is_a_decoding_failure_that_releases_nothing(valid):
    a = agent()
    add(a, "net", "ctr")
    req = CniRequest("GC", "", "", "", {}, {"cniVersion": "1.1.0", "name": "net", "cni.dev/valid-attachments": valid})
    with pytest.raises(CniError) as err:
        handle(req, lambda m, **p: a.handle(m, p), None)
    assert err.value.code == 6 and "valid-attachments" in err.value.msg
    assert attachment_key("net", "ctr", "eth0") in a.ipamd.store.pods


def test_an_attachment_record_survives_a_restart_and_goes_with_its_ip(tmp_path):
    ds = Datastore("node-1", FileCheckpoint(tmp_path / "node-1.json"))
    eni = Eni("eni-1", "subnet-a", "52:54:00:00:00:01", IPv4Address("10.0.1.2"), 1, 0)
    eni.bind(IPv4Address("10.0.1.4"))
    ds.add_eni(eni)
    att = Attachment("net", "ctr", "eth0", "/run/netns/x")
    ds.attachments[att.key] = att
    ds.allocate(att.key, eni, IPv4Address("10.0.1.4"))
    ds.commit()
    again = Datastore("node-1", FileCheckpoint(tmp_path / "node-1.json"))
    assert again.restore() and again.attachments == {att.key: att}
    again.free(att.key)
    assert again.attachments == {}


def test_a_format_1_checkpoint_keeps_its_ips_and_a_cni_del_by_container_id_finds_them(tmp_path):
    path = tmp_path / "node-1.json"
    path.write_text(json.dumps({"version": 1, "node": "node-1", "release_due": None, "next_seq": 1, "enis": [
        {"id": "eni-1", "subnet": "subnet-a", "mac": "52:54:00:00:00:01", "primary_ip": "10.0.1.2",
         "device_index": 1, "seq": 0, "ips": [["10.0.1.4", "abc123"], ["10.0.1.5", None]]}]}))
    c = cluster()
    ipamd = c.nodes["node-1"].ipamd
    ipamd.store = Datastore("node-1", FileCheckpoint(path))
    assert ipamd.store.restore() and ipamd.lookup("abc123").ip == IPv4Address("10.0.1.4")
    a = NodeAgent(ipamd)
    got = a.handle("get", {"pod": attachment_key("net", "abc123", "eth0"), "legacy": "abc123"})
    assert got["key"] == "abc123" and got["ip"] == "10.0.1.4"
    ipamd.store.commit()  # written as format 2: the legacy key is remembered across another restart
    again = Datastore("node-1", FileCheckpoint(path))
    assert again.restore() and again.legacy == {"abc123"}
    released = a.handle("del", {"pod": attachment_key("net", "abc123", "eth0"), "legacy": "abc123"})
    assert released == {"key": "abc123", "released": "10.0.1.4"}


# -- the executable's own JSON, checked against the json module ----------------------------------------
DOCUMENTS = [{"cniVersion": "1.0.0", "ips": [{"address": "10.0.1.7/32", "interface": 1}], "dns": {}},
             ["é\u2028\"\\", None, True, False, -3, 2.5], "plain", {}]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_clients_json_round_trips_like_the_json_module(document):
    from eni_core import cni_client

    assert json.loads(cni_client.dumps(document)) == document
    assert cni_client.loads(json.dumps(document)) == document


@pytest.mark.parametrize("text", ["{", '{"a": 1} x', '{"a": "unterminated', "", "nul\x00"])
def test_the_clients_json_refuses_what_the_json_module_refuses(text):
    from eni_core import cni_client

    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        cni_client.loads(text)


def test_the_installed_plugin_imports_nothing_of_the_project_nor_json_or_socket(tmp_path):
    import subprocess
    import sys

    from eni_core.cni import install_plugin

    plugin = install_plugin(str(tmp_path), sys.executable)
    proc = subprocess.run([sys.executable, "-IS", "-X", "importtime", plugin], input=b'{"cniVersion": "1.0.0"}',
                          capture_output=True, env={"CNI_COMMAND": "VERSION"})
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.decode().splitlines() if "|" in line}
    assert {"_json", "_socket"} <= imported
    assert not {"json", "socket", "re", "enum", "eni_core", "dataclasses", "typing"} & imported
    assert json.loads(proc.stdout) == {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.1.0"]}
    assert subprocess.run([plugin], input=b"{}", capture_output=True, env={"CNI_COMMAND": "VERSION"}).returncode == 0


def test_install_replaces_its_own_plugin_but_never_a_file_it_did_not_write(tmp_path):
    import subprocess
    import sys

    from eni_core.cni import install_plugin

    first = install_plugin(str(tmp_path), sys.executable)
    assert install_plugin(str(tmp_path), sys.executable) == first  # an upgrade rewrites it
    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "enilab-cni").write_text("#!/bin/sh\necho someone else's\n")
    proc = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "cni", "install", str(foreign)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "was not installed by enilab" in proc.stderr and "Traceback" not in proc.stderr
    assert (foreign / "enilab-cni").read_text() == "#!/bin/sh\necho someone else's\n"


INSTALL_BAD = [
    ("a" * 300, "a folder name in it is longer than 255 bytes"),
    ("half/" + "a" * 300, "a folder name in it is longer than 255 bytes"),
    ("afile", "afile is not a folder; give the folder to put enilab-cni in"),
    ("taken", "taken/enilab-cni is a folder; remove it or pick another folder"),
    ("/proc/enilab-no-such", "cannot install into '/proc/enilab-no-such'"),
]


@pytest.mark.parametrize(("folder", "message"), INSTALL_BAD, ids=["long", "half-long", "file", "taken", "proc"])
def test_install_into_a_folder_it_cannot_use_exits_2_and_makes_nothing(tmp_path, monkeypatch, capsys, folder, message):
    from testbed.apps import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "taken" / "enilab-cni").mkdir(parents=True)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert cli.main(["cni", "install", folder]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no half-made folder
