# SPDX-License-Identifier: Apache-2.0
"""Hostile workloads against a real agent (issue 13): bytes that are not
UTF-8 in argv, executable paths and cgroup names; a comment bomb beside a
binary; control clients that never finish; thousands of long argvs; an agent
killed -9 under the supervisor. Through all of it the agent keeps running
and a blocked port stays refused."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from guard.report.safejson import unescape_text
from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .conftest import port_block_policy, try_connect
from .test_pinned import pin_dir  # noqa: F401  (a private bpffs per test)

BLOCKED = 29811
POLICY = port_block_policy("hostile", BLOCKED)
# XMRig's config.json beside a binary, made a quadratic-regex bomb: 256 KB of
# unterminated comment openers (the agent took 61 s per exec on this before)
COMMENT_BOMB = b"{" + b"/* x" * (256 * 1024 // 4)


@pytest.fixture
def agent(tmp_path, guarded_cgroup):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with AgentProcess([str(guarded_cgroup.path)], policy=policy) as running:
        yield running


def execs_of(agent: AgentProcess, predicate, timeout: float = 10) -> dict:
    return agent.wait_for(lambda e: e.get("kind") == "exec" and predicate(e), timeout=timeout)


def alive_and_enforcing(agent: AgentProcess, cg: TempCgroup) -> None:
    assert agent.proc.poll() is None, agent._stderr_now()
    assert try_connect(cg, "127.0.0.1", BLOCKED) == "EPERM"


def test_bytes_that_are_not_utf8_are_escaped_and_never_stop_the_agent(agent, guarded_cgroup,
                                                                       tmp_path):
    # argv
    guarded_cgroup.run([b"/bin/true", b"\xff", b"a\\b\xfe"])
    event = execs_of(agent, lambda e: e["process"]["argv"][:1] == ["/bin/true"]
                     and len(e["process"]["argv"]) == 3)
    assert event["process"]["argv"][1:] == ["\\xff", "a\\\\b\\xfe"]
    assert "process.argv[1]" in event["escaped"] and "process.argv[2]" in event["escaped"]
    assert unescape_text(event["process"]["argv"][2]) == b"a\\b\xfe"
    # the executable's path
    odd = os.fsencode(tmp_path) + b"/tr\xffue"
    shutil.copy("/bin/true", odd)
    guarded_cgroup.run([odd])
    event = execs_of(agent, lambda e: (e["filename"] or "").endswith("tr\\xffue"))
    assert "filename" in event["escaped"]
    # a child cgroup's name
    child = os.fsencode(guarded_cgroup.path) + b"/kid\xff"
    os.mkdir(child)
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", "read x; exec /bin/true child-cgroup"],
                                stdin=subprocess.PIPE)
        with open(child + b"/cgroup.procs", "w") as procs:
            procs.write(str(proc.pid))
        proc.communicate(b"go\n", timeout=10)
        event = execs_of(agent, lambda e: e["process"]["argv"][-1:] == ["child-cgroup"])
        assert event["cgroup"]["path"].endswith("/kid\\xff")
        assert "cgroup.path" in event["escaped"]
    finally:
        os.rmdir(child)
    alive_and_enforcing(agent, guarded_cgroup)


def test_a_comment_bomb_beside_a_binary_costs_the_agent_no_time(agent, guarded_cgroup, tmp_path):
    home = tmp_path / "bin"
    home.mkdir()
    shutil.copy("/bin/true", home / "worker")
    (home / "config.json").write_bytes(COMMENT_BOMB)
    started = time.monotonic()
    for i in range(3):
        guarded_cgroup.run([str(home / "worker"), f"bomb-{i}"])
    execs_of(agent, lambda e: e["process"]["argv"][-1:] == ["bomb-2"], timeout=15)
    # 61 s per exec before; a few ms now (generous for a slow VM)
    assert time.monotonic() - started < 5
    alive_and_enforcing(agent, guarded_cgroup)


class SlowLoris(threading.Thread):
    """A root client of the control socket that sends a byte now and then
    and never finishes its request."""

    def __init__(self, path: str, every_s: float):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.every_s = every_s
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.wait(self.every_s):
                self.sock.send(b" ")
        except OSError:
            pass   # the agent cut it off: as it should

    def close(self) -> None:
        self.done.set()
        self.sock.close()


def test_silent_and_slow_control_clients_do_not_stall_the_loop(agent, guarded_cgroup):
    clients = [SlowLoris(agent.control_socket, every_s) for every_s in (0.5, 4.0, 3600)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)
        for i in range(5):
            started = time.monotonic()
            guarded_cgroup.run(["/bin/true", f"while-stalled-{i}"])
            execs_of(agent, lambda e, i=i: e["process"]["argv"][-1:] == [f"while-stalled-{i}"],
                     timeout=10)
            assert time.monotonic() - started < 2.0
            time.sleep(0.5)
        # a well-behaved client is answered meanwhile
        status = subprocess.run([sys.executable, "-m", "guard", "status", "--socket",
                                 agent.control_socket, "--json"],
                                capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parents[2])
        assert status.returncode == 0, status.stderr
        alive_and_enforcing(agent, guarded_cgroup)
    finally:
        for client in clients:
            client.close()


def test_many_long_argvs_keep_the_agent_within_its_memory_bound(agent, guarded_cgroup):
    # 1,365 short arguments (4 KB of argv) per exec: ~500 MB after 7,300 of
    # them before the table was bounded by bytes
    script = ("import os\n"
              "args = ['/bin/true'] + ['ab'] * 1365\n"
              "for i in range(8000):\n"
              "    pid = os.fork()\n"
              "    if pid == 0:\n"
              "        os.execv('/bin/true', args)\n"
              "    os.waitpid(pid, 0)\n")
    result = guarded_cgroup.python(script, timeout=300)
    assert result.returncode == 0, result.stderr
    guarded_cgroup.run(["/bin/true", "after-the-flood"])
    execs_of(agent, lambda e: e["process"]["argv"][-1:] == ["after-the-flood"], timeout=60)
    rss_kb = agent.rss_kb()
    print(f"agent RSS after 8,000 execs of 1,366 arguments: {rss_kb} kB")
    assert rss_kb < 150 * 1024, f"agent RSS {rss_kb} kB"
    alive_and_enforcing(agent, guarded_cgroup)


def test_a_supervised_agent_killed_9_keeps_enforcing_and_comes_back(tmp_path, guarded_cgroup,
                                                                    pin_dir):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    extra = ["--pin", "--pin-dir", str(pin_dir), "--supervise"]
    control = tmp_path / "run" / "agent.sock"     # its folder is the state directory too
    with AgentProcess([str(guarded_cgroup.path)], policy=policy, extra=extra,
                      control_socket=control) as agent:
        first = agent.ready["pid"]
        assert first != agent.proc.pid          # the agent is the supervisor's child
        os.kill(first, signal.SIGKILL)
        # the kernel enforces while no agent runs
        assert try_connect(guarded_cgroup, "127.0.0.1", BLOCKED) == "EPERM"
        restarting = agent.wait_for(lambda e: e.get("state") == "restarting", timeout=10)
        assert restarting["reason"] == "killed by SIGKILL" and restarting["restarts"] == 1
        ready = agent.wait_for(lambda e: e.get("state") == "ready" and e["pid"] != first,
                               timeout=30)
        assert ready["adopted"] is True
        assert ready["previous_agent"]["pid"] == first
        assert "without a word" in ready["previous_agent"]["how"]
        alive_and_enforcing(agent, guarded_cgroup)
        assert agent.stop() == 0
        stopped = [e for e in agent.events if e.get("state") == "stopped"]
        assert stopped and stopped[-1]["pinned"] is True
    # a clean stop leaves no "previous agent" to report
    with AgentProcess([str(guarded_cgroup.path)], policy=policy,
                      extra=["--pin", "--pin-dir", str(pin_dir)],
                      control_socket=control) as again:
        assert "previous_agent" not in again.ready
        again.stop()


SOAK_S = 20
SOAK_POLICY = port_block_policy("soak", BLOCKED, extra_spec="""\
  detections:
    sshReverseTunnel: block
