# SPDX-License-Identifier: Apache-2.0
"""Events for people: one line per event, that a person can scan.

JSON lines (docs/events.md) are the contract; this view only reads them
(lines.py reads them back from files and streams).

    10:00:01.123 block connect   agent-1 curl[4242] tcp pool.example(198.18.0.7):3333 rule no-pools

time (HH:MM:SS.mmm of the event's UTC `ts`), action (coloured on a
terminal), kind, workload and process (for events about a workload), what
it was about (destination with its name, program, DNS question) and why in
words (rule, finding). One renderer per kind (RENDERERS); a kind it does not
know is shown generically, and nothing an event holds can make it raise or
write a control character to the terminal (`clean`).

`TextStream` turns the agent's own JSON lines into these lines on their way
out (`run --format text`).
"""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
from typing import IO, Any, Callable, Sequence

import orjson

from guard.report.lines import Line, Splitter

__all__ = ["RENDERERS", "TextStream", "clean", "finding_words", "render", "render_change",
           "render_line", "selected", "use_colour"]

#: How long a field of an event may be on screen.
FIELD_CHARS = 200

# -- words -----------------------------------------------------------------------------

#: Characters never written to a terminal as they are: C0 and C1 controls
#: (escape sequences), lone surrogates (not writable as UTF-8), and the
#: invisible and bidirectional formatting marks that make text read other
#: than it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
                     "\ud800-\udfff]")


def clean(text: str, limit: int = FIELD_CHARS) -> str:
    """text safe for a terminal: unsafe characters as \\xNN or \\uNNNN, and
    at most limit characters ("..." where it was cut)."""
    if len(text) > limit * 2:
        text = text[:limit * 2]
    text = _UNSAFE.sub(lambda match: (f"\\x{ord(match[0]):02x}" if ord(match[0]) < 0x100
                                      else f"\\u{ord(match[0]):04x}"), text)
    return text if len(text) <= limit else text[:limit] + "..."


