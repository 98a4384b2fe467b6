# SPDX-License-Identifier: Apache-2.0
"""The fast reader (guard/policy/fast.py) against the careful one: where it
accepts a file it must mean exactly what the careful reader means, down to
the line of every rule; everywhere else it must step aside."""
from __future__ import annotations

import ipaddress
import random
import sys

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from guard.policy import columns
from guard.policy import fast as policy_fast
from guard.policy.columns import RuleColumns
from guard.policy.compile import compile_policy
from guard.policy.model import PolicyError
from guard.policy.load import parse_policies
from tests.conftest import FIXTURES, ROOT

sys.path.insert(0, str(ROOT / "bench"))
from reload import write_policy  # noqa: E402  (the benchmark's 10,000-rule file)

HEADER = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: t
spec:
  defaultAction: log
"""


def outcome(text: str, fast: bool):
    try:
        return parse_policies(text, "p.yaml", fast=fast)
    except PolicyError as exc:
        return [str(problem) for problem in exc.problems]


def same_as_careful(text: str) -> bool:
    """Both readers agree (policies or problems); True if the fast reader
    read the file itself."""
    careful = outcome(text, fast=False)
    assert outcome(text, fast=True) == careful
    read = policy_fast.read(text, "p.yaml")
    if read is None:
        return False
    assert isinstance(careful, tuple), careful  # it accepted only what is valid
    for policy, expected in zip(read, careful):
        # compiled from the columns first, before anything builds the rules
        assert not isinstance(policy.egress, RuleColumns) or not policy.egress.built
        try:
            compiled = compile_policy(expected)
        except PolicyError as exc:
            with pytest.raises(PolicyError) as caught:
                compile_policy(policy)
            assert caught.value.problems == exc.problems
        else:
            assert compile_policy(policy) == compiled
    assert read == careful
    return True


# --- the files the project ships and tests with -------------------------------------

@pytest.mark.parametrize("path", [FIXTURES / "example-policy.yaml",
                                  ROOT / "guard" / "data" / "demo-policy.yaml",
                                  ROOT / "guard" / "data" / "default-policy.yaml"],
                         ids=lambda p: p.name)
def test_shipped_policies(path):
    same_as_careful(path.read_text())


def test_example_policy_is_read_fast():
    assert same_as_careful((FIXTURES / "example-policy.yaml").read_text())


def test_the_benchmark_policy_of_ten_thousand_rules(tmp_path):
    text = write_policy(tmp_path / "big.yaml", 10_000, "big").read_text()
    assert same_as_careful(text)


# --- layouts it reads, and the ones it leaves to the careful reader ------------------

def egress(body: str) -> str:
    return HEADER + "  egress:\n" + body


RULE = "    - name: r{i}\n      action: block\n      to:\n        - cidr: 10.0.0.{i}/32\n"
LAYOUTS = {
    "one target, no ports": egress("".join(RULE.format(i=i) for i in range(5))),
    "flow ports": egress("".join(RULE.format(i=i) + "          ports: [443, \"8000-8080\"]\n"
                                 for i in range(5))),
    "ports and protocol": egress("".join(
        RULE.format(i=i) + "          ports: ['53']\n          protocol: udp\n"
        for i in range(5))),
    "block ports": egress("".join(RULE.format(i=i) + "          ports:\n            - 80\n"
                                  "            - 443\n" for i in range(3))),
    "block ports, indentless": egress("".join(RULE.format(i=i) + "          ports:\n"
                                              "          - 80\n" for i in range(3))),
    "yaml.safe_dump: indentless, action first, block ports": yaml.safe_dump({
        "apiVersion": "egress-guard/v1", "kind": "EgressPolicy", "metadata": {"name": "t"},
        "spec": {"defaultAction": "log", "egress": [
            {"name": f"r{i}", "action": "allow",
             "to": [{"cidr": f"10.0.{i}.0/24", "ports": [22, 443]}]} for i in range(5)]}}),
    "yaml.safe_dump, flow ports": yaml.safe_dump({
        "apiVersion": "egress-guard/v1", "kind": "EgressPolicy", "metadata": {"name": "t"},
        "spec": {"egress": [{"name": f"r{i}", "action": "block",
                             "to": [{"cidr": f"10.1.{i}.1/32", "ports": [443]}]}
                            for i in range(5)]}}, default_flow_style=None),
    "comments and blank lines": egress(
        "    # the hosts\n\n    - name: r1   # first\n      action: block\n\n      to:\n"
        "        - cidr: 10.0.0.1/32  # a host\n  # stray\n          ports: [443]\n"
        "    - name: r2\n      action: log\n      to:\n        - cidr: 10.0.0.2\n"),
    "trailing spaces": egress("    - name: r1 \n      action: block\n      to: \n"
                              "        - cidr: 10.0.0.1/32\n"),
    "several targets": egress(
        "    - name: r1\n      action: block\n      to:\n        - cidr: 10.0.0.0/8\n"
        "          ports: [22]\n        - cidr: \"2001:db8::/32\"\n        - {}\n"
        "        - protocol: udp\n    - name: r2\n      action: allow\n      to:\n"
        "        - cidr: 10.1.0.0/16\n"),
    "no cidr, {}": egress("    - name: r1\n      action: block\n      to:\n        - {}\n"
                          "    - name: r2\n      action: log\n      to:\n"
                          "        - ports: [1-1024]\n"),
    "ipv6 and mapped": egress(
        "    - name: r1\n      action: block\n      to:\n        - cidr: ::1/128\n"
        "    - name: r2\n      action: block\n      to:\n        - cidr: '::ffff:10.0.0.0/104'\n"
        "    - name: r3\n      action: block\n      to:\n        - cidr: fe80::/10\n"),
    "quoted names and actions": egress(
        "    - name: \"r1\"\n      action: 'block'\n      to:\n        - cidr: 10.0.0.1\n"
        "    - name: '123'\n      action: \"log\"\n      to:\n        - cidr: 10.0.0.2\n"),
    "exec rules after": egress("".join(RULE.format(i=i) for i in range(3)))
    + "  exec:\n    - name: x\n      action: kill\n      match: {names: [nc]}\n",
    "no newline at the end": egress("".join(RULE.format(i=i) for i in range(3)))[:-1],
    "two documents": egress("".join(RULE.format(i=i) for i in range(3))) + "---\n"
    + egress("".join(RULE.format(i=i) for i in range(3))).replace("name: t", "name: u"),
    "prefix lengths with leading zeros": egress(
        "    - name: r1\n      action: block\n      to:\n        - cidr: 10.0.0.0/08\n"
        "    - name: r2\n      action: block\n      to:\n        - cidr: 10.0.0.0/032\n"),
    "overlapping networks": egress(
        "    - name: wide\n      action: block\n      to:\n        - cidr: 10.0.0.0/8\n"
        "    - name: host\n      action: allow\n      to:\n        - cidr: 10.1.2.3/32\n"
        "          ports: [80]\n    - name: same\n      action: log\n      to:\n"
        "        - cidr: 10.0.0.0/8\n"),
}


@pytest.mark.parametrize("text", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_layouts_it_reads(text):
    assert same_as_careful(text)


def rule_of_the_shape(cidr: str = "10.9.0.1/32", name: str = "x", action: str = "block",
                      ports: str = "[443]") -> str:
    """One rule in one_shape()'s layout, with the values given."""
    return (f"    - name: {name}\n      action: {action}\n      to:\n"
            f"        - cidr: {cidr}\n          ports: {ports}\n")


