# SPDX-License-Identifier: Apache-2.0
"""`egress-guard policy test`: recorded events replayed against a policy
with the kernel's tables and precedence (compile_policy, simulate,
NameTable.verdict). The suggest -> test round trip reports nothing; a
stricter policy lists exactly the flows it refuses and exits 6; each rule of
precedence (CIDR and names, resolvers, binds, exec, raw sockets,
detections); hostile input never raises."""
from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from guard.cli.commands import main
from guard.cli.exitcodes import ExitCode
from guard.policy.compile import compile_policy
from guard.policy.load import parse_policies
from guard.policy.replay import Replay
from guard.policy.suggest import selector_terms, suggest
from tests.conftest import FIXTURES

RECORDED = FIXTURES / "events" / "recorded.jsonl"
HEAD = """apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: {name}
spec:
"""


def recorded() -> list[tuple[str, dict]]:
    return [(f"{RECORDED}:{n}", orjson.loads(line))
            for n, line in enumerate(RECORDED.read_bytes().splitlines(), start=1) if line]


def replay_of(yaml: str) -> Replay:
    policies = parse_policies(yaml)
    return Replay(policies, [compile_policy(p) for p in policies])


def one(yaml_spec: str, name: str = "p") -> Replay:
    return replay_of(HEAD.format(name=name) + yaml_spec)


CG = {"id": 1, "path": "/libpod_parent/libpod-aaaa"}


def connect(ip, port, name=None, proto="tcp", action="log", hook="connect", **extra):
    dst = {"ip": ip, "port": port, **({"name": name} if name else {})}
    return {"ts": "2026-11-28T10:00:00Z", "kind": "connect", "action": action, "rule": None,
            "cgroup": CG, "proto": proto, "dst": dst, "hook": hook, **extra}


# -- the round trip --------------------------------------------------------------------


