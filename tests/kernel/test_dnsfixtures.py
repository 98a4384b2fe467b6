# SPDX-License-Identifier: Apache-2.0
"""The DNS fixture itself, no guard involved: dnsmasq in its namespace serves
the test zone as written, glibc clients in the host namespace resolve through
it (over TCP when the answer is too big for UDP), the servers at the answered
addresses accept, and nothing is left behind."""
from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from .dnsfixtures import (
    BIG_COUNT, DEFAULT_TTL, SHORT_TTL, TOOLS, TestResolver, build_query, dns_query,
    parse_reply,
)
from .netfixtures import require_tools


@pytest.fixture(scope="module")
def resolver():
    require_tools(*TOOLS)
    with TestResolver() as test_resolver:
        yield test_resolver


@pytest.fixture(scope="module")
def server(resolver):
    return resolver.serve()


# --------------------------------------------------------------------------
# What the resolver answers


def test_the_resolver_serves_exactly_the_zone_with_each_records_ttl(resolver):
    for name, records in resolver.zone.items():
        for kind in ("A", "AAAA"):
            reply = dns_query(resolver.ip, name, kind, tcp=True)
            assert reply.rcode == "NOERROR", (name, kind, reply)
            got = {(r.name, r.kind, str(r.data), r.ttl) for r in reply.answers}
            chain = resolver.chain(name)
            want = {(owner, "CNAME", target, resolver.ttl(owner))
                    for owner, target in zip(chain, chain[1:])}
            want |= {(chain[-1], kind, r.value, r.ttl)
                     for r in resolver.records(chain[-1]) if r.kind == kind}
            assert got == want, (name, kind)


def test_ttls_are_per_record_over_udp(resolver):
    short = dns_query(resolver.ip, "short.egtest")
    assert [(r.kind, r.ttl) for r in short.answers] == [("A", SHORT_TTL)]
    assert short.answers[0].data == resolver.addresses("short.egtest")[0]
    one = dns_query(resolver.ip, "one.egtest")
    assert [r.ttl for r in one.answers] == [DEFAULT_TTL]


def test_unknown_names_are_nxdomain_and_other_zones_are_refused_not_forwarded(resolver):
    assert dns_query(resolver.ip, "nope.egtest").rcode == "NXDOMAIN"
    assert dns_query(resolver.ip, "x.nope.egtest", "AAAA").rcode == "NXDOMAIN"
    assert dns_query(resolver.ip, "example.org").rcode == "REFUSED"
    with pytest.raises(LookupError, match="EAI_NONAME"):
        resolver.resolve("nope.egtest")


def test_a_name_without_aaaa_answers_nodata(resolver):
    reply = dns_query(resolver.ip, "one.egtest", "AAAA")
    assert (reply.rcode, reply.answers) == ("NOERROR", [])


def test_the_resolver_also_answers_on_its_ipv6_address(resolver):
    assert sorted(dns_query(resolver.ip6, "multi.egtest", "AAAA").addresses()) == \
        sorted(resolver.addresses("multi.egtest", 6))
    assert sorted(resolver.resolve("multi.egtest", nameserver=resolver.ip6)) == \
        sorted(resolver.addresses("multi.egtest"))


def test_dns_message_helpers_round_trip():
    query = build_query("A.Sub.egtest.", "AAAA", ident=0x1234, edns_size=1232)
    parsed = parse_reply(query)
    assert (parsed.id, parsed.question, parsed.answers) == (0x1234, ("A.Sub.egtest", "AAAA"), [])
    with pytest.raises(ValueError):
        parse_reply(query[:12] + b"\xc0\x0c")        # a pointer to itself
    with pytest.raises(ValueError):
        parse_reply(b"\x00" * 5)


# --------------------------------------------------------------------------
# glibc clients in the host namespace


def test_getaddrinfo_returns_the_zones_a_and_aaaa_records(resolver):
    for name in ("one.egtest", "multi.egtest", "v6only.egtest", "deep.b.sub.egtest",
                 "shared.egtest"):
        assert sorted(resolver.resolve(name)) == sorted(resolver.addresses(name)), name
    assert sorted(resolver.resolve("multi.egtest", "4")) == \
        sorted(resolver.addresses("multi.egtest", 4))
    assert sorted(resolver.resolve("multi.egtest", "6")) == \
        sorted(resolver.addresses("multi.egtest", 6))
    assert resolver.resolve("ONE.EGTEST.") == resolver.addresses("one.egtest")


def test_a_cname_chain_resolves_to_the_final_addresses(resolver):
    assert resolver.chain("alias.egtest") == ["alias.egtest", "mid.egtest", "real.egtest"]
    assert sorted(resolver.resolve("alias.egtest")) == sorted(resolver.addresses("real.egtest"))
    reply = dns_query(resolver.ip, "alias.egtest")
    assert [(r.name, r.kind, r.data) for r in reply.answers] == [
        ("alias.egtest", "CNAME", "mid.egtest"), ("mid.egtest", "CNAME", "real.egtest"),
        ("real.egtest", "A", resolver.addresses("real.egtest", 4)[0])]


