# SPDX-License-Identifier: Apache-2.0
"""Events as JSON lines (orjson). Field names here are a documented contract
(docs/events.md): add fields, never rename or remove them."""
from __future__ import annotations

import functools
import io
import os
import select
import socket
import stat
import time
from datetime import datetime, timezone
from typing import IO, Any, Iterator, Protocol, Sequence

from guard.kernel import abi
from guard.report import safejson
from guard.workloads.containers import container_of
from guard.kernel.records import (ConnectRecord, DnsRecord, EscapeRecord, ExecRecord, Header,
                                  SocketRecord)
from guard.workloads.process import ProcessInfo

_HOOK_NAMES = {abi.Hook.CONNECT4: "connect", abi.Hook.CONNECT6: "connect",
               abi.Hook.SENDMSG4: "sendmsg", abi.Hook.SENDMSG6: "sendmsg",
               abi.Hook.BIND4: "bind", abi.Hook.BIND6: "bind"}
_SOCKET_TYPES = {1: "stream", 2: "dgram", 3: "raw", 4: "rdm", 5: "seqpacket", 10: "packet"}


#: The words of a dns event's `why`, in the order they are listed.
_DNS_WHY = ((abi.DnsFlags.UNTRUSTED, "untrusted-resolver"), (abi.DnsFlags.LOOPED, "over-loopback"),
            (abi.DnsFlags.UNPARSED, "unparsed"), (abi.DnsFlags.NO_RULE, "no-rule"),
            (abi.DnsFlags.FULL, "table-full"), (abi.DnsFlags.CUT, "cut"),
            (abi.DnsFlags.NO_TABLE, "no-table"))
#: Flags that say the kernel did not believe an answer.
_DNS_DISTRUST = abi.DnsFlags.UNTRUSTED | abi.DnsFlags.LOOPED | abi.DnsFlags.UNPARSED
# the same as plain ints, for the record path
_DNS_WHY_BITS = tuple((int(flag), word) for flag, word in _DNS_WHY)
_DNS_DISTRUST_BITS = int(_DNS_DISTRUST)
_DNS_UNPARSED = int(abi.DnsFlags.UNPARSED)


class DnsAddress(Protocol):
    value: str | None   # the address
    ttl: int


class ParsedDns(Protocol):
    """What describe() reads of a DNS message: the shape of
    guard.detect.classify.dns.DnsMessage, which report may not import (the
    agent parses record.message with parse_message and passes the result)."""
    name: str
    qtype_text: str
    rcode_text: str

    @property
    def address_answers(self) -> Sequence[DnsAddress]: ...

    @property
    def cnames(self) -> Sequence[str]: ...


def _family_name(family: int) -> str:
    try:
        return socket.AddressFamily(family).name.removeprefix("AF_").lower()
    except ValueError:
        return str(family)


class Clock:
    """Kernel CLOCK_BOOTTIME stamps -> RFC 3339 wall-clock times with ns."""

    def __init__(self):
        self._seconds, self._text = -1, ""   # the last second stamped, as text
        self.resync()

    def resync(self) -> None:
        self._offset = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def now(self) -> str:
        return rfc3339(time.time_ns())

    def from_boot_ns(self, ktime_ns: int) -> str:
        # rfc3339(), with the text of the last second kept: a storm's
        # records come thousands to the second
        seconds, nanos = divmod(ktime_ns + self._offset, 1_000_000_000)
        if seconds != self._seconds:
            self._seconds, self._text = seconds, _second(seconds)
        return f"{self._text}.{nanos:09d}Z"


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339(wall_ns: int) -> str:
    seconds, nanos = divmod(wall_ns, 1_000_000_000)
    return f"{_second(seconds)}.{nanos:09d}Z"


def _common(header: Header, clock: Clock, rule: str | None, cgroup_path: str | None,
            policy_name: str | None, generation: int, process: ProcessInfo,
            action: str | None = None, would: str | None = None) -> dict[str, Any]:
    """The fields every event carries. action, would: what was done and,
    in audit mode, what enforce would have done (the kernel's verdict
    says both unless given)."""
    if action is None:
        action, would = _ACTION_WORDS[header.action]
    # built in the order of the contract (docs/events.md), one key at a time:
    # cheaper than merging dicts, on a path that runs for every event
    event = {"ts": clock.from_boot_ns(header.ktime_ns), "kind": _KIND_NAMES[header.kind],
             "action": action}
    if would is not None:
        event["would"] = would
    event["rule"] = rule
    event["policy"] = {"name": policy_name, "generation": generation}
    event["process"] = {
        "pid": header.pid,
        "ppid": header.ppid,
        "uid": header.uid,
        "comm": header.comm,
        "exe": process.exe,
        "argv": process.argv,
        "argv_truncated": process.argv_truncated,
    }
    event["cgroup"] = {"id": header.cgroup_id, "path": cgroup_path}
    return event


