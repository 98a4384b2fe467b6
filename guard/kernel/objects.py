# SPDX-License-Identifier: Apache-2.0
"""Open, load and attach egress-guard's CO-RE objects; own every link.

Each object (guard/objects/*.bpf.o) declares the eg_* maps its programs use
(bpf/lib/*.h: one header per concern owns its maps). The first object that
declares a map creates it; every later one is handed the same fd before it
loads (bpf_map__reuse_fd), so the kernel holds one instance of each map. Without a pin directory nothing is
pinned: if the agent dies, the kernel drops its programs with it. With one
(`run --pin`), maps and links are pinned under it (PinLayout), and the next
agent adopts them: it reuses the pinned maps and swaps its programs into the
pinned links, so enforcement has no gap.
"""
from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from guard.kernel import abi, libbpf
from guard.kernel.libbpf import LibbpfError, check, check_ptr, lib

#: How these objects enforce (status and doctor say it): cgroup socket hooks
#: and raw tracepoints, no LSM and no fentry (EPERM on the reference hosts).
ENFORCEMENT_LEVEL = "cgroup+raw_tracepoint"

SHARED_MAP_PREFIX = "eg_"
RING_SIZE_DEFAULT = 4 << 20


def objects_dir() -> Path:
    """Where the compiled objects live: inside the installed package."""
    override = os.environ.get("GUARD_OBJECTS_DIR")
    if override:
        return Path(override)
    return Path(str(resources.files("guard") / "objects"))


#: uname -m -> the architecture name bpf/Makefile writes into objects/arch
MACHINE_ARCH = {"x86_64": "x86", "amd64": "x86", "aarch64": "arm64", "arm64": "arm64"}


def object_path(name: str) -> Path:
    """The object `name`, built for this machine: the objects directory's
    `arch` file (written by bpf/Makefile) must name this machine's
    architecture, since pt_regs and syscall numbers differ (a directory
    without one, an old tree's, is taken as it is)."""
    directory = objects_dir()
    path = directory / f"{name}.bpf.o"
    if not path.is_file():
        raise LibbpfError(errno.ENOENT, f"BPF object {path} is missing (was the package built?)")
    try:
        built_for = (directory / "arch").read_text().strip()
    except FileNotFoundError:
        return path
    machine = os.uname().machine
    if built_for != MACHINE_ARCH.get(machine, machine):
        raise LibbpfError(errno.ENOEXEC, f"BPF objects in {directory} are built for {built_for}, "
                                         f"this machine is {machine} (install the package built "
                                         f"for it, or make -C bpf)")
    return path


class Link:
    """One bpf_link. Destroying it detaches the program unless the link is
    pinned: then the pin keeps it attached until unpinned."""

    def __init__(self, ptr: int, description: str):
        self._ptr = ptr
        self.description = description

    @classmethod
    def open_pinned(cls, path: Path, description: str) -> "Link":
        return cls(check_ptr(lib().bpf_link__open(str(path).encode()), f"open link {path}"),
                   description)

    @property
    def fd(self) -> int:
        return lib().bpf_link__fd(self._ptr)

    def pin(self, path: Path) -> None:
        check(lib().bpf_link__pin(self._ptr, str(path).encode()), f"pin {path}")

    def update_program(self, prog: "Program") -> None:
        """Swap the attached program in place (BPF_LINK_UPDATE)."""
        check(lib().bpf_link__update_program(self._ptr, prog._ptr),
              f"update {self.description}")

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

    @property
    def is_iterator(self) -> bool:
        """Run on demand (a BPF iterator), never attached for good."""
        return self.section.startswith("iter/")

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
    links: dict[str, Link] = field(default_factory=dict)   # program name -> link


BPFFS_DEFAULT = Path("/sys/fs/bpf")


def _mount_point_of(path: Path, mounts_file: str = "/proc/mounts") -> tuple[Path, str]:
    """The mount a path lies on and its file-system type (longest prefix)."""
    best, fstype = Path("/"), ""
    with open(mounts_file, encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) < 3:
                continue
            point = Path(fields[1].encode().decode("unicode_escape"))
            if (path == point or point in path.parents) and len(point.parts) >= len(best.parts):
                best, fstype = point, fields[2]
    return best, fstype


