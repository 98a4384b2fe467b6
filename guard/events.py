# SPDX-License-Identifier: Apache-2.0
"""Ring-buffer records -> typed events. Pure: bytes in, dataclasses out.

A record that is too short or of an unknown kind raises DecodeError; the
agent counts and reports it instead of crashing.
"""
from __future__ import annotations

import ctypes
import socket
import struct
import sys
from dataclasses import dataclass

from . import abi

_HEADER_SIZE = ctypes.sizeof(abi.EventHeader)
_ARGV_OFFSET = abi.ExecEvent.argv.offset
_EXEC_FLAGS = abi.ExecEvent.flags.offset
_FILENAME = slice(abi.ExecEvent.filename.offset, abi.ExecEvent.filename.offset + abi.PATH_MAX)
_EXE = slice(abi.ExecEvent.exe.offset, abi.ExecEvent.exe.offset + abi.PATH_MAX)
# value -> member, indexed: cheaper than calling the enum class per field
_KINDS = {int(k): k for k in abi.EventKind}
_PROTOS = {int(p): p for p in abi.Proto}
_HOOKS = {int(h): h for h in abi.Hook}
_CONNECT_FAMILY = abi.ConnectEvent.family.offset
_CONNECT_ADDR = abi.ConnectEvent.addr.offset
# family, proto, hook, _pad0, port of struct guard_connect_event
_CONNECT_FIXED = struct.Struct("=BBBBH")
assert _CONNECT_FIXED.size == abi.ConnectEvent._pad1.offset - _CONNECT_FAMILY
# flags, exe_size, argv_size of struct guard_exec_event, in host byte order
_EXEC_FIXED = struct.Struct("=IHH")
assert _EXEC_FIXED.size == _FILENAME.start - _EXEC_FLAGS
_ACTIONS = {int(a): a for a in abi.Action}


class DecodeError(ValueError):
    pass


@dataclass(slots=True)
class Header:
    kind: abi.EventKind
    ktime_ns: int
    cgroup_id: int
    pid: int
    ppid: int
    uid: int
    policy_id: int
    comm: str
    action: abi.Action
    rule_id: int
    start_ns: int = 0  # start of the thread group: (pid, start_ns) names one process


@dataclass(slots=True)
class ExecRecord:
    header: Header
    filename: str
    exe: str
    exe_truncated: bool
    argv: list[str]
    argv_truncated: bool
    held: bool = False  # stopped at exec until userspace lets it go (SIGCONT)


@dataclass(slots=True)
class ConnectRecord:
    header: Header
    family: int  # 4 or 6
    proto: abi.Proto
    hook: abi.Hook
    ip: str
    port: int


@dataclass(slots=True)
class SocketRecord:
    header: Header
    family: int
    type: int
    protocol: int


@dataclass(slots=True)
class CgroupRecord:
    header: Header  # header.cgroup_id is the cgroup that appeared or went
    op: abi.CgroupOp
    level: int
    path: str


@dataclass(slots=True)
class PayloadRecord:
    header: Header
    cookie: int
    family: int  # 4 or 6
    proto: abi.Proto
    sample_kind: abi.SampleKind
    flags: abi.PayloadFlags
    ip: str      # the remote end
    port: int
    payload_size: int
    sample: bytes

    @property
    def held(self) -> bool:
        return bool(self.flags & abi.PayloadFlags.HELD)


@dataclass(slots=True)
class StdioSocketRecord:
    header: Header
    cookie: int
    oldfd: int
    newfd: int
    family: int
    proto: int
    ip: str
    port: int


Record = (ExecRecord | ConnectRecord | SocketRecord | CgroupRecord | PayloadRecord
          | StdioSocketRecord)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _header(data: bytes) -> Header:
    raw = abi.EventHeader.from_buffer_copy(data)
    action = _ACTIONS.get(raw.action)
    if action is None:
        raise DecodeError(f"unknown action {raw.action}")
    return Header(kind=_KINDS[raw.kind], ktime_ns=raw.ktime_ns, cgroup_id=raw.cgroup_id,
                  pid=raw.pid, ppid=raw.ppid, uid=raw.uid, policy_id=raw.policy_id,
                  comm=_text(raw.comm), action=action, rule_id=raw.rule_id,
                  start_ns=raw.start_ns)


def split_argv(raw: bytes) -> list[str]:
    """NUL-separated arguments; a cut last argument is kept as far as it goes."""
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    if not raw:
        return []
    return [arg.decode("utf-8", errors="surrogateescape") for arg in raw.split(b"\0")]


