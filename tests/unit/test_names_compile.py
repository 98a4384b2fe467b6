# SPDX-License-Identifier: Apache-2.0
"""Allow by name, the compiler's share (guard/policy/names.py): host targets
-> the kernel's name tables, what the kernel looks a question up by
(name_key, and a mirror of dns.bpf.c's match_name), the host's resolvers
(guard/workloads/resolvconf.py), and `policy check` on such policies."""
from __future__ import annotations

import random
from ipaddress import IPv4Network, IPv6Network

import pytest
from click.testing import CliRunner

from guard.cli.commands import main
from guard.cli.exitcodes import ExitCode
from guard.kernel.abi import DNS_NAME_MAX, DNS_PORTS, PORT_RULE, RULE_NONE, RULES_PER_PREFIX
from guard.kernel.abi import Action, NameKind, Proto
from guard.policy import fast as policy_fast
from guard.policy.columns import RuleColumns
from guard.policy.compile import RULE_ID_MAX, compile_fail_closed, compile_policy
from guard.policy.load import load_policy, parse_policy
from guard.policy.model import (ACTION_RANK, DNS_RESOLVER_PORTS, DNS_TTL_MAX_DEFAULT,
                                DNS_TTL_MIN_DEFAULT, DnsSettings, EgressRule, Policy,
                                PolicyError, Target)
from guard.policy.names import (NAMES_MAX, RESOLVER_RULE, NameEntry, NameTable, name_id,
                                name_key, resolver_targets, split_pattern)
from guard.workloads import resolvconf
from guard.workloads.resolvconf import READ_MAX, nameservers
from tests.conftest import FIXTURES

ALLOW, LOG, BLOCK = Action.ALLOW, Action.LOG, Action.BLOCK
TCP, UDP, ANY = Proto.TCP, Proto.UDP, Proto.ANY
EXACT, BELOW = NameKind.EXACT, NameKind.BELOW
NAMES_POLICY = FIXTURES / "names-policy.yaml"

# Five lines: what follows starts at line 6.
HEADER = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: t
spec:
"""
# Three lines (6-8): resolvers, then spec.egress from line 9.
DNS = "  dns:\n    resolvers:\n      - cidr: 10.96.0.10/32\n"


def egress(*rules: tuple[str, str, list[tuple[str, str]]]) -> str:
    """An egress section: (name, action, [(host, ports)]), each target on one line."""
    out = ["  egress:\n"]
    for name, action, targets in rules:
        out.append(f"    - name: {name}\n      action: {action}\n      to:\n")
        out += [f"        - {{host: '{host}', ports: {ports}}}\n" for host, ports in targets]
    return "".join(out)


def policy_of(*rules, dns: str = DNS, extra: str = "") -> Policy:
    return parse_policy(HEADER + dns + extra + egress(*rules), "p.yaml", fast=False)


def compiled_names(*rules, dns: str = DNS, extra: str = "", **kw) -> NameTable:
    names = compile_policy(policy_of(*rules, dns=dns, extra=extra), **kw).names
    assert names is not None
    return names


def rules_of(entry: NameEntry) -> list[tuple[int, int, int, Action, int]]:
    """An entry's port rules as (port_lo, port_hi, proto, action, rule_id)."""
    return [(lo, hi, proto, Action(action), rule_id)
            for lo, hi, proto, action, rule_id in PORT_RULE.iter_unpack(entry.rules)]


def entry_of(table: NameTable, pattern: str) -> NameEntry:
    [entry] = [e for e in table.entries if e.pattern == pattern]
    return entry


def problems(text_or_policy, **kw) -> list[str]:
    policy = (text_or_policy if isinstance(text_or_policy, Policy)
              else parse_policy(text_or_policy, "p.yaml", fast=False))
    with pytest.raises(PolicyError) as caught:
        compile_policy(policy, **kw)
    return [str(problem) for problem in caught.value.problems]


# --------------------------------------------------------------------------
# Entries and their ids


def test_each_pattern_of_the_fixture_is_one_entry():
    compiled = compile_policy(load_policy(NAMES_POLICY))
    table = compiled.names
    assert [(e.kind, e.name, e.pattern) for e in table.entries] == [
        (EXACT, "pypi.org", "pypi.org"),
        (BELOW, "pythonhosted.org", "*.pythonhosted.org"),
        (EXACT, "metrics", "metrics"),
        (BELOW, "example.com", "*.example.com")]
    for entry in table.entries:
        assert entry.name_id == name_id(entry.kind, entry.name) != 0
        assert entry.rule_count == len(entry.rules) // PORT_RULE.size >= 1
    assert table.by_id() == {e.name_id: e for e in table.entries}
    assert len(table.by_id()) == 4
    assert rules_of(entry_of(table, "pypi.org")) == [(443, 443, TCP, ALLOW, 1)]
    assert rules_of(entry_of(table, "metrics")) == [(9000, 9100, ANY, LOG, 2)]
    assert rules_of(entry_of(table, "*.example.com")) == [(22, 22, ANY, BLOCK, 3)]


