# SPDX-License-Identifier: Apache-2.0
"""SSH clients: which connections and forwards an ssh command line asks for.

An agent that wants a way back into its sandbox needs little more than
`ssh -R`: the server then listens on its side, and every connection made to
that port arrives inside the sandbox. This module reads the command lines of
OpenSSH's ssh, autossh, dropbear's dbclient and PuTTY's plink the way each
program reads them (OpenSSH's getopt string and its second option pass after
the destination, dropbear's own loop, plink's whole-word options), follows
the ssh_config files OpenSSH would read for that destination (ssh_config.py,
inside budgets), and turns the result into findings:

- ssh_reverse_tunnel: a remote forward from argv, -o, a config file or
  `-O forward`; and, dialect "unread-config", config that ssh would read but
  a budget kept from being read (it may hold one);
- ssh_outbound: any other SSH connection, ranked higher on web ports, for
  SOCKS or tun forwarding, and to known tunnelling services;
- from the identification string an SSH client sends first on the wire:
  ssh_outbound naming the client software, or tunnel_tool for chisel.

Pure: config files are read only through a callback the caller binds to the
process's own root (/proc/PID/root), and hostile input never raises.
"""
from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from guard.detect.classify import UNREAD, Finding
from guard.detect.classify.ssh_config import (
    DYNAMIC, FORWARD_KEYWORDS, LOCAL, REMOTE, TUNNEL, ConfigForward, ConfigReader, ListDir,
    ReadFile, glob_match, read_ssh_config, split_config_line,
)
from guard.detect.classify.tunnels import chisel_banner, tunnel_name

__all__ = ["SSH_PROGRAMS", "Address", "Forward", "Destination", "SshInvocation", "EffectiveSsh",
           "parse_forward", "parse_ssh_uri", "parse_user_host_port", "parse_ssh_argv",
           "split_config_line", "read_ssh_config", "evaluate_ssh", "effective_forwards",
           "classify_effective", "classify_ssh", "classify_ssh_banner"]

FORWARD_KINDS = (REMOTE, LOCAL, DYNAMIC, TUNNEL)

#: Program basenames -> the client whose syntax they use. slogin is an old
#: name for ssh; dropbearmulti runs dbclient when asked by its first operand.
SSH_PROGRAMS = {"ssh": "ssh", "slogin": "ssh", "autossh": "autossh", "dbclient": "dbclient",
                "plink": "plink"}

#: OpenSSH's getopt string (ssh.c). `-P tag` takes an argument since 9.4;
#: before it, -P was an ignored flag, so a -P makes the parse ambiguous.
OPENSSH_GETOPT = "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:P:Q:R:S:TVw:W:XYy"

#: Ports that look like something else to an egress filter.
EVASIVE_PORTS = frozenset({80, 443, 53})
#: Remote forwards reported one finding each; a config of 20,000 of them
#: gives this many events, the last one counting the rest.
MAX_REVERSE_FINDINGS = 16


def _getopt(spec: str) -> tuple[frozenset[str], frozenset[str]]:
    """(letters without an argument, letters with one) of a getopt string."""
    flags, with_arg = set(), set()
    for i, letter in enumerate(spec):
        if letter == ":":
            continue
        (with_arg if spec[i + 1:i + 2] == ":" else flags).add(letter)
    return frozenset(flags), frozenset(with_arg)


_OPENSSH_FLAGS, _OPENSSH_WITH_ARG = _getopt(OPENSSH_GETOPT)


# --------------------------------------------------------------------------
# What an invocation asks for


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


@dataclass(frozen=True)
class SshInvocation:
    """What one ssh/autossh/dbclient/plink argv asks for, before any config file."""
    program: str                                   # ssh | autossh | dbclient | plink
    destination: Destination
    forwards: tuple[Forward, ...] = ()
    config_files: tuple[str, ...] = ()             # -F values, in order (ssh reads the last)
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # every -o, lower-cased keys
    settings: tuple[tuple[str, tuple[str, ...], str], ...] = ()  # (keyword, args, option) in argv order
    control_command: str | None = None             # -O check|forward|cancel|exit|stop|proxy
    no_connection: bool = False                    # -V, -G, -Q, help, or no destination
    jump_hosts: tuple[Destination, ...] = ()
    proxy_command: str | None = None
    stdio_forward: str | None = None               # -W host:port (dbclient -B, plink -nc)
    flags: frozenset[str] = frozenset()            # option letters/words without values
    command: tuple[str, ...] = ()
    protocol: str = "ssh"                          # plink can also speak telnet, raw, ...
    ambiguous: bool = False                        # client versions would read this argv differently
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------
# Forward specifications (OpenSSH misc.c parse_forward semantics)


#: What a2port() resolves through /etc/services; only names people use in forwards.
_SERVICES = {"ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "http": 80, "www": 80,
             "pop3": 110, "imap": 143, "https": 443, "imaps": 993, "pop3s": 995, "socks": 1080,
             "mysql": 3306, "postgresql": 5432, "http-alt": 8080}


def _port(text: str | None) -> int | None:
    if text is None:
        return None
    if text.isascii() and text.isdigit():
        return int(text) if len(text) <= 5 and int(text) <= 65535 else None
    return _SERVICES.get(text)


