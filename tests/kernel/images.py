# SPDX-License-Identifier: Apache-2.0
"""Container images the tests make, and remove: the agent image built from
deploy/Containerfile on a Debian base made by scripts/base-image.sh
(minutes), and a busybox image made from the static binary (a second).
Names carry the test session's pid, so sessions running at once never
remove each other's images; conftest.py holds one agent image per session."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
_STEP = re.compile(r"^--> ([0-9a-f]{11,64})$")


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name]).returncode == 0


def host_ca_arguments() -> list[str]:
    """Where this host reaches PyPI through a proxy with its own CA (pip's
    PIP_CERT), the build gets the same bundle."""
    bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if not bundle or not os.path.isfile(bundle):
        return []
    return ["-v", f"{bundle}:/run/build-ca.crt:ro", "--build-arg", "PIP_CERT=/run/build-ca.crt"]


def _remove(names: list[str]) -> None:
    """podman rmi, newest first, without -f: an image something else still
    uses stays."""
    for name in reversed(names):
        subprocess.run(["podman", "rmi", name], capture_output=True)


@contextmanager
def agent_image(tag: str | None = None) -> Iterator[str]:
    """The agent image, built from this tree; it, its base and the layers
    the build left are removed afterwards."""
    for tool in ("podman", "debootstrap"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (scripts/setup.sh installs it)")
    base = f"localhost/egress-guard-test-debian-base:{os.getpid()}"
    image = tag or f"localhost/egress-guard-test:{os.getpid()}"
    made = [] if image_exists(base) else [base]
    try:
        subprocess.run([str(ROOT / "scripts" / "base-image.sh"), base], check=True,
                       capture_output=True, timeout=900)
        build = subprocess.run(
            ["podman", "build", "--network", "host", "--build-arg", f"BASE={base}",
             *host_ca_arguments(),
             "-f", str(ROOT / "deploy" / "Containerfile"), "-t", image, str(ROOT)],
            capture_output=True, text=True, timeout=1800)
        # every step's layer (the build stages' images are not tagged)
        made += [m[1] for line in build.stdout.splitlines() if (m := _STEP.match(line.strip()))]
        made.append(image)
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        yield image
    finally:
        _remove(made)


@contextmanager
def busybox_image(directory: Path, tag: str | None = None) -> Iterator[str]:
    """An image holding the static busybox and a few applets, removed afterwards."""
    for tool in ("podman", "runc", "busybox"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (scripts/setup.sh installs it)")
    image = tag or f"localhost/egress-guard-test-busybox:{os.getpid()}"
    archive = directory / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(shutil.which("busybox"), arcname="bin/busybox")
        for applet in ("sh", "nc", "sleep", "true", "cat", "echo"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    subprocess.run(["podman", "import", "-q", str(archive), image], check=True,
                   capture_output=True)
    try:
        yield image
    finally:
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True)
