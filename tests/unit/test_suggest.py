# SPDX-License-Identifier: Apache-2.0
"""`egress-guard policy suggest`: recorded events (tests/fixtures/events/
recorded.jsonl: a package install by name, a git clone by address, DNS to
the runtime's resolver, a refused connect, an audit-mode connect, another
workload) -> a policy that loads, compiles and passes `policy check`, with
a comment before every rule, names where the events name the destination,
addresses otherwise; hostile input never raises."""
from __future__ import annotations

import re

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.cli.commands import main
from guard.cli.exitcodes import ExitCode
from guard.kernel.abi import Proto
from guard.policy.compile import compile_policy
from guard.policy.load import default_policy, parse_policy
from guard.policy.model import Selector, Workload
from guard.policy.suggest import GROUP_MIN, MAX_RANGES, selector_terms, suggest
from tests.conftest import FIXTURES

RECORDED = FIXTURES / "events" / "recorded.jsonl"


def recorded() -> list[dict]:
    return [orjson.loads(line) for line in RECORDED.read_bytes().splitlines() if line]


def targets(policy) -> dict[str, list]:
    """rule name -> [(host or cidr, ports, protocol)]"""
    return {rule.name: [(t.host or ",".join(map(str, t.networks)), t.ports, t.proto)
                        for t in rule.targets] for rule in policy.egress}


@pytest.fixture(scope="module")
def agent_policy():
    made = suggest(recorded(), selector_terms(["containerName=agent-*"]))
    return made, parse_policy(made.text, "<suggested>")


def test_the_suggestion_loads_compiles_and_passes_policy_check(agent_policy, tmp_path):
    made, policy = agent_policy
    compiled = compile_policy(policy)
    assert compiled.names is not None
    path = tmp_path / "suggested.yaml"
    path.write_text(made.text)
    result = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == ExitCode.OK, result.output


def test_names_where_the_events_name_the_destination_and_addresses_otherwise(agent_policy):
    _made, policy = agent_policy
    assert targets(policy) == {
        "below-mirrors.example.net": [("*.mirrors.example.net", ((443, 443),), Proto.TCP)],
        "host-x.svc.example.org": [("x.svc.example.org", ((8443, 8443),), Proto.TCP)],
        "host-y.svc.example.org": [("y.svc.example.org", ((8443, 8443),), Proto.TCP)],
        "host-pypi.org": [("pypi.org", ((443, 443),), Proto.TCP)],
        "host-files.pythonhosted.org": [("files.pythonhosted.org", ((443, 443),), Proto.TCP)],
        "ip-192.0.2.10": [("192.0.2.10/32", ((9418, 9418),), Proto.TCP)],
        "ip-192.0.2.123": [("192.0.2.123/32", ((123, 123),), Proto.UDP)],
        "ip-203.0.113.50": [("203.0.113.50/32", ((443, 443),), Proto.TCP)],   # audit: would
        "ip-2001-db8--5": [("2001:db8::5/128", ((8080, 8080),), Proto.TCP)],
    }
    # the refused connect, and the other workload's, are not allowed
    assert "198.18.0.7" not in _made.text and "203.0.113.9" not in _made.text
    # the resolver is trusted, so its port needs no rule
    assert [str(n) for t in policy.dns.resolvers for n in t.networks] == ["10.88.0.1/32"]
    assert "10.88.0.1/32" not in str(targets(policy))


def test_the_rest_of_the_policy(agent_policy):
    _made, policy = agent_policy
    assert policy.default_action.label == "block"
    assert policy.exec_rules == () and policy.deny_raw_sockets
    assert dict(policy.detections) == dict(default_policy().detections)
    assert policy.selector == Selector(container_names=("agent-*",))


def test_every_rule_has_a_comment_with_its_events_and_times(agent_policy):
    made, policy = agent_policy
    text_lines = made.text.splitlines()
    for rule in policy.egress:
        index = text_lines.index(f"    - name: {rule.name}")
        comment = text_lines[index - 1]
        assert re.fullmatch(r"    # .+: \d+ events?, (first seen \S+Z, last seen \S+Z|seen \S+Z)",
                            comment), comment
    pypi = text_lines[text_lines.index("    - name: host-pypi.org") - 1]
    # 3 connects with dst.name, 1 over IPv6, 1 named by the workload's DNS answer
    assert pypi.startswith("    # pypi.org: 5 events, first seen 2026-11-28T10:00:07.")
    wide = text_lines[text_lines.index("    - name: below-mirrors.example.net") - 1]
    assert "3 names seen: a.mirrors.example.net, b.mirrors.example.net, c.mirrors" in wide


