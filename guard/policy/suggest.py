# SPDX-License-Identifier: Apache-2.0
"""Recorded events -> the smallest reasonable policy that allows what the
workload did (`egress-guard policy suggest`).

What counts as done: `connect` events (hooks connect and sendmsg) whose
action let them through (`allow`, `log`), and any that carry `would` (audit
mode: enforce mode would have acted, the workload went on). Refused
connects, binds, exec, socket and detection events are never turned into
allows. The policy:

- `defaultAction: block`; no exec rules; `sockets.raw: deny`; the detections
  of the embedded default policy (guard/data/default-policy.yaml);
- one `allow` rule per destination, with a target per protocol seen and the
  ports seen (a run of three or more consecutive ports as a range; more than
  MAX_RANGES ranges become one range from the lowest to the highest, and the
  comment says so);
- by `host` where the destination had a name: its `dst.name`, else the name
  a trusted DNS answer of the same workload taught for that address while
  its TTL lasted (replay.NameMemory, the names `policy test` judges by);
  else by `cidr`, the address alone (/32, /128);
- names are widened only for many siblings: GROUP_MIN or more names seen
  directly below one parent (`a.cdn.example`, `b.cdn.example`,
  `c.cdn.example`) become `*.cdn.example`, with the ports of all of them;
  never below a parent of one label, a two-letter country's second level
  (`co.uk`), or a suffix where names belong to different owners
  (SHARED_SUFFIXES: `github.io`, `*.amazonaws.com` buckets, tunnels...);
- `spec.dns.resolvers` when names are used: the resolvers of the trusted
  DNS answers and the queries recorded, on the ports seen (connects to them
  on those ports then need no rule); without DNS events the section is left
  out, and the agent trusts its host's /etc/resolv.conf;
- before every rule a comment: how many events justified it, and when the
  first and the last were seen.

`--selector` terms (selector_terms) keep the events of the workloads they
select, and become the policy's `spec.selector`. The text is checked the way
`policy check` does (parsed, compiled) before it is handed out.
"""
from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import orjson

from guard.kernel.abi import DNS_PORTS, Proto
from guard.policy.compile import compile_policy
from guard.policy.load import default_policy, parse_policy
from guard.policy.model import (DETECTIONS, POLICY_NAME, POLICY_NAME_MAX, LabelRequirement,
                                PolicyError, Selector)
from guard.policy.replay import NameMemory, flow_of, parse_ts, workload_of

__all__ = ["GROUP_MIN", "SHARED_SUFFIXES", "Suggestion", "SuggestError", "Suggester",
           "selector_terms", "suggest"]

#: Distinct names directly below one parent that become `*.parent`.
GROUP_MIN = 3
#: Port ranges one target lists before they become one range.
MAX_RANGES = 8
#: Parents whose children belong to different owners: never widened to `*.`.
SHARED_SUFFIXES = (
    "amazonaws.com", "cloudfront.net", "azurewebsites.net", "blob.core.windows.net",
    "appspot.com", "web.app", "firebaseapp.com", "storage.googleapis.com", "github.io",
    "gitlab.io", "herokuapp.com", "netlify.app", "vercel.app", "pages.dev", "workers.dev",
    "r2.dev", "fly.dev", "onrender.com", "glitch.me", "repl.co", "blogspot.com",
    "ngrok.io", "ngrok-free.app", "ngrok.app", "trycloudflare.com", "loca.lt", "serveo.net",
    "duckdns.org", "no-ip.org", "ddns.net", "sslip.io", "nip.io", "xip.io",
)
#: Second-level labels under two-letter country domains that are registries' own.
_REGISTRY_SECOND_LEVEL = {"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go"}


class SuggestError(Exception):
    """The suggestion could not be made into a valid policy; says why."""


@dataclass
class _Seen:
    """Events behind one destination and port: how many, and when."""
    count: int = 0
    first: int | None = None
    last: int | None = None

    def add(self, when: int | None, count: int = 1) -> None:
        self.count += count
        if when is not None:
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)

    def merge(self, other: "_Seen") -> None:
        self.add(other.first, other.count)
        self.add(other.last, 0)