def _forward_fields(spec: str) -> list[tuple[str, bool]] | None:
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
        listen = Address(path=first) if first_path else Address(port=_port(first))
    elif n == 2:
        second, second_path = fields[1]
        if first_path and second_path:
            listen, target = Address(path=first), Address(path=second)
        elif second_path:
            listen, target = Address(port=_port(first)), Address(path=second)
        else:
            listen = Address(host=first, port=_port(second))
    elif n == 3:
        (second, _), (third, third_path) = fields[1], fields[2]
        if first_path:
            listen, target = Address(path=first), Address(host=second, port=_port(third))
        elif third_path:
            listen, target = Address(host=first, port=_port(second)), Address(path=third)
        else:
            listen, target = Address(port=_port(first)), Address(host=second, port=_port(third))
    else:
        (second, _), (third, _), (fourth, _) = fields[1], fields[2], fields[3]
        listen = Address(host=first, port=_port(second))
        target = Address(host=third, port=_port(fourth))
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
        return _tunnel_forward(spec, origin, option)
    fields = _forward_fields(spec)
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
        return (Address(host=texts[-4] if len(texts) == 4 else None, port=_port(texts[-3])),
                Address(host=texts[-2], port=_port(texts[-1])))
    return Address(port=_port(texts[0])), None


def _tunnel_forward(spec: str, origin: str, option: str) -> Forward:
    """`-w local_tun[:remote_tun]`: tun device numbers or "any"."""
    local, _, remote = spec.partition(":")
    remote = remote or "any"
    valid = all(part == "any" or (part.isascii() and part.isdigit()) for part in (local, remote))
    return Forward(TUNNEL, spec, Address(device=local), Address(device=remote), origin, option,
                   valid=valid)


# --------------------------------------------------------------------------
# Destinations


def _split_host_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        end = text.find("]")
        if end > 0:
            rest = text[end + 1:]
            return text[1:end], rest[1:] if rest.startswith(":") else None
    host, sep, port = text.rpartition(":")
    if sep and ":" not in host and host:
        return host, port
    return text, None


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
    host, port = _split_host_port(rest)
    return Destination(host or None, user, _port(port))


def parse_user_host_port(text: str) -> Destination:
    """`[user@]host[:port]` (a ProxyJump hop) or an ssh:// URI."""
    uri = parse_ssh_uri(text)
    if uri is not None:
        return uri
    user, sep, rest = text.rpartition("@")
    host, port = _split_host_port(rest if sep else text)
    return Destination(host or None, (user or None) if sep else None, _port(port))


def _jump_hosts(value: str) -> tuple[Destination, ...]:
    if value.lower() == "none":
        return ()
    return tuple(parse_user_host_port(hop) for hop in value.split(",") if hop)


# --------------------------------------------------------------------------
# Config forwards (readconf.c syntax), shared by -o and ssh_config files


