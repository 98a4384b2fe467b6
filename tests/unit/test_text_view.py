# SPDX-License-Identifier: Apache-2.0
"""The text view of events (`egress-guard events`, `run --format text`):
a golden file per kind (tests/fixtures/text/KIND.txt, made from
tests/fixtures/events/kinds.jsonl; UPDATE_GOLDEN=1 writes them again),
colour only on a terminal, following a growing file, and hostile input
(not JSON, wrong types, huge lines, terminal escapes) that never raises.
"""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.agent import core
from guard.cli.commands import main
from guard.cli.exitcodes import ExitCode
from guard.report import lines, text
from guard.report.events import EventWriter
from tests.conftest import FIXTURES, ROOT

EVENTS = FIXTURES / "events"
GOLDEN = FIXTURES / "text"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def fixture_events(name: str) -> list[dict]:
    return [orjson.loads(line) for line in (EVENTS / name).read_bytes().splitlines() if line]


def by_kind() -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for event in fixture_events("kinds.jsonl"):
        kinds.setdefault(event["kind"], []).append(event)
    return kinds


def check_golden(name: str, rendered: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(rendered, encoding="utf-8")
    assert rendered == path.read_text(encoding="utf-8"), f"{name} differs (UPDATE_GOLDEN=1)"


# -- a golden file per kind ------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(by_kind()))
def test_each_kind_renders_as_its_golden_file(kind):
    rendered = "".join(text.render(event) + "\n" for event in by_kind()[kind])
    check_golden(f"{kind}.txt", rendered)


def test_every_kind_the_event_reference_lists_has_a_golden_file():
    reference = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    row = next(line for line in reference.splitlines() if line.startswith("| `kind` |"))
    documented = set(re.findall(r"`([a-z_]+)`", row)) - {"kind"}
    assert documented <= set(by_kind()), documented - set(by_kind())
    assert {path.stem for path in GOLDEN.glob("*.txt")} >= documented


def test_malformed_and_hostile_lines_render_as_their_golden_file():
    with open(EVENTS / "hostile.jsonl", "rb") as stream:
        rendered = "".join(text.render_line(line) + "\n"
                           for line in lines.read_stream(stream, "hostile.jsonl"))
    check_golden("hostile.txt", rendered)
    assert "\x1b" not in rendered and "\u202e" not in rendered


def test_the_line_names_time_action_kind_workload_process_destination_and_rule():
    event = {"ts": "2026-11-28T09:12:01.123456789Z", "kind": "connect", "action": "block",
             "rule": "no-pools", "process": {"pid": 4242, "comm": "curl"},
             "cgroup": {"id": 1, "path": "/a"}, "container": {"id": "c", "name": "agent-1"},
             "proto": "tcp", "dst": {"ip": "151.101.0.223", "port": 443, "name": "pypi.org"},
             "hook": "connect"}
    assert text.render(event) == ("09:12:01.123 block connect   agent-1 curl[4242] "
                                  "tcp pypi.org(151.101.0.223):443 rule no-pools")


@pytest.mark.parametrize("detection, words", [
    ({"type": "stratum", "dialect": "cryptonote-login", "confidence": "high",
      "evidence": {"methods": ["login"]}}, "Stratum mining login (cryptonote)"),
    ({"type": "ssh_reverse_tunnel", "dialect": "ssh", "confidence": "high",
      "evidence": {"forward": "9000:localhost:22", "origin": "/root/.ssh/config:3"}},
     "ssh remote forward 9000:localhost:22 (from /root/.ssh/config:3)"),
    ({"type": "brand_new", "dialect": "v2", "confidence": "high", "evidence": {}}, "brand_new/v2"),
    ({"type": "brand_new", "confidence": "high"}, "brand_new"),
    ({"type": 7, "dialect": ["x"], "evidence": "nope"}, "7"),
    ({"dialect": "x"}, "?/x"),
    ("not a finding", "?"),
])
def test_findings_in_words(detection, words):
    assert text.finding_words(detection) == words


# -- colour ----------------------------------------------------------------------------


def test_actions_are_coloured_only_when_asked():
    for action, code in (("block", "\x1b[31m"), ("kill", "\x1b[1;31m"), ("log", "\x1b[33m"),
                         ("allow", "\x1b[32m")):
        event = {"ts": "2026-11-28T09:12:01Z", "kind": "connect", "action": action}
        assert code in text.render(event, colour=True)
        assert "\x1b" not in text.render(event, colour=False)
    assert text.render({"kind": "connect", "action": "block"}, colour=True).split()[1] \
        == "\x1b[31mblock\x1b[0m"


def test_colour_on_a_terminal_unless_no_color(monkeypatch):
    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=False) as terminal:
            monkeypatch.delenv("NO_COLOR", raising=False)
            assert text.use_colour(terminal)
            monkeypatch.setenv("NO_COLOR", "1")
            assert not text.use_colour(terminal)
    finally:
        os.close(leader)
        os.close(follower)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert not text.use_colour(io.StringIO())
    assert not text.use_colour(object())


