# SPDX-License-Identifier: Apache-2.0
"""Tunnelling tools: recognised by their argv and by their first bytes.

Two questions, one per public function:

- classify_tunnel_exec: is this exec a tunnelling agent (ngrok, cloudflared,
  chisel, frp, bore, localtunnel and friends) asked to open a tunnel?
- classify_tunnel_payload: do the first bytes of a flow, or the names the
  caller saw for it (TLS SNI, HTTP Host, DNS), belong to such an agent?

Reverse shells (a shell handed to a socket) are reverse_shell.py's. The argv
forms, ports and names come from the tools' own sources and docs, Sigma and
Falco rules and ET Open (see shared/reference/signatures.md, 4). Everything
is pure: hostile input yields an empty list, never an exception.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from guard.detect.classify import Finding, dedupe_findings, http_head_fields, jsonc, short
from guard.detect.classify.launchers import basename, unwrap_launchers
from guard.detect.classify.tls import parse_tls_client_hello
from guard.detect.classify.tunnel_behaviour import classify_first, localtunnel_setup_reply

#: How much of a payload is looked at: first flights are small, and a bound
#: keeps hostile input from costing more than it is worth.
MAX_PAYLOAD = 16 * 1024
#: Characters of a protocol string kept as evidence.
EXCERPT_CHARS = 256


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
        out.append(short(arg, 200))
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


#: Short flags that carry secrets without saying so (frpc -t TOKEN, bore -s
#: SECRET, htc -A USER:PASSWORD).
_TOOL_SECRET_FLAGS = {"frp": frozenset({"t"}), "bore": frozenset({"s"}),
                      "httptunnel": frozenset({"A"})}


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


#: httptunnel (htc.c, hts.c getopt_long): options that take a value.
_HTC_VALUE_FLAGS = frozenset({"A", "B", "c", "d", "F", "k", "M", "P", "T", "U", "z", "D", "l",
                              "proxy-authorization", "proxy-buffer-size", "content-length",
                              "device", "forward-port", "keep-alive", "max-connection-age",
                              "proxy", "timeout", "user-agent", "proxy-authorization-file",
                              "debug", "logfile"})
_HTS_VALUE_FLAGS = frozenset({"d", "F", "k", "M", "c", "S", "p", "D", "l", "device", "forward-port",
                              "keep-alive", "max-connection-age", "content-length", "pid-file",
                              "debug", "logfile"})


def _htc(argv: list[str]) -> list[Finding]:
    """htc [options] HOST[:PORT]: a two-way tunnel in HTTP requests to hts,
    fed from a local port (-F), a device (-d) or stdin/stdout (-s)."""
    parsed = _parse_flags(argv[1:], _HTC_VALUE_FLAGS)
    if parsed.has("h", "help", "V", "version"):
        return _tool_finding("httptunnel", "low", argv, role="client")
    server = parsed.positional[-1] if parsed.positional else None
    source = parsed.value("F", "forward-port", "d", "device") or \
        ("stdin-stdout" if parsed.has("s", "stdin-stdout") else None)
    confidence = "high" if server and source else "medium"
    return _tool_finding("httptunnel", confidence, argv, role="client", server=server,
                         source=source, proxy=parsed.value("P", "proxy"))


def _hts(argv: list[str]) -> list[Finding]:
    """hts [options] [HOST:]PORT: the tunnel's server end, listening."""
    parsed = _parse_flags(argv[1:], _HTS_VALUE_FLAGS)
    if parsed.has("h", "help", "V", "version"):
        return _tool_finding("httptunnel", "low", argv, role="server")
    return _tool_finding("httptunnel", "medium", argv, role="server",
                         forward=parsed.value("F", "forward-port", "d", "device"),
                         port=parsed.positional[-1] if parsed.positional else None)


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
                                 operands=[short(w, 200) for w in words[1:8]])
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
    "htc": _htc,
    "hts": _hts,
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
    name = basename(program).lower()
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
                    evidence={"signal": "websocket_protocol",
                              "protocol": short(protocol, EXCERPT_CHARS),
                              "start_line": short(start, EXCERPT_CHARS),
                              "host": headers.get("host")})]


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
                        "login": {key: short(str(message[key]), 64)
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
    may merely be visiting one). What the bytes do whatever the tool is
    called (an HTTP response sent first, httptunnel's and localtunnel's
    requests) is tunnel_behaviour.classify_first's."""
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
    findings += localtunnel_setup_reply(data)
    behaviour = classify_first(data, port)
    if findings:    # a tool already named (chisel's 101 answer): no second finding for it
        behaviour = [f for f in behaviour if f.dialect != "reverse-http"]
    return dedupe_findings(findings + behaviour)

