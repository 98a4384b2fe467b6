# SPDX-License-Identifier: Apache-2.0
"""SSH clients: which connections and forwards an ssh command line asks for.

An agent that wants a way back into its sandbox needs little more than
`ssh -R`: the server then listens on its side, and every connection made to
that port arrives inside the sandbox. The command lines of OpenSSH's ssh,
autossh, dropbear's dbclient and PuTTY's plink are read as each program
reads them (ssh_argv.py, with the forward and destination syntax of
ssh_forward.py); this module follows the ssh_config files OpenSSH would
read for that destination (ssh_config.py, inside budgets), and turns the
result into findings:

- ssh_reverse_tunnel: a remote forward from argv, -o, a config file or
  `-O forward`; dialect "unread-config", config that ssh would read but the
  guard could not (a budget ran out, `-F /dev/stdin`, a FIFO: it may hold
  one); and the standing ways to add one later: a control master (dialect
  "control-master", any process that reaches its socket can ask it for a
  forward), `-O proxy` ("mux-proxy") and the `~C` escape command line
  ("escape-commandline");
- ssh_outbound: any other SSH connection, ranked higher on web ports, for
  SOCKS or tun forwarding, and to known tunnelling services;
- from the identification string an SSH client sends first on the wire:
  ssh_outbound naming the client software, or tunnel_tool for chisel.

Every finding also says when refusing the process's connects cannot stop
it (evidence BLOCK_BYPASS, see block_bypass): the connection or the request
would travel over a control socket, a ProxyCommand or a ProxyJump hop, or
through configuration the guard could not read. A policy's `block` then
kills the process instead (detector.decide).

Pure: config files are read only through a callback the caller binds to the
process's own root (/proc/PID/root), and hostile input never raises.
"""
from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from guard.detect.classify import BLOCK_BYPASS, UNREAD, Finding, short
from guard.detect.classify.ssh_argv import SshInvocation, parse_ssh_argv
from guard.detect.classify.ssh_config import (
    DYNAMIC, REMOTE, TUNNEL, ConfigForward, ConfigReader, ListDir, ReadFile, glob_match,
    is_stream_path,
)
from guard.detect.classify.ssh_forward import (
    Destination, Forward, config_forward, jump_hosts, ssh_port, tunnel_forward,
)
from guard.detect.classify.tunnels import chisel_banner, tunnel_name

__all__ = ["EffectiveSsh", "evaluate_ssh", "effective_forwards", "classify_effective",
           "classify_ssh", "classify_ssh_banner", "block_bypass"]

#: Ports that look like something else to an egress filter.
EVASIVE_PORTS = frozenset({80, 443, 53})
#: Remote forwards reported one finding each; a config of 20,000 of them
#: gives this many events, the last one counting the rest.
MAX_REVERSE_FINDINGS = 16
#: ControlMaster values as readconf.c reads them.
_CONTROL_MASTER = {"yes": "yes", "true": "yes", "no": "no", "false": "no", "ask": "ask",
                   "auto": "auto", "autoask": "autoask"}


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
    unread: tuple[str, ...] = ()       # what ssh would read but the guard could not
    control_path: str | None = None    # ControlPath (-S), None when unset or "none"
    control_master: str = "no"         # yes | no | ask | auto | autoask
    escape_commandline: bool = False   # EnableEscapeCommandline, escapes not off
    #: carrier keywords behind an unevaluated Match exec: (keyword, args, origin, condition)
    conditional: tuple[tuple[str, tuple[str, ...], str, str | None], ...] = ()


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
    first: dict[str, str] = {}
    for keyword, args, _option in invocation.settings:
        first.setdefault(keyword, " ".join(args))
    return EffectiveSsh(invocation, destination.host, destination.port or 22, destination.user,
                        invocation.forwards, invocation.options, invocation.jump_hosts,
                        invocation.proxy_command, False, (), invocation.notes,
                        control_path=_control_path(first.get("controlpath")),
                        control_master=_CONTROL_MASTER.get(
                            (first.get("controlmaster") or "no").lower(), "no"))


def _control_path(value: str | None) -> str | None:
    return None if value is None or value.lower() == "none" else value


