# SPDX-License-Identifier: Apache-2.0
"""Container cgroup layouts of every runtime and driver."""
from __future__ import annotations

import pytest

from guard.workloads.containers import container_of, is_container_cgroup

CID = "3f2a" + "0" * 56 + "beef"
POD = "1b2c3d4e-1111-2222-3333-444455556666"
POD_SYSTEMD = POD.replace("-", "_")


@pytest.mark.parametrize("path, runtime, pod", [
    (f"/libpod_parent/libpod-{CID}", "podman", None),
    (f"/machine.slice/libpod-{CID}.scope", "podman", None),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope",
     "podman", None),
    (f"/docker/{CID}", "docker", None),
    (f"/system.slice/docker-{CID}.scope", "docker", None),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_SYSTEMD}.slice/"
     f"cri-containerd-{CID}.scope", "containerd", POD),
    (f"/kubepods.slice/kubepods-pod{POD_SYSTEMD}.slice/cri-containerd-{CID}.scope",
     "containerd", POD),
    (f"/kubepods/burstable/pod{POD}/{CID}", "kubernetes", POD),
    (f"/kubepods/pod{POD}/{CID}", "kubernetes", POD),
    (f"/kubepods/besteffort/pod{POD}/{CID}", "kubernetes", POD),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_SYSTEMD}.slice/"
     f"crio-{CID}.scope", "cri-o", POD),
])
def test_every_layout(path, runtime, pod):
    ref = container_of(path)
    assert ref is not None
    assert (ref.runtime, ref.id, ref.pod_uid, ref.cgroup) == (runtime, CID, pod, path)
    assert is_container_cgroup(path)


def test_cgroups_inside_a_container_belong_to_it():
    ref = container_of(f"/libpod_parent/libpod-{CID}/init.scope/sub")
    assert ref.id == CID and ref.cgroup == f"/libpod_parent/libpod-{CID}"
    assert not is_container_cgroup(f"/libpod_parent/libpod-{CID}/init.scope")


@pytest.mark.parametrize("path", [
    "/", "/system.slice/sshd.service", "/libpod_parent",
    f"/libpod_parent/libpod-conmon-{CID}", f"/machine.slice/libpod-conmon-{CID}.scope",
    f"/system.slice/crio-conmon-{CID}.scope",
    f"/some/{CID}",                        # a bare id outside docker/kubepods
    f"/libpod_parent/libpod-{CID[:-1]}",   # not a full id
    "/kubepods/burstable/pod" + POD,       # the pod, not a container
])
def test_not_containers(path):
    assert container_of(path) is None
