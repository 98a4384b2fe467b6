# SPDX-License-Identifier: Apache-2.0
"""Python mirror of bpf/include/guard_abi.h.

Every ctypes layout here names the C struct it mirrors; tests/unit/test_abi.py
compares each one, field by field, with the BTF of the compiled objects, and the
loader repeats that check before it attaches anything.
"""
from __future__ import annotations

import ctypes
import enum
import struct

COMM_LEN = 16
PATH_MAX = 256
ARGV_MAX = 4096
PATH_DEPTH = 32
RULES_PER_PREFIX = 64
CGROUP_LEVELS = 32
RULE_NONE = 0
POLICY_SLOTS = 256
SAMPLE_MAX = 512
ARGV_SCAN = 512
RULE_DETECTION = 0xFFFF
DNS_MSG_MAX = 512
DNS_NAME_MAX = 256
DNS_NAMES_PER_ADDR = 4
DNS_LEARNED_MAX = 16384
DNS_ANSWERS_MAX = 64
DNS_PORTS = 4
FAIR_SHARE = 16             # a workload's share of the ring's bytes per window while half full
FAIR_WINDOW_MS = 100
WORKLOAD_LOSS_MAX = 4096


class EventKind(enum.IntEnum):
    EXEC = 1
    CONNECT = 2
    SOCKET = 3
    CGROUP = 4
    PAYLOAD = 5
    STDIO_SOCKET = 6
    DNS = 7
    ESCAPE = 8


class CgroupOp(enum.IntEnum):
    MKDIR = 1
    RMDIR = 2


class ConfigFlags(enum.IntFlag):
    WATCH_CGROUPS = 1
    PROC_VERDICTS = 2


class EgressFamilies(enum.IntFlag):
    IPV4 = 1
    IPV6 = 2


class Action(enum.IntEnum):
    ALLOW = 0
    LOG = 1
    BLOCK = 2
    KILL = 3
    # audit mode: let through and reported (log); enforce would have blocked/killed
    WOULD_BLOCK = 5
    WOULD_KILL = 9

    @property
    def label(self) -> str:
        """What the kernel did, as events spell it (a WOULD_ action: log)."""
        return "log" if self in _WOULD else self.name.lower()

    @property
    def would(self) -> str | None:
        """What enforce mode would have done, for an audit verdict; else None."""
        enforced = _WOULD.get(self)
        return enforced.label if enforced is not None else None

    @property
    def enforced(self) -> "Action":
        """The action enforce mode takes for this verdict."""
        return _WOULD.get(self, self)

    @property
    def audited(self) -> "Action":
        """This verdict under audit mode: BLOCK and KILL become WOULD_."""
        return _AUDITED.get(self, self)


_WOULD = {Action.WOULD_BLOCK: Action.BLOCK, Action.WOULD_KILL: Action.KILL}
_AUDITED = {enforced: would for would, enforced in _WOULD.items()}


class Proto(enum.IntEnum):
    ANY = 0
    TCP = 6
    UDP = 17

    @property
    def label(self) -> str:
        return self.name.lower()


class Hook(enum.IntEnum):
    CONNECT4 = 1
    CONNECT6 = 2
    SENDMSG4 = 3
    SENDMSG6 = 4
    BIND4 = 5
    BIND6 = 6


class Counter(enum.IntEnum):
    EVENTS_SENT = 0
    EVENTS_LOST = 1
    VERDICT_ALLOW = 2
    VERDICT_LOG = 3
    VERDICT_BLOCK = 4
    VERDICT_KILL = 5
    FLOWS_SAMPLED = 6
    FLOWS_HELD = 7
    HOLD_TIMEOUTS = 8
    FLOW_DROPS = 9
    DNS_LEARNED = 10
    DNS_REFUSED = 11
    DNS_UNTRUSTED = 12
    EVENTS_SHED = 13
    DNS_FOLDED = 14
    UDP_FOLDED = 15


COUNTER_MAX = 16


class ExecMatch(enum.IntEnum):
    NAME = 1
    PATH = 2


class ExecFlags(enum.IntFlag):
    ARGV_TRUNCATED = 1
    EXE_TRUNCATED = 2
    HELD = 4


class ExecHold(enum.IntFlag):
    ALWAYS = 1
    IF_ANCHOR = 2


