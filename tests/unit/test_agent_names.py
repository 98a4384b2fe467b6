# SPDX-License-Identifier: Apache-2.0
"""Allow by name, the agent's share, on the fake kernel (tests/fakekernel.py):
dns records -> dns events and the NameBook (guard/agent/handlers.py on_dns),
dst.name on the connects and detections of the workload that learned the
address and no other, the status's "names", the sweep of learned addresses,
and hostile dns records."""
from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from guard.agent import handlers
from guard.detect.classify.dns import parse_message
from guard.kernel.abi import DNS_MSG_MAX, Action, DnsDirection, DnsFlags, NameKind, Proto
from guard.policy.names import name_id
from tests.fakekernel import (FAKE_COOKIE, FAKE_PID, FakeKernel, dns_message, dns_record,
                              fake_agent)

ROOT = Path(__file__).resolve().parents[2]
STRATUM = (ROOT / "tests/fixtures/payloads/stratum-v1.cpuminer.bin").read_bytes()
MINE, THEIRS = "/sandbox.slice/agent-1.scope", "/sandbox.slice/agent-2.scope"
RESOLVER = "198.18.53.53"           # dns_record's default sender

POLICY = f"""\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: names
spec:
  defaultAction: block
  dns:
    resolvers:
      - cidr: {RESOLVER}/32
      - cidr: "fd00::53/128"
        ports: [53, 5353]
    ttl:
      min: 30
      max: 3600
  detections:
    stratum: block
  egress:
    - name: site
      action: allow
      to:
        - host: one.example
          ports: [443, 3333]
        - host: "*.mirror.example"
          ports: [443]
    - name: cidr
      action: allow
      to:
        - cidr: 10.0.0.0/8
"""
PLAIN = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: plain
spec:
  egress:
    - name: cidr
      action: allow
      to:
        - cidr: 10.0.0.0/8
