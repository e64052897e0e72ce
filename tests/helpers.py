"""Small builders shared by the tests."""
from __future__ import annotations

import shutil
import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

from eni_core.model import PoolConfig, Subnet
from testbed.world.cluster import Cluster
from testbed.world.spec import ClusterSpec, NodeSpec
from testbed.world.vpc import FaultConfig

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "fixtures" / "scenarios"


def build_wheel(folder: Path) -> Path:
    """enilab's wheel, built from a copy of the checkout in `folder` (building in the checkout would write
    build/ into it); the wheel's path."""
    source = folder / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("eni_core", "testbed", "fixtures"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = folder / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("enilab-*.whl")
    return wheel


def subnet(id_: str = "subnet-a", cidr: str = "10.0.1.0/24", reserved: int = 3) -> Subnet:
    return Subnet(id_, IPv4Network(cidr), reserved)


def cluster(
    *,
    subnets: tuple[Subnet, ...] | None = None,
    nodes: tuple[NodeSpec, ...] | None = None,
    max_enis: int = 3,
    ips_per_eni: int = 10,
    node_subnets: tuple[str, ...] | None = None,
    faults: FaultConfig | None = None,
    seed: int = 0,
    **pool,
) -> Cluster:
    subnets = subnets or (subnet(),)
    nodes = nodes or (NodeSpec("node-1", node_subnets or tuple(s.id for s in subnets), max_enis, ips_per_eni),)
    spec = ClusterSpec(subnets=subnets, nodes=nodes, pool=PoolConfig(**pool), faults=faults or FaultConfig(), seed=seed)
    return Cluster(spec)


def node_state(c: Cluster, name: str = "node-1") -> dict:
    return c.state()["nodes"][name]


def pool_events(c: Cluster, action: str | None = None) -> list[dict]:
    return [e for e in c.events.items if e["kind"] == "pool" and (action is None or e["action"] == action)]


def apply_churn(c: Cluster, op: tuple) -> None:
    """One generated churn op: ("create", node, count), ("delete", count: newest first), ("advance", s),
    ("set_node", node, max_enis)."""
    if op[0] == "create":
        c.create_pods(op[2], op[1])
    elif op[0] == "delete":
        for name in c.newest_pods(op[1]):
            c.delete_pod(name)
    elif op[0] == "advance":
        c.advance(op[1])
    elif op[0] == "set_node":
        c.set_node(op[1], max_enis=op[2])
    else:
        raise ValueError(f"unknown churn op {op!r}")


def cmdline(pid: int | str) -> bytes:
    """A process's command line, NUL-separated (b"" once it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