#: (protocol, port) -> its events, for one destination
Flows = dict[tuple[Proto, int], _Seen]


def _total(flows: Flows) -> _Seen:
    seen = _Seen()
    for one in flows.values():
        seen.merge(one)
    return seen


def _record(flows: Flows, proto: Proto, port: int, when: int | None) -> None:
    flows.setdefault((proto, port), _Seen()).add(when)


@dataclass(frozen=True)
class Suggestion:
    text: str                 # the policy, YAML with comments
    notes: list[str]          # what was left out and why, for stderr
    rules: int


class Suggester:
    """Feed events; `policy()` writes the suggestion."""

    def __init__(self, selector: Selector | None = None):
        self.selector = selector
        self.names = NameMemory()
        self.hosts: dict[str, Flows] = {}
        self.addresses: dict[Any, Flows] = {}
        self.resolvers: dict[Any, Flows] = {}
        self.answered: dict[str, int] = {}          # names learned -> answers
        self.mismatched: Counter[str] = Counter()   # hosts payloads named (name_mismatch)
        self.counts: Counter[str] = Counter()

    def feed(self, event: dict) -> None:
        workload = workload_of(event)
        if workload is None:
            self.counts["events about no workload"] += 1
            return
        if self.selector is not None and not self.selector.matches(workload):
            self.counts["events of workloads --selector leaves out"] += 1
            return
        kind = event.get("kind")
        if kind == "dns":
            self._dns(event)
        elif kind == "connect":
            self._connect(event)
        elif kind == "detection":
            self.counts["detections (never turned into allows)"] += 1
            detection = event.get("detection")
            evidence = detection.get("evidence") if isinstance(detection, dict) else None
            if isinstance(detection, dict) and detection.get("type") == "name_mismatch" \
                    and isinstance(evidence, dict) and isinstance(evidence.get("host"), str):
                self.mismatched[evidence["host"][:253]] += 1
        elif kind in ("exec", "socket"):
            self.counts[f"{kind} events (exec rules and raw sockets are not suggested)"] += 1

    def _dns(self, event: dict) -> None:
        name = self.names.feed(event)
        if name is not None:
            self.answered[name] = self.answered.get(name, 0) + 1
        dns = event.get("dns") if isinstance(event.get("dns"), dict) else {}
        if event.get("direction") == "answer" and dns.get("trusted") is not True:
            return                  # an answer not believed names no resolver
        resolver = event.get("resolver") if isinstance(event.get("resolver"), dict) else {}
        flow = flow_of({"dst": resolver, "proto": event.get("proto")})
        if flow is not None and flow.port:
            _record(self.resolvers.setdefault(flow.address, {}), Proto.ANY, flow.port,
                    parse_ts(event.get("ts")))

    def _connect(self, event: dict) -> None:
        flow = flow_of(event)
        if flow is None:
            self.counts["connects without a destination one could allow"] += 1
            return
        if flow.hook == "bind":
            self.counts["refused binds (left out)"] += 1
            return
        if event.get("would") is None and event.get("action") not in ("allow", "log"):
            self.counts["connects refused when recorded (left out)"] += 1
            return
        name = self.names.name_for(event, flow)
        flows = self.hosts.setdefault(name, {}) if name is not None else \
            self.addresses.setdefault(flow.address, {})
        _record(flows, flow.proto, flow.port, parse_ts(event.get("ts")))

    # -- the policy --------------------------------------------------------------------

    def policy(self, name: str = "suggested", sources: Sequence[str] = ()) -> Suggestion:
        notes = [f"{what}: {n}" for what, n in sorted(self.counts.items())]
        hosts = _grouped(self.hosts)
        resolvers, ports = self._resolver_ports() if hosts else ({}, set())
        addresses = self.addresses
        if hosts and resolvers:
            # the trusted resolvers are reachable on their ports without a rule
            addresses = {address: {key: seen for key, seen in flows.items()
                                   if not (address in resolvers and key[1] in ports)}
                         for address, flows in self.addresses.items()}
            quiet = sum(_total(self.addresses[a]).count - _total(f).count
                        for a, f in addresses.items())
            addresses = {address: flows for address, flows in addresses.items() if flows}
            if quiet:
                notes.append(f"connects to the resolvers, which need no rule (spec.dns): {quiet}")
        unused = sorted(set(self.answered) - set(self.hosts))
        if unused:
            notes.append(f"names answered but never seen in a connect (left out; connects "
                         f"a policy allows are not reported): {len(unused)}: "
                         f"{', '.join(unused[:8])}{' ...' if len(unused) > 8 else ''}")
        if self.mismatched:
            shown = ", ".join(sorted(_printable(h) for h in self.mismatched)[:8])
            notes.append(f"hosts payloads named that this policy does not allow (name_mismatch "
                         f"findings): {len(self.mismatched)}: {shown}")
        lines = _header(name, sources, self.selector)
        rules = 0
        lines.append("  egress:" if hosts or addresses else "  egress: []")
        for pattern, members, flows in hosts:
            rules += 1
            lines += _rule(_host_rule_name(pattern), f'host: {_quote(pattern)}',
                           _host_comment(pattern, members, flows), flows)
        for address in sorted(addresses, key=lambda a: (a.version, int(a))):
            rules += 1
            flows = addresses[address]
            network = ipaddress.ip_network(address)
            lines += _rule(_address_rule_name(address), f"cidr: {_quote(str(network))}",
                           f"{address}: {_times(_total(flows))}", flows)
        lines += _tail(resolvers, ports, bool(hosts))
        text = "\n".join(lines) + "\n"
        _check(text)
        return Suggestion(text, notes, rules)

    def _resolver_ports(self) -> tuple[dict[Any, Flows], set[int]]:
        """The resolvers seen and the ports they are trusted on (at most
        DNS_PORTS in all, the most used)."""
        usage: Counter[int] = Counter()
        for flows in self.resolvers.values():
            for (_proto, port), seen in flows.items():
                usage[port] += seen.count
        ports = {port for port, _n in usage.most_common(DNS_PORTS)}
        resolvers = {address: flows for address, flows in self.resolvers.items()
                     if any(port in ports for _proto, port in flows)}
        return resolvers, ports


