"""Shared by the containers-backend tests: an engine or a reason, the CLI, and what a run leaves behind."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eni_core import netns
from testbed.world.runs import RUN_DIR
from tests.helpers import ROOT

ENILAB = [sys.executable, "-m", "testbed.apps.cli"]
# one node, one subnet, a VPC host: the smallest cluster whose pods are containers
SMALL = {"name": "small", "backend": "containers",
         "cluster": {"subnets": [{"id": "subnet-a", "cidr": "10.0.1.0/24",
                                  "hosts": [{"name": "db-1", "ip": "10.0.1.200"}]}],
                     "nodes": [{"name": "node-1", "subnets": ["subnet-a"], "max_enis": 2, "ips_per_eni": 4}]},
         "steps": [{"op": "create_pods", "node": "node-1", "count": 2}]}


def need_engine() -> None:
    """Skip (fail under ENILAB_REQUIRE_ROOT=1) unless a Docker API engine can be had."""
    if os.environ.get("DOCKER_HOST"):
        return
    missing = [pkg for tool, pkg in (("podman", "podman"), ("runc", "runc"), ("busybox", "busybox-static"))
               if shutil.which(tool) is None]
    if missing:
        why = (f"the containers backend needs an engine: DOCKER_HOST, or {', '.join(missing)} "
               "(`bash ci/setup.sh` installs them)")
        if os.environ.get("ENILAB_REQUIRE_ROOT") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


def enilab(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ENILAB, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"enilab {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


def leftovers(prefix: str, containers: tuple[str, ...] = ()) -> dict[str, list]:
    """What a run named `prefix` left: processes naming its state folder (the engine, conmon) or in the
    cgroup of one of its `containers` (the pods' own), their cgroups, mounts, namespaces, files."""
    state = RUN_DIR / "runs" / prefix
    procs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cgroup = (entry / "cgroup").read_text()
                if str(state).encode() in (entry / "cmdline").read_bytes() or any(c in cgroup for c in containers):
                    procs.append(int(entry.name))
            except OSError:
                continue
    cgroups = [str(d) for c in containers for d in Path("/sys/fs/cgroup").glob(f"*/libpod_parent/libpod-{c}")]
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines() if prefix in line]
    return {"processes": procs, "cgroups": cgroups, "mounts": mounts,
            "namespaces": [n for n in netns.list_names() if n.startswith(prefix + "-")],
            "files": [str(p) for p in (state, RUN_DIR / "runs" / f"{prefix}.json") if p.exists()]}


def nothing_left(prefix: str, containers: tuple[str, ...] = ()) -> dict[str, list]:
    found = leftovers(prefix, containers)
    return {k: v for k, v in found.items() if v}
