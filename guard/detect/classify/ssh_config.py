# SPDX-License-Identifier: Apache-2.0
"""ssh_config as OpenSSH reads it for one destination (readconf.c): Host and
Match blocks, Include, first value wins; inside budgets that fail closed.

The files are the workload's, so everything in them is hostile input. The
reader's work is bounded by budgets (bytes, lines with a keyword, files,
Include depth, characters compared by patterns), and whatever a budget stops
it from reading is recorded in ConfigReader.unread: OpenSSH would have read
it, so the classifier reports it as a possible reverse tunnel rather than
trusting the part it saw. Blank and comment lines cost no line budget (the
byte budget bounds them and they are skipped at C speed), so padding alone
cannot push a forward out of sight.

Pure: files and directories are read only through the caller's callbacks.
"""
from __future__ import annotations

import fnmatch
import itertools
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from guard.detect.classify import was_cut

ReadFile = Callable[[str], "bytes | None"]
ListDir = Callable[[str], "Iterable[str] | None"]

REMOTE, LOCAL, DYNAMIC, TUNNEL = "remote", "local", "dynamic", "tunnel"

#: ssh_config keywords that add up instead of first-value-wins.
FORWARD_KEYWORDS = {"remoteforward": REMOTE, "localforward": LOCAL, "dynamicforward": DYNAMIC}
ACCUMULATING_KEYWORDS = frozenset(FORWARD_KEYWORDS) | {"identityfile", "certificatefile", "sendenv"}
#: Keywords that decide what carries the connection or adds forwards at run
#: time (ssh.py, block_bypass): behind an unevaluated Match exec they are
#: kept as conditional, like the forwards there.
CARRIER_KEYWORDS = frozenset({"proxycommand", "proxyjump", "controlpath", "controlmaster",
                              "enableescapecommandline"})
#: Paths that name a stream of the process itself (ssh reads them fine:
#: `ssh -F /dev/stdin`); the agent cannot read them without taking the data.
_STREAM_PATH = re.compile(r"/dev/(stdin|fd/[0-9]+|tty[^/]*|pts/[0-9]+)|"
                          r"/proc/(self|thread-self|[0-9]+)(/task/[0-9]+)?/fd/[0-9]+")

#: OpenSSH's READCONF_MAX_DEPTH: ssh itself stops with a fatal error deeper.
MAX_INCLUDE_DEPTH = 16
#: Files read per evaluation; OpenSSH has no such limit, so more is unread.
MAX_CONFIG_FILES = 64
#: Bytes of one file (the agent's reader hands over at most this much), and
#: of all files together: real configurations are a few KiB; the total
#: bounds the time spent on padding (about 0.1 s per MiB at worst).
MAX_CONFIG_BYTES = 1024 * 1024
MAX_TOTAL_CONFIG_BYTES = 2 * 1024 * 1024
#: Lines with a keyword, in all files: each costs a few microseconds.
MAX_CONFIG_LINES = 20000
#: Work on Host/Match/Include patterns in all files, in characters compared
#: (about 0.1 s). A pattern check costs about len(name) + len(pattern), plus
#: its Python overhead, which is worth _STEP_COST characters.
MAX_PATTERN_WORK = 20_000_000
_STEP_COST = 256
#: A glob's regular expression costs about this much to build (~0.5 ms),
#: and a file opened or a directory listed through the agent's callbacks
#: (a few system calls) about this much: `Include /x /x /x ...` repeats them.
_GLOB_COMPILE_COST = 100_000
_CALLBACK_COST = 20_000
#: Hostname after %h expansion; NI_MAXHOST is 1025, so no resolvable name is longer.
MAX_HOSTNAME_CHARS = 4096
#: Names of one directory an Include glob looks through. A listing callback
#: may return one more to say there were more (detect.ProcessFiles does).
MAX_DIR_ENTRIES = 4096
#: glob(3) refuses patterns longer than PATH_MAX; a component longer than
#: NAME_MAX after collapsing its stars matches no file name a reader would see.
MAX_GLOB_COMPONENT = 255
#: Reasons kept in ConfigReader.unread (one is enough to fail closed, a few
#: say where) and notes kept: 20,000 odd lines must not make 20,000 strings.
MAX_UNREAD_NOTES = 16
MAX_NOTES = 64


