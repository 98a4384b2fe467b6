# SPDX-License-Identifier: Apache-2.0
"""Folded connects, the agent's side (guard/agent/folds.py): the flush of a
fold window the kernel opened, on the fake kernel (its eg_connect_fold is
FakeMaps.folds). The kernel's side is tests/kernel/test_fold.py."""
from __future__ import annotations

import time

import pytest

from guard.agent import folds as folds_module
from guard.agent.folds import Folds, fold_key
from guard.kernel import abi, libbpf
from guard.kernel.records import decode
from guard.policy.replay import Replay
from guard.policy.compile import compile_policy
from guard.policy.load import default_policy
from tests.fakekernel import connect_record, fake_agent

WINDOW_NS = 1000 * 1_000_000


def _now() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _opened(kernel, ip="198.18.0.2", port=29101, **kw):
    """A logged connect that opened a window now: (its raw record, its key, its start)."""
    start = kw.pop("fold_ns", _now())
    raw = connect_record(ip, port, fold_ns=start, **kernel.defaults(kw))
    return raw, fold_key(decode(raw)), start


def test_the_key_is_the_kernels_key_of_the_record():
    raw = connect_record("198.18.0.2", 29101, fold_ns=5, cgroup_id=1 << 33, pid=4321,
                         policy_id=0x0301, rule_id=7, action=abi.Action.LOG)
    key = abi.FoldKey.from_buffer_copy(fold_key(decode(raw)))
    assert (key.cgroup_id, key.tgid, key.policy_id, key.port, key.family) == \
        (1 << 33, 4321, 0x0301, 29101, 4)
    assert (key.proto, key.hook, key.action, key.rule_id) == \
        (abi.Proto.TCP, abi.Hook.CONNECT4, abi.Action.LOG, 7)
    assert bytes(key.addr) == bytes([198, 18, 0, 2]) + bytes(12)


def test_a_window_with_repeats_is_flushed_as_one_more_event_like_the_first():
    with fake_agent() as kernel:
        raw, key, start = _opened(kernel)
        [first] = kernel.feed(raw)
        assert "repeats" not in first and kernel.agent.folds.pending == 1
        kernel.maps.folds[key] = (start, 41)
        assert kernel.agent.folds.flush_due(start + WINDOW_NS - 1) == 0   # not yet due
        assert kernel.agent.folds.flush_due(start + WINDOW_NS) == 1
        [flushed] = kernel.new_events()
        # the 41 connects counted: this event and 40 more like it
        assert flushed["repeats"] == 40 and flushed["window_ms"] == 1000
        for field in ("kind", "action", "rule", "policy", "process", "cgroup", "dst", "proto",
                      "hook", "family"):
            assert flushed[field] == first[field], field
        assert key not in kernel.maps.folds and kernel.agent.folds.pending == 0
        # connects reported = events + their repeats
        connects = kernel.events("connect")
        assert len(connects) + sum(e.get("repeats", 0) for e in connects) == 42
        assert kernel.agent.status()["fold"]["flushed"] == 1


def test_a_window_without_repeats_writes_nothing():
    with fake_agent() as kernel:
        raw, key, start = _opened(kernel)
        kernel.feed(raw)
        kernel.maps.folds[key] = (start, 0)
        assert kernel.agent.folds.flush_due(start + WINDOW_NS) == 0
        assert kernel.new_events() == [] and key not in kernel.maps.folds
        # gone already (another flush took it): nothing either
        kernel.feed(_opened(kernel)[0])
        assert kernel.agent.folds.flush_due(_now() + WINDOW_NS) == 0


def test_the_loop_flushes_what_is_due_and_stop_flushes_the_rest():
    with fake_agent(fold_window_ms=50) as kernel:
        assert kernel.maps.fold_window_ms == 50
        assert kernel.agent.status()["fold"]["window_ms"] == 50
        raw, key, start = _opened(kernel)
        kernel.feed(raw)
        kernel.maps.folds[key] = (start, 3)
        late, late_key, late_start = _opened(kernel, port=29102, fold_ns=_now() + 10 * WINDOW_NS)
        kernel.feed(late)
        kernel.maps.folds[late_key] = (late_start, 5)
        time.sleep(0.06)
        kernel.agent.run(should_stop=lambda: kernel.agent.folds.pending < 2)
        [flushed] = kernel.new_events()
        assert (flushed["repeats"], flushed["dst"]["port"]) == (2, 29101)
        kernel.agent.stop()
        repeats = [e for e in kernel.new_events() if e["kind"] == "connect"]
        assert [(e["repeats"], e["dst"]["port"]) for e in repeats] == [(4, 29102)]