def suggest(events: Iterable[dict], selector: Selector | None = None, name: str = "suggested",
            sources: Sequence[str] = ()) -> Suggestion:
    """The policy for the events (see the module's docstring)."""
    if not name or len(name) > POLICY_NAME_MAX or not POLICY_NAME.fullmatch(name):
        raise ValueError(f"invalid policy name {name!r} (lowercase letters, digits, '-' and "
                         "'.', starting and ending with a letter or digit)")
    suggester = Suggester(selector)
    for event in events:
        suggester.feed(event)
    return suggester.policy(name, sources)


# -- names -----------------------------------------------------------------------------


def _groupable(parent: str) -> bool:
    labels = parent.split(".")
    if len(labels) < 2:
        return False
    if len(labels) == 2 and len(labels[1]) == 2 and labels[0] in _REGISTRY_SECOND_LEVEL:
        return False
    return not any(parent == shared or parent.endswith("." + shared)
                   for shared in SHARED_SUFFIXES)


def _grouped(hosts: dict[str, Flows]) -> list[tuple[str, list[str], Flows]]:
    """(pattern, the names it stands for, their events): names, and `*.parent`
    for GROUP_MIN or more names directly below a parent that may be widened."""
    below: dict[str, list[str]] = defaultdict(list)
    for host in hosts:
        parent = host.partition(".")[2]
        if _groupable(parent):
            below[parent].append(host)
    patterns: dict[str, tuple[list[str], Flows]] = {}
    grouped = set()
    for parent, members in below.items():
        if len(members) >= GROUP_MIN:
            flows: Flows = {}
            for member in members:
                for key, seen in hosts[member].items():
                    flows.setdefault(key, _Seen()).merge(seen)
            patterns[f"*.{parent}"] = (sorted(members), flows)
            grouped.update(members)
    for host, flows in hosts.items():
        if host not in grouped:
            patterns[host] = ([host], flows)
    order = sorted(patterns, key=lambda p: (list(reversed(p.split("."))), p))
    return [(pattern, *patterns[pattern]) for pattern in order]


