# SPDX-License-Identifier: Apache-2.0
"""Which container a cgroup v2 path belongs to, for every common runtime.

Runtimes name the cgroup of a container after its id; the layouts differ by
runtime and by cgroup driver (cgroupfs or systemd):

    podman    /libpod_parent/libpod-ID            (cgroupfs)
              /machine.slice/libpod-ID.scope      (systemd; rootless under user.slice)
    docker    /docker/ID                          (cgroupfs)
              /system.slice/docker-ID.scope       (systemd)
    containerd (CRI)
              /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podUID.slice/
                  cri-containerd-ID.scope         (systemd)
              /kubepods/burstable/podUID/ID       (cgroupfs; also /kubepods/podUID/ID)
    cri-o     .../crio-ID.scope                   (systemd), .../crio-ID (cgroupfs)

The monitors beside containers (podman's conmon, CRI-O's conmon) have cgroups
named like containers with "-conmon-"; they are not containers. Paths below a
container's cgroup (a container may make its own) belong to that container.
running_containers() walks the mount for the containers running now.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from guard.workloads.cgroups import Cgroup, CgroupError, resolve

_ID = r"(?P<id>[0-9a-f]{64})"
_POD = r"pod(?P<pod>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"

# (runtime, pattern for one path component, pattern the parent path must match or None)
_COMPONENTS = [
    ("podman", re.compile(rf"libpod-{_ID}(\.scope)?"), None),
    ("docker", re.compile(rf"docker-{_ID}\.scope"), None),
    ("docker", re.compile(_ID), re.compile(r"(^|/)docker$")),
    ("containerd", re.compile(rf"cri-containerd-{_ID}\.scope"), None),
    ("cri-o", re.compile(rf"crio-{_ID}(\.scope)?"), None),
    # cgroupfs driver under kubepods: the container is named by its bare id
    ("kubernetes", re.compile(_ID), re.compile(rf"(^|/)kubepods(/[a-z]+)?/{_POD}$")),
]
_POD_IN_PATH = re.compile(rf"(?:^|[/-]){_POD}(?:\.slice)?(?:/|$)")


#: cgroup paths whose container_of answer is kept (least recently asked go first)
CONTAINER_OF_CACHED = 4096


@dataclass(frozen=True)
class ContainerRef:
    runtime: str         # podman, docker, containerd, cri-o, kubernetes (runtime unknown)
    id: str              # the full 64-hex container id
    cgroup: str          # the container's own cgroup, below the cgroup2 mount
    pod_uid: str | None  # Kubernetes pod UID when the path names one

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "runtime": self.runtime}


@lru_cache(maxsize=CONTAINER_OF_CACHED)
def container_of(path: str) -> ContainerRef | None:
    """The container whose cgroup is path or an ancestor of it, or None.
    Asked for every event (a dozen patterns per path component): the
    answers for the most recent paths are kept (a path's answer never
    changes; ContainerRef is immutable)."""
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts), 0, -1):
        name, parent = parts[depth - 1], "/".join(parts[:depth - 1])
        for runtime, component, parent_pattern in _COMPONENTS:
            match = component.fullmatch(name)
            if not match or (parent_pattern and not parent_pattern.search(parent)):
                continue
            pod = _POD_IN_PATH.search("/" + parent + "/")
            return ContainerRef(runtime=runtime, id=match["id"],
                                cgroup="/" + "/".join(parts[:depth]),
                                pod_uid=pod["pod"].replace("_", "-") if pod else None)
    return None


def is_container_cgroup(path: str) -> bool:
    """True when path is a container's own cgroup (not a cgroup inside one)."""
    ref = container_of(path)
    return ref is not None and ref.cgroup == "/" + "/".join(p for p in path.split("/") if p)


#: Cgroups runtimes make containers' cgroups in that hold nothing but
#: containers (and their pods and monitors): what `run --container-parent
#: auto` takes where they exist. Not /system.slice (Docker with systemd puts
#: containers beside the host's services there) nor /machine.slice (virtual
#: machines too): name those explicitly if they are to be parents.
CONTAINER_PARENTS = ("/kubepods.slice", "/kubepods", "/libpod_parent", "/docker")


def container_parents(mount: Path, specs=("auto",)) -> list[str]:
    """--container-parent as given, each "auto" replaced by those of
    CONTAINER_PARENTS that exist below mount; no path twice."""
    paths: list[str] = []
    for spec in specs:
        found = ([p for p in CONTAINER_PARENTS if (Path(mount) / p.lstrip("/")).is_dir()]
                 if spec == "auto" else [spec])
        paths += [p for p in found if p not in paths]
    return paths


def running_containers(mount: Path) -> list[Cgroup]:
    """The cgroups of every container running now (a walk of the cgroup2 tree
    that does not descend into containers)."""
    found = []
    for dirpath, dirnames, _files in os.walk(mount):
        relative = "/" + os.path.relpath(dirpath, mount)
        if relative != "/." and is_container_cgroup(relative):
            dirnames[:] = []
            try:
                found.append(resolve(relative, mount))
            except CgroupError:
                continue  # removed while we looked
    return found
