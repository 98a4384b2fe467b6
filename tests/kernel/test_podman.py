# SPDX-License-Identifier: Apache-2.0
"""Real containers (podman + runc): guarded from the moment they start, or
from agent start when already running; released when they go."""
from __future__ import annotations

import subprocess
import time

import pytest

from guard.control.server import request

from .agentproc import ROOT, AgentProcess
from . import images
from .conftest import port_block_policy
from .test_reload import AcceptingListener

PORT = 29902
IMAGE = "localhost/egress-guard-test-busybox:latest"
# runc: crun refuses hybrid cgroup hosts; the ulimits keep podman from
# raising limits this machine does not grant
PODMAN_RUN = ["podman", "run", "--runtime", "runc", "--network", "host",
              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
POLICY = port_block_policy("containers", PORT)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A busybox image made from the static binary, removed afterwards."""
    with images.busybox_image(tmp_path_factory.mktemp("rootfs"), IMAGE) as made:
        yield made


@pytest.fixture
def containers():
    """Ids of containers this test started; each is removed, by id, afterwards."""
    started: list[str] = []
    yield started
    for cid in started:
        subprocess.run(["podman", "rm", "-f", "-t", "0", cid], capture_output=True)


@pytest.fixture
def listener():
    lst = AcceptingListener(PORT)
    yield lst
    lst.close()


def run_container(containers, tmp_path, *command, detach=False,
                  options=()) -> tuple[str, subprocess.CompletedProcess]:
    """podman run [options] IMAGE command; the id is recorded for removal."""
    cidfile = tmp_path / f"cid-{len(containers)}"
    result = subprocess.run([*PODMAN_RUN, "--cidfile", str(cidfile), *(["-d"] if detach else []),
                             *options, IMAGE, *command], capture_output=True, text=True,
                            timeout=120)
    cid = cidfile.read_text().strip()
    containers.append(cid)
    return cid, result


def test_a_container_is_guarded_from_its_start(tmp_path, image, containers, listener):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    with AgentProcess([], policy=policy) as agent:
        cid, result = run_container(
            containers, tmp_path, "/bin/sh", "-c", f"nc 127.0.0.1 {PORT} </dev/null; echo exit=$?")
        assert "Operation not permitted" in result.stderr, result.stderr
        guarded = agent.wait_for(lambda e: e["kind"] == "container" and e["state"] == "guarded"
                                 and e["container"]["id"] == cid)
        assert guarded["container"]["runtime"] == "podman"
        blocked = agent.wait_for(lambda e: e["kind"] == "connect"
                                 and e.get("container", {}).get("id") == cid)
        assert blocked["action"] == "block" and blocked["rule"] == "blocked"
        assert blocked["process"]["comm"] == "nc"
        shell = agent.wait_for(lambda e: e["kind"] == "exec"
                               and e.get("container", {}).get("id") == cid
                               and e["process"]["argv"][:2] == ["/bin/sh", "-c"])
        assert shell["process"]["exe"] == "/bin/busybox"  # the container's own view
        subprocess.run(["podman", "rm", "-f", "-t", "0", cid], capture_output=True)
        released = agent.wait_for(lambda e: e["kind"] == "container" and e["state"] == "released"
                                  and e["container"]["id"] == cid, timeout=30)
        status = request(agent.control_socket, {"op": "status"})
        assert released["cgroup"]["id"] not in [c["id"] for c in status["cgroups"]]


def test_a_container_running_before_the_agent_is_guarded(tmp_path, image, containers, listener):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    cid, result = run_container(containers, tmp_path, "/bin/sleep", "120", detach=True)
    assert result.returncode == 0, result.stderr
    with AgentProcess([], policy=policy) as agent:
        ready = [c for c in agent.ready["cgroups"] if c.get("container", {}).get("id") == cid]
        assert ready and ready[0]["container"]["runtime"] == "podman"
        probe = subprocess.run(["podman", "exec", cid, "nc", "127.0.0.1", str(PORT)],
                               capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert "Operation not permitted" in probe.stderr, probe.stderr
        agent.wait_for(lambda e: e["kind"] == "connect" and e["action"] == "block"
                       and e.get("container", {}).get("id") == cid)


@pytest.fixture
def podman_api(tmp_path):
    """podman's Docker-compatible API on a socket of the test's own; ended by pid."""
    path = tmp_path / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{path}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not path.exists() and service.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert path.exists(), "podman system service did not start"
        yield str(path)
    finally:
        service.terminate()
        service.wait(timeout=30)


def test_events_name_the_container_and_its_image(tmp_path, image, containers, listener,
                                                  podman_api):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    with AgentProcess([], policy=policy, extra=["--runtime-socket", podman_api]) as agent:
        cid, result = run_container(
            containers, tmp_path, "/bin/sleep", "120", detach=True)
        assert result.returncode == 0, result.stderr
        name = subprocess.run(["podman", "inspect", "-f", "{{.Name}}", cid], capture_output=True,
                              text=True, check=True).stdout.strip()
        # names arrive after the container is guarded; a later event carries them
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = request(agent.control_socket, {"op": "status"})
            entry = [c for c in status["cgroups"] if c.get("container", {}).get("id") == cid]
            if entry and entry[0]["container"].get("name"):
                break
            time.sleep(0.2)
        assert entry[0]["container"] == {"id": cid, "runtime": "podman", "name": name,
                                         "image": IMAGE}
        probe = subprocess.run(["podman", "exec", cid, "nc", "127.0.0.1", str(PORT)],
                               capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert "Operation not permitted" in probe.stderr
        blocked = agent.wait_for(lambda e: e["kind"] == "connect"
                                 and e.get("container", {}).get("id") == cid)
        assert blocked["container"]["name"] == name and blocked["container"]["image"] == IMAGE


SELECTED = port_block_policy("blockers", PORT, extra_spec="""\
  selector:
    labels: {role: blocked}
  identityLabels: [episode]
""") + """\
---
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: openers
spec:
  selector:
    labels: {role: open}
  defaultAction: log
"""


def test_containers_selected_by_labels_get_their_own_verdicts(tmp_path, image, containers,
                                                             listener, podman_api):
    policy = tmp_path / "p.yaml"
    policy.write_text(SELECTED)
    with AgentProcess([], policy=policy, extra=["--runtime-socket", podman_api]) as agent:
        blocked, _ = run_container(containers, tmp_path, "/bin/sleep", "120", detach=True,
                                   options=["--label", "role=blocked", "--label", "episode=ep-7"])
        opened, _ = run_container(containers, tmp_path, "/bin/sleep", "120", detach=True,
                                  options=["--label", "role=open"])
        # each starts under the fallback and moves once its labels are known
        for cid, name in ((blocked, "blockers"), (opened, "openers")):
            moved = agent.wait_for(lambda e, cid=cid: e["kind"] == "container"
                                   and e["state"] == "selected"
                                   and e["container"]["id"] == cid, timeout=20)
            assert moved["policy"]["name"] == name
        outcomes = {}
        for cid in (blocked, opened):
            probe = subprocess.run(["podman", "exec", cid, "nc", "127.0.0.1", str(PORT)],
                                   capture_output=True, text=True, timeout=60,
                                   stdin=subprocess.DEVNULL)
            outcomes[cid] = "EPERM" if "Operation not permitted" in probe.stderr else "ok"
        assert outcomes == {blocked: "EPERM", opened: "ok"}
        refused = agent.wait_for(lambda e: e["kind"] == "connect"
                                 and e.get("container", {}).get("id") == blocked)
        assert refused["action"] == "block" and refused["policy"]["name"] == "blockers"
        assert refused["identity"] == {"episode": "ep-7"}
        logged = agent.wait_for(lambda e: e["kind"] == "connect"
                                and e.get("container", {}).get("id") == opened)
        assert logged["action"] == "log" and logged["policy"]["name"] == "openers"
        assert "identity" not in logged


def test_mining_from_a_container_in_its_own_network_namespace_is_stopped(
        tmp_path, image, containers):
    """Embedded default policy (stratum: block). Pool and miner both live in a
    container with its own network namespace (--network none: loopback
    only): the held subscribe never reaches the pool, and the socket is reset
    from inside that namespace."""
    payload = ROOT / "tests/fixtures/payloads/stratum-v1.cpuminer.bin"
    script = ("nc -l -p 3333 > /tmp/got & sleep 0.5; "
              "nc 127.0.0.1 3333 < /payload; echo client=$?; sleep 1; "
              "echo pool=$(wc -c < /tmp/got)")
    with AgentProcess([]) as agent:
        argv = [word if word != "host" else "none" for word in PODMAN_RUN]
        cidfile = tmp_path / "cid"
        result = subprocess.run([*argv, "--cidfile", str(cidfile), "--tmpfs", "/tmp",
                                 "-v", f"{payload}:/payload:ro",
                                 IMAGE, "/bin/sh", "-c", script], capture_output=True,
                                text=True, timeout=120)
        cid = cidfile.read_text().strip()
        containers.append(cid)
        assert "pool=0" in result.stdout, (result.stdout, result.stderr)
        event = agent.wait_for(lambda e: e["kind"] == "detection"
                               and e.get("container", {}).get("id") == cid)
    assert event["action"] == "block" and event["detection"]["dialect"] == "stratum-v1"
    assert event["dst"]["port"] == 3333 and event["process"]["comm"] == "nc"
