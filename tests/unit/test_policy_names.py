# SPDX-License-Identifier: Apache-2.0
"""Allow by name, the policy language's share: `host` targets, `spec.dns`,
both readers agreeing on them, the presets and `policy preset`."""
from __future__ import annotations

import random
import tomllib
from ipaddress import IPv4Network, IPv6Network

import pytest
import yaml
from click.testing import CliRunner

from guard.cli.commands import main
from guard.cli.exitcodes import ExitCode
from guard.kernel.abi import Action, Proto
from guard.policy import fast as policy_fast
from guard.policy.columns import RuleColumns
from guard.policy.load import load_policy, parse_policies, parse_policy
from guard.policy.model import (ALL_PORTS, ANY_ADDRESS, DNS_NAME_MAX, DNS_RESOLVER_PORTS,
                                DNS_TTL_LIMIT, DNS_TTL_MAX_DEFAULT, DNS_TTL_MIN_DEFAULT,
                                DnsSettings, Policy, PolicyError, Target, normalise_host)
from tests.conftest import FIXTURES, ROOT

NAMES_POLICY = FIXTURES / "names-policy.yaml"
PRESETS = ROOT / "guard" / "data" / "presets"
PRESET_NAMES = ["github", "model-apis", "python-packages"]

# Five lines; whatever follows starts at line 6.
HEADER = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: t
spec:
"""
# Nine lines; a target list that follows starts at line 10.
ONE_RULE = HEADER + """\
  egress:
    - name: r
      action: allow
      to:
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml", fast=False)
    return [str(problem) for problem in caught.value.problems]


def only_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def host_target(written: str) -> str:
    """ONE_RULE with one host target (the host on line 10)."""
    return ONE_RULE + f"        - host: {written}\n          ports: [443]\n"


@pytest.fixture
def runner():
    return CliRunner()


# --- host names -------------------------------------------------------------------

VALID_HOSTS = {
    "pypi.org": "pypi.org",
    "PyPI.Org": "pypi.org",
    "pypi.org.": "pypi.org",
    "'*.PythonHosted.org.'": "*.pythonhosted.org",
    '"*.com"': "*.com",
    "localhost": "localhost",
    "metrics": "metrics",
    "_dmarc.example.com": "_dmarc.example.com",
    "xn--bcher-kva.example": "xn--bcher-kva.example",
    "a-b.c-d.example": "a-b.c-d.example",
    "123.example.com": "123.example.com",
    "example.123": "example.123",
    "a" * 63 + ".com": "a" * 63 + ".com",
    # 253 characters: four labels of 63 and one of 1, with their dots
    ".".join(["a" * 63] * 4)[:251] + ".b": ".".join(["a" * 63] * 4)[:251] + ".b",
    # the wildcard's "*." does not count towards the length
    "'*." + ".".join(["a" * 63] * 4)[:251] + ".b'": "*." + ".".join(["a" * 63] * 4)[:251] + ".b",
}


@pytest.mark.parametrize("written, normal", VALID_HOSTS.items(), ids=range(len(VALID_HOSTS)))
def test_valid_hosts_are_read_normalised(written, normal):
    policy = parse_policy(host_target(written), "p.yaml", fast=False)
    [target] = policy.egress[0].targets
    assert target == Target(networks=(), ports=((443, 443),), proto=Proto.ANY, host=normal)
    assert policy.uses_names
    assert normalise_host(yaml.safe_load(f"x: {written}")["x"]) == normal


# (written in YAML, what the problem says)
INVALID_HOSTS = [
    ('""', "must not be empty"),
    ("'.'", "empty label"),
    ("a..b", "empty label"),
    (".a.com", "empty label"),
    ("a.com..", "empty label"),
    ("'*'", "'*' only as the whole first label"),
    ("'**.a'", "'*' only as the whole first label"),
    ("a.*.b", "'*' only as the whole first label"),
    ("'*foo.com'", "'*' only as the whole first label"),
    ("'*.'", "'*' only as the whole first label"),
    ("'*.*.a'", "'*' only as the whole first label"),
    ("'*..a'", "empty label"),
    ("-a.com", "not starting or ending with '-'"),
    ("a-.com", "not starting or ending with '-'"),
    ("'a b.com'", "label 'a b'"),
    ("a/b.com", "label 'a/b'"),
    ("exa$mple.com", "label 'exa$mple'"),
    ("bücher.example", "punycode ('xn--"),
    ("1.2.3.4", "is an address: use cidr"),
    ("'::1'", "is an address: use cidr"),
    ("'[2001:db8::1]'", "is an address: use cidr"),
    ("'127.1'", "is an address: use cidr"),
    ("'0x7f000001'", "is an address: use cidr"),
    ("'*.10.0.0.1'", "is an address: use cidr"),
    ("a" * 64 + ".com", "longer than 63 characters"),
    (".".join(["a" * 63] * 4)[:252] + ".b", f"(at most {DNS_NAME_MAX})"),
]