class DetectFlags(enum.IntFlag):
    PAYLOAD = 1
    HOLD = 2
    DNS = 4
    STDIO_SOCKET = 8
    HOLD_TUNNEL = 16


class AnchorKind(enum.IntFlag):
    PAYLOAD = 1
    ARGV = 2
    ARGV_PAIR = 4   # 2 bytes, keyed as a window with its first two bytes 0: argv only


class SampleKind(enum.IntEnum):
    FIRST = 1
    PROXY = 2
    UDP = 3
    DNS_ANSWER = 4
    INBOUND = 5
    SERVER_FIRST = 6


class PolicyNames(enum.IntFlag):
    ON = 1


class DnsDirection(enum.IntEnum):
    QUERY = 1
    ANSWER = 2


class DnsFlags(enum.IntFlag):
    LEARNED = 1
    UNTRUSTED = 2
    LOOPED = 4
    UNPARSED = 8
    NO_RULE = 16
    FULL = 32
    CUT = 64
    NO_TABLE = 128


class NameKind(enum.IntEnum):
    EXACT = 1
    BELOW = 2


class EscapeHow(enum.IntEnum):
    """enum guard_escape_how: how a guarded process left its guarded cgroup"""
    PROCS = 1     # its pid written into another cgroup's cgroup.procs
    THREADS = 2   # one of its threads written into another cgroup.threads
    CLONE = 3     # a child cloned into another cgroup (clone3 CLONE_INTO_CGROUP)


class EscapeFlags(enum.IntFlag):
    DST_GUARDED = 1   # the destination is guarded, by another policy slot
    UNSIGNALLED = 2   # the kernel could not signal it: userspace kills it


class CgroupFlags(enum.IntFlag):
    """enum guard_cgroup_flags: eg_guarded entry kinds (guard_abi.h)"""
    PARENT = 1   # a container parent: sentinel.bpf.c judges what is below it
    EXEMPT = 2   # below a parent, not guarded (the agent's own, what nothing selects)


class PayloadFlags(enum.IntFlag):
    HELD = 1
    TRUNCATED = 2
    SOCKS5 = 4
    HTTP_CONNECT = 8
    SOCKS4 = 16
    NAMED = 32
    WEBSOCKET = 64
    UNJUDGED = 128   # refused unjudged: PayloadEvent.unjudged says why


class Unjudged(enum.IntEnum):
    """Why the kernel refused a first payload unjudged (PayloadEvent.unjudged)."""
    WS_FILLER = 1    # more WebSocket frames of filler than the kernel reads
    URGENT = 2       # urgent data (MSG_OOB): not the stream the server reads


u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class EventHeader(ctypes.Structure):
    """struct guard_event_header"""
    c_name = "guard_event_header"
    _fields_ = [
        ("kind", u32),
        ("size", u32),
        ("ktime_ns", u64),
        ("cgroup_id", u64),
        ("pid", u32),
        ("ppid", u32),
        ("uid", u32),
        ("policy_id", u32),
        ("comm", ctypes.c_char * COMM_LEN),
        ("action", u8),
        ("_pad0", u8),
        ("rule_id", u16),
        ("_pad1", u32),
        ("start_ns", u64),
    ]


class ExecEvent(ctypes.Structure):
    """struct guard_exec_event (argv is cut to argv_size bytes on the wire)"""
    c_name = "guard_exec_event"
    _fields_ = [
        ("hdr", EventHeader),
        ("flags", u32),
        ("exe_size", u16),
        ("argv_size", u16),
        ("filename", ctypes.c_char * PATH_MAX),
        ("exe", ctypes.c_char * PATH_MAX),
        ("argv", ctypes.c_char * ARGV_MAX),
    ]


class ConnectEvent(ctypes.Structure):
    """struct guard_connect_event"""
    c_name = "guard_connect_event"
    _fields_ = [
        ("hdr", EventHeader),
        ("family", u8),
        ("proto", u8),
        ("hook", u8),
        ("_pad0", u8),
        ("port", u16),
        ("_pad1", u16),
        ("addr", u8 * 16),
        ("repeats", u32),   # connects of a stale fold window no agent flushed (bpf/lib/fold.h)
        ("_pad2", u32),
        ("fold_ns", u64),   # start of the fold window this connect opened; 0: none
    ]


