"""The fast paths of the netlink client and of namespace creation keep their promises: one ack per
batch still names every request the kernel refused; namespace files made as links behave as `ip netns`
files do, and creation still works when linking is impossible."""
from __future__ import annotations

import errno
import itertools
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address

import pytest

from eni_core import netlink as nl
from eni_core import netns
from eni_core.kernel import NamespaceKernel
from testbed.world.runs import Run

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def run():
    """The module's run record: every namespace a test here makes is recorded in it first, so a test
    killed mid-way (`kill -9`) leaves nothing `enilab clean` would not remove."""
    made = Run.new(purpose="tests/netns/test_fast_paths")
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
def reserve(run):
    """Record a name under the run's prefix before it is made; the name."""
    return lambda full: run.reserve(full.removeprefix(run.prefix + "-"))


_made = itertools.count()


@pytest.fixture
def name(run):
    made = run.reserve(f"t{next(_made)}")
    yield made
    netns.delete(made)


def test_one_ack_per_batch_still_names_each_refused_request(name):
    netns.create(name)
    kernel = NamespaceKernel(name)
    try:
        rule = nl.rule_msg(True, priority=900, table=100, src=IPv4Address("10.1.0.1"), src_len=32)
        missing_link = nl.addr_add(999, IPv4Address("10.1.0.2"))
        errors = kernel.sock.apply([rule, missing_link, rule, nl.link_set(1, up=True)])
        assert [e.what for e in errors] == [missing_link.what, rule.what]  # in order; the last one succeeded
        assert kernel.sock.apply([nl.link_set(1, up=True)]) == []  # nothing stale left for the next batch
        assert [r.priority for r in kernel.rules()].count(900) == 1 and kernel.link("lo").up
        big = [nl.rule_msg(True, priority=1000 + i, table=100, src=IPv4Address(f"10.2.{i // 250}.{i % 250}"),
                           src_len=32) for i in range(3000)]  # several sends; only the last asks for an ack
        assert kernel.sock.apply(big) == []
        assert sum(1000 <= r.priority < 4000 for r in kernel.rules()) == 3000
    finally:
        kernel.close()


def test_requests_sent_without_acks_report_failures_later(name):
    netns.create(name)
    kernel = NamespaceKernel(name)
    try:
        kernel.sock.sock.send(nl.encode([nl.link_set(1, up=True), nl.addr_add(999, IPv4Address("10.1.0.2"))]))
        errors = kernel.sock.queued_errors()
        assert len(errors) == 1 and errors[0].errno == 19  # ENODEV
        assert kernel.sock.queued_errors() == [] and kernel.link("lo").up
    finally:
        kernel.close()


def test_sockets_sharing_a_threads_answer_buffer_never_read_each_others_answers(name):
    """Every socket of a thread reads into one buffer: a dump from one socket interleaved with batches
    and dumps of another, and the same in another thread at once, each reads its own answers."""
    netns.create(name)
    here, there = NamespaceKernel(name), NamespaceKernel(name)
    try:
        here.check([nl.link_set(1, up=True)] + [
            nl.route_msg(True, table=100, dst=IPv4Address(f"10.9.{i // 250}.{i % 250}"), dst_len=32, oif=1,
                         scope=nl.RT_SCOPE_LINK) for i in range(600)])  # a dump of several datagrams
        expected = sorted(str(r.dst) for r in here.routes() if r.table == 100)
        assert len(expected) == 600

        def interleaved() -> list[str]:
            seen = []
            for r in here.sock._dump(nl.RTM_GETROUTE, nl._RTMSG.pack(nl.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
                # between two messages of one socket's dump, another socket reads a batch's answer
                assert there.sock.apply([nl.link_set(1, up=True), nl.addr_add(999, IPv4Address("10.8.0.1"))])
                seen.append(r)
            return sorted(str(nl._decode_route(p).dst) for _, p in seen if nl._decode_route(p).table == 100)

        assert interleaved() == expected
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: sorted(str(r.dst) for r in NamespaceKernel(name).routes()
                                                     if r.table == 100), range(8)))
        assert results == [expected] * 8
    finally:
        here.close()
        there.close()


