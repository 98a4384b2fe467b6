# SPDX-License-Identifier: Apache-2.0
"""Verdicts -> effects (guard/respond/responder.py) with fake maps and
objects, as any user: who may be signalled, failed actions reported rather
than raised, allowed flows written in one batch, socket resets and the
network namespace they run in.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading

import pytest

from guard.kernel import abi
from guard.respond import responder
from guard.respond.responder import Responder, in_netns_of


class FakeMaps:
    def __init__(self, fail: OSError | None = None):
        self.calls: list[tuple] = []
        self.fail = fail

    def _call(self, *call):
        if self.fail is not None:
            raise self.fail
        self.calls.append(call)

    def block_process(self, pid, start_ns):
        self._call("block_process", pid, start_ns)

    def flow_verdict(self, cookie, action):
        self._call("flow_verdict", cookie, action)

    def flow_verdicts(self, cookies, action):
        self._call("flow_verdicts", list(cookies), action)

    def request_reset(self, cookie):
        self._call("request_reset", cookie)


class FakeObjects:
    def __init__(self, can_reset: bool = True):
        self.can_reset_sockets = can_reset
        self.resets: list[int] = []   # the network namespace each reset ran in

    def run_socket_reset(self):
        self.resets.append(os.stat("/proc/thread-self/ns/net").st_ino)


@pytest.fixture
def kills(monkeypatch):
    """os.kill recorded, never sent."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    return sent


@pytest.fixture
def in_cgroup(monkeypatch):
    """Every pid lives in the cgroup set here (None: gone)."""
    where = {"path": "/guarded/ctr"}
    monkeypatch.setattr(responder, "cgroup_path_of", lambda pid: where["path"])
    return where


# -- signals ----------------------------------------------------------------------------


@pytest.mark.parametrize("pid", [0, 1, -1, -42])
def test_pid_1_and_below_are_never_signalled(kills, pid):
    assert Responder(FakeMaps(), FakeObjects()).signal(pid, signal.SIGKILL, None) is False
    assert kills == []


def test_the_agent_never_signals_itself(kills):
    r = Responder(FakeMaps(), FakeObjects())
    assert r.kill(os.getpid(), None) is False
    assert kills == [] and r.take_errors() == []


@pytest.mark.parametrize("actual, named, sent", [
    ("/guarded/ctr", "/guarded/ctr", True),
    ("/guarded/ctr/sub", "/guarded/ctr", True),
    ("/guarded/ctr/sub", "/guarded/ctr/", True),
    ("/guarded/ctr2", "/guarded/ctr", False),    # a sibling that shares a prefix
    ("/other", "/guarded/ctr", False),
    ("/guarded", "/guarded/ctr", False),          # the parent is not inside
    (None, "/guarded/ctr", False),                # the process is gone
])
def test_only_a_process_still_in_the_named_cgroup_is_signalled(kills, in_cgroup, actual,
                                                               named, sent):
    in_cgroup["path"] = actual
    r = Responder(FakeMaps(), FakeObjects())
    assert r.kill(4242, named) is sent
    assert kills == ([(4242, signal.SIGKILL)] if sent else [])


def test_resume_sends_sigcont(kills, in_cgroup):
    assert Responder(FakeMaps(), FakeObjects()).resume(4242, "/guarded/ctr") is True
    assert kills == [(4242, signal.SIGCONT)]


def test_a_process_gone_before_the_signal_is_no_error(monkeypatch):
    def gone(pid, sig):
        raise ProcessLookupError(errno.ESRCH, "No such process")
    monkeypatch.setattr(os, "kill", gone)
    r = Responder(FakeMaps(), FakeObjects())
    assert r.kill(4242, None) is False
    assert r.take_errors() == []


def test_a_signal_refused_is_reported_not_raised(monkeypatch):
    def refused(pid, sig):
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "kill", refused)
    r = Responder(FakeMaps(), FakeObjects())
    assert r.kill(4242, None) is False
    (error,) = r.take_errors()
    assert error.startswith("signal(4242, <Signals.SIGKILL: 9>, None): ")
    assert "Operation not permitted" in error
    assert r.take_errors() == []   # taken once


def test_a_real_process_in_our_own_cgroup_is_signalled():
    child = subprocess.Popen(["sleep", "30"])
    try:
        mine = responder.cgroup_path_of(os.getpid())
        assert mine is not None and mine.startswith("/")
        r = Responder(FakeMaps(), FakeObjects())
        assert r.signal(child.pid, signal.SIGTERM, mine) is True
        assert child.wait(timeout=5) == -signal.SIGTERM
        # a cgroup it is not in: left alone
        other = subprocess.Popen(["sleep", "30"])
        try:
            assert r.kill(other.pid, mine.rstrip("/") + "/not-here") is False
            assert other.poll() is None
        finally:
            other.kill()
            other.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# -- processes and flows in the maps ------------------------------------------------------


def test_block_process_writes_the_map():
    maps = FakeMaps()
    Responder(maps, FakeObjects()).block_process(4242, 123456789)
    assert maps.calls == [("block_process", 4242, 123456789)]


def test_a_map_that_fails_is_reported_and_the_action_returns_false():
    maps = FakeMaps(fail=OSError(errno.E2BIG, "Argument list too long"))
    r = Responder(maps, FakeObjects())
    assert r.block_process(4242, 1) is False
    assert r.block_flow(7, os.getpid(), abi.Proto.TCP) is False
    r.allow_flow(8)
    assert r.flush_allowed() is False
    errors = r.take_errors()
    assert [e.split("(")[0] for e in errors] == ["block_process", "block_flow", "flush_allowed"]
    assert all("Argument list too long" in e for e in errors)


