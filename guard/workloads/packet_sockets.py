# SPDX-License-Identifier: Apache-2.0
"""Which guarded processes hold a packet socket (AF_PACKET), read from /proc.

The cgroup sock_create hook never sees packet sockets (packet_create does not
run it) and, without BPF-LSM, only a sys_enter raw tracepoint can stop
socket(AF_PACKET) at the call; that tracepoint puts every system call of
every task on the host on the tracing slow path, so it is opt-in
(`run --syscall-hook`). Without it the agent finds packet sockets here, a few
times a second, and kills their owners.

A sweep costs little when there is nothing to find: a network namespace's
packet sockets are all listed in /proc/PID/net/packet, so the descriptors of
a guarded process are read only when its namespace has one. Every input is
the workload's (its cgroup tree, its pids, its descriptors): each is bounded
(PIDS_PER_SWEEP, FDS_PER_PROCESS, CGROUPS_PER_SWEEP) and a sweep that hit a
bound says so (`truncated`), it never runs on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

AF_PACKET = 17
PIDS_PER_SWEEP = 8192        # processes looked at in one sweep, all guarded cgroups together
FDS_PER_PROCESS = 4096       # descriptors read of one process whose namespace has a packet socket
CGROUPS_PER_SWEEP = 4096     # cgroups (guarded ones and their descendants) read in one sweep
_PROCS_READ = 1 << 20        # bytes of one cgroup.procs read


@dataclass(frozen=True, slots=True)
class PacketSocket:
    pid: int
    cgroup_id: int      # the guarded cgroup (the one in the agent's table) it was found under
    cgroup_path: str    # the cgroup the process is in (the guarded one or a descendant)
    inode: int
    type: int           # SOCK_RAW (3) or SOCK_DGRAM (2)
    protocol: int       # the ethertype it was bound to, host order


@dataclass(slots=True)
class Sweep:
    found: list[PacketSocket] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)   # which bound was hit, in words


def packet_table(pid: int, proc: Path = Path("/proc")) -> dict[int, tuple[int, int]]:
    """inode -> (type, protocol) of every packet socket of pid's network
    namespace; {} when it has none or pid is gone."""
    try:
        text = (proc / str(pid) / "net" / "packet").read_text(errors="replace")
    except OSError:
        return {}
    table: dict[int, tuple[int, int]] = {}
    for line in text.splitlines()[1:]:
        # sk RefCnt Type Proto Iface R Rmem User Inode
        cols = line.split()
        if len(cols) < 9:
            continue
        try:
            proto = int(cols[3], 16)
            table[int(cols[8])] = (int(cols[2]), ((proto & 0xFF) << 8) | (proto >> 8))
        except ValueError:
            continue
    return table


def _netns(pid: int, proc: Path) -> int | None:
    try:
        return os.stat(proc / str(pid) / "ns" / "net").st_ino
    except OSError:
        return None


def socket_inodes(pid: int, wanted, proc: Path, sweep: Sweep) -> list[int]:
    """The inodes of pid's sockets that are in wanted (a container of
    inodes, or None for all), at most FDS_PER_PROCESS descriptors read."""
    found = []
    fd_dir = proc / str(pid) / "fd"
    try:
        with os.scandir(fd_dir) as entries:
            for count, entry in enumerate(entries):
                if count >= FDS_PER_PROCESS:
                    sweep.truncated.append(f"pid {pid}: over {FDS_PER_PROCESS} descriptors")
                    break
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    continue
                if target.startswith("socket:[") and target.endswith("]"):
                    try:
                        inode = int(target[8:-1])
                    except ValueError:
                        continue
                    if wanted is None or inode in wanted:
                        found.append(inode)
    except OSError:
        pass
    return found


def cgroup_pids(root: Path, sweep: Sweep, budget: list[int]) -> list[tuple[str, int]]:
    """(cgroup directory, pid) for root and its descendants, within the budgets."""
    out: list[tuple[str, int]] = []
    stack = [root]
    while stack:
        if budget[1] <= 0:
            sweep.truncated.append(f"over {CGROUPS_PER_SWEEP} cgroups")
            break
        budget[1] -= 1
        cg = stack.pop()
        try:
            with open(cg / "cgroup.procs", "rb") as f:
                data = f.read(_PROCS_READ)
        except OSError:
            data = b""      # gone meanwhile (its children are looked at all the same)
        for word in data.split():
            if budget[0] <= 0:
                sweep.truncated.append(f"over {PIDS_PER_SWEEP} processes")
                return out
            try:
                out.append((str(cg), int(word)))
            except ValueError:
                continue
            budget[0] -= 1
        try:
            with os.scandir(cg) as entries:
                stack.extend(Path(e.path) for e in entries
                             if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return out


def sweep(guarded: dict[int, Path], proc: Path = Path("/proc")) -> Sweep:
    """Find the packet sockets of the processes in guarded (cgroup id ->
    cgroup directory, descendants included)."""
    result = Sweep()
    budget = [PIDS_PER_SWEEP, CGROUPS_PER_SWEEP]
    tables: dict[int, dict[int, tuple[int, int]]] = {}   # netns inode -> its packet sockets
    for cgroup_id, directory in guarded.items():
        for cg_dir, pid in cgroup_pids(directory, result, budget):
            netns = _netns(pid, proc)
            if netns is None:
                continue
            if netns not in tables:
                tables[netns] = packet_table(pid, proc)
            wanted = tables[netns]
            if not wanted:
                continue
            for inode in socket_inodes(pid, wanted, proc, result):
                sock_type, protocol = wanted[inode]
                result.found.append(PacketSocket(pid, cgroup_id, cg_dir, inode,
                                                 sock_type, protocol))
        if budget[0] <= 0 or budget[1] <= 0:
            break
    return result
