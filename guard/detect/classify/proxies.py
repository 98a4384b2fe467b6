# SPDX-License-Identifier: Apache-2.0
"""The requests a client sends a proxy before the flow it asks for: SOCKS5
(RFC 1928, after an optional greeting), SOCKS4 and SOCKS4a, HTTP CONNECT.
stratum.py judges their targets (a pool's name) and the bytes after them
(the first payload through the tunnel); the kernel reports these requests as
proxy samples (flow.bpf.c). Only length fields within the buffer are walked.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from guard.detect.classify import port_number

#: Bytes of a buffer looked at (stratum.MAX_SAMPLE).
MAX_SAMPLE = 8 * 1024

SOCKS5 = "socks5"
SOCKS4 = "socks4"
HTTP_CONNECT = "http-connect"


def _sample(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload[:MAX_SAMPLE])
    return b""


@dataclass(frozen=True)
class ProxyTarget:
    """The destination a client asks a proxy for."""
    protocol: str           # "socks5" | "socks4" | "http-connect"
    host: str               # a name or an address, as the client wrote it
    port: int
    end: int | None         # offset in the buffer where the tunnelled bytes start;
                            # None when the request's end is not in the buffer


def _printable_host(raw: bytes) -> str | None:
    if not raw or not all(0x21 <= b < 0x7F for b in raw):
        return None
    return raw.decode("ascii")


class _Reader:
    """Bounds-checked reads from a byte string; None once data runs out."""

    def __init__(self, data: bytes):
        self.data = data
        self.position = 0

    def take(self, size: int) -> bytes | None:
        chunk = self.data[self.position:self.position + size]
        if len(chunk) < size:
            return None
        self.position += size
        return chunk

    def number(self, size: int) -> int | None:
        chunk = self.take(size)
        return None if chunk is None else int.from_bytes(chunk, "big")

    def vector(self, length_size: int) -> bytes | None:
        size = self.number(length_size)
        return None if size is None else self.take(size)


def _socks5_greeting_length(data: bytes) -> int | None:
    """Length of a SOCKS5 greeting (05, count, methods) at the start of data."""
    if len(data) < 3 or data[0] != 0x05 or not 1 <= data[1] <= 16:
        return None
    methods = data[2:2 + data[1]]
    if len(methods) != data[1] or any(m > 0x03 and not 0x80 <= m <= 0xFE for m in methods):
        return None
    return 2 + data[1]


def _socks5_request(data: bytes, start: int) -> ProxyTarget | None:
    """05 cmd 00 atyp address port: CONNECT, BIND, UDP ASSOCIATE or Tor's RESOLVE."""
    reader = _Reader(data[start:])
    head = reader.take(4)
    if head is None or head[0] != 0x05 or head[1] not in (1, 2, 3, 0xF0) or head[2] != 0:
        return None
    host: str | None
    if head[3] == 0x01:
        raw = reader.take(4)
        host = str(ipaddress.IPv4Address(raw)) if raw is not None else None
    elif head[3] == 0x04:
        raw = reader.take(16)
        host = str(ipaddress.IPv6Address(raw)) if raw is not None else None
    elif head[3] == 0x03:
        raw = reader.vector(1)
        host = _printable_host(raw) if raw is not None else None
    else:
        return None
    port = reader.number(2)
    if host is None or port is None:
        return None
    return ProxyTarget(SOCKS5, host, port, start + reader.position)


def _socks5(data: bytes) -> ProxyTarget | None:
    # `05 01 00` is both a greeting (one method: no auth) and the start of a
    # CONNECT request; a greeting is only taken as such when the buffer ends
    # there or another 05 follows.
    greeting = _socks5_greeting_length(data)
    if greeting is not None and len(data) > greeting and data[greeting] == 0x05:
        return _socks5_request(data, greeting)
    if greeting is not None and len(data) == greeting:
        return None
    return _socks5_request(data, 0)


def _socks4(data: bytes) -> ProxyTarget | None:
    """04 01 port ipv4 userid 00, and SOCKS4a's 0.0.0.x plus host 00."""
    if len(data) < 9 or data[0] != 0x04 or data[1] not in (1, 2):
        return None
    port = int.from_bytes(data[2:4], "big")
    address = data[4:8]
    user_end = data.find(b"\x00", 8, 8 + 256)
    if user_end < 0:
        return None
    if address[:3] == b"\x00\x00\x00" and address[3] != 0:
        host_end = data.find(b"\x00", user_end + 1, user_end + 1 + 256)
        host = _printable_host(data[user_end + 1:host_end]) if host_end > 0 else None
        end = host_end + 1
    else:
        host = str(ipaddress.IPv4Address(address))
        end = user_end + 1
    if host is None:
        return None
    return ProxyTarget(SOCKS4, host, port, end)


def _http_connect(data: bytes) -> ProxyTarget | None:
    line_end = data.find(b"\r\n", 0, 2048)
    line = data[:line_end] if line_end >= 0 else data[:2048]
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"CONNECT" or not parts[2].startswith(b"HTTP/1."):
        return None
    authority = parts[1].decode("latin-1")
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.rpartition(":")
    port = port_number(port_text)
    if not host or port is None or _printable_host(host.encode("latin-1")) is None:
        return None
    head_end = data.find(b"\r\n\r\n")
    return ProxyTarget(HTTP_CONNECT, host, port, head_end + 4 if head_end >= 0 else None)


def parse_proxy_request(payload: bytes) -> ProxyTarget | None:
    """The target of a SOCKS5 request (after an optional greeting in the
    same buffer), a SOCKS4/4a request or an HTTP CONNECT; None otherwise,
    including for a SOCKS5 greeting alone (it names no target yet)."""
    data = _sample(payload)
    if data[:1] == b"\x05":
        return _socks5(data)
    if data[:1] == b"\x04":
        return _socks4(data)
    if data.startswith(b"CONNECT "):
        return _http_connect(data)
    return None


def after_proxy_handshake(payload: bytes) -> bytes | None:
    """The bytes that follow the client's proxy handshake in this buffer: b""
    when it holds nothing else (a SOCKS5 greeting alone, or a CONNECT sent
    before the proxy's answer), None when it is not a proxy handshake. Feed
    a non-empty result to classify_payload with the target's port."""
    data = _sample(payload)
    target = parse_proxy_request(data)
    if target is not None:
        return data[target.end:] if target.end is not None else b""
    if data[:1] == b"\x05" and _socks5_greeting_length(data) == len(data):
        return b""
    return None
