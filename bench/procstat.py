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