def _config_forward(keyword: str, args: list[str], origin: str, option: str,
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


# --------------------------------------------------------------------------
# argv parsing: OpenSSH, autossh, dbclient, plink


@dataclass
class _Builder:
    program: str
    host: str | None = None
    user: str | None = None
    port: int | None = None
    forwards: list[Forward] = field(default_factory=list)
    config_files: list[str] = field(default_factory=list)
    options: dict[str, list[str]] = field(default_factory=dict)
    settings: list[tuple[str, tuple[str, ...], str]] = field(default_factory=list)
    control_command: str | None = None
    no_connection: bool = False
    jump_hosts: tuple[Destination, ...] = ()
    proxy_command: str | None = None
    stdio_forward: str | None = None
    flags: set[str] = field(default_factory=set)
    command: list[str] = field(default_factory=list)
    protocol: str = "ssh"
    ambiguous: bool = False
    notes: list[str] = field(default_factory=list)

    def first_user(self, user: str | None, option: str) -> None:
        if user:
            self.settings.append(("user", (user,), option))
            self.user = self.user or user

    def first_port(self, text: str, option: str) -> None:
        port = _port(text)
        if port is None or port == 0:
            self.notes.append(f"{option} {text!r} is not a port; the client would refuse it")
            return
        self.settings.append(("port", (str(port),), option))
        self.port = self.port if self.port is not None else port

    def freeze(self) -> SshInvocation:
        return SshInvocation(
            program=self.program, destination=Destination(self.host, self.user, self.port),
            forwards=tuple(self.forwards), config_files=tuple(self.config_files),
            options={key: tuple(values) for key, values in self.options.items()},
            settings=tuple(self.settings), control_command=self.control_command,
            no_connection=self.no_connection or self.host is None, jump_hosts=self.jump_hosts,
            proxy_command=self.proxy_command, stdio_forward=self.stdio_forward,
            flags=frozenset(self.flags), command=tuple(self.command), protocol=self.protocol,
            ambiguous=self.ambiguous, notes=tuple(self.notes))


def _openssh_config_option(builder: _Builder, line: str) -> None:
    """-o: one config line, applied as if first in the user's config."""
    keyword, args = split_config_line(line)
    if not keyword:
        return
    builder.options.setdefault(keyword, []).append(" ".join(args))
    if keyword in ("host", "match", "include"):
        builder.notes.append(f"-o {keyword} is refused on the command line")
        return
    if keyword in FORWARD_KEYWORDS:
        builder.forwards.append(_config_forward(keyword, args, "argv", f"-o {keyword}"))
        return
    if not args:
        return
    option = f"-o {keyword}"
    if keyword == "port":
        builder.first_port(args[0], option)
    elif keyword == "user":
        builder.first_user(args[0], option)
    else:
        builder.settings.append((keyword, tuple(args), option))
        if keyword == "proxyjump" and not builder.jump_hosts and builder.proxy_command is None:
            builder.jump_hosts = _jump_hosts(args[0])
        elif keyword == "proxycommand" and builder.proxy_command is None and not builder.jump_hosts:
            builder.proxy_command = " ".join(args)


def _openssh_option(builder: _Builder, letter: str, value: str) -> None:
    if letter in "RLD":
        kind = {"R": REMOTE, "L": LOCAL, "D": DYNAMIC}[letter]
        builder.forwards.append(parse_forward(kind, value, "argv", "-" + letter))
    elif letter == "w":
        builder.forwards.append(parse_forward(TUNNEL, value, "argv", "-w"))
        builder.settings.append(("tunnel", ("yes",), "-w"))
    elif letter == "o":
        _openssh_config_option(builder, value)
    elif letter == "F":
        builder.config_files.append(value)
    elif letter == "p":
        builder.first_port(value, "-p")
    elif letter == "l":
        builder.first_user(value, "-l")
    elif letter == "J":
        builder.settings.append(("proxyjump", (value,), "-J"))
        builder.settings.append(("proxycommand", ("none",), "-J"))
        if not builder.jump_hosts:
            builder.jump_hosts = _jump_hosts(value)
    elif letter == "W":
        builder.stdio_forward = builder.stdio_forward or value
    elif letter == "O":
        builder.control_command = builder.control_command or value
    elif letter == "Q":
        builder.no_connection = True               # prints the query and exits
    elif letter == "P":
        builder.settings.append(("tag", (value,), "-P"))
        builder.ambiguous = True
        builder.notes.append("-P takes a tag since OpenSSH 9.4 and was an ignored flag before:"
                             " older clients read its value as the destination")
    elif letter == "S":
        builder.settings.append(("controlpath", (value,), "-S"))


def _openssh_options(args: list[str], i: int, builder: _Builder) -> tuple[int, bool]:
    """One getopt pass from args[i] (BSD getopt: no permutation).
    Returns (index of the first operand, whether `--` ended the pass)."""
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1, True
        if len(arg) < 2 or not arg.startswith("-"):
            return i, False
        for j in range(1, len(arg)):
            letter = arg[j]
            if letter in _OPENSSH_WITH_ARG:
                if j + 1 < len(arg):
                    value = arg[j + 1:]
                elif i + 1 < len(args):
                    i += 1
                    value = args[i]
                else:
                    builder.notes.append(f"-{letter} lacks its argument: ssh stops with a usage error")
                    builder.no_connection = True
                    return len(args), False
                _openssh_option(builder, letter, value)
                break
            if letter not in _OPENSSH_FLAGS:
                # ssh itself stops on an unknown letter; a newer client may know
                # it, so it is read as a flag and noted rather than trusted.
                builder.notes.append(f"unknown option -{letter}")
            builder.flags.add(letter)
            if letter in "VG":
                builder.no_connection = True       # -V prints the version, -G the config
        i += 1
    return i, False


def _set_openssh_destination(builder: _Builder, text: str) -> None:
    uri = parse_ssh_uri(text)
    if uri is not None:
        builder.host = uri.host
        builder.first_user(uri.user, "ssh:// URI")
        if uri.port is not None:
            builder.first_port(str(uri.port), "ssh:// URI")
        return
    user, sep, host = text.rpartition("@")
    if sep:
        builder.first_user(user or None, "user@host")
        builder.host = host
    else:
        builder.host = text


def _parse_openssh(program: str, args: list[str], builder: _Builder | None = None) -> SshInvocation:
    """ssh.c: getopt, then the destination, then getopt again on what follows
    it (so `ssh host -R ...` works) unless `--` ended the first pass."""
    builder = builder or _Builder(program)
    i, terminated = _openssh_options(args, 0, builder)
    if i < len(args):
        _set_openssh_destination(builder, args[i])
        i += 1
        if not terminated and i < len(args):
            i, _ = _openssh_options(args, i, builder)
    builder.command = args[i:]
    return builder.freeze()


_AUTOSSH_MONITOR_HOST = "127.0.0.1"


def _autossh_to_ssh(args: list[str]) -> tuple[list[str], str | None, bool]:
    """The ssh argv autossh runs: without its own -M and -f, and without the
    first `--`. Returns (ssh args, -M value, whether -V asked for the version)."""
    out: list[str] = []
    monitor: str | None = None
    version = False
    saw_double_dash = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and not saw_double_dash:
            saw_double_dash = True
        elif not saw_double_dash and arg.startswith("-M"):
            if arg == "-M":
                i += 1
                monitor = args[i] if i < len(args) else None
            else:
                monitor = arg[2:]
        else:
            if not saw_double_dash and arg == "-V":
                version = True
            out.append(_strip_flag(arg, "f"))
        i += 1
    return [a for a in out if a], monitor, version


def _strip_flag(arg: str, letter: str) -> str:
    """Remove a flag letter from a bundle (`-fNR` -> `-NR`), stopping at the
    first letter that takes an argument; a bundle left as "-" disappears."""
    if not arg.startswith("-") or arg == "-" or arg.startswith("--"):
        return arg
    kept = ["-"]
    for j in range(1, len(arg)):
        if arg[j] in _OPENSSH_WITH_ARG:
            kept.append(arg[j:])
            break
        if arg[j] != letter:
            kept.append(arg[j])
    text = "".join(kept)
    return "" if text == "-" else text


def _autossh_monitor_forwards(monitor: str | None) -> list[Forward]:
    """autossh -M port[:echo] adds `-L port:127.0.0.1:echo|port` and, without
    an echo port, `-R port:127.0.0.1:port+1` for its connection test."""
    if not monitor:
        return []
    port_text, _, echo = monitor.partition(":")
    port = _port(port_text)
    if not port or port > 65534:
        return []
    option = f"autossh -M {monitor}"
    local = f"{port}:{_AUTOSSH_MONITOR_HOST}:{echo or port}"
    forwards = [parse_forward(LOCAL, local, "argv", option)]
    if not echo:
        remote = f"{port}:{_AUTOSSH_MONITOR_HOST}:{port + 1}"
        forwards.append(parse_forward(REMOTE, remote, "argv", option))
    return forwards


def _parse_autossh(args: list[str]) -> SshInvocation:
    ssh_args, monitor, version = _autossh_to_ssh(args)
    builder = _Builder("autossh")
    builder.forwards.extend(_autossh_monitor_forwards(monitor))
    builder.no_connection = version
    if monitor is None:
        builder.notes.append("no -M: autossh needs it unless AUTOSSH_PORT is set")
    return _parse_openssh("autossh", ssh_args, builder)


#: dropbear cli-runopts.c: letters taking a value (attached or next word), and
#: letters that print the version or help and exit (D and F among them).
_DBCLIENT_WITH_VALUE = frozenset("pliLRBJWKIcmbo")
_DBCLIENT_EXITS = frozenset("VFeDh")


def _dbclient_option(builder: _Builder, letter: str, value: str) -> None:
    if letter in "LR":
        kind = LOCAL if letter == "L" else REMOTE
        forward = parse_forward(kind, value, "argv", "-" + letter, dynamic=False)
        fields = _forward_fields(value) or []
        if forward.valid and (len(fields) < 3 or forward.target is None or forward.target.path):
            # dropbear only knows [listenaddr:]listenport:host:port
            forward = Forward(kind, value, forward.listen, forward.target, "argv", "-" + letter,
                              valid=False)
        builder.forwards.append(forward)
    elif letter == "p":
        builder.port = _port(value)                # the last one wins in dropbear
    elif letter == "l":
        builder.user = value
    elif letter == "B":
        builder.stdio_forward = value
    elif letter == "J":
        builder.proxy_command = value
    elif letter == "o":
        keyword, args = split_config_line(value)
        if keyword:
            builder.options.setdefault(keyword, []).append(" ".join(args))
        if keyword == "port" and args:
            builder.port = _port(args[0])


def _set_dbclient_destination(builder: _Builder, text: str) -> None:
    """`[user@]host[^port|/port]`, comma-separated hops: the last is the destination."""
    hops = text.split(",")
    builder.jump_hosts = tuple(_dbclient_hop(hop) for hop in hops[:-1] if hop)
    final = _dbclient_hop(hops[-1])
    builder.host = final.host
    builder.user = final.user or builder.user
    if final.port is not None:
        builder.port = final.port


def _dbclient_hop(text: str) -> Destination:
    user, sep, host = text.partition("@")
    if not sep:
        user, host = "", text
    separator = "^" if "^" in host else "/"
    host, _, port = host.partition(separator)
    return Destination(host or None, user or None, _port(port) if port else None)


def _parse_dbclient(args: list[str]) -> SshInvocation:
    """dropbear: flags may follow the destination; the second operand starts the command."""
    builder = _Builder("dbclient")
    host_arg: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            if host_arg is not None:
                break
            host_arg = arg
            i += 1
            continue
        pending = None
        j = 1
        while j < len(arg):
            letter = arg[j]
            j += 1
            if letter in _DBCLIENT_WITH_VALUE:
                pending = letter
                break
            if letter in _DBCLIENT_EXITS:
                builder.no_connection = True
            builder.flags.add(letter)
        if pending is not None:
            if j < len(arg):
                value = arg[j:]
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                builder.notes.append(f"-{pending} lacks its argument: dbclient exits")
                builder.no_connection = True
                break
            _dbclient_option(builder, pending, value)
        i += 1
    if host_arg is not None:
        _set_dbclient_destination(builder, host_arg)
    builder.command = args[i:]
    return builder.freeze()


_PLINK_WITH_VALUE = frozenset({"-load", "-P", "-l", "-L", "-R", "-D", "-m", "-pw", "-pwfile", "-i",
                               "-cert", "-hostkey", "-sercfg", "-sshlog", "-sshrawlog",
                               "-proxycmd", "-nc", "-sessionlog", "-logfile"})
_PLINK_EXITS = frozenset({"-V", "--version", "-pgpfp", "-h", "--help", "-shareexists"})
_PLINK_OTHER_PROTOCOLS = {"-telnet": "telnet", "-rlogin": "rlogin", "-raw": "raw",
                          "-serial": "serial", "-supdup": "supdup"}


def _plink_option(builder: _Builder, name: str, value: str) -> None:
    if name in ("-L", "-R", "-D"):
        kind = {"-L": LOCAL, "-R": REMOTE, "-D": DYNAMIC}[name]
        builder.forwards.append(parse_forward(kind, value, "argv", name,
                                              dynamic=kind == DYNAMIC))
    elif name == "-P":
        builder.port = _port(value)
    elif name == "-l":
        builder.user = value
    elif name == "-nc":
        builder.stdio_forward = value
    elif name == "-proxycmd":
        builder.proxy_command = value
    elif name == "-load":
        builder.notes.append(f"saved session {value!r} not read: it may add forwards or a host")


def _parse_plink(args: list[str]) -> SshInvocation:
    """plink: whole-word options anywhere before the command; the first
    operand is the host, the next one starts the command."""
    builder = _Builder("plink")
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-"):
            if arg in _PLINK_WITH_VALUE:
                if i + 1 >= len(args):
                    builder.notes.append(f"{arg} lacks its argument: plink exits")
                    builder.no_connection = True
                    break
                _plink_option(builder, arg, args[i + 1])
                i += 2
                continue
            if arg in _PLINK_EXITS:
                builder.no_connection = True
            elif arg in _PLINK_OTHER_PROTOCOLS:
                builder.protocol = _PLINK_OTHER_PROTOCOLS[arg]
            elif arg in ("-ssh", "-ssh-connection"):
                builder.protocol = "ssh"
            builder.flags.add(arg)
            i += 1
            continue
        if builder.host is not None:
            break
        user, sep, host = arg.rpartition("@")
        if sep:
            builder.user = builder.user or user or None
        else:
            host = arg
        if host.count(":") == 1:
            host = host.split(":", 1)[0]           # plink drops a `:port` suffix unused
        builder.host = host or None
        i += 1
    builder.command = args[i:]
    return builder.freeze()


def _program_name(argv: list[str], program: str | None) -> tuple[str | None, list[str]]:
    """(client kind, its arguments) from the program name (argv[0] unless given)."""
    name = posixpath.basename((program or argv[0]).rstrip("/"))
    args = argv[1:]
    if name in ("dropbearmulti", "dropbear") and args[:1] == ["dbclient"]:
        return "dbclient", args[1:]
    return SSH_PROGRAMS.get(name), args


def parse_ssh_argv(argv: Sequence[str], program: str | None = None) -> SshInvocation | None:
    """What an ssh, autossh, dbclient or plink command line asks for; None
    for any other program (scp, sftp, sshd, ssh-keygen, sshfs, ...).

    program overrides argv[0] (e.g. the basename of the file actually
    executed, since argv[0] is whatever the caller chose)."""
    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence):
        return None
    words = [item for item in argv if isinstance(item, str)]
    if not words or (program is not None and not isinstance(program, str)):
        return None
    kind, args = _program_name(words, program)
    if kind == "ssh":
        return _parse_openssh("ssh", args)
    if kind == "autossh":
        return _parse_autossh(args)
    if kind == "dbclient":
        return _parse_dbclient(args)
    if kind == "plink":
        return _parse_plink(args)
    return None


