# SPDX-License-Identifier: Apache-2.0
"""What the kernel must do for a policy's detections, derived from the
classifiers' own vocabulary so the kernel never decides anything by itself:
which programs it stops at exec (and when), which 4-byte windows make it look
twice at an argv or hold a first payload, and which detection flags a policy
sets.

The agent hands kernel_plan() to the policy compiler
(guard/policy/compile.py), which knows no classifier. It is data about the
classifiers (the programs they judge), so it lives beside them; a policy is
only asked `detection(key)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

from guard.detect.classify.framing import BLANKS, websocket_view
from guard.detect.classify.reverse_shell import NETCATS
from guard.detect.classify.shellwords import SHELLS
from guard.detect.classify.ssh_argv import SSH_PROGRAMS
from guard.detect.classify.tunnels import TUNNEL_TOOL_NAMES
from guard.kernel import abi
from guard.kernel.abi import Action, AnchorKind, DetectFlags, ExecHold
from guard.policy.compile import KernelDetection

ENFORCING = ("block", "kill")


class Detections(Protocol):
    """What this table asks of a policy."""

    def detection(self, key: str) -> str: ...



#: Stopped at every exec while the policy enforces their detection: the
#: argv (and an ssh config) decides before the program's first instruction.
SSH_CLIENTS = tuple(sorted(SSH_PROGRAMS))
TUNNEL_TOOLS = tuple(sorted(TUNNEL_TOOL_NAMES))
SOCKET_RELAYS = tuple(sorted(NETCATS | {"socat", "telnet"}))
#: Stopped only when their argv holds an argv anchor: shells and interpreters
#: run all the time, reverse-shell one-liners name a socket.
INTERPRETERS = tuple(sorted(SHELLS | {
    "busybox", "perl", "ruby", "php", "node", "nodejs", "lua", "awk", "gawk", "mawk",
    "python", "python2", "python3", *(f"python3.{minor}" for minor in range(6, 16))}))
#: 4-byte windows of reverse-shell one-liners: /dev/tcp/, /dev/udp/, socket
#: modules (socket, IO::Socket, TCPSocket, fsockopen), mkfifo back-pipes.
ARGV_ANCHORS = (b"/tcp", b"/udp", b"sock", b"Sock", b"fifo")
#: 2-byte anchors of an argv (the kernel looks up the last two bytes of each
#: window too): ANSI-C quoting `$'...'` (\x2f, \057, \u002f, \U0000002f, any
#: escape: what it decodes to is out of the kernel's sight) and locale
#: quoting `$"..."`, either of which can cut every 4-byte word apart.
ARGV_PAIR_ANCHORS = (b"$'", b'$"')
#: Quote characters the shell removes inside a word (`/dev/t'c'p`,
#: `/dev/"tcp"`, `/dev/t\cp` are /dev/tcp).
_REMOVED_QUOTES = b"'\"\\"


def _quoted_windows(word: bytes) -> tuple[bytes, ...]:
    """The 4-byte windows at the start of `word` (a slash and three bytes)
    when quotes are put into it: its first byte, then any merge of a prefix
    of the rest with quote characters. Every way of quoting a /dev/tcp
    redirection's "/tcp" begins with one of them; the plain word is one."""
    found: set[bytes] = set()

    def grow(window: bytes, rest: bytes) -> None:
        if len(window) == 4:
            found.add(window)
            return
        if rest:
            grow(window + rest[:1], rest[1:])
        for quote in _REMOVED_QUOTES:
            grow(window + bytes([quote]), rest)
    grow(word[:1], word[1:])
    return tuple(sorted(found))


ARGV_QUOTED_ANCHORS = tuple(sorted({w for word in (b"/tcp", b"/udp")
                                    for w in _quoted_windows(word)} - set(ARGV_ANCHORS)))
#: 4-byte windows of the mining dialects' first messages (JSON lines and
#: HTTP POSTs only: the kernel looks for them only in first messages that
#: start with '{' or "POST", after any blanks or inside WebSocket frames):
#: mining.*, login, eth_submitLogin, eth_getWork, getwork,
#: getblocktemplate, X-Mining-Extensions.
PAYLOAD_ANCHORS = (b"mini", b'"log', b"Logi", b"getW", b"getw", b"getb", b"X-Mi")


