# SPDX-License-Identifier: Apache-2.0
"""Policy -> the tables the kernel reads. Pure: no BPF, no I/O.

When several egress rules match a destination, the project's rule is:

1. the most specific CIDR prefix that has a rule matching the port and
   protocol wins;
2. at equal prefix length, block beats log beats allow;
3. then the rule earlier in the file wins;
4. if nothing matches, the policy's defaultAction applies.

The kernel does one longest-prefix lookup per address family and takes the
first port rule of that prefix whose port range and protocol match. So the
compiler flattens: every network gets its own rules in precedence order,
followed by the rules of every wider network of the policy that contains it,
most specific first. A destination whose own prefix has no matching port rule
then falls through to the wider prefixes exactly as rule 1 says.

`simulate` answers like the kernel does; tests compare both.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import types
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Mapping

from .abi import RULE_NONE, RULES_PER_PREFIX, Action, Proto
from .policy import EgressRule, ExecRule, Network, Policy, PolicyError, Problem

RULE_ID_MAX = 0xFFFF            # rule ids travel as u16 in events and verdicts

# Higher wins at equal prefix length (egress) or for the same executable (exec).
SEVERITY = {Action.ALLOW: 0, Action.LOG: 1, Action.BLOCK: 2, Action.KILL: 3}


@dataclass(frozen=True)
class PortRule:
    """Mirrors struct guard_port_rule (abi.PortRule): one inclusive port range."""
    port_lo: int
    port_hi: int
    proto: Proto
    action: Action
    rule_id: int


@dataclass(frozen=True)
class CompiledPolicy:
    name: str
    default_action: Action
    deny_raw_sockets: bool
    rule_names: tuple[str, ...]                             # rule_id -> name; [0] is ""
    v4: Mapping[ipaddress.IPv4Network, tuple[PortRule, ...]]  # flattened, precedence order
    v6: Mapping[ipaddress.IPv6Network, tuple[PortRule, ...]]
    exec_names: Mapping[str, tuple[Action, int]]            # basename -> (action, rule_id)
    exec_paths: Mapping[str, tuple[Action, int]]            # absolute path -> (action, rule_id)
    # detections (guard/detect.py): what the kernel samples, holds and stops
    detect_flags: int = 0
    stdio_socket_action: Action = Action.LOG
    exec_holds: Mapping[str, int] = dataclasses.field(default_factory=dict)  # name -> ExecHold
    policy: Policy | None = dataclasses.field(default=None, compare=False, repr=False)

    def rule_name(self, rule_id: int) -> str | None:
        """The name of a rule, or None for RULE_NONE and ids this policy lacks."""
        if rule_id == RULE_NONE or not 0 < rule_id < len(self.rule_names):
            return None
        return self.rule_names[rule_id]


FAIL_CLOSED_RULE = "fail-closed-allow"


def compile_fail_closed(policy: Policy) -> CompiledPolicy | None:
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
        egress=allow, deny_raw_sockets=True, fail_closed=None))


def compile_policy(policy: Policy) -> CompiledPolicy:
    """The kernel tables for policy; PolicyError when they would not fit."""
    _check_rule_count(policy)
    own = _own_port_rules(policy)
    problems: list[Problem] = []
    tables = {}
    for version, networks in own.items():
        tables[version] = _flatten(networks)
        problems += _overflows(policy, tables[version])
    if problems:
        raise PolicyError(sorted(problems, key=lambda problem: problem.line))
    first_exec_id = len(policy.egress) + 1
    from .detect import exec_holds, kernel_detection  # detect imports the classifiers
    detect_flags, stdio_action = kernel_detection(policy)
    return CompiledPolicy(
        name=policy.name,
        default_action=policy.default_action,
        deny_raw_sockets=policy.deny_raw_sockets,
        rule_names=("",) + tuple(rule.name for rule in policy.egress + policy.exec_rules),
        v4=types.MappingProxyType(tables[4]),
        v6=types.MappingProxyType(tables[6]),
        exec_names=_exec_table(policy, first_exec_id, lambda rule: rule.names),
        exec_paths=_exec_table(policy, first_exec_id, lambda rule: rule.paths),
        detect_flags=detect_flags,
        stdio_socket_action=stdio_action,
        exec_holds=types.MappingProxyType(exec_holds(policy)),
        policy=policy,
    )


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
    rules = policy.egress + policy.exec_rules
    if len(rules) > RULE_ID_MAX:
        first_without_id = rules[RULE_ID_MAX]
        raise PolicyError([Problem(policy.source, first_without_id.line, "spec",
                                   f"too many rules ({len(rules)}; rule ids are 16-bit, "
                                   f"so at most {RULE_ID_MAX})")])


def _own_port_rules(policy: Policy) -> dict[int, dict[Network, list[PortRule]]]:
    """IP version -> network -> the port rules naming exactly that network,
    in precedence order (severity, then file order)."""
    own: dict[int, dict[Network, list[PortRule]]] = {4: defaultdict(list), 6: defaultdict(list)}
    for rule_id, rule in enumerate(policy.egress, start=1):
        for target in rule.targets:
            for network in target.networks:
                own[network.version][network] += [
                    PortRule(low, high, target.proto, rule.action, rule_id)
                    for low, high in target.ports]
    for networks in own.values():
        for rules in networks.values():
            # stable: a rule's own targets and port ranges keep their order
            rules.sort(key=lambda rule: (-SEVERITY[rule.action], rule.rule_id))
    return {version: dict(networks) for version, networks in own.items()}


def _flatten(own: dict[Network, list[PortRule]]) -> dict[Network, tuple[PortRule, ...]]:
    """Each network's own rules followed by those of every wider network
    containing it, most specific first.

    Wider networks are found by masking the address to each prefix length the
    policy uses and looking the result up, so the cost is at most 33 (or 129)
    dict lookups per network instead of a scan over all networks.
    """
    by_prefix = {(int(network.network_address), network.prefixlen): rules
                 for network, rules in own.items()}
    prefix_lengths = sorted({network.prefixlen for network in own}, reverse=True)
    flat = {}
    for network, rules in own.items():
        chain = list(rules)
        address = int(network.network_address)
        for prefixlen in prefix_lengths:
            if prefixlen < network.prefixlen:
                wider = by_prefix.get((address & _mask(prefixlen, network.max_prefixlen),
                                       prefixlen))
                chain += wider or ()
        # A repeated entry can never be the first match, and only wastes a slot.
        flat[network] = tuple(dict.fromkeys(chain))
    return flat


def _mask(prefixlen: int, width: int) -> int:
    return ((1 << prefixlen) - 1) << (width - prefixlen)


def _overflows(policy: Policy, table: dict[Network, tuple[PortRule, ...]]) -> list[Problem]:
    """A problem for each network with more port rules than the kernel scans."""
    crowded = {network: len(rules) for network, rules in table.items()
               if len(rules) > RULES_PER_PREFIX}
    if not crowded:
        return []
    origins = _first_targets(policy)
    problems = []
    for network, count in crowded.items():
        line, field = origins[network]
        problems.append(Problem(
            policy.source, line, field,
            f"more than {RULES_PER_PREFIX} rules apply to {network} ({count} port rules, "
            f"counting those of wider prefixes that contain it)"))
    return problems


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
            if current is None or SEVERITY[rule.action] > SEVERITY[current[0]]:
                table[key] = (rule.action, rule_id)
    return types.MappingProxyType(table)
