# SPDX-License-Identifier: Apache-2.0
"""Mining by behaviour (guard/detect/classify/compute_abuse.py): CPU kept
busy while a long-lived flow carries small periodic uploads."""
from __future__ import annotations

from pathlib import Path

import pytest

from guard.detect.classify import compute_abuse
from guard.detect.classify.compute_abuse import Workload
from guard.workloads.compute import FlowSample, cpu_usage_usec

POOL = "198.18.0.7:443"


def flow(sent: int, received: int = 0, cookie: int = 7, remote: str = POOL) -> FlowSample:
    return FlowSample(cookie=cookie, remote=remote, bytes_sent=sent, bytes_received=received)


def run(samples: list[tuple[float, list[FlowSample]]]) -> list:
    workload = Workload()
    found = []
    for cores, flows in samples:
        workload.add(cores, flows)
        found += workload.findings()
    return found


def test_a_busy_workload_sending_shares_on_a_long_flow_is_mining():
    found = run([(1.9, [flow(300)]), (1.9, [flow(600, 90)]), (2.0, [flow(600, 180)]),
                 (1.95, [flow(900, 270)])])
    [(sample, finding)] = found
    assert (finding.type, finding.dialect, finding.confidence) == (
        "stratum", "compute-correlation", "medium")
    assert finding.evidence["remote"] == POOL and sample.cookie == 7
    assert finding.evidence["uploads_bytes"] == [300, 0, 300]
    # reported once per flow
    workload = Workload()
    for cores, flows in [(1.9, [flow(i * 300, i * 90)]) for i in range(10)]:
        workload.add(cores, flows)
    assert len(workload.findings()) == 1 and workload.findings() == []


@pytest.mark.parametrize("samples, why", [
    ([(0.1, [flow(i * 300)]) for i in range(6)], "an idle workload's chatty flow"),
    ([(1.9, [flow(i * 300)]) if i != 3 else (0.2, [flow(i * 300)]) for i in range(5)],
     "CPU that was not kept busy"),
    ([(1.9, [flow(i * 400_000)]) for i in range(6)], "an upload, not shares"),
    ([(1.9, [flow(i * 300, i * 5_000_000)]) for i in range(6)], "a download (a build)"),
    ([(1.9, [flow(300)]), (1.9, [flow(300)]), (1.9, [flow(300)]), (1.9, [flow(300)])],
     "a flow that sends nothing"),
    ([(1.9, [flow(300, cookie=i)]) for i in range(6)], "short flows, one per sample"),
    ([(1.9, [flow(900)]), (1.9, [flow(600)]), (1.9, [flow(1200)]), (1.9, [flow(1500)])],
     "counters that went back"),
    ([(1.9, [flow(300)]), (1.9, [flow(600)]), (1.9, [])], "too few samples"),
])
def test_shapes_that_are_not_mining(samples, why):
    assert run(samples) == [], why


def test_a_flow_gone_and_back_starts_over_and_flows_are_bounded():
    workload = Workload()
    for i in range(3):
        workload.add(1.9, [flow(i * 300)])
    workload.add(1.9, [])                        # gone
    workload.add(1.9, [flow(9000)])
    assert workload.findings() == []
    workload.add(1.9, [flow(n, cookie=n) for n in range(compute_abuse.FLOWS_KEPT + 50)])
    assert len(workload.flows) == compute_abuse.FLOWS_KEPT


def test_cpu_usage_is_read_from_cpu_stat(tmp_path: Path):
    (tmp_path / "cpu.stat").write_text("usage_usec 123456\nuser_usec 1\nsystem_usec 2\n")
    assert cpu_usage_usec(tmp_path) == 123456
    (tmp_path / "cpu.stat").write_text("usage_usec lots\n")
    assert cpu_usage_usec(tmp_path) is None
    assert cpu_usage_usec(tmp_path / "gone") is None
