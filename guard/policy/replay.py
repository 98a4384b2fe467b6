# SPDX-License-Identifier: Apache-2.0
"""Recorded events judged again by another policy (`egress-guard policy test`),
and what `policy suggest` shares with it: which workload an event is about,
its destination, and the names a workload learned from DNS answers.

An event is judged by the policy of the file that selects its workload
(model.select_policy on the container name and image, the cgroup path, the
pod's namespace and labels as the event carries them; container labels are
not in events, so a `labels` term is matched against the event's `identity`),
else by the embedded default policy (`run --unselected default`). The verdict
is the kernel's, from the compiled tables (compile.simulate for the CIDR
rules, NameTable.verdict for names), in the kernel's order
(bpf/sock_addr.bpf.c judge, judge_by_name):

    connect, sendmsg  the CIDR rules; for a destination with a name, the
                      name's rules too: the stricter where both match, else
                      the one that matches; else a trusted resolver on its
                      port (rule dns-resolvers); else defaultAction
    bind              refused on a trusted resolver's port under a policy that
                      allows by name, else not judged (allowed)
    dns query         to a resolver the policy trusts (dns.bpf.c
                      guard_dns_query): the rules naming the question's name
                      (the most permissive of them: a query has no port),
                      else defaultAction; to any other resolver, or under a
                      policy without names, the datagram is egress like any
                      other, judged as a sendmsg to the resolver. Answers
                      are never refused: not judged
    exec              exec rules by basename and path of `filename` and of
                      `process.exe`: kill beats log; no rule: log
    socket            spec.sockets.raw: deny refuses (packet sockets: kill)
    detection         spec.detections for the finding's type (low confidence:
                      at most log); name_mismatch: the payload's host against
                      the name rules, else what the address gets without it

A destination's name is its `dst.name`, else the name a trusted DNS answer of
the same workload taught for that address, while the answer's TTL lasts
(`NameMemory`): the names the kernel would judge it by. When the recorded
answer came from a resolver the policy does not trust, the kernel would not
have learned it, and the destination is judged without the name. A connect refused
because a detection judged its process (rule `detection`) is not judged
again: its detection event is.

A connect event with `repeats` (logged connects the kernel folded into it,
bpf/lib/fold.h) is judged once, as one event: its repeats went to the same
destination from the same process under the same verdict. Where connections
are counted (`connections`, `connections_refused` in the summary) it counts
1 + repeats.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from guard.kernel.abi import PORT_RULE, RULE_NONE, Action, Proto
from guard.policy.compile import CompiledPolicy, compile_policy, simulate
from guard.policy.load import default_policy
from guard.policy.names import RESOLVER_RULE
from guard.policy.model import (ACTION_RANK, ACTION_WORD_RANK, Policy, Workload,
                                normalise_host, select_policy)

__all__ = ["Change", "Flow", "NameMemory", "Replay", "Verdict", "flow_of", "parse_ts",
           "workload_key", "workload_of"]

PROTOS = {"tcp": Proto.TCP, "udp": Proto.UDP}
#: Actions that let the workload do what it did; the others refused it.
PASSES = frozenset({"allow", "log", "off"})
#: Learned addresses remembered per workload (the kernel's table holds 16384).
NAMES_PER_WORKLOAD = 16384
WORKLOADS_MAX = 4096

_TS = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def parse_ts(ts: Any) -> int | None:
    """An event's RFC 3339 time as nanoseconds since the epoch; None when it is none."""
    match = _TS.match(ts) if isinstance(ts, str) else None
    if match is None:
        return None
    zone = "+00:00" if match[3] == "Z" else match[3]
    try:
        seconds = datetime.fromisoformat(match[1] + zone).timestamp()
    except ValueError:
        return None
    return int(seconds) * 1_000_000_000 + int((match[2] or "0").ljust(9, "0"))


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: Any) -> dict[str, str]:
    return {k: v for k, v in _dict(value).items() if isinstance(k, str) and isinstance(v, str)}


