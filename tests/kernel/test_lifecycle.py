# SPDX-License-Identifier: Apache-2.0
"""The agent's life: ready line, clean stop, nothing left behind, CLI errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import orjson

from guard.demo.sandbox import TempCgroup

from .conftest import CGROUP_HOOKS
from .agentproc import ROOT, AgentProcess


def guard_programs(settle_s: float = 10.0) -> list[dict]:
    """egress-guard programs still loaded. The kernel frees a program some time
    after its last reference goes (RCU), so an answer other than none is only
    given once it has stayed that way for settle_s."""
    deadline = time.monotonic() + settle_s
    while True:
        out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, check=True)
        progs = [p for p in json.loads(out.stdout.strip() or b"[]")
                 if p.get("name", "").startswith("guard_")]
        if not progs or time.monotonic() > deadline:
            return progs
        time.sleep(0.1)


def cgroup_attachments(path) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", "cgroup", "show", str(path)], capture_output=True,
                         check=True)
    return json.loads(out.stdout.strip() or b"[]")


def egress_guard(*args, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "guard", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60, **kwargs)


def test_ready_line_then_clean_stop_leaves_nothing(tmp_path):
    assert guard_programs() == []
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)]) as agent:
            ready = agent.ready
            assert ready["kind"] == "agent" and ready["state"] == "ready"
            assert ready["policy"]["name"] == "default"
            assert ready["cgroups"] == [{"id": cg.id, "path": cg.cgroup.relative,
                                         "policy": "default"}]
            names = {p["name"] for p in guard_programs(settle_s=0)}
            assert {"guard_exec", "guard_connect4", "guard_connect6", "guard_sendmsg4",
                    "guard_sendmsg6", "guard_sock_create", "guard_socket_syscall",
                    "guard_cgroup_mkdir", "guard_cgroup_rmdir"} <= names
            assert len(cgroup_attachments(cg.path)) == CGROUP_HOOKS
            assert agent.stop(signal.SIGTERM) == 0
            assert agent.events[-1]["kind"] == "agent"
            assert agent.events[-1]["state"] == "stopped"
        assert cgroup_attachments(cg.path) == []
    assert guard_programs() == []
    assert os.listdir("/sys/fs/bpf") == [] or all(
        not name.startswith("egress-guard") for name in os.listdir("/sys/fs/bpf"))


def test_sigint_also_stops_cleanly():
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)]) as agent:
            assert agent.stop(signal.SIGINT) == 0
    assert guard_programs() == []


def test_a_killed_agent_leaves_no_programs():
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)]) as agent:
            assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
        # links are not pinned: the kernel releases them with the process
        assert cgroup_attachments(cg.path) == []
    assert guard_programs() == []


def test_events_file_option(tmp_path):
    events = tmp_path / "events.jsonl"
    with TempCgroup("egress-guard-test") as cg:
        proc = subprocess.Popen([sys.executable, "-m", "guard", "run", "--cgroup", str(cg.path),
                                 "--events", str(events)], cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            deadline_lines = _wait_for_lines(events, 1)
            assert orjson.loads(deadline_lines[0])["state"] == "ready"
            assert cg.run(["/bin/true", "into-file"]).returncode == 0
            lines = _wait_for_lines(events, 2, lambda ls: any(b"into-file" in line for line in ls))
            exec_events = [orjson.loads(line) for line in lines if b"into-file" in line]
            assert exec_events[0]["kind"] == "exec"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0


def _wait_for_lines(path, count, predicate=lambda lines: True, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_bytes().splitlines()
            if len(lines) >= count and predicate(lines):
                return lines
        time.sleep(0.05)
    raise AssertionError(f"{path} did not get {count} matching lines")


def test_bad_cgroup_is_one_line_and_exit_3(tmp_path):
    result = egress_guard("run", "--cgroup", "/no/such/cgroup")
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("egress-guard: error: ")
    assert "Traceback" not in result.stderr
    assert guard_programs() == []


def test_root_cgroup_is_refused():
    result = egress_guard("run", "--cgroup", "/")
    assert result.returncode == 3
    assert "root cgroup" in result.stderr
    assert guard_programs() == []


def test_invalid_policy_for_run_exits_1_with_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata: {name: x}\n"
                   "spec:\n  defaultAction: explode\n")
    result = egress_guard("run", "--policy", str(bad), "--cgroup", "/x")
    assert result.returncode == 1
    assert f"{bad}:5:" in result.stderr and "defaultAction" in result.stderr


def test_doctor_reports_this_host():
    result = egress_guard("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["btf"] is True
    assert report["cgroup2"] and os.path.isdir(report["cgroup2"])
    for name in ("cgroup_sock_addr", "cgroup_skb", "cgroup_sock_create", "raw_tracepoint",
                 "ring_buffer", "bpf_send_signal", "bpf_lsm", "fentry", "kprobe", "tracepoint"):
        assert isinstance(report["mechanisms"][name]["available"], bool)
        assert report["mechanisms"][name]["detail"]
    assert report["enforcement"]["level"]
    # root has CAP_SYS_NICE: the agent's loop can run in the background
    assert report["scheduling"]["background"] is True, report["scheduling"]
    human = egress_guard("doctor")
    assert human.returncode == 0 and "ready: yes" in human.stdout
    assert "scheduling     background: " in human.stdout
    assert guard_programs() == []


def test_demo_runs_and_cleans_up():
    before_ns = set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                                   text=True).stdout.split())
    result = egress_guard("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "EPERM" in result.stdout and "SIGKILL" in result.stdout
    after_ns = set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                                  text=True).stdout.split())
    assert after_ns <= before_ns
    assert guard_programs() == []


def test_ring_overflow_is_counted_and_reported():
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)], extra=["--ring-size", "4096"]) as agent:
            # a paused reader and a full ring: the kernel must count what it drops
            agent.proc.send_signal(signal.SIGSTOP)
            try:
                for i in range(40):
                    assert cg.run(["/bin/true", f"flood-{i}"]).returncode == 0
            finally:
                agent.proc.send_signal(signal.SIGCONT)
            loss = agent.wait_for(lambda e: e["kind"] == "loss", timeout=10)
            # past half the ring this one workload is over its share: shed, the rest lost
            assert loss["lost"] + loss["shed"] > 0 and loss["shed_total"] >= loss["shed"]
            assert [w["cgroup"]["id"] for w in loss["workloads"]] == [cg.id]
            assert agent.stop() == 0
        delivered = [e for e in agent.events if e["kind"] == "exec"
                     and e["process"]["argv"][1:2] and e["process"]["argv"][1].startswith("flood-")]
        stopped = agent.events[-1]
        assert stopped["state"] == "stopped"
        losses = [e for e in agent.events if e["kind"] == "loss"]
        lost_total = stopped["counters"]["events_lost"] + stopped["counters"]["events_shed"]
        assert lost_total == max(e["lost_total"] + e["shed_total"] for e in losses)
        # every exec is either delivered or counted as lost or shed: nothing vanishes silently
        assert len(delivered) + lost_total == 40
