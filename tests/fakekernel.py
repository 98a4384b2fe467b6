# SPDX-License-Identifier: Apache-2.0
"""A fake kernel for the agent: its whole record path without root.

The real agent (guard.agent.Agent) is started by its real start() and runs
on the real record path, decode -> enrich -> classify -> decide -> act ->
emit; only its I/O boundary is replaced, through its seams (Agent(kernel=,
metadata=), agent.files_of, agent.process_of, agent.hold_watchdog):

    the kernel         FakeHost, the Kernel of guard/kernel/host.py: hands
                       start() the fakes below and a FakeRing
    ring buffer        records built here (exec_record, connect_record, ...)
                       from the ctypes layouts of guard/kernel/abi.py, pushed into
                       the agent's pending list and drained by _drain()
    guard.maps.Maps    FakeMaps: every call recorded, the kernel's state kept
    GuardObjects       FakeObjects: attachments and socket-reset runs recorded
    os.kill, /proc     SignalSink: Responder's signals are recorded, never sent;
                       the cgroup a pid lives in is what the test says
    /proc/PID/root     FakeFiles (agent.files_of): a container's files
    cgroup2 mount      FakeCgroupTree: directories under a temporary path that
                       guard.cgroups.resolve() accepts (discovery works)
    runtime API        FakeMetadata

    with fake_agent(policy) as kernel:
        kernel.exec(["ssh", "-R", "9000:localhost:22", "host"], held=True)
        assert kernel.signals.sent == [(kernel.pid, signal.SIGCONT)]

Pids default to FAKE_PID, above any pid_max (2^22): /proc has nothing for
them, so the process table and namespace lookups never touch a real process.
"""
from __future__ import annotations

import ctypes
import io
import ipaddress
import os
import posixpath
import shutil
import signal
import struct
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import orjson
import pytest

from guard.agent.holds import HoldWatchdog
from guard.kernel import abi
from guard.kernel.abi import Action, CgroupOp, EventKind, ExecFlags, Hook, PayloadFlags, Proto, SampleKind
from guard.workloads.cgroups import Cgroup, resolve
from guard.detect import detector as detect
from guard.detect.files import CONFIG_READ_MAX, ProcessFiles
from guard.workloads.runtime import ContainerInfo
from guard.report.events import EventWriter
from guard.workloads.process import ProcessInfo
from guard.policy.model import Policy
from guard.policy.load import default_policy, parse_policies

__all__ = [
    "FAKE_PID", "FakeCgroupNames", "FakeCgroupTree", "FakeControl", "FakeFiles", "FakeHost", "FakeKernel",
    "IdleWatchdog",
    "FakeMaps", "FakeMetadata", "FakeObjects", "FakeRing", "SignalSink", "cgroup_record", "connect_record",
    "encode_header", "exec_record", "fake_agent", "kernel", "payload_record", "signals",
    "socket_record", "stdio_socket_record", "escape_record",
]

FAKE_PID = 5_000_001        # above pid_max's ceiling (4194304): never a real process
FAKE_PPID = 5_000_000
FAKE_START_NS = 7_000_000_000
FAKE_COOKIE = 0xC00C1E
FAKE_CGROUP_ID = 77         # for records built without a kernel to name a cgroup
DEFAULT_CGROUP = "/sandbox.slice/agent-1.scope"
DIR_LIST_MAX = getattr(detect, "DIR_LIST_MAX", 1 << 30)   # names ProcessFiles.list_dir gives


# --------------------------------------------------------------------------
# Records, as the kernel writes them into the ring


def _raw(text: str | bytes) -> bytes:
    """A workload's bytes: str goes back to bytes the way events.py decoded it."""
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


def _put(struct: ctypes.Structure, field: Any, data: bytes) -> None:
    """Raw bytes into a char or u8 array field, NULs included, cut to its size
    (assigning to a ctypes char array stops at the first NUL)."""
    data = data[:field.size]
    ctypes.memmove(ctypes.addressof(struct) + field.offset, data, len(data))


def _address(ip: str | bytes | None, family: int | None) -> tuple[int, bytes]:
    """(family 4 or 6, 16 address bytes) for an address or raw bytes."""
    if ip is None:
        return family or 4, bytes(16)
    if isinstance(ip, bytes):
        return family or 4, ip[:16].ljust(16, b"\0")
    parsed = ipaddress.ip_address(ip)
    return family or parsed.version, parsed.packed.ljust(16, b"\0")


def encode_header(kind: EventKind | int, *, ktime_ns: int | None = None,
                  cgroup_id: int = FAKE_CGROUP_ID, pid: int = FAKE_PID, ppid: int = FAKE_PPID,
                  uid: int = 0, policy_id: int = 0, comm: str | bytes = "",
                  action: Action | int = Action.LOG, rule_id: int = abi.RULE_NONE,
                  start_ns: int = FAKE_START_NS, size: int = 0) -> abi.EventHeader:
    """struct guard_event_header; ktime_ns defaults to now (CLOCK_BOOTTIME)."""
    hdr = abi.EventHeader(kind=kind, size=size, cgroup_id=cgroup_id, pid=pid, ppid=ppid,
                          uid=uid, policy_id=policy_id, action=action, rule_id=rule_id,
                          start_ns=start_ns,
                          ktime_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME)
                          if ktime_ns is None else ktime_ns)
    # the kernel's comm: at most 15 bytes and a NUL; raw bytes may fill all 16
    raw = _raw(comm)
    _put(hdr, abi.EventHeader.comm, raw if isinstance(comm, bytes) else raw[:abi.COMM_LEN - 1])
    return hdr


def _finish(struct: ctypes.Structure, used: int, size: int | None) -> bytes:
    """The first used bytes of a record, with hdr.size saying so (or a lie)."""
    struct.hdr.size = used if size is None else size
    return bytes(struct)[:used]


