# SPDX-License-Identifier: Apache-2.0
"""deploy/kubernetes/daemonset.yaml -> the `podman run` that runs its pod the
way the kubelet would, for tests (test_manifest.py).

Every key of the pod template is either translated or named here as one
podman has no use for (and why); any other key is an error naming its
place, so a change to the manifest that this translation does not know
breaks the test instead of passing untried:

    hostPID: true                     --pid host
    hostNetwork: true                 --network host (else a network of the pod's own)
    securityContext.capabilities      --cap-drop X (ALL) and --cap-add X
    readOnlyRootFilesystem: true      --read-only --read-only-tmpfs=false (no tmpfs: the kubelet gives none)
    allowPrivilegeEscalation: false   --security-opt no-new-privileges
    privileged: true                  --privileged
    no seccompProfile                 --security-opt seccomp=unconfined (the kubelet's default
                                      without SeccompDefault; RuntimeDefault: podman's default)
    volumes hostPath + volumeMounts   -v HOST:MOUNT[:ro] (HOST through `host_paths`, so a test
                                      keeps its pins, state and events in directories of its own)
    volumes configMap                 -v DIR:MOUNT:ro, DIR given by the test (ConfigMapDir)
    command / args                    --entrypoint / the arguments after the image
    env value / fieldRef spec.nodeName   -e NAME=VALUE
    resources.limits cpu / memory     --cpus / --memory
    terminationGracePeriodSeconds     --stop-timeout
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

# What podman needs on this host whatever the manifest says: runc (crun refuses
# hybrid cgroup hosts) and limits podman may not raise here (test_podman.py).
PODMAN_HOST = ["--runtime", "runc", "--ulimit", "nofile=1024:1024",
               "--ulimit", "nproc=1024:1024"]

# Keys with no podman counterpart: scheduling, the API server and the kubelet's own work.
NOT_FOR_PODMAN = {
    "spec.template.spec": {"serviceAccountName": "no API server on the test host",
                           "priorityClassName": "scheduling", "nodeSelector": "scheduling",
                           "tolerations": "scheduling"},
    "container": {"imagePullPolicy": "the test builds the image",
                  "ports": "the pod's own address: the test connects to it",
                  "livenessProbe": "the test asks it (Pod.probes)",
                  "readinessProbe": "the test asks it (Pod.probes)",
                  "image": "the test's image is run instead"},
    "resources": {"requests": "scheduling"},
}


class ManifestError(Exception):
    """A key of the manifest this translation does not know, with its place."""


@dataclass
class Pod:
    """One container of the DaemonSet's pod, as podman runs it."""

    name: str
    options: list[str]                 # podman run options (before the image)
    args: list[str]                    # after the image
    mounts: dict[str, str]             # mountPath -> host directory
    probes: dict[str, tuple[str, int]] = field(default_factory=dict)  # liveness -> (path, port)
    grace_s: int = 30
    host_network: bool = False

    def run_argv(self, image: str, name: str, args: list[str] | None = None,
                 once: bool = False) -> list[str]:
        """podman run ... the pod's container (detached), or once: a command
        in a container like it (args instead of the manifest's), removed after."""
        return ["podman", "run", *PODMAN_HOST, "--name", name, *(["--rm"] if once else ["-d"]),
                *self.options, image, *(self.args if args is None else args)]


