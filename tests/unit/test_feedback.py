# SPDX-License-Identifier: Apache-2.0
"""Reasons for the sandbox without a kernel: the reason line of every kind
(worded from the event, hostile bytes made safe), the stderr writer against
real processes' stderr (pipes, files with and without O_APPEND, /dev/null,
a full pipe, a process gone), its rate limit, the reasons files (bounded,
rotated, never following a link), and the agent's feedback on the fake
kernel (only refusals, only when the policy asks, never in audit)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from types import SimpleNamespace

import orjson
import pytest

from guard.kernel.abi import Action
from guard.report import reasons
from guard.report.reasons import (LINE_BYTES, REASON_FILE, ReasonsFiles, reason_key, reason_line,
                                  refused, workload_dir_name)
from guard.respond.feedback import StderrFeedback, writable_kind

from ..fakekernel import fake_agent

CONNECT = {"kind": "connect", "action": "block", "rule": "no-pools",
           "policy": {"name": "sandbox", "generation": 1},
           "process": {"pid": 42, "ppid": 1, "comm": "curl"}, "cgroup": {"id": 7, "path": "/w"},
           "proto": "tcp", "family": "ipv4", "hook": "connect",
           "dst": {"ip": "198.18.0.7", "port": 3333, "name": "pool.example"}}


# -- the line -------------------------------------------------------------------------

def test_a_refused_connect_reads_as_the_issue_says():
    assert reason_line(CONNECT) == ('egress-guard: blocked tcp connect to 198.18.0.7:3333 '
                                    '(pool.example) by rule "no-pools" of policy "sandbox"')


@pytest.mark.parametrize("change, line", [
    ({"rule": None}, 'egress-guard: blocked tcp connect to 198.18.0.7:3333 (pool.example) '
                     'by the default action of policy "sandbox"'),
    ({"rule": "detection"}, 'egress-guard: blocked tcp connect to 198.18.0.7:3333 '
                            '(pool.example) because a detection judged the process, '
                            'policy "sandbox"'),
    ({"proto": "udp", "hook": "sendmsg", "dst": {"ip": "2001:db8::1", "port": 53}},
     'egress-guard: blocked udp send to [2001:db8::1]:53 by rule "no-pools" of policy "sandbox"'),
    ({"hook": "bind", "dst": {"ip": "0.0.0.0", "port": 53}},
     "egress-guard: blocked tcp bind to 0.0.0.0:53 (a trusted resolver's port) of "
     'policy "sandbox"'),
])
def test_every_connect_hook_and_decider_has_its_words(change, line):
    assert reason_line({**CONNECT, **change}) == line


def test_exec_socket_detection_and_dns_lines():
    base = {"policy": {"name": "sandbox"}, "process": {"pid": 5, "ppid": 1, "comm": "nc",
                                                       "exe": "/usr/bin/nc.openbsd"}}
    assert reason_line({**base, "kind": "exec", "action": "kill", "rule": "no-netcat",
                        "filename": "/usr/bin/nc"}) == (
        'egress-guard: killed exec of /usr/bin/nc.openbsd by rule "no-netcat" of policy "sandbox"')
    assert reason_line({**base, "kind": "socket", "action": "block",
                        "socket": {"family": "inet", "type": "raw", "protocol": 1}}) == (
        'egress-guard: blocked inet raw socket by sockets.raw: deny of policy "sandbox"')
    stratum = {**base, "kind": "detection", "action": "block",
               "dst": {"ip": "198.18.0.7", "port": 443, "proto": "tcp"},
               "detection": {"type": "stratum", "dialect": "cryptonote", "confidence": "high",
                             "evidence": {"methods": ["login"]}}}
    assert reason_line(stratum) == ('egress-guard: blocked tcp flow to 198.18.0.7:443 of policy '
                                    '"sandbox": Stratum mining login (cryptonote)')
    ssh = {**base, "kind": "detection", "action": "kill", "dst": None,
           "process": {"pid": 5, "ppid": 1, "exe": "/usr/bin/ssh"},
           "detection": {"type": "ssh_reverse_tunnel", "dialect": "ssh", "confidence": "high",
                         "evidence": {"forward": "9000:localhost:22", "origin": "argv"}}}
    assert reason_line(ssh) == ('egress-guard: killed /usr/bin/ssh of policy "sandbox": '
                                'ssh remote forward 9000:localhost:22')
    query = {**base, "kind": "dns", "action": "block", "direction": "query",
             "resolver": {"ip": "10.0.0.53", "port": 53},
             "dns": {"name": "x.tunnel.example", "type": "TXT"}}
    assert reason_line(query) == ('egress-guard: blocked dns query for x.tunnel.example (TXT) '
                                  'to 10.0.0.53:53: no name rule of policy "sandbox" allows it')


def test_only_refusals_carried_out_have_a_line():
    assert refused(CONNECT)
    for event in ({**CONNECT, "action": "log"}, {**CONNECT, "action": "allow"},
                  {**CONNECT, "action": "log", "would": "block"},
                  {**CONNECT, "action": "block", "would": "block"},
                  {"kind": "dns", "action": "log", "direction": "answer"},
                  {"kind": "agent", "state": "ready"}, {"kind": "loss", "action": "kill"}):
        assert reason_line(event) is None, event


def test_hostile_bytes_never_reach_the_terminal_and_the_line_is_bounded():
    evil = {**CONNECT, "dst": {"ip": "198.18.0.7", "port": 1,
                               "name": "a\x1b]0;owned\x07\u202e.example" + "x" * 5000},
            "rule": "r\nfake: line", "policy": {"name": "p\r"}}
    line = reason_line(evil)
    assert len(line.encode()) < LINE_BYTES
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c == "\u202e" for c in line)
    assert "\\x1b" in line and "\\u202e" in line
    long_exe = {"kind": "exec", "action": "kill", "rule": "x", "policy": {"name": "p"},
                "process": {"exe": "/" + "é" * 3000}}
    assert len(reason_line(long_exe).encode()) < LINE_BYTES
    # non-strings where strings belong: words are left out, nothing raises
    weird = {**CONNECT, "dst": {"ip": 7, "port": "x", "name": ["a"]}, "policy": None,
             "rule": 3, "proto": None}
    assert reason_line(weird).startswith("egress-guard: blocked connect to ?")


def test_the_rate_key_is_the_destination_or_the_program():
    assert reason_key(CONNECT) == ("connect", "tcp", "198.18.0.7", 3333)
    assert reason_key({**CONNECT, "dst": {"ip": "198.18.0.7", "port": 22}}) != reason_key(CONNECT)
    assert reason_key({"kind": "exec", "rule": "no-netcat"}) == ("exec", "no-netcat")


# -- the stderr writer against real processes ------------------------------------------

def _holder(**popen):
    """A process that sleeps holding the stderr it was given."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, **popen)