def exec_record(argv: Sequence[str | bytes] = ("/bin/true",), *,
                filename: str | bytes | None = None, exe: str | bytes | None = None,
                held: bool = False, argv_truncated: bool = False, exe_truncated: bool = False,
                flags: int | None = None, argv_bytes: bytes | None = None,
                argv_size: int | None = None, exe_size: int | None = None,
                size: int | None = None, **header: Any) -> bytes:
    """struct guard_exec_event, cut after argv_size bytes of argv as the kernel
    sends it. argv items end in a NUL each, like the argument area of a
    process; an area past GUARD_ARGV_MAX is cut and flagged as the kernel
    does. filename and exe default to /usr/bin/<argv[0]> (argv[0] itself if
    absolute); comm to its basename. argv_bytes gives the area raw."""
    first = _raw(argv[0]) if argv else b""
    path = first if first.startswith(b"/") else b"/usr/bin/" + first
    filename = _raw(filename) if filename is not None else path
    exe = _raw(exe) if exe is not None else path
    area = argv_bytes if argv_bytes is not None else b"".join(_raw(a) + b"\0" for a in argv)
    if len(area) > abi.ARGV_MAX:
        area, argv_truncated = area[:abi.ARGV_MAX], True
    if flags is None:
        flags = ((ExecFlags.HELD if held else 0)
                 | (ExecFlags.ARGV_TRUNCATED if argv_truncated else 0)
                 | (ExecFlags.EXE_TRUNCATED if exe_truncated else 0))
    header.setdefault("comm", posixpath.basename(first)[:abi.COMM_LEN - 1])
    ev = abi.ExecEvent(hdr=encode_header(EventKind.EXEC, **header), flags=flags,
                       exe_size=min(len(exe), abi.PATH_MAX - 1) if exe_size is None else exe_size,
                       argv_size=len(area) if argv_size is None else argv_size)
    _put(ev, abi.ExecEvent.filename, filename[:abi.PATH_MAX - 1])
    _put(ev, abi.ExecEvent.exe, exe[:abi.PATH_MAX - 1])
    offset = abi.ExecEvent.argv.offset
    return _finish(ev, offset + len(area), size)[:offset] + area


def connect_record(ip: str | bytes | None = "198.18.0.2", port: int = 3333, *,
                   proto: Proto | int = Proto.TCP, hook: Hook | int | None = None,
                   family: int | None = None, repeats: int = 0, fold_ns: int = 0,
                   size: int | None = None, **header: Any) -> bytes:
    """struct guard_connect_event; the hook defaults to connect4/6, or
    sendmsg4/6 for UDP. fold_ns: the connect opened a fold window then;
    repeats: the count of a stale window it replaced (bpf/lib/fold.h)."""
    family, addr = _address(ip, family)
    if hook is None:
        hook = {(4, False): Hook.CONNECT4, (6, False): Hook.CONNECT6,
                (4, True): Hook.SENDMSG4, (6, True): Hook.SENDMSG6}[
            (6 if family == 6 else 4, proto == Proto.UDP)]
    ev = abi.ConnectEvent(hdr=encode_header(EventKind.CONNECT, **header), family=family,
                          proto=proto, hook=hook, port=port, repeats=repeats, fold_ns=fold_ns)
    _put(ev, abi.ConnectEvent.addr, addr)
    return _finish(ev, ctypes.sizeof(ev), size)


def socket_record(family: int = 17, type: int = 3, protocol: int = 0, *,  # noqa: A002
                  size: int | None = None, **header: Any) -> bytes:
    """struct guard_socket_event (default: AF_PACKET, SOCK_RAW)."""
    ev = abi.SocketEvent(hdr=encode_header(EventKind.SOCKET, **header), family=family,
                         type=type, protocol=protocol)
    return _finish(ev, ctypes.sizeof(ev), size)


def cgroup_record(path: str | bytes, op: CgroupOp | int = CgroupOp.MKDIR, *,
                  level: int | None = None, size: int | None = None, **header: Any) -> bytes:
    """struct guard_cgroup_event; header cgroup_id is the cgroup that came or went."""
    raw = _raw(path)
    ev = abi.CgroupEvent(hdr=encode_header(EventKind.CGROUP, **header), op=op,
                         level=raw.strip(b"/").count(b"/") + 1 if level is None else level)
    _put(ev, abi.CgroupEvent.path, raw[:abi.PATH_MAX - 1])  # bpf_probe_read_kernel_str
    return _finish(ev, ctypes.sizeof(ev), size)


def payload_record(sample: bytes = b"", *, kind: SampleKind | int = SampleKind.FIRST,
                   ip: str | bytes | None = "198.18.0.2", port: int = 3333,
                   cookie: int = FAKE_COOKIE, proto: Proto | int = Proto.TCP,
                   flags: int = 0, held: bool = False, family: int | None = None,
                   payload_size: int | None = None, sample_size: int | None = None,
                   size: int | None = None, unjudged: int = 0, **header: Any) -> bytes:
    """struct guard_payload_event, cut after the sample as the kernel sends it;
    a sample past GUARD_SAMPLE_MAX is cut and flagged TRUNCATED."""
    family, addr = _address(ip, family)
    payload_size = len(sample) if payload_size is None else payload_size
    sample = sample[:abi.SAMPLE_MAX]
    flags |= (PayloadFlags.HELD if held else 0) | (
        PayloadFlags.TRUNCATED if payload_size > abi.SAMPLE_MAX else 0)
    ev = abi.PayloadEvent(hdr=encode_header(EventKind.PAYLOAD, **header), cookie=cookie,
                          family=family, proto=proto, sample_kind=kind, flags=flags, port=port,
                          sample_size=len(sample) if sample_size is None else sample_size,
                          payload_size=payload_size, unjudged=unjudged)
    _put(ev, abi.PayloadEvent.addr, addr)
    _put(ev, abi.PayloadEvent.sample, sample)
    return _finish(ev, abi.PayloadEvent.sample.offset + len(sample), size)


