# SPDX-License-Identifier: Apache-2.0
"""How the agent's event loop shares the CPUs with the workloads it guards.

Enforcement is the kernel's: verdicts are map lookups in the hooks, and a
suspect first payload is held in the kernel until the agent answers. What
the agent does with most records (decode, classify a benign flow, write an
event line) can wait a millisecond. Under SCHED_OTHER it cannot be made to:
a client or server that wakes on the CPU where the agent is halfway through
a batch waits for the agent's slice, which on a busy two-CPU host put a
millisecond on one benign connection in a hundred (bench/throughput.py).

"background" runs the event loop under SCHED_IDLE. A task of any other
policy that wakes preempts it at once, and a CPU that runs only the agent
counts as idle when the scheduler places a woken task. Its CPU share under
load is still its cgroup's, as long as it has its cgroup to itself
(systemd's service, the DaemonSet's container): SCHED_IDLE weighs only
against tasks of the same cgroup, where a busy neighbour would leave the
agent a fraction of a percent of a CPU and its heartbeat late. So an agent
that shares its cgroup with other processes keeps SCHED_OTHER (checked at
every tick), and it switches back to SCHED_OTHER:
- while it answers a control request (`policy reload`, `status`) or
  re-reads the policy file, so a reload is never slowed by the load;
- while it is behind: when the oldest record of a batch was written more
  than BEHIND_S ago, or a tick came that late (a loop starved by busy
  tasks of its own cgroup), until a batch is on time again.
"normal" keeps SCHED_OTHER throughout.
"""
from __future__ import annotations

import contextlib
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

from guard.workloads.cgroups import CgroupError, cgroup2_mount, of_pid

MODES = ("background", "normal")
# Records older than this when the agent reads them mean it is not keeping
# up; well above the loop's own batch window (10 ms) and tick (250 ms / 2).
BEHIND_S = 0.1
CAP_SYS_NICE = 23   # needed to leave SCHED_IDLE again (sched(7))


class CpuShare:
    """The scheduling policy of the calling thread (the agent's loop), set
    only when it changes. Every method acts on the thread that calls it."""

    def __init__(self, mode: str = "background",
                 company: Callable[[], str | None] = lambda: None):
        """company(): why the loop may not go to the background now (it
        shares its cgroup: see cgroup_company), or None."""
        if mode not in MODES:
            raise ValueError(f"scheduling mode {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = mode
        self._company = company
        self._policy: int | None = None     # what this object last set
        # why background is off for good although asked for (None: not off)
        self.refused: str | None = None
        # why it is off for now (the cgroup is shared); looked at by recheck()
        self.shared: str | None = None
        if mode == "background" and not can_leave_idle():
            # a thread without CAP_SYS_NICE could enter SCHED_IDLE but never
            # come back for a reload or when behind: better not to enter it
            self.refused = "no CAP_SYS_NICE to leave SCHED_IDLE again"
        self.recheck()

    @property
    def enabled(self) -> bool:
        return self.mode == "background" and self.refused is None and self.shared is None

    def in_force(self) -> str:
        """What the loop runs under between answers: background or normal."""
        return "background" if self.enabled else "normal"

    @property
    def why_not(self) -> str | None:
        """Why background was asked for and is not in force, or None."""
        return self.refused or self.shared

    def recheck(self) -> None:
        """Look again at who shares the cgroup (every tick): background only
        while the agent has it to itself."""
        if self.mode != "background" or self.refused is not None:
            return
        self.shared = self._company()
        if self.shared is not None and self._policy == os.SCHED_IDLE:
            self._set(os.SCHED_OTHER)

    def pace(self, lateness_s: float) -> None:
        """Between batches: background when on time, normal when the work
        just seen was lateness_s old (more than BEHIND_S: behind)."""
        if self.enabled:
            self._set(os.SCHED_OTHER if lateness_s > BEHIND_S else os.SCHED_IDLE)

    @contextlib.contextmanager
    def foreground(self) -> Iterator[None]:
        """SCHED_OTHER for the work inside (a reload, a status answer), then
        back to what was in force."""
        before = self._policy
        if self.enabled:
            self._set(os.SCHED_OTHER)
        try:
            yield
        finally:
            if self.enabled and before is not None:
                self._set(before)

    def restore(self) -> None:
        """Back to SCHED_OTHER (the loop is ending)."""
        if self._policy is not None and self._policy != os.SCHED_OTHER:
            self._set(os.SCHED_OTHER)

    def _set(self, policy: int) -> None:
        if policy == self._policy:
            return
        try:
            os.sched_setscheduler(0, policy, os.sched_param(0))
        except OSError as exc:
            # the loop goes on under whatever it had; say so once, in status
            self.refused = f"sched_setscheduler: {exc.strerror}"
            return
        self._policy = policy


def lateness_s(ktime_boot_ns: int) -> float:
    """How long ago a record was written (its header's bpf_ktime_get_boot_ns)."""
    return (time.clock_gettime_ns(time.CLOCK_BOOTTIME) - ktime_boot_ns) / 1e9


def cgroup_company(pid: int | None = None, mount: Path | None = None) -> str | None:
    """Why pid (default: this process) does not have its cgroup v2 to
    itself: the other processes in it; None when it has (threads are not
    processes: cgroup.procs lists thread groups)."""
    pid = pid or os.getpid()
    relative = of_pid(pid)
    try:
        mount = mount or _cgroup2_mount()
    except CgroupError as exc:
        return str(exc)
    if relative is None:
        return "no cgroup v2 in /proc/self/cgroup"
    try:
        procs = (mount / relative.lstrip("/") / "cgroup.procs").read_text().split()
    except OSError as exc:
        return f"cannot read {relative}/cgroup.procs: {exc.strerror}"
    others = [p for p in procs if p != str(pid)]
    if not others:
        return None
    return (f"shares its cgroup {relative} with {len(others)} other process"
            f"{'es' if len(others) > 1 else ''} (SCHED_IDLE would weigh against them)")


@lru_cache(maxsize=1)
def _cgroup2_mount() -> Path:
    """The cgroup2 mount, read from /proc/mounts once (every tick asks)."""
    return cgroup2_mount()


def can_leave_idle() -> bool:
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False