def _exec(data: bytes) -> ExecRecord:
    # fixed part by offset, argv as far as the record goes: no copy of the
    # unused 4 KiB an ExecEvent structure would need
    flags, _exe_size, argv_size = _EXEC_FIXED.unpack_from(data, _EXEC_FLAGS)
    argv_size = min(argv_size, len(data) - _ARGV_OFFSET)
    return ExecRecord(
        header=_header(data),
        filename=_text(data[_FILENAME]),
        exe=_text(data[_EXE]),
        exe_truncated=bool(flags & abi.ExecFlags.EXE_TRUNCATED),
        argv=split_argv(data[_ARGV_OFFSET:_ARGV_OFFSET + argv_size]),
        argv_truncated=bool(flags & abi.ExecFlags.ARGV_TRUNCATED),
        held=bool(flags & abi.ExecFlags.HELD),
    )


def _connect(data: bytes) -> ConnectRecord:
    # one event per connect of a guarded cgroup: the fields are read by offset
    family, proto, hook, _pad, port = _CONNECT_FIXED.unpack_from(data, _CONNECT_FAMILY)
    if proto not in _PROTOS or hook not in _HOOKS or family not in (4, 6):
        raise DecodeError(f"bad connect record (family {family}, proto {proto}, hook {hook})")
    if family == 4:
        ip = socket.inet_ntop(socket.AF_INET, data[_CONNECT_ADDR:_CONNECT_ADDR + 4])
    else:
        ip = socket.inet_ntop(socket.AF_INET6, data[_CONNECT_ADDR:_CONNECT_ADDR + 16])
    return ConnectRecord(header=_header(data), family=family, proto=_PROTOS[proto],
                         hook=_HOOKS[hook], ip=ip, port=port)


def _socket(data: bytes) -> SocketRecord:
    ev = abi.SocketEvent.from_buffer_copy(data)
    return SocketRecord(header=_header(data), family=ev.family, type=ev.type,
                        protocol=ev.protocol)


def _cgroup(data: bytes) -> CgroupRecord:
    ev = abi.CgroupEvent.from_buffer_copy(data)
    try:
        op = abi.CgroupOp(ev.op)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    return CgroupRecord(header=_header(data), op=op, level=ev.level, path=_text(ev.path))


def _ip(family: int, raw: bytes) -> str:
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == 6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    raise DecodeError(f"bad address family {family}")


def _payload(data: bytes) -> PayloadRecord:
    # the sample travels cut to sample_size: pad the record to the struct
    fixed = abi.PayloadEvent.from_buffer_copy(bytes(data[:_PAYLOAD_SIZE]).ljust(_PAYLOAD_SIZE, b"\0"))
    try:
        kind = abi.SampleKind(fixed.sample_kind)
        proto = abi.Proto(fixed.proto)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    size = min(fixed.sample_size, abi.SAMPLE_MAX, len(data) - _SAMPLE_OFFSET)
    return PayloadRecord(header=_header(data), cookie=fixed.cookie, family=fixed.family,
                         proto=proto, sample_kind=kind, flags=abi.PayloadFlags(fixed.flags),
                         ip=_ip(fixed.family, bytes(fixed.addr)), port=fixed.port,
                         payload_size=fixed.payload_size,
                         sample=bytes(data[_SAMPLE_OFFSET:_SAMPLE_OFFSET + size]))


def _stdio_socket(data: bytes) -> StdioSocketRecord:
    ev = abi.StdioSocketEvent.from_buffer_copy(data)
    return StdioSocketRecord(header=_header(data), cookie=ev.cookie, oldfd=ev.oldfd,
                             newfd=ev.newfd, family=ev.family, proto=ev.proto,
                             ip=_ip(ev.family, bytes(ev.addr)), port=ev.port)


_SAMPLE_OFFSET = abi.PayloadEvent.sample.offset
_PAYLOAD_SIZE = ctypes.sizeof(abi.PayloadEvent)

_DECODERS = {
    abi.EventKind.EXEC: (_exec, _ARGV_OFFSET),
    abi.EventKind.CONNECT: (_connect, ctypes.sizeof(abi.ConnectEvent)),
    abi.EventKind.SOCKET: (_socket, ctypes.sizeof(abi.SocketEvent)),
    abi.EventKind.CGROUP: (_cgroup, ctypes.sizeof(abi.CgroupEvent)),
    abi.EventKind.PAYLOAD: (_payload, _SAMPLE_OFFSET),
    abi.EventKind.STDIO_SOCKET: (_stdio_socket, ctypes.sizeof(abi.StdioSocketEvent)),
}


def decode(data: bytes) -> Record:
    if len(data) < _HEADER_SIZE:
        raise DecodeError(f"record of {len(data)} bytes is shorter than an event header")
    kind = int.from_bytes(data[:4], sys.byteorder)
    try:
        decoder, min_size = _DECODERS[abi.EventKind(kind)]
    except (ValueError, KeyError):
        raise DecodeError(f"unknown event kind {kind}") from None
    if len(data) < min_size:
        raise DecodeError(f"{abi.EventKind(kind).name.lower()} record of {len(data)} bytes "
                          f"is shorter than {min_size}")
    return decoder(data)
