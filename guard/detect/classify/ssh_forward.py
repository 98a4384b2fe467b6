# SPDX-License-Identifier: Apache-2.0
"""What an ssh command line or config names: forwards and destinations.

Forward specs are split the way OpenSSH's misc.c parse_forward splits them
(brackets, backslashes, Unix socket paths, a SOCKS listener for `-R port`),
destinations the way ssh reads `[user@]host[:port]` and `ssh://` URIs, and
RemoteForward/LocalForward/DynamicForward lines the way readconf.c joins
their arguments. A spec ssh would refuse is kept, marked invalid, for the
evidence. Shared by the argv parsers (ssh_argv.py) and the evaluator (ssh.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from guard.detect.classify import port_number, split_host_port
from guard.detect.classify.ssh_config import DYNAMIC, FORWARD_KEYWORDS, LOCAL, REMOTE, TUNNEL

__all__ = ["FORWARD_KINDS", "Address", "Forward", "Destination", "ssh_port", "forward_fields",
           "parse_forward", "tunnel_forward", "parse_ssh_uri", "parse_user_host_port",
           "jump_hosts", "config_forward"]

FORWARD_KINDS = (REMOTE, LOCAL, DYNAMIC, TUNNEL)


@dataclass(frozen=True)
class Address:
    """One end of a forward: a TCP address, a Unix socket path or a tun device."""
    host: str | None = None
    port: int | None = None
    path: str | None = None
    device: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in (("host", self.host), ("port", self.port),
                                              ("path", self.path), ("device", self.device))
                if value is not None}


@dataclass(frozen=True)
class Forward:
    """A forwarding request. target None means the listening side speaks
    SOCKS (-D, and -R with only a listen address: a reverse SOCKS proxy)."""
    kind: str                      # remote | local | dynamic | tunnel
    spec: str                      # as written
    listen: Address | None = None
    target: Address | None = None
    origin: str = "argv"           # "argv" or "file:line"
    option: str = ""               # -R, -o RemoteForward, RemoteForward, autossh -M
    valid: bool = True             # False: the client would reject the spec and stop
    condition: str | None = None   # set when it depends on a Match exec nobody ran

    @property
    def socks(self) -> bool:
        return (self.valid and self.kind in (REMOTE, DYNAMIC) and self.listen is not None
                and self.target is None)

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "spec": self.spec, "origin": self.origin}
        if self.option:
            out["option"] = self.option
        if self.listen is not None:
            out["listen"] = self.listen.as_dict()
        if self.target is not None:
            out["target"] = self.target.as_dict()
        if self.socks:
            out["socks"] = True
        if not self.valid:
            out["valid"] = False
        if self.condition:
            out["condition"] = self.condition
        return out


@dataclass(frozen=True)
class Destination:
    host: str | None
    user: str | None = None
    port: int | None = None        # None: not given, the client's default (22) or config

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in (("host", self.host), ("user", self.user),
                                              ("port", self.port)) if value is not None}


# --------------------------------------------------------------------------
# Forward specifications (OpenSSH misc.c parse_forward semantics)


#: What a2port() resolves through /etc/services; only names people use in forwards.
_SERVICES = {"ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "http": 80, "www": 80,
             "pop3": 110, "imap": 143, "https": 443, "imaps": 993, "pop3s": 995, "socks": 1080,
             "mysql": 3306, "postgresql": 5432, "http-alt": 8080}


def ssh_port(text: str | None) -> int | None:
    """A port as ssh's a2port() reads it: decimal, or a service name."""
    if text is None:
        return None
    number = port_number(text)
    return number if number is not None else _SERVICES.get(text)


def forward_fields(spec: str) -> list[tuple[str, bool]] | None:
    """Split on ':' as ssh does: [bracketed] fields are literal, backslash
    escapes, a '/' makes a field a Unix socket path. None on bad syntax."""
    rest = spec.lstrip(" \t")
    fields: list[tuple[str, bool]] = []
    while rest and len(fields) < 4:
        if rest[0] == "[":
            end = rest.find("]")
            if end < 0 or rest[end + 1:end + 2] not in ("", ":"):
                return None
            inner = rest[1:end]
            fields.append((inner, "/" in inner))
            rest = rest[end + 2:]
            continue
        out: list[str] = []
        is_path = False
        i = 0
        while i < len(rest) and rest[i] != ":":
            if rest[i] == "\\":
                if i + 1 >= len(rest):
                    return None
                out.append(rest[i + 1])
                i += 2
                continue
            is_path = is_path or rest[i] == "/"
            out.append(rest[i])
            i += 1
        fields.append(("".join(out), is_path))
        rest = rest[i + 1:]
    if rest:
        return None                                # more than four fields
    return fields or None


