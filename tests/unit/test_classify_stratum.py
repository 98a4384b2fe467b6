# SPDX-License-Identifier: Apache-2.0
"""Stratum-family first payloads, TLS ClientHellos and proxy requests.

The first messages are rebuilt from the code of the clients that send them
(shared/reference/signatures.md, section 1) and kept byte for byte in
tests/fixtures/payloads/ for tests that need a real client's bytes on the
wire.
"""
from __future__ import annotations

import functools
import json
import ssl
import struct

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.detect.classify import Finding
from guard.detect.classify.miner_indicators import load_indicators
from guard.detect.classify.stratum import (
    ProxyTarget, after_proxy_handshake, classify_payload, parse_proxy_request,
)
from guard.detect.classify.tls import ClientHello, parse_tls_client_hello
from tests.conftest import FIXTURES, ROOT

PAYLOADS = FIXTURES / "payloads"

MONERO_WALLET = ("44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2"
                 "VBBEt7f2wfn3RVGQBEP3A")
XMRIG_AGENT = "XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/12.2.0"
XMRIG_ALGOS = ["cn/1", "cn/2", "cn/r", "cn/fast", "cn/half", "cn/xao", "cn/rto", "cn/rwz", "cn/zls",
               "cn/double", "cn/ccx", "cn-lite/1", "cn-heavy/0", "cn-heavy/tube", "cn-heavy/xhv",
               "cn-pico", "cn-pico/tlo", "cn/upx2", "rx/0", "rx/wow", "rx/arq", "rx/graft", "rx/sfx",
               "rx/keva", "argon2/chukwa", "argon2/chukwav2", "argon2/ninja", "ghostrider"]


