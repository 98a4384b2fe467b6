# SPDX-License-Identifier: Apache-2.0
"""Miners by how they are started.

classify_exec: does this exec start a miner? Read from the argv (pool URLs,
XMRig/cpuminer flags, wallet-shaped users, the MSR tweak), from `sh -c`
strings, from the executable itself (the strings a rename does not change,
miner_binary.py) and from the config files the miner would read: those
named by -c/--config and the ones it reads by default (XMRig's whole search
list, xmr-stak's working-directory files: miner_config.py), fetched through
the caller's read_file callback (the agent binds it to the container's
root); one it could not read in full is reported rather than trusted
(_with_config).

The pool and donation domains, binary names and strings and pool ports come
from guard/data/miners.yaml (miner_indicators.py, which also judges DNS
names); DNS messages are parsed in dns.py.

Confidence follows shared/reference/signatures.md: a stratum URL, a pool
domain, --donate-level, `modprobe msr allow_writes=on` or an executable
whose strings name a miner is high on its own; other miner flags are medium
alone and high together; a miner's binary name is low alone, because
renaming is free. Text tools (grep, sed, echo, git...) that merely mention
these strings never rise above low.
"""
from __future__ import annotations

import base64
import binascii
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from guard.detect.classify import CONFIDENCES, RANK, UNREAD, Finding, port_number, short
from guard.detect.classify.launchers import as_argv, basename
from guard.detect.classify.miner_binary import BinaryVerdict, ExecutableImage, classify_binary
from guard.detect.classify.miner_config import (
    ConfigPlace, config_places, mining_hint, read_config,
)
from guard.detect.classify.miner_indicators import Indicators, load_indicators
from guard.detect.classify.shellwords import (
    SHELLS, open_quote, shell_script_operand, simple_commands,
)

#: Evidence strings are cut here so an event stays small.
EVIDENCE_CHARS = 200
#: Bytes of a config file read. XMRig's full config.json is about 4 KiB, but
#: config.json beside a binary is read for every exec of every program, so
#: the limit leaves room for the big benign ones (the agent reads 1 MiB).
MAX_CONFIG_BYTES = 1024 * 1024
#: Bytes of all the config files named on one command line together.
MAX_NAMED_CONFIG_BYTES = 1024 * 1024
#: Characters of an argv element or shell script looked at.
MAX_ARG_CHARS = 16 * 1024
#: Nesting followed: `sh -c "nohup sh -c '...'"`, base64 inside a script.
MAX_DEPTH = 3
#: Config files named on one command line that are read (config.json
#: beside the binary comes on top); more are reported unread.
MAX_CONFIG_FILES = 3
#: Items of an argv looked at.
MAX_ARGS = 4096
#: Simple commands of one shell string looked at.
MAX_COMMANDS = 256


# --------------------------------------------------------------------------
# Exec: what in an argv or a config says "miner"

#: Miner URL schemes: stratum+tcp/ssl/udp (Falco, Sigma), stratum2+ (SV2),
#: ethminer's stratum1+ssl, stratums://, stratum+tls12://.
_STRATUM_URL = re.compile(r"(?i)\bstratum[0-9]?s{0,2}(?:\+[a-z0-9]{2,6})?://[^\s'\"<>`;|&]{0,255}")
_STRATUM_SCHEME = re.compile(r"(?i)\bstratum[0-9]?\+(?:tcp|ssl|tls|udp)\b")
#: `modprobe msr allow_writes=on`, its words in this order within one command.
_COMMAND_BREAK = re.compile(r"[;&|\n]")
_MSR_WORDS = (re.compile(r"\bmodprobe\b"), re.compile(r"\bmsr\b"),
              re.compile(r"\ballow_writes=on\b"))
_DONATE_TEXT = re.compile(r"--donate-level\b")

_XMRIG_FLAGS = frozenset({
    "--cpu-priority", "--nicehash", "--rig-id", "--cpu-max-threads-hint", "--max-cpu-usage",
    "--donate-over-proxy", "--randomx-mode", "--randomx-1gb-pages", "--randomx-no-numa",
    "--randomx-wrmsr", "--randomx-no-rdmsr", "--randomx-init", "--huge-pages-jit",
    "--tls-fingerprint", "--self-select", "--cpu-memory-pool", "--cpu-no-yield", "--no-cpu",
    "--daemon-poll-interval",
})
_CPUMINER_FLAGS = frozenset({"--coinbase-addr", "--no-getwork", "--no-gbt", "--no-stratum",
                             "--no-longpoll"})
