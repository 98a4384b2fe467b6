# SPDX-License-Identifier: Apache-2.0
"""The agent's control socket: `policy reload` and `status` talk to it.

A unix stream socket, one JSON request line in, one JSON response line out,
then the connection closes. Only root may use it: the socket file is 0600 in
a 0700 directory, and the agent also checks the caller's credentials
(SO_PEERCRED), so a socket exposed by a careless mount still refuses others.

A request may come with open files (SCM_RIGHTS, at most MAX_FILES): the
handler gets their descriptors beside the request and they are closed once
it has answered. `policy reload FILE` passes the file this way, so the
agent reads what the caller opened, wherever the agent's mount namespace
puts that path (or does not have it at all).

Clients are served off the agent's event loop, because a client is whoever
got root in the sandbox and must not be able to stall enforcement:

    I/O thread (one, non-blocking, selector)          agent loop (handle())
    accept -> SO_PEERCRED (not root: refused)
    read the line + files, CLIENT_DEADLINE_S in all
    parse; garbage: answered here        --queue-->   handler(request, files)
                                                      close the files
    send the answer, CLIENT_DEADLINE_S   <--queue--   the answer, as bytes

At most MAX_CONNECTIONS clients at a time; one more is told "busy" and
closed. fileno() is an eventfd, readable while requests wait for handle(),
so the loop still selects on one descriptor and handle() only ever runs
handlers: it never waits on a client.
"""
from __future__ import annotations

import array
import os
import selectors
import socket
import stat
import struct
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

# the client side, light enough for the CLI to start fast (re-exported here)
from guard.control.client import DEFAULT_SOCKET, REQUEST_LIMIT, ControlError, read_line, request  # noqa: F401

CLIENT_DEADLINE_S = 2.0       # a whole request in, or a whole answer out, within this
MAX_CONNECTIONS = 16          # clients served at once; more are told "busy"
MAX_FILES = 4                 # descriptors taken from one request; more are refused
CLOSE_TIMEOUT_S = 2.0         # close() waits this long for the I/O thread at most
_ACCEPT_PAUSE_S = 0.1         # out of descriptors: accept again after this
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_FILES_SPACE = socket.CMSG_SPACE(MAX_FILES * 4)

REFUSED = "permission denied: only root may control the agent"

Handler = Callable[[dict[str, Any], Sequence[int]], dict[str, Any]]


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(raw)


class _Client:
    """One connection, owned by the I/O thread (the loop sees only its requests)."""

    __slots__ = ("sock", "chunks", "size", "files", "deadline", "state", "out")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.chunks: list[bytes] = []
        self.size = 0
        self.files: list[int] = []
        self.deadline = deadline
        self.state = "reading"        # -> "waiting" (for the loop) -> "sending"
        self.out = memoryview(b"")


