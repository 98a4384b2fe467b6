# SPDX-License-Identifier: Apache-2.0
"""A query for a name no rule allows must not reach the resolver however
the workload frames it (issue 15, point 6). DNS over TCP is a byte stream:
each message after its 2-byte length, as many in one segment as the
sender's writes put there, and a message or its length may be cut between
segments. Over UDP one send may be several datagrams (UDP_SEGMENT: the
kernel cuts them after the cgroup hook has seen the whole).

dns.bpf.c judges every message of a segment and refuses a segment that does
not end where a message ends: only whole messages keep the kernel's idea of
where a message begins the same as the resolver's, segment after segment.
The workload's framings, each a test here: two messages in one segment
(the second not allowed), a length split from its message, a message cut
in two, more messages than the kernel reads in one segment; and what glibc
does (A and AAAA in one write) still works. Answers likewise: a resolver
that writes two in one segment has both learned. A UDP send the kernel
cuts into several datagrams is refused as a message the kernel cannot
read."""
from __future__ import annotations

import struct
import subprocess
import sys
import time

import pytest

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .dnsfixtures import TestResolver, build_query
from .test_names import names_policy, resolver, server  # noqa: F401 (fixtures)

# Send each argument (hex; "oob:" before it: with MSG_OOB, its last byte
# urgent) as its own TCP segment (TCP_NODELAY, a pause between), then count
# the whole answers read back: "answers N", or the exception that ended it.
SEGMENTS = r"""
import socket, struct, sys, time
s = socket.create_connection((sys.argv[1], 53), timeout=3)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
try:
    for i, arg in enumerate(sys.argv[2:]):
        if i:
            time.sleep(0.2)
        if arg.startswith("oob:"):
            s.send(bytes.fromhex(arg[4:]), socket.MSG_OOB)
        else:
            s.sendall(bytes.fromhex(arg))
    s.settimeout(1.5)
    data = b""
    try:
        while True:
            got = s.recv(65535)
            if not got:
                break
            data += got
    except socket.timeout:
        pass
    answers = 0
    while len(data) >= 2 and len(data) >= 2 + struct.unpack(">H", data[:2])[0]:
        data = data[2 + struct.unpack(">H", data[:2])[0]:]
        answers += 1
    print(f"answers {answers}")
except OSError as e:
    print(type(e).__name__)
"""


def framed(*names: str) -> bytes:
    """The queries for names, each after its length, back to back."""
    return b"".join(struct.pack(">H", len(q)) + q for q in (build_query(n) for n in names))


@pytest.fixture(scope="module")
def guarded(resolver, server, tmp_path_factory):
    path = tmp_path_factory.mktemp("tcp-framing") / "policy.yaml"
    path.write_text(names_policy(resolver, server.port))
    with TempCgroup("eg-tcp-framing") as cgroup, \
            AgentProcess([cgroup.path], policy=path) as agent:
        yield agent, cgroup


def send(resolver: TestResolver, cgroup, *chunks: bytes | str) -> str:
    """chunks: bytes, or "oob:" and their hex (sent with MSG_OOB)."""
    result = resolver.run([sys.executable, "-c", SEGMENTS, resolver.ip,
                           *(c if isinstance(c, str) else c.hex() for c in chunks)], cgroup)
    return result.stdout.strip() or result.stderr.strip()[-300:]


def refusals() -> dict[str, tuple[bytes, ...]]:
    """Segments (in order) that would bring three.egtest to the resolver."""
    allowed, refused = framed("one.egtest"), framed("three.egtest")
    return {
        "after an allowed message, in one segment": (allowed + refused,),
        "its length in a segment of its own": (refused[:2], refused[2:]),
        "its length cut in two": (refused[:1], refused[1:]),
        "cut in two": (refused[:20], refused[20:]),
        "cut in two after an allowed message": (allowed + refused[:20], refused[20:]),
        "the ninth in one segment": (framed(*["one.egtest"] * 8) + refused,),
        # the resolver drops the urgent byte from the stream: the message
        # it reads next starts a byte before where the segment shows one
        "behind an urgent byte": ("oob:" + (allowed + b"\x00").hex(), refused[:2] + refused),
    }


