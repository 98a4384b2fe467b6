# SPDX-License-Identifier: Apache-2.0
"""`egress-guard policy reload` without click: the same output and exit codes
as the click command, and none of the CLI's heavy imports."""
from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from guard.cli.commands import main as click_main
from guard.cli.reload import ExitCode as quick_exit_codes
from guard.cli.reload import main as quick_main
from guard.cli.exitcodes import ExitCode
from tests.conftest import FIXTURES, ROOT

EXAMPLE = str(FIXTURES / "example-policy.yaml")
RELOADED = {"ok": True, "policy": {"name": "example", "source": EXAMPLE, "generation": 3},
            "policies": ["example"], "previous_generation": 2, "switch_ms": 12.5,
            "switched_ns": 123456789, "read_fd": True}
REFUSED = {"ok": False, "error": "invalid policy: the policy in force is unchanged",
           "problems": [f"{EXAMPLE}:9: spec.egress[0].action: invalid action 'explode'"],
           "read_fd": True}
# what an agent from before file passing answers a request without "text"
OLD_AGENT_EMPTY = {"ok": False, "error": "invalid policy: the policy in force is unchanged",
                   "problems": [f"{EXAMPLE}:1: <document>: the policy is empty (expected a "
                                "mapping with apiVersion, kind, metadata and spec)"]}


class StubAgent:
    """Answers every request on a unix socket with a canned response (or
    respond(request) -> response); keeps each request and the contents of
    the files that came with it."""

    def __init__(self, path: str, response: dict | None = None, respond=None):
        self.requests: list[dict] = []
        self.files: list[list[bytes]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(8)
        self._respond = respond or (lambda _request: response)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data, fds = b"", []
                while not data.endswith(b"\n"):
                    chunk, ancillary, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(16))
                    for _level, _kind, raw in ancillary:
                        fds += array.array("i", raw)
                    data += chunk
                contents = []
                for fd in fds:
                    contents.append(os.pread(fd, 1 << 20, 0))
                    os.close(fd)
                request = json.loads(data)
                self.requests.append(request)
                self.files.append(contents)
                conn.sendall(json.dumps(self._respond(request)).encode() + b"\n")

    def close(self):
        self._sock.close()


def quick(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guard", "policy", "reload", *args],
                          capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)


@pytest.mark.parametrize("response", [RELOADED, REFUSED], ids=["reloaded", "refused"])
def test_same_outcome_as_the_click_command(tmp_path, response):
    path = str(tmp_path / "agent.sock")
    agent = StubAgent(path, response)
    try:
        fast = quick(EXAMPLE, "--socket", path)
        result = CliRunner().invoke(click_main, ["policy", "reload", EXAMPLE, "--socket", path])
    finally:
        agent.close()
    assert fast.returncode == result.exit_code
    assert fast.stdout == result.stdout and fast.stderr == result.stderr
    # one request each: the file passed open, not its text
    assert agent.requests == [{"op": "reload", "policy": {"fd": 0, "source": EXAMPLE}}] * 2
    assert agent.files == [[open(EXAMPLE, "rb").read()]] * 2
    if response is RELOADED:
        assert fast.stdout == ("reloaded: policy 'example' is generation 3 (was 2); "
                               "switched in 12.5 ms\n")
    else:
        assert fast.returncode == ExitCode.FAILURE
        assert fast.stderr.splitlines() == REFUSED["problems"] + [
            "egress-guard: error: invalid policy: the policy in force is unchanged"]


def text_request(path: str, source: str) -> dict:
    return {"op": "reload", "policy": {"text": open(path).read(), "source": source}}


def test_a_relative_path_is_passed_open_and_named_as_given(tmp_path):
    (tmp_path / "p.yaml").write_bytes(open(EXAMPLE, "rb").read())
    agent = StubAgent(str(tmp_path / "agent.sock"), {**RELOADED, "policy": {
        **RELOADED["policy"], "source": "p.yaml"}})
    try:
        result = quick("p.yaml", "--socket", "agent.sock", cwd=tmp_path)
    finally:
        agent.close()
    assert result.returncode == ExitCode.OK, result.stderr
    assert agent.requests == [{"op": "reload", "policy": {"fd": 0, "source": "p.yaml"}}]
    assert agent.files == [[open(EXAMPLE, "rb").read()]]


def test_an_older_agent_gets_the_text(tmp_path):
    """An agent from before file passing reads no file (and says nothing of
    it): the CLI sends the text, as it used to."""
    old = {key: value for key, value in RELOADED.items() if key not in ("read_fd", "switched_ns")}
    agent = StubAgent(str(tmp_path / "agent.sock"), respond=lambda request: (
        OLD_AGENT_EMPTY if "fd" in request["policy"] else old))
    try:
        result = quick(EXAMPLE, "--socket", str(tmp_path / "agent.sock"))
    finally:
        agent.close()
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stdout == "reloaded: policy 'example' is generation 3 (was 2); switched in 12.5 ms\n"
    assert result.stderr == ""
    assert agent.requests == [{"op": "reload", "policy": {"fd": 0, "source": EXAMPLE}},
                              text_request(EXAMPLE, EXAMPLE)]
    assert agent.files == [[open(EXAMPLE, "rb").read()], []]


