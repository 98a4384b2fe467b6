# SPDX-License-Identifier: Apache-2.0
"""Audit mode (spec.mode: audit) without a kernel: both readers accept it,
the compiler turns every BLOCK and KILL of the kernel tables into WOULD_
without changing which rule wins, holds and exec stops are gone, events say
`would` beside the real action, and the agent (on the fake kernel) refuses,
kills, holds and resets nothing while saying what enforce would have done."""
from __future__ import annotations

import ipaddress
import random
import signal

import pytest

from guard.detect.classify import Finding
from guard.detect.detector import Detection, audit, decide
from guard.detect.vocabulary import kernel_plan
from guard.kernel.abi import Action, DetectFlags, Proto
from guard.policy.compile import compile_fail_closed, compile_policy, simulate
from guard.policy.load import parse_policy
from guard.policy.model import PolicyError
from guard.policy.replay import Replay
from guard.report.events import Clock, describe, describe_detection
from guard.kernel.records import decode
from guard.workloads.process import ProcessInfo

from ..fakekernel import FAKE_PID, connect_record, exec_record, fake_agent

HEAD = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: audited
spec:
"""
BODY = """\
  defaultAction: block
  egress:
    - name: wide-allow
      action: allow
      to:
        - cidr: 10.0.0.0/8
    - name: narrow-block
      action: block
      to:
        - cidr: 10.1.0.0/16
          ports: [22, "8000-8100"]
    - name: log-host
      action: log
      to:
        - cidr: 10.1.2.3/32
    - name: block-v6
      action: block
      to:
        - cidr: "2001:db8::/32"
          protocol: udp
    - name: by-name
      action: block
      to:
        - host: pool.example
          ports: [3333]
  exec:
    - name: no-netcat
      action: kill
      match:
        names: [nc]
    - name: watch-env
      action: log
      match:
        paths: [/usr/bin/env]
  detections:
    stratum: block
    minerExec: kill
    sshReverseTunnel: block
    reverseShell: kill
  failClosed:
    allow:
      - cidr: 10.0.0.53/32
