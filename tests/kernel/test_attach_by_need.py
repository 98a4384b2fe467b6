# SPDX-License-Identifier: Apache-2.0
"""A cgroup gets the packet programs its policy needs, and no others (issue
16, point 2): cgroup_skb programs run on every packet, so a policy whose
detections sample nothing gets none; flow.bpf.c's come with the payload
detections, dns.bpf.c's with allow by name. A reload that needs more
attaches them before the switch; one that needs less detaches them after."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from guard.demo.sandbox import TempCgroup

from .agentproc import AgentProcess
from .conftest import CGROUP_HOOKS, CGROUP_HOOKS_BASE, CGROUP_HOOKS_NAMES

ROOT = Path(__file__).resolve().parents[2]

QUIET = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: quiet
spec:
  defaultAction: log
  detections:
    stratum: off
    minerExec: off
    sshReverseTunnel: off
    reverseShell: off
    tunnelTool: off
    sshOutbound: off
"""

DEFAULTS = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: defaults
spec:
  defaultAction: log
"""

NAMES = """\
apiVersion: egress-guard/v1
kind: EgressPolicy
metadata:
  name: by-name
spec:
  defaultAction: block
  dns:
    resolvers:
      - cidr: 127.0.0.53/32
  egress:
    - name: index
      action: allow
      to:
        - host: pypi.example
          ports: [443]
"""


def attached(cg: TempCgroup) -> list[str]:
    out = subprocess.run(["bpftool", "-j", "cgroup", "show", str(cg.path)],
                         capture_output=True, check=True).stdout
    return sorted(p.get("name", "") for p in json.loads(out.strip() or b"[]"))


def reload(agent: AgentProcess, policy: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "guard", "policy", "reload", str(policy),
                             "--socket", agent.control_socket], capture_output=True, text=True,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert result.returncode == 0, result.stderr


def wait_attached(cg: TempCgroup, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    names = attached(cg)
    while len(names) != count and time.monotonic() < deadline:
        time.sleep(0.1)
        names = attached(cg)
    return names


def test_the_packet_programs_follow_the_policy_across_reloads(tmp_path):
    quiet, defaults, names = (tmp_path / "quiet.yaml", tmp_path / "defaults.yaml",
                              tmp_path / "names.yaml")
    quiet.write_text(QUIET)
    defaults.write_text(DEFAULTS)
    names.write_text(NAMES)
    with TempCgroup("egress-guard-test") as cg:
        with AgentProcess([str(cg.path)], policy=quiet) as agent:
            progs = attached(cg)
            assert len(progs) == CGROUP_HOOKS_BASE, progs
            assert not [p for p in progs if p in ("guard_egress", "guard_ingress",
                                                    "guard_dns_query", "guard_dns_answer")]
            # every connect is still judged and logged without any packet program
            result = cg.python("import socket\ntry:\n socket.create_connection(('127.0.0.1', 9),"
                               " timeout=2)\nexcept OSError as e: print(e.errno)")
            assert result.returncode == 0
            agent.wait_for(lambda e: e["kind"] == "connect" and e["dst"]["port"] == 9)

            reload(agent, names)
            progs = wait_attached(cg, CGROUP_HOOKS_NAMES)
            assert {"guard_egress", "guard_ingress", "guard_sock_release", "guard_dns_query",
                    "guard_dns_answer"} <= set(progs), progs

            reload(agent, defaults)
            progs = wait_attached(cg, CGROUP_HOOKS)
            assert "guard_egress" in progs and "guard_dns_query" not in progs, progs

            reload(agent, quiet)
            assert len(wait_attached(cg, CGROUP_HOOKS_BASE)) == CGROUP_HOOKS_BASE
        assert attached(cg) == []
