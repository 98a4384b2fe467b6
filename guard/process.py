# SPDX-License-Identifier: Apache-2.0
"""What is known of a process: from its exec event, else from /proc.

Connect events carry only pid and comm from the kernel; the exe and argv come
from the exec event of the same pid (kept in a bounded table) or, for a
process that was already running, from /proc while it still exists.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field

from .events import ExecRecord, split_argv


@dataclass(slots=True)
class ProcessInfo:
    exe: str | None
    argv: list[str]
    argv_truncated: bool
    detections: set[str] = field(default_factory=set)  # finding types judged at its exec


class ProcessTable:
    def __init__(self, capacity: int = 65536):
        self._capacity = capacity
        self._by_pid: OrderedDict[int, ProcessInfo] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_pid)

    def record_exec(self, record: ExecRecord) -> ProcessInfo:
        info = ProcessInfo(exe=record.exe or record.filename, argv=record.argv,
                           argv_truncated=record.argv_truncated)
        self._remember(record.header.pid, info)
        return info

    def lookup(self, pid: int) -> ProcessInfo:
        info = self._by_pid.get(pid)
        if info is not None:
            self._by_pid.move_to_end(pid)
            return info
        # remembered even when /proc had nothing (the process is gone): a
        # burst of its events must not read /proc once each. A pid reused by
        # a new program in a guarded cgroup is replaced by its exec event.
        info = self._from_proc(pid)
        self._remember(pid, info)
        return info

    def _remember(self, pid: int, info: ProcessInfo) -> None:
        self._by_pid[pid] = info
        self._by_pid.move_to_end(pid)
        while len(self._by_pid) > self._capacity:
            self._by_pid.popitem(last=False)

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
