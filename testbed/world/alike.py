"""One object for each set of equal immutable values, shared by every node that has them."""
from __future__ import annotations

from typing import TypeVar

__all__ = ["Alike"]

T = TypeVar("T")


class Alike:
    """The first of each set of equal immutable values it was shown, handed out for all of them. Thousands
    of nodes alike (their limits, subnet lists, quotas) then read one object that stays in the cache, where
    a copy each would be one more cache miss per pod event in a large cluster.

    >>> alike = Alike()
    >>> a, b = alike.one((1, 2)), alike.one(tuple([1, 2]))
    >>> a is b
    True
    """

    __slots__ = ("_first",)

    def __init__(self) -> None:
        self._first: dict[object, object] = {}

    def one(self, value: T) -> T:
        return self._first.setdefault(value, value)  # type: ignore[return-value]
