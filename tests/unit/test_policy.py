# SPDX-License-Identifier: Apache-2.0
"""Policy files -> the validated model, and every problem with its line and field."""
from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.kernel.abi import Action, Proto
from guard.policy.compile import compile_policy
from guard.policy.model import ALL_PORTS, ANY_ADDRESS, PolicyError, Problem
from guard.policy.load import default_policy, load_policy, parse_policy
from tests.conftest import FIXTURES

EXAMPLE = FIXTURES / "example-policy.yaml"

# Five lines; whatever follows starts at line 6.
HEADER = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: t
spec:
"""
# Nine lines; a target list that follows starts at line 10.
ONE_EGRESS_RULE = HEADER + """\
  egress:
    - name: r
      action: block
      to:
"""
# Nine lines; match entries that follow start at line 10.
ONE_EXEC_RULE = HEADER + """\
  exec:
    - name: x
      action: kill
      match:
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policy.yaml")
    return [str(problem) for problem in caught.value.problems]


def only_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# --- accepted policies -------------------------------------------------------

def test_example_policy_means_what_its_comments_say():
    policy = load_policy(EXAMPLE)
    assert policy.name == "example" and policy.source == str(EXAMPLE)
    assert policy.default_action == Action.ALLOW
    [rule] = policy.egress
    assert (rule.name, rule.action, rule.line) == ("block-test-port", Action.BLOCK, 8)
    v4, v6 = rule.targets
    assert v4.networks == (IPv4Network("127.0.0.0/8"),)
    assert v4.ports == ((39001, 39001), (39010, 39020)) and v4.proto == Proto.TCP
    assert v6.networks == (IPv6Network("::1/128"),)
    assert v6.ports == ((39001, 39001),) and v6.proto == Proto.ANY
    [exec_rule] = policy.exec_rules
    assert exec_rule.name == "no-netcat" and exec_rule.action == Action.KILL
    assert exec_rule.names == ("nc", "ncat") and exec_rule.paths == ("/usr/bin/nc.openbsd",)
    assert exec_rule.line == 17
    assert policy.deny_raw_sockets is True
    assert dict(policy.detections) == {}


def test_model_is_immutable():
    policy = load_policy(EXAMPLE)
    assert isinstance(policy.egress, tuple) and isinstance(policy.egress[0].targets, tuple)
    with pytest.raises(AttributeError):
        policy.name = "other"
    with pytest.raises(TypeError):
        policy.detections["x"] = "y"


def test_defaults_of_a_minimal_policy():
    policy = parse_policy(HEADER.replace("spec:\n", ""), "p.yaml")
    assert policy.default_action == Action.LOG
    assert policy.deny_raw_sockets is True
    assert policy.egress == () and policy.exec_rules == ()


def test_omitted_cidr_ports_and_protocol_mean_any():
    policy = parse_policy(ONE_EGRESS_RULE + "        - {}\n", "p.yaml")
    [target] = policy.egress[0].targets
    assert target.networks == ANY_ADDRESS
    assert target.ports == ALL_PORTS == ((0, 65535),)
    assert target.proto == Proto.ANY


@pytest.mark.parametrize("cidr, network", [
    ("1.2.3.4", IPv4Network("1.2.3.4/32")),
    ("::1", IPv6Network("::1/128")),
    ("10.0.0.0/8", IPv4Network("10.0.0.0/8")),
    ("2001:db8::/32", IPv6Network("2001:db8::/32")),
    ("::ffff:10.0.0.0/104", IPv4Network("10.0.0.0/8")),
    ("::ffff:127.0.0.1", IPv4Network("127.0.0.1/32")),
    ("::ffff:0:0/96", IPv4Network("0.0.0.0/0")),
    ("64:ff9b::/96", IPv6Network("64:ff9b::/96")),     # NAT64, not IPv4-mapped
])
def test_cidr_forms(cidr, network):
    policy = parse_policy(ONE_EGRESS_RULE + f'        - cidr: "{cidr}"\n', "p.yaml")
    assert policy.egress[0].targets[0].networks == (network,)


def test_empty_sections_mean_their_defaults():
    text = HEADER + "  egress:\n  exec:\n  sockets:\n  detections:\n"
    policy = parse_policy(text, "p.yaml")
    assert policy.egress == () and policy.exec_rules == () and policy.deny_raw_sockets