def one_shape(count: int, **changes) -> str:
    """A program's list: every rule like the first but for name and cidr;
    changes: rule index -> its text instead."""
    rules = [rule_of_the_shape(f"10.2.{i // 256}.{i % 256}/32", name=f"h{i}")
             for i in range(count)]
    for index, text in changes.items():
        rules[int(index[1:])] = text
    return egress("".join(rules))


ONE_SHAPE = {
    "one shape": one_shape(300),
    "another action": one_shape(300, r7=rule_of_the_shape(action="log")),
    "another port, last": one_shape(300, r299=rule_of_the_shape(ports="[80]")),
    "a second target": one_shape(300, r5=rule_of_the_shape() + "        - cidr: 10.9.0.2/32\n"),
    "no length, or another": one_shape(300, r3=rule_of_the_shape("10.9.0.1"),
                                       r4=rule_of_the_shape("10.9.0.0/24", name="y")),
    "two slashes": one_shape(300, r9=rule_of_the_shape("10.9.0.1/32/32")),
    "a quoted cidr": one_shape(300, r9=rule_of_the_shape('"10.9.0.1/32"')),
    "a slash before the length": one_shape(300, r9=rule_of_the_shape("10.9.0/1/32")),
    "a name on the cidr line's column": one_shape(300, r2="    - name: x\n      action: block\n"
                                                          "      to:\n        - name: 10.9.0.1/32\n"
                                                          "          ports: [443]\n"),
    "a comment after the list": one_shape(300) + "  # the end\n",
    "exec rules after": one_shape(300)
    + "  exec:\n    - name: x\n      action: kill\n      match: {names: [nc]}\n",
    "a second document alike": one_shape(300) + "---\n" + one_shape(300).replace("name: t", "name: u"),
    "without a cidr": egress("".join(f"    - name: p{i}\n      action: log\n      to:\n"
                                     f"        - ports: [{i + 1}]\n" for i in range(300))),
    "action first": egress("".join(f"    - action: allow\n      name: a{i}\n      to:\n"
                                   f"        - cidr: 10.3.0.{i}\n" for i in range(200))),
    "duplicate names": one_shape(300, r8=rule_of_the_shape(name="h7")),
    "a host bit set": one_shape(300, r6=rule_of_the_shape("10.9.0.1/24")),
    # a line's head again inside its value (names and cidrs are cut after the head)
    "a name's head in a name": one_shape(300, r4=rule_of_the_shape(name="x    - name: y")),
    "a cidr's head in a cidr": one_shape(300, r4=rule_of_the_shape("10.9.0.1        - cidr: 1")),
}