def workload_of(event: dict) -> Workload | None:
    """What select_policy needs to know of the event's workload; None for
    events about no workload (agent, policy, loss, error)."""
    cgroup = _dict(event.get("cgroup"))
    container = _dict(event.get("container"))
    if not cgroup and not container:
        return None
    k8s = _dict(event.get("k8s"))
    labels = {**_strings(event.get("identity")), **_strings(container.get("labels"))}
    return Workload(cgroup_path=_str(cgroup.get("path")) or "",
                    container_name=_str(container.get("name")),
                    image=_str(container.get("image")), labels=labels,
                    namespace=_str(k8s.get("namespace")),
                    pod_labels=_strings(k8s.get("labels")) if k8s else None)


def workload_key(event: dict) -> tuple:
    """The workload an event belongs to, for names learned per workload."""
    cgroup = _dict(event.get("cgroup"))
    key = (cgroup.get("id"), cgroup.get("path"))
    return tuple(part if isinstance(part, (int, str)) and not isinstance(part, bool) else None
                 for part in key)


@dataclass(frozen=True)
class Flow:
    """A recorded destination, as the kernel judged it."""
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    proto: Proto
    name: str | None          # dst.name (normalised), when the event carries one
    hook: str                 # connect, sendmsg, bind


def _address(text: Any):
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:        # the kernel sends it to loopback, and judges it so
        address = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
    return address


def _name(text: Any) -> str | None:
    if not isinstance(text, str) or len(text) > 256:
        return None
    try:
        name = normalise_host(text)
    except ValueError:
        return None
    return None if name.startswith("*.") else name


def flow_of(event: dict) -> Flow | None:
    """The destination of a connect or detection event; None when it has none
    the kernel could have judged."""
    dst = _dict(event.get("dst"))
    address = _address(dst.get("ip"))
    port = dst.get("port")
    proto = event.get("proto") or dst.get("proto")
    proto = PROTOS.get(proto) if isinstance(proto, str) else None
    if address is None or proto is None or not isinstance(port, int) \
            or isinstance(port, bool) or not 0 <= port <= 65535:
        return None
    hook = event.get("hook")
    return Flow(address, port, proto, _name(dst.get("name")),
                hook if hook in ("connect", "sendmsg", "bind") else "connect")


Resolver = tuple[Any, int]     # (address, port) an answer came from


class NameMemory:
    """Per workload, address -> (name, until when, resolver): the trusted DNS
    answers that taught them (dns events, direction answer, learned > 0); an
    address answered for several names keeps the last, as `dst.name` does."""

    def __init__(self):
        self._learned: OrderedDict[tuple, OrderedDict[str, tuple[str, int | None,
                                                               Resolver | None]]] = OrderedDict()

    def feed(self, event: dict) -> str | None:
        """Remember a dns answer's addresses; its name when it taught any."""
        dns = _dict(event.get("dns"))
        learned = dns.get("learned")
        if event.get("direction") != "answer" or dns.get("trusted") is False \
                or not isinstance(learned, int) or isinstance(learned, bool) or learned <= 0:
            return None
        name = _name(dns.get("name"))
        if name is None:
            return None
        when = parse_ts(event.get("ts"))
        ttl = dns.get("ttl")
        until = when + ttl * 1_000_000_000 if when is not None and isinstance(ttl, int) \
            and not isinstance(ttl, bool) and ttl >= 0 else None
        server = _dict(event.get("resolver"))
        address, port = _address(server.get("ip")), server.get("port")
        resolver = (address, port) if address is not None and isinstance(port, int) else None
        key = workload_key(event)
        table = self._learned.get(key)
        if table is None:
            if len(self._learned) >= WORKLOADS_MAX:
                self._learned.popitem(last=False)
            table = self._learned[key] = OrderedDict()
        answers = dns.get("answers")
        for answer in (answers if isinstance(answers, list) else [])[:64]:
            address = _address(_dict(answer).get("ip"))
            if address is None:
                continue
            table.pop(str(address), None)
            table[str(address)] = (name, until, resolver)
            if len(table) > NAMES_PER_WORKLOAD:
                table.popitem(last=False)
        return name

    def name_for(self, event: dict, flow: Flow) -> str | None:
        """The flow's name: dst.name, else what an answer of the workload taught."""
        if flow.name is not None:
            return flow.name
        found = self._learned.get(workload_key(event), {}).get(str(flow.address))
        if found is None:
            return None
        name, until, _resolver = found
        when = parse_ts(event.get("ts"))
        return name if until is None or when is None or when <= until else None

    def resolver_for(self, event: dict, flow: Flow, name: str) -> Resolver | None:
        """Which resolver answered the workload that name for the flow's
        address; None when no recorded answer says."""
        found = self._learned.get(workload_key(event), {}).get(str(flow.address))
        return found[2] if found is not None and found[0] == name else None


