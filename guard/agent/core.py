# SPDX-License-Identifier: Apache-2.0
"""The agent, top to bottom.

start: load objects -> compile and install the policy as generation 1 ->
point the policy slot at it -> attach hooks to each cgroup -> mark the
cgroups guarded -> open the control socket -> "ready" event.
loop:  wait on the ring and the control socket -> decode -> enrich (process,
cgroup, rule name) -> emit; answer reload and status requests; heartbeat.
The kernel has already enforced every verdict it reports (EPERM at connect or
socket, SIGKILL at exec); userspace explains it.
reload: read (a large policy's rules stay columns, policy_fast.py) -> compile
beside the old generation -> one slot update switches the kernel -> answer ->
build the policy model -> the old generation's entries go after a grace period.
stop: unmark, detach, free.
"""
from __future__ import annotations

import errno
import os
import selectors
import signal
import struct
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

from guard import __version__
from guard.kernel import abi
from guard.kernel import libbpf
from guard.kernel.objects import ENFORCEMENT_LEVEL, RING_SIZE_DEFAULT, GuardObjects, abi_mismatches, object_path
from guard.workloads.cgroups import Cgroup, CgroupError, CgroupNames, cgroup2_mount, resolve
from guard.policy.compile import CompiledPolicy, compile_fail_closed
from guard.control.client import is_regular_file, read_file
from guard.control.server import ControlError, ControlServer
from guard.workloads.containers import container_of, is_container_cgroup
from guard.respond.responder import Responder, cgroup_path_of
from guard.detect.classify import CONFIDENCES
from guard.detect.detector import Detection, Detector, decide, strongest
from guard.detect.vocabulary import anchor_table
from guard.detect.files import ProcessFiles
from guard.agent.holds import HoldWatchdog
from guard.kernel.records import (CgroupRecord, DecodeError, ExecRecord, PayloadRecord, StdioSocketRecord,
                     decode)
from guard.kernel.maps import MapCapacityError, Maps
from guard.workloads.kubernetes import PodInfo, PodWatcher
from guard.workloads.runtime import DEFAULT_SOCKETS, ContainerInfo, MetadataCache, describe_container
from guard.report.metrics import MetricsServer
from guard.report.events import Clock, EventWriter, describe, describe_detection
from guard.policy.model import (Policy, PolicyError, Problem, Workload, default_policy, policy_text,
                     select_policy)
from guard.policy.fast import FastPolicy, gc_paused, load_policy_set, read_policy_set, warm_up
from guard.workloads.process import ProcessTable
from guard.agent.scheduling import CpuShare, cgroup_company, lateness_s

# After a batch, let the next one gather before waiting again: the ring wakes
# its reader only when the reader had caught up, so a busy cgroup costs one
# wake-up per window instead of one per event. Reporting latency stays below
# this window; enforcement never waits on userspace.
BATCH_WINDOW_S = 0.01
TICK_S = 0.25               # heartbeat, loss and policy-file checks
LOSS_REPORT_INTERVAL_S = 1.0
LOOP_ERROR_PAUSE_S = 0.05   # after a turn of the loop failed
HEARTBEAT_EVERY = 32        # records between looks at the clock in a long batch
# A retired generation's map entries stay this long after the switch, so a
# hook that read the old generation an instant before it can still finish
# with the old rules (BPF programs run inside an RCU read section; this is
# far longer than any of them).
RETIRE_GRACE_S = 1.0
# How long the kernel holds a first payload or a program stopped at exec for
# the agent's verdict before letting it go; it holds nothing while the
# agent's heartbeat (every TICK_S) is older than this.
HOLD_TIMEOUT_MS_DEFAULT = 5000
FIRST_SAMPLES_KEPT = 4096   # first payloads waiting for the server's reply
GENERATION_NAMES_KEPT = 16  # late events of retired generations still get rule names
# What the kernel says when an LPM trie or hash map has no room left
MAP_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.E2BIG, errno.ENOMEM})
# Policy ids in the kernel: generation << 8 | slot (one slot per policy of the
# set), and a fail-closed twin with the top bit set; events name the
# generation and the policy they were judged by.
SLOT_BITS = 8
FAIL_CLOSED_BIT = 1 << 31


SSH_TYPES = frozenset({"ssh_reverse_tunnel", "ssh_outbound"})


def generation_of(policy_id: int) -> int:
    return (policy_id & ~FAIL_CLOSED_BIT) >> SLOT_BITS


class AgentError(Exception):
    """The agent cannot start; the message says what to fix."""


