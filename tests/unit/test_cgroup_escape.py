# SPDX-License-Identifier: Apache-2.0
"""A guarded process that left its guarded cgroup (bpf/escape.bpf.c), as
userspace sees it: the escape record decoded, the escape event built (the
contract in docs/events.md), the agent killing what the kernel could not
signal, audit mode only reporting, and the adoption iterator run whenever
cgroups were newly guarded. The kernel's side is tests/kernel/test_cgroup_escape.py."""
from __future__ import annotations

import signal

import orjson
import pytest

from guard.kernel import abi
from guard.kernel.records import DecodeError, EscapeRecord, decode
from guard.report import text
from tests.conftest import FIXTURES
from tests.fakekernel import FAKE_PID, escape_record, fake_agent

PODMAN = "/machine.slice/libpod-" + "ab" * 32 + ".scope"


def policy(name: str = "t", mode: str = "enforce") -> str:
    return ("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: " + name
            + f"\nspec:\n  mode: {mode}\n  defaultAction: allow\n")


def test_escape_records_round_trip():
    record = decode(escape_record(9400, "/other", how=abi.EscapeHow.THREADS,
                                  flags=abi.EscapeFlags.DST_GUARDED, tid=4243, mover_pid=77,
                                  mover_comm="writer", cgroup_id=9321, pid=4242, comm="sh"))
    assert isinstance(record, EscapeRecord)
    assert record.header.kind == abi.EventKind.ESCAPE and record.header.action == abi.Action.KILL
    assert (record.header.pid, record.header.cgroup_id, record.header.comm) == (4242, 9321, "sh")
    assert (record.how, record.flags, record.dst_cgroup_id, record.dst_path) == (
        abi.EscapeHow.THREADS, abi.EscapeFlags.DST_GUARDED, 9400, "/other")
    assert (record.tid, record.mover_pid, record.mover_comm) == (4243, 77, "writer")


def test_a_damaged_escape_record_is_a_decode_error():
    with pytest.raises(DecodeError, match="escape record"):
        decode(escape_record()[:-1])
    with pytest.raises(DecodeError):
        decode(escape_record(how=9))


def test_an_escape_the_kernel_killed_is_reported_and_nothing_more_is_done():
    with fake_agent(policy("sandbox")) as fake:
        elsewhere = fake.tree.mkdir("/elsewhere")
        [event] = fake.feed(escape_record(elsewhere.id, "/elsewhere", mover_comm="sh",
                                          **fake.defaults({"comm": "sh"})))
        assert fake.signals.sent == []          # the kernel's SIGKILL was enough
        assert (event["kind"], event["action"], event["rule"]) == ("escape", "kill", None)
        assert event["policy"]["name"] == "sandbox"
        assert event["cgroup"] == {"id": fake.cgroup.id, "path": fake.cgroup.relative}
        assert event["process"]["pid"] == FAKE_PID and event["process"]["comm"] == "sh"
        assert event["escape"] == {
            "how": "cgroup.procs", "tid": FAKE_PID,
            "to": {"id": elsewhere.id, "path": "/elsewhere", "guarded": False},
            "mover": {"pid": FAKE_PID, "comm": "sh"}, "killed_by": "kernel"}
        assert "would" not in event


def test_an_escape_the_kernel_could_not_signal_is_killed_where_it_went():
    with fake_agent(policy()) as fake:
        fake.signals.cgroup_of[FAKE_PID] = "/elsewhere/deeper"
        [event] = fake.feed(escape_record(4400, "/elsewhere",
                                          flags=abi.EscapeFlags.UNSIGNALLED,
                                          **fake.defaults({})))
        assert fake.signals.sent == [(FAKE_PID, signal.SIGKILL)]
        assert event["escape"]["killed_by"] == "agent"


def test_a_process_that_is_not_where_it_went_is_not_signalled():
    """A pid reused since (it died, another process got it elsewhere)."""
    with fake_agent(policy()) as fake:
        fake.signals.cgroup_of[FAKE_PID] = "/somewhere/else"
        [event] = fake.feed(escape_record(4400, "/elsewhere",
                                          flags=abi.EscapeFlags.UNSIGNALLED,
                                          **fake.defaults({})))
        assert fake.signals.sent == []
        assert event["escape"]["killed_by"] is None and event["action"] == "kill"


def test_a_clone_into_another_cgroup_is_named_by_its_cgroup_id():
    with fake_agent(policy()) as fake:
        other = fake.tree.mkdir("/other.slice/x.scope")
        [event] = fake.feed(escape_record(other.id, "", how=abi.EscapeHow.CLONE,
                                          flags=abi.EscapeFlags.DST_GUARDED,
                                          tid=FAKE_PID, mover_pid=FAKE_PID - 1,
                                          **fake.defaults({})))
        assert event["escape"]["how"] == "clone_into_cgroup"
        assert event["escape"]["to"] == {"id": other.id, "path": "/other.slice/x.scope",
                                         "guarded": True}
        assert event["escape"]["mover"]["pid"] == FAKE_PID - 1


def test_audit_mode_reports_what_enforce_would_have_done():
    with fake_agent(policy("watch", mode="audit")) as fake:
        [event] = fake.feed(escape_record(4400, "/elsewhere",
                                          **fake.defaults({"action": abi.Action.WOULD_KILL})))
        assert (event["action"], event["would"]) == ("log", "kill")
        assert event["escape"]["killed_by"] is None
        assert fake.signals.sent == []


def test_the_escape_event_has_the_documented_fields():
    """The same keys as the example in docs/events.md and the text view's fixture."""
    with fake_agent(policy("sandbox")) as fake:
        [event] = fake.feed(escape_record(4400, "/other", **fake.defaults({})))
    documented = [orjson.loads(line) for line in
                  (FIXTURES / "events" / "kinds.jsonl").read_bytes().splitlines()
                  if b'"kind":"escape"' in line][0]
    assert set(event) - {"container"} == set(documented) - {"container"}
    assert set(event["escape"]) == set(documented["escape"])
    assert set(event["escape"]["to"]) == set(documented["escape"]["to"])
    line = text.render(event)
    assert "escape" in line and "to /other" in line and "killed by the kernel" in line


def test_the_processes_already_in_guarded_cgroups_are_marked_at_start():
    with fake_agent(policy()) as fake:
        order = [name for name, _args in fake.timeline
                 if name in ("objects.attach_cgroup", "maps.guard", "objects.mark_guarded_tasks")]
        assert order == ["objects.attach_cgroup", "maps.guard", "objects.mark_guarded_tasks"]
        fake.tick()
        assert len(fake.objects.called("mark_guarded_tasks")) == 1   # nothing new guarded


def test_a_cgroup_guarded_later_gets_its_processes_marked_at_the_next_tick():
    with fake_agent(policy(), cgroups=()) as fake:
        assert fake.objects.called("mark_guarded_tasks") == []     # nothing guarded yet
        [event] = fake.mkdir(PODMAN)
        assert event["state"] == "guarded"
        fake.tick()
        fake.tick()
        assert len(fake.objects.called("mark_guarded_tasks")) == 1
