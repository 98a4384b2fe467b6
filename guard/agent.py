# SPDX-License-Identifier: Apache-2.0
"""The agent, top to bottom.

start: load objects -> compile and install the policy -> attach hooks to each
cgroup -> mark the cgroups guarded -> "ready" event.
loop:  poll the ring -> decode -> enrich (process, cgroup, rule name) -> emit.
The kernel has already enforced every verdict it reports (EPERM at connect or
socket, SIGKILL at exec); userspace explains it. stop: unmark, detach, free.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

from . import __version__
from .bpf import libbpf
from .bpf.loader import RING_SIZE_DEFAULT, GuardObjects, abi_mismatches, object_path
from .cgroups import Cgroup, CgroupError, CgroupNames, cgroup2_mount, resolve
from .compile import CompiledPolicy, compile_policy
from .events import DecodeError, ExecRecord, decode
from .maps import Maps
from .output import Clock, EventWriter, describe
from .policy import Policy
from .process import ProcessTable

POLL_TIMEOUT_MS = 100
# After a batch, let the next one gather before waiting again: the ring wakes
# its reader only when the reader had caught up, so a busy cgroup costs one
# wake-up per window instead of one per event. Reporting latency stays below
# this window; enforcement never waits on userspace.
BATCH_WINDOW_S = 0.01
COUNTER_INTERVAL_S = 1.0


class AgentError(Exception):
    """The agent cannot start; the message says what to fix."""


@dataclass
class AgentStats:
    events: int = 0
    decode_errors: int = 0
    lost_reported: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class Agent:
    def __init__(self, policy: Policy, cgroup_specs: list[str], writer: EventWriter,
                 ring_size: int = RING_SIZE_DEFAULT):
        self.policy = policy
        self.writer = writer
        self.clock = Clock()
        self.stats = AgentStats()
        self.processes = ProcessTable()
        self._cgroup_specs = cgroup_specs
        self._ring_size = ring_size
        self._objects: GuardObjects | None = None
        self._maps: Maps | None = None
        self._ring: libbpf.RingBuffer | None = None
        self._guarded: dict[int, Cgroup] = {}
        self._compiled: dict[int, CompiledPolicy] = {}
        self._generation = 0
        self._pending: list[bytes] = []
        self._stopping = False
        self._ready = False
        self._started_ns = time.monotonic_ns()

    # -- start ---------------------------------------------------------------
    def start(self) -> None:
        if os.geteuid() != 0:
            raise AgentError("egress-guard run needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
        try:
            mount = cgroup2_mount()
            cgroups = [resolve(spec, mount) for spec in self._cgroup_specs]
        except CgroupError as exc:
            raise AgentError(str(exc)) from None
        for cg in cgroups:
            if cg.level == 0:
                raise AgentError(f"{cg.path}: refusing to guard the root cgroup "
                                 "(name a child cgroup, e.g. a container's)")
        self.cgroup_names = CgroupNames(mount)
        mismatches = abi_mismatches(object_path("exec"))
        if mismatches:
            raise AgentError("guard/abi.py does not match the BPF objects: " + "; ".join(mismatches))
        compiled = compile_policy(self.policy)
        try:
            self._objects = GuardObjects(self._ring_size)
            self._maps = Maps(self._objects.map_fds)
            self._ring = libbpf.RingBuffer(self._objects.map_fds["eg_events"], self._pending.append)
            generation = self._install(compiled)
            self._objects.attach_global()
            for cg in cgroups:
                self.guard(cg, generation)
        except libbpf.LibbpfError as exc:
            self.stop()
            detail = f" ({exc.log[-1]})" if exc.log else ""
            raise AgentError(f"{exc.strerror}{detail}") from None
        except BaseException:
            self.stop()  # whatever failed half-way, nothing stays attached
            raise
        self.writer.write(self._agent_event("ready"))
        self.writer.flush()
        self._ready = True

    def _install(self, compiled: CompiledPolicy) -> int:
        self._generation += 1
        self._maps.install_policy(self._generation, compiled)
        self._compiled[self._generation] = compiled
        return self._generation

    def guard(self, cg: Cgroup, generation: int) -> None:
        """Attach first, then mark guarded: a cgroup is never marked without hooks."""
        self._objects.attach_cgroup(str(cg.path), cg.id)
        self._maps.guard(cg.id, cg.level, generation)
        self._guarded[cg.id] = cg
        self.cgroup_names.register(cg)

    # -- loop ----------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        last_counters = 0.0
        while not (self._stopping or should_stop()):
            if self.poll(POLL_TIMEOUT_MS):
                time.sleep(BATCH_WINDOW_S)
            now = time.monotonic()
            if now - last_counters >= COUNTER_INTERVAL_S:
                last_counters = now
                self._report_losses()

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for events, handle all that arrived, return how many."""
        self._ring.poll(timeout_ms)
        return self._drain()

    def request_stop(self, *_args) -> None:
        self._stopping = True

    def _drain(self) -> int:
        if not self._pending:
            return 0
        batch, self._pending[:] = list(self._pending), []
        for raw in batch:
            self.handle(raw)
        self.writer.flush()
        return len(batch)

    def handle(self, raw: bytes) -> None:
        try:
            record = decode(raw)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            self.writer.write({"ts": self.clock.now(), "kind": "error",
                               "error": f"undecodable event: {exc}"})
            return
        header = record.header
        if isinstance(record, ExecRecord):
            process = self.processes.record_exec(record)
        else:
            process = self.processes.lookup(header.pid)
        compiled = self._compiled.get(header.policy_id)
        event = describe(
            record, self.clock,
            rule=compiled.rule_name(header.rule_id) if compiled else None,
            cgroup_path=self.cgroup_names.name(header.cgroup_id),
            policy_name=compiled.name if compiled else None,
            process=process)
        self.stats.events += 1
        self.stats.by_kind[event["kind"]] = self.stats.by_kind.get(event["kind"], 0) + 1
        self.writer.write(event)

    def counters(self) -> dict[str, int]:
        return self._maps.counters() if self._maps else {}

    def _report_losses(self) -> None:
        lost = self.counters().get("events_lost", 0)
        if lost > self.stats.lost_reported:
            self.writer.write({"ts": self.clock.now(), "kind": "loss",
                               "lost": lost - self.stats.lost_reported, "lost_total": lost})
            self.writer.flush()
            self.stats.lost_reported = lost

    # -- stop ----------------------------------------------------------------
    def stop(self) -> None:
        """Drain what the kernel already sent, then detach and free everything."""
        if self._ring is not None:
            try:
                self._ring.consume()
                self._drain()
                self._report_losses()
            finally:
                self._ring.close()
                self._ring = None
        if self._ready:
            self._ready = False
            self.writer.write(self.stopped_event())
            self.writer.flush()
        for cgroup_id in list(self._guarded):
            self._maps.unguard(cgroup_id)
            self._guarded.pop(cgroup_id)
        if self._objects is not None:
            self._objects.close()
            self._objects = None
        self._maps = None

    def _agent_event(self, state: str) -> dict:
        counters = self.counters()
        return {
            "ts": self.clock.now(),
            "kind": "agent",
            "state": state,
            "version": __version__,
            "policy": {"name": self.policy.name, "source": self.policy.source,
                       "generation": self._generation},
            "cgroups": [{"id": cg.id, "path": cg.relative} for cg in self._guarded.values()],
            "ring_size": self._ring_size,
            "counters": counters,
            "uptime_s": round((time.monotonic_ns() - self._started_ns) / 1e9, 3),
        }

    def stopped_event(self) -> dict:
        event = self._agent_event("stopped")
        event["events"] = self.stats.events
        return event


def run_until_signalled(agent: Agent) -> None:
    """SIGINT and SIGTERM end the loop cleanly; everything is detached after."""
    previous = {sig: signal.signal(sig, agent.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        agent.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

