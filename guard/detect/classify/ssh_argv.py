# SPDX-License-Identifier: Apache-2.0
"""SSH command lines: what an ssh, autossh, dbclient or plink argv asks for.

Each client is read the way it reads itself: OpenSSH's getopt string and
its second option pass after the destination, autossh's own -M and -f
before it hands the rest to ssh, dropbear's option loop, plink's
whole-word options. The result (SshInvocation) is the command line alone;
ssh.py applies the config files ssh would read and turns it into findings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from guard.detect.classify.launchers import as_argv, basename
from guard.detect.classify.ssh_config import (
    DYNAMIC, FORWARD_KEYWORDS, LOCAL, REMOTE, TUNNEL, split_config_line,
)
from guard.detect.classify.ssh_forward import (
    Destination, Forward, config_forward, forward_fields, jump_hosts, parse_forward,
    parse_ssh_uri, ssh_port,
)

__all__ = ["SSH_PROGRAMS", "OPENSSH_GETOPT", "SshInvocation", "parse_ssh_argv"]

#: Program basenames -> the client whose syntax they use. slogin is an old
#: name for ssh; dropbearmulti runs dbclient when asked by its first operand.
SSH_PROGRAMS = {"ssh": "ssh", "slogin": "ssh", "autossh": "autossh", "dbclient": "dbclient",
                "plink": "plink"}

#: OpenSSH's getopt string (ssh.c). `-P tag` takes an argument since 9.4;
#: before it, -P was an ignored flag, so a -P makes the parse ambiguous.
OPENSSH_GETOPT = "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:P:Q:R:S:TVw:W:XYy"


def _getopt(spec: str) -> tuple[frozenset[str], frozenset[str]]:
    """(letters without an argument, letters with one) of a getopt string."""
    flags, with_arg = set(), set()
    for i, letter in enumerate(spec):
        if letter == ":":
            continue
        (with_arg if spec[i + 1:i + 2] == ":" else flags).add(letter)
    return frozenset(flags), frozenset(with_arg)


_OPENSSH_FLAGS, _OPENSSH_WITH_ARG = _getopt(OPENSSH_GETOPT)


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
    masters: int = 0                               # -M given this many times
    control_path: str | None = None                # the last -S

    def first_user(self, user: str | None, option: str) -> None:
        if user:
            self.settings.append(("user", (user,), option))
            self.user = self.user or user

    def first_port(self, text: str, option: str) -> None:
        port = ssh_port(text)
        if port is None or port == 0:
            self.notes.append(f"{option} {text!r} is not a port; the client would refuse it")
            return
        self.settings.append(("port", (str(port),), option))
        self.port = self.port if self.port is not None else port

    def freeze(self) -> SshInvocation:
        # ssh.c sets -M and -S straight into its options: they beat any -o
        # and config line, so they come first (first value wins after them).
        # -M toggles: yes, then ask (-MM), then yes again.
        first: list[tuple[str, tuple[str, ...], str]] = []
        if self.masters:
            first.append(("controlmaster", ("yes" if self.masters % 2 else "ask",),
                          "-" + "M" * min(self.masters, 2)))
        if self.control_path is not None:
            first.append(("controlpath", (self.control_path,), "-S"))
        return SshInvocation(
            program=self.program, destination=Destination(self.host, self.user, self.port),
            forwards=tuple(self.forwards), config_files=tuple(self.config_files),
            options={key: tuple(values) for key, values in self.options.items()},
            settings=tuple(first + self.settings), control_command=self.control_command,
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
        builder.forwards.append(config_forward(keyword, args, "argv", f"-o {keyword}"))
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
            builder.jump_hosts = jump_hosts(args[0])
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
            builder.jump_hosts = jump_hosts(value)
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
        builder.control_path = value               # the last -S wins


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
            if letter == "M":
                builder.masters += 1
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
    port = ssh_port(port_text)
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
        fields = forward_fields(value) or []
        if forward.valid and (len(fields) < 3 or forward.target is None or forward.target.path):
            # dropbear only knows [listenaddr:]listenport:host:port
            forward = Forward(kind, value, forward.listen, forward.target, "argv", "-" + letter,
                              valid=False)
        builder.forwards.append(forward)
    elif letter == "p":
        builder.port = ssh_port(value)                # the last one wins in dropbear
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
            builder.port = ssh_port(args[0])


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
    return Destination(host or None, user or None, ssh_port(port) if port else None)


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
        builder.port = ssh_port(value)
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
            elif arg == "-share":
                # PuTTY connection sharing: the first plink is the upstream
                # (a master), later ones talk to it over a local socket
                builder.settings.append(("controlmaster", ("auto",), "-share"))
                builder.settings.append(("controlpath", ("(plink sharing socket)",), "-share"))
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
    name = basename(program or argv[0])
    args = argv[1:]
    if name in ("dropbearmulti", "dropbear") and args[:1] == ["dbclient"]:
        return "dbclient", args[1:]
    return SSH_PROGRAMS.get(name), args


def parse_ssh_argv(argv: Sequence[str], program: str | None = None) -> SshInvocation | None:
    """What an ssh, autossh, dbclient or plink command line asks for; None
    for any other program (scp, sftp, sshd, ssh-keygen, sshfs, ...).

    program overrides argv[0] (e.g. the basename of the file actually
    executed, since argv[0] is whatever the caller chose)."""
    words = as_argv(argv)
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
