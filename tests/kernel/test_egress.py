# SPDX-License-Identifier: Apache-2.0
"""Egress verdicts in the kernel: real sockets in a guarded cgroup and an
unguarded sibling, judged by a running `egress-guard run`."""
from __future__ import annotations

import socket

import pytest

from guard.kernel.abi import Action, Proto
from guard.policy.compile import compile_policy, simulate
from guard.policy.load import load_policy
from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .conftest import Listener, try_connect

POLICY = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: kernel-egress
spec:
  defaultAction: log
  egress:
    - name: block-test-port
      action: block
      to:
        - cidr: 127.0.0.0/8
          ports: [29001, "29010-29020"]
          protocol: tcp
        - cidr: "::1/128"
          ports: [29001]
    - name: block-udp
      action: block
      to:
        - cidr: 127.0.0.0/8
          ports: [29002]
          protocol: udp
    - name: allow-one-host
      action: allow
      to:
        - cidr: 127.0.0.2/32
    - name: block-one-port-of-a-host
      action: block
      to:
        - cidr: 127.0.0.4/32
          ports: [29040]
    - name: quiet-port
      action: allow
      to:
        - ports: [29030]
  sockets:
    raw: deny
"""
TCP_PORTS = (29001, 29015, 29021, 29030, 29040)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    policy_path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy_path.write_text(POLICY)
    listener = Listener()
    with TempCgroup("egress-guard-test") as guarded, TempCgroup("egress-guard-sibling") as sibling:
        try:
            for port in TCP_PORTS:
                listener.listen("::", port, socket.AF_INET6)
            listener.listen("127.0.0.1", 29002, udp=True)
            with AgentProcess([str(guarded.path)], policy=policy_path) as agent:
                yield guarded, sibling, agent, policy_path
        finally:
            listener.close()


def connect_event(agent, guarded, port, **match):
    def wanted(e):
        return (e["kind"] == "connect" and e["cgroup"]["id"] == guarded.id
                and e["dst"]["port"] == port
                and all(e[k] == v for k, v in match.items()))
    return agent.wait_for(wanted)


def test_blocked_port_is_refused_only_in_the_guarded_cgroup(setup):
    guarded, sibling, agent, _ = setup
    assert try_connect(guarded, "127.0.0.1", 29001) == "EPERM"
    assert try_connect(sibling, "127.0.0.1", 29001) == "ok"
    event = connect_event(agent, guarded, 29001, family="ipv4")
    assert event["action"] == "block"
    assert event["rule"] == "block-test-port"
    assert event["proto"] == "tcp"
    assert event["dst"] == {"ip": "127.0.0.1", "port": 29001}
    assert event["hook"] == "connect"
    assert event["cgroup"]["path"] == guarded.cgroup.relative
    assert event["process"]["argv"][0].endswith("python3") or "python" in event["process"]["argv"][0]
    assert event["policy"] == {"name": "kernel-egress", "generation": 1}
    # the sibling is not guarded: nothing about it is reported
    assert not [e for e in agent.events if e.get("cgroup", {}).get("id") == sibling.id]


def test_ipv6_destination_is_judged_by_ipv6_rules(setup):
    guarded, sibling, agent, _ = setup
    assert try_connect(guarded, "::1", 29001) == "EPERM"
    assert try_connect(sibling, "::1", 29001) == "ok"
    event = connect_event(agent, guarded, 29001, family="ipv6")
    assert event["dst"]["ip"] == "::1" and event["action"] == "block"


def test_ipv4_mapped_ipv6_is_judged_as_ipv4(setup):
    guarded, _, agent, _ = setup
    # 127.0.0.5 is only reachable through the IPv4 rule for 127.0.0.0/8
    assert try_connect(guarded, "::ffff:127.0.0.5", 29001) == "EPERM"
    event = connect_event(agent, guarded, 29001, family="ipv4",
                          dst={"ip": "127.0.0.5", "port": 29001})
    assert event["rule"] == "block-test-port"


def test_udp_sendto_without_connect_is_judged(setup):
    guarded, sibling, agent, _ = setup
    assert try_connect(guarded, "127.0.0.1", 29002, "udp", "sendto") == "EPERM"
    assert try_connect(sibling, "127.0.0.1", 29002, "udp", "sendto") == "ok"
    event = connect_event(agent, guarded, 29002, hook="sendmsg")
    assert event["proto"] == "udp" and event["rule"] == "block-udp"
    # the TCP-only rule does not catch UDP to the same port range
    assert try_connect(guarded, "127.0.0.1", 29015, "udp", "sendto") == "ok"


def test_port_range(setup):
    guarded, _, agent, _ = setup
    assert try_connect(guarded, "127.0.0.1", 29015) == "EPERM"
    assert try_connect(guarded, "127.0.0.1", 29021) == "ok"
    assert connect_event(agent, guarded, 29015, proto="tcp")["action"] == "block"
    logged = connect_event(agent, guarded, 29021)
    assert logged["action"] == "log" and logged["rule"] is None  # the policy default


def test_precedence_matches_the_compiler_and_the_kernel(setup):
    guarded, _, agent, policy_path = setup
    compiled = compile_policy(load_policy(policy_path))
    # hosts (/32) are in eg_host4, wider IPv4 prefixes in eg_cidr4: a host's
    # entry carries the rules of every prefix around it (127.0.0.4 on 29001
    # is refused by the /8's rule, on 29030 allowed by the rule for any address)
    cases = [("127.0.0.2", 29001), ("127.0.0.3", 29001), ("127.0.0.2", 29030),
             ("127.0.0.1", 29030), ("127.0.0.1", 29040), ("127.0.0.4", 29040),
             ("127.0.0.4", 29001), ("127.0.0.4", 29030), ("127.0.0.4", 29021)]
    for ip, port in cases:
        expected, _rule = simulate(compiled, ip, port, Proto.TCP)
        outcome = try_connect(guarded, ip, port)
        assert outcome == ("EPERM" if expected == Action.BLOCK else "ok"), (ip, port, expected)
    # the most specific prefix wins: the /32 allow beats the /8 block
    assert try_connect(guarded, "127.0.0.2", 29001) == "ok"
    assert try_connect(guarded, "127.0.0.3", 29001) == "EPERM"
    assert [try_connect(guarded, "127.0.0.4", port) for port in (29040, 29001, 29030, 29021)] \
        == ["EPERM", "EPERM", "ok", "ok"]


def test_allow_rules_are_silent_and_log_is_reported(setup):
    guarded, _, agent, _ = setup
    assert try_connect(guarded, "127.0.0.1", 29030) == "ok"   # quiet-port: allow
    assert try_connect(guarded, "127.0.0.1", 29040) == "ok"   # default: log
    connect_event(agent, guarded, 29040, action="log")
    assert not [e for e in agent.events if e.get("dst", {}).get("port") == 29030]
