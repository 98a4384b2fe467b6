# SPDX-License-Identifier: Apache-2.0
"""Telling the sandbox why (spec.feedback): for each refusal the agent
reports, a reason line on the refused process's own stderr
(guard/respond/feedback.py) and a line in the workload's reasons file
(guard/report/reasons.py), as the judging policy asks. Audit mode refuses
nothing, so it tells nothing."""
from __future__ import annotations

from typing import Any

from guard.report.reasons import ReasonsFiles, reason_key, reason_line, refused
from guard.respond.feedback import StderrFeedback


class Feedback:
    def __init__(self, agent, reasons_dir: str | None):
        self._agent = agent
        self.stderr = StderrFeedback()
        self.files = ReasonsFiles(reasons_dir) if reasons_dir else None

    def on_event(self, event: dict[str, Any], policy_id: int) -> None:
        """After an event is written: tell the workload, if its policy asks.
        Never raises (what goes wrong is counted)."""
        if not refused(event):
            return
        try:
            self._tell(event, policy_id)
        except Exception as exc:  # noqa: BLE001 - a reason is never worth the record
            self._agent.error(f"feedback failed: {type(exc).__name__}: {exc}")

    def _tell(self, event: dict[str, Any], policy_id: int) -> None:
        policy = getattr(self._agent.compiled_policy(policy_id), "policy", None)
        if policy is None or not (policy.feedback_stderr
                                  or (policy.feedback_file and self.files is not None)):
            return
        line = reason_line(event)
        process = event.get("process") or {}
        pid, ppid = process.get("pid"), process.get("ppid")
        if line is None or not isinstance(pid, int) or not isinstance(ppid, int):
            return
        if not self.stderr.allowed(pid, reason_key(event)):
            return
        if policy.feedback_stderr and pid > 0:
            self.stderr.tell(pid, ppid, (event.get("cgroup") or {}).get("path"), line)
        if policy.feedback_file and self.files is not None:
            self.files.write(event, line)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"stderr": self.stderr.status()}
        if self.files is not None:
            status["files"] = {"directory": str(self.files.directory),
                               "written": self.files.written, "failed": self.files.failed}
        return status