@pytest.fixture(scope="module")
def suggested(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "suggested.yaml"
    made = suggest((event for _where, event in recorded()),
                   selector_terms(["containerName=agent-*"]))
    path.write_text(made.text)
    return path


def test_the_suggested_policy_changes_nothing_the_workload_did(suggested):
    result = CliRunner().invoke(main, ["policy", "test", str(suggested), str(RECORDED)])
    assert result.exit_code == ExitCode.OK, result.output
    (summary,) = result.stdout.splitlines()
    assert summary.startswith("policy test: 27 event(s) judged: 0 let through or refused "
                              "otherwise")
    assert summary.endswith("0 recorded as allowed would be refused")


def test_the_round_trip_in_json(suggested):
    result = CliRunner().invoke(main, ["policy", "test", "--json", str(suggested),
                                       str(RECORDED)])
    assert result.exit_code == ExitCode.OK
    (summary,) = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert summary["kind"] == "summary" and summary["refused"] == 0 and summary["exit"] == 0
    assert summary["outcome_changed"] == 0 and summary["judged"] == 27


STRICTER = HEAD.format(name="stricter") + """\
  selector:
    containerNames: ["agent-*"]
  defaultAction: block
  egress:
    - name: index
      action: allow
      to:
        - host: pypi.org
          ports: [443]
          protocol: tcp
    - name: git
      action: allow
      to:
        - cidr: 192.0.2.10/32
          ports: [9418]
  dns:
    resolvers:
      - cidr: 10.88.0.1/32
"""


def expected_refusals() -> list[str]:
    """Every connect of agent-1 let through when recorded, but pypi.org (also
    the address a pypi.org answer taught, without dst.name), the git server
    and the resolver."""
    kept = {"151.101.0.223", "151.101.64.223", "2a04:4e42::223", "192.0.2.10", "10.88.0.1"}
    return [where for where, event in recorded()
            if event["kind"] == "connect" and event["container"]["name"] == "agent-1"
            and event["action"] in ("allow", "log") and event["dst"]["ip"] not in kept]


def test_a_stricter_policy_lists_exactly_the_flows_it_refuses(tmp_path):
    path = tmp_path / "stricter.yaml"
    path.write_text(STRICTER)
    result = CliRunner().invoke(main, ["policy", "test", "--json", str(path), str(RECORDED)])
    assert result.exit_code == ExitCode.REFUSED == 6
    *changes, summary = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [c["where"] for c in changes] == expected_refusals()
    assert len(changes) == 12
    assert all(c["kind"] == "change" and c["old"] == "log" and c["new"] == "block"
               and c["refused"] and c["decided"] == "defaultAction" and c["rule"] is None
               and c["policy"] == "stricter" for c in changes)
    assert summary["refused"] == 12 and summary["exit"] == 6
    text = CliRunner().invoke(main, ["policy", "test", str(path), str(RECORDED)])
    assert text.exit_code == 6
    lines = text.stdout.splitlines()
    assert len(lines) == 13
    assert "log -> block connect   agent-1 pip[4242] tcp files.pythonhosted.org" \
           "(151.101.128.223):443 defaultAction of policy stricter" in lines[0]
    assert lines[-1].endswith("12 recorded as allowed would be refused")


def test_all_lists_the_changes_between_allow_and_log_too(suggested):
    result = CliRunner().invoke(main, ["policy", "test", "--all", "--json", str(suggested),
                                       str(RECORDED)])
    assert result.exit_code == ExitCode.OK
    *changes, summary = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert {(c["old"], c["new"]) for c in changes} == {("log", "allow")}
    assert len(changes) == summary["changed"] == 20


# -- precedence, as the kernel judges --------------------------------------------------

NAMES = """\
  defaultAction: block
  egress:
    - name: by-name
      action: {name_action}
      to:
        - host: pypi.org
          ports: [443]
          protocol: tcp
    - name: by-cidr
      action: {cidr_action}
      to:
        - cidr: 151.101.0.0/16
          ports: [443]
  dns:
    resolvers:
      - cidr: 10.88.0.1/32
"""


@pytest.mark.parametrize("name_action, cidr_action, named, expected", [
    ("allow", "block", True, ("block", "by-cidr")),      # the stricter
    ("block", "allow", True, ("block", "by-name")),
    ("allow", "log", True, ("log", "by-cidr")),
    ("allow", "allow", True, ("allow", "by-cidr")),      # a tie: the CIDR rule stays
    ("log", "allow", False, ("allow", "by-cidr")),       # no name: the CIDR rule alone
])
def test_the_stricter_of_the_cidr_and_the_name_rule(name_action, cidr_action, named, expected):
    replay = one(NAMES.format(name_action=name_action, cidr_action=cidr_action))
    event = connect("151.101.0.223", 443, "pypi.org" if named else None, action="kill")
    change = replay.feed(event)
    assert (change.new, change.verdict.rule) == expected


def test_a_name_alone_decides_and_without_it_the_default():
    replay = one(NAMES.format(name_action="allow", cidr_action="allow").replace(
        "151.101.0.0/16", "192.0.2.0/24"))
    assert replay.feed(connect("151.101.0.223", 443, "pypi.org", action="block")).new == "allow"
    change = replay.feed(connect("151.101.0.223", 443))
    assert (change.new, change.verdict.decided) == ("block", "defaultAction")
    assert replay.feed(connect("151.101.0.223", 80, "pypi.org")).new == "block"  # not its port


def test_an_answer_of_the_workload_names_the_address_while_its_ttl_lasts():
    replay = one(NAMES.format(name_action="allow", cidr_action="allow").replace(
        "151.101.0.0/16", "192.0.2.0/24"))
    answer = {"ts": "2026-11-28T10:00:00Z", "kind": "dns", "action": "allow", "cgroup": CG,
              "direction": "answer", "resolver": {"ip": "10.88.0.1", "port": 53},
              "dns": {"name": "pypi.org", "answers": [{"ip": "151.101.9.9", "ttl": 30}],
                      "ttl": 60, "learned": 1, "trusted": True}}
    assert replay.feed(answer) is None
    assert replay.feed(connect("151.101.9.9", 443, action="block",
                               ts="2026-11-28T10:00:59Z")).new == "allow"
    assert replay.feed(connect("151.101.9.9", 443, ts="2026-11-28T10:01:01Z")).new == "block"
    other = connect("151.101.9.9", 443, cgroup={"id": 2, "path": "/other"})
    assert replay.feed(other).new == "block"        # another workload's answer opens nothing


def test_names_answered_by_a_resolver_the_policy_does_not_trust_are_not_learned():
    replay = one(NAMES.format(name_action="allow", cidr_action="allow").replace(
        "151.101.0.0/16", "192.0.2.0/24").replace("10.88.0.1/32", "10.96.0.10/32"))
    answer = {"ts": "2026-11-28T10:00:00Z", "kind": "dns", "action": "allow", "cgroup": CG,
              "direction": "answer", "resolver": {"ip": "10.88.0.1", "port": 53},
              "dns": {"name": "pypi.org", "answers": [{"ip": "151.101.9.9", "ttl": 30}],
                      "ttl": 60, "learned": 1, "trusted": True}}
    replay.feed(answer)
    change = replay.feed(connect("151.101.9.9", 443, "pypi.org"))
    assert change.refused and change.verdict.decided == (
        "defaultAction (pypi.org was answered by 10.88.0.1:53, a resolver the policy does "
        "not trust)")
    # no recorded answer: dst.name is taken as learned
    assert replay.feed(connect("151.101.7.7", 443, "pypi.org")).new == "allow"


def test_trusted_resolvers_on_their_ports_unless_a_cidr_rule_decides():
    spec = NAMES.format(name_action="allow", cidr_action="allow")
    replay = one(spec)
    change = replay.feed(connect("10.88.0.1", 53, proto="udp", hook="sendmsg", action="block"))
    assert (change.new, change.verdict.rule) == ("allow", "dns-resolvers")
    assert replay.feed(connect("10.88.0.1", 5353, proto="udp")).new == "block"
    blocked = one(spec.replace("151.101.0.0/16", "10.0.0.0/8").replace("[443]", "[53]")
                  .replace("action: allow\n      to:\n        - cidr", "action: block\n"
                           "      to:\n        - cidr"))
    assert blocked.feed(connect("10.88.0.1", 53, proto="udp")).verdict.rule == "by-cidr"


def test_binds_to_a_resolver_port_are_refused_only_under_names():
    names = one(NAMES.format(name_action="allow", cidr_action="allow"))
    assert names.feed(connect("0.0.0.0", 53, proto="udp", hook="bind")).new == "block"
    plain = one("  defaultAction: log\n")
    change = plain.feed(connect("0.0.0.0", 53, proto="udp", hook="bind", action="block"))
    assert change.new == "allow" and not change.refused


def query(name, action="log", resolver="10.88.0.1", port=53, proto="udp", **extra):
    """A dns query event as the agent writes one under a policy that logs by name."""
    return {"ts": "2026-11-28T10:00:00Z", "kind": "dns", "action": action, "rule": None,
            "cgroup": CG, "direction": "query", "proto": proto,
            "resolver": {"ip": resolver, "port": port},
            "dns": {"name": name, "type": "A", "answers": [], "cnames": [], "learned": 0,
                    "trusted": True, "why": []}, **extra}


def test_queries_are_judged_by_the_names_the_policy_allows():
    replay = one(NAMES.format(name_action="allow", cidr_action="allow").replace(
        "host: pypi.org", 'host: "*.example.org"'))
    change = replay.feed(query("a.example.org"))          # log -> allow: let through either way
    assert (change.new, change.verdict.rule, change.refused) == ("allow", "by-name", False)
    assert change.verdict.decided == "rule by-name (name *.example.org)"
    refused = replay.feed(query("example.org"))            # "*." is strictly below
    assert (refused.new, refused.verdict.decided, refused.refused) == (
        "block", "defaultAction (no rule names the query)", True)
    assert refused.as_dict()["dns"]["name"] == "example.org"
    assert refused.as_dict()["resolver"] == {"ip": "10.88.0.1", "port": 53}
    # a name whose rules only log is asked with log; one refused at the time may pass now
    logging = one(NAMES.format(name_action="log", cidr_action="allow"))
    assert logging.feed(query("pypi.org")) is None
    assert logging.feed(query("pypi.org", action="block")).new == "log"
    # answers are never refused
    answer = dict(query("example.org"), direction="answer")
    assert replay.feed(answer) is None
    assert replay.counts["judged dns"] == 2 and replay.counts["refused"] == 1


def test_a_query_to_a_resolver_the_policy_does_not_trust_is_a_datagram_like_any_other():
    names = one(NAMES.format(name_action="allow", cidr_action="allow"))
    change = names.feed(query("pypi.org", resolver="10.96.0.10"))
    assert (change.new, change.verdict.decided) == ("block", "defaultAction")
    assert names.feed(query("pypi.org", port=5353)).new == "block"   # not a resolver port
    plain = one("""\
  defaultAction: block
  egress:
    - name: resolver
      action: allow
      to:
        - cidr: 10.88.0.1/32
          ports: [53]
""")
    assert plain.feed(query("anything.example", action="allow")) is None
    assert plain.feed(query("anything.example", resolver="10.88.0.2")).refused


def test_a_policy_allowing_the_address_but_not_the_name_refuses_the_lookup(tmp_path):
    """A git server allowed by its address alone: the connect passes, but
    under defaultAction block the query for its name never leaves, so the
    clone fails at the lookup; `policy test` says so (exit 6)."""
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in (
        query("pypi.org"), query("git.example"),
        connect("151.101.0.223", 443, "pypi.org"), connect("192.0.2.10", 9418, "git.example"))))
    policy = tmp_path / "policy.yaml"
    policy.write_text(HEAD.format(name="by-address") + NAMES.format(
        name_action="allow", cidr_action="allow").replace("151.101.0.0/16", "192.0.2.10/32")
        .replace("[443]\n  dns", "[9418]\n  dns"))
    result = CliRunner().invoke(main, ["policy", "test", "--json", str(policy), str(events)])
    assert result.exit_code == ExitCode.REFUSED, result.output
    *changes, summary = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(c["where"].rsplit(":", 1)[1], c["event_kind"], c["new"]) for c in changes] == \
        [("2", "dns", "block")]
    assert summary["refused"] == 1 and summary["by_kind"] == {"connect": 2, "dns": 2}