def _host_rule_name(pattern: str) -> str:
    return f"below-{pattern[2:]}" if pattern.startswith("*.") else f"host-{pattern}"


def _address_rule_name(address) -> str:
    text = str(address).replace(":", "-")
    return f"ip-{text}0" if text.endswith("-") else f"ip-{text}"


def _host_comment(pattern: str, members: list[str], flows: Flows) -> str:
    if pattern.startswith("*."):
        shown = ", ".join(members[:8]) + (" ..." if len(members) > 8 else "")
        return f"{pattern} ({len(members)} names seen: {shown}): {_times(_total(flows))}"
    return f"{pattern}: {_times(_total(flows))}"


# -- text ------------------------------------------------------------------------------


def _quote(text: str) -> str:
    """A YAML double-quoted scalar (JSON's escapes are YAML's)."""
    return orjson.dumps(text).decode()


def _when(ns: int | None) -> str:
    if ns is None:
        return "unknown"
    seconds, nanos = divmod(ns, 1_000_000_000)
    try:
        stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "unknown"
    return f"{stamp}.{nanos:09d}Z"


def _times(seen: _Seen, what: str = "event") -> str:
    count = f"{seen.count} {what}{'s' if seen.count != 1 else ''}"
    if seen.first == seen.last:
        return f"{count}, seen {_when(seen.first)}"
    return f"{count}, first seen {_when(seen.first)}, last seen {_when(seen.last)}"


def _ranges(ports: set[int]) -> tuple[list[str | int], str]:
    """Ports as the policy writes them, and a note when they were widened."""
    runs: list[list[int]] = []
    for port in sorted(ports):
        if runs and port == runs[-1][1] + 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    if len(runs) > MAX_RANGES:
        low, high = runs[0][0], runs[-1][1]
        return [f"{low}-{high}"], f"; {len(ports)} ports seen, widened to {low}-{high}"
    out: list[str | int] = []
    for low, high in runs:
        if high - low >= 2:
            out.append(f"{low}-{high}")
        else:
            out += range(low, high + 1)
    return out, ""


def _ports_text(ports: list[str | int]) -> str:
    return "[" + ", ".join(f'"{p}"' if isinstance(p, str) else str(p) for p in ports) + "]"


def _rule(name: str, where: str, comment: str, flows: Flows) -> list[str]:
    targets: list[str] = []
    notes = ""
    for proto in (Proto.TCP, Proto.UDP):
        seen_ports = {port for found, port in flows if found == proto}
        if not seen_ports:
            continue
        ports, note = _ranges(seen_ports)
        notes += note
        targets += [f"        - {where}",
                    f"          ports: {_ports_text(ports)}",
                    f"          protocol: {proto.label}"]
    return [f"    # {comment}{notes}",
            f"    - name: {name}",
            "      action: allow",
            "      to:", *targets]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:120]


def _header(name: str, sources: Sequence[str], selector: Selector | None) -> list[str]:
    made_from = ", ".join(_printable(s) for s in sources[:4]) + \
        (" ..." if len(sources) > 4 else "")
    lines = [
        "# Suggested by `egress-guard policy suggest`"
        + (f" from {made_from}" if made_from else "") + ":",
        "# what the recorded workload did, allowed; everything else blocked.",
        "# Review it, then `egress-guard policy check` and `egress-guard policy test` it.",
        "apiVersion: egress-guard/v1",
        "kind: EgressPolicy",
        "metadata:",
        f"  name: {name}",
        "spec:",
    ]
    if selector is not None:
        lines += ["  selector:", *_selector_lines(selector)]
    lines.append("  defaultAction: block    # what no rule allows")
    return lines


