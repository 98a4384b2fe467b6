# SPDX-License-Identifier: Apache-2.0
"""Ring-buffer records -> typed events. Pure: bytes in, dataclasses out.

A record that is too short or of an unknown kind raises DecodeError; the
agent counts and reports it instead of crashing.
"""
from __future__ import annotations

import ctypes
import ipaddress
import sys
from dataclasses import dataclass

from . import abi

_HEADER_SIZE = ctypes.sizeof(abi.EventHeader)
_ARGV_OFFSET = abi.ExecEvent.argv.offset


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


@dataclass(slots=True)
class ExecRecord:
    header: Header
    filename: str
    exe: str
    exe_truncated: bool
    argv: list[str]
    argv_truncated: bool


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


Record = ExecRecord | ConnectRecord | SocketRecord


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _header(raw: abi.EventHeader) -> Header:
    try:
        kind, action = abi.EventKind(raw.kind), abi.Action(raw.action)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    return Header(kind=kind, ktime_ns=raw.ktime_ns, cgroup_id=raw.cgroup_id, pid=raw.pid,
                  ppid=raw.ppid, uid=raw.uid, policy_id=raw.policy_id, comm=_text(raw.comm),
                  action=action, rule_id=raw.rule_id)


def split_argv(raw: bytes) -> list[str]:
    """NUL-separated arguments; a cut last argument is kept as far as it goes."""
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    if not raw:
        return []
    return [arg.decode("utf-8", errors="surrogateescape") for arg in raw.split(b"\0")]


def _exec(data: bytes) -> ExecRecord:
    if len(data) < _ARGV_OFFSET:
        raise DecodeError(f"exec record of {len(data)} bytes is shorter than its header")
    ev = abi.ExecEvent.from_buffer_copy(data.ljust(ctypes.sizeof(abi.ExecEvent), b"\0"))
    argv_size = min(ev.argv_size, len(data) - _ARGV_OFFSET)
    flags = abi.ExecFlags(ev.flags & 3)
    return ExecRecord(
        header=_header(ev.hdr),
        filename=_text(ev.filename),
        exe=_text(ev.exe),
        exe_truncated=bool(flags & abi.ExecFlags.EXE_TRUNCATED),
        argv=split_argv(data[_ARGV_OFFSET:_ARGV_OFFSET + argv_size]),
        argv_truncated=bool(flags & abi.ExecFlags.ARGV_TRUNCATED),
    )


def _connect(data: bytes) -> ConnectRecord:
    ev = abi.ConnectEvent.from_buffer_copy(data[:ctypes.sizeof(abi.ConnectEvent)])
    raw = bytes(ev.addr)
    ip = ipaddress.IPv4Address(raw[:4]) if ev.family == 4 else ipaddress.IPv6Address(raw)
    try:
        proto, hook = abi.Proto(ev.proto), abi.Hook(ev.hook)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    return ConnectRecord(header=_header(ev.hdr), family=ev.family, proto=proto, hook=hook,
                         ip=str(ip), port=ev.port)


def _socket(data: bytes) -> SocketRecord:
    ev = abi.SocketEvent.from_buffer_copy(data[:ctypes.sizeof(abi.SocketEvent)])
    return SocketRecord(header=_header(ev.hdr), family=ev.family, type=ev.type,
                        protocol=ev.protocol)


_DECODERS = {
    abi.EventKind.EXEC: (_exec, _ARGV_OFFSET),
    abi.EventKind.CONNECT: (_connect, ctypes.sizeof(abi.ConnectEvent)),
    abi.EventKind.SOCKET: (_socket, ctypes.sizeof(abi.SocketEvent)),
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
