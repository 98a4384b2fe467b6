# SPDX-License-Identifier: Apache-2.0
"""Chores that look in /proc (and sock_diag) for what the hooks cannot see.

    packet sockets   a guarded process holding an AF_PACKET socket under a
                     policy with sockets.raw: deny is killed and reported
                     (event `socket`, action `kill`, `found: "sweep"`). With
                     `run --syscall-hook` the kernel kills at socket() and a
                     sweep only finds sockets made before the agent started.
    compute          a workload burning CPU while a long-lived flow of its own
                     carries small periodic uploads: a miner however it is
                     dressed (detect/classify/compute_abuse.py).

The kernel's own packet-socket refusal needs the sys_enter raw tracepoint,
which every system call on the host pays for (docs/performance.md); this is
what the guard does without it: the socket is found within SWEEP_S and its
owner killed, but frames sent before that are not stopped. Doctor and the
policy docs say so.
"""
from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

from guard.agent.generations import SLOT_BITS
from guard.agent.handlers import NO_PROCESS
from guard.kernel import abi
from guard.kernel.records import Header, SocketRecord
from guard.detect.classify import Finding, compute_abuse
from guard.detect.detector import decide, strongest
from guard.respond.responder import in_netns_of
from guard.workloads.compute import cpu_usage_usec, owned_sockets, tcp_flows
from guard.workloads.packet_sockets import AF_PACKET, PacketSocket, sweep

def syscall_hook_wanted(asked: bool, compiled) -> bool:
    """Whether sys_enter is attached: when asked (`run --syscall-hook`), and
    while a policy in force (compiled) allows by name, refuses raw sockets
    and trusts a loopback resolver: within a sweep's half second a packet
    socket could send itself a forged answer over loopback, which nothing
    else tells from the resolver's (an answer from a resolver that is not on
    loopback is not believed when it comes in over loopback: dns.bpf.c)."""
    return asked or any(
        c.names is not None and c.deny_raw_sockets and not c.audit
        and any(_reaches_loopback(network) for network in c.names.resolvers)
        for c in compiled)


_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"),
             ipaddress.ip_network("::ffff:127.0.0.0/104"))


def _reaches_loopback(network) -> bool:
    return any(network.version == lo.version and network.overlaps(lo) for lo in _LOOPBACK)


def packet_socket_mode(objects) -> str:
    """The status line: how a packet socket in a guarded cgroup is met now."""
    if objects is not None and getattr(objects, "syscall_hook", False):
        return "killed at socket() (raw_tp/sys_enter); a sweep finds older ones"
    return f"found by a sweep every {SWEEP_S:g} s, its owner killed"


COMPUTE_SAMPLE_S = 5.0  # how often a workload's CPU (and, while hot, its flows) is sampled
SWEEP_S = 0.5           # how often guarded processes are looked at for packet sockets
REPORTED_KEPT = 4096    # (pid, inode) already reported: not again while the kill is under way


class PacketSocketSweep:
    def __init__(self, agent, proc: Path = Path("/proc")):
        self._agent = agent
        self._proc = proc
        self._last = 0.0
        self._reported: dict[tuple[int, int], None] = {}
        self.runs = 0
        self.found = 0

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < SWEEP_S:
            return
        self._last = now
        agent = self._agent
        registry = agent.registry
        denying = {cg_id: cg.path for cg_id, cg in list(registry.guarded.items())
                   if self._denies(registry.slot_of.get(cg_id))}
        if not denying:
            return
        self.runs += 1
        result = sweep(denying, self._proc)
        for message in dict.fromkeys(result.truncated):
            agent.error(f"packet-socket sweep: {message}; the rest is looked at next time")
        for found in result.found:
            key = (found.pid, found.inode)
            if key in self._reported:
                continue
            self._reported[key] = None
            while len(self._reported) > REPORTED_KEPT:
                del self._reported[next(iter(self._reported))]
            self.found += 1
            self._kill_and_report(found)

    def _denies(self, slot: int | None) -> bool:
        if slot is None:
            return False
        policies = self._agent.policies
        return 0 <= slot < len(policies) and policies[slot].deny_raw_sockets

    def _kill_and_report(self, found: PacketSocket) -> None:
        agent = self._agent
        registry = agent.registry
        guarded = registry.guarded.get(found.cgroup_id)
        slot = registry.slot_of.get(found.cgroup_id, 0)
        guarded_path = guarded.relative if guarded is not None else None
        policies = agent.policies
        audit = 0 <= slot < len(policies) and policies[slot].audit   # spec.mode: audit
        killed = not audit and agent.responder.kill(found.pid, guarded_path)
        header = _header(found, self._proc, agent.generations.active << SLOT_BITS | slot,
                         abi.Action.WOULD_KILL if audit
                         else abi.Action.KILL if killed else abi.Action.LOG)
        record = SocketRecord(header=header, family=AF_PACKET, type=found.type,
                              protocol=found.protocol)
        agent.handlers.on_verdict(record, found_by="sweep")


def _header(found: PacketSocket, proc: Path, policy_id: int, action: abi.Action) -> Header:
    """A record header for a process found in /proc, as the kernel would write it."""
    return _header_of(found.pid, found.cgroup_id, proc, policy_id, action, abi.EventKind.SOCKET)