def load_daemonset(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    daemonsets = [d for d in docs if d.get("kind") == "DaemonSet"]
    if len(daemonsets) != 1:
        raise ManifestError(f"{path}: {len(daemonsets)} DaemonSets, expected one")
    return daemonsets[0]


def configmap_data(path: Path, name: str) -> dict[str, str]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == name:
            return dict(doc["data"])
    raise ManifestError(f"{path}: no ConfigMap named {name}")


def translate(daemonset: dict[str, Any], host_paths: dict[str, Path],
              configmaps: dict[str, Path], node_name: str) -> Pod:
    """The pod of daemonset as podman arguments. host_paths: hostPath ->
    the directory used instead (others are used as they are); configmaps:
    ConfigMap name -> the directory holding its files (ConfigMapDir)."""
    spec = daemonset["spec"]["template"]["spec"]
    place = "spec.template.spec"
    options: list[str] = []
    containers = spec.get("containers") or []
    if len(containers) != 1:
        raise ManifestError(f"{place}.containers: {len(containers)} containers, expected one")
    for key, value in spec.items():
        if key == "hostPID":
            options += ["--pid", "host"] if value else []
        elif key == "hostNetwork":
            options += ["--network", "host"] if value else []
        elif key == "terminationGracePeriodSeconds":
            options += ["--stop-timeout", str(value)]
        elif key not in ("containers", "volumes") and key not in NOT_FOR_PODMAN[place]:
            raise ManifestError(f"{place}.{key}: not translated (tests/kernel/manifest.py)")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    container = containers[0]
    cplace = f"{place}.containers[0]"
    args: list[str] = []
    mounts: dict[str, str] = {}
    probes: dict[str, tuple[str, int]] = {}
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    seccomp_given = False
    for key, value in container.items():
        if key == "name":
            continue
        if key == "command":
            options += ["--entrypoint", orjson.dumps(value).decode()]
        elif key == "args":
            args = [str(a) for a in value]
        elif key == "env":
            options += _env(value, f"{cplace}.env", node_name)
        elif key == "resources":
            options += _resources(value, f"{cplace}.resources")
        elif key == "securityContext":
            options += _security(value, f"{cplace}.securityContext")
            seccomp_given = "seccompProfile" in value
        elif key == "volumeMounts":
            for i, mount in enumerate(value):
                host = _volume(volumes, mount, f"{cplace}.volumeMounts[{i}]", host_paths, configmaps)
                mounts[mount["mountPath"]] = str(host)
                ro = ":ro" if mount.get("readOnly") else ""
                options += ["-v", f"{host}:{mount['mountPath']}{ro}"]
        elif key in ("livenessProbe", "readinessProbe"):
            get = value["httpGet"]
            port = ports[get["port"]] if isinstance(get["port"], str) else int(get["port"])
            probes[key.removesuffix("Probe")] = (get["path"], port)
        elif key not in NOT_FOR_PODMAN["container"]:
            raise ManifestError(f"{cplace}.{key}: not translated (tests/kernel/manifest.py)")
    if not seccomp_given:
        options += ["--security-opt", "seccomp=unconfined"]
    grace = int(spec.get("terminationGracePeriodSeconds", 30))
    return Pod(container["name"], options, args, mounts, probes, grace,
               host_network=bool(spec.get("hostNetwork")))


def _env(entries: list[dict], place: str, node_name: str) -> list[str]:
    out = []
    for i, entry in enumerate(entries):
        if "value" in entry:
            value = str(entry["value"])
        elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            value = node_name
        else:
            raise ManifestError(f"{place}[{i}]: only value and fieldRef spec.nodeName are translated")
        out += ["-e", f"{entry['name']}={value}"]
    return out


def _resources(resources: dict, place: str) -> list[str]:
    out = []
    for key, value in resources.items():
        if key == "limits":
            for what, amount in value.items():
                if what == "cpu":
                    out += ["--cpus", str(_cpus(str(amount)))]
                elif what == "memory":
                    out += ["--memory", str(_bytes(str(amount), f"{place}.limits.memory"))]
                else:
                    raise ManifestError(f"{place}.limits.{what}: not translated")
        elif key not in NOT_FOR_PODMAN["resources"]:
            raise ManifestError(f"{place}.{key}: not translated")
    return out


def _cpus(amount: str) -> float:
    return int(amount[:-1]) / 1000 if amount.endswith("m") else float(amount)


_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}


def _bytes(amount: str, place: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]i?)?", amount)
    if not match:
        raise ManifestError(f"{place}: {amount!r} is not a quantity this translation reads")
    return int(match[1]) * _UNITS[match[2] or ""]


