"""The cluster specification: what a topology or scenario file's `cluster:` section describes."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address

from eni_core.model import NodeLimits, PoolConfig, Subnet
from testbed.world.faults import FaultConfig

__all__ = ["ClusterSpec", "HostSpec", "Mode", "NodeSpec"]


class Mode(StrEnum):
    """How a cluster's pods get IPs: a warm pool per node (the default), or claims that keep an address."""

    SHARED_ENI = "shared-eni"
    STATIC_IP = "static-ip"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    subnets: tuple[str, ...]
    max_enis: int
    ips_per_eni: int

    @property
    def limits(self) -> NodeLimits:
        return NodeLimits(self.max_enis, self.ips_per_eni)


@dataclass(frozen=True)
class HostSpec:
    """A VPC instance that is not a node (a database, say): something for pods to talk to."""

    name: str
    subnet: str
    ip: IPv4Address


@dataclass(frozen=True)
class ClusterSpec:
    subnets: tuple[Subnet, ...]
    nodes: tuple[NodeSpec, ...] = ()
    hosts: tuple[HostSpec, ...] = ()
    mode: Mode = Mode.SHARED_ENI
    pool: PoolConfig = field(default_factory=PoolConfig)
    claim_expired_duration: float | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    seed: int = 0
