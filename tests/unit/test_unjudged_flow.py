# SPDX-License-Identifier: Apache-2.0
"""A flow the kernel refused unjudged (flow.bpf.c: more WebSocket frames of
filler than it reads before any message, or urgent data in its first
payload) is reported with why, as a detection of type unjudged_flow, and
its socket reset; nothing in its sample is classified (the kernel never saw
the message the server reads)."""
from __future__ import annotations

from guard.kernel.abi import Action, PayloadFlags, Unjudged
from guard.report import text
from tests.fakekernel import FAKE_COOKIE, fake_agent, payload_record

LOGIN = b'{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"x","agent":"XMRig/6.16.0"}}\n'


def test_a_flow_refused_unjudged_is_reported_with_why_and_reset():
    with fake_agent() as fake:
        [event] = fake.feed(payload_record(b"\n" * 8, flags=PayloadFlags.UNJUDGED,
                                           payload_size=600, port=443,
                                           **fake.defaults({})))
        assert fake.maps.flow_actions == {FAKE_COOKIE: Action.BLOCK}
        assert fake.maps.called("request_reset") == [(FAKE_COOKIE,)]
        assert (event["kind"], event["action"]) == ("detection", "block")
        detection = event["detection"]
        assert (detection["type"], detection["dialect"], detection["confidence"]) == (
            "unjudged_flow", "websocket-filler", "medium")
        assert "filler" in detection["evidence"]["why"]
        assert detection["evidence"]["payload_size"] == 600
        assert event["dst"] == {"ip": "198.18.0.2", "port": 443, "proto": "tcp"}
        assert "refused unjudged" in text.render(event)


def test_an_unjudged_flow_is_not_classified():
    """Even a login in the sample: the kernel's reason is the event, once."""
    with fake_agent() as fake:
        events = fake.feed(payload_record(LOGIN, flags=PayloadFlags.UNJUDGED,
                                          **fake.defaults({})))
        assert [e["detection"]["type"] for e in events] == ["unjudged_flow"]
        assert fake.maps.flow_actions == {FAKE_COOKIE: Action.BLOCK}


def test_urgent_data_says_so():
    """A login with a byte sent out of band inside it: the kernel's view is
    not the pool's, so the refusal names urgent data, not filler."""
    with fake_agent() as fake:
        [event] = fake.feed(payload_record(LOGIN[:20] + b"X" + LOGIN[20:],
                                           flags=PayloadFlags.UNJUDGED,
                                           unjudged=Unjudged.URGENT, **fake.defaults({})))
        assert fake.maps.flow_actions == {FAKE_COOKIE: Action.BLOCK}
        assert fake.maps.called("request_reset") == [(FAKE_COOKIE,)]
        detection = event["detection"]
        assert (detection["type"], detection["dialect"]) == ("unjudged_flow", "urgent-data")
        assert "urgent" in detection["evidence"]["why"] and event["action"] == "block"
        assert "urgent data" in text.render(event)


def test_an_unknown_reason_is_still_a_refusal():
    """A reason this agent does not know (a newer kernel object's) is still
    reported as a refusal, with the first reason's words."""
    with fake_agent() as fake:
        [event] = fake.feed(payload_record(b"x", flags=PayloadFlags.UNJUDGED, unjudged=99,
                                           **fake.defaults({})))
        assert event["detection"]["type"] == "unjudged_flow" and event["action"] == "block"
