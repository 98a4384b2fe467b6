# SPDX-License-Identifier: Apache-2.0
"""Reasons in the sandbox (spec.feedback) on the real kernel: a refused or
killed process (curl, python, a shell) gets one line on its own stderr, a
program writing to a regular file opened without O_APPEND gets nothing
written there, a full pipe never holds the agent up, and the workload's
reasons file is readable by an unprivileged process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from guard.control.server import request

from . import test_mining as mining
from .agentproc import GuardedCgroup
from .conftest import Listener
from .netfixtures import RecordingServer, require_tools

BLOCKED, REPEATED = 29311, 29312

POLICY = f"""\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: feedback
spec:
  mode: {{mode}}
  defaultAction: allow
  feedback:
    stderr: true
    file: true
  egress:
    - name: no-test-port
      action: block
      to:
        - cidr: 127.0.0.0/8
          ports: [{BLOCKED}, {REPEATED}]
  exec:
    - name: no-netcat
      action: kill
      match:
        names: [nc]
  detections:
    stratum: block
    sshReverseTunnel: kill
"""
LINE = (f'egress-guard: blocked tcp connect to 127.0.0.1:{BLOCKED} by rule "no-test-port" '
        'of policy "feedback"')

# Connect to the blocked port (argv[1] times), report the errno on stdout, and
# stay long enough for the agent's line (argv[2] seconds).
CLIENT = """
import errno, socket, sys, time
for _ in range(int(sys.argv[1])):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=3)
        print("ok")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
time.sleep(float(sys.argv[2]))
"""


class Feedback(GuardedCgroup):
    def __init__(self, directory: Path, mode: str):
        policy = directory / f"{mode}.yaml"
        policy.write_text(POLICY.format(mode=mode))
        self.reasons = Path(tempfile.mkdtemp(prefix="egress-guard-reasons-"))
        self.reasons.chmod(0o755)     # a sandbox reads it without privileges
        super().__init__(policy, "egress-guard-feedback",
                         extra=["--reasons-dir", str(self.reasons)])

    def close(self) -> None:
        try:
            super().close()
        finally:
            shutil.rmtree(self.reasons, ignore_errors=True)

    def client(self, times: int = 1, stay: float = 1.0, port: int = BLOCKED, **kwargs):
        return self.cg.run([sys.executable, "-c", CLIENT, str(times), str(stay), str(port)],
                           **kwargs)

    def status(self) -> dict:
        return request(self.agent.control_socket, {"op": "status"})["feedback"]


@pytest.fixture(scope="module")
def listening():
    listener = Listener()
    for port in (BLOCKED, REPEATED):
        listener.listen("127.0.0.1", port)
    yield
    listener.close()


@pytest.fixture(scope="module")
def guard(tmp_path_factory, listening):
    made = Feedback(tmp_path_factory.mktemp("feedback"), "enforce")
    yield made
    made.close()


def test_python_refused_at_connect_reads_the_reason_on_its_stderr(guard):
    result = guard.client()
    assert result.stdout.strip() == b"EPERM"
    assert result.stderr.decode().splitlines() == [LINE]


def test_curl_refused_in_a_shell_gets_the_reason_beside_its_own_error(guard):
    require_tools("curl")
    result = guard.cg.run(["sh", "-c", f"curl -sS --max-time 3 http://127.0.0.1:{BLOCKED}/; "
                                       "sleep 1"])
    err = result.stderr.decode()
    assert "curl: (7)" in err, err                    # curl's own words
    assert LINE in err.splitlines(), err


def test_a_program_killed_at_exec_is_explained_on_its_shells_stderr(guard, tmp_path):
    fake_nc = tmp_path / "nc"
    shutil.copy("/bin/echo", fake_nc)
    result = guard.cg.run(["sh", "-c", f"{fake_nc} never-printed; sleep 1"])
    assert result.stdout == b""
    assert (f'egress-guard: killed exec of {fake_nc} by rule "no-netcat" of policy "feedback"'
            in result.stderr.decode().splitlines()), result.stderr


def test_a_program_held_at_exec_is_told_on_its_own_stderr_before_it_dies(guard):
    # no shell around it: the runner that started it is not in the cgroup, so
    # only the program's own stderr, while it was still held, can carry the line
    require_tools("ssh")
    result = guard.cg.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-N",
                           "-R", "9000:127.0.0.1:9", "root@127.0.0.1", "-p", "9"], timeout=30)
    assert result.returncode == -9
    assert result.stderr.decode().splitlines() == [
        'egress-guard: killed /usr/bin/ssh of policy "feedback": ssh remote forward '
        '9000:127.0.0.1:9 to root@127.0.0.1:9']


def test_a_regular_file_opened_without_append_is_never_written(guard, tmp_path):
    log = tmp_path / "stderr.log"
    with open(log, "wb") as stderr:      # O_WRONLY | O_TRUNC: writes at an offset
        result = guard.cg.run([sys.executable, "-c",
                               "import sys; sys.stderr.write('own line\\n'); sys.stderr.flush()\n"
                               + CLIENT, "1", "1", str(BLOCKED)], stderr=stderr)
    assert result.stdout.strip() == b"EPERM"
    assert log.read_bytes() == b"own line\n"


def test_a_regular_file_opened_for_append_gets_the_line(guard, tmp_path):
    log = tmp_path / "stderr-append.log"
    log.write_bytes(b"before\n")
    with open(log, "ab") as stderr:      # O_APPEND: the line goes at the end
        result = guard.client(stderr=stderr)
    assert result.stdout.strip() == b"EPERM"
    assert log.read_text().splitlines() == ["before", LINE]


def test_dev_null_is_never_touched_and_counted_as_refused(guard):
    before = guard.status()["stderr"]["refused"]
    result = guard.client(stderr=subprocess.DEVNULL)
    assert result.stdout.strip() == b"EPERM"
    deadline = time.monotonic() + 5
    while guard.status()["stderr"]["refused"] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert guard.status()["stderr"]["refused"] == before + 1


def test_one_line_per_process_and_destination_however_often_refused(guard):
    result = guard.client(times=5, port=REPEATED)
    assert result.stdout.split() == [b"EPERM"] * 5
    lines = result.stderr.decode().splitlines()
    assert lines == [LINE.replace(str(BLOCKED), str(REPEATED))], lines


FULL_PIPE = """
import fcntl, os, socket, sys, time
flags = fcntl.fcntl(2, fcntl.F_GETFL)
fcntl.fcntl(2, fcntl.F_SETFL, flags | os.O_NONBLOCK)
try:
    while True:
        os.write(2, b"x" * 4096)
