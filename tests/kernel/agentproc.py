# SPDX-License-Identifier: Apache-2.0
"""Run `egress-guard run` as a real subprocess and read its JSON lines."""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


class AgentProcess:
    def __init__(self, cgroups: list[str], policy: str | Path | None = None,
                 extra: list[str] | None = None, control_socket: str | Path | None = None,
                 own_cgroup=None):
        """own_cgroup: a TempCgroup to start the agent in (as systemd or the
        DaemonSet give it a cgroup of its own); default: the test's."""
        # a socket of its own, so tests never meet an agent running on the host
        self._socket_dir = tempfile.mkdtemp(prefix="egress-guard-ctl-")
        self.control_socket = str(control_socket or Path(self._socket_dir) / "agent.sock")
        argv = [sys.executable, "-m", "guard", "run", "--control-socket", self.control_socket,
                "--state-dir", str(Path(self.control_socket).parent)]
        if policy is not None:
            argv += ["--policy", str(policy)]
        for cg in cgroups:
            argv += ["--cgroup", str(cg)]
        argv += extra or []
        self.argv = argv
        self.events: list[dict] = []
        self._lines: queue.Queue = queue.Queue()
        self.proc: subprocess.Popen | None = None
        self.stderr = ""
        self._own_cgroup = own_cgroup

    def __enter__(self) -> "AgentProcess":
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        spawn = self._own_cgroup.popen if self._own_cgroup is not None else subprocess.Popen
        self.proc = spawn(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=ROOT, env=env)
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.ready = self.wait_for(lambda e: e.get("kind") == "agent", timeout=30)
        except BaseException:
            self.close()
            raise
        assert self.ready["state"] == "ready", self.ready
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self._lines.put(orjson.loads(line))
            except orjson.JSONDecodeError:
                # the last line of an agent killed mid-write (SIGKILL tests)
                self._lines.put({"kind": "<partial line>", "line": line[:200].decode("utf-8",
                                                                                  "replace")})
        self._lines.put(None)

    def wait_for(self, predicate, timeout: float = 10.0) -> dict:
        """The first event (seen before or arriving now) that satisfies predicate."""
        for event in self.events:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event in {timeout}s; saw {self.events[-5:]}"
                                     f"; stderr: {self._stderr_now()}")
            try:
                event = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is None:
                raise AssertionError(f"agent exited; stderr: {self._stderr_now()}")
            self.events.append(event)
            if predicate(event):
                return event

    def drain(self) -> list[dict]:
        """Every event seen so far, without waiting for more."""
        while True:
            try:
                event = self._lines.get_nowait()
            except queue.Empty:
                return self.events
            if event is None:
                return self.events
            self.events.append(event)

    def rss_kb(self) -> int:
        """The agent's resident memory now (VmRSS, kB)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS for the agent")

    def _stderr_now(self) -> str:
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "(agent still running)"
        return self.proc.stderr.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the agent, collect the rest of its output, return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        while True:
            try:
                event = self._lines.get(timeout=5)
            except queue.Empty:
                break
            if event is None:
                break
            self.events.append(event)
        self.stderr = self.proc.stderr.read().decode(errors="replace")
        return code

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self._socket_dir, ignore_errors=True)


def held_map(pid: int, name: str) -> dict:
    """bpftool's description of the map called name that process pid holds
    open: an agent's own, whatever other agents run on the host."""
    held = set()
    for entry in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            held.update(int(line.split()[1]) for line in entry.read_text().splitlines()
                        if line.startswith("map_id:"))
        except OSError:
            continue
    shown = orjson.loads(subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True,
                                        check=True).stdout)
    found = [m for m in shown if m["id"] in held and m.get("name") == name]
    assert len(found) == 1, (name, found)
    return found[0]


class GuardedCgroup:
    """One agent with one policy file, guarding one temporary cgroup; the
    detection tests keep one per policy for a whole module."""

    def __init__(self, policy: Path, tag: str, extra: list[str] | None = None):
        from guard.demo.sandbox import TempCgroup

        self.cg = TempCgroup(tag)
        self.cg.__enter__()
        try:
            self.agent = AgentProcess([str(self.cg.path)], policy=policy, extra=extra)
            self.agent.__enter__()
        except BaseException:
            self.cg.close()
            raise

    def close(self) -> None:
        try:
            self.agent.close()
        finally:
            self.cg.close()


def guarded_by_key(directory: Path, tag: str, policy_text):
    """A module fixture's body: get(key) -> (cgroup, agent), one GuardedCgroup
    per key made on first use under the policy policy_text(key) (written in
    directory); all closed when the generator ends."""
    made: dict[str, GuardedCgroup] = {}

    def get(key: str):
        if key not in made:
            policy = directory / f"{key}.yaml"
            policy.write_text(policy_text(key))
            made[key] = GuardedCgroup(policy, tag)
        return made[key].cg, made[key].agent
    try:
        yield get
    finally:
        for guard in made.values():
            guard.close()
