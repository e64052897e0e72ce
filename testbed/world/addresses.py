"""The VPC's addresses: each subnet's book of free ones, which ENI holds each, those kept for claims."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from ipaddress import IPv4Address

from eni_core.model import Subnet
from eni_core.ports import InsufficientAddresses, InvalidParameter, NotFound, VpcError

__all__ = ["BLOCK", "AddressBook", "AddressSpace", "Owners", "UsedAddresses", "usable_range"]

BLOCK = 64  # addresses per block of an AddressBook's table: one byte each, a cache line


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

    The addresses below a cursor (those handed out so far) are one byte each in a table, 1 while in
    use; a hint says below which none is free. The table is read in blocks of `BLOCK` addresses (one
    cache line), and a second table says, a byte per block, which blocks have a free address: the lowest
    free one is the first open block at or after the hint's, then the first free byte in that block.
    Taking or giving back an address reads its byte and its block's. Addresses taken by name beyond
    the cursor wait in a set until it reaches them.

    A subnet of 65,536 addresses needs 64 KiB and 1 KiB. A set of taken addresses and a heap of given-back
    ones (the first design) held two objects per address, spread over the heap, each a cache miss in a
    large cluster. Reading the table on from the hint (the second) read some 930 bytes per address
    handed out in a /16 shared by 5,000 nodes, against 108 with 500 nodes: the gaps between free
    addresses grow with the subnet's use, and a cost per event grew with the cluster.
    """

    def __init__(self, subnet: Subnet) -> None:
        self.subnet = subnet
        self._first, self._last = (int(ip) for ip in usable_range(subnet))
        self._next = self._first  # the cursor: every address below it is in `_taken`
        self._taken = bytearray()  # address first + i: 1 while in use
        self._hint = self._first  # no address below it is free
        self._open = bytearray()  # block k of `_taken` (addresses first + k * BLOCK ...): 1 if one is free
        self._ahead: set[int] = set()  # taken by name at or beyond the cursor
        self._count = 0
        self._owner: list[str | None] = []  # beside `_taken`: the ENI each address is bound to
        self._owner_ahead: dict[int, str] = {}  # the same for addresses at or beyond the cursor
        self.owned = 0  # addresses bound to an ENI

    @property
    def available(self) -> int:
        return self.subnet.size - self.subnet.reserved - self._count

    @property
    def used(self) -> UsedAddresses:
        """The addresses in use, as integers (`n in book.used`, `len(book.used)`)."""
        return UsedAddresses(self)

    def contains(self, ip: IPv4Address) -> bool:
        return self._first <= int(ip) <= self._last

    def is_used(self, n: int) -> bool:
        if n < self._next:
            return n >= self._first and self._taken[n - self._first] == 1
        return n in self._ahead

    def take(self) -> IPv4Address:
        first = self._first
        if self._hint < self._next:
            k = self._open.find(1, (self._hint - first) // BLOCK)
            if k >= 0:  # its free address is at or above the hint: none is below it
                i = self._taken.find(0, k * BLOCK, (k + 1) * BLOCK)
                self._taken[i] = 1
                self._count += 1
                self._hint = first + i + 1
                self._close_if_full(k)
                return IPv4Address(first + i)
            self._hint = self._next
        while self._next <= self._last:
            n = self._next
            self._next += 1
            if len(self._taken) % BLOCK == 0:
                self._open.append(0)  # a new block, full so far
            self._taken.append(1)
            self._owner.append(self._owner_ahead.pop(n, None) if self._owner_ahead else None)
            self._hint = self._next
            if n in self._ahead:
                self._ahead.discard(n)  # taken by name before the cursor came: in use, in the table now
                continue
            self._count += 1
            return IPv4Address(n)
        raise InsufficientAddresses(f"subnet {self.subnet.id} ({self.subnet.cidr}) has no free address")

    def take_exactly(self, ip: IPv4Address) -> None:
        n = int(ip)
        if not self.contains(ip):
            raise InvalidParameter(f"{ip} is not a usable address of {self.subnet.id} ({self.subnet.cidr})")
        if self.is_used(n):
            raise InsufficientAddresses(f"{ip} in {self.subnet.id} is already in use")
        if n < self._next:
            self._taken[n - self._first] = 1
            self._close_if_full((n - self._first) // BLOCK)
        else:
            self._ahead.add(n)
        self._count += 1

    def _close_if_full(self, k: int) -> None:
        """Block `k` has just had an address taken: mark it full if it has no free one left."""
        if self._taken.find(0, k * BLOCK, (k + 1) * BLOCK) < 0:
            self._open[k] = 0

    def owner_of(self, n: int) -> str | None:
        """The ENI address `n` is bound to, if any."""
        if n < self._next:
            return self._owner[n - self._first] if n >= self._first else None
        return self._owner_ahead.get(n)

    def set_owner(self, n: int, eni_id: str | None) -> None:
        """Bind address `n` (in use) to an ENI, or with None unbind it."""
        was = self.owner_of(n)
        if n < self._next:
            self._owner[n - self._first] = eni_id
        elif eni_id is None:
            self._owner_ahead.pop(n, None)
        else:
            self._owner_ahead[n] = eni_id
        self.owned += (eni_id is not None) - (was is not None)

    def owners(self) -> Iterator[tuple[int, str]]:
        """(address, ENI) of every address bound to an ENI, lowest first."""
        first = self._first
        yield from ((first + i, eni) for i, eni in enumerate(self._owner) if eni is not None)
        yield from sorted(self._owner_ahead.items())

    def give_back(self, ip: IPv4Address) -> None:
        n = int(ip)
        if not self.is_used(n):
            return
        if n < self._next:
            self._taken[n - self._first] = 0
            self._open[(n - self._first) // BLOCK] = 1
            self._hint = min(self._hint, n)
        else:
            self._ahead.discard(n)
        self._count -= 1


class UsedAddresses:
    """A read-only view of the addresses of an `AddressBook` in use, as integers."""

    def __init__(self, book: AddressBook) -> None:
        self._book = book

    def __contains__(self, n: object) -> bool:
        return isinstance(n, int) and self._book.is_used(n)

    def __len__(self) -> int:
        return self._book._count

    def __iter__(self) -> Iterator[int]:
        book = self._book
        yield from (book._first + i for i, taken in enumerate(book._taken) if taken)
        yield from sorted(book._ahead)


class AddressSpace:
    """Every address of the VPC: each subnet's book, which ENI holds each bound address (`owner`, the
    SDN's truth), the addresses kept for claims (`retained`: in use, on no ENI) and the hosts'."""

    def __init__(self, subnets: Iterable[Subnet]) -> None:
        self.subnets = {s.id: s for s in subnets}
        self.books = {s.id: AddressBook(s) for s in self.subnets.values()}
        self.owner = Owners(self)
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

    def hold(self, subnet_id: str, eni_id: str, ips: Iterable[IPv4Address]) -> None:
        """The addresses (of the subnet, taken) are now bound to the ENI."""
        book = self.books[subnet_id]
        for ip in ips:
            book.set_owner(int(ip), eni_id)

    def give_back(self, subnet_id: str, ips: Iterable[IPv4Address], retain: bool = False) -> None:
        """Unbind addresses: free in their subnet again, or with `retain` kept for a claim."""
        book = self.books[subnet_id]
        for ip in ips:
            book.set_owner(int(ip), None)
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


class Owners(Mapping[IPv4Address, str]):
    """Which ENI holds each bound address of the VPC (the SDN's truth), read from the subnets' books: each
    keeps its addresses' ENIs in a list beside its table of taken ones, a few hundred KiB for a cluster of
    10,000 nodes where a dict of every bound address took megabytes, rebuilt as addresses came and went."""

    def __init__(self, space: AddressSpace) -> None:
        self._space = space

    def __getitem__(self, ip: IPv4Address) -> str:
        subnet = self._space.subnet_of(ip) if isinstance(ip, IPv4Address) else None
        eni = self._space.books[subnet].owner_of(int(ip)) if subnet is not None else None
        if eni is None:
            raise KeyError(ip)
        return eni

    def __iter__(self) -> Iterator[IPv4Address]:
        for book in self._space.books.values():
            yield from (IPv4Address(n) for n, _ in book.owners())

    def __len__(self) -> int:
        return sum(book.owned for book in self._space.books.values())
