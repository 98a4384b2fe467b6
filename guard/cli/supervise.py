# SPDX-License-Identifier: Apache-2.0
"""`egress-guard run --supervise`: the agent as a child that comes back.

A crash must never silently remove enforcement. With --pin the kernel keeps
enforcing while no agent runs; this supervisor starts the next agent, which
adopts what the last one pinned, and says what happened in the event stream:

    {"kind": "agent", "state": "restarting", "reason": "killed by SIGKILL",
     "exit": -9, "restarts": 1, "next_in_s": 0.5}

SIGINT, SIGTERM and SIGHUP are passed to the child; after SIGINT or SIGTERM
the supervisor ends with the child. An agent that exits 0 stopped because it
was asked to, and is not started again; one that could not start (bad
arguments, no root, a host it cannot load on: exit 2, 3 or 4) is not either,
since starting it again would fail the same way. Anything else is a crash:
restarted after a pause that doubles up to BACKOFF_MAX_S, and falls back to
BACKOFF_MIN_S once an agent has run for STABLE_S.
"""
from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from typing import IO, Sequence

from guard.cli.exitcodes import ExitCode
from guard.report.events import EventWriter, restarting_event

PR_SET_PDEATHSIG = 1
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 60.0
#: Exit codes of an agent that could not start: restarting cannot help.
FINAL_CODES = frozenset({ExitCode.OK, ExitCode.USAGE, ExitCode.RUNTIME, ExitCode.PERMISSION,
                         ExitCode.FAILURE})


def _reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == ExitCode.CRASHED:
        return "crashed (its crashed event says why)"
    return f"exited with {code}"


class Supervisor:
    def __init__(self, command: Sequence[str], stream: IO[bytes],
                 sleep=time.sleep, clock=time.monotonic):
        self.command = list(command)
        self.writer = EventWriter(stream)
        self.restarts = 0
        self._child: subprocess.Popen | None = None
        self._stopping = False
        self._sleep = sleep
        self._clock = clock

    def _forward(self, signum, _frame) -> None:
        if signum in (signal.SIGINT, signal.SIGTERM):
            self._stopping = True
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signum)

    def run(self) -> int:
        handlers = {sig: signal.signal(sig, self._forward)
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            return self._loop()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _loop(self) -> int:
        backoff = BACKOFF_MIN_S
        while True:
            started = self._clock()
            self._child = subprocess.Popen(self.command, preexec_fn=_die_with_parent)
            code = self._wait(self._child)
            if self._stopping or code in FINAL_CODES:
                return code if code >= 0 else 128 - code
            if self._clock() - started >= STABLE_S:
                backoff = BACKOFF_MIN_S
            self.restarts += 1
            self.writer.write(restarting_event(_reason(code), code, self._child.pid,
                                               self.restarts, backoff))
            self.writer.flush()
            self._sleep(backoff)
            if self._stopping:
                return int(ExitCode.OK)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    @staticmethod
    def _wait(child: subprocess.Popen) -> int:
        while True:
            try:
                return child.wait()
            except InterruptedError:   # a forwarded signal; keep waiting
                continue


def _die_with_parent() -> None:
    """The child gets SIGTERM (a clean stop, pins kept) if the supervisor dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise_agent(args: Sequence[str], events_path: str | None) -> int:
    """Run `egress-guard ARGS` (without --supervise) until asked to stop."""
    stream = open(events_path, "ab") if events_path else sys.stdout.buffer
    command = [sys.executable, "-m", "guard", *args]
    return Supervisor(command, stream).run()
