# SPDX-License-Identifier: Apache-2.0
"""The control socket's server against hostile clients: the agent's loop
keeps turning (handle() never waits on a client), slow or silent clients
are cut off at the deadline, the connection bound holds, non-root callers
are refused, and close() returns with clients still connected.

Real unix sockets in a temporary directory; root only (the server answers
root only), no BPF.
"""
from __future__ import annotations

import array
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from guard.control import server as control
from guard.control.client import request
from guard.control.server import MAX_CONNECTIONS, ControlServer

from ..conftest import REQUIRE_KERNEL

DEADLINE_S = 0.6   # CLIENT_DEADLINE_S for these tests, to keep them short
FAST_S = 0.05      # what one handle() may take here: it only runs the handler
PROMPT_S = 0.25    # a well-behaved client's answer, well inside DEADLINE_S


@pytest.fixture(autouse=True)
def as_root(monkeypatch):
    if os.geteuid() != 0:
        if REQUIRE_KERNEL:
            pytest.fail("GUARD_REQUIRE_KERNEL=1 but the control socket tests need root",
                        pytrace=False)
        pytest.skip("the control socket answers root only")
    monkeypatch.setattr(control, "CLIENT_DEADLINE_S", DEADLINE_S)


class Loop:
    """The agent's loop in miniature: select on fileno(), handle(); records
    how long each handle() took and when the loop last turned."""

    def __init__(self, server: ControlServer, handler=None):
        self.server = server
        self.handler = handler or (lambda message, files: {"ok": True, "op": message["op"]})
        self.handle_times: list[float] = []
        self.turns = 0
        self.longest_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        last = time.monotonic()
        while not self._stop.is_set():
            if select.select([self.server.fileno()], [], [], 0.01)[0]:
                started = time.monotonic()
                self.server.handle(self.handler)
                self.handle_times.append(time.monotonic() - started)
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now
            self.turns += 1

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def sock_path(tmp_path):
    return tmp_path / "run" / "agent.sock"


@pytest.fixture
def server(sock_path):
    served = ControlServer(sock_path)
    yield served
    served.close()