def test_namespace_files_are_links_that_ip_netns_sees_and_removes(name, reserve):
    second = reserve(name + "-b")
    try:
        netns.create(name)
        netns.create(second)
        assert os.readlink(f"/proc/{os.getpid()}/ns/net") != _ns_of(name) != _ns_of(second)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert name in listed and second in listed
        with pytest.raises(FileExistsError):
            netns.create(name)
        subprocess.run(["ip", "netns", "del", second], check=True)
        assert not netns.exists(second) and netns.exists(name)
    finally:
        netns.delete(second)


def test_creation_falls_back_to_a_new_file_when_no_link_can_be_made(name, monkeypatch):
    monkeypatch.setattr(netns, "_shared_fd", -1)  # as where O_TMPFILE or linkat is refused
    netns.create(name)
    assert os.stat(netns.path(name)).st_ino != 0 and _ns_of(name).startswith("net:[")


def test_a_failed_block_removes_the_namespace_it_made(name):
    with pytest.raises(RuntimeError), netns.creating(name):
        raise RuntimeError("wiring failed")
    assert not netns.exists(name)


def test_a_namespace_that_cannot_be_bound_is_not_left_behind_and_the_thread_is_back(name, monkeypatch):
    home = os.readlink("/proc/thread-self/ns/net")
    check = netns._check

    def refuse_the_bind(rc, what, where=""):
        if what == "bind the namespace":
            raise OSError(errno.EPERM, what)
        check(rc, what, where)

    monkeypatch.setattr(netns, "_check", refuse_the_bind)
    with pytest.raises(OSError, match="bind the namespace"):
        netns.create(name)
    assert not netns.exists(name) and os.readlink("/proc/thread-self/ns/net") == home


def test_run_in_answers_from_inside_the_namespace_and_comes_back_whatever_happens(name):
    netns.create(name)
    home = os.readlink("/proc/thread-self/ns/net")
    assert netns.run_in(name, lambda: os.readlink("/proc/thread-self/ns/net")) == _ns_of(name) != home
    with pytest.raises(KeyError):
        netns.run_in(netns.path(name), lambda: {}["missing"])
    assert os.readlink("/proc/thread-self/ns/net") == home
    with pytest.raises(FileNotFoundError):
        netns.run_in(name + "-never-made", lambda: None)
    assert os.readlink("/proc/thread-self/ns/net") == home


@pytest.mark.parametrize("way", ["run_in", "entered"])
def test_an_interrupt_the_moment_the_thread_moves_in_still_brings_it_back(name, monkeypatch, way):
    netns.create(name)
    here = os.readlink("/proc/thread-self/ns/net")
    home, move = netns._home_fd(), netns.setns

    def interrupted(fd):  # Ctrl-C lands as the kernel has moved the thread, before Python knows it
        move(fd)
        if fd != home:
            raise KeyboardInterrupt

    monkeypatch.setattr(netns, "setns", interrupted)
    with pytest.raises(KeyboardInterrupt):
        if way == "run_in":
            netns.run_in(name, lambda: None)
        else:
            with netns.entered(name):
                pass
    assert os.readlink("/proc/thread-self/ns/net") == here


def test_a_thread_the_kernel_will_not_take_home_is_never_taken_for_home_again(name, reserve, monkeypatch):
    netns.create(name)
    other = reserve(name + "-other")
    move = netns.setns

    def refuse_home(fd):
        if fd == netns._home.held.fd:
            raise OSError(errno.ENOMEM, "setns: Cannot allocate memory")
        move(fd)

    def in_a_thread_of_its_own():  # the thread is left in the namespace; it ends with the test
        home = os.readlink("/proc/thread-self/ns/net")
        monkeypatch.setattr(netns, "setns", refuse_home)
        with pytest.raises(OSError, match="could not return to its own network namespace"):
            netns.run_in(name, lambda: None)
        assert os.readlink("/proc/thread-self/ns/net") == _ns_of_file(name) != home
        monkeypatch.setattr(netns, "setns", move)
        for again in (lambda: netns.run_in(name, lambda: None), lambda: netns.create(other)):
            with pytest.raises(OSError, match="could not return to its own network namespace"):
                again()
        assert not netns.exists(other)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(in_a_thread_of_its_own).result()
    assert netns.run_in(name, lambda: "this thread is fine") == "this thread is fine"