# --------------------------------------------------------------------------
# Config lines (readconf.c syntax), shared by -o and ssh_config files


def _split_arguments(text: str) -> list[str]:
    """Whitespace-separated arguments with "..." / '...' quoting, backslash
    escapes, and a '#' that starts an argument ending the line."""
    if not any(char in text for char in "\"'\\"):
        # no quoting: C-speed split (a 1 MiB line of words is common in bombs)
        args = _BLANKS.split(text.strip(" \t\f\r\n"))
        for i, arg in enumerate(args):
            if arg.startswith("#"):
                return args[:i]
        return args if args != [""] else []
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\f\r\n":
            i += 1
        if i >= n or text[i] == "#":
            break
        out: list[str] = []
        quote: str | None = None
        while i < n:
            char = text[i]
            if quote is None and char in " \t\f\r\n":
                break
            if char == "\\" and i + 1 < n and (text[i + 1] in "'\"\\" or
                                               (quote is None and text[i + 1] == " ")):
                out.append(text[i + 1])
                i += 2
                continue
            if quote is None and char in "'\"":
                quote = char
            elif char == quote:
                quote = None
            else:
                out.append(char)
            i += 1
        args.append("".join(out))
    return args


_BLANKS = re.compile(r"[ \t\f\r\n]+")
_CONFIG_LINE = re.compile(r"[ \t\f]*([^ \t\f\r\n=]+)[ \t\f]*(?:=[ \t\f]*)?(.*)", re.S)
#: A line that is neither blank nor a comment; the rest are skipped unread by Python.
_KEYWORD_LINE = re.compile(r"^[ \t\f\r]*[^ \t\f\r\n#][^\n]*", re.M)


def split_config_line(line: str) -> tuple[str, list[str]]:
    """(lower-cased keyword, arguments) of one ssh_config line; ("", []) for
    blank lines and comments. `Key Value`, `Key=Value` and `Key = Value` all work."""
    match = _CONFIG_LINE.match(line.rstrip(" \t\f\r\n"))
    if match is None or match.group(1).startswith("#"):
        return "", []
    return match.group(1).lower(), _split_arguments(match.group(2))


_KEYWORD_NAMES = {"remoteforward": "RemoteForward", "localforward": "LocalForward",
                  "dynamicforward": "DynamicForward", "tunnel": "Tunnel"}


def is_stream_path(path: str) -> bool:
    """/dev/stdin, /dev/fd/N, /proc/self/fd/N and the like."""
    return _STREAM_PATH.fullmatch(path) is not None


def keyword_name(keyword: str) -> str:
    return _KEYWORD_NAMES.get(keyword, keyword)


# --------------------------------------------------------------------------
# OpenSSH patterns ('*' and '?'), matched without a regular expression so
# that neither a long pattern nor a long name costs more than their lengths


def _pieces(segment: str) -> list[tuple[int, str]]:
    """(offset, literal) runs of a '*'-free segment, '?' standing for any character."""
    pieces, offset = [], 0
    for piece in segment.split("?"):
        if piece:
            pieces.append((offset, piece))
        offset += len(piece) + 1
    return pieces


def _fixed_at(text: str, at: int, segment: str) -> bool:
    if "?" not in segment:
        return text.startswith(segment, at)
    if at < 0 or at + len(segment) > len(text):
        return False
    return all(text.startswith(piece, at + offset) for offset, piece in _pieces(segment))


def _find_fixed(text: str, segment: str, start: int, end: int) -> int:
    """Leftmost i in [start, end - len(segment)] where segment matches text[i:]."""
    if "?" not in segment:
        return text.find(segment, start, end)
    pieces = _pieces(segment)
    if not pieces:
        return start if start + len(segment) <= end else -1
    offset, anchor = max(pieces, key=lambda item: len(item[1]))
    stop = end - (len(segment) - offset - len(anchor))
    found = text.find(anchor, start + offset, stop)
    while found >= 0:
        if _fixed_at(text, found - offset, segment):
            return found - offset
        found = text.find(anchor, found + 1, stop)
    return -1


