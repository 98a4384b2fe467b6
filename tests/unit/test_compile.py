# SPDX-License-Identifier: Apache-2.0
"""Policy -> kernel tables: precedence, flattening, limits, and simulate()."""
from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import pytest
from hypothesis import given, settings, strategies as st

from guard.kernel.abi import RULE_NONE, RULES_PER_PREFIX, Action, Proto
from guard.policy.compile import PortRule, compile_policy, simulate
from guard.policy.model import ALL_PORTS, EgressRule, Policy, PolicyError, Target
from guard.policy.load import load_policy, parse_policy
from tests.conftest import FIXTURES

TCP, UDP, ANY = Proto.TCP, Proto.UDP, Proto.ANY
ALLOW, LOG, BLOCK, KILL = Action.ALLOW, Action.LOG, Action.BLOCK, Action.KILL

HEADER = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: t
spec:
  defaultAction: log
"""


def compiled(body: str = "", header: str = HEADER):
    return compile_policy(parse_policy(header + body, "policy.yaml"))


def egress(*rules: str) -> str:
    """An egress section; each rule is "name action [cidr] [ports]"."""
    lines = ["  egress:"]
    for rule in rules:
        name, action, *rest = rule.split()
        target = {}
        for word in rest:
            target["ports" if word.startswith("[") else "cidr"] = word
        fields = ", ".join(f"{key}: {value}" for key, value in target.items())
        lines.append(f"    - {{name: {name}, action: {action}, to: [{{{fields}}}]}}")
    return "\n".join(lines) + "\n"


# --- the example policy --------------------------------------------------------

@pytest.fixture(scope="module")
def example():
    return compile_policy(load_policy(FIXTURES / "example-policy.yaml"))


@pytest.mark.parametrize("ip, port, proto, action, rule", [
    ("127.0.0.1", 39001, TCP, BLOCK, "block-test-port"),
    ("127.0.0.1", 39015, TCP, BLOCK, "block-test-port"),
    ("127.0.0.9", 39020, TCP, BLOCK, "block-test-port"),
    ("127.0.0.1", 39021, TCP, ALLOW, None),          # outside the range: the default
    ("127.0.0.1", 39001, UDP, ALLOW, None),          # the /8 target is TCP only
    ("::1", 39001, TCP, BLOCK, "block-test-port"),   # protocol omitted: any
    ("::1", 39001, UDP, BLOCK, "block-test-port"),
    ("::1", 39002, TCP, ALLOW, None),
    ("::2", 39001, TCP, ALLOW, None),
    ("10.1.1.1", 39001, TCP, ALLOW, None),
    ("::ffff:127.0.0.1", 39001, TCP, BLOCK, "block-test-port"),   # judged as IPv4
    ("::ffff:127.0.0.1", 39001, UDP, ALLOW, None),
])
def test_example_verdicts(example, ip, port, proto, action, rule):
    got_action, rule_id = simulate(example, ip, port, proto)
    assert got_action == action
    assert example.rule_name(rule_id) == rule


def test_example_tables(example):
    assert example.name == "example" and example.default_action == ALLOW
    assert example.deny_raw_sockets is True
    assert example.rule_names == ("", "block-test-port", "no-netcat")
    assert dict(example.v4) == {IPv4Network("127.0.0.0/8"): (
        PortRule(39001, 39001, TCP, BLOCK, 1), PortRule(39010, 39020, TCP, BLOCK, 1))}
    assert dict(example.v6) == {IPv6Network("::1/128"): (PortRule(39001, 39001, ANY, BLOCK, 1),)}
    assert dict(example.exec_names) == {"nc": (KILL, 2), "ncat": (KILL, 2)}
    assert dict(example.exec_paths) == {"/usr/bin/nc.openbsd": (KILL, 2)}


def test_rule_name_of_no_rule_and_unknown_ids(example):
    assert example.rule_name(RULE_NONE) is None
    assert example.rule_name(3) is None and example.rule_name(-1) is None
    assert example.rule_name(2) == "no-netcat"


# --- precedence -------------------------------------------------------------------

def test_most_specific_prefix_wins():
    policy = compiled(egress("net block 10.0.0.0/8", "host allow 10.1.2.3/32"))
    assert simulate(policy, "10.1.2.3", 443, TCP) == (ALLOW, 2)
    assert simulate(policy, "10.1.2.4", 443, TCP) == (BLOCK, 1)
    assert simulate(policy, "11.0.0.1", 443, TCP) == (LOG, RULE_NONE)
    # the /32's list: its own rule, then the inherited /8 rule
    assert policy.v4[IPv4Network("10.1.2.3/32")] == (
        PortRule(0, 65535, ANY, ALLOW, 2), PortRule(0, 65535, ANY, BLOCK, 1))


def test_same_prefix_block_beats_allow():
    policy = compiled(egress("ok allow 10.0.0.0/8", "deny block 10.0.0.0/8"))
    assert simulate(policy, "10.0.0.1", 80, TCP) == (BLOCK, 2)


def test_same_prefix_log_beats_allow():
    policy = compiled(egress("ok allow 10.0.0.0/8", "watch log 10.0.0.0/8"))
    assert simulate(policy, "10.0.0.1", 80, UDP) == (LOG, 2)


def test_port_specific_rule_falls_through_to_a_wider_prefix():
    policy = compiled(egress("web block 10.0.0.0/8 [80]", "all allow 0.0.0.0/0"))
    assert simulate(policy, "10.0.0.1", 80, TCP) == (BLOCK, 1)
    assert simulate(policy, "10.0.0.1", 81, TCP) == (ALLOW, 2)
    assert simulate(policy, "192.0.2.1", 80, TCP) == (ALLOW, 2)


def test_file_order_breaks_ties_of_equal_severity_and_prefix():
    policy = compiled(egress("first block 10.0.0.0/8 [1-100]", "second block 10.0.0.0/8 [50]"))
    assert simulate(policy, "10.0.0.1", 50, TCP) == (BLOCK, 1)


def test_severity_applies_before_file_order_at_equal_prefix():
    policy = compiled(egress("a allow 10.0.0.0/8 [80]", "b log 10.0.0.0/8 [80]",
                             "c block 10.0.0.0/8 [80]", "d block 10.0.0.0/8"))
    assert [rule.rule_id for rule in policy.v4[IPv4Network("10.0.0.0/8")]] == [3, 4, 2, 1]


def test_inherited_rules_come_from_every_containing_prefix_most_specific_first():
    policy = compiled(egress("a block 10.0.0.0/8 [1]", "b block 10.1.0.0/16 [2]",
                             "c block 10.1.1.0/24 [3]", "d block 11.0.0.0/8 [4]"))
    assert [rule.rule_id for rule in policy.v4[IPv4Network("10.1.1.0/24")]] == [3, 2, 1]
    assert [rule.rule_id for rule in policy.v4[IPv4Network("10.1.0.0/16")]] == [2, 1]
    assert [rule.rule_id for rule in policy.v4[IPv4Network("11.0.0.0/8")]] == [4]


def test_omitted_cidr_lands_in_both_families_only():
    policy = compiled(egress("any log", "v6 block 2001:db8::/32"))
    assert set(policy.v4) == {IPv4Network("0.0.0.0/0")}
    assert set(policy.v6) == {IPv6Network("::/0"), IPv6Network("2001:db8::/32")}
    assert simulate(policy, "2001:db8::1", 1, TCP) == (BLOCK, 2)
    assert simulate(policy, "2001:db9::1", 1, TCP) == (LOG, 1)
    assert simulate(policy, "192.0.2.1", 1, TCP) == (LOG, 1)


def test_one_target_with_several_ranges_gives_one_port_rule_each():
    body = ("  egress:\n    - name: r\n      action: block\n      to:\n"
            "        - {cidr: 10.0.0.0/8, ports: [1, \"5-9\", 20], protocol: udp}\n")
    assert compiled(body).v4[IPv4Network("10.0.0.0/8")] == (
        PortRule(1, 1, UDP, BLOCK, 1), PortRule(5, 9, UDP, BLOCK, 1),
        PortRule(20, 20, UDP, BLOCK, 1))


def test_repeated_entries_are_kept_once():
    policy = compiled(egress("a block 10.0.0.0/8") + "    - {name: b, action: block, to: "
                      "[{cidr: 10.1.0.0/16}, {cidr: 10.0.0.0/8}]}\n")
    assert [rule.rule_id for rule in policy.v4[IPv4Network("10.1.0.0/16")]] == [2, 1]
    assert [rule.rule_id for rule in policy.v4[IPv4Network("10.0.0.0/8")]] == [1, 2]


def test_ipv4_mapped_cidr_is_an_ipv4_rule():
    policy = compiled(egress('m block "::ffff:192.0.2.0/120"'))
    assert set(policy.v4) == {IPv4Network("192.0.2.0/24")} and not policy.v6
    assert simulate(policy, "192.0.2.7", 1, UDP) == (BLOCK, 1)
    assert simulate(policy, "::ffff:192.0.2.7", 1, UDP) == (BLOCK, 1)


# --- exec -------------------------------------------------------------------------

def test_exec_kill_beats_log_then_file_order():
    body = egress("e log") + """\
  exec:
    - {name: watch, action: log, match: {names: [nc, curl], paths: [/bin/sh]}}
    - {name: stop, action: kill, match: {names: [nc]}}
    - {name: watch-again, action: log, match: {names: [curl], paths: [/bin/sh]}}
