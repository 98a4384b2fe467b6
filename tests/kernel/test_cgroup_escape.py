# SPDX-License-Identifier: Apache-2.0
"""A guarded process that leaves its guarded cgroup is killed, with an
`escape` event (bpf/escape.bpf.c), however it leaves: its pid written into
a sibling's cgroup.procs by itself or by another process, one of its
threads written into a sibling's cgroup.threads, a child cloned into a
sibling with clone3 CLONE_INTO_CGROUP; also when it was running before the
agent guarded its cgroup. A move into a child of the guarded cgroup (a
nested container) or into another cgroup guarded by the same policy keeps
it guarded and alive.

Every cgroup here is a temporary child of a temporary cgroup of the test's
own (never the root); the escape destinations are its siblings.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from guard.demo.sandbox import TempCgroup, end_process

from .agentproc import AgentProcess
from .conftest import port_block_policy

BLOCKED_PORT = 39417

# Waits for a line on stdin, then writes an id into a cgroup file: its own
# pid ("self"), or a new thread's own tid ("thread"); then reports whether
# it still runs, and whether a connect to the blocked port is refused.
ESCAPER = r"""
import errno, os, socket, sys, threading, time
target, what = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()
if what == "thread":
    def move():
        with open(target, "w") as fh:
            fh.write(str(threading.get_native_id()))
        print("moved", flush=True)
    thread = threading.Thread(target=move)
    thread.start()
    thread.join()
elif what == "self":
    with open(target, "w") as fh:
        fh.write(str(os.getpid()))
print("alive", flush=True)
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", int(sys.argv[3])))
    print("connected", flush=True)
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
time.sleep(0.3)
print("done", flush=True)
"""

# clone3(CLONE_INTO_CGROUP) into the cgroup directory argv[1]; the child
# writes a line and exits; the parent reports how the child ended.
CLONE_INTO = r"""
import ctypes, os, struct, sys
CLONE_INTO_CGROUP, SIGCHLD, SYS_clone3 = 0x200000000, 17, 435
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
say = lambda *words: os.write(1, (" ".join(map(str, words)) + "\n").encode())  # one write a line
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
# struct clone_args (v2): flags, pidfd, child_tid, parent_tid, exit_signal,
# stack, stack_size, tls, set_tid, set_tid_size, cgroup
args = ctypes.create_string_buffer(struct.pack("=11Q", CLONE_INTO_CGROUP, 0, 0, 0, SIGCHLD,
                                               0, 0, 0, 0, 0, fd), 88)
pid = libc.syscall(SYS_clone3, args, ctypes.c_size_t(88))
if pid == 0:
    say("child ran")
    os._exit(0)
if pid < 0:
    say("clone3", ctypes.get_errno())
    sys.exit(2)
say("child", pid)
_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    say("signal", os.WTERMSIG(status))
else:
    say("exit", os.WEXITSTATUS(status))
