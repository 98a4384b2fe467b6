# SPDX-License-Identifier: Apache-2.0
"""The agent's stages on the fake kernel (tests/fakekernel.py), without root:
the reload protocol, policy generations, the workload registry, and the
core's loop, status, metrics, stop and crash reports."""
from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from guard.agent import core
from guard.agent.generations import (FAIL_CLOSED_BIT, GENERATION_NAMES_KEPT, RETIRE_GRACE_S,
                                     Generations, KnownGeneration, compile_all, generation_of,
                                     read_names)
from guard.kernel import host, libbpf
from guard.kernel.abi import Action, CgroupOp, EventKind
from guard.kernel.maps import MapCapacityError
from guard.policy.load import default_policy, parse_policies
from guard.report.events import EventWriter
from guard.workloads.containers import running_containers
from guard.workloads.runtime import ContainerInfo
from tests.fakekernel import (FakeControl, FakeMaps, FakeRing, cgroup_record, exec_record, fake_agent, payload_record,
                              socket_record)

CONTAINER_ID = "ab" * 32
PODMAN = "/machine.slice/libpod-" + CONTAINER_ID + ".scope"
OTHER_ID = "cd" * 32
OTHER = "/machine.slice/libpod-" + OTHER_ID + ".scope"


def policy(name: str = "t", *, spec: str = "", detections: str = "") -> str:
    """One policy document; spec: extra lines under spec (indented two spaces)."""
    text = ("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: " + name
            + "\nspec:\n  defaultAction: log\n" + spec)
    if detections:
        text += "  detections:\n" + detections
    return text


def selected(name: str, selector: str, **kw: str) -> str:
    return policy(name, spec="  selector:\n" + selector, **kw)


def of_kind(events: list[dict], kind: str, state: str | None = None) -> list[dict]:
    return [e for e in events if e["kind"] == kind and (state is None or e.get("state") == state)]


def reload_request(text: str, source: str = "<test>") -> dict:
    return {"op": "reload", "policy": {"text": text, "source": source}}


# --------------------------------------------------------------------------
# The reload protocol


def test_a_reload_request_switches_the_generation_and_reports_after_the_answer():
    with fake_agent(policy("one")) as fake:
        assert fake.maps.slots == {0: (1 << 8, 0)}
        answer = fake.agent._answer(reload_request(policy("two")))
        assert answer["ok"] is True and "read_fd" not in answer
        assert answer["previous_generation"] == 1
        assert answer["policy"] == {"name": "two", "source": "<test>", "generation": 2}
        assert answer["policies"] == ["two"]
        assert isinstance(answer["switch_ms"], float) and answer["switch_ms"] >= 0
        # the kernel switched: the slot points at generation 2
        assert fake.maps.slots == {0: (2 << 8, 0)}
        assert fake.agent.generations.active == 2 and fake.agent.stats.reloads == 1
        # the bookkeeping waits for the answer to go out
        assert of_kind(fake.events(), "policy") == []
        assert fake.maps.called("drop_prestaged")          # nothing written ahead stays
        fake.agent.reloads.finish_pending()
        [event] = of_kind(fake.events(), "policy")
        assert event["state"] == "reloaded" and event["previous_generation"] == 1
        assert event["policy"]["generation"] == 2
        assert fake.agent.policies[0].name == "two"
        # the next request records a reload still pending before it answers
        fake.agent._answer(reload_request(policy("three")))
        status = fake.agent._answer({"op": "status"})
        assert len(of_kind(fake.events(), "policy", "reloaded")) == 2
        assert status["policy"]["generation"] == 3


def test_an_invalid_policy_is_rejected_and_the_set_in_force_stays():
    with fake_agent(policy("one")) as fake:
        before_slots, before_installed = dict(fake.maps.slots), fake.maps.installed
        answer = fake.agent._answer(reload_request(policy("bad", spec="  nonsense: 1\n")))
        assert answer["ok"] is False and "invalid policy" in answer["error"]
        assert answer["problems"] and all(isinstance(p, str) for p in answer["problems"])
        assert fake.maps.slots == before_slots and fake.maps.installed == before_installed
        [event] = of_kind(fake.events(), "policy")
        assert event["state"] == "rejected" and event["problems"] == answer["problems"]
        assert event["policy"] == {"name": "one", "generation": 1}
        assert fake.agent.generations.active == 1 and fake.agent.stats.reloads == 0


