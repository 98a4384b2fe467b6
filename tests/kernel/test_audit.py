# SPDX-License-Identifier: Apache-2.0
"""Audit mode (spec.mode: audit) on the real kernel: the enforce-mode matrix
rerun (egress rules and the default action, exec kill, raw and packet
sockets, resolver-port binds, each detection) with nothing refused, killed,
held or reset, and every event that enforce would have acted on carrying
`would` beside its real `action`; then audit -> enforce -> audit by an
ordinary reload. The detections reuse the enforce tests' own helpers
(test_mining, test_shells_tunnels, test_ssh) under an audit twin of their
policy."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guard.control.server import request

from . import test_mining as mining
from . import test_shells_tunnels as shells
from . import test_ssh as ssh
from .agentproc import AgentProcess, GuardedCgroup, guarded_by_key
from .conftest import Listener, try_connect
from .netfixtures import RecordingServer, Spawned, require_tools
from .sshd import Sshd, free_port
from .test_exec_sockets import RAW_SOCKET
from .test_reload import egress_guard

# below the ephemeral range, like the other kernel tests' fixed ports
ALLOWED, BLOCKED, DEFAULTED, UDP_BLOCKED = 29301, 29302, 29303, 29304

POLICY = f"""\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: audit
spec:
  mode: {{mode}}
  defaultAction: block
  egress:
    - name: allowed-port
      action: allow
      to:
        - cidr: 127.0.0.0/8
          ports: [{ALLOWED}]
    - name: blocked-port
      action: block
      to:
        - cidr: 127.0.0.0/8
          ports: [{BLOCKED}, {UDP_BLOCKED}]
  exec:
    - name: no-netcat
      action: kill
      match:
        names: [nc, ncat]
  sockets:
    raw: deny
"""


def audit_twin(text: str) -> str:
    """An enforce test's policy, in audit mode."""
    assert "\nspec:\n" in text
    return text.replace("\nspec:\n", "\nspec:\n  mode: audit\n", 1)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """One agent under the audit policy (with the sys_enter hook, so packet
    sockets are judged at the call), listeners on the test ports."""
    path = tmp_path_factory.mktemp("audit") / "policy.yaml"
    path.write_text(POLICY.format(mode="audit"))
    listener = Listener()
    try:
        for port in (ALLOWED, BLOCKED, DEFAULTED):
            listener.listen("127.0.0.1", port)
        listener.listen("127.0.0.1", UDP_BLOCKED, udp=True)
        guard = GuardedCgroup(path, "egress-guard-audit", extra=["--syscall-hook"])
        try:
            yield guard.cg, guard.agent, tmp_path_factory.mktemp("bin")
        finally:
            guard.close()
    finally:
        listener.close()


def event_of(agent: AgentProcess, cg, kind: str, predicate) -> dict:
    return agent.wait_for(lambda e: e.get("kind") == kind and e["cgroup"]["id"] == cg.id
                          and predicate(e))


def to_port(port: int):
    return lambda e: (e.get("dst") or {}).get("port") == port


# -- egress rules and the default action ------------------------------------------

def test_a_block_rule_lets_the_connect_through_and_says_it_would_block(audited):
    cg, agent, _ = audited
    assert try_connect(cg, "127.0.0.1", BLOCKED) == "ok"
    event = event_of(agent, cg, "connect", to_port(BLOCKED))
    assert (event["action"], event["would"], event["rule"]) == ("log", "block", "blocked-port")
    assert list(event)[:4] == ["ts", "kind", "action", "would"]   # beside the action


def test_the_default_action_block_would_block(audited):
    cg, agent, _ = audited
    assert try_connect(cg, "127.0.0.1", DEFAULTED) == "ok"
    event = event_of(agent, cg, "connect", to_port(DEFAULTED))
    assert (event["action"], event["would"], event["rule"]) == ("log", "block", None)


def test_a_udp_send_to_a_blocked_port_goes_out(audited):
    cg, agent, _ = audited
    assert try_connect(cg, "127.0.0.1", UDP_BLOCKED, "udp", "sendto") == "ok"
    event = event_of(agent, cg, "connect", lambda e: to_port(UDP_BLOCKED)(e)
                     and e["hook"] == "sendmsg")
    assert (event["action"], event["would"], event["rule"]) == ("log", "block", "blocked-port")