def ensure_bpffs(pin_dir: Path) -> None:
    """Pins need a bpf file system. Mount one at /sys/fs/bpf when the pin
    directory is below it and nothing is mounted there yet (as the kernel's
    own tools and Cilium do); anywhere else, say what to mount."""
    _point, fstype = _mount_point_of(pin_dir)
    if fstype == "bpf":
        return
    if BPFFS_DEFAULT == pin_dir or BPFFS_DEFAULT in pin_dir.parents:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"bpf", str(BPFFS_DEFAULT).encode(), b"bpf", 0, b"mode=0700") != 0:
            err = ctypes.get_errno()
            raise LibbpfError(err, f"mount bpffs at {BPFFS_DEFAULT}")
        return
    raise LibbpfError(errno.ENOTSUP, f"{pin_dir} is not on a bpf file system "
                                     f"(mount -t bpf bpf {pin_dir.parent})")


class PinLayout:
    """Where a pinned installation lives under a bpffs directory."""

    def __init__(self, root: Path):
        self.root = root
        self.maps = root / "maps"
        self.links = root / "links"
        self.cgroups = root / "cgroups"

    def exists(self) -> bool:
        return self.maps.is_dir() and any(self.maps.iterdir())

    def cgroup_dir(self, cgroup_id: int) -> Path:
        return self.cgroups / str(cgroup_id)

    def pinned_cgroups(self) -> list[int]:
        if not self.cgroups.is_dir():
            return []
        return sorted(int(p.name) for p in self.cgroups.iterdir() if p.name.isdigit())

    def make(self) -> None:
        for directory in (self.maps, self.links, self.cgroups):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def remove_pins(root: Path) -> list[str]:
    """Unpin everything under root (links first, so programs detach) and remove
    the directories. Returns what was removed."""
    layout = PinLayout(root)
    removed = []
    for directory in (layout.cgroups, layout.links, layout.maps):
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*"), reverse=True):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
                removed.append(str(path))
        directory.rmdir()
    if root.is_dir():
        root.rmdir()
    return removed


#: Objects whose cgroup programs run on every packet: attached to a cgroup
#: only when its policy needs them (cgroup_objects_for).
OPTIONAL_CGROUP = frozenset({"flow", "dns"})


def cgroup_objects_for(detect_flags: int, names: bool) -> frozenset[str]:
    """Which OPTIONAL_CGROUP objects a policy needs: flow for payload, DNS
    answer or name checks; dns for allow by name (its queries and answers)."""
    need = set()
    if names or detect_flags & (abi.DetectFlags.PAYLOAD | abi.DetectFlags.DNS
                                | abi.DetectFlags.HOLD):
        need.add("flow")
    if names:
        need.add("dns")
    return frozenset(need)


#: The programs on raw_tp/sys_enter (socket_syscall.bpf.c): opt-in, see attach_global.
SYSCALL_HOOK = frozenset({"guard_socket_syscall"})


