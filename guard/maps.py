# SPDX-License-Identifier: Apache-2.0
"""The only writer of egress-guard's BPF maps.

A compiled policy is installed under a policy id (its generation): every rule
key carries that id, so a new generation can be written beside the old one and
a guarded cgroup switches by one update of its eg_guarded entry. Nothing here
decides anything; it only turns compiled policies and guard assignments into
map entries and takes them out again.
"""
from __future__ import annotations

import ctypes
import ipaddress
import time
from dataclasses import dataclass, field

from . import abi
from .bpf import libbpf
from .compile import CompiledPolicy

PORT_RULE_SLOTS = 262144  # eg_port_rules max_entries in bpf/guard.bpf.h


class MapCapacityError(Exception):
    """A policy does not fit the kernel maps."""


@dataclass
class _Installed:
    """What one policy generation put into the maps, so it can be removed."""
    spans: list[tuple[int, int]] = field(default_factory=list)
    lpm4: list[abi.Lpm4Key] = field(default_factory=list)
    lpm6: list[abi.Lpm6Key] = field(default_factory=list)
    exec_keys: list[abi.ExecKey] = field(default_factory=list)


class SlotAllocator:
    """First-fit allocation of contiguous runs of eg_port_rules slots."""

    def __init__(self, size: int):
        self._free: list[tuple[int, int]] = [(0, size)]  # (first, count), sorted

    def take(self, count: int) -> int:
        for i, (first, avail) in enumerate(self._free):
            if avail >= count:
                if avail == count:
                    del self._free[i]
                else:
                    self._free[i] = (first + count, avail - count)
                return first
        raise MapCapacityError(f"no room for {count} port rules in eg_port_rules")

    def reserve(self, first: int, count: int) -> None:
        """Mark a run in use that someone else allocated (an adopted map)."""
        end = first + count
        remaining = []
        for start, n in self._free:
            stop = start + n
            if stop <= first or start >= end:
                remaining.append((start, n))
                continue
            if start < first:
                remaining.append((start, first - start))
            if stop > end:
                remaining.append((end, stop - end))
        self._free = remaining

    def give(self, first: int, count: int) -> None:
        self._free.append((first, count))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for start, n in self._free:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((start, n))
        self._free = merged


def _exec_key(policy_id: int, match: abi.ExecMatch, text: str) -> abi.ExecKey:
    key = abi.ExecKey(policy_id=policy_id, match=match)
    key.str = text.encode()
    return key


