# SPDX-License-Identifier: Apache-2.0
"""Allow by name (issue 15), end to end: a real resolver (dnsmasq, in a
network namespace of its own), real glibc clients in a guarded cgroup
resolving through it, and a running agent. Allowed names connect the instant
their lookup returns, every other name and every IP literal is refused, and
what the workload learned is its own, expires, and survives a reload only
for names the new policy still allows."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from guard.control.server import request
from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .dnsfixtures import FOLD_EDGE, LONG_NAME, TOOLS, TestResolver, build_query
from .netfixtures import require_tools
from .tunnelstandins import client_hello

ALLOWED = ["one.egtest", "a.sub.egtest", "deep.b.sub.egtest", "alias.egtest", "multi.egtest",
           "big.egtest", "short.egtest", "v6only.egtest"]


def names_policy(resolver: TestResolver, port: int, *, default: str = "block",
                 hosts: list[str] | None = None, extra_rules: str = "", name: str = "names",
                 ttl_min: int = 1) -> str:
    targets = "".join(f"        - host: \"{host}\"\n          ports: [{port}]\n"
                      for host in (hosts if hosts is not None else
                                   ["one.egtest", "*.sub.egtest", "alias.egtest",
                                    "multi.egtest", "big.egtest", "short.egtest",
                                    "v6only.egtest"]))
    # the module's servers: the test server's port and the recorder's (port + 3)
    targets += "".join(f"        - host: \"{host}\"\n          ports: [{port + 3}]\n"
                       for host in ((hosts if hosts is not None else ["one.egtest"])[:1]))
    return f"""\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: {name}
