# SPDX-License-Identifier: Apache-2.0
"""deploy/: the systemd unit runs a command line the CLI accepts."""
from __future__ import annotations

import configparser
import shlex

from guard.cli.commands import main
from tests.conftest import ROOT

UNIT = ROOT / "deploy" / "systemd" / "egress-guard.service"


def read_unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(UNIT.read_text().replace("\\\n", " "))
    return parser


def test_unit_command_line_is_accepted_by_the_cli():
    service = read_unit()["Service"]
    argv = shlex.split(service["ExecStart"].replace("$EGRESS_GUARD_ARGS", ""))
    assert argv[0].endswith("/egress-guard") and argv[1] == "run"
    # click parses it exactly as the agent would, without running anything
    with main.make_context("egress-guard", argv[1:2], resilient_parsing=True):
        pass
    run = main.get_command(None, "run")
    context = run.make_context("run", argv[2:])
    assert context.params["pin"] is True
    assert context.params["metrics_address"] == "127.0.0.1:9464"


def test_unit_restarts_and_limits_capabilities():
    service = read_unit()["Service"]
    assert service["Restart"] == "on-failure"
    caps = set(service["CapabilityBoundingSet"].split())
    assert "CAP_BPF" in caps and "CAP_SYS_ADMIN" in caps
    assert "CAP_SYS_MODULE" not in caps and "CAP_SYS_RAWIO" not in caps
    # the agent's loop leaves SCHED_IDLE to answer a reload (guard/agent/scheduling.py)
    assert "CAP_SYS_NICE" in caps
    assert set(service["AmbientCapabilities"].split()) == caps
    assert service["ExecReload"].endswith("-HUP $MAINPID")
