# SPDX-License-Identifier: Apache-2.0
"""The agent's control socket: `policy reload` and `status` talk to it.

A unix stream socket, one JSON request line in, one JSON response line out,
then the connection closes. Only root may use it: the socket file is 0600 in
a 0700 directory, and the agent also checks the caller's credentials
(SO_PEERCRED), so a socket exposed by a careless mount still refuses others.

A request may come with open files (SCM_RIGHTS, at most MAX_FILES): the
handler gets their descriptors beside the request and they are closed once
it has answered. `policy reload FILE` passes the file this way, so the
agent reads what the caller opened, wherever the agent's mount namespace
puts that path (or does not have it at all).
"""
from __future__ import annotations

import array
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

# the client side, light enough for the CLI to start fast (re-exported here)
from .client import DEFAULT_SOCKET, REQUEST_LIMIT, ControlError, read_line, request  # noqa: F401

CLIENT_TIMEOUT_S = 5.0
MAX_FILES = 4                 # descriptors taken from one request; more are closed
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(raw)


class ControlServer:
    """Listens on path; handle() answers one ready connection with a handler."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise ControlError(f"{self.path} exists and is not a socket")
            if _answers(self.path):
                raise ControlError(f"another agent is already listening on {self.path}")
            self.path.unlink()  # left by an agent that died
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        self._sock.listen(16)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def handle(self, handler: Callable[[dict[str, Any], Sequence[int]], dict[str, Any]]
               ) -> None:
        """Answer every pending connection; never lets a client break the agent."""
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return
            with conn:
                conn.settimeout(CLIENT_TIMEOUT_S)
                try:
                    _serve_one(conn, handler)
                except (OSError, ValueError):
                    continue  # a client that hung up or sent garbage

    def close(self) -> None:
        self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _serve_one(conn: socket.socket, handler) -> None:
    _pid, uid, _gid = peer_credentials(conn)
    if uid != 0:
        _send(conn, {"ok": False, "error": "permission denied: only root may control the agent"})
        return
    files: list[int] = []
    try:
        try:
            request = orjson.loads(_read_request(conn, files))
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                raise ValueError("expected a JSON object with an 'op'")
        except ValueError as exc:
            _send(conn, {"ok": False, "error": f"bad request: {exc}"})
            return
        _send(conn, handler(request, tuple(files)))
    finally:
        for fd in files:
            os.close(fd)


_FILES_SPACE = socket.CMSG_SPACE(MAX_FILES * 4)


def _read_request(conn: socket.socket, files: list[int]) -> bytes:
    """read_line(), keeping the descriptors that came with the bytes (in
    files, which the caller closes, even when this raises)."""
    def receive(conn: socket.socket) -> bytes:
        chunk, ancillary, flags, _address = conn.recvmsg(65536, _FILES_SPACE,
                                                         socket.MSG_CMSG_CLOEXEC)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                files.extend(array.array("i", data[:len(data) - len(data) % 4]))
        if flags & socket.MSG_CTRUNC:
            raise ValueError(f"more than {MAX_FILES} files")
        return chunk
    return read_line(conn, receive)


def _send(conn: socket.socket, response: dict[str, Any]) -> None:
    conn.sendall(orjson.dumps(response) + b"\n")


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