def test_connects_a_detection_refused_are_not_judged_again():
    replay = one("  defaultAction: allow\n")
    assert replay.feed(connect("192.0.2.1", 22, action="block", rule="detection")) is None
    assert replay.counts["not judged"] == 1


EXEC = """\
  exec:
    - name: no-netcat
      action: kill
      match:
        names: [nc]
    - name: watch-curl
      action: log
      match:
        paths: [/usr/bin/curl]
    - name: no-curl
      action: kill
      match:
        names: [curl]
"""


def exec_event(filename, exe, action="log"):
    return {"kind": "exec", "action": action, "rule": None, "cgroup": CG, "filename": filename,
            "process": {"pid": 5, "comm": "x", "exe": exe, "argv": []}}


def test_exec_rules_by_name_and_path_kill_beats_log():
    replay = one(EXEC)
    change = replay.feed(exec_event("/usr/bin/nc", "/usr/bin/nc.openbsd"))
    assert (change.old, change.new, change.verdict.rule, change.refused) == \
        ("log", "kill", "no-netcat", True)
    assert replay.feed(exec_event("/usr/bin/curl", "/usr/bin/curl")).verdict.rule == "no-curl"
    assert replay.feed(exec_event("/bin/ls", "/usr/bin/ls")) is None
    change = one("  defaultAction: log\n").feed(exec_event("/usr/bin/nc", "/x", action="kill"))
    assert (change.new, change.refused, change.outcome_changed) == ("log", False, True)


