# SPDX-License-Identifier: Apache-2.0
"""Workloads as any user: cgroup2 mounts, cgroup paths and the names of
cgroup ids (guard/workloads/cgroups.py) against a plain directory tree
standing in for the mount, and the container runtime's API client
(guard/workloads/runtime.py) against a small HTTP server on a unix socket.
"""
from __future__ import annotations

import http.server
import os
import socket
import socketserver
import threading
import time
from pathlib import Path

import orjson
import pytest

from guard.workloads import cgroups
from guard.workloads.cgroups import CgroupError, CgroupNames, cgroup2_mount, of_pid, resolve
from guard.workloads.runtime import ContainerInfo, MetadataCache, describe_container, inspect

# -- where cgroup2 is mounted ----------------------------------------------------------


def mounts(tmp_path, text: str) -> str:
    path = tmp_path / "mounts"
    path.write_text(text)
    return str(path)


def test_the_first_cgroup2_mount_is_taken(tmp_path):
    assert cgroup2_mount(mounts(tmp_path, (
        "proc /proc proc rw 0 0\n"
        "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n"
        "cgroup2 /elsewhere cgroup2 rw 0 0\n"))) == Path("/sys/fs/cgroup/unified")


def test_a_mount_point_with_escaped_spaces(tmp_path):
    assert cgroup2_mount(mounts(tmp_path, "none /mnt/my\\040cgroups\\011x cgroup2 rw 0 0\n")) \
        == Path("/mnt/my cgroups\tx")


@pytest.mark.parametrize("text", ["", "proc /proc proc rw 0 0\n", "short line\n",
                                  "cgroup /sys/fs/cgroup cgroup rw 0 0\n"])
def test_no_cgroup2_mounted_is_an_error(tmp_path, text):
    with pytest.raises(CgroupError, match="no cgroup2 file system is mounted"):
        cgroup2_mount(mounts(tmp_path, text))


def test_an_unreadable_mounts_file_is_an_error(tmp_path):
    with pytest.raises(CgroupError, match=f"cannot read {tmp_path}/absent"):
        cgroup2_mount(str(tmp_path / "absent"))


# -- cgroup paths -----------------------------------------------------------------------


@pytest.fixture
def mount(tmp_path):
    """A plain directory tree laid out like a cgroup2 mount."""
    root = tmp_path / "cg"
    for sub in ("", "libpod_parent", "libpod_parent/libpod-abc", "libpod_parent/libpod-abc/x"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / "cgroup.procs").write_text("")
    (root / "not-a-cgroup").mkdir()
    return root


@pytest.mark.parametrize("spec", ["libpod_parent/libpod-abc", "/libpod_parent/libpod-abc",
                                  "libpod_parent//libpod-abc/", "libpod_parent/x/../libpod-abc"])
def test_a_path_below_the_mount_in_any_spelling(mount, spec):
    cg = resolve(spec, mount)
    assert cg.path == mount / "libpod_parent" / "libpod-abc"
    assert cg.relative == "/libpod_parent/libpod-abc"
    assert cg.level == 2
    assert cg.id == os.stat(cg.path).st_ino
    assert cg.procs == cg.path / "cgroup.procs"


def test_an_absolute_file_system_path_under_the_mount(mount):
    cg = resolve(str(mount / "libpod_parent" / "libpod-abc" / "x"), mount)
    assert (cg.relative, cg.level) == ("/libpod_parent/libpod-abc/x", 3)


@pytest.mark.parametrize("spec", ["/", None], ids=["relative", "absolute"])
def test_the_root_cgroup(mount, spec):
    cg = resolve(spec if spec else str(mount), mount)
    assert (cg.path, cg.relative, cg.level) == (mount, "/", 0)


def test_a_path_outside_the_mount_is_refused(mount, tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "cgroup.procs").write_text("")
    with pytest.raises(CgroupError, match="not under the cgroup2 mount"):
        resolve(str(tmp_path / "outside"), mount)


@pytest.mark.parametrize("spec", ["not-a-cgroup", "absent", "libpod_parent/none"])
def test_a_directory_without_cgroup_procs_is_refused(mount, spec):
    with pytest.raises(CgroupError, match="not a cgroup v2 directory"):
        resolve(spec, mount)