@pytest.mark.parametrize("what", list(refusals()))
def test_a_query_no_rule_allows_never_reaches_the_resolver_however_it_is_framed(
        resolver, guarded, what):
    _agent, cgroup = guarded
    before = len(resolver.queries("three.egtest"))
    outcome = send(resolver, cgroup, *refusals()[what])
    assert not outcome.startswith("answers") or outcome == "answers 0", outcome
    assert len(resolver.queries("three.egtest")) == before


def test_whole_allowed_messages_in_one_segment_are_all_answered(resolver, guarded):
    """Like glibc's A and AAAA queries in one write; and eight at once."""
    _agent, cgroup = guarded
    assert send(resolver, cgroup, framed("one.egtest", "multi.egtest")) == "answers 2"
    assert send(resolver, cgroup, framed(*["one.egtest"] * 8)) == "answers 8"
    # one message a segment, each whole, on one connection
    assert send(resolver, cgroup, framed("one.egtest"), framed("multi.egtest")) == "answers 2"


def test_a_refused_segment_is_reported(resolver, guarded):
    agent, cgroup = guarded
    send(resolver, cgroup, framed("one.egtest") + framed("three.egtest"))
    refused = agent.wait_for(lambda e: e.get("kind") == "dns" and e["direction"] == "query"
                             and e["proto"] == "tcp" and e["dns"]["name"] == "three.egtest")
    assert refused["action"] == "block" and "no-rule" in refused["dns"]["why"]
    send(resolver, cgroup, framed("three.egtest")[:1], framed("three.egtest")[1:])
    unread = agent.wait_for(lambda e: e.get("kind") == "dns" and e["direction"] == "query"
                            and e["proto"] == "tcp" and e["action"] == "block"
                            and "unparsed" in e["dns"]["why"])
    assert unread["cgroup"]["id"] == cgroup.id
    unread_before = sum(1 for e in agent.drain() if e.get("kind") == "dns"
                        and e["direction"] == "query" and "unparsed" in e["dns"]["why"])
    assert send(resolver, cgroup, "oob:" + framed("one.egtest").hex()) != "answers 1"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        unread_now = sum(1 for e in agent.drain() if e.get("kind") == "dns"
                         and e["direction"] == "query" and "unparsed" in e["dns"]["why"])
        if unread_now > unread_before:
            break
        time.sleep(0.1)
    assert unread_now > unread_before


# A resolver of the test's own at the trusted address, on port 5353: it reads
# the queries of a connection (argv[4] of them), asks dnsmasq (argv[3]) each
# over UDP, and writes every answer back in one write, so that one segment
# carries them all.
BATCHING_RESOLVER = r"""
import socket, struct, sys
ip, port, upstream, want = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((ip, port))
server.listen(8)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.settimeout(3)
    data, queries = b"", []
    while len(queries) < want:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        while len(data) >= 2 and len(data) >= 2 + struct.unpack(">H", data[:2])[0]:
            size = struct.unpack(">H", data[:2])[0]
            queries.append(data[2:2 + size])
            data = data[2 + size:]
    answers = []
    for query in queries:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(3)
        udp.sendto(query, (upstream, 53))
        answers.append(udp.recv(4096))
        udp.close()
    conn.sendall(b"".join(struct.pack(">H", len(a)) + a for a in answers))
    conn.close()
"""

# Ask (argv[1], 5353) the queries argv[2:] (hex) in one segment, read the
# answers, then connect to port argv[... after "--"] of each address given.
ASK_THEN_CONNECT = r"""
import errno, socket, struct, sys
at = sys.argv.index("--")
resolver, queries, (port, *addresses) = sys.argv[1], sys.argv[2:at], sys.argv[at + 1:]
s = socket.create_connection((resolver, 5353), timeout=3)
s.sendall(b"".join(struct.pack(">H", len(q)) + q for q in map(bytes.fromhex, queries)))
data = b""
while True:
    chunk = s.recv(65535)
    if not chunk:
        break
    data += chunk
outcomes = []
for ip in addresses:
    c = socket.socket()
    c.settimeout(3)
    try:
        c.connect((ip, int(port))); outcomes.append("ok")
    except OSError as e:
        outcomes.append(errno.errorcode.get(e.errno, str(e)))
    c.close()
print(" ".join(outcomes))
"""


