# SPDX-License-Identifier: Apache-2.0
"""Throw-away sandboxes: a child cgroup and a test host in a network namespace.

Used by `egress-guard demo`, the tests and the benchmarks. Each helper is a
context manager that removes what it made, also when the body fails, and ends
only the processes it started itself, by pid.

Test hosts live in a namespace made here, reached over a veth pair with
addresses from 198.18.0.0/15 (RFC 2544 benchmarking space); the namespace
has no default route, so nothing sent to a test host leaves the machine.
Only the addresses of a test host's /30 are its: on a host whose default
route covers 198.18.0.0/15, any other address of that range goes out, so a
test connects only to addresses a namespace of its own holds.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

from guard.workloads.cgroups import Cgroup, cgroup2_mount, resolve

_counter = itertools.count()


def _unique(tag: str) -> str:
    return f"{tag}-{os.getpid()}-{next(_counter)}"


def end_process(proc: subprocess.Popen) -> None:
    """End a process this module (or its caller) started, by its pid, and reap it."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class TempCgroup:
    """A child cgroup of the cgroup2 mount (never the root), removed on exit."""

    def __init__(self, tag: str = "egress-guard-test", parent: Path | None = None,
                 name: str | None = None):
        self._parent = parent or cgroup2_mount()
        self.path = self._parent / (name or _unique(tag))
        self.cgroup: Cgroup | None = None
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> "TempCgroup":
        self.path.mkdir()
        self.cgroup = resolve(str(self.path))
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def id(self) -> int:
        return self.cgroup.id

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start argv inside this cgroup: the child joins it before it execs."""
        procs = str(self.path / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as fh:
                fh.write("0")
        proc = subprocess.Popen(argv, preexec_fn=join, **kwargs)
        self._procs.append(proc)
        return proc

    def run(self, argv: list[str], timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = self.popen(argv, **kwargs)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            end_process(proc)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def python(self, code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-c", code, *args], timeout=timeout, text=True)

    def close(self) -> None:
        for proc in self._procs:
            end_process(proc)
        self._procs.clear()
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)  # the last exiting task leaves the cgroup asynchronously
        self.path.rmdir()


class TestHost:
    """A network namespace with one veth link to the host.

    host side: 198.18.N.1/30 on the host; the test host: 198.18.N.2/30.
    servers started with serve() run inside the namespace.
    """
    __test__ = False  # a helper, not a pytest test class

    def __init__(self, index: int | None = None):
        from pyroute2 import netns  # imported lazily: unit tests need no netlink

        self._netns = netns
        n = (os.getpid() + next(_counter)) % 250 if index is None else index
        self.name = _unique("egtest")
        self.host_if = f"egh{os.getpid() % 100000}{n}"[:15]
        self.peer_if = "eth0"
        self.host_ip = f"198.18.{n}.1"
        self.ip = f"198.18.{n}.2"
        self._servers: list[subprocess.Popen] = []
        self._created = False

    def __enter__(self) -> "TestHost":
        from pyroute2 import IPRoute, NetNS

        self._netns.create(self.name)
        self._created = True
        try:
            with IPRoute() as ipr:
                ipr.link("add", ifname=self.host_if, kind="veth",
                         peer={"ifname": self.peer_if, "net_ns_fd": self.name})
                idx = ipr.link_lookup(ifname=self.host_if)[0]
                ipr.addr("add", index=idx, address=self.host_ip, prefixlen=30)
                ipr.link("set", index=idx, state="up")
            with NetNS(self.name) as ns:
                for ifname, addr in (("lo", None), (self.peer_if, self.ip)):
                    idx = ns.link_lookup(ifname=ifname)[0]
                    if addr:
                        ns.addr("add", index=idx, address=addr, prefixlen=30)
                    ns.link("set", index=idx, state="up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def serve(self, *ports: int, udp: bool = False) -> subprocess.Popen:
        """Start a listener on each port inside the namespace; returns once bound."""
        netns_name = self.name

        def enter() -> None:
            from pyroute2 import netns
            netns.setns(netns_name)
        proc = subprocess.Popen(
            [sys.executable, "-m", "guard.demo.testserver", "--udp" if udp else "--tcp",
             *map(str, ports)],
            preexec_fn=enter, stdout=subprocess.PIPE, text=True)
        self._servers.append(proc)
        line = proc.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"test server in {self.name} did not start: {line!r}")
        return proc

    def close(self) -> None:
        for proc in self._servers:
            end_process(proc)
        self._servers.clear()
        if not self._created:
            return
        try:
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=self.host_if)
                if found:
                    ipr.link("del", index=found[0])
        finally:
            self._netns.remove(self.name)
            self._created = False