"""


class Tree:
    """parent/ guarded (guarded/child inside), other (guarded by the same
    policy), sibling (not guarded); domain/ (a threaded domain) with
    threads-guarded and threads-sibling, threaded cgroups."""

    def __init__(self):
        self.parent = TempCgroup("egress-guard-escape")
        self.made: list[TempCgroup] = []

    def child(self, parent: TempCgroup, name: str) -> TempCgroup:
        cg = TempCgroup(parent=parent.path, name=name)
        cg.__enter__()
        self.made.append(cg)
        return cg

    def __enter__(self) -> "Tree":
        self.parent.__enter__()
        try:
            self.guarded = self.child(self.parent, "guarded")
            self.nested = self.child(self.guarded, "child")
            self.other = self.child(self.parent, "other")
            self.sibling = self.child(self.parent, "sibling")
            self.domain = self.child(self.parent, "domain")
            self.threads_guarded = self.child(self.domain, "threads-guarded")
            self.threads_sibling = self.child(self.domain, "threads-sibling")
            for cg in (self.threads_guarded, self.threads_sibling):
                (cg.path / "cgroup.type").write_text("threaded")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            for cg in reversed(self.made):
                cg.close()
        finally:
            self.made.clear()
            self.parent.close()


@pytest.fixture(scope="module")
def tree():
    with Tree() as made:
        yield made


@pytest.fixture(scope="module")
def agent(tree, tmp_path_factory):
    policy = tmp_path_factory.mktemp("escape") / "policy.yaml"
    policy.write_text(port_block_policy("escape", BLOCKED_PORT))
    with AgentProcess([str(tree.guarded.path), str(tree.other.path),
                       str(tree.threads_guarded.path)], policy=policy) as running:
        yield running


def start(cg: TempCgroup, target, what: str) -> subprocess.Popen:
    proc = cg.popen([sys.executable, "-c", ESCAPER, str(target), what, str(BLOCKED_PORT)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)
    assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    return proc


def go(proc: subprocess.Popen) -> tuple[int, str]:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, _err = proc.communicate(timeout=20)
    return proc.returncode, out


def escape_of(agent: AgentProcess, pid: int) -> dict:
    return agent.wait_for(lambda e: e.get("kind") == "escape" and e["process"]["pid"] == pid)


def no_escape_of(agent: AgentProcess, pid: int) -> None:
    time.sleep(0.5)   # the agent reads the ring every few milliseconds
    assert [e for e in agent.drain()
            if e.get("kind") == "escape" and e["process"]["pid"] == pid] == []


def test_a_process_that_writes_itself_into_a_sibling_is_killed_there(agent, tree):
    proc = start(tree.guarded, tree.sibling.path / "cgroup.procs", "self")
    code, out = go(proc)
    assert code == -9 and "alive" not in out, out   # never ran again
    event = escape_of(agent, proc.pid)
    assert event["action"] == "kill" and event["cgroup"]["id"] == tree.guarded.id
    assert event["escape"]["how"] == "cgroup.procs"
    assert event["escape"]["to"] == {"id": tree.sibling.id, "path": tree.sibling.cgroup.relative,
                                     "guarded": False}
    assert event["escape"]["mover"]["pid"] == proc.pid
    assert event["escape"]["killed_by"] == "kernel"


def test_a_process_written_out_by_another_process_is_killed(agent, tree):
    proc = start(tree.guarded, "-", "wait")
    try:
        # the test process (not guarded) is the writer: it is not harmed
        (tree.sibling.path / "cgroup.procs").write_text(str(proc.pid))
        code = proc.wait(timeout=10)
        out = proc.stdout.read()
    finally:
        end_process(proc)
    assert code == -9 and "alive" not in out, out
    event = escape_of(agent, proc.pid)
    assert event["escape"]["how"] == "cgroup.procs"
    assert event["escape"]["mover"]["pid"] == os.getpid()
    assert event["escape"]["to"]["id"] == tree.sibling.id


def test_a_thread_written_into_a_sibling_cgroup_threads_kills_its_process(agent, tree):
    proc = start(tree.threads_guarded, tree.threads_sibling.path / "cgroup.threads", "thread")
    code, out = go(proc)
    assert code == -9 and "moved" not in out and "alive" not in out, out
    event = escape_of(agent, proc.pid)
    assert event["escape"]["how"] == "cgroup.threads"
    assert event["escape"]["tid"] != proc.pid          # the thread, not the leader
    assert event["escape"]["to"]["id"] == tree.threads_sibling.id
    assert event["cgroup"]["id"] == tree.threads_guarded.id


def test_a_child_cloned_into_a_sibling_is_killed_before_it_runs(agent, tree):
    result = tree.guarded.python(CLONE_INTO, str(tree.sibling.path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert "child ran" not in lines and "signal 9" in lines, result.stdout
    [child] = [int(line.split()[1]) for line in lines if line.startswith("child ")]
    event = escape_of(agent, child)
    assert event["escape"]["how"] == "clone_into_cgroup"
    assert event["escape"]["to"]["id"] == tree.sibling.id
    assert event["escape"]["mover"]["pid"] != child      # its parent cloned it
    assert event["escape"]["killed_by"] == "kernel"


def test_a_move_into_a_child_of_the_guarded_cgroup_stays_guarded(agent, tree):
    proc = start(tree.guarded, tree.nested.path / "cgroup.procs", "self")
    code, out = go(proc)
    assert code == 0 and out.split() == ["alive", "EPERM", "done"], out  # still judged
    no_escape_of(agent, proc.pid)


def test_a_clone_into_a_child_of_the_guarded_cgroup_runs(agent, tree):
    result = tree.guarded.python(CLONE_INTO, str(tree.nested.path))
    assert result.returncode == 0, result.stderr
    assert "child ran" in result.stdout.split("\n") and "exit 0" in result.stdout, result.stdout
    children = [line.split()[1] for line in result.stdout.split("\n")
                if line.startswith("child ") and line != "child ran"]
    assert len(children) == 1 and children[0].isdigit(), result.stdout
    child = int(children[0])
    no_escape_of(agent, child)


def test_a_move_into_a_cgroup_of_the_same_policy_stays_guarded(agent, tree):
    proc = start(tree.guarded, tree.other.path / "cgroup.procs", "self")
    code, out = go(proc)
    assert code == 0 and out.split() == ["alive", "EPERM", "done"], out
    no_escape_of(agent, proc.pid)


def test_a_process_running_before_the_agent_is_killed_when_it_leaves(tree, tmp_path):
    """Marked by the agent's adoption iterator: it neither execs nor forks
    nor moves in after the cgroup is guarded."""
    late = TempCgroup(parent=tree.parent.path, name="late")
    late.__enter__()
    try:
        proc = start(late, tree.sibling.path / "cgroup.procs", "self")
        policy = tmp_path / "policy.yaml"
        policy.write_text(port_block_policy("late", BLOCKED_PORT))
        with AgentProcess([str(late.path)], policy=policy) as agent:
            code, out = go(proc)
            assert code == -9 and "alive" not in out, out
            assert escape_of(agent, proc.pid)["escape"]["how"] == "cgroup.procs"
    finally:
        late.close()


def test_audit_mode_reports_the_escape_and_lets_the_process_go(tree, tmp_path):
    audited = TempCgroup(parent=tree.parent.path, name="audited")
    audited.__enter__()
    try:
        policy = tmp_path / "audit.yaml"
        policy.write_text(port_block_policy("audited", BLOCKED_PORT,
                                            extra_spec="  mode: audit\n"))
        with AgentProcess([str(audited.path)], policy=policy) as agent:
            proc = start(audited, tree.sibling.path / "cgroup.procs", "self")
            code, out = go(proc)
            assert code == 0 and "alive" in out.split(), out   # not killed: reported
            event = escape_of(agent, proc.pid)
            assert (event["action"], event.get("would")) == ("log", "kill")
            assert event["escape"]["killed_by"] is None
    finally:
        audited.close()
