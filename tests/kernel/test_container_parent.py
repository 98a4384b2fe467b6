# SPDX-License-Identifier: Apache-2.0
"""Container parents (run --container-parent, issue 19 point 3): a cgroup
made below a parent is judged by the parent's policy from its first
connect, before anything discovers it and while no agent runs (pinned); the
next agent takes it over and reports what the kernel queued meanwhile. The
agent's own cgroup below the parent is exempt, a container the agent took
over is judged once (its own hooks, not the sentinel's too), a process that
moves from a judged cgroup into the exempt one is an escape, and a parent
the agent runs in is refused."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from guard.demo.sandbox import TempCgroup

from .agentproc import ROOT, AgentProcess
from .conftest import port_block_policy, try_connect
from .test_cgroup_escape import ESCAPER, escape_of
from .test_lifecycle import cgroup_attachments, egress_guard
from .test_pinned import connect, pin_dir  # noqa: F401 - the fixture
from .test_reload import AcceptingListener

BLOCKED, ALLOWED = 29961, 29962
POLICY = port_block_policy("parent", BLOCKED, extra_spec="  sockets:\n    raw: deny\n")
SENTINEL_HOOKS = 7   # connect4/6, sendmsg4/6, bind4/6, sock_create


@pytest.fixture
def listeners():
    lst = [AcceptingListener(BLOCKED), AcceptingListener(ALLOWED)]
    yield lst
    for listener in lst:
        listener.close()


def parent_agent(tmp_path, parent: TempCgroup, own: TempCgroup, cgroups=(), pins=None):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    extra = ["--container-parent", str(parent.path)]
    if pins is not None:
        extra += ["--pin", "--pin-dir", str(pins), "--state-dir", str(pins.parent.parent / "state")]
    return AgentProcess([str(cg.path) for cg in cgroups], policy=policy, extra=extra,
                        own_cgroup=own)


def blocked_connect(agent: AgentProcess, cg: TempCgroup) -> dict:
    return agent.wait_for(lambda e: e["kind"] == "connect" and e["dst"]["port"] == BLOCKED
                          and e["cgroup"]["id"] == cg.id)


def test_below_a_parent_judged_from_the_first_connect_with_and_without_an_agent(
        tmp_path, listeners, pin_dir):  # noqa: F811
    with TempCgroup("egress-guard-parent") as parent, \
            TempCgroup(parent=parent.path, name="agent") as own, \
            TempCgroup(parent=parent.path, name="adopted") as adopted:
        with parent_agent(tmp_path, parent, own, [adopted], pin_dir) as first:
            assert first.ready["container_parents"] == [
                {"id": parent.id, "path": parent.cgroup.relative, "policy": "parent"}]
            assert first.ready["self"]["cgroup"]["id"] == own.id
            assert first.ready["self"]["excluded"] is True
            assert len(cgroup_attachments(parent.path)) == SENTINEL_HOOKS
            with TempCgroup(parent=parent.path, name="new") as new:
                # made after the agent started, never discovered: the parent's hooks judge it
                assert cgroup_attachments(new.path) == []
                assert connect(new, BLOCKED) == "EPERM" and connect(new, ALLOWED) == "ok"
                event = blocked_connect(first, new)
                assert event["action"] == "block" and event["rule"] == "blocked"
                assert event["cgroup"]["path"] == new.cgroup.relative
            # the agent's own cgroup is exempt, even below the parent
            assert connect(own, BLOCKED) == "ok"
            # a cgroup the agent took over: judged once, by its own hooks
            assert connect(adopted, BLOCKED) == "EPERM"
            blocked_connect(first, adopted)
            time.sleep(0.5)
            assert len([e for e in first.drain() if e["kind"] == "connect"
                        and e["cgroup"]["id"] == adopted.id]) == 1
            assert first.stop(signal.SIGKILL) == -signal.SIGKILL

        # no agent: a cgroup made now is judged from its first connect
        with TempCgroup(parent=parent.path, name="late") as late:
            assert connect(late, BLOCKED) == "EPERM" and connect(late, ALLOWED) == "ok"
            assert connect(own, BLOCKED) == "ok"
            with parent_agent(tmp_path, parent, own, [adopted], pin_dir) as second:
                assert second.ready["adopted"] is True
                # what the kernel queued while no agent ran is reported now
                assert blocked_connect(second, late)["action"] == "block"
                assert len(cgroup_attachments(parent.path)) == SENTINEL_HOOKS
                assert connect(late, BLOCKED) == "EPERM"
                assert connect(own, BLOCKED) == "ok"
                assert second.stop(signal.SIGTERM) == 0
            assert connect(late, BLOCKED) == "EPERM"   # pinned until uninstall
            result = egress_guard("uninstall", "--pin-dir", str(pin_dir),
                                  "--socket", str(tmp_path / "no-agent.sock"))
            assert result.returncode == 0, result.stderr
            assert connect(late, BLOCKED) == "ok"
            assert cgroup_attachments(parent.path) == []


RAW = ("import errno, socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_RAW, "
       "socket.IPPROTO_ICMP); print('ok')\nexcept OSError as e:\n"
       "    print(errno.errorcode.get(e.errno, str(e.errno)))\n")


def test_every_socket_hook_of_the_parent_judges_what_no_agent_took_over(tmp_path, listeners):
    """Not only connect(): an IPv6 socket's connect (to an IPv4-mapped
    address), UDP sends without a connect, and raw sockets (which pass every address hook) are judged
    by the parent's hooks in a cgroup no agent has taken over."""
    with TempCgroup("egress-guard-parent") as parent, \
            TempCgroup(parent=parent.path, name="agent") as own, \
            TempCgroup(parent=parent.path, name="adopted") as adopted:
        with parent_agent(tmp_path, parent, own, [adopted]) as agent, \
                TempCgroup(parent=parent.path, name="new") as new:
            assert try_connect(new, "::ffff:127.0.0.1", BLOCKED) == "EPERM"
            assert try_connect(new, "127.0.0.1", BLOCKED, "udp", "sendto") == "EPERM"
            assert try_connect(new, "127.0.0.1", ALLOWED, "udp", "sendto") == "ok"
            assert new.python(RAW).stdout.strip() == "EPERM"
            assert own.python(RAW).stdout.strip() == "ok"       # the agent's own: exempt
            hooks = {e["hook"] for e in agent.drain() if e["kind"] == "connect"
                     and e["cgroup"]["id"] == new.id}
            deadline = time.monotonic() + 10
            while not {"connect", "sendmsg"} <= hooks and time.monotonic() < deadline:
                time.sleep(0.1)
                hooks = {e["hook"] for e in agent.drain() if e["kind"] == "connect"
                         and e["cgroup"]["id"] == new.id}
            assert {"connect", "sendmsg"} <= hooks, hooks
            agent.wait_for(lambda e: e["kind"] == "socket" and e["cgroup"]["id"] == new.id)


