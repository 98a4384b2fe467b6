# SPDX-License-Identifier: Apache-2.0
"""A network client for the detection tests, run as a subprocess (usually in a guarded cgroup).

python -m tests.kernel.netclient --connect HOST:PORT
                                 [--socks5 HOST:PORT | --socks4 HOST:PORT | --http-connect HOST:PORT]
                                 --send-file PAYLOAD.bin [--expect-reply] [--hold SECONDS] [--udp]

connects (through the proxy when one is given), sends the payload, then reads
for up to --hold seconds (with --expect-reply: until the first reply bytes) and
prints one JSON line:

    {"connected": bool, "sent": bool, "error": str|null, "errno": int|null,
     "received": int, "stage": str|null}

error is the errno name (ECONNREFUSED, EPERM, ECONNRESET, ...), "timeout",
"no reply" or "proxy: ..."; stage says which step failed (address, proxy,
connect, send, recv). The exit code is 0 whatever happened to the connection,
2 for bad arguments, so a test reads the outcome from the JSON alone.

Only test addresses are ever dialled: loopback and 198.18.0.0/15 (the network
namespaces guard.demo.sandbox.TestHost makes). Anything else is refused before a
socket is made, so a guard that fails to block cannot send traffic off the
machine. Names are never resolved here; a name goes to the proxy as it is.

Standard library only, so it also runs by path (python tests/kernel/netclient.py).
The SOCKS5, SOCKS4(a) and HTTP CONNECT client handshakes live here and are
re-exported by tests.kernel.netfixtures.
"""
from __future__ import annotations

import argparse
import errno as errno_mod
import ipaddress
import json
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, Sequence

#: Where test traffic may go: loopback and the RFC 2544 range of TestHost.
TEST_NETWORKS = tuple(ipaddress.ip_network(net) for net in
                      ("127.0.0.0/8", "::1/128", "198.18.0.0/15"))

SOCKS5_REPLIES = {
    0x00: "succeeded",
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}

MAX_HTTP_HEAD = 8192


