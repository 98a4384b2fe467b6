# SPDX-License-Identifier: Apache-2.0
"""dns records (struct guard_dns_event) decoded, and rendered as `dns`
events; `dst.name` on connect events (docs/events.md)."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.detect.classify.dns import parse_message
from guard.kernel import abi
from guard.kernel.abi import Action, DnsDirection, DnsFlags, EventKind, Proto
from guard.kernel.records import DecodeError, DnsRecord, decode
from guard.report import safejson
from guard.report.events import Clock, describe, describe_detection
from guard.workloads.names import NameBook
from guard.workloads.process import ProcessInfo
from tests.fakekernel import (
    FAKE_COOKIE, FAKE_PID, connect_record, dns_message, dns_record, exec_record,
)

NOBODY = ProcessInfo(exe=None, argv=[], argv_truncated=False)
CHAIN = dns_message("alias.egtest", answers=(
    ("alias.egtest", "CNAME", "mid.egtest", 300), ("mid.egtest", "CNAME", "real.egtest", 300),
    ("real.egtest", "A", "198.18.53.20", 60), ("real.egtest", "AAAA", "2001:db8:53::20", 40)))
QUERY = dns_message("tunnel.evil.example", "TXT", answers=(), response=False)


def event_of(raw: bytes, *, parse: bool = True, **kw) -> dict:
    """The record as the agent would show it: decoded, its message parsed
    (guard.detect.classify.dns), described, and through JSON."""
    record = decode(raw)
    kw.setdefault("parsed", parse_message(record.message) if parse else None)
    event = describe(record, Clock(), rule=None, cgroup_path="/sandbox.slice/agent-1.scope",
                     policy_name="names", process=NOBODY, **kw)
    return orjson.loads(safejson.dumps(event))


# --------------------------------------------------------------------------
# Decoding


def test_an_answer_decodes_field_by_field():
    raw = dns_record(CHAIN, flags=DnsFlags.LEARNED, ip="198.18.53.53", port=53, name_id=9,
                     ttl=40, learned=2, netns=4026531840, cookie=77, action=Action.ALLOW,
                     cgroup_id=5, policy_id=3)
    record = decode(raw)
    assert isinstance(record, DnsRecord)
    assert (record.cookie, record.name_id, record.netns) == (77, 9, 4026531840)
    assert (record.family, record.proto, record.direction) == (4, Proto.UDP, DnsDirection.ANSWER)
    assert record.flags == DnsFlags.LEARNED and isinstance(record.flags, DnsFlags)
    assert (record.ip, record.port, record.ttl, record.learned) == ("198.18.53.53", 53, 40, 2)
    assert record.message == CHAIN
    header = record.header
    assert (header.kind, header.action, header.cgroup_id, header.policy_id) == (
        EventKind.DNS, Action.ALLOW, 5, 3)
    assert (header.pid, header.ppid, header.uid, header.comm, header.start_ns) == (0, 0, 0, "", 0)


def test_a_query_keeps_its_process_and_an_ipv6_resolver():
    record = decode(dns_record(QUERY, direction=DnsDirection.QUERY, ip="2001:db8:53::53",
                               proto=Proto.TCP, comm="python3", action=Action.BLOCK))
    assert (record.family, record.ip, record.proto) == (6, "2001:db8:53::53", Proto.TCP)
    assert record.header.pid == FAKE_PID and record.header.comm == "python3"
    assert record.direction == DnsDirection.QUERY and record.cookie == FAKE_COOKIE


def test_the_message_is_cut_to_message_size():
    record = decode(dns_record(CHAIN, message_size=20))
    assert record.message == CHAIN[:20]


def test_a_message_size_that_lies_reads_no_further_than_the_record():
    assert decode(dns_record(CHAIN, message_size=0xFFFF)).message == CHAIN
    # ... nor past GUARD_DNS_MSG_MAX, whatever follows the record
    raw = dns_record(b"\1" * abi.DNS_MSG_MAX, message_size=0xFFFF) + b"\2" * 100
    assert decode(raw).message == b"\1" * abi.DNS_MSG_MAX


def test_a_message_longer_than_the_event_is_cut_and_flagged():
    record = decode(dns_record(b"\0" * 700))
    assert len(record.message) == abi.DNS_MSG_MAX and record.flags & DnsFlags.CUT


def test_an_empty_message():
    record = decode(dns_record(b"", flags=DnsFlags.UNPARSED))
    assert record.message == b"" and parse_message(record.message) is None


def test_unknown_flag_bits_are_kept():
    assert int(decode(dns_record(flags=0xFF)).flags) == 0xFF


@pytest.mark.parametrize("change", [
    {"direction": 0}, {"direction": 3}, {"proto": 1}, {"family": 5},
])
def test_bad_fixed_fields_are_decode_errors(change):
    with pytest.raises(DecodeError):
        decode(dns_record(**change))


def test_a_record_shorter_than_its_fixed_part_is_a_decode_error():
    raw = dns_record(b"")
    assert len(raw) == abi.DnsEvent.message.offset
    with pytest.raises(DecodeError, match="dns record"):
        decode(raw[:-1])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.integers(0, 0xFFFF), st.integers(0, 255),
       st.sampled_from(list(DnsDirection)), st.integers(0, 800))
def test_any_message_decodes_and_describes(message, size, flags, direction, cut):
    raw = dns_record(message, message_size=size, flags=flags, direction=direction)
    raw = raw[:max(cut, abi.DnsEvent.message.offset)]
    record = decode(raw)
    assert len(record.message) <= min(size, abi.DNS_MSG_MAX)
    event = event_of(raw)
    assert event["kind"] == "dns" and isinstance(event["dns"]["why"], list)


# --------------------------------------------------------------------------
# dns events


def test_an_answer_event():
    event = event_of(dns_record(CHAIN, flags=DnsFlags.LEARNED, ttl=40, learned=2,
                                action=Action.ALLOW))
    assert (event["kind"], event["action"], event["direction"]) == ("dns", "allow", "answer")
    assert event["proto"] == "udp" and event["family"] == "ipv4"
    assert event["resolver"] == {"ip": "198.18.53.53", "port": 53}
    assert event["dns"] == {
        "name": "alias.egtest", "type": "A", "rcode": "NOERROR",
        "answers": [{"ip": "198.18.53.20", "ttl": 60}, {"ip": "2001:db8:53::20", "ttl": 40}],
        "cnames": ["mid.egtest", "real.egtest"], "ttl": 40, "learned": 2, "trusted": True,
        "why": []}
    # received in softirq: the process object keeps its shape, with zeros
    assert event["process"] == {"pid": 0, "ppid": 0, "uid": 0, "comm": "", "exe": None,
                                "argv": [], "argv_truncated": False}
    assert event["cgroup"]["path"] == "/sandbox.slice/agent-1.scope"
    assert "dst" not in event


def test_a_refused_query_event():
    event = event_of(dns_record(QUERY, direction=DnsDirection.QUERY, flags=DnsFlags.NO_RULE,
                                action=Action.BLOCK, comm="python3"))
    assert (event["action"], event["direction"]) == ("block", "query")
    assert event["process"]["pid"] == FAKE_PID and event["process"]["comm"] == "python3"
    assert event["dns"] == {"name": "tunnel.evil.example", "type": "TXT", "answers": [],
                            "cnames": [], "learned": 0, "trusted": True, "why": ["no-rule"]}


def test_an_nxdomain_answer():
    event = event_of(dns_record(dns_message("gone.egtest", "AAAA", answers=(), rcode=3)))
    assert (event["dns"]["rcode"], event["dns"]["type"]) == ("NXDOMAIN", "AAAA")
    assert event["dns"]["answers"] == [] and event["dns"]["learned"] == 0
    assert event["action"] == "log"


def test_an_unparsed_message():
    event = event_of(dns_record(b"\x12\x34" + b"\xff" * 30, flags=DnsFlags.UNPARSED))
    assert event["dns"]["name"] is None and event["dns"]["type"] is None
    assert event["dns"]["rcode"] is None and event["dns"]["answers"] == []
    assert event["dns"]["why"] == ["unparsed"] and event["dns"]["trusted"] is False


def test_a_message_only_userspace_cannot_read_says_unparsed_once():
    event = event_of(dns_record(CHAIN, flags=DnsFlags.LEARNED, learned=2), parse=False)
    assert event["dns"]["name"] is None and event["dns"]["why"] == ["unparsed"]
    assert event["dns"]["trusted"] is True       # the kernel read it and believed it
    event = event_of(dns_record(CHAIN, flags=DnsFlags.UNPARSED | DnsFlags.UNTRUSTED),
                     parse=False)
    assert event["dns"]["why"] == ["untrusted-resolver", "unparsed"]


@pytest.mark.parametrize("flag, word, trusted", [
    (DnsFlags.UNTRUSTED, "untrusted-resolver", False),
    (DnsFlags.LOOPED, "over-loopback", False),
    (DnsFlags.UNPARSED, "unparsed", False),
    (DnsFlags.NO_RULE, "no-rule", True),
    (DnsFlags.FULL, "table-full", True),
    (DnsFlags.CUT, "cut", True),
    (DnsFlags.NO_TABLE, "no-table", True),
    (DnsFlags.LEARNED, None, True),
])
def test_each_flag_has_its_word(flag, word, trusted):
    event = event_of(dns_record(CHAIN, flags=flag))
    assert event["dns"]["why"] == ([word] if word else [])
    assert event["dns"]["trusted"] is trusted


def test_every_flag_at_once_in_the_documented_order():
    event = event_of(dns_record(CHAIN, flags=0xFF))
    assert event["dns"]["why"] == ["untrusted-resolver", "over-loopback", "unparsed", "no-rule",
                                   "table-full", "cut", "no-table"]


def test_a_forged_answer_names_what_it_claims_and_is_not_trusted():
    forged = dns_message("pypi.org", answers=(("pypi.org", "A", "203.0.113.66"),))
    event = event_of(dns_record(forged, flags=DnsFlags.UNTRUSTED, ip="10.0.0.99", port=5353))
    assert event["dns"]["name"] == "pypi.org" and event["dns"]["learned"] == 0
    assert event["dns"]["trusted"] is False and event["action"] == "log"
    assert event["resolver"] == {"ip": "10.0.0.99", "port": 5353}


def test_hostile_names_stay_text_in_the_event():
    hostile = (b"\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00"
               b"\x05a\"b\\c\x04\xff\x00\n\x1b\x00\x00\x01\x00\x01")
    event = event_of(dns_record(hostile, direction=DnsDirection.QUERY, flags=DnsFlags.UNPARSED))
    assert event["dns"]["name"] == 'a"b\\\\c.\\255\\000\\010\\027'
    assert "escaped" not in event


def test_the_name_keyword_changes_nothing_but_connects():
    event = event_of(dns_record(CHAIN), name="pypi.org")
    assert "dst" not in event and event["dns"]["name"] == "alias.egtest"


# --------------------------------------------------------------------------
# dst.name on connect events


def connect_event(raw: bytes, **kw) -> dict:
    return orjson.loads(safejson.dumps(describe(
        decode(raw), Clock(), rule="python-index", cgroup_path=None, policy_name="names",
        process=NOBODY, **kw)))


def test_a_connect_to_a_learned_address_names_it():
    event = connect_event(connect_record("151.101.0.223", 443), name="pypi.org")
    assert event["dst"] == {"ip": "151.101.0.223", "port": 443, "name": "pypi.org"}


def test_a_connect_to_an_unknown_address_has_no_name():
    assert connect_event(connect_record("151.101.0.223", 443))["dst"] == {
        "ip": "151.101.0.223", "port": 443}
    assert "name" not in connect_event(connect_record(), name=None)["dst"]


@pytest.mark.parametrize("hook", [abi.Hook.BIND4, abi.Hook.BIND6])
def test_a_refused_bind_to_a_resolver_port(hook):
    event = connect_event(connect_record("0.0.0.0" if hook == abi.Hook.BIND4 else "::", 53,
                                         proto=Proto.UDP, hook=hook, action=Action.BLOCK))
    assert (event["hook"], event["action"], event["dst"]["port"]) == ("bind", "block", 53)


def test_other_records_ignore_the_name():
    event = connect_event(exec_record(["curl", "https://pypi.org"]), name="pypi.org")
    assert "dst" not in event


def test_a_detection_carries_the_name_the_caller_put_in_dst():
    record = decode(connect_record("198.18.0.7", 443))
    event = describe_detection(record.header, Clock(), {"type": "stratum"}, "block", None, "p", 1,
                               NOBODY, dst={"ip": "198.18.0.7", "port": 443, "proto": "tcp",
                                            "name": "pool.example"})
    assert event["dst"]["name"] == "pool.example"


def test_the_agent_path_from_answer_to_a_named_connect():
    """What the agent does (guard/agent): an answer's addresses go into the
    workload's NameBook; a later connect of that workload is named by it,
    another workload's is not."""
    book = NameBook()
    answer = decode(dns_record(CHAIN, flags=DnsFlags.LEARNED, ttl=40, learned=2, cgroup_id=5))
    parsed = parse_message(answer.message)
    book.learn(answer.header.cgroup_id, parsed.name, parsed.addresses, answer.ttl, now=100.0)
    mine = decode(connect_record("2001:db8:53::20", 443, cgroup_id=5))
    theirs = decode(connect_record("2001:db8:53::20", 443, cgroup_id=6))
    named = [connect_event(connect_record(r.ip, r.port, cgroup_id=r.header.cgroup_id),
                           name=book.name_of(r.header.cgroup_id, r.ip, 101.0))["dst"]
             for r in (mine, theirs)]
    assert named == [{"ip": "2001:db8:53::20", "port": 443, "name": "alias.egtest"},
                     {"ip": "2001:db8:53::20", "port": 443}]
    assert book.name_of(5, "2001:db8:53::20", 140.0) is None       # the learned TTL ran out
