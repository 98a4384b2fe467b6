# SPDX-License-Identifier: Apache-2.0
"""The workload registry: which cgroups are guarded, by which policy slot.

A cgroup is attached first, then marked guarded, so it is never marked
without hooks. Its policy is the one that selects it with what is known now
(path, container name, image and labels, pod namespace and labels); names
and labels that arrive later, and reloads, move it (reselect: one eg_guarded
update each, atomic). Discovery guards a container's cgroup as it appears and
frees it as it goes. The agent's own cgroup (its container's, when it runs in
one: guard/workloads/own.py) is never guarded: discovery passes it by and no
policy selects it. The events that say so are built in guard/report.

Container parents (run --container-parent: where a runtime makes its
containers' cgroups) get sentinel hooks and an entry of their own, so a
container is judged by the parent's policy from its first connect, before
discovery takes it over and while no agent runs. Below a parent, what is not
guarded is exempt (an entry that stops the kernel's walk up): the agent's own
cgroup, and containers no policy selects.
"""
from __future__ import annotations

import time
from typing import Any

from guard.agent.generations import FAIL_CLOSED_BIT, SLOT_BITS, generation_of
from guard.kernel import abi, libbpf
from guard.kernel.objects import cgroup_objects_for
from guard.kernel.records import CgroupRecord
from guard.policy.model import Policy, Workload, select_policy
from guard.report.events import container_event
from guard.workloads.cgroups import Cgroup, CgroupError, resolve
from guard.workloads.containers import container_of, is_container_cgroup
from guard.workloads.kubernetes import PodInfo
from guard.workloads.own import OwnCgroup
from guard.workloads.runtime import ContainerInfo, describe_container