"""

ONE = dns_message("one.example", answers=(
    ("one.example", "CNAME", "edge.cdn.example", 300),
    ("edge.cdn.example", "A", "198.18.7.1", 300),
    ("edge.cdn.example", "AAAA", "2001:db8:7::1", 120)))


@pytest.fixture
def kernel():
    with fake_agent(POLICY, cgroups=(MINE, THEIRS)) as fake:
        yield fake


def cgroup_id(kernel: FakeKernel, relative: str) -> int:
    [cg] = [cg for cg in kernel.agent.registry.guarded.values() if cg.relative == relative]
    return cg.id


def answer(kernel: FakeKernel, message: bytes = ONE, *, cgroup: str = MINE,
           flags: int = DnsFlags.LEARNED, **kw) -> list[dict]:
    """An answer record the kernel read for a socket of cgroup."""
    kw.setdefault("ttl", 120)
    kw.setdefault("learned", 2 if flags & DnsFlags.LEARNED else 0)
    kw.setdefault("action", Action.ALLOW if flags & DnsFlags.LEARNED else Action.LOG)
    kw.setdefault("name_id", name_id(NameKind.EXACT, "one.example"))
    return kernel.feed(dns_record(message, flags=flags, **kernel.defaults(
        {"cgroup_id": cgroup_id(kernel, cgroup), **kw})))


def connect(kernel: FakeKernel, ip: str, port: int = 443, *, cgroup: str = MINE,
            **kw) -> dict:
    kw.setdefault("action", Action.ALLOW)
    kw.setdefault("rule_id", kernel.rule_id("site"))
    [event] = kernel.connect(ip, port, cgroup_id=cgroup_id(kernel, cgroup), **kw)
    assert event["kind"] == "connect"
    return event


# --------------------------------------------------------------------------
# Answers


def test_a_learned_answer_is_a_dns_event(kernel):
    [event] = answer(kernel)
    assert (event["kind"], event["direction"], event["action"]) == ("dns", "answer", "allow")
    assert event["cgroup"] == {"id": cgroup_id(kernel, MINE), "path": MINE}
    assert event["policy"] == {"name": "names", "generation": 1}
    assert event["resolver"] == {"ip": RESOLVER, "port": 53}
    dns = event["dns"]
    assert (dns["name"], dns["type"], dns["learned"], dns["trusted"], dns["why"]) == (
        "one.example", "A", 2, True, [])
    assert dns["answers"] == [{"ip": "198.18.7.1", "ttl": 300},
                              {"ip": "2001:db8:7::1", "ttl": 120}]
    assert dns["cnames"] == ["edge.cdn.example"]
    # an answer is received in softirq: no process
    assert event["process"]["pid"] == 0 and event["process"]["exe"] is None


def test_a_connect_after_the_answer_is_named_by_the_question(kernel):
    answer(kernel)
    for ip in ("198.18.7.1", "2001:db8:7::1"):
        event = connect(kernel, ip)
        assert event["dst"] == {"ip": ip, "port": 443, "name": "one.example"}
        assert (event["action"], event["rule"]) == ("allow", "site")


def test_another_workloads_connect_to_the_address_has_no_name(kernel):
    answer(kernel)
    event = connect(kernel, "198.18.7.1", cgroup=THEIRS, action=Action.BLOCK, rule_id=0)
    assert event["dst"] == {"ip": "198.18.7.1", "port": 443}
    assert event["cgroup"]["path"] == THEIRS and event["action"] == "block"
    # ... until that workload learns it itself
    answer(kernel, cgroup=THEIRS)
    assert connect(kernel, "198.18.7.1", cgroup=THEIRS)["dst"]["name"] == "one.example"


def test_a_connect_to_an_address_nobody_learned_has_no_name(kernel):
    answer(kernel)
    event = connect(kernel, "198.18.7.2", action=Action.BLOCK, rule_id=0)
    assert event["dst"] == {"ip": "198.18.7.2", "port": 443} and event["rule"] is None


@pytest.mark.parametrize("flags", [0, DnsFlags.UNTRUSTED, DnsFlags.LOOPED, DnsFlags.NO_RULE,
                                   DnsFlags.FULL | DnsFlags.NO_TABLE])
def test_an_answer_the_kernel_did_not_learn_names_nothing(kernel, flags):
    [event] = answer(kernel, flags=flags, learned=0)
    assert event["kind"] == "dns" and event["dns"]["learned"] == 0
    assert event["dns"]["name"] == "one.example"        # what it claims, shown
    assert "dst" not in event
    assert "name" not in connect(kernel, "198.18.7.1", action=Action.BLOCK, rule_id=0)["dst"]


def test_a_learned_answer_names_its_addresses_for_its_ttl(kernel, monkeypatch):
    now = time.monotonic()
    monkeypatch.setattr(handlers.time, "monotonic", lambda: now)
    answer(kernel, ttl=60)
    assert connect(kernel, "198.18.7.1")["dst"]["name"] == "one.example"
    monkeypatch.setattr(handlers.time, "monotonic", lambda: now + 61)
    assert "name" not in connect(kernel, "198.18.7.1")["dst"]


def test_an_answer_with_a_ttl_of_zero_names_nothing(kernel):
    [event] = answer(kernel, ttl=0)
    assert event["dns"]["learned"] == 2
    assert "name" not in connect(kernel, "198.18.7.1")["dst"]


@pytest.mark.parametrize("message", [
    b"", b"\x12", b"\x12\x34\x81\x80" + b"\xff" * 40,
    b"\x12\x34\x81\x80\x00\x00\x00\x01\x00\x00\x00\x00",                # no question
    b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\xc0\x0c\x00\x01",  # a looping name
])
@pytest.mark.parametrize("flags", [DnsFlags.UNPARSED, DnsFlags.LEARNED])
def test_an_unparsable_message_is_still_an_event(kernel, message, flags):
    [event] = answer(kernel, message, flags=flags)
    assert event["kind"] == "dns" and event["direction"] == "answer"
    assert event["dns"]["why"] == ["unparsed"]
    assert event["dns"]["name"] is None and event["dns"]["answers"] == []
    assert kernel.agent.names.name_of(cgroup_id(kernel, MINE), "198.18.7.1", 0.0) is None
    assert len(kernel.agent.names) == 0


def test_an_answer_over_tcp_from_an_ipv6_resolver(kernel):
    [event] = answer(kernel, ip="fd00::53", port=5353, proto=Proto.TCP)
    assert event["resolver"] == {"ip": "fd00::53", "port": 5353}
    assert (event["proto"], event["family"]) == ("tcp", "ipv6")
    assert connect(kernel, "2001:db8:7::1")["dst"]["name"] == "one.example"


def test_a_cut_answer_names_the_addresses_it_still_holds(kernel):
    many = dns_message("x.mirror.example", answers=tuple(
        ("x.mirror.example", "A", f"198.18.9.{i}") for i in range(1, 60)))
    assert len(many) > DNS_MSG_MAX
    [event] = answer(kernel, many, flags=DnsFlags.LEARNED, learned=59)
    assert "cut" in event["dns"]["why"]
    # the event carries the first DNS_MSG_MAX bytes: the addresses in them
    # are named; those past them (the kernel learned them too) go unnamed
    carried = len(parse_message(many[:DNS_MSG_MAX]).addresses)
    assert 0 < carried < 59 and len(event["dns"]["answers"]) == carried
    named = [connect(kernel, f"198.18.9.{i}")["dst"].get("name") for i in range(1, 60)]
    assert named == ["x.mirror.example"] * carried + [None] * (59 - carried)


# --------------------------------------------------------------------------
# Queries


def test_a_refused_query_is_a_block_event_of_its_process(kernel):
    query = dns_message("tunnel.evil.example", "TXT", answers=(), response=False)
    [event] = kernel.feed(dns_record(query, direction=DnsDirection.QUERY, flags=DnsFlags.NO_RULE,
                                     action=Action.BLOCK, comm="python3",
                                     **kernel.defaults({})))
    assert (event["kind"], event["direction"], event["action"]) == ("dns", "query", "block")
    assert event["process"]["pid"] == FAKE_PID and event["process"]["comm"] == "python3"
    assert event["dns"]["name"] == "tunnel.evil.example" and event["dns"]["type"] == "TXT"
    assert event["dns"]["why"] == ["no-rule"] and event["dns"]["answers"] == []
    assert event["resolver"] == {"ip": RESOLVER, "port": 53}
    assert len(kernel.agent.names) == 0


def test_a_query_flagged_learned_teaches_nothing(kernel):
    query = dns_message("one.example", answers=(("one.example", "A", "198.18.7.1"),))
    kernel.feed(dns_record(query, direction=DnsDirection.QUERY, flags=DnsFlags.LEARNED,
                           ttl=300, action=Action.LOG, **kernel.defaults({})))
    assert "name" not in connect(kernel, "198.18.7.1")["dst"]


# --------------------------------------------------------------------------
# Detections


def test_a_detection_on_a_flow_to_a_learned_address_carries_the_name(kernel):
    answer(kernel)
    events = kernel.payload(STRATUM, ip="198.18.7.1", port=3333,
                            cgroup_id=cgroup_id(kernel, MINE))
    [detection] = [e for e in events if e["kind"] == "detection"]
    assert detection["detection"]["type"] == "stratum" and detection["action"] == "block"
    assert detection["dst"] == {"ip": "198.18.7.1", "port": 3333, "proto": "tcp",
                                "name": "one.example"}
    assert kernel.maps.flow_actions == {FAKE_COOKIE: Action.BLOCK}


def test_a_detection_in_another_workload_is_not_named_by_mine(kernel):
    answer(kernel)
    events = kernel.payload(STRATUM, ip="198.18.7.1", port=3333,
                            cgroup_id=cgroup_id(kernel, THEIRS))
    [detection] = [e for e in events if e["kind"] == "detection"]
    assert detection["dst"] == {"ip": "198.18.7.1", "port": 3333, "proto": "tcp"}


# --------------------------------------------------------------------------
# Status, sweep and reload


def test_the_status_lists_the_policys_resolvers_ports_and_names(kernel):
    assert kernel.agent.status()["names"] == [{
        "policy": "names", "resolvers": [f"{RESOLVER}/32", "fd00::53/128"],
        "resolver_ports": [53, 5353], "names": ["one.example", "*.mirror.example"],
        "ttl": {"min": 30, "max": 3600}, "learned": {}}]
    # the ready event says whom the agent trusts
    [ready] = [e for e in kernel.events() if e.get("state") == "ready"]
    assert ready["names"] == kernel.agent.status()["names"]


def test_a_policy_without_names_lists_none():
    with fake_agent(PLAIN) as plain:
        assert not plain.agent.policies[0].uses_names
        assert plain.agent.status()["names"] == []


def test_the_status_lists_a_bounded_number_of_names():
    targets = "".join(f"        - host: h{i}.example\n          ports: [443]\n"
                      for i in range(handlers.NAMES_LISTED + 10))
    text = POLICY.split("        - host: one.example")[0] + targets
    with fake_agent(text) as many:
        [status] = many.agent.status()["names"]
        assert len(status["names"]) == handlers.NAMES_LISTED
        assert status["names"][0] == "h0.example"
        assert len(many.maps.policies[many.policy_id()].names.entries) == \
            handlers.NAMES_LISTED + 10


def test_sweep_runs_at_most_every_sweep_s_and_its_counts_show(kernel, monkeypatch):
    kernel.agent.handlers.sweep()                    # not in the first period
    assert kernel.maps.called("sweep_learned") == []
    clock = [time.monotonic() + handlers.SWEEP_S]
    monkeypatch.setattr(handlers.time, "monotonic", lambda: clock[0])
    mine = cgroup_id(kernel, MINE)
    kernel.maps.learned = {mine: 3}
    kernel.tick()                                    # the loop's chore
    [(now_ns,)] = kernel.maps.called("sweep_learned")
    assert abs(now_ns - time.clock_gettime_ns(time.CLOCK_BOOTTIME)) < 60 * 10**9
    [status] = kernel.agent.status()["names"]
    assert status["learned"] == {str(mine): 3}
    kernel.maps.learned = {mine: 1, cgroup_id(kernel, THEIRS): 0}
    swept_at = clock[0]
    for later in (1.0, handlers.SWEEP_S - 0.5):
        clock[0] = swept_at + later
        kernel.agent.handlers.sweep()
        assert len(kernel.maps.called("sweep_learned")) == 1
    clock[0] = swept_at + handlers.SWEEP_S
    kernel.agent.handlers.sweep()
    assert len(kernel.maps.called("sweep_learned")) == 2
    [status] = kernel.agent.status()["names"]
    assert status["learned"] == {str(mine): 1, str(cgroup_id(kernel, THEIRS)): 0}
    kernel.agent.handlers.sweep()
    assert len(kernel.maps.called("sweep_learned")) == 2


def test_a_failed_sweep_is_tried_again_a_period_later(kernel, monkeypatch):
    clock = [time.monotonic() + handlers.SWEEP_S]
    monkeypatch.setattr(handlers.time, "monotonic", lambda: clock[0])
    kernel.maps.fail["sweep_learned"] = OSError("map gone")
    with pytest.raises(OSError):
        kernel.agent.handlers.sweep()
    kernel.agent.handlers.sweep()                   # not at once: the period starts again
    assert len(kernel.maps.called("sweep_learned")) == 1
    clock[0] += handlers.SWEEP_S
    kernel.maps.learned = {7: 2}
    kernel.agent.handlers.sweep()
    assert kernel.agent.handlers.learned == {7: 2}


def test_a_reload_keeps_name_ids_and_learned_names(kernel):
    answer(kernel)
    before = kernel.maps.policies[kernel.policy_id()].names
    changed = POLICY.replace("ports: [443, 3333]", "ports: [443]").replace(
        "  name: names", "  name: names-2")
    assert kernel.agent._answer({"op": "reload", "policy": {"text": changed,
                                                             "source": "<t>"}})["ok"]
    after = kernel.maps.policies[kernel.policy_id()].names
    assert kernel.policy_id() != 1 << 8
    assert {e.pattern: e.name_id for e in after.entries} == \
        {e.pattern: e.name_id for e in before.entries}
    event = connect(kernel, "198.18.7.1")
    assert event["dst"]["name"] == "one.example" and event["policy"]["generation"] == 2


# --------------------------------------------------------------------------
# Hostile dns records

FUZZ = settings(max_examples=300, deadline=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def fuzzed():
    with fake_agent(POLICY, cgroups=(MINE, THEIRS)) as fake:
        yield fake


def _damaged(message: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    raw = bytearray(message)
    for at, value in edits:
        raw[at % len(raw)] = value
    return bytes(raw[:cut])


messages = st.one_of(
    st.binary(max_size=600),
    st.tuples(st.sampled_from([ONE, dns_message("a.mirror.example", "AAAA", answers=(
        ("a.mirror.example", "AAAA", "2001:db8::1"),)), dns_message()]),
              st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=8),
              st.integers(0, 600)).map(lambda t: _damaged(*t)))


@FUZZ
@given(message=messages, flags=st.integers(0, 255),
       direction=st.sampled_from(list(DnsDirection)), ttl=st.integers(0, 2**32 - 1),
       cgroup=st.sampled_from([MINE, THEIRS, None]), pid=st.sampled_from([0, FAKE_PID]),
       policy_id=st.sampled_from(["active", 0, 12345]))
def test_hostile_dns_records_never_raise_out_of_the_agent(fuzzed, message, flags, direction,
                                                          ttl, cgroup, pid, policy_id):
    header = {"pid": pid, "cgroup_id": cgroup_id(fuzzed, cgroup) if cgroup else 99}
    if policy_id != "active":
        header["policy_id"] = policy_id
    fuzzed.failures.clear()
    book = fuzzed.agent.names
    held = len(book)
    fuzzed.push(dns_record(message, flags=flags, direction=direction, ttl=ttl,
                           learned=flags & 1, **fuzzed.defaults(header)))
    assert fuzzed.failures == []
    lines = fuzzed.take_lines()
    events = [orjson.loads(line) for line in lines]
    assert len(events) == 1 and events[0]["kind"] == "dns", events
    assert isinstance(events[0]["dns"]["why"], list)
    # only an answer the kernel says it learned teaches a name
    if direction == DnsDirection.QUERY or not flags & DnsFlags.LEARNED:
        assert len(book) == held
    assert len(book) <= book.total