def test_allowed_flows_are_written_in_one_batch_once():
    maps = FakeMaps()
    r = Responder(maps, FakeObjects())
    for cookie in (5, 6, 5, 7):
        r.allow_flow(cookie)
    assert maps.calls == []   # nothing until the flush
    r.flush_allowed()
    assert maps.calls == [("flow_verdicts", [5, 6, 7], abi.Action.ALLOW)]
    r.flush_allowed()
    assert len(maps.calls) == 1   # nothing pending: no write


def test_a_blocked_flow_is_not_allowed_by_a_pending_allow():
    maps = FakeMaps()
    r = Responder(maps, FakeObjects(can_reset=False))
    r.allow_flow(5)
    r.allow_flow(6)
    assert r.block_flow(5, os.getpid(), abi.Proto.TCP) is False   # no reset here
    r.flush_allowed()
    assert maps.calls == [("flow_verdict", 5, abi.Action.BLOCK),
                          ("flow_verdicts", [6], abi.Action.ALLOW)]


def test_block_flow_resets_a_tcp_socket_in_the_flows_namespace():
    maps, objects = FakeMaps(), FakeObjects()
    r = Responder(maps, objects)
    assert r.block_flow(9, os.getpid(), abi.Proto.TCP) is True
    assert maps.calls == [("flow_verdict", 9, abi.Action.BLOCK), ("request_reset", 9)]
    assert objects.resets == [os.stat("/proc/self/ns/net").st_ino]


@pytest.mark.parametrize("cookie, proto, can_reset", [
    (0, abi.Proto.TCP, True),       # no cookie: nothing to name the socket by
    (9, abi.Proto.UDP, True),       # not TCP
    (9, abi.Proto.TCP, False),      # no bpf_sock_destroy on this kernel
])
def test_no_reset_where_none_can_be_done(cookie, proto, can_reset):
    maps, objects = FakeMaps(), FakeObjects(can_reset)
    assert Responder(maps, objects).reset_socket(cookie, os.getpid(), proto) is False
    assert ("request_reset", cookie) not in maps.calls and objects.resets == []


@pytest.mark.parametrize("code", [errno.ENOENT, errno.ESRCH])
def test_a_socket_or_process_gone_during_the_reset_is_no_error(code):
    class Vanishing(FakeObjects):
        def run_socket_reset(self):
            raise OSError(code, os.strerror(code))
    r = Responder(FakeMaps(), Vanishing())
    assert r.reset_socket(9, os.getpid(), abi.Proto.TCP) is False
    assert r.take_errors() == []


def test_a_reset_for_a_process_that_is_gone_says_it_did_not_reset():
    dead = subprocess.Popen(["true"])
    dead.wait()
    maps, objects = FakeMaps(), FakeObjects()
    reset = Responder(maps, objects).reset_socket(9, dead.pid, abi.Proto.TCP)
    assert objects.resets == []   # nothing ran ...
    assert reset is False         # ... so it must not say it reset the socket


# -- network namespaces -----------------------------------------------------------------


def test_in_netns_of_ourselves_runs_here():
    ran = []
    in_netns_of(os.getpid(), lambda: ran.append(threading.current_thread()))
    assert ran == [threading.current_thread()]


def test_in_netns_of_a_gone_process_runs_nothing():
    dead = subprocess.Popen(["true"])
    dead.wait()
    ran = []
    in_netns_of(dead.pid, lambda: ran.append(1))
    assert ran == []


@pytest.fixture
def other_netns():
    """A process in a network namespace of its own (and, unprivileged, a
    user namespace of its own: the only way a user gets one)."""
    flags = ["-n"] if os.geteuid() == 0 else ["-r", "-n"]
    child = subprocess.Popen(["unshare", *flags, "sleep", "30"])
    try:
        for _ in range(500):
            try:
                if os.stat(f"/proc/{child.pid}/ns/net").st_ino != \
                        os.stat("/proc/self/ns/net").st_ino:
                    break
            except OSError:
                pass
            threading.Event().wait(0.01)
        else:
            pytest.skip("unshare could not make a network namespace here")
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_in_netns_of_another_namespace(other_netns):
    theirs = os.stat(f"/proc/{other_netns}/ns/net").st_ino
    seen = []

    def where():
        seen.append(os.stat("/proc/thread-self/ns/net").st_ino)
    if os.geteuid() == 0:
        in_netns_of(other_netns, where)
        assert seen == [theirs]   # ran there, in a thread of its own ...
        assert os.stat("/proc/thread-self/ns/net").st_ino != theirs   # ... we stay here
    else:
        # setns needs CAP_SYS_ADMIN here too: refused, and the caller hears it
        with pytest.raises(PermissionError):
            in_netns_of(other_netns, where)
        assert seen == []


def test_a_reset_the_namespace_refuses_is_reported(other_netns, monkeypatch):
    if os.geteuid() == 0:   # root may enter it: setns's answer to others
        def refused(_fd):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(responder, "_setns", refused)
    maps, objects = FakeMaps(), FakeObjects()
    r = Responder(maps, objects)
    assert r.block_flow(9, other_netns, abi.Proto.TCP) is False
    (error,) = r.take_errors()
    assert error.startswith("reset_socket(9, ") and "Operation not permitted" in error
    assert objects.resets == []
    assert maps.calls[0] == ("flow_verdict", 9, abi.Action.BLOCK)   # blocked all the same