def test_name_ids_are_the_same_in_every_compile_and_generation():
    first = compiled_names(("r", "allow", [("pypi.org", "[443]"), ("*.pypi.org", "[443]")]))
    # another generation: other rules, other order, another action, more names
    later = compiled_names(("x", "block", [("new.example", "[80]")]),
                           ("y", "log", [("*.pypi.org", "[8443]"), ("pypi.org", "[80]")]))
    ids = {e.pattern: e.name_id for e in first.entries}
    assert {e.pattern: e.name_id for e in later.entries if e.pattern in ids} == ids
    # a learned address keeps its name ids across agent restarts and upgrades
    # (pinned maps): the hash is part of the contract
    assert name_id(EXACT, "pypi.org") == 0xF00160518E85DC69
    assert name_id(BELOW, "pythonhosted.org") == 0x3F1B4FAE7A82D2AB
    # the name and the pattern over it are different entries
    assert ids["pypi.org"] != ids["*.pypi.org"]


def test_a_name_id_is_never_zero(monkeypatch):
    class Zero:
        def digest(self) -> bytes:
            return bytes(8)
    monkeypatch.setattr("guard.policy.names.hashlib.blake2b", lambda *a, **kw: Zero())
    assert name_id(EXACT, "anything") == 1


def test_name_ids_of_many_patterns_are_distinct():
    patterns = [(kind, f"h{i}.example") for i in range(2000) for kind in (EXACT, BELOW)]
    assert len({name_id(kind, name) for kind, name in patterns}) == len(patterns)
    assert all(name_id(kind, name) for kind, name in patterns)


@pytest.mark.parametrize("host, kind, name", [
    ("pypi.org", EXACT, "pypi.org"), ("*.pypi.org", BELOW, "pypi.org"), ("*.c", BELOW, "c"),
    ("metrics", EXACT, "metrics")])
def test_split_pattern(host, kind, name):
    assert split_pattern(host) == (kind, name)


# --------------------------------------------------------------------------
# Flattening: an entry carries every rule that applies to what it matches


def test_own_rules_block_then_log_then_allow_then_file_order():
    table = compiled_names(
        ("a1", "allow", [("a.b.c", "[1, 2]")]),
        ("l1", "log", [("a.b.c", "[3]")]),
        ("b1", "block", [("a.b.c", "[4]")]),
        ("a2", "allow", [("a.b.c", "['5-6']")]),
        ("b2", "block", [("a.b.c", "[7]")]))
    assert rules_of(entry_of(table, "a.b.c")) == [
        (4, 4, ANY, BLOCK, 3), (7, 7, ANY, BLOCK, 5), (3, 3, ANY, LOG, 2),
        (1, 1, ANY, ALLOW, 1), (2, 2, ANY, ALLOW, 1), (5, 6, ANY, ALLOW, 4)]


def test_a_name_gets_the_rules_of_each_wider_pattern_most_specific_first():
    table = compiled_names(
        ("widest", "block", [("*.c", "[1]")]),
        ("wide", "allow", [("*.b.c", "[2]")]),
        ("exact", "allow", [("a.b.c", "[3]")]),
        ("below-exact", "log", [("*.a.b.c", "[4]")]),
        ("parent", "allow", [("b.c", "[5]")]),
        ("elsewhere", "block", [("*.d", "[6]"), ("a.b.d", "[7]")]))
    flat = {e.pattern: [rule[0] for rule in rules_of(e)] for e in table.entries}
    assert flat == {
        "*.c": [1],
        "*.b.c": [2, 1],
        "a.b.c": [3, 2, 1],          # a.b.c <- *.b.c <- *.c
        "*.a.b.c": [4, 2, 1],        # a pattern gets its wider patterns' rules
        "b.c": [5, 1],               # *.b.c does not cover b.c
        "*.d": [6],
        "a.b.d": [7, 6],
    }
    # a wider pattern's block does not move ahead of a nearer allow
    assert rules_of(entry_of(table, "a.b.c"))[0][3] == ALLOW


def test_the_same_rule_reached_twice_takes_one_slot():
    table = compiled_names(("r", "allow", [("a.b.c", "[443]"), ("*.b.c", "[443]")]))
    assert rules_of(entry_of(table, "a.b.c")) == [(443, 443, ANY, ALLOW, 1)]


