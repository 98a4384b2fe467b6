# SPDX-License-Identifier: Apache-2.0
"""The only binding to libbpf.so.1: ctypes declarations of its public API.

Nothing here interprets ELF, relocations or bpf() commands: libbpf does all of
that. This module declares the functions the loader calls, turns libbpf's
negative-errno convention into OSError, and captures libbpf's log lines so a
failed load can say why.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from typing import Callable

c_int, c_char_p, c_void_p, c_size_t = ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t

# enum libbpf_print_level
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

BPF_ANY = 0
ENOTSUPP = 524  # the kernel's own "not supported", which reaches userspace as is
# What a kernel says when it has no batch operation for a map type (or none at all)
BATCH_UNSUPPORTED = frozenset({errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP})

_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_log_lines: list[str] = []

PrintFn = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
RingbufSampleFn = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


class LibbpfError(OSError):
    """A libbpf call failed; carries errno and the libbpf log lines of the call."""

    def __init__(self, err: int, what: str, log: list[str] | None = None):
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.what = what
        self.log = log or []


def _declare(lib: ctypes.CDLL) -> None:
    sig = {
        "libbpf_major_version": (ctypes.c_uint32, []),
        "libbpf_minor_version": (ctypes.c_uint32, []),
        "libbpf_set_print": (c_void_p, [PrintFn]),
        "libbpf_num_possible_cpus": (c_int, []),
        "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
        "bpf_object__load": (c_int, [c_void_p]),
        "bpf_object__close": (None, [c_void_p]),
        "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
        "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
        "bpf_map__name": (c_char_p, [c_void_p]),
        "bpf_map__fd": (c_int, [c_void_p]),
        "bpf_map__reuse_fd": (c_int, [c_void_p, c_int]),
        "bpf_map__set_max_entries": (c_int, [c_void_p, ctypes.c_uint32]),
        "bpf_program__name": (c_char_p, [c_void_p]),
        "bpf_program__section_name": (c_char_p, [c_void_p]),
        "bpf_program__fd": (c_int, [c_void_p]),
        "bpf_program__set_autoload": (c_int, [c_void_p, ctypes.c_bool]),
        "bpf_program__attach": (c_void_p, [c_void_p]),
        "bpf_program__attach_cgroup": (c_void_p, [c_void_p, c_int]),
        "bpf_link__destroy": (c_int, [c_void_p]),
        "bpf_link__fd": (c_int, [c_void_p]),
        "bpf_iter_create": (c_int, [c_int]),
        "bpf_link__open": (c_void_p, [c_char_p]),
        "bpf_link__pin": (c_int, [c_void_p, c_char_p]),
        "bpf_link__update_program": (c_int, [c_void_p, c_void_p]),
        "bpf_obj_get": (c_int, [c_char_p]),
        "bpf_obj_pin": (c_int, [c_int, c_char_p]),
        "ring_buffer__new": (c_void_p, [c_int, RingbufSampleFn, c_void_p, c_void_p]),
        "ring_buffer__poll": (c_int, [c_void_p, c_int]),
        "ring_buffer__consume": (c_int, [c_void_p]),
        "ring_buffer__epoll_fd": (c_int, [c_void_p]),
        "ring_buffer__free": (None, [c_void_p]),
        "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
        "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
        "bpf_map_lookup_and_delete_elem": (c_int, [c_int, c_void_p, c_void_p]),
        "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
        "bpf_map_get_fd_by_id": (c_int, [ctypes.c_uint32]),
        "bpf_map_create": (c_int, [ctypes.c_int, c_char_p, ctypes.c_uint32, ctypes.c_uint32,
                                   ctypes.c_uint32, c_void_p]),
        "bpf_map_update_batch": (c_int, [c_int, c_void_p, c_void_p,
                                         ctypes.POINTER(ctypes.c_uint32), c_void_p]),
        "bpf_map_delete_batch": (c_int, [c_int, c_void_p, ctypes.POINTER(ctypes.c_uint32),
                                         c_void_p]),
        "btf__parse": (c_void_p, [c_char_p, c_void_p]),
        "btf__free": (None, [c_void_p]),
        "btf__type_by_id": (c_void_p, [c_void_p, ctypes.c_uint32]),
        "btf__name_by_offset": (c_char_p, [c_void_p, ctypes.c_uint32]),
        "btf__find_by_name_kind": (ctypes.c_int32, [c_void_p, c_char_p, ctypes.c_uint32]),
        "btf__resolve_size": (ctypes.c_int64, [c_void_p, ctypes.c_uint32]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


@PrintFn
def _print_callback(level, fmt, va_list):  # pragma: no cover - called from C
    # libbpf hands a printf format and a va_list; libc's vsnprintf renders it.
    # The verifier log arrives as one large string, so the buffer is generous.
    if level > LIBBPF_INFO:
        return 0
    buf = ctypes.create_string_buffer(1 << 18)
    _libc.vsnprintf(buf, len(buf), fmt, va_list)
    _log_lines.extend(line for line in buf.value.decode(errors="replace").splitlines() if line)
    del _log_lines[:-400]
    return 0


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]


def lib() -> ctypes.CDLL:
    """libbpf.so.1, loaded once, with its print callback captured."""
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                handle = ctypes.CDLL("libbpf.so.1", use_errno=True)
            except OSError as exc:
                raise LibbpfError(errno.ENOENT, f"cannot load libbpf.so.1 ({exc})") from None
            _declare(handle)
            if handle.libbpf_major_version() < 1:
                raise LibbpfError(errno.ENOTSUP, "libbpf >= 1.0 is required")
            handle.libbpf_set_print(_print_callback)
            _lib = handle
        return _lib


def version() -> str:
    handle = lib()
    return f"{handle.libbpf_major_version()}.{handle.libbpf_minor_version()}"


def possible_cpus() -> int:
    """CPUs a per-CPU map holds values for (not just the online ones)."""
    return check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def take_log() -> list[str]:
    """libbpf's warning and info lines since the last call."""
    lines = list(_log_lines)
    _log_lines.clear()
    return lines