def test_a_policy_file_passed_open_is_read(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(policy("from-fd"))
    with fake_agent(policy("one")) as fake, open(path, "rb") as fh:
        answer = fake.agent._answer(
            {"op": "reload", "policy": {"fd": 0, "source": str(path)}}, [fh.fileno()])
        assert answer["ok"] is True and answer["read_fd"] is True
        assert answer["policy"]["name"] == "from-fd"
        assert answer["policy"]["source"] == str(path)
        assert fake.maps.slots[0] == (2 << 8, 0)


def test_a_pipe_passed_instead_of_a_file_is_refused_and_the_policy_stays():
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, policy("from-pipe").encode())
        with fake_agent(policy("one")) as fake:
            answer = fake.agent._answer(
                {"op": "reload", "policy": {"fd": 0, "source": "pipe"}}, [read_end])
            assert answer["ok"] is False
            assert "not a regular file" in answer["error"] and "unchanged" in answer["error"]
            # an index with no file behind it is refused too
            answer = fake.agent._answer(
                {"op": "reload", "policy": {"fd": 3, "source": "pipe"}}, [read_end])
            assert answer["ok"] is False and "no file came" in answer["error"]
            assert fake.maps.slots == {0: (1 << 8, 0)}
            assert fake.agent.policies[0].name == "one" and fake.agent.stats.reloads == 0
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_file_the_agent_could_not_read_is_answered_read_fd_false():
    """docs/deployment.md: the agent answers "read_fd": false when it could not
    read the file it was given; the CLI then sends the text instead."""
    read_end, write_end = os.pipe()
    try:
        with fake_agent(policy("one")) as fake:
            answer = fake.agent._answer(
                {"op": "reload", "policy": {"fd": 0, "source": "pipe"}}, [read_end])
            assert answer["ok"] is False
            assert answer["read_fd"] is False
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_policy_that_does_not_fit_the_maps_leaves_the_set_in_force():
    with fake_agent(policy("one")) as fake:
        fake.maps.fail["install_policy"] = MapCapacityError("eg_cidr4 is full")
        answer = fake.agent._answer(reload_request(policy("two")))
        assert answer["ok"] is False and "cannot install" in answer["error"]
        assert "eg_cidr4 is full" in answer["error"]
        assert fake.maps.slots == {0: (1 << 8, 0)} and fake.maps.installed == [1 << 8]
        assert fake.agent.policies[0].name == "one" and fake.agent.generations.active == 1
        [error] = of_kind(fake.events(), "error")
        assert "reload failed" in error["error"]
        assert of_kind(fake.events(), "policy") == []


def test_a_failure_to_drop_what_was_written_ahead_is_reported_not_fatal():
    with fake_agent(policy("one")) as fake:
        fake.maps.fail["drop_prestaged"] = libbpf.LibbpfError(errno.EPERM, "bpf_map_delete_elem")
        answer = fake.agent._answer(reload_request(policy("two")))
        assert answer["ok"] is True
        fake.agent.reloads.finish_pending()
        assert any("cannot remove prefixes written ahead" in e["error"]
                   for e in of_kind(fake.events(), "error"))


def test_sighup_reloads_the_policy_file_on_the_next_tick(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(policy("on-disk"))
    with fake_agent(policy("on-disk"), policy_path=str(path)) as fake:
        fake.tick()
        assert fake.agent.stats.reloads == 0            # nothing asked, nothing changed
        path.write_text(policy("edited"))               # same inode: SIGHUP needed...
        fake.agent.request_reload()
        events = fake.tick()
        [reloaded] = of_kind(events, "policy", "reloaded")
        assert reloaded["policy"]["name"] == "edited"
        assert reloaded["policy"]["source"] == str(path)
        assert fake.maps.slots == {0: (2 << 8, 0)}
        assert fake.agent.stats.reloads == 1            # ...and one reload, not two
        assert of_kind(fake.tick(), "policy") == []


def test_sighup_without_a_policy_file_reloads_the_embedded_default():
    with fake_agent(policy("one")) as fake:
        fake.agent.request_reload()
        [reloaded] = of_kind(fake.tick(), "policy", "reloaded")
        assert reloaded["policy"]["name"] == default_policy().name
        assert fake.agent.policies[0].name == default_policy().name


def test_a_swapped_policy_file_is_picked_up_by_the_tick(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(policy("first"))
    with fake_agent(policy("first"), policy_path=str(path)) as fake:
        staged = tmp_path / "policy.yaml.new"
        staged.write_text(policy("swapped"))
        os.replace(staged, path)                        # a ConfigMap update: new inode
        [reloaded] = of_kind(fake.tick(), "policy", "reloaded")
        assert reloaded["policy"]["name"] == "swapped"
        assert of_kind(fake.tick(), "policy") == []     # once per change
        path.unlink()                                   # gone: nothing to reload
        assert of_kind(fake.tick(), "policy") == []
        assert fake.agent.policies[0].name == "swapped"


def test_the_status_op_answers_the_status_and_an_unknown_op_an_error():
    with fake_agent(policy("one")) as fake:
        status = fake.agent._answer({"op": "status"})
        assert status["ok"] is True and status["pid"] == os.getpid()
        assert status["policy"]["name"] == "one" and status["policy"]["generation"] == 1
        answer = fake.agent._answer({"op": "shutdown"})
        assert answer["ok"] is False and "unknown op 'shutdown'" in answer["error"]


def test_bookkeeping_that_cannot_write_the_names_file_is_reported(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.mkdir()
    with fake_agent(policy("one"), pin_dir=str(tmp_path / "pins"),
                    state_dir=str(blocker / "state")) as fake:
        shutil.rmtree(blocker)              # after start(), which wrote the names
        blocker.write_text("")
        answer = fake.agent._answer(reload_request(policy("two")))
        assert answer["ok"] is True
        fake.agent.reloads.finish_pending()         # write_names fails: reported, not raised
        assert any("cannot record the reload" in e["error"] for e in of_kind(fake.events(), "error"))
        assert fake.agent.reloads.after_answer == []
        assert fake.maps.slots == {0: (2 << 8, 0)}


# --------------------------------------------------------------------------
# Policy generations


def test_the_old_generation_is_removed_after_the_grace_and_keeps_its_names():
    text = policy("one", spec="  egress:\n    - name: no-pool\n      action: block\n"
                              "      to:\n        - cidr: 198.18.0.0/15\n")
    with fake_agent(text) as fake:
        old_id = fake.policy_id()
        rule = fake.rule_id("no-pool")
        fake.agent._answer(reload_request(policy("two")))
        generations = fake.agent.generations
        # still installed: a hook that read it before the switch finishes with it
        assert old_id in fake.maps.policies
        generations.retire_due(time.monotonic())
        assert old_id in fake.maps.policies
        generations.retire_due(time.monotonic() + RETIRE_GRACE_S + 1)
        assert old_id not in fake.maps.policies and fake.maps.called("remove_policy") == [(old_id,)]
        assert fake.maps.installed == [2 << 8]
        late = fake.agent.compiled_policy(old_id)   # a late event of generation 1
        assert isinstance(late, KnownGeneration) and late.name == "one"
        assert late.rule_name(rule) == "no-pool" and late.rule_name(10_000) is None


def test_retired_generations_keep_names_for_a_bounded_number_of_generations():
    with fake_agent(policy("g1")) as fake:
        generations = fake.agent.generations
        for n in range(2, GENERATION_NAMES_KEPT + 6):
            assert fake.agent._answer(reload_request(policy(f"g{n}")))["ok"]
            generations.retire_due(time.monotonic() + RETIRE_GRACE_S + 1)
        last = GENERATION_NAMES_KEPT + 5
        assert generations.active == last and fake.maps.installed == [last << 8]
        kept = sorted({generation_of(pid) for pid in generations.compiled})
        assert kept == list(range(last - GENERATION_NAMES_KEPT + 1, last + 1))
        assert generations.get(1 << 8) is None                   # forgotten
        assert generations.get(last << 8).name == f"g{last}"     # in force: compiled whole
        assert not isinstance(generations.get(last << 8), KnownGeneration)
        assert generations.get((last - 1) << 8) == KnownGeneration(
            f"g{last - 1}", generations.get((last - 1) << 8).rule_names)


def test_generation_names_round_trip_through_the_names_file(tmp_path):
    names_file = tmp_path / "state" / "generations.json"
    generations = Generations(names_file)
    generations.maps = FakeMaps()
    compiled = compile_all([parse_policies(policy("named"), "<t>")[0]])
    generation, ids, slots = generations.install(compiled)
    generations.switched(generation, compiled, ids, slots)
    generations.write_names()
    main = compiled[0][0]
    assert read_names(names_file) == {1 << 8: KnownGeneration("named", tuple(main.rule_names))}
    assert not names_file.with_suffix(".tmp").exists()


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"256": {"name": "x"}}',
                                     b'{"x": {"name": "a", "rules": []}}'])
