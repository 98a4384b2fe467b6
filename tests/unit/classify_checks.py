# SPDX-License-Identifier: Apache-2.0
"""Checks and fakes the classifier tests share."""
from __future__ import annotations

import time
from typing import Any, Callable

from guard.kernel import abi
from guard.report import safejson
from guard.kernel.abi import Action, SampleKind
from guard.detect.classify import Finding
from guard.kernel.records import Header, PayloadRecord


def assert_json(findings):
    """Every finding is a Finding and renders as JSON the way the event
    writer writes it (argv kept with surrogateescape is escaped there)."""
    for finding in findings:
        assert isinstance(finding, Finding)
        safejson.dumps(finding.as_dict())


class FakeFiles:
    """A container root held in dicts, in the shape of detect.ProcessFiles:
    read_file, list_dir, and the process's home, user and cwd. A value in
    files may be bytes, or an exception to raise when it is read."""

    def __init__(self, files: dict[str, Any] | None = None,
                 dirs: dict[str, Any] | None = None, *, home: str = "/root",
                 user: str = "root", cwd: str = "/root"):
        self.files = dict(files or {})
        self.dirs = dict(dirs or {})
        self.home, self.user, self.cwd = home, user, cwd
        self.asked: list[str] = []

    def read_file(self, path: str) -> bytes | None:
        self.asked.append(path)
        content = self.files.get(path)
        if isinstance(content, BaseException):
            raise content
        return content

    def list_dir(self, path: str):
        names = self.dirs.get(path)
        if isinstance(names, BaseException):
            raise names
        return names


def payload_record(sample: bytes, kind: SampleKind = SampleKind.FIRST,
                   port: int = 443) -> PayloadRecord:
    """A payload event as the agent gets it from the kernel."""
    header = Header(kind=abi.EventKind.PAYLOAD, ktime_ns=0, cgroup_id=1, pid=1, ppid=0, uid=0,
                    policy_id=1, comm="x", action=Action.LOG, rule_id=0)
    return PayloadRecord(header=header, cookie=1, family=4, proto=abi.Proto.TCP,
                         sample_kind=kind, flags=abi.PayloadFlags(0), ip="127.0.0.1",
                         port=port, payload_size=len(sample), sample=sample)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """call's result and the seconds it took (process CPU time would hide
    nothing here: the classifiers neither sleep nor wait)."""
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start
