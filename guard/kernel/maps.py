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
import mmap
import os
import struct
import threading
import time
from array import array
from dataclasses import dataclass, field
from functools import cache
from typing import Sequence
from itertools import accumulate, compress, repeat
from operator import add, eq, not_

from guard.kernel import abi
from guard.kernel import libbpf
from guard.policy.compile import CompiledPolicy, PrefixTable
from guard.policy.names import NameTable, name_key

PORT_RULE_SLOTS = 262144  # eg_port_rules max_entries in bpf/lib/egress.h
SPLIT_WRITES_FROM = 1024  # prefix writes this large are shared between two threads
NAME_KEY = struct.Struct(f"=IB3x{abi.DNS_NAME_MAX}s")   # guard_name_key
NAME_VALUE = struct.Struct("=QB7x")                      # guard_name_value
NAME_RULES_KEY = struct.Struct("=I4xQ")                  # guard_name_rules_key
_KEY_SIZES = {"eg_cidr4": abi.LPM4_KEY.size, "eg_cidr6": abi.LPM6_KEY.size,
              "eg_host4": abi.HOST4_KEY.size, "eg_exec_rules": ctypes.sizeof(abi.ExecKey),
              "eg_dns_names": NAME_KEY.size, "eg_dns_rules": NAME_RULES_KEY.size,
              "eg_dns_res4": abi.LPM4_KEY.size, "eg_dns_res6": abi.LPM6_KEY.size}


class MapCapacityError(Exception):
    """A policy does not fit the kernel maps."""


@dataclass
class _Installed:
    """What one policy generation put into the maps, so it can be removed."""
    spans: list[tuple[int, int]] = field(default_factory=list)   # eg_port_rules runs
    keys: dict[str, list[bytes]] = field(default_factory=dict)   # map -> packed keys
    prestaged: "_Prestaged | None" = None   # entries written ahead, until written


@dataclass
class _Prestaged:
    """IPv4 prefix entries written ahead of their generation (Maps.prestage)."""
    policy_id: int
    map_name: str            # eg_host4 (hosts) or eg_cidr4
    first: int               # eg_port_rules slots first .. first + count - 1, taken
    count: int
    prefixlen: int
    addresses: bytes         # network byte order, 4 bytes each
    keys: bytes
    writer: threading.Thread
    failed: list[BaseException]


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


def _mapped(fd: int | None, size: int) -> mmap.mmap | None:
    """An array map's values as this process's memory (BPF_F_MMAPABLE), or
    None: no such map, or one made without the flag (pinned by an agent
    from before it had it), which is then written through bpf()."""
    if fd is None:
        return None
    try:
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, ValueError):
        return None


@cache
def _slot_ramp() -> array:
    """Every eg_port_rules slot number in order (1 MiB, made once)."""
    return array("I", range(PORT_RULE_SLOTS))


def _slot_run(first: int, count: int) -> array:
    """Slots first .. first + count - 1: a slice of the ramp, where
    converting a range costs about 35 ns a slot."""
    return _slot_ramp()[first:first + count]