def stdio_socket_record(ip: str | bytes | None = "198.18.0.9", port: int = 4444, *,
                        oldfd: int = 3, newfd: int = 0, cookie: int = FAKE_COOKIE,
                        proto: Proto | int = Proto.TCP, family: int | None = None,
                        size: int | None = None, **header: Any) -> bytes:
    """struct guard_stdio_socket_event: a socket dup'ed onto stdin/out/err."""
    family, addr = _address(ip, family)
    ev = abi.StdioSocketEvent(hdr=encode_header(EventKind.STDIO_SOCKET, **header),
                              cookie=cookie, oldfd=oldfd, newfd=newfd, family=family,
                              proto=proto, port=port)
    _put(ev, abi.StdioSocketEvent.addr, addr)
    return _finish(ev, ctypes.sizeof(ev), size)


def escape_record(dst_cgroup_id: int = 4242, dst_path: str | bytes = "/elsewhere", *,
                  how: abi.EscapeHow | int = abi.EscapeHow.PROCS, flags: int = 0,
                  tid: int | None = None, mover_pid: int | None = None,
                  mover_comm: str | bytes = "sh", size: int | None = None,
                  **header: Any) -> bytes:
    """struct guard_escape_event: a guarded process (the header's pid, and
    cgroup_id: the guarded cgroup it left) moved to dst_cgroup_id; action
    defaults to KILL (the kernel killed it at the move)."""
    header.setdefault("action", Action.KILL)
    hdr = encode_header(EventKind.ESCAPE, **header)
    ev = abi.EscapeEvent(hdr=hdr, dst_cgroup_id=dst_cgroup_id, how=how, flags=flags,
                         tid=hdr.pid if tid is None else tid,
                         mover_pid=hdr.pid if mover_pid is None else mover_pid)
    _put(ev, abi.EscapeEvent.mover_comm, _raw(mover_comm)[:abi.COMM_LEN - 1])
    _put(ev, abi.EscapeEvent.dst_path, _raw(dst_path)[:abi.PATH_MAX - 1])
    return _finish(ev, ctypes.sizeof(ev), size)


def _dns_name(name: str | bytes) -> bytes:
    """A name in wire form, uncompressed; bytes are taken as labels raw."""
    raw = _raw(name).rstrip(b".")
    return b"".join(bytes([len(label)]) + label for label in raw.split(b".") if label) + b"\0"


_DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "TXT": 16, "AAAA": 28, "HTTPS": 65}


def dns_message(name: str | bytes = "example.com", qtype: str | int = "A",
                answers: Sequence[tuple] = (("example.com", "A", "192.0.2.1"),), *,
                ident: int = 0x1234, response: bool = True, rcode: int = 0,
                truncated: bool = False, ttl: int = 60) -> bytes:
    """A DNS message as a resolver writes one: a question, and answer records
    (owner, type, value[, ttl]) whose owner is a pointer to the question
    name when it is that name. value: an address for A/AAAA, a name for
    CNAME/NS, raw rdata as bytes for any type. A query when response=False
    (and no answers)."""
    flags = (0x8000 | 0x0080 if response else 0) | 0x0100 | (0x0200 if truncated else 0) | rcode
    question = _dns_name(name)
    out = (struct.pack(">HHHHHH", ident, flags, 1, len(answers), 0, 0) + question
           + struct.pack(">HH", _DNS_TYPES.get(qtype, qtype), 1))
    for owner, kind, value, *rest in answers:
        kind = _DNS_TYPES.get(kind, kind)
        if isinstance(value, bytes):
            rdata = value
        elif kind in (1, 28):
            rdata = ipaddress.ip_address(value).packed
        else:
            rdata = _dns_name(value)
        owned = b"\xc0\x0c" if _dns_name(owner) == question else _dns_name(owner)
        out += owned + struct.pack(">HHIH", kind, 1, rest[0] if rest else ttl, len(rdata)) + rdata
    return out


def dns_record(message: bytes | None = None, *,
               direction: abi.DnsDirection | int = abi.DnsDirection.ANSWER,
               flags: abi.DnsFlags | int = 0, ip: str | bytes | None = "198.18.53.53",
               port: int = 53, name_id: int = 0, ttl: int = 0, learned: int = 0,
               proto: Proto | int = Proto.UDP, cookie: int = FAKE_COOKIE, netns: int = 0,
               family: int | None = None, message_size: int | None = None,
               size: int | None = None, **header: Any) -> bytes:
    """struct guard_dns_event, cut after the message as the kernel sends it;
    a message past GUARD_DNS_MSG_MAX is cut and flagged CUT. message defaults
    to dns_message() (an answer: example.com A 192.0.2.1). An answer's header
    has the process fields 0, as the kernel writes them (softirq)."""
    message = dns_message() if message is None else message
    if direction == abi.DnsDirection.ANSWER:
        for field in ("pid", "ppid", "uid", "start_ns"):
            header.setdefault(field, 0)
        header.setdefault("comm", "")
    family, addr = _address(ip, family)
    if len(message) > abi.DNS_MSG_MAX:
        message, flags = message[:abi.DNS_MSG_MAX], flags | abi.DnsFlags.CUT
    ev = abi.DnsEvent(hdr=encode_header(EventKind.DNS, **header), cookie=cookie, name_id=name_id,
                      netns=netns, family=family, proto=proto, direction=direction, flags=flags,
                      port=port, ttl=ttl, learned=learned,
                      message_size=len(message) if message_size is None else message_size)
    _put(ev, abi.DnsEvent.addr, addr)
    _put(ev, abi.DnsEvent.message, message)
    return _finish(ev, abi.DnsEvent.message.offset + len(message), size)


__all__ += ["dns_message", "dns_record"]


# --------------------------------------------------------------------------
# Maps and objects


