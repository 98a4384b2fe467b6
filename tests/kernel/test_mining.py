# SPDX-License-Identifier: Apache-2.0
"""Mining detection end to end (issue 3): real clients in guarded cgroups
send each dialect's real first message to a test pool on loopback; the
kernel holds it, the agent names it, and the policy's action is carried out.
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from guard.control.server import request

from .agentproc import ROOT, GuardedCgroup
from .netfixtures import HttpConnectProxy, RecordingServer, Socks4Proxy, Socks5Proxy
from .tunnelstandins import client_hello

PAYLOADS = sorted((ROOT / "tests/fixtures/payloads").glob("*.bin"))
NETCLIENT = [sys.executable, str(ROOT / "tests/kernel/netclient.py")]
POOL_DOMAIN = "pool.supportxmr.com"   # in guard/data/miners.yaml
STRATUM = PAYLOADS[[p.name for p in PAYLOADS].index("stratum-v1.cpuminer.bin")]


def dialect_of(path: Path) -> str:
    """Fixtures are named <dialect>.<client>.bin; dialects may contain dots."""
    return path.name.removesuffix(".bin").rsplit(".", 1)[0]


def policy_text(stratum: str, miner_exec: str = "log") -> str:
    return f"""apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: mining-{stratum}
spec:
  defaultAction: allow
  detections:
    stratum: {stratum}
    minerExec: {miner_exec}
