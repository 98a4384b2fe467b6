# SPDX-License-Identifier: Apache-2.0
"""`policy suggest` -> `policy test` round trip on a real workload's recorded
traffic (issue 18): pip installing a package from a local index and git
cloning from a local git daemon, both found by name through the test
resolver (dnsfixtures.TestResolver, dnsmasq in a network namespace), run in
a guarded cgroup under a recording policy (defaultAction log, names logged
and learned). The agent's events are suggested into a policy that allows by
name; that policy, enforcing, lets the same workloads succeed while a host
it does not name is refused. `policy test` of a stricter policy (the
suggestion without the git rule) lists exactly the recorded git flows: the
lookups of git.egtest and the connects to it; of one allowing git's address
by CIDR but not its name, exactly the lookups. Both, enforcing, do what
`policy test` said: pip works, the clone fails at the refused lookup.

    host netns (the guarded cgroup)          egdns-srv-<pid>-<n>
    pip ----- pypi.egtest:8080 ------------> python -m http.server (PEP 503 index)
    git clone git://git.egtest/repo.git ---> git daemon :9418
    glibc resolver --- udp/tcp 53 ---------> dnsmasq
"""
from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import yaml

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .conftest import try_connect
from .dnsfixtures import TOOLS as RESOLVER_TOOLS
from .dnsfixtures import Record, TestResolver
from .localservices import GIT_PORT, GitServer, PackageIndex, git_clone_argv, pip_argv, require
from .netfixtures import require_tools
from .test_reload import egress_guard

PACKAGE = "egtest-roundtrip"
INDEX_HOST, GIT_HOST = "pypi.egtest", "git.egtest"
#: The index's port in the resolver's namespace (nothing else listens there).
INDEX_PORT = 8080
#: What the package and the repository hold: this run's, so a stale copy cannot pass.
TOKEN = uuid.uuid4().hex


def workload_names(v4: str, _v6: str) -> dict[str, list[Record]]:
    """The names the workloads use, served beside the test zone (IPv4 only:
    glibc asks for AAAA too and gets an empty answer)."""
    return {INDEX_HOST: [Record("A", f"{v4}.40")], GIT_HOST: [Record("A", f"{v4}.41")]}


def recording_policy(resolver: TestResolver) -> str:
    """Log everything, and learn (and log) every name of the test zone: the
    recording docs/cli.md describes for a suggestion. This machine may have
    a route out: anything beyond the test addresses is refused, so that
    nothing a workload does by mistake leaves it (and the test sees it:
    nothing is refused in the recording)."""
    return f"""\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: record
spec:
  defaultAction: log
  egress:
    - name: record-names
      action: log
      to:
        - host: "*.egtest"
    - name: test-hosts
      action: log
      to:
        - cidr: 198.18.0.0/15
    - name: no-way-out
      action: block
      to:
        - cidr: 0.0.0.0/0
        - cidr: ::/0
  dns:
    resolvers:
      - cidr: {resolver.ip}/32
"""