@pytest.fixture
def holders():
    made: list[subprocess.Popen] = []

    def start(**popen):
        proc = _holder(**popen)
        made.append(proc)
        return proc
    yield start
    for proc in made:
        proc.kill()
        proc.wait()


def test_a_pipe_gets_the_line(holders):
    read_end, write_end = os.pipe()
    try:
        proc = holders(stderr=write_end)
        writer = StderrFeedback()
        assert writer.tell(proc.pid, 0, None, "egress-guard: why") == "written"
        os.set_blocking(read_end, False)
        assert os.read(read_end, 4096) == b"egress-guard: why\n"
        # the process's own description keeps its flags (ours were O_NONBLOCK)
        assert os.get_blocking(write_end)
        assert writer.counters.by_kind == {"pipe": 1}
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_file_without_append_is_refused_and_one_with_append_written(holders, tmp_path):
    plain, appended = tmp_path / "plain.log", tmp_path / "append.log"
    plain.write_bytes(b"data\n")
    appended.write_bytes(b"data\n")
    with open(plain, "r+b") as at_offset, open(appended, "ab") as at_end:
        writer = StderrFeedback()
        assert writer.tell(holders(stderr=at_offset).pid, 0, None, "why") == "refused"
        assert writer.tell(holders(stderr=at_end).pid, 0, None, "why") == "written"
    assert plain.read_bytes() == b"data\n"
    assert appended.read_bytes() == b"data\nwhy\n"
    assert (writer.counters.refused, writer.counters.written) == (1, 1)