# --------------------------------------------------------------------------
# Everything ssh would do for one invocation


@dataclass(frozen=True)
class EffectiveSsh:
    """An invocation with its config files applied."""
    invocation: SshInvocation
    host: str | None                   # the name ssh resolves (Hostname applied)
    port: int
    user: str | None
    forwards: tuple[Forward, ...]
    options: Mapping[str, tuple[str, ...]]
    jump_hosts: tuple[Destination, ...] = ()
    proxy_command: str | None = None
    forwards_cleared: bool = False     # ClearAllForwardings (or -W without it set)
    files_read: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    unread: tuple[str, ...] = ()       # what ssh would read but a budget kept from being read


def _config_files(invocation: SshInvocation, home: str, cwd: str | None) -> list[tuple[str, bool, bool]]:
    """(path, is a user config, must exist) in the order ssh reads them."""
    if invocation.config_files:
        path = invocation.config_files[-1]
        if path == "none":
            return []
        if not path.startswith("/") and cwd:
            path = posixpath.join(cwd, path)
        return [(path, True, True)]
    user_config = (home.rstrip("/") if home else "") + "/.ssh/config"
    return [(user_config, True, False), ("/etc/ssh/ssh_config", False, False)]


def _argv_only(invocation: SshInvocation) -> EffectiveSsh:
    destination = invocation.destination
    return EffectiveSsh(invocation, destination.host, destination.port or 22, destination.user,
                        invocation.forwards, invocation.options, invocation.jump_hosts,
                        invocation.proxy_command, False, (), invocation.notes)


