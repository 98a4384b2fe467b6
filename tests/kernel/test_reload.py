# SPDX-License-Identifier: Apache-2.0
"""Live policy reload: atomic under load, validated first, root only."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from guard.control.server import request
from guard.demo.sandbox import TempCgroup

from .agentproc import ROOT, AgentProcess
from .conftest import port_block_policy

PORT = 29701


# Connects in a tight loop until the deadline; prints run-lengths of outcomes.
CONNECT_LOOP = """
import errno, socket, sys, time
deadline = time.monotonic() + float(sys.argv[2])
runs = []
while time.monotonic() < deadline:
    s = socket.socket()
    code = s.connect_ex(('127.0.0.1', int(sys.argv[1])))
    s.close()
    if runs and runs[-1][0] == code:
        runs[-1][1] += 1
    else:
        runs.append([code, 1])
print(runs)
"""


class AcceptingListener:
    """Accepts and closes in a thread, so a tight connect loop never fills the backlog."""

    def __init__(self, port: int):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4096)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                conn.close()
            except OSError:
                continue

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener():
    lst = AcceptingListener(PORT)
    yield lst
    lst.close()


def write_policy(path, name, action):
    path.write_text(port_block_policy(name, PORT, action=action))
    return path


def egress_guard(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guard", *args], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)


def test_reload_under_load_switches_exactly_once(tmp_path, listener):
    old = write_policy(tmp_path / "old.yaml", "old", "allow")
    new = write_policy(tmp_path / "new.yaml", "new", "block")
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)], policy=old) as agent:
            loop = cg.popen([sys.executable, "-c", CONNECT_LOOP, str(PORT), "3.0"],
                            stdout=subprocess.PIPE, text=True)
            threading.Event().wait(1.0)
            result = egress_guard("policy", "reload", str(new), "--socket", agent.control_socket)
            assert result.returncode == 0, result.stderr
            assert "generation 2 (was 1)" in result.stdout
            out, _ = loop.communicate(timeout=30)
            runs = json.loads(out)
            reloaded = agent.wait_for(lambda e: e["kind"] == "policy")
    # every connect was either allowed (old policy) or refused (new policy),
    # and the switch happened once: no gap, no mix, no flapping
    assert [code for code, _count in runs] == [0, 1], runs  # 0 = connected, 1 = EPERM
    assert runs[0][1] > 100 and runs[1][1] > 100, runs
    assert reloaded["state"] == "reloaded"
    assert reloaded["policy"]["generation"] == 2 and reloaded["previous_generation"] == 1


def test_invalid_policy_keeps_the_old_one_and_names_the_line(tmp_path, listener):
    old = write_policy(tmp_path / "old.yaml", "old", "block")
    bad = tmp_path / "bad.yaml"
    bad.write_text(port_block_policy("bad", PORT, action="explode"))
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)], policy=old) as agent:
            result = egress_guard("policy", "reload", str(bad), "--socket", agent.control_socket)
            assert result.returncode == 1
            assert f"{bad}:9: spec.egress[0].action: invalid action 'explode'" in result.stderr
            # the agent validates too: a request that skips the CLI's check is refused
            response = request(agent.control_socket, {
                "op": "reload", "policy": {"text": bad.read_text(), "source": str(bad)}})
            assert response["ok"] is False
            assert any(f"{bad}:9:" in p for p in response["problems"])
            rejected = agent.wait_for(lambda e: e["kind"] == "policy")
            assert rejected["state"] == "rejected" and rejected["policy"]["generation"] == 1
            status = request(agent.control_socket, {"op": "status"})
            assert status["policy"] == {"name": "old", "source": str(old), "generation": 1}
            probe = cg.python(f"import socket; print(socket.socket().connect_ex(('127.0.0.1', {PORT})))")
            assert probe.stdout.strip() == "1"  # EPERM: the old policy still blocks


def test_sighup_and_a_swapped_file_reload_the_policy(tmp_path, listener):
    live = tmp_path / "policy.yaml"
    write_policy(live, "first", "allow")
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)], policy=live) as agent:
            write_policy(live, "second", "block")
            agent.proc.send_signal(signal.SIGHUP)
            first = agent.wait_for(lambda e: e["kind"] == "policy")
            assert first["policy"]["name"] == "second" and first["policy"]["generation"] == 2
            # a ConfigMap update: a new file renamed over the old one, no signal
            staged = tmp_path / "staged.yaml"
            write_policy(staged, "third", "allow")
            os.replace(staged, live)
            third = agent.wait_for(lambda e: e["kind"] == "policy" and e["policy"]["name"] == "third")
            assert third["policy"]["generation"] == 3
            assert agent.stop() == 0
    reloads = [e for e in agent.events if e["kind"] == "policy"]
    assert len(reloads) == 2  # SIGHUP and the file watch did not both reload the first change


def test_status_reports_the_running_agent(tmp_path):
    policy = write_policy(tmp_path / "p.yaml", "status-test", "block")
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)], policy=policy) as agent:
            result = egress_guard("status", "--json", "--socket", agent.control_socket)
            assert result.returncode == 0, result.stderr
            status = json.loads(result.stdout)
            assert status["policy"] == {"name": "status-test", "source": str(policy),
                                        "generation": 1}
            assert status["cgroups"] == [{"id": cg.id, "path": cg.cgroup.relative,
                                          "policy": "status-test"}]
            assert status["enforcement"] == "cgroup+raw_tracepoint"
            assert status["pid"] == agent.proc.pid
            assert {"events_sent", "events_lost", "verdict_block"} <= set(status["counters"])
            assert status["uptime_s"] > 0
            human = egress_guard("status", "--socket", agent.control_socket)
            assert human.returncode == 0 and "generation 1" in human.stdout


def test_no_agent_is_exit_3(tmp_path):
    result = egress_guard("status", "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 3
    assert result.stderr.startswith("egress-guard: error: no agent is listening")


def _as_nobody(path: str) -> str:
    """Talk to the socket from a child that dropped to uid 65534; returns what happened."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no Python imports needed beyond what is loaded
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            outcome = json.dumps(request(path, {"op": "status"}))
        except Exception as exc:  # noqa: BLE001 - report whatever happened to the parent
            outcome = f"{type(exc).__name__}: {exc}"
        os.write(write_end, outcome.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        outcome = fh.read().decode()
    os.waitpid(pid, 0)
    return outcome


def test_a_non_root_caller_is_refused(tmp_path):
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)]) as agent:
            # the file system refuses first: 0700 directory, 0600 socket
            assert "permission denied" in _as_nobody(agent.control_socket)
            # and with the file opened up, the agent still checks the caller
            os.chmod(os.path.dirname(agent.control_socket), 0o755)
            os.chmod(agent.control_socket, 0o666)
            raw = _as_nobody(agent.control_socket)
            assert raw.startswith("{"), raw
            outcome = json.loads(raw)
            assert outcome == {"ok": False,
                               "error": "permission denied: only root may control the agent"}


