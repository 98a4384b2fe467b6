# SPDX-License-Identifier: Apache-2.0
"""cgroup2 discovery and naming, the port-rule slot allocator, the process table."""
from __future__ import annotations

import os

import pytest

from guard.workloads.cgroups import CgroupError, cgroup2_mount, resolve
from guard.kernel.records import ExecRecord, Header
from guard.kernel.maps import MapCapacityError, SlotAllocator
from guard.workloads.process import ProcessTable
from guard.kernel import abi


def test_cgroup2_mount_is_read_from_proc_mounts(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n")
    assert str(cgroup2_mount(str(mounts))) == "/sys/fs/cgroup/unified"
    mounts.write_text("cgroup2 /mnt/with\\040space cgroup2 rw 0 0\n")
    assert str(cgroup2_mount(str(mounts))) == "/mnt/with space"


def test_no_cgroup2_mount_is_a_clear_error(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    with pytest.raises(CgroupError, match="no cgroup2 file system"):
        cgroup2_mount(str(mounts))


def fake_cgroup_tree(tmp_path):
    mount = tmp_path / "cg"
    leaf = mount / "libpod_parent" / "libpod-abc"
    leaf.mkdir(parents=True)
    for directory in (mount, mount / "libpod_parent", leaf):
        (directory / "cgroup.procs").write_text("")
    return mount, leaf


@pytest.mark.parametrize("spec", ["libpod_parent/libpod-abc", "/libpod_parent/libpod-abc",
                                  "{leaf}"])
def test_resolve_accepts_every_spelling(tmp_path, spec):
    mount, leaf = fake_cgroup_tree(tmp_path)
    cg = resolve(spec.format(leaf=leaf), mount)
    assert cg.path == leaf
    assert cg.relative == "/libpod_parent/libpod-abc"
    assert cg.level == 2
    assert cg.id == os.stat(leaf).st_ino


def test_resolve_root_and_errors(tmp_path):
    mount, _ = fake_cgroup_tree(tmp_path)
    assert resolve("/", mount).level == 0
    with pytest.raises(CgroupError, match="not a cgroup v2 directory"):
        resolve("nope", mount)
    with pytest.raises(CgroupError, match="no such cgroup"):
        resolve(str(tmp_path), mount)


def test_slot_allocator_reuses_freed_runs():
    slots = SlotAllocator(10)
    a = slots.take(4)
    b = slots.take(4)
    assert (a, b) == (0, 4)
    with pytest.raises(MapCapacityError):
        slots.take(3)
    slots.give(a, 4)
    assert slots.take(3) == 0
    slots.give(b, 4)
    slots.give(0, 3)
    assert slots.take(10) == 0  # freed runs merge back into one


def _exec_record(pid: int) -> ExecRecord:
    header = Header(kind=abi.EventKind.EXEC, ktime_ns=0, cgroup_id=1, pid=pid, ppid=1, uid=0,
                    policy_id=1, comm="x", action=abi.Action.LOG, rule_id=0)
    return ExecRecord(header=header, filename="/bin/x", exe="/usr/bin/x", exe_truncated=False,
                      argv=["x", str(pid)], argv_truncated=False)


def test_process_table_prefers_exec_events_and_is_bounded():
    table = ProcessTable(capacity=2)
    for pid in (10, 11, 12):
        table.record_exec(_exec_record(pid))
    assert len(table) == 2
    assert table.lookup(12).argv == ["x", "12"]
    own = table.lookup(os.getpid())  # not seen at exec: read from /proc
    assert own.exe == os.readlink("/proc/self/exe")
