"""The codec against kernel answers it does not meet every day, from a fake socket (no root): a dump the
kernel marks interrupted (NLM_F_DUMP_INTR) is read again, not taken as the table; answers lost to a full
receive buffer (ENOBUFS) are an error that says so, and leave nothing queued for the next call."""
from __future__ import annotations

import errno
import struct

import pytest

from eni_core import netlink as nl

NLM_F_DUMP_INTR = 0x10  # the kernel's, from linux/netlink.h

def _msg(mtype: int, flags: int, seq: int, payload: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 0) + payload


def _link(index: int, name: str, flags: int, seq: int) -> bytes:
    body = struct.pack("=BxHiII", nl.AF_UNSPEC, 0, index, 0, 0) + nl._str(nl.IFLA_IFNAME, name)
    return _msg(nl.RTM_NEWLINK, nl.F_MULTI | flags, seq, body)


class FakeSocket:
    """Answers the n-th request sent with `answers[n](seq)`: the datagrams the kernel would queue."""

    def __init__(self, answers) -> None:
        self.answers = list(answers)
        self.queued: list[bytes] = []
        self.sent = 0

    def send(self, frame: bytes) -> int:
        seq = struct.unpack_from("=IHHII", frame)[3]
        self.queued += self.answers[self.sent](seq)
        self.sent += 1
        return len(frame)

    def recv_into(self, buf, size: int = 0, flags: int = 0) -> int:
        if not self.queued and flags & nl._MSG_DONTWAIT:
            raise BlockingIOError(errno.EAGAIN, "nothing queued")
        data = self.queued.pop(0)
        if isinstance(data, OSError):  # what the kernel says on the read after it dropped answers
            raise data
        buf[:len(data)] = data
        return len(data)

    def close(self) -> None:
        pass


def _socket(answers) -> nl.NetlinkSocket:
    s = object.__new__(nl.NetlinkSocket)
    s.sock, s.seq, s._buf = FakeSocket(answers), 0, nl._answer_buffer()
    return s


def _interrupted(seq: int) -> list[bytes]:  # eth1 was being made while the kernel dumped: it is missing
    return [_link(1, "lo", NLM_F_DUMP_INTR, seq) + _msg(nl.NLMSG_DONE, nl.F_MULTI | NLM_F_DUMP_INTR, seq, b"\0" * 4)]


def _whole(seq: int) -> list[bytes]:
    return [_link(1, "lo", 0, seq) + _link(3, "eth1", 0, seq), _msg(nl.NLMSG_DONE, nl.F_MULTI, seq, b"\0" * 4)]


def test_an_interrupted_dump_is_read_again_and_the_whole_table_returned():
    s = _socket([_interrupted, _whole])
    assert [link.ifname for link in s.links()] == ["lo", "eth1"]
    assert s.sock.sent == 2


def test_a_dump_interrupted_every_time_is_an_error_not_a_partial_table():
    s = _socket([_interrupted] * 20)
    with pytest.raises(nl.NetlinkError, match="interrupted"):
        s.links()
    assert 1 < s.sock.sent < 20


def _error(seq: int, code: int) -> bytes:
    return _msg(nl.NLMSG_ERROR, 0, seq, struct.pack("=i", -code) + b"\0" * 16)


def test_answers_lost_to_a_full_buffer_are_an_error_saying_so_and_the_next_batch_reads_only_its_own():
    def overflowed(seq: int) -> list:  # the batch of three, sent at once: a failure, then answers dropped
        return [_error(seq, errno.EEXIST), OSError(errno.ENOBUFS, "No buffer space available"), _error(seq + 2, 0)]

    def fine(seq: int) -> list:
        return [_error(seq, 0)]

    s = _socket([overflowed, fine])
    batch = [nl.link_set(1, up=True), nl.link_set(2, up=True), nl.link_set(3, up=True)]
    with pytest.raises(nl.NetlinkError, match="overflowed the socket's buffer") as err:
        s.apply(batch)
    assert err.value.errno == errno.ENOBUFS and s.sock.queued == []  # the rest was read away
    assert s.apply([nl.link_set(1, up=True)]) == []


def test_sequence_numbers_start_again_from_1_when_32_bits_run_out():
    s = _socket([lambda seq: [_error(seq + 1, 0)], lambda seq: [_error(seq, 0)]])
    s.seq = nl.SEQ_MAX - 2  # an agent up for months
    assert s.apply([nl.link_set(1, up=True), nl.link_set(2, up=True)]) == []  # seqs MAX - 1 and MAX
    assert s.seq == nl.SEQ_MAX
    assert s.apply([nl.link_set(1, up=True)]) == [] and s.seq == 1