def evaluate_ssh(invocation: SshInvocation, read_file: ReadFile | None = None, home: str = "/root",
                 uid_user: str = "root", *, list_dir: ListDir | None = None,
                 cwd: str | None = None) -> EffectiveSsh:
    """Apply the config files ssh would read to an invocation: -F FILE if
    given (relative to cwd when known), else ~/.ssh/config then
    /etc/ssh/ssh_config. Only OpenSSH reads them; dbclient and plink get
    their argv. Without read_file only the command line counts."""
    if invocation.program not in ("ssh", "autossh"):
        return _argv_only(invocation)
    host_arg = invocation.destination.host or ""
    reader = ConfigReader(host_arg, uid_user or "", home or "", read_file, list_dir)
    for keyword, args, option in invocation.settings:
        reader.obtain(keyword, args, "argv", option)
    notes = list(invocation.notes)
    if read_file is not None:
        for path, user_config, required in _config_files(invocation, home, cwd):
            if not reader.read(path, user_config) and required:
                notes.append(f"-F {path} cannot be read: ssh refuses to start")
    notes += reader.notes
    forwards = list(invocation.forwards) + [_from_config(line) for line in reader.forwards]
    forwards += _config_tunnel(invocation, reader)
    jump_hosts, proxy_command = _proxying(reader)
    hostname = reader.hostname().lower() or None
    clear = (reader.value("clearallforwardings") or "").lower()
    cleared = clear in ("yes", "true") or (not clear and invocation.stdio_forward is not None)
    return EffectiveSsh(invocation, hostname, _port(reader.value("port")) or 22,
                        reader.value("user") or uid_user or None, tuple(forwards),
                        {key: tuple(values) for key, values in reader.options().items()},
                        jump_hosts, proxy_command, cleared, tuple(reader.files_read), tuple(notes),
                        tuple(reader.unread))


