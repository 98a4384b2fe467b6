# SPDX-License-Identifier: Apache-2.0
"""Verdicts -> effects: map updates (through guard/kernel/maps.py), signals to
processes the agent has judged, and socket resets.

Only processes of guarded cgroups are ever signalled, and only by the pid the
kernel reported with them; before a signal the process's cgroup is checked
against the one the kernel named, so a pid that was reused in the meantime
(or a packet that left in another task's context) never gets one.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import signal
import threading
from typing import Callable

from guard.kernel import abi
from guard.kernel.objects import GuardObjects
from guard.workloads.cgroups import of_pid as cgroup_path_of
from guard.kernel.maps import Maps

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_netns_of(pid: int, fn: Callable[[], None]) -> bool:
    """Run fn in the network namespace of pid (BPF iterators walk the
    sockets of their creator's namespace); False when pid is gone and fn did
    not run. setns moves only the calling thread, so a namespace other than
    ours gets a short-lived thread."""
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return False
    if theirs == os.stat("/proc/self/ns/net").st_ino:
        fn()
        return True
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            fn()
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
    # the thread ends in the other namespace; threads are never reused
    thread = threading.Thread(target=run, name=f"netns-{pid}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return True


def _reported(method):
    """An action that fails (a map full, a namespace gone) is reported by
    the agent as an error event; it never takes the agent down."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:  # LibbpfError is an OSError
            self.errors.append(f"{method.__name__}{args}: {exc}")
            return False
    return run


class Responder:
    def __init__(self, maps: Maps, objects: GuardObjects):
        self._maps = maps
        self._objects = objects
        self.errors: list[str] = []   # failed actions, for the agent to report
        self._allowed: dict[int, None] = {}   # cookies to allow at flush_allowed()

    def take_errors(self) -> list[str]:
        errors, self.errors = self.errors, []
        return errors

    # -- processes ---------------------------------------------------------------
    @_reported
    def signal(self, pid: int, sig: int, cgroup_path: str | None) -> bool:
        """Send sig to pid if it still lives in cgroup_path (or below it)."""
        if pid <= 1 or pid == os.getpid():
            return False
        if cgroup_path is not None:
            actual = cgroup_path_of(pid)
            if actual is None or not (actual == cgroup_path
                                      or actual.startswith(cgroup_path.rstrip("/") + "/")):
                return False
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False

    def resume(self, pid: int, cgroup_path: str | None) -> bool:
        """Let a process the kernel stopped at exec go on."""
        return self.signal(pid, signal.SIGCONT, cgroup_path)

    def kill(self, pid: int, cgroup_path: str | None) -> bool:
        return self.signal(pid, signal.SIGKILL, cgroup_path)

    @_reported
    def block_process(self, pid: int, start_ns: int) -> None:
        self._maps.block_process(pid, start_ns)

    # -- flows -------------------------------------------------------------------
    def allow_flow(self, cookie: int) -> None:
        """Let a watched flow go. Collected and written by flush_allowed()
        in one batched update: one map write per sample cost the agent more
        than classifying it, and a watched flow is not waiting for it."""
        self._allowed[cookie] = None

    @_reported
    def flush_allowed(self) -> None:
        if self._allowed:
            cookies, self._allowed = list(self._allowed), {}
            self._maps.flow_verdicts(cookies, abi.Action.ALLOW)

    @_reported
    def block_flow(self, cookie: int, pid: int, proto: abi.Proto) -> bool:
        """Drop the rest of a flow, then reset its socket where the kernel
        can (TCP, bpf_sock_destroy). Returns whether the socket was reset."""
        self._allowed.pop(cookie, None)     # a later allow must not undo this
        self._maps.flow_verdict(cookie, abi.Action.BLOCK)
        return self.reset_socket(cookie, pid, proto)

    @_reported
    def reset_socket(self, cookie: int, pid: int, proto: abi.Proto = abi.Proto.TCP) -> bool:
        if not cookie or proto != abi.Proto.TCP or not self._objects.can_reset_sockets:
            return False
        self._maps.request_reset(cookie)
        try:
            return in_netns_of(pid, self._objects.run_socket_reset)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESRCH):
                raise
            return False
