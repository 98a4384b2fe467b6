# SPDX-License-Identifier: Apache-2.0
"""Allow by name against a workload that forges answers (issue 15, point 5):
an answer counts only from a resolver the policy trusts, never from the
workload itself or a forged packet. Each way found to make the guard believe
an answer it should not is a test here; and `defaultAction: log` reports
instead of refusing."""
from __future__ import annotations

import socket
import subprocess
import sys

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


def test_a_workload_cannot_open_raw_or_packet_sockets(resolver, guarded):
    """What would forge a resolver's packets: refused (or the process killed:
    the policy's raw-socket verdict), never opened."""
    _agent, cgroup = guarded
    for family in ("inet", "packet"):
        result = resolver.run([sys.executable, "-c", RAW, family], cgroup)
        assert result.stdout.strip() != "ok" and (
            result.stdout.strip() == "EPERM" or result.returncode < 0), (family, result)


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
