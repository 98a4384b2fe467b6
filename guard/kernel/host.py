# SPDX-License-Identifier: Apache-2.0
"""The kernel as the agent sees it: the seam between the agent and the host.

Kernel names exactly what Agent.start() and its stages use: the cgroup2
mount and its id -> path lookup, the ABI check, the loaded objects (what the
agent and the Responder call of GuardObjects), the map writer, and the ring.
open_kernel() is the real one (root, GuardObjects, Maps, libbpf's ring
buffer); tests/fakekernel.py gives the agent a fake one, so the real start()
runs without root.

The agent calls them in this order, which is start()'s order: cgroup_mount,
cgroup_names, check_abi, load, then objects/maps, then open_ring.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Protocol

from guard.kernel import libbpf
from guard.kernel.maps import Maps
from guard.kernel.objects import GuardObjects, abi_mismatches, object_path
from guard.workloads.cgroups import CgroupNames, cgroup2_mount


class KernelError(Exception):
    """The kernel cannot be opened at all; the message says what to fix."""


class Ring(Protocol):
    """libbpf.RingBuffer as the loop uses it."""

    def consume(self) -> int: ...
    def poll(self, timeout_ms: int) -> int: ...
    def epoll_fd(self) -> int: ...
    def close(self) -> None: ...


class Objects(Protocol):
    """What the agent and the Responder call of GuardObjects."""

    adopted: bool
    map_fds: Mapping[str, int]

    def attach_global(self, syscall_hook: bool = False) -> None: ...
    def set_syscall_hook(self, on: bool) -> None: ...
    def attach_cgroup(self, path: str, cgroup_id: int,
                      optional: frozenset[str] | None = None) -> object: ...
    def detach_cgroup(self, cgroup_id: int) -> None: ...
    def pinned_cgroups(self) -> list[int]: ...
    @property
    def can_reset_sockets(self) -> bool: ...
    def run_socket_reset(self) -> None: ...
    def mark_guarded_tasks(self) -> None: ...
    def close(self, keep_pins: bool = False) -> None: ...


class Kernel(Protocol):
    """One agent's kernel. objects and maps exist once load() returned."""

    objects: Objects
    maps: Maps

    def cgroup_mount(self) -> Path: ...
    def cgroup_names(self, mount: Path) -> CgroupNames: ...
    def check_abi(self) -> list[str]: ...
    def load(self) -> None: ...
    def open_ring(self, on_record: Callable[[bytes], None]) -> Ring: ...


KernelFactory = Callable[[int, "Path | None"], Kernel]


class HostKernel:
    """The real kernel: nothing is loaded until load()."""

    def __init__(self, ring_size: int, pin_dir: Path | None):
        self._ring_size = ring_size
        self._pin_dir = pin_dir
        self.objects: GuardObjects | None = None
        self.maps: Maps | None = None

    def cgroup_mount(self) -> Path:
        return cgroup2_mount()

    def cgroup_names(self, mount: Path) -> CgroupNames:
        return CgroupNames(mount)

    def check_abi(self) -> list[str]:
        return abi_mismatches(object_path("exec"))

    def load(self) -> None:
        """Load the objects (LibbpfError on failure), then open their maps;
        objects is set as soon as they loaded, so the agent frees them even
        when the maps fail."""
        self.objects = GuardObjects(self._ring_size, self._pin_dir)
        self.maps = Maps(self.objects.map_fds)

    def open_ring(self, on_record: Callable[[bytes], None]) -> libbpf.RingBuffer:
        return libbpf.RingBuffer(self.objects.map_fds["eg_events"], on_record)


def open_kernel(ring_size: int, pin_dir: Path | None) -> HostKernel:
    """The host's kernel; it needs root (KernelError otherwise)."""
    if os.geteuid() != 0:
        raise KernelError("egress-guard run needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
    return HostKernel(ring_size, pin_dir)