_ALGO_FLAGS = frozenset({"-a", "--algo", "--algorithm"})
_URL_FLAGS = frozenset({"-o", "--url", "--pool", "-P", "--server"})
_USER_FLAGS = frozenset({"-u", "--user", "-O", "--userpass", "--wallet", "--coinbase-addr"})
_CONFIG_FLAGS = frozenset({"-c", "--config"})
#: XMRig's data directory, where its config.json is looked for first.
_DATA_DIR_FLAGS = frozenset({"--data-dir"})

_ALGO_FAMILIES = re.compile(r"(?i)(?:rx|cn|cn-lite|cn-heavy|cn-pico|cn-femto|argon2|astrobwt|"
                            r"cryptonight[a-z-]*)/[a-z0-9-]+")
_ALGOS = frozenset({
    "randomx", "cryptonight", "cryptonight-lite", "cryptonight-heavy", "kawpow", "ghostrider",
    "ethash", "etchash", "autolykos2", "kheavyhash", "heavyhash", "equihash", "zhash",
    "beamhash", "octopus", "firopow", "progpow", "sha256d", "scrypt", "x11", "x16r", "x16rv2",
    "x16s", "x17", "x25x", "lyra2z", "lyra2rev2", "lyra2rev3", "lyra2v2", "yescrypt",
    "yescryptr16", "yespower", "yespowerr16", "allium", "neoscrypt", "verushash", "panthera",
    "cuckatoo31", "cuckatoo32", "cuckaroo29", "flex", "karlsenhash", "blake3",
})
_COINS = frozenset({
    "monero", "xmr", "wownero", "wow", "arqma", "zephyr", "zeph", "ravencoin", "rvn", "ergo",
    "erg", "kaspa", "kas", "firo", "beam", "conflux", "cfx", "neoxa", "clore", "nexa", "dero",
    "salvium", "etc", "ethw", "keva", "raptoreum", "rtm",
})
_WALLET = re.compile(
    r"(?:[48][0-9AB][1-9A-HJ-NP-Za-km-z]{93}|4[0-9AB][1-9A-HJ-NP-Za-km-z]{104}"   # Monero
    r"|0x[0-9a-fA-F]{40}"                                                          # Ethereum
    r"|bc1[02-9ac-hj-np-z]{11,71}|[13][1-9A-HJ-NP-Za-km-z]{25,34})"               # Bitcoin
    r"(?:[.+/][\w.+-]{0,64})?")                                                    # .worker, +diff

#: Programs that only show, search, copy or write text: a miner string in
#: their argv is someone reading about mining (at most low).
_TEXT_TOOLS = frozenset({
    "grep", "egrep", "fgrep", "zgrep", "rg", "ag", "ack", "sed", "awk", "gawk", "mawk", "cat",
    "tac", "less", "more", "head", "tail", "echo", "printf", "vi", "vim", "nvim", "nano", "emacs",
    "code", "git", "find", "locate", "wc", "sort", "uniq", "cut", "tr", "diff", "cmp", "jq", "yq",
    "man", "ls", "file", "strings", "xxd", "hexdump", "od", "tee", "touch", "cp", "mv", "rm",
    "ln", "chmod", "chown", "stat", "tar", "zip", "unzip", "gzip", "pip", "pip3", "npm", "apt",
    "apt-get", "apk", "yum", "dnf",
})
#: Interpreters and the flags after which their program text follows.
_CODE_FLAGS = {"python": {"-c"}, "node": {"-e", "--eval", "-p", "--print"},
               "nodejs": {"-e", "--eval", "-p", "--print"}, "perl": {"-e", "-E"},
               "ruby": {"-e"}, "php": {"-r"}, "deno": {"eval"}, "bun": {"-e", "--eval"}}
_LAUNCHERS = frozenset({"env", "nohup", "nice", "ionice", "taskset", "setsid", "timeout",
                        "stdbuf", "chrt", "sudo", "doas", "exec", "command", "time", "cpulimit",
                        "runuser", "setpriv", "unshare", "systemd-run", "tini"})