def test_every_answer_in_one_segment_is_learned(resolver, server, tmp_path):
    """A resolver that writes two answers in one segment (for two queries
    the client sent in one): the addresses of both are allowed before the
    client reads them."""
    path = tmp_path / "policy.yaml"
    text = names_policy(resolver, server.port)
    trusted = f"      - cidr: {resolver.ip}/32\n"
    assert trusted in text
    path.write_text(text.replace(trusted, trusted + "        ports: [53, 5353]\n"))
    one, multi = resolver.addresses("one.egtest")[0], resolver.addresses("multi.egtest")[0]
    batching = subprocess.Popen(
        ["ip", "netns", "exec", resolver.netns, sys.executable, "-c", BATCHING_RESOLVER,
         resolver.ip, "5353", resolver.ip, "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert batching.stdout.readline().strip() == "ready"
        with TempCgroup("eg-tcp-answers") as cgroup, \
                AgentProcess([cgroup.path], policy=path) as agent:
            result = resolver.run(
                [sys.executable, "-c", ASK_THEN_CONNECT, resolver.ip,
                 build_query("one.egtest", "A").hex(), build_query("multi.egtest", "A").hex(),
                 "--", str(server.port), one, multi], cgroup)
            assert result.stdout.split() == ["ok", "ok"], result.stdout + result.stderr
            for name in ("one.egtest", "multi.egtest"):
                agent.wait_for(lambda e, name=name: e.get("kind") == "dns"
                               and e["direction"] == "answer" and e["proto"] == "tcp"
                               and e["dns"]["name"] == name and e["dns"]["learned"])
    finally:
        batching.kill()
        batching.wait(timeout=10)
        batching.stdout.close()


# Send the queries argv[2:] (hex, all of one length) in one send cut into
# datagrams of that length (UDP_SEGMENT), then count the answers: "answers
# N", or the errno name at the send.
SEGMENTED = r"""
import errno, socket, sys
queries = [bytes.fromhex(h) for h in sys.argv[2:]]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_UDP, 103, len(queries[0]))  # UDP_SEGMENT
s.settimeout(1.5)
try:
    s.sendto(b"".join(queries), (sys.argv[1], 53))
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e)))
    sys.exit()
answers = 0
try:
    while True:
        s.recv(4096)
        answers += 1
except socket.timeout:
    pass
print(f"answers {answers}")
"""


def test_a_udp_send_cut_into_datagrams_is_refused(resolver, guarded):
    """one.egtest is allowed and two.egtest (as long) is not: sent as one
    send of two datagrams, neither reaches the resolver, and the send is
    reported as a query the kernel could not read."""
    agent, cgroup = guarded
    allowed, refused = build_query("one.egtest"), build_query("two.egtest")
    assert len(allowed) == len(refused)
    before = len(resolver.queries("two.egtest"))
    outcome = resolver.run([sys.executable, "-c", SEGMENTED, resolver.ip, allowed.hex(),
                            refused.hex()], cgroup).stdout.strip()
    assert outcome == "EPERM", outcome
    assert len(resolver.queries("two.egtest")) == before
    agent.wait_for(lambda e: e.get("kind") == "dns" and e["direction"] == "query"
                   and e["proto"] == "udp" and e["action"] == "block"
                   and "unparsed" in e["dns"]["why"] and e["cgroup"]["id"] == cgroup.id)


def test_a_refused_connection_is_reset_at_the_resolver_too(resolver, guarded):
    """dnsmasq here serves TCP in its one process, a connection at a time:
    a refused connection that it never heard the end of would keep it from
    every other query. The flow's data is dropped, its reset is not."""
    _agent, cgroup = guarded
    for _ in range(2):
        refused = send(resolver, cgroup, "oob:" + (framed("one.egtest") + b"\x00").hex())
        assert refused != "answers 1", refused
        started = time.monotonic()
        assert send(resolver, cgroup, framed("one.egtest")) == "answers 1"
        assert time.monotonic() - started < 5
