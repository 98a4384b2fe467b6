# SPDX-License-Identifier: Apache-2.0
"""The agent's own parts under hostile input, without root: escaping of
bytes that are not UTF-8, an event writer whose stream fails, a process table
bounded by bytes, the hold watchdog, the supervisor."""
from __future__ import annotations

import io
import signal
import sys
import time
import tracemalloc
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.report import safejson
from guard.agent.holds import HoldWatchdog
from guard.report.events import EventWriter
from guard.workloads.process import ProcessInfo, ProcessTable, entry_bytes
from guard.cli.supervise import Supervisor


# -- escaping -------------------------------------------------------------------

def test_valid_text_is_untouched_and_has_no_escaped_field():
    event = {"kind": "exec", "process": {"argv": ["a\\b", "ü", "€"]}}
    assert orjson.loads(safejson.dumps(event)) == event


def test_bytes_that_are_not_utf8_are_escaped_and_listed():
    argv = [b"/bin/true", b"\xff", b"a\\b\xfe"]
    event = {"kind": "exec", "process": {"argv": [a.decode("utf-8", "surrogateescape")
                                                  for a in argv]},
             "cgroup": {"path": b"/kid\xff".decode("utf-8", "surrogateescape")}}
    written = orjson.loads(safejson.dumps(event))
    assert written["process"]["argv"] == ["/bin/true", "\\xff", "a\\\\b\\xfe"]
    assert written["cgroup"]["path"] == "/kid\\xff"
    assert written["escaped"] == ["process.argv[1]", "process.argv[2]", "cgroup.path"]
    assert [safejson.unescape_text(a) for a in written["process"]["argv"][1:]] == argv[1:]