"""


class Guarded(GuardedCgroup):
    """The mining policy with these actions, guarding one cgroup."""

    def __init__(self, tmp: Path, stratum: str, miner_exec: str = "log"):
        policy = tmp / f"policy-{stratum}-{miner_exec}.yaml"
        policy.write_text(policy_text(stratum, miner_exec))
        super().__init__(policy, "egress-guard-mining")

    def client(self, host: str, port: int, payload: Path, *extra: str,
               hold: float = 1.0) -> subprocess.CompletedProcess:
        return self.cg.run(NETCLIENT + ["--connect", f"{host}:{port}", "--send-file",
                                        str(payload), "--hold", str(hold), *extra], timeout=30)

    def outcome(self, *args, **kwargs) -> dict:
        result = self.client(*args, **kwargs)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def detection(self, port: int, kind: str = "stratum", timeout: float = 10) -> dict:
        return self.agent.wait_for(lambda e: e.get("kind") == "detection"
                                   and (e.get("dst") or {}).get("port") == port
                                   and e["detection"]["type"] == kind, timeout=timeout)

    def counters(self) -> dict:
        return request(self.agent.control_socket, {"op": "status"})["counters"]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    made: dict[tuple[str, str], Guarded] = {}

    def get(stratum: str, miner_exec: str = "log") -> Guarded:
        key = (stratum, miner_exec)
        if key not in made:
            made[key] = Guarded(tmp_path_factory.mktemp("mining"), stratum, miner_exec)
        return made[key]
    yield get
    for guard in made.values():
        guard.close()


def assert_refused(outcome: dict) -> None:
    assert outcome["connected"] is True, outcome
    assert outcome["error"] in ("ECONNABORTED", "ECONNRESET", "EPIPE"), outcome
    assert outcome["received"] == 0, outcome


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.name for p in PAYLOADS])
def test_block_the_pool_never_hears_a_byte(guarded, payload):
    guard = guarded("block")
    with RecordingServer(reply=b'{"id":1,"result":true}\n') as pool:
        outcome = guard.outcome("127.0.0.1", pool.port, payload)
        event = guard.detection(pool.port)
        time.sleep(0.2)
        assert pool.received() == b""
    assert_refused(outcome)
    assert event["action"] == "block"
    assert event["detection"]["dialect"] == dialect_of(payload)
    assert event["detection"]["confidence"] in ("high", "medium")
    assert event["dst"] == {"ip": "127.0.0.1", "port": pool.port, "proto": "tcp"}
    assert event["process"]["argv"][1].endswith("netclient.py")


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.name for p in PAYLOADS])
def test_log_names_the_dialect_and_lets_the_flow_through(guarded, payload):
    guard = guarded("log")
    data = payload.read_bytes()
    with RecordingServer(reply=b'{"id":1,"result":true}\n') as pool:
        outcome = guard.outcome("127.0.0.1", pool.port, payload, "--expect-reply")
        event = guard.detection(pool.port)
        assert pool.wait_for_bytes(len(data)) == data
    assert outcome["error"] is None and outcome["received"] > 0, outcome
    assert event["action"] == "log"
    assert event["detection"]["dialect"] == dialect_of(payload)


def test_kill_ends_the_miner_and_the_pool_hears_nothing(guarded):
    guard = guarded("kill")
    with RecordingServer() as pool:
        result = guard.client("127.0.0.1", pool.port, STRATUM, hold=5.0)
        event = guard.detection(pool.port)
        time.sleep(0.2)
        assert pool.received() == b""
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stdout)
    assert event["action"] == "kill" and event["detection"]["dialect"] == "stratum-v1"


def test_a_pool_on_port_443_is_blocked_all_the_same(guarded):
    guard = guarded("block")
    with RecordingServer(host="127.0.0.9", port=443) as pool:
        outcome = guard.outcome("127.0.0.9", 443, STRATUM)
        event = guard.detection(443)
        time.sleep(0.2)
        assert pool.received() == b""
    assert_refused(outcome)
    assert event["detection"]["dialect"] == "stratum-v1"


PROXIES = {"socks5": Socks5Proxy, "socks4": Socks4Proxy, "http-connect": HttpConnectProxy}


@pytest.mark.parametrize("proxy_kind", list(PROXIES))
def test_through_a_proxy_the_first_payload_after_the_handshake_is_held(guarded, proxy_kind):
    guard = guarded("block")
    proxy_class = PROXIES[proxy_kind]
    with RecordingServer() as pool, proxy_class(names={"pool.test": "127.0.0.1"}) as proxy:
        outcome = guard.outcome("pool.test", pool.port, STRATUM,
                                f"--{proxy_kind}", f"127.0.0.1:{proxy.port}")
        event = guard.detection(proxy.port)
        time.sleep(0.2)
        assert pool.received() == b""
        assert proxy.requests == [("pool.test", pool.port)]
    assert_refused(outcome)
    assert event["detection"]["dialect"] == "stratum-v1"


@pytest.mark.parametrize("proxy_kind", list(PROXIES))
def test_a_proxy_request_naming_a_pool_domain_is_a_detection(guarded, proxy_kind):
    guard = guarded("block")
    proxy_class = PROXIES[proxy_kind]
    with RecordingServer() as pool, proxy_class(names={POOL_DOMAIN: "127.0.0.1"}) as proxy:
        outcome = guard.outcome(POOL_DOMAIN, pool.port, STRATUM,
                                f"--{proxy_kind}", f"127.0.0.1:{proxy.port}")
        event = guard.detection(proxy.port)
        time.sleep(0.2)
        assert pool.received() == b""
    assert outcome["received"] == 0 and outcome["error"] is not None, outcome
    assert event["detection"]["evidence"]["host"] == POOL_DOMAIN
    assert event["detection"]["dialect"] == proxy_kind


def _http(method: str, path: str, host: str, body: bytes = b"", headers: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def benign_corpus() -> dict[str, tuple[int, bytes]]:
    mcp_init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "agent", "version": "1.0"}}}).encode()
    mcp_call = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "search", "arguments": {"query": "weather in Paris"}}}).encode()
    lsp = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"processId": None, "rootUri": None,
                                 "capabilities": {}}}).encode()
    eth_block = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber",
                            "params": []}).encode()
    eth_call = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "eth_call", "params": [
        {"to": "0x" + "11" * 20, "data": "0x70a08231"}, "latest"]}).encode()
    login = json.dumps({"username": "alice", "password": "hunter2"}).encode()
    return {
        "mcp-initialize-http": (8080, _http("POST", "/mcp", "tools.test", mcp_init)),
        "mcp-tools-call-http": (8080, _http("POST", "/mcp", "tools.test", mcp_call)),
        "json-rpc-line": (9000, mcp_call + b"\n"),
        "lsp-content-length": (2087, b"Content-Length: %d\r\n\r\n" % len(lsp) + lsp),
        "eth-blocknumber-http": (8545, _http("POST", "/", "node.test", eth_block)),
        "eth-call-http": (8545, _http("POST", "/", "node.test", eth_call)),
        "login-api": (8000, _http("POST", "/api/login", "app.test", login)),
        "selenium-4444": (4444, _http("POST", "/session", "grid.test", json.dumps(
            {"capabilities": {"alwaysMatch": {"browserName": "firefox"}}}).encode())),
        "jupyter-8888": (8888, _http("GET", "/api/kernels", "lab.test",
                                     headers="Authorization: token abc\r\n")),
        "websocket-upgrade": (8081, _http("GET", "/socket", "ws.test", headers=(
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"))),
        "tls-ordinary-site": (443, client_hello("www.example.org")),
        "http-get": (80, _http("GET", "/index.html", "www.example.org")),
    }


BENIGN = benign_corpus()


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_traffic_is_neither_held_nor_flagged(guarded, name, tmp_path):
    guard = guarded("block")
    port, data = BENIGN[name]
    payload = tmp_path / f"{name}.bin"
    payload.write_bytes(data)
    host = f"127.0.{port >> 8 & 0xff}.{port & 0xff or 1}"
    held_before = guard.counters()["flows_held"]
    seen_before = len(guard.agent.drain())
    with RecordingServer(host=host, port=port) as server:
        outcome = guard.outcome(host, port, payload, hold=0.3)
        assert server.wait_for_bytes(len(data)) == data
    assert outcome["connected"] and outcome["sent"] and outcome["error"] in (None, "timeout"), \
        outcome
    assert guard.counters()["flows_held"] == held_before
    time.sleep(0.3)  # any detection would have been written by now
    flagged = [e for e in guard.agent.drain()[seen_before:] if e.get("kind") == "detection"
               and (e.get("dst") or {}).get("port") == port
               and e["detection"]["type"] in ("stratum", "miner_dns")]
    assert flagged == []


# --------------------------------------------------------------------------
# Miner exec


def _stand_in(directory: Path, name: str) -> Path:
    """A copy of sleep(1) under a miner's (or an innocent) name."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    shutil.copy2(shutil.which("sleep"), path)
    return path