def test_dev_null_and_a_directory_are_never_touched(holders):
    writer = StderrFeedback()
    assert writer.tell(holders(stderr=subprocess.DEVNULL).pid, 0, None, "why") == "refused"
    assert writer.counters.refused == 1


def test_a_full_pipe_drops_the_line_at_once(holders):
    read_end, write_end = os.pipe()
    try:
        proc = holders(stderr=write_end)
        os.set_blocking(write_end, False)
        try:
            while True:
                os.write(write_end, b"x" * 65536)
        except BlockingIOError:
            pass
        os.set_blocking(write_end, True)
        writer = StderrFeedback()
        started = time.monotonic()
        assert writer.tell(proc.pid, 0, None, "why") == "dropped"
        assert time.monotonic() - started < 0.5
        assert writer.counters.dropped == 1
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_pipe_nobody_reads_is_dropped_not_signalled(holders):
    read_end, write_end = os.pipe()
    proc = holders(stderr=write_end)
    os.close(read_end)
    os.close(write_end)
    assert StderrFeedback().tell(proc.pid, 0, None, "why") == "dropped"


def test_a_process_gone_is_told_through_its_parent_in_the_same_cgroup(holders):
    read_end, write_end = os.pipe()
    try:
        parent = holders(stderr=write_end)
        gone = subprocess.Popen(["true"])
        gone.wait()
        writer = StderrFeedback()
        assert writer.tell(gone.pid, parent.pid, None, "why") == "written"
        os.set_blocking(read_end, False)
        assert os.read(read_end, 100) == b"why\n"
        assert writer.tell(gone.pid, 0, None, "why") == "gone"
        assert writer.counters.gone == 1
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_process_in_another_cgroup_than_the_event_said_is_not_told(holders):
    read_end, write_end = os.pipe()
    try:
        proc = holders(stderr=write_end)
        assert StderrFeedback().tell(proc.pid, 0, "/not/its/cgroup", "why") == "gone"
        os.set_blocking(read_end, False)
        with pytest.raises(BlockingIOError):
            os.read(read_end, 100)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_the_agent_itself_and_pid_1_are_never_told():
    writer = StderrFeedback()
    assert writer.tell(os.getpid(), 1, None, "why") == "gone"


def _stat(mode: int, rdev: int = 0) -> SimpleNamespace:
    """What writable_kind reads of an fstat."""
    return SimpleNamespace(st_mode=mode, st_rdev=rdev)


@pytest.mark.parametrize("mode, rdev, flags, fs, kind", [
    (stat.S_IFIFO, 0, os.O_WRONLY, 0, "pipe"),
    (stat.S_IFSOCK, 0, os.O_RDWR, 0, "socket"),
    (stat.S_IFCHR, os.makedev(136, 3), os.O_RDWR, 0, "tty"),        # /dev/pts/3
    (stat.S_IFCHR, os.makedev(4, 64), os.O_RDWR, 0, "tty"),         # /dev/ttyS0
    (stat.S_IFCHR, os.makedev(4, 0), os.O_RDWR, 0, None),           # tty0: the front console
    (stat.S_IFCHR, os.makedev(5, 0), os.O_RDWR, 0, None),           # /dev/tty: ours, not its
    (stat.S_IFCHR, os.makedev(5, 2), os.O_RDWR, 0, None),           # ptmx: a new pty on open
    (stat.S_IFCHR, os.makedev(5, 1), os.O_RDWR, 0, None),           # /dev/console
    (stat.S_IFCHR, os.makedev(1, 3), os.O_RDWR, 0, None),           # /dev/null
    (stat.S_IFREG, 0, os.O_WRONLY | os.O_APPEND, 0xEF53, "file"),
    (stat.S_IFREG, 0, os.O_WRONLY, 0xEF53, None),                   # written at an offset
    (stat.S_IFREG, 0, os.O_WRONLY | os.O_APPEND, 0x65735546, None),  # FUSE
    (stat.S_IFREG, 0, os.O_WRONLY | os.O_APPEND, 0x6969, None),     # NFS
    (stat.S_IFDIR, 0, os.O_RDONLY, 0xEF53, None),
    (stat.S_IFBLK, os.makedev(8, 0), os.O_RDWR, 0, None),
])
def test_which_stderr_may_be_written(mode, rdev, flags, fs, kind):
    assert writable_kind(_stat(mode, rdev), flags, lambda: fs) == kind


