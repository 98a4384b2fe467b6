# SPDX-License-Identifier: Apache-2.0
"""guard/kernel/abi.py against the BTF of every compiled object (no root needed)."""
from __future__ import annotations

import pytest

from guard.kernel.objects import abi_mismatches, objects_dir

from ..conftest import REQUIRE_KERNEL

OBJECTS = ["exec", "sock_addr", "sock_create", "socket_syscall", "flow", "dns", "destroy",
           "cgroup_watch", "escape"]


@pytest.fixture(scope="module")
def built():
    if not (objects_dir() / "exec.bpf.o").is_file():
        if REQUIRE_KERNEL:
            pytest.fail("BPF objects are not built (make -C bpf)")
        pytest.skip("BPF objects are not built (make -C bpf)")


def test_every_shared_struct_and_enum_matches_the_exec_object(built):
    # exec.bpf.o carries an anchor that makes clang emit BTF for every shared type
    assert abi_mismatches(objects_dir() / "exec.bpf.o") == []


@pytest.mark.parametrize("name", OBJECTS[1:])
def test_other_objects_agree_where_they_define_a_type(built, name):
    problems = [p for p in abi_mismatches(objects_dir() / f"{name}.bpf.o")
                if "not in" not in p]
    assert problems == []


def test_a_changed_layout_is_detected(built, monkeypatch):
    import ctypes

    from guard.kernel import abi

    class Shifted(ctypes.Structure):
        c_name = "guard_port_rule"
        _fields_ = [("port_lo", ctypes.c_uint32), ("port_hi", ctypes.c_uint16),
                    ("proto", ctypes.c_uint8), ("action", ctypes.c_uint8),
                    ("rule_id", ctypes.c_uint16)]
    monkeypatch.setattr(abi, "SHARED_STRUCTS", (Shifted,))
    problems = abi_mismatches(objects_dir() / "exec.bpf.o")
    assert len(problems) == 1 and "guard_port_rule" in problems[0]


def test_packed_layouts_are_the_ctypes_layouts():
    """The struct.Struct twins that batched map writes use (no BTF needed)."""
    import ctypes

    from guard.kernel import abi

    key4 = abi.Lpm4Key(prefixlen=56, policy_id=0x1234_5678)
    key4.addr[:] = b"\x0a\x01\x02\x00"
    assert abi.LPM4_KEY.pack(56, 0x1234_5678, b"\x0a\x01\x02\x00") == bytes(key4)
    key6 = abi.Lpm6Key(prefixlen=160, policy_id=7)
    key6.addr[:] = bytes(range(16))
    assert abi.LPM6_KEY.pack(160, 7, bytes(range(16))) == bytes(key6)
    host4 = abi.Host4Key(policy_id=0x0102_0304)
    host4.addr[:] = b"\xc6\x12\x00\x07"
    assert abi.HOST4_KEY.pack(0x0102_0304, b"\xc6\x12\x00\x07") == bytes(host4)
    assert abi.RULE_SPAN.pack(9, 3) == bytes(abi.RuleSpan(first=9, count=3))
    rule = abi.PortRule(port_lo=80, port_hi=443, proto=abi.Proto.TCP, action=abi.Action.BLOCK,
                        rule_id=513)
    assert abi.PORT_RULE.pack(80, 443, abi.Proto.TCP, abi.Action.BLOCK, 513) == bytes(rule)
    assert abi.U32.pack(5) == bytes(ctypes.c_uint32(5))
    fold_key = abi.FoldKey(cgroup_id=1 << 40, tgid=4321, policy_id=0x0102, port=29001, family=4,
                           proto=abi.Proto.TCP, hook=abi.Hook.CONNECT4, action=abi.Action.LOG,
                           rule_id=7)
    fold_key.addr[:] = bytes(range(16))
    assert abi.FOLD_KEY.pack(1 << 40, 4321, 0x0102, bytes(range(16)), 29001, 4, abi.Proto.TCP,
                             abi.Hook.CONNECT4, abi.Action.LOG, 7) == bytes(fold_key)
    assert abi.FOLD.pack(12345, 6) == bytes(abi.Fold(start_ns=12345, count=6))
