# SPDX-License-Identifier: Apache-2.0
"""The CLI contract that needs no kernel: help, policy check, exit codes."""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from guard.cli.commands import main
from guard.cli.exitcodes import ExitCode
from tests.conftest import FIXTURES

COMMANDS = [[], ["doctor"], ["run"], ["policy"], ["policy", "check"], ["demo"]]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "main")
def test_every_command_has_help(runner, command):
    result = runner.invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_policy_check_accepts_the_example(runner):
    result = runner.invoke(main, ["policy", "check", str(FIXTURES / "example-policy.yaml")])
    assert result.exit_code == ExitCode.OK, result.output
    assert "ok (policy 'example': 1 egress rule(s), 1 exec rule(s)" in result.output


@pytest.mark.parametrize("body, line, needle", [
    ("  defaultAction: allow\n  colour: blue\n", 7, "spec.colour: unknown key 'colour'"),
    ("  egress:\n    - name: r\n      action: block\n      to:\n        - cidr: 10.0.0.0/33\n",
     10, "spec.egress[0].to[0].cidr: invalid CIDR '10.0.0.0/33'"),
    ("  egress:\n    - name: r\n      action: block\n      to:\n        - ports: [70000]\n",
     10, "spec.egress[0].to[0].ports[0]: invalid port 70000"),
    ("  defaultAction: explode\n", 6, "spec.defaultAction: invalid action 'explode'"),
    ("  egress: [\n", 6, "<yaml>: invalid YAML"),
])
def test_policy_check_names_file_line_and_field(runner, tmp_path, body, line, needle):
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n"
                    "  name: t\nspec:\n" + body)
    result = runner.invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == ExitCode.FAILURE
    assert f"{path}:{line}: {needle}" in result.output, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("egress-guard: error: invalid policy")


def test_policy_check_missing_file(runner, tmp_path):
    result = runner.invoke(main, ["policy", "check", str(tmp_path / "absent.yaml")])
    assert result.exit_code == ExitCode.FAILURE
    assert "cannot read the policy file" in result.output


def test_run_rejects_a_bad_ring_size(runner):
    result = runner.invoke(main, ["run", "--cgroup", "x", "--ring-size", "5000"])
    assert result.exit_code == ExitCode.USAGE
    assert "power of two" in result.output


def test_run_as_non_root_exits_4(runner, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = runner.invoke(main, ["run", "--cgroup", "x"])
    assert result.exit_code == ExitCode.PERMISSION
    assert "needs root" in result.output


def test_demo_as_non_root_exits_4(runner, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = runner.invoke(main, ["demo"])
    assert result.exit_code == ExitCode.PERMISSION