_LAUNCHER_VALUE_FLAGS = frozenset({"-n", "-c", "-u", "-g", "-p", "-s", "-k", "-l", "-i", "-e",
                                   "-o", "-C", "--user", "--group", "--signal", "--kill-after",
                                   "--unit", "--limit", "--pid"})
_NUMERIC = re.compile(r"[0-9][0-9a-fx.,:smhd-]*")
_BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


def _program_name(arg: str) -> str:
    name = basename(arg).lower()
    if re.fullmatch(r"python[0-9.]*", name):
        return "python"
    return name


def _strip_launchers(argv: list[str]) -> list[str]:
    """argv without leading env/nohup/nice/timeout/sudo... and their options."""
    i = 0
    while i < len(argv) and _program_name(argv[i]) in _LAUNCHERS:
        i += 1
        while i < len(argv):
            arg = argv[i]
            if arg == "--":
                i += 1
                break
            if arg in _LAUNCHER_VALUE_FLAGS:
                i += 2
            elif arg.startswith("-") or _NUMERIC.fullmatch(arg) or (
                    "=" in arg and not arg.startswith("=") and "/" not in arg.split("=", 1)[0]):
                i += 1
            else:
                break
    return argv[i:]


@dataclass
class _Signals:
    """What one command (or one config file) showed, by weight."""
    strong: list[str] = field(default_factory=list)
    medium: list[str] = field(default_factory=list)
    weak: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)      # dialects the flags point at
    urls: list[str] = field(default_factory=list)
    config_keys: list[str] = field(default_factory=list)
    config_path: str | None = None
    binary: str | None = None
    binary_strings: list[str] = field(default_factory=list)    # miner_binary groups found
    text_tool: str | None = None
    cap: str = "high"       # inline interpreter code only mentions things: at most medium

    def add(self, weight: str, indicator: str) -> None:
        """Record an indicator once, under the heaviest weight it was seen with."""
        indicator = short(indicator, 120)
        buckets = ("strong", "medium", "weak")
        for heavier in buckets[:buckets.index(weight)]:
            if indicator in getattr(self, heavier):
                return
        for lighter in buckets[buckets.index(weight) + 1:]:
            bucket = getattr(self, lighter)
            if indicator in bucket:
                bucket.remove(indicator)
        if indicator not in getattr(self, weight):
            getattr(self, weight).append(indicator)

    def absorb(self, other: "_Signals") -> None:
        for weight in ("strong", "medium", "weak"):
            for indicator in getattr(other, weight):
                self.add(weight, indicator)
        for name in ("hints", "urls", "config_keys"):
            mine = getattr(self, name)
            mine.extend(x for x in getattr(other, name) if x not in mine)

    def confidence(self) -> str | None:
        if self.strong or len(self.medium) >= 2 or (self.medium and self.binary):
            level = "high"
        elif self.medium or (self.binary and self.weak):
            level = "medium"
        elif self.binary:
            level = "low"
        else:
            return None
        if self.text_tool:
            return "low"
        return CONFIDENCES[min(RANK[level], RANK[self.cap])]


def _rank(signals: _Signals) -> int:
    level = signals.confidence()
    return -1 if level is None else RANK[level]


def _best(candidates: list[_Signals]) -> _Signals:
    """The most confident candidate; the first one on ties."""
    if not candidates:
        return _Signals()
    best = candidates[0]
    for candidate in candidates[1:]:
        if _rank(candidate) > _rank(best):
            best = candidate
    return best


@dataclass
class _Context:
    """State shared by the commands of one exec."""
    indicators: Indicators
    configs: list[str] = field(default_factory=list)    # config files named anywhere
    data_dirs: list[str] = field(default_factory=list)  # --data-dir values
    named_bytes_left: int = MAX_NAMED_CONFIG_BYTES
    unread: list[str] = field(default_factory=list)     # configs not read in full


