# SPDX-License-Identifier: Apache-2.0
"""The agent never guards itself (guard/workloads/own.py): it finds its own
cgroup, with or without a cgroup namespace, leaves it out of discovery and
selection, says so in the ready event, and refuses --cgroup naming it."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from guard.agent.core import AgentError
from guard.cli.commands import main
from guard.kernel.abi import CgroupOp
from guard.workloads.cgroups import resolve
from guard.workloads.containers import running_containers
from guard.workloads.own import MAX_WALK, OwnCgroup, find_own_cgroup
from guard.workloads.runtime import ContainerInfo
from tests.fakekernel import FakeCgroupTree, cgroup_record, fake_agent
from tests.unit.test_cli_commands import STATUS, FakeAgentSocket

PID = 4242
AGENT_ID = "ee" * 32
AGENT = "/libpod_parent/libpod-" + AGENT_ID
WORKLOAD = "/libpod_parent/libpod-" + "ab" * 32
SERVICE = "/system.slice/egress-guard.service"


@pytest.fixture
def tree():
    made = FakeCgroupTree()
    yield made
    made.close()


def fake_proc(tmp_path: Path, line: str, pid: int = PID) -> Path:
    """A /proc where pid's cgroup file says `line` (its cgroup v2 entry)."""
    (tmp_path / "proc" / str(pid)).mkdir(parents=True)
    (tmp_path / "proc" / str(pid) / "cgroup").write_text(f"1:cpu:/\n0::{line}\n")
    return tmp_path / "proc"


def place(tree: FakeCgroupTree, relative: str, pid: int = PID):
    """The process pid in the fake cgroup at relative."""
    cg = tree.mkdir(relative)
    (cg.path / "cgroup.procs").write_text(f"1\n{pid}\n")
    return cg


def test_in_a_container_the_container_cgroup_is_left_out(tree, tmp_path):
    cg = place(tree, AGENT)
    own = find_own_cgroup(tree.mount, PID, fake_proc(tmp_path, AGENT))
    assert own.process == AGENT and own.excluded == cg
    assert own.as_dict() == {"cgroup": {"id": cg.id, "path": AGENT},
                             "container": {"id": AGENT_ID, "runtime": "podman"},
                             "excluded": True}


def test_inside_a_container_below_its_cgroup_the_whole_container_is_left_out(tree, tmp_path):
    container = tree.mkdir(AGENT)
    place(tree, AGENT + "/agent")
    own = find_own_cgroup(tree.mount, PID, fake_proc(tmp_path, AGENT + "/agent"))
    assert own.process == AGENT + "/agent" and own.excluded == container
    assert own.covers(container) and own.covers(resolve(AGENT + "/agent", tree.mount))


def test_a_host_service_leaves_out_its_unit(tree, tmp_path):
    unit = place(tree, SERVICE)
    own = find_own_cgroup(tree.mount, PID, fake_proc(tmp_path, SERVICE))
    assert own.excluded == unit and own.container is None
    assert own.as_dict() == {"cgroup": {"id": unit.id, "path": SERVICE}, "excluded": True}


def test_in_a_cgroup_namespace_the_cgroup_listing_the_agent_is_found(tree, tmp_path):
    """A pod on a cgroup v2 node: /proc/self/cgroup says "/" (its namespace's
    root), the host's hierarchy is mounted; the walk finds the cgroup whose
    cgroup.procs lists the agent."""
    tree.mkdir(WORKLOAD)
    cg = place(tree, AGENT)
    own = find_own_cgroup(tree.mount, PID, fake_proc(tmp_path, "/"))
    assert own.process == AGENT and own.excluded == cg


def test_in_a_cgroup_namespace_only_paths_ending_as_the_namespace_says_count(tree, tmp_path):
    tree.mkdir(WORKLOAD)
    place(tree, WORKLOAD + "/agent")        # lists the pid, but not at a path ending /inner
    container = tree.mkdir(AGENT)
    place(tree, AGENT + "/inner")
    own = find_own_cgroup(tree.mount, PID, fake_proc(tmp_path, "/inner"))
    assert own.process == AGENT + "/inner" and own.excluded == container


def test_an_agent_it_cannot_find_says_why_and_leaves_nothing_out(tree, tmp_path):
    tree.mkdir(AGENT)
    own = find_own_cgroup(tree.mount, PID, fake_proc(tmp_path, "/"))
    assert own.excluded is None and not own.covers(resolve(AGENT, tree.mount))
    entry = own.as_dict()
    assert entry["excluded"] is False and "lists this process" in entry["problem"]
    assert str(MAX_WALK) in entry["problem"]
    unreadable = find_own_cgroup(tree.mount, PID, tmp_path / "no-proc")
    assert unreadable.excluded is None and "cannot read" in unreadable.problem
    (tmp_path / "v1" / str(PID)).mkdir(parents=True)
    (tmp_path / "v1" / str(PID) / "cgroup").write_text("1:cpu:/\n")
    assert "no cgroup v2 line" in find_own_cgroup(tree.mount, PID, tmp_path / "v1").problem


def test_the_root_cgroup_leaves_nothing_more_out(tree, tmp_path):
    (tree.mount / "cgroup.procs").write_text(f"{PID}\n")
    own = find_own_cgroup(tree.mount, PID, fake_proc(tmp_path, "/"))
    assert own.excluded is None and own.problem is None
    assert own.as_dict() == {"cgroup": {"id": own.cgroup.id, "path": "/"}, "excluded": True}
    child = tree.mkdir("/egress-guard-test")
    assert not own.covers(child) and own.refusal(child) is None
    assert "refusing to guard the root cgroup" in own.refusal(own.cgroup)