def _escape_commandline(reader: ConfigReader) -> bool:
    """`~C` can add forwards to a running session (off by default since
    OpenSSH 9.2; older clients allow it whenever escapes work)."""
    enabled = (reader.value("enableescapecommandline") or "").lower() in ("yes", "true")
    return enabled and (reader.value("escapechar") or "").lower() != "none"


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
    unread: list[str] = []
    if read_file is not None:
        for path, user_config, required in _config_files(invocation, home, cwd):
            if not reader.read(path, user_config) and required:
                notes.append(f"-F {path} cannot be read")
                if not is_stream_path(path) and not any(u.startswith(path + ":")
                                                        for u in reader.unread):
                    # ssh stops on a missing -F, unless the file appears while
                    # ssh is held: nothing about it is known, so it is unread
                    unread.append(f"-F {path}: could not be read (missing when the guard"
                                  " looked: ssh reads it if it appears before ssh starts)")
    notes += reader.notes
    forwards = list(invocation.forwards) + [_from_config(line) for line in reader.forwards]
    forwards += _config_tunnel(invocation, reader)
    hops, proxy_command = _proxying(reader)
    hostname = reader.hostname().lower() or None
    clear = (reader.value("clearallforwardings") or "").lower()
    cleared = clear in ("yes", "true") or (not clear and invocation.stdio_forward is not None)
    return EffectiveSsh(invocation, hostname, ssh_port(reader.value("port")) or 22,
                        reader.value("user") or uid_user or None, tuple(forwards),
                        {key: tuple(values) for key, values in reader.options().items()},
                        hops, proxy_command, cleared, tuple(reader.files_read), tuple(notes),
                        tuple(reader.unread + unread),
                        control_path=_control_path(reader.value("controlpath")),
                        control_master=_CONTROL_MASTER.get(
                            (reader.value("controlmaster") or "no").lower(), "no"),
                        escape_commandline=_escape_commandline(reader),
                        conditional=tuple(reader.conditional))


def _from_config(line: ConfigForward) -> Forward:
    return config_forward(line.keyword, list(line.args), line.origin, line.option, line.condition)


def _config_tunnel(invocation: SshInvocation, reader: ConfigReader) -> list[Forward]:
    """`Tunnel yes|point-to-point|ethernet` from a config file (-w is already a forward)."""
    if any(forward.kind == TUNNEL for forward in invocation.forwards):
        return []
    found = reader.first.get("tunnel")
    if found is None or found[0][0].lower() == "no":
        return []
    device = reader.value("tunneldevice") or "any:any"
    return [tunnel_forward(device, found[1], "Tunnel")]


def _proxying(reader: ConfigReader) -> tuple[tuple[Destination, ...], str | None]:
    """ProxyJump and ProxyCommand exclude each other: the first one set wins."""
    jump = reader.value("proxyjump")
    command = reader.value("proxycommand")
    if jump is not None and command is not None:
        if reader.sequence["proxyjump"] < reader.sequence["proxycommand"]:
            command = None
        else:
            jump = None
    jumps = jump_hosts(jump) if jump else ()
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
    if effective.control_path is not None:
        out["control_path"] = short(effective.control_path, 256)
        out["control_master"] = effective.control_master
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
    if invocation.control_command not in (None, "forward", "proxy"):
        return []       # check/exit/stop/cancel only talk to an existing master
    allowance = _allowance(effective, allowlist)
    remote_allowed = bool(allowance and allowance.destination and REMOTE in allowance.kinds)
    remote: list[Forward] = []
    if invocation.control_command == "proxy":
        findings = [] if effective.control_path is None else \
            _capability_findings(effective, allowance, remote_allowed)
    else:
        remote = [forward for forward in effective.forwards
                  if forward.kind == REMOTE and not remote_allowed]
        findings = [_reverse_finding(effective, forward, allowance)
                    for forward in remote[:MAX_REVERSE_FINDINGS]]
        if len(remote) > MAX_REVERSE_FINDINGS:
            last = findings[-1]
            findings[-1] = Finding(last.type, last.confidence, last.dialect, {
                **last.evidence, "forwards_not_listed": len(remote) - MAX_REVERSE_FINDINGS})
        if not findings:
            findings = [_outbound_finding(effective, allowance)]
            findings += _capability_findings(effective, allowance, remote_allowed)
    if effective.unread:
        findings.append(_unread_finding(effective))
    bypass = block_bypass(effective, bool(remote) or bool(effective.unread))
    if bypass:
        findings = [Finding(f.type, f.confidence, f.dialect, {**f.evidence, BLOCK_BYPASS: bypass})
                    for f in findings]
    return findings


# --------------------------------------------------------------------------
# What refusing the process's connects cannot stop