def test_raw_sockets_may_be_allowed():
    policy = parse_policy(HEADER + "  sockets:\n    raw: allow\n", "p.yaml")
    assert policy.deny_raw_sockets is False


def test_default_policy():
    policy = default_policy()
    assert policy.name == "default"
    assert policy.default_action == Action.LOG
    assert policy.deny_raw_sockets is True
    assert policy.egress == () and policy.exec_rules == ()
    compile_policy(policy)


# --- problems: message, line and field ----------------------------------------

PROBLEMS = {
    "unknown key": (
        ONE_EGRESS_RULE + "        - cidr: 10.0.0.0/8\n          prots: [1]\n",
        "policy.yaml:11: spec.egress[0].to[0].prots: "
        "unknown key 'prots' (expected one of: cidr, host, ports, protocol)"),
    "unknown top-level key": (
        HEADER + "  defaultAction: log\nstatus: {}\n",
        "policy.yaml:7: status: unknown key 'status' (expected one of: apiVersion, kind, "
        "metadata, spec)"),
    "duplicate key": (
        HEADER + "  defaultAction: log\n  defaultAction: block\n",
        "policy.yaml:7: spec.defaultAction: duplicate key 'defaultAction' (first at line 6)"),
    "bad CIDR": (
        ONE_EGRESS_RULE + "        - cidr: 10.0.0.0/33\n",
        "policy.yaml:10: spec.egress[0].to[0].cidr: invalid CIDR '10.0.0.0/33'"),
    "netmask is not a CIDR": (
        ONE_EGRESS_RULE + "        - cidr: 10.0.0.0/255.0.0.0\n",
        "policy.yaml:10: spec.egress[0].to[0].cidr: invalid CIDR '10.0.0.0/255.0.0.0'"),
    "host bits set": (
        ONE_EGRESS_RULE + "        - cidr: 10.0.0.1/8\n",
        "policy.yaml:10: spec.egress[0].to[0].cidr: "
        "host bits set in CIDR '10.0.0.1/8' (did you mean 10.0.0.0/8?)"),
    "host bits set, IPv6": (
        ONE_EGRESS_RULE + '        - cidr: "2001:db8::1/32"\n',
        "policy.yaml:10: spec.egress[0].to[0].cidr: "
        "host bits set in CIDR '2001:db8::1/32' (did you mean 2001:db8::/32?)"),
    "host bits set, IPv4-mapped": (
        ONE_EGRESS_RULE + '        - cidr: "::ffff:10.0.0.1/104"\n',
        "policy.yaml:10: spec.egress[0].to[0].cidr: host bits set in CIDR "
        "'::ffff:10.0.0.1/104' (did you mean ::ffff:10.0.0.0/104?)"),
    "CIDR not a string": (
        ONE_EGRESS_RULE + "        - cidr: [10.0.0.0/8]\n",
        "policy.yaml:10: spec.egress[0].to[0].cidr: expected a string, got a list"),
    "port 0": (
        ONE_EGRESS_RULE + "        - ports: [0]\n",
        'policy.yaml:10: spec.egress[0].to[0].ports[0]: '
        'invalid port 0 (expected 1-65535 or "LO-HI")'),
    "port 70000 on its own line": (
        ONE_EGRESS_RULE + "        - ports:\n            - 80\n            - 70000\n",
        'policy.yaml:12: spec.egress[0].to[0].ports[1]: '
        'invalid port 70000 (expected 1-65535 or "LO-HI")'),
    "reversed range": (
        ONE_EGRESS_RULE + '        - ports: ["5-3"]\n',
        "policy.yaml:10: spec.egress[0].to[0].ports[0]: "
        "invalid port range '5-3' (LO must not be greater than HI)"),
    "range beyond 65535": (
        ONE_EGRESS_RULE + '        - ports: ["1-65536"]\n',
        'policy.yaml:10: spec.egress[0].to[0].ports[0]: '
        "invalid port '1-65536' (expected 1-65535 or \"LO-HI\")"),
    "port word": (
        ONE_EGRESS_RULE + '        - ports: ["abc"]\n',
        'policy.yaml:10: spec.egress[0].to[0].ports[0]: '
        "invalid port 'abc' (expected 1-65535 or \"LO-HI\")"),
    "boolean is not a port": (
        ONE_EGRESS_RULE + "        - ports: [true]\n",
        'policy.yaml:10: spec.egress[0].to[0].ports[0]: '
        'invalid port true (expected 1-65535 or "LO-HI")'),
    "empty ports": (
        ONE_EGRESS_RULE + "        - ports: []\n",
        "policy.yaml:10: spec.egress[0].to[0].ports: "
        "expected at least one port (omit 'ports' for every port)"),
    "bad protocol": (
        ONE_EGRESS_RULE + "        - protocol: icmp\n",
        "policy.yaml:10: spec.egress[0].to[0].protocol: "
        "invalid protocol 'icmp' (expected one of: tcp, udp, any)"),
    "bad egress action": (
        HEADER + "  egress:\n    - name: r\n      action: kill\n      to: [{}]\n",
        "policy.yaml:8: spec.egress[0].action: "
        "invalid action 'kill' (expected one of: allow, log, block)"),
    "bad exec action": (
        HEADER + "  exec:\n    - name: x\n      action: block\n      match: {names: [a]}\n",
        "policy.yaml:8: spec.exec[0].action: invalid action 'block' (expected one of: log, kill)"),
    "bad default action": (
        HEADER + "  defaultAction: deny\n",
        "policy.yaml:6: spec.defaultAction: "
        "invalid action 'deny' (expected one of: allow, log, block)"),
    "bad raw sockets value": (
        HEADER + "  sockets:\n    raw: no\n",
        "policy.yaml:7: spec.sockets.raw: invalid value no (expected one of: allow, deny)"),
    "duplicate rule name across egress and exec": (
        ONE_EGRESS_RULE + "        - {}\n  exec:\n    - name: r\n      action: log\n"
        "      match: {names: [a]}\n",
        "policy.yaml:12: spec.exec[0].name: duplicate rule name 'r' (first used at line 7)"),
    "missing rule name": (
        HEADER + "  egress:\n    - action: block\n      to: [{}]\n",
        "policy.yaml:7: spec.egress[0].name: missing required key 'name'"),
    "bad rule name": (
        HEADER + "  egress:\n    - name: Block_All\n      action: block\n      to: [{}]\n",
        "policy.yaml:7: spec.egress[0].name: invalid rule name 'Block_All'"),
    "empty to": (
        HEADER + "  egress:\n    - name: r\n      action: block\n      to: []\n",
        "policy.yaml:9: spec.egress[0].to: expected at least one target"),
    "egress not a list": (
        HEADER + "  egress:\n    name: r\n",
        "policy.yaml:7: spec.egress: expected a list, got a mapping"),
    "target not a mapping": (
        ONE_EGRESS_RULE + "        - 10.0.0.0/8\n",
        "policy.yaml:10: spec.egress[0].to[0]: expected a mapping, got a string"),
    "broken YAML: tab": (
        HEADER + "\tdefaultAction: log\n",
        "policy.yaml:6: <yaml>: invalid YAML: found character '\\t' that cannot start any token"),
    "broken YAML: unclosed bracket": (
        HEADER + "  egress: [\n",
        "policy.yaml:6: <yaml>: invalid YAML: expected the node content, but found "
        "'<stream end>'"),
    "broken YAML: bracket closed too late": (
        HEADER + "  egress: [a, b\n  exec: c\n",
        "policy.yaml:7: <yaml>: invalid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence that starts at line 6)"),
    "empty file": (
        "",
        "policy.yaml:1: <document>: the policy is empty"),
    "only comments": (
        "# nothing yet\n",
        "policy.yaml:1: <document>: the policy is empty"),
    "document is a list": (
        "- apiVersion: egress-guard/v1\n",
        "policy.yaml:1: <document>: expected a mapping, got a list"),
    "two documents": (
        HEADER + "---\n" + HEADER,
        "policy.yaml:7: <document>: more than one YAML document (a policy file holds exactly one)"),
    "wrong apiVersion": (
        HEADER.replace("egress-guard/v1", "egress-guard/v2"),
        "policy.yaml:1: apiVersion: unsupported apiVersion 'egress-guard/v2' "
        "(expected 'egress-guard/v1')"),
    "wrong kind": (
        HEADER.replace("EgressPolicy", "NetworkPolicy"),
        "policy.yaml:2: kind: unsupported kind 'NetworkPolicy' (expected 'EgressPolicy')"),
    "bad policy name": (
        HEADER.replace("name: t", "name: My Policy"),
        "policy.yaml:4: metadata.name: invalid name 'My Policy'"),
    "empty policy name": (
        HEADER.replace("name: t", 'name: ""'),
        "policy.yaml:4: metadata.name: name must not be empty"),
    "policy name not a string": (
        HEADER.replace("name: t", "name: 42"),
        "policy.yaml:4: metadata.name: expected a string, got an integer"),
    "missing metadata": (
        "apiVersion: egress-guard/v1\nkind: EgressPolicy\n",
        "policy.yaml:1: metadata: missing required key 'metadata'"),
    "unknown detection": (
        HEADER + "  detections:\n    stratum: block\n    mining: block\n",
        "policy.yaml:8: spec.detections.mining: unknown detection 'mining' (expected one of: "
        "minerExec, reverseShell, sshOutbound, sshReverseTunnel, stratum, tunnelTool)"),
    "bad detection action": (
        HEADER + "  detections:\n    stratum: drop\n",
        "policy.yaml:7: spec.detections.stratum: invalid value 'drop' "
        "(expected one of: off, log, block, kill)"),
    "ssh allow entry without host or cidr": (
        HEADER + "  ssh:\n    allow:\n      - ports: [22]\n",
        "policy.yaml:8: spec.ssh.allow[0]: an allow entry needs exactly one of 'host' or 'cidr'"),
    "ssh allow bad forward": (
        HEADER + "  ssh:\n    allow:\n      - host: git.example.com\n"
                 "        forwards: [sideways]\n",
        "policy.yaml:9: spec.ssh.allow[0].forwards[0]: invalid forward 'sideways' "
        "(expected one of: local, dynamic, remote, tunnel)"),
    "relative exec path": (
        ONE_EXEC_RULE + "        paths: [bin/nc]\n",
        "policy.yaml:10: spec.exec[0].match.paths[0]: "
        "relative path 'bin/nc' (exec paths must be absolute)"),
    "exec path not normalised": (
        ONE_EXEC_RULE + "        paths: [/usr//bin/nc]\n",
        "policy.yaml:10: spec.exec[0].match.paths[0]: "
        "path '/usr//bin/nc' is not normalised (did you mean '/usr/bin/nc'?)"),
    "exec name with a slash": (
        ONE_EXEC_RULE + "        names: [nc, /usr/bin/nc]\n",
        "policy.yaml:10: spec.exec[0].match.names[1]: "
        "invalid executable name '/usr/bin/nc' (a basename has no '/'"),
    "empty exec name": (
        ONE_EXEC_RULE + '        names: [""]\n',
        "policy.yaml:10: spec.exec[0].match.names[0]: executable name must not be empty"),
    "exec name too long": (
        ONE_EXEC_RULE + f"        names: [{'é' * 128}]\n",
        "policy.yaml:10: spec.exec[0].match.names[0]: "
        "executable name is 256 bytes long (at most 255 bytes of UTF-8)"),
    "empty match": (
        ONE_EXEC_RULE + "        names: []\n",
        "policy.yaml:10: spec.exec[0].match: expected at least one entry in 'names' or 'paths'"),
}


