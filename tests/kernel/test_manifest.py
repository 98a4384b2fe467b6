# SPDX-License-Identifier: Apache-2.0
"""The DaemonSet as it really runs: deploy/kubernetes/daemonset.yaml
translated to `podman run` (tests/kernel/manifest.py: its capabilities,
mounts, read-only root, arguments and environment, nothing added but what
podman needs on this host), with the ConfigMap's policy written where the
manifest mounts it, the way the kubelet writes it. Then, end to end: the
agent does not guard its own container and says so; a workload container
started afterwards is guarded and named in the events; the probes' paths
and /metrics answer; a policy change through the mounted file is applied;
stopping the agent's container leaves enforcement pinned until `uninstall`,
also for a container started while no agent runs, which the next agent
takes over.

The host's bpffs, /run/egress-guard and /var/log/egress-guard are replaced
by directories of the test's own (a private bpffs mount), so nothing the
host's agent or other tests pinned is touched. The image is the one
test_image.py builds (conftest.agent_image): minutes the first time."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from guard.control.server import request
from guard.kernel.objects import remove_pins

from .agentproc import ROOT
from .manifest import (PODMAN_HOST, ConfigMapDir, EventsFile, Pod, configmap_data,
                       load_daemonset, podman, translate)
from .test_reload import AcceptingListener

KUBERNETES = ROOT / "deploy" / "kubernetes"
PORT = 29941
PREFIX = f"eg-manifest-{os.getpid()}"


@pytest.fixture
def host_dirs(tmp_path):
    """The host paths the manifest mounts, replaced by the test's own: a
    private bpffs (unmounted after, its pins removed), state, events, and the
    ConfigMap's directory."""
    bpffs = tmp_path / "bpffs"
    bpffs.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(bpffs)], check=True)
    try:
        yield {"/sys/fs/bpf": bpffs, "/run/egress-guard": tmp_path / "state",
               "/var/log/egress-guard": tmp_path / "events"}, tmp_path / "configmap"
    finally:
        remove_pins(bpffs / "egress-guard")
        subprocess.run(["umount", str(bpffs)], check=True)


@pytest.fixture
def containers():
    """Names of containers this test starts; each removed, by name, afterwards."""
    started: list[str] = []
    yield started
    for name in started:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)


@pytest.fixture
def listener():
    lst = AcceptingListener(PORT)
    yield lst
    lst.close()


def argument(args: list[str], option: str) -> str:
    """The value of --option=VALUE or --option VALUE in the manifest's args."""
    for i, arg in enumerate(args):
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
        if arg == option:
            return args[i + 1]
    raise AssertionError(f"the DaemonSet's args have no {option}: {args}")


def on_host(pod: Pod, path: str) -> Path:
    """Where a path in the agent's container is on the host (through its mounts)."""
    for mount_path, host in sorted(pod.mounts.items(), key=lambda m: -len(m[0])):
        if path == mount_path or path.startswith(mount_path + "/"):
            return Path(host) / os.path.relpath(path, mount_path)
    raise AssertionError(f"{path} is on no volume of the DaemonSet")


def http_get(address: str, port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=5) as answer:
        return answer.status, answer.read().decode()


def nc(container: str) -> str:
    """ok, or EPERM: a connect from the workload to the test's listener."""
    probe = podman("exec", container, "nc", "-w", "2", "127.0.0.1", str(PORT), check=False)
    return "EPERM" if "Operation not permitted" in probe.stderr else "ok"