def test_an_allow_rule_is_silent_and_carries_no_would(audited):
    cg, agent, _ = audited
    mark = len(agent.drain())
    assert try_connect(cg, "127.0.0.1", ALLOWED) == "ok"
    assert try_connect(cg, "127.0.0.1", DEFAULTED) == "ok"     # a later event to wait for
    event_of(agent, cg, "connect", to_port(DEFAULTED))
    assert [e for e in agent.drain()[mark:] if to_port(ALLOWED)(e)] == []


# -- exec rules, raw and packet sockets ---------------------------------------------

def test_an_exec_kill_rule_lets_the_program_run(audited):
    cg, agent, bindir = audited
    fake_nc = bindir / "nc"
    fake_nc.write_bytes(Path("/bin/echo").read_bytes())
    fake_nc.chmod(0o755)
    result = cg.run([str(fake_nc), "printed-under-audit"])
    assert (result.returncode, result.stdout) == (0, b"printed-under-audit\n")
    event = event_of(agent, cg, "exec", lambda e: e["filename"] == str(fake_nc))
    assert (event["action"], event["would"], event["rule"]) == ("log", "kill", "no-netcat")


def test_an_exec_no_rule_names_carries_no_would(audited):
    cg, agent, _ = audited
    result = cg.run(["/bin/true"])
    assert result.returncode == 0
    event = event_of(agent, cg, "exec", lambda e: e["filename"] == "/bin/true")
    assert event["action"] == "log" and "would" not in event


def test_a_raw_inet_socket_is_made_and_would_be_blocked(audited):
    cg, agent, _ = audited
    assert cg.python(RAW_SOCKET, "raw4").stdout.strip() == "ok"
    event = event_of(agent, cg, "socket", lambda e: e["socket"]["family"] == "inet")
    assert (event["action"], event["would"], event["socket"]["type"]) == ("log", "block", "raw")


def test_a_packet_socket_is_made_and_would_kill(audited):
    cg, agent, _ = audited
    result = cg.python(RAW_SOCKET, "packet")
    assert (result.returncode, result.stdout.strip()) == (0, "ok")
    event = event_of(agent, cg, "socket", lambda e: e["socket"]["family"] == "packet")
    assert (event["action"], event["would"]) == ("log", "kill")


def test_counters_count_audit_verdicts_as_log(audited):
    cg, agent, _ = audited
    before = request(agent.control_socket, {"op": "status"})["counters"]
    assert try_connect(cg, "127.0.0.1", BLOCKED) == "ok"
    after = request(agent.control_socket, {"op": "status"})["counters"]
    assert after["verdict_block"] == before["verdict_block"]
    assert after["verdict_log"] > before["verdict_log"]


# -- audit -> enforce -> audit: ordinary atomic reloads -----------------------------

def test_reload_from_audit_to_enforce_and_back(tmp_path, listener):
    listener.listen("127.0.0.1", 29305)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace(str(BLOCKED), "29305").format(mode="audit"))
    enforce = tmp_path / "enforce.yaml"
    enforce.write_text(POLICY.replace(str(BLOCKED), "29305").format(mode="enforce"))
    guard = GuardedCgroup(policy, "egress-guard-audit-reload")
    try:
        cg, agent = guard.cg, guard.agent
        assert try_connect(cg, "127.0.0.1", 29305) == "ok"
        result = egress_guard("policy", "reload", str(enforce), "--socket", agent.control_socket)
        assert result.returncode == 0, result.stderr
        reloaded = agent.wait_for(lambda e: e.get("kind") == "policy")
        assert reloaded["state"] == "reloaded" and reloaded["previous_generation"] == 1
        assert try_connect(cg, "127.0.0.1", 29305) == "EPERM"
        refused = event_of(agent, cg, "connect", lambda e: to_port(29305)(e)
                           and e["policy"]["generation"] == reloaded["policy"]["generation"])
        assert refused["action"] == "block" and "would" not in refused
        result = egress_guard("policy", "reload", str(policy), "--socket", agent.control_socket)
        assert result.returncode == 0, result.stderr
        assert try_connect(cg, "127.0.0.1", 29305) == "ok"
        again = event_of(agent, cg, "connect", lambda e: to_port(29305)(e)
                         and e["policy"]["generation"] == 3)
        assert (again["action"], again["would"]) == ("log", "block")
    finally:
        guard.close()


# -- detections: the enforce tests' helpers under an audit twin of their policy ----

