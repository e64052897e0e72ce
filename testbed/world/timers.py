"""The nodes' timers: when each node next has timed work (a release, a retry, a poll), earliest first."""
from __future__ import annotations

import heapq
from collections import deque

__all__ = ["NodeTimers"]


class NodeTimers:
    """One armed deadline per node, the latest armed wins; `due` and `pop` give them in time order, then
    by node name.

    Nearly every deadline is armed in time order: the pool's is the release interval after now, and
    now only moves on. Those go to a queue in the order they come, O(1) each, and a pop reads the one
    entry at its head. A deadline that sorts before the queue's last entry goes to a heap. `due` takes
    the earlier of the two heads. With a heap alone, each pop walked a path from the root to a leaf of
    entries scattered in memory, longer and colder the more nodes were armed (72 entries at 1,000
    nodes, 716 at 10,000).

    Re-arming a node at a new time leaves its old entry where it is: it is skipped when it comes up,
    so nothing scans the nodes.

    >>> timers = NodeTimers()
    >>> timers.arm("node-1", 30.0); timers.arm("node-2", 10.0); timers.arm("node-1", 20.0)
    >>> timers.due(), timers.pop(), timers.pop(), timers.due()
    (10.0, (10.0, 'node-2'), (20.0, 'node-1'), None)
    """

    __slots__ = ("_armed", "_heap", "_queue")

    def __init__(self) -> None:
        self._queue: deque[tuple[float, str]] = deque()  # in (deadline, node) order, as armed
        self._heap: list[tuple[float, str]] = []  # the rest
        self._armed: dict[str, float] = {}

    def arm(self, node: str, deadline: float) -> None:
        if self._armed.get(node) != deadline:
            self._armed[node] = deadline
            entry = (deadline, node)
            if not self._queue or self._queue[-1] <= entry:
                self._queue.append(entry)
            else:
                heapq.heappush(self._heap, entry)

    def disarm(self, node: str) -> None:
        self._armed.pop(node, None)

    def _first(self) -> deque[tuple[float, str]] | list[tuple[float, str]] | None:
        """The queue or the heap, whichever holds the earliest armed entry at its head; None if neither
        does. Entries of nodes re-armed or disarmed since are dropped on the way."""
        armed, queue, heap = self._armed, self._queue, self._heap
        while queue and armed.get(queue[0][1]) != queue[0][0]:
            queue.popleft()
        while heap and armed.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        if queue and (not heap or queue[0] <= heap[0]):
            return queue
        return heap or None

    def due(self) -> float | None:
        """The earliest armed deadline, or None."""
        first = self._first()
        return first[0][0] if first else None

    def pop(self) -> tuple[float, str]:
        """The earliest armed (deadline, node), disarmed; call `due` first to know there is one."""
        first = self._first()
        if first is None:
            raise IndexError("no timer is armed")
        deadline, node = first.popleft() if first is self._queue else heapq.heappop(self._heap)
        del self._armed[node]
        return deadline, node

    def __len__(self) -> int:
        return len(self._armed)