def test_lone_surrogates_from_elsewhere_keys_and_huge_integers_are_written():
    event = {"labels": {"\ud800key": "\udfff"}, "n": 1 << 70, "s": {1, 2}}
    written = orjson.loads(safejson.dumps(event))
    assert written["n"] == str(1 << 70)
    assert set(written["escaped"]) >= {"labels.{key}", "n", "s"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_escaping_is_faithful_for_any_bytes(raw):
    text = raw.decode("utf-8", "surrogateescape")
    line = safejson.dumps({"v": text})
    written = orjson.loads(line)
    if "escaped" in written:
        assert safejson.unescape_text(written["v"]) == raw
    else:
        assert written["v"].encode() == raw


# -- the event writer ----------------------------------------------------------------

class FailingStream(io.RawIOBase):
    def __init__(self):
        self.failing = True
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        if self.failing:
            raise OSError(28, "No space left on device")
        self.data += b
        return len(b)


def test_a_failing_stream_never_raises_and_the_loss_is_reported_when_it_recovers():
    stream = FailingStream()
    writer = EventWriter(stream)
    writer.BACKLOG_BYTES = 200
    for i in range(50):
        writer.write({"kind": "exec", "n": i})
        writer.flush()
    assert writer.lost_lines > 0
    stream.failing = False
    writer.write({"kind": "exec", "n": "after"})
    writer.flush()
    lines = [orjson.loads(line) for line in bytes(stream.data).splitlines()]
    assert lines[0]["kind"] == "error" and "No space left" in lines[0]["error"]
    assert lines[0]["lost_lines_total"] == writer.lost_lines
    assert lines[-1]["n"] == "after"
    assert len(lines) - 1 + writer.lost_lines == 51   # every line: written or counted


def test_an_event_that_cannot_be_serialised_becomes_an_error_event(monkeypatch):
    out = io.BytesIO()
    writer = EventWriter(out)

    def broken(*_args, **_kwargs):
        raise RecursionError("maximum recursion depth exceeded")
    real = safejson.dumps
    calls = iter([broken, real])
    monkeypatch.setattr(safejson, "dumps", lambda *a, **k: next(calls)(*a, **k))
    writer.write({"kind": "exec"})
    writer.flush()
    line = orjson.loads(out.getvalue())
    assert line["kind"] == "error" and "RecursionError" in line["error"]
    assert writer.unwritable == 1


# -- the process table ----------------------------------------------------------------

def test_the_process_table_is_bounded_by_bytes():
    table = ProcessTable(max_bytes=4 << 20)
    argv = ["ab"] * 1365
    for pid in range(5000):
        table._remember(pid, ProcessInfo(exe="/bin/true", argv=list(argv), argv_truncated=False))
    assert table.bytes <= 4 << 20
    assert len(table) < 5000
    assert table.lookup(4999).argv == argv          # the most recent stay


def test_the_estimate_covers_what_python_really_keeps():
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        infos = [ProcessInfo(exe="/bin/true", argv=[f"a{i % 10}" for i in range(1365)],
                             argv_truncated=False) for _ in range(50)]
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sum(map(entry_bytes, infos)) >= used * 0.9


# -- the hold watchdog -------------------------------------------------------------------

class HeldMaps:
    def __init__(self, held):
        self.held = dict(held)

    def held_execs(self):
        return dict(self.held)

    def release_held(self, pid):
        return self.held.pop(pid, None) is not None


class Recorder:
    def __init__(self):
        self.done = []

    def kill(self, pid, cgroup_path):
        self.done.append(("kill", pid))

    def resume(self, pid, cgroup_path):
        self.done.append(("resume", pid))

    def take_errors(self):
        return []


class QuietDetector:
    def __init__(self, findings=()):
        self.findings = list(findings)

    def exec_findings(self, *_args):
        return self.findings

    def take_errors(self):
        return []


def watchdog(held, policy=None, detector=None, now_ns=10_000_000_000):
    maps, responder = HeldMaps(held), Recorder()
    dog = HoldWatchdog(maps, responder, detector or QuietDetector(), timeout_ms=5000,
                       policy_for_pid=lambda pid: (policy, "/guarded"),
                       files_of=lambda pid: None,
                       process_of=lambda pid: SimpleNamespace(argv=["ssh"], exe="/usr/bin/ssh"),
                       clock_ns=lambda: now_ns)
    return dog, maps, responder


def test_a_hold_past_its_timeout_is_settled_without_the_loop():
    dog, maps, responder = watchdog({10: 0, 11: 9_000_000_000})
    assert dog.check() == 1
    assert responder.done == [("resume", 10)] and 10 not in maps.held and 11 in maps.held
    assert "held at exec for 10000 ms" in dog.reports[0]["error"]


def test_judging_that_fails_kills_the_held_program(monkeypatch):
    class Raising(QuietDetector):
        def exec_findings(self, *_args):
            raise MemoryError()
    policy = SimpleNamespace()
    dog, _maps, responder = watchdog({12: 0}, policy=policy, detector=Raising())
    dog.check()
    assert responder.done == [("kill", 12)]
    assert any("MemoryError" in r["error"] for r in dog.reports)


def test_the_watchdog_thread_runs_while_the_main_thread_is_busy():
    dog, maps, responder = watchdog({13: 0})
    dog.start()
    try:
        deadline = time.monotonic() + 5
        while maps.held and time.monotonic() < deadline:
            sum(range(10000))      # the loop, busy in Python
        assert responder.done == [("resume", 13)]
    finally:
        dog.stop()


# -- the supervisor -----------------------------------------------------------------------

def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_supervisor_restarts_a_killed_agent_and_says_so(tmp_path):
    marker = tmp_path / "runs"
    # the first run kills itself with SIGKILL, the second exits cleanly
    code = (f"import os, signal, pathlib; p = pathlib.Path({str(marker)!r}); "
            "n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1)); "
            "os.kill(os.getpid(), signal.SIGKILL) if n == 0 else None")
    out = io.BytesIO()
    slept = []
    supervisor = Supervisor(child(code), out, sleep=slept.append)
    assert supervisor.run() == 0
    events = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [e["state"] for e in events] == ["restarting"]
    assert events[0]["reason"] == "killed by SIGKILL" and events[0]["exit"] == -signal.SIGKILL
    assert slept == [0.5]
    assert marker.read_text() == "2"


def test_the_supervisor_does_not_restart_an_agent_that_cannot_start():
    out = io.BytesIO()
    assert Supervisor(child("raise SystemExit(4)"), out, sleep=lambda s: None).run() == 4
    assert out.getvalue() == b""


def test_the_supervisor_backs_off_on_repeated_crashes(tmp_path):
    marker = tmp_path / "runs"
    code = (f"import pathlib; p = pathlib.Path({str(marker)!r}); "
            "n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1)); "
            "raise SystemExit(5 if n < 4 else 0)")
    slept = []
    out = io.BytesIO()
    assert Supervisor(child(code), out, sleep=slept.append).run() == 0
    assert slept == [0.5, 1.0, 2.0, 4.0]
    events = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [e["restarts"] for e in events] == [1, 2, 3, 4]
    assert events[0]["reason"].startswith("crashed")


@pytest.mark.parametrize("code", [0, 2, 3, 4])
def test_exit_codes_that_end_supervision(code):
    assert Supervisor(child(f"raise SystemExit({code})"), io.BytesIO(),
                      sleep=lambda s: None).run() == code


@pytest.mark.parametrize("code, reason", [
    (-signal.SIGKILL, "killed by SIGKILL"), (-99, "killed by signal 99"),
    (5, "crashed (its crashed event says why)"), (7, "exited with 7")])
def test_the_supervisor_says_why_an_agent_ended(code, reason):
    from guard.cli.supervise import _reason
    assert _reason(code) == reason


def test_an_agent_that_ran_long_enough_restarts_after_the_shortest_pause(tmp_path):
    marker = tmp_path / "runs"
    code = (f"import pathlib; p = pathlib.Path({str(marker)!r}); "
            "n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1)); "
            "raise SystemExit(5 if n < 2 else 0)")
    # run 1 crashes at once; run 2 crashes after 70 s (stable): back to the minimum
    times = iter([0.0, 1.0, 10.0, 80.0, 90.0])
    slept = []
    assert Supervisor(child(code), io.BytesIO(), sleep=slept.append,
                      clock=lambda: next(times)).run() == 0
    assert slept == [0.5, 0.5]


def test_a_stop_during_the_pause_starts_no_new_agent(tmp_path):
    marker = tmp_path / "runs"
    code = (f"import pathlib; p = pathlib.Path({str(marker)!r}); "
            "p.write_text(p.read_text() + 'x' if p.exists() else 'x'); raise SystemExit(5)")
    out = io.BytesIO()
    supervisor = Supervisor(child(code), out, sleep=lambda s: None)
    supervisor._sleep = lambda s: supervisor._forward(signal.SIGTERM, None)   # SIGTERM arrives
    assert supervisor.run() == 0
    assert marker.read_text() == "x"   # not started again
    assert len(out.getvalue().splitlines()) == 1   # the one restarting event, then stopped


def test_sigterm_is_passed_to_the_agent_and_ends_supervision():
    # the agent asks its supervisor to stop (as systemd would), then waits to be told
    code = ("import os, signal, time; time.sleep(0.2); "
            "os.kill(os.getppid(), signal.SIGTERM); time.sleep(30)")
    before = signal.getsignal(signal.SIGTERM)
    out = io.BytesIO()
    started = time.monotonic()
    assert Supervisor(child(code), out, sleep=lambda s: None).run() == 128 + signal.SIGTERM
    assert time.monotonic() - started < 10
    assert out.getvalue() == b""   # stopped, not restarted
    assert signal.getsignal(signal.SIGTERM) is before   # the handler is put back


def test_a_wait_interrupted_by_a_signal_goes_on_waiting():
    class Child:
        calls = 0

        def wait(self):
            Child.calls += 1
            if Child.calls == 1:
                raise InterruptedError
            return 3
    assert Supervisor._wait(Child()) == 3 and Child.calls == 2


def test_supervise_agent_runs_the_agent_module_and_appends_events(tmp_path, monkeypatch):
    from guard.cli import supervise
    made = []

    class Fake:
        def __init__(self, command, stream):
            made.append((command, stream))

        def run(self):
            return 42
    monkeypatch.setattr(supervise, "Supervisor", Fake)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"old\n")
    assert supervise.supervise_agent(["run", "--pin"], str(events)) == 42
    ((command, stream),) = made
    assert command == [sys.executable, "-m", "guard", "run", "--pin"]
    assert stream.name == str(events) and stream.mode == "ab"
    stream.close()
