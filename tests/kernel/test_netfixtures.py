# SPDX-License-Identifier: Apache-2.0
"""The network fixtures themselves, no guard involved: the recording server,
the proxies, netclient, a real sshd with forwards, the tunnel stand-ins and
the reverse-shell forms all do what the detection tests will rely on."""
from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from guard.detect.classify.reverse_shell import classify_reverse_shell
from guard.detect.classify.tunnels import classify_tunnel_exec, classify_tunnel_payload

from .netclient import client_argv, parse_report
from .netfixtures import (
    TEST_PORT_RANGE, HttpConnectProxy, ProxyError, RecordingServer, Socks4Proxy, Socks5Proxy,
    Spawned, http_connect, issued_ports, require_tools, socks5_connect,
)
from .sshd import TOOLS as SSH_TOOLS, Sshd, free_port, is_listening, wait_listening
from .tunnelstandins import (
    DUP2_INNOCENT_NAME, REVERSE_SHELLS, STANDINS, Standins,
)

#: What a shell attached to the socket answers: the arithmetic proves it ran.
SHELL_PROBE = b"echo EGMARK$((6*7))\n"
SHELL_ANSWER = b"EGMARK42"


def skip_if_busy(port: int) -> None:
    if is_listening(port, None):
        pytest.skip(f"port {port} is in use on this host")


@pytest.fixture
def spawned():
    with Spawned() as procs:
        yield procs


