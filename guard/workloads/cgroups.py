# SPDX-License-Identifier: Apache-2.0
"""cgroup v2: where it is mounted, how a path is named, what id it has.

The mount point is read from /proc/mounts, never assumed: hybrid hosts mount
cgroup2 at /sys/fs/cgroup/unified, pure v2 hosts at /sys/fs/cgroup.

Events carry cgroup ids; CgroupNames turns them back into paths in constant
time and bounded memory, because the workload decides how many cgroups there
are and which ids its events carry:

- a cgroup v2 id is the kernfs node id of its directory, and kernfs exports
  it as a file handle (FILEID_KERNFS, the u64 id): open_by_handle_at() on
  the mount opens the directory by id, /proc/self/fd names it. No walk.
- where that is refused (no CAP_DAC_READ_SEARCH, an old kernel) the guarded
  subtrees are walked instead, at most once per FALLBACK_INTERVAL_S and at
  most FALLBACK_MAX_DIRS directories per walk.
- names are kept in an LRU of at most MAX_NAMES entries and MAX_NAME_BYTES
  bytes of names; registered (guarded) cgroups are pinned outside it. An id
  that names nothing is remembered for NEGATIVE_TTL_S (at most
  MAX_NEGATIVE ids), so a storm of them costs one lookup each, not one per
  event.
"""
from __future__ import annotations

import errno
import os
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

PROC_MOUNTS = "/proc/mounts"

MAX_NAMES = 4096              # names kept for ids seen in events (registered ones aside)
MAX_NAME_BYTES = 1 << 20      # and at most this many bytes of those names
MAX_NEGATIVE = 1024           # ids that named nothing, remembered ...
NEGATIVE_TTL_S = 2.0          # ... this long (a walk may find them later)
FALLBACK_INTERVAL_S = 5.0     # without file handles: at most one walk this often
FALLBACK_MAX_DIRS = 10_000    # and at most this many directories per walk


class CgroupError(Exception):
    """A cgroup path that cannot be guarded, with the reason."""


