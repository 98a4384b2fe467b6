# SPDX-License-Identifier: Apache-2.0
"""A container's files, as the process sees them: read inside its own root,
never outside it, bounded in bytes (a longer file comes back marked
truncated, so the classifiers can fail closed). Also the process's own
executable, for what its bytes say (a bounded window, the strings in its
read-only data) whatever it is called."""
from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import os
import posixpath
import stat
import struct
from dataclasses import dataclass

from guard.detect.classify import FileContent

#: Bytes of a file the classifiers get; a longer file comes back marked
#: truncated, and they report it unread (ssh_config, miner configs).
CONFIG_READ_MAX = 1 << 20
#: Names of a directory listed; one more is returned when there are more,
#: which tells the caller the listing was cut (an Include glob fails closed).
DIR_LIST_MAX = 4096
#: Bytes of /proc/PID/environ searched for HOME (an environment is rarely
#: larger; past this the passwd entry's home stands).
ENVIRON_READ_MAX = 256 * 1024
#: Bytes of an executable's read-only data read for its strings, and of its
#: beginning (ELF and program headers, a packer's mark).
EXE_STRINGS_MAX = 4 << 20
EXE_HEAD = 4096


_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(os.uname().machine)
_RESOLVE_IN_ROOT = 0x10
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class ProcessFiles:
    """Reads files inside a process's root (its container), the way that
    process would resolve them: relative to its working directory, with
    symlinks resolved inside its root (openat2 RESOLVE_IN_ROOT), never
    outside it. Nothing is written, nothing is followed into the host."""

    def __init__(self, pid: int):
        self.pid = pid
        self.root = f"/proc/{pid}/root"

    @functools.cached_property
    def cwd(self) -> str:
        """The working directory as the process names it. The kernel shows it
        relative to the reader's root, so a chrooted process's cwd carries
        its root's path in front."""
        try:
            cwd = os.readlink(f"/proc/{self.pid}/cwd")
            root = os.readlink(self.root)
        except OSError:
            return "/"
        if root != "/" and (cwd == root or cwd.startswith(root + "/")):
            cwd = cwd[len(root):] or "/"
        return cwd if cwd.startswith("/") else "/"

    @property
    def user(self) -> str:
        return self._passwd_entry[0]

    @property
    def home(self) -> str:
        return self._passwd_entry[1]

    @functools.cached_property
    def uid(self) -> int:
        try:
            with open(f"/proc/{self.pid}/status", "rb") as fh:
                for line in fh:
                    if line.startswith(b"Uid:"):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return 0

    @functools.cached_property
    def env_home(self) -> str:
        """The home a program that asks $HOME finds (libuv's uv_os_homedir,
        which XMRig uses; most programs): HOME from the process's own
        environment, else its passwd entry's home."""
        try:
            with open(f"/proc/{self.pid}/environ", "rb") as fh:
                environ = fh.read(ENVIRON_READ_MAX)
        except OSError:
            environ = b""
        for entry in environ.split(b"\0"):
            if entry.startswith(b"HOME="):
                home = entry[5:].decode("utf-8", "replace")
                if home.startswith("/"):
                    return home
        return self.home

    @functools.cached_property
    def _passwd_entry(self) -> tuple[str, str]:
        text = self.read_file("/etc/passwd") or b""
        for line in text.decode("utf-8", "replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 6 and fields[2] == str(self.uid):
                return fields[0], fields[5] or "/"
        return ("root", "/root") if self.uid == 0 else (str(self.uid), "/")

    def _absolute(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            path = self.env_home + path[1:]
        return posixpath.normpath(posixpath.join(self.cwd, path))

    def _open(self, path: str, flags: int) -> int:
        root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY)
        try:
            if _SYS_OPENAT2 is not None:
                how = _OpenHow(flags=flags | os.O_CLOEXEC, mode=0, resolve=_RESOLVE_IN_ROOT)
                fd = _libc.syscall(_SYS_OPENAT2, root_fd, path.lstrip("/").encode() or b".",
                                   ctypes.byref(how), ctypes.sizeof(how))
                if fd >= 0:
                    return fd
                err = ctypes.get_errno()
                if err != errno.ENOSYS:
                    raise OSError(err, os.strerror(err), path)
            # no openat2 (Linux < 5.6): no symlink may be followed at all
            return os.open(path.lstrip("/") or ".", flags | os.O_NOFOLLOW, dir_fd=root_fd)
        finally:
            os.close(root_fd)

    def read_file(self, path: str) -> bytes | None:
        """The file's first CONFIG_READ_MAX bytes; a FileContent with
        truncated=True when there was more. None when it cannot be read
        or is not a regular file. A relative path is the process's working
        directory's; `~/...` is below its home as $HOME names it (env_home)."""
        try:
            fd = self._open(self._absolute(path), os.O_RDONLY | os.O_NONBLOCK)
        except (OSError, ValueError):
            return None
        try:
            with os.fdopen(fd, "rb") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                if stat.S_ISCHR(mode) and self._absolute(path) == "/dev/null":
                    return b""          # ssh -F /dev/null: an empty config
                if not stat.S_ISREG(mode):
                    return None         # never block on a FIFO or read a device
                data = fh.read(CONFIG_READ_MAX + 1)
                if len(data) > CONFIG_READ_MAX:
                    return FileContent(data[:CONFIG_READ_MAX], truncated=True)
                return data
        except OSError:
            return None

    def list_dir(self, path: str) -> list[str] | None:
        """The directory's names, sorted; DIR_LIST_MAX + 1 of them (not all,
        not sorted) when it holds more, so a huge directory costs no more
        than that to look at."""
        try:
            fd = self._open(self._absolute(path), os.O_RDONLY | os.O_DIRECTORY)
        except (OSError, ValueError):
            return None
        try:
            with os.scandir(fd) as entries:
                names = [entry.name for entry in itertools.islice(entries, DIR_LIST_MAX + 1)]
        except OSError:
            return None
        finally:
            os.close(fd)
        return sorted(names) if len(names) <= DIR_LIST_MAX else names




    def executable(self) -> "Executable | None":
        """The file the process runs (/proc/PID/exe, also once deleted or
        replaced), named by what does not change with its name: device,
        inode, mtime and size. None when the process is gone."""
        path = f"/proc/{self.pid}/exe"
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return Executable((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size), path)


@dataclass(frozen=True)
class Executable:
    """A process's executable, for miner_binary.classify_binary: identity
    keys its cached verdict, strings() reads it only on a miss."""
    identity: tuple[int, int, int, int]     # st_dev, st_ino, st_mtime_ns, st_size
    path: str

    def strings(self, limit: int = EXE_STRINGS_MAX) -> bytes | None:
        """Its first EXE_HEAD bytes, then where a program keeps its strings:
        an ELF file's .rodata section, else its read-only, non-executable
        loadable segments, else the bytes after the head; `limit` bytes of
        them at most. None when it cannot be read."""
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(EXE_HEAD)
                spans = _string_spans(fh, head) or [(len(head), limit)]
                parts = [head]
                left = limit
                for offset, size in spans:
                    if left <= 0:
                        break
                    fh.seek(offset)
                    chunk = fh.read(min(size, left))
                    parts.append(chunk)
                    left -= len(chunk)
                return b"".join(parts)
        except (OSError, ValueError):
            return None


_PT_LOAD, _PF_X, _PF_R = 1, 1, 4


def _string_spans(fh, head: bytes) -> list[tuple[int, int]]:
    """(offset, size) of an ELF file's .rodata, else of its readable,
    non-executable PT_LOAD segments; [] when head is not ELF or its tables
    are not where they say (a packed or damaged file: the caller reads on
    from the head)."""
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return []
    wide = head[4] == 2
    end = "<" if head[5] == 1 else ">"
    try:
        if wide:
            phoff, shoff = struct.unpack_from(end + "QQ", head, 32)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(end + "HHHHH", head, 54)
        else:
            phoff, shoff = struct.unpack_from(end + "II", head, 28)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(end + "HHHHH", head, 42)
        rodata = _rodata_section(fh, end, wide, shoff, shentsize, shnum, shstrndx)
        if rodata is not None:
            return [rodata]
        return _readonly_segments(fh, end, wide, phoff, phentsize, phnum)
    except (struct.error, OSError, ValueError):
        return []


def _rodata_section(fh, end: str, wide: bool, shoff: int, shentsize: int, shnum: int,
                    shstrndx: int) -> tuple[int, int] | None:
    if not shoff or not 0 < shnum <= 512 or shstrndx >= shnum or \
            shentsize < (64 if wide else 40):
        return None
    fh.seek(shoff)
    table = fh.read(shentsize * shnum)
    layout = end + ("IIQQQQ" if wide else "IIIIII")

    def section(index: int) -> tuple[int, int, int, int]:
        name, kind, _flags, _addr, offset, size = struct.unpack_from(layout, table,
                                                                     index * shentsize)
        return name, kind, offset, size
    _n, _k, names_off, names_size = section(shstrndx)
    fh.seek(names_off)
    names = fh.read(min(names_size, 64 * 1024))
    for index in range(shnum):
        name, kind, offset, size = section(index)
        if names[name:name + 8] == b".rodata\0" and kind == 1:     # SHT_PROGBITS
            return offset, size
    return None


def _readonly_segments(fh, end: str, wide: bool, phoff: int, phentsize: int,
                       phnum: int) -> list[tuple[int, int]]:
    if not phoff or not 0 < phnum <= 128 or phentsize < (56 if wide else 32):
        return []
    fh.seek(phoff)
    table = fh.read(phentsize * phnum)
    spans = []
    for index in range(phnum):
        if wide:
            kind, flags, offset, _v, _p, size = struct.unpack_from(end + "IIQQQQ", table,
                                                                   index * phentsize)
        else:
            kind, offset, _v, _p, size, _m, flags = struct.unpack_from(end + "IIIIIII", table,
                                                                       index * phentsize)
        if kind == _PT_LOAD and flags & _PF_R and not flags & _PF_X:
            spans.append((offset, size))
    return spans