def test_miner_argv_is_killed(guarded, tmp_path):
    guard = guarded("block", miner_exec="kill")
    # a script that takes any options and waits: the miner's argv is what counts
    program = tmp_path / "sysupdate"
    program.write_text("#!/bin/sh\nsleep 5\n")
    program.chmod(0o755)
    result = guard.cg.run([str(program), "-o", "stratum+tcp://pool.test:3333",
                           "-u", "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaB"
                           "YBb98uNbr2VBBEt7f2wfn3RVGQBEP3A", "--donate-level=1", "-a", "rx/0"],
                          timeout=30)
    assert result.returncode == -signal.SIGKILL
    event = guard.agent.wait_for(lambda e: e.get("kind") == "detection"
                                 and e["detection"]["type"] == "miner_exec"
                                 and str(program) in e["process"]["argv"])
    assert event["action"] == "kill"
    assert event["detection"]["confidence"] == "high"


def test_miner_config_beside_the_binary_is_killed(guarded, tmp_path):
    guard = guarded("block", miner_exec="kill")
    program = _stand_in(tmp_path / "opt", "worker")
    (tmp_path / "opt" / "config.json").write_text(json.dumps({
        "autosave": True, "donate-level": 1, "cpu": {"enabled": True},
        "randomx": {"init": -1, "mode": "auto"},
        "pools": [{"url": "pool.test:443", "user": "wallet", "pass": "x", "rig-id": "r1",
                   "tls": True}]}))
    result = guard.cg.run([str(program), "5"], timeout=30)
    assert result.returncode == -signal.SIGKILL
    event = guard.agent.wait_for(lambda e: e.get("kind") == "detection"
                                 and e["detection"]["type"] == "miner_exec"
                                 and e["process"]["exe"] == str(program))
    assert "config.json" in json.dumps(event["detection"]["evidence"])


