"""Huge pages for the heap of a process that runs a large simulation.

A simulated cluster of 10,000 nodes is some 300 MB of small objects, and every pod event reads a few
dozen of them at random places. With the kernel's 4 KiB pages each of those reads also needs its page's
address translation: 300 MB is some 77,000 pages, far more than the processor's translation cache holds,
so an event cost more the larger the cluster (in a virtual machine, such as the one this project is
measured on, a missed translation walks two page tables). In 2 MiB pages the same heap is some 160.

CPython's allocator takes its memory from the kernel in 1 MiB pieces that the kernel backs with small pages
unless the process asks for huge ones (`transparent_hugepage/enabled` is `madvise` on most distributions),
and it never asks. glibc's malloc does ask when its tunable `glibc.malloc.hugetlb` is 1 (glibc 2.35 and
later). Which allocator Python uses (`PYTHONMALLOC`) and glibc's tunables (`GLIBC_TUNABLES`) are read once,
as a process starts. So the commands whose work is a large simulation (`bench sim`, `tune`) start
themselves again, before anything else, with both set, when the machine can give huge pages; the
processes they start inherit the setting. Measured on this project's machine
(docs/performance.md): the same 1,000,000 events at 10,000 nodes in about 5% less CPU, and the cost of
an event at 10,000 nodes over its cost at 1,000 from 1.10-1.17 to 1.02-1.11 (median 1.10 to 1.08).

`ENILAB_HUGE_PAGES=0` keeps the process as it was started, and so does a `PYTHONMALLOC` or a
`glibc.malloc.hugetlb` tunable of the user's own.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from testbed.errors import UsageError

__all__ = ["MARK", "SWITCH", "THP_ENABLED", "glibc_version", "huge_page_env", "in_effect", "reexec", "report",
           "thp_mode"]

SWITCH = "ENILAB_HUGE_PAGES"  # 0: off; 1 (the default): on where the machine can
MARK = "ENILAB_HEAP"  # set in the process started again, so that it is started again once only
TUNABLE = "glibc.malloc.hugetlb=1"
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
MIN_GLIBC = (2, 35)  # the first with glibc.malloc.hugetlb


def thp_mode(path: Path = THP_ENABLED) -> str | None:
    """The kernel's transparent huge page mode (`always`, `madvise` or `never`), None if it has none.

    >>> import tempfile; f = Path(tempfile.mkdtemp()) / "enabled"; _ = f.write_text("always [madvise] never\\n")
    >>> thp_mode(f)
    'madvise'
    """
    try:
        words = path.read_text().split()
    except (OSError, ValueError):  # absent, unreadable, or not text
        return None
    chosen = [w[1:-1] for w in words if w.startswith("[") and w.endswith("]")]
    return chosen[0] if chosen else None


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library's glibc, None if it is another C library (musl) or unknown."""
    try:
        name, _, version = os.confstr("CS_GNU_LIBC_VERSION").partition(" ")
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (ValueError, OSError, AttributeError):  # no such name here, or not "glibc X.Y"
        return None


def _switch(environ: Mapping[str, str]) -> bool:
    value = environ.get(SWITCH, "1").strip()
    if value not in ("0", "1"):
        raise UsageError(f"{SWITCH}={value[:40]!r}: give 0 (small pages) or 1 (huge pages where the machine "
                         "can give them, the default)")
    return value == "1"


def huge_page_env(environ: Mapping[str, str], *, thp: str | None, glibc: tuple[int, int] | None
                  ) -> dict[str, str] | None:
    """The environment to start the process again with, None to keep it as it is: switched off, started
    again already, an allocator of the user's choice, or a machine that gives no huge pages.
    UsageError for a switch that is neither 0 nor 1.

    >>> env = huge_page_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, thp="madvise", glibc=(2, 36))
    >>> env["PYTHONMALLOC"], env["GLIBC_TUNABLES"]
    ('malloc', 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1')
    >>> huge_page_env({}, thp="never", glibc=(2, 36)) is None
    True
    """
    if _why_not(environ, thp=thp, glibc=glibc) is not None or MARK in environ:
        return None
    tunables = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]
    return {**environ, MARK: "huge-pages", "PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": ":".join([*tunables, TUNABLE])}


def _why_not(environ: Mapping[str, str], *, thp: str | None, glibc: tuple[int, int] | None) -> str | None:
    """Why a process in `environ` on this machine gets no huge pages; None if it gets them. UsageError for a
    switch that is neither 0 nor 1."""
    if not _switch(environ):
        return f"{SWITCH}=0"
    tunables = environ.get("GLIBC_TUNABLES", "").split(":")
    if "PYTHONMALLOC" in environ or any(t.startswith("glibc.malloc.hugetlb=") for t in tunables):
        return "PYTHONMALLOC or glibc.malloc.hugetlb of the user's"
    if thp not in ("always", "madvise"):
        return f"the kernel's transparent huge pages: {thp or 'none'}"
    if glibc is None or glibc < MIN_GLIBC:
        return "no glibc 2.35 or later"
    return None


def reexec() -> None:
    """Start this process again with huge pages for its heap, if it would have them and has not; return
    if not (or if the start fails: the process goes on as it is). Call it before any output and before
    any thread starts: nothing of this process survives but its id, its arguments and its open files."""
    env = huge_page_env(os.environ, thp=thp_mode(), glibc=glibc_version())
    # -E or -I: the interpreter started again would ignore PYTHONMALLOC
    if env is None or sys.flags.ignore_environment or not sys.executable or not _started_as_itself():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:
        return


def _started_as_itself() -> bool:
    """Whether starting the interpreter's own command line again runs this command again: the arguments
    being parsed are the last ones the interpreter was given, and its program was not read from stdin
    (which the process started again would find empty). Not so in a program that runs the command inside
    itself with arguments of its own (IPython's `%run -m testbed.apps.cli ...`, runpy): starting that
    program again would replace it (a notebook's kernel, with all its state) and never run the command."""
    args = sys.argv[1:]
    return (bool(sys.orig_argv) and sys.argv[:1] not in ([""], ["-"]) and len(sys.orig_argv) > len(args)
            and sys.orig_argv[len(sys.orig_argv) - len(args):] == args)


def in_effect(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process was started with glibc's malloc asking for huge pages."""
    return (not sys.flags.ignore_environment and environ.get("PYTHONMALLOC") == "malloc"
            and TUNABLE in environ.get("GLIBC_TUNABLES", "").split(":"))


def _anon_huge_mib() -> float | None:
    """The process's memory in transparent huge pages now, in MiB; None where the kernel does not say."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def report() -> dict[str, object]:
    """For a bench's JSON: whether the heap asks for huge pages, why not if not, and how much of it is in
    huge pages now (the evidence that the kernel gave them)."""
    thp = thp_mode()
    why = None
    if not in_effect():
        why = ("python -E or -I ignores PYTHONMALLOC" if sys.flags.ignore_environment
               else _why_not(os.environ, thp=thp, glibc=glibc_version())
               or "the process was not started by the enilab command")
    return {"huge_pages": why is None, "why_not": why, "thp": thp, "anon_huge_mib": _anon_huge_mib()}
