# SPDX-License-Identifier: Apache-2.0
"""Servers for the mining and tunnel detection tests: a recording server and two proxies.

They run in the test process, unguarded; the clients they meet run inside a
guarded cgroup (tests.kernel.netclient, stand-ins, ssh). Each is a context
manager that owns its listening socket, its threads and every socket it
opened, and closes them all on exit, also when the body failed.

Only test addresses are reached: the proxies refuse any target outside
loopback and 198.18.0.0/15 (SOCKS5 reply 0x02, HTTP 403) and resolve names
through the `names` mapping they were given, never through DNS.
"""
from __future__ import annotations

import ipaddress
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from ..conftest import REQUIRE_KERNEL
from .netclient import (
    SOCKS5_REPLIES, ProxyError, format_host_port, http_connect, is_test_address, socks5_connect,
)

__all__ = [
    "RecordingServer", "Socks5Proxy", "Socks4Proxy", "HttpConnectProxy", "Spawned", "end_tree",
    "descendants",
    "require_tools", "bind_unused_port", "TEST_PORT_RANGE", "issued_ports",
    # the client side of the proxies, from .netclient
    "SOCKS5_REPLIES", "ProxyError", "http_connect", "is_test_address", "socks5_connect",
]

_POLL_S = 0.2

#: Ports the servers here take when asked for port 0 (and sshd.free_port too):
#: below the ephemeral range (32768-60999), where no client socket in
#: TIME_WAIT holds them, and clear of the 29xxx ports tests name outright.
TEST_PORT_RANGE = (24000, 28000)
#: Every port handed out in this test run. The agents of a test module keep
#: every event, and tests find theirs by destination port: a port handed out
#: twice would let a test match an earlier test's flow (a CI run did exactly
#: that, and read a cryptonote detection as the getwork client's).
issued_ports: set[int] = set()


def bind_unused_port(sock: socket.socket, host: str, port: int = 0) -> int:
    """Bind sock to host:port; port 0: a port of TEST_PORT_RANGE that no
    fixture of this test run has used before. Returns the port."""
    if port:
        sock.bind((host, port))
        return port
    low, high = TEST_PORT_RANGE
    unused = [port for port in range(low, high) if port not in issued_ports]
    for port in random.sample(unused, min(200, len(unused))):
        try:
            sock.bind((host, port))
        except OSError:
            continue
        issued_ports.add(port)
        return port
    raise RuntimeError(f"no unused port left in {low}-{high} on {host}")


def require_tools(*names: str) -> dict[str, str]:
    """Paths of the programs named (a name with a slash is a path). A missing
    one skips the test, or fails it under GUARD_REQUIRE_KERNEL=1."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        path = name if "/" in name and os.access(name, os.X_OK) else shutil.which(name)
        if path:
            found[name] = path
        else:
            missing.append(name)
    if missing:
        message = f"not installed: {', '.join(missing)} (scripts/setup.sh test installs them)"
        if REQUIRE_KERNEL:
            pytest.fail(f"GUARD_REQUIRE_KERNEL=1 but {message}", pytrace=False)
        pytest.skip(message)
    return found


# --------------------------------------------------------------------------
# Processes started by a test, ended with everything they started


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time) of pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live descendant of pid, parents first."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append((int(entry), stat[1]))
    found: list[tuple[int, int]] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child[0])
    return found


def _signal_if_same(pid: int, start: int, sig: int) -> None:
    if _alive(pid, start):     # not a reused pid
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _alive(pid: int, start: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] == start


def end_tree(proc: subprocess.Popen, grace: float = 1.0) -> None:
    """End proc and all it started, by pid, then reap proc. SIGTERM to proc
    first (autossh and sshd pass it on to their children), then to what is
    left of its tree; SIGKILL to whatever outlives the grace period (an
    interactive shell ignores SIGTERM)."""
    tree = descendants(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    for pid, start in list(tree):
        if _alive(pid, start):
            tree += [child for child in descendants(pid) if child not in tree]
            _signal_if_same(pid, start, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(pid, start) for pid, start in tree) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid, start in tree:
        _signal_if_same(pid, start, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


class Spawned:
    """Processes a test starts; on exit each is ended with all it started."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Spawned":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(argv, **kwargs)
        self.procs.append(proc)
        return proc

    def adopt(self, proc: subprocess.Popen) -> subprocess.Popen:
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            end_tree(proc)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.procs.clear()


