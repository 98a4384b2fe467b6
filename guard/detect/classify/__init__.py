# SPDX-License-Identifier: Apache-2.0
"""Classifiers: what a payload, an argv or a DNS name says about intent.

Pure functions from observed data to findings: no BPF, no I/O besides
reading files a caller names (config files inside a container's root).
One module per threat family; each returns a list of Finding, empty when
nothing is recognised, and never raises on hostile input.

Everything a classifier reads is the workload's and may be built to hurt:
work is linear in what is read, nesting is bounded without recursion, and
what a budget keeps a classifier from reading is reported as unread rather
than taken as harmless (a finding with dialect UNREAD).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

CONFIDENCES = ("low", "medium", "high")
#: Dialect of a finding for what a classifier could not read in full (a
#: config cut by a byte, file, depth or work budget): the detection the
#: unread part could have hidden, at high confidence, so enforcing policies
#: fail closed.
UNREAD = "unread-config"


@dataclass(frozen=True)
class Finding:
    """One recognised behaviour. Rendered into events as
    {"type", "dialect", "confidence", "evidence"} (docs/events.md)."""
    type: str                # e.g. "stratum", "miner_exec", "ssh_reverse_tunnel"
    confidence: str          # "low" | "medium" | "high"
    dialect: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)  # JSON-serialisable

    def __post_init__(self):
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"confidence must be one of {CONFIDENCES}")

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "dialect": self.dialect, "confidence": self.confidence,
                "evidence": dict(self.evidence)}


def http_head_fields(head: str, max_headers: int = 63) -> tuple[str, dict[str, str]]:
    """The start line and lower-cased headers (first occurrence wins) of an
    HTTP/1 head, already cut at its blank line and decoded."""
    lines = head.split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:max_headers + 1]:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), value.strip())
    return lines[0], headers


class FileContent(bytes):
    """What a read_file callback may return: the bytes read, and whether the
    file went on past them (truncated). Plain bytes mean the whole file."""
    truncated: bool

    def __new__(cls, data: bytes, truncated: bool = False) -> "FileContent":
        content = super().__new__(cls, data)
        content.truncated = truncated
        return content


def was_cut(content: bytes, limit: int) -> bool:
    """Whether content is not the whole file within limit bytes: the reader
    said it stopped early, or there is more than limit to read."""
    return bool(getattr(content, "truncated", False)) or len(content) > limit
