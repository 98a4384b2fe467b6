# SPDX-License-Identifier: Apache-2.0
"""Tunnels by behaviour: a flow the sandbox opened, on which the roles of
client and server are swapped.

A reverse tunnel is an outbound connection that carries inbound service:
the far end sends the requests and the sandbox answers them. Whatever the
client is called (a renamed localtunnel, a twenty-line script), the bytes
say so:

- the sandbox's first bytes on a flow it opened are an HTTP *response*
  (`HTTP/1.1 200 OK`): it is serving a request the far end sent first. This
  is localtunnel's data connection (the client connects, sends nothing, the
  server sends `GET / HTTP/1.1`, the client relays the sandbox service's
  answer), seen from the side the kernel samples;
- the server's first reply is an HTTP *request* line (`GET / HTTP/1.1`,
  Host): a server never sends requests on a connection it accepted; also
  when the sandbox has sent nothing yet (the kernel samples the server's
  first bytes then: classify_server_first);
- the server's first reply is an SSH identification on a flow whose client
  did not speak SSH: the far end drives an SSH session through it;
- a tunnel service's open message: localtunnel's setup request (`GET /?new`,
  lib/Tunnel.js) and its reply (JSON with port and max_conn_count),
  httptunnel's requests (`POST /index.html?crap=<time>`, http.c).

Servers that legitimately speak first send greetings, not requests: an SSH
server's banner (after the client's own), SMTP `220`, FTP `220`, POP3
`+OK`, IMAP `* OK`, MySQL's handshake. None of them is a request line or an
HTTP response, so none is a finding here; a reply that merely echoes the
client's first bytes (an echo server) is none either.

A request that already reached the sandbox cannot be taken back by dropping
the flow, and the client opens more connections like it: those findings
carry BLOCK_BYPASS, so `block` kills the client (detector.decide).

Pure: hostile input yields an empty list, never an exception.
"""
from __future__ import annotations

import re
from typing import Any

from guard.detect.classify import (
    BLOCK_BYPASS, Finding, dedupe_findings, http_head_fields, short,
)

__all__ = ["classify_first", "classify_reply", "localtunnel_setup_reply"]

#: How much of a sample is looked at (the kernel's samples are smaller).
MAX_SAMPLE = 16 * 1024
#: Characters of a protocol line kept as evidence.
EXCERPT_CHARS = 200

_METHODS = rb"GET|POST|PUT|HEAD|DELETE|OPTIONS|PATCH|CONNECT|TRACE|PROPFIND|MKCOL|COPY|MOVE"
_REQUEST_LINE = re.compile(rb"(" + _METHODS + rb") (\S{1,2048}) HTTP/1\.[01]\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: [\x20-\x7e]{0,200})?\r?\n")
_SSH_BANNER = re.compile(rb"SSH-([0-9]+\.[0-9]+)-([\x21-\x7e]{1,200})")
_CHISEL_BANNER = re.compile(rb"SSH-chisel-v[0-9]+-(client|server)")
#: httptunnel (htc): `POST|GET|PUT /index.html?crap=<unix time> HTTP/1.1`,
#: the path absolute when it goes through a proxy (http.c http_method).
_HTTPTUNNEL = re.compile(rb"(POST|GET|PUT) (?:http://[^/\s]{1,300})?"
                         rb"/index\.html\?crap=([0-9]{1,20}) HTTP/1\.[01]\r?\n")


def _head(data: bytes, start: re.Pattern[bytes]) -> tuple[str, dict[str, str]] | None:
    """(start line, headers) when data begins with start's line; lines may
    end in a bare LF, which HTTP parsers (and tunnel servers) accept."""
    if start.match(data) is None:
        return None
    text = data.decode("latin-1").replace("\r\n", "\n").split("\n\n", 1)[0]
    return http_head_fields(text.replace("\n", "\r\n"))


def _finding(dialect: str, confidence: str, evidence: dict[str, Any], *,
             bypass: str | None = None) -> Finding:
    evidence = {key: value for key, value in evidence.items() if value is not None}
    if bypass:
        evidence[BLOCK_BYPASS] = [bypass]
    return Finding(type="tunnel_tool", confidence=confidence, dialect=dialect, evidence=evidence)


# --------------------------------------------------------------------------
# The sandbox's first bytes


def _response_first(data: bytes, port: int | None) -> list[Finding]:
    """An HTTP response as the first bytes the sandbox sends on a flow it opened."""
    parsed = _head(data, _STATUS_LINE)
    if parsed is None:
        return []
    start, headers = parsed
    # a status line with header fields is unmistakable; a bare one is still odd
    confidence = "high" if headers else "medium"
    return [_finding("reverse-http", confidence, {
        "signal": "response_first", "status_line": short(start, EXCERPT_CHARS), "port": port,
        "note": "the sandbox answers HTTP requests that arrive over a connection it opened"},
        bypass="the far end's request already reached the sandbox, and it serves more over"
               " connections the client keeps opening")]


def _httptunnel(data: bytes, port: int | None) -> list[Finding]:
    match = _HTTPTUNNEL.match(data)
    if match is None:
        return []
    _, headers = http_head_fields(data.split(b"\r\n\r\n", 1)[0].decode("latin-1"))
    channel = "out" if match.group(1) in (b"POST", b"PUT") else "in"
    return [_finding("httptunnel", "high", {
        "signal": "request", "channel": channel, "port": port, "host": headers.get("host"),
        "request_line": short(data.split(b"\n", 1)[0].decode("latin-1").rstrip("\r"),
                              EXCERPT_CHARS)})]


