# SPDX-License-Identifier: Apache-2.0
"""The names (and addresses) in a DNS message, for callers that only have
the packet: a query's questions, a response's questions and A/AAAA/CNAME
answers. Every count, pointer and length comes from the sender, so each is
bounded before it is followed (miner_indicators.classify_dns judges the names).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

__all__ = ["DnsRecord", "DnsAnswer", "parse_dns_query", "parse_dns_answer"]


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


def _dns_label_text(label: bytes) -> str:
    """A label as presentation text; dots and odd bytes escaped as dig does."""
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


def _dns_name(message: bytes, offset: int) -> tuple[str, int] | None:
    """The name at offset and the offset just past it in the record, or None."""
    labels: list[str] = []
    length_seen = 0
    end: int | None = None
    position = offset
    for _ in range(_MAX_POINTERS + 128):
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
            if target >= position:          # forward or self pointers are how loops are built
                return None
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
        if length_seen > 255:
            return None
        labels.append(_dns_label_text(label))
        position += 1 + size
    return None


def _dns_message(payload: Any, tcp: bool) -> bytes | None:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        return None
    data = bytes(payload[:65537])
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


def _dns_record(message: bytes, position: int) -> tuple[DnsRecord | None, int] | None:
    parsed = _dns_name(message, position)
    if parsed is None or parsed[1] + 10 > len(message):
        return None
    name, position = parsed
    kind = int.from_bytes(message[position:position + 2], "big")
    size = int.from_bytes(message[position + 8:position + 10], "big")
    start = position + 10
    data = message[start:start + size]
    if len(data) < size:
        return None
    record = None
    if kind == 1 and size == 4:
        record = DnsRecord(name, "A", str(ipaddress.IPv4Address(data)))
    elif kind == 28 and size == 16:
        record = DnsRecord(name, "AAAA", str(ipaddress.IPv6Address(data)))
    elif kind == 5:
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