def test_an_innocent_name_does_not_hide_a_miners_traffic(guarded, tmp_path):
    guard = guarded("block")
    renamed = tmp_path / "backup-agent"
    renamed.symlink_to(sys.executable)
    with RecordingServer() as pool:
        result = guard.cg.run([str(renamed), str(ROOT / "tests/kernel/netclient.py"),
                               "--connect", f"127.0.0.1:{pool.port}", "--send-file",
                               str(STRATUM), "--hold", "1"], timeout=30)
        event = guard.detection(pool.port)
        time.sleep(0.2)
        assert pool.received() == b""
    assert_refused(json.loads(result.stdout))
    assert event["process"]["argv"][0] == str(renamed)


# --------------------------------------------------------------------------
# DNS


def _dns_query(name: str, qid: int = 0x4242) -> bytes:
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + b"\0" + \
        struct.pack("!HH", 1, 1)


def _dns_answer(query: bytes, address: str) -> bytes:
    header = struct.pack("!HHHHHH", int.from_bytes(query[:2], "big"), 0x8180, 1, 1, 0, 0)
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(address)
    return header + query[12:] + answer


class FakeResolver:
    """Answers every A query on 127.0.0.1:53 with 198.18.0.99; never recurses."""

    def __enter__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.53", 53))
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self

    def _serve(self):
        while not self.stopping:
            try:
                query, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            self.sock.sendto(_dns_answer(query, "198.18.0.99"), peer)

    def __exit__(self, *exc):
        self.stopping = True
        self.thread.join(timeout=2)
        self.sock.close()