def glob_match(text: str, pattern: str) -> bool:
    """OpenSSH's match_pattern, case-sensitive. Each '*' takes the leftmost
    place its next segment fits, which is all a '*'-only glob needs."""
    if "*" not in pattern:
        return len(text) == len(pattern) and _fixed_at(text, 0, pattern)
    segments = pattern.split("*")
    if sum(map(len, segments)) > len(text):
        return False
    head, tail = segments[0], segments[-1]
    end = len(text) - len(tail)
    if not _fixed_at(text, 0, head) or not _fixed_at(text, end, tail):
        return False
    position = len(head)
    for segment in segments[1:-1]:
        if segment:
            found = _find_fixed(text, segment, position, end)
            if found < 0:
                return False
            position = found + len(segment)
    return True


def glob_cost(text: str, pattern: str) -> int:
    """An upper bound of glob_match's work: every '?' may cost a pass over text."""
    return _STEP_COST + len(text) + len(pattern) + len(text) * pattern.count("?")


# --------------------------------------------------------------------------
# Evaluating files


@dataclass(frozen=True)
class Scope:
    """Whether lines apply: "on", "off", or "maybe" behind an unevaluated Match exec."""
    state: str
    condition: str | None = None

    def clamp(self, inner: Scope) -> Scope:
        """Inside an Include, a block can be no more active than the Include line."""
        if self.state == "on" or inner.state == "off":
            return inner
        if self.state == "off":
            return OFF
        return self if inner.state == "on" else inner


ON, OFF = Scope("on"), Scope("off")


@dataclass(frozen=True)
class ConfigForward:
    """A forward keyword as a file gave it; ssh.py reads it as a Forward."""
    keyword: str
    args: tuple[str, ...]
    origin: str
    option: str
    condition: str | None = None


class _Exhausted(Exception):
    """A budget ran out: nothing more is read (ConfigReader.unread says why)."""


@dataclass
class _Budget:
    bytes: int = MAX_TOTAL_CONFIG_BYTES
    lines: int = MAX_CONFIG_LINES
    work: int = MAX_PATTERN_WORK


