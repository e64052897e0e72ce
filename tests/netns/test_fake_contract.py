"""The fake kernel's contract, checked against the real one: each refusal `tests/test_fake_kernel.py`
expects of FakeKernel, the real kernel gives through `NetlinkPort` (a fresh namespace per case)."""
from __future__ import annotations

import errno
import os
import subprocess

import pytest

from eni_core import netns
from eni_core.kernel import NetlinkPort
from tests.test_fake_kernel import REFUSALS

pytestmark = pytest.mark.netns


@pytest.fixture
def namespace():
    name = f"enilab-fake-contract-{os.getpid()}"
    netns.create(name)
    try:
        for ifname, index, up in (("eth1", 3, True), ("down0", 9, False)):
            subprocess.run(["ip", "-n", name, "link", "add", ifname, "index", str(index), "type", "veth", "peer",
                            "name", f"p{index}", "index", str(index * 10)], check=True)
            if up:
                subprocess.run(["ip", "-n", name, "link", "set", ifname, "up"], check=True)
        yield str(netns.path(name))
    finally:
        netns.delete(name)


@pytest.mark.parametrize("ops, err", REFUSALS, ids=lambda v: str(v[-1]) if isinstance(v, list) else errno.errorcode[v])
def test_the_real_kernel_refuses_as_the_fake_does(namespace, ops, err):
    kernel = NetlinkPort.open(namespace)
    try:
        errors = kernel.apply(ops, ignore=())
    finally:
        kernel.close()
    assert [errno.errorcode[e.errno] for e in errors] == [errno.errorcode[err]]
    assert errors[0].op == ops[-1]
