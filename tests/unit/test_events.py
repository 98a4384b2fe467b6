# SPDX-License-Identifier: Apache-2.0
"""Decoding ring-buffer records and rendering them as events."""
from __future__ import annotations

import ctypes

import orjson
import pytest
from hypothesis import given, strategies as st

from guard.kernel import abi
from guard.kernel.records import (ConnectRecord, DecodeError, ExecRecord, PayloadRecord, decode,
                          split_argv)
from guard.report.events import Clock, describe, rfc3339
from guard.workloads.process import ProcessInfo


def header(kind, size, action=abi.Action.LOG, rule_id=0) -> abi.EventHeader:
    return abi.EventHeader(kind=kind, size=size, ktime_ns=5_000_000_123, cgroup_id=77,
                           pid=1234, ppid=1, uid=1000, policy_id=1, comm=b"python3",
                           action=action, rule_id=rule_id)


def exec_bytes(argv: bytes, flags=0) -> bytes:
    ev = abi.ExecEvent(hdr=header(abi.EventKind.EXEC, 0), flags=flags, exe_size=12,
                       argv_size=len(argv), filename=b"/usr/bin/nc", exe=b"/bin/nc.openbsd")
    # ctypes char arrays stop at the first NUL, so the argv bytes are appended raw
    return bytes(ev)[:abi.ExecEvent.argv.offset] + argv


def test_exec_record_keeps_only_the_used_argv():
    record = decode(exec_bytes(b"nc\0-l\0\0x y\0"))
    assert isinstance(record, ExecRecord)
    assert record.argv == ["nc", "-l", "", "x y"]
    assert record.filename == "/usr/bin/nc" and record.exe == "/bin/nc.openbsd"
    assert record.header.comm == "python3" and record.header.pid == 1234
    assert not record.argv_truncated


def test_truncated_argv_flag_and_partial_last_argument():
    record = decode(exec_bytes(b"a\0bc\0de", flags=abi.ExecFlags.ARGV_TRUNCATED))
    assert record.argv == ["a", "bc", "de"] and record.argv_truncated


def test_connect_record_ipv4_and_ipv6():
    ev = abi.ConnectEvent(hdr=header(abi.EventKind.CONNECT, 88, abi.Action.BLOCK, 3),
                          family=4, proto=abi.Proto.TCP, hook=abi.Hook.CONNECT4, port=3333)
    ev.addr[:4] = [198, 18, 0, 2]
    record = decode(bytes(ev))
    assert isinstance(record, ConnectRecord)
    assert (record.ip, record.port, record.family) == ("198.18.0.2", 3333, 4)
    ev.family = 6
    ev.addr[:] = [0] * 15 + [1]
    assert decode(bytes(ev)).ip == "::1"


def test_event_json_shape_is_the_documented_one():
    ev = abi.ConnectEvent(hdr=header(abi.EventKind.CONNECT, 88, abi.Action.BLOCK, 1),
                          family=4, proto=abi.Proto.UDP, hook=abi.Hook.SENDMSG4, port=53)
    ev.addr[:4] = [127, 0, 0, 1]
    event = describe(decode(bytes(ev)), Clock(), rule="r", cgroup_path="/a/b",
                     policy_name="p", process=ProcessInfo("/bin/x", ["x"], False))
    assert set(event) >= {"ts", "kind", "action", "rule", "process", "cgroup", "proto",
                          "family", "dst"}
    assert event["kind"] == "connect" and event["action"] == "block"
    assert event["proto"] == "udp" and event["family"] == "ipv4"
    assert event["dst"] == {"ip": "127.0.0.1", "port": 53}
    assert set(event["process"]) >= {"pid", "ppid", "uid", "comm", "exe", "argv",
                                     "argv_truncated"}
    assert event["cgroup"] == {"id": 77, "path": "/a/b"}
    orjson.dumps(event)


def test_rfc3339_has_nanoseconds():
    assert rfc3339(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"


def test_short_and_unknown_records_are_decode_errors():
    with pytest.raises(DecodeError):
        decode(b"\x01\x00")
    bogus = bytes(header(99, 64))
    with pytest.raises(DecodeError):
        decode(bogus)
    short_connect = bytes(header(abi.EventKind.CONNECT, 64))
    with pytest.raises(DecodeError):
        decode(short_connect)


@given(st.binary(max_size=ctypes.sizeof(abi.ExecEvent) + 16))
def test_decode_never_raises_anything_but_decode_error(data):
    try:
        decode(data)
    except DecodeError:
        pass


def payload_bytes(sample: bytes, *, family=4, kind=abi.SampleKind.FIRST,
                  flags=abi.PayloadFlags.HELD, proto=abi.Proto.TCP) -> bytes:
    ev = abi.PayloadEvent(hdr=header(abi.EventKind.PAYLOAD, 0), cookie=0x1122334455667788,
                          family=family, proto=proto, sample_kind=kind, flags=flags,
                          port=3333, sample_size=len(sample), payload_size=900)
    ev.addr[:16] = [198, 18, 0, 7] + [0] * 12 if family == 4 else [0x20, 0x01] + [0] * 13 + [9]
    # the kernel sends the record cut to sample_size
    return bytes(ev)[:abi.PayloadEvent.sample.offset] + sample


def test_payload_record_fields_by_offset():
    record = decode(payload_bytes(b'{"id":1,"method":"mining.subscribe"}\n'))
    assert isinstance(record, PayloadRecord)
    assert record.cookie == 0x1122334455667788
    assert (record.family, record.ip, record.port) == (4, "198.18.0.7", 3333)
    assert record.proto is abi.Proto.TCP and record.sample_kind is abi.SampleKind.FIRST
    assert record.held and record.payload_size == 900
    assert record.sample == b'{"id":1,"method":"mining.subscribe"}\n'
    assert record.header.pid == 1234 and record.header.comm == "python3"
    assert record.header.action is abi.Action.LOG
    six = decode(payload_bytes(b"GET / HTTP/1.1\r\n", family=6, kind=abi.SampleKind.INBOUND,
                               flags=0))
    assert six.ip == "2001::9" and six.sample_kind is abi.SampleKind.INBOUND and not six.held


def test_payload_record_sample_stops_where_the_record_does():
    raw = payload_bytes(b"abcdef")
    assert decode(raw[:-2]).sample == b"abcd"      # sample_size says 6, 4 arrived


@pytest.mark.parametrize("field, value", [("kind", 99), ("proto", 3), ("family", 5)])
def test_bad_payload_records_are_decode_errors(field, value):
    raw = {"kind": lambda: payload_bytes(b"x", kind=value),
           "proto": lambda: payload_bytes(b"x", proto=value),
           "family": lambda: payload_bytes(b"x", family=value)}[field]()
    with pytest.raises(DecodeError):
        decode(raw)


@given(st.binary(min_size=0, max_size=abi.SAMPLE_MAX + 64))
def test_payload_decode_never_raises_anything_but_decode_error(tail):
    head = int(abi.EventKind.PAYLOAD).to_bytes(4, "little")
    try:
        decode(head + tail)
    except DecodeError:
        pass


def test_split_argv():
    assert split_argv(b"") == []
    assert split_argv(b"a\0") == ["a"]
    assert split_argv(b"a\0\0") == ["a", ""]