class GuardObjects:
    """egress-guard's programs and maps, loaded together, attached per cgroup."""

    NAMES = ("exec", "sock_addr", "sock_create", "socket_syscall", "cgroup_watch", "flow", "dns",
             "destroy", "escape")
    #: Loaded on first use and attached at container parents only
    #: (attach_sentinel), never per cgroup.
    SENTINEL = "sentinel"
    # Loaded when the kernel can: without them the guard still drops a blocked
    # flow's packets, it just cannot reset its socket (bpf_sock_destroy, 6.5).
    OPTIONAL = ("destroy",)

    def __init__(self, ring_size: int = RING_SIZE_DEFAULT, pin_dir: Path | None = None):
        self.objects: dict[str, BpfObject] = {}
        self.map_fds: dict[str, int] = {}
        self._global_links: list[Link] = []
        self._pinned_map_fds: list[int] = []
        self.cgroups: dict[int, CgroupAttachment] = {}
        self.unavailable: dict[str, str] = {}  # optional object -> why it did not load
        self.syscall_hook = False   # sys_enter attached (set_syscall_hook)
        self._syscall_links: dict[str, Link] = {}
        self.pins = PinLayout(pin_dir) if pin_dir else None
        if pin_dir:
            ensure_bpffs(pin_dir)
        self.adopted = bool(self.pins and self.pins.exists())
        try:
            if self.adopted:
                self._open_pinned_maps()
            for name in self.NAMES:
                try:
                    self._load(name, ring_size)
                except LibbpfError as exc:
                    if name not in self.OPTIONAL:
                        raise
                    self.objects.pop(name).close()
                    self.unavailable[name] = str(exc)
            if self.pins:
                self._pin_maps()
        except BaseException:
            # a failed adoption must not tear down the installation it found
            self.close(keep_pins=self.adopted)
            raise

    def _open_pinned_maps(self) -> None:
        for path in sorted(self.pins.maps.iterdir()):
            fd = lib().bpf_obj_get(str(path).encode())
            if fd < 0:
                raise LibbpfError(-fd, f"open pinned map {path}")
            self._pinned_map_fds.append(fd)
            self.map_fds[path.name] = fd

    def _pin_maps(self) -> None:
        self.pins.make()
        for name, fd in self.map_fds.items():
            path = self.pins.maps / name
            if not path.exists():
                check(lib().bpf_obj_pin(fd, str(path).encode()), f"pin {path}")

    def _load(self, name: str, ring_size: int) -> None:
        obj = BpfObject(object_path(name))
        self.objects[name] = obj
        for map_name, bpf_map in obj.maps.items():
            if not map_name.startswith(SHARED_MAP_PREFIX):
                continue
            if map_name in self.map_fds:
                # libbpf refuses a pinned map whose type or sizes changed:
                # the pins are from an incompatible version
                bpf_map.reuse_fd(self.map_fds[map_name])
            elif map_name == "eg_events":
                bpf_map.set_max_entries(ring_size)
        obj.load()
        for map_name, bpf_map in obj.maps.items():
            if map_name.startswith(SHARED_MAP_PREFIX):
                self.map_fds.setdefault(map_name, bpf_map.fd)

    def pinned_cgroups(self) -> list[int]:
        return self.pins.pinned_cgroups() if self.pins else []

    def programs(self):
        for obj in self.objects.values():
            yield from obj.programs.values()

    def _attach_or_adopt(self, prog: Program, pin: Path | None, attach) -> Link:
        """A pinned link gets the new program swapped in; otherwise attach
        (and pin when pinning)."""
        if pin is not None and pin.exists():
            old = Link.open_pinned(pin, f"{prog.section} ({prog.name})")
            try:
                old.update_program(prog)
                return old
            except LibbpfError as exc:
                if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    old.destroy()
                    raise
            # Raw tracepoint links cannot be updated in place: attach the new
            # program first, then let the old one go. No moment without a
            # program; for an instant both report the same exec.
            try:
                link = attach()
                pin.unlink()
                link.pin(pin)
            finally:
                old.destroy()
            return link
        link = attach()
        if pin is not None:
            try:
                link.pin(pin)
            except BaseException:
                link.destroy()
                raise
        return link

    def attach_global(self, syscall_hook: bool = False) -> None:
        """Host-wide hooks (raw tracepoints); they act only for guarded
        cgroups. sys_enter (SYSCALL_HOOK) puts every system call of every
        task on the host on the tracing slow path, so it is attached only
        when asked (set_syscall_hook)."""
        for prog in self.programs():
            if prog.is_cgroup or prog.is_iterator or prog.name in SYSCALL_HOOK:
                continue
            pin = self.pins.links / prog.name if self.pins else None
            self._global_links.append(self._attach_or_adopt(prog, pin, prog.attach))
        self.set_syscall_hook(syscall_hook)

    def set_syscall_hook(self, on: bool) -> None:
        """Attach or detach the sys_enter program (a previous agent's pinned
        one included). Idempotent."""
        for prog in self.programs():
            if prog.name not in SYSCALL_HOOK:
                continue
            pin = self.pins.links / prog.name if self.pins else None
            link = self._syscall_links.pop(prog.name, None)
            if on:
                self._syscall_links[prog.name] = link or self._attach_or_adopt(
                    prog, pin, prog.attach)
                continue
            if link is not None:
                link.destroy()
            if pin is not None and pin.exists():
                pin.unlink()   # its last reference: the kernel detaches it
        self.syscall_hook = bool(self._syscall_links)

    def attach_cgroup(self, path: str, cgroup_id: int,
                      optional: frozenset[str] | None = None) -> CgroupAttachment:
        """Attach a cgroup's programs: every object's, of the OPTIONAL_CGROUP
        ones (flow, dns: a packet program runs on every packet) only those
        named in optional (None: all). Called again for a guarded cgroup it
        attaches what is newly needed and detaches (and unpins) what is not
        any more, a previous agent's pins included."""
        def wanted(object_name: str) -> bool | None:
            if object_name == self.SENTINEL:
                return None   # a container parent's, never a cgroup's own
            return (optional is None or object_name not in OPTIONAL_CGROUP
                    or object_name in optional)
        return self._attach_at(path, cgroup_id, wanted)

    def attach_sentinel(self, path: str, cgroup_id: int) -> CgroupAttachment:
        """Attach sentinel.bpf.c's socket hooks to a container parent: every
        cgroup made below it has them from its first moment, and they judge
        those that no agent took over yet (lib/guarded.h judged_here).
        Pinned like a cgroup's hooks; a previous agent's are swapped in place."""
        if self.SENTINEL not in self.objects:
            try:
                self._load(self.SENTINEL, RING_SIZE_DEFAULT)   # its maps are all shared
            except BaseException:
                obj = self.objects.pop(self.SENTINEL, None)
                if obj is not None:
                    obj.close()
                raise
        return self._attach_at(path, cgroup_id,
                               lambda object_name: True if object_name == self.SENTINEL else None)

    def _attach_at(self, path: str, cgroup_id: int, wanted) -> CgroupAttachment:
        """The cgroup programs of each object wanted(name) says True of
        attached (a pinned link of a previous agent swapped in place), of
        each it says False of detached and unpinned; None: left alone. A
        failure detaches what this call attached."""
        attachment = self.cgroups.get(cgroup_id) or CgroupAttachment(path, cgroup_id)
        pin_dir = None
        if self.pins:
            pin_dir = self.pins.cgroup_dir(cgroup_id)
            pin_dir.mkdir(mode=0o700, exist_ok=True)
        added: list[str] = []
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for object_name, obj in self.objects.items():
                want = wanted(object_name)
                if want is None:
                    continue
                for prog in obj.programs.values():
                    if not prog.is_cgroup:
                        continue
                    pin = pin_dir / prog.name if pin_dir else None
                    if not want:
                        link = attachment.links.pop(prog.name, None)
                        if link is not None:
                            link.destroy()
                        if pin is not None and pin.exists():
                            pin.unlink()   # its last reference: the kernel detaches it
                    elif prog.name not in attachment.links:
                        attachment.links[prog.name] = self._attach_or_adopt(
                            prog, pin, lambda prog=prog: prog.attach_cgroup(fd, path))
                        added.append(prog.name)
        except BaseException:
            for name in added:
                attachment.links.pop(name).destroy()
            raise
        finally:
            os.close(fd)
        self.cgroups[cgroup_id] = attachment
        return attachment

    @property
    def can_reset_sockets(self) -> bool:
        return "destroy" in self.objects

    def mark_guarded_tasks(self) -> None:
        """Run the task iterator of escape.bpf.c once: every process already
        in a guarded cgroup gets its mark (eg_task_marks), so leaving the
        cgroup is an escape for it too, not only for those that exec, fork
        or move in after the cgroup was guarded."""
        self._run_iterator("escape", "guard_mark_tasks", "the task-marking iterator")

    def run_socket_reset(self) -> None:
        """Run the TCP iterator once: it resets the sockets whose cookies
        are in eg_destroy, in the calling thread's network namespace."""
        self._run_iterator("destroy", "guard_destroy_tcp", "the socket-reset iterator")

    def _run_iterator(self, object_name: str, program: str, what: str) -> None:
        """Attach an iterator program, read it to its end, detach it."""
        link = self.objects[object_name].programs[program].attach()
        try:
            fd = lib().bpf_iter_create(link.fd)
            if fd < 0:
                raise LibbpfError(-fd, f"create {what}")
            try:
                while os.read(fd, 4096):
                    pass
            finally:
                os.close(fd)
        finally:
            link.destroy()

    def detach_cgroup(self, cgroup_id: int) -> None:
        """Detach a cgroup's programs, pinned or not."""
        attachment = self.cgroups.pop(cgroup_id, None)
        if attachment:
            for link in attachment.links.values():
                link.destroy()
        if self.pins:
            pin_dir = self.pins.cgroup_dir(cgroup_id)
            if pin_dir.is_dir():
                for pin in pin_dir.iterdir():
                    pin.unlink()  # the last reference: the kernel detaches
                pin_dir.rmdir()

    def close(self, keep_pins: bool = False) -> None:
        """Free every object. Without keep_pins everything is detached (pins
        included); with it, pinned links stay attached and pinned maps stay.
        Safe to call twice."""
        for cgroup_id in list(self.cgroups):
            if keep_pins:
                for link in self.cgroups.pop(cgroup_id).links.values():
                    link.destroy()
            else:
                self.detach_cgroup(cgroup_id)
        for link in [*self._global_links, *self._syscall_links.values()]:
            link.destroy()
        self._global_links.clear()
        self._syscall_links.clear()
        for obj in self.objects.values():
            obj.close()
        self.objects.clear()
        self.map_fds.clear()
        for fd in self._pinned_map_fds:
            os.close(fd)
        self._pinned_map_fds.clear()
        if self.pins and not keep_pins:
            remove_pins(self.pins.root)


# ---------------------------------------------------------------------------
# BTF layout check: guard/kernel/abi.py against what the compiler really laid out.

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
    """Differences between guard/kernel/abi.py and the BTF of one object ([] if none)."""
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
