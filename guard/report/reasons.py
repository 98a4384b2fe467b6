# SPDX-License-Identifier: Apache-2.0
"""Reasons for the sandbox: why the guard refused or killed, in one line a
program (an AI agent reading its tool's output) can read, and the
per-workload reasons file (spec.feedback, docs/policy.md).

    egress-guard: blocked tcp connect to 198.18.0.7:3333 (pool.example) by rule "no-pools" of policy "sandbox"
    egress-guard: killed exec of /usr/bin/nc by rule "no-netcat" of policy "sandbox"
    egress-guard: blocked tcp flow to 198.18.0.7:443 of policy "sandbox": Stratum mining login (cryptonote)

Built from the JSON event the agent writes (the contract), so the line says
what the event says. Every value that came from the workload (names,
paths, argv) is made safe for a terminal (text.clean): the line lands on
the workload's own terminal or in its tool output.

ReasonsFiles keeps, per workload, `reasons.jsonl` under a directory of its
own that a runtime bind-mounts read-only into the container: one JSON
object per refusal, bounded (REASON_FILE_BYTES, then rotated to
`reasons.jsonl.1`), written with O_APPEND | O_NOFOLLOW inside a directory
opened without following symlinks.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

from guard.report import safejson
from guard.report.text import clean, finding_words

PREFIX = "egress-guard: "
#: A reason line's bytes at most (below PIPE_BUF: a pipe takes it whole or not at all).
LINE_BYTES = 1024
REASON_FILE = "reasons.jsonl"
REASON_FILE_BYTES = 256 << 10     # then rotated: at most twice this per workload
REFUSED = frozenset({"block", "kill"})
_VERBS = {"block": "blocked", "kill": "killed"}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _word(value: Any, limit: int = 120) -> str:
    return clean(value, limit) if isinstance(value, str) else ""


def refused(event: dict) -> bool:
    """Whether the event is a refusal carried out (audit's `would` is not)."""
    return event.get("action") in REFUSED and "would" not in event


def _address(dst: dict) -> str:
    """`198.18.0.7:3333 (pool.example)`, what is known of it."""
    ip, port = _word(dst.get("ip"), 64), dst.get("port")
    host = f"[{ip}]" if ":" in ip else (ip or "?")
    where = f"{host}:{port}" if isinstance(port, int) and not isinstance(port, bool) else host
    name = _word(dst.get("name"))
    return where + (f" ({name})" if name else "")


def _subject(what: str, dst: Any, proto: Any) -> str:
    """`tcp connect to 198.18.0.7:3333 (pool.example)`"""
    dst = _dict(dst)
    proto = _word(proto, 8) or _word(dst.get("proto"), 8)
    return (f"{proto} " if proto else "") + f"{what} to {_address(dst)}"


def _policy(event: dict) -> str:
    name = _word(_dict(event.get("policy")).get("name"), 80)
    return f'policy "{name}"' if name else "the policy"


def _by(event: dict) -> str:
    rule = event.get("rule")
    if rule == "detection":
        return f"because a detection judged the process, {_policy(event)}"
    if isinstance(rule, str) and rule:
        return f'by rule "{_word(rule, 80)}" of {_policy(event)}'
    return f"by the default action of {_policy(event)}"


def _program(event: dict) -> str:
    process = _dict(event.get("process"))
    return (_word(process.get("exe"), 160) or _word(event.get("filename"), 160)
            or _word(process.get("comm"), 16) or "?")


def reason_line(event: dict) -> str | None:
    """The line for a refusal, or None for anything else."""
    if not refused(event):
        return None
    verb, kind = _VERBS[event["action"]], event.get("kind")
    if kind == "connect":
        hook = event.get("hook")
        what = {"sendmsg": "send", "bind": "bind"}.get(hook, "connect")
        line = f"{verb} {_subject(what, event.get('dst'), event.get('proto'))}"
        if hook == "bind":
            line += f" (a trusted resolver's port) of {_policy(event)}"
        else:
            line += f" {_by(event)}"
    elif kind == "exec":
        line = f"{verb} exec of {_program(event)} {_by(event)}"
    elif kind == "socket":
        sock = _dict(event.get("socket"))
        what = " ".join(w for w in (_word(sock.get("family"), 16), _word(sock.get("type"), 16))
                        if w) or "raw"
        line = f"{verb} {what} socket by sockets.raw: deny of {_policy(event)}"
    elif kind == "detection":
        dst = _dict(event.get("dst"))
        subject = (_subject("flow", dst, None) if dst.get("ip") is not None
                   else _program(event))
        line = f"{verb} {subject} of {_policy(event)}: {finding_words(event.get('detection'))}"
    elif kind == "dns" and event.get("direction") == "query":
        dns = _dict(event.get("dns"))
        line = (f"{verb} dns query for {_word(dns.get('name')) or '?'} "
                f"({_word(dns.get('type'), 16) or '?'}) to "
                f"{_address(_dict(event.get('resolver')))}: no name rule of "
                f"{_policy(event)} allows it")
    else:
        return None
    text = PREFIX + line
    data = text.encode("utf-8", "replace")
    if len(data) >= LINE_BYTES:
        text = data[:LINE_BYTES - 5].decode("utf-8", "ignore") + "..."
    return text


def reason_key(event: dict) -> tuple:
    """What one reason is about, for the rate limit: the destination, the
    program or the finding (a process refused again and again there is told
    once a while)."""
    kind = event.get("kind")
    dst = _dict(event.get("dst"))
    if kind == "connect":
        return (kind, event.get("proto"), dst.get("ip"), dst.get("port"))
    if kind == "detection":
        return (kind, _dict(event.get("detection")).get("type"), dst.get("ip"), dst.get("port"))
    if kind == "exec":
        return (kind, event.get("rule"))
    if kind == "dns":
        return (kind, _dict(event.get("dns")).get("name"))
    return (kind,)


def reason_record(event: dict, line: str) -> dict[str, Any]:
    """A reasons file's line: the reason and the fields a program keys on."""
    process = _dict(event.get("process"))
    record = {"ts": event.get("ts"), "kind": event.get("kind"), "action": event.get("action"),
              "rule": event.get("rule"), "policy": _dict(event.get("policy")).get("name"),
              "pid": process.get("pid"), "comm": process.get("comm"), "reason": line}
    if event.get("dst") is not None:
        record["dst"] = event.get("dst")
    if event.get("kind") == "detection":
        detection = _dict(event.get("detection"))
        record["detection"] = {"type": detection.get("type"), "dialect": detection.get("dialect")}
    return record


def workload_dir_name(event: dict) -> str:
    """The directory a workload's reasons go to, below the reasons directory:
    `NAMESPACE_POD` for a Kubernetes pod, else the container's name, else
    its id, else the cgroup path with `/` as `_`. Anything but letters,
    digits, `_`, `.` and `-` becomes `_`, so no name leaves the directory."""
    k8s, container = _dict(event.get("k8s")), _dict(event.get("container"))
    candidates = []
    if isinstance(k8s.get("pod"), str):
        candidates.append(f"{k8s.get('namespace') or 'default'}_{k8s['pod']}")
    candidates += [container.get("name"), container.get("id")]
    for candidate in candidates:
        if isinstance(candidate, str) and _SAFE_NAME.fullmatch(candidate):
            return candidate
    path = _dict(event.get("cgroup")).get("path")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.strip("/")) if isinstance(path, str) else ""
    name = name.lstrip(".")[:128]
    return name or "_unknown"