def _url_host(url: str) -> tuple[str | None, int | None]:
    """Host and port of `scheme://user@host:port/...`, `host:port` or `[v6]:port`,
    split at the first colon as XMRig's Url::parse does (not at the last,
    like split_host_port): `pool.example:3333:x` connects to pool.example."""
    rest = url.split("://", 1)[1] if "://" in url else url
    rest = re.split(r"[/?#]", rest, maxsplit=1)[0].rsplit("@", 1)[-1]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = rest.partition(":")
    return (host.lower() or None), port_number(port_text)


_POOLISH_LABEL = re.compile(r"pool|stratum|mining|^mine$|^(xmr|eth|etc|rvn|btc|ltc|zec|kas|erg)\b")


def _judge_pool_url(value: str, signals: _Signals, indicators: Indicators, *, named: bool) -> None:
    """A pool address given to -o/--url (named=True) or found loose in the argv.

    A listed pool domain is strong after -o and medium loose (`curl
    https://supportxmr.com/api` visits the pool's site). An unlisted host
    counts only after -o, with a port, and when it looks like a pool:
    `gcc -o pool.o` names a file."""
    host, port = _url_host(value)
    if host is None:
        return
    match = indicators.match_domain(host)
    if match is not None:
        signals.add("strong" if named else "medium", f"{match.list}:{match.entry}")
        if match.list == "donation_domains":
            signals.hints.append("xmrig")
        if value not in signals.urls:
            signals.urls.append(short(value, EVIDENCE_CHARS))
        return
    if not named or port is None:
        return
    if value not in signals.urls:
        signals.urls.append(short(value, EVIDENCE_CHARS))
    if any(_POOLISH_LABEL.search(label) for label in host.split(".")[:-1]):
        signals.add("medium", f"pool url {short(value, 80)}")
    if port in indicators.pool_ports:
        signals.add("weak", f"pool port {port}")


def _msr_tweak(text: str) -> bool:
    """The MSR tweak in one command of text: each word searched from where
    the one before it ended. (As one expression, `modprobe[^;]*msr[^;]*allow`,
    it took 50 s on 16 KiB of `modprobe msr `: every start retried every split.)"""
    if "allow_writes=on" not in text:
        return False
    for command in _COMMAND_BREAK.split(text):
        position = 0
        for word in _MSR_WORDS:
            found = word.search(command, position)
            if found is None:
                break
            position = found.end()
        else:
            return True
    return False


def _scan_text(text: str, signals: _Signals, indicators: Indicators) -> None:
    """Strings that mean mining wherever they appear: stratum URLs (the scheme
    alone is medium), `--donate-level`, the XMRig MSR tweak."""
    for match in _STRATUM_URL.finditer(text):
        signals.add("strong", match.group(0))
        if match.group(0) not in signals.urls:
            signals.urls.append(short(match.group(0), EVIDENCE_CHARS))
        _judge_pool_url(match.group(0), signals, indicators, named=False)
    if not _STRATUM_URL.search(text):
        scheme = _STRATUM_SCHEME.search(text)
        if scheme is not None:
            signals.add("medium", scheme.group(0))
    if _msr_tweak(text):
        signals.add("strong", "modprobe msr allow_writes=on")
        signals.hints.append("xmrig")
    if not text.startswith("--donate-level") and _DONATE_TEXT.search(text):
        signals.add("strong", "--donate-level")
        signals.hints.append("xmrig")


def _option_value(args: list[str], i: int, flags: frozenset[str]) -> tuple[str, str, int] | None:
    """(flag, value, args used) when args[i] is one of flags, in any of the
    forms `--url X`, `--url=X`, `-o X` and `-oX`."""
    arg = args[i]
    if arg.startswith("--"):
        name, eq, value = arg.partition("=")
        if name not in flags:
            return None
        if eq:
            return name, value, 1
        return (name, args[i + 1], 2) if i + 1 < len(args) else None
    if len(arg) >= 2 and arg[0] == "-" and arg[:2] in flags:
        if len(arg) > 2:
            return arg[:2], arg[2:].removeprefix("="), 1
        return (arg[:2], args[i + 1], 2) if i + 1 < len(args) else None
    return None


_VALUE_OPTIONS = (("url", _URL_FLAGS), ("algo", _ALGO_FLAGS), ("user", _USER_FLAGS),
                  ("coin", frozenset({"--coin"})), ("config", _CONFIG_FLAGS),
                  ("data-dir", _DATA_DIR_FLAGS))


