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


# -- the same decisions without CAP_SYS_NICE: the kernel call recorded, not made

@pytest.fixture
def recorded(monkeypatch):
    """sched_setscheduler recorded (and CAP_SYS_NICE granted): every policy
    decision of CpuShare runs unprivileged; calls[-1] is what is in force."""
    calls: list[int] = []
    monkeypatch.setattr(scheduling, "can_leave_idle", lambda: True)
    monkeypatch.setattr(scheduling.os, "sched_setscheduler",
                        lambda pid, policy, param: calls.append(policy))
    return calls


def test_background_paces_by_lateness_and_answers_in_the_foreground(recorded):
    share = CpuShare("background")
    share.pace(0.0)
    assert recorded == [os.SCHED_IDLE] and share.in_force() == "background"
    share.pace(BEHIND_S * 2)              # behind: competes
    share.pace(BEHIND_S * 3)              # set only when it changes
    assert recorded == [os.SCHED_IDLE, os.SCHED_OTHER]
    share.pace(0.0)
    with share.foreground():
        assert recorded[-1] == os.SCHED_OTHER
    assert recorded[-1] == os.SCHED_IDLE   # back to what was in force
    share.restore()
    assert recorded[-1] == os.SCHED_OTHER and share.why_not is None


def test_a_cgroup_that_becomes_shared_leaves_the_background(recorded):
    company = {"now": None}
    share = CpuShare("background", company=lambda: company["now"])
    share.pace(0.0)
    company["now"] = "shares its cgroup /x with 1 other process"
    share.recheck()
    assert recorded[-1] == os.SCHED_OTHER and share.in_force() == "normal"
    assert share.why_not == company["now"]
    share.pace(0.0)                        # not while shared
    assert recorded[-1] == os.SCHED_OTHER
    company["now"] = None
    share.recheck()
    share.pace(0.0)
    assert recorded[-1] == os.SCHED_IDLE


def test_a_refused_sched_setscheduler_is_said_once_and_the_loop_goes_on(monkeypatch):
    monkeypatch.setattr(scheduling, "can_leave_idle", lambda: True)

    def refuse(pid, policy, param):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(scheduling.os, "sched_setscheduler", refuse)
    share = CpuShare("background")
    share.pace(0.0)
    assert share.why_not == "sched_setscheduler: Operation not permitted"
    assert share.in_force() == "normal"
    share.pace(0.0)                        # refused for good: no more attempts
    with share.foreground():
        pass


def test_normal_mode_never_calls_the_kernel(recorded):
    share = CpuShare("normal")
    share.pace(0.0)
    share.pace(1.0)
    with share.foreground():
        pass
    share.restore()
    assert recorded == [] and share.in_force() == "normal"


def test_cgroup_company_without_a_readable_cgroup(tmp_path, monkeypatch):
    monkeypatch.setattr(scheduling, "of_pid", lambda pid: None)
    assert scheduling.cgroup_company(mount=tmp_path) == "no cgroup v2 in /proc/self/cgroup"
    monkeypatch.setattr(scheduling, "of_pid", lambda pid: "/gone")
    assert scheduling.cgroup_company(mount=tmp_path).startswith("cannot read /gone/cgroup.procs")


def test_can_leave_idle_reads_cap_sys_nice_from_proc(monkeypatch, tmp_path):
    status = tmp_path / "status"
    real_open = open

    def fake_open(path, *args, **kwargs):
        return real_open(status if path == "/proc/self/status" else path, *args, **kwargs)
    monkeypatch.setattr("builtins.open", fake_open)
    status.write_bytes(b"Name:\tx\nCapEff:\t%016x\n" % (1 << scheduling.CAP_SYS_NICE))
    assert scheduling.can_leave_idle() is True
    status.write_bytes(b"Name:\tx\nCapEff:\t0000000000000000\n")
    assert scheduling.can_leave_idle() is False
    status.write_bytes(b"Name:\tx\n")
    assert scheduling.can_leave_idle() is False