def _read_forward(fields: list[tuple[str, bool]], dynamic: bool,
                  remote: bool) -> tuple[Address, Address | None] | None:
    """(listen, target) from split fields, or None if ssh would reject them."""
    n = len(fields)
    first, first_path = fields[0]
    target: Address | None = None
    if n == 1:
        listen = Address(path=first) if first_path else Address(port=ssh_port(first))
    elif n == 2:
        second, second_path = fields[1]
        if first_path and second_path:
            listen, target = Address(path=first), Address(path=second)
        elif second_path:
            listen, target = Address(port=ssh_port(first)), Address(path=second)
        else:
            listen = Address(host=first, port=ssh_port(second))
    elif n == 3:
        (second, _), (third, third_path) = fields[1], fields[2]
        if first_path:
            listen, target = Address(path=first), Address(host=second, port=ssh_port(third))
        elif third_path:
            listen, target = Address(host=first, port=ssh_port(second)), Address(path=third)
        else:
            listen = Address(port=ssh_port(first))
            target = Address(host=second, port=ssh_port(third))
    else:
        (second, _), (third, _), (fourth, _) = fields[1], fields[2], fields[3]
        listen = Address(host=first, port=ssh_port(second))
        target = Address(host=third, port=ssh_port(fourth))
    if dynamic:
        if n > 2 or target is not None:
            return None
    else:
        if target is None or (n < 3 and listen.path is None and target.path is None):
            return None
        if target.path is None and not target.port:
            return None
    if listen.path is None and (listen.port is None or (listen.port == 0 and not remote)):
        return None                                # only the server can pick a port (0)
    return listen, target


def parse_forward(kind: str, spec: str, origin: str = "argv", option: str = "",
                  dynamic: bool | None = None) -> Forward:
    """A Forward from an ssh -R/-L/-D/-w spec (dynamic None: try a static
    forward, then a SOCKS one, as `ssh -R` does)."""
    if kind == TUNNEL:
        return tunnel_forward(spec, origin, option)
    fields = forward_fields(spec)
    attempts = [dynamic] if dynamic is not None else [False, kind == REMOTE]
    if kind == DYNAMIC:
        attempts = [True]
    for attempt in dict.fromkeys(attempts):
        parsed = _read_forward(fields, attempt, kind == REMOTE) if fields else None
        if parsed is not None:
            return Forward(kind, spec, parsed[0], parsed[1], origin, option)
    # ssh would stop on this spec; keep a best-effort reading for the evidence.
    guess = _best_effort(fields)
    return Forward(kind, spec, guess[0], guess[1], origin, option, valid=False)


def _best_effort(fields: list[tuple[str, bool]] | None) -> tuple[Address | None, Address | None]:
    if not fields:
        return None, None
    texts = [text for text, _ in fields]
    if len(texts) >= 3:
        return (Address(host=texts[-4] if len(texts) == 4 else None, port=ssh_port(texts[-3])),
                Address(host=texts[-2], port=ssh_port(texts[-1])))
    return Address(port=ssh_port(texts[0])), None


def tunnel_forward(spec: str, origin: str, option: str) -> Forward:
    """`-w local_tun[:remote_tun]`: tun device numbers or "any"."""
    local, _, remote = spec.partition(":")
    remote = remote or "any"
    valid = all(part == "any" or (part.isascii() and part.isdigit()) for part in (local, remote))
    return Forward(TUNNEL, spec, Address(device=local), Address(device=remote), origin, option,
                   valid=valid)


# --------------------------------------------------------------------------
# Destinations


def _percent_decode(text: str) -> str:
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def parse_ssh_uri(text: str) -> Destination | None:
    """`ssh://[user[;params]@]host[:port][/]`, or None if text is not one."""
    if not text[:6].lower() == "ssh://":
        return None
    rest = text[6:].split("/", 1)[0]
    user = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        user = _percent_decode(user.split(";", 1)[0]) or None
    host, port = split_host_port(rest)
    return Destination(host or None, user, ssh_port(port))


def parse_user_host_port(text: str) -> Destination:
    """`[user@]host[:port]` (a ProxyJump hop) or an ssh:// URI."""
    uri = parse_ssh_uri(text)
    if uri is not None:
        return uri
    user, sep, rest = text.rpartition("@")
    host, port = split_host_port(rest if sep else text)
    return Destination(host or None, (user or None) if sep else None, ssh_port(port))


def jump_hosts(value: str) -> tuple[Destination, ...]:
    """The hops of a ProxyJump value (`none`: no hops)."""
    if value.lower() == "none":
        return ()
    return tuple(parse_user_host_port(hop) for hop in value.split(",") if hop)


# --------------------------------------------------------------------------
# Config forwards (readconf.c syntax), shared by -o and ssh_config files


def config_forward(keyword: str, args: list[str], origin: str, option: str,
                   condition: str | None = None) -> Forward:
    """RemoteForward/LocalForward/DynamicForward arguments as ssh joins them."""
    kind = FORWARD_KEYWORDS[keyword]
    if kind == DYNAMIC or (kind == REMOTE and len(args) == 1):
        spec = args[0] if args else ""
        forward = parse_forward(kind, spec, origin, option, dynamic=True)
        if not forward.valid and kind == REMOTE:
            # `RemoteForward 8080:localhost:80` is refused by ssh (one argument
            # means SOCKS), but it says what was wanted: read it as -R would.
            guess = parse_forward(REMOTE, spec, origin, option)
            forward = Forward(REMOTE, spec, guess.listen, guess.target, origin, option, valid=False)
    else:
        spec = " ".join(args[:2])
        forward = parse_forward(kind, ":".join(args[:2]), origin, option, dynamic=False)
        forward = Forward(kind, spec, forward.listen, forward.target, origin, option,
                          valid=forward.valid and len(args) >= 2)
    if condition:
        forward = Forward(forward.kind, forward.spec, forward.listen, forward.target, origin,
                          option, forward.valid, condition)
    return forward

