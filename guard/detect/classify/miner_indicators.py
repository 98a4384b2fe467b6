# SPDX-License-Identifier: Apache-2.0
"""Mining indicators: the pool and donation domains, miner binary names and
pool ports of guard/data/miners.yaml, and the names they flag.

- load_indicators / parse_indicators: the lists, kept with their sources
  and date so they can be updated without a code change; the exec
  (miner.py, miner_binary.py) and stratum (stratum.py) classifiers read the
  same lists.
- classify_dns: is this DNS name a pool or an XMRig donation host?
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from guard.detect.classify import Finding
from guard.detect.classify.launchers import basename


@dataclass(frozen=True)
class DomainMatch:
    """A name found in one of the domain lists."""
    list: str       # "pool_domains" | "donation_domains"
    entry: str      # the list entry that matched (the name or a parent domain)


@dataclass(frozen=True)
class Indicators:
    """The lists of miners.yaml, ready for lookups."""
    pool_domains: frozenset[str]
    donation_domains: frozenset[str]
    miner_binaries: frozenset[str]
    pool_ports: frozenset[int]
    sources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    updated: Mapping[str, str] = field(default_factory=dict)
    #: miner -> groups of strings its executable carries (binary_strings.families)
    binary_families: Mapping[str, tuple[tuple[bytes, ...], ...]] = field(default_factory=dict)
    #: strings of mining code any miner may carry (binary_strings.traits)
    binary_traits: tuple[bytes, ...] = ()

    def match_domain(self, name: Any) -> DomainMatch | None:
        """The list entry equal to name or to one of its parent domains.

        Walks the name's suffixes (one dict lookup per label), so the cost
        does not grow with the size of the lists. Donation names are checked
        first: they are the more specific finding."""
        normal = normalise_domain(name)
        if normal is None:
            return None
        labels = normal.split(".")
        suffixes = [".".join(labels[i:]) for i in range(len(labels) - 1)]
        for list_name, domains in (("donation_domains", self.donation_domains),
                                   ("pool_domains", self.pool_domains)):
            for suffix in suffixes:
                if suffix in domains:
                    return DomainMatch(list_name, suffix)
        return None

    def miner_binary(self, path: Any) -> str | None:
        """The list entry a program name stands for: `xmrig`, `xmrig-6.21.0`
        and `cpuminer-opt` count, `xmrigger` does not."""
        if not isinstance(path, str) or not path:
            return None
        name = basename(path).lower()
        if name.endswith(".exe"):
            name = name[:-4]
        if name in self.miner_binaries:
            return name
        for entry in self.miner_binaries:
            if name.startswith(entry) and name[len(entry)] in "-_.":
                return entry
        return None


_DOMAIN_CHARS = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+")


def normalise_domain(name: Any) -> str | None:
    """Lower-case name without a trailing dot, or None if it is not a DNS name."""
    if not isinstance(name, str):
        return None
    name = name.strip().lower().rstrip(".")
    if not name or len(name) > 253 or not name.isascii() or _DOMAIN_CHARS.fullmatch(name) is None:
        return None
    return name


def _string_list(section: Mapping[str, Any], key: str, where: str) -> list[str]:
    items = section.get(key)
    if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
        raise ValueError(f"{where}.{key}: expected a list of non-empty strings")
    return items


def _domains(section: Mapping[str, Any], where: str) -> frozenset[str]:
    domains = set()
    for item in _string_list(section, "domains", where):
        normal = normalise_domain(item)
        if normal is None:
            raise ValueError(f"{where}.domains: {item!r} is not a domain name")
        domains.add(normal)
    return frozenset(domains)


def _ports(section: Mapping[str, Any], where: str) -> frozenset[int]:
    ports = section.get("ports")
    if not isinstance(ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports):
        raise ValueError(f"{where}.ports: expected a list of port numbers")
    return frozenset(ports)


_SECTIONS = ("pool_domains", "donation_domains", "miner_binaries", "pool_ports")


def _binary_strings(section: Any, where: str) -> tuple[dict[str, tuple[tuple[bytes, ...], ...]],
                                                        tuple[bytes, ...]]:
    """binary_strings: optional (files older than it stay valid)."""
    if section is None:
        return {}, ()
    if not isinstance(section, dict) or not isinstance(section.get("families"), dict):
        raise ValueError(f"{where}: expected families (a mapping) and traits")
    _string_list(section, "sources", where)
    families = {}
    for name, groups in section["families"].items():
        if not isinstance(groups, list) or not groups or not all(
                isinstance(g, list) and g and all(isinstance(x, str) and len(x) >= 4 for x in g)
                for g in groups):
            raise ValueError(f"{where}.families.{name}: expected lists of strings (4+ chars)")
        families[str(name).lower()] = tuple(tuple(x.encode("latin-1") for x in g)
                                            for g in groups)
    traits = tuple(x.encode("latin-1") for x in _string_list(section, "traits", where))
    return families, traits


def parse_indicators(text: str, origin: str = "miners.yaml") -> Indicators:
    """Indicators from the YAML text of a miners file; ValueError names what is wrong."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{origin}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{origin}: expected a mapping of lists")
    sections: dict[str, Mapping[str, Any]] = {}
    for name in _SECTIONS:
        section = document.get(name)
        if not isinstance(section, dict):
            raise ValueError(f"{origin}: {name}: missing or not a mapping")
        _string_list(section, "sources", f"{origin}: {name}")
        if section.get("updated") is None:
            raise ValueError(f"{origin}: {name}: missing 'updated' (the date the list was checked)")
        sections[name] = section
    try:
        families, traits = _binary_strings(document.get("binary_strings"),
                                           f"{origin}: binary_strings")
    except UnicodeEncodeError:
        raise ValueError(f"{origin}: binary_strings: strings must be latin-1") from None
    return Indicators(
        pool_domains=_domains(sections["pool_domains"], f"{origin}: pool_domains"),
        donation_domains=_domains(sections["donation_domains"], f"{origin}: donation_domains"),
        miner_binaries=frozenset(
            n.lower() for n in _string_list(sections["miner_binaries"], "names",
                                            f"{origin}: miner_binaries")),
        pool_ports=_ports(sections["pool_ports"], f"{origin}: pool_ports"),
        sources={name: tuple(sections[name]["sources"]) for name in _SECTIONS},
        updated={name: str(sections[name].get("updated", "")) for name in _SECTIONS},
        binary_families=families,
        binary_traits=traits,
    )


@functools.lru_cache(maxsize=1)
def _packaged_indicators() -> Indicators:
    text = (resources.files("guard.data") / "miners.yaml").read_text(encoding="utf-8")
    return parse_indicators(text, "guard/data/miners.yaml")


def load_indicators(path: str | Path | None = None) -> Indicators:
    """The indicator lists: the packaged guard/data/miners.yaml (read once and
    cached), or the file at path, e.g. an operator's newer copy."""
    if path is None:
        return _packaged_indicators()
    return parse_indicators(Path(path).read_text(encoding="utf-8"), str(path))


# --------------------------------------------------------------------------
# DNS names


def classify_dns(name: str, *, indicators: Indicators | None = None) -> list[Finding]:
    """A miner_dns finding when name is, or lies below, a pool or donation domain."""
    match = (indicators or load_indicators()).match_domain(name)
    if match is None:
        return []
    dialect = "donation" if match.list == "donation_domains" else "pool"
    return [Finding(type="miner_dns", confidence="high", dialect=dialect,
                    evidence={"name": normalise_domain(name), "matched": match.entry,
                              "list": match.list})]
