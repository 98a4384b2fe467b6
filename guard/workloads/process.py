# SPDX-License-Identifier: Apache-2.0
"""What is known of a process: from its exec event, else from /proc.

Connect events carry only pid and comm from the kernel; the exe and argv come
from the exec event of the same pid (kept in a bounded table) or, for a
process that was already running, from /proc while it still exists.

The table is bounded by bytes, not only by entries: a workload chooses its
argv, and 65,536 entries of 1,365 short arguments each would be gigabytes of
Python objects. Each entry is charged what it really costs (the list, its
str objects and their text, estimated from CPython's object sizes); the
least recently used go first once TABLE_BYTES is reached.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field

from guard.kernel.records import ExecRecord, split_argv


@dataclass(slots=True)
class ProcessInfo:
    exe: str | None
    argv: list[str]
    argv_truncated: bool
    detections: set[str] = field(default_factory=set)  # finding types judged at its exec


#: The table's bounds (docs/design.md, "What a workload can make the agent spend"): entries, and bytes of what they hold.
TABLE_ENTRIES = 65536
TABLE_BYTES = 48 << 20
#: CPython object sizes behind the estimate: a ProcessInfo with its set and
#: dict slot, a list's pointer per item, a str's header (ASCII; a non-ASCII
#: str costs more per character, which the text length under-counts by at
#: most 4x: hence the factor on non-ASCII text)
_ENTRY_BYTES = 400
_ITEM_BYTES = 8 + 49


def entry_bytes(info: ProcessInfo) -> int:
    """What one entry keeps alive, estimated from CPython's object sizes."""
    text = sum(map(len, info.argv)) + len(info.exe or "")
    if not (info.exe or "").isascii() or not all(map(str.isascii, info.argv)):
        text *= 4
    return _ENTRY_BYTES + _ITEM_BYTES * (len(info.argv) + 1) + text


class ProcessTable:
    def __init__(self, capacity: int = TABLE_ENTRIES, max_bytes: int = TABLE_BYTES):
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._by_pid: OrderedDict[int, tuple[ProcessInfo, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._by_pid)

    def record_exec(self, record: ExecRecord) -> ProcessInfo:
        info = ProcessInfo(exe=record.exe or record.filename, argv=record.argv,
                           argv_truncated=record.argv_truncated)
        self._remember(record.header.pid, info)
        return info

    def lookup(self, pid: int) -> ProcessInfo:
        entry = self._by_pid.get(pid)
        if entry is not None:
            self._by_pid.move_to_end(pid)
            return entry[0]
        # remembered even when /proc had nothing (the process is gone): a
        # burst of its events must not read /proc once each. A pid reused by
        # a new program in a guarded cgroup is replaced by its exec event.
        info = self._from_proc(pid)
        self._remember(pid, info)
        return info

    def _remember(self, pid: int, info: ProcessInfo) -> None:
        size = entry_bytes(info)
        old = self._by_pid.pop(pid, None)
        if old is not None:
            self.bytes -= old[1]
        self._by_pid[pid] = (info, size)
        self.bytes += size
        while len(self._by_pid) > self._capacity or (
                self.bytes > self._max_bytes and len(self._by_pid) > 1):
            _pid, (_info, gone) = self._by_pid.popitem(last=False)
            self.bytes -= gone

    @staticmethod
    def from_proc(pid: int) -> ProcessInfo:
        return ProcessTable._from_proc(pid)

    @staticmethod
    def _from_proc(pid: int) -> ProcessInfo:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = split_argv(fh.read(65536))
        except OSError:
            argv = []
        return ProcessInfo(exe=exe, argv=argv, argv_truncated=False)