def test_protocols_travel_with_their_rules():
    policy = parse_policy(HEADER + DNS + "  egress:\n    - name: r\n      action: allow\n"
                          "      to:\n        - {host: a.example, ports: [53], protocol: udp}\n"
                          "        - {host: a.example, ports: [443], protocol: tcp}\n",
                          "p.yaml")
    assert rules_of(compile_policy(policy).names.entries[0]) == [
        (53, 53, UDP, ALLOW, 1), (443, 443, TCP, ALLOW, 1)]


@pytest.mark.parametrize("own, wider, query", [
    ([], ["allow"], ALLOW),
    (["block"], ["allow"], ALLOW),          # any rule that allows lets the name be asked for
    (["block", "log"], [], LOG),
    (["block"], ["log"], LOG),
    (["log", "allow"], ["block"], ALLOW),
    (["block"], [], BLOCK),
    (["block"], ["block"], BLOCK),
])
def test_query_action(own, wider, query):
    rules = [(f"o{i}", action, [("a.b.c", f"[{i + 1}]")]) for i, action in enumerate(own)]
    rules += [(f"w{i}", action, [("*.c", f"[{i + 100}]")]) for i, action in enumerate(wider)]
    table = compiled_names(*rules)
    assert entry_of(table, "a.b.c" if own else "*.c").query_action == query


def test_rule_ids_are_the_egress_rules_index_plus_one_whatever_comes_between():
    text = (HEADER + DNS + "  egress:\n"
            "    - {name: cidr-first, action: allow, to: [{cidr: 10.0.0.0/8}]}\n"
            "    - {name: by-name, action: allow, to: [{host: pypi.org, ports: [443]}]}\n"
            "    - {name: cidr-again, action: block, to: [{cidr: 10.1.0.0/16}]}\n"
            "    - {name: both, action: log, to: [{cidr: 10.2.0.0/16}, "
            "{host: '*.pypi.org', ports: [80]}]}\n"
            "  exec:\n    - {name: no-nc, action: kill, match: {names: [nc]}}\n")
    compiled = compile_policy(parse_policy(text, "p.yaml", fast=False))
    names = compiled.names
    assert [rule[4] for e in names.entries for rule in rules_of(e)] == [2, 4]
    assert [compiled.rule_names[rule[4]] for rule in rules_of(entry_of(names, "pypi.org"))] \
        == ["by-name"]
    assert compiled.rule_names == ("", "cidr-first", "by-name", "cidr-again", "both", "no-nc",
                                   RESOLVER_RULE)
    # the resolvers' rule comes last, after the exec rules
    assert names.resolver_rule_id == 6 == len(compiled.rule_names) - 1
    assert compiled.rule_name(names.resolver_rule_id) == "dns-resolvers"
    assert compiled.exec_names == {"nc": (Action.KILL, 5)}


# --------------------------------------------------------------------------
# The kernel's lookup, mirrored: dns.bpf.c match_name


def kernel_table(table: NameTable) -> dict[tuple[NameKind, bytes], NameEntry]:
    """eg_dns_names of one policy: (kind, struct guard_name_key.name) -> entry."""
    return {(entry.kind, name_key(entry.name)): entry for entry in table.entries}


def kernel_match(names: dict[tuple[NameKind, bytes], NameEntry], question: str) -> NameEntry | None:
    """What match_name finds for a question (as read_question leaves it in
    key.name): the exact name; else, blanking the key from the left one
    character at a time (parent_step), at each dot what is left as "*."."""
    key = bytearray(name_key(question))
    found = names.get((EXACT, bytes(key)))
    if found is not None:
        return found
    for position in range(DNS_NAME_MAX - len(question), DNS_NAME_MAX):
        char, key[position] = key[position], 0
        if char == ord("."):
            found = names.get((BELOW, bytes(key)))
            if found is not None:
                return found
    return None


LOOKUP = compiled_names(
    ("r", "allow", [("pypi.org", "[443]"), ("*.pythonhosted.org", "[443]"),
                    ("*.example.com", "[443]"), ("a.b.example.com", "[443]"),
                    ("*.b.example.com", "[443]"), ("metrics", "[9000]"), ("*.c", "[1]")]))

QUESTIONS = {
    "pypi.org": "pypi.org",                             # exact hit
    "www.pypi.org": None,                               # no *.pypi.org
    "files.pythonhosted.org": "*.pythonhosted.org",     # below hit
    "a.b.c.pythonhosted.org": "*.pythonhosted.org",     # any depth below
    "pythonhosted.org": None,                           # *.x does not match x
    "xpythonhosted.org": None,                          # a suffix, not a parent
    "example.com": None,
    "b.example.com": "*.example.com",                   # *.b.example.com is not b.example.com
    "x.b.example.com": "*.b.example.com",               # the nearest pattern
    "a.b.example.com": "a.b.example.com",               # the exact name first
    "deep.a.b.example.com": "*.b.example.com",          # no *.a.b.example.com
    "metrics": "metrics",
    "x.metrics": None,
    "c": None,
    "x.y.z.c": "*.c",
    "org": None,
    # the kernel reads names lower case and without the final dot; making
    # policies so is the reader's job (test_policy_names.py)
    "PyPI.org": None,
    "pypi.org.": None,
}


