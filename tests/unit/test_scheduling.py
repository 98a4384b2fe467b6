# SPDX-License-Identifier: Apache-2.0
"""The agent loop's scheduling policy (guard/agent/scheduling.py). Each case runs
in a thread of its own: the policy is per thread, and pytest's must stay."""
from __future__ import annotations

import os
import threading
import time

import pytest

from guard.agent import scheduling
from guard.agent.scheduling import BEHIND_S, CpuShare, lateness_s

root_only = pytest.mark.skipif(not scheduling.can_leave_idle(),
                               reason="needs CAP_SYS_NICE (run as root)")


def in_thread(work):
    """work() in a new thread; its result, or its exception raised here."""
    outcome = {}

    def run():
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def policy() -> int:
    return os.sched_getscheduler(0)


@root_only
def test_background_idles_on_time_competes_when_behind_and_for_answers():
    def work():
        share = CpuShare("background")
        seen = [policy()]
        share.pace(0.0)
        seen.append(policy())                 # on time: in the background
        share.pace(BEHIND_S * 3)
        seen.append(policy())                 # behind: competes
        share.pace(BEHIND_S / 10)
        seen.append(policy())                 # caught up
        with share.foreground():
            seen.append(policy())             # answering a reload
        seen.append(policy())                 # back to what it was
        share.restore()
        seen.append(policy())
        return seen, share.refused
    seen, refused = in_thread(work)
    assert refused is None
    assert seen == [os.SCHED_OTHER, os.SCHED_IDLE, os.SCHED_OTHER, os.SCHED_IDLE,
                    os.SCHED_OTHER, os.SCHED_IDLE, os.SCHED_OTHER]


@root_only
def test_foreground_while_behind_stays_in_the_foreground_after():
    def work():
        share = CpuShare("background")
        share.pace(BEHIND_S * 2)
        with share.foreground():
            pass
        return policy()
    assert in_thread(work) == os.SCHED_OTHER


def test_normal_never_leaves_sched_other():
    def work():
        share = CpuShare("normal")
        share.pace(0.0)
        with share.foreground():
            inside = policy()
        share.pace(BEHIND_S * 2)
        return inside, policy(), share.enabled, share.in_force()
    assert in_thread(work) == (os.SCHED_OTHER, os.SCHED_OTHER, False, "normal")


def test_without_cap_sys_nice_background_is_refused_and_never_entered(monkeypatch):
    monkeypatch.setattr(scheduling, "can_leave_idle", lambda: False)

    def work():
        share = CpuShare("background")
        share.pace(0.0)
        return policy(), share.enabled, share.refused
    current, enabled, refused = in_thread(work)
    assert current == os.SCHED_OTHER and not enabled
    assert "CAP_SYS_NICE" in refused


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="expected one of background, normal"):
        CpuShare("fast")


def test_lateness_is_measured_on_the_kernel_records_clock():
    written = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 250_000_000
    assert 0.25 <= lateness_s(written) < 5.0


@root_only
def test_a_shared_cgroup_keeps_the_loop_in_the_foreground_until_it_is_alone():
    company = ["shares its cgroup /x with 2 other processes"]

    def work():
        share = CpuShare("background", company=lambda: company[0])
        seen = []
        share.pace(0.0)
        seen.append((policy(), share.in_force()))          # shared from the start
        company[0] = None
        share.recheck()
        share.pace(0.0)
        seen.append((policy(), share.in_force()))          # alone: background
        company[0] = "shares its cgroup /x with 1 other process"
        share.recheck()
        seen.append((policy(), share.in_force()))          # a neighbour came: at once
        with share.foreground():
            pass
        share.pace(0.0)
        seen.append((policy(), share.in_force()))          # and it stays so
        return seen, share.why_not
    seen, why_not = in_thread(work)
    assert seen == [(os.SCHED_OTHER, "normal"), (os.SCHED_IDLE, "background"),
                    (os.SCHED_OTHER, "normal"), (os.SCHED_OTHER, "normal")]
    assert why_not == "shares its cgroup /x with 1 other process"


def test_cgroup_company_counts_the_other_processes(tmp_path, monkeypatch):
    procs = tmp_path / "a" / "b" / "cgroup.procs"
    procs.parent.mkdir(parents=True)
    monkeypatch.setattr(scheduling, "of_pid", lambda pid: "/a/b")
    procs.write_text("4242\n")
    assert scheduling.cgroup_company(4242, tmp_path) is None
    procs.write_text("4242\n17\n")
    assert scheduling.cgroup_company(4242, tmp_path) == (
        "shares its cgroup /a/b with 1 other process (SCHED_IDLE would weigh against them)")
    procs.write_text("17\n4242\n18\n")
    assert "with 2 other processes" in scheduling.cgroup_company(4242, tmp_path)
    procs.unlink()
    assert "cannot read /a/b/cgroup.procs" in scheduling.cgroup_company(4242, tmp_path)
