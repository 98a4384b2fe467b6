# SPDX-License-Identifier: Apache-2.0
"""`egress-guard demo`: a throw-away sandbox, guarded, tried, explained, removed.

The sandbox is a temporary cgroup; its only peer is a test host in a network
namespace (198.18.0.0/15, no route out). The agent runs in this process
(its loop in a thread of its own, as `run` runs it, so the kernel's holds at
exec and on first payloads are answered while a step runs) with
guard/data/demo-policy.yaml. Part 1 shows the policy's plain rules; part 2
replays the incident (guard/demo/incident.py): a miner's pool login, an
`ssh -R`, a reverse shell and a tunnel, each stopped and explained with its
event.

run_demo(say, miner=None, ssh=None, record=None) -> bool: True only if every
step ended as the policy says. say gets the story line by line; record, if
given, gets one dict per step: name, title, client, expected, stopped,
outcome (words), facts, events (the step's events as the agent wrote them).
"""
from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from guard.agent.core import Agent, AgentError
from guard.demo.incident import (INCIDENT_PORTS, ServerLog, Step, command_line, incident_steps,
                                 matches, run_step)
from guard.demo.sandbox import TempCgroup, TestHost, end_process
from guard.policy.load import load_policy
from guard.report.text import render

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
#: How long a step waits for the event that explains it.
EVENT_WAIT_S = 10.0
#: Events are taken as complete once none came for this long.
QUIET_S = 0.4

INCIDENT = ("During RL training an agent started a crypto miner and opened a reverse SSH "
            "tunnel out of its sandbox, unprompted; only the cloud firewall noticed. "
            "The same moves, and two more a determined agent tries, in this sandbox:")