@pytest.mark.parametrize("question, pattern", QUESTIONS.items())
def test_the_kernels_lookup(question, pattern):
    found = kernel_match(kernel_table(LOOKUP), question)
    assert (found.pattern if found is not None else None) == pattern
    # the agent's own mirror (the payload's host check) agrees
    assert LOOKUP.match(question) == found


def test_the_reader_makes_hosts_what_the_kernel_compares():
    table = compiled_names(("r", "allow", [("PyPI.Org.", "[443]"), ("*.Files.PyPI.org", "[1]")]))
    assert [e.pattern for e in table.entries] == ["pypi.org", "*.files.pypi.org"]
    assert kernel_match(kernel_table(table), "pypi.org").pattern == "pypi.org"
    assert kernel_match(kernel_table(table), "x.files.pypi.org").pattern == "*.files.pypi.org"


def test_name_key_right_aligns_the_name():
    key = name_key("pypi.org")
    assert len(key) == DNS_NAME_MAX
    assert key == b"\0" * (DNS_NAME_MAX - 8) + b"pypi.org"
    assert name_key("a" * (DNS_NAME_MAX - 1)) == b"\0" + b"a" * (DNS_NAME_MAX - 1)


@pytest.mark.parametrize("name", ["", "a" * DNS_NAME_MAX, "a" * 1000, "bücher.example"])
def test_name_key_refuses_what_no_key_holds(name):
    with pytest.raises(ValueError):
        name_key(name)


def reference(policy: Policy, question: str, port: int, proto: Proto) -> tuple[Action, int]:
    """The policy's meaning, read from its rules rather than the tables: the
    nearest pattern (the name, then each parent as "*.") that has a rule
    matching the port wins; within it block, log, allow, then file order."""
    labels = question.split(".")
    nearest = [(EXACT, question)] + [(BELOW, ".".join(labels[cut:]))
                                     for cut in range(1, len(labels))]
    for pattern in nearest:
        matching = [(-ACTION_RANK[rule.action], order, rule.action, index + 1)
                    for order, (index, rule, target, (low, high)) in enumerate(
                        (index, rule, target, ports)
                        for index, rule in enumerate(policy.egress)
                        for target in rule.targets for ports in target.ports)
                    if split_pattern(target.host) == pattern and low <= port <= high
                    and target.proto in (ANY, proto)]
        if matching:
            _rank, _order, action, rule_id = min(matching)
            return action, rule_id
    return policy.default_action, RULE_NONE


def reference_query(policy: Policy, question: str) -> Action | None:
    """What a query for question gets, from the rules: allow if any rule of a
    pattern matching it allows, else log if any logs, else block; None (the
    default action) when no pattern matches it."""
    labels = question.split(".")
    matching = {(EXACT, question)} | {(BELOW, ".".join(labels[cut:]))
                                     for cut in range(1, len(labels))}
    actions = {rule.action for rule in policy.egress for target in rule.targets
               if split_pattern(target.host) in matching}
    if not actions:
        return None
    return ALLOW if ALLOW in actions else LOG if LOG in actions else BLOCK


def kernel_verdict(table: NameTable, question: str, port: int, proto: Proto,
                   default: Action) -> tuple[Action, int]:
    """sock_addr.bpf.c for an address learned under question: the first
    port rule of its entry that matches, else the default."""
    entry = kernel_match(kernel_table(table), question)
    for low, high, rule_proto, action, rule_id in rules_of(entry) if entry else ():
        if low <= port <= high and rule_proto in (ANY, proto):
            return action, rule_id
    return default, RULE_NONE


@pytest.mark.parametrize("seed", range(60))
def test_the_flattened_tables_mean_what_the_rules_say(seed):
    rng = random.Random(seed)
    labels = ["a", "b", "c"]

    def name() -> str:
        return ".".join(rng.choice(labels) for _ in range(rng.randint(1, 3)))

    rules = tuple(
        EgressRule(f"r{i}", rng.choice([ALLOW, LOG, BLOCK]), tuple(
            Target((), tuple(rng.sample([(22, 22), (80, 443), (443, 443), (53, 53)],
                                        rng.randint(1, 2))),
                   rng.choice([ANY, TCP, UDP]), rng.choice(["", "*."]) + name())
            for _ in range(rng.randint(1, 3))), i + 1)
        for i in range(rng.randint(1, 6)))
    policy = Policy("p", rng.choice([LOG, BLOCK]), rules, (), True, {}, "p.yaml")
    table = compile_policy(policy).names
    for _ in range(40):
        question = name() if rng.random() < 0.8 else name() + "." + name()
        for port in (22, 53, 80, 200, 443, 8080):
            for proto in (TCP, UDP):
                expected = reference(policy, question, port, proto)
                assert kernel_verdict(table, question, port, proto, policy.default_action) \
                    == expected, (question, port, proto)
                # the agent's mirror: None where the default applies
                assert (table.verdict(question, port, int(proto))
                        or (policy.default_action, RULE_NONE)) == expected
        entry = kernel_match(kernel_table(table), question)
        assert table.match(question) == entry
        query = entry.query_action if entry is not None else None
        assert query == reference_query(policy, question), question


