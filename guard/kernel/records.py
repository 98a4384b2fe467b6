# SPDX-License-Identifier: Apache-2.0
"""Ring-buffer records -> typed events. Pure: bytes in, dataclasses out.

A record that is too short or of an unknown kind raises DecodeError; the
agent counts and reports it instead of crashing.
"""
from __future__ import annotations

import ctypes
import functools
import socket
import struct
import sys
from dataclasses import dataclass

from guard.kernel import abi

_HEADER_SIZE = ctypes.sizeof(abi.EventHeader)
_ARGV_OFFSET = abi.ExecEvent.argv.offset
_EXEC_FLAGS = abi.ExecEvent.flags.offset
_FILENAME = slice(abi.ExecEvent.filename.offset, abi.ExecEvent.filename.offset + abi.PATH_MAX)
_EXE = slice(abi.ExecEvent.exe.offset, abi.ExecEvent.exe.offset + abi.PATH_MAX)
# value -> member, indexed: cheaper than calling the enum class per field
_KINDS = {int(k): k for k in abi.EventKind}
_PROTOS = {int(p): p for p in abi.Proto}
_HOOKS = {int(h): h for h in abi.Hook}
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
    repeats: int = 0   # connects of a stale fold window no agent flushed (bpf/lib/fold.h)
    fold_ns: int = 0   # start (CLOCK_BOOTTIME) of the fold window it opened; 0: none
    addr: bytes = b""  # the address as the kernel keys it: 16 bytes, IPv4 in the first 4


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
    unjudged: int = 0   # abi.Unjudged with PayloadFlags.UNJUDGED: why it was refused

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


@dataclass(slots=True)
class DnsRecord:
    """A DNS query refused or logged at the send, or an answer received, of a
    policy that allows by name. For an answer the header's process fields
    are 0 (the kernel received it in softirq, not in the receiver's task).
    message is the DNS message as the workload sent it or the resolver
    answered it: hostile bytes (guard.detect.classify.dns.parse_message)."""
    header: Header
    cookie: int
    name_id: int      # the name rule the question matched; 0: none
    netns: int        # network namespace cookie of the socket; 0: unknown
    family: int       # 4 or 6: the resolver's
    proto: abi.Proto
    direction: abi.DnsDirection
    flags: abi.DnsFlags
    port: int         # the resolver's
    ip: str           # the resolver's
    ttl: int          # answer: seconds the learned addresses got (clamped by the policy)
    learned: int      # answer: addresses learned
    message: bytes


@dataclass(slots=True)
class EscapeRecord:
    """A guarded process moved out of its guarded cgroup. The header names
    that process (pid, comm, start_ns), the guarded cgroup it left
    (cgroup_id) and what the kernel did (action: KILL, or WOULD_KILL in
    audit mode)."""
    header: Header
    how: abi.EscapeHow
    flags: abi.EscapeFlags
    dst_cgroup_id: int
    dst_path: str     # below the cgroup2 mount; "" for a clone (named by id)
    tid: int          # the thread moved (THREADS), the child (CLONE), else the pid
    mover_pid: int    # who wrote the pid (or cloned)
    mover_comm: str


Record = (ExecRecord | ConnectRecord | SocketRecord | CgroupRecord | PayloadRecord
          | StdioSocketRecord | DnsRecord | EscapeRecord)


