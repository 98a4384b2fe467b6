# SPDX-License-Identifier: Apache-2.0
"""The agent handles events under SCHED_IDLE by default when it has its
cgroup to itself, and competes normally while it answers
(guard/agent/scheduling.py); in a shared cgroup, or with --scheduling normal, it
keeps SCHED_OTHER. The agent's main thread runs the loop: its policy is the
process's as sched_getscheduler(pid) reads it."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from guard.control.server import request
from guard.demo.sandbox import TempCgroup

from .agentproc import ROOT, AgentProcess


@pytest.fixture
def agent_cgroup():
    """A cgroup of the agent's own, as systemd and the DaemonSet give it."""
    with TempCgroup("egress-guard-agent") as cg:
        yield cg


def settles_to(pid: int, policy: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.sched_getscheduler(pid) == policy:
            return True
        time.sleep(0.02)
    return False


def test_the_agent_handles_events_in_the_background(guarded_cgroup, agent_cgroup, tmp_path):
    with AgentProcess([str(guarded_cgroup.path)], own_cgroup=agent_cgroup) as agent:
        assert settles_to(agent.proc.pid, os.SCHED_IDLE)
        # events from the guarded cgroup are handled, and the loop stays idle-class
        assert guarded_cgroup.run(["/bin/true"]).returncode == 0
        agent.wait_for(lambda e: e.get("kind") == "exec" and e["process"]["pid"] > 0)
        status = request(agent.control_socket, {"op": "status"})
        assert status["scheduling"] == {"mode": "background", "in_force": "background"}
        # an answer (here a reload) is given in the foreground, then back
        policy = tmp_path / "p.yaml"
        policy.write_text("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n"
                          "  name: sched\nspec:\n  defaultAction: log\n")
        result = subprocess.run([sys.executable, str(ROOT / "bin" / "egress-guard"), "policy",
                                 "reload", str(policy), "--socket", agent.control_socket],
                                capture_output=True, text=True, timeout=30,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert result.returncode == 0, result.stderr
        assert settles_to(agent.proc.pid, os.SCHED_IDLE)
        human = subprocess.run([sys.executable, "-m", "guard", "status", "--socket",
                                agent.control_socket], capture_output=True, text=True,
                               timeout=30, cwd=ROOT)
        assert "scheduling   background" in human.stdout, human.stdout


def test_an_agent_sharing_its_cgroup_stays_in_the_foreground(guarded_cgroup, agent_cgroup):
    with AgentProcess([str(guarded_cgroup.path)], own_cgroup=agent_cgroup) as agent:
        assert settles_to(agent.proc.pid, os.SCHED_IDLE)
        # another process joins the agent's cgroup: at the next tick it competes
        neighbour = agent_cgroup.popen(["sleep", "30"])
        try:
            assert settles_to(agent.proc.pid, os.SCHED_OTHER)
            status = request(agent.control_socket, {"op": "status"})
            assert status["scheduling"]["in_force"] == "normal"
            assert "shares its cgroup" in status["scheduling"]["refused"]
            assert "1 other process " in status["scheduling"]["refused"]
        finally:
            neighbour.kill()
            neighbour.wait(timeout=10)
        # alone again: back to the background
        assert settles_to(agent.proc.pid, os.SCHED_IDLE)
        status = request(agent.control_socket, {"op": "status"})
        assert status["scheduling"] == {"mode": "background", "in_force": "background"}


def test_normal_scheduling_keeps_sched_other(guarded_cgroup, agent_cgroup):
    with AgentProcess([str(guarded_cgroup.path)], extra=["--scheduling", "normal"],
                      own_cgroup=agent_cgroup) as agent:
        status = request(agent.control_socket, {"op": "status"})
        assert status["scheduling"] == {"mode": "normal", "in_force": "normal"}
        assert guarded_cgroup.run(["/bin/true"]).returncode == 0
        agent.wait_for(lambda e: e.get("kind") == "exec")
        assert not settles_to(agent.proc.pid, os.SCHED_IDLE, timeout=0.5)
        assert os.sched_getscheduler(agent.proc.pid) == os.SCHED_OTHER


def test_a_bad_scheduling_mode_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "guard", "run", "--scheduling", "fast"],
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 2
    assert "'fast' is not one of 'background', 'normal'" in result.stderr
    assert "Traceback" not in result.stderr
