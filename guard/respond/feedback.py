# SPDX-License-Identifier: Apache-2.0
"""Reason lines on a refused process's own stderr (spec.feedback.stderr).

Everything about the target is hostile: the process chooses what its fd 2
is, can change it at any moment, and can stop reading. So:

- the agent takes **the same open file** the process has on fd 2
  (pidfd_getfd: no path is opened, so nothing the process swaps in between
  a check and an open is ever opened), and judges that file: its type by
  fstat, its flags (O_APPEND) by F_GETFL, which reads the very open file
  description the process writes through;
- it writes only to a pipe or FIFO, a socket, a terminal (a pseudo-terminal
  or a console/serial tty, never /dev/tty, /dev/console or a pty master), or
  a regular file the process opened with O_APPEND on a local filesystem
  (never one written at an offset: the line would overwrite its data; never
  FUSE or a network filesystem, whose writes may wait on a peer);
- the write never blocks: a pipe, FIFO, terminal or file is written through
  a new open file description of our own with O_NONBLOCK (reopened from the
  duplicate, /proc/self/fd/N, so the process's own flags never change); a
  socket with MSG_DONTWAIT. A full pipe drops the line (counted); a line is
  at most LINE_BYTES (< PIPE_BUF), so a pipe takes it whole or not at all;
- the process must still be in the guarded cgroup the event named (a
  reused pid is not told);
- rate-limited: one line per process and reason key every RATE_S, and at
  most PER_PROCESS lines per process in RATE_S, in tables of bounded size.

A process already gone (killed at exec by the kernel, or a program that
exited on its error before the agent read the event) cannot be told: then
its parent is, when the parent is in the same guarded cgroup (the shell or
tool runner whose output the agent reads), through the same checks.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from guard.workloads.cgroups import of_pid as cgroup_path_of

RATE_S = 10.0
PER_PROCESS = 8
TABLE = 4096
SYS_PIDFD_GETFD = 438            # the same on every architecture (a new-style number)
#: character-device majors of terminals a reason may go to: 136-143 pseudo-terminal
#: slaves, 4 virtual consoles and serial ports (minor 0, tty0, is whatever console is
#: in front: not the process's), 204 low-density serial ports
_TTY_MAJORS = frozenset(range(136, 144)) | {4, 204}
#: filesystems whose writes do not wait on a peer (f_type of statfs)
LOCAL_FILESYSTEMS = frozenset({
    0xEF53,        # ext2/3/4
    0x58465342,    # xfs
    0x9123683E,    # btrfs
    0x01021994,    # tmpfs
    0x794C7630,    # overlayfs
    0xF2F52010,    # f2fs
    0x2FC12FC1,    # zfs
    0x858458F6,    # ramfs
})

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    got = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return got


def _fs_type(fd: int) -> int:
    buffer = ctypes.create_string_buffer(256)       # struct statfs; f_type comes first
    if _libc.fstatfs(fd, buffer) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int.from_bytes(buffer.raw[:ctypes.sizeof(ctypes.c_long)], "little")


def writable_kind(st: os.stat_result, flags: int, fs_type: Callable[[], int]) -> str | None:
    """What a stderr is, if a reason may be written to it: `pipe`, `socket`,
    `tty` or `file`; None when it must not be touched."""
    mode = st.st_mode
    if stat.S_ISFIFO(mode):
        return "pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if major in _TTY_MAJORS and not (major == 4 and minor == 0):
            return "tty"
        return None
    if stat.S_ISREG(mode) and flags & os.O_APPEND and fs_type() in LOCAL_FILESYSTEMS:
        return "file"
    return None


@dataclass
class FeedbackCounters:
    written: int = 0     # lines written
    limited: int = 0     # not written: the rate limit
    refused: int = 0     # not written: a stderr that is not a pipe, socket, tty or append file
    dropped: int = 0     # not written: a full pipe, no reader, an error of the write
    gone: int = 0        # neither the process nor its parent could be told
    by_kind: dict[str, int] = field(default_factory=dict)   # written, by stderr kind


class StderrFeedback:
    """Writes reason lines to guarded processes' stderr. Never raises, never blocks."""

    def __init__(self, rate_s: float = RATE_S, per_process: int = PER_PROCESS,
                 clock: Callable[[], float] = time.monotonic):
        self.counters = FeedbackCounters()
        self._rate_s = rate_s
        self._per_process = per_process
        self._clock = clock
        self._last: OrderedDict[tuple, float] = OrderedDict()        # (pid, key) -> when
        self._window: OrderedDict[int, tuple[float, int]] = OrderedDict()   # pid -> (from, n)

    def allowed(self, pid: int, key: tuple) -> bool:
        """The rate limit: whether (pid, key) may be told now (and count it)."""
        now = self._clock()
        last = self._last.get((pid, key))
        start, count = self._window.get(pid, (now, 0))
        if now - start >= self._rate_s:
            start, count = now, 0
        if (last is not None and now - last < self._rate_s) or count >= self._per_process:
            self.counters.limited += 1
            return False
        self._last[(pid, key)] = now
        self._last.move_to_end((pid, key))
        self._window[pid] = (start, count + 1)
        self._window.move_to_end(pid)
        for table in (self._last, self._window):
            while len(table) > TABLE:
                table.popitem(last=False)
        return True

    def tell(self, pid: int, ppid: int, cgroup_path: str | None, line: str) -> str:
        """Write line (and a newline) to pid's stderr, else to its parent's
        when pid is gone. Returns what happened: written, refused, dropped or
        gone. The caller asks allowed() first."""
        data = (line.rstrip("\n") + "\n").encode("utf-8", "replace")
        outcome = self._tell_one(pid, cgroup_path, data)
        if outcome == "gone" and ppid > 1:
            outcome = self._tell_one(ppid, cgroup_path, data)
        if outcome == "gone":
            self.counters.gone += 1
        return outcome

    def _tell_one(self, pid: int, cgroup_path: str | None, data: bytes) -> str:
        if pid <= 1 or pid == os.getpid():
            return "gone"
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return "gone"
        try:
            if cgroup_path is not None and not _inside(cgroup_path_of(pid), cgroup_path):
                return "gone"
            try:
                fd = _pidfd_getfd(pidfd, 2)
            except OSError as exc:
                # ESRCH: exited; EBADF: no fd 2 (closed, or the process is exiting)
                return "gone" if exc.errno in (errno.ESRCH, errno.EBADF) else self._dropped()
        finally:
            os.close(pidfd)
        try:
            return self._write(fd, data)
        finally:
            os.close(fd)

    def _dropped(self) -> str:
        self.counters.dropped += 1
        return "dropped"

    def _write(self, fd: int, data: bytes) -> str:
        try:
            st = os.fstat(fd)
            kind = writable_kind(st, fcntl.fcntl(fd, fcntl.F_GETFL), lambda: _fs_type(fd))
        except OSError:
            return self._dropped()
        if kind is None:
            self.counters.refused += 1
            return "refused"
        try:
            if kind == "socket":
                sock = socket.socket(fileno=os.dup(fd))
                try:
                    sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                finally:
                    sock.close()
            else:
                flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
                if kind == "file":
                    flags |= os.O_APPEND
                own = os.open(f"/proc/self/fd/{fd}", flags)
                try:
                    if os.fstat(own).st_ino != st.st_ino or os.fstat(own).st_dev != st.st_dev:
                        return self._dropped()
                    if os.write(own, data) != len(data) and kind == "pipe":
                        return self._dropped()
                finally:
                    os.close(own)
        except OSError:     # EAGAIN (full), ENXIO (no reader), EPIPE, EIO, ...
            return self._dropped()
        self.counters.written += 1
        self.counters.by_kind[kind] = self.counters.by_kind.get(kind, 0) + 1
        return "written"

    def status(self) -> dict[str, int]:
        c = self.counters
        return {"written": c.written, "limited": c.limited, "refused": c.refused,
                "dropped": c.dropped, "gone": c.gone}


def _inside(actual: str | None, cgroup_path: str) -> bool:
    return actual is not None and (actual == cgroup_path
                                   or actual.startswith(cgroup_path.rstrip("/") + "/"))