def anchor_table() -> dict[int, int]:
    """eg_anchors contents: little-endian u32 of each window -> kinds."""
    table: dict[int, int] = {}
    for kind, anchors in ((AnchorKind.ARGV, ARGV_ANCHORS + ARGV_QUOTED_ANCHORS),
                          (AnchorKind.PAYLOAD, PAYLOAD_ANCHORS),
                          (AnchorKind.ARGV_PAIR, ARGV_PAIR_ANCHORS)):
        for anchor in anchors:
            assert len(anchor) == (2 if kind == AnchorKind.ARGV_PAIR else 4), anchor
            # a pair is the last two bytes of a window: its first two are 0
            key = int.from_bytes(anchor.rjust(4, b"\0"), "little")
            table[key] = table.get(key, 0) | int(kind)
    return table


def has_anchor(data: bytes, kind: AnchorKind, limit: int = abi.SAMPLE_MAX) -> bool:
    """What the kernel's scan finds (tests and benchmarks use it)."""
    window = bytes(data[:limit])
    if kind == AnchorKind.ARGV:
        anchors = ARGV_ANCHORS + ARGV_QUOTED_ANCHORS + ARGV_PAIR_ANCHORS
    else:
        anchors = PAYLOAD_ANCHORS
    return any(anchor in window for anchor in anchors)


#: Bytes of a segment searched for its first non-blank byte (frames.h).
BLANK_SCAN_MAX = 64 * 1024


@dataclass(frozen=True)
class FirstPayload:
    """What flow.bpf.c makes of a first payload segment (bpf/lib/frames.h)."""
    action: str         # "filler": passes, the next payload is the first;
                        # "gather": dropped until the sender adds to it (a holding
                        # policy, within the hold timeout); "judge": sampled
    sample: bytes       # the sample it sends userspace (empty for filler)
    hold: bool          # judged and held until userspace's verdict
    upgrade: bool       # a WebSocket upgrade: the next payload is judged in its frames


def _holds(sample: bytes) -> bool:
    sv2 = (len(sample) >= 9 and sample[:3] == b"\0\0\0" and sample[6] == 0
           and sample[7] == 2 and sample[8] == 0)
    shaped = sample[:1] == b"{" or sample[:4] == b"POST"
    return sv2 or (shaped and has_anchor(sample, AnchorKind.PAYLOAD))


def _head_facts(sample: bytes) -> tuple[int, bool, bool]:
    """(index past "\r\n\r\n" or 0, "websocket" seen, a body that waits) before the head's end."""
    end = sample.find(b"\r\n\r\n")
    head = (sample[:end + 4] if end >= 0 else sample).lower()
    waits = b"xpec" in head or b": 0\r" in head or b"h:0\r" in head
    return (end + 4 if end >= 0 else 0), b"ebso" in head, waits


def _json_whole(sample: bytes) -> bool:
    """A newline after byte 0, or the JSON value at byte 0 closed (strings skipped)."""
    depth, in_string, escaped = 0, False, False
    for index, c in enumerate(sample):
        if c == 0x0A and index > 0:
            return True
        if escaped:
            escaped = False
        elif in_string:
            escaped, in_string = c == 0x5C, c != 0x22
        elif c == 0x22:
            in_string = True
        elif c in b"{[":
            depth += 1
        elif c in b"}]" and depth:
            depth -= 1
            if not depth:
                return True
    return False


def _unfinished(sample: bytes, cut: bool, full: bool) -> bool:
    n = len(sample)
    if full or n >= abi.SAMPLE_MAX:
        return False
    if cut or (sample[:1] == b"\0" and n < 9) or \
            (n < 5 and (b"POST "[:n] == sample or b"GET /"[:n] == sample)):
        return True
    if sample[:1] == b"{":
        return not _json_whole(sample)
    if sample[:5] in (b"POST ", b"GET /", b"GET h"):
        head_end, _ws, waits = _head_facts(sample)
        if sample[:1] == b"G":
            return not head_end
        return not head_end or (head_end >= n and not waits)
    return False


