# SPDX-License-Identifier: Apache-2.0
"""The control socket's server as any user.

The server answers root only: it reads the caller's uid with SO_PEERCRED
(guard.control.server.peer_credentials) and refuses any other. Here, when
not root, that one function is wrapped so that *this test's own uid* reads
as root: the credentials are still the kernel's, only the test runner's uid
is mapped to 0. The product's check is untouched, so the behaviours of
test_control_server.py (deadlines, slow clients, the connection bound, a
handler that raises, passed files, close()) run unprivileged too. As root
test_control_server.py runs the same tests against the real check, so they
are not repeated here; the tests written here run as anyone.
"""
from __future__ import annotations

import array
import functools
import os
import socket
import time

import pytest

from guard.control import server as control
from guard.control.client import ControlError, request
from guard.control.server import MAX_FILES, REFUSED, ControlServer

from .test_control_server import (  # noqa: F401 - fixtures and tests, run here as well
    DEADLINE_S,
    Loop,
    answer_of,
    connect,
    open_fds,
    server,
    sock_path,
    wait_closed,
)
from . import test_control_server as rooted

_real_peer_credentials = control.peer_credentials


def _as_root_if_us(conn):
    pid, uid, gid = _real_peer_credentials(conn)
    return pid, (0 if uid == os.geteuid() else uid), gid


@pytest.fixture(autouse=True)
def own_uid_is_root(monkeypatch):
    monkeypatch.setattr(control, "CLIENT_DEADLINE_S", DEADLINE_S)
    monkeypatch.setattr(control, "peer_credentials", _as_root_if_us)