def test_a_damaged_names_file_reads_as_no_names(tmp_path, content):
    path = tmp_path / "generations.json"
    path.write_bytes(content)
    assert read_names(path) == {}


def test_a_missing_names_file_or_none_reads_as_no_names(tmp_path):
    assert read_names(tmp_path / "absent.json") == {}
    assert read_names(None) == {}
    Generations(None).write_names()                 # no state dir: nothing written


def test_adoption_continues_numbering_after_the_adopted_generation(tmp_path):
    names_file = tmp_path / "generations.json"
    names_file.write_bytes(orjson.dumps({str(5 << 8): {"name": "before", "rules": ["", "r1"]}}))
    maps = FakeMaps()
    maps.policies = {5 << 8: "pinned", 5 << 8 | FAIL_CLOSED_BIT: "pinned-fc"}
    maps.guarded = {41: 0, 42: 0}
    generations = Generations(names_file)
    generations.maps = maps
    assert generations.adopt() == [41, 42]
    assert generations.last == 5
    assert generations.get(5 << 8) == KnownGeneration("before", ("", "r1"))
    assert sorted(pid for _when, pid in generations.retiring) == sorted(maps.policies)
    generation, ids, _slots = generations.install(compile_all([default_policy()]))
    assert generation == 6 and ids == [6 << 8]
    # adopted generations go after the grace, this agent's stays
    generations.retire_due(time.monotonic() + RETIRE_GRACE_S + 1)
    assert maps.installed == [6 << 8]


def test_an_agent_adopting_a_pinned_installation_says_so():
    with fake_agent(policy("one")) as fake:
        fake.maps.guarded[99] = 0
        previously = fake.agent._adopt()
        assert fake.agent.adopted is True and 99 in previously
        assert fake.agent.generations.last == 1
        fake.agent.registry.release_adopted(previously)
        assert fake.maps.called("unguard_adopted") == [(99,)]
        assert (99,) in fake.objects.called("detach_cgroup")
        assert fake.cgroup.id in fake.maps.guarded      # its own cgroup stays guarded


def _generations_with_one_retiring(when: float):
    maps = FakeMaps()
    generations = Generations(None)
    generations.maps = maps
    compiled = compile_all([default_policy()])
    generation, ids, slots = generations.install(compiled)
    generations.switched(generation, compiled, ids, slots)
    generation, ids, slots = generations.install(compiled)
    generations.switched(generation, compiled, ids, slots)   # generation 1 retires
    generations.retiring = [(when, pid) for _w, pid in generations.retiring]
    return generations, maps, compiled


