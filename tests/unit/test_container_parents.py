# SPDX-License-Identifier: Apache-2.0
"""Container parents (run --container-parent, guard/agent/registry.py) on
the fake kernel: the parent gets the sentinel hooks and an entry flagged
PARENT with the policy that selects its path; the agent's own cgroup below
it is exempt before the parent's entry is written; a container below it
that no policy selects is exempt (and stops being so when selected or
gone); `auto` takes the runtimes' parents that exist; a parent the agent
runs in, or the root, is refused."""
from __future__ import annotations

import pytest

from guard.agent.core import AgentError
from guard.kernel.abi import CgroupFlags
from guard.workloads.cgroups import resolve
from tests.fakekernel import FakeCgroupTree, fake_agent
from tests.unit.test_own_cgroup import AGENT, WORKLOAD, agent_in

PARENT = "/libpod_parent"
OTHER = "/libpod_parent/libpod-" + "cd" * 32

TWO_POLICIES = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: parent
spec:
  selector:
    cgroupPaths: ["/libpod_parent"]
  defaultAction: block
---
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: workload
spec:
  selector:
    cgroupPaths: ["/libpod_parent/libpod-ab*"]
  defaultAction: log
"""


def below_parent(tmp_path, *more: str):
    """The own_cgroup seam: the agent in AGENT, the parent (and more) made."""
    def own(mount):
        (mount / "cgroup.procs").touch()   # the root, as on cgroup2
        for relative in (PARENT, *more):
            FakeCgroupTree(mount).mkdir(relative)
        return agent_in(AGENT, tmp_path)(mount)
    return own


def test_the_parent_gets_sentinel_hooks_after_the_agent_is_exempt(tmp_path):
    with fake_agent(cgroups=(WORKLOAD,), own_cgroup=below_parent(tmp_path),
                    container_parents=(PARENT,)) as fake:
        parent, own = resolve(PARENT, fake.tree.mount), resolve(AGENT, fake.tree.mount)
        assert fake.objects.sentinels == {parent.id: str(parent.path)}
        assert fake.maps.flags[parent.id] == CgroupFlags.PARENT
        assert fake.maps.flags[own.id] == CgroupFlags.EXEMPT and own.id not in fake.maps.guarded
        assert fake.maps.flags[fake.cgroup.id] == 0            # taken over: its own hooks
        assert parent.id not in fake.objects.cgroups           # no per-cgroup hooks on it
        calls = [(name, args[0]) for name, args in fake.timeline
                 if name in ("maps.exempt", "maps.guard")]
        assert calls.index(("maps.exempt", own.id)) < calls.index(("maps.guard", parent.id))
        [ready] = fake.events("agent")
        assert ready["container_parents"] == [{"id": parent.id, "path": PARENT,
                                               "policy": "default"}]
        assert fake.agent.status()["container_parents"] == ready["container_parents"]


def test_below_a_parent_what_no_policy_selects_is_exempt_until_selected_or_gone(tmp_path):
    with fake_agent(TWO_POLICIES, cgroups=(), unselected="unguarded",
                    own_cgroup=below_parent(tmp_path),
                    container_parents=(PARENT,)) as fake:
        parent = resolve(PARENT, fake.tree.mount)
        assert fake.maps.guarded[parent.id] == 0               # the policy "parent"
        [guarded] = fake.mkdir(WORKLOAD)
        assert guarded["state"] == "guarded"
        assert fake.maps.flags[guarded["cgroup"]["id"]] == 0
        [waiting] = fake.mkdir(OTHER)
        assert waiting["state"] == "waiting"
        other = waiting["cgroup"]["id"]
        assert fake.maps.flags[other] == CgroupFlags.EXEMPT and other not in fake.maps.guarded
        # a reload that selects it: guarded, its entry no longer exempt
        fake.agent.reload(fake.agent.policies[:1] + (
            fake.agent.policies[1].__class__(**{**fake.agent.policies[1].__dict__,
                                                "selector": None}),))
        assert fake.maps.flags[other] == 0 and other in fake.maps.guarded
        assert other not in fake.agent.registry.exempt
        fake.rmdir(OTHER)
        assert other not in fake.maps.flags


def test_a_waiting_container_gone_takes_its_exemption_along(tmp_path):
    with fake_agent(TWO_POLICIES, cgroups=(), unselected="unguarded",
                    own_cgroup=below_parent(tmp_path),
                    container_parents=(PARENT,)) as fake:
        [waiting] = fake.mkdir(OTHER)
        other = waiting["cgroup"]["id"]
        assert fake.maps.flags[other] == CgroupFlags.EXEMPT
        [released] = fake.rmdir(OTHER)
        assert released["state"] == "released"
        assert other not in fake.maps.flags and other not in fake.agent.registry.exempt


def test_without_a_parent_nothing_is_exempt(tmp_path):
    """Exempt entries cost every unguarded task a lookup at their level:
    only below a parent are they written."""
    with fake_agent(TWO_POLICIES, cgroups=(), unselected="unguarded",
                    own_cgroup=agent_in(AGENT, tmp_path)) as fake:
        fake.mkdir(OTHER)
        assert fake.maps.flags.get(resolve(AGENT, fake.tree.mount).id) is None
        assert CgroupFlags.EXEMPT not in fake.maps.flags.values()
        assert fake.objects.sentinels == {}


def test_auto_takes_the_runtimes_parents_that_exist(tmp_path):
    with fake_agent(cgroups=(WORKLOAD,), own_cgroup=below_parent(tmp_path, "/kubepods.slice"),
                    container_parents=("auto", PARENT)) as fake:
        paths = [p["path"] for p in fake.events("agent")[0]["container_parents"]]
        assert paths == ["/kubepods.slice", PARENT]


@pytest.mark.parametrize("named, why", [
    (AGENT, "refusing it as a container parent: the agent runs in it"),
    (AGENT + "/inner", "refusing it as a container parent: the agent runs in it"),
    ("/", "refusing the root cgroup as a container parent"),
])
def test_a_parent_the_agent_runs_in_or_the_root_is_refused(tmp_path, named, why):
    with pytest.raises(AgentError, match=why):
        with fake_agent(cgroups=(WORKLOAD,), own_cgroup=below_parent(tmp_path, AGENT + "/inner"),
                        container_parents=(named,)):
            pass


def test_a_cgroup_named_both_ways_stays_a_parent_and_says_so(tmp_path):
    """--cgroup P with --container-parent P: P's hooks are the sentinel's
    only (the two sets share program names and would judge twice)."""
    other = "/kubepods.slice"
    with fake_agent(cgroups=(other,), own_cgroup=below_parent(tmp_path, other),
                    container_parents=(other,)) as fake:
        parent = resolve(other, fake.tree.mount)
        assert fake.maps.flags[parent.id] == CgroupFlags.PARENT
        assert parent.id not in fake.objects.cgroups and parent.id in fake.objects.sentinels
        [error] = [e for e in fake.events("error") if "container parent" in e["error"]]
        assert error["error"].startswith(f"{other}: a container parent")
