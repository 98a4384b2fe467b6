# SPDX-License-Identifier: Apache-2.0
"""What the kernel could not tell the agent, said every LOSS_REPORT_INTERVAL_S.

Two ways a record is missing (bpf/lib/events.h): it found the ring full
(`lost`), or its workload was over its fair share while the ring was at
least half full (`shed`: a noisy sandbox's records give way so the others'
still get in). Both are counted for the host (eg_counters) and per workload
(eg_workload_loss, by leaf cgroup); a `loss` event carries what changed since
the last one, the workloads named as the other events name them, the
noisiest first (at most WORKLOADS_LISTED of them).
"""
from __future__ import annotations

from typing import Any

from guard.report.events import loss_event

WORKLOADS_LISTED = 32


class LossReport:
    def __init__(self, agent):
        self._agent = agent
        self.lost_reported = 0
        self.shed_reported = 0
        self._per_workload: dict[int, tuple[int, int]] = {}

    def __call__(self) -> None:
        agent = self._agent
        counters = agent.counters()
        lost, shed = counters.get("events_lost", 0), counters.get("events_shed", 0)
        if lost <= self.lost_reported and shed <= self.shed_reported:
            return
        workloads = self._workloads()
        agent.writer.write(loss_event(agent.clock, lost - self.lost_reported, lost,
                                      shed - self.shed_reported, shed, workloads))
        agent.writer.flush()
        self.lost_reported, self.shed_reported = lost, shed

    def _workloads(self) -> list[dict[str, Any]]:
        agent = self._agent
        try:
            now = agent.maps.workload_losses()
        except Exception as exc:  # noqa: BLE001 - the host totals still go out
            agent.error(f"per-workload losses: {exc}")
            return []
        changed = []
        for cgroup_id, (shed, lost) in now.items():
            was_shed, was_lost = self._per_workload.get(cgroup_id, (0, 0))
            # an LRU entry may have been dropped and made again: count from 0 then
            new_shed = shed - was_shed if shed >= was_shed else shed
            new_lost = lost - was_lost if lost >= was_lost else lost
            if new_shed or new_lost:
                changed.append((new_shed + new_lost, cgroup_id, new_shed, new_lost))
        self._per_workload = now
        changed.sort(reverse=True)
        out = []
        for _total, cgroup_id, new_shed, new_lost in changed[:WORKLOADS_LISTED]:
            path = agent.cgroup_names.name(cgroup_id) if agent.cgroup_names else None
            entry: dict[str, Any] = {"cgroup": {"id": cgroup_id, "path": path},
                                     "shed": new_shed, "lost": new_lost}
            container = agent.registry.container(path)
            if container is not None:
                entry["container"] = container
            out.append(entry)
        return out