class SocketEvent(ctypes.Structure):
    """struct guard_socket_event"""
    c_name = "guard_socket_event"
    _fields_ = [
        ("hdr", EventHeader),
        ("family", u32),
        ("type", u32),
        ("protocol", u32),
        ("_pad0", u32),
    ]


class CgroupEvent(ctypes.Structure):
    """struct guard_cgroup_event"""
    c_name = "guard_cgroup_event"
    _fields_ = [
        ("hdr", EventHeader),
        ("op", u32),
        ("level", u32),
        ("path", ctypes.c_char * PATH_MAX),
    ]


class EscapeEvent(ctypes.Structure):
    """struct guard_escape_event: hdr names the process that left and the
    guarded cgroup it left (hdr.cgroup_id)"""
    c_name = "guard_escape_event"
    _fields_ = [
        ("hdr", EventHeader),
        ("dst_cgroup_id", u64),
        ("how", u32),
        ("flags", u32),
        ("tid", u32),
        ("mover_pid", u32),
        ("mover_comm", ctypes.c_char * COMM_LEN),
        ("dst_path", ctypes.c_char * PATH_MAX),
    ]


class PayloadEvent(ctypes.Structure):
    """struct guard_payload_event (sample is cut to sample_size bytes on the wire)"""
    c_name = "guard_payload_event"
    _fields_ = [
        ("hdr", EventHeader),
        ("cookie", u64),
        ("family", u8),
        ("proto", u8),
        ("sample_kind", u8),
        ("flags", u8),
        ("port", u16),
        ("sample_size", u16),
        ("payload_size", u32),
        ("unjudged", u32),
        ("addr", u8 * 16),
        ("sample", u8 * SAMPLE_MAX),
    ]


class StdioSocketEvent(ctypes.Structure):
    """struct guard_stdio_socket_event"""
    c_name = "guard_stdio_socket_event"
    _fields_ = [
        ("hdr", EventHeader),
        ("cookie", u64),
        ("oldfd", u32),
        ("newfd", u32),
        ("family", u8),
        ("proto", u8),
        ("port", u16),
        ("_pad0", u32),
        ("addr", u8 * 16),
    ]


class DnsEvent(ctypes.Structure):
    """struct guard_dns_event (message is cut to message_size bytes on the wire)"""
    c_name = "guard_dns_event"
    _fields_ = [
        ("hdr", EventHeader),
        ("cookie", u64),
        ("name_id", u64),
        ("netns", u64),
        ("family", u8),
        ("proto", u8),
        ("direction", u8),
        ("flags", u8),
        ("port", u16),
        ("message_size", u16),
        ("ttl", u32),
        ("learned", u16),
        ("_pad0", u16),
        ("addr", u8 * 16),
        ("message", u8 * DNS_MSG_MAX),
    ]


class FlowVerdict(ctypes.Structure):
    """struct guard_flow_verdict"""
    c_name = "guard_flow_verdict"
    _fields_ = [("action", u8), ("_pad0", u8 * 7)]


class ProcVerdict(ctypes.Structure):
    """struct guard_proc_verdict"""
    c_name = "guard_proc_verdict"
    _fields_ = [("start_ns", u64), ("action", u8), ("_pad0", u8 * 7)]


class CgroupInfo(ctypes.Structure):
    """struct guard_cgroup_info"""
    c_name = "guard_cgroup_info"
    _fields_ = [("policy_slot", u32), ("flags", u32)]


class Slot(ctypes.Structure):
    """struct guard_slot"""
    c_name = "guard_slot"
    _fields_ = [("policy_id", u32), ("fail_closed_policy_id", u32)]


class PolicyConfig(ctypes.Structure):
    """struct guard_policy_config"""
    c_name = "guard_policy_config"
    _fields_ = [
        ("default_action", u8),
        ("deny_raw_sockets", u8),
        ("stdio_socket_action", u8),
        ("names", u8),
        ("detect_flags", u32),
        ("dns_ttl_min", u32),
        ("dns_ttl_max", u32),
        ("dns_ports", u16 * DNS_PORTS),
        ("resolver_rule_id", u16),
        ("audit", u8),
        ("egress_families", u8),
    ]


