# SPDX-License-Identifier: Apache-2.0
"""Open, load and attach egress-guard's CO-RE objects; own every link.

The objects (guard/objects/*.bpf.o) all include bpf/guard.bpf.h and so all
declare the same eg_* maps. The first object loaded creates them; every later
object is handed the same fds before it loads (bpf_map__reuse_fd), so the
kernel holds one instance of each map. Links are not pinned: if the agent dies,
the kernel drops its programs with it (issue 6 will add pinned, fail-closed
mode).
"""
from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import libbpf
from .libbpf import LibbpfError, check, check_ptr, lib

SHARED_MAP_PREFIX = "eg_"
RING_SIZE_DEFAULT = 4 << 20


def objects_dir() -> Path:
    """Where the compiled objects live: inside the installed package."""
    override = os.environ.get("GUARD_OBJECTS_DIR")
    if override:
        return Path(override)
    return Path(str(resources.files("guard") / "objects"))


def object_path(name: str) -> Path:
    path = objects_dir() / f"{name}.bpf.o"
    if not path.is_file():
        raise LibbpfError(errno.ENOENT, f"BPF object {path} is missing (was the package built?)")
    return path


class Link:
    """One bpf_link; destroying it detaches the program."""

    def __init__(self, ptr: int, description: str):
        self._ptr = ptr
        self.description = description

    def destroy(self) -> None:
        if self._ptr:
            lib().bpf_link__destroy(self._ptr)
            self._ptr = None


class Program:
    def __init__(self, ptr: int):
        self._ptr = ptr
        self.name = lib().bpf_program__name(ptr).decode()
        self.section = lib().bpf_program__section_name(ptr).decode()

    @property
    def fd(self) -> int:
        return lib().bpf_program__fd(self._ptr)

    @property
    def is_cgroup(self) -> bool:
        return self.section.startswith(("cgroup/", "cgroup_skb/"))

    def set_autoload(self, enabled: bool) -> None:
        check(lib().bpf_program__set_autoload(self._ptr, enabled), f"autoload {self.name}")

    def attach(self) -> Link:
        """Attach where the section name says (tracepoints, lsm, fentry, kprobe)."""
        ptr = check_ptr(lib().bpf_program__attach(self._ptr), f"attach {self.name}")
        return Link(ptr, f"{self.section} ({self.name})")

    def attach_cgroup(self, cgroup_fd: int, cgroup_path: str) -> Link:
        ptr = check_ptr(lib().bpf_program__attach_cgroup(self._ptr, cgroup_fd),
                        f"attach {self.name} to {cgroup_path}")
        return Link(ptr, f"{self.section} ({self.name}) on {cgroup_path}")


class Map:
    def __init__(self, ptr: int):
        self._ptr = ptr
        self.name = lib().bpf_map__name(ptr).decode()

    @property
    def fd(self) -> int:
        return lib().bpf_map__fd(self._ptr)

    def set_max_entries(self, entries: int) -> None:
        check(lib().bpf_map__set_max_entries(self._ptr, entries), f"resize {self.name}")

    def reuse_fd(self, fd: int) -> None:
        check(lib().bpf_map__reuse_fd(self._ptr, fd), f"share map {self.name}")


class BpfObject:
    """One opened bpf_object; close() frees it and its programs' fds."""

    def __init__(self, path: Path):
        self.path = path
        libbpf.take_log()
        self._ptr = check_ptr(lib().bpf_object__open_file(str(path).encode(), None),
                              f"open {path.name}")
        self.programs = self._collect(lib().bpf_object__next_program, Program)
        self.maps = self._collect(lib().bpf_object__next_map, Map)

    def _collect(self, next_fn, wrap) -> dict:
        items, cur = {}, None
        while True:
            cur = next_fn(self._ptr, cur)
            if not cur:
                return items
            item = wrap(cur)
            items[item.name] = item

    def load(self) -> None:
        libbpf.take_log()
        check(lib().bpf_object__load(self._ptr), f"load {self.path.name}")

    def close(self) -> None:
        if self._ptr:
            lib().bpf_object__close(self._ptr)
            self._ptr = None


@dataclass
class CgroupAttachment:
    path: str
    cgroup_id: int
    links: list[Link] = field(default_factory=list)