def is_test_address(host: str) -> bool:
    """Whether host is an IP literal inside TEST_NETWORKS (a v4-mapped v6 counts as its v4)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in TEST_NETWORKS)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def parse_host_port(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); ValueError when malformed."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"IPv6 address needs brackets: {text!r}")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host, int(port)


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ProxyError(ConnectionError):
    """The proxy answered, and refused: reply is the SOCKS5 reply code or the HTTP status."""

    def __init__(self, reply: int, text: str):
        super().__init__(f"proxy: {reply} {text}")
        self.reply = reply
        self.text = text


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(errno_mod.ECONNRESET, "proxy closed the connection")
        data += chunk
    return bytes(data)


def _dial(addr: tuple[str, int], timeout: float) -> socket.socket:
    host, port = addr
    if not is_test_address(host):
        raise PermissionError(errno_mod.EACCES, f"{host} is not a test address")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((host.strip("[]"), port))
    except BaseException:
        sock.close()
        raise
    return sock


def socks5_handshake(sock: socket.socket, host: str, port: int) -> None:
    """RFC 1928 no-auth CONNECT on a connected socket; ProxyError when refused."""
    sock.sendall(b"\x05\x01\x00")
    version, method = _recv_exact(sock, 2)
    if version != 5 or method != 0:
        raise ProxyError(method, "no acceptable authentication method")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        address = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    except ValueError:
        name = host.encode("idna")
        address = b"\x03" + bytes([len(name)]) + name
    sock.sendall(b"\x05\x01\x00" + address + struct.pack(">H", port))
    version, reply, _reserved, atyp = _recv_exact(sock, 4)
    if atyp == 1:
        _recv_exact(sock, 4)
    elif atyp == 4:
        _recv_exact(sock, 16)
    elif atyp == 3:
        _recv_exact(sock, _recv_exact(sock, 1)[0])
    _recv_exact(sock, 2)
    if reply != 0:
        raise ProxyError(reply, SOCKS5_REPLIES.get(reply, "unknown reply"))


def socks5_connect(proxy_addr: tuple[str, int], host: str, port: int,
                   timeout: float = 5.0) -> socket.socket:
    """A socket connected to host:port through the SOCKS5 proxy at proxy_addr.
    host may be a name: the proxy resolves it (ATYP domain)."""
    sock = _dial(proxy_addr, timeout)
    try:
        socks5_handshake(sock, host, port)
    except BaseException:
        sock.close()
        raise
    return sock


def socks4_handshake(sock: socket.socket, host: str, port: int) -> None:
    """SOCKS4 CONNECT (SOCKS4a with a name: address 0.0.0.1, then the name)
    with an empty user id, in one send; ProxyError unless granted (0x5A)."""
    try:
        ip = ipaddress.IPv4Address(host)
        request = b"\x04\x01" + struct.pack(">H", port) + ip.packed + b"\x00"
    except ValueError:
        request = (b"\x04\x01" + struct.pack(">H", port) + b"\x00\x00\x00\x01\x00"
                   + host.encode("idna") + b"\x00")
    sock.sendall(request)
    _version, reply = _recv_exact(sock, 8)[:2]
    if reply != 0x5A:
        raise ProxyError(reply, "SOCKS4 request rejected or failed")


def http_connect_handshake(sock: socket.socket, host: str, port: int) -> None:
    """`CONNECT host:port HTTP/1.1` on a connected socket; ProxyError unless 200.
    The answer is read a byte at a time so no tunnelled byte is swallowed."""
    target = format_host_port(host, port)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("ascii"))
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        if len(head) >= MAX_HTTP_HEAD:
            raise ProxyError(0, "answer head too long")
        head += _recv_exact(sock, 1)
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProxyError(0, f"not an HTTP answer: {status_line!r}")
    if parts[1] != "200":
        raise ProxyError(int(parts[1]), parts[2] if len(parts) > 2 else "")


def http_connect(proxy_addr: tuple[str, int], host: str, port: int,
                 timeout: float = 5.0) -> socket.socket:
    """A socket connected to host:port through the HTTP CONNECT proxy at proxy_addr."""
    sock = _dial(proxy_addr, timeout)
    try:
        http_connect_handshake(sock, host, port)
    except BaseException:
        sock.close()
        raise
    return sock


def _describe(exc: BaseException) -> tuple[str, int | None]:
    if isinstance(exc, ProxyError):
        return str(exc), None
    if isinstance(exc, TimeoutError) and not exc.errno:
        return "timeout", None
    if isinstance(exc, OSError) and exc.errno:
        return errno_mod.errorcode.get(exc.errno, str(exc.errno)), exc.errno
    return f"{type(exc).__name__}: {exc}", None


def exchange(host: str, port: int, payload: bytes, *, socks5: tuple[str, int] | None = None,
             http_proxy: tuple[str, int] | None = None, expect_reply: bool = False,
             hold: float = 1.0, udp: bool = False, timeout: float = 5.0,
             socks4: tuple[str, int] | None = None) -> dict[str, Any]:
    """Connect, send payload, read for up to hold seconds; never raises for
    network trouble. Returns the report main() prints."""
    report: dict[str, Any] = {"connected": False, "sent": False, "error": None, "errno": None,
                              "received": 0, "stage": None}

    def fail(stage: str, exc: BaseException) -> dict[str, Any]:
        report["error"], report["errno"] = _describe(exc)
        report["stage"] = stage
        return report

    proxy = socks5 or socks4 or http_proxy
    if proxy is None and not is_test_address(host):
        return fail("address", PermissionError(errno_mod.EACCES, "not a test address"))
    if proxy is not None and not is_test_address(proxy[0]):
        return fail("address", PermissionError(errno_mod.EACCES, "proxy is not a test address"))
    sock: socket.socket | None = None
    try:
        if udp:
            if proxy is not None:
                raise ValueError("--udp goes direct, not through a proxy")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                 socket.SOCK_DGRAM)
            sock.settimeout(timeout)
            try:
                sock.connect((host, port))
            except OSError as exc:
                return fail("connect", exc)
        else:
            try:
                sock = _dial(proxy or (host, port), timeout)
            except OSError as exc:
                return fail("connect", exc)
            try:
                if socks5 is not None:
                    socks5_handshake(sock, host, port)
                elif socks4 is not None:
                    socks4_handshake(sock, host, port)
                elif http_proxy is not None:
                    http_connect_handshake(sock, host, port)
            except OSError as exc:
                return fail("proxy", exc)
        report["connected"] = True
        try:
            if udp:
                sock.send(payload)
            else:
                sock.sendall(payload)
        except OSError as exc:
            return fail("send", exc)
        report["sent"] = True
        deadline = time.monotonic() + max(hold, 0.0)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except OSError as exc:
                return fail("recv", exc)
            if not data and not udp:
                break
            report["received"] += len(data)
            if expect_reply and data:
                break
        if expect_reply and report["received"] == 0:
            report["error"], report["stage"] = "no reply", "recv"
        return report
    finally:
        if sock is not None:
            sock.close()


def client_argv(connect: str, send_file: str | Path, *, socks5: str | None = None,
                http_connect: str | None = None, expect_reply: bool = False,
                hold: float | None = None, udp: bool = False,
                python: str = sys.executable, socks4: str | None = None) -> list[str]:
    """The command line that runs this client by path (no PYTHONPATH needed)."""
    argv = [python, str(Path(__file__).resolve()), "--connect", connect,
            "--send-file", str(send_file)]
    if socks5:
        argv += ["--socks5", socks5]
    if socks4:
        argv += ["--socks4", socks4]
    if http_connect:
        argv += ["--http-connect", http_connect]
    if expect_reply:
        argv.append("--expect-reply")
    if hold is not None:
        argv += ["--hold", str(hold)]
    if udp:
        argv.append("--udp")
    return argv


def parse_report(stdout: str | bytes) -> dict[str, Any]:
    """The JSON report from the client's stdout (its last non-empty line)."""
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"netclient printed no report: {text!r}")
    return json.loads(lines[-1])