def run_netclient(tmp_path, connect: str, payload: bytes, **kwargs) -> dict:
    payload_file = tmp_path / "payload.bin"
    payload_file.write_bytes(payload)
    result = subprocess.run(client_argv(connect, payload_file, **kwargs), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return parse_report(result.stdout)


# --------------------------------------------------------------------------
# RecordingServer


def test_recording_server_records_each_connection_and_replies_once():
    with RecordingServer(reply=b"pong") as server:
        first = socket.create_connection(server.address, timeout=5)
        first.sendall(b"hello ")
        assert first.recv(16) == b"pong"
        first.sendall(b"world")
        with socket.create_connection(server.address, timeout=5) as second:
            second.sendall(b"!")
            assert second.recv(16) == b"pong"
        assert server.wait_for_bytes(12) == b"hello world!"
        assert server.connections == [b"hello world", b"!"]
        first.close()
        assert server.wait_until_closed()
        assert len(server.peers) == 2


def test_recording_server_greeting_and_timeout_message():
    with RecordingServer(greeting=b"hi\n") as server:
        with socket.create_connection(server.address, timeout=5) as client:
            assert client.recv(16) == b"hi\n"
        with pytest.raises(AssertionError, match="wanted 1 bytes"):
            server.wait_for_bytes(1, timeout=0.2)


def test_recording_server_udp():
    with RecordingServer(udp=True, reply=b"ack") as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(b"one", server.address)
            assert client.recv(16) == b"ack"
            client.sendto(b"two", server.address)
            assert server.wait_for_bytes(6) == b"onetwo"
        assert server.connections == [b"onetwo"]


def test_recording_server_ipv6_and_port_443():
    with RecordingServer(host="::1") as server:
        with socket.create_connection(server.address, timeout=5) as client:
            client.sendall(b"six")
        assert server.wait_for_bytes(3) == b"six"
    skip_if_busy(443)
    with RecordingServer(port=443) as server:
        assert server.port == 443
        with socket.create_connection(("127.0.0.1", 443), timeout=5) as client:
            client.sendall(b"\x16\x03\x01")
        assert server.wait_for_bytes(3) == b"\x16\x03\x01"
    assert not is_listening(443)


def test_a_port_is_handed_out_once_per_test_run():
    """Tests find their events by destination port in agents that keep every
    event, so no two servers (nor free_port) of one run may share a port."""
    ports = []
    for udp in (False, True, False):
        with RecordingServer(udp=udp) as server:
            ports.append(server.port)
    ports.append(free_port())
    with Socks5Proxy() as proxy:
        ports.append(proxy.port)
    assert len(set(ports)) == len(ports), ports
    assert all(TEST_PORT_RANGE[0] <= port < TEST_PORT_RANGE[1] for port in ports), ports
    assert set(ports) <= issued_ports


# --------------------------------------------------------------------------
# Proxies


@pytest.mark.parametrize("target", ["ipv4", "domain", "ipv6"])
def test_socks5_relays_both_ways(target):
    host = "::1" if target == "ipv6" else "127.0.0.1"
    with RecordingServer(host=host, reply=b"welcome") as server, \
            Socks5Proxy(names={"pool.example.test": host}) as proxy:
        name = "Pool.Example.Test" if target == "domain" else host
        with socks5_connect(proxy.address, name, server.port) as sock:
            sock.sendall(b"subscribe")
            assert sock.recv(16) == b"welcome"
        assert server.wait_for_bytes(9) == b"subscribe"
        assert proxy.requests == [(name, server.port)]


@pytest.mark.parametrize("target", ["ipv4", "socks4a-name"])
def test_socks4_relays_both_ways(tmp_path, target):
    with RecordingServer(reply=b"welcome") as server, \
            Socks4Proxy(names={"pool.example.test": "127.0.0.1"}) as proxy:
        name = "pool.example.test" if target == "socks4a-name" else "127.0.0.1"
        report = run_netclient(tmp_path, f"{name}:{server.port}", b"subscribe",
                               socks4=proxy.host_port, expect_reply=True, hold=5)
        assert report["error"] is None and report["received"] == len(b"welcome"), report
        assert server.wait_for_bytes(9) == b"subscribe"
        assert proxy.requests == [(name, server.port)]


def test_socks4_refusals(tmp_path):
    with Socks4Proxy() as proxy:
        unknown = run_netclient(tmp_path, "nowhere.test:80", b"x", socks4=proxy.host_port)
        outside = run_netclient(tmp_path, "192.0.2.1:80", b"x", socks4=proxy.host_port)
    for report in (unknown, outside):       # refused (0x5B), never dialled
        assert report["stage"] == "proxy" and report["error"].startswith("proxy: 91"), report
    assert proxy.requests == [("nowhere.test", 80), ("192.0.2.1", 80)]


def test_socks5_refusals():
    with RecordingServer() as server, Socks5Proxy(names={"known.test": "127.0.0.1"}) as proxy:
        with pytest.raises(ProxyError) as unknown:
            socks5_connect(proxy.address, "unknown.test", server.port)
        assert unknown.value.reply == 0x04
        with pytest.raises(ProxyError) as outside:        # refused, never dialled
            socks5_connect(proxy.address, "192.0.2.1", 80)
        assert outside.value.reply == 0x02
        closed = free_port()
        with pytest.raises(ProxyError) as refused:
            socks5_connect(proxy.address, "known.test", closed)
        assert refused.value.reply == 0x05
        assert proxy.requests == [("unknown.test", server.port), ("192.0.2.1", 80),
                                  ("known.test", closed)]
        assert server.connections == []


def test_http_connect_relays_both_ways():
    with RecordingServer(reply=b"welcome") as server, \
            HttpConnectProxy(names={"pool.example.test": "127.0.0.1"}) as proxy:
        with http_connect(proxy.address, "pool.example.test", server.port) as sock:
            sock.sendall(b"subscribe")
            assert sock.recv(16) == b"welcome"
        assert server.wait_for_bytes(9) == b"subscribe"
        with http_connect(proxy.address, "127.0.0.1", server.port) as sock:
            sock.sendall(b"again")
        assert server.wait_for_bytes(14)
        assert proxy.requests == [("pool.example.test", server.port), ("127.0.0.1", server.port)]


def test_http_connect_refusals():
    with HttpConnectProxy() as proxy:
        with pytest.raises(ProxyError) as unknown:
            http_connect(proxy.address, "unknown.test", 443)
        assert unknown.value.reply == 502
        with pytest.raises(ProxyError) as outside:
            http_connect(proxy.address, "192.0.2.1", 443)
        assert outside.value.reply == 403
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 405")


# --------------------------------------------------------------------------
# netclient


def test_netclient_direct_and_through_both_proxies(tmp_path):
    with RecordingServer(reply=b"ok") as server, \
            Socks5Proxy(names={"pool.example.test": "127.0.0.1"}) as socks, \
            HttpConnectProxy(names={"pool.example.test": "127.0.0.1"}) as http:
        direct = run_netclient(tmp_path, server.host_port, b"direct", expect_reply=True, hold=5)
        via_socks = run_netclient(tmp_path, f"pool.example.test:{server.port}", b"socks",
                                  socks5=socks.host_port, expect_reply=True, hold=5)
        via_http = run_netclient(tmp_path, f"pool.example.test:{server.port}", b"http",
                                 http_connect=http.host_port, expect_reply=True, hold=5)
        for report in (direct, via_socks, via_http):
            assert report == {"connected": True, "sent": True, "error": None, "errno": None,
                              "received": 2, "stage": None}
        assert server.wait_for_bytes(15)
        assert sorted(server.connections) == [b"direct", b"http", b"socks"]


def test_netclient_reports_failures(tmp_path):
    closed = free_port()
    refused = run_netclient(tmp_path, f"127.0.0.1:{closed}", b"x", hold=0)
    assert (refused["connected"], refused["error"], refused["errno"], refused["stage"]) == (
        False, "ECONNREFUSED", 111, "connect")
    outside = run_netclient(tmp_path, "192.0.2.1:80", b"x")
    assert (outside["connected"], outside["error"], outside["stage"]) == (
        False, "EACCES", "address")
    with Socks5Proxy() as socks:
        unknown = run_netclient(tmp_path, "nowhere.test:80", b"x", socks5=socks.host_port)
    assert (unknown["connected"], unknown["stage"]) == (False, "proxy")
    assert unknown["error"].startswith("proxy: 4 host unreachable")
    with RecordingServer() as silent:
        quiet = run_netclient(tmp_path, silent.host_port, b"hello", expect_reply=True, hold=0.3)
        assert silent.wait_for_bytes(5) == b"hello"
    assert (quiet["connected"], quiet["sent"], quiet["error"], quiet["received"]) == (
        True, True, "no reply", 0)


def test_netclient_reports_a_reset(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def reset_after_first_bytes():
            conn, _ = listener.accept()
            conn.recv(64)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()                                  # RST, not FIN
        thread = threading.Thread(target=reset_after_first_bytes, daemon=True)
        thread.start()
        report = run_netclient(tmp_path, f"127.0.0.1:{listener.getsockname()[1]}", b"x", hold=5)
        thread.join(timeout=5)
    assert (report["connected"], report["sent"], report["error"], report["stage"]) == (
        True, True, "ECONNRESET", "recv")


def test_netclient_and_a_standin_run_inside_a_cgroup(guarded_cgroup, tmp_path):
    """How the detection tests will run them (no agent here, so nothing is blocked)."""
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b'{"id":1,"method":"mining.subscribe","params":[]}\n')
    with RecordingServer(reply=b'{"id":1,"result":[]}\n') as server, Standins() as standins:
        result = guarded_cgroup.run(client_argv(server.host_port, payload, expect_reply=True),
                                    text=True)
        assert parse_report(result.stdout)["received"] > 0, result.stderr
        result = guarded_cgroup.run(standins.argv("bore", server.host, server.port),
                                    env=standins.env(server.host, server.port, hold=0.1),
                                    text=True)
        assert parse_report(result.stdout)["sent"], result.stderr
        assert server.wait_for(b'{"Hello":0}\x00')


def test_netclient_argument_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tests.kernel.netclient", "--connect", "nope",
                             "--send-file", str(tmp_path / "missing")], capture_output=True)
    assert result.returncode == 2


