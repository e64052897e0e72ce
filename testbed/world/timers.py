"""The nodes' timers: when each node next has timed work (a release, a retry, a poll), earliest first."""
from __future__ import annotations

import heapq

__all__ = ["NodeTimers"]


class NodeTimers:
    """One armed deadline per node, the latest armed wins; `due` and `pop` give them in time order.

    Re-arming a node at a new time leaves its old entry in the heap: it is skipped when it comes up,
    so each change costs O(log n) and nothing scans the nodes.

    >>> timers = NodeTimers()
    >>> timers.arm("node-1", 30.0); timers.arm("node-2", 10.0); timers.arm("node-1", 20.0)
    >>> timers.due(), timers.pop(), timers.pop(), timers.due()
    (10.0, (10.0, 'node-2'), (20.0, 'node-1'), None)
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._armed: dict[str, float] = {}

    def arm(self, node: str, deadline: float) -> None:
        if self._armed.get(node) != deadline:
            self._armed[node] = deadline
            heapq.heappush(self._heap, (deadline, node))

    def disarm(self, node: str) -> None:
        self._armed.pop(node, None)

    def due(self) -> float | None:
        """The earliest armed deadline, or None."""
        heap = self._heap
        while heap and self._armed.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # re-armed or disarmed since
        return heap[0][0] if heap else None

    def pop(self) -> tuple[float, str]:
        """The earliest armed (deadline, node), disarmed; call `due` first to know there is one."""
        if self.due() is None:
            raise IndexError("no timer is armed")
        deadline, node = heapq.heappop(self._heap)
        del self._armed[node]
        return deadline, node

    def __len__(self) -> int:
        return len(self._armed)
