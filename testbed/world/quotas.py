"""The VPC's quotas of an instance (a node): how many secondary ENIs it may have, and IPs on each."""
from __future__ import annotations

from dataclasses import dataclass

from eni_core.ports import QuotaExceeded

__all__ = ["Instance"]


@dataclass(frozen=True, slots=True)
class Instance:
    """An instance's quotas, enforced by the API so the allocator cannot cheat.

    >>> Instance(max_enis=2, ips_per_eni=10).check_assign("eni-1", bound=9, more=2)
    Traceback (most recent call last):
    ...
    eni_core.ports.QuotaExceeded: ENI eni-1 has 9 secondary IPs; 2 more would pass its quota of 10
    """

    max_enis: int
    ips_per_eni: int

    def check_attach(self, node: str, attached: int, eni_id: str = "", ips: int = 0) -> None:
        """Attaching one more ENI, which holds `ips` secondary IPs (one detached from another node may)."""
        if attached >= self.max_enis:
            raise QuotaExceeded(f"instance {node} already has {attached} secondary ENIs (quota {self.max_enis})")
        if ips > self.ips_per_eni:
            raise QuotaExceeded(f"ENI {eni_id} has {ips} secondary IPs, more than instance {node}'s quota of "
                                f"{self.ips_per_eni} per ENI")

    def check_assign(self, eni_id: str, bound: int, more: int) -> None:
        if bound + more > self.ips_per_eni:
            raise QuotaExceeded(f"ENI {eni_id} has {bound} secondary IPs; {more} more would pass its quota of "
                                f"{self.ips_per_eni}")