def _judge_flag(arg: str, signals: _Signals) -> None:
    """Flags that need no value to mean something."""
    name = arg.split("=", 1)[0]
    if name == "--donate-level":
        signals.add("strong", short(arg, 40))
        signals.hints.append("xmrig")
    elif name in _XMRIG_FLAGS or name.startswith("--randomx-"):
        signals.add("medium", name)
        signals.hints.append("xmrig")
    elif name in _CPUMINER_FLAGS:
        signals.add("medium", name)
        signals.hints.append("cpuminer")
    elif name in ("--tls", "-k", "--keepalive"):
        signals.add("weak", name)


def _judge_value(kind: str, flag: str, value: str, signals: _Signals, ctx: _Context) -> None:
    if kind == "url":
        _judge_pool_url(value, signals, ctx.indicators, named=True)
    elif kind == "algo" and (_ALGO_FAMILIES.fullmatch(value) or value.lower() in _ALGOS):
        signals.add("medium", f"{flag} {value}")
    elif kind == "coin" and value.lower() in _COINS:
        signals.add("medium", f"{flag} {value}")
    elif kind == "user" and _WALLET.fullmatch(value.split(":", 1)[0][:256]):
        signals.add("medium", f"{flag} <wallet>")
    elif kind == "config" and _looks_like_config_path(flag, value):
        ctx.configs.append(value)
    elif kind == "data-dir" and _looks_like_config_path("--config", value) and \
            len(ctx.data_dirs) < MAX_CONFIG_FILES:
        ctx.data_dirs.append(value)


def _judge_options(args: list[str], signals: _Signals, ctx: _Context) -> None:
    i = 0
    while i < len(args):
        _judge_flag(args[i], signals)
        used = 1
        for kind, flags in _VALUE_OPTIONS:
            option = _option_value(args, i, flags)
            if option is not None:
                flag, value, used = option
                _judge_value(kind, flag, value, signals, ctx)
                break
        i += used


def _looks_like_config_path(flag: str, value: str) -> bool:
    """--config names a file; -c does only when the value looks like one
    (`ping -c 3`, `gcc -c x.c` and `head -c 10` are not worth a read)."""
    if not 0 < len(value) <= 1024 or value.startswith("-"):
        return False
    if any(c in value for c in "\n\r\t \0;|&$`"):
        return False
    return flag == "--config" or "/" in value or value.endswith((".json", ".conf", ".cfg", ".jsonc"))


# -- shell strings and inline code