RESOLVE = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(bytes.fromhex(sys.argv[1]), ("127.0.0.53", 53))
print(len(s.recv(512)))
"""


def test_pool_and_donation_names_in_dns_become_events(guarded):
    guard = guarded("log")
    with FakeResolver():
        result = guard.cg.python(RESOLVE, _dns_query("donate.v2.xmrig.com").hex())
    assert result.returncode == 0 and int(result.stdout) > 0, result.stderr
    events = [guard.agent.wait_for(lambda e, n=n: e.get("kind") == "detection"
                                   and e["detection"]["type"] == "miner_dns"
                                   and e["detection"]["evidence"].get("seen_in") == n)
              for n in ("query", "answer")]
    for event in events:
        assert event["detection"]["evidence"]["name"] == "donate.v2.xmrig.com"
        assert event["detection"]["dialect"] == "donation"
        assert event["dst"]["port"] == 53


def test_status_counts_detections_and_held_flows(guarded):
    guard = guarded("block")
    before = request(guard.agent.control_socket, {"op": "status"})
    with RecordingServer() as pool:
        assert_refused(guard.outcome("127.0.0.1", pool.port, STRATUM))
        guard.detection(pool.port)
    after = request(guard.agent.control_socket, {"op": "status"})
    assert after["detections"]["stratum/block"] == \
        before["detections"].get("stratum/block", 0) + 1
    assert after["counters"]["flows_held"] >= before["counters"]["flows_held"] + 1
    assert after["counters"]["flow_drops"] >= before["counters"]["flow_drops"] + 1
    assert after["counters"]["hold_timeouts"] == before["counters"]["hold_timeouts"]


SERVE_ONCE = r"""
import socket, sys
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(1)
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
conn.sendall(open(sys.argv[1], "rb").read())
conn.close()
"""


def test_a_server_in_the_sandbox_answering_is_not_its_egress(guarded):
    """Only connections the guarded process opens are sampled: a server in
    the sandbox whose answer happens to look like Stratum is left alone."""
    guard = guarded("block")
    held_before = guard.counters()["flows_held"]
    server = guard.cg.popen([sys.executable, "-c", SERVE_ONCE, str(STRATUM)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            received = b""
            while chunk := client.recv(65536):
                received += chunk
        assert received == STRATUM.read_bytes()
    finally:
        server.wait(timeout=10)
    assert guard.counters()["flows_held"] == held_before


GETWORK = PAYLOADS[[p.name for p in PAYLOADS].index("getwork-http.cpuminer-getwork.bin")]
JOB_REPLY = (b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n'
             b'{"id":1,"jsonrpc":"2.0","result":{"job":{"blob":"0707","job_id":"1",'
             b'"target":"ffff"},"status":"OK"}}\n')
NOTIFY_REPLY = b'{"id":null,"method":"mining.notify","params":["job1","00",true]}\n'


def test_the_pools_reply_raises_a_logged_flows_confidence(guarded):
    guard = guarded("log")
    with RecordingServer(reply=JOB_REPLY) as pool:
        outcome = guard.outcome("127.0.0.1", pool.port, GETWORK, "--expect-reply")
        first = guard.detection(pool.port)
        confirmed = guard.agent.wait_for(
            lambda e: e.get("kind") == "detection" and (e.get("dst") or {}).get("port")
            == pool.port and "reply" in e["detection"]["evidence"])
    assert outcome["received"] > 0
    assert first["detection"]["confidence"] == "medium"
    assert confirmed["detection"]["confidence"] == "high"
    assert confirmed["detection"]["dialect"] == "getwork-http"


@pytest.mark.parametrize("name, replies_sampled", [
    ("tls-ordinary-site", 0), ("http-get", 0), ("jupyter-8888", 0),
    ("json-rpc-line", 1), ("mcp-tools-call-http", 1)])
def test_the_reply_is_sampled_only_where_it_can_confirm_mining(guarded, tmp_path, name,
                                                                replies_sampled):
    """A TLS hello or a GET is answered by a ServerHello or a web page, which
    says nothing about mining: such flows cost one sample, not two. JSON
    lines and POSTs (the mining dialects' shapes) get their reply sampled."""
    guard = guarded("log")
    _port, data = BENIGN[name]
    payload = tmp_path / f"{name}.bin"
    payload.write_bytes(data)
    with RecordingServer(reply=b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}") as server:
        before = guard.counters()["flows_sampled"]
        outcome = guard.outcome("127.0.0.1", server.port, payload, "--expect-reply")
        assert server.wait_for_bytes(len(data)) == data
        time.sleep(0.2)     # the reply's sample, if any, is counted by now
        sampled = guard.counters()["flows_sampled"] - before
    assert outcome["error"] is None and outcome["received"] > 0, outcome
    assert sampled == 1 + replies_sampled


def test_an_unknown_dialect_is_revealed_by_the_pools_reply(guarded, tmp_path):
    """A client dialect no signature knows passes unheld; the server's
    mining.notify gives it away and the flow is ended."""
    guard = guarded("block")
    payload = tmp_path / "unknown.bin"
    payload.write_bytes(b'{"id":1,"jsonrpc":"2.0","method":"getjob","params":{"w":"rig"}}\n')
    with RecordingServer(reply=NOTIFY_REPLY) as pool:
        outcome = guard.outcome("127.0.0.1", pool.port, payload, hold=2.0)
        event = guard.detection(pool.port)
    assert event["action"] == "block"
    assert event["detection"]["dialect"] == "stratum-reply"
    assert outcome["error"] in ("ECONNABORTED", "ECONNRESET"), outcome
