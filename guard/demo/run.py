# SPDX-License-Identifier: Apache-2.0
"""`egress-guard demo`: a throw-away sandbox, guarded, tried, explained, removed.

The sandbox is a temporary cgroup; its only peer is a test host in a network
namespace (198.18.0.0/15, no route out). The agent runs in this process with
guard/data/demo-policy.yaml, so every step shows the kernel's verdict and the
event that reports it.
"""
from __future__ import annotations

import shutil
import signal
import tempfile
from importlib import resources
from pathlib import Path
from typing import Callable

from guard.agent.core import Agent, AgentError
from guard.policy.load import load_policy
from guard.demo.sandbox import TempCgroup, TestHost

CLIENT = """
import errno, socket, sys
proto, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == 'raw':
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    elif proto == 'udp':
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hello', (ip, port))
    else:
        socket.create_connection((ip, port), timeout=5).close()
    print('ok')
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"""


class _Collector:
    def __init__(self):
        self.events: list[dict] = []

    def write(self, event: dict) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass


def run_demo(say: Callable[[str], None]) -> bool:
    policy_file = Path(str(resources.files("guard") / "data" / "demo-policy.yaml"))
    policy = load_policy(str(policy_file))
    collector = _Collector()
    all_as_expected = True
    with TestHost() as host, TempCgroup("egress-guard-demo") as sandbox, \
            tempfile.TemporaryDirectory(prefix="egress-guard-demo-") as bindir:
        host.serve(8080, 3333)
        host.serve(5353, udp=True)
        fake_nc = Path(bindir) / "nc"
        shutil.copy("/bin/echo", fake_nc)
        agent = Agent(policy, [str(sandbox.path)], collector)
        try:
            agent.start()
        except AgentError as exc:
            say(f"demo: the agent could not start: {exc}")
            return False
        try:
            say(f"sandbox cgroup {sandbox.cgroup.relative} (id {sandbox.id}), "
                f"test host {host.ip} in netns {host.name}, policy {policy_file}")
            steps = [
                (f"TCP connect to {host.ip}:8080", ["tcp", host.ip, "8080"], "ok"),
                (f"TCP connect to {host.ip}:3333 (pool port)", ["tcp", host.ip, "3333"], "EPERM"),
                (f"UDP sendto {host.ip}:5353", ["udp", host.ip, "5353"], "ok"),
                ("open a raw ICMP socket", ["raw", "-", "0"], "EPERM"),
            ]
            for title, args, expected in steps:
                outcome = sandbox.python(CLIENT, *args).stdout.strip()
                all_as_expected &= _report(say, agent, collector, title, outcome, expected)
            result = sandbox.run([str(fake_nc), "you should not see this"])
            outcome = "SIGKILL" if result.returncode == -signal.SIGKILL else f"exit {result.returncode}"
            all_as_expected &= _report(say, agent, collector, f"exec {fake_nc} (named nc)",
                                       outcome, "SIGKILL")
        finally:
            agent.stop()
    say("removed the sandbox cgroup, the network namespace and every BPF program")
    say("demo: every verdict as the policy says" if all_as_expected
        else "demo: some verdicts were NOT as expected")
    return all_as_expected


def _report(say, agent: Agent, collector: _Collector, title: str, outcome: str,
            expected: str) -> bool:
    agent.poll(200)
    fresh, collector.events[:] = list(collector.events), []
    mark = "as expected" if outcome == expected else f"UNEXPECTED (wanted {expected})"
    say(f"- {title}: {outcome} ({mark})")
    for event in fresh:
        if event["kind"] == "agent":
            continue
        say(f"    event kind={event['kind']} action={event['action']} "
            f"rule={event.get('rule')} {_detail(event)}")
    return outcome == expected


def _detail(event: dict) -> str:
    if "dst" in event:
        return f"{event['proto']} {event['dst']['ip']}:{event['dst']['port']}"
    if "socket" in event:
        return f"socket family={event['socket']['family']} type={event['socket']['type']}"
    command = " ".join(event["process"]["argv"]).replace("\n", " ")
    return f"argv: {command[:70]}{'...' if len(command) > 70 else ''}"