def _from_config(line: ConfigForward) -> Forward:
    return _config_forward(line.keyword, list(line.args), line.origin, line.option, line.condition)


def _config_tunnel(invocation: SshInvocation, reader: ConfigReader) -> list[Forward]:
    """`Tunnel yes|point-to-point|ethernet` from a config file (-w is already a forward)."""
    if any(forward.kind == TUNNEL for forward in invocation.forwards):
        return []
    found = reader.first.get("tunnel")
    if found is None or found[0][0].lower() == "no":
        return []
    device = reader.value("tunneldevice") or "any:any"
    return [_tunnel_forward(device, found[1], "Tunnel")]


def _proxying(reader: ConfigReader) -> tuple[tuple[Destination, ...], str | None]:
    """ProxyJump and ProxyCommand exclude each other: the first one set wins."""
    jump = reader.value("proxyjump")
    command = reader.value("proxycommand")
    if jump is not None and command is not None:
        if reader.sequence["proxyjump"] < reader.sequence["proxycommand"]:
            command = None
        else:
            jump = None
    jumps = _jump_hosts(jump) if jump else ()
    if command is not None and command.lower() == "none":
        command = None
    return jumps, command


def effective_forwards(invocation: SshInvocation, read_file: ReadFile | None, home: str,
                       uid_user: str, *, list_dir: ListDir | None = None,
                       cwd: str | None = None) -> list[Forward]:
    """Every forward the invocation would request, from argv and from the
    config files ssh would read, each with its origin ("argv" or "file:line")."""
    return list(evaluate_ssh(invocation, read_file, home, uid_user, list_dir=list_dir,
                             cwd=cwd).forwards)


# --------------------------------------------------------------------------
# Findings


@dataclass(frozen=True)
class _Allowance:
    destination: bool                  # destination and every jump host are allowlisted
    kinds: frozenset[str]              # forward kinds the matching entry permits
    reason: str | None = None          # why an otherwise matching entry does not count


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes, int)):
        return [value]
    return list(value) if isinstance(value, Iterable) else []


def _entry_matches(entry: Any, host: str | None, port: int) -> bool:
    """An allowlist entry: {"host": pattern} or {"cidr": net}, optional "ports"."""
    if not isinstance(entry, Mapping) or not host:
        return False
    if "ports" in entry:
        try:
            ports = {int(p) for p in _as_list(entry["ports"])}
        except (TypeError, ValueError):
            return False
        if port not in ports:
            return False
    pattern, cidr = entry.get("host"), entry.get("cidr")
    if isinstance(pattern, str) and pattern:
        return glob_match(host.lower(), pattern.lower())
    if isinstance(cidr, str) and cidr:
        # Names are not resolved here: a CIDR entry matches address literals only.
        try:
            network = ipaddress.ip_network(cidr, strict=False)
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return address.version == network.version and address in network
    return False


def _allowance(effective: EffectiveSsh, allowlist: Any) -> _Allowance | None:
    entries = _as_list(allowlist) if not isinstance(allowlist, Mapping) else [allowlist]
    entry = next((e for e in entries if _entry_matches(e, effective.host, effective.port)), None)
    if entry is None:
        return None
    kinds = frozenset(str(kind).lower() for kind in _as_list(entry.get("forwards"))
                      if isinstance(kind, str))
    reason = None
    if effective.proxy_command:
        reason = "ProxyCommand decides where ssh really connects"
    elif effective.invocation.ambiguous:
        reason = "clients of different versions read this argv differently"
    else:
        for hop in effective.jump_hosts:
            if not any(_entry_matches(e, hop.host, hop.port or 22) for e in entries):
                reason = f"jump host {hop.host} is not allowlisted"
                break
    return _Allowance(reason is None, kinds, reason)


