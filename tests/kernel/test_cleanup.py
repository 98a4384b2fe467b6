# SPDX-License-Identifier: Apache-2.0
"""Failures half-way leave nothing behind: no programs, links, cgroups or processes."""
from __future__ import annotations

import io
import subprocess

import pytest

from guard.agent.core import Agent, AgentError
from guard.kernel.maps import Maps
from guard.report.events import EventWriter
from guard.policy.load import default_policy
from guard.demo.sandbox import TempCgroup, TestHost

from .test_lifecycle import cgroup_attachments, guard_programs


def test_attach_failure_half_way_detaches_what_was_attached(monkeypatch):
    with TempCgroup("egress-guard-test") as first, TempCgroup("egress-guard-test") as second:
        calls = []
        original = Maps.guard

        def guard_then_fail(self, cgroup_id, level, policy_id):
            calls.append(cgroup_id)
            if len(calls) == 2:
                raise RuntimeError("injected failure while guarding the second cgroup")
            return original(self, cgroup_id, level, policy_id)
        monkeypatch.setattr(Maps, "guard", guard_then_fail)
        agent = Agent(default_policy(), [str(first.path), str(second.path)],
                      EventWriter(io.BytesIO()))
        with pytest.raises(RuntimeError, match="injected"):
            agent.start()
        assert calls == [first.id, second.id]
        assert cgroup_attachments(first.path) == []
        assert cgroup_attachments(second.path) == []
    assert guard_programs() == []


def test_unknown_cgroup_fails_before_anything_is_loaded():
    agent = Agent(default_policy(), ["/egress-guard-no-such-cgroup"], EventWriter(io.BytesIO()))
    with pytest.raises(AgentError, match="no such cgroup"):
        agent.start()
    assert guard_programs(settle_s=0) == []


def test_sandbox_helpers_clean_up_when_the_body_fails():
    with pytest.raises(RuntimeError):
        with TempCgroup("egress-guard-test") as cg, TestHost() as host:
            sleeper = cg.popen(["sleep", "60"])
            host.serve(29600)
            path, netns = cg.path, host.name
            raise RuntimeError("test body failed")
    assert not path.exists()
    assert sleeper.poll() is not None
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert netns not in namespaces


def test_traffic_reaches_a_test_host_only_through_its_veth():
    with TestHost() as host:
        server = host.serve(29601)
        with TempCgroup("egress-guard-test") as cg:
            result = cg.python("import socket; socket.create_connection"
                               f"(({host.ip!r}, 29601), timeout=5).close(); print('ok')")
            assert result.stdout.strip() == "ok"
        routes = subprocess.run(["ip", "netns", "exec", host.name, "ip", "route"],
                                capture_output=True, text=True).stdout
        assert "default" not in routes
        assert server.poll() is None