@dataclass
class World:
    resolver: TestResolver
    index: PackageIndex
    git: GitServer
    cgroup: TempCgroup
    agent: AgentProcess
    policy: Path
    dir: Path
    runs: int = 0

    @property
    def index_ip(self) -> str:
        return self.resolver.addresses(INDEX_HOST)[0]

    @property
    def git_ip(self) -> str:
        return self.resolver.addresses(GIT_HOST)[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_tools(*RESOLVER_TOOLS)
    require()
    base = tmp_path_factory.mktemp("roundtrip")
    policy = base / "policy.yaml"
    with TestResolver(more_names=workload_names) as resolver:
        policy.write_text(recording_policy(resolver))
        (base / "index").mkdir()
        (base / "git").mkdir()
        with PackageIndex(resolver.netns, resolver.addresses(INDEX_HOST)[0], INDEX_PORT,
                          base / "index", PACKAGE, TOKEN) as index, \
                GitServer(resolver.netns, resolver.addresses(GIT_HOST)[0], base / "git",
                          TOKEN + "\n") as git, \
                TempCgroup("eg-roundtrip") as cgroup, \
                AgentProcess([str(cgroup.path)], policy=policy) as agent:
            yield World(resolver, index, git, cgroup, agent, policy, base)


def run_workloads(world: World, clone_succeeds: bool = True) -> subprocess.CompletedProcess:
    """pip install and git clone, in the guarded cgroup, resolving through
    the test resolver: pip must succeed and get this run's package from the
    local index; the clone must succeed with this run's content (or, with
    clone_succeeds False, fail). The clone's result."""
    world.runs += 1
    run = world.dir / f"run-{world.runs}"
    run.mkdir()
    wheels_before = _wheel_requests(world)
    pip = world.resolver.run(pip_argv(run, world.index.url(INDEX_HOST), run / "site", PACKAGE),
                             world.cgroup, timeout=60)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    installed = run / "site" / PACKAGE.replace("-", "_") / "__init__.py"
    assert installed.read_text() == f"VALUE = {TOKEN!r}\n"
    # from the local index, the wheel fetched again (no cache)
    assert f"GET /simple/{PACKAGE}/" in world.index.requests()
    assert _wheel_requests(world) == wheels_before + 1
    git = world.resolver.run(git_clone_argv(run, world.git.url(GIT_HOST), run / "clone"),
                             world.cgroup, timeout=60)
    if clone_succeeds:
        assert git.returncode == 0, git.stderr[-2000:] + world.git.log()[-2000:]
        assert (run / "clone" / "README").read_text() == TOKEN + "\n"
    else:
        assert git.returncode != 0 and not (run / "clone" / "README").exists(), git.stderr
    return git


def reload(world: World, policy: Path, name: str) -> int:
    """`egress-guard policy reload` to policy; the new generation."""
    result = egress_guard("policy", "reload", str(policy), "--socket", world.agent.control_socket)
    assert result.returncode == 0, result.stdout + result.stderr
    reloaded = world.agent.wait_for(lambda e: e.get("kind") == "policy"
                                    and e.get("state") == "reloaded"
                                    and e["policy"]["name"] == name)
    return reloaded["policy"]["generation"]


def _wheel_requests(world: World) -> int:
    return sum(1 for request in world.index.requests()
               if request.startswith("GET /packages/") and request.endswith(".whl"))


def settle(world: World) -> list[dict]:
    """Every event so far, once the agent has handled the workloads' (an
    exec after them, from one ring buffer, is read after them)."""
    marker = f"egtest-settle-{uuid.uuid4().hex[:8]}"
    assert world.cgroup.run(["/bin/sh", "-c", ":", marker]).returncode == 0
    world.agent.wait_for(lambda e: e.get("kind") == "exec"
                         and marker in (e.get("process") or {}).get("argv", []), timeout=15)
    return list(world.agent.drain())


def ours(world: World, event: dict) -> bool:
    return (event.get("cgroup") or {}).get("id") == world.cgroup.id


def connects_to(world: World, events: list[dict], ip: str, port: int) -> list[dict]:
    return [e for e in events if e.get("kind") == "connect" and ours(world, e)
            and (e.get("dst") or {}).get("ip") == ip and e["dst"].get("port") == port]


@dataclass
class Recording:
    events: list[dict]
    path: Path
    lines: dict[int, dict]      # line number in path -> event


@pytest.fixture(scope="module")
def recorded(world) -> Recording:
    """The workloads under the recording policy; the agent's events, as JSON
    lines, in a file."""
    run_workloads(world)
    world.agent.wait_for(lambda e: e.get("kind") == "connect" and ours(world, e)
                         and e["dst"].get("name") == GIT_HOST, timeout=15)
    events = settle(world)
    path = world.dir / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in events))
    return Recording(events, path, dict(enumerate(events, start=1)))


@dataclass
class Suggested:
    path: Path
    text: str
    policy: dict


@pytest.fixture(scope="module")
def suggested(world, recorded) -> Suggested:
    path = world.dir / "suggested.yaml"
    result = egress_guard("policy", "suggest", str(recorded.path), "-o", str(path))
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    return Suggested(path, text, yaml.safe_load(text))


