# SPDX-License-Identifier: Apache-2.0
"""The hold watchdog: no program stays stopped at exec past the hold timeout.

The kernel stops a program at exec (SIGSTOP, eg_held_execs) when an
enforcing detection wants a verdict before its first instruction; the
agent's loop normally judges it from the exec record within milliseconds.
Two things can keep that verdict from coming: the exec record was lost (a
full ring), or the loop is late (a burst of records, a slow reload). This
thread does not wait for the loop: every CHECK_S it takes each hold older
than the timeout (deleting the map entry is the claim, so the loop and the
watchdog never both settle one program), judges it from /proc with the same
classifiers the loop uses, and kills it or lets it go. A verdict of block is
carried out as kill here: the process's start time, which block needs, is in
the exec record the watchdog did not get.

It writes nothing to the event stream itself (the writer belongs to the
loop): what it did is queued in `reports`, which the loop drains.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

from guard.detect.detector import Detector, decide, strongest
from guard.detect.files import ProcessFiles

#: How often the held programs are looked at, at most (and a quarter of the
#: hold timeout when that is shorter).
CHECK_S = 0.25
#: The same failure of the watchdog is reported again only after this long.
REPEAT_S = 60.0
#: Reports kept for the loop; a loop that does not come for them loses the
#: oldest (each is also counted in `settled`).
REPORTS_KEPT = 1024


class HoldWatchdog:
    def __init__(self, maps, responder, detector: Detector, timeout_ms: int,
                 policy_for_pid: Callable[[int], Any],
                 files_of: Callable[[int], ProcessFiles] = ProcessFiles,
                 process_of: Callable[[int], Any] | None = None,
                 clock_ns: Callable[[], int] = lambda: time.clock_gettime_ns(time.CLOCK_BOOTTIME)):
        self._maps = maps
        self._responder = responder
        self._detector = detector
        self._timeout_ns = timeout_ms * 1_000_000
        self._policy_for_pid = policy_for_pid
        self._files_of = files_of
        self._process_of = process_of
        self._clock_ns = clock_ns
        self.reports: collections.deque[dict[str, Any]] = collections.deque(maxlen=REPORTS_KEPT)
        self.settled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._timeout_ns and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hold-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        interval = min(CHECK_S, self._timeout_ns / 4e9)
        said, said_at = "", 0.0
        while not self._stop.wait(interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the thread must keep watching
                error = f"hold watchdog: {type(exc).__name__}: {exc}"
                if error != said or time.monotonic() - said_at > REPEAT_S:
                    self.reports.append({"error": error})   # once, not every turn
                    said, said_at = error, time.monotonic()

    def check(self) -> int:
        """Settle every hold older than the timeout; returns how many."""
        if not self._timeout_ns:
            return 0
        now = self._clock_ns()
        done = 0
        for pid, since in self._maps.held_execs().items():
            if now - since < self._timeout_ns or not self._maps.release_held(pid):
                continue    # not yet due, or the loop settled it meanwhile
            done += 1
            self.settled += 1
            self._settle(pid, (now - since) // 1_000_000)
        for error in self._responder.take_errors():
            self.reports.append({"error": f"action failed: {error}"})
        for error in self._detector.take_errors():
            self.reports.append({"error": f"classifier failed: {error}"})
        return done

    def _settle(self, pid: int, held_ms: int) -> None:
        action, cgroup_path = None, None
        try:
            # only guarded programs are held: no verdict fails closed below
            policy, cgroup_path = self._policy_for_pid(pid)
            if policy is not None and self._process_of is not None:
                process = self._process_of(pid)
                detections = decide(self._detector.exec_findings(
                    policy, process.argv, process.exe, self._files_of(pid)), policy)
                action = strongest(detections)
        except Exception as exc:  # noqa: BLE001 - no verdict fails closed
            action = "kill"
            self.reports.append({"error": f"pid {pid}: judging a held exec failed: "
                                          f"{type(exc).__name__}: {exc}"})
        if action in ("block", "kill"):
            self._responder.kill(pid, cgroup_path)
            done = "killed"
        else:
            self._responder.resume(pid, cgroup_path)
            done = "resumed"
        self.reports.append({
            "error": f"pid {pid} held at exec for {held_ms} ms without the agent's "
                     f"verdict: judged from /proc ({action or 'nothing found'}), {done}",
            "pid": pid, "held_ms": held_ms, "verdict": action, "done": done})