class ReasonsFiles:
    """Per-workload reasons files under one directory (`run --reasons-dir`).
    Never raises: a failure is counted (`failed`) and the agent goes on."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.written = 0
        self.failed = 0
        self.last_error: str | None = None

    def write(self, event: dict, line: str) -> bool:
        try:
            self._write(workload_dir_name(event),
                        safejson.dumps(reason_record(event, line)))
            self.written += 1
            return True
        except (OSError, ValueError, TypeError) as exc:
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False

    def _write(self, workload: str, data: bytes) -> None:
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        top = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                os.mkdir(workload, mode=0o755, dir_fd=top)
            except FileExistsError:
                pass
            where = os.open(workload, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                            | os.O_CLOEXEC, dir_fd=top)
        finally:
            os.close(top)
        try:
            self._append(where, data)
        finally:
            os.close(where)

    @staticmethod
    def _append(where: int, data: bytes) -> None:
        try:
            size = os.stat(REASON_FILE, dir_fd=where, follow_symlinks=False).st_size
        except FileNotFoundError:
            size = 0
        if size + len(data) > REASON_FILE_BYTES:
            os.replace(REASON_FILE, REASON_FILE + ".1", src_dir_fd=where, dst_dir_fd=where)
        fd = os.open(REASON_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_NONBLOCK | os.O_CLOEXEC, 0o644, dir_fd=where)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            os.write(fd, data)
        finally:
            os.close(fd)
