# SPDX-License-Identifier: Apache-2.0
"""Verifying an object costs kernel memory, charged to the memory cgroup of
the process that loads it: the agent's, under the DaemonSet's limit (512
MiB). A change that multiplies the verifier's states (a flag on the stack
across a bpf_loop walk once took dns.bpf.o from 160 to 700 MiB and the
agent was OOM-killed in its container before its first event) shows here,
object by object, with the peak each load reached in a memory cgroup of
its own. The bound leaves the agent room for everything else it holds."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from guard.kernel.objects import GuardObjects, objects_dir

from .agentproc import ROOT

#: the most kernel memory one object's load may take at its peak
PEAK_LIMIT_MIB = 256

# Loads one object in the memory cgroup argv[1] (v1: memory.max_usage_in_bytes,
# v2: memory.peak of a cgroup made for this load alone); prints the peak MiB.
LOADER = r"""
import os, sys
from pathlib import Path
from guard.kernel.objects import BpfObject
cg, v1, obj = Path(sys.argv[1]), sys.argv[2] == "v1", Path(sys.argv[3])
(cg / "cgroup.procs").write_text(str(os.getpid()))
peak_file = cg / ("memory.max_usage_in_bytes" if v1 else "memory.peak")
usage_file = cg / ("memory.usage_in_bytes" if v1 else "memory.current")
if v1:
    peak_file.write_text("0")
before = int(usage_file.read_text())
o = BpfObject(obj)
o.load()
print((int(peak_file.read_text()) - before) / 2**20)
o.close()
"""


def memory_controller() -> tuple[Path, bool] | None:
    """(where to make a memory cgroup, whether it is cgroup v1), or None."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        if fields[2] == "cgroup" and "memory" in fields[3].split(","):
            return Path(fields[1]), True
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            root = Path(fields[1])
            if "memory" in (root / "cgroup.subtree_control").read_text().split():
                return root, False
    return None


OBJECTS = [*GuardObjects.NAMES, GuardObjects.SENTINEL]


@pytest.mark.parametrize("name", OBJECTS)
def test_each_object_verifies_within_its_memory_bound(name):
    where = memory_controller()
    assert where is not None, "no memory cgroup controller on this host"
    mount, v1 = where
    cg = mount / f"egress-guard-verifier-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    try:
        result = subprocess.run([sys.executable, "-c", LOADER, str(cg), "v1" if v1 else "v2",
                                 str(objects_dir() / f"{name}.bpf.o")],
                                capture_output=True, text=True, timeout=120, cwd=ROOT,
                                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr[-2000:]
        peak = float(result.stdout.strip())
        assert peak < PEAK_LIMIT_MIB, f"{name}.bpf.o: {peak:.0f} MiB at its peak"
    finally:
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.05)   # the loader's exit leaves the cgroup asynchronously