# -- the events command ----------------------------------------------------------------


def test_events_command_filters_by_kind_and_workload():
    runner = CliRunner()
    path = str(EVENTS / "kinds.jsonl")
    result = runner.invoke(main, ["events", path, "--kind", "dns"])
    assert result.exit_code == 0, result.output
    shown = result.output.splitlines()
    assert len(shown) == len(by_kind()["dns"]) and all(" dns " in line for line in shown)
    result = runner.invoke(main, ["events", path, "--workload", "3f2a*", "--kind", "container"])
    assert len(result.output.splitlines()) == len(by_kind()["container"])
    result = runner.invoke(main, ["events", path, "--workload", "nobody"])
    assert result.output == ""


def test_events_command_reads_stdin_and_shows_malformed_lines():
    runner = CliRunner()
    data = (EVENTS / "kinds.jsonl").read_bytes()[:2000].rsplit(b"\n", 1)[0] + b"\n{oops\n"
    result = runner.invoke(main, ["events"], input=data)
    assert result.exit_code == 0
    assert result.output.splitlines()[-1].startswith("--:--:--.--- ?     malformed <stdin>:")
    assert "\x1b" not in result.output        # not a terminal


def test_events_command_missing_file_is_one_error_line(tmp_path):
    result = CliRunner().invoke(main, ["events", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.strip().startswith("egress-guard: error: ")
    assert "Traceback" not in result.output


# -- following a growing file ----------------------------------------------------------


def test_follow_reads_what_a_writer_appends_until_stopped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    events = fixture_events("kinds.jsonl")[:12]
    stop = threading.Event()

    def writer():
        with open(path, "ab", buffering=0) as out:
            for event in events:
                line = orjson.dumps(event) + b"\n"
                out.write(line[:10])       # a line in two writes: never half a line read
                time.sleep(0.01)
                out.write(line[10:])
        # rotation: a new file at the path
        rotated = tmp_path / "events.jsonl.1"
        path.rename(rotated)
        path.write_bytes(orjson.dumps(events[0]) + b"\n")

    thread = threading.Thread(target=writer)
    seen: list[lines.Line] = []
    deadline = time.monotonic() + 10
    thread.start()
    for line in lines.follow([str(path)], stop=stop, poll_s=0.02):
        seen.append(line)
        if len(seen) == len(events) + 1 or time.monotonic() > deadline:
            stop.set()
    thread.join()
    assert [line.event for line in seen] == events + events[:1]
    assert [line.number for line in seen] == list(range(1, len(events) + 1)) + [1]


def test_follow_stops_when_asked_with_nothing_written(tmp_path):
    path = tmp_path / "quiet.jsonl"
    path.write_bytes(b"")
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert list(lines.follow([str(path)], stop=stop, poll_s=0.05)) == []
    assert time.monotonic() - started < 5


def test_follow_starts_again_after_truncation(tmp_path):
    path = tmp_path / "t.jsonl"
    first, second = fixture_events("kinds.jsonl")[:2]
    path.write_bytes(orjson.dumps(first) + b"\n" + orjson.dumps(first) + b"\n")
    stop = threading.Event()
    seen = []
    for line in lines.follow([str(path)], stop=stop, poll_s=0.02):
        seen.append(line.event)
        if len(seen) == 2:
            path.write_bytes(orjson.dumps(second) + b"\n")   # truncated, shorter
        if len(seen) == 3:
            stop.set()
    assert seen == [first, first, second]


def test_events_follow_ends_cleanly_on_sigint(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes((EVENTS / "kinds.jsonl").read_bytes()[:3000].rsplit(b"\n", 1)[0] + b"\n")
    child = subprocess.Popen(
        [sys.executable, "-m", "guard", "events", "--follow", str(path)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 20
        with open(path, "ab") as out:
            out.write(orjson.dumps({"kind": "loss", "lost": 1, "lost_total": 77}) + b"\n")
        seen = []
        while time.monotonic() < deadline and not (seen and b"(77 in all)" in seen[-1]):
            seen.append(child.stdout.readline())  # what is there, then what is appended
            if not seen[-1]:
                break
        child.send_signal(signal.SIGINT)
        _rest, errors = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0 and errors == b""
    assert seen[0].startswith(b"10:00:01.111 -     agent")
    assert seen[-1] == b"--:--:--.--- -     loss      1 event(s) lost (77 in all)\n"


def test_follow_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(lines.SourceError, match="nope"):
        list(lines.follow([str(tmp_path / "nope")], stop=threading.Event()))


# -- run --format text -----------------------------------------------------------------


def test_text_stream_turns_the_writers_json_lines_into_text():
    out = io.BytesIO()
    writer = EventWriter(text.TextStream(out))
    for event in fixture_events("kinds.jsonl")[:5]:
        writer.write(event)
    writer.flush()
    shown = out.getvalue().decode().splitlines()
    assert shown == [text.render(event) for event in fixture_events("kinds.jsonl")[:5]]


def test_run_format_text_gives_the_agent_a_text_stream(monkeypatch):
    made = []

    class FakeAgent:
        def __init__(self, policies, cgroups, writer, **options):
            made.append(writer)
    def run_until_signalled(_agent):
        (writer,) = made
        writer.write({"ts": "2026-11-28T09:12:01.5Z", "kind": "loss", "lost": 1,
                      "lost_total": 1})
        writer.flush()
    monkeypatch.setattr(core, "Agent", FakeAgent)
    monkeypatch.setattr(core, "start_and_run_until_signalled", run_until_signalled)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = CliRunner().invoke(main, ["run", "--format", "text", "--cgroup", "x"])
    assert result.exit_code == ExitCode.OK, result.output
    assert result.output == "09:12:01.500 -     loss      1 event(s) lost (1 in all)\n"


def test_run_supervise_format_text_makes_the_supervisors_events_text_too(monkeypatch):
    from guard.cli import supervise

    made = []

    class FakeSupervisor:
        def __init__(self, command, stream):
            made.append((command, stream))

        def run(self):
            return 0
    monkeypatch.setattr(supervise, "Supervisor", FakeSupervisor)
    monkeypatch.setattr(sys, "argv", ["egress-guard", "run", "--supervise", "--format", "text"])
    result = CliRunner().invoke(main, ["run", "--supervise", "--format", "text"])
    assert result.exit_code == 0, result.output
    ((command, stream),) = made
    assert command[-3:] == ["run", "--format", "text"] and "--supervise" not in command
    assert isinstance(stream, text.TextStream)


# -- hostile input ---------------------------------------------------------------------


def test_lines_longer_than_the_limit_are_skipped_and_counted(monkeypatch):
    monkeypatch.setattr(lines, "MAX_LINE", 1000)
    data = b'{"kind":"loss"}\n' + b"x" * 5000 + b"\n" + b'{"kind":"error"}\n' + b"y" * 3000
    got = list(lines.read_stream(io.BytesIO(data), "big"))
    assert [line.event and line.event["kind"] for line in got] == ["loss", None, "error", None]
    assert "5000 bytes" in got[1].problem and got[1].number == 2
    assert "3000 bytes" in got[3].problem and got[3].number == 4


def test_a_huge_line_is_never_held_whole():
    splitter = lines.Splitter("s")
    chunk = b"a" * (1 << 20)
    for _ in range(6):
        assert splitter.feed(chunk) == []
    assert len(splitter._pending) <= lines.MAX_LINE   # noqa: SLF001
    (line,) = splitter.feed(b"\n")
    assert line.event is None and "longer than" in line.problem


JSON_SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=30)
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
KEYS = st.sampled_from(["ts", "kind", "action", "rule", "process", "cgroup", "container",
                        "k8s", "dst", "proto", "hook", "dns", "resolver", "direction",
                        "detection", "socket", "state", "policy", "error", "lost", "would",
                        "filename", "counters", "cgroups", "problems", "previous_agent"])
KINDS = st.sampled_from(["agent", "exec", "connect", "socket", "dns", "detection",
                         "container", "policy", "loss", "error", "stdio_socket", "x"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, JSON, max_size=10), KINDS)
def test_any_event_of_any_shape_renders_one_safe_line(event, kind):
    event.setdefault("kind", kind)
    for colour in (False, True):
        line = text.render(event, colour)
        assert "\n" not in line and "\r" not in line
        line.encode("utf-8")
        assert not re.search("[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f-\x9f\u202a-\u202e]", line)
        assert "\x1b" not in re.sub("\x1b\\[[0-9;]*m", "", line)   # only our colours
    text.selected(event, ["connect"], ["a*"])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_read_as_lines_never_raise(data):
    for line in lines.read_stream(io.BytesIO(data), "fuzz"):
        text.render_line(line).encode("utf-8")


def test_escape_sequences_and_lone_surrogates_never_reach_the_terminal():
    event = {"kind": "exec", "action": "log", "cgroup": {"path": "/a\x1b]0;pwned\x07"},
             "process": {"pid": 1, "comm": "\x1b[2J", "argv": ["\u202egnp.exe", "\ud800"]}}
    line = text.render(event)
    assert "\x1b" not in line and "\u202e" not in line and "\x07" not in line
    line.encode("utf-8")
    assert "\\x1b" in line and "\\u202e" in line
