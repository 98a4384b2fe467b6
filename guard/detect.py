# SPDX-License-Identifier: Apache-2.0
"""Detections: what the classifiers say about an exec, the first bytes of a
flow or a socket on a process's stdio, and what the policy does about it.

This module is the bridge between guard/classify (pure recognisers) and the
kernel: it says which programs the kernel must stop at exec and which byte
windows make it hold a first payload (both derived from the classifiers'
vocabulary, so the kernel never decides anything by itself), runs the
classifiers a policy asks for, and pairs every finding with the policy's
action for it. It acts on nothing; guard/actions.py does.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import os
import posixpath
import stat
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from . import abi
from .abi import Action, AnchorKind, DetectFlags, ExecHold, SampleKind
from .classify import FileContent, Finding
from .classify import miner, ssh, stratum, tunnels
from .events import PayloadRecord, StdioSocketRecord
from .policy import Policy

ENFORCING = ("block", "kill")
ACTION_RANK = {"log": 1, "block": 2, "kill": 3}
#: Bytes of a file the classifiers get; a longer file comes back marked
#: truncated, and they report it unread (ssh_config, miner configs).
CONFIG_READ_MAX = 1 << 20
#: Names of a directory listed; one more is returned when there are more,
#: which tells the caller the listing was cut (an Include glob fails closed).
DIR_LIST_MAX = 4096

# --------------------------------------------------------------------------
# What the kernel holds


#: Stopped at every exec while the policy enforces their detection: the
#: argv (and an ssh config) decides before the program's first instruction.
SSH_CLIENTS = tuple(sorted(ssh.SSH_PROGRAMS))
TUNNEL_TOOLS = tuple(sorted(tunnels.TUNNEL_TOOL_NAMES))
SOCKET_RELAYS = tuple(sorted(tunnels.NETCATS | {"socat", "telnet"}))
#: Stopped only when their argv holds an argv anchor: shells and interpreters
#: run all the time, reverse-shell one-liners name a socket.
INTERPRETERS = tuple(sorted(tunnels.SHELLS | {
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


def exec_holds(policy: Policy) -> dict[str, int]:
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


def kernel_detection(policy: Policy) -> tuple[int, Action]:
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


# --------------------------------------------------------------------------
# Findings -> what the policy does


@dataclass(frozen=True)
class Detection:
    finding: Finding
    action: str   # log | block | kill

    def as_dict(self) -> dict:
        return self.finding.as_dict()


def decide(findings: Iterable[Finding], policy: Policy) -> list[Detection]:
    """Each finding with the policy's action for its type; `off` drops it.
    A low-confidence finding is only ever logged: it is a hint, and the
    guard does not break a workload on a hint."""
    decided = []
    for finding in findings:
        action = policy.action_for(finding.type)
        if action == "off":
            continue
        if finding.confidence == "low" and action in ENFORCING:
            action = "log"
        decided.append(Detection(finding, action))
    return decided


def strongest(detections: Sequence[Detection]) -> str | None:
    return max((d.action for d in detections), key=ACTION_RANK.__getitem__, default=None)


# --------------------------------------------------------------------------
# A container's files, as the process sees them


_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(os.uname().machine)
_RESOLVE_IN_ROOT = 0x10
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class ProcessFiles:
    """Reads files inside a process's root (its container), the way that
    process would resolve them: relative to its working directory, with
    symlinks resolved inside its root (openat2 RESOLVE_IN_ROOT), never
    outside it. Nothing is written, nothing is followed into the host."""

    def __init__(self, pid: int):
        self.pid = pid
        self.root = f"/proc/{pid}/root"

    @functools.cached_property
    def cwd(self) -> str:
        """The working directory as the process names it. The kernel shows it
        relative to the reader's root, so a chrooted process's cwd carries
        its root's path in front."""
        try:
            cwd = os.readlink(f"/proc/{self.pid}/cwd")
            root = os.readlink(self.root)
        except OSError:
            return "/"
        if root != "/" and (cwd == root or cwd.startswith(root + "/")):
            cwd = cwd[len(root):] or "/"
        return cwd if cwd.startswith("/") else "/"

    @property
    def user(self) -> str:
        return self._passwd_entry[0]

    @property
    def home(self) -> str:
        return self._passwd_entry[1]

    @functools.cached_property
    def uid(self) -> int:
        try:
            with open(f"/proc/{self.pid}/status", "rb") as fh:
                for line in fh:
                    if line.startswith(b"Uid:"):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return 0

    @functools.cached_property
    def _passwd_entry(self) -> tuple[str, str]:
        text = self.read_file("/etc/passwd") or b""
        for line in text.decode("utf-8", "replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 6 and fields[2] == str(self.uid):
                return fields[0], fields[5] or "/"
        return ("root", "/root") if self.uid == 0 else (str(self.uid), "/")

    def _absolute(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self.cwd, path))

    def _open(self, path: str, flags: int) -> int:
        root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY)
        try:
            if _SYS_OPENAT2 is not None:
                how = _OpenHow(flags=flags | os.O_CLOEXEC, mode=0, resolve=_RESOLVE_IN_ROOT)
                fd = _libc.syscall(_SYS_OPENAT2, root_fd, path.lstrip("/").encode() or b".",
                                   ctypes.byref(how), ctypes.sizeof(how))
                if fd >= 0:
                    return fd
                err = ctypes.get_errno()
                if err != errno.ENOSYS:
                    raise OSError(err, os.strerror(err), path)
            # no openat2 (Linux < 5.6): no symlink may be followed at all
            return os.open(path.lstrip("/") or ".", flags | os.O_NOFOLLOW, dir_fd=root_fd)
        finally:
            os.close(root_fd)

    def read_file(self, path: str) -> bytes | None:
        """The file's first CONFIG_READ_MAX bytes; a FileContent with
        truncated=True when there was more. None when it cannot be read
        or is not a regular file."""
        try:
            fd = self._open(self._absolute(path), os.O_RDONLY | os.O_NONBLOCK)
        except (OSError, ValueError):
            return None
        try:
            with os.fdopen(fd, "rb") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                if stat.S_ISCHR(mode) and self._absolute(path) == "/dev/null":
                    return b""          # ssh -F /dev/null: an empty config
                if not stat.S_ISREG(mode):
                    return None         # never block on a FIFO or read a device
                data = fh.read(CONFIG_READ_MAX + 1)
                if len(data) > CONFIG_READ_MAX:
                    return FileContent(data[:CONFIG_READ_MAX], truncated=True)
                return data
        except OSError:
            return None

    def list_dir(self, path: str) -> list[str] | None:
        """The directory's names, sorted; DIR_LIST_MAX + 1 of them (not all,
        not sorted) when it holds more, so a huge directory costs no more
        than that to look at."""
        try:
            fd = self._open(self._absolute(path), os.O_RDONLY | os.O_DIRECTORY)
        except (OSError, ValueError):
            return None
        try:
            with os.scandir(fd) as entries:
                names = [entry.name for entry in itertools.islice(entries, DIR_LIST_MAX + 1)]
        except OSError:
            return None
        finally:
            os.close(fd)
        return sorted(names) if len(names) <= DIR_LIST_MAX else names


