# SPDX-License-Identifier: Apache-2.0
"""Mining protocols in the first bytes a flow sends: the Stratum family,
getwork over HTTP, Stratum V2, TLS to pools, and proxies that name a pool.

classify_payload runs on the first outbound payload of every new flow of a
guarded cgroup, so it is a funnel and most flows leave it at the top:

1. One byte picks at most one parser: `{` newline-delimited JSON, 0x16 TLS,
   0x00 Stratum V2, 0x04/0x05 SOCKS, an upper-case letter HTTP (and HTTP
   CONNECT), a masked WebSocket frame header. SSH banners, Redis, HTTP/2
   prefaces, LSP's `Content-Length:` framing and binary protocols stop here
   or after the request line. Blank bytes before the first message are
   filler (the kernel's sample starts after them; so does this reader), and
   WebSocket frames are unmasked first (the frames after an upgrade in the
   same bytes, or frames alone), as the kernel does (bpf/lib/frames.h).
2. A candidate must then contain an anchor, found by C-speed substring
   searches over at most MAX_SAMPLE bytes: `"mining.`, `"login"` or
   `"eth_` for JSON; the getwork/getblocktemplate/submitblock method names,
   `eth_submitLogin` or `X-Mining-Extensions` for HTTP. MCP, Electrum and
   other JSON-RPC traffic, and ordinary HTTP, stop here.
3. Only then is anything parsed, and only what is needed. A whole JSON
   line goes to orjson; the line the sample cut short goes to a small
   tolerant tokenizer that stops as soon as the top-level method rules the
   line out. Either way only top-level members count, so a message cut at
   256 bytes still counts while a mining method nested inside an MCP
   tools/call argument does not. The TLS, SOCKS and Stratum V2 parsers only
   walk length fields within the sample.

Method names decide, never the JSON-RPC envelope (MCP uses the same one as
XMRig). Confidence follows shared/reference/signatures.md:

- high: Stratum client methods, an XMRig/xmr-stak login with pass and agent
  (or an algo list), eth_submitLogin, mining.hello, EthereumStratum/1.0.0,
  a whole Stratum V2 SetupConnection for the mining protocol, an SNI or a
  proxy target in the pool lists;
- medium: getwork/getblocktemplate/submitblock (bitcoind and monerod serve
  them to pool software), X-Mining-Extensions, other `mining.*` methods,
  eth_*Work without a worker, a cut or non-mining SetupConnection, an XMRig
  login cut before its pass and agent (the rest was never seen), and a
  ClientHello without SNI, to an address not learned from a name, from a
  process with miner traits (XMRig sends no SNI to an IP-literal pool).

An inbound reply with mining.notify or a `"job":{"blob"` raises a payload
finding one step; miner_traits (the process already looks like a miner)
raises medium payload findings to high. Ports never flag alone.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from guard.detect.classify import (
    CONFIDENCES, RANK, Finding, http_head_fields, short,
)
from guard.detect.classify.framing import websocket_frame, websocket_message
from guard.detect.classify.miner_indicators import Indicators, load_indicators
from guard.detect.classify.proxies import (
    HTTP_CONNECT, SOCKS4, SOCKS5, ProxyTarget, after_proxy_handshake, parse_proxy_request,
)
from guard.detect.classify.tls import parse_tls_client_hello

__all__ = ["classify_payload", "ProxyTarget", "parse_proxy_request", "after_proxy_handshake",
           "SOCKS5", "SOCKS4", "HTTP_CONNECT", "PAYLOAD_DIALECTS"]

#: Bytes of a sample looked at: first messages are small (XMRig's login is
#: under 1 KiB), and the bound keeps a hostile payload cheap.
MAX_SAMPLE = 8 * 1024
#: Newline-delimited messages read from one sample (BIP310 clients pipeline
#: mining.configure, subscribe and authorize in one segment).
MAX_JSON_LINES = 8
MAX_JSON_TOKENS = 1024
EVIDENCE_CHARS = 200

STRATUM_V1 = "stratum-v1"
STRATUM_V1_BIP310 = "stratum-v1-bip310"
CRYPTONOTE_LOGIN = "cryptonote-login"
ETHEREUMSTRATUM_1 = "ethereumstratum-1.0.0"
ETH_PROXY = "eth-proxy"
ETHEREUMSTRATUM_2 = "ethereumstratum-2.0.0"
GETWORK_HTTP = "getwork-http"
STRATUM_V2_PLAINTEXT = "stratum-v2-plaintext"
TLS = "tls"

#: Dialects read from the payload itself: the ones an inbound reply or the
#: process's miner traits can confirm.
PAYLOAD_DIALECTS = frozenset({STRATUM_V1, STRATUM_V1_BIP310, CRYPTONOTE_LOGIN, ETHEREUMSTRATUM_1,
                              ETH_PROXY, ETHEREUMSTRATUM_2, GETWORK_HTTP, STRATUM_V2_PLAINTEXT})

def _sample(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload[:MAX_SAMPLE])
    return b""


def _finding(confidence: str, dialect: str, evidence: dict[str, Any]) -> Finding:
    return Finding(type="stratum", confidence=confidence, dialect=dialect, evidence=evidence)


# --------------------------------------------------------------------------
# A tolerant reader for one JSON object, truncated or not


class _Container:
    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return self.kind


_OBJECT, _ARRAY, _UNREAD = _Container("object"), _Container("array"), _Container("unread")

_JSON_TOKEN = re.compile(
    rb'[ \t\r\n]*(?:"([^"\\\n]*(?:\\.[^"\\\n]*)*)"|([{}\[\]:,])|(-?[0-9][0-9.eE+-]*|true|false|null))')
_MAX_PATH = 3


def _json_string(raw: bytes) -> str:
    if b"\\" not in raw:
        return raw.decode("utf-8", "replace")
    try:
        return json.loads(b'"' + raw + b'"')
    except ValueError:
        return raw.decode("utf-8", "replace")


@dataclass
class _JsonView:
    """Members of one JSON object by path, to depth 3: ("method",) ->
    "login", ("params", "algo", 0) -> "rx/0". Keys whose value was cut off
    map to _UNREAD; objects and arrays to _OBJECT and _ARRAY."""
    values: dict[tuple, Any]

    def get(self, *path: Any) -> Any:
        return self.values.get(path)

    def string(self, *path: Any) -> str | None:
        value = self.values.get(path)
        return value if isinstance(value, str) else None

    def has(self, *path: Any) -> bool:
        return path in self.values

    def strings(self, *prefix: Any) -> list[str]:
        """The string items of the array at prefix, in order."""
        items = []
        index = 0
        while prefix + (index,) in self.values:
            value = self.values[prefix + (index,)]
            if isinstance(value, str):
                items.append(value)
            index += 1
        return items


def _flatten(document: Any) -> dict[tuple, Any]:
    """Paths of a parsed JSON value to depth 3, as _JsonView keeps them."""
    values: dict[tuple, Any] = {}
    pending: list[tuple[tuple, Any]] = [((), document)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, dict):
            values[path] = _OBJECT
            if len(path) < _MAX_PATH:
                pending.extend((path + (k,), v) for k, v in list(value.items())[:64])
        elif isinstance(value, list):
            values[path] = _ARRAY
            if len(path) < _MAX_PATH:
                pending.extend((path + (i,), v) for i, v in enumerate(value[:64]))
        else:
            values[path] = value
    return values


def _read_json_object(line: bytes, wanted: frozenset[str] | None = None) -> _JsonView | None:
    """The members of the JSON object line starts with, as far as it goes.

    A whole line goes to orjson. A line the sample cut short goes to a small
    state machine instead, because a partial login still names its keys; it
    stops early once a top-level "method" outside wanted has been read.
    Neither recurses in Python: orjson refuses nesting past 1024 levels by
    itself, the state machine past 32, and _flatten walks 3 levels."""
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError:
        return _read_cut_json_object(line, wanted)
    return _JsonView(_flatten(document)) if isinstance(document, dict) else None


def _read_cut_json_object(line: bytes, wanted: frozenset[str] | None) -> _JsonView | None:
    values: dict[tuple, Any] = {}
    stack: list[list[Any]] = []     # [is_object, key or index, state]
    position = 0
    for _ in range(MAX_JSON_TOKENS):
        match = _JSON_TOKEN.match(line, position)
        if match is None:
            break
        position = match.end()
        raw_string, punct, scalar = match.groups()
        if not stack:
            if punct != b"{" or values:
                return None
            stack.append([True, None, "key"])
            values[()] = _OBJECT
            continue
        frame = stack[-1]
        state = frame[2]
        if state in ("key", "comma") and punct in (b"}", b"]"):
            if punct != (b"}" if frame[0] else b"]"):
                break
            stack.pop()
            if not stack:
                return _JsonView(values)
            continue
        if state == "comma":
            if punct != b",":
                break
            if frame[0]:
                frame[2] = "key"
            else:
                frame[1] += 1
                frame[2] = "value"
            continue
        if state == "key":
            if raw_string is None:
                break
            frame[1] = _json_string(raw_string)
            frame[2] = "colon"
            path = tuple(f[1] for f in stack)
            if len(path) <= _MAX_PATH:
                values.setdefault(path, _UNREAD)
            continue
        if state == "colon":
            if punct != b":":
                break
            frame[2] = "value"
            continue
        # state == "value": a member value or an array item
        path = tuple(f[1] for f in stack)
        frame[2] = "comma"
        if punct in (b"{", b"["):
            if len(path) <= _MAX_PATH:
                values[path] = _OBJECT if punct == b"{" else _ARRAY
            if len(stack) >= 32:
                break
            stack.append([punct == b"{", None if punct == b"{" else 0,
                          "key" if punct == b"{" else "value"])
            continue
        if punct is not None:
            if punct == b"]" and not frame[0] and frame[1] == 0:     # []
                stack.pop()
                if not stack:
                    return _JsonView(values)
                continue
            break
        if len(path) <= _MAX_PATH:
            values[path] = _json_string(raw_string) if raw_string is not None else scalar.decode()
            if path == ("method",) and wanted is not None and values[path] not in wanted \
                    and not str(values[path]).startswith("mining."):
                break                       # the method is all that decides; it is not ours
    return _JsonView(values) if values else None


# --------------------------------------------------------------------------
# Newline-delimited JSON: Stratum V1 and its relatives

#: Client methods of Stratum V1 and its extensions that only miners send
#: (mining.configure and mining.hello name their own dialects).
_V1_CLIENT_METHODS = frozenset({
    "mining.subscribe", "mining.authorize", "mining.submit", "mining.extranonce.subscribe",
    "mining.suggest_difficulty", "mining.suggest_target", "mining.get_transactions",
})
#: geth serves these too, but only over HTTP/WebSocket/IPC: newline JSON on
#: raw TCP is a pool.
_ETH_WORK_METHODS = frozenset({"eth_getWork", "eth_submitWork", "eth_submitHashrate"})
_JSON_ANCHORS = (b'"mining.', b'"login"', b'"eth_')
#: Top-level methods worth reading a cut line to the end for (besides mining.*).
_JSON_METHODS = frozenset({"login", "eth_submitLogin"}) | _ETH_WORK_METHODS


@dataclass
class _Verdict:
    dialect: str
    confidence: str
    method: str
    evidence: dict[str, Any]


def _judge_mining_method(method: str, view: _JsonView) -> _Verdict:
    if method == "mining.hello":
        evidence = {"proto": view.string("params", "proto"), "agent": view.string("params", "agent")}
        return _Verdict(ETHEREUMSTRATUM_2, "high", method, evidence)
    if method == "mining.subscribe":
        params = view.strings("params")
        protocol = next((p for p in params if p.startswith("EthereumStratum/")), None)
        agent = params[0] if params and params[0] != protocol else None
        if protocol is not None:
            return _Verdict(ETHEREUMSTRATUM_1, "high", method, {"protocol": protocol, "agent": agent})
        return _Verdict(STRATUM_V1, "high", method, {"agent": agent})
    if method == "mining.configure":
        return _Verdict(STRATUM_V1_BIP310, "high", method, {"extensions": view.strings("params", 0)})
    if method in _V1_CLIENT_METHODS:
        return _Verdict(STRATUM_V1, "high", method, {})
    # Zeek calls any other mining.* method Possible_Mining
    return _Verdict(STRATUM_V1, "medium", method, {})


def _judge_login(view: _JsonView, cut: bool = False) -> _Verdict | None:
    """XMRig/xmr-stak login: params with login and pass+agent, or the algo
    list (xmrig's algorithm negotiation). Generic login RPCs lack these. A
    line cut inside params after its login (the sample ended) is medium:
    what would have decided was never seen."""
    if view.get("params") is not _OBJECT or not view.has("params", "login"):
        return None
    has_pass_and_agent = view.has("params", "pass") and view.has("params", "agent")
    has_algo_list = view.get("params", "algo") is _ARRAY
    if not (has_pass_and_agent or has_algo_list):
        if cut and isinstance(view.string("params", "login"), str):
            return _Verdict(CRYPTONOTE_LOGIN, "medium", "login",
                            {"keys": [k for k in ("login", "pass", "agent")
                                      if view.has("params", k)], "cut": True})
        return None
    keys = [k for k in ("login", "pass", "agent", "rigid", "algo") if view.has("params", k)]
    evidence: dict[str, Any] = {"keys": keys, "agent": view.string("params", "agent")}
    if has_algo_list:
        evidence["algo"] = view.strings("params", "algo")[:8]
    return _Verdict(CRYPTONOTE_LOGIN, "high", "login", evidence)


def _judge_message(view: _JsonView, cut: bool = False) -> _Verdict | None:
    method = view.string("method")
    if method is None or len(method) > 64:
        return None
    if method.startswith("mining."):
        return _judge_mining_method(method, view)
    if method == "login":
        return _judge_login(view, cut)
    worker = view.string("worker")
    if method == "eth_submitLogin":
        return _Verdict(ETH_PROXY, "high", method, {"worker": worker})
    if method in _ETH_WORK_METHODS:
        return _Verdict(ETH_PROXY, "high" if worker is not None else "medium", method,
                        {"worker": worker})
    return None


def _json_lines(data: bytes) -> list[Finding]:
    if not any(anchor in data for anchor in _JSON_ANCHORS):
        return []
    verdicts: list[_Verdict] = []
    lines = data.split(b"\n", MAX_JSON_LINES)[:MAX_JSON_LINES]
    for number, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        if not line.startswith(b"{"):
            break                           # not newline-delimited JSON from here on
        view = _read_json_object(line, _JSON_METHODS)
        if view is None:
            break
        verdict = _judge_message(view, cut=number == len(lines) - 1 and not line.endswith(b"}"))
        if verdict is not None:
            verdicts.append(verdict)
    if not verdicts:
        return []
    best = max(verdicts, key=lambda verdict: RANK[verdict.confidence])   # the first on ties
    methods = list(dict.fromkeys(v.method for v in verdicts))
    evidence = {"methods": [short(m, 64) for m in methods], "framing": "newline-json"}
    evidence.update({k: _evidence_value(v) for k, v in best.evidence.items() if v not in (None, [])})
    return [_finding(best.confidence, best.dialect, evidence)]


def _evidence_value(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, list):
        return [short(v, 64) for v in value[:8]]
    return short(value, EVIDENCE_CHARS)


# --------------------------------------------------------------------------
# HTTP: getwork / getblocktemplate, and eth-proxy over HTTP

_HTTP_METHODS = (b"POST ", b"GET ", b"PUT ")
#: Lower-case anchors, searched in the lower-cased request (header names
#: are case-insensitive; the method names are matched exactly later).
_HTTP_ANCHORS = (b"getwork", b"getblocktemplate", b"submitblock", b"eth_submitlogin",
                 b"x-mining-extensions")
_GETWORK_METHODS = frozenset({"getwork", "getblocktemplate", "submitblock"})
_HTTP_JSON_METHODS = _GETWORK_METHODS | {"eth_submitLogin"}


def _http_headers(head: bytes) -> tuple[str, dict[str, str]]:
    return http_head_fields(head.decode("latin-1"))


def _http_request(data: bytes) -> list[Finding]:
    if not data.startswith(_HTTP_METHODS):
        return []
    lowered = data.lower()
    if not any(anchor in lowered for anchor in _HTTP_ANCHORS):
        return []
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, headers = _http_headers(head)
    parts = request_line.split(" ")
    evidence: dict[str, Any] = {"request": short(" ".join(parts[:2]), 120)}
    if "user-agent" in headers:
        evidence["user_agent"] = short(headers["user-agent"], EVIDENCE_CHARS)
    extensions = headers.get("x-mining-extensions")
    method = None
    stripped = body.lstrip()
    if stripped.startswith(b"{"):
        view = _read_json_object(stripped, _HTTP_JSON_METHODS)
        method = view.string("method") if view is not None else None
    if method == "eth_submitLogin":         # eth-proxy needs no transport to be recognised
        evidence.update(method=method)
        return [_finding("high", ETH_PROXY, evidence)]
    if method not in _GETWORK_METHODS and extensions is None:
        return []                           # eth_getWork over HTTP is geth's own getwork
    if method in _GETWORK_METHODS:
        evidence["method"] = method
    if extensions is not None:
        evidence["x_mining_extensions"] = short(extensions, 120)
    return [_finding("medium", GETWORK_HTTP, evidence)]


# --------------------------------------------------------------------------
# Stratum V2 in plaintext: a SetupConnection frame


_SV2_PROTOCOLS = {0: "mining", 1: "job-declaration", 2: "template-distribution"}


def _str0_255(data: bytes, position: int) -> tuple[str, int] | None:
    if position >= len(data):
        return None
    end = position + 1 + data[position]
    raw = data[position + 1:end]
    if len(raw) != data[position] or not all(0x20 <= b < 0x7F for b in raw):
        return None
    return raw.decode("ascii"), end


def _setup_connection_fields(frame: bytes) -> dict[str, Any] | None:
    """endpoint, vendor, hardware and firmware of a whole SetupConnection
    payload, or None when it is cut off or does not parse exactly."""
    position = 5 + 4                        # protocol, min/max version, flags
    host = _str0_255(frame, position)
    if host is None or host[1] + 2 > len(frame):
        return None
    port = int.from_bytes(frame[host[1]:host[1] + 2], "little")
    position = host[1] + 2
    texts = []
    for _ in range(4):                      # vendor, hardware_version, firmware, device_id
        parsed = _str0_255(frame, position)
        if parsed is None:
            return None
        texts.append(parsed[0])
        position = parsed[1]
    if position != len(frame):
        return None
    return {"endpoint": short(f"{host[0]}:{port}", 120), "vendor": short(texts[0], 64),
            "hardware": short(texts[1], 64), "firmware": short(texts[2], 64)}


def _stratum_v2(data: bytes) -> list[Finding]:
    """Frame header ext_type=0 msg_type=0 (SetupConnection), U24 length,
    then protocol and min/max version 2: `00 00 00 LL LL LL PP 02 00 02 00`."""
    if len(data) < 11 or data[:3] != b"\x00\x00\x00":
        return []
    length = int.from_bytes(data[3:6], "little")
    protocol = data[6]
    min_version = int.from_bytes(data[7:9], "little")
    max_version = int.from_bytes(data[9:11], "little")
    if protocol not in _SV2_PROTOCOLS or min_version != 2 or not 2 <= max_version <= 15:
        return []
    if not 16 <= length <= 1300:            # the smallest and largest a SetupConnection can be
        return []
    evidence: dict[str, Any] = {"message": "SetupConnection", "protocol": _SV2_PROTOCOLS[protocol],
                                "header": data[:11].hex(" ")}
    frame = data[6:6 + length]
    fields = _setup_connection_fields(frame) if len(frame) == length else None
    if fields is not None:
        evidence.update(fields)
    # A complete, exactly parsing mining-protocol SetupConnection is a
    # miner; template distribution is how pool software talks to bitcoind.
    confidence = "high" if fields is not None and protocol == 0 else "medium"
    return [_finding(confidence, STRATUM_V2_PLAINTEXT, evidence)]


# --------------------------------------------------------------------------
# TLS ClientHello (read by guard/detect/classify/tls.py)


_HTTP_ALPN = frozenset({"h2", "h3", "http/1.1", "http/1.0", "spdy/3.1"})


def _tls(data: bytes, dst_port: int | None, miner_traits: bool, named: bool,
         indicators: Indicators) -> list[Finding]:
    hello = parse_tls_client_hello(data)
    if hello is None:
        return []
    evidence: dict[str, Any] = {"sni": hello.server_name, "alpn": list(hello.alpn)}
    if hello.server_name:
        match = indicators.match_domain(hello.server_name)
        if match is None:
            return []
        evidence.update(matched=match.entry, list=match.list)
        return [_finding("high", TLS, evidence)]
    # XMRig sends SNI only when a pool sets "sni": true, and no ALPN; to a
    # pool at an IP literal it has no name to send. Without a complete hello
    # and miner traits this would flag half the internal TLS of the world; an
    # address the workload learned from a name had one it chose not to send.
    if (hello.complete and hello.server_name is None and miner_traits and not named
            and not _HTTP_ALPN & set(hello.alpn)):
        evidence.update(port=dst_port, miner_traits=True)
        return [_finding("medium", TLS, evidence)]
    return []


# --------------------------------------------------------------------------
# Proxies: SOCKS4/5 and HTTP CONNECT (their requests are read in proxies.py)


def _proxy(data: bytes, miner_traits: bool, indicators: Indicators,
           nested: bool) -> list[Finding]:
    target = parse_proxy_request(data)
    if target is None:
        return []
    findings = []
    match = indicators.match_domain(target.host)
    if match is not None:
        findings.append(_finding("high", target.protocol, {
            "host": short(target.host, EVIDENCE_CHARS), "port": target.port,
            "matched": match.entry, "list": match.list}))
    if not nested and target.end is not None and target.end < len(data):
        via = {"via": target.protocol,
               "proxy_target": short(f"{target.host}:{target.port}", EVIDENCE_CHARS)}
        for inner in _classify(data[target.end:], target.port, miner_traits, False, indicators,
                               True):
            findings.append(_finding(inner.confidence, inner.dialect, {**inner.evidence, **via}))
    return findings


# --------------------------------------------------------------------------
# Inbound replies and the entry point

_REPLY_ANCHORS = re.compile(rb'"mining\.notify"|"job"\s*:\s*\{\s*"blob"')


def _reply_anchor(inbound: Any, dialect: str | None) -> str | None:
    """What in the server's first bytes confirms a mining handshake."""
    data = _sample(inbound)
    if not data:
        return None
    if dialect == STRATUM_V2_PLAINTEXT:
        # SetupConnection.Success: ext_type 0, msg_type 0x01
        return "SetupConnection.Success" if data[:3] == b"\x00\x00\x01" and len(data) >= 12 else None
    match = _REPLY_ANCHORS.search(data)
    return match.group(0).decode("ascii", "replace") if match else None


_BLANKS = b" \t\r\n"


def _classify(data: bytes, dst_port: int | None, miner_traits: bool, named: bool,
              indicators: Indicators, nested: bool) -> list[Finding]:
    """Dispatch on the first byte after any blanks: each protocol family has its own."""
    data = data.lstrip(_BLANKS)
    if not data:
        return []
    first = data[0]
    if first == 0x7B:
        return _json_lines(data)
    if first == 0x16:
        return _tls(data, dst_port, miner_traits, named, indicators)
    if first == 0x00:
        return _stratum_v2(data)
    if first in (0x04, 0x05) or data.startswith(b"CONNECT "):
        return _proxy(data, miner_traits, indicators, nested)
    if not nested and (websocket_frame(data) or data.startswith(b"GET ")):
        framed = _websocket(data, dst_port, miner_traits, indicators)
        if framed is not None:
            return framed
    if 0x41 <= first <= 0x5A:
        return _http_request(data)
    return []


# --------------------------------------------------------------------------
# WebSocket (RFC 6455 5.2): the message in a client's first frames (framing.py)


def _websocket(data: bytes, dst_port: int | None, miner_traits: bool,
               indicators: Indicators) -> list[Finding] | None:
    """Findings in the message a WebSocket's first frames carry, after an
    upgrade request in the same bytes or alone; None when data holds none."""
    framed = data
    if data.startswith(b"GET "):
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep or not rest or b"websocket" not in head.lower():
            return None
        framed = rest
    unmasked = websocket_message(framed)
    if unmasked is None or not unmasked[0].strip(_BLANKS):
        return None
    return [_finding(f.confidence, f.dialect, {**f.evidence, "framing": "websocket"})
            for f in _classify(unmasked[0], dst_port, miner_traits, False, indicators, True)]


def _confirmed(finding: Finding, inbound: Any, miner_traits: bool) -> Finding:
    """finding raised by a confirming reply or by the process's miner traits."""
    if finding.dialect not in PAYLOAD_DIALECTS:
        return finding
    confidence = finding.confidence
    evidence = dict(finding.evidence)
    reply = _reply_anchor(inbound, finding.dialect) if inbound is not None else None
    if reply is not None:
        evidence["reply"] = short(reply, 64)
        confidence = CONFIDENCES[min(RANK[confidence] + 1, len(CONFIDENCES) - 1)]
    if miner_traits and confidence == "medium":
        evidence["miner_traits"] = True
        confidence = "high"
    if confidence == finding.confidence and evidence == finding.evidence:
        return finding
    return _finding(confidence, finding.dialect, evidence)


def classify_payload(payload: bytes, *, dst_port: int | None = None, inbound: bytes | None = None,
                     miner_traits: bool = False, named: bool = False,
                     indicators: Indicators | None = None) -> list[Finding]:
    """Stratum-family findings for the first outbound bytes of a flow.

    dst_port is the destination port (evidence; ports never flag alone).
    inbound, when the caller has it, is the server's first reply.
    miner_traits says the process already looks like a miner (miner_exec
    findings): it turns a ClientHello without SNI into a medium finding
    (unless named: the address was learned from a name, the kernel's
    GUARD_PAYLOAD_NAMED) and lifts medium payload findings to high.
    indicators defaults to the packaged guard/data/miners.yaml.

    payload may also be several samples of one flow in order (a message the
    kernel saw in pieces): they are read as one stream."""
    if isinstance(payload, (list, tuple)):
        payload = b"".join(bytes(p) for p in payload
                           if isinstance(p, (bytes, bytearray, memoryview)))[:MAX_SAMPLE]
    data = _sample(payload)
    if not data:
        return []
    port = dst_port if isinstance(dst_port, int) and not isinstance(dst_port, bool) else None
    traits = miner_traits is True
    findings = _classify(data, port, traits, named is True, indicators or load_indicators(), False)
    if not findings and inbound is not None and data.lstrip()[:1] == b"{":
        # a JSON line the client dialects do not know, answered like a pool
        reply = _reply_anchor(inbound, None)
        if reply is not None:
            return [_finding("medium", "stratum-reply", {"reply": short(reply, 64)})]
    return [_confirmed(f, inbound, traits) for f in findings]