"""
    policy = compiled(body)
    assert policy.rule_names == ("", "e", "watch", "stop", "watch-again")
    assert dict(policy.exec_names) == {"nc": (KILL, 3), "curl": (LOG, 2)}
    assert dict(policy.exec_paths) == {"/bin/sh": (LOG, 2)}


# --- limits and scale ---------------------------------------------------------------

def test_too_many_rules_for_one_prefix_is_a_policy_error():
    ports = ", ".join(str(port) for port in range(1, RULES_PER_PREFIX + 2))
    body = egress("wide block 10.0.0.0/8") + (
        f"    - {{name: many, action: block, to: [{{cidr: 10.1.0.0/16, ports: [{ports}]}}]}}\n")
    with pytest.raises(PolicyError) as caught:
        compiled(body)
    [problem] = caught.value.problems
    assert str(problem).startswith(
        "policy.yaml:9: spec.egress[1].to[0]: more than 64 rules apply to 10.1.0.0/16 "
        "(66 port rules")


def test_inherited_rules_count_towards_the_limit():
    half = ",".join(str(port) for port in range(1, 34))
    body = egress(f"wide block 10.0.0.0/8 [{half}]", f"narrow log 10.1.0.0/16 [{half}]")
    with pytest.raises(PolicyError, match=r"more than 64 rules apply to 10\.1\.0\.0/16"):
        compiled(body)


def test_more_rules_than_16_bit_ids_is_a_policy_error():
    rule = EgressRule("r", BLOCK, (Target((IPv4Network("10.0.0.0/8"),), ALL_PORTS, ANY),), 7)
    policy = Policy("big", LOG, (rule,) * 65536, (), True, {}, "big.yaml")
    with pytest.raises(PolicyError) as caught:
        compile_policy(policy)
    assert str(caught.value.problems[0]).startswith("big.yaml:7: spec: too many rules (65536")


def test_ten_thousand_host_rules_compile():
    rules = [EgressRule(f"h{i}", BLOCK if i % 2 else ALLOW,
                        (Target((IPv4Network((0x0A000000 + i, 32)),), ((443, 443),), TCP),),
                        i + 7)
             for i in range(10_000)]
    rules.append(EgressRule("lan", LOG, (Target((IPv4Network("10.0.0.0/8"),), ALL_PORTS, ANY),),
                            10_007))
    policy = compile_policy(Policy("many", ALLOW, tuple(rules), (), True, {}, "many.yaml"))
    assert len(policy.v4) == 10_001
    assert simulate(policy, "10.0.0.0", 443, TCP) == (ALLOW, 1)
    assert simulate(policy, "10.0.39.15", 443, TCP) == (BLOCK, 0x270F + 1)
    assert simulate(policy, "10.0.39.15", 80, TCP) == (LOG, 10_001)
    assert simulate(policy, "10.0.39.16", 443, TCP) == (LOG, 10_001)
    assert simulate(policy, "11.0.0.1", 443, TCP) == (ALLOW, RULE_NONE)


# --- the columnar compiler against the object-per-rule one it replaced ---------------

def reference_tables(policy):
    """{version: {network: rules}} as the compiler computed them before it
    worked on columns: kept here as the oracle."""
    from collections import defaultdict

    from guard.policy.model import ACTION_RANK
    own = {4: defaultdict(list), 6: defaultdict(list)}
    for rule_id, rule in enumerate(policy.egress, start=1):
        for target in rule.targets:
            for network in target.networks:
                own[network.version][network] += [
                    PortRule(low, high, target.proto, rule.action, rule_id)
                    for low, high in target.ports]
    tables = {}
    for version, networks in own.items():
        for rules in networks.values():
            rules.sort(key=lambda rule: (-ACTION_RANK[rule.action], rule.rule_id))
        flat = {}
        for network, rules in networks.items():
            chain = list(rules)
            for wider in sorted(networks, key=lambda n: -n.prefixlen):
                if wider.prefixlen < network.prefixlen and network.subnet_of(wider):
                    chain += networks[wider]
            flat[network] = tuple(dict.fromkeys(chain))
        tables[version] = flat
    return tables


NETWORKS = [IPv4Network(n) for n in ("0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32",
                                     "10.1.2.4/32", "192.0.2.0/24", "192.0.2.128/25")] + \
    [IPv6Network(n) for n in ("::/0", "2001:db8::/32", "2001:db8::1/128", "fe80::/10")]
targets = st.builds(
    Target,
    networks=st.lists(st.sampled_from(NETWORKS), min_size=1, max_size=3, unique=True).map(tuple),
    ports=st.lists(st.tuples(st.integers(1, 100), st.integers(0, 50)).map(
        lambda p: (p[0], p[0] + p[1])), min_size=1, max_size=3).map(tuple) | st.just(ALL_PORTS),
    proto=st.sampled_from([TCP, UDP, ANY]))
rules = st.lists(st.tuples(st.sampled_from([ALLOW, LOG, BLOCK]),
                           st.lists(targets, min_size=1, max_size=3)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(rules)
def test_tables_are_what_the_former_compiler_made(drawn):
    egress = tuple(EgressRule(f"r{i}", action, tuple(ts), i + 7)
                   for i, (action, ts) in enumerate(drawn))
    policy = Policy("p", LOG, egress, (), True, {}, "p.yaml")
    expected = reference_tables(policy)
    crowded = [n for version in (4, 6) for n, chain in expected[version].items()
               if len(chain) > RULES_PER_PREFIX]
    if crowded:
        with pytest.raises(PolicyError) as caught:
            compile_policy(policy)
        assert len(caught.value.problems) == len(crowded)
        return
    got = compile_policy(policy)
    assert dict(got.v4) == expected[4] and dict(got.v6) == expected[6]
    assert list(got.v4) == list(expected[4]) and list(got.v6) == list(expected[6])