def test_the_rate_limit_is_per_process_and_key_and_per_process_overall():
    now = [0.0]
    writer = StderrFeedback(rate_s=10, per_process=3, clock=lambda: now[0])
    assert writer.allowed(1, ("a",)) and not writer.allowed(1, ("a",))
    assert writer.allowed(2, ("a",))                     # another process
    assert writer.allowed(1, ("b",)) and writer.allowed(1, ("c",))
    assert not writer.allowed(1, ("d",))                 # 3 lines in the window
    now[0] = 10.5
    assert writer.allowed(1, ("a",)) and writer.allowed(1, ("d",))
    assert writer.counters.limited == 2


def test_the_rate_tables_stay_bounded():
    writer = StderrFeedback(clock=lambda: 0.0)
    for pid in range(10_000):
        writer.allowed(pid, ("k",))
    assert len(writer._last) <= 4096 and len(writer._window) <= 4096


# -- the reasons files ---------------------------------------------------------------

def test_workload_directories_are_named_safely():
    assert workload_dir_name({"k8s": {"namespace": "ai", "pod": "agent-0"},
                              "container": {"name": "x"}}) == "ai_agent-0"
    assert workload_dir_name({"container": {"name": "agent-1", "id": "ab" * 32}}) == "agent-1"
    assert workload_dir_name({"container": {"name": "../../etc", "id": "ab" * 32}}) == "ab" * 32
    assert workload_dir_name({"cgroup": {"path": "/sys.slice/../x y"}}) == "sys.slice_.._x_y"
    assert workload_dir_name({"cgroup": {"path": "/.."}}) == "_unknown"
    assert workload_dir_name({}) == "_unknown"
    for name in ("..", ".", "a/b", "", "-x"):
        assert "/" not in workload_dir_name({"container": {"name": name}})


def test_a_reasons_file_is_written_readable_and_rotated(tmp_path, monkeypatch):
    monkeypatch.setattr(reasons, "REASON_FILE_BYTES", 600)
    files = ReasonsFiles(tmp_path / "reasons")
    line = reason_line(CONNECT)
    for _ in range(5):
        assert files.write(CONNECT, line)
    where = tmp_path / "reasons" / "w"
    current, older = where / REASON_FILE, where / (REASON_FILE + ".1")
    assert current.stat().st_mode & 0o777 == 0o644 and where.stat().st_mode & 0o777 == 0o755
    records = [orjson.loads(raw) for path in (older, current)
               for raw in path.read_bytes().splitlines()]
    assert 2 <= len(records) <= 5 and current.stat().st_size <= 600
    assert records[-1] == {"ts": None, "kind": "connect", "action": "block",
                           "rule": "no-pools", "policy": "sandbox", "pid": 42, "comm": "curl",
                           "reason": line, "dst": CONNECT["dst"]}
    assert sorted(p.name for p in where.iterdir()) == [REASON_FILE, REASON_FILE + ".1"]


def test_a_link_in_place_of_the_directory_or_the_file_is_never_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    top = tmp_path / "reasons"
    top.mkdir()
    (top / "w").symlink_to(target)
    files = ReasonsFiles(top)
    assert not files.write(CONNECT, "why") and files.failed == 1
    (top / "w").unlink()
    (top / "w").mkdir()
    (top / "w" / REASON_FILE).symlink_to(target / "victim")
    assert not files.write(CONNECT, "why") and files.failed == 2
    assert list(target.iterdir()) == []
    assert files.last_error is not None