@pytest.mark.parametrize("text, expected", PROBLEMS.values(), ids=PROBLEMS.keys())
def test_each_problem_names_line_field_and_reason(text, expected):
    assert only_problem(text).startswith(expected)


def test_all_problems_of_a_file_are_reported_in_line_order():
    text = HEADER + """\
  defaultAction: deny
  egress:
    - name: r
      action: block
      to:
        - cidr: 10.0.0.1/8
          ports: [0, 80, "90-80"]
    - name: r
      action: allow
      to: [{}]
  sockets:
    raw: sometimes
"""
    problems = problems_of(text)
    assert [problem.split(": ")[0:2] for problem in problems] == [
        ["policy.yaml:6", "spec.defaultAction"],
        ["policy.yaml:11", "spec.egress[0].to[0].cidr"],
        ["policy.yaml:12", "spec.egress[0].to[0].ports[0]"],
        ["policy.yaml:12", "spec.egress[0].to[0].ports[2]"],
        ["policy.yaml:13", "spec.egress[1].name"],
        ["policy.yaml:17", "spec.sockets.raw"],
    ]


def test_problem_renders_source_line_field_message():
    problem = Problem("policy.yaml", 12, "spec.egress[0].to[1].cidr", "invalid CIDR '10.0.0.0/33'")
    assert str(problem) == "policy.yaml:12: spec.egress[0].to[1].cidr: invalid CIDR '10.0.0.0/33'"