def _security(context: dict, place: str) -> list[str]:
    out, caps = [], {"drop": [], "add": []}
    for key, value in context.items():
        if key == "privileged":
            out += ["--privileged"] if value else []
        elif key == "allowPrivilegeEscalation":
            out += [] if value else ["--security-opt", "no-new-privileges"]
        elif key == "readOnlyRootFilesystem":
            out += ["--read-only", "--read-only-tmpfs=false"] if value else []
        elif key == "capabilities":
            for what, names in value.items():
                if what not in caps:
                    raise ManifestError(f"{place}.capabilities.{what}: not translated")
                caps[what] += names
        elif key == "seccompProfile" and value.get("type") == "RuntimeDefault":
            pass   # podman's default profile
        elif key == "seccompProfile" and value.get("type") == "Unconfined":
            out += ["--security-opt", "seccomp=unconfined"]
        else:
            raise ManifestError(f"{place}.{key}: not translated (tests/kernel/manifest.py)")
    # the drops (ALL) first, then the adds: the kernel's set is what is added
    return out + [arg for what in ("drop", "add") for cap in caps[what]
                  for arg in (f"--cap-{what}", cap)]


def _volume(volumes: dict, mount: dict, place: str, host_paths: dict[str, Path],
            configmaps: dict[str, Path]) -> Path:
    unknown = set(mount) - {"name", "mountPath", "readOnly"}
    if unknown:
        raise ManifestError(f"{place}: {sorted(unknown)} not translated")
    volume = volumes.get(mount["name"])
    if volume is None:
        raise ManifestError(f"{place}: no volume named {mount['name']}")
    if "hostPath" in volume:
        path, kind = volume["hostPath"]["path"], volume["hostPath"].get("type", "")
        host = Path(host_paths.get(path, path))
        if kind == "DirectoryOrCreate":
            host.mkdir(parents=True, exist_ok=True)
        elif kind == "Directory" and not host.is_dir():
            raise ManifestError(f"{place}: hostPath {host} is not a directory")
        return host
    if "configMap" in volume:
        name = volume["configMap"]["name"]
        if name not in configmaps:
            raise ManifestError(f"{place}: no directory given for ConfigMap {name}")
        return configmaps[name]
    raise ManifestError(f"{place}: volume {mount['name']} is neither hostPath nor configMap")


class ConfigMapDir:
    """A ConfigMap volume as the kubelet writes it: each key a symlink
    through `..data`, which points at a timestamped directory; an update
    writes a new directory and swaps `..data` atomically (a rename), so a
    reader sees the old files or the new ones, never a mix."""

    def __init__(self, path: Path):
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def write(self, data: dict[str, str]) -> None:
        self._n += 1
        version = self.path / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self._n}"
        version.mkdir()
        for key, text in data.items():
            (version / key).write_text(text)
            link = self.path / key
            if not link.is_symlink():
                link.symlink_to(f"..data/{key}")
        staged = self.path / "..data_tmp"
        staged.symlink_to(version.name)
        old = os.readlink(self.path / "..data") if (self.path / "..data").is_symlink() else None
        os.replace(staged, self.path / "..data")
        if old:
            shutil.rmtree(self.path / old)


class EventsFile:
    """The agent's --events file, read as it grows: wait_for(predicate)."""

    def __init__(self, path: Path):
        self.path = path
        self.events: list[dict] = []
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return self.events
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        self.events += [orjson.loads(line) for line in lines if line]
        return self.events

    def wait_for(self, predicate, timeout: float = 30.0, why=lambda: "",
                 alive=lambda: True) -> dict:
        """The first event (read before or arriving now) that satisfies
        predicate; fails after timeout, or as soon as alive() says the
        writer is gone (asked once a second), with why() appended."""
        deadline = time.monotonic() + timeout
        seen, turns = 0, 0
        while True:
            events = self.read()
            for event in events[seen:]:
                if predicate(event):
                    return event
            seen, turns = len(events), turns + 1
            gone = turns % 10 == 0 and not alive()
            if gone or time.monotonic() > deadline:
                raise AssertionError(f"no matching event {'(the writer is gone) ' if gone else ''}"
                                     f"in {timeout}s in {self.path}; last: {events[-5:]}{why()}")
            time.sleep(0.1)


def podman(*argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *argv], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(argv)}: {result.returncode}: {result.stderr}")
    return result