# --- the file passed open (SCM_RIGHTS) --------------------------------------------------

def egress_guard_in(cwd, *args) -> subprocess.CompletedProcess:
    """The installed command (bin/egress-guard), run from cwd."""
    return subprocess.run([sys.executable, str(ROOT / "bin" / "egress-guard"), *args],
                          capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)


def test_a_relative_file_is_read_by_the_agent_and_named_as_given(tmp_path, listener):
    write_policy(tmp_path / "old.yaml", "old", "allow")
    write_policy(tmp_path / "new.yaml", "new", "block")
    (tmp_path / "bad.yaml").write_text(port_block_policy("bad", PORT, action="explode"))
    (tmp_path / "binary.yaml").write_bytes(b"apiVersion: egress-guard/v1\nkind: \xff\n")
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)], policy=tmp_path / "old.yaml") as agent:
            sock = agent.control_socket
            # problems name the file as the caller wrote it, with line and field
            bad = egress_guard_in(tmp_path, "policy", "reload", "bad.yaml", "--socket", sock)
            assert bad.returncode == 1
            assert bad.stderr.splitlines()[0].startswith(
                "bad.yaml:9: spec.egress[0].action: invalid action 'explode'")
            binary = egress_guard_in(tmp_path, "policy", "reload", "binary.yaml", "--socket", sock)
            assert binary.returncode == 1
            assert binary.stderr.splitlines()[0] == \
                "binary.yaml:2: <file>: not valid UTF-8 (byte 0xff at offset 34)"
            missing = egress_guard_in(tmp_path, "policy", "reload", "gone/new.yaml", "--socket", sock)
            assert missing.returncode == 1 and missing.stderr.startswith(
                "egress-guard: error: gone/new.yaml: cannot read the policy file:")
            assert request(sock, {"op": "status"})["policy"]["generation"] == 1
            probe = cg.python(f"import socket; print(socket.socket().connect_ex(('127.0.0.1', {PORT})))")
            assert probe.stdout.strip() == "0"  # the old policy (allow) still in force

            before = time.monotonic_ns()
            good = egress_guard_in(tmp_path, "policy", "reload", "new.yaml", "--socket", sock)
            after = time.monotonic_ns()
            assert good.returncode == 0, good.stderr
            assert "generation 2 (was 1)" in good.stdout
            status = request(sock, {"op": "status"})
            assert status["policy"] == {"name": "new", "source": "new.yaml", "generation": 2}
            probe = cg.python(f"import socket; print(socket.socket().connect_ex(('127.0.0.1', {PORT})))")
            assert probe.stdout.strip() == "1"  # EPERM: the new policy blocks
            # the switch's CLOCK_MONOTONIC time (what bench/reload.py measures to)
            event = agent.wait_for(lambda e: e["kind"] == "policy" and e["state"] == "reloaded")
            assert before < event["switched_ns"] < after

            # the older protocol still works: the text in the request, no file
            response = request(sock, {"op": "reload", "policy": {
                "text": (tmp_path / "old.yaml").read_text(), "source": "old.yaml"}})
            assert response["ok"] is True and "read_fd" not in response
            assert response["policy"]["generation"] == 3


