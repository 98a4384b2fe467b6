# SPDX-License-Identifier: Apache-2.0
"""Policy -> the tables the kernel reads. Pure: no BPF, no I/O.

When several egress rules match a destination, the project's rule is:

1. the most specific CIDR prefix that has a rule matching the port and
   protocol wins;
2. at equal prefix length, block beats log beats allow;
3. then the rule earlier in the file wins;
4. if nothing matches, the policy's defaultAction applies.

The kernel finds one prefix per destination, the longest of the policy that
contains it (an IPv4 host is looked up by its address first, eg_host4, and
the rest in an LPM trie per family), and takes the first port rule of that
prefix whose port range and protocol match. So the compiler flattens: every
network gets its own rules in precedence order, followed by the rules of
every wider network of the policy that contains it, most specific first. A
destination whose own prefix has no matching port rule then falls through to
the wider prefixes exactly as rule 1 says.

The compiler reads the egress rules as columns (EgressTable: one row per
network a target names) and answers in the kernel's own layout (PrefixTable:
the prefixes, and their port rules as packed struct guard_port_rule), so a
policy of 10,000 rules compiles without an object per rule: a Policy whose
egress rules the fast reader left as columns (columns.RuleColumns) is
compiled from them without building its EgressRules. `v4` and `v6` decode the
tables into mappings; `simulate` answers from them like the kernel does, and
tests compare both.

Audit mode (spec.mode: audit) is compiled, not programmed: every BLOCK and
KILL the tables hold becomes WOULD_BLOCK or WOULD_KILL (abi.Action), which
the kernel lets through and reports with the rule that decided, after the
precedence was settled on the enforce actions; nothing is held or stopped at
exec. What no table decides (raw sockets, resolver-port binds, first
payloads to learned addresses) reads the policy's `audit` flag.

What the kernel samples, holds and stops for the detections is the
classifiers' business (guard/detect/vocabulary.py): the caller passes it in as
a `detection` function, so the compiler knows no classifier.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import struct
import types
from array import array
from dataclasses import dataclass, field
from functools import cache, cached_property
from itertools import accumulate, compress, repeat
from operator import eq, itemgetter
from typing import Callable, Mapping, Protocol, Sequence

from guard.kernel.abi import (PORT_RULE, RULE_NONE, RULES_PER_PREFIX, Action, DetectFlags,
                              Proto)
from guard.policy.cidr import host_mask, network_v4
from guard.policy.names import RESOLVER_RULE, NameTable, compile_names
from guard.policy.model import (ACTION_RANK, EgressRule, ExecRule, Network, Policy, PolicyError,
                                Problem, Target)

RULE_ID_MAX = 0xFFFF            # rule ids travel as u16 in events and verdicts


@dataclass(frozen=True)
class PortRule:
    """Mirrors struct guard_port_rule (abi.PortRule): one inclusive port range."""
    port_lo: int
    port_hi: int
    proto: Proto
    action: Action
    rule_id: int


@dataclass(frozen=True)
class EgressTable:
    """A policy's egress rules as columns: one row per network of a target,
    in file order (a target without cidr has two rows, 0.0.0.0/0 and ::/0)."""
    names: Sequence[str]                        # rule id i + 1 -> names[i]
    rule_ids: Sequence[int]                     # the columns, one entry per row
    actions: Sequence[Action]
    protos: Sequence[Proto]
    ports: Sequence[tuple[tuple[int, int], ...]]
    versions: Sequence[int]                     # 4 or 6
    values: Sequence[int]                       # network address as an integer
    prefixlens: Sequence[int]


@dataclass(frozen=True)
class PrefixTable:
    """One address family's LPM entries as the kernel stores them, a column
    each (arrays, not to be changed): prefix i is the i-th address of
    `addresses` (network byte order, 4 or 16 bytes each) over prefixlens[i],
    and its counts[i] port rules follow those of prefix i - 1 in `rules`
    (packed struct guard_port_rule)."""
    version: int
    prefixlens: array = field(default_factory=lambda: array("I"))
    addresses: bytes = b""
    counts: array = field(default_factory=lambda: array("I"))
    rules: bytes = b""

    def __len__(self) -> int:
        return len(self.prefixlens)

    def decode(self) -> dict[Network, tuple[PortRule, ...]]:
        """network -> its rules, in the order the kernel scans them."""
        decoded = {}
        unpacked = [PortRule(lo, hi, Proto(proto), Action(action), rule_id)
                    for lo, hi, proto, action, rule_id in PORT_RULE.iter_unpack(self.rules)]
        size = 4 if self.version == 4 else 16
        for index, (prefixlen, end, count) in enumerate(zip(
                self.prefixlens, accumulate(self.counts), self.counts)):
            value = int.from_bytes(self.addresses[index * size:(index + 1) * size], "big")
            network = (network_v4(value, prefixlen) if self.version == 4
                       else ipaddress.IPv6Network((value, prefixlen)))
            decoded[network] = tuple(unpacked[end - count:end])
        return decoded


@dataclass(frozen=True)
class KernelDetection:
    """The kernel's share of a policy's detections (guard_policy_config's
    detect_flags and stdio_socket_action, and the programs stopped at exec)."""
    flags: int = 0
    stdio_socket_action: Action = Action.LOG
    exec_holds: Mapping[str, int] = field(default_factory=dict)   # name -> ExecHold


Detection = Callable[[Policy], KernelDetection]
NO_DETECTION = KernelDetection()


class Columnar(Protocol):
    """Egress rules that can hand the compiler their columns directly."""

    def table(self) -> EgressTable: ...


@dataclass(frozen=True)
class CompiledPolicy:
    name: str
    default_action: Action
    deny_raw_sockets: bool
    rule_names: tuple[str, ...]                             # rule_id -> name; [0] is ""
    ipv4: PrefixTable
    ipv6: PrefixTable
    exec_names: Mapping[str, tuple[Action, int]]            # basename -> (action, rule_id)
    exec_paths: Mapping[str, tuple[Action, int]]            # absolute path -> (action, rule_id)
    # detections (guard/detect/detector.py): what the kernel samples, holds and stops
    detect_flags: int = 0
    stdio_socket_action: Action = Action.LOG
    exec_holds: Mapping[str, int] = dataclasses.field(default_factory=dict)  # name -> ExecHold
    # allow by name (guard/policy/names.py): None when the policy names no host
    names: NameTable | None = None
    audit: bool = False     # spec.mode audit: the tables hold WOULD_ actions
    policy: Policy | None = dataclasses.field(default=None, compare=False, repr=False)

    @cached_property
    def v4(self) -> Mapping[ipaddress.IPv4Network, tuple[PortRule, ...]]:
        """The IPv4 table as network -> rules (flattened, precedence order)."""
        return types.MappingProxyType(self.ipv4.decode())

    @cached_property
    def v6(self) -> Mapping[ipaddress.IPv6Network, tuple[PortRule, ...]]:
        return types.MappingProxyType(self.ipv6.decode())

    def rule_name(self, rule_id: int) -> str | None:
        """The name of a rule, or None for RULE_NONE and ids this policy lacks."""
        if rule_id == RULE_NONE or not 0 < rule_id < len(self.rule_names):
            return None
        return self.rule_names[rule_id]


FAIL_CLOSED_RULE = "fail-closed-allow"


def compile_fail_closed(policy: Policy, detection: Detection | None = None,
                        default_resolvers: Sequence[Target] = ()) -> CompiledPolicy | None:
    """The generation guarded cgroups get while no agent reads events: block
    everything but spec.failClosed.allow, keep the exec rules, deny raw
    sockets. None when the policy has no failClosed section."""
    fail_closed = policy.fail_closed
    if fail_closed is None:
        return None
    allow = ((EgressRule(name=FAIL_CLOSED_RULE, action=Action.ALLOW,
                         targets=fail_closed.allow, line=fail_closed.line),)
             if fail_closed.allow else ())
    return compile_policy(dataclasses.replace(
        policy, name=f"{policy.name}.fail-closed", default_action=Action.BLOCK,
        egress=allow, deny_raw_sockets=True, fail_closed=None), detection,
        default_resolvers)


def compile_policy(policy: Policy, detection: Detection | None = None,
                   default_resolvers: Sequence[Target] = ()) -> CompiledPolicy:
    """The kernel tables for policy; PolicyError when they would not fit.
    detection: the kernel's share of the policy's detections (none if not
    given). default_resolvers: whom host targets trust when the policy lists
    no spec.dns.resolvers (the agent reads the host's /etc/resolv.conf)."""
    _check_rule_count(policy)
    plan = detection(policy) if detection is not None else NO_DETECTION
    compiled, crowded = _compile(policy, egress_table(policy), plan)
    if crowded:
        raise PolicyError(_overflows(policy, crowded))
    resolver_rule_id = len(compiled.rule_names)
    if policy.uses_names and resolver_rule_id > RULE_ID_MAX:
        raise PolicyError([Problem(policy.source, policy.dns.line, "spec",
                                   f"too many rules ({resolver_rule_id}; host targets take one "
                                   f"more rule id, for the trusted resolvers, and rule ids are "
                                   f"16-bit, so at most {RULE_ID_MAX - 1})")])
    names = compile_names(policy, resolver_rule_id, default_resolvers) \
        if policy.uses_names else None
    if names is not None:
        compiled = dataclasses.replace(
            compiled, names=names, rule_names=compiled.rule_names + (RESOLVER_RULE,))
    return audited(compiled) if policy.audit else compiled


#: action byte -> the byte audit mode stores instead (BLOCK, KILL -> WOULD_)
_AUDIT_BYTES = bytes(Action(value).audited if value in (Action.BLOCK, Action.KILL) else value
                     for value in range(256))


def _audit_rules(packed: bytes) -> bytes:
    """Packed struct guard_port_rule with every action audited."""
    if not packed:
        return packed
    rules = bytearray(packed)
    rules[5::PORT_RULE.size] = rules[5::PORT_RULE.size].translate(_AUDIT_BYTES)
    return bytes(rules)


def audited(compiled: CompiledPolicy) -> CompiledPolicy:
    """The compiled policy as audit mode gives it to the kernel: the same
    rules in the same order, every BLOCK and KILL a WOULD_ action; no first
    payload held and no program stopped at exec."""
    def exec_table(table):
        return types.MappingProxyType({key: (action.audited, rule_id)
                                       for key, (action, rule_id) in table.items()})
    names = compiled.names
    if names is not None:
        names = dataclasses.replace(names, entries=tuple(
            dataclasses.replace(entry, query_action=entry.query_action.audited,
                                rules=_audit_rules(entry.rules))
            for entry in names.entries))
    return dataclasses.replace(
        compiled, audit=True, default_action=compiled.default_action.audited,
        ipv4=dataclasses.replace(compiled.ipv4, rules=_audit_rules(compiled.ipv4.rules)),
        ipv6=dataclasses.replace(compiled.ipv6, rules=_audit_rules(compiled.ipv6.rules)),
        exec_names=exec_table(compiled.exec_names), exec_paths=exec_table(compiled.exec_paths),
        stdio_socket_action=compiled.stdio_socket_action.audited,
        detect_flags=compiled.detect_flags & ~(DetectFlags.HOLD | DetectFlags.HOLD_TUNNEL),
        exec_holds=types.MappingProxyType({}), names=names)


def egress_table(policy: Policy) -> EgressTable:
    """The columns of a policy's egress rules (the reader's own, if it kept them)."""
    table = getattr(policy.egress, "table", None)
    if table is not None:
        return table()
    columns: tuple[list, ...] = ([], [], [], [], [], [], [])
    rule_ids, actions, protos, ports, versions, values, prefixlens = columns
    for rule_id, rule in enumerate(policy.egress, start=1):
        for target in rule.targets:
            for network in target.networks:
                rule_ids.append(rule_id)
                actions.append(rule.action)
                protos.append(target.proto)
                ports.append(target.ports)
                versions.append(network.version)
                values.append(int(network.network_address))
                prefixlens.append(network.prefixlen)
    return EgressTable(tuple(rule.name for rule in policy.egress), *columns)


def simulate(compiled: CompiledPolicy, ip: str, port: int, proto: Proto) -> tuple[Action, int]:
    """(action, rule_id) the kernel gives a connection to ip:port over proto."""
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    table = compiled.v4 if address.version == 4 else compiled.v6
    for rule in _longest_prefix_match(table, address):
        if rule.port_lo <= port <= rule.port_hi and rule.proto in (Proto.ANY, proto):
            return rule.action, rule.rule_id
    return compiled.default_action, RULE_NONE


def _longest_prefix_match(table, address) -> tuple[PortRule, ...]:
    for prefixlen in range(address.max_prefixlen, -1, -1):
        network = ipaddress.ip_network((address, prefixlen), strict=False)
        if network in table:
            return table[network]
    return ()


def _check_rule_count(policy: Policy) -> None:
    count = len(policy.egress) + len(policy.exec_rules)
    if count > RULE_ID_MAX:
        egress = len(policy.egress)
        first_without_id = (policy.egress[RULE_ID_MAX] if egress > RULE_ID_MAX
                            else policy.exec_rules[RULE_ID_MAX - egress])
        raise PolicyError([Problem(policy.source, first_without_id.line, "spec",
                                   f"too many rules ({count}; rule ids are 16-bit, "
                                   f"so at most {RULE_ID_MAX})")])


Crowded = list[tuple[int, int, int, int]]   # (version, value, prefixlen, port rules)


def _compile(policy: Policy, table: EgressTable,
             plan: KernelDetection) -> tuple[CompiledPolicy, Crowded]:
    """The compiled policy, and the prefixes with more port rules than the
    kernel scans (the policy is only valid without any)."""
    crowded: Crowded = []
    families = {}
    for version in (4, 6):
        families[version] = _family(table, version, crowded)
    first_exec_id = len(table.names) + 1
    compiled = CompiledPolicy(
        name=policy.name,
        default_action=policy.default_action,
        deny_raw_sockets=policy.deny_raw_sockets,
        rule_names=("",) + tuple(table.names) + tuple(rule.name for rule in policy.exec_rules),
        ipv4=families[4],
        ipv6=families[6],
        exec_names=_exec_table(policy, first_exec_id, lambda rule: rule.names),
        exec_paths=_exec_table(policy, first_exec_id, lambda rule: rule.paths),
        detect_flags=plan.flags,
        stdio_socket_action=plan.stdio_socket_action,
        exec_holds=types.MappingProxyType(dict(plan.exec_holds)),
        policy=policy,
    )
    return compiled, crowded


def _family(table: EgressTable, version: int, crowded: Crowded) -> PrefixTable:
    """One family's prefixes and flattened port rules."""
    columns = (table.rule_ids, table.actions, table.protos, table.ports, table.values,
               table.prefixlens)
    other = 10 - version
    if other in table.versions:
        if version not in table.versions:
            return PrefixTable(version)
        chosen = list(map(eq, table.versions, repeat(version)))
        columns = tuple(list(compress(column, chosen)) for column in columns)
    elif version not in table.versions:
        return PrefixTable(version)
    rule_ids, actions, protos, ports, values, prefixlens = columns
    count = len(values)
    if (prefixlens.count(prefixlens[0]) == count and len(set(values)) == count
            and _one_range_each(ports)):
        # Every network distinct, none inside another, one port range each
        # (the usual large policy: a host or net and a port per rule): each
        # prefix has just its own rule, and the tables are written a column
        # at a time.
        rules = _pack_rules(rule_ids, actions, protos, ports)
        counts = array("I", [1]) * count
        prefixlens = array("I", prefixlens[:1]) * count
    else:
        keys, count_list, rules = _flatten(version, *columns)
        values, prefixlens = [key[0] for key in keys], array("I", [key[1] for key in keys])
        counts = array("I", count_list)
        for value, prefixlen, rule_count in zip(values, prefixlens, counts):
            if rule_count > RULES_PER_PREFIX:
                crowded.append((version, value, prefixlen, rule_count))
    if version == 4:
        addresses = struct.pack(f">{len(values)}I", *values)
    else:
        addresses = b"".join(map(int.to_bytes, values, repeat(16), repeat("big")))
    return PrefixTable(version=version, prefixlens=prefixlens, addresses=addresses,
                       counts=counts, rules=rules)


def _one_range_each(ports: Sequence[tuple[tuple[int, int], ...]]) -> bool:
    if ports.count(ports[0]) == len(ports):
        return len(ports[0]) == 1
    return list(map(len, ports)).count(1) == len(ports)


def _pack_rules(rule_ids, actions, protos, ports) -> bytes:
    """One struct guard_port_rule per row, built a field at a time."""
    count = len(ports)
    packed = bytearray(PORT_RULE.size * count)
    halves = memoryview(packed).cast("H")     # port_lo, port_hi, (proto, action), rule_id
    if ports.count(ports[0]) == count:
        (low, high), = ports[0]
        halves[0::4] = array("H", [low]) * count
        halves[1::4] = array("H", [high]) * count
    else:
        ranges = list(map(itemgetter(0), ports))
        halves[0::4] = array("H", map(itemgetter(0), ranges))
        halves[1::4] = array("H", map(itemgetter(1), ranges))
    packed[4::8] = _bytes_column(protos, count)
    packed[5::8] = _bytes_column(actions, count)
    halves[3::4] = _rule_id_column(rule_ids)
    halves.release()
    return bytes(packed)


@cache
def _rule_id_ramp() -> array:
    """Every rule id in order (128 KiB, made once)."""
    return array("H", range(RULE_ID_MAX + 1))


def _rule_id_column(rule_ids: Sequence[int]) -> array:
    """rule_ids as u16s; a run of ids (the usual column, a range) is a slice
    of the ramp, where converting a range costs about 70 ns an id."""
    if isinstance(rule_ids, range) and rule_ids.step == 1 \
            and 0 <= rule_ids.start <= rule_ids.stop <= RULE_ID_MAX + 1:
        return _rule_id_ramp()[rule_ids.start:rule_ids.stop]
    return array("H", rule_ids)


def _bytes_column(values: Sequence[int], count: int) -> bytes:
    """bytes(values), a column of one value (the usual: one action, one
    protocol) without converting each entry."""
    if values.count(values[0]) == count:   # enum members: compared by identity first
        return bytes((values[0],)) * count
    return bytes(values)


def _flatten(version: int, rule_ids, actions, protos, ports, values, prefixlens):
    """(keys, counts, packed rules): each network's own rules, in precedence
    order (severity, then file order), followed by those of every wider
    network containing it, most specific first.

    Wider networks are found by masking the address to each prefix length the
    policy uses and looking the result up, so the cost is at most 33 (or 129)
    dict lookups per network instead of a scan over all networks.
    """
    own: dict[tuple[int, int], list[tuple]] = {}
    for rule_id, action, proto, ranges, value, prefixlen in zip(rule_ids, actions, protos,
                                                                ports, values, prefixlens):
        own.setdefault((value, prefixlen), []).extend(
            (low, high, proto, action, rule_id) for low, high in ranges)
    for rules in own.values():
        # stable: a rule's own targets and port ranges keep their order
        rules.sort(key=lambda rule: (-ACTION_RANK[rule[3]], rule[4]))
    width = 32 if version == 4 else 128
    lengths = sorted({prefixlen for _, prefixlen in own}, reverse=True)
    counts, packed = [], []
    for (value, prefixlen), rules in own.items():
        chain = list(rules)
        for wider in lengths:
            if wider < prefixlen:
                chain += own.get((value & ~host_mask(wider, width), wider), ())
        # A repeated entry can never be the first match, and only wastes a slot.
        chain = list(dict.fromkeys(chain))
        counts.append(len(chain))
        packed += map(PORT_RULE.pack, *zip(*chain)) if chain else ()
    return list(own), counts, b"".join(packed)


def _overflows(policy: Policy, crowded: Crowded) -> list[Problem]:
    """A problem for each network with more port rules than the kernel scans."""
    origins = _first_targets(policy)
    problems = []
    for version, value, prefixlen, count in crowded:
        network = ipaddress.IPv4Network((value, prefixlen)) if version == 4 else \
            ipaddress.IPv6Network((value, prefixlen))
        line, field = origins[network]
        problems.append(Problem(
            policy.source, line, field,
            f"more than {RULES_PER_PREFIX} rules apply to {network} ({count} port rules, "
            f"counting those of wider prefixes that contain it)"))
    return sorted(problems, key=lambda problem: problem.line)


def _first_targets(policy: Policy) -> dict[Network, tuple[int, str]]:
    """Network -> (line, field) of the first target that names it."""
    origins: dict[Network, tuple[int, str]] = {}
    for index, rule in enumerate(policy.egress):
        for target_index, target in enumerate(rule.targets):
            for network in target.networks:
                origins.setdefault(network, (rule.line, f"spec.egress[{index}].to[{target_index}]"))
    return origins


def _exec_table(policy: Policy, first_id: int,
                keys_of: Callable[[ExecRule], tuple[str, ...]]) -> Mapping[str, tuple[Action, int]]:
    """Executable name or path -> (action, rule_id): kill beats log, then file order."""
    table: dict[str, tuple[Action, int]] = {}
    for rule_id, rule in enumerate(policy.exec_rules, start=first_id):
        for key in keys_of(rule):
            current = table.get(key)
            if current is None or ACTION_RANK[rule.action] > ACTION_RANK[current[0]]:
                table[key] = (rule.action, rule_id)
    return types.MappingProxyType(table)
