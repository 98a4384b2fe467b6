# SPDX-License-Identifier: Apache-2.0
"""A policy's host targets -> the kernel's name tables (bpf/lib/names.h). Pure.

Each name pattern of the policy (`pypi.org`, `*.pythonhosted.org`) becomes
one entry: a name id, what a query for a name it matches gets, and its port
rules, flattened like a CIDR prefix's: its own rules first (block before log
before allow, then file order), then the rules of every wider `*.` pattern
that covers it, most specific first. The kernel matches a question's name
against the exact names, then against its parents as `*.` patterns, and
takes the first hit: the flattening makes that one entry carry everything
that applies.

A name id is a hash of the pattern, the same in every generation: an address
the workload learned under one generation keeps its names across a reload,
and is judged by whatever the new generation says of them (nothing, if it no
longer names them).

Trusted resolvers are prefixes and ports; they are reachable on those ports
without a rule (rule `dns-resolvers`), and no guarded process may bind a
resolver port.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Mapping, Sequence

from guard.kernel.abi import DNS_NAME_MAX, DNS_PORTS, PORT_RULE, RULES_PER_PREFIX, Action, NameKind
from guard.kernel.abi import Proto
from guard.policy.model import (ACTION_RANK, DNS_RESOLVER_PORTS, Network, Policy, PolicyError,
                                Problem, Target)

RESOLVER_RULE = "dns-resolvers"
#: Names one policy may hold: eg_dns_names holds two generations of every policy.
NAMES_MAX = 4096


@dataclass(frozen=True)
class NameEntry:
    kind: NameKind
    name: str                     # lower case, no "*." (kind says whether it is a pattern)
    name_id: int
    query_action: Action
    rules: bytes                  # packed struct guard_port_rule, in precedence order

    @property
    def pattern(self) -> str:
        return self.name if self.kind == NameKind.EXACT else f"*.{self.name}"

    @property
    def rule_count(self) -> int:
        return len(self.rules) // PORT_RULE.size


@dataclass(frozen=True)
class NameTable:
    entries: tuple[NameEntry, ...]
    resolvers: tuple[Network, ...]
    resolver_ports: tuple[int, ...]
    resolver_rule_id: int
    ttl_min: int
    ttl_max: int
    block_unnamed: bool = False

    def by_id(self) -> Mapping[int, NameEntry]:
        return {entry.name_id: entry for entry in self.entries}

    def match(self, name: str) -> NameEntry | None:
        """The entry the kernel picks for a name (dns.bpf.c match_name): the
        name itself, else its nearest parent as a "*." pattern."""
        table = self._by_pattern
        found = table.get((NameKind.EXACT, name))
        labels = name.split(".")
        for cut in range(1, len(labels)):
            if found is not None:
                break
            found = table.get((NameKind.BELOW, ".".join(labels[cut:])))
        return found

    def verdict(self, name: str, port: int, proto: int) -> tuple[Action, int] | None:
        """(action, rule id) of the first of the name's port rules that
        matches, as sock_addr.bpf.c scans them; None when no rule does."""
        entry = self.match(name)
        if entry is None:
            return None
        for low, high, rule_proto, action, rule_id in PORT_RULE.iter_unpack(entry.rules):
            if rule_proto in (0, proto) and low <= port <= high:
                return Action(action), rule_id
        return None

    @property
    def _by_pattern(self) -> Mapping[tuple[NameKind, str], NameEntry]:
        cached = self.__dict__.get("_patterns")
        if cached is None:
            cached = {(entry.kind, entry.name): entry for entry in self.entries}
            object.__setattr__(self, "_patterns", cached)
        return cached


def name_id(kind: NameKind, name: str) -> int:
    """The stable, non-zero 64-bit id of a pattern."""
    digest = hashlib.blake2b(f"{int(kind)}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


def name_key(name: str) -> bytes:
    """struct guard_name_key.name: the text right-aligned, NUL on the left."""
    raw = name.encode("ascii")
    if not 0 < len(raw) < DNS_NAME_MAX:
        raise ValueError(f"name of {len(raw)} bytes")
    return raw.rjust(DNS_NAME_MAX, b"\0")


def split_pattern(host: str) -> tuple[NameKind, str]:
    return (NameKind.BELOW, host[2:]) if host.startswith("*.") else (NameKind.EXACT, host)


def compile_names(policy: Policy, resolver_rule_id: int,
                  default_resolvers: Sequence[Target] = ()) -> NameTable | None:
    # default_resolvers: the host's nameservers (guard/workloads/resolvconf.py)
    # as targets on DNS_RESOLVER_PORTS, for a policy without spec.dns.resolvers
    """The name tables of a policy, None when it names no host. PolicyError
    when the kernel could not hold them or names could not be trusted."""
    # (kind, name) -> [(rank, order, packed rule)], and where each came from
    own: dict[tuple[NameKind, str], list[tuple[int, int, bytes]]] = {}
    origin: dict[tuple[NameKind, str], tuple[int, str]] = {}
    order = 0
    for index, rule in enumerate(policy.egress):
        for target_index, target in enumerate(rule.targets):
            host = getattr(target, "host", None)
            if not host:
                continue
            pattern = split_pattern(host)
            origin.setdefault(pattern, (rule.line, f"spec.egress[{index}].to[{target_index}].host"))
            for low, high in target.ports:
                order += 1
                own.setdefault(pattern, []).append((
                    -ACTION_RANK[rule.action], order,
                    PORT_RULE.pack(low, high, int(target.proto), int(rule.action), index + 1)))
    if not own:
        return None
    problems = _trust_problems(policy, origin)
    if len(own) > NAMES_MAX:
        line, field = origin[list(own)[NAMES_MAX]]
        problems.append(Problem(policy.source, line, field,
                                f"more than {NAMES_MAX} host names in one policy"))
    resolvers, ports = _resolvers(policy, default_resolvers, problems)
    entries = []
    for (kind, name), rules in own.items():
        chain = _flattened(kind, name, own)
        if len(chain) > RULES_PER_PREFIX:
            line, field = origin[(kind, name)]
            problems.append(Problem(policy.source, line, field,
                                    f"more than {RULES_PER_PREFIX} rules apply to {host_text(kind, name)} "
                                    f"({len(chain)} port rules, counting those of wider *. patterns)"))
            continue
        actions = {rule[3] for rule in map(PORT_RULE.unpack, chain)}
        query = (Action.ALLOW if int(Action.ALLOW) in actions
                 else Action.LOG if int(Action.LOG) in actions else Action.BLOCK)
        entries.append(NameEntry(kind, name, name_id(kind, name), query, b"".join(chain)))
    if problems:
        raise PolicyError(sorted(problems, key=lambda problem: problem.line))
    dns = policy.dns
    return NameTable(tuple(entries), resolvers, ports, resolver_rule_id,
                     dns.ttl_min, max(dns.ttl_min, dns.ttl_max), dns.block_unnamed)


def host_text(kind: NameKind, name: str) -> str:
    return name if kind == NameKind.EXACT else f"*.{name}"


def _flattened(kind: NameKind, name: str,
               own: Mapping[tuple[NameKind, str], list[tuple[int, int, bytes]]]) -> list[bytes]:
    """A pattern's port rules, then those of each wider "*." pattern over it."""
    chain: list[bytes] = [packed for _rank, _order, packed in sorted(own[(kind, name)])]
    # "a.b.c" and "*.a.b.c" (name "a.b.c") are both covered by "*.b.c", then "*.c"
    labels = name.split(".")
    for cut in range(1, len(labels)):
        parent = (NameKind.BELOW, ".".join(labels[cut:]))
        chain += [packed for _rank, _order, packed in sorted(own.get(parent, ()))]
    return list(dict.fromkeys(chain))


