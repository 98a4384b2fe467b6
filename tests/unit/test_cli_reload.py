# SPDX-License-Identifier: Apache-2.0
"""`egress-guard policy reload` without click: the same output and exit codes
as the click command, and none of the CLI's heavy imports."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from guard.cli import main as click_main
from guard.cli_reload import main as quick_main
from guard.exitcodes import ExitCode
from tests.conftest import FIXTURES, ROOT

EXAMPLE = str(FIXTURES / "example-policy.yaml")
RELOADED = {"ok": True, "policy": {"name": "example", "source": EXAMPLE, "generation": 3},
            "policies": ["example"], "previous_generation": 2, "switch_ms": 12.5}
REFUSED = {"ok": False, "error": "invalid policy: the policy in force is unchanged",
           "problems": [f"{EXAMPLE}:9: spec.egress[0].action: invalid action 'explode'"]}


class StubAgent:
    """Answers every request on a unix socket with one canned response."""

    def __init__(self, path: str, response: dict):
        self.requests: list[dict] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(8)
        self._response = response
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    data += conn.recv(65536)
                self.requests.append(json.loads(data))
                conn.sendall(json.dumps(self._response).encode() + b"\n")

    def close(self):
        self._sock.close()


def quick(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guard", "policy", "reload", *args],
                          capture_output=True, text=True, cwd=ROOT,
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
    assert agent.requests[0] == agent.requests[1] == {
        "op": "reload", "policy": {"text": open(EXAMPLE).read(), "source": EXAMPLE}}
    if response is RELOADED:
        assert fast.stdout == ("reloaded: policy 'example' is generation 3 (was 2); "
                               "switched in 12.5 ms\n")
    else:
        assert fast.returncode == ExitCode.FAILURE
        assert fast.stderr.splitlines() == REFUSED["problems"] + [
            "egress-guard: error: invalid policy: the policy in force is unchanged"]


def test_no_agent_and_unreadable_files(tmp_path):
    missing = quick(EXAMPLE, f"--socket={tmp_path / 'none.sock'}")
    assert missing.returncode == ExitCode.RUNTIME
    assert missing.stderr.startswith("egress-guard: error: no agent is listening")
    absent = quick(str(tmp_path / "absent.yaml"))
    assert absent.returncode == ExitCode.FAILURE
    assert "cannot read the policy file" in absent.stderr


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
    assert "guard.cli_reload" in imported
    assert not imported & {"click", "yaml", "orjson", "guard.cli", "guard.policy",
                           "guard.control", "pathlib", "socket"}
