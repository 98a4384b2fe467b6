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

from typing import Iterable, Protocol

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
#: 4-byte windows of the mining dialects' first messages (JSON lines and
#: HTTP POSTs only: the kernel looks for them only in payloads that start
#: with '{' or "POST"): mining.*, login, eth_submitLogin, eth_getWork,
#: getwork, getblocktemplate, X-Mining-Extensions.
PAYLOAD_ANCHORS = (b"mini", b'"log', b"Logi", b"getW", b"getw", b"getb", b"X-Mi")


def anchor_table() -> dict[int, int]:
    """eg_anchors contents: little-endian u32 of each window -> kinds."""
    table: dict[int, int] = {}
    for kind, anchors in ((AnchorKind.ARGV, ARGV_ANCHORS), (AnchorKind.PAYLOAD, PAYLOAD_ANCHORS)):
        for anchor in anchors:
            assert len(anchor) == 4, anchor
            key = int.from_bytes(anchor, "little")
            table[key] = table.get(key, 0) | int(kind)
    return table


def has_anchor(data: bytes, kind: AnchorKind, limit: int = abi.SAMPLE_MAX) -> bool:
    """What the kernel's scan finds (tests and benchmarks use it)."""
    anchors = ARGV_ANCHORS if kind == AnchorKind.ARGV else PAYLOAD_ANCHORS
    window = bytes(data[:limit])
    return any(anchor in window for anchor in anchors)


def prefilter_holds(sample: bytes) -> bool:
    """Python mirror of flow.bpf.c's decision to hold a first payload."""
    data = bytes(sample[:abi.SAMPLE_MAX])
    sv2 = (len(data) >= 9 and data[:3] == b"\0\0\0" and data[6] == 0 and data[7] == 2
           and data[8] == 0)
    shaped = data[:1] == b"{" or data[:4] == b"POST"
    return sv2 or (shaped and has_anchor(data, AnchorKind.PAYLOAD))


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