class Deployed:
    """The DaemonSet's pod started by podman as its manifest says (plus
    `options`), its ConfigMap written where the manifest mounts it; ready."""

    def __init__(self, image: str, host_dirs, containers: list[str], options=()):
        replaced, configmap_path = host_dirs
        self.bpffs = replaced["/sys/fs/bpf"]
        daemonset = load_daemonset(KUBERNETES / "daemonset.yaml")
        volumes = daemonset["spec"]["template"]["spec"]["volumes"]
        configmap_name = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
        self.data = configmap_data(KUBERNETES / "configmap.yaml", configmap_name)
        self.configmap = ConfigMapDir(configmap_path)
        self.configmap.write(self.data)
        self.pod = pod = translate(daemonset, replaced, {configmap_name: configmap_path},
                                   node_name=socket.gethostname())
        pod.options += options
        self.policy_file = Path(argument(pod.args, "--policy"))
        assert on_host(pod, str(self.policy_file)).parent == configmap_path, \
            "the policy is the ConfigMap's"
        self.events = EventsFile(on_host(pod, argument(pod.args, "--events")))
        self.control = on_host(pod, "/run/egress-guard/agent.sock")   # the default socket
        self.image, self.name = image, f"{PREFIX}-agent"
        containers.append(self.name)
        podman(*pod.run_argv(image, self.name)[1:])
        self.id = podman("inspect", "-f", "{{.Id}}", self.name).stdout.strip()
        self.ready = self.events.wait_for(
            lambda e: e["kind"] == "agent" and e["state"] == "ready", timeout=60, why=self.logs,
            alive=self.running)

    def running(self) -> bool:
        state = podman("inspect", "-f", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def logs(self) -> str:
        logs = podman("logs", self.name, check=False)
        state = podman("inspect", "-f", "exit {{.State.ExitCode}} oom {{.State.OOMKilled}} "
                       "error {{.State.Error}}", self.name, check=False)
        return (f"; agent container ({state.stdout.strip()}) logs: {logs.stdout[-2000:]} "
                f"{logs.stderr[-2000:]}")

    def stop(self) -> dict:
        """podman stop, as the kubelet ends the pod; the agent's stopped event."""
        grace = self.pod.grace_s
        podman("stop", "-t", str(grace), self.name, timeout=grace + 30)
        return self.events.wait_for(lambda e: e["kind"] == "agent" and e["state"] == "stopped")

    def pins(self) -> list[str]:
        pin_dir = self.bpffs / "egress-guard"
        return sorted(p.name for p in pin_dir.iterdir()) if pin_dir.exists() else []

    def uninstall(self, containers: list[str]) -> str:
        """`egress-guard uninstall` from the image, with the DaemonSet's mounts."""
        name = f"{PREFIX}-uninstall"
        containers.append(name)
        done = podman(*self.pod.run_argv(self.image, name, args=["uninstall"], once=True)[1:])
        return done.stdout


def test_the_daemonset_runs_as_its_manifest_says(agent_image, busybox_image, host_dirs,
                                                  containers, listener):
    deployed = Deployed(agent_image, host_dirs, containers)
    pod, events, ready, data = deployed.pod, deployed.events, deployed.ready, deployed.data
    agent, agent_id, policy_file = deployed.name, deployed.id, deployed.policy_file
    agent_logs = deployed.logs

    # ready, and not guarding itself
    assert ready["self"]["excluded"] is True, ready["self"]
    assert ready["self"]["container"] == {"id": agent_id, "runtime": "podman"}
    assert agent_id in ready["self"]["cgroup"]["path"]
    assert ready["discovery"] is True and ready["adopted"] is False
    assert agent_id not in [c.get("container", {}).get("id") for c in ready["cgroups"]]
    assert ready["policy"]["name"] == yaml.safe_load(data[policy_file.name])["metadata"]["name"]

    # a workload started afterwards is guarded, named by its container
    workload = f"{PREFIX}-workload"
    containers.append(workload)
    podman("run", *PODMAN_HOST, "--network", "host", "-d", "--name", workload, busybox_image,
           "/bin/sleep", "300")
    workload_id = podman("inspect", "-f", "{{.Id}}", workload).stdout.strip()
    events.wait_for(lambda e: e["kind"] == "container" and e["state"] == "guarded"
                    and e["container"]["id"] == workload_id, why=agent_logs)
    assert nc(workload) == "ok"      # the ConfigMap's policy logs
    logged = events.wait_for(lambda e: e["kind"] == "connect"
                             and e.get("container", {}).get("id") == workload_id
                             and e["dst"]["port"] == PORT)
    assert logged["action"] == "log" and logged["container"]["runtime"] == "podman"

    # the agent's own execs are not a workload's: never reported
    inside = json.loads(podman("exec", agent, "egress-guard", "status", "--json").stdout)
    assert inside["self"] == ready["self"]

    # a policy change through the mounted file: the port is refused from now on
    changed = yaml.safe_load(data[policy_file.name])
    changed["spec"].setdefault("egress", []).append(
        {"name": "eg-manifest-blocked", "action": "block",
         "to": [{"cidr": "127.0.0.0/8", "ports": [PORT], "protocol": "tcp"}]})
    deployed.configmap.write({**data, policy_file.name: yaml.safe_dump(changed, sort_keys=False)})
    reloaded = events.wait_for(lambda e: e["kind"] == "policy", why=agent_logs)
    assert reloaded["state"] == "reloaded", reloaded
    assert reloaded["policy"]["generation"] == 2
    assert nc(workload) == "EPERM"
    blocked = events.wait_for(lambda e: e["kind"] == "connect" and e["action"] == "block"
                              and e.get("container", {}).get("id") == workload_id)
    assert blocked["rule"] == "eg-manifest-blocked" and blocked["dst"]["port"] == PORT
    assert blocked["container"] == {"id": workload_id, "runtime": "podman"}
    assert blocked["process"]["comm"] == "nc"
    assert blocked["policy"] == {"name": ready["policy"]["name"], "generation": 2}
    assert [e for e in events.read() if e.get("container", {}).get("id") == agent_id] == []
    status = request(str(deployed.control), {"op": "status"})
    assert status["self"] == ready["self"]
    assert agent_id not in [c.get("container", {}).get("id") for c in status["cgroups"]]

    # the probes and /metrics, on the pod's own address
    address = "127.0.0.1" if pod.host_network else podman(
        "inspect", "-f", "{{.NetworkSettings.IPAddress}}", agent).stdout.strip()
    for name, (path, port) in pod.probes.items():
        assert http_get(address, port, path)[0] == 200, name
    metrics_port = int(argument(pod.args, "--metrics").rsplit(":", 1)[1])
    code, text = http_get(address, metrics_port, "/metrics")
    assert code == 200
    assert "egress_guard_policy_generation 2" in text
    assert "egress_guard_reloads_total 1" in text
    guarded = [line for line in text.splitlines()
               if line.startswith("egress_guard_guarded_containers ")]
    assert guarded and int(guarded[0].split()[1]) >= 1, guarded

    # the runtime's parent cgroup has the sentinel hooks (--container-parent=auto)
    assert [p["path"] for p in ready["container_parents"]] == ["/libpod_parent"]

    # stopping the agent's container: enforcement stays pinned for the
    # containers that run, and one started while no agent runs is judged
    # from its first connect (the hooks on the runtime's parent cgroup)
    stopped = deployed.stop()
    assert stopped["pin_dir"] == "/sys/fs/bpf/egress-guard" and deployed.pins()
    late = f"{PREFIX}-late"
    containers.append(late)
    podman("run", *PODMAN_HOST, "--network", "host", "-d", "--name", late, busybox_image,
           "/bin/sleep", "300")
    late_id = podman("inspect", "-f", "{{.Id}}", late).stdout.strip()
    running = [workload, late]
    for name in running:
        assert nc(name) == "EPERM", f"{name}: not refused after the agent stopped"

    # the kubelet starts the agent's container again: it adopts the pins,
    # takes the late container over and reports what was refused meanwhile
    podman("start", agent)
    events.wait_for(lambda e: e["kind"] == "agent" and e["state"] == "ready"
                    and e.get("adopted") is True, why=agent_logs)
    events.wait_for(lambda e: e["kind"] == "connect" and e["action"] == "block"
                    and e.get("container", {}).get("id") == late_id, why=agent_logs)
    assert nc(late) == "EPERM"
    deployed.stop()

    # until `uninstall`, run from the image with the DaemonSet's mounts
    assert deployed.uninstall(containers).startswith("removed ")
    assert deployed.pins() == []
    for name in running:
        assert nc(name) == "ok", f"{name}: still refused after uninstall"


def test_in_a_cgroup_namespace_of_its_own_the_agent_still_leaves_itself_out(
        agent_image, host_dirs, containers):
    """As on a cgroup v2 node, where the kubelet gives each pod a cgroup
    namespace: /proc/self/cgroup says "/" there, the host's hierarchy is
    mounted; the agent finds its container's cgroup all the same."""
    deployed = Deployed(agent_image, host_dirs, containers, options=["--cgroupns", "private"])
    inside = podman("exec", deployed.name, "cat", "/proc/self/cgroup").stdout
    assert "0::/\n" in inside, inside      # the namespace is in force
    assert deployed.ready["self"]["excluded"] is True, deployed.ready["self"]
    assert deployed.ready["self"]["container"] == {"id": deployed.id, "runtime": "podman"}
    assert deployed.id not in [c.get("container", {}).get("id")
                               for c in deployed.ready["cgroups"]]
    deployed.stop()
    assert deployed.uninstall(containers).startswith("removed ")