# --------------------------------------------------------------------------
# Servers


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _TcpServer:
    """A listening socket, one accept thread, one thread per connection."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def host_port(self) -> str:
        return format_host_port(self.host, self.port)

    def __enter__(self):
        listener = socket.socket(_family(self.host), socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            bind_unused_port(listener, self.host, self.port)
            listener.listen(64)
            listener.settimeout(_POLL_S)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._start(self._accept_loop)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True,
                                  name=f"{type(self).__name__}-{self.port}")
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            if self._stop.is_set():
                sock.close()
                raise OSError("server closed")
            self._sockets.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        sock.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self._track(conn)
            except OSError:
                return
            self._start(self._serve, conn, peer)

    def _serve(self, conn: socket.socket, peer) -> None:
        try:
            self.handle(conn, peer)
        except Exception:      # a peer that breaks the protocol only ends its own connection
            pass
        finally:
            self._untrack(conn)

    def handle(self, conn: socket.socket, peer) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:               # wakes a recv blocked in a handler
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in list(self._threads):
            thread.join(timeout=5)
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            sock.close()


class RecordingServer(_TcpServer):
    """Records every byte each connection (or, with udp=True, each peer) sends.

    reply: sent once per connection, after its first chunk arrives (a pool
    answering a subscribe). greeting: sent as soon as a connection is accepted
    (a shell on the other end waits for its commands). Usable on any port,
    443 included (the tests run as root)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, reply: bytes | None = None,
                 greeting: bytes | None = None, udp: bool = False):
        super().__init__(host, port)
        self.reply = reply
        self.greeting = greeting
        self.udp = udp
        self._records: list[bytearray] = []
        self._peers: list[tuple] = []
        self._conns: list[socket.socket | None] = []
        self._open = 0
        self._cond = threading.Condition(self._lock)

    def __enter__(self) -> "RecordingServer":
        if not self.udp:
            return super().__enter__()
        sock = socket.socket(_family(self.host), socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            bind_unused_port(sock, self.host, self.port)
            sock.settimeout(_POLL_S)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self.port = sock.getsockname()[1]
        self._start(self._datagram_loop)
        return self

    def _new_record(self, peer, conn: socket.socket | None) -> bytearray:
        record = bytearray()
        with self._cond:
            self._records.append(record)
            self._peers.append(peer)
            self._conns.append(conn)
            self._cond.notify_all()
        return record

    def _add(self, record: bytearray, data: bytes) -> None:
        with self._cond:
            record += data
            self._cond.notify_all()

    def handle(self, conn: socket.socket, peer) -> None:
        conn.settimeout(None)
        record = self._new_record(peer, conn)
        with self._cond:
            self._open += 1
        try:
            if self.greeting is not None:
                conn.sendall(self.greeting)
            replied = self.reply is None
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                self._add(record, data)
                if not replied:
                    replied = True
                    conn.sendall(self.reply)
        finally:
            with self._cond:
                self._open -= 1
                self._cond.notify_all()

    def _datagram_loop(self) -> None:
        sock = self._listener
        by_peer: dict[tuple, bytearray] = {}
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            record = by_peer.get(peer)
            if record is None:
                record = by_peer[peer] = self._new_record(peer, None)
                first = True
            else:
                first = False
            self._add(record, data)
            if first and self.reply is not None:
                try:
                    sock.sendto(self.reply, peer)
                except OSError:
                    pass

    def send(self, data: bytes, connection: int = -1, per_byte: bool = False) -> None:
        """Send data to one connection (udp: one peer), the latest by default.
        per_byte: one send (one datagram) per byte, for a shell that reads its
        stdin a byte at a time from a UDP socket and so drops the rest."""
        with self._lock:
            conn, peer = self._conns[connection], self._peers[connection]
        for chunk in ([data[i:i + 1] for i in range(len(data))] if per_byte else [data]):
            if conn is None:
                self._listener.sendto(chunk, peer)
            else:
                conn.sendall(chunk)

    @property
    def connections(self) -> list[bytes]:
        """The bytes of each connection (each peer, for udp), in accept order."""
        with self._lock:
            return [bytes(record) for record in self._records]

    @property
    def peers(self) -> list[tuple]:
        with self._lock:
            return list(self._peers)

    def received(self) -> bytes:
        """All bytes received, the connections concatenated in accept order."""
        return b"".join(self.connections)

    def _wait(self, predicate, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout=timeout)

    def wait_for_bytes(self, n: int, timeout: float = 5.0) -> bytes:
        """received() once it holds at least n bytes; AssertionError after timeout."""
        if not self._wait(lambda: sum(map(len, self._records)) >= n, timeout):
            raise AssertionError(f"{self.host_port}: wanted {n} bytes in {timeout}s, "
                                 f"got {self.received()[:200]!r}")
        return self.received()

    def wait_for(self, needle: bytes, timeout: float = 5.0) -> bytes:
        """received() once it contains needle; AssertionError after timeout."""
        if not self._wait(lambda: any(needle in record for record in self._records), timeout):
            raise AssertionError(f"{self.host_port}: no {needle!r} in {timeout}s, "
                                 f"got {self.received()[:200]!r}")
        return self.received()

    def wait_for_connections(self, n: int, timeout: float = 5.0) -> bool:
        """Whether n connections (peers, for udp) arrived within timeout."""
        return self._wait(lambda: len(self._records) >= n, timeout)

    def wait_until_closed(self, timeout: float = 5.0) -> bool:
        """Whether every accepted connection has been closed by its peer within timeout."""
        return self._wait(lambda: self._open == 0, timeout)


# --------------------------------------------------------------------------
# Proxies


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("peer closed during the handshake")
        data += chunk
    return bytes(data)


class _Proxy(_TcpServer):
    """What both proxies share: name lookup, the target check, the relay."""

    def __init__(self, host: str, port: int, names: dict[str, str] | None,
                 connect_timeout: float):
        super().__init__(host, port)
        self.names = {self._key(name): ip for name, ip in (names or {}).items()}
        self.connect_timeout = connect_timeout
        self.requests: list[tuple[str, int]] = []

    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".")

    def _record(self, host: str, port: int) -> None:
        with self._lock:
            self.requests.append((host, port))

    def resolve(self, host: str) -> str | None:
        """An IP literal as it is; a name through `names` only (never DNS)."""
        try:
            return str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            return self.names.get(self._key(host))

    def _open_upstream(self, ip: str, port: int) -> socket.socket:
        upstream = socket.socket(_family(ip), socket.SOCK_STREAM)
        upstream.settimeout(self.connect_timeout)
        self._track(upstream)
        try:
            upstream.connect((ip, port))
        except BaseException:
            self._untrack(upstream)
            raise
        return upstream

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both ways until both sides closed (half-closes are passed on)."""
        client.settimeout(None)
        upstream.settimeout(None)
        other = {client: upstream, upstream: client}
        reading = [client, upstream]
        while reading and not self._stop.is_set():
            ready, _, _ = select.select(reading, [], [], _POLL_S)
            for sock in ready:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return                     # a reset ends both directions
                if data:
                    try:
                        other[sock].sendall(data)
                    except OSError:
                        return
                else:
                    reading.remove(sock)
                    try:
                        other[sock].shutdown(socket.SHUT_WR)
                    except OSError:
                        pass


def _socks5_error(exc: OSError) -> int:
    if isinstance(exc, ConnectionRefusedError):
        return 0x05
    if isinstance(exc, TimeoutError):
        return 0x06
    return {101: 0x03, 113: 0x04}.get(exc.errno or 0, 0x01)   # ENETUNREACH, EHOSTUNREACH


class Socks5Proxy(_Proxy):
    """RFC 1928 SOCKS5 without authentication, CONNECT only; ATYP IPv4, domain
    and IPv6. A domain resolves through `names` only (unknown: reply 0x04);
    `requests` records each (host, port) asked for, before any check."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 names: dict[str, str] | None = None, connect_timeout: float = 5.0):
        super().__init__(host, port, names, connect_timeout)

    def __enter__(self) -> "Socks5Proxy":
        return super().__enter__()

    @staticmethod
    def _answer(conn: socket.socket, code: int, bound: tuple[str, int] | None = None) -> None:
        host, port = bound or ("0.0.0.0", 0)
        ip = ipaddress.ip_address(host)
        atyp = b"\x01" if ip.version == 4 else b"\x04"
        conn.sendall(b"\x05" + bytes([code]) + b"\x00" + atyp + ip.packed + struct.pack(">H", port))

    def handle(self, conn: socket.socket, peer) -> None:
        conn.settimeout(10)
        version, count = _recv_exact(conn, 2)
        methods = _recv_exact(conn, count)
        if version != 5:
            return
        if 0 not in methods:
            conn.sendall(b"\x05\xff")
            return
        conn.sendall(b"\x05\x00")
        version, command, _reserved, atyp = _recv_exact(conn, 4)
        if atyp == 1:
            host = socket.inet_ntop(socket.AF_INET, _recv_exact(conn, 4))
        elif atyp == 4:
            host = socket.inet_ntop(socket.AF_INET6, _recv_exact(conn, 16))
        elif atyp == 3:
            host = _recv_exact(conn, _recv_exact(conn, 1)[0]).decode("latin-1")
        else:
            self._answer(conn, 0x08)
            return
        port = struct.unpack(">H", _recv_exact(conn, 2))[0]
        self._record(host, port)
        if command != 1:
            self._answer(conn, 0x07)
            return
        ip = self.resolve(host) if atyp == 3 else host
        if ip is None:
            self._answer(conn, 0x04)
            return
        if not is_test_address(ip):
            self._answer(conn, 0x02)
            return
        try:
            upstream = self._open_upstream(ip, port)
        except OSError as exc:
            self._answer(conn, _socks5_error(exc))
            return
        try:
            self._answer(conn, 0x00, upstream.getsockname()[:2])
            self._relay(conn, upstream)
        finally:
            self._untrack(upstream)


