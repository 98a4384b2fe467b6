# SPDX-License-Identifier: Apache-2.0
"""The policy model: what a validated policy is, immutable, whichever reader
made it (reader.py, the careful one; fast.py for large egress lists), and
which policy judges a workload (select_policy).

The constants here are the policy language's own words (actions, protocols,
detection keys) and limits; how they are spelled in YAML and what a problem
says about them is the readers' business.

Defaults a policy may leave out:

- `spec.defaultAction`: `log` (report what no rule decides, block nothing);
- `spec.mode`: `enforce` (`audit`: nothing refused, killed, held or reset;
  events say what enforce would have done);
- `spec.feedback.stderr`, `spec.feedback.file`: false (no reason lines on a
  refused process's stderr, no reasons file for the workload);
- `spec.sockets.raw`: `deny`. Raw and packet sockets send packets that never
  pass the connect/sendmsg hooks, so allowing them would let a guarded
  process step around every egress rule; a policy must opt in explicitly;
- a target's `cidr`: any address (0.0.0.0/0 and ::/0); `ports`: every port;
  `protocol`: `any`. A target may name a host instead (`host`, see
  normalise_host): then it has no networks of its own, and the addresses
  behind the name are learned from DNS answers of trusted resolvers;
- `spec.dns.resolvers`: the nameservers of the host's /etc/resolv.conf
  (DnsSettings.resolvers None), on DNS_RESOLVER_PORTS; a resolver listed
  without `ports` is on DNS_RESOLVER_PORTS too, and needs a `cidr`;
  `spec.dns.ttl`: DNS_TTL_MIN_DEFAULT to DNS_TTL_MAX_DEFAULT seconds.

The sections `spec`, `spec.egress`, `spec.exec`, `spec.sockets`,
`spec.detections` and `spec.dns` may also be left empty (YAML null), which
happens when all their entries are commented out; empty means their defaults.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from guard.kernel.abi import PATH_MAX, Action, Proto

API_VERSION = "egress-guard/v1"
KIND = "EgressPolicy"

#: Detection keys a policy may set under `spec.detections` -> the values each
#: accepts. Detections register themselves here and nowhere else.
DETECTION_ACTIONS = ("off", "log", "block", "kill")
DETECTIONS: dict[str, tuple[str, ...]] = {
    "stratum": DETECTION_ACTIONS,           # mining traffic, pool DNS names (issue 3)
    "minerExec": DETECTION_ACTIONS,         # miner command lines and config files
    "sshReverseTunnel": DETECTION_ACTIONS,  # ssh -R, RemoteForward (issue 4)
    "tunnelTool": DETECTION_ACTIONS,        # ngrok, cloudflared, chisel, frp, bore, ...
    "reverseShell": DETECTION_ACTIONS,      # shells on sockets, /dev/tcp, nc -e, ...
    "sshOutbound": DETECTION_ACTIONS,       # any other SSH client connection
}
#: A key a policy leaves out: detect and report, enforce nothing.
DETECTION_DEFAULT = "log"
#: Finding type (guard.classify) -> the spec.detections key that decides it.
FINDING_KEYS = {
    "stratum": "stratum", "miner_dns": "stratum", "miner_exec": "minerExec",
    "ssh_reverse_tunnel": "sshReverseTunnel", "tunnel_tool": "tunnelTool",
    "reverse_shell": "reverseShell", "ssh_outbound": "sshOutbound",
}
SSH_FORWARDS = ("local", "dynamic", "remote", "tunnel")

#: How strong each action is where several apply, the strongest winning:
#: rules at equal prefix length (egress), rules for the same executable
#: (exec), the findings of one flow or exec (detections). The one ranking of
#: actions; ACTION_WORD_RANK is the same by the word policies, detections and
#: events spell an action with (Action.label).
ACTION_RANK: dict[Action, int] = {Action.ALLOW: 0, Action.LOG: 1, Action.BLOCK: 2, Action.KILL: 3}
ACTION_WORD_RANK: dict[str, int] = {action.label: rank for action, rank in ACTION_RANK.items()}

EGRESS_ACTIONS = {action.label: action for action in (Action.ALLOW, Action.LOG, Action.BLOCK)}
EXEC_ACTIONS = {action.label: action for action in (Action.LOG, Action.KILL)}
PROTOCOLS = {"tcp": Proto.TCP, "udp": Proto.UDP, "any": Proto.ANY}
RAW_SOCKET_MODES = {"allow": False, "deny": True}   # value: deny_raw_sockets
UNNAMED_MODES = {"allow": False, "block": True}     # spec.dns.unnamed -> block_unnamed
#: spec.mode: enforce (the default) carries verdicts out; audit refuses, kills,
#: holds and resets nothing, and reports what enforce would have done (`would`).
MODES = {"enforce": False, "audit": True}           # value: Policy.audit
FAIL_CLOSED_AFTER_S = (1, 3600)   # heartbeat age bounds for spec.failClosed.afterSeconds
FAIL_CLOSED_DEFAULT_S = 5
LABEL_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ANY_ADDRESS: tuple[Network, ...] = (ipaddress.IPv4Network("0.0.0.0/0"),
                                    ipaddress.IPv6Network("::/0"))
ALL_PORTS = ((0, 65535),)
PORT_MIN, PORT_MAX = 1, 65535
# Exec names and paths are kernel map keys: a NUL-terminated char[PATH_MAX].
EXEC_STRING_MAX = PATH_MAX - 1

#: spec.dns: how long an answer's addresses stay allowed (its TTL, clamped to
#: [min, max] seconds), and the ports a resolver given without them is on.
DNS_TTL_MIN_DEFAULT = 60
DNS_TTL_MAX_DEFAULT = 86400
DNS_TTL_LIMIT = 7 * 86400
DNS_NAME_MAX = 253          # characters of a name without its trailing dot (RFC 1035)
DNS_RESOLVER_PORTS = ((53, 53),)
DNS_LABEL_MAX = 63
DNS_LABEL = re.compile(r"[a-z0-9_](?:[-a-z0-9_]*[a-z0-9_])?")

POLICY_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
POLICY_NAME_MAX = 253
RULE_NAME = re.compile(r"[a-z0-9]([-a-z0-9_.]*[a-z0-9])?")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy file; line 0 when no line applies."""
    source: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.field}: {self.message}"


