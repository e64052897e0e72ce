"""The cluster's event log: every event of a run (VPC calls, pool decisions, pods), or only their count."""
from __future__ import annotations

from collections.abc import Callable

from testbed.errors import UserError

__all__ = ["EventLimitError", "EventLog"]


class EventLimitError(UserError):
    """A run made more events than its log's limit allows."""


class EventLog:
    """Every event of a run, or only their count (the benchmark keeps no list). It is the `events` sink
    the VPC, the ipamds and the cluster all write to, stamped with the scenario step being run.

    `limit` bounds a run's work: `check`, called where the run can stop cleanly (between two timers, after
    a step), raises EventLimitError once more events than that have been made since `since` (an event
    count; 0, the start, unless a budget began later). A cluster whose timers keep
    firing (a pool that can never fill polls every 30 s, for as long as the clock is advanced) would
    otherwise run, and keep its events, without end.

    >>> log = EventLog(limit=1)
    >>> log({"kind": "pod"}); log.check(); log({"kind": "pod"}); log.check()
    Traceback (most recent call last):
    testbed.world.events.EventLimitError: more than 1 event; the limit keeps a run's time and memory bounded
    """

    def __init__(self, keep: bool = True, limit: int | None = None) -> None:
        self.keep = keep
        self.limit = limit
        self.since = 0
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

    def check(self) -> None:
        if self.limit is not None and self.count - self.since > self.limit:
            raise EventLimitError(f"more than {self.limit:,} event{'s' if self.limit != 1 else ''}; the limit "
                                  "keeps a run's time and memory bounded")