def _service(host: str | None) -> str | None:
    entry = tunnel_name(host) if host else None
    return entry.dialect if entry is not None else None


def _destination_evidence(effective: EffectiveSsh) -> dict[str, Any]:
    out: dict[str, Any] = {"host": effective.host, "port": effective.port}
    if effective.user:
        out["user"] = effective.user
    alias = effective.invocation.destination.host
    if alias and effective.host and alias.lower() != effective.host:
        out["alias"] = alias
    return out


def _common_evidence(effective: EffectiveSsh) -> dict[str, Any]:
    invocation = effective.invocation
    out: dict[str, Any] = {"program": invocation.program, "destination": _destination_evidence(effective)}
    if effective.jump_hosts:
        out["jump_hosts"] = [hop.as_dict() for hop in effective.jump_hosts]
    if effective.proxy_command:
        out["proxy_command"] = effective.proxy_command[:256]
    if invocation.control_command:
        out["control_command"] = invocation.control_command
    if invocation.stdio_forward:
        out["stdio_forward"] = invocation.stdio_forward
    service = _service(effective.host)
    if service:
        out["service"] = service
    if effective.files_read:
        out["config_files"] = list(effective.files_read)
    if effective.notes:
        out["notes"] = list(effective.notes)[:16]
    return out


def _reverse_finding(effective: EffectiveSsh, forward: Forward,
                     allowance: _Allowance | None) -> Finding:
    evidence = _common_evidence(effective)
    evidence.update({"forward": forward.spec, "origin": forward.origin})
    evidence.update({key: value for key, value in forward.evidence().items()
                     if key not in ("kind", "spec", "origin")})
    downgrades = []
    if forward.condition:
        downgrades.append("behind an unevaluated Match exec")
    if not forward.valid:
        downgrades.append("the client would refuse this spec")
    if effective.forwards_cleared:
        evidence["cleared_by"] = "ClearAllForwardings"
        downgrades.append("ClearAllForwardings drops it")
    if forward.option.startswith("autossh -M"):
        evidence["purpose"] = "autossh connection monitor"
        downgrades.append("autossh's own echo loop")
    if allowance is not None and allowance.destination:
        evidence["destination_allowlisted"] = True
    if downgrades:
        evidence["why_not_high"] = downgrades
    return Finding(type="ssh_reverse_tunnel", confidence="medium" if downgrades else "high",
                   dialect=effective.invocation.program, evidence=evidence)


def _outbound_finding(effective: EffectiveSsh, allowance: _Allowance | None) -> Finding:
    evidence = _common_evidence(effective)
    forwards = [f for f in effective.forwards if not f.condition]
    if forwards:
        evidence["forwards"] = [forward.evidence() for forward in forwards[:32]]
    kinds_used = {forward.kind for forward in forwards}
    allowed = bool(allowance and allowance.destination and kinds_used <= allowance.kinds)
    evidence["allowlisted"] = allowed
    if allowance is not None and not allowed:
        if allowance.reason:
            evidence["not_allowlisted_because"] = allowance.reason
        elif kinds_used - allowance.kinds:
            evidence["forwards_not_allowlisted"] = sorted(kinds_used - allowance.kinds)
    if allowed:
        return Finding(type="ssh_outbound", confidence="low", dialect=effective.invocation.program,
                       evidence=evidence)
    if effective.forwards_cleared and forwards:
        evidence["cleared_by"] = "ClearAllForwardings"
        kinds_used = set()                         # none of them will be requested
    reasons = []
    if effective.port in EVASIVE_PORTS:
        reasons.append(f"port {effective.port}")
    if "service" in evidence:
        reasons.append(f"tunnelling service {evidence['service']}")
    if DYNAMIC in kinds_used:
        reasons.append("SOCKS (dynamic) forward: traffic leaves through the server")
    if TUNNEL in kinds_used:
        reasons.append("tun device forwarding: an IP link in both directions")
    if reasons:
        evidence["reasons"] = reasons
    return Finding(type="ssh_outbound", confidence="high" if reasons else "medium",
                   dialect=effective.invocation.program, evidence=evidence)


def classify_effective(effective: EffectiveSsh, allowlist: Any = ()) -> list[Finding]:
    """Findings for an evaluated invocation (see classify_ssh)."""
    invocation = effective.invocation
    if invocation.no_connection or invocation.protocol != "ssh":
        return []
    if invocation.control_command not in (None, "forward"):
        return []       # check/exit/stop/cancel/proxy talk to an existing master only
    allowance = _allowance(effective, allowlist)
    remote_allowed = bool(allowance and allowance.destination and REMOTE in allowance.kinds)
    remote = [forward for forward in effective.forwards
              if forward.kind == REMOTE and not remote_allowed]
    findings = [_reverse_finding(effective, forward, allowance)
                for forward in remote[:MAX_REVERSE_FINDINGS]]
    if len(remote) > MAX_REVERSE_FINDINGS:
        last = findings[-1]
        findings[-1] = Finding(last.type, last.confidence, last.dialect, {
            **last.evidence, "forwards_not_listed": len(remote) - MAX_REVERSE_FINDINGS})
    findings = findings or [_outbound_finding(effective, allowance)]
    if effective.unread:
        findings.append(_unread_finding(effective))
    return findings