def _unprivileged(test):
    """One of test_control_server.py's tests, run here under the patched
    credential check (for root the patch changes nothing, so it runs the same
    test once more; unprivileged, this is where it runs at all)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        return test(*args, **kwargs)
    return run


test_silent_and_slow_clients_neither_stall_the_loop_nor_other_clients = _unprivileged(
    rooted.test_silent_and_slow_clients_neither_stall_the_loop_nor_other_clients)
test_a_client_that_does_not_read_its_answer_blocks_nothing = _unprivileged(
    rooted.test_a_client_that_does_not_read_its_answer_blocks_nothing)
test_a_handler_that_raises_is_an_error_answer_and_serving_goes_on = _unprivileged(
    rooted.test_a_handler_that_raises_is_an_error_answer_and_serving_goes_on)
test_garbage_is_answered_without_the_loop = _unprivileged(
    rooted.test_garbage_is_answered_without_the_loop)
test_passed_files_reach_the_handler_and_are_closed_after_it = _unprivileged(
    rooted.test_passed_files_reach_the_handler_and_are_closed_after_it)
test_beyond_the_connection_bound_is_told_busy_at_once = _unprivileged(
    rooted.test_beyond_the_connection_bound_is_told_busy_at_once)
test_close_returns_at_once_with_clients_connected = _unprivileged(
    rooted.test_close_returns_at_once_with_clients_connected)


# -- written for any user --------------------------------------------------------------


def test_peer_credentials_are_the_callers():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert _real_peer_credentials(a) == (os.getpid(), os.geteuid(), os.getegid())


def test_a_caller_whose_uid_is_not_root_is_refused(server, sock_path, monkeypatch):
    seen = []
    monkeypatch.setattr(control, "peer_credentials",
                        lambda conn: (1234, 65534, 65534))
    loop = Loop(server, lambda message, files: seen.append(message) or {"ok": True})
    try:
        assert request(sock_path, {"op": "status"}, timeout=5) == {"ok": False,
                                                                   "error": REFUSED}
        with connect(sock_path) as sock:
            assert answer_of(sock) == b'{"ok":false,"error":"%s"}\n' % REFUSED.encode()
    finally:
        loop.stop()
    assert seen == []


def test_the_socket_is_private(server, sock_path):
    assert sock_path.stat().st_mode & 0o777 == 0o600
    assert sock_path.parent.stat().st_mode & 0o777 == 0o700


def test_a_request_arrives_whole_across_several_writes(server, sock_path):
    loop = Loop(server)
    try:
        with connect(sock_path) as sock:
            sock.sendall(b'{"op": ')
            time.sleep(0.05)
            sock.sendall(b'"status"}\n')
            assert answer_of(sock) == b'{"ok":true,"op":"status"}\n'
    finally:
        loop.stop()


def test_more_files_than_allowed_are_refused_and_closed(server, sock_path, tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    seen = []
    loop = Loop(server, lambda message, files: seen.append(message) or {"ok": True})
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    before = open_fds()
    try:
        with connect(sock_path) as sock:
            sock.sendmsg([b'{"op": "reload"}\n'], [
                (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd] * (MAX_FILES + 1)))])
            answer = answer_of(sock)
        assert answer == (b'{"ok":false,"error":"bad request: more than %d files"}\n' % MAX_FILES)
        assert wait_closed(open_fds() - before)
    finally:
        os.close(fd)
        loop.stop()
    assert seen == []


def test_a_request_beyond_the_limit_is_refused(server, sock_path, monkeypatch):
    monkeypatch.setattr(control, "REQUEST_LIMIT", 1000)
    seen = []
    loop = Loop(server, lambda message, files: seen.append(message) or {"ok": True})
    try:
        with connect(sock_path) as sock:
            try:
                sock.sendall(b'{"op": "status", "x": "' + b"y" * 100_000)
            except OSError:
                pass   # cut off while sending
            assert answer_of(sock) == b'{"ok":false,"error":"bad request: request too large"}\n'
    finally:
        loop.stop()
    assert seen == []


def test_a_client_that_hangs_up_without_a_word_costs_nothing(server, sock_path):
    loop = Loop(server)
    try:
        for _ in range(3):
            connect(sock_path).close()
        assert request(sock_path, {"op": "status"}, timeout=5) == {"ok": True, "op": "status"}
    finally:
        loop.stop()
    assert len(loop.handle_times) == 1


def test_a_path_that_is_not_a_socket_is_left_alone(tmp_path):
    path = tmp_path / "agent.sock"
    path.write_text("mine")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        ControlServer(path)
    assert path.read_text() == "mine"


def test_a_second_server_on_a_live_socket_is_refused(server, sock_path):
    with pytest.raises(ControlError, match="another agent is already listening"):
        ControlServer(sock_path)
    loop = Loop(server)
    try:   # the first one still serves
        assert request(sock_path, {"op": "status"}, timeout=5)["ok"] is True
    finally:
        loop.stop()


def test_a_socket_left_by_a_dead_agent_is_taken_over(sock_path):
    sock_path.parent.mkdir(mode=0o700, parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()   # the file stays, nobody listens
    served = ControlServer(sock_path)
    loop = Loop(served)
    try:
        assert request(sock_path, {"op": "status"}, timeout=5) == {"ok": True, "op": "status"}
    finally:
        loop.stop()
        served.close()


def test_handle_after_close_runs_nothing(sock_path):
    served = ControlServer(sock_path)
    served.close()
    called = []
    served.handle(lambda message, files: called.append(message) or {"ok": True})
    assert called == []
    assert not sock_path.exists()


def test_a_socket_file_removed_before_close_is_no_error(sock_path):
    served = ControlServer(sock_path)
    sock_path.unlink()
    started = time.monotonic()
    served.close()
    assert time.monotonic() - started < 1.0


def test_a_client_that_vanished_before_its_answer_is_skipped(server, sock_path):
    """The answer to a client that hung up while its request was queued is
    dropped, and serving goes on."""
    import select
    sock = connect(sock_path)
    sock.sendall(b'{"op": "status"}\n')
    assert select.select([server.fileno()], [], [], 2)[0]
    # the request is queued for the loop; the client goes and its deadline passes
    sock.close()
    server.handle(lambda message, files: {"ok": True, "late": True})
    loop = Loop(server)
    try:
        assert request(sock_path, {"op": "status"}, timeout=5) == {"ok": True, "op": "status"}
    finally:
        loop.stop()