def test_a_thread_refused_the_move_in_is_home_says_why_and_may_go_on(name, monkeypatch):
    netns.create(name)
    move = netns.setns

    def refused(fd):  # a thread without CAP_SYS_ADMIN: every setns is refused, home's too
        raise OSError(errno.EPERM, "setns: Operation not permitted")

    def in_a_thread_of_its_own():
        monkeypatch.setattr(netns, "setns", refused)
        with pytest.raises(OSError, match="Operation not permitted") as err:
            netns.run_in(name, lambda: None)
        assert "could not return" not in str(err.value)
        monkeypatch.setattr(netns, "setns", move)
        return netns.run_in(name, lambda: os.readlink("/proc/thread-self/ns/net"))

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(in_a_thread_of_its_own).result() == _ns_of_file(name)


def test_threads_that_entered_a_namespace_keep_no_file_open_once_they_end(name):
    netns.create(name)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        threads = [threading.Thread(target=netns.run_in, args=(name, lambda: None)) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(os.listdir("/proc/self/fd")) <= before + 2  # 150 threads: not 150 fds more


def test_a_thread_that_cannot_open_its_own_namespace_makes_no_file(name, monkeypatch):
    def out_of_files():
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(netns, "_home_fd", out_of_files)
    with pytest.raises(OSError, match="Too many open files"):
        netns.create(name)
    assert not netns.exists(name)


def _ns_of_file(name: str) -> str:
    return f"net:[{os.stat(netns.path(name)).st_ino}]"


def _ns_of(name: str) -> str:
    with netns.entered(name):
        return os.readlink("/proc/thread-self/ns/net")


def test_delete_many_removes_what_is_there_and_names_it(name, reserve):
    names = [reserve(f"{name}-{i}") for i in range(40)]
    try:
        for made in names[:35]:
            netns.create(made)
        assert netns.delete_many(names) == names[:35]  # five were never made: not an error, not named
        assert not any(netns.exists(n) for n in names)
        assert netns.delete_many(names[:3]) == []
    finally:
        for made in names:
            netns.delete(made)


def test_delete_many_deletes_more_namespaces_than_the_process_may_hold_open_and_puts_its_limit_back(name, reserve):
    """delete_many holds every namespace open until all names are gone: with a hard limit of 48 open
    files it holds what it can, deletes all 120, and leaves the limit as it found it."""
    for i in range(120):
        reserve(f"{name}-{i}")  # the child makes them; this process's record lists them first
    script = f"""
import resource, sys
from eni_core import netns
names = [f"{name}-{{i}}" for i in range(120)]
try:
    for n in names:
        netns.create(n)
    resource.setrlimit(resource.RLIMIT_NOFILE, (40, 48))
    gone = netns.delete_many(names)
    print(len(gone), sum(netns.exists(n) for n in names), resource.getrlimit(resource.RLIMIT_NOFILE))
finally:
    for n in names:
        netns.delete(n)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["120", "0", "(40,", "48)"]


def test_deletes_in_several_threads_at_once_put_back_the_limit_on_open_files(name, reserve, monkeypatch):
    """Each raises the soft limit for its own namespaces. Here all four have raised it before any ends, and
    they end in the other order than they began: the limit the first found is the one left."""
    import resource
    import threading
    import time

    found = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, found[1]), found[1]))  # room to raise it
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    batches = [[reserve(f"{name}-{t}-{i}") for i in range(10)] for t in range(4)]
    all_raised = threading.Barrier(len(batches))
    waited: set[int] = set()
    unmount = netns._unmount

    def unmount_when_all_have_raised(target):
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            all_raised.wait(timeout=30)
            time.sleep(0.03 * int(target.name.split("-")[-2]))  # the first to begin ends first
        unmount(target)

    monkeypatch.setattr(netns, "_unmount", unmount_when_all_have_raised)
    try:
        for made in (n for batch in batches for n in batch):
            netns.create(made)
        gone: list[list[str]] = []
        threads = [threading.Thread(target=lambda b=b: gone.append(netns.delete_many(b))) for b in batches]
        for t in threads:
            t.start()
            time.sleep(0.02)  # they begin in order
        for t in threads:
            t.join()
        assert sorted(map(sorted, gone)) == sorted(map(sorted, batches))
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == before
    finally:
        monkeypatch.undo()
        resource.setrlimit(resource.RLIMIT_NOFILE, found)
        for made in (n for batch in batches for n in batch):
            netns.delete(made)


def test_links_decoded_by_the_codec_match_pyroute2s_reading(name):
    """The link decoder stops at the last attribute it needs: name, MAC, flags and operational state
    must still match what pyroute2 reads, for links up, down, ready and not."""
    from pyroute2 import IPRoute

    netns.create(name)
    kernel = NamespaceKernel(name)
    fd = os.open(netns.path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        kernel.check([nl.link_set(1, up=True),
                      nl.veth_add("a0", "b0", fd, mac="02:00:00:00:0a:00", peer_mac="02:00:00:00:0b:00"),
                      nl.veth_add("down0", "down1", fd, up=False)])
        kernel.check([nl.link_set(kernel.link("b0").index, up=True)])
        kernel.link("a0")  # both ends have carrier now: reading each runs its pending link-watch work,
        kernel.link("b0")  # so a dump right after and pyroute2's later one see the same state
        ours = {lk.ifname: (lk.index, lk.mac, lk.up, lk.oper_up) for lk in kernel.links()}
        # the readiness read stops at the operational state; it reads what the whole decoding reads
        assert {n: kernel.oper_up(n) for n in ours} == {n: v[3] for n, v in ours.items()}
        assert kernel.oper_up("absent0") is None
    finally:
        os.close(fd)
        kernel.close()
    with netns.entered(name), IPRoute() as ipr:
        theirs = {m.get_attr("IFLA_IFNAME"): (m["index"], m.get_attr("IFLA_ADDRESS"), bool(m["flags"] & 1),
                                              m.get_attr("IFLA_OPERSTATE") == "UP") for m in ipr.get_links()}
    assert ours == theirs
    assert ours["a0"][1:] == ("02:00:00:00:0a:00", True, True) and ours["down0"][2:] == (False, False)


def test_a_dump_of_one_table_is_filtered_by_the_kernel_and_leaves_the_socket_as_it_was(name):
    """`routes(table)` asks the kernel for one table (strict checking, for that request only): the same
    routes pyroute2 reads in that table, none for a table that does not exist, and the socket's next
    dumps (which strict checking would judge otherwise) work as before."""
    from pyroute2 import IPRoute

    netns.create(name)
    kernel = NamespaceKernel(name)
    try:
        kernel.check([nl.link_set(1, up=True),
                      nl.route_msg(True, table=nl.RT_TABLE_MAIN, dst=IPv4Address("10.9.0.0"), dst_len=16, oif=1,
                                   scope=nl.RT_SCOPE_LINK),
                      nl.route_msg(True, table=2003, dst=None, dst_len=0, oif=1, scope=nl.RT_SCOPE_LINK)])
        main, eni, absent = kernel.routes(nl.RT_TABLE_MAIN), kernel.routes(2003), kernel.routes(2999)
        strict = kernel.sock.sock.getsockopt(nl.SOL_NETLINK, nl.NETLINK_GET_STRICT_CHK)
        everything = kernel.routes()
        links, rules = kernel.links(), kernel.rules()

        def failing(mtype, body, absent_ok=False):
            raise nl.NetlinkError(errno.EINVAL, "dump")
            yield

        kernel.sock._dump = failing
        with pytest.raises(nl.NetlinkError):
            kernel.routes(nl.RT_TABLE_MAIN)
        strict_after_error = kernel.sock.sock.getsockopt(nl.SOL_NETLINK, nl.NETLINK_GET_STRICT_CHK)
    finally:
        kernel.close()
    with netns.entered(name), IPRoute() as ipr:
        theirs = {t: sorted((r.get_attr("RTA_DST"), r["dst_len"]) for r in ipr.route("dump", family=2)
                            if r.get_attr("RTA_TABLE") == t) for t in (nl.RT_TABLE_MAIN, 2003)}
    assert sorted((str(r.dst) if r.dst else None, r.dst_len) for r in main) == theirs[nl.RT_TABLE_MAIN] == [
        ("10.9.0.0", 16)]
    assert [(r.table, r.dst) for r in eni] == [(2003, None)] and absent == []
    assert {r.table for r in everything} == {nl.RT_TABLE_MAIN, 255, 2003}
    assert [lk.ifname for lk in links] == ["lo"] and len(rules) == 3
    assert strict == 0 and strict_after_error == 0  # strict checking was for the one request