class ConfigReader:
    """Evaluates ssh_config files for one destination the way readconf.c does."""

    def __init__(self, host_arg: str, local_user: str, home: str, read_file: ReadFile | None,
                 list_dir: ListDir | None):
        self.host_arg = host_arg
        self.local_user = local_user
        self.home = home.rstrip("/") if home and home != "/" else ""
        self.read_file = read_file
        self.list_dir = list_dir
        self.first: dict[str, tuple[tuple[str, ...], str, str]] = {}   # keyword -> (args, origin, option)
        self.many: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        self.forwards: list[ConfigForward] = []
        #: CARRIER_KEYWORDS behind an unevaluated Match exec: (keyword, args, origin, condition)
        self.conditional: list[tuple[str, tuple[str, ...], str, str | None]] = []
        self.files_read: list[str] = []
        self.notes: list[str] = []
        #: What OpenSSH would read but a budget kept from being read.
        self.unread: list[str] = []
        self.sequence: dict[str, int] = {}
        self._budget = _Budget()
        self._stopped = False
        self._hostname: str | None = None

    # -- values

    def obtain(self, keyword: str, args: Sequence[str], origin: str, option: str) -> None:
        args = tuple(args)
        if keyword in FORWARD_KEYWORDS:
            self.forwards.append(ConfigForward(keyword, args, origin, option))
        if keyword in ACCUMULATING_KEYWORDS:
            self.many.setdefault(keyword, []).append((args, origin))
        elif keyword not in self.first and args:
            self.first[keyword] = (args, origin, option)
            self.sequence[keyword] = len(self.sequence)

    def value(self, keyword: str) -> str | None:
        found = self.first.get(keyword)
        return " ".join(found[0]) if found else None

    def hostname(self) -> str:
        """The name Match host compares: Hostname (with %h) once set, else the argv name."""
        configured = self.value("hostname")
        if configured is None:
            return self.host_arg
        if self._hostname is None:        # first value wins: it never changes once set
            parts = re.split(r"(%[%h])", configured)
            size = sum(len(self.host_arg) if p == "%h" else 1 if p == "%%" else len(p)
                       for p in parts)
            if size > MAX_HOSTNAME_CHARS:
                # Not built: %h repeated is a memory bomb. What Match host
                # would have compared is unknown, so the result is unread.
                self._skip(f"{self.first['hostname'][1]}: Hostname expands to {size} characters"
                           f" (more than {MAX_HOSTNAME_CHARS}); Match host blocks were"
                           " evaluated against it unexpanded")
                self._hostname = configured[:MAX_HOSTNAME_CHARS]
            else:
                self._hostname = "".join(self.host_arg if p == "%h" else "%" if p == "%%" else p
                                         for p in parts)
        return self._hostname

    def remote_user(self) -> str:
        return self.value("user") or self.local_user

    # -- budgets

    def _note(self, note: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(note)

    def _skip(self, why: str) -> None:
        """Something is left unread; reading goes on with the rest."""
        if len(self.unread) < MAX_UNREAD_NOTES and why not in self.unread:
            self.unread.append(why)

    def _stop(self, why: str) -> None:
        """A budget for all files is gone: nothing more is read."""
        self._skip(why)
        self._stopped = True
        raise _Exhausted(why)

    def _spend(self, work: int, origin: str) -> None:
        self._budget.work -= work
        if self._budget.work < 0:
            self._stop(f"{origin}: more than {MAX_PATTERN_WORK} characters of Host/Match/Include"
                       " patterns to compare; the rest of the configuration was not read")

    def _glob(self, text: str, pattern: str, origin: str) -> bool:
        self._spend(glob_cost(text, pattern), origin)
        return glob_match(text, pattern)

    # -- files

    def _read(self, path: str) -> str | None:
        if self.read_file is None:
            return None
        try:
            data = self.read_file(path)
        except OSError:
            return None
        if not isinstance(data, (bytes, bytearray)):
            return None
        limit = min(MAX_CONFIG_BYTES, max(self._budget.bytes, 0))
        if was_cut(data, limit):
            kept = bytes(data[:limit])
            kept = kept[:kept.rfind(b"\n") + 1]      # no half line: it could read as another
            self._skip(f"{path}: only the first {len(kept)} bytes were read (at most"
                       f" {MAX_CONFIG_BYTES} per file and {MAX_TOTAL_CONFIG_BYTES} in all);"
                       " the rest was not")
            data = kept
        self._budget.bytes -= len(data)
        return bytes(data).decode("utf-8", "replace")

    def read(self, path: str, user_config: bool, depth: int = 0, scope: Scope = ON) -> bool:
        """Apply one file; False if it could not be opened. A budget that runs
        out stops all reading (unread says where)."""
        if self._stopped:
            return False
        opened = len(self.files_read)
        try:
            return self._read_file(path, user_config, depth, scope)
        except _Exhausted:
            if depth:
                raise                               # unwind every file being read
            return len(self.files_read) > opened

    def _read_file(self, path: str, user_config: bool, depth: int, scope: Scope) -> bool:
        if len(self.files_read) >= MAX_CONFIG_FILES:
            self._skip(f"{path}: not read, more than {MAX_CONFIG_FILES} config files")
            return False
        if path == "/dev/null":
            self.files_read.append(path)            # ssh reads it as an empty file
            return True
        if is_stream_path(path):
            self._skip(f"{path}: a stream of the process itself (ssh reads it; the guard"
                       " cannot without taking its data): not read")
            return False
        text = self._read(path)
        if text is None:
            if self._listing(path) is not None:
                return False                        # a directory: ssh reads nothing from it
            if self._exists(path):
                self._skip(f"{path}: present but not a regular file the guard can read"
                           " (a FIFO, a socket, a device): ssh would read it")
            return False
        self.files_read.append(path)
        current = scope
        number, counted_to = 1, 0
        for line in _KEYWORD_LINE.finditer(text):
            number += text.count("\n", counted_to, line.start())
            counted_to = line.start()
            origin = f"{path}:{number}"
            self._budget.lines -= 1
            if self._budget.lines < 0:
                self._stop(f"{origin}: more than {MAX_CONFIG_LINES} lines with a keyword;"
                           " this one and the rest were not read")
            keyword, args = split_config_line(line.group(0))
            if not keyword:
                continue
            if keyword == "host":
                current = scope.clamp(ON if self._host_matches(args, origin) else OFF)
            elif keyword == "match":
                current = scope.clamp(self._match(args, origin))
            elif keyword == "include":
                self._include(args, user_config, depth, current, origin)
            elif current.state == "on":
                self.obtain(keyword, args, origin, keyword_name(keyword))
            elif current.state == "maybe" and keyword in FORWARD_KEYWORDS:
                self.forwards.append(ConfigForward(keyword, tuple(args), origin,
                                                   keyword_name(keyword), current.condition))
            elif (current.state == "maybe" and keyword in CARRIER_KEYWORDS
                  and len(self.conditional) < MAX_NOTES):
                self.conditional.append((keyword, tuple(args), origin, current.condition))
        return True

    def _listing(self, path: str) -> object:
        """The directory listing of path (None: not a directory, or no lister)."""
        if self.list_dir is None:
            return None
        self._spend(_CALLBACK_COST, path)
        try:
            names = self.list_dir(path)
        except OSError:
            return None
        return None if isinstance(names, (str, bytes)) else names

    def _exists(self, path: str) -> bool:
        """Whether path is a name in its directory (the reader said it cannot
        read it: present means a FIFO, socket or device, not a missing file)."""
        directory, _, name = path.rstrip("/").rpartition("/")
        if not name or self.list_dir is None:
            return False
        self._spend(_CALLBACK_COST, path)
        try:
            names = self.list_dir(directory or "/")
        except OSError:
            return False
        if names is None or isinstance(names, (str, bytes)):
            return False
        return any(entry == name for entry in itertools.islice(names, MAX_DIR_ENTRIES + 1))

    def _patterns_match(self, value: str, patterns: Iterable[str], origin: str) -> bool:
        """Some pattern matches value, and no matching negated (`!`) one vetoes."""
        matched = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if self._glob(value, pattern[1:] if negated else pattern, origin):
                if negated:
                    return False
                matched = True
        return matched

    def _host_matches(self, patterns: list[str], origin: str) -> bool:
        """`Host` compares the name as typed, case and all."""
        return self._patterns_match(self.host_arg, patterns, origin)

    def _pattern_list_match(self, value: str, patterns: str, fold_case: bool, origin: str) -> bool:
        """A comma-separated pattern list (Match host, user, ...)."""
        if fold_case:
            value, patterns = value.lower(), patterns.lower()
        return self._patterns_match(value, patterns.split(","), origin)

    def _match(self, args: list[str], origin: str) -> Scope:
        """readconf.c match_cfg_line: every criterion must hold."""
        if not args:
            return OFF
        result = True
        exec_condition: str | None = None
        i = 0
        while i < len(args):
            self._spend(_STEP_COST, origin)
            criterion = args[i]
            i += 1
            negated = criterion.startswith("!")
            name = (criterion[1:] if negated else criterion).lower()
            if name == "all":
                continue
            if name in ("canonical", "final"):
                # Which pass ssh is in is not known here. Taking the block as
                # applying reports every forward it might add (conservative).
                self._note(f"{origin}: Match {name} taken as matching")
                continue
            if i >= len(args):
                self._note(f"{origin}: Match {name} lacks its argument: ssh rejects the file")
                return OFF
            argument = args[i]
            i += 1
            if name == "exec":
                # Never run: the block is off, but its forwards are reported as conditional.
                exec_condition = f"{origin}: Match exec {argument}"
                self._note(f"{exec_condition} not evaluated")
                continue
            if name in ("localnetwork", "command", "version", "sessiontype"):
                self._note(f"{origin}: Match {name} not evaluated, taken as matching")
                continue
            values = {"host": (self.hostname, True), "originalhost": (lambda: self.host_arg, True),
                      "user": (self.remote_user, False), "localuser": (lambda: self.local_user, False),
                      "tagged": (lambda: self.value("tag") or "", False)}
            if name not in values:
                self._note(f"{origin}: unknown Match criterion {name!r}: ssh rejects the file")
                return OFF
            value, fold = values[name]
            if self._pattern_list_match(value(), argument, fold, origin) == negated:
                result = False
        if not result:
            return OFF
        return Scope("maybe", exec_condition) if exec_condition else ON

    def _include(self, args: list[str], user_config: bool, depth: int, scope: Scope,
                 origin: str) -> None:
        if depth + 1 > MAX_INCLUDE_DEPTH:
            # ssh stops with a fatal error here; reported as unread all the
            # same, so a loop-shaped config never hides a forward
            self._skip(f"{origin}: Include nested too deeply (more than {MAX_INCLUDE_DEPTH}"
                       " levels); the included files were not read")
            return
        if scope.state == "off":
            return                                  # readconf parses it with nothing matching
        for pattern in args:
            self._spend(_STEP_COST, origin)
            for path in self._include_paths(pattern, user_config, origin):
                self._spend(_CALLBACK_COST, origin)
                self.read(path, user_config, depth + 1, scope)

    def _include_paths(self, pattern: str, user_config: bool, origin: str) -> list[str]:
        if user_config and pattern.startswith("~"):
            if pattern != "~" and not pattern.startswith("~/"):
                self._note(f"{origin}: Include {pattern} names another user's home")
                return []
            pattern = self.home + pattern[1:]
        if not pattern.startswith("/"):
            base = self.home + "/.ssh" if user_config else "/etc/ssh"
            pattern = f"{base}/{pattern}"
        if not any(char in pattern for char in "*?["):
            return [pattern]
        if self.list_dir is None:
            self._note(f"{origin}: Include {pattern} not expanded (no directory listing)")
            return []
        return self._expand_glob(pattern, origin)

    def _expand_glob(self, pattern: str, origin: str) -> list[str]:
        """glob(3) over the caller's directory listings, in lexical order."""
        paths = [""]
        for part in pattern.split("/")[1:]:
            if not part:
                continue
            if not any(char in part for char in "*?["):
                paths = [f"{path}/{part}" for path in paths]
                continue
            part = re.sub(r"\*{2,}", "*", part)
            if len(part) > MAX_GLOB_COMPONENT:
                self._skip(f"{origin}: Include pattern component of {len(part)} characters"
                           " not expanded")
                return []
            self._spend(_GLOB_COMPILE_COST, origin)
            expanded: list[str] = []
            for path in paths:
                self._spend(_CALLBACK_COST, origin)
                names = self._list(path or "/", origin)
                if names is None:
                    return []
                for name in sorted(names):
                    if name.startswith(".") and not part.startswith("."):
                        continue
                    self._spend(len(name) * len(part) + 1, origin)
                    if fnmatch.fnmatchcase(name, part):
                        expanded.append(f"{path}/{name}")
            if len(expanded) > MAX_CONFIG_FILES:
                self._skip(f"{origin}: Include {pattern} names more than {MAX_CONFIG_FILES}"
                           " paths; none of them was read")
                return []
            paths = expanded
        return paths

    def _list(self, directory: str, origin: str) -> list[str] | None:
        """The names in directory; None when there are too many to look through."""
        try:
            names = self.list_dir(directory) if self.list_dir else None
        except OSError:
            return []
        if names is None or isinstance(names, (str, bytes)):
            return []
        listed: list[str] = []
        for count, name in enumerate(names):
            if count >= MAX_DIR_ENTRIES:
                self._skip(f"{origin}: {directory} holds more than {MAX_DIR_ENTRIES} names;"
                           " the Include glob was not expanded")
                return None
            if isinstance(name, str) and "/" not in name:
                listed.append(name)
        return listed

    # -- results

    def options(self, skip: Iterable[str] = ()) -> dict[str, list[str]]:
        skipped = set(skip)
        out = {key: [" ".join(args)] for key, (args, _, _) in self.first.items() if key not in skipped}
        for key, values in self.many.items():
            out[key] = [" ".join(args) for args, _ in values]
        return out


def read_ssh_config(path: str, host: str, user: str | None, port: int | None,
                    read_file: ReadFile, home: str, *, local_user: str | None = None,
                    list_dir: ListDir | None = None, system: bool = False) -> dict[str, list[str]]:
    """Options one ssh_config file gives a destination, keywords lower-cased.

    Host and Match blocks are honoured (Match exec is never run and counts
    as not matching; canonical/final count as matching), Include is followed
    (relative to ~/.ssh, or /etc/ssh when system=True; globs need list_dir),
    the first value obtained wins except for the forwards, IdentityFile,
    CertificateFile and SendEnv, which accumulate. user and port are what the
    command line already fixed (None if nothing): the file cannot override
    them, so they are left out of the result. Values are the arguments joined
    by a space (`RemoteForward 8080 localhost:80` -> "8080 localhost:80")."""
    reader = ConfigReader(host or "", local_user or user or "", home or "", read_file, list_dir)
    fixed = []
    if user:
        reader.obtain("user", (user,), "argv", "-l")
        fixed.append("user")
    if port is not None:
        reader.obtain("port", (str(port),), "argv", "-p")
        fixed.append("port")
    reader.read(path, user_config=not system)
    return reader.options(skip=fixed)