@pytest.mark.parametrize("written, needle", INVALID_HOSTS, ids=range(len(INVALID_HOSTS)))
def test_invalid_hosts_name_file_line_and_field(written, needle):
    problem = only_problem(host_target(written))
    assert problem.startswith("p.yaml:10: spec.egress[0].to[0].host: "), problem
    assert needle in problem
    with pytest.raises(ValueError) as caught:
        normalise_host(yaml.safe_load(f"x: {written}")["x"])
    assert needle in str(caught.value)


@pytest.mark.parametrize("written, kind", [("443", "an integer"), ("~", "null"),
                                           ("127.1", "a number"),
                                           ("[pypi.org]", "a list"), ("true", "a boolean")])
def test_a_host_that_is_not_a_string(written, kind):
    assert only_problem(host_target(written)) == \
        f"p.yaml:10: spec.egress[0].to[0].host: expected a string, got {kind}"


@pytest.mark.parametrize("target", [
    "        - host: pypi.org\n          cidr: 10.0.0.0/8\n",
    "        - cidr: 10.0.0.0/8\n          host: pypi.org\n",
])
def test_host_and_cidr_exclude_each_other(target):
    problem = only_problem(ONE_RULE + target)
    line = 10 + target.split("\n").index(next(x for x in target.split("\n") if "host" in x))
    assert problem.startswith(f"p.yaml:{line}: spec.egress[0].to[0].host: "), problem
    assert "'host' or 'cidr', not both" in problem


def test_an_unknown_key_of_a_target_lists_host():
    assert only_problem(ONE_RULE + "        - hosts: pypi.org\n") == (
        "p.yaml:10: spec.egress[0].to[0].hosts: unknown key 'hosts' "
        "(expected one of: cidr, host, ports, protocol)")


def test_ports_and_protocol_work_as_for_cidr_targets():
    policy = parse_policy(ONE_RULE + "        - host: pypi.org\n"
                          "          ports: [80, \"8000-8080\"]\n          protocol: udp\n"
                          "        - host: a.example\n", "p.yaml")
    assert policy.egress[0].targets == (
        Target((), ((80, 80), (8000, 8080)), Proto.UDP, "pypi.org"),
        Target((), ALL_PORTS, Proto.ANY, "a.example"))
    assert "p.yaml:11: spec.egress[0].to[0].ports[0]: invalid port 0" in problems_of(
        ONE_RULE + "        - host: pypi.org\n          ports: [0]\n          protocol: icmp\n")[0]


def test_policies_without_names_do_not_use_them():
    policy = parse_policy(ONE_RULE + "        - cidr: 10.0.0.0/8\n", "p.yaml")
    assert policy.egress[0].targets == (Target((IPv4Network("10.0.0.0/8"),), ALL_PORTS,
                                               Proto.ANY),)
    assert policy.egress[0].targets[0].host is None
    assert not policy.uses_names
    assert policy.dns == DnsSettings()


def test_the_fast_readers_columns_say_they_hold_no_names_without_building_rules():
    [policy] = policy_fast.read(HEADER + rules(300), "p.yaml")
    assert isinstance(policy.egress, RuleColumns)
    assert policy.uses_names is False and not policy.egress.built


def test_the_names_fixture_means_what_its_comments_say():
    policy = load_policy(NAMES_POLICY)
    assert policy.default_action == Action.BLOCK and policy.uses_names
    python, internal, tunnel = policy.egress
    assert python.targets == (Target((), ((443, 443),), Proto.TCP, "pypi.org"),
                              Target((), ((443, 443),), Proto.ANY, "*.pythonhosted.org"))
    assert internal.action == Action.LOG and internal.targets == (
        Target((), ((9000, 9100),), Proto.ANY, "metrics"),
        Target((IPv4Network("10.20.0.0/16"),), ALL_PORTS, Proto.ANY))
    assert tunnel.targets == (Target((), ((22, 22),), Proto.ANY, "*.example.com"),)
    assert policy.dns == DnsSettings(
        resolvers=(Target((IPv4Network("10.96.0.10/32"),), DNS_RESOLVER_PORTS, Proto.ANY),
                   Target((IPv6Network("fd00::53/128"),), ((53, 53), (5353, 5353)),
                          Proto.UDP)),
        ttl_min=30, ttl_max=3600, line=10)


