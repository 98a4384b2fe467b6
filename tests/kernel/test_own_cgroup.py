# SPDX-License-Identifier: Apache-2.0
"""The agent never guards itself, run as a host process in a cgroup of its
own (as systemd gives it): discovery leaves its cgroup out even when it is
named like a container's, its own connects are never judged, the ready event
says so, and --cgroup naming it or its parent is refused before anything is
loaded. (In a container, with and without a cgroup namespace of its own:
test_manifest.py.)"""
from __future__ import annotations

import secrets
import sys

import pytest

from guard.demo.sandbox import TempCgroup

from .agentproc import ROOT, AgentProcess
from .conftest import port_block_policy
from .test_lifecycle import cgroup_attachments
from .test_reload import AcceptingListener

PORT = 29951
POLICY = port_block_policy("everything", PORT)
CONNECT = f"import socket; print(socket.socket().connect_ex(('127.0.0.1', {PORT})))"


@pytest.fixture
def listener():
    lst = AcceptingListener(PORT)
    yield lst
    lst.close()


def test_discovery_leaves_the_agents_own_container_cgroup_out(tmp_path, listener):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    with TempCgroup("egress-guard-test") as parent, \
            TempCgroup(parent=parent.path, name=f"libpod-{secrets.token_hex(32)}") as own, \
            TempCgroup(parent=parent.path, name=f"libpod-{secrets.token_hex(32)}") as workload:
        with AgentProcess([], policy=policy, own_cgroup=own) as agent:
            ready = agent.ready
            assert ready["self"]["cgroup"] == {"id": own.id, "path": own.cgroup.relative}
            assert ready["self"]["excluded"] is True
            guarded = [c["id"] for c in ready["cgroups"]]
            assert workload.id in guarded and own.id not in guarded
            # the policy would refuse the agent's connect: it is not judged
            assert own.python(CONNECT).stdout.strip() == "0"
            assert workload.python(CONNECT).stdout.strip() == "1"   # EPERM
            agent.wait_for(lambda e: e["kind"] == "connect" and e["cgroup"]["id"] == workload.id)
            assert [e for e in agent.drain() if e.get("cgroup", {}).get("id") == own.id] == []


@pytest.mark.parametrize("name", ["itself", "its parent"])
def test_cgroup_naming_the_agent_is_refused_before_anything_is_loaded(tmp_path, name):
    with TempCgroup("egress-guard-test") as parent, \
            TempCgroup(parent=parent.path, name="agent") as own:
        named = own if name == "itself" else parent
        run = own.run([sys.executable, "-m", "guard", "run", "--cgroup", str(named.path),
                       "--control-socket", str(tmp_path / "agent.sock"),
                       "--state-dir", str(tmp_path)],
                      cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                      timeout=60, text=True)
        assert run.returncode == 3, run.stderr
        assert run.stderr.strip() == (
            f"egress-guard: error: {named.path}: refusing to guard the agent's own cgroup: the agent "
            f"runs in {own.cgroup.relative}, and never guards itself (run it in a cgroup of "
            "its own, as systemd or a container give it, and name the workloads' cgroups)")
        assert run.stdout == ""
        assert cgroup_attachments(named.path) == [] and cgroup_attachments(own.path) == []
