"""The VPC's seeded faults: throttling, transient errors, injected address shortages, timeouts, latency."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from eni_core.ports import InsufficientAddresses, RequestTimeout, Throttled, TransientError

__all__ = ["FaultConfig", "FaultInjector"]

T = TypeVar("T")

MUTATING = frozenset({"CreateNetworkInterface", "AttachNetworkInterface", "AssignPrivateIpAddresses",
                      "CreateReserveIpAddresses"})
RELEASING = frozenset({"UnassignPrivateIpAddresses", "DetachNetworkInterface", "DeleteNetworkInterface"})


@dataclass(frozen=True)
class FaultConfig:
    """Seeded fault injection, as rates per API call (0..1) and a latency range in seconds."""

    throttle: float = 0.0
    transient: float = 0.0
    insufficient_addresses: float = 0.0
    timeout: float = 0.0  # the call happens, but the caller is told it timed out (ambiguous)
    consistency_delay: float = 0.0  # seconds before a new ENI or IP shows in DescribeNetworkInterfaces
    latency: tuple[float, float] = (0.0, 0.0)
    seed: int | None = None


class FaultInjector:
    """Rolls the dice for each call, from one seeded generator: the same calls meet the same faults.
    `config` may be replaced at any time (a test heals the cloud); the generator goes on."""

    def __init__(self, config: FaultConfig, seed: int) -> None:
        self.config = config
        self._rng = random.Random(f"faults:{seed if config.seed is None else config.seed}")

    def latency(self) -> float:
        """This call's injected latency in seconds (0 without a latency range)."""
        low, high = self.config.latency
        return self._rng.uniform(low, high) if high > 0 else 0.0

    def run(self, call: str, fn: Callable[[], T]) -> T:
        """Carry `fn` out, or fail as the dice say: throttled, transient or short of addresses before the
        work, timed out after it (the error carries the work's `outcome`)."""
        f = self.config
        roll = self._rng.random() if (f.throttle or f.transient or f.insufficient_addresses or f.timeout) else 1.0
        if roll < f.throttle:
            raise Throttled(f"{call}: request rate limit exceeded, retry later")
        if roll < f.throttle + f.transient:
            raise TransientError(f"{call}: internal error, retry later")
        if call in MUTATING and roll < f.throttle + f.transient + f.insufficient_addresses:
            raise InsufficientAddresses(f"{call}: the subnet has insufficient addresses (injected)")
        result = fn()
        if f.timeout and (call in MUTATING or call in RELEASING) and roll >= 1.0 - f.timeout:
            timeout = RequestTimeout(f"{call}: no answer in time (the request may have been carried out)")
            timeout.outcome = result
            raise timeout
        return result