def _message(segment: bytes, websocket: bool) -> tuple[bytes, bool, bool] | None:
    """(the first message's bytes, whether a frame goes on, whether the
    sample's room ran out), None for filler."""
    if websocket:
        message, status = websocket_view(segment, abi.SAMPLE_MAX)
        content = message.lstrip(BLANKS)
        if status == "filler" or (not content and status == "message"):
            return None
        return content[:abi.SAMPLE_MAX], status == "cut", len(message) >= abi.SAMPLE_MAX
    stripped = segment[:BLANK_SCAN_MAX].lstrip(BLANKS)
    if not stripped:
        return None
    start = len(segment[:BLANK_SCAN_MAX]) - len(stripped)
    return segment[start:start + abi.SAMPLE_MAX], False, len(segment) - start >= abi.SAMPLE_MAX


def first_payload(segment: bytes, *, websocket: bool = False,
                  holding: bool = True) -> FirstPayload:
    """Python mirror of flow.bpf.c's first_payload for one segment: the
    segment as the kernel sees it (a gathered one includes what the sender
    added), after a WebSocket upgrade when websocket, under a policy that
    holds (stratum enforcing, an agent alive) when holding."""
    found = _message(bytes(segment), websocket)
    if found is None:
        return FirstPayload("filler", b"", False, False)
    sample, cut, full = found
    if not sample:
        return FirstPayload("gather" if holding else "filler", b"", False, False)
    if holding and _unfinished(sample, cut, full):
        return FirstPayload("gather", sample, False, False)
    hold = holding and _holds(sample)
    upgrade = False
    if holding and sample[:5] in (b"GET /", b"GET h") and not websocket:
        head_end, upgrade, _waits = _head_facts(sample)
        start = len(segment) - len(bytes(segment).lstrip(BLANKS))
        rest = bytes(segment)[start + head_end:] if upgrade else b""
        if rest:
            # frames sent with the upgrade: held in its place when they are mining
            upgrade = False
            framed = _message(rest, True)
            if framed is not None and framed[0] and _holds(framed[0]):
                return FirstPayload("judge", framed[0], True, False)
    return FirstPayload("judge", sample, hold, upgrade)


def prefilter_holds(sample: bytes, *, websocket: bool = False) -> bool:
    """Python mirror of flow.bpf.c's decision to hold a first payload, once
    it judges it (after gathering; for a segment it sees whole)."""
    data = bytes(sample)
    found = _message(data, websocket)
    if found is None or not found[0]:
        return False
    view = first_payload(data, websocket=websocket)
    return view.hold if view.action == "judge" else _holds(found[0])


def exec_holds(policy: Detections) -> dict[str, int]:
    """Executable basename -> ExecHold flags for the kernel's exec table."""
    holds: dict[str, int] = {}

    def hold(names: Iterable[str], flag: ExecHold) -> None:
        for name in names:
            holds[name] = holds.get(name, 0) | int(flag)
    if policy.detection("sshReverseTunnel") in ENFORCING or \
            policy.detection("sshOutbound") in ENFORCING:
        hold(SSH_CLIENTS, ExecHold.ALWAYS)
    if policy.detection("tunnelTool") in ENFORCING:
        hold(TUNNEL_TOOLS, ExecHold.ALWAYS)
    if policy.detection("reverseShell") in ENFORCING:
        hold(SOCKET_RELAYS, ExecHold.ALWAYS)
        hold(INTERPRETERS, ExecHold.IF_ANCHOR)
    return holds


def kernel_detection(policy: Detections) -> tuple[int, Action]:
    """(guard_policy_config.detect_flags, stdio_socket_action) for a policy."""
    flags = 0
    if any(policy.detection(key) != "off" for key in
           ("stratum", "sshReverseTunnel", "sshOutbound", "tunnelTool")):
        flags |= DetectFlags.PAYLOAD
    if policy.detection("stratum") in ENFORCING:
        flags |= DetectFlags.HOLD
    if policy.detection("tunnelTool") in ENFORCING:
        flags |= DetectFlags.HOLD_TUNNEL
    if policy.detection("stratum") != "off":
        flags |= DetectFlags.PAYLOAD | DetectFlags.DNS
    shell = policy.detection("reverseShell")
    if shell != "off":
        flags |= DetectFlags.STDIO_SOCKET
    stdio_action = {"kill": Action.KILL, "block": Action.BLOCK}.get(shell, Action.LOG)
    return int(flags), stdio_action


def kernel_plan(policy: Detections) -> KernelDetection:
    """The kernel's share of a policy's detections, for compile_policy()."""
    flags, stdio_action = kernel_detection(policy)
    return KernelDetection(flags, stdio_action, exec_holds(policy))
