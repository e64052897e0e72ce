"""Clocks that drive the ipamd: a simulated one for scenarios and a wall clock for real runs."""
from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SimClock", "WallClock"]


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SimClock:
    """Simulated time: moves only when told. `sleep` does not move it: a step happens at one instant."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        return None

    def advance_to(self, t: float) -> None:
        if t < self.t:
            raise ValueError(f"time cannot go back from {self.t} to {t}")
        self.t = t


class WallClock:
    """Real time (seconds since the epoch, so deadlines survive a process restart)."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
