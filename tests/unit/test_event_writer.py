# SPDX-License-Identifier: Apache-2.0
"""guard/report/events.py EventWriter: one write per batch into a file; into a pipe,
writes of at most PIPE_BUF cut between lines, so a killed agent never leaves
half a line; every byte arrives even when the stream takes part of a write."""
from __future__ import annotations

import io
import os
import select

import orjson

from guard.report.events import EventWriter


class RecordingFile(io.FileIO):
    """A file object over an fd that records the size of each write(2)."""

    def __init__(self, fd: int):
        super().__init__(fd, "wb", closefd=True)
        self.sizes: list[int] = []

    def write(self, data) -> int:
        self.sizes.append(len(data))
        return super().write(data)


def events(count: int, pad: int = 200) -> list[dict]:
    return [{"ts": i, "kind": "connect", "pad": "x" * pad} for i in range(count)]


def test_lines_wait_for_flush_and_go_to_a_file_in_one_write(tmp_path):
    path = tmp_path / "events.jsonl"
    stream = RecordingFile(os.open(path, os.O_WRONLY | os.O_CREAT))
    writer = EventWriter(stream)
    for event in events(40):
        writer.write(event)
    assert stream.sizes == []                       # nothing before the batch ends
    writer.flush()
    assert len(stream.sizes) == 1
    writer.flush()                                  # nothing new: no write
    assert len(stream.sizes) == 1
    stream.close()
    assert [orjson.loads(line) for line in path.read_bytes().splitlines()] == events(40)


def test_into_a_pipe_each_write_is_whole_lines_of_at_most_pipe_buf():
    read_end, write_end = os.pipe()
    stream = RecordingFile(write_end)
    writer = EventWriter(stream)
    sent = events(60) + [{"ts": 99, "kind": "exec", "pad": "y" * (2 * select.PIPE_BUF)}] \
        + events(5)
    for event in sent:
        writer.write(event)
    received = bytearray()
    writer.flush()
    stream.close()
    with os.fdopen(read_end, "rb") as reader:
        received += reader.read()
    assert [orjson.loads(line) for line in bytes(received).splitlines()] == sent
    long_line = len(orjson.dumps(sent[60])) + 1
    assert len(stream.sizes) > 1
    for size in stream.sizes:
        assert size <= select.PIPE_BUF or size == long_line   # a longer line goes alone
    assert sum(stream.sizes) == len(received)


def test_a_large_batch_goes_out_before_the_flush(tmp_path):
    path = tmp_path / "events.jsonl"
    stream = RecordingFile(os.open(path, os.O_WRONLY | os.O_CREAT))
    writer = EventWriter(stream)
    for event in events(EventWriter.FLUSH_BYTES // 200 + 10):
        writer.write(event)
    assert stream.sizes and stream.sizes[0] >= EventWriter.FLUSH_BYTES
    stream.close()


class Trickle(io.RawIOBase):
    """A raw stream that takes at most 100 bytes per write."""

    def __init__(self):
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        taken = bytes(data[:100])
        self.data += taken
        return len(taken)


def test_every_byte_arrives_when_the_stream_takes_part_of_a_write():
    stream = Trickle()
    writer = EventWriter(stream)
    for event in events(30):
        writer.write(event)
    writer.flush()
    assert [orjson.loads(line) for line in bytes(stream.data).splitlines()] == events(30)
