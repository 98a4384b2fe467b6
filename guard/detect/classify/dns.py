# SPDX-License-Identifier: Apache-2.0
"""The names (and addresses) in a DNS message, for callers that only have
the packet: a query's questions, a response's questions and A/AAAA/CNAME
answers. Every count, pointer and length comes from the sender, so each is
bounded before it is followed (miner_indicators.classify_dns judges the names).

    parse_dns_query, parse_dns_answer   names for the miner detection
    parse_message                       one message as the guard's dns events
                                        show it (allow by name, issue 15): the
                                        question, the header bits, every answer
                                        record; qtype_name and rcode_name
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

__all__ = ["DnsRecord", "DnsAnswer", "parse_dns_query", "parse_dns_answer",
           "Answer", "DnsMessage", "parse_message", "qtype_name", "rcode_name"]


@dataclass(frozen=True)
class DnsRecord:
    """One answer record the guard cares about."""
    name: str
    type: str       # "A" | "AAAA" | "CNAME"
    value: str      # address, or the CNAME target


@dataclass(frozen=True)
class DnsAnswer:
    questions: tuple[str, ...]
    records: tuple[DnsRecord, ...]
    rcode: int

    def names(self) -> list[str]:
        """Every name the answer mentions, questions and CNAME targets, in order."""
        seen: list[str] = []
        for name in (*self.questions, *(r.name for r in self.records),
                     *(r.value for r in self.records if r.type == "CNAME")):
            if name not in seen:
                seen.append(name)
        return seen


_DNS_HEADER = 12
#: Compression pointers followed per name; each must point backwards, so a
#: loop is impossible anyway, this only bounds the work.
_MAX_POINTERS = 32
_MAX_QUESTIONS = 8
_MAX_RECORDS = 64
#: Bytes of a name on the wire, length octets and the final 0 included (RFC 1035 3.1).
_MAX_NAME = 255
#: Bytes of a message read at most (a TCP message's length field is 16 bits).
_MAX_MESSAGE = 65535
_TYPE_A, _TYPE_CNAME, _TYPE_AAAA, _CLASS_IN = 1, 5, 28, 1


#: Bytes a label shows as they are (lower-cased): printable ASCII but dot and backslash.
_PLAIN_LABEL_BYTES = bytes(b for b in range(0x21, 0x7F) if b not in b".\\")


def _dns_label_text(label: bytes) -> str:
    """A label as presentation text; dots and odd bytes escaped as dig does."""
    if not label.translate(None, _PLAIN_LABEL_BYTES):
        return label.decode("ascii").lower()   # the common label: nothing to escape
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


def _dns_name(message: bytes, offset: int,
              max_pointers: int = _MAX_POINTERS) -> tuple[str, int] | None:
    """The name at offset and the offset just past it in the record, or None:
    a name that runs off the message, uses an unknown label type, is longer
    than 255 bytes on the wire, or follows more than max_pointers pointers."""
    labels: list[str] = []
    length_seen = 1                         # the final 0
    pointers = 0
    end: int | None = None
    position = offset
    # a label takes at least 2 of the 255 bytes: the loop ends by itself
    for _ in range(max_pointers + _MAX_NAME // 2 + 1):
        if position >= len(message):
            return None
        size = message[position]
        if size == 0:
            name = ".".join(labels)
            return name, (end if end is not None else position + 1)
        if size & 0xC0 == 0xC0:
            if position + 1 >= len(message):
                return None
            target = ((size & 0x3F) << 8) | message[position + 1]
            pointers += 1
            if target >= position or pointers > max_pointers:
                return None                 # forward or self pointers are how loops are built
            if end is None:
                end = position + 2
            position = target
            continue
        if size & 0xC0:
            return None                     # 0x40 and 0x80 label types are unused
        label = message[position + 1:position + 1 + size]
        if len(label) < size:
            return None
        length_seen += size + 1
        if length_seen > _MAX_NAME:
            return None
        labels.append(_dns_label_text(label))
        position += 1 + size
    return None


def _dns_message(payload: Any, tcp: bool) -> bytes | None:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        return None
    data = bytes(payload[:_MAX_MESSAGE + 2])
    if tcp:
        if len(data) < 2:
            return None
        data = data[2:2 + int.from_bytes(data[:2], "big")]
    return data if len(data) >= _DNS_HEADER else None


def _dns_questions(message: bytes, count: int) -> tuple[list[str], int] | None:
    names = []
    position = _DNS_HEADER
    for _ in range(count):
        parsed = _dns_name(message, position)
        if parsed is None or parsed[1] + 4 > len(message):
            return None
        names.append(parsed[0])
        position = parsed[1] + 4            # qtype, qclass
    return names, position


def parse_dns_query(payload: bytes, *, tcp: bool = False) -> list[str] | None:
    """The question names of a DNS query (UDP; tcp=True strips the TCP length
    prefix), lower-case without the trailing dot; None if it is not one."""
    message = _dns_message(payload, tcp)
    if message is None:
        return None
    flags = int.from_bytes(message[2:4], "big")
    questions = int.from_bytes(message[4:6], "big")
    if flags & 0x8000 or (flags >> 11) & 0xF not in (0, 2) or not 1 <= questions <= _MAX_QUESTIONS:
        return None                         # a response, an odd opcode, or not DNS at all
    parsed = _dns_questions(message, questions)
    return parsed[0] if parsed is not None else None


def _resource(message: bytes, position: int,
              max_pointers: int = _MAX_POINTERS) -> tuple[str, int, int, int, int, int] | None:
    """(owner name, type, class, ttl, rdata offset, rdata length) of the
    resource record at position, or None when it does not fit the message."""
    parsed = _dns_name(message, position, max_pointers)
    if parsed is None or parsed[1] + 10 > len(message):
        return None
    name, position = parsed
    kind = int.from_bytes(message[position:position + 2], "big")
    klass = int.from_bytes(message[position + 2:position + 4], "big")
    ttl = int.from_bytes(message[position + 4:position + 8], "big")
    size = int.from_bytes(message[position + 8:position + 10], "big")
    start = position + 10
    if start + size > len(message):
        return None
    return name, kind, klass, ttl, start, size


def _address_text(kind: int, data: bytes) -> str | None:
    """An A or AAAA record's address as text, written as the kernel records
    (guard/kernel/records.py, inet_ntop) write it, so the two compare."""
    if kind == _TYPE_A and len(data) == 4:
        return socket.inet_ntop(socket.AF_INET, data)
    if kind == _TYPE_AAAA and len(data) == 16:
        return socket.inet_ntop(socket.AF_INET6, data)
    return None


def _dns_record(message: bytes, position: int) -> tuple[DnsRecord | None, int] | None:
    fields = _resource(message, position)
    if fields is None:
        return None
    name, kind, _klass, _ttl, start, size = fields
    record = None
    address = _address_text(kind, message[start:start + size])
    if address is not None:
        record = DnsRecord(name, "A" if kind == _TYPE_A else "AAAA", address)
    elif kind == _TYPE_CNAME:
        target = _dns_name(message, start)
        if target is not None:
            record = DnsRecord(name, "CNAME", target[0])
    return record, start + size


def parse_dns_answer(payload: bytes, *, tcp: bool = False) -> DnsAnswer | None:
    """Questions plus A/AAAA/CNAME answer records of a DNS response; records
    cut off by truncation are left out. None if it is not a DNS response."""
    message = _dns_message(payload, tcp)
    if message is None:
        return None
    flags = int.from_bytes(message[2:4], "big")
    questions = int.from_bytes(message[4:6], "big")
    answers = int.from_bytes(message[6:8], "big")
    if not flags & 0x8000 or questions > _MAX_QUESTIONS:
        return None
    parsed = _dns_questions(message, questions)
    if parsed is None:
        return None
    names, position = parsed
    records = []
    for _ in range(min(answers, _MAX_RECORDS)):
        step = _dns_record(message, position)
        if step is None:
            break
        record, position = step
        if record is not None:
            records.append(record)
    return DnsAnswer(tuple(names), tuple(records), flags & 0xF)


# --------------------------------------------------------------------------
# One message, as the guard's dns events show it (allow by name)

#: Pointers followed per name by parse_message: real resolvers chain two or three.
_POINTERS_FOLLOWED = 16

_QTYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT",
                28: "AAAA", 33: "SRV", 64: "SVCB", 65: "HTTPS", 255: "ANY"}
_RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
                5: "REFUSED"}


def qtype_name(qtype: int) -> str:
    """A record type as dig writes it: "AAAA", or "TYPE<n>" for one without a name here."""
    return _QTYPE_NAMES.get(qtype) or f"TYPE{qtype}"


def rcode_name(rcode: int) -> str:
    """A response code as dig writes it: "NXDOMAIN", or "RCODE<n>"."""
    return _RCODE_NAMES.get(rcode) or f"RCODE{rcode}"


@dataclass(frozen=True, slots=True)
class Answer:
    """One record of the answer section. value: the address (A of 4 bytes,
    AAAA of 16, class IN) or the target name (CNAME, class IN), else None."""
    name: str
    rtype: int
    ttl: int        # seconds, as the resolver sent it
    value: str | None

    @property
    def address(self) -> str | None:
        """value, if this record is an address."""
        return self.value if self.rtype in (_TYPE_A, _TYPE_AAAA) else None


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """A DNS message's header bits, its (first) question and its answer
    section as far as it could be read. Names are lower case without the
    final dot; bytes a host name does not have are escaped as dig does
    (`\\.`, `\\ddd`), so a name is always text and never matches one it is not."""
    id: int
    response: bool
    rcode: int
    truncated: bool     # TC: the resolver cut the answer (the client asks again over TCP)
    name: str
    qtype: int
    answers: tuple[Answer, ...] = ()

    @property
    def address_answers(self) -> tuple[Answer, ...]:
        """The A and AAAA records that carry an address, in order."""
        return tuple(a for a in self.answers if a.address is not None)

    @property
    def addresses(self) -> tuple[str, ...]:
        """The A and AAAA addresses, in order."""
        return tuple(a.value for a in self.answers if a.address is not None)

    @property
    def cnames(self) -> tuple[str, ...]:
        """The CNAME targets, in order."""
        return tuple(a.value for a in self.answers
                     if a.rtype == _TYPE_CNAME and a.value is not None)

    @property
    def qtype_text(self) -> str:
        return qtype_name(self.qtype)

    @property
    def rcode_text(self) -> str:
        return rcode_name(self.rcode)


def _answer(message: bytes, fields: tuple[str, int, int, int, int, int]) -> Answer:
    name, kind, klass, ttl, start, size = fields
    value = None
    if klass == _CLASS_IN:
        value = _address_text(kind, message[start:start + size])
        if kind == _TYPE_CNAME:
            target = _dns_name(message, start, _POINTERS_FOLLOWED)
            if target is not None and target[1] <= start + size:
                value = target[0]
    return Answer(name, kind, ttl, value)


def parse_message(data: bytes) -> DnsMessage | None:
    """A DNS message (query or response; TCP: after its length field) as a
    DnsMessage, or None when its header or first question cannot be read.

    Every count, length and pointer is the sender's: at most 64 records are
    read (further questions, then answers), a name follows at most 16
    compression pointers, each strictly backwards, and is at most 255 bytes;
    the first record that does not fit ends the answers (those read so far
    are kept). Work is bounded whatever the input; never raises."""
    message = _dns_message(data, tcp=False)
    if message is None:
        return None
    ident = int.from_bytes(message[0:2], "big")
    flags = int.from_bytes(message[2:4], "big")
    questions = int.from_bytes(message[4:6], "big")
    answers = int.from_bytes(message[6:8], "big")
    if questions == 0:
        return None
    question = _dns_name(message, _DNS_HEADER, _POINTERS_FOLLOWED)
    if question is None or question[1] + 4 > len(message):
        return None
    name, position = question
    qtype = int.from_bytes(message[position:position + 2], "big")
    position += 4
    budget = _MAX_RECORDS
    read: list[Answer] = []
    for _ in range(min(questions - 1, budget)):  # a second question: rare, skipped
        budget -= 1
        other = _dns_name(message, position, _POINTERS_FOLLOWED)
        if other is None or other[1] + 4 > len(message):
            budget = 0
            break
        position = other[1] + 4
    for _ in range(min(answers, budget)):
        fields = _resource(message, position, _POINTERS_FOLLOWED)
        if fields is None:
            break
        read.append(_answer(message, fields))
        position = fields[4] + fields[5]
    return DnsMessage(id=ident, response=bool(flags & 0x8000), rcode=flags & 0xF,
                      truncated=bool(flags & 0x0200), name=name, qtype=qtype,
                      answers=tuple(read))
