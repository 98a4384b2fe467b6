# SPDX-License-Identifier: Apache-2.0
"""The control socket's two sides without an agent: the client's own JSON
(against the json module), and files passed with a request (SCM_RIGHTS)
reaching the handler and closed after it."""
from __future__ import annotations

import json
import os
import threading

import pytest
from hypothesis import given, settings, strategies as st

from guard.agent import reloads
from guard.control.client import ControlError, decode, encode, read_file, request
from guard.control.server import MAX_FILES, ControlServer

from .test_control_server import open_fds, wait_closed

# --- JSON ---------------------------------------------------------------------------

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(values)
def test_encode_is_json(value):
    assert json.loads(encode(value)) == value


@settings(max_examples=300, deadline=None)
@given(values, st.booleans(), st.sampled_from([None, 1]))
def test_decode_reads_json(value, ascii_only, indent):
    assert decode(json.dumps(value, ensure_ascii=ascii_only, indent=indent)) == value


@pytest.mark.parametrize("text", ["", "{", '{"a" 1}', '{"a": 1,}', "[1 2]", '"\\x"', '"\\u12"',
                                  "01", "1.", "-", "tru", '{"a": 1} x', '"open', "{1: 2}"])
def test_decode_refuses_what_is_not_json(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        decode(text)


def test_a_policy_file_as_json_text(tmp_path):
    text = "".join(chr(c) for c in range(0x20)) + 'a "b" \\ é \u2028 😀\n' * 1000
    assert json.loads(encode({"text": text})) == {"text": text}


# --- files passed with a request ----------------------------------------------------------

class Served:
    """A ControlServer answering in a thread; the handler records what it got."""

    def __init__(self, path):
        self.server = ControlServer(path)
        self.seen: list[tuple[dict, list[bytes], list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _handler(self, message, files):
        self.seen.append((message, [read_file(fd) for fd in files], list(files)))
        return {"ok": True, "files": len(files)}

    def _loop(self):
        import select
        while not self._stop.is_set():
            if select.select([self.server.fileno()], [], [], 0.05)[0]:
                self.server.handle(self._handler)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="the control socket answers root only")
def test_passed_files_reach_the_handler_and_are_closed(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("kind: EgressPolicy\n" * 100)
    served = Served(tmp_path / "agent.sock")
    try:
        fd = os.open(policy, os.O_RDONLY)
        try:
            before = open_fds()
            response = request(tmp_path / "agent.sock", {"op": "reload"}, fds=(fd,))
            assert response == {"ok": True, "files": 1}
            (message, contents, received), = served.seen
            assert message == {"op": "reload"} and contents == [policy.read_bytes()]
            assert set(received).isdisjoint(before)
            assert wait_closed(set(received), timeout=5.0)   # the agent's copies go once it has answered
            assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # read with pread: the offset is the sender's
            # more files than the agent takes: refused, none kept
            too_many = request(tmp_path / "agent.sock", {"op": "status"},
                               fds=(fd,) * (MAX_FILES + 1))
            assert too_many["ok"] is False and "bad request" in too_many["error"]
            assert wait_closed(open_fds() - before, timeout=5.0)
        finally:
            os.close(fd)
    finally:
        served.close()


def test_the_agent_reads_only_a_regular_file_it_was_given(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_bytes(b"x" * 100_000)
    fd = os.open(policy, os.O_RDONLY)
    read_end, write_end = os.pipe()
    try:
        assert reloads.passed_file(0, (fd,)) == policy.read_bytes()
        for index, files in ((1, (fd,)), (True, (fd,)), ("0", (fd,)), (0, ())):
            with pytest.raises(ValueError, match="no file came with the request"):
                reloads.passed_file(index, files)
        with pytest.raises(ValueError, match="not a regular file"):
            reloads.passed_file(0, (read_end,))   # a pipe could keep it waiting
    finally:
        for each in (fd, read_end, write_end):
            os.close(each)


def test_no_agent_is_a_control_error(tmp_path):
    with pytest.raises(ControlError, match="no agent is listening"):
        request(tmp_path / "none.sock", {"op": "status"})