class GuardObjects:
    """egress-guard's programs and maps, loaded together, attached per cgroup."""

    NAMES = ("exec", "sock_addr", "sock_create", "socket_syscall")

    def __init__(self, ring_size: int = RING_SIZE_DEFAULT):
        self.objects: dict[str, BpfObject] = {}
        self.map_fds: dict[str, int] = {}
        self._global_links: list[Link] = []
        self.cgroups: dict[int, CgroupAttachment] = {}
        try:
            for name in self.NAMES:
                self._load(name, ring_size)
        except BaseException:
            self.close()
            raise

    def _load(self, name: str, ring_size: int) -> None:
        obj = BpfObject(object_path(name))
        self.objects[name] = obj
        for map_name, bpf_map in obj.maps.items():
            if not map_name.startswith(SHARED_MAP_PREFIX):
                continue
            if map_name in self.map_fds:
                bpf_map.reuse_fd(self.map_fds[map_name])
            elif map_name == "eg_events":
                bpf_map.set_max_entries(ring_size)
        obj.load()
        for map_name, bpf_map in obj.maps.items():
            if map_name.startswith(SHARED_MAP_PREFIX):
                self.map_fds.setdefault(map_name, bpf_map.fd)

    def programs(self):
        for obj in self.objects.values():
            yield from obj.programs.values()

    def attach_global(self) -> None:
        """Host-wide hooks (tracepoints); they act only for guarded cgroups."""
        for prog in self.programs():
            if not prog.is_cgroup:
                self._global_links.append(prog.attach())

    def attach_cgroup(self, path: str, cgroup_id: int) -> CgroupAttachment:
        if cgroup_id in self.cgroups:
            return self.cgroups[cgroup_id]
        attachment = CgroupAttachment(path, cgroup_id)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for prog in self.programs():
                if prog.is_cgroup:
                    attachment.links.append(prog.attach_cgroup(fd, path))
        except BaseException:
            for link in attachment.links:
                link.destroy()
            raise
        finally:
            os.close(fd)
        self.cgroups[cgroup_id] = attachment
        return attachment

    def detach_cgroup(self, cgroup_id: int) -> None:
        attachment = self.cgroups.pop(cgroup_id, None)
        if attachment:
            for link in attachment.links:
                link.destroy()

    def close(self) -> None:
        """Detach everything and free every object; safe to call twice."""
        for cgroup_id in list(self.cgroups):
            self.detach_cgroup(cgroup_id)
        for link in self._global_links:
            link.destroy()
        self._global_links.clear()
        for obj in self.objects.values():
            obj.close()
        self.objects.clear()
        self.map_fds.clear()


# ---------------------------------------------------------------------------
# BTF layout check: guard/abi.py against what the compiler really laid out.

BTF_KIND_INT, BTF_KIND_ARRAY, BTF_KIND_STRUCT, BTF_KIND_ENUM = 1, 3, 4, 6


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32),
                ("size_or_type", ctypes.c_uint32)]


class _BtfMember(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32),
                ("offset", ctypes.c_uint32)]


class _BtfEnum(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("val", ctypes.c_int32)]


class Btf:
    """Read-only view of an object's BTF (btf__parse)."""

    def __init__(self, path: Path):
        self._ptr = check_ptr(lib().btf__parse(str(path).encode(), None), f"parse BTF of {path}")

    def close(self) -> None:
        if self._ptr:
            lib().btf__free(self._ptr)
            self._ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _type(self, type_id: int) -> _BtfType:
        return _BtfType.from_address(lib().btf__type_by_id(self._ptr, type_id))

    def _name(self, off: int) -> str:
        return lib().btf__name_by_offset(self._ptr, off).decode()

    def struct_layout(self, name: str) -> dict[str, tuple[int, int]] | None:
        """member -> (byte offset, byte size), plus "" -> (0, struct size)."""
        type_id = lib().btf__find_by_name_kind(self._ptr, name.encode(), BTF_KIND_STRUCT)
        if type_id < 0:
            return None
        t = self._type(type_id)
        addr = lib().btf__type_by_id(self._ptr, type_id) + ctypes.sizeof(_BtfType)
        layout = {"": (0, t.size_or_type)}
        for i in range(t.info & 0xFFFF):
            m = _BtfMember.from_address(addr + i * ctypes.sizeof(_BtfMember))
            bit_offset = m.offset & 0xFFFFFF if t.info >> 31 else m.offset
            size = lib().btf__resolve_size(self._ptr, m.type)
            layout[self._name(m.name_off)] = (bit_offset // 8, size)
        return layout

    def enum_values(self, name: str) -> dict[str, int] | None:
        type_id = lib().btf__find_by_name_kind(self._ptr, name.encode(), BTF_KIND_ENUM)
        if type_id < 0:
            return None
        t = self._type(type_id)
        addr = lib().btf__type_by_id(self._ptr, type_id) + ctypes.sizeof(_BtfType)
        values = {}
        for i in range(t.info & 0xFFFF):
            e = _BtfEnum.from_address(addr + i * ctypes.sizeof(_BtfEnum))
            values[self._name(e.name_off)] = e.val
        return values


def abi_mismatches(path: Path) -> list[str]:
    """Differences between guard/abi.py and the BTF of one object ([] if none)."""
    from .. import abi

    problems = []
    with Btf(path) as btf:
        for struct in abi.SHARED_STRUCTS:
            layout = btf.struct_layout(struct.c_name)
            if layout is None:
                problems.append(f"struct {struct.c_name}: not in {path.name}")
                continue
            python = {"": (0, ctypes.sizeof(struct))}
            for fname, _ftype in struct._fields_:
                desc = getattr(struct, fname)
                python[fname] = (desc.offset, desc.size)
            if python != layout:
                problems.append(f"struct {struct.c_name}: python {python} != BTF {layout}")
        for c_name, (enum_cls, prefix) in abi.SHARED_ENUMS.items():
            values = btf.enum_values(c_name)
            if values is None:
                problems.append(f"enum {c_name}: not in {path.name}")
                continue
            c_side = {k[len(prefix):]: v for k, v in values.items() if not k.endswith("_MAX")}
            py_side = {m.name: int(m.value) for m in enum_cls}
            if c_side != py_side:
                problems.append(f"enum {c_name}: python {py_side} != BTF {c_side}")
    return problems