def _header_of(pid: int, cgroup_id: int, proc: Path, policy_id: int, action: abi.Action,
               kind: abi.EventKind) -> Header:
    ppid, uid, comm, start_ticks = 0, 0, "", 0
    base = proc / str(pid)
    try:
        stat = (base / "stat").read_text(errors="replace")
        comm = stat[stat.index("(") + 1:stat.rindex(")")][:15]
        fields = stat[stat.rindex(")") + 2:].split()
        ppid, start_ticks = int(fields[1]), int(fields[19])
        for line in (base / "status").read_text(errors="replace").splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
                break
    except (OSError, ValueError, IndexError):
        pass
    start_ns = start_ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return Header(kind=kind, ktime_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
                  cgroup_id=cgroup_id, pid=pid, ppid=ppid, uid=uid,
                  policy_id=policy_id, comm=comm, action=action, rule_id=abi.RULE_NONE,
                  start_ns=start_ns)


class ComputeSweep:
    """Every sample_s: each guarded workload's CPU, and while it is hot its
    TCP flows' byte counters (detect/classify/compute_abuse.py). A flow of the
    miner's shape is a `stratum` finding (dialect compute-correlation) that
    the policy's `stratum` action acts on: block resets the flow, kill ends
    its owner."""

    def __init__(self, agent, sample_s: float = COMPUTE_SAMPLE_S, proc: Path = Path("/proc")):
        self._agent = agent
        self.sample_s = sample_s
        self._proc = proc
        self._last = 0.0
        self._usage: dict[int, tuple[float, int]] = {}     # cgroup id -> (when, usage_usec)
        self._workloads: dict[int, compute_abuse.Workload] = {}
        self.findings = 0

    def __call__(self) -> None:
        now = time.monotonic()
        if self.sample_s <= 0 or now - self._last < self.sample_s:
            return
        self._last = now
        agent = self._agent
        registry = agent.registry
        for cgroup_id in list(self._workloads):
            if cgroup_id not in registry.guarded:
                self._workloads.pop(cgroup_id, None)
                self._usage.pop(cgroup_id, None)
        for cgroup_id, cg in list(registry.guarded.items()):
            policy = self._policy(registry.slot_of.get(cgroup_id))
            if policy is None or policy.detection("stratum") == "off":
                continue
            usage = cpu_usage_usec(cg.path)
            if usage is None:
                continue
            before = self._usage.get(cgroup_id)
            self._usage[cgroup_id] = (now, usage)
            if before is None:
                continue
            cores = (usage - before[1]) / 1e6 / max(now - before[0], 1e-3)
            flows = self._flows(cg.path) if cores >= compute_abuse.HOT_CORES else []
            workload = self._workloads.setdefault(cgroup_id, compute_abuse.Workload())
            workload.add(cores, [flow for flow, _pid in flows])
            owners = {flow.cookie: pid for flow, pid in flows}
            for flow, finding in workload.findings():
                self._act(cgroup_id, cg, policy, flow, finding, owners.get(flow.cookie, 0))

    def _policy(self, slot):
        policies = self._agent.policies
        return policies[slot] if slot is not None and 0 <= slot < len(policies) else None

    def _flows(self, directory: Path):
        owners, sweep = owned_sockets(directory, self._proc)
        for message in dict.fromkeys(sweep.truncated):
            self._agent.error(f"compute sweep: {message}")
        if not owners:
            return []
        found: list = []
        pid = next(iter(owners.values()))
        try:
            in_netns_of(pid, lambda: found.extend(tcp_flows(owners)))
        except OSError as exc:
            self._agent.error(f"compute sweep: flows of pid {pid}: {exc.strerror or exc}")
        return found

    def _act(self, cgroup_id: int, cg, policy, flow, finding, pid: int) -> None:
        agent = self._agent
        self.findings += 1
        host = agent.handlers.first_hosts.get(flow.cookie)
        if host is not None:
            # its first payload said where it goes (TLS SNI, HTTP Host): a
            # metrics or notebook connection of a busy job looks the same,
            # so a hint, logged only (a miner's TLS to a pool address names none)
            finding = Finding(finding.type, "low", finding.dialect,
                              {**finding.evidence, "first_payload_host": host})
        detections = decide([finding], policy)
        action = strongest(detections)
        path = cg.relative
        if action == "kill" and pid:
            agent.responder.kill(pid, path)
        if action in ("block", "kill"):
            agent.responder.reset_socket(flow.cookie, pid)
        slot = agent.registry.slot_of.get(cgroup_id, 0)
        header = _header_of(pid, cgroup_id, self._proc,
                            agent.generations.active << SLOT_BITS | slot, abi.Action.LOG,
                            abi.EventKind.PAYLOAD)
        process = agent.processes.lookup(pid) if pid else NO_PROCESS
        ip, _, port = flow.remote.rpartition(":")
        for detection in detections:
            agent.handlers.emit_detection(header, detection, process,
                                          dst={"ip": ip, "port": int(port), "proto": "tcp"})
        agent.report_action_errors()