def test_hosts_are_refused_in_fail_closed_targets():
    problem = only_problem(HEADER + "  failClosed:\n    allow:\n      - host: pypi.org\n")
    assert problem.startswith("p.yaml:8: spec.failClosed.allow[0].host: unknown key 'host'")


# --- spec.dns --------------------------------------------------------------------

def test_model_defaults():
    assert (DNS_TTL_MIN_DEFAULT, DNS_TTL_MAX_DEFAULT, DNS_TTL_LIMIT) == (60, 86400, 7 * 86400)
    assert DNS_RESOLVER_PORTS == ((53, 53),) and DNS_NAME_MAX == 253
    assert DnsSettings() == DnsSettings(None, 60, 86400, 0)
    # the fields of Policy before dns keep their order: positional callers still work
    policy = Policy("p", Action.LOG, (), (), True, {}, "s")
    assert policy.dns == DnsSettings() and not policy.uses_names


@pytest.mark.parametrize("body, expected", [
    ("", DnsSettings()),
    ("  dns:\n", DnsSettings()),
    ("  dns: ~\n", DnsSettings()),
    ("  dns: {}\n", DnsSettings(line=6)),
    ("  dns:\n    resolvers:\n    ttl:\n", DnsSettings(line=7)),
    ("  dns:\n    ttl: {min: 0, max: 0}\n", DnsSettings(ttl_min=0, ttl_max=0, line=7)),
    ("  dns:\n    ttl:\n      max: 604800\n", DnsSettings(ttl_max=DNS_TTL_LIMIT, line=7)),
    ("  dns:\n    ttl:\n      min: 5\n", DnsSettings(ttl_min=5, line=7)),
    ("  dns:\n    resolvers:\n      - cidr: 127.0.0.53\n",
     DnsSettings(resolvers=(Target((IPv4Network("127.0.0.53/32"),), ((53, 53),), Proto.ANY),),
                 line=7)),
    ("  dns:\n    resolvers:\n      - cidr: 10.88.0.1/32\n        ports: [\"53-54\"]\n"
     "        protocol: tcp\n      - cidr: 0.0.0.0/0\n",
     DnsSettings(resolvers=(Target((IPv4Network("10.88.0.1/32"),), ((53, 54),), Proto.TCP),
                            Target((IPv4Network("0.0.0.0/0"),), ((53, 53),), Proto.ANY)),
                 line=7)),
])
def test_dns_settings(body, expected):
    policy = parse_policy(HEADER + body, "p.yaml")
    assert policy.dns == expected


# (body after HEADER, line, field, what the problem says)
DNS_PROBLEMS = [
    ("  dns: [a]\n", 6, "spec.dns", "expected a mapping, got a list"),
    ("  dns:\n    resolver: []\n", 7, "spec.dns.resolver",
     "unknown key 'resolver' (expected one of: resolvers, ttl, unnamed)"),
    ("  dns:\n    resolvers: []\n", 7, "spec.dns.resolvers", "expected at least one resolver"),
    ("  dns:\n    resolvers: 10.0.0.1\n", 7, "spec.dns.resolvers", "expected a list"),
    ("  dns:\n    resolvers:\n      - ports: [53]\n", 8, "spec.dns.resolvers[0].cidr",
     "missing required key 'cidr'"),
    ("  dns:\n    resolvers:\n      - cidr: 10.0.0.1/8\n", 8, "spec.dns.resolvers[0].cidr",
     "host bits set"),
    ("  dns:\n    resolvers:\n      - cidr: 10.0.0.1\n        ports: []\n", 9,
     "spec.dns.resolvers[0].ports", "expected at least one port"),
    ("  dns:\n    ttl: 60\n", 7, "spec.dns.ttl", "expected a mapping, got an integer"),
    ("  dns:\n    ttl:\n      minimum: 1\n", 8, "spec.dns.ttl.minimum",
     "unknown key 'minimum' (expected one of: max, min)"),
    ("  dns:\n    ttl:\n      min: -1\n", 8, "spec.dns.ttl.min",
     "invalid value -1 (expected a whole number from 0 to 604800)"),
    ("  dns:\n    ttl:\n      max: 604801\n", 8, "spec.dns.ttl.max",
     "invalid value 604801 (expected a whole number from 0 to 604800)"),
    ("  dns:\n    ttl:\n      max: 1.5\n", 8, "spec.dns.ttl.max", "invalid value 1.5"),
    ("  dns:\n    ttl:\n      min: 1h\n", 8, "spec.dns.ttl.min", "invalid value '1h'"),
    ("  dns:\n    ttl:\n      min: 600\n      max: 300\n", 8, "spec.dns.ttl.min",
     "ttl min 600 is greater than max 300"),
    ("  dns:\n    ttl:\n      max: 30\n", 8, "spec.dns.ttl.max",
     "ttl min 60 is greater than max 30 (min left at its default)"),
    ("  dns:\n    ttl:\n      min: 90000\n", 8, "spec.dns.ttl.min",
     "ttl min 90000 is greater than max 86400 (max left at its default)"),
]