# --------------------------------------------------------------------------
# Resolvers, TTL bounds and limits


def test_ttl_bounds_come_from_spec_dns():
    table = compiled_names(("r", "allow", [("a.example", "[443]")]),
                           dns=DNS + "    ttl: {min: 5, max: 120}\n")
    assert (table.ttl_min, table.ttl_max) == (5, 120)
    table = compiled_names(("r", "allow", [("a.example", "[443]")]))
    assert (table.ttl_min, table.ttl_max) == (DNS_TTL_MIN_DEFAULT, DNS_TTL_MAX_DEFAULT)


def test_a_ttl_range_given_upside_down_in_code_is_never_empty():
    policy = Policy("p", BLOCK, (EgressRule("r", ALLOW, (Target((), ((443, 443),), ANY,
                                                                "a.example"),), 1),),
                    (), True, {}, "p.yaml", dns=DnsSettings(resolvers=(), ttl_min=300,
                                                             ttl_max=10))
    table = compile_policy(policy).names
    assert (table.ttl_min, table.ttl_max) == (300, 300)


def test_resolvers_of_spec_dns_win_over_the_hosts():
    host = resolver_targets((IPv4Network("192.0.2.53/32"),))
    table = compile_policy(load_policy(NAMES_POLICY), default_resolvers=host).names
    assert table.resolvers == (IPv4Network("10.96.0.10/32"), IPv6Network("fd00::53/128"))
    assert table.resolver_ports == (53, 5353)


def test_without_spec_dns_the_hosts_nameservers_are_trusted_on_53(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# generated\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n"
                    "search example\n")
    host = resolver_targets(nameservers(str(conf)))
    assert host == (Target((IPv4Network("192.0.2.53/32"),), DNS_RESOLVER_PORTS, ANY),
                    Target((IPv6Network("fe80::1/128"),), DNS_RESOLVER_PORTS, ANY))
    table = compiled_names(("r", "allow", [("a.example", "[443]")]), dns="",
                           default_resolvers=host)
    assert table.resolvers == (IPv4Network("192.0.2.53/32"), IPv6Network("fe80::1/128"))
    assert table.resolver_ports == (53,)


def test_no_resolver_anywhere_trusts_nobody():
    table = compiled_names(("r", "allow", [("a.example", "[443]")]), dns="")
    assert table.resolvers == () and table.resolver_ports == ()
    assert len(table.entries) == 1          # the names stay, closed


def test_the_same_resolver_twice_is_one():
    table = compiled_names(("r", "allow", [("a.example", "[443]")]),
                           dns="  dns:\n    resolvers:\n      - cidr: 10.0.0.1/32\n"
                               "      - {cidr: 10.0.0.1/32, ports: [53, 5353]}\n")
    assert table.resolvers == (IPv4Network("10.0.0.1/32"),)
    assert table.resolver_ports == (53, 5353)


RESOLVERS = "  dns:\n    resolvers:\n"   # lines 6 and 7: problems name line 7


@pytest.mark.parametrize("resolvers, ports", [
    ("      - {cidr: 10.0.0.1/32, ports: [53, 5353, 853, 54]}\n", (53, 5353, 853, 54)),
    ("      - {cidr: 10.0.0.1/32, ports: ['53-56']}\n", (53, 54, 55, 56)),
    ("      - {cidr: 10.0.0.1/32, ports: [53, 54]}\n"
     "      - {cidr: 10.0.0.2/32, ports: [54, 55, 53, 56]}\n", (53, 54, 55, 56)),
])
def test_up_to_four_resolver_ports(resolvers, ports):
    table = compiled_names(("r", "allow", [("a.example", "[443]")]), dns=RESOLVERS + resolvers)
    assert table.resolver_ports == ports and len(ports) == DNS_PORTS


