# SPDX-License-Identifier: Apache-2.0
"""Miners by their executable: the strings a rename does not change.

A renamed XMRig is still XMRig inside: its donation hosts, its option names,
its algorithm table are in its read-only data whatever the file is called.
classify_binary reads them (through the caller's Executable: a bounded
window of /proc/PID/exe, guard/detect/files.py) and answers once per file:
the verdict is cached by (device, inode, mtime, size), so an exec storm of
one program costs one read.

The strings come from guard/data/miners.yaml (binary_strings): a family's
groups each count once, three of them name the miner (high), two suggest it
(medium); traits (RandomX's salt, stratum URLs, a packer's mark) are never a
finding alone, they make miner.py read the config files a miner would.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from guard.detect.classify.miner_indicators import Indicators

#: Verdicts kept (one per distinct executable file).
CACHE_SIZE = 4096
#: Groups of a family that name the miner, and that suggest it.
HIGH_GROUPS = 3
MEDIUM_GROUPS = 2


class ExecutableImage(Protocol):
    """What the caller gives: guard.detect.files.Executable."""
    identity: tuple[int, int, int, int]

    def strings(self) -> bytes | None: ...


@dataclass(frozen=True)
class BinaryVerdict:
    """What an executable's strings say."""
    family: str | None              # the miner they name, when they name one
    confidence: str | None          # "high" | "medium" | None (traits at most)
    groups: tuple[str, ...]         # the family's groups found, by a string of each
    traits: tuple[str, ...]         # mining code found

    def evidence(self) -> list[str]:
        return [f"binary:{g}" for g in self.groups] + [f"binary trait:{t}" for t in self.traits]


_NOTHING = BinaryVerdict(None, None, (), ())
_cache: OrderedDict[tuple, BinaryVerdict] = OrderedDict()


def _text(raw: bytes) -> str:
    return raw.decode("latin-1").encode("unicode_escape").decode("ascii")


def judge_strings(data: bytes, indicators: Indicators) -> BinaryVerdict:
    """The verdict on an executable's bytes (strings() of an Executable)."""
    best: BinaryVerdict = _NOTHING
    for family, groups in sorted(indicators.binary_families.items()):
        found = []
        for group in groups:
            hit = next((s for s in group if s in data), None)
            if hit is not None:
                found.append(_text(hit))
        if len(found) > len(best.groups):
            confidence = ("high" if len(found) >= HIGH_GROUPS else
                          "medium" if len(found) >= MEDIUM_GROUPS else None)
            best = BinaryVerdict(family if confidence else None, confidence, tuple(found), ())
    if best.confidence is None:
        best = _NOTHING
    traits = tuple(_text(t) for t in indicators.binary_traits if t in data)
    return BinaryVerdict(best.family, best.confidence, best.groups, traits)


def classify_binary(executable: ExecutableImage | None,
                    indicators: Indicators) -> BinaryVerdict:
    """The verdict on a process's executable, from the cache when this file
    (same device, inode, mtime, size) was judged before. An executable that
    cannot be read says nothing (and is not cached: it may be readable next
    time)."""
    if executable is None:
        return _NOTHING
    try:
        key = (tuple(executable.identity), tuple(sorted(indicators.binary_families.items())),
               indicators.binary_traits)
    except TypeError:
        return _NOTHING
    verdict = _cache.get(key)
    if verdict is not None:
        _cache.move_to_end(key)
        return verdict
    data = executable.strings()
    if not isinstance(data, (bytes, bytearray)):
        return _NOTHING
    verdict = judge_strings(bytes(data), indicators)
    _cache[key] = verdict
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return verdict


def forget_binaries() -> None:
    """Empty the verdict cache (tests, benchmarks)."""
    _cache.clear()