def _text(value: Any, limit: int = FIELD_CHARS) -> str:
    """A scalar of an event as words ('' for what is not a scalar)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return clean(value, limit)
    if isinstance(value, (int, float)):
        return clean(str(value), limit)
    return ""


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _endpoint(ip: Any, port: Any, name: Any = None) -> str:
    """name(ip):port, ip:port, [v6]:port; what is missing left out."""
    address = _text(ip, 64) or "?"
    host = address
    if name is not None and _text(name):
        host = f"{_text(name)}({address})"
    elif ":" in address:
        host = f"[{address}]"
    number = _int(port)
    return f"{host}:{number}" if number is not None else host


def _destination(dst: Any, proto: Any = None) -> str:
    dst = _dict(dst)
    if not dst:
        return ""
    where = _endpoint(dst.get("ip"), dst.get("port"), dst.get("name"))
    proto = _text(proto, 8) or _text(dst.get("proto"), 8)
    return f"{proto} {where}" if proto else where


_TIME = re.compile(r"\d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d)(?:[.,](\d+))?")


def _time(event: dict) -> str:
    ts = event.get("ts")
    match = _TIME.match(ts) if isinstance(ts, str) else None
    if match is None:
        return "--:--:--.---"
    return f"{match[1]}.{(match[2] or '')[:3].ljust(3, '0')}"


def _workload(event: dict) -> str:
    """The container's name, else the pod, else the container id, else the
    cgroup path; '-' when none is known."""
    container, k8s = _dict(event.get("container")), _dict(event.get("k8s"))
    name, pod = _text(container.get("name"), 80), _text(k8s.get("pod"), 80)
    if pod:
        namespace = _text(k8s.get("namespace"), 80)
        pod = f"{namespace}/{pod}" if namespace else pod
        return f"{pod}/{name}" if name else pod
    if name:
        return name
    container_id = _text(container.get("id"), 80)
    if container_id:
        return container_id[:12]
    return _text(_dict(event.get("cgroup")).get("path")) or "-"


def _process(event: dict) -> str:
    process = _dict(event.get("process"))
    pid, comm = _int(process.get("pid")), _text(process.get("comm"), 32)
    if not pid and not comm:
        return "-"
    return f"{comm or '?'}[{pid if pid is not None else '?'}]"


def _argv(process: dict, limit: int = 160) -> str:
    words = [_text(word, 80) for word in _list(process.get("argv"))[:32]]
    text = shlex.join(words) if words else ""
    if process.get("argv_truncated") is True or len(_list(process.get("argv"))) > 32:
        text += " ..."
    return clean(text, limit)


def _rule_words(event: dict) -> str:
    rule = event.get("rule")
    if rule == "detection":
        words = "refused: a detection judged the process"
    elif isinstance(rule, str) and rule:
        words = f"rule {_text(rule, 80)}"
    else:
        words = "default action"
    return words + _would(event)


def _would(event: dict) -> str:
    would = _text(event.get("would"), 8)
    return f" (would {would})" if would else ""


# -- findings in words -----------------------------------------------------------------

_TYPE_WORDS = {"stratum": "mining traffic", "miner_exec": "miner command line",
               "miner_dns": "mining pool name", "ssh_reverse_tunnel": "ssh reverse tunnel",
               "ssh_outbound": "ssh connection", "tunnel_tool": "tunnel tool",
               "reverse_shell": "reverse shell", "name_mismatch": "payload names another host",
               "unjudged_flow": "flow refused unjudged"}
_STRATUM_DIALECTS = {"stratum-v1": "stratum v1", "stratum-v1-bip310": "stratum v1, BIP310",
                     "cryptonote-login": "cryptonote", "ethereumstratum-1.0.0":
                     "EthereumStratum/1.0.0", "ethereumstratum-2.0.0": "EthereumStratum/2.0.0",
                     "eth-proxy": "eth-proxy", "getwork-http": "getwork over HTTP",
                     "stratum-v2-plaintext": "stratum v2"}
_STRATUM_VERBS = {"mining.subscribe": "subscribe", "mining.authorize": "login",
                  "mining.configure": "subscribe", "mining.submit": "share", "login": "login",
                  "eth_submitLogin": "login", "eth_getWork": "getwork", "getwork": "getwork",
                  "eth_submitWork": "share", "submit": "share", "getblocktemplate": "getwork"}
_PROXIES = {"socks5": "SOCKS5", "socks4": "SOCKS4", "http-connect": "HTTP CONNECT"}


def _stratum(dialect: str, evidence: dict) -> str:
    if dialect in _PROXIES:
        target = _text(evidence.get("target"), 80) or _text(evidence.get("host"), 80)
        return f"mining pool behind a {_PROXIES[dialect]} proxy" + (f" ({target})" if target
                                                                    else "")
    if dialect == "tls":
        sni = _text(evidence.get("sni"), 80)
        return "mining pool over TLS" + (f" (SNI {sni})" if sni else "")
    if dialect == "stratum-reply":
        return "Stratum mining pool reply"
    methods = [_text(method, 40) for method in _list(evidence.get("methods"))]
    verb = next((_STRATUM_VERBS[m] for m in methods if m in _STRATUM_VERBS), "traffic")
    words = f"Stratum mining {verb} ({_STRATUM_DIALECTS.get(dialect, dialect or 'unknown')})"
    agent = _text(evidence.get("agent"), 60)
    return words + (f", agent {agent}" if agent else "")


def _miner_exec(dialect: str, evidence: dict) -> str:
    words = f"miner command line ({dialect or 'unknown'})"
    url, config = _text(evidence.get("url"), 120), _text(evidence.get("config"), 120)
    if url:
        return f"{words}: {url}"
    if config:
        return f"{words}: config {config}"
    indicators = [_text(x, 60) for x in _list(evidence.get("indicators"))[:2]]
    return f"{words}: {', '.join(i for i in indicators if i)}" if any(indicators) else words


def _miner_dns(dialect: str, evidence: dict) -> str:
    kind = "donation" if dialect == "donation" else "pool"
    name, matched = _text(evidence.get("name"), 120), _text(evidence.get("matched"), 80)
    words = f"mining {kind} name {name or '?'}"
    return words + (f" (listed: {matched})" if matched and matched != name else "")


def _ssh_who(destination: Any) -> str:
    destination = _dict(destination)
    host, user = _text(destination.get("host"), 120), _text(destination.get("user"), 40)
    port = _int(destination.get("port"))
    who = f"{user}@{host}" if user and host else host
    return f"{who}:{port}" if who and port is not None else who


def _ssh_reverse_tunnel(dialect: str, evidence: dict) -> str:
    program = dialect if dialect and dialect != "ssh" else "ssh"
    forward = _text(evidence.get("forward"), 80)
    words = f"{program} remote forward {forward}" if forward else f"{program} reverse tunnel"
    who = _ssh_who(evidence.get("destination"))
    origin = _text(evidence.get("origin"), 120)
    if who:
        words += f" to {who}"
    if origin and origin != "argv":
        words += f" (from {origin})"
    return words


def _ssh_outbound(dialect: str, evidence: dict) -> str:
    if evidence.get("banner") is not None:
        software = _text(evidence.get("software"), 60) or _text(evidence.get("banner"), 60)
        return f"SSH client {software} (banner)"
    who = _ssh_who(evidence.get("destination"))
    words = f"{dialect or 'ssh'} connection" + (f" to {who}" if who else "")
    return words + (", allowlisted" if evidence.get("allowlisted") is True else "")


def _tunnel_tool(dialect: str, evidence: dict) -> str:
    words = f"tunnel tool {dialect or 'unknown'}"
    detail = [_text(evidence.get(key), 80) for key in ("subcommand", "target", "url")]
    detail = [part for part in detail if part]
    signal = _text(evidence.get("signal"), 40)
    if detail:
        return f"{words} ({' '.join(detail)})"
    return f"{words} ({signal.replace('_', ' ')})" if signal else words


def _reverse_shell(dialect: str, evidence: dict) -> str:
    if dialect == "stdio-socket":
        stream = _text(evidence.get("stream"), 16) or f"fd {_text(evidence.get('fd'), 8)}"
        remote = _dict(evidence.get("remote"))
        return f"{stream} dup'ed onto a socket to {_endpoint(remote.get('ip'), remote.get('port'))}"
    pattern = _text(evidence.get("pattern"), 60).replace("_", " ")
    words = f"reverse shell ({', '.join(part for part in (dialect, pattern) if part)})"
    target = _dict(evidence.get("target"))
    if target:
        words += f" to {_endpoint(target.get('host'), target.get('port'))}"
    return words


def _name_mismatch(dialect: str, evidence: dict) -> str:
    learned = _text(evidence.get("learned"), 120) or "?"
    host = _text(evidence.get("host"), 120)
    if dialect == "unnamed" or not host:
        return f"payload names no host; address learned for {learned}"
    return f"payload names {host}, address learned for {learned} ({dialect or '?'})"


def _unjudged_flow(dialect: str, evidence: dict) -> str:
    if dialect == "websocket-filler":
        return "refused unjudged: WebSocket frames of filler beyond what the kernel reads"
    if dialect == "urgent-data":
        return "refused unjudged: urgent data (MSG_OOB), not the stream the server reads"
    return "refused unjudged" + (f" ({dialect})" if dialect else "")


_FINDINGS: dict[str, Callable[[str, dict], str]] = {
    "stratum": _stratum, "miner_exec": _miner_exec, "miner_dns": _miner_dns,
    "ssh_reverse_tunnel": _ssh_reverse_tunnel, "ssh_outbound": _ssh_outbound,
    "tunnel_tool": _tunnel_tool, "reverse_shell": _reverse_shell,
    "name_mismatch": _name_mismatch, "unjudged_flow": _unjudged_flow,
}


def finding_words(detection: Any) -> str:
    """A finding ({"type", "dialect", "confidence", "evidence"}) in words:
    `Stratum mining login (cryptonote)`, `ssh remote forward 9000:localhost:22
    to evil.example`; type/dialect for a type it does not know."""
    detection = _dict(detection)
    kind, dialect = _text(detection.get("type"), 40), _text(detection.get("dialect"), 40)
    evidence = _dict(detection.get("evidence"))
    if dialect in ("unread-config", "classifier-error"):
        what = _TYPE_WORDS.get(kind, kind or "finding")
        why = ("not read in full" if dialect == "unread-config" else "its classifier failed")
        note = _text(evidence.get("note"), 120) or _text(evidence.get("error"), 120)
        words = f"{what}: {why}" + (f" ({note})" if note else "")
    elif kind in _FINDINGS:
        words = _FINDINGS[kind](dialect, evidence)
    else:
        words = "/".join(part for part in (kind or "?", dialect) if part)
    confidence = _text(detection.get("confidence"), 8)
    return words + (f", {confidence} confidence" if confidence and confidence != "high" else "")


# -- one renderer per kind: event -> (what it was about, why in words) -----------------


def _connect(event: dict) -> tuple[str, str]:
    hook = _text(event.get("hook"), 16)
    where = _destination(event.get("dst"), event.get("proto"))
    if hook == "bind":
        return f"bind {where}", "a trusted resolver's port" + _would(event)
    if hook and hook != "connect":
        where += f" ({hook})"
    repeats = _int(event.get("repeats"))
    if repeats and repeats > 0:     # folded connects (docs/events.md, Folded connects)
        where += f" x{repeats + 1}"
    return where, _rule_words(event)


def _exec(event: dict) -> tuple[str, str]:
    process = _dict(event.get("process"))
    program = _text(process.get("exe")) or _text(event.get("filename")) or "?"
    argv = _argv(process)
    rule = event.get("rule")
    words = f"rule {_text(rule, 80)}" if isinstance(rule, str) and rule else ""
    return (f"{program}: {argv}" if argv else program), words + _would(event)


def _socket(event: dict) -> tuple[str, str]:
    sock = _dict(event.get("socket"))
    family, kind = _text(sock.get("family"), 16) or "?", _text(sock.get("type"), 16) or "?"
    protocol = _text(sock.get("protocol"), 8)
    what = f"{family} {kind} socket" + (f", protocol {protocol}" if protocol else "")
    rule = event.get("rule")
    words = f"rule {_text(rule, 80)}" if isinstance(rule, str) and rule else "sockets.raw: deny"
    return what, words + _would(event)


def _dns(event: dict) -> tuple[str, str]:
    dns, resolver = _dict(event.get("dns")), _dict(event.get("resolver"))
    name, qtype = _text(dns.get("name")) or "?", _text(dns.get("type"), 12)
    server = _endpoint(resolver.get("ip"), resolver.get("port"))
    why = [_text(word, 24) for word in _list(dns.get("why"))[:8]]
    if event.get("direction") == "answer":
        what = f"answer {name} {qtype} from {server}".replace("  ", " ")
        rcode = _text(dns.get("rcode"), 16)
        answers = [_text(_dict(a).get("ip"), 64) for a in _list(dns.get("answers"))]
        words = rcode if rcode and rcode != "NOERROR" else ""
        if answers:
            shown = " ".join(a for a in answers[:8] if a)
            more = f" (+{len(answers) - 8})" if len(answers) > 8 else ""
            words = (words + " " if words else "") + "-> " + shown + more
        cnames = [_text(c, 80) for c in _list(dns.get("cnames"))[:4]]
        if any(cnames):
            words += f" via {' '.join(c for c in cnames if c)}"
        learned, ttl = _int(dns.get("learned")), _int(dns.get("ttl"))
        if learned:
            words += f" (learned {learned} for {ttl if ttl is not None else '?'} s)"
    else:
        what, words = f"query {name} {qtype} to {server}".replace("  ", " "), ""
    if any(why):
        words += f" [{', '.join(w for w in why if w)}]"
    return what, words.strip() + _would(event)


def _detection(event: dict) -> tuple[str, str]:
    dst = event.get("dst")
    return _destination(dst) if isinstance(dst, dict) else "", \
        finding_words(event.get("detection")) + _would(event)


def _agent(event: dict) -> tuple[str, str]:
    state = _text(event.get("state"), 24) or "?"
    policy = _dict(event.get("policy"))
    if state in ("ready", "stopped"):
        words = [f"version {_text(event.get('version'), 32) or '?'}"]
        if policy:
            words.append(f"policy {_text(policy.get('name'), 80) or '?'} generation "
                         f"{_text(policy.get('generation'), 12) or '?'}")
        cgroups = event.get("cgroups")
        if isinstance(cgroups, list):
            words.append(f"{len(cgroups)} cgroup(s)")
        counters = _dict(event.get("counters"))
        if state == "stopped" and counters:
            words.append(f"{_text(counters.get('events_sent'), 20) or 0} events sent, "
                         f"{_text(counters.get('events_lost'), 20) or 0} lost")
        uptime = _text(event.get("uptime_s"), 20)
        if state == "stopped" and uptime:
            words.append(f"up {uptime} s")
        previous = _dict(event.get("previous_agent"))
        if previous:
            words.append(f"previous agent {_text(previous.get('pid'), 12)} "
                         f"{_text(previous.get('how'), 120) or _text(previous.get('state'), 20)}")
        return state, ", ".join(words)
    if state == "crashed":
        return state, f"{_text(event.get('error'), 160)}; enforcement " \
                      f"{_text(event.get('enforcement'), 80) or '?'}"
    if state == "restarting":
        return state, (f"{_text(event.get('reason'), 80)}, restart "
                       f"{_text(event.get('restarts'), 12)}, next in "
                       f"{_text(event.get('next_in_s'), 12)} s")
    return state, _generic_words(event)


def _container(event: dict) -> tuple[str, str]:
    policy = _dict(event.get("policy"))
    words = []
    if policy:
        words.append(f"policy {_text(policy.get('name'), 80) or '?'} generation "
                     f"{_text(policy.get('generation'), 12) or '?'}")
    image = _text(_dict(event.get("container")).get("image"), 120)
    if image:
        words.append(f"image {image}")
    latency = _text(event.get("latency_ms"), 16)
    if latency:
        words.append(f"{latency} ms")
    return _text(event.get("state"), 24) or "?", ", ".join(words)


def _policy(event: dict) -> tuple[str, str]:
    state = _text(event.get("state"), 24) or "?"
    policy = _dict(event.get("policy"))
    name = f"policy {_text(policy.get('name'), 80) or '?'}"
    if state == "rejected":
        problems = _list(event.get("problems"))
        first = _text(problems[0], 160) if problems else ""
        return state, f"{len(problems)} problem(s), {name} stays" + (f": {first}" if first
                                                                      else "")
    words = f"{name} generation {_text(policy.get('generation'), 12) or '?'}"
    previous = _text(event.get("previous_generation"), 12)
    switch = _text(event.get("switch_ms"), 16)
    return state, words + (f" (was {previous})" if previous else "") + \
        (f", switched in {switch} ms" if switch else "")


def _loss(event: dict) -> tuple[str, str]:
    return (f"{_text(event.get('lost'), 20) or '?'} event(s) lost",
            f"({_text(event.get('lost_total'), 20) or '?'} in all)")


def _error(event: dict) -> tuple[str, str]:
    extra = [f"{key} {_text(event.get(key), 40)}" for key in ("record_kind", "pid", "verdict",
                                                             "done", "unwritable_total",
                                                             "lost_lines_total")
             if _text(event.get(key), 40)]
    return _text(event.get("error"), 240) or "?", f"({', '.join(extra)})" if extra else ""


#: Keys every renderer shows or that say nothing to a person scanning.
_SHOWN = frozenset({"ts", "kind", "action", "rule", "policy", "process", "cgroup", "container",
                    "k8s", "identity", "escaped"})


def _generic_words(event: dict) -> str:
    parts = []
    for key, value in list(event.items())[:32]:
        if key in _SHOWN:
            continue
        if isinstance(value, (dict, list)):
            try:
                shown = clean(orjson.dumps(value).decode()[:120], 60)
            except (TypeError, orjson.JSONEncodeError):
                shown = "..."
        else:
            shown = _text(value, 60) or "null"
        parts.append(f"{_text(key, 40)}={shown}")
    return clean(" ".join(parts), 300)


def _generic(event: dict) -> tuple[str, str]:
    return "", _generic_words(event) + _would(event)


def _escape(event: dict) -> tuple[str, str]:
    escape = _dict(event.get("escape"))
    to, mover = _dict(escape.get("to")), _dict(escape.get("mover"))
    where = _text(to.get("path")) or f"cgroup {_text(to.get('id'), 24) or '?'}"
    how = _text(escape.get("how"), 24) or "?"
    words = f"left its guarded cgroup ({how}, by {_text(mover.get('comm'), 16) or '?'}" \
            f"[{_text(mover.get('pid'), 10) or '?'}])"
    killed_by = _text(escape.get("killed_by"), 8)
    if killed_by:
        words += f", killed by the {killed_by}"
    return f"to {where}", words + _would(event)


RENDERERS: dict[str, Callable[[dict], tuple[str, str]]] = {
    "connect": _connect, "exec": _exec, "socket": _socket, "dns": _dns,
    "detection": _detection, "agent": _agent, "container": _container,
    "policy": _policy, "loss": _loss, "error": _error, "escape": _escape,
}

# -- lines -----------------------------------------------------------------------------

_COLOURS = {"block": "\x1b[31m", "kill": "\x1b[1;31m", "log": "\x1b[33m", "allow": "\x1b[32m"}
_RESET = "\x1b[0m"


def use_colour(stream: Any) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _paint(word: str, width: int, colour: bool, action: str | None = None) -> str:
    padded = word.ljust(width)
    code = _COLOURS.get(action if action is not None else word) if colour else None
    return f"{code}{padded}{_RESET}" if code else padded


def _columns(event: dict) -> list[str]:
    """Workload and process, for events about a workload."""
    columns = []
    if "cgroup" in event or "container" in event:
        columns.append(_workload(event))
        if isinstance(event.get("process"), dict):
            columns.append(_process(event))
    return columns


def _what(event: dict, kind: str) -> tuple[str, str]:
    try:
        return RENDERERS.get(kind, _generic)(event)
    except Exception:  # noqa: BLE001 - a renderer's bug must not end the view
        return "", _generic_words(event)


def render(event: dict, colour: bool = False) -> str:
    """One event as one line (no newline)."""
    kind = _text(event.get("kind"), 24) or "?"
    action = _text(event.get("action"), 8) or "-"
    what, words = _what(event, kind)
    parts = [_time(event), _paint(action, 5, colour), kind.ljust(9), *_columns(event)]
    parts += [part for part in (what, words) if part]
    return " ".join(parts).rstrip()


def render_line(line: Line, colour: bool = False) -> str:
    """A line of an event stream: its event, or what was wrong with it."""
    if line.event is not None:
        return render(line.event, colour)
    return (f"--:--:--.--- ?     malformed {clean(line.where, 120)}: {line.problem}: "
            f"{clean(line.excerpt, 80)}")


def render_change(event: dict, old: str, new: str, decided: str, policy: str,
                  colour: bool = False) -> str:
    """An event whose verdict a policy would change (`policy test`):
    time, old -> new action, kind, workload, process, what, and what decided."""
    kind = _text(event.get("kind"), 24) or "?"
    what, _words = _what(event, kind)
    change = f"{clean(old, 8)} -> {_paint(clean(new, 8), 0, colour)}"
    parts = [_time(event), change + " " * max(0, 5 - len(new)), kind.ljust(9),
             *_columns(event)]
    if what:
        parts.append(what)
    parts.append(f"{clean(decided, 120)} of policy {clean(policy, 80)}")
    return " ".join(parts)


def selected(event: dict, kinds: Sequence[str], workloads: Sequence[str]) -> bool:
    """Whether an event passes --kind (any of) and --workload (globs on the
    container's name or id, the pod, the cgroup path)."""
    if kinds and event.get("kind") not in kinds:
        return False
    if not workloads:
        return True
    container, k8s = _dict(event.get("container")), _dict(event.get("k8s"))
    names = [container.get("name"), container.get("id"), k8s.get("pod"),
             _dict(event.get("cgroup")).get("path"), _workload(event)]
    if isinstance(k8s.get("namespace"), str) and isinstance(k8s.get("pod"), str):
        names.append(f"{k8s['namespace']}/{k8s['pod']}")
    return any(isinstance(name, str) and fnmatch.fnmatchcase(name, pattern)
               for name in names for pattern in workloads)


class TextStream:
    """What EventWriter writes to (a binary stream), writing text instead:
    each complete JSON line becomes its rendered line on `out` (`run
    --format text`). No fileno(): the writer's PIPE_BUF chunking is for
    JSON lines, and rendered lines are shorter."""

    def __init__(self, out: IO[bytes], colour: bool = False):
        self._out = out
        self._colour = colour
        self._splitter = Splitter("<agent>")

    def write(self, data: bytes | memoryview) -> int:
        size = len(data)
        for line in self._splitter.feed(bytes(data)):
            self._out.write(render_line(line, self._colour).encode("utf-8", "replace") + b"\n")
        return size

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        for line in self._splitter.finish():
            self._out.write(render_line(line, self._colour).encode("utf-8", "replace") + b"\n")
        self._out.flush()