class PolicyError(Exception):
    """A policy is invalid; `problems` lists everything wrong with it."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass(frozen=True)
class Target:
    """One entry of an egress rule's `to`: addresses, or a host name (then
    networks is empty: the addresses are learned from DNS answers)."""
    networks: tuple[Network, ...]
    ports: tuple[tuple[int, int], ...]      # inclusive ranges
    proto: Proto
    host: str | None = None                 # normalise_host(): "pypi.org", "*.example.com"


@dataclass(frozen=True)
class DnsSettings:
    """spec.dns: whose answers teach the addresses of names, and for how long."""
    resolvers: tuple[Target, ...] | None = None     # None: the host's /etc/resolv.conf
    ttl_min: int = DNS_TTL_MIN_DEFAULT              # seconds
    ttl_max: int = DNS_TTL_MAX_DEFAULT
    line: int = 0                                   # of spec.dns; 0 when omitted
    # a first payload to a learned address that names no host (no SNI, no
    # Host, another protocol): allowed, or refused as a name the policy does not allow
    block_unnamed: bool = False


@dataclass(frozen=True)
class EgressRule:
    name: str
    action: Action                          # ALLOW, LOG or BLOCK
    targets: tuple[Target, ...]
    line: int


@dataclass(frozen=True)
class ExecRule:
    name: str
    action: Action                          # LOG or KILL
    names: tuple[str, ...]                  # basenames
    paths: tuple[str, ...]                  # absolute paths
    line: int


@dataclass(frozen=True)
class FailClosed:
    """spec.failClosed: what guarded cgroups get while no agent reads events."""
    after_ms: int                           # heartbeat age that switches it on
    allow: tuple[Target, ...]               # everything else is blocked
    line: int


@dataclass(frozen=True)
class LabelRequirement:
    """One term of a Kubernetes label selector (matchLabels become In)."""
    key: str
    operator: str                           # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # NotIn


@dataclass(frozen=True)
class Workload:
    """What is known of a guarded cgroup when selecting its policy."""
    cgroup_path: str
    container_name: str | None = None
    image: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)       # container labels
    namespace: str | None = None
    pod_labels: Mapping[str, str] | None = None                   # None: not a known pod


@dataclass(frozen=True)
class Selector:
    """spec.selector: every term given must hold. Globs use shell syntax."""
    container_names: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    labels: tuple[LabelRequirement, ...] = ()
    namespaces: tuple[str, ...] = ()
    pod_labels: tuple[LabelRequirement, ...] = ()
    cgroup_paths: tuple[str, ...] = ()

    @property
    def specificity(self) -> int:
        """Terms given: the most specific matching selector wins."""
        return (bool(self.container_names) + bool(self.images) + len(self.labels)
                + bool(self.namespaces) + len(self.pod_labels) + bool(self.cgroup_paths))

    def matches(self, workload: Workload) -> bool:
        def glob(patterns, value) -> bool:
            return not patterns or (value is not None
                                    and any(fnmatch.fnmatchcase(value, p) for p in patterns))
        return (glob(self.container_names, workload.container_name)
                and glob(self.images, workload.image)
                and glob(self.cgroup_paths, workload.cgroup_path)
                and all(term.matches(workload.labels) for term in self.labels)
                and (not self.namespaces or workload.namespace in self.namespaces)
                and (not self.pod_labels or (workload.pod_labels is not None and all(
                    term.matches(workload.pod_labels) for term in self.pod_labels))))


@dataclass(frozen=True)
class Policy:
    name: str
    default_action: Action
    egress: tuple[EgressRule, ...]
    exec_rules: tuple[ExecRule, ...]
    deny_raw_sockets: bool
    detections: Mapping[str, str]
    source: str
    fail_closed: FailClosed | None = None
    selector: Selector | None = None        # None: the policy for what nothing selects
    identity_labels: tuple[str, ...] = ()   # label/annotation keys copied onto events
    ssh_allow: tuple[Mapping[str, object], ...] = ()  # spec.ssh.allow, for classify_ssh
    dns: DnsSettings = DnsSettings()
    audit: bool = False                     # spec.mode: audit
    feedback_stderr: bool = False           # spec.feedback.stderr: reasons on the process's stderr
    feedback_file: bool = False             # spec.feedback.file: the workload's reasons file

    @property
    def mode(self) -> str:
        return "audit" if self.audit else "enforce"

    @property
    def uses_names(self) -> bool:
        """Whether an egress target names a host."""
        # the fast reader's columns (columns.RuleColumns) hold no names and
        # say so without building their rules
        known = getattr(self.egress, "uses_names", None)
        if known is not None:
            return known
        return any(target.host is not None for rule in self.egress for target in rule.targets)

    def detection(self, key: str) -> str:
        """off, log, block or kill for a spec.detections key."""
        return self.detections.get(key) or DETECTION_DEFAULT

    def action_for(self, finding_type: str) -> str:
        """What the policy does with a finding of this type."""
        key = FINDING_KEYS.get(finding_type)
        return self.detection(key) if key else DETECTION_DEFAULT


def normalise_host(text: str) -> str:
    """A `host` of a policy as the guard compares it: ASCII lowercase, one
    trailing dot removed; an exact name ("pypi.org") or "*." and a name
    ("*.example.com": any name strictly below example.com). ValueError,
    worded for the policy's author, for anything else."""
    if not text:
        raise ValueError("a host name must not be empty")
    name = text[:-1] if text.endswith(".") else text
    if not name.isascii():
        raise ValueError(f"{text!r} is not ASCII: give an internationalised name in "
                         "punycode ('xn--...', as `idn2` or a browser's address bar shows it)")
    name = name.lower()
    below = name.startswith("*.")
    base = name[2:] if below else name
    if _is_address(base.strip("[]")):
        raise ValueError(f"{text!r} is an address: use cidr")
    if "*" in base:
        raise ValueError(f"invalid host name {text!r} ('*' only as the whole first label: "
                         "'*.example.com' is any name below example.com)")
    if len(base) > DNS_NAME_MAX:
        raise ValueError(f"host name {text!r} is {len(base)} characters long "
                         f"(at most {DNS_NAME_MAX})")
    for label in base.split("."):
        if not label:
            raise ValueError(f"invalid host name {text!r} (an empty label: a leading dot, "
                             "or two dots in a row)")
        if len(label) > DNS_LABEL_MAX:
            raise ValueError(f"invalid host name {text!r} (label {label!r} is longer than "
                             f"{DNS_LABEL_MAX} characters)")
        if not DNS_LABEL.fullmatch(label):
            raise ValueError(f"invalid host name {text!r} (label {label!r}: expected letters, "
                             "digits, '-' and '_', not starting or ending with '-')")
    if _is_address(base, numeric=True):
        raise ValueError(f"{text!r} is an address: use cidr")
    return name


def _is_address(text: str, numeric: bool = False) -> bool:
    """An IP address literal; numeric: also a form inet_aton takes
    ("127.1", "0x7f000001"), which resolvers never see either."""
    try:
        if numeric:
            socket.inet_aton(text)
        else:
            ipaddress.ip_address(text)
    except (ValueError, OSError):
        return False
    return True


def select_policy(policies: Sequence[Policy], workload: Workload) -> int | None:
    """Index of the policy that judges a workload: the matching selector with
    the most terms, the earlier document at a tie; else the first policy
    without a selector; else None."""
    best, best_specificity = None, -1
    for index, policy in enumerate(policies):
        if policy.selector is not None and policy.selector.matches(workload) \
                and policy.selector.specificity > best_specificity:
            best, best_specificity = index, policy.selector.specificity
    if best is not None:
        return best
    return next((i for i, p in enumerate(policies) if p.selector is None), None)