class AuditMining(mining.Guarded):
    """test_mining's Guarded, its policy in audit mode."""

    def __init__(self, tmp: Path, stratum: str, miner_exec: str = "log"):
        policy = tmp / f"audit-{stratum}-{miner_exec}.yaml"
        policy.write_text(audit_twin(mining.policy_text(stratum, miner_exec)))
        GuardedCgroup.__init__(self, policy, "egress-guard-audit-mining")


class AuditShells(shells.Guarded):
    """test_shells_tunnels' Guarded, its policy in audit mode."""

    def __init__(self, tmp: Path, action: str):
        policy = tmp / f"audit-{action}.yaml"
        policy.write_text(audit_twin(shells.policy_text(action)))
        GuardedCgroup.__init__(self, policy, "egress-guard-audit-shells",
                               extra=["--syscall-hook"])


def _made(tmp_path_factory, kind, key):
    made: dict = {}

    def get(*args):
        if args not in made:
            made[args] = kind(tmp_path_factory.mktemp(key), *args)
        return made[args]
    return made, get


@pytest.fixture(scope="module")
def audit_mining(tmp_path_factory):
    made, get = _made(tmp_path_factory, AuditMining, "audit-mining")
    yield get
    for guard in made.values():
        guard.close()


@pytest.fixture(scope="module")
def audit_shells(tmp_path_factory):
    made, get = _made(tmp_path_factory, AuditShells, "audit-shells")
    yield get
    for guard in made.values():
        guard.close()


@pytest.fixture(scope="module")
def standins():
    with shells.Standins() as made:
        yield made


@pytest.fixture
def spawned():
    with Spawned() as procs:
        yield procs


@pytest.mark.parametrize("payload", mining.PAYLOADS, ids=[p.name for p in mining.PAYLOADS])
def test_mining_traffic_reaches_the_pool_and_would_be_blocked(audit_mining, payload):
    guard = audit_mining("block")
    data = payload.read_bytes()
    started = time.monotonic()
    with RecordingServer(reply=b'{"id":1,"result":true}\n') as pool:
        outcome = guard.outcome("127.0.0.1", pool.port, payload, "--expect-reply")
        event = guard.detection(pool.port)
        assert pool.wait_for_bytes(len(data)) == data
    assert outcome["error"] is None and outcome["received"] > 0, outcome
    assert time.monotonic() - started < 5
    assert guard.counters()["flows_held"] == 0       # sampled, never held
    assert (event["action"], event["would"]) == ("log", "block")
    assert event["detection"]["dialect"] == mining.dialect_of(payload)
    assert event["dst"] == {"ip": "127.0.0.1", "port": pool.port, "proto": "tcp"}


def test_a_miner_under_kill_keeps_mining_and_would_be_killed(audit_mining):
    guard = audit_mining("kill")
    with RecordingServer() as pool:
        result = guard.client("127.0.0.1", pool.port, mining.STRATUM, hold=0.5)
        event = guard.detection(pool.port)
        assert pool.wait_for_bytes(1)
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert (event["action"], event["would"]) == ("log", "kill")


def test_a_miner_command_line_runs_and_would_be_killed(audit_mining, tmp_path):
    guard = audit_mining("block", "kill")
    program = tmp_path / "sysupdate"
    program.write_text("#!/bin/sh\necho mined\n")
    program.chmod(0o755)
    result = guard.cg.run([str(program), "-o", "stratum+tcp://pool.test:3333", "-u",
                           "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaB"
                           "YBb98uNbr2VBBEt7f2wfn3RVGQBEP3A", "--donate-level=1", "-a", "rx/0"])
    assert (result.returncode, result.stdout) == (0, b"mined\n")
    event = guard.agent.wait_for(lambda e: e.get("kind") == "detection"
                                 and e["detection"]["type"] == "miner_exec"
                                 and str(program) in e["process"]["argv"])
    assert (event["action"], event["would"]) == ("log", "kill")


@pytest.mark.parametrize("action", ["block", "kill"])
@pytest.mark.parametrize("shell", shells.REVERSE_SHELLS, ids=shells.SHELL_IDS)
def test_a_reverse_shell_works_and_says_what_enforce_would_do(audit_shells, spawned, shell,
                                                               action, tmp_path):
    guard = audit_shells(action)
    with RecordingServer(udp=shell.udp,
                         greeting=None if shell.udp else shells.SHELL_PROBE) as server:
        started = time.monotonic()
        proc = shells.start_shell(guard, spawned, shell, server, tmp_path)
        if shell.udp:
            server.wait_for_bytes(1, timeout=10)
            server.send(shells.SHELL_PROBE, per_byte=True)
        server.wait_for(shells.SHELL_ANSWER, timeout=10)
        event = guard.exec_detection(proc.pid)
    assert time.monotonic() - started < 8      # not stopped at exec for a verdict
    assert (event["action"], event["would"]) == ("log", action)
    assert event["detection"]["evidence"]["pattern"] == shell.pattern