@dataclass
class AgentStats:
    events: int = 0
    decode_errors: int = 0
    handler_errors: int = 0     # records whose handling raised (reported, never fatal)
    loop_errors: int = 0        # loop turns and tick chores that raised (likewise)
    lost_reported: int = 0
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
                 scheduling: str = "background"):
        # what nothing selects: the embedded default, or left unguarded
        self._unselected = unselected
        self.policies = self._with_fallback(policy)
        self.policy_path = policy_path
        self.writer = writer
        self.clock = Clock()
        self.stats = AgentStats()
        self.processes = ProcessTable()
        self._cgroup_specs = cgroup_specs
        # no cgroups named: guard every container on the host, now and as they start
        self.discover = not cgroup_specs
        self._ring_size = ring_size
        self._hold_timeout_ms = hold_timeout_ms
        # the loop's scheduling policy (see scheduling.py)
        self._cpu = CpuShare(scheduling, company=cgroup_company)
        self.detector = Detector()
        # a process's files as it sees them (a seam: tests give a fake root)
        self.files_of: Callable[[int], ProcessFiles] = ProcessFiles
        self._responder: Responder | None = None
        self._holds: HoldWatchdog | None = None
        self._detections_by: dict[tuple[str, str], int] = {}
        # cookie -> (first payload, port, reported (type, dialect) -> confidence rank)
        self._first_samples: OrderedDict[int, tuple[bytes, int, dict]] = OrderedDict()
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
        self._ring: libbpf.RingBuffer | None = None
        self._guarded: dict[int, Cgroup] = {}
        self.cgroup_names: CgroupNames | None = None    # set at start (the mount is known then)
        self._compiled: dict[int, CompiledPolicy] = {}
        self._generation = 0
        self._switched_ns = 0                   # CLOCK_MONOTONIC of the last switch
        self._active = 0                        # generation in force
        self._active_ids: list[int] = []        # its policy ids, fail-closed twins included
        self._slot_of: dict[int, int] = {}      # guarded cgroup id -> slot
        self._waiting: dict[int, Cgroup] = {}   # containers no policy selects (yet)
        self._seen_facts = (0, 0)               # metadata and pod versions last selected on
        self._retiring: list[tuple[float, int]] = []  # (remove after, generation)
        self._retired_models: list[tuple[Policy, ...]] = []  # freed on the next tick
        self._after_answer: list[Callable[[], None]] = []    # see reload(answer_first)
        self._pending: list[bytes] = []
        self._stopping = False
        self._reload_requested = False
        self._ready = False
        self._policy_file_state = _file_state(policy_path)
        self._started_ns = time.monotonic_ns()
        self._last_beat = 0.0

    # -- start ---------------------------------------------------------------
    def start(self) -> None:
        if os.geteuid() != 0:
            raise AgentError("egress-guard run needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
        try:
            mount = cgroup2_mount()
            cgroups = [resolve(spec, mount) for spec in self._cgroup_specs]
        except CgroupError as exc:
            raise AgentError(str(exc)) from None
        self._mount = mount
        for cg in cgroups:
            if cg.level == 0:
                raise AgentError(f"{cg.path}: refusing to guard the root cgroup "
                                 "(name a child cgroup, e.g. a container's)")
        self.cgroup_names = CgroupNames(mount)
        mismatches = abi_mismatches(object_path("exec"))
        if mismatches:
            raise AgentError("guard/kernel/abi.py does not match the BPF objects: " + "; ".join(mismatches))
        compiled = _compile_all(self.policies)
        try:
            self.metadata = MetadataCache(self._runtime_sockets)
            if self._kube_api:
                api, node, token, ca_file = self._kube_api
                self.pods = PodWatcher(api, node, token, ca_file)
            self._objects = GuardObjects(self._ring_size, self._pin_dir)
            self._maps = Maps(self._objects.map_fds)
            self._maps.set_anchors(anchor_table())
            self._maps.heartbeat(self._heartbeat_timeout_ms)
            self._maps.set_hold_timeout(self._hold_timeout_ms)
            self._responder = Responder(self._maps, self._objects)
            # its own responder and detector: it runs beside the loop
            self._holds = HoldWatchdog(
                self._maps, Responder(self._maps, self._objects),
                Detector(self.detector.indicators), self._hold_timeout_ms,
                self._held_policy, files_of=self.files_of, process_of=ProcessTable.from_proc)
            self._ring = libbpf.RingBuffer(self._objects.map_fds["eg_events"], self._pending.append)
            previously_guarded = self._adopt() if self._objects.adopted else []
            self._switch_to(self.policies, compiled)
            self._write_generation_names()
            self._objects.attach_global()
            if self.discover:
                # watch first, then scan: a container starting in between is
                # seen twice rather than not at all (guard() is idempotent)
                self._maps.watch_cgroups(True)
                cgroups = _running_containers(mount)
            for cg in cgroups:
                self.guard(cg)
            self._release_adopted(previously_guarded)
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
        """Attach first, then mark guarded: a cgroup is never marked without
        hooks. Its policy is the one that selects it with what is known now;
        names and labels that arrive later may move it (see _reselect)."""
        if cg.id in self._guarded:
            return
        container = container_of(cg.relative)
        if container is not None:
            self.metadata.request(container.id)  # enrich later; enforcement starts now
        slot = select_policy(self.policies, self._workload(cg.relative))
        if slot is None:
            self._waiting[cg.id] = cg
            return
        self._objects.attach_cgroup(str(cg.path), cg.id)
        self._maps.guard(cg.id, cg.level, slot)
        self._guarded[cg.id] = cg
        self._slot_of[cg.id] = slot
        self._waiting.pop(cg.id, None)
        self.cgroup_names.register(cg)

    def _workload(self, cgroup_path: str) -> Workload:
        """What selectors may ask of a cgroup: its path, and its container's
        name, image and labels, and its pod's namespace and labels, once known."""
        ref = container_of(cgroup_path)
        info = self._container_info(ref.id) if ref else None
        pod = self._pod(cgroup_path)
        return Workload(cgroup_path=cgroup_path,
                        container_name=info.name if info else None,
                        image=info.image if info else None,
                        labels=info.labels if info else {},
                        namespace=pod.namespace if pod else None,
                        pod_labels=pod.labels if pod else None)

    def _facts_version(self) -> tuple[int, int]:
        return (self.metadata.version if self.metadata else 0,
                self.pods.version if self.pods else 0)

    def _reselect_if_news(self) -> None:
        """Selection only changes when names, labels or pods do."""
        version = self._facts_version()
        if version != self._seen_facts:
            self._seen_facts = version
            self._reselect()

    def _reselect(self) -> None:
        """Move cgroups whose selecting policy changed (metadata arrived, or a
        reload changed the set): one eg_guarded update each, atomic."""
        for cg in list(self._waiting.values()):
            if select_policy(self.policies, self._workload(cg.relative)) is not None:
                self.guard(cg)
                self._container_event("selected", cg.id, cg.relative)
        for cgroup_id, cg in list(self._guarded.items()):
            slot = select_policy(self.policies, self._workload(cg.relative))
            if slot is None:
                self.release(cgroup_id)
                self._waiting[cgroup_id] = cg
            elif slot != self._slot_of.get(cgroup_id):
                self._maps.guard(cgroup_id, cg.level, slot)
                self._slot_of[cgroup_id] = slot
                self._container_event("selected", cgroup_id, cg.relative)

    def release(self, cgroup_id: int) -> Cgroup | None:
        """Unmark, detach and forget a guarded cgroup (its container is gone)."""
        self._waiting.pop(cgroup_id, None)
        self._slot_of.pop(cgroup_id, None)
        cg = self._guarded.pop(cgroup_id, None)
        if cg is not None:
            self._maps.unguard(cgroup_id)
            self._objects.detach_cgroup(cgroup_id)
            self.cgroup_names.unregister(cgroup_id)
        return cg

    def _identity(self, policy_id: int, cgroup_path: str,
                  pod: PodInfo | None) -> dict[str, str]:
        """The judging policy's identityLabels, from the container's labels
        and the pod's labels and annotations (an agent sandbox or episode id)."""
        slot = policy_id & ((1 << SLOT_BITS) - 1)
        if generation_of(policy_id) != self._active or slot >= len(self.policies):
            return {}
        keys = self.policies[slot].identity_labels
        if not keys:
            return {}
        ref = container_of(cgroup_path)
        info = self.metadata.get(ref.id) if ref else None
        sources = [info.labels if info else {}, pod.labels if pod else {},
                   pod.annotations if pod else {}]
        return {key: source[key] for key in keys for source in sources if key in source}

    def _pod(self, cgroup_path: str | None) -> PodInfo | None:
        ref = container_of(cgroup_path) if cgroup_path and self.pods else None
        return self.pods.get(ref.pod_uid) if ref else None

    def _container_info(self, container_id: str) -> ContainerInfo | None:
        """Name, image and labels: from the runtime's API, else (CRI runtimes
        under Kubernetes) from the pod's container statuses."""
        info = self.metadata.get(container_id) if self.metadata else None
        if info is None and self.pods is not None:
            known = self.pods.container(container_id)
            if known is not None:
                info = ContainerInfo(name=known.name, image=known.image)
        return info

    def _container(self, cgroup_path: str | None) -> dict[str, Any] | None:
        ref = container_of(cgroup_path) if cgroup_path else None
        if ref is None:
            return None
        return describe_container(ref.as_dict(), self._container_info(ref.id))

    def _on_cgroup(self, record: CgroupRecord) -> None:
        """Discovery: guard a container's cgroup as it appears, free it as it goes."""
        if not self.discover:
            return
        cgroup_id = record.header.cgroup_id
        if record.op == record.op.MKDIR:
            if cgroup_id in self._guarded or not is_container_cgroup(record.path):
                return
            try:
                cg = resolve(record.path, self._mount)
                self.guard(cg)
            except (CgroupError, libbpf.LibbpfError, OSError) as exc:
                # gone before we got to it, most likely; never fatal
                self.writer.write({"ts": self.clock.now(), "kind": "error",
                                   "error": f"cannot guard {record.path}: {exc}"})
                return
            state = "guarded" if cg.id in self._guarded else "waiting"
            path = cg.relative
        else:
            waiting = self._waiting.get(cgroup_id)
            cg = self.release(cgroup_id) or waiting
            if cg is None:
                return
            state, path = "released", cg.relative
        event = self._container_event(state, cgroup_id, path)
        if state == "released":
            self.metadata.forget(event["container"]["id"])
        # from the kernel's mkdir/rmdir to hooks attached/detached
        now_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        event["latency_ms"] = round((now_ns - record.header.ktime_ns) / 1e6, 3)
        self.writer.write(event)

    def _container_event(self, state: str, cgroup_id: int, path: str) -> dict[str, Any]:
        """A container event; written at once except for mkdir/rmdir, which
        add their latency first."""
        event = {"ts": self.clock.now(), "kind": "container", "state": state,
                 "container": self._container(path),
                 "cgroup": {"id": cgroup_id, "path": path}}
        slot = self._slot_of.get(cgroup_id)
        if slot is not None:
            event["policy"] = {"name": self.policies[slot].name, "generation": self._active}
        if state == "selected":
            self.writer.write(event)
        return event

    # -- adoption (pinned installations) ---------------------------------------
    def _adopt(self) -> list[int]:
        """Take over what a previous agent pinned: its generations keep
        judging until this agent's first switch, then retire."""
        highest, guarded = self._maps.adopt()
        self.adopted = True
        self._compiled.update(_read_generation_names(self._names_file))
        self._generation = generation_of(highest)
        grace = time.monotonic() + RETIRE_GRACE_S
        self._retiring.extend((grace, pid) for pid in self._maps.installed)
        return guarded

    def _release_adopted(self, previously_guarded: list[int]) -> None:
        """Cgroups a previous agent guarded that this one was not asked to."""
        stale = set(previously_guarded) | set(self._objects.pinned_cgroups())
        for cgroup_id in stale - set(self._guarded):
            self._maps.unguard_adopted(cgroup_id)
            self._objects.detach_cgroup(cgroup_id)

    # -- policy generations --------------------------------------------------
    def _with_fallback(self, policy):
        """The set in force: the given policies, plus the embedded default for
        what none selects unless one of them already has no selector (or
        unselected containers are to stay unguarded). Policies in, policies
        out; FastPolicy drafts in, drafts out."""
        policies = (policy,) if isinstance(policy, Policy) else tuple(policy)
        drafts = policies and isinstance(policies[0], FastPolicy)
        shells = [p.shell if drafts else p for p in policies]
        if len(policies) + 1 > abi.POLICY_SLOTS:
            raise PolicyError([Problem(shells[0].source, 0, "<file>",
                                       f"more than {abi.POLICY_SLOTS - 1} policies")])
        if self._unselected == "default" and all(p.selector is not None for p in shells):
            fallback = default_policy()
            policies += (FastPolicy(fallback, None) if drafts else fallback,)
        return policies

    def _switch_to(self, policies: tuple[Policy, ...],
                   compiled: list[tuple[CompiledPolicy, CompiledPolicy | None]]) -> int:
        """Install a new generation of every policy (and fail-closed twins)
        beside the one in force, then switch each slot in one update; the old
        generation retires later. If an install fails, the set in force stays
        whole. policies may lack their egress rules (FastPolicy.shell): only
        their names, selectors and failClosed are read here."""
        self._generation += 1
        generation = self._generation
        ids, slots = self._install_generation(generation, compiled)
        for slot, (policy_id, fail_closed_id) in enumerate(slots):
            self._maps.set_slot(slot, policy_id, fail_closed_id)
        # the kernel has switched: what follows is this agent's bookkeeping
        self._switched_ns = time.monotonic_ns()
        for (main, fail_closed), (policy_id, fail_closed_id) in zip(compiled, slots):
            self._compiled[policy_id] = main
            if fail_closed is not None:
                self._compiled[fail_closed_id] = fail_closed
        # one heartbeat for the host: the strictest failClosed of the set
        timeouts = [p.fail_closed.after_ms for p in policies if p.fail_closed]
        self._heartbeat_timeout_ms = min(timeouts, default=0)
        self._maps.heartbeat(self._heartbeat_timeout_ms)
        previous_ids, self._active_ids = self._active_ids, ids
        previous_slots = len(self.policies)
        self.policies, self._active = policies, generation
        self._reselect()
        for slot in range(len(policies), previous_slots):
            self._maps.set_slot(slot, 0)  # no cgroup points here any more
        grace = time.monotonic() + RETIRE_GRACE_S
        self._retiring.extend((grace, pid) for pid in previous_ids)
        return generation

    def _install_generation(self, generation: int,
                            compiled: list[tuple[CompiledPolicy, CompiledPolicy | None]]
                            ) -> tuple[list[int], list[tuple[int, int]]]:
        """Install every policy of a generation and its fail-closed twin:
        (policy ids, (policy id, fail-closed id) per slot). When the maps are
        full, which reloads of large policies faster than RETIRE_GRACE_S can
        make them, wait for the oldest retiring generation to go and try
        again; nothing of the generation stays installed if it cannot be."""
        while True:
            ids, slots = [], []
            try:
                for slot, (main, fail_closed) in enumerate(compiled):
                    policy_id = generation << SLOT_BITS | slot
                    self._maps.install_policy(policy_id, main)
                    ids.append(policy_id)
                    fail_closed_id = 0
                    if fail_closed is not None:
                        fail_closed_id = policy_id | FAIL_CLOSED_BIT
                        self._maps.install_policy(fail_closed_id, fail_closed)
                        ids.append(fail_closed_id)
                    slots.append((policy_id, fail_closed_id))
                return ids, slots
            except BaseException as exc:
                for policy_id in ids:
                    self._maps.remove_policy(policy_id)
                full = isinstance(exc, MapCapacityError) or (
                    isinstance(exc, libbpf.LibbpfError) and exc.errno in MAP_FULL_ERRNOS)
                if not (full and self._retiring):
                    raise
            oldest = min(when for when, _generation in self._retiring)
            time.sleep(max(0.0, oldest - time.monotonic()))
            self._retire_due(oldest)

    def _write_generation_names(self) -> None:
        if self._names_file is None:
            return
        names = {str(pid): {"name": c.name, "rules": list(c.rule_names)}
                 for pid, c in self._compiled.items()}
        self._names_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staged = self._names_file.with_suffix(".tmp")
        staged.write_bytes(orjson.dumps(names))
        os.replace(staged, self._names_file)

    def reload(self, policy: Policy | Sequence[Policy] | Sequence[FastPolicy],
               started: int | None = None, answer_first: bool = False) -> dict[str, Any]:
        """Validate and switch to a policy (set); PolicyError leaves the set in
        force. started: time.monotonic_ns() when the request arrived (before
        reading and parsing); switch_ms counts from there to the slot update
        that switches the kernel, and switched_ns is that update's
        CLOCK_MONOTONIC time (benchmarks compare it with a caller's start).

        A large policy read by the fast reader is compiled from its columns
        and switched to first; its Policy objects, which only this agent's
        bookkeeping reads, are built after the switch. answer_first: leave that
        bookkeeping to _finish_pending(), after the caller has been answered."""
        started = started or time.monotonic_ns()
        drafts = self._with_fallback(_as_drafts(policy))
        compiled = _compile_all(drafts)
        previous = self._active
        retired = self.policies
        shells = tuple(draft.shell for draft in drafts)
        generation = self._switch_to(shells, compiled)
        switched = self._switched_ns
        self.stats.reloads += 1
        result = {"policy": {"name": shells[0].name, "source": shells[0].source,
                             "generation": generation},
                  "policies": [p.name for p in shells],
                  "previous_generation": previous,
                  "switch_ms": round((switched - started) / 1e6, 3),
                  "switched_ns": switched}

        def record() -> None:
            # the model; the old one goes with the old generation, on a tick
            self.policies = tuple(draft.policy for draft in drafts)
            self._retired_models.append(retired)
            self.writer.write({"ts": self.clock.now(), "kind": "policy", "state": "reloaded",
                               **result})
            self.writer.flush()
            self._write_generation_names()
        self._after_answer.append(record)
        if not answer_first:
            self._finish_pending()
        return result

    def _finish_pending(self) -> None:
        """Bookkeeping of reloads that answered first (see reload)."""
        while self._after_answer:
            try:
                with gc_paused():
                    self._after_answer.pop(0)()
            except OSError as exc:  # the names file: never worth the agent
                self.writer.write({"ts": self.clock.now(), "kind": "error",
                                   "error": f"cannot record the reload: {exc}"})
                self.writer.flush()

    def _reload_from(self, request: dict[str, Any] | None,
                     files: Sequence[int] = ()) -> dict[str, Any]:
        """A reload request (control socket, SIGHUP or a changed file) -> answer."""
        started = time.monotonic_ns()
        # A large policy is tens of thousands of new objects without a cycle
        # among them; each would-be collection on the way would walk the
        # agent's whole heap (the generation in force included) for nothing.
        with gc_paused():
            body = request.get("policy") if request else None
            if isinstance(body, dict) and "fd" in body:
                # the caller passed the file open: say whether it was read, so
                # a caller that also speaks the older protocol knows to send text
                return {**self._reload_request(request, started, files), "read_fd": True}
            return self._reload_request(request, started, files)

    def _reload_request(self, request: dict[str, Any] | None, started: int,
                        files: Sequence[int] = ()) -> dict[str, Any]:
        try:
            return self._reload_or_refuse(request, started, files)
        finally:
            try:
                self._maps.drop_prestaged()   # written ahead for a policy not installed
            except libbpf.LibbpfError as exc:
                self.writer.write({"ts": self.clock.now(), "kind": "error",
                                   "error": f"cannot remove prefixes written ahead: {exc}"})

    def _prestage(self, values: Sequence[int], prefixlens: Sequence[int]) -> None:
        """The fast reader has the networks of a large list: write them for
        the next generation's first slot while it reads and compiles the
        rest (Maps.prestage; the install takes them only if they are exactly
        that policy's)."""
        self._maps.prestage((self._generation + 1) << SLOT_BITS, values, prefixlens)

    def _reload_or_refuse(self, request: dict[str, Any] | None, started: int,
                          files: Sequence[int]) -> dict[str, Any]:
        try:
            if request and isinstance(request.get("policy"), dict):
                body = request["policy"]
                source = str(body.get("source", "<reload>"))
                if "fd" in body:
                    try:
                        text = policy_text(_passed_file(body["fd"], files), source)
                    except (OSError, ValueError) as exc:
                        return {"ok": False, "read_fd": False,
                                "error": f"{source}: the agent cannot read the file passed "
                                         f"to it: {exc}; the policy in force is unchanged"}
                else:
                    text = str(body.get("text", ""))
                policy = read_policy_set(text, source, self._prestage)
            elif self.policy_path:
                # one reload per change, whether SIGHUP or the file watch saw it first
                self._policy_file_state = _file_state(self.policy_path)
                policy = load_policy_set(self.policy_path, self._prestage)
            else:
                policy = default_policy()
            return {"ok": True, **self.reload(policy, started, answer_first=request is not None)}
        except (MapCapacityError, libbpf.LibbpfError) as exc:
            # nothing switched: the set in force is whole (see _switch_to)
            self.writer.write({"ts": self.clock.now(), "kind": "error",
                               "error": f"reload failed: {exc}"})
            self.writer.flush()
            return {"ok": False, "error": f"cannot install the policy: {exc}; "
                                         "the policy in force is unchanged"}
        except PolicyError as exc:
            problems = [str(p) for p in exc.problems]
            self.writer.write({"ts": self.clock.now(), "kind": "policy", "state": "rejected",
                               "problems": problems,
                               "policy": {"name": self.policies[0].name,
                                          "generation": self._active}})
            self.writer.flush()
            return {"ok": False, "error": "invalid policy: the policy in force is unchanged",
                    "problems": problems}

    def _retire_due(self, now: float) -> None:
        self._retired_models.clear()
        due = [gen for when, gen in self._retiring if when <= now]
        if not due:
            return
        self._retiring = [(when, gen) for when, gen in self._retiring if when > now]
        for generation in due:
            self._maps.remove_policy(generation)
        kept = sorted({generation_of(pid) for pid in self._compiled})[-GENERATION_NAMES_KEPT:]
        for policy_id, compiled in list(self._compiled.items()):
            if generation_of(policy_id) not in kept and policy_id not in self._active_ids:
                del self._compiled[policy_id]
            elif policy_id not in self._active_ids and isinstance(compiled, CompiledPolicy):
                # a retired generation keeps its names for late events, not its tables
                self._compiled[policy_id] = KnownGeneration(compiled.name, compiled.rule_names)

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
                    self._error(f"agent loop: {_cause(exc)}")
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
                written = _written_ns(self._pending[0]) if self._pending else 0
                if written:
                    self._cpu.pace(lateness_s(written))
                batched = self._drain() > 0
            else:
                with self._cpu.foreground():
                    self._control.handle(self._answer)
                    self._finish_pending()
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
        if now - self._last_losses >= LOSS_REPORT_INTERVAL_S:
            self._last_losses = now
            self._report_losses()
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
        for chore in (self._report_watchdog, self._reselect_if_news,
                      lambda: self._retire_due(now), self._reload_if_asked):
            try:
                chore()
            except Exception as exc:  # noqa: BLE001
                self.stats.loop_errors += 1
                self._error(f"agent tick: {_cause(exc)}")

    def _reload_if_asked(self) -> None:
        if self._reload_requested:
            self._reload_requested = False
            self._reload_from(None)
        state = _file_state(self.policy_path)
        if state != self._policy_file_state:
            # a ConfigMap update swaps a symlink: the inode changes, not just mtime
            self._policy_file_state = state
            if state is not None:
                self._reload_from(None)

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for events, handle all that arrived, return how many."""
        self._ring.poll(timeout_ms)
        return self._drain()

    def request_stop(self, *_args) -> None:
        self._stopping = True

    def request_reload(self, *_args) -> None:
        self._reload_requested = True

    def _answer(self, request: dict[str, Any], files: Sequence[int] = ()) -> dict[str, Any]:
        self._finish_pending()  # a reload answered just before is recorded first
        op = request["op"]
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "reload":
            return self._reload_from(request, files)
        return {"ok": False, "error": f"unknown op {op!r} (expected status or reload)"}

    def _drain(self) -> int:
        if not self._pending:
            return 0
        batch, self._pending[:] = list(self._pending), []
        for i, raw in enumerate(batch):
            self._handle_safely(raw)
            if i % HEARTBEAT_EVERY == HEARTBEAT_EVERY - 1:
                self._beat_if_due()
        self._responder.flush_allowed()
        self._report_action_errors()
        self.writer.flush()
        return len(batch)

    def _handle_safely(self, raw: bytes) -> None:
        """One record: whatever a workload's bytes make a handler do, the
        loop goes on. A failure is counted and reported with its cause;
        the enforcement the kernel already did stands, and a program held
        at exec is never left stopped (see _judge_exec)."""
        try:
            self.handle(raw)
        except Exception as exc:  # noqa: BLE001 - MemoryError, RecursionError included
            self.stats.handler_errors += 1
            self._error(f"record not handled: {_cause(exc)}", record_kind=_kind_of(raw))

    def _error(self, message: str, **fields: Any) -> None:
        self.writer.write({"ts": self.clock.now(), "kind": "error", "error": message, **fields})

    def handle(self, raw: bytes) -> None:
        try:
            record = decode(raw)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            self.writer.write({"ts": self.clock.now(), "kind": "error",
                               "error": f"undecodable event: {exc}"})
            return
        if isinstance(record, CgroupRecord):
            self._on_cgroup(record)
            return
        if isinstance(record, PayloadRecord):
            self._on_payload(record)
            return
        if isinstance(record, StdioSocketRecord):
            self._on_stdio_socket(record)
            return
        header = record.header
        if isinstance(record, ExecRecord):
            process = self.processes.record_exec(record)
            detections = self._judge_exec(record, process)
        else:
            process = self.processes.lookup(header.pid)
            detections = []
        compiled = self._compiled.get(header.policy_id)
        rule = compiled.rule_name(header.rule_id) if compiled else None
        if header.rule_id == abi.RULE_DETECTION:
            rule = "detection"  # refused because a detection judged the process
        event = describe(
            record, self.clock, rule=rule,
            cgroup_path=self.cgroup_names.name(header.cgroup_id),
            policy_name=compiled.name if compiled else None,
            generation=generation_of(header.policy_id),
            process=process)
        self._emit(event, header.policy_id)
        for detection in detections:
            self._emit_detection(header, detection, process)

    def _report_action_errors(self) -> None:
        for error in self._responder.take_errors():
            self._error(f"action failed: {error}")
        for error in self.detector.take_errors():
            self._error(f"classifier failed: {error}")

    def _emit(self, event: dict[str, Any], policy_id: int) -> None:
        self.stats.events += 1
        self.stats.by_kind[event["kind"]] = self.stats.by_kind.get(event["kind"], 0) + 1
        if "container" in event:
            event["container"] = self._container(event["cgroup"]["path"])
            pod = self._pod(event["cgroup"]["path"])
            if pod is not None:
                event["k8s"] = pod.as_dict()
            identity = self._identity(policy_id, event["cgroup"]["path"], pod)
            if identity:
                event["identity"] = identity
        key = (event["kind"], event["action"])
        self._events_by[key] = self._events_by.get(key, 0) + 1
        self.writer.write(event)

    # -- detections ------------------------------------------------------------
    def _policy_of(self, policy_id: int) -> Policy | None:
        # generations adopted from a previous agent are known by name only
        return getattr(self._compiled.get(policy_id), "policy", None)

    def _emit_detection(self, header, detection: Detection, process,
                        dst: dict[str, Any] | None = None) -> None:
        compiled = self._compiled.get(header.policy_id)
        event = describe_detection(
            header, self.clock, detection.as_dict(), detection.action,
            cgroup_path=self.cgroup_names.name(header.cgroup_id),
            policy_name=compiled.name if compiled else None,
            generation=generation_of(header.policy_id), process=process, dst=dst)
        key = (detection.finding.type, detection.action)
        self._detections_by[key] = self._detections_by.get(key, 0) + 1
        self._emit(event, header.policy_id)

    def _judge_exec(self, record: ExecRecord, process) -> list[Detection]:
        """Classify an exec; act before a held program runs its first instruction.
        Whatever happens on the way, a held program is settled: resumed, or
        killed when the agent could not judge it (the kernel held it because
        an enforcing detection wanted a verdict: no verdict fails closed)."""
        header = record.header
        detections: list[Detection] = []
        action: str | None = "kill"     # until judged
        cgroup_path = None
        try:
            policy = self._policy_of(header.policy_id)
            cgroup_path = self.cgroup_names.name(header.cgroup_id)
            if policy is not None and header.action != abi.Action.KILL:
                # the classifiers are isolated from each other (Detector)
                detections = decide(self.detector.exec_findings(
                    policy, record.argv, record.exe or record.filename,
                    self.files_of(header.pid)), policy)
            process.detections = {d.finding.type for d in detections}
            action = strongest(detections)
            if action == "block":
                self._responder.block_process(header.pid, header.start_ns)
            elif action == "kill" and not record.held:
                self._responder.kill(header.pid, cgroup_path)
        finally:
            if record.held:
                self._settle_held(header.pid, action, cgroup_path)
        return detections

    def _settle_held(self, pid: int, action: str | None, cgroup_path: str | None) -> None:
        """Kill or resume a program the kernel stopped at exec. Deleting its
        hold is the claim: when the hold watchdog got there first (the loop
        was late), only a kill is still worth carrying out."""
        claimed = self._maps.release_held(pid)
        if action == "kill":
            self._responder.kill(pid, cgroup_path)
        elif claimed:
            self._responder.resume(pid, cgroup_path)

    def _held_policy(self, pid: int) -> tuple[Policy | None, str | None]:
        """(policy, cgroup path) of a program the kernel holds (hold watchdog)."""
        cgroup_path = cgroup_path_of(pid)
        return (self._policy_for_path(cgroup_path) if cgroup_path else None), cgroup_path

    def _report_watchdog(self) -> None:
        reports = self._holds.reports if self._holds else ()
        while reports:
            report = reports.popleft()
            self._error(report.pop("error"), **report)

    def _policy_for_path(self, cgroup_path: str) -> Policy | None:
        """The policy of the guarded cgroup at or above a cgroup path."""
        path = cgroup_path
        guarded = list(self._guarded.values())   # the hold watchdog asks from its thread
        while True:
            for cg in guarded:
                if cg.relative == path:
                    return self.policies[self._slot_of[cg.id]]
            if path in ("/", ""):
                return None
            path = path.rsplit("/", 1)[0] or "/"

    def _on_inbound(self, record: PayloadRecord) -> None:
        """The server's first reply on a flow that was let through: report
        what it confirms beyond what the client's bytes showed, and act."""
        first = self._first_samples.pop(record.cookie, None)
        header = record.header
        policy = self._policy_of(header.policy_id)
        if first is None or policy is None:
            return
        sample, port, reported = first
        process = self.processes.lookup(header.pid)
        try:
            findings = self.detector.inbound_findings(
                policy, sample, port, record.sample,
                miner_traits="miner_exec" in process.detections)
        except Exception as exc:
            self.writer.write({"ts": self.clock.now(), "kind": "error",
                               "error": f"reply classification failed: {exc!r}"})
            return
        news = [f for f in findings
                if CONFIDENCES.index(f.confidence) > reported.get((f.type, f.dialect), -1)]
        detections = decide(news, policy)
        action = strongest(detections)
        cgroup_path = self.cgroup_names.name(header.cgroup_id)
        if action == "kill":
            self._responder.kill(header.pid, cgroup_path)
        if action in ("block", "kill"):
            self._responder.reset_socket(record.cookie, header.pid, record.proto)
        dst = {"ip": record.ip, "port": record.port, "proto": record.proto.label}
        for detection in detections:
            self._emit_detection(header, detection, process, dst=dst)
        self._report_action_errors()

    def _remember_first(self, record: PayloadRecord, detections: list[Detection]) -> None:
        """A first payload let through, kept until the server's reply comes."""
        reported = {(d.finding.type, d.finding.dialect): CONFIDENCES.index(d.finding.confidence)
                    for d in detections}
        self._first_samples[record.cookie] = (record.sample, record.port, reported)
        while len(self._first_samples) > FIRST_SAMPLES_KEPT:
            self._first_samples.popitem(last=False)

    def _on_payload(self, record: PayloadRecord) -> None:
        if record.sample_kind == abi.SampleKind.INBOUND:
            self._on_inbound(record)
            return
        header = record.header
        self.stats.samples += 1
        policy = self._policy_of(header.policy_id)
        process = self.processes.lookup(header.pid)
        detections: list[Detection] = []
        if policy is not None:
            try:
                detections = decide(self.detector.payload_findings(
                    policy, record, miner_traits="miner_exec" in process.detections,
                    ssh_judged=bool(process.detections & SSH_TYPES), argv=process.argv),
                    policy)
            except Exception as exc:
                self.writer.write({"ts": self.clock.now(), "kind": "error",
                                   "error": f"payload classification failed: {exc!r}"})
        action = strongest(detections)
        cgroup_path = self.cgroup_names.name(header.cgroup_id)
        # kill first: a reset wakes the sender, which must not get to run on
        if action == "kill":
            self._responder.kill(header.pid, cgroup_path)
        if record.sample_kind in (abi.SampleKind.FIRST, abi.SampleKind.PROXY):
            if action in ("block", "kill"):
                self._responder.block_flow(record.cookie, header.pid, record.proto)
            elif record.sample_kind == abi.SampleKind.FIRST:
                self._responder.allow_flow(record.cookie)
                self._remember_first(record, detections)
        dst = {"ip": record.ip, "port": record.port, "proto": record.proto.label}
        for detection in detections:
            self._emit_detection(header, detection, process, dst=dst)
        self._report_action_errors()

    def _on_stdio_socket(self, record: StdioSocketRecord) -> None:
        header = record.header
        policy = self._policy_of(header.policy_id)
        process = self.processes.lookup(header.pid)
        if policy is None:
            return
        detections = decide(self.detector.stdio_socket_findings(record, process.argv), policy)
        action = strongest(detections)
        # kill was done by the kernel at the dup; block ends the socket and
        # refuses the process's further connects. A UDP socket cannot be
        # reset and sends without connect(): the process is killed instead.
        if action == "block":
            if record.proto == abi.Proto.UDP:
                self._responder.kill(header.pid, self.cgroup_names.name(header.cgroup_id))
                detections = [Detection(d.finding, "kill") for d in detections]
            elif not self._responder.reset_socket(record.cookie, header.pid):
                self._responder.errors.append(
                    f"socket of pid {header.pid} on fd {record.newfd} could not be reset")
            self._responder.block_process(header.pid, header.start_ns)
        dst = {"ip": record.ip, "port": record.port}
        for detection in detections:
            self._emit_detection(header, detection, process, dst=dst)
        self._report_action_errors()

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
        if self._holds is not None:
            self._holds.stop()
            self._report_watchdog()
        self._finish_pending()
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
                self._report_losses()
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
            for cgroup_id in list(self._guarded):
                self._maps.unguard(cgroup_id)
        self._guarded.clear()
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
        self.writer.write({
            "ts": self.clock.now(), "kind": "agent", "state": "crashed", "error": self._crash,
            "traceback": [f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames],
            "enforcement": ("kept: pinned in the kernel until the next agent adopts it"
                            if pinned else "removed: the agent was not pinned (--pin)")})
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
            self._error(f"cannot record the agent's state in {self._state_file}: {exc}")

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
                       "generation": self._active},
            "policies": [{"name": p.name, "source": p.source, "slot": slot}
                         for slot, p in enumerate(self.policies)],
            "enforcement": ENFORCEMENT_LEVEL,
            "cgroups": [_cgroup_entry(cg, self.metadata, self.policies[self._slot_of[cg.id]])
                        for cg in self._guarded.values()],
            "discovery": self.discover,
            "counters": self.counters(),
            "detections": {f"{t}/{a}": n for (t, a), n in sorted(self._detections_by.items())},
            "events": self.stats.events,
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
        guarded = list(self._guarded.values())
        snapshot: dict[str, Any] = {
            "egress_guard_events_total": [({"kind": k, "action": a}, n)
                                          for (k, a), n in sorted(self._events_by.items())],
            "egress_guard_detections_total": [({"type": t, "action": a}, n)
                                              for (t, a), n in sorted(self._detections_by.items())],
            "egress_guard_guarded_cgroups": len(guarded),
            "egress_guard_guarded_containers": sum(
                1 for cg in guarded if container_of(cg.relative) is not None),
            "egress_guard_policy_generation": self._active,
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
        event = {"ts": self.clock.now(), "kind": "agent", "state": state, **self.status()}
        if self._control_path:
            event["control_socket"] = self._control_path
        if self._pin_dir:
            event["pin_dir"] = str(self._pin_dir)
            event["adopted"] = self.adopted
        return event


@dataclass(frozen=True)
class KnownGeneration:
    """Names of a generation another agent installed (read back on adoption)."""
    name: str
    rule_names: tuple[str, ...]

    def rule_name(self, rule_id: int) -> str | None:
        return self.rule_names[rule_id] if 0 < rule_id < len(self.rule_names) else None


def _read_generation_names(path: Path | None) -> dict[int, KnownGeneration]:
    try:
        raw = orjson.loads(path.read_bytes()) if path else {}
        return {int(pid): KnownGeneration(str(entry["name"]), tuple(map(str, entry["rules"])))
                for pid, entry in raw.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # names are a nicety: a missing or damaged file never stops adoption


def _as_drafts(policy: Policy | Sequence[Policy] | Sequence[FastPolicy]) -> tuple[FastPolicy, ...]:
    policies = (policy,) if isinstance(policy, Policy) else tuple(policy)
    return tuple(p if isinstance(p, FastPolicy) else FastPolicy(p, None) for p in policies)


def _compile_all(policies: Sequence[Policy] | Sequence[FastPolicy]
                 ) -> list[tuple[CompiledPolicy, CompiledPolicy | None]]:
    """Every policy and its fail-closed twin, compiled before anything changes."""
    return [(draft.compiled(), compile_fail_closed(draft.shell)) for draft in _as_drafts(policies)]


def _cgroup_entry(cg: Cgroup, metadata: MetadataCache | None, policy: Policy) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": cg.id, "path": cg.relative, "policy": policy.name}
    container = container_of(cg.relative)
    if container is not None:
        entry["container"] = describe_container(
            container.as_dict(), metadata.get(container.id) if metadata else None)
    return entry


def _running_containers(mount: Path) -> list[Cgroup]:
    """The cgroups of every container running now (a walk of the cgroup2 tree
    that does not descend into containers)."""
    found = []
    for dirpath, dirnames, _files in os.walk(mount):
        relative = "/" + os.path.relpath(dirpath, mount)
        if relative != "/." and is_container_cgroup(relative):
            dirnames[:] = []
            try:
                found.append(resolve(relative, mount))
            except CgroupError:
                continue  # removed while we looked
    return found


def _passed_file(index: object, files: Sequence[int]) -> bytes:
    """The contents of the index-th file passed with a request: a regular
    file (a pipe or a device could keep the agent waiting)."""
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(files):
        raise ValueError("no file came with the request")
    if not is_regular_file(files[index]):
        raise ValueError("not a regular file")
    return read_file(files[index])


def _file_state(path: str | None) -> tuple[int, int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


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


def _kind_of(raw: bytes) -> int | None:
    """The kind field of a record's header, when there is one."""
    return int.from_bytes(raw[:4], "little") if len(raw) >= 4 else None


_WRITTEN_NS = struct.Struct("=Q")   # guard_event_header.ktime_ns
_WRITTEN_AT = abi.EventHeader.ktime_ns.offset
assert abi.EventHeader.ktime_ns.size == _WRITTEN_NS.size


def _written_ns(raw: bytes) -> int:
    """When the kernel wrote a record (CLOCK_BOOTTIME); 0 if it is too short
    to say (decode reports it)."""
    if len(raw) < _WRITTEN_AT + _WRITTEN_NS.size:
        return 0
    return _WRITTEN_NS.unpack_from(raw, _WRITTEN_AT)[0]


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
