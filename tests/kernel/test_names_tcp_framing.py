# SPDX-License-Identifier: Apache-2.0
"""DNS over TCP is a byte stream: each message after its 2-byte length, as
many in one segment as the sender's writes put there, and a message or its
length may be cut between segments. A query for a name no rule allows must
not reach the resolver however the workload frames it (issue 15, point 6).

dns.bpf.c judges every message of a segment and refuses a segment that does
not end where a message ends: only whole messages keep the kernel's idea of
where a message begins the same as the resolver's, segment after segment.
The workload's framings, each a test here: two messages in one segment
(the second not allowed), a length split from its message, a message cut
in two, more messages than the kernel reads in one segment; and what glibc
does (A and AAAA in one write) still works."""
from __future__ import annotations

import struct
import sys

import pytest

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .dnsfixtures import TestResolver, build_query
from .test_names import names_policy, resolver, server  # noqa: F401 (fixtures)

# Send each argument (hex) as its own TCP segment (TCP_NODELAY, a pause
# between), then count the whole answers read back: "answers N", or the
# exception that ended it.
SEGMENTS = r"""
import socket, struct, sys, time
chunks = [bytes.fromhex(h) for h in sys.argv[2:]]
s = socket.create_connection((sys.argv[1], 53), timeout=3)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
try:
    for i, chunk in enumerate(chunks):
        if i:
            time.sleep(0.2)
        s.sendall(chunk)
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


def send(resolver: TestResolver, cgroup, *chunks: bytes) -> str:
    result = resolver.run([sys.executable, "-c", SEGMENTS, resolver.ip,
                           *(chunk.hex() for chunk in chunks)], cgroup)
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