class Config(ctypes.Structure):
    """struct guard_config"""
    c_name = "guard_config"
    _fields_ = [("guarded_levels", u32), ("heartbeat_timeout_ms", u32), ("heartbeat_ns", u64),
                ("flags", u32), ("hold_timeout_ms", u32), ("dns_ports", u16 * DNS_PORTS),
                ("fold_window_ms", u32), ("_pad0", u32)]


class Lpm4Key(ctypes.Structure):
    """struct guard_lpm4_key"""
    c_name = "guard_lpm4_key"
    _fields_ = [("prefixlen", u32), ("policy_id", u32), ("addr", u8 * 4)]


class Lpm6Key(ctypes.Structure):
    """struct guard_lpm6_key"""
    c_name = "guard_lpm6_key"
    _fields_ = [("prefixlen", u32), ("policy_id", u32), ("addr", u8 * 16)]


class Host4Key(ctypes.Structure):
    """struct guard_host4_key"""
    c_name = "guard_host4_key"
    _fields_ = [("policy_id", u32), ("addr", u8 * 4)]


class RuleSpan(ctypes.Structure):
    """struct guard_rule_span"""
    c_name = "guard_rule_span"
    _fields_ = [("first", u32), ("count", u32)]


class PortRule(ctypes.Structure):
    """struct guard_port_rule"""
    c_name = "guard_port_rule"
    _fields_ = [
        ("port_lo", u16),
        ("port_hi", u16),
        ("proto", u8),
        ("action", u8),
        ("rule_id", u16),
    ]


# The same layouts as struct.Struct, for writing many entries as one buffer
# (batched map updates); tests/unit/test_abi.py checks them against the above.
LPM4_KEY = struct.Struct("=II4s")       # guard_lpm4_key: prefixlen, policy_id, addr
LPM6_KEY = struct.Struct("=II16s")      # guard_lpm6_key
HOST4_KEY = struct.Struct("=I4s")       # guard_host4_key: policy_id, addr
RULE_SPAN = struct.Struct("=II")        # guard_rule_span: first, count
PORT_RULE = struct.Struct("=HHBBH")     # guard_port_rule: port_lo, port_hi, proto, action, rule_id
U32 = struct.Struct("=I")               # array indexes and policy ids as map keys
# guard_fold_key: cgroup_id, tgid, policy_id, addr, port, family, proto, hook, action, rule_id
FOLD_KEY = struct.Struct("=QII16sHBBBBH")
FOLD = struct.Struct("=QI4x")           # guard_fold: start_ns, count


class ExecKey(ctypes.Structure):
    """struct guard_exec_key"""
    c_name = "guard_exec_key"
    _fields_ = [("policy_id", u32), ("match", u32), ("str", ctypes.c_char * PATH_MAX)]


class ExecVerdict(ctypes.Structure):
    """struct guard_exec_verdict"""
    c_name = "guard_exec_verdict"
    _fields_ = [("action", u8), ("flags", u8), ("rule_id", u16)]


class SendmsgKey(ctypes.Structure):
    """struct guard_sendmsg_key"""
    c_name = "guard_sendmsg_key"
    _fields_ = [
        ("cookie", u64),
        ("addr", u8 * 16),
        ("port", u16),
        ("action", u8),
        ("_pad0", u8 * 5),
    ]


class NameKey(ctypes.Structure):
    """struct guard_name_key (name right-aligned, NUL-padded on the left)"""
    c_name = "guard_name_key"
    _fields_ = [("policy_id", u32), ("kind", u8), ("_pad0", u8 * 3),
                ("name", ctypes.c_char * DNS_NAME_MAX)]


class NameValue(ctypes.Structure):
    """struct guard_name_value"""
    c_name = "guard_name_value"
    _fields_ = [("name_id", u64), ("query_action", u8), ("_pad0", u8 * 7)]


class NameRulesKey(ctypes.Structure):
    """struct guard_name_rules_key"""
    c_name = "guard_name_rules_key"
    _fields_ = [("policy_id", u32), ("_pad0", u32), ("name_id", u64)]