@pytest.mark.parametrize("resolvers", [
    "      - {cidr: 10.0.0.1/32, ports: [53, 54, 55, 56, 57]}\n",
    "      - {cidr: 10.0.0.1/32, ports: ['53-57']}\n",            # a range wider than 4
    "      - {cidr: 10.0.0.1/32, ports: ['1-65535']}\n",
    "      - {cidr: 10.0.0.1/32, ports: [53, 54, 55]}\n"
    "      - {cidr: 10.0.0.2/32, ports: [56, 57]}\n",             # 5 over all resolvers
])
def test_more_than_four_resolver_ports_is_a_problem_of_spec_dns_resolvers(resolvers):
    assert problems(HEADER + RESOLVERS + resolvers
                    + egress(("r", "allow", [("a.example", "[443]")]))) == [
        "p.yaml:7: spec.dns.resolvers: resolvers may use at most 4 ports "
        "(no guarded process may bind them)"]


def test_resolver_ports_do_not_matter_without_host_targets():
    text = (HEADER + RESOLVERS + "      - {cidr: 10.0.0.1/32, ports: ['1-65535']}\n"
            "  egress:\n    - {name: r, action: allow, to: [{cidr: 10.0.0.0/8}]}\n")
    assert compile_policy(parse_policy(text, "p.yaml")).names is None


def test_raw_sockets_allowed_with_host_targets_is_a_problem_of_the_host():
    text = (HEADER + DNS + "  sockets:\n    raw: allow\n  egress:\n"
            "    - {name: cidrs, action: allow, to: [{cidr: 10.0.0.0/8}]}\n"
            "    - name: names\n      action: allow\n      to:\n"
            "        - {cidr: 10.1.0.0/16}\n        - {host: pypi.org, ports: [443]}\n")
    [problem] = problems(text)
    assert problem.startswith("p.yaml:13: spec.egress[1].to[1].host: host targets need raw "
                              "sockets denied (spec.sockets.raw: deny)"), problem
    # raw sockets allowed without names is still a valid policy
    plain = HEADER + "  sockets:\n    raw: allow\n"
    assert compile_policy(parse_policy(plain, "p.yaml")).deny_raw_sockets is False


def test_all_problems_of_the_names_at_once_by_line():
    many = "[" + ", ".join(str(p) for p in range(1000, 1000 + RULES_PER_PREFIX + 1)) + "]"
    text = (HEADER + RESOLVERS + "      - {cidr: 10.0.0.1/32, ports: ['1-9']}\n"
            "  sockets:\n    raw: allow\n" + egress(("r", "allow", [("a.example", many)])))
    found = problems(text)
    assert [p.split(": ")[0] for p in found] == ["p.yaml:7", "p.yaml:12", "p.yaml:12"]
    assert any("raw sockets denied" in p for p in found)
    assert any(f"more than {RULES_PER_PREFIX} rules apply to a.example" in p for p in found)


def test_more_than_64_rules_applying_to_one_name():
    half = RULES_PER_PREFIX // 2
    wide = "[" + ", ".join(str(p) for p in range(1, half + 1)) + "]"
    own = "[" + ", ".join(str(p) for p in range(1000, 1000 + half)) + "]"
    # 64 exactly: fits
    table = compiled_names(("w", "allow", [("*.example", wide)]),
                           ("o", "allow", [("a.example", own)]))
    assert entry_of(table, "a.example").rule_count == RULES_PER_PREFIX
    one_more = own[:-1] + ", 2000]"
    assert problems(HEADER + DNS + egress(("w", "allow", [("*.example", wide)]),
                                          ("o", "allow", [("a.example", one_more)]))) == [
        f"p.yaml:14: spec.egress[1].to[0].host: more than {RULES_PER_PREFIX} rules apply to "
        f"a.example ({RULES_PER_PREFIX + 1} port rules, counting those of wider *. patterns)"]


def test_more_names_than_a_policy_may_hold():
    rules = tuple(EgressRule(f"r{i}", ALLOW, (Target((), ((443, 443),), ANY, f"h{i}.example"),),
                             i + 10) for i in range(NAMES_MAX + 1))
    policy = Policy("p", BLOCK, rules, (), True, {}, "p.yaml", dns=DnsSettings(resolvers=()))
    assert problems(policy) == [f"p.yaml:{NAMES_MAX + 10}: spec.egress[{NAMES_MAX}].to[0].host: "
                                f"more than {NAMES_MAX} host names in one policy"]
    fits = Policy("p", BLOCK, rules[:-1], (), True, {}, "p.yaml", dns=DnsSettings(resolvers=()))
    assert len(compile_policy(fits).names.entries) == NAMES_MAX


# --------------------------------------------------------------------------
# Policies without names compile as before


