# SPDX-License-Identifier: Apache-2.0
"""The agent: a composition root over its stages, top to bottom.

    registry.py     which cgroups are guarded, by which policy slot (guard,
                    release, reselect, discovery)
    generations.py  policy generations: install beside, switch, retire, adopt
    reloads.py      the reload protocol: request, SIGHUP or file -> switch -> answer
    handlers.py     one handler per record kind, found through a table
    folds.py        flushes of the kernel's fold windows (repeated logged connects)
    holds.py        the hold watchdog: no program stays stopped at exec
    scheduling.py   the loop's share of the CPUs
    this module     start, the loop (records, control answers, the tick), stop,
                    status and metrics

start: load objects -> compile and install the policy as generation 1 ->
point the policy slot at it -> attach hooks to each cgroup -> mark the
cgroups guarded -> open the control socket -> "ready" event.
loop:  wait on the ring and the control socket -> decode -> enrich (process,
cgroup, rule name) -> emit; answer reload and status requests; heartbeat.
The kernel has already enforced every verdict it reports (EPERM at connect or
socket, SIGKILL at exec); userspace explains it.
reload: read (a large policy's rules stay columns, policy/fast.py) -> compile
beside the old generation -> one slot update switches the kernel -> answer ->
build the policy model -> the old generation's entries go after a grace period.
stop: unmark, detach, free.
"""
from __future__ import annotations

import os
import selectors
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

from guard import __version__
from guard.agent.folds import WINDOW_MS_DEFAULT, Folds
from guard.agent.generations import Generations, compile_all
from guard.agent.handlers import RecordHandlers
from guard.agent.holds import HoldWatchdog
from guard.agent.registry import Registry
from guard.agent.reloads import ReloadProtocol
from guard.agent.scheduling import CpuShare, cgroup_company, lateness_s
from guard.agent.losses import LossReport
from guard.agent.sweeps import (COMPUTE_SAMPLE_S, ComputeSweep, PacketSocketSweep,
                                packet_socket_mode, syscall_hook_wanted)
from guard.control.server import ControlError, ControlServer
from guard.detect.detector import Detector
from guard.detect.files import ProcessFiles
from guard.detect.vocabulary import anchor_table
from guard.kernel import abi, libbpf
from guard.kernel.host import KernelError, KernelFactory, Ring, open_kernel
from guard.kernel.maps import Maps
from guard.kernel.records import kind_of, written_ns
from guard.kernel.objects import ENFORCEMENT_LEVEL, RING_SIZE_DEFAULT, GuardObjects
from guard.policy.compile import CompiledPolicy
from guard.policy.fast import warm_up, with_rules
from guard.policy.load import default_policy
from guard.policy.model import Policy, PolicyError, Problem
from guard.report.events import (Clock, EventWriter, agent_event, crashed_event, error_event,
                                 policy_event)
from guard.report.metrics import MetricsServer
from guard.respond.responder import Responder, cgroup_path_of
from guard.workloads.cgroups import Cgroup, CgroupError, CgroupNames, resolve
from guard.workloads.containers import container_of, container_parents, running_containers
from guard.workloads.own import OwnCgroup, find_own_cgroup
from guard.workloads.kubernetes import PodWatcher
from guard.workloads.names import NameBook
from guard.workloads.process import ProcessTable
from guard.workloads.runtime import DEFAULT_SOCKETS, MetadataCache, describe_container

# After a batch, let the next one gather before waiting again: the ring wakes
# its reader only when the reader had caught up, so a busy cgroup costs one
# wake-up per window instead of one per event. Reporting latency stays below
# this window; enforcement never waits on userspace.
BATCH_WINDOW_S = 0.01
TICK_S = 0.25               # heartbeat, loss and policy-file checks
LOSS_REPORT_INTERVAL_S = 1.0
LOOP_ERROR_PAUSE_S = 0.05   # after a turn of the loop failed
HEARTBEAT_EVERY = 32        # records between looks at the clock in a long batch
# How long the kernel holds a first payload or a program stopped at exec for
# the agent's verdict before letting it go; it holds nothing while the
# agent's heartbeat (every TICK_S) is older than this.
HOLD_TIMEOUT_MS_DEFAULT = 5000


