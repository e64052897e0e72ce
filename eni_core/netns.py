"""Named network namespaces without forking: create, enter, delete, from the calling thread.

`ip netns add` semantics (a bind mount under /run/netns), done per thread with unshare(2) and setns(2)
through libc, so creating a namespace costs microseconds, not a process. Every function restores the
thread's original namespace before it returns, however it returns (an exception, Ctrl-C). Should the
kernel refuse to take a thread back, the call raises and so does every later one from that thread.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

__all__ = [
    "NETNS_DIR", "create", "creating", "delete", "delete_many", "entered", "exists", "filename", "list_names", "path",
    "pin", "run_in", "setns",
]

NETNS_DIR = Path(os.environ.get("ENILAB_NETNS_DIR", "/run/netns"))
_DIR = str(NETNS_DIR)
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000

T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)
_dir_lock = threading.Lock()
_dir_ready = False
_shared_fd: int | None = None  # see _mountpoint
_home = threading.local()  # each thread's own namespace, opened once: every function returns the thread there


class _HomeFd:
    """A thread's own namespace, open; closed when the thread ends and its locals go (a server that runs
    each request on a thread of its own would otherwise keep one fd per request)."""

    __slots__ = ("fd",)

    def __init__(self) -> None:
        self.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _home_fd() -> int:
    stuck = getattr(_home, "stuck", None)
    if stuck is not None:
        raise stuck
    held = getattr(_home, "held", None)
    if held is None:
        held = _home.held = _HomeFd()
    return held.fd


def _at_home(home: int) -> bool:
    st, now = os.fstat(home), os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def _back(home: int) -> None:
    """Return the calling thread to its own namespace. Should the kernel refuse, the thread is left where
    it is, which no later call may take for home: this one raises, and so does every later call of this
    module from the thread (the process should stop). A thread that never left (the move in was refused:
    no CAP_SYS_ADMIN, say) is simply home, and the error that refused it goes on."""
    try:
        setns(home)
    except OSError as err:
        if _at_home(home):
            return
        _home.stuck = OSError(err.errno, f"this thread could not return to its own network namespace "
                                         f"({err.strerror}) and is still in another; stop the process")
        raise _home.stuck from err


def _check(rc: int, what: str, name: str | os.PathLike[str] = "") -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", str(name))


def path(name: str) -> Path:
    return Path(filename(name))


def filename(name: str) -> str:
    """A namespace's file as text: what the calls made for every pod use (a `Path` costs microseconds to
    build and again to format, and a pod's namespace was made, entered and named as a peer)."""
    return f"{_DIR}/{name}"


def exists(name: str) -> bool:
    return path(name).exists()


def list_names() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _mountpoint(target: str) -> None:
    """Make the empty file a namespace is bound onto (FileExistsError if it exists): a new name for one
    unnamed file this process keeps open in the folder (O_TMPFILE, then linkat), else a new file as
    `ip netns add` makes. A name costs no inode, and inodes are what grows costly: ext4 without a
    journal (the root filesystem of this project's machines, /run/netns included) skips every inode
    freed in the last minutes when it allocates one, so each namespace file made after thousands were
    deleted was slower than the last."""
    global _shared_fd
    with _dir_lock:
        for fresh in (False, True):
            if _shared_fd == -1:
                break  # linking is not possible here (no O_TMPFILE, no CAP_DAC_READ_SEARCH)
            try:
                if _shared_fd is None or fresh:
                    if _shared_fd is not None:
                        os.close(_shared_fd)  # every name went, so the file can take no new one
                    _shared_fd = -1
                    _shared_fd = os.open(NETNS_DIR, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0)
            except OSError:
                break
            if _libc.linkat(_shared_fd, b"", AT_FDCWD, target.encode(), AT_EMPTY_PATH) == 0:
                return
            err = ctypes.get_errno()
            if err == errno.EEXIST:
                raise FileExistsError(err, os.strerror(err), target)
            if err != errno.ENOENT:
                break  # too many names on one file, or another filesystem
    os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))