@pytest.mark.parametrize("text", ONE_SHAPE.values(), ids=ONE_SHAPE.keys())
def test_lists_of_one_shape(text):
    """Read a column at a time (columns._constant_run) where every rule
    has the first one's shape; the same result as the careful reader always."""
    same_as_careful(text)


def test_a_list_of_one_shape_is_read_by_columns(monkeypatch):
    runs = []
    original = columns._run
    monkeypatch.setattr(columns, "_run", lambda *args: runs.append(args[0]) or original(*args))
    assert policy_fast.read(ONE_SHAPE["one shape"], "p.yaml") is not None
    assert runs == []   # no regular expression per rule
    assert policy_fast.read(ONE_SHAPE["another action"], "p.yaml") is not None
    assert runs   # the template's run read it


def test_the_lines_read_are_freed_when_the_model_is_built():
    """The 1,500 lines read stay referenced until the model is built (after
    the switch), not freed while the agent reads and switches."""
    [policy] = policy_fast.read(ONE_SHAPE["one shape"], "p.yaml")
    rules = policy.egress._rules
    lines, _columns = rules.scrap
    assert len(lines) >= 300 * 5 and lines[0] == "    - name: h0"
    compile_policy(policy)
    assert rules.scrap is not None and not policy.egress.built
    assert len(policy.egress) == 300 and not policy.egress.built
    [built] = policy_fast.with_rules((policy,))
    assert isinstance(built.egress, tuple) and rules.scrap is None
    assert built.egress[0].name == "h0" and built == policy


NOT_MINE = {
    "a plain name YAML reads as a number": egress(RULE.format(i=1).replace("r1", "123")),
    "a plain name YAML reads as a boolean": egress(RULE.format(i=1).replace("r1", "no")),
    "duplicate rule names": egress(RULE.format(i=1) * 2),
    "duplicate of an exec rule": egress(RULE.format(i=1))
    + "  exec:\n    - name: r1\n      action: kill\n      match: {names: [nc]}\n",
    "host bits": egress(RULE.format(i=1).replace("/32", "/24")),
    "bad port": egress(RULE.format(i=1) + "          ports: [70000]\n"),
    "reversed range": egress(RULE.format(i=1) + "          ports: [\"9-3\"]\n"),
    "octal-looking port": egress(RULE.format(i=1) + "          ports: [0443]\n"),
    "bad action": egress(RULE.format(i=1).replace("block", "explode")),
    "unknown key": egress(RULE.format(i=1) + "          prots: [1]\n"),
    "keys out of order": egress("    - name: r1\n      to:\n        - cidr: 10.0.0.1\n"
                                "      action: block\n"),
    "tab": egress(RULE.format(i=1)).replace("      action", "\taction"),
    "CRLF": egress(RULE.format(i=1)).replace("\n", "\r\n"),
    "anchor": egress(RULE.format(i=1).replace("r1", "&a r1")),
    "egress in a block scalar": HEADER + "  selector:\n    containerNames:\n      - |\n"
    "        egress:\n          - name: r1\n            action: block\n            to:\n"
    "              - cidr: 10.0.0.1\n",
    "a rule that is not a mapping": egress(RULE.format(i=1) + "    - just-a-string\n"),
    "too many rules for a prefix": egress("".join(
        f"    - name: r{i}\n      action: block\n      to:\n        - cidr: 10.0.0.0/8\n"
        for i in range(65))),
}