def test_an_absolute_path_that_exists_nowhere_is_no_such_cgroup(mount):
    """/x is tried below the mount first, then as a file-system path."""
    with pytest.raises(CgroupError, match="/libpod_parent/none: no such cgroup"):
        resolve("/libpod_parent/none", mount)


def test_the_mount_defaults_to_proc_mounts(mount, monkeypatch, tmp_path):
    monkeypatch.setattr(cgroups, "PROC_MOUNTS", mounts(tmp_path, f"cgroup2 {mount} cgroup2 rw 0 0\n"))
    monkeypatch.setattr(cgroups.cgroup2_mount, "__defaults__", (cgroups.PROC_MOUNTS,))
    assert resolve("libpod_parent", None).relative == "/libpod_parent"


def test_of_pid_is_what_proc_says():
    with open("/proc/self/cgroup", "rb") as fh:
        line = next(line for line in fh if line.startswith(b"0::"))
    assert of_pid(os.getpid()) == line[3:].rstrip(b"\n").decode()
    assert of_pid(os.getpid()).startswith("/")


def test_of_pid_of_a_gone_process_is_none():
    import subprocess
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert of_pid(gone.pid) is None
    assert of_pid(0) is None


# -- cgroup id -> name, by the walk (no file handles without root) ----------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def names(mount):
    clock = Clock()
    made = CgroupNames(mount, clock=clock)
    made.clock = clock
    made.guarded = resolve("libpod_parent", mount)
    made.register(made.guarded)
    yield made
    made.close()


def ino(path) -> int:
    return os.stat(path).st_ino


def test_a_plain_directory_gives_no_handles(names):
    assert names.uses_handles is False


def test_on_the_real_mount_handles_are_refused_without_privileges(mount):
    """open_by_handle_at needs CAP_DAC_READ_SEARCH: unprivileged, the names
    come from the walk; the refusal is found when made, not per event."""
    try:
        real = cgroup2_mount()
    except CgroupError:
        pytest.skip("no cgroup2 mounted here")
    if os.geteuid() != 0:
        made = CgroupNames(real)
        try:
            assert made.uses_handles is False
        finally:
            made.close()
        return
    # as root: the same check in a child that gave up root (nobody)
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            made = CgroupNames(real)
            code = 1 if made.uses_handles else 0
            made.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_registered_cgroups_are_named_without_a_walk(names, monkeypatch):
    monkeypatch.setattr(CgroupNames, "_walk", lambda self, wanted: pytest.fail("walked"))
    assert names.name(names.guarded.id) == "/libpod_parent"


def test_a_descendant_is_found_by_the_walk_and_then_cached(names, mount, monkeypatch):
    leaf = mount / "libpod_parent" / "libpod-abc" / "x"
    assert names.name(ino(leaf)) == "/libpod_parent/libpod-abc/x"
    # the walk named the rest of the subtree too; no second walk for it
    monkeypatch.setattr(CgroupNames, "_walk", lambda self, wanted: pytest.fail("walked"))
    assert names.name(ino(leaf.parent)) == "/libpod_parent/libpod-abc"
    assert names.name(ino(leaf)) == "/libpod_parent/libpod-abc/x"
    assert names.cached()[0] == 2


def test_an_unknown_id_is_remembered_and_walks_are_rate_limited(names, mount):
    walks = []
    real_walk = CgroupNames._walk

    def counted(self, wanted):
        walks.append(set(wanted))
        real_walk(self, wanted)
    names._walk = counted.__get__(names)
    assert names.name(999_999_999) is None
    assert names.cached()[2] == 1
    late = mount / "libpod_parent" / "late"
    late.mkdir()
    # remembered as naming nothing for NEGATIVE_TTL_S: no walk
    assert names.name(999_999_999) is None
    # a new id inside the interval: no walk either, so not found yet
    assert names.name(ino(late)) is None
    assert len(walks) == 1
    names.clock.now += cgroups.FALLBACK_INTERVAL_S
    assert names.name(ino(late)) == "/libpod_parent/late"
    assert len(walks) == 2 and ino(late) in walks[1]
    assert 999_999_999 in walks[1]   # the remembered misses are looked for too


def test_the_negative_cache_is_bounded(names, monkeypatch):
    monkeypatch.setattr(cgroups, "MAX_NEGATIVE", 3)
    for cid in range(1, 10):
        names.clock.now += cgroups.FALLBACK_INTERVAL_S   # let every miss walk
        assert names.name(10**12 + cid) is None
    assert names.cached()[2] == 3