class Socks4Proxy(_Proxy):
    """SOCKS4 CONNECT, and SOCKS4a (address 0.0.0.x, then a host name). A
    name resolves through `names` only; anything refused or failed is
    answered 0x5B. `requests` records each (host, port) asked for."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 names: dict[str, str] | None = None, connect_timeout: float = 5.0):
        super().__init__(host, port, names, connect_timeout)

    def __enter__(self) -> "Socks4Proxy":
        return super().__enter__()

    @staticmethod
    def _answer(conn: socket.socket, granted: bool) -> None:
        conn.sendall(b"\x00" + (b"\x5a" if granted else b"\x5b") + b"\x00" * 6)

    @staticmethod
    def _until_nul(conn: socket.socket) -> bytes:
        data = bytearray()
        while len(data) <= 255:
            byte = _recv_exact(conn, 1)
            if byte == b"\x00":
                return bytes(data)
            data += byte
        raise ConnectionError("SOCKS4 field too long")

    def handle(self, conn: socket.socket, peer) -> None:
        conn.settimeout(10)
        version, command = _recv_exact(conn, 2)
        if version != 4:
            return
        port = struct.unpack(">H", _recv_exact(conn, 2))[0]
        address = _recv_exact(conn, 4)
        self._until_nul(conn)                      # user id
        if address[:3] == b"\x00\x00\x00" and address[3] != 0:
            host = self._until_nul(conn).decode("latin-1")
            ip = self.resolve(host)
        else:
            host = ip = socket.inet_ntop(socket.AF_INET, address)
        self._record(host, port)
        if command != 1 or ip is None or not is_test_address(ip):
            self._answer(conn, False)
            return
        try:
            upstream = self._open_upstream(ip, port)
        except OSError:
            self._answer(conn, False)
            return
        try:
            self._answer(conn, True)
            self._relay(conn, upstream)
        finally:
            self._untrack(upstream)


class HttpConnectProxy(_Proxy):
    """HTTP/1.1 CONNECT (`CONNECT host:port HTTP/1.1` -> `200 Connection
    established`). A name resolves through `names` only; answers 405 to other
    methods, 400 to a bad target, 403 outside the test networks, 502 for an
    unknown name or a failed connect. `requests` records each (host, port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 names: dict[str, str] | None = None, connect_timeout: float = 5.0):
        super().__init__(host, port, names, connect_timeout)

    def __enter__(self) -> "HttpConnectProxy":
        return super().__enter__()

    @staticmethod
    def _answer(conn: socket.socket, status: int, reason: str) -> None:
        conn.sendall(f"HTTP/1.1 {status} {reason}\r\n\r\n".encode("ascii"))

    def handle(self, conn: socket.socket, peer) -> None:
        conn.settimeout(10)
        data = bytearray()
        while b"\r\n\r\n" not in data:
            if len(data) > 8192:
                self._answer(conn, 431, "Request Header Fields Too Large")
                return
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        head, _, early = bytes(data).partition(b"\r\n\r\n")
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or parts[0] != "CONNECT":
            self._answer(conn, 405, "Method Not Allowed")
            return
        target = parts[1]
        if target.startswith("["):
            host, sep, port_text = target[1:].partition("]:")
        else:
            host, sep, port_text = target.rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            self._answer(conn, 400, "Bad Request")
            return
        port = int(port_text)
        self._record(host, port)
        ip = self.resolve(host)
        if ip is None:
            self._answer(conn, 502, "Bad Gateway (unknown name)")
            return
        if not is_test_address(ip):
            self._answer(conn, 403, "Forbidden (not a test address)")
            return
        try:
            upstream = self._open_upstream(ip, port)
        except OSError as exc:
            self._answer(conn, 504 if isinstance(exc, TimeoutError) else 502,
                         f"Bad Gateway ({exc.strerror or exc})")
            return
        try:
            self._answer(conn, 200, "Connection established")
            if early:
                upstream.sendall(early)
            self._relay(conn, upstream)
        finally:
            self._untrack(upstream)