#: Words of the enums an event spells, looked up once (an enum's properties
#: cost more than the rest of a field).
_KIND_NAMES = {kind: kind.name.lower() for kind in abi.EventKind}
_ACTION_WORDS = {action: (action.label, action.would) for action in abi.Action}
_PROTO_LABELS = {proto: proto.label for proto in abi.Proto}
_FAMILIES = {4: "ipv4", 6: "ipv6"}


def describe(record, clock: Clock, rule: str | None, cgroup_path: str | None,
             policy_name: str | None, process: ProcessInfo,
             generation: int | None = None, *, name: str | None = None,
             parsed: ParsedDns | None = None) -> dict[str, Any]:
    """One decoded record, with what userspace knows around it, as an event.

    name: for a ConnectRecord, the name its address was learned from (the
    agent's NameBook), shown as dst.name; left out when None.
    parsed: for a DnsRecord, what guard.detect.classify.dns.parse_message
    made of record.message; None when it could not be read (the event then
    says "unparsed")."""
    if generation is None:
        generation = record.header.policy_id
    event = _common(record.header, clock, rule, cgroup_path, policy_name, generation, process)
    container = container_of(cgroup_path) if cgroup_path else None
    if container is not None:
        event["container"] = container.as_dict()
    if isinstance(record, ExecRecord):
        event["filename"] = record.filename
        event["process"]["exe_truncated"] = record.exe_truncated
    elif isinstance(record, ConnectRecord):
        event["proto"] = _PROTO_LABELS[record.proto]
        event["family"] = _FAMILIES.get(record.family) or f"ipv{record.family}"
        if name is None:
            event["dst"] = {"ip": record.ip, "port": record.port}
        else:
            event["dst"] = {"ip": record.ip, "port": record.port, "name": name}
        event["hook"] = _HOOK_NAMES.get(record.hook) or record.hook.name.lower()
        if record.repeats:   # connects of a fold window no agent flushed (bpf/lib/fold.h)
            event["repeats"] = record.repeats
    elif isinstance(record, SocketRecord):
        event["socket"] = {"family": _family_name(record.family),
                           "type": _SOCKET_TYPES.get(record.type & 0xF, str(record.type)),
                           "protocol": record.protocol}
    elif isinstance(record, DnsRecord):
        _describe_dns(event, record, parsed)
    return event


def _describe_dns(event: dict[str, Any], record: DnsRecord, parsed: ParsedDns | None) -> None:
    """The fields of a dns event (docs/events.md). For an answer the header's
    process fields are 0: the kernel saw it in softirq, not in the receiver."""
    answer = record.direction == abi.DnsDirection.ANSWER
    event["direction"] = "answer" if answer else "query"
    event["proto"] = _PROTO_LABELS[record.proto]
    event["family"] = _FAMILIES.get(record.family) or f"ipv{record.family}"
    event["resolver"] = {"ip": record.ip, "port": record.port}
    flags = int(record.flags)    # plain int: an IntFlag's & is a Python call
    said = flags | _DNS_UNPARSED if parsed is None else flags
    why = [word for flag, word in _DNS_WHY_BITS if said & flag]
    dns: dict[str, Any] = {
        "name": parsed.name if parsed is not None else None,
        "type": parsed.qtype_text if parsed is not None else None,
    }
    if answer:
        dns["rcode"] = parsed.rcode_text if parsed is not None else None
    dns["answers"] = ([{"ip": a.value, "ttl": a.ttl} for a in parsed.address_answers]
                      if parsed is not None else [])
    dns["cnames"] = list(parsed.cnames) if parsed is not None else []
    if answer:
        dns["ttl"] = record.ttl
    dns["learned"] = record.learned
    dns["trusted"] = not flags & _DNS_DISTRUST_BITS
    dns["why"] = why
    event["dns"] = dns


