"""A cluster's pods: the pod record, its phase, automatic names and the newest-first order."""
from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address
from itertools import islice
from types import MappingProxyType
from typing import Any

__all__ = ["NO_EXTRA", "Pod", "PodPhase", "newest_first", "next_auto_name"]

NO_EXTRA: Mapping[str, Any] = MappingProxyType({})  # a pod the backend shows nothing of (the sim's): shared, read-only


class PodPhase(StrEnum):
    """A pod's phase, as the JSON STATE spells it: Pending until it has an IP, then Running.

    >>> PodPhase.RUNNING == "Running", f"{PodPhase.PENDING}"
    (True, 'Pending')
    """

    PENDING = "Pending"
    RUNNING = "Running"


@dataclass(slots=True)
class Pod:
    name: str
    node: str | None
    seq: int  # creation order: a pod deleted and made again is new
    static: bool = False
    owner: str | None = None
    phase: PodPhase = PodPhase.PENDING
    ip: IPv4Address | None = None
    eni_id: str | None = None
    # what the backend shows of the pod (netns, veth), replaced, never changed in place: a pod it shows
    # nothing of shares one empty mapping, where a table of its own would be one more object per pod
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA)

    def show(self, shown: Mapping[str, Any]) -> None:
        """Add to what the backend shows of the pod (`extra` is replaced, never changed in place)."""
        if shown:
            self.extra = {**self.extra, **shown}


def next_auto_name(counter: int, taken: Container[str]) -> tuple[int, str]:
    """Automatic pod names are pod-1, pod-2, ... skipping names in use: (the new counter, the name).

    >>> next_auto_name(0, {"pod-1", "pod-2"})
    (3, 'pod-3')
    """
    while True:
        counter += 1
        if f"pod-{counter}" not in taken:
            return counter, f"pod-{counter}"


def newest_first(pods: Mapping[str, object], count: int) -> list[str]:
    """The `count` newest pods of a mapping kept in creation order (a deleted pod made again is new).

    >>> newest_first(dict.fromkeys(["a", "b", "c"]), 2)
    ['c', 'b']
    """
    return list(islice(reversed(pods), count))