class AgentError(Exception):
    """The agent cannot start; the message says what to fix."""


@dataclass
class AgentStats:
    events: int = 0
    decode_errors: int = 0
    handler_errors: int = 0     # records whose handling raised (reported, never fatal)
    loop_errors: int = 0        # loop turns and tick chores that raised (likewise)
    reloads: int = 0
    samples: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class Agent:
    def __init__(self, policy: Policy | Sequence[Policy], cgroup_specs: list[str],
                 writer: EventWriter,
                 ring_size: int = RING_SIZE_DEFAULT, policy_path: str | None = None,
                 control_socket: str | None = None, pin_dir: str | None = None,
                 state_dir: str | None = None, metrics_address: tuple[str, int] | None = None,
                 runtime_sockets: tuple[str, ...] = DEFAULT_SOCKETS,
                 kube_api: tuple[str, str, str | None, str | None] | None = None,
                 unselected: str = "default", hold_timeout_ms: int = HOLD_TIMEOUT_MS_DEFAULT,
                 scheduling: str = "background", *, syscall_hook: bool = False,
                 compute_sample_s: float = COMPUTE_SAMPLE_S,
                 container_parents: Sequence[str] = (),
                 fold_window_ms: int = WINDOW_MS_DEFAULT,
                 kernel: KernelFactory = open_kernel, reasons_dir: str | None = None,
                 metadata: Callable[[tuple[str, ...]], MetadataCache] = MetadataCache,
                 own_cgroup: Callable[[Path], OwnCgroup] = find_own_cgroup):
        # the seams: the kernel (guard/kernel/host.py), the runtime's metadata, where it runs
        self._kernel_factory = kernel
        self._find_own = own_cgroup
        self._metadata_factory = metadata
        # what nothing selects: the embedded default, or left unguarded
        self._unselected = unselected
        self.policies = self._with_fallback(policy)
        self.policy_path = policy_path
        self.writer = writer
        self.clock = Clock()
        self.stats = AgentStats()
        self.processes = ProcessTable()
        self.names = NameBook(abi.DNS_LEARNED_MAX)   # learned addresses -> names, as the kernel's
        self._cgroup_specs = cgroup_specs
        self._parent_specs = tuple(container_parents)   # sentinel hooks (registry.py)
        # no cgroups named: guard every container on the host, now and as they start
        self.discover = not cgroup_specs
        self._ring_size = ring_size
        self._hold_timeout_ms = hold_timeout_ms
        self.syscall_hook = syscall_hook   # sys_enter: host-wide, so only when asked
        self.packet_sweep = PacketSocketSweep(self)
        self.compute_sweep = ComputeSweep(self, compute_sample_s)
        self.losses = LossReport(self)      # per workload, every LOSS_REPORT_INTERVAL_S
        self.folds = Folds(self, fold_window_ms)   # repeated logged connects, flushed when due
        # the loop's scheduling policy (see scheduling.py)
        self._cpu = CpuShare(scheduling, company=cgroup_company)
        self.detector = Detector()
        # a process's files as it sees them (a seam: tests give a fake root)
        self.files_of: Callable[[int], ProcessFiles] = ProcessFiles
        self.process_of = ProcessTable.from_proc     # likewise, a held program's /proc
        self.hold_watchdog = HoldWatchdog            # likewise (the fake's is not started)
        self._responder: Responder | None = None
        self._holds: HoldWatchdog | None = None
        self._detections_by: dict[tuple[str, str], int] = {}
        self.registry = Registry(self)
        self.handlers = RecordHandlers(self, self.registry.on_cgroup, reasons_dir)
        self._control_path = control_socket
        self._pin_dir = Path(pin_dir) if pin_dir else None
        # pinned generations outlive the agent; so must their names
        self._names_file = (Path(state_dir) / "generations.json"
                            if pin_dir and state_dir else None)
        self._state_file = Path(state_dir) / "agent.json" if pin_dir and state_dir else None
        self._crash: str | None = None
        self.adopted = False
        self._heartbeat_timeout_ms = 0
        self._control: ControlServer | None = None
        self._metrics_address = metrics_address
        self._metrics: MetricsServer | None = None
        self._events_by: dict[tuple[str, str], int] = {}
        self._runtime_sockets = runtime_sockets
        self.metadata: MetadataCache | None = None
        self._kube_api = kube_api  # (api URL, node name, token, CA file)
        self.pods: PodWatcher | None = None
        self._objects: GuardObjects | None = None
        self._maps: Maps | None = None
        self._ring: Ring | None = None
        self.cgroup_names: CgroupNames | None = None    # set at start (the mount is known then)
        self.generations = Generations(self._names_file)
        self._pending: list[bytes] = []
        self._stopping = False
        self._ready = False
        self.reloads = ReloadProtocol(self)
        self._started_ns = time.monotonic_ns()
        self._last_beat = 0.0

    # -- start ---------------------------------------------------------------
    def start(self) -> None:
        try:
            kernel = self._kernel_factory(self._ring_size, self._pin_dir)
        except KernelError as exc:
            raise AgentError(str(exc)) from None
        try:
            mount = kernel.cgroup_mount()
            cgroups = [resolve(spec, mount) for spec in self._cgroup_specs]
        except CgroupError as exc:
            raise AgentError(str(exc)) from None
        self._mount = mount
        self.registry.own = self._find_own(mount)   # never guarded (guard/workloads/own.py)
        for refusal in filter(None, map(self.registry.own.refusal, cgroups)):
            raise AgentError(refusal)   # the root cgroup, or the agent's own
        try:
            parents = [resolve(spec, mount) for spec in container_parents(mount, self._parent_specs)]
        except CgroupError as exc:
            raise AgentError(f"--container-parent {exc}") from None
        for refusal in filter(None, map(self.registry.own.parent_refusal, parents)):
            raise AgentError(refusal)
        self.cgroup_names = kernel.cgroup_names(mount)
        mismatches = kernel.check_abi()
        if mismatches:
            raise AgentError("guard/kernel/abi.py does not match the BPF objects: " + "; ".join(mismatches))
        compiled = compile_all(self.policies)
        try:
            self.metadata = self._metadata_factory(self._runtime_sockets)
            if self._kube_api:
                api, node, token, ca_file = self._kube_api
                self.pods = PodWatcher(api, node, token, ca_file)
            try:
                kernel.load()
            finally:    # the objects, even when their maps failed: stop() frees them
                self._objects, self._maps = kernel.objects, kernel.maps
            self.generations.maps = self._maps
            # a previous agent's maps first: its entries keep judging meanwhile
            previously_guarded = self._adopt() if self._objects.adopted else []
            self.registry.exempt_own(parents)   # before a parent entry can judge the agent
            self._maps.set_anchors(anchor_table())
            self._maps.heartbeat(self._heartbeat_timeout_ms)
            self._maps.set_hold_timeout(self._hold_timeout_ms)
            self._maps.set_fold_window(self.folds.window_ms)   # this agent's, not an adopted one
            self._responder = Responder(self._maps, self._objects)
            # its own responder and detector: it runs beside the loop
            self._holds = self.hold_watchdog(
                self._maps, Responder(self._maps, self._objects),
                Detector(self.detector.indicators), self._hold_timeout_ms,
                self._held_policy, files_of=self.files_of, process_of=self.process_of)
            self._ring = kernel.open_ring(self._pending.append)
            self._switch_to(self.policies, compiled)
            self.generations.write_names()
            # sys_enter as the first switch decided (syscall_hook_wanted)
            self._objects.attach_global(syscall_hook=self._objects.syscall_hook)
            if self.discover:
                # watch first, then scan: a container starting in between is
                # seen twice rather than not at all (guard() is idempotent)
                self._maps.watch_cgroups(True)
                cgroups = running_containers(mount)
            for parent in parents:
                self.registry.guard_parent(parent)
            for cg in cgroups:
                self.guard(cg)
            self.registry.release_adopted(previously_guarded)
            if self._control_path:
                self._control = ControlServer(self._control_path)
            if self._metrics_address:
                try:
                    self._metrics = MetricsServer(*self._metrics_address, snapshot=self.metrics,
                                                  ready=lambda: self._ready)
                except OSError as exc:  # the address is taken or not ours
                    raise AgentError(f"metrics on {self._metrics_address[0]}:"
                                     f"{self._metrics_address[1]}: {exc.strerror}") from None
        except AgentError:
            self.stop()
            raise
        except libbpf.LibbpfError as exc:
            self.stop()
            detail = f" ({exc.log[-1]})" if exc.log else ""
            raise AgentError(f"{exc.strerror}{detail}") from None
        except ControlError as exc:
            self.stop()
            raise AgentError(str(exc)) from None
        except OSError as exc:   # e.g. the state directory (--state-dir) cannot be made
            self.stop()
            raise AgentError(f"{exc.filename or 'start'}: {exc.strerror or exc}") from None
        except BaseException:
            self.stop()  # whatever failed half-way, nothing new stays attached
            raise
        warm_up()   # the fast reader's patterns, before a reload needs them
        ready = self._agent_event("ready")
        previous = self._previous_agent()
        if previous is not None:
            ready["previous_agent"] = previous
        self.writer.write(ready)
        self._record_state("running")
        self.writer.flush()
        self._ready = True
        self._holds.start()

    def guard(self, cg: Cgroup) -> None:
        self.registry.guard(cg)

    def release(self, cgroup_id: int) -> Cgroup | None:
        return self.registry.release(cgroup_id)

    # -- adoption (pinned installations) ---------------------------------------
    def _adopt(self) -> list[int]:
        """Take over what a previous agent pinned: its generations keep
        judging until this agent's first switch, then retire."""
        self.adopted = True
        return self.generations.adopt()

    # -- policy generations --------------------------------------------------
    def _with_fallback(self, policy):
        """The set in force: the given policies, plus the embedded default for
        what none selects unless one of them already has no selector (or
        unselected containers are to stay unguarded)."""
        policies = (policy,) if isinstance(policy, Policy) else tuple(policy)
        if len(policies) + 1 > abi.POLICY_SLOTS:
            raise PolicyError([Problem(policies[0].source, 0, "<file>",
                                       f"more than {abi.POLICY_SLOTS - 1} policies")])
        if self._unselected == "default" and all(p.selector is not None for p in policies):
            policies += (default_policy(),)
        return policies

    def _switch_to(self, policies: tuple[Policy, ...],
                   compiled: list[tuple[CompiledPolicy, CompiledPolicy | None]]) -> int:
        """Install a new generation of every policy (and fail-closed twins)
        beside the one in force, then switch each slot in one update; the old
        generation retires later. If an install fails, the set in force stays
        whole. Only the policies' names, selectors and failClosed are read
        here (a large egress list may not be built yet, see reload)."""
        hook = syscall_hook_wanted(self.syscall_hook, [main for main, _twin in compiled])
        if hook:    # on before a policy that needs it judges anything
            self._objects.set_syscall_hook(True)
        self.registry.widen_for(compiled)   # packet programs before the policy needing them
        generation, ids, slots = self.generations.install(compiled)
        for slot, (policy_id, fail_closed_id) in enumerate(slots):
            self._maps.set_slot(slot, policy_id, fail_closed_id)
        # the kernel has switched: what follows is this agent's bookkeeping
        self.generations.switched(generation, compiled, ids, slots)
        # one heartbeat for the host: the strictest failClosed of the set
        timeouts = [p.fail_closed.after_ms for p in policies if p.fail_closed]
        self._heartbeat_timeout_ms = min(timeouts, default=0)
        self._maps.heartbeat(self._heartbeat_timeout_ms)
        previous_slots = len(self.policies)
        self.policies = policies
        self.registry.reselect()
        for slot in range(len(policies), previous_slots):
            self._maps.set_slot(slot, 0)  # no cgroup points here any more
        self.registry.settle_needs()
        if not hook:
            self._objects.set_syscall_hook(False)
        return generation

    def reload(self, policy: Policy | Sequence[Policy],
               started: int | None = None, answer_first: bool = False) -> dict[str, Any]:
        """Validate and switch to a policy (set); PolicyError leaves the set in
        force. started: time.monotonic_ns() when the request arrived (before
        reading and parsing); switch_ms counts from there to the slot update
        that switches the kernel, and switched_ns is that update's
        CLOCK_MONOTONIC time (benchmarks compare it with a caller's start).

        A large policy read by the fast reader is compiled from its columns
        and switched to first; its EgressRules, which only this agent's
        bookkeeping reads, are built after the switch. answer_first: leave that
        bookkeeping to ReloadProtocol.finish_pending(), after the caller has been answered."""
        started = started or time.monotonic_ns()
        policies = self._with_fallback(policy)
        compiled = compile_all(policies)
        previous = self.generations.active
        retired = self.policies
        generation = self._switch_to(policies, compiled)
        switched = self.generations.switched_ns
        self.stats.reloads += 1
        result = {"policy": {"name": policies[0].name, "source": policies[0].source,
                             "generation": generation},
                  "policies": [p.name for p in policies],
                  "previous_generation": previous,
                  "switch_ms": round((switched - started) / 1e6, 3),
                  "switched_ns": switched}

        def record() -> None:
            # the rules; the old ones go with the old generation, on a tick
            self.policies = with_rules(policies)
            self.generations.retired_models.append(retired)
            self.writer.write(policy_event(self.clock, "reloaded", **result))
            self.writer.flush()
            self.generations.write_names()
        self.reloads.after_answer.append(record)
        if not answer_first:
            self.reloads.finish_pending()
        return result

    # -- loop ----------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._ring.epoll_fd(), selectors.EVENT_READ, "ring")
        if self._control:
            selector.register(self._control.fileno(), selectors.EVENT_READ, "control")
        self._last_tick = self._last_losses = 0.0
        self._cpu.pace(0.0)
        try:
            while not (self._stopping or should_stop()):
                try:
                    self._turn(selector)
                except Exception as exc:  # noqa: BLE001 - the loop outlives any one turn
                    self.stats.loop_errors += 1
                    self.error(f"agent loop: {_cause(exc)}")
                    self.writer.flush()
                    time.sleep(LOOP_ERROR_PAUSE_S)   # a failure that repeats must not spin
        finally:
            selector.close()
            self._cpu.restore()

    def _turn(self, selector: selectors.BaseSelector) -> None:
        """One turn of the loop: records, control answers, the tick."""
        batched = False
        for key, _ in selector.select(timeout=TICK_S):
            if key.data == "ring":
                self._ring.consume()
                written = written_ns(self._pending[0]) if self._pending else 0
                if written:
                    self._cpu.pace(lateness_s(written))
                batched = self._drain() > 0
            else:
                with self._cpu.foreground():
                    self._control.handle(self._answer)
                    self.reloads.finish_pending()
        now = time.monotonic()
        if self._metrics:
            self._metrics.loop_turned()
        if now - self._last_tick >= TICK_S:
            self._cpu.recheck()   # background only while the cgroup is its own
            if self._last_tick:
                self._cpu.pace(now - self._last_tick - TICK_S)   # a late tick: starved
            self._last_tick = now
            with self._cpu.foreground():
                self._tick(now)
        self.folds.flush_due()
        if now - self._last_losses >= LOSS_REPORT_INTERVAL_S:
            self._last_losses = now
            self.losses()
        self.writer.flush()   # what the tick or an answer wrote, if anything
        if batched:
            time.sleep(BATCH_WINDOW_S)

    def _beat_if_due(self) -> None:
        """A long batch (an exec storm fills the ring with thousands of
        records) must not let the heartbeat go stale: the kernel holds
        programs at exec only while it is fresh, so a stale one would let a
        held ssh -R run unjudged while the agent is still working through
        the records before its exec."""
        if time.monotonic() - self._last_beat >= TICK_S:
            self._beat()

    def _beat(self) -> None:
        self._maps.heartbeat(self._heartbeat_timeout_ms)
        self._last_beat = time.monotonic()

    def _tick(self, now: float) -> None:
        """The heartbeat first; then each chore on its own, so one that
        fails (and is reported) never keeps the others from running."""
        self._beat()
        for chore in (self._report_watchdog, self.registry.reselect_if_news, self.handlers.sweep,
                      self.packet_sweep, self.compute_sweep,
                      lambda: self.generations.retire_due(now), self.reloads.if_asked):
            try:
                chore()
            except Exception as exc:  # noqa: BLE001
                self.stats.loop_errors += 1
                self.error(f"agent tick: {_cause(exc)}")

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for events, handle all that arrived, return how many."""
        self._ring.poll(timeout_ms)
        return self._drain()

    def request_stop(self, *_args) -> None:
        self._stopping = True

    def request_reload(self, *_args) -> None:
        self.reloads.requested = True

    def _answer(self, request: dict[str, Any], files: Sequence[int] = ()) -> dict[str, Any]:
        self.reloads.finish_pending()  # a reload answered just before is recorded first
        op = request["op"]
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "reload":
            return self.reloads.from_request(request, files)
        return {"ok": False, "error": f"unknown op {op!r} (expected status or reload)"}

    def _drain(self) -> int:
        if not self._pending:
            return 0
        batch, self._pending[:] = list(self._pending), []
        handle = self.handle
        for i, raw in enumerate(batch):
            try:   # inline, not a call per record: this loop runs for every record
                handle(raw)
            except Exception as exc:  # noqa: BLE001 - MemoryError, RecursionError included
                self._handle_failed(raw, exc)
            if i % HEARTBEAT_EVERY == HEARTBEAT_EVERY - 1:
                self._beat_if_due()
        self._responder.flush_allowed()
        self.report_action_errors()
        self.writer.flush()
        return len(batch)

    def _handle_failed(self, raw: bytes, exc: Exception) -> None:
        """A record whose handling raised (_drain catches it): whatever a
        workload's bytes make a handler do, the loop goes on. The failure
        is counted and reported with its cause; the enforcement the kernel
        already did stands, and a program held at exec is never left
        stopped (see RecordHandlers.judge_exec)."""
        self.stats.handler_errors += 1
        self.error(f"record not handled: {_cause(exc)}", record_kind=kind_of(raw))

    def error(self, message: str, **fields: Any) -> None:
        self.writer.write(error_event(self.clock, message, **fields))

    def handle(self, raw: bytes) -> None:
        """One record from the ring, through its kind's handler."""
        self.handlers.handle(raw)

    # -- what the record handlers use ---------------------------------------------
    @property
    def responder(self) -> Responder:
        return self._responder

    @property
    def maps(self) -> Maps:
        return self._maps

    @property
    def objects(self) -> GuardObjects:
        return self._objects

    @property
    def mount(self) -> Path:
        return self._mount

    def compiled_policy(self, policy_id: int):
        """The compiled policy (or, adopted, the names) a record was judged by."""
        return self.generations.get(policy_id)

    def count_detection(self, finding_type: str, action: str) -> None:
        key = (finding_type, action)
        self._detections_by[key] = self._detections_by.get(key, 0) + 1

    def report_action_errors(self) -> None:
        for error in self._responder.take_errors():
            self.error(f"action failed: {error}")
        for error in self.detector.take_errors():
            self.error(f"classifier failed: {error}")

    def emit(self, event: dict[str, Any], policy_id: int) -> None:
        """An event of a record, enriched (container, pod, identity), counted, written."""
        stats, kind = self.stats, event["kind"]
        stats.events += 1
        stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
        if "container" in event:
            event["container"] = self.registry.container(event["cgroup"]["path"])
            pod = self.registry.pod(event["cgroup"]["path"])
            if pod is not None:
                event["k8s"] = pod.as_dict()
            identity = self.registry.identity(policy_id, event["cgroup"]["path"], pod)
            if identity:
                event["identity"] = identity
        key = (kind, event["action"])
        self._events_by[key] = self._events_by.get(key, 0) + 1
        self.writer.write(event)
        self.handlers.feedback.on_event(event, policy_id)   # spec.feedback: tell the sandbox

    def _held_policy(self, pid: int) -> tuple[Policy | None, str | None]:
        """(policy, cgroup path) of a program the kernel holds (hold watchdog)."""
        cgroup_path = cgroup_path_of(pid)
        return (self.registry.policy_for_path(cgroup_path) if cgroup_path else None), cgroup_path

    def _report_watchdog(self) -> None:
        reports = self._holds.reports if self._holds else ()
        while reports:
            report = reports.popleft()
            self.error(report.pop("error"), **report)

    def counters(self) -> dict[str, int]:
        return self._maps.counters() if self._maps else {}

    # -- stop ----------------------------------------------------------------
    def stop(self) -> None:
        """Drain what the kernel already sent, then detach and free everything."""
        if self._holds is not None:
            self._holds.stop()
            self._report_watchdog()
        self.reloads.finish_pending()
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self.metadata is not None:
            self.metadata.close()
        if self.pods is not None:
            self.pods.close()
            self.pods = None
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._ring is not None:
            try:
                self._ring.consume()
                self._drain()
                self.folds.flush_all()
                self.losses()
            finally:
                self._ring.close()
                self._ring = None
        keep_pins = self._pin_dir is not None and self._ready
        if self._ready:
            self._ready = False
            event = self._agent_event("stopped")
            event["pinned"] = keep_pins
            self.writer.write(event)
            self.writer.flush()
            self._record_state("crashed" if self._crash else "stopped")
        if not keep_pins:
            for cgroup_id in list(self.registry.guarded):
                self._maps.unguard(cgroup_id)
        self.registry.guarded.clear()
        if self.cgroup_names is not None:
            self.cgroup_names.close()
        if self._maps is not None:
            self._maps.close()
        if self._objects is not None:
            # pinned: enforcement goes on without the agent until a new agent
            # adopts it or `egress-guard uninstall` removes it
            self._objects.close(keep_pins=keep_pins)
            self._objects = None
        self._maps = None

    def crashed(self, exc: BaseException) -> None:
        """Say why the agent stops on an error, and what stays enforced."""
        pinned = self._pin_dir is not None and self._ready
        frames = traceback.extract_tb(exc.__traceback__)[-6:]
        self._crash = _cause(exc)
        self.writer.write(crashed_event(
            self.clock, self._crash,
            [f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames], pinned))
        self.writer.flush()

    def _record_state(self, state: str) -> None:
        """The agent's own state file (with --pin: the next agent reads it
        to say whether this one stopped cleanly)."""
        if self._state_file is None:
            return
        record = {"pid": os.getpid(), "state": state, "ts": self.clock.now()}
        if self._crash:
            record["error"] = self._crash
        try:
            self._state_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            staged = self._state_file.with_suffix(".tmp")
            staged.write_bytes(orjson.dumps(record))
            os.replace(staged, self._state_file)
        except OSError as exc:
            self.error(f"cannot record the agent's state in {self._state_file}: {exc}")

    def _previous_agent(self) -> dict[str, Any] | None:
        """How the agent before this one ended, when it did not end cleanly."""
        try:
            record = orjson.loads(self._state_file.read_bytes()) if self._state_file else None
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("state") == "stopped":
            return None
        pid = record.get("pid")
        if (record.get("state") == "running" and isinstance(pid, int) and pid != os.getpid()
                and _alive(pid)):
            return None   # not ours to judge: it still runs (start() refuses a second agent)
        how = ("crashed: " + str(record.get("error")) if record.get("state") == "crashed"
               else "ended without a word (SIGKILL, the OOM killer, a host crash)")
        return {"pid": pid, "state": record.get("state"), "how": how, "since": record.get("ts")}

    # -- reporting -------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "policy": {"name": self.policies[0].name, "source": self.policies[0].source,
                       "generation": self.generations.active},
            "policies": [{"name": p.name, "source": p.source, "slot": slot}
                         for slot, p in enumerate(self.policies)],
            "enforcement": ENFORCEMENT_LEVEL,
            "packet_sockets": packet_socket_mode(self._objects),
            "cgroups": [_cgroup_entry(cg, self.metadata, self.policies[self.registry.slot_of[cg.id]])
                        for cg in self.registry.guarded.values()],
            "discovery": self.discover,
            "container_parents": self.registry.parents_status(),
            "self": self.registry.own.as_dict(),
            "counters": self.counters(),
            **self.handlers.status(self.generations.active_ids),   # names, feedback
            "detections": {f"{t}/{a}": n for (t, a), n in sorted(self._detections_by.items())},
            "events": self.stats.events,
            "fold": self.folds.status(),
            "reloads": self.stats.reloads,
            "ring_size": self._ring_size,
            "scheduling": self._scheduling_state(),
            "uptime_s": round((time.monotonic_ns() - self._started_ns) / 1e9, 3),
        }

    def metrics(self) -> dict[str, Any]:
        """A snapshot for the metrics endpoint (called from its thread)."""
        try:
            counters = self.counters()
        except (libbpf.LibbpfError, AttributeError):
            counters = {}  # the agent is stopping
        guarded = list(self.registry.guarded.values())
        snapshot: dict[str, Any] = {
            "egress_guard_events_total": [({"kind": k, "action": a}, n)
                                          for (k, a), n in sorted(self._events_by.items())],
            "egress_guard_detections_total": [({"type": t, "action": a}, n)
                                              for (t, a), n in sorted(self._detections_by.items())],
            "egress_guard_guarded_cgroups": len(guarded),
            "egress_guard_guarded_containers": sum(
                1 for cg in guarded if container_of(cg.relative) is not None),
            "egress_guard_policy_generation": self.generations.active,
            "egress_guard_reloads_total": self.stats.reloads,
            "egress_guard_uptime_seconds": round((time.monotonic_ns() - self._started_ns) / 1e9, 3),
        }
        if counters:
            snapshot["egress_guard_ring_events_lost_total"] = counters["events_lost"]
            for counter in ("flows_sampled", "flows_held", "hold_timeouts", "flow_drops"):
                snapshot[f"egress_guard_{counter}_total"] = counters[counter]
            snapshot["egress_guard_kernel_verdicts_total"] = [
                ({"action": name.removeprefix("verdict_")}, value)
                for name, value in counters.items() if name.startswith("verdict_")]
        return snapshot

    def _scheduling_state(self) -> dict[str, Any]:
        state = {"mode": self._cpu.mode, "in_force": self._cpu.in_force()}
        if self._cpu.why_not:
            state["refused"] = self._cpu.why_not
        return state

    def _agent_event(self, state: str) -> dict:
        extra: dict[str, Any] = {}
        if self._control_path:
            extra["control_socket"] = self._control_path
        if self._pin_dir:
            extra["pin_dir"] = str(self._pin_dir)
            extra["adopted"] = self.adopted
        return agent_event(self.clock, state, self.status(), **extra)