def _host_port_arg(text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netclient", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connect", required=True, type=_host_port_arg, metavar="HOST:PORT")
    proxies = parser.add_mutually_exclusive_group()
    proxies.add_argument("--socks5", type=_host_port_arg, metavar="HOST:PORT")
    proxies.add_argument("--socks4", type=_host_port_arg, metavar="HOST:PORT")
    proxies.add_argument("--http-connect", type=_host_port_arg, metavar="HOST:PORT")
    parser.add_argument("--send-file", required=True, metavar="PAYLOAD.bin")
    parser.add_argument("--expect-reply", action="store_true",
                        help="stop at the first reply bytes; report 'no reply' if none came")
    parser.add_argument("--hold", type=float, default=1.0, metavar="SECONDS",
                        help="how long to read after sending (default 1)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="connect and handshake timeout (default 5)")
    parser.add_argument("--udp", action="store_true", help="send one datagram instead (no proxy)")
    args = parser.parse_args(argv)
    try:
        payload = Path(args.send_file).read_bytes()
    except OSError as exc:
        parser.error(f"--send-file: {exc}")
    if args.udp and (args.socks5 or args.socks4 or args.http_connect):
        parser.error("--udp cannot go through a proxy")
    host, port = args.connect
    report = exchange(host, port, payload, socks5=args.socks5, http_proxy=args.http_connect,
                      expect_reply=args.expect_reply, hold=args.hold, udp=args.udp,
                      timeout=args.timeout, socks4=args.socks4)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
