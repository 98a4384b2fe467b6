# SPDX-License-Identifier: Apache-2.0
"""The host a flow's first payload names: the server name of a TLS
ClientHello (SNI) or the Host of an HTTP/1 request. Allow by name holds the
first payload of a flow to an address the workload learned from a name until
this has been read (guard/agent/handlers.py): a shared address (a CDN) must
not carry a request for a host the policy does not allow.

Bounded like every classifier: the sample is at most abi.SAMPLE_MAX bytes,
the ClientHello parser and the HTTP head reader are linear in it."""
from __future__ import annotations

from guard.detect.classify import http_head_fields, split_host_port
from guard.detect.classify.tls import parse_tls_client_hello

HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"DELETE ",
                b"CONNECT ", b"TRACE ")
HEAD_MAX = 8192


def payload_host(data: bytes) -> tuple[str, str | None] | None:
    """("tls-sni", name) for a ClientHello, ("http-host", name) for an HTTP/1
    request, the name None when the payload carries none (or not within the
    sample); None when the payload is neither. Names are lower case, without
    a port or a trailing dot."""
    data = bytes(data[:HEAD_MAX])
    if data[:1] == b"\x16":
        hello = parse_tls_client_hello(data)
        if hello is None:
            return None
        return "tls-sni", normalise(hello.server_name)
    if not data.startswith(HTTP_METHODS):
        return None
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    start, headers = http_head_fields(head)
    host = headers.get("host")
    if start.startswith("CONNECT "):
        host = start.split(" ")[1] if start.count(" ") >= 1 else host
    return "http-host", normalise(split_host_port(host)[0] if host else None)


def normalise(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    return name or None