@pytest.mark.parametrize("full", [MapCapacityError("eg_cidr4 is full"),
                                  libbpf.LibbpfError(errno.ENOSPC, "bpf_map_update_elem")])
def test_install_waits_for_a_retiring_generation_when_the_maps_are_full(full):
    generations, maps, compiled = _generations_with_one_retiring(time.monotonic())
    maps.fail["install_policy"] = full
    generation, ids, _slots = generations.install(compiled)
    assert generation == 3 and ids == [3 << 8]
    steps = [(name, args[0]) for name, args in maps.calls]
    # the retiring generation went before the install that fit
    assert steps.index(("remove_policy", 1 << 8)) < len(steps) - 1
    assert steps[-1] == ("install_policy", 3 << 8)
    assert maps.installed == [2 << 8, 3 << 8] and generations.retiring == []


def test_install_gives_up_when_nothing_retires_and_leaves_nothing_half_installed():
    maps = FakeMaps()
    generations = Generations(None)
    generations.maps = maps
    two = compile_all([parse_policies(policy("a"), "<t>")[0],
                       parse_policies(policy("b"), "<t>")[0]])
    calls = []
    original = maps.install_policy

    def second_fails(policy_id, compiled):
        calls.append(policy_id)
        if len(calls) == 2:
            raise MapCapacityError("full")
        original(policy_id, compiled)
    maps.install_policy = second_fails
    with pytest.raises(MapCapacityError):
        generations.install(two)
    assert maps.installed == [] and maps.called("remove_policy") == [(1 << 8,)]


def test_install_does_not_retry_an_error_other_than_a_full_map():
    generations, maps, compiled = _generations_with_one_retiring(time.monotonic())
    maps.fail["install_policy"] = libbpf.LibbpfError(errno.EPERM, "bpf_map_update_elem")
    with pytest.raises(libbpf.LibbpfError):
        generations.install(compiled)
    assert 1 << 8 in maps.installed                 # nothing retired early


# --------------------------------------------------------------------------
# The workload registry


def test_a_container_cgroup_appearing_is_guarded_with_its_latency():
    with fake_agent(policy("one"), cgroups=()) as fake:
        [event] = fake.mkdir(PODMAN)
        assert (event["kind"], event["state"]) == ("container", "guarded")
        assert isinstance(event["latency_ms"], float) and event["latency_ms"] >= 0
        assert event["policy"] == {"name": "one", "generation": 1}
        assert fake.maps.guarded == {event["cgroup"]["id"]: 0}
        assert fake.names.registered == {event["cgroup"]["id"]: PODMAN}
        # seen twice (watch, then scan): guarded once
        cgroup_id = event["cgroup"]["id"]
        assert fake.feed(cgroup_record(PODMAN, CgroupOp.MKDIR, cgroup_id=cgroup_id)) == []
        assert len(fake.objects.called("attach_cgroup")) == 1


def test_a_cgroup_gone_before_it_is_guarded_is_an_error_not_a_crash():
    with fake_agent(policy("one"), cgroups=()) as fake:
        [error] = fake.feed(cgroup_record(OTHER, CgroupOp.MKDIR, cgroup_id=12345))
        assert error["kind"] == "error" and "cannot guard " + OTHER in error["error"]
        assert fake.maps.guarded == {}
        # a cgroup nobody guarded goes quietly
        assert fake.feed(cgroup_record(OTHER, CgroupOp.RMDIR, cgroup_id=12345)) == []


def test_cgroup_records_are_ignored_without_discovery():
    with fake_agent(policy("one")) as fake:
        cg = fake.tree.mkdir(PODMAN)
        assert fake.feed(cgroup_record(PODMAN, CgroupOp.MKDIR, cgroup_id=cg.id)) == []
        assert cg.id not in fake.maps.guarded


def test_a_container_no_policy_selects_waits_until_its_metadata_selects_it():
    text = selected("agents", "    containerNames: [\"agent-*\"]\n")
    with fake_agent(text, cgroups=(), unselected="unguarded") as fake:
        assert [p.name for p in fake.agent.policies] == ["agents"]     # no fallback
        [waiting] = fake.mkdir(PODMAN)
        cgroup_id = waiting["cgroup"]["id"]
        assert waiting["state"] == "waiting" and "policy" not in waiting
        assert fake.maps.guarded == {} and fake.objects.cgroups == {}
        assert cgroup_id in fake.agent.registry.waiting
        assert fake.metadata.requested == [CONTAINER_ID]
        # the runtime answers: the name selects it
        fake.metadata.add(CONTAINER_ID, ContainerInfo(name="agent-7", image="img"))
        [event] = of_kind(fake.tick(), "container")
        assert event["state"] == "selected"
        assert event["policy"] == {"name": "agents", "generation": 1}
        assert event["container"]["name"] == "agent-7"
        assert fake.maps.guarded == {cgroup_id: 0} and cgroup_id in fake.objects.cgroups
        assert of_kind(fake.tick(), "container") == []   # no news: no reselect
        # renamed out of the selector: released, waiting again
        fake.metadata.add(CONTAINER_ID, ContainerInfo(name="web", image="img"))
        fake.tick()
        assert fake.maps.guarded == {} and cgroup_id in fake.agent.registry.waiting
        # it goes while waiting: released all the same
        [released] = fake.rmdir(PODMAN)
        assert released["state"] == "released" and released["cgroup"]["id"] == cgroup_id
        assert cgroup_id not in fake.agent.registry.waiting
        assert fake.metadata.forgotten == [CONTAINER_ID]


