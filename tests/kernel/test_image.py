# SPDX-License-Identifier: Apache-2.0
"""The agent image builds with podman from a Debian base and the package, and
runs `egress-guard doctor` inside with the host mounts the DaemonSet gives it.
Slow (a Debian base by debootstrap, then the image's stages): minutes, once
per session (conftest.agent_image, shared with test_manifest.py)."""
from __future__ import annotations

import json
import subprocess

import yaml

from guard.workloads.cgroups import cgroup2_mount

from ..conftest import ROOT


def daemonset_capabilities() -> list[str]:
    """What deploy/kubernetes/daemonset.yaml gives the agent's container."""
    daemonset = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "daemonset.yaml").read_text())
    container, = daemonset["spec"]["template"]["spec"]["containers"]
    return container["securityContext"]["capabilities"]["add"]


CAPABILITIES = daemonset_capabilities()


def test_image_runs_doctor_with_the_host_mounts(agent_image):
    cgroup2 = str(cgroup2_mount())
    run = subprocess.run(
        ["podman", "run", "--rm", "--runtime", "runc", "--network", "host", "--pid", "host",
         "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
         # the default seccomp profile refuses bpf(); the DaemonSet's runtime
         # default allows it with CAP_BPF/CAP_SYS_ADMIN
         "--security-opt", "seccomp=unconfined",
         *[arg for cap in CAPABILITIES for arg in ("--cap-add", cap)],
         "-v", "/sys/kernel/btf:/sys/kernel/btf:ro",
         "-v", f"{cgroup2}:{cgroup2}:ro",
         agent_image, "doctor", "--json"],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] is True
    assert report["btf"] is True and report["cgroup2"]
    assert report["mechanisms"]["cgroup_sock_addr"]["available"] is True
    # the DaemonSet's capabilities let the agent's loop run in the background
    assert report["scheduling"]["background"] is True, report["scheduling"]
    # the image carries no compiler: the objects were built into the package
    tools = subprocess.run(["podman", "run", "--rm", "--runtime", "runc", "--entrypoint",
                            "/bin/sh", agent_image, "-c", "command -v clang clang-16 gcc || true"],
                           capture_output=True, text=True, timeout=120)
    assert tools.stdout.strip() == ""