class _Recorder:
    """Every public call goes into calls as (method, args) and, when the
    fakes share one, into a timeline as ("maps.method", args): the order of
    effects across maps, objects and signals. fail[method] = exc makes the
    next call of method raise exc (once)."""

    _prefix = ""

    def __init__(self, timeline: list | None = None):
        self.calls: list[tuple[str, tuple]] = []
        self.timeline = timeline if timeline is not None else []
        self.fail: dict[str, BaseException] = {}

    def _record(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        self.timeline.append((f"{self._prefix}.{method}", args))
        exc = self.fail.pop(method, None)
        if exc is not None:
            raise exc

    def called(self, method: str) -> list[tuple]:
        """The args of every call of method, in order."""
        return [args for name, args in self.calls if name == method]


class FakeMaps(_Recorder):
    """Stands in for guard.maps.Maps: the kernel state it would write, kept
    in plain dicts tests read and fill."""

    _prefix = "maps"

    def __init__(self, map_fds: Mapping[str, int] | None = None, timeline: list | None = None):
        super().__init__(timeline)
        self.policies: dict[int, Any] = {}         # policy id -> CompiledPolicy
        self.slots: dict[int, tuple[int, int]] = {}  # slot -> (policy id, fail-closed id)
        self.guarded: dict[int, int] = {}          # cgroup id -> slot
        self.levels: dict[int, int] = {}           # cgroup id -> level
        self.flags: dict[int, int] = {}            # cgroup id -> CgroupFlags (parent, exempt)
        self.flow_actions: dict[int, Action] = {}  # cookie -> verdict (eg_flow_verdicts)
        self.blocked: dict[int, int] = {}          # tgid -> start_ns (eg_proc_verdicts)
        self.held: dict[int, int] = {}             # tgid -> since ns (eg_held_execs)
        self.resets: list[int] = []                # cookies marked in eg_destroy
        self.anchors: dict[int, int] = {}
        self.counter_values: dict[str, int] = {}   # e.g. {"events_lost": 3}
        self.workload_loss_values: dict[int, tuple[int, int]] = {}   # cgroup id -> (shed, lost)
        self.watching = False
        self.heartbeat_timeout_ms = 0
        self.heartbeat_ns = 0
        self.hold_timeout_ms = 0
        self.fold_window_ms = 0
        # eg_connect_fold: fold key bytes -> (start_ns, count); take_errors: what take_fold raises
        self.folds: dict[bytes, tuple[int, int]] = {}
        self.fold_take_error: BaseException | None = None
        self.prestaged: tuple[int, list[int], list[int]] | None = None
        self.learned: dict[int, int] = {}          # cgroup id -> learned addresses kept
        self.closed = False

    def close(self) -> None:
        self._record("close")
        self.closed = True

    # -- policies
    def install_policy(self, policy_id: int, policy) -> None:
        self._record("install_policy", policy_id, policy)
        if policy_id in self.policies:
            raise ValueError(f"policy id {policy_id} is already installed")
        self.policies[policy_id] = policy

    def prestage(self, policy_id: int, values: Sequence[int], prefixlens: Sequence[int]) -> None:
        self._record("prestage", policy_id, len(values))
        self.prestaged = (policy_id, list(values), list(prefixlens))

    def drop_prestaged(self) -> None:
        self._record("drop_prestaged")
        self.prestaged = None

    def remove_policy(self, policy_id: int) -> None:
        self._record("remove_policy", policy_id)
        self.policies.pop(policy_id, None)

    def sweep_learned(self, now_ns: int) -> dict[int, int]:
        self._record("sweep_learned", now_ns)
        return dict(self.learned)

    @property
    def installed(self) -> list[int]:
        return sorted(self.policies)

    def set_slot(self, slot: int, policy_id: int, fail_closed_policy_id: int = 0) -> None:
        self._record("set_slot", slot, policy_id, fail_closed_policy_id)
        for pid in (policy_id, fail_closed_policy_id):
            if pid and pid not in self.policies:
                raise ValueError(f"policy id {pid} is not installed")
        self.slots[slot] = (policy_id, fail_closed_policy_id)

    def adopt(self) -> tuple[int, list[int]]:
        """What a previous agent left: fill policies and guarded first."""
        self._record("adopt")
        return max(self.policies, default=0), list(self.guarded)

    # -- guarded cgroups
    def guard(self, cgroup_id: int, level: int, slot: int, flags: int = 0) -> None:
        self._record("guard", cgroup_id, level, slot, *((flags,) if flags else ()))
        self.guarded[cgroup_id] = slot
        self.flags[cgroup_id] = int(flags)
        self.levels[cgroup_id] = level

    def exempt(self, cgroup_id: int, level: int) -> None:
        self._record("exempt", cgroup_id, level)
        self.guarded.pop(cgroup_id, None)
        self.flags[cgroup_id] = int(abi.CgroupFlags.EXEMPT)
        self.levels[cgroup_id] = level

    def settle_levels(self) -> None:
        self._record("settle_levels")

    def unguard_adopted(self, cgroup_id: int) -> None:
        self._record("unguard_adopted", cgroup_id)
        self.guarded.pop(cgroup_id, None)

    def unguard(self, cgroup_id: int) -> None:
        self._record("unguard", cgroup_id)
        self.guarded.pop(cgroup_id, None)
        self.flags.pop(cgroup_id, None)
        self.levels.pop(cgroup_id, None)

    def watch_cgroups(self, enabled: bool) -> None:
        self._record("watch_cgroups", enabled)
        self.watching = enabled

    def heartbeat(self, timeout_ms: int) -> None:
        self._record("heartbeat", timeout_ms)
        self.heartbeat_timeout_ms = timeout_ms
        self.heartbeat_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    # -- detections
    def set_anchors(self, table: dict[int, int]) -> None:
        self._record("set_anchors", len(table))
        self.anchors = dict(table)

    def set_hold_timeout(self, timeout_ms: int) -> None:
        self._record("set_hold_timeout", timeout_ms)
        self.hold_timeout_ms = timeout_ms

    def set_fold_window(self, window_ms: int) -> None:
        self._record("set_fold_window", window_ms)
        self.fold_window_ms = window_ms

    def take_fold(self, key: bytes) -> tuple[int, int] | None:
        """The kernel's count for a fold window (fill folds[key] in a test),
        taken out; fold_take_error set: raised, as a failed lookup would."""
        self._record("take_fold", key)
        if self.fold_take_error is not None:
            raise self.fold_take_error
        return self.folds.pop(key, None)

    def flow_verdict(self, cookie: int, action: Action) -> None:
        self._record("flow_verdict", cookie, Action(action))
        self.flow_actions[cookie] = Action(action)

    def flow_verdicts(self, cookies: list[int], action: Action) -> None:
        self._record("flow_verdicts", list(cookies), Action(action))
        for cookie in cookies:
            self.flow_actions[cookie] = Action(action)

    def block_process(self, tgid: int, start_ns: int) -> None:
        self._record("block_process", tgid, start_ns)
        self.blocked[tgid] = start_ns

    def release_held(self, tgid: int) -> bool:
        """False when tgid was not held: whoever deletes the entry settles it."""
        self._record("release_held", tgid)
        return self.held.pop(tgid, None) is not None

    def held_execs(self) -> dict[int, int]:
        return dict(self.held)

    def request_reset(self, cookie: int) -> None:
        self._record("request_reset", cookie)
        self.resets.append(cookie)

    # -- counters
    def counters(self) -> dict[str, int]:
        return {c.name.lower(): self.counter_values.get(c.name.lower(), 0) for c in abi.Counter}

    def workload_losses(self) -> dict[int, tuple[int, int]]:
        """Set workload_loss_values[cgroup id] = (shed, lost) in a test."""
        return dict(self.workload_loss_values)


class FakeObjects(_Recorder):
    """Stands in for guard.bpf.loader.GuardObjects: nothing is loaded;
    attachments and socket-reset runs are recorded."""

    _prefix = "objects"

    def __init__(self, can_reset_sockets: bool = True, timeline: list | None = None):
        super().__init__(timeline)
        self.objects: dict[str, Any] = {}
        self.map_fds: dict[str, int] = {}
        self.cgroups: dict[int, str] = {}          # attached: cgroup id -> path
        self.sentinels: dict[int, str] = {}        # container parents: cgroup id -> path
        self.optional: dict[int, frozenset[str] | None] = {}   # its packet programs (None: all)
        self.unavailable: dict[str, str] = {} if can_reset_sockets else {
            "destroy": "not in this fake"}
        self.pins = None
        self.adopted = False
        self.pinned: list[int] = []
        self.attached_global = False
        self.syscall_hook = False                   # sys_enter attached (set_syscall_hook)
        self.socket_resets = 0                      # runs of the reset iterator
        self._can_reset = can_reset_sockets
        self.closed: bool | None = None             # keep_pins of the close, once closed

    def pinned_cgroups(self) -> list[int]:
        return list(self.pinned)

    def programs(self):
        return iter(())

    def attach_global(self, syscall_hook: bool = False) -> None:
        self.syscall_hook = syscall_hook
        self._record("attach_global")

    def set_syscall_hook(self, on: bool) -> None:
        self.syscall_hook = on
        self._record(f"set_syscall_hook {on}")
        self.attached_global = True

    def attach_cgroup(self, path: str, cgroup_id: int,
                      optional: frozenset[str] | None = None) -> str:
        if cgroup_id not in self.cgroups:
            self._record("attach_cgroup", path, cgroup_id)
        self.optional[cgroup_id] = optional
        return self.cgroups.setdefault(cgroup_id, path)

    def attach_sentinel(self, path: str, cgroup_id: int) -> str:
        self._record("attach_sentinel", path, cgroup_id)
        self.sentinels[cgroup_id] = path
        return path

    @property
    def can_reset_sockets(self) -> bool:
        return self._can_reset

    def run_socket_reset(self) -> None:
        self._record("run_socket_reset")
        self.socket_resets += 1

    def mark_guarded_tasks(self) -> None:
        self._record("mark_guarded_tasks")   # the adoption iterator (escape.bpf.c)

    def detach_cgroup(self, cgroup_id: int) -> None:
        self._record("detach_cgroup", cgroup_id)
        self.cgroups.pop(cgroup_id, None)
        self.sentinels.pop(cgroup_id, None)

    def close(self, keep_pins: bool = False) -> None:
        self._record("close", keep_pins)
        self.cgroups.clear()
        self.closed = keep_pins


# --------------------------------------------------------------------------
# Signals and /proc


class _OsProxy(types.ModuleType):
    """guard.actions' view of os: everything real but kill."""

    def __init__(self, sink: "SignalSink"):
        super().__init__("os")
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def kill(self, pid: int, sig: int) -> None:
        self._sink.kill(pid, sig)


class SignalSink:
    """Responder's signals recorded, never sent. While installed,
    guard.actions sees an os whose kill() lands in `sent`, and
    cgroup_path_of(pid) (guard.actions and guard.agent) answers from
    `cgroup_of` (None: the process is gone), else `default_cgroup`.
    in_netns_of runs its function here (no setns) and records the pid.
    The last sink installed receives everything until it is removed."""

    def __init__(self, timeline: list | None = None, default_cgroup: str | None = None):
        self.sent: list[tuple[int, int]] = []           # (pid, signal)
        self.cgroup_of: dict[int, str | None] = {}
        self.default_cgroup = default_cgroup
        self.gone: set[int] = set()                     # kill() raises ProcessLookupError
        self.netns_runs: list[int] = []
        self.timeline = timeline if timeline is not None else []
        self._restore: list[tuple[Any, str, Any]] = []

    def kill(self, pid: int, sig: int) -> None:
        if pid in self.gone:
            raise ProcessLookupError(3, "No such process")
        self.sent.append((pid, signal.Signals(sig)))
        self.timeline.append(("signal", (pid, signal.Signals(sig))))

    def signals_to(self, pid: int) -> list[signal.Signals]:
        return [sig for to, sig in self.sent if to == pid]

    def cgroup_path_of(self, pid: int) -> str | None:
        return self.cgroup_of.get(pid, self.default_cgroup)

    def in_netns_of(self, pid: int, fn: Callable[[], None]) -> bool:
        self.netns_runs.append(pid)
        fn()
        return True

    def install(self) -> "SignalSink":
        import guard.respond.responder
        import guard.agent.core
        self._patch(guard.respond.responder, "os", _OsProxy(self))
        self._patch(guard.respond.responder, "cgroup_path_of", self.cgroup_path_of)
        self._patch(guard.respond.responder, "in_netns_of", self.in_netns_of)
        if hasattr(guard.agent.core, "cgroup_path_of"):
            self._patch(guard.agent.core, "cgroup_path_of", self.cgroup_path_of)
        return self

    def _patch(self, module: Any, name: str, value: Any) -> None:
        self._restore.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    def remove(self) -> None:
        while self._restore:
            module, name, value = self._restore.pop()
            setattr(module, name, value)

    def __enter__(self) -> "SignalSink":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class FakeFiles(ProcessFiles):
    """A container's files as a process sees them, from a dict of absolute
    path -> bytes (or a directory, read once). Paths resolve against cwd
    like ProcessFiles; user and home come from the files' /etc/passwd and
    uid, as ProcessFiles derives them, unless given. Every path asked for
    is kept in `reads`."""

    def __init__(self, files: Mapping[str, bytes] | str | os.PathLike | None = None, *,
                 cwd: str = "/", uid: int = 0, home: str | None = None,
                 user: str | None = None, pid: int = FAKE_PID):
        super().__init__(pid)
        self.root = "/nonexistent/fake-root"   # never opened: both readers below are fakes
        self.cwd = cwd                          # ProcessFiles reads these from /proc
        self.uid = uid
        self._home, self._user = home, user
        if files is None or isinstance(files, Mapping):
            self.files = {posixpath.normpath("/" + p.lstrip("/")): bytes(b)
                          for p, b in (files or {}).items()}
        else:
            self.files = _read_tree(Path(files))
        self.reads: list[str] = []

    def __repr__(self) -> str:
        """Enough to rebuild it (hypothesis prints it with a failing example)."""
        files = {path: data if len(data) <= 200 else data[:200] + b"...%d bytes" % len(data)
                 for path, data in self.files.items()}
        return f"FakeFiles({files!r}, cwd={self.cwd!r}, uid={self.uid!r})"

    @property
    def user(self) -> str:
        return self._user if self._user is not None else super().user

    @property
    def home(self) -> str:
        return self._home if self._home is not None else super().home

    def read_file(self, path: str) -> bytes | None:
        self.reads.append(path)
        absolute = self._absolute(path)
        if absolute == "/dev/null":
            return b""
        data = self.files.get(absolute)
        if data is None or len(data) <= CONFIG_READ_MAX:
            return data
        return _cut(data[:CONFIG_READ_MAX])     # as ProcessFiles: it says it was cut

    def list_dir(self, path: str) -> list[str] | None:
        prefix = self._absolute(path).rstrip("/") + "/"
        names = sorted({p[len(prefix):].split("/", 1)[0] for p in self.files
                        if p.startswith(prefix)})
        return names[:DIR_LIST_MAX + 1] if names else None   # one more: cut, it says


try:
    from guard.detect.classify import FileContent

    def _cut(data: bytes) -> bytes:
        return FileContent(data, truncated=True)
except ImportError:     # before read_file said whether a file was cut
    def _cut(data: bytes) -> bytes:
        return data


def _read_tree(root: Path) -> dict[str, bytes]:
    """Regular files below root (symlinks not followed), by path inside it."""
    files = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as fh:     # one byte past the limit: cut, it says
                    files["/" + str(path.relative_to(root))] = fh.read(CONFIG_READ_MAX + 1)
    return files


# --------------------------------------------------------------------------
# cgroups and container metadata


class FakeCgroupTree:
    """A cgroup2 mount stand-in: directories with a cgroup.procs file below a
    temporary path, which guard.cgroups.resolve() takes for cgroups; their
    ids are the directories' inode numbers, as on cgroup2."""

    def __init__(self, mount: str | os.PathLike | None = None):
        self._owned = mount is None
        self.mount = Path(tempfile.mkdtemp(prefix="fake-cgroup2-") if mount is None else mount)
        self.by_id: dict[int, str] = {}

    def mkdir(self, relative: str) -> Cgroup:
        path = self.mount / relative.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        (path / "cgroup.procs").touch()
        cg = resolve(relative, self.mount)
        self.by_id[cg.id] = cg.relative
        return cg

    def rmdir(self, relative: str) -> None:
        shutil.rmtree(self.mount / relative.lstrip("/"), ignore_errors=True)
        self.by_id = {i: r for i, r in self.by_id.items() if (self.mount / r.lstrip("/")).exists()}

    def name_of(self, cgroup_id: int) -> str | None:
        return self.by_id.get(cgroup_id)

    def close(self) -> None:
        if self._owned:
            shutil.rmtree(self.mount, ignore_errors=True)


class FakeCgroupNames:
    """guard.cgroups.CgroupNames over a FakeCgroupTree: registered cgroups,
    then `extra` (ids a test names), then the tree's directories."""

    def __init__(self, tree: FakeCgroupTree):
        self.tree = tree
        self.registered: dict[int, str] = {}
        self.extra: dict[int, str] = {}

    def register(self, cgroup: Cgroup) -> None:
        self.registered[cgroup.id] = cgroup.relative

    def unregister(self, cgroup_id: int) -> None:
        self.registered.pop(cgroup_id, None)

    def name(self, cgroup_id: int) -> str | None:
        return (self.registered.get(cgroup_id) or self.extra.get(cgroup_id)
                or self.tree.name_of(cgroup_id))

    def close(self) -> None:
        pass


class FakeMetadata:
    """guard.metadata.MetadataCache without a runtime: add() plays the
    runtime's answer."""

    def __init__(self):
        self.known: dict[str, ContainerInfo] = {}
        self.requested: list[str] = []
        self.forgotten: list[str] = []
        self.version = 0
        self.closed = False

    def add(self, container_id: str, info: ContainerInfo) -> None:
        self.known[container_id] = info
        self.version += 1

    def request(self, container_id: str) -> None:
        self.requested.append(container_id)

    def get(self, container_id: str) -> ContainerInfo | None:
        return self.known.get(container_id)

    def forget(self, container_id: str) -> None:
        self.forgotten.append(container_id)
        self.known.pop(container_id, None)

    def close(self) -> None:
        self.closed = True


# --------------------------------------------------------------------------
# The loop's file descriptors: the ring and the control socket


class _Wakeup:
    """A pipe the loop's selector waits on: wake() makes it readable,
    clear() empties it."""

    def __init__(self):
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        self.closed = False

    def fileno(self) -> int:
        return self._read

    def wake(self) -> None:
        os.write(self._write, b"x")

    def clear(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._read)
            os.close(self._write)


class FakeRing(_Wakeup):
    """Stands in for libbpf.RingBuffer: put() queues records and wakes the
    loop; consume() and poll() hand them to the callback (the agent's
    pending list), as the ring does. Install it as agent._ring."""

    def __init__(self, callback: Callable[[bytes], Any]):
        super().__init__()
        self._callback = callback
        self.queued: list[bytes] = []
        self.consumed = 0

    def put(self, *raws: bytes) -> None:
        self.queued.extend(raws)
        self.wake()

    def epoll_fd(self) -> int:
        return self.fileno()

    def consume(self) -> int:
        self.clear()
        batch, self.queued = self.queued, []
        for raw in batch:
            self._callback(raw)
        self.consumed += len(batch)
        return len(batch)

    def poll(self, timeout_ms: int) -> int:
        return self.consume()


class FakeControl(_Wakeup):
    """Stands in for guard.control.server.ControlServer: ask() queues a
    request and wakes the loop; handle(answer) answers each, the answers
    kept in `answers`. Install it as agent._control."""

    def __init__(self):
        super().__init__()
        self.requests: list[tuple[dict, tuple[int, ...]]] = []
        self.answers: list[dict] = []

    def ask(self, request: dict, files: Sequence[int] = ()) -> None:
        self.requests.append((request, tuple(files)))
        self.wake()

    def handle(self, answer: Callable[..., dict]) -> None:
        self.clear()
        while self.requests:
            request, files = self.requests.pop(0)
            self.answers.append(answer(request, files))


# --------------------------------------------------------------------------
# The agent on the fakes


class IdleWatchdog(HoldWatchdog):
    """The hold watchdog, its thread never started: tests call check_holds()."""

    def start(self) -> None:
        pass


class FakeHost:
    """The Kernel of guard/kernel/host.py over the fakes, and its factory
    (Agent(kernel=...)): the mount is the FakeCgroupTree, the names its
    FakeCgroupNames, load() hands over the FakeObjects and FakeMaps, the ring
    is a FakeRing. `mismatches` is what check_abi() reports; fail_load = exc
    makes load() raise exc (as GuardObjects raises LibbpfError)."""

    def __init__(self, fake: "FakeKernel"):
        self._fake = fake
        self.opened: tuple[int, Any] | None = None     # (ring_size, pin_dir) of the agent
        self.mismatches: list[str] = []
        self.fail_load: BaseException | None = None
        self.objects: FakeObjects | None = None
        self.maps: FakeMaps | None = None
        self.ring: FakeRing | None = None

    def __call__(self, ring_size: int, pin_dir: Any) -> "FakeHost":
        self.opened = (ring_size, pin_dir)
        return self

    def cgroup_mount(self) -> Path:
        return self._fake.tree.mount

    def cgroup_names(self, mount: Path) -> FakeCgroupNames:
        return self._fake.names

    def check_abi(self) -> list[str]:
        return list(self.mismatches)

    def load(self) -> None:
        exc, self.fail_load = self.fail_load, None
        if exc is not None:
            raise exc
        self.objects, self.maps = self._fake.objects, self._fake.maps

    def open_ring(self, on_record: Callable[[bytes], Any]) -> FakeRing:
        self.ring = FakeRing(on_record)
        return self.ring


class FakeKernel:
    """A real Agent started on the fakes: Agent.start() runs as it does on
    the host, with FakeHost for the kernel and FakeMetadata for the runtime;
    the hold watchdog's thread is not started (IdleWatchdog). The "ready"
    event start() writes is read already (events() still has it). A context
    manager: closing it removes the signal sink and the cgroup tree and takes
    the agent's responder away, so nothing it does afterwards can signal
    anything."""

    def __init__(self, policy: Policy | Sequence[Policy] | str | None = None, *,
                 cgroups: Sequence[str] = (DEFAULT_CGROUP,), can_reset_sockets: bool = True,
                 files: FakeFiles | None = None, **agent_kw: Any):
        from guard.agent import core as agent_module
        if isinstance(policy, str):
            policy = parse_policies(policy, "<fake-kernel>")
        self.timeline: list[tuple[str, tuple]] = []
        self.tree = FakeCgroupTree()
        self.signals = SignalSink(self.timeline).install()
        try:
            self.output = io.BytesIO()
            self.writer = EventWriter(self.output)
            self.host = FakeHost(self)
            self.metadata = FakeMetadata()
            self.agent = agent = agent_module.Agent(
                policy if policy is not None else default_policy(),
                cgroup_specs=list(cgroups), writer=self.writer, kernel=self.host,
                metadata=lambda _sockets: self.metadata, **agent_kw)
            self.maps = FakeMaps(timeline=self.timeline)
            self.objects = FakeObjects(can_reset_sockets, timeline=self.timeline)
            self.names = FakeCgroupNames(self.tree)
            self.files: dict[int, FakeFiles] = {}       # pid -> its files
            self.default_files = files or FakeFiles()
            self.processes: dict[int, ProcessInfo] = {}  # pid -> what /proc would say
            self.failures: list[tuple[bytes, BaseException, str]] = []
            self._read_at = 0
            for spec in cgroups:
                self.tree.mkdir(spec)
            agent.files_of, agent.process_of = self.files_of, self.process_of
            agent.hold_watchdog = IdleWatchdog
            agent.start()
            self.take_lines()           # the "ready" event
            self._record_failures()
        except BaseException:
            self.close()
            raise
        self.cgroup: Cgroup | None = (next(iter(agent.registry.guarded.values()))
                                      if agent.registry.guarded else None)
        self.signals.default_cgroup = self.cgroup.relative if self.cgroup else None

    def _record_failures(self) -> None:
        """Every exception a handler lets out, with its traceback, for the
        tests to show (the loop's own safety net, if any, still runs)."""
        agent = self.agent
        handle = agent.handle

        def recorded(raw: bytes) -> None:
            try:
                handle(raw)
            except BaseException as exc:
                self.failures.append((bytes(raw), exc, traceback.format_exc()))
                raise
        agent.handle = recorded

    def files_of(self, pid: int) -> FakeFiles:
        return self.files.get(pid, self.default_files)

    def process_of(self, pid: int) -> ProcessInfo:
        return self.processes.get(pid) or ProcessInfo(exe=None, argv=[], argv_truncated=False)

    # -- the loop's other duties
    def check_holds(self) -> int:
        """One pass of the hold watchdog (its thread is not started here)."""
        return self.agent._holds.check()

    def tick(self) -> list[dict[str, Any]]:
        """One tick of the loop (heartbeat, watchdog reports, retirements),
        then the events written since the last read."""
        self.agent._tick(time.monotonic())
        return self.new_events()

    # -- what the kernel installed
    def policy_id(self, slot: int = 0) -> int:
        return self.maps.slots[slot][0]

    def fail_closed_id(self, slot: int = 0) -> int:
        return self.maps.slots[slot][1]

    def rule_id(self, name: str, slot: int = 0) -> int:
        return self.maps.policies[self.policy_id(slot)].rule_names.index(name)

    @property
    def pid(self) -> int:
        return FAKE_PID

    # -- records in
    def defaults(self, header: dict[str, Any]) -> dict[str, Any]:
        """Header fields a record of the guarded cgroup under slot 0 has."""
        if self.cgroup is not None:
            header.setdefault("cgroup_id", self.cgroup.id)
        header.setdefault("policy_id", self.policy_id())
        return header

    def push(self, *raws: bytes) -> None:
        """Records into the ring, drained as the loop drains a batch."""
        self.agent._pending.extend(raws)
        self.agent._drain()

    def feed(self, *raws: bytes) -> list[dict[str, Any]]:
        """push(), then the events written since the last read."""
        self.push(*raws)
        return self.new_events()

    def exec(self, argv: Sequence[str | bytes], **kw: Any) -> list[dict[str, Any]]:
        return self.feed(exec_record(argv, **self.defaults(kw)))

    def connect(self, ip: str = "198.18.0.2", port: int = 3333, **kw: Any) -> list[dict]:
        return self.feed(connect_record(ip, port, **self.defaults(kw)))

    def socket(self, **kw: Any) -> list[dict[str, Any]]:
        return self.feed(socket_record(**self.defaults(kw)))

    def payload(self, sample: bytes, **kw: Any) -> list[dict[str, Any]]:
        return self.feed(payload_record(sample, **self.defaults(kw)))

    def stdio_socket(self, **kw: Any) -> list[dict[str, Any]]:
        return self.feed(stdio_socket_record(**self.defaults(kw)))

    def mkdir(self, relative: str, **kw: Any) -> list[dict[str, Any]]:
        """A cgroup appears: its directory, then the kernel's record of it."""
        cg = self.tree.mkdir(relative)
        kw.setdefault("cgroup_id", cg.id)
        return self.feed(cgroup_record(cg.relative, CgroupOp.MKDIR, level=cg.level,
                                       **self.defaults(kw)))

    def rmdir(self, relative: str, **kw: Any) -> list[dict[str, Any]]:
        """A cgroup goes: its directory, then the kernel's record of it."""
        ids = [i for i, r in self.tree.by_id.items() if r == "/" + relative.lstrip("/")]
        self.tree.rmdir(relative)
        if ids:
            kw.setdefault("cgroup_id", ids[0])
        return self.feed(cgroup_record(relative, CgroupOp.RMDIR, **self.defaults(kw)))

    # -- events out
    def take_lines(self) -> list[bytes]:
        """Lines written since the last take (flushed first)."""
        self.writer.flush()
        data = self.output.getvalue()
        new, self._read_at = data[self._read_at:], len(data)
        return new.splitlines()

    def new_events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.take_lines()]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every event written so far (of one kind)."""
        self.writer.flush()
        events = [orjson.loads(line) for line in self.output.getvalue().splitlines()]
        return [e for e in events if kind is None or e.get("kind") == kind]

    # -- lifetime
    @property
    def ring(self) -> FakeRing | None:
        """The ring start() opened (None before, or once stop() closed it)."""
        return self.agent._ring

    def close(self) -> None:
        agent = getattr(self, "agent", None)
        if agent is not None:           # no signal can outlive the sink
            agent._responder = agent._holds = None
        host = getattr(self, "host", None)
        if host is not None and host.ring is not None:
            host.ring.close()
        self.signals.remove()
        self.tree.close()

    def __enter__(self) -> "FakeKernel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def fake_agent(policy: Policy | Sequence[Policy] | str | None = None, **kw: Any) -> FakeKernel:
    """A real Agent on the fakes (see FakeKernel); policy is a Policy, a set
    of them, or policy YAML; the embedded default when None. cgroups=()
    turns on discovery, as an agent started without --cgroup."""
    return FakeKernel(policy, **kw)


@pytest.fixture
def signals():
    """Responder's signals recorded, never sent (SignalSink)."""
    with SignalSink() as sink:
        yield sink


@pytest.fixture
def kernel():
    """The default policy's agent on the fakes, guarding DEFAULT_CGROUP."""
    with fake_agent() as fake:
        yield fake