class ControlServer:
    """Listens on path; an I/O thread reads requests, handle() answers them.

    fileno() is readable while requests are queued; handle(handler), called
    from the agent's loop, runs handler(request, files) for each and never
    blocks on a client.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise ControlError(f"{self.path} exists and is not a socket")
            if _answers(self.path):
                raise ControlError(f"another agent is already listening on {self.path}")
            self.path.unlink()  # left by an agent that died
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        self._sock.listen(MAX_CONNECTIONS)
        self._sock.setblocking(False)
        self._lock = threading.Lock()
        self._requests: deque[tuple[_Client, dict[str, Any], list[int]]] = deque()  # -> handle()
        self._replies: deque[tuple[_Client, bytes]] = deque()   # -> the I/O thread
        self._ready = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)   # requests queued
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)    # answers or stop
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="egress-guard-control",
                                        daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        return self._ready

    def handle(self, handler: Handler) -> None:
        """Answer every queued request (the loop's side); never lets a client
        or the handler break the agent."""
        if self._closed:
            return   # the eventfd's number may be someone else's by now
        try:
            os.eventfd_read(self._ready)
        except OSError:
            pass   # a wake-up already consumed (EAGAIN): the queue says what there is
        answered = False
        while True:
            with self._lock:
                if not self._requests:
                    break
                client, message, files = self._requests.popleft()
            try:
                try:
                    response = handler(message, tuple(files))
                    answer = orjson.dumps(response) + b"\n"
                except Exception as exc:   # the agent goes on; the caller hears why
                    answer = _line({"ok": False, "error": f"internal error: {exc}"})
            finally:
                _close_all(files)
            with self._lock:
                self._replies.append((client, answer))
            _signal(self._wake)
            answered = True
        if answered:
            # let the I/O thread, woken just now, take the GIL and send: the
            # loop's next work (a reload's bookkeeping) would otherwise hold
            # the answer back for up to a switch interval (5 ms)
            time.sleep(0)

    def close(self) -> None:
        """Stop serving: the thread ends, every connection and queued file is
        closed and the socket file goes. Returns within CLOSE_TIMEOUT_S."""
        if self._closed:
            return
        self._closed = True
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self._stopping = True
        _signal(self._wake)
        self._thread.join(timeout=CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            return   # cannot happen short of a bug; its descriptors are left to it
        with self._lock:
            for _client, _message, files in self._requests:
                _close_all(files)
            self._requests.clear()
            self._replies.clear()
        for fd in (self._ready, self._wake):
            os.close(fd)

    # -- the I/O thread --------------------------------------------------------------

    def _serve(self) -> None:
        clients: dict[int, _Client] = {}
        selector = selectors.DefaultSelector()
        selector.register(self._wake, selectors.EVENT_READ, None)
        selector.register(self._sock, selectors.EVENT_READ, self._sock)
        accept_paused_until = 0.0
        try:
            while not self._stopping:
                now = time.monotonic()
                if accept_paused_until and now >= accept_paused_until:
                    accept_paused_until = 0.0
                    selector.register(self._sock, selectors.EVENT_READ, self._sock)
                timeout = _timeout(clients.values(), now, accept_paused_until)
                for key, events in selector.select(timeout):
                    if self._stopping:
                        break
                    try:
                        if key.data is None:
                            self._take_answers(selector, clients)
                        elif key.data is self._sock:
                            if not self._accept(selector, clients):
                                selector.unregister(self._sock)
                                accept_paused_until = time.monotonic() + _ACCEPT_PAUSE_S
                        else:
                            self._step(selector, clients, key.data, events)
                    except Exception:   # a bug must cost one client, not the socket
                        if isinstance(key.data, _Client):
                            self._drop(selector, clients, key.data)
                self._expire(selector, clients, time.monotonic())
        finally:
            for client in list(clients.values()):
                self._drop(selector, clients, client)
            selector.close()
            self._sock.close()

    def _accept(self, selector, clients: dict[int, _Client]) -> bool:
        """Take the waiting connections (a few rounds' worth, so a flood of
        them cannot starve the clients being served); False when out of
        descriptors."""
        for _ in range(2 * MAX_CONNECTIONS):
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False   # EMFILE and the like: try again a little later
            try:
                sock.setblocking(False)
                _pid, uid, _gid = peer_credentials(sock)
                if uid != 0:
                    _try_send(sock, _line({"ok": False, "error": REFUSED}))
                elif len(clients) >= MAX_CONNECTIONS:
                    _try_send(sock, _line({"ok": False, "error": (
                        f"busy: {MAX_CONNECTIONS} clients are being served, try again")}))
                else:
                    client = _Client(sock, time.monotonic() + CLIENT_DEADLINE_S)
                    clients[sock.fileno()] = client
                    selector.register(sock, selectors.EVENT_READ, client)
                    continue
            except OSError:
                pass
            sock.close()
        return True

    def _step(self, selector, clients, client: _Client, events: int) -> None:
        try:
            if client.state == "reading" and events & selectors.EVENT_READ:
                self._read(selector, clients, client)
            elif client.state == "sending" and events & selectors.EVENT_WRITE:
                self._send(selector, clients, client)
        except OSError:
            self._drop(selector, clients, client)

    def _read(self, selector, clients, client: _Client) -> None:
        while True:
            try:
                chunk, ancillary, flags, _address = client.sock.recvmsg(
                    65536, _FILES_SPACE, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    client.files.extend(array.array("i", data[:len(data) - len(data) % 4]))
            if flags & socket.MSG_CTRUNC or len(client.files) > MAX_FILES:
                return self._refuse(selector, clients, client,
                                    f"bad request: more than {MAX_FILES} files")
            if chunk:
                client.chunks.append(chunk)
                client.size += len(chunk)
            if chunk and b"\n" not in chunk:
                if client.size > REQUEST_LIMIT:
                    return self._refuse(selector, clients, client,
                                        "bad request: request too large")
                continue
            if not client.size:   # hung up without a word
                return self._drop(selector, clients, client)
            line = b"".join(client.chunks)
            client.chunks, client.size = [], 0
            return self._parse(selector, clients, client, line[:line.find(b"\n") + 1 or None])

    def _parse(self, selector, clients, client: _Client, line: bytes) -> None:
        try:
            message = orjson.loads(line)
            if not isinstance(message, dict) or not isinstance(message.get("op"), str):
                raise ValueError("expected a JSON object with an 'op'")
        except ValueError as exc:
            return self._refuse(selector, clients, client, f"bad request: {exc}")
        selector.unregister(client.sock)
        client.state = "waiting"
        files, client.files = client.files, []
        with self._lock:
            self._requests.append((client, message, files))
        _signal(self._ready)

    def _refuse(self, selector, clients, client: _Client, error: str) -> None:
        _try_send(client.sock, _line({"ok": False, "error": error}))
        self._drop(selector, clients, client)

    def _take_answers(self, selector, clients) -> None:
        try:
            os.eventfd_read(self._wake)
        except OSError:
            pass
        while True:
            with self._lock:
                if not self._replies:
                    return
                client, answer = self._replies.popleft()
            if clients.get(client.sock.fileno()) is not client:
                continue   # gone meanwhile
            client.state = "sending"
            client.out = memoryview(answer)
            client.deadline = time.monotonic() + CLIENT_DEADLINE_S
            try:
                self._send(selector, clients, client)
            except OSError:
                self._drop(selector, clients, client)

    def _send(self, selector, clients, client: _Client) -> None:
        while client.out:
            try:
                sent = client.sock.send(client.out)
            except (BlockingIOError, InterruptedError):
                if client.sock.fileno() in selector.get_map():
                    selector.modify(client.sock, selectors.EVENT_WRITE, client)
                else:
                    selector.register(client.sock, selectors.EVENT_WRITE, client)
                return
            client.out = client.out[sent:]
        self._drop(selector, clients, client)

    def _expire(self, selector, clients, now: float) -> None:
        for client in [c for c in clients.values()
                       if c.state != "waiting" and c.deadline <= now]:
            if client.state == "reading":
                self._refuse(selector, clients, client,
                             f"request not complete within {CLIENT_DEADLINE_S:g} s")
            else:
                self._drop(selector, clients, client)   # not reading its answer

    def _drop(self, selector, clients, client: _Client) -> None:
        fd = client.sock.fileno()
        if fd < 0:
            return
        if fd in selector.get_map():
            selector.unregister(client.sock)
        if clients.get(fd) is client:
            del clients[fd]
        _close_all(client.files)
        client.files = []
        client.sock.close()


def _timeout(clients, now: float, accept_paused_until: float) -> float | None:
    deadlines = [c.deadline for c in clients if c.state != "waiting"]
    if accept_paused_until:
        deadlines.append(accept_paused_until)
    return max(min(deadlines) - now, 0.0) if deadlines else None


def _line(response: dict[str, Any]) -> bytes:
    return orjson.dumps(response) + b"\n"


def _try_send(sock: socket.socket, data: bytes) -> None:
    """One non-blocking attempt: an answer to someone we are about to drop."""
    try:
        sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
    except OSError:
        pass


def _signal(fd: int) -> None:
    try:
        os.eventfd_write(fd, 1)
    except OSError:
        pass   # closed by close(): nobody is waiting any more


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