def _selector_lines(selector: Selector) -> list[str]:
    lines = []
    for key, values in (("containerNames", selector.container_names),
                        ("images", selector.images), ("namespaces", selector.namespaces),
                        ("cgroupPaths", selector.cgroup_paths)):
        if values:
            lines.append(f"    {key}: [{', '.join(_quote(v) for v in values)}]")
    if selector.labels:
        lines.append("    labels: {" + ", ".join(f"{_quote(t.key)}: {_quote(t.values[0])}"
                                                 for t in selector.labels) + "}")
    if selector.pod_labels:
        lines.append("    podLabels:")
        lines.append("      matchLabels: {" + ", ".join(
            f"{_quote(t.key)}: {_quote(t.values[0])}" for t in selector.pod_labels) + "}")
    return lines


def _tail(resolvers: dict[Any, Flows], ports: set[int], names: bool) -> list[str]:
    """exec, sockets, detections and dns."""
    lines = ["  exec: []                # exec rules are not suggested",
             "  sockets:",
             "    raw: deny             # raw and packet sockets would pass the connect hooks",
             "  detections:             # as the embedded default policy"]
    defaults = default_policy()
    lines += [f"    {key}: {defaults.detection(key)}" for key in DETECTIONS]
    if not names:
        return lines
    if not resolvers:
        return lines + [
            "  # dns: no DNS answers were recorded, so no resolvers are listed: the agent",
            "  # trusts the nameservers of its host's /etc/resolv.conf (docs/policy.md).",
        ]
    lines += ["  dns:", "    resolvers:"]
    for address in sorted(resolvers, key=lambda a: (a.version, int(a))):
        flows = resolvers[address]
        kept = sorted({port for _proto, port in flows} & ports)
        lines += [f"      # {address}: {_times(_total(flows), 'DNS event')}",
                  f"      - cidr: {_quote(str(ipaddress.ip_network(address)))}",
                  f"        ports: {_ports_text(kept)}"]
    return lines


def _check(text: str) -> None:
    """As `policy check` does: parse and compile; SuggestError if it fails."""
    try:
        compile_policy(parse_policy(text, "<suggested>"))
    except PolicyError as exc:
        raise SuggestError("the suggested policy does not pass `policy check`: "
                           + "; ".join(str(p) for p in exc.problems[:4])) from None


# -- selectors on the command line -----------------------------------------------------

_SELECTOR_KEYS = {"containerName": "container_names", "image": "images",
                  "cgroupPath": "cgroup_paths", "namespace": "namespaces"}


def selector_terms(terms: Sequence[str]) -> Selector | None:
    """--selector KEY=VALUE terms as a Selector (None for none): containerName,
    image, cgroupPath (globs), namespace, label.KEY and podLabel.KEY (one
    value each); a key given again adds a value (any of them matches).
    ValueError in words for a bad term."""
    lists: dict[str, list[str]] = {field: [] for field in _SELECTOR_KEYS.values()}
    labels: dict[str, dict[str, str]] = {"label": {}, "podLabel": {}}
    for term in terms:
        key, sep, value = term.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{term!r}: expected KEY=VALUE")
        kind, dot, label = key.partition(".")
        if kind in labels and dot and label:
            known = labels[kind].setdefault(label, value)
            if known != value:
                raise ValueError(f"{term!r}: {key} is already {known!r} (one value per label)")
        elif key in _SELECTOR_KEYS:
            lists[_SELECTOR_KEYS[key]].append(value)
        else:
            raise ValueError(f"{term!r}: unknown key {key!r} (expected containerName, image, "
                             "cgroupPath, namespace, label.KEY or podLabel.KEY)")
    selector = Selector(
        **{name: tuple(dict.fromkeys(values)) for name, values in lists.items()},
        labels=tuple(LabelRequirement(k, "In", (v,)) for k, v in labels["label"].items()),
        pod_labels=tuple(LabelRequirement(k, "In", (v,)) for k, v in labels["podLabel"].items()))
    return selector if selector.specificity else None