@pytest.mark.parametrize("text", NOT_MINE.values(), ids=NOT_MINE.keys())
def test_what_it_leaves_to_the_careful_reader(text):
    same_as_careful(text)


def test_problems_in_a_large_file_name_their_line(tmp_path):
    path = write_policy(tmp_path / "big.yaml", 2000, "big")
    lines = path.read_text().splitlines(keepends=True)
    bad = 8 + 5 * 1234 + 3   # the cidr line of rule 1234
    lines[bad - 1] = lines[bad - 1].replace("/32", "/33")
    with pytest.raises(PolicyError) as caught:
        parse_policies("".join(lines), "big.yaml")
    assert [str(p) for p in caught.value.problems] == [
        f"big.yaml:{bad}: spec.egress[1234].to[0].cidr: invalid CIDR "
        f"'{lines[bad - 1].split()[-1]}'"]


# --- mutations: whatever it accepts, the careful reader reads the same way ---------------

def varied_policy(seed: int) -> str:
    rng = random.Random(seed)
    rules = []
    for i in range(8):
        address = ipaddress.IPv4Address(0x0A000000 + rng.randrange(1 << 16) * 256)
        target = f"        - cidr: {address}/24\n"
        if rng.random() < 0.5:
            target += f"          ports: [{rng.randrange(1, 65536)}]\n"
        if rng.random() < 0.3:
            target += "          protocol: tcp\n"
        rules.append(f"    - name: r{i}\n      action: {rng.choice(['allow', 'log', 'block'])}\n"
                     f"      to:\n{target}")
    return egress("".join(rules)) + "  sockets:\n    raw: deny\n"


ALPHABET = " \n-:#'\"[]{},./0123456789abrnxy\t&*!|>"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 50), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3),
                                              st.sampled_from(ALPHABET)),
                                    min_size=1, max_size=3))
# a blank line, then a target's `ports:` at the start of a line: not the target's
@example(seed=0, edits=[(5191, 3, "\n")])
def test_mutated_policies(seed, edits):
    text = varied_policy(seed)
    for position, length, character in edits:
        position %= len(text) + 1
        text = text[:position] + character + text[position + length:]
    same_as_careful(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 50), st.integers(0, 10_000), st.integers(1, 40))