@pytest.mark.parametrize("body, line, field, needle", DNS_PROBLEMS,
                         ids=[p[2] + ":" + p[3][:20] for p in DNS_PROBLEMS])
def test_dns_problems_name_file_line_and_field(body, line, field, needle):
    problem = only_problem(HEADER + body)
    assert problem.startswith(f"p.yaml:{line}: {field}: "), problem
    assert needle in problem


def test_a_resolver_is_given_by_address_not_by_name():
    assert problems_of(HEADER + "  dns:\n    resolvers:\n      - host: dns.google\n") == [
        "p.yaml:8: spec.dns.resolvers[0].host: unknown key 'host' "
        "(expected one of: cidr, ports, protocol)",
        "p.yaml:8: spec.dns.resolvers[0].cidr: missing required key 'cidr'"]


def test_every_problem_of_a_dns_section_is_reported_at_once():
    text = (HEADER + "  dns:\n    resolvers:\n      - host: a.example\n      - cidr: x\n"
            "    ttl:\n      min: -5\n      max: 5\n    extra: 1\n")
    assert [p.split(": ")[0] + ": " + p.split(": ")[1] for p in problems_of(text)] == [
        "p.yaml:8: spec.dns.resolvers[0].host", "p.yaml:8: spec.dns.resolvers[0].cidr",
        "p.yaml:9: spec.dns.resolvers[1].cidr", "p.yaml:11: spec.dns.ttl.min",
        "p.yaml:13: spec.dns.extra"]


# --- the fast reader agrees ---------------------------------------------------------

def outcome(text: str, fast: bool):
    try:
        return parse_policies(text, "p.yaml", fast=fast)
    except PolicyError as exc:
        return [str(problem) for problem in exc.problems]


def same_as_careful(text: str) -> bool:
    """Both readers give the same policies or problems; True if the fast
    reader read the file itself."""
    careful = outcome(text, fast=False)
    assert outcome(text, fast=True) == careful
    read = policy_fast.read(text, "p.yaml")
    if read is not None:
        assert isinstance(careful, tuple) and read == careful
    return read is not None