# --------------------------------------------------------------------------
# sshd


@pytest.fixture
def ssh_tools():
    return require_tools(*SSH_TOOLS)


def test_sshd_runs_a_command(ssh_tools):
    with Sshd() as sshd:
        result = subprocess.run(sshd.client_argv("echo", "ssh-ok"), capture_output=True,
                                text=True, timeout=30)
        assert (result.returncode, result.stdout.strip()) == (0, "ssh-ok"), result.stderr
        assert subprocess.run(sshd.client_argv("true"), capture_output=True,
                              timeout=30).returncode == 0
        pid = sshd.pid
        assert "Accepted publickey for root" in sshd.log()
    assert not is_listening(sshd.port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _allocated_port(proc: subprocess.Popen, timeout: float = 10) -> int:
    """The port `ssh -R 0:...` reports on stderr ("Allocated port N for remote forward")."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(rb"Allocated port (\d+) for remote forward", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"no allocated port; ssh said {b''.join(seen)!r}")


def test_ssh_remote_forward_to_port_zero_listens_and_forwards(ssh_tools, spawned):
    with Sshd() as sshd, RecordingServer() as inside:
        ssh = spawned.popen(sshd.client_argv("-N", "-R", f"0:127.0.0.1:{inside.port}"),
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port = _allocated_port(ssh)
        assert wait_listening(port), sshd.log()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"through the tunnel")
        assert inside.wait_for_bytes(18) == b"through the tunnel"
        spawned.close()
        assert wait_listening(port, present=False)


def test_ssh_remote_forward_to_a_fixed_port(ssh_tools, spawned):
    with Sshd() as sshd:
        port = free_port()
        spawned.popen(sshd.client_argv("-N", "-R", f"{port}:127.0.0.1:{sshd.port}"),
                      stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_listening(port), sshd.log()
        spawned.close()
        assert wait_listening(port, present=False)


def test_autossh_remote_forward(ssh_tools, spawned, tmp_path):
    require_tools("autossh")
    with Sshd() as sshd:
        port = free_port()
        env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "AUTOSSH_GATETIME": "0",
               "AUTOSSH_LOGFILE": str(tmp_path / "autossh.log")}
        autossh = spawned.popen(sshd.autossh_argv("-N", "-R", f"{port}:127.0.0.1:{sshd.port}"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        assert wait_listening(port, timeout=10), sshd.log()
        assert autossh.poll() is None
        spawned.close()
        assert wait_listening(port, present=False)


def test_sshd_on_port_443(ssh_tools):
    skip_if_busy(443)
    with Sshd(port=443) as sshd:
        assert is_listening(443)
        result = subprocess.run(sshd.client_argv("true"), capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr
    assert not is_listening(443)


# --------------------------------------------------------------------------
# Tunnel stand-ins


STANDIN_CASES = [(name, None) for name in STANDINS] + [
    ("cloudflared", ["tunnel", "--protocol", "quic", "run"]),
    ("frpc", "plain"),
    ("lt", ["--port", "8080", "--host", "http://localtunnel.me"]),
]


@pytest.mark.parametrize("name, args", STANDIN_CASES,
                         ids=[f"{name}-{i}" for i, (name, _) in enumerate(STANDIN_CASES)])
def test_standins_send_first_bytes_the_classifier_knows(name, args, tmp_path):
    standin = STANDINS[name]
    with Standins() as standins:
        if args == "plain":
            args = ["-c", str(standins.frpc_config(tls=False))]
        udp = args is not None and "quic" in args
        # a QUIC Initial says cloudflared only on its edge port
        with RecordingServer(udp=udp, port=7844 if udp else 0) as server:
            argv = standins.argv(name, server.host, server.port, args)
            assert [f.dialect for f in classify_tunnel_exec(standins.exec_argv(
                name, server.host, server.port, args))] == [standin.dialect]
            result = subprocess.run(argv, env=standins.env(server.host, server.port, hold=0.2),
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
            report = parse_report(result.stdout)
            assert (report["tool"], report["connected"], report["sent"], report["error"]) == (
                name, True, True, None)
            payload = server.wait_for_bytes(report["payload_bytes"])
    findings = classify_tunnel_payload(payload, server.port)
    assert standin.dialect in {f.dialect for f in findings}, (payload[:80], findings)


def test_standin_without_a_target_refuses(tmp_path):
    with Standins() as standins:
        env = {"PATH": "/usr/bin:/bin"}
        result = subprocess.run(standins.argv("bore"), env=env, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 2 and "EG_STANDIN_TARGET" in result.stderr
        env["EG_STANDIN_TARGET"] = "192.0.2.1:7835"
        result = subprocess.run(standins.argv("bore"), env=env, capture_output=True, text=True,
                                timeout=30)
        assert parse_report(result.stdout)["stage"] == "address"
    with pytest.raises(ValueError):
        Standins.env("192.0.2.1", 1)


# --------------------------------------------------------------------------
# Reverse shells and the innocent dup2


@pytest.mark.parametrize("shell", REVERSE_SHELLS, ids=[shell.name for shell in REVERSE_SHELLS])
def test_reverse_shell_forms_are_classified_and_really_give_a_shell(shell, spawned, tmp_path):
    argv = shell.format("127.0.0.1", 4242, fifo=tmp_path / "f")
    assert [f.evidence["pattern"] for f in classify_reverse_shell(argv)] == [shell.pattern]
    require_tools(*shell.needs)
    # a TCP shell gets its command as soon as it connects; the UDP one once its
    # prompt came, a byte per datagram (bash reads stdin a byte at a time)
    with RecordingServer(udp=shell.udp, greeting=None if shell.udp else SHELL_PROBE) as server:
        argv = shell.format(server.host, server.port, fifo=tmp_path / "f")
        spawned.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL, cwd=tmp_path)
        if shell.udp:
            server.wait_for_bytes(1, timeout=10)
            server.send(SHELL_PROBE, per_byte=True)
        server.wait_for(SHELL_ANSWER, timeout=10)
    spawned.close()        # after the server: a TCP shell that read EOF is gone already


def test_dup2_innocent_connects_with_an_argv_that_says_nothing(spawned):
    with Standins() as standins, RecordingServer() as server:
        argv = standins.innocent_argv()
        assert argv[0].endswith(DUP2_INNOCENT_NAME)
        for shown in (argv, standins.exec_argv(DUP2_INNOCENT_NAME, args=argv[1:])):
            assert classify_reverse_shell(shown) == [] and classify_tunnel_exec(shown) == []
        result = subprocess.run(argv, env=standins.env(server.host, server.port),
                                capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert server.wait_for_connections(1)
        assert server.wait_until_closed()
        sleeper = spawned.popen(standins.innocent_argv(sleep=30),
                                env=standins.env(server.host, server.port))
        assert server.wait_for_connections(2)
        assert sleeper.poll() is None
        spawned.close()
        assert server.wait_until_closed()