def test_raw_sockets():
    inet = {"kind": "socket", "action": "block", "cgroup": CG,
            "socket": {"family": "inet", "type": "raw", "protocol": 1}}
    packet = {**inet, "action": "kill", "socket": {"family": "packet", "type": "raw"}}
    deny = one("  sockets:\n    raw: deny\n")
    assert deny.feed(inet) is None and deny.feed(packet) is None
    allow = one("  sockets:\n    raw: allow\n")
    assert allow.feed(inet).new == "allow" and allow.feed(packet).new == "allow"


def detection(kind, action="log", confidence="high", **extra):
    return {"kind": "detection", "action": action, "cgroup": CG,
            "detection": {"type": kind, "dialect": "x", "confidence": confidence,
                          "evidence": extra.pop("evidence", {})}, "dst": None, **extra}


def test_detections_by_the_policys_settings():
    replay = one("  detections:\n    stratum: block\n    sshOutbound: kill\n"
                 "    tunnelTool: off\n")
    assert replay.feed(detection("stratum")).refused
    assert replay.feed(detection("miner_dns")).new == "block"          # stratum's key
    assert replay.feed(detection("ssh_outbound", confidence="low")) is None   # low: log
    change = replay.feed(detection("tunnel_tool", action="block"))
    assert (change.new, change.refused, change.outcome_changed) == ("off", False, True)
    assert replay.feed(detection("reverse_shell")) is None              # left out: log