def test_what_was_left_out_is_said(agent_policy):
    made, _policy = agent_policy
    notes = "\n".join(made.notes)
    assert "connects refused when recorded (left out): 1" in notes
    assert "events of workloads --selector leaves out: 2" in notes
    assert "connects to the resolvers, which need no rule (spec.dns): 1" in notes


def test_without_a_selector_every_workload_counts():
    made = suggest(recorded())
    policy = parse_policy(made.text)
    assert policy.selector is None
    assert "ip-203.0.113.9" in targets(policy)


def event(ip, port, name=None, proto="tcp", action="log", ts="2026-11-28T10:00:00Z", **extra):
    dst = {"ip": ip, "port": port, **({"name": name} if name else {})}
    return {"ts": ts, "kind": "connect", "action": action, "rule": None,
            "cgroup": {"id": 1, "path": "/w"}, "proto": proto, "dst": dst, "hook": "connect",
            **extra}


def test_names_are_widened_only_for_many_siblings_under_a_parent_that_may_be():
    names = ["a.x.example.com", "b.x.example.com"]           # two: kept as they are
    names += [f"n{i}.cdn.example.com" for i in range(GROUP_MIN)]
    names += [f"b{i}.s3.amazonaws.com" for i in range(5)]   # shared by strangers: never
    names += [f"s{i}.co.uk" for i in range(5)]              # a registry's level: never
    names += ["single", "other-single"]                       # one label
    made = suggest([event(f"192.0.2.{i}", 443, name) for i, name in enumerate(names)])
    hosts = {t.host for rule in parse_policy(made.text).egress for t in rule.targets}
    assert hosts == {"a.x.example.com", "b.x.example.com", "*.cdn.example.com", "single",
                     "other-single", *[n for n in names if "amazonaws" in n or "co.uk" in n]}


def test_ports_as_seen_runs_as_ranges_and_too_many_widened():
    seen = [event("192.0.2.1", port) for port in (80, 443, 8000, 8001, 8002, 9000, 9001)]
    seen += [event("192.0.2.1", 53, proto="udp")]
    seen += [event("192.0.2.2", 1000 + 2 * i) for i in range(MAX_RANGES + 1)]
    made = suggest(seen)
    policy = parse_policy(made.text)
    assert targets(policy)["ip-192.0.2.1"] == [
        ("192.0.2.1/32", ((80, 80), (443, 443), (8000, 8002), (9000, 9000), (9001, 9001)),
         Proto.TCP),
        ("192.0.2.1/32", ((53, 53),), Proto.UDP)]
    assert targets(policy)["ip-192.0.2.2"] == [
        ("192.0.2.2/32", ((1000, 1000 + 2 * MAX_RANGES),), Proto.TCP)]
    assert f"{MAX_RANGES + 1} ports seen, widened to 1000-{1000 + 2 * MAX_RANGES}" in made.text


def test_names_without_dns_events_trust_the_hosts_resolvers():
    made = suggest([event("192.0.2.1", 443, "pypi.org")])
    policy = parse_policy(made.text)
    assert policy.dns.resolvers is None
    assert "/etc/resolv.conf" in made.text
    compile_policy(policy)


def test_no_names_no_dns_section_and_nothing_done_is_an_empty_policy():
    made = suggest([event("192.0.2.1", 443, action="block")])
    policy = parse_policy(made.text)
    assert policy.egress == () and not policy.uses_names and "dns:" not in made.text
    assert made.rules == 0


def test_ipv4_mapped_and_unspecified_addresses_are_judged_as_the_kernel_does():
    made = suggest([event("::ffff:192.0.2.9", 443), event("0.0.0.0", 8080)])
    assert set(targets(parse_policy(made.text))) == {"ip-192.0.2.9", "ip-127.0.0.1"}