def test_lines_moved_or_dropped(seed, at, size):
    lines = varied_policy(seed).splitlines(keepends=True)
    at %= len(lines)
    moved = lines[at:at + size // 8 + 1]
    rest = lines[:at] + lines[at + size // 8 + 1:]
    where = (at * 7 + size) % (len(rest) + 1)
    same_as_careful("".join(rest[:where] + moved + rest[where:]))


# --- generated layouts: every shape and spelling the fast reader knows, and near misses ---

# (valid spellings, spellings the careful reader refuses or reads otherwise)
NAMES = (["r", '"r"', "'r'", "a_b", "r.x"], ["no", "yes", "on", "null", "~", "123", "1.5",
                                              "0b1", "0x1f", "2020-01-01", "r-", "R", '"123"'])
ACTIONS = (["allow", "log", "block", '"block"', "'log'"], ["kill", "Block", "~"])
CIDRS = (["10.0.0.1", "10.0.0.0/8", '"10.0.0.0/8"', "'10.1.0.0/16'", "::1", '"::1/128"',
          "::ffff:10.0.0.0/104", "fe80::/10", "0.0.0.0/0", "1.2.3.4/032", "10.9.8.7/32"],
         ["10.0.0.1/24", "1.2.3.4/33", "1.5", "12:30", "01.2.3.4", "1:2:3:4:5:6:7:8",
          "[10.0.0.1]"])
PORTS = (["443", '"443"', "'8000-8080'", "8000-8080", "65535", "1"],
         ["0", "70000", "0443", '"9-3"', "true", "1e3"])
PROTOCOLS = (["tcp", "udp", "any", '"tcp"'], ["icmp"])


def mostly(draw, choices) -> str:
    """A valid spelling nine times in ten."""
    valid, invalid = choices
    return draw(st.sampled_from(valid if draw(st.integers(0, 9)) else invalid))


@st.composite
def generated_policies(draw):
    indent = draw(st.sampled_from([2, 4]))                  # the rules' dash column
    action_first = draw(st.booleans())
    comment = draw(st.sampled_from(["", "", "  # note", " "]))
    lines = HEADER.splitlines()
    lines.append("  egress:" + draw(st.sampled_from(["", "", "  # rules"])))
    for index in range(draw(st.integers(1, 5))):
        name = mostly(draw, NAMES)
        if draw(st.integers(0, 9)):
            name = name.replace("r", f"r{index}") if "r" in name else name
        head = [f"name: {name}", f"action: {mostly(draw, ACTIONS)}"]
        if action_first:
            head.reverse()
        column = " " * (indent + 2)
        lines.append(" " * indent + "- " + head[0] + draw(st.sampled_from(["", comment])))
        lines.append(column + head[1])
        lines.append(column + "to:")
        dash = " " * (indent + 2 + draw(st.sampled_from([0, 2])))
        for _target in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
            keys = []
            if draw(st.integers(0, 4)):
                keys.append(f"cidr: {mostly(draw, CIDRS)}")
            if draw(st.booleans()):
                ports = [mostly(draw, PORTS) for _ in range(draw(st.integers(1, 3)))]
                if draw(st.integers(0, 3)):
                    keys.append(f"ports: [{', '.join(ports)}]")
                else:
                    extra = "  " if draw(st.booleans()) else ""
                    keys.append("ports:" + "".join(f"\n{dash}  {extra}- {p}" for p in ports))
            if draw(st.integers(0, 2)) == 0:
                keys.append(f"protocol: {mostly(draw, PROTOCOLS)}")
            if draw(st.integers(0, 19)) == 0 and len(keys) > 1:
                keys.reverse()
            if not keys:
                keys = ["{}"]
            lines.append(dash + "- " + keys[0])
            lines += [dash + "  " + key for key in keys[1:]]
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from(["", "    # between", "  "])))
    if draw(st.booleans()):
        lines += ["  exec:", "    - name: " + draw(st.sampled_from(["x", "x", "r0", "r1"])),
                  "      action: kill", "      match: {names: [nc]}"]
    return "\n".join(lines) + draw(st.sampled_from(["\n", "\n", ""]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated_policies())
def test_generated_policies(text):
    same_as_careful(text)


def test_early_gets_the_first_lists_ipv4_networks():
    """The hint the agent starts writing the kernel's tables from (Maps.prestage)."""
    seen = []
    [policy] = policy_fast.read(ONE_SHAPE["one shape"], "p.yaml",
                                early=lambda *column: seen.append(column))
    [(values, prefixlens)] = seen
    networks = [rule.targets[0].networks[0] for rule in policy.egress]
    assert list(values) == [int(network.network_address) for network in networks]
    assert list(prefixlens) == [network.prefixlen for network in networks]
    seen.clear()
    policy_fast.read(ONE_SHAPE["without a cidr"], "p.yaml", early=lambda *column: seen.append(1))
    assert seen == []


def test_early_comes_before_the_other_columns_are_checked():
    """The kernel's writes start as soon as the networks are read: a list
    whose names turn out to clash still gave the hint (the agent then drops
    what it wrote, tests/kernel/test_maps_batch.py), and is read carefully."""
    seen = []
    assert policy_fast.read(ONE_SHAPE["duplicate names"], "p.yaml",
                            early=lambda *column: seen.append(column)) is None
    assert len(seen) == 1 and len(seen[0][0]) == 300


def test_warm_up_compiles_what_a_large_list_in_a_usual_layout_needs(tmp_path):
    """After warm_up() (the agent's start), reading the benchmark's file
    compiles no pattern: its first reload pays for none."""
    caches = (columns._grammar, columns._template, columns._ends_list, columns._list_end)
    for cache in caches:
        cache.cache_clear()
    policy_fast.warm_up()
    assert all(cache.cache_info().currsize for cache in caches[:3])
    misses = [cache.cache_info().misses for cache in caches]
    text = write_policy(tmp_path / "big.yaml", 200, "big").read_text()
    assert policy_fast.read(text, "big.yaml") is not None
    assert [cache.cache_info().misses for cache in caches] == misses
    # and the indentless layout, as PyYAML dumps lists
    indentless = text.split("  egress:\n")[0] + "  egress:\n" + "".join(
        f"  - name: r{i}\n    action: block\n    to:\n    - cidr: 198.18.{i // 256}.{i % 256}/32\n"
        "      ports: [443]\n" for i in range(200))
    assert policy_fast.read(indentless, "big.yaml") is not None
    assert [cache.cache_info().misses for cache in caches] == misses
