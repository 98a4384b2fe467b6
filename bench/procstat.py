# SPDX-License-Identifier: Apache-2.0
"""A benchmark's agent process: its memory (/proc/PID/status), waiting for
its ready line in its events file, and stopping it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from guard.demo.sandbox import TempCgroup
from tests.kernel.agentproc import AgentProcess


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """VmRSS (resident now) or VmHWM (peak resident) in KiB; 0 if gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) pid has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(events_path: Path, proc: subprocess.Popen, stderr_path: Path,
               deadline: float) -> dict:
    """The agent's ready event, read from the head of its events file; a
    RuntimeError with its stderr when it exits or the deadline passes first."""
    while True:
        try:
            head = events_path.read_bytes()[:65536]
        except FileNotFoundError:
            head = b""
        for line in head.split(b"\n")[:-1]:
            event = json.loads(line)
            if event.get("kind") == "agent":
                if event.get("state") != "ready":
                    raise RuntimeError(f"agent: {event}")
                return event
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("agent did not become ready: "
                               f"{stderr_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.02)


def stop_agent(proc: subprocess.Popen | None) -> None:
    """SIGTERM (the agent detaches everything and exits 0), then wait."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


class FileAgent(AgentProcess):
    """AgentProcess (a private control socket and state directory) in a
    cgroup of its own, as systemd and the DaemonSet give it (it then handles
    records in the background: docs/design.md, "The agent's share of the
    CPUs"), writing its events to a file as a deployment does: a pipe read by
    this process would compete with the measured loops for the two cores.
    root: the checkout whose agent runs (bench/run.py --tree); extra: more
    `run` options."""

    def __init__(self, workdir: Path, cgroups: list[TempCgroup], policy: Path | None,
                 tag: str, root: Path, extra: tuple[str, ...] = ()):
        workdir.mkdir()
        self.events_path = workdir / "events.jsonl"
        self.stderr_path = workdir / "agent.stderr"
        self.own = TempCgroup(f"{tag}-agent")
        self.root = root
        super().__init__([str(cg.path) for cg in cgroups], policy=policy,
                         extra=["--events", str(self.events_path), *extra],
                         control_socket=workdir / "agent.sock")

    def __enter__(self) -> "FileAgent":
        self.own.__enter__()
        try:
            started = time.monotonic()
            with open(self.stderr_path, "wb") as stderr:
                self.proc = self.own.popen(self.argv, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=stderr,
                                           cwd=self.root,
                                           env=dict(os.environ, PYTHONPATH=str(self.root)))
            self.ready = wait_ready(self.events_path, self.proc, self.stderr_path, started + 60)
            self.startup_s = time.monotonic() - started
            self.rss_ready_kib = memory_kib(self.proc.pid)
        except BaseException:
            self.close()
            raise
        return self

    def rss_kib(self) -> int:
        return memory_kib(self.proc.pid)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the agent has used so far."""
        return cpu_seconds(self.proc.pid)

    def close(self) -> None:
        try:
            stop_agent(self.proc)                       # SIGTERM: it detaches everything
            super().close()                             # SIGKILL if still running
        finally:
            self.own.close()
