"""Data model of the shared-ENI mode: subnets, ENIs and their secondary IPs, node limits, pool config."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

__all__ = ["Eni", "NodeLimits", "PoolConfig", "Subnet", "Tally", "eni_table"]

ROUTE_TABLE_OFFSET = 2000


def eni_table(ifindex: int) -> int:
    """Policy-routing table of an ENI: its link index + 2000 (the seed: eth1 at index 3 uses table 2003).

    >>> eni_table(3)
    2003
    """
    return ifindex + ROUTE_TABLE_OFFSET


@dataclass(frozen=True)
class Subnet:
    """A VPC subnet. `reserved` counts the addresses nobody may bind: network, gateway(s), broadcast."""

    id: str
    cidr: IPv4Network
    reserved: int = 3

    @property
    def gateway(self) -> IPv4Address:
        return self.cidr.network_address + 1

    @property
    def size(self) -> int:
        return self.cidr.num_addresses


@dataclass(frozen=True, slots=True)
class NodeLimits:
    """What the instance type allows: secondary ENIs (the primary `eth0` is not counted) and IPs per ENI."""

    max_enis: int
    ips_per_eni: int

    @property
    def max_bindable(self) -> int:
        """The seed: max bindable IPs of a node = max bound ENIs x bindable IPs of one ENI."""
        return self.max_enis * self.ips_per_eni


@dataclass(frozen=True)
class PoolConfig:
    """The node IP pool's knobs. The product defaults: 5 and 5 pre-bound, one release every 2 minutes."""

    min_prebound: int = 5
    max_prebound: int = 5
    release_interval: float = 120.0
    quick_release: bool = False

    def __post_init__(self) -> None:
        if self.min_prebound < 1:
            raise ValueError(
                f"min_prebound must be at least 1, not {self.min_prebound}: the scheduler places a pod only "
                "where eni-ip has a free IP and Pending pods pull no IPs, so with 0 no pod would ever start"
            )
        if self.min_prebound > self.max_prebound:
            raise ValueError(
                f"min_prebound ({self.min_prebound}) is above max_prebound ({self.max_prebound}); "
                "the pool could never settle"
            )
        if self.release_interval <= 0:
            raise ValueError("release_interval must be a positive number of seconds")


@dataclass(slots=True)
class Tally:
    """Counts over a node's ENIs: secondary IPs bound, those allocated to pods, and ENIs with no IP.

    The ENIs of a datastore keep its tally as they change (see `Eni.tally`), so that the pool's sums,
    asked on every pod event, read one object where a sum would read every ENI and its table of IPs,
    each a cache miss in a large cluster. `of` counts them afresh.
    """

    bound: int = 0
    allocated: int = 0
    empty: int = 0

    @classmethod
    def of(cls, enis: Iterable[Eni]) -> Tally:
        tally = cls()
        for e in enis:
            tally.add(e, 1)
        return tally

    def add(self, eni: Eni, sign: int) -> None:
        """Count an ENI in (`sign` 1) or out (-1)."""
        self.bound += sign * len(eni.ips)
        self.allocated += sign * eni.allocated
        self.empty += sign * (not eni.ips)

    @property
    def idle(self) -> int:
        return self.bound - self.allocated


_ABSENT = object()


@dataclass(slots=True)
class Eni:
    """A secondary ENI bound to a node, as the node's ipamd knows it.

    `ips` maps every bound secondary IP to the pod holding it (None: idle), in the order they were bound.
    `seq` orders ENIs by age: lower is older. `tally`, set while the ENI is in a datastore, is the
    datastore's count of its ENIs' IPs, which every change below keeps.
    """

    id: str
    subnet_id: str
    mac: str
    primary_ip: IPv4Address
    device_index: int
    seq: int
    ips: dict[IPv4Address, str | None] = field(default_factory=dict)
    allocated: int = 0
    tally: Tally | None = field(default=None, compare=False, repr=False)

    @property
    def ifname(self) -> str:
        """Its interface on the node: `eth` + its device index (the primary ENI is `eth0`).

        >>> Eni("eni-1", "subnet-a", "52:54:00:00:00:01", IPv4Address("10.0.1.4"), 2, 0).ifname
        'eth2'
        """
        return f"eth{self.device_index}"

    def idle_ips(self) -> list[IPv4Address]:
        return [ip for ip, pod in self.ips.items() if pod is None]

    def idle_at(self, n: int) -> IPv4Address:
        """`idle_ips()[n]`, reading the IPs up to it only (each IP read is a cache miss in a large cluster).

        >>> e = Eni("eni-1", "subnet-a", "52:54:00:00:00:01", IPv4Address("10.0.1.4"), 2, 0)
        >>> for n in range(2, 5): e.bind(IPv4Address(f"10.0.1.{n}"))
        >>> e.assign(IPv4Address("10.0.1.2"), "pod-a"); e.idle_at(1)
        IPv4Address('10.0.1.4')
        """
        for ip, pod in self.ips.items():
            if pod is None:
                if n == 0:
                    return ip
                n -= 1
        raise IndexError(f"{self.id} has fewer idle IPs")

    def newest_idle(self, count: int) -> list[IPv4Address]:
        """`idle_ips()[::-1][:count]`: up to `count` idle IPs, the last bound first, reading the IPs from
        the newest down to the last one taken only."""
        newest: list[IPv4Address] = []
        if count > 0:
            for ip, pod in reversed(self.ips.items()):
                if pod is None:
                    newest.append(ip)
                    if len(newest) == count:
                        break
        return newest

    def assign(self, ip: IPv4Address, pod: str) -> None:
        if self.ips.get(ip, "missing") is not None:
            raise ValueError(f"{ip} is not an idle IP of {self.id}")
        self.ips[ip] = pod
        self.allocated += 1
        if self.tally is not None:
            self.tally.allocated += 1

    def unassign(self, ip: IPv4Address) -> None:
        if self.ips.get(ip) is None:
            raise ValueError(f"{ip} is not allocated on {self.id}")
        self.ips[ip] = None
        self.allocated -= 1
        if self.tally is not None:
            self.tally.allocated -= 1

    def bind(self, ip: IPv4Address) -> None:
        ips = self.ips
        before = len(ips)
        ips.setdefault(ip, None)
        if self.tally is not None and len(ips) != before:
            self.tally.bound += 1
            self.tally.empty -= not before

    def unbind(self, ip: IPv4Address) -> None:
        if self.ips.get(ip) is not None:
            raise ValueError(f"{ip} on {self.id} is held by pod {self.ips[ip]}; only idle IPs are released")
        if self.ips.pop(ip, _ABSENT) is not _ABSENT and self.tally is not None:
            self.tally.bound -= 1
            self.tally.empty += not self.ips