# -- the agent (fake kernel) -------------------------------------------------------------

POLICY = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: sandbox
spec:
  mode: {mode}
  defaultAction: allow
  feedback:
    stderr: {stderr}
    file: true
  egress:
    - name: no-pools
      action: block
      to:
        - cidr: 198.18.0.0/15
          ports: [3333]
"""


class Told:
    def __init__(self):
        self.calls: list[tuple] = []

    def __call__(self, pid, ppid, cgroup_path, line):
        self.calls.append((pid, ppid, cgroup_path, line))
        return "written"


@pytest.mark.parametrize("mode, stderr, told", [("enforce", "true", 1), ("enforce", "false", 0),
                                               ("audit", "true", 0)])
def test_the_agent_tells_refusals_only_as_the_policy_asks(tmp_path, mode, stderr, told):
    with fake_agent(POLICY.format(mode=mode, stderr=stderr),
                    reasons_dir=str(tmp_path / "reasons")) as fake:
        tell = Told()
        fake.agent.handlers.feedback.stderr.tell = tell
        rule = fake.rule_id("no-pools")
        action = Action.BLOCK if mode == "enforce" else Action.WOULD_BLOCK
        fake.connect("198.18.0.7", 3333, action=action, rule_id=rule)
        fake.connect("198.18.0.7", 3333, action=action, rule_id=rule)   # rate-limited
        fake.connect("198.18.0.8", 80, action=Action.LOG)                # not a refusal
        status = fake.agent.status()["feedback"]
    assert len(tell.calls) == told
    if told:
        pid, _ppid, path, line = tell.calls[0]
        assert line == ('egress-guard: blocked tcp connect to 198.18.0.7:3333 by rule "no-pools" '
                        'of policy "sandbox"')
        assert path == fake.cgroup.relative
        assert status["stderr"]["limited"] == 1
    written = list((tmp_path / "reasons").rglob(REASON_FILE))
    assert len(written) == (1 if mode == "enforce" else 0)
    assert status["files"]["written"] == (1 if mode == "enforce" else 0)


def test_a_feedback_failure_is_an_error_event_and_the_record_goes_on(tmp_path):
    with fake_agent(POLICY.format(mode="enforce", stderr="true")) as fake:
        def broken(*_args):
            raise RuntimeError("boom")
        fake.agent.handlers.feedback.stderr.tell = broken
        events = fake.connect("198.18.0.7", 3333, action=Action.BLOCK,
                              rule_id=fake.rule_id("no-pools"))
    assert [e["kind"] for e in events] == ["connect", "error"]
    assert "feedback failed: RuntimeError: boom" in events[1]["error"]


DETECTING = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: sandbox
spec:
  feedback:
    stderr: true
  detections:
    sshReverseTunnel: {action}
"""


@pytest.mark.parametrize("action, settled", [("kill", "SIGKILL"), ("block", "SIGCONT")])
def test_a_program_held_at_exec_is_told_before_it_is_killed_or_resumed(action, settled):
    with fake_agent(DETECTING.format(action=action)) as fake:
        fake.agent.handlers.feedback.stderr.tell = \
            lambda pid, ppid, path, line: fake.timeline.append(("told", (pid, line))) or "written"
        fake.maps.held[fake.pid] = 1           # the kernel's hold, as exec.bpf.c makes it
        fake.exec(["ssh", "-R", "9000:localhost:22", "host.example"], held=True)
        order = [step for step, _args in fake.timeline if step in ("told", "signal")]
        told = [args for step, args in fake.timeline if step == "told"]
        signals = [args[1].name for step, args in fake.timeline if step == "signal"]
    assert order == ["told", "signal"] and signals == [settled], fake.timeline[-5:]
    verb = "killed" if action == "kill" else "blocked"
    assert told[0][1] == (f'egress-guard: {verb} /usr/bin/ssh of policy "sandbox": '
                          'ssh remote forward 9000:localhost:22 to root@host.example:22')
