# SPDX-License-Identifier: Apache-2.0
"""cgroup v2: where it is mounted, how a path is named, what id it has.

The mount point is read from /proc/mounts, never assumed: hybrid hosts mount
cgroup2 at /sys/fs/cgroup/unified, pure v2 hosts at /sys/fs/cgroup.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC_MOUNTS = "/proc/mounts"


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
    """The cgroup v2 path of a process, as /proc/PID/cgroup names it."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


class CgroupNames:
    """cgroup id -> path below the mount, for the ids events carry.

    Guarded cgroups are registered when attached; a descendant seen for the
    first time is found by walking the guarded subtrees (ids are inode numbers).
    """

    def __init__(self, mount: Path):
        self._mount = mount
        self._names: dict[int, str] = {}
        self._roots: dict[int, Cgroup] = {}

    def register(self, cgroup: Cgroup) -> None:
        self._names[cgroup.id] = cgroup.relative
        self._roots[cgroup.id] = cgroup

    def unregister(self, cgroup_id: int) -> None:
        self._roots.pop(cgroup_id, None)

    def name(self, cgroup_id: int) -> str | None:
        if cgroup_id not in self._names:
            self._scan()
        return self._names.get(cgroup_id)

    def _scan(self) -> None:
        for root in self._roots.values():
            for dirpath, _dirs, _files in os.walk(root.path):
                try:
                    cid = cgroup_id(dirpath)
                except OSError:
                    continue
                self._names.setdefault(cid, "/" + os.path.relpath(dirpath, self._mount))
