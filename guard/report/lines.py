# SPDX-License-Identifier: Apache-2.0
"""Event lines read back: files, stdin, a file that keeps growing.

JSON lines (docs/events.md) are cut into lines of at most MAX_LINE bytes
without ever holding more than that of one line; a line that is not a JSON
object is a Line without an event (its problem in words and the first bytes
of it, made safe for a terminal), never an exception. `follow` keeps
reading files that grow, are truncated or are replaced (log rotation), like
`tail -F`. The text view (text.py), `policy suggest` and `policy test` read
through here.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Iterable, Iterator, Sequence

import orjson

__all__ = ["MAX_LINE", "Line", "SourceError", "Splitter", "events_of", "follow",
           "open_sources", "read_sources", "read_stream"]

#: The longest line read as an event (an agent's ready event with many
#: cgroups is the largest the agent writes); a longer one is malformed.
MAX_LINE = 4 << 20
#: How much of a malformed line is kept to show.
EXCERPT_CHARS = 60
READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class Line:
    """One line of an event stream: its event, or why it is not one."""
    source: str
    number: int
    event: dict | None
    problem: str | None = None
    excerpt: str = ""

    @property
    def where(self) -> str:
        return f"{self.source}:{self.number}"


class SourceError(Exception):
    """An input that cannot be opened; the message names it."""


def _parse(source: str, number: int, raw: bytes) -> Line:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Line(source, number, None, "not JSON", _excerpt(raw))
    if not isinstance(value, dict):
        return Line(source, number, None, f"not a JSON object (a {_json_type(value)})",
                    _excerpt(raw))
    return Line(source, number, value)


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), "value")


def _excerpt(raw: bytes) -> str:
    """The start of a line, with anything but printable ASCII escaped."""
    text = raw[:EXCERPT_CHARS].decode("ascii", "backslashreplace")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text + ("..." if len(raw) > EXCERPT_CHARS else "")


class Splitter:
    """Bytes in, Lines out: complete lines are parsed, a line longer than
    MAX_LINE is skipped (counted, its first bytes kept for the excerpt)."""

    def __init__(self, source: str):
        self.source = source
        self.number = 0
        self._pending = bytearray()
        self._skipped = 0            # bytes of an over-long line skipped so far
        self._head = b""             # its first bytes

    def feed(self, data: bytes) -> list[Line]:
        lines: list[Line] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._complete(data[start:end], lines)
            start = end + 1
        rest = data[start:]
        if self._skipped:
            self._skipped += len(rest)
        else:
            self._pending += rest
            if len(self._pending) > MAX_LINE:
                self._head = bytes(self._pending[:EXCERPT_CHARS * 4])
                self._skipped = len(self._pending)
                self._pending.clear()
        return lines

    def finish(self) -> list[Line]:
        """The last line when the input ends without a newline."""
        lines: list[Line] = []
        if self._skipped or self._pending:
            self._complete(b"", lines)
        return lines

    def reset(self) -> None:
        self.number = 0
        self._pending.clear()
        self._skipped, self._head = 0, b""

    def _complete(self, piece: bytes, lines: list[Line]) -> None:
        self.number += 1
        if self._skipped:
            size, head = self._skipped + len(piece), self._head
            self._skipped, self._head = 0, b""
            lines.append(Line(self.source, self.number, None,
                              f"a line of {size} bytes (longer than {MAX_LINE})", _excerpt(head)))
            return
        if self._pending:
            piece = bytes(self._pending) + piece
            self._pending.clear()
        if len(piece) > MAX_LINE:
            lines.append(Line(self.source, self.number, None,
                              f"a line of {len(piece)} bytes (longer than {MAX_LINE})",
                              _excerpt(piece)))
            return
        piece = piece[:-1] if piece.endswith(b"\r") else piece
        if piece.strip():
            lines.append(_parse(self.source, self.number, piece))


def read_stream(stream: IO[bytes], source: str) -> Iterator[Line]:
    """Every line of a binary stream, as it arrives (a pipe from a running
    agent is shown line by line, not in 64 KiB blocks)."""
    splitter = Splitter(source)
    read = getattr(stream, "read1", stream.read)
    while data := read(READ_CHUNK):
        yield from splitter.feed(bytes(data))
    yield from splitter.finish()


def open_sources(paths: Sequence[str]) -> list[tuple[str, IO[bytes]]]:
    """(name, binary stream) for each path, `-` being stdin; SourceError
    naming the first that cannot be opened."""
    opened: list[tuple[str, IO[bytes]]] = []
    for path in paths:
        if path == "-":
            opened.append(("<stdin>", sys.stdin.buffer))
            continue
        try:
            opened.append((path, open(path, "rb")))
        except OSError as exc:
            for _name, stream in opened:
                if stream is not sys.stdin.buffer:
                    stream.close()
            raise SourceError(f"{path}: {exc.strerror or exc}") from None
    return opened


def read_sources(sources: Iterable[tuple[str, IO[bytes]]]) -> Iterator[Line]:
    """The lines of each opened source in turn (each closed when read)."""
    for name, stream in sources:
        try:
            yield from read_stream(stream, name)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()


def events_of(lines: Iterable[Line], malformed: list[Line]) -> Iterator[tuple[str, dict]]:
    """(where, event) of each line that is an event; the others are
    appended to malformed."""
    for line in lines:
        if line.event is None:
            malformed.append(line)
        else:
            yield line.where, line.event


class _Tail:
    """One followed file: reads what was added, notices truncation and a
    new file at the path (rotation), and waits for a path that is gone."""

    def __init__(self, path: str):
        self.path = path
        self.splitter = Splitter(path)
        self.fd: int | None = None
        self.identity: tuple[int, int] | None = None
        self.position = 0
        self._open()

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        status = os.fstat(fd)
        self.fd, self.identity, self.position = fd, (status.st_dev, status.st_ino), 0
        self.splitter.reset()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def poll(self, budget: int = 1 << 20) -> list[Line]:
        if self.fd is None:
            self._open()
            if self.fd is None:
                return []
        lines: list[Line] = []
        read = 0
        while read < budget and (data := os.read(self.fd, READ_CHUNK)):
            read += len(data)
            self.position += len(data)
            lines += self.splitter.feed(data)
        if read:
            return lines
        try:
            status = os.stat(self.path)
        except OSError:
            return lines                          # moved away, not yet replaced
        if (status.st_dev, status.st_ino) != self.identity:
            lines += self.splitter.finish()       # the old file is read to its end
            self.close()
            self._open()
        elif status.st_size < self.position:     # truncated: read it again from the start
            os.lseek(self.fd, 0, os.SEEK_SET)
            self.position = 0
            self.splitter.reset()
        return lines


def follow(paths: Sequence[str], stop: threading.Event | None = None,
           poll_s: float = 0.2) -> Iterator[Line]:
    """The lines of files that keep growing, from their start, until stop
    is set (or forever: the caller ends it with SIGINT). Paths are checked
    every poll_s seconds when there is nothing new."""
    tails = [_Tail(path) for path in paths]
    missing = [tail.path for tail in tails if tail.fd is None]
    if missing:
        for tail in tails:
            tail.close()
        raise SourceError(f"{missing[0]}: No such file or directory")
    wait = stop.wait if stop is not None else time.sleep
    try:
        while stop is None or not stop.is_set():
            got = False
            for tail in tails:
                for line in tail.poll():
                    got = True
                    yield line
            if not got:
                wait(poll_s)
    finally:
        for tail in tails:
            tail.close()