def _trust_problems(policy: Policy, origin) -> list[Problem]:
    if policy.deny_raw_sockets:
        return []
    line, field = next(iter(origin.values()))
    return [Problem(policy.source, line, field,
                    "host targets need raw sockets denied (spec.sockets.raw: deny): a raw or "
                    "packet socket can forge the resolver answers names are learned from")]


def _resolvers(policy: Policy, default: Sequence[Target],
               problems: list[Problem]) -> tuple[tuple[Network, ...], tuple[int, ...]]:
    """The trusted resolvers' networks and their ports (at most DNS_PORTS single ports)."""
    dns = policy.dns
    targets = dns.resolvers if dns.resolvers is not None else tuple(default)
    networks: list[Network] = []
    ports: list[int] = []
    for target in targets:
        networks += [n for n in target.networks if isinstance(n, (ipaddress.IPv4Network,
                                                                   ipaddress.IPv6Network))]
        for low, high in target.ports:
            if high - low >= DNS_PORTS:
                ports.append(-1)
            else:
                ports += range(low, high + 1)
    distinct = tuple(dict.fromkeys(p for p in ports if p > 0))
    if -1 in ports or len(distinct) > DNS_PORTS:
        problems.append(Problem(policy.source, dns.line, "spec.dns.resolvers",
                                f"resolvers may use at most {DNS_PORTS} ports "
                                f"(no guarded process may bind them)"))
    # no resolver at all (none listed, none in the host's resolv.conf): no
    # answer is believed and every name stays closed; the agent says so
    return tuple(dict.fromkeys(networks)), distinct[:DNS_PORTS]


def resolver_targets(networks: Sequence[Network]) -> tuple[Target, ...]:
    """Host nameservers as resolver targets (DNS ports, UDP and TCP)."""
    return tuple(Target(networks=(network,), ports=DNS_RESOLVER_PORTS, proto=Proto.ANY)
                 for network in networks)
