# SPDX-License-Identifier: Apache-2.0
"""Folded connects on the real kernel (bpf/lib/fold.h, guard/agent/folds.py;
issue 16, point 2): a process's logged connects to one destination within a
fold window are one event and, when the window ends, one more with
`repeats`; every connect event stands for 1 + repeats connects, and the
total is exact. Different destinations and different processes are not
folded together; a refused connect is always its own event; with
--fold-window-ms 0 every connect is an event; a window no agent flushed is
reported by the kernel itself once stale."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess

# loopback ports nothing listens on (a refused connect is still judged and
# reported at connect()), below the ephemeral range
LOGGED, OTHER, BLOCKED = 29861, 29862, 29863

POLICY = f"""\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: fold
spec:
  defaultAction: log
  egress:
    - name: blocked-port
      action: block
      to:
        - cidr: 127.0.0.0/8
          ports: [{BLOCKED}]
"""

#: connects argv[2] times to each port of argv[1] (comma-separated), after a
#: line on stdin when argv[3] is "wait"; then, argv[4] seconds later (unless
#: 0), once more to the first port. Prints its pid first, then the count of
#: each outcome's errno name (or ok).
CLIENT = """
import errno, os, socket, sys, time
print(os.getpid(), flush=True)
if sys.argv[3] == "wait":
    sys.stdin.readline()
seen = {}
def connect(port):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        what = "ok"
    except OSError as e:
        what = errno.errorcode.get(e.errno, str(e.errno))
    s.close()
    seen[what] = seen.get(what, 0) + 1
ports = [int(p) for p in sys.argv[1].split(",")]
for port in ports:
    for _ in range(int(sys.argv[2])):
        connect(port)
if float(sys.argv[4]):
    time.sleep(float(sys.argv[4]))
    connect(ports[0])
print(" ".join(f"{k}={v}" for k, v in sorted(seen.items())), flush=True)
"""


def start_client(cg: TempCgroup, ports: list[int], count: int, wait: bool = False,
                 later_s: float = 0):
    proc = cg.popen([sys.executable, "-c", CLIENT, ",".join(map(str, ports)), str(count),
                     "wait" if wait else "go", str(later_s)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def run_client(cg: TempCgroup, ports: list[int], count: int) -> tuple[int, str]:
    """(pid, outcomes) of a client that ran to its end."""
    proc, pid = start_client(cg, ports, count)
    # read through the same buffered file readline() used: communicate()
    # would read the raw pipe and lose a line readline() had buffered
    proc.stdin.close()
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == 0
    return pid, out.strip()


def connects(agent: AgentProcess, cg: TempCgroup, pid: int, port: int) -> list[dict]:
    return [e for e in agent.drain() if e.get("kind") == "connect"
            and e["cgroup"]["id"] == cg.id and e["process"]["pid"] == pid
            and e["dst"]["port"] == port]


def settle(agent: AgentProcess, cg: TempCgroup, pid: int, port: int, total: int,
           timeout: float = 10) -> list[dict]:
    """The events of pid's connects to port once they report `total`
    connects (or the timeout), and a little after, so an extra would show."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reported(connects(agent, cg, pid, port)) >= total:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    return connects(agent, cg, pid, port)


def reported(events: list[dict]) -> int:
    """The rule for consumers: every connect event stands for 1 + repeats connects."""
    return len(events) + sum(e.get("repeats", 0) for e in events)


@pytest.fixture(scope="module")
def folding(tmp_path_factory):
    """An agent with the default window (1000 ms) guarding one cgroup."""
    path = tmp_path_factory.mktemp("fold") / "policy.yaml"
    path.write_text(POLICY)
    with TempCgroup("egress-guard-fold") as cg:
        with AgentProcess([str(cg.path)], policy=path) as agent:
            yield cg, agent, path


def test_a_storm_to_one_destination_is_one_event_and_one_with_repeats(folding):
    cg, agent, _ = folding
    assert agent.ready["fold"]["window_ms"] == 1000
    pid, outcomes = run_client(cg, [LOGGED], 25)
    assert outcomes == "ECONNREFUSED=25"
    events = settle(agent, cg, pid, LOGGED, 25)
    assert reported(events) == 25, events
    first, flushed = events
    assert "repeats" not in first and "window_ms" not in first
    assert (flushed["repeats"], flushed["window_ms"]) == (23, 1000)
    for field in ("action", "rule", "policy", "process", "cgroup", "dst", "proto", "hook"):
        assert flushed[field] == first[field], field
    assert first["action"] == "log" and first["rule"] is None


def test_destinations_and_processes_are_folded_apart(folding):
    cg, agent, _ = folding
    pid, _ = run_client(cg, [LOGGED, OTHER], 5)
    other_pid, _ = run_client(cg, [LOGGED], 5)
    for who, port in ((pid, LOGGED), (pid, OTHER), (other_pid, LOGGED)):
        events = settle(agent, cg, who, port, 5)
        assert reported(events) == 5 and len(events) == 2, (who, port, events)
        assert events[1]["repeats"] == 3


def test_a_refused_connect_is_never_folded(folding):
    cg, agent, _ = folding
    pid, outcomes = run_client(cg, [BLOCKED], 10)
    assert outcomes == "EPERM=10"
    events = settle(agent, cg, pid, BLOCKED, 10)
    assert len(events) == 10 and not any("repeats" in e for e in events)
    assert {(e["action"], e["rule"]) for e in events} == {("block", "blocked-port")}


def test_fold_window_0_makes_every_connect_an_event(folding):
    _, _, path = folding
    with TempCgroup("egress-guard-nofold") as cg:
        with AgentProcess([str(cg.path)], policy=path,
                          extra=["--fold-window-ms", "0"]) as agent:
            assert agent.ready["fold"]["window_ms"] == 0
            pid, _ = run_client(cg, [LOGGED], 12)
            time.sleep(1.5)     # past a window, were there one
            events = settle(agent, cg, pid, LOGGED, 12)
            assert len(events) == 12 and not any("repeats" in e for e in events)


def test_a_window_no_agent_flushed_is_reported_by_the_kernel_once_stale(folding):
    """The agent stopped (SIGSTOP) reads nothing and flushes nothing: the
    connect after 4 windows reopens the window and carries the count."""
    _, _, path = folding
    with TempCgroup("egress-guard-stale") as cg:
        with AgentProcess([str(cg.path)], policy=path,
                          extra=["--fold-window-ms", "200"]) as agent:
            # 5 connects, then one more after 4 windows of 200 ms and more
            client, pid = start_client(cg, [LOGGED], 5, wait=True, later_s=1.2)
            agent.wait_for(lambda e: e.get("kind") == "exec" and e["process"]["pid"] == pid)
            time.sleep(0.3)                  # its exec judged
            agent.proc.send_signal(signal.SIGSTOP)
            try:
                out, _ = client.communicate("go\n", timeout=30)
                assert out.strip() == "ECONNREFUSED=6"
            finally:
                agent.proc.send_signal(signal.SIGCONT)
            events = settle(agent, cg, pid, LOGGED, 6)
            # the first connect's event, then the sixth's with the 4 the kernel counted
            assert [e.get("repeats") for e in events] == [None, 4], events
            assert reported(events) == 6