@dataclass(frozen=True)
class Verdict:
    action: str               # allow, log, block, kill, off
    rule: str | None          # the deciding rule's name, None for the default or a setting
    decided: str              # in words: "rule NAME", "defaultAction", "sockets.raw", ...
    policy: str


@dataclass(frozen=True)
class Change:
    """An event whose verdict the policy changes."""
    where: str
    event: dict
    old: str
    verdict: Verdict

    @property
    def new(self) -> str:
        return self.verdict.action

    @property
    def refused(self) -> bool:
        """Recorded as done (allow, log), refused now."""
        return self.old in PASSES and self.new not in PASSES

    @property
    def outcome_changed(self) -> bool:
        """Not just allow <-> log: passes <-> refused, or block <-> kill."""
        return (self.old in PASSES) != (self.new in PASSES) or \
            (self.old not in PASSES and self.old != self.new)

    def as_dict(self) -> dict[str, Any]:
        event = self.event
        container = _dict(event.get("container"))
        process = _dict(event.get("process"))
        out: dict[str, Any] = {
            "kind": "change", "where": self.where, "ts": event.get("ts"),
            "event_kind": event.get("kind"), "old": self.old, "new": self.new,
            "rule": self.verdict.rule, "decided": self.verdict.decided,
            "policy": self.verdict.policy, "refused": self.refused,
            "workload": {"container": container.get("name"),
                         "cgroup": _dict(event.get("cgroup")).get("path")},
            "process": {"pid": process.get("pid"), "comm": process.get("comm")},
        }
        for key in ("dst", "proto", "hook", "repeats", "filename", "socket", "detection",
                    "direction", "resolver", "dns"):
            if key in event:
                out[key] = event[key]
        return out


def _connections(event: dict) -> int:
    """Connections a connect event reports: itself and the connects folded
    into it (`repeats`, bpf/lib/fold.h)."""
    repeats = event.get("repeats")
    ok = isinstance(repeats, int) and not isinstance(repeats, bool) and repeats > 0
    return 1 + (repeats if ok else 0)


class _Judged:
    """A policy and its tables."""

    def __init__(self, policy: Policy, compiled: CompiledPolicy):
        self.policy, self.compiled = policy, compiled