@pytest.mark.parametrize("action", ["block", "kill"])
def test_a_socket_dup2_onto_stdin_lives_and_would_be_stopped(audit_shells, standins, spawned,
                                                              action):
    guard = audit_shells(action)
    with RecordingServer() as server:
        proc = spawned.adopt(guard.cg.popen(
            standins.innocent_argv(sleep=1), env=standins.env(server.host, server.port),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        event = shells.stdio_event(guard, proc.pid, server.port)
        assert server.wait_for_connections(1)
        assert not server.wait_until_closed(timeout=0.5)      # not reset
        code = shells.exited(proc, timeout=10)
    assert code == 0, proc.stderr.read()
    assert (event["action"], event["would"]) == ("log", action)
    shells.assert_names_the_socket(event, server.port)


def test_a_udp_socket_on_stdio_would_be_killed(audit_shells, spawned, tmp_path):
    guard = audit_shells("block")
    program = tmp_path / "stats-agent.py"
    program.write_text(shells.UDP_ON_STDIO.replace('"/bin/sh", ["sh", "-i"]',
                                                   '"/bin/true", ["true"]'))
    with RecordingServer(udp=True) as server:
        proc = spawned.adopt(guard.cg.popen(["/usr/bin/python3", str(program), str(server.port)],
                                            stdin=subprocess.DEVNULL, cwd=tmp_path))
        event = shells.stdio_event(guard, proc.pid, server.port)
        assert proc.wait(timeout=10) == 0
    # enforce carries block out as kill on a UDP socket, which cannot be reset
    assert (event["action"], event["would"]) == ("log", "kill")


@pytest.mark.parametrize("action", ["block", "kill"])
@pytest.mark.parametrize("name", sorted(shells.STANDINS))
def test_a_tunnel_tool_reaches_its_server_and_would_be_stopped(audit_shells, standins, spawned,
                                                                name, action):
    guard = audit_shells(action)
    with RecordingServer() as server:
        proc = spawned.adopt(guard.cg.popen(
            standins.argv(name, server.host, server.port),
            env=standins.env(server.host, server.port, hold=0.2),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        out, err = proc.communicate(timeout=20)
        event = guard.detection("tunnel_tool", shells.of_pid(proc.pid))
        assert server.wait_for_connections(1)
    assert proc.returncode == 0, err
    report = shells.parse_report(out)
    assert (report["tool"], report["connected"], report["error"]) == (name, True, None), report
    assert (event["action"], event["would"]) == ("log", action)
    assert event["detection"]["dialect"] == shells.STANDINS[name].dialect


@pytest.fixture(scope="module")
def handshake_client(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("client") / "sync-client.py"
    path.write_text(shells.HANDSHAKE_CLIENT)
    return path


@pytest.mark.parametrize("name", sorted(shells.STANDINS))
def test_tunnel_traffic_flows_and_would_be_reset(audit_shells, handshake_client, name):
    guard = audit_shells("block")
    with RecordingServer() as server:
        result, first = shells.send_first_bytes(guard, handshake_client, name, server, wait=0.3)
        event = guard.detection("tunnel_tool", shells.to_port(server.port))
        received = server.wait_for_bytes(len(first) + len(shells.LATER))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"first": True, "reset": None, "later": "sent"}
    assert received == first + shells.LATER
    assert (event["action"], event["would"]) == ("log", "block")


@pytest.fixture(scope="module")
def audit_ssh(tmp_path_factory):
    require_tools("sshd", "ssh")
    directory = tmp_path_factory.mktemp("audit-ssh")
    yield from guarded_by_key(directory, "egress-guard-audit-ssh",
                                  lambda key: audit_twin(ssh.policy_text(*key.split("-"))))


@pytest.fixture(scope="module")
def sshd():
    with Sshd() as server:
        yield server


@pytest.mark.parametrize("action", ["block", "kill"])
def test_ssh_remote_forward_listens_and_would_be_stopped(audit_ssh, sshd, action):
    cg, agent = audit_ssh(f"{action}-{action}")
    port = free_port()
    listened, _ = ssh.run_tunnel(cg, sshd.client_argv("-N", "-R", f"{port}:127.0.0.1:9"), port)
    assert listened
    event = ssh.detection(agent, "ssh_reverse_tunnel",
                          lambda e: e["detection"]["evidence"].get("listen", {}).get("port")
                          == port)
    assert (event["action"], event["would"]) == ("log", action)
    assert event["detection"]["evidence"]["forward"] == f"{port}:127.0.0.1:9"


def test_an_outbound_ssh_connection_works_and_would_be_blocked(audit_ssh, sshd):
    cg, agent = audit_ssh("log-block")
    result = cg.run(sshd.client_argv("true"), timeout=30)
    assert result.returncode == 0, result.stderr
    event = ssh.detection(agent, "ssh_outbound", lambda e: e["detection"]["evidence"].get(
        "destination", {}).get("port") == sshd.port)
    assert (event["action"], event["would"]) == ("log", "block")


# -- allow by name: nothing refused at the query, the bind or the first payload -------

BIND_RESOLVER_PORT = """
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.bind(("127.0.0.99", 53))
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"""


@pytest.fixture(scope="module")
def names_audit(tmp_path_factory):
    from .dnsfixtures import TOOLS, TestResolver
    from .test_names import names_policy

    require_tools(*TOOLS)
    with TestResolver() as resolver:
        server = resolver.serve()
        path = tmp_path_factory.mktemp("audit-names") / "policy.yaml"
        path.write_text(audit_twin(names_policy(resolver, server.port)))
        guard = GuardedCgroup(path, "egress-guard-audit-names")
        try:
            yield resolver, server, guard.cg, guard.agent
        finally:
            guard.close()


def test_a_name_no_rule_allows_resolves_and_connects_and_would_be_blocked(names_audit):
    from .test_names import connect_once

    resolver, server, cg, agent = names_audit
    report = resolver.loop(["two.egtest"], server.port, count=1, cgroup=cg)
    assert report.failures == [], report.failures
    assert resolver.queries("two.egtest") != []          # the query left
    query = agent.wait_for(lambda e: e.get("kind") == "dns" and e["direction"] == "query"
                           and e["dns"]["name"] == "two.egtest")
    assert (query["action"], query["would"]) == ("log", "block")
    literal = resolver.addresses("three.egtest")[0]
    assert connect_once(resolver, cg, literal, server.port) == "ok"
    event = event_of(agent, cg, "connect", lambda e: e["dst"]["ip"] == literal)
    assert (event["action"], event["would"], event["rule"]) == ("log", "block", None)


def test_binding_a_resolver_port_is_allowed_and_would_be_refused(names_audit):
    _resolver, _server, cg, agent = names_audit
    assert cg.python(BIND_RESOLVER_PORT).stdout.strip() == "ok"
    event = event_of(agent, cg, "connect", lambda e: e["hook"] == "bind")
    assert (event["action"], event["would"]) == ("log", "block")
    assert event["dst"] == {"ip": "127.0.0.99", "port": 53}


def test_a_payload_naming_another_host_is_sent_at_once_and_would_be_refused(names_audit):
    from .test_names import RECORDER, SEND

    resolver, server, cg, agent = names_audit
    ip = resolver.addresses("one.egtest")[0]
    recorder = subprocess.Popen(["ip", "netns", "exec", resolver.netns, sys.executable, "-c",
                                 RECORDER, ip, str(server.port + 3)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert recorder.stdout.readline().strip() == "listening"
        assert resolver.loop(["one.egtest"], server.port, cgroup=cg).failures == []
        started = time.monotonic()
        sent = resolver.run([sys.executable, "-c", SEND, ip, str(server.port + 3),
                             "shared.egtest", "http"], cg).stdout.strip()
        elapsed = time.monotonic() - started
    finally:
        recorder.kill()
        recorded = [json.loads(line) for line in recorder.communicate()[0].splitlines() if line]
    received = b"".join(bytes.fromhex(r["data"]) for r in recorded)
    assert b"Host: shared.egtest" in received and sent != "ECONNABORTED", sent
    assert elapsed < 3, elapsed
    assert request(agent.control_socket, {"op": "status"})["counters"]["flows_held"] == 0
    event = agent.wait_for(lambda e: e.get("kind") == "detection"
                           and e["detection"]["type"] == "name_mismatch")
    assert (event["action"], event["would"]) == ("log", "block")
    assert event["detection"]["evidence"] == {"host": "shared.egtest", "learned": "one.egtest"}