def compact(obj) -> bytes:
    """JSON the way rapidjson's Writer (XMRig, ethminer) prints it."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def http_post(path: str, body: bytes, extra_headers: str = "", host: str = "127.0.0.1:8332") -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra_headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def setup_connection(protocol: int = 0) -> bytes:
    """Stratum V2 SetupConnection in a plaintext frame (sv2-spec 03, 04):
    ext_type U16, msg_type U8, length U24, then protocol U8, min/max version
    U16, flags U32, endpoint host STR0_255, port U16, vendor, hardware
    version, firmware and device id STR0_255; all little-endian."""
    def str0_255(text: str) -> bytes:
        return bytes([len(text)]) + text.encode()
    body = (bytes([protocol]) + struct.pack("<HHI", 2, 2, 0b1)
            + str0_255("v2.stratum.braiins.com") + struct.pack("<H", 3336)
            + str0_255("Bitmain") + str0_255("S19j Pro") + str0_255("braiins-os-2024.12")
            + str0_255("rig-07"))
    return struct.pack("<HB", 0, 0x00) + len(body).to_bytes(3, "little") + body


#: name -> (first client bytes, dialect, confidence)
FIRST_MESSAGES: dict[str, tuple[bytes, str, str]] = {
    # pooler/cpuminer util.c stratum_subscribe: printf-built, with spaces
    "stratum-v1.cpuminer": (
        b'{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}\n',
        "stratum-v1", "high"),
    "stratum-v1.cpuminer-resume": (
        b'{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1", "2a010000"]}\n',
        "stratum-v1", "high"),
    "stratum-v1.cpuminer-retry": (
        b'{"id": 1, "method": "mining.subscribe", "params": []}\n', "stratum-v1", "high"),
    # a proxy or a reconnecting miner may authorize first
    "stratum-v1.authorize": (
        b'{"params": ["bc1qexampleworker.rig1", "x"], "id": 2, "method": "mining.authorize"}\n',
        "stratum-v1", "high"),
    # XMRig's kawpow/ghostrider client (EthStratumClient.cpp)
    "stratum-v1.xmrig-kawpow": (
        compact({"id": 1, "method": "mining.subscribe", "params": [XMRIG_AGENT]}),
        "stratum-v1", "high"),
    # BIP310: configure SHOULD come first; ASICs pipeline subscribe and authorize after it
    "stratum-v1-bip310.bitaxe": (
        b'{"method": "mining.configure","id":1,"params":[["version-rolling"],'
        b'{"version-rolling.mask":"1fffe000","version-rolling.min-bit-count":2}]}\n'
        b'{"id": 2, "method": "mining.subscribe", "params": ["bitaxe/BM1366/v2.4.0"]}\n'
        b'{"id": 3, "method": "mining.authorize", "params": ["bc1qexampleworker.bitaxe", "x"]}\n',
        "stratum-v1-bip310", "high"),
    # xmrig Client.cpp login(): fixed key order, rigid only when set
    "cryptonote-login.xmrig": (
        compact({"id": 1, "jsonrpc": "2.0", "method": "login",
                 "params": {"login": MONERO_WALLET, "pass": "x", "agent": XMRIG_AGENT,
                            "rigid": "rig1", "algo": XMRIG_ALGOS}}),
        "cryptonote-login", "high"),
    "cryptonote-login.xmrig-no-rigid": (
        compact({"id": 1, "jsonrpc": "2.0", "method": "login",
                 "params": {"login": MONERO_WALLET, "pass": "x", "agent": XMRIG_AGENT,
                            "algo": XMRIG_ALGOS}}),
        "cryptonote-login", "high"),
    # xmr-stak jpsock.cpp: id last, no jsonrpc member
    "cryptonote-login.xmr-stak": (
        ('{"method":"login","params":{"login":"%s","pass":"x","rigid":"","agent":'
         '"xmr-stak/2.10.8/1f0d5c8/master/lin/nvidia-amd-cpu/0"},"id":1}\n' % MONERO_WALLET).encode(),
        "cryptonote-login", "high"),
    # NiceHash EthereumStratum/1.0.0, as ethminer sends it
    "ethereumstratum-1.0.0.ethminer": (
        compact({"id": 1, "method": "mining.subscribe",
                 "params": ["ethminer 0.19.0", "EthereumStratum/1.0.0"]}),
        "ethereumstratum-1.0.0", "high"),
    # eth-proxy (open-ethereum-pool STRATUM.md, ethminer)
    "eth-proxy.ethminer": (
        compact({"id": 1, "jsonrpc": "2.0", "method": "eth_submitLogin",
                 "params": ["0x7d5b5a4e8c0f26a2f9d3a5e6c7b8d9e0f1a2b3c4", "x"], "worker": "rig1"}),
        "eth-proxy", "high"),
    "eth-proxy.getwork-with-worker": (
        compact({"id": 5, "jsonrpc": "2.0", "method": "eth_getWork", "params": [],
                 "worker": "rig1"}),
        "eth-proxy", "high"),
    # EthereumStratum/2.0.0 (ethminer 0.18+)
    "ethereumstratum-2.0.0.ethminer": (
        compact({"id": 1, "method": "mining.hello",
                 "params": {"agent": "ethminer-0.19.0", "host": "eu1.ethermine.org", "port": "d05",
                            "proto": "EthereumStratum/2.0.0"}}),
        "ethereumstratum-2.0.0", "high"),
    # cpuminer util.c json_rpc_call: getwork and getblocktemplate over HTTP
    "getwork-http.cpuminer-getwork": (
        http_post("/", b'{"method": "getwork", "params": [], "id":0}\r\n',
                  "Authorization: Basic dXNlcjpwYXNz\r\nAccept: */*\r\n"
                  "User-Agent: cpuminer/2.5.1\r\nX-Mining-Extensions: midstate\r\n"),
        "getwork-http", "medium"),
    "getwork-http.cpuminer-gbt": (
        http_post("/", b'{"method": "getblocktemplate", "params": [{"capabilities": ["coinbasetxn", '
                       b'"coinbasevalue", "longpoll", "workid"]}], "id":0}\r\n',
                  "User-Agent: cpuminer/2.5.1\r\nX-Mining-Extensions: longpoll reject-reason\r\n"),
        "getwork-http", "medium"),
    # xmrig DaemonClient.cpp: daemon mode against monerod
    "getwork-http.xmrig-daemon": (
        http_post("/json_rpc", compact({"id": 1, "jsonrpc": "2.0", "method": "getblocktemplate",
                                        "params": {"wallet_address": MONERO_WALLET,
                                                   "reserve_size": 60}}).rstrip(b"\n"),
                  host="127.0.0.1:18081"),
        "getwork-http", "medium"),
    "stratum-v2-plaintext.setup-connection": (setup_connection(0), "stratum-v2-plaintext", "high"),
}


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def client_hello(server_name: str | None, alpn: list[str] | None = None) -> bytes:
    """A real ClientHello from the ssl module; server_name=None sends no SNI."""
    context = ssl.create_default_context()
    if server_name is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def stratum_findings(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.type == "stratum"]


# --------------------------------------------------------------------------
# Each dialect's first message


@pytest.mark.parametrize("name", sorted(FIRST_MESSAGES))
def test_first_message_names_the_dialect(name):
    payload, dialect, confidence = FIRST_MESSAGES[name]
    finding = only(classify_payload(payload, dst_port=3333))
    assert (finding.type, finding.dialect, finding.confidence) == ("stratum", dialect, confidence)
    orjson.dumps(finding.as_dict())


@pytest.mark.parametrize("name", sorted(FIRST_MESSAGES))
def test_truncated_at_256_bytes_is_still_recognised(name):
    payload, dialect, _ = FIRST_MESSAGES[name]
    for cut in range(min(256, len(payload)), len(payload) + 1):
        finding = only(classify_payload(payload[:cut]))
        assert finding.dialect == dialect, cut


@pytest.mark.parametrize("name", sorted(FIRST_MESSAGES))
def test_fixture_files_hold_the_same_bytes(name):
    """tests/fixtures/payloads/ keeps these messages for tests that replay them."""
    assert (PAYLOADS / f"{name}.bin").read_bytes() == FIRST_MESSAGES[name][0]


def test_fixture_directory_has_no_strays():
    assert sorted(p.stem for p in PAYLOADS.glob("*.bin")) == sorted(FIRST_MESSAGES)


def test_evidence_names_methods_agent_and_keys():
    finding = only(classify_payload(FIRST_MESSAGES["cryptonote-login.xmrig"][0]))
    assert finding.evidence["methods"] == ["login"]
    assert finding.evidence["agent"] == XMRIG_AGENT
    assert finding.evidence["keys"] == ["login", "pass", "agent", "rigid", "algo"]
    assert finding.evidence["algo"][:2] == ["cn/1", "cn/2"]
    assert all(len(str(v)) <= 210 for v in finding.evidence.values())

    es1 = only(classify_payload(FIRST_MESSAGES["ethereumstratum-1.0.0.ethminer"][0]))
    assert es1.evidence["protocol"] == "EthereumStratum/1.0.0"
    es2 = only(classify_payload(FIRST_MESSAGES["ethereumstratum-2.0.0.ethminer"][0]))
    assert es2.evidence["proto"] == "EthereumStratum/2.0.0"
    bip310 = only(classify_payload(FIRST_MESSAGES["stratum-v1-bip310.bitaxe"][0]))
    assert bip310.evidence["methods"] == ["mining.configure", "mining.subscribe", "mining.authorize"]
    assert bip310.evidence["extensions"] == ["version-rolling"]
    getwork = only(classify_payload(FIRST_MESSAGES["getwork-http.cpuminer-getwork"][0]))
    assert getwork.evidence["x_mining_extensions"] == "midstate"
    assert getwork.evidence["method"] == "getwork"
    sv2 = only(classify_payload(FIRST_MESSAGES["stratum-v2-plaintext.setup-connection"][0]))
    assert sv2.evidence["vendor"] == "Bitmain"
    assert sv2.evidence["endpoint"] == "v2.stratum.braiins.com:3336"


def test_login_cut_inside_the_agent_still_counts():
    """At 256 bytes XMRig's login with a 95-character wallet is cut in the
    agent string: the key is there, its value is not."""
    payload = FIRST_MESSAGES["cryptonote-login.xmrig"][0]
    cut = payload.index(b'"agent":"') + len(b'"agent":"XMR')
    finding = only(classify_payload(payload[:cut]))
    assert finding.dialect == "cryptonote-login"
    assert "agent" in finding.evidence["keys"]


def test_leading_whitespace_and_crlf_framing():
    finding = only(classify_payload(b'\r\n {"id":1,"method":"mining.subscribe","params":[]}\r\n'))
    assert finding.dialect == "stratum-v1"


def test_other_mining_methods_are_medium():
    finding = only(classify_payload(b'{"id":1,"method":"mining.capabilities","params":[{}]}\n'))
    assert (finding.dialect, finding.confidence) == ("stratum-v1", "medium")


def test_eth_work_on_raw_tcp_without_worker_is_medium():
    payload = compact({"id": 1, "jsonrpc": "2.0", "method": "eth_getWork", "params": []})
    assert only(classify_payload(payload)).confidence == "medium"


def test_setup_connection_outside_the_mining_protocol_or_cut_is_medium():
    assert only(classify_payload(setup_connection(2))).confidence == "medium"
    cut = setup_connection(0)[:20]
    finding = only(classify_payload(cut))
    assert (finding.dialect, finding.confidence) == ("stratum-v2-plaintext", "medium")


# --------------------------------------------------------------------------
# Inbound replies and miner traits raise confidence

V1_REPLY = (b'{"id":1,"result":[[["mining.set_difficulty","b4b6693b72a50c7116db18d6497cac52"],'
            b'["mining.notify","ae6812eb4cd7735a302a8a9dd95cf71f"]],"08000002",4],"error":null}\n')
XMRIG_JOB_REPLY = (b'{"id":1,"jsonrpc":"2.0","error":null,"result":{"id":"4b5e7c","job":{"blob":'
                   b'"0e0ea2a8b5a806","job_id":"q8vT","target":"b88d0600","algo":"rx/0","height":3}'
                   b',"extensions":["algo","nicehash","connect","tls","keepalive"],"status":"OK"}}\n')
SV2_SUCCESS = bytes([0, 0, 0x01, 6, 0, 0]) + struct.pack("<HI", 2, 0)


def test_reply_with_mining_notify_raises_and_is_evidence():
    payload = b'{"id":1,"method":"mining.capabilities","params":[{}]}\n'
    finding = only(classify_payload(payload, inbound=V1_REPLY))
    assert finding.confidence == "high"
    assert finding.evidence["reply"] == '"mining.notify"'


def test_reply_with_job_blob_is_evidence_on_a_login():
    finding = only(classify_payload(FIRST_MESSAGES["cryptonote-login.xmrig"][0],
                                    inbound=XMRIG_JOB_REPLY))
    assert finding.confidence == "high"
    assert finding.evidence["reply"].startswith('"job":{"blob"')


def test_sv2_success_reply_confirms_a_cut_setup_connection():
    finding = only(classify_payload(setup_connection(0)[:20], inbound=SV2_SUCCESS))
    assert finding.confidence == "high"
    assert finding.evidence["reply"] == "SetupConnection.Success"


def test_unrelated_reply_changes_nothing():
    payload = FIRST_MESSAGES["getwork-http.cpuminer-getwork"][0]
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"result\":{\"data\":\"00\"}}"
    assert only(classify_payload(payload, inbound=reply)).confidence == "medium"


def test_miner_traits_lift_node_methods_to_high():
    payload = FIRST_MESSAGES["getwork-http.cpuminer-gbt"][0]
    finding = only(classify_payload(payload, miner_traits=True))
    assert finding.confidence == "high"
    assert finding.evidence["miner_traits"] is True


# --------------------------------------------------------------------------
# TLS


def test_client_hello_fields():
    hello = parse_tls_client_hello(client_hello("Example.ORG", ["h2", "http/1.1"]))
    assert hello == ClientHello("example.org", ("h2", "http/1.1"), True)
    bare = parse_tls_client_hello(client_hello(None))
    assert bare == ClientHello(None, (), True)


def test_truncated_client_hello_is_incomplete_never_sni_less():
    full = client_hello("example.org")
    for cut in range(6, len(full)):
        hello = parse_tls_client_hello(full[:cut])
        assert hello is not None, cut
        assert hello.complete is False
        assert hello.server_name in (None, "example.org")


def test_not_a_client_hello():
    assert parse_tls_client_hello(b"") is None
    assert parse_tls_client_hello(b"GET / HTTP/1.1\r\n") is None
    server_hello = b"\x16\x03\x03\x00\x30\x02\x00\x00\x2c" + bytes(44)
    assert parse_tls_client_hello(server_hello) is None


def test_client_hello_spanning_two_records():
    full = client_hello("pool.supportxmr.com")
    handshake = full[5:]
    split = b"".join(b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
                     for part in (handshake[:100], handshake[100:]))
    assert parse_tls_client_hello(split).server_name == "pool.supportxmr.com"


@pytest.mark.parametrize("sni,matched", [
    ("pool.supportxmr.com", "supportxmr.com"),
    ("gulf.moneroocean.stream", "moneroocean.stream"),
    ("donate.ssl.xmrig.com", "donate.ssl.xmrig.com"),
])
def test_sni_of_a_pool_is_high(sni, matched):
    finding = only(classify_payload(client_hello(sni), dst_port=443))
    assert (finding.type, finding.dialect, finding.confidence) == ("stratum", "tls", "high")
    assert finding.evidence["sni"] == sni
    assert finding.evidence["matched"] == matched


def test_no_sni_needs_miner_traits_and_an_address_not_learned_from_a_name():
    hello = client_hello(None)
    finding = only(classify_payload(hello, dst_port=5555, miner_traits=True))
    assert (finding.dialect, finding.confidence) == ("tls", "medium")
    assert finding.evidence["port"] == 5555
    assert classify_payload(hello, dst_port=5555) == []
    # issue 17: XMRig with "tls": true to a pool at an IP literal on 443
    assert only(classify_payload(hello, dst_port=443, miner_traits=True)).dialect == "tls"
    assert classify_payload(hello, dst_port=443, miner_traits=True, named=True) == []
    assert classify_payload(hello[:120], dst_port=5555, miner_traits=True) == []
    with_alpn = client_hello(None, ["h2"])
    assert classify_payload(with_alpn, dst_port=8443, miner_traits=True) == []


# --------------------------------------------------------------------------
# Proxies

SOCKS5_GREETING = b"\x05\x01\x00"


def socks5_connect(host: str, port: int) -> bytes:
    return b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode() + port.to_bytes(2, "big")


def test_socks5_greeting_and_connect_in_one_buffer():
    payload = SOCKS5_GREETING + socks5_connect("pool.supportxmr.com", 3333)
    assert parse_proxy_request(payload) == ProxyTarget("socks5", "pool.supportxmr.com", 3333,
                                                       len(payload))
    finding = only(classify_payload(payload, dst_port=1080))
    assert (finding.dialect, finding.confidence) == ("socks5", "high")
    assert finding.evidence["host"] == "pool.supportxmr.com"
    assert finding.evidence["port"] == 3333


def test_socks5_connect_given_separately():
    connect = socks5_connect("xmr-eu1.nanopool.org", 14444)
    assert parse_proxy_request(connect).host == "xmr-eu1.nanopool.org"
    assert only(classify_payload(connect)).dialect == "socks5"
    assert parse_proxy_request(SOCKS5_GREETING) is None
    assert classify_payload(SOCKS5_GREETING) == []
    assert after_proxy_handshake(SOCKS5_GREETING) == b""


def test_socks5_address_types():
    ipv4 = b"\x05\x01\x00\x01" + bytes([203, 0, 113, 5]) + (3333).to_bytes(2, "big")
    assert parse_proxy_request(ipv4) == ProxyTarget("socks5", "203.0.113.5", 3333, len(ipv4))
    ipv6 = b"\x05\x01\x00\x04" + bytes(15) + b"\x01" + (443).to_bytes(2, "big")
    assert parse_proxy_request(SOCKS5_GREETING + ipv6).host == "::1"
    assert classify_payload(SOCKS5_GREETING + ipv4) == []      # an address names no pool
    greeting_with_auth = b"\x05\x02\x00\x02"
    assert parse_proxy_request(greeting_with_auth + socks5_connect("a.example", 1)).host == "a.example"


def test_socks4a():
    payload = (b"\x04\x01" + (3333).to_bytes(2, "big") + bytes([0, 0, 0, 1]) + b"user\x00"
               + b"pool.minexmr.com\x00")
    assert parse_proxy_request(payload) == ProxyTarget("socks4", "pool.minexmr.com", 3333,
                                                       len(payload))
    assert only(classify_payload(payload)).dialect == "socks4"


def test_http_connect():
    payload = b"CONNECT pool.supportxmr.com:443 HTTP/1.1\r\nHost: pool.supportxmr.com:443\r\n\r\n"
    assert parse_proxy_request(payload) == ProxyTarget("http-connect", "pool.supportxmr.com", 443,
                                                       len(payload))
    finding = only(classify_payload(payload, dst_port=3128))
    assert (finding.dialect, finding.confidence) == ("http-connect", "high")
    assert parse_proxy_request(b"CONNECT [2001:db8::1]:3333 HTTP/1.1\r\n").host == "2001:db8::1"
    assert parse_proxy_request(b"CONNECT pool.supportxmr.com HTTP/1.1\r\n\r\n") is None
    assert parse_proxy_request(b"CONNECT pool.supportxmr.com:3333 HTTP/1.1\r\n").end is None


def test_first_payload_after_the_handshake():
    login = FIRST_MESSAGES["cryptonote-login.xmrig"][0]
    connect = b"CONNECT 198.51.100.7:8080 HTTP/1.1\r\nHost: 198.51.100.7:8080\r\n\r\n"
    assert after_proxy_handshake(connect + login) == login
    assert after_proxy_handshake(connect) == b""
    assert after_proxy_handshake(login) is None
    finding = only(classify_payload(connect + login))
    assert finding.dialect == "cryptonote-login"
    assert finding.evidence["via"] == "http-connect"
    assert finding.evidence["proxy_target"] == "198.51.100.7:8080"


def test_pool_name_and_stratum_through_socks5():
    socks = SOCKS5_GREETING + socks5_connect("pool.supportxmr.com", 3333)
    subscribe = FIRST_MESSAGES["stratum-v1.cpuminer"][0]
    dialects = sorted(f.dialect for f in classify_payload(socks + subscribe))
    assert dialects == ["socks5", "stratum-v1"]


def test_tls_through_a_proxy_uses_the_target_port():
    connect = b"CONNECT 198.51.100.7:5555 HTTP/1.1\r\n\r\n"
    finding = only(classify_payload(connect + client_hello(None), dst_port=3128, miner_traits=True))
    assert (finding.dialect, finding.evidence["port"]) == ("tls", 5555)


# --------------------------------------------------------------------------
# The benign corpus: nothing here is mining

LSP_BODY = compact({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {"processId": 1, "rootUri": "file:///work", "capabilities": {}}})
MCP_INITIALIZE = compact({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                          "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                     "clientInfo": {"name": "agent", "version": "1.0"}}})
MCP_TOOLS_CALL = compact({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                          "params": {"name": "json_rpc", "arguments": {
                              "method": "mining.subscribe",
                              "raw": '{"method":"login","params":{"login":"x","pass":"x","agent":"y"}}'}}})


def postgres_startup(params: bytes) -> bytes:
    """StartupMessage: Int32 length, Int32 protocol 3.0, then key\0value\0 pairs and \0."""
    return (8 + len(params)).to_bytes(4, "big") + b"\x00\x03\x00\x00" + params


BENIGN: dict[str, tuple[bytes, int]] = {
    "mcp initialize (newline JSON)": (MCP_INITIALIZE, 8000),
    "mcp notifications/initialized": (compact({"jsonrpc": "2.0",
                                               "method": "notifications/initialized"}), 8000),
    "mcp tools/call naming mining methods in its arguments": (MCP_TOOLS_CALL, 8000),
    "mcp over streamable HTTP": (http_post("/mcp", MCP_INITIALIZE.rstrip(b"\n"),
                                           "Accept: application/json, text/event-stream\r\n",
                                           host="localhost:3333"), 3333),
    "lsp initialize": (b"Content-Length: %d\r\n\r\n" % len(LSP_BODY) + LSP_BODY, 2087),
    "lsp framing around a mining method": (
        b'Content-Length: 60\r\n\r\n{"jsonrpc":"2.0","id":1,"method":"mining.subscribe"}', 3333),
    "eth_blockNumber over HTTP": (http_post("/", compact(
        {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": [], "id": 1}),
        host="mainnet.example.io"), 8545),
    "eth_call over HTTP": (http_post("/v3/key", compact(
        {"jsonrpc": "2.0", "method": "eth_call", "params": [{"to": "0x00", "data": "0x"}, "latest"],
         "id": 2}), host="mainnet.example.io"), 443),
    "geth getwork over HTTP (ethminer http://)": (http_post("/", compact(
        {"jsonrpc": "2.0", "method": "eth_getWork", "params": [], "id": 1}), host="geth:8545"), 8545),
    "eth_chainId over raw TCP": (compact({"jsonrpc": "2.0", "method": "eth_chainId", "id": 1}), 8545),
    "bitcoind getblockchaininfo": (http_post("/", b'{"jsonrpc":"1.0","id":"c","method":'
                                                  b'"getblockchaininfo","params":[]}'), 8332),
    "electrum server.version": (compact({"jsonrpc": "2.0", "method": "server.version",
                                         "params": ["electrum/4.5", "1.4"], "id": 0}), 50001),
    "generic login RPC": (compact({"id": 1, "method": "login",
                                   "params": {"username": "bob", "password": "hunter2"}}), 3333),
    "login with pass but no agent": (compact({"jsonrpc": "2.0", "method": "login",
                                              "params": {"login": "bob", "pass": "x"}, "id": 7}), 4444),
    "login with agent but no login key": (compact({"method": "login", "params": {
        "user": "bob", "pass": "x", "agent": "Mozilla/5.0"}, "id": 1}), 8080),
    "login API over HTTP": (http_post("/api/login", compact(
        {"login": "bob", "pass": "x", "agent": "web", "algo": ["sha256"]}), host="app"), 80),
    "HTTP GET": (b"GET / HTTP/1.1\r\nHost: example.org\r\nUser-Agent: curl/8.5.0\r\n"
                 b"Accept: */*\r\n\r\n", 80),
    "WebSocket upgrade": (b"GET /ws HTTP/1.1\r\nHost: localhost:3333\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          b"Sec-WebSocket-Version: 13\r\n\r\n", 3333),
    "Selenium new session on 4444": (http_post("/session", compact(
        {"capabilities": {"alwaysMatch": {"browserName": "chrome"}}}), host="selenium:4444"), 4444),
    "Jupyter on 8888": (b"GET /api/kernels?token=abc HTTP/1.1\r\nHost: localhost:8888\r\n\r\n", 8888),
    "SSH banner": (b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n", 22),
    "SMTP EHLO on 25": (b"EHLO mail.example.org\r\n", 25),
    "Redis PING": (b"*1\r\n$4\r\nPING\r\n", 6379),
    "PostgreSQL startup": (postgres_startup(b"user\x00postgres\x00database\x00app\x00\x00"), 5432),
    "PostgreSQL SSLRequest": (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", 5432),
    "gRPC / HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                              b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64"
                              b"\x00\x04\x00\x10\x00\x00\x00\x06\x00\x00\x40\x00", 50051),
    "SOCKS5 CONNECT to an ordinary site": (SOCKS5_GREETING + socks5_connect("github.com", 443), 1080),
    "HTTP CONNECT to an ordinary site": (b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n",
                                         3128),
    "JSON array batch": (b'[{"jsonrpc":"2.0","method":"mining.subscribe","id":1}]\n', 3333),
    "empty": (b"", 3333),
    "one byte": (b"{", 3333),
}


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_corpus_is_not_mining(name):
    payload, port = BENIGN[name]
    assert stratum_findings(classify_payload(payload, dst_port=port)) == []


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_corpus_with_miner_traits_stays_clean(name):
    """Even a process with miner traits is not flagged for ordinary traffic."""
    payload, port = BENIGN[name]
    assert classify_payload(payload, dst_port=port, miner_traits=True) == []


@pytest.mark.parametrize("sni,port", [("example.org", 443), ("example.org", 3333),
                                      ("api.github.com", 443), ("pypi.org", 8443)])
def test_tls_to_ordinary_sites(sni, port):
    assert classify_payload(client_hello(sni, ["h2", "http/1.1"]), dst_port=port,
                            miner_traits=True) == []


def test_no_sni_without_miner_traits_is_not_flagged_on_any_port():
    hello = client_hello(None)
    for port in (25, 3333, 4444, 5555, 8080, 8443, 8888, 14444):
        assert classify_payload(hello, dst_port=port) == []


def test_ports_alone_never_flag():
    for port in sorted(load_indicators().pool_ports):
        assert classify_payload(b"\x00\x01garbage\r\n", dst_port=port) == []
        assert classify_payload(b"hello\n", dst_port=port, miner_traits=True) == []


def test_custom_indicators_are_used():
    custom = load_indicators(ROOT / "guard" / "data" / "miners.yaml")
    finding = only(classify_payload(client_hello("eu.nanopool.org"), indicators=custom))
    assert finding.evidence["matched"] == "nanopool.org"


# --------------------------------------------------------------------------
# Hostile input never raises

PREFIXES = st.sampled_from([
    b"", b"{", b'{"method":"login","params":{', b'{"id":1,"method":"mining.', b'{"method":"eth_',
    b"\x16\x03\x01", b"\x16\x03\x03\x02\x00\x01\x00\x01\xfc\x03\x03", b"\x00\x00\x00",
    b"\x00\x00\x00\x40\x00\x00\x00\x02\x00\x02\x00", b"\x05\x01\x00", b"\x05\x01\x00\x03",
    b"\x04\x01", b"CONNECT ", b"POST / HTTP/1.1\r\n", b"POST / HTTP/1.1\r\n\r\n{\"method\":",
    b"GET / HTTP/1.1\r\nX-Mining-Extensions:", b"Content-Length: 5\r\n\r\n"])
PORTS = st.one_of(st.none(), st.integers(-1, 70000), st.just(443))


def assert_json(findings):
    for finding in findings:
        assert isinstance(finding, Finding)
        orjson.dumps(finding.as_dict())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PREFIXES, st.binary(max_size=600), PORTS, st.one_of(st.none(), st.binary(max_size=200)),
       st.booleans())
def test_classify_payload_never_raises(prefix, tail, port, inbound, traits):
    assert_json(classify_payload(prefix + tail, dst_port=port, inbound=inbound, miner_traits=traits))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PREFIXES, st.binary(max_size=400))
def test_parsers_never_raise(prefix, tail):
    data = prefix + tail
    hello = parse_tls_client_hello(data)
    assert hello is None or isinstance(hello, ClientHello)
    target = parse_proxy_request(data)
    assert target is None or (isinstance(target, ProxyTarget) and 0 <= target.port <= 65535)
    rest = after_proxy_handshake(data)
    assert rest is None or isinstance(rest, bytes)


@functools.lru_cache(maxsize=1)
def pool_hello() -> bytes:
    return client_hello("pool.supportxmr.com")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 4000), st.integers(0, 255))
def test_corrupted_client_hellos_never_raise(position, value):
    hello = bytearray(pool_hello())
    hello[position % len(hello)] = value
    assert_json(classify_payload(bytes(hello), dst_port=3333, miner_traits=True))
    parse_tls_client_hello(bytes(hello))


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12)
BENIGN_METHODS = st.sampled_from(["initialize", "tools/call", "tools/list", "resources/read",
                                  "eth_blockNumber", "eth_call", "server.version", "ping",
                                  "textDocument/didOpen", "getblockchaininfo", "auth.login"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BENIGN_METHODS, JSON_VALUES, st.integers(0, 2000))
def test_json_rpc_with_benign_methods_is_never_mining(method, params, cut):
    message = compact({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    assert classify_payload(message[:max(cut, 1)], dst_port=3333) == []


@pytest.mark.parametrize("junk", [None, 5, "mining.subscribe", ["x"], {"a": 1}, bytearray(b"{"),
                                  memoryview(b'{"method":"mining.subscribe"}')])
def test_junk_arguments(junk):
    assert_json(classify_payload(junk, dst_port=junk, inbound=junk, miner_traits=junk))
    parse_tls_client_hello(junk)
    parse_proxy_request(junk)
    after_proxy_handshake(junk)