def test_rmdir_releases_a_guarded_container():
    with fake_agent(policy("one"), cgroups=()) as fake:
        [guarded] = fake.mkdir(PODMAN)
        cgroup_id = guarded["cgroup"]["id"]
        [released] = fake.rmdir(PODMAN)
        assert released["state"] == "released" and "latency_ms" in released
        assert fake.maps.guarded == {} and fake.objects.called("detach_cgroup") == [(cgroup_id,)]
        assert cgroup_id not in fake.names.registered
        assert fake.agent.registry.slot_of == {}


def test_a_reload_moves_a_cgroup_to_the_policy_that_now_selects_it():
    general = policy("general")
    special = selected("special", "    cgroupPaths: [\"/machine.slice/*\"]\n")
    with fake_agent(general, cgroups=(PODMAN,)) as fake:
        cgroup_id = fake.cgroup.id
        assert fake.maps.guarded == {cgroup_id: 0}
        answer = fake.agent._answer(reload_request(general + "---\n" + special))
        assert answer["ok"] and answer["policies"] == ["general", "special"]
        assert fake.maps.guarded == {cgroup_id: 1}
        assert fake.maps.slots[1] == (2 << 8 | 1, 0)
        [moved] = of_kind(fake.events(), "container", "selected")
        assert moved["policy"] == {"name": "special", "generation": 2}
        fake.agent.reloads.finish_pending()
        assert fake.agent.registry.policy_for_path(PODMAN).name == "special"
        # back to one policy: the cgroup returns to slot 0, slot 1 points nowhere
        fake.agent._answer(reload_request(general))
        assert fake.maps.guarded == {cgroup_id: 0}
        assert fake.maps.slots[1] == (0, 0)


def test_policy_for_path_finds_the_policy_of_a_guarded_ancestor():
    with fake_agent(policy("one"), cgroups=(PODMAN,)) as fake:
        registry = fake.agent.registry
        assert registry.policy_for_path(PODMAN).name == "one"
        assert registry.policy_for_path(PODMAN + "/init/worker").name == "one"
        assert registry.policy_for_path("/machine.slice") is None
        assert registry.policy_for_path("/user.slice/other") is None


def test_identity_labels_come_from_the_container_labels():
    text = policy("ids", spec="  identityLabels: [sandbox.example/episode]\n")
    with fake_agent(text, cgroups=(PODMAN,)) as fake:
        fake.metadata.add(CONTAINER_ID, ContainerInfo(
            name="agent", image="img", labels={"sandbox.example/episode": "ep-42", "x": "y"}))
        [event] = of_kind(fake.exec(["true"]), "exec")
        assert event["identity"] == {"sandbox.example/episode": "ep-42"}
        assert event["container"]["name"] == "agent"
        # a record judged by a generation no longer in force carries none
        [late] = of_kind(fake.exec(["true"], policy_id=7 << 8), "exec")
        assert "identity" not in late


def test_no_identity_without_identity_labels():
    with fake_agent(policy("plain"), cgroups=(PODMAN,)) as fake:
        fake.metadata.add(CONTAINER_ID, ContainerInfo(
            name="agent", image="img", labels={"sandbox.example/episode": "ep-42"}))
        [event] = of_kind(fake.exec(["true"]), "exec")
        assert "identity" not in event


# --------------------------------------------------------------------------
# The core: status, metrics, the loop, stop and crashes


SSH_R = ["ssh", "-R", "9000:localhost:22", "host"]


def test_status_and_metrics_report_cgroups_counters_and_detections():
    text = policy("t", detections="    sshReverseTunnel: block\n")
    with fake_agent(text, cgroups=("/sandbox.slice/agent-1.scope", PODMAN)) as fake:
        fake.maps.counter_values.update(events_lost=2, flows_sampled=5, verdict_block=3)
        fake.maps.held[fake.pid] = 1
        fake.exec(SSH_R, held=True)
        status = fake.agent.status()
        assert [c["path"] for c in status["cgroups"]] == ["/sandbox.slice/agent-1.scope", PODMAN]
        assert all(c["policy"] == "t" for c in status["cgroups"])
        assert status["cgroups"][1]["container"]["id"] == CONTAINER_ID
        assert status["counters"]["events_lost"] == 2 and status["counters"]["flows_sampled"] == 5
        assert status["detections"] == {"ssh_reverse_tunnel/block": 1}
        assert status["events"] == fake.agent.stats.events >= 2
        assert status["policies"] == [{"name": "t", "source": "<fake-kernel>", "slot": 0}]
        assert status["discovery"] is False and status["reloads"] == 0
        assert status["uptime_s"] >= 0 and "mode" in status["scheduling"]

        metrics = fake.agent.metrics()
        assert metrics["egress_guard_detections_total"] == [
            ({"type": "ssh_reverse_tunnel", "action": "block"}, 1)]
        events = dict((tuple(sorted(labels.items())), n)
                      for labels, n in metrics["egress_guard_events_total"])
        assert sum(events.values()) == status["events"]
        assert metrics["egress_guard_guarded_cgroups"] == 2
        assert metrics["egress_guard_guarded_containers"] == 1
        assert metrics["egress_guard_policy_generation"] == 1
        assert metrics["egress_guard_ring_events_lost_total"] == 2
        assert metrics["egress_guard_flows_sampled_total"] == 5
        verdicts = dict((labels["action"], n)
                        for labels, n in metrics["egress_guard_kernel_verdicts_total"])
        assert verdicts["block"] == 3 and set(verdicts) == {"allow", "log", "block", "kill"}


