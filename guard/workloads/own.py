# SPDX-License-Identifier: Apache-2.0
"""The agent's own cgroup: found once at start, never guarded.

However the agent runs (a host process, a systemd unit, a container, a pod),
guarding its own cgroup would judge its own connects and execs as a
workload's, and under a default-deny policy cut it off from the Kubernetes API
and its resolver; a flow of its own held for its own verdict would wait for
itself. So the agent finds the cgroup it runs in and leaves out the unit it
belongs to: its container's cgroup when it runs in a container (discovery
works with containers' cgroups), else its own. Discovery skips that cgroup,
no policy selects it, and `--cgroup` naming it, an ancestor of it (whose hooks
would apply to the agent too) or a cgroup inside it is refused.

Where it is: the "0::" line of /proc/self/cgroup, relative to the agent's
cgroup namespace. Without a namespace of its own that is the path below the
mount. In one (a pod on a cgroup v2 node, `podman run --cgroupns private`)
it is relative to the namespace's root, often just "/", while the host's
hierarchy mounted into the container shows full paths; then the agent's
cgroup is the one whose cgroup.procs lists the agent (cgroup.procs shows
pids as the reader's pid namespace sees them), found by a walk of at most
MAX_WALK directories among those whose path ends with the namespace's
path. The root cgroup is never guarded anyway: an agent there leaves out
nothing more.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.workloads.cgroups import Cgroup, CgroupError, resolve
from guard.workloads.containers import ContainerRef, container_of

MAX_WALK = 20_000   # directories the namespace walk looks at, at most


@dataclass(frozen=True)
class OwnCgroup:
    """Where the agent runs and what it leaves out.

    process: the agent's cgroup below the mount ("/a/b"), None when unknown.
    cgroup: the cgroup it stands for: its container's when it runs in one,
    else its own (the root cgroup when it runs there); None with a problem
    when the agent could not find itself (then nothing is left out)."""

    process: str | None
    cgroup: Cgroup | None
    container: ContainerRef | None = None
    problem: str | None = None

    @property
    def excluded(self) -> Cgroup | None:
        """The cgroup left out; None at the root (never guarded anyway)."""
        return self.cgroup if self.cgroup is not None and self.cgroup.level > 0 else None

    def refusal(self, cg: Cgroup) -> str | None:
        """Why --cgroup cg cannot be guarded (the root cgroup, or the agent
        itself), or None."""
        if cg.level == 0:
            return (f"{cg.path}: refusing to guard the root cgroup "
                    "(name a child cgroup, e.g. a container's)")
        if not self.covers(cg):
            return None
        where = (f"in container {self.container.id[:12]} ({self.cgroup.relative})"
                 if self.container else f"in {self.process}")
        return (f"{cg.path}: refusing to guard the agent's own cgroup: the agent runs {where}, "
                "and never guards itself (run it in a cgroup of its own, as systemd or a "
                "container give it, and name the workloads' cgroups)")

    def parent_refusal(self, cg: Cgroup) -> str | None:
        """Why cg cannot be a container parent (run --container-parent), or
        None. A parent above the agent is fine: the agent exempts its own
        cgroup below it. Not the root, not the agent's own cgroup or one
        inside it, and not when the agent cannot tell where it runs."""
        if cg.level == 0:
            return (f"{cg.path}: refusing the root cgroup as a container parent "
                    "(name the cgroup the runtime makes containers in, e.g. /kubepods.slice)")
        if self.cgroup is None:
            return (f"{cg.path}: cannot be a container parent: the agent cannot tell which "
                    f"cgroup it runs in, so it could not leave itself out ({self.problem})")
        excluded = self.excluded
        if excluded is None:
            return None
        path, left_out = _parts(cg.relative), _parts(excluded.relative)
        if path[:len(left_out)] == left_out:   # the agent's process is inside left_out
            return (f"{cg.path}: refusing it as a container parent: the agent runs in it "
                    f"({self.process}); run the agent in a cgroup below it or elsewhere")
        return None

    def covers(self, cg: Cgroup) -> bool:
        """True when guarding cg would guard the agent: cg is the agent's
        cgroup or an ancestor of it, or lies inside the cgroup left out."""
        excluded = self.excluded
        if excluded is None:
            return False
        path, left_out = _parts(cg.relative), _parts(excluded.relative)
        mine = _parts(self.process or excluded.relative)
        return (bool(path) and mine[:len(path)] == path) or path[:len(left_out)] == left_out

    def as_dict(self) -> dict[str, Any]:
        """The ready event's and status's "self" (docs/events.md)."""
        if self.cgroup is None:
            return {"cgroup": {"id": None, "path": self.process}, "excluded": False,
                    "problem": self.problem}
        entry: dict[str, Any] = {"cgroup": {"id": self.cgroup.id, "path": self.cgroup.relative}}
        if self.container is not None:
            entry["container"] = self.container.as_dict()
        entry["excluded"] = True
        return entry


def find_own_cgroup(mount: Path, pid: int | None = None, proc: Path = Path("/proc")) -> OwnCgroup:
    """The agent's (pid's, default this process's) cgroup below the cgroup2
    mount, and what it leaves out. Never raises: a cgroup it cannot find is
    an OwnCgroup with a problem."""
    pid = pid or os.getpid()
    try:
        relative = _v2_line(proc / str(pid) / "cgroup")
    except OSError as exc:
        return OwnCgroup(None, None, problem=f"cannot read {proc}/{pid}/cgroup: {exc.strerror}")
    if relative is None:
        return OwnCgroup(None, None, problem=f"{proc}/{pid}/cgroup has no cgroup v2 line")
    process = relative if _lists(mount / relative.lstrip("/"), pid) else _walk(mount, relative, pid)
    if process is None:
        return OwnCgroup(relative, None, problem=(
            f"no cgroup below {mount} lists this process (it says {relative!r} in its cgroup "
            f"namespace; the walk looked at up to {MAX_WALK} directories)"))
    container = container_of(process)
    try:
        cgroup = resolve(container.cgroup if container else process, mount)
    except CgroupError as exc:
        return OwnCgroup(process, None, problem=str(exc))
    return OwnCgroup(process, cgroup, container)


def _v2_line(path: Path) -> str | None:
    with open(path, "rb") as fh:
        for line in fh:
            if line.startswith(b"0::"):
                return os.fsdecode(line[3:].rstrip(b"\n"))
    return None


def _lists(directory: Path, pid: int) -> bool:
    """True when the cgroup directory's cgroup.procs lists pid."""
    try:
        return str(pid) in (directory / "cgroup.procs").read_text().split()
    except OSError:
        return False


def _walk(mount: Path, relative: str, pid: int) -> str | None:
    """The path below mount, ending with the namespace-relative path, whose
    cgroup.procs lists pid; at most MAX_WALK directories."""
    tail = _parts(relative)
    budget = MAX_WALK
    for dirpath, dirnames, _files in os.walk(mount):
        budget -= 1
        if budget < 0:
            return None
        path = "/" + os.path.relpath(dirpath, mount) if dirpath != str(mount) else "/"
        parts = _parts(path)
        if parts[len(parts) - len(tail):] == tail and path != "/" and _lists(Path(dirpath), pid):
            return path
        dirnames.sort()
    return None


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]
