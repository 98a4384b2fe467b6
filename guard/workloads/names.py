# SPDX-License-Identifier: Apache-2.0
"""Which name each learned address came from, per workload: what lets an
event say `"dst": {"ip", "port", "name"}` (docs/events.md).

The kernel keeps the addresses themselves (bpf/lib/names.h: one table per
guarded cgroup, name ids, expiry); this is userspace's copy of the names,
fed from the answers of the workload's dns events, for the events only: a
name here opens nothing, and one missing costs only the `name` field.

    book = NameBook()
    book.learn(cgroup_id, "pypi.org", ["151.101.0.223"], ttl_s=300, now=time.monotonic())
    book.name_of(cgroup_id, "151.101.0.223", now)    # "pypi.org"

Addresses are compared as text: give them as the kernel's records write
them (guard/kernel/records.py and guard.detect.classify.dns both use
inet_ntop), not as the policy or a user wrote them.

Bounds: at most per_workload addresses per workload (learning one more
evicts that workload's least recently learned address) and `total` overall.
At the overall bound the least recently learned address of the workload
holding the most addresses goes (the earliest of them to reach that size on
a tie): a workload that learns without end evicts its own entries first,
and can shrink another's only while that other holds more than it does.
Both evictions are O(1) amortised: workloads are kept in buckets by size,
the way an LFU cache keeps its counts. Each address keeps at most NAMES_PER_ADDRESS
names (as the kernel does, CDNs share addresses), the oldest dropped first.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

__all__ = ["NameBook", "NAMES_PER_ADDRESS"]

#: Names one address answers to at once (GUARD_DNS_NAMES_PER_ADDR in the kernel).
NAMES_PER_ADDRESS = 4

# One address's names: [name, expires] pairs, most recently learned last.
_Names = list


class NameBook:
    """Address -> name, per workload (an int: the guarded cgroup's id). Pure
    Python, no I/O; `now` is the caller's clock (time.monotonic()), seconds."""

    def __init__(self, per_workload: int = 4096, total: int = 65536):
        if per_workload < 1 or total < 1:
            raise ValueError("per_workload and total must be at least 1")
        self.per_workload = per_workload
        self.total = total
        # workload -> address -> names; each dict in order of learning, oldest first
        self._books: dict[int, OrderedDict[str, _Names]] = {}
        self._size = 0
        # size -> workloads of that size (a dict as an ordered set); the largest size
        self._by_size: dict[int, dict[int, None]] = {}
        self._largest = 0

    def __len__(self) -> int:
        """Addresses held over all workloads (expired ones not yet dropped included)."""
        return self._size

    def learn(self, workload: int, name: str, addresses: Iterable[str], ttl_s: float,
              now: float) -> None:
        """name answered with addresses, valid ttl_s seconds from now, in
        workload. Learning a name again for an address extends it (the later
        expiry wins) and makes it that address's most recent name. A ttl_s
        of 0 or less learns nothing."""
        if ttl_s <= 0:
            return
        expires = now + ttl_s
        for address in addresses:
            self._learn_one(workload, name, address, expires, now)

    def name_of(self, workload: int, ip: str, now: float) -> str | None:
        """The name most recently learned for ip in workload that has not
        expired; None when there is none."""
        book = self._books.get(workload)
        names = book.get(ip) if book is not None else None
        if names is None:
            return None
        live = [entry for entry in names if entry[1] > now]
        if not live:
            self._drop(workload, book, ip)
            return None
        if len(live) < len(names):
            names[:] = live
        return live[-1][0]

    def forget(self, workload: int) -> None:
        """Everything learned in workload (it went, or its table was reset)."""
        book = self._books.pop(workload, None)
        if book is None:
            return
        self._size -= len(book)
        self._resize(workload, len(book), 0)

    # -- inside ------------------------------------------------------------------
    def _learn_one(self, workload: int, name: str, address: str, expires: float,
                   now: float) -> None:
        book = self._books.get(workload)
        if book is None:
            book = self._books[workload] = OrderedDict()
        names = book.get(address)
        if names is not None:
            book.move_to_end(address)
            kept = [entry for entry in names if entry[0] != name and entry[1] > now]
            previous = [entry[1] for entry in names if entry[0] == name]
            kept.append([name, max([expires, *previous])])
            names[:] = kept[-NAMES_PER_ADDRESS:]
            return
        if len(book) >= self.per_workload:
            self._drop(workload, book, next(iter(book)))
        elif self._size >= self.total:
            self._evict_from_largest()
        book = self._books.setdefault(workload, book)   # an eviction may have emptied it
        book[address] = [[name, expires]]
        self._size += 1
        self._resize(workload, len(book) - 1, len(book))

    def _evict_from_largest(self) -> None:
        victim = next(iter(self._by_size[self._largest]))
        book = self._books[victim]
        self._drop(victim, book, next(iter(book)))

    def _drop(self, workload: int, book: OrderedDict[str, _Names], address: str) -> None:
        del book[address]
        self._size -= 1
        self._resize(workload, len(book) + 1, len(book))
        if not book:
            del self._books[workload]

    def _resize(self, workload: int, old: int, new: int) -> None:
        """Move workload from the bucket of size old to that of size new."""
        if old:
            bucket = self._by_size[old]
            del bucket[workload]
            if not bucket:
                del self._by_size[old]
        if new:
            self._by_size.setdefault(new, {})[workload] = None
        if new > self._largest:
            self._largest = new
        # sizes move by one (or to 0, for forget): walk down to a bucket in use
        while self._largest and self._largest not in self._by_size:
            self._largest -= 1