class Maps:
    """Writes policies, guarded cgroups and config; reads counters."""

    def __init__(self, map_fds: dict[str, int]):
        self._fd = map_fds
        self._slots = SlotAllocator(PORT_RULE_SLOTS)
        self._installed: dict[int, _Installed] = {}
        self._levels: dict[int, int] = {}  # guarded cgroup id -> level
        self._config = abi.Config()

    # -- policies ---------------------------------------------------------
    def install_policy(self, policy_id: int, policy: CompiledPolicy) -> None:
        """Write every entry of one generation; the kernel uses it only once a
        guarded cgroup points at policy_id."""
        if policy_id in self._installed:
            raise ValueError(f"policy id {policy_id} is already installed")
        record = _Installed()
        self._installed[policy_id] = record
        try:
            for network, rules in policy.v4.items():
                record.lpm4.append(self._write_prefix(policy_id, network, rules, record))
            for network, rules in policy.v6.items():
                record.lpm6.append(self._write_prefix(policy_id, network, rules, record))
            for match, table in ((abi.ExecMatch.NAME, policy.exec_names),
                                 (abi.ExecMatch.PATH, policy.exec_paths)):
                for text, (action, rule_id) in table.items():
                    key = _exec_key(policy_id, match, text)
                    hold = policy.exec_holds.get(text, 0) if match == abi.ExecMatch.NAME else 0
                    libbpf.map_update(self._fd["eg_exec_rules"], key,
                                      abi.ExecVerdict(action=action, flags=hold,
                                                      rule_id=rule_id))
                    record.exec_keys.append(key)
            # programs stopped at exec for a detection: entries without a rule
            for name, hold in policy.exec_holds.items():
                if name in policy.exec_names:
                    continue
                key = _exec_key(policy_id, abi.ExecMatch.NAME, name)
                libbpf.map_update(self._fd["eg_exec_rules"], key,
                                  abi.ExecVerdict(action=abi.Action.LOG, flags=hold,
                                                  rule_id=abi.RULE_NONE))
                record.exec_keys.append(key)
            config = abi.PolicyConfig(default_action=policy.default_action,
                                      deny_raw_sockets=int(policy.deny_raw_sockets),
                                      stdio_socket_action=policy.stdio_socket_action,
                                      detect_flags=policy.detect_flags)
            libbpf.map_update(self._fd["eg_policies"], ctypes.c_uint32(policy_id), config)
        except BaseException:
            self.remove_policy(policy_id)
            raise

    def _write_prefix(self, policy_id, network, rules, record: _Installed):
        first = self._slots.take(len(rules))
        record.spans.append((first, len(rules)))
        for i, rule in enumerate(rules):
            libbpf.map_update(self._fd["eg_port_rules"], ctypes.c_uint32(first + i),
                              abi.PortRule(port_lo=rule.port_lo, port_hi=rule.port_hi,
                                           proto=rule.proto, action=rule.action,
                                           rule_id=rule.rule_id))
        span = abi.RuleSpan(first=first, count=len(rules))
        if isinstance(network, ipaddress.IPv4Network):
            key = abi.Lpm4Key(prefixlen=32 + network.prefixlen, policy_id=policy_id)
            key.addr[:] = network.network_address.packed
            libbpf.map_update(self._fd["eg_cidr4"], key, span)
        else:
            key = abi.Lpm6Key(prefixlen=32 + network.prefixlen, policy_id=policy_id)
            key.addr[:] = network.network_address.packed
            libbpf.map_update(self._fd["eg_cidr6"], key, span)
        return key

    def remove_policy(self, policy_id: int) -> None:
        record = self._installed.pop(policy_id, None)
        if record is None:
            return
        libbpf.map_delete(self._fd["eg_policies"], ctypes.c_uint32(policy_id))
        for key in record.lpm4:
            libbpf.map_delete(self._fd["eg_cidr4"], key)
        for key in record.lpm6:
            libbpf.map_delete(self._fd["eg_cidr6"], key)
        for key in record.exec_keys:
            libbpf.map_delete(self._fd["eg_exec_rules"], key)
        for first, count in record.spans:
            self._slots.give(first, count)

    @property
    def installed(self) -> list[int]:
        return sorted(self._installed)

    def set_slot(self, slot: int, policy_id: int, fail_closed_policy_id: int = 0) -> None:
        """Point every cgroup of slot at a generation: one map update, so the
        kernel switches from the whole old policy to the whole new one."""
        for pid in (policy_id, fail_closed_policy_id):
            if pid and pid not in self._installed:
                raise ValueError(f"policy id {pid} is not installed")
        libbpf.map_update(self._fd["eg_slots"], ctypes.c_uint32(slot),
                          abi.Slot(policy_id=policy_id,
                                   fail_closed_policy_id=fail_closed_policy_id))

    def adopt(self) -> tuple[int, list[int]]:
        """Take over maps a previous agent filled (pinned maps): learn every
        installed generation's entries so they can be retired, and which
        slots of eg_port_rules are in use. Returns (highest policy id seen,
        cgroup ids marked guarded)."""
        records: dict[int, _Installed] = {}

        def record(policy_id: int) -> _Installed:
            return records.setdefault(policy_id, _Installed())
        for pid in libbpf.map_keys(self._fd["eg_policies"], ctypes.c_uint32):
            record(pid.value)
        for name, key_type, field_name in (("eg_cidr4", abi.Lpm4Key, "lpm4"),
                                           ("eg_cidr6", abi.Lpm6Key, "lpm6")):
            for key in libbpf.map_keys(self._fd[name], key_type):
                span = abi.RuleSpan()
                if libbpf.map_lookup(self._fd[name], key, span):
                    entry = record(key.policy_id)
                    getattr(entry, field_name).append(key)
                    entry.spans.append((span.first, span.count))
        for key in libbpf.map_keys(self._fd["eg_exec_rules"], abi.ExecKey):
            record(key.policy_id).exec_keys.append(key)
        for entry in records.values():
            for first, count in entry.spans:
                self._slots.reserve(first, count)
        self._installed.update(records)
        guarded = [key.value for key in libbpf.map_keys(self._fd["eg_guarded"], ctypes.c_uint64)]
        libbpf.map_lookup(self._fd["eg_config"], ctypes.c_uint32(0), self._config)
        return max(records, default=0), guarded

    # -- guarded cgroups ---------------------------------------------------
    def guard(self, cgroup_id: int, level: int, slot: int) -> None:
        libbpf.map_update(self._fd["eg_guarded"], ctypes.c_uint64(cgroup_id),
                          abi.CgroupInfo(policy_slot=slot))
        self._levels[cgroup_id] = level
        self._write_config()

    def unguard_adopted(self, cgroup_id: int) -> None:
        """Unmark a cgroup a previous agent guarded and this one does not."""
        libbpf.map_delete(self._fd["eg_guarded"], ctypes.c_uint64(cgroup_id))

    def unguard(self, cgroup_id: int) -> None:
        libbpf.map_delete(self._fd["eg_guarded"], ctypes.c_uint64(cgroup_id))
        self._levels.pop(cgroup_id, None)
        self._write_config()

    def watch_cgroups(self, enabled: bool) -> None:
        """Ask the kernel to report cgroup mkdir/rmdir (container discovery)."""
        if enabled:
            self._config.flags |= abi.ConfigFlags.WATCH_CGROUPS
        else:
            self._config.flags &= ~abi.ConfigFlags.WATCH_CGROUPS
        self._write_config()

    def heartbeat(self, timeout_ms: int) -> None:
        """Tell the kernel an agent is reading events now; after timeout_ms
        without another heartbeat, slots with a fail-closed generation use it."""
        self._config.heartbeat_timeout_ms = timeout_ms
        self._config.heartbeat_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self._write_config()

    def _write_config(self) -> None:
        levels = 0
        for level in self._levels.values():
            if level < abi.CGROUP_LEVELS:
                levels |= 1 << level
        self._config.guarded_levels = levels
        libbpf.map_update(self._fd["eg_config"], ctypes.c_uint32(0), self._config)

    # -- detections ----------------------------------------------------------
    def set_anchors(self, table: dict[int, int]) -> None:
        """The 4-byte windows the kernel holds payloads and programs on."""
        for window, kinds in table.items():
            libbpf.map_update(self._fd["eg_anchors"], ctypes.c_uint32(window),
                              ctypes.c_uint8(kinds))

    def set_hold_timeout(self, timeout_ms: int) -> None:
        """How long the kernel holds a flow or a program for a verdict; 0
        holds nothing."""
        self._config.hold_timeout_ms = timeout_ms
        self._write_config()

    def flow_verdict(self, cookie: int, action: abi.Action) -> None:
        """Answer a sampled flow: ALLOW lets it go (the kernel stops
        watching it), BLOCK drops everything it sends from now on."""
        libbpf.map_update(self._fd["eg_flow_verdicts"], ctypes.c_uint64(cookie),
                          abi.FlowVerdict(action=action))

    def block_process(self, tgid: int, start_ns: int) -> None:
        """Refuse every connect and sendmsg of one process (tgid + start time)."""
        libbpf.map_update(self._fd["eg_proc_verdicts"], ctypes.c_uint32(tgid),
                          abi.ProcVerdict(start_ns=start_ns, action=abi.Action.BLOCK))

    def release_held(self, tgid: int) -> None:
        """A program stopped at exec has been judged."""
        libbpf.map_delete(self._fd["eg_held_execs"], ctypes.c_uint32(tgid))

    def held_execs(self) -> dict[int, int]:
        """tgid -> CLOCK_BOOTTIME ns at which the kernel stopped it."""
        held = {}
        for key in libbpf.map_keys(self._fd["eg_held_execs"], ctypes.c_uint32):
            since = ctypes.c_uint64()
            if libbpf.map_lookup(self._fd["eg_held_execs"], key, since):
                held[key.value] = since.value
        return held

    def request_reset(self, cookie: int) -> None:
        """Mark a TCP socket for the next run of the reset iterator."""
        if "eg_destroy" in self._fd:
            libbpf.map_update(self._fd["eg_destroy"], ctypes.c_uint64(cookie), ctypes.c_uint8(1))

    # -- counters ------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Per-CPU counters summed over CPUs, by lower-case counter name."""
        values = (ctypes.c_uint64 * libbpf.possible_cpus())()
        totals = {}
        for counter in abi.Counter:
            libbpf.map_lookup(self._fd["eg_counters"], ctypes.c_uint32(counter), values)
            totals[counter.name.lower()] = sum(values)
        return totals
