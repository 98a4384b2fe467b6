# SPDX-License-Identifier: Apache-2.0
"""What a workload spends and sends, for the compute-abuse correlation
(guard/detect/classify/compute_abuse.py): its CPU from cgroup v2 cpu.stat,
and the byte counters of its established TCP flows from sock_diag
(tcp_info), read in the network namespace of its processes.

Only the workload's own sockets count: their inodes are read from its
processes' descriptors (bounded as in packet_sockets.py), and sock_diag's
answer is filtered by them.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from guard.workloads.packet_sockets import Sweep, cgroup_pids, socket_inodes

SS_ESTABLISHED = 1 << 1
INET_DIAG_INFO = 1 << (2 - 1)
FLOWS_READ = 4096          # sock_diag answers read per namespace


@dataclass(frozen=True, slots=True)
class FlowSample:
    """One TCP flow's counters at one sample."""
    cookie: int             # the socket cookie (as BPF programs and resets name it)
    remote: str             # "ip:port", for the evidence
    bytes_sent: int
    bytes_received: int


def cpu_usage_usec(directory: Path) -> int | None:
    """The cgroup's CPU time so far (cpu.stat usage_usec), None if unreadable."""
    try:
        with open(directory / "cpu.stat", "rb") as f:
            for line in f.read(4096).splitlines():
                if line.startswith(b"usage_usec "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def owned_sockets(directory: Path, proc: Path = Path("/proc")) -> tuple[dict[int, int], Sweep]:
    """inode -> pid of every socket the processes of a cgroup (and its
    descendants) hold, within packet_sockets' bounds (said in the Sweep)."""
    sweep = Sweep()
    owners: dict[int, int] = {}
    budget = [4096, 256]
    for _cg, pid in cgroup_pids(directory, sweep, budget):
        for inode in socket_inodes(pid, None, proc, sweep):
            owners.setdefault(inode, pid)
    return owners, sweep


def tcp_flows(owners: dict[int, int]) -> list[tuple[FlowSample, int]]:
    """(flow, owner pid) for the established TCP flows of this thread's
    network namespace whose socket is in owners (call it in the workload's
    namespace: respond.responder.in_netns_of)."""
    from pyroute2 import DiagSocket   # netlink: only where a workload is hot

    out = []
    with DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for count, msg in enumerate(diag.get_sock_stats(
                    family=family, states=SS_ESTABLISHED, extensions=INET_DIAG_INFO)):
                if count >= FLOWS_READ:
                    break
                pid = owners.get(msg["idiag_inode"])
                info = msg.get_attr("INET_DIAG_INFO")
                if pid is None or info is None:
                    continue
                remote = f"{msg['idiag_dst']}:{msg['idiag_dport']}"
                out.append((FlowSample(cookie=int(msg["idiag_cookie"]), remote=remote,
                                       bytes_sent=int(info.get("tcpi_bytes_sent") or 0),
                                       bytes_received=int(info.get("tcpi_bytes_received") or 0)),
                            pid))
    return out