def test_metrics_of_a_stopping_agent_have_no_kernel_counters():
    with fake_agent(policy("t")) as fake:
        fake.agent._maps = None
        metrics = fake.agent.metrics()
        assert "egress_guard_ring_events_lost_total" not in metrics
        assert metrics["egress_guard_guarded_cgroups"] == 1


def test_a_long_batch_beats_the_heartbeat_and_flushes_allowed_flows_once(monkeypatch):
    with fake_agent(policy("t")) as fake:
        records = [payload_record(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", cookie=c,
                                  **fake.defaults({})) for c in range(1, 2 * core.HEARTBEAT_EVERY + 1)]
        clock = iter(range(1000, 100_000))   # a second per look at the clock
        monkeypatch.setattr(core.time, "monotonic", lambda: float(next(clock)))
        beats = len(fake.maps.called("heartbeat"))
        fake.agent._pending.extend(records)
        assert fake.agent._drain() == len(records)
        assert len(fake.maps.called("heartbeat")) - beats == 2   # every HEARTBEAT_EVERY records
        assert fake.maps.called("flow_verdicts") == [(list(range(1, len(records) + 1)),
                                                      Action.ALLOW)]
        assert fake.agent._pending == [] and fake.agent._drain() == 0


def test_a_batch_whose_clock_does_not_move_does_not_beat(monkeypatch):
    with fake_agent(policy("t")) as fake:
        monkeypatch.setattr(core.time, "monotonic", lambda: 500.0)
        fake.agent._last_beat = 500.0
        beats = len(fake.maps.called("heartbeat"))
        fake.push(*(exec_record(["true"], **fake.defaults({}))
                    for _ in range(core.HEARTBEAT_EVERY)))
        assert len(fake.maps.called("heartbeat")) == beats


def test_a_record_whose_handler_raises_is_reported_and_counted():
    with fake_agent(policy("t")) as fake:
        handle = fake.agent.handlers.handle

        def boom(raw):
            if raw[:4] == int(EventKind.SOCKET).to_bytes(4, "little"):
                raise RuntimeError("handler broke")
            handle(raw)
        fake.agent.handlers.handle = boom
        events = fake.feed(socket_record(**fake.defaults({})),
                           exec_record(["true"], **fake.defaults({})))
        [error] = of_kind(events, "error")
        assert error["error"].startswith("record not handled: RuntimeError: handler broke (at ")
        assert "test_agent_stages.py" in error["error"]
        assert error["record_kind"] == int(EventKind.SOCKET)
        assert fake.agent.stats.handler_errors == 1
        assert of_kind(events, "exec")           # the batch went on


def test_lost_records_are_reported_as_they_grow():
    with fake_agent(policy("t")) as fake:
        fake.agent.losses()
        assert fake.new_events() == []
        fake.maps.counter_values["events_lost"] = 3
        fake.agent.losses()
        fake.maps.counter_values["events_lost"] = 5
        fake.agent.losses()
        fake.agent.losses()
        losses = of_kind(fake.new_events(), "loss")
        assert [(e["lost"], e["lost_total"]) for e in losses] == [(3, 3), (2, 5)]


def test_shed_and_lost_records_are_said_per_workload_the_noisiest_first():
    with fake_agent(policy("t")) as fake:
        fake.maps.counter_values.update(events_shed=900, events_lost=2)
        fake.maps.workload_loss_values.update({101: (880, 0), 202: (20, 2)})
        fake.agent.losses()
        [loss] = of_kind(fake.new_events(), "loss")
        assert (loss["shed"], loss["shed_total"], loss["lost"]) == (900, 900, 2)
        assert [(w["cgroup"]["id"], w["shed"], w["lost"]) for w in loss["workloads"]] == [
            (101, 880, 0), (202, 20, 2)]
        # only what changed since: the quiet workload is not named again
        fake.maps.counter_values["events_shed"] = 1000
        fake.maps.workload_loss_values[101] = (980, 0)
        fake.agent.losses()
        [loss] = of_kind(fake.new_events(), "loss")
        assert [(w["cgroup"]["id"], w["shed"]) for w in loss["workloads"]] == [(101, 100)]