def test_an_agent_in_another_mount_namespace_reads_the_file_it_was_given(tmp_path, listener):
    """The agent's view of the caller's path may hold another file or none
    (an agent in a container): it reads the file the caller opened."""
    shared = tmp_path / "policies"
    shared.mkdir()
    write_policy(tmp_path / "start.yaml", "start", "allow")
    write_policy(shared / "p.yaml", "from-the-caller", "block")
    decoy = port_block_policy("decoy", PORT, action="allow")
    with TempCgroup("egress-guard-test") as cg:
        agent = AgentProcess([str(cg.path)], policy=tmp_path / "start.yaml")
        # a private mount namespace where `shared` is a tmpfs holding a decoy p.yaml
        agent.argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                      f'mount -t tmpfs none "{shared}" && printf "%s" "$0" > "{shared}/p.yaml"'
                      ' && shift && exec "$@"', decoy, "--", *agent.argv]
        with agent:
            assert os.readlink(f"/proc/{agent.proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
            # by the path, the agent would find the decoy
            seen = open(f"/proc/{agent.proc.pid}/root{shared}/p.yaml").read()
            assert "name: decoy" in seen
            result = egress_guard_in(shared, "policy", "reload", "p.yaml",
                                     "--socket", agent.control_socket)
            assert result.returncode == 0, result.stderr
            assert "policy 'from-the-caller' is generation 2" in result.stdout
            probe = cg.python(f"import socket; print(socket.socket().connect_ex(('127.0.0.1', {PORT})))")
            assert probe.stdout.strip() == "1"  # the caller's policy blocks; the decoy would not