"""
AUDIT = HEAD + "  mode: audit\n" + BODY
ENFORCE = HEAD + "  mode: enforce\n" + BODY


def _large(mode: str, rules: int = 300) -> str:
    """A policy the fast reader takes (a long, regular egress list)."""
    items = "".join(f"    - name: r{n}\n      action: block\n      to:\n"
                    f"        - cidr: 198.18.{n // 250}.{n % 250}/32\n"
                    f"          ports: [443]\n" for n in range(rules))
    return (HEAD + f"  mode: {mode}\n  feedback:\n    stderr: true\n    file: false\n"
            + "  egress:\n" + items)


# -- the readers ------------------------------------------------------------------

@pytest.mark.parametrize("fast", [True, False])
def test_both_readers_read_mode_and_feedback_alike(fast):
    for mode, audited in (("audit", True), ("enforce", False)):
        policy = parse_policy(_large(mode), "large.yaml", fast=fast)
        assert (policy.audit, policy.mode) == (audited, mode)
        assert (policy.feedback_stderr, policy.feedback_file) == (True, False)
    fast_one = parse_policy(_large("audit"), "large.yaml", fast=True)
    careful = parse_policy(_large("audit"), "large.yaml", fast=False)
    assert compile_policy(fast_one) == compile_policy(careful)


def test_the_defaults_are_enforce_and_no_feedback():
    policy = parse_policy(HEAD + BODY, "p.yaml")
    assert (policy.audit, policy.mode, policy.feedback_stderr, policy.feedback_file) == (
        False, "enforce", False, False)


@pytest.mark.parametrize("text, problem", [
    ("  mode: dry-run\n", "p.yaml:6: spec.mode: invalid mode 'dry-run' "
                          "(expected one of: enforce, audit)"),
    ("  mode: [audit]\n", "p.yaml:6: spec.mode: expected a string, got a list"),
    ("  feedback:\n    stderr: \"yes\"\n",
     "p.yaml:7: spec.feedback.stderr: expected true or false, got 'yes'"),
    ("  feedback:\n    stderr: 1\n", "p.yaml:7: spec.feedback.stderr: expected true or false, got 1"),
    ("  feedback:\n    tty: true\n",
     "p.yaml:7: spec.feedback.tty: unknown key 'tty' (expected one of: file, stderr)"),
    ("  feedback: true\n", "p.yaml:6: spec.feedback: expected a mapping, got"),
])
def test_bad_mode_and_feedback_are_problems_naming_the_place(text, problem):
    with pytest.raises(PolicyError) as caught:
        parse_policy(HEAD + text, "p.yaml")
    assert str(caught.value).startswith(problem), str(caught.value)


def test_feedback_left_empty_means_its_defaults():
    policy = parse_policy(HEAD + "  feedback:\n", "p.yaml")
    assert (policy.feedback_stderr, policy.feedback_file) == (False, False)


# -- the compiler -------------------------------------------------------------------

def _compiled(text: str):
    return compile_policy(parse_policy(text, "p.yaml"), kernel_plan)


def test_audit_tables_are_the_enforce_tables_with_every_refusal_a_would():
    audited, enforced = _compiled(AUDIT), _compiled(ENFORCE)
    assert audited.audit and not enforced.audit
    for table_a, table_e in ((audited.v4, enforced.v4), (audited.v6, enforced.v6)):
        assert list(table_a) == list(table_e)
        for network, rules in table_e.items():
            assert [(r.port_lo, r.port_hi, r.proto, r.action.audited, r.rule_id)
                    for r in rules] == [(r.port_lo, r.port_hi, r.proto, r.action, r.rule_id)
                                        for r in table_a[network]]
    assert Action.WOULD_BLOCK in {r.action for rules in audited.v4.values() for r in rules}
    assert audited.default_action == Action.WOULD_BLOCK
    assert audited.exec_names["nc"][0] == Action.WOULD_KILL
    assert audited.exec_paths["/usr/bin/env"] == enforced.exec_paths["/usr/bin/env"]
    assert audited.rule_names == enforced.rule_names


def test_the_same_rule_decides_in_both_modes():
    audited, enforced = _compiled(AUDIT), _compiled(ENFORCE)
    rng = random.Random(18)
    for _ in range(2000):
        ip = (str(ipaddress.IPv4Address(rng.choice([0x0A000000, 0x0A010000, 0x0A010203])
                                        + rng.randrange(0, 512)))
              if rng.random() < 0.8 else f"2001:db8::{rng.randrange(1, 99):x}")
        port, proto = rng.choice([22, 80, 443, 8050, 3333]), rng.choice([Proto.TCP, Proto.UDP])
        action_a, rule_a = simulate(audited, ip, port, proto)
        action_e, rule_e = simulate(enforced, ip, port, proto)
        assert (action_a, rule_a) == (action_e.audited, rule_e), (ip, port, proto)
        assert action_a.enforced == action_e and action_a.label in ("allow", "log")


def test_audit_holds_nothing_and_stops_nothing_at_exec():
    audited, enforced = _compiled(AUDIT), _compiled(ENFORCE)
    assert enforced.detect_flags & DetectFlags.HOLD and enforced.exec_holds
    assert not audited.detect_flags & DetectFlags.HOLD and not audited.exec_holds
    # sampling and the stdio watch stay: findings are still made and reported
    assert audited.detect_flags == enforced.detect_flags & ~DetectFlags.HOLD
    assert enforced.stdio_socket_action == Action.KILL
    assert audited.stdio_socket_action == Action.WOULD_KILL


def test_name_rules_and_queries_are_audited_too():
    audited, enforced = _compiled(AUDIT), _compiled(ENFORCE)
    assert audited.names is not None and enforced.names is not None
    verdict_a = audited.names.verdict("pool.example", 3333, int(Proto.TCP))
    verdict_e = enforced.names.verdict("pool.example", 3333, int(Proto.TCP))
    assert verdict_a == (verdict_e[0].audited, verdict_e[1]) == (Action.WOULD_BLOCK, verdict_e[1])
    for a, e in zip(audited.names.entries, enforced.names.entries):
        assert a.query_action == e.query_action.audited


def test_the_fail_closed_twin_of_an_audit_policy_audits():
    twin = compile_fail_closed(parse_policy(AUDIT, "p.yaml"), kernel_plan)
    assert twin.audit and twin.default_action == Action.WOULD_BLOCK
    assert simulate(twin, "10.0.0.53", 53, Proto.UDP)[0] == Action.ALLOW


def test_policy_test_judges_an_audit_policy_as_refusing_nothing():
    events = [{"kind": "connect", "action": "log", "would": "block", "rule": "narrow-block",
               "proto": "tcp", "family": "ipv4", "dst": {"ip": "10.1.9.9", "port": 22},
               "hook": "connect", "cgroup": {"id": 1, "path": "/w"}},
              {"kind": "exec", "action": "log", "would": "kill", "rule": "no-netcat",
               "filename": "/usr/bin/nc", "process": {"exe": "/usr/bin/nc"},
               "cgroup": {"id": 1, "path": "/w"}}]
    def replay(text):
        policy = parse_policy(text, "p.yaml")
        return Replay([policy], [compile_policy(policy)])
    audited, enforced = replay(AUDIT), replay(ENFORCE)
    # recorded under audit, replayed against the same policy: nothing changes
    assert [audited.feed(event) for event in events] == [None, None]
    # against its enforce twin: each would-be refusal is one
    changes = [enforced.feed(event) for event in events]
    assert [(c.verdict.action, c.verdict.rule) for c in changes] == [
        ("block", "narrow-block"), ("kill", "no-netcat")]
    assert enforced.summary()["refused"] == 2


# -- detections and events ----------------------------------------------------------

def test_decide_logs_under_audit_and_says_what_enforce_would_do():
    policy = parse_policy(AUDIT, "p.yaml")
    findings = [Finding("stratum", "high", "stratum-v1", {}),
                Finding("miner_exec", "high", "xmrig", {}),
                Finding("reverse_shell", "low", "bash", {}),       # a hint: only logged
                Finding("ssh_reverse_tunnel", "high", "ssh", {"block_bypass": ["mux"]})]
    decided = decide(findings, policy)
    assert [(d.action, d.would) for d in decided] == [
        ("log", "block"), ("log", "kill"), ("log", None), ("log", "kill")]
    assert [d.enforced for d in decided] == ["block", "kill", "log", "kill"]
    enforce = decide(findings, parse_policy(ENFORCE, "p.yaml"))
    assert [(d.action, d.would) for d in enforce] == [
        ("block", None), ("kill", None), ("log", None), ("kill", None)]
    assert audit(Detection(findings[0], "block"), None).action == "block"


def test_an_event_of_a_would_verdict_says_log_and_would_beside_it():
    record = decode(connect_record("10.1.9.9", 22, action=Action.WOULD_BLOCK, rule_id=2))
    event = describe(record, Clock(), "narrow-block", "/w", "audited",
                     ProcessInfo(exe=None, argv=[], argv_truncated=False))
    assert list(event)[:5] == ["ts", "kind", "action", "would", "rule"]
    assert (event["action"], event["would"]) == ("log", "block")
    plain = describe(decode(connect_record("10.1.9.9", 22, action=Action.BLOCK)), Clock(),
                     None, "/w", "enforced", ProcessInfo(exe=None, argv=[], argv_truncated=False))
    assert plain["action"] == "block" and "would" not in plain
    killed = decode(exec_record(["nc"], action=Action.WOULD_KILL))
    assert killed.header.action.label == "log" and killed.header.action.would == "kill"
    detection = describe_detection(record.header, Clock(), {"type": "stratum"}, "log", "/w",
                                   "audited", 1, ProcessInfo(exe=None, argv=[],
                                                             argv_truncated=False),
                                   would="block")
    assert (detection["action"], detection["would"]) == ("log", "block")
    assert list(detection)[:4] == ["ts", "kind", "action", "would"]


# -- the agent on the fake kernel ---------------------------------------------------

STRATUM = (b'{"id":1,"method":"mining.subscribe","params":["cpuminer/2.5.1"]}\n')


def test_the_agent_blocks_no_flow_and_says_it_would():
    with fake_agent(AUDIT) as fake:
        events = fake.payload(STRATUM, held=False)
        assert fake.maps.called("flow_verdict") == []
        assert fake.objects.called("run_socket_reset") == []
        found = [e for e in events if e["kind"] == "detection"]
        assert [(e["action"], e["would"]) for e in found] == [("log", "block")]
    with fake_agent(ENFORCE) as fake:
        fake.payload(STRATUM, held=True)
        assert [call[1] for call in fake.maps.called("flow_verdict")] == [Action.BLOCK]


def test_the_agent_kills_and_refuses_no_process_at_exec():
    ssh = ["ssh", "-R", "9000:localhost:22", "host.example"]
    miner = ["xmrig", "-o", "stratum+tcp://pool.example:3333", "-u", "wallet"]
    with fake_agent(AUDIT) as fake:
        events = fake.exec(ssh) + fake.exec(miner)
        assert fake.signals.signals_to(FAKE_PID) == []
        assert fake.maps.called("block_process") == []
        found = {e["detection"]["type"]: (e["action"], e["would"])
                 for e in events if e["kind"] == "detection"}
        assert found == {"ssh_reverse_tunnel": ("log", "block"), "miner_exec": ("log", "kill")}
    with fake_agent(ENFORCE) as fake:
        fake.exec(miner)
        assert fake.signals.signals_to(FAKE_PID) == [signal.SIGKILL]


def test_the_kernels_would_verdicts_become_events_with_would():
    with fake_agent(AUDIT) as fake:
        rule = fake.rule_id("narrow-block")
        connect = fake.connect("10.1.9.9", 22, action=Action.WOULD_BLOCK, rule_id=rule)
        killed = fake.exec(["nc", "-l"], action=Action.WOULD_KILL,
                           rule_id=fake.rule_id("no-netcat"))
        raw = fake.socket(action=Action.WOULD_KILL)
    assert [(e["action"], e["would"], e["rule"]) for e in connect] == [
        ("log", "block", "narrow-block")]
    assert [(e["action"], e["would"], e["rule"]) for e in killed if e["kind"] == "exec"] == [
        ("log", "kill", "no-netcat")]
    assert [(e["action"], e["would"]) for e in raw] == [("log", "kill")]


def test_a_udp_socket_on_stdio_would_be_killed_and_is_not():
    with fake_agent(AUDIT) as fake:
        events = fake.stdio_socket(proto=Proto.UDP)
        assert fake.signals.signals_to(FAKE_PID) == []
    assert [(e["action"], e["would"]) for e in events if e["kind"] == "detection"] == [
        ("log", "kill")]


def test_policy_check_says_an_audit_policy_refuses_nothing(tmp_path):
    from click.testing import CliRunner

    from guard.cli.commands import main

    audited, enforced = tmp_path / "audit.yaml", tmp_path / "enforce.yaml"
    audited.write_text(AUDIT)
    enforced.write_text(ENFORCE)
    runner = CliRunner()
    result = runner.invoke(main, ["policy", "check", str(audited)])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(", mode audit: refuses nothing)")
    result = runner.invoke(main, ["policy", "check", str(enforced)])
    assert result.exit_code == 0 and "mode audit" not in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "  mode: Audit\n")
    result = runner.invoke(main, ["policy", "check", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml:6: spec.mode: invalid mode 'Audit' (expected one of: enforce, audit)" \
        in result.output