def rules(count: int, target: str = "        - cidr: 10.0.{hi}.{lo}/32\n          ports: [443]\n",
          **changes: str) -> str:
    """A program's list of count rules; changes: "rN" -> rule N's targets instead."""
    out = []
    for i in range(count):
        body = changes.get(f"r{i}", target).format(hi=i // 256, lo=i % 256, i=i)
        out.append(f"    - name: r{i}\n      action: allow\n      to:\n{body}")
    return "  egress:\n" + "".join(out)


HOST = "        - host: h{i}.example\n          ports: [443]\n"
DNS = ("  dns:\n    resolvers:\n      - cidr: 10.96.0.10/32\n    ttl:\n      min: 10\n"
       "      max: 600\n")
DECLINED = {
    "every rule by name": rules(300, HOST),
    "one rule by name in a list of cidrs": rules(300, r150=HOST),
    "the first rule by name": rules(300, r0=HOST),
    "the last rule by name": rules(300, r299=HOST),
    "a name as a second target": rules(
        300, r7="        - cidr: 10.9.0.0/16\n        - host: a.example\n"),
    "a name after ports": rules(300, r3="        - ports: [443]\n          host: a.example\n"),
    "a name after protocol": rules(300, r3="        - ports: [443]\n"
                                           "          protocol: tcp\n          host: a.example\n"),
    "host and cidr": rules(300, r3="        - cidr: 10.9.0.1/32\n          host: a.example\n"),
    "a name in flow style": rules(300, r9="        - {{host: a.example, ports: [1]}}\n"),
    "an invalid name": rules(300, r9="        - host: a..example\n"),
    "a wildcard": rules(300, r9="        - host: \"*.example.com\"\n          ports: [443]\n"),
    "a few rules, names and cidrs": rules(5, r1=HOST, r3=HOST),
    "names and a dns section": rules(20, HOST) + DNS,
}


@pytest.mark.parametrize("body", DECLINED.values(), ids=DECLINED.keys())
def test_the_fast_reader_declines_names_or_reads_them_alike(body):
    text = HEADER + "  defaultAction: block\n" + body
    assert not same_as_careful(text)


def mixed_policy(seed: int) -> tuple[str, bool]:
    """A list of cidr and host targets in one of the fast reader's layouts,
    keys in any order, values plain or quoted; and whether it names a host."""
    rng = random.Random(seed)
    dash = rng.choice([2, 4])                                # the rules' dash column
    target_dash = dash + rng.choice([2, 4])                  # indentless or not
    named, names = False, rng.random() < 0.6
    lines = HEADER.splitlines() + ["  egress:"]
    for i in range(rng.randrange(1, 40)):
        lines += [" " * dash + f"- name: r{i}", " " * (dash + 2) + "action: block",
                  " " * (dash + 2) + "to:"]
        for _ in range(rng.choice([1, 1, 2])):
            keys = [f"ports: [{rng.randrange(1, 65536)}]"] if rng.random() < 0.7 else []
            keys += ["protocol: tcp"] if rng.random() < 0.3 else []
            if names and rng.random() < 0.15:
                host = rng.choice(["a.example", "'*.b.example'", '"C.Example."'] * 6 + ["x..y"])
                keys.insert(rng.randrange(len(keys) + 1), f"host: {host}")
                named = True
            else:
                keys.insert(0, f"cidr: 10.{i}.{rng.randrange(256)}.0/24")
            lines.append(" " * target_dash + "- " + keys[0])
            lines += [" " * (target_dash + 2) + key for key in keys[1:]]
    if rng.random() < 0.5:
        lines.insert(5, DNS.rstrip("\n")) if rng.random() < 0.5 else lines.append(DNS)
    return "\n".join(lines) + "\n", named


@pytest.mark.parametrize("seed", range(60))
def test_generated_lists_with_names(seed):
    text, named = mixed_policy(seed)
    read_fast = same_as_careful(text)
    assert not (named and read_fast)


@pytest.mark.parametrize("layout", ["before", "after", "bad dns"])
def test_a_dns_section_leaves_a_cidr_list_to_the_fast_reader(layout):
    dns = DNS.replace("min: 10", "min: 1000") if layout == "bad dns" else DNS
    text = HEADER + (dns + rules(300) if layout == "before" else rules(300) + dns)
    assert same_as_careful(text) == (layout != "bad dns")
    if layout != "bad dns":
        [policy] = parse_policies(text, "p.yaml")
        assert policy.dns == DnsSettings(resolvers=(Target(
            (IPv4Network("10.96.0.10/32"),), ((53, 53),), Proto.ANY),), ttl_min=10,
            ttl_max=600, line=7 if layout == "before" else 5 + 1 + 300 * 5 + 2)


def test_yaml_dumped_names_are_read_alike():
    document = {"apiVersion": "egress-guard/v1", "kind": "EgressPolicy", "metadata": {"name": "d"},
                "spec": {"defaultAction": "block",
                         "dns": {"resolvers": [{"cidr": "10.0.0.53/32"}]},
                         "egress": [{"name": f"r{i}", "action": "allow",
                                     "to": [{"host": f"*.h{i}.example", "ports": [443]}]}
                                    for i in range(50)]}}
    for flow in (False, None):
        text = yaml.safe_dump(document, default_flow_style=flow)
        assert not same_as_careful(text)
        [policy] = parse_policies(text, "p.yaml")
        assert policy.uses_names and policy.egress[49].targets[0].host == "*.h49.example"


# --- presets ---------------------------------------------------------------------

@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_are_complete_policies_allowing_names_on_443(name):
    path = PRESETS / f"{name}.yaml"
    policy = load_policy(path)
    assert policy.name == name and policy.default_action == Action.BLOCK
    assert policy.uses_names and policy.dns == DnsSettings()
    assert dict(policy.detections) == {} and policy.deny_raw_sockets
    targets = [target for rule in policy.egress for target in rule.targets]
    assert targets and all(t.host and t.networks == () and t.ports == ((443, 443),)
                           and t.proto == Proto.TCP for t in targets)
    text = path.read_text()
    assert same_as_careful(text) is False
    assert text.startswith("# ") and "starting point" in text


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_a_presets_commented_dns_section_is_valid_once_uncommented(name):
    lines = (PRESETS / f"{name}.yaml").read_text().splitlines(keepends=True)
    at = lines.index(next(line for line in lines if line.startswith("  # dns:")))
    assert all(line.startswith("  # ") for line in lines[at:])
    text = "".join(lines[:at] + ["  " + line[4:] for line in lines[at:]])
    policy = parse_policy(text, "p.yaml")
    assert policy.dns.resolvers == (Target((IPv4Network("10.96.0.10/32"),), ((53, 53),),
                                           Proto.ANY),)
    assert (policy.dns.ttl_min, policy.dns.ttl_max) == (DNS_TTL_MIN_DEFAULT, DNS_TTL_MAX_DEFAULT)


def test_the_github_preset_leaves_ssh_out_and_says_why():
    policy = load_policy(PRESETS / "github.yaml")
    hosts = {t.host for rule in policy.egress for t in rule.targets}
    assert hosts == {"github.com", "*.github.com", "codeload.github.com",
                     "*.githubusercontent.com"}
    assert "tunnel" in (PRESETS / "github.yaml").read_text()


def test_presets_are_package_data():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "presets/*.yaml" in project["tool"]["setuptools"]["package-data"]["guard.data"]
    assert sorted(p.stem for p in PRESETS.glob("*.yaml")) == PRESET_NAMES


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_pass_policy_check(runner, name):
    path = str(PRESETS / f"{name}.yaml")
    result = runner.invoke(main, ["policy", "check", path])
    assert result.exit_code == ExitCode.OK, result.output
    count = sum(1 for rule in load_policy(path).egress for _ in rule.targets)
    assert result.stdout == (f"{path}: ok (policy {name!r}: {len(load_policy(path).egress)} "
                             f"egress rule(s), 0 exec rule(s), 0 prefix(es), "
                             f"{count} name target(s))\n")


def test_policy_check_counts_name_targets_only_when_there_are_some(runner):
    result = runner.invoke(main, ["policy", "check", str(NAMES_POLICY)])
    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout == (f"{NAMES_POLICY}: ok (policy 'names': 3 egress rule(s), "
                             "0 exec rule(s), 1 prefix(es), 4 name target(s))\n")
    example = runner.invoke(main, ["policy", "check", str(FIXTURES / "example-policy.yaml")])
    assert example.exit_code == ExitCode.OK and "name target" not in example.stdout


def test_policy_check_names_a_bad_host_with_file_and_line(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(host_target("'*foo.example'"))
    result = runner.invoke(main, ["policy", "check", str(bad)])
    assert result.exit_code == ExitCode.FAILURE and result.stdout == ""
    assert result.stderr.splitlines()[0].startswith(f"{bad}:10: spec.egress[0].to[0].host: ")


# --- policy preset -------------------------------------------------------------------

def test_policy_preset_lists_the_presets_with_their_descriptions(runner):
    result = runner.invoke(main, ["policy", "preset"])
    assert result.exit_code == ExitCode.OK, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == PRESET_NAMES
    for line, name in zip(lines, PRESET_NAMES):
        first = (PRESETS / f"{name}.yaml").read_text().splitlines()[0]
        assert line.split(None, 1)[1] == first[2:]
    assert len({line.index(line.split()[1]) for line in lines}) == 1   # one column


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_policy_preset_name_prints_the_yaml(runner, name, tmp_path):
    result = runner.invoke(main, ["policy", "preset", name])
    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout == (PRESETS / f"{name}.yaml").read_text()
    copy = tmp_path / "policy.yaml"
    copy.write_text(result.stdout)
    assert runner.invoke(main, ["policy", "check", str(copy)]).exit_code == ExitCode.OK


@pytest.mark.parametrize("name", ["nope", "github.yaml", "../default-policy"])
def test_an_unknown_preset_is_a_usage_error_naming_the_presets(runner, name):
    result = runner.invoke(main, ["policy", "preset", name])
    assert result.exit_code == ExitCode.USAGE
    assert result.stdout == ""
    assert result.stderr == (f"egress-guard: error: unknown preset {name!r} "
                             f"(available: {', '.join(PRESET_NAMES)})\n")