def test_the_name_cache_keeps_its_bounds(mount, monkeypatch):
    for i in range(10):
        (mount / "libpod_parent" / f"c{i:02d}").mkdir()
    monkeypatch.setattr(cgroups, "MAX_NAMES", 4)
    made = CgroupNames(mount, clock=Clock())
    try:
        made.register(resolve("libpod_parent", mount))
        made.name(1)   # one walk names the subtree, within the bound
        count, size, _missing = made.cached()
        assert count == 4
        assert size == sum(len(os.fsencode(n)) for n in made._names.values())
    finally:
        made.close()
    monkeypatch.setattr(cgroups, "MAX_NAMES", 1000)
    monkeypatch.setattr(cgroups, "MAX_NAME_BYTES", 40)
    made = CgroupNames(mount, clock=Clock())
    try:
        made.register(resolve("libpod_parent", mount))
        made.name(1)
        count, size, _missing = made.cached()
        assert 0 < size <= 40 and 1 <= count <= 2
    finally:
        made.close()


def test_a_walk_is_bounded(names, mount, monkeypatch):
    for i in range(20):
        (mount / "libpod_parent" / f"c{i:02d}").mkdir()
    monkeypatch.setattr(cgroups, "FALLBACK_MAX_DIRS", 5)
    names.name(1)
    assert names.cached()[0] == 5


def test_an_unregistered_cgroup_is_neither_pinned_nor_walked(names, mount):
    other = resolve("/libpod_parent/libpod-abc", mount)
    names.register(other)
    assert names.name(other.id) == "/libpod_parent/libpod-abc"
    names.unregister(names.guarded.id)
    names.unregister(other.id)
    names.clock.now += cgroups.FALLBACK_INTERVAL_S
    assert names.name(other.id) is None   # nothing guarded is left to walk
    names.unregister(12345)   # unknown: harmless


def test_a_guarded_cgroup_removed_before_the_walk(names, mount):
    gone = mount / "libpod_parent" / "libpod-abc" / "x"
    names.register(resolve(str(gone), mount))
    (gone / "cgroup.procs").unlink()
    gone.rmdir()
    assert names.name(ino(mount / "libpod_parent" / "libpod-abc")) == "/libpod_parent/libpod-abc"


def test_a_name_that_is_not_utf8_round_trips(names, mount):
    raw = os.fsencode(mount / "libpod_parent") + b"/caf\xe9"
    os.mkdir(raw)
    name = names.name(os.stat(raw).st_ino)
    assert os.fsencode(name) == b"/libpod_parent/caf\xe9"


def test_close_twice_is_harmless(mount):
    made = CgroupNames(mount)
    made.close()
    made.close()


# -- the container runtime's API --------------------------------------------------------


class RuntimeAPI:
    """A Docker-compatible API on a unix socket: GET /containers/ID/json."""

    def __init__(self, path, containers: dict[str, object] | None = None, *,
                 raw: bytes | None = None, delay: float = 0.0, status: int = 200):
        self.path = str(path)
        self.asked: list[str] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                api.asked.append(self.path)
                if delay:
                    time.sleep(delay)
                cid = self.path.split("/")[2] if self.path.count("/") >= 3 else ""
                if raw is not None:
                    body, code = raw, status
                elif containers is not None and cid in containers:
                    body, code = orjson.dumps(containers[cid]), status
                else:
                    body, code = b'{"message": "no such container"}', 404
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass   # the client gave up

            def log_message(self, *args):
                pass

            def address_string(self):
                return "unix"

        self.server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.01,),
                                        daemon=True)
        self._thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(tmp_path):
    made = []

    def make(*args, name="runtime.sock", **kwargs):
        served = RuntimeAPI(tmp_path / name, *args, **kwargs)
        made.append(served)
        return served
    yield make
    for served in made:
        served.close()


PODMAN = {"Id": "abc", "Name": "/web",
          "Config": {"Image": "docker.io/library/nginx:1.27",
                     "Labels": {"app": "web", "tier": 3, "io.podman": None}}}


def test_inspect_names_the_container(api):
    served = api({"abc": PODMAN})
    info = inspect(served.path, "abc")
    assert info == ContainerInfo(name="web", image="docker.io/library/nginx:1.27",
                                 labels={"app": "web", "tier": "3", "io.podman": "None"})
    assert served.asked == ["/containers/abc/json"]


