"""The user's mistakes: printed as one clear line without a traceback, exit 2."""
from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A request that cannot be carried out as asked; the message says what to do instead."""