class Replay:
    """Feed recorded events in order; each whose verdict changes comes back
    as a Change. `counts` says what was judged, and how."""

    def __init__(self, policies: Sequence[Policy], compiled: Sequence[CompiledPolicy]):
        self._policies = tuple(policies)
        self._judged = [_Judged(p, c) for p, c in zip(policies, compiled)]
        fallback = default_policy()
        self._default = _Judged(fallback, compile_policy(fallback))
        self.names = NameMemory()
        self.counts: Counter[str] = Counter()

    def feed(self, event: dict, where: str = "") -> Change | None:
        kind = event.get("kind")
        if kind == "dns":
            self.names.feed(event)
        judge = _JUDGES.get(kind) if isinstance(kind, str) else None
        action = event.get("action")
        if judge is None or not isinstance(action, str) or action not in ACTION_WORD_RANK:
            self.counts["not judged"] += 1
            return None
        judged = self._select(event)
        verdict = judge(self, judged, event)
        if verdict is None:
            self.counts["not judged"] += 1
            return None
        self.counts[f"judged {kind}"] += 1
        connections = _connections(event) if kind == "connect" else 0
        self.counts["connections"] += connections
        if verdict.action == action:
            return None
        change = Change(where, event, action, verdict)
        self.counts["changed"] += 1
        if change.outcome_changed:
            self.counts["outcome changed"] += 1
        if change.refused:
            self.counts["refused"] += 1
            self.counts["connections refused"] += connections
        return change

    def summary(self) -> dict[str, Any]:
        judged = {key.split(" ", 1)[1]: n for key, n in sorted(self.counts.items())
                  if key.startswith("judged ")}
        return {"kind": "summary", "judged": sum(judged.values()), "by_kind": judged,
                "not_judged": self.counts["not judged"], "changed": self.counts["changed"],
                "outcome_changed": self.counts["outcome changed"],
                "refused": self.counts["refused"],
                "connections": self.counts["connections"],
                "connections_refused": self.counts["connections refused"]}

    def _select(self, event: dict) -> _Judged:
        workload = workload_of(event) or Workload(cgroup_path="")
        index = select_policy(self._policies, workload)
        return self._judged[index] if index is not None else self._default

    # -- one judge per kind ------------------------------------------------------------

    def _connect(self, judged: _Judged, event: dict) -> Verdict | None:
        flow = flow_of(event)
        if flow is None or event.get("rule") == "detection":
            return None
        compiled, name = judged.compiled, judged.policy.name
        names = compiled.names
        if flow.hook == "bind":
            if names is not None and flow.port in names.resolver_ports:
                return Verdict("block", RESOLVER_RULE, f"rule {RESOLVER_RULE}", name)
            return Verdict("allow", None, "bind not judged", name)
        learned = self.names.name_for(event, flow)
        resolver = self.names.resolver_for(event, flow, learned) if learned else None
        if names is not None and resolver is not None and not (
                resolver[1] in names.resolver_ports
                and any(resolver[0] in network for network in names.resolvers)):
            # the kernel believes no answer of a resolver the policy does not trust
            verdict = _egress(compiled, flow, None, name)
            ip, port = resolver
            return dataclasses.replace(verdict, decided=(
                f"{verdict.decided} ({learned} was answered by {_endpoint(ip, port)}, "
                "a resolver the policy does not trust)"))
        return _egress(compiled, flow, learned, name)

    def _dns(self, judged: _Judged, event: dict) -> Verdict | None:
        # A recording under a policy that logs by name holds every query it
        # let through: refusing one makes the workload's lookup fail before
        # any connect (EAI_AGAIN), even when a CIDR rule allows the address.
        if event.get("direction") != "query":
            return None
        server = flow_of({"dst": _dict(event.get("resolver")), "proto": event.get("proto")})
        if server is None:
            return None
        compiled, policy = judged.compiled, judged.policy.name
        names = compiled.names
        if names is None or server.port not in names.resolver_ports or not any(
                server.address in network for network in names.resolvers):
            return _egress(compiled, dataclasses.replace(server, hook="sendmsg"), None, policy)
        question = _name(_dict(event.get("dns")).get("name"))
        entry = names.match(question) if question is not None else None
        if entry is None:
            return Verdict(Action(compiled.default_action).label, None,
                           "defaultAction (no rule names the query)", policy)
        rule_id = next((rule[4] for rule in PORT_RULE.iter_unpack(entry.rules)
                        if rule[3] == int(entry.query_action)), RULE_NONE)
        rule = compiled.rule_name(rule_id) if rule_id != RULE_NONE else None
        return Verdict(entry.query_action.label, rule,
                       f"rule {rule} (name {entry.pattern})" if rule else f"name {entry.pattern}",
                       policy)

    def _exec(self, judged: _Judged, event: dict) -> Verdict | None:
        compiled = judged.compiled
        process = _dict(event.get("process"))
        paths = [p for p in (_str(event.get("filename")), _str(process.get("exe"))) if p]
        found: list[tuple[Action, int]] = []
        for path in paths:
            found += [hit for hit in (compiled.exec_names.get(os.path.basename(path)),
                                      compiled.exec_paths.get(path)) if hit is not None]
        if not found:
            return Verdict("log", None, "no exec rule", judged.policy.name)
        # (an audit policy's WOULD_ actions rank as what they would do, as in the kernel)
        action, rule_id = max(found, key=lambda hit: (ACTION_RANK[hit[0].enforced], -hit[1]))
        rule = compiled.rule_name(rule_id)
        return Verdict(action.label, rule, f"rule {rule}", judged.policy.name)

    def _socket(self, judged: _Judged, event: dict) -> Verdict | None:
        if not judged.policy.deny_raw_sockets:
            return Verdict("allow", None, "sockets.raw: allow", judged.policy.name)
        if judged.policy.audit:
            return Verdict("log", None, "sockets.raw: deny (spec.mode: audit)", judged.policy.name)
        packet = _dict(event.get("socket")).get("family") == "packet"
        return Verdict("kill" if packet else "block", None, "sockets.raw: deny",
                       judged.policy.name)

    def _detection(self, judged: _Judged, event: dict) -> Verdict | None:
        detection = _dict(event.get("detection"))
        kind = detection.get("type")
        if not isinstance(kind, str):
            return None
        if kind == "name_mismatch":
            return self._name_mismatch(judged, event, detection)
        policy = judged.policy
        action = policy.action_for(kind)
        if (detection.get("confidence") == "low" or policy.audit) and action in ("block", "kill"):
            action = "log"
        key = {"stratum": "stratum", "miner_dns": "stratum"}.get(kind, kind)
        return Verdict(action, None, f"detections for {key}", policy.name)

    def _name_mismatch(self, judged: _Judged, event: dict,
                       detection: dict) -> Verdict | None:
        flow = flow_of(event)
        if flow is None:
            return None
        compiled, name = judged.compiled, judged.policy.name
        host = _name(_dict(detection.get("evidence")).get("host"))
        names = compiled.names
        if names is not None:
            if host is not None and names.verdict(host, flow.port, int(flow.proto)) is not None:
                return Verdict("allow", None, f"name rules allow {host}", name)
            if host is None and not names.block_unnamed:
                return Verdict("allow", None, "spec.dns.unnamed: allow", name)
        # what the address gets without the name
        return _egress(compiled, flow, None, name)