""")
# each runs in the guarded cgroup until told to stop
HOSTILE_LOOPS = {
    "not-utf8": "os.execv('/bin/true', [b'/bin/true', b'\\xff' * 64, b'a\\\\b\\xfe'])",
    "long-argv": "os.execv('/bin/true', ['/bin/true'] + ['ab'] * 1365)",
    "comment-bomb": "os.execv(BOMB_BIN, [BOMB_BIN, '-c', DEEP])",
    "deep-config": "os.execv('/usr/bin/ssh', ['ssh', '-F', DEEP, '-o', 'BatchMode=yes', "
                   "'-R', '9000:localhost:22', '-o', 'ConnectTimeout=1', '127.0.0.1', '-p', '9'])",
}
LOOP = """
import os, sys, time
BOMB_BIN, DEEP, until = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
while time.monotonic() < until:
    pid = os.fork()
    if pid == 0:
        os.close(1); os.close(2)
        {body}
    os.waitpid(pid, 0)
"""


def test_soak_everything_at_once_and_enforcement_holds(tmp_path, guarded_cgroup):
    """All of the above at once for SOAK_S seconds, plus child cgroups with
    odd names coming and going: throughout, a blocked port stays refused and
    an `ssh -R` never gets its forward; after it, the agent runs, within its
    memory bound, and has not crashed."""
    from .netfixtures import end_tree, require_tools
    from .sshd import Sshd, free_port, wait_listening

    require_tools("sshd", "ssh")
    policy = tmp_path / "policy.yaml"
    policy.write_text(SOAK_POLICY)
    bomb = tmp_path / "bomb"
    bomb.mkdir()
    shutil.copy("/bin/true", bomb / "worker")
    (bomb / "config.json").write_bytes(COMMENT_BOMB)
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 100_000)
    with Sshd() as sshd, AgentProcess([str(guarded_cgroup.path)], policy=policy) as agent:
        loops = [guarded_cgroup.popen([sys.executable, "-c", LOOP.format(body=body),
                                       str(bomb / "worker"), str(deep), str(SOAK_S)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for body in HOSTILE_LOOPS.values()]
        clients = [SlowLoris(agent.control_socket, every_s) for every_s in (0.5, 4.0)]
        for client in clients:
            client.start()
        stop_churn = threading.Event()

        def churn() -> None:
            n = 0
            while not stop_churn.is_set():
                child = os.fsencode(guarded_cgroup.path) + b"/c\xff%d" % n
                os.mkdir(child)
                os.rmdir(child)
                n += 1
        churner = threading.Thread(target=churn, daemon=True)
        churner.start()
        try:
            checks = 0
            deadline = time.monotonic() + SOAK_S
            while time.monotonic() < deadline:
                assert try_connect(guarded_cgroup, "127.0.0.1", BLOCKED) == "EPERM"
                port = free_port()
                proc = guarded_cgroup.popen(sshd.client_argv("-N", "-R", f"{port}:127.0.0.1:9"),
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                try:
                    listened = wait_listening(port, timeout=2.0)
                finally:
                    end_tree(proc)
                if listened:
                    time.sleep(1)
                    seen = [e for e in agent.drain() if e.get("process", {}).get("pid") == proc.pid
                            or e.get("kind") in ("error", "loss")]
                    raise AssertionError(f"ssh -R {port} listened; events: {seen[-20:]}")
                checks += 1
            assert checks >= 3
        finally:
            stop_churn.set()
            churner.join(timeout=10)
            for client in clients:
                client.close()
            for proc in loops:
                end_tree(proc)
        alive_and_enforcing(agent, guarded_cgroup)
        agent.drain()
        assert not [e for e in agent.events if e.get("state") == "crashed"]
        blocked = [e for e in agent.events if e.get("kind") == "detection"
                   and e["detection"]["type"] == "ssh_reverse_tunnel" and e["action"] == "block"]
        assert len(blocked) >= checks
        rss_kb = agent.rss_kb()
        assert rss_kb < 150 * 1024, f"agent RSS {rss_kb} kB"
