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

    miner.py            exec: pool URLs, miner flags, config files
      miner_config.py     the configs a miner reads by default (XMRig's search list)
      miner_binary.py     a miner by the strings of its executable, whatever its name
    miner_indicators.py the lists of guard/data/miners.yaml; DNS names
    stratum.py          first bytes: stratum dialects
      proxies.py          SOCKS4/5 and HTTP CONNECT in front of them
      framing.py          filler, gathered segments and WebSocket frames around a message
    ssh.py              ssh exec: config applied, findings; the SSH banner
      ssh_argv.py         ssh, autossh, dbclient, plink command lines
      ssh_forward.py      forward specs and destinations
      ssh_config.py       the ssh_config files ssh would read
    tunnels.py          tunnelling agents, by exec and by first bytes
    tunnel_behaviour.py reverse tunnels by behaviour: the far end sends the requests
    reverse_shell.py    a shell handed to a socket, in argv or `sh -c`
    launchers.py        which program an argv finally runs (env, sudo, npx...)
    shellwords.py       a small shell lexer: commands, pipes, redirections
    tls.py, dns.py      ClientHello and DNS message readers
    payload_host.py     the host a first payload names (SNI, HTTP Host): allow by name
    jsonc.py            JSON with comments, inside budgets

This module holds what they all share: Finding, the confidence ranks, and
small readers of evidence text, ports and `host:port`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

CONFIDENCES = ("low", "medium", "high")
#: A confidence's place in CONFIDENCES, for comparing two of them.
RANK = {confidence: rank for rank, confidence in enumerate(CONFIDENCES)}
#: Dialect of a finding for what a classifier could not read in full (a
#: config cut by a byte, file, depth or work budget): the detection the
#: unread part could have hidden, at high confidence, so enforcing policies
#: fail closed.
UNREAD = "unread-config"
#: Evidence key of a finding that refusing the process's connects (a policy's
#: `block`) cannot stop: a list of sentences saying why (a forward over a
#: control socket, a request that already arrived). detector.decide kills
#: such a process instead, so `block` still means the action does not happen.
BLOCK_BYPASS = "block_bypass"


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


def dedupe_findings(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (type, dialect, pattern): the most confident, first seen on ties."""
    best: dict[tuple[str, str | None, Any], Finding] = {}
    order: list[tuple[str, str | None, Any]] = []
    for finding in findings:
        key = (finding.type, finding.dialect, finding.evidence.get("pattern"))
        kept = best.get(key)
        if kept is None:
            order.append(key)
            best[key] = finding
        elif RANK[finding.confidence] > RANK[kept.confidence]:
            best[key] = finding
    return [best[key] for key in order]


def short(text: Any, limit: int) -> str:
    """text for evidence: at most limit characters, "..." where it was cut."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def port_number(text: str | None) -> int | None:
    """A decimal port 0-65535 as written, or None (names are not looked up)."""
    if text and text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535:
        return int(text)
    return None


def split_host_port(text: str) -> tuple[str | None, str | None]:
    """(host, port text) of `host:port`, `[v6]:port` or a bare host; None for
    a part that is missing or empty. An unbracketed IPv6 address is a host."""
    if text.startswith("["):
        end = text.find("]")
        if end > 0:
            rest = text[end + 1:]
            return text[1:end] or None, (rest[1:] or None) if rest.startswith(":") else None
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:
        return text or None, None
    return host or None, port or None


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