@pytest.mark.parametrize("terms, selector", [
    (["containerName=a*", "containerName=b"], Selector(container_names=("a*", "b"))),
    (["image=reg/x:*", "cgroupPath=/k/*", "namespace=ns"],
     Selector(images=("reg/x:*",), cgroup_paths=("/k/*",), namespaces=("ns",))),
])
def test_selector_terms(terms, selector):
    assert selector_terms(terms) == selector


@pytest.mark.parametrize("terms", [["nope"], ["color=red"], ["label.a=1", "label.a=2"], ["=x"]])
def test_bad_selector_terms(terms):
    with pytest.raises(ValueError):
        selector_terms(terms)


def test_labels_select_by_the_events_identity_and_go_into_the_policy():
    one = event("192.0.2.1", 443, identity={"team": "rl"}, k8s={"namespace": "agents",
                                                              "pod": "p", "labels": {"app": "x"}})
    other = event("192.0.2.2", 443, identity={"team": "web"})
    selector = selector_terms(["label.team=rl", "podLabel.app=x", "namespace=agents"])
    made = suggest([one, other], selector)
    policy = parse_policy(made.text)
    assert set(targets(policy)) == {"ip-192.0.2.1"}
    assert policy.selector.matches(Workload(cgroup_path="/w", labels={"team": "rl"},
                                            namespace="agents", pod_labels={"app": "x"}))


def test_a_bad_name_is_refused():
    with pytest.raises(ValueError):
        suggest([], name="Not A Name")


# -- the command -----------------------------------------------------------------------


def test_command_writes_a_file_and_notes_on_stderr(tmp_path):
    out = tmp_path / "p.yaml"
    result = CliRunner().invoke(main, ["policy", "suggest", str(RECORDED), "--selector",
                                       "containerName=agent-*", "-o", str(out), "--name", "pip"])
    assert result.exit_code == ExitCode.OK, result.output
    assert parse_policy(out.read_text()).name == "pip"
    assert "egress-guard: note: connects refused when recorded (left out): 1" in result.stderr
    assert result.stdout == ""


def test_command_reads_stdin_counts_malformed_lines_and_never_shows_a_traceback():
    data = b"not json\n[1]\n" + RECORDED.read_bytes() + b"\xff\xfe\n{\"kind\": \"connect\"\n"
    result = CliRunner().invoke(main, ["policy", "suggest", "-"], input=data)
    assert result.exit_code == ExitCode.OK, result.output
    parse_policy(result.stdout)
    assert "4 malformed line(s) skipped (first: <stdin>:1: not JSON)" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, code", [
    (["--selector", "bogus"], ExitCode.USAGE),
    (["--name", "UPPER"], ExitCode.USAGE),
])
def test_command_errors_are_one_line(args, code):
    result = CliRunner().invoke(main, ["policy", "suggest", str(RECORDED), *args])
    assert result.exit_code == code
    assert result.stderr.startswith("egress-guard: error: ") and \
        len(result.stderr.strip().splitlines()) == 1


def test_command_missing_events_file(tmp_path):
    result = CliRunner().invoke(main, ["policy", "suggest", str(tmp_path / "none")])
    assert result.exit_code == ExitCode.USAGE
    assert "No such file" in result.stderr


# -- hostile input ---------------------------------------------------------------------

VALUES = st.none() | st.booleans() | st.integers(-2, 70000) | st.text(max_size=12) | \
    st.sampled_from(["tcp", "udp", "connect", "sendmsg", "bind", "log", "allow", "block",
                     "answer", "query", "192.0.2.1", "::1", "pypi.org", "*.x.org",
                     "2026-11-28T10:00:00Z", "a..b", "x" * 300])
NESTED = st.recursive(VALUES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["ip", "port", "name", "proto", "answers", "learned", "trusted", "ttl",
                     "id", "path", "host", "type", "evidence"]), inner, max_size=5),
    max_leaves=15)
EVENT = st.fixed_dictionaries({"kind": st.sampled_from(["connect", "dns", "detection", "exec"])},
                              optional={key: NESTED for key in (
                                  "ts", "action", "would", "dst", "proto", "hook", "cgroup",
                                  "container", "direction", "dns", "resolver", "detection",
                                  "identity", "k8s")})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENT, max_size=12))
def test_events_of_any_shape_give_a_valid_policy(events):
    made = suggest(events)      # SuggestError here would be a bug: it must pass check
    compile_policy(parse_policy(made.text))