def test_a_container_the_runtime_does_not_know_is_none(api):
    assert inspect(api({"abc": PODMAN}).path, "other") is None


@pytest.mark.parametrize("answer, expected", [
    ({"Name": 7, "Config": "x"}, ContainerInfo(None, None, {})),
    ({"Name": "no-slash", "Config": {"Image": ["x"], "Labels": ["a"]}},
     ContainerInfo("no-slash", None, {})),
    ({}, ContainerInfo(None, None, {})),
])
def test_odd_fields_are_left_out_not_fatal(api, answer, expected):
    assert inspect(api({"abc": answer}).path, "abc") == expected


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"web"', b"\xff\xfe", b""])
def test_garbage_from_the_runtime_is_none(api, raw):
    assert inspect(api(raw=raw).path, "abc") is None


def test_a_runtime_that_speaks_no_http_is_none(tmp_path):
    path = str(tmp_path / "junk.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def junk():
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"\x00\x01 garbage, not HTTP\r\n\r\n")
    thread = threading.Thread(target=junk, daemon=True)
    thread.start()
    try:
        assert inspect(path, "abc") is None
    finally:
        thread.join(timeout=5)
        listener.close()


def test_no_runtime_listening_is_none(tmp_path):
    assert inspect(str(tmp_path / "absent.sock"), "abc") is None
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()   # a socket file nobody listens on
    assert inspect(str(tmp_path / "stale.sock"), "abc") is None


def test_a_slow_runtime_costs_at_most_the_timeout(api):
    served = api({"abc": PODMAN}, delay=2.0)
    started = time.monotonic()
    assert inspect(served.path, "abc", timeout=0.3) is None
    assert time.monotonic() - started < 1.0


def test_a_runtime_that_accepts_and_never_answers_costs_at_most_the_timeout(tmp_path):
    path = str(tmp_path / "silent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)   # never accepts: the connection waits in the backlog
    try:
        started = time.monotonic()
        assert inspect(path, "abc", timeout=0.3) is None
        assert time.monotonic() - started < 1.0
    finally:
        listener.close()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_cache_asks_each_socket_in_turn_and_only_once(api, tmp_path):
    unknowing = api({}, name="podman.sock")
    knowing = api({"abc": PODMAN}, name="docker.sock")
    cache = MetadataCache([str(tmp_path / "absent.sock"), "", unknowing.path, knowing.path])
    try:
        assert cache.get("abc") is None and cache.version == 0
        cache.request("abc")
        cache.request("abc")
        assert wait_for(lambda: cache.get("abc") is not None)
        assert cache.get("abc").name == "web"
        assert cache.version == 1
        assert unknowing.asked == ["/containers/abc/json"]
        assert knowing.asked == ["/containers/abc/json"]   # asked once for two requests
    finally:
        cache.close()


def test_forget_lets_a_container_be_asked_again(api):
    served = api({"abc": PODMAN})
    cache = MetadataCache([served.path])
    try:
        cache.request("abc")
        assert wait_for(lambda: cache.version == 1)
        cache.forget("abc")
        assert cache.get("abc") is None
        cache.forget("never-asked")   # harmless
        cache.request("abc")
        assert wait_for(lambda: cache.version == 2)
        assert cache.get("abc").image == "docker.io/library/nginx:1.27"
        assert len(served.asked) == 2
    finally:
        cache.close()


def test_a_container_no_runtime_knows_stays_unnamed(api):
    served = api({})
    cache = MetadataCache([served.path])
    try:
        cache.request("zzz")
        assert wait_for(lambda: served.asked == ["/containers/zzz/json"])
        time.sleep(0.05)
        assert cache.get("zzz") is None and cache.version == 0
    finally:
        cache.close()


def test_close_returns_promptly_with_nothing_asked():
    cache = MetadataCache([])
    started = time.monotonic()
    cache.close()
    assert time.monotonic() - started < 1.0


def test_describe_container_adds_name_and_image_once_known():
    ref = {"id": "abc", "runtime": "podman"}
    assert describe_container(ref, None) == ref
    assert describe_container(ref, ContainerInfo("web", "nginx", {"a": "b"})) == {
        "id": "abc", "runtime": "podman", "name": "web", "image": "nginx"}
    assert ref == {"id": "abc", "runtime": "podman"}   # not changed in place