def describe_detection(header: Header, clock: Clock, detection: dict[str, Any], action: str,
                       cgroup_path: str | None, policy_name: str | None, generation: int,
                       process: ProcessInfo, dst: dict[str, Any] | None = None,
                       would: str | None = None) -> dict[str, Any]:
    """A detection event: {"kind": "detection", "action"[, "would"], "detection":
    {"type", "dialect", "confidence", "evidence"}, "process", "cgroup", "dst"}."""
    event = _common(header, clock, None, cgroup_path, policy_name, generation, process,
                    action=action, would=would)
    event["kind"] = "detection"
    event["detection"] = detection
    event["dst"] = dst
    container = container_of(cgroup_path) if cgroup_path else None
    if container is not None:
        event["container"] = container.as_dict()
    return event


# -- the agent's own events (docs/events.md): built here, nowhere else ----------

#: escape.how: which file was written (or clone3 CLONE_INTO_CGROUP)
_ESCAPE_HOW = {abi.EscapeHow.PROCS: "cgroup.procs", abi.EscapeHow.THREADS: "cgroup.threads",
               abi.EscapeHow.CLONE: "clone_into_cgroup"}


def describe_escape(record: EscapeRecord, clock: Clock, cgroup_path: str | None,
                    dst_path: str | None, policy_name: str | None, generation: int,
                    process: ProcessInfo, killed_by: str | None) -> dict[str, Any]:
    """A guarded process that left its guarded cgroup (docs/events.md,
    escape): cgroup is the guarded cgroup it left; escape says how, where
    to, who moved it and who killed it ("kernel", "agent", or None when
    audit mode only reported it)."""
    event = _common(record.header, clock, None, cgroup_path, policy_name, generation, process)
    container = container_of(cgroup_path) if cgroup_path else None
    if container is not None:
        event["container"] = container.as_dict()
    event["escape"] = {
        "how": _ESCAPE_HOW[record.how],
        "tid": record.tid,
        "to": {"id": record.dst_cgroup_id, "path": dst_path,
               "guarded": bool(record.flags & abi.EscapeFlags.DST_GUARDED)},
        "mover": {"pid": record.mover_pid, "comm": record.mover_comm},
        "killed_by": killed_by,
    }
    return event


def error_event(clock: Clock, message: str, **fields: Any) -> dict[str, Any]:
    """{"kind": "error", "error": message}: something the agent could not do;
    it goes on."""
    return {"ts": clock.now(), "kind": "error", "error": message, **fields}