def test_a_stale_window_the_kernel_reopened_carries_its_repeats():
    with fake_agent() as kernel:
        [event] = kernel.connect("198.18.0.2", 29101, repeats=9, fold_ns=_now())
        assert event["repeats"] == 9 and "window_ms" not in event


def test_folding_off_and_refusals_open_no_window():
    with fake_agent(fold_window_ms=0) as kernel:
        assert kernel.maps.fold_window_ms == 0
        kernel.connect("198.18.0.2", 29101)
        kernel.connect("198.18.0.2", 29101, action=abi.Action.BLOCK)
        assert kernel.agent.folds.pending == 0


def test_a_failed_take_is_reported_and_never_raised():
    with fake_agent() as kernel:
        raw, key, start = _opened(kernel)
        kernel.feed(raw)
        kernel.maps.fold_take_error = libbpf.LibbpfError(22, "bpf_map_lookup_and_delete_elem")
        assert kernel.agent.folds.flush_due(start + WINDOW_NS) == 0
        [error] = kernel.new_events()
        assert error["kind"] == "error" and "fold window not flushed" in error["error"]
        assert kernel.agent.status()["fold"]["errors"] == 1


def test_pending_flushes_are_bounded_the_rest_left_to_the_kernel(monkeypatch):
    monkeypatch.setattr(folds_module, "PENDING_MAX", 2)
    with fake_agent() as kernel:
        for port in (29101, 29102, 29103):
            kernel.feed(_opened(kernel, port=port)[0])
        fold = kernel.agent.status()["fold"]
        assert (fold["pending"], fold["left_to_kernel"]) == (2, 1)


class _Maps:
    """Only what Folds asks of the maps: eg_connect_fold as a dict."""

    def __init__(self):
        self.folds: dict[bytes, tuple[int, int]] = {}

    def take_fold(self, key: bytes):
        return self.folds.pop(key, None)


class _Agent:
    def __init__(self):
        from guard.report.events import Clock
        self.maps, self.clock = _Maps(), Clock()
        self.emitted: list[dict] = []
        self.errors: list[str] = []

    def emit(self, event, policy_id):
        self.emitted.append(event)

    def error(self, message, **fields):
        self.errors.append(message)


def test_flushes_come_in_the_order_their_windows_end():
    agent = _Agent()
    folds = Folds(agent, 100)
    for port, start in ((29103, 300), (29101, 100), (29102, 200)):
        record = decode(connect_record("198.18.0.2", port, fold_ns=start))
        agent.maps.folds[fold_key(record)] = (start, port - 29100)
        folds.opened(record, {"kind": "connect", "dst": {"port": port}}, 0)
    assert folds.flush_due(100 * 1_000_000 + 250) == 2
    assert [(e["dst"]["port"], e["repeats"]) for e in agent.emitted] == [(29101, 0), (29102, 1)]
    assert folds.flush_all() == 1 and folds.pending == 0
    assert agent.emitted[-1]["repeats"] == 2 and agent.emitted[-1]["window_ms"] == 100
    assert folds.status()["folded"] == 6


@pytest.mark.parametrize("repeats, connections", [(None, 1), (0, 1), (41, 42), ("x", 1),
                                                  (True, 1), (-3, 1)])
def test_policy_test_judges_a_folded_event_once_and_counts_its_connections(repeats, connections):
    policy = default_policy()
    replay = Replay([policy], [compile_policy(policy)])
    event = {"ts": "2026-12-07T10:00:00.000000000Z", "kind": "connect", "action": "block",
             "rule": None, "policy": {"name": policy.name, "generation": 1},
             "process": {"pid": 1, "comm": "x"}, "cgroup": {"id": 1, "path": "/a"},
             "proto": "tcp", "family": "ipv4", "dst": {"ip": "198.18.0.2", "port": 29101},
             "hook": "connect"}
    if repeats is not None:
        event["repeats"] = repeats
    replay.feed(event)
    summary = replay.summary()
    assert summary["judged"] == 1 and summary["connections"] == connections


def test_the_text_view_says_how_many_connects_an_event_stands_for():
    from guard.report.text import render
    event = {"ts": "2026-12-07T10:00:00.000000000Z", "kind": "connect", "action": "log",
             "rule": None, "process": {"pid": 7, "comm": "curl"}, "cgroup": {"id": 1, "path": "/a"},
             "proto": "tcp", "dst": {"ip": "198.18.0.2", "port": 29101}, "hook": "connect"}
    assert " x" not in render(event, colour=False)
    assert "198.18.0.2:29101 x42" in render({**event, "repeats": 41}, colour=False)
