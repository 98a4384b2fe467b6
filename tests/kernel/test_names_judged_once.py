# SPDX-License-Identifier: Apache-2.0
"""What dns.bpf.c remembers between packets so that a lookup loop does not
read the same name again and again, held to what it may remember:

- a query a policy generation allowed, by its bytes past the id
  (eg_dns_allowed): the same bytes under another generation are judged
  again, and so is anything that differs in one byte (letter case too);
- the name an answer's question matched, kept in its fold entry
  (eg_dns_fold): under another generation the question is matched again, so
  an answer for a name the new policy does not name teaches nothing.

Each test runs its own agent (they reload its policy)."""
from __future__ import annotations

import struct
import sys

import pytest

from guard.control.server import request
from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .dnsfixtures import TestResolver, build_query
from .test_names import (TCP_QUERY, UDP_QUERY, connect_once, names_policy,  # noqa: F401
                         resolver, server)

IDENT = 0x4242   # one id for every copy of a query: its bytes are the same throughout


def send(resolver: TestResolver, cgroup, query: bytes, proto: str) -> str:
    """The query sent from the cgroup as it is: "answered ...", or what stopped it."""
    script = UDP_QUERY if proto == "udp" else TCP_QUERY
    result = resolver.run([sys.executable, "-c", script, resolver.ip, query.hex()], cgroup)
    return result.stdout.strip() or result.stderr.strip()


def reload(agent: AgentProcess, path, text: str) -> None:
    path.write_text(text)
    assert request(agent.control_socket, {"op": "reload"})["ok"]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_a_query_allowed_under_one_generation_is_judged_again_under_the_next(
        resolver, server, tmp_path, proto):
    query = build_query("one.egtest", ident=IDENT)
    path = tmp_path / "policy.yaml"
    allowing = names_policy(resolver, server.port)
    path.write_text(allowing)
    with TempCgroup("eg-names-once") as cgroup, \
            AgentProcess([cgroup.path], policy=path) as agent:
        # the second copy is the one the kernel remembered allowing
        assert send(resolver, cgroup, query, proto).startswith("answered")
        assert send(resolver, cgroup, query, proto).startswith("answered")
        before = len(resolver.queries("one.egtest"))
        reload(agent, path, names_policy(resolver, server.port, hosts=["alias.egtest"],
                                         name="names-v2"))
        assert not send(resolver, cgroup, query, proto).startswith("answered")
        assert len(resolver.queries("one.egtest")) == before   # the resolver never saw it
        refused = agent.wait_for(lambda e: e.get("kind") == "dns" and e["direction"] == "query"
                                 and e["dns"]["name"] == "one.egtest")
        assert refused["action"] == "block" and refused["policy"]["name"] == "names-v2"
        reload(agent, path, allowing)
        assert send(resolver, cgroup, query, proto).startswith("answered")


def variants(query: bytes) -> dict[str, tuple[bytes, bool]]:
    """Queries one byte or so away from an allowed one, and whether the
    policy (one.egtest allowed, nothing else) allows each."""
    header, question = query[:12], query[12:]
    return {
        "letter case": (query.replace(b"one", b"oNe"), True),
        "another name of the same length": (query.replace(b"one", b"two"), False),
        "another type": (query[:-4] + struct.pack(">HH", 28, 1), True),
        "a second question": (header[:4] + b"\x00\x02" + header[6:] + question
                              + b"\x05three\x06egtest\x00\x00\x01\x00\x01", False),
        "a response bit": (header[:2] + b"\x81" + header[3:] + question, False),
        "one byte more": (query + b"\x00", True),
    }


def test_a_query_near_an_allowed_one_is_judged_on_its_own(resolver, server, tmp_path):
    query = build_query("one.egtest", ident=IDENT)
    path = tmp_path / "policy.yaml"
    path.write_text(names_policy(resolver, server.port, hosts=["one.egtest"]))
    with TempCgroup("eg-names-near") as cgroup, \
            AgentProcess([cgroup.path], policy=path):
        assert send(resolver, cgroup, query, "udp").startswith("answered")
        for what, (near, allowed) in variants(query).items():
            outcome = send(resolver, cgroup, near, "udp")
            if allowed:
                assert outcome.startswith("answered") or outcome == "timeout", (what, outcome)
                assert outcome != "EPERM", what
            else:
                assert outcome == "EPERM", (what, outcome)


def test_an_answer_matched_under_one_generation_is_matched_again_under_the_next(
        resolver, server, tmp_path):
    """Under defaultAction log the query passes whatever the policy names;
    its answer teaches an address only for a name the generation in force
    names, whatever an earlier generation's answer to the same question
    matched."""
    path = tmp_path / "policy.yaml"
    naming = names_policy(resolver, server.port, default="log", name="names-log")
    path.write_text(naming)
    ip = resolver.addresses("one.egtest")[0]
    with TempCgroup("eg-names-rematch") as cgroup, \
            AgentProcess([cgroup.path], policy=path) as agent:
        query = build_query("one.egtest", ident=IDENT)
        assert send(resolver, cgroup, query, "udp").startswith("answered")
        learned = agent.wait_for(lambda e: e.get("kind") == "dns"
                                 and e["direction"] == "answer"
                                 and e["dns"]["name"] == "one.egtest")
        assert learned["dns"]["learned"] == 1
        reload(agent, path, names_policy(resolver, server.port, default="log",
                                         hosts=["alias.egtest"], name="names-log-v2"))
        agent.drain()
        assert send(resolver, cgroup, query, "udp").startswith("answered")
        answer = agent.wait_for(lambda e: e.get("kind") == "dns" and e["direction"] == "answer"
                                and e["dns"]["name"] == "one.egtest"
                                and e["policy"]["name"] == "names-log-v2")
        assert answer["dns"]["learned"] == 0 and "no-rule" in answer["dns"]["why"]
        # the address is not allowed by a name: the connect gets defaultAction (log)
        assert connect_once(resolver, cgroup, ip, server.port) == "ok"
        connect = agent.wait_for(lambda e: e.get("kind") == "connect" and e["dst"]["ip"] == ip
                                 and e["policy"]["name"] == "names-log-v2")
        assert connect["action"] == "log"