def test_a_tick_chore_that_fails_is_reported_and_the_others_still_run(monkeypatch, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(policy("t"))
    with fake_agent(policy("t"), policy_path=str(path)) as fake:
        def broken():
            raise OSError("metadata gone")
        monkeypatch.setattr(fake.agent.registry, "reselect_if_news", broken)
        fake.agent.request_reload()
        events = fake.tick()
        [error] = of_kind(events, "error")
        assert error["error"].startswith("agent tick: OSError: metadata gone")
        assert fake.agent.stats.loop_errors == 1
        assert of_kind(events, "policy", "reloaded")   # the reload chore still ran


def test_stop_writes_stopped_and_records_the_state(tmp_path):
    state = tmp_path / "state"
    with fake_agent(policy("t"), pin_dir=str(tmp_path / "pins"), state_dir=str(state)) as fake:
        cgroup_id = fake.cgroup.id
        fake.agent._ready = True          # start() would have set it
        fake.agent.stop()
        [stopped] = of_kind(fake.events(), "agent", "stopped")
        assert stopped["pinned"] is True and stopped["pin_dir"] == str(tmp_path / "pins")
        assert stopped["adopted"] is False
        assert fake.maps.guarded == {cgroup_id: 0}      # pinned: enforcement stays
        record = orjson.loads((state / "agent.json").read_bytes())
        assert record["state"] == "stopped" and record["pid"] == os.getpid()
    with fake_agent(policy("t"), pin_dir=str(tmp_path / "pins"), state_dir=str(state)) as fake:
        [ready] = of_kind(fake.events(), "agent", "ready")
        assert "previous_agent" not in ready           # it stopped cleanly


def test_stop_without_pins_unguards(tmp_path):
    with fake_agent(policy("t"), control_socket=str(tmp_path / "ctl")) as fake:
        cgroup_id = fake.cgroup.id
        fake.agent._ready = True
        fake.agent.stop()
        [stopped] = of_kind(fake.events(), "agent", "stopped")
        assert stopped["pinned"] is False and stopped["control_socket"] == str(tmp_path / "ctl")
        assert fake.maps.called("unguard") == [(cgroup_id,)] and fake.maps.closed


def _raise_boom():
    raise RuntimeError("boom")


def test_a_crash_is_reported_with_its_cause_and_frames_and_the_next_agent_knows(tmp_path):
    pins, state = str(tmp_path / "pins"), str(tmp_path / "state")
    with fake_agent(policy("t"), pin_dir=pins, state_dir=state) as fake:
        fake.agent._ready = True
        fake.agent._record_state("running")
        try:
            _raise_boom()
        except RuntimeError as exc:
            fake.agent.crashed(exc)
        [crashed] = of_kind(fake.events(), "agent", "crashed")
        assert crashed["error"].startswith("RuntimeError: boom (at test_agent_stages.py:")
        assert crashed["error"].endswith("in _raise_boom)")
        assert crashed["traceback"][-1].startswith("test_agent_stages.py:")
        assert crashed["traceback"][-1].endswith("in _raise_boom")
        assert crashed["enforcement"].startswith("kept")
        fake.agent.stop()
        record = orjson.loads((Path(state) / "agent.json").read_bytes())
        assert record["state"] == "crashed" and record["error"] == crashed["error"]
    with fake_agent(policy("t"), pin_dir=pins, state_dir=state) as fake:
        [ready] = of_kind(fake.events(), "agent", "ready")
        previous = ready["previous_agent"]
        assert previous["state"] == "crashed" and previous["pid"] == os.getpid()
        assert previous["how"] == "crashed: " + crashed["error"]
        assert previous["since"] == record["ts"]


def test_a_crash_without_pins_says_enforcement_is_removed():
    with fake_agent(policy("t")) as fake:
        try:
            _raise_boom()
        except RuntimeError as exc:
            fake.agent.crashed(exc)
        [crashed] = of_kind(fake.events(), "agent", "crashed")
        assert crashed["enforcement"].startswith("removed")


def test_the_previous_agent_that_ended_without_a_word_or_still_runs(tmp_path):
    pins, state = str(tmp_path / "pins"), tmp_path / "state"
    state.mkdir()
    path = state / "agent.json"
    with fake_agent(policy("t"), pin_dir=pins, state_dir=str(state)) as fake:
        agent = fake.agent
        path.unlink()                                              # start() wrote "running"
        assert agent._previous_agent() is None                     # no file
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()                                                # reaped: no such pid
        path.write_bytes(orjson.dumps({"pid": dead.pid, "state": "running", "ts": "then"}))
        previous = agent._previous_agent()
        assert previous["state"] == "running" and "without a word" in previous["how"]
        # a running agent that is still alive is not ours to judge
        path.write_bytes(orjson.dumps({"pid": os.getppid(), "state": "running", "ts": "now"}))
        assert agent._previous_agent() is None
        path.write_bytes(b"{damaged")
        assert agent._previous_agent() is None
        path.write_bytes(b"[]")
        assert agent._previous_agent() is None


def test_a_state_file_that_cannot_be_written_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.mkdir()
    with fake_agent(policy("t"), pin_dir=str(tmp_path / "pins"),
                    state_dir=str(blocker / "state")) as fake:
        shutil.rmtree(blocker)              # after start(), which wrote the state
        blocker.write_text("")
        fake.agent._record_state("running")
        [error] = of_kind(fake.events(), "error")
        assert "cannot record the agent's state" in error["error"]


def test_request_stop_and_reload_set_their_flags():
    with fake_agent(policy("t")) as fake:
        fake.agent.request_stop()
        fake.agent.request_reload()
        assert fake.agent._stopping is True and fake.agent.reloads.requested is True


def test_start_needs_root(monkeypatch):
    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)   # as root too: nothing is loaded
    agent = core.Agent(default_policy(), [], EventWriter(io.BytesIO()))   # the host's kernel
    with pytest.raises(core.AgentError, match="needs root"):
        agent.start()


# --------------------------------------------------------------------------
# The loop itself, on a fake ring and control socket


