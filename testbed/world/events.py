"""The cluster's event log: every event of a run (VPC calls, pool decisions, pods), or only their count."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from eni_core.names import counted
from testbed.errors import UserError

__all__ = ["EventLimitError", "EventLog"]


class EventLimitError(UserError):
    """A run made more events than its log's limit allows."""


class EventLog:
    """Every event of a run, or only their count (the benchmark keeps no list). It is the `events` sink
    the VPC, the ipamds and the cluster all write to, stamped with the scenario step being run.

    `limit` bounds a run's work, in events and in timers fired (`fired`, which the cluster counts: a timer
    may fire and make no event), and `call_limit` how many of its events may be cloud calls (each one an
    HTTP round trip when the nodes reach the VPC through the SDK): `check`, called where the run can stop
    cleanly (between two timers, after a step), raises EventLimitError once more than that have been made
    since `since` (the counts when the budget began: the start, or `budget`'s). A cluster whose timers keep
    firing (a pool that can never fill polls every 30 s, for as long as the clock is advanced) would
    otherwise run, and keep its events, without end.

    >>> log = EventLog(limit=1)
    >>> log({"kind": "pod"}); log.check(); log({"kind": "pod"}); log.check()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    testbed.world.events.EventLimitError: the run made more than 1 event; the limit keeps a run's time ...
    """

    def __init__(self, keep: bool = True, limit: int | None = None, call_limit: int | None = None) -> None:
        self.keep = keep
        self.limit = limit
        self.call_limit = call_limit  # of the events, how many may be cloud calls (kind "api")
        self.since = (0, 0, 0)  # (events, cloud calls, timers fired) when the limits began
        self.items: list[dict] = []
        self.count = self.calls = self.fired = 0  # `fired`: the cluster's timers, counted as it fires them
        self.step = 0  # the scenario step being run; stamped on each event
        self.listeners: list[Callable[[dict], None]] = []  # see every event as it happens, kept or not

    def __call__(self, event: dict) -> None:
        self.count += 1
        if event.get("kind") == "api":
            self.calls += 1
        if self.keep:
            self.items.append({"step": self.step, **event})
        for listener in self.listeners:
            listener(event)

    @contextlib.contextmanager
    def budget(self, limit: int, call_limit: int | None = None) -> Iterator[None]:
        """Within it, `check` allows `limit` more events and timers fired, and `call_limit` more cloud
        calls, than made so far; afterwards the limits before it are back (a live cluster's, usually none)."""
        before = self.limit, self.call_limit, self.since
        self.limit, self.call_limit, self.since = limit, call_limit, (self.count, self.calls, self.fired)
        try:
            yield
        finally:
            self.limit, self.call_limit, self.since = before

    def check(self) -> None:
        events, calls, fired = self.since
        if self.limit is not None and self.count - events > self.limit:
            raise EventLimitError(f"the run made more than {counted(self.limit, 'event')}; "
                                  "the limit keeps a run's time and memory bounded")
        if self.limit is not None and self.fired - fired > self.limit:  # a timer can fire and say nothing
            raise EventLimitError(f"the run's timers fired more than {self.limit:,} times; the limit keeps its "
                                  "time bounded")
        if self.call_limit is not None and self.calls - calls > self.call_limit:
            raise EventLimitError(f"the run made more than {self.call_limit:,} cloud calls; the limit keeps its "
                                  "time bounded (over HTTP a call takes a millisecond or more)")