def _localtunnel_setup_request(data: bytes, port: int | None) -> list[Finding]:
    """`GET /?new`: a localtunnel client asking a server for a tunnel (with
    `--subdomain` the path is the name asked for, which nothing marks)."""
    if not data.startswith((b"GET /?new ", b"GET http://")):
        return []
    parsed = _head(data, _REQUEST_LINE)
    if parsed is None:
        return []
    start, headers = parsed
    target = start.split(" ")[1]
    if not (target == "/?new" or re.fullmatch(r"https?://[^/]+/\?new", target)):
        return []
    json = "application/json" in headers.get("accept", "")
    return [_finding("localtunnel", "high" if json else "medium", {
        "signal": "setup_request", "port": port, "host": headers.get("host"),
        "user_agent": short(headers["user-agent"], 80) if "user-agent" in headers else None},
        bypass="the tunnel's connections are new flows to the port the server's reply names")]


def classify_first(payload: bytes, dst_port: int | None) -> list[Finding]:
    """tunnel_tool findings for the first bytes the sandbox sends on a flow
    it opened: an HTTP response (reverse-http), httptunnel's requests,
    localtunnel's setup request."""
    data = _bytes(payload)
    port = _port(dst_port)
    if not data:
        return []
    return _response_first(data, port) + _httptunnel(data, port) + \
        _localtunnel_setup_request(data, port)


# --------------------------------------------------------------------------
# The server's first reply


def localtunnel_setup_reply(data: bytes) -> list[Finding]:
    """The JSON a localtunnel server answers a setup request with: the port
    the client's tunnel connections go to, and how many."""
    head = data[:4096]
    if b'"max_conn_count"' in head and b'"url"' in head and b'"port"' in head:
        return [_finding("localtunnel", "high", {"signal": "setup_reply"},
                         bypass="the reply names the port the client's tunnel connections"
                                " will use: new flows whose requests come from the server")]
    return []


def _request_from_server(reply: bytes, port: int | None) -> list[Finding]:
    parsed = _head(reply, _REQUEST_LINE)
    if parsed is None:
        return []
    start, headers = parsed
    host = headers.get("host")
    return [_finding("reverse-http", "high" if host else "medium", {
        "signal": "request_from_server", "request_line": short(start, EXCERPT_CHARS),
        "host": host, "port": port,
        "note": "the server sends HTTP requests over a connection the sandbox opened"},
        bypass="the server's request already reached the sandbox, and the client serves"
               " more over this and new connections")]


def _ssh_from_server(reply: bytes, first: bytes, port: int | None) -> list[Finding]:
    """An SSH identification from the server when the client did not speak
    SSH first: the far end runs an SSH session through a tunnel the sandbox
    opened (after the client's own banner, the server's is just a server's)."""
    if not reply.startswith(b"SSH-") or first.startswith(b"SSH-"):
        return []
    chisel = _CHISEL_BANNER.match(reply)
    if chisel is not None:
        return [_finding("chisel", "high", {"signal": "ssh_banner_from_server",
                                            "banner": chisel.group(0).decode("ascii"),
                                            "port": port})]
    match = _SSH_BANNER.match(reply)
    if match is None:
        return []
    return [_finding("reverse-ssh", "medium", {
        "signal": "ssh_banner_from_server", "banner": match.group(0).decode("ascii"),
        "port": port, "first_bytes": short(first[:32].decode("latin-1"), 64) if first else None,
        "note": "the server speaks SSH on a flow whose client did not"})]


def _echo(reply: bytes, first: bytes) -> bool:
    """An echo server sends the client's own bytes back."""
    n = min(len(reply), len(first), 64)
    return n >= 4 and reply[:n] == first[:n]


def classify_reply(reply: bytes, first: bytes | None, dst_port: int | None) -> list[Finding]:
    """tunnel_tool findings for the server's first reply on a flow the
    sandbox opened (first: the client's first bytes, None when it sent
    none): an HTTP request line from the server (reverse-http, high with a
    Host header), an SSH banner from a server whose client did not speak SSH
    (reverse-ssh, medium; chisel's is high), localtunnel's setup reply."""
    data = _bytes(reply)
    sent = _bytes(first) if first is not None else b""
    port = _port(dst_port)
    if not data or _echo(data, sent):
        return []
    findings = _request_from_server(data, port) + _ssh_from_server(data, sent, port)
    findings += localtunnel_setup_reply(data)
    return dedupe_findings(findings)


def classify_server_first(data: bytes, dst_port: int | None) -> list[Finding]:
    """tunnel_tool findings for the server's first bytes on a flow the
    sandbox opened and has sent nothing on yet (the kernel samples them,
    SampleKind.SERVER_FIRST): an HTTP request line is the far end acting
    as the client (a tunnel's data connection, localtunnel's among them).
    An SSH banner is not: a server may send its identification before the
    client sends its own."""
    reply = _bytes(data)
    if not reply:
        return []
    return dedupe_findings(_request_from_server(reply, _port(dst_port))
                           + localtunnel_setup_reply(reply))


def _bytes(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload[:MAX_SAMPLE])
    return b""


def _port(port: Any) -> int | None:
    return port if isinstance(port, int) and not isinstance(port, bool) else None