def test_a_policy_without_host_targets_has_no_names_and_the_same_rule_names():
    text = (HEADER + "  egress:\n    - {name: a, action: allow, to: [{cidr: 10.0.0.0/8}]}\n"
            "    - {name: b, action: block, to: [{cidr: 10.1.0.0/16, ports: [22]}]}\n"
            "  exec:\n    - {name: no-nc, action: kill, match: {names: [nc]}}\n")
    plain = compile_policy(parse_policy(text, "p.yaml"))
    assert plain.names is None
    assert plain.rule_names == ("", "a", "b", "no-nc")
    # a dns section alone adds nothing: no names, no resolvers' rule
    with_dns = compile_policy(parse_policy(text.replace("spec:\n", "spec:\n" + DNS), "p.yaml"))
    assert with_dns.names is None and with_dns.rule_names == plain.rule_names
    assert (with_dns.ipv4, with_dns.ipv6, with_dns.exec_names) == (
        plain.ipv4, plain.ipv6, plain.exec_names)


def test_the_fail_closed_generation_of_a_names_policy_has_no_names():
    text = (HEADER + DNS + "  failClosed:\n    allow:\n      - cidr: 10.96.0.10/32\n"
            + egress(("r", "allow", [("pypi.org", "[443]")])))
    policy = parse_policy(text, "p.yaml")
    fail_closed = compile_fail_closed(policy)
    assert fail_closed.names is None and RESOLVER_RULE not in fail_closed.rule_names
    assert compile_policy(policy).names is not None


def test_the_fast_readers_columns_compile_without_building_rules():
    rules = "".join(f"    - name: h{i}\n      action: block\n      to:\n"
                    f"        - cidr: 10.2.{i // 256}.{i % 256}/32\n          ports: [443]\n"
                    for i in range(300))
    [policy] = policy_fast.read(HEADER + "  egress:\n" + rules, "p.yaml")
    assert isinstance(policy.egress, RuleColumns)
    compiled = compile_policy(policy, default_resolvers=resolver_targets(
        (IPv4Network("192.0.2.53/32"),)))
    assert compiled.names is None and not policy.egress.built
    assert len(compiled.rule_names) == 301 and RESOLVER_RULE not in compiled.rule_names
    assert len(compiled.v4) == 300


def test_rule_ids_never_pass_the_limit_with_the_resolvers_rule():
    assert RULE_ID_MAX == 0xFFFF
    table = compiled_names(("r", "allow", [("a.example", "[443]")]))
    assert 0 < table.resolver_rule_id <= RULE_ID_MAX


# --------------------------------------------------------------------------
# The host's nameservers (guard/workloads/resolvconf.py)


def resolv(tmp_path, text: str | bytes) -> tuple:
    path = tmp_path / "resolv.conf"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return nameservers(str(path))


def test_nameservers_in_file_order_comments_skipped(tmp_path):
    assert resolv(tmp_path, "# nameserver 10.9.9.9\n; nameserver 10.8.8.8\n"
                            "nameserver 10.0.0.2\n  nameserver\t10.0.0.1   # the second\n"
                            "options edns0 trust-ad\nsearch example.com\n") == (
        IPv4Network("10.0.0.2/32"), IPv4Network("10.0.0.1/32"))


def test_ipv6_nameservers_lose_their_zone(tmp_path):
    assert resolv(tmp_path, "nameserver fe80::1%eth0\nnameserver 2001:db8::53\n"
                            "nameserver fe80::2%25\n") == (
        IPv6Network("fe80::1/128"), IPv6Network("2001:db8::53/128"), IPv6Network("fe80::2/128"))


def test_an_ipv4_mapped_nameserver_is_its_ipv4_address(tmp_path):
    # a dual-stack socket sends to it over IPv4: the answers come from 10.0.0.1
    assert resolv(tmp_path, "nameserver ::ffff:10.0.0.1\nnameserver 10.0.0.1\n") == (
        IPv4Network("10.0.0.1/32"),)


@pytest.mark.parametrize("line", [
    "nameserver", "nameserver not-an-address", "nameserver 10.0.0", "nameserver 10.0.0.1/24",
    "nameserver 10.0.0.256", "nameserver %eth0", "nameservers 10.0.0.1", "NAMESERVER 10.0.0.1",
    "nameserver10.0.0.1", "#nameserver 10.0.0.1", "nameserver [::1]", "nameserver \xff\xfe",
])
def test_malformed_lines_are_skipped(tmp_path, line):
    found = resolv(tmp_path, f"nameserver 10.0.0.9\n{line}\nnameserver 10.0.0.8\n")
    assert found[0] == IPv4Network("10.0.0.9/32") and found[-1] == IPv4Network("10.0.0.8/32")
    assert len(found) == 2


def test_a_file_that_is_not_text(tmp_path):
    assert resolv(tmp_path, b"\xff\x00garbage\nnameserver 10.0.0.1\n\x00\x01") == (
        IPv4Network("10.0.0.1/32"),)