def test_unreadable_file_is_a_policy_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(missing)
    assert str(caught.value.problems[0]) == (
        f"{missing}:0: <file>: cannot read the policy file: No such file or directory")
    with pytest.raises(PolicyError):
        load_policy(tmp_path)                 # a directory


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(HEADER.encode() + b"  # caf\xe9\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value.problems[0]).startswith(f"{path}:6: <file>: not valid UTF-8")


# --- robustness -----------------------------------------------------------------

KNOWN_KEYS = ["apiVersion", "kind", "metadata", "name", "spec", "defaultAction", "egress",
              "action", "to", "cidr", "ports", "protocol", "exec", "match", "names", "paths",
              "sockets", "raw", "detections"]
KNOWN_WORDS = ["egress-guard/v1", "EgressPolicy", "allow", "log", "block", "kill", "tcp",
               "any", "deny", "10.0.0.0/8", "::1", "::ffff:1.2.3.4/120", "1-2", "/bin/sh"]
scalars = (st.none() | st.booleans() | st.integers(-5, 70000) | st.floats(allow_nan=False)
           | st.sampled_from(KNOWN_WORDS) | st.text(max_size=12))
yamlish = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6),
                                     inner, max_size=5)),
    max_leaves=30)


def parse_and_compile(text: str) -> None:
    try:
        compile_policy(parse_policy(text, "fuzz.yaml"))
    except PolicyError as exc:
        assert exc.problems and all(isinstance(p, Problem) for p in exc.problems)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text_raises_only_policy_error(text):
    parse_and_compile(text)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(yamlish)
