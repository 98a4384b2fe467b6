# SPDX-License-Identifier: Apache-2.0
"""The agent's record path made cheap (issue 16, point 3): the shortcuts
give what the long way gave, and stay bounded whatever a workload sends."""
from __future__ import annotations

import ctypes

import pytest

from guard.detect.classify import dns
from guard.kernel import abi, libbpf, records
from guard.kernel.records import DecodeError, decode, kind_of, written_ns
from tests.fakekernel import connect_record, exec_record, fake_agent


def _slow_label_text(label: bytes) -> str:
    """The escaping of _dns_label_text, byte by byte, as it was written first."""
    out = []
    for byte in label:
        char = chr(byte)
        if char in ".\\":
            out.append("\\" + char)
        elif 0x21 <= byte < 0x7F:
            out.append(char.lower())
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def test_a_dns_label_reads_the_same_by_the_shortcut_for_every_byte():
    for byte in range(256):
        for label in (bytes([byte]), b"Mixed" + bytes([byte]) + b"Case", bytes([byte]) * 3):
            assert dns._dns_label_text(label) == _slow_label_text(label), label
    assert dns._dns_label_text(b"WWW") == "www"
    assert dns._dns_label_text(b"a.b\\c d") == "a\\.b\\\\c\\032d"


def test_a_connect_record_decodes_in_one_unpack_as_its_fields_say():
    for ip, family in (("198.18.0.2", 4), ("2001:db8::7", 6)):
        record = decode(connect_record(ip, 4443, proto=abi.Proto.UDP, comm="curl", pid=77,
                                       ppid=76, uid=1000, policy_id=0x102, rule_id=3,
                                       cgroup_id=99, action=abi.Action.WOULD_BLOCK))
        assert (record.family, record.ip, record.port) == (family, ip, 4443)
        assert record.proto is abi.Proto.UDP
        assert record.hook in (abi.Hook.SENDMSG4, abi.Hook.SENDMSG6)
        header = record.header
        assert (header.kind, header.pid, header.ppid, header.uid, header.comm) == (
            abi.EventKind.CONNECT, 77, 76, 1000, "curl")
        assert (header.policy_id, header.rule_id, header.cgroup_id, header.action) == (
            0x102, 3, 99, abi.Action.WOULD_BLOCK)


@pytest.mark.parametrize("field,value", [("proto", 99), ("hook", 200), ("family", 5)])
def test_a_connect_record_with_a_bad_field_is_still_refused(field, value):
    with pytest.raises(DecodeError):
        decode(connect_record(**{field: value}))


def test_the_text_caches_stay_bounded_and_answer_like_the_decoder():
    records._ADDRESSES.clear()
    records._COMMS.clear()
    for i in range(records.TEXT_CACHED * 2 + 7):
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        comm = f"c{i}".encode()
        record = decode(connect_record(ip, comm=comm))
        assert record.ip == ip and record.header.comm == comm.decode()
        assert len(records._ADDRESSES) <= records.TEXT_CACHED
        assert len(records._COMMS) <= records.TEXT_CACHED
    # a comm that is not UTF-8 keeps its bytes, cached or not
    for _ in range(2):
        assert decode(connect_record(comm=b"\xff\xfe")).header.comm == "\udcff\udcfe"


def test_kind_of_and_written_ns_read_the_header_or_say_nothing():
    raw = connect_record(ktime_ns=123456789)
    assert kind_of(raw) == abi.EventKind.CONNECT
    assert written_ns(raw) == 123456789
    assert kind_of(b"\x01") is None
    assert written_ns(raw[:10]) == 0


def test_the_ring_callback_hands_over_a_copy_of_each_record():
    got = []
    sample = libbpf._sampler(got.append)
    buffers = [ctypes.create_string_buffer(b"first\0record"), ctypes.create_string_buffer(b"2nd")]
    for buf, size in zip(buffers, (12, 3)):
        assert sample(None, ctypes.addressof(buf), size) == 0
    buffers[0].raw = b"X" * 13   # the ring reuses its memory: the copies stand
    assert got == [b"first\0record", b"2nd"]


def test_a_storm_of_connects_is_written_whole_and_in_order():
    with fake_agent() as fake:
        fake.push(exec_record(["/usr/bin/python3", "tool.py"], **fake.defaults({})))
        fake.take_lines()
        raws = [connect_record("127.0.0.1", 1000 + i, comm="python3", **fake.defaults({}))
                for i in range(600)]
        for i in range(0, len(raws), 256):
            fake.push(*raws[i:i + 256])
        events = fake.new_events()
    assert [e["dst"]["port"] for e in events] == list(range(1000, 1600))
    first = events[0]
    assert list(first) == ["ts", "kind", "action", "rule", "policy", "process", "cgroup",
                           "proto", "family", "dst", "hook"]
    assert first["process"]["argv"] == ["/usr/bin/python3", "tool.py"]
    assert (first["kind"], first["action"], first["proto"], first["family"], first["hook"]) == (
        "connect", "log", "tcp", "ipv4", "connect")
    assert "name" not in first["dst"]


def test_a_handler_that_raises_is_reported_and_the_batch_goes_on():
    with fake_agent() as fake:
        fake.take_lines()
        handle = fake.agent.handle
        calls = []

        def flaky(raw):
            calls.append(raw)
            if len(calls) == 2:
                raise RuntimeError("boom")
            handle(raw)
        fake.agent.handle = flaky
        fake.agent._pending.extend(connect_record(port=p, **fake.defaults({})) for p in (1, 2, 3))
        fake.agent._drain()
        events = fake.new_events()
    assert [e["kind"] for e in events] == ["connect", "error", "connect"]
    assert "RuntimeError: boom" in events[1]["error"]
    assert events[1]["record_kind"] == abi.EventKind.CONNECT
    assert fake.agent.stats.handler_errors == 1