def _text(raw: bytes) -> str:
    """A NUL-terminated kernel string (comm, a path) as str: bytes that are
    not UTF-8 kept with surrogateescape, as argv is, so nothing is lost on
    the way to the event (guard/report/safejson.py escapes them there)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="surrogateescape")


def _header(data: bytes) -> Header:
    return _header_of(_HEADER_FIXED.unpack_from(data))


def _header_of(fields: tuple) -> Header:
    """A Header from the first 14 values a struct of _HEADER_FORMAT unpacked."""
    (kind, _size, ktime_ns, cgroup_id, pid, ppid, uid, policy_id, comm, action_code, _pad0,
     rule_id, _pad1, start_ns) = fields[:14]
    action = _ACTIONS.get(action_code)
    if action is None:
        raise DecodeError(f"unknown action {action_code}")
    return Header(_KINDS[kind], ktime_ns, cgroup_id, pid, ppid, uid, policy_id,
                  _cached(_COMMS, comm, _text), action, rule_id, start_ns)


#: Texts of the most recent raw values (comm, addresses): a storm of records
#: from one process repeats them. Bounded: emptied when full, so a workload
#: that varies them costs the decode it always cost, never memory.
TEXT_CACHED = 4096
_COMMS: dict[bytes, str] = {}
_ADDRESSES: dict[bytes, str] = {}


def _cached(cache: dict, raw: bytes, make) -> str:
    text = cache.get(raw)
    if text is None:
        text = make(raw)
        if len(cache) >= TEXT_CACHED:
            cache.clear()
        cache[raw] = text
    return text


def _ipv4(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw)


def _ipv6(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


_HEADER_FORMAT = f"=IIQQIIII{abi.COMM_LEN}sBBHIQ"
_HEADER_FIXED = struct.Struct(_HEADER_FORMAT)
assert _HEADER_FIXED.size == ctypes.sizeof(abi.EventHeader)
# the whole struct guard_connect_event in one unpack: the header, then
# family, proto, hook, _pad0, port, _pad1, addr, repeats, _pad2, fold_ns
_CONNECT_ALL = struct.Struct(_HEADER_FORMAT + "BBBBHH16sIIQ")
assert _CONNECT_ALL.size == ctypes.sizeof(abi.ConnectEvent)
assert abi.ConnectEvent.family.offset == _HEADER_FIXED.size
assert abi.ConnectEvent.addr.offset == _HEADER_FIXED.size + 8
assert abi.ConnectEvent.fold_ns.offset == _CONNECT_ALL.size - 8


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
    # one event per connect of a guarded cgroup (a storm makes 100,000 a
    # second): header and fields in one unpack, texts from the caches
    fields = _CONNECT_ALL.unpack_from(data)
    family, proto, hook, _pad0, port, _pad1, addr, repeats, _pad2, fold_ns = fields[14:]
    found_proto, found_hook = _PROTOS.get(proto), _HOOKS.get(hook)
    if found_proto is None or found_hook is None or family not in (4, 6):
        raise DecodeError(f"bad connect record (family {family}, proto {proto}, hook {hook})")
    if family == 4:
        ip = _cached(_ADDRESSES, addr[:4], _ipv4)
    else:
        ip = _cached(_ADDRESSES, addr, _ipv6)
    return ConnectRecord(_header_of(fields), family, found_proto, found_hook, ip, port,
                         repeats, fold_ns, addr)


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
    # one record per sampled flow: the fixed fields by offset, and the sample
    # as far as the record goes (it travels cut to sample_size)
    (cookie, family, proto, sample_kind, flags, port, sample_size, payload_size, unjudged,
     addr) = _PAYLOAD_FIXED.unpack_from(data, _PAYLOAD_COOKIE)
    kind = _SAMPLE_KINDS.get(sample_kind)
    if kind is None or proto not in _PROTOS:
        raise DecodeError(f"bad payload record (sample kind {sample_kind}, proto {proto})")
    size = min(sample_size, abi.SAMPLE_MAX, len(data) - _SAMPLE_OFFSET)
    return PayloadRecord(header=_header(data), cookie=cookie, family=family,
                         proto=_PROTOS[proto], sample_kind=kind,
                         flags=_payload_flags(flags), ip=_ip(family, addr), port=port,
                         payload_size=payload_size,
                         sample=bytes(data[_SAMPLE_OFFSET:_SAMPLE_OFFSET + size]),
                         unjudged=unjudged)


_SAMPLE_KINDS = {int(k): k for k in abi.SampleKind}
_PAYLOAD_COOKIE = abi.PayloadEvent.cookie.offset
_PAYLOAD_FIXED = struct.Struct("=QBBBBHHII16s")
assert _PAYLOAD_FIXED.size == abi.PayloadEvent.sample.offset - _PAYLOAD_COOKIE


@functools.lru_cache(maxsize=256)
def _payload_flags(bits: int) -> abi.PayloadFlags:
    return abi.PayloadFlags(bits)


def _stdio_socket(data: bytes) -> StdioSocketRecord:
    ev = abi.StdioSocketEvent.from_buffer_copy(data)
    return StdioSocketRecord(header=_header(data), cookie=ev.cookie, oldfd=ev.oldfd,
                             newfd=ev.newfd, family=ev.family, proto=ev.proto,
                             ip=_ip(ev.family, bytes(ev.addr)), port=ev.port)


_SAMPLE_OFFSET = abi.PayloadEvent.sample.offset


def _dns(data: bytes) -> DnsRecord:
    # the fixed fields by offset, the message as far as the record goes (it
    # travels cut to message_size): a lying message_size reads no further
    (cookie, name_id, netns, family, proto, direction, flags, port, message_size, ttl, learned,
     _pad, addr) = _DNS_FIXED.unpack_from(data, _DNS_COOKIE)
    found = _DNS_DIRECTIONS.get(direction)
    if found is None or proto not in _PROTOS:
        raise DecodeError(f"bad dns record (direction {direction}, proto {proto})")
    size = min(message_size, abi.DNS_MSG_MAX, len(data) - _DNS_MESSAGE)
    return DnsRecord(header=_header(data), cookie=cookie, name_id=name_id, netns=netns,
                     family=family, proto=_PROTOS[proto], direction=found,
                     flags=_dns_flags(flags), port=port, ip=_ip(family, addr), ttl=ttl,
                     learned=learned, message=bytes(data[_DNS_MESSAGE:_DNS_MESSAGE + size]))


_DNS_DIRECTIONS = {int(d): d for d in abi.DnsDirection}
_DNS_COOKIE = abi.DnsEvent.cookie.offset
_DNS_MESSAGE = abi.DnsEvent.message.offset
# cookie, name_id, netns, family, proto, direction, flags, port, message_size,
# ttl, learned, _pad0, addr of struct guard_dns_event
_DNS_FIXED = struct.Struct("=QQQBBBBHHIHH16s")
assert _DNS_FIXED.size == _DNS_MESSAGE - _DNS_COOKIE


@functools.lru_cache(maxsize=256)
def _dns_flags(bits: int) -> abi.DnsFlags:
    return abi.DnsFlags(bits)


def _escape(data: bytes) -> EscapeRecord:
    ev = abi.EscapeEvent.from_buffer_copy(data)
    try:
        how = abi.EscapeHow(ev.how)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    return EscapeRecord(header=_header(data), how=how, flags=abi.EscapeFlags(ev.flags),
                        dst_cgroup_id=ev.dst_cgroup_id, dst_path=_text(ev.dst_path), tid=ev.tid,
                        mover_pid=ev.mover_pid, mover_comm=_text(ev.mover_comm))


_DECODERS = {
    abi.EventKind.EXEC: (_exec, _ARGV_OFFSET),
    abi.EventKind.CONNECT: (_connect, ctypes.sizeof(abi.ConnectEvent)),
    abi.EventKind.SOCKET: (_socket, ctypes.sizeof(abi.SocketEvent)),
    abi.EventKind.CGROUP: (_cgroup, ctypes.sizeof(abi.CgroupEvent)),
    abi.EventKind.PAYLOAD: (_payload, _SAMPLE_OFFSET),
    abi.EventKind.STDIO_SOCKET: (_stdio_socket, ctypes.sizeof(abi.StdioSocketEvent)),
    abi.EventKind.DNS: (_dns, _DNS_MESSAGE),
    abi.EventKind.ESCAPE: (_escape, ctypes.sizeof(abi.EscapeEvent)),
}


def decode(data: bytes) -> Record:
    if len(data) < _HEADER_SIZE:
        raise DecodeError(f"record of {len(data)} bytes is shorter than an event header")
    kind = int.from_bytes(data[:4], sys.byteorder)
    found = _DECODERS.get(kind)
    if found is None:
        raise DecodeError(f"unknown event kind {kind}")
    decoder, min_size = found
    if len(data) < min_size:
        raise DecodeError(f"{abi.EventKind(kind).name.lower()} record of {len(data)} bytes "
                          f"is shorter than {min_size}")
    return decoder(data)


_KIND = abi.EventHeader.kind   # guard_event_header.kind, at its ABI offset


def kind_of(raw: bytes) -> int | None:
    """The kind field of a record's header, when there is one."""
    end = _KIND.offset + _KIND.size
    return int.from_bytes(raw[_KIND.offset:end], sys.byteorder) if len(raw) >= end else None


_WRITTEN_NS = struct.Struct("=Q")   # guard_event_header.ktime_ns
_WRITTEN_AT = abi.EventHeader.ktime_ns.offset
assert abi.EventHeader.ktime_ns.size == _WRITTEN_NS.size


def written_ns(raw: bytes) -> int:
    """When the kernel wrote a record (CLOCK_BOOTTIME); 0 if it is too short
    to say (decode reports it)."""
    if len(raw) < _WRITTEN_AT + _WRITTEN_NS.size:
        return 0
    return _WRITTEN_NS.unpack_from(raw, _WRITTEN_AT)[0]
