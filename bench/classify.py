# SPDX-License-Identifier: Apache-2.0
"""First-payload classifier benchmark: what the mining and tunnel checks cost
per new flow, on one core.

    .venv/bin/python bench/classify.py [--rounds 5] [--passes 200] [--cpu N]

Corpus: the mining first messages of tests/fixtures/payloads/*.bin (real
clients' bytes, one per Stratum-family dialect) and a benign corpus built
here: what an AI agent's sandbox mostly sends (HTTP GET and POST, MCP
initialize and tools/call over Streamable HTTP, a bare JSON-RPC line, an LSP
Content-Length frame, Ethereum JSON-RPC over HTTP, a WebSocket upgrade, a
TLS ClientHello with SNI from the ssl module, an SSH banner, random bytes).

Classifiers, each called as the agent calls it on a flow's first payload:
guard.detect.classify.stratum.classify_payload(payload, dst_port=port),
guard.detect.classify.tunnels.classify_tunnel_payload(payload, port),
guard.detect.classify.ssh.classify_ssh_banner(payload, port), and all three in
turn. A no-op function timed the same way is the floor: the cost of the
loop and the clock, which every other row includes.

Each round runs every classifier (in a rotated order, so drift hits all
alike) over the whole corpus --passes times: once as a tight loop for
samples per second, once with a clock read around each call for latency.
Rows are medians over rounds of the per-round rate, median and p99. The
process is pinned to one CPU. Needs no root and touches no network.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import ssl
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from guard.detect.classify.ssh import classify_ssh_banner  # noqa: E402
from guard.detect.classify.stratum import classify_payload  # noqa: E402
from guard.detect.classify.tunnels import classify_tunnel_payload  # noqa: E402
from guard.detect.classify.tls import forget_client_hellos  # noqa: E402

PAYLOADS = ROOT / "tests" / "fixtures" / "payloads"

#: Destination port a miner of each dialect typically dials (ports never flag
#: alone; they only feed the TLS and tunnel-port rules).
MINING_PORTS = {"stratum-v1": 3333, "stratum-v1-bip310": 3333, "cryptonote-login": 3333,
                "ethereumstratum-1.0.0": 4444, "ethereumstratum-2.0.0": 4444,
                "eth-proxy": 8008, "getwork-http": 8332, "stratum-v2-plaintext": 3336}


@dataclass(frozen=True)
class Sample:
    name: str
    corpus: str          # "mining" | "benign"
    payload: bytes
    port: int


def mining_corpus() -> list[Sample]:
    samples = []
    for path in sorted(PAYLOADS.glob("*.bin")):
        # file names are DIALECT.CLIENT, and dialects contain dots (1.0.0)
        dialect = max((d for d in MINING_PORTS if path.stem.startswith(d + ".")),
                      key=len, default="")
        port = 18081 if "xmrig-daemon" in path.stem else MINING_PORTS.get(dialect, 3333)
        samples.append(Sample(path.stem, "mining", path.read_bytes(), port))
    if not samples:
        raise SystemExit(f"no payloads in {PAYLOADS}")
    return samples


def http_request(method: str, path: str, host: str, headers: dict[str, str] | None = None,
                 body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def jsonrpc(method: str, params, ident: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": ident, "method": method, "params": params},
                      separators=(",", ":")).encode()


def tls_client_hello(server_name: str) -> bytes:
    """The ClientHello this machine's OpenSSL sends (TLS 1.3, key shares, ALPN)."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def benign_corpus() -> list[Sample]:
    json_headers = {"User-Agent": "python-httpx/0.27.0", "Accept": "application/json",
                    "Content-Type": "application/json"}
    mcp_headers = {"User-Agent": "node", "Accept": "application/json, text/event-stream",
                   "Content-Type": "application/json"}
    mcp_session = dict(mcp_headers, **{"Mcp-Session-Id": "4b1f0c6e-2f9a-4d57-9a8e-5e1f3c2d7b90",
                                       "Mcp-Protocol-Version": "2025-03-26"})
    initialize = jsonrpc("initialize", {
        "protocolVersion": "2025-03-26",
        "capabilities": {"roots": {"listChanged": True}, "sampling": {}},
        "clientInfo": {"name": "claude-code", "version": "1.0.43"}}, 0)
    tools_call = jsonrpc("tools/call", {
        "name": "fetch", "arguments": {"url": "https://docs.python.org/3/library/ssl.html",
                                       "max_length": 5000}}, 3)
    # a mining method nested in a tool argument: benign, but it passes the
    # anchor check, so it exercises the deepest path a benign flow can take
    tools_call_mining_words = jsonrpc("tools/call", {
        "name": "search", "arguments": {"query": 'what does "mining.subscribe" return'}}, 4)
    lsp_body = jsonrpc("initialize", {"processId": 4242, "rootUri": "file:///workspace",
                                      "capabilities": {"textDocument": {"hover": {}}}})
    eth_call = jsonrpc("eth_call", [{"to": "0xdAC17F958D2ee523a2206206994597C13D831ec7",
                                     "data": "0x70a08231000000000000000000000000"
                                             "5a52e96bacdabb82fd05763e25335261b270efcb"},
                                    "latest"], 2)
    rng = random.Random(20240601)
    samples = [
        ("http GET (curl)", 80, http_request(
            "GET", "/", "example.org", {"User-Agent": "curl/8.5.0", "Accept": "*/*"})),
        ("http POST JSON (ollama)", 11434, http_request(
            "POST", "/api/generate", "127.0.0.1:11434", json_headers,
            b'{"model":"llama3.1","prompt":"Summarise the README","stream":false}')),
        ("MCP initialize over HTTP", 8931, http_request(
            "POST", "/mcp", "localhost:8931", mcp_headers, initialize)),
        ("MCP tools/call over HTTP", 8931, http_request(
            "POST", "/mcp", "localhost:8931", mcp_session, tools_call)),
        ("MCP tools/call, arg names mining.*", 8931, http_request(
            "POST", "/mcp", "localhost:8931", mcp_session, tools_call_mining_words)),
        ("JSON-RPC line (tools/list)", 7000, jsonrpc("tools/list", {}) + b"\n"),
        ("JSON-RPC line, arg names mining.*", 7000, tools_call_mining_words + b"\n"),
        ("LSP Content-Length frame", 2087,
         b"Content-Length: %d\r\n\r\n" % len(lsp_body) + lsp_body),
        ("eth_blockNumber over HTTP", 8545, http_request(
            "POST", "/", "127.0.0.1:8545", json_headers, jsonrpc("eth_blockNumber", []))),
        ("eth_call over HTTP", 8545, http_request(
            "POST", "/", "127.0.0.1:8545", json_headers, eth_call)),
        ("WebSocket upgrade", 80, http_request(
            "GET", "/socket", "ws.example.org",
            {"Upgrade": "websocket", "Connection": "Upgrade",
             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
             "Origin": "http://example.org"})),
        ("TLS ClientHello, SNI www.wikipedia.org", 443, tls_client_hello("www.wikipedia.org")),
        ("SSH banner (OpenSSH)", 22, b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5\r\n"),
        ("random 64 B", 9000, rng.randbytes(64)),
        ("random 1448 B (one MSS)", 9000, rng.randbytes(1448)),
        ("random 1448 B starting '{'", 9000, b"{" + rng.randbytes(1447)),
    ]
    return [Sample(name, "benign", payload, port) for name, port, payload in samples]


def fresh(fn: Callable[[bytes, int], list]) -> Callable[[bytes, int], list]:
    """fn as it meets a flow's first payload: the agent never sees the same
    ClientHello twice (its random differs per connection), so the hello
    cache, which spares the second classifier a second parse of the same
    payload, starts empty on every call here too."""
    def call(payload: bytes, port: int) -> list:
        forget_client_hellos()
        return fn(payload, port)
    return call


def _all_three(payload: bytes, port: int) -> list:
    return (classify_payload(payload, dst_port=port) + classify_tunnel_payload(payload, port)
            + classify_ssh_banner(payload, port))


#: name -> f(payload, port); the floor first, the agent's path last
CLASSIFIERS: dict[str, Callable[[bytes, int], list]] = {
    "floor: no-op call + clock": fresh(lambda payload, port: []),
    "stratum.classify_payload": fresh(lambda payload, port: classify_payload(payload,
                                                                             dst_port=port)),
    "tunnels.classify_tunnel_payload": fresh(lambda payload, port:
                                             classify_tunnel_payload(payload, port)),
    "ssh.classify_ssh_banner": fresh(lambda payload, port: classify_ssh_banner(payload, port)),
    "all three (the agent's path)": fresh(_all_three),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def rate(fn, samples: list[Sample], passes: int) -> float:
    """Samples per second, a tight loop with one clock read per run."""
    work = [(s.payload, s.port) for s in samples] * passes
    clock = time.perf_counter_ns
    started = clock()
    for payload, port in work:
        fn(payload, port)
    return len(work) / ((clock() - started) / 1e9)


def latencies_ns(fn, samples: list[Sample], passes: int) -> dict[str, list[int]]:
    """Per-call nanoseconds, per sample name."""
    out: dict[str, list[int]] = {s.name: [] for s in samples}
    clock = time.perf_counter_ns
    for _ in range(passes):
        for s in samples:
            payload, port = s.payload, s.port
            started = clock()
            fn(payload, port)
            out[s.name].append(clock() - started)
    return out


def pin(cpu: int | None) -> int:
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if cpu is None else cpu
    if chosen not in allowed:
        raise SystemExit(f"--cpu {chosen}: not among the allowed CPUs {allowed}")
    os.sched_setaffinity(0, {chosen})
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=200,
                        help="passes over the corpus per classifier per round")
    parser.add_argument("--cpu", type=int, help="CPU to pin to (default: the last allowed)")
    args = parser.parse_args()
    cpu = pin(args.cpu)

    mining, benign = mining_corpus(), benign_corpus()
    corpora = {"mining": mining, "benign": benign, "all": mining + benign}
    names = list(CLASSIFIERS)
    # rates[(classifier, corpus)] and stats[(classifier, corpus)] -> per-round values
    rates: dict[tuple[str, str], list[float]] = {}
    medians: dict[tuple[str, str], list[float]] = {}
    p99s: dict[tuple[str, str], list[float]] = {}
    per_sample: dict[str, list[float]] = {s.name: [] for s in corpora["all"]}
    per_sample_p99: dict[str, list[float]] = {s.name: [] for s in corpora["all"]}

    for fn in CLASSIFIERS.values():          # warm caches (indicator lists, regexes)
        rate(fn, corpora["all"], 3)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn = CLASSIFIERS[name]
            gc.collect()
            for corpus, samples in corpora.items():
                rates.setdefault((name, corpus), []).append(rate(fn, samples, args.passes))
            by_sample = latencies_ns(fn, corpora["all"], args.passes)
            for corpus, samples in corpora.items():
                pooled = [ns / 1000 for s in samples for ns in by_sample[s.name]]
                medians.setdefault((name, corpus), []).append(statistics.median(pooled))
                p99s.setdefault((name, corpus), []).append(percentile(pooled, 0.99))
            if name == "all three (the agent's path)":
                for s in corpora["all"]:
                    values = [ns / 1000 for ns in by_sample[s.name]]
                    per_sample[s.name].append(statistics.median(values))
                    per_sample_p99[s.name].append(percentile(values, 0.99))

    med = statistics.median
    print(f"\nfirst-payload classifiers ({args.rounds} rounds, medians; {args.passes} passes "
          f"over {len(mining)} mining + {len(benign)} benign samples per round; "
          f"pinned to CPU {cpu}; Python {sys.version.split()[0]})\n")
    print(f"| {'classifier':<32} | {'corpus':<6} | {'samples/s':>10} | {'median us':>9} | "
          f"{'p99 us':>7} |")
    print(f"|{'-' * 34}|{'-' * 8}|{'-' * 12}|{'-' * 11}|{'-' * 9}|")
    for name in names:
        for corpus in corpora:
            key = (name, corpus)
            print(f"| {name:<32} | {corpus:<6} | {med(rates[key]):>10,.0f} | "
                  f"{med(medians[key]):>9.2f} | {med(p99s[key]):>7.2f} |")

    print("\nper sample, all three classifiers in turn (what the agent would run per new flow)\n")
    print(f"| {'sample':<40} | {'port':>5} | {'bytes':>5} | {'median us':>9} | {'p99 us':>7} | "
          "findings")
    print(f"|{'-' * 42}|{'-' * 7}|{'-' * 7}|{'-' * 11}|{'-' * 9}|----------")
    for s in corpora["all"]:
        findings = _all_three(s.payload, s.port)
        found = ", ".join(f"{f.type}/{f.dialect}/{f.confidence}" for f in findings) or "-"
        print(f"| {s.name:<40} | {s.port:>5} | {len(s.payload):>5} | "
              f"{med(per_sample[s.name]):>9.2f} | {med(per_sample_p99[s.name]):>7.2f} | {found}")
    missed = [s.name for s in mining if not any(f.type == "stratum" for f in
                                                 classify_payload(s.payload, dst_port=s.port))]
    flagged = [s.name for s in benign if any(f.type == "stratum" for f in
                                              classify_payload(s.payload, dst_port=s.port))]
    if missed or flagged:
        print(f"\nnote: mining samples without a stratum finding: {missed or 'none'}; "
              f"benign samples with one: {flagged or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
