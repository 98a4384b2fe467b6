# SPDX-License-Identifier: Apache-2.0
"""The workload registry: which cgroups are guarded, by which policy slot.

A cgroup is attached first, then marked guarded, so it is never marked
without hooks. Its policy is the one that selects it with what is known now
(path, container name, image and labels, pod namespace and labels); names
and labels that arrive later, and reloads, move it (reselect: one eg_guarded
update each, atomic). Discovery guards a container's cgroup as it appears and
frees it as it goes. The events that say so are built in guard/report.
"""
from __future__ import annotations

import time
from typing import Any

from guard.agent.generations import SLOT_BITS, generation_of
from guard.kernel import libbpf
from guard.kernel.records import CgroupRecord
from guard.policy.model import Policy, Workload, select_policy
from guard.report.events import container_event
from guard.workloads.cgroups import Cgroup, CgroupError, resolve
from guard.workloads.containers import container_of, is_container_cgroup
from guard.workloads.kubernetes import PodInfo
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

    def guard(self, cg: Cgroup) -> None:
        """Attach first, then mark guarded: a cgroup is never marked without
        hooks. Its policy is the one that selects it with what is known now;
        names and labels that arrive later may move it (see reselect)."""
        if cg.id in self.guarded:
            return
        container = container_of(cg.relative)
        if container is not None:
            self._agent.metadata.request(container.id)  # enrich later; enforcement starts now
        slot = select_policy(self._agent.policies, self.workload(cg.relative))
        if slot is None:
            self.waiting[cg.id] = cg
            return
        self._agent.objects.attach_cgroup(str(cg.path), cg.id)
        self._agent.maps.guard(cg.id, cg.level, slot)
        self.guarded[cg.id] = cg
        self.slot_of[cg.id] = slot
        self.waiting.pop(cg.id, None)
        self._agent.cgroup_names.register(cg)

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
        """Selection only changes when names, labels or pods do."""
        version = self._facts_version()
        if version != self._seen_facts:
            self._seen_facts = version
            self.reselect()

    def reselect(self) -> None:
        """Move cgroups whose selecting policy changed (metadata arrived, or a
        reload changed the set): one eg_guarded update each, atomic."""
        for cg in list(self.waiting.values()):
            if select_policy(self._agent.policies, self.workload(cg.relative)) is not None:
                self.guard(cg)
                self.container_event("selected", cg.id, cg.relative)
        for cgroup_id, cg in list(self.guarded.items()):
            slot = select_policy(self._agent.policies, self.workload(cg.relative))
            if slot is None:
                self.release(cgroup_id)
                self.waiting[cgroup_id] = cg
            elif slot != self.slot_of.get(cgroup_id):
                self._agent.maps.guard(cgroup_id, cg.level, slot)
                self.slot_of[cgroup_id] = slot
                self.container_event("selected", cgroup_id, cg.relative)

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
        """Cgroups a previous agent guarded that this one was not asked to."""
        stale = set(previously_guarded) | set(self._agent.objects.pinned_cgroups())
        for cgroup_id in stale - set(self.guarded):
            self._agent.maps.unguard_adopted(cgroup_id)
            self._agent.objects.detach_cgroup(cgroup_id)

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