def test_refusal_names_the_agent_for_itself_its_ancestors_and_its_inside(tree, tmp_path):
    place(tree, SERVICE)
    inside = tree.mkdir(SERVICE + "/helper")
    sibling = tree.mkdir("/system.slice/other.service")
    own = find_own_cgroup(tree.mount, PID, fake_proc(tmp_path, SERVICE))
    for cg in (own.cgroup, tree.mkdir("/system.slice"), inside):
        message = own.refusal(cg)
        assert message.startswith(f"{cg.path}: refusing to guard the agent's own cgroup")
        assert f"runs in {SERVICE}" in message
    assert own.refusal(sibling) is None
    place(tree, AGENT)
    in_container = find_own_cgroup(tree.mount, PID, fake_proc(tmp_path / "c", AGENT))
    assert f"in container {AGENT_ID[:12]} ({AGENT})" in in_container.refusal(in_container.cgroup)


# --------------------------------------------------------------------------
# The agent (fake kernel): discovery, selection, --cgroup, the ready event


def agent_in(relative: str, tmp_path: Path, also: tuple[str, ...] = ()):
    """The own_cgroup seam: the agent runs in the fake cgroup at relative
    (made, with the containers in also, when the agent looks at start)."""
    proc = fake_proc(tmp_path, relative)

    def find(mount: Path) -> OwnCgroup:
        tree = FakeCgroupTree(mount)
        for other in also:
            tree.mkdir(other)
        place(tree, relative)
        return find_own_cgroup(mount, PID, proc)
    return find


def test_discovery_leaves_the_agents_container_out_and_the_ready_event_says_so(tmp_path):
    with fake_agent(cgroups=(), own_cgroup=agent_in(AGENT, tmp_path, also=(WORKLOAD,))) as fake:
        assert {cg.relative for cg in running_containers(fake.tree.mount)} == {AGENT, WORKLOAD}
        [ready] = fake.events("agent")
        assert [c["path"] for c in ready["cgroups"]] == [WORKLOAD]
        agent_cg = resolve(AGENT, fake.tree.mount)
        assert ready["self"] == {"cgroup": {"id": agent_cg.id, "path": AGENT},
                                 "container": {"id": AGENT_ID, "runtime": "podman"},
                                 "excluded": True}
        assert agent_cg.id not in fake.maps.guarded and agent_cg.id not in fake.objects.cgroups
        assert fake.agent.status()["self"] == ready["self"]
        # its cgroup record (an agent that started before its container's
        # record was read) is passed by quietly
        assert fake.feed(cgroup_record(AGENT, CgroupOp.MKDIR, cgroup_id=agent_cg.id)) == []
        assert agent_cg.id not in fake.maps.guarded


def test_a_selector_naming_the_agents_container_does_not_select_it(tmp_path):
    text = ("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: everything\n"
            "spec:\n  selector:\n    cgroupPaths: [\"/libpod_parent/*\"]\n"
            "  defaultAction: block\n")
    with fake_agent(text, cgroups=(), unselected="unguarded",
                    own_cgroup=agent_in(AGENT, tmp_path)) as fake:
        fake.metadata.add(AGENT_ID, ContainerInfo(name="egress-guard", image="img"))
        fake.tick()
        [event] = fake.mkdir(WORKLOAD)
        assert event["state"] == "guarded"
        fake.metadata.add("ab" * 32, ContainerInfo(name="w", image="img"))
        fake.tick()
        agent_cg = resolve(AGENT, fake.tree.mount)
        assert agent_cg.id not in fake.maps.guarded
        assert agent_cg.id not in fake.agent.registry.waiting
        assert list(fake.maps.guarded) == [event["cgroup"]["id"]]


@pytest.mark.parametrize("named", [AGENT, "/libpod_parent"])
def test_cgroup_naming_the_agent_or_its_parent_is_refused(tmp_path, named):
    with pytest.raises(AgentError, match="refusing to guard the agent's own cgroup: the agent "
                                         f"runs in container {AGENT_ID[:12]}"):
        with fake_agent(cgroups=(named,), own_cgroup=agent_in(AGENT, tmp_path)):
            pass


def test_cgroup_beside_the_agent_is_guarded(tmp_path):
    with fake_agent(cgroups=(WORKLOAD,), own_cgroup=agent_in(AGENT, tmp_path)) as fake:
        assert fake.cgroup.relative == WORKLOAD and fake.maps.guarded == {fake.cgroup.id: 0}
        assert fake.events("agent")[0]["self"]["cgroup"]["path"] == AGENT


@pytest.mark.parametrize("own, line", [
    ({"cgroup": {"id": 9, "path": AGENT}, "excluded": True}, f"self         {AGENT} (never guarded)"),
    ({"cgroup": {"id": None, "path": "/"}, "excluded": False, "problem": "no cgroup lists it"},
     "self         / (not found: no cgroup lists it)"),
])
def test_status_names_the_cgroup_the_agent_never_guards(tmp_path, own, line):
    served = FakeAgentSocket(tmp_path / "agent.sock", {**STATUS, "self": own})
    try:
        result = CliRunner().invoke(main, ["status", "--socket", served.path])
    finally:
        served.close()
    assert result.exit_code == 0, result.output
    assert line + "\n" in result.stdout
