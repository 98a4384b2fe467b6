# SPDX-License-Identifier: Apache-2.0
"""Exec events, kill at exec, and raw/packet sockets, on the real kernel."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time

import pytest

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess

POLICY = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: kernel-exec
spec:
  exec:
    - name: no-netcat
      action: kill
      match:
        names: [nc, ncat]
    - name: watch-env
      action: log
      match:
        paths: [/usr/bin/env]
  sockets:
    raw: {raw}
"""

RAW_SOCKET = """
import errno, socket, sys
kinds = {'raw4': (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
         'packet': (socket.AF_PACKET, socket.SOCK_RAW, 0),
         'tcp': (socket.AF_INET, socket.SOCK_STREAM, 0)}
try:
    socket.socket(*kinds[sys.argv[1]]).close()
    print('ok')
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"""


@pytest.fixture(scope="module", params=["deny"])
def setup(request, tmp_path_factory):
    policy_path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy_path.write_text(POLICY.format(raw=request.param))
    with TempCgroup("egress-guard-test") as guarded, TempCgroup("egress-guard-sibling") as sibling:
        with AgentProcess([guarded.cgroup.relative], policy=policy_path) as agent:
            yield guarded, sibling, agent, tmp_path_factory.mktemp("bin")


def exec_event(agent, guarded, predicate):
    return agent.wait_for(lambda e: e["kind"] == "exec" and e["cgroup"]["id"] == guarded.id
                          and predicate(e))


def test_exec_event_has_the_exact_argv(setup):
    guarded, _, agent, _ = setup
    argv = ["/bin/echo", "hello world", "", "--flag=ünïcode", "a\tb"]
    result = guarded.run(argv)
    assert result.returncode == 0
    event = exec_event(agent, guarded, lambda e: e["process"]["argv"] == argv)
    assert event["action"] == "log" and event["rule"] is None
    assert event["process"]["argv_truncated"] is False
    assert event["process"]["exe"] in ("/bin/echo", "/usr/bin/echo")
    assert event["filename"] == "/bin/echo"
    assert event["process"]["comm"] == "echo"
    assert event["process"]["pid"] > 0 and event["process"]["ppid"] > 0
    assert event["process"]["uid"] == 0


def test_long_argv_is_cut_and_flagged(setup):
    guarded, _, agent, _ = setup
    argv = ["/bin/true"] + [f"argument-{i:04d}-padding" for i in range(300)]
    assert guarded.run(argv).returncode == 0
    event = exec_event(agent, guarded, lambda e: e["process"]["argv"][:2] == argv[:2])
    assert event["process"]["argv_truncated"] is True
    got = event["process"]["argv"]
    assert 1 < len(got) < len(argv)
    assert got[:-1] == argv[:len(got) - 1]  # whole arguments up to the cut
    assert argv[len(got) - 1].startswith(got[-1])


def test_exec_rule_kills_before_the_program_prints(setup):
    guarded, _, agent, bindir = setup
    fake_nc = bindir / "nc"
    shutil.copy("/bin/echo", fake_nc)
    result = guarded.run([str(fake_nc), "must-not-print"])
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == b""
    event = exec_event(agent, guarded, lambda e: e["filename"] == str(fake_nc))
    assert event["action"] == "kill" and event["rule"] == "no-netcat"


def test_exec_rule_matches_the_invoked_name_of_a_symlink(setup):
    guarded, _, agent, bindir = setup
    link = bindir / "ncat"
    link.symlink_to("/bin/echo")
    result = guarded.run([str(link), "must-not-print"])
    assert result.returncode == -signal.SIGKILL and result.stdout == b""
    event = exec_event(agent, guarded, lambda e: e["filename"] == str(link))
    assert event["process"]["exe"].endswith("/echo")  # the file really executed
    assert event["rule"] == "no-netcat"


def test_exec_log_rule_by_path(setup):
    guarded, _, agent, _ = setup
    assert guarded.run(["/usr/bin/env", "true"]).returncode == 0
    event = exec_event(agent, guarded, lambda e: e["process"]["argv"] == ["/usr/bin/env", "true"])
    assert event["action"] == "log" and event["rule"] == "watch-env"


def test_unguarded_sibling_is_not_reported_or_killed(setup):
    guarded, sibling, agent, bindir = setup
    fake_nc = bindir / "nc"
    if not fake_nc.exists():
        shutil.copy("/bin/echo", fake_nc)
    result = sibling.run([str(fake_nc), "sibling-prints"])
    assert result.returncode == 0 and result.stdout == b"sibling-prints\n"
    guarded.run(["/bin/true", "marker-after-sibling"])
    exec_event(agent, guarded, lambda e: e["process"]["argv"] == ["/bin/true", "marker-after-sibling"])
    assert not [e for e in agent.events if e.get("cgroup", {}).get("id") == sibling.id]