def test_the_recording_says_what_the_workloads_did_by_name(world, recorded):
    for ip, port, name in ((world.index_ip, INDEX_PORT, INDEX_HOST),
                           (world.git_ip, GIT_PORT, GIT_HOST)):
        flows = connects_to(world, recorded.events, ip, port)
        assert flows, f"no connect to {name} recorded"
        assert {(e["action"], e["dst"].get("name"), e["proto"]) for e in flows} == \
            {("log", name, "tcp")}, flows
    # glibc's answers, from the trusted resolver, taught both names to this workload
    answers = {e["dns"]["name"]: e for e in recorded.events
               if e.get("kind") == "dns" and e.get("direction") == "answer" and ours(world, e)
               and e["dns"].get("learned")}
    assert {INDEX_HOST, GIT_HOST} <= set(answers)
    assert all(a["dns"]["trusted"] and a["resolver"]["ip"] == world.resolver.ip
               for a in answers.values())
    # nothing refused, nothing found
    assert [e for e in recorded.events if ours(world, e)
            and (e.get("action") in ("block", "kill") or e.get("kind") == "detection")] == []


def test_suggest_allows_the_workloads_by_name(world, suggested):
    spec = suggested.policy["spec"]
    assert spec["defaultAction"] == "block"
    rules = {rule["name"]: rule for rule in spec["egress"]}
    assert set(rules) == {f"host-{INDEX_HOST}", f"host-{GIT_HOST}"}, suggested.text
    for name, port in ((INDEX_HOST, INDEX_PORT), (GIT_HOST, GIT_PORT)):
        rule = rules[f"host-{name}"]
        assert rule["action"] == "allow"
        assert rule["to"] == [{"host": name, "ports": [port], "protocol": "tcp"}]
        # every rule says how many events justified it, and when
        assert f"    # {name}: " in suggested.text
    # names, never the addresses they had; the resolvers from the answers
    for ip in (world.index_ip, world.git_ip):
        assert ip not in suggested.text
    assert spec["dns"]["resolvers"] == [{"cidr": f"{world.resolver.ip}/32", "ports": [53]}]
    assert spec["sockets"]["raw"] == "deny" and spec["exec"] == []
    result = egress_guard("policy", "check", str(suggested.path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_suggested_policy_enforcing_lets_the_workloads_succeed(world, recorded, suggested):
    generation = reload(world, suggested.path, "suggested")

    run_workloads(world)
    events = settle(world)
    since = [e for e in events if ours(world, e)
             and (e.get("policy") or {}).get("generation") == generation]
    assert [e for e in since if e.get("action") in ("block", "kill")
            or e.get("kind") == "detection"] == [], since
    # allowed by rule, so not reported at all
    assert connects_to(world, since, world.index_ip, INDEX_PORT) == []
    assert connects_to(world, since, world.git_ip, GIT_PORT) == []

    # and it is enforcing: a host it does not name is refused, by address and by name
    server = world.resolver.serve()
    other = world.resolver.addresses("one.egtest")[0]
    assert try_connect(world.cgroup, other, server.port) == "EPERM"
    refused = world.agent.wait_for(lambda e: e.get("kind") == "connect" and ours(world, e)
                                   and e["dst"]["ip"] == other
                                   and e["dst"]["port"] == server.port)
    assert (refused["action"], refused["rule"], refused["policy"]["generation"]) == \
        ("block", None, generation)
    lookup = world.resolver.loop(["one.egtest"], server.port, cgroup=world.cgroup)
    assert [a["result"] for a in lookup.attempts] == ["EAI_AGAIN"]
    assert server.accepted == []


def policy_test(policy: Path, events: Path) -> tuple[int, list[dict], dict]:
    result = egress_guard("policy", "test", str(policy), str(events), "--json")
    lines = [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines and lines[-1]["kind"] == "summary", result.stdout + result.stderr
    return result.returncode, lines[:-1], lines[-1]


def without_git(suggested: Suggested, name: str, path: Path, replacement=None) -> Path:
    """The suggestion named name, its git rule left out (or replaced)."""
    policy = dict(suggested.policy, metadata={"name": name})
    rules = [rule for rule in suggested.policy["spec"]["egress"]
             if rule["name"] != f"host-{GIT_HOST}"]
    assert len(rules) == len(suggested.policy["spec"]["egress"]) - 1
    policy["spec"] = dict(policy["spec"], egress=rules + ([replacement] if replacement else []))
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stricter(world, suggested) -> dict[str, Path]:
    """Two stricter policies: the suggestion without its git rule, and with
    git's address (not its name) allowed by a CIDR rule instead."""
    return {
        "stricter": without_git(suggested, "stricter", world.dir / "stricter.yaml"),
        "by-address": without_git(suggested, "by-address", world.dir / "by-address.yaml", {
            "name": "git-by-address", "action": "allow",
            "to": [{"cidr": f"{world.git_ip}/32", "ports": [GIT_PORT], "protocol": "tcp"}]}),
    }


def git_lines(world: World, recorded: Recording, connects: bool = True) -> set[int]:
    """The recorded git flows (lines of the events file): the lookups of its
    name, which a policy that does not name it refuses at the send
    (dns.bpf.c) before any connect, and (connects) its connects."""
    return {line for line, event in recorded.lines.items() if ours(world, event) and (
        (event.get("kind") == "dns" and event.get("direction") == "query"
         and event["dns"]["name"] == GIT_HOST)
        or (connects and event in connects_to(world, recorded.events, world.git_ip, GIT_PORT)))}


def check_refusals(world: World, changes: list[dict], expected: set[int], name: str) -> None:
    listed = {int(change["where"].rsplit(":", 1)[1]) for change in changes}
    assert listed == expected, changes
    for change in changes:
        assert change["refused"] and (change["old"], change["new"]) == ("log", "block")
        assert change["policy"] == name
        if change["event_kind"] == "connect":
            assert change["decided"] == "defaultAction"
            assert (change["dst"]["ip"], change["dst"]["port"], change["dst"]["name"]) == \
                (world.git_ip, GIT_PORT, GIT_HOST)
        else:
            assert change["event_kind"] == "dns"
            assert change["decided"] == "defaultAction (no rule names the query)"
            assert change["dns"]["name"] == GIT_HOST
            assert change["resolver"]["ip"] == world.resolver.ip


def test_policy_test_of_a_stricter_policy_lists_exactly_the_git_flows(world, recorded, suggested,
                                                                       stricter):
    # the suggestion itself refuses nothing that was recorded
    code, changes, summary = policy_test(suggested.path, recorded.path)
    assert (code, summary["refused"], summary["exit"]) == (0, 0, 0), changes
    assert summary["by_kind"]["connect"] >= 2 and summary["by_kind"]["dns"] >= 4

    code, changes, summary = policy_test(stricter["stricter"], recorded.path)
    assert code == 6 and summary["exit"] == 6, (changes, summary)
    expected = git_lines(world, recorded)
    assert {recorded.lines[line]["kind"] for line in expected} == {"connect", "dns"}
    check_refusals(world, changes, expected, "stricter")
    assert summary["refused"] == len(expected)

    # git's address allowed by a CIDR rule, its name not: the lookups are still refused
    code, changes, summary = policy_test(stricter["by-address"], recorded.path)
    assert code == 6, (changes, summary)
    check_refusals(world, changes, git_lines(world, recorded, connects=False), "by-address")


@pytest.mark.parametrize("which", ["stricter", "by-address"])
def test_the_kernel_refuses_what_policy_test_listed(world, stricter, which):
    """Each stricter policy, enforcing: the index still works, the clone
    fails at the lookup of git.egtest, refused at the send."""
    generation = reload(world, stricter[which], which)
    queries = len(world.resolver.queries(GIT_HOST))
    clone = run_workloads(world, clone_succeeds=False)
    assert "git.egtest" in clone.stderr, clone.stderr
    refused = world.agent.wait_for(lambda e: e.get("kind") == "dns" and ours(world, e)
                                   and e["policy"]["generation"] == generation
                                   and e["direction"] == "query"
                                   and e["dns"]["name"] == GIT_HOST)
    assert refused["action"] == "block"
    assert len(world.resolver.queries(GIT_HOST)) == queries     # the resolver never saw it
    events = settle(world)
    assert connects_to(world, [e for e in events if (e.get("policy") or {}).get("generation")
                               == generation], world.git_ip, GIT_PORT) == []
