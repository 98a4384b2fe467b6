# SPDX-License-Identifier: Apache-2.0
"""Policy generations: install beside the one in force, switch, retire, adopt.

Every policy of a set lives in the kernel under a policy id, generation << 8 |
slot, with a fail-closed twin at the top bit. A reload installs the next
generation beside the one in force, the agent points each slot at it in one
update (the switch), and the old generation's entries go RETIRE_GRACE_S
later, so a hook that read the old generation an instant before the switch
still finishes with its rules. A retired generation keeps its names (not its
tables) for late events; with --pin the names are written to a file so the
next agent can name what it adopts.
"""
from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import orjson

from guard.kernel import libbpf
from guard.detect.vocabulary import kernel_plan
from guard.kernel.maps import MapCapacityError
from guard.policy.compile import CompiledPolicy, compile_fail_closed, compile_policy
from guard.policy.model import Policy
from guard.policy.names import resolver_targets
from guard.workloads.resolvconf import nameservers

SLOT_BITS = 8
FAIL_CLOSED_BIT = 1 << 31
# A retired generation's map entries stay this long after the switch (BPF
# programs run inside an RCU read section; this is far longer than any of them).
RETIRE_GRACE_S = 1.0
GENERATION_NAMES_KEPT = 16  # late events of retired generations still get rule names
# What the kernel says when an LPM trie or hash map has no room left
MAP_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.E2BIG, errno.ENOMEM})

Compiled = list[tuple[CompiledPolicy, CompiledPolicy | None]]


def generation_of(policy_id: int) -> int:
    return (policy_id & ~FAIL_CLOSED_BIT) >> SLOT_BITS


@dataclass(frozen=True)
class KnownGeneration:
    """Names of a generation another agent installed (read back on adoption)."""
    name: str
    rule_names: tuple[str, ...]

    def rule_name(self, rule_id: int) -> str | None:
        return self.rule_names[rule_id] if 0 < rule_id < len(self.rule_names) else None


class Generations:
    def __init__(self, names_file: Path | None):
        self.maps = None                          # set at start (Maps)
        self._names_file = names_file
        self.compiled: dict[int, CompiledPolicy | KnownGeneration] = {}
        self.last = 0                              # the highest generation installed
        self.active = 0                            # the generation in force
        self.active_ids: list[int] = []            # its policy ids, fail-closed twins included
        self.switched_ns = 0                       # CLOCK_MONOTONIC of the last switch
        self.retiring: list[tuple[float, int]] = []    # (remove after, policy id)
        self.retired_models: list[tuple[Policy, ...]] = []  # freed on the next tick

    def get(self, policy_id: int) -> CompiledPolicy | KnownGeneration | None:
        return self.compiled.get(policy_id)

    def next_slot_base(self) -> int:
        """The first policy id the next generation will take (prestaging)."""
        return (self.last + 1) << SLOT_BITS

    def adopt(self) -> list[int]:
        """Take over what a previous agent pinned: its generations keep
        judging until this agent's first switch, then retire. Returns the
        cgroups it guarded."""
        highest, guarded = self.maps.adopt()
        self.compiled.update(read_names(self._names_file))
        self.last = generation_of(highest)
        grace = time.monotonic() + RETIRE_GRACE_S
        self.retiring.extend((grace, pid) for pid in self.maps.installed)
        return guarded

    def install(self, compiled: Compiled) -> tuple[int, list[int], list[tuple[int, int]]]:
        """Install every policy of the next generation and its fail-closed
        twin: (generation, policy ids, (policy id, fail-closed id) per slot).
        When the maps are full, which reloads of large policies faster than
        RETIRE_GRACE_S can make them, wait for the oldest retiring generation
        to go and try again; nothing of the generation stays installed if it
        cannot be."""
        self.last += 1
        generation = self.last
        while True:
            ids, slots = [], []
            try:
                for slot, (main, fail_closed) in enumerate(compiled):
                    policy_id = generation << SLOT_BITS | slot
                    self.maps.install_policy(policy_id, main)
                    ids.append(policy_id)
                    fail_closed_id = 0
                    if fail_closed is not None:
                        fail_closed_id = policy_id | FAIL_CLOSED_BIT
                        self.maps.install_policy(fail_closed_id, fail_closed)
                        ids.append(fail_closed_id)
                    slots.append((policy_id, fail_closed_id))
                return generation, ids, slots
            except BaseException as exc:
                for policy_id in ids:
                    self.maps.remove_policy(policy_id)
                full = isinstance(exc, MapCapacityError) or (
                    isinstance(exc, libbpf.LibbpfError) and exc.errno in MAP_FULL_ERRNOS)
                if not (full and self.retiring):
                    raise
            oldest = min(when for when, _policy_id in self.retiring)
            time.sleep(max(0.0, oldest - time.monotonic()))
            self.retire_due(oldest)

    def switched(self, generation: int, compiled: Compiled, ids: list[int],
                 slots: list[tuple[int, int]]) -> None:
        """The slots point at generation now: record it, and retire the one before."""
        self.switched_ns = time.monotonic_ns()
        for (main, fail_closed), (policy_id, fail_closed_id) in zip(compiled, slots):
            self.compiled[policy_id] = main
            if fail_closed is not None:
                self.compiled[fail_closed_id] = fail_closed
        previous_ids, self.active_ids = self.active_ids, ids
        self.active = generation
        grace = time.monotonic() + RETIRE_GRACE_S
        self.retiring.extend((grace, pid) for pid in previous_ids)

    def retire_due(self, now: float) -> None:
        self.retired_models.clear()
        due = [pid for when, pid in self.retiring if when <= now]
        if not due:
            return
        self.retiring = [(when, pid) for when, pid in self.retiring if when > now]
        for policy_id in due:
            self.maps.remove_policy(policy_id)
        kept = sorted({generation_of(pid) for pid in self.compiled})[-GENERATION_NAMES_KEPT:]
        for policy_id, compiled in list(self.compiled.items()):
            if generation_of(policy_id) not in kept and policy_id not in self.active_ids:
                del self.compiled[policy_id]
            elif policy_id not in self.active_ids and isinstance(compiled, CompiledPolicy):
                # a retired generation keeps its names for late events, not its tables
                self.compiled[policy_id] = KnownGeneration(compiled.name, compiled.rule_names)

    def write_names(self) -> None:
        if self._names_file is None:
            return
        names = {str(pid): {"name": c.name, "rules": list(c.rule_names)}
                 for pid, c in self.compiled.items()}
        self._names_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staged = self._names_file.with_suffix(".tmp")
        staged.write_bytes(orjson.dumps(names))
        os.replace(staged, self._names_file)


def read_names(path: Path | None) -> dict[int, KnownGeneration]:
    try:
        raw = orjson.loads(path.read_bytes()) if path else {}
        return {int(pid): KnownGeneration(str(entry["name"]), tuple(map(str, entry["rules"])))
                for pid, entry in raw.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # names are a nicety: a missing or damaged file never stops adoption


def compile_all(policies: Sequence[Policy]) -> Compiled:
    """Every policy and its fail-closed twin, compiled before anything changes.
    Host targets of a policy without spec.dns.resolvers trust the host's
    nameservers, read now (a reload picks up a changed resolv.conf)."""
    default = resolver_targets(nameservers()) if any(p.uses_names for p in policies) else ()
    return [(compile_policy(p, kernel_plan, default), compile_fail_closed(p, kernel_plan, default))
            for p in policies]
