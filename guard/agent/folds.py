# SPDX-License-Identifier: Apache-2.0
"""Folded connects: the flush of each fold window the kernel opens (bpf/lib/fold.h).

A logged connect that opens a window is reported at once, with the window's
start (record.fold_ns); the same process's connects to the same destination
under the same verdict after it are only counted in eg_connect_fold. When
the window ends the agent takes the entry (lookup and delete in one call)
and, if it counted any (N), writes one more connect event built like the
first, standing for those N connects: itself and "repeats": N - 1, with
"window_ms": W. Every connect event stands for 1 + repeats connects (a
stale window the kernel reopened reports its count the same way), so
connects reported = connect events + the sum of their repeats.

Due flushes wait in a heap the loop looks at every turn (one comparison
when nothing is due). At most PENDING_MAX wait, the size of the kernel's
map: past that a window is left to the kernel, whose next such connect
after 4 windows reports the count itself (record.repeats). A flush that
fails is counted and reported, never raised into the loop.
"""
from __future__ import annotations

import heapq
import itertools
import time
from typing import Any

from guard.kernel import abi, libbpf
from guard.kernel.records import ConnectRecord

WINDOW_MS_DEFAULT = 1000
PENDING_MAX = 16384   # eg_connect_fold max_entries (bpf/lib/fold.h)


def fold_key(record: ConnectRecord) -> bytes:
    """The eg_connect_fold key of the window a connect record opened
    (struct guard_fold_key, as fold_connect() fills it)."""
    header = record.header
    return abi.FOLD_KEY.pack(header.cgroup_id, header.pid, header.policy_id, record.addr,
                             record.port, record.family, record.proto, record.hook,
                             header.action, header.rule_id)


class Folds:
    """The fold windows the agent has still to flush. `agent` gives maps,
    clock, emit and error."""

    def __init__(self, agent, window_ms: int = WINDOW_MS_DEFAULT):
        self._agent = agent
        self.window_ms = window_ms
        # (due, CLOCK_BOOTTIME ns; sequence; key; the event that opened it; its policy id)
        self._due: list[tuple[int, int, bytes, dict[str, Any], int]] = []
        self._sequence = itertools.count()
        self.flushed = 0          # flush events written
        self.folded = 0           # connects they reported
        self.left_to_kernel = 0   # windows not queued (the queue was full)
        self.errors = 0           # flushes that failed

    def opened(self, record: ConnectRecord, event: dict[str, Any], policy_id: int) -> None:
        """A connect event that opened a window: flush it when the window ends."""
        if len(self._due) >= PENDING_MAX:
            self.left_to_kernel += 1
            return
        due = record.fold_ns + self.window_ms * 1_000_000
        heapq.heappush(self._due, (due, next(self._sequence), fold_key(record), event,
                                   policy_id))

    def flush_due(self, now_ns: int | None = None) -> int:
        """Flush every window that has ended; how many events were written."""
        due = self._due
        if not due:
            return 0
        if now_ns is None:
            now_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        written = 0
        while due and due[0][0] <= now_ns:
            _due, _seq, key, event, policy_id = heapq.heappop(due)
            written += self._flush(key, event, policy_id)
        return written

    def flush_all(self) -> int:
        """Flush every window, ended or not (the agent stops)."""
        written = 0
        while self._due:
            _due, _seq, key, event, policy_id = heapq.heappop(self._due)
            written += self._flush(key, event, policy_id)
        return written

    def _flush(self, key: bytes, event: dict[str, Any], policy_id: int) -> int:
        agent = self._agent
        try:
            taken = agent.maps.take_fold(key)
        except (libbpf.LibbpfError, OSError) as exc:
            self.errors += 1
            agent.error(f"fold window not flushed: {exc}", flush_errors_total=self.errors)
            return 0
        if taken is None or not taken[1]:
            return 0    # nothing repeated (or another flush of the same key took it)
        count = taken[1]
        flushed = dict(event)
        flushed["ts"] = agent.clock.now()
        flushed["repeats"] = count - 1   # the event itself is one of the count
        flushed["window_ms"] = self.window_ms
        self.flushed += 1
        self.folded += count
        agent.emit(flushed, policy_id)
        return 1

    @property
    def pending(self) -> int:
        return len(self._due)

    def status(self) -> dict[str, Any]:
        """The agent's status part: the window and what became of them."""
        return {"window_ms": self.window_ms, "pending": self.pending, "flushed": self.flushed,
                "folded": self.folded, "left_to_kernel": self.left_to_kernel,
                "errors": self.errors}
