# SPDX-License-Identifier: Apache-2.0
"""Container discovery: with no --cgroup the agent guards every container
cgroup, those already running and those that appear, and frees them as they go."""
from __future__ import annotations

import os
import secrets

from guard.control.server import request
from guard.demo.sandbox import TempCgroup
from tests.unit.test_kubernetes_pods import CONTAINER_A, UID_A, ReplayServer

from .agentproc import AgentProcess
from .conftest import port_block_policy
from .test_reload import AcceptingListener

PORT = 29901
POLICY = port_block_policy("containers", PORT)

CONNECT = f"import socket; print(socket.socket().connect_ex(('127.0.0.1', {PORT})))"
CONNECT_WITH_PID = ("import os, socket; "
                    f"print(socket.socket().connect_ex(('127.0.0.1', {PORT})), os.getpid())")


def container_id() -> str:
    return secrets.token_hex(32)


def test_running_and_new_containers_are_guarded_and_released(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    listener = AcceptingListener(PORT)
    # a parent of our own; libpod-ID cgroups below it look like podman's
    try:
        with TempCgroup("egress-guard-test") as parent:
            before = container_id()
            with TempCgroup(parent=parent.path, name=f"libpod-{before}") as running, \
                    TempCgroup(parent=parent.path, name="not-a-container") as plain:
                with AgentProcess([], policy=policy) as agent:
                    ready = agent.ready
                    assert ready["discovery"] is True
                    guarded = {c["id"]: c for c in ready["cgroups"]}
                    assert guarded[running.id]["container"] == {"id": before,
                                                                "runtime": "podman"}
                    assert plain.id not in guarded
                    assert running.python(CONNECT).stdout.strip() == "1"  # EPERM
                    assert plain.python(CONNECT).stdout.strip() == "0"

                    after = container_id()
                    with TempCgroup(parent=parent.path, name=f"libpod-{after}") as new:
                        appeared = agent.wait_for(lambda e: e["kind"] == "container"
                                                  and e["state"] == "guarded")
                        assert appeared["container"] == {"id": after, "runtime": "podman"}
                        assert appeared["cgroup"]["id"] == new.id
                        assert appeared["latency_ms"] < 1000
                        assert new.python(CONNECT).stdout.strip() == "1"
                        blocked = agent.wait_for(lambda e: e["kind"] == "connect"
                                                 and e["cgroup"]["id"] == new.id)
                        assert blocked["container"] == {"id": after, "runtime": "podman"}
                        assert blocked["rule"] == "blocked"
                    released = agent.wait_for(lambda e: e["kind"] == "container"
                                              and e["state"] == "released")
                    assert released["cgroup"]["id"] == new.id
                    status = request(agent.control_socket, {"op": "status"})
                    assert new.id not in [c["id"] for c in status["cgroups"]]
                    assert running.id in [c["id"] for c in status["cgroups"]]
                    assert agent.stop() == 0
                assert not [e for e in agent.events
                            if e.get("cgroup", {}).get("id") == plain.id]
    finally:
        listener.close()


def test_metrics_of_a_running_agent(tmp_path):
    import socket as socket_module
    import urllib.request

    probe = socket_module.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    listener = AcceptingListener(PORT)
    try:
        with TempCgroup("egress-guard-test") as parent, \
                TempCgroup(parent=parent.path, name=f"libpod-{container_id()}") as box:
            with AgentProcess([], policy=policy, extra=["--metrics", f"127.0.0.1:{port}"]) as agent:
                assert box.python(CONNECT).stdout.strip() == "1"
                agent.wait_for(lambda e: e["kind"] == "connect" and e["action"] == "block")
                base = f"http://127.0.0.1:{port}"
                with urllib.request.urlopen(base + "/readyz", timeout=5) as reply:
                    assert reply.status == 200
                with urllib.request.urlopen(base + "/metrics", timeout=5) as reply:
                    text = reply.read().decode()
                assert 'egress_guard_events_total{action="block",kind="connect"} 1' in text
                assert 'egress_guard_kernel_verdicts_total{action="block"} 1' in text
                assert "egress_guard_guarded_containers 1" in text
                assert "egress_guard_policy_generation 1" in text
                assert "egress_guard_ring_events_lost_total 0" in text
    finally:
        listener.close()


def test_events_of_a_pod_carry_its_kubernetes_metadata(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    listener = AcceptingListener(PORT)
    api = ReplayServer()
    cid = CONTAINER_A  # the id the pod's containerStatuses name
    try:
        # the kubelet's cgroupfs layout, below a parent of the test's own
        with TempCgroup("egress-guard-test") as parent, \
                TempCgroup(parent=parent.path, name="kubepods") as kubepods, \
                TempCgroup(parent=kubepods.path, name="burstable") as qos, \
                TempCgroup(parent=qos.path, name=f"pod{UID_A}") as pod, \
                TempCgroup(parent=pod.path, name=cid) as box:
            extra = ["--kube-api", api.url, "--node-name", "node-1"]
            with AgentProcess([], policy=policy, extra=extra) as agent:
                assert [c["container"]["runtime"] for c in agent.ready["cgroups"]
                        if c["id"] == box.id] == ["kubernetes"]
                # the pod list arrives in the background: probe until events carry it
                for _ in range(20):
                    errno_text, pid = box.python(CONNECT_WITH_PID).stdout.split()
                    assert errno_text == "1"
                    event = agent.wait_for(lambda e: e["kind"] == "connect"
                                           and e["process"]["pid"] == int(pid))
                    if "k8s" in event:
                        break
                assert event["k8s"]["namespace"] == "agents"
                assert event["k8s"]["pod"] == "agent-a"
                assert event["k8s"]["labels"]["app"] == "agent"  # "team" changes by watch
                # a CRI runtime's container: named by the pod's container status
                assert event["container"] == {"id": cid, "runtime": "kubernetes", "name": "agent",
                                              "image": "registry.example/agents/rl:1.4"}
    finally:
        api.close()
        listener.close()