def test_arbitrary_yaml_structures_raise_only_policy_error(structure):
    parse_and_compile(yaml.safe_dump(structure))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_example_with_one_value_replaced_raises_only_policy_error(data):
    """Mutations of a valid policy reach the deep validators, unlike random text."""
    document = yaml.safe_load(EXAMPLE.read_text())
    node, key = document, None
    while isinstance(node, (dict, list)) and node:
        key = data.draw(st.sampled_from(list(node) if isinstance(node, dict)
                                        else range(len(node))))
        if not data.draw(st.booleans()) or not isinstance(node[key], (dict, list)):
            break
        node = node[key]
    if key is not None:
        node[key] = data.draw(yamlish)
    parse_and_compile(yaml.safe_dump(document))


# --- policy sets and selectors ----------------------------------------------

SET = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata: {name: everyone}
spec: {}
---
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata: {name: agents}
spec:
  selector:
    containerNames: ["agent-*"]
---
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata: {name: rl-agents}
spec:
  selector:
    containerNames: ["agent-*"]
    podLabels:
      matchLabels: {team: rl}
      matchExpressions:
        - {key: tier, operator: NotIn, values: [prod]}
  identityLabels: [sandbox.example/episode]
"""


def test_the_most_specific_selector_wins_and_the_rest_fall_back():
    from guard.policy.model import Workload, select_policy
    from guard.policy.load import parse_policies

    policies = parse_policies(SET, "set.yaml")
    assert [p.name for p in policies] == ["everyone", "agents", "rl-agents"]
    assert policies[2].identity_labels == ("sandbox.example/episode",)
    rl = Workload("/c", container_name="agent-1", namespace="ns", pod_labels={"team": "rl"})
    assert select_policy(policies, rl) == 2
    prod = Workload("/c", container_name="agent-1", pod_labels={"team": "rl", "tier": "prod"})
    assert select_policy(policies, prod) == 1       # NotIn excludes it: the next best
    assert select_policy(policies, Workload("/c", container_name="web")) == 0
    assert select_policy(policies[1:], Workload("/c")) is None   # no fallback in the set


def test_policy_set_problems_name_their_document_line():
    from guard.policy.load import parse_policies

    bad = SET.replace("name: agents", "name: everyone").replace("operator: NotIn",
                                                                "operator: Sometimes")
    with pytest.raises(PolicyError) as caught:
        parse_policies(bad, "set.yaml")
    text = "\n".join(map(str, caught.value.problems))
    assert "set.yaml:6: metadata.name: duplicate policy name 'everyone' (first at line 1)" in text
    assert "invalid operator 'Sometimes'" in text
    with pytest.raises(PolicyError, match="a selector needs at least one term"):
        parse_policies(SET.replace('containerNames: ["agent-*"]\n---', "{}\n---"), "set.yaml")


# --- one ranking of actions, two spellings ---------------------------------------------

def test_every_kernel_action_has_one_rank_and_its_word_the_same():
    """ACTION_RANK (by abi.Action) is the one ranking; ACTION_WORD_RANK (by the
    word, Action.label) is the same ranking, and orders the actions alike."""
    from guard.policy.model import ACTION_RANK, ACTION_WORD_RANK

    # a new Action needs a rank; audit's WOULD_ actions rank as what they would do
    assert set(ACTION_RANK) == {action.enforced for action in Action}
    assert all(action.audited.enforced == action for action in ACTION_RANK)
    assert len(set(ACTION_RANK.values())) == len(ACTION_RANK)
    assert ACTION_WORD_RANK == {action.label: rank for action, rank in ACTION_RANK.items()}
    assert sorted(ACTION_WORD_RANK, key=ACTION_WORD_RANK.__getitem__) == \
        [action.label for action in sorted(ACTION_RANK, key=ACTION_RANK.__getitem__)]
    assert [a.label for a in sorted(ACTION_RANK, key=ACTION_RANK.__getitem__)] == \
        ["allow", "log", "block", "kill"]
    # the kernel compares verdicts by value: WOULD_ keeps the enforce order above LOG
    assert Action.LOG < Action.WOULD_BLOCK < Action.WOULD_KILL
    assert [a.label for a in (Action.WOULD_BLOCK, Action.WOULD_KILL)] == ["log", "log"]
    assert [a.would for a in (Action.WOULD_BLOCK, Action.WOULD_KILL, Action.BLOCK)] == \
        ["block", "kill", None]


def test_the_words_a_policy_spells_actions_with_are_the_kernels_labels():
    from guard.policy.model import (ACTION_WORD_RANK, DETECTION_ACTIONS, EGRESS_ACTIONS,
                                    EXEC_ACTIONS)

    for words in (EGRESS_ACTIONS, EXEC_ACTIONS):
        assert all(action.label == word for word, action in words.items())
    assert set(DETECTION_ACTIONS) - {"off"} <= set(ACTION_WORD_RANK)


def test_the_detector_and_the_compiler_agree_on_the_strongest_action():
    """strongest() (detections, words) and the compiler's precedence (rules,
    kernel actions) pick the same action from any mix."""
    import itertools

    from guard.detect.classify import Finding
    from guard.detect.detector import Detection, strongest
    from guard.policy.compile import PortRule, compile_policy
    from guard.policy.model import DETECTION_ACTIONS

    words = [w for w in DETECTION_ACTIONS if w != "off"]
    for size in range(1, len(words) + 1):
        for mix in itertools.product(words, repeat=size):
            found = [Detection(Finding("stratum", "high"), word) for word in mix]
            assert strongest(found) == max(
                (Action[word.upper()] for word in mix), key=int).label
    # two egress rules on one network: the compiler puts the stronger first
    for weak, strong in itertools.combinations(["allow", "log", "block"], 2):
        text = HEADER + "  egress:\n" + "".join(
            f"    - name: {name}\n      action: {action}\n      to:\n        - cidr: 10.0.0.0/8\n"
            for name, action in (("a", weak), ("b", strong)))
        [rules] = compile_policy(parse_policy(text, "p.yaml")).v4.values()
        assert [rule.action.label for rule in rules] == [strong, weak]
        assert all(isinstance(rule, PortRule) for rule in rules)


def test_no_policy_module_reaches_into_another_modules_private_names():
    """Between guard/policy's modules (and from them into guard/) only
    public names: what one reuses of another is that one's API."""
    import ast
    from pathlib import Path

    import guard.policy

    reached = []
    for path in sorted(Path(guard.policy.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("guard"):
                reached += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
                modules |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                modules |= {(a.asname or a.name).split(".")[0] for a in node.names
                            if a.name.startswith("guard")}
        reached += [f"{path.name}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
                    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules and node.attr.startswith("_")
                    and not node.attr.startswith("__")]
    assert reached == []