def test_raw_inet_sockets_are_refused(setup):
    guarded, sibling, agent, _ = setup
    assert guarded.python(RAW_SOCKET, "raw4").stdout.strip() == "EPERM"
    assert sibling.python(RAW_SOCKET, "raw4").stdout.strip() == "ok"
    assert guarded.python(RAW_SOCKET, "tcp").stdout.strip() == "ok"
    event = agent.wait_for(lambda e: e["kind"] == "socket" and e["socket"]["family"] == "inet")
    assert event["action"] == "block" and event["socket"]["type"] == "raw"
    assert event["cgroup"]["id"] == guarded.id


HOLD_PACKET_SOCKET = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x88B5))
print('open', flush=True)
time.sleep(float(sys.argv[1]))
print('still running', flush=True)
"""


def test_packet_sockets_are_found_by_the_sweep_and_their_owner_killed(setup):
    # cgroup/sock_create never sees AF_PACKET (the kernel runs it for inet
    # sockets only); without BPF-LSM and without --syscall-hook (sys_enter,
    # a price every process on the host pays) the agent's sweep finds it
    guarded, sibling, agent, _ = setup
    started = time.monotonic()
    result = guarded.python(HOLD_PACKET_SOCKET, "10")
    elapsed = time.monotonic() - started
    assert result.returncode == -signal.SIGKILL and result.stdout == "open\n", result
    assert elapsed < 5, elapsed      # a sweep every 0.5 s; not the 10 s it would sleep
    assert sibling.python(RAW_SOCKET, "packet").stdout.strip() == "ok"
    event = agent.wait_for(lambda e: e["kind"] == "socket" and e["socket"]["family"] == "packet")
    assert event["action"] == "kill" and event["found"] == "sweep"
    # the protocol as socket() was given it (network byte order), as the kernel reports it
    assert event["socket"]["type"] == "dgram" and event["socket"]["protocol"] == socket.htons(0x88B5)
    assert event["cgroup"]["id"] == guarded.id
    assert event["process"]["comm"].startswith("python")


def test_with_the_syscall_hook_packet_sockets_kill_the_caller_at_the_call(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(raw="deny"))
    before = _syscall_progs()
    with TempCgroup("egress-guard-test") as guarded, TempCgroup("egress-guard-sibling") as sibling:
        with AgentProcess([str(guarded.path)], policy=policy, extra=["--syscall-hook"]) as agent:
            assert "killed at socket()" in agent.ready["packet_sockets"]
            result = guarded.python(RAW_SOCKET, "packet")
            assert result.returncode == -signal.SIGKILL and result.stdout == ""
            assert sibling.python(RAW_SOCKET, "packet").stdout.strip() == "ok"
            # the kernel's verdict at the call (a sweep may also meet the
            # socket in the moment before the killed process is gone)
            event = agent.wait_for(lambda e: e["kind"] == "socket" and "found" not in e
                                   and e["socket"]["family"] == "packet")
            assert event["action"] == "kill" and event["socket"]["type"] == "raw"
            assert event["cgroup"]["id"] == guarded.id
            hook = (_syscall_progs() - before) & {
                link.get("prog_id") for link in _bpf_links() if link.get("tp_name") == "sys_enter"}
            assert hook     # this agent's program, on sys_enter
        # the agent gone, nothing of the hook stays: an unguarded host pays nothing
        # (a program is freed after an RCU grace period: give it a moment)
        deadline = time.monotonic() + 5
        while hook & {p["id"] for p in _bpf_progs()} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not hook & {p["id"] for p in _bpf_progs()}


def test_without_the_syscall_hook_nothing_runs_on_sys_enter(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(raw="deny"))
    before = _syscall_progs()
    with TempCgroup("egress-guard-test") as guarded:
        with AgentProcess([str(guarded.path)], policy=policy) as agent:
            assert "sweep" in agent.ready["packet_sockets"]
            loaded = _syscall_progs() - before     # this agent's, loaded but not attached
            assert loaded
            attached = {link.get("prog_id") for link in _bpf_links()}
            assert not loaded & attached, (loaded, attached)


def _syscall_progs() -> set[int]:
    return {p["id"] for p in _bpf_progs() if p.get("name") == "guard_socket_syscall"}


def _bpf_progs() -> list[dict]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def _bpf_links() -> list[dict]:
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def test_raw_sockets_allowed_when_the_policy_allows(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(raw="allow"))
    with TempCgroup("egress-guard-test") as guarded:
        with AgentProcess([str(guarded.path)], policy=policy):
            assert guarded.python(RAW_SOCKET, "raw4").stdout.strip() == "ok"
            assert guarded.python(RAW_SOCKET, "packet").stdout.strip() == "ok"