def check(ret: int, what: str) -> int:
    """libbpf 1.x returns -errno on failure."""
    if ret < 0:
        raise LibbpfError(-ret, what, take_log())
    return ret


def check_ptr(ptr: int | None, what: str) -> int:
    """libbpf 1.x returns NULL with errno set on failure."""
    if not ptr:
        err = ctypes.get_errno() or errno.EINVAL
        raise LibbpfError(err, what, take_log())
    return ptr


def map_update(fd: int, key: ctypes.Structure | ctypes._SimpleCData,
               value: ctypes.Structure | ctypes._SimpleCData | ctypes.Array,
               flags: int = BPF_ANY) -> None:
    ret = lib().bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), flags)
    if ret < 0:
        raise LibbpfError(-ret, "bpf_map_update_elem")


def map_lookup(fd: int, key, value) -> bool:
    """Fills value and returns True, or returns False when the key is absent."""
    ret = lib().bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value))
    if ret == -errno.ENOENT:
        return False
    if ret < 0:
        raise LibbpfError(-ret, "bpf_map_lookup_elem")
    return True


def map_delete(fd: int, key) -> bool:
    ret = lib().bpf_map_delete_elem(fd, ctypes.byref(key))
    if ret == -errno.ENOENT:
        return False
    if ret < 0:
        raise LibbpfError(-ret, "bpf_map_delete_elem")
    return True


def map_take_packed(fd: int, key: bytes, value_size: int) -> bytes | None:
    """Look an entry up and delete it in one call (a hash map: whoever takes
    it has it, nothing the kernel adds meanwhile is counted twice); its value
    bytes, or None when the key is absent."""
    value = ctypes.create_string_buffer(value_size)
    ret = lib().bpf_map_lookup_and_delete_elem(fd, key, value)
    if ret == -errno.ENOENT:
        return None
    if ret < 0:
        raise LibbpfError(-ret, "bpf_map_lookup_and_delete_elem")
    return value.raw


