# SPDX-License-Identifier: Apache-2.0
"""parse_message: DNS messages as the dns events show them (allow by name).

Real-shaped messages first (what dnsmasq, unbound and the cloud resolvers
write), then hostile ones: a workload writes its queries, and a resolver
answers for names whoever owns them controls, so every count, length and
pointer may lie. Nothing raises, and every message is read in bounded time
and memory.
"""
from __future__ import annotations

import struct
import sys
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.detect.classify.dns import (
    Answer, DnsMessage, parse_dns_answer, parse_message, qtype_name, rcode_name,
)
from tests.fakekernel import dns_message

#: Any one message, whatever it holds (a few hundred microseconds here).
BOUND_S = 0.25
#: Bytes a parse may allocate at its peak, whatever the message.
MEMORY_BOUND = 1 << 20
A, NS, CNAME, TXT, AAAA = 1, 2, 5, 16, 28


def header(*, ident=0x1234, flags=0x8180, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack(">HHHHHH", ident, flags, qd, an, ns, ar)


def wire(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")
                    if label) + b"\0"


def record(owner: bytes, kind: int, rdata: bytes, ttl: int = 60, klass: int = 1) -> bytes:
    return owner + struct.pack(">HHIH", kind, klass, ttl, len(rdata)) + rdata


def parse(data) -> DnsMessage | None:
    """parse_message, held to the time bound."""
    started = time.perf_counter()
    message = parse_message(data)
    took = time.perf_counter() - started
    assert took < BOUND_S or sys.gettrace() is not None, f"{took:.3f} s for {bytes(data)[:80]!r}"
    return message


def check(message: DnsMessage | None) -> None:
    """What any result is made of, whatever the input."""
    if message is None:
        return
    assert isinstance(message.name, str) and len(message.name) <= 4 * 255
    assert 0 <= message.rcode <= 15 and 0 <= message.qtype <= 0xFFFF
    assert len(message.answers) <= 64
    for answer in message.answers:
        assert isinstance(answer, Answer) and isinstance(answer.name, str)
        assert answer.value is None or isinstance(answer.value, str)
    assert all(isinstance(a, str) for a in message.addresses + message.cnames)
    qtype_name(message.qtype), rcode_name(message.rcode)


# --------------------------------------------------------------------------
# Real-shaped messages


def test_an_answer_with_a_cname_chain_and_both_families():
    data = dns_message("Alias.EgTest", answers=(
        ("alias.egtest", "CNAME", "mid.egtest", 300),
        ("mid.egtest", "CNAME", "real.egtest", 300),
        ("real.egtest", "A", "198.18.53.20", 60),
        ("real.egtest", "AAAA", "2001:db8:53::20", 30)))
    message = parse(data)
    assert message == DnsMessage(id=0x1234, response=True, rcode=0, truncated=False,
                                 name="alias.egtest", qtype=A, answers=(
        Answer("alias.egtest", CNAME, 300, "mid.egtest"),
        Answer("mid.egtest", CNAME, 300, "real.egtest"),
        Answer("real.egtest", A, 60, "198.18.53.20"),
        Answer("real.egtest", AAAA, 30, "2001:db8:53::20")))
    assert message.addresses == ("198.18.53.20", "2001:db8:53::20")
    assert message.cnames == ("mid.egtest", "real.egtest")
    assert [a.ttl for a in message.address_answers] == [60, 30]
    assert (message.qtype_text, message.rcode_text) == ("A", "NOERROR")


def test_several_addresses_keep_their_order():
    addresses = [f"198.18.53.{n}" for n in (13, 14, 15)] + ["2001:db8:53::13", "::ffff:1.2.3.4"]
    data = dns_message("multi.egtest", "AAAA", answers=[
        ("multi.egtest", "AAAA" if ":" in ip else "A", ip) for ip in addresses])
    message = parse(data)
    assert message.addresses == tuple(addresses) and message.qtype == AAAA
    assert message.cnames == ()


def test_compression_in_owner_names_and_cname_targets():
    # question at 12; "cdn.example.net" is written once, in the first CNAME's
    # rdata, and pointed at by the next owner and by a second CNAME's suffix
    question = wire("www.example.com")
    data = header(an=3) + question + struct.pack(">HH", A, 1)
    first_rdata_at = len(data) + 2 + 10
    data += record(b"\xc0\x0c", CNAME, wire("cdn.example.net"))
    suffix = first_rdata_at + 4                                   # "example.net"
    data += record(struct.pack(">H", 0xC000 | first_rdata_at), CNAME,
                   b"\x04edge" + struct.pack(">H", 0xC000 | suffix))
    data += record(b"\x04edge" + struct.pack(">H", 0xC000 | suffix), A, bytes([192, 0, 2, 7]))
    message = parse(data)
    assert message.name == "www.example.com"
    assert [(a.name, a.value) for a in message.answers] == [
        ("www.example.com", "cdn.example.net"), ("cdn.example.net", "edge.example.net"),
        ("edge.example.net", "192.0.2.7")]


def test_nxdomain_and_refused():
    message = parse(dns_message("nothing.egtest", answers=(), rcode=3))
    assert (message.rcode, message.rcode_text, message.answers) == (3, "NXDOMAIN", ())
    assert parse(dns_message("x.other", answers=(), rcode=5)).rcode_text == "REFUSED"


def test_a_truncated_answer_says_so():
    data = dns_message("big.egtest", answers=[("big.egtest", "A", f"198.18.53.{n}")
                                              for n in range(100, 110)], truncated=True)
    message = parse(data)
    assert message.truncated and message.response and len(message.addresses) == 10
    assert not parse(dns_message()).truncated


def test_a_query():
    message = parse(dns_message("PyPI.org.", "HTTPS", answers=(), response=False, ident=7))
    assert (message.id, message.response, message.name, message.qtype) == (7, False, "pypi.org", 65)
    assert message.qtype_text == "HTTPS" and message.answers == ()


def test_records_that_carry_no_address_or_name_have_no_value():
    data = dns_message("example.com", answers=(
        ("example.com", "TXT", b"\x05hello"),
        ("example.com", 15, b"\x00\x0a" + wire("mx.example.com")),     # MX
        ("example.com", "A", b"\x01\x02\x03"),                         # an A of 3 bytes
        ("example.com", "AAAA", bytes(4)),                             # an AAAA of 4
        ("example.com", "A", bytes([192, 0, 2, 1]))))
    message = parse(data)
    assert [(a.rtype, a.value) for a in message.answers] == [
        (TXT, None), (15, None), (A, None), (AAAA, None), (A, "192.0.2.1")]
    assert message.addresses == ("192.0.2.1",)


def test_only_class_in_records_have_a_value():
    data = (header(an=2) + wire("example.com") + struct.pack(">HH", A, 1)
            + record(b"\xc0\x0c", A, bytes([10, 0, 0, 1]), klass=3)         # CHAOS
            + record(b"\xc0\x0c", CNAME, wire("x.example"), klass=255))
    message = parse(data)
    assert [a.value for a in message.answers] == [None, None]
    assert message.addresses == () and message.cnames == ()


def test_names_are_lower_case_and_odd_bytes_escaped():
    data = (header(an=1) + b"\x07EXAMPLE\x05a.b\\c\x03\x00\xff\x20\x00" + struct.pack(">HH", A, 1)
            + record(b"\xc0\x0c", A, bytes(4)))
    message = parse(data)
    assert message.name == "example.a\\.b\\\\c.\\000\\255\\032"
    assert message.answers[0].name == message.name
    # the same bytes, the same text: a name is matched on what it is
    assert parse(data).name == message.name


def test_the_root_name_and_a_second_question():
    data = header(qd=2, an=1) + b"\0" + struct.pack(">HH", NS, 1) + wire("other.example") \
        + struct.pack(">HH", A, 1) + record(b"\0", NS, wire("a.root-servers.net"))
    message = parse(data)
    assert message.name == "" and message.qtype == NS
    assert message.answers == (Answer("", NS, 60, None),)


def test_type_and_rcode_names():
    assert [qtype_name(t) for t in (1, 28, 5, 65, 64, 16, 15, 12, 2, 6, 33, 255, 99)] == [
        "A", "AAAA", "CNAME", "HTTPS", "SVCB", "TXT", "MX", "PTR", "NS", "SOA", "SRV", "ANY",
        "TYPE99"]
    assert [rcode_name(r) for r in range(7)] == [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "RCODE6"]


def test_the_miner_reader_still_reads_what_it_did():
    data = dns_message("pool.example.org", answers=(
        ("pool.example.org", "CNAME", "lb.example.org"), ("pool.example.org", "A", "203.0.113.9")))
    answer = parse_dns_answer(data)
    assert [(r.type, r.value) for r in answer.records] == [("CNAME", "lb.example.org"),
                                                            ("A", "203.0.113.9")]


# --------------------------------------------------------------------------
# Hostile messages


def test_unreadable_headers_and_questions_are_none():
    for data in (b"", b"\0" * 11, header(qd=0),                        # no question at all
                 header() + b"\x07example",                             # the name runs off
                 header() + wire("example.com") + b"\x00",               # no QTYPE/QCLASS
                 header() + b"\x40abc\x00\x00\x01\x00\x01",              # label type 0x40
                 header() + b"\x80abc\x00\x00\x01\x00\x01"):
        assert parse(data) is None, data


@pytest.mark.parametrize("junk", [None, 5, "example.com", ["a"], {"a": 1}, 3.5])
def test_anything_but_bytes_is_none(junk):
    assert parse_message(junk) is None


def test_bytearray_and_memoryview_are_read():
    data = dns_message()
    assert parse(bytearray(data)) == parse(memoryview(data)) == parse(data)


def test_pointer_loops_are_refused():
    self_pointer = header() + b"\xc0\x0c" + struct.pack(">HH", A, 1)
    assert parse(self_pointer) is None
    # two names pointing at each other: the second pointer would go forward
    question = wire("a.example")
    body = question + struct.pack(">HH", A, 1)
    at = 12 + len(body)
    mutual = (header(an=1) + body + b"\x01x" + struct.pack(">H", 0xC000 | (at + 6))
              + struct.pack(">HHIH", A, 1, 60, 4) + bytes(4))
    message = parse(mutual)
    assert message is not None and message.answers == ()


def test_forward_pointers_are_refused():
    data = header() + b"\xc0\x12" + struct.pack(">HH", A, 1) + wire("later.example")
    assert parse(data) is None
    # an owner pointing forward ends the answers; those before it stay
    ok = record(b"\xc0\x0c", A, bytes([192, 0, 2, 1]))
    base = header(an=2) + wire("a.example") + struct.pack(">HH", A, 1) + ok
    forward = struct.pack(">H", 0xC000 | (len(base) + 2))
    message = parse(base + record(forward, A, bytes(4)))
    assert message.addresses == ("192.0.2.1",)


def chained(data: bytes, target: int, hops: int) -> tuple[bytes, int]:
    """data + a TXT record whose rdata is hops - 1 pointers, each to the one
    before it, the first to target; and the offset a pointer to put in an
    owner name then follows `hops` pointers to reach target."""
    start = len(data) + 2 + 10
    chain = b""
    for _ in range(hops - 1):
        here = start + len(chain)
        chain += struct.pack(">H", 0xC000 | target)
        target = here
    return data + record(b"\xc0\x0c", TXT, chain), target


def pointer_chain(hops: int) -> bytes:
    """A response whose second answer's owner follows `hops` pointers, each
    one back to the previous: wire("a.example") <- p <- p <- ... <- owner."""
    data, target = chained(header(an=2) + wire("a.example") + struct.pack(">HH", A, 1), 12, hops)
    return data + record(struct.pack(">H", 0xC000 | target), A, bytes([192, 0, 2, 9]))


def test_pointers_are_followed_16_deep_and_no_deeper():
    assert parse(pointer_chain(16)).answers[1].name == "a.example"
    assert len(parse(pointer_chain(17)).answers) == 1


def test_names_are_at_most_255_bytes():
    longest = b"\x3f" + b"a" * 63
    at_limit = longest * 3 + b"\x3d" + b"b" * 61 + b"\0"      # 3*64 + 62 + 1 = 255 bytes
    over = longest * 3 + b"\x3e" + b"b" * 62 + b"\0"          # 256
    assert len(parse(header() + at_limit + struct.pack(">HH", A, 1)).name) == 253
    assert parse(header() + over + struct.pack(">HH", A, 1)) is None
    # the limit counts the labels a pointer adds too
    half = b"\x3f" + b"c" * 63
    first = header(an=1) + half * 3 + b"\0" + struct.pack(">HH", A, 1)
    suffix_at = 12 + 64
    owner = half * 2 + struct.pack(">H", 0xC000 | suffix_at)            # 128 + 128 + 1
    assert parse(first + record(owner, A, bytes(4))).answers == ()


def test_counts_that_lie():
    one = record(b"\xc0\x0c", A, bytes([192, 0, 2, 1]))
    body = wire("example.com") + struct.pack(">HH", A, 1) + one
    assert parse(header(an=0xFFFF) + body).addresses == ("192.0.2.1",)
    assert parse(header(an=0) + body).answers == ()
    assert parse(header(qd=0xFFFF, an=1) + body).answers == ()
    assert parse(header(ns=0xFFFF, ar=0xFFFF, an=1) + body).addresses == ("192.0.2.1",)


def test_at_most_64_records_are_read():
    records = b"".join(record(b"\xc0\x0c", A, bytes([10, 0, n // 256, n % 256]))
                       for n in range(200))
    data = header(an=200) + wire("many.example") + struct.pack(">HH", A, 1) + records
    message = parse(data)
    assert len(message.answers) == 64 and message.addresses[-1] == "10.0.0.63"
    # further questions count too
    questions = b"".join(wire(f"q{n}.example") + struct.pack(">HH", A, 1) for n in range(10))
    data = header(qd=11, an=200) + questions + wire("x") + struct.pack(">HH", A, 1) + records
    assert len(parse(data).answers) == 64 - 10


def test_a_record_whose_rdata_runs_off_ends_the_answers():
    one = record(b"\xc0\x0c", A, bytes([192, 0, 2, 1]))
    body = header(an=2) + wire("example.com") + struct.pack(">HH", A, 1) + one
    liar = b"\xc0\x0c" + struct.pack(">HHIH", A, 1, 60, 0xFFFF) + bytes(4)
    assert parse(body + liar).addresses == ("192.0.2.1",)


def test_a_cname_target_outside_its_rdata_has_no_value():
    # rdlength 2 but the name goes on for 13 bytes
    data = header(an=1) + wire("example.com") + struct.pack(">HH", A, 1) \
        + b"\xc0\x0c" + struct.pack(">HHIH", CNAME, 1, 60, 2) + wire("other.example")
    assert parse(data).answers == (Answer("example.com", CNAME, 60, None),)


REAL = [
    dns_message("alias.egtest", answers=(
        ("alias.egtest", "CNAME", "mid.egtest"), ("mid.egtest", "CNAME", "real.egtest"),
        ("real.egtest", "A", "198.18.53.20"), ("real.egtest", "AAAA", "2001:db8:53::20"))),
    dns_message("big.egtest", answers=[("big.egtest", "A", f"198.18.53.{n}")
                                       for n in range(100, 140)], truncated=True),
    dns_message("pypi.org", "AAAA", answers=(), response=False),
    pointer_chain(16),
]


@pytest.mark.parametrize("data", REAL, ids=["cname-chain", "big", "query", "pointers"])
def test_every_truncation_is_none_or_a_prefix_of_the_whole(data):
    whole = parse(data)
    question_end = None
    for cut in range(len(data) + 1):
        message = parse(data[:cut])
        check(message)
        if message is None:
            assert question_end is None, f"cut at {cut} reads less than a shorter cut"
            continue
        question_end = question_end or cut
        assert (message.id, message.name, message.qtype) == (whole.id, whole.name, whole.qtype)
        assert message.answers == whole.answers[:len(message.answers)]
    assert question_end is not None and parse(data[:question_end - 1]) is None


def work_bomb() -> bytes:
    """The most work a message can ask for: 64 records whose owners are 16
    pointers deep into 126 one-byte labels, and CNAMEs that do it again."""
    labels = b"\x01a" * 126 + b"\0"                                   # 253 bytes of name
    data, target = chained(header(an=0xFFFF) + labels + struct.pack(">HH", A, 1), 12, 16)
    pointer = struct.pack(">H", 0xC000 | target)
    return data + record(pointer, CNAME, pointer) * 70


def test_the_work_bomb_is_read_in_bound_and_in_memory():
    data = work_bomb()
    tracemalloc.start()
    try:
        message = parse(data)
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(message.answers) == 64 and len(message.cnames) == 63
    assert message.cnames[0] == "a." * 125 + "a"
    assert peak < MEMORY_BOUND, peak


def test_a_huge_input_is_read_only_as_far_as_a_message_goes():
    data = dns_message() + b"\0" * (16 << 20)
    tracemalloc.start()
    try:
        message = parse(data)
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message.addresses == ("192.0.2.1",) and peak < MEMORY_BOUND


FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=700))
def test_random_bytes(data):
    check(parse(data))


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_after_a_plausible_header(body):
    for flags in (0x8180, 0x0100):
        check(parse(header(flags=flags, an=0xFFFF) + body))


@FUZZ
@given(st.sampled_from(REAL + [work_bomb()]),
       st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=12),
       st.one_of(st.none(), st.integers(0, 2000)))
def test_damaged_real_messages(data, changes, cut):
    raw = bytearray(data)
    for at, value in changes:
        raw[at % len(raw)] = value
    check(parse(bytes(raw[:cut] if cut is not None else raw)))
