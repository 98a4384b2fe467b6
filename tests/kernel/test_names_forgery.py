# SPDX-License-Identifier: Apache-2.0
"""Allow by name against a workload that forges answers (issue 15, point 5):
an answer counts only from a resolver the policy trusts, never from the
workload itself or a forged packet. Each way found to make the guard believe
an answer it should not is a test here; and `defaultAction: log` reports
instead of refusing."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .dnsfixtures import TestResolver, build_query
from .test_names import connect_once, names_policy, resolver, server  # noqa: F401 (fixtures)

#: The workload may talk to itself on loopback (so that it can run a resolver of its own).
LOOPBACK = """\
    - name: own-loopback
      action: allow
      to:
        - cidr: 127.0.0.0/8
"""

# A workload's own "resolver": answers every A query with the address given,
# once, on the port given; prints "ready" when bound.
FAKE_RESOLVER = r"""
import socket, struct, sys
host, port, forged = sys.argv[1], int(sys.argv[2]), socket.inet_aton(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((host, port))
print("ready", flush=True)
s.settimeout(10)
query, peer = s.recvfrom(512)
end = 12
while query[end]:
    end += query[end] + 1
question = query[12:end + 5]
answer = (query[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00" + question
          + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04" + forged)
s.sendto(answer, peer)
"""

# Ask (host, port) for name over UDP, print the first A address answered.
ASK = r"""
import socket, sys
host, port, query = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(query, (host, port))
reply = s.recv(2048)
print(socket.inet_ntoa(reply[-4:]))
"""

BIND = r"""
import errno, socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
    s = socket.socket(family, kind)
    try:
        s.bind((sys.argv[1], int(sys.argv[2]))); print("ok")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e)))
    s.close()
"""

RAW = r"""
import errno, socket, sys
family = {"inet": socket.AF_INET, "packet": socket.AF_PACKET}[sys.argv[1]]
try:
    socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_UDP if sys.argv[1] == "inet" else 0)
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e)))
"""


@pytest.fixture(scope="module")
def guarded(resolver, server, tmp_path_factory):
    path = tmp_path_factory.mktemp("forgery") / "policy.yaml"
    path.write_text(names_policy(resolver, server.port, extra_rules=LOOPBACK))
    with TempCgroup("eg-forgery") as cgroup, AgentProcess([cgroup.path], policy=path) as agent:
        yield agent, cgroup


def run(resolver: TestResolver, cgroup, code: str, *args: str) -> list[str]:
    result = resolver.run([sys.executable, "-c", code, *args], cgroup)
    return result.stdout.split() or [result.stderr.strip()[-300:]]


def test_a_workload_cannot_take_a_resolver_port(resolver, guarded):
    _agent, cgroup = guarded
    for host in ("127.0.0.1", "0.0.0.0", "::", "::1"):
        assert run(resolver, cgroup, BIND, host, "53") == ["EPERM", "EPERM"], host
    assert run(resolver, cgroup, BIND, "127.0.0.1", "5353") == ["ok", "ok"]


def test_a_workload_cannot_open_raw_sockets_or_keep_a_packet_socket(resolver, guarded):
    """What would forge a resolver's packets: a raw inet socket is refused;
    a packet socket's owner is killed by the agent's sweep (the resolver
    here is not on loopback, so no sys_enter hook: see the next test for
    why a forged answer gains nothing in the meantime)."""
    agent, cgroup = guarded
    assert "sweep" in agent.ready["packet_sockets"]
    result = resolver.run([sys.executable, "-c", RAW, "inet"], cgroup)
    assert result.stdout.strip() == "EPERM", result
    hold = ("import socket, time\n"
            "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)\n"
            "print('open', flush=True)\ntime.sleep(10)\nprint('still running')\n")
    result = resolver.run([sys.executable, "-c", hold], cgroup, timeout=30)
    assert result.stdout.strip() == "open" and result.returncode == -9, result


#: From inside the workload: a UDP socket that asks nothing, then a forged
#: answer from the resolver's address and port to it, written on loopback
#: through a packet socket; prints "sent" once it went out.
FORGE_OVER_LOOPBACK = r"""
import socket, struct, sys
resolver_ip, forged, question_hex = sys.argv[1], sys.argv[2], sys.argv[3]
victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
victim.bind(("127.0.0.1", 0))
port = victim.getsockname()[1]
question = bytes.fromhex(question_hex)[12:]
answer = (b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + question
          + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04" + socket.inet_aton(forged))
udp = struct.pack("!HHHH", 53, port, 8 + len(answer), 0) + answer
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(resolver_ip), socket.inet_aton("127.0.0.1"))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
raw = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
raw.sendto(ip + udp, ("lo", 0x0800))
print("sent", flush=True)
victim.settimeout(2)
try:
    victim.recv(2048)
    print("delivered", flush=True)
except OSError:
    print("not delivered", flush=True)
