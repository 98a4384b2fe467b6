# SPDX-License-Identifier: Apache-2.0
"""The packet-socket sweep (guard/workloads/packet_sockets.py) on a fake
/proc and cgroup tree: what it finds, what it reads, and its bounds."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from guard.agent.sweeps import syscall_hook_wanted
from guard.workloads import packet_sockets
from guard.workloads.packet_sockets import packet_table, sweep

HEADER = "sk               RefCnt Type Proto  Iface R Rmem   User   Inode\n"


def make_proc(root: Path, pid: int, netns: str, packet_lines: list[str],
              sockets: list[int]) -> None:
    base = root / str(pid)
    (base / "net").mkdir(parents=True)
    (base / "ns").mkdir()
    (base / "fd").mkdir()
    (base / "net" / "packet").write_text(HEADER + "".join(packet_lines))
    # a namespace is a file whose inode is the namespace's: one file per netns name
    shared = root / f"netns-{netns}"
    if not shared.exists():
        shared.write_text("")
    os.link(shared, base / "ns" / "net")
    for fd, inode in enumerate(sockets, start=3):
        os.symlink(f"socket:[{inode}]", base / "fd" / str(fd))
    os.symlink("/dev/null", base / "fd" / "0")


def make_cgroup(root: Path, name: str, pids: list[int]) -> Path:
    cg = root / name
    cg.mkdir(parents=True)
    (cg / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))
    return cg


def line(inode: int, sock_type: int = 3, proto: int = 0x0300) -> str:
    return f"0000000000000000 3      {sock_type}    {proto:04x}   0     1 0      0      {inode}\n"


def test_finds_the_owner_of_a_packet_socket_and_nothing_else(tmp_path):
    proc, cgroups = tmp_path / "proc", tmp_path / "cg"
    make_proc(proc, 100, "a", [line(555, 2, 0xB588)], sockets=[555, 777])
    make_proc(proc, 101, "a", [line(555, 2, 0xB588)], sockets=[777])   # an inet socket only
    guarded = make_cgroup(cgroups, "box", [100, 101])
    found = sweep({42: guarded}, proc)
    assert [(f.pid, f.cgroup_id, f.inode, f.type) for f in found.found] == [(100, 42, 555, 2)]
    assert found.found[0].protocol == 0x88B5 and not found.truncated


def test_a_namespace_without_packet_sockets_reads_no_descriptors(tmp_path, monkeypatch):
    proc, cgroups = tmp_path / "proc", tmp_path / "cg"
    make_proc(proc, 100, "quiet", [], sockets=[555])
    guarded = make_cgroup(cgroups, "box", [100])
    read = []
    monkeypatch.setattr(packet_sockets, "socket_inodes",
                        lambda *args: read.append(args) or [])
    assert sweep({1: guarded}, proc).found == []
    assert read == []


def test_descendant_cgroups_are_swept_too(tmp_path):
    proc, cgroups = tmp_path / "proc", tmp_path / "cg"
    make_proc(proc, 200, "b", [line(9)], sockets=[9])
    guarded = make_cgroup(cgroups, "box", [])
    make_cgroup(guarded, "nested/deeper", [200])
    found = sweep({7: guarded}, proc).found
    assert [(f.pid, f.cgroup_id) for f in found] == [(200, 7)]
    assert found[0].cgroup_path.endswith("nested/deeper")


def test_hostile_tables_and_gone_processes_never_raise(tmp_path):
    proc, cgroups = tmp_path / "proc", tmp_path / "cg"
    make_proc(proc, 300, "c", ["garbage\n", "a b c zz e f g h notanumber\n", line(5)],
              sockets=[5])
    guarded = make_cgroup(cgroups, "box", [300, 999999])      # 999999: gone
    (guarded / "cgroup.procs").write_text("300\nnot-a-pid\n999999\n")
    assert [f.pid for f in sweep({1: guarded}, proc).found] == [300]
    assert packet_table(424242, proc) == {}


def test_bounds_are_kept_and_said(tmp_path, monkeypatch):
    proc, cgroups = tmp_path / "proc", tmp_path / "cg"
    for pid in range(10, 20):
        make_proc(proc, pid, "d", [line(1)], sockets=[])
    guarded = make_cgroup(cgroups, "box", list(range(10, 20)))
    monkeypatch.setattr(packet_sockets, "PIDS_PER_SWEEP", 4)
    result = sweep({1: guarded}, proc)
    assert result.truncated == ["over 4 processes"]
    monkeypatch.setattr(packet_sockets, "PIDS_PER_SWEEP", 100)
    monkeypatch.setattr(packet_sockets, "FDS_PER_PROCESS", 2)
    make_proc(proc, 50, "d", [line(1)], sockets=[11, 12, 13, 1])
    many = make_cgroup(cgroups, "many", [50])
    result = sweep({2: many}, proc)
    assert result.truncated and "over 2 descriptors" in result.truncated[0]


@pytest.mark.parametrize("asked, resolvers, raw, audit, wanted", [
    (True, None, True, False, True),                   # asked for
    (False, None, True, False, False),                 # no names: the sweep is enough
    (False, ["127.0.0.53/32"], True, False, True),     # a loopback resolver: forgeable
    (False, ["0.0.0.0/0"], True, False, True),         # trusts loopback too
    (False, ["::1/128"], True, False, True),
    (False, ["10.96.0.10/32"], True, False, False),    # answers over loopback not believed
    (False, ["127.0.0.53/32"], False, False, False),   # raw sockets allowed anyway
    (False, ["127.0.0.53/32"], True, True, False),     # audit refuses nothing
])
def test_the_syscall_hook_is_on_when_asked_or_names_need_it(asked, resolvers, raw, audit,
                                                           wanted):
    class Names:
        pass

    class Compiled:
        pass

    compiled = Compiled()
    compiled.deny_raw_sockets, compiled.audit = raw, audit
    compiled.names = None
    if resolvers is not None:
        compiled.names = Names()
        compiled.names.resolvers = tuple(ipaddress.ip_network(r) for r in resolvers)
    assert syscall_hook_wanted(asked, [compiled]) is wanted
