# SPDX-License-Identifier: Apache-2.0
"""BPF run-time statistics for the benchmarks: on while inside (BpfStats),
per program (prog_stats), and whether another agent's host-wide sys_enter
program is attached (foreign_agents), which would tax both sides of a
syscall comparison."""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
from pathlib import Path

from guard.kernel.libbpf import lib

BPF_STATS_RUN_TIME = 0
SYS_ENTER = "guard_socket_syscall"


class BpfStats:
    """The kernel's BPF run-time statistics, on while inside: BPF_ENABLE_STATS
    (an fd: the statistics stay on while it is open, go off when it closes
    or this process dies, and kernel.bpf_stats_enabled is never written).
    Where that call is missing, the sysctl, put back on exit."""

    def __enter__(self) -> "BpfStats":
        self.fd, self.sysctl_was = -1, None
        fd = lib().bpf_enable_stats(ctypes.c_int(BPF_STATS_RUN_TIME))
        if fd >= 0:
            self.fd = fd
            self.how = "BPF_ENABLE_STATS fd"
            return self
        knob = Path("/proc/sys/kernel/bpf_stats_enabled")
        self.sysctl_was = knob.read_text().strip()
        knob.write_text("1")
        self.how = f"kernel.bpf_stats_enabled (was {self.sysctl_was}, put back)"
        return self

    def __exit__(self, *exc) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        if self.sysctl_was is not None:
            Path("/proc/sys/kernel/bpf_stats_enabled").write_text(self.sysctl_was)


def bpf_progs() -> list[dict]:
    return json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], check=True,
                                     capture_output=True, text=True).stdout)


def prog_stats(ids: set[int]) -> dict[str, tuple[int, int]]:
    """name -> (run_time_ns, run_cnt), summed over the programs in ids."""
    stats: dict[str, tuple[int, int]] = {}
    for prog in bpf_progs():
        if prog["id"] in ids and prog.get("name", "").startswith("guard_"):
            t, n = stats.get(prog["name"], (0, 0))
            stats[prog["name"]] = (t + prog.get("run_time_ns", 0), n + prog.get("run_cnt", 0))
    return stats


def held_ids(pid: int, field: str) -> set[int]:
    """The ids a process holds open by its fds' fdinfo field ("prog_id":
    program and link fds; "map_id": map fds)."""
    held = set()
    for entry in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            for line in entry.read_text().splitlines():
                if line.startswith(field + ":"):
                    held.add(int(line.split()[1]))
        except OSError:
            continue
    return held


def held_prog_ids(pid: int) -> set[int]:
    """The BPF programs a process holds (program and link fds)."""
    return held_ids(pid, "prog_id")


def held_map(pid: int, name: str) -> dict:
    """bpftool's description of the map called name that a process holds
    open (another agent on the host has its own)."""
    held = held_ids(pid, "map_id")
    maps = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], check=True,
                                     capture_output=True, text=True).stdout)
    [found] = [m for m in maps if m["id"] in held and m.get("name") == name]
    return found


def per_operation(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
                  operations: int) -> dict[str, tuple[float, float]]:
    """name -> (ns per operation, runs per operation) between two prog_stats."""
    out = {}
    for name, (t, c) in after.items():
        t0, c0 = before.get(name, (0, 0))
        if c - c0:
            out[name] = ((t - t0) / operations, (c - c0) / operations)
    return out


def foreign_agents(mine: set[int] = frozenset()) -> int:
    """Other egress-guard agents' raw_tp/sys_enter programs attached now (an
    agent loads it always, attaches it only with --syscall-hook or under a
    names policy: attached, it taxes every system call of the host)."""
    hooked = {p["id"] for p in bpf_progs() if p.get("name") == SYS_ENTER} - set(mine)
    links = json.loads(subprocess.run(["bpftool", "-j", "link", "show"], check=True,
                                      capture_output=True, text=True).stdout or "[]")
    return sum(1 for link in links if link.get("prog_id") in hooked)
