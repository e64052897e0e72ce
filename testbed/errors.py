"""The user's mistakes: printed as one clear line without a traceback, exit 2."""
from __future__ import annotations

from eni_core.rpc import REFUSED

__all__ = ["UsageError", "UserError"]


class UserError(Exception):
    """The base of every error that is the caller's mistake (a bad request, scenario or cluster operation):
    the CLI prints its message on one line and exits 2; over RPC it is answered with code REFUSED."""

    rpc_code = REFUSED

    def _render_traceback_(self) -> list[str]:
        """In IPython and Jupyter (the labs), the message on one line too, not a traceback."""
        return [f"{type(self).__name__}: {self}"]


class UsageError(UserError):
    """A request that cannot be carried out as asked; the message says what to do instead."""
