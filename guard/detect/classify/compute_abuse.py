# SPDX-License-Identifier: Apache-2.0
"""Mining by behaviour: a workload that burns CPU while a long-lived flow of
its own carries small periodic uploads.

A miner's pool connection is the one thing a miner must keep: it stays open
for as long as the miner runs and carries a share (a few hundred bytes) every
few seconds to a minute, while the miner keeps every core it may use busy.
TLS to an address that names nothing, a protocol nobody has a signature for,
a renamed binary with no config on disk: none of that changes this shape,
so it is a finding on its own (type `stratum`, dialect
`compute-correlation`, medium: the policy's `stratum` action applies).

Inputs are samples the agent takes every few seconds (guard/agent/sweeps.py):
the workload's CPU (cgroup cpu.stat usage) and its TCP flows' byte counters
(sock_diag tcp_info). Pure: the caller measures, this decides.

The shape, over the last WINDOW samples:
- the workload used at least HOT_CORES of CPU in every interval;
- the flow was seen in every one of them (it lives at least that long);
- its bytes sent grew in at least UPLOADS_MIN intervals, never by more than
  UPLOAD_MAX_BYTES in one (small uploads, not a transfer);
- it received at most DOWNLOAD_MAX_BYTES in any one interval (not a
  download or a stream being consumed).
A build or a test run (CPU, but its flows are downloads or short), a
websocket chat (uploads, little CPU) and a busy API client (many short flows)
do not have all of it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from guard.detect.classify import Finding
from guard.workloads.compute import FlowSample

WINDOW = 4                    # samples looked at (intervals: WINDOW - 1... see below)
HOT_CORES = 0.5               # CPU of the workload in every interval of the window
UPLOADS_MIN = 2               # intervals in which the flow's bytes sent grew
UPLOAD_MAX_BYTES = 16 * 1024  # the most one interval's upload may be
DOWNLOAD_MAX_BYTES = 64 * 1024
FLOWS_KEPT = 256              # flows followed per workload (the most recently seen)


@dataclass(slots=True)
class Workload:
    """One workload's recent samples: CPU cores per interval, and per flow
    its counters at each sample (None where it was not seen)."""
    cores: deque = field(default_factory=lambda: deque(maxlen=WINDOW - 1))
    flows: dict[int, deque] = field(default_factory=dict)
    reported: set[int] = field(default_factory=set)

    def add(self, cores: float, flows: list[FlowSample]) -> None:
        self.cores.append(cores)
        seen = {flow.cookie: flow for flow in flows}
        for cookie in list(self.flows):
            if cookie not in seen:
                del self.flows[cookie]          # gone: a short flow is no pool connection
        for cookie, flow in seen.items():
            self.flows.setdefault(cookie, deque(maxlen=WINDOW)).append(flow)
        while len(self.flows) > FLOWS_KEPT:
            del self.flows[next(iter(self.flows))]
        self.reported &= set(self.flows)

    def findings(self) -> list[tuple[FlowSample, Finding]]:
        """(flow, finding) for each flow of the shape not reported before."""
        if len(self.cores) < WINDOW - 1 or min(self.cores) < HOT_CORES:
            return []
        out = []
        for cookie, series in self.flows.items():
            if cookie in self.reported or len(series) < WINDOW:
                continue
            finding = _judge(list(series), list(self.cores))
            if finding is not None:
                self.reported.add(cookie)
                out.append((series[-1], finding))
        return out


def _judge(series: list[FlowSample], cores: list[float]) -> Finding | None:
    uploads = [b.bytes_sent - a.bytes_sent for a, b in zip(series, series[1:])]
    downloads = [b.bytes_received - a.bytes_received for a, b in zip(series, series[1:])]
    if min(uploads + downloads) < 0:
        return None                             # counters went back: not one flow
    grew = sum(1 for n in uploads if n > 0)
    if grew < UPLOADS_MIN or max(uploads) > UPLOAD_MAX_BYTES or \
            max(downloads) > DOWNLOAD_MAX_BYTES:
        return None
    return Finding("stratum", "medium", "compute-correlation", {
        "signal": "cpu_and_periodic_uploads",
        "remote": series[-1].remote,
        "cpu_cores": [round(c, 2) for c in cores],
        "uploads_bytes": uploads,
        "downloads_bytes": downloads,
        "note": "the workload kept its CPU busy while this long-lived flow carried "
                "small periodic uploads (a miner's shares)",
    })