def move_and_connect(source, target) -> tuple[subprocess.Popen, str]:
    """ESCAPER started in source: it moves itself into target, then connects
    to BLOCKED. (the process, its output)"""
    proc = source.popen([sys.executable, "-c", ESCAPER, str(target.path / "cgroup.procs"),
                         "self", str(BLOCKED)], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, _ = proc.communicate(timeout=20)
    return proc, out

def test_a_move_into_the_exempt_cgroup_is_an_escape(tmp_path, listeners):
    with TempCgroup("egress-guard-parent") as parent, \
            TempCgroup(parent=parent.path, name="agent") as own, \
            TempCgroup(parent=parent.path, name="a") as one, \
            TempCgroup(parent=parent.path, name="b") as two, \
            TempCgroup(parent=parent.path, name="adopted") as adopted:
        # a cgroup named, so the agent does not discover the host's containers
        with parent_agent(tmp_path, parent, own, [adopted]) as agent:
            # between two cgroups the parent judges: still judged, no escape
            proc, out = move_and_connect(one, two)
            assert proc.returncode == 0 and "EPERM" in out, out
            # into the agent's own (exempt) cgroup: killed at the move
            proc, out = move_and_connect(one, own)
            assert proc.returncode == -signal.SIGKILL and "connected" not in out, out
            event = escape_of(agent, proc.pid)
            assert event["escape"]["to"]["id"] == own.id
            assert event["escape"]["killed_by"] == "kernel"


@pytest.mark.parametrize("which", ["its own cgroup", "the root"])
def test_a_parent_the_agent_runs_in_is_refused(tmp_path, which):
    with TempCgroup("egress-guard-parent") as own:
        named = own.path if which == "its own cgroup" else own.path.parent
        run = own.run([sys.executable, "-m", "guard", "run", "--container-parent", str(named),
                       "--control-socket", str(tmp_path / "agent.sock"),
                       "--state-dir", str(tmp_path)],
                      cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                      timeout=60, text=True)
        assert run.returncode == 3, run.stderr
        expected = ("refusing it as a container parent: the agent runs in it"
                    if which == "its own cgroup" else "refusing the root cgroup as a container parent")
        assert f"egress-guard: error: {named}: {expected}" in run.stderr
        assert cgroup_attachments(own.path) == []