def _stop_after(turns: int):
    asked = iter([False] * turns + [True])
    return lambda: next(asked)


def test_a_turn_of_the_loop_drains_the_ring_answers_control_and_ticks(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(policy("t"))
    with fake_agent(policy("t"), policy_path=str(path), scheduling="normal") as fake:
        ring, control = FakeRing(fake.agent._pending.append), FakeControl()
        fake.agent._ring, fake.agent._control = ring, control
        try:
            ring.put(exec_record(["true"], **fake.defaults({})))
            control.ask(reload_request(policy("two")))
            fake.maps.counter_values["events_lost"] = 4
            beats = len(fake.maps.called("heartbeat"))
            fake.agent.run(should_stop=_stop_after(1))
            events = fake.new_events()
            assert ring.consumed == 1 and of_kind(events, "exec")
            [answer] = control.answers
            assert answer["ok"] and answer["policy"]["generation"] == 2
            # answered, then recorded in the same turn
            assert of_kind(events, "policy", "reloaded")
            assert [(e["lost"], e["lost_total"]) for e in of_kind(events, "loss")] == [(4, 4)]
            assert len(fake.maps.called("heartbeat")) > beats        # the tick beat
        finally:
            ring.close()
            control.close()


def test_a_loop_turn_that_fails_is_reported_and_the_loop_goes_on(monkeypatch):
    with fake_agent(policy("t"), scheduling="normal") as fake:
        ring = FakeRing(fake.agent._pending.append)
        fake.agent._ring = ring
        try:
            turns = []

            def turn(selector):
                turns.append(selector)
                if len(turns) == 1:
                    raise RuntimeError("selector broke")
            monkeypatch.setattr(fake.agent, "_turn", turn)
            monkeypatch.setattr(core, "LOOP_ERROR_PAUSE_S", 0)
            fake.agent.run(should_stop=_stop_after(2))
            assert len(turns) == 2 and fake.agent.stats.loop_errors == 1
            [error] = of_kind(fake.new_events(), "error")
            assert error["error"].startswith("agent loop: RuntimeError: selector broke")
        finally:
            ring.close()


def test_the_loop_ends_when_asked_to_stop():
    with fake_agent(policy("t"), scheduling="normal") as fake:
        ring = FakeRing(fake.agent._pending.append)
        fake.agent._ring = ring
        try:
            fake.agent.request_stop()
            fake.agent.run()                          # returns at once
            assert ring.consumed == 0
            ring.put(exec_record(["true"], **fake.defaults({})))
            assert fake.agent.poll(0) == 1 and of_kind(fake.new_events(), "exec")
        finally:
            ring.close()


class _Closable:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


def test_stop_drains_the_ring_and_closes_what_start_opened():
    with fake_agent(policy("t"), scheduling="normal") as fake:
        ring, control = FakeRing(fake.agent._pending.append), FakeControl()
        metrics, pods = _Closable(), _Closable()
        agent = fake.agent
        agent._ring, agent._control, agent._metrics, agent.pods = ring, control, metrics, pods
        ring.put(exec_record(["true"], **fake.defaults({})))   # sent before the stop
        fake.maps.counter_values["events_lost"] = 1
        agent.stop()
        events = fake.new_events()
        assert of_kind(events, "exec") and of_kind(events, "loss")
        assert ring.closed and control.closed and metrics.closed and pods.closed
        assert agent._ring is agent._control is agent._metrics is agent.pods is None


def test_start_and_run_reports_a_crash_stops_and_restores_the_signal_handlers(monkeypatch):
    import signal
    with fake_agent(policy("t")) as fake:
        agent = fake.agent
        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        seen = {}

        def run():
            seen.update({sig: signal.getsignal(sig) for sig in before})
            _raise_boom()
        stops = []
        monkeypatch.setattr(agent, "start", lambda: None)
        monkeypatch.setattr(agent, "run", run)
        monkeypatch.setattr(agent, "stop", lambda: stops.append(True))
        with pytest.raises(core.AgentCrashed, match="RuntimeError: boom"):
            core.start_and_run_until_signalled(agent)
        assert seen[signal.SIGHUP] == agent.request_reload
        assert seen[signal.SIGTERM] == agent.request_stop == seen[signal.SIGINT]
        assert stops == [True]
        assert of_kind(fake.events(), "agent", "crashed")
        assert {sig: signal.getsignal(sig) for sig in before} == before


def test_running_containers_are_found_without_descending_into_them():
    with fake_agent(policy("t")) as fake:
        fake.tree.mkdir(PODMAN)
        fake.tree.mkdir(PODMAN + "/init")             # a cgroup inside the container
        fake.tree.mkdir("/machine.slice/not-a-container")
        # a container going while the walk looks: its directory, no cgroup.procs
        (fake.tree.mount / OTHER.lstrip("/")).mkdir(parents=True)
        found = running_containers(fake.tree.mount)
        assert [cg.relative for cg in found] == [PODMAN]


def test_action_and_classifier_errors_are_reported_after_the_batch():
    with fake_agent(policy("t")) as fake:
        fake.agent.responder.errors.append("kill 5000001: EPERM")
        events = fake.exec(["true"])
        assert any(e["error"] == "action failed: kill 5000001: EPERM"
                   for e in of_kind(events, "error"))