# --------------------------------------------------------------------------
# The classifiers a policy asks for, each on its own


#: Dialect of the finding a classifier gives when it raised instead of answering.
CLASSIFIER_ERROR = "classifier-error"
#: Errors kept for the agent between two take_errors() calls.
ERRORS_KEPT = 256


def _seen_in(where: str, findings: list[Finding]) -> list[Finding]:
    """miner_dns findings say whether the name was asked for or answered."""
    return [Finding(f.type, f.confidence, f.dialect, {**f.evidence, "seen_in": where})
            for f in findings]


def _describe(error: BaseException) -> str:
    """`Type: message`, short: the message may quote the hostile input."""
    try:
        text = str(error)
    except Exception:                      # a __str__ that fails on its own input
        text = "(no message)"
    text = " ".join(text.split())
    return f"{type(error).__name__}: {text[:160] + '...' if len(text) > 160 else text}"


class Detector:
    """Runs the classifiers a policy asks for, each one isolated: a
    classifier that raises (RecursionError and MemoryError included) costs
    only its own answer. In its place comes a high finding of the type it is
    responsible for, dialect "classifier-error", so an enforcing policy fails
    closed, and an error string for the agent to report (take_errors)."""

    def __init__(self, indicators: miner.Indicators | None = None):
        self.indicators = indicators or miner.load_indicators()
        self.errors: list[str] = []

    def take_errors(self) -> list[str]:
        """The classifier failures since the last call, oldest first, as
        `CLASSIFIER: ExceptionType: message` (e.g. `miner exec: RecursionError: ...`)."""
        errors, self.errors = self.errors, []
        return errors

    def _run(self, name: str, fails_as: str, classify: Callable[[], Iterable[Finding]]
             ) -> list[Finding]:
        try:
            return list(classify())
        # RecursionError and MemoryError are Exceptions; they are named because
        # hostile input is how they happen. KeyboardInterrupt and SystemExit pass.
        except (RecursionError, MemoryError, Exception) as error:
            described = _describe(error)
            if len(self.errors) < ERRORS_KEPT:
                self.errors.append(f"{name}: {described}")   # the agent says "classifier failed"
            return [Finding(type=fails_as, confidence="high", dialect=CLASSIFIER_ERROR,
                            evidence={"note": f"{name} failed: {described}"})]

    def exec_findings(self, policy: Policy, argv: list[str], exe: str | None,
                      files: ProcessFiles | None) -> list[Finding]:
        findings: list[Finding] = []
        names = {posixpath.basename(exe if isinstance(exe, str) else ""),
                 posixpath.basename(argv[0] if argv and isinstance(argv[0], str) else "")}
        program = next((ssh.SSH_PROGRAMS[n] for n in names if n in ssh.SSH_PROGRAMS), None)
        reverse_tunnel = policy.detection("sshReverseTunnel") != "off"
        if program and (reverse_tunnel or policy.detection("sshOutbound") != "off"):
            findings += self._run(
                "ssh", "ssh_reverse_tunnel" if reverse_tunnel else "ssh_outbound",
                lambda: self._ssh(policy, argv, files, program))
        if policy.detection("tunnelTool") != "off":
            findings += self._run("tunnel exec", "tunnel_tool",
                                  lambda: tunnels.classify_tunnel_exec(argv))
        if policy.detection("reverseShell") != "off":
            findings += self._run("reverse shell", "reverse_shell",
                                  lambda: tunnels.classify_reverse_shell(argv))
        if policy.detection("minerExec") != "off":
            findings += self._run("miner exec", "miner_exec", lambda: miner.classify_exec(
                argv, exe, files.read_file if files else None, indicators=self.indicators))
        return findings

    @staticmethod
    def _ssh(policy: Policy, argv: list[str], files: ProcessFiles | None,
             program: str) -> list[Finding]:
        if files is None:
            return ssh.classify_ssh(argv, None, allowlist=policy.ssh_allow, program=program)
        return ssh.classify_ssh(argv, files.read_file, home=files.home, user=files.user,
                                allowlist=policy.ssh_allow, list_dir=files.list_dir,
                                cwd=files.cwd, program=program)

    def payload_findings(self, policy: Policy, record: PayloadRecord, *,
                         miner_traits: bool = False, ssh_judged: bool = False,
                         argv: list[str] | None = None) -> list[Finding]:
        kind, sample, port = record.sample_kind, record.sample, record.port
        findings: list[Finding] = []
        if kind in (SampleKind.FIRST, SampleKind.PROXY):
            if policy.detection("stratum") != "off":
                findings += self._run("stratum", "stratum", lambda: stratum.classify_payload(
                    sample, dst_port=port, miner_traits=miner_traits,
                    indicators=self.indicators))
            if kind == SampleKind.FIRST:
                if policy.detection("tunnelTool") != "off":
                    findings += self._run("tunnel payload", "tunnel_tool",
                                          lambda: tunnels.classify_tunnel_payload(sample, port))
                findings += self._banner(policy, sample, port, ssh_judged, argv)
        elif kind == SampleKind.UDP and port == 53:
            findings += self._run("dns", "miner_dns", lambda: self._dns_query(sample))
        elif kind == SampleKind.DNS_ANSWER:
            findings += self._run("dns", "miner_dns", lambda: self._dns_answer(sample))
        if kind in (SampleKind.UDP, SampleKind.DNS_ANSWER) and \
                policy.detection("stratum") == "off":
            findings = [f for f in findings if f.type != "miner_dns"]
        return tunnels.dedupe_findings(findings)

    def _dns_query(self, sample: bytes) -> list[Finding]:
        findings: list[Finding] = []
        for name in miner.parse_dns_query(sample) or []:
            findings += _seen_in("query", miner.classify_dns(name, indicators=self.indicators))
        return findings

    def _dns_answer(self, sample: bytes) -> list[Finding]:
        findings: list[Finding] = []
        answer = miner.parse_dns_answer(sample)
        for name in answer.names() if answer else []:
            findings += _seen_in("answer", miner.classify_dns(name, indicators=self.indicators))
        return findings

    def inbound_findings(self, policy: Policy, first: bytes, port: int, reply: bytes, *,
                         miner_traits: bool = False) -> list[Finding]:
        """Stratum findings for a flow's first bytes read together with the
        server's first reply (mining.notify, an XMRig job): what the reply
        confirms or reveals."""
        if policy.detection("stratum") == "off":
            return []
        return self._run("stratum", "stratum", lambda: stratum.classify_payload(
            first, dst_port=port, inbound=reply, miner_traits=miner_traits,
            indicators=self.indicators))

    def _banner(self, policy: Policy, sample: bytes, port: int, ssh_judged: bool,
                argv: list[str] | None) -> list[Finding]:
        """An SSH banner from a program not judged as ssh at exec (a renamed
        or unknown client): the banner names it, and its argv is read as an
        ssh command line in case it asks for forwards."""
        if ssh_judged or not sample.startswith(b"SSH-"):
            return []
        findings = self._run("ssh banner", "ssh_outbound",
                             lambda: ssh.classify_ssh_banner(sample, port))
        if argv and policy.detection("sshReverseTunnel") != "off":
            findings += self._run("ssh argv", "ssh_reverse_tunnel", lambda: [
                f for f in ssh.classify_ssh(argv, None, allowlist=policy.ssh_allow,
                                            program="ssh")
                if f.type == "ssh_reverse_tunnel"])
        return findings

    @staticmethod
    def stdio_socket_findings(record: StdioSocketRecord, argv: list[str]) -> list[Finding]:
        stream = {0: "stdin", 1: "stdout", 2: "stderr"}.get(record.newfd, str(record.newfd))
        return [Finding(type="reverse_shell", confidence="high", dialect="stdio-socket",
                        evidence={"fd": record.newfd, "stream": stream,
                                  "socket_fd": record.oldfd,
                                  "remote": {"ip": record.ip, "port": record.port},
                                  "argv": list(argv[:16]) if argv else []})]