except BlockingIOError:
    pass
fcntl.fcntl(2, fcntl.F_SETFL, flags)          # blocking again, as the process had it
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
except OSError as e:
    print(e.errno, flush=True)
time.sleep(2)
"""


def test_a_full_pipe_drops_the_line_and_never_holds_the_agent(guard):
    before = guard.status()["stderr"]["dropped"]
    read_end, write_end = os.pipe()
    try:
        proc = guard.cg.popen([sys.executable, "-c", FULL_PIPE, str(BLOCKED)],
                              stdout=subprocess.PIPE, stderr=write_end)
        assert proc.stdout.readline().strip() == b"1"          # EPERM
        deadline = time.monotonic() + 5
        while guard.status()["stderr"]["dropped"] == before and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.monotonic()
        status = guard.status()
        assert time.monotonic() - started < 1         # the agent answers at once
        assert status["stderr"]["dropped"] == before + 1
        proc.wait(timeout=10)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_detection_is_explained_in_words(guard):
    with RecordingServer() as pool:
        result = guard.cg.run(mining.NETCLIENT + ["--connect", f"127.0.0.1:{pool.port}",
                                                  "--send-file", str(mining.STRATUM),
                                                  "--hold", "1.5"], timeout=30)
    outcome = json.loads(result.stdout)
    assert outcome["received"] == 0, outcome
    lines = [line for line in result.stderr.decode().splitlines()
             if line.startswith("egress-guard:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"egress-guard: blocked tcp flow to 127.0.0.1:{pool.port} of "
                               'policy "feedback": '), lines
    assert "stratum" in lines[0].lower(), lines


def test_the_reasons_file_is_readable_without_privileges(guard):
    guard.client()
    path = guard.reasons / guard.cg.path.name / "reasons.jsonl"
    deadline = time.monotonic() + 5
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    as_nobody = subprocess.run(
        ["cat", str(path)], capture_output=True, text=True, timeout=10,
        preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    assert as_nobody.returncode == 0, as_nobody.stderr
    records = [json.loads(line) for line in as_nobody.stdout.splitlines()]
    mine = [r for r in records if r["reason"] == LINE]
    assert mine and mine[0]["kind"] == "connect" and mine[0]["rule"] == "no-test-port"
    assert mine[0]["dst"] == {"ip": "127.0.0.1", "port": BLOCKED}


def test_audit_mode_tells_nothing(tmp_path, listening):
    audit = Feedback(tmp_path, "audit")
    try:
        result = audit.client()
        assert result.stdout.strip() == b"ok"
        event = audit.agent.wait_for(lambda e: e.get("kind") == "connect"
                                     and e["dst"]["port"] == BLOCKED)
        assert (event["action"], event["would"]) == ("log", "block")
        assert result.stderr == b""
        assert list(audit.reasons.iterdir()) == []
    finally:
        audit.close()