class Registry:
    """`agent` gives what the registry acts through: objects and maps (attach,
    mark), metadata and pods (names, labels), the policies in force, the
    cgroup names, and the writer for container events."""

    def __init__(self, agent):
        self._agent = agent
        self.guarded: dict[int, Cgroup] = {}
        self.slot_of: dict[int, int] = {}      # guarded cgroup id -> slot
        self.waiting: dict[int, Cgroup] = {}   # containers no policy selects (yet)
        self._seen_facts = (0, 0)              # metadata and pod versions last selected on
        self.unmarked = False                  # cgroups guarded since their processes were marked
        # where the agent runs: never guarded (found at start)
        self.own = OwnCgroup(None, None, problem="not started")
        self.parents: dict[int, Cgroup] = {}   # container parents (sentinel hooks)
        self.parent_slot: dict[int, int] = {}
        self.exempt: dict[int, Cgroup] = {}    # below a parent, not guarded

    # -- container parents -------------------------------------------------
    def below_parent(self, cg: Cgroup) -> bool:
        return _below(cg, self.parents.values())

    def exempt_own(self, parents: list[Cgroup]) -> None:
        """Before any parent is (re)marked: the agent's own cgroup, when a
        parent lies above it, gets its exempt entry, so the sentinel never
        judges the agent (an agent adopting pins writes it at once: until
        then the previous agent's parent entry judges it)."""
        own = self.own.excluded
        if own is not None and _below(own, parents):
            self._agent.maps.exempt(own.id, own.level)
            self.exempt[own.id] = own

    def guard_parent(self, cg: Cgroup) -> None:
        """Sentinel hooks on a container parent, then its entry: the policy
        that selects the parent's path judges what appears below it until
        discovery takes each container over."""
        slot = select_policy(self._agent.policies, self.workload(cg.relative))
        if slot is None:
            self._agent.error(f"container parent {cg.relative}: no policy selects it, so "
                              "containers made there are judged only once discovered")
            return
        self._agent.objects.attach_sentinel(str(cg.path), cg.id)
        self._agent.maps.guard(cg.id, cg.level, slot, abi.CgroupFlags.PARENT)
        self.parents[cg.id] = cg
        self.parent_slot[cg.id] = slot
        self._agent.cgroup_names.register(cg)

    def _exempt(self, cg: Cgroup) -> None:
        if self.below_parent(cg):
            self._agent.maps.exempt(cg.id, cg.level)
            self.exempt[cg.id] = cg

    def _unexempt(self, cgroup_id: int) -> None:
        if self.exempt.pop(cgroup_id, None) is not None:
            self._agent.maps.unguard(cgroup_id)

    def parents_status(self) -> list[dict[str, Any]]:
        """The ready event's and status's "container_parents"."""
        return [{"id": cg.id, "path": cg.relative,
                 "policy": self._agent.policies[self.parent_slot[cg.id]].name}
                for cg in self.parents.values()
                if self.parent_slot[cg.id] < len(self._agent.policies)]

    def guard(self, cg: Cgroup) -> None:
        """Attach first, then mark guarded: a cgroup is never marked without
        hooks. Its policy is the one that selects it with what is known now;
        names and labels that arrive later may move it (see reselect)."""
        if cg.id in self.guarded or self.own.covers(cg):
            return   # the agent's own cgroup: never, whatever selects it
        if cg.id in self.parents:
            self._agent.error(f"{cg.relative}: a container parent (--container-parent), "
                              "judged by its sentinel hooks; not guarded as a cgroup too")
            return
        container = container_of(cg.relative)
        if container is not None:
            self._agent.metadata.request(container.id)  # enrich later; enforcement starts now
        slot = select_policy(self._agent.policies, self.workload(cg.relative))
        if slot is None:
            self.waiting[cg.id] = cg
            self._exempt(cg)   # below a parent: not the parent's to judge either
            return
        self._agent.objects.attach_cgroup(str(cg.path), cg.id, self.needs(slot))
        self._agent.maps.guard(cg.id, cg.level, slot)
        self.exempt.pop(cg.id, None)   # its entry is a guarded one now
        self.guarded[cg.id] = cg
        self.slot_of[cg.id] = slot
        self.unmarked = True
        self.waiting.pop(cg.id, None)
        self._agent.cgroup_names.register(cg)

    def mark_tasks(self) -> None:
        """Mark the processes already running in cgroups guarded since the
        last run (escape.bpf.c's adoption iterator), so leaving the cgroup
        is an escape for them too: one walk of the host's tasks, however
        many cgroups were guarded meanwhile (at start, by a reselect)."""
        if self.unmarked:
            self._agent.objects.mark_guarded_tasks()
            self.unmarked = False   # after: a run that failed is tried again next tick

    def workload(self, cgroup_path: str) -> Workload:
        """What selectors may ask of a cgroup: its path, and its container's
        name, image and labels, and its pod's namespace and labels, once known."""
        ref = container_of(cgroup_path)
        info = self.container_info(ref.id) if ref else None
        pod = self.pod(cgroup_path)
        return Workload(cgroup_path=cgroup_path,
                        container_name=info.name if info else None,
                        image=info.image if info else None,
                        labels=info.labels if info else {},
                        namespace=pod.namespace if pod else None,
                        pod_labels=pod.labels if pod else None)

    def _facts_version(self) -> tuple[int, int]:
        return (self._agent.metadata.version if self._agent.metadata else 0,
                self._agent.pods.version if self._agent.pods else 0)

    def reselect_if_news(self) -> None:
        """Selection only changes when names, labels or pods do. Then (each
        tick) the processes of cgroups guarded since are marked."""
        version = self._facts_version()
        if version != self._seen_facts:
            self._seen_facts = version
            self.reselect()
        self.mark_tasks()

    def reselect(self) -> None:
        """Move cgroups whose selecting policy changed (metadata arrived, or a
        reload changed the set): one eg_guarded update each, atomic."""
        for cg in list(self.waiting.values()):
            if select_policy(self._agent.policies, self.workload(cg.relative)) is not None:
                self.guard(cg)
                self.container_event("selected", cg.id, cg.relative)
        for cgroup_id, cg in list(self.parents.items()):
            slot = select_policy(self._agent.policies, self.workload(cg.relative))
            if slot is not None and slot != self.parent_slot.get(cgroup_id):
                self._agent.maps.guard(cgroup_id, cg.level, slot, abi.CgroupFlags.PARENT)
                self.parent_slot[cgroup_id] = slot
        for cgroup_id, cg in list(self.guarded.items()):
            slot = select_policy(self._agent.policies, self.workload(cg.relative))
            if slot is None:
                self.release(cgroup_id)
                self.waiting[cgroup_id] = cg
                self._exempt(cg)
            elif slot != self.slot_of.get(cgroup_id):
                # the new slot's packet programs first, the old slot's go after
                self._attach(cg, _union(self.needs(self.slot_of.get(cgroup_id)), self.needs(slot)))
                self._agent.maps.guard(cgroup_id, cg.level, slot)
                self.slot_of[cgroup_id] = slot
                self._attach(cg, self.needs(slot))
                self.container_event("selected", cgroup_id, cg.relative)

    # -- the packet programs a policy needs (objects.cgroup_objects_for) ---------
    def needs(self, slot: int | None, pair=None) -> frozenset[str] | None:
        """The optional cgroup objects (flow, dns) the policy of a slot needs,
        its fail-closed twin's included: from pair (main, fail-closed
        compiled policies) or the generation in force. None: all of them
        (what an adopted generation needs is not known)."""
        if slot is None:
            return frozenset()
        if pair is None:
            generations = self._agent.generations
            policy_id = generations.active << SLOT_BITS | slot
            pair = (generations.get(policy_id), generations.get(policy_id | FAIL_CLOSED_BIT))
        if pair[0] is None:
            return None
        need: frozenset[str] = frozenset()
        for compiled in pair:
            if compiled is None:
                continue
            if not hasattr(compiled, "detect_flags"):
                return None
            need |= cgroup_objects_for(compiled.detect_flags, compiled.names is not None)
        return need

    def widen_for(self, compiled) -> None:
        """Before a switch to compiled ((main, fail-closed) per slot): each
        guarded cgroup gets what its slot's new policy needs beside what it
        has, so no policy judges a cgroup without its packet programs."""
        for cgroup_id, cg in list(self.guarded.items()):
            slot = self.slot_of.get(cgroup_id)
            new = self.needs(slot, compiled[slot]) if slot is not None and slot < len(compiled) \
                else None
            self._attach(cg, _union(self.needs(slot), new))

    def settle_needs(self) -> None:
        """After a switch: each guarded cgroup keeps only what its policy needs."""
        for cgroup_id, cg in list(self.guarded.items()):
            self._attach(cg, self.needs(self.slot_of.get(cgroup_id)))

    def _attach(self, cg: Cgroup, optional: frozenset[str] | None) -> None:
        self._agent.objects.attach_cgroup(str(cg.path), cg.id, optional)

    def release(self, cgroup_id: int) -> Cgroup | None:
        """Unmark, detach and forget a guarded cgroup (its container is gone)."""
        self.waiting.pop(cgroup_id, None)
        self.slot_of.pop(cgroup_id, None)
        cg = self.guarded.pop(cgroup_id, None)
        if cg is not None:
            self._agent.maps.unguard(cgroup_id)
            self._agent.objects.detach_cgroup(cgroup_id)
            self._agent.cgroup_names.unregister(cgroup_id)
            self._agent.names.forget(cgroup_id)
        return cg

    def identity(self, policy_id: int, cgroup_path: str,
                  pod: PodInfo | None) -> dict[str, str]:
        """The judging policy's identityLabels, from the container's labels
        and the pod's labels and annotations (an agent sandbox or episode id)."""
        slot = policy_id & ((1 << SLOT_BITS) - 1)
        if generation_of(policy_id) != self._agent.generations.active or slot >= len(self._agent.policies):
            return {}
        keys = self._agent.policies[slot].identity_labels
        if not keys:
            return {}
        ref = container_of(cgroup_path)
        info = self._agent.metadata.get(ref.id) if ref else None
        sources = [info.labels if info else {}, pod.labels if pod else {},
                   pod.annotations if pod else {}]
        return {key: source[key] for key in keys for source in sources if key in source}

    def pod(self, cgroup_path: str | None) -> PodInfo | None:
        ref = container_of(cgroup_path) if cgroup_path and self._agent.pods else None
        return self._agent.pods.get(ref.pod_uid) if ref else None

    def container_info(self, container_id: str) -> ContainerInfo | None:
        """Name, image and labels: from the runtime's API, else (CRI runtimes
        under Kubernetes) from the pod's container statuses."""
        info = self._agent.metadata.get(container_id) if self._agent.metadata else None
        if info is None and self._agent.pods is not None:
            known = self._agent.pods.container(container_id)
            if known is not None:
                info = ContainerInfo(name=known.name, image=known.image)
        return info

    def container(self, cgroup_path: str | None) -> dict[str, Any] | None:
        ref = container_of(cgroup_path) if cgroup_path else None
        if ref is None:
            return None
        return describe_container(ref.as_dict(), self.container_info(ref.id))

    def on_cgroup(self, record: CgroupRecord) -> None:
        """Discovery: guard a container's cgroup as it appears, free it as it goes."""
        if not self._agent.discover:
            return
        cgroup_id = record.header.cgroup_id
        if record.op == record.op.MKDIR:
            if cgroup_id in self.guarded or not is_container_cgroup(record.path):
                return
            if self.own.excluded is not None and cgroup_id == self.own.excluded.id:
                return   # the agent's own container (an agent that starts before it)
            try:
                cg = resolve(record.path, self._agent.mount)
                self.guard(cg)
            except (CgroupError, libbpf.LibbpfError, OSError) as exc:
                # gone before we got to it, most likely; never fatal
                self._agent.error(f"cannot guard {record.path}: {exc}")
                return
            state = "guarded" if cg.id in self.guarded else "waiting"
            path = cg.relative
        else:
            waiting = self.waiting.get(cgroup_id)
            self._unexempt(cgroup_id)
            cg = self.release(cgroup_id) or waiting
            if cg is None:
                return
            state, path = "released", cg.relative
        event = self.container_event(state, cgroup_id, path)
        if state == "released":
            self._agent.metadata.forget(event["container"]["id"])
        # from the kernel's mkdir/rmdir to hooks attached/detached
        now_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        event["latency_ms"] = round((now_ns - record.header.ktime_ns) / 1e6, 3)
        self._agent.writer.write(event)

    def container_event(self, state: str, cgroup_id: int, path: str) -> dict[str, Any]:
        """A container event; written at once except for mkdir/rmdir, which
        add their latency first."""
        slot = self.slot_of.get(cgroup_id)
        policy = ({"name": self._agent.policies[slot].name, "generation": self._agent.generations.active}
                  if slot is not None else None)
        event = container_event(self._agent.clock, state, cgroup_id, path, self.container(path), policy)
        if state == "selected":
            self._agent.writer.write(event)
        return event

    def release_adopted(self, previously_guarded: list[int]) -> None:
        """At start, once the cgroups given are guarded: release those a
        previous agent guarded that this one was not asked to, and mark the
        processes already running in the guarded ones (mark_tasks)."""
        stale = set(previously_guarded) | set(self._agent.objects.pinned_cgroups())
        for cgroup_id in stale - set(self.guarded) - set(self.parents) - set(self.exempt):
            self._agent.maps.unguard_adopted(cgroup_id)
            self._agent.objects.detach_cgroup(cgroup_id)
        self._agent.maps.settle_levels()
        self.mark_tasks()

    def policy_for_path(self, cgroup_path: str) -> Policy | None:
        """The policy of the guarded cgroup at or above a cgroup path."""
        path = cgroup_path
        guarded = list(self.guarded.values())   # the hold watchdog asks from its thread
        while True:
            for cg in guarded:
                if cg.relative == path:
                    return self._agent.policies[self.slot_of[cg.id]]
            if path in ("/", ""):
                return None
            path = path.rsplit("/", 1)[0] or "/"


def _below(cg: Cgroup, parents) -> bool:
    """cg lies below one of parents (cgroup paths below the mount)."""
    return any(p.level < cg.level and cg.relative.startswith(p.relative.rstrip("/") + "/")
               for p in parents)


def _union(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    return None if a is None or b is None else a | b