def _unread_finding(effective: EffectiveSsh) -> Finding:
    """Config that ssh would read and the reader did not (a budget ran out):
    it may hold a RemoteForward, so it counts as one, at high confidence, and
    whatever was read stays reported beside it. No allowlist covers it: the
    unread part may as well change the destination."""
    evidence = _common_evidence(effective)
    evidence["note"] = effective.unread[0]
    evidence["unread"] = list(effective.unread)[:16]
    return Finding(type="ssh_reverse_tunnel", confidence="high", dialect=UNREAD, evidence=evidence)


def classify_ssh(argv: Sequence[str], read_file: ReadFile | None = None, home: str = "/root",
                 user: str = "root", allowlist: Any = (), *, list_dir: ListDir | None = None,
                 cwd: str | None = None, program: str | None = None) -> list[Finding]:
    """Findings for an ssh/autossh/dbclient/plink exec.

    ssh_reverse_tunnel (high) for each remote forward, from argv, -o, the
    config files (read through read_file; forwards behind a Match exec,
    refused specs, ClearAllForwardings and autossh's monitor forward are
    medium); otherwise one ssh_outbound: medium, high on ports 80/443/53, to
    a tunnelling service (serveo, localhost.run, pinggy, packetriot) or with
    SOCKS/tun forwarding, low when allowlisted.

    allowlist: mappings {"host": pattern} or {"cidr": net} with optional
    "ports" and "forwards" (local, dynamic, remote, tunnel). An allowlisted
    destination gives ssh_outbound with evidence allowlisted true, and no
    ssh_reverse_tunnel if its entry lists "remote". Nothing for -V, -G, -Q,
    -O check/exit/stop/cancel, non-SSH plink protocols, and every other
    program (scp, sftp, sshd, ssh-keygen, ssh-agent, sshfs: their ssh child
    is an exec of its own and is classified on its own argv)."""
    invocation = parse_ssh_argv(argv, program=program)
    if invocation is None:
        return []
    effective = evaluate_ssh(invocation, read_file, home, user, list_dir=list_dir, cwd=cwd)
    return classify_effective(effective, allowlist)


# --------------------------------------------------------------------------
# The identification string on the wire (RFC 4253, 4.2)


_BANNER = re.compile(rb"SSH-([0-9]+\.[0-9]+)-([\x21-\x7e]+)(?: ([\x20-\x7e]*))?")

#: Software-version prefixes -> client family (case-insensitive).
_SOFTWARE_FAMILIES = (
    ("openssh", "openssh"), ("dropbear", "dropbear"), ("putty", "putty"), ("plink", "putty"),
    ("libssh2", "libssh2"), ("libssh", "libssh"), ("paramiko", "paramiko"),
    ("asyncssh", "asyncssh"), ("jsch", "jsch"), ("sshj", "sshj"), ("winscp", "winscp"),
    ("russh", "russh"), ("twisted", "twisted"), ("apache-sshd", "apache-sshd"),
    ("sshd-core", "apache-sshd"), ("erlang", "erlang"), ("ssh2js", "ssh2js"),
    ("mobaxterm", "mobaxterm"), ("bitvise", "bitvise"), ("go", "go"),
)


def _software_family(software: str) -> str:
    lowered = software.lower()
    if lowered == "go" or lowered.startswith(("go-", "go_")):
        return "go"                    # golang.org/x/crypto/ssh sends plain "SSH-2.0-Go"
    for prefix, family in _SOFTWARE_FAMILIES:
        if prefix != "go" and lowered.startswith(prefix):
            return family
    return "other"


def classify_ssh_banner(payload: bytes, dst_port: int | None) -> list[Finding]:
    """An SSH identification string at the start of an outbound flow.

    `SSH-2.0-software comments CRLF` (also 1.99 and 1.5) gives ssh_outbound
    naming the software: medium on port 22 or an unknown port, high on any
    other port (SSH on 443 slips through web-only egress rules). chisel's
    `SSH-chisel-v3-client` gives tunnel_tool, dialect chisel, high."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        return []
    data = bytes(payload[:512])
    chisel = chisel_banner(data)
    if chisel is not None:
        return [chisel]
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if len(line) > 253:                           # 255 with CR LF
        return []
    match = _BANNER.fullmatch(line)
    if match is None:
        return []
    software = match.group(2).decode("ascii")
    port = dst_port if isinstance(dst_port, int) and not isinstance(dst_port, bool) else None
    evidence: dict[str, Any] = {"banner": line.decode("ascii"), "software": software,
                                "protocol": match.group(1).decode("ascii")}
    if match.group(3):
        evidence["comments"] = match.group(3).decode("ascii")
    if port is not None:
        evidence["port"] = port
    confidence = "medium" if port in (None, 22) else "high"
    return [Finding(type="ssh_outbound", confidence=confidence, dialect=_software_family(software),
                    evidence=evidence)]
