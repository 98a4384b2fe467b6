# SPDX-License-Identifier: Apache-2.0
"""The agent image builds with podman from a Debian base and the package, and
runs `egress-guard doctor` inside with the host mounts the DaemonSet gives it.
Slow (a Debian base by debootstrap, then a two-stage build): minutes."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from guard.workloads.cgroups import cgroup2_mount

from ..conftest import ROOT

BASE = "localhost/egress-guard-test-debian-base:latest"
IMAGE = "localhost/egress-guard-test:latest"


def daemonset_capabilities() -> list[str]:
    """What deploy/kubernetes/daemonset.yaml gives the agent's container."""
    daemonset = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "daemonset.yaml").read_text())
    container, = daemonset["spec"]["template"]["spec"]["containers"]
    return container["securityContext"]["capabilities"]["add"]


CAPABILITIES = daemonset_capabilities()


def host_ca_arguments() -> list[str]:
    """Where this host reaches PyPI through a proxy with its own CA (pip's
    PIP_CERT), the build gets the same bundle."""
    bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if not bundle or not os.path.isfile(bundle):
        return []
    return ["-v", f"{bundle}:/run/build-ca.crt:ro", "--build-arg", "PIP_CERT=/run/build-ca.crt"]


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name]).returncode == 0


@pytest.fixture(scope="module")
def image():
    made = [] if image_exists(BASE) else [BASE]
    try:
        subprocess.run([str(ROOT / "scripts" / "base-image.sh"), BASE], check=True,
                       capture_output=True, timeout=900)
        made.append(IMAGE)
        build = subprocess.run(
            ["podman", "build", "--network", "host", "--build-arg", f"BASE={BASE}",
             *host_ca_arguments(),
             "-f", str(ROOT / "deploy" / "Containerfile"), "-t", IMAGE, str(ROOT)],
            capture_output=True, text=True, timeout=1800)
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        yield IMAGE
    finally:
        for name in made:
            subprocess.run(["podman", "rmi", "-f", name], capture_output=True)


def test_image_runs_doctor_with_the_host_mounts(image):
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
         image, "doctor", "--json"],
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
                            "/bin/sh", image, "-c", "command -v clang clang-16 gcc || true"],
                           capture_output=True, text=True, timeout=120)
    assert tools.stdout.strip() == ""