spec:
  defaultAction: {default}
  dns:
    resolvers:
      - cidr: {resolver.ip}/32
      - cidr: {resolver.ip6}/128
    ttl: {{min: {ttl_min}, max: 60}}
  egress:
    - name: by-name
      action: allow
      to:
{targets}{extra_rules}"""


@pytest.fixture(scope="module")
def resolver():
    require_tools(*TOOLS)
    with TestResolver() as test_resolver:
        yield test_resolver


@pytest.fixture(scope="module")
def server(resolver):
    return resolver.serve()


@pytest.fixture(scope="module")
def guarded(resolver, server, tmp_path_factory):
    """One agent for the module, guarding two workloads under one policy."""
    path = tmp_path_factory.mktemp("names") / "policy.yaml"
    path.write_text(names_policy(resolver, server.port))
    with TempCgroup("eg-names-a") as first, TempCgroup("eg-names-b") as second, \
            AgentProcess([first.path, second.path], policy=path) as agent:
        yield agent, first, second, path


def connect_once(resolver: TestResolver, cgroup, ip: str, port: int) -> str:
    """One TCP connect from the cgroup to a literal address: "ok" or the errno name."""
    code = ("import errno, socket, sys\n"
            "ip, port = sys.argv[1], int(sys.argv[2])\n"
            "s = socket.socket(socket.AF_INET6 if ':' in ip else socket.AF_INET)\n"
            "s.settimeout(3)\n"
            "try:\n    s.connect((ip, port)); print('ok')\n"
            "except OSError as e:\n    print(errno.errorcode.get(e.errno, str(e)))\n")
    result = resolver.run([sys.executable, "-c", code, ip, str(port)], cgroup)
    return result.stdout.strip() or result.stderr.strip()


def test_allowed_names_connect_and_nothing_else_does(resolver, server, guarded):
    _agent, cgroup, _other, _path = guarded
    report = resolver.loop(ALLOWED, server.port, count=len(ALLOWED) * 5, cgroup=cgroup,
                           each=True)
    assert report.failures == [] and report.ok >= len(ALLOWED) * 5
    # every address of a multi-address answer, IPv6 too, and all 40 of the TCP answer
    reached = {attempt["ip"] for attempt in report.attempts}
    assert set(resolver.addresses("big.egtest")) <= reached
    assert set(resolver.addresses("multi.egtest")) <= reached
    # a name no rule allows: the query is refused at the send, the resolver never sees it
    refused = resolver.loop(["two.egtest"], server.port, count=2, cgroup=cgroup)
    assert [a["result"] for a in refused.attempts] == ["EAI_AGAIN", "EAI_AGAIN"]
    assert resolver.queries("two.egtest") == []
    # "*.sub.egtest" is below sub.egtest, not sub.egtest itself
    assert resolver.loop(["sub.egtest"], server.port, cgroup=cgroup).failures
    # IP literals: never learned, refused; a learned address on another port too
    assert connect_once(resolver, cgroup, resolver.addresses("two.egtest")[0],
                        server.port) == "EPERM"
    assert connect_once(resolver, cgroup, resolver.addresses("one.egtest")[0],
                        server.port + 1) == "EPERM"


def test_thousands_of_resolve_then_connect_pairs_never_fail(resolver, server, guarded):
    _agent, cgroup, _other, _path = guarded
    report = resolver.loop(["one.egtest", "alias.egtest", "a.sub.egtest", "short.egtest",
                            "multi.egtest"], server.port, count=3000, cgroup=cgroup)
    assert report.failures == [] and report.ok == 3000, report.failures[:5]


def test_another_workloads_answers_open_nothing(resolver, server, guarded):
    _agent, first, second, _path = guarded
    # only the first workload ever resolves deep.b.sub.egtest
    assert resolver.loop(["deep.b.sub.egtest"], server.port, cgroup=first).failures == []
    deep = resolver.addresses("deep.b.sub.egtest")[0]
    assert connect_once(resolver, first, deep, server.port) == "ok"
    assert connect_once(resolver, second, deep, server.port) == "EPERM"
    # and once it asks itself, it is allowed too
    assert resolver.loop(["deep.b.sub.egtest"], server.port, cgroup=second).failures == []


def test_an_answer_expires(resolver, server, guarded):
    _agent, cgroup, _other, _path = guarded
    ip = resolver.addresses("short.egtest")[0]          # TTL 2 s, policy minimum 1 s
    assert resolver.loop(["short.egtest"], server.port, cgroup=cgroup).failures == []
    assert connect_once(resolver, cgroup, ip, server.port) == "ok"
    time.sleep(resolver.ttl("short.egtest") + 1.0)
    assert connect_once(resolver, cgroup, ip, server.port) == "EPERM"
    # asking again opens it again
    assert resolver.loop(["short.egtest"], server.port, cgroup=cgroup).failures == []


def test_events_name_queries_answers_and_destinations(resolver, server, guarded):
    agent, cgroup, _other, _path = guarded
    resolver.loop(["alias.egtest"], server.port, cgroup=cgroup)
    resolver.loop(["three.egtest"], server.port, cgroup=cgroup)
    answer = agent.wait_for(lambda e: e.get("kind") == "dns" and e["direction"] == "answer"
                            and e["dns"]["name"] == "alias.egtest" and e["dns"]["learned"])
    assert answer["action"] == "allow" and answer["dns"]["trusted"] is True
    assert answer["dns"]["cnames"] == ["mid.egtest", "real.egtest"]
    assert {a["ip"] for a in answer["dns"]["answers"]} <= set(resolver.addresses("alias.egtest"))
    assert answer["resolver"] == {"ip": resolver.ip, "port": 53}
    assert answer["cgroup"]["id"] == cgroup.id
    query = agent.wait_for(lambda e: e.get("kind") == "dns" and e["direction"] == "query"
                           and e["dns"]["name"] == "three.egtest")
    assert query["action"] == "block" and "no-rule" in query["dns"]["why"]
    # a refused connect to an address learned for a name says the name
    ip = resolver.addresses("one.egtest")[0]
    resolver.loop(["one.egtest"], server.port, cgroup=cgroup)
    assert connect_once(resolver, cgroup, ip, server.port + 2) == "EPERM"
    refused = agent.wait_for(lambda e: e.get("kind") == "connect" and e["dst"]["ip"] == ip
                             and e["dst"]["port"] == server.port + 2)
    assert refused["dst"]["name"] == "one.egtest" and refused["action"] == "block"


def test_the_status_says_whom_names_trust(guarded, resolver):
    agent, _cgroup, _other, _path = guarded
    [names] = agent.ready["names"]
    assert names["policy"] == "names"
    assert names["resolvers"] == [f"{resolver.ip}/32", f"{resolver.ip6}/128"]
    assert names["resolver_ports"] == [53] and "*.sub.egtest" in names["names"]
    status = request(agent.control_socket, {"op": "status"})
    assert status["names"][0]["resolvers"] == names["resolvers"]


def test_a_reload_keeps_only_what_the_new_policy_still_names(resolver, server, guarded):
    agent, cgroup, _other, path = guarded
    ip = resolver.addresses("one.egtest")[0]
    assert resolver.loop(["one.egtest"], server.port, cgroup=cgroup).failures == []
    hosts = ["alias.egtest", "short.egtest"]
    try:
        path.write_text(names_policy(resolver, server.port, hosts=hosts, name="names-v2"))
        assert request(agent.control_socket, {"op": "reload"})["ok"]
        assert connect_once(resolver, cgroup, ip, server.port) == "EPERM"
        assert resolver.loop(["one.egtest"], server.port, cgroup=cgroup).failures
    finally:
        path.write_text(names_policy(resolver, server.port))
        assert request(agent.control_socket, {"op": "reload"})["ok"]
    # named again, the address learned before (still within its TTL) is allowed again
    assert connect_once(resolver, cgroup, ip, server.port) == "ok"


# A server in the resolver's namespace that records what each connection sent:
# one JSON line per connection, {"local": ip, "data": hex}.
RECORDER = r"""
import json, socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.listen(64)
print("listening", flush=True)
while True:
    conn, _ = sock.accept()
    conn.settimeout(1.5)
    data = b""
    try:
        while len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    print(json.dumps({"local": conn.getsockname()[0], "data": data.hex()}), flush=True)
    conn.close()