class MapCreateOpts(ctypes.Structure):
    """struct bpf_map_create_opts up to map_ifindex (libbpf takes a shorter
    struct from an older caller: sz says how much of it there is)."""
    _fields_ = [("sz", ctypes.c_size_t), ("btf_fd", ctypes.c_uint32),
                ("btf_key_type_id", ctypes.c_uint32), ("btf_value_type_id", ctypes.c_uint32),
                ("btf_vmlinux_value_type_id", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("map_extra", ctypes.c_uint64),
                ("numa_node", ctypes.c_uint32), ("map_ifindex", ctypes.c_uint32)]


BPF_MAP_TYPE_HASH = 1
BPF_F_NO_PREALLOC = 1


def map_create(map_type: int, name: str, key_size: int, value_size: int, max_entries: int,
               flags: int = 0) -> int:
    """A new map's fd (the caller closes it)."""
    opts = MapCreateOpts(sz=ctypes.sizeof(MapCreateOpts), map_flags=flags)
    return check(lib().bpf_map_create(map_type, name.encode(), key_size, value_size,
                                      max_entries, ctypes.byref(opts)), f"create map {name}")


def map_fd_by_id(map_id: int) -> int:
    """An fd of the map with this id (the caller closes it)."""
    return check(lib().bpf_map_get_fd_by_id(map_id), f"open map id {map_id}")


def map_update_packed(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    """map_update with key and value already in their C layout."""
    ret = lib().bpf_map_update_elem(fd, key, value, flags)
    if ret < 0:
        raise LibbpfError(-ret, "bpf_map_update_elem")


def map_delete_packed(fd: int, key: bytes) -> bool:
    """map_delete with the key already in its C layout; False when absent."""
    ret = lib().bpf_map_delete_elem(fd, key)
    if ret == -errno.ENOENT:
        return False
    if ret < 0:
        raise LibbpfError(-ret, "bpf_map_delete_elem")
    return True


class BatchError(LibbpfError):
    """A batched map operation stopped; `done` entries were processed first."""

    def __init__(self, err: int, what: str, done: int):
        super().__init__(err, what)
        self.done = done

    @property
    def unsupported(self) -> bool:
        """The kernel has no batch operation for this map (nothing was done)."""
        return self.done == 0 and self.errno in BATCH_UNSUPPORTED


def map_update_batch(fd: int, keys: bytes, values: bytes, count: int) -> None:
    """Write count entries, keys and values packed back to back, in one bpf()
    call (BPF_MAP_UPDATE_BATCH) instead of count calls."""
    done = ctypes.c_uint32(count)
    ret = lib().bpf_map_update_batch(fd, keys, values, ctypes.byref(done), None)
    if ret < 0:
        raise BatchError(-ret, "bpf_map_update_batch", done.value)


def map_delete_batch(fd: int, keys: bytes, count: int) -> None:
    """Delete count entries, keys packed back to back, in one bpf() call."""
    done = ctypes.c_uint32(count)
    ret = lib().bpf_map_delete_batch(fd, keys, ctypes.byref(done), None)
    if ret < 0:
        raise BatchError(-ret, "bpf_map_delete_batch", done.value)


def map_keys(fd: int, key_type: type) -> list:
    """Every key of a map (snapshot; entries may change meanwhile)."""
    keys = []
    cur, nxt = None, key_type()
    handle = lib()
    while True:
        ret = handle.bpf_map_get_next_key(fd, ctypes.byref(cur) if cur is not None else None,
                                          ctypes.byref(nxt))
        if ret == -errno.ENOENT:
            return keys
        if ret < 0:
            raise LibbpfError(-ret, "bpf_map_get_next_key")
        keys.append(nxt)
        cur, nxt = nxt, key_type()


class RingBuffer:
    """ring_buffer__new over one map fd; each record is handed to on_record as bytes."""

    def __init__(self, map_fd: int, on_record: Callable[[bytes], None]):
        self._on_record = on_record
        # Keep the ctypes callback alive as long as libbpf may call it.
        self._callback = RingbufSampleFn(_sampler(on_record))
        self._ptr = check_ptr(lib().ring_buffer__new(map_fd, self._callback, None, None),
                              "ring_buffer__new")

    def poll(self, timeout_ms: int) -> int:
        ret = lib().ring_buffer__poll(self._ptr, timeout_ms)
        if ret == -errno.EINTR:
            return 0
        return check(ret, "ring_buffer__poll")

    def consume(self) -> int:
        return check(lib().ring_buffer__consume(self._ptr), "ring_buffer__consume")

    def epoll_fd(self) -> int:
        """Readable when records wait: lets the agent wait on the ring and
        its control socket at once."""
        return lib().ring_buffer__epoll_fd(self._ptr)

    def close(self) -> None:
        if self._ptr:
            lib().ring_buffer__free(self._ptr)
            self._ptr = None


def _sampler(on_record: Callable[[bytes], None]) -> Callable[[int, int, int], int]:
    """The ring's per-record callback: libbpf calls it once per record, from
    C, so it does only the copy and the hand-over (names bound once, no
    attribute lookups: it runs 100,000 times a second under a storm)."""
    string_at = ctypes.string_at

    def sample(_ctx, data, size):
        on_record(string_at(data, size))
        return 0
    return sample