def test_a_big_answer_is_truncated_over_udp_and_glibc_takes_it_over_tcp(resolver):
    udp = dns_query(resolver.ip, "big.egtest")          # no EDNS: 512 bytes at most
    assert udp.truncated and len(udp.answers) < BIG_COUNT and udp.size <= 512
    tcp = dns_query(resolver.ip, "big.egtest", tcp=True)
    assert not tcp.truncated and tcp.size > 512
    assert sorted(tcp.addresses()) == sorted(resolver.addresses("big.egtest"))

    logged = len(resolver.queries("big.egtest"))
    accepted = resolver.tcp_accepts()
    addresses = resolver.resolve("big.egtest")
    assert sorted(addresses) == sorted(resolver.addresses("big.egtest"))
    # glibc asked over UDP, got TC, and asked again over a TCP connection
    # that dnsmasq accepted in its namespace (no server is being used here)
    assert resolver.tcp_accepts() > accepted
    again = resolver.wait_for_queries("big.egtest", logged + 2)[logged:]
    assert [q[0] for q in again].count("A") >= 2


def test_the_client_sees_the_test_resolver_and_the_host_files_stay(resolver, guarded_cgroup):
    before = {path: Path(path).read_bytes() for path in
              ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf")}
    result = resolver.run(["sh", "-c", "cat /etc/resolv.conf; grep ^hosts: /etc/nsswitch.conf;"
                           " cat /proc/self/cgroup; readlink /proc/self/ns/net"],
                          cgroup=guarded_cgroup)
    assert result.returncode == 0, result.stderr
    assert f"nameserver {resolver.ip}\n" in result.stdout
    assert "hosts: files dns\n" in result.stdout
    assert result.stdout.rstrip().splitlines()[-2].endswith("/" + guarded_cgroup.path.name)
    assert result.stdout.rstrip().splitlines()[-1] == os.readlink("/proc/self/ns/net")
    assert {path: Path(path).read_bytes() for path in before} == before


# --------------------------------------------------------------------------
# Servers at the answered addresses


def test_a_connect_to_a_resolved_address_reaches_the_server(resolver, server):
    seen = len(server.accepted)
    report = resolver.loop(["one.egtest", "multi.egtest", "v6only.egtest"], server.port, 3,
                           each=True, greeting=True)
    assert report.failures == []
    wanted = resolver.addresses("one.egtest") + resolver.addresses("multi.egtest") + \
        resolver.addresses("v6only.egtest")
    assert sorted(a["ip"] for a in report.attempts) == sorted(wanted)
    assert all(a["served_by"] == a["ip"] for a in report.attempts)
    accepted = server.wait_accepted(seen + len(wanted))[seen:]
    assert sorted(a["local"] for a in accepted) == sorted(wanted)
    assert {a["peer"] for a in accepted} <= {resolver.host_ip, resolver.host_ip6}


def test_a_thousand_resolve_then_connect_pairs_without_a_failure(resolver, server,
                                                                  guarded_cgroup):
    names = ["one.egtest", "multi.egtest", "alias.egtest", "short.egtest", "a.sub.egtest"]
    started = time.monotonic()
    report = resolver.loop(names, server.port, 1000, cgroup=guarded_cgroup, greeting=True)
    elapsed = time.monotonic() - started
    assert report.failures == [], report.failures[:5]
    assert len(report.attempts) == 1000
    for attempt in report.attempts:
        assert attempt["ip"] in resolver.addresses(attempt["name"]), attempt
        assert attempt["served_by"] == attempt["ip"], attempt
    resolve_ms = sorted(a["resolve_ms"] for a in report.attempts)
    print(f"1000 resolve-then-connect pairs: {report.seconds:.3f} s in the client, "
          f"{elapsed:.3f} s with its start; resolve median {resolve_ms[500]} ms, "
          f"p99 {resolve_ms[990]} ms")


# --------------------------------------------------------------------------
# Cleanup


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_cleanup_leaves_no_namespace_link_process_or_file_also_after_a_failure():
    require_tools(*TOOLS)
    for fail in (False, True):
        expect = pytest.raises(RuntimeError, match="the body failed") if fail else \
            contextlib.nullcontext()
        with expect:
            with TestResolver() as resolver:
                netns, link, directory = resolver.netns, resolver.host_if, resolver.dir
                server = resolver.serve()
                client = resolver.popen(["sleep", "60"])
                pids = [resolver.dnsmasq.pid, server.proc.pid, client.pid]
                assert all(_alive(pid) for pid in pids)
                assert netns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                               text=True).stdout
                if fail:
                    raise RuntimeError("the body failed")
        assert not any(_alive(pid) for pid in pids)
        assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                           text=True, check=True).stdout
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                               check=True).stdout
        assert f" {link}@" not in links and f" {link}:" not in links
        assert not Path(directory).exists()
        assert not Path("/run/netns", netns).exists()