def test_duplicates_count_once_in_first_order(tmp_path):
    assert resolv(tmp_path, "nameserver 10.0.0.2\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n"
                            "nameserver 2001:db8::1\nnameserver 2001:DB8:0::1\n") == (
        IPv4Network("10.0.0.2/32"), IPv4Network("10.0.0.1/32"), IPv6Network("2001:db8::1/128"))


def test_a_missing_or_unreadable_file_has_no_nameservers(tmp_path):
    assert nameservers(str(tmp_path / "missing")) == ()
    assert nameservers(str(tmp_path)) == ()           # a directory
    assert resolv(tmp_path, "") == ()


def test_the_default_path_is_the_hosts():
    assert resolvconf.RESOLV_CONF == "/etc/resolv.conf"
    assert nameservers.__defaults__ == ("/etc/resolv.conf",)


def test_only_the_first_64_kib_are_read(tmp_path):
    assert READ_MAX == 64 * 1024
    first = "nameserver 10.0.0.1\n"
    padding = "#" * 1000 + "\n"
    text = first + padding * (READ_MAX // len(padding) + 1) + "nameserver 10.0.0.2\n"
    assert len(text) > READ_MAX
    assert resolv(tmp_path, text) == (IPv4Network("10.0.0.1/32"),)
    huge = first + "# " + "x" * (8 << 20) + "\nnameserver 10.0.0.3\n"
    assert resolv(tmp_path, huge) == (IPv4Network("10.0.0.1/32"),)


def test_a_line_cut_at_64_kib_is_not_read_as_another_address(tmp_path):
    line = "nameserver 10.0.0.123\n"
    # the read ends inside the last line: "nameserver 10.0.0.12"
    before = "#" * (READ_MAX - 21) + "\n"
    text = before + line
    assert len(before) + len("nameserver 10.0.0.12") == READ_MAX
    assert resolv(tmp_path, text) == ()
    # a line that ends exactly at the limit is whole
    whole = "#" * (READ_MAX - len(line) - 1) + "\n" + line
    assert len(whole) == READ_MAX
    assert resolv(tmp_path, whole) == (IPv4Network("10.0.0.123/32"),)
    assert resolv(tmp_path, whole + "nameserver 10.0.0.7\n") == (IPv4Network("10.0.0.123/32"),)
    # the same file, smaller than the limit, is read whole
    assert resolv(tmp_path, "#\n" + line) == (IPv4Network("10.0.0.123/32"),)


# --------------------------------------------------------------------------
# egress-guard policy check


@pytest.fixture
def runner():
    return CliRunner()


def test_policy_check_of_a_names_policy_is_ok(runner, tmp_path):
    path = tmp_path / "names.yaml"
    path.write_text(HEADER + DNS + egress(("site", "allow", [("pypi.org", "[443]"),
                                                             ("*.pythonhosted.org", "[443]")])))
    result = runner.invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout == (f"{path}: ok (policy 't': 1 egress rule(s), 0 exec rule(s), "
                             "0 prefix(es), 2 name target(s))\n")
    assert result.stderr == ""


def test_policy_check_of_a_names_policy_without_resolvers_on_a_host_without_any(
        runner, tmp_path, monkeypatch):
    monkeypatch.setattr(resolvconf, "nameservers", lambda *a: ())
    path = tmp_path / "names.yaml"
    path.write_text(HEADER + egress(("site", "allow", [("pypi.org", "[443]")])))
    result = runner.invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == ExitCode.OK, result.output
    assert "1 name target(s)" in result.stdout


def test_policy_check_of_raw_sockets_with_host_targets_fails_with_file_and_line(
        runner, tmp_path):
    path = tmp_path / "raw.yaml"
    path.write_text(HEADER + DNS + "  sockets:\n    raw: allow\n"
                    + egress(("site", "allow", [("pypi.org", "[443]")])))
    result = runner.invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == ExitCode.FAILURE
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{path}:12: spec.egress[0].to[0].host: host targets need raw "
                               "sockets denied (spec.sockets.raw: deny)"), lines
    assert lines[-1] == "egress-guard: error: invalid policy (1 problem(s))"
    assert len(lines) == 2


def test_policy_check_of_too_many_resolver_ports(runner, tmp_path):
    path = tmp_path / "ports.yaml"
    path.write_text(HEADER + RESOLVERS + "      - {cidr: 10.0.0.1/32, ports: ['53-60']}\n"
                    + egress(("site", "allow", [("pypi.org", "[443]")])))
    result = runner.invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == ExitCode.FAILURE
    assert result.stderr.splitlines()[0] == (
        f"{path}:7: spec.dns.resolvers: resolvers may use at most 4 ports "
        "(no guarded process may bind them)")
