"""The VPC's addresses: each subnet's book of free ones, which ENI holds each, those kept for claims."""
from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address

from eni_core.model import Subnet
from eni_core.ports import InsufficientAddresses, InvalidParameter, NotFound, VpcError

__all__ = ["AddressBook", "AddressSpace", "usable_range"]


def usable_range(subnet: Subnet) -> tuple[IPv4Address, IPv4Address]:
    """The first and last address anyone may bind: the network address and the gateway(s) (`reserved`
    minus one) are reserved at the start, the broadcast address at the end.

    >>> from ipaddress import IPv4Network
    >>> usable_range(Subnet("subnet-a", IPv4Network("10.0.1.0/24")))
    (IPv4Address('10.0.1.2'), IPv4Address('10.0.1.254'))
    """
    net = int(subnet.cidr.network_address)
    return IPv4Address(net + subnet.reserved - 1), IPv4Address(net + subnet.size - 2)


class AddressBook:
    """Free addresses of one subnet; hands out the lowest free address, or a chosen one.

    Addresses never handed out are counted by a cursor and returned ones kept in a heap, so taking and
    giving back cost O(log n) of the addresses given back, whatever the subnet's size.
    """

    def __init__(self, subnet: Subnet) -> None:
        self.subnet = subnet
        self._first, self._last = (int(ip) for ip in usable_range(subnet))
        self._next = self._first
        self._released: list[int] = []
        self.used: set[int] = set()

    @property
    def available(self) -> int:
        return self.subnet.size - self.subnet.reserved - len(self.used)

    def contains(self, ip: IPv4Address) -> bool:
        return self._first <= int(ip) <= self._last

    def take(self) -> IPv4Address:
        while self._released:
            n = heapq.heappop(self._released)
            if n not in self.used:
                self.used.add(n)
                return IPv4Address(n)
        while self._next <= self._last:
            n = self._next
            self._next += 1
            if n not in self.used:
                self.used.add(n)
                return IPv4Address(n)
        raise InsufficientAddresses(f"subnet {self.subnet.id} ({self.subnet.cidr}) has no free address")

    def take_exactly(self, ip: IPv4Address) -> None:
        n = int(ip)
        if not self.contains(ip):
            raise InvalidParameter(f"{ip} is not a usable address of {self.subnet.id} ({self.subnet.cidr})")
        if n in self.used:
            raise InsufficientAddresses(f"{ip} in {self.subnet.id} is already in use")
        self.used.add(n)

    def give_back(self, ip: IPv4Address) -> None:
        n = int(ip)
        self.used.discard(n)
        if n < self._next:
            heapq.heappush(self._released, n)


class AddressSpace:
    """Every address of the VPC: each subnet's book, which ENI holds each bound address (`owner`, the
    SDN's truth), the addresses kept for claims (`retained`: in use, on no ENI) and the hosts'."""

    def __init__(self, subnets: Iterable[Subnet]) -> None:
        self.subnets = {s.id: s for s in subnets}
        self.books = {s.id: AddressBook(s) for s in self.subnets.values()}
        self.owner: dict[IPv4Address, str] = {}
        self.retained: set[IPv4Address] = set()
        self.hosts: dict[str, IPv4Address] = {}

    def book(self, subnet_id: str) -> AddressBook:
        try:
            return self.books[subnet_id]
        except KeyError:
            raise NotFound(f"subnet {subnet_id} does not exist") from None

    def available(self, subnet_id: str) -> int:
        return self.books[subnet_id].available

    def subnet_of(self, ip: IPv4Address) -> str | None:
        for s in self.subnets.values():
            if ip in s.cidr:
                return s.id
        return None

    def add_host(self, name: str, subnet_id: str, ip: IPv4Address) -> None:
        self.books[subnet_id].take_exactly(ip)
        self.hosts[name] = ip

    def take(self, subnet_id: str, count: int, wanted: Sequence[IPv4Address] = (), *,
             for_eni: str = "", from_claims: bool = True) -> list[IPv4Address]:
        """The `wanted` addresses (a retained one comes back from its claim, unless not `from_claims`),
        else `count` free ones, all or none: on a failure those taken are given back as they were.
        `for_eni` names the ENI in errors."""
        book = self.books[subnet_id]
        n = len(wanted) or count
        if not wanted and book.available < n:
            raise InsufficientAddresses(f"subnet {subnet_id} has {book.available} free addresses, {n} asked")
        was_retained = {ip for ip in wanted if from_claims and ip in self.retained}
        got: list[IPv4Address] = []
        try:
            for ip in wanted:
                if ip in was_retained:
                    if not book.contains(ip):
                        raise InvalidParameter(f"{ip} is not in {subnet_id}, the subnet of {for_eni}")
                    self.retained.discard(ip)
                else:
                    book.take_exactly(ip)
                got.append(ip)
            while len(got) < n:
                got.append(book.take())
        except VpcError:
            for ip in got:
                if ip in was_retained:
                    self.retained.add(ip)
                else:
                    book.give_back(ip)
            raise
        return got

    def reserve(self, subnet_id: str, count: int, wanted: Sequence[IPv4Address] = ()) -> list[IPv4Address]:
        """Free addresses (`count`, or exactly `wanted`) straight into the retained set, on no ENI."""
        self.book(subnet_id)
        if (len(wanted) or count) <= 0:
            raise InvalidParameter("reserve at least one address")
        got = self.take(subnet_id, count, wanted, from_claims=False)
        self.retained.update(got)
        return got

    def hold(self, eni_id: str, ips: Iterable[IPv4Address]) -> None:
        """The addresses are now bound to the ENI."""
        for ip in ips:
            self.owner[ip] = eni_id

    def give_back(self, subnet_id: str, ips: Iterable[IPv4Address], retain: bool = False) -> None:
        """Unbind addresses: free in their subnet again, or with `retain` kept for a claim."""
        book = self.books[subnet_id]
        for ip in ips:
            self.owner.pop(ip, None)
            if retain:
                self.retained.add(ip)
            else:
                book.give_back(ip)

    def release_retained(self, ips: Sequence[IPv4Address]) -> None:
        """Give addresses kept for claims back to their subnets."""
        missing = [ip for ip in ips if ip not in self.retained]
        if missing:
            raise NotFound(f"{missing[0]} is not a retained address")
        for ip in ips:
            self.retained.discard(ip)
            self.books[self.subnet_of(ip)].give_back(ip)