def agent_event(clock: Clock, state: str, status: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """{"kind": "agent", "state": ready|stopped|crashed, ...status}."""
    return {"ts": clock.now(), "kind": "agent", "state": state, **status, **fields}


def crashed_event(clock: Clock, cause: str, frames: list[str], pinned: bool) -> dict[str, Any]:
    return {"ts": clock.now(), "kind": "agent", "state": "crashed", "error": cause,
            "traceback": frames,
            "enforcement": ("kept: pinned in the kernel until the next agent adopts it"
                            if pinned else "removed: the agent was not pinned (--pin)")}


def restarting_event(reason: str, code: int, pid: int, restarts: int,
                     next_in_s: float) -> dict[str, Any]:
    """From the supervisor (run --supervise), which has no clock of its own."""
    return {"ts": rfc3339(time.time_ns()), "kind": "agent", "state": "restarting",
            "reason": reason, "exit": code, "pid": pid, "restarts": restarts,
            "next_in_s": next_in_s}


def container_event(clock: Clock, state: str, cgroup_id: int, path: str,
                    container: dict[str, Any] | None,
                    policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"kind": "container", "state": guarded|waiting|selected|released}."""
    event = {"ts": clock.now(), "kind": "container", "state": state, "container": container,
             "cgroup": {"id": cgroup_id, "path": path}}
    if policy is not None:
        event["policy"] = policy
    return event


def policy_event(clock: Clock, state: str, **fields: Any) -> dict[str, Any]:
    """{"kind": "policy", "state": reloaded|rejected}."""
    return {"ts": clock.now(), "kind": "policy", "state": state, **fields}


def loss_event(clock: Clock, lost: int, lost_total: int, shed: int = 0, shed_total: int = 0,
               workloads: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The kernel could not queue records, or shed a workload's over its
    fair share of a filling ring: never silent, and said per workload."""
    event = {"ts": clock.now(), "kind": "loss", "lost": lost, "lost_total": lost_total,
             "shed": shed, "shed_total": shed_total}
    if workloads is not None:
        event["workloads"] = workloads
    return event


class EventWriter:
    """Writes one JSON object per line. Lines are kept until flush() (after
    each batch of records, each answer, each tick) and go out together: a
    reader of the stream (a pipe to a log collector, a terminal) wakes once
    per batch, not once per event, whatever buffering the stream has
    (PYTHONUNBUFFERED is common in container images). A batch that grows
    past FLUSH_BYTES goes out at once.

    Into a pipe or socket the lines go in writes of at most PIPE_BUF bytes,
    cut between lines: the kernel writes each of those whole or not at all,
    so an agent killed halfway through a batch (SIGKILL, the OOM killer)
    never leaves half a line for the reader (a single line longer than
    PIPE_BUF excepted)."""

    FLUSH_BYTES = 1 << 16
    #: Lines kept while the stream refuses them (a full disk, a collector
    #: that stopped reading): past this they are counted and dropped, never
    #: held without bound.
    BACKLOG_BYTES = 4 << 20

    def __init__(self, stream: IO[bytes]):
        self._stream = stream
        self._lines: list[bytes] = []
        self._size = 0
        self._atomic = _atomic_write_size(stream)
        self._clock = Clock()    # for its own error events
        self.unwritable = 0      # events that could not be made into JSON
        self.lost_lines = 0      # lines dropped because the stream failed
        self._failure: str | None = None   # the stream's last error, until it recovers
        self._lost_since = 0     # lines dropped since the stream last worked

    def write(self, event: dict[str, Any]) -> None:
        """Queue one event. Never raises: a workload's bytes are escaped
        (safejson), and an event that still cannot be written is counted
        and replaced by an error event that says why."""
        try:
            line = safejson.dumps(event)
        except Exception as exc:  # noqa: BLE001 - the agent must outlive any event
            self.unwritable += 1
            line = safejson.dumps(error_event(
                self._clock, f"an event could not be written: {type(exc).__name__}: {exc}",
                unwritable_total=self.unwritable))
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write what is queued. A stream that fails (EPIPE, ENOSPC, EIO) is
        not the agent's end: the lines are kept up to BACKLOG_BYTES, then
        counted as lost, and the next write that works says so first."""
        try:
            if self._failure is not None and self._lines:
                self._write_all(safejson.dumps(error_event(
                    self._clock, f"the event stream failed ({self._failure}); "
                                 f"{self._lost_since} event lines were lost",
                    lost_lines_total=self.lost_lines)))
                self._failure, self._lost_since = None, 0
            while self._lines:
                count, chunk = next(_chunks(self._lines, self._atomic))
                self._write_all(chunk)
                del self._lines[:count]
                self._size -= len(chunk)
            self._size = 0
            self._stream.flush()
        except (OSError, ValueError) as exc:   # ValueError: the stream was closed
            self._stream_failed(exc)

    def _stream_failed(self, exc: Exception) -> None:
        self._failure = f"{type(exc).__name__}: {exc}"
        while self._lines and self._size > self.BACKLOG_BYTES:
            self._size -= len(self._lines.pop(0))
            self.lost_lines += 1
            self._lost_since += 1

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            # a raw (unbuffered) stream may take part of it, e.g. a pipe
            # write cut short by a signal; a buffered one returns it all
            written = self._stream.write(view)
            view = view[written if written is not None else len(view):]
        if self._atomic:
            self._stream.flush()   # each chunk its own write(2), buffered or not


def _atomic_write_size(stream: IO[bytes]) -> int | None:
    """PIPE_BUF for a pipe or socket (writes up to it are never split),
    None for anything else (a file, an in-memory buffer)."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return select.PIPE_BUF if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None


def _chunks(lines: list[bytes], limit: int | None) -> Iterator[tuple[int, bytes]]:
    """(how many lines, their bytes): lines joined into runs of at most
    limit bytes (a longer line alone), or all of them in one run without
    a limit."""
    if limit is None:
        yield len(lines), b"".join(lines)
        return
    run: list[bytes] = []
    size = 0
    for line in lines:
        if run and size + len(line) > limit:
            yield len(run), b"".join(run)
            run, size = [], 0
        run.append(line)
        size += len(line)
    if run:
        yield len(run), b"".join(run)
