# SPDX-License-Identifier: Apache-2.0
"""The TLS ClientHello at the start of a first payload: its server name
(SNI) and ALPN, for the stratum classifier (pool domains, TLS without SNI)
and the tunnel classifier (tunnel services' names). RFC 8446 4.1.2 and
RFC 6066 3; a hello may span several handshake records."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

#: A ClientHello may be larger than a sample of other payloads (post-quantum key shares).
MAX_TLS_SAMPLE = 4 * (5 + 16384)


@dataclass(frozen=True)
class ClientHello:
    """What a ClientHello says about where it goes."""
    server_name: str | None         # SNI host name; None when absent or not seen
    alpn: tuple[str, ...]
    complete: bool                  # the extensions were seen whole: a missing SNI is really missing


def _tls_handshake_bytes(data: bytes) -> bytes | None:
    """Handshake bytes from consecutive TLS handshake records (a large
    ClientHello may span records); None unless data starts with one."""
    if len(data) < 6 or data[0] != 0x16 or data[1] != 0x03 or data[2] > 0x04:
        return None
    chunks = []
    position = 0
    for _ in range(4):
        if position + 5 > len(data) or data[position] != 0x16 or data[position + 1] != 0x03:
            break
        size = int.from_bytes(data[position + 3:position + 5], "big")
        if size == 0 or size > 16384 + 2048:
            break
        fragment = data[position + 5:position + 5 + size]
        chunks.append(fragment)
        position += 5 + size
        if len(fragment) < size:
            break
    return b"".join(chunks) if chunks else None


_PRINTABLE = re.compile(rb"[\x21-\x7e]{1,255}")


def _host_text(raw: bytes) -> str:
    """An SNI as text; odd bytes replaced so they can never match a domain list."""
    if _PRINTABLE.fullmatch(raw):
        return raw.decode("ascii").lower()
    return "".join(chr(b).lower() if 0x21 <= b < 0x7F else "?" for b in raw[:255])


def _server_name(body: bytes) -> str | None:
    """The host_name of a server_name extension's body (RFC 6066 3), by
    offsets: this runs for every TLS flow."""
    if len(body) < 2:
        return None
    end = 2 + (body[0] << 8 | body[1])
    if end > len(body):
        return None                 # the list was cut: no name is certain
    position = 2
    while position + 3 <= end:
        name_type = body[position]
        stop = position + 3 + (body[position + 1] << 8 | body[position + 2])
        if stop > end:
            return None
        if name_type == 0:
            return _host_text(body[position + 3:stop])
        position = stop
    return None


def _alpn(body: bytes) -> tuple[str, ...]:
    # offsets rather than a _Reader: this runs for every TLS flow
    if len(body) < 2:
        return ()
    end = min(len(body), 2 + (body[0] << 8 | body[1]))
    found = []
    position = 2
    while position < end and len(found) < 16:
        stop = position + 1 + body[position]
        if stop > end:
            break
        found.append(body[position + 1:stop].decode("ascii", "replace"))
        position = stop
    return tuple(found)


def parse_tls_client_hello(payload: bytes) -> ClientHello | None:
    """The SNI and ALPN of a TLS ClientHello at the start of payload; None if
    it does not start with one. A truncated hello yields what was seen, with
    complete=False."""
    if not isinstance(payload, (bytes, bytearray, memoryview)) or payload[:1] != b"\x16":
        return None
    return _parse(bytes(payload[:MAX_TLS_SAMPLE]))


def forget_client_hellos() -> None:
    """Empty the cache below (benchmarks: every flow's hello is new)."""
    _parse.cache_clear()


# The stratum and tunnel classifiers read the same first payload in turn:
# the second reads the first's answer (ClientHello is immutable).
@lru_cache(maxsize=8)
def _parse(data: bytes) -> ClientHello | None:
    handshake = _tls_handshake_bytes(data)
    if not handshake or handshake[0] != 0x01:
        return None
    if len(handshake) < 4:
        return ClientHello(None, (), False)
    length = int.from_bytes(handshake[1:4], "big")
    body = handshake[4:4 + length]
    if len(body) < 2:
        return ClientHello(None, (), False)
    if body[0] != 0x03:             # legacy_version 3.x
        return None
    extensions = _extensions_block(body)
    if extensions is None:
        return ClientHello(None, (), False)
    server_name, alpn = None, ()
    position, size = 0, len(extensions)
    # a plain loop over the type/length headers: this runs for every TLS flow
    while position + 4 <= size:
        kind = extensions[position] << 8 | extensions[position + 1]
        end = position + 4 + (extensions[position + 2] << 8 | extensions[position + 3])
        if end > size:
            break
        if kind == 0x0000:
            server_name = _server_name(extensions[position + 4:end])
        elif kind == 0x0010:
            alpn = _alpn(extensions[position + 4:end])
        position = end
    return ClientHello(server_name, alpn, len(body) == length and position == size)


def _extensions_block(body: bytes) -> bytes | None:
    """The extensions after legacy_version, random, session id, cipher
    suites and compression methods; shorter than announced when the hello
    was cut. Plain offsets: this runs for every TLS flow."""
    size = len(body)
    position = 2 + 32                                   # legacy_version, random
    if position >= size:
        return None
    position += 1 + body[position]                      # session id
    if position + 2 > size:
        return None
    position += 2 + (body[position] << 8 | body[position + 1])  # cipher suites
    if position >= size:
        return None
    position += 1 + body[position]                      # compression methods
    if position + 2 > size:
        return None
    total = body[position] << 8 | body[position + 1]
    return body[position + 2:position + 2 + total]