class _Collector:
    """The agent's event writer: keeps every event, for the main thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._events: list[dict] = []

    def write(self, event: dict) -> None:
        with self._lock:
            self._events.append(event)

    def flush(self) -> None:
        pass

    def mark(self) -> int:
        with self._lock:
            return len(self._events)

    def since(self, mark: int) -> list[dict]:
        with self._lock:
            return [e for e in self._events[mark:] if e.get("kind") != "agent"]

    def wait(self, mark: int, done: Callable[[list[dict]], bool], timeout: float) -> list[dict]:
        """The events since mark once done(events) holds (or timeout passed)
        and no new one came for QUIET_S."""
        deadline = time.monotonic() + timeout
        seen, quiet_since = -1, time.monotonic()
        while True:
            events = self.since(mark)
            now = time.monotonic()
            if len(events) != seen:
                seen, quiet_since = len(events), now
            if (done(events) or now >= deadline) and now - quiet_since >= QUIET_S:
                return events
            time.sleep(0.05)


class _AgentLoop:
    """agent.run() in a thread, until stop()."""

    def __init__(self, agent: Agent):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=agent.run, args=(self._stop.is_set,),
                                        name="egress-guard-demo-agent", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run_demo(say: Callable[[str], None], miner: str | None = None, ssh: str | None = None,
             record: list[dict[str, Any]] | None = None) -> bool:
    policy_file = Path(str(resources.files("guard") / "data" / "demo-policy.yaml"))
    policy = load_policy(str(policy_file))
    collector = _Collector()
    record = [] if record is None else record
    with TestHost() as host, TempCgroup("egress-guard-demo") as sandbox, \
            tempfile.TemporaryDirectory(prefix="egress-guard-demo-") as workdir:
        host.serve(8080, 3333)
        host.serve(5353, udp=True)
        servers = ServerLog(host.serve(*INCIDENT_PORTS))
        fake_nc = Path(workdir) / "nc"
        shutil.copy("/bin/echo", fake_nc)
        steps = incident_steps(host.ip, Path(workdir), miner=miner, ssh=ssh)
        agent = Agent(policy, [str(sandbox.path)], collector, scheduling="normal")
        try:
            agent.start()
        except AgentError as exc:
            say(f"demo: the agent could not start: {exc}")
            return False
        loop = _AgentLoop(agent)
        try:
            say(f"sandbox: cgroup {sandbox.cgroup.relative} (id {sandbox.id}); test host "
                f"{host.ip} in network namespace {host.name}, no route out")
            say(f"policy: {policy_file}")
            say("")
            say("Part 1: the policy's rules")
            _policy_steps(say, sandbox, collector, host.ip, fake_nc, record)
            say("")
            say("Part 2: the incident")
            say(INCIDENT)
            for number, step in enumerate(steps, 1):
                _incident_step(say, number, step, sandbox, servers, collector, record)
        finally:
            loop.stop()
            agent.stop()
    ok = all(entry["stopped"] for entry in record)
    say("")
    say("removed the sandbox cgroup, the network namespace and every BPF program")
    say("demo: every step was stopped as the policy says" if ok
        else "demo: some steps were NOT stopped as expected: "
        + ", ".join(e["name"] for e in record if not e["stopped"]))
    return ok


def _policy_steps(say, sandbox: TempCgroup, collector: _Collector, ip: str, fake_nc: Path,
                  record: list[dict]) -> None:
    steps = [
        ("connect-allowed", f"TCP connect to {ip}:8080", ["tcp", ip, "8080"], "ok"),
        ("connect-blocked", f"TCP connect to {ip}:3333 (rule no-pool-port)", ["tcp", ip, "3333"],
         "EPERM"),
        ("udp-allowed", f"UDP sendto {ip}:5353", ["udp", ip, "5353"], "ok"),
        ("raw-socket", "open a raw ICMP socket", ["raw", "-", "0"], "EPERM"),
    ]
    for name, title, args, expected in steps:
        mark = collector.mark()
        outcome = sandbox.python(CLIENT, *args).stdout.strip()
        _report(say, name, title, outcome, expected, collector.wait(mark, bool, 2.0), record)
    mark = collector.mark()
    result = sandbox.run([str(fake_nc), "you should not see this"])
    outcome = "SIGKILL" if result.returncode == -signal.SIGKILL else f"exit {result.returncode}"
    _report(say, "exec-killed", f"exec {fake_nc} (named nc, rule no-netcat)", outcome, "SIGKILL",
            collector.wait(mark, bool, 2.0), record)


def _report(say, name: str, title: str, outcome: str, expected: str, events: list[dict],
            record: list[dict]) -> None:
    mark = "as expected" if outcome == expected else f"UNEXPECTED (wanted {expected})"
    say(f"- {title}: {outcome} ({mark})")
    for event in events:
        say(f"    {render(event)}")
    record.append({"name": name, "title": title, "client": "real", "expected": expected,
                   "stopped": outcome == expected, "outcome": outcome, "facts": {},
                   "events": events})


def _incident_step(say, number: int, step: Step, sandbox: TempCgroup, servers: ServerLog,
                   collector: _Collector, record: list[dict]) -> None:
    say("")
    say(f"{number}. {step.title}")
    say(f"   $ {command_line(step.argv)}")
    mark = collector.mark()
    run = run_step(step, sandbox.popen, servers, end_process)
    events = collector.wait(mark, lambda evs: any(matches(e, step) for e in evs), EVENT_WAIT_S)
    outcome = step.judge(run)
    explained = any(matches(e, step) for e in events)
    stopped = outcome.stopped and explained
    kind, finding, action = step.explained_by
    say(f"   what happened: {outcome.words}")
    say("   events:")
    for event in events:
        say(f"     {render(event)}")
    if not explained:
        say(f"   (no {kind} event {finding or ''} with action {action} came)")
    say(f"   why: {step.why}")
    say(f"   {'stopped' if stopped else 'NOT STOPPED as expected'}")
    record.append({"name": step.name, "title": step.title, "client": step.client,
                   "expected": f"{finding or kind}: {action}", "stopped": stopped,
                   "outcome": outcome.words, "facts": outcome.facts, "events": events})