def test_name_mismatch_asks_the_name_rules_for_the_host_the_payload_named():
    spec = NAMES.format(name_action="allow", cidr_action="allow").replace(
        "151.101.0.0/16", "192.0.2.0/24")
    dst = {"ip": "151.101.0.223", "port": 443, "proto": "tcp", "name": "pypi.org"}
    fronted = detection("name_mismatch", action="log", dst=dst,
                        evidence={"host": "evil.example", "learned": "pypi.org"})
    assert one(spec).feed(fronted).new == "block"        # what the address gets without it
    allowed = {**fronted, "action": "block",
               "detection": {**fronted["detection"], "evidence": {"host": "PyPI.org"}}}
    assert one(spec).feed(allowed).new == "allow"
    unnamed = {**fronted, "detection": {**fronted["detection"], "evidence": {"host": None}}}
    assert one(spec).feed(unnamed).new == "allow"         # spec.dns.unnamed: allow
    strict = one(spec.replace("  dns:\n", "  dns:\n    unnamed: block\n"))
    assert strict.feed(unnamed).new == "block"


def test_each_event_is_judged_by_the_policy_that_selects_its_workload():
    yaml = (HEAD.format(name="a") + "  selector:\n    containerNames: [a]\n"
            "  defaultAction: block\n---\n" + HEAD.format(name="b")
            + "  selector:\n    images: [img/b*]\n  defaultAction: allow\n")
    replay = replay_of(yaml)
    on_a = connect("192.0.2.1", 80, container={"id": "1", "name": "a"})
    on_b = connect("192.0.2.1", 80, container={"id": "2", "image": "img/b:1"})
    on_c = connect("192.0.2.1", 80, action="block")
    assert (replay.feed(on_a).verdict.policy, replay.feed(on_b).verdict.policy) == ("a", "b")
    assert replay.feed(on_c).verdict.policy == "default"        # run --unselected default


# -- the command -----------------------------------------------------------------------


def test_invalid_policy_exits_1_and_missing_events_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: nope\n")
    result = CliRunner().invoke(main, ["policy", "test", str(bad), str(RECORDED)])
    assert result.exit_code == ExitCode.FAILURE
    good = tmp_path / "good.yaml"
    good.write_text(STRICTER)
    result = CliRunner().invoke(main, ["policy", "test", str(good), str(tmp_path / "none")])
    assert result.exit_code == ExitCode.USAGE and "Traceback" not in result.output


def test_malformed_lines_are_counted_on_stderr_and_stdin_is_read(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(HEAD.format(name="p") + "  defaultAction: log\n")
    data = b"\x00\x01\n{\"kind\": \"connect\", \"action\": [1]}\n" + b"{" * 5000 + b"\n"
    result = CliRunner().invoke(main, ["policy", "test", str(good), "-"], input=data)
    assert result.exit_code == ExitCode.OK, result.output
    assert "2 malformed line(s) skipped (first: <stdin>:1: not JSON)" in result.stderr
    assert "Traceback" not in result.output


VALUES = st.none() | st.booleans() | st.integers(-2, 70000) | st.text(max_size=10) | \
    st.sampled_from(["tcp", "udp", "bind", "sendmsg", "log", "block", "kill", "allow",
                     "answer", "192.0.2.1", "::ffff:10.0.0.1", "pypi.org", "packet",
                     "name_mismatch", "stratum", "low", "2026-11-28T10:00:00Z", "detection",
                     "query", "10.88.0.1"])
NESTED = st.recursive(VALUES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["ip", "port", "name", "proto", "answers", "learned", "trusted", "ttl",
                     "type", "confidence", "evidence", "host", "family", "exe", "path",
                     "id"]), inner, max_size=5), max_leaves=15)
EVENT = st.fixed_dictionaries(
    {"kind": st.sampled_from(["connect", "dns", "detection", "exec", "socket", "agent"]),
     "action": VALUES},
    optional={key: NESTED for key in ("ts", "rule", "dst", "proto", "hook", "cgroup",
                                      "container", "direction", "dns", "detection", "socket",
                                      "filename", "process", "k8s", "identity", "resolver")})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENT, max_size=10))
def test_events_of_any_shape_never_raise(events):
    replay = one(NAMES.format(name_action="allow", cidr_action="log") + EXEC)
    for event in events:
        change = replay.feed(event)
        if change is not None:
            orjson.dumps(change.as_dict())
    replay.summary()
