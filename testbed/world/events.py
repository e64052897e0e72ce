"""The cluster's event log: every event of a run (VPC calls, pool decisions, pods), or only their count."""
from __future__ import annotations

from collections.abc import Callable

__all__ = ["EventLog"]


class EventLog:
    """Every event of a run, or only their count (the benchmark keeps no list). It is the `events` sink
    the VPC, the ipamds and the cluster all write to, stamped with the scenario step being run."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.items: list[dict] = []
        self.count = 0
        self.step = 0  # the scenario step being run; stamped on each event
        self.listeners: list[Callable[[dict], None]] = []  # see every event as it happens, kept or not

    def __call__(self, event: dict) -> None:
        self.count += 1
        if self.keep:
            self.items.append({"step": self.step, **event})
        for listener in self.listeners:
            listener(event)