def _cgroup_entry(cg: Cgroup, metadata: MetadataCache | None, policy: Policy) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": cg.id, "path": cg.relative, "policy": policy.name}
    container = container_of(cg.relative)
    if container is not None:
        entry["container"] = describe_container(
            container.as_dict(), metadata.get(container.id) if metadata else None)
    return entry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _cause(exc: BaseException) -> str:
    """An exception in one line: its type, message, and where it was
    raised (the innermost frame), so a report names the cause."""
    text = f"{type(exc).__name__}: {str(exc)[:300]}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return text


class AgentCrashed(Exception):
    """The loop stopped on an unexpected error; the crashed event says why."""


def start_and_run_until_signalled(agent: Agent) -> None:
    """SIGINT and SIGTERM end the loop cleanly; SIGHUP re-reads the policy file.
    The handlers are in place before start, so a signal that arrives while the
    agent attaches (or right after its ready line) is never lost: the loop
    sees it at once and the agent stops cleanly.

    An error that escapes the loop (the loop itself catches what a record or a
    tick raises, so this is a bug) is written as {"kind": "agent", "state":
    "crashed"} with its cause and what became of enforcement, then raised as
    AgentCrashed for the caller's exit code."""
    handlers = {signal.SIGINT: agent.request_stop, signal.SIGTERM: agent.request_stop,
                signal.SIGHUP: agent.request_reload}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        agent.start()
        try:
            agent.run()
        except Exception as exc:
            agent.crashed(exc)
            raise AgentCrashed(_cause(exc)) from exc
        finally:
            agent.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