class LearnedKey(ctypes.Structure):
    """struct guard_learned_key (the key of a learned-address table)"""
    c_name = "guard_learned_key"
    _fields_ = [("netns", u64), ("addr", u8 * 16), ("family", u8), ("_pad0", u8 * 7)]


class LearnedName(ctypes.Structure):
    """struct guard_learned_name"""
    c_name = "guard_learned_name"
    _fields_ = [("name_id", u64), ("expires_ns", u64)]


class Learned(ctypes.Structure):
    """struct guard_learned"""
    c_name = "guard_learned"
    _fields_ = [("names", LearnedName * DNS_NAMES_PER_ADDR)]


class WorkloadLoss(ctypes.Structure):
    """struct guard_workload_loss: eg_workload_loss, one workload's shed and lost records"""
    c_name = "guard_workload_loss"
    _fields_ = [("window_ns", u64), ("in_window", u32), ("_pad0", u32), ("shed", u64),
                ("lost", u64)]


class FoldKey(ctypes.Structure):
    """struct guard_fold_key: eg_connect_fold, one process's logged connects to
    one destination under one verdict (bpf/lib/fold.h)"""
    c_name = "guard_fold_key"
    _fields_ = [("cgroup_id", u64), ("tgid", u32), ("policy_id", u32), ("addr", u8 * 16),
                ("port", u16), ("family", u8), ("proto", u8), ("hook", u8), ("action", u8),
                ("rule_id", u16)]


class Fold(ctypes.Structure):
    """struct guard_fold: a fold window and the connects counted in it"""
    c_name = "guard_fold"
    _fields_ = [("start_ns", u64), ("count", u32), ("_pad0", u32)]


#: Every struct that crosses the boundary, for the BTF layout check.
SHARED_STRUCTS = (
    EventHeader, ExecEvent, ConnectEvent, SocketEvent, CgroupEvent, PayloadEvent,
    StdioSocketEvent, DnsEvent, FlowVerdict, ProcVerdict, CgroupInfo, Slot, PolicyConfig,
    Config, Lpm4Key, Lpm6Key, Host4Key, RuleSpan, PortRule, ExecKey, ExecVerdict, SendmsgKey,
    NameKey, NameValue, NameRulesKey, LearnedKey, LearnedName, Learned, EscapeEvent,
    WorkloadLoss, FoldKey, Fold,
)

#: Every enum that crosses the boundary: C enum name -> (Python enum, C prefix).
SHARED_ENUMS = {
    "guard_event_kind": (EventKind, "GUARD_EVENT_"),
    "guard_action": (Action, "GUARD_ACTION_"),
    "guard_proto": (Proto, "GUARD_PROTO_"),
    "guard_hook": (Hook, "GUARD_HOOK_"),
    "guard_counter": (Counter, "GUARD_CTR_"),
    "guard_exec_match": (ExecMatch, "GUARD_EXEC_MATCH_"),
    "guard_exec_flags": (ExecFlags, "GUARD_EXEC_"),
    "guard_cgroup_op": (CgroupOp, "GUARD_CGROUP_"),
    "guard_config_flags": (ConfigFlags, "GUARD_CONFIG_"),
    "guard_egress_families": (EgressFamilies, "GUARD_EGRESS_"),
    "guard_exec_hold": (ExecHold, "GUARD_HOLD_"),
    "guard_detect_flags": (DetectFlags, "GUARD_DETECT_"),
    "guard_anchor_kind": (AnchorKind, "GUARD_ANCHOR_"),
    "guard_sample_kind": (SampleKind, "GUARD_SAMPLE_"),
    "guard_payload_flags": (PayloadFlags, "GUARD_PAYLOAD_"),
    "guard_unjudged": (Unjudged, "GUARD_UNJUDGED_"),
    "guard_policy_names": (PolicyNames, "GUARD_NAMES_"),
    "guard_dns_direction": (DnsDirection, "GUARD_DNS_"),
    "guard_dns_flags": (DnsFlags, "GUARD_DNS_"),
    "guard_name_kind": (NameKind, "GUARD_NAME_"),
    "guard_escape_how": (EscapeHow, "GUARD_ESCAPE_"),
    "guard_escape_flags": (EscapeFlags, "GUARD_ESCAPE_"),
    "guard_cgroup_flags": (CgroupFlags, "GUARD_CG_"),
}