class Maps:
    """Writes policies, guarded cgroups and config; reads counters."""

    def __init__(self, map_fds: dict[str, int]):
        self._fd = map_fds
        self._slots = SlotAllocator(PORT_RULE_SLOTS)
        self._installed: dict[int, _Installed] = {}
        self._levels: dict[int, int] = {}  # guarded cgroup id -> level
        # a previous agent's levels, kept until this one has its entries
        # (settle_levels): a cgroup below a pinned parent stays judged
        self._adopted_levels = 0
        self._config = abi.Config()
        self._dns_ports: dict[int, tuple[int, ...]] = {}  # policy id -> its resolvers' ports
        self._batches: dict[str, bool] = {}  # map -> does this kernel batch it
        self._prestaged: _Prestaged | None = None
        self._port_rules = _mapped(map_fds.get("eg_port_rules"),
                                   PORT_RULE_SLOTS * abi.PORT_RULE.size)

    def close(self) -> None:
        """Let go of the mapped port rules (the mapping holds the map too)."""
        if self._port_rules is not None:
            self._port_rules.close()
            self._port_rules = None

    # -- policies ---------------------------------------------------------
    def install_policy(self, policy_id: int, policy: CompiledPolicy) -> None:
        """Write every entry of one generation; the kernel uses it only once a
        guarded cgroup points at policy_id."""
        if policy_id in self._installed:
            raise ValueError(f"policy id {policy_id} is already installed")
        record = _Installed()
        self._installed[policy_id] = record
        try:
            early = self._take_prestaged(policy_id, policy.ipv4, record)
            writes = ((early if early is not None
                       else self._write_prefixes(policy_id, policy.ipv4, record))
                      + self._write_prefixes(policy_id, policy.ipv6, record))
            self._write_all(writes)
            if early is not None:
                self._prestaged_written(record)
            exec_keys = []
            for match, table in ((abi.ExecMatch.NAME, policy.exec_names),
                                 (abi.ExecMatch.PATH, policy.exec_paths)):
                for text, (action, rule_id) in table.items():
                    key = bytes(_exec_key(policy_id, match, text))
                    hold = policy.exec_holds.get(text, 0) if match == abi.ExecMatch.NAME else 0
                    libbpf.map_update_packed(self._fd["eg_exec_rules"], key, bytes(
                        abi.ExecVerdict(action=action, flags=hold, rule_id=rule_id)))
                    exec_keys.append(key)
            # programs stopped at exec for a detection: entries without a rule
            for name, hold in policy.exec_holds.items():
                if name in policy.exec_names:
                    continue
                key = bytes(_exec_key(policy_id, abi.ExecMatch.NAME, name))
                libbpf.map_update_packed(self._fd["eg_exec_rules"], key, bytes(
                    abi.ExecVerdict(action=abi.Action.LOG, flags=hold, rule_id=abi.RULE_NONE)))
                exec_keys.append(key)
            record.keys["eg_exec_rules"] = exec_keys
            config = abi.PolicyConfig(default_action=policy.default_action,
                                      deny_raw_sockets=int(policy.deny_raw_sockets),
                                      stdio_socket_action=policy.stdio_socket_action,
                                      detect_flags=policy.detect_flags,
                                      audit=int(getattr(policy, "audit", False)),
                                      egress_families=(
                                          (abi.EgressFamilies.IPV4 if len(policy.ipv4) else 0)
                                          | (abi.EgressFamilies.IPV6 if len(policy.ipv6) else 0)))
            if policy.names is not None:
                self._install_names(policy_id, policy.names, record)
                config.names = abi.PolicyNames.ON
                config.dns_ttl_min = policy.names.ttl_min
                config.dns_ttl_max = policy.names.ttl_max
                config.resolver_rule_id = policy.names.resolver_rule_id
                for index, port in enumerate(policy.names.resolver_ports[:abi.DNS_PORTS]):
                    config.dns_ports[index] = port
            libbpf.map_update(self._fd["eg_policies"], ctypes.c_uint32(policy_id), config)
            if policy.names is not None:
                self._dns_ports[policy_id] = policy.names.resolver_ports
                self._write_config()
        except BaseException:
            self.remove_policy(policy_id)
            raise

    def _install_names(self, policy_id: int, names: NameTable, record: _Installed) -> None:
        """eg_dns_names, eg_dns_rules (spans of eg_port_rules) and the trusted
        resolvers of one generation (bpf/lib/names.h)."""
        total = sum(entry.rule_count for entry in names.entries)
        first = self._slots.take(max(total, 1))
        record.spans.append((first, max(total, 1)))
        self._write_all(self._port_rule_writes(first, b"".join(e.rules for e in names.entries),
                                               total) if total else [])
        name_keys, rule_keys, at = [], [], first
        for entry in names.entries:
            key = NAME_KEY.pack(policy_id, entry.kind, name_key(entry.name))
            libbpf.map_update_packed(self._fd["eg_dns_names"], key,
                                     NAME_VALUE.pack(entry.name_id, entry.query_action))
            name_keys.append(key)
            rules_key = NAME_RULES_KEY.pack(policy_id, entry.name_id)
            libbpf.map_update_packed(self._fd["eg_dns_rules"], rules_key,
                                     abi.RULE_SPAN.pack(at, entry.rule_count))
            rule_keys.append(rules_key)
            at += entry.rule_count
        record.keys["eg_dns_names"] = name_keys
        record.keys["eg_dns_rules"] = rule_keys
        for network in names.resolvers:
            version = network.version
            map_name, packer = (("eg_dns_res4", abi.LPM4_KEY) if version == 4
                                else ("eg_dns_res6", abi.LPM6_KEY))
            key = packer.pack(32 + network.prefixlen, policy_id, network.network_address.packed)
            libbpf.map_update_packed(self._fd[map_name], key, b"\1")
            record.keys.setdefault(map_name, []).append(key)

    # -- IPv4 prefixes written ahead ------------------------------------------
    def prestage(self, policy_id: int, values: Sequence[int], prefixlens: Sequence[int]) -> None:
        """Start writing the IPv4 prefix entries that policy_id will have if its
        table is these networks (integers) in this order, each its own
        prefix with one port rule (what large policies compile to), while
        the caller goes on reading and compiling the policy. install_policy()
        takes them if the compiled table is exactly that, and otherwise
        removes them; so does drop_prestaged(), which whoever prestages
        calls when done. Nothing of it is in force before a slot points at
        policy_id. Only large lists of one prefix length; anything that
        cannot be prestaged (no room) is left to install_policy()."""
        self.drop_prestaged()
        count = len(values)
        if count < SPLIT_WRITES_FROM or prefixlens.count(prefixlens[0]) != count \
                or policy_id in self._installed:
            return
        try:
            first = self._slots.take(count)
        except MapCapacityError:
            return
        prefixlen = prefixlens[0]
        addresses = struct.pack(f">{count}I", *values)
        # the entries install_policy() would write for this table (one map:
        # every prefix has the same length)
        [(map_name, keys, spans, _count)] = self._prefix_writes(
            policy_id, PrefixTable(4, array("I", [prefixlen]) * count, addresses),
            self._spans(first, array("I", [1]) * count, count))
        failed: list[BaseException] = []

        def write() -> None:
            try:
                self._write_many(map_name, keys, spans, count)
            except BaseException as exc:  # raised by whoever takes or drops them
                failed.append(exc)
        writer = threading.Thread(target=write, name="egress-guard-prestage")
        self._prestaged = _Prestaged(policy_id, map_name, first, count, prefixlen, addresses,
                                     keys, writer, failed)
        writer.start()

    def drop_prestaged(self) -> None:
        """Remove prestaged entries no install took (see prestage)."""
        staged, self._prestaged = self._prestaged, None
        if staged is None:
            return
        staged.writer.join()
        self._delete_many(staged.map_name, staged.keys)
        self._slots.give(staged.first, staged.count)

    def _take_prestaged(self, policy_id: int, table: PrefixTable,
                        record: _Installed) -> list[tuple] | None:
        """The remaining writes of table (its port rules, unless they could
        be copied in here) if the prestaged entries are exactly its prefix
        entries; else drop them, None."""
        staged = self._prestaged
        if staged is None:
            return None
        if not (staged.policy_id == policy_id and len(table) == staged.count
                and len(table.rules) == staged.count * abi.PORT_RULE.size
                and table.addresses == staged.addresses
                and table.prefixlens.count(staged.prefixlen) == staged.count):
            self.drop_prestaged()
            return None
        self._prestaged = None
        record.spans.append((staged.first, staged.count))
        record.keys[staged.map_name] = [staged.keys]
        record.prestaged = staged
        return self._port_rule_writes(staged.first, table.rules, staged.count)

    @staticmethod
    def _prestaged_written(record: _Installed) -> None:
        """Wait for the prestaged entries a generation took; their error is its."""
        staged, record.prestaged = record.prestaged, None
        staged.writer.join()
        if staged.failed:
            raise staged.failed[0]

    def _write_prefixes(self, policy_id: int, table: PrefixTable,
                        record: _Installed) -> list[tuple]:
        """One family's writes: its port rules as one run of eg_port_rules,
        and its prefix entries pointing into that run; packed a column at a
        time."""
        if not table:
            return []
        total = len(table.rules) // abi.PORT_RULE.size
        first = self._slots.take(total)
        record.spans.append((first, total))
        writes = self._prefix_writes(policy_id, table, self._spans(first, table.counts, total))
        for map_name, keys, _spans, _count in writes:
            record.keys[map_name] = [keys]
        return self._port_rule_writes(first, table.rules, total) + writes

    @classmethod
    def _prefix_writes(cls, policy_id: int, table: PrefixTable, spans: bytes) -> list[tuple]:
        """(map, keys, spans, count) of a family's prefixes: IPv4 hosts go to
        eg_host4, every other prefix to its family's LPM trie."""
        count = len(table)
        if table.version == 6:
            keys = cls._lpm_keys(policy_id, 6, table.addresses, table.prefixlens)
            return [("eg_cidr6", keys, spans, count)]
        hosts = table.prefixlens.count(32)
        if hosts == count:
            return [("eg_host4", cls._host_keys(policy_id, table.addresses), spans, count)]
        if hosts == 0:
            keys = cls._lpm_keys(policy_id, 4, table.addresses, table.prefixlens)
            return [("eg_cidr4", keys, spans, count)]
        is_host = list(map(eq, table.prefixlens, repeat(32)))
        is_net = list(map(not_, is_host))
        addresses, span_words = array("I", table.addresses), array("Q", spans)
        net_prefixlens = array("I", compress(table.prefixlens, is_net))
        return [
            ("eg_host4", cls._host_keys(policy_id, array("I", compress(addresses, is_host))),
             array("Q", compress(span_words, is_host)).tobytes(), hosts),
            ("eg_cidr4", cls._lpm_keys(policy_id, 4, array("I", compress(addresses, is_net)),
                                       net_prefixlens),
             array("Q", compress(span_words, is_net)).tobytes(), count - hosts)]

    def _port_rule_writes(self, first: int, rules: bytes, count: int) -> list[tuple]:
        """Port rules for slots first .. first + count - 1, none of which a
        prefix in force points at: copied into the mapped array here and now
        (nothing left to write), or one batched write for _write_all. Either
        way they are in before the LPM entries that point at them are written,
        and those before the slot update that puts them in force."""
        if self._port_rules is not None:
            at = first * abi.PORT_RULE.size
            self._port_rules[at:at + len(rules)] = rules
            return []
        return [("eg_port_rules", _slot_run(first, count).tobytes(), rules, count)]

    @staticmethod
    def _spans(first: int, counts: array, total: int) -> bytes:
        """Packed struct guard_rule_span of each prefix: its counts[i] port
        rules after those of prefix i - 1, from slot first on."""
        count = len(counts)
        spans = bytearray(abi.RULE_SPAN.size * count)
        words = memoryview(spans).cast("I")                     # first, count
        if total == count:  # one rule per prefix
            words[0::2] = _slot_run(first, count)
        else:
            words[0::2] = array("I", accumulate(counts[:-1], initial=first))
        words[1::2] = counts
        words.release()
        return bytes(spans)

    @staticmethod
    def _lpm_keys(policy_id: int, version: int, addresses: bytes | array,
                  prefixlens: array) -> bytes:
        """Packed LPM keys of one family's prefixes, a column at a time:
        prefix i is the i-th address of addresses over prefixlens[i]."""
        count = len(prefixlens)
        layout = abi.LPM4_KEY if version == 4 else abi.LPM6_KEY
        stride = layout.size // 4
        keys = bytearray(layout.size * count)
        words = memoryview(keys).cast("I")         # prefixlen, policy_id, address words
        # prefixlen counts the 32 bits of policy_id that precede the address
        if prefixlens.count(prefixlens[0]) == count:  # one length
            words[0::stride] = array("I", [prefixlens[0] + 32]) * count
        else:
            words[0::stride] = array("I", map(add, prefixlens, repeat(32)))
        words[1::stride] = array("I", [policy_id]) * count
        address_words = array("I", addresses)  # the bytes as they are, a word at a time
        for word in range(stride - 2):
            words[2 + word::stride] = address_words[word::stride - 2]
        words.release()
        return bytes(keys)

    @staticmethod
    def _host_keys(policy_id: int, addresses: bytes | array) -> bytes:
        """Packed struct guard_host4_key of IPv4 hosts (4 bytes each)."""
        address_words = array("I", addresses)   # the bytes as they are
        keys = array("I", [policy_id]) * (2 * len(address_words))
        keys[1::2] = address_words
        return keys.tobytes()

    def _write_all(self, writes: list[tuple]) -> None:
        """(map, keys, values, count) writes, on two threads: a bpf() call
        runs without the GIL, and the kernel's prefix inserts (most of a
        large policy's install) are then split between the caller and a
        helper, the helper also filling eg_port_rules. eg_host4 locks a
        bucket per insert, so its halves run side by side; an LPM trie
        takes one lock for the whole trie, and its halves take turns."""
        if not writes:
            return
        own: list[tuple] = []
        helped: list[tuple] = []
        for write in writes:
            map_name, keys, values, count = write
            if map_name == "eg_port_rules":
                helped.append(write)
            elif count >= SPLIT_WRITES_FROM:
                half = count // 2
                key_cut, value_cut = len(keys) // count * half, len(values) // count * half
                own.append((map_name, keys[:key_cut], values[:value_cut], half))
                helped.append((map_name, keys[key_cut:], values[value_cut:], count - half))
            else:
                own.append(write)
        failed: list[BaseException] = []

        def write_helped() -> None:
            try:
                for write in helped:
                    self._write_many(*write)
            except BaseException as exc:  # raised below, in the caller's thread
                failed.append(exc)
        helper = threading.Thread(target=write_helped, name="egress-guard-rules")
        helper.start()
        try:
            for write in own:
                self._write_many(*write)
        finally:
            helper.join()
        if failed:
            raise failed[0]

    def _write_many(self, map_name: str, keys: bytes, values: bytes, count: int) -> None:
        """count entries in one batched update, or one by one where the
        kernel has no batch operation for this map."""
        fd = self._fd[map_name]
        if self._batches.get(map_name, True):
            try:
                libbpf.map_update_batch(fd, keys, values, count)
                self._batches[map_name] = True
                return
            except libbpf.BatchError as exc:
                if not exc.unsupported:
                    raise
                self._batches[map_name] = False
        key_size, value_size = len(keys) // count, len(values) // count
        for at in range(count):
            libbpf.map_update_packed(fd, keys[at * key_size:(at + 1) * key_size],
                                     values[at * value_size:(at + 1) * value_size])

    def remove_policy(self, policy_id: int) -> None:
        record = self._installed.pop(policy_id, None)
        if record is None:
            return
        if record.prestaged is not None:   # an install that failed before they were all in
            record.prestaged.writer.join()
        libbpf.map_delete(self._fd["eg_policies"], ctypes.c_uint32(policy_id))
        if self._dns_ports.pop(policy_id, None) is not None:
            self._write_config()
        for map_name, keys in record.keys.items():
            self._delete_many(map_name, b"".join(keys))
        for first, count in record.spans:
            self._slots.give(first, count)

    def _delete_many(self, map_name: str, keys: bytes) -> None:
        """Delete packed keys: one batched delete, or one by one where the
        kernel cannot batch, or to step over keys already gone."""
        key_size = _KEY_SIZES[map_name]
        count = len(keys) // key_size
        if not count:
            return
        fd = self._fd[map_name]
        if self._batches.get(map_name, True):
            try:
                libbpf.map_delete_batch(fd, keys, count)
                return
            except libbpf.BatchError as exc:
                if exc.unsupported:
                    self._batches[map_name] = False
                keys = keys[exc.done * key_size:]  # the rest, one by one
        for at in range(0, len(keys), key_size):
            libbpf.map_delete_packed(fd, keys[at:at + key_size])

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
        for name, key_type in (("eg_cidr4", abi.Lpm4Key), ("eg_cidr6", abi.Lpm6Key),
                               ("eg_host4", abi.Host4Key)):
            for key in libbpf.map_keys(self._fd[name], key_type):
                span = abi.RuleSpan()
                if libbpf.map_lookup(self._fd[name], key, span):
                    entry = record(key.policy_id)
                    entry.keys.setdefault(name, []).append(bytes(key))
                    entry.spans.append((span.first, span.count))
        for key in libbpf.map_keys(self._fd["eg_exec_rules"], abi.ExecKey):
            record(key.policy_id).keys.setdefault("eg_exec_rules", []).append(bytes(key))
        self._adopt_names(record)
        for entry in records.values():
            for first, count in entry.spans:
                self._slots.reserve(first, count)
        self._installed.update(records)
        guarded = [key.value for key in libbpf.map_keys(self._fd["eg_guarded"], ctypes.c_uint64)]
        libbpf.map_lookup(self._fd["eg_config"], ctypes.c_uint32(0), self._config)
        self._adopted_levels = self._config.guarded_levels
        return max(records, default=0), guarded

    def _adopt_names(self, record) -> None:
        """The name entries of adopted generations (see adopt)."""
        if "eg_dns_names" not in self._fd:
            return
        for map_name, key_type in (("eg_dns_names", abi.NameKey),
                                   ("eg_dns_rules", abi.NameRulesKey),
                                   ("eg_dns_res4", abi.Lpm4Key), ("eg_dns_res6", abi.Lpm6Key)):
            for key in libbpf.map_keys(self._fd[map_name], key_type):
                entry = record(key.policy_id)
                entry.keys.setdefault(map_name, []).append(bytes(key))
                if map_name == "eg_dns_rules":
                    span = abi.RuleSpan()
                    if libbpf.map_lookup(self._fd[map_name], key, span) and span.count:
                        entry.spans.append((span.first, span.count))

    # -- guarded cgroups ---------------------------------------------------
    def guard(self, cgroup_id: int, level: int, slot: int, flags: int = 0) -> None:
        """Mark a cgroup guarded by a policy slot; flags PARENT for a
        container parent (its sentinel hooks judge what is below it)."""
        self._learned_table(cgroup_id)
        libbpf.map_update(self._fd["eg_guarded"], ctypes.c_uint64(cgroup_id),
                          abi.CgroupInfo(policy_slot=slot, flags=flags))
        self._levels[cgroup_id] = level
        self._write_config()

    def exempt(self, cgroup_id: int, level: int) -> None:
        """Mark a cgroup below a container parent as not guarded (the
        agent's own, a container no policy selects): the kernel's lookups
        stop there and find nothing (lib/guarded.h)."""
        self._drop_learned(cgroup_id)
        libbpf.map_update(self._fd["eg_guarded"], ctypes.c_uint64(cgroup_id),
                          abi.CgroupInfo(policy_slot=0, flags=abi.CgroupFlags.EXEMPT))
        self._levels[cgroup_id] = level
        self._write_config()

    def settle_levels(self) -> None:
        """After adoption: the levels are this agent's own entries' only."""
        self._adopted_levels = 0
        self._write_config()

    def unguard_adopted(self, cgroup_id: int) -> None:
        """Unmark a cgroup a previous agent guarded and this one does not."""
        libbpf.map_delete(self._fd["eg_guarded"], ctypes.c_uint64(cgroup_id))
        self._drop_learned(cgroup_id)

    def unguard(self, cgroup_id: int) -> None:
        libbpf.map_delete(self._fd["eg_guarded"], ctypes.c_uint64(cgroup_id))
        self._drop_learned(cgroup_id)
        self._levels.pop(cgroup_id, None)
        self._write_config()

    # -- learned addresses (allow by name) ---------------------------------
    def _learned_table(self, cgroup_id: int) -> None:
        """Give a guarded cgroup its own learned-address table (bpf/lib/names.h),
        unless it has one (an adopted cgroup keeps what it learned)."""
        outer = self._fd.get("eg_dns_learned")
        if outer is None or libbpf.map_lookup(outer, ctypes.c_uint64(cgroup_id), ctypes.c_uint32()):
            return
        fd = libbpf.map_create(libbpf.BPF_MAP_TYPE_HASH, "eg_dns_learned_in",
                               ctypes.sizeof(abi.LearnedKey), ctypes.sizeof(abi.Learned),
                               abi.DNS_LEARNED_MAX, libbpf.BPF_F_NO_PREALLOC)
        try:
            libbpf.map_update(outer, ctypes.c_uint64(cgroup_id), ctypes.c_uint32(fd))
        finally:
            os.close(fd)

    def _drop_learned(self, cgroup_id: int) -> None:
        outer = self._fd.get("eg_dns_learned")
        if outer is not None:
            libbpf.map_delete(outer, ctypes.c_uint64(cgroup_id))

    def sweep_learned(self, now_ns: int) -> dict[int, int]:
        """Delete learned addresses whose names have all expired (the kernel
        only stops believing them); cgroup id -> addresses still learned."""
        outer = self._fd.get("eg_dns_learned")
        if outer is None:
            return {}
        kept = {}
        for cgroup in libbpf.map_keys(outer, ctypes.c_uint64):
            map_id = ctypes.c_uint32()
            if not libbpf.map_lookup(outer, cgroup, map_id):
                continue
            try:
                fd = libbpf.map_fd_by_id(map_id.value)
            except libbpf.LibbpfError:
                continue
            try:
                count = 0
                for key in libbpf.map_keys(fd, abi.LearnedKey):
                    value = abi.Learned()
                    if not libbpf.map_lookup(fd, key, value):
                        continue
                    if any(n.name_id and n.expires_ns > now_ns for n in value.names):
                        count += 1
                    else:
                        libbpf.map_delete(fd, key)
                kept[cgroup.value] = count
            finally:
                os.close(fd)
        return kept

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
        levels = self._adopted_levels
        for level in self._levels.values():
            if level < abi.CGROUP_LEVELS:
                levels |= 1 << level
        self._config.guarded_levels = levels
        # every policy's resolver ports, the packets' first filter (dns.bpf.c);
        # more than fit: 0xffff, every port
        ports = list(dict.fromkeys(p for ports in self._dns_ports.values() for p in ports))
        if len(ports) > abi.DNS_PORTS:
            ports = [0xFFFF]
        for index in range(abi.DNS_PORTS):
            self._config.dns_ports[index] = ports[index] if index < len(ports) else 0
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

    # -- folded connects (bpf/lib/fold.h) ----------------------------------------
    def set_fold_window(self, window_ms: int) -> None:
        """Logged connects a process repeats to one destination within
        window_ms are counted in eg_connect_fold, not sent; 0: each is sent."""
        self._config.fold_window_ms = window_ms
        self._write_config()

    def take_fold(self, key: bytes) -> tuple[int, int] | None:
        """Take a fold window out of eg_connect_fold (lookup and delete in one
        call): (start_ns, connects counted), or None when it is gone."""
        fd = self._fd.get("eg_connect_fold")
        if fd is None:
            return None
        value = libbpf.map_take_packed(fd, key, abi.FOLD.size)
        return None if value is None else abi.FOLD.unpack(value)

    def flow_verdict(self, cookie: int, action: abi.Action) -> None:
        """Answer a sampled flow: ALLOW lets it go (the kernel stops
        watching it), BLOCK drops everything it sends from now on."""
        libbpf.map_update(self._fd["eg_flow_verdicts"], ctypes.c_uint64(cookie),
                          abi.FlowVerdict(action=action))

    def flow_verdicts(self, cookies: list[int], action: abi.Action) -> None:
        """The same answer for many sampled flows in one batched update."""
        if not cookies:
            return
        value = bytes(abi.FlowVerdict(action=action))
        self._write_many("eg_flow_verdicts", array("Q", cookies).tobytes(),
                         value * len(cookies), len(cookies))

    def block_process(self, tgid: int, start_ns: int) -> None:
        """Refuse every connect and sendmsg of one process (tgid + start time)."""
        if not self._config.flags & abi.ConfigFlags.PROC_VERDICTS:
            # before the entry: no connect may skip the lookup once it exists
            self._config.flags |= abi.ConfigFlags.PROC_VERDICTS
            self._write_config()
        libbpf.map_update(self._fd["eg_proc_verdicts"], ctypes.c_uint32(tgid),
                          abi.ProcVerdict(start_ns=start_ns, action=abi.Action.BLOCK))

    def release_held(self, tgid: int) -> bool:
        """A program stopped at exec has been judged. False when it was not
        held (any more): whoever deletes the entry settles the program."""
        return libbpf.map_delete(self._fd["eg_held_execs"], ctypes.c_uint32(tgid))

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
    def workload_losses(self) -> dict[int, tuple[int, int]]:
        """Leaf cgroup id -> (records shed over its fair share, records that
        found the ring full), from eg_workload_loss (an LRU: the least recent
        workloads' counts may be gone)."""
        fd = self._fd.get("eg_workload_loss")
        if fd is None:
            return {}
        out = {}
        value = abi.WorkloadLoss()
        for cgroup in libbpf.map_keys(fd, ctypes.c_uint64):
            if libbpf.map_lookup(fd, cgroup, value) and (value.shed or value.lost):
                out[cgroup.value] = (value.shed, value.lost)
        return out

    def counters(self) -> dict[str, int]:
        """Per-CPU counters summed over CPUs, by lower-case counter name."""
        values = (ctypes.c_uint64 * libbpf.possible_cpus())()
        totals = {}
        for counter in abi.Counter:
            libbpf.map_lookup(self._fd["eg_counters"], ctypes.c_uint32(counter), values)
            totals[counter.name.lower()] = sum(values)
        return totals