def cgroup2_mount(mounts_file: str = PROC_MOUNTS) -> Path:
    """The first cgroup2 mount point listed in /proc/mounts."""
    try:
        with open(mounts_file, encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == "cgroup2":
                    # /proc/mounts escapes spaces and the like as octal
                    return Path(fields[1].encode().decode("unicode_escape"))
    except OSError as exc:
        raise CgroupError(f"cannot read {mounts_file}: {exc.strerror}") from None
    raise CgroupError("no cgroup2 file system is mounted (see /proc/mounts)")


@dataclass(frozen=True)
class Cgroup:
    path: Path     # absolute path in the file system
    relative: str  # "/" + path below the cgroup2 mount, as in /proc/PID/cgroup
    id: int        # cgroup v2 id: the inode number of its directory
    level: int     # 0 is the root cgroup

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"


def cgroup_id(path: Path | str) -> int:
    return os.stat(path).st_ino


def resolve(spec: str, mount: Path | None = None) -> Cgroup:
    """A cgroup given as a file-system path, or as a path below the cgroup2
    mount: "libpod_parent/libpod-ID" or "/libpod_parent/libpod-ID", the form
    /proc/PID/cgroup shows."""
    mount = mount or cgroup2_mount()
    path = Path(os.path.normpath(mount / spec.lstrip("/")))
    if Path(spec).is_absolute():
        absolute = Path(os.path.normpath(spec))
        if absolute == mount or mount in absolute.parents or not path.exists():
            path = absolute
    try:
        rel = path.relative_to(mount)
    except ValueError:
        raise CgroupError(f"{spec}: no such cgroup (not under the cgroup2 mount {mount}, "
                          f"and {mount / spec.lstrip('/')} does not exist)") from None
    if not (path / "cgroup.procs").is_file():
        raise CgroupError(f"{spec}: not a cgroup v2 directory ({path} has no cgroup.procs)")
    relative = "/" + str(rel) if str(rel) != "." else "/"
    level = 0 if relative == "/" else relative.count("/")
    return Cgroup(path=path, relative=relative, id=cgroup_id(path), level=level)


def of_pid(pid: int) -> str | None:
    """The cgroup v2 path of a process, as /proc/PID/cgroup names it ("/a/b"),
    None when it is gone. A name that is not UTF-8 comes back as CgroupNames
    gives it (surrogateescape), so the two compare equal."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as fh:
            for line in fh:
                if line.startswith(b"0::"):
                    return os.fsdecode(line[3:].rstrip(b"\n"))
    except OSError:
        return None
    return None


# struct file_handle { __u32 handle_bytes; int handle_type; unsigned char f_handle[]; }
# kernfs's: handle_bytes 8, FILEID_KERNFS, f_handle the u64 node id (native endian)
_FILE_HANDLE = struct.Struct("=IiQ")
FILEID_KERNFS = 0xFE
_AT_EMPTY_PATH = 0x1000
# errors that say the kernel or our privileges do not allow handles at all
_NO_HANDLES = frozenset({errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM})


class _Handles:
    """open_by_handle_at() on the cgroup2 mount: cgroup id -> its path.

    Raises OSError with an errno in _NO_HANDLES when handles cannot be used
    here at all; probed once when made."""

    def __init__(self, mount: Path):
        import ctypes   # here: only the agent names cgroups, the CLI never does
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._ctypes = ctypes
        self._open = self._libc.open_by_handle_at   # AttributeError: glibc too old
        self._open.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
        self._open.restype = ctypes.c_int
        self._handle = ctypes.create_string_buffer(_FILE_HANDLE.size)
        self.mount_fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # the path the kernel gives the mount (mount may be a symlink)
            self._prefix = os.readlink(f"/proc/self/fd/{self.mount_fd}")
            root_id = self._probe()
            if self.path(root_id) != "/":
                raise OSError(errno.EOPNOTSUPP, "a handle did not open what it names")
        except BaseException:
            os.close(self.mount_fd)
            raise

    def _probe(self) -> int:
        """The mount's own kernfs id, via name_to_handle_at (not kernfs: refused)."""
        ctypes = self._ctypes
        raw = ctypes.create_string_buffer(8 + 128)
        struct.pack_into("=I", raw, 0, 128)
        mount_id = ctypes.c_int()
        if self._libc.name_to_handle_at(self.mount_fd, b"", raw, ctypes.byref(mount_id),
                                        _AT_EMPTY_PATH) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        size, kind = struct.unpack_from("=Ii", raw)
        if kind != FILEID_KERNFS or size != 8:
            raise OSError(errno.EOPNOTSUPP, f"not kernfs (handle type {kind:#x})")
        return struct.unpack_from("=Q", raw, 8)[0]

    def path(self, cgroup_id: int) -> str | None:
        """"/a/b" below the mount, or None (no such cgroup any more)."""
        if not 0 < cgroup_id < 1 << 64:
            return None
        _FILE_HANDLE.pack_into(self._handle, 0, 8, FILEID_KERNFS, cgroup_id)
        fd = self._open(self.mount_fd, self._handle, os.O_PATH | os.O_CLOEXEC)
        if fd < 0:
            code = self._ctypes.get_errno()
            if code in _NO_HANDLES:
                raise OSError(code, os.strerror(code))
            return None   # ESTALE: removed (or never was)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")   # str, surrogateescape
        except OSError:
            return None
        finally:
            os.close(fd)
        if target.endswith(" (deleted)"):
            # removed since it opened, or a cgroup really named so: ask its inode
            try:
                if os.stat(target[:-10]).st_ino != cgroup_id:
                    return None
            except OSError:
                return None
            target = target[:-10]
        if target == self._prefix:
            return "/"
        if not target.startswith(self._prefix + "/") and self._prefix != "/":
            return None   # outside what this mount shows (another namespace's root)
        return target if self._prefix == "/" else target[len(self._prefix):]

    def close(self) -> None:
        os.close(self.mount_fd)


class CgroupNames:
    """cgroup id -> path below the mount ("/a/b"), for the ids events carry.

    Registered (guarded) cgroups first, pinned until unregistered; any other
    id is resolved through a file handle (constant time) or, where handles
    are refused, by a bounded, rate-limited walk of the guarded subtrees. A
    path that is not UTF-8 is a str with surrogate escapes (os.fsdecode), so
    os.fsencode gives its bytes back. See the module docstring for the bounds.
    """

    def __init__(self, mount: Path, clock=time.monotonic):
        self._mount = Path(mount)
        self._clock = clock
        self._pinned: dict[int, str] = {}
        self._roots: dict[int, Cgroup] = {}
        self._names: OrderedDict[int, str] = OrderedDict()   # LRU, oldest first
        self._name_bytes = 0
        self._missing: OrderedDict[int, float] = OrderedDict()   # id -> when it expires
        self._next_walk = 0.0
        self._handles: _Handles | None = None
        try:
            self._handles = _Handles(self._mount)
        except (OSError, AttributeError):
            self._handles = None   # the walk it is

    @property
    def uses_handles(self) -> bool:
        return self._handles is not None

    def register(self, cgroup: Cgroup) -> None:
        self._forget(cgroup.id)
        self._pinned[cgroup.id] = cgroup.relative
        self._roots[cgroup.id] = cgroup

    def unregister(self, cgroup_id: int) -> None:
        self._pinned.pop(cgroup_id, None)
        self._roots.pop(cgroup_id, None)
        self._forget(cgroup_id)

    def name(self, cgroup_id: int) -> str | None:
        name = self._pinned.get(cgroup_id)
        if name is not None:
            return name
        name = self._names.get(cgroup_id)
        if name is not None:
            self._names.move_to_end(cgroup_id)
            return name
        expires = self._missing.get(cgroup_id)
        now = self._clock()
        if expires is not None:
            if now < expires:
                return None
            del self._missing[cgroup_id]
        name = self._resolve(cgroup_id, now)
        if name is None:
            self._missing[cgroup_id] = now + NEGATIVE_TTL_S
            while len(self._missing) > MAX_NEGATIVE:
                self._missing.popitem(last=False)
        return name

    def cached(self) -> tuple[int, int, int]:
        """(names, bytes of those names, ids remembered as naming nothing);
        registered cgroups aside."""
        return len(self._names), self._name_bytes, len(self._missing)

    def close(self) -> None:
        if self._handles is not None:
            self._handles.close()
            self._handles = None

    def _resolve(self, cgroup_id: int, now: float) -> str | None:
        if self._handles is not None:
            try:
                name = self._handles.path(cgroup_id)
            except OSError:   # refused after all (privileges dropped): walk from now on
                self._handles.close()
                self._handles = None
            else:
                if name is not None:
                    self._remember(cgroup_id, name)
                return name
        if now < self._next_walk:
            return None
        self._next_walk = now + FALLBACK_INTERVAL_S
        self._walk({cgroup_id, *self._missing})
        return self._names.get(cgroup_id)

    def _walk(self, wanted: set[int]) -> None:
        """Name what the guarded subtrees hold, at most FALLBACK_MAX_DIRS
        directories; the wanted ids are remembered last (most recent)."""
        found: dict[int, str] = {}
        budget = FALLBACK_MAX_DIRS
        stack = [os.fspath(root.path) for root in self._roots.values()]
        mount = os.fspath(self._mount)
        while stack and budget > 0:
            directory = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if budget <= 0:
                            break
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        budget -= 1
                        stack.append(entry.path)
                        cid = entry.inode()   # d_ino: the kernfs id, no stat
                        name = "/" + os.path.relpath(entry.path, mount)
                        if cid in wanted:
                            found[cid] = name
                        elif cid not in self._pinned:
                            self._remember(cid, name)
            except OSError:
                continue   # removed while walking
        for cid, name in found.items():
            self._missing.pop(cid, None)
            self._remember(cid, name)

    def _remember(self, cgroup_id: int, name: str) -> None:
        self._forget(cgroup_id)
        size = len(os.fsencode(name))
        self._names[cgroup_id] = name
        self._name_bytes += size
        while len(self._names) > MAX_NAMES or self._name_bytes > MAX_NAME_BYTES:
            _old, evicted = self._names.popitem(last=False)
            self._name_bytes -= len(os.fsencode(evicted))

    def _forget(self, cgroup_id: int) -> None:
        name = self._names.pop(cgroup_id, None)
        if name is not None:
            self._name_bytes -= len(os.fsencode(name))
        self._missing.pop(cgroup_id, None)