def block_bypass(effective: EffectiveSsh, reverse: bool) -> list[str]:
    """Why refusing this process's connects (and its children's: the kernel
    hands the refusal down at fork) cannot stop what it would do: its session
    or its requests would travel over a Unix socket to a master, or its
    connection would be made by a program it runs (ProxyCommand, ProxyJump),
    which may reach the server through a relay it never connects to.
    reverse: a remote forward was found (or config that may hold one was not
    read), so a master is a bypass too: it would serve the forward to its
    own and to any mux client. Empty: ssh makes its connection itself.

    -W (stdio forwarding) is no bypass of its own: ssh connects to the server
    itself and -W clears the forwards unless ClearAllForwardings=no; it
    travels over a control socket or a ProxyCommand only when those say so."""
    invocation = effective.invocation
    reasons: list[str] = []
    path, master = effective.control_path, effective.control_master
    if path is not None and invocation.control_command == "forward":
        reasons.append(f"the forward would travel over the control socket {short(path, 120)}"
                       " to a master that is already connected")
    elif path is not None and invocation.control_command == "proxy":
        reasons.append(f"-O proxy hands its standard input to the master at {short(path, 120)}:"
                       " whatever drives it uses that master's connection")
    elif path is not None and master in ("no", "auto", "autoask"):
        reasons.append(f"with ControlPath {short(path, 120)} ssh first tries a running master:"
                       " its session and forwards would travel over that control socket")
    if reverse and path is not None and master != "no" and invocation.control_command is None:
        reasons.append(f"as a control master (ControlMaster {master}) it would also carry the"
                       f" forwards any process asks for over {short(path, 120)}")
    if effective.proxy_command:
        reasons.append(f"ProxyCommand `{short(effective.proxy_command, 120)}` makes the connection:"
                       " what it runs may reach the server through a relay or an inherited"
                       " descriptor, not a connect of its own")
    if effective.jump_hosts:
        reasons.append("ProxyJump runs the hop's client through the user's shell and PATH"
                       " (`ssh -W ...`): its connection is made by whatever that names")
    for keyword, args, origin, condition in effective.conditional:
        if keyword in ("proxycommand", "proxyjump", "controlpath") and args and \
                args[0].lower() != "none":
            reasons.append(f"{condition or origin} (not evaluated) may set"
                           f" {_CARRIER_NAMES[keyword]} {short(' '.join(args), 80)}")
            break
    if effective.unread:
        reasons.append("configuration the guard could not read may set a ProxyCommand or a"
                       " ControlPath")
    return reasons[:8]


_CARRIER_NAMES = {"proxycommand": "ProxyCommand", "proxyjump": "ProxyJump",
                  "controlpath": "ControlPath"}


def _capability_findings(effective: EffectiveSsh, allowance: _Allowance | None,
                         remote_allowed: bool) -> list[Finding]:
    """Standing ways to add a remote forward after the exec was judged:

    - a control master: any process that reaches its socket (an ssh mux
      client, or a few lines of Python speaking the mux protocol) can ask it
      for a forward, and no exec of ssh is there to judge;
    - `-O proxy`: the master serves whatever speaks SSH on its stdin;
    - the `~C` escape command line: `-R` typed into the running session.

    Medium, so `block` refuses the process's connects: a master that never
    connects serves nothing. Low (only ever logged) when the destination and
    every hop are allowlisted: the allowlist trusts that server, and the
    event still says what the master could carry. None when the allowlist
    permits remote forwards there."""
    if remote_allowed:
        return []
    invocation = effective.invocation
    found: list[tuple[str, str]] = []
    if invocation.control_command == "proxy":
        found.append(("mux-proxy", "-O proxy: the master serves whatever speaks SSH on this"
                                   " process's standard input, remote forwards included"))
    elif effective.control_path is not None and effective.control_master != "no":
        found.append(("control-master", "a control master carries the forwards any process"
                                        " asks for over its socket, long after this exec"))
    if effective.escape_commandline:
        found.append(("escape-commandline", "EnableEscapeCommandline: `~C -R ...` adds a remote"
                                            " forward to the running session"))
    trusted = bool(allowance and allowance.destination)
    findings = []
    for dialect, note in found:
        evidence = _common_evidence(effective)
        evidence["note"] = note
        if trusted:
            evidence["destination_allowlisted"] = True
        findings.append(Finding(type="ssh_reverse_tunnel", dialect=dialect, evidence=evidence,
                                confidence="low" if trusted else "medium"))
    return findings


def _unread_finding(effective: EffectiveSsh) -> Finding:
    """Config that ssh would read and the reader did not (a budget ran out,
    a stream such as -F /dev/stdin, a FIFO, an -F missing when looked at):
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