"""


def test_a_forged_answer_over_loopback_teaches_nothing(resolver, server, guarded):
    """A packet socket's forged answer from the trusted resolver's address,
    written on loopback: the kernel does not believe an answer from a
    resolver that is not on loopback when it comes in over loopback (nor
    does the routing code take such a packet), so the forged address stays
    refused (however long the packet socket lived)."""
    agent, cgroup = guarded
    forged = resolver.addresses("two.egtest")[0]
    query = build_query("one.egtest").hex()
    for _attempt in range(3):       # the sweep may kill it before it sends: try again
        result = resolver.run([sys.executable, "-c", FORGE_OVER_LOOPBACK, resolver.ip, forged,
                               query], cgroup, timeout=30)
        if "sent" in result.stdout:
            break
    assert "sent" in result.stdout, result
    time.sleep(1)
    # the kernel drops it as a martian before any socket sees it here, and an
    # answer that got in over loopback would be flagged "looped", not learned
    learned = [e for e in agent.drain() if e["kind"] == "dns" and e["direction"] == "answer"
               and e["dns"].get("learned") and forged in json.dumps(e)]
    assert learned == [], learned
    assert connect_once(resolver, cgroup, forged, server.port) == "EPERM"


def test_the_answer_of_a_workloads_own_resolver_opens_nothing(resolver, server, guarded):
    agent, cgroup = guarded
    forged = resolver.addresses("two.egtest")[0]
    fake = resolver.popen([sys.executable, "-c", FAKE_RESOLVER, "127.0.0.1", "5354", forged],
                          cgroup, stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline().strip() == "ready"
        query = build_query("one.egtest").hex()
        assert run(resolver, cgroup, ASK, "127.0.0.1", "5354", query) == [forged]
    finally:
        fake.wait(timeout=10)
    assert connect_once(resolver, cgroup, forged, server.port) == "EPERM"


def test_an_answer_from_a_resolver_the_policy_does_not_trust_opens_nothing(
        resolver, server, guarded):
    """A resolver on the resolver port but at an address the policy does not
    list (run by the test, unguarded, on 127.0.0.2:53)."""
    agent, cgroup = guarded
    forged = resolver.addresses("two.egtest")[0]
    fake = subprocess.Popen([sys.executable, "-c", FAKE_RESOLVER, "127.0.0.2", "53", forged],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline().strip() == "ready"
        query = build_query("one.egtest").hex()
        assert run(resolver, cgroup, ASK, "127.0.0.2", "53", query) == [forged]
    finally:
        fake.wait(timeout=10)
    assert connect_once(resolver, cgroup, forged, server.port) == "EPERM"
    event = agent.wait_for(lambda e: e.get("kind") == "dns" and e["direction"] == "answer"
                           and e["resolver"]["ip"] == "127.0.0.2")
    assert event["dns"]["trusted"] is False and "untrusted-resolver" in event["dns"]["why"]
    assert event["dns"]["learned"] == 0 and event["dns"]["name"] == "one.egtest"
    assert event["action"] == "log"


def test_a_resolvers_address_arriving_over_loopback_is_not_believed(resolver, server, guarded):
    """Another local process (here: the test itself, unguarded) sends from the
    trusted resolver's address and port; it arrives over loopback, which a
    resolver in another namespace never uses."""
    agent, cgroup = guarded
    forged = resolver.addresses("three.egtest")[0]
    listener = resolver.popen([sys.executable, "-c", ASK_AND_WAIT, "0.0.0.0"], cgroup,
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(listener.stdout.readline())
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # IP_TRANSPARENT (root): send from the resolver's address, which is not ours
        sender.setsockopt(socket.SOL_IP, 19, 1)
        sender.bind((resolver.ip, 53))
        query = build_query("one.egtest", ident=0x4242)
        answer = (query[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:]
                  + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04"
                  + socket.inet_aton(forged))
        # to the host's own address on the resolver's link: delivered locally, over lo
        sender.sendto(answer, (resolver.host_ip, port))
        sender.close()
        assert listener.stdout.readline().strip() == "got"
    finally:
        listener.wait(timeout=10)
    assert connect_once(resolver, cgroup, forged, server.port) == "EPERM"
    event = agent.wait_for(lambda e: e.get("kind") == "dns" and e["direction"] == "answer"
                           and "over-loopback" in e["dns"]["why"])
    assert event["dns"]["learned"] == 0


# Bind a UDP socket on host, print its port, wait for one datagram, print "got".
ASK_AND_WAIT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
s.settimeout(10)
s.recv(2048)
print("got", flush=True)
"""


def test_under_log_a_query_no_rule_allows_is_reported_not_refused(resolver, server,
                                                                  tmp_path_factory):
    path = tmp_path_factory.mktemp("names-log") / "policy.yaml"
    path.write_text(names_policy(resolver, server.port, default="log", name="names-log"))
    with TempCgroup("eg-names-log") as cgroup, \
            AgentProcess([cgroup.path], policy=path) as agent:
        report = resolver.loop(["three.egtest"], server.port, cgroup=cgroup)
        assert report.failures == []   # log: resolved and connected, both reported
        query = agent.wait_for(lambda e: e.get("kind") == "dns" and e["direction"] == "query"
                               and e["dns"]["name"] == "three.egtest")
        assert query["action"] == "log" and "no-rule" in query["dns"]["why"]
        assert resolver.queries("three.egtest")


# A UDP query over IPv6 behind a destination-options header (argv: resolver,
# hex query): "answered", "EPERM" or the failure.
DSTOPTS_QUERY = r"""
import errno, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, 59, bytes([0, 0, 1, 4, 0, 0, 0, 0]))  # IPV6_DSTOPTS, PadN
s.settimeout(2)
try:
    s.sendto(bytes.fromhex(sys.argv[2]), (sys.argv[1], 53))
    s.recv(2048)
    print("answered")
except OSError as e:
    print(errno.errorcode.get(e.errno, type(e).__name__) if e.errno else type(e).__name__)
"""


def test_a_query_behind_ipv6_extension_headers_is_judged_like_any_other(resolver, guarded):
    """The kernel reads DNS packets with the same parser as first payloads:
    an extension header does not hide the question."""
    _agent, cgroup = guarded
    allowed = run(resolver, cgroup, DSTOPTS_QUERY, resolver.ip6, build_query("one.egtest").hex())
    assert allowed == ["answered"]
    refused = run(resolver, cgroup, DSTOPTS_QUERY, resolver.ip6,
                  build_query("two.egtest").hex())
    assert refused == ["EPERM"]
    assert resolver.queries("two.egtest") == []
