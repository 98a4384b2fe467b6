# SPDX-License-Identifier: Apache-2.0
"""A container's files, as the process sees them: read inside its own root,
never outside it, bounded in bytes (a longer file comes back marked
truncated, so the classifiers can fail closed)."""
from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import os
import posixpath
import stat

from guard.detect.classify import FileContent

#: Bytes of a file the classifiers get; a longer file comes back marked
#: truncated, and they report it unread (ssh_config, miner configs).
CONFIG_READ_MAX = 1 << 20
#: Names of a directory listed; one more is returned when there are more,
#: which tells the caller the listing was cut (an Include glob fails closed).
DIR_LIST_MAX = 4096


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
    def _passwd_entry(self) -> tuple[str, str]:
        text = self.read_file("/etc/passwd") or b""
        for line in text.decode("utf-8", "replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 6 and fields[2] == str(self.uid):
                return fields[0], fields[5] or "/"
        return ("root", "/root") if self.uid == 0 else (str(self.uid), "/")

    def _absolute(self, path: str) -> str:
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
        or is not a regular file."""
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


