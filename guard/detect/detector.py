# SPDX-License-Identifier: Apache-2.0
"""Detections: what the classifiers say about an exec, the first bytes of a
flow or a socket on a process's stdio, and what the policy does about it.

It runs the classifiers a policy asks for (guard/detect/classify, pure
recognisers), each isolated from the others, and pairs every finding with
the policy's action for it. What the kernel must do for a policy's
detections is in vocabulary.py; the process's files are read by files.py.
It acts on nothing; guard/respond does.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from guard.kernel.abi import PayloadFlags, SampleKind
from guard.detect.classify import BLOCK_BYPASS, Finding, dedupe_findings
from guard.detect.classify import dns, miner, reverse_shell, ssh, stratum, tunnels
from guard.detect.classify import tunnel_behaviour
from guard.detect.classify.miner_indicators import Indicators, classify_dns, load_indicators
from guard.detect.classify.ssh_argv import SSH_PROGRAMS
from guard.kernel.records import PayloadRecord, StdioSocketRecord
from guard.detect.files import ProcessFiles
from guard.detect.vocabulary import ENFORCING
from guard.policy.model import ACTION_WORD_RANK, Policy

# --------------------------------------------------------------------------
# Findings -> what the policy does


@dataclass(frozen=True)
class Detection:
    finding: Finding
    action: str   # log | block | kill: what is done
    would: str | None = None   # audit mode: block | kill, what enforce would have done

    def as_dict(self) -> dict:
        return self.finding.as_dict()

    @property
    def enforced(self) -> str:
        """What enforce mode does with it."""
        return self.would or self.action


def audit(detection: Detection, policy: Policy | None) -> Detection:
    """The detection as policy's mode carries it out: under audit a block or
    kill is only logged, and `would` says which it was."""
    if policy is None or not policy.audit or detection.action not in ENFORCING:
        return detection
    return Detection(detection.finding, "log", detection.action)


def decide(findings: Iterable[Finding], policy: Policy) -> list[Detection]:
    """Each finding with the policy's action for its type; `off` drops it.
    A low-confidence finding is only ever logged: it is a hint, and the
    guard does not break a workload on a hint.

    `block` means the action does not happen. It refuses the process's
    connects (or drops its flow), which stops nothing that travels another
    way; a finding whose evidence says why (BLOCK_BYPASS: a forward over a
    control socket, a ProxyCommand, a request that already arrived) is
    killed instead, and its evidence says so (`enforced_by`)."""
    decided = []
    for finding in findings:
        action = policy.action_for(finding.type)
        if action == "off":
            continue
        if finding.confidence == "low" and action in ENFORCING:
            action = "log"
        bypass = finding.evidence.get(BLOCK_BYPASS)
        if action == "block" and bypass:
            action = "kill"
            finding = Finding(finding.type, finding.confidence, finding.dialect,
                              {**finding.evidence, "enforced_by": f"kill: {bypass[0]}"})
        decided.append(audit(Detection(finding, action), policy))
    return decided


def strongest(detections: Sequence[Detection]) -> str | None:
    """The strongest action of detections (model.ACTION_RANK), or None."""
    return max((d.action for d in detections), key=ACTION_WORD_RANK.__getitem__, default=None)


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

    def __init__(self, indicators: Indicators | None = None):
        self.indicators = indicators or load_indicators()
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
        program = next((SSH_PROGRAMS[n] for n in names if n in SSH_PROGRAMS), None)
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
                                  lambda: reverse_shell.classify_reverse_shell(argv))
        if policy.detection("minerExec") != "off":
            findings += self._run("miner exec", "miner_exec", lambda: miner.classify_exec(
                argv, exe, files.read_file if files else None, indicators=self.indicators,
                executable=getattr(files, "executable", lambda: None)()))
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
                         argv: list[str] | None = None,
                         files_of: Callable[[int], ProcessFiles | None] | None = None
                         ) -> list[Finding]:
        """files_of(pid): the sending process's files, read only for an SSH
        banner from a program not judged as ssh at exec (its configs)."""
        kind, sample, port = record.sample_kind, record.sample, record.port
        findings: list[Finding] = []
        if kind in (SampleKind.FIRST, SampleKind.PROXY):
            if policy.detection("stratum") != "off":
                findings += self._run("stratum", "stratum", lambda: stratum.classify_payload(
                    sample, dst_port=port, miner_traits=miner_traits,
                    indicators=self.indicators, named=bool(record.flags & PayloadFlags.NAMED)))
            if kind == SampleKind.FIRST:
                if policy.detection("tunnelTool") != "off":
                    findings += self._run("tunnel payload", "tunnel_tool",
                                          lambda: tunnels.classify_tunnel_payload(sample, port))
                files = (lambda: files_of(record.header.pid)) if files_of else (lambda: None)
                findings += self._banner(policy, sample, port, ssh_judged, argv, files)
        elif kind == SampleKind.UDP and port == 53:
            findings += self._run("dns", "miner_dns", lambda: self._dns_query(sample))
        elif kind == SampleKind.DNS_ANSWER:
            findings += self._run("dns", "miner_dns", lambda: self._dns_answer(sample))
        if kind in (SampleKind.UDP, SampleKind.DNS_ANSWER) and \
                policy.detection("stratum") == "off":
            findings = [f for f in findings if f.type != "miner_dns"]
        return dedupe_findings(findings)

    def _dns_query(self, sample: bytes) -> list[Finding]:
        findings: list[Finding] = []
        for name in dns.parse_dns_query(sample) or []:
            findings += _seen_in("query", classify_dns(name, indicators=self.indicators))
        return findings

    def _dns_answer(self, sample: bytes) -> list[Finding]:
        findings: list[Finding] = []
        answer = dns.parse_dns_answer(sample)
        for name in answer.names() if answer else []:
            findings += _seen_in("answer", classify_dns(name, indicators=self.indicators))
        return findings

    def inbound_findings(self, policy: Policy, first: bytes, port: int, reply: bytes, *,
                         miner_traits: bool = False) -> list[Finding]:
        """What the server's first reply on a flow says, read together with
        the flow's first bytes: a stratum reply (mining.notify, an XMRig job)
        confirms or reveals mining; a reply that is itself a request (an HTTP
        request line, a tunnel's open message) is a reverse tunnel."""
        findings: list[Finding] = []
        if policy.detection("stratum") != "off":
            findings += self._run("stratum", "stratum", lambda: stratum.classify_payload(
                first, dst_port=port, inbound=reply, miner_traits=miner_traits,
                indicators=self.indicators))
        if policy.detection("tunnelTool") != "off":
            findings += self._run("tunnel reply", "tunnel_tool",
                                  lambda: tunnel_behaviour.classify_reply(reply, first, port))
        return findings

    def server_first_findings(self, policy: Policy, data: bytes, port: int) -> list[Finding]:
        """The server's first bytes on a flow the sandbox opened and has sent
        nothing on: a request from the far end is a reverse tunnel."""
        if policy.detection("tunnelTool") == "off":
            return []
        return self._run("tunnel server-first", "tunnel_tool",
                         lambda: tunnel_behaviour.classify_server_first(data, port))

    def _banner(self, policy: Policy, sample: bytes, port: int, ssh_judged: bool,
                argv: list[str] | None,
                files: Callable[[], ProcessFiles | None]) -> list[Finding]:
        """An SSH banner from a program not judged as ssh at exec (a renamed
        or unknown client): the banner names it, and its argv is read as the
        command line of the client the banner names, with the config files
        that client would read (-F, ~/.ssh/config, /etc/ssh/ssh_config inside
        the process's root), like a client found by its name."""
        if ssh_judged or not sample.startswith(b"SSH-"):
            return []
        banner = self._run("ssh banner", "ssh_outbound",
                           lambda: ssh.classify_ssh_banner(sample, port))
        findings = list(banner)
        if argv and policy.detection("sshReverseTunnel") != "off":
            family = banner[0].dialect if banner else None
            program = {"dropbear": "dbclient", "putty": "plink"}.get(family, "ssh")
            # only OpenSSH reads ssh_config; a library's argv is no ssh command line
            read = files() if family == "openssh" else None
            findings += self._run("ssh argv", "ssh_reverse_tunnel", lambda: [
                f for f in self._ssh(policy, argv, read, program)
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
