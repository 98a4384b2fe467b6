# SPDX-License-Identifier: Apache-2.0
"""`block` means the action does not happen (issue 17, point 3), against a
real OpenSSH server and client.

Each bypass the issue found is run twice, under `sshReverseTunnel: block`
and under `log`: under log the forward listens on the server (so the test
shows the way really works with this OpenSSH), under block it never does and
the event says the process was killed, and why.

    -O forward over a ControlMaster socket   the request goes over the Unix
                                             socket: refusing connects stops nothing
    a mux client's own -R                    likewise
    -F /dev/stdin                            ssh reads it; the guard cannot
    ProxyCommand through a Unix-socket relay the relay (same cgroup, not a child) connects
    a renamed ssh with RemoteForward in -F   found by its banner, its -F file read

The masters run outside the guarded cgroup: a master that was already there
is exactly what a later `-O forward` would use.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess, guarded_by_key
from .netfixtures import end_tree, require_tools
from .sshd import Sshd, free_port, wait_listening


def policy_text(action: str) -> str:
    return f"""apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: ssh-hardening-{action}
spec:
  defaultAction: allow
  detections:
    sshReverseTunnel: {action}
    sshOutbound: log
"""


@pytest.fixture(scope="module", autouse=True)
def tools():
    require_tools("sshd", "ssh", "socat")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    yield from guarded_by_key(tmp_path_factory.mktemp("ssh-hardening"), "egress-guard-sshhard", policy_text)


@pytest.fixture(scope="module")
def sshd():
    with Sshd() as server:
        yield server


@pytest.fixture
def master(sshd, tmp_path):
    """A ControlMaster to sshd, started outside the guarded cgroup; its socket path."""
    sock = tmp_path / "cm.sock"
    proc = subprocess.Popen(sshd.client_argv("-M", "-S", str(sock), "-N"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            end_tree(proc)
            pytest.fail(f"the master did not start: {proc.stderr.read()!r}")
        time.sleep(0.05)
    yield sock
    end_tree(proc)


def detection(agent: AgentProcess, predicate, timeout: float = 10) -> dict:
    return agent.wait_for(lambda e: e.get("kind") == "detection"
                          and e["detection"]["type"] == "ssh_reverse_tunnel" and predicate(e),
                          timeout=timeout)


def forward_port_is(port: int):
    return lambda e: e["detection"]["evidence"].get("listen", {}).get("port") == port


def run(cg: TempCgroup, argv: list[str], port: int, seconds: float = 4.0,
        stdin: bytes | None = None) -> tuple[bool, int | None]:
    """Start argv in the cgroup (stdin written and closed if given); whether
    the forward listened while it ran, and its exit status if it ended
    (negative: the signal that ended it)."""
    proc = cg.popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if stdin is not None:
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except BrokenPipeError:
                pass                       # killed before it read its config
        listened = wait_listening(port, timeout=seconds)
        if not listened:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        return listened, proc.poll()
    finally:
        end_tree(proc)


def assert_killed(event: dict, words: str) -> None:
    assert event["action"] == "kill", event
    assert event["detection"]["evidence"]["enforced_by"].startswith("kill: "), event
    assert words in event["detection"]["evidence"]["enforced_by"], event


# --------------------------------------------------------------------------
# A forward over a control socket


def test_O_forward_through_a_running_master(guarded, sshd, master):
    cg, agent = guarded("log")
    port = free_port()
    argv = sshd.client_argv("-S", str(master), "-O", "forward", "-R", f"{port}:127.0.0.1:9")
    listened, _ = run(cg, argv, port)
    assert listened, "under log the master opens the forward: the way is real"
    event = detection(agent, forward_port_is(port))
    assert event["action"] == "log"
    assert event["detection"]["evidence"]["control_command"] == "forward"

    cg, agent = guarded("block")
    port = free_port()
    argv = sshd.client_argv("-S", str(master), "-O", "forward", "-R", f"{port}:127.0.0.1:9")
    listened, status = run(cg, argv, port)
    assert not listened and status == -9
    assert not wait_listening(port, timeout=1)
    assert_killed(detection(agent, forward_port_is(port)),
                  f"the forward would travel over the control socket {master}")


def test_a_mux_client_with_its_own_forward(guarded, sshd, master):
    cg, agent = guarded("block")
    port = free_port()
    argv = sshd.client_argv("-S", str(master), "-N", "-R", f"{port}:127.0.0.1:9")
    listened, status = run(cg, argv, port)
    assert not listened and status == -9
    assert_killed(detection(agent, forward_port_is(port)), "ssh first tries a running master")


def test_a_new_master_in_the_sandbox_is_refused(guarded, sshd, tmp_path):
    cg, agent = guarded("block")
    sock = tmp_path / "sandbox-cm.sock"
    result = cg.run(sshd.client_argv("-M", "-S", str(sock), "-N"), timeout=20)
    assert result.returncode == 255 and not sock.exists()     # its connect was refused
    event = detection(agent, lambda e: e["detection"]["dialect"] == "control-master"
                      and e["detection"]["evidence"].get("control_path") == str(sock))
    assert event["action"] == "block"


# --------------------------------------------------------------------------
# Configuration the guard cannot read


def test_F_dev_stdin(guarded, sshd):
    config = lambda port: f"Host *\n  RemoteForward {port} 127.0.0.1:9\n".encode()  # noqa: E731
    cg, agent = guarded("log")
    port = free_port()
    argv = sshd.client_argv("-N")
    argv[argv.index("-F") + 1] = "/dev/stdin"
    listened, _ = run(cg, argv, port, stdin=config(port))
    assert listened, "OpenSSH reads its config from /dev/stdin"

    cg, agent = guarded("block")
    port = free_port()
    listened, status = run(cg, argv, port, stdin=config(port))
    assert not listened and status == -9
    event = detection(agent, lambda e: e["detection"]["dialect"] == "unread-config"
                      and "/dev/stdin" in e["detection"]["evidence"]["note"]
                      and e["process"]["pid"] is not None)
    assert event["detection"]["confidence"] == "high"
    assert_killed(event, "could not read")


# --------------------------------------------------------------------------
# A connection made by another program


@pytest.fixture
def relay(sshd, tmp_path, guarded):
    """A Unix-socket relay to sshd, in the guarded cgroup of the block policy
    (not a child of the ssh that uses it), and its socket path."""
    cg, _ = guarded("block")
    path = tmp_path / "relay.sock"
    proc = cg.popen(["socat", f"UNIX-LISTEN:{path},fork", f"TCP:127.0.0.1:{sshd.port}"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield path
    end_tree(proc)


def test_proxy_command_through_a_unix_socket_relay(guarded, sshd, relay):
    proxy = f"ProxyCommand=socat - UNIX-CONNECT:{relay}"
    cg, agent = guarded("log")
    port = free_port()
    listened, _ = run(cg, sshd.client_argv("-N", "-o", proxy, "-R", f"{port}:127.0.0.1:9"), port)
    assert listened, "the relay carries the session: refusing ssh's connects would not stop it"

    cg, agent = guarded("block")
    port = free_port()
    listened, status = run(cg, sshd.client_argv("-N", "-o", proxy, "-R", f"{port}:127.0.0.1:9"),
                           port)
    assert not listened and status == -9
    assert_killed(detection(agent, forward_port_is(port)), "ProxyCommand")


# --------------------------------------------------------------------------
# A client found by its banner


def test_a_renamed_ssh_with_the_forward_in_its_F_file(guarded, sshd, tmp_path):
    cg, agent = guarded("block")
    port = free_port()
    renamed = tmp_path / "sync-helper"
    shutil.copy2(shutil.which("ssh"), renamed)
    config = tmp_path / "helper.conf"
    config.write_text(f"Host *\n  RemoteForward {port} 127.0.0.1:9\n")
    argv = [str(renamed)] + sshd.client_argv("-N")[1:]
    argv[argv.index("-F") + 1] = str(config)
    listened, _ = run(cg, argv, port)
    assert not listened
    event = detection(agent, forward_port_is(port))
    assert event["process"]["argv"][0] == str(renamed)
    assert event["detection"]["evidence"]["origin"] == f"{config}:2"
    assert event["action"] == "block" and event["dst"]["port"] == sshd.port
    assert Path(config).exists() and os.path.basename(event["process"]["argv"][0]) == "sync-helper"