def test_a_file_the_agent_cannot_read_is_sent_as_text(tmp_path):
    unreadable = {"ok": False, "read_fd": False,
                  "error": f"{EXAMPLE}: the agent cannot read the file passed to it: denied"}
    agent = StubAgent(str(tmp_path / "agent.sock"), respond=lambda request: (
        unreadable if "fd" in request["policy"] else REFUSED))
    try:
        result = quick(EXAMPLE, "--socket", str(tmp_path / "agent.sock"))
    finally:
        agent.close()
    # the answer to the text is the one reported: problems with file, line and field
    assert result.returncode == ExitCode.FAILURE
    assert result.stderr.splitlines() == REFUSED["problems"] + [
        "egress-guard: error: invalid policy: the policy in force is unchanged"]
    assert [list(request["policy"]) for request in agent.requests] == [["fd", "source"],
                                                                      ["text", "source"]]


def test_a_refused_caller_is_not_asked_twice(tmp_path):
    refused = {"ok": False, "error": "permission denied: only root may control the agent"}
    agent = StubAgent(str(tmp_path / "agent.sock"), refused)
    try:
        result = quick(EXAMPLE, "--socket", str(tmp_path / "agent.sock"))
    finally:
        agent.close()
    assert result.returncode == ExitCode.PERMISSION
    assert result.stderr == f"egress-guard: error: {refused['error']}\n"
    assert len(agent.requests) == 1


def test_a_pipe_is_sent_as_text(tmp_path):
    """Not a regular file (here bash's <(...)): the agent is never handed
    something it could wait on; the CLI reads it and sends the text."""
    agent = StubAgent(str(tmp_path / "agent.sock"), RELOADED)
    try:
        result = subprocess.run(
            ["bash", "-c", f'exec "$0" -m guard policy reload <(cat {EXAMPLE}) --socket "$1"',
             sys.executable, str(tmp_path / "agent.sock")],
            capture_output=True, text=True, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    finally:
        agent.close()
    assert result.returncode == ExitCode.OK, result.stderr
    (request,) = agent.requests
    assert request["policy"]["text"] == open(EXAMPLE).read()
    assert request["policy"]["source"].startswith("/dev/fd/")
    assert agent.files == [[]]


def test_exit_codes_are_the_clis():
    """cli_reload keeps plain ints (no enum import); they are ExitCode's."""
    for name in ("OK", "FAILURE", "RUNTIME", "PERMISSION"):
        assert getattr(quick_exit_codes, name) == ExitCode[name]


def test_no_agent_and_unreadable_files(tmp_path):
    missing = quick(EXAMPLE, f"--socket={tmp_path / 'none.sock'}")
    assert missing.returncode == ExitCode.RUNTIME
    assert missing.stderr.startswith("egress-guard: error: no agent is listening")
    absent = quick(str(tmp_path / "absent.yaml"))
    assert absent.returncode == ExitCode.FAILURE
    assert "cannot read the policy file" in absent.stderr
    # a relative path that does not resolve: named as given, nothing sent
    agent = StubAgent(str(tmp_path / "agent.sock"), RELOADED)
    try:
        relative = quick("nowhere/p.yaml", "--socket", "agent.sock", cwd=tmp_path)
    finally:
        agent.close()
    assert relative.returncode == ExitCode.FAILURE
    assert relative.stderr == ("egress-guard: error: nowhere/p.yaml: cannot read the policy "
                               "file: [Errno 2] No such file or directory: 'nowhere/p.yaml'\n")
    assert agent.requests == []


@pytest.mark.parametrize("argv", [
    ["policy", "reload", "--help"], ["policy", "reload", "-h"], ["policy", "reload", "a", "b"],
    ["policy", "reload", "--socket"], ["policy", "reload", "--bogus"], ["policy", "check", "x"],
    ["policy", "reload", str(FIXTURES)], ["status"], []])
def test_anything_else_is_left_to_click(argv):
    assert quick_main(argv) is None


def test_help_and_usage_errors_still_come_from_click(tmp_path):
    assert "Usage:" in quick("--help").stdout
    directory = quick(str(tmp_path))
    assert directory.returncode == ExitCode.USAGE and "is a directory" in directory.stderr


def test_reload_imports_only_what_it_needs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "guard", "policy", "reload", EXAMPLE,
         "--socket", str(tmp_path / "none.sock")],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "guard.cli.reload" in imported
    assert not imported & {"click", "yaml", "orjson", "guard.cli.commands", "guard.policy.model",
                           "guard.control.server", "pathlib", "socket", "json", "re", "enum",
                           "guard.cli.exitcodes"}


def test_the_installed_command_imports_no_more(tmp_path):
    """bin/egress-guard, the script pip installs: the reload path loads the
    same few modules as `python -m guard` (pip's own wrapper imported re)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "bin" / "egress-guard"), "policy",
         "reload", EXAMPLE, "--socket", str(tmp_path / "none.sock")],
        capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == ExitCode.RUNTIME
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "guard.cli.reload" in imported
    assert not imported & {"click", "json", "re", "enum", "socket", "runpy"}