"""

# Connect to argv[1]:argv[2] and send: an HTTP request for Host argv[3], a TLS
# ClientHello for server name argv[3] (argv[4] == "tls"), argv[3] raw, or
# (argv[4] == "oob") the bytes argv[3] in hex with one more sent out of band
# halfway.
SEND = r"""
import errno, socket, ssl, sys
ip, port, what, how = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((ip, port), timeout=3)
try:
    if how == "tls":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.wrap_socket(s, server_hostname=what)
    elif how == "http":
        s.sendall(f"GET / HTTP/1.1\r\nHost: {what}\r\n\r\n".encode())
    elif how == "oob":
        # what: hex bytes, a byte sent out of band halfway (the server reads them whole)
        data = bytes.fromhex(what)
        s.send(data[:len(data) // 2] + b"X", socket.MSG_OOB)
        s.sendall(data[len(data) // 2:])
    else:
        s.sendall(what.encode())
    s.settimeout(3)
    print("answered" if s.recv(10) else "closed")
except OSError as e:
    print(errno.errorcode.get(e.errno, type(e).__name__))
"""


def test_a_payload_naming_a_host_the_policy_does_not_allow_never_leaves(
        resolver, server, guarded):
    """shared.egtest has one.egtest's address (a shared CDN address): a flow
    to it that asks for shared.egtest (HTTP Host, TLS SNI) is held and
    refused, and the server never sees a byte of it."""
    agent, cgroup, _other, _path = guarded
    ip = resolver.addresses("one.egtest")[0]
    assert resolver.addresses("shared.egtest") == [ip]
    recorder = subprocess.Popen(["ip", "netns", "exec", resolver.netns, sys.executable, "-c",
                                 RECORDER, ip, str(server.port + 3)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert recorder.stdout.readline().strip() == "listening"
        assert resolver.loop(["one.egtest"], server.port, cgroup=cgroup).failures == []
        port = str(server.port + 3)
        policy = guarded[3].read_text()
        assert f"ports: [{server.port}]" in policy
        sent = {}
        http = b"GET / HTTP/1.1\r\nHost: shared.egtest\r\n\r\n"
        for what, how in (("one.egtest", "http"), ("shared.egtest", "http"),
                          ("shared.egtest", "tls"), ("hello", "raw"), (http.hex(), "oob"),
                          (client_hello("shared.egtest").hex(), "oob")):
            sent[(what, how)] = resolver.run([sys.executable, "-c", SEND, ip, port, what, how],
                                             cgroup).stdout.strip()
    finally:
        recorder.kill()
        recorded = [json.loads(line) for line in recorder.communicate()[0].splitlines() if line]
    received = b"".join(bytes.fromhex(r["data"]) for r in recorded)
    assert b"Host: one.egtest" in received and b"hello" in received
    assert b"shared.egtest" not in received
    mismatch = [agent.wait_for(lambda e, d=dialect: e.get("kind") == "detection"
                               and e["detection"]["type"] == "name_mismatch"
                               and e["detection"]["dialect"] == d)
                for dialect in ("http-host", "tls-sni")]
    for event in mismatch:
        assert event["action"] == "block"
        assert event["detection"]["evidence"] == {"host": "shared.egtest", "learned": "one.egtest"}
        assert event["dst"]["name"] == "one.egtest"
    assert sent[("shared.egtest", "http")] != "answered"
    # the host hidden behind an urgent byte: refused unjudged, never judged by a name
    hidden = agent.wait_for(lambda e: e.get("kind") == "detection"
                            and e["detection"]["type"] == "unjudged_flow"
                            and e["detection"]["dialect"] == "urgent-data")
    assert hidden["action"] == "block" and hidden["dst"]["ip"] == ip


# One DNS query over TCP (argv: resolver, hex query): "answered N bytes" or the failure.
TCP_QUERY = r"""
import socket, struct, sys
query = bytes.fromhex(sys.argv[2])
try:
    s = socket.create_connection((sys.argv[1], 53), timeout=2)
    s.sendall(struct.pack(">H", len(query)) + query)
    size = struct.unpack(">H", s.recv(2))[0]
    print(f"answered {size}")
except (OSError, struct.error) as e:
    print(type(e).__name__)
"""


def test_queries_over_tcp_are_judged_like_udp_ones(resolver, server, guarded):
    _agent, cgroup, _other, _path = guarded
    allowed = resolver.run([sys.executable, "-c", TCP_QUERY, resolver.ip,
                            build_query("multi.egtest").hex()], cgroup).stdout
    assert allowed.startswith("answered")
    refused = resolver.run([sys.executable, "-c", TCP_QUERY, resolver.ip,
                            build_query("three.egtest").hex()], cgroup).stdout
    assert not refused.startswith("answered")
    assert resolver.queries("three.egtest") == []


def test_curl_reaches_an_allowed_name_and_not_another_host_on_its_address(
        resolver, server, guarded):
    """A real client: curl resolves one.egtest and fetches; asking for
    shared.egtest (the same address) never leaves the host."""
    _agent, cgroup, _other, _path = guarded
    ip = resolver.addresses("one.egtest")[0]
    recorder = subprocess.Popen(["ip", "netns", "exec", resolver.netns, sys.executable, "-c",
                                 RECORDER, ip, str(server.port + 3)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert recorder.stdout.readline().strip() == "listening"
        port = server.port + 3
        resolver.run(["curl", "-s", "-m", "3", "-o", "/dev/null", f"http://one.egtest:{port}/"],
                     cgroup)
        # shared.egtest's own query would be refused: hand curl the learned address
        resolver.run(["curl", "-s", "-m", "3", "-o", "/dev/null", "--resolve",
                      f"shared.egtest:{port}:{ip}", f"http://shared.egtest:{port}/"], cgroup)
    finally:
        recorder.kill()
        recorded = [json.loads(line) for line in recorder.communicate()[0].splitlines() if line]
    received = b"".join(bytes.fromhex(r["data"]) for r in recorded)
    assert b"Host: one.egtest" in received and b"shared.egtest" not in received


def answers_for(agent: AgentProcess, cgroup, name: str) -> list[dict]:
    return [e for e in agent.drain() if e.get("kind") == "dns" and e["direction"] == "answer"
            and e["dns"]["name"] == name and e["cgroup"]["id"] == cgroup.id]


def test_answers_that_teach_nothing_new_are_folded_within_the_window(resolver, server, guarded):
    """A lookup loop of one name: its answers, all addresses already learned,
    are one event a fold window (1 s), the rest counted; every connect still
    finds its address allowed."""
    agent, _first, cgroup, _path = guarded
    before = request(agent.control_socket, {"op": "status"})["counters"]
    seen = len(answers_for(agent, cgroup, "short.egtest"))
    started = time.monotonic()
    report = resolver.loop(["short.egtest"], server.port, count=200, cgroup=cgroup)
    elapsed = time.monotonic() - started
    assert report.failures == [] and report.ok == 200
    time.sleep(0.5)
    after = request(agent.control_socket, {"op": "status"})["counters"]
    sent = len(answers_for(agent, cgroup, "short.egtest")) - seen
    # one at the start of each window, and one more for each refresh the short
    # TTL (2 s) forces: still far fewer than the lookups
    assert 1 <= sent <= elapsed + 2 + elapsed / 1.0, (sent, elapsed)
    assert after["dns_folded"] - before["dns_folded"] >= 200 - sent - 5
    assert after["udp_folded"] >= before["udp_folded"]


def test_answers_for_a_name_longer_than_the_fold_key_are_never_folded(resolver, server,
                                                                      guarded):
    """The fold key holds a name of 64 characters at most, as the message
    spells it: a longer one (71 characters here) is never folded, so no two
    long names that end alike pass for one another. Every A answer is an
    event; for a name of 64 (FOLD_EDGE) they are folded."""
    agent, _first, cgroup, _path = guarded
    assert len(LONG_NAME) > 64
    seen = len([a for a in answers_for(agent, cgroup, LONG_NAME) if a["dns"]["learned"]])
    report = resolver.loop([LONG_NAME], server.port, count=20, cgroup=cgroup)
    assert report.failures == [] and report.ok == 20
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        learned = [a for a in answers_for(agent, cgroup, LONG_NAME) if a["dns"]["learned"]]
        if len(learned) - seen >= 20:
            break
        time.sleep(0.1)
    assert len(learned) - seen == 20
    assert len(FOLD_EDGE) == 64
    before = len(answers_for(agent, cgroup, FOLD_EDGE))
    report = resolver.loop([FOLD_EDGE], server.port, count=20, cgroup=cgroup)
    assert report.failures == [] and report.ok == 20
    time.sleep(0.5)
    # A and AAAA a lookup: 40 answers, one event each a window (1 s) at most
    assert 1 <= len(answers_for(agent, cgroup, FOLD_EDGE)) - before <= 8


def test_with_folding_off_every_answer_is_an_event(resolver, server, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(names_policy(resolver, server.port))
    with TempCgroup("eg-names-nofold") as cgroup, \
            AgentProcess([cgroup.path], policy=path, extra=["--fold-window-ms", "0"]) as agent:
        report = resolver.loop(["one.egtest"], server.port, count=20, cgroup=cgroup)
        assert report.failures == [] and report.ok == 20
        deadline = time.monotonic() + 10
        while len(answers_for(agent, cgroup, "one.egtest")) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        answers = answers_for(agent, cgroup, "one.egtest")   # A and AAAA: glibc asks both
        assert len(answers) == 40
        assert len([a for a in answers if a["dns"]["learned"]]) == 20
        assert request(agent.control_socket, {"op": "status"})["counters"]["dns_folded"] == 0


# One DNS query over UDP (argv: resolver, hex query): "answered N bytes", or
# what stopped it (the errno name at the send: EPERM when the guard dropped
# it; or "timeout": the resolver ignored it).
UDP_QUERY = r"""
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
try:
    s.sendto(bytes.fromhex(sys.argv[2]), (sys.argv[1], 53))
    print(f"answered {len(s.recv(4096))}")
except socket.timeout:
    print("timeout")
except OSError as e:
    print(errno.errorcode.get(e.errno, type(e).__name__))
"""


def _hostile_queries() -> dict[str, bytes]:
    """Questions dns.bpf.c cannot read as a host name, each built around
    an allowed name (one.egtest) where it can be."""
    header = bytes.fromhex("abcd01000001000000000000")
    tail = b"\x00\x01\x00\x01"  # QTYPE A, QCLASS IN
    one = b"\x03one\x06egtest\x00"
    return {
        "a label running past the end": header + b"\x3fone",
        "a length byte over 63": header + b"\x40" + b"a" * 64 + one + tail,
        "a compression pointer as the question": header + b"\xc0\x0c" + tail,
        "a dot inside one label": header + b"\x0aone.egtest\x00" + tail,
        "a NUL inside a label": header + b"\x04on\x00e\x06egtest\x00" + tail,
        "a name longer than 255 bytes": header + (b"\x3f" + b"a" * 63) * 4 + one + tail,
        "128 one-letter labels": header + b"\x01a" * 128 + one + tail,
        "the root name": header + b"\x00" + tail,
        "no end to the name": header + b"\x03one\x06egtest",
        "two questions, the second not allowed": (bytes.fromhex("abcd01000002000000000000")
                                                  + one + tail + b"\x05three\x06egtest\x00"
                                                  + tail),
    }


@pytest.mark.parametrize("what", list(_hostile_queries()))
def test_a_question_that_cannot_be_read_is_refused_at_the_send(resolver, guarded, what):
    """Under defaultAction block a query whose name the kernel cannot read
    as a host name gets the policy's action: the send fails (EPERM), so
    the resolver never sees it. The allowed name, in any letter case, is
    answered."""
    _agent, cgroup, _other, _path = guarded
    control = resolver.run([sys.executable, "-c", UDP_QUERY, resolver.ip,
                            build_query("OnE.EgTeSt").hex()], cgroup).stdout.strip()
    assert control.startswith("answered"), control
    outcome = resolver.run([sys.executable, "-c", UDP_QUERY, resolver.ip,
                            _hostile_queries()[what].hex()], cgroup).stdout.strip()
    assert outcome == "EPERM", outcome