def _endpoint(address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _egress(compiled: CompiledPolicy, flow: Flow, name: str | None, policy: str) -> Verdict:
    """The kernel's verdict for a connect or sendmsg (sock_addr.bpf.c judge)."""
    action, rule_id = simulate(compiled, str(flow.address), flow.port, flow.proto)
    matched = rule_id != RULE_NONE
    names = compiled.names
    if names is not None:
        by_name = names.verdict(name, flow.port, int(flow.proto)) if name else None
        if by_name is not None:
            if not matched or ACTION_RANK[by_name[0].enforced] > ACTION_RANK[action.enforced]:
                action, rule_id = by_name
                rule = compiled.rule_name(rule_id)
                return Verdict(action.label, rule, f"rule {rule} (name {name})", policy)
        elif not matched and flow.port in names.resolver_ports and any(
                flow.address in network for network in names.resolvers):
            return Verdict("allow", RESOLVER_RULE, f"rule {RESOLVER_RULE}", policy)
    if not matched:
        return Verdict(Action(compiled.default_action).label, None, "defaultAction", policy)
    rule = compiled.rule_name(rule_id)
    return Verdict(action.label, rule, f"rule {rule}", policy)


_JUDGES = {"connect": Replay._connect, "dns": Replay._dns, "exec": Replay._exec,
           "socket": Replay._socket, "detection": Replay._detection}