def _shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell string (`cd /tmp && nohup ./x -o ...
    &`). Comments are read as words: a miner string counts wherever it is.
    A quote left open makes the split a guess, so each line's words split
    at whitespace count too."""
    script = script[:MAX_ARG_CHARS]
    commands = simple_commands(script, comments=False)
    if open_quote(script, comments=False):
        commands = _blank_separated_commands(script) + commands
    return commands[:MAX_COMMANDS]


def _blank_separated_commands(script: str) -> list[list[str]]:
    """Commands of words split at blanks only, at lines and at words made of
    ; & | ( ) alone: the words of a script that no shell would run."""
    commands: list[list[str]] = []
    for line in script.splitlines()[:MAX_COMMANDS]:
        current: list[str] = []
        for word in line.split():
            if all(c in ";&|()" for c in word):
                commands += [current] if current else []
                current = []
            else:
                current.append(word)
        commands += [current] if current else []
    return commands


def _decoded_base64(text: str) -> list[str]:
    """Printable texts hidden as base64 tokens (`echo ... | base64 -d | sh`)."""
    decoded = []
    for token in _BASE64_TOKEN.findall(text)[:16]:
        try:
            plain = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if plain and sum(c.isprintable() or c in "\n\t" for c in plain) >= 0.95 * len(plain):
            decoded.append(plain)
    return decoded


def _shell_script(argv: list[str]) -> str | None:
    """The script of `sh -c SCRIPT` (also -lc, -ec, `busybox sh -c`)."""
    if _program_name(argv[0]) == "busybox":
        if len(argv) < 2 or _program_name(argv[1]) not in SHELLS:
            return None
        argv = argv[1:]
    return shell_script_operand(argv)


def _code_position(program: str, args: list[str]) -> int | None:
    """Index in args of program text given inline (python -c, node -e...)."""
    flags = _CODE_FLAGS.get(program)
    if not flags:
        return None
    for i, arg in enumerate(args[:-1]):
        if arg in flags:
            return i + 1
        if not arg.startswith("-"):
            return None
    return None


def _script_candidates(script: str, ctx: _Context, depth: int) -> list[_Signals]:
    """One candidate per command of a shell string, and per base64 blob in it."""
    if depth >= MAX_DEPTH:
        return []
    candidates = [_command_signals(command, ctx, depth + 1) for command in _shell_commands(script)]
    for plain in _decoded_base64(script):
        # hidden text counts in full: as commands, and as text (a bare URL
        # decoded from base64 is nobody's argv[1])
        as_text = _Signals()
        _scan_text(plain, as_text, ctx.indicators)
        for candidate in [as_text, *_script_candidates(plain, ctx, depth + 1)]:
            if candidate.confidence() is not None:
                candidate.add("weak", "base64")
            candidates.append(candidate)
    return candidates


def _command_signals(argv: list[str], ctx: _Context, depth: int) -> _Signals:
    """Signals of one command: the exec itself or a command inside `sh -c`."""
    argv = _strip_launchers([arg[:MAX_ARG_CHARS] for arg in argv])
    if not argv:
        return _Signals()
    program = _program_name(argv[0])
    if program in SHELLS or program == "busybox":
        script = _shell_script(argv)
        if script is not None:
            return _best(_script_candidates(script, ctx, depth))
    signals = _Signals(binary=ctx.indicators.miner_binary(argv[0]),
                       text_tool=program if program in _TEXT_TOOLS else None)
    args = argv[1:]
    candidates = [signals]
    code_at = _code_position(program, args)
    if code_at is not None:
        snippet = _Signals(cap="medium")
        _scan_text(args[code_at], snippet, ctx.indicators)
        candidates.append(snippet)
        args = args[:code_at - 1] + args[code_at + 1:]
    if program == "modprobe":
        _scan_text(" ".join(argv), signals, ctx.indicators)
    for arg in args:
        _scan_text(arg, signals, ctx.indicators)
    if signals.text_tool is None:
        _judge_options(args, signals, ctx)
        if depth < MAX_DEPTH:
            for arg in args:
                for plain in _decoded_base64(arg):
                    candidates.extend(_script_candidates(plain, ctx, depth + 1))
    return _best(candidates)


# -- config files


#: Keys only an XMRig pool object has (src/base/net/stratum/Pool.cpp); url,
#: user and pass alone could be any connection pool.
_XMRIG_POOL_KEYS = frozenset({"rig-id", "nicehash", "keepalive", "algo", "coin", "tls-fingerprint",
                              "daemon", "self-select", "socks5", "submit-to-origin"})


def _mining_value(name: str, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if name == "coin":
        return value.lower() in _COINS
    return bool(_ALGO_FAMILIES.fullmatch(value)) or value.lower() in _ALGOS


def _config_signals(document: Any, indicators: Indicators) -> _Signals:
    """XMRig keys (pools, donate-level, rig-id, randomx, cpu) and cpuminer
    keys (url, user, algo at the top level) of a parsed config file."""
    signals = _Signals()
    if not isinstance(document, dict):
        return signals

    def found(key: str, weight: str, dialect: str | None = "xmrig") -> None:
        signals.add(weight, f"config:{key}")
        if key not in signals.config_keys:
            signals.config_keys.append(key)
        if dialect:
            signals.hints.append(dialect)

    if "donate-level" in document or "donate-over-proxy" in document:
        found("donate-level", "strong")
    if isinstance(document.get("randomx"), dict):
        found("randomx", "medium")
    cpu = document.get("cpu")
    if isinstance(cpu, dict) and {"huge-pages", "rx", "cn", "argon2", "asm"} & set(cpu):
        found("cpu", "medium")
    _xmr_stak_signals(document, signals, indicators, found)
    pools = document.get("pools")
    entries = [p for p in pools[:16] if isinstance(p, dict)] if isinstance(pools, list) else []
    top_level_pool = isinstance(document.get("url"), str)
    if top_level_pool:
        entries.append(document)            # cpuminer keeps its one pool at the top level
    for entry in entries:
        url = entry.get("url")
        if not isinstance(url, str):
            continue
        url = url[:1024]
        _scan_text(url, signals, indicators)
        _judge_pool_url(url, signals, indicators, named=True)
        if entry is not document and {"user", "pass"} & set(entry) and _XMRIG_POOL_KEYS & set(entry):
            found("pools", "medium")
        if "rig-id" in entry:
            found("rig-id", "medium")
        user = entry.get("user")
        if isinstance(user, str) and _WALLET.fullmatch(user[:256]):
            found("user", "medium", None)
        for key in ("algo", "coin"):
            if _mining_value(key, entry.get(key)):
                found(key, "medium", None)
    return signals


def _xmr_stak_signals(document: dict, signals: _Signals, indicators: Indicators,
                      found: Callable[[str, str, str | None], None]) -> None:
    """xmr-stak's pools.txt: pool_list entries of pool_address and
    wallet_address, and the currency mined."""
    pools = document.get("pool_list")
    entries = [p for p in pools[:16] if isinstance(p, dict)] if isinstance(pools, list) else []
    for entry in entries:
        address = entry.get("pool_address")
        if not isinstance(address, str) or "wallet_address" not in entry:
            continue
        found("pool_list", "medium", "xmr-stak")
        _scan_text(address[:1024], signals, indicators)
        _judge_pool_url(address[:1024], signals, indicators, named=True)
        wallet = entry.get("wallet_address")
        if isinstance(wallet, str) and _WALLET.fullmatch(wallet[:256]):
            found("wallet_address", "medium", None)
    currency = document.get("currency")
    if entries and isinstance(currency, str) and (currency.lower() in _COINS or
                                                   _mining_value("algo", currency)):
        found("currency", "medium", None)


def _dialect(signals: _Signals) -> str:
    if signals.text_tool:
        return "generic"                    # a mention names no miner
    if signals.binary in ("xmrig", "xmr-stak"):
        return signals.binary
    if signals.binary in ("cpuminer", "minerd"):
        return "cpuminer"
    if signals.binary:
        return signals.binary
    for hint in ("xmrig", "cpuminer", "xmr-stak"):
        if hint in signals.hints:
            return hint
    return "generic"


def classify_exec(argv: list[str], exe: str | None = None,
                  read_file: Callable[[str], bytes | None] | None = None, *,
                  indicators: Indicators | None = None,
                  executable: ExecutableImage | None = None) -> list[Finding]:
    """A miner_exec finding when this exec looks like a miner being started.

    exe is the executable's path inside the container (/proc/PID/exe): its
    name counts like argv[0]'s, and XMRig's config.json is looked for beside
    it. executable (guard.detect.files.Executable) is the file itself: its
    strings say what it is whatever it is called (miner_binary.py, cached per
    file). read_file(path) reads a file inside the container and is the only
    way a config is read; relative paths are passed as they were written,
    for the callback to resolve against the process's working directory, and
    `~/...` means below the process's $HOME (miner_config.py).

    A config that could not be read in full (too big, nested too deep, too
    costly to strip) adds a high miner_exec finding with dialect
    "unread-config" (see _with_config for when)."""
    ctx = _Context(indicators or load_indicators())
    args = as_argv(argv)[:MAX_ARGS]
    if isinstance(exe, str) and exe.endswith(" (deleted)"):
        exe = exe[:-len(" (deleted)")]      # miners often delete their file once running
    elif not isinstance(exe, str):
        exe = None
    signals = _command_signals(args, ctx, 0)
    if signals.binary is None and signals.text_tool is None and isinstance(exe, str):
        signals.binary = ctx.indicators.miner_binary(exe)
    verdict = classify_binary(executable, ctx.indicators)
    _with_binary(signals, verdict)
    if read_file is not None and callable(read_file) and signals.text_tool is None:
        # the places a miner reads by default, for a program that may be
        # one: its file carries mining code, its name or flags are a miner's
        miner_like = bool(verdict.family or verdict.traits or signals.binary or signals.hints)
        signals = _with_config(signals, args, exe, ctx, read_file, config_places(
            args, exe, ctx.configs, home=miner_like, data_dirs=ctx.data_dirs,
            xmr_stak=miner_like))
    findings = []
    confidence = signals.confidence()
    if confidence is not None:
        findings.append(Finding(type="miner_exec", confidence=confidence,
                                dialect=_dialect(signals), evidence=_evidence(args, exe, signals)))
    if ctx.unread:
        findings.append(_unread_finding(args, exe, ctx.unread))
    return findings


def _with_binary(signals: _Signals, verdict: BinaryVerdict) -> None:
    """The executable's strings: a miner's name for it, whatever the file is
    called (a text tool's name does not cap it then); traits are weak."""
    if verdict.family is not None:
        signals.add("strong" if verdict.confidence == "high" else "medium",
                    f"binary:{verdict.family}")
        signals.hints.append(verdict.family)
        signals.binary_strings = list(verdict.groups)
        signals.text_tool = None
        signals.cap = "high"
    for trait in verdict.traits[:2]:
        signals.add("weak", f"binary trait:{trait}")


def _with_config(signals: _Signals, argv: list[str], exe: str | None, ctx: _Context,
                 read_file: Callable[[str], bytes | None],
                 places: list[ConfigPlace]) -> _Signals:
    """signals plus the first config file that carries miner keys: a config
    the process was pointed at is evidence of its own, so it lifts the cap
    that inline code puts on a command.

    What cannot be read in full goes to ctx.unread, to fail closed: always
    for a file named by -c/--config (the program was pointed at it), but
    for a default one (config.json beside the binary, ~/.xmrig.json...) only
    when what was read mentions mining. Those are read for every exec of
    every program, and a big benign one (over MAX_CONFIG_BYTES) must not
    block a workload; a miner's padded config still names its pool,
    algorithm or donation level."""
    named_seen = 0
    for place in places:
        path, named = place.path, place.named
        if named:
            named_seen += 1
            if named_seen > MAX_CONFIG_FILES:
                ctx.unread.append(f"{path}: not read, more than {MAX_CONFIG_FILES} config files"
                                  " named")
                continue
            limit = min(MAX_CONFIG_BYTES, ctx.named_bytes_left)
        else:
            limit = MAX_CONFIG_BYTES
        config_file = read_config(place, read_file, limit)
        if named:
            ctx.named_bytes_left -= config_file.size
        if config_file.unread is not None:
            hint = None if named else mining_hint(config_file.text, ctx.indicators)
            if named or hint is not None:
                ctx.unread.append(config_file.unread + (f" (it mentions {hint})" if hint else ""))
        config = _config_signals(config_file.document, ctx.indicators)
        if not (config.strong or config.medium):
            continue
        signals.absorb(config)
        signals.config_path = path
        signals.cap = "high"
        signals.text_tool = None
        break
    return signals


def _unread_finding(argv: list[str], exe: str | None, unread: list[str]) -> Finding:
    """A miner config that could not be read in full: it counts as a miner
    being started, at high confidence (fail closed), naming what was unread."""
    program = argv[0] if argv else (exe or "")
    return Finding(type="miner_exec", confidence="high", dialect=UNREAD,
                   evidence={"program": short(posixpath.basename(program), EVIDENCE_CHARS),
                             "note": short(unread[0], 400),
                             "unread": [short(note, 400) for note in unread[:8]]})


def _evidence(argv: list[str], exe: str | None, signals: _Signals) -> dict[str, Any]:
    program = argv[0] if argv else (exe or "")
    evidence: dict[str, Any] = {
        "program": short(posixpath.basename(program), EVIDENCE_CHARS),
        "indicators": [short(x, EVIDENCE_CHARS)
                       for x in (*signals.strong, *signals.medium, *signals.weak)][:16],
    }
    if signals.binary:
        evidence["binary"] = signals.binary
    if signals.urls:
        evidence["url"] = signals.urls[0]
    if signals.binary_strings:
        evidence["binary_strings"] = [short(x, 64) for x in signals.binary_strings[:8]]
    if signals.config_path:
        evidence["config"] = short(signals.config_path, EVIDENCE_CHARS)
        evidence["config_keys"] = signals.config_keys[:16]
    if signals.text_tool:
        evidence["text_tool"] = signals.text_tool
    return evidence
