# SPDX-License-Identifier: Apache-2.0
"""`egress-guard demo` replays the incident (issue 17): a miner's pool login
(0 bytes at the pool), an `ssh -R` (never reaches the server), a reverse
shell (killed) and a tunnel (refused), each explained by its event, and
leaves nothing behind. Run as the command runs, in a process of its own:
with the real clients (OpenSSH's ssh, XMRig), and on a host that has
neither (PATH without them: the stand-ins)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from guard.workloads.cgroups import cgroup2_mount

from .agentproc import ROOT
from .netfixtures import require_tools
from .test_mining_hardening import xmrig  # noqa: F401 - the fixture: XMRig 6.16.0, cached

INCIDENT = ["miner", "ssh-reverse", "reverse-shell", "tunnel"]
POLICY_STEPS = ["connect-allowed", "connect-blocked", "udp-allowed", "raw-socket", "exec-killed"]


def demo(*args: str, path: str | None = None) -> tuple[subprocess.CompletedProcess, int]:
    """Run the demo; its result and its pid (what its sandbox names carry)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if path is not None:
        env["PATH"] = path
    proc = subprocess.Popen([sys.executable, "-m", "guard", "demo", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def assert_nothing_left(pid: int) -> None:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"egtest-{pid}-" not in namespaces, namespaces
    left = [p.name for p in cgroup2_mount().iterdir()
            if p.name.startswith(f"egress-guard-demo-{pid}-")]
    assert left == []


def steps_of(result: subprocess.CompletedProcess) -> dict[str, dict]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["ok"] is True
    steps = {step["name"]: step for step in report["steps"]}
    assert list(steps) == POLICY_STEPS + INCIDENT
    for name, step in steps.items():
        assert step["stopped"] is True, (name, step["outcome"])
    return steps


def explaining(step: dict, finding: str, action: str) -> dict:
    """The step's detection event of that type, with that action."""
    found = [e for e in step["events"] if e["kind"] == "detection"
             and e["detection"]["type"] == finding and e["action"] == action]
    assert found, [(e["kind"], e["action"], (e.get("detection") or {}).get("type"))
                   for e in step["events"]]
    return found[0]


def assert_incident(steps: dict[str, dict], ssh_client: str) -> None:
    miner = steps["miner"]
    assert miner["facts"]["pool_connections"] >= 1 and miner["facts"]["pool_bytes"] == 0, miner
    login = explaining(miner, "stratum", "block")
    assert login["dst"]["port"] == 443 and login["dst"]["ip"].startswith("198.18.")
    assert "XMRig/6.16.0" in login["detection"]["evidence"]["agent"]

    ssh = steps["ssh-reverse"]
    assert ssh["client"] == ssh_client
    assert ssh["facts"]["server_connections"] == 0, ssh
    tunnel = explaining(ssh, "ssh_reverse_tunnel", "block")
    assert tunnel["detection"]["evidence"]["forward"] == "9000:127.0.0.1:22"
    assert tunnel["detection"]["evidence"]["origin"] == "argv"
    refused = [e for e in ssh["events"] if e["kind"] == "connect" and e["action"] == "block"
               and e["rule"] == "detection" and e["dst"]["port"] == 22]
    assert refused, ssh["events"]

    shell = steps["reverse-shell"]
    assert shell["facts"] == {"exit": -signal.SIGKILL, "listener_connections": 0}
    assert explaining(shell, "reverse_shell", "kill")["process"]["argv"][0] == "bash"

    chisel = steps["tunnel"]
    assert chisel["facts"]["client"] == "EPERM" and chisel["facts"]["server_connections"] == 0
    assert explaining(chisel, "tunnel_tool", "block")["detection"]["dialect"] == "chisel"


def test_the_demo_replays_the_incident_with_the_real_ssh():
    require_tools("ssh")
    result, pid = demo("--json")
    steps = steps_of(result)
    assert steps["miner"]["client"] == ("real" if shutil.which("xmrig") else "stand-in")
    assert_incident(steps, ssh_client="real")
    assert steps["connect-blocked"]["outcome"] == "EPERM"
    assert steps["exec-killed"]["outcome"] == "SIGKILL"
    assert_nothing_left(pid)


def test_the_demo_with_real_xmrig_gives_the_pool_nothing(xmrig):  # noqa: F811
    require_tools("ssh")
    result, pid = demo("--json", "--miner", str(xmrig))
    steps = steps_of(result)
    miner = steps["miner"]
    assert miner["client"] == "real" and miner["title"].endswith("(XMRig)")
    assert_incident(steps, ssh_client="real")
    assert explaining(miner, "stratum", "block")["process"]["exe"] == str(xmrig)
    assert_nothing_left(pid)


def test_on_a_host_without_the_clients_the_stand_ins_tell_the_story(tmp_path):
    """Only the package: no ssh and no XMRig on PATH. The story as a person reads it."""
    empty = tmp_path / "bin"
    empty.mkdir()
    result, pid = demo(path=str(empty))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    story = result.stdout
    for heading in ("Part 1: the policy's rules", "Part 2: the incident",
                    "1. a miner logs in to its pool", "2. ssh -R 9000:127.0.0.1:22",
                    "3. a reverse shell", "4. a chisel tunnel"):
        assert heading in story, heading
    assert "(stand-in sending XMRig 6.16.0's login line)" in story
    assert "(stand-in named ssh)" in story
    assert "received 0 bytes" in story
    assert "the SSH server saw 0 connection(s)" in story
    assert "killed by SIGKILL" in story and "connect got EPERM" in story
    # each incident step: its event line (guard/report/text.py) and its verdict
    assert story.count("\n   stopped\n") == 4, story
    assert "block detection" in story and "Stratum mining login" in story
    assert "ssh remote forward 9000:127.0.0.1:22" in story
    assert "kill  detection" in story and "reverse shell" in story
    assert "tunnel tool chisel" in story
    assert story.rstrip().endswith("demo: every step was stopped as the policy says")
    assert_nothing_left(pid)
