"""The `Netlink` port on a real kernel: one rtnetlink socket held open in one network namespace."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from eni_core import netlink as nl
from eni_core import netns

__all__ = ["NamespaceKernel"]


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


class NamespaceKernel:
    """A namespace's kernel. `where` is a netns name or path (None: the calling thread's own)."""

    def __init__(self, where: str | os.PathLike[str] | None = None) -> None:
        self.where = where
        if where is None:
            self.sock = nl.NetlinkSocket()
        else:
            with netns.entered(where):
                self.sock = nl.NetlinkSocket()

    def close(self) -> None:
        self.sock.close()

    def links(self) -> list[nl.Link]:
        return self.sock.links()

    def link(self, ifname: str) -> nl.Link | None:
        return self.sock.link(ifname)

    def rules(self) -> list[nl.RuleEntry]:
        return self.sock.rules()

    def routes(self) -> list[nl.RouteEntry]:
        return self.sock.routes()

    def neighbours(self) -> list[nl.NeighEntry]:
        return self.sock.neighbours()

    def route_get(self, dst, src=None, iif=None) -> nl.RouteEntry:
        return self.sock.route_get(dst, src, iif)

    def addresses(self) -> list[nl.AddrEntry]:
        return self.sock.addresses()

    def apply(self, requests: Sequence[nl.Request]) -> list[nl.NetlinkError]:
        return self.sock.apply(requests, ignore=nl.IGNORE_EXISTS + nl.IGNORE_GONE)

    def check(self, requests: Sequence[nl.Request], ignore: tuple[int, ...] = ()) -> None:
        self.sock.check(requests, ignore=ignore)

    def _in_ns(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self.where is None else netns.entered(self.where)

    def read_sysctls(self, keys: Iterable[str]) -> dict[str, int]:
        out = {}
        with self._in_ns():
            for key in keys:
                try:
                    out[key] = int(Path(_sysctl_path(key)).read_text())
                except FileNotFoundError:
                    continue  # the device is not there (yet)
        return out

    def write_sysctl(self, key: str, value: int) -> None:
        with self._in_ns():
            Path(_sysctl_path(key)).write_text(f"{value}\n")
