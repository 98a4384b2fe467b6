# SPDX-License-Identifier: Apache-2.0
"""CgroupNames against a real cgroup2 tree: an unseen id is named through a
file handle without walking, removed and unknown ids are None (and cost one
lookup per NEGATIVE_TTL_S, not one per event), names that are not UTF-8
round-trip, the caches keep their bounds, and without handles the walk is
bounded and rate-limited.

Root only (cgroups are made under the cgroup2 mount, in a parent named for
this process, removed at the end); no BPF.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from guard.workloads import cgroups
from guard.workloads.cgroups import CgroupError, CgroupNames, cgroup2_mount, resolve

from ..conftest import REQUIRE_KERNEL

SIBLINGS, DEPTH = 20, 9   # 20 children of the parent, each with 9 nested below: 200


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "cgroup name tests need root"
    try:
        cgroup2_mount()
    except CgroupError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def mount() -> Path:
    reason = _unavailable()
    if reason is not None:
        if REQUIRE_KERNEL:
            pytest.fail(f"GUARD_REQUIRE_KERNEL=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return cgroup2_mount()


class Tree:
    """A parent cgroup of SIBLINGS chains DEPTH+1 deep; removed by close()."""

    def __init__(self, mount: Path):
        self.mount = mount
        self.parent = mount / f"eg-test-names-{os.getpid()}"
        self.made: list[bytes] = []
        self.dirs: list[Path] = []
        self.mkdir(self.parent)
        for sibling in range(SIBLINGS):
            path = self.parent / f"s{sibling}"
            self.mkdir(path)
            for level in range(DEPTH):
                path = path / f"n{level}"
                self.mkdir(path)

    def mkdir(self, path: Path | bytes) -> None:
        os.mkdir(path)
        self.made.append(os.fsencode(path))
        if isinstance(path, Path) and path != self.parent:
            self.dirs.append(path)

    def relative(self, path: Path) -> str:
        return "/" + str(path.relative_to(self.mount))

    def close(self) -> None:
        for path in reversed(self.made):   # children before parents
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass


@pytest.fixture(scope="module")
def tree(mount):
    made = Tree(mount)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def names(mount):
    made = CgroupNames(mount)
    yield made
    made.close()


@pytest.fixture
def handle_calls(monkeypatch):
    """Counts open_by_handle_at lookups (_Handles.path calls)."""
    calls = []
    real = cgroups._Handles.path

    def counted(self, cgroup_id):
        calls.append(cgroup_id)
        return real(self, cgroup_id)
    monkeypatch.setattr(cgroups._Handles, "path", counted)
    return calls


def no_walking(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("walked the cgroup tree")
    monkeypatch.setattr(os, "walk", refuse)
    monkeypatch.setattr(os, "scandir", refuse)


def test_an_unseen_descendant_is_named_without_a_walk(tree, names, monkeypatch):
    assert names.uses_handles
    names.register(resolve(str(tree.parent), tree.mount))
    no_walking(monkeypatch)
    assert len(tree.dirs) == SIBLINGS * (DEPTH + 1)
    for path in tree.dirs:
        assert names.name(os.stat(path).st_ino) == tree.relative(path)
    assert names.name(os.stat(tree.parent).st_ino) == tree.relative(tree.parent)


def test_a_cgroup_outside_the_guarded_ones_is_named_too(tree, names):
    # nothing registered: named all the same (the mount's root is "/")
    deepest = tree.dirs[DEPTH]
    assert names.name(os.stat(deepest).st_ino) == tree.relative(deepest)
    assert names.name(os.stat(tree.mount).st_ino) == "/"


def test_a_removed_cgroup_is_none_and_asked_once(tree, names, handle_calls, monkeypatch):
    gone = tree.parent / "gone"
    os.mkdir(gone)
    try:
        gone_id = os.stat(gone).st_ino
    finally:
        os.rmdir(gone)
    now = [100.0]
    monkeypatch.setattr(names, "_clock", lambda: now[0])
    assert names.name(gone_id) is None
    assert names.name(gone_id) is None   # remembered: no second lookup
    assert handle_calls == [gone_id]
    now[0] += cgroups.NEGATIVE_TTL_S
    assert names.name(gone_id) is None   # forgotten after the TTL: asked again
    assert handle_calls == [gone_id, gone_id]
    for impossible in (0, -1, 1 << 64, (1 << 64) - 1):
        assert names.name(impossible) is None


def test_a_name_that_is_not_utf8_round_trips(tree, names):
    raw = os.fsencode(tree.parent) + b"/x\xff"
    tree.mkdir(raw)
    try:
        name = names.name(os.stat(raw).st_ino)
        assert isinstance(name, str)
        assert os.fsencode(name) == raw[len(os.fsencode(tree.mount)):]
        assert os.stat(os.fsencode(tree.mount) + os.fsencode(name)).st_ino == os.stat(raw).st_ino
        assert name.encode("utf-8", "surrogateescape")   # and it can be written out
    finally:
        os.rmdir(raw)


def test_the_caches_keep_their_bounds(tree, names, monkeypatch, handle_calls):
    # the negative side: thousands of ids that name nothing
    for fake in range(5000):
        assert names.name((1 << 40) + fake) is None
    assert names.cached()[2] == cgroups.MAX_NEGATIVE
    # the positive side, bounds made small enough for 200 cgroups to cross them
    monkeypatch.setattr(cgroups, "MAX_NAMES", 50)
    for path in tree.dirs:
        names.name(os.stat(path).st_ino)
        entries, size, _ = names.cached()
        assert entries <= 50 and size <= cgroups.MAX_NAME_BYTES
    assert names.cached()[0] == 50
    monkeypatch.setattr(cgroups, "MAX_NAMES", 10_000)
    monkeypatch.setattr(cgroups, "MAX_NAME_BYTES", 2000)
    for path in tree.dirs:
        names.name(os.stat(path).st_ino)
        assert names.cached()[1] <= 2000
    entries, size, _ = names.cached()
    assert size == sum(len(os.fsencode(tree.relative(p))) for p in tree.dirs[-entries:])
    # the most recent are the ones kept
    handle_calls.clear()
    names.name(os.stat(tree.dirs[-1]).st_ino)
    assert handle_calls == []


def test_registered_cgroups_are_pinned_until_unregistered(tree, names, monkeypatch,
                                                           handle_calls):
    monkeypatch.setattr(cgroups, "MAX_NAMES", 5)
    guarded = resolve(str(tree.dirs[0]), tree.mount)
    names.register(guarded)
    for path in tree.dirs[1:40]:
        names.name(os.stat(path).st_ino)
    handle_calls.clear()
    assert names.name(guarded.id) == guarded.relative
    assert handle_calls == []   # pinned, however much went through the cache
    names.unregister(guarded.id)
    assert names.name(guarded.id) == guarded.relative   # looked up again ...
    assert handle_calls == [guarded.id]
    for path in tree.dirs[1:40]:
        names.name(os.stat(path).st_ino)
    handle_calls.clear()
    names.name(guarded.id)
    assert handle_calls == [guarded.id]   # ... and evicted like any other


class Refused:
    """_Handles where open_by_handle_at is not allowed."""

    def __init__(self, _mount):
        raise OSError(errno.EPERM, "Operation not permitted")


class RefusedLater(cgroups._Handles):
    """_Handles that probed fine, then is refused (privileges dropped)."""

    def path(self, cgroup_id):
        if not getattr(self, "probed", False):   # the probe in __init__
            self.probed = True
            return super().path(cgroup_id)
        raise OSError(errno.EPERM, "Operation not permitted")


@pytest.mark.parametrize("handles", [Refused, RefusedLater])
def test_without_handles_the_walk_is_bounded_and_rate_limited(tree, mount, monkeypatch,
                                                              handles):
    monkeypatch.setattr(cgroups, "_Handles", handles)
    monkeypatch.setattr(cgroups, "FALLBACK_MAX_DIRS", 60)
    listed = []
    real_scandir = os.scandir

    def counted(path):
        listed.append(path)
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", counted)
    now = [1000.0]
    names = CgroupNames(mount, clock=lambda: now[0])
    try:
        names.register(resolve(str(tree.parent), mount))
        assert names.uses_handles is (handles is RefusedLater)
        # a walk lists at most FALLBACK_MAX_DIRS directories (and the guarded root)
        found = {path: names.name(os.stat(path).st_ino) for path in tree.dirs}
        assert not names.uses_handles
        walked = len(listed)
        assert 0 < walked <= 61
        assert all(name in (None, tree.relative(path)) for path, name in found.items())
        assert None in found.values()   # 200 cgroups, 60 directories looked at
        # within FALLBACK_INTERVAL_S: no walk, whatever is asked
        for fake in range(1000):
            assert names.name((1 << 41) + fake) is None
        assert len(listed) == walked
        # later, one more walk (one, for all that is asked), here over the whole tree
        now[0] += cgroups.FALLBACK_INTERVAL_S
        monkeypatch.setattr(cgroups, "FALLBACK_MAX_DIRS", 10_000)
        for path in tree.dirs:
            assert names.name(os.stat(path).st_ino) == tree.relative(path)
        assert len(listed) - walked == len(tree.dirs) + 1   # every directory once
    finally:
        names.close()


def test_a_mount_that_is_not_cgroup2_is_walked(tmp_path):
    """No root needed: a plain directory gives no kernfs handles (as the fake
    kernel's stand-in tree does); its cgroups are found by the walk."""
    leaf = tmp_path / "guarded" / "child" / "grandchild"
    leaf.mkdir(parents=True)
    for directory in (tmp_path, leaf.parent.parent, leaf.parent, leaf):
        (directory / "cgroup.procs").write_text("")
    names = CgroupNames(tmp_path)
    try:
        assert not names.uses_handles
        names.register(resolve("/guarded", tmp_path))
        assert names.name(os.stat(leaf).st_ino) == "/guarded/child/grandchild"
        assert names.name(os.stat(leaf.parent).st_ino) == "/guarded/child"
        assert names.name(12345) is None
    finally:
        names.close()