def _prepare_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so mounts under it propagate."""
    global _dir_ready
    with _dir_lock:
        if _dir_ready:
            return
        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        d = str(NETNS_DIR).encode()
        if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
            _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None), "bind-mount the netns folder", NETNS_DIR)
            _check(_libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None), "share the netns folder", NETNS_DIR)
        _dir_ready = True


def setns(fd: int) -> None:
    """Move the calling thread into the namespace of `fd` (for good: a child's `preexec_fn`, say)."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def _go_into(name_or_path: str | os.PathLike[str]) -> None:
    """Move the calling thread into the namespace. Callers call it inside the `try` whose `finally` takes
    the thread back (`_back`): an exception raised at any point after the move (a KeyboardInterrupt as
    the fd is closed, say) then cannot leave the thread inside."""
    target = os.fspath(name_or_path)
    fd = os.open(filename(target) if os.sep not in target else target, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        setns(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered(name_or_path: str | os.PathLike[str]) -> Iterator[None]:
    """Run the block with this thread in the namespace (sockets opened inside stay there)."""
    home = _home_fd()
    try:
        _go_into(name_or_path)
        yield
    finally:
        _back(home)


def run_in(name_or_path: str | os.PathLike[str], fn: Callable[[], T]) -> T:
    """`fn()` with this thread in the namespace, then back: `entered` as a plain call, for what is done
    for every pod (a generator's context manager costs about a microsecond)."""
    home = _home_fd()
    try:
        _go_into(name_or_path)
        return fn()
    finally:
        _back(home)


def create(name: str) -> str:
    """Create the named namespace; FileExistsError if it exists. Returns its file's path."""
    target, home = _begin(name)
    try:
        _back(home)
    except BaseException:
        delete(name)
        raise
    return target


def _unshare_failed(name: str) -> None:
    err = ctypes.get_errno()
    if err == errno.ENOSPC:
        try:
            limit = f" ({Path('/proc/sys/user/max_net_namespaces').read_text().strip()} here)"
        except OSError:
            limit = ""
        raise OSError(err, f"cannot create network namespace {name}: the kernel's limit on network namespaces, "
                           f"user.max_net_namespaces{limit}, is reached; delete namespaces or raise the limit")
    raise OSError(err, f"unshare: {os.strerror(err)}", name)


def _begin(name: str) -> tuple[str, int]:
    """Make the named namespace and leave the calling thread in it: (its file's path, the fd of the
    thread's own namespace to go back to). If it cannot be made, the thread is back and nothing is left."""
    _prepare_dir()
    home = _home_fd()  # before the file is made: should it fail, nothing is left
    target = filename(name)
    _mountpoint(target)
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            _unshare_failed(name)
        _check(_libc.mount(b"/proc/thread-self/ns/net", target.encode(), b"none", MS_BIND, None),
               "bind the namespace", target)
    except BaseException:
        try:
            _back(home)
        finally:
            delete(name)
        raise
    return target, home


@contextlib.contextmanager
def creating(name: str) -> Iterator[str]:
    """Create the named namespace and run the block inside it (a socket opened there stays there): one
    entry instead of create-then-enter. If the block fails, the namespace is removed."""
    target, home = _begin(name)
    try:
        try:
            yield target
        finally:
            _back(home)
    except BaseException:
        delete(name)
        raise


def pin(name: str, source: str | os.PathLike[str]) -> Path:
    """Name an existing namespace (a container's `/proc/PID/ns/net`): bind it under the netns folder, as
    `ip netns attach` does. It then outlives its processes until `delete`. FileExistsError if taken."""
    _prepare_dir()
    target = path(name)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)
    try:
        _check(_libc.mount(str(source).encode(), str(target).encode(), b"none", MS_BIND, None),
               "bind the namespace", target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def _unmount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount: {os.strerror(err)}", str(target))


def delete(name: str) -> bool:
    """Unmount and remove the named namespace; False if it was not there. The kernel frees it when the
    last process or socket inside lets go."""
    target = path(name)
    if not target.exists():
        return False
    _unmount(target)
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    return True


def delete_many(names: Iterable[str], threads: int = 8) -> list[str]:
    """Delete many namespaces; returns the names that were there. Every one is held open while all are
    unmounted and unlinked, and let go of at once after.

    - An unmount waits for an RCU grace period, and unmounts waiting at the same time share one, so a few
      threads take about the time one would.
    - An unlink of a file that is still a mount point scans every mount of the mount namespace and then
      waits for a grace period while it holds the folder's lock; unlinked after every unmount, a file is
      a mount point nowhere here and its unlink costs microseconds.
    - A namespace whose last reference goes is freed by the kernel's cleanup worker, which at thousands of
      namespaces (their devices, routes, neighbours) keeps both cores busy for seconds and stretched every
      grace period the unmounts still waiting needed: 16,000 pods took 0.8 ms each to delete, 500 took
      0.07. Held until all names are gone, they are freed in the worker's batches after this returns, and
      16,000 take 0.08 ms each."""
    targets = [t for t in map(path, names) if t.exists()]
    with _held(targets):
        if len(targets) < 4 * threads:
            for target in targets:
                _unmount(target)
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="netns-delete") as pool:
                list(pool.map(_unmount, targets, chunksize=32))
        for target in targets:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
    return [t.name for t in targets]


@contextlib.contextmanager
def _held(targets: list[Path]) -> Iterator[None]:
    """Hold a reference to each namespace (an open file) for the block. The soft limit on open files is
    raised toward the hard one for it, and put back after; namespaces beyond it are not held (they are
    deleted all the same, only sooner freed)."""
    _raise_file_limit(len(targets))
    fds: list[int] = []
    try:
        for target in targets:
            try:
                fds.append(os.open(target, os.O_RDONLY | os.O_CLOEXEC))
            except FileNotFoundError:
                continue
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE):
                    break
                raise
        yield
    finally:
        for fd in fds:
            os.close(fd)
        _lower_file_limit()


_limit_lock = threading.Lock()
_limit_raises = 0  # calls between _raise_file_limit and _lower_file_limit, in every thread
_limit_before: tuple[int, int] | None = None  # the limit before the first of them


def _raise_file_limit(more: int) -> None:
    """Raise the soft limit on open files by `more` (at most to the hard one). Counted, so that deletes in
    several threads at once put back the limit the first found, whatever order they end in."""
    global _limit_raises, _limit_before
    with _limit_lock:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if _limit_raises == 0:
            _limit_before = (soft, hard)
        _limit_raises += 1
        if soft != resource.RLIM_INFINITY:
            wanted = soft + more if hard == resource.RLIM_INFINITY else min(hard, soft + more)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _lower_file_limit() -> None:
    global _limit_raises
    with _limit_lock:
        _limit_raises -= 1
        if _limit_raises == 0 and _limit_before is not None:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, _limit_before)
