"""Rootless enilab: a user namespace of the caller's own, where the user is root over the namespaces it makes.

A normal user cannot make network namespaces in the host's user namespace, but the kernel lets them make
a user namespace of their own and, inside it, network and mount namespaces, veths, addresses, routes and
policy rules. `enter()` moves this process, and every process it starts afterwards, into one new user,
mount and network namespace:

- the user is mapped to root inside (uid 0 and gid 0, setgroups denied), so the code that runs as root
  runs unchanged: the same code paths make the same namespaces;
- a private folder of the user (`$XDG_RUNTIME_DIR/enilab`, else `~/.cache/enilab`, 0700) stands in for
  `/run/netns` and `/run/enilab`: /run becomes a tmpfs on which every other entry of the host's /run is
  bound back, and the private folder's `netns` and `run` are bound on `/run/netns` and `/run/enilab`, so
  `ip netns`/`ip -n` in children see the run's namespaces and the host's stay out of sight;
- the process gets a network namespace of its own (loopback up) as its home: a thread that entered a
  pod's namespace must be able to return, and setns(2) into the host's network namespace needs privilege
  there.

`join()` moves another process of the same user into such a namespace (a rootless cluster's controller's),
so commands that talk to a running cluster see what it made. Everything made inside dies with the last
process in the namespace. The kernel requires a single-threaded
process for this, so enter first thing, before any thread starts.
"""
from __future__ import annotations

import ctypes
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from eni_core.cni_client import own_runtime_dir
from eni_core.private import NotPrivate, private_dir

__all__ = ["RootlessError", "enter", "inside", "join", "own_network", "state_base", "wanted"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 1

_libc = ctypes.CDLL(None, use_errno=True)


class RootlessError(OSError):
    """User namespaces are not available here (or not usable from this process): the reason, in words."""


def wanted() -> bool:
    """Whether enilab should go rootless: not root, or ENILAB_ROOTLESS=1 (root testing the rootless path),
    and not already inside a user namespace of its own."""
    return (os.geteuid() != 0 or os.environ.get("ENILAB_ROOTLESS") == "1") and not inside()


def inside() -> bool:
    """Whether this process runs in a user namespace other than the host's (whose map covers every uid)."""
    try:
        first = Path("/proc/self/uid_map").read_text().split("\n")[0].split()
    except OSError:
        return False
    return first != ["0", "0", "4294967295"]


def state_base() -> Path:
    """The user's private folder for rootless runs: `$XDG_RUNTIME_DIR/enilab` when that is a folder of the
    user's own (`cni_client.own_runtime_dir`), else `~/.cache/enilab` (0700)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if own_runtime_dir(xdg):
        base = Path(xdg) / "enilab"
    else:
        home = os.path.expanduser("~")
        if not os.path.isabs(home) or not os.path.isdir(home):
            raise RootlessError(f"no private folder for rootless runs: XDG_RUNTIME_DIR is unset and the home "
                                f"folder {home!r} does not exist; set XDG_RUNTIME_DIR (or HOME) to a folder of yours")
        base = Path(home) / ".cache" / "enilab"
    return _private(base)


def _private(path: Path) -> Path:
    """`private_dir(path)`; a folder that cannot be made (no right to, a full disk, a read-only home) is a
    RootlessError that says so, and one that is not this user's stays NotPrivate."""
    try:
        return private_dir(path)
    except NotPrivate:
        raise
    except OSError as err:
        raise RootlessError(f"cannot make the private folder {err.filename or path}: {err.strerror}; set "
                            "XDG_RUNTIME_DIR to a folder of yours") from None


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise RootlessError(err, f"{what}: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data)), f"mount {target}")


def _stand_in(run: str, binds: dict[str, Path]) -> None:
    """Put a tmpfs on `run`, bind the host's entries back except `binds`' names, bind `binds` in their place."""
    old = os.open(run, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    mine = {name: os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for name, folder in binds.items()}
    try:
        _mount("tmpfs", run, "tmpfs", 0, "mode=0755")
        for name in sorted(os.listdir(f"/proc/self/fd/{old}")):
            if name in binds:
                continue
            source, target = f"/proc/self/fd/{old}/{name}", os.path.join(run, name)
            info = os.lstat(source)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), target)
                continue
            if stat.S_ISDIR(info.st_mode):
                os.mkdir(target, 0o755)
            else:
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
            _mount(source, target, None, MS_BIND | MS_REC)
        for name, fd in mine.items():
            target = os.path.join(run, name)
            os.mkdir(target, 0o700)
            _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
    finally:
        for fd in (old, *mine.values()):
            os.close(fd)


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def enter(*, network: bool = True) -> Path:
    """Move this (single-threaded) process into a new user, mount and network namespace as described above;
    the private folder that now stands in for /run/netns and /run/enilab. RootlessError if the kernel
    refuses (user namespaces disabled, say): nothing has changed then. With `network=False` the process
    stays in the host's network namespace (to bind its listening sockets there) until `own_network()`."""
    if threading.active_count() > 1:
        raise RootlessError("a user namespace needs a single-threaded process; enter it before starting threads")
    uid, gid = os.geteuid(), os.getegid()
    base = state_base()
    binds = {"netns": _private(base / "netns"), "enilab": _private(base / "run")}
    try:
        _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | (CLONE_NEWNET if network else 0)),
               "unshare a user namespace")
    except RootlessError as err:
        raise RootlessError(f"user namespaces are not available to this user ({err.strerror}); run as root, "
                            "or allow them (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone)") \
            from None
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _stand_in("/run", binds)
    if network:
        _loopback_up()
    return base


def own_network() -> None:
    """Give the calling thread, after `enter(network=False)`, a network namespace of its own (loopback up) as
    its home; threads it starts afterwards share it. Threads started before, and sockets opened before, stay
    in the host's: a Jupyter kernel's channels keep answering there while its cells build namespaces."""
    _check(_libc.unshare(CLONE_NEWNET), "unshare a network namespace")
    _loopback_up()


def join(pid: int, still_the_same: Callable[[], bool]) -> None:
    """Move this (single-threaded) process into the user, mount and network namespaces of process `pid`
    (a rootless controller of this user), keeping the working folder. `still_the_same()` is asked once the
    namespaces are open, so a pid reused by another process is never joined. RootlessError if it cannot."""
    if threading.active_count() > 1:
        raise RootlessError("joining a user namespace needs a single-threaded process; join before starting threads")
    cwd = os.getcwd()
    fds: dict[int, int] = {}
    try:
        for kind, flag in (("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS), ("net", CLONE_NEWNET)):
            fds[flag] = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        if not still_the_same():
            raise RootlessError(f"process {pid} ended before its namespaces could be joined")
        for flag, fd in fds.items():
            _check(_libc.setns(fd, flag), f"join the namespaces of process {pid}")
    except OSError as err:
        raise RootlessError(f"cannot join the namespaces of process {pid}: {err.strerror or err}") from None
    finally:
        for fd in fds.values():
            os.close(fd)
    os.chdir(cwd)