def connect(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def answer_of(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class SlowLoris(threading.Thread):
    """Drips a request one byte at a time, never finishing before the deadline."""

    def __init__(self, path, interval: float = 0.1):
        super().__init__(daemon=True)
        self.sock = connect(path)
        self.interval = interval
        self.answer = b""
        self.cut_after: float | None = None

    def run(self):
        started = time.monotonic()
        try:
            for byte in b'{"op": "status", "padding": "' + b"x" * 1000:
                self.sock.send(bytes([byte]))
                time.sleep(self.interval)
        except OSError:
            pass   # cut off
        self.cut_after = time.monotonic() - started
        try:
            self.answer = answer_of(self.sock)
        except OSError:
            pass
        self.sock.close()


def test_silent_and_slow_clients_neither_stall_the_loop_nor_other_clients(server, sock_path):
    loop = Loop(server)
    silent = connect(sock_path)
    loris = SlowLoris(sock_path)
    loris.start()
    try:
        time.sleep(0.2)   # both connected and being ignored
        for _ in range(3):
            started = time.monotonic()
            assert request(sock_path, {"op": "status"}, timeout=5) == {"ok": True, "op": "status"}
            assert time.monotonic() - started < PROMPT_S
        # cut off at the deadline for the whole request, told why if still listening
        assert answer_of(silent) == (
            b'{"ok":false,"error":"request not complete within %g s"}\n' % DEADLINE_S)
        loris.join(timeout=5)
        assert loris.answer.startswith(b'{"ok":false,"error":"request not complete within')
        assert loris.cut_after is not None and loris.cut_after < DEADLINE_S + 0.5
    finally:
        silent.close()
        loop.stop()
    assert len(loop.handle_times) == 3 and max(loop.handle_times) < FAST_S
    assert loop.longest_gap < PROMPT_S and loop.turns > 20


def test_a_client_that_does_not_read_its_answer_blocks_nothing(server, sock_path):
    big = {"ok": True, "blob": "x" * (8 << 20)}   # far beyond any socket buffer
    loop = Loop(server, lambda message, files: big if message["op"] == "big" else {"ok": True})
    reader = connect(sock_path)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        reader.sendall(b'{"op": "big"}\n')
        time.sleep(0.1)
        started = time.monotonic()
        assert request(sock_path, {"op": "status"}, timeout=5) == {"ok": True}
        assert time.monotonic() - started < PROMPT_S
        time.sleep(DEADLINE_S + 0.3)   # the send deadline has passed: dropped
        received = 0
        try:
            while chunk := reader.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < len(big["blob"])
    finally:
        reader.close()
        loop.stop()
    assert max(loop.handle_times) < 0.2   # serialising 8 MiB, no waiting on the reader


def test_a_handler_that_raises_is_an_error_answer_and_serving_goes_on(server, sock_path):
    def handler(message, files):
        if message["op"] == "boom":
            raise RuntimeError("kaput")
        return {"ok": True}
    loop = Loop(server, handler)
    try:
        assert request(sock_path, {"op": "boom"}) == {"ok": False,
                                                       "error": "internal error: kaput"}
        assert request(sock_path, {"op": "status"}) == {"ok": True}
        # an answer that is not JSON is the handler's error too
        loop.handler = lambda message, files: {"ok": True, "x": object()}
        assert request(sock_path, {"op": "status"})["ok"] is False
    finally:
        loop.stop()


@pytest.mark.parametrize("raw", [b"not json\n", b'["op"]\n', b'{"op": 1}\n', b"\xff\n"])
def test_garbage_is_answered_without_the_loop(server, sock_path, raw):
    seen = []
    loop = Loop(server, lambda message, files: seen.append(message) or {"ok": True})
    try:
        with connect(sock_path) as sock:
            sock.sendall(raw)
            answer = answer_of(sock)
        assert answer.startswith(b'{"ok":false,"error":"bad request: ')
        assert seen == []
    finally:
        loop.stop()


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def wait_closed(fds: set[int], timeout: float = 2.0) -> bool:
    """The server closes what it received just after answering (its thread
    may not have got there yet when the client has the answer)."""
    deadline = time.monotonic() + timeout
    while fds & open_fds():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_passed_files_reach_the_handler_and_are_closed_after_it(server, sock_path, tmp_path):
    (tmp_path / "f").write_bytes(b"policy")
    got = []

    def handler(message, files):
        got.extend((fd, os.pread(fd, 100, 0)) for fd in files)
        return {"ok": True}
    loop = Loop(server, handler)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        before = open_fds()
        assert request(sock_path, {"op": "reload"}, fds=(fd, fd)) == {"ok": True}
        assert [content for _fd, content in got] == [b"policy", b"policy"]
        assert wait_closed({received for received, _content in got})
        # files that came with garbage never reach the handler and are closed too
        with connect(sock_path) as sock:
            sock.sendmsg([b"garbage\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                           array.array("i", [fd]))])
            assert b"bad request" in answer_of(sock)
        assert len(got) == 2
        assert wait_closed(open_fds() - before)
    finally:
        os.close(fd)
        loop.stop()


def test_a_non_root_caller_is_refused():
    # a directory nobody can reach the socket through; the server must still refuse
    directory = tempfile.mkdtemp(prefix="eg-control-")
    try:
        os.chmod(directory, 0o755)
        path = os.path.join(directory, "agent.sock")
        served = ControlServer(path)
        seen = []
        loop = Loop(served, lambda message, files: seen.append(message) or {"ok": True})
        try:
            os.chmod(path, 0o666)
            script = ("import socket, sys\n"
                      "s = socket.socket(socket.AF_UNIX)\n"
                      "s.settimeout(5)\n"
                      "s.connect(sys.argv[1])\n"
                      "try:\n"
                      "    s.sendall(b'{\"op\": \"status\"}\\n')\n"
                      "except BrokenPipeError:\n"
                      "    pass  # refused before it was read, as guard.client allows\n"
                      "sys.stdout.write(s.recv(4096).decode())\n")
            result = subprocess.run([sys.executable, "-c", script, path], user=65534,
                                    group=65534, capture_output=True, text=True, timeout=30,
                                    cwd="/")
            assert result.stdout == ('{"ok":false,"error":"permission denied: '
                                     'only root may control the agent"}\n'), result.stderr
            assert seen == []
        finally:
            loop.stop()
            served.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_beyond_the_connection_bound_is_told_busy_at_once(server, sock_path):
    loop = Loop(server)
    silent = [connect(sock_path) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.1)
        started = time.monotonic()
        busy = request(sock_path, {"op": "status"}, timeout=5)
        assert time.monotonic() - started < PROMPT_S
        assert busy["ok"] is False and busy["error"].startswith("busy: ")
        for sock in silent:
            sock.close()
        time.sleep(0.1)
        assert request(sock_path, {"op": "status"}, timeout=5) == {"ok": True, "op": "status"}
    finally:
        for sock in silent:
            sock.close()
        loop.stop()
    assert max(loop.handle_times) < FAST_S


def test_close_returns_at_once_with_clients_connected(sock_path, tmp_path):
    served = ControlServer(sock_path)
    (tmp_path / "f").write_bytes(b"x")
    silent = connect(sock_path)
    loris = SlowLoris(sock_path)
    loris.start()
    waiting = connect(sock_path)   # a complete request nobody handles
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    before = open_fds()
    try:
        waiting.sendmsg([b'{"op": "reload"}\n'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                   array.array("i", [fd]))])
        select.select([served.fileno()], [], [], 2)   # queued for the loop
        started = time.monotonic()
        served.close()
        assert time.monotonic() - started < 0.5
        assert not sock_path.exists()
        assert answer_of(silent) == b"" and answer_of(waiting) == b""
        assert open_fds() <= before   # the queued request's file went with it
        served.close()   # twice is harmless
    finally:
        os.close(fd)
        silent.close()
        waiting.close()
        loris.join(timeout=5)
